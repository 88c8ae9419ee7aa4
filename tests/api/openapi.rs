//! `GET /api/openapi.json`: an OpenAPI 3.1 document that matches the committed snapshot,
//! describes every endpoint of API.md, and agrees with the router (every documented
//! operation exists; nothing answers 404/405 for a documented route).

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{Backend, TestApp, call};

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

/// Every endpoint of API.md (and the service routes), as `METHOD path`.
const ENDPOINTS: &[&str] = &[
    "GET /health",
    "GET /metrics",
    "GET /api/openapi.json",
    "POST /api/auth/signup",
    "POST /api/auth/login",
    "POST /api/auth/logout",
    "GET /api/auth/me",
    "GET /api/auth/api-keys",
    "POST /api/auth/api-keys",
    "DELETE /api/auth/api-keys/{id}",
    "GET /api/organization",
    "PATCH /api/organization",
    "GET /api/organization/usage",
    "GET /api/organization/usage/alerts",
    "GET /api/organization/ai-config",
    "PATCH /api/organization/ai-config",
    "GET /api/organization/audit-logs",
    "GET /api/integrations/{provider}",
    "PUT /api/integrations/{provider}",
    "DELETE /api/integrations/{provider}",
    "POST /api/integrations/slack/test",
    "GET /api/webhooks",
    "POST /api/webhooks",
    "GET /api/webhooks/{id}",
    "PATCH /api/webhooks/{id}",
    "DELETE /api/webhooks/{id}",
    "POST /api/webhooks/{id}/rotate-secret",
    "GET /api/webhooks/{id}/deliveries",
    "POST /api/webhooks/{id}/deliveries/{deliveryId}/retry",
    "POST /api/webhooks/{id}/test",
    "POST /api/linear/issues",
    "POST /api/monday/items",
    "POST /api/jira/issues",
    "POST /api/github/issues",
    "POST /api/gitlab/issues",
    "POST /api/bitbucket/issues",
    "POST /api/azuredevops/workitems",
    "GET /api/users",
    "GET /api/users/{id}",
    "DELETE /api/users/{id}",
    "PATCH /api/users/{id}/role",
    "GET /api/invitations",
    "POST /api/invitations",
    "DELETE /api/invitations/{id}",
    "GET /api/invitations/validate/{token}",
    "POST /api/invitations/accept",
    "GET /api/projects",
    "POST /api/projects",
    "DELETE /api/projects/{id}",
    "GET /api/executions",
    "POST /api/executions",
    "GET /api/executions/grouped",
    "POST /api/execution-request",
    "GET /api/executions/{taskId}/run-request",
    "GET /api/analytics/kpis",
    "GET /api/billing/plans",
    "GET /api/billing/subscription",
    "POST /api/billing/checkout",
    "GET /api/billing/portal",
    "POST /api/billing/cancel",
    "GET /api/executions/{taskId}",
    "PATCH /api/executions/{taskId}",
    "DELETE /api/executions/{taskId}",
    "POST /api/executions/{taskId}/analysis",
    "GET /api/executions/{taskId}/reports",
    "GET /api/executions/{taskId}/reports/{path}",
    "PUT /api/executions/{taskId}/reports/{path}",
    "GET /api/admin/organizations",
    "PUT /api/admin/organizations/{id}/plan",
    "PUT /api/admin/organizations/{id}/limits",
];

const PUBLIC: &[&str] = &[
    "GET /health",
    "GET /metrics",
    "GET /metrics",
    "GET /api/openapi.json",
    "POST /api/auth/signup",
    "POST /api/auth/login",
    "GET /api/invitations/validate/{token}",
    "GET /api/billing/plans",
];

/// Operations that exist only to say they cannot be done here (501 `Billing not configured`).
const NOT_IMPLEMENTED: &[&str] = &[
    "POST /api/billing/checkout",
    "GET /api/billing/portal",
    "POST /api/billing/cancel",
];

async fn document(app: &TestApp) -> Value {
    let (status, doc) = call(app.request(Method::GET, "/api/openapi.json")).await;
    assert_eq!(status, 200);
    doc
}

/// `(METHOD path, operation)` of every operation in the document.
fn operations(doc: &Value) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, operation) in item.as_object().into_iter().flatten() {
            found.push((
                format!("{} {path}", method.to_uppercase()),
                operation.clone(),
            ));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_matches_the_committed_snapshot() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let doc = document(&app).await;
    let pretty = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    if std::env::var("UPDATE_OPENAPI_SNAPSHOT").is_ok_and(|v| v == "1") {
        std::fs::write(SNAPSHOT, &pretty).unwrap();
    }
    let committed = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        committed == pretty,
        "GET /api/openapi.json differs from docs/openapi.json. If the change is intended, run \
         `UPDATE_OPENAPI_SNAPSHOT=1 cargo test --test api openapi::` and commit the file."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_describes_every_endpoint_with_its_errors_and_auth() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let operations = operations(&doc);
    let documented: Vec<&str> = operations.iter().map(|(k, _)| k.as_str()).collect();
    let mut expected: Vec<&str> = ENDPOINTS.to_vec();
    expected.sort();
    assert_eq!(documented, expected);
    // Every event a webhook can receive is in the `webhooks` section.
    let events: Vec<&str> = doc["webhooks"]
        .as_object()
        .map(|w| w.keys().map(String::as_str).collect())
        .unwrap_or_default();
    for event in orgd_core::outbox::EVENT_TYPES
        .iter()
        .chain([&orgd_core::outbox::WEBHOOK_TEST])
    {
        assert!(
            events.contains(event),
            "{event} missing from webhooks: {events:?}"
        );
    }
    let envelope = "#/components/schemas/ErrorBody";
    assert_eq!(
        doc["components"]["schemas"]["ErrorBody"]["required"],
        serde_json::json!(["success", "error", "message"])
    );
    for (key, operation) in &operations {
        let responses = operation["responses"].as_object().unwrap();
        if NOT_IMPLEMENTED.contains(&key.as_str()) {
            assert!(responses.contains_key("501"), "{key} lacks its 501");
        } else {
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{key} has no success response"
            );
        }
        assert!(responses.contains_key("500"), "{key} lacks 500");
        // Every error response is the envelope, inline or through a shared response (only
        // /health answers its own body with its 503).
        let errors = responses
            .iter()
            .filter(|(s, _)| !(s.starts_with('2') || key == "GET /health" && *s == "503"));
        for (status, response) in errors {
            let schema_ref = match response["$ref"].as_str() {
                Some(shared) => {
                    let name = shared.rsplit('/').next().unwrap();
                    doc["components"]["responses"][name]["content"]["application/json"]["schema"]
                        ["$ref"]
                        .clone()
                }
                None => response["content"]["application/json"]["schema"]["$ref"].clone(),
            };
            assert_eq!(schema_ref, envelope, "{key} {status} is not the envelope");
        }
        let security = operation["security"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if PUBLIC.contains(&key.as_str()) {
            assert!(security.is_empty(), "{key} should be public");
        } else {
            assert!(!security.is_empty(), "{key} has no security");
            assert!(responses.contains_key("401"), "{key} lacks 401");
        }
        let api_key = security.iter().any(|s| s.get("apiKey").is_some());
        assert_eq!(
            api_key,
            key.contains("/api/executions") || key == "POST /api/execution-request",
            "{key}: x-api-key only on /api/executions* and POST /api/execution-request"
        );
    }
}

/// Every documented operation is routed: called without credentials it answers what its
/// document says, never the router's 404 `Not found` or 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_routed() {
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.admin_token = Some(orgd::config::Secret("operator-token-for-tests".into()));
    })
    .await;
    let doc = document(&app).await;
    for (key, operation) in operations(&doc) {
        let (method, path) = key.split_once(' ').unwrap();
        let concrete = path
            .replace("{id}", "507f191e810c19729de860ea")
            .replace("{deliveryId}", "507f191e810c19729de860eb")
            .replace("{taskId}", "run-1")
            .replace("{provider}", "linear")
            .replace("{token}", &"a".repeat(64))
            .replace("{path}", "index.html");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let (status, body) = call(
            app.request(method, &concrete)
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await;
        assert_ne!(status, 405, "{key}");
        assert!(
            !(status == 404 && body["error"] == "Not found"),
            "{key} is not routed"
        );
        assert!(
            operation["responses"].get(status.to_string()).is_some(),
            "{key} answered {status}, which its document does not list: {body}"
        );
    }
}

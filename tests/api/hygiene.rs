//! HTTP hygiene: the error envelope on every failure, security headers, CORS, health.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, assert_error, call};

crate::backend_tests!(
    every_failure_has_the_envelope,
    internal_errors_leak_nothing_and_change_nothing,
    security_headers_on_every_response,
    cors_only_for_configured_origins,
    health_reports_the_database,
);

async fn every_failure_has_the_envelope(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Hygiene").await;
    let patch = || {
        app.request(Method::PATCH, "/api/organization")
            .bearer_auth(&admin.token)
    };
    let json_ct = ("content-type", "application/json");

    let (s, b) = call(patch().header(json_ct.0, json_ct.1).body("{\"name\": ")).await;
    assert_error(s, &b, 400, "Invalid JSON");
    let (s, b) = call(patch().header(json_ct.0, json_ct.1).body("[1,2]")).await;
    assert_error(s, &b, 400, "Invalid JSON");
    let (s, b) = call(patch().header(json_ct.0, json_ct.1).body("\"name\"")).await;
    assert_error(s, &b, 400, "Invalid JSON");
    let (s, b) = call(
        patch()
            .header(json_ct.0, json_ct.1)
            .body(b"{\"name\":\"\xff\xfe\"}".to_vec()),
    )
    .await;
    assert_error(s, &b, 400, "Invalid JSON");
    let nested = format!("{{\"name\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let (s, b) = call(patch().header(json_ct.0, json_ct.1).body(nested)).await;
    assert_error(s, &b, 400, "Invalid JSON");
    let (s, b) = call(
        patch()
            .header("content-type", "text/plain")
            .body("{\"name\":\"Plain\"}"),
    )
    .await;
    assert_error(s, &b, 415, "Unsupported media type");
    let (s, b) = call(
        patch()
            .header("content-type", "application/x-www-form-urlencoded")
            .body("name=x"),
    )
    .await;
    assert_error(s, &b, 415, "Unsupported media type");
    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let (s, b) = call(patch().header(json_ct.0, json_ct.1).body(huge)).await;
    assert_error(s, &b, 413, "Payload too large");
    let (s, b) = call(app.request(Method::POST, "/api/auth/login")).await;
    assert_error(s, &b, 400, "Missing body");
    let (s, b) = call(
        app.request(Method::POST, "/api/auth/login")
            .header(json_ct.0, json_ct.1)
            .body(""),
    )
    .await;
    assert_error(s, &b, 400, "Missing body");
    // Duplicate keys are refused: parsers disagree on which one wins (docs/decisions.md).
    let (s, b) = call(
        patch()
            .header(json_ct.0, json_ct.1)
            .body("{\"name\":\"First\",\"name\":\"Second\"}"),
    )
    .await;
    assert_error(s, &b, 400, "Invalid JSON");

    let (s, b) = call(app.get("/api/nothing-here", &admin.token)).await;
    assert_error(s, &b, 404, "Not found");
    let (s, b) = call(app.request(Method::GET, "/")).await;
    assert_error(s, &b, 404, "Not found");
    let (s, b) = call(
        app.request(Method::DELETE, "/api/organization")
            .bearer_auth(&admin.token),
    )
    .await;
    assert_error(s, &b, 405, "Method not allowed");
    let (s, b) = call(app.request(Method::PUT, "/api/auth/login")).await;
    assert_error(s, &b, 405, "Method not allowed");

    // None of it changed the organization.
    let (_, org) = call(app.get("/api/organization", &admin.token)).await;
    assert_eq!(org["organization"]["name"], json!("Hygiene"));
    assert!(app.audit_actions(&admin.org_id).await.is_empty());
}

async fn internal_errors_leak_nothing_and_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Fragile").await;
    // Break the audit table: the change must roll back with its failed audit entry.
    sqlx::query("DROP TABLE audit_logs")
        .execute(&app.db)
        .await
        .unwrap();
    let res = app
        .send_json(
            Method::PATCH,
            "/api/organization",
            &admin.token,
            json!({"name": "Never Saved"}),
        )
        .send()
        .await
        .unwrap();
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let (status, body) = crate::helpers::read(res).await;
    assert_error(status, &body, 500, "Failed to update organization");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(&request_id), "{message}");
    for leak in ["audit_logs", "sql", "SQL", "relation", "table"] {
        assert!(!message.contains(leak), "leaked {leak}: {message}");
    }
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
    let (_, org) = call(app.get("/api/organization", &admin.token)).await;
    assert_eq!(org["organization"]["name"], json!("Fragile"));
}

async fn security_headers_on_every_response(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Headers").await;
    let requests = vec![
        app.get("/api/organization", &admin.token),
        app.request(Method::GET, "/api/organization"),
        app.request(Method::GET, "/nope"),
        app.request(Method::DELETE, "/api/organization"),
        app.request(Method::GET, "/health"),
        app.get("/api/organization/audit-logs?limit=0", &admin.token),
    ];
    for req in requests {
        let res = req.send().await.unwrap();
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "strict-origin-when-cross-origin");
        assert!(h.contains_key("x-request-id"));
        assert!(
            !h.contains_key("strict-transport-security"),
            "HSTS only in production"
        );
    }
    // A client's own sane request id is kept.
    let res = app
        .request(Method::GET, "/health")
        .header("x-request-id", "ci-run-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "ci-run-42");
}

async fn cors_only_for_configured_origins(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let preflight = |origin: &str| {
        app.request(Method::OPTIONS, "/api/organization")
            .header("origin", origin)
            .header("access-control-request-method", "PATCH")
            .header(
                "access-control-request-headers",
                "authorization,content-type,x-api-key,idempotency-key",
            )
    };
    let res = preflight("http://localhost:5173").send().await.unwrap();
    assert!(res.status().is_success());
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], "http://localhost:5173");
    let methods = h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_ascii_uppercase();
    for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in [
        "authorization",
        "content-type",
        "x-api-key",
        "idempotency-key",
    ] {
        assert!(allowed.contains(header), "{allowed}");
    }
    let res = preflight("https://evil.example").send().await.unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    let res = app
        .request(Method::GET, "/health")
        .header("origin", "http://localhost:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://localhost:8080"
    );
}

async fn health_reports_the_database(backend: Backend) {
    // The cross-instance cache listener exists on PostgreSQL only (and an instance starts
    // once it hears).
    let cache = match backend {
        Backend::Postgres(_) => "ok",
        Backend::Sqlite => "disabled",
    };
    let app = TestApp::spawn(backend).await;
    let (status, body) = call(app.request(Method::GET, "/health")).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], json!("ok"));
    assert_eq!(
        body["checks"],
        json!({"database": "ok", "redis": "disabled", "storage": "ok", "cache": cache})
    );
    assert_eq!(body["version"], json!(env!("CARGO_PKG_VERSION")));
    assert!(body["uptimeSeconds"].is_u64());
    // Database gone: 503, so a load balancer takes the instance out.
    app.state.db.close().await;
    let (status, body) = call(app.request(Method::GET, "/health")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["database"], json!("down"));
    assert_eq!(body["status"], Value::from("degraded"));
}

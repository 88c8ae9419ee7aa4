//! `GET`/`PATCH /api/organization` against the seed (spec v1 and v2) and its error tables,
//! and `GET /api/organization/audit-logs`.

use reqwest::Method;
use serde_json::{Value, json};

use orgd_core::clock::Clock;

use crate::helpers::{Backend, TestApp, assert_error, call};

crate::backend_tests!(
    get_matches_the_seed_example_field_for_field,
    get_shows_overrides_and_unlimited_as_null,
    patch_updates_and_audits_in_one_go,
    patch_error_table_in_order,
    patch_name_boundaries,
    patch_requires_admin_and_checks_role_before_body,
    organizations_are_isolated,
    requests_without_valid_tokens_get_401,
    audit_log_filters_and_paginates,
);

fn is_timestamp(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 24 && s.ends_with('Z') && orgd_core::clock::parse_rfc3339(s).is_some()
    })
}

/// `value` with every leaf replaced by its JSON type (arrays by their items' shapes).
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(fields) => fields
            .iter()
            .map(|(key, field)| (key.clone(), shape(field)))
            .collect(),
        Value::Array(items) => items.iter().map(shape).collect(),
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
    }
}

async fn get_matches_the_seed_example_field_for_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Acme Corp").await;
    app.add_member(&admin.org_id, "developer").await;
    let (status, body) = call(app.get("/api/organization", &admin.token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], json!(true));
    let org = &body["organization"];
    let mut keys: Vec<&str> = org
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "aiAnalysisEnabled",
            "createdAt",
            "id",
            "integrations",
            "limits",
            "name",
            "plan",
            "slackNotificationEvents",
            "slackWebhookUrl",
            "slug",
            "updatedAt",
            "userCount",
            "userLimit"
        ]
    );
    assert_eq!(org["id"], json!(admin.org_id));
    assert!(orgd_core::ids::is_valid(&admin.org_id));
    assert_eq!(org["name"], json!("Acme Corp"));
    assert_eq!(org["slug"], json!("acme-corp"));
    assert_eq!(org["plan"], json!("free"));
    assert_eq!(
        org["limits"],
        json!({"maxProjects": 1, "maxTestRuns": 100, "maxUsers": 3, "maxConcurrentRuns": 1,
               "maxStorageBytes": 10737418240u64, "maxStorage": 10737418240u64, "currentStorageUsedBytes": 0})
    );
    assert_eq!(org["userCount"], json!(2));
    assert_eq!(org["userLimit"], json!(3));
    assert_eq!(org["aiAnalysisEnabled"], json!(true));
    assert!(
        is_timestamp(&org["createdAt"]) && is_timestamp(&org["updatedAt"]),
        "{org}"
    );

    // The benchmark's yardstick answers this very organization: same shape, same size (only
    // the id and the two timestamps differ, each of a fixed length).
    let yardstick: Value = serde_json::from_str(include_str!("../../bench/organization.json"))
        .expect("bench/organization.json is JSON");
    assert_eq!(shape(&yardstick), shape(&body), "{body}");
    assert_eq!(
        yardstick.to_string().len(),
        body.to_string().len(),
        "{body}"
    );

    // Every role may read it.
    let viewer = app.add_member(&admin.org_id, "viewer").await;
    let (status, body) = call(app.get("/api/organization", &viewer.token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["organization"]["userCount"], json!(3));
}

async fn get_shows_overrides_and_unlimited_as_null(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Overridden").await;
    // The v2 example: a free organization with 50 runs and 500 MiB of storage.
    sqlx::query("UPDATE organizations SET limit_overrides = $1 WHERE id = $2")
        .bind(r#"{"maxTestRuns":50,"maxStorageBytes":524288000}"#)
        .bind(&admin.org_id)
        .execute(&app.db)
        .await
        .unwrap();
    app.organization_changed(&admin.org_id).await;
    let (_, body) = call(app.get("/api/organization", &admin.token)).await;
    let limits = &body["organization"]["limits"];
    assert_eq!(limits["maxTestRuns"], json!(50));
    assert_eq!(limits["maxStorageBytes"], json!(524288000));
    assert_eq!(limits["maxStorage"], json!(524288000));
    assert_eq!(limits["maxUsers"], json!(3));

    sqlx::query(
        "UPDATE organizations SET plan = 'enterprise', limit_overrides = '{}' WHERE id = $1",
    )
    .bind(&admin.org_id)
    .execute(&app.db)
    .await
    .unwrap();
    app.organization_changed(&admin.org_id).await;
    let (_, body) = call(app.get("/api/organization", &admin.token)).await;
    let org = &body["organization"];
    assert_eq!(org["plan"], json!("enterprise"));
    assert_eq!(org["limits"]["maxUsers"], Value::Null);
    assert_eq!(org["limits"]["maxProjects"], Value::Null);
    assert_eq!(org["limits"]["maxTestRuns"], json!(10000));
    assert_eq!(org["limits"]["maxStorageBytes"], json!(1099511627776u64));
    assert_eq!(org["userLimit"], Value::Null);
}

async fn patch_updates_and_audits_in_one_go(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Acme Corp").await;
    let (_, before) = call(app.get("/api/organization", &admin.token)).await;
    app.clock.advance(5_000);
    let (status, body) = call(app.send_json(
        Method::PATCH,
        "/api/organization",
        &admin.token,
        json!({"name": "  New Organization Name  ", "aiAnalysisEnabled": false, "ignored": 1}),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"success": true, "message": "Organization settings updated successfully",
               "organization": {"id": admin.org_id, "name": "New Organization Name", "aiAnalysisEnabled": false}})
    );
    let (_, after) = call(app.get("/api/organization", &admin.token)).await;
    let org = &after["organization"];
    assert_eq!(org["name"], json!("New Organization Name"));
    assert_eq!(org["aiAnalysisEnabled"], json!(false));
    assert_eq!(
        org["slug"],
        json!("acme-corp"),
        "the slug never changes on rename"
    );
    assert_eq!(org["createdAt"], before["organization"]["createdAt"]);
    assert_ne!(org["updatedAt"], before["organization"]["updatedAt"]);

    let (status, logs) = call(app.get("/api/organization/audit-logs", &admin.token)).await;
    assert_eq!(status, 200, "{logs}");
    let entries = logs["auditLogs"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry["action"], json!("org.settings_updated"));
    assert_eq!(entry["targetType"], json!("organization"));
    assert_eq!(entry["targetId"], json!(admin.org_id));
    assert_eq!(entry["userId"], json!(admin.user_id));
    assert_eq!(
        entry["details"],
        json!({"changes": {"name": "New Organization Name", "aiAnalysisEnabled": false}})
    );
    assert_eq!(entry["ip"], json!("127.0.0.1"));
    assert!(is_timestamp(&entry["timestamp"]));
    assert_eq!(logs["nextCursor"], Value::Null);

    // Only the fields sent are recorded.
    call(app.send_json(
        Method::PATCH,
        "/api/organization",
        &admin.token,
        json!({"aiAnalysisEnabled": true}),
    ))
    .await;
    let (_, logs) = call(app.get("/api/organization/audit-logs", &admin.token)).await;
    assert_eq!(
        logs["auditLogs"][0]["details"],
        json!({"changes": {"aiAnalysisEnabled": true}})
    );
}

async fn patch_error_table_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Errors Inc").await;
    let patch = |body: Value| app.send_json(Method::PATCH, "/api/organization", &admin.token, body);
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({}),
            "Missing fields",
            "At least one field (name, aiAnalysisEnabled, slackWebhookUrl, or slackNotificationEvents) is required",
        ),
        (
            json!({"other": 1}),
            "Missing fields",
            "At least one field (name, aiAnalysisEnabled, slackWebhookUrl, or slackNotificationEvents) is required",
        ),
        (
            json!({"name": ""}),
            "Invalid name",
            "Organization name cannot be empty",
        ),
        (
            json!({"name": "   "}),
            "Invalid name",
            "Organization name cannot be empty",
        ),
        (
            json!({"name": 42}),
            "Invalid name",
            "Organization name must be a string",
        ),
        (
            json!({"name": null}),
            "Invalid name",
            "Organization name must be a string",
        ),
        (
            json!({"name": ["x"]}),
            "Invalid name",
            "Organization name must be a string",
        ),
        (
            json!({"aiAnalysisEnabled": "false"}),
            "Invalid aiAnalysisEnabled",
            "aiAnalysisEnabled must be a boolean",
        ),
        (
            json!({"aiAnalysisEnabled": null}),
            "Invalid aiAnalysisEnabled",
            "aiAnalysisEnabled must be a boolean",
        ),
        (
            json!({"aiAnalysisEnabled": 0}),
            "Invalid aiAnalysisEnabled",
            "aiAnalysisEnabled must be a boolean",
        ),
        // Name is checked before aiAnalysisEnabled.
        (
            json!({"name": "x", "aiAnalysisEnabled": "no"}),
            "Invalid name",
            "Organization name must be at least 2 characters",
        ),
    ];
    for (body, error, message) in cases {
        let (status, res) = call(patch(body.clone())).await;
        assert_error(status, &res, 400, error);
        assert_eq!(res["message"], json!(message), "for {body}");
    }
    // No body at all answers the seed's string too.
    let (status, res) = call(
        app.request(Method::PATCH, "/api/organization")
            .bearer_auth(&admin.token),
    )
    .await;
    assert_error(status, &res, 400, "Missing fields");

    // None of the refused requests changed anything or wrote an audit entry.
    let (_, body) = call(app.get("/api/organization", &admin.token)).await;
    assert_eq!(body["organization"]["name"], json!("Errors Inc"));
    assert_eq!(body["organization"]["aiAnalysisEnabled"], json!(true));
    assert!(app.audit_actions(&admin.org_id).await.is_empty());
}

async fn patch_name_boundaries(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Bounds").await;
    let patch_name = |name: String| {
        app.send_json(
            Method::PATCH,
            "/api/organization",
            &admin.token,
            json!({"name": name}),
        )
    };
    let cases = [
        ("a".to_string(), 400),
        ("ab".to_string(), 200),
        ("x".repeat(100), 200),
        ("x".repeat(101), 400),
        ("🚀🚀".to_string(), 200),
        ("🚀".to_string(), 400),
        ("é".repeat(100), 200),
        ("é".repeat(101), 400),
        (format!("  {}  ", "y".repeat(100)), 200),
    ];
    for (name, expected) in cases {
        let (status, body) = call(patch_name(name.clone())).await;
        assert_eq!(
            status,
            expected,
            "name of {} chars: {body}",
            name.chars().count()
        );
        if expected == 200 {
            assert_eq!(body["organization"]["name"], json!(name.trim()));
        } else {
            assert_error(status, &body, 400, "Invalid name");
        }
    }
    let (_, body) = call(patch_name("x".repeat(101))).await;
    assert_eq!(
        body["message"],
        json!("Organization name cannot exceed 100 characters")
    );
}

async fn patch_requires_admin_and_checks_role_before_body(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Roles").await;
    for role in ["developer", "viewer"] {
        let member = app.add_member(&admin.org_id, role).await;
        let (status, body) = call(app.send_json(
            Method::PATCH,
            "/api/organization",
            &member.token,
            json!({"name": "Hijacked"}),
        ))
        .await;
        assert_error(status, &body, 403, "Forbidden");
        assert_eq!(
            body["message"],
            json!(format!(
                "This action requires one of the following roles: admin. Your role: {role}."
            ))
        );
        // A bad body from a non-admin is still a 403, not a 400.
        let res = app
            .request(Method::PATCH, "/api/organization")
            .bearer_auth(&member.token)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 403);
        let (status, body) = call(app.get("/api/organization/audit-logs", &member.token)).await;
        assert_error(status, &body, 403, "Forbidden");
    }
    let (_, body) = call(app.get("/api/organization", &admin.token)).await;
    assert_eq!(body["organization"]["name"], json!("Roles"));
}

async fn organizations_are_isolated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.signup("Same Name").await;
    let b = app.signup("Same Name").await;
    assert_ne!(a.org_id, b.org_id);
    let (_, body_a) = call(app.get("/api/organization", &a.token)).await;
    let (_, body_b) = call(app.get("/api/organization", &b.token)).await;
    assert_eq!(body_a["organization"]["slug"], json!("same-name"));
    assert_eq!(body_b["organization"]["slug"], json!("same-name-2"));
    // B's admin changes B only; A's audit log does not show it.
    call(app.send_json(
        Method::PATCH,
        "/api/organization",
        &b.token,
        json!({"name": "B renamed"}),
    ))
    .await;
    let (_, body_a) = call(app.get("/api/organization", &a.token)).await;
    assert_eq!(body_a["organization"]["name"], json!("Same Name"));
    let (_, logs_a) = call(app.get("/api/organization/audit-logs", &a.token)).await;
    assert_eq!(logs_a["auditLogs"], json!([]));
    let (_, logs_b) = call(app.get("/api/organization/audit-logs", &b.token)).await;
    assert_eq!(logs_b["auditLogs"].as_array().map(Vec::len), Some(1));
}

async fn requests_without_valid_tokens_get_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Tokens").await;
    let other_keys = orgd::auth::jwt::JwtKeys::new(b"a-completely-different-secret-000", 3600);
    let (forged, _) = other_keys
        .issue(&admin.user_id, app.clock.now_ms())
        .unwrap();
    let payload = admin.token.split('.').nth(1).unwrap().to_string();
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let headers: Vec<(&str, String)> = vec![
        ("authorization", format!("Bearer {forged}")),
        ("authorization", format!("Bearer {alg_none}")),
        ("authorization", "Bearer garbage".into()),
        ("authorization", "Bearer ".into()),
        ("authorization", format!("Token {}", admin.token)),
        ("authorization", admin.token.clone()),
        ("x-api-key", "orgd_whatever".into()),
    ];
    for path in [
        "/api/organization",
        "/api/organization/audit-logs",
        "/api/auth/me",
    ] {
        let (status, body) = call(app.request(Method::GET, path)).await;
        assert_error(status, &body, 401, "Authentication required");
        for (name, value) in &headers {
            let (status, body) = call(app.request(Method::GET, path).header(*name, value)).await;
            assert_error(status, &body, 401, "Authentication required");
        }
    }
    let (status, body) = call(app.send_json(
        Method::PATCH,
        "/api/organization",
        "nope",
        json!({"name": "x"}),
    ))
    .await;
    assert_error(status, &body, 401, "Authentication required");

    // Expired: the token's lifetime has passed on the service's clock.
    app.clock
        .advance(app.config.jwt_ttl.as_millis() as i64 + 1_000);
    let (status, body) = call(app.get("/api/organization", &admin.token)).await;
    assert_error(status, &body, 401, "Authentication required");
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
}

async fn audit_log_filters_and_paginates(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Audited").await;
    let start = app.clock.now_ms();
    for i in 0..7 {
        app.clock.advance(1_000);
        let body = if i % 2 == 0 {
            json!({"name": format!("Name {i}")})
        } else {
            json!({"aiAnalysisEnabled": i % 4 == 1})
        };
        let (status, _) =
            call(app.send_json(Method::PATCH, "/api/organization", &admin.token, body)).await;
        assert_eq!(status, 200);
    }
    // Pages of 3, newest first, cursor until null.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/organization/audit-logs?limit=3&cursor={c}"),
            None => "/api/organization/audit-logs?limit=3".into(),
        };
        let (status, body) = call(app.get(&path, &admin.token)).await;
        assert_eq!(status, 200, "{body}");
        let page = body["auditLogs"].as_array().unwrap();
        assert!(page.len() <= 3);
        seen.extend(
            page.iter()
                .map(|e| e["timestamp"].as_str().unwrap().to_string()),
        );
        match body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");

    let by_time = |from: i64, to: i64| {
        format!(
            "/api/organization/audit-logs?from={}&to={}",
            orgd_core::clock::format_ms(from),
            orgd_core::clock::format_ms(to)
        )
    };
    let (_, body) = call(app.get(&by_time(start + 2_000, start + 4_000), &admin.token)).await;
    assert_eq!(body["auditLogs"].as_array().unwrap().len(), 3);
    let (_, body) = call(app.get(
        &format!("/api/organization/audit-logs?userId={}", admin.user_id),
        &admin.token,
    ))
    .await;
    assert_eq!(body["auditLogs"].as_array().unwrap().len(), 7);
    let (_, body) = call(app.get(
        "/api/organization/audit-logs?userId=507f191e810c19729de860ea",
        &admin.token,
    ))
    .await;
    assert_eq!(body["auditLogs"], json!([]));
    let (_, body) = call(app.get(
        "/api/organization/audit-logs?action=org.settings_updated&limit=200",
        &admin.token,
    ))
    .await;
    assert_eq!(body["auditLogs"].as_array().unwrap().len(), 7);
    let (_, body) = call(app.get(
        "/api/organization/audit-logs?action=user.removed",
        &admin.token,
    ))
    .await;
    assert_eq!(body["auditLogs"], json!([]));

    for (query, error) in [
        ("limit=0", "Invalid limit"),
        ("limit=201", "Invalid limit"),
        ("limit=ten", "Invalid limit"),
        ("from=yesterday", "Invalid from"),
        ("to=2026-13-01", "Invalid to"),
        ("userId=XYZ", "Invalid userId"),
        ("cursor=abc", "Invalid cursor"),
    ] {
        let (status, body) = call(app.get(
            &format!("/api/organization/audit-logs?{query}"),
            &admin.token,
        ))
        .await;
        assert_error(status, &body, 400, error);
    }
}

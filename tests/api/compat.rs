//! The original's clients against orgd (API.md, "Compatibility with the original's clients"):
//! run requests with sealed environment values, the original's execution fields and filters,
//! the grouped view, KPIs from counters, billing, and Slack through the organization.

use reqwest::Method;
use serde_json::{Value, json};

use crate::executions::{set_overrides, set_test_runs};
use crate::helpers::{Backend, Session, TestApp, assert_error, call};
use crate::integrations::audit_details;
use crate::llm_fakes::{FakeLlm, Kind};
use orgd::config::Secret;
use orgd_core::clock::{Clock, format_ms, parse_rfc3339};
use orgd_core::crypto::Vault;

crate::backend_tests!(
    execution_request_records_a_pending_run_with_its_request,
    execution_request_validates_its_body,
    execution_request_shares_the_limits_roles_and_bucket_of_executions,
    run_request_values_are_sealed_and_rotate_with_the_keys,
    run_request_values_never_reach_an_ai_provider,
    executions_carry_the_originals_times_and_names,
    list_filters_and_their_errors,
    grouped_view_pages_groups_with_ungrouped,
    grouped_view_filters_and_counts_what_matches,
    kpis_count_this_months_live_runs,
    reconcile_recomputes_the_run_counters,
    billing_shows_plans_and_the_subscription,
    slack_through_the_organization,
);

const SLACK_URL: &str =
    "https://hooks.slack.com/services/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789";

fn at(rfc3339: &str) -> i64 {
    parse_rfc3339(rfc3339).unwrap()
}

async fn post(app: &TestApp, session: &Session, path: &str, body: Value) -> (u16, Value) {
    call(app.send_json(Method::POST, path, &session.token, body)).await
}

async fn patch(app: &TestApp, session: &Session, path: &str, body: Value) -> (u16, Value) {
    call(app.send_json(Method::PATCH, path, &session.token, body)).await
}

async fn get(app: &TestApp, session: &Session, path: &str) -> (u16, Value) {
    call(app.get(path, &session.token)).await
}

/// `POST /api/execution-request`, asserting the 200.
async fn request_run(app: &TestApp, session: &Session, body: Value) -> Value {
    let (status, answer) = post(app, session, "/api/execution-request", body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// `POST /api/executions`, asserting the 201; returns the execution.
async fn report_run(app: &TestApp, session: &Session, body: Value) -> Value {
    let (status, answer) = post(app, session, "/api/executions", body).await;
    assert_eq!(status, 201, "{answer}");
    answer["data"]["execution"].clone()
}

async fn set_status(app: &TestApp, session: &Session, task: &str, status: &str) {
    let (code, answer) = patch(
        app,
        session,
        &format!("/api/executions/{task}"),
        json!({ "status": status }),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
}

async fn delete_run(app: &TestApp, session: &Session, task: &str) {
    let (code, answer) = call(
        app.request(Method::DELETE, &format!("/api/executions/{task}"))
            .bearer_auth(&session.token),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
}

async fn api_key(app: &TestApp, owner: &Session) -> String {
    let (status, key) = post(app, owner, "/api/auth/api-keys", json!({"name": "runner"})).await;
    assert_eq!(status, 201, "{key}");
    key["apiKey"].as_str().unwrap().to_string()
}

fn keys(object: &Value) -> Vec<String> {
    let mut keys: Vec<String> = object.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

/// Enough room for the tests' runs: no monthly or concurrency limit.
async fn unlimited_runs(app: &TestApp, org_id: &str) {
    set_overrides(
        app,
        org_id,
        json!({"maxTestRuns": null, "maxConcurrentRuns": null}),
    )
    .await;
}

fn full_request() -> Value {
    json!({
        "taskId": "req-1",
        "image": "  ghcr.io/acme/e2e:1.4  ",
        "command": "npx playwright test",
        "folder": "tests/e2e",
        "tests": ["login.spec.ts", "cart.spec.ts"],
        "config": {
            "environment": "Staging",
            "baseUrl": "https://staging.acme.dev",
            "envVars": {"API_TOKEN": "tok-PLAINTEXT-123", "USER": "qa"},
            "retryAttempts": 2
        },
        "groupName": "nightly",
        "trigger": "cron",
        "unknown": true
    })
}

async fn execution_request_records_a_pending_run_with_its_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Requests").await;
    unlimited_runs(&app, &admin.org_id).await;
    let (_, project) = post(&app, &admin, "/api/projects", json!({"name": "Web"})).await;
    let project_id = project["data"]["project"]["id"].clone();
    let mut body = full_request();
    body["projectId"] = project_id.clone();
    let created_at = app.clock.now_ms();
    let answer = request_run(&app, &admin, body).await;
    assert_eq!(
        answer,
        json!({"success": true, "status": "Message queued successfully", "taskId": "req-1"})
    );

    // The single view: a PENDING hosted run with its request, values masked.
    let (status, body) = get(&app, &admin, "/api/executions/req-1").await;
    assert_eq!(status, 200, "{body}");
    let execution = &body["data"]["execution"];
    assert_eq!(execution["status"], json!("PENDING"));
    assert_eq!(execution["source"], json!("agnox-hosted"));
    assert_eq!(execution["environment"], json!("Staging"));
    assert_eq!(execution["groupName"], json!("nightly"));
    assert_eq!(execution["trigger"], json!("cron"));
    assert_eq!(execution["projectId"], project_id);
    assert_eq!(execution["startTime"], json!(format_ms(created_at)));
    assert_eq!(execution["endTime"], Value::Null);
    assert_eq!(execution["duration"], Value::Null);
    assert_eq!(
        execution["runRequest"],
        json!({
            "image": "ghcr.io/acme/e2e:1.4",
            "command": "npx playwright test",
            "folder": "tests/e2e",
            "tests": ["login.spec.ts", "cart.spec.ts"],
            "config": {
                "environment": "Staging",
                "baseUrl": "https://staging.acme.dev",
                "envVars": {"API_TOKEN": "***", "USER": "***"}
            },
            "projectId": project_id
        })
    );
    assert!(!body.to_string().contains("tok-PLAINTEXT-123"), "{body}");

    // Lists show neither the request nor the log.
    let (_, list) = get(&app, &admin, "/api/executions").await;
    let listed = &list["data"]["executions"][0];
    assert!(listed.get("runRequest").is_none() && listed.get("output").is_none());
    assert_eq!(listed["source"], json!("agnox-hosted"));

    // A runner reads the values; the read is audited.
    let developer = app.add_member(&admin.org_id, "developer").await;
    let (status, body) = get(&app, &developer, "/api/executions/req-1/run-request").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"success": true, "data": {"runRequest": {
            "image": "ghcr.io/acme/e2e:1.4",
            "command": "npx playwright test",
            "folder": "tests/e2e",
            "tests": ["login.spec.ts", "cart.spec.ts"],
            "config": {
                "environment": "Staging",
                "baseUrl": "https://staging.acme.dev",
                "envVars": {"API_TOKEN": "tok-PLAINTEXT-123", "USER": "qa"}
            },
            "projectId": project_id
        }}})
    );
    let reads = audit_details(&app, &admin.org_id, "execution.run_request_read").await;
    assert_eq!(reads, [json!({"taskId": "req-1", "apiKeyId": null})]);
    let (_, logs) = get(
        &app,
        &admin,
        "/api/organization/audit-logs?action=execution.run_request_read",
    )
    .await;
    let entry = &logs["auditLogs"][0];
    assert_eq!(entry["userId"], json!(developer.user_id));
    assert_eq!(
        (&entry["targetType"], &entry["targetId"]),
        (&json!("execution"), &json!("req-1"))
    );

    // With an API key too; the key is named in the audit entry.
    let key = api_key(&app, &developer).await;
    let (status, body) = call(
        app.request(Method::GET, "/api/executions/req-1/run-request")
            .header("x-api-key", &key),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let reads = audit_details(&app, &admin.org_id, "execution.run_request_read").await;
    assert_eq!(reads.len(), 2);
    assert!(reads[1]["apiKeyId"].is_string(), "{reads:?}");

    // Viewers may not read the values (nor request runs); nothing is audited for them.
    let viewer = app.add_member(&admin.org_id, "viewer").await;
    let (status, body) = get(&app, &viewer, "/api/executions/req-1/run-request").await;
    assert_error(status, &body, 403, "Forbidden");
    let (status, body) = get(&app, &viewer, "/api/executions/req-1").await;
    assert_eq!(status, 200, "viewers see the masked view: {body}");
    assert_eq!(
        audit_details(&app, &admin.org_id, "execution.run_request_read")
            .await
            .len(),
        2
    );

    // A reported run has no request; an unknown one does not exist.
    report_run(&app, &admin, json!({"taskId": "ci-1"})).await;
    let (status, body) = get(&app, &admin, "/api/executions/ci-1").await;
    assert_eq!(
        body["data"]["execution"]["runRequest"],
        Value::Null,
        "{body}"
    );
    assert_eq!(status, 200);
    let (status, body) = get(&app, &admin, "/api/executions/ci-1/run-request").await;
    assert_error(status, &body, 404, "Run request not found");
    let (status, body) = get(&app, &admin, "/api/executions/nope/run-request").await;
    assert_error(status, &body, 404, "Execution not found");

    // The least a request needs: image and command; the rest has the original's defaults.
    let answer = request_run(&app, &admin, json!({"image": "alpine", "command": "true"})).await;
    let task = answer["taskId"].as_str().unwrap();
    assert!(orgd_core::ids::is_valid(task), "generated: {task}");
    let (_, body) = get(&app, &admin, &format!("/api/executions/{task}")).await;
    assert_eq!(
        body["data"]["execution"]["runRequest"],
        json!({"image": "alpine", "command": "true", "folder": "all", "tests": [],
               "config": {"environment": null, "baseUrl": null, "envVars": {}}, "projectId": null})
    );
    assert_eq!(body["data"]["execution"]["environment"], Value::Null);

    // A deleted run takes its sealed values with it.
    delete_run(&app, &admin, "req-1").await;
    let left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM run_requests WHERE organization_id = $1")
            .bind(&admin.org_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(left, 1, "only the other request is left");
    let (status, body) = get(&app, &admin, "/api/executions/req-1/run-request").await;
    assert_error(status, &body, 404, "Execution not found");
}

async fn execution_request_validates_its_body(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Validation").await;
    let many: serde_json::Map<String, Value> =
        (0..101).map(|i| (format!("V{i}"), json!("x"))).collect();
    let hundred: serde_json::Map<String, Value> =
        (0..100).map(|i| (format!("V{i}"), json!("x"))).collect();
    let base = |extra: Value| {
        let mut body = json!({"image": "alpine", "command": "true"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (json!({}), "Invalid image"),
        (json!({"command": "true"}), "Invalid image"),
        (json!({"image": "   ", "command": "true"}), "Invalid image"),
        (json!({"image": 7, "command": "true"}), "Invalid image"),
        (json!({"image": null, "command": "true"}), "Invalid image"),
        (
            json!({"image": "two words", "command": "true"}),
            "Invalid image",
        ),
        (json!({"image": "alpine"}), "Invalid command"),
        (json!({"image": "alpine", "command": ""}), "Invalid command"),
        (base(json!({"taskId": "grouped"})), "Invalid taskId"),
        (base(json!({"taskId": "a/b"})), "Invalid taskId"),
        (base(json!({"folder": ""})), "Invalid folder"),
        (base(json!({"tests": "login.spec.ts"})), "Invalid tests"),
        (base(json!({"tests": ["", "x"]})), "Invalid tests"),
        (base(json!({"tests": [1]})), "Invalid tests"),
        (base(json!({"config": "staging"})), "Invalid config"),
        (
            base(json!({"config": {"environment": "pro duction"}})),
            "Invalid config.environment",
        ),
        (
            base(json!({"config": {"environment": 1}})),
            "Invalid config.environment",
        ),
        (
            base(json!({"config": {"baseUrl": "ftp://x.dev"}})),
            "Invalid config.baseUrl",
        ),
        (
            base(json!({"config": {"envVars": ["A=1"]}})),
            "Invalid config.envVars",
        ),
        (
            base(json!({"config": {"envVars": "A=1"}})),
            "Invalid config.envVars",
        ),
        (
            base(json!({"config": {"envVars": {"A": 1}}})),
            "Invalid config.envVars",
        ),
        (
            base(json!({"config": {"envVars": {"A": null}}})),
            "Invalid config.envVars",
        ),
        (
            base(json!({"config": {"envVars": {"1A": "x"}}})),
            "Invalid config.envVars",
        ),
        (
            base(json!({"config": {"envVars": {"A-B": "x"}}})),
            "Invalid config.envVars",
        ),
        (
            base(json!({"config": {"envVars": {"": "x"}}})),
            "Invalid config.envVars",
        ),
        (
            base(json!({"config": {"envVars": {"BIG": "x".repeat(4097)}}})),
            "Invalid config.envVars",
        ),
        (
            base(json!({"config": {"envVars": many}})),
            "Invalid config.envVars",
        ),
        (
            base(json!({"groupName": "__ungrouped__"})),
            "Invalid groupName",
        ),
        (base(json!({"groupName": ""})), "Invalid groupName"),
        (base(json!({"trigger": "a b"})), "Invalid trigger"),
        (base(json!({"projectId": "nope"})), "Invalid projectId"),
    ];
    for (body, error) in cases {
        let (status, answer) = post(&app, &admin, "/api/execution-request", body.clone()).await;
        assert_error(status, &answer, 400, error);
        assert!(
            answer["message"].as_str().unwrap().len() < 300,
            "{body}: {answer}"
        );
    }
    let (status, answer) = call(
        app.request(Method::POST, "/api/execution-request")
            .bearer_auth(&admin.token),
    )
    .await;
    assert_error(status, &answer, 400, "Missing body");

    // The limits themselves are accepted: 100 variables, a value of exactly 4 KiB.
    unlimited_runs(&app, &admin.org_id).await;
    request_run(&app, &admin, base(json!({"config": {"envVars": hundred}}))).await;
    request_run(
        &app,
        &admin,
        base(json!({"config": {"envVars": {"_BIG_1": "é".repeat(2048)}}})),
    )
    .await;
    let created: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM executions WHERE organization_id = $1")
            .bind(&admin.org_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(created, 2, "no refused request left a run behind");

    // `grouped` and `__ungrouped__` are reserved for POST /api/executions too.
    let (status, answer) = post(
        &app,
        &admin,
        "/api/executions",
        json!({"taskId": "grouped"}),
    )
    .await;
    assert_error(status, &answer, 400, "Invalid taskId");
    let (status, answer) = post(
        &app,
        &admin,
        "/api/executions",
        json!({"groupName": "__ungrouped__"}),
    )
    .await;
    assert_error(status, &answer, 400, "Invalid groupName");

    // The role is checked before the body.
    let viewer = app.add_member(&admin.org_id, "viewer").await;
    let (status, answer) = post(&app, &viewer, "/api/execution-request", json!({"image": 1})).await;
    assert_error(status, &answer, 403, "Forbidden");
}

async fn execution_request_shares_the_limits_roles_and_bucket_of_executions(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.ingest_rate_limit_per_minute = 500;
        c.rate_limit_per_minute = 300;
    })
    .await;
    let admin = app.signup("Limited").await;
    let request = |task: &str| json!({"taskId": task, "image": "alpine", "command": "true"});

    // Free plan: one run at a time, whichever route started the other.
    let res = app
        .send_json(
            Method::POST,
            "/api/execution-request",
            &admin.token,
            request("r-1"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["x-ratelimit-limit"],
        "500",
        "the ingest bucket"
    );
    let (status, body) = post(&app, &admin, "/api/execution-request", request("r-2")).await;
    assert_error(status, &body, 409, "Concurrent run limit reached");
    let (status, body) = post(&app, &admin, "/api/executions", json!({"taskId": "c-1"})).await;
    assert_error(status, &body, 409, "Concurrent run limit reached");
    set_status(&app, &admin, "r-1", "PASSED").await;
    let (status, body) = post(&app, &admin, "/api/execution-request", request("r-1")).await;
    assert_error(status, &body, 409, "Execution already exists");
    let (status, body) = post(
        &app,
        &admin,
        "/api/execution-request",
        json!({"image": "alpine", "command": "true", "projectId": "507f191e810c19729de860ea"}),
    )
    .await;
    assert_error(status, &body, 404, "Project not found");

    // The month's runs: requested runs count and are refused like reported ones.
    set_test_runs(&app, &admin.org_id, 100).await;
    let (status, body) = post(&app, &admin, "/api/execution-request", request("r-3")).await;
    assert_error(status, &body, 403, "Test run limit exceeded");
    assert_eq!(
        body["usage"],
        json!({"used": 100, "limit": 100, "percentUsed": 100})
    );
    set_test_runs(&app, &admin.org_id, 5).await;
    request_run(&app, &admin, request("r-3")).await;
    let (_, usage) = get(&app, &admin, "/api/organization/usage").await;
    assert_eq!(usage["usage"]["testRuns"]["used"], json!(6));

    // Roles: developers and API keys may, viewers and their keys may not; other routes
    // outside the ingest API still refuse keys.
    set_status(&app, &admin, "r-3", "FAILED").await;
    let developer = app.add_member(&admin.org_id, "developer").await;
    request_run(&app, &developer, request("r-dev")).await;
    set_status(&app, &developer, "r-dev", "PASSED").await;
    let key = api_key(&app, &developer).await;
    let (status, body) = call(
        app.request(Method::POST, "/api/execution-request")
            .header("x-api-key", &key)
            .json(&request("r-key")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let viewer = app.add_member(&admin.org_id, "viewer").await;
    let (status, body) = post(&app, &viewer, "/api/execution-request", request("r-v")).await;
    assert_error(status, &body, 403, "Forbidden");
    let viewer_key = api_key(&app, &viewer).await;
    let (status, body) = call(
        app.request(Method::POST, "/api/execution-request")
            .header("x-api-key", &viewer_key)
            .json(&request("r-vk")),
    )
    .await;
    assert_error(status, &body, 403, "Forbidden");
    let (status, body) = call(
        app.request(Method::GET, "/api/analytics/kpis")
            .header("x-api-key", &key),
    )
    .await;
    assert_error(status, &body, 401, "Authentication required");
    let (status, _) = call(
        app.request(Method::POST, "/api/execution-request")
            .json(&request("x")),
    )
    .await;
    assert_eq!(status, 401);
}

async fn run_request_values_are_sealed_and_rotate_with_the_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Sealed").await;
    unlimited_runs(&app, &admin.org_id).await;
    request_run(
        &app,
        &admin,
        json!({"taskId": "s-1", "image": "alpine", "command": "true",
               "config": {"envVars": {"DB_PASSWORD": "pw-PLAINTEXT-987"}}}),
    )
    .await;
    let (sealed, names): (Option<String>, String) =
        sqlx::query_as("SELECT env_values, env_names FROM run_requests WHERE organization_id = $1")
            .bind(&admin.org_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let sealed = sealed.unwrap();
    assert!(
        sealed.starts_with("v1.") && !sealed.contains("PLAINTEXT"),
        "{sealed}"
    );
    assert_eq!(names, r#"["DB_PASSWORD"]"#);

    // Another key alone opens nothing (500 without detail); rotation moves the value to it.
    let key_a = app.config.encryption_key.0;
    let key_b: [u8; 32] = rand::random();
    let b_only = app
        .another_instance_with(|c| {
            c.encryption_key = Secret(key_b);
            c.encryption_keys_old = Vec::new();
        })
        .await;
    let (status, body) = get(&b_only, &admin, "/api/executions/s-1/run-request").await;
    assert_error(status, &body, 500, "Failed to read run request");
    assert!(!body.to_string().contains("PLAINTEXT"));
    let report = orgd_core::secrets::rotate(&app.state.db, &Vault::new(&key_b, &[Secret(key_a)]))
        .await
        .unwrap();
    assert_eq!((report.rotated, report.failed.len()), (1, 0));
    let (status, body) = get(&b_only, &admin, "/api/executions/s-1/run-request").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["runRequest"]["config"]["envVars"],
        json!({"DB_PASSWORD": "pw-PLAINTEXT-987"})
    );

    // A value copied to another run does not open there (it is bound to its run).
    request_run(
        &b_only,
        &admin,
        json!({"taskId": "s-2", "image": "alpine", "command": "true", "config": {"envVars": {"X": "y"}}}),
    )
    .await;
    sqlx::query(
        "UPDATE run_requests SET env_values = (SELECT env_values FROM run_requests r
            WHERE r.execution_id = (SELECT id FROM executions WHERE task_id = 's-1'))
         WHERE execution_id = (SELECT id FROM executions WHERE task_id = 's-2')",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let (status, body) = get(&b_only, &admin, "/api/executions/s-2/run-request").await;
    assert_error(status, &body, 500, "Failed to read run request");
}

async fn run_request_values_never_reach_an_ai_provider(backend: Backend) {
    const PLATFORM_KEY: &str = "AIza-compat-platform-0123456789";
    let gemini = FakeLlm::start(Kind::Gemini, &[PLATFORM_KEY]).await;
    let url = gemini.url.clone();
    let app = TestApp::spawn_with(backend, move |c| {
        c.ai.gemini_api_url = url;
        c.ai.gemini_api_key = Some(Secret(PLATFORM_KEY.into()));
    })
    .await;
    let admin = app.signup("Redacted").await;
    request_run(
        &app,
        &admin,
        json!({"taskId": "leaky", "image": "alpine", "command": "env",
               "config": {"envVars": {"DB_PASSWORD": "pw-compat-redact-me-42"}}}),
    )
    .await;
    let (status, body) = patch(
        &app,
        &admin,
        "/api/executions/leaky",
        json!({"status": "FAILED", "error": "login failed for pw-compat-redact-me-42",
               "output": "DB_PASSWORD=pw-compat-redact-me-42\nexit 1"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&app, &admin, "/api/executions/leaky/analysis", json!({})).await;
    assert_eq!(status, 201, "{body}");
    let log = gemini.seen()[0].log();
    assert!(
        !log.contains("pw-compat-redact-me-42") && log.contains("DB_PASSWORD=[REDACTED]"),
        "{log}"
    );
}

async fn executions_carry_the_originals_times_and_names(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Times").await;
    unlimited_runs(&app, &admin.org_id).await;
    let t0 = app.clock.now_ms();
    let created = report_run(&app, &admin, json!({"taskId": "t-1"})).await;
    let mut names = keys(&created);
    names.retain(|k| {
        ["startTime", "endTime", "duration", "environment", "source"].contains(&k.as_str())
    });
    assert_eq!(
        names,
        ["duration", "endTime", "environment", "source", "startTime"]
    );
    assert_eq!(created["source"], json!("external-ci"));
    assert_eq!(created["environment"], Value::Null);
    assert_eq!(
        created["startTime"],
        json!(format_ms(t0)),
        "createdAt while not started"
    );

    // Started later: startTime follows startedAt; ended: endTime and the duration between.
    app.clock.advance(5_000);
    set_status(&app, &admin, "t-1", "RUNNING").await;
    app.clock.advance(12_345);
    set_status(&app, &admin, "t-1", "FAILED").await;
    let (_, body) = get(&app, &admin, "/api/executions/t-1").await;
    let e = &body["data"]["execution"];
    assert_eq!(e["startTime"], e["startedAt"]);
    assert_eq!(e["startTime"], json!(format_ms(t0 + 5_000)));
    assert_eq!(e["endTime"], e["finishedAt"]);
    assert_eq!(e["endTime"], json!(format_ms(t0 + 17_345)));
    assert_eq!(e["duration"], json!(12_345));

    // A run that finishes without ever running is timed from its creation.
    let t1 = app.clock.now_ms();
    report_run(&app, &admin, json!({"taskId": "t-2"})).await;
    app.clock.advance(700);
    set_status(&app, &admin, "t-2", "PASSED").await;
    let (_, body) = get(&app, &admin, "/api/executions/t-2").await;
    let e = &body["data"]["execution"];
    assert_eq!(
        (&e["startTime"], &e["startedAt"], &e["duration"]),
        (&json!(format_ms(t1)), &Value::Null, &json!(700))
    );
}

async fn list_filters_and_their_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Filters").await;
    unlimited_runs(&app, &admin.org_id).await;
    app.clock.set(at("2026-03-10T08:00:00Z"));
    request_run(
        &app,
        &admin,
        json!({"taskId": "m10", "image": "a", "command": "c", "config": {"environment": "Staging"}, "groupName": "nightly"}),
    )
    .await;
    app.clock.set(at("2026-03-10T23:59:59.999Z"));
    report_run(
        &app,
        &admin,
        json!({"taskId": "m10-late", "groupName": "nightly"}),
    )
    .await;
    app.clock.set(at("2026-03-11T00:00:00Z"));
    request_run(
        &app,
        &admin,
        json!({"taskId": "m11", "image": "a", "command": "c", "config": {"environment": "production"}}),
    )
    .await;
    app.clock.set(at("2026-03-12T10:00:00Z"));
    report_run(&app, &admin, json!({"taskId": "m12", "groupName": "smoke"})).await;
    // Started on the 13th although created on the 12th: startTime counts.
    app.clock.set(at("2026-03-13T10:00:00Z"));
    set_status(&app, &admin, "m12", "RUNNING").await;

    let tasks = |path: String| {
        let app = &app;
        let admin = &admin;
        async move {
            let (status, body) = get(app, admin, &path).await;
            assert_eq!(status, 200, "{path}: {body}");
            let mut tasks: Vec<String> = body["data"]["executions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["taskId"].as_str().unwrap().to_string())
                .collect();
            tasks.sort();
            assert_eq!(body["data"]["total"], json!(tasks.len()), "{path}");
            tasks
        }
    };
    let q = |query: &str| format!("/api/executions?{query}");
    assert_eq!(tasks(q("environment=staging")).await, ["m10"]);
    assert_eq!(tasks(q("environment=PRODUCTION")).await, ["m11"]);
    assert_eq!(tasks(q("environment=prod")).await, Vec::<String>::new());
    assert_eq!(tasks(q("groupName=nightly")).await, ["m10", "m10-late"]);
    assert_eq!(tasks(q("groupName=__ungrouped__")).await, ["m11"]);
    assert_eq!(tasks(q("source=agnox-hosted")).await, ["m10", "m11"]);
    assert_eq!(tasks(q("source=external-ci")).await, ["m10-late", "m12"]);
    // A date in startBefore includes its whole UTC day; in startAfter it starts at midnight.
    assert_eq!(
        tasks(q("startBefore=2026-03-10")).await,
        ["m10", "m10-late"]
    );
    assert_eq!(tasks(q("startAfter=2026-03-11")).await, ["m11", "m12"]);
    assert_eq!(
        tasks(q("startAfter=2026-03-11&startBefore=2026-03-12")).await,
        ["m11"],
        "m12 started on the 13th"
    );
    assert_eq!(
        tasks(q(
            "startAfter=2026-03-10T09:00:00%2B01:00&startBefore=2026-03-10T23:59:59.999Z"
        ))
        .await,
        ["m10", "m10-late"]
    );
    assert_eq!(
        tasks(q(
            "startAfter=2026-03-10T08:00:00.001Z&status=PENDING,running"
        ))
        .await,
        ["m10-late", "m11", "m12"]
    );
    assert_eq!(
        tasks(q(
            "source=agnox-hosted&environment=staging&groupName=nightly"
        ))
        .await,
        ["m10"]
    );

    for (query, error) in [
        ("environment=a%20b", "Invalid environment"),
        ("environment=", "Invalid environment"),
        ("groupName=", "Invalid groupName"),
        ("source=hosted", "Invalid source"),
        ("source=", "Invalid source"),
        ("startAfter=yesterday", "Invalid startAfter"),
        ("startAfter=2026-02-30", "Invalid startAfter"),
        ("startBefore=2026-13-01", "Invalid startBefore"),
        ("startBefore=1700000000", "Invalid startBefore"),
        ("status=DONE", "Invalid status"),
    ] {
        for route in ["/api/executions", "/api/executions/grouped"] {
            let (status, body) = get(&app, &admin, &format!("{route}?{query}")).await;
            assert_error(status, &body, 400, error);
        }
    }
}

async fn grouped_view_pages_groups_with_ungrouped(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Grouped").await;
    unlimited_runs(&app, &admin.org_id).await;
    let mut when = at("2026-04-01T00:00:00Z");
    let mut run = |task: &'static str, group: Option<&'static str>| {
        when += 60_000;
        (task, group, when)
    };
    // Newest run per group: beta oldest, then alpha, then the ungrouped ones.
    let plan = [
        run("b-1", Some("beta")),
        run("a-1", Some("alpha")),
        run("u-1", None),
        run("a-2", Some("alpha")),
        run("a-3", Some("alpha")),
        run("u-2", None),
    ];
    for (task, group, when) in plan {
        app.clock.set(when);
        let mut body = json!({"taskId": task, "status": "RUNNING"});
        if let Some(group) = group {
            body["groupName"] = json!(group);
        }
        report_run(&app, &admin, body).await;
    }
    set_status(&app, &admin, "a-1", "PASSED").await;
    set_status(&app, &admin, "a-2", "FAILED").await;
    set_status(&app, &admin, "u-1", "PASSED").await;

    let (status, body) = get(&app, &admin, "/api/executions/grouped").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(keys(&body), ["data", "success"]);
    assert_eq!(
        keys(&body["data"]),
        ["groups", "limit", "offset", "totalGroups"]
    );
    assert_eq!(
        (
            &body["data"]["totalGroups"],
            &body["data"]["limit"],
            &body["data"]["offset"]
        ),
        (&json!(3), &json!(10), &json!(0))
    );
    let groups = body["data"]["groups"].as_array().unwrap();
    let summary: Vec<(String, i64, i64, String)> = groups
        .iter()
        .map(|g| {
            assert_eq!(
                keys(g),
                [
                    "executions",
                    "groupName",
                    "lastRunAt",
                    "passCount",
                    "totalCount"
                ]
            );
            (
                g["groupName"].as_str().unwrap().to_string(),
                g["totalCount"].as_i64().unwrap(),
                g["passCount"].as_i64().unwrap(),
                g["lastRunAt"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("__ungrouped__".into(), 2, 1, format_ms(plan[5].2)),
            ("alpha".into(), 3, 1, format_ms(plan[4].2)),
            ("beta".into(), 1, 0, format_ms(plan[0].2)),
        ]
    );
    let alpha: Vec<&str> = groups[1]["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(alpha, ["a-3", "a-2", "a-1"], "newest first");
    let first = &groups[1]["executions"][0];
    assert_eq!(first["groupName"], json!("alpha"));
    assert!(first.get("output").is_none() && first.get("runRequest").is_none());
    assert_eq!(groups[0]["executions"][0]["groupName"], Value::Null);

    // Pages of groups.
    let page = |query: &'static str| {
        let app = &app;
        let admin = &admin;
        async move {
            let (status, body) = get(app, admin, &format!("/api/executions/grouped?{query}")).await;
            assert_eq!(status, 200, "{query}: {body}");
            assert_eq!(body["data"]["totalGroups"], json!(3), "{query}");
            body["data"]["groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["groupName"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page("limit=2").await, ["__ungrouped__", "alpha"]);
    assert_eq!(page("limit=2&offset=2").await, ["beta"]);
    assert_eq!(page("limit=50&offset=3").await, Vec::<String>::new());
    for (query, error) in [
        ("limit=0", "Invalid limit"),
        ("limit=51", "Invalid limit"),
        ("limit=x", "Invalid limit"),
        ("offset=-1", "Invalid offset"),
    ] {
        let (status, body) = get(&app, &admin, &format!("/api/executions/grouped?{query}")).await;
        assert_error(status, &body, 400, error);
    }
    let (_, only) = get(
        &app,
        &admin,
        "/api/executions/grouped?groupName=__ungrouped__",
    )
    .await;
    assert_eq!(only["data"]["totalGroups"], json!(1));
    assert_eq!(only["data"]["groups"][0]["totalCount"], json!(2));

    // Deletes take runs out: alpha's newest goes back to a-2; beta disappears.
    delete_run(&app, &admin, "a-3").await;
    delete_run(&app, &admin, "b-1").await;
    let (_, body) = get(&app, &admin, "/api/executions/grouped").await;
    assert_eq!(body["data"]["totalGroups"], json!(2));
    let alpha = &body["data"]["groups"][1];
    assert_eq!(
        (
            &alpha["groupName"],
            &alpha["totalCount"],
            &alpha["lastRunAt"]
        ),
        (&json!("alpha"), &json!(2), &json!(format_ms(plan[3].2)))
    );

    // Starting a run moves its group's lastRunAt to the start.
    app.clock.set(at("2026-04-02T00:00:00Z"));
    report_run(&app, &admin, json!({"taskId": "b-2", "groupName": "beta"})).await;
    app.clock.set(at("2026-04-03T00:00:00Z"));
    set_status(&app, &admin, "b-2", "RUNNING").await;
    let (_, body) = get(&app, &admin, "/api/executions/grouped?limit=1").await;
    let beta = &body["data"]["groups"][0];
    assert_eq!(
        (&beta["groupName"], &beta["lastRunAt"]),
        (&json!("beta"), &json!("2026-04-03T00:00:00.000Z"))
    );

    // At most 50 runs per group, its newest.
    for n in 0..52 {
        app.clock.advance(1_000);
        report_run(
            &app,
            &admin,
            json!({"taskId": format!("big-{n:02}"), "groupName": "big"}),
        )
        .await;
    }
    let (_, body) = get(&app, &admin, "/api/executions/grouped?groupName=big").await;
    let big = &body["data"]["groups"][0];
    assert_eq!(big["totalCount"], json!(52));
    let runs = big["executions"].as_array().unwrap();
    assert_eq!(runs.len(), 50);
    assert_eq!(
        (runs[0]["taskId"].as_str(), runs[49]["taskId"].as_str()),
        (Some("big-51"), Some("big-02"))
    );
}

async fn grouped_view_filters_and_counts_what_matches(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Grouped Filters").await;
    unlimited_runs(&app, &admin.org_id).await;
    app.clock.set(at("2026-05-01T10:00:00Z"));
    request_run(
        &app,
        &admin,
        json!({"taskId": "h-1", "image": "a", "command": "c", "groupName": "e2e", "config": {"environment": "staging"}}),
    )
    .await;
    app.clock.set(at("2026-05-02T10:00:00Z"));
    report_run(
        &app,
        &admin,
        json!({"taskId": "c-1", "groupName": "e2e", "status": "RUNNING"}),
    )
    .await;
    set_status(&app, &admin, "c-1", "PASSED").await;
    app.clock.set(at("2026-05-03T10:00:00Z"));
    report_run(&app, &admin, json!({"taskId": "c-2", "status": "RUNNING"})).await;
    set_status(&app, &admin, "c-2", "PASSED").await;

    let groups = |query: &'static str| {
        let app = &app;
        let admin = &admin;
        async move {
            let (status, body) = get(app, admin, &format!("/api/executions/grouped?{query}")).await;
            assert_eq!(status, 200, "{query}: {body}");
            let groups: Vec<(String, i64, i64, String, Vec<String>)> = body["data"]["groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| {
                    (
                        g["groupName"].as_str().unwrap().to_string(),
                        g["totalCount"].as_i64().unwrap(),
                        g["passCount"].as_i64().unwrap(),
                        g["lastRunAt"].as_str().unwrap().to_string(),
                        g["executions"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|e| e["taskId"].as_str().unwrap().to_string())
                            .collect(),
                    )
                })
                .collect();
            assert_eq!(body["data"]["totalGroups"], json!(groups.len()), "{query}");
            groups
        }
    };
    let g = |name: &str, total, passed, last: &str, runs: &[&str]| {
        (
            name.to_string(),
            total,
            passed,
            last.to_string(),
            runs.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        groups("source=agnox-hosted").await,
        [g("e2e", 1, 0, "2026-05-01T10:00:00.000Z", &["h-1"])]
    );
    assert_eq!(
        groups("status=PASSED").await,
        [
            g("__ungrouped__", 1, 1, "2026-05-03T10:00:00.000Z", &["c-2"]),
            g("e2e", 1, 1, "2026-05-02T10:00:00.000Z", &["c-1"]),
        ]
    );
    assert_eq!(
        groups("environment=STAGING").await,
        [g("e2e", 1, 0, "2026-05-01T10:00:00.000Z", &["h-1"])]
    );
    assert_eq!(
        groups("startBefore=2026-05-02").await,
        [g("e2e", 2, 1, "2026-05-02T10:00:00.000Z", &["c-1", "h-1"])]
    );
    assert_eq!(
        groups("startAfter=2026-05-02&groupName=e2e").await,
        [g("e2e", 1, 1, "2026-05-02T10:00:00.000Z", &["c-1"])]
    );
    assert_eq!(groups("source=external-ci&environment=staging").await, []);
    // Unfiltered (the counters) and filtered to everything (the runs) agree.
    assert_eq!(groups("").await, groups("startAfter=2000-01-01").await);
}

async fn kpis_count_this_months_live_runs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Kpis").await;
    unlimited_runs(&app, &admin.org_id).await;

    // Nothing yet: zeros, never a division by zero.
    app.clock.set(at("2026-06-15T12:00:00Z"));
    let (status, body) = get(&app, &admin, "/api/analytics/kpis").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"success": true, "data": {"totalRuns": 0, "passedRuns": 0, "finishedRuns": 0,
               "successRate": 0.0, "avgDurationMs": 0, "period": "2026-06"}})
    );

    // Last month's run is not this month's.
    app.clock.set(at("2026-05-31T23:59:59.999Z"));
    report_run(&app, &admin, json!({"taskId": "may", "status": "RUNNING"})).await;
    app.clock.set(at("2026-06-01T00:00:10Z"));
    set_status(&app, &admin, "may", "PASSED").await;

    let step = |ms: i64| app.clock.advance(ms);
    // PASSED after 1 s, FAILED after 2 s, PASSED without running (0.5 s from creation).
    report_run(&app, &admin, json!({"taskId": "p-1", "status": "RUNNING"})).await;
    step(1_000);
    set_status(&app, &admin, "p-1", "PASSED").await;
    report_run(&app, &admin, json!({"taskId": "f-1", "status": "RUNNING"})).await;
    step(2_000);
    set_status(&app, &admin, "f-1", "FAILED").await;
    request_run(
        &app,
        &admin,
        json!({"taskId": "p-2", "image": "a", "command": "c"}),
    )
    .await;
    step(500);
    set_status(&app, &admin, "p-2", "PASSED").await;
    // Still running: counted, not finished, not in the average.
    report_run(&app, &admin, json!({"taskId": "r-1", "status": "RUNNING"})).await;
    // Passed, then deleted: out of everything.
    report_run(&app, &admin, json!({"taskId": "gone", "status": "RUNNING"})).await;
    step(100_000);
    set_status(&app, &admin, "gone", "PASSED").await;
    delete_run(&app, &admin, "gone").await;

    let viewer = app.add_member(&admin.org_id, "viewer").await;
    let (status, body) = get(&app, &viewer, "/api/analytics/kpis").await;
    assert_eq!(status, 200, "{body}");
    // 2 of 3 finished passed: 66.666… → 66.7; (1000 + 2000 + 500) / 3 = 1166.7 → 1167.
    assert_eq!(
        body,
        json!({"success": true, "data": {"totalRuns": 4, "passedRuns": 2, "finishedRuns": 3,
               "successRate": 66.7, "avgDurationMs": 1167, "period": "2026-06"}})
    );
    // The month's test-run usage still counts the deleted run (it was run).
    let (_, usage) = get(&app, &admin, "/api/organization/usage").await;
    assert_eq!(usage["usage"]["testRuns"]["used"], json!(5));

    // Next month starts from zero; May is May.
    app.clock.set(at("2026-07-01T00:00:00Z"));
    let (_, body) = get(&app, &admin, "/api/analytics/kpis").await;
    assert_eq!(
        (&body["data"]["totalRuns"], &body["data"]["period"]),
        (&json!(0), &json!("2026-07"))
    );
    let (status, body) = call(app.request(Method::GET, "/api/analytics/kpis")).await;
    assert_error(status, &body, 401, "Authentication required");
}

async fn reconcile_recomputes_the_run_counters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Reconciled").await;
    unlimited_runs(&app, &admin.org_id).await;
    report_run(
        &app,
        &admin,
        json!({"taskId": "x-1", "status": "RUNNING", "groupName": "g"}),
    )
    .await;
    app.clock.advance(3_000);
    set_status(&app, &admin, "x-1", "PASSED").await;
    report_run(&app, &admin, json!({"taskId": "x-2"})).await;
    let (_, kpis) = get(&app, &admin, "/api/analytics/kpis").await;
    let (_, grouped) = get(&app, &admin, "/api/executions/grouped").await;

    let reconcile = || async {
        orgd_core::operator::reconcile(
            &app.state.db,
            app.state.reports.as_ref(),
            Some(&admin.org_id),
            app.clock.now_ms(),
        )
        .await
        .unwrap()
        .remove(0)
    };
    let clean = reconcile().await;
    assert!(
        clean.run_stats.is_empty() && clean.groups.is_empty(),
        "the counters kept with the runs agree with the runs: {clean}"
    );

    // Drift: counters off, a group lost, a group that has no runs.
    sqlx::query("UPDATE run_stats SET total_runs = 40, passed_runs = 0, duration_sum_ms = 1 WHERE organization_id = $1")
        .bind(&admin.org_id)
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("DELETE FROM run_groups WHERE organization_id = $1 AND group_key = 'g'")
        .bind(&admin.org_id)
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO run_groups (organization_id, group_key, total_runs, passed_runs, last_run_at) VALUES ($1, 'ghost', 3, 3, 0)",
    )
    .bind(&admin.org_id)
    .execute(&app.db)
    .await
    .unwrap();
    let fixed = reconcile().await;
    assert_eq!(fixed.run_stats.len(), 1, "{fixed}");
    assert_eq!(fixed.run_stats[0].before.total_runs, 40);
    assert_eq!(fixed.run_stats[0].after.total_runs, 2);
    let groups: Vec<(&str, bool, bool)> = fixed
        .groups
        .iter()
        .map(|g| (g.group.as_str(), g.before.is_some(), g.after.is_some()))
        .collect();
    assert_eq!(groups, [("g", false, true), ("ghost", true, false)]);
    let text = fixed.to_string();
    assert!(
        text.contains("run counters") && text.contains("group ghost"),
        "{text}"
    );
    let (_, after) = get(&app, &admin, "/api/analytics/kpis").await;
    assert_eq!(after, kpis);
    let (_, after) = get(&app, &admin, "/api/executions/grouped").await;
    assert_eq!(after, grouped);
    assert!(reconcile().await.run_stats.is_empty());
}

async fn billing_shows_plans_and_the_subscription(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.plan_prices = orgd::config::PlanPrices::parse("team=99").unwrap();
        c.rate_limit_per_minute = 20;
    })
    .await;
    // Public and not counted: more calls than the limit, without credentials.
    for _ in 0..5 {
        let res = app
            .request(Method::GET, "/api/billing/plans")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers().get("x-ratelimit-limit").is_none());
    }
    let (_, body) = call(app.request(Method::GET, "/api/billing/plans")).await;
    let feature = |runs: Value, projects: Value, users: Value, concurrent, support| {
        json!({"maxTestRuns": runs, "maxProjects": projects, "maxUsers": users,
               "maxConcurrentRuns": concurrent, "aiAnalysis": true, "support": support,
               "sso": false, "auditLogs": true})
    };
    assert_eq!(
        body,
        json!({"success": true, "plans": [
            {"id": "free", "name": "Free", "price": 0, "interval": "month",
             "features": feature(json!(100), json!(1), json!(3), 1, "community")},
            {"id": "team", "name": "Team", "price": 99, "interval": "month",
             "features": feature(json!(1000), json!(10), json!(20), 5, "email")},
            {"id": "enterprise", "name": "Enterprise", "price": 299, "interval": "month",
             "features": feature(json!(10000), json!("Unlimited"), json!("Unlimited"), 20, "priority")},
        ]})
    );

    let admin = app.signup("Billing").await;
    app.clock.set(at("2026-02-10T10:00:00Z"));
    let (status, body) = get(&app, &admin, "/api/billing/subscription").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"success": true, "subscription": {"plan": "free", "planName": "Free", "price": 0,
               "status": "active", "currentPeriodStart": "2026-02-01T00:00:00.000Z",
               "currentPeriodEnd": "2026-02-28T23:59:59.999Z", "cancelAtPeriodEnd": false,
               "nextBillingDate": null}})
    );
    sqlx::query("UPDATE organizations SET plan = 'team' WHERE id = $1")
        .bind(&admin.org_id)
        .execute(&app.db)
        .await
        .unwrap();
    app.organization_changed(&admin.org_id).await;
    let (_, body) = get(&app, &admin, "/api/billing/subscription").await;
    assert_eq!(
        (
            &body["subscription"]["plan"],
            &body["subscription"]["price"]
        ),
        (&json!("team"), &json!(99))
    );

    let developer = app.add_member(&admin.org_id, "developer").await;
    let (status, body) = get(&app, &developer, "/api/billing/subscription").await;
    assert_error(status, &body, 403, "Forbidden");
    for (method, path) in [
        (Method::POST, "/api/billing/checkout"),
        (Method::GET, "/api/billing/portal"),
        (Method::POST, "/api/billing/cancel"),
    ] {
        let (status, body) = call(
            app.request(method.clone(), path)
                .bearer_auth(&developer.token)
                .json(&json!({"planId": "team"})),
        )
        .await;
        assert_error(status, &body, 403, "Forbidden");
        let (status, body) = call(
            app.request(method.clone(), path)
                .bearer_auth(&admin.token)
                .json(&json!({"planId": "team"})),
        )
        .await;
        assert_error(status, &body, 501, "Billing not configured");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("orgd org set-plan")
        );
        let (status, body) = call(app.request(method, path)).await;
        assert_error(status, &body, 401, "Authentication required");
    }
}

async fn slack_through_the_organization(backend: Backend) {
    let trackers = crate::trackers::Fakes::spawn().await;
    let app = TestApp::spawn_with(backend, |c| trackers.configure(c)).await;
    let admin = app.signup("Slacking").await;
    let developer = app.add_member(&admin.org_id, "developer").await;
    let org = |app: &TestApp| {
        let token = admin.token.clone();
        let request = app.get("/api/organization", &token);
        async move {
            let (status, body) = call(request).await;
            assert_eq!(status, 200, "{body}");
            body["organization"].clone()
        }
    };
    let before = org(&app).await;
    assert_eq!(before["slackWebhookUrl"], Value::Null);
    assert_eq!(
        before["slackNotificationEvents"],
        json!(["FAILED", "ERROR", "UNSTABLE"])
    );
    let all_off = json!({"jira": {"enabled": false}, "github": {"enabled": false},
                         "gitlab": {"enabled": false}, "azure": {"enabled": false}});
    assert_eq!(before["integrations"], all_off);

    // Refused: nothing changes, not even the other fields of the body.
    for (body, error) in [
        (
            json!({"slackWebhookUrl": "https://example.com/hook"}),
            "Invalid slackWebhookUrl",
        ),
        (json!({"slackWebhookUrl": 5}), "Invalid slackWebhookUrl"),
        (
            json!({"name": "Renamed Org", "slackWebhookUrl": "http://hooks.slack.com/services/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789"}),
            "Invalid slackWebhookUrl",
        ),
        (
            json!({"slackNotificationEvents": "FAILED"}),
            "Invalid slackNotificationEvents",
        ),
        (
            json!({"slackNotificationEvents": ["BROKEN"]}),
            "Invalid slackNotificationEvents",
        ),
        (
            json!({"slackWebhookUrl": SLACK_URL, "slackNotificationEvents": [1]}),
            "Invalid slackNotificationEvents",
        ),
        (
            json!({"slackNotificationEvents": ["PASSED"]}),
            "Invalid slackWebhookUrl",
        ),
        (json!({"unrelated": true}), "Missing fields"),
    ] {
        let (status, answer) = patch(&app, &admin, "/api/organization", body.clone()).await;
        assert_error(status, &answer, 400, error);
        assert!(
            !answer.to_string().contains("compatSlackSecret"),
            "{answer}"
        );
    }
    let (status, answer) = patch(
        &app,
        &developer,
        "/api/organization",
        json!({"slackWebhookUrl": SLACK_URL}),
    )
    .await;
    assert_error(status, &answer, 403, "Forbidden");
    assert_eq!(org(&app).await, before);

    // Saved alone: stored sealed as the integration, audited as the integration route does.
    let (status, answer) = patch(
        &app,
        &admin,
        "/api/organization",
        json!({"slackWebhookUrl": SLACK_URL}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"success": true, "message": "Organization settings updated successfully",
               "organization": {"id": admin.org_id, "name": "Slacking", "aiAnalysisEnabled": true}})
    );
    let shown = org(&app).await;
    assert_eq!(
        shown["slackWebhookUrl"],
        json!("https://hooks.slack.com/services/***")
    );
    assert_eq!(
        shown["slackNotificationEvents"],
        json!(["FAILED", "ERROR", "UNSTABLE"])
    );
    let (_, integration) = get(&app, &admin, "/api/integrations/slack").await;
    assert_eq!(integration["data"]["enabled"], json!(true));
    assert_eq!(
        integration["data"]["events"],
        json!(["FAILED", "ERROR", "UNSTABLE"])
    );
    let sealed: String = sqlx::query_scalar(
        "SELECT secret FROM integrations WHERE organization_id = $1 AND provider = 'slack'",
    )
    .bind(&admin.org_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(sealed.starts_with("v1.") && !sealed.contains("compatSlackSecret"));
    assert_eq!(
        audit_details(&app, &admin.org_id, "integration.updated").await,
        [json!({"provider": "slack", "fields": ["events", "webhookUrl"], "enabled": true})]
    );
    assert!(
        audit_details(&app, &admin.org_id, "org.settings_updated")
            .await
            .is_empty(),
        "nothing of the organization itself changed"
    );

    // Events alone, then with a rename: both change in one request, each audited.
    let (status, answer) = patch(
        &app,
        &admin,
        "/api/organization",
        json!({"slackNotificationEvents": ["PASSED", "FAILED", "PASSED"]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        org(&app).await["slackNotificationEvents"],
        json!(["PASSED", "FAILED"])
    );
    let (status, answer) = patch(
        &app,
        &admin,
        "/api/organization",
        json!({"name": "Slack Renamed", "slackNotificationEvents": null}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let shown = org(&app).await;
    assert_eq!(shown["name"], json!("Slack Renamed"));
    assert_eq!(
        shown["slackNotificationEvents"],
        json!(["FAILED", "ERROR", "UNSTABLE"]),
        "null restores the default"
    );
    assert_eq!(
        audit_details(&app, &admin.org_id, "org.settings_updated").await,
        [json!({"changes": {"name": "Slack Renamed"}})]
    );
    let updates = audit_details(&app, &admin.org_id, "integration.updated").await;
    assert_eq!(updates.len(), 3);
    assert_eq!(
        updates[1],
        json!({"provider": "slack", "fields": ["events"], "enabled": true})
    );

    // The trackers' flags, never their secrets.
    let (status, _) = call(app.send_json(
        Method::PUT,
        "/api/integrations/github",
        &admin.token,
        trackers.save_body_with("github", "ghp_COMPATsecret0123"),
    ))
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(app.send_json(
        Method::PUT,
        "/api/integrations/azuredevops",
        &admin.token,
        {
            let mut body = trackers.save_body_with("azuredevops", "ado-COMPATsecret");
            body["enabled"] = json!(false);
            body
        },
    ))
    .await;
    assert_eq!(status, 200);
    let viewer = app.add_member(&admin.org_id, "viewer").await;
    let (status, body) = get(&app, &viewer, "/api/organization").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["organization"]["integrations"],
        json!({"jira": {"enabled": false}, "github": {"enabled": true},
               "gitlab": {"enabled": false}, "azure": {"enabled": false}})
    );
    let text = body.to_string();
    for secret in ["compatSlackSecret", "ghp_COMPAT", "ado-COMPAT", "v1."] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }

    // null unlinks, as DELETE /api/integrations/slack does; again is still a 200, unaudited.
    let (status, answer) = patch(
        &app,
        &admin,
        "/api/organization",
        json!({"slackWebhookUrl": null}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let shown = org(&app).await;
    assert_eq!(shown["slackWebhookUrl"], Value::Null);
    let (_, integration) = get(&app, &admin, "/api/integrations/slack").await;
    assert_eq!(integration["data"]["enabled"], json!(false));
    let (status, _) = patch(
        &app,
        &admin,
        "/api/organization",
        json!({"slackWebhookUrl": ""}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        audit_details(&app, &admin.org_id, "integration.unlinked").await,
        [json!({"provider": "slack"})]
    );
}

//! `Idempotency-Key` on every route that creates something (projects, executions, run
//! requests, invitations, API keys; tickets in `integrations.rs`): one mechanism, so a client
//! that got a 503 after a commit it never saw can retry without creating twice.

use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, Session, TestApp, assert_error, read};

backend_tests!(
    every_creating_post_replays_its_first_answer,
    a_refused_request_frees_its_key,
    parallel_repeats_create_once,
    replayed_secrets_are_sealed_at_rest,
);

/// The creating routes, each with a body, another valid body, and the table its rows land in.
fn creating_routes() -> [(&'static str, Value, Value, &'static str); 5] {
    [
        (
            "/api/projects",
            json!({"name": "Checkout"}),
            json!({"name": "Other"}),
            "projects",
        ),
        (
            "/api/executions",
            json!({"taskId": "run-idem"}),
            json!({"taskId": "run-other"}),
            "executions",
        ),
        (
            "/api/execution-request",
            json!({"taskId": "rr-idem", "image": "node:20", "command": "npm test"}),
            json!({"taskId": "rr-other", "image": "node:20", "command": "npm test"}),
            "executions",
        ),
        (
            "/api/invitations",
            json!({"email": "new@example.com", "role": "developer"}),
            json!({"email": "other@example.com", "role": "viewer"}),
            "invitations",
        ),
        (
            "/api/auth/api-keys",
            json!({"name": "CI"}),
            json!({"name": "Other"}),
            "api_keys",
        ),
    ]
}

async fn post(
    app: &TestApp,
    session: &Session,
    route: &str,
    key: &str,
    body: &Value,
) -> (u16, Value, bool) {
    let res = app
        .send_json(Method::POST, route, &session.token, body.clone())
        .header("Idempotency-Key", key)
        .send()
        .await
        .expect("request");
    let replayed = res
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let (status, body) = read(res).await;
    (status, body, replayed)
}

async fn rows(app: &TestApp, table: &str, org_id: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {table} WHERE organization_id = $1"
    )))
    .bind(org_id)
    .fetch_one(&app.db)
    .await
    .expect("count")
}

async fn every_creating_post_replays_its_first_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Idem Routes Org").await;
    // Two runs stay pending: more than the free plan's one at a time.
    sqlx::query("UPDATE organizations SET plan = 'team' WHERE id = $1")
        .bind(&admin.org_id)
        .execute(&app.db)
        .await
        .expect("plan");
    app.organization_changed(&admin.org_id).await;
    for (route, body, other_body, table) in creating_routes() {
        let before = rows(&app, table, &admin.org_id).await;
        let (status, first, replayed) = post(&app, &admin, route, "key-1", &body).await;
        let created = if route == "/api/execution-request" {
            200
        } else {
            201
        };
        assert_eq!(status, created, "{route}: {first}");
        assert!(!replayed, "{route}");
        let audited = app.audit_actions(&admin.org_id).await.len();

        let (status, again, replayed) = post(&app, &admin, route, "key-1", &body).await;
        assert_eq!(
            (status, &again),
            (created, &first),
            "{route}: the first answer"
        );
        assert!(replayed, "{route}: Idempotent-Replayed");
        assert_eq!(
            rows(&app, table, &admin.org_id).await,
            before + 1,
            "{route}: created once"
        );
        assert_eq!(
            app.audit_actions(&admin.org_id).await.len(),
            audited,
            "{route}: audited once"
        );

        let (status, answer, _) = post(&app, &admin, route, "key-1", &other_body).await;
        assert_error(status, &answer, 422, "Idempotency key reused");
        let (status, answer, _) = post(&app, &admin, route, "bad key", &body).await;
        assert_error(status, &answer, 400, "Invalid Idempotency-Key");
    }
    // A key is the organization's: another one using it creates its own.
    let other = app.signup("Other Idem Org").await;
    let (status, answer, replayed) = post(
        &app,
        &other,
        "/api/projects",
        "key-1",
        &json!({"name": "Checkout"}),
    )
    .await;
    assert_eq!((status, replayed), (201, false), "{answer}");
    // The role is checked before the key: a viewer learns nothing about it.
    let viewer = app.add_member(&admin.org_id, "viewer").await;
    let (status, answer, _) = post(
        &app,
        &viewer,
        "/api/projects",
        "key-1",
        &json!({"name": "Checkout"}),
    )
    .await;
    assert_error(status, &answer, 403, "Forbidden");
}

async fn a_refused_request_frees_its_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Idem Refused Org").await;
    // The free plan allows one project: the second is refused until the first is gone.
    let body = json!({"name": "Second"});
    let (status, taken) = read(
        app.send_json(
            Method::POST,
            "/api/projects",
            &admin.token,
            json!({"name": "First"}),
        )
        .send()
        .await
        .expect("request"),
    )
    .await;
    assert_eq!(status, 201, "{taken}");
    let (status, answer, _) = post(&app, &admin, "/api/projects", "retry-me", &body).await;
    assert_error(status, &answer, 403, "Project limit reached");

    let id = taken["data"]["project"]["id"].as_str().expect("id");
    let res = app
        .request(Method::DELETE, &format!("/api/projects/{id}"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 200);
    let (status, answer, replayed) = post(&app, &admin, "/api/projects", "retry-me", &body).await;
    assert_eq!(
        (status, replayed),
        (201, false),
        "the refusal was not stored: {answer}"
    );
}

async fn parallel_repeats_create_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Idem Race Org").await;
    // Without a taskId each request would create its own execution.
    let body = json!({"status": "RUNNING"});
    let answers = futures_util::future::join_all(
        (0..8).map(|_| post(&app, &admin, "/api/executions", "race", &body)),
    )
    .await;
    let created: Vec<&Value> = answers
        .iter()
        .filter(|(status, _, replayed)| *status == 201 && !replayed)
        .map(|(_, body, _)| body)
        .collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    for (status, answer, replayed) in &answers {
        match status {
            201 => assert!(!replayed || answer == created[0], "{answer}"),
            _ => assert_error(*status, answer, 409, "Request in progress"),
        }
    }
    assert_eq!(rows(&app, "executions", &admin.org_id).await, 1);
}

async fn replayed_secrets_are_sealed_at_rest(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Idem Sealed Org").await;
    let (status, key, _) = post(
        &app,
        &admin,
        "/api/auth/api-keys",
        "k",
        &json!({"name": "CI"}),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let (status, invited, _) = post(
        &app,
        &admin,
        "/api/invitations",
        "k",
        &json!({"email": "sealed@example.com", "role": "viewer"}),
    )
    .await;
    assert_eq!(status, 201, "{invited}");
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT response FROM idempotency_keys WHERE organization_id = $1")
            .bind(&admin.org_id)
            .fetch_all(&app.db)
            .await
            .expect("rows");
    assert_eq!(stored.len(), 2);
    let secrets = [
        key["apiKey"].as_str().expect("key"),
        invited["invitation"]["token"].as_str().expect("token"),
    ];
    for response in &stored {
        assert!(response.starts_with("v1."), "sealed: {response}");
        for secret in secrets {
            assert!(!response.contains(secret), "plaintext at rest");
        }
    }
    // And the replay still shows them, once more, to the one who asked.
    let (_, again, replayed) = post(
        &app,
        &admin,
        "/api/auth/api-keys",
        "k",
        &json!({"name": "CI"}),
    )
    .await;
    assert!(replayed);
    assert_eq!(again["apiKey"], key["apiKey"]);
}

//! Integration settings for the eight providers, checked against fake Linear and Monday.com
//! servers on loopback; tickets filed from executions (links, idempotency, disconnects,
//! refusals, rate limits); what is stored at rest.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::fakes::{
    Behaviour, ENG_TEAM_ID, FakeTracker, LINEAR_KEY, LINEAR_OAUTH_TOKEN, MONDAY_BOARD,
    MONDAY_TOKEN, OPS_TEAM_ID, linear_auth_error, linear_rate_limited, monday_complexity,
};
use crate::helpers::{Backend, Session, TestApp, assert_error, call};
use crate::trackers::Fakes;
use orgd_core::clock::Clock;

crate::backend_tests!(
    linear_save_checks_the_key_and_resolves_the_team,
    linear_save_refusals_change_nothing,
    monday_save_checks_token_board_and_group,
    disable_enable_partial_update_and_unlink,
    every_provider_validates_its_fields,
    only_admins_change_settings_and_viewers_file_tickets,
    organizations_see_only_their_own,
    linear_issue_is_created_linked_and_audited,
    monday_item_gets_an_escaped_update_or_a_warning,
    provider_refusals_are_ours_to_word,
    rate_limits_are_waited_out_or_reported,
    idempotency_key_replays_and_creates_nothing,
    parallel_requests_with_one_key_create_one_ticket,
    a_ticket_created_after_the_client_left_is_still_linked,
    a_timed_out_create_is_never_duplicated,
    concurrent_saves_are_applied_whole_or_refused,
);

pub struct World {
    pub app: TestApp,
    pub linear: FakeTracker,
    pub monday: FakeTracker,
    /// Jira, GitHub, GitLab, Azure DevOps and Bitbucket (`trackers.rs` tests them).
    pub trackers: Fakes,
}

/// An orgd pointed at fresh fakes, with a short provider timeout and a public URL.
pub async fn world(backend: Backend) -> World {
    let linear = FakeTracker::linear().await;
    let monday = FakeTracker::monday().await;
    let trackers = Fakes::spawn().await;
    let (linear_url, monday_url) = (linear.url.clone(), monday.url.clone());
    let app = TestApp::spawn_with(backend, |c| {
        trackers.configure(c);
        c.linear_api_url = linear_url;
        c.monday_api_url = monday_url;
        c.provider_timeout = Duration::from_millis(1500);
        c.public_url = Some("https://orgd.example".into());
        c.rate_limit_per_minute = 10_000;
    })
    .await;
    World {
        app,
        linear,
        monday,
        trackers,
    }
}

pub async fn put(app: &TestApp, token: &str, provider: &str, body: Value) -> (u16, Value) {
    call(app.send_json(
        Method::PUT,
        &format!("/api/integrations/{provider}"),
        token,
        body,
    ))
    .await
}

pub async fn get(app: &TestApp, token: &str, provider: &str) -> Value {
    let (status, body) = call(app.get(&format!("/api/integrations/{provider}"), token)).await;
    assert_eq!(status, 200, "{body}");
    // Health has tests of its own (notifications.rs).
    let mut data = body["data"].clone();
    if let Some(data) = data.as_object_mut() {
        data.remove("health");
    }
    data
}

pub async fn save_linear(app: &TestApp, admin: &Session) {
    let (status, body) = put(
        app,
        &admin.token,
        "linear",
        json!({"apiKey": LINEAR_KEY, "teamId": "ENG"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

pub async fn save_monday(app: &TestApp, admin: &Session) {
    let body = json!({"apiKey": MONDAY_TOKEN, "boardId": MONDAY_BOARD, "groupId": "bugs"});
    let (status, body) = put(app, &admin.token, "monday", body).await;
    assert_eq!(status, 200, "{body}");
}

/// An execution inserted directly (the executions API is another module's).
pub async fn insert_execution(app: &TestApp, org_id: &str, task_id: &str) -> String {
    let now = app.clock.now_ms();
    let id = orgd_core::ids::new_id(now);
    sqlx::query(
        "INSERT INTO executions (id, organization_id, task_id, status, created_at) VALUES ($1, $2, $3, 'FAILED', $4)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(task_id)
    .bind(now)
    .execute(&app.db)
    .await
    .unwrap();
    id
}

/// The links of an execution: (provider, external id, url, title, created by).
pub async fn links(
    app: &TestApp,
    execution_id: &str,
) -> Vec<(String, String, String, String, String)> {
    let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT provider, external_id, url, title, created_by FROM execution_links WHERE execution_id = $1 ORDER BY created_at, id",
    )
    .bind(execution_id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    rows
}

/// Details of the organization's audit entries with `action`, oldest first.
pub async fn audit_details(app: &TestApp, org_id: &str, action: &str) -> Vec<Value> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT details FROM audit_logs WHERE organization_id = $1 AND action = $2 ORDER BY created_at, id",
    )
    .bind(org_id)
    .bind(action)
    .fetch_all(&app.db)
    .await
    .unwrap();
    rows.iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// Waits up to 10 s for `check` to hold.
pub async fn eventually<F: Future<Output = bool>>(check: impl Fn() -> F) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not met within 10 s");
}

async fn file(app: &TestApp, token: &str, route: &str, body: Value) -> (u16, Value) {
    call(app.send_json(Method::POST, route, token, body)).await
}

async fn linear_save_checks_the_key_and_resolves_the_team(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Linear Org").await;
    assert_eq!(
        get(app, &admin.token, "linear").await,
        json!({"enabled": false})
    );

    let (status, body) = put(
        app,
        &admin.token,
        "linear",
        json!({"apiKey": LINEAR_KEY, "teamId": "ENG"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"success": true, "message": "Linear integration saved successfully"})
    );
    let data = get(app, &admin.token, "linear").await;
    assert_eq!(
        data,
        json!({"enabled": true, "teamId": ENG_TEAM_ID, "teamKey": "ENG", "teamName": "Engineering"})
    );

    // The personal key went raw in Authorization; the team key only in variables.
    let seen = w.linear.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authorization.as_deref(), Some(LINEAR_KEY));
    assert!(
        !seen[0].query.contains("ENG"),
        "user text in the query: {}",
        seen[0].query
    );
    assert_eq!(seen[0].variables, json!({"key": "ENG"}));

    let audit = audit_details(app, &admin.org_id, "integration.updated").await;
    assert_eq!(
        audit,
        [
            json!({"provider": "linear", "fields": ["teamId", "teamKey", "teamName", "apiKey"], "enabled": true})
        ]
    );

    // A UUID is looked up as an id; an OAuth token is sent as Bearer.
    let (status, body) = put(
        app,
        &admin.token,
        "linear",
        json!({"apiKey": LINEAR_OAUTH_TOKEN, "teamId": OPS_TEAM_ID}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let last = w.linear.seen().pop().unwrap();
    assert_eq!(
        last.authorization,
        Some(format!("Bearer {LINEAR_OAUTH_TOKEN}"))
    );
    assert_eq!(last.variables, json!({"teamId": OPS_TEAM_ID}));
    assert_eq!(
        get(app, &admin.token, "linear").await["teamKey"],
        json!("OPS")
    );
    let audit = audit_details(app, &admin.org_id, "integration.updated").await;
    assert_eq!(
        audit[1]["fields"],
        json!(["teamId", "teamKey", "teamName", "apiKey"])
    );
    for secret in [LINEAR_KEY, LINEAR_OAUTH_TOKEN] {
        assert!(!audit.iter().any(|d| d.to_string().contains(secret)));
    }
}

async fn linear_save_refusals_change_nothing(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Refused Org").await;
    let save = |body: Value| put(app, &admin.token, "linear", body);

    let (status, body) = save(json!({"apiKey": "lin_api_wrong", "teamId": "ENG"})).await;
    assert_error(status, &body, 400, "Invalid credentials");
    // Linear has also been seen answering a bad key with HTTP 400.
    w.linear
        .inject("*", 1, Behaviour::status(400, linear_auth_error()));
    let (status, body) = save(json!({"apiKey": LINEAR_KEY, "teamId": "ENG"})).await;
    assert_error(status, &body, 400, "Invalid credentials");
    let (status, body) = save(json!({"apiKey": LINEAR_KEY, "teamId": "NOPE"})).await;
    assert_error(status, &body, 400, "Invalid teamId");
    let (status, body) =
        save(json!({"apiKey": LINEAR_KEY, "teamId": "00000000-0000-4000-8000-000000000000"})).await;
    assert_error(status, &body, 400, "Invalid teamId");

    w.linear.inject(
        "*",
        1,
        Behaviour::status(
            500,
            json!({"errors":[{"message":"boom at db-7 stack trace"}]}),
        ),
    );
    let (status, body) = save(json!({"apiKey": LINEAR_KEY, "teamId": "ENG"})).await;
    assert_error(status, &body, 502, "Provider error");
    assert!(
        !body.to_string().contains("db-7"),
        "provider text leaked: {body}"
    );

    w.linear
        .inject("*", 1, Behaviour::DelayBefore(Duration::from_secs(3)));
    let started = std::time::Instant::now();
    let (status, body) = save(json!({"apiKey": LINEAR_KEY, "teamId": "ENG"})).await;
    assert_error(status, &body, 502, "Provider unavailable");
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "the provider timeout was not applied"
    );

    let far = app.clock.now_ms() + 120_000;
    w.linear.inject("*", 3, linear_rate_limited(far));
    let res = app
        .send_json(
            Method::PUT,
            "/api/integrations/linear",
            &admin.token,
            json!({"apiKey": LINEAR_KEY, "teamId": "ENG"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["retry-after"], "120");
    let (status, body) = crate::helpers::read(res).await;
    assert_error(status, &body, 503, "Provider rate limited");
    assert_eq!(body["retryAfter"], json!(120));
    assert_eq!(
        w.linear.seen().len(),
        7,
        "one request each: a long rate limit is not waited for"
    );
    w.linear.clear_injections();

    assert_eq!(
        get(app, &admin.token, "linear").await,
        json!({"enabled": false})
    );
    assert!(
        audit_details(app, &admin.org_id, "integration.updated")
            .await
            .is_empty()
    );

    // Unreachable: nothing listens on the configured URL.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/graphql", l.local_addr().unwrap())
    };
    let other = app
        .another_instance_with(|c| c.linear_api_url = closed)
        .await;
    let (status, body) = put(
        &other,
        &admin.token,
        "linear",
        json!({"apiKey": LINEAR_KEY, "teamId": "ENG"}),
    )
    .await;
    assert_error(status, &body, 502, "Provider unavailable");

    // A failed change to a saved integration keeps the saved one.
    save_linear(app, &admin).await;
    let (status, body) = save(json!({"teamId": "NOPE"})).await;
    assert_error(status, &body, 400, "Invalid teamId");
    assert_eq!(
        get(app, &admin.token, "linear").await["teamKey"],
        json!("ENG")
    );
}

async fn monday_save_checks_token_board_and_group(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Monday Org").await;
    let save = |body: Value| put(app, &admin.token, "monday", body);

    let (status, body) =
        save(json!({"apiKey": MONDAY_TOKEN, "boardId": MONDAY_BOARD, "groupId": "bugs"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["message"],
        json!("Monday.com integration saved successfully")
    );
    assert_eq!(
        get(app, &admin.token, "monday").await,
        json!({"enabled": true, "boardId": MONDAY_BOARD, "groupId": "bugs"})
    );
    let seen = w.monday.seen().pop().unwrap();
    assert_eq!(
        seen.authorization.as_deref(),
        Some(MONDAY_TOKEN),
        "the raw token, no Bearer"
    );
    assert_eq!(seen.api_version.as_deref(), Some("2026-07"));
    assert_eq!(seen.variables, json!({"boardIds": [MONDAY_BOARD]}));

    let (status, body) = save(json!({"apiKey": "monday-wrong", "boardId": MONDAY_BOARD})).await;
    assert_error(status, &body, 400, "Invalid credentials");
    // A GraphQL-shaped 401 and a permission error inside HTTP 200 are bad credentials too.
    w.monday.inject(
        "*",
        1,
        Behaviour::status(
            401,
            json!({"errors":[{"message":"Unauthorized","extensions":{"code":"UNAUTHORIZED"}}]}),
        ),
    );
    let (status, body) = save(json!({"apiKey": MONDAY_TOKEN, "boardId": MONDAY_BOARD})).await;
    assert_error(status, &body, 400, "Invalid credentials");
    w.monday.inject("*", 1, Behaviour::status(200, json!({"data": [], "errors":[{"message":"User unauthorized to perform action",
        "path":["me"],"extensions":{"code":"UserUnauthorizedException","error_data":{},"status_code":403}}],"account_id":1})));
    let (status, body) = save(json!({"apiKey": MONDAY_TOKEN, "boardId": MONDAY_BOARD})).await;
    assert_error(status, &body, 400, "Invalid credentials");

    let (status, body) = save(json!({"apiKey": MONDAY_TOKEN, "boardId": "999"})).await;
    assert_error(status, &body, 400, "Invalid boardId");
    let (status, body) =
        save(json!({"apiKey": MONDAY_TOKEN, "boardId": MONDAY_BOARD, "groupId": "nope"})).await;
    assert_error(status, &body, 400, "Invalid groupId");
    let (status, body) = save(json!({"apiKey": MONDAY_TOKEN, "boardId": "abc"})).await;
    assert_error(status, &body, 400, "Invalid boardId");
    w.monday.inject(
        "*",
        1,
        Behaviour::status(
            500,
            json!({"errors":[{"message":"x","extensions":{"code":"INTERNAL_SERVER_ERROR"}}]}),
        ),
    );
    let (status, body) = save(json!({"apiKey": MONDAY_TOKEN, "boardId": MONDAY_BOARD})).await;
    assert_error(status, &body, 502, "Provider error");
    w.monday
        .inject("*", 1, Behaviour::DelayBefore(Duration::from_secs(3)));
    let (status, body) = save(json!({"apiKey": MONDAY_TOKEN, "boardId": MONDAY_BOARD})).await;
    assert_error(status, &body, 502, "Provider unavailable");

    // None of the failures changed the saved settings; clearing the group is a change.
    assert_eq!(
        get(app, &admin.token, "monday").await["groupId"],
        json!("bugs")
    );
    let (status, body) = save(json!({"groupId": null})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        get(app, &admin.token, "monday").await["groupId"],
        Value::Null
    );
    assert_eq!(
        audit_details(app, &admin.org_id, "integration.updated")
            .await
            .len(),
        2
    );
}

async fn disable_enable_partial_update_and_unlink(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Toggle Org").await;
    insert_execution(app, &admin.org_id, "run-1").await;
    save_linear(app, &admin).await;
    let issue = json!({"taskId": "run-1", "title": "Checkout fails"});

    let (status, body) = put(app, &admin.token, "linear", json!({"enabled": false})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(w.linear.seen().len(), 1, "toggling needs no provider call");
    let data = get(app, &admin.token, "linear").await;
    assert_eq!(
        data,
        json!({"enabled": false, "teamId": ENG_TEAM_ID, "teamKey": "ENG", "teamName": "Engineering"})
    );
    let (status, body) = file(app, &admin.token, "/api/linear/issues", issue.clone()).await;
    assert_error(status, &body, 400, "Integration not configured");

    let (status, _) = put(app, &admin.token, "linear", json!({"enabled": true})).await;
    assert_eq!(status, 200);
    assert_eq!(
        get(app, &admin.token, "linear").await["enabled"],
        json!(true)
    );
    let (status, body) = file(app, &admin.token, "/api/linear/issues", issue.clone()).await;
    assert_eq!(status, 201, "the stored credentials were kept: {body}");

    // A later save may omit the key: the stored one is used to check the new team.
    let (status, body) = put(app, &admin.token, "linear", json!({"teamId": "OPS"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        w.linear.seen().pop().unwrap().authorization.as_deref(),
        Some(LINEAR_KEY)
    );
    assert_eq!(
        get(app, &admin.token, "linear").await["teamId"],
        json!(OPS_TEAM_ID)
    );
    let fields: Vec<Value> = audit_details(app, &admin.org_id, "integration.updated")
        .await
        .into_iter()
        .map(|d| json!([d["fields"], d["enabled"]]))
        .collect();
    assert_eq!(
        fields,
        [
            json!([["teamId", "teamKey", "teamName", "apiKey"], true]),
            json!([["enabled"], false]),
            json!([["enabled"], true]),
            json!([["teamId", "teamKey", "teamName"], true]),
        ]
    );

    let (status, body) = call(
        app.request(Method::DELETE, "/api/integrations/linear")
            .bearer_auth(&admin.token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"success": true, "message": "Integration unlinked successfully"})
    );
    assert_eq!(
        get(app, &admin.token, "linear").await,
        json!({"enabled": false})
    );
    let (status, _) = call(
        app.request(Method::DELETE, "/api/integrations/linear")
            .bearer_auth(&admin.token),
    )
    .await;
    assert_eq!(status, 200, "unlinking twice is fine");
    assert_eq!(
        audit_details(app, &admin.org_id, "integration.unlinked").await,
        [json!({"provider": "linear"})]
    );
    let stored: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM integrations WHERE organization_id = $1")
            .bind(&admin.org_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(stored, 0, "the credentials are gone");
    let (status, body) = put(app, &admin.token, "linear", json!({"teamId": "ENG"})).await;
    assert_error(status, &body, 400, "Invalid apiKey");
    let (status, body) = put(app, &admin.token, "linear", json!({"enabled": true})).await;
    assert_error(status, &body, 400, "Invalid apiKey");
    let (status, body) = file(app, &admin.token, "/api/linear/issues", issue).await;
    assert_error(status, &body, 400, "Integration not configured");
}

const SLACK_URL: &str =
    "https://hooks.slack.com/services/T0123ABCD/B0123ABCD/abcdefghijklmnopqrstuvwx";

async fn every_provider_validates_its_fields(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Fields Org").await;

    // The five trackers' saves are checked against their fakes (trackers.rs).
    let (status, answer) = put(app, &admin.token, "slack", json!({"webhookUrl": SLACK_URL})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["message"],
        json!("Slack integration saved successfully")
    );
    assert_eq!(
        get(app, &admin.token, "slack").await,
        json!({"enabled": true, "events": ["FAILED", "ERROR", "UNSTABLE"]})
    );
    let (status, _) = put(
        app,
        &admin.token,
        "slack",
        json!({"events": ["PASSED", "PASSED"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        get(app, &admin.token, "slack").await["events"],
        json!(["PASSED"])
    );
    let refusals = [
        (
            "jira",
            json!({"domain": "acme.example.com", "email": "a@b.co", "apiToken": "t"}),
            "Invalid domain",
        ),
        (
            "jira",
            json!({"domain": "acme.atlassian.net.evil.io", "email": "a@b.co", "apiToken": "t"}),
            "Invalid domain",
        ),
        (
            "jira",
            json!({"apiToken": "t", "domain": "acme.atlassian.net", "email": "not-an-email"}),
            "Invalid email",
        ),
        ("jira", json!({"apiToken": ""}), "Invalid apiToken"),
        (
            "jira",
            json!({"apiToken": "t", "domain": "acme.atlassian.net", "email": "a@b.co", "projectKey": "9X"}),
            "Invalid projectKey",
        ),
        (
            "jira",
            json!({"apiToken": "t", "domain": "acme.atlassian.net", "email": "a@b.co"}),
            "Invalid projectKey",
        ),
        (
            "github",
            json!({"token": "t", "owner": ""}),
            "Invalid owner",
        ),
        (
            "github",
            json!({"token": "t", "owner": "acme", "repo": "a/b"}),
            "Invalid repo",
        ),
        ("github", json!({"token": 12}), "Invalid token"),
        (
            "gitlab",
            json!({"token": "t", "projectId": 42, "baseUrl": "ftp://gitlab.acme.dev"}),
            "Invalid baseUrl",
        ),
        (
            "gitlab",
            json!({"token": "t", "baseUrl": "https://user:pw@gitlab.acme.dev"}),
            "Invalid baseUrl",
        ),
        (
            "gitlab",
            json!({"token": "t", "projectId": ""}),
            "Invalid projectId",
        ),
        (
            "azuredevops",
            json!({"token": "t", "organization": "-acme"}),
            "Invalid organization",
        ),
        (
            "azuredevops",
            json!({"token": "t", "organization": "acme", "project": "a/b"}),
            "Invalid project",
        ),
        (
            "bitbucket",
            json!({"token": "t", "email": "a@b.co", "workspace": "acme", "repoSlug": " "}),
            "Invalid repoSlug",
        ),
        (
            "bitbucket",
            json!({"token": "t", "workspace": "acme", "repoSlug": "shop"}),
            "Invalid email",
        ),
        (
            "slack",
            json!({"webhookUrl": "https://example.com/services/T0123ABCD/B0123ABCD/abcdefghijklmnopqrstuvwx"}),
            "Invalid webhookUrl",
        ),
        (
            "slack",
            json!({"webhookUrl": "http://hooks.slack.com/services/T0123ABCD/B0123ABCD/abcdefghijklmnopqrstuvwx"}),
            "Invalid webhookUrl",
        ),
        (
            "slack",
            json!({"events": ["FAILED", "EXPLODED"]}),
            "Invalid events",
        ),
        ("slack", json!({"events": "FAILED"}), "Invalid events"),
        ("slack", json!({"enabled": "yes"}), "Invalid enabled"),
        ("linear", json!({"teamId": "ENG"}), "Invalid apiKey"),
        ("linear", json!({"apiKey": LINEAR_KEY}), "Invalid teamId"),
        (
            "linear",
            json!({"apiKey": LINEAR_KEY, "teamId": ""}),
            "Invalid teamId",
        ),
        (
            "linear",
            json!({"apiKey": "", "teamId": "ENG"}),
            "Invalid apiKey",
        ),
        (
            "monday",
            json!({"apiKey": MONDAY_TOKEN, "boardId": MONDAY_BOARD, "groupId": ""}),
            "Invalid groupId",
        ),
        ("monday", json!({"apiKey": MONDAY_TOKEN}), "Invalid boardId"),
        ("github", json!({"unrelated": 1}), "Missing fields"),
    ];
    for (provider, body, error) in refusals {
        let (status, answer) = put(app, &admin.token, provider, body.clone()).await;
        assert_error(status, &answer, 400, error);
    }
    // Nothing above was saved, nor reached a provider.
    assert_eq!(
        get(app, &admin.token, "jira").await,
        json!({"enabled": false})
    );
    let trackers = &w.trackers;
    let tracker_calls = trackers.jira.seen().len()
        + trackers.github.seen().len()
        + trackers.gitlab.seen().len()
        + trackers.azure.seen().len()
        + trackers.bitbucket.seen().len();
    assert_eq!(
        w.linear.seen().len() + w.monday.seen().len() + tracker_calls,
        0,
        "invalid bodies never reach a provider"
    );

    for path in ["/api/integrations/trello", "/api/integrations/LINEAR"] {
        let (status, body) = call(app.get(path, &admin.token)).await;
        assert_error(status, &body, 404, "Unsupported provider");
        let (status, body) =
            call(app.send_json(Method::PUT, path, &admin.token, json!({"token": "x"}))).await;
        assert_error(status, &body, 404, "Unsupported provider");
    }
    let (status, body) = call(
        app.request(Method::PUT, "/api/integrations/github")
            .bearer_auth(&admin.token),
    )
    .await;
    assert_error(status, &body, 400, "Missing body");
    let (status, body) = call(app.request(Method::GET, "/api/integrations/github")).await;
    assert_error(status, &body, 401, "Authentication required");
}

async fn only_admins_change_settings_and_viewers_file_tickets(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Roles Org").await;
    save_linear(app, &admin).await;
    insert_execution(app, &admin.org_id, "run-roles").await;
    for role in ["viewer", "developer"] {
        let member = app.add_member(&admin.org_id, role).await;
        assert_eq!(
            get(app, &member.token, "linear").await["teamKey"],
            json!("ENG")
        );
        let (status, body) = put(app, &member.token, "linear", json!({"enabled": false})).await;
        assert_error(status, &body, 403, "Forbidden");
        assert_eq!(
            body["message"],
            json!(format!(
                "This action requires one of the following roles: admin. Your role: {role}."
            ))
        );
        let (status, body) = put(app, &member.token, "github", json!("not even an object")).await;
        assert_error(status, &body, 403, "Forbidden");
        let (status, body) = call(
            app.request(Method::DELETE, "/api/integrations/linear")
                .bearer_auth(&member.token),
        )
        .await;
        assert_error(status, &body, 403, "Forbidden");
        let (status, body) = file(
            app,
            &member.token,
            "/api/linear/issues",
            json!({"taskId": "run-roles", "title": format!("From a {role}")}),
        )
        .await;
        assert_eq!(status, 201, "{role}: {body}");
    }
    assert_eq!(
        get(app, &admin.token, "linear").await["enabled"],
        json!(true)
    );
    assert_eq!(w.linear.created().len(), 2);
}

async fn organizations_see_only_their_own(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let a = app.signup("Org A").await;
    let b = app.signup("Org B").await;
    save_linear(app, &a).await;
    save_monday(app, &a).await;
    let exec_a = insert_execution(app, &a.org_id, "shared-task").await;

    assert_eq!(
        get(app, &b.token, "linear").await,
        json!({"enabled": false})
    );
    assert_eq!(
        get(app, &b.token, "monday").await,
        json!({"enabled": false})
    );
    // B cannot file against A's credentials, nor against A's execution even with its own.
    let (status, body) = file(
        app,
        &b.token,
        "/api/linear/issues",
        json!({"taskId": "shared-task", "title": "x"}),
    )
    .await;
    assert_error(status, &body, 404, "Execution not found");
    save_linear(app, &b).await;
    let (status, body) = file(
        app,
        &b.token,
        "/api/linear/issues",
        json!({"taskId": "shared-task", "title": "x"}),
    )
    .await;
    assert_error(status, &body, 404, "Execution not found");
    // B's own execution with the same taskId is a different one.
    let exec_b = insert_execution(app, &b.org_id, "shared-task").await;
    let (status, _) = file(
        app,
        &b.token,
        "/api/linear/issues",
        json!({"taskId": "shared-task", "title": "B's"}),
    )
    .await;
    assert_eq!(status, 201);
    assert!(links(app, &exec_a).await.is_empty());
    assert_eq!(links(app, &exec_b).await.len(), 1);
    // B unlinking its own leaves A's alone.
    call(
        app.request(Method::DELETE, "/api/integrations/linear")
            .bearer_auth(&b.token),
    )
    .await;
    assert_eq!(get(app, &a.token, "linear").await["enabled"], json!(true));
    assert!(
        audit_details(app, &a.org_id, "integration.unlinked")
            .await
            .is_empty()
    );
}

async fn linear_issue_is_created_linked_and_audited(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Tickets Org").await;
    save_linear(app, &admin).await;
    let execution = insert_execution(app, &admin.org_id, "run:42").await;
    let viewer = app.add_member(&admin.org_id, "viewer").await;

    let body = json!({"taskId": "run:42", "title": "  Checkout fails on Safari  ", "description": "## Failure\n`expected 200`"});
    let (status, answer) = file(app, &viewer.token, "/api/linear/issues", body).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        answer,
        json!({"success": true, "data": {"issueId": "ENG-1", "issueUrl": "https://linear.app/fake-org/issue/ENG-1/a-slug"}})
    );
    let created = w.linear.created();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["teamId"], json!(ENG_TEAM_ID));
    assert_eq!(created[0]["title"], json!("Checkout fails on Safari"));
    assert_eq!(
        created[0]["description"],
        json!(
            "## Failure\n`expected 200`\n\n---\n[View this run in orgd](https://orgd.example/executions/run%3A42)"
        )
    );
    let issue_id = created[0]["id"].as_str().unwrap();
    assert!(
        issue_id.len() == 36 && &issue_id[14..15] == "4",
        "a client-generated UUID v4: {issue_id}"
    );
    let create = w.linear.seen_op("issueCreate").pop().unwrap();
    assert!(
        !create.query.contains("Checkout"),
        "user text must travel in variables"
    );

    assert_eq!(
        links(app, &execution).await,
        [(
            "linear".to_string(),
            "ENG-1".to_string(),
            "https://linear.app/fake-org/issue/ENG-1/a-slug".to_string(),
            "Checkout fails on Safari".to_string(),
            viewer.user_id.clone()
        )]
    );
    assert_eq!(
        audit_details(app, &admin.org_id, "linear.issue_created").await,
        [
            json!({"taskId": "run:42", "issueId": "ENG-1", "issueUrl": "https://linear.app/fake-org/issue/ENG-1/a-slug"})
        ]
    );

    // Without a description only the link back is sent; without a public URL, nothing.
    let (status, _) = file(
        app,
        &viewer.token,
        "/api/linear/issues",
        json!({"taskId": "run:42", "title": "Second"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        w.linear.created()[1]["description"],
        json!("[View this run in orgd](https://orgd.example/executions/run%3A42)")
    );
    let private = app.another_instance_with(|c| c.public_url = None).await;
    let (status, _) = file(
        &private,
        &viewer.token,
        "/api/linear/issues",
        json!({"taskId": "run:42", "title": "Third"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(w.linear.created()[2]["description"], Value::Null);
    assert_eq!(links(app, &execution).await.len(), 3);

    // Refusals before anything reaches Linear.
    let deleted = insert_execution(app, &admin.org_id, "run-deleted").await;
    sqlx::query("UPDATE executions SET deleted_at = $1 WHERE id = $2")
        .bind(app.clock.now_ms())
        .bind(&deleted)
        .execute(&app.db)
        .await
        .unwrap();
    let cases = [
        (
            json!({"taskId": "nope", "title": "x"}),
            404,
            "Execution not found",
        ),
        (
            json!({"taskId": "run-deleted", "title": "x"}),
            404,
            "Execution not found",
        ),
        (json!({"title": "x"}), 400, "Invalid taskId"),
        (json!({"taskId": 7, "title": "x"}), 400, "Invalid taskId"),
        (json!({"taskId": "run:42"}), 400, "Invalid title"),
        (
            json!({"taskId": "run:42", "title": "   "}),
            400,
            "Invalid title",
        ),
        (
            json!({"taskId": "run:42", "title": "x".repeat(256)}),
            400,
            "Invalid title",
        ),
        (
            json!({"taskId": "run:42", "title": "line\nbreak"}),
            400,
            "Invalid title",
        ),
        (
            json!({"taskId": "run:42", "title": "x", "description": 5}),
            400,
            "Invalid description",
        ),
        (
            json!({"taskId": "run:42", "title": "x", "description": "d".repeat(64 * 1024 + 1)}),
            400,
            "Invalid description",
        ),
    ];
    for (body, code, error) in cases {
        let (status, answer) = file(app, &viewer.token, "/api/linear/issues", body).await;
        assert_error(status, &answer, code, error);
    }
    let (status, answer) = file(
        app,
        &viewer.token,
        "/api/linear/issues",
        json!({"taskId": "run:42", "title": "x".repeat(255)}),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(w.linear.created().len(), 4);
    let (status, body) = file(
        app,
        &viewer.token,
        "/api/monday/items",
        json!({"taskId": "run:42", "title": "x"}),
    )
    .await;
    assert_error(status, &body, 400, "Integration not configured");
}

async fn monday_item_gets_an_escaped_update_or_a_warning(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Monday Tickets").await;
    save_monday(app, &admin).await;
    let execution = insert_execution(app, &admin.org_id, "run-m").await;

    let body = json!({"taskId": "run-m", "title": "Login broken", "description": "<script>alert(1)</script>\nExpected & got"});
    let (status, answer) = file(app, &admin.token, "/api/monday/items", body).await;
    assert_eq!(status, 201, "{answer}");
    let item_url =
        format!("https://fake-account.monday.com/boards/{MONDAY_BOARD}/pulses/9876500001");
    assert_eq!(
        answer,
        json!({"success": true, "data": {"itemId": "9876500001", "itemUrl": item_url}})
    );
    let items = w.monday.created();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["name"], json!("Login broken"));
    assert_eq!(items[0]["groupId"], json!("bugs"));
    assert_eq!(
        w.monday.updates(),
        [json!({"itemId": "9876500001", "body":
            "<p>&lt;script&gt;alert(1)&lt;/script&gt;<br>Expected &amp; got</p><p><a href=\"https://orgd.example/executions/run-m\">View this run in orgd</a></p>"})]
    );
    for seen in w.monday.seen() {
        assert_eq!(seen.api_version.as_deref(), Some("2026-07"));
        assert!(
            !seen.query.contains("Login") && !seen.query.contains("script"),
            "{}",
            seen.query
        );
    }
    assert_eq!(
        links(app, &execution).await,
        [(
            "monday".to_string(),
            "9876500001".to_string(),
            item_url,
            "Login broken".to_string(),
            admin.user_id.clone()
        )]
    );

    // The item exists once created: a failing update is a warning, never a second item.
    w.monday.inject(
        "create_update",
        1,
        Behaviour::status(
            500,
            json!({"errors":[{"message":"x","extensions":{"code":"INTERNAL_SERVER_ERROR"}}]}),
        ),
    );
    let (status, answer) = file(
        app,
        &admin.token,
        "/api/monday/items",
        json!({"taskId": "run-m", "title": "Second", "description": "d"}),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        answer["warning"],
        json!("Item created; adding the description failed")
    );
    assert_eq!(answer["data"]["itemId"], json!("9876500002"));
    assert_eq!(w.monday.created().len(), 2);
    assert_eq!(w.monday.updates().len(), 1);
    assert_eq!(links(app, &execution).await.len(), 2);
    let audit = audit_details(app, &admin.org_id, "monday.item_created").await;
    assert_eq!(audit.len(), 2);
    assert_eq!(
        audit[1]["warning"],
        json!("Item created; adding the description failed")
    );
}

async fn provider_refusals_are_ours_to_word(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Refusals Org").await;
    save_linear(app, &admin).await;
    save_monday(app, &admin).await;
    let execution = insert_execution(app, &admin.org_id, "run-r").await;
    let issue = json!({"taskId": "run-r", "title": "t"});
    let item = json!({"taskId": "run-r", "title": "t"});

    w.linear.inject("issueCreate", 1, Behaviour::status(400, json!({"errors":[{"message":"SECRET-INTERNAL-XYZ went wrong",
        "extensions":{"type":"invalid input","code":"INPUT_ERROR","userPresentableMessage":"SECRET-INTERNAL-XYZ"}}]})));
    let (status, body) = file(app, &admin.token, "/api/linear/issues", issue.clone()).await;
    assert_error(status, &body, 502, "Provider error");
    assert!(
        !body.to_string().contains("XYZ"),
        "the provider's words leaked: {body}"
    );

    w.monday.inject("create_item", 1, Behaviour::status(200, json!({"data":{"create_item":null},"errors":[{"message":"The board does not exist RAW-TEXT",
        "extensions":{"code":"InvalidBoardIdException","error_data":{"board_id":1},"status_code":200}}],
        "error_code":"InvalidBoardIdException","error_message":"RAW-TEXT"})));
    let (status, body) = file(app, &admin.token, "/api/monday/items", item.clone()).await;
    assert_error(status, &body, 502, "Provider error");
    assert!(!body.to_string().contains("RAW-TEXT"));

    // Timed out (the fake would answer only after the test), then 503s: unavailable.
    w.linear.inject(
        "issueCreate",
        1,
        Behaviour::DelayBefore(Duration::from_secs(20)),
    );
    w.linear
        .inject("issue(", 1, Behaviour::DelayBefore(Duration::from_secs(20)));
    w.linear
        .inject("issueCreate", 2, Behaviour::status(503, Value::Null));
    let (status, body) = file(app, &admin.token, "/api/linear/issues", issue.clone()).await;
    assert_error(status, &body, 502, "Provider unavailable");
    w.linear.clear_injections();

    // Credentials revoked at the provider: the stored settings are the provider's problem.
    w.linear.revoke_all();
    w.monday.revoke_all();
    let (status, body) = file(app, &admin.token, "/api/linear/issues", issue).await;
    assert_error(status, &body, 502, "Provider error");
    let (status, body) = file(app, &admin.token, "/api/monday/items", item).await;
    assert_error(status, &body, 502, "Provider error");

    assert!(
        w.linear.created().len() <= 1,
        "a delayed create may have run once"
    );
    assert!(links(app, &execution).await.len() <= 1);
    assert_eq!(w.monday.created().len(), 0);
}

async fn rate_limits_are_waited_out_or_reported(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Limits Org").await;
    save_linear(app, &admin).await;
    save_monday(app, &admin).await;
    let execution = insert_execution(app, &admin.org_id, "run-l").await;
    let body = json!({"taskId": "run-l", "title": "t", "description": "d"});

    // A short limit (reset in 1 s, as epoch ms, on HTTP 400) is waited out inside the request.
    w.linear.inject(
        "issueCreate",
        1,
        linear_rate_limited(app.clock.now_ms() + 1000),
    );
    let (status, answer) = file(app, &admin.token, "/api/linear/issues", body.clone()).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(w.linear.seen_op("issueCreate").len(), 2);
    assert_eq!(w.linear.created().len(), 1);

    // A long one is reported with Retry-After; the client's retry later succeeds.
    w.linear.inject(
        "issueCreate",
        5,
        linear_rate_limited(app.clock.now_ms() + 90_000),
    );
    let res = app
        .send_json(
            Method::POST,
            "/api/linear/issues",
            &admin.token,
            body.clone(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["retry-after"], "90");
    let (status, answer) = crate::helpers::read(res).await;
    assert_error(status, &answer, 503, "Provider rate limited");
    assert_eq!(w.linear.created().len(), 1);
    w.linear.clear_injections();
    let (status, _) = file(app, &admin.token, "/api/linear/issues", body.clone()).await;
    assert_eq!(status, 201);

    // Monday: 429 + COMPLEXITY_BUDGET_EXHAUSTED, retry_in_seconds 1 → one retry, one item.
    w.monday.inject("create_item", 1, monday_complexity(1));
    let (status, answer) = file(app, &admin.token, "/api/monday/items", body.clone()).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(w.monday.seen_op("create_item").len(), 2);
    assert_eq!(w.monday.created().len(), 1);
    w.monday.inject("create_item", 3, monday_complexity(45));
    let (status, answer) = file(app, &admin.token, "/api/monday/items", body.clone()).await;
    assert_error(status, &answer, 503, "Provider rate limited");
    assert_eq!(answer["retryAfter"], json!(45));
    w.monday.clear_injections();

    // The daily limit is not retried: Retry-After runs to the next UTC midnight (our clock).
    let day = 24 * 3600 * 1000;
    app.clock.set((app.clock.now_ms() / day + 1) * day - 60_000);
    w.monday.inject(
        "create_item",
        3,
        Behaviour::status(
            200,
            json!({"errors":[{"message":"Daily limit exceeded",
        "extensions":{"code":"DAILY_LIMIT_EXCEEDED"}}]}),
        ),
    );
    let before = w.monday.seen_op("create_item").len();
    let res = app
        .send_json(
            Method::POST,
            "/api/monday/items",
            &admin.token,
            body.clone(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["retry-after"], "60");
    let (status, answer) = crate::helpers::read(res).await;
    assert_error(status, &answer, 503, "Provider rate limited");
    assert_eq!(
        w.monday.seen_op("create_item").len(),
        before + 1,
        "no retry against a daily limit"
    );
    assert_eq!(links(app, &execution).await.len(), 3);
}

async fn idempotency_key_replays_and_creates_nothing(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Idem Org").await;
    save_linear(app, &admin).await;
    save_monday(app, &admin).await;
    let execution = insert_execution(app, &admin.org_id, "run-i").await;
    let body = json!({"taskId": "run-i", "title": "Once"});
    let send = |route: &str, key: &str, body: Value| {
        app.send_json(Method::POST, route, &admin.token, body)
            .header("Idempotency-Key", key)
            .send()
    };

    let first = send("/api/linear/issues", "key-1", body.clone())
        .await
        .unwrap();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let (status, first) = crate::helpers::read(first).await;
    assert_eq!(status, 201, "{first}");
    let again = send("/api/linear/issues", "key-1", body.clone())
        .await
        .unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let (status, again) = crate::helpers::read(again).await;
    assert_eq!((status, &again), (201, &first));
    assert_eq!(w.linear.created().len(), 1, "the replay created nothing");
    assert_eq!(links(app, &execution).await.len(), 1);
    assert_eq!(
        audit_details(app, &admin.org_id, "linear.issue_created")
            .await
            .len(),
        1
    );

    let res = send(
        "/api/linear/issues",
        "key-1",
        json!({"taskId": "run-i", "title": "Other"}),
    )
    .await
    .unwrap();
    let (status, answer) = crate::helpers::read(res).await;
    assert_error(status, &answer, 422, "Idempotency key reused");

    // Scoped to route and organization.
    let (status, _) = crate::helpers::read(
        send("/api/monday/items", "key-1", body.clone())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    let other = app.signup("Other Idem Org").await;
    save_linear(app, &other).await;
    insert_execution(app, &other.org_id, "run-i").await;
    let res = app
        .send_json(
            Method::POST,
            "/api/linear/issues",
            &other.token,
            body.clone(),
        )
        .header("Idempotency-Key", "key-1")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("idempotent-replayed").is_none());
    assert_eq!(res.status().as_u16(), 201);
    assert_eq!(w.linear.created().len(), 2);

    // An error is not remembered: the same key may try again and then succeeds once.
    w.linear.inject(
        "issueCreate",
        1,
        Behaviour::status(
            400,
            json!({"errors":[{"message":"no","extensions":{"type":"invalid input"}}]}),
        ),
    );
    let (status, _) = crate::helpers::read(
        send("/api/linear/issues", "key-2", body.clone())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 502);
    let (status, _) = crate::helpers::read(
        send("/api/linear/issues", "key-2", body.clone())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    let res = send("/api/linear/issues", "key-2", body.clone())
        .await
        .unwrap();
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    assert_eq!(w.linear.created().len(), 3);

    // While the first request runs, a repeat is 409; afterwards it replays.
    w.linear.inject(
        "issueCreate",
        1,
        Behaviour::DelayAfter(Duration::from_millis(800)),
    );
    let slow = tokio::spawn(send("/api/linear/issues", "key-3", body.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, answer) = crate::helpers::read(
        send("/api/linear/issues", "key-3", body.clone())
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &answer, 409, "Request in progress");
    let (status, first) = crate::helpers::read(slow.await.unwrap().unwrap()).await;
    assert_eq!(status, 201);
    let (status, again) = crate::helpers::read(
        send("/api/linear/issues", "key-3", body.clone())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, again), (201, first));
    assert_eq!(w.linear.created().len(), 4);

    // Kept 24 hours, then the key is free again (a fresh token: the old one expired too).
    app.clock.advance(24 * 3600 * 1000 + 1);
    let (_, login) = app.login(&admin.email, crate::helpers::PASSWORD).await;
    let token = login["token"].as_str().unwrap();
    let res = app
        .send_json(Method::POST, "/api/linear/issues", token, body.clone())
        .header("Idempotency-Key", "key-1")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("idempotent-replayed").is_none());
    assert_eq!(res.status().as_u16(), 201);
    assert_eq!(w.linear.created().len(), 5);

    let res = app
        .send_json(Method::POST, "/api/linear/issues", token, body)
        .header("Idempotency-Key", "bad key with spaces")
        .send()
        .await
        .unwrap();
    let (status, answer) = crate::helpers::read(res).await;
    assert_error(status, &answer, 400, "Invalid Idempotency-Key");
}

async fn parallel_requests_with_one_key_create_one_ticket(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Parallel Org").await;
    save_monday(app, &admin).await;
    let execution = insert_execution(app, &admin.org_id, "run-p").await;
    w.monday.inject(
        "create_item",
        1,
        Behaviour::DelayAfter(Duration::from_millis(300)),
    );
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let request = app
            .send_json(
                Method::POST,
                "/api/monday/items",
                &admin.token,
                json!({"taskId": "run-p", "title": "Same"}),
            )
            .header("Idempotency-Key", "parallel");
        tasks.push(tokio::spawn(async move {
            let res = request.send().await.unwrap();
            let replayed = res.headers().contains_key("idempotent-replayed");
            (res.status().as_u16(), replayed)
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let fresh = outcomes.iter().filter(|o| **o == (201, false)).count();
    assert_eq!(fresh, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| *o == (201, false) || *o == (201, true) || o.0 == 409),
        "{outcomes:?}"
    );
    assert_eq!(w.monday.created().len(), 1);
    assert_eq!(links(app, &execution).await.len(), 1);
}

async fn a_ticket_created_after_the_client_left_is_still_linked(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Leaving Org").await;
    save_linear(app, &admin).await;
    save_monday(app, &admin).await;
    let execution = insert_execution(app, &admin.org_id, "run-c").await;

    for (fake, op, route) in [
        (&w.linear, "issueCreate", "/api/linear/issues"),
        (&w.monday, "create_item", "/api/monday/items"),
    ] {
        fake.inject(op, 1, Behaviour::DelayAfter(Duration::from_millis(1000)));
        let gave_up = app
            .send_json(
                Method::POST,
                route,
                &admin.token,
                json!({"taskId": "run-c", "title": "Left early"}),
            )
            .header("Idempotency-Key", "leaving")
            .timeout(Duration::from_millis(300))
            .send()
            .await;
        assert!(gave_up.is_err(), "the client should have given up");
        eventually(|| async { fake.created().len() == 1 }).await;
    }
    eventually(|| async { links(app, &execution).await.len() == 2 }).await;
    let found = links(app, &execution).await;
    let providers: Vec<&str> = found.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(
        providers,
        ["linear", "monday"],
        "every created ticket is linked"
    );
    assert_eq!(
        app.audit_actions(&admin.org_id)
            .await
            .iter()
            .filter(|a| a.ends_with("_created"))
            .count(),
        2
    );
    // The client's retry with its key gets the answer it missed; nothing is created again.
    let res = app
        .send_json(
            Method::POST,
            "/api/linear/issues",
            &admin.token,
            json!({"taskId": "run-c", "title": "Left early"}),
        )
        .header("Idempotency-Key", "leaving")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    let (status, body) = crate::helpers::read(res).await;
    assert_eq!((status, &body["data"]["issueId"]), (201, &json!("ENG-1")));
    assert_eq!(w.linear.created().len(), 1);
}

async fn a_timed_out_create_is_never_duplicated(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Timeout Org").await;
    save_linear(app, &admin).await;
    save_monday(app, &admin).await;
    let execution = insert_execution(app, &admin.org_id, "run-t").await;

    // Linear created the issue but answered after our timeout: our issue id finds it.
    w.linear.inject(
        "issueCreate",
        1,
        Behaviour::DelayAfter(Duration::from_secs(3)),
    );
    let (status, answer) = file(
        app,
        &admin.token,
        "/api/linear/issues",
        json!({"taskId": "run-t", "title": "Slow"}),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["data"]["issueId"], json!("ENG-1"));
    assert_eq!(w.linear.created().len(), 1);
    assert_eq!(
        w.linear.seen_op("issue(").len(),
        1,
        "looked up by its client-generated id"
    );

    // Monday has no such id: a create that timed out is reported, never sent again.
    w.monday.inject(
        "create_item",
        1,
        Behaviour::DelayAfter(Duration::from_secs(3)),
    );
    let (status, body) = file(
        app,
        &admin.token,
        "/api/monday/items",
        json!({"taskId": "run-t", "title": "Slow"}),
    )
    .await;
    assert_error(status, &body, 502, "Provider unavailable");
    assert_eq!(w.monday.seen_op("create_item").len(), 1);
    assert_eq!(links(app, &execution).await.len(), 1);
}

async fn concurrent_saves_are_applied_whole_or_refused(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Racing Org").await;
    let github = &w.trackers.github;
    for i in 0..8 {
        github.add_repo("acme", &format!("repo-{i}"), true);
    }
    let (status, _) = put(
        app,
        &admin.token,
        "github",
        w.trackers.save_body_with("github", "ghp_first"),
    )
    .await;
    assert_eq!(status, 200);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let request = app.send_json(
            Method::PUT,
            "/api/integrations/github",
            &admin.token,
            json!({"repo": format!("repo-{i}")}),
        );
        tasks.push(tokio::spawn(async move {
            crate::helpers::read(request.send().await.unwrap()).await
        }));
    }
    let mut saved = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let (status, body) = task.await.unwrap();
        match status {
            200 => saved.push(format!("repo-{i}")),
            _ => assert_error(status, &body, 409, "Integration changed"),
        }
    }
    assert!(!saved.is_empty());
    let repo = get(app, &admin.token, "github").await["repo"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        saved.contains(&repo),
        "{repo} was not among the accepted saves {saved:?}"
    );
    let version: i64 = sqlx::query_scalar(
        "SELECT version FROM integrations WHERE organization_id = $1 AND provider = 'github'",
    )
    .bind(&admin.org_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        version as usize,
        saved.len() + 1,
        "every accepted save, and only those, was written"
    );
    assert_eq!(
        audit_details(app, &admin.org_id, "integration.updated")
            .await
            .len(),
        saved.len() + 1
    );
}

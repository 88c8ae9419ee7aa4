//! Tenant isolation, proven: organization A has data in every kind of resource; every
//! credential of organization B (admin, developer and viewer sessions, an admin's and a
//! viewer's API key) calls every route that takes one of A's ids, task ids, tokens or paths,
//! and each gets the refusal the code documents — 404 exactly as if the thing did not exist,
//! 403 where B's role is the reason, 401 where the credential is not accepted at all — and
//! never a 2xx. B's own lists show nothing of A's. A's data, seen through A's API and row by
//! row in the store, is the same afterwards, and no provider was called on A's behalf.
//!
//! Adding a route with an id is one line in `probes`.

use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use sqlx::{Column, Row};

use crate::executions::{files_below, org_reports_dir, set_overrides, upload};
use crate::fakes::FakeTracker;
use crate::helpers::{Backend, Session, TestApp, call};
use crate::integrations::{save_linear, save_monday};
use crate::llm_fakes::{FakeLlm, Kind};

crate::backend_tests!(another_organization_sees_and_changes_nothing);

const OPENAI_BYOK: &str = "sk-alpha-byok-0123456789abcdef";
const OPERATOR_TOKEN: &str = "operator-token-for-the-isolation-test";
const FAILED_RUN: &str = "alpha-failed-run";
const PENDING_RUN: &str = "alpha-pending-run";
const REPORT: &str = "alpha-report.html";
const REQUESTED_RUN: &str = "alpha-requested-run";
const ALPHA_ENV_VALUE: &str = "alpha-env-secret-value";
const ALPHA_SLACK_URL: &str =
    "https://hooks.slack.com/services/T0ALPHA01/B0ALPHA01/alphaSlackSecret0123456789";

const ALL: &[&str] = &["admin", "developer", "viewer"];
const WRITERS: &[&str] = &["admin", "developer"];
const ADMIN: &[&str] = &["admin"];

struct World {
    app: TestApp,
    linear: FakeTracker,
    monday: FakeTracker,
    openai: FakeLlm,
}

async fn world(backend: Backend) -> World {
    let linear = FakeTracker::linear().await;
    let monday = FakeTracker::monday().await;
    let openai = FakeLlm::start(Kind::OpenAi, &[OPENAI_BYOK]).await;
    let urls = (linear.url.clone(), monday.url.clone(), openai.url.clone());
    let app = TestApp::spawn_with(backend, move |c| {
        c.linear_api_url = urls.0;
        c.monday_api_url = urls.1;
        c.ai.openai_api_url = urls.2;
        c.admin_token = Some(orgd::config::Secret(OPERATOR_TOKEN.into()));
        c.rate_limit_per_minute = 100_000;
        c.ingest_rate_limit_per_minute = 100_000;
    })
    .await;
    World {
        app,
        linear,
        monday,
        openai,
    }
}

/// Organization A and the identifiers of everything it owns.
struct Alpha {
    admin: Session,
    developer: Session,
    viewer: Session,
    invitation_id: String,
    invitation_token: String,
    key_id: String,
    key_secret: String,
    project_id: String,
    /// Everything that names A or its data and must never reach B.
    markers: Vec<String>,
}

async fn send(app: &TestApp, token: &str, method: Method, path: &str, body: Value) -> Value {
    let (status, answer) = call(app.send_json(method.clone(), path, token, body)).await;
    assert!(
        (200..300).contains(&status),
        "setup {method} {path}: {status} {answer}"
    );
    answer
}

/// A with members of each role, a pending invitation, an API key (used once), a project, a
/// failed run with a report file, an analysis (BYOK key) and a Linear issue, a pending run,
/// Linear and Monday settings, and the audit entries all of that wrote.
async fn alpha(w: &World) -> Alpha {
    let app = &w.app;
    let admin = app.signup("Alpha Isolated Org").await;
    // Three members and a pending invitation are more seats than the free plan has.
    set_overrides(app, &admin.org_id, json!({"maxUsers": 10})).await;
    let developer = app.add_member(&admin.org_id, "developer").await;
    let viewer = app.add_member(&admin.org_id, "viewer").await;
    let invitation = send(
        app,
        &admin.token,
        Method::POST,
        "/api/invitations",
        json!({"email": "alpha-invitee@example.com", "role": "developer"}),
    )
    .await;
    let key = send(
        app,
        &developer.token,
        Method::POST,
        "/api/auth/api-keys",
        json!({"name": "alpha-ci-key"}),
    )
    .await;
    let key_secret = key["apiKey"].as_str().unwrap().to_string();
    let project = send(
        app,
        &admin.token,
        Method::POST,
        "/api/projects",
        json!({"name": "Alpha Secret Project"}),
    )
    .await;
    let project_id = project["data"]["project"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let failed = send(
        app,
        &developer.token,
        Method::POST,
        "/api/executions",
        json!({"taskId": FAILED_RUN, "projectId": project_id, "status": "RUNNING", "groupName": "alpha-group"}),
    )
    .await;
    let (status, body) = upload(
        app,
        &developer,
        FAILED_RUN,
        REPORT,
        b"<html>alpha report</html>".to_vec(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    send(
        app,
        &developer.token,
        Method::PATCH,
        &format!("/api/executions/{FAILED_RUN}"),
        json!({"status": "FAILED", "error": "alpha assertion failed", "output": "alpha log"}),
    )
    .await;
    send(
        app,
        &admin.token,
        Method::PATCH,
        "/api/organization/ai-config",
        json!({"byok": {"provider": "openai", "apiKey": OPENAI_BYOK}}),
    )
    .await;
    let analysis = send(
        app,
        &developer.token,
        Method::POST,
        &format!("/api/executions/{FAILED_RUN}/analysis"),
        json!({"model": "gpt-6.1-sol"}),
    )
    .await;
    assert_eq!(analysis["data"]["analysis"]["keySource"], json!("byok"));
    save_linear(app, &admin).await;
    save_monday(app, &admin).await;
    let issue = send(
        app,
        &viewer.token,
        Method::POST,
        "/api/linear/issues",
        json!({"taskId": FAILED_RUN, "title": "Alpha ticket"}),
    )
    .await;
    // A requested run with sealed environment values, finished; Slack saved through the
    // organization's settings.
    send(
        app,
        &developer.token,
        Method::POST,
        "/api/execution-request",
        json!({"taskId": REQUESTED_RUN, "image": "alpha/e2e:1", "command": "npm test",
               "groupName": "alpha-requested", "config": {"environment": "alpha-env",
               "envVars": {"ALPHA_TOKEN": ALPHA_ENV_VALUE}}}),
    )
    .await;
    send(
        app,
        &developer.token,
        Method::PATCH,
        &format!("/api/executions/{REQUESTED_RUN}"),
        json!({"status": "PASSED"}),
    )
    .await;
    send(
        app,
        &admin.token,
        Method::PATCH,
        "/api/organization",
        json!({"slackWebhookUrl": ALPHA_SLACK_URL, "slackNotificationEvents": ["PASSED"]}),
    )
    .await;
    // The pending run is created with A's API key, so the key has been used.
    let (status, pending) = call(
        app.request(Method::POST, "/api/executions")
            .header("x-api-key", &key_secret)
            .json(&json!({"taskId": PENDING_RUN})),
    )
    .await;
    assert_eq!(status, 201, "{pending}");

    let (_, org) = call(app.get("/api/organization", &admin.token)).await;
    let (_, audit) = call(app.get("/api/organization/audit-logs?limit=200", &admin.token)).await;
    let mut markers: Vec<String> = vec![
        admin.org_id.clone(),
        org["organization"]["name"].as_str().unwrap().into(),
        org["organization"]["slug"].as_str().unwrap().into(),
        invitation["invitation"]["id"].as_str().unwrap().into(),
        "alpha-invitee@example.com".into(),
        key["data"]["id"].as_str().unwrap().into(),
        key["data"]["prefix"].as_str().unwrap().into(),
        "alpha-ci-key".into(),
        key_secret.clone(),
        project_id.clone(),
        "Alpha Secret Project".into(),
        failed["data"]["execution"]["id"].as_str().unwrap().into(),
        pending["data"]["execution"]["id"].as_str().unwrap().into(),
        FAILED_RUN.into(),
        PENDING_RUN.into(),
        "alpha-group".into(),
        "alpha assertion failed".into(),
        REPORT.into(),
        issue["data"]["issueUrl"].as_str().unwrap().into(),
        OPENAI_BYOK.into(),
        REQUESTED_RUN.into(),
        "alpha-requested".into(),
        "alpha-env".into(),
        "ALPHA_TOKEN".into(),
        "alpha/e2e:1".into(),
        ALPHA_ENV_VALUE.into(),
        ALPHA_SLACK_URL.into(),
    ];
    for member in [&admin, &developer, &viewer] {
        markers.push(member.user_id.clone());
        markers.push(member.email.clone());
    }
    let entries = audit["auditLogs"].as_array().unwrap();
    assert!(entries.len() >= 7, "{audit}");
    markers.extend(
        entries
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string()),
    );
    Alpha {
        admin,
        developer,
        viewer,
        invitation_id: invitation["invitation"]["id"].as_str().unwrap().into(),
        invitation_token: invitation["invitation"]["token"].as_str().unwrap().into(),
        key_id: key["data"]["id"].as_str().unwrap().into(),
        key_secret,
        project_id,
        markers,
    }
}

/// One of B's credentials.
struct Caller {
    label: &'static str,
    role: &'static str,
    credential: Credential,
}

enum Credential {
    Session(String),
    ApiKey(String),
}

impl Caller {
    fn authorize(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.credential {
            Credential::Session(token) => request.bearer_auth(token),
            Credential::ApiKey(key) => request.header("x-api-key", key),
        }
    }

    /// API keys are accepted on `/api/executions*` only (API.md, Conventions).
    fn accepted_on(&self, path: &str) -> bool {
        match self.credential {
            Credential::Session(_) => true,
            Credential::ApiKey(_) => {
                path == "/api/executions"
                    || path.starts_with("/api/executions/")
                    || path == "/api/execution-request"
            }
        }
    }
}

/// A new API key of `owner`'s (the secret).
async fn api_key(app: &TestApp, owner: &Session) -> String {
    let key = send(
        app,
        &owner.token,
        Method::POST,
        "/api/auth/api-keys",
        json!({"name": "beta"}),
    )
    .await;
    key["apiKey"].as_str().unwrap().to_string()
}

/// B: an admin, a developer and a viewer, each signed in, API keys of the admin and the
/// viewer, and Linear and Monday configured — so a ticket request that found A's run would
/// go all the way to the provider.
async fn beta(w: &World) -> Vec<Caller> {
    let app = &w.app;
    let admin = app.signup("Beta Org").await;
    let developer = app.add_member(&admin.org_id, "developer").await;
    let viewer = app.add_member(&admin.org_id, "viewer").await;
    save_linear(app, &admin).await;
    save_monday(app, &admin).await;
    let admin_key = api_key(app, &admin).await;
    let viewer_key = api_key(app, &viewer).await;
    vec![
        Caller {
            label: "B admin session",
            role: "admin",
            credential: Credential::Session(admin.token),
        },
        Caller {
            label: "B developer session",
            role: "developer",
            credential: Credential::Session(developer.token),
        },
        Caller {
            label: "B viewer session",
            role: "viewer",
            credential: Credential::Session(viewer.token),
        },
        Caller {
            label: "B admin API key",
            role: "admin",
            credential: Credential::ApiKey(admin_key),
        },
        Caller {
            label: "B viewer API key",
            role: "viewer",
            credential: Credential::ApiKey(viewer_key),
        },
    ]
}

enum Payload {
    Empty,
    Json(Value),
    Raw(&'static [u8]),
}

/// What every one of B's credentials must get.
enum Expect {
    /// Looked up in the caller's organization: 404 `error` for `roles`; the others are
    /// refused for their role first (403 `Forbidden`).
    NotFound {
        roles: &'static [&'static str],
        error: &'static str,
    },
    /// The same refusal whatever the role.
    Always(u16, &'static str),
}

struct Probe {
    method: Method,
    path: String,
    payload: Payload,
    expect: Expect,
}

fn probe(method: Method, path: String, payload: Payload, expect: Expect) -> Probe {
    Probe {
        method,
        path,
        payload,
        expect,
    }
}

fn not_found(roles: &'static [&'static str], error: &'static str) -> Expect {
    Expect::NotFound { roles, error }
}

/// Every route that takes an id, task id, token or path of A's.
fn probes(a: &Alpha) -> Vec<Probe> {
    use Method as M;
    use Payload::{Empty, Json, Raw};
    let mut probes = Vec::new();
    for user in [&a.admin.user_id, &a.developer.user_id, &a.viewer.user_id] {
        probes.extend([
            probe(
                M::GET,
                format!("/api/users/{user}"),
                Empty,
                not_found(ALL, "User not found"),
            ),
            probe(
                M::DELETE,
                format!("/api/users/{user}"),
                Empty,
                not_found(ADMIN, "User not found"),
            ),
            probe(
                M::PATCH,
                format!("/api/users/{user}/role"),
                Json(json!({"role": "viewer"})),
                not_found(ADMIN, "User not found"),
            ),
        ]);
    }
    for task in [FAILED_RUN, PENDING_RUN, REQUESTED_RUN] {
        let run = format!("/api/executions/{task}");
        let file = format!("{run}/reports/{REPORT}");
        let ticket = json!({"taskId": task, "title": "filed by B"});
        let missing = "Execution not found";
        probes.extend([
            probe(M::GET, run.clone(), Empty, not_found(ALL, missing)),
            probe(
                M::PATCH,
                run.clone(),
                Json(json!({"status": "PASSED", "error": "B was here"})),
                not_found(WRITERS, missing),
            ),
            probe(M::DELETE, run.clone(), Empty, not_found(WRITERS, missing)),
            probe(
                M::GET,
                format!("{run}/reports"),
                Empty,
                not_found(ALL, missing),
            ),
            probe(M::GET, file.clone(), Empty, not_found(ALL, missing)),
            probe(
                M::PUT,
                file,
                Raw(b"replaced by B"),
                not_found(WRITERS, missing),
            ),
            probe(
                M::PUT,
                format!("{run}/reports/new.txt"),
                Raw(b"B"),
                not_found(WRITERS, missing),
            ),
            probe(
                M::POST,
                format!("{run}/analysis"),
                Json(json!({})),
                not_found(WRITERS, missing),
            ),
            probe(
                M::GET,
                format!("{run}/run-request"),
                Empty,
                not_found(WRITERS, missing),
            ),
            probe(
                M::POST,
                "/api/linear/issues".into(),
                Json(ticket.clone()),
                not_found(ALL, missing),
            ),
            probe(
                M::POST,
                "/api/monday/items".into(),
                Json(ticket),
                not_found(ALL, missing),
            ),
        ]);
    }
    probes.extend([
        probe(
            M::DELETE,
            format!("/api/invitations/{}", a.invitation_id),
            Empty,
            not_found(ADMIN, "Invitation not found"),
        ),
        // The token is a capability meant to be handed over (GET /api/invitations/validate/
        // shows the inviting organization's name to whoever holds it, by design), but it is
        // bound to the invited email: none of B's members can use it, and nothing moves.
        probe(
            M::POST,
            "/api/invitations/accept".into(),
            Json(json!({"token": a.invitation_token})),
            Expect::Always(403, "Email mismatch"),
        ),
        probe(
            M::DELETE,
            format!("/api/auth/api-keys/{}", a.key_id),
            Empty,
            not_found(ALL, "API key not found"),
        ),
        probe(
            M::DELETE,
            format!("/api/projects/{}", a.project_id),
            Empty,
            not_found(WRITERS, "Project not found"),
        ),
        // Creating a run in A's project must not attach anything to it.
        probe(
            M::POST,
            "/api/executions".into(),
            Json(json!({"taskId": "beta-probe", "projectId": a.project_id, "status": "RUNNING"})),
            not_found(WRITERS, "Project not found"),
        ),
        probe(
            M::POST,
            "/api/execution-request".into(),
            Json(json!({"taskId": "beta-probe", "image": "b", "command": "c", "projectId": a.project_id})),
            not_found(WRITERS, "Project not found"),
        ),
        // The operator API answers only the operator token, never an organization's.
        probe(
            M::PUT,
            format!("/api/admin/organizations/{}/plan", a.admin.org_id),
            Json(json!({"plan": "enterprise"})),
            Expect::Always(401, "Authentication required"),
        ),
        probe(
            M::PUT,
            format!("/api/admin/organizations/{}/limits", a.admin.org_id),
            Json(json!({"maxUsers": null})),
            Expect::Always(401, "Authentication required"),
        ),
        probe(
            M::GET,
            "/api/admin/organizations".into(),
            Empty,
            Expect::Always(401, "Authentication required"),
        ),
    ]);
    probes
}

impl Probe {
    /// The status and error string `caller` must get.
    fn expected(&self, caller: &Caller) -> (u16, &'static str) {
        if !caller.accepted_on(&self.path) {
            return (401, "Authentication required");
        }
        match self.expect {
            Expect::NotFound { roles, error } if roles.contains(&caller.role) => (404, error),
            Expect::NotFound { .. } => (403, "Forbidden"),
            Expect::Always(status, error) => (status, error),
        }
    }

    fn request(&self, app: &TestApp, caller: &Caller) -> RequestBuilder {
        let request = caller.authorize(app.request(self.method.clone(), &self.path));
        match &self.payload {
            Payload::Empty => request,
            Payload::Json(body) => request.json(body),
            Payload::Raw(bytes) => request.body(bytes.to_vec()),
        }
    }
}

/// Organization-scoped reads: whoever calls them sees their own organization only.
fn lists(a: &Alpha, a_cursor: &str) -> Vec<String> {
    [
        "/api/users?limit=500",
        "/api/invitations?limit=500",
        "/api/projects",
        "/api/executions?limit=100",
        "/api/executions?status=FAILED,PENDING",
        "/api/executions?groupName=alpha-group",
        "/api/executions?environment=alpha-env",
        "/api/executions?source=agnox-hosted",
        "/api/executions/grouped?limit=50",
        "/api/executions/grouped?groupName=alpha-requested",
        "/api/executions/grouped?groupName=__ungrouped__&source=external-ci",
        "/api/analytics/kpis",
        "/api/billing/subscription",
        "/api/billing/plans",
        "/api/auth/api-keys",
        "/api/auth/me",
        "/api/organization",
        "/api/organization/usage",
        "/api/organization/usage/alerts",
        "/api/organization/ai-config",
        "/api/integrations/linear",
        "/api/integrations/monday",
        "/api/organization/audit-logs?limit=200",
    ]
    .into_iter()
    .map(String::from)
    .chain([
        format!("/api/organization/audit-logs?userId={}", a.admin.user_id),
        format!("/api/organization/audit-logs?limit=200&cursor={a_cursor}"),
    ])
    .collect()
}

/// A's data as A's own members see it through the API, byte for byte.
async fn api_view(app: &TestApp, a: &Alpha) -> Vec<(String, u16, String)> {
    let admin_reads = [
        "/api/organization".to_string(),
        "/api/organization/usage".into(),
        "/api/organization/usage/alerts".into(),
        "/api/organization/ai-config".into(),
        "/api/organization/audit-logs?limit=200".into(),
        "/api/auth/me".into(),
        "/api/users".into(),
        format!("/api/users/{}", a.admin.user_id),
        format!("/api/users/{}", a.developer.user_id),
        format!("/api/users/{}", a.viewer.user_id),
        "/api/invitations".into(),
        "/api/projects".into(),
        "/api/executions".into(),
        "/api/executions/grouped".into(),
        "/api/analytics/kpis".into(),
        "/api/billing/subscription".into(),
        format!("/api/executions/{FAILED_RUN}"),
        format!("/api/executions/{PENDING_RUN}"),
        format!("/api/executions/{REQUESTED_RUN}"),
        format!("/api/executions/{FAILED_RUN}/reports"),
        format!("/api/executions/{FAILED_RUN}/reports/{REPORT}"),
        format!("/api/executions/{PENDING_RUN}/reports"),
        "/api/integrations/linear".into(),
        "/api/integrations/monday".into(),
    ];
    let reads = admin_reads
        .iter()
        .map(|path| (path.as_str(), &a.admin.token))
        // API keys are listed to their creator only.
        .chain([("/api/auth/api-keys", &a.developer.token)]);
    let mut view = Vec::new();
    for (path, token) in reads {
        let res = app.get(path, token).send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        assert_eq!(status, 200, "A reading {path}: {text}");
        view.push((path.to_string(), status, text));
    }
    view
}

/// One cell of a stored row, whatever its column type, as text.
fn cell(row: &sqlx::any::AnyRow, i: usize) -> String {
    if let Ok(v) = row.try_get::<Option<String>, _>(i) {
        return format!("{v:?}");
    }
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return format!("{v:?}");
    }
    if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
        return format!("{v:?}");
    }
    if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
        return format!("{v:?}");
    }
    match row.try_get::<Option<Vec<u8>>, _>(i) {
        Ok(v) => format!("{v:?}"),
        Err(e) => panic!("column {} not readable: {e}", row.columns()[i].name()),
    }
}

const TABLES: &[&str] = &[
    "organizations",
    "users",
    "revoked_tokens",
    "login_failures",
    "audit_logs",
    "invitations",
    "api_keys",
    "projects",
    "executions",
    "report_files",
    "usage_counters",
    "execution_links",
    "integrations",
    "ai_provider_keys",
    "idempotency_keys",
    "analyses",
    "run_requests",
    "run_stats",
    "run_groups",
];

/// Every row of A's, every column, plus the row count of every table, plus A's report files.
async fn stored_view(app: &TestApp, org_id: &str) -> Vec<String> {
    let mut view = Vec::new();
    for table in TABLES {
        let total: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&app.db)
                .await
                .unwrap();
        view.push(format!("{table}: {total} rows"));
        let owner = match *table {
            "organizations" => "id",
            "revoked_tokens" | "login_failures" => continue,
            _ => "organization_id",
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM {table} WHERE {owner} = $1"
        )))
        .bind(org_id)
        .fetch_all(&app.db)
        .await
        .unwrap();
        let mut rows: Vec<String> = rows
            .iter()
            .map(|row| {
                let cells: Vec<String> = (0..row.columns().len()).map(|i| cell(row, i)).collect();
                format!("{table}: {}", cells.join(" | "))
            })
            .collect();
        rows.sort();
        view.extend(rows);
    }
    view.extend(
        files_below(&org_reports_dir(app, org_id))
            .into_iter()
            .map(|(path, size)| format!("file {path}: {size} bytes")),
    );
    view
}

fn leaked<'m>(text: &str, markers: &'m [String]) -> Vec<&'m str> {
    markers
        .iter()
        .filter(|m| text.contains(m.as_str()))
        .map(String::as_str)
        .collect()
}

async fn another_organization_sees_and_changes_nothing(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let a = alpha(&w).await;
    let callers = beta(&w).await;
    let (_, page) = call(app.get("/api/organization/audit-logs?limit=1", &a.admin.token)).await;
    let a_cursor = page["nextCursor"].as_str().unwrap().to_string();

    // The markers are real: A's own reads show them (so a leak would be seen).
    let a_reads = api_view(app, &a).await;
    let all_text: String = a_reads.iter().map(|(_, _, t)| t.as_str()).collect();
    let unseen: Vec<&String> = a
        .markers
        .iter()
        .filter(|m| !all_text.contains(m.as_str()))
        .collect();
    // Secrets A stored are never shown again (run-request values only to a runner, audited).
    assert!(
        unseen.iter().all(|m| **m == a.key_secret
            || *m == OPENAI_BYOK
            || *m == ALPHA_ENV_VALUE
            || *m == ALPHA_SLACK_URL),
        "markers A itself cannot see: {unseen:?}"
    );

    let stored_before = stored_view(app, &a.admin.org_id).await;
    let created_before = (w.linear.created().len(), w.monday.created().len());
    let llm_calls_before = w.openai.seen().len();

    let probes = probes(&a);
    for caller in &callers {
        for probe in &probes {
            let (status, body) = call(probe.request(app, caller)).await;
            let (want_status, want_error) = probe.expected(caller);
            let context = format!("{} {} {}", caller.label, probe.method, probe.path);
            assert_eq!(status, want_status, "{context}: {body}");
            assert_eq!(body["success"], json!(false), "{context}: {body}");
            assert_eq!(body["error"], json!(want_error), "{context}: {body}");
            assert!(body["message"].is_string(), "{context}: {body}");
            let leaks = leaked(&body.to_string(), &a.markers);
            assert!(leaks.is_empty(), "{context} leaked {leaks:?}: {body}");
        }
        for path in lists(&a, &a_cursor) {
            let res = caller
                .authorize(app.request(Method::GET, &path))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let text = res.text().await.unwrap();
            let context = format!("{} GET {path}", caller.label);
            let leaks = leaked(&text, &a.markers);
            assert!(leaks.is_empty(), "{context} leaked {leaks:?}: {text}");
            let body: Value = serde_json::from_str(&text).unwrap();
            match status {
                200 => assert_eq!(body["success"], json!(true), "{context}: {text}"),
                401 | 403 => assert_eq!(body["success"], json!(false), "{context}: {text}"),
                _ => panic!("{context}: {status} {text}"),
            }
        }
        // What B's own organization view shows is B's.
        let (status, org) =
            call(caller.authorize(app.request(Method::GET, "/api/organization"))).await;
        if status == 200 {
            assert_eq!(
                org["organization"]["name"],
                json!("Beta Org"),
                "{}",
                caller.label
            );
        }
    }

    assert_eq!(stored_view(app, &a.admin.org_id).await, stored_before);
    assert_eq!(api_view(app, &a).await, a_reads);
    assert_eq!(
        (w.linear.created().len(), w.monday.created().len()),
        created_before,
        "a ticket was filed"
    );
    assert_eq!(
        w.openai.seen().len(),
        llm_calls_before,
        "a provider was called"
    );
}

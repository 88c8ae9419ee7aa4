//! Projects and executions: shapes, limits under concurrency, status transitions, listing,
//! links, tenancy and roles. Also the helpers the report, usage and operator tests share.

use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use orgd_core::clock::Clock;

use crate::helpers::{Backend, Session, TestApp, assert_error, call};

crate::backend_tests!(
    projects_are_created_listed_limited_and_deleted,
    executions_have_the_documented_shape,
    task_ids_are_unique_per_organization_including_deleted,
    create_validates_its_body,
    status_moves_forward_only,
    list_paginates_filters_and_counts,
    cursors_walk_every_page_also_filtered,
    ticket_links_are_shown_on_list_and_single_views,
    viewers_read_but_do_not_write,
    another_organizations_task_ids_answer_404,
    parallel_creations_never_pass_the_monthly_limit,
    parallel_creations_never_pass_the_concurrency_limit,
    runs_count_in_the_month_they_were_created,
    executions_use_the_ingest_bucket,
    automation_drives_executions_with_api_keys,
);

// ---- shared helpers -------------------------------------------------------------------

/// Replaces an organization's limit overrides (JSON text, e.g. `{"maxTestRuns": 10}`).
pub async fn set_overrides(app: &TestApp, org_id: &str, overrides: Value) {
    sqlx::query("UPDATE organizations SET limit_overrides = $1 WHERE id = $2")
        .bind(overrides.to_string())
        .bind(org_id)
        .execute(&app.db)
        .await
        .expect("set overrides");
    app.organization_changed(org_id).await;
}

/// The `YYYY-MM` of the app's clock.
pub fn current_period(app: &TestApp) -> String {
    orgd_core::usage::Period::containing(app.clock.now_ms()).key
}

/// Sets this month's test-run counter directly.
pub async fn set_test_runs(app: &TestApp, org_id: &str, runs: i64) {
    sqlx::query(
        "INSERT INTO usage_counters (organization_id, period, test_runs, ai_analyses) VALUES ($1, $2, $3, 0)
         ON CONFLICT (organization_id, period) DO UPDATE SET test_runs = $3",
    )
    .bind(org_id)
    .bind(current_period(app))
    .bind(runs)
    .execute(&app.db)
    .await
    .expect("set test runs");
}

pub async fn test_runs_counter(app: &TestApp, org_id: &str, period: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT test_runs FROM usage_counters WHERE organization_id = $1 AND period = $2",
    )
    .bind(org_id)
    .bind(period)
    .fetch_optional(&app.db)
    .await
    .expect("counter")
    .unwrap_or(0)
}

pub async fn storage_counter(app: &TestApp, org_id: &str) -> i64 {
    sqlx::query_scalar("SELECT storage_used_bytes FROM organizations WHERE id = $1")
        .bind(org_id)
        .fetch_one(&app.db)
        .await
        .expect("storage counter")
}

pub async fn create_execution(app: &TestApp, session: &Session, body: Value) -> (u16, Value) {
    call(app.send_json(Method::POST, "/api/executions", &session.token, body)).await
}

/// Creates an execution with this taskId and asserts it worked.
pub async fn new_execution(app: &TestApp, session: &Session, task_id: &str) -> Value {
    let (status, body) = create_execution(app, session, json!({"taskId": task_id})).await;
    assert_eq!(status, 201, "{body}");
    body["data"]["execution"].clone()
}

pub async fn finish(app: &TestApp, session: &Session, task_id: &str) {
    let (status, body) = call(app.send_json(
        Method::PATCH,
        &format!("/api/executions/{task_id}"),
        &session.token,
        json!({"status": "PASSED"}),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
}

/// `PUT /api/executions/:taskId/reports/:path` with `bytes` as the raw body.
pub async fn upload(
    app: &TestApp,
    session: &Session,
    task_id: &str,
    path: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    call(
        app.request(
            Method::PUT,
            &format!("/api/executions/{task_id}/reports/{path}"),
        )
        .bearer_auth(&session.token)
        .body(bytes),
    )
    .await
}

/// The organization's report directory (a test on the local directory).
pub fn org_reports_dir(app: &TestApp, org_id: &str) -> PathBuf {
    match &app.config.reports {
        orgd::config::ReportsLocation::Directory(dir) => dir.join(org_id),
        other => panic!("reports are not in a directory: {other:?}"),
    }
}

/// What the report store holds for the organization, as `<taskId>/<path>` with the size:
/// files on disk, or objects named by the path of the row pointing to them (an object no
/// row points to shows as `<taskId>/<its key>`).
pub async fn stored_files(app: &TestApp, org_id: &str) -> Vec<(String, u64)> {
    use futures_util::TryStreamExt;
    use orgd_providers::reports::object_store::path::Path as ObjectPath;
    let orgd::config::ReportsLocation::Store { store, prefix } = &app.config.reports else {
        return files_below(&org_reports_dir(app, org_id));
    };
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT task_id, path, object_key FROM report_files WHERE organization_id = $1",
    )
    .bind(org_id)
    .fetch_all(&app.db)
    .await
    .expect("report rows");
    let prefix = ObjectPath::from(prefix.as_str());
    let below: ObjectPath = prefix
        .parts()
        .chain(ObjectPath::from(org_id).parts())
        .collect();
    let objects: Vec<_> = store
        .list(Some(&below))
        .try_collect()
        .await
        .expect("list the store");
    let depth = prefix.parts().count();
    let mut out: Vec<(String, u64)> = objects
        .into_iter()
        .map(|meta| {
            let key = meta
                .location
                .parts()
                .skip(depth)
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/");
            let name = match rows.iter().find(|r| r.2.as_deref() == Some(key.as_str())) {
                Some((task, path, _)) => format!("{task}/{path}"),
                None => key
                    .split_once('/')
                    .map_or(key.as_str(), |(_, rest)| rest)
                    .to_string(),
            };
            (name, meta.size)
        })
        .collect();
    out.sort();
    out
}

/// Every regular file below `dir` (not following symlinks) with its size, relative to it.
pub fn files_below(dir: &Path) -> Vec<(String, u64)> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, u64)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let file_type = entry.file_type().expect("file type");
            if file_type.is_dir() {
                walk(&entry.path(), base, out);
            } else if file_type.is_file() {
                let relative = entry
                    .path()
                    .strip_prefix(base)
                    .expect("prefix")
                    .to_string_lossy()
                    .into_owned();
                out.push((relative, entry.metadata().expect("metadata").len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Sends `request` as is over a fresh connection (no client-side path normalisation) and
/// returns the status and the JSON body (`Value::Null` when the body is not JSON).
pub async fn raw_http(app: &TestApp, request: &[u8]) -> (u16, Value) {
    let addr = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

pub fn raw_request(method: &str, target: &str, token: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Runs `count` requests built by `make` at once and returns their statuses.
pub async fn in_parallel<F>(count: usize, make: F) -> Vec<u16>
where
    F: Fn(usize) -> reqwest::RequestBuilder,
{
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let request = make(i);
            tokio::spawn(async move { request.send().await.expect("request").status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task"));
    }
    statuses
}

pub fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

// ---- tests ----------------------------------------------------------------------------

async fn projects_are_created_listed_limited_and_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Projects").await;
    let (status, body) = call(app.send_json(
        Method::POST,
        "/api/projects",
        &admin.token,
        json!({"name": " Web App "}),
    ))
    .await;
    assert_eq!(status, 201, "{body}");
    let project = &body["data"]["project"];
    assert_eq!(project["name"], json!("Web App"));
    assert_eq!(project["slug"], json!("web-app"));
    assert!(orgd_core::ids::is_valid(project["id"].as_str().unwrap()));
    let mut keys: Vec<&str> = project
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["createdAt", "id", "name", "slug"]);

    // Free plan: one project.
    let (status, body) = call(app.send_json(
        Method::POST,
        "/api/projects",
        &admin.token,
        json!({"name": "Second"}),
    ))
    .await;
    assert_error(status, &body, 403, "Project limit reached");
    assert_eq!(
        (body["limit"].clone(), body["current"].clone()),
        (json!(1), json!(1))
    );

    set_overrides(&app, &admin.org_id, json!({"maxProjects": null})).await;
    let (status, body) = call(app.send_json(
        Method::POST,
        "/api/projects",
        &admin.token,
        json!({"name": "web app"}),
    ))
    .await;
    assert_error(status, &body, 409, "Project already exists");
    let (status, body) = call(app.send_json(
        Method::POST,
        "/api/projects",
        &admin.token,
        json!({"name": ""}),
    ))
    .await;
    assert_error(status, &body, 400, "Invalid name");
    let (status, body) = call(app.send_json(
        Method::POST,
        "/api/projects",
        &admin.token,
        json!({"name": 5}),
    ))
    .await;
    assert_error(status, &body, 400, "Invalid name");

    let viewer = app.add_member(&admin.org_id, "viewer").await;
    let (status, body) = call(app.get("/api/projects", &viewer.token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["projects"], json!([project]));
    let id = project["id"].as_str().unwrap();
    let (status, body) = call(
        app.request(Method::DELETE, &format!("/api/projects/{id}"))
            .bearer_auth(&viewer.token),
    )
    .await;
    assert_error(status, &body, 403, "Forbidden");
    let (status, body) = call(
        app.request(Method::POST, "/api/projects")
            .bearer_auth(&viewer.token)
            .json(&json!({"name": "x"})),
    )
    .await;
    assert_error(status, &body, 403, "Forbidden");

    let other = app.signup("Other").await;
    let (status, body) = call(
        app.request(Method::DELETE, &format!("/api/projects/{id}"))
            .bearer_auth(&other.token),
    )
    .await;
    assert_error(status, &body, 404, "Project not found");
    let (status, _) = call(
        app.request(Method::DELETE, &format!("/api/projects/{id}"))
            .bearer_auth(&admin.token),
    )
    .await;
    assert_eq!(status, 200);
    let (_, body) = call(app.get("/api/projects", &admin.token)).await;
    assert_eq!(body["data"]["projects"], json!([]));
}

async fn executions_have_the_documented_shape(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Shapes").await;
    let (_, body) = call(app.send_json(
        Method::POST,
        "/api/projects",
        &admin.token,
        json!({"name": "Web"}),
    ))
    .await;
    let project_id = body["data"]["project"]["id"].clone();
    let created_at = app.clock.now_ms();
    let (status, body) = create_execution(
        &app,
        &admin,
        json!({"taskId": "run-1", "projectId": project_id, "status": "RUNNING", "trigger": "github", "groupName": "nightly", "unknown": 1}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["success"], json!(true));
    let execution = &body["data"]["execution"];
    let mut keys: Vec<&str> = execution
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "analysis",
            "ci",
            "createdAt",
            "duration",
            "endTime",
            "environment",
            "error",
            "finishedAt",
            "groupName",
            "id",
            "linearIssues",
            "mondayItems",
            "projectId",
            "reportBytes",
            "source",
            "startTime",
            "startedAt",
            "status",
            "taskId",
            "tickets",
            "trigger"
        ]
    );
    assert!(orgd_core::ids::is_valid(execution["id"].as_str().unwrap()));
    assert_eq!(execution["taskId"], json!("run-1"));
    assert_eq!(execution["projectId"], project_id);
    assert_eq!(execution["status"], json!("RUNNING"));
    assert_eq!(execution["trigger"], json!("github"));
    assert_eq!(execution["groupName"], json!("nightly"));
    assert_eq!(
        execution["createdAt"],
        json!(orgd_core::clock::format_ms(created_at))
    );
    assert_eq!(
        execution["startedAt"], execution["createdAt"],
        "created RUNNING: started now"
    );
    assert_eq!(execution["finishedAt"], Value::Null);
    assert_eq!(execution["error"], Value::Null);
    assert_eq!(execution["reportBytes"], json!(0));
    assert_eq!(execution["linearIssues"], json!([]));
    assert_eq!(execution["mondayItems"], json!([]));
    assert_eq!(execution["tickets"], json!([]));
    assert_eq!(execution["analysis"], Value::Null);

    // The single view adds `output`; a missing body makes a PENDING run with a generated taskId.
    let (status, body) = call(app.get("/api/executions/run-1", &admin.token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["execution"]["output"], Value::Null);
    assert_eq!(body["data"]["execution"]["id"], execution["id"]);
    let (status, body) = call(
        app.request(Method::POST, "/api/executions")
            .bearer_auth(&admin.token),
    )
    .await;
    assert_error(status, &body, 409, "Concurrent run limit reached");
    finish(&app, &admin, "run-1").await;
    let (status, body) = call(
        app.request(Method::POST, "/api/executions")
            .bearer_auth(&admin.token),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let generated = &body["data"]["execution"];
    assert!(
        orgd_core::ids::is_valid(generated["taskId"].as_str().unwrap()),
        "{generated}"
    );
    assert_eq!(generated["status"], json!("PENDING"));
    assert_eq!(generated["startedAt"], Value::Null);
    assert_eq!(generated["trigger"], Value::Null);
    assert_eq!(generated["projectId"], Value::Null);
}

async fn task_ids_are_unique_per_organization_including_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Unique").await;
    set_overrides(&app, &admin.org_id, json!({"maxConcurrentRuns": null})).await;
    new_execution(&app, &admin, "dup").await;
    let (status, body) = create_execution(&app, &admin, json!({"taskId": "dup"})).await;
    assert_error(status, &body, 409, "Execution already exists");

    // Another organization's identical taskId is a different execution.
    let other = app.signup("Other").await;
    let theirs = new_execution(&app, &other, "dup").await;
    let (_, mine) = call(app.get("/api/executions/dup", &admin.token)).await;
    assert_ne!(mine["data"]["execution"]["id"], theirs["id"]);

    // Deleted: 404 from then on, the taskId stays taken, the run still counts.
    let (status, body) = call(
        app.request(Method::DELETE, "/api/executions/dup")
            .bearer_auth(&admin.token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"success": true, "message": "Execution deleted successfully"})
    );
    for method in [Method::GET, Method::DELETE] {
        let (status, body) = call(
            app.request(method, "/api/executions/dup")
                .bearer_auth(&admin.token),
        )
        .await;
        assert_error(status, &body, 404, "Execution not found");
    }
    let (status, body) = call(app.send_json(
        Method::PATCH,
        "/api/executions/dup",
        &admin.token,
        json!({"status": "PASSED"}),
    ))
    .await;
    assert_error(status, &body, 404, "Execution not found");
    let (status, body) = create_execution(&app, &admin, json!({"taskId": "dup"})).await;
    assert_error(status, &body, 409, "Execution already exists");
    assert_eq!(
        test_runs_counter(&app, &admin.org_id, &current_period(&app)).await,
        1
    );
    let (_, usage) = call(app.get("/api/organization/usage", &admin.token)).await;
    assert_eq!(usage["usage"]["testRuns"]["used"], json!(1));
}

async fn create_validates_its_body(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Validation").await;
    for (body, error) in [
        (json!({"taskId": ""}), "Invalid taskId"),
        (json!({"taskId": "a b"}), "Invalid taskId"),
        (json!({"taskId": ".."}), "Invalid taskId"),
        (json!({"taskId": "x".repeat(129)}), "Invalid taskId"),
        (json!({"taskId": 7}), "Invalid taskId"),
        (json!({"status": "PASSED"}), "Invalid status"),
        (json!({"projectId": "nope"}), "Invalid projectId"),
        (json!({"trigger": "git hub"}), "Invalid trigger"),
        (json!({"groupName": "g".repeat(129)}), "Invalid groupName"),
    ] {
        let (status, response) = create_execution(&app, &admin, body.clone()).await;
        assert_error(status, &response, 400, error);
    }
    let (status, body) = create_execution(
        &app,
        &admin,
        json!({"projectId": "507f191e810c19729de860ea"}),
    )
    .await;
    assert_error(status, &body, 404, "Project not found");
    let (status, body) = call(
        app.request(Method::POST, "/api/executions")
            .bearer_auth(&admin.token)
            .header("content-type", "application/json")
            .body("{"),
    )
    .await;
    assert_error(status, &body, 400, "Invalid JSON");
    let (status, body) = call(app.request(Method::POST, "/api/executions")).await;
    assert_error(status, &body, 401, "Authentication required");
    // Nothing above was counted.
    assert_eq!(
        test_runs_counter(&app, &admin.org_id, &current_period(&app)).await,
        0
    );
}

async fn status_moves_forward_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Transitions").await;
    set_overrides(&app, &admin.org_id, json!({"maxConcurrentRuns": null})).await;
    let patch = |task: &str, body: Value| {
        app.send_json(
            Method::PATCH,
            &format!("/api/executions/{task}"),
            &admin.token,
            body,
        )
    };

    new_execution(&app, &admin, "a").await;
    app.clock.advance(1_000);
    let (status, body) = call(patch("a", json!({"status": "RUNNING"}))).await;
    assert_eq!(status, 200, "{body}");
    let started = body["data"]["execution"]["startedAt"].clone();
    assert_eq!(
        started,
        json!(orgd_core::clock::format_ms(app.clock.now_ms()))
    );
    app.clock.advance(1_000);
    let (status, body) = call(patch("a", json!({"status": "RUNNING"}))).await;
    assert_eq!(status, 200, "a repeated RUNNING is harmless: {body}");
    assert_eq!(
        body["data"]["execution"]["startedAt"], started,
        "startedAt is not moved"
    );
    app.clock.advance(1_000);
    let (status, body) = call(patch(
        "a",
        json!({"status": "FAILED", "error": "3 tests failed", "output": "log..."}),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    let execution = &body["data"]["execution"];
    assert_eq!(execution["status"], json!("FAILED"));
    assert_eq!(execution["error"], json!("3 tests failed"));
    assert_eq!(
        execution["finishedAt"],
        json!(orgd_core::clock::format_ms(app.clock.now_ms()))
    );
    assert!(
        execution.get("output").is_none(),
        "output only in the single view"
    );
    let (_, single) = call(app.get("/api/executions/a", &admin.token)).await;
    assert_eq!(single["data"]["execution"]["output"], json!("log..."));

    for next in ["RUNNING", "PASSED", "FAILED"] {
        let (status, body) = call(patch("a", json!({"status": next}))).await;
        assert_error(status, &body, 409, "Invalid status transition");
    }
    // Logs may still arrive after the end; the status does not move.
    let (status, body) = call(patch("a", json!({"output": "full log"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["execution"]["status"], json!("FAILED"));

    // PENDING may finish directly.
    new_execution(&app, &admin, "b").await;
    let (status, body) = call(patch("b", json!({"status": "UNSTABLE"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["execution"]["startedAt"], Value::Null);

    for (body, status, error) in [
        (json!({"status": "PENDING"}), 400, "Invalid status"),
        (json!({"status": "DONE"}), 400, "Invalid status"),
        (json!({"error": 5}), 400, "Invalid error"),
        (json!({}), 400, "Missing fields"),
    ] {
        let (s, response) = call(patch("b", body)).await;
        assert_error(s, &response, status, error);
    }
    let (status, body) = call(
        app.request(Method::PATCH, "/api/executions/b")
            .bearer_auth(&admin.token),
    )
    .await;
    assert_error(status, &body, 400, "Missing body");
    let (status, body) = call(patch("nope", json!({"status": "PASSED"}))).await;
    assert_error(status, &body, 404, "Execution not found");

    // Racing finishes: exactly one wins.
    new_execution(&app, &admin, "race").await;
    let statuses = in_parallel(8, |i| {
        let status = ["PASSED", "FAILED"][i % 2];
        app.send_json(
            Method::PATCH,
            "/api/executions/race",
            &admin.token,
            json!({"status": status}),
        )
    })
    .await;
    assert_eq!(
        (count(&statuses, 200), count(&statuses, 409)),
        (1, 7),
        "{statuses:?}"
    );
}

async fn list_paginates_filters_and_counts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Lists").await;
    set_overrides(&app, &admin.org_id, json!({"maxConcurrentRuns": null})).await;
    for i in 0..30 {
        new_execution(&app, &admin, &format!("t{i:02}")).await;
        app.clock.advance(10);
    }
    for i in 0..5 {
        finish(&app, &admin, &format!("t{i:02}")).await;
    }
    call(
        app.request(Method::DELETE, "/api/executions/t29")
            .bearer_auth(&admin.token),
    )
    .await;

    let (status, body) = call(app.get("/api/executions", &admin.token)).await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(
        (
            data["total"].clone(),
            data["limit"].clone(),
            data["offset"].clone()
        ),
        (json!(29), json!(25), json!(0))
    );
    let tasks: Vec<&str> = data["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(tasks.len(), 25);
    assert_eq!(tasks[0], "t28", "newest first, deleted left out");
    assert!(data["executions"][0].get("output").is_none());

    let (_, body) = call(app.get("/api/executions?limit=10&offset=25", &admin.token)).await;
    let tasks: Vec<&str> = body["data"]["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(tasks, ["t03", "t02", "t01", "t00"]);

    let (_, body) = call(app.get(
        "/api/executions?status=passed,%20PENDING&limit=100",
        &admin.token,
    ))
    .await;
    assert_eq!(body["data"]["total"], json!(29));
    let (_, body) = call(app.get("/api/executions?status=PASSED", &admin.token)).await;
    assert_eq!(body["data"]["total"], json!(5));
    assert!(
        body["data"]["executions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["status"] == json!("PASSED"))
    );

    for (query, error) in [
        ("limit=0", "Invalid limit"),
        ("limit=101", "Invalid limit"),
        ("limit=abc", "Invalid limit"),
        ("offset=-1", "Invalid offset"),
        ("status=DONE", "Invalid status"),
    ] {
        let (status, body) = call(app.get(&format!("/api/executions?{query}"), &admin.token)).await;
        assert_error(status, &body, 400, error);
    }
}

/// Every taskId of `path` (which takes `cursor`), following `nextCursor` to the last page,
/// with the `total` each page reported.
async fn walk(app: &TestApp, session: &Session, path: &str) -> (Vec<String>, Vec<Value>) {
    let (mut tasks, mut totals) = (Vec::new(), Vec::new());
    let mut url = path.to_string();
    loop {
        let (status, body) = call(app.get(&url, &session.token)).await;
        assert_eq!(status, 200, "{body}");
        let data = &body["data"];
        totals.push(data["total"].clone());
        tasks.extend(
            data["executions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["taskId"].as_str().unwrap().to_string()),
        );
        match data["nextCursor"].as_str() {
            Some(cursor) => url = format!("{path}&cursor={cursor}"),
            None => return (tasks, totals),
        }
    }
}

async fn cursors_walk_every_page_also_filtered(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Cursors").await;
    set_overrides(&app, &admin.org_id, json!({"maxConcurrentRuns": null})).await;
    // Pairs created in the same millisecond: the id orders them.
    for i in 0..23 {
        new_execution(&app, &admin, &format!("c{i:02}")).await;
        if i % 2 == 1 {
            app.clock.advance(5);
        }
    }
    for i in (0..23).step_by(3) {
        finish(&app, &admin, &format!("c{i:02}")).await;
    }
    call(
        app.request(Method::DELETE, "/api/executions/c21")
            .bearer_auth(&admin.token),
    )
    .await;
    // Within a millisecond ids decide the order, so the expected order is the one page that
    // holds everything; the pages must add up to it exactly.
    let one_page = |query: &'static str| {
        let app = &app;
        let admin = &admin;
        async move {
            let (_, body) =
                call(app.get(&format!("/api/executions?limit=100{query}"), &admin.token)).await;
            body["data"]["executions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["taskId"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let expected = |keep: &dyn Fn(usize) -> bool| -> Vec<String> {
        (0..23)
            .filter(|i| *i != 21 && keep(*i))
            .map(|i| format!("c{i:02}"))
            .collect()
    };

    let all = one_page("").await;
    assert_eq!(sorted(all.clone()), expected(&|_| true));
    let (tasks, totals) = walk(&app, &admin, "/api/executions?limit=5").await;
    assert_eq!(tasks, all);
    assert_eq!(totals.len(), 5);
    assert!(totals.iter().all(|t| *t == json!(22)), "{totals:?}");

    let passed = one_page("&status=PASSED").await;
    assert_eq!(sorted(passed.clone()), expected(&|i| i % 3 == 0));
    let (tasks, totals) = walk(&app, &admin, "/api/executions?limit=3&status=PASSED").await;
    assert_eq!(tasks, passed);
    assert!(totals.iter().all(|t| *t == json!(7)), "{totals:?}");

    // Several statuses: one ordered list across them, the same as unfiltered here.
    let (tasks, totals) = walk(
        &app,
        &admin,
        "/api/executions?limit=4&status=passed,PENDING",
    )
    .await;
    assert_eq!(tasks, all);
    assert!(totals.iter().all(|t| *t == json!(22)), "{totals:?}");
    let created = |t: &String| t[1..].parse::<usize>().unwrap();
    assert!(
        tasks
            .windows(2)
            .all(|w| created(&w[0]) / 2 >= created(&w[1]) / 2),
        "newest first: {tasks:?}"
    );

    // The last page says so.
    let (_, body) = call(app.get("/api/executions?limit=22", &admin.token)).await;
    assert_eq!(body["data"]["nextCursor"], json!(null));
    let (_, body) = call(app.get("/api/executions?limit=21", &admin.token)).await;
    assert!(body["data"]["nextCursor"].is_string(), "{body}");

    for (query, error) in [
        ("cursor=garbage", "Invalid cursor"),
        ("cursor=12_507F191E810C19729DE860EA", "Invalid cursor"),
        ("cursor=", "Invalid cursor"),
        (
            "cursor=1_507f191e810c19729de860ea&offset=3",
            "Invalid offset",
        ),
    ] {
        let (status, body) = call(app.get(&format!("/api/executions?{query}"), &admin.token)).await;
        assert_error(status, &body, 400, error);
    }
}

async fn ticket_links_are_shown_on_list_and_single_views(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Links").await;
    set_overrides(&app, &admin.org_id, json!({"maxConcurrentRuns": null})).await;
    let first = new_execution(&app, &admin, "linked").await;
    new_execution(&app, &admin, "plain").await;
    let now = app.clock.now_ms();
    for (provider, external, url, title, at) in [
        (
            "linear",
            "ENG-12",
            "https://linear.app/acme/issue/ENG-12",
            "Login fails",
            now,
        ),
        (
            "monday",
            "987654",
            "https://acme.monday.com/boards/1/pulses/987654",
            "Login fails",
            now + 1,
        ),
        (
            "linear",
            "ENG-13",
            "https://linear.app/acme/issue/ENG-13",
            "Flaky checkout",
            now + 2,
        ),
        (
            "jira",
            "OPS-7",
            "https://acme.atlassian.net/browse/OPS-7",
            "Login fails",
            now + 3,
        ),
    ] {
        sqlx::query(
            "INSERT INTO execution_links (id, organization_id, execution_id, provider, external_id, url, title, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(orgd_core::ids::new_id(at))
        .bind(&admin.org_id)
        .bind(first["id"].as_str().unwrap())
        .bind(provider)
        .bind(external)
        .bind(url)
        .bind(title)
        .bind(&admin.user_id)
        .bind(at)
        .execute(&app.db)
        .await
        .unwrap();
    }
    let expected_linear = json!([
        {"issueId": "ENG-12", "issueUrl": "https://linear.app/acme/issue/ENG-12", "title": "Login fails",
         "createdAt": orgd_core::clock::format_ms(now), "createdBy": admin.user_id},
        {"issueId": "ENG-13", "issueUrl": "https://linear.app/acme/issue/ENG-13", "title": "Flaky checkout",
         "createdAt": orgd_core::clock::format_ms(now + 2), "createdBy": admin.user_id},
    ]);
    let expected_monday = json!([
        {"itemId": "987654", "itemUrl": "https://acme.monday.com/boards/1/pulses/987654", "title": "Login fails",
         "createdAt": orgd_core::clock::format_ms(now + 1), "createdBy": admin.user_id},
    ]);
    // `tickets` lists every tracker's, oldest first; the seed's two lists keep their own.
    let ticket = |provider: &str, id: &str, url: &str, title: &str, at: i64| {
        json!({"provider": provider, "id": id, "url": url, "title": title,
               "createdAt": orgd_core::clock::format_ms(at), "createdBy": admin.user_id})
    };
    let expected_tickets = json!([
        ticket(
            "linear",
            "ENG-12",
            "https://linear.app/acme/issue/ENG-12",
            "Login fails",
            now
        ),
        ticket(
            "monday",
            "987654",
            "https://acme.monday.com/boards/1/pulses/987654",
            "Login fails",
            now + 1
        ),
        ticket(
            "linear",
            "ENG-13",
            "https://linear.app/acme/issue/ENG-13",
            "Flaky checkout",
            now + 2
        ),
        ticket(
            "jira",
            "OPS-7",
            "https://acme.atlassian.net/browse/OPS-7",
            "Login fails",
            now + 3
        ),
    ]);
    let (_, single) = call(app.get("/api/executions/linked", &admin.token)).await;
    assert_eq!(single["data"]["execution"]["linearIssues"], expected_linear);
    assert_eq!(single["data"]["execution"]["mondayItems"], expected_monday);
    assert_eq!(single["data"]["execution"]["tickets"], expected_tickets);
    let (_, list) = call(app.get("/api/executions", &admin.token)).await;
    let executions = list["data"]["executions"].as_array().unwrap();
    let linked = executions
        .iter()
        .find(|e| e["taskId"] == json!("linked"))
        .unwrap();
    let plain = executions
        .iter()
        .find(|e| e["taskId"] == json!("plain"))
        .unwrap();
    assert_eq!(linked["linearIssues"], expected_linear);
    assert_eq!(linked["mondayItems"], expected_monday);
    assert_eq!(linked["tickets"], expected_tickets);
    assert_eq!(
        (
            plain["linearIssues"].clone(),
            plain["mondayItems"].clone(),
            plain["tickets"].clone()
        ),
        (json!([]), json!([]), json!([]))
    );
}

async fn viewers_read_but_do_not_write(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Roles").await;
    let viewer = app.add_member(&admin.org_id, "viewer").await;
    let developer = app.add_member(&admin.org_id, "developer").await;
    new_execution(&app, &developer, "dev-run").await;
    let forbidden = [
        app.send_json(
            Method::POST,
            "/api/executions",
            &viewer.token,
            json!({"taskId": "v"}),
        ),
        app.send_json(
            Method::PATCH,
            "/api/executions/dev-run",
            &viewer.token,
            json!({"status": "PASSED"}),
        ),
        app.request(Method::DELETE, "/api/executions/dev-run")
            .bearer_auth(&viewer.token),
        app.request(Method::PUT, "/api/executions/dev-run/reports/a.txt")
            .bearer_auth(&viewer.token)
            .body("hello"),
    ];
    for request in forbidden {
        let (status, body) = call(request).await;
        assert_error(status, &body, 403, "Forbidden");
        assert_eq!(
            body["message"],
            json!(
                "This action requires one of the following roles: admin, developer. Your role: viewer."
            )
        );
    }
    for path in [
        "/api/executions",
        "/api/executions/dev-run",
        "/api/executions/dev-run/reports",
    ] {
        let (status, body) = call(app.get(path, &viewer.token)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    assert_eq!(
        test_runs_counter(&app, &admin.org_id, &current_period(&app)).await,
        1
    );
    assert!(files_below(&org_reports_dir(&app, &admin.org_id)).is_empty());
}

async fn another_organizations_task_ids_answer_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.signup("Owner").await;
    let intruder = app.signup("Intruder").await;
    new_execution(&app, &owner, "secret-run").await;
    assert_eq!(
        upload(
            &app,
            &owner,
            "secret-run",
            "index.html",
            b"<h1>private</h1>".to_vec()
        )
        .await
        .0,
        201
    );
    let requests = [
        app.get("/api/executions/secret-run", &intruder.token),
        app.send_json(
            Method::PATCH,
            "/api/executions/secret-run",
            &intruder.token,
            json!({"status": "PASSED"}),
        ),
        app.request(Method::DELETE, "/api/executions/secret-run")
            .bearer_auth(&intruder.token),
        app.get("/api/executions/secret-run/reports", &intruder.token),
        app.get(
            "/api/executions/secret-run/reports/index.html",
            &intruder.token,
        ),
        app.request(Method::PUT, "/api/executions/secret-run/reports/index.html")
            .bearer_auth(&intruder.token)
            .body("x"),
    ];
    for request in requests {
        let (status, body) = call(request).await;
        assert_error(status, &body, 404, "Execution not found");
    }
    let (_, list) = call(app.get("/api/executions", &intruder.token)).await;
    assert_eq!(list["data"]["total"], json!(0));
    // Untouched.
    let (_, body) = call(app.get("/api/executions/secret-run", &owner.token)).await;
    assert_eq!(body["data"]["execution"]["status"], json!("PENDING"));
    assert_eq!(storage_counter(&app, &intruder.org_id).await, 0);
    assert!(files_below(&org_reports_dir(&app, &intruder.org_id)).is_empty());
}

async fn parallel_creations_never_pass_the_monthly_limit(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Busy").await;
    set_overrides(&app, &admin.org_id, json!({"maxConcurrentRuns": null})).await;
    set_test_runs(&app, &admin.org_id, 90).await;
    let statuses = in_parallel(30, |i| {
        app.send_json(
            Method::POST,
            "/api/executions",
            &admin.token,
            json!({"taskId": format!("p{i}")}),
        )
    })
    .await;
    assert_eq!(
        (count(&statuses, 201), count(&statuses, 403)),
        (10, 20),
        "{statuses:?}"
    );
    assert_eq!(
        test_runs_counter(&app, &admin.org_id, &current_period(&app)).await,
        100
    );
    let (_, list) = call(app.get("/api/executions", &admin.token)).await;
    assert_eq!(list["data"]["total"], json!(10));

    let (status, body) = create_execution(&app, &admin, json!({"taskId": "one-more"})).await;
    assert_error(status, &body, 403, "Test run limit exceeded");
    assert_eq!(
        body["usage"],
        json!({"used": 100, "limit": 100, "percentUsed": 100})
    );
    assert_eq!(
        body["message"],
        json!(
            "Your organization has reached the monthly test run limit (100/100). Upgrade your plan to continue testing."
        )
    );
}

async fn parallel_creations_never_pass_the_concurrency_limit(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Serial").await;
    for round in 0..3 {
        let statuses = in_parallel(2, |i| {
            app.send_json(
                Method::POST,
                "/api/executions",
                &admin.token,
                json!({"taskId": format!("r{round}-{i}")}),
            )
        })
        .await;
        assert_eq!(
            (count(&statuses, 201), count(&statuses, 409)),
            (1, 1),
            "{statuses:?}"
        );
        let (_, list) = call(app.get("/api/executions?status=PENDING,RUNNING", &admin.token)).await;
        assert_eq!(list["data"]["total"], json!(1));
        let running = list["data"]["executions"][0]["taskId"]
            .as_str()
            .unwrap()
            .to_string();
        // A finished run gives its slot back; a deleted one too.
        if round % 2 == 0 {
            finish(&app, &admin, &running).await;
        } else {
            call(
                app.request(Method::DELETE, &format!("/api/executions/{running}"))
                    .bearer_auth(&admin.token),
            )
            .await;
        }
    }
    set_overrides(&app, &admin.org_id, json!({"maxConcurrentRuns": 3})).await;
    let statuses = in_parallel(10, |i| {
        app.send_json(
            Method::POST,
            "/api/executions",
            &admin.token,
            json!({"taskId": format!("wide-{i}"), "status": "RUNNING"}),
        )
    })
    .await;
    assert_eq!(
        (count(&statuses, 201), count(&statuses, 409)),
        (3, 7),
        "{statuses:?}"
    );
}

async fn runs_count_in_the_month_they_were_created(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let last_ms_of_january = orgd_core::clock::parse_rfc3339("2026-01-31T23:59:59.999Z").unwrap();
    app.clock.set(last_ms_of_january - 3_600_000);
    let admin = app.signup("Months").await;
    set_overrides(
        &app,
        &admin.org_id,
        json!({"maxTestRuns": 1, "maxConcurrentRuns": null}),
    )
    .await;

    app.clock.set(last_ms_of_january);
    new_execution(&app, &admin, "january").await;
    let (status, body) = create_execution(&app, &admin, json!({"taskId": "january-2"})).await;
    assert_error(status, &body, 403, "Test run limit exceeded");
    let (_, usage) = call(app.get("/api/organization/usage", &admin.token)).await;
    assert_eq!(
        usage["usage"]["currentPeriod"],
        json!({"startDate": "2026-01-01T00:00:00.000Z", "endDate": "2026-01-31T23:59:59.999Z"})
    );
    assert_eq!(
        usage["usage"]["testRuns"],
        json!({"used": 1, "limit": 1, "percentUsed": 100})
    );

    app.clock.set(last_ms_of_january + 1);
    let (_, usage) = call(app.get("/api/organization/usage", &admin.token)).await;
    assert_eq!(
        usage["usage"]["currentPeriod"],
        json!({"startDate": "2026-02-01T00:00:00.000Z", "endDate": "2026-02-28T23:59:59.999Z"})
    );
    assert_eq!(usage["usage"]["testRuns"]["used"], json!(0));
    let february = new_execution(&app, &admin, "february").await;
    assert_eq!(february["createdAt"], json!("2026-02-01T00:00:00.000Z"));
    let (_, usage) = call(app.get("/api/organization/usage", &admin.token)).await;
    assert_eq!(
        usage["usage"]["testRuns"],
        json!({"used": 1, "limit": 1, "percentUsed": 100})
    );

    assert_eq!(test_runs_counter(&app, &admin.org_id, "2026-01").await, 1);
    assert_eq!(test_runs_counter(&app, &admin.org_id, "2026-02").await, 1);
}

async fn executions_use_the_ingest_bucket(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.rate_limit_per_minute = 3;
        c.ingest_rate_limit_per_minute = 5;
    })
    .await;
    let admin = app.signup("Ingest").await;
    let res = app
        .get("/api/executions", &admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-ratelimit-limit"], "5");
    for _ in 0..4 {
        assert_eq!(
            call(app.get("/api/executions/none/reports", &admin.token))
                .await
                .0,
            404
        );
    }
    let (status, body) = call(app.get("/api/executions", &admin.token)).await;
    assert_error(status, &body, 429, "Too Many Requests");
    // The organization's admins still have their API.
    let (status, _) = call(app.get("/api/organization/usage", &admin.token)).await;
    assert_eq!(status, 200);
}

async fn automation_drives_executions_with_api_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Automated").await;
    let developer = app.add_member(&admin.org_id, "developer").await;
    let viewer = app.add_member(&admin.org_id, "viewer").await;
    let key_of = |session: &Session| {
        let request = app.send_json(
            Method::POST,
            "/api/auth/api-keys",
            &session.token,
            json!({"name": "CI"}),
        );
        async move {
            let (status, body) = call(request).await;
            assert_eq!(status, 201, "{body}");
            body["apiKey"].as_str().unwrap().to_string()
        }
    };
    let (ci, read_only) = (key_of(&developer).await, key_of(&viewer).await);
    let with_key =
        |method: Method, path: &str, key: &str| app.request(method, path).header("x-api-key", key);

    let (status, body) = call(
        with_key(Method::POST, "/api/executions", &ci)
            .json(&json!({"taskId": "gh-1", "trigger": "github"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = call(
        with_key(Method::PUT, "/api/executions/gh-1/reports/index.html", &ci).body("<p>ok</p>"),
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = call(
        with_key(Method::PATCH, "/api/executions/gh-1", &ci).json(&json!({"status": "PASSED"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["execution"]["reportBytes"], json!(9));

    let (status, body) = call(with_key(Method::GET, "/api/executions/gh-1", &read_only)).await;
    assert_eq!(status, 200, "{body}");
    let res = with_key(
        Method::GET,
        "/api/executions/gh-1/reports/index.html",
        &read_only,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    for request in [
        with_key(Method::POST, "/api/executions", &read_only).json(&json!({"taskId": "nope"})),
        with_key(Method::DELETE, "/api/executions/gh-1", &read_only),
        with_key(
            Method::PUT,
            "/api/executions/gh-1/reports/x.txt",
            &read_only,
        )
        .body("x"),
    ] {
        let (status, body) = call(request).await;
        assert_error(status, &body, 403, "Forbidden");
    }
    // Keys work on the executions API only.
    let (status, body) = call(with_key(Method::GET, "/api/organization/usage", &ci)).await;
    assert_error(status, &body, 401, "Authentication required");
    let (status, body) = call(with_key(Method::GET, "/api/projects", &ci)).await;
    assert_error(status, &body, 401, "Authentication required");
}

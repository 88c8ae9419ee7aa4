//! The operator surface: `/api/admin/...` behind ORGD_ADMIN_TOKEN, the `orgd org ...` CLI,
//! and `orgd usage reconcile` fixing drift made behind the service's back.

use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};

use crate::executions::{
    current_period, files_below, new_execution, org_reports_dir, set_test_runs, storage_counter,
    test_runs_counter, upload,
};
use crate::helpers::{Backend, TestApp, assert_error, call};

crate::backend_tests!(
    the_operator_api_does_not_exist_without_a_token,
    the_operator_api_refuses_wrong_tokens,
    operators_list_organizations_with_usage,
    plan_and_limit_changes_are_visible_and_audited,
    the_cli_changes_plans_and_limits,
    reconcile_reports_and_fixes_drift,
);

const TOKEN: &str = "operator-token-for-tests-0123456789abcdef";

async fn with_token(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.admin_token = Some(orgd::config::Secret(TOKEN.into()))
    })
    .await
}

fn admin_api(app: &TestApp, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.request(method, path).bearer_auth(TOKEN)
}

/// Runs the `orgd` binary against the test's database and data directory.
fn orgd(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_orgd"))
        .args(args)
        .env("DATABASE_URL", &app.test_db.url)
        .env("ORGD_DATA_DIR", &app.config.data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run orgd");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn the_operator_api_does_not_exist_without_a_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("No Operator").await;
    let path = format!("/api/admin/organizations/{}/plan", admin.org_id);
    for (method, path) in [
        (Method::GET, "/api/admin/organizations"),
        (Method::PUT, path.as_str()),
        (Method::DELETE, path.as_str()),
        (
            Method::PUT,
            &format!("/api/admin/organizations/{}/limits", admin.org_id),
        ),
    ] {
        let (status, body) = call(
            app.request(method, path)
                .bearer_auth(TOKEN)
                .json(&json!({"plan": "team"})),
        )
        .await;
        assert_error(status, &body, 404, "Not found");
    }
    let (_, org) = call(app.get("/api/organization", &admin.token)).await;
    assert_eq!(org["organization"]["plan"], json!("free"));
}

async fn the_operator_api_refuses_wrong_tokens(backend: Backend) {
    let app = with_token(backend).await;
    let admin = app.signup("Guarded").await;
    let plan = format!("/api/admin/organizations/{}/plan", admin.org_id);
    let attempts = [
        app.request(Method::GET, "/api/admin/organizations"),
        app.request(Method::GET, "/api/admin/organizations")
            .bearer_auth("operator-token-for-tests-0123456789abcdeF"),
        app.request(Method::GET, "/api/admin/organizations")
            .bearer_auth(&admin.token),
        app.request(Method::PUT, &plan)
            .bearer_auth("wrong")
            .json(&json!({"plan": "team"})),
        app.request(Method::PUT, &plan)
            .header("authorization", TOKEN)
            .json(&json!({"plan": "team"})),
    ];
    for request in attempts {
        let (status, body) = call(request).await;
        assert_error(status, &body, 401, "Authentication required");
    }
    let (_, org) = call(app.get("/api/organization", &admin.token)).await;
    assert_eq!(org["organization"]["plan"], json!("free"));
    assert!(app.audit_actions(&admin.org_id).await.is_empty());
}

async fn operators_list_organizations_with_usage(backend: Backend) {
    let app = with_token(backend).await;
    let first = app.signup("First").await;
    let second = app.signup("Second").await;
    new_execution(&app, &second, "run").await;
    assert_eq!(
        upload(&app, &second, "run", "a.txt", vec![0; 10]).await.0,
        201
    );
    set_test_runs(&app, &second.org_id, 60).await;

    let (status, body) = call(admin_api(&app, Method::GET, "/api/admin/organizations")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["total"].clone(),
            body["limit"].clone(),
            body["offset"].clone()
        ),
        (json!(2), json!(50), json!(0))
    );
    let orgs = body["organizations"].as_array().unwrap();
    assert_eq!(orgs[0]["id"], json!(first.org_id));
    let org = &orgs[1];
    assert_eq!(org["id"], json!(second.org_id));
    assert_eq!(org["slug"], json!("second"));
    assert_eq!(org["plan"], json!("free"));
    assert_eq!(org["overrides"], json!({}));
    assert_eq!(org["limits"]["maxTestRuns"], json!(100));
    assert_eq!(
        org["usage"]["testRuns"],
        json!({"used": 60, "limit": 100, "percentUsed": 60})
    );
    assert_eq!(
        org["usage"]["storage"],
        json!({"usedBytes": 10, "limitBytes": 10737418240u64})
    );
    assert_eq!(
        org["usage"]["users"],
        json!({"active": 1, "limit": 3, "pendingInvitations": 0})
    );
    assert_eq!(org["alerts"][0]["resource"], json!("testRuns"));

    let (_, body) = call(admin_api(
        &app,
        Method::GET,
        "/api/admin/organizations?limit=1&offset=1",
    ))
    .await;
    assert_eq!(body["organizations"].as_array().unwrap().len(), 1);
    assert_eq!(body["organizations"][0]["id"], json!(second.org_id));
    let (status, body) = call(admin_api(
        &app,
        Method::GET,
        "/api/admin/organizations?limit=0",
    ))
    .await;
    assert_error(status, &body, 400, "Invalid limit");
}

async fn plan_and_limit_changes_are_visible_and_audited(backend: Backend) {
    let app = with_token(backend).await;
    let admin = app.signup("Upgraded").await;
    let plan_path = format!("/api/admin/organizations/{}/plan", admin.org_id);
    let limits_path = format!("/api/admin/organizations/{}/limits", admin.org_id);

    let (status, body) = call(
        admin_api(&app, Method::PUT, &limits_path)
            .json(&json!({"maxTestRuns": 50, "maxUsers": null, "ignored": 1})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["organization"]["overrides"],
        json!({"maxTestRuns": 50, "maxUsers": null})
    );
    let (_, org) = call(app.get("/api/organization", &admin.token)).await;
    assert_eq!(org["organization"]["limits"]["maxTestRuns"], json!(50));
    assert_eq!(org["organization"]["userLimit"], Value::Null);

    // Overrides survive a plan change unless reset.
    let (status, body) =
        call(admin_api(&app, Method::PUT, &plan_path).json(&json!({"plan": "team"}))).await;
    assert_eq!(status, 200, "{body}");
    let (_, org) = call(app.get("/api/organization", &admin.token)).await;
    assert_eq!(org["organization"]["plan"], json!("team"));
    assert_eq!(org["organization"]["limits"]["maxTestRuns"], json!(50));
    assert_eq!(org["organization"]["limits"]["maxProjects"], json!(10));

    let (_, _) =
        call(admin_api(&app, Method::PUT, &limits_path).json(&json!({"maxTestRuns": "default"})))
            .await;
    let (_, org) = call(app.get("/api/organization", &admin.token)).await;
    assert_eq!(org["organization"]["limits"]["maxTestRuns"], json!(1000));

    let (status, _) = call(
        admin_api(&app, Method::PUT, &plan_path)
            .json(&json!({"plan": "enterprise", "resetOverrides": true})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, org) = call(app.get("/api/organization", &admin.token)).await;
    assert_eq!(org["organization"]["plan"], json!("enterprise"));
    assert_eq!(org["organization"]["userLimit"], Value::Null);
    assert_eq!(
        org["organization"]["limits"]["maxConcurrentRuns"],
        json!(20)
    );

    // By slug too; unknown organizations and bad bodies.
    let (status, _) = call(
        admin_api(&app, Method::PUT, "/api/admin/organizations/upgraded/plan")
            .json(&json!({"plan": "team"})),
    )
    .await;
    assert_eq!(status, 200);
    for (path, body, status, error) in [
        (
            "/api/admin/organizations/507f191e810c19729de860ea/plan",
            json!({"plan": "team"}),
            404,
            "Organization not found",
        ),
        (
            plan_path.as_str(),
            json!({"plan": "platinum"}),
            400,
            "Invalid plan",
        ),
        (plan_path.as_str(), json!({}), 400, "Invalid plan"),
        (
            plan_path.as_str(),
            json!({"plan": "team", "resetOverrides": "yes"}),
            400,
            "Invalid resetOverrides",
        ),
        (
            limits_path.as_str(),
            json!({"maxUsers": -1}),
            400,
            "Invalid maxUsers",
        ),
        (
            limits_path.as_str(),
            json!({"maxStorageBytes": "1GB"}),
            400,
            "Invalid maxStorageBytes",
        ),
        (
            limits_path.as_str(),
            json!({"maxBananas": 1}),
            400,
            "Missing fields",
        ),
    ] {
        let (s, response) = call(admin_api(&app, Method::PUT, path).json(&body)).await;
        assert_error(s, &response, status, error);
    }

    let rows = sqlx::query(
        "SELECT action, user_id, actor, details, ip FROM audit_logs WHERE organization_id = $1 ORDER BY created_at, id",
    )
    .bind(&admin.org_id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    use sqlx::Row;
    let entries: Vec<(String, Option<String>, String, Value)> = rows
        .iter()
        .map(|r| {
            let details: String = r.get("details");
            (
                r.get("action"),
                r.get("user_id"),
                r.get("actor"),
                serde_json::from_str(&details).unwrap(),
            )
        })
        .collect();
    let actions: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        actions,
        [
            "org.limit_changed",
            "org.plan_changed",
            "org.limit_changed",
            "org.plan_changed",
            "org.plan_changed"
        ]
    );
    assert!(
        entries
            .iter()
            .all(|(_, user, actor, _)| user.is_none() && actor == "operator")
    );
    assert_eq!(
        entries[0].3["limits"],
        json!({"maxTestRuns": {"from": 100, "to": 50}, "maxUsers": {"from": 3, "to": null}})
    );
    assert_eq!(entries[1].3["from"], json!("free"));
    assert_eq!(entries[1].3["to"], json!("team"));
    assert_eq!(entries[3].3["resetOverrides"], json!(true));
    let ip: Option<String> = rows[0].get("ip");
    assert_eq!(ip.as_deref(), Some("127.0.0.1"));
}

async fn the_cli_changes_plans_and_limits(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Cli Org").await;

    let (ok, out, err) = orgd(&app, &["org", "set-plan", "cli-org", "team"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        format!(
            "cli-org ({}): plan free -> team, overrides {{}}\n",
            admin.org_id
        )
    );
    let (ok, out, err) = orgd(
        &app,
        &["org", "set-limit", &admin.org_id, "maxUsers", "unlimited"],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out,
        format!("cli-org ({}): maxUsers 20 -> unlimited\n", admin.org_id)
    );
    let (ok, _, err) = orgd(
        &app,
        &["org", "set-limit", "cli-org", "maxStorageBytes", "5000"],
    );
    assert!(ok, "{err}");
    let (_, org) = call(app.get("/api/organization", &admin.token)).await;
    assert_eq!(org["organization"]["plan"], json!("team"));
    assert_eq!(org["organization"]["userLimit"], Value::Null);
    assert_eq!(
        org["organization"]["limits"]["maxStorageBytes"],
        json!(5000)
    );

    let (ok, out, _) = orgd(&app, &["org", "list"]);
    assert!(ok);
    let line = out
        .lines()
        .find(|l| l.contains(&admin.org_id))
        .expect("listed");
    assert!(
        line.contains("cli-org") && line.contains("team") && line.contains("0/5000"),
        "{line}"
    );
    assert!(
        line.contains(r#"{"maxStorageBytes":5000,"maxUsers":null}"#),
        "{line}"
    );

    let (ok, _, err) = orgd(
        &app,
        &["org", "set-limit", "cli-org", "maxStorageBytes", "default"],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = orgd(
        &app,
        &["org", "set-plan", "cli-org", "free", "--reset-overrides"],
    );
    assert!(ok, "{err}");
    let (_, org) = call(app.get("/api/organization", &admin.token)).await;
    assert_eq!(org["organization"]["plan"], json!("free"));
    assert_eq!(org["organization"]["userLimit"], json!(3));

    for args in [
        ["org", "set-plan", "no-such-org", "team"].as_slice(),
        &["org", "set-plan", "cli-org", "platinum"],
        &["org", "set-limit", "cli-org", "maxBananas", "1"],
        &["org", "set-limit", "cli-org", "maxUsers", "-5"],
    ] {
        let (ok, _, err) = orgd(&app, args);
        assert!(!ok && err.starts_with("orgd: "), "{args:?}: {err}");
    }
    let actions = app.audit_actions(&admin.org_id).await;
    assert_eq!(
        actions,
        [
            "org.plan_changed",
            "org.limit_changed",
            "org.limit_changed",
            "org.limit_changed",
            "org.plan_changed"
        ]
    );
    let operator_rows: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_logs WHERE organization_id = $1 AND user_id IS NULL AND actor = 'operator' AND ip IS NULL",
    )
    .bind(&admin.org_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(operator_rows, 5);
}

async fn reconcile_reports_and_fixes_drift(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Drifting").await;
    let bystander = app.signup("Bystander").await;
    new_execution(&app, &admin, "run").await;
    upload(&app, &admin, "run", "keep.txt", vec![1; 100]).await;
    upload(&app, &admin, "run", "gone.txt", vec![1; 40]).await;
    let (ok, out, err) = orgd(&app, &["usage", "reconcile", "drifting"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        format!(
            "drifting ({}): no drift\n1 organization(s) checked, 0 fixed\n",
            admin.org_id
        )
    );

    // Behind the service's back: a file appears, one disappears, one changes size, the run
    // counter is off.
    let dir = org_reports_dir(&app, &admin.org_id);
    std::fs::create_dir_all(dir.join("run/extra")).unwrap();
    std::fs::write(dir.join("run/extra/new.txt"), vec![2; 25]).unwrap();
    std::fs::remove_file(dir.join("run/gone.txt")).unwrap();
    std::fs::write(dir.join("run/keep.txt"), vec![1; 60]).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.join("run/link")).unwrap();
    set_test_runs(&app, &admin.org_id, 7).await;
    sqlx::query(
        "INSERT INTO execution_counts (organization_id, status, live) VALUES ($1, 'FAILED', 3)
         ON CONFLICT (organization_id, status) DO UPDATE SET live = 3",
    )
    .bind(&admin.org_id)
    .execute(&app.db)
    .await
    .unwrap();
    let period = current_period(&app);
    let (_, before) = call(app.get("/api/executions", &admin.token)).await;
    assert_eq!(
        before["data"]["total"],
        json!(4),
        "the list reads the counters"
    );

    let (ok, out, err) = orgd(&app, &["usage", "reconcile", &admin.org_id]);
    assert!(ok, "{err}");
    let who = format!("drifting ({})", admin.org_id);
    assert_eq!(
        out,
        format!(
            "{who}: test runs {period}: 7 -> 1\n\
             {who}: live FAILED runs: 3 -> 0\n\
             {who}: storage 140 -> 85 bytes (1 file(s) added, 1 removed, 1 resized)\n\
             {who}: skipped 1 entry(ies) that are not report files: run/link\n\
             1 organization(s) checked, 1 fixed\n"
        )
    );
    assert_eq!(test_runs_counter(&app, &admin.org_id, &period).await, 1);
    assert_eq!(storage_counter(&app, &admin.org_id).await, 85);
    let (_, usage) = call(app.get("/api/organization/usage", &admin.token)).await;
    assert_eq!(usage["usage"]["storage"]["usedBytes"], json!(85));
    assert_eq!(usage["usage"]["testRuns"]["used"], json!(1));
    let (_, list) = call(app.get("/api/executions/run/reports", &admin.token)).await;
    let paths: Vec<(&str, i64)> = list["data"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["size"].as_i64().unwrap()))
        .collect();
    assert_eq!(paths, [("extra/new.txt", 25), ("keep.txt", 60)]);
    let (_, execution) = call(app.get("/api/executions/run", &admin.token)).await;
    assert_eq!(execution["data"]["execution"]["reportBytes"], json!(85));
    let (_, after) = call(app.get("/api/executions", &admin.token)).await;
    assert_eq!(after["data"]["total"], json!(1));

    // Fixed for good; every organization when none is named.
    let (ok, out, err) = orgd(&app, &["usage", "reconcile"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("bystander ({}): no drift", bystander.org_id)),
        "{out}"
    );
    assert!(out.contains(&format!("{who}: no drift")), "{out}");
    assert!(
        out.contains("run/link"),
        "what is not a report file stays reported: {out}"
    );
    assert!(
        out.ends_with("2 organization(s) checked, 0 fixed\n"),
        "{out}"
    );
    assert_eq!(files_below(&dir).len(), 2);

    let (ok, _, err) = orgd(&app, &["usage", "reconcile", "nobody"]);
    assert!(!ok && err.contains("no organization"), "{err}");
}

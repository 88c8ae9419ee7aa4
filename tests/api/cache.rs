//! Exact caches across instances on PostgreSQL (DESIGN.md, "Growing past one machine"): a
//! change made through one instance is refused by another within 100 ms of its answer, and
//! while the listener is lost every read goes to the database (`/health` says `bypassed`).
//! PostgreSQL only: SQLite is one instance, whose caches see every commit in the WAL index.

use std::time::{Duration, Instant};

use orgd_core::clock::Clock;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, Session, TestApp, call};

/// The longest a change may take to reach another instance's caches (API.md, Conventions).
const ACROSS_INSTANCES: Duration = Duration::from_millis(100);

async fn two_instances() -> Option<(TestApp, TestApp)> {
    let backend = Backend::postgres()?;
    let a = TestApp::spawn_with(backend, |c| {
        c.admin_token = Some(orgd::config::Secret(
            "operator-token-for-cache-tests".into(),
        ));
        c.rate_limit_per_minute = 100_000;
    })
    .await;
    let b = a.another_instance().await;
    for app in [&a, &b] {
        wait_for_cache(app, "ok").await;
    }
    Some((a, b))
}

async fn health_cache(app: &TestApp) -> Value {
    let (_, body) = call(app.request(Method::GET, "/health")).await;
    body["checks"]["cache"].clone()
}

/// Waits (at most 10 s: heartbeats come every second; a busy machine may delay them) until
/// `/health` reports `cache: state`.
async fn wait_for_cache(app: &TestApp, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while health_cache(app).await != json!(state) {
        assert!(Instant::now() < deadline, "cache never became {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks `app` with `session` until the answer's status is `expected`, returning how long it
/// took; fails past one second.
async fn until_status(app: &TestApp, session: &Session, path: &str, expected: u16) -> Duration {
    let started = Instant::now();
    loop {
        let (status, body) = call(app.get(path, &session.token)).await;
        if status == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{path} still answers {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn set_role(app: &TestApp, admin: &Session, user_id: &str, role: &str) {
    let (status, body) = call(app.send_json(
        Method::PATCH,
        &format!("/api/users/{user_id}/role"),
        &admin.token,
        json!({ "role": role }),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_through_one_instance_are_refused_by_the_other_within_100_ms() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let admin = a.signup("Two Instances").await;
    sqlx::query("UPDATE organizations SET plan = 'enterprise' WHERE id = $1")
        .bind(&admin.org_id)
        .execute(&a.db)
        .await
        .unwrap();
    let other_admin = a.add_member(&admin.org_id, "admin").await;
    let leaving = a.add_member(&admin.org_id, "developer").await;

    // Demotion: B knew (and cached) an admin; it refuses them once A demoted them.
    let audit = "/api/organization/audit-logs";
    until_status(&b, &other_admin, audit, 200).await;
    set_role(&a, &admin, &other_admin.user_id, "viewer").await;
    let took = until_status(&b, &other_admin, audit, 403).await;
    assert!(took < ACROSS_INSTANCES, "demotion reached B after {took:?}");
    // The instance that made the change sees it on the very next request.
    let (status, _) = call(a.get(audit, &other_admin.token)).await;
    assert_eq!(status, 403);

    // Removal.
    until_status(&b, &leaving, "/api/organization", 200).await;
    let (status, body) = call(
        a.request(Method::DELETE, &format!("/api/users/{}", leaving.user_id))
            .bearer_auth(&admin.token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let took = until_status(&b, &leaving, "/api/organization", 401).await;
    assert!(took < ACROSS_INSTANCES, "removal reached B after {took:?}");

    // Logout (revocation of one token).
    until_status(&b, &admin, "/api/organization", 200).await;
    let (second_token, _) = a.state.jwt.issue(&admin.user_id, a.clock.now_ms()).unwrap();
    let second = Session {
        token: second_token,
        ..admin.clone()
    };
    until_status(&b, &second, "/api/organization", 200).await;
    let (status, _) = call(
        a.request(Method::POST, "/api/auth/logout")
            .bearer_auth(&second.token),
    )
    .await;
    assert_eq!(status, 200);
    let took = until_status(&b, &second, "/api/organization", 401).await;
    assert!(took < ACROSS_INSTANCES, "logout reached B after {took:?}");
    let (status, _) = call(b.get("/api/organization", &admin.token)).await;
    assert_eq!(status, 200, "only the revoked token is refused");

    // A plan change through the operator API: B shows the new plan and enforces its limits.
    let (_, org) = call(b.get("/api/organization", &admin.token)).await;
    assert_eq!(org["organization"]["plan"], json!("enterprise"));
    let (status, body) = call(
        a.request(
            Method::PUT,
            &format!("/api/admin/organizations/{}/plan", admin.org_id),
        )
        .bearer_auth("operator-token-for-cache-tests")
        .json(&json!({"plan": "free"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    loop {
        let (_, org) = call(b.get("/api/organization", &admin.token)).await;
        if org["organization"]["plan"] == json!("free") {
            assert_eq!(org["organization"]["userLimit"], json!(3), "{org}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "{org}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = started.elapsed();
    assert!(
        took < ACROSS_INSTANCES,
        "plan change reached B after {took:?}"
    );
    // The same through the CLI (a process of its own, with no cache and no listener).
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_orgd"))
        .args(["org", "set-plan", &admin.org_id, "team"])
        .env("DATABASE_URL", &a.test_db.url)
        .env("ORGD_DATA_DIR", &a.config.data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run orgd");
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let started = Instant::now();
    loop {
        let (_, org) = call(b.get("/api/organization", &admin.token)).await;
        if org["organization"]["plan"] == json!("team") {
            break;
        }
        assert!(started.elapsed() < ACROSS_INSTANCES, "{org}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Settings changed through A: B shows them.
    let (status, _) = call(a.send_json(
        Method::PATCH,
        "/api/organization",
        &admin.token,
        json!({"name": "Renamed Org"}),
    ))
    .await;
    assert_eq!(status, 200);
    let started = Instant::now();
    loop {
        let (_, org) = call(b.get("/api/organization", &admin.token)).await;
        if org["organization"]["name"] == json!("Renamed Org") {
            break;
        }
        assert!(started.elapsed() < ACROSS_INSTANCES, "{org}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Ends every cache listener connection of this test's schema.
async fn kill_listeners(app: &TestApp) -> i64 {
    let channel = app
        .state
        .db
        .cache_channel()
        .expect("PostgreSQL")
        .to_string();
    sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = $1) AS killed",
    )
    .bind(channel)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listener_bypasses_the_cache_until_it_is_back() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let admin = a.signup("Lost Listener").await;
    let member = a.add_member(&admin.org_id, "admin").await;
    let audit = "/api/organization/audit-logs";
    until_status(&b, &member, audit, 200).await;

    assert_eq!(kill_listeners(&a).await, 2, "one listener per instance");
    wait_for_cache(&b, "bypassed").await;
    let (_, health) = call(b.request(Method::GET, "/health")).await;
    assert_eq!(health["status"], json!("degraded"), "{health}");

    // Still exact while bypassed (whether or not the listener is back yet, the demotion is
    // seen by B at once).
    set_role(&a, &admin, &member.user_id, "developer").await;
    let took = until_status(&b, &member, audit, 403).await;
    assert!(took < ACROSS_INSTANCES, "{took:?}");

    // Back: cached again, and still exact.
    wait_for_cache(&b, "ok").await;
    wait_for_cache(&a, "ok").await;
    set_role(&a, &admin, &member.user_id, "admin").await;
    let took = until_status(&b, &member, audit, 200).await;
    assert!(took < ACROSS_INSTANCES, "{took:?}");
    // Proof that B serves from its cache again: a change made behind the service's back
    // (no notification) is not seen until something announces it. (First let the role
    // change's own notification arrive, which evicts what B read before it.)
    tokio::time::sleep(ACROSS_INSTANCES).await;
    let (status, _) = call(b.get(audit, &member.token)).await;
    assert_eq!(status, 200);
    sqlx::query("UPDATE users SET role = 'viewer' WHERE id = $1")
        .bind(&member.user_id)
        .execute(&a.db)
        .await
        .unwrap();
    let (status, _) = call(b.get(audit, &member.token)).await;
    assert_eq!(status, 200, "served from the cache");
    set_role(&a, &admin, &member.user_id, "developer").await;
    let took = until_status(&b, &member, audit, 403).await;
    assert!(took < ACROSS_INSTANCES, "{took:?}");
}

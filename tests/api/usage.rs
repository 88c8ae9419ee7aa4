//! `GET /api/organization/usage` and `/usage/alerts`: the seed's shape, the alert levels at
//! every boundary for every resource, unlimited never alerting, and a free organization
//! driven through HTTP to each level and each limit.

use orgd_core::clock::Clock;
use reqwest::Method;
use serde_json::{Value, json};

use crate::executions::{
    create_execution, finish, new_execution, set_overrides, set_test_runs, storage_counter, upload,
};
use crate::helpers::{Backend, Session, TestApp, assert_error, call};

crate::backend_tests!(
    usage_matches_the_seed_shape,
    alerts_at_every_boundary_for_every_resource,
    unlimited_resources_never_alert,
    alerts_come_in_resource_order,
    pending_invitations_are_shown_until_they_expire,
    a_free_organization_driven_through_http,
);

const ADMIN_TOKEN: &str = "operator-token-for-tests-0123456789abcdef";

async fn alerts(app: &TestApp, session: &Session) -> Value {
    let (status, body) = call(app.get("/api/organization/usage/alerts", &session.token)).await;
    assert_eq!(status, 200, "{body}");
    let (_, usage) = call(app.get("/api/organization/usage", &session.token)).await;
    assert_eq!(
        usage["alerts"], body["alerts"],
        "both endpoints carry the same alerts"
    );
    body["alerts"].clone()
}

/// Adds members straight into the store until the organization has `active` of them
/// (password hashing skipped: these members never log in).
async fn set_active_members(app: &TestApp, org_id: &str, active: i64) {
    let current: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM users WHERE organization_id = $1 AND status = 'active'",
    )
    .bind(org_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    for _ in current..active {
        let id = orgd_core::ids::new_id(0);
        sqlx::query(
            "INSERT INTO users (id, organization_id, email, name, password_hash, role, status, last_login_at, created_at, updated_at)
             VALUES ($1, $2, $3, 'Member', 'not-a-hash', 'developer', 'active', NULL, 0, 0)",
        )
        .bind(&id)
        .bind(org_id)
        .bind(format!("{id}@example.com"))
        .execute(&app.db)
        .await
        .unwrap();
    }
}

async fn set_storage_used(app: &TestApp, org_id: &str, bytes: i64) {
    sqlx::query("UPDATE organizations SET storage_used_bytes = $1 WHERE id = $2")
        .bind(bytes)
        .bind(org_id)
        .execute(&app.db)
        .await
        .unwrap();
}

async fn usage_matches_the_seed_shape(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.clock
        .set(orgd_core::clock::parse_rfc3339("2026-02-10T08:00:00.000Z").unwrap());
    let admin = app.signup("Acme Corp").await;
    app.add_member(&admin.org_id, "developer").await;
    set_overrides(&app, &admin.org_id, json!({"maxConcurrentRuns": null})).await;
    for i in 0..45 {
        new_execution(&app, &admin, &format!("run-{i}")).await;
    }
    set_storage_used(&app, &admin.org_id, 524_288_000).await;
    let viewer = app.add_member(&admin.org_id, "viewer").await;
    let (status, body) = call(app.get("/api/organization/usage", &viewer.token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "success": true,
            "usage": {
                "currentPeriod": {"startDate": "2026-02-01T00:00:00.000Z", "endDate": "2026-02-28T23:59:59.999Z"},
                "testRuns": {"used": 45, "limit": 100, "percentUsed": 45},
                "users": {"active": 3, "limit": 3, "pendingInvitations": 0},
                "storage": {"usedBytes": 524288000, "limitBytes": 10737418240u64},
                "aiAnalyses": {"used": 0}
            },
            "alerts": [{"type": "critical", "resource": "users", "message": "You've reached your user limit", "percentUsed": 100}]
        })
    );
    let (_, org) = call(app.get("/api/organization", &viewer.token)).await;
    assert_eq!(
        org["organization"]["limits"]["currentStorageUsedBytes"],
        body["usage"]["storage"]["usedBytes"]
    );

    let (status, body) = call(app.request(Method::GET, "/api/organization/usage")).await;
    assert_error(status, &body, 401, "Authentication required");
    let (status, body) = call(
        app.request(Method::GET, "/api/organization/usage/alerts")
            .header("x-api-key", "orgd_x"),
    )
    .await;
    assert_error(status, &body, 401, "Authentication required");
}

async fn alerts_at_every_boundary_for_every_resource(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Boundaries").await;
    set_overrides(
        &app,
        &admin.org_id,
        json!({"maxTestRuns": 100, "maxUsers": 100, "maxStorageBytes": 100}),
    )
    .await;
    let cases: [(i64, Option<(&str, &str)>); 7] = [
        (49, None),
        (50, Some(("info", "You've used 50% of your"))),
        (79, Some(("info", "You've used 79% of your"))),
        (80, Some(("warning", "You've used 80% of your"))),
        (99, Some(("warning", "You've used 99% of your"))),
        (100, Some(("critical", "You've reached your"))),
        (101, Some(("critical", "You've reached your"))),
    ];
    for (resource, noun, reached) in [
        ("testRuns", "monthly test runs", "monthly test run limit"),
        ("users", "user seats", "user limit"),
        ("storage", "storage", "storage limit"),
    ] {
        for (percent, expected) in cases {
            match resource {
                "testRuns" => set_test_runs(&app, &admin.org_id, percent).await,
                "users" => set_active_members(&app, &admin.org_id, percent).await,
                _ => set_storage_used(&app, &admin.org_id, percent).await,
            }
            let found = alerts(&app, &admin).await;
            let mine: Vec<&Value> = found
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["resource"] == json!(resource))
                .collect();
            match expected {
                None => assert!(mine.is_empty(), "{resource} at {percent}%: {found}"),
                Some((kind, prefix)) => {
                    let message = if kind == "critical" {
                        format!("{prefix} {reached}")
                    } else {
                        format!("{prefix} {noun}")
                    };
                    assert_eq!(
                        mine,
                        [
                            &json!({"type": kind, "resource": resource, "message": message, "percentUsed": percent})
                        ],
                        "{resource} at {percent}%"
                    );
                }
            }
        }
        // Back below every threshold before the next resource.
        match resource {
            "testRuns" => set_test_runs(&app, &admin.org_id, 0).await,
            "users" => {
                sqlx::query(
                    "UPDATE users SET status = 'suspended' WHERE organization_id = $1 AND id <> $2",
                )
                .bind(&admin.org_id)
                .bind(&admin.user_id)
                .execute(&app.db)
                .await
                .unwrap();
            }
            _ => {}
        }
    }
    let (_, usage) = call(app.get("/api/organization/usage", &admin.token)).await;
    assert_eq!(
        usage["usage"]["storage"],
        json!({"usedBytes": 101, "limitBytes": 100})
    );
    assert_eq!(
        usage["usage"]["users"]["active"],
        json!(1),
        "suspended members are not active"
    );
}

async fn unlimited_resources_never_alert(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Unlimited").await;
    set_overrides(
        &app,
        &admin.org_id,
        json!({"maxTestRuns": null, "maxUsers": null, "maxStorageBytes": null}),
    )
    .await;
    set_test_runs(&app, &admin.org_id, 1_000_000).await;
    set_active_members(&app, &admin.org_id, 40).await;
    set_storage_used(&app, &admin.org_id, 1 << 50).await;
    assert_eq!(alerts(&app, &admin).await, json!([]));
    let (_, usage) = call(app.get("/api/organization/usage", &admin.token)).await;
    assert_eq!(
        usage["usage"]["testRuns"],
        json!({"used": 1_000_000, "limit": null, "percentUsed": null})
    );
    assert_eq!(usage["usage"]["users"]["limit"], Value::Null);
    assert_eq!(
        usage["usage"]["storage"],
        json!({"usedBytes": 1u64 << 50, "limitBytes": null})
    );
    // Nothing is refused against an unlimited limit either.
    let (status, body) = create_execution(&app, &admin, json!({"taskId": "more"})).await;
    assert_eq!(status, 201, "{body}");
}

async fn alerts_come_in_resource_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Ordered").await;
    set_overrides(&app, &admin.org_id, json!({"maxStorageBytes": 1000})).await;
    set_storage_used(&app, &admin.org_id, 2000).await;
    set_active_members(&app, &admin.org_id, 2).await;
    set_test_runs(&app, &admin.org_id, 85).await;
    let found = alerts(&app, &admin).await;
    assert_eq!(
        found,
        json!([
            {"type": "warning", "resource": "testRuns", "message": "You've used 85% of your monthly test runs", "percentUsed": 85},
            {"type": "info", "resource": "users", "message": "You've used 66% of your user seats", "percentUsed": 66},
            {"type": "critical", "resource": "storage", "message": "You've reached your storage limit", "percentUsed": 200},
        ])
    );
}

async fn pending_invitations_are_shown_until_they_expire(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Inviting").await;
    let now = app.clock.now_ms();
    for (email, status, expires_at) in [
        ("a@example.com", "pending", now + 60_000),
        ("b@example.com", "pending", now + 120_000),
        ("c@example.com", "pending", now - 1),
        ("d@example.com", "accepted", now + 60_000),
    ] {
        sqlx::query(
            "INSERT INTO invitations (id, organization_id, email, role, token_hash, status, invited_by, expires_at, created_at, accepted_at)
             VALUES ($1, $2, $3, 'developer', $4, $5, $6, $7, $8, NULL)",
        )
        .bind(orgd_core::ids::new_id(now))
        .bind(&admin.org_id)
        .bind(email)
        .bind(orgd_core::ids::random_hex(32))
        .bind(status)
        .bind(&admin.user_id)
        .bind(expires_at)
        .bind(now)
        .execute(&app.db)
        .await
        .unwrap();
    }
    let (_, usage) = call(app.get("/api/organization/usage", &admin.token)).await;
    assert_eq!(
        usage["usage"]["users"],
        json!({"active": 1, "limit": 3, "pendingInvitations": 2})
    );
    app.clock.advance(90_000);
    let (_, usage) = call(app.get("/api/organization/usage", &admin.token)).await;
    assert_eq!(usage["usage"]["users"]["pendingInvitations"], json!(1));
    // The users alert counts active members only.
    assert_eq!(usage["alerts"], json!([]));
}

/// A free organization, its limits lowered by the operator API, taken through every alert
/// level and every limit with nothing but HTTP.
async fn a_free_organization_driven_through_http(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.admin_token = Some(orgd::config::Secret(ADMIN_TOKEN.into()))
    })
    .await;
    let admin = app.signup("Free Org").await;
    let (status, body) = call(
        app.request(
            Method::PUT,
            &format!("/api/admin/organizations/{}/limits", admin.org_id),
        )
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"maxTestRuns": 10, "maxStorageBytes": 1000})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let level = |alerts: &Value, resource: &str| {
        alerts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["resource"] == json!(resource))
            .map(|a| {
                (
                    a["type"].as_str().unwrap().to_string(),
                    a["percentUsed"].as_i64().unwrap(),
                )
            })
    };

    // Test runs, one at a time (free: one concurrent run).
    for run in 1..=10i64 {
        new_execution(&app, &admin, &format!("run-{run}")).await;
        if run < 10 {
            let (status, body) =
                create_execution(&app, &admin, json!({"taskId": format!("extra-{run}")})).await;
            assert_error(status, &body, 409, "Concurrent run limit reached");
        }
        finish(&app, &admin, &format!("run-{run}")).await;
        let want = match run {
            5..=7 => Some(("info".to_string(), run * 10)),
            8 | 9 => Some(("warning".to_string(), run * 10)),
            10 => Some(("critical".to_string(), 100)),
            _ => None,
        };
        assert_eq!(
            level(&alerts(&app, &admin).await, "testRuns"),
            want,
            "after {run} runs"
        );
    }
    let (status, body) = create_execution(&app, &admin, json!({"taskId": "run-11"})).await;
    assert_error(status, &body, 403, "Test run limit exceeded");
    assert_eq!(
        body["usage"],
        json!({"used": 10, "limit": 10, "percentUsed": 100})
    );

    // Users: 3 seats on the free plan.
    let member = app.add_member(&admin.org_id, "developer").await;
    assert_eq!(
        level(&alerts(&app, &admin).await, "users"),
        Some(("info".into(), 66))
    );
    app.add_member(&admin.org_id, "viewer").await;
    assert_eq!(
        level(&alerts(&app, &admin).await, "users"),
        Some(("critical".into(), 100))
    );

    // Storage: 1000 bytes.
    for (path, bytes, want) in [
        ("a.bin", 499, None),
        ("b.bin", 1, Some(("info", 50))),
        ("c.bin", 300, Some(("warning", 80))),
        ("d.bin", 199, Some(("warning", 99))),
        ("e.bin", 1, Some(("critical", 100))),
    ] {
        let (status, body) = upload(&app, &member, "run-10", path, vec![0; bytes]).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            level(&alerts(&app, &admin).await, "storage"),
            want.map(|(k, p)| (k.to_string(), p))
        );
    }
    let (status, body) = upload(&app, &member, "run-10", "f.bin", vec![0; 1]).await;
    assert_error(status, &body, 403, "Storage limit exceeded");
    assert_eq!(storage_counter(&app, &admin.org_id).await, 1000);

    // Projects: one.
    let (status, _) = call(app.send_json(
        Method::POST,
        "/api/projects",
        &admin.token,
        json!({"name": "One"}),
    ))
    .await;
    assert_eq!(status, 201);
    let (status, body) = call(app.send_json(
        Method::POST,
        "/api/projects",
        &admin.token,
        json!({"name": "Two"}),
    ))
    .await;
    assert_error(status, &body, 403, "Project limit reached");

    let (_, usage) = call(app.get("/api/organization/usage", &admin.token)).await;
    assert_eq!(
        usage["usage"],
        json!({
            "currentPeriod": usage["usage"]["currentPeriod"],
            "testRuns": {"used": 10, "limit": 10, "percentUsed": 100},
            "users": {"active": 3, "limit": 3, "pendingInvitations": 0},
            "storage": {"usedBytes": 1000, "limitBytes": 1000},
            "aiAnalyses": {"used": 0}
        })
    );
    assert_eq!(usage["alerts"].as_array().unwrap().len(), 3);
}

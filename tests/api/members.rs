//! `/api/users*`: listing, reading, role changes and removal; nobody changes their own role or
//! removes themselves; an organization always keeps an admin, also under concurrent requests.

use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use sqlx::{Column, Row};

use crate::helpers::{Backend, Session, TestApp, assert_error, call};

crate::backend_tests!(
    members_list_and_show,
    members_list_paginates,
    role_change_rules_and_audit,
    demoted_admin_loses_rights_on_next_request,
    removed_user_loses_access_and_keys,
    concurrent_mutual_demotions_keep_an_admin,
    concurrent_mutual_removals_keep_an_admin,
    cross_organization_ids_answer_404_and_change_nothing,
    bad_ids_and_bodies,
);

/// A test app whose API budget does not get in the way of many requests.
pub async fn roomy_app(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| c.rate_limit_per_minute = 100_000).await
}

/// Sends all requests at once and returns their outcomes in order.
pub async fn in_parallel(requests: Vec<RequestBuilder>) -> Vec<(u16, Value)> {
    let handles: Vec<_> = requests
        .into_iter()
        .map(|r| tokio::spawn(call(r)))
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("request task"));
    }
    out
}

pub async fn count(app: &TestApp, sql: &str, bind: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(bind)
        .fetch_one(&app.db)
        .await
        .expect("count")
}

pub async fn admins(app: &TestApp, org_id: &str) -> i64 {
    count(
        app,
        "SELECT COUNT(*) FROM users WHERE organization_id = $1 AND role = 'admin'",
        org_id,
    )
    .await
}

/// Every value of every row of `table`, as text: what someone reading the database would see.
pub async fn stored_text(app: &TestApp, table: &str) -> String {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}")))
        .fetch_all(&app.db)
        .await
        .expect("dump table");
    let mut text = String::new();
    for row in rows {
        for (i, column) in row.columns().iter().enumerate() {
            let value = match row.try_get::<Option<String>, _>(i) {
                Ok(v) => v.unwrap_or_default(),
                Err(_) => row
                    .try_get::<Option<i64>, _>(i)
                    .ok()
                    .flatten()
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
            };
            text.push_str(&format!("{}={value}\n", column.name()));
        }
    }
    text
}

fn role_path(user_id: &str) -> String {
    format!("/api/users/{user_id}/role")
}

async fn set_role(app: &TestApp, actor: &Session, target_id: &str, role: &str) -> (u16, Value) {
    call(app.send_json(
        Method::PATCH,
        &role_path(target_id),
        &actor.token,
        json!({"role": role}),
    ))
    .await
}

async fn members_list_and_show(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Members Inc").await;
    app.clock.advance(1_000);
    let dev = app.add_member(&admin.org_id, "developer").await;
    let other = app.signup("Elsewhere").await;

    let (status, body) = call(app.get("/api/users", &dev.token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], json!(2));
    assert_eq!(body["limit"], json!(100));
    assert_eq!(body["offset"], json!(0));
    let users = body["users"].as_array().unwrap();
    assert_eq!(users.len(), 2, "only this organization's members: {body}");
    // Newest first.
    assert_eq!(users[0]["id"], json!(dev.user_id));
    assert_eq!(users[1]["id"], json!(admin.user_id));
    let mut keys: Vec<&str> = users[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "createdAt",
            "email",
            "id",
            "lastLoginAt",
            "name",
            "role",
            "status"
        ]
    );
    assert_eq!(users[0]["role"], json!("developer"));
    assert_eq!(users[0]["status"], json!("active"));
    assert_eq!(users[0]["lastLoginAt"], Value::Null);
    assert_eq!(users[1]["email"], json!(admin.email));
    assert!(!body.to_string().contains(&other.email));
    assert!(!body.to_string().contains("password"));

    let (status, body) = call(app.get(&format!("/api/users/{}", admin.user_id), &dev.token)).await;
    assert_eq!(status, 200, "{body}");
    let user = &body["user"];
    assert_eq!(user["id"], json!(admin.user_id));
    assert_eq!(user["name"], json!("Ada Admin"));
    assert_eq!(user["role"], json!("admin"));
    assert!(
        user["createdAt"].is_string() && user["updatedAt"].is_string(),
        "{body}"
    );

    // After a login, lastLoginAt is set.
    let (status, _) = app.login(&admin.email, crate::helpers::PASSWORD).await;
    assert_eq!(status, 200);
    let (_, body) = call(app.get(&format!("/api/users/{}", admin.user_id), &dev.token)).await;
    assert!(body["user"]["lastLoginAt"].is_string(), "{body}");

    let (status, body) = call(app.get("/api/users/507f191e810c19729de860ea", &dev.token)).await;
    assert_error(status, &body, 404, "User not found");
}

async fn members_list_paginates(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Paged").await;
    // Enterprise: no seat limit in the way of a bigger team.
    sqlx::query("UPDATE organizations SET plan = 'enterprise' WHERE id = $1")
        .bind(&admin.org_id)
        .execute(&app.db)
        .await
        .unwrap();
    app.organization_changed(&admin.org_id).await;
    for _ in 0..4 {
        app.clock.advance(1_000);
        app.add_member(&admin.org_id, "viewer").await;
    }
    let mut seen = Vec::new();
    for offset in [0, 2, 4] {
        let (status, body) =
            call(app.get(&format!("/api/users?limit=2&offset={offset}"), &admin.token)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["total"], json!(5));
        assert_eq!(body["limit"], json!(2));
        assert_eq!(body["offset"], json!(offset));
        seen.extend(
            body["users"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["id"].as_str().unwrap().to_string()),
        );
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(seen.last(), Some(&admin.user_id), "oldest last");
    // The same members by cursor, one page after another.
    let mut by_cursor = Vec::new();
    let mut url = "/api/users?limit=2".to_string();
    loop {
        let (status, body) = call(app.get(&url, &admin.token)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["total"], json!(5));
        by_cursor.extend(
            body["users"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["id"].as_str().unwrap().to_string()),
        );
        match body["nextCursor"].as_str() {
            Some(cursor) => url = format!("/api/users?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(by_cursor, seen);
    let (status, body) = call(app.get("/api/users?cursor=nope", &admin.token)).await;
    assert_error(status, &body, 400, "Invalid cursor");
    let (_, body) = call(app.get("/api/users?offset=50", &admin.token)).await;
    assert_eq!(body["users"], json!([]));
    assert_eq!(body["total"], json!(5));
    let (_, body) = call(app.get("/api/users?limit=500", &admin.token)).await;
    assert_eq!(body["users"].as_array().unwrap().len(), 5);
    for (query, error) in [
        ("limit=0", "Invalid limit"),
        ("limit=501", "Invalid limit"),
        ("limit=many", "Invalid limit"),
        ("offset=-1", "Invalid offset"),
        ("offset=x", "Invalid offset"),
    ] {
        let (status, body) = call(app.get(&format!("/api/users?{query}"), &admin.token)).await;
        assert_error(status, &body, 400, error);
    }
}

async fn role_change_rules_and_audit(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Roles Co").await;
    let dev = app.add_member(&admin.org_id, "developer").await;

    let (status, body) = set_role(&app, &admin, &dev.user_id, "viewer").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"success": true, "message": "User role updated to viewer",
               "user": {"id": dev.user_id, "email": dev.email, "name": "A developer", "role": "viewer"}})
    );
    let (_, me) = call(app.get("/api/auth/me", &dev.token)).await;
    assert_eq!(me["data"]["role"], json!("viewer"));

    let (_, logs) = call(app.get("/api/organization/audit-logs", &admin.token)).await;
    let entry = &logs["auditLogs"][0];
    assert_eq!(entry["action"], json!("user.role_changed"));
    assert_eq!(entry["targetType"], json!("user"));
    assert_eq!(entry["targetId"], json!(dev.user_id));
    assert_eq!(entry["userId"], json!(admin.user_id));
    assert_eq!(
        entry["details"],
        json!({"oldRole": "developer", "newRole": "viewer", "targetEmail": dev.email})
    );

    // Setting the same role again succeeds and records nothing.
    let (status, _) = set_role(&app, &admin, &dev.user_id, "viewer").await;
    assert_eq!(status, 200);
    assert_eq!(
        app.audit_actions(&admin.org_id).await,
        ["user.role_changed"]
    );

    // Own role: refused, also as the only admin; and spelled in upper case the id is not an id.
    let (status, body) = set_role(&app, &admin, &admin.user_id, "viewer").await;
    assert_error(status, &body, 403, "Cannot change own role");
    assert_eq!(body["message"], json!("You cannot change your own role"));
    let (status, body) = set_role(&app, &admin, &admin.user_id.to_uppercase(), "viewer").await;
    assert_error(status, &body, 400, "Invalid user ID format");
    let (status, body) = call(
        app.request(
            Method::DELETE,
            &format!("/api/users/{}", admin.user_id.to_uppercase()),
        )
        .bearer_auth(&admin.token),
    )
    .await;
    assert_error(status, &body, 400, "Invalid user ID format");
    let (status, body) = call(
        app.request(Method::DELETE, &format!("/api/users/{}", admin.user_id))
            .bearer_auth(&admin.token),
    )
    .await;
    assert_error(status, &body, 403, "Cannot delete yourself");
    assert_eq!(admins(&app, &admin.org_id).await, 1);

    // Promote, then the new admin may demote the first one (two admins → one).
    let (status, _) = set_role(&app, &admin, &dev.user_id, "admin").await;
    assert_eq!(status, 200);
    let (status, body) = set_role(&app, &dev, &admin.user_id, "developer").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(admins(&app, &admin.org_id).await, 1);

    // Non-admins are refused before their body is looked at.
    for role in ["developer", "viewer"] {
        let member = app.add_member(&admin.org_id, role).await;
        let (status, body) = set_role(&app, &member, &dev.user_id, "viewer").await;
        assert_error(status, &body, 403, "Forbidden");
        assert_eq!(
            body["message"],
            json!(format!(
                "This action requires one of the following roles: admin. Your role: {role}."
            ))
        );
        let (status, body) = call(app.send_json(
            Method::PATCH,
            &role_path(&dev.user_id),
            &member.token,
            json!({"role": 7}),
        ))
        .await;
        assert_error(status, &body, 403, "Forbidden");
        let (status, body) = call(
            app.request(Method::DELETE, &format!("/api/users/{}", dev.user_id))
                .bearer_auth(&member.token),
        )
        .await;
        assert_error(status, &body, 403, "Forbidden");
    }
}

async fn demoted_admin_loses_rights_on_next_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Demotions").await;
    let second = app.add_member(&admin.org_id, "admin").await;
    let viewer = app.add_member(&admin.org_id, "viewer").await;
    let (status, _) = set_role(&app, &second, &viewer.user_id, "developer").await;
    assert_eq!(status, 200);
    let (status, _) = set_role(&app, &admin, &second.user_id, "viewer").await;
    assert_eq!(status, 200);
    // Same token, very next request: no longer an admin.
    let (status, body) = set_role(&app, &second, &viewer.user_id, "admin").await;
    assert_error(status, &body, 403, "Forbidden");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with("Your role: viewer."),
        "{body}"
    );
    let (status, body) = call(app.get("/api/invitations", &second.token)).await;
    assert_error(status, &body, 403, "Forbidden");
    let (_, body) = call(app.get(&format!("/api/users/{}", viewer.user_id), &admin.token)).await;
    assert_eq!(body["user"]["role"], json!("developer"));
}

async fn removed_user_loses_access_and_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Removals").await;
    let dev = app.add_member(&admin.org_id, "developer").await;
    let (status, key) = call(app.send_json(
        Method::POST,
        "/api/auth/api-keys",
        &dev.token,
        json!({"name": "ci"}),
    ))
    .await;
    assert_eq!(status, 201, "{key}");
    let (status, _) = call(app.get("/api/auth/me", &dev.token)).await;
    assert_eq!(status, 200);

    let (status, body) = call(
        app.request(Method::DELETE, &format!("/api/users/{}", dev.user_id))
            .bearer_auth(&admin.token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"success": true, "message": format!("User {} has been removed from the organization", dev.email)})
    );
    for path in ["/api/auth/me", "/api/users", "/api/organization"] {
        let (status, body) = call(app.get(path, &dev.token)).await;
        assert_error(status, &body, 401, "Authentication required");
    }
    // The key went with its creator.
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM api_keys WHERE user_id = $1",
            &dev.user_id
        )
        .await,
        0
    );
    let key = key["apiKey"].as_str().unwrap();
    let refused =
        crate::api_keys::authenticate(&app, "/api/executions", &[("x-api-key", key)]).await;
    assert_eq!(refused.err().map(|e| e.status().as_u16()), Some(401));

    let (_, body) = call(app.get("/api/users", &admin.token)).await;
    assert_eq!(body["total"], json!(1));
    let (_, org) = call(app.get("/api/organization", &admin.token)).await;
    assert_eq!(org["organization"]["userCount"], json!(1));
    let (_, logs) = call(app.get(
        "/api/organization/audit-logs?action=user.removed",
        &admin.token,
    ))
    .await;
    assert_eq!(
        logs["auditLogs"][0]["details"],
        json!({"targetEmail": dev.email, "targetRole": "developer", "targetName": "A developer"})
    );
    let (status, body) = call(
        app.request(Method::DELETE, &format!("/api/users/{}", dev.user_id))
            .bearer_auth(&admin.token),
    )
    .await;
    assert_error(status, &body, 404, "User not found");
}

async fn concurrent_mutual_demotions_keep_an_admin(backend: Backend) {
    let app = roomy_app(backend).await;
    let first = app.signup("Coup").await;
    let second = app.add_member(&first.org_id, "admin").await;
    for round in 0..20 {
        assert_eq!(admins(&app, &first.org_id).await, 2);
        let results = in_parallel(vec![
            app.send_json(
                Method::PATCH,
                &role_path(&second.user_id),
                &first.token,
                json!({"role": "developer"}),
            ),
            app.send_json(
                Method::PATCH,
                &role_path(&first.user_id),
                &second.token,
                json!({"role": "viewer"}),
            ),
        ])
        .await;
        let wins = results.iter().filter(|(s, _)| *s == 200).count();
        assert_eq!(
            wins, 1,
            "round {round}: exactly one demotion wins: {results:?}"
        );
        for (status, body) in results.iter().filter(|(s, _)| *s != 200) {
            assert_eq!(*status, 403, "round {round}: {body}");
            assert!(
                ["Forbidden", "Cannot remove last admin"]
                    .contains(&body["error"].as_str().unwrap_or_default()),
                "round {round}: {body}"
            );
        }
        assert_eq!(admins(&app, &first.org_id).await, 1, "round {round}");
        // The survivor restores the other for the next round.
        let (survivor, demoted) = if results[0].0 == 200 {
            (&first, &second)
        } else {
            (&second, &first)
        };
        let (status, body) = set_role(&app, survivor, &demoted.user_id, "admin").await;
        assert_eq!(status, 200, "{body}");
    }
}

async fn concurrent_mutual_removals_keep_an_admin(backend: Backend) {
    let app = roomy_app(backend).await;
    let founder = app.signup("Purge").await;
    let mut a = founder.clone();
    for round in 0..20 {
        let b = app.add_member(&founder.org_id, "admin").await;
        let results = in_parallel(vec![
            app.request(Method::DELETE, &format!("/api/users/{}", b.user_id))
                .bearer_auth(&a.token),
            app.request(Method::DELETE, &format!("/api/users/{}", a.user_id))
                .bearer_auth(&b.token),
        ])
        .await;
        let wins = results.iter().filter(|(s, _)| *s == 200).count();
        assert_eq!(
            wins, 1,
            "round {round}: exactly one removal wins: {results:?}"
        );
        for (status, body) in results.iter().filter(|(s, _)| *s != 200) {
            // The loser was removed first: their token no longer authenticates (or their
            // re-check inside the transaction found them gone).
            assert!(
                [401, 403].contains(status),
                "round {round}: {status} {body}"
            );
        }
        assert_eq!(admins(&app, &founder.org_id).await, 1, "round {round}");
        assert_eq!(
            count(
                &app,
                "SELECT COUNT(*) FROM users WHERE organization_id = $1",
                &founder.org_id
            )
            .await,
            1
        );
        if results[0].0 != 200 {
            a = b;
        }
    }
    let (status, _) = call(app.get("/api/organization", &a.token)).await;
    assert_eq!(status, 200);
}

async fn cross_organization_ids_answer_404_and_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mine = app.signup("Mine").await;
    let theirs = app.signup("Theirs").await;
    let their_dev = app.add_member(&theirs.org_id, "developer").await;
    let (status, invite) = call(app.send_json(
        Method::POST,
        "/api/invitations",
        &theirs.token,
        json!({"email": "someone@example.org", "role": "viewer"}),
    ))
    .await;
    assert_eq!(status, 201, "{invite}");
    let their_invitation = invite["invitation"]["id"].as_str().unwrap().to_string();
    let (status, key) = call(app.send_json(
        Method::POST,
        "/api/auth/api-keys",
        &their_dev.token,
        json!({}),
    ))
    .await;
    assert_eq!(status, 201);
    let their_key = key["data"]["id"].as_str().unwrap().to_string();
    let before: Vec<String> = {
        let mut v = Vec::new();
        for table in ["users", "invitations", "api_keys", "audit_logs"] {
            v.push(stored_text(&app, table).await);
        }
        v
    };

    let cases: Vec<(Method, String, Option<Value>, &str)> = vec![
        (
            Method::GET,
            format!("/api/users/{}", their_dev.user_id),
            None,
            "User not found",
        ),
        (
            Method::GET,
            format!("/api/users/{}", theirs.user_id),
            None,
            "User not found",
        ),
        (
            Method::PATCH,
            role_path(&their_dev.user_id),
            Some(json!({"role": "admin"})),
            "User not found",
        ),
        (
            Method::PATCH,
            role_path(&theirs.user_id),
            Some(json!({"role": "viewer"})),
            "User not found",
        ),
        (
            Method::DELETE,
            format!("/api/users/{}", their_dev.user_id),
            None,
            "User not found",
        ),
        (
            Method::DELETE,
            format!("/api/users/{}", theirs.user_id),
            None,
            "User not found",
        ),
        (
            Method::DELETE,
            format!("/api/invitations/{their_invitation}"),
            None,
            "Invitation not found",
        ),
        (
            Method::DELETE,
            format!("/api/auth/api-keys/{their_key}"),
            None,
            "API key not found",
        ),
    ];
    for (method, path, body, error) in cases {
        let mut req = app.request(method.clone(), &path).bearer_auth(&mine.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let (status, res) = call(req).await;
        assert_error(status, &res, 404, error);
    }
    // Lists show only the caller's organization.
    let (_, users) = call(app.get("/api/users", &mine.token)).await;
    assert_eq!(users["total"], json!(1));
    let (_, invitations) = call(app.get("/api/invitations", &mine.token)).await;
    assert_eq!(invitations["invitations"], json!([]));
    let (_, keys) = call(app.get("/api/auth/api-keys", &mine.token)).await;
    assert_eq!(keys["data"], json!([]));

    let mut after = Vec::new();
    for table in ["users", "invitations", "api_keys", "audit_logs"] {
        after.push(stored_text(&app, table).await);
    }
    assert_eq!(before, after, "nothing changed anywhere");
}

async fn bad_ids_and_bodies(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Bad Input").await;
    let dev = app.add_member(&admin.org_id, "developer").await;
    for bad in [
        "123",
        "507F191E810C19729DE860EA",
        "507f191e810c19729de860eaa",
        "zzzzzzzzzzzzzzzzzzzzzzzz",
        "507f191e810c19729de860e%20",
    ] {
        let (status, body) = call(app.get(&format!("/api/users/{bad}"), &admin.token)).await;
        assert_error(status, &body, 400, "Invalid user ID format");
        let (status, body) = set_role(&app, &admin, bad, "viewer").await;
        assert_error(status, &body, 400, "Invalid user ID format");
        let (status, body) = call(
            app.request(Method::DELETE, &format!("/api/users/{bad}"))
                .bearer_auth(&admin.token),
        )
        .await;
        assert_error(status, &body, 400, "Invalid user ID format");
    }
    let path = role_path(&dev.user_id);
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({}), 400, "Missing required field"),
        (json!({"role": ""}), 400, "Missing required field"),
        (json!({"role": null}), 400, "Missing required field"),
        (json!({"role": "owner"}), 400, "Invalid role"),
        (json!({"role": "Admin"}), 400, "Invalid role"),
        (json!({"role": 1}), 400, "Invalid role"),
        (json!({"role": ["admin"]}), 400, "Invalid role"),
    ];
    for (body, expected, error) in cases {
        let (status, res) =
            call(app.send_json(Method::PATCH, &path, &admin.token, body.clone())).await;
        assert_error(status, &res, expected, error);
    }
    let (status, res) = call(app.request(Method::PATCH, &path).bearer_auth(&admin.token)).await;
    assert_error(status, &res, 400, "Missing body");
    let (status, res) = call(
        app.request(Method::PATCH, &path)
            .bearer_auth(&admin.token)
            .header("content-type", "application/json")
            .body("{"),
    )
    .await;
    assert_error(status, &res, 400, "Invalid JSON");
    let (_, body) = call(app.get(&format!("/api/users/{}", dev.user_id), &admin.token)).await;
    assert_eq!(body["user"]["role"], json!("developer"));
    assert!(app.audit_actions(&admin.org_id).await.is_empty());
}

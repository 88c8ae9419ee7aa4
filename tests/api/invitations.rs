//! `/api/invitations*` and signup with `inviteToken`: the token shown once and stored hashed,
//! the seat limit held under concurrency, expiry, revocation, and every refusal's envelope.

use orgd_core::clock::Clock;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, Session, TestApp, assert_error, call};
use crate::members::{count, in_parallel, roomy_app, stored_text};

crate::backend_tests!(
    invite_then_existing_user_accepts,
    invite_then_new_user_signs_up,
    parallel_invitations_respect_the_seat_limit,
    unlimited_plans_never_refuse,
    invitations_expire_after_seven_days,
    revoked_and_used_invitations_are_dead,
    accept_refusals,
    two_admins_leaving_at_once_leave_one_behind,
    invitation_bad_input,
    only_admins_manage_invitations,
    validate_is_rate_limited_per_ip,
    tokens_are_never_stored_in_plain_text,
);

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

async fn invite(app: &TestApp, admin: &Session, email: &str, role: &str) -> (u16, Value) {
    call(app.send_json(
        Method::POST,
        "/api/invitations",
        &admin.token,
        json!({"email": email, "role": role}),
    ))
    .await
}

/// Invites and returns the plain token.
async fn invite_ok(app: &TestApp, admin: &Session, email: &str, role: &str) -> String {
    let (status, body) = invite(app, admin, email, role).await;
    assert_eq!(status, 201, "{body}");
    body["invitation"]["token"]
        .as_str()
        .expect("token")
        .to_string()
}

async fn accept(app: &TestApp, user: &Session, token: &str) -> (u16, Value) {
    call(app.send_json(
        Method::POST,
        "/api/invitations/accept",
        &user.token,
        json!({"token": token}),
    ))
    .await
}

async fn signup_invited(app: &TestApp, email: &str, token: &str) -> (u16, Value) {
    call(app.request(Method::POST, "/api/auth/signup").json(&json!({
        "email": email, "password": PASSWORD, "name": "Ivy Invitee", "inviteToken": token
    })))
    .await
}

async fn validate(app: &TestApp, token: &str) -> (u16, Value) {
    call(app.request(Method::GET, &format!("/api/invitations/validate/{token}"))).await
}

async fn set_max_users(app: &TestApp, org_id: &str, overrides: &str) {
    // What the operator does (CLI / operator API): per-organization overrides.
    sqlx::query("UPDATE organizations SET limit_overrides = $1 WHERE id = $2")
        .bind(overrides)
        .bind(org_id)
        .execute(&app.db)
        .await
        .unwrap();
    app.organization_changed(org_id).await;
}

async fn me(app: &TestApp, token: &str) -> Value {
    let (status, body) = call(app.get("/api/auth/me", token)).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

async fn invite_then_existing_user_accepts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Hiring Co").await;
    let elsewhere = app.signup("Old Home").await;
    let mover = app.add_member(&elsewhere.org_id, "developer").await;

    let (status, body) = invite(
        &app,
        &admin,
        &format!("  {}  ", mover.email.to_uppercase()),
        "developer",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["success"], json!(true));
    let invitation = body["invitation"].as_object().unwrap();
    let mut keys: Vec<&str> = invitation.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["email", "expiresAt", "id", "role", "token"],
        "nothing says whether the email has an account"
    );
    assert_eq!(invitation["email"], json!(mover.email));
    assert_eq!(invitation["role"], json!("developer"));
    assert_eq!(
        invitation["expiresAt"],
        json!(orgd_core::clock::format_ms(app.clock.now_ms() + 7 * DAY_MS))
    );
    let token = invitation["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 64);
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    let invitation_id = invitation["id"].as_str().unwrap().to_string();
    // The answer for an address nobody has is shaped the same.
    let (_, fresh) = invite(&app, &admin, "nobody-yet@example.net", "viewer").await;
    let mut fresh_keys: Vec<&str> = fresh["invitation"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fresh_keys.sort();
    assert_eq!(fresh_keys, keys);
    assert_eq!(fresh["message"], body["message"]);

    let (status, list) = call(app.get("/api/invitations", &admin.token)).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], json!(2));
    let listed = list["invitations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == json!(invitation_id))
        .unwrap();
    assert_eq!(listed["email"], json!(mover.email));
    assert_eq!(listed["status"], json!("pending"));
    assert_eq!(listed["invitedBy"], json!(admin.user_id));
    assert_eq!(listed["invitedByName"], json!("Ada Admin"));
    assert!(listed.get("token").is_none() && !list.to_string().contains(&token));

    let (status, valid) = validate(&app, &token).await;
    assert_eq!(status, 200, "{valid}");
    assert_eq!(valid["valid"], json!(true));
    assert_eq!(valid["organizationName"], json!("Hiring Co"));
    assert_eq!(valid["role"], json!("developer"));
    assert_eq!(valid["inviterName"], json!("Ada Admin"));
    assert!(valid.get("userExists").is_none(), "{valid}");
    // Upper-case hex is the same token.
    let (status, _) = validate(&app, &token.to_uppercase()).await;
    assert_eq!(status, 200);

    let (status, body) = accept(&app, &mover, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], json!("Successfully joined Hiring Co"));
    assert_eq!(
        body["organization"],
        json!({"id": admin.org_id, "name": "Hiring Co"})
    );
    // The same token now acts in the new organization with the invited role.
    let data = me(&app, &mover.token).await;
    assert_eq!(data["role"], json!("developer"));
    assert_eq!(data["organization"]["id"], json!(admin.org_id));
    assert_eq!(data["organization"]["userCount"], json!(2));
    let (_, users) = call(app.get("/api/users", &mover.token)).await;
    assert_eq!(users["total"], json!(2));
    let old = me(&app, &elsewhere.token).await;
    assert_eq!(old["organization"]["userCount"], json!(1));

    let (_, list) = call(app.get("/api/invitations", &admin.token)).await;
    assert_eq!(
        list["total"],
        json!(1),
        "accepted invitations are no longer pending"
    );
    assert_eq!(
        app.audit_actions(&admin.org_id).await,
        [
            "invitation.created",
            "invitation.created",
            "invitation.accepted"
        ]
    );
    assert_eq!(app.audit_actions(&elsewhere.org_id).await, ["user.left"]);
    let (status, body) = accept(&app, &mover, &token).await;
    assert_error(status, &body, 404, "Invalid or expired invitation");
}

async fn invite_then_new_user_signs_up(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Growing").await;
    let token = invite_ok(&app, &admin, "newbie@example.com", "viewer").await;

    // Another email with this token gets the same answer as a bad token.
    let (status, body) = signup_invited(&app, "impostor@example.com", &token).await;
    assert_error(status, &body, 400, "Invalid or expired invitation");
    assert_eq!(
        body["message"],
        json!("The invitation token is invalid or has already been used")
    );

    let (status, body) = signup_invited(&app, "NewBie@Example.com", &token).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["email"], json!("newbie@example.com"));
    assert_eq!(body["user"]["role"], json!("viewer"));
    assert_eq!(body["user"]["organizationId"], json!(admin.org_id));
    assert_eq!(body["user"]["organizationName"], json!("Growing"));
    let new_token = body["token"].as_str().unwrap();
    let data = me(&app, new_token).await;
    assert_eq!(data["organization"]["id"], json!(admin.org_id));
    assert_eq!(data["organization"]["userCount"], json!(2));
    assert_eq!(data["organization"]["userLimit"], json!(3));
    let (status, _) = app.login("newbie@example.com", PASSWORD).await;
    assert_eq!(status, 200);
    // No new organization was created.
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM organizations WHERE id <> $1",
            &admin.org_id
        )
        .await,
        0
    );
    assert_eq!(
        app.audit_actions(&admin.org_id).await,
        ["invitation.created", "invitation.accepted"]
    );

    // Used: dead for signup and for validation.
    let (status, body) = signup_invited(&app, "newbie@example.com", &token).await;
    assert_error(status, &body, 400, "Invalid or expired invitation");
    let (status, body) = validate(&app, &token).await;
    assert_error(status, &body, 404, "Invitation not found or already used");

    // inviteToken wins over an organizationName sent with it.
    let token = invite_ok(&app, &admin, "both@example.com", "developer").await;
    let (status, body) = call(app.request(Method::POST, "/api/auth/signup").json(&json!({
        "email": "both@example.com", "password": PASSWORD, "name": "Bo", "inviteToken": token, "organizationName": "Mine Now"
    })))
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["organizationId"], json!(admin.org_id));

    // An invitation for an address that already has an account: signup says so.
    set_max_users(&app, &admin.org_id, r#"{"maxUsers":10}"#).await;
    let elsewhere = app.signup("Other").await;
    let token = invite_ok(&app, &admin, &elsewhere.email, "viewer").await;
    let (status, body) = signup_invited(&app, &elsewhere.email, &token).await;
    assert_error(status, &body, 409, "Email already registered");
    let (status, _) = validate(&app, &token).await;
    assert_eq!(status, 200, "a refused signup leaves the invitation usable");
}

async fn parallel_invitations_respect_the_seat_limit(backend: Backend) {
    let app = roomy_app(backend).await;
    let admin = app.signup("Free Tier").await;
    let results = in_parallel(
        (0..20)
            .map(|i| {
                app.send_json(
                    Method::POST,
                    "/api/invitations",
                    &admin.token,
                    json!({"email": format!("p{i}@example.com"), "role": "developer"}),
                )
            })
            .collect(),
    )
    .await;
    let created: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(created.len(), 2, "{results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != 201) {
        assert_error(*status, body, 403, "User limit exceeded");
        assert_eq!(
            body["usage"],
            json!({"used": 3, "limit": 3, "percentUsed": 100})
        );
        assert_eq!(
            body["message"],
            json!(
                "Your organization has reached the team member limit (3/3). Upgrade your plan to invite more users."
            )
        );
    }
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM invitations WHERE organization_id = $1",
            &admin.org_id
        )
        .await,
        2
    );
    let org = me(&app, &admin.token).await["organization"].clone();
    assert_eq!(
        (org["userCount"].clone(), org["userLimit"].clone()),
        (json!(1), json!(3))
    );
    let (status, body) = invite(&app, &admin, "one-more@example.com", "viewer").await;
    assert_error(status, &body, 403, "User limit exceeded");

    let tokens: Vec<(String, String)> = created
        .iter()
        .map(|b| {
            (
                b["invitation"]["email"].as_str().unwrap().to_string(),
                b["invitation"]["token"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let elsewhere = app.signup("Elsewhere").await;
    let existing = app.add_member(&elsewhere.org_id, "viewer").await;
    sqlx::query("UPDATE users SET email = $1 WHERE id = $2")
        .bind(&tokens[0].0)
        .bind(&existing.user_id)
        .execute(&app.db)
        .await
        .unwrap();
    app.user_changed(&existing.user_id).await;

    // The operator lowers the limit below what is already taken: nobody more may join.
    set_max_users(&app, &admin.org_id, r#"{"maxUsers":2}"#).await;
    let (status, body) = accept(&app, &existing, &tokens[0].1).await;
    assert_error(status, &body, 403, "User limit exceeded");
    assert_eq!(
        body["usage"],
        json!({"used": 3, "limit": 2, "percentUsed": 150})
    );
    let (status, body) = signup_invited(&app, &tokens[1].0, &tokens[1].1).await;
    assert_error(status, &body, 403, "User limit exceeded");
    assert_eq!(
        me(&app, &existing.token).await["organization"]["id"],
        json!(elsewhere.org_id)
    );

    // Back to the plan's 3: each invitation converts its own reserved seat.
    set_max_users(&app, &admin.org_id, "{}").await;
    let (status, body) = accept(&app, &existing, &tokens[0].1).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = signup_invited(&app, &tokens[1].0, &tokens[1].1).await;
    assert_eq!(status, 201, "{body}");
    let org = me(&app, &admin.token).await["organization"].clone();
    assert_eq!(org["userCount"], json!(3));
    let (status, body) = invite(&app, &admin, "fourth@example.com", "viewer").await;
    assert_error(status, &body, 403, "User limit exceeded");
    assert_eq!(
        body["usage"],
        json!({"used": 3, "limit": 3, "percentUsed": 100})
    );
}

async fn unlimited_plans_never_refuse(backend: Backend) {
    let app = roomy_app(backend).await;
    let admin = app.signup("Big Corp").await;
    set_max_users(&app, &admin.org_id, r#"{"maxUsers":null}"#).await;
    let results = in_parallel(
        (0..12)
            .map(|i| {
                app.send_json(
                    Method::POST,
                    "/api/invitations",
                    &admin.token,
                    json!({"email": format!("u{i}@example.com"), "role": "viewer"}),
                )
            })
            .collect(),
    )
    .await;
    assert!(results.iter().all(|(s, _)| *s == 201), "{results:?}");
    let token = results[0].1["invitation"]["token"].as_str().unwrap();
    let (status, body) = signup_invited(&app, "u0@example.com", token).await;
    assert_eq!(status, 201, "{body}");
    let org = me(&app, &admin.token).await["organization"].clone();
    assert_eq!(org["userLimit"], Value::Null);
    assert_eq!(org["userCount"], json!(2));
}

async fn invitations_expire_after_seven_days(backend: Backend) {
    // Sessions outlive the invitations here, so only the invitations expire.
    let app = TestApp::spawn_with(backend, |c| {
        c.jwt_ttl = std::time::Duration::from_secs(30 * 24 * 3600)
    })
    .await;
    let admin = app.signup("Slow Co").await;
    let elsewhere = app.signup("Elsewhere").await;
    let existing = app.add_member(&elsewhere.org_id, "viewer").await;
    let token_a = invite_ok(&app, &admin, "late@example.com", "viewer").await;
    let token_b = invite_ok(&app, &admin, &existing.email, "viewer").await;

    app.clock.advance(7 * DAY_MS);
    let (status, _) = validate(&app, &token_a).await;
    assert_eq!(status, 200, "valid through its last millisecond");
    app.clock.advance(1);
    let (status, body) = validate(&app, &token_a).await;
    assert_error(status, &body, 404, "Invitation has expired");
    assert_eq!(body["valid"], json!(false));
    let (status, body) = signup_invited(&app, "late@example.com", &token_a).await;
    assert_error(status, &body, 400, "Invitation has expired");
    assert_eq!(
        body["message"],
        json!("This invitation has expired. Please request a new invitation.")
    );
    let (status, body) = accept(&app, &existing, &token_b).await;
    assert_error(status, &body, 404, "Invitation has expired");
    let (_, list) = call(app.get("/api/invitations", &admin.token)).await;
    assert_eq!(
        (list["invitations"].clone(), list["total"].clone()),
        (json!([]), json!(0))
    );

    // Expired invitations neither block a new one for the same email nor hold seats.
    let token_c = invite_ok(&app, &admin, "late@example.com", "developer").await;
    invite_ok(&app, &admin, "third@example.com", "viewer").await;
    let stale: Vec<String> = sqlx::query_scalar("SELECT status FROM invitations WHERE organization_id = $1 AND token_hash <> $2 AND email <> 'third@example.com' ORDER BY created_at")
        .bind(&admin.org_id)
        .bind(orgd_core::ids::sha256_hex(&token_c))
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(stale, ["expired", "expired"]);
    let (status, body) = signup_invited(&app, "late@example.com", &token_c).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["role"], json!("developer"));
}

async fn revoked_and_used_invitations_are_dead(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Revokers").await;
    let (_, body) = invite(&app, &admin, "gone@example.com", "developer").await;
    let id = body["invitation"]["id"].as_str().unwrap().to_string();
    let token = body["invitation"]["token"].as_str().unwrap().to_string();

    let (status, body) = call(
        app.request(Method::DELETE, &format!("/api/invitations/{id}"))
            .bearer_auth(&admin.token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"success": true, "message": "Invitation revoked successfully"})
    );
    let (status, body) = call(
        app.request(Method::DELETE, &format!("/api/invitations/{id}"))
            .bearer_auth(&admin.token),
    )
    .await;
    assert_error(status, &body, 404, "Invitation not found");
    let (_, list) = call(app.get("/api/invitations", &admin.token)).await;
    assert_eq!(list["total"], json!(0));
    let (status, body) = validate(&app, &token).await;
    assert_error(status, &body, 404, "Invitation not found or already used");
    let (status, body) = signup_invited(&app, "gone@example.com", &token).await;
    assert_error(status, &body, 400, "Invalid or expired invitation");
    let status: String = sqlx::query_scalar("SELECT status FROM invitations WHERE id = $1")
        .bind(&id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(status, "revoked");
    let (_, logs) = call(app.get(
        "/api/organization/audit-logs?action=invitation.revoked",
        &admin.token,
    ))
    .await;
    assert_eq!(logs["auditLogs"][0]["targetId"], json!(id));
    assert_eq!(
        logs["auditLogs"][0]["details"],
        json!({"email": "gone@example.com", "role": "developer"})
    );
    // A revoked invitation frees its seat and its email.
    invite_ok(&app, &admin, "gone@example.com", "viewer").await;
    let (_, body) = invite(&app, &admin, "other@example.com", "viewer").await;
    let (other_id, other_token) = (
        body["invitation"]["id"].as_str().unwrap(),
        body["invitation"]["token"].as_str().unwrap(),
    );
    // An accepted invitation cannot be revoked afterwards.
    let (status, _) = signup_invited(&app, "other@example.com", other_token).await;
    assert_eq!(status, 201);
    let (status, body) = call(
        app.request(Method::DELETE, &format!("/api/invitations/{other_id}"))
            .bearer_auth(&admin.token),
    )
    .await;
    assert_error(status, &body, 404, "Invitation not found");
}

async fn accept_refusals(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Target Org").await;
    let lonely = app.signup("Solo Org").await;
    // The only admin of their organization cannot leave it.
    let token = invite_ok(&app, &admin, &lonely.email, "developer").await;
    let (status, body) = accept(&app, &lonely, &token).await;
    assert_error(status, &body, 409, "Last admin");
    assert_eq!(
        me(&app, &lonely.token).await["organization"]["id"],
        json!(lonely.org_id)
    );
    // With a second admin there, they may go.
    app.add_member(&lonely.org_id, "admin").await;
    let (status, body) = accept(&app, &lonely, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(me(&app, &lonely.token).await["role"], json!("developer"));

    // A token for someone else's email.
    let bystander = app.add_member(&lonely.org_id, "viewer").await;
    let token = invite_ok(&app, &admin, "intended@example.com", "viewer").await;
    let (status, body) = accept(&app, &bystander, &token).await;
    assert_error(status, &body, 403, "Email mismatch");
    let (status, _) = validate(&app, &token).await;
    assert_eq!(status, 200, "still usable by its invitee");
}

async fn two_admins_leaving_at_once_leave_one_behind(backend: Backend) {
    let app = roomy_app(backend).await;
    for round in 0..5 {
        let a = app.signup("Left Behind").await;
        let b = app.add_member(&a.org_id, "admin").await;
        let target = app.signup("Greener Grass").await;
        let token_a = invite_ok(&app, &target, &a.email, "developer").await;
        let token_b = invite_ok(&app, &target, &b.email, "developer").await;
        let results = in_parallel(vec![
            app.send_json(
                Method::POST,
                "/api/invitations/accept",
                &a.token,
                json!({"token": token_a}),
            ),
            app.send_json(
                Method::POST,
                "/api/invitations/accept",
                &b.token,
                json!({"token": token_b}),
            ),
        ])
        .await;
        assert_eq!(
            results.iter().filter(|(s, _)| *s == 200).count(),
            1,
            "round {round}: {results:?}"
        );
        let (status, body) = results.iter().find(|(s, _)| *s != 200).unwrap();
        assert_error(*status, body, 409, "Last admin");
        assert_eq!(
            crate::members::admins(&app, &a.org_id).await,
            1,
            "round {round}"
        );
    }
}

async fn invitation_bad_input(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Strict").await;
    let member = app.add_member(&admin.org_id, "viewer").await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({}), 400, "Missing required fields"),
        (
            json!({"email": "a@example.com"}),
            400,
            "Missing required fields",
        ),
        (json!({"role": "viewer"}), 400, "Missing required fields"),
        (
            json!({"email": "", "role": "viewer"}),
            400,
            "Missing required fields",
        ),
        (
            json!({"email": "not-an-email", "role": "viewer"}),
            400,
            "Invalid email format",
        ),
        (
            json!({"email": "a@b", "role": "viewer"}),
            400,
            "Invalid email format",
        ),
        (
            json!({"email": "a b@example.com", "role": "viewer"}),
            400,
            "Invalid email format",
        ),
        (
            json!({"email": "@example.com", "role": "viewer"}),
            400,
            "Invalid email format",
        ),
        (
            json!({"email": "a@@example.com", "role": "viewer"}),
            400,
            "Invalid email format",
        ),
        (json!({"email": 42, "role": "viewer"}), 400, "Invalid email"),
        (
            json!({"email": "a@example.com", "role": "owner"}),
            400,
            "Invalid role",
        ),
        (
            json!({"email": "a@example.com", "role": "ADMIN"}),
            400,
            "Invalid role",
        ),
        (
            json!({"email": "a@example.com", "role": true}),
            400,
            "Invalid role",
        ),
        (
            json!({"email": member.email, "role": "viewer"}),
            409,
            "User already in organization",
        ),
        (
            json!({"email": admin.email.to_uppercase(), "role": "admin"}),
            409,
            "User already in organization",
        ),
    ];
    for (body, expected, error) in cases {
        let (status, res) =
            call(app.send_json(Method::POST, "/api/invitations", &admin.token, body.clone())).await;
        assert_error(status, &res, expected, error);
    }
    let (status, res) = call(
        app.request(Method::POST, "/api/invitations")
            .bearer_auth(&admin.token),
    )
    .await;
    assert_error(status, &res, 400, "Missing body");
    invite_ok(&app, &admin, "dup@example.com", "viewer").await;
    let (status, res) = invite(&app, &admin, "DUP@example.com", "developer").await;
    assert_error(status, &res, 409, "Invitation already sent");

    let unknown = "ab".repeat(32);
    let bad_tokens: Vec<String> = vec![
        "abc".into(),
        "g".repeat(64),
        "a".repeat(63),
        "a".repeat(65),
        "ab".repeat(40),
        format!("{}%20", "a".repeat(63)),
    ];
    for bad in &bad_tokens {
        let (status, res) = validate(&app, bad).await;
        assert_error(status, &res, 400, "Invalid token format");
        assert_eq!(res["valid"], json!(false));
        let (status, res) = accept(&app, &member, bad).await;
        assert_error(status, &res, 400, "Invalid token format");
        let (status, res) = signup_invited(&app, "fresh@example.com", bad).await;
        assert_error(status, &res, 400, "Invalid invitation token format");
    }
    let (status, res) = validate(&app, &unknown).await;
    assert_error(status, &res, 404, "Invitation not found or already used");
    let (status, res) = accept(&app, &member, &unknown).await;
    assert_error(status, &res, 404, "Invalid or expired invitation");
    let (status, res) = signup_invited(&app, "fresh@example.com", &unknown).await;
    assert_error(status, &res, 400, "Invalid or expired invitation");
    let (status, res) = call(app.send_json(
        Method::POST,
        "/api/invitations/accept",
        &member.token,
        json!({}),
    ))
    .await;
    assert_error(status, &res, 400, "Missing token");
    let (status, res) = call(app.send_json(
        Method::POST,
        "/api/invitations/accept",
        &member.token,
        json!({"token": 5}),
    ))
    .await;
    assert_error(status, &res, 400, "Invalid token");
    let (status, res) = call(app.request(Method::POST, "/api/auth/signup").json(&json!({
        "email": "fresh@example.com", "password": PASSWORD, "name": "F", "inviteToken": 7
    })))
    .await;
    assert_error(status, &res, 400, "Invalid inviteToken");
    for bad in [
        "123",
        "507F191E810C19729DE860EA",
        "xxxxxxxxxxxxxxxxxxxxxxxx",
    ] {
        let (status, res) = call(
            app.request(Method::DELETE, &format!("/api/invitations/{bad}"))
                .bearer_auth(&admin.token),
        )
        .await;
        assert_error(status, &res, 400, "Invalid invitation ID");
    }
    let (status, res) = call(
        app.request(Method::DELETE, "/api/invitations/507f191e810c19729de860ea")
            .bearer_auth(&admin.token),
    )
    .await;
    assert_error(status, &res, 404, "Invitation not found");
    for (query, error) in [
        ("limit=0", "Invalid limit"),
        ("limit=501", "Invalid limit"),
        ("offset=-3", "Invalid offset"),
    ] {
        let (status, res) = call(app.get(&format!("/api/invitations?{query}"), &admin.token)).await;
        assert_error(status, &res, 400, error);
    }
    assert_eq!(
        app.audit_actions(&admin.org_id).await,
        ["invitation.created"]
    );
}

async fn only_admins_manage_invitations(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Gatekept").await;
    let (_, body) = invite(&app, &admin, "x@example.com", "viewer").await;
    let id = body["invitation"]["id"].as_str().unwrap().to_string();
    for role in ["developer", "viewer"] {
        let member = app.add_member(&admin.org_id, role).await;
        let (status, res) = invite(&app, &member, "y@example.com", "admin").await;
        assert_error(status, &res, 403, "Forbidden");
        let (status, res) = call(app.send_json(
            Method::POST,
            "/api/invitations",
            &member.token,
            json!({"email": 1}),
        ))
        .await;
        assert_error(status, &res, 403, "Forbidden");
        let (status, res) = call(app.get("/api/invitations?limit=0", &member.token)).await;
        assert_error(status, &res, 403, "Forbidden");
        let (status, res) = call(
            app.request(Method::DELETE, &format!("/api/invitations/{id}"))
                .bearer_auth(&member.token),
        )
        .await;
        assert_error(status, &res, 403, "Forbidden");
    }
    for (method, path) in [
        (Method::GET, "/api/invitations"),
        (Method::POST, "/api/invitations"),
        (Method::POST, "/api/invitations/accept"),
    ] {
        let (status, res) = call(app.request(method, path)).await;
        assert_error(status, &res, 401, "Authentication required");
    }
    let (_, list) = call(app.get("/api/invitations", &admin.token)).await;
    assert_eq!(list["total"], json!(1));
}

async fn validate_is_rate_limited_per_ip(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.auth_rate_limit_per_minute = 3).await;
    let unknown = "cd".repeat(32);
    for _ in 0..3 {
        let (status, _) = validate(&app, &unknown).await;
        assert_eq!(status, 404);
    }
    let (status, body) = validate(&app, &unknown).await;
    assert_error(status, &body, 429, "Too Many Requests");
    // The same bucket as signup and login.
    let (status, _) = app.login("who@example.com", "x").await;
    assert_eq!(status, 429);
    app.clock.advance(60_001);
    let (status, _) = validate(&app, &unknown).await;
    assert_eq!(status, 404);
}

async fn tokens_are_never_stored_in_plain_text(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Secretive").await;
    let token = invite_ok(&app, &admin, "s1@example.com", "developer").await;
    let used = invite_ok(&app, &admin, "s2@example.com", "viewer").await;
    let (status, _) = signup_invited(&app, "s2@example.com", &used).await;
    assert_eq!(status, 201);
    let stored_hash: String =
        sqlx::query_scalar("SELECT token_hash FROM invitations WHERE email = 's1@example.com'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(stored_hash, orgd_core::ids::sha256_hex(&token));
    for table in ["invitations", "audit_logs", "users", "organizations"] {
        let text = stored_text(&app, table).await;
        for secret in [&token, &used] {
            assert!(
                !text.contains(secret.as_str()),
                "{table} holds a plain invitation token"
            );
            assert!(
                !text.contains(&secret.to_uppercase()),
                "{table} holds a plain invitation token"
            );
        }
    }
}

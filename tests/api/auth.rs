//! Signup, login (with lockout), logout, `/api/auth/me`, and identity read from the store.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp, assert_error, call};

crate::backend_tests!(
    signup_creates_a_free_org_and_its_admin,
    signup_validates_in_order,
    login_me_logout,
    login_lockout_is_per_email_and_ip,
    parallel_guesses_cannot_pass_the_lockout,
    role_and_membership_come_from_the_store,
    parallel_signups_with_one_name_get_distinct_slugs,
);

async fn signup(app: &TestApp, body: Value) -> (u16, Value) {
    call(app.request(Method::POST, "/api/auth/signup").json(&body)).await
}

async fn signup_creates_a_free_org_and_its_admin(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) = signup(
        &app,
        json!({"email": "  Grace@Example.COM ", "password": PASSWORD, "name": "Grace Hopper", "organizationName": "Acme Corp!"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["success"], json!(true));
    let user = &body["user"];
    assert_eq!(user["email"], json!("grace@example.com"));
    assert_eq!(user["name"], json!("Grace Hopper"));
    assert_eq!(user["role"], json!("admin"));
    assert_eq!(user["organizationName"], json!("Acme Corp!"));
    assert!(orgd_core::ids::is_valid(user["id"].as_str().unwrap()));
    let token = body["token"].as_str().unwrap();
    let (_, org) = call(app.get("/api/organization", token)).await;
    assert_eq!(org["organization"]["plan"], json!("free"));
    assert_eq!(org["organization"]["slug"], json!("acme-corp"));
    assert_eq!(org["organization"]["aiAnalysisEnabled"], json!(true));
    // The password is stored as an Argon2id hash, never as sent.
    let hash: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE email = 'grace@example.com'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains(PASSWORD));

    // The same email again, in any case.
    let (status, body) = signup(
        &app,
        json!({"email": "GRACE@example.com", "password": PASSWORD, "name": "G", "organizationName": "Other"}),
    )
    .await;
    assert_error(status, &body, 409, "Email already registered");
    let orgs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM organizations")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(orgs, 1, "a refused signup leaves no organization behind");
}

async fn signup_validates_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ok =
        json!({"email": "a@b.io", "password": PASSWORD, "name": "Al", "organizationName": "Org"});
    let with = |field: &str, value: Value| {
        let mut body = ok.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = ok.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases = vec![
        (without("email"), "Missing required fields"),
        (with("password", json!("")), "Missing required fields"),
        (with("name", Value::Null), "Missing required fields"),
        (without("organizationName"), "Missing required fields"),
        (with("email", json!(7)), "Invalid email"),
        (with("email", json!("not-an-email")), "Invalid email format"),
        (with("password", json!("weakpass")), "Weak password"),
        (with("name", json!("   ")), "Invalid name"),
        (
            with("organizationName", json!("x")),
            "Invalid organizationName",
        ),
        (
            with("organizationName", json!("y".repeat(101))),
            "Invalid organizationName",
        ),
        (
            with("organizationName", json!(["Org"])),
            "Invalid organizationName",
        ),
    ];
    for (body, error) in cases {
        let (status, res) = signup(&app, body.clone()).await;
        assert_error(status, &res, 400, error);
    }
    let (_, res) = signup(&app, with("password", json!("weakpass"))).await;
    assert_eq!(
        res["message"],
        json!(
            "Password must contain at least one uppercase letter (A-Z), Password must contain at least one number (0-9), Password must contain at least one special character (!@#$%^&*(),.?\":{}|<>)"
        )
    );
    let (status, res) = call(app.request(Method::POST, "/api/auth/signup")).await;
    assert_error(status, &res, 400, "Missing body");
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(users, 0);
}

async fn login_me_logout(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Login Co").await;
    let (status, body) = call(app.get("/api/auth/me", &admin.token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["lastLoginAt"],
        Value::Null,
        "null until the first login"
    );

    app.clock.advance(1_000);
    let (status, body) = app.login(&admin.email.to_uppercase(), PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["id"], json!(admin.user_id));
    assert_eq!(body["user"]["organizationName"], json!("Login Co"));
    let token = body["token"].as_str().unwrap().to_string();
    assert_ne!(token, admin.token);

    let (status, me) = call(app.get("/api/auth/me", &token)).await;
    assert_eq!(status, 200);
    let data = &me["data"];
    assert_eq!(data["id"], json!(admin.user_id));
    assert_eq!(data["email"], json!(admin.email));
    assert_eq!(data["role"], json!("admin"));
    assert_eq!(data["status"], json!("active"));
    assert_eq!(
        data["lastLoginAt"],
        json!(orgd_core::clock::format_ms(
            orgd_core::clock::Clock::now_ms(&*app.clock)
        ))
    );
    let org = &data["organization"];
    assert_eq!(org["id"], json!(admin.org_id));
    assert_eq!(org["slug"], json!("login-co"));
    assert_eq!(org["plan"], json!("free"));
    assert_eq!(org["userCount"], json!(1));
    assert_eq!(org["userLimit"], json!(3));
    assert_eq!(org["aiAnalysisEnabled"], json!(true));
    assert_eq!(org["limits"]["maxTestRuns"], json!(100));

    // Wrong password and unknown email look the same.
    let (status, body) = app.login(&admin.email, "Wr0ng!pass").await;
    assert_error(status, &body, 401, "Authentication required");
    assert_eq!(body["message"], json!("Email or password is incorrect"));
    let (status, body2) = app.login("nobody@example.com", PASSWORD).await;
    assert_error(status, &body2, 401, "Authentication required");
    assert_eq!(body, body2);
    let (status, body) = call(
        app.request(Method::POST, "/api/auth/login")
            .json(&json!({"email": admin.email})),
    )
    .await;
    assert_error(status, &body, 400, "Missing credentials");

    // Logout kills that token at once — on every instance — and only that token.
    let other_instance = app.another_instance().await;
    let (status, body) = call(
        app.request(Method::POST, "/api/auth/logout")
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"success": true, "message": "Logged out successfully"})
        )
    );
    for instance in [&app, &other_instance] {
        let (status, body) = call(instance.get("/api/organization", &token)).await;
        assert_error(status, &body, 401, "Authentication required");
        assert!(
            body["message"].as_str().unwrap().contains("revoked"),
            "{body}"
        );
        let (status, _) = call(instance.get("/api/organization", &admin.token)).await;
        assert_eq!(status, 200);
    }
    other_instance.stop().await;
}

async fn login_lockout_is_per_email_and_ip(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]
    })
    .await;
    let admin = app.signup("Locked").await;
    let login_from = |ip: &'static str, password: &'static str| {
        app.request(Method::POST, "/api/auth/login")
            .header("x-forwarded-for", ip)
            .json(&json!({"email": admin.email, "password": password}))
    };
    for _ in 0..5 {
        let (status, _) = call(login_from("203.0.113.7", "Wr0ng!pass")).await;
        assert_eq!(status, 401);
    }
    // Locked for that email and IP, even with the right password.
    let (status, body) = call(login_from("203.0.113.7", PASSWORD)).await;
    assert_error(status, &body, 429, "Account temporarily locked");
    assert_eq!(body["retryAfter"], json!(900));
    assert!(
        body["message"].as_str().unwrap().contains("15 minute(s)"),
        "{body}"
    );
    // Another IP is not locked out.
    let (status, _) = call(login_from("198.51.100.1", PASSWORD)).await;
    assert_eq!(status, 200);
    // 15 minutes later the pair may try again; success clears the failures.
    app.clock.advance(10 * 60 * 1000);
    let res = login_from("203.0.113.7", PASSWORD).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 429);
    assert_eq!(res.headers()["retry-after"], "300");
    app.clock.advance(5 * 60 * 1000);
    let (status, _) = call(login_from("203.0.113.7", PASSWORD)).await;
    assert_eq!(status, 200);
}

/// Guesses sent in parallel are counted before their passwords are checked: exactly five get
/// an answer about the password, the rest are locked out.
async fn parallel_guesses_cannot_pass_the_lockout(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]
    })
    .await;
    let admin = app.signup("Guessed").await;
    let guesses: Vec<_> = (0..12)
        .map(|_| {
            let guess = app
                .request(Method::POST, "/api/auth/login")
                .header("x-forwarded-for", "203.0.113.9")
                .json(&json!({"email": admin.email, "password": "Wr0ng!pass"}));
            tokio::spawn(guess.send())
        })
        .collect();
    let mut statuses = Vec::new();
    for guess in guesses {
        statuses.push(guess.await.unwrap().unwrap().status().as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [[401; 5].as_slice(), &[429; 7]].concat());
    let (status, body) = call(
        app.request(Method::POST, "/api/auth/login")
            .header("x-forwarded-for", "203.0.113.9")
            .json(&json!({"email": admin.email, "password": PASSWORD})),
    )
    .await;
    assert_error(status, &body, 429, "Account temporarily locked");
}

async fn role_and_membership_come_from_the_store(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Live Roles").await;
    let second = app.add_member(&admin.org_id, "admin").await;
    let patch = |token: &str| {
        app.send_json(
            Method::PATCH,
            "/api/organization",
            token,
            json!({"name": "Renamed"}),
        )
    };
    assert_eq!(call(patch(&second.token)).await.0, 200);

    // Demoted in the store: the very next request with the same token is a developer's.
    sqlx::query("UPDATE users SET role = 'developer' WHERE id = $1")
        .bind(&second.user_id)
        .execute(&app.db)
        .await
        .unwrap();
    app.user_changed(&second.user_id).await;
    let (status, body) = call(patch(&second.token)).await;
    assert_error(status, &body, 403, "Forbidden");
    let (_, me) = call(app.get("/api/auth/me", &second.token)).await;
    assert_eq!(me["data"]["role"], json!("developer"));

    // Suspended: refused.
    sqlx::query("UPDATE users SET status = 'suspended' WHERE id = $1")
        .bind(&second.user_id)
        .execute(&app.db)
        .await
        .unwrap();
    app.user_changed(&second.user_id).await;
    let (status, body) = call(app.get("/api/organization", &second.token)).await;
    assert_error(status, &body, 401, "Authentication required");

    // Removed: refused.
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(&second.user_id)
        .execute(&app.db)
        .await
        .unwrap();
    app.user_changed(&second.user_id).await;
    let (status, body) = call(app.get("/api/organization", &second.token)).await;
    assert_error(status, &body, 401, "Authentication required");
    assert_eq!(
        call(app.get("/api/organization", &admin.token)).await.0,
        200
    );
}

async fn parallel_signups_with_one_name_get_distinct_slugs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (client, base) = (app.client.clone(), app.base.clone());
            tokio::spawn(async move {
                let res = client
                    .post(format!("{base}/api/auth/signup"))
                    .json(&json!({"email": format!("p{i}@example.com"), "password": PASSWORD, "name": "P", "organizationName": "Twin Org"}))
                    .send()
                    .await
                    .unwrap();
                res.status().as_u16()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 201);
    }
    let mut slugs: Vec<String> = sqlx::query_scalar("SELECT slug FROM organizations")
        .fetch_all(&app.db)
        .await
        .unwrap();
    slugs.sort();
    let mut expected: Vec<String> = std::iter::once("twin-org".to_string())
        .chain((2..=8).map(|n| format!("twin-org-{n}")))
        .collect();
    expected.sort();
    assert_eq!(slugs, expected);
}

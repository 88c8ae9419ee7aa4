//! API keys: created (shown once), listed (never the secret), revoked; `x-api-key`
//! authenticates as the creator with their current role and organization, on the executions
//! API only. No executions route exists on this branch, so the `CurrentUser` extractor is
//! exercised directly with the request parts such a route would get.

use axum::extract::FromRequestParts;
use orgd::auth::{Credential, CurrentUser, Role};
use orgd::error::ApiError;
use orgd_core::clock::Clock;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, Session, TestApp, assert_error, call};
use crate::members::{count, stored_text};

crate::backend_tests!(
    create_list_revoke,
    key_names,
    keys_authenticate_only_on_the_executions_api,
    keys_follow_the_creators_current_role_and_die_with_them,
    keys_stay_behind_when_the_creator_moves,
    keys_are_private_to_their_creator,
    key_secrets_are_never_stored_in_plain_text,
);

/// Runs the `CurrentUser` extractor on a request for `path` with `headers`.
pub async fn authenticate(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<CurrentUser, ApiError> {
    let mut request = axum::http::Request::builder().uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (mut parts, ()) = request.body(()).expect("request").into_parts();
    CurrentUser::from_request_parts(&mut parts, &app.state).await
}

async fn create_key(app: &TestApp, user: &Session, body: Value) -> (u16, Value) {
    call(app.send_json(Method::POST, "/api/auth/api-keys", &user.token, body)).await
}

/// Creates a key and returns (id, secret).
async fn new_key(app: &TestApp, user: &Session) -> (String, String) {
    let (status, body) = create_key(app, user, json!({"name": "CI"})).await;
    assert_eq!(status, 201, "{body}");
    (
        body["data"]["id"].as_str().unwrap().to_string(),
        body["apiKey"].as_str().unwrap().to_string(),
    )
}

fn unauthenticated(result: Result<CurrentUser, ApiError>) -> bool {
    matches!(result, Err(ApiError::Unauthenticated(_)))
}

async fn create_list_revoke(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Automation").await;
    let viewer = app.add_member(&admin.org_id, "viewer").await;

    let (status, body) = create_key(&app, &viewer, json!({"name": "  Nightly CI  "})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["success"], json!(true));
    assert_eq!(
        body["message"],
        json!("API key created. Store this key securely - it will not be shown again.")
    );
    let secret = body["apiKey"].as_str().unwrap().to_string();
    assert!(
        secret.starts_with("orgd_") && secret.len() == 69,
        "{secret}"
    );
    assert!(
        secret[5..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    let data = &body["data"];
    let mut keys: Vec<&str> = data
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["createdAt", "id", "name", "prefix"]);
    assert_eq!(data["name"], json!("Nightly CI"));
    assert_eq!(data["prefix"], json!(&secret[..13]));
    let id = data["id"].as_str().unwrap().to_string();
    assert!(orgd_core::ids::is_valid(&id));

    app.clock.advance(1_000);
    let (_, second) = create_key(&app, &viewer, json!({})).await;
    let (status, list) = call(app.get("/api/auth/api-keys", &viewer.token)).await;
    assert_eq!(status, 200, "{list}");
    let listed = list["data"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], second["data"]["id"], "newest first");
    assert_eq!(listed[0]["name"], json!("Unnamed Key"));
    assert_eq!(
        listed[1],
        json!({"id": id, "name": "Nightly CI", "prefix": &secret[..13], "createdAt": data["createdAt"], "lastUsed": null})
    );
    let listing = list.to_string();
    assert!(!listing.contains(&secret) && !listing.contains(&orgd_core::ids::sha256_hex(&secret)));

    let (status, body) = call(
        app.request(Method::DELETE, &format!("/api/auth/api-keys/{id}"))
            .bearer_auth(&viewer.token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"success": true, "message": "API key revoked successfully"})
    );
    let (_, list) = call(app.get("/api/auth/api-keys", &viewer.token)).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (status, body) = call(
        app.request(Method::DELETE, &format!("/api/auth/api-keys/{id}"))
            .bearer_auth(&viewer.token),
    )
    .await;
    assert_error(status, &body, 404, "API key not found");
    let revoked_at: Option<i64> =
        sqlx::query_scalar("SELECT revoked_at FROM api_keys WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(revoked_at, Some(app.clock.now_ms()));
    assert!(unauthenticated(
        authenticate(&app, "/api/executions", &[("x-api-key", &secret)]).await
    ));

    for bad in [
        "123",
        "507F191E810C19729DE860EA",
        "zzzzzzzzzzzzzzzzzzzzzzzz",
    ] {
        let (status, body) = call(
            app.request(Method::DELETE, &format!("/api/auth/api-keys/{bad}"))
                .bearer_auth(&viewer.token),
        )
        .await;
        assert_error(status, &body, 400, "Invalid key ID");
    }
    let (status, body) = call(
        app.request(
            Method::DELETE,
            "/api/auth/api-keys/507f191e810c19729de860ea",
        )
        .bearer_auth(&viewer.token),
    )
    .await;
    assert_error(status, &body, 404, "API key not found");

    let (_, logs) = call(app.get("/api/organization/audit-logs", &admin.token)).await;
    let entries = logs["auditLogs"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["apikey.revoked", "apikey.created", "apikey.created"]
    );
    assert_eq!(entries[0]["targetId"], json!(id));
    assert_eq!(entries[0]["userId"], json!(viewer.user_id));
    assert_eq!(
        entries[0]["details"],
        json!({"name": "Nightly CI", "prefix": &secret[..13]})
    );

    for (method, path) in [
        (Method::GET, "/api/auth/api-keys"),
        (Method::POST, "/api/auth/api-keys"),
    ] {
        let (status, body) = call(app.request(method, path)).await;
        assert_error(status, &body, 401, "Authentication required");
    }
}

async fn key_names(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Names").await;
    let (status, body) = call(
        app.request(Method::POST, "/api/auth/api-keys")
            .bearer_auth(&admin.token),
    )
    .await;
    assert_eq!(status, 201, "no body at all is fine: {body}");
    assert_eq!(body["data"]["name"], json!("Unnamed Key"));
    let (_, body) = create_key(&app, &admin, json!({"name": "   "})).await;
    assert_eq!(body["data"]["name"], json!("Unnamed Key"));
    let (status, body) = create_key(&app, &admin, json!({"name": "é".repeat(100)})).await;
    assert_eq!(status, 201, "{body}");
    for (name, message) in [
        (
            json!("x".repeat(101)),
            "Key name cannot exceed 100 characters",
        ),
        (json!(5), "name must be a string"),
        (json!(null), "name must be a string"),
    ] {
        let (status, body) = create_key(&app, &admin, json!({"name": name})).await;
        assert_error(status, &body, 400, "Invalid name");
        assert_eq!(body["message"], json!(message));
    }
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM api_keys WHERE user_id = $1",
            &admin.user_id
        )
        .await,
        3
    );
}

async fn keys_authenticate_only_on_the_executions_api(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Keyed").await;
    let dev = app.add_member(&admin.org_id, "developer").await;
    let (key_id, secret) = new_key(&app, &dev).await;

    for path in ["/api/executions", "/api/executions/abc/reports"] {
        let caller = authenticate(&app, path, &[("x-api-key", &secret)])
            .await
            .expect("key accepted");
        assert_eq!(caller.id(), dev.user_id);
        assert_eq!(caller.org_id(), admin.org_id);
        assert_eq!(caller.role(), Role::Developer);
        assert!(matches!(&caller.credential, Credential::ApiKey { key_id: k } if *k == key_id));
        assert!(caller.session().is_err(), "an API key is not a session");
    }
    // A Bearer token, when present, is what authenticates.
    let caller = authenticate(
        &app,
        "/api/executions",
        &[
            ("x-api-key", &secret),
            ("authorization", &format!("Bearer {}", admin.token)),
        ],
    )
    .await
    .expect("bearer accepted");
    assert_eq!(caller.id(), admin.user_id);
    assert!(matches!(caller.credential, Credential::Session(_)));
    // Anywhere else a key alone is a 401, also on lookalike paths.
    for path in [
        "/api/organization",
        "/api/executionsx",
        "/api/auth/api-keys",
        "/api/auth/logout",
        "/api/users",
    ] {
        assert!(
            unauthenticated(authenticate(&app, path, &[("x-api-key", &secret)]).await),
            "{path}"
        );
    }
    for (method, path) in [
        (Method::GET, "/api/organization"),
        (Method::GET, "/api/auth/me"),
        (Method::GET, "/api/auth/api-keys"),
        (Method::POST, "/api/auth/logout"),
        (Method::GET, "/api/users"),
        (Method::GET, "/api/invitations"),
    ] {
        let (status, body) = call(app.request(method, path).header("x-api-key", &secret)).await;
        assert_error(status, &body, 401, "Authentication required");
    }
    // Malformed or unknown keys.
    let unknown = format!("orgd_{}", "0".repeat(64));
    for bad in [
        "",
        "orgd_",
        "garbage",
        &secret[..40],
        &secret.to_uppercase(),
        &unknown,
        &format!("{secret}0"),
    ] {
        assert!(
            unauthenticated(authenticate(&app, "/api/executions", &[("x-api-key", bad)]).await),
            "{bad}"
        );
    }

    // Use is recorded (at most once a minute).
    let (_, list) = call(app.get("/api/auth/api-keys", &dev.token)).await;
    let used_at = list["data"][0]["lastUsed"]
        .as_str()
        .expect("lastUsed set")
        .to_string();
    app.clock.advance(1_000);
    authenticate(&app, "/api/executions", &[("x-api-key", &secret)])
        .await
        .expect("accepted");
    let (_, list) = call(app.get("/api/auth/api-keys", &dev.token)).await;
    assert_eq!(list["data"][0]["lastUsed"], json!(used_at));
    app.clock.advance(60_000);
    authenticate(&app, "/api/executions", &[("x-api-key", &secret)])
        .await
        .expect("accepted");
    let (_, list) = call(app.get("/api/auth/api-keys", &dev.token)).await;
    assert_ne!(list["data"][0]["lastUsed"], json!(used_at));
}

async fn keys_follow_the_creators_current_role_and_die_with_them(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Current Roles").await;
    let dev = app.add_member(&admin.org_id, "developer").await;
    let (_, secret) = new_key(&app, &dev).await;
    let key = [("x-api-key", secret.as_str())];

    let (status, _) = call(app.send_json(
        Method::PATCH,
        &format!("/api/users/{}/role", dev.user_id),
        &admin.token,
        json!({"role": "viewer"}),
    ))
    .await;
    assert_eq!(status, 200);
    let caller = authenticate(&app, "/api/executions", &key)
        .await
        .expect("accepted");
    assert_eq!(
        caller.role(),
        Role::Viewer,
        "the creator's role now, not when the key was made"
    );
    assert!(
        caller.require(Role::WRITERS).is_err(),
        "a viewer's key can read but not write"
    );

    let (status, _) = call(
        app.request(Method::DELETE, &format!("/api/users/{}", dev.user_id))
            .bearer_auth(&admin.token),
    )
    .await;
    assert_eq!(status, 200);
    assert!(unauthenticated(
        authenticate(&app, "/api/executions", &key).await
    ));
    let (status, body) = call(app.get("/api/auth/me", &dev.token)).await;
    assert_error(status, &body, 401, "Authentication required");
}

async fn keys_stay_behind_when_the_creator_moves(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let old_home = app.signup("Old Home").await;
    let new_home = app.signup("New Home").await;
    let mover = app.add_member(&old_home.org_id, "developer").await;
    let (key_id, secret) = new_key(&app, &mover).await;
    let (status, invite) = call(app.send_json(
        Method::POST,
        "/api/invitations",
        &new_home.token,
        json!({"email": mover.email, "role": "admin"}),
    ))
    .await;
    assert_eq!(status, 201);
    let (status, body) = call(app.send_json(
        Method::POST,
        "/api/invitations/accept",
        &mover.token,
        json!({"token": invite["invitation"]["token"]}),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    // The key was made for the old organization: it does not follow its creator.
    assert!(unauthenticated(
        authenticate(&app, "/api/executions", &[("x-api-key", &secret)]).await
    ));
    let (_, list) = call(app.get("/api/auth/api-keys", &mover.token)).await;
    assert_eq!(list["data"], json!([]));
    let revoked: Option<i64> = sqlx::query_scalar("SELECT revoked_at FROM api_keys WHERE id = $1")
        .bind(&key_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(revoked.is_some());
    // Even if the row were left live, the organization check refuses it.
    sqlx::query("UPDATE api_keys SET revoked_at = NULL WHERE id = $1")
        .bind(&key_id)
        .execute(&app.db)
        .await
        .unwrap();
    assert!(unauthenticated(
        authenticate(&app, "/api/executions", &[("x-api-key", &secret)]).await
    ));
    // A key made now works in the new organization, as an admin.
    let (_, fresh) = new_key(&app, &mover).await;
    let caller = authenticate(&app, "/api/executions", &[("x-api-key", &fresh)])
        .await
        .expect("accepted");
    assert_eq!(
        (caller.org_id(), caller.role()),
        (new_home.org_id.as_str(), Role::Admin)
    );
}

async fn keys_are_private_to_their_creator(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Private Keys").await;
    let dev = app.add_member(&admin.org_id, "developer").await;
    let (dev_key, secret) = new_key(&app, &dev).await;
    // Not even an admin of the same organization sees or revokes another member's key.
    let (_, list) = call(app.get("/api/auth/api-keys", &admin.token)).await;
    assert_eq!(list["data"], json!([]));
    let (status, body) = call(
        app.request(Method::DELETE, &format!("/api/auth/api-keys/{dev_key}"))
            .bearer_auth(&admin.token),
    )
    .await;
    assert_error(status, &body, 404, "API key not found");
    assert!(
        authenticate(&app, "/api/executions", &[("x-api-key", &secret)])
            .await
            .is_ok()
    );
    assert_eq!(app.audit_actions(&admin.org_id).await, ["apikey.created"]);
}

async fn key_secrets_are_never_stored_in_plain_text(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Hashed").await;
    let (id, secret) = new_key(&app, &admin).await;
    authenticate(&app, "/api/executions", &[("x-api-key", &secret)])
        .await
        .expect("accepted");
    let hash: String = sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE id = $1")
        .bind(&id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(hash, orgd_core::ids::sha256_hex(&secret));
    let hex_part = &secret[5..];
    for table in ["api_keys", "audit_logs", "users"] {
        let text = stored_text(&app, table).await;
        assert!(!text.contains(hex_part), "{table} holds the key secret");
        // Only the shown prefix (orgd_ + 8 hex) may appear.
        assert!(
            !text.contains(&secret[..14]),
            "{table} holds more than the prefix"
        );
    }
}

//! Hostile input on every endpoint that takes a JSON body: truncated JSON, wrong types, nulls,
//! arrays for objects, huge strings, deep nesting, invalid UTF-8, duplicate keys, a lying
//! Content-Length; and tokens that must not authenticate. Never a 5xx; every 4xx is in the
//! envelope; a refused request leaves the store as it was.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, Session, TestApp, assert_error, call};
use orgd_core::clock::Clock;

crate::backend_tests!(
    json_endpoints_survive_hostile_bodies,
    duplicate_keys_are_refused_and_change_nothing,
    tokens_that_must_not_authenticate,
    lying_content_length_is_a_4xx,
    query_strings_and_paths_survive_hostile_values,
);

/// Rows per table: a 4xx must not have written anything anywhere.
async fn store_fingerprint(app: &TestApp) -> Vec<(String, i64)> {
    let mut counts = Vec::new();
    for table in [
        "organizations",
        "users",
        "invitations",
        "api_keys",
        "projects",
        "executions",
        "report_files",
        "audit_logs",
        "integrations",
        "ai_provider_keys",
        "execution_links",
        "revoked_tokens",
    ] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&app.db)
                .await
                .unwrap_or(-1);
        counts.push((table.to_string(), n));
    }
    let org: Option<String> = sqlx::query_scalar("SELECT name || ':' || plan || ':' || limit_overrides FROM organizations ORDER BY id LIMIT 1")
        .fetch_optional(&app.db)
        .await
        .unwrap_or(None);
    counts.push((org.unwrap_or_default(), 0));
    counts
}

fn hostile_bodies(valid: &Value) -> Vec<(String, Vec<u8>)> {
    let mut bodies: Vec<(String, Vec<u8>)> = vec![
        ("truncated".into(), b"{\"name\": \"x".to_vec()),
        ("array".into(), b"[{\"name\":\"x\"}]".to_vec()),
        ("string".into(), b"\"hello\"".to_vec()),
        ("number".into(), b"42".to_vec()),
        ("null".into(), b"null".to_vec()),
        (
            "invalid utf-8".into(),
            b"{\"name\":\"\xc3\x28\xff\"}".to_vec(),
        ),
        (
            "deeply nested".into(),
            format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
        ),
    ];
    if let Some(fields) = valid.as_object() {
        for field in fields.keys() {
            for (label, bad) in [
                ("number", json!(123456789)),
                ("negative", json!(-1)),
                ("float", json!(1.5e300)),
                ("array", json!(["x"])),
                ("object", json!({"x": 1})),
                ("bool", json!(true)),
                ("huge string", json!("x".repeat(200_000))),
                ("control chars", json!("a\u{0000}b\u{001b}c")),
            ] {
                let mut body = valid.clone();
                body[field] = bad;
                bodies.push((format!("{field}={label}"), body.to_string().into_bytes()));
            }
        }
    }
    bodies
}

/// Every endpoint that takes a JSON body, with a valid body for it; `run-1` is an execution of
/// `admin`'s organization and `member` one of its developers.
fn json_endpoints(admin: &Session, member: &Session) -> Vec<(Method, String, Value)> {
    vec![
        (
            Method::POST,
            "/api/auth/signup".into(),
            json!({"email": "n@example.com", "password": "Str0ng!pass", "name": "N", "organizationName": "NN"}),
        ),
        (
            Method::POST,
            "/api/auth/login".into(),
            json!({"email": admin.email, "password": "Wr0ng!pass"}),
        ),
        (
            Method::PATCH,
            "/api/organization".into(),
            json!({"name": "Renamed", "aiAnalysisEnabled": false}),
        ),
        (
            Method::PATCH,
            "/api/organization/ai-config".into(),
            json!({"defaultModel": "gpt-6.1-sol", "byok": {"provider": "openai", "apiKey": "sk-x"}}),
        ),
        (
            Method::POST,
            "/api/auth/api-keys".into(),
            json!({"name": "ci"}),
        ),
        (
            Method::POST,
            "/api/invitations".into(),
            json!({"email": "i@example.com", "role": "viewer"}),
        ),
        (
            Method::POST,
            "/api/invitations/accept".into(),
            json!({"token": "ab".repeat(32)}),
        ),
        (
            Method::PATCH,
            format!("/api/users/{}/role", member.user_id),
            json!({"role": "viewer"}),
        ),
        (Method::POST, "/api/projects".into(), json!({"name": "Web"})),
        (
            Method::POST,
            "/api/executions".into(),
            json!({"taskId": "run-2", "status": "PENDING", "trigger": "ci", "groupName": "g"}),
        ),
        (
            Method::PATCH,
            "/api/executions/run-1".into(),
            json!({"status": "FAILED", "error": "boom", "output": "log"}),
        ),
        (
            Method::PUT,
            "/api/integrations/github".into(),
            json!({"token": "ghp_x", "owner": "o", "repo": "r", "enabled": true}),
        ),
        (
            Method::PUT,
            "/api/integrations/slack".into(),
            json!({"webhookUrl": "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX", "events": ["FAILED"]}),
        ),
        (
            Method::POST,
            "/api/linear/issues".into(),
            json!({"taskId": "run-1", "title": "t", "description": "d"}),
        ),
        (
            Method::POST,
            "/api/monday/items".into(),
            json!({"taskId": "run-1", "title": "t"}),
        ),
    ]
}

/// An organization with an admin, a developer and a running execution `run-1`, which the
/// bodies of `json_endpoints` refer to.
async fn organization_with_a_run(backend: Backend) -> (TestApp, Session, Session) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Hostile").await;
    let member = app.add_member(&admin.org_id, "developer").await;
    let (status, _) = call(app.send_json(
        Method::POST,
        "/api/executions",
        &admin.token,
        json!({"taskId": "run-1", "status": "RUNNING"}),
    ))
    .await;
    assert_eq!(status, 201);
    (app, admin, member)
}

async fn json_endpoints_survive_hostile_bodies(backend: Backend) {
    let (app, admin, member) = organization_with_a_run(backend).await;
    for (method, path, valid) in json_endpoints(&admin, &member) {
        for (label, body) in hostile_bodies(&valid) {
            let before = store_fingerprint(&app).await;
            let res = app
                .request(method.clone(), &path)
                .bearer_auth(&admin.token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let text = res.text().await.unwrap_or_default();
            assert!(
                status < 500,
                "{method} {path} with {label}: {status} {text}"
            );
            if status >= 400 {
                let body: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|_| panic!("{method} {path} {label}: not JSON: {text}"));
                assert_eq!(
                    body["success"],
                    json!(false),
                    "{method} {path} {label}: {body}"
                );
                assert!(
                    body["error"].is_string() && body["message"].is_string(),
                    "{method} {path} {label}: {body}"
                );
                assert_eq!(
                    before,
                    store_fingerprint(&app).await,
                    "{method} {path} with {label} changed the store"
                );
            }
        }
    }
}

async fn lying_content_length_is_a_4xx(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Liar").await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let before = store_fingerprint(&app).await;
    let body = r#"{"name":"Short"}"#;
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "PATCH /api/organization HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            admin.token,
            body.len() + 50
        )
        .unwrap();
        // Close our side: the promised bytes never come.
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();
    let status: u16 = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(
        answer.is_empty() || (400..500).contains(&status),
        "{answer}"
    );
    assert_eq!(before, store_fingerprint(&app).await);
}

async fn query_strings_and_paths_survive_hostile_values(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Queries").await;
    let hostile = [
        "%00",
        "%FF%FE",
        "-1",
        "99999999999999999999",
        "%27%3B--",
        &"x".repeat(5000),
    ];
    let paths = [
        "/api/organization/audit-logs?action={}&userId={}&from={}&cursor={}",
        "/api/organization/audit-logs?limit={}",
        "/api/executions?status={}&limit={}&offset={}",
        "/api/users?limit={}&offset={}",
        "/api/invitations?limit={}",
        "/api/executions/{}",
        "/api/executions/{}/reports",
        "/api/executions/run/reports/{}",
        "/api/users/{}",
        "/api/integrations/{}",
        "/api/invitations/validate/{}",
        "/api/projects?limit={}",
    ];
    for template in paths {
        for value in hostile {
            let path = template.replace("{}", value);
            let res = app.get(&path, &admin.token).send().await.unwrap();
            let status = res.status().as_u16();
            let text = res.text().await.unwrap_or_default();
            assert!(status < 500, "GET {path}: {status} {text}");
            if status >= 400 {
                let body: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|_| panic!("GET {path}: not JSON: {text}"));
                assert_eq!(body["success"], json!(false), "GET {path}: {body}");
            }
        }
    }
}

/// `valid` (an object) with `field` named once more, holding `value`.
fn with_duplicate(valid: &Value, field: &str, value: &Value) -> String {
    let text = valid.to_string();
    format!("{},{}:{value}}}", &text[..text.len() - 1], json!(field))
}

/// Sends `body` as JSON with `token`; asserts 400 `Invalid JSON` and an unchanged store.
async fn assert_refused_as_ambiguous(
    app: &TestApp,
    token: &str,
    method: &Method,
    path: &str,
    body: String,
) {
    let before = store_fingerprint(app).await;
    let (status, answer) = call(
        app.request(method.clone(), path)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.clone()),
    )
    .await;
    let context = format!("{method} {path} {body:.200}");
    assert_error(status, &answer, 400, "Invalid JSON");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("more than once")),
        "{context}: {answer}"
    );
    assert_eq!(
        before,
        store_fingerprint(app).await,
        "{context} changed the store"
    );
}

async fn duplicate_keys_are_refused_and_change_nothing(backend: Backend) {
    let (app, admin, member) = organization_with_a_run(backend).await;
    for (method, path, valid) in json_endpoints(&admin, &member) {
        for (field, value) in valid.as_object().unwrap() {
            // The same value twice is refused too: the rule does not depend on the values.
            for second in [value.clone(), json!("other")] {
                let body = with_duplicate(&valid, field, &second);
                assert_refused_as_ambiguous(&app, &admin.token, &method, &path, body).await;
            }
        }
    }
    // Nested objects, and a key spelled with an escape, are no way around it.
    let patch = Method::PATCH;
    for (path, body) in [
        (
            "/api/organization/ai-config",
            r#"{"byok":{"provider":"openai","apiKey":"sk-x","provider":"gemini"}}"#,
        ),
        (
            "/api/organization",
            r#"{"name":"Alpha","n\u0061me":"Beta"}"#,
        ),
        ("/api/organization", r#"{"name":"Alpha","name":"Beta"}"#),
    ] {
        assert_refused_as_ambiguous(&app, &admin.token, &patch, path, body.into()).await;
    }
    // The same body without the duplicate is accepted: the refusal was about the duplicate.
    let (status, body) = call(
        app.request(Method::PATCH, "/api/organization")
            .bearer_auth(&admin.token)
            .header("content-type", "application/json")
            .body(r#"{"name":"Alpha","aiAnalysisEnabled":false}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["organization"]["name"], json!("Alpha"));
}

/// An `Authorization` value that must not authenticate, with what is wrong with it.
type BadAuthorization = (&'static str, String);

async fn tokens_that_must_not_authenticate(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Tokens").await;
    let keeper = app.add_member(&admin.org_id, "developer").await;
    let removed = app.add_member(&admin.org_id, "developer").await;
    let (status, body) = call(
        app.request(Method::DELETE, &format!("/api/users/{}", removed.user_id))
            .bearer_auth(&admin.token),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let now = app.clock.now_ms() / 1000;
    let claims = |sub: &str| {
        json!({"sub": sub, "iss": "orgd", "aud": "orgd-api", "iat": now, "exp": now + 3600,
               "jti": orgd_core::ids::random_hex(16)})
    };
    let secret = app.config.jwt_secret.0.clone();
    let sign = |claims: &Value, alg: Algorithm, key: &[u8]| {
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(key)).unwrap()
    };
    let ours = |claims: &Value| sign(claims, Algorithm::HS256, &secret);
    let changed = |field: &str, value: Option<Value>| {
        let mut c = claims(&admin.user_id);
        match value {
            Some(v) => c[field] = v,
            None => {
                c.as_object_mut().unwrap().remove(field);
            }
        }
        ours(&c)
    };

    // The recipe itself is sound: with nothing wrong, the token works in every accepted form
    // (the scheme is case-insensitive and may be followed by several spaces, RFC 7235).
    let good = ours(&claims(&admin.user_id));
    for form in [
        format!("Bearer {good}"),
        format!("bearer {good}"),
        format!("BEARER   {good}"),
    ] {
        let (status, body) = call(
            app.request(Method::GET, "/api/organization")
                .header("authorization", &form),
        )
        .await;
        assert_eq!(status, 200, "{form}: {body}");
    }

    let payload = good.split('.').nth(1).unwrap();
    let tokens: Vec<BadAuthorization> = vec![
        ("wrong aud", changed("aud", Some(json!("another-api")))),
        ("wrong iss", changed("iss", Some(json!("not-orgd")))),
        ("no exp", changed("exp", None)),
        ("no jti", changed("jti", None)),
        ("empty jti", changed("jti", Some(json!("")))),
        ("no sub", changed("sub", None)),
        ("no aud", changed("aud", None)),
        ("expired", changed("exp", Some(json!(now - 1)))),
        ("unknown sub", ours(&claims("507f191e810c19729de860ea"))),
        ("removed user (issued before)", removed.token.clone()),
        ("removed user (fresh)", ours(&claims(&removed.user_id))),
        (
            "other secret",
            sign(
                &claims(&admin.user_id),
                Algorithm::HS256,
                b"another-secret-another-secret-xx",
            ),
        ),
        (
            "HS512 with our secret",
            sign(&claims(&admin.user_id), Algorithm::HS512, &secret),
        ),
        (
            "alg none",
            format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}."),
        ),
        ("garbage", "garbage".into()),
    ];
    let mut values: Vec<BadAuthorization> = tokens
        .into_iter()
        .map(|(why, token)| (why, format!("Bearer {token}")))
        .collect();
    values.extend([
        ("garbage after the token", format!("Bearer {good} garbage")),
        ("no space", format!("Bearer{good}")),
        ("tab instead of space", format!("Bearer\t{good}")),
        ("no scheme", good.clone()),
        ("another scheme", format!("Basic {good}")),
        ("scheme only", "Bearer".into()),
    ]);

    let endpoints = [
        (Method::GET, "/api/organization".to_string(), None),
        (
            Method::PATCH,
            "/api/organization".to_string(),
            Some(json!({"name": "Hijacked"})),
        ),
        (Method::GET, "/api/executions".to_string(), None),
        (
            Method::POST,
            "/api/executions".to_string(),
            Some(json!({"taskId": "smuggled"})),
        ),
        (
            Method::DELETE,
            format!("/api/users/{}", keeper.user_id),
            None,
        ),
    ];
    for (why, value) in &values {
        for (method, path, body) in &endpoints {
            let before = store_fingerprint(&app).await;
            let mut request = app
                .request(method.clone(), path)
                .header("authorization", value);
            if let Some(body) = body {
                request = request.json(body);
            }
            let (status, answer) = call(request).await;
            assert_eq!(status, 401, "{why}: {method} {path}: {answer}");
            assert_error(status, &answer, 401, "Authentication required");
            assert_eq!(
                before,
                store_fingerprint(&app).await,
                "{why}: {method} {path} changed the store"
            );
        }
    }
}

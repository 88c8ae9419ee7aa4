//! Hostile input on every endpoint that takes a JSON body: truncated JSON, wrong types, nulls,
//! arrays for objects, huge strings, deep nesting, invalid UTF-8, a lying Content-Length.
//! Never a 5xx; every 4xx is in the envelope; a refused request leaves the store as it was.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, call};

crate::backend_tests!(
    json_endpoints_survive_hostile_bodies,
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

async fn json_endpoints_survive_hostile_bodies(backend: Backend) {
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
    let endpoints: Vec<(Method, String, Value)> = vec![
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
    ];
    for (method, path, valid) in endpoints {
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

//! The vault from the outside: no plaintext secret at rest (raw SQLite bytes, PostgreSQL
//! rows) or in logs, ciphertexts bound to their organization and purpose, and key rotation
//! (library and `orgd secrets rotate`).

use std::path::Path;
use std::process::Output;

use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{Running, orgd, signup};
use crate::fakes::{
    ENG_TEAM_ID, FakeTracker, LINEAR_KEY, LINEAR_OAUTH_TOKEN, MONDAY_BOARD, MONDAY_TOKEN,
};
use crate::helpers::{Backend, TestApp, assert_error, call};
use crate::integrations::{get, insert_execution, put, save_linear, save_monday, world};
use crate::trackers::Fakes;
use orgd::config::Secret;
use orgd_core::crypto::{Vault, key_id};
use orgd_core::models::AiProvider;
use orgd_core::secrets::{SecretTable, rotate};

crate::backend_tests!(
    no_plaintext_secret_at_rest,
    ciphertexts_only_open_where_they_were_sealed,
    rotation_reencrypts_everything_and_old_keys_can_go,
);

const BYOK_KEY: &str = "sk-byok-PLAINTEXT-4f1d2c3b4a5968778695a4b3";
const SLACK_URL: &str =
    "https://hooks.slack.com/services/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456789";

/// A first save of every other provider, with a recognisable secret the tracker fakes accept.
fn other_secrets(trackers: &Fakes) -> Vec<(&'static str, Value, &'static str)> {
    let mut saves: Vec<(&'static str, Value, &'static str)> = [
        ("jira", "jira-PLAINTEXT-token-77"),
        ("github", "ghp_PLAINTEXT0123456789abcdef"),
        ("gitlab", "glpat-PLAINTEXT-0123456789"),
        ("azuredevops", "ado-PLAINTEXT-0123456789"),
        ("bitbucket", "bb-PLAINTEXT-0123456789"),
    ]
    .into_iter()
    .map(|(provider, secret)| (provider, trackers.save_body_with(provider, secret), secret))
    .collect();
    saves.push(("slack", json!({"webhookUrl": SLACK_URL}), SLACK_URL));
    saves
}

async fn set_byok(app: &TestApp, token: &str, provider: &str, key: &str) {
    let body = json!({"byok": {"provider": provider, "apiKey": key}});
    let (status, answer) =
        call(app.send_json(Method::PATCH, "/api/organization/ai-config", token, body)).await;
    assert_eq!(status, 200, "{answer}");
}

/// Every row of the tables that could hold a secret, as text (PostgreSQL), or the raw
/// bytes of the database files (SQLite, WAL included).
async fn everything_stored(app: &TestApp, backend: &Backend) -> Vec<u8> {
    match backend {
        Backend::Sqlite => {
            let mut bytes = Vec::new();
            for entry in std::fs::read_dir(app.test_db.dir.path()).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    bytes.extend(std::fs::read(&path).unwrap());
                }
            }
            assert!(bytes.len() > 4096, "the database files were found");
            bytes
        }
        Backend::Postgres(_) => {
            let mut text = String::new();
            for table in [
                "integrations",
                "ai_provider_keys",
                "audit_logs",
                "execution_links",
                "idempotency_keys",
                "organizations",
            ] {
                let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT CAST(row_to_json(t) AS TEXT) FROM {table} t"
                )))
                .fetch_all(&app.db)
                .await
                .unwrap();
                assert!(
                    !rows.is_empty() || table == "idempotency_keys",
                    "{table} is empty"
                );
                text.push_str(&rows.join("\n"));
            }
            text.into_bytes()
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn no_plaintext_secret_at_rest(backend: Backend) {
    let w = world(backend.clone()).await;
    let app = &w.app;
    let admin = app.signup("At Rest Org").await;
    save_linear(app, &admin).await;
    save_monday(app, &admin).await;
    let mut secrets = vec![
        LINEAR_KEY.to_string(),
        MONDAY_TOKEN.to_string(),
        BYOK_KEY.to_string(),
    ];
    for (provider, body, secret) in other_secrets(&w.trackers) {
        let (status, answer) = put(app, &admin.token, provider, body).await;
        assert_eq!(status, 200, "{provider}: {answer}");
        secrets.push(secret.to_string());
        let shown = get(app, &admin.token, provider).await.to_string();
        assert!(
            !shown.contains(secret) && !shown.contains("v1."),
            "{provider} showed its secret: {shown}"
        );
    }
    set_byok(app, &admin.token, "anthropic", BYOK_KEY).await;
    insert_execution(app, &admin.org_id, "run-rest").await;
    let (status, _) = call(
        app.send_json(
            Method::POST,
            "/api/linear/issues",
            &admin.token,
            json!({"taskId": "run-rest", "title": "t"}),
        )
        .header("Idempotency-Key", "rest"),
    )
    .await;
    assert_eq!(status, 201);

    let key = key_id(&app.config.encryption_key.0);
    let sealed: Vec<String> = sqlx::query_scalar(
        "SELECT secret FROM integrations UNION ALL SELECT secret FROM ai_provider_keys",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(sealed.len(), 9);
    assert!(
        sealed.iter().all(|s| s.starts_with(&format!("v1.{key}."))),
        "tagged with the key id: {sealed:?}"
    );

    let stored = everything_stored(app, &backend).await;
    for secret in &secrets {
        assert!(!contains(&stored, secret), "plaintext secret at rest");
        // Nor a recognisable piece of it.
        assert!(
            !contains(&stored, &secret[secret.len() - 12..]),
            "part of a secret at rest"
        );
    }
    assert!(
        contains(&stored, ENG_TEAM_ID),
        "the search does see non-secret settings"
    );
}

async fn ciphertexts_only_open_where_they_were_sealed(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let a = app.signup("Sealed A").await;
    let b = app.signup("Sealed B").await;
    save_linear(app, &a).await;
    save_monday(app, &a).await;
    let (status, _) = put(
        app,
        &b.token,
        "linear",
        json!({"apiKey": LINEAR_OAUTH_TOKEN, "teamId": "ENG"}),
    )
    .await;
    assert_eq!(status, 200);
    insert_execution(app, &a.org_id, "run-a").await;
    insert_execution(app, &b.org_id, "run-b").await;
    let sealed = |org: String, provider: &'static str| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT secret FROM integrations WHERE organization_id = $1 AND provider = $2",
            )
            .bind(org)
            .bind(provider)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    let overwrite = |org: String, provider: &'static str, value: String| {
        let db = app.db.clone();
        async move {
            sqlx::query(
                "UPDATE integrations SET secret = $1 WHERE organization_id = $2 AND provider = $3",
            )
            .bind(value)
            .bind(org)
            .bind(provider)
            .execute(&db)
            .await
            .unwrap();
        }
    };
    let a_linear = sealed(a.org_id.clone(), "linear").await;
    let a_monday = sealed(a.org_id.clone(), "monday").await;

    // A's Linear key copied into B's row does not open for B …
    overwrite(b.org_id.clone(), "linear", a_linear.clone()).await;
    let (status, body) = call(app.send_json(
        Method::POST,
        "/api/linear/issues",
        &b.token,
        json!({"taskId": "run-b", "title": "t"}),
    ))
    .await;
    assert_error(status, &body, 500, "Failed to read integration credentials");
    // … nor as A's Monday token; and a flipped character is caught.
    overwrite(a.org_id.clone(), "monday", a_linear.clone()).await;
    let (status, body) = call(app.send_json(
        Method::POST,
        "/api/monday/items",
        &a.token,
        json!({"taskId": "run-a", "title": "t"}),
    ))
    .await;
    assert_error(status, &body, 500, "Failed to read integration credentials");
    let mut tampered = a_linear.clone().into_bytes();
    let i = tampered.len() - 5;
    tampered[i] = if tampered[i] == b'a' { b'b' } else { b'a' };
    overwrite(
        a.org_id.clone(),
        "linear",
        String::from_utf8(tampered).unwrap(),
    )
    .await;
    let (status, body) = call(app.send_json(
        Method::POST,
        "/api/linear/issues",
        &a.token,
        json!({"taskId": "run-a", "title": "t"}),
    ))
    .await;
    assert_error(status, &body, 500, "Failed to read integration credentials");
    assert!(
        w.linear.created().is_empty() && w.monday.created().is_empty(),
        "nothing reached a provider"
    );
    assert!(!body.to_string().contains("v1."), "{body}");

    // Restored, it works again. (Every stored secret must open first: a ticket's text has
    // all of them redacted, and one that cannot be read cannot be redacted.)
    overwrite(a.org_id.clone(), "linear", a_linear).await;
    overwrite(a.org_id.clone(), "monday", a_monday).await;
    let (status, _) = call(app.send_json(
        Method::POST,
        "/api/linear/issues",
        &a.token,
        json!({"taskId": "run-a", "title": "t"}),
    ))
    .await;
    assert_eq!(status, 201);
}

fn stored_key_ids(rows: &[String]) -> Vec<String> {
    rows.iter()
        .map(|s| s.split('.').nth(1).unwrap_or_default().to_string())
        .collect()
}

async fn all_sealed(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT secret FROM integrations UNION ALL SELECT secret FROM ai_provider_keys",
    )
    .fetch_all(&app.db)
    .await
    .unwrap()
}

async fn rotation_reencrypts_everything_and_old_keys_can_go(backend: Backend) {
    let (key_a, key_b, key_c) = ([0xa1u8; 32], [0xb2u8; 32], [0xc3u8; 32]);
    let linear = FakeTracker::linear().await;
    let monday = FakeTracker::monday().await;
    let trackers = Fakes::spawn().await;
    let (linear_url, monday_url) = (linear.url.clone(), monday.url.clone());
    let app = TestApp::spawn_with(backend, |c| {
        c.linear_api_url = linear_url;
        c.monday_api_url = monday_url;
        c.encryption_key = Secret(key_a);
        trackers.configure(c);
    })
    .await;
    let admin = app.signup("Rotation Org").await;
    save_linear(&app, &admin).await;
    save_monday(&app, &admin).await;
    let (status, _) = put(
        &app,
        &admin.token,
        "slack",
        json!({"webhookUrl": SLACK_URL}),
    )
    .await;
    assert_eq!(status, 200);
    set_byok(&app, &admin.token, "openai", BYOK_KEY).await;
    insert_execution(&app, &admin.org_id, "run-rot").await;
    let issue = json!({"taskId": "run-rot", "title": "t"});
    let item = json!({"taskId": "run-rot", "title": "t"});
    assert_eq!(
        stored_key_ids(&all_sealed(&app).await),
        vec![key_id(&key_a); 4]
    );

    // Key B alone cannot read what A sealed.
    let b_only = app
        .another_instance_with(|c| c.encryption_key = Secret(key_b))
        .await;
    let (status, body) = call(b_only.send_json(
        Method::POST,
        "/api/linear/issues",
        &admin.token,
        issue.clone(),
    ))
    .await;
    assert_error(status, &body, 500, "Failed to read integration credentials");

    // B with A among the old keys reads everything, and seals new values with B.
    let b_and_a = app
        .another_instance_with(|c| {
            c.encryption_key = Secret(key_b);
            c.encryption_keys_old = vec![Secret(key_a)];
        })
        .await;
    let (status, _) = call(b_and_a.send_json(
        Method::POST,
        "/api/linear/issues",
        &admin.token,
        issue.clone(),
    ))
    .await;
    assert_eq!(status, 201);
    let (status, _) = put(&b_and_a, &admin.token, "linear", json!({"teamId": "OPS"})).await;
    assert_eq!(status, 200, "the stored key was opened with the old key");

    // Rotation, as `orgd secrets rotate` runs it.
    let store = orgd_core::db::Db::connect(&app.test_db.url, orgd_core::db::DbTimeouts::command())
        .await
        .unwrap();
    let vault = Vault::new(&key_b, &[Secret(key_a)]);
    let report = rotate(&store, &vault).await.unwrap();
    assert_eq!(
        (
            report.rotated,
            report.current,
            report.skipped,
            report.failed.len()
        ),
        (4, 0, 0, 0)
    );
    assert_eq!(
        stored_key_ids(&all_sealed(&app).await),
        vec![key_id(&key_b); 4]
    );
    let again = rotate(&store, &vault).await.unwrap();
    assert_eq!((again.rotated, again.current), (0, 4));

    // A removed: everything still opens.
    let (status, answer) =
        call(b_only.send_json(Method::POST, "/api/linear/issues", &admin.token, issue)).await;
    assert_eq!(status, 201, "{answer}");
    let (status, answer) =
        call(b_only.send_json(Method::POST, "/api/monday/items", &admin.token, item)).await;
    assert_eq!(status, 201, "{answer}");
    let (status, _) = put(&b_only, &admin.token, "linear", json!({"teamId": "ENG"})).await;
    assert_eq!(status, 200);
    let sealed_byok = orgd_core::ai_config::byok_key(&store, &admin.org_id, AiProvider::Openai)
        .await
        .unwrap()
        .unwrap();
    let opened = Vault::new(&key_b, &[]).open(
        &sealed_byok,
        &SecretTable::AiProviderKeys.binding(&admin.org_id, "openai"),
    );
    assert_eq!(opened.unwrap().0, BYOK_KEY);

    // A value no configured key can open is reported, and the rest still rotates.
    let c_only = app
        .another_instance_with(|c| c.encryption_key = Secret(key_c))
        .await;
    let (status, _) = put(
        &c_only,
        &admin.token,
        "github",
        trackers.save_body_with("github", "ghp_c"),
    )
    .await;
    assert_eq!(status, 200);
    let report = rotate(&store, &vault).await.unwrap();
    assert_eq!((report.rotated, report.current), (0, 4));
    assert_eq!(report.failed.len(), 1);
    assert_eq!(
        (report.failed[0].2.as_str(), report.failed[0].0),
        ("github", SecretTable::Integrations)
    );
    assert_eq!(linear.created().len(), 2);
    assert_eq!(monday.created().len(), 1);
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = orgd(dir);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The binary end to end: tickets with JSON debug logs that never show a secret, then
/// `orgd secrets rotate` from key A to key B, and B alone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_rotate_command_and_logs_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let linear = FakeTracker::linear().await;
    let monday = FakeTracker::monday().await;
    let key_a = orgd_core::ids::random_hex(32);
    let key_b = orgd_core::ids::random_hex(32);
    let jwt = orgd_core::ids::random_hex(24);
    let common = [
        ("JWT_SECRET", jwt.as_str()),
        ("LINEAR_API_URL", linear.url.as_str()),
        ("MONDAY_API_URL", monday.url.as_str()),
        ("ORGD_PUBLIC_URL", "https://orgd.example"),
        ("ORGD_LOG_FORMAT", "json"),
        ("RUST_LOG", "debug"),
    ];
    let start = |key: &str, old: Option<&str>| {
        let mut cmd = orgd(dir.path());
        cmd.envs(common).env("ENCRYPTION_KEY", key);
        if let Some(old) = old {
            cmd.env("ENCRYPTION_KEYS_OLD", old);
        }
        Running::start(cmd)
    };
    let wrong_key = "lin_api_WRONG-key-must-not-be-logged";
    let client = reqwest::Client::new();

    let running = start(&key_a, None);
    let base = running.base.clone();
    let signed_up = signup(&base, "rotate@example.com").await;
    let token = signed_up["token"].as_str().unwrap().to_string();
    let org_id = signed_up["user"]["organizationId"]
        .as_str()
        .unwrap()
        .to_string();
    let send = |method: Method, path: &str, body: Value| {
        client
            .request(method, format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body)
    };
    let status = |res: reqwest::Response| res.status().as_u16();
    assert_eq!(
        status(
            send(
                Method::PUT,
                "/api/integrations/linear",
                json!({"apiKey": wrong_key, "teamId": "ENG"})
            )
            .send()
            .await
            .unwrap()
        ),
        400
    );
    assert_eq!(
        status(
            send(
                Method::PUT,
                "/api/integrations/linear",
                json!({"apiKey": LINEAR_KEY, "teamId": "ENG"})
            )
            .send()
            .await
            .unwrap()
        ),
        200
    );
    assert_eq!(
        status(
            send(
                Method::PUT,
                "/api/integrations/monday",
                json!({"apiKey": MONDAY_TOKEN, "boardId": MONDAY_BOARD})
            )
            .send()
            .await
            .unwrap()
        ),
        200
    );
    assert_eq!(
        status(
            send(
                Method::PATCH,
                "/api/organization/ai-config",
                json!({"byok": {"provider": "gemini", "apiKey": BYOK_KEY}})
            )
            .send()
            .await
            .unwrap()
        ),
        200
    );
    let db = sqlx::AnyPool::connect(&format!(
        "sqlite://{}",
        dir.path().join("data/orgd.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("INSERT INTO executions (id, organization_id, task_id, status, created_at) VALUES ($1, $2, 'cli-run', 'FAILED', 0)")
        .bind(orgd_core::ids::new_id(0))
        .bind(&org_id)
        .execute(&db)
        .await
        .unwrap();
    for _ in 0..2 {
        let res = send(
            Method::POST,
            "/api/linear/issues",
            json!({"taskId": "cli-run", "title": "From the binary"}),
        )
        .header("Idempotency-Key", "cli")
        .send()
        .await
        .unwrap();
        assert_eq!(status(res), 201);
    }
    assert_eq!(
        status(
            send(
                Method::POST,
                "/api/monday/items",
                json!({"taskId": "cli-run", "title": "t", "description": "d"})
            )
            .send()
            .await
            .unwrap()
        ),
        201
    );
    monday.revoke_all();
    assert_eq!(
        status(
            send(
                Method::POST,
                "/api/monday/items",
                json!({"taskId": "cli-run", "title": "t"})
            )
            .send()
            .await
            .unwrap()
        ),
        502
    );
    let (exit, logs) = running.terminate();
    assert!(exit.success());
    assert!(
        logs.contains("hyper") || logs.contains("reqwest") || logs.contains("sqlx"),
        "debug logs were captured"
    );
    for secret in [
        LINEAR_KEY,
        MONDAY_TOKEN,
        BYOK_KEY,
        wrong_key,
        &key_a,
        &key_b,
        &jwt,
        &token,
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    assert_eq!(linear.created().len(), 1);

    // Rotate A → B.
    let out = run(
        dir.path(),
        &["secrets", "rotate"],
        &[("ENCRYPTION_KEY", &key_b), ("ENCRYPTION_KEYS_OLD", &key_a)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("re-encrypted 3 secret(s)"), "{stdout}");
    let out = run(
        dir.path(),
        &["secrets", "rotate"],
        &[("ENCRYPTION_KEY", &key_b)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && stdout.contains("re-encrypted 0 secret(s)")
            && stdout.contains("3 already current"),
        "{stdout}"
    );
    let out = run(
        dir.path(),
        &["secrets", "rotate"],
        &[("ENCRYPTION_KEY", &key_a)],
    );
    assert!(!out.status.success(), "A can no longer open what B sealed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not be decrypted"));
    let out = run(
        dir.path(),
        &["secrets", "rotate"],
        &[("ENCRYPTION_KEY", "nothex")],
    );
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("64 hex characters")
    );

    // B alone serves everything.
    let running = start(&key_b, None);
    let base = running.base.clone();
    let send = |method: Method, path: &str, body: Value| {
        client
            .request(method, format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body)
    };
    assert_eq!(
        status(
            send(
                Method::PUT,
                "/api/integrations/linear",
                json!({"teamId": "OPS"})
            )
            .send()
            .await
            .unwrap()
        ),
        200
    );
    assert_eq!(
        status(
            send(
                Method::POST,
                "/api/linear/issues",
                json!({"taskId": "cli-run", "title": "After rotation"})
            )
            .send()
            .await
            .unwrap()
        ),
        201
    );
    let (exit, _) = running.terminate();
    assert!(exit.success());
    assert_eq!(linear.created().len(), 2);
    assert_eq!(
        linear.created()[1]["teamId"],
        json!(crate::fakes::OPS_TEAM_ID)
    );
}

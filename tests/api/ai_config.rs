//! `GET`/`PATCH /api/organization/ai-config`: the model catalogue (built in, or replaced by
//! configuration), retirement by the service's clock, and BYOK keys that are never shown.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{Running, orgd, signup};
use crate::helpers::{Backend, PASSWORD, Session, TestApp, assert_error, call};
use crate::integrations::audit_details;
use orgd_core::clock::parse_rfc3339;
use orgd_core::models::ModelCatalog;

crate::backend_tests!(
    defaults_choices_and_byok_keys,
    patch_error_table,
    retired_models_are_replaced_by_the_clock,
    the_catalogue_is_configuration,
);

const PATH: &str = "/api/organization/ai-config";

async fn patch(app: &TestApp, token: &str, body: Value) -> (u16, Value) {
    call(app.send_json(Method::PATCH, PATH, token, body)).await
}

/// An instance whose clock reads `at` before anyone signs up.
async fn app_at(backend: Backend, at: &str) -> (TestApp, Session) {
    let app = TestApp::spawn(backend).await;
    app.clock.set(parse_rfc3339(at).unwrap());
    let admin = app.signup("AI Org").await;
    (app, admin)
}

fn ids(data: &Value) -> Vec<&str> {
    data["availableModels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect()
}

async fn defaults_choices_and_byok_keys(backend: Backend) {
    let (app, admin) = app_at(backend, "2026-11-23T12:00:00Z").await;
    let (status, body) = call(app.get(PATH, &admin.token)).await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["defaultModel"], json!("gemini-3.8-flash"));
    assert_eq!(
        ids(data),
        [
            "gemini-3.8-flash",
            "gemini-4-argon",
            "gemini-3.5-flash-lite",
            "gpt-6.1-sol",
            "gpt-6-astra",
            "gpt-6-luna",
            "claude-sonnet-5-5",
            "claude-opus-5-5",
            "claude-haiku-5-5",
            "gemini-2.5-flash",
            "gpt-4o"
        ],
        "claude-3-5-sonnet has retired"
    );
    assert_eq!(
        data["availableModels"][0],
        json!({"id": "gemini-3.8-flash", "provider": "gemini", "retiresAt": null})
    );
    assert_eq!(
        data["availableModels"][9],
        json!({"id": "gemini-2.5-flash", "provider": "gemini", "retiresAt": "2026-12-01T00:00:00.000Z"})
    );
    assert_eq!(
        data["byokConfigured"],
        json!({"gemini": false, "openai": false, "anthropic": false})
    );

    let viewer = app.add_member(&admin.org_id, "viewer").await;
    let (status, seen) = call(app.get(PATH, &viewer.token)).await;
    assert_eq!((status, &seen), (200, &body));
    let (status, answer) = patch(&app, &viewer.token, json!({"defaultModel": "gpt-6.1-sol"})).await;
    assert_error(status, &answer, 403, "Forbidden");

    let key = "sk-proj-BYOK-never-shown-0123456789";
    let (status, answer) =
        patch(&app, &admin.token, json!({"defaultModel": "gpt-6.1-sol", "byok": {"provider": "openai", "apiKey": format!("  {key}  ")}}))
            .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["defaultModel"], json!("gpt-6.1-sol"));
    assert_eq!(
        answer["data"]["byokConfigured"],
        json!({"gemini": false, "openai": true, "anthropic": false})
    );
    assert_eq!(
        answer["data"]["availableModels"],
        body["data"]["availableModels"]
    );
    assert!(!answer.to_string().contains("sk-proj"));
    let (_, shown) = call(app.get(PATH, &viewer.token)).await;
    assert_eq!(shown, answer);

    let (status, _) = patch(&app, &admin.token, json!({"defaultModel": "gpt-6.1-sol"})).await;
    assert_eq!(status, 200);
    let (status, answer) = patch(
        &app,
        &admin.token,
        json!({"removeByok": "openai", "byok": {"provider": "gemini", "apiKey": "g-key"}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["data"]["byokConfigured"],
        json!({"gemini": true, "openai": false, "anthropic": false})
    );
    let (status, answer) = patch(&app, &admin.token, json!({"removeByok": "anthropic"})).await;
    assert_eq!(status, 200, "removing an absent key is fine: {answer}");

    let audit = audit_details(&app, &admin.org_id, "org.ai_config_updated").await;
    assert_eq!(
        audit,
        [
            json!({"defaultModelChanged": true, "byokProviderSet": "openai", "byokProviderRemoved": null}),
            json!({"defaultModelChanged": false, "byokProviderSet": null, "byokProviderRemoved": null}),
            json!({"defaultModelChanged": false, "byokProviderSet": "gemini", "byokProviderRemoved": "openai"}),
            json!({"defaultModelChanged": false, "byokProviderSet": null, "byokProviderRemoved": "anthropic"}),
        ]
    );
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT secret FROM ai_provider_keys WHERE organization_id = $1")
            .bind(&admin.org_id)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].starts_with("v1.") && !stored[0].contains("g-key"));

    // Another organization is untouched.
    let other = app.signup("Other AI Org").await;
    let (_, theirs) = call(app.get(PATH, &other.token)).await;
    assert_eq!(theirs["data"]["defaultModel"], json!("gemini-3.8-flash"));
    assert_eq!(theirs["data"]["byokConfigured"]["gemini"], json!(false));
}

async fn patch_error_table(backend: Backend) {
    let (app, admin) = app_at(backend, "2026-11-23T12:00:00Z").await;
    let cases = [
        (json!({}), "Missing fields"),
        (json!({"unrelated": true}), "Missing fields"),
        (json!({"defaultModel": "gpt-4"}), "Invalid defaultModel"),
        (json!({"defaultModel": null}), "Invalid defaultModel"),
        (json!({"defaultModel": 4}), "Invalid defaultModel"),
        (json!({"byok": null}), "Invalid byok"),
        (json!({"byok": "openai"}), "Invalid byok"),
        (
            json!({"byok": {"provider": "mistral", "apiKey": "k"}}),
            "Invalid byok.provider",
        ),
        (json!({"byok": {"apiKey": "k"}}), "Invalid byok.provider"),
        (
            json!({"byok": {"provider": "openai", "apiKey": "   "}}),
            "Invalid byok.apiKey",
        ),
        (
            json!({"byok": {"provider": "openai", "apiKey": 5}}),
            "Invalid byok.apiKey",
        ),
        (
            json!({"byok": {"provider": "openai", "apiKey": "k".repeat(513)}}),
            "Invalid byok.apiKey",
        ),
        (json!({"removeByok": "mistral"}), "Invalid removeByok"),
        (json!({"removeByok": null}), "Invalid removeByok"),
        (
            json!({"byok": {"provider": "openai", "apiKey": "k"}, "removeByok": "openai"}),
            "Invalid removeByok",
        ),
    ];
    for (body, error) in cases {
        let (status, answer) = patch(&app, &admin.token, body.clone()).await;
        assert_error(status, &answer, 400, error);
    }
    let (status, answer) = call(app.request(Method::PATCH, PATH).bearer_auth(&admin.token)).await;
    assert_error(status, &answer, 400, "Missing fields");
    let (status, answer) = patch(
        &app,
        &admin.token,
        json!({"defaultModel": "claude-3-5-sonnet"}),
    )
    .await;
    assert_error(status, &answer, 400, "Invalid defaultModel");
    assert_eq!(
        answer["message"],
        json!("claude-3-5-sonnet was retired on 2025-10-22; use claude-sonnet-5-5 instead")
    );
    let (status, answer) = patch(
        &app,
        &admin.token,
        json!({"byok": {"provider": "openai", "apiKey": "k".repeat(512)}}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        app.audit_actions(&admin.org_id)
            .await
            .iter()
            .filter(|a| *a == "org.ai_config_updated")
            .count(),
        1
    );
}

async fn retired_models_are_replaced_by_the_clock(backend: Backend) {
    let (app, admin) = app_at(backend, "2026-11-30T12:00:00Z").await;
    let (status, answer) = patch(
        &app,
        &admin.token,
        json!({"defaultModel": "gemini-2.5-flash"}),
    )
    .await;
    assert_eq!(status, 200, "still available the day before: {answer}");
    assert_eq!(answer["data"]["defaultModel"], json!("gemini-2.5-flash"));

    app.clock
        .set(parse_rfc3339("2026-12-01T00:00:00Z").unwrap());
    let (_, login) = app.login(&admin.email, PASSWORD).await;
    let token = login["token"].as_str().unwrap();
    let (status, body) = call(app.get(PATH, token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"]["defaultModel"],
        json!("gemini-3.8-flash"),
        "the replacement is used"
    );
    assert!(!ids(&body["data"]).contains(&"gemini-2.5-flash"));
    let (status, answer) = patch(&app, token, json!({"defaultModel": "gemini-2.5-flash"})).await;
    assert_error(status, &answer, 400, "Invalid defaultModel");
    assert_eq!(
        answer["message"],
        json!("gemini-2.5-flash was retired on 2026-12-01; use gemini-3.8-flash instead")
    );

    app.clock
        .set(parse_rfc3339("2027-01-14T00:00:00Z").unwrap());
    let (_, login) = app.login(&admin.email, PASSWORD).await;
    let token = login["token"].as_str().unwrap();
    let (status, answer) = patch(&app, token, json!({"defaultModel": "gpt-4o"})).await;
    assert_error(status, &answer, 400, "Invalid defaultModel");
    assert!(
        answer["message"].as_str().unwrap().contains("gpt-6-luna"),
        "{answer}"
    );
}

const CUSTOM: &str = r#"{"defaultModel": "house-model", "models": [
    {"id": "house-model", "provider": "openai"},
    {"id": "old-house", "provider": "anthropic", "retiresAt": "2020-01-01", "replacement": "house-model"}
]}"#;

async fn the_catalogue_is_configuration(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.model_catalog = Arc::new(ModelCatalog::from_json(CUSTOM).unwrap())
    })
    .await;
    let admin = app.signup("Custom Catalogue").await;
    let (_, body) = call(app.get(PATH, &admin.token)).await;
    assert_eq!(body["data"]["defaultModel"], json!("house-model"));
    assert_eq!(
        body["data"]["availableModels"],
        json!([{"id": "house-model", "provider": "openai", "retiresAt": null}])
    );
    let (status, answer) = patch(
        &app,
        &admin.token,
        json!({"defaultModel": "gemini-3.8-flash"}),
    )
    .await;
    assert_error(status, &answer, 400, "Invalid defaultModel");
    assert_eq!(
        answer["message"],
        json!("defaultModel must be one of: house-model")
    );
    let (status, answer) = patch(&app, &admin.token, json!({"defaultModel": "old-house"})).await;
    assert_error(status, &answer, 400, "Invalid defaultModel");
}

/// `ORGD_MODEL_CATALOG` through the binary: a valid file replaces the catalogue, a broken
/// one stops the start with a message saying why.
#[tokio::test]
async fn model_catalog_file_replaces_the_builtin() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("models.json");
    std::fs::write(&file, CUSTOM).unwrap();
    let mut cmd = orgd(dir.path());
    cmd.env("ORGD_MODEL_CATALOG", &file);
    let running = Running::start(cmd);
    let token = signup(&running.base, "catalog@example.com").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let body: Value = reqwest::Client::new()
        .get(format!("{}{PATH}", running.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"]["defaultModel"], json!("house-model"));
    running.terminate();

    std::fs::write(&file, r#"{"defaultModel": "missing", "models": []}"#).unwrap();
    let out = orgd(dir.path())
        .env("ORGD_MODEL_CATALOG", &file)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ORGD_MODEL_CATALOG") && err.contains("missing"),
        "{err}"
    );
}

//! AI failure analysis (API.md, "AI failure analysis") against fake OpenAI, Anthropic and
//! Gemini servers on loopback.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::fakes::{FakeTracker, LINEAR_KEY, MONDAY_BOARD, MONDAY_TOKEN};
use crate::helpers::{Backend, Session, TestApp, assert_error, call};
use crate::llm_fakes::{FIX, FakeLlm, Kind, ROOT_CAUSE};
use orgd_core::clock::Clock;

crate::backend_tests!(
    each_provider_and_key_source,
    refusals_before_any_provider_call,
    failed_runs_are_queued_and_survive_a_restart,
    expired_leases_are_retried_once_and_never_run_twice,
    provider_errors_are_classified,
    unusable_answers_are_stored_as_failed,
    secrets_are_redacted_and_the_log_cut_to_budget,
    tickets_carry_the_analysis,
    patch_takes_error_and_output,
    a_retired_default_is_replaced_and_audited,
    one_analysis_of_an_execution_at_a_time,
    a_log_too_long_for_the_model_is_cut_once,
);

const OPENAI_PLATFORM: &str = "sk-platform-openai-0123456789";
const GEMINI_PLATFORM: &str = "AIza-platform-gemini-0123456789";
const ANTHROPIC_BYOK: &str = "sk-ant-byok-0123456789abcdef";
const OPENAI_BYOK: &str = "sk-byok-openai-0123456789abcdef";

struct World {
    app: TestApp,
    openai: FakeLlm,
    anthropic: FakeLlm,
    gemini: FakeLlm,
}

/// An orgd pointed at the three fakes, with platform keys for OpenAI and Gemini.
async fn world(backend: Backend, tweak: impl FnOnce(&mut orgd::Config)) -> World {
    let openai = FakeLlm::start(Kind::OpenAi, &[OPENAI_PLATFORM, OPENAI_BYOK]).await;
    let anthropic = FakeLlm::start(Kind::Anthropic, &[ANTHROPIC_BYOK]).await;
    let gemini = FakeLlm::start(Kind::Gemini, &[GEMINI_PLATFORM]).await;
    let urls = (
        openai.url.clone(),
        anthropic.url.clone(),
        gemini.url.clone(),
    );
    let app = TestApp::spawn_with(backend, move |c| {
        c.ai.openai_api_url = urls.0;
        c.ai.anthropic_api_url = urls.1;
        c.ai.gemini_api_url = urls.2;
        c.ai.openai_api_key = Some(orgd::config::Secret(OPENAI_PLATFORM.into()));
        c.ai.gemini_api_key = Some(orgd::config::Secret(GEMINI_PLATFORM.into()));
        c.provider_timeout = Duration::from_secs(3);
        c.rate_limit_per_minute = 10_000;
        tweak(c);
    })
    .await;
    World {
        app,
        openai,
        anthropic,
        gemini,
    }
}

/// Creates an execution and moves it to `status` with an error and a log.
async fn execution(app: &TestApp, s: &Session, task_id: &str, status: &str, output: &str) {
    let (code, body) = call(app.send_json(
        Method::POST,
        "/api/executions",
        &s.token,
        json!({"taskId": task_id, "status": "RUNNING"}),
    ))
    .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = call(app.send_json(
        Method::PATCH,
        &format!("/api/executions/{task_id}"),
        &s.token,
        json!({"status": status, "error": "AssertionError: expected 200, got 500", "output": output}),
    ))
    .await;
    assert_eq!(code, 200, "{body}");
}

async fn analyze(app: &TestApp, s: &Session, task_id: &str, body: Value) -> (u16, Value) {
    call(app.send_json(
        Method::POST,
        &format!("/api/executions/{task_id}/analysis"),
        &s.token,
        body,
    ))
    .await
}

async fn set_byok(app: &TestApp, s: &Session, provider: &str, key: &str) {
    let (code, body) = call(app.send_json(
        Method::PATCH,
        "/api/organization/ai-config",
        &s.token,
        json!({"byok": {"provider": provider, "apiKey": key}}),
    ))
    .await;
    assert_eq!(code, 200, "{body}");
}

async fn set_switch(app: &TestApp, s: &Session, on: bool) {
    let (code, body) = call(app.send_json(
        Method::PATCH,
        "/api/organization",
        &s.token,
        json!({"aiAnalysisEnabled": on}),
    ))
    .await;
    assert_eq!(code, 200, "{body}");
}

async fn shown_analysis(app: &TestApp, s: &Session, task_id: &str) -> Value {
    let (code, body) = call(app.get(&format!("/api/executions/{task_id}"), &s.token)).await;
    assert_eq!(code, 200, "{body}");
    body["data"]["execution"]["analysis"].clone()
}

async fn analysis_rows(app: &TestApp, org_id: &str) -> Vec<(String, String, i64)> {
    sqlx::query_as(
        "SELECT e.task_id, a.status, a.attempts FROM analyses a JOIN executions e ON e.id = a.execution_id
         WHERE a.organization_id = $1 ORDER BY e.task_id",
    )
    .bind(org_id)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

async fn ai_used(app: &TestApp, s: &Session) -> i64 {
    let (code, body) = call(app.get("/api/organization/usage", &s.token)).await;
    assert_eq!(code, 200, "{body}");
    body["usage"]["aiAnalyses"]["used"].as_i64().unwrap()
}

/// Everything stored in the audit trail of `org_id`, as text.
async fn audit_text(app: &TestApp, org_id: &str) -> String {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, COALESCE(details, '') FROM audit_logs WHERE organization_id = $1",
    )
    .bind(org_id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    rows.iter()
        .map(|(action, details)| format!("{action} {details}\n"))
        .collect()
}

async fn each_provider_and_key_source(backend: Backend) {
    let w = world(backend, |_| {}).await;
    let app = &w.app;
    let admin = app.signup("Analysis Org").await;
    let dev = app.add_member(&admin.org_id, "developer").await;
    execution(app, &admin, "run-1", "FAILED", "step 1\nstep 2 failed").await;

    // OpenAI with the platform key.
    let (code, body) = analyze(app, &dev, "run-1", json!({"model": "gpt-6.1-sol"})).await;
    assert_eq!(code, 201, "{body}");
    let analysis = &body["data"]["analysis"];
    assert_eq!(analysis["status"], "completed");
    assert_eq!(analysis["rootCause"], ROOT_CAUSE);
    assert_eq!(analysis["suggestedFix"], FIX);
    assert_eq!(analysis["model"], "gpt-6.1-sol");
    assert_eq!(analysis["provider"], "openai");
    assert_eq!(analysis["keySource"], "platform");
    assert_eq!(analysis["tokens"], json!({"input": 120, "output": 30}));
    assert!(analysis["createdAt"].is_string() && analysis.get("reason").is_none());
    let seen = w.openai.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/responses");
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {OPENAI_PLATFORM}").as_str())
    );
    let sent = &seen[0].body;
    assert_eq!(sent["model"], "gpt-6.1-sol");
    assert_eq!(sent["store"], false);
    assert_eq!(sent["text"]["format"]["type"], "json_schema");
    assert!(sent["instructions"].is_string() && sent.get("temperature").is_none());
    assert!(
        seen[0].log().contains("expected 200, got 500") && seen[0].log().contains("step 2 failed")
    );

    // Anthropic with the organization's own key.
    set_byok(app, &admin, "anthropic", ANTHROPIC_BYOK).await;
    let (code, body) = analyze(app, &dev, "run-1", json!({"model": "claude-sonnet-5-5"})).await;
    assert_eq!(code, 201, "{body}");
    let analysis = &body["data"]["analysis"];
    assert_eq!(
        (
            analysis["provider"].as_str(),
            analysis["keySource"].as_str()
        ),
        (Some("anthropic"), Some("byok"))
    );
    assert_eq!(
        analysis["rootCause"], ROOT_CAUSE,
        "the thinking block is skipped"
    );
    let seen = w.anthropic.seen();
    assert_eq!(seen[0].path, "/v1/messages");
    assert_eq!(seen[0].header("x-api-key"), Some(ANTHROPIC_BYOK));
    assert_eq!(seen[0].header("anthropic-version"), Some("2023-06-01"));
    assert!(seen[0].body["max_tokens"].is_i64());
    assert_eq!(
        seen[0].body["output_config"]["format"]["type"],
        "json_schema"
    );

    // The organization's default model (Gemini) with the platform key, in the header only.
    let (code, body) = analyze(app, &dev, "run-1", json!({})).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["data"]["analysis"]["model"], "gemini-3.8-flash");
    assert_eq!(
        body["data"]["analysis"]["tokens"],
        json!({"input": 320, "output": 55})
    );
    let seen = w.gemini.seen();
    assert_eq!(
        seen[0].path,
        "/v1beta/models/gemini-3.8-flash:generateContent"
    );
    assert_eq!(seen[0].header("x-goog-api-key"), Some(GEMINI_PLATFORM));
    assert_eq!(seen[0].query, None);
    assert_eq!(
        seen[0].body["generationConfig"]["responseMimeType"],
        "application/json"
    );

    // Saving a BYOK key changes which key pays for the next analysis.
    set_byok(app, &admin, "openai", OPENAI_BYOK).await;
    let (code, body) = analyze(app, &dev, "run-1", json!({"model": "gpt-6-luna"})).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["data"]["analysis"]["keySource"], "byok");
    assert_eq!(
        w.openai.seen()[1].header("authorization"),
        Some(format!("Bearer {OPENAI_BYOK}").as_str())
    );

    // Asking again replaced the analysis; GET and the list show the latest one.
    let shown = shown_analysis(app, &dev, "run-1").await;
    assert_eq!(shown, body["data"]["analysis"]);
    let (_, list) = call(app.get("/api/executions", &dev.token)).await;
    assert_eq!(list["data"]["executions"][0]["analysis"], shown);
    assert_eq!(analysis_rows(app, &admin.org_id).await.len(), 1);
    assert_eq!(ai_used(app, &admin).await, 4);

    let audit = audit_text(app, &admin.org_id).await;
    assert_eq!(audit.matches("execution.analyzed").count(), 4);
    assert!(audit.contains("\"keySource\":\"byok\""), "{audit}");
    for key in [
        OPENAI_PLATFORM,
        GEMINI_PLATFORM,
        ANTHROPIC_BYOK,
        OPENAI_BYOK,
    ] {
        assert!(!audit.contains(key));
        assert!(!body.to_string().contains(key));
    }
    // x-api-key of a developer works too.
    let (code, key) = call(app.send_json(
        Method::POST,
        "/api/auth/api-keys",
        &dev.token,
        json!({"name": "ci"}),
    ))
    .await;
    assert_eq!(code, 201, "{key}");
    let secret = key["apiKey"].as_str().unwrap().to_string();
    let (code, body) = call(
        app.request(Method::POST, "/api/executions/run-1/analysis")
            .header("x-api-key", secret)
            .json(&json!({"model": "gpt-6.1-sol"})),
    )
    .await;
    assert_eq!(code, 201, "{body}");
}

async fn refusals_before_any_provider_call(backend: Backend) {
    let w = world(backend, |c| c.ai.gemini_api_key = None).await;
    let app = &w.app;
    let admin = app.signup("Refusing Org").await;
    let viewer = app.add_member(&admin.org_id, "viewer").await;
    execution(app, &admin, "passed", "PASSED", "ok").await;
    execution(app, &admin, "failed", "ERROR", "boom").await;

    let (code, body) = analyze(app, &viewer, "failed", json!({})).await;
    assert_error(code, &body, 403, "Forbidden");
    let (code, body) = analyze(app, &admin, "nope", json!({})).await;
    assert_error(code, &body, 404, "Execution not found");
    let other = app.signup("Other Org").await;
    let (code, body) = analyze(app, &other, "failed", json!({})).await;
    assert_error(code, &body, 404, "Execution not found");
    let (code, body) = analyze(app, &admin, "passed", json!({})).await;
    assert_error(code, &body, 409, "Execution has not failed");
    for model in [json!("gpt-4"), json!("claude-3-5-sonnet"), json!(7)] {
        let (code, body) = analyze(app, &admin, "failed", json!({"model": model})).await;
        assert_error(code, &body, 400, "Invalid model");
    }

    // No Gemini key anywhere: 503, stored as failed with the reason, nothing counted.
    let (code, body) = analyze(app, &admin, "failed", json!({})).await;
    assert_error(code, &body, 503, "AI provider not configured");
    let shown = shown_analysis(app, &admin, "failed").await;
    assert_eq!(shown["status"], "failed");
    assert_eq!(shown["reason"], "AI provider not configured");
    assert_eq!(shown["keySource"], Value::Null);
    assert_eq!(ai_used(app, &admin).await, 0);
    assert!(w.gemini.seen().is_empty());

    // A queued analysis without a key is stored as failed too.
    execution(app, &admin, "queued-no-key", "FAILED", "boom").await;
    assert_eq!(
        orgd::analyst::run_pending_once(&app.state).await.unwrap(),
        1
    );
    let shown = shown_analysis(app, &admin, "queued-no-key").await;
    assert_eq!(
        (shown["status"].as_str(), shown["reason"].as_str()),
        (Some("failed"), Some("AI provider not configured"))
    );

    // Switch off: 403, and a failing run queues nothing.
    set_switch(app, &admin, false).await;
    let (code, body) = analyze(app, &admin, "failed", json!({})).await;
    assert_error(code, &body, 403, "AI analysis disabled");
    execution(app, &admin, "failed-2", "FAILED", "boom").await;
    let rows = analysis_rows(app, &admin.org_id).await;
    assert!(
        rows.iter().all(|(task, _, _)| task != "failed-2"),
        "{rows:?}"
    );
    assert_eq!(
        orgd::analyst::run_pending_once(&app.state).await.unwrap(),
        0
    );
}

async fn wait_for_status(app: &TestApp, s: &Session, task_id: &str, status: &str) -> Value {
    for _ in 0..100 {
        let shown = shown_analysis(app, s, task_id).await;
        if shown["status"] == status {
            return shown;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{task_id} never reached {status}");
}

async fn failed_runs_are_queued_and_survive_a_restart(backend: Backend) {
    let w = world(backend, |_| {}).await;
    let admin = w.app.signup("Queue Org").await;
    execution(&w.app, &admin, "q-1", "UNSTABLE", "flaky").await;
    execution(&w.app, &admin, "ok-1", "PASSED", "fine").await;
    assert_eq!(
        analysis_rows(&w.app, &admin.org_id).await,
        vec![("q-1".to_string(), "queued".to_string(), 0)]
    );
    assert_eq!(
        shown_analysis(&w.app, &admin, "q-1").await["status"],
        "queued"
    );

    // Turning the switch off keeps queued work from starting.
    set_switch(&w.app, &admin, false).await;
    assert_eq!(
        orgd::analyst::run_pending_once(&w.app.state).await.unwrap(),
        0
    );
    set_switch(&w.app, &admin, true).await;

    // After a restart, the new instance's worker picks up what the old one queued.
    let World { app, gemini, .. } = w;
    let second = app
        .restart_with(|c| c.ai.poll_interval = Duration::from_millis(50))
        .await;
    let shown = wait_for_status(&second, &admin, "q-1", "completed").await;
    assert_eq!(shown["rootCause"], ROOT_CAUSE);
    assert_eq!(shown["keySource"], "platform");
    assert_eq!(gemini.seen().len(), 1);
    let actions = second.audit_actions(&admin.org_id).await;
    assert!(actions.contains(&"execution.analyzed".to_string()));
    let system: Vec<(Option<String>,)> = sqlx::query_as(
        "SELECT user_id FROM audit_logs WHERE organization_id = $1 AND action = 'execution.analyzed'",
    )
    .bind(&admin.org_id)
    .fetch_all(&second.db)
    .await
    .unwrap();
    assert_eq!(system, vec![(None,)]);
    assert_eq!(ai_used(&second, &admin).await, 1);
}

async fn expire_lease(app: &TestApp, task_id: &str, attempts: i64) {
    sqlx::query(
        "UPDATE analyses SET status = 'running', attempts = $1, lease_until = $2
         WHERE execution_id = (SELECT id FROM executions WHERE task_id = $3)",
    )
    .bind(attempts)
    .bind(app.clock.now_ms() - 1)
    .bind(task_id)
    .execute(&app.db)
    .await
    .unwrap();
}

/// Parallel requests for one execution: one runs, the others get 409 while it holds its lease;
/// afterwards (or once a lease has expired) a new request runs again.
async fn one_analysis_of_an_execution_at_a_time(backend: Backend) {
    let w = world(backend, |_| {}).await;
    let app = &w.app;
    let admin = app.signup("Busy Org").await;
    execution(app, &admin, "failed", "FAILED", "boom").await;
    w.gemini.set_delay(Duration::from_millis(1500));
    let ask = || analyze(app, &admin, "failed", json!({}));
    let (a, b, c, d) = tokio::join!(ask(), ask(), ask(), ask());
    let answers = [a, b, c, d];
    let created = answers.iter().filter(|(code, _)| *code == 201).count();
    assert_eq!(created, 1, "{answers:?}");
    for (code, body) in answers.iter().filter(|(code, _)| *code != 201) {
        assert_error(*code, body, 409, "Analysis in progress");
    }
    assert_eq!(w.gemini.seen().len(), 1);
    assert_eq!(ai_used(app, &admin).await, 1);

    w.gemini.set_delay(Duration::ZERO);
    let (code, body) = analyze(app, &admin, "failed", json!({})).await;
    assert_eq!(code, 201, "{body}");
    // A runner that died mid-call leaves a running row whose lease expires: it is taken over.
    expire_lease(app, "failed", 1).await;
    let (code, body) = analyze(app, &admin, "failed", json!({})).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(w.gemini.seen().len(), 3);
}

/// A context-window refusal: the log is cut to a quarter and sent once more; a second
/// refusal is final.
async fn a_log_too_long_for_the_model_is_cut_once(backend: Backend) {
    let w = world(backend, |_| {}).await;
    let app = &w.app;
    let admin = app.signup("Long Log Org").await;
    let log: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    execution(app, &admin, "long", "FAILED", &log).await;
    let gpt = json!({"model": "gpt-6.1-sol"});
    let too_long = json!({"error": {"message": "This model's maximum context length is 8192 tokens.",
        "type": "invalid_request_error", "param": "input", "code": "context_length_exceeded"}});

    w.openai.inject(1, (400, vec![], too_long.clone()));
    let (code, body) = analyze(app, &admin, "long", gpt.clone()).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["data"]["analysis"]["status"], "completed");
    let seen = w.openai.seen();
    assert_eq!(seen.len(), 2);
    let (first, second) = (seen[0].log().len(), seen[1].log().len());
    assert!(second * 3 < first, "{first} -> {second}");
    assert!(
        seen[1].log().contains("line 19999"),
        "the end of the log is kept"
    );

    w.openai.inject(2, (400, vec![], too_long));
    let (code, body) = analyze(app, &admin, "long", gpt).await;
    assert_error(code, &body, 502, "Provider error");
    assert_eq!(w.openai.seen().len(), 4, "cut once, never twice");
    let shown = shown_analysis(app, &admin, "long").await;
    assert_eq!(shown["status"], "failed");
    assert_eq!(
        shown["reason"],
        "The AI provider refused the request (the log is too long for the model)"
    );
}

async fn expired_leases_are_retried_once_and_never_run_twice(backend: Backend) {
    let w = world(backend, |_| {}).await;
    let app = &w.app;
    let admin = app.signup("Lease Org").await;
    execution(app, &admin, "died-once", "FAILED", "x").await;
    execution(app, &admin, "died-twice", "FAILED", "x").await;
    expire_lease(app, "died-once", 1).await;
    expire_lease(app, "died-twice", 2).await;
    assert_eq!(
        orgd::analyst::run_pending_once(&app.state).await.unwrap(),
        1
    );
    let shown = shown_analysis(app, &admin, "died-once").await;
    assert_eq!(shown["status"], "completed");
    let shown = shown_analysis(app, &admin, "died-twice").await;
    assert_eq!(shown["status"], "failed");
    assert!(shown["reason"].as_str().unwrap().contains("interrupted"));
    assert_eq!(w.gemini.seen().len(), 1);

    // A queued analysis of an execution deleted meanwhile is dropped without a call.
    execution(app, &admin, "deleted", "FAILED", "x").await;
    let (code, _) = call(
        app.request(Method::DELETE, "/api/executions/deleted")
            .bearer_auth(&admin.token),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        orgd::analyst::run_pending_once(&app.state).await.unwrap(),
        1
    );
    assert!(
        analysis_rows(app, &admin.org_id)
            .await
            .iter()
            .all(|(t, _, _)| t != "deleted")
    );
    assert_eq!(w.gemini.seen().len(), 1);

    // A running row whose lease is still valid is left alone.
    execution(app, &admin, "in-flight", "FAILED", "x").await;
    sqlx::query("UPDATE analyses SET status = 'running', attempts = 1, lease_until = $1 WHERE status = 'queued'")
        .bind(app.clock.now_ms() + 60_000)
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(
        orgd::analyst::run_pending_once(&app.state).await.unwrap(),
        0
    );

    // Two instances draining one queue in parallel run every row exactly once.
    for i in 0..6 {
        execution(app, &admin, &format!("par-{i}"), "FAILED", "x").await;
    }
    let other = app.another_instance().await;
    let (a, b) = (app.state.clone(), other.state.clone());
    let one = tokio::spawn(async move { orgd::analyst::run_pending_once(&a).await.unwrap() });
    let two = tokio::spawn(async move { orgd::analyst::run_pending_once(&b).await.unwrap() });
    let ran = one.await.unwrap() + two.await.unwrap();
    assert_eq!(ran, 6);
    assert_eq!(w.gemini.seen().len(), 7);
    for i in 0..6 {
        let shown = shown_analysis(app, &admin, &format!("par-{i}")).await;
        assert_eq!(shown["status"], "completed");
    }
}

async fn provider_errors_are_classified(backend: Backend) {
    let w = world(backend, |_| {}).await;
    let app = &w.app;
    let admin = app.signup("Errors Org").await;
    execution(app, &admin, "e-1", "FAILED", "x").await;
    let gpt = json!({"model": "gpt-6.1-sol"});

    // A rejected key: 502 in our words; the provider's message never shows.
    set_byok(app, &admin, "openai", "sk-wrong-key-000000000").await;
    let (code, body) = analyze(app, &admin, "e-1", gpt.clone()).await;
    assert_error(code, &body, 502, "Provider error");
    let text = body.to_string();
    assert!(
        !text.contains("sk-wrong") && !text.contains("Incorrect API key"),
        "{text}"
    );
    let shown = shown_analysis(app, &admin, "e-1").await;
    assert_eq!(shown["status"], "failed");
    assert_eq!(shown["reason"], "The AI provider refused the API key");
    assert_eq!(w.openai.seen().len(), 1, "a rejected key is not retried");
    let audit = audit_text(app, &admin.org_id).await;
    assert!(!audit.contains("sk-wrong"));

    // Rate limited once, then an answer: waited out inside the request.
    set_byok(app, &admin, "openai", OPENAI_BYOK).await;
    let limited = json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}});
    w.openai
        .inject(1, (429, vec![("retry-after", "1".into())], limited.clone()));
    let (code, body) = analyze(app, &admin, "e-1", gpt.clone()).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(w.openai.seen().len(), 3);

    // Still rate limited after 3 attempts: 503 with Retry-After.
    w.openai
        .inject(3, (429, vec![("retry-after", "0".into())], limited));
    let response = app
        .send_json(
            Method::POST,
            "/api/executions/e-1/analysis",
            &admin.token,
            gpt.clone(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "0");
    let (code, body) = crate::helpers::read(response).await;
    assert_error(code, &body, 503, "Provider rate limited");
    assert_eq!(w.openai.seen().len(), 6);

    // Out of credit: not retried.
    let quota = json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}});
    w.openai.inject(1, (429, vec![], quota));
    let (code, body) = analyze(app, &admin, "e-1", gpt).await;
    assert_error(code, &body, 502, "Provider error");
    assert_eq!(w.openai.seen().len(), 7);

    // Anthropic overloaded (529) once, then an answer; overloaded throughout → 503.
    set_byok(app, &admin, "anthropic", ANTHROPIC_BYOK).await;
    let overloaded =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    w.anthropic.inject(1, (529, vec![], overloaded.clone()));
    let claude = json!({"model": "claude-haiku-5-5"});
    let (code, body) = analyze(app, &admin, "e-1", claude.clone()).await;
    assert_eq!(code, 201, "{body}");
    w.anthropic.inject(3, (529, vec![], overloaded));
    let (code, body) = analyze(app, &admin, "e-1", claude).await;
    assert_error(code, &body, 503, "Provider unavailable");
    assert_eq!(w.anthropic.seen().len(), 5);
    assert_eq!(
        shown_analysis(app, &admin, "e-1").await["reason"],
        "The AI provider is overloaded"
    );
    // Every call that reached a provider counts.
    assert_eq!(ai_used(app, &admin).await, 6);

    // Unreachable: 502, not counted.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let down = app
        .another_instance_with(|c| c.ai.gemini_api_url = closed)
        .await;
    let (code, body) = analyze(&down, &admin, "e-1", json!({})).await;
    assert_error(code, &body, 502, "Provider unavailable");
    assert_eq!(ai_used(app, &admin).await, 6);
}

async fn unusable_answers_are_stored_as_failed(backend: Backend) {
    let w = world(backend, |_| {}).await;
    let app = &w.app;
    let admin = app.signup("Unusable Org").await;
    execution(app, &admin, "u-1", "FAILED", "x").await;

    let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 9}});
    w.gemini.inject(1, (200, vec![], blocked));
    let (code, body) = analyze(app, &admin, "u-1", json!({})).await;
    assert_eq!(code, 201, "{body}");
    let analysis = &body["data"]["analysis"];
    assert_eq!(analysis["status"], "failed");
    assert!(analysis["reason"].as_str().unwrap().contains("safety"));
    assert_eq!(analysis["tokens"]["input"], 9);
    assert_eq!(w.gemini.seen().len(), 1, "a safety block is not retried");

    w.openai
        .set_answer_text("Sure! The root cause is probably flaky tests.");
    let (code, body) = analyze(app, &admin, "u-1", json!({"model": "gpt-6-astra"})).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["data"]["analysis"]["status"], "failed");
    assert_eq!(
        body["data"]["analysis"]["reason"],
        "The model's answer was not the requested JSON"
    );

    set_byok(app, &admin, "anthropic", ANTHROPIC_BYOK).await;
    let refusal = json!({"type": "message", "content": [], "stop_reason": "refusal",
        "stop_details": {"type": "refusal", "category": "cyber"}, "usage": {"input_tokens": 5, "output_tokens": 0}});
    w.anthropic.inject(1, (200, vec![], refusal));
    let (code, body) = analyze(app, &admin, "u-1", json!({"model": "claude-opus-5-5"})).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        body["data"]["analysis"]["reason"],
        "The model refused to answer"
    );
    assert_eq!(ai_used(app, &admin).await, 3);
}

async fn secrets_are_redacted_and_the_log_cut_to_budget(backend: Backend) {
    let trackers = crate::trackers::Fakes::spawn().await;
    let w = world(backend, |c| {
        c.ai.log_budget_bytes = 2000;
        trackers.configure(c);
    })
    .await;
    let app = &w.app;
    let admin = app.signup("Secret Org").await;
    let github_token = "ghp_secretGithubToken0123456789";
    let (code, body) = call(app.send_json(
        Method::PUT,
        "/api/integrations/github",
        &admin.token,
        trackers.save_body_with("github", github_token),
    ))
    .await;
    assert_eq!(code, 200, "{body}");
    set_byok(app, &admin, "anthropic", ANTHROPIC_BYOK).await;
    let output = format!(
        "{}\nSTART-OF-TAIL using {github_token} and {ANTHROPIC_BYOK} and {GEMINI_PLATFORM}\nlast line",
        "early noise line\n".repeat(500)
    );
    execution(app, &admin, "s-1", "FAILED", &output).await;
    let (code, body) = analyze(app, &admin, "s-1", json!({})).await;
    assert_eq!(code, 201, "{body}");
    let log = w.gemini.seen()[0].log();
    assert!(
        log.contains("START-OF-TAIL using [REDACTED] and [REDACTED] and [REDACTED]"),
        "{log}"
    );
    for secret in [github_token, ANTHROPIC_BYOK, GEMINI_PLATFORM] {
        assert!(!log.contains(secret));
    }
    assert!(log.contains("expected 200, got 500") && log.ends_with("last line"));
    assert!(log.len() <= 2000 + 64, "{}", log.len());
    assert!(log.matches("early noise line").count() < 120);
}

async fn tickets_carry_the_analysis(backend: Backend) {
    let linear = FakeTracker::linear().await;
    let monday = FakeTracker::monday().await;
    let (linear_url, monday_url) = (linear.url.clone(), monday.url.clone());
    let w = world(backend, move |c| {
        c.linear_api_url = linear_url;
        c.monday_api_url = monday_url;
    })
    .await;
    let app = &w.app;
    let admin = app.signup("Ticket Org").await;
    let (code, body) = call(app.send_json(
        Method::PUT,
        "/api/integrations/linear",
        &admin.token,
        json!({"apiKey": LINEAR_KEY, "teamId": "ENG"}),
    ))
    .await;
    assert_eq!(code, 200, "{body}");
    execution(app, &admin, "t-1", "FAILED", "x").await;
    let (code, body) = analyze(app, &admin, "t-1", json!({})).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = call(app.send_json(
        Method::POST,
        "/api/linear/issues",
        &admin.token,
        json!({"taskId": "t-1", "title": "Login broken"}),
    ))
    .await;
    assert_eq!(code, 201, "{body}");
    let created = linear.created();
    assert_eq!(
        created[0]["description"],
        json!(format!(
            "## Root Cause\n{ROOT_CAUSE}\n\n## Suggested Fix\n{FIX}"
        ))
    );
    // The caller's own description wins.
    let (code, _) = call(app.send_json(
        Method::POST,
        "/api/linear/issues",
        &admin.token,
        json!({"taskId": "t-1", "title": "Again", "description": "mine"}),
    ))
    .await;
    assert_eq!(code, 201);
    assert_eq!(linear.created()[1]["description"], "mine");

    // Monday.com gets the analysis as escaped HTML.
    let (code, body) = call(app.send_json(
        Method::PUT,
        "/api/integrations/monday",
        &admin.token,
        json!({"apiKey": MONDAY_TOKEN, "boardId": MONDAY_BOARD, "groupId": "bugs"}),
    ))
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = call(app.send_json(
        Method::POST,
        "/api/monday/items",
        &admin.token,
        json!({"taskId": "t-1", "title": "Login broken"}),
    ))
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        monday.updates()[0]["body"],
        json!(format!(
            "<h2>Root Cause</h2><p>{ROOT_CAUSE}</p><h2>Suggested Fix</h2><p>{FIX}</p>"
        ))
    );

    // Without a completed analysis and without a description, nothing is invented.
    execution(app, &admin, "t-2", "FAILED", "x").await;
    let (code, _) = call(app.send_json(
        Method::POST,
        "/api/linear/issues",
        &admin.token,
        json!({"taskId": "t-2", "title": "No analysis"}),
    ))
    .await;
    assert_eq!(code, 201);
    assert_eq!(linear.created()[2]["description"], Value::Null);
}

async fn patch_takes_error_and_output(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Patch Org").await;
    execution(&app, &admin, "p-1", "FAILED", "x").await;
    let patch =
        |body: Value| app.send_json(Method::PATCH, "/api/executions/p-1", &admin.token, body);
    let (code, body) = call(patch(json!({"error": "e".repeat(64 * 1024 + 1)}))).await;
    assert_error(code, &body, 400, "Invalid error");
    let (code, body) = call(patch(json!({"error": 5}))).await;
    assert_error(code, &body, 400, "Invalid error");
    // The log is replaced; only its last 256 KiB are kept, cut on a character boundary.
    let long = format!("{}{}END", "a".repeat(100), "é".repeat(140 * 1024));
    let (code, body) = call(patch(json!({"error": "short", "output": long}))).await;
    assert_eq!(code, 200, "{body}");
    let (_, body) = call(app.get("/api/executions/p-1", &admin.token)).await;
    let output = body["data"]["execution"]["output"].as_str().unwrap();
    assert!(output.len() <= 256 * 1024 && output.len() > 256 * 1024 - 2);
    assert!(output.starts_with('é') && output.ends_with("END"));
    assert_eq!(body["data"]["execution"]["error"], "short");
}

async fn a_retired_default_is_replaced_and_audited(backend: Backend) {
    let w = world(backend, |_| {}).await;
    let app = &w.app;
    app.clock
        .set(orgd_core::clock::parse_rfc3339("2026-12-05T10:00:00Z").unwrap());
    let admin = app.signup("Retired Org").await;
    // Chosen before it retired on 2026-12-01.
    sqlx::query("UPDATE organizations SET ai_default_model = 'gemini-2.5-flash' WHERE id = $1")
        .bind(&admin.org_id)
        .execute(&app.db)
        .await
        .unwrap();
    app.organization_changed(&admin.org_id).await;
    execution(app, &admin, "r-1", "FAILED", "x").await;
    let (code, body) = analyze(app, &admin, "r-1", json!({})).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["data"]["analysis"]["model"], "gemini-3.8-flash");
    assert_eq!(w.gemini.seen()[0].body.get("model"), None);
    assert!(w.gemini.seen()[0].path.contains("gemini-3.8-flash"));
    let audit = audit_text(app, &admin.org_id).await;
    assert!(
        audit.contains("\"replacedModel\":\"gemini-2.5-flash\""),
        "{audit}"
    );
}

//! `GET /metrics`: requests by route template and status, rate-limit refusals by scope,
//! provider calls by outcome (against the fake trackers and a fake OpenAI), the database pool;
//! and never an id, email or secret in the text.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::fakes::{Behaviour, LINEAR_KEY, MONDAY_TOKEN, linear_auth_error, linear_rate_limited};
use crate::helpers::{Backend, PASSWORD, TestApp, assert_error, call};
use crate::integrations::{insert_execution, put, save_linear, save_monday, world};
use crate::llm_fakes::{FakeLlm, Kind};

crate::backend_tests!(
    requests_are_counted_by_route_template_method_and_status,
    auth_refusals_and_login_lockouts_are_counted_by_scope,
    tracker_calls_are_counted_by_provider_and_outcome,
    every_ai_attempt_is_counted_by_outcome,
    database_pool_gauges_are_read_at_scrape_time,
);

/// Scrapes `/metrics` with no credentials: 200 in the Prometheus text format, never counted
/// in a rate-limit bucket.
async fn scrape(app: &TestApp) -> String {
    let res = app
        .request(Method::GET, "/metrics")
        .send()
        .await
        .expect("scrape");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(!res.headers().contains_key("x-ratelimit-limit"));
    res.text().await.expect("text")
}

#[track_caller]
fn assert_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "missing `{line}` in:\n{text}"
    );
}

/// The value of the sample whose name and labels are exactly `series`.
#[track_caller]
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .expect("a number")
}

#[track_caller]
fn assert_absent(text: &str, values: &[&str]) {
    for value in values {
        assert!(!text.contains(value), "`{value}` leaked into:\n{text}");
    }
}

async fn requests_are_counted_by_route_template_method_and_status(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.rate_limit_per_minute = 4).await;
    let admin = app.signup("Metrics Org").await;
    let org = || app.get("/api/organization", &admin.token);
    assert_eq!(call(org()).await.0, 200);
    let me = format!("/api/users/{}", admin.user_id);
    assert_eq!(call(app.get(&me, &admin.token)).await.0, 200);
    let nobody = "/api/users/0123456789abcdef01234567";
    let (status, body) = call(app.get(nobody, &admin.token)).await;
    assert_error(status, &body, 404, "User not found");
    assert_eq!(call(org()).await.0, 200);
    let (status, body) = call(org()).await;
    assert_error(status, &body, 429, "Too Many Requests");
    let unknown = format!("/api/unknown/{}", admin.org_id);
    let (status, body) = call(app.get(&unknown, &admin.token)).await;
    assert_error(status, &body, 404, "Not found");

    let text = scrape(&app).await;
    for line in [
        r#"orgd_http_requests_total{route="/api/auth/signup",method="POST",status="201"} 1"#,
        r#"orgd_http_requests_total{route="/api/organization",method="GET",status="200"} 2"#,
        r#"orgd_http_requests_total{route="/api/organization",method="GET",status="429"} 1"#,
        r#"orgd_http_requests_total{route="/api/users/{id}",method="GET",status="200"} 1"#,
        r#"orgd_http_requests_total{route="/api/users/{id}",method="GET",status="404"} 1"#,
        r#"orgd_http_requests_total{route="unmatched",method="GET",status="404"} 1"#,
        r#"orgd_http_request_duration_seconds_count{route="/api/organization",method="GET"} 3"#,
        r#"orgd_http_request_duration_seconds_bucket{route="/api/organization",method="GET",le="+Inf"} 3"#,
        r#"orgd_rate_limit_refusals_total{scope="api"} 1"#,
        r#"orgd_rate_limit_refusals_total{scope="ingest"} 0"#,
        r#"orgd_rate_limit_refusals_total{scope="auth"} 0"#,
        r#"orgd_rate_limit_refusals_total{scope="login_lockout"} 0"#,
    ] {
        assert_line(&text, line);
    }
    let requests = text
        .lines()
        .filter(|l| l.starts_with("orgd_http_requests_total{"))
        .count();
    assert_eq!(
        requests, 6,
        "one series per route, method and status:\n{text}"
    );
    // Buckets are cumulative and end at the count; the sum is a plausible time.
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.starts_with(
                r#"orgd_http_request_duration_seconds_bucket{route="/api/organization",method="GET","#,
            )
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 14);
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    let sum = sample(
        &text,
        r#"orgd_http_request_duration_seconds_sum{route="/api/organization",method="GET"}"#,
    );
    assert!(sum > 0.0 && sum < 30.0, "{sum}");
    assert_absent(
        &text,
        &[
            &admin.org_id,
            &admin.user_id,
            &admin.token,
            &admin.email,
            "0123456789abcdef01234567",
            "/api/unknown",
        ],
    );

    // Public and never limited: scraped again past the organization's limit, without a token,
    // and counted under its own route.
    let text = scrape(&app).await;
    assert_line(
        &text,
        r#"orgd_http_requests_total{route="/metrics",method="GET",status="200"} 1"#,
    );
    assert_line(&text, r#"orgd_rate_limit_refusals_total{scope="api"} 1"#);
}

async fn auth_refusals_and_login_lockouts_are_counted_by_scope(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.auth_rate_limit_per_minute = 7).await;
    let admin = app.signup("Lockout Org").await;
    for _ in 0..5 {
        let (status, body) = app.login(&admin.email, "Wrong!pass1").await;
        assert_error(status, &body, 401, "Authentication required");
    }
    let (status, body) = app.login(&admin.email, PASSWORD).await;
    assert_error(status, &body, 429, "Account temporarily locked");
    let (status, body) = app.login(&admin.email, PASSWORD).await;
    assert_error(status, &body, 429, "Too Many Requests");

    let text = scrape(&app).await;
    for line in [
        r#"orgd_rate_limit_refusals_total{scope="api"} 0"#,
        r#"orgd_rate_limit_refusals_total{scope="auth"} 1"#,
        r#"orgd_rate_limit_refusals_total{scope="login_lockout"} 1"#,
        r#"orgd_http_requests_total{route="/api/auth/login",method="POST",status="401"} 5"#,
        r#"orgd_http_requests_total{route="/api/auth/login",method="POST",status="429"} 2"#,
    ] {
        assert_line(&text, line);
    }
    assert_absent(&text, &[&admin.email, PASSWORD, "Wrong!pass1"]);
}

/// The samples of `provider`: ok, client_error, rate_limited, server_error, unreachable.
fn provider_calls(text: &str, provider: &str) -> [f64; 5] {
    [
        "ok",
        "client_error",
        "rate_limited",
        "server_error",
        "unreachable",
    ]
    .map(|outcome| {
        sample(
            text,
            &format!(r#"orgd_provider_calls_total{{provider="{provider}",outcome="{outcome}"}}"#),
        )
    })
}

async fn tracker_calls_are_counted_by_provider_and_outcome(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Provider Org").await;
    let text = scrape(app).await;
    assert_eq!(provider_calls(&text, "linear"), [0.0; 5]);

    // The credential check on save and the ticket go through the same client.
    save_linear(app, &admin).await;
    insert_execution(app, &admin.org_id, "run-m").await;
    let (status, body) = call(app.send_json(
        Method::POST,
        "/api/linear/issues",
        &admin.token,
        json!({"taskId": "run-m", "title": "Broken"}),
    ))
    .await;
    assert_eq!(status, 201, "{body}");
    let text = scrape(app).await;
    assert_line(
        &text,
        r#"orgd_provider_calls_total{provider="linear",outcome="ok"} 2"#,
    );

    // One call each (none of these is retried): refused key, 500, a long rate limit, timeout.
    let save = |body: Value| put(app, &admin.token, "linear", body);
    let key = json!({"apiKey": LINEAR_KEY, "teamId": "ENG"});
    w.linear
        .inject("*", 1, Behaviour::status(400, linear_auth_error()));
    let (status, body) = save(key.clone()).await;
    assert_error(status, &body, 400, "Invalid credentials");
    w.linear.inject(
        "*",
        1,
        Behaviour::status(500, json!({"errors": [{"message": "boom"}]})),
    );
    let (status, body) = save(key.clone()).await;
    assert_error(status, &body, 502, "Provider error");
    let far = orgd_core::clock::Clock::now_ms(&*app.clock) + 120_000;
    w.linear.inject("*", 1, linear_rate_limited(far));
    let (status, body) = save(key.clone()).await;
    assert_error(status, &body, 503, "Provider rate limited");
    w.linear
        .inject("*", 1, Behaviour::DelayBefore(Duration::from_secs(3)));
    let (status, body) = save(key).await;
    assert_error(status, &body, 502, "Provider unavailable");
    save_monday(app, &admin).await;

    let text = scrape(app).await;
    assert_eq!(provider_calls(&text, "linear"), [2.0, 1.0, 1.0, 1.0, 1.0]);
    assert_eq!(
        provider_calls(&text, "linear").iter().sum::<f64>(),
        w.linear.seen().len() as f64,
        "every request the fake saw is counted once"
    );
    assert_eq!(provider_calls(&text, "monday"), [1.0, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!(provider_calls(&text, "openai"), [0.0; 5]);
    assert_absent(
        &text,
        &[LINEAR_KEY, MONDAY_TOKEN, &admin.org_id, "run-m", "ENG"],
    );
}

/// A URL on which nothing listens.
fn closed_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}", listener.local_addr().expect("addr"))
}

async fn every_ai_attempt_is_counted_by_outcome(backend: Backend) {
    const OPENAI_KEY: &str = "sk-metrics-openai-0123456789";
    const GEMINI_KEY: &str = "AIza-metrics-gemini-0123456789";
    let openai = FakeLlm::start(Kind::OpenAi, &[OPENAI_KEY]).await;
    let (openai_url, gemini_url) = (openai.url.clone(), closed_url());
    let app = TestApp::spawn_with(backend, move |c| {
        c.ai.openai_api_url = openai_url;
        c.ai.openai_api_key = Some(orgd::config::Secret(OPENAI_KEY.into()));
        c.ai.gemini_api_url = gemini_url;
        c.ai.gemini_api_key = Some(orgd::config::Secret(GEMINI_KEY.into()));
        c.provider_timeout = Duration::from_secs(3);
    })
    .await;
    let admin = app.signup("AI Metrics Org").await;
    insert_execution(&app, &admin.org_id, "ai-run-1").await;
    let analyze = |body: Value| {
        call(app.send_json(
            Method::POST,
            "/api/executions/ai-run-1/analysis",
            &admin.token,
            body,
        ))
    };
    let gpt = json!({"model": "gpt-6.1-sol"});

    let (status, body) = analyze(gpt.clone()).await;
    assert_eq!(status, 201, "{body}");
    // Overloaded three times: every attempt is a call.
    let boom = json!({"error": {"message": "boom", "type": "server_error"}});
    openai.inject(3, (500, vec![], boom));
    let (status, body) = analyze(gpt.clone()).await;
    assert_error(status, &body, 503, "Provider unavailable");
    let rejected = json!({"error": {"message": "Incorrect API key", "code": "invalid_api_key"}});
    openai.inject(1, (401, vec![], rejected));
    let (status, body) = analyze(gpt).await;
    assert_error(status, &body, 502, "Provider error");
    // The default model is Gemini's, whose URL has nothing listening.
    let (status, body) = analyze(json!({})).await;
    assert_error(status, &body, 502, "Provider unavailable");

    let text = scrape(&app).await;
    assert_eq!(provider_calls(&text, "openai"), [1.0, 1.0, 0.0, 3.0, 0.0]);
    assert_eq!(
        provider_calls(&text, "openai").iter().sum::<f64>(),
        openai.seen().len() as f64
    );
    assert_eq!(provider_calls(&text, "gemini"), [0.0, 0.0, 0.0, 0.0, 1.0]);
    assert_eq!(provider_calls(&text, "anthropic"), [0.0; 5]);
    assert_eq!(provider_calls(&text, "linear"), [0.0; 5]);
    assert_absent(&text, &[OPENAI_KEY, GEMINI_KEY, &admin.org_id, "ai-run-1"]);
}

async fn database_pool_gauges_are_read_at_scrape_time(backend: Backend) {
    let max = match backend {
        Backend::Sqlite => 8.0,
        Backend::Postgres(_) => 16.0,
    };
    let app = TestApp::spawn(backend).await;
    app.signup("Pool Org").await;
    let text = scrape(&app).await;
    assert_line(&text, "# TYPE orgd_db_pool_connections gauge");
    assert_line(&text, &format!("orgd_db_pool_max_connections {max}"));
    let idle = sample(&text, r#"orgd_db_pool_connections{state="idle"}"#);
    let in_use = sample(&text, r#"orgd_db_pool_connections{state="in_use"}"#);
    // The signup's connection stays open in the pool (idle, or still being handed back).
    assert!((1.0..=max).contains(&(idle + in_use)), "{idle} + {in_use}");
}

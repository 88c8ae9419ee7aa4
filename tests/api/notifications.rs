//! Events leave orgd through the outbox: Slack messages (content, filter, analysis wait,
//! pacing, digests, permanent failures), usage thresholds sent once, and delivery after a
//! restart. The service runs on a manual clock, so due times and pacing turns move only when a
//! test advances it; the fake Slack is on loopback.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, Session, TestApp, call};
use crate::llm_fakes::{FakeLlm, Kind, ROOT_CAUSE};
use orgd_core::clock::Clock;
use orgd_fakes::common::Behaviour;
use orgd_fakes::slack::{FakeSlack, SLACK_ARCHIVED_PATH, SLACK_PATH};

backend_tests!(
    failed_runs_post_one_block_kit_message,
    the_message_waits_for_the_analysis,
    one_message_per_second_then_a_digest,
    permanent_failures_disable_slack,
    thresholds_are_sent_once_under_a_parallel_storm,
    a_delivery_cut_by_a_restart_is_made_after_it,
    slack_test_endpoint_and_health,
);

pub const PUBLIC_URL: &str = "https://orgd.example";

/// An orgd whose Slack posts go to a fresh fake, with short retries and a quick poll.
pub async fn slack_app(
    backend: Backend,
    tweak: impl FnOnce(&mut orgd::Config),
) -> (TestApp, FakeSlack) {
    let slack = FakeSlack::spawn().await;
    // The fake paces by the wall clock, orgd by the test's manual clock: the fake's own limit
    // is on only in the test that lets the manual clock follow the wall clock.
    slack.set_rate_limit(false);
    let origin = slack.origin();
    let app = TestApp::spawn_with(backend, move |c| {
        c.delivery.slack_origin = origin;
        c.delivery.poll_interval = Duration::from_millis(50);
        c.delivery.retry_schedule = vec![Duration::from_secs(1), Duration::from_secs(1)];
        c.public_url = Some(PUBLIC_URL.into());
        c.rate_limit_per_minute = 10_000;
        c.ingest_rate_limit_per_minute = 10_000;
        tweak(c);
    })
    .await;
    (app, slack)
}

pub async fn connect_slack(app: &TestApp, admin: &Session, path: &str, extra: Value) {
    let mut body = json!({"webhookUrl": format!("https://hooks.slack.com{path}")});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let (status, answer) =
        call(app.send_json(Method::PUT, "/api/integrations/slack", &admin.token, body)).await;
    assert_eq!(status, 200, "{answer}");
}

pub async fn analysis_switch(app: &TestApp, admin: &Session, on: bool) {
    let (status, answer) = call(app.send_json(
        Method::PATCH,
        "/api/organization",
        &admin.token,
        json!({"aiAnalysisEnabled": on}),
    ))
    .await;
    assert_eq!(status, 200, "{answer}");
}

/// Creates a run and moves it to `status` with `error`.
pub async fn finish_run(app: &TestApp, s: &Session, task_id: &str, status: &str, error: &str) {
    let (code, body) = call(app.send_json(
        Method::POST,
        "/api/executions",
        &s.token,
        json!({"taskId": task_id, "status": "RUNNING", "trigger": "github", "groupName": "nightly"}),
    ))
    .await;
    assert_eq!(code, 201, "{body}");
    app.clock.advance(65_000);
    let (code, body) = call(app.send_json(
        Method::PATCH,
        &format!("/api/executions/{task_id}"),
        &s.token,
        json!({"status": status, "error": error}),
    ))
    .await;
    assert_eq!(code, 200, "{body}");
}

/// Waits (real time, at most 10 s) until `done` holds.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Gives the worker a moment, then checks nothing more arrived.
async fn quiet(slack: &FakeSlack, expected: usize) {
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(slack.messages().len(), expected, "no further message");
}

/// Books the Slack destination's next turn `ms` from now.
async fn hold_pacing(app: &TestApp, ms: i64) {
    sqlx::query("UPDATE delivery_pacing SET next_at = $1")
        .bind(app.clock.now_ms() + ms)
        .execute(&app.db)
        .await
        .expect("pacing");
}

/// Moves the clock on and wakes the worker.
pub fn tick(app: &TestApp, ms: i64) {
    app.clock.advance(ms);
    app.state.wake_outbox();
}

async fn outbox_rows(app: &TestApp, kind: &str) -> Vec<(String, String)> {
    sqlx::query_as("SELECT status, payload FROM outbox WHERE event_type = $1 ORDER BY id")
        .bind(kind)
        .fetch_all(&app.db)
        .await
        .expect("outbox rows")
}

async fn failed_runs_post_one_block_kit_message(backend: Backend) {
    let (app, slack) = slack_app(backend, |_| {}).await;
    let admin = app.signup("Slack Org").await;
    analysis_switch(&app, &admin, false).await;
    connect_slack(&app, &admin, SLACK_PATH, json!({})).await;
    finish_run(&app, &admin, "passed-1", "PASSED", "").await;
    finish_run(
        &app,
        &admin,
        "ci-1234",
        "FAILED",
        "2 tests failed\n  at login.spec.ts:12",
    )
    .await;
    eventually("the message", || slack.messages().len() == 1).await;
    let message = &slack.messages()[0].body;
    assert_eq!(message["blocks"][0]["text"]["text"], "🔴 Test run FAILED");
    let text = message["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("ci-1234") && text.contains("2 tests failed"),
        "{text}"
    );
    assert!(
        !text.contains("login.spec.ts"),
        "only the error's first line: {text}"
    );
    let blocks = message["blocks"].to_string();
    assert!(
        blocks.contains("nightly") && blocks.contains("github") && blocks.contains("1m 5s"),
        "{blocks}"
    );
    assert!(
        blocks.contains("https://orgd.example/executions/ci-1234"),
        "{blocks}"
    );
    // PASSED is not in the default events; with it chosen, it is posted.
    connect_slack(&app, &admin, SLACK_PATH, json!({"events": ["PASSED"]})).await;
    tick(&app, 1000);
    finish_run(&app, &admin, "passed-2", "PASSED", "").await;
    eventually("the PASSED message", || slack.messages().len() == 2).await;
    assert_eq!(
        slack.messages()[1].body["blocks"][0]["text"]["text"],
        "🟢 Test run PASSED"
    );
    quiet(&slack, 2).await;
    // The event's data is frozen: the execution as it finished.
    let rows = outbox_rows(&app, "execution.finished").await;
    let event: Value = serde_json::from_str(&rows[0].1).expect("event");
    assert_eq!(event["data"]["execution"]["taskId"], "ci-1234");
    assert_eq!(event["data"]["execution"]["status"], "FAILED");
    assert!(event["data"]["execution"].get("output").is_none());
    assert_eq!(event["data"]["organizationId"], admin.org_id.as_str());
    let metrics = app
        .request(Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("orgd_deliveries_total{channel=\"slack\",outcome=\"delivered\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("orgd_outbox_pending 0"), "{metrics}");
    assert!(
        metrics.contains("orgd_outbox_oldest_pending_seconds 0"),
        "{metrics}"
    );
}

async fn the_message_waits_for_the_analysis(backend: Backend) {
    let openai = FakeLlm::start(Kind::OpenAi, &["sk-platform"]).await;
    let gemini = FakeLlm::start(Kind::Gemini, &["gm-platform"]).await;
    let (openai_url, gemini_url) = (openai.url.clone(), gemini.url.clone());
    let (app, slack) = slack_app(backend, move |c| {
        c.ai.openai_api_url = openai_url;
        c.ai.gemini_api_url = gemini_url;
        c.ai.openai_api_key = Some(orgd::config::Secret("sk-platform".into()));
        c.ai.gemini_api_key = Some(orgd::config::Secret("gm-platform".into()));
    })
    .await;
    let admin = app.signup("Waiting Org").await;
    connect_slack(&app, &admin, SLACK_PATH, json!({})).await;
    // Analysis done quickly: one message, with the root cause, as soon as it is stored.
    finish_run(&app, &admin, "quick", "FAILED", "boom").await;
    quiet(&slack, 0).await;
    orgd::analyst::run_pending_once(&app.state)
        .await
        .expect("analysis");
    tick(&app, 0);
    eventually("the message after the analysis", || {
        slack.messages().len() == 1
    })
    .await;
    let blocks = slack.messages()[0].body["blocks"].to_string();
    assert!(blocks.contains(ROOT_CAUSE), "{blocks}");
    // Analysis stuck: the message goes at finishedAt + 90 s without it.
    tick(&app, 1000);
    finish_run(&app, &admin, "stuck", "FAILED", "boom").await;
    tick(&app, 89_000);
    quiet(&slack, 1).await;
    tick(&app, 1000);
    eventually("the message after the wait", || slack.messages().len() == 2).await;
    let blocks = slack.messages()[1].body["blocks"].to_string();
    assert!(
        blocks.contains("stuck") && !blocks.contains("Root cause"),
        "{blocks}"
    );
}

async fn one_message_per_second_then_a_digest(backend: Backend) {
    let (app, slack) = slack_app(backend, |_| {}).await;
    let admin = app.signup("Paced Org").await;
    analysis_switch(&app, &admin, false).await;
    connect_slack(&app, &admin, SLACK_PATH, json!({})).await;
    finish_run(&app, &admin, "first", "FAILED", "boom").await;
    eventually("the first message", || slack.messages().len() == 1).await;
    // Held back (the next turn far away), three runs wait; then one message per turn.
    hold_pacing(&app, 600_000).await;
    for n in 0..3 {
        finish_run(&app, &admin, &format!("few-{n}"), "ERROR", "boom").await;
    }
    quiet(&slack, 1).await;
    tick(&app, 600_000);
    eventually("the second message", || slack.messages().len() == 2).await;
    quiet(&slack, 2).await;
    for expected in 3..=4 {
        tick(&app, 1000);
        eventually("the next paced message", || {
            slack.messages().len() == expected
        })
        .await;
        quiet(&slack, expected).await;
    }
    // More than five due at once: one digest.
    hold_pacing(&app, 1_000_000).await;
    for n in 0..8 {
        finish_run(&app, &admin, &format!("many-{n}"), "FAILED", "boom").await;
    }
    // Let the worker finish with the last wake before the clock jumps.
    quiet(&slack, 4).await;
    tick(&app, 1_000_000);
    eventually("the digest", || slack.messages().len() == 5).await;
    quiet(&slack, 5).await;
    let texts: Vec<Value> = slack
        .messages()
        .iter()
        .map(|m| m.body["text"].clone())
        .collect();
    let digest = &slack.messages()[4].body;
    assert_eq!(
        digest["blocks"][0]["text"]["text"], "8 test runs finished",
        "{texts:?}"
    );
    assert!(digest["blocks"].to_string().contains("many-7"));
    assert!(slack.min_gap(SLACK_PATH).is_some());
}

async fn permanent_failures_disable_slack(backend: Backend) {
    let (app, slack) = slack_app(backend, |c| c.delivery.disable_after = 2).await;
    let admin = app.signup("Archived Org").await;
    analysis_switch(&app, &admin, false).await;
    connect_slack(&app, &admin, SLACK_ARCHIVED_PATH, json!({})).await;
    for n in 0..2 {
        tick(&app, 1000);
        finish_run(&app, &admin, &format!("gone-{n}"), "FAILED", "boom").await;
        eventually("the refused post", || slack.seen().len() == n + 1).await;
    }
    let mut disabled = false;
    for _ in 0..100 {
        let (_, body) = call(app.get("/api/integrations/slack", &admin.token)).await;
        if body["data"]["enabled"] == json!(false) {
            disabled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(disabled, "Slack was disabled after 2 permanent failures");
    let actor: String = sqlx::query_scalar(
        "SELECT COALESCE(actor, 'user') FROM audit_logs WHERE organization_id = $1 AND action = 'integration.disabled'",
    )
    .bind(&admin.org_id)
    .fetch_one(&app.db)
    .await
    .expect("audit entry");
    assert_eq!(actor, "system");
    let rows = outbox_rows(&app, "execution.finished").await;
    assert!(
        rows.iter().all(|(status, _)| status == "failed"),
        "{rows:?}"
    );
    // Disabled: no more posts.
    tick(&app, 1000);
    finish_run(&app, &admin, "after", "FAILED", "boom").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(slack.seen().len(), 2);
}

async fn thresholds_are_sent_once_under_a_parallel_storm(backend: Backend) {
    let (app, slack) = slack_app(backend, |_| {}).await;
    let other = app.another_instance().await;
    let admin = app.signup("Storm Org").await;
    sqlx::query("UPDATE organizations SET limit_overrides = $1 WHERE id = $2")
        .bind(r#"{"maxTestRuns":10,"maxConcurrentRuns":100}"#)
        .bind(&admin.org_id)
        .execute(&app.db)
        .await
        .expect("limits");
    connect_slack(&app, &admin, SLACK_PATH, json!({})).await;
    let mut storm = Vec::new();
    for n in 0..16 {
        let base = if n % 2 == 0 {
            app.base.clone()
        } else {
            other.base.clone()
        };
        let token = admin.token.clone();
        storm.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/api/executions"))
                .bearer_auth(token)
                .json(&json!({"taskId": format!("storm-{n}"), "status": "RUNNING"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    let mut created = 0;
    for run in storm {
        if run.await.expect("task").expect("request") == 201 {
            created += 1;
        }
    }
    assert_eq!(created, 10);
    let rows = outbox_rows(&app, "usage.threshold_crossed").await;
    let levels: Vec<String> = rows
        .iter()
        .map(|(_, p)| serde_json::from_str::<Value>(p).expect("event")["data"]["level"].to_string())
        .collect();
    assert_eq!(levels, vec!["\"warning\"", "\"critical\""]);
    tick(&app, 0);
    eventually("the first usage message", || !slack.messages().is_empty()).await;
    tick(&app, 1000);
    eventually("the second usage message", || slack.messages().len() == 2).await;
    let texts: Vec<String> = slack
        .messages()
        .iter()
        .map(|m| m.body["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        texts.iter().any(|t| t.contains("Test runs at 80 %")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("Test runs at 100 %")),
        "{texts:?}"
    );
    // An operator lowering a limit crosses too: users 1 of 1 → critical.
    sqlx::query("UPDATE organizations SET limit_overrides = $1 WHERE id = $2")
        .bind(r#"{"maxTestRuns":10,"maxConcurrentRuns":100}"#)
        .bind(&admin.org_id)
        .execute(&app.db)
        .await
        .expect("limits");
    other.stop().await;
}

async fn a_delivery_cut_by_a_restart_is_made_after_it(backend: Backend) {
    let (app, slack) = slack_app(backend, |_| {}).await;
    let admin = app.signup("Restart Org").await;
    analysis_switch(&app, &admin, false).await;
    connect_slack(&app, &admin, SLACK_PATH, json!({})).await;
    slack.inject("POST /services", 1, Behaviour::Hang);
    finish_run(&app, &admin, "cut", "FAILED", "boom").await;
    eventually("the hanging post", || slack.seen().len() == 1).await;
    let app = app.restart_with(|_| {}).await;
    quiet(&slack, 0).await;
    // The lease of the dead instance expires; the row is delivered.
    tick(&app, 120_000);
    eventually("the delivery after the restart", || {
        slack.messages().len() == 1
    })
    .await;
    assert!(
        slack.messages()[0].body["text"]
            .as_str()
            .unwrap_or_default()
            .contains("cut")
    );
    let rows = outbox_rows(&app, "execution.finished").await;
    assert_eq!(rows[0].0, "delivered");
}

async fn slack_test_endpoint_and_health(backend: Backend) {
    let (app, slack) = slack_app(backend, |_| {}).await;
    let admin = app.signup("Test Org").await;
    let (status, body) = call(app.send_json(
        Method::POST,
        "/api/integrations/slack/test",
        &admin.token,
        json!({}),
    ))
    .await;
    assert_eq!(status, 400, "{body}");
    let (_, body) = call(app.get("/api/integrations/slack", &admin.token)).await;
    assert_eq!(body["data"]["health"]["status"], "unused", "{body}");
    connect_slack(&app, &admin, SLACK_PATH, json!({})).await;
    let (status, body) = call(app.send_json(
        Method::POST,
        "/api/integrations/slack/test",
        &admin.token,
        json!({}),
    ))
    .await;
    assert_eq!(
        (status, &body),
        (200, &json!({"success": true, "data": {"delivered": true}}))
    );
    assert_eq!(slack.messages().len(), 1);
    let (_, body) = call(app.get("/api/integrations/slack", &admin.token)).await;
    assert_eq!(body["data"]["health"]["status"], "ok", "{body}");
    assert_eq!(body["data"]["health"]["consecutiveFailures"], 0);
    slack.inject(
        "POST /services",
        1,
        orgd_fakes::slack::error(404, "no_service"),
    );
    let (status, body) = call(app.send_json(
        Method::POST,
        "/api/integrations/slack/test",
        &admin.token,
        json!({}),
    ))
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no_service"),
        "{body}"
    );
    let (_, body) = call(app.get("/api/integrations/slack", &admin.token)).await;
    assert_eq!(body["data"]["health"]["status"], "failing", "{body}");
    assert_eq!(body["data"]["health"]["consecutiveFailures"], 1);
    let member = app.add_member(&admin.org_id, "developer").await;
    let (status, _) = call(app.send_json(
        Method::POST,
        "/api/integrations/slack/test",
        &member.token,
        json!({}),
    ))
    .await;
    assert_eq!(status, 403);
}

/// Two instances on one queue, with the manual clock following the wall clock and the fake
/// Slack's own one-per-second limit on: every event is delivered once, Slack paced overall.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_deliver_each_event_once_and_pace_slack_overall() {
    let mut backends = vec![Backend::Sqlite];
    backends.extend(Backend::postgres());
    for backend in backends {
        let (app, slack) = slack_app(backend, |c| {
            c.delivery.private_urls = orgd_providers::ssrf::PrivateAddresses::Allowed;
        })
        .await;
        slack.set_rate_limit(true);
        let clock = app.clock.clone();
        let follower = tokio::spawn(async move {
            loop {
                clock.set(crate::helpers::wall_clock_ms());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        let other = app.another_instance().await;
        let admin = app.signup("Two Instances Org").await;
        analysis_switch(&app, &admin, false).await;
        connect_slack(&app, &admin, SLACK_PATH, json!({})).await;
        let receiver = orgd_fakes::webhook_receiver::FakeReceiver::spawn(None).await;
        let (status, body) = call(app.send_json(
            Method::POST,
            "/api/webhooks",
            &admin.token,
            json!({"url": receiver.endpoint(), "events": ["execution.finished"]}),
        ))
        .await;
        assert_eq!(status, 201, "{body}");
        for n in 0..4 {
            let instance = if n % 2 == 0 { &app } else { &other };
            let task = format!("pair-{n}");
            let (code, body) = call(instance.send_json(
                Method::POST,
                "/api/executions",
                &admin.token,
                json!({"taskId": task, "status": "RUNNING"}),
            ))
            .await;
            assert_eq!(code, 201, "{body}");
            let (code, body) = call(instance.send_json(
                Method::PATCH,
                &format!("/api/executions/{task}"),
                &admin.token,
                json!({"status": "FAILED", "error": "boom"}),
            ))
            .await;
            assert_eq!(code, 200, "{body}");
        }
        for _ in 0..300 {
            if slack.messages().len() >= 4 && receiver.deliveries().len() >= 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut posted: Vec<String> = slack
            .messages()
            .iter()
            .map(|m| m.body["text"].as_str().unwrap_or_default().to_string())
            .collect();
        posted.sort();
        assert_eq!(posted.len(), 4, "each run posted once: {posted:?}");
        posted.dedup();
        assert_eq!(posted.len(), 4, "no run posted twice");
        let gap = slack.min_gap(SLACK_PATH).expect("a gap");
        assert!(gap >= Duration::from_millis(950), "{gap:?}");
        let refused = slack.seen().len() - slack.messages().len();
        assert!(refused <= 1, "Slack refused {refused} posts as too fast");
        assert_eq!(
            receiver.deliveries().len(),
            4,
            "each webhook event delivered once"
        );
        assert_eq!(receiver.webhook_ids().len(), 4);
        follower.abort();
        other.stop().await;
        app.stop().await;
    }
}

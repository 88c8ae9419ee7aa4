//! Outgoing webhooks: CRUD with the secret shown once, signatures checked by the reference
//! `standardwebhooks` crate (in the fake receiver), retries with `Retry-After`, the delivery
//! log, auto-disable, and the address rules (SSRF).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, Session, TestApp, assert_error, call};
use crate::notifications::{eventually, tick};
use orgd_fakes::webhook_receiver::{self as receiver, FakeReceiver, verify};
use orgd_providers::ssrf::PrivateAddresses;

backend_tests!(
    webhooks_crud_secret_once_and_the_limit,
    deliveries_are_signed_and_rotation_signs_twice,
    retries_honour_retry_after_and_the_log_shows_them,
    a_gone_receiver_disables_the_webhook_and_tells_the_others,
    exhausted_deliveries_disable_the_webhook,
    unsafe_urls_are_refused,
    hostile_receivers_are_failed_attempts,
);

async fn webhook_app(backend: Backend, tweak: impl FnOnce(&mut orgd::Config)) -> TestApp {
    TestApp::spawn_with(backend, move |c| {
        c.delivery.private_urls = PrivateAddresses::Allowed;
        c.delivery.poll_interval = Duration::from_millis(50);
        c.delivery.retry_schedule = vec![Duration::from_secs(1), Duration::from_secs(1)];
        c.delivery.webhook_timeout = Duration::from_millis(500);
        c.rate_limit_per_minute = 10_000;
        tweak(c);
    })
    .await
}

async fn create(app: &TestApp, admin: &Session, body: Value) -> (u16, Value) {
    call(app.send_json(Method::POST, "/api/webhooks", &admin.token, body)).await
}

/// Registers `url` for `events`; its id and secret.
async fn register(app: &TestApp, admin: &Session, url: &str, events: Value) -> (String, String) {
    let (status, body) = create(app, admin, json!({"url": url, "events": events})).await;
    assert_eq!(status, 201, "{body}");
    (
        body["data"]["webhook"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        body["data"]["secret"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

async fn test_event(app: &TestApp, admin: &Session, id: &str) -> String {
    let (status, body) = call(app.send_json(
        Method::POST,
        &format!("/api/webhooks/{id}/test"),
        &admin.token,
        json!({}),
    ))
    .await;
    assert_eq!(status, 202, "{body}");
    body["data"]["eventId"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn deliveries(app: &TestApp, admin: &Session, id: &str) -> Vec<Value> {
    let (status, body) =
        call(app.get(&format!("/api/webhooks/{id}/deliveries"), &admin.token)).await;
    assert_eq!(status, 200, "{body}");
    body["data"]["deliveries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn webhooks_crud_secret_once_and_the_limit(backend: Backend) {
    let app = webhook_app(backend, |_| {}).await;
    let admin = app.signup("Hooks Org").await;
    let receiver = FakeReceiver::spawn(None).await;
    let url = receiver.endpoint();
    let body =
        json!({"url": url, "events": ["execution.finished", "member.joined"], "description": "CI"});
    let request = || {
        app.send_json(Method::POST, "/api/webhooks", &admin.token, body.clone())
            .header("Idempotency-Key", "hook-1")
    };
    let (status, first) = call(request()).await;
    assert_eq!(status, 201, "{first}");
    let secret = first["data"]["secret"].as_str().unwrap_or_default();
    assert!(secret.starts_with("whsec_"), "{first}");
    let hook = &first["data"]["webhook"];
    assert_eq!(
        hook["events"],
        json!(["execution.finished", "member.joined"])
    );
    assert_eq!(
        (hook["enabled"].clone(), hook["description"].clone()),
        (json!(true), json!("CI"))
    );
    let (status, replay) = call(request()).await;
    assert_eq!(
        (status, &replay),
        (201, &first),
        "a replay answers the same"
    );
    let id = hook["id"].as_str().unwrap_or_default().to_string();
    // The secret is never shown again.
    let (status, listed) = call(app.get("/api/webhooks", &admin.token)).await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"]["webhooks"].as_array().map(Vec::len), Some(1));
    assert!(!listed.to_string().contains(secret));
    let stored: String = sqlx::query_scalar("SELECT secret FROM webhooks WHERE id = $1")
        .bind(&id)
        .fetch_one(&app.db)
        .await
        .expect("row");
    assert!(!stored.contains(secret), "stored sealed");
    let (status, patched) = call(app.send_json(
        Method::PATCH,
        &format!("/api/webhooks/{id}"),
        &admin.token,
        json!({"events": ["*"], "description": null, "enabled": false}),
    ))
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["data"]["webhook"]["events"], json!(["*"]));
    assert_eq!(patched["data"]["webhook"]["description"], Value::Null);
    assert_eq!(patched["data"]["webhook"]["enabled"], json!(false));
    let (status, shown) = call(app.get(&format!("/api/webhooks/{id}"), &admin.token)).await;
    assert_eq!(
        (status, &shown["data"]["webhook"]),
        (200, &patched["data"]["webhook"])
    );
    for _ in 0..9 {
        register(&app, &admin, &url, json!(["*"])).await;
    }
    let (status, refused) = create(&app, &admin, json!({"url": url, "events": ["*"]})).await;
    assert_error(status, &refused, 403, "Webhook limit reached");
    let (status, _) = call(
        app.request(Method::DELETE, &format!("/api/webhooks/{id}"))
            .bearer_auth(&admin.token),
    )
    .await;
    assert_eq!(status, 200);
    let (status, gone) = call(app.get(&format!("/api/webhooks/{id}"), &admin.token)).await;
    assert_error(status, &gone, 404, "Webhook not found");
    let actions = app.audit_actions(&admin.org_id).await;
    for action in ["webhook.created", "webhook.updated", "webhook.deleted"] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }
    let developer = app.add_member(&admin.org_id, "developer").await;
    let (status, body) = call(app.get("/api/webhooks", &developer.token)).await;
    assert_error(status, &body, 403, "Forbidden");
    let (status, body) = create(&app, &developer, json!({"url": "nonsense"})).await;
    assert_error(status, &body, 403, "Forbidden");
}

async fn deliveries_are_signed_and_rotation_signs_twice(backend: Backend) {
    // The session outlives the 24 h of the rotation.
    let app = webhook_app(backend, |c| c.jwt_ttl = Duration::from_secs(72 * 3600)).await;
    let admin = app.signup("Signed Org").await;
    let receiver = FakeReceiver::spawn(None).await;
    let (id, secret) = register(&app, &admin, &receiver.endpoint(), json!(["*"])).await;
    receiver.set_secret(Some(&secret));
    let event_id = test_event(&app, &admin, &id).await;
    eventually("the test delivery", || receiver.deliveries().len() == 1).await;
    let delivery = &receiver.deliveries()[0];
    assert_eq!(delivery.verified, Some(true), "{:?}", delivery.verify_error);
    assert_eq!(delivery.webhook_id(), Some(event_id.as_str()));
    assert_eq!(delivery.header("content-type"), Some("application/json"));
    let event = delivery.json().expect("json body");
    assert_eq!(event["type"], "webhook.test");
    assert_eq!(event["id"], event_id.as_str());
    assert_eq!(event["data"]["organizationId"], admin.org_id.as_str());
    // A run that finishes is an event too, with the execution frozen in it and the
    // organization's stored secrets redacted (Slack posts only PASSED here: nothing to Slack).
    let slack_url =
        "https://hooks.slack.com/services/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456789";
    crate::notifications::connect_slack(
        &app,
        &admin,
        "/services/T0SECRET1/B0SECRET1/slackPLAINTEXTsecret0123456789",
        json!({"events": ["PASSED"]}),
    )
    .await;
    let error = format!("posting to {slack_url} failed");
    crate::notifications::finish_run(&app, &admin, "signed-run", "FAILED", &error).await;
    eventually("the execution event", || receiver.deliveries().len() == 2).await;
    let delivery = &receiver.deliveries()[1];
    assert_eq!(delivery.verified, Some(true), "{:?}", delivery.verify_error);
    let event = delivery.json().expect("json body");
    assert_eq!(event["type"], "execution.finished");
    assert_eq!(event["data"]["execution"]["taskId"], "signed-run");
    assert_eq!(
        event["data"]["execution"]["error"],
        "posting to [REDACTED] failed"
    );
    // Rotation: for 24 h both secrets sign.
    let (status, rotated) = call(app.send_json(
        Method::POST,
        &format!("/api/webhooks/{id}/rotate-secret"),
        &admin.token,
        json!({}),
    ))
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["data"]["secret"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_ne!(new_secret, secret);
    receiver.set_secret(Some(&new_secret));
    test_event(&app, &admin, &id).await;
    eventually("the delivery after rotation", || {
        receiver.deliveries().len() == 3
    })
    .await;
    let delivery = &receiver.deliveries()[2];
    assert_eq!(delivery.verified, Some(true), "{:?}", delivery.verify_error);
    assert!(
        verify(&secret, delivery).is_ok(),
        "the old secret still verifies"
    );
    assert_eq!(
        delivery
            .header("webhook-signature")
            .map(|s| s.split(' ').count()),
        Some(2)
    );
    // After 24 h only the new one signs.
    app.clock.advance(24 * 3600 * 1000 + 1);
    test_event(&app, &admin, &id).await;
    eventually("the delivery a day later", || {
        receiver.deliveries().len() == 4
    })
    .await;
    let delivery = &receiver.deliveries()[3];
    assert_eq!(
        delivery
            .header("webhook-signature")
            .map(|s| s.split(' ').count()),
        Some(1)
    );
    assert!(
        app.audit_actions(&admin.org_id)
            .await
            .iter()
            .any(|a| a == "webhook.secret_rotated")
    );
}

async fn retries_honour_retry_after_and_the_log_shows_them(backend: Backend) {
    let app = webhook_app(backend, |c| {
        c.delivery.retry_schedule = vec![Duration::from_secs(1); 3];
    })
    .await;
    let admin = app.signup("Retry Org").await;
    let receiver = FakeReceiver::spawn(None).await;
    let (id, _) = register(&app, &admin, &receiver.endpoint(), json!(["*"])).await;
    receiver.respond_with([receiver::status(500), receiver::retry_after(429, 30)]);
    let event_id = test_event(&app, &admin, &id).await;
    eventually("the first attempt", || receiver.deliveries().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = deliveries(&app, &admin, &id).await;
    assert_eq!(log[0]["status"], "pending");
    assert_eq!(log[0]["attempts"], 1);
    assert_eq!(log[0]["lastStatusCode"], 500);
    assert_eq!(log[0]["lastError"], "answered 500");
    tick(&app, 1000);
    eventually("the second attempt", || receiver.deliveries().len() == 2).await;
    // Retry-After: 30 pushes the next attempt past the schedule's 1 s.
    tick(&app, 1000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.deliveries().len(), 2);
    tick(&app, 29_000);
    eventually("the third attempt", || receiver.deliveries().len() == 3).await;
    assert_eq!(
        receiver.webhook_ids(),
        vec![event_id.clone()],
        "one id across retries"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = deliveries(&app, &admin, &id).await;
    assert_eq!(log[0]["status"], "delivered", "{log:?}");
    assert_eq!(log[0]["attempts"], 3);
    assert_eq!(log[0]["type"], "webhook.test");
    // A delivered one can be sent again on request.
    let delivery_id = log[0]["id"].as_str().unwrap_or_default();
    let (status, _) = call(app.send_json(
        Method::POST,
        &format!("/api/webhooks/{id}/deliveries/{delivery_id}/retry"),
        &admin.token,
        json!({}),
    ))
    .await;
    assert_eq!(status, 200);
    eventually("the manual retry", || receiver.deliveries().len() == 4).await;
    let (status, body) = call(app.get(
        &format!("/api/webhooks/{id}/deliveries?status=bogus"),
        &admin.token,
    ))
    .await;
    assert_error(status, &body, 400, "Invalid status");
}

async fn a_gone_receiver_disables_the_webhook_and_tells_the_others(backend: Backend) {
    let app = webhook_app(backend, |_| {}).await;
    let admin = app.signup("Gone Org").await;
    let gone = FakeReceiver::spawn(None).await;
    let other = FakeReceiver::spawn(None).await;
    let (gone_id, _) = register(&app, &admin, &gone.endpoint(), json!(["*"])).await;
    register(
        &app,
        &admin,
        &other.endpoint(),
        json!(["integration.disabled"]),
    )
    .await;
    gone.respond_with([receiver::status(410)]);
    test_event(&app, &admin, &gone_id).await;
    eventually("the event to the other webhook", || {
        other.deliveries().len() == 1
    })
    .await;
    let event = other.deliveries()[0].json().expect("json");
    assert_eq!(event["type"], "integration.disabled");
    assert_eq!(event["data"]["webhookId"], gone_id.as_str());
    assert!(
        event["data"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("410")
    );
    let (_, shown) = call(app.get(&format!("/api/webhooks/{gone_id}"), &admin.token)).await;
    assert_eq!(shown["data"]["webhook"]["enabled"], json!(false));
    let actor: String = sqlx::query_scalar(
        "SELECT actor FROM audit_logs WHERE organization_id = $1 AND action = 'webhook.disabled'",
    )
    .bind(&admin.org_id)
    .fetch_one(&app.db)
    .await
    .expect("audit entry");
    assert_eq!(actor, "system");
    assert_eq!(
        gone.deliveries().len(),
        1,
        "the disabled webhook is not told"
    );
}

async fn exhausted_deliveries_disable_the_webhook(backend: Backend) {
    let app = webhook_app(backend, |c| {
        c.delivery.disable_after = 2;
        c.delivery.retry_schedule = vec![Duration::from_secs(1)];
    })
    .await;
    let admin = app.signup("Exhausted Org").await;
    let receiver = FakeReceiver::spawn(None).await;
    let (id, _) = register(&app, &admin, &receiver.endpoint(), json!(["*"])).await;
    receiver.respond_with((0..4).map(|_| receiver::status(500)));
    for n in 1..=2 {
        test_event(&app, &admin, &id).await;
        eventually("the first attempt", || {
            receiver.deliveries().len() == 2 * n - 1
        })
        .await;
        tick(&app, 1000);
        eventually("the last attempt", || receiver.deliveries().len() == 2 * n).await;
    }
    let mut enabled = json!(true);
    for _ in 0..100 {
        let (_, shown) = call(app.get(&format!("/api/webhooks/{id}"), &admin.token)).await;
        enabled = shown["data"]["webhook"]["enabled"].clone();
        if enabled == json!(false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(enabled, json!(false));
    let log = deliveries(&app, &admin, &id).await;
    assert!(log.iter().all(|d| d["status"] == "failed"), "{log:?}");
    // Enabled again by an admin, it starts from a clean record.
    let (status, _) = call(app.send_json(
        Method::PATCH,
        &format!("/api/webhooks/{id}"),
        &admin.token,
        json!({"enabled": true}),
    ))
    .await;
    assert_eq!(status, 200);
    test_event(&app, &admin, &id).await;
    eventually("a delivery after re-enabling", || {
        receiver.deliveries().len() == 5
    })
    .await;
}

async fn unsafe_urls_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Safe Org").await;
    let long = format!("https://example.com/{}", "a".repeat(2048));
    for url in [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://localhost/hook",
        "https://192.168.1.10/hook",
        "https://user:pass@example.com/hook",
        "ftp://example.com/hook",
        "not a url",
        long.as_str(),
        "https://does-not-exist.invalid/hook",
    ] {
        let (status, body) = create(&app, &admin, json!({"url": url, "events": ["*"]})).await;
        assert_error(status, &body, 400, "Invalid url");
    }
    for events in [
        json!([]),
        json!(["nope"]),
        json!("*"),
        json!(["*", "member.joined"]),
        json!([1]),
    ] {
        let (status, body) = create(
            &app,
            &admin,
            json!({"url": "https://example.com", "events": events}),
        )
        .await;
        assert_error(status, &body, 400, "Invalid events");
    }
    // A CIDR list allows that range, over http too.
    let receiver = FakeReceiver::spawn(None).await;
    let app = app
        .restart_with(|c| {
            c.delivery.private_urls = PrivateAddresses::parse("127.0.0.0/8").expect("cidr");
            c.delivery.poll_interval = Duration::from_millis(50);
        })
        .await;
    let (id, _) = register(&app, &admin, &receiver.endpoint(), json!(["*"])).await;
    test_event(&app, &admin, &id).await;
    eventually("the delivery to an allowed range", || {
        receiver.deliveries().len() == 1
    })
    .await;
    let (status, body) = create(
        &app,
        &admin,
        json!({"url": "https://10.1.2.3/hook", "events": ["*"]}),
    )
    .await;
    assert_error(status, &body, 400, "Invalid url");
}

async fn hostile_receivers_are_failed_attempts(backend: Backend) {
    let app = webhook_app(backend, |c| {
        c.delivery.retry_schedule = vec![Duration::from_secs(1); 5]
    })
    .await;
    let admin = app.signup("Hostile Org").await;
    let receiver = FakeReceiver::spawn(None).await;
    let (id, _) = register(&app, &admin, &receiver.endpoint(), json!(["*"])).await;
    receiver.respond_with([
        receiver::redirect_to_metadata(),
        receiver::hang(),
        receiver::reset(),
        receiver::huge_body(receiver::TEN_MB),
    ]);
    test_event(&app, &admin, &id).await;
    let expected = [
        "redirected to http://169.254.169.254/latest/meta-data/",
        "timed out",
        "connection reset",
    ];
    let mut previous = Value::Null;
    for (n, error) in expected.iter().enumerate() {
        eventually("the attempt", || receiver.deliveries().len() == n + 1).await;
        let mut last = Value::Null;
        for _ in 0..100 {
            last = deliveries(&app, &admin, &id).await[0].clone();
            if last["lastError"] != previous {
                previous = last["lastError"].clone();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(last["lastError"], *error, "{last}");
        tick(&app, 1000);
    }
    // 10 MB answered with 200: delivered, having read at most 64 KiB of it.
    eventually("the last attempt", || receiver.deliveries().len() == 4).await;
    let mut last = Value::Null;
    for _ in 0..100 {
        last = deliveries(&app, &admin, &id).await[0].clone();
        if last["status"] == "delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last["status"], "delivered", "{last}");
    // The service answered throughout.
    let (status, _) = call(app.get("/api/organization", &admin.token)).await;
    assert_eq!(status, 200);
}

backend_tests!(member_events_and_lowered_limits_reach_webhooks);

async fn member_events_and_lowered_limits_reach_webhooks(backend: Backend) {
    let app = webhook_app(backend, |c| {
        c.admin_token = Some(orgd::config::Secret(
            "operator-token-for-tests-0123456789".into(),
        ));
    })
    .await;
    let admin = app.signup("Members Org").await;
    let receiver = FakeReceiver::spawn(None).await;
    register(
        &app,
        &admin,
        &receiver.endpoint(),
        json!([
            "member.joined",
            "member.role_changed",
            "member.removed",
            "usage.threshold_crossed"
        ]),
    )
    .await;
    // An invitation takes a seat (2 of 3 on the free plan), then the invitee joins.
    let (status, invited) = call(app.send_json(
        Method::POST,
        "/api/invitations",
        &admin.token,
        json!({"email": "grace@example.com", "role": "developer"}),
    ))
    .await;
    assert_eq!(status, 201, "{invited}");
    let token = invited["invitation"]["token"].as_str().unwrap_or_default();
    let (status, joined) = call(app.request(Method::POST, "/api/auth/signup").json(&json!({
        "email": "grace@example.com", "password": crate::helpers::PASSWORD, "name": "Grace", "inviteToken": token
    })))
    .await;
    assert_eq!(status, 201, "{joined}");
    let grace = joined["user"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (status, _) = call(app.send_json(
        Method::PATCH,
        &format!("/api/users/{grace}/role"),
        &admin.token,
        json!({"role": "viewer"}),
    ))
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        app.request(Method::DELETE, &format!("/api/users/{grace}"))
            .bearer_auth(&admin.token),
    )
    .await;
    assert_eq!(status, 200);
    // The operator lowers maxUsers to 1: 1 of 1 seats is a crossing, critical only.
    let (status, body) = call(
        app.request(
            Method::PUT,
            &format!("/api/admin/organizations/{}/limits", admin.org_id),
        )
        .bearer_auth("operator-token-for-tests-0123456789")
        .json(&json!({"maxUsers": 1})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    eventually("four events", || receiver.deliveries().len() == 4).await;
    let events: Vec<Value> = receiver
        .deliveries()
        .iter()
        .filter_map(|d| d.json())
        .collect();
    let mut kinds: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default())
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        vec![
            "member.joined",
            "member.removed",
            "member.role_changed",
            "usage.threshold_crossed"
        ]
    );
    let joined = events
        .iter()
        .find(|e| e["type"] == "member.joined")
        .expect("joined");
    assert_eq!(joined["data"]["member"]["email"], "grace@example.com");
    assert_eq!(joined["data"]["member"]["role"], "developer");
    let changed = events
        .iter()
        .find(|e| e["type"] == "member.role_changed")
        .expect("changed");
    assert_eq!(
        (
            changed["data"]["member"]["role"].clone(),
            changed["data"]["previousRole"].clone()
        ),
        (json!("viewer"), json!("developer"))
    );
    let thresholds: Vec<(Value, Value)> = events
        .iter()
        .filter(|e| e["type"] == "usage.threshold_crossed")
        .map(|e| (e["data"]["resource"].clone(), e["data"]["level"].clone()))
        .collect();
    // The invitation made 2 of 3 seats (66 %): nothing; lowering to 1 of 1: critical.
    assert!(
        thresholds.contains(&(json!("users"), json!("critical"))),
        "{thresholds:?}"
    );
    assert!(
        !thresholds.contains(&(json!("users"), json!("warning"))),
        "{thresholds:?}"
    );
}

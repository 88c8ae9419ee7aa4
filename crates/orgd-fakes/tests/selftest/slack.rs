//! The Slack fake: known, unknown and archived webhooks, payload and Block Kit checks, pacing.

use std::time::Duration;

use orgd_fakes::slack::{self, FakeSlack, SLACK_ARCHIVED_PATH, SLACK_PATH};
use serde_json::{Value, json};

use super::{client, header};

async fn post(fake: &FakeSlack, path: &str, body: &Value) -> (u16, Option<String>, String) {
    let response = client()
        .post(fake.webhook_url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = header(response.headers(), "retry-after").map(str::to_string);
    (status, retry_after, response.text().await.unwrap())
}

#[tokio::test]
async fn answers_ok_and_slacks_error_codes() {
    let fake = FakeSlack::spawn().await;
    fake.set_rate_limit(false);
    let message = json!({"text": "❌ Test run #1234 FAILED", "blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": "❌ Test run #1234 FAILED", "emoji": true}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "*Project:*\nweb-shop"}]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "commit `a1b2c3d`"}]},
        {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open run"},
            "url": "https://app.example.com/runs/1234", "style": "danger", "action_id": "open_run"}]}]});
    assert_eq!(
        post(&fake, SLACK_PATH, &message).await,
        (200, None, "ok".to_string())
    );
    assert_eq!(fake.messages()[0].body, message);

    assert_eq!(
        post(&fake, "/services/T1/B1/unknown", &message).await.2,
        "no_service"
    );
    assert_eq!(
        post(&fake, "/services/T1/B1/unknown", &message).await.0,
        404
    );
    assert_eq!(
        post(&fake, SLACK_ARCHIVED_PATH, &message).await,
        (410, None, "channel_is_archived".into())
    );

    let raw = client()
        .post(fake.webhook_url(SLACK_PATH))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (raw.status().as_u16(), raw.text().await.unwrap()),
        (400, "invalid_payload".into())
    );
    assert_eq!(
        post(&fake, SLACK_PATH, &json!({"attachments": []})).await.2,
        "invalid_payload"
    );
    assert_eq!(
        post(&fake, SLACK_PATH, &json!({"text": ""})).await.2,
        "no_text"
    );

    let many: Vec<Value> = (0..51).map(|_| json!({"type": "divider"})).collect();
    assert_eq!(
        post(&fake, SLACK_PATH, &json!({"text": "x", "blocks": many}))
            .await
            .2,
        "invalid_blocks"
    );
    let long_header = json!({"text": "x", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h".repeat(151)}}]});
    assert_eq!(
        post(&fake, SLACK_PATH, &long_header).await,
        (400, None, "invalid_blocks".into())
    );
    let ok_header = json!({"text": "x", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "é".repeat(150)}}]});
    assert_eq!(post(&fake, SLACK_PATH, &ok_header).await.0, 200);

    fake.inject("*", 1, slack::invalid_token());
    assert_eq!(
        post(&fake, SLACK_PATH, &message).await,
        (403, None, "invalid_token".into())
    );
    assert_eq!(fake.messages().len(), 2);
    assert_eq!(fake.count("POST /services/"), 11);
}

#[tokio::test]
async fn one_message_per_second_per_webhook() {
    let fake = FakeSlack::spawn().await;
    let other = "/services/T0FAKE0001/B0FAKE0003/otherSecret";
    fake.add_webhook(other);
    let message = json!({"text": "hello"});
    assert_eq!(post(&fake, SLACK_PATH, &message).await.0, 200);
    let (status, retry_after, body) = post(&fake, SLACK_PATH, &message).await;
    assert_eq!(
        (status, retry_after.as_deref(), body.as_str()),
        (429, Some("1"), "rate_limited")
    );
    assert_eq!(
        post(&fake, other, &message).await.0,
        200,
        "the limit is per webhook"
    );

    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(post(&fake, SLACK_PATH, &message).await.0, 200);
    assert!(fake.min_gap(SLACK_PATH).unwrap() >= Duration::from_secs(1));
    assert_eq!(fake.messages_to(SLACK_PATH).len(), 2);
    let received = fake.seen_matching(SLACK_PATH);
    assert_eq!(received.len(), 3);
    assert!(received[1].at > received[0].at);
}

//! Slack: one post per call to `{origin}/services/…`, its answers classified, messages the
//! fake accepts.

use std::time::Duration;

use orgd_fakes::common::Behaviour;
use orgd_fakes::slack::{self, FakeSlack, SLACK_ARCHIVED_PATH, SLACK_PATH};
use orgd_providers::client::{Outcome, Unreached};
use orgd_providers::slack::{
    RunNotice, SlackClient, SlackError, SlackWebhook, run_finished, test_message,
};

use super::{vendor, vendor_with_timeout};

fn webhook(path: &str) -> SlackWebhook {
    SlackWebhook::parse(&format!("https://hooks.slack.com{path}")).unwrap()
}

#[tokio::test]
async fn messages_are_posted_to_the_origin_and_answers_classified() {
    let fake = FakeSlack::spawn().await;
    let (client, recorder) = vendor();
    let slack = SlackClient::new(client, fake.origin());
    let run = RunNotice {
        task_id: "run-1",
        status: "FAILED",
        trigger: Some("ci"),
        group: None,
        duration_ms: Some(61_000),
        error: Some("boom"),
        root_cause: None,
        url: Some("https://app.example.com/executions/run-1"),
    };
    slack
        .post(&webhook(SLACK_PATH), &run_finished(&run))
        .await
        .unwrap();
    let accepted = fake.messages_to(SLACK_PATH);
    assert_eq!(accepted.len(), 1);
    assert_eq!(
        accepted[0].body["blocks"][0]["text"]["text"],
        "🔴 Test run FAILED"
    );
    assert_eq!(
        fake.last("*").unwrap().header("content-type"),
        Some("application/json")
    );

    // A second message within the second: Slack's one-per-second limit.
    let limited = slack
        .post(&webhook(SLACK_PATH), &test_message("Acme"))
        .await;
    assert_eq!(
        limited,
        Err(SlackError::RateLimited {
            retry_after_secs: 1
        })
    );

    let archived = slack
        .post(&webhook(SLACK_ARCHIVED_PATH), &test_message("Acme"))
        .await
        .unwrap_err();
    assert!(archived.is_permanent());
    assert_eq!(archived.code(), Some("channel_is_archived"));
    let removed = webhook("/services/T0FAKE0001/B0NOPE/gone");
    let gone = slack
        .post(&removed, &test_message("Acme"))
        .await
        .unwrap_err();
    assert_eq!(
        gone,
        SlackError::WebhookRefused {
            status: 404,
            code: Some("no_service".into())
        }
    );
    assert_eq!(
        recorder.outcomes(),
        [
            Outcome::Ok,
            Outcome::RateLimited,
            Outcome::ClientError,
            Outcome::ClientError
        ]
    );
}

#[tokio::test]
async fn refusals_failures_and_silence() {
    let fake = FakeSlack::spawn().await;
    fake.set_rate_limit(false);
    let slack = SlackClient::new(
        vendor_with_timeout(Duration::from_millis(500)),
        fake.origin(),
    );
    let (hook, message) = (webhook(SLACK_PATH), test_message("Acme"));
    let post = || slack.post(&hook, &message);

    fake.inject("*", 1, slack::invalid_token());
    let revoked = post().await.unwrap_err();
    assert!(revoked.is_permanent());
    assert_eq!(
        revoked.to_string(),
        "Slack refused the webhook (invalid_token)"
    );

    fake.inject("*", 1, slack::error(400, "invalid_payload"));
    let ours = post().await.unwrap_err();
    assert!(!ours.is_retried() && !ours.is_permanent());
    assert_eq!(ours.code(), Some("invalid_payload"));

    fake.inject("*", 1, slack::error(500, "rollup_error"));
    let failed = post().await.unwrap_err();
    assert!(failed.is_retried());
    assert_eq!(failed.code(), Some("rollup_error"));

    fake.inject("*", 1, Behaviour::Hang);
    assert_eq!(
        post().await,
        Err(SlackError::Unreachable(Unreached::TimedOut))
    );
    assert_eq!(fake.count("*"), 4, "one attempt per call");
    assert!(fake.messages().is_empty());
    post().await.unwrap();
}

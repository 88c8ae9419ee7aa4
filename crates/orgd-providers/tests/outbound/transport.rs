//! The shared client's transport classes, against a fake that breaks connections on purpose:
//! told apart, worded as before, and the guarded client's limit on answers.

use std::sync::Arc;
use std::time::Duration;

use orgd_fakes::common::Behaviour;
use orgd_fakes::webhook_receiver::{self, FakeReceiver};
use orgd_providers::client::{Client, Provider, ProviderError, Unreached};
use orgd_providers::ssrf::{PrivateAddresses, UrlPolicy};

use super::{Recorder, now_ms, vendor};

async fn send(client: &Client, url: &str) -> Result<usize, ProviderError> {
    client
        .send(Provider::Webhook, client.post(url), |answer| {
            Ok(answer.text.len())
        })
        .await
}

#[tokio::test]
async fn broken_connections_are_told_apart_and_read_as_before() {
    let receiver = FakeReceiver::spawn(None).await;
    let url = receiver.endpoint();
    let client = vendor().0;
    receiver.respond_with([Behaviour::Reset, Behaviour::TruncateAfterWork(1)]);
    let reset = send(&client, &url).await.unwrap_err();
    assert_eq!(reset, ProviderError::Unreachable(Unreached::Reset));
    assert_eq!(reset.to_string(), "unreachable (connection interrupted)");
    let cut = send(&client, &url).await.unwrap_err();
    assert_eq!(
        cut,
        ProviderError::Unreachable(Unreached::Truncated {
            status: 200,
            timed_out: false
        })
    );
    assert_eq!(cut.to_string(), "unreachable (connection interrupted)");
    assert_eq!(send(&client, &url).await, Ok(2), "then `ok` again");
}

#[tokio::test]
async fn the_guarded_client_reads_answers_up_to_its_limit() {
    let receiver = FakeReceiver::spawn(None).await;
    let policy = UrlPolicy {
        private: PrivateAddresses::Allowed,
        dns_timeout: Duration::from_secs(2),
    };
    let client = Client::guarded(
        &policy,
        Duration::from_secs(3),
        16,
        Arc::new(Recorder::default()),
        Arc::new(now_ms),
    )
    .unwrap();
    receiver.respond_with([webhook_receiver::huge_body(1 << 20)]);
    assert_eq!(send(&client, &receiver.endpoint()).await, Ok(16));
    let unlimited = vendor().0;
    receiver.respond_with([webhook_receiver::huge_body(1 << 20)]);
    assert_eq!(send(&unlimited, &receiver.endpoint()).await, Ok(1 << 20));
}

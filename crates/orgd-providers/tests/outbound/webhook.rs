//! Outgoing webhooks: signed Standard Webhooks deliveries, one attempt per call, each kind of
//! answer, and the address rules (off only where the operator turned them off).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use orgd_fakes::webhook_receiver::{self, FakeReceiver, RECEIVER_SECRET, TEN_MB};
use orgd_providers::signing::WebhookSecret;
use orgd_providers::ssrf::{PrivateAddresses, UrlPolicy};
use orgd_providers::webhook::{Delivery, DeliveryOutcome, WebhookClient};

use super::{Recorder, now_ms};

const EVENT: &[u8] = br#"{"type":"webhook.test","id":"0123456789abcdef01234567","timestamp":"2026-11-30T12:00:00.000Z","data":{"organizationId":"0123456789abcdef0123abcd","message":"hello"}}"#;
const ID: &str = "0123456789abcdef01234567";

fn client(private: PrivateAddresses, timeout: Duration) -> WebhookClient {
    let policy = UrlPolicy {
        private,
        dns_timeout: Duration::from_secs(2),
    };
    let observer = Arc::new(Recorder::default());
    WebhookClient::new(&policy, timeout, observer, Arc::new(now_ms)).unwrap()
}

fn loopback() -> WebhookClient {
    client(PrivateAddresses::Allowed, Duration::from_secs(3))
}

fn secret() -> WebhookSecret {
    WebhookSecret::parse(RECEIVER_SECRET).unwrap()
}

#[tokio::test]
async fn a_delivery_is_signed_as_the_standard_says() {
    let receiver = FakeReceiver::spawn(Some(RECEIVER_SECRET)).await;
    let url = receiver.endpoint();
    let secret = secret();
    let delivery = Delivery {
        url: &url,
        id: ID,
        body: EVENT,
        secrets: &[&secret],
    };
    let outcome = loopback().deliver(&delivery).await;
    assert_eq!(outcome, DeliveryOutcome::Delivered { status: 200 });
    assert_eq!((outcome.status(), outcome.error()), (Some(200), None));
    let received = &receiver.deliveries()[0];
    assert_eq!(received.verified, Some(true), "{:?}", received.verify_error);
    assert_eq!(received.body, EVENT, "the exact bytes signed");
    assert_eq!(received.header("content-type"), Some("application/json"));
    assert_eq!(received.webhook_id(), Some(ID));
    let timestamp: i64 = received
        .header("webhook-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    assert!((timestamp - now_ms() / 1000).abs() <= 2);
}

#[tokio::test]
async fn during_a_rotation_both_secrets_sign() {
    let receiver = FakeReceiver::spawn(Some(RECEIVER_SECRET)).await;
    let url = receiver.endpoint();
    let (new, old) = (WebhookSecret::generate(), secret());
    let delivery = Delivery {
        url: &url,
        id: ID,
        body: EVENT,
        secrets: &[&new, &old],
    };
    loopback().deliver(&delivery).await;
    let received = &receiver.deliveries()[0];
    assert_eq!(
        received.verified,
        Some(true),
        "the old secret still verifies"
    );
    assert_eq!(webhook_receiver::verify(&new.expose(), received), Ok(()));
    let signatures = received.header("webhook-signature").unwrap();
    assert_eq!(signatures.split(' ').count(), 2);
}

#[tokio::test]
async fn retries_keep_the_id_and_sign_a_new_timestamp() {
    let receiver = FakeReceiver::spawn(Some(RECEIVER_SECRET)).await;
    let url = receiver.endpoint();
    let now = Arc::new(AtomicI64::new(now_ms()));
    let clock = now.clone();
    let policy = UrlPolicy {
        private: PrivateAddresses::Allowed,
        dns_timeout: Duration::from_secs(2),
    };
    let client = WebhookClient::new(
        &policy,
        Duration::from_secs(3),
        Arc::new(Recorder::default()),
        Arc::new(move || clock.load(Ordering::SeqCst)),
    )
    .unwrap();
    let secret = secret();
    let delivery = Delivery {
        url: &url,
        id: ID,
        body: EVENT,
        secrets: &[&secret],
    };
    receiver.respond_with([webhook_receiver::status(500)]);
    assert_eq!(
        client.deliver(&delivery).await,
        DeliveryOutcome::Failed {
            status: Some(500),
            error: "answered 500".into()
        }
    );
    now.fetch_add(65_000, Ordering::SeqCst);
    assert!(matches!(
        client.deliver(&delivery).await,
        DeliveryOutcome::Delivered { .. }
    ));
    let attempts = receiver.deliveries();
    assert_eq!(receiver.webhook_ids(), [ID]);
    let stamps: Vec<i64> = attempts
        .iter()
        .map(|d| d.header("webhook-timestamp").unwrap().parse().unwrap())
        .collect();
    assert_eq!(stamps[1] - stamps[0], 65);
}

#[tokio::test]
async fn every_kind_of_answer() {
    let receiver = FakeReceiver::spawn(None).await;
    let url = receiver.endpoint();
    let secret = secret();
    let delivery = Delivery {
        url: &url,
        id: ID,
        body: EVENT,
        secrets: &[&secret],
    };
    receiver.respond_with([
        webhook_receiver::status(410),
        webhook_receiver::retry_after(429, 7),
        webhook_receiver::retry_after(503, 3),
        webhook_receiver::redirect_to_metadata(),
        webhook_receiver::status(400),
        webhook_receiver::reset(),
    ]);
    let client = loopback();
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        outcomes.push(client.deliver(&delivery).await);
    }
    assert_eq!(
        outcomes,
        [
            DeliveryOutcome::Gone,
            DeliveryOutcome::RetryLater {
                status: 429,
                retry_after_secs: Some(7)
            },
            DeliveryOutcome::RetryLater {
                status: 503,
                retry_after_secs: Some(3)
            },
            DeliveryOutcome::Failed {
                status: Some(301),
                error: "redirected to http://169.254.169.254/latest/meta-data/".into()
            },
            DeliveryOutcome::Failed {
                status: Some(400),
                error: "answered 400".into()
            },
            DeliveryOutcome::Failed {
                status: None,
                error: "connection reset".into()
            },
        ]
    );
    assert_eq!(
        receiver.deliveries().len(),
        6,
        "one attempt per call, no redirect followed"
    );
}

#[tokio::test]
async fn slow_silent_and_huge_answers() {
    let receiver = FakeReceiver::spawn(None).await;
    let url = receiver.endpoint();
    let secret = secret();
    let delivery = Delivery {
        url: &url,
        id: ID,
        body: EVENT,
        secrets: &[&secret],
    };
    let client = client(PrivateAddresses::Allowed, Duration::from_millis(500));
    receiver.respond_with([
        webhook_receiver::hang(),
        webhook_receiver::sleep(Duration::from_secs(2)),
        webhook_receiver::huge_body(TEN_MB),
    ]);
    let timed_out = DeliveryOutcome::Failed {
        status: None,
        error: "timed out".into(),
    };
    assert_eq!(client.deliver(&delivery).await, timed_out);
    assert_eq!(client.deliver(&delivery).await, timed_out);
    let started = Instant::now();
    assert_eq!(
        client.deliver(&delivery).await,
        DeliveryOutcome::Delivered { status: 200 },
        "a 2xx within the timeout delivers, however much it would send"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn private_addresses_are_refused_unless_the_operator_allows_them() {
    let receiver = FakeReceiver::spawn(None).await;
    let secret = secret();
    let refusing = client(PrivateAddresses::Refused, Duration::from_secs(1));
    let https = receiver.endpoint().replace("http://", "https://");
    let cases = [
        (receiver.endpoint(), "refused: the address must use https"),
        (https, "refused: the host resolves to a private address"),
        (
            "https://169.254.169.254/latest/meta-data/".to_string(),
            "refused: the host resolves to a private address",
        ),
        (
            "https://[::ffff:127.0.0.1]/hook".to_string(),
            "refused: the host resolves to a private address",
        ),
        (
            "https://localhost/hook".to_string(),
            "refused: the host must not be localhost",
        ),
        ("not a url".to_string(), "refused: the URL is malformed"),
    ];
    for (url, error) in cases {
        let delivery = Delivery {
            url: &url,
            id: ID,
            body: EVENT,
            secrets: &[&secret],
        };
        assert_eq!(
            refusing.deliver(&delivery).await,
            DeliveryOutcome::Failed {
                status: None,
                error: error.into()
            },
            "{url}"
        );
    }
    assert!(
        receiver.deliveries().is_empty(),
        "nothing reached the receiver"
    );

    // Allowed ranges open only those ranges.
    let ranges = client(
        PrivateAddresses::parse("127.0.0.0/8").unwrap(),
        Duration::from_secs(1),
    );
    let url = receiver.endpoint();
    let delivery = Delivery {
        url: &url,
        id: ID,
        body: EVENT,
        secrets: &[&secret],
    };
    assert!(matches!(
        ranges.deliver(&delivery).await,
        DeliveryOutcome::Delivered { .. }
    ));
}

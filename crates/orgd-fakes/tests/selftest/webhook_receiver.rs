//! The Standard Webhooks receiver: signature verification, scripted answers, attempts recorded.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use orgd_fakes::webhook_receiver::{self as receiver, FakeReceiver, RECEIVER_SECRET, TEN_MB};
use standardwebhooks::Webhook;

use super::{client, client_with_timeout, header, io_kind};

const BODY: &str = r#"{"type":"run.failed","id":"evt_1","data":{"organizationId":"o1"}}"#;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn signed(
    client: &reqwest::Client,
    url: &str,
    secrets: &[&str],
    id: &str,
    ts: i64,
) -> reqwest::RequestBuilder {
    let signatures: Vec<String> = secrets
        .iter()
        .map(|s| {
            Webhook::new(s)
                .unwrap()
                .sign(id, ts, BODY.as_bytes())
                .unwrap()
        })
        .collect();
    client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signatures.join(" "))
        .body(BODY)
}

#[test]
fn the_reference_test_vector_signs_as_documented() {
    let webhook = Webhook::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
    let signature = webhook
        .sign(
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        )
        .unwrap();
    assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
}

#[tokio::test]
async fn verifies_signatures_and_records_every_attempt() {
    let fake = FakeReceiver::spawn(Some(RECEIVER_SECRET)).await;
    let client = client();
    let url = fake.endpoint();
    let old = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    let response = signed(&client, &url, &[RECEIVER_SECRET], "msg_1", now())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    signed(&client, &url, &[old], "msg_2", now())
        .send()
        .await
        .unwrap();
    signed(&client, &url, &[RECEIVER_SECRET, old], "msg_3", now())
        .send()
        .await
        .unwrap();
    signed(&client, &url, &[RECEIVER_SECRET], "msg_4", now() - 600)
        .send()
        .await
        .unwrap();
    client.post(&url).body(BODY).send().await.unwrap();

    let deliveries = fake.deliveries();
    let verified: Vec<_> = deliveries.iter().map(|d| d.verified).collect();
    assert_eq!(
        verified,
        [
            Some(true),
            Some(false),
            Some(true),
            Some(false),
            Some(false)
        ]
    );
    assert!(
        deliveries[3]
            .verify_error
            .as_deref()
            .unwrap()
            .contains("too old")
    );
    assert_eq!(deliveries[0].body, BODY.as_bytes());
    assert_eq!(deliveries[0].webhook_id(), Some("msg_1"));
    assert_eq!(deliveries[0].json().unwrap()["type"], "run.failed");
    assert!(
        receiver::verify(old, &deliveries[2]).is_ok(),
        "both signatures during a rotation"
    );
    assert_eq!(fake.webhook_ids(), ["msg_1", "msg_2", "msg_3", "msg_4"]);
}

#[tokio::test]
async fn scripted_answers_in_order_then_200() {
    let fake = FakeReceiver::spawn(Some(RECEIVER_SECRET)).await;
    fake.respond_with([
        receiver::status(500),
        receiver::retry_after(429, 3),
        receiver::retry_after(503, 4),
        receiver::redirect_to_metadata(),
        receiver::reset(),
        receiver::status(410),
    ]);
    let client = client();
    let url = fake.endpoint();
    let mut outcomes = Vec::new();
    for _ in 0..7 {
        let ts = now();
        match signed(&client, &url, &[RECEIVER_SECRET], "msg_retry", ts)
            .send()
            .await
        {
            Ok(r) => outcomes.push((
                r.status().as_u16(),
                header(r.headers(), "retry-after")
                    .or(header(r.headers(), "location"))
                    .map(str::to_string),
            )),
            Err(e) => {
                assert_eq!(io_kind(&e), Some(io::ErrorKind::ConnectionReset), "{e:?}");
                outcomes.push((0, None));
            }
        }
    }
    assert_eq!(
        outcomes,
        [
            (500, None),
            (429, Some("3".into())),
            (503, Some("4".into())),
            (301, Some("http://169.254.169.254/latest/meta-data/".into())),
            (0, None),
            (410, None),
            (200, None),
        ]
    );
    let deliveries = fake.deliveries();
    assert_eq!(deliveries.len(), 7, "every attempt is recorded");
    assert!(
        deliveries
            .iter()
            .all(|d| d.webhook_id() == Some("msg_retry") && d.verified == Some(true))
    );
    assert_eq!(fake.webhook_ids().len(), 1);
}

#[tokio::test]
async fn slow_hanging_and_huge_answers() {
    let fake = FakeReceiver::spawn(None).await;
    fake.respond_with([
        receiver::sleep(Duration::from_millis(600)),
        receiver::hang(),
        receiver::huge_body(TEN_MB),
    ]);
    let client = client_with_timeout(Duration::from_millis(300));
    let error = client
        .post(fake.endpoint())
        .body(BODY)
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout());
    let error = client
        .post(fake.endpoint())
        .body(BODY)
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout());

    let mut response = super::client()
        .post(fake.endpoint())
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), Some(TEN_MB as u64));
    let first = response.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty() && first.len() <= TEN_MB);
    assert_eq!(fake.deliveries().len(), 3);
    assert_eq!(fake.deliveries()[0].verified, None, "no secret, no verdict");
}

//! Outgoing webhooks (`reference/outbound-apis.md` §7–8; API.md, "Outgoing webhooks"): one
//! delivery attempt of one Standard Webhooks event to a customer's URL.
//!
//! The attempt goes through the guarded client: the URL is checked again at delivery and the
//! connection goes to the address that was checked; redirects are not followed (a 3xx is a
//! failure). The answer counts by its status; its body is read up to 64 KiB and ignored. The
//! caller's outbox keeps the event and schedules the next attempt: nothing is repeated here.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION};
use reqwest::{Method, Url};

use crate::client::{Answer, Client, Clock, Observer, Outcome, Provider, Unreached, retry_after};
use crate::signing::{self, WebhookSecret};
use crate::ssrf::{UrlPolicy, UrlRefusal, WEBHOOK_RESPONSE_CAP};

/// The most of a `Location` quoted in an error.
const LOCATION_MAX: usize = 200;

/// One attempt at one event.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub url: &'a str,
    /// The event's id, the same on every attempt (the receiver de-duplicates on it). It must
    /// not contain `.`, which separates the signed parts.
    pub id: &'a str,
    /// The event serialised once: the exact bytes sent and signed.
    pub body: &'a [u8],
    /// The current secret, then, during a rotation, the previous one: one signature each.
    pub secrets: &'a [&'a WebhookSecret],
}

/// How the attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Any 2xx.
    Delivered { status: u16 },
    /// 429 or 503: try again later, not before `retry_after_secs` when the receiver said.
    RetryLater {
        status: u16,
        retry_after_secs: Option<u64>,
    },
    /// 410: the receiver asks never to be called again; the webhook is disabled.
    Gone,
    /// Anything else: the status when one arrived, and why in our words.
    Failed { status: Option<u16>, error: String },
}

impl DeliveryOutcome {
    /// The status the receiver answered (`lastStatusCode`).
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Delivered { status } | Self::RetryLater { status, .. } => Some(*status),
            Self::Gone => Some(410),
            Self::Failed { status, .. } => *status,
        }
    }

    /// Why it did not deliver (`lastError`), or `None` when it did.
    pub fn error(&self) -> Option<String> {
        match self {
            Self::Delivered { .. } => None,
            Self::RetryLater { status, .. } => Some(format!("answered {status}")),
            Self::Gone => Some("answered 410".into()),
            Self::Failed { error, .. } => Some(error.clone()),
        }
    }
}

impl fmt::Display for DeliveryOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.error() {
            None => f.write_str("delivered"),
            Some(error) => f.write_str(&error),
        }
    }
}

pub struct WebhookClient {
    client: Client,
}

impl WebhookClient {
    /// A guarded client of its own: `timeout` is `ORGD_WEBHOOK_TIMEOUT`, and at most 64 KiB
    /// of an answer is read.
    pub fn new(
        policy: &UrlPolicy,
        timeout: Duration,
        observer: Arc<dyn Observer>,
        clock: Clock,
    ) -> Result<Self, reqwest::Error> {
        let client = Client::guarded(policy, timeout, WEBHOOK_RESPONSE_CAP, observer, clock)?;
        Ok(Self { client })
    }

    /// One attempt: signed now (`webhook-timestamp` is this attempt's), sent once.
    pub async fn deliver(&self, delivery: &Delivery<'_>) -> DeliveryOutcome {
        let failed = |error: &str| DeliveryOutcome::Failed {
            status: None,
            error: error.to_string(),
        };
        let Ok(url) = Url::parse(delivery.url) else {
            return failed(&refused(UrlRefusal::Malformed));
        };
        let Some(headers) = headers(delivery, self.client.now_ms().div_euclid(1000)) else {
            return failed("invalid event id or no signing secret");
        };
        let request = self
            .client
            .request(Method::POST, url)
            .headers(headers)
            .body(delivery.body.to_vec());
        match self.client.exchange(Provider::Webhook, request, read).await {
            Ok(outcome) => outcome,
            // The receiver answered this status before its body broke off: the status counts.
            Err(Unreached::Truncated { status, .. }) => answered(status, None).1,
            Err(unreached) => failed(&unreached_error(unreached)),
        }
    }
}

/// The Standard Webhooks headers, or `None` when the id cannot be one (empty, with a `.`, or
/// not a header value) or there is no secret to sign with.
fn headers(delivery: &Delivery<'_>, timestamp: i64) -> Option<HeaderMap> {
    if delivery.id.is_empty() || delivery.id.contains('.') || delivery.secrets.is_empty() {
        return None;
    }
    let signature =
        signing::signature_header(delivery.secrets, delivery.id, timestamp, delivery.body);
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("webhook-id", HeaderValue::from_str(delivery.id).ok()?);
    headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
    headers.insert("webhook-signature", HeaderValue::from_str(&signature).ok()?);
    Some(headers)
}

fn read(answer: &Answer) -> (Outcome, DeliveryOutcome) {
    answered(answer.status.as_u16(), Some(&answer.headers))
}

/// What the receiver's status means (with its headers, when they arrived).
fn answered(status: u16, headers: Option<&HeaderMap>) -> (Outcome, DeliveryOutcome) {
    let failed = |error: String| DeliveryOutcome::Failed {
        status: Some(status),
        error,
    };
    match status {
        200..=299 => (Outcome::Ok, DeliveryOutcome::Delivered { status }),
        410 => (Outcome::ClientError, DeliveryOutcome::Gone),
        429 | 503 => {
            let outcome = if status == 429 {
                Outcome::RateLimited
            } else {
                Outcome::ServerError
            };
            let retry_after_secs = headers.and_then(retry_after);
            let later = DeliveryOutcome::RetryLater {
                status,
                retry_after_secs,
            };
            (outcome, later)
        }
        300..=399 => {
            let location = headers
                .and_then(|h| h.get(LOCATION))
                .and_then(|l| l.to_str().ok())
                .map(|l| l.chars().take(LOCATION_MAX).collect::<String>());
            let error = match location {
                Some(location) => format!("redirected to {location}"),
                None => "redirected".into(),
            };
            (Outcome::ClientError, failed(error))
        }
        500..=599 => (Outcome::ServerError, failed(format!("answered {status}"))),
        _ => (Outcome::ClientError, failed(format!("answered {status}"))),
    }
}

fn unreached_error(unreached: Unreached) -> String {
    match unreached {
        Unreached::ConnectionRefused => "connection refused".into(),
        Unreached::ConnectFailed => "connection failed".into(),
        Unreached::TimedOut => "timed out".into(),
        Unreached::Reset => "connection reset".into(),
        Unreached::Interrupted | Unreached::Truncated { .. } => {
            "connection closed before an answer".into()
        }
        Unreached::Gateway => "gateway error".into(),
        Unreached::Blocked(refusal) => refused(refusal),
    }
}

fn refused(refusal: UrlRefusal) -> String {
    format!("refused: {refusal}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> WebhookSecret {
        WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap()
    }

    #[test]
    fn statuses_and_their_outcomes() {
        let outcome = |status| answered(status, None).1;
        assert_eq!(outcome(204), DeliveryOutcome::Delivered { status: 204 });
        assert_eq!(outcome(410), DeliveryOutcome::Gone);
        assert_eq!(
            outcome(503),
            DeliveryOutcome::RetryLater {
                status: 503,
                retry_after_secs: None
            }
        );
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from(30));
        assert_eq!(
            answered(429, Some(&headers)),
            (
                Outcome::RateLimited,
                DeliveryOutcome::RetryLater {
                    status: 429,
                    retry_after_secs: Some(30)
                }
            )
        );
        assert_eq!(outcome(500).error().as_deref(), Some("answered 500"));
        assert_eq!(outcome(404).status(), Some(404));
        assert_eq!(outcome(301).error().as_deref(), Some("redirected"));
        headers.insert(
            LOCATION,
            HeaderValue::from_static("http://169.254.169.254/"),
        );
        assert_eq!(
            answered(302, Some(&headers)).1.error().as_deref(),
            Some("redirected to http://169.254.169.254/")
        );
        assert_eq!(outcome(200).to_string(), "delivered");
    }

    #[test]
    fn transport_failures_in_our_words() {
        assert_eq!(unreached_error(Unreached::TimedOut), "timed out");
        assert_eq!(unreached_error(Unreached::Reset), "connection reset");
        assert_eq!(
            unreached_error(Unreached::Blocked(UrlRefusal::PrivateAddress)),
            "refused: the host resolves to a private address"
        );
    }

    #[test]
    fn headers_sign_with_every_secret() {
        let (new, old) = (WebhookSecret::generate(), secret());
        let delivery = Delivery {
            url: "https://example.com/hook",
            id: "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            body: br#"{"email":"test@example.com","username":"test_user"}"#,
            secrets: &[&new, &old],
        };
        let headers = headers(&delivery, 1_649_367_553).unwrap();
        assert_eq!(headers["webhook-timestamp"], "1649367553");
        let signatures: Vec<&str> = headers["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .collect();
        assert_eq!(signatures.len(), 2);
        assert_eq!(
            signatures[1],
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
        for id in ["", "msg.1", "line\nbreak"] {
            assert!(
                super::headers(&Delivery { id, ..delivery }, 1).is_none(),
                "{id:?}"
            );
        }
        assert!(
            super::headers(
                &Delivery {
                    secrets: &[],
                    ..delivery
                },
                1
            )
            .is_none()
        );
    }
}

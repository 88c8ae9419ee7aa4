//! A fake receiver of Standard Webhooks v1 deliveries (`outbound-apis.md` §7): it records every
//! attempt (headers, raw body, arrival instant), checks `webhook-signature` with the reference
//! `standardwebhooks` crate against a configurable secret, and answers each attempt from a
//! script (in order), or 200 `ok` when the script is empty.
//!
//! Every request counts as an attempt, whatever it is answered, so tests can assert that the
//! `webhook-id` stays the same across retries and that `webhook-timestamp` is recomputed.
//! Script steps are ordinary [`Behaviour`]s; the helpers below build the ones orgd's delivery
//! rules care about (500, 410, 429/503 with `Retry-After`, a redirect to the cloud metadata
//! address, a sleep, a hang, a 10 MB body, a connection reset).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use standardwebhooks::Webhook;

use super::common::{Behaviour, Call, Fake, Protocol, Reply, Seen};

/// A valid secret (24 random bytes, base64, `whsec_` prefix) for tests that need one.
pub const RECEIVER_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Ten mebibytes, for [`huge_body`].
pub const TEN_MB: usize = 10 * 1024 * 1024;

/// One delivery attempt as received.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: BTreeMap<String, String>,
    /// The body exactly as received (what the signature covers).
    pub body: Vec<u8>,
    pub at: Instant,
    /// Whether the signature verified against the configured secret (`None`: no secret set).
    pub verified: Option<bool>,
    /// Why verification failed (`standardwebhooks`' error text).
    pub verify_error: Option<String>,
}

impl Delivery {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The `webhook-id` header (the same on every retry of one event).
    pub fn webhook_id(&self) -> Option<&str> {
        self.header("webhook-id")
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// The receiver protocol and its state.
pub struct Receiver {
    secret: Mutex<Option<String>>,
    deliveries: Mutex<Vec<Delivery>>,
}

pub type FakeReceiver = Fake<Receiver>;

impl Fake<Receiver> {
    /// A receiver verifying with `secret` (`whsec_…`), or recording only when `None`.
    pub async fn spawn(secret: Option<&str>) -> Self {
        Fake::start(Receiver {
            secret: Mutex::new(secret.map(str::to_string)),
            deliveries: Mutex::new(Vec::new()),
        })
        .await
    }

    /// The URL to register as a webhook endpoint (`POST` to any path is accepted).
    pub fn endpoint(&self) -> String {
        format!("{}/hook", self.url)
    }

    /// Answers the next attempts with `steps`, one each, in order; then 200 again.
    pub fn respond_with(&self, steps: impl IntoIterator<Item = Behaviour>) {
        self.script("*", steps);
    }
}

impl Receiver {
    /// Verifies later deliveries with this secret (e.g. after a rotation).
    pub fn set_secret(&self, secret: Option<&str>) {
        *self.secret.lock().unwrap() = secret.map(str::to_string);
    }

    /// Every attempt received, oldest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    /// The distinct `webhook-id`s received, in order of first arrival.
    pub fn webhook_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for delivery in self.deliveries() {
            if let Some(id) = delivery.webhook_id()
                && !ids.iter().any(|i| i == id)
            {
                ids.push(id.to_string());
            }
        }
        ids
    }
}

/// Verifies a delivery's signature against `secret` with the reference library (signature,
/// and a timestamp within 5 minutes of now). Useful to check a second secret after rotation.
pub fn verify(secret: &str, delivery: &Delivery) -> Result<(), String> {
    let webhook = Webhook::new(secret).map_err(|e| e.to_string())?;
    let mut headers = HeaderMap::new();
    for (name, value) in &delivery.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    webhook
        .verify(&delivery.body, &headers)
        .map_err(|e| e.to_string())
}

impl Protocol for Receiver {
    const ROUTES: &'static [&'static str] = &["POST /hook", "POST /hook/{name}"];

    fn observe(&self, seen: &Seen) {
        let mut delivery = Delivery {
            method: seen.method.clone(),
            path: seen.path.clone(),
            headers: seen.headers.clone(),
            body: seen.body_raw.clone(),
            at: seen.at,
            verified: None,
            verify_error: None,
        };
        if let Some(secret) = self.secret.lock().unwrap().as_deref() {
            let result = verify(secret, &delivery);
            delivery.verified = Some(result.is_ok());
            delivery.verify_error = result.err();
        }
        self.deliveries.lock().unwrap().push(delivery);
    }

    fn answer(&self, call: &Call<'_>) -> Reply {
        if call.seen.method == "POST" {
            Reply::text(200, "ok")
        } else {
            Reply::empty(405).header("allow", "POST")
        }
    }
}

/// 200 `ok` (the default; useful inside a script).
pub fn ok() -> Behaviour {
    Behaviour::text(200, "ok")
}

/// Any status with an empty body (500, 410, 400, ...).
pub fn status(code: u16) -> Behaviour {
    Behaviour::Respond(Reply::empty(code))
}

/// `code` (429, 503, ...) with `Retry-After: secs`.
pub fn retry_after(code: u16, secs: u64) -> Behaviour {
    Behaviour::Respond(Reply::empty(code).header("retry-after", secs))
}

/// A 301 to `location`.
pub fn redirect(location: &str) -> Behaviour {
    Behaviour::Respond(Reply::empty(301).header("location", location))
}

/// A 301 to the cloud metadata service, which a sender must never follow.
pub fn redirect_to_metadata() -> Behaviour {
    redirect("http://169.254.169.254/latest/meta-data/")
}

/// Waits `duration`, then answers 200.
pub fn sleep(duration: Duration) -> Behaviour {
    Behaviour::DelayBefore(duration)
}

/// Never answers.
pub fn hang() -> Behaviour {
    Behaviour::Hang
}

/// 200 with a body of `len` bytes (a sender must stop reading at its cap).
pub fn huge_body(len: usize) -> Behaviour {
    Behaviour::Respond(Reply::raw(200, "text/plain", vec![b'x'; len]))
}

/// Resets the connection (TCP RST) without answering.
pub fn reset() -> Behaviour {
    Behaviour::Reset
}

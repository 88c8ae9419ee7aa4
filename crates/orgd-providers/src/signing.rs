//! Standard Webhooks v1 signatures for outgoing webhooks.
//!
//! Receivers verify our deliveries with any Standard Webhooks library, so the signature must be
//! exactly the specification's: `v1,` followed by the standard base64 (with padding) of
//! HMAC-SHA256 over `"{webhook-id}.{webhook-timestamp}.{body}"`, keyed with the *decoded* bytes
//! of the `whsec_…` secret. During a secret rotation both the new and the old secret sign, and
//! the signatures travel space-separated in one `webhook-signature` header.

use std::fmt;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The prefix the specification gives serialised symmetric secrets.
const PREFIX: &str = "whsec_";
/// Secrets are 24 to 64 bytes (192 to 512 bits) per the specification.
const MIN_LEN: usize = 24;
const MAX_LEN: usize = 64;
/// Length of secrets we generate: 256 bits, as common Standard Webhooks senders do.
const GENERATED_LEN: usize = 32;

/// A webhook signing secret: 24 to 64 random bytes, shown to users as `whsec_<base64>`.
///
/// `Debug` never shows the bytes, so a secret that ends up in a log line does not leak.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

/// Why a `whsec_…` string is not a usable secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the secret must start with whsec_")]
    MissingPrefix,
    #[error("the secret is not valid base64")]
    NotBase64,
    #[error("the secret must be 24 to 64 bytes long, not {0}")]
    Length(usize),
}

impl WebhookSecret {
    /// A new secret of 32 bytes from the thread-local cryptographically secure generator.
    pub fn generate() -> Self {
        Self {
            key: rand::random::<[u8; GENERATED_LEN]>().to_vec(),
        }
    }

    /// Reads a secret in its `whsec_<standard base64 with padding>` form.
    pub fn parse(value: &str) -> Result<Self, SecretError> {
        let encoded = value
            .strip_prefix(PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::NotBase64)?;
        if !(MIN_LEN..=MAX_LEN).contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Self { key })
    }

    /// The `whsec_…` form, to show the user once and to store (encrypted).
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.key))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(\"whsec_[REDACTED]\")")
    }
}

/// The `v1,<base64>` signature of one delivery attempt.
///
/// `body` must be the exact bytes sent: sign after serialising, never re-serialise.
pub fn sign(secret: &WebhookSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    // aws-lc-rs, the crypto provider rustls already brings: one implementation of HMAC.
    let key = hmac::Key::new(hmac::HMAC_SHA256, &secret.key);
    let mut mac = hmac::Context::with_key(&key);
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.sign()))
}

/// The `webhook-signature` header value: one signature per secret, space-separated, so a
/// receiver that still holds the old secret keeps verifying during a rotation.
pub fn signature_header(
    secrets: &[&WebhookSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| sign(secret, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    const SPEC_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const SPEC_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const SPEC_TS: i64 = 1_649_367_553;
    const SPEC_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;

    fn spec_secret() -> WebhookSecret {
        WebhookSecret::parse(SPEC_SECRET).unwrap()
    }

    #[test]
    fn specification_vector() {
        assert_eq!(
            sign(&spec_secret(), SPEC_ID, SPEC_TS, SPEC_BODY),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn matches_the_reference_library_for_every_key_length() {
        for len in [MIN_LEN, 32, 48, MAX_LEN] {
            let secret =
                WebhookSecret::parse(&format!("whsec_{}", STANDARD.encode(vec![7u8; len])))
                    .unwrap();
            let reference = standardwebhooks::Webhook::new(&secret.expose())
                .unwrap()
                .sign(SPEC_ID, SPEC_TS, SPEC_BODY)
                .unwrap();
            assert_eq!(sign(&secret, SPEC_ID, SPEC_TS, SPEC_BODY), reference);
        }
    }

    #[test]
    fn header_carries_one_signature_per_secret() {
        let old = spec_secret();
        let new = WebhookSecret::generate();
        let header = signature_header(&[&new, &old], SPEC_ID, SPEC_TS, SPEC_BODY);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&new, SPEC_ID, SPEC_TS, SPEC_BODY));
        assert_eq!(parts[1], "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn reference_verifier_accepts_a_rotation_header() {
        let receivers_secret = spec_secret();
        let other = WebhookSecret::generate();
        let now = i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        let body = br#"{"type":"webhook.test","data":{}}"#;
        let header = signature_header(&[&other, &receivers_secret], "msg_abc", now, body);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("webhook-id", "msg_abc".parse().unwrap());
        headers.insert("webhook-timestamp", now.to_string().parse().unwrap());
        headers.insert("webhook-signature", header.parse().unwrap());

        let verifier = standardwebhooks::Webhook::new(SPEC_SECRET).unwrap();
        verifier.verify(body, &headers).unwrap();

        let tampered = br#"{"type":"webhook.test","data":{"x":1}}"#;
        assert!(verifier.verify(tampered, &headers).is_err());
    }

    #[test]
    fn generated_secrets_round_trip_and_differ() {
        let secret = WebhookSecret::generate();
        let exposed = secret.expose();
        assert!(exposed.starts_with("whsec_"));
        let parsed = WebhookSecret::parse(&exposed).unwrap();
        assert_eq!(parsed.key.len(), GENERATED_LEN);
        assert_eq!(parsed.expose(), exposed);
        assert_ne!(WebhookSecret::generate().expose(), exposed);
    }

    #[test]
    fn parse_refuses_malformed_secrets() {
        let encode = |len: usize| format!("whsec_{}", STANDARD.encode(vec![1u8; len]));
        assert_eq!(
            WebhookSecret::parse("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap_err(),
            SecretError::MissingPrefix
        );
        assert_eq!(
            WebhookSecret::parse("whsec_not*base64").unwrap_err(),
            SecretError::NotBase64
        );
        assert_eq!(
            WebhookSecret::parse(&encode(32).replace('=', "")).unwrap_err(),
            SecretError::NotBase64,
            "padding is required"
        );
        assert_eq!(
            WebhookSecret::parse(&encode(23)).unwrap_err(),
            SecretError::Length(23)
        );
        assert_eq!(
            WebhookSecret::parse(&encode(65)).unwrap_err(),
            SecretError::Length(65)
        );
        assert!(WebhookSecret::parse(&encode(24)).is_ok());
        assert!(WebhookSecret::parse(&encode(64)).is_ok());
    }

    #[test]
    fn debug_hides_the_secret() {
        let secret = spec_secret();
        let shown = format!("{secret:?}");
        assert!(!shown.contains("C2FVsBQIhrscChlQIMV"), "{shown}");
        assert!(shown.contains("REDACTED"));
    }
}

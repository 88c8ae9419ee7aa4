//! What the three provider clients share: the request they are given, the answer they
//! return, the error classes every provider answer falls into, and the one call loop that
//! retries only rate-limit and overload answers.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::integrations::provider::{MAX_ATTEMPTS, MAX_INLINE_WAIT_SECS, backoff};
use crate::metrics::Metrics;
use orgd_core::models::AiProvider;
use orgd_providers::client::Observer;
use orgd_providers::{Outcome, Provider};

/// The instructions every model gets; the log travels separately as the user's input.
pub const SYSTEM_PROMPT: &str = "You analyse failed automated test runs. From the error and \
the log of the run, find the most likely root cause and suggest a concrete fix. Answer only \
with a JSON object {\"rootCause\": string, \"suggestedFix\": string}.";

/// The JSON schema the answer must follow.
pub fn answer_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "rootCause": {"type": "string"},
            "suggestedFix": {"type": "string"}
        },
        "required": ["rootCause", "suggestedFix"],
        "additionalProperties": false
    })
}

/// Room for reasoning and the answer (the cap includes reasoning tokens everywhere).
pub const MAX_OUTPUT_TOKENS: i64 = 8000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: i64,
    pub output: i64,
}

/// One call: which provider and model, with which key, about which log.
pub struct Call<'a> {
    pub provider: AiProvider,
    pub base_url: &'a str,
    pub model: &'a str,
    pub key: &'a str,
    pub log: &'a str,
}

/// What a provider made of a request it accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Answer {
        root_cause: String,
        suggested_fix: String,
        tokens: Tokens,
    },
    /// The provider answered, but nothing usable came back (blocked, refused, truncated,
    /// not the requested JSON). `reason` is ours, never the provider's text.
    Unusable {
        reason: &'static str,
        tokens: Tokens,
    },
}

/// A provider call that did not produce an answer, in our words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    #[error("the AI provider refused the API key")]
    KeyRejected,
    #[error("the AI provider is rate limiting requests")]
    RateLimited { retry_after_secs: u64 },
    #[error("the AI provider is overloaded")]
    Overloaded,
    #[error("the AI provider could not be reached")]
    Unreachable,
    #[error("the AI provider refused the request ({0})")]
    Refused(&'static str),
    /// The error and log did not fit the model's context window.
    #[error("the AI provider refused the request (the log is too long for the model)")]
    TooLong,
}

impl LlmError {
    /// True when the provider received the request (it counts as an attempt).
    pub fn reached_provider(&self) -> bool {
        !matches!(self, Self::Unreachable)
    }

    /// The reason stored on the failed analysis.
    pub fn reason(&self) -> String {
        let mut reason = self.to_string();
        if let Some(first) = reason.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        reason
    }

    pub fn into_api_error(self) -> ApiError {
        let message = self.reason();
        match self {
            Self::RateLimited { retry_after_secs } => ApiError::RetryLater {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error: "Provider rate limited",
                message: format!("{message}; retry after {retry_after_secs} seconds").into(),
                retry_after_secs,
            },
            Self::Overloaded => ApiError::Refused {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error: "Provider unavailable",
                message: message.into(),
                extra: Default::default(),
            },
            Self::Unreachable => ApiError::Refused {
                status: StatusCode::BAD_GATEWAY,
                error: "Provider unavailable",
                message: message.into(),
                extra: Default::default(),
            },
            Self::KeyRejected | Self::Refused(_) | Self::TooLong => ApiError::Refused {
                status: StatusCode::BAD_GATEWAY,
                error: "Provider error",
                message: message.into(),
                extra: Default::default(),
            },
        }
    }

    fn outcome(&self) -> Outcome {
        match self {
            Self::KeyRejected | Self::Refused(_) | Self::TooLong => Outcome::ClientError,
            Self::RateLimited { .. } => Outcome::RateLimited,
            Self::Overloaded => Outcome::ServerError,
            Self::Unreachable => Outcome::Unreachable,
        }
    }

    /// How long to wait before asking again, or `None` when asking again is pointless.
    fn retry_delay(&self, attempt: u32) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after_secs } if *retry_after_secs <= MAX_INLINE_WAIT_SECS => {
                Some(Duration::from_secs(*retry_after_secs))
            }
            Self::Overloaded => Some(backoff(attempt)),
            _ => None,
        }
    }
}

/// One provider's protocol (`reference/llm-apis.md`).
pub trait LlmProtocol: Send + Sync {
    /// The POST with its auth headers and a body asking for the answer schema.
    fn request(&self, http: &reqwest::Client, call: &Call<'_>) -> reqwest::RequestBuilder;
    /// The answer text of a successful (200) body, or why there is none usable.
    fn answer_text(&self, body: &Value) -> Result<String, &'static str>;
    fn tokens(&self, body: &Value) -> Tokens;
    /// The class of an error answer.
    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: &Value) -> LlmError;
}

fn outbound(provider: AiProvider) -> Provider {
    match provider {
        AiProvider::Openai => Provider::OpenAI,
        AiProvider::Anthropic => Provider::Anthropic,
        AiProvider::Gemini => Provider::Gemini,
    }
}

/// Runs one analysis call, repeating it only after rate-limit or overload answers; each
/// attempt is counted in `metrics`.
pub async fn call(
    http: &reqwest::Client,
    metrics: &Metrics,
    protocol: &dyn LlmProtocol,
    call: &Call<'_>,
) -> Result<Reply, LlmError> {
    let mut attempt = 1;
    loop {
        let result = call_once(http, protocol, call).await;
        let outcome = result
            .as_ref()
            .map_or_else(LlmError::outcome, |_| Outcome::Ok);
        metrics.record(outbound(call.provider), outcome);
        match result {
            Err(e) if attempt < MAX_ATTEMPTS => match e.retry_delay(attempt) {
                Some(delay) => {
                    tracing::info!(error = %e, attempt, "AI provider call failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                None => return Err(e),
            },
            other => return other,
        }
    }
}

async fn call_once(
    http: &reqwest::Client,
    protocol: &dyn LlmProtocol,
    call: &Call<'_>,
) -> Result<Reply, LlmError> {
    let response = protocol
        .request(http, call)
        .send()
        .await
        .map_err(|_| LlmError::Unreachable)?;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.map_err(|_| LlmError::Unreachable)?;
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(protocol.classify(status, &headers, &body));
    }
    let tokens = protocol.tokens(&body);
    let text = match protocol.answer_text(&body) {
        Ok(text) => text,
        Err(reason) => return Ok(Reply::Unusable { reason, tokens }),
    };
    Ok(parse_answer(&text, tokens))
}

/// The `{rootCause, suggestedFix}` object the model was asked for.
pub fn parse_answer(text: &str, tokens: Tokens) -> Reply {
    let parsed: Option<Value> = serde_json::from_str(text.trim()).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    match (field("rootCause"), field("suggestedFix")) {
        (Some(root_cause), Some(suggested_fix)) => Reply::Answer {
            root_cause,
            suggested_fix,
            tokens,
        },
        _ => Reply::Unusable {
            reason: "The model's answer was not the requested JSON",
            tokens,
        },
    }
}

pub const BLOCKED: &str = "The provider blocked the request or answer for safety reasons";
pub const REFUSED: &str = "The model refused to answer";
pub const TRUNCATED: &str = "The model's answer was cut off before it was complete";
pub const EMPTY: &str = "The model gave no answer";

/// Seconds from `retry-after-ms` or `retry-after` (rounded up).
pub fn retry_after(headers: &HeaderMap) -> Option<u64> {
    let header = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    header("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| header("retry-after"))
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| s.ceil() as u64)
}

/// The classes shared by all three providers; `status` had no more specific meaning.
pub fn classify_status(status: StatusCode, headers: &HeaderMap) -> LlmError {
    match status.as_u16() {
        401 | 403 => LlmError::KeyRejected,
        429 => LlmError::RateLimited {
            retry_after_secs: retry_after(headers).unwrap_or(1),
        },
        408 | 500..=599 => LlmError::Overloaded,
        404 => LlmError::Refused("model not found"),
        _ => LlmError::Refused("invalid request"),
    }
}

/// Whether the error message of a 400 is one of the provider's context-window refusals
/// (Anthropic and Gemini have no code for it, only the message).
pub fn says_too_long(body: &Value, phrases: &[&str]) -> bool {
    let message = body["error"]["message"].as_str().unwrap_or_default();
    phrases.iter().any(|p| message.contains(p))
}

/// Integer at `pointer`, 0 when absent.
pub fn count(body: &Value, pointer: &str) -> i64 {
    body.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_must_be_the_schema() {
        let t = Tokens::default();
        assert!(matches!(
            parse_answer(r#"{"rootCause":"a","suggestedFix":"b"}"#, t),
            Reply::Answer { .. }
        ));
        for bad in [
            "not json",
            r#"{"rootCause":"a"}"#,
            r#"{"rootCause":1,"suggestedFix":"b"}"#,
        ] {
            assert!(
                matches!(parse_answer(bad, t), Reply::Unusable { .. }),
                "{bad}"
            );
        }
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(2));
        h.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(retry_after(&h), Some(2));
        assert_eq!(
            LlmError::KeyRejected.reason(),
            "The AI provider refused the API key"
        );
    }
}

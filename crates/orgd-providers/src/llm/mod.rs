//! Failure analysis by an AI model: what the OpenAI, Anthropic and Gemini protocols share
//! (the request they are given, the answer they return, the classes of their errors) and
//! the client that asks them over the shared `Client`.

pub mod anthropic;
pub mod gemini;
pub mod openai;

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::client::{Answer, Client, Provider, ProviderError, Repeat, retry_after, with_retries};

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

/// One call: which model, at which base URL, with which key, about which log.
#[derive(Clone, Copy)]
pub struct Call<'a> {
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

/// One provider's protocol (`reference/llm-apis.md`).
pub trait LlmProtocol: Send + Sync {
    /// Whom the calls go to.
    fn provider(&self) -> Provider;
    /// The POST with its auth headers and a body asking for the answer schema.
    fn request(&self, client: &Client, call: &Call<'_>) -> RequestBuilder;
    /// The answer text of a successful (200) body, or why there is none usable.
    fn answer_text(&self, body: &Value) -> Result<String, &'static str>;
    fn tokens(&self, body: &Value) -> Tokens;
    /// The class of an error answer.
    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: &Value) -> ProviderError;
}

/// Asks the AI providers over the shared client.
pub struct LlmClient {
    client: Client,
}

impl LlmClient {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Asks `protocol`'s provider about `call.log`, repeating as the client's rule allows.
    pub async fn analyze(
        &self,
        protocol: &dyn LlmProtocol,
        call: &Call<'_>,
    ) -> Result<Reply, ProviderError> {
        with_retries(Repeat::IfNotApplied, || {
            let request = protocol.request(&self.client, call);
            self.client.send(protocol.provider(), request, |answer| {
                read(protocol, answer)
            })
        })
        .await
    }
}

fn read(protocol: &dyn LlmProtocol, answer: &Answer) -> Result<Reply, ProviderError> {
    if !answer.status.is_success() {
        return Err(protocol.classify(answer.status, &answer.headers, &answer.body));
    }
    let tokens = protocol.tokens(&answer.body);
    Ok(match protocol.answer_text(&answer.body) {
        Ok(text) => parse_answer(&text, tokens),
        Err(reason) => Reply::Unusable { reason, tokens },
    })
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

/// The classes shared by all three providers; `status` had no more specific meaning.
pub fn classify_status(status: StatusCode, headers: &HeaderMap) -> ProviderError {
    match status.as_u16() {
        401 | 403 => ProviderError::InvalidCredentials,
        429 => rate_limited(retry_after(headers)),
        // An analysis has no effect besides its answer: any server failure may be repeated.
        408 | 500..=599 => ProviderError::Overloaded,
        404 => ProviderError::NotFound("model"),
        _ => ProviderError::Refused("invalid request"),
    }
}

/// A per-minute limit, to be waited out for `retry_after_secs` (1 s when not given).
pub fn rate_limited(retry_after_secs: Option<u64>) -> ProviderError {
    ProviderError::RateLimited {
        retry_after_secs: retry_after_secs.unwrap_or(1),
        inline: true,
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
    fn statuses_without_a_more_specific_meaning() {
        let h = HeaderMap::new();
        let class = |code| classify_status(StatusCode::from_u16(code).unwrap(), &h);
        assert_eq!(class(401), ProviderError::InvalidCredentials);
        assert_eq!(class(403), ProviderError::InvalidCredentials);
        assert_eq!(class(429), rate_limited(None));
        assert_eq!(
            rate_limited(None),
            ProviderError::RateLimited {
                retry_after_secs: 1,
                inline: true
            }
        );
        assert_eq!(class(408), ProviderError::Overloaded);
        assert_eq!(class(529), ProviderError::Overloaded);
        assert_eq!(class(404), ProviderError::NotFound("model"));
        assert_eq!(class(422), ProviderError::Refused("invalid request"));
    }
}

//! Anthropic Messages API (`reference/llm-apis.md` §2): `POST {base}/v1/messages`,
//! `x-api-key` + `anthropic-version`, native structured output (`output_config.format`).

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::client::{Client, Provider, ProviderError, retry_after};
use crate::llm::{self, Call, LlmProtocol, Tokens};

pub struct Anthropic;

pub const API_VERSION: &str = "2023-06-01";

impl LlmProtocol for Anthropic {
    fn provider(&self) -> Provider {
        Provider::Anthropic
    }

    fn request(&self, client: &Client, call: &Call<'_>) -> RequestBuilder {
        client
            .post(format!("{}/v1/messages", call.base_url))
            .header("x-api-key", call.key)
            .header("anthropic-version", API_VERSION)
            .json(&json!({
                "model": call.model,
                "max_tokens": llm::MAX_OUTPUT_TOKENS,
                "system": llm::SYSTEM_PROMPT,
                "messages": [{"role": "user", "content": call.log}],
                "output_config": {
                    "effort": "low",
                    "format": {"type": "json_schema", "schema": llm::answer_schema()},
                },
            }))
    }

    fn answer_text(&self, body: &Value) -> Result<String, &'static str> {
        match body["stop_reason"].as_str() {
            Some("refusal") => return Err(llm::REFUSED),
            Some("max_tokens" | "model_context_window_exceeded") => return Err(llm::TRUNCATED),
            _ => {}
        }
        let text: String = body["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|block| block["type"] == "text")
            .filter_map(|block| block["text"].as_str())
            .collect();
        if text.trim().is_empty() {
            return Err(llm::EMPTY);
        }
        Ok(text)
    }

    fn tokens(&self, body: &Value) -> Tokens {
        Tokens {
            input: llm::count(body, "/usage/input_tokens"),
            output: llm::count(body, "/usage/output_tokens"),
        }
    }

    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: &Value) -> ProviderError {
        let spend_limit = body["error"]["details"]["error_code"] == "enforced_spend_limit_reached";
        match status.as_u16() {
            402 => ProviderError::Refused("the provider account has a billing problem"),
            // A monthly spend cap comes without retry-after and will not clear soon.
            429 if spend_limit || retry_after(headers).is_none() => {
                ProviderError::Refused("the provider account reached its spend limit")
            }
            413 => ProviderError::TooLarge,
            400 if llm::says_too_long(body, &["prompt is too long", "exceed context limit"]) => {
                ProviderError::TooLarge
            }
            _ => llm::classify_status(status, headers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_overflows_are_recognised() {
        let h = HeaderMap::new();
        let too_long = json!({"type":"error","error":{"type":"invalid_request_error",
            "message":"prompt is too long: 213462 tokens > 200000 maximum"}});
        assert_eq!(
            Anthropic.classify(StatusCode::BAD_REQUEST, &h, &too_long),
            ProviderError::TooLarge
        );
        let other =
            json!({"type":"error","error":{"type":"invalid_request_error","message":"bad"}});
        assert_eq!(
            Anthropic.classify(StatusCode::BAD_REQUEST, &h, &other),
            ProviderError::Refused("invalid request")
        );
    }

    #[test]
    fn thinking_blocks_are_skipped() {
        let body = json!({"content":[{"type":"thinking","thinking":"hm"},{"type":"text","text":"{}"}],
            "stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":4}});
        assert_eq!(Anthropic.answer_text(&body).unwrap(), "{}");
        assert_eq!(
            Anthropic.answer_text(&json!({"stop_reason":"refusal","content":[]})),
            Err(llm::REFUSED)
        );
    }
}

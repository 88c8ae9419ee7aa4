//! OpenAI Responses API (`reference/llm-apis.md` §1): `POST {base}/responses`, Bearer key,
//! JSON schema output, `store: false` so the customer's log is not kept server-side.

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::client::{Client, Provider, ProviderError};
use crate::llm::{self, Call, LlmProtocol, Tokens};

pub struct OpenAi;

impl LlmProtocol for OpenAi {
    fn provider(&self) -> Provider {
        Provider::OpenAI
    }

    fn request(&self, client: &Client, call: &Call<'_>) -> RequestBuilder {
        client
            .post(format!("{}/responses", call.base_url))
            .bearer_auth(call.key)
            .json(&json!({
                "model": call.model,
                "instructions": llm::SYSTEM_PROMPT,
                "input": call.log,
                "max_output_tokens": llm::MAX_OUTPUT_TOKENS,
                "store": false,
                "reasoning": {"effort": "low"},
                "text": {"format": {
                    "type": "json_schema",
                    "name": "rca",
                    "strict": true,
                    "schema": llm::answer_schema(),
                }},
            }))
    }

    fn answer_text(&self, body: &Value) -> Result<String, &'static str> {
        match body["status"].as_str() {
            Some("incomplete") => {
                return Err(match body["incomplete_details"]["reason"].as_str() {
                    Some("content_filter") => llm::BLOCKED,
                    _ => llm::TRUNCATED,
                });
            }
            Some("completed") | None => {}
            Some(_) => return Err(llm::EMPTY),
        }
        let parts = body["output"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|item| item["type"] == "message")
            .flat_map(|item| item["content"].as_array().into_iter().flatten());
        let mut text = String::new();
        for part in parts {
            match part["type"].as_str() {
                Some("output_text") => text.push_str(part["text"].as_str().unwrap_or_default()),
                Some("refusal") => return Err(llm::REFUSED),
                _ => {}
            }
        }
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
        let code = body["error"]["code"]
            .as_str()
            .or(body["error"]["type"].as_str());
        match code {
            Some("insufficient_quota" | "credit_balance_exhausted") => {
                ProviderError::Refused("the provider account is out of credit")
            }
            Some("context_length_exceeded") => ProviderError::TooLarge,
            _ => llm::classify_status(status, headers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_selected_by_type() {
        let body = json!({"status":"completed","output":[
            {"type":"reasoning","summary":[]},
            {"type":"message","content":[{"type":"output_text","text":"{\"a\":1}"}]}
        ],"usage":{"input_tokens":5,"output_tokens":7}});
        assert_eq!(OpenAi.answer_text(&body).unwrap(), "{\"a\":1}");
        assert_eq!(
            OpenAi.tokens(&body),
            Tokens {
                input: 5,
                output: 7
            }
        );
        let filtered =
            json!({"status":"incomplete","incomplete_details":{"reason":"content_filter"}});
        assert_eq!(OpenAi.answer_text(&filtered), Err(llm::BLOCKED));
    }
}

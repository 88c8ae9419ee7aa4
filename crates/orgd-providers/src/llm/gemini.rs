//! Gemini generateContent (`reference/llm-apis.md` §3):
//! `POST {base}/v1beta/models/{model}:generateContent`, `x-goog-api-key` (never the query).

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::client::{Client, Provider, ProviderError, retry_after};
use crate::llm::{self, Call, LlmProtocol, Tokens};

pub struct Gemini;

impl LlmProtocol for Gemini {
    fn provider(&self) -> Provider {
        Provider::Gemini
    }

    fn request(&self, client: &Client, call: &Call<'_>) -> RequestBuilder {
        client
            .post(format!(
                "{}/v1beta/models/{}:generateContent",
                call.base_url, call.model
            ))
            .header("x-goog-api-key", call.key)
            .json(&json!({
                "systemInstruction": {"parts": [{"text": llm::SYSTEM_PROMPT}]},
                "contents": [{"role": "user", "parts": [{"text": call.log}]}],
                "generationConfig": {
                    "maxOutputTokens": llm::MAX_OUTPUT_TOKENS,
                    "responseMimeType": "application/json",
                    "responseJsonSchema": llm::answer_schema(),
                    "thinkingConfig": {"thinkingLevel": "low"},
                },
            }))
    }

    fn answer_text(&self, body: &Value) -> Result<String, &'static str> {
        if body["promptFeedback"]["blockReason"].is_string() {
            return Err(llm::BLOCKED);
        }
        let candidate = &body["candidates"][0];
        match candidate["finishReason"].as_str() {
            Some("STOP") | None => {}
            Some("MAX_TOKENS") => return Err(llm::TRUNCATED),
            Some(_) => return Err(llm::BLOCKED),
        }
        let text: String = candidate["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|part| part["thought"] != true)
            .filter_map(|part| part["text"].as_str())
            .collect();
        if text.trim().is_empty() {
            return Err(llm::EMPTY);
        }
        Ok(text)
    }

    /// Thoughts are billed as output.
    fn tokens(&self, body: &Value) -> Tokens {
        Tokens {
            input: llm::count(body, "/usageMetadata/promptTokenCount"),
            output: llm::count(body, "/usageMetadata/candidatesTokenCount")
                + llm::count(body, "/usageMetadata/thoughtsTokenCount"),
        }
    }

    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: &Value) -> ProviderError {
        let details: Vec<&Value> = body["error"]["details"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        let detail = |field: &'static str| details.iter().filter_map(move |d| d[field].as_str());
        let reason = |r: &str| detail("reason").any(|x| x == r);
        match status.as_u16() {
            // An invalid key is a 400 on Gemini.
            400 if reason("API_KEY_INVALID") => ProviderError::InvalidCredentials,
            400 if llm::says_too_long(body, &["input token count"]) => ProviderError::TooLarge,
            429 => {
                let per_day = details
                    .iter()
                    .flat_map(|d| d["violations"].as_array().into_iter().flatten())
                    .filter_map(|v| v["quotaId"].as_str())
                    .any(|q| q.contains("PerDay"));
                if per_day {
                    return ProviderError::Refused("the provider's daily quota is used up");
                }
                let delay = detail("retryDelay")
                    .find_map(|d| d.trim_end_matches('s').parse::<f64>().ok())
                    .map(|s| s.ceil() as u64);
                llm::rate_limited(delay.or(retry_after(headers)))
            }
            _ => llm::classify_status(status, headers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_keys_and_quotas() {
        let h = HeaderMap::new();
        let bad_key = json!({"error":{"code":400,"status":"INVALID_ARGUMENT","details":[
            {"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}});
        assert_eq!(
            Gemini.classify(StatusCode::BAD_REQUEST, &h, &bad_key),
            ProviderError::InvalidCredentials
        );
        let limited = json!({"error":{"code":429,"details":[
            {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"3s"}]}});
        assert_eq!(
            Gemini.classify(StatusCode::TOO_MANY_REQUESTS, &h, &limited),
            ProviderError::RateLimited {
                retry_after_secs: 3,
                inline: true
            }
        );
        let overflow = json!({"error":{"code":400,"status":"INVALID_ARGUMENT","message":
            "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."}});
        assert_eq!(
            Gemini.classify(StatusCode::BAD_REQUEST, &h, &overflow),
            ProviderError::TooLarge
        );
        let thoughts = json!({"candidates":[{"content":{"parts":[{"text":"x","thought":true},{"text":"{}"}]},"finishReason":"STOP"}]});
        assert_eq!(Gemini.answer_text(&thoughts).unwrap(), "{}");
    }
}

//! Fake OpenAI (Responses), Anthropic (Messages) and Gemini (generateContent) servers on
//! loopback speaking `reference/llm-apis.md`: they check the auth header forms, record what
//! they received, answer with reasoning parts before the answer, and take injected answers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    OpenAi,
    Anthropic,
    Gemini,
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct LlmSeen {
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Value,
}

impl LlmSeen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The log text sent, wherever the protocol puts it.
    pub fn log(&self) -> String {
        let b = &self.body;
        b["input"]
            .as_str()
            .or(b["messages"][0]["content"].as_str())
            .or(b["contents"][0]["parts"][0]["text"].as_str())
            .unwrap_or_default()
            .to_string()
    }
}

/// Status, headers and body of an injected answer.
pub type Injected = (u16, Vec<(&'static str, String)>, Value);

struct LlmState {
    kind: Kind,
    keys: Mutex<Vec<String>>,
    seen: Mutex<Vec<LlmSeen>>,
    injected: Mutex<VecDeque<Injected>>,
    /// The text of the answer part (normally the JSON the schema asks for).
    answer_text: Mutex<String>,
    /// How long each answer takes.
    delay: Mutex<std::time::Duration>,
}

pub struct FakeLlm {
    /// The base URL to configure (`OPENAI_API_URL` includes `/v1`).
    pub url: String,
    state: Arc<LlmState>,
}

pub const ROOT_CAUSE: &str = "The login button selector changed";
pub const FIX: &str = "Update the selector to #sign-in";

impl FakeLlm {
    pub async fn start(kind: Kind, keys: &[&str]) -> Self {
        let state = Arc::new(LlmState {
            kind,
            keys: Mutex::new(keys.iter().map(|k| k.to_string()).collect()),
            seen: Mutex::default(),
            injected: Mutex::default(),
            answer_text: Mutex::new(
                json!({"rootCause": ROOT_CAUSE, "suggestedFix": FIX}).to_string(),
            ),
            delay: Mutex::default(),
        });
        let router = match kind {
            Kind::OpenAi => Router::new().route("/v1/responses", post(plain)),
            Kind::Anthropic => Router::new().route("/v1/messages", post(plain)),
            Kind::Gemini => Router::new().route("/v1beta/models/{action}", post(gemini)),
        };
        let app = router.with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let url = match kind {
            Kind::OpenAi => format!("http://{addr}/v1"),
            _ => format!("http://{addr}"),
        };
        Self { url, state }
    }

    pub fn inject(&self, times: usize, answer: Injected) {
        let mut injected = self.state.injected.lock().unwrap();
        for _ in 0..times {
            injected.push_back(answer.clone());
        }
    }

    pub fn set_delay(&self, delay: std::time::Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    pub fn set_answer_text(&self, text: &str) {
        *self.state.answer_text.lock().unwrap() = text.to_string();
    }

    pub fn seen(&self) -> Vec<LlmSeen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// A successful body of this protocol carrying `text` as the answer.
    pub fn success(kind: Kind, text: &str) -> Value {
        match kind {
            Kind::OpenAi => json!({
                "id": "resp_1", "object": "response", "status": "completed",
                "output": [
                    {"type": "reasoning", "id": "rs_1", "summary": []},
                    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}
                ],
                "usage": {"input_tokens": 120, "output_tokens": 30, "total_tokens": 150,
                          "output_tokens_details": {"reasoning_tokens": 10}}
            }),
            Kind::Anthropic => json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                "content": [{"type": "thinking", "thinking": "", "signature": "x"}, {"type": "text", "text": text}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 220, "output_tokens": 40}
            }),
            Kind::Gemini => json!({
                "candidates": [{"content": {"role": "model", "parts": [
                    {"text": "thinking...", "thought": true}, {"text": text}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 320, "candidatesTokenCount": 50, "thoughtsTokenCount": 5},
                "modelVersion": "gemini-3.8-flash", "responseId": "r1"
            }),
        }
    }
}

fn auth_error(kind: Kind) -> (StatusCode, Value) {
    match kind {
        Kind::OpenAi => (
            StatusCode::UNAUTHORIZED,
            json!({"error": {"message": "Incorrect API key provided: sk-wro***ong", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
        ),
        Kind::Anthropic => (
            StatusCode::UNAUTHORIZED,
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}, "request_id": "req_1"}),
        ),
        Kind::Gemini => (
            StatusCode::BAD_REQUEST,
            json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}}),
        ),
    }
}

fn key_of(kind: Kind, headers: &HeaderMap) -> Option<String> {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match kind {
        Kind::OpenAi => h("authorization")?
            .strip_prefix("Bearer ")
            .map(str::to_string),
        Kind::Anthropic => (h("anthropic-version") == Some("2023-06-01"))
            .then(|| h("x-api-key").map(str::to_string))
            .flatten(),
        Kind::Gemini => h("x-goog-api-key").map(str::to_string),
    }
}

async fn answer(state: Arc<LlmState>, seen: LlmSeen) -> Response {
    state.seen.lock().unwrap().push(seen.clone());
    let delay = *state.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    if let Some((status, headers, body)) = state.injected.lock().unwrap().pop_front() {
        let mut response =
            (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
        for (name, value) in headers {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        return response;
    }
    let accepted =
        key_of(state.kind, &seen.headers).is_some_and(|k| state.keys.lock().unwrap().contains(&k));
    if !accepted {
        let (status, body) = auth_error(state.kind);
        return (status, axum::Json(body)).into_response();
    }
    let text = state.answer_text.lock().unwrap().clone();
    axum::Json(FakeLlm::success(state.kind, &text)).into_response()
}

async fn plain(
    State(state): State<Arc<LlmState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let seen = LlmSeen {
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers,
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
    };
    answer(state, seen).await
}

async fn gemini(
    State(state): State<Arc<LlmState>>,
    Path(action): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    if !action.ends_with(":generateContent") {
        return StatusCode::NOT_FOUND.into_response();
    }
    plain(State(state), uri, headers, body).await
}

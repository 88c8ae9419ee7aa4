//! HTTP plumbing shared by every route: request ids and logging, security headers,
//! rate-limit headers, the JSON body extractor, the client IP, and the envelope for
//! unknown routes, wrong methods and panics.

pub mod body;
pub mod client_ip;
pub mod idempotency;
pub mod page;
pub mod rendered;
pub mod server;

use std::any::Any;
use std::borrow::Cow;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Environment;
use crate::error::{ApiError, DatabaseOutage};
use crate::ratelimit::DecisionSlot;
use crate::state::AppState;

pub use body::{FromBody, FromBodyWith, JsonBody, Object};
pub use client_ip::ClientIp;
pub use page::{Page, PageQuery};

const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

fn incoming_request_id(req: &Request) -> Option<String> {
    let value = req.headers().get(&REQUEST_ID_HEADER)?.to_str().ok()?;
    let sane = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    sane.then(|| value.to_string())
}

/// Outermost per-request layer: request id, one log line and the request metrics per
/// request, security headers and the rate-limit headers of whichever bucket counted it.
pub async fn common_layer(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id =
        incoming_request_id(&req).unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    let slot = DecisionSlot::default();
    req.extensions_mut().insert(slot.clone());
    let method = req.method().clone();
    let matched = req.extensions().get::<MatchedPath>().cloned();
    // The log names an unknown path as sent; the metrics count it as `unmatched`.
    let route: Cow<str> = match &matched {
        Some(path) => Cow::Borrowed(path.as_str()),
        None => Cow::Owned(req.uri().path().to_string()),
    };
    let handled = crate::request_id::scope(request_id.clone(), next.run(req));
    let mut response = match deadline(&app, &method, matched.as_ref()) {
        Some(deadline) => tokio::time::timeout(deadline, handled)
            .await
            .unwrap_or_else(|_| {
                tracing::warn!(request_id = %request_id, %method, %route, "request deadline exceeded");
                ApiError::DeadlineExceeded.into_response()
            }),
        None => handled.await,
    };
    if response.extensions().get::<DatabaseOutage>().is_some() {
        app.db.record_outage();
    }
    // Any change that succeeded may have queued an event in its transaction (a finished run,
    // a member, a crossed threshold…): this instance's delivery worker looks at once, without
    // the request waiting for it.
    if !method.is_safe() && response.status().is_success() {
        app.wake_outbox();
    }
    let headers = response.headers_mut();
    if let Some(decision) = slot.get() {
        decision.write_headers(headers);
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    if app.config.environment == Environment::Production {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    app.metrics.record_request(
        matched.as_ref().map(MatchedPath::as_str),
        &method,
        status,
        elapsed,
    );
    // One line per request; a span per request would cost more than the request itself.
    tracing::info!(
        request_id = %request_id,
        %method,
        %route,
        status,
        latency_ms = %crate::logging::Millis(elapsed),
        "request finished"
    );
    response
}

/// Routes bounded by their own budget instead of `ORGD_REQUEST_TIMEOUT`: report files stream
/// for as long as bytes keep moving (the connection's idle timeout cuts a stalled one), and
/// routes that call a provider are bounded by `ORGD_PROVIDER_TIMEOUT` and its retries and
/// keep their own 502/503 answers.
const OWN_BUDGET: &[(Method, &str)] = &[
    (Method::PUT, "/api/executions/{taskId}/reports/{*path}"),
    (Method::GET, "/api/executions/{taskId}/reports/{*path}"),
    (Method::POST, "/api/executions/{taskId}/analysis"),
    (Method::POST, "/api/linear/issues"),
    (Method::POST, "/api/monday/items"),
    (Method::POST, "/api/jira/issues"),
    (Method::POST, "/api/github/issues"),
    (Method::POST, "/api/gitlab/issues"),
    (Method::POST, "/api/bitbucket/issues"),
    (Method::POST, "/api/azuredevops/workitems"),
    (Method::PUT, "/api/integrations/{provider}"),
];

/// The deadline of a request to `route`, `None` for the routes with their own budget.
fn deadline(app: &AppState, method: &Method, route: Option<&MatchedPath>) -> Option<Duration> {
    let own_budget = route.is_some_and(|route| {
        OWN_BUDGET
            .iter()
            .any(|(m, path)| m == method && *path == route.as_str())
    });
    (!own_budget).then_some(app.config.limits.request_timeout)
}

pub fn cors_layer(app: &AppState) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(app.config.cors_origins.clone()))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
            header::RETRY_AFTER,
            REQUEST_ID_HEADER,
            HeaderName::from_static("idempotent-replayed"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// Path parameters; a value that does not decode (bad UTF-8, wrong type) answers 404 like a
/// resource that does not exist.
pub struct PathParams<T>(pub T);

impl<T, S> FromRequestParts<S> for PathParams<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|_| ApiError::RouteNotFound)
    }
}

/// A JSON answer, serialized in one pass into a buffer sized for orgd's usual answers:
/// axum's `Json` writes through `BufMut` in many small pieces, measured (callgrind) at a fifth
/// of `GET /api/organization`'s instructions.
pub struct Json<T>(pub T);

/// Most answers fit; larger ones grow the buffer as usual.
const JSON_CAPACITY: usize = 2048;

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match json_bytes(&self.0) {
            Ok(body) => json_response(body),
            Err(e) => e.into_response(),
        }
    }
}

/// `value` as JSON.
pub fn json_bytes(value: &impl serde::Serialize) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::with_capacity(JSON_CAPACITY);
    serde_json::to_writer(&mut body, value)
        .map_err(|e| ApiError::internal("Failed to build the answer", e))?;
    Ok(body)
}

/// A 200 answer whose body is JSON already.
pub fn json_response(body: impl Into<axum::body::Body>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.into(),
    )
        .into_response()
}

/// The body of an action that has nothing else to say: `{"success": true, "message": "..."}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Done {
    success: bool,
    message: &'static str,
}

impl Done {
    pub fn new(message: &'static str) -> Json<Self> {
        Json(Self {
            success: true,
            message,
        })
    }
}

pub async fn route_not_found() -> ApiError {
    ApiError::RouteNotFound
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// A panic becomes a 500 in the envelope; the payload is logged, never sent.
pub fn panic_response(payload: Box<dyn Any + Send + 'static>) -> Response {
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    ApiError::internal(
        "Internal error",
        anyhow::anyhow!("handler panicked: {detail}"),
    )
    .into_response()
}

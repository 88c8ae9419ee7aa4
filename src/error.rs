//! The one error type of the HTTP API and the only place that builds error bodies:
//! `{"success": false, "error": "<stable string>", "message": "<sentence>", ...}`.

mod provider;

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::auth::Role;
use crate::ratelimit::Decision;
use orgd_core::error::CoreError;

pub use provider::{ProviderCall, issues_disabled};

pub type Text = Cow<'static, str>;

/// What a 503 `Service unavailable` asks the client to wait before retrying.
pub const UNAVAILABLE_RETRY_AFTER_SECS: i64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 `Authentication required`; the message says why.
    #[error("authentication required: {0}")]
    Unauthenticated(&'static str),
    /// 403 `Forbidden` for a role that may not perform the action.
    #[error("role {actual:?} is not one of {required:?}")]
    Forbidden {
        required: &'static [Role],
        actual: Role,
    },
    /// 400 with an endpoint-specific error string.
    #[error("{error}: {message}")]
    BadRequest { error: Text, message: Text },
    /// 404 with an endpoint-specific error string (`Organization not found`, ...).
    #[error("{error}")]
    NotFound { error: &'static str, message: Text },
    /// 409 with an endpoint-specific error string.
    #[error("{error}")]
    Conflict { error: &'static str, message: Text },
    /// Any other status with a specific error string and optional extra body fields.
    #[error("{error}")]
    Refused {
        status: StatusCode,
        error: &'static str,
        message: Text,
        extra: Map<String, Value>,
    },
    /// Any status that asks the caller to come back later: `Retry-After` header and
    /// `retryAfter` (seconds) in the body (e.g. 503 `Provider rate limited`).
    #[error("{error}")]
    RetryLater {
        status: StatusCode,
        error: &'static str,
        message: Text,
        retry_after_secs: u64,
    },
    #[error("route not found")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// 429 from a rate-limit bucket.
    #[error("rate limited")]
    RateLimited {
        decision: Decision,
        message: &'static str,
    },
    /// 429 `Account temporarily locked` after repeated failed logins.
    #[error("too many failed logins")]
    TooManyAttempts { retry_after_secs: i64 },
    /// 503 `Service unavailable` with `Retry-After`: a dependency (the database) is out of
    /// reach, out of room or too slow right now. Logged; the detail is never sent.
    #[error("service unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    /// 503 `Storage unavailable` with `Retry-After`: the report store did not answer or
    /// failed (or every upload slot stayed taken). Logged; the detail is never sent.
    #[error("report storage unavailable: {0:#}")]
    StorageUnavailable(anyhow::Error),
    /// 503 `Service unavailable` with `Retry-After`: the request ran past its deadline
    /// (`ORGD_REQUEST_TIMEOUT`); whatever it was writing was rolled back.
    #[error("request deadline exceeded")]
    DeadlineExceeded,
    /// 500: the detail is logged, never sent. `error` is the endpoint's public string.
    #[error("{error}: {source:#}")]
    Internal {
        error: &'static str,
        source: anyhow::Error,
    },
}

impl ApiError {
    pub fn bad_request(error: impl Into<Text>, message: impl Into<Text>) -> Self {
        Self::BadRequest {
            error: error.into(),
            message: message.into(),
        }
    }

    /// `Invalid <field>` with a message naming the problem (API.md, Conventions).
    pub fn invalid(field: &str, message: impl Into<Text>) -> Self {
        Self::bad_request(format!("Invalid {field}"), message)
    }

    pub fn not_found(error: &'static str, message: impl Into<Text>) -> Self {
        Self::NotFound {
            error,
            message: message.into(),
        }
    }

    pub fn conflict(error: &'static str, message: impl Into<Text>) -> Self {
        Self::Conflict {
            error,
            message: message.into(),
        }
    }

    /// A failure the client cannot fix: 503 when the database was out of reach (the
    /// request may succeed when retried), else 500 with the endpoint's public string.
    pub fn internal(error: &'static str, source: impl Into<anyhow::Error>) -> Self {
        let source = source.into();
        let outage = source.chain().any(|cause| {
            cause
                .downcast_ref::<CoreError>()
                .is_some_and(CoreError::is_unavailable)
        });
        if outage {
            Self::Unavailable(source)
        } else {
            Self::Internal { error, source }
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound { .. } | Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Refused { status, .. } | Self::RetryLater { status, .. } => *status,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } | Self::TooManyAttempts { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable(_) | Self::StorageUnavailable(_) | Self::DeadlineExceeded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    pub(crate) fn error_and_message(&self) -> (Text, Text) {
        match self {
            Self::Unauthenticated(why) => ("Authentication required".into(), (*why).into()),
            Self::Forbidden { required, actual } => {
                let roles: Vec<&str> = required.iter().map(|r| r.as_str()).collect();
                (
                    "Forbidden".into(),
                    format!(
                        "This action requires one of the following roles: {}. Your role: {}.",
                        roles.join(", "),
                        actual.as_str()
                    )
                    .into(),
                )
            }
            Self::BadRequest { error, message } => (error.clone(), message.clone()),
            Self::NotFound { error, message }
            | Self::Conflict { error, message }
            | Self::Refused { error, message, .. }
            | Self::RetryLater { error, message, .. } => ((*error).into(), message.clone()),
            Self::RouteNotFound => ("Not found".into(), "No such endpoint".into()),
            Self::MethodNotAllowed => (
                "Method not allowed".into(),
                "This endpoint does not support that HTTP method".into(),
            ),
            Self::PayloadTooLarge => (
                "Payload too large".into(),
                "The request body exceeds the size limit".into(),
            ),
            Self::UnsupportedMediaType => (
                "Unsupported media type".into(),
                "Send the body as Content-Type: application/json".into(),
            ),
            Self::RateLimited { message, .. } => ("Too Many Requests".into(), (*message).into()),
            Self::TooManyAttempts { retry_after_secs } => (
                "Account temporarily locked".into(),
                format!(
                    "Too many failed login attempts. Please try again in {} minute(s).",
                    (retry_after_secs + 59) / 60
                )
                .into(),
            ),
            Self::Unavailable(_) => (
                "Service unavailable".into(),
                "The service cannot reach its database right now. Please retry shortly.".into(),
            ),
            Self::StorageUnavailable(_) => (
                "Storage unavailable".into(),
                "The report storage cannot be reached right now; nothing was stored. Please retry shortly."
                    .into(),
            ),
            Self::DeadlineExceeded => (
                "Service unavailable".into(),
                "The request took too long to complete and nothing was changed. Please retry shortly."
                    .into(),
            ),
            Self::Internal { error, .. } => (
                (*error).into(),
                format!(
                    "An unexpected error occurred (request id {})",
                    crate::request_id::current_request_id()
                )
                .into(),
            ),
        }
    }
}

/// Marks a response that failed because the database was out of reach, so the request
/// layer can tell `/health` (the handler has no access to the store's health).
#[derive(Debug, Clone, Copy)]
pub struct DatabaseOutage;

/// Every error body: `{"success": false, "error": "<stable string>", "message": "<sentence>"}`,
/// and fields some errors add so clients can act on them. Endpoint-specific ones are
/// documented with their responses: `usage` (`{used, limit, percentUsed}`) when a plan limit
/// refused a write, `limit` and `current` on the project limit, `valid: false` when an
/// invitation token is not usable.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Always `false`.
    success: bool,
    /// Short, stable string to branch on (`Authentication required`, `Invalid name`, ...).
    #[schema(value_type = String)]
    error: Text,
    /// A sentence for humans; wording may change.
    #[schema(value_type = String)]
    message: Text,
    /// Seconds to wait (429, and 503 when a provider is rate limited).
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<i64>,
    /// The rate limit's size (429 from a rate-limit bucket).
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<i64>,
    /// The rate limit's window in milliseconds (429 from a rate-limit bucket).
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<i64>,
    #[serde(flatten)]
    #[schema(ignore)]
    extra: Map<String, Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal { source, error } => tracing::error!(
                request_id = %crate::request_id::current_request_id(),
                error = %error,
                detail = %format!("{source:#}"),
                "request failed"
            ),
            Self::Unavailable(source) => tracing::warn!(
                request_id = %crate::request_id::current_request_id(),
                detail = %format!("{source:#}"),
                "request answered 503: database unavailable"
            ),
            Self::StorageUnavailable(source) => tracing::warn!(
                request_id = %crate::request_id::current_request_id(),
                detail = %format!("{source:#}"),
                "request answered 503: report storage unavailable"
            ),
            _ => {}
        }
        let status = self.status();
        let (error, message) = self.error_and_message();
        let mut body = ErrorBody {
            success: false,
            error,
            message,
            retry_after: None,
            limit: None,
            window: None,
            extra: Map::new(),
        };
        match &self {
            Self::Refused { extra, .. } => body.extra = extra.clone(),
            Self::RateLimited { decision, .. } => {
                body.retry_after = Some(decision.retry_after_secs());
                body.limit = Some(i64::from(decision.limit));
                body.window = Some(decision.window_ms);
            }
            Self::RetryLater {
                retry_after_secs, ..
            } => body.retry_after = Some(i64::try_from(*retry_after_secs).unwrap_or(i64::MAX)),
            Self::TooManyAttempts { retry_after_secs } => {
                body.retry_after = Some(*retry_after_secs);
            }
            Self::Unavailable(_) | Self::StorageUnavailable(_) | Self::DeadlineExceeded => {
                body.retry_after = Some(UNAVAILABLE_RETRY_AFTER_SECS);
            }
            _ => {}
        }
        let retry_after = body.retry_after;
        let mut response = (status, axum::Json(body)).into_response();
        if let Self::Unavailable(_) = &self {
            response.extensions_mut().insert(DatabaseOutage);
        }
        if let Self::RateLimited { decision, .. } = &self {
            decision.write_headers(response.headers_mut());
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        Self::internal("Internal error", e)
    }
}

/// Attaches an endpoint's public 500 string (`Failed to fetch organization`, ...) to a failure.
pub trait OrInternal<T> {
    fn or_internal(self, error: &'static str) -> Result<T, ApiError>;
}

impl<T, E: Into<anyhow::Error>> OrInternal<T> for Result<T, E> {
    fn or_internal(self, error: &'static str) -> Result<T, ApiError> {
        self.map_err(|e| ApiError::internal(error, e))
    }
}

//! HTTP plumbing shared by every route: request ids and logging, security headers,
//! rate-limit headers, the JSON body extractor, the client IP, and the envelope for
//! unknown routes, wrong methods and panics.

pub mod body;
pub mod client_ip;
pub mod edge;
pub mod idempotency;
pub mod page;
pub mod rendered;
pub mod server;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

pub use body::{FromBody, FromBodyWith, JsonBody, Object};
pub use client_ip::ClientIp;
pub use page::{Page, PageQuery};

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

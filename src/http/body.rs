//! The JSON body extractor. It never rejects on its own: what it found (or what was wrong
//! with it) is kept until the handler asks, so authentication and role are always checked
//! before the body (API.md, PATCH /api/organization).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde_json::{Map, Value};

use crate::error::ApiError;

pub struct JsonBody(Result<Option<Object>, ApiError>);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        let bytes = Bytes::from_request(req, state).await;
        Ok(Self(parse(content_type.as_deref(), bytes)))
    }
}

fn parse(
    content_type: Option<&str>,
    bytes: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Option<Object>, ApiError> {
    let bytes = bytes.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::bad_request("Invalid JSON", "The request body could not be read")
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let is_json = content_type.is_some_and(|ct| {
        let essence = ct.split(';').next().unwrap_or("").trim();
        essence == "application/json"
            || (essence.starts_with("application/") && essence.ends_with("+json"))
    });
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    match serde_json::from_slice::<Value>(&bytes) {
        // PostgreSQL cannot store U+0000 in text; refuse it here rather than fail later.
        Ok(Value::Object(map)) if contains_nul(&map) => Err(ApiError::bad_request(
            "Invalid JSON",
            "Text in the request body must not contain NUL (\\u0000) characters",
        )),
        Ok(Value::Object(map)) => Ok(Some(Object(map))),
        Ok(_) => Err(ApiError::bad_request(
            "Invalid JSON",
            "The request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(
            "Invalid JSON",
            format!(
                "The request body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )),
    }
}

fn contains_nul(map: &Map<String, Value>) -> bool {
    fn value_has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(value_has_nul),
            Value::Object(map) => contains_nul(map),
            _ => false,
        }
    }
    map.iter()
        .any(|(k, v)| k.contains('\0') || value_has_nul(v))
}

impl JsonBody {
    /// The body, or 400 `Missing body` when there is none.
    pub fn required(self) -> Result<Object, ApiError> {
        self.0?.ok_or_else(|| {
            ApiError::bad_request("Missing body", "This endpoint requires a JSON body")
        })
    }

    /// The body, or an empty object when there is none.
    pub fn or_empty(self) -> Result<Object, ApiError> {
        Ok(self.0?.unwrap_or_default())
    }
}

/// A JSON object body with typed accessors whose errors are `Invalid <field>`.
#[derive(Debug, Default)]
pub struct Object(pub Map<String, Value>);

impl Object {
    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    /// A string field: absent → `None`; present but not a string (null included) → 400.
    pub fn opt_str(&self, field: &str) -> Result<Option<&str>, ApiError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::invalid(
                field,
                format!("{field} must be a string"),
            )),
        }
    }

    /// A boolean field: absent → `None`; present but not a boolean (null included) → 400.
    pub fn opt_bool(&self, field: &str) -> Result<Option<bool>, ApiError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::invalid(
                field,
                format!("{field} must be a boolean"),
            )),
        }
    }

    /// A non-empty string that must be there: absent, null or empty → `missing`.
    pub fn required_str(&self, field: &str, missing: ApiError) -> Result<&str, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Err(missing),
            Some(Value::String(s)) if s.is_empty() => Err(missing),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(ApiError::invalid(
                field,
                format!("{field} must be a string"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(ct: Option<&str>, body: &'static [u8]) -> Result<bool, StatusCode> {
        parse(ct, Ok(Bytes::from_static(body)))
            .map(|o| o.is_some())
            .map_err(|e| e.status())
    }

    #[test]
    fn classifies_bodies() {
        let json = Some("application/json; charset=utf-8");
        assert_eq!(status_of(json, b""), Ok(false));
        assert_eq!(status_of(None, b""), Ok(false));
        assert_eq!(status_of(json, b"{\"a\":1}"), Ok(true));
        assert_eq!(
            status_of(Some("text/plain"), b"{}"),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            status_of(None, b"{}"),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(status_of(json, b"{\"a\":"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(status_of(json, b"[1]"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(
            status_of(json, b"{\"a\":[\"x\\u0000\"]}"),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status_of(json, b"{\"a\":\"\xff\"}"),
            Err(StatusCode::BAD_REQUEST)
        );
        let deep: &'static [u8] = Box::leak(
            format!("{}{}", "[".repeat(5000), "]".repeat(5000))
                .into_bytes()
                .into_boxed_slice(),
        );
        assert_eq!(status_of(json, deep), Err(StatusCode::BAD_REQUEST));
    }
}

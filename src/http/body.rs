//! The JSON body extractor. It never rejects on its own: what it found (or what was wrong
//! with it) is kept until the handler asks, so authentication and role are always checked
//! before the body (API.md, PATCH /api/organization).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::ApiError;

pub struct JsonBody(Result<Option<Object>, ApiError>);

/// A request body as one type: the handler's input and, through `ToSchema`, its OpenAPI
/// schema. It is read from the (unambiguous) JSON object by hand, so every problem answers
/// with the contract's error string, in the contract's order — serde's own messages would
/// name Rust types.
pub trait FromBody: Sized {
    fn from_body(body: &Object) -> Result<Self, ApiError>;
}

/// A `FromBody` whose checks need something besides the body (the model catalogue, the
/// provider named in the path): still one parse, so the contract's order holds across both.
pub trait FromBodyWith<C>: Sized {
    fn from_body_with(body: &Object, context: C) -> Result<Self, ApiError>;
}

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
    match serde_json::from_slice::<Unambiguous>(&bytes).map(|u| u.0) {
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
                "The request body {} (line {}, column {})",
                // Data errors come only from `Unambiguous`: everything else is syntax.
                if e.is_data() {
                    "names a key more than once"
                } else {
                    "is not valid JSON"
                },
                e.line(),
                e.column()
            ),
        )),
    }
}

/// A JSON value in which no object names a key twice, at any depth. serde_json would keep
/// the last of the duplicates; another parser in front of or behind us may keep the first,
/// so an ambiguous body is refused rather than read one way here and another way there.
struct Unambiguous(Value);

impl<'de> Deserialize<'de> for Unambiguous {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UnambiguousVisitor).map(Self)
    }
}

struct UnambiguousVisitor;

impl<'de> Visitor<'de> for UnambiguousVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unambiguous(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom("duplicate key"));
            }
            let Unambiguous(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
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
    /// The required body as `T` (400 `Missing body` when there is none).
    pub fn parse<T: FromBody>(self) -> Result<T, ApiError> {
        T::from_body(&self.required()?)
    }

    /// An optional body as `T`, read as `{}` when there is none.
    pub fn parse_or_empty<T: FromBody>(self) -> Result<T, ApiError> {
        T::from_body(&self.or_empty()?)
    }

    /// An optional body as `T`, read as `{}` when there is none, checked with `context`.
    pub fn parse_or_empty_with<T: FromBodyWith<C>, C>(self, context: C) -> Result<T, ApiError> {
        T::from_body_with(&self.or_empty()?, context)
    }

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

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let json = Some("application/json");
        for body in [
            &b"{\"name\":\"A\",\"name\":\"B\"}"[..],
            b"{\"name\":\"A\",\"n\\u0061me\":\"A\"}",
            b"{\"byok\":{\"provider\":\"openai\",\"provider\":\"gemini\"}}",
            b"{\"events\":[{\"a\":1,\"a\":1}]}",
        ] {
            let err = parse(json, Ok(Bytes::from_static(body))).err();
            assert!(
                matches!(&err, Some(ApiError::BadRequest { error, message })
                    if error == "Invalid JSON" && message.contains("more than once")),
                "{:?}: {err:?}",
                String::from_utf8_lossy(body)
            );
        }
        let Ok(Some(Object(map))) = parse(
            json,
            Ok(Bytes::from_static(
                b"{\"a\":[1,-2,1.5,\"x\",null,true,{\"b\":{}}],\"c\":{\"a\":0}}",
            )),
        ) else {
            panic!("a body without duplicates is read");
        };
        assert_eq!(
            Value::Object(map),
            serde_json::json!({"a": [1, -2, 1.5, "x", null, true, {"b": {}}], "c": {"a": 0}})
        );
    }
}

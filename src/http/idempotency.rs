//! `Idempotency-Key` on every route that creates something (API.md, POST /api/linear/issues;
//! the rule itself is `orgd_core::idempotency`). A handler reads its body, claims the key
//! (a repeat is answered here with the first answer), passes `KeyClaim::replay` to the core
//! function that creates, and settles the claim with its result.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::IntoParams;

use super::Object;
use crate::error::{ApiError, OrInternal};
use crate::state::AppState;
use orgd_core::idempotency::{self, Answer, Claim, IdempotencyScope, Replay};

/// The `Idempotency-Key` header. It is checked only after the caller is authorized and the
/// body read, so a bad key never hides a 401, 403 or 400 about the body.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// Repeats with the same key and body return the first answer and create nothing
    /// (1–255 visible ASCII characters).
    #[param(rename = "Idempotency-Key")]
    idempotency_key: Option<String>,
    #[param(ignore)]
    malformed: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(Self {
                idempotency_key: None,
                malformed: false,
            });
        };
        let key = value
            .to_str()
            .ok()
            .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()));
        Ok(Self {
            malformed: key.is_none(),
            idempotency_key: key.map(str::to_string),
        })
    }
}

/// What claiming found: go ahead, or the first request's answer.
pub enum Claimed {
    Fresh(KeyClaim),
    Replayed(Response),
}

impl IdempotencyKey {
    /// Claims the key for `route` in the caller's organization; `body` is the request as read
    /// (a repeat must send the same one).
    pub async fn claim(
        self,
        app: &AppState,
        organization_id: &str,
        route: &'static str,
        body: &Object,
    ) -> Result<Claimed, ApiError> {
        if self.malformed {
            return Err(ApiError::invalid(
                "Idempotency-Key",
                "Idempotency-Key must be 1-255 visible ASCII characters",
            ));
        }
        let Some(key) = self.idempotency_key else {
            return Ok(Claimed::Fresh(KeyClaim::none(app)));
        };
        let scope = IdempotencyScope {
            organization_id: organization_id.to_string(),
            route,
            key,
            request_hash: request_hash(route, body),
        };
        let claim = idempotency::claim(&app.db, &app.vault, &scope, app.now())
            .await
            .or_internal("Failed to claim the idempotency key")?;
        match claim {
            Claim::Acquired => Ok(Claimed::Fresh(KeyClaim {
                app: app.clone(),
                scope: Some(scope),
            })),
            Claim::Replay(answer) => Ok(Claimed::Replayed(replayed(&answer)?)),
            Claim::Mismatch => Err(ApiError::Refused {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                error: "Idempotency key reused",
                message: "This Idempotency-Key was already used with a different request body"
                    .into(),
                extra: Default::default(),
            }),
            Claim::InProgress => Err(ApiError::conflict(
                "Request in progress",
                "A request with this Idempotency-Key is still being processed",
            )),
        }
    }
}

/// SHA-256 of the route and the body; serde_json maps are sorted, so equal bodies hash equally
/// whatever their key order or whitespace.
fn request_hash(route: &str, body: &Object) -> String {
    let canonical = Value::Object(body.0.clone()).to_string();
    hex::encode(
        Sha256::new()
            .chain_update(route)
            .chain_update([0])
            .chain_update(canonical)
            .finalize(),
    )
}

/// A claimed key (or none, when the request had no key). Settle it with the request's
/// result: a failure frees the key for another try. A claim dropped unsettled (the client
/// left, the deadline passed) is freed in the background; a key whose answer was stored in
/// the creating transaction is never freed.
pub struct KeyClaim {
    app: AppState,
    scope: Option<IdempotencyScope>,
}

impl KeyClaim {
    fn none(app: &AppState) -> Self {
        Self {
            app: app.clone(),
            scope: None,
        }
    }

    /// What the creating core function stores with what it created, when there is a key.
    pub fn replay<'a, T: ?Sized>(
        &'a self,
        answer: &'a (dyn Fn(&T) -> Answer + Send + Sync),
    ) -> Option<Replay<'a, T>> {
        self.scope.as_ref().map(|scope| Replay {
            scope,
            vault: &self.app.vault,
            answer,
        })
    }

    /// Frees the key when the request failed, then hands its result on.
    pub async fn settle<R>(mut self, result: Result<R, ApiError>) -> Result<R, ApiError> {
        if result.is_err()
            && let Some(scope) = self.scope.take()
        {
            release(&self.app, &scope).await;
        }
        self.scope = None;
        result
    }

    /// Keeps the key claimed whatever happened: used when something was created outside the
    /// database (a ticket) but its answer could not be stored, so a repeat must not create
    /// it again until the claim counts as abandoned.
    pub fn keep(mut self) {
        self.scope = None;
    }
}

impl Drop for KeyClaim {
    fn drop(&mut self) {
        if let Some(scope) = self.scope.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let app = self.app.clone();
            runtime.spawn(async move { release(&app, &scope).await });
        }
    }
}

async fn release(app: &AppState, scope: &IdempotencyScope) {
    if let Err(e) = idempotency::release(&app.db, scope).await {
        tracing::warn!(error = %e, "could not release an idempotency key");
    }
}

/// A JSON answer, as sent now and as a repeat will get it back.
pub fn answer(status: StatusCode, body: &impl Serialize) -> Answer {
    match serde_json::to_string(body) {
        Ok(body) => Answer {
            status: status.as_u16(),
            body,
        },
        Err(e) => {
            tracing::error!(error = %e, "an answer could not be serialized");
            Answer {
                status: 500,
                body: r#"{"success":false,"error":"Internal error","message":"The answer could not be built"}"#.into(),
            }
        }
    }
}

/// The answer as a response.
pub fn respond(answer: &Answer) -> Result<Response, ApiError> {
    let status = StatusCode::from_u16(answer.status).or_internal("Stored answer")?;
    Ok((
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        answer.body.clone(),
    )
        .into_response())
}

fn replayed(answer: &Answer) -> Result<Response, ApiError> {
    let mut response = respond(answer)?;
    response.headers_mut().insert(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
    Ok(response)
}

//! Who is calling: `CurrentUser` authenticates a Bearer token — or, on `/api/executions*`
//! only, an `x-api-key` — against the store (role and organization are the user's current
//! ones) and counts the request in its organization's rate-limit bucket. `AuthAttempt`
//! counts a public auth request in its IP's bucket.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderValue;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::Role;
use super::jwt::{Claims, TokenError};
use crate::error::ApiError;
use crate::http::ClientIp;
use crate::ratelimit::Scope;
use crate::state::AppState;
use orgd_core::api_keys::ApiKey;
use orgd_core::audit::AuditEvent;
use orgd_core::users::UserRecord;

/// What the caller authenticated with.
#[derive(Debug)]
pub enum Credential {
    /// A user's session token (JWT).
    Session(Arc<Claims>),
    /// An API key, acting as its creator.
    ApiKey { key_id: String },
}

pub struct CurrentUser {
    /// As stored now (shared with the identity cache).
    pub user: Arc<UserRecord>,
    pub credential: Credential,
}

impl CurrentUser {
    pub fn id(&self) -> &str {
        &self.user.id
    }

    pub fn org_id(&self) -> &str {
        &self.user.organization_id
    }

    pub fn role(&self) -> Role {
        self.user.role
    }

    /// The audit entry of a change this caller makes from `ip`.
    pub fn audit_event(
        &self,
        ip: ClientIp,
        action: &'static str,
        target_type: &'static str,
        target_id: &str,
    ) -> AuditEvent {
        AuditEvent::by_user(
            self.org_id(),
            self.id(),
            Some(ip.0.to_string()),
            action,
            target_type,
            target_id,
        )
    }

    /// 403 `Forbidden` unless the caller has one of `roles`.
    pub fn require(&self, roles: &'static [Role]) -> Result<(), ApiError> {
        if roles.contains(&self.user.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                required: roles,
                actual: self.user.role,
            })
        }
    }

    /// The session token's claims; 400 `Session required` when the caller used an API key.
    pub fn session(&self) -> Result<&Claims, ApiError> {
        match &self.credential {
            Credential::Session(claims) => Ok(claims),
            Credential::ApiKey { .. } => Err(ApiError::bad_request(
                "Session required",
                "This action needs a session token (Authorization: Bearer), not an API key",
            )),
        }
    }
}

/// API keys are accepted on the ingest API and nowhere else (API.md, Conventions).
fn accepts_api_keys(path: &str) -> bool {
    crate::ratelimit::is_ingest_path(path)
}

fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Err(ApiError::Unauthenticated(
            if parts.headers.contains_key("x-api-key") {
                "API keys are accepted only on /api/executions endpoints and POST /api/execution-request. Send Authorization: Bearer <token>."
            } else {
                "No token provided in Authorization header. Please login."
            },
        ));
    };
    bearer_credentials(value).ok_or(ApiError::Unauthenticated(
        "The Authorization header must have the form: Bearer <token>.",
    ))
}

/// The token of an `Authorization: Bearer <token>` value. As in RFC 7235 §2.1 the scheme is
/// case-insensitive and separated from the token by one or more spaces; anything else
/// (another scheme, no space, no token) is not a bearer credential.
pub(crate) fn bearer_credentials(value: &HeaderValue) -> Option<&str> {
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    let token = token.trim_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

async fn from_session(parts: &Parts, app: &AppState) -> Result<CurrentUser, ApiError> {
    let token = bearer_token(parts)?;
    let claims = app.jwt.verify(token, app.now()).map_err(|e| {
        ApiError::Unauthenticated(match e {
            TokenError::Expired => "Token has expired. Please login again.",
            TokenError::Invalid => "Token is invalid. Please login again.",
        })
    })?;
    let identity = app
        .identities
        .get(&app.db, &claims.sub, &claims.jti)
        .await?
        .ok_or(ApiError::Unauthenticated(
            "The account this token belongs to no longer exists.",
        ))?;
    if identity.revoked {
        return Err(ApiError::Unauthenticated(
            "Token has been revoked. Please login again.",
        ));
    }
    Ok(CurrentUser {
        user: identity.user.clone(),
        credential: Credential::Session(claims),
    })
}

async fn from_api_key(raw: &[u8], app: &AppState) -> Result<CurrentUser, ApiError> {
    const INVALID: ApiError =
        ApiError::Unauthenticated("The API key is invalid or has been revoked.");
    let key = std::str::from_utf8(raw)
        .ok()
        .and_then(ApiKey::parse)
        .ok_or(INVALID)?;
    let (user, key_id) = orgd_core::api_keys::identity(&app.db, &key.hash(), app.now())
        .await?
        .ok_or(INVALID)?;
    Ok(CurrentUser {
        user: Arc::new(user),
        credential: Credential::ApiKey { key_id },
    })
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let path = parts.uri.path();
        // A key is used only where keys are accepted and no Bearer token was sent; anywhere
        // else the request goes down the session path, whose 401 explains where keys work.
        let caller = match parts.headers.get("x-api-key") {
            Some(key) if !parts.headers.contains_key(AUTHORIZATION) && accepts_api_keys(path) => {
                from_api_key(key.as_bytes(), app).await?
            }
            _ => from_session(parts, app).await?,
        };
        if caller.user.status != "active" {
            return Err(ApiError::Unauthenticated("This account is suspended."));
        }
        // Counted only once authenticated: a 401 never uses up an organization's budget.
        let scope = Scope::for_path(path);
        count_request(app, scope, caller.org_id()).await?;
        Ok(caller)
    }
}

/// A public authentication request (signup, login, invitation validation), counted per IP.
pub struct AuthAttempt {
    pub ip: ClientIp,
}

impl FromRequestParts<AppState> for AuthAttempt {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let Ok(ip) = ClientIp::from_request_parts(parts, app).await;
        count_request(app, Scope::Auth, &ip.0.to_string()).await?;
        Ok(Self { ip })
    }
}

/// Counts the request once in `scope`'s bucket for `subject`; 429 when it does not fit.
async fn count_request(app: &AppState, scope: Scope, subject: &str) -> Result<(), ApiError> {
    let decision = app
        .limiter
        .hit(
            &scope.bucket(subject),
            app.limit_for(scope),
            crate::ratelimit::WINDOW_MS,
        )
        .await;
    crate::request_id::record_decision(decision);
    if decision.allowed {
        Ok(())
    } else {
        app.metrics.record_refusal(scope.into());
        Err(ApiError::RateLimited {
            decision,
            message: scope.refusal_message(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{HeaderValue, accepts_api_keys, bearer_credentials};

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_a_token() {
        for (value, token) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER   abc ", Some("abc")),
            ("Bearer a b", Some("a b")),
            ("Bearer", None),
            ("Bearer ", None),
            ("Bearerabc", None),
            ("Basic abc", None),
            ("Bearer\tabc", None),
        ] {
            let value = HeaderValue::from_static(value);
            assert_eq!(bearer_credentials(&value), token, "{value:?}");
        }
    }

    #[test]
    fn api_keys_only_on_the_executions_api() {
        assert!(accepts_api_keys("/api/executions"));
        assert!(accepts_api_keys("/api/executions/abc/reports"));
        assert!(accepts_api_keys("/api/execution-request"));
        assert!(!accepts_api_keys("/api/execution-request/x"));
        assert!(!accepts_api_keys("/api/executionsX"));
        assert!(!accepts_api_keys("/api/organization"));
        assert!(!accepts_api_keys("/api/auth/api-keys"));
    }
}

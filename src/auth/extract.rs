//! Who is calling: `CurrentUser` authenticates a Bearer token against the store (role and
//! organization are the user's current ones) and counts the request in its organization's
//! rate-limit bucket. `AuthAttempt` counts a public auth request in its IP's bucket.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::Role;
use super::jwt::{Claims, TokenError};
use super::store::UserRecord;
use crate::error::ApiError;
use crate::http::ClientIp;
use crate::ratelimit::{DecisionSlot, Scope};
use crate::state::AppState;

pub struct CurrentUser {
    pub user: UserRecord,
    pub claims: Claims,
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
}

fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Err(ApiError::Unauthenticated(
            if parts.headers.contains_key("x-api-key") {
                "API keys are accepted only on /api/executions endpoints. Send Authorization: Bearer <token>."
            } else {
                "No token provided in Authorization header. Please login."
            },
        ));
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthenticated(
            "The Authorization header must have the form: Bearer <token>.",
        ))
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts)?;
        let claims = app.jwt.verify(token, app.now()).map_err(|e| {
            ApiError::Unauthenticated(match e {
                TokenError::Expired => "Token has expired. Please login again.",
                TokenError::Invalid => "Token is invalid. Please login again.",
            })
        })?;
        let (user, revoked) = app.store.identity(&claims.sub, &claims.jti).await?.ok_or(
            ApiError::Unauthenticated("The account this token belongs to no longer exists."),
        )?;
        if revoked {
            return Err(ApiError::Unauthenticated(
                "Token has been revoked. Please login again.",
            ));
        }
        if user.status != "active" {
            return Err(ApiError::Unauthenticated("This account is suspended."));
        }
        // Counted only once authenticated: a 401 never uses up an organization's budget.
        let scope = Scope::for_path(parts.uri.path());
        count_request(parts, app, scope, &user.organization_id).await?;
        Ok(Self { user, claims })
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
        count_request(parts, app, Scope::Auth, &ip.0.to_string()).await?;
        Ok(Self { ip })
    }
}

/// Counts the request once in `scope`'s bucket for `subject`; 429 when it does not fit.
async fn count_request(
    parts: &Parts,
    app: &AppState,
    scope: Scope,
    subject: &str,
) -> Result<(), ApiError> {
    let decision = app
        .limiter
        .hit(
            &scope.bucket(subject),
            app.limit_for(scope),
            crate::ratelimit::WINDOW_MS,
        )
        .await;
    if let Some(slot) = parts.extensions.get::<DecisionSlot>() {
        slot.record(decision);
    }
    if decision.allowed {
        Ok(())
    } else {
        Err(ApiError::RateLimited {
            decision,
            message: scope.refusal_message(),
        })
    }
}

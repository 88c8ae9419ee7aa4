//! What the member, invitation and sign-up routes share: how a body names an email or a role,
//! and how a refused join or a full organization is answered.

use axum::http::StatusCode;
use orgd_core::invitations::Joined;
use orgd_core::rules::seats::SeatUsage;
use orgd_core::users::{Email, Role};

use crate::error::ApiError;
use crate::http::Object;
use crate::routes::usage::limit_refusal;

/// The body's email; 400 `Invalid email format` when it is not an address.
pub(crate) fn email(raw: &str) -> Result<Email, ApiError> {
    Email::parse(raw).ok_or_else(|| {
        ApiError::bad_request("Invalid email format", "The email address is not valid")
    })
}

/// A role named in a request body: `Invalid role` unless one of the three.
pub(crate) fn parse_role(raw: &str) -> Result<Role, ApiError> {
    Role::parse(raw)
        .ok_or_else(|| ApiError::invalid("role", "Role must be admin, developer, or viewer"))
}

/// The body's required `role` field: `missing` when absent or empty, then `parse_role`.
pub(crate) fn role_field(body: &Object, missing: ApiError) -> Result<Role, ApiError> {
    parse_role(body.required_str("role", missing)?)
}

/// A 403 that is not about roles (those are `ApiError::Forbidden`).
pub(crate) fn refused(error: &'static str, message: &'static str) -> ApiError {
    ApiError::Refused {
        status: StatusCode::FORBIDDEN,
        error,
        message: message.into(),
        extra: Default::default(),
    }
}

/// 403 `User limit exceeded` with the organization's seat usage.
pub(crate) fn seats_full(seats: SeatUsage) -> ApiError {
    // Only a limited organization is ever refused; 0 would be an operator's "no seats at all".
    let limit = seats.limit.unwrap_or(0);
    limit_refusal(
        "User limit exceeded",
        format!(
            "Your organization has reached the team member limit ({}/{limit}). Upgrade your plan to invite more users.",
            seats.used
        ),
        seats.used,
        limit,
    )
}

pub(crate) const EXPIRED_MESSAGE: &str =
    "This invitation has expired. Please request a new invitation.";
pub(crate) const UNUSABLE_MESSAGE: &str =
    "The invitation token is invalid or has already been used";

/// How signup with an `inviteToken` reports a refused join.
pub fn signup_refused(outcome: Joined) -> ApiError {
    match outcome {
        Joined::Expired => ApiError::bad_request("Invitation has expired", EXPIRED_MESSAGE),
        Joined::SeatsFull(seats) => seats_full(seats),
        Joined::EmailTaken => ApiError::conflict(
            "Email already registered",
            "An account with this email already exists",
        ),
        // Also covers a token for another email: the answer must not tell them apart.
        _ => ApiError::bad_request("Invalid or expired invitation", UNUSABLE_MESSAGE),
    }
}

//! Members of an organization (`/api/users*`) and invitations into it (`/api/invitations*`).
//! Nobody changes their own role or removes themselves, and an organization always keeps an
//! admin: both rules are decided inside one transaction holding the organization's lock.

pub mod invitations;
pub mod store;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, patch};
use axum::{Json, Router};
use serde_json::{Value, json};

pub use invitations::InviteToken;
use store::MemberChange;

use crate::audit::AuditEvent;
use crate::auth::store::UserRecord;
use crate::auth::{CurrentUser, Role};
use crate::clock::Timestamp;
use crate::error::{ApiError, OrInternal};
use crate::http::{ClientIp, JsonBody, PageQuery, PathParams};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/users", get(list))
        .route("/api/users/{id}", get(show).delete(remove))
        .route("/api/users/{id}/role", patch(change_role))
        .merge(invitations::router())
}

/// A role named in a request body: `Invalid role` unless one of the three.
pub(crate) fn parse_role(raw: &str) -> Result<Role, ApiError> {
    Role::parse(raw)
        .ok_or_else(|| ApiError::invalid("role", "Role must be admin, developer, or viewer"))
}

/// A user id from the path. Only the canonical lowercase form is accepted, so comparing it
/// with the caller's id is exact (the original let `/api/users/<UPPER-CASE own id>` through, §10.12).
fn user_id(raw: &str) -> Result<&str, ApiError> {
    if crate::id::is_valid(raw) {
        Ok(raw)
    } else {
        Err(ApiError::bad_request(
            "Invalid user ID format",
            "A user id is 24 lowercase hexadecimal characters",
        ))
    }
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

fn user_not_found() -> ApiError {
    ApiError::not_found(
        "User not found",
        "No user with this id in your organization",
    )
}

fn member_view(u: &UserRecord) -> Value {
    json!({
        "id": u.id,
        "email": u.email,
        "name": u.name,
        "role": u.role.as_str(),
        "status": u.status,
        "lastLoginAt": u.last_login_at.map(Timestamp),
        "createdAt": Timestamp(u.created_at),
    })
}

/// The changed member (as it was before), or why the change was refused.
fn member_changed(
    outcome: MemberChange,
    last_admin_error: &'static str,
) -> Result<UserRecord, ApiError> {
    Err(match outcome {
        MemberChange::Done(member) => return Ok(member),
        MemberChange::NotFound => user_not_found(),
        MemberChange::LastAdmin => refused(
            last_admin_error,
            "Organization must have at least one admin. Promote another user to admin first.",
        ),
        MemberChange::ActorNotAdmin(Some(actual)) => ApiError::Forbidden {
            required: Role::ADMIN,
            actual,
        },
        MemberChange::ActorNotAdmin(None) => {
            ApiError::Unauthenticated("Your account is no longer a member of this organization.")
        }
    })
}

async fn list(
    State(app): State<AppState>,
    user: CurrentUser,
    page: PageQuery,
) -> Result<Json<Value>, ApiError> {
    let page = page.page()?;
    let (users, total) = app
        .store
        .members(user.org_id(), page.limit, page.offset)
        .await
        .or_internal("Failed to fetch users")?;
    Ok(Json(json!({
        "success": true,
        "users": users.iter().map(member_view).collect::<Vec<_>>(),
        "total": total,
        "limit": page.limit,
        "offset": page.offset,
    })))
}

async fn show(
    State(app): State<AppState>,
    user: CurrentUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let member = app
        .store
        .member(user.org_id(), user_id(&id)?)
        .await
        .or_internal("Failed to fetch user")?
        .ok_or_else(user_not_found)?;
    let mut view = member_view(&member);
    view["updatedAt"] = json!(Timestamp(member.updated_at));
    Ok(Json(json!({"success": true, "user": view})))
}

async fn change_role(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    PathParams(id): PathParams<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    user.require(Role::ADMIN)?;
    let body = body.required()?;
    let role = body.required_str(
        "role",
        ApiError::bad_request("Missing required field", "Role is required"),
    )?;
    let role = parse_role(role)?;
    let target = user_id(&id)?;
    if target == user.id() {
        return Err(refused(
            "Cannot change own role",
            "You cannot change your own role",
        ));
    }
    let audit = AuditEvent::by_user(&user, ip, "user.role_changed", "user", target);
    let outcome = app
        .store
        .change_role(user.org_id(), user.id(), target, role, audit, app.now())
        .await
        .or_internal("Failed to update role")?;
    let member = member_changed(outcome, "Cannot remove last admin")?;
    Ok(Json(json!({
        "success": true,
        "message": format!("User role updated to {}", role.as_str()),
        "user": {"id": member.id, "email": member.email, "name": member.name, "role": role.as_str()},
    })))
}

async fn remove(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    user.require(Role::ADMIN)?;
    let target = user_id(&id)?;
    if target == user.id() {
        return Err(refused(
            "Cannot delete yourself",
            "You cannot remove your own account. Ask another admin to do this.",
        ));
    }
    let audit = AuditEvent::by_user(&user, ip, "user.removed", "user", target);
    let outcome = app
        .store
        .remove_member(user.org_id(), user.id(), target, audit, app.now())
        .await
        .or_internal("Failed to remove user")?;
    let member = member_changed(outcome, "Cannot delete last admin")?;
    Ok(Json(json!({
        "success": true,
        "message": format!("User {} has been removed from the organization", member.email),
    })))
}

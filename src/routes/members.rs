//! Members of an organization (`/api/users*`).
//! Nobody changes their own role or removes themselves, and an organization always keeps an
//! admin: both rules are decided inside one transaction holding the organization's lock.

use crate::http::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use orgd_core::members::MemberChange;
use orgd_core::users::UserRecord;

use crate::auth::{CurrentUser, Role};
use crate::error::{ApiError, OrInternal};
use crate::http::page::{CursorParams, PageParams};
use crate::http::{ClientIp, FromBody, JsonBody, Object, Page, PageQuery, PathParams};
use crate::openapi::ErrorBody;
use crate::routes::membership::{refused, role_field};
use crate::state::AppState;
use crate::timestamp::Timestamp;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show, remove))
        .routes(routes!(change_role))
}

/// A user id from the path. Only the canonical lowercase form is accepted, so comparing it
/// with the caller's id is exact (the original let `/api/users/<UPPER-CASE own id>` through, §10.12).
fn user_id(raw: &str) -> Result<&str, ApiError> {
    if orgd_core::ids::is_valid(raw) {
        Ok(raw)
    } else {
        Err(ApiError::bad_request(
            "Invalid user ID format",
            "A user id is 24 lowercase hexadecimal characters",
        ))
    }
}

fn user_not_found() -> ApiError {
    ApiError::not_found(
        "User not found",
        "No user with this id in your organization",
    )
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    id: String,
    email: String,
    name: String,
    #[schema(pattern = "^(admin|developer|viewer)$")]
    role: &'static str,
    status: String,
    last_login_at: Option<Timestamp>,
    created_at: Timestamp,
    /// Only in the single-member view.
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<Timestamp>,
}

fn member_view(u: &UserRecord) -> Member {
    Member {
        id: u.id.clone(),
        email: u.email.clone(),
        name: u.name.clone(),
        role: u.role.as_str(),
        status: u.status.clone(),
        last_login_at: u.last_login_at.map(Timestamp),
        created_at: Timestamp(u.created_at),
        updated_at: None,
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberList {
    success: bool,
    /// Newest first.
    users: Vec<Member>,
    /// Every member of the organization.
    total: i64,
    limit: i64,
    offset: i64,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MemberResponse {
    success: bool,
    user: Member,
}

#[derive(ToSchema)]
pub struct RoleChange {
    #[schema(value_type = String, pattern = "^(admin|developer|viewer)$")]
    role: Role,
}

impl FromBody for RoleChange {
    fn from_body(body: &Object) -> Result<Self, ApiError> {
        let missing = ApiError::bad_request("Missing required field", "Role is required");
        Ok(Self {
            role: role_field(body, missing)?,
        })
    }
}

#[derive(Serialize, ToSchema)]
pub struct RoleChanged {
    success: bool,
    message: String,
    user: ChangedMember,
}

#[derive(Serialize, ToSchema)]
pub struct ChangedMember {
    id: String,
    email: String,
    name: String,
    #[schema(pattern = "^(admin|developer|viewer)$")]
    role: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct MemberRemoved {
    success: bool,
    message: String,
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

#[utoipa::path(
    get,
    path = "/api/users",
    tag = "members",
    summary = "The organization's members (all roles); `limit` 1–500, default 100",
    security(("bearerAuth" = [])),
    params(PageParams, CursorParams),
    responses(
        (status = 200, description = "A page of members", body = MemberList),
        (status = 400, description = "`Invalid limit`, `Invalid offset`, `Invalid cursor`, `Invalid query`", body = ErrorBody),
    ),
)]
async fn list(
    State(app): State<AppState>,
    user: CurrentUser,
    page: PageQuery,
) -> Result<Json<MemberList>, ApiError> {
    let (page, after) = page.keyset_within(Page::DEFAULT_LIMIT, Page::MAX_LIMIT)?;
    let found = orgd_core::members::list(
        &app.db,
        user.org_id(),
        page.limit,
        page.offset,
        after.as_ref(),
    )
    .await
    .or_internal("Failed to fetch users")?;
    Ok(Json(MemberList {
        success: true,
        users: found.members.iter().map(member_view).collect(),
        total: found.total,
        limit: page.limit,
        offset: page.offset,
        next_cursor: found.next.map(|c| c.encode()),
    }))
}

#[utoipa::path(
    get,
    path = "/api/users/{id}",
    tag = "members",
    summary = "One member (all roles)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$", description = "The user's id")),
    responses(
        (status = 200, description = "The member", body = MemberResponse),
        (status = 400, description = "`Invalid user ID format`", body = ErrorBody),
        (status = 404, description = "`User not found`", body = ErrorBody),
    ),
)]
async fn show(
    State(app): State<AppState>,
    user: CurrentUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<MemberResponse>, ApiError> {
    let member = orgd_core::members::get(&app.db, user.org_id(), user_id(&id)?)
        .await
        .or_internal("Failed to fetch user")?
        .ok_or_else(user_not_found)?;
    let view = Member {
        updated_at: Some(Timestamp(member.updated_at)),
        ..member_view(&member)
    };
    Ok(Json(MemberResponse {
        success: true,
        user: view,
    }))
}

#[utoipa::path(
    patch,
    path = "/api/users/{id}/role",
    tag = "members",
    summary = "Change a member's role (admin); never one's own, never the last admin",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$", description = "The user's id")),
    request_body = RoleChange,
    responses(
        (status = 200, description = "Changed and audited", body = RoleChanged),
        (status = 400, description = "`Missing required field`, `Invalid role`, `Invalid user ID format`, `Invalid JSON`", body = ErrorBody),
        (status = 403, description = "`Forbidden` (admins only), `Cannot change own role`, `Cannot remove last admin`", body = ErrorBody),
        (status = 404, description = "`User not found`", body = ErrorBody),
    ),
)]
async fn change_role(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    PathParams(id): PathParams<String>,
    body: JsonBody,
) -> Result<Json<RoleChanged>, ApiError> {
    user.require(Role::ADMIN)?;
    let RoleChange { role } = body.parse()?;
    let target = user_id(&id)?;
    if target == user.id() {
        return Err(refused(
            "Cannot change own role",
            "You cannot change your own role",
        ));
    }
    let audit = user.audit_event(ip, "user.role_changed", "user", target);
    let outcome = orgd_core::members::change_role(
        &app.db,
        user.org_id(),
        user.id(),
        target,
        role,
        audit,
        app.now(),
    )
    .await
    .or_internal("Failed to update role")?;
    let member = member_changed(outcome, "Cannot remove last admin")?;
    Ok(Json(RoleChanged {
        success: true,
        message: format!("User role updated to {}", role.as_str()),
        user: ChangedMember {
            id: member.id,
            email: member.email,
            name: member.name,
            role: role.as_str(),
        },
    }))
}

#[utoipa::path(
    delete,
    path = "/api/users/{id}",
    tag = "members",
    summary = "Remove a member (admin); never oneself, never the last admin. Their API keys die.",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$", description = "The user's id")),
    responses(
        (status = 200, description = "Removed and audited", body = MemberRemoved),
        (status = 400, description = "`Invalid user ID format`", body = ErrorBody),
        (status = 403, description = "`Forbidden` (admins only), `Cannot delete yourself`, `Cannot delete last admin`", body = ErrorBody),
        (status = 404, description = "`User not found`", body = ErrorBody),
    ),
)]
async fn remove(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<MemberRemoved>, ApiError> {
    user.require(Role::ADMIN)?;
    let target = user_id(&id)?;
    if target == user.id() {
        return Err(refused(
            "Cannot delete yourself",
            "You cannot remove your own account. Ask another admin to do this.",
        ));
    }
    let audit = user.audit_event(ip, "user.removed", "user", target);
    let outcome =
        orgd_core::members::remove(&app.db, user.org_id(), user.id(), target, audit, app.now())
            .await
            .or_internal("Failed to remove user")?;
    let member = member_changed(outcome, "Cannot delete last admin")?;
    Ok(Json(MemberRemoved {
        success: true,
        message: format!(
            "User {} has been removed from the organization",
            member.email
        ),
    }))
}

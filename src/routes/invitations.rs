//! Invitations: an admin invites an email with a role; the invitee joins with the token —
//! `POST /api/invitations/accept` for an existing account, signup with `inviteToken` for a new
//! one. The token (32 random bytes, 64 hex) is returned once to the inviting admin and stored
//! only as its SHA-256. Invitations expire after 7 days and reserve a seat while pending.

use crate::http::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::membership::{EXPIRED_MESSAGE, UNUSABLE_MESSAGE, refused, role_field, seats_full};
use crate::auth::{AuthAttempt, CurrentUser, Role};
use crate::error::{ApiError, OrInternal};
use crate::http::idempotency::{Claimed, IdempotencyKey, answer, respond};
use crate::http::page::PageParams;
use crate::http::{ClientIp, Done, FromBody, JsonBody, Object, PageQuery, PathParams};
use crate::openapi::ErrorBody;
use crate::routes::membership::email;
use crate::state::AppState;
use crate::timestamp::Timestamp;
use orgd_core::invitations::{
    InviteToken, Invited, Joined, Joiner, NewInvitation, PendingInvitation,
};
use orgd_core::users::Email;

pub const INVITATION_TTL_MS: i64 = 7 * 24 * 60 * 60 * 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
        .routes(routes!(validate))
        .routes(routes!(accept))
}

/// A pending invitation as listed (never its token).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Invitation {
    id: String,
    email: String,
    #[schema(pattern = "^(admin|developer|viewer)$")]
    role: &'static str,
    status: String,
    invited_by: String,
    invited_by_name: String,
    expires_at: Timestamp,
    created_at: Timestamp,
}

fn pending_view(pending: &PendingInvitation) -> Invitation {
    let invitation = &pending.invitation;
    Invitation {
        id: invitation.id.clone(),
        email: invitation.email.clone(),
        role: invitation.role.as_str(),
        status: invitation.status.clone(),
        invited_by: invitation.invited_by.clone(),
        invited_by_name: pending
            .invited_by_name
            .clone()
            .unwrap_or_else(|| "Unknown".into()),
        expires_at: Timestamp(invitation.expires_at),
        created_at: Timestamp(invitation.created_at),
    }
}

#[derive(ToSchema)]
pub struct InvitationRequest {
    #[schema(value_type = String, format = Email)]
    email: Email,
    #[schema(value_type = String, pattern = "^(admin|developer|viewer)$")]
    role: Role,
}

impl FromBody for InvitationRequest {
    fn from_body(body: &Object) -> Result<Self, ApiError> {
        let missing =
            || ApiError::bad_request("Missing required fields", "Email and role are required");
        let email = email(body.required_str("email", missing())?)?;
        let role = role_field(body, missing())?;
        Ok(Self { email, role })
    }
}

#[derive(Serialize, ToSchema)]
pub struct InvitationCreated {
    success: bool,
    message: &'static str,
    invitation: NewInvitationView,
}

/// The new invitation with its token, shown this once: the invitee signs up or accepts with it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewInvitationView {
    id: String,
    email: String,
    #[schema(pattern = "^(admin|developer|viewer)$")]
    role: &'static str,
    expires_at: Timestamp,
    /// 64 hex characters.
    token: String,
}

#[derive(Serialize, ToSchema)]
pub struct InvitationList {
    success: bool,
    invitations: Vec<Invitation>,
    total: i64,
    limit: i64,
    offset: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvitationPreview {
    success: bool,
    valid: bool,
    organization_name: String,
    #[schema(pattern = "^(admin|developer|viewer)$")]
    role: &'static str,
    inviter_name: String,
    email: String,
    expires_at: Timestamp,
}

#[derive(ToSchema)]
pub struct AcceptRequest {
    /// The invitation's token.
    #[schema(value_type = String, pattern = "^[0-9a-fA-F]{64}$")]
    token: InviteToken,
}

impl FromBody for AcceptRequest {
    fn from_body(body: &Object) -> Result<Self, ApiError> {
        let token = body.required_str(
            "token",
            ApiError::bad_request("Missing token", "Invitation token is required"),
        )?;
        let token = InviteToken::parse(token).ok_or_else(|| {
            ApiError::bad_request(
                "Invalid token format",
                "An invitation token is 64 hexadecimal characters",
            )
        })?;
        Ok(Self { token })
    }
}

#[derive(Serialize, ToSchema)]
pub struct Accepted {
    success: bool,
    message: String,
    organization: JoinedOrganization,
    #[schema(pattern = "^(admin|developer|viewer)$")]
    role: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct JoinedOrganization {
    id: String,
    name: String,
}

#[utoipa::path(
    post,
    path = "/api/invitations",
    tag = "members",
    summary = "Invite an email into the organization with a role (admin); the token is returned once",
    security(("bearerAuth" = [])),
    params(IdempotencyKey),
    request_body = InvitationRequest,
    responses(
        (status = 201, description = "Invited and audited; a replay carries `Idempotent-Replayed: true` and the same token", body = InvitationCreated),
        (status = 400, description = "`Missing required fields`, `Invalid email`, `Invalid role`, `Invalid JSON`, `Invalid Idempotency-Key`", body = ErrorBody),
        (status = 403, description = "`Forbidden` (admins only); `User limit exceeded` (members plus pending invitations) with `usage`", body = ErrorBody),
        (status = 409, description = "`User already in organization`, `Invitation already sent`; `Request in progress` with this Idempotency-Key", body = ErrorBody),
        (status = 422, description = "`Idempotency key reused` with another body", body = ErrorBody),

    ),
)]
async fn create(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response, ApiError> {
    user.require(Role::ADMIN)?;
    let body = body.required()?;
    let InvitationRequest { email, role } = InvitationRequest::from_body(&body)?;
    let claim = match key
        .claim(&app, user.org_id(), "POST /api/invitations", &body)
        .await?
    {
        Claimed::Replayed(response) => return Ok(response),
        Claimed::Fresh(claim) => claim,
    };
    let now = app.now();
    let token = InviteToken::generate();
    let invitation = NewInvitation {
        id: orgd_core::ids::new_id(now),
        organization_id: user.org_id().to_string(),
        email: email.as_str().to_string(),
        role,
        token_hash: token.hash(),
        invited_by: user.id().to_string(),
        expires_at: now + INVITATION_TTL_MS,
    };
    let audit = user
        .audit_event(ip, "invitation.created", "invitation", &invitation.id)
        .with_details(json!({"email": invitation.email, "role": role.as_str()}));
    let answer_for = |invitation: &NewInvitation| {
        answer(
            StatusCode::CREATED,
            &InvitationCreated {
                success: true,
                message: "Invitation created. Give the token to the invitee: it will not be shown again.",
                invitation: NewInvitationView {
                    id: invitation.id.clone(),
                    email: invitation.email.clone(),
                    role: invitation.role.as_str(),
                    expires_at: Timestamp(invitation.expires_at),
                    token: token.as_str().to_string(),
                },
            },
        )
    };
    let outcome = orgd_core::invitations::create(
        &app.db,
        &invitation,
        &audit,
        now,
        claim.replay(&answer_for).as_ref(),
    )
    .await
    .or_internal("Failed to send invitation");
    let result = match outcome {
        Err(e) => Err(e),
        Ok(Invited::Created) => respond(&answer_for(&invitation)),
        Ok(Invited::AlreadyMember) => Err(ApiError::conflict(
            "User already in organization",
            "This user is already a member of your organization",
        )),
        Ok(Invited::AlreadyInvited) => Err(ApiError::conflict(
            "Invitation already sent",
            "A pending invitation for this email already exists",
        )),
        Ok(Invited::SeatsFull(seats)) => Err(seats_full(seats)),
    };
    claim.settle(result).await
}

#[utoipa::path(
    get,
    path = "/api/invitations",
    tag = "members",
    summary = "Pending invitations (admin); `limit` 1–500, default 100",
    security(("bearerAuth" = [])),
    params(PageParams),
    responses(
        (status = 200, description = "A page of pending invitations", body = InvitationList),
        (status = 400, description = "`Invalid limit`, `Invalid offset`, `Invalid query`", body = ErrorBody),
        (status = 403, description = "`Forbidden`: admins only", body = ErrorBody),
    ),
)]
async fn list(
    State(app): State<AppState>,
    user: CurrentUser,
    page: PageQuery,
) -> Result<Json<InvitationList>, ApiError> {
    user.require(Role::ADMIN)?;
    let page = page.page()?;
    let (invitations, total) =
        orgd_core::invitations::pending(&app.db, user.org_id(), app.now(), page.limit, page.offset)
            .await
            .or_internal("Failed to fetch invitations")?;
    Ok(Json(InvitationList {
        success: true,
        invitations: invitations.iter().map(pending_view).collect(),
        total,
        limit: page.limit,
        offset: page.offset,
    }))
}

#[utoipa::path(
    delete,
    path = "/api/invitations/{id}",
    tag = "members",
    summary = "Revoke a pending invitation (admin)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$", description = "The invitation's id")),
    responses(
        (status = 200, description = "Revoked and audited", body = Done),
        (status = 400, description = "`Invalid invitation ID`", body = ErrorBody),
        (status = 403, description = "`Forbidden`: admins only", body = ErrorBody),
        (status = 404, description = "`Invitation not found`", body = ErrorBody),
    ),
)]
async fn revoke(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<Done>, ApiError> {
    user.require(Role::ADMIN)?;
    if !orgd_core::ids::is_valid(&id) {
        return Err(ApiError::bad_request(
            "Invalid invitation ID",
            "An invitation id is 24 lowercase hexadecimal characters",
        ));
    }
    let audit = user.audit_event(ip, "invitation.revoked", "invitation", &id);
    let revoked = orgd_core::invitations::revoke(&app.db, user.org_id(), &id, audit, app.now())
        .await
        .or_internal("Failed to revoke invitation")?;
    if !revoked {
        return Err(ApiError::not_found(
            "Invitation not found",
            "No pending invitation with this id in your organization",
        ));
    }
    Ok(Done::new("Invitation revoked successfully"))
}

/// A refusal of the public validation endpoint, which also says `valid: false`.
fn not_valid(status: StatusCode, error: &'static str, message: &'static str) -> ApiError {
    let mut extra = serde_json::Map::new();
    extra.insert("valid".into(), Value::Bool(false));
    ApiError::Refused {
        status,
        error,
        message: message.into(),
        extra,
    }
}

#[utoipa::path(
    get,
    path = "/api/invitations/validate/{token}",
    tag = "members",
    summary = "What an invitation token invites to (public, rate limited per IP)",
    params(("token" = String, Path, pattern = "^[0-9a-fA-F]{64}$", description = "The invitation's token")),
    responses(
        (status = 200, description = "A usable invitation", body = InvitationPreview),
        (status = 400, description = "`Invalid token format`, with `valid: false`", body = ErrorBody),
        (status = 404, description = "`Invitation not found or already used`, `Invitation has expired`, with `valid: false`", body = ErrorBody),
        (status = 429, description = "Per-IP rate limit", body = ErrorBody),
    ),
)]
async fn validate(
    State(app): State<AppState>,
    _attempt: AuthAttempt,
    PathParams(token): PathParams<String>,
) -> Result<Json<InvitationPreview>, ApiError> {
    let token = InviteToken::parse(&token).ok_or_else(|| {
        not_valid(
            StatusCode::BAD_REQUEST,
            "Invalid token format",
            "An invitation token is 64 hexadecimal characters",
        )
    })?;
    let preview = orgd_core::invitations::preview(&app.db, &token.hash())
        .await
        .or_internal("Failed to validate invitation")?
        .ok_or_else(|| {
            not_valid(
                StatusCode::NOT_FOUND,
                "Invitation not found or already used",
                UNUSABLE_MESSAGE,
            )
        })?;
    if preview.invitation.is_expired(app.now()) {
        return Err(not_valid(
            StatusCode::NOT_FOUND,
            "Invitation has expired",
            EXPIRED_MESSAGE,
        ));
    }
    // Deliberately nothing about whether the email already has an account (§10.7).
    Ok(Json(InvitationPreview {
        success: true,
        valid: true,
        organization_name: preview.organization_name,
        role: preview.invitation.role.as_str(),
        inviter_name: preview.inviter_name.unwrap_or_else(|| "Unknown".into()),
        email: preview.invitation.email,
        expires_at: Timestamp(preview.invitation.expires_at),
    }))
}

#[utoipa::path(
    post,
    path = "/api/invitations/accept",
    tag = "members",
    summary = "Move the caller into the inviting organization with the invited role",
    security(("bearerAuth" = [])),
    request_body = AcceptRequest,
    responses(
        (status = 200, description = "Joined; audited in both organizations", body = Accepted),
        (status = 400, description = "`Missing token`, `Invalid token format`, `Invalid JSON`", body = ErrorBody),
        (status = 403, description = "`Email mismatch`; `User limit exceeded` with `usage`", body = ErrorBody),
        (status = 404, description = "`Invalid or expired invitation`, `Invitation has expired`", body = ErrorBody),
        (status = 409, description = "`User already in organization`, `Last admin` (of the current organization), `Membership changed`", body = ErrorBody),
    ),
)]
async fn accept(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    body: JsonBody,
) -> Result<Json<Accepted>, ApiError> {
    let AcceptRequest { token } = body.parse()?;
    let joiner = Joiner {
        user_id: user.id(),
        organization_id: user.org_id(),
    };
    let outcome = orgd_core::invitations::accept(
        &app.db,
        &token.hash(),
        joiner,
        Some(ip.0.to_string()),
        app.now(),
    )
    .await
    .or_internal("Failed to accept invitation")?;
    let joined = match outcome {
        Joined::Joined(membership) => membership,
        refusal => return Err(accept_refused(refusal)),
    };
    Ok(Json(Accepted {
        success: true,
        message: format!("Successfully joined {}", joined.organization_name),
        organization: JoinedOrganization {
            id: joined.invitation.organization_id,
            name: joined.organization_name,
        },
        role: joined.invitation.role.as_str(),
    }))
}

fn accept_refused(outcome: Joined) -> ApiError {
    match outcome {
        Joined::Expired => ApiError::not_found("Invitation has expired", EXPIRED_MESSAGE),
        Joined::EmailMismatch => refused(
            "Email mismatch",
            "This invitation is for a different email address",
        ),
        Joined::AlreadyMember => ApiError::conflict(
            "User already in organization",
            "You are already a member of this organization",
        ),
        Joined::LastAdmin => ApiError::conflict(
            "Last admin",
            "You are the last admin of your current organization. Promote another member to admin before leaving it.",
        ),
        Joined::SeatsFull(seats) => seats_full(seats),
        Joined::MembershipChanged => ApiError::conflict(
            "Membership changed",
            "Your membership changed while the invitation was being accepted. Please try again.",
        ),
        _ => ApiError::not_found("Invalid or expired invitation", UNUSABLE_MESSAGE),
    }
}

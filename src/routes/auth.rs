//! Sign-up, login, logout and `GET /api/auth/me`.

use crate::http::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AuthAttempt, CurrentUser};
use crate::error::{ApiError, OrInternal};
use crate::http::{Done, FromBody, JsonBody, Object};
use crate::metrics::Refusal;
use crate::routes::membership::{email, signup_refused};
use crate::routes::organization::{LimitsView, limits_view, org_name};
use crate::state::AppState;
use crate::timestamp::Timestamp;
use orgd_core::invitations::{self, InviteToken, Joined};
use orgd_core::organizations::OrgName;
use orgd_core::passwords;
use orgd_core::plans::Plan;
use orgd_core::users::{
    self, Email, LOCKOUT_THRESHOLD, LOCKOUT_WINDOW_MS, LoginAttempt, NewOrganization, NewUser,
    Role, UserRecord,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
}

/// A person's display name: trimmed, 1–100 characters.
fn person_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    match name.chars().count() {
        0 => Err(ApiError::invalid("name", "Name cannot be empty")),
        101.. => Err(ApiError::invalid(
            "name",
            "Name cannot exceed 100 characters",
        )),
        _ => Ok(name.to_string()),
    }
}

/// The answer to signup and login.
#[derive(Serialize, ToSchema)]
pub struct Session {
    success: bool,
    /// A JWT for `Authorization: Bearer`.
    token: String,
    user: SessionUser,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionUser {
    id: String,
    email: String,
    name: String,
    #[schema(pattern = "^(admin|developer|viewer)$")]
    role: &'static str,
    organization_id: String,
    organization_name: String,
}

fn session_body(token: String, user: &UserRecord, organization_name: String) -> Session {
    Session {
        success: true,
        token,
        user: SessionUser {
            id: user.id.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
            role: user.role.as_str(),
            organization_id: user.organization_id.clone(),
            organization_name,
        },
    }
}

/// `POST /api/auth/signup`: `organizationName` founds an organization (its first admin);
/// `inviteToken` joins the inviting one with the invited role instead.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignupRequest {
    #[schema(value_type = String, format = Email)]
    email: Email,
    /// At least 8 characters with upper and lower case letters, a digit and a symbol.
    #[schema(min_length = 8, max_length = 128)]
    password: String,
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// Required without `inviteToken`.
    #[schema(value_type = Option<String>, min_length = 2, max_length = 100)]
    organization_name: Option<OrgName>,
    /// An invitation's token.
    #[schema(value_type = Option<String>, pattern = "^[0-9a-fA-F]{64}$")]
    invite_token: Option<InviteToken>,
}

fn organization_name_required() -> ApiError {
    ApiError::bad_request(
        "Missing required fields",
        "Organization name is required when not using an invitation",
    )
}

/// Checked in the original's order (§2.1). An `inviteToken` wins over an `organizationName`
/// sent alongside it, which is then not read at all.
impl FromBody for SignupRequest {
    fn from_body(body: &Object) -> Result<Self, ApiError> {
        let missing = || {
            ApiError::bad_request(
                "Missing required fields",
                "Email, password, and name are required",
            )
        };
        let email = body.required_str("email", missing())?;
        let password = body.required_str("password", missing())?;
        let name = body.required_str("name", missing())?;
        let invite = body.opt_str("inviteToken")?.filter(|t| !t.is_empty());
        let organization_name = match invite {
            Some(_) => None,
            None => Some(body.required_str("organizationName", organization_name_required())?),
        };
        let email = self::email(email)?;
        let problems = passwords::policy_violations(password);
        if !problems.is_empty() {
            return Err(ApiError::bad_request("Weak password", problems.join(", ")));
        }
        let name = person_name(name)?;
        let invite_token = invite
            .map(|token| {
                InviteToken::parse(token).ok_or_else(|| {
                    ApiError::bad_request(
                        "Invalid invitation token format",
                        "An invitation token is 64 hexadecimal characters",
                    )
                })
            })
            .transpose()?;
        let organization_name = organization_name
            .map(|raw| org_name("organizationName", raw))
            .transpose()?;
        Ok(Self {
            email,
            password: password.to_string(),
            name,
            organization_name,
            invite_token,
        })
    }
}

#[utoipa::path(
    post,
    path = "/api/auth/signup",
    tag = "auth",
    summary = "Create an account (and an organization, or join an invitation's)",
    request_body = SignupRequest,
    responses(
        (status = 201, description = "Signed up and logged in", body = Session),
        (status = 400, description = "`Missing required fields`, `Invalid email`, `Weak password`, `Invalid name`, `Invalid organizationName`, `Invalid invitation token format`, `Invalid or expired invitation`, `Invitation has expired`, `Invalid JSON`", body = crate::openapi::ErrorBody),
        (status = 403, description = "`User limit exceeded` in the inviting organization", body = crate::openapi::ErrorBody),
        (status = 409, description = "`Email already registered`", body = crate::openapi::ErrorBody),
        (status = 429, description = "Per-IP rate limit", body = crate::openapi::ErrorBody),
    ),
)]
async fn signup(
    State(app): State<AppState>,
    attempt: AuthAttempt,
    body: JsonBody,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let signup: SignupRequest = body.parse()?;
    let password_hash = app
        .passwords
        .hash(signup.password)
        .await
        .or_internal("Signup failed")?;
    let now = app.now();
    let user = NewUser {
        id: orgd_core::ids::new_id(now),
        email: signup.email.as_str().to_string(),
        name: signup.name,
        password_hash,
    };
    let (record, org_name) = match (signup.invite_token, signup.organization_name) {
        (None, Some(org_name)) => found_organization(&app, org_name, user, now).await?,
        // `from_body` asks for the name whenever there is no token.
        (None, None) => return Err(organization_name_required()),
        (Some(token), _) => {
            let ip = Some(attempt.ip.0.to_string());
            match invitations::signup(&app.db, &token.hash(), &user, ip, now)
                .await
                .or_internal("Signup failed")?
            {
                Joined::Joined(membership) => (membership.user, membership.organization_name),
                refusal => return Err(signup_refused(refusal)),
            }
        }
    };
    let (token, _) = app
        .jwt
        .issue(&record.id, now)
        .or_internal("Signup failed")?;
    Ok((
        StatusCode::CREATED,
        Json(session_body(token, &record, org_name)),
    ))
}

/// Creates the organization with `user` as its first admin.
async fn found_organization(
    app: &AppState,
    org_name: OrgName,
    user: NewUser,
    now: i64,
) -> Result<(UserRecord, String), ApiError> {
    let org = NewOrganization {
        id: orgd_core::ids::new_id(now),
        base_slug: orgd_core::ids::slugify(org_name.as_str()),
        name: org_name.into_string(),
        plan: Plan::Free,
    };
    let record = UserRecord {
        id: user.id.clone(),
        organization_id: org.id.clone(),
        email: user.email.clone(),
        name: user.name.clone(),
        role: Role::Admin,
        status: "active".into(),
        last_login_at: None,
        created_at: now,
        updated_at: now,
    };
    let org_name = org.name.clone();
    match users::create_organization_with_admin(&app.db, org, user, now).await {
        Err(e) if e.is_conflict_on("email") => {
            return Err(ApiError::conflict(
                "Email already registered",
                "An account with this email already exists",
            ));
        }
        other => other.or_internal("Signup failed")?,
    };
    Ok((record, org_name))
}

#[derive(ToSchema)]
pub struct LoginRequest {
    // Trimmed and lower-cased, as accounts are stored; not checked further, so a malformed
    // address is simply an unknown one.
    #[schema(format = Email)]
    email: String,
    password: String,
}

impl FromBody for LoginRequest {
    fn from_body(body: &Object) -> Result<Self, ApiError> {
        let missing =
            || ApiError::bad_request("Missing credentials", "Email and password are required");
        let email = body.required_str("email", missing())?.trim().to_lowercase();
        let password = body.required_str("password", missing())?.to_string();
        Ok(Self { email, password })
    }
}

#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "auth",
    summary = "Log in",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = Session),
        (status = 400, description = "`Missing credentials`, `Invalid JSON`", body = crate::openapi::ErrorBody),
        (status = 401, description = "`Authentication required`: wrong email or password", body = crate::openapi::ErrorBody),
        (status = 403, description = "`Account suspended`", body = crate::openapi::ErrorBody),
        (status = 429, description = "Per-IP rate limit, or `Account temporarily locked` after 5 failures for this email from this IP in 15 minutes", body = crate::openapi::ErrorBody),
    ),
)]
async fn login(
    State(app): State<AppState>,
    attempt: AuthAttempt,
    body: JsonBody,
) -> Result<Json<Session>, ApiError> {
    let LoginRequest { email, password } = body.parse()?;
    let ip = attempt.ip.0.to_string();
    let now = app.now();

    let attempt = users::begin_login_attempt(
        &app.db,
        &email,
        &ip,
        now,
        now - LOCKOUT_WINDOW_MS,
        LOCKOUT_THRESHOLD,
    )
    .await
    .or_internal("Login failed")?;
    if let LoginAttempt::Locked { newest } = attempt {
        let locked_until = newest + LOCKOUT_WINDOW_MS;
        let retry_after = ((locked_until - now).max(1000) + 999) / 1000;
        app.metrics.record_refusal(Refusal::LoginLockout);
        return Err(ApiError::TooManyAttempts {
            retry_after_secs: retry_after,
        });
    }

    let candidate = users::login_candidate(&app.db, &email)
        .await
        .or_internal("Login failed")?;
    let verified = match &candidate {
        Some(c) => {
            app.passwords
                .verify(password, c.password_hash.clone())
                .await
        }
        None => app.passwords.verify_decoy(password).await,
    }
    .or_internal("Login failed")?;
    // The attempt was counted up front: a failure needs nothing more.
    let Some(candidate) = candidate.filter(|_| verified) else {
        return Err(ApiError::Unauthenticated("Email or password is incorrect"));
    };
    users::record_login_success(&app.db, &candidate.user.id, &email, &ip, now)
        .await
        .or_internal("Login failed")?;
    if candidate.user.status == "suspended" {
        return Err(ApiError::Refused {
            status: StatusCode::FORBIDDEN,
            error: "Account suspended",
            message: "Your account has been suspended. Contact support.".into(),
            extra: Default::default(),
        });
    }
    let (token, _) = app
        .jwt
        .issue(&candidate.user.id, now)
        .or_internal("Login failed")?;
    Ok(Json(session_body(
        token,
        &candidate.user,
        candidate.organization_name,
    )))
}

#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "auth",
    summary = "Revoke this session's token at once",
    security(("bearerAuth" = [])),
    responses((status = 200, description = "Logged out", body = Done)),
)]
async fn logout(State(app): State<AppState>, user: CurrentUser) -> Result<Json<Done>, ApiError> {
    let claims = user.session()?;
    users::revoke_token(
        &app.db,
        user.id(),
        &claims.jti,
        claims.exp * 1000,
        app.now(),
    )
    .await
    .or_internal("Logout failed")?;
    Ok(Done::new("Logged out successfully"))
}

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    success: bool,
    data: Me,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    id: String,
    email: String,
    name: String,
    #[schema(pattern = "^(admin|developer|viewer)$")]
    role: &'static str,
    status: String,
    /// `null` until the first login.
    last_login_at: Option<Timestamp>,
    organization: MeOrganization,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeOrganization {
    id: String,
    name: String,
    slug: String,
    #[schema(pattern = "^(free|team|enterprise)$")]
    plan: &'static str,
    limits: LimitsView,
    user_count: i64,
    user_limit: Option<i64>,
    ai_analysis_enabled: bool,
}

#[utoipa::path(
    get,
    path = "/api/auth/me",
    tag = "auth",
    summary = "The caller and their organization",
    security(("bearerAuth" = [])),
    responses((status = 200, description = "The caller", body = MeResponse)),
)]
async fn me(State(app): State<AppState>, user: CurrentUser) -> Result<Json<MeResponse>, ApiError> {
    let org = app
        .orgs
        .get(&app.db, user.org_id())
        .await
        .or_internal("Failed to fetch user info")?
        .ok_or_else(|| {
            ApiError::not_found(
                "Organization not found",
                "The organization no longer exists",
            )
        })?;
    let u = &user.user;
    Ok(Json(MeResponse {
        success: true,
        data: Me {
            id: u.id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            role: u.role.as_str(),
            status: u.status.clone(),
            last_login_at: u.last_login_at.map(Timestamp),
            organization: MeOrganization {
                limits: limits_view(&org),
                user_limit: org.limits().max_users,
                plan: org.plan.as_str(),
                id: org.id.clone(),
                name: org.name.clone(),
                slug: org.slug.clone(),
                user_count: org.user_count,
                ai_analysis_enabled: org.ai_analysis_enabled,
            },
        },
    }))
}

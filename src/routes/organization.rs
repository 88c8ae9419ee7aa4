//! `GET` and `PATCH /api/organization` (API.md, Organization — seed): plans and limits.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use orgd_core::organizations::{self, OrgName, OrganizationRecord, SettingsChange};
use orgd_core::plans::Limits;

use crate::auth::{CurrentUser, Role};
use crate::error::{ApiError, OrInternal};
use crate::http::{ClientIp, FromBody, JsonBody, Object};
use crate::state::AppState;
use crate::timestamp::Timestamp;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show, update))
}

/// An organization name from the body field `field`; errors are `Invalid <field>`.
pub fn org_name(field: &str, raw: &str) -> Result<OrgName, ApiError> {
    OrgName::parse(raw).map_err(|why| ApiError::invalid(field, why))
}

pub fn limits_view(org: &OrganizationRecord) -> LimitsView {
    LimitsView::new(org.limits(), org.storage_used_bytes)
}

/// The seed's organization object.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Organization)]
pub struct OrganizationView<'a> {
    id: &'a str,
    name: &'a str,
    slug: &'a str,
    #[schema(pattern = "^(free|team|enterprise)$")]
    plan: &'static str,
    limits: LimitsView,
    user_count: i64,
    /// `null` when unlimited.
    user_limit: Option<i64>,
    ai_analysis_enabled: bool,
    created_at: Timestamp,
    updated_at: Timestamp,
}

#[derive(Serialize, ToSchema)]
pub struct ShowResponse<'a> {
    success: bool,
    organization: OrganizationView<'a>,
}

#[utoipa::path(
    get,
    path = "/api/organization",
    tag = "organization",
    summary = "The caller's organization, its plan and limits (all roles)",
    security(("bearerAuth" = [])),
    responses((status = 200, description = "The organization", body = ShowResponse)),
)]
async fn show(State(app): State<AppState>, user: CurrentUser) -> Result<Response, ApiError> {
    let org = app
        .orgs
        .get(&app.db, user.org_id())
        .await
        .or_internal("Failed to fetch organization")?
        .ok_or_else(org_not_found)?;
    let body = ShowResponse {
        success: true,
        organization: OrganizationView {
            id: &org.id,
            name: &org.name,
            slug: &org.slug,
            plan: org.plan.as_str(),
            limits: limits_view(&org),
            user_count: org.user_count,
            user_limit: org.limits().max_users,
            ai_analysis_enabled: org.ai_analysis_enabled,
            created_at: Timestamp(org.created_at),
            updated_at: Timestamp(org.updated_at),
        },
    };
    Ok(Json(body).into_response())
}

pub(crate) fn org_not_found() -> ApiError {
    ApiError::not_found("Organization not found", "The organization does not exist")
}

/// `PATCH /api/organization`: at least one of the two fields.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettingsPatch {
    /// 2–100 characters after trimming.
    #[schema(value_type = Option<String>)]
    name: Option<OrgName>,
    ai_analysis_enabled: Option<bool>,
}

/// Checked in the seed's order.
impl FromBody for SettingsPatch {
    fn from_body(body: &Object) -> Result<Self, ApiError> {
        if !body.has("name") && !body.has("aiAnalysisEnabled") {
            return Err(ApiError::bad_request(
                "Missing fields",
                "At least one field (name or aiAnalysisEnabled) is required",
            ));
        }
        let name = body
            .opt_str("name")
            .map_err(|_| ApiError::invalid("name", "Organization name must be a string"))?
            .map(|raw| org_name("name", raw))
            .transpose()?;
        Ok(Self {
            name,
            ai_analysis_enabled: body.opt_bool("aiAnalysisEnabled")?,
        })
    }
}

#[utoipa::path(
    patch,
    path = "/api/organization",
    tag = "organization",
    summary = "Rename the organization or switch AI analysis (admin)",
    security(("bearerAuth" = [])),
    request_body = SettingsPatch,
    responses(
        (status = 200, description = "Updated and audited", body = UpdateResponse),
        (status = 400, description = "`Missing fields`, `Invalid name`, `Invalid aiAnalysisEnabled`, `Invalid JSON`", body = crate::openapi::ErrorBody),
        (status = 403, description = "`Forbidden`: admins only", body = crate::openapi::ErrorBody),
    ),
)]
async fn update(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    body: JsonBody,
) -> Result<Json<UpdateResponse>, ApiError> {
    user.require(Role::ADMIN)?;
    let patch: SettingsPatch = body.parse_or_empty()?;
    let change = SettingsChange {
        name: patch.name.map(OrgName::into_string),
        ai_analysis_enabled: patch.ai_analysis_enabled,
    };
    let mut changes = serde_json::Map::new();
    if let Some(name) = &change.name {
        changes.insert("name".into(), name.clone().into());
    }
    if let Some(enabled) = change.ai_analysis_enabled {
        changes.insert("aiAnalysisEnabled".into(), enabled.into());
    }
    let audit = user
        .audit_event(ip, "org.settings_updated", "organization", user.org_id())
        .with_details(json!({ "changes": changes }));
    let org = organizations::update_settings(&app.db, user.org_id(), &change, &audit, app.now())
        .await
        .or_internal("Failed to update organization")?
        .ok_or_else(org_not_found)?;
    Ok(Json(UpdateResponse {
        success: true,
        message: "Organization settings updated successfully",
        organization: UpdatedOrganization {
            id: org.id,
            name: org.name,
            ai_analysis_enabled: org.ai_analysis_enabled,
        },
    }))
}

#[derive(Serialize, ToSchema)]
pub struct UpdateResponse {
    success: bool,
    message: &'static str,
    organization: UpdatedOrganization,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdatedOrganization {
    id: String,
    name: String,
    ai_analysis_enabled: bool,
}

/// The `limits` object of the seed's organization view (v1 and v2 names both present); `null`
/// is unlimited.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Limits)]
#[serde(rename_all = "camelCase")]
pub struct LimitsView {
    pub max_projects: Option<i64>,
    pub max_test_runs: Option<i64>,
    pub max_users: Option<i64>,
    pub max_concurrent_runs: Option<i64>,
    pub max_storage_bytes: Option<i64>,
    pub max_storage: Option<i64>,
    pub current_storage_used_bytes: i64,
}

impl LimitsView {
    pub fn new(limits: Limits, storage_used_bytes: i64) -> Self {
        Self {
            max_projects: limits.max_projects,
            max_test_runs: limits.max_test_runs,
            max_users: limits.max_users,
            max_concurrent_runs: limits.max_concurrent_runs,
            max_storage_bytes: limits.max_storage_bytes,
            max_storage: limits.max_storage_bytes,
            current_storage_used_bytes: storage_used_bytes,
        }
    }
}

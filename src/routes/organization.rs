//! `GET` and `PATCH /api/organization` (API.md, Organization — seed): plans and limits.

use crate::http::{Json, json_bytes, json_response};
use axum::extract::State;
use axum::response::Response;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use orgd_core::integrations::{self as stored, Integration, IntegrationChange, IntegrationSummary};
use orgd_core::organizations::{
    self, OrgName, OrganizationRecord, SettingsChange, SettingsOutcome,
};
use orgd_core::plans::Limits;
use serde_json::{Map, Value};

use super::integration_settings::{
    DEFAULT_SLACK_EVENTS, Draft, IntegrationSettings, PreparedSave, integration_changed,
    slack_events, slack_webhook, unlink_audit,
};
use crate::auth::{CurrentUser, Role};
use crate::config::Secret;
use crate::error::{ApiError, OrInternal};
use crate::http::{ClientIp, FromBody, FromBodyWith, JsonBody, Object};
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
    /// `https://hooks.slack.com/services/***` when a Slack webhook is stored (never the URL
    /// itself), else null.
    slack_webhook_url: Option<&'static str>,
    /// The execution statuses Slack is told about.
    slack_notification_events: Vec<String>,
    /// Whether each tracker is connected and enabled (the original's four; `azure` is Azure
    /// DevOps).
    integrations: TrackerFlags,
    created_at: Timestamp,
    updated_at: Timestamp,
}

/// What the original's settings pages read of the trackers: never a secret.
#[derive(Serialize, ToSchema)]
pub struct TrackerFlags {
    jira: TrackerFlag,
    github: TrackerFlag,
    gitlab: TrackerFlag,
    azure: TrackerFlag,
}

#[derive(Serialize, ToSchema)]
pub struct TrackerFlag {
    enabled: bool,
}

/// The stored Slack webhook as the organization view shows it.
const MASKED_SLACK_WEBHOOK: &str = "https://hooks.slack.com/services/***";

fn tracker_flags(summaries: &[IntegrationSummary]) -> TrackerFlags {
    let enabled = |integration: Integration| TrackerFlag {
        enabled: summaries
            .iter()
            .any(|s| s.integration == integration && s.enabled),
    };
    TrackerFlags {
        jira: enabled(Integration::Jira),
        github: enabled(Integration::Github),
        gitlab: enabled(Integration::Gitlab),
        azure: enabled(Integration::AzureDevops),
    }
}

/// The stored Slack events, else the defaults every new Slack integration gets.
fn slack_notification_events(slack: Option<&IntegrationSummary>) -> Vec<String> {
    slack
        .and_then(|s| s.settings.get("events"))
        .and_then(Value::as_array)
        .map(|events| {
            events
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_else(|| DEFAULT_SLACK_EVENTS.map(String::from).to_vec())
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
    let integrations = app
        .integrations
        .get(&app.db, user.org_id())
        .await
        .or_internal("Failed to fetch organization")?;
    let body =
        app.org_answers
            .answer(user.org_id(), (org, integrations), |(org, integrations)| {
                json_bytes(&show_response(org, integrations))
            })?;
    Ok(json_response(body))
}

/// What `GET /api/organization` answers: a function of the record and the integrations only
/// (`AppState::org_answers` reuses it while they are equal).
fn show_response<'a>(
    org: &'a OrganizationRecord,
    integrations: &[IntegrationSummary],
) -> ShowResponse<'a> {
    let slack = integrations
        .iter()
        .find(|s| s.integration == Integration::Slack);
    ShowResponse {
        success: true,
        organization: OrganizationView {
            id: &org.id,
            name: &org.name,
            slug: &org.slug,
            plan: org.plan.as_str(),
            limits: limits_view(org),
            user_count: org.user_count,
            user_limit: org.limits().max_users,
            ai_analysis_enabled: org.ai_analysis_enabled,
            slack_webhook_url: slack.map(|_| MASKED_SLACK_WEBHOOK),
            slack_notification_events: slack_notification_events(slack),
            integrations: tracker_flags(integrations),
            created_at: Timestamp(org.created_at),
            updated_at: Timestamp(org.updated_at),
        },
    }
}

pub(crate) fn org_not_found() -> ApiError {
    ApiError::not_found("Organization not found", "The organization does not exist")
}

/// `PATCH /api/organization`: at least one field.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettingsPatch {
    /// 2–100 characters after trimming.
    #[schema(value_type = Option<String>)]
    name: Option<OrgName>,
    ai_analysis_enabled: Option<bool>,
    /// A Slack incoming webhook URL (`https://hooks.slack.com/services/...`), saved as `PUT
    /// /api/integrations/slack` saves `webhookUrl`; `null` (or `""`) unlinks Slack.
    #[schema(value_type = Option<String>)]
    slack_webhook_url: Option<SlackWebhook>,
    /// Which of PASSED, FAILED, ERROR, UNSTABLE Slack is told about (the integration's
    /// `events`); `null` restores the default. Needs a stored or given webhook URL.
    #[schema(value_type = Option<Vec<String>>)]
    slack_notification_events: Option<Value>,
}

/// What `slackWebhookUrl` asks for.
pub enum SlackWebhook {
    Set(Secret<String>),
    Unlink,
}

/// Checked in the seed's order, then the original's (Slack after the seed's fields).
impl FromBody for SettingsPatch {
    fn from_body(body: &Object) -> Result<Self, ApiError> {
        const FIELDS: [&str; 4] = [
            "name",
            "aiAnalysisEnabled",
            "slackWebhookUrl",
            "slackNotificationEvents",
        ];
        if !FIELDS.iter().any(|field| body.has(field)) {
            return Err(ApiError::bad_request(
                "Missing fields",
                "At least one field (name, aiAnalysisEnabled, slackWebhookUrl, or slackNotificationEvents) is required",
            ));
        }
        let name = body
            .opt_str("name")
            .map_err(|_| ApiError::invalid("name", "Organization name must be a string"))?
            .map(|raw| org_name("name", raw))
            .transpose()?;
        let ai_analysis_enabled = body.opt_bool("aiAnalysisEnabled")?;
        let slack_webhook_url = match body.0.get("slackWebhookUrl") {
            None => None,
            // The original's settings page clears the field to unlink.
            Some(Value::Null) => Some(SlackWebhook::Unlink),
            Some(Value::String(s)) if s.trim().is_empty() => Some(SlackWebhook::Unlink),
            Some(value @ Value::String(_)) => {
                Some(SlackWebhook::Set(slack_webhook("slackWebhookUrl", value)?))
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "slackWebhookUrl",
                    "slackWebhookUrl must be a string or null",
                ));
            }
        };
        let slack_notification_events = match body.0.get("slackNotificationEvents") {
            None => None,
            Some(Value::Null) => Some(Value::Null),
            Some(value) => Some(slack_events("slackNotificationEvents", value)?),
        };
        Ok(Self {
            name,
            ai_analysis_enabled,
            slack_webhook_url,
            slack_notification_events,
        })
    }
}

/// The Slack part of a PATCH, ready to write.
enum SlackPlan {
    Save {
        draft: Draft,
        prepared: PreparedSave,
    },
    Unlink(orgd_core::audit::AuditEvent),
}

/// Slack through the organization's settings, as `PUT` / `DELETE /api/integrations/slack`
/// do it: the same merge into what is stored, the same sealing and the same audit entries.
async fn slack_plan(
    app: &AppState,
    user: &CurrentUser,
    ip: ClientIp,
    patch: &SettingsPatch,
) -> Result<Option<SlackPlan>, ApiError> {
    let (url, events) = (&patch.slack_webhook_url, &patch.slack_notification_events);
    if url.is_none() && events.is_none() {
        return Ok(None);
    }
    if let Some(SlackWebhook::Unlink) = url {
        return Ok(Some(SlackPlan::Unlink(unlink_audit(
            user,
            ip,
            Integration::Slack,
        ))));
    }
    let stored = stored::get(&app.db, user.org_id(), Integration::Slack)
        .await
        .or_internal("Failed to update organization")?;
    if stored.is_none() && url.is_none() {
        return Err(ApiError::invalid(
            "slackWebhookUrl",
            "No Slack webhook is stored: send slackWebhookUrl with slackNotificationEvents",
        ));
    }
    // The integration's own field names; the values were checked by `SettingsPatch`.
    let mut fields = Map::new();
    if let Some(SlackWebhook::Set(url)) = url {
        fields.insert("webhookUrl".into(), Value::String(url.0.clone()));
    }
    if let Some(events) = events {
        fields.insert("events".into(), events.clone());
    }
    let settings = IntegrationSettings::from_body_with(
        &Object(fields),
        (Integration::Slack, stored.as_ref()),
    )?;
    let draft = Draft::new(Integration::Slack, settings, stored.as_ref());
    let prepared = PreparedSave::new(app, user, ip, Integration::Slack, &draft, stored.as_ref())?;
    Ok(Some(SlackPlan::Save { draft, prepared }))
}

#[utoipa::path(
    patch,
    path = "/api/organization",
    tag = "organization",
    summary = "Rename the organization, switch AI analysis, or set Slack (admin)",
    security(("bearerAuth" = [])),
    request_body = SettingsPatch,
    responses(
        (status = 200, description = "Updated and audited (`org.settings_updated`; Slack as `integration.updated` / `integration.unlinked`)", body = UpdateResponse),
        (status = 400, description = "`Missing fields`, `Invalid name`, `Invalid aiAnalysisEnabled`, `Invalid slackWebhookUrl`, `Invalid slackNotificationEvents`, `Invalid JSON`", body = crate::openapi::ErrorBody),
        (status = 403, description = "`Forbidden`: admins only", body = crate::openapi::ErrorBody),
        (status = 409, description = "`Integration changed`: Slack was saved by another request meanwhile (nothing was changed)", body = crate::openapi::ErrorBody),
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
    let org_id = user.org_id();
    let slack = slack_plan(&app, &user, ip, &patch).await?;
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
    // `org.settings_updated` records the organization's own fields; Slack is audited as the
    // integration routes audit it.
    let audit = (!changes.is_empty()).then(|| {
        user.audit_event(ip, "org.settings_updated", "organization", org_id)
            .with_details(json!({ "changes": changes }))
    });
    let integration = slack.as_ref().map(|plan| match plan {
        SlackPlan::Save { draft, prepared } => IntegrationChange::Save {
            write: prepared.write(org_id, Integration::Slack, &draft.settings),
            audit: prepared.audit.clone(),
        },
        SlackPlan::Unlink(audit) => IntegrationChange::Unlink {
            organization_id: org_id,
            integration: Integration::Slack,
            audit: audit.clone(),
        },
    });
    let outcome = organizations::update_settings(
        &app.db,
        org_id,
        audit.as_ref().map(|audit| (&change, audit)),
        integration.as_ref(),
        app.now(),
    )
    .await
    .or_internal("Failed to update organization")?;
    let org = match outcome {
        SettingsOutcome::Updated(org) => org,
        SettingsOutcome::NotFound => return Err(org_not_found()),
        SettingsOutcome::IntegrationChanged => return Err(integration_changed()),
    };
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

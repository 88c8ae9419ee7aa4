//! `GET /api/organization/usage` and `/usage/alerts` (API.md — seed): the current UTC month,
//! the three metered resources and their alerts. Every number comes from a counter kept in
//! the same transaction as the data it counts, so the cost does not grow with the data.

use crate::http::Json;
use axum::extract::State;
use axum::http::StatusCode;
use orgd_core::organizations;
use orgd_core::usage::{Alert, AlertType, Period, Resource, Usage, percent_used};
use serde::Serialize;
use serde_json::{Map, json};
use utoipa::ToSchema;

use crate::auth::CurrentUser;
use crate::error::{ApiError, OrInternal};
use crate::state::AppState;
use crate::timestamp::Timestamp;

pub fn router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(show))
        .routes(utoipa_axum::routes!(alerts))
}

pub fn period_view(period: &Period) -> PeriodView {
    PeriodView {
        start_date: Timestamp(period.start_ms),
        end_date: Timestamp(period.end_ms),
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeriodView {
    start_date: Timestamp,
    end_date: Timestamp,
}

/// 403 `error` for a write a limit refused, with `usage: {used, limit, percentUsed}`.
pub fn limit_refusal(error: &'static str, message: String, used: i64, limit: i64) -> ApiError {
    let usage =
        json!({"used": used, "limit": limit, "percentUsed": percent_used(used, Some(limit))});
    ApiError::Refused {
        status: StatusCode::FORBIDDEN,
        error,
        message: message.into(),
        extra: Map::from_iter([("usage".into(), usage)]),
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Resource)]
pub enum ResourceView {
    TestRuns,
    Users,
    Storage,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = AlertType)]
pub enum AlertTypeView {
    Info,
    Warning,
    Critical,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Alert)]
pub struct AlertView {
    #[serde(rename = "type")]
    kind: AlertTypeView,
    resource: ResourceView,
    message: String,
    percent_used: i64,
}

impl From<Alert> for AlertView {
    fn from(alert: Alert) -> Self {
        Self {
            kind: match alert.kind {
                AlertType::Info => AlertTypeView::Info,
                AlertType::Warning => AlertTypeView::Warning,
                AlertType::Critical => AlertTypeView::Critical,
            },
            resource: match alert.resource {
                Resource::TestRuns => ResourceView::TestRuns,
                Resource::Users => ResourceView::Users,
                Resource::Storage => ResourceView::Storage,
            },
            message: alert.message,
            percent_used: alert.percent_used,
        }
    }
}

pub fn alert_views(usage: &Usage) -> Vec<AlertView> {
    usage.alerts().into_iter().map(AlertView::from).collect()
}

/// The `usage` object of the seed.
pub fn usage_view(usage: &Usage) -> UsageView {
    UsageView {
        current_period: period_view(&usage.period),
        test_runs: TestRunsUsage {
            used: usage.test_runs,
            limit: usage.limits.max_test_runs,
            percent_used: percent_used(usage.test_runs, usage.limits.max_test_runs),
        },
        users: UsersUsage {
            active: usage.active_users,
            limit: usage.limits.max_users,
            pending_invitations: usage.pending_invitations,
        },
        storage: StorageUsage {
            used_bytes: usage.storage_bytes,
            limit_bytes: usage.limits.max_storage_bytes,
        },
        ai_analyses: AiAnalysesUsage {
            used: usage.ai_analyses,
        },
    }
}

/// This period's usage; a `null` limit is unlimited.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Usage)]
pub struct UsageView {
    current_period: PeriodView,
    test_runs: TestRunsUsage,
    users: UsersUsage,
    storage: StorageUsage,
    ai_analyses: AiAnalysesUsage,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestRunsUsage {
    used: i64,
    limit: Option<i64>,
    percent_used: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsersUsage {
    active: i64,
    limit: Option<i64>,
    pending_invitations: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageUsage {
    used_bytes: i64,
    limit_bytes: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct AiAnalysesUsage {
    /// Analyses that reached a provider this period.
    used: i64,
}

#[derive(Serialize, ToSchema)]
pub struct UsageResponse {
    success: bool,
    usage: UsageView,
    alerts: Vec<AlertView>,
}

#[derive(Serialize, ToSchema)]
pub struct AlertsResponse {
    success: bool,
    /// At most one per resource, in the order testRuns, users, storage.
    alerts: Vec<AlertView>,
}

async fn current_usage(
    app: &AppState,
    user: &CurrentUser,
    error: &'static str,
) -> Result<Usage, ApiError> {
    let now = app.now();
    let period = Period::containing(now);
    let record = organizations::usage(&app.db, user.org_id(), &period.key, now)
        .await
        .or_internal(error)?
        .ok_or_else(super::organization::org_not_found)?;
    Ok(Usage::new(&record, period))
}

#[utoipa::path(
    get,
    path = "/api/organization/usage",
    tag = "organization",
    summary = "This UTC month's usage against the plan's limits, with alerts (all roles)",
    security(("bearerAuth" = [])),
    responses((status = 200, description = "Usage and alerts", body = UsageResponse)),
)]
pub async fn show(
    State(app): State<AppState>,
    user: CurrentUser,
) -> Result<Json<UsageResponse>, ApiError> {
    let usage = current_usage(&app, &user, "Failed to fetch usage").await?;
    Ok(Json(UsageResponse {
        success: true,
        usage: usage_view(&usage),
        alerts: alert_views(&usage),
    }))
}

#[utoipa::path(
    get,
    path = "/api/organization/usage/alerts",
    tag = "organization",
    summary = "Alerts at 50 % (info), 80 % (warning) and 100 % (critical) of a limit (all roles)",
    security(("bearerAuth" = [])),
    responses((status = 200, description = "Alerts", body = AlertsResponse)),
)]
pub async fn alerts(
    State(app): State<AppState>,
    user: CurrentUser,
) -> Result<Json<AlertsResponse>, ApiError> {
    let usage = current_usage(&app, &user, "Failed to fetch usage alerts").await?;
    Ok(Json(AlertsResponse {
        success: true,
        alerts: alert_views(&usage),
    }))
}

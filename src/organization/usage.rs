//! `GET /api/organization/usage` and `/usage/alerts` (API.md — seed): the current UTC month,
//! the three metered resources and their alerts. Every number comes from a counter kept in
//! the same transaction as the data it counts, so the cost does not grow with the data.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{Map, json};
use utoipa::ToSchema;

use super::Limits;
use super::store::OrganizationUsage;
use crate::auth::CurrentUser;
use crate::error::{ApiError, OrInternal};
use crate::state::AppState;
use crate::timestamp::Timestamp;

/// A UTC calendar month: the period test runs are counted in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub start_ms: i64,
    /// The last millisecond of the month.
    pub end_ms: i64,
    /// `YYYY-MM`, the key of `usage_counters.period`.
    pub key: String,
}

impl Period {
    pub fn containing(ms: i64) -> Self {
        let date = DateTime::<Utc>::from_timestamp_millis(ms)
            .unwrap_or_default()
            .date_naive();
        let (year, month) = (date.year(), date.month());
        let (next_year, next_month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        Self {
            start_ms: month_start_ms(year, month),
            end_ms: month_start_ms(next_year, next_month) - 1,
            key: format!("{year:04}-{month:02}"),
        }
    }

    pub fn next(&self) -> Self {
        Self::containing(self.end_ms + 1)
    }

    pub fn view(&self) -> PeriodView {
        PeriodView {
            start_date: Timestamp(self.start_ms),
            end_date: Timestamp(self.end_ms),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeriodView {
    start_date: Timestamp,
    end_date: Timestamp,
}

fn month_start_ms(year: i32, month: u32) -> i64 {
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(0, |d| d.and_utc().timestamp_millis())
}

/// floor(used × 100 / limit), not capped; `None` when unlimited. A limit of 0 is reached
/// from the start (100).
pub fn percent_used(used: i64, limit: Option<i64>) -> Option<i64> {
    limit.map(|limit| {
        if limit <= 0 {
            100
        } else {
            (i128::from(used) * 100 / i128::from(limit)) as i64
        }
    })
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Resource {
    TestRuns,
    Users,
    Storage,
}

impl Resource {
    fn used_message(self, percent: i64) -> String {
        let what = match self {
            Self::TestRuns => "monthly test runs",
            Self::Users => "user seats",
            Self::Storage => "storage",
        };
        format!("You've used {percent}% of your {what}")
    }

    fn reached_message(self) -> &'static str {
        match self {
            Self::TestRuns => "You've reached your monthly test run limit",
            Self::Users => "You've reached your user limit",
            Self::Storage => "You've reached your storage limit",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertType {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    #[serde(rename = "type")]
    pub kind: AlertType,
    pub resource: Resource,
    pub message: String,
    pub percent_used: i64,
}

impl Alert {
    /// The alert for one resource at `percent`, if it deserves one.
    pub fn at(resource: Resource, percent: i64) -> Option<Self> {
        let (kind, message) = match percent {
            100.. => (AlertType::Critical, resource.reached_message().to_string()),
            80..=99 => (AlertType::Warning, resource.used_message(percent)),
            50..=79 => (AlertType::Info, resource.used_message(percent)),
            _ => return None,
        };
        Some(Self {
            kind,
            resource,
            message,
            percent_used: percent,
        })
    }
}

/// What one organization uses this period against its limits.
#[derive(Debug, Clone)]
pub struct Usage {
    pub period: Period,
    pub limits: Limits,
    pub test_runs: i64,
    pub ai_analyses: i64,
    pub active_users: i64,
    pub pending_invitations: i64,
    pub storage_bytes: i64,
}

impl Usage {
    pub fn new(record: &OrganizationUsage, period: Period) -> Self {
        Self {
            period,
            limits: record.org.limits(),
            test_runs: record.test_runs,
            ai_analyses: record.ai_analyses,
            active_users: record.org.user_count,
            pending_invitations: record.pending_invitations,
            storage_bytes: record.org.storage_used_bytes,
        }
    }

    /// At most one alert per resource, in the order testRuns, users, storage.
    pub fn alerts(&self) -> Vec<Alert> {
        [
            (
                Resource::TestRuns,
                self.test_runs,
                self.limits.max_test_runs,
            ),
            (Resource::Users, self.active_users, self.limits.max_users),
            (
                Resource::Storage,
                self.storage_bytes,
                self.limits.max_storage_bytes,
            ),
        ]
        .into_iter()
        .filter_map(|(resource, used, limit)| Alert::at(resource, percent_used(used, limit)?))
        .collect()
    }

    /// The `usage` object of the seed.
    pub fn view(&self) -> UsageView {
        UsageView {
            current_period: self.period.view(),
            test_runs: TestRunsUsage {
                used: self.test_runs,
                limit: self.limits.max_test_runs,
                percent_used: percent_used(self.test_runs, self.limits.max_test_runs),
            },
            users: UsersUsage {
                active: self.active_users,
                limit: self.limits.max_users,
                pending_invitations: self.pending_invitations,
            },
            storage: StorageUsage {
                used_bytes: self.storage_bytes,
                limit_bytes: self.limits.max_storage_bytes,
            },
            ai_analyses: AiAnalysesUsage {
                used: self.ai_analyses,
            },
        }
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
    alerts: Vec<Alert>,
}

#[derive(Serialize, ToSchema)]
pub struct AlertsResponse {
    success: bool,
    /// At most one per resource, in the order testRuns, users, storage.
    alerts: Vec<Alert>,
}

async fn current_usage(
    app: &AppState,
    user: &CurrentUser,
    error: &'static str,
) -> Result<Usage, ApiError> {
    let now = app.now();
    let period = Period::containing(now);
    let record = app
        .store
        .organization_usage(user.org_id(), &period.key, now)
        .await
        .or_internal(error)?
        .ok_or_else(super::org_not_found)?;
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
        usage: usage.view(),
        alerts: usage.alerts(),
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
        alerts: usage.alerts(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use orgd_core::clock::{format_ms, parse_rfc3339};

    fn at(s: &str) -> i64 {
        parse_rfc3339(s).unwrap()
    }

    #[test]
    fn periods_are_utc_calendar_months() {
        let p = Period::containing(at("2026-02-10T12:00:00.000Z"));
        assert_eq!(format_ms(p.start_ms), "2026-02-01T00:00:00.000Z");
        assert_eq!(format_ms(p.end_ms), "2026-02-28T23:59:59.999Z");
        assert_eq!(p.key, "2026-02");
        assert_eq!(Period::containing(p.end_ms), p);
        assert_eq!(Period::containing(p.start_ms), p);
        assert_eq!(Period::containing(p.end_ms + 1).key, "2026-03");
        assert_eq!(
            Period::containing(at("2028-02-29T23:59:59.999Z")).key,
            "2028-02"
        );
        let december = Period::containing(at("2026-12-31T23:59:59.999Z"));
        assert_eq!(format_ms(december.end_ms), "2026-12-31T23:59:59.999Z");
        assert_eq!(december.next().key, "2027-01");
    }

    #[test]
    fn percentages_floor_and_do_not_cap() {
        assert_eq!(percent_used(45, Some(100)), Some(45));
        assert_eq!(percent_used(2, Some(3)), Some(66));
        assert_eq!(percent_used(101, Some(100)), Some(101));
        assert_eq!(percent_used(5, None), None);
        assert_eq!(percent_used(0, Some(0)), Some(100));
        assert_eq!(percent_used(1 << 40, Some(1 << 41)), Some(50));
    }

    #[test]
    fn alert_levels_and_messages() {
        assert_eq!(Alert::at(Resource::TestRuns, 49), None);
        let info = Alert::at(Resource::TestRuns, 50).unwrap();
        assert_eq!(
            (info.kind, info.message.as_str()),
            (AlertType::Info, "You've used 50% of your monthly test runs")
        );
        assert_eq!(
            Alert::at(Resource::Users, 79).unwrap().kind,
            AlertType::Info
        );
        let warning = Alert::at(Resource::Users, 80).unwrap();
        assert_eq!(
            (warning.kind, warning.message.as_str()),
            (AlertType::Warning, "You've used 80% of your user seats")
        );
        assert_eq!(
            Alert::at(Resource::Storage, 99).unwrap().message,
            "You've used 99% of your storage"
        );
        let critical = Alert::at(Resource::Storage, 101).unwrap();
        assert_eq!(
            (critical.kind, critical.message.as_str()),
            (AlertType::Critical, "You've reached your storage limit")
        );
        assert_eq!(
            serde_json::to_value(&critical).unwrap(),
            json!({"type": "critical", "resource": "storage", "message": "You've reached your storage limit", "percentUsed": 101})
        );
    }
}

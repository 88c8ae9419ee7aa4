//! `GET /api/analytics/kpis` (API.md, "Compatibility with the original's clients"): this
//! month's runs, finished and passed, the success rate and the mean duration — read from the
//! counters kept with the runs (`rules::run_stats`), one row, whatever the history holds.

use crate::http::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{ApiError, OrInternal};
use crate::state::AppState;
use orgd_core::usage::Period;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(kpis))
}

#[derive(Serialize, ToSchema)]
pub struct KpiResponse {
    success: bool,
    data: Kpis,
}

/// Runs created in the current UTC month, deleted runs excluded.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Kpis {
    total_runs: i64,
    /// Runs that ended PASSED.
    passed_runs: i64,
    /// Runs that ended (PASSED, FAILED, ERROR or UNSTABLE).
    finished_runs: i64,
    /// passedRuns / finishedRuns × 100, rounded to one decimal; 0 when none finished.
    success_rate: f64,
    /// The mean `duration` of the runs that have both a `startTime` and an `endTime`, in whole
    /// milliseconds; 0 when there is none.
    avg_duration_ms: i64,
    /// The month, `YYYY-MM` (UTC).
    #[schema(pattern = "^[0-9]{4}-[0-9]{2}$")]
    period: String,
}

#[utoipa::path(
    get,
    path = "/api/analytics/kpis",
    tag = "analytics",
    summary = "This month's run KPIs (all roles)",
    security(("bearerAuth" = [])),
    responses((status = 200, description = "The KPIs", body = KpiResponse)),
)]
async fn kpis(
    State(app): State<AppState>,
    user: CurrentUser,
) -> Result<Json<KpiResponse>, ApiError> {
    let period = Period::containing(app.now());
    let stats = orgd_core::executions::run_stats(&app.db, user.org_id(), &period)
        .await
        .or_internal("Failed to fetch KPIs")?;
    Ok(Json(KpiResponse {
        success: true,
        data: Kpis {
            total_runs: stats.total_runs,
            passed_runs: stats.passed_runs,
            finished_runs: stats.finished_runs,
            success_rate: stats.success_rate(),
            avg_duration_ms: stats.avg_duration_ms(),
            period: period.key,
        },
    }))
}

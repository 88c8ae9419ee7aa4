//! `GET /health`: 200 while the database answers and takes writes (a Redis outage only
//! degrades), else 503 so a load balancer stops sending traffic here.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `degraded` while Redis or (with a 503) the database is down.
    #[schema(pattern = "^(ok|degraded)$")]
    status: &'static str,
    checks: HealthChecks,
    version: &'static str,
    uptime_seconds: i64,
}

#[derive(Serialize, ToSchema)]
pub struct HealthChecks {
    #[schema(pattern = "^(ok|down)$")]
    database: &'static str,
    #[schema(pattern = "^(ok|down|disabled)$")]
    redis: &'static str,
}

#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    responses(
        (status = 200, description = "The database answers and takes writes (with Redis down: `degraded`)", body = Health),
        (status = 503, description = "The database cannot be read or written", body = Health),
    )
)]
pub async fn health(State(app): State<AppState>) -> (StatusCode, Json<Health>) {
    let (database, writable, redis) = tokio::join!(
        app.db.ping(),
        app.db.writable(),
        app.limiter.shared_store_healthy()
    );
    if let Err(e) = &database {
        tracing::error!(error = %e, "health check: database unreachable");
    }
    let database_ok = database.is_ok() && writable;
    let redis = match redis {
        None => "disabled",
        Some(true) => "ok",
        Some(false) => "down",
    };
    let status = if database_ok && redis != "down" {
        "ok"
    } else {
        "degraded"
    };
    let code = if database_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status,
        checks: HealthChecks {
            database: if database_ok { "ok" } else { "down" },
            redis,
        },
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: (app.now() - app.started_at_ms).max(0) / 1000,
    };
    (code, Json(body))
}

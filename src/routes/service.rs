//! The service's own routes: `GET /health` (200 while the database answers and takes writes —
//! a Redis outage only degrades — else 503 so a load balancer stops sending traffic here),
//! `GET /metrics` and `GET /api/openapi.json`.

use crate::http::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;
use orgd_core::db::notify::CacheHealth;

/// The longest `/health` waits for the report store.
const STORAGE_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `degraded` while Redis, the report storage or (with a 503) the database is down, or
    /// the caches are bypassed.
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
    /// The report store answers (a listing of the reports prefix, or the directory exists).
    #[schema(pattern = "^(ok|down)$")]
    storage: &'static str,
    /// The cross-instance cache listener (PostgreSQL): `bypassed` while it is not hearing
    /// (every read then goes to the database); `disabled` on SQLite.
    #[schema(pattern = "^(ok|bypassed|disabled)$")]
    cache: &'static str,
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
    let (database, writable, redis, storage) = tokio::join!(
        app.db.ping(),
        app.db.writable(),
        app.limiter.shared_store_healthy(),
        tokio::time::timeout(STORAGE_CHECK_TIMEOUT, app.reports.check())
    );
    let storage_ok = match storage {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: report storage failed");
            false
        }
        Err(_) => {
            tracing::warn!("health check: report storage did not answer in time");
            false
        }
    };
    if let Err(e) = &database {
        tracing::error!(error = %e, "health check: database unreachable");
    }
    let database_ok = database.is_ok() && writable;
    let redis = match redis {
        None => "disabled",
        Some(true) => "ok",
        Some(false) => "down",
    };
    let cache = app.db.cache_health();
    let status = if database_ok && storage_ok && redis != "down" && cache != CacheHealth::Bypassed {
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
            storage: if storage_ok { "ok" } else { "down" },
            cache: cache.as_str(),
        },
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: (app.now() - app.started_at_ms).max(0) / 1000,
    };
    (code, Json(body))
}

/// `GET /metrics`: public like `/health` (operators' scrapers; nothing tenant-specific in it).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    summary = "Prometheus metrics: requests and latency by route, rate-limit refusals, provider calls, database pool",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain", body = String)),
)]
pub async fn metrics(State(app): State<AppState>) -> Response {
    let backlog = orgd_core::outbox::backlog(&app.db, app.now()).await.ok();
    let text = app
        .metrics
        .exposition(app.db.pool_stats())
        .with_backlog(backlog)
        .to_string();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        )],
        text,
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "service",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object))
)]
pub async fn document() -> Response {
    Json(crate::openapi::document_json()).into_response()
}

//! `GET /health`: 200 while the database answers (a Redis outage only degrades), else 503.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

pub async fn health(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
    let (database, redis) = tokio::join!(app.store.ping(), app.limiter.shared_store_healthy());
    let database_ok = database.is_ok();
    if let Err(e) = &database {
        tracing::error!(error = %e, "health check: database unreachable");
    }
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
    (
        code,
        Json(json!({
            "status": status,
            "checks": {"database": if database_ok { "ok" } else { "down" }, "redis": redis},
            "version": env!("CARGO_PKG_VERSION"),
            "uptimeSeconds": (app.now() - app.started_at_ms).max(0) / 1000,
        })),
    )
}

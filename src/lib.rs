//! orgd: the organization layer of a test automation platform.

pub mod analyst;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod outbox;
pub mod pull_requests;
pub mod ratelimit;
pub mod redaction;
pub mod request_id;
pub mod routes;
pub mod state;
pub mod timestamp;
pub mod trackers;

use std::future::Future;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tokio::net::TcpListener;
use utoipa_axum::router::OpenApiRouter;

pub use config::Config;
pub use state::AppState;

/// Largest JSON body accepted (report uploads have their own cap).
pub const MAX_JSON_BODY_BYTES: usize = 1024 * 1024;

/// Every route with its OpenAPI description; the operator API only when asked for.
pub(crate) fn documented_routes(with_operator: bool) -> OpenApiRouter<AppState> {
    let routes = OpenApiRouter::with_openapi(openapi::base()).merge(routes::router());
    if with_operator {
        routes.merge(routes::operator::router())
    } else {
        routes
    }
}

/// Every route of the service, with the layers every response goes through.
pub fn router(state: AppState) -> Router {
    // Without ORGD_ADMIN_TOKEN the operator API does not exist: 404 like any unknown route.
    let (routes, _) = documented_routes(state.config.admin_token.is_some()).split_for_parts();
    routes
        .fallback(http::route_not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        // One stack, applied once: each `Router::layer` would box the routes again.
        .layer(
            tower::ServiceBuilder::new()
                .layer(http::edge::EdgeLayer::new(&state))
                .layer(DefaultBodyLimit::max(MAX_JSON_BODY_BYTES)),
        )
        .with_state(state)
}

/// Serves `state` on `listener` until `shutdown` resolves, then finishes the requests in
/// flight and closes the database pool.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let open_files = http::server::raise_open_file_limit();
    let limits = &state.config.limits;
    let connection_limits = http::server::ConnectionLimits {
        header_read_timeout: limits.header_read_timeout,
        idle_timeout: limits.idle_timeout,
        max_connections: limits
            .max_connections
            .unwrap_or_else(|| http::server::default_max_connections(open_files)),
    };
    println!("orgd listening on http://{addr}");
    tracing::info!(%addr, max_connections = connection_limits.max_connections, "listening");
    let worker = tokio::spawn(analyst::work(state.clone()));
    let deliveries = tokio::spawn(outbox::work(state.clone()));
    let served = http::server::run(
        listener,
        router(state.clone()),
        connection_limits,
        state.metrics.clone(),
        shutdown,
    )
    .await;
    worker.abort();
    deliveries.abort();
    let _ = worker.await;
    let _ = deliveries.await;
    served?;
    state.db.close().await;
    tracing::info!("stopped");
    Ok(())
}

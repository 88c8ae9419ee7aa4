//! The HTTP routes: each handler parses, authorizes, calls the core and shapes the answer.
//! Modules share only the small helpers of `execution_views`, `integration_settings` and
//! `membership`; none reaches into another's handlers.

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

pub mod ai_config;
pub mod analysis;
pub mod analytics;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod execution_views;
pub mod executions;
pub mod integration_settings;
pub mod integrations;
pub mod invitations;
pub mod members;
pub mod membership;
pub mod operator;
pub mod organization;
pub mod reports;
pub mod run_requests;
pub mod service;
pub mod tickets;
pub mod usage;
pub mod webhooks;

/// Every route but the operator API, each registered with its OpenAPI description.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(service::health))
        .routes(routes!(service::metrics))
        .routes(routes!(service::document))
        .merge(auth::router())
        .merge(api_keys::router())
        .merge(organization::router())
        .merge(usage::router())
        .merge(ai_config::router())
        .merge(audit::router())
        .merge(integrations::router())
        .merge(tickets::router())
        .merge(members::router())
        .merge(invitations::router())
        .merge(executions::router())
        .merge(reports::router())
        .merge(analysis::router())
        .merge(run_requests::router())
        .merge(analytics::router())
        .merge(billing::router())
        .merge(webhooks::router())
}

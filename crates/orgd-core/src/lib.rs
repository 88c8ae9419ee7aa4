//! orgd's domain: what an organization, member, run and integration are, the rules on them,
//! and how they are stored. It knows no HTTP: no axum, tower, hyper, utoipa or reqwest.

pub mod ai_config;
pub mod analysis;
pub mod api_keys;
pub mod audit;
pub mod clock;
pub mod crypto;
pub mod cursor;
pub mod db;
pub mod error;
pub mod executions;
pub mod idempotency;
pub mod ids;
pub mod integrations;
pub mod invitations;
pub mod members;
pub mod models;
pub mod operator;
pub mod organizations;
pub mod outbox;
pub mod passwords;
pub mod plans;
pub mod pull_requests;
pub mod reports;
pub mod rules;
pub mod secret;
pub mod secrets;
pub mod text;
pub mod usage;
pub mod users;
pub mod webhooks;

#[cfg(test)]
mod testing;

//! Black-box HTTP tests: one binary, a real server per test, on SQLite and (with
//! `TEST_DATABASE_URL`) PostgreSQL.

mod helpers;

mod ai_config;
mod analysis;
mod api_keys;
mod auth;
mod cache;
mod cli;
mod compat;
mod executions;
mod fakes;
mod faults;
mod hostile;
mod hygiene;
mod idempotency;
mod integrations;
mod invitations;
mod isolation;
mod llm_fakes;
mod members;
mod metrics;
mod notifications;
mod openapi;
mod operator;
mod organization;
mod pull_requests;
mod ratelimit;
mod reports;
mod secrets;
mod usage;
mod webhooks;

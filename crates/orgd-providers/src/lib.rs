//! Outbound HTTP: one shared client (`client`) with the timeouts, failure classes, retry rule
//! and metrics hook every provider uses, and each provider's protocol on top of it.
//!
//! Customer-supplied URLs (webhooks, self-managed GitLab, GitHub Enterprise) go through the
//! guarded client (`Client::guarded`, address rules in `ssrf`). The five REST trackers share
//! `tracker`; descriptions are rendered per tracker by `markdown`; webhook deliveries are
//! signed by `signing`.

pub mod azure_devops;
pub mod bitbucket;
pub mod client;
pub mod github;
pub mod gitlab;
pub mod graphql;
pub mod jira;
pub mod linear;
pub mod llm;
pub mod markdown;
pub mod monday;
pub mod reports;
pub mod signing;
pub mod slack;
pub mod ssrf;
pub mod tracker;
pub mod webhook;

pub use client::{Client, Outcome, Provider, ProviderError};

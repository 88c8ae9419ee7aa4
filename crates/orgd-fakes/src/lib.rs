//! Loopback fakes of the providers orgd talks to, speaking each provider's real protocol as
//! `reference/outbound-apis.md` describes it: Jira Cloud, GitHub, GitLab, Azure DevOps,
//! Bitbucket Cloud, Slack incoming webhooks and a Standard Webhooks receiver.
//!
//! Each fake is an axum app on `127.0.0.1:0` (see `common`). It records every request, counts
//! requests per route, keeps the objects it created, and takes injected behaviours (errors,
//! rate limits, delays, dropped connections) for the next N matching requests.
//!
//! Test support only: a dev-dependency of `orgd-providers` and `orgd`, never shipped.

pub mod azure_devops;
pub mod bitbucket;
pub mod common;
pub mod github;
pub mod gitlab;
pub mod jira;
pub mod slack;
pub mod webhook_receiver;

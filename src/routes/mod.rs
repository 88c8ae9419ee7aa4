//! The HTTP routes: each handler parses, authorizes, calls the core and shapes the answer.

pub mod ai_config;
pub mod analysis;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod invitations;
pub mod members;
pub mod operator;
pub mod organization;
pub mod usage;

//! orgd's domain: what an organization, member, run and integration are, the rules on them,
//! and how they are stored. It knows no HTTP: no axum, tower, hyper, utoipa or reqwest.

pub mod clock;
pub mod crypto;
pub mod db;
pub mod error;
pub mod ids;
pub mod models;
pub mod plans;
pub mod secret;
pub mod secrets;

//! The HTTP routes: each handler parses, authorizes, calls the core and shapes the answer.

pub mod ai_config;
pub mod audit;
pub mod operator;
pub mod organization;
pub mod usage;

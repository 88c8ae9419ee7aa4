//! The report storage lives in the core; the service streams its files as response bodies.

pub use orgd_core::reports::*;

//! Who is calling: session tokens (JWT), API keys and the extractors that authenticate a
//! request; the roles themselves are the core's.

pub mod extract;
pub mod jwt;

pub use extract::{AuthAttempt, Credential, CurrentUser};
pub use orgd_core::users::Role;

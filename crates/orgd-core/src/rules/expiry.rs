//! When an invitation stops counting: it is pending through its `expires_at` millisecond and
//! expired strictly after (`now > expires_at`, the original's rule). The seat limit, the usage
//! numbers and the lists all ask this one question.

/// Whether an invitation expiring at `expires_at` has expired at `now`.
pub fn is_expired(expires_at: i64, now: i64) -> bool {
    now > expires_at
}

/// The SQL form of "pending and not expired" (`is_expired`'s complement) for the
/// invitations row `alias` at the instant bound to the placeholder `now`.
pub fn pending_at(alias: &str, now: &str) -> String {
    format!("{alias}.status = 'pending' AND {alias}.expires_at >= {now}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invitation_is_pending_through_its_expiry_millisecond() {
        assert!(!is_expired(1_000, 999));
        assert!(!is_expired(1_000, 1_000));
        assert!(is_expired(1_000, 1_001));
    }
}

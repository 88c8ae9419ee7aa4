//! Invitations to join an organization.

/// An invitation is pending until its `expires_at` millisecond included: it expires strictly
/// after (`now > expires_at`, the original's rule). The seat limit, the usage numbers and the
/// lists all ask the same question, so they all use this.
pub fn is_expired(expires_at: i64, now: i64) -> bool {
    now > expires_at
}

/// The SQL form of "pending and not expired" for an invitations row `{alias}` at `{now}`.
pub const PENDING_AT: &str = "{alias}.status = 'pending' AND {alias}.expires_at >= {now}";

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

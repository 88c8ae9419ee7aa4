//! orgd's notion of "now", injectable so tests can cross month ends and roll
//! rate-limit windows without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};

pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

pub type SharedClock = Arc<dyn Clock>;

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to.
#[derive(Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_ms: i64) -> Self {
        Self(AtomicI64::new(now_ms))
    }
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// RFC 3339 UTC with milliseconds and `Z`, as every timestamp in the API.
pub fn format_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 timestamp into epoch milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp_millis())
}

/// The UTC midnight starting a `YYYY-MM-DD` date (exactly that form), in epoch milliseconds.
pub fn parse_day(s: &str) -> Option<i64> {
    let well_formed = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !well_formed {
        return None;
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()?
        .and_hms_opt(0, 0, 0)
        .map(|d| d.and_utc().timestamp_millis())
}

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_midnights() {
        assert_eq!(
            parse_day("2026-01-15"),
            parse_rfc3339("2026-01-15T00:00:00Z")
        );
        assert_eq!(
            parse_day("2028-02-29").map(format_ms).as_deref(),
            Some("2028-02-29T00:00:00.000Z")
        );
        for bad in [
            "2026-1-15",
            "2026-02-30",
            "20260115",
            "2026-01-15T00:00:00Z",
            "+2026-01-1",
            "",
        ] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_with_millis_and_z() {
        assert_eq!(format_ms(1_768_471_200_000), "2026-01-15T10:00:00.000Z");
        assert_eq!(
            parse_rfc3339("2026-01-15T10:00:00.000Z"),
            Some(1_768_471_200_000)
        );
        assert_eq!(
            parse_rfc3339("2026-01-15T11:00:00+01:00"),
            Some(1_768_471_200_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}

//! What an organization uses in a period against its limits, and the alerts that follow:
//! the current UTC month, the three metered resources, their percentages and levels.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Serialize;

use crate::organizations::OrganizationUsage;
use crate::plans::Limits;

/// A UTC calendar month: the period test runs are counted in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub start_ms: i64,
    /// The last millisecond of the month.
    pub end_ms: i64,
    /// `YYYY-MM`, the key of `usage_counters.period`.
    pub key: String,
}

impl Period {
    pub fn containing(ms: i64) -> Self {
        let date = DateTime::<Utc>::from_timestamp_millis(ms)
            .unwrap_or_default()
            .date_naive();
        let (year, month) = (date.year(), date.month());
        let (next_year, next_month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        Self {
            start_ms: month_start_ms(year, month),
            end_ms: month_start_ms(next_year, next_month) - 1,
            key: format!("{year:04}-{month:02}"),
        }
    }

    pub fn next(&self) -> Self {
        Self::containing(self.end_ms + 1)
    }
}

fn month_start_ms(year: i32, month: u32) -> i64 {
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(0, |d| d.and_utc().timestamp_millis())
}

/// floor(used × 100 / limit), not capped; `None` when unlimited. A limit of 0 is reached
/// from the start (100).
pub fn percent_used(used: i64, limit: Option<i64>) -> Option<i64> {
    limit.map(|limit| {
        if limit <= 0 {
            100
        } else {
            (i128::from(used) * 100 / i128::from(limit)) as i64
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Resource {
    TestRuns,
    Users,
    Storage,
}

impl Resource {
    fn used_message(self, percent: i64) -> String {
        let what = match self {
            Self::TestRuns => "monthly test runs",
            Self::Users => "user seats",
            Self::Storage => "storage",
        };
        format!("You've used {percent}% of your {what}")
    }

    fn reached_message(self) -> &'static str {
        match self {
            Self::TestRuns => "You've reached your monthly test run limit",
            Self::Users => "You've reached your user limit",
            Self::Storage => "You've reached your storage limit",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertType {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    #[serde(rename = "type")]
    pub kind: AlertType,
    pub resource: Resource,
    pub message: String,
    pub percent_used: i64,
}

impl Alert {
    /// The alert for one resource at `percent`, if it deserves one.
    pub fn at(resource: Resource, percent: i64) -> Option<Self> {
        let (kind, message) = match percent {
            100.. => (AlertType::Critical, resource.reached_message().to_string()),
            80..=99 => (AlertType::Warning, resource.used_message(percent)),
            50..=79 => (AlertType::Info, resource.used_message(percent)),
            _ => return None,
        };
        Some(Self {
            kind,
            resource,
            message,
            percent_used: percent,
        })
    }
}

/// What one organization uses this period against its limits.
#[derive(Debug, Clone)]
pub struct Usage {
    pub period: Period,
    pub limits: Limits,
    pub test_runs: i64,
    pub ai_analyses: i64,
    pub active_users: i64,
    pub pending_invitations: i64,
    pub storage_bytes: i64,
}

impl Usage {
    pub fn new(record: &OrganizationUsage, period: Period) -> Self {
        Self {
            period,
            limits: record.org.limits(),
            test_runs: record.test_runs,
            ai_analyses: record.ai_analyses,
            active_users: record.org.user_count,
            pending_invitations: record.pending_invitations,
            storage_bytes: record.org.storage_used_bytes,
        }
    }

    /// At most one alert per resource, in the order testRuns, users, storage.
    pub fn alerts(&self) -> Vec<Alert> {
        [
            (
                Resource::TestRuns,
                self.test_runs,
                self.limits.max_test_runs,
            ),
            (Resource::Users, self.active_users, self.limits.max_users),
            (
                Resource::Storage,
                self.storage_bytes,
                self.limits.max_storage_bytes,
            ),
        ]
        .into_iter()
        .filter_map(|(resource, used, limit)| Alert::at(resource, percent_used(used, limit)?))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{format_ms, parse_rfc3339};
    use serde_json::json;

    fn at(s: &str) -> i64 {
        parse_rfc3339(s).unwrap()
    }

    #[test]
    fn periods_are_utc_calendar_months() {
        let p = Period::containing(at("2026-02-10T12:00:00.000Z"));
        assert_eq!(format_ms(p.start_ms), "2026-02-01T00:00:00.000Z");
        assert_eq!(format_ms(p.end_ms), "2026-02-28T23:59:59.999Z");
        assert_eq!(p.key, "2026-02");
        assert_eq!(Period::containing(p.end_ms), p);
        assert_eq!(Period::containing(p.start_ms), p);
        assert_eq!(Period::containing(p.end_ms + 1).key, "2026-03");
        assert_eq!(
            Period::containing(at("2028-02-29T23:59:59.999Z")).key,
            "2028-02"
        );
        let december = Period::containing(at("2026-12-31T23:59:59.999Z"));
        assert_eq!(format_ms(december.end_ms), "2026-12-31T23:59:59.999Z");
        assert_eq!(december.next().key, "2027-01");
    }

    #[test]
    fn percentages_floor_and_do_not_cap() {
        assert_eq!(percent_used(45, Some(100)), Some(45));
        assert_eq!(percent_used(2, Some(3)), Some(66));
        assert_eq!(percent_used(101, Some(100)), Some(101));
        assert_eq!(percent_used(5, None), None);
        assert_eq!(percent_used(0, Some(0)), Some(100));
        assert_eq!(percent_used(1 << 40, Some(1 << 41)), Some(50));
    }

    #[test]
    fn alert_levels_and_messages() {
        assert_eq!(Alert::at(Resource::TestRuns, 49), None);
        let info = Alert::at(Resource::TestRuns, 50).unwrap();
        assert_eq!(
            (info.kind, info.message.as_str()),
            (AlertType::Info, "You've used 50% of your monthly test runs")
        );
        assert_eq!(
            Alert::at(Resource::Users, 79).unwrap().kind,
            AlertType::Info
        );
        let warning = Alert::at(Resource::Users, 80).unwrap();
        assert_eq!(
            (warning.kind, warning.message.as_str()),
            (AlertType::Warning, "You've used 80% of your user seats")
        );
        assert_eq!(
            Alert::at(Resource::Storage, 99).unwrap().message,
            "You've used 99% of your storage"
        );
        let critical = Alert::at(Resource::Storage, 101).unwrap();
        assert_eq!(
            (critical.kind, critical.message.as_str()),
            (AlertType::Critical, "You've reached your storage limit")
        );
        assert_eq!(
            serde_json::to_value(&critical).unwrap(),
            json!({"type": "critical", "resource": "storage", "message": "You've reached your storage limit", "percentUsed": 101})
        );
    }
}

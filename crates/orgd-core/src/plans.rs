//! Plans, their limits (API.md, "Plans and limits"), and per-organization overrides.
//! `None` is "unlimited": shown as JSON `null`, never refused, never alerted on.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Free,
    Team,
    Enterprise,
}

const GIB: i64 = 1 << 30;

impl Plan {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Team => "team",
            Self::Enterprise => "enterprise",
        }
    }

    pub const ALL: [Plan; 3] = [Self::Free, Self::Team, Self::Enterprise];

    /// The name shown to customers.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Free => "Free",
            Self::Team => "Team",
            Self::Enterprise => "Enterprise",
        }
    }

    /// The support that comes with the plan (`GET /api/billing/plans`).
    pub fn support(self) -> &'static str {
        match self {
            Self::Free => "community",
            Self::Team => "email",
            Self::Enterprise => "priority",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "free" => Some(Self::Free),
            "team" => Some(Self::Team),
            "enterprise" => Some(Self::Enterprise),
            _ => None,
        }
    }

    pub fn defaults(self) -> Limits {
        match self {
            Self::Free => Limits {
                max_test_runs: Some(100),
                max_users: Some(3),
                max_storage_bytes: Some(10 * GIB),
                max_projects: Some(1),
                max_concurrent_runs: Some(1),
            },
            Self::Team => Limits {
                max_test_runs: Some(1_000),
                max_users: Some(20),
                max_storage_bytes: Some(100 * GIB),
                max_projects: Some(10),
                max_concurrent_runs: Some(5),
            },
            Self::Enterprise => Limits {
                max_test_runs: Some(10_000),
                max_users: None,
                max_storage_bytes: Some(1024 * GIB),
                max_projects: None,
                max_concurrent_runs: Some(20),
            },
        }
    }
}

impl TryFrom<String> for Plan {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("unknown plan {s:?}"))
    }
}

/// Effective limits of an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_test_runs: Option<i64>,
    pub max_users: Option<i64>,
    pub max_storage_bytes: Option<i64>,
    pub max_projects: Option<i64>,
    pub max_concurrent_runs: Option<i64>,
}

impl Limits {
    /// The limit called `name` (one of `LIMIT_NAMES`).
    pub fn by_name(&self, name: &str) -> Option<i64> {
        match name {
            "maxTestRuns" => self.max_test_runs,
            "maxUsers" => self.max_users,
            "maxStorageBytes" => self.max_storage_bytes,
            "maxProjects" => self.max_projects,
            "maxConcurrentRuns" => self.max_concurrent_runs,
            _ => None,
        }
    }
}

/// Per-organization overrides, stored as JSON text: `{"maxTestRuns": 50, "maxUsers": null}`
/// (a key present with `null` means unlimited; an absent key means the plan's default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides(pub BTreeMap<String, Option<i64>>);

pub const LIMIT_NAMES: [&str; 5] = [
    "maxTestRuns",
    "maxUsers",
    "maxStorageBytes",
    "maxProjects",
    "maxConcurrentRuns",
];

impl Overrides {
    pub fn from_json(text: &str) -> Result<Self, String> {
        let map: BTreeMap<String, Option<i64>> =
            serde_json::from_str(text).map_err(|e| format!("limit overrides: {e}"))?;
        if let Some(unknown) = map.keys().find(|k| !LIMIT_NAMES.contains(&k.as_str())) {
            return Err(format!("unknown limit override {unknown:?}"));
        }
        Ok(Self(map))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".into())
    }

    pub fn apply(&self, defaults: Limits) -> Limits {
        let pick = |name: &str, default: Option<i64>| self.0.get(name).copied().unwrap_or(default);
        Limits {
            max_test_runs: pick("maxTestRuns", defaults.max_test_runs),
            max_users: pick("maxUsers", defaults.max_users),
            max_storage_bytes: pick("maxStorageBytes", defaults.max_storage_bytes),
            max_projects: pick("maxProjects", defaults.max_projects),
            max_concurrent_runs: pick("maxConcurrentRuns", defaults.max_concurrent_runs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_defaults_and_null_is_unlimited() {
        let o = Overrides::from_json(r#"{"maxTestRuns":50,"maxUsers":null}"#).unwrap();
        let l = o.apply(Plan::Free.defaults());
        assert_eq!(l.max_test_runs, Some(50));
        assert_eq!(l.max_users, None);
        assert_eq!(l.max_storage_bytes, Some(10_737_418_240));
        assert!(Overrides::from_json(r#"{"maxBananas":1}"#).is_err());
        assert_eq!(
            Plan::Enterprise.defaults().max_storage_bytes,
            Some(1_099_511_627_776)
        );
    }
}

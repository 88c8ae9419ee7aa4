//! The operator surface (API.md, "Operator surface"): plan and limit changes shared by the
//! CLI (`orgd org ...`) and the HTTP API (`/api/admin/...`), and usage reconciliation.

pub mod cli;
pub mod http;
pub mod reconcile;
pub mod store;

use serde_json::{Map, Value, json};

use crate::audit::{Actor, AuditEvent};
use crate::organization::Plan;
use crate::organization::store::OrganizationRecord;
use crate::store::{CoreError, Store};
use orgd_core::plans::{LIMIT_NAMES, Overrides};

/// A new value for one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitValue {
    Value(i64),
    Unlimited,
    /// Drop the override: the plan's default applies.
    Default,
}

impl LimitValue {
    /// `<n>`, `unlimited` or `default` (CLI).
    pub fn parse_word(s: &str) -> Option<Self> {
        match s {
            "unlimited" => Some(Self::Unlimited),
            "default" => Some(Self::Default),
            n => n.parse::<i64>().ok().filter(|n| *n >= 0).map(Self::Value),
        }
    }

    /// A non-negative integer, `null` (unlimited) or `"default"` (HTTP).
    pub fn from_json(value: &Value) -> Option<Self> {
        match value {
            Value::Null => Some(Self::Unlimited),
            Value::String(s) if s == "default" => Some(Self::Default),
            Value::Number(n) => n.as_i64().filter(|n| *n >= 0).map(Self::Value),
            _ => None,
        }
    }
}

/// One of `LIMIT_NAMES`.
pub fn limit_name(s: &str) -> Option<&'static str> {
    LIMIT_NAMES.iter().copied().find(|name| *name == s)
}

/// A change of an organization's plan and/or limit overrides.
#[derive(Debug, Clone, Default)]
pub struct PlanChange {
    pub plan: Option<Plan>,
    pub reset_overrides: bool,
    pub limits: Vec<(&'static str, LimitValue)>,
}

impl PlanChange {
    pub fn plan(plan: Plan, reset_overrides: bool) -> Self {
        Self {
            plan: Some(plan),
            reset_overrides,
            limits: Vec::new(),
        }
    }

    pub fn limits(limits: Vec<(&'static str, LimitValue)>) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    pub fn action(&self) -> &'static str {
        if self.plan.is_some() {
            "org.plan_changed"
        } else {
            "org.limit_changed"
        }
    }

    /// The plan and overrides after the change.
    pub fn apply(&self, plan: Plan, overrides: &Overrides) -> (Plan, Overrides) {
        let mut overrides = if self.reset_overrides {
            Overrides::default()
        } else {
            overrides.clone()
        };
        for (name, value) in &self.limits {
            match value {
                LimitValue::Value(n) => overrides.0.insert(name.to_string(), Some(*n)),
                LimitValue::Unlimited => overrides.0.insert(name.to_string(), None),
                LimitValue::Default => overrides.0.remove(*name),
            };
        }
        (self.plan.unwrap_or(plan), overrides)
    }

    /// What the audit entry records: the plan move, or each limit's effective value before
    /// and after (`null` = unlimited).
    pub fn audit_details(&self, before: &OrganizationRecord, after: &OrganizationRecord) -> Value {
        if self.plan.is_some() {
            return json!({
                "from": before.plan.as_str(),
                "to": after.plan.as_str(),
                "resetOverrides": self.reset_overrides,
                "overrides": after.overrides.0,
            });
        }
        let limits: Map<String, Value> = self
            .limits
            .iter()
            .map(|(name, _)| {
                let change = json!({"from": before.limits().by_name(name), "to": after.limits().by_name(name)});
                (name.to_string(), change)
            })
            .collect();
        json!({"limits": limits, "overrides": after.overrides.0})
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("no organization with id or slug {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] CoreError),
    #[error(transparent)]
    Storage(#[from] crate::executions::storage::StorageError),
}

/// Applies `change` to the organization whose id or slug is `reference`, audited as an
/// operator action (`ip` when it came over HTTP). Returns the organization before and after.
pub async fn change_organization(
    store: &dyn Store,
    reference: &str,
    change: &PlanChange,
    ip: Option<String>,
    now: i64,
) -> Result<(OrganizationRecord, OrganizationRecord), OperatorError> {
    let not_found = || OperatorError::NotFound(reference.to_string());
    let org = store
        .find_organization(reference)
        .await?
        .ok_or_else(not_found)?;
    let audit = AuditEvent {
        organization_id: org.id.clone(),
        user_id: None,
        actor: Actor::Operator,
        action: change.action(),
        target_type: "organization",
        target_id: org.id.clone(),
        details: Value::Null,
        ip,
    };
    store
        .change_plan(&org.id, change, &audit, now)
        .await?
        .ok_or_else(not_found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_values() {
        assert_eq!(LimitValue::parse_word("50"), Some(LimitValue::Value(50)));
        assert_eq!(
            LimitValue::parse_word("unlimited"),
            Some(LimitValue::Unlimited)
        );
        assert_eq!(LimitValue::parse_word("default"), Some(LimitValue::Default));
        assert_eq!(LimitValue::parse_word("-1"), None);
        assert_eq!(
            LimitValue::from_json(&json!(null)),
            Some(LimitValue::Unlimited)
        );
        assert_eq!(LimitValue::from_json(&json!(1.5)), None);
        assert_eq!(LimitValue::from_json(&json!("50")), None);
        assert_eq!(limit_name("maxUsers"), Some("maxUsers"));
        assert_eq!(limit_name("maxBananas"), None);
    }

    #[test]
    fn changes_apply_to_overrides() {
        let before = Overrides::from_json(r#"{"maxTestRuns":50,"maxUsers":null}"#).unwrap();
        let change = PlanChange::limits(vec![
            ("maxTestRuns", LimitValue::Default),
            ("maxProjects", LimitValue::Value(3)),
            ("maxStorageBytes", LimitValue::Unlimited),
        ]);
        let (plan, after) = change.apply(Plan::Free, &before);
        assert_eq!(plan, Plan::Free);
        assert_eq!(
            after.to_json(),
            r#"{"maxProjects":3,"maxStorageBytes":null,"maxUsers":null}"#
        );
        let (plan, after) = PlanChange::plan(Plan::Team, true).apply(Plan::Free, &before);
        assert_eq!((plan, after), (Plan::Team, Overrides::default()));
        let (_, kept) = PlanChange::plan(Plan::Team, false).apply(Plan::Free, &before);
        assert_eq!(kept, before);
    }
}

//! The operator's surface (API.md, "Operator surface"): plan and limit changes shared by
//! the CLI (`orgd org ...`) and the admin HTTP API, and `usage reconcile`, which re-derives
//! the usage counters from their source of truth — test runs, the live runs per status and the
//! run counters of the KPIs and grouped view from the executions table, storage from the
//! report files (the only place that walks them) — and says what it fixed.
//!
//! Uploads in flight while a reconcile runs hold reserved bytes that it cannot see; run it
//! when the organization is quiet, or run it again.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::{Map, Value, json};
use sqlx::Row;

use crate::audit::{self, Actor, AuditEvent};
use crate::db::notify::Change;
use crate::db::{Db, Tx};
use crate::error::{CoreError, CoreResult};
use crate::organizations::{self, OrganizationRecord};
use crate::plans::{LIMIT_NAMES, Overrides, Plan};
use crate::reports::{Location, ReportStorage, StoredFile};
use crate::rules::run_counts::{self, CountFix};
use crate::rules::run_stats::{self, GroupStats, RunStats};
use crate::usage::Period;

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
    Storage(#[from] crate::reports::StorageError),
}

/// Applies `change` to the organization whose id or slug is `reference`, audited as an
/// operator action (`ip` when it came over HTTP). Returns the organization before and after.
pub async fn change_organization(
    db: &Db,
    reference: &str,
    change: &PlanChange,
    ip: Option<String>,
    now: i64,
) -> Result<(OrganizationRecord, OrganizationRecord), OperatorError> {
    let not_found = || OperatorError::NotFound(reference.to_string());
    let org = find_organization(db, reference)
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
    change_plan(db, &org.id, change, &audit, now)
        .await?
        .ok_or_else(not_found)
}

/// A test-run counter that did not match the executions table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterFix {
    pub period: String,
    pub before: i64,
    pub after: i64,
}

/// A month's run counters (KPIs) that did not match the executions table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStatsFix {
    pub period: String,
    pub before: RunStats,
    pub after: RunStats,
}

/// A group's counters that did not match the executions table (`None`: no row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFix {
    /// `""` for runs without a group.
    pub group: String,
    pub before: Option<GroupStats>,
    pub after: Option<GroupStats>,
}

/// What reconciling one organization's storage changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageFix {
    pub before: i64,
    pub after: i64,
    pub added: usize,
    pub removed: usize,
    pub resized: usize,
}

async fn organization_in(tx: &mut Tx, org_id: &str) -> CoreResult<OrganizationRecord> {
    organizations::in_tx(tx, org_id).await
}

/// The organization whose id or slug is `reference` (an id match wins).
pub async fn find_organization(db: &Db, reference: &str) -> CoreResult<Option<OrganizationRecord>> {
    organizations::by_id_or_slug(db, reference).await
}

/// Every organization's id and slug, oldest first.
async fn organization_slugs(db: &Db) -> CoreResult<Vec<(String, String)>> {
    let rows = sqlx::query("SELECT id, slug FROM organizations ORDER BY created_at, id")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("id")?, row.try_get("slug")?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Applies `change` and writes `audit` (its details filled from before and after) in one
/// transaction. Returns the organization before and after; `None` when it does not exist.
async fn change_plan(
    db: &Db,
    org_id: &str,
    change: &PlanChange,
    audit: &AuditEvent,
    now: i64,
) -> CoreResult<Option<(OrganizationRecord, OrganizationRecord)>> {
    let mut tx = db.begin_write().await?;
    if !tx.lock_organization(org_id).await? {
        return Ok(None);
    }
    let before = organization_in(&mut tx, org_id).await?;
    tx.notify(Change::Organization(org_id.to_string())).await?;
    let (plan, overrides) = change.apply(before.plan, &before.overrides);
    sqlx::query(
        "UPDATE organizations SET plan = $2, limit_overrides = $3, updated_at = $4 WHERE id = $1",
    )
    .bind(org_id)
    .bind(plan.as_str())
    .bind(overrides.to_json())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let after = organization_in(&mut tx, org_id).await?;
    crate::rules::thresholds::record_limit_change(
        &mut tx,
        org_id,
        &before.limits(),
        &after.limits(),
        now,
    )
    .await?;
    let mut audit = audit.clone();
    audit.details = change.audit_details(&before, &after);
    audit::insert(&mut tx, &audit, now).await?;
    tx.commit().await?;
    Ok(Some((before, after)))
}

/// Sets each month's test-run counter to the executions created in it.
async fn reconcile_test_runs(db: &Db, org_id: &str) -> CoreResult<Vec<CounterFix>> {
    let mut tx = db.begin_write().await?;
    // Executions are inserted under this lock, so the counts below are stable.
    tx.lock_organization(org_id).await?;
    let range = sqlx::query(
        "SELECT MIN(created_at) AS first_at, MAX(created_at) AS last_at FROM executions WHERE organization_id = $1",
    )
    .bind(org_id)
    .fetch_one(&mut *tx)
    .await?;
    let (first, last): (Option<i64>, Option<i64>) =
        (range.try_get("first_at")?, range.try_get("last_at")?);
    let mut actual = BTreeMap::new();
    if let (Some(first), Some(last)) = (first, last) {
        let mut period = Period::containing(first);
        while period.start_ms <= last {
            let count: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM executions WHERE organization_id = $1 AND created_at >= $2 AND created_at <= $3",
            )
            .bind(org_id)
            .bind(period.start_ms)
            .bind(period.end_ms)
            .fetch_one(&mut *tx)
            .await?;
            if count > 0 {
                actual.insert(period.key.clone(), count);
            }
            period = period.next();
        }
    }
    let rows =
        sqlx::query("SELECT period, test_runs FROM usage_counters WHERE organization_id = $1")
            .bind(org_id)
            .fetch_all(&mut *tx)
            .await?;
    let mut counted = BTreeMap::new();
    for row in &rows {
        counted.insert(
            row.try_get::<String, _>("period")?,
            row.try_get::<i64, _>("test_runs")?,
        );
    }
    let periods: std::collections::BTreeSet<&String> =
        actual.keys().chain(counted.keys()).collect();
    let mut fixes = Vec::new();
    for period in periods {
        let before = counted.get(period).copied().unwrap_or(0);
        let after = actual.get(period).copied().unwrap_or(0);
        if before == after {
            continue;
        }
        sqlx::query(
            "INSERT INTO usage_counters (organization_id, period, test_runs, ai_analyses) VALUES ($1, $2, $3, 0)
             ON CONFLICT (organization_id, period) DO UPDATE SET test_runs = $3",
        )
        .bind(org_id)
        .bind(period)
        .bind(after)
        .execute(&mut *tx)
        .await?;
        fixes.push(CounterFix {
            period: period.clone(),
            before,
            after,
        });
    }
    tx.commit().await?;
    Ok(fixes)
}

/// Sets the run counters (`rules::run_stats`) to what the executions table says.
async fn reconcile_run_stats(
    db: &Db,
    org_id: &str,
) -> CoreResult<(Vec<RunStatsFix>, Vec<GroupFix>)> {
    let mut tx = db.begin_write().await?;
    // Runs are created and deleted under this lock; a status change racing this read is
    // counted by its own transaction after the reconcile commits, like any other change.
    tx.lock_organization(org_id).await?;
    let (months, groups) = run_stats::derive(&mut tx, org_id).await?;
    let (stored_months, stored_groups) = run_stats::stored(&mut tx, org_id).await?;
    let zero = RunStats::default();
    let mut month_fixes = Vec::new();
    let periods: std::collections::BTreeSet<&String> =
        months.keys().chain(stored_months.keys()).collect();
    for period in periods {
        let before = stored_months.get(period).copied().unwrap_or(zero);
        let after = months.get(period).copied().unwrap_or(zero);
        if before == after {
            continue;
        }
        run_stats::set_month(&mut tx, org_id, period, months.get(period)).await?;
        month_fixes.push(RunStatsFix {
            period: period.clone(),
            before,
            after,
        });
    }
    let mut group_fixes = Vec::new();
    let keys: std::collections::BTreeSet<&String> =
        groups.keys().chain(stored_groups.keys()).collect();
    for key in keys {
        let (before, after) = (stored_groups.get(key), groups.get(key));
        if before == after {
            continue;
        }
        run_stats::set_group(&mut tx, org_id, key, after).await?;
        group_fixes.push(GroupFix {
            group: key.clone(),
            before: before.copied(),
            after: after.copied(),
        });
    }
    tx.commit().await?;
    Ok((month_fixes, group_fixes))
}

/// Sets the organization's live-run counters (a list's `total`) to its executions.
async fn reconcile_run_counts(db: &Db, org_id: &str) -> CoreResult<Vec<CountFix>> {
    let mut tx = db.begin_write().await?;
    tx.lock_organization(org_id).await?;
    let fixes = run_counts::recount(&mut tx, org_id).await?;
    tx.commit().await?;
    Ok(fixes)
}

/// How recent an object no row points to may be and still be an upload about to be
/// recorded (its bytes are stored just before the transaction that records it).
const LEFTOVER_AGE_MS: i64 = 10 * 60 * 1000;

/// Makes the organization's report rows, per-execution bytes and storage counter match
/// `files` (what the store holds). A file at a path without a row gets one (the local
/// directory: the disk is the truth); an object no row points to is a leftover (of a
/// replaced file or a crash) and is returned for removal after the commit; a row whose
/// bytes are gone is removed.
async fn reconcile_storage(
    db: &Db,
    org_id: &str,
    files: &[StoredFile],
    now: i64,
) -> CoreResult<(StorageFix, Vec<String>)> {
    let mut tx = db.begin_write().await?;
    tx.lock_organization(org_id).await?;
    let rows = sqlx::query(
        "SELECT task_id, path, size, object_key FROM report_files WHERE organization_id = $1",
    )
    .bind(org_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut recorded: HashMap<(String, String), i64> = HashMap::with_capacity(rows.len());
    let mut by_object: HashMap<String, (String, String)> = HashMap::new();
    for row in &rows {
        let key: (String, String) = (row.try_get("task_id")?, row.try_get("path")?);
        if let Some(object) = row.try_get::<Option<String>, _>("object_key")? {
            by_object.insert(object, key.clone());
        }
        recorded.insert(key, row.try_get("size")?);
    }
    let mut fix = StorageFix::default();
    let mut leftovers = Vec::new();
    let mut touched = std::collections::BTreeSet::new();
    for file in files {
        let key = match &file.location {
            Location::Path(path) => (file.task_id.clone(), path.clone()),
            Location::Object { key, modified_at } => match by_object.get(key) {
                Some(row) => row.clone(),
                None => {
                    if now - modified_at >= LEFTOVER_AGE_MS {
                        leftovers.push(key.clone());
                    }
                    continue;
                }
            },
        };
        fix.after += file.size;
        let sql = match recorded.remove(&key) {
            Some(size) if size == file.size => continue,
            Some(_) => {
                fix.resized += 1;
                "UPDATE report_files SET size = $4, updated_at = $5 WHERE organization_id = $1 AND task_id = $2 AND path = $3"
            }
            None => {
                fix.added += 1;
                "INSERT INTO report_files (organization_id, task_id, path, size, updated_at) VALUES ($1, $2, $3, $4, $5)"
            }
        };
        sqlx::query(sql)
            .bind(org_id)
            .bind(&key.0)
            .bind(&key.1)
            .bind(file.size)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        touched.insert(key.0);
    }
    for (task_id, path) in recorded.into_keys() {
        sqlx::query(
            "DELETE FROM report_files WHERE organization_id = $1 AND task_id = $2 AND path = $3",
        )
        .bind(org_id)
        .bind(&task_id)
        .bind(&path)
        .execute(&mut *tx)
        .await?;
        fix.removed += 1;
        touched.insert(task_id);
    }
    for task_id in &touched {
        sqlx::query(
            "UPDATE executions SET report_bytes =
                (SELECT CAST(COALESCE(SUM(f.size), 0) AS BIGINT) FROM report_files f
                 WHERE f.organization_id = $1 AND f.task_id = $2)
             WHERE organization_id = $1 AND task_id = $2",
        )
        .bind(org_id)
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
    }
    fix.before = sqlx::query_scalar("SELECT storage_used_bytes FROM organizations WHERE id = $1")
        .bind(org_id)
        .fetch_one(&mut *tx)
        .await?;
    if fix.before != fix.after {
        sqlx::query("UPDATE organizations SET storage_used_bytes = $2 WHERE id = $1")
            .bind(org_id)
            .bind(fix.after)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok((fix, leftovers))
}

/// What reconciling one organization found and fixed.
#[derive(Debug)]
pub struct Reconciliation {
    pub org_id: String,
    pub slug: String,
    pub test_runs: Vec<CounterFix>,
    pub run_stats: Vec<RunStatsFix>,
    pub groups: Vec<GroupFix>,
    /// Live runs per status (the executions list's `total`).
    pub run_counts: Vec<CountFix>,
    pub storage: StorageFix,
    /// Objects no row pointed to, removed from the store.
    pub leftovers_removed: usize,
    /// Entries on disk that are not report files (symlinks, uploads in progress, odd names).
    pub skipped: Vec<String>,
}

impl Reconciliation {
    pub fn drifted(&self) -> bool {
        !self.test_runs.is_empty()
            || !self.run_stats.is_empty()
            || !self.groups.is_empty()
            || !self.run_counts.is_empty()
            || self.storage.before != self.storage.after
            || self.files_changed()
            || self.leftovers_removed > 0
    }

    fn files_changed(&self) -> bool {
        self.storage.added + self.storage.removed + self.storage.resized > 0
    }
}

impl fmt::Display for Reconciliation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = format!("{} ({})", self.slug, self.org_id);
        if !self.drifted() {
            writeln!(f, "{who}: no drift")?;
        }
        for fix in &self.test_runs {
            writeln!(
                f,
                "{who}: test runs {}: {} -> {}",
                fix.period, fix.before, fix.after
            )?;
        }
        let stats = |s: &RunStats| {
            format!(
                "{} run(s), {} finished, {} passed, {} ms over {}",
                s.total_runs, s.finished_runs, s.passed_runs, s.duration_sum_ms, s.duration_count
            )
        };
        for fix in &self.run_stats {
            writeln!(
                f,
                "{who}: run counters {}: {} -> {}",
                fix.period,
                stats(&fix.before),
                stats(&fix.after)
            )?;
        }
        let group = |g: &Option<GroupStats>| match g {
            Some(g) => format!(
                "{} run(s), {} passed, last {}",
                g.total_runs,
                g.passed_runs,
                crate::clock::format_ms(g.last_run_at)
            ),
            None => "none".into(),
        };
        for fix in &self.groups {
            let name = if fix.group.is_empty() {
                crate::executions::UNGROUPED
            } else {
                &fix.group
            };
            writeln!(
                f,
                "{who}: group {name}: {} -> {}",
                group(&fix.before),
                group(&fix.after)
            )?;
        }
        for fix in &self.run_counts {
            writeln!(
                f,
                "{who}: live {} runs: {} -> {}",
                fix.status, fix.before, fix.after
            )?;
        }
        let s = &self.storage;
        if s.before != s.after || self.files_changed() {
            writeln!(
                f,
                "{who}: storage {} -> {} bytes ({} file(s) added, {} removed, {} resized)",
                s.before, s.after, s.added, s.removed, s.resized
            )?;
        }
        if self.leftovers_removed > 0 {
            writeln!(
                f,
                "{who}: removed {} leftover object(s) no file points to",
                self.leftovers_removed
            )?;
        }
        if !self.skipped.is_empty() {
            writeln!(
                f,
                "{who}: skipped {} entry(ies) that are not report files: {}",
                self.skipped.len(),
                self.skipped.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Reconciles the organization whose id or slug is `reference`, or every organization.
pub async fn reconcile(
    db: &Db,
    reports: &dyn ReportStorage,
    reference: Option<&str>,
    now: i64,
) -> Result<Vec<Reconciliation>, OperatorError> {
    let organizations = match reference {
        Some(reference) => {
            let org = find_organization(db, reference)
                .await?
                .ok_or_else(|| OperatorError::NotFound(reference.to_string()))?;
            vec![(org.id, org.slug)]
        }
        None => organization_slugs(db).await?,
    };
    let mut results = Vec::with_capacity(organizations.len());
    for (org_id, slug) in organizations {
        let test_runs = reconcile_test_runs(db, &org_id).await?;
        let (run_stats, groups) = reconcile_run_stats(db, &org_id).await?;
        let run_counts = reconcile_run_counts(db, &org_id).await?;
        let listing = reports.list(&org_id).await?;
        let (storage, leftovers) = reconcile_storage(db, &org_id, &listing.files, now).await?;
        // After the commit: no row can point to them any more.
        for object in &leftovers {
            reports.remove_object(object).await?;
        }
        results.push(Reconciliation {
            org_id,
            slug,
            test_runs,
            run_stats,
            groups,
            run_counts,
            storage,
            leftovers_removed: leftovers.len(),
            skipped: listing.skipped,
        });
    }
    Ok(results)
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

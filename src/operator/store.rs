//! Queries behind the operator surface: finding organizations by id or slug, plan and
//! limit changes, and re-deriving usage counters from their source of truth.

use std::collections::{BTreeMap, HashMap};

use sqlx::Row;

use super::PlanChange;
use crate::audit::{self, AuditEvent};
use crate::executions::storage::StoredFile;
use crate::organization::store::{ORG_SELECT, OrganizationRecord, org_columns};
use crate::organization::usage::Period;
use crate::store::{CoreResult, SqlStore, Tx};

/// A test-run counter that did not match the executions table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterFix {
    pub period: String,
    pub before: i64,
    pub after: i64,
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

#[async_trait::async_trait]
pub trait OperatorStore: Send + Sync + 'static {
    /// The organization whose id or slug is `reference` (an id match wins).
    async fn find_organization(&self, reference: &str) -> CoreResult<Option<OrganizationRecord>>;
    /// Every organization's id and slug, oldest first.
    async fn organization_slugs(&self) -> CoreResult<Vec<(String, String)>>;
    /// Applies `change` and writes `audit` (its details filled from before and after) in one
    /// transaction. Returns the organization before and after; `None` when it does not exist.
    async fn change_plan(
        &self,
        org_id: &str,
        change: &PlanChange,
        audit: &AuditEvent,
        now: i64,
    ) -> CoreResult<Option<(OrganizationRecord, OrganizationRecord)>>;
    /// Sets each month's test-run counter to the executions created in it.
    async fn reconcile_test_runs(&self, org_id: &str) -> CoreResult<Vec<CounterFix>>;
    /// Makes the organization's report rows, per-execution bytes and storage counter match
    /// `files` (what is on disk).
    async fn reconcile_storage(
        &self,
        org_id: &str,
        files: &[StoredFile],
        now: i64,
    ) -> CoreResult<StorageFix>;
}

async fn organization_in(tx: &mut Tx, org_id: &str) -> CoreResult<OrganizationRecord> {
    let row = sqlx::query(ORG_SELECT)
        .bind(org_id)
        .fetch_one(&mut **tx)
        .await?;
    OrganizationRecord::from_row(&row)
}

#[async_trait::async_trait]
impl OperatorStore for SqlStore {
    async fn find_organization(&self, reference: &str) -> CoreResult<Option<OrganizationRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            org_columns!(),
            " FROM organizations o WHERE o.id = $1 OR o.slug = $1
             ORDER BY CASE WHEN o.id = $1 THEN 0 ELSE 1 END LIMIT 1"
        ))
        .bind(reference)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(OrganizationRecord::from_row).transpose()
    }

    async fn organization_slugs(&self) -> CoreResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT id, slug FROM organizations ORDER BY created_at, id")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("id")?, row.try_get("slug")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn change_plan(
        &self,
        org_id: &str,
        change: &PlanChange,
        audit: &AuditEvent,
        now: i64,
    ) -> CoreResult<Option<(OrganizationRecord, OrganizationRecord)>> {
        let mut tx = self.begin_write().await?;
        if !self.lock_organization(&mut tx, org_id).await? {
            return Ok(None);
        }
        let before = organization_in(&mut tx, org_id).await?;
        let (plan, overrides) = change.apply(before.plan, &before.overrides);
        sqlx::query("UPDATE organizations SET plan = $2, limit_overrides = $3, updated_at = $4 WHERE id = $1")
            .bind(org_id)
            .bind(plan.as_str())
            .bind(overrides.to_json())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let after = organization_in(&mut tx, org_id).await?;
        let mut audit = audit.clone();
        audit.details = change.audit_details(&before, &after);
        audit::insert(&mut tx, &audit, now).await?;
        tx.commit().await?;
        Ok(Some((before, after)))
    }

    async fn reconcile_test_runs(&self, org_id: &str) -> CoreResult<Vec<CounterFix>> {
        let mut tx = self.begin_write().await?;
        // Executions are inserted under this lock, so the counts below are stable.
        self.lock_organization(&mut tx, org_id).await?;
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

    async fn reconcile_storage(
        &self,
        org_id: &str,
        files: &[StoredFile],
        now: i64,
    ) -> CoreResult<StorageFix> {
        let mut tx = self.begin_write().await?;
        self.lock_organization(&mut tx, org_id).await?;
        let rows =
            sqlx::query("SELECT task_id, path, size FROM report_files WHERE organization_id = $1")
                .bind(org_id)
                .fetch_all(&mut *tx)
                .await?;
        let mut recorded: HashMap<(String, String), i64> = HashMap::with_capacity(rows.len());
        for row in &rows {
            recorded.insert(
                (row.try_get("task_id")?, row.try_get("path")?),
                row.try_get("size")?,
            );
        }
        let mut fix = StorageFix::default();
        let mut touched = std::collections::BTreeSet::new();
        for file in files {
            let key = (file.task_id.clone(), file.path.clone());
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
                .bind(&file.task_id)
                .bind(&file.path)
                .bind(file.size)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            touched.insert(file.task_id.clone());
        }
        for (task_id, path) in recorded.into_keys() {
            sqlx::query("DELETE FROM report_files WHERE organization_id = $1 AND task_id = $2 AND path = $3")
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
        fix.before =
            sqlx::query_scalar("SELECT storage_used_bytes FROM organizations WHERE id = $1")
                .bind(org_id)
                .fetch_one(&mut *tx)
                .await?;
        fix.after = files.iter().map(|f| f.size).sum();
        if fix.before != fix.after {
            sqlx::query("UPDATE organizations SET storage_used_bytes = $2 WHERE id = $1")
                .bind(org_id)
                .bind(fix.after)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(fix)
    }
}

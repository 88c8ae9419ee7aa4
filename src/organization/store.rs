//! Queries behind the organization endpoints.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::{self, AuditEvent};
use crate::store::{CoreError, CoreResult, SqlStore, Tx, flag};
use orgd_core::plans::{Limits, Overrides, Plan};

#[derive(Debug, Clone)]
pub struct OrganizationRecord {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub plan: Plan,
    pub overrides: Overrides,
    pub ai_analysis_enabled: bool,
    pub storage_used_bytes: i64,
    pub user_count: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl OrganizationRecord {
    pub fn limits(&self) -> Limits {
        self.overrides.apply(self.plan.defaults())
    }

    pub(crate) fn from_row(row: &AnyRow) -> CoreResult<Self> {
        let (plan, overrides) = plan_and_overrides(row)?;
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            slug: row.try_get("slug")?,
            plan,
            overrides,
            ai_analysis_enabled: flag(row.try_get("ai_analysis_enabled")?),
            storage_used_bytes: row.try_get("storage_used_bytes")?,
            user_count: row.try_get("user_count")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

fn plan_and_overrides(row: &AnyRow) -> CoreResult<(Plan, Overrides)> {
    let plan: String = row.try_get("plan")?;
    let overrides: String = row.try_get("limit_overrides")?;
    Ok((
        Plan::parse(&plan).ok_or_else(|| CoreError::Corrupt(format!("plan {plan:?}")))?,
        Overrides::from_json(&overrides).map_err(CoreError::Corrupt)?,
    ))
}

/// An organization with what it used in one period (`GET /api/organization/usage`).
#[derive(Debug, Clone)]
pub struct OrganizationUsage {
    pub org: OrganizationRecord,
    pub test_runs: i64,
    pub ai_analyses: i64,
    pub pending_invitations: i64,
}

impl OrganizationUsage {
    fn from_row(row: &AnyRow) -> CoreResult<Self> {
        Ok(Self {
            org: OrganizationRecord::from_row(row)?,
            test_runs: row.try_get("test_runs")?,
            ai_analyses: row.try_get("ai_analyses")?,
            pending_invitations: row.try_get("pending_invitations")?,
        })
    }
}

/// Fields a PATCH may change; `None` leaves the stored value alone.
#[derive(Debug, Default)]
pub struct SettingsChange {
    pub name: Option<String>,
    pub ai_analysis_enabled: Option<bool>,
}

#[async_trait::async_trait]
pub trait OrganizationStore: Send + Sync + 'static {
    async fn organization(&self, id: &str) -> CoreResult<Option<OrganizationRecord>>;
    /// Applies the change and writes its audit entry in one transaction.
    /// `None` when the organization does not exist (nothing is written).
    async fn update_settings(
        &self,
        id: &str,
        change: &SettingsChange,
        audit: &AuditEvent,
        now: i64,
    ) -> CoreResult<Option<OrganizationRecord>>;
    /// The organization with its counters for `period` (`YYYY-MM`); invitations count as
    /// pending until they expire at `now`. Its cost does not depend on executions or files.
    async fn organization_usage(
        &self,
        id: &str,
        period: &str,
        now: i64,
    ) -> CoreResult<Option<OrganizationUsage>>;
    /// A page of every organization (oldest first) with its usage, and how many there are.
    async fn organizations_usage_page(
        &self,
        period: &str,
        now: i64,
        limit: i64,
        offset: i64,
    ) -> CoreResult<(Vec<OrganizationUsage>, i64)>;
}

/// The columns `OrganizationRecord::from_row` reads, from `organizations o`.
macro_rules! org_columns {
    () => {
        "o.id, o.name, o.slug, o.plan, o.limit_overrides, o.ai_analysis_enabled,
        o.storage_used_bytes, o.created_at, o.updated_at,
        (SELECT COUNT(*) FROM users u WHERE u.organization_id = o.id AND u.status = 'active') AS user_count"
    };
}
pub(crate) use org_columns;

pub(crate) const ORG_SELECT: &str = concat!(
    "SELECT ",
    org_columns!(),
    " FROM organizations o WHERE o.id = $1"
);

/// `org_columns!` plus the counters of period `$1` and the invitations pending at `$2`:
/// lookups by key, never a count over executions or report files.
macro_rules! usage_select {
    () => {
        concat!(
            "SELECT ",
            org_columns!(),
            ",
            COALESCE((SELECT c.test_runs FROM usage_counters c
                      WHERE c.organization_id = o.id AND c.period = $1), 0) AS test_runs,
            COALESCE((SELECT c.ai_analyses FROM usage_counters c
                      WHERE c.organization_id = o.id AND c.period = $1), 0) AS ai_analyses,
            (SELECT COUNT(*) FROM invitations i
             WHERE i.organization_id = o.id AND i.status = 'pending' AND i.expires_at > $2) AS pending_invitations
            FROM organizations o "
        )
    };
}

#[async_trait::async_trait]
impl OrganizationStore for SqlStore {
    async fn organization(&self, id: &str) -> CoreResult<Option<OrganizationRecord>> {
        let loaded_under = match self.organizations.get(&id.to_string()) {
            Ok(hit) => return Ok(Some(hit)),
            Err(header) => header,
        };
        let row = sqlx::query(ORG_SELECT)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        let found = row.as_ref().map(OrganizationRecord::from_row).transpose()?;
        if let Some(org) = &found {
            self.organizations
                .put(id.to_string(), org.clone(), loaded_under);
        }
        Ok(found)
    }

    async fn update_settings(
        &self,
        id: &str,
        change: &SettingsChange,
        audit: &AuditEvent,
        now: i64,
    ) -> CoreResult<Option<OrganizationRecord>> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE organizations SET name = COALESCE($1, name),
                    ai_analysis_enabled = COALESCE($2, ai_analysis_enabled), updated_at = $3
             WHERE id = $4",
        )
        .bind(change.name.as_deref())
        .bind(change.ai_analysis_enabled.map(i64::from))
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        audit::insert(&mut tx, audit, now).await?;
        let row = sqlx::query(ORG_SELECT).bind(id).fetch_one(&mut *tx).await?;
        let record = OrganizationRecord::from_row(&row)?;
        tx.commit().await?;
        Ok(Some(record))
    }

    async fn organization_usage(
        &self,
        id: &str,
        period: &str,
        now: i64,
    ) -> CoreResult<Option<OrganizationUsage>> {
        let row = sqlx::query(concat!(usage_select!(), "WHERE o.id = $3"))
            .bind(period)
            .bind(now)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(OrganizationUsage::from_row).transpose()
    }

    async fn organizations_usage_page(
        &self,
        period: &str,
        now: i64,
        limit: i64,
        offset: i64,
    ) -> CoreResult<(Vec<OrganizationUsage>, i64)> {
        let rows = sqlx::query(concat!(
            usage_select!(),
            "ORDER BY o.created_at, o.id LIMIT $3 OFFSET $4"
        ))
        .bind(period)
        .bind(now)
        .bind(limit)
        .bind(offset)
        .fetch_all(self.pool())
        .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM organizations")
            .fetch_one(self.pool())
            .await?;
        let page = rows
            .iter()
            .map(OrganizationUsage::from_row)
            .collect::<CoreResult<_>>()?;
        Ok((page, total))
    }
}

impl SqlStore {
    /// Locks the organization for the rest of `tx` (see `lock_organization`) and reads its
    /// effective limits, so a limit check and the write it guards see one state.
    /// `None` when the organization does not exist.
    pub async fn lock_limits(
        &self,
        tx: &mut Tx,
        organization_id: &str,
    ) -> CoreResult<Option<Limits>> {
        if !self.lock_organization(tx, organization_id).await? {
            return Ok(None);
        }
        let row = sqlx::query("SELECT plan, limit_overrides FROM organizations WHERE id = $1")
            .bind(organization_id)
            .fetch_one(&mut **tx)
            .await?;
        let (plan, overrides) = plan_and_overrides(&row)?;
        Ok(Some(overrides.apply(plan.defaults())))
    }
}

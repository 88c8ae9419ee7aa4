//! Queries behind the organization endpoints.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::plan::{Limits, Overrides, Plan};
use crate::audit::{self, AuditEvent};
use crate::store::{SqlStore, StoreError, StoreResult, flag};

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

    fn from_row(row: &AnyRow) -> StoreResult<Self> {
        let plan: String = row.try_get("plan")?;
        let overrides: String = row.try_get("limit_overrides")?;
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            slug: row.try_get("slug")?,
            plan: Plan::parse(&plan)
                .ok_or_else(|| StoreError::Corrupt(format!("plan {plan:?}")))?,
            overrides: Overrides::from_json(&overrides).map_err(StoreError::Corrupt)?,
            ai_analysis_enabled: flag(row.try_get("ai_analysis_enabled")?),
            storage_used_bytes: row.try_get("storage_used_bytes")?,
            user_count: row.try_get("user_count")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
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
    async fn organization(&self, id: &str) -> StoreResult<Option<OrganizationRecord>>;
    /// Applies the change and writes its audit entry in one transaction.
    /// `None` when the organization does not exist (nothing is written).
    async fn update_settings(
        &self,
        id: &str,
        change: &SettingsChange,
        audit: &AuditEvent,
        now: i64,
    ) -> StoreResult<Option<OrganizationRecord>>;
}

const ORG_SELECT: &str = "SELECT o.id, o.name, o.slug, o.plan, o.limit_overrides, o.ai_analysis_enabled,
        o.storage_used_bytes, o.created_at, o.updated_at,
        (SELECT COUNT(*) FROM users u WHERE u.organization_id = o.id AND u.status = 'active') AS user_count
     FROM organizations o WHERE o.id = $1";

#[async_trait::async_trait]
impl OrganizationStore for SqlStore {
    async fn organization(&self, id: &str) -> StoreResult<Option<OrganizationRecord>> {
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
    ) -> StoreResult<Option<OrganizationRecord>> {
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
}

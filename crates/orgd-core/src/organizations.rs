//! Organizations: their record (plan, overrides, settings, live counters), settings changes,
//! the usage query, and the effective limits read under the organization's lock.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::{self, AuditEvent};
use std::sync::Arc;

use crate::db::cache::ReadCache;
use crate::db::coalesce::Coalesced;
use crate::db::notify::Change;
use crate::db::{Backend, Db, Tx, flag};
use crate::error::{CoreError, CoreResult};
use crate::integrations::IntegrationChange;
use crate::plans::{Limits, Overrides, Plan};
use crate::rules::expiry::pending_at;

/// An organization's name: trimmed, 2–100 Unicode scalar values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgName(String);

impl OrgName {
    /// Trims `raw`; the error says what is wrong with it.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let name = raw.trim();
        match name.chars().count() {
            0 => Err("Organization name cannot be empty"),
            1 => Err("Organization name must be at least 2 characters"),
            101.. => Err("Organization name cannot exceed 100 characters"),
            _ => Ok(Self(name.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
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

    fn from_row(row: &AnyRow) -> CoreResult<Self> {
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

/// `userCount` of `organizations o`: its active members.
macro_rules! user_count {
    () => {
        "(SELECT COUNT(*) FROM users u WHERE u.organization_id = o.id AND u.status = 'active') AS user_count"
    };
}

/// The columns `OrganizationRecord::from_row` reads, from `organizations o`.
macro_rules! org_columns {
    () => {
        concat!(
            "o.id, o.name, o.slug, o.plan, o.limit_overrides, o.ai_analysis_enabled,
            o.storage_used_bytes, o.created_at, o.updated_at, ",
            user_count!()
        )
    };
}

const ORG_SELECT: &str = concat!(
    "SELECT ",
    org_columns!(),
    " FROM organizations o WHERE o.id = $1"
);

/// `org_columns!` plus the counters of period `$1` and the invitations pending at `$2`:
/// lookups by key, never a count over executions or report files.
fn usage_select(rest: &str) -> String {
    format!(
        "SELECT {columns},
            COALESCE((SELECT c.test_runs FROM usage_counters c
                      WHERE c.organization_id = o.id AND c.period = $1), 0) AS test_runs,
            COALESCE((SELECT c.ai_analyses FROM usage_counters c
                      WHERE c.organization_id = o.id AND c.period = $1), 0) AS ai_analyses,
            (SELECT COUNT(*) FROM invitations i
             WHERE i.organization_id = o.id AND {pending}) AS pending_invitations
         FROM organizations o {rest}",
        columns = org_columns!(),
        pending = pending_at("i", "$2"),
    )
}

/// Organizations read on the hot path, cached until a commit makes them stale (see
/// `db::cache`; every change of settings, plan or limits announces `Change::Organization`).
pub struct Organizations {
    cache: Arc<ReadCache<String, OrganizationRecord>>,
    /// Whether a cached record's live counters (`userCount`, storage used) must be read
    /// again: on PostgreSQL entries outlive the commits that move the counters (only changes
    /// of the organization itself evict them), and live counters are never served cached.
    /// Their reads are shared by the requests that wait for them at the same time, and run
    /// on a spare connection (`db::spare`).
    counters: Option<Arc<Coalesced<String, Option<Counters>>>>,
}

impl Organizations {
    pub fn new(db: &Db) -> Self {
        Self {
            cache: db
                .read_cache(|key, change| matches!(change, Change::Organization(id) if id == key)),
            counters: (db.backend() == Backend::Postgres).then(Arc::default),
        }
    }

    pub async fn get(&self, db: &Db, id: &str) -> CoreResult<Option<Arc<OrganizationRecord>>> {
        let loaded_under = match self.cache.get(id) {
            Ok(hit) => {
                let Some(counters) = &self.counters else {
                    return Ok(Some(hit));
                };
                let db = db.clone();
                let live = counters
                    .read(&hit.id, move |id| {
                        let db = db.clone();
                        async move { live_counters(&db, &id).await }
                    })
                    .await?;
                return Ok(live.map(|live| live.on(hit)));
            }
            Err(token) => token,
        };
        let row = sqlx::query(ORG_SELECT)
            .bind(id)
            .fetch_optional(db.pool())
            .await?;
        let Some(org) = row.as_ref().map(OrganizationRecord::from_row).transpose()? else {
            return Ok(None);
        };
        let org = Arc::new(org);
        self.cache.put(id.to_string(), org.clone(), loaded_under);
        Ok(Some(org))
    }
}

/// An organization's live counters as stored now.
#[derive(Clone, Copy)]
struct Counters {
    storage_used_bytes: i64,
    user_count: i64,
}

impl Counters {
    /// The cached record with these counters: the record itself while they are the ones it
    /// was loaded with (no copy, and callers comparing answers by `Arc` see the same one).
    fn on(self, cached: Arc<OrganizationRecord>) -> Arc<OrganizationRecord> {
        if cached.storage_used_bytes == self.storage_used_bytes
            && cached.user_count == self.user_count
        {
            return cached;
        }
        Arc::new(OrganizationRecord {
            storage_used_bytes: self.storage_used_bytes,
            user_count: self.user_count,
            ..(*cached).clone()
        })
    }
}

/// The live counters of organization `id` (`None` if it is gone).
async fn live_counters(db: &Db, id: &str) -> CoreResult<Option<Counters>> {
    let row = db
        .read_live(|| {
            sqlx::query(concat!(
                "SELECT o.storage_used_bytes, ",
                user_count!(),
                " FROM organizations o WHERE o.id = $1"
            ))
            .bind(id)
        })
        .await?;
    let counters = row.map(|row| -> Result<Counters, sqlx::Error> {
        Ok(Counters {
            storage_used_bytes: row.try_get("storage_used_bytes")?,
            user_count: row.try_get("user_count")?,
        })
    });
    Ok(counters.transpose()?)
}

/// The organization as `tx` sees it; it must exist.
pub async fn in_tx(tx: &mut Tx, id: &str) -> CoreResult<OrganizationRecord> {
    let row = sqlx::query(ORG_SELECT)
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
    OrganizationRecord::from_row(&row)
}

/// The organization whose id or slug is `reference` (an id match wins).
pub async fn by_id_or_slug(db: &Db, reference: &str) -> CoreResult<Option<OrganizationRecord>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        org_columns!(),
        " FROM organizations o WHERE o.id = $1 OR o.slug = $1
         ORDER BY CASE WHEN o.id = $1 THEN 0 ELSE 1 END LIMIT 1"
    ))
    .bind(reference)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(OrganizationRecord::from_row).transpose()
}

/// What `update_settings` did.
#[derive(Debug)]
pub enum SettingsOutcome {
    Updated(Box<OrganizationRecord>),
    NotFound,
    /// The integration changed since it was read (nothing was written).
    IntegrationChanged,
}

/// Applies a settings change with its audit entry (`settings`) and an integration change
/// made through the organization's settings (`PATCH /api/organization` saving Slack), all in
/// one transaction: everything is written or nothing is.
pub async fn update_settings(
    db: &Db,
    id: &str,
    settings: Option<(&SettingsChange, &AuditEvent)>,
    integration: Option<&IntegrationChange<'_>>,
    now: i64,
) -> CoreResult<SettingsOutcome> {
    let mut tx = db.begin_write().await?;
    if !tx.lock_organization(id).await? {
        return Ok(SettingsOutcome::NotFound);
    }
    tx.notify(Change::Organization(id.to_string())).await?;
    if let Some((change, audit)) = settings {
        sqlx::query(
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
        audit::insert(&mut tx, audit, now).await?;
    }
    if let Some(integration) = integration
        && !integration.apply(&mut tx, now).await?
    {
        return Ok(SettingsOutcome::IntegrationChanged);
    }
    let row = sqlx::query(ORG_SELECT).bind(id).fetch_one(&mut *tx).await?;
    let record = OrganizationRecord::from_row(&row)?;
    tx.commit().await?;
    Ok(SettingsOutcome::Updated(Box::new(record)))
}

/// The organization with its counters for `period` (`YYYY-MM`); invitations count as
/// pending until they expire at `now`. Its cost does not depend on executions or files.
pub async fn usage(
    db: &Db,
    id: &str,
    period: &str,
    now: i64,
) -> CoreResult<Option<OrganizationUsage>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(usage_select("WHERE o.id = $3")))
        .bind(period)
        .bind(now)
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(OrganizationUsage::from_row).transpose()
}

/// A page of every organization (oldest first) with its usage, and how many there are.
pub async fn usage_page(
    db: &Db,
    period: &str,
    now: i64,
    limit: i64,
    offset: i64,
) -> CoreResult<(Vec<OrganizationUsage>, i64)> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(usage_select(
        "ORDER BY o.created_at, o.id LIMIT $3 OFFSET $4",
    )))
    .bind(period)
    .bind(now)
    .bind(limit)
    .bind(offset)
    .fetch_all(db.pool())
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM organizations")
        .fetch_one(db.pool())
        .await?;
    let page = rows
        .iter()
        .map(OrganizationUsage::from_row)
        .collect::<CoreResult<_>>()?;
    Ok((page, total))
}

/// Locks the organization for the rest of `tx` (see `lock_organization`) and reads its
/// effective limits, so a limit check and the write it guards see one state.
/// `None` when the organization does not exist.
pub async fn lock_limits(tx: &mut Tx, organization_id: &str) -> CoreResult<Option<Limits>> {
    if !tx.lock_organization(organization_id).await? {
        return Ok(None);
    }
    limits_in(tx, organization_id).await
}

/// The organization's effective limits (plan defaults with its overrides) as `tx` sees
/// them — the one place plan and overrides become limits. `None` when it does not exist.
pub async fn limits_in(tx: &mut Tx, organization_id: &str) -> CoreResult<Option<Limits>> {
    let row = sqlx::query("SELECT plan, limit_overrides FROM organizations WHERE id = $1")
        .bind(organization_id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref()
        .map(|row| {
            plan_and_overrides(row).map(|(plan, overrides)| overrides.apply(plan.defaults()))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use std::sync::atomic::{AtomicI64, Ordering};

    /// Readers hammering one organization while members join: every read shows at least the
    /// members committed before it began (live counters are shared between concurrent
    /// readers on PostgreSQL, never served from before a read started).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn user_count_is_never_older_than_the_read() {
        for test in testing::databases().await {
            let db = test.db.clone();
            let org = testing::organization(&db, "free", "{}").await;
            let orgs = Arc::new(Organizations::new(&db));
            let committed = Arc::new(AtomicI64::new(0));
            let readers: Vec<_> = (0..8)
                .map(|_| {
                    let (db, org, orgs, committed) =
                        (db.clone(), org.clone(), orgs.clone(), committed.clone());
                    tokio::spawn(async move {
                        let mut reads = 0;
                        while committed.load(Ordering::SeqCst) < 20 {
                            let before = committed.load(Ordering::SeqCst);
                            let got = orgs.get(&db, &org).await.unwrap().unwrap();
                            assert!(got.user_count >= before, "{} < {before}", got.user_count);
                            reads += 1;
                            // A cached read on SQLite never yields: let the writer run.
                            tokio::task::yield_now().await;
                        }
                        reads
                    })
                })
                .collect();
            for n in 1..=20 {
                testing::member(&db, &org, "member").await;
                committed.store(n, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            for reader in readers {
                assert!(reader.await.unwrap() > 0);
            }
            let last = orgs.get(&db, &org).await.unwrap().unwrap();
            assert_eq!(last.user_count, 20);
        }
    }

    #[test]
    fn names_count_characters_not_bytes() {
        assert!(OrgName::parse("a").is_err());
        assert!(OrgName::parse("ab").is_ok());
        assert!(OrgName::parse("🚀🚀").is_ok());
        assert!(OrgName::parse(&"é".repeat(100)).is_ok());
        assert!(OrgName::parse(&"é".repeat(101)).is_err());
        assert_eq!(
            OrgName::parse("  ab  ").map(|n| n.into_string()),
            Ok("ab".into())
        );
    }
}

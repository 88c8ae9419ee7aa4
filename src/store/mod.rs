//! Storage: one sqlx `Any` implementation (`SqlStore`) over SQLite or PostgreSQL, behind the
//! `Store` trait. Each domain declares the queries it needs as its own trait next to its
//! routes (`organization::store::OrganizationStore`, ...); `Store` is all of them.
//!
//! Portable schema: TEXT ids, BIGINT millisecond timestamps, BIGINT 0/1 flags, TEXT JSON,
//! `$n` placeholders. Writes that must be atomic run in `begin_write()`, which is
//! `BEGIN IMMEDIATE` on SQLite so a transaction never has to upgrade its lock mid-way.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, Executor, Transaction};

pub mod cache;

use std::sync::Arc;

use crate::analysis::store::AnalysisStore;
use crate::audit::AuditStore;
use crate::auth::store::AuthStore;
use crate::auth::store::UserRecord;
use crate::executions::store::ExecutionStore;
use crate::integrations::store::IntegrationStore;
use crate::members::store::MemberStore;
use crate::operator::store::OperatorStore;
use crate::organization::ai_store::AiConfigStore;
use crate::organization::store::OrganizationRecord;
use crate::organization::store::OrganizationStore;
use crate::secrets::SecretStore;

/// A write transaction. On SQLite it also holds this process's writer turn (see
/// `begin_write`), released when the transaction commits or is dropped.
pub struct Tx {
    inner: Transaction<'static, Any>,
    _writer_turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.inner.commit().await
    }
}

impl std::ops::Deref for Tx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.inner
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.inner
    }
}

/// Longest wait for the writer turn; as long as SQLite's own busy timeout.
const WRITER_TURN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write; carries the database's description of it.
    #[error("unique constraint violated: {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(sqlx::Error),
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict(
                db.constraint()
                    .map_or_else(|| db.message().to_string(), str::to_string),
            ),
            _ => Self::Db(e),
        }
    }
}

impl StoreError {
    /// True when the violated constraint mentions `needle` (a column or constraint name).
    pub fn is_conflict_on(&self, needle: &str) -> bool {
        matches!(self, Self::Conflict(what) if what.contains(needle))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Everything the service needs from its database.
pub trait Store:
    HealthStore
    + AuthStore
    + OrganizationStore
    + AuditStore
    + MemberStore
    + ExecutionStore
    + OperatorStore
    + IntegrationStore
    + AiConfigStore
    + SecretStore
    + AnalysisStore
{
}
impl<
    T: HealthStore
        + AuthStore
        + OrganizationStore
        + AuditStore
        + MemberStore
        + ExecutionStore
        + OperatorStore
        + IntegrationStore
        + AiConfigStore
        + SecretStore
        + AnalysisStore,
> Store for T
{
}

#[async_trait::async_trait]
pub trait HealthStore: Send + Sync + 'static {
    async fn ping(&self) -> StoreResult<()>;
    async fn close(&self);
    /// The connection pool right now (for `/metrics`).
    fn pool_stats(&self) -> PoolStats;
}

/// Connections of the pool: open (idle or in use), idle, and the most it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// Who a (user id, token id) is and whether the token was revoked.
    pub(crate) identities: Arc<cache::ReadCache<(String, String), (UserRecord, bool)>>,
    pub(crate) organizations: Arc<cache::ReadCache<String, OrganizationRecord>>,
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl SqlStore {
    /// Connects to `sqlite://...` or `postgres://...`.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            anyhow::bail!("DATABASE_URL must start with sqlite:// or postgres://");
        };
        let options = AnyConnectOptions::from_str(url).context("invalid DATABASE_URL")?;
        let max_connections = match backend {
            // One writer at a time anyway; a few readers run beside it in WAL mode.
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .context("cannot connect to the database")?;
        // Only a SQLite file announces every commit cheaply (see cache.rs).
        let cached_file = match backend {
            Backend::Sqlite => cache::sqlite_path(url),
            Backend::Postgres => None,
        };
        Ok(Self {
            pool,
            backend,
            identities: Arc::new(cache::ReadCache::new(cached_file.clone())),
            organizations: Arc::new(cache::ReadCache::new(cached_file)),
            writer: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => sqlx::migrate!("src/store/migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("src/store/migrations/postgres"),
        };
        migrator
            .run(&self.pool)
            .await
            .context("database migration failed")
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Serializes writers of one organization for the rest of `tx`: on PostgreSQL a row lock
    /// on the organization (limit checks then count a stable set); on SQLite the
    /// `BEGIN IMMEDIATE` of `begin_write` already holds the database's write lock.
    /// Returns false when the organization does not exist.
    pub async fn lock_organization(&self, tx: &mut Tx, organization_id: &str) -> StoreResult<bool> {
        let sql = match self.backend {
            Backend::Sqlite => "SELECT id FROM organizations WHERE id = $1",
            Backend::Postgres => "SELECT id FROM organizations WHERE id = $1 FOR UPDATE",
        };
        let found: Option<String> = sqlx::query_scalar(sql)
            .bind(organization_id)
            .fetch_optional(&mut **tx)
            .await?;
        Ok(found.is_some())
    }

    /// Starts a transaction that will write: `BEGIN IMMEDIATE` on SQLite.
    /// SQLite has one writer at a time; writers of this process take turns here instead of
    /// meeting `SQLITE_BUSY`, whose retry sleeps (up to 100 ms each) would dominate latency.
    pub async fn begin_write(&self) -> StoreResult<Tx> {
        Ok(match self.backend {
            Backend::Sqlite => {
                let turn =
                    tokio::time::timeout(WRITER_TURN_TIMEOUT, self.writer.clone().lock_owned())
                        .await
                        .map_err(|_| StoreError::Db(sqlx::Error::PoolTimedOut))?;
                Tx {
                    inner: self.pool.begin_with("BEGIN IMMEDIATE").await?,
                    _writer_turn: Some(turn),
                }
            }
            Backend::Postgres => Tx {
                inner: self.pool.begin().await?,
                _writer_turn: None,
            },
        })
    }
}

#[async_trait::async_trait]
impl HealthStore for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            open: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
    }
}

/// Converts a stored 0/1 flag.
pub fn flag(v: i64) -> bool {
    v != 0
}

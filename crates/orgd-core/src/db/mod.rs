//! The database: one sqlx `Any` pool over SQLite or PostgreSQL (`Db`), its transactions
//! (`Tx`), the timeouts every wait is bounded by, and the few places the two backends differ.
//!
//! Portable schema: TEXT ids, BIGINT millisecond timestamps, BIGINT 0/1 flags, TEXT JSON,
//! `$n` placeholders. Writes that must be atomic run in `begin_write()`, which is
//! `BEGIN IMMEDIATE` on SQLite so a transaction never has to upgrade its lock mid-way.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, ConnectOptions, Connection, Executor};

pub mod cache;
pub mod coalesce;
pub mod notify;
mod spare;
mod wal_index;

use std::sync::Arc;

use crate::clock::Clock;
use crate::error::{CoreError, CoreResult};

/// A transaction on a connection of its own. On SQLite a write transaction also holds this
/// process's writer turn (see `begin_write`).
///
/// Started and ended with plain `BEGIN`/`COMMIT` statements rather than sqlx's `Transaction`:
/// when SQLite rolls a transaction back by itself (`SQLITE_FULL`, `SQLITE_IOERR`) sqlx's
/// follow-up `ROLLBACK` fails and its transaction depth stays at one, so the pooled connection
/// refuses every later `BEGIN` until restart. Here a transaction that was not committed is
/// rolled back when dropped, and its connection is closed instead of pooled whenever that
/// rollback fails or does not answer in time — a connection never goes back to the pool
/// inside a transaction, whatever cut the request short (an error, a timeout, a client gone).
pub struct Tx {
    conn: Option<PoolConnection<Any>>,
    backend: Backend,
    writer_turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// Where a write transaction reports whether the database took it (`/health`).
    writes: Option<Arc<WriteHealth>>,
    /// Changes announced inside this transaction, evicted from this instance's caches when
    /// it commits (the listener hears them too, but the next request may come first).
    announced: Vec<notify::Change>,
    invalidation: Option<Arc<notify::Invalidation>>,
}

/// How long an abandoned transaction's `ROLLBACK` may take before its connection is closed.
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(2);

impl Tx {
    async fn begin(
        db: &Db,
        begin: &'static str,
        writer_turn: Option<tokio::sync::OwnedMutexGuard<()>>,
        writes: Option<Arc<WriteHealth>>,
    ) -> CoreResult<Self> {
        let mut tx = Self {
            conn: Some(db.pool.acquire().await?),
            backend: db.backend,
            writer_turn,
            writes,
            announced: Vec::new(),
            invalidation: db.invalidation.clone(),
        };
        // Built before BEGIN runs, so a BEGIN cut short is rolled back on drop too.
        tx.execute(begin).await?;
        Ok(tx)
    }

    pub async fn commit(mut self) -> CoreResult<()> {
        let committed = self.execute("COMMIT").await;
        if let Some(writes) = &self.writes {
            writes.record(committed.is_ok());
        }
        committed.map(|_| {
            // Clean: the connection goes back to the pool and the writer turn is released.
            self.conn = None;
            self.writer_turn = None;
            if let Some(invalidation) = &self.invalidation {
                for change in &self.announced {
                    invalidation.evict(change);
                }
            }
        })
    }

    /// Announces that this transaction changes what caches hold: on PostgreSQL a
    /// `pg_notify` on the schema's channel, delivered to every instance when (and only if)
    /// the transaction commits, and evicted here at the commit. On SQLite every commit is
    /// seen through the WAL index, so nothing is sent.
    pub async fn notify(&mut self, change: notify::Change) -> CoreResult<()> {
        let Some(invalidation) = self.invalidation.clone() else {
            return Ok(());
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(invalidation.channel())
            .bind(notify::Invalidation::payload(&change))
            .execute(&mut **self)
            .await?;
        self.announced.push(change);
        Ok(())
    }

    /// Serializes writers of one organization for the rest of this transaction: on
    /// PostgreSQL a row lock on the organization (limit checks then count a stable set); on
    /// SQLite the `BEGIN IMMEDIATE` of `begin_write` already holds the database's write
    /// lock. Returns false when the organization does not exist.
    pub async fn lock_organization(&mut self, organization_id: &str) -> CoreResult<bool> {
        let sql = format!(
            "SELECT id FROM organizations WHERE id = $1{}",
            self.row_lock()
        );
        let found: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(organization_id)
            .fetch_optional(&mut **self)
            .await?;
        Ok(found.is_some())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What a `SELECT` ends with to lock the rows it reads until this transaction ends:
    /// ` FOR UPDATE` on PostgreSQL; nothing on SQLite, whose write transactions
    /// (`BEGIN IMMEDIATE`) already exclude every other writer.
    pub fn row_lock(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    /// Ends the transaction without keeping anything (dropping it does the same, later).
    pub async fn rollback(mut self) -> CoreResult<()> {
        let rolled_back = self.execute("ROLLBACK").await;
        if rolled_back.is_ok() {
            self.conn = None;
            self.writer_turn = None;
        }
        rolled_back
    }

    async fn execute(&mut self, sql: &'static str) -> CoreResult<()> {
        let conn: &mut AnyConnection = self;
        conn.execute(sql).await?;
        Ok(())
    }
}

impl std::ops::Deref for Tx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        self.conn.as_deref().expect(TX_CONNECTION)
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.conn.as_deref_mut().expect(TX_CONNECTION)
    }
}

/// Only `commit` and `drop` take the connection, and both consume the `Tx`.
const TX_CONNECTION: &str = "a transaction holds its connection until it ends";

impl Drop for Tx {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let abandoned = abandon(conn, self.writer_turn.take(), self.writes.take());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(abandoned);
            }
            // No runtime left (shutting down): dropping the future closes the connection.
            Err(_) => drop(abandoned),
        }
    }
}

/// Rolls back a transaction that was not committed; a connection whose rollback fails (the
/// database already ended the transaction, or the link is gone) is closed, not pooled. The
/// writer turn is held until then, so the next writer does not meet this one's lock.
async fn abandon(
    mut conn: PoolConnection<Any>,
    writer_turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    writes: Option<Arc<WriteHealth>>,
) {
    let rolled_back = tokio::time::timeout(ROLLBACK_TIMEOUT, conn.execute("ROLLBACK")).await;
    if !matches!(rolled_back, Ok(Ok(_))) {
        // The database lost this transaction: whatever it was writing did not land.
        if let Some(writes) = &writes {
            writes.record(false);
        }
        tracing::warn!("a transaction could not be rolled back; its connection is closed");
        let _ = tokio::time::timeout(ROLLBACK_TIMEOUT, conn.close()).await;
    }
    drop(writer_turn);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Connections of the pool: open (idle or in use), idle, and the most it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

/// How long the service waits on its database (DESIGN.md: `ORGD_DB_ACQUIRE_TIMEOUT`,
/// `ORGD_DB_STATEMENT_TIMEOUT`). CLI commands use `DbTimeouts::command()`: a migration or a
/// reconcile over a large history may take as long as it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbTimeouts {
    /// Longest wait for a pooled connection (and for SQLite's writer turn).
    pub acquire: Duration,
    /// PostgreSQL `statement_timeout`, `lock_timeout` and
    /// `idle_in_transaction_session_timeout`; SQLite `busy_timeout`. `None`: unbounded
    /// (SQLite still gives up on a lock after `COMMAND_BUSY_TIMEOUT`).
    pub statement: Option<Duration>,
}

/// SQLite lock wait of CLI commands.
const COMMAND_BUSY_TIMEOUT: Duration = Duration::from_secs(60);

impl DbTimeouts {
    pub fn service(acquire: Duration, statement: Duration) -> Self {
        Self {
            acquire,
            statement: Some(statement),
        }
    }

    pub fn command() -> Self {
        Self {
            acquire: Duration::from_secs(60),
            statement: None,
        }
    }
}

/// The outcome of the latest write, for `/health`.
#[derive(Default)]
pub struct WriteHealth {
    failed: std::sync::atomic::AtomicBool,
    /// When the outcome was recorded (`Instant` since `EPOCH`), 0 = never.
    at_ms: std::sync::atomic::AtomicU64,
    epoch: std::sync::OnceLock<std::time::Instant>,
}

/// How often `/health` writes to see whether the database takes writes, when nothing else did.
const WRITE_PROBE_EVERY: Duration = Duration::from_secs(3);

impl WriteHealth {
    fn elapsed_ms(&self) -> u64 {
        let epoch = self.epoch.get_or_init(std::time::Instant::now);
        u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn record(&self, ok: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.failed.store(!ok, Relaxed);
        self.at_ms.store(self.elapsed_ms().max(1), Relaxed);
    }

    fn ok(&self) -> bool {
        !self.failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// True when no write's outcome was recorded within `WRITE_PROBE_EVERY`.
    fn stale(&self) -> bool {
        let at = self.at_ms.load(std::sync::atomic::Ordering::Relaxed);
        at == 0 || self.elapsed_ms().saturating_sub(at) >= WRITE_PROBE_EVERY.as_millis() as u64
    }
}

#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    timeouts: DbTimeouts,
    writes: Arc<WriteHealth>,
    /// The SQLite file's WAL index, which announces every commit (see `cache`).
    wal_index: Option<Arc<wal_index::WalIndex>>,
    /// PostgreSQL: where changes are announced and heard (see `notify`).
    invalidation: Option<Arc<notify::Invalidation>>,
    /// The URL the cache listener connects with (PostgreSQL).
    url: Arc<str>,
    writer: Arc<tokio::sync::Mutex<()>>,
    /// PostgreSQL: connections kept aside for the live reads of every request (see `spare`).
    spares: Option<Arc<spare::Spares>>,
}

impl Db {
    /// Connects to `sqlite://...` or `postgres://...`, every connection bounded by `timeouts`.
    pub async fn connect(url: &str, timeouts: DbTimeouts) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(url)?;
        let options = AnyConnectOptions::from_str(url).context("invalid DATABASE_URL")?;
        let keeper_options = options.clone();
        let max_connections = match backend {
            // One writer at a time anyway; a few readers run beside it in WAL mode.
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(1)
            .acquire_timeout(timeouts.acquire)
            .after_connect(move |conn, _meta| Box::pin(configure(conn, backend, timeouts)))
            .connect_with(options)
            .await
            .context("cannot connect to the database")?;
        // A SQLite file announces every commit in its WAL index; PostgreSQL commits are
        // announced on a channel named with the schema (see cache.rs, notify.rs).
        let (wal_index, invalidation) = match backend {
            Backend::Sqlite => match cache::sqlite_path(url) {
                Some(path) => {
                    let mut keeper = keeper_options.connect().await?;
                    configure(&mut keeper, backend, timeouts).await?;
                    let index = wal_index::WalIndex::open(keeper, &path).await?;
                    if index.is_none() {
                        tracing::warn!(path = %path.display(), "the SQLite WAL index cannot be mapped: reads are not cached");
                    }
                    (index.map(Arc::new), None)
                }
                None => (None, None),
            },
            Backend::Postgres => {
                let schema: String = sqlx::query_scalar("SELECT CAST(current_schema() AS TEXT)")
                    .fetch_one(&pool)
                    .await
                    .context("cannot read the database schema")?;
                (None, Some(Arc::new(notify::Invalidation::new(&schema))))
            }
        };
        Ok(Self {
            pool,
            backend,
            timeouts,
            writes: Arc::default(),
            wal_index,
            invalidation,
            url: Arc::from(url),
            writer: Arc::new(tokio::sync::Mutex::new(())),
            spares: (backend == Backend::Postgres).then(Arc::default),
        })
    }

    /// A connection of its own (outside the pool) with the settings of `timeouts`.
    async fn connect_one(&self, timeouts: DbTimeouts) -> Result<AnyConnection, sqlx::Error> {
        let mut conn = self.pool.connect_options().connect().await?;
        configure(&mut conn, self.backend, timeouts).await?;
        Ok(conn)
    }

    /// The one row of `query`, read on a spare connection when there is one (PostgreSQL),
    /// else through the pool: for the small live reads every request makes. `query` builds
    /// the statement and may be called twice (see `spare`).
    pub async fn read_live<'q>(
        &self,
        query: impl Fn() -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    ) -> CoreResult<Option<sqlx::any::AnyRow>> {
        if let Some(spares) = &self.spares
            && let Some(mut spare) = self.spare(spares).await
        {
            match query().fetch_optional(&mut spare.conn).await {
                Ok(row) => {
                    spare.give_back();
                    return Ok(row);
                }
                // Dropping the spare closes it.
                Err(error) => {
                    tracing::debug!(%error, "a spare connection failed: reading through the pool")
                }
            }
        }
        Ok(query().fetch_optional(&self.pool).await?)
    }

    /// A new spare, named after the cache channel (`<channel>-live`) so that an operator (or a
    /// test) finds each schema's spares.
    async fn connect_spare(&self) -> Result<AnyConnection, sqlx::Error> {
        let mut conn = self.connect_one(self.timeouts).await?;
        if let Some(channel) = self.cache_channel() {
            sqlx::query("SELECT set_config('application_name', $1, false)")
                .bind(format!("{channel}-live"))
                .execute(&mut conn)
                .await?;
        }
        Ok(conn)
    }

    /// An idle spare, or a new one while there are fewer than the most (opened within the
    /// pool's acquire timeout), or `None`.
    async fn spare<'a>(&self, spares: &'a spare::Spares) -> Option<spare::Spare<'a>> {
        let place = match spares.take() {
            spare::Taken::Idle(spare) => return Some(spare),
            spare::Taken::Room(place) => place,
            spare::Taken::Full => return None,
        };
        let opened = tokio::time::timeout(self.timeouts.acquire, self.connect_spare())
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut));
        match opened {
            Ok(conn) => Some(place.hold(conn)),
            Err(error) => {
                tracing::debug!(%error, "cannot open a spare connection");
                None
            }
        }
    }

    /// Applies the migrations on a connection of their own, without the service's statement
    /// timeout (a migration over a large table may take longer).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = migrator(self.backend);
        let mut conn = self.connect_one(DbTimeouts::command()).await?;
        let migrated = migrator
            .run(&mut conn)
            .await
            .context("database migration failed");
        conn.close().await?;
        migrated
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A read cache that never serves a value a commit made stale: on SQLite it drops its
    /// entries whenever anything commits; on PostgreSQL the listener evicts the keys a
    /// change `names` (and the cache is bypassed while the listener is not hearing).
    pub fn read_cache<K, V>(
        &self,
        names: fn(&K, &notify::Change) -> bool,
    ) -> Arc<cache::ReadCache<K, V>>
    where
        K: Eq + std::hash::Hash + Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        let signal = match (&self.wal_index, &self.invalidation) {
            (Some(index), _) => cache::Signal::Wal(index.clone()),
            (None, Some(invalidation)) => cache::Signal::Notified(invalidation.clone()),
            (None, None) => cache::Signal::None,
        };
        cache::ReadCache::new(signal, names)
    }

    /// Starts this instance's cache listener (PostgreSQL; `None` on SQLite, whose caches need
    /// none). Until it hears its first heartbeat the caches are bypassed.
    pub fn listen_for_changes(&self) -> Option<tokio::task::JoinHandle<()>> {
        let invalidation = self.invalidation.clone()?;
        Some(tokio::spawn(notify::listen(
            self.url.to_string(),
            self.pool.clone(),
            invalidation,
        )))
    }

    /// Announces a change made outside the service's transactions (by hand, by a tool): the
    /// caches of every instance drop what it names, as if the change had announced itself.
    pub async fn announce(&self, change: notify::Change) -> CoreResult<()> {
        let mut tx = self.begin_write().await?;
        tx.notify(change).await?;
        tx.commit().await
    }

    /// Waits (at most `limit`) until the cache listener hears its heartbeats, so an instance
    /// starts with its caches in use and `/health` saying so. True when it does.
    pub async fn caches_ready(&self, limit: Duration) -> bool {
        let Some(invalidation) = &self.invalidation else {
            return true;
        };
        let deadline = tokio::time::Instant::now() + limit;
        while !invalidation.healthy() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// The caches' state for `/health`.
    pub fn cache_health(&self) -> notify::CacheHealth {
        match &self.invalidation {
            Some(invalidation) => invalidation.health(),
            None => notify::CacheHealth::Disabled,
        }
    }

    /// The channel changes are announced on (PostgreSQL).
    pub fn cache_channel(&self) -> Option<&str> {
        self.invalidation
            .as_deref()
            .map(notify::Invalidation::channel)
    }

    /// See `Tx::lock_organization`.
    pub async fn lock_organization(&self, tx: &mut Tx, organization_id: &str) -> CoreResult<bool> {
        tx.lock_organization(organization_id).await
    }

    /// Starts a transaction that will write: `BEGIN IMMEDIATE` on SQLite.
    /// SQLite has one writer at a time; writers of this process take turns here instead of
    /// meeting `SQLITE_BUSY`, whose retry sleeps (up to 100 ms each) would dominate latency.
    pub async fn begin_write(&self) -> CoreResult<Tx> {
        let writes = Some(self.writes.clone());
        match self.backend {
            Backend::Sqlite => {
                let turn = self.writer_turn().await?;
                Tx::begin(self, "BEGIN IMMEDIATE", Some(turn), writes).await
            }
            Backend::Postgres => Tx::begin(self, "BEGIN", None, writes).await,
        }
    }

    /// Starts a transaction that only reads (one consistent snapshot).
    pub async fn begin_read(&self) -> CoreResult<Tx> {
        Tx::begin(self, "BEGIN", None, None).await
    }

    /// This process's turn to write, waited for as long as a connection would be.
    async fn writer_turn(&self) -> CoreResult<tokio::sync::OwnedMutexGuard<()>> {
        tokio::time::timeout(self.timeouts.acquire, self.writer.clone().lock_owned())
            .await
            .map_err(|_| CoreError::Unavailable(sqlx::Error::PoolTimedOut))
    }

    /// One small committed write, unless another writer holds the lock right now.
    async fn probe_write(&self) {
        let turn = match self.backend {
            Backend::Sqlite => match self.writer.clone().try_lock_owned() {
                Ok(turn) => Some(turn),
                Err(_) => return,
            },
            Backend::Postgres => None,
        };
        let begin = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        let probe = async {
            let mut tx = Tx::begin(self, begin, turn, Some(self.writes.clone())).await?;
            sqlx::query(
                "INSERT INTO health_probes (id, written_at) VALUES ('write', $1)
                 ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at",
            )
            .bind(crate::clock::SystemClock.now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        };
        if let Err(e) = probe.await {
            self.writes.record(false);
            tracing::warn!(error = %e, "health check: the database refused a write");
        }
    }
}

impl Backend {
    fn of(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres)
        } else {
            anyhow::bail!("DATABASE_URL must start with sqlite:// or postgres://")
        }
    }
}

/// The migrations of `backend`: its own directory — the released migrations, byte for byte,
/// since deployed databases record their checksums — merged in version order with `common/`,
/// where a new migration whose SQL is the same on both backends is written once.
fn migrator(backend: Backend) -> sqlx::migrate::Migrator {
    let mut migrator = match backend {
        Backend::Sqlite => sqlx::migrate!("src/db/migrations/sqlite"),
        Backend::Postgres => sqlx::migrate!("src/db/migrations/postgres"),
    };
    let common = sqlx::migrate!("src/db/migrations/common");
    let mut all: Vec<sqlx::migrate::Migration> = migrator
        .migrations
        .iter()
        .chain(common.migrations.iter())
        .cloned()
        .collect();
    all.sort_by_key(|m| m.version);
    migrator.migrations = std::borrow::Cow::Owned(all);
    migrator
}

/// Settings every connection gets when it opens.
async fn configure(
    conn: &mut AnyConnection,
    backend: Backend,
    timeouts: DbTimeouts,
) -> Result<(), sqlx::Error> {
    match backend {
        Backend::Sqlite => {
            let busy = timeouts.statement.unwrap_or(COMMAND_BUSY_TIMEOUT);
            conn.execute("PRAGMA journal_mode = WAL").await?;
            conn.execute("PRAGMA synchronous = NORMAL").await?;
            conn.execute(sqlx::AssertSqlSafe(format!(
                "PRAGMA busy_timeout = {}",
                busy.as_millis()
            )))
            .await?;
            conn.execute("PRAGMA foreign_keys = ON").await?;
        }
        Backend::Postgres => {
            if let Some(limit) = timeouts.statement {
                let ms = limit.as_millis();
                for setting in [
                    "statement_timeout",
                    "lock_timeout",
                    "idle_in_transaction_session_timeout",
                ] {
                    conn.execute(sqlx::AssertSqlSafe(format!("SET {setting} = {ms}")))
                        .await?;
                }
            }
        }
    }
    Ok(())
}

impl Db {
    /// Reads one row: the database answers.
    pub async fn ping(&self) -> CoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Whether the database takes writes: the latest write's outcome, refreshed by a small
    /// write at most every `WRITE_PROBE_EVERY` — skipped while a writer holds the lock, so
    /// a health check never queues behind it.
    pub async fn writable(&self) -> bool {
        if self.writes.stale() {
            self.probe_write().await;
        }
        self.writes.ok()
    }

    /// A request found the database out of reach: `writable` is false until a write lands.
    pub fn record_outage(&self) {
        self.writes.record(false);
    }

    pub async fn close(&self) {
        if let Some(spares) = &self.spares {
            spares.close().await;
        }
        self.pool.close().await;
    }

    /// The pool itself, for operations on every connection (tests inject faults this way).
    pub fn connection_pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The connection pool right now (for `/metrics`).
    pub fn pool_stats(&self) -> PoolStats {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backend_has_every_version_once_in_order() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let versions: Vec<i64> = migrator(backend)
                .migrations
                .iter()
                .map(|m| m.version)
                .collect();
            assert!(
                versions.windows(2).all(|w| w[0] < w[1]),
                "{backend:?}: {versions:?}"
            );
            assert!(versions.contains(&9), "common migrations are included");
        }
        let sqlite: Vec<i64> = migrator(Backend::Sqlite)
            .migrations
            .iter()
            .map(|m| m.version)
            .collect();
        let postgres: Vec<i64> = migrator(Backend::Postgres)
            .migrations
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(sqlite, postgres, "both backends have the same versions");
    }
}

//! Exact caches across instances on PostgreSQL (DESIGN.md, "Growing past one machine"): every
//! transaction that changes what a cache holds sends `pg_notify(channel, '<kind>:<id>')`
//! inside itself (`Tx::notify`; delivered only if it commits), and each instance's listener —
//! a `PgListener` on a connection of its own — evicts what a notification names. The channel
//! is named with the database schema, so schemas sharing one database do not hear each other.
//!
//! A cache is trusted only while the listener demonstrably hears the channel: the instance
//! sends itself a heartbeat on it every second, and two seconds without one count as
//! disconnected. Then every cache is bypassed (each read goes to the database) and nothing is
//! kept; when heartbeats arrive again the caches start empty, since notifications missed
//! meanwhile are never replayed.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::AnyPool;

/// What a committed change makes stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A user's role, status, organization, sessions or API keys (or the user is gone).
    User(String),
    /// An organization's settings, plan or limit overrides.
    Organization(String),
}

impl Change {
    fn payload(&self) -> String {
        match self {
            Self::User(id) => format!("user:{id}"),
            Self::Organization(id) => format!("org:{id}"),
        }
    }

    fn parse(payload: &str) -> Option<Self> {
        let (kind, id) = payload.split_once(':')?;
        match kind {
            "user" => Some(Self::User(id.to_string())),
            "org" => Some(Self::Organization(id.to_string())),
            _ => None,
        }
    }
}

/// What the listener's own heartbeat carries.
const HEARTBEAT: &str = "heartbeat";
/// How often the instance sends itself a heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// Silence after which the listener counts as disconnected.
const SILENT_AFTER: Duration = Duration::from_secs(2);

/// A cache the listener evicts from.
pub(crate) trait Evict: Send + Sync {
    fn evict(&self, change: &Change);
}

/// Where a cache reads whether it may be trusted, and what the listener evicts through.
pub struct Invalidation {
    channel: String,
    /// Bumped whenever the caches must start empty (the listener was lost or silent).
    epoch: AtomicU64,
    /// Bumped on every eviction, so a value read before it is not kept after it.
    seq: AtomicU64,
    /// When the latest heartbeat arrived (ms since `started`), 0 = none since (re)connecting.
    heartbeat_at: AtomicI64,
    started: Instant,
    caches: Mutex<Vec<Weak<dyn Evict>>>,
}

/// The state a value was read under: it may be kept only if nothing moved since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    pub epoch: u64,
    pub seq: u64,
}

/// `/health`'s word for the caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheHealth {
    /// The listener hears its heartbeats: caches are used.
    Ok,
    /// The listener is down or silent: every read goes to the database.
    Bypassed,
    /// No cross-instance listener (SQLite: commits are seen through the WAL index).
    Disabled,
}

impl CacheHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Bypassed => "bypassed",
            Self::Disabled => "disabled",
        }
    }
}

impl Invalidation {
    pub(crate) fn new(schema: &str) -> Self {
        Self {
            channel: channel_for(schema),
            epoch: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            heartbeat_at: AtomicI64::new(0),
            started: Instant::now(),
            caches: Mutex::new(Vec::new()),
        }
    }

    /// The channel this database's changes are announced on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    fn elapsed_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    /// Whether the listener heard a heartbeat within `SILENT_AFTER`.
    pub fn healthy(&self) -> bool {
        let at = self.heartbeat_at.load(Ordering::Acquire);
        at != 0 && self.elapsed_ms() - at < SILENT_AFTER.as_millis() as i64
    }

    /// The generation to read under, or `None` when caches must not be used now.
    pub(crate) fn generation(&self) -> Option<Generation> {
        self.healthy().then(|| Generation {
            epoch: self.epoch.load(Ordering::Acquire),
            seq: self.seq.load(Ordering::Acquire),
        })
    }

    pub(crate) fn register(&self, cache: Weak<dyn Evict>) {
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.retain(|c| c.strong_count() > 0);
        caches.push(cache);
    }

    /// Drops what `change` made stale from every cache of this instance.
    pub fn evict(&self, change: &Change) {
        // First: a value being read now is not kept (see `ReadCache::put`).
        self.seq.fetch_add(1, Ordering::AcqRel);
        let caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        for cache in caches.iter().filter_map(Weak::upgrade) {
            cache.evict(change);
        }
    }

    /// The listener lost its connection: bypass until heartbeats arrive again.
    fn lost(&self) {
        self.heartbeat_at.store(0, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    fn heard(&self, payload: &str) {
        if payload == HEARTBEAT {
            if !self.healthy() {
                // Back after a loss or a silence: whatever was missed is unknown, so every
                // cache starts empty.
                self.epoch.fetch_add(1, Ordering::AcqRel);
            }
            self.heartbeat_at
                .store(self.elapsed_ms(), Ordering::Release);
        } else if let Some(change) = Change::parse(payload) {
            self.evict(&change);
        } else {
            tracing::warn!(payload, "unknown cache notification ignored");
        }
    }

    #[cfg(test)]
    pub(crate) fn heard_for_tests(&self, payload: &str) {
        self.heard(payload);
    }

    pub fn health(&self) -> CacheHealth {
        if self.healthy() {
            CacheHealth::Ok
        } else {
            CacheHealth::Bypassed
        }
    }

    pub(crate) fn payload(change: &Change) -> String {
        change.payload()
    }
}

/// `orgd_cache_<schema>`; a schema too long for a channel name (63 bytes) is hashed.
fn channel_for(schema: &str) -> String {
    let channel = format!("orgd_cache_{schema}");
    if channel.len() <= 63 {
        channel
    } else {
        format!("orgd_cache_{}", &crate::ids::sha256_hex(schema)[..32])
    }
}

/// Runs this instance's listener and heartbeat until the runtime stops: `url` is the
/// database's (the listener has a connection of its own), `pool` sends the heartbeats.
pub(crate) async fn listen(url: String, pool: AnyPool, hub: std::sync::Arc<Invalidation>) {
    // Heartbeats stop with the listener (the service's task is aborted when it stops).
    let _beats = AbortOnDrop(tokio::spawn(heartbeats(pool, hub.clone())));
    let mut listener = loop {
        match connect(&url, hub.channel()).await {
            Ok(listener) => break listener,
            Err(e) => {
                tracing::warn!(error = %e, "cache listener: cannot connect; caches bypassed");
                tokio::time::sleep(HEARTBEAT_EVERY).await;
            }
        }
    };
    tracing::info!(channel = hub.channel(), "cache listener: listening");
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => hub.heard(notification.payload()),
            // The connection was lost (sqlx reconnects and listens again): whatever was sent
            // meanwhile is gone.
            Ok(None) => {
                hub.lost();
                tracing::warn!("cache listener: connection lost; caches bypassed until it is back");
            }
            Err(e) => {
                hub.lost();
                tracing::warn!(error = %e, "cache listener: cannot reconnect; caches bypassed");
                tokio::time::sleep(HEARTBEAT_EVERY / 4).await;
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn connect(url: &str, channel: &str) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    use std::str::FromStr;
    // Named after its channel, so an operator (or a test) finds each schema's listeners.
    let options = sqlx::postgres::PgConnectOptions::from_str(url)?.application_name(channel);
    // One connection, kept for as long as it lives (as `PgListener::connect` builds it).
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(options)
        .await?;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
    listener.listen(channel).await?;
    // A first heartbeat at once: the caches need not wait a whole period to be used.
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(HEARTBEAT)
        .execute(&mut listener)
        .await?;
    Ok(listener)
}

async fn heartbeats(pool: AnyPool, hub: std::sync::Arc<Invalidation>) {
    let mut every = tokio::time::interval(HEARTBEAT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(hub.channel())
            .bind(HEARTBEAT)
            .execute(&pool)
            .await;
        if let Err(e) = sent {
            // Unheard heartbeats make the caches bypassed by themselves.
            tracing::debug!(error = %e, "cache heartbeat not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        for change in [
            Change::User("507f191e810c19729de860ea".into()),
            Change::Organization("507f191e810c19729de860eb".into()),
        ] {
            assert_eq!(Change::parse(&change.payload()), Some(change));
        }
        assert_eq!(Change::parse("heartbeat"), None);
        assert_eq!(Change::parse("team:1"), None);
    }

    #[test]
    fn channels_fit_postgres_names() {
        assert_eq!(channel_for("t_abc"), "orgd_cache_t_abc");
        assert!(channel_for(&"s".repeat(63)).len() <= 63);
        assert_ne!(channel_for(&"s".repeat(63)), channel_for(&"s".repeat(64)));
    }

    #[test]
    fn caches_are_trusted_only_between_heartbeats() {
        let hub = Invalidation::new("x");
        assert_eq!(hub.generation(), None, "nothing heard yet");
        hub.heard(HEARTBEAT);
        let first = hub.generation().expect("healthy");
        hub.heard("user:abc");
        let after = hub.generation().expect("healthy");
        assert_eq!(after.epoch, first.epoch);
        assert_ne!(
            after.seq, first.seq,
            "a value read before an eviction is not kept"
        );
        hub.lost();
        assert_eq!(hub.generation(), None);
        assert_eq!(hub.health(), CacheHealth::Bypassed);
        hub.heard(HEARTBEAT);
        assert!(hub.generation().expect("back").epoch > after.epoch);
    }
}

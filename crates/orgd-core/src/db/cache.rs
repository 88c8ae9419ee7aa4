//! A read cache for the hot path (who is calling, and their organization) that never serves a
//! value older than the database allows:
//!
//! - On SQLite in WAL mode every committed transaction — from this process, another process,
//!   or a person with the `sqlite3` shell — changes the WAL-index header (`wal_index.rs`).
//!   Each lookup reads those 48 bytes (a memory read, no query) and drops every entry when
//!   they differ from the bytes the entries were loaded under.
//! - On PostgreSQL the listener of `notify.rs` evicts the entries a committed change names,
//!   and the cache is bypassed whenever the listener is not demonstrably hearing.
//!
//! Values are kept behind an `Arc`: a hit costs a reference count, not a copy.

use foldhash::HashMap;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::notify::{Change, Evict, Generation, Invalidation};
use super::wal_index::{Header, WalIndex};

/// Entries beyond this are not worth keeping; the map starts over.
const MAX_ENTRIES: usize = 50_000;

/// What the entries (and a value being read) are valid under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// The SQLite WAL-index header.
    Wal(Header),
    /// The listener's generation (PostgreSQL).
    Notified(Generation),
}

impl Token {
    /// What the whole map depends on: an eviction (`seq`) removes single entries, so only
    /// the epoch empties the map.
    fn of_entries(self) -> Token {
        match self {
            Self::Wal(header) => Self::Wal(header),
            Self::Notified(g) => Self::Notified(Generation { seq: 0, ..g }),
        }
    }
}

/// How the cache learns about commits.
pub(crate) enum Signal {
    /// Nothing announces commits: nothing is cached.
    None,
    Wal(Arc<WalIndex>),
    Notified(Arc<Invalidation>),
}

/// The token the entries were loaded under, and the entries.
type Entries<K, V> = (Option<Token>, HashMap<K, Arc<V>>);

pub struct ReadCache<K, V> {
    signal: Signal,
    entries: RwLock<Entries<K, V>>,
    /// Whether a change names a key (what the listener evicts).
    names: fn(&K, &Change) -> bool,
}

impl<K, V> ReadCache<K, V>
where
    K: Eq + Hash + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// A cache announced by `signal`; on PostgreSQL `names` says which keys a change makes
    /// stale.
    pub(crate) fn new(signal: Signal, names: fn(&K, &Change) -> bool) -> Arc<Self> {
        let cache = Arc::new(Self {
            signal,
            entries: RwLock::new((None, HashMap::default())),
            names,
        });
        if let Signal::Notified(hub) = &cache.signal {
            let evict: std::sync::Weak<dyn Evict> = Arc::downgrade(&cache) as _;
            hub.register(evict);
        }
        cache
    }

    /// The current token, or `None` when nothing may be cached now.
    fn token(&self) -> Option<Token> {
        match &self.signal {
            Signal::None => None,
            Signal::Wal(index) => index.header().map(Token::Wal),
            Signal::Notified(hub) => hub.generation().map(Token::Notified),
        }
    }

    /// The cached value for `key` if nothing changed it since it was loaded. Returns the
    /// token to load under when it is a miss.
    pub fn get<Q>(&self, key: &Q) -> Result<Arc<V>, Option<Token>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(now) = self.token() else {
            return Err(None);
        };
        let valid = now.of_entries();
        {
            let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
            if entries.0 == Some(valid) {
                return entries.1.get(key).cloned().ok_or(Some(now));
            }
        }
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.0 != Some(valid) {
            entries.0 = Some(valid);
            entries.1.clear();
        }
        entries.1.get(key).cloned().ok_or(Some(now))
    }

    /// Keeps `value`, loaded after `loaded_under` was read, unless something changed since.
    pub fn put(&self, key: K, value: Arc<V>, loaded_under: Option<Token>) {
        let Some(loaded_under) = loaded_under else {
            return;
        };
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let unchanged = match &self.signal {
            // The next lookup re-reads the header; entries under an older one are dropped.
            Signal::Wal(_) => entries.0 == Some(loaded_under),
            // Evictions do not touch the map's token: compare with the listener's now (under
            // the lock, so an eviction that follows still finds and removes the value).
            Signal::Notified(_) => {
                self.token() == Some(loaded_under) && entries.0 == Some(loaded_under.of_entries())
            }
            Signal::None => false,
        };
        if !unchanged {
            return;
        }
        if entries.1.len() >= MAX_ENTRIES {
            entries.1.clear();
        }
        entries.1.insert(key, value);
    }
}

impl<K, V> Evict for ReadCache<K, V>
where
    K: Eq + Hash + Send + Sync,
    V: Send + Sync,
{
    fn evict(&self, change: &Change) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.1.retain(|key, _| !(self.names)(key, change));
    }
}

/// The file behind a `sqlite:` URL, when it names one (not `:memory:`).
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    (!path.is_empty() && !path.contains(":memory:")).then(|| PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_from_urls() {
        assert_eq!(
            sqlite_path("sqlite://data/orgd.db?mode=rwc"),
            Some("data/orgd.db".into())
        );
        assert_eq!(sqlite_path("sqlite:///tmp/x.db"), Some("/tmp/x.db".into()));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://x"), None);
    }

    fn never(_: &&str, _: &Change) -> bool {
        false
    }

    #[test]
    fn a_changed_header_drops_entries() {
        let dir = tempfile::tempdir().unwrap();
        let shm = dir.path().join("x.db-shm");
        let mut header = [0u8; 96];
        header[12] = 1;
        std::fs::write(&shm, header).unwrap();
        let index = Arc::new(WalIndex::map(&shm, None).unwrap());
        let cache: Arc<ReadCache<&str, i32>> = ReadCache::new(Signal::Wal(index), never);
        let loaded_under = cache.get(&"k").unwrap_err();
        cache.put("k", Arc::new(1), loaded_under);
        assert_eq!(cache.get(&"k").as_deref(), Ok(&1));
        header[8] = 1; // iChange moved: a transaction committed somewhere
        std::fs::write(&shm, header).unwrap();
        let loaded_under = cache.get(&"k").unwrap_err();
        // A value loaded under an older header is not kept.
        header[8] = 2;
        std::fs::write(&shm, header).unwrap();
        cache.put("k", Arc::new(2), loaded_under);
        assert!(cache.get(&"k").is_err());
        let disabled: Arc<ReadCache<&str, i32>> = ReadCache::new(Signal::None, never);
        disabled.put("k", Arc::new(1), None);
        assert_eq!(disabled.get(&"k"), Err(None));
    }

    #[test]
    fn notifications_evict_what_they_name_and_stop_loads_in_flight() {
        let hub = Arc::new(Invalidation::new("cache_test"));
        let by_user = |key: &&str, change: &Change| matches!(change, Change::User(id) if id == key);
        let cache: Arc<ReadCache<&str, i32>> =
            ReadCache::new(Signal::Notified(hub.clone()), by_user);
        assert_eq!(
            cache.get(&"a"),
            Err(None),
            "bypassed until a heartbeat is heard"
        );
        hub.heard_for_tests("heartbeat");
        for (key, value) in [("a", 1), ("b", 2)] {
            let under = cache.get(&key).unwrap_err();
            cache.put(key, Arc::new(value), under);
        }
        hub.heard_for_tests("user:a");
        assert!(cache.get(&"a").is_err(), "evicted");
        assert_eq!(cache.get(&"b").as_deref(), Ok(&2), "kept");
        // A value read before an eviction is not kept after it.
        let under = cache.get(&"a").unwrap_err();
        hub.heard_for_tests("user:zzz");
        cache.put("a", Arc::new(9), under);
        assert!(cache.get(&"a").is_err());
    }
}

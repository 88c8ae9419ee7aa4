//! A read cache for the hot path (who is calling, and their organization) that can never
//! serve a value older than the database: on SQLite in WAL mode every committed transaction
//! — from this process, another process, or a person with the `sqlite3` shell — changes the
//! WAL-index header at the start of the `-shm` file (its `iChange` counter is "incremented
//! with each transaction", https://www.sqlite.org/walformat.html). Each lookup reads those 48
//! bytes (one `pread`, no query) and drops every entry when they differ from the bytes the
//! entries were loaded under. PostgreSQL has no such cheap signal, so it is not cached there.

use std::collections::HashMap;
use std::fs::File;
use std::hash::Hash;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{OnceLock, RwLock};

const HEADER_BYTES: usize = 48;
/// Entries beyond this are not worth keeping; the map starts over.
const MAX_ENTRIES: usize = 50_000;

type Header = [u8; HEADER_BYTES];

pub struct ReadCache<K, V> {
    shm: Option<PathBuf>,
    file: OnceLock<File>,
    entries: RwLock<(Header, HashMap<K, V>)>,
}

impl<K: Eq + Hash, V: Clone> ReadCache<K, V> {
    /// A cache tied to the SQLite database at `db_path`, or a disabled one for `None`.
    pub fn new(db_path: Option<PathBuf>) -> Self {
        let shm = db_path.map(|p| {
            let mut s = p.into_os_string();
            s.push("-shm");
            PathBuf::from(s)
        });
        Self {
            shm,
            file: OnceLock::new(),
            entries: RwLock::new(([0; HEADER_BYTES], HashMap::new())),
        }
    }

    /// The current WAL-index header, or `None` when it cannot be read (then nothing is cached).
    fn header(&self) -> Option<Header> {
        let file = match self.file.get() {
            Some(file) => file,
            None => {
                let opened = File::open(self.shm.as_ref()?).ok()?;
                self.file.get_or_init(|| opened)
            }
        };
        let mut header = [0u8; HEADER_BYTES];
        file.read_exact_at(&mut header, 0).ok()?;
        // An uninitialised index (isInit = 0) says nothing reliable.
        (header[12] == 1).then_some(header)
    }

    /// The cached value for `key` if the database has not changed since it was loaded.
    /// Returns the header to load under when it is a miss.
    pub fn get(&self, key: &K) -> Result<V, Option<Header>> {
        let Some(now) = self.header() else {
            return Err(None);
        };
        {
            let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
            if entries.0 == now {
                return entries.1.get(key).cloned().ok_or(Some(now));
            }
        }
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.0 != now {
            entries.0 = now;
            entries.1.clear();
        }
        entries.1.get(key).cloned().ok_or(Some(now))
    }

    /// Keeps `value`, loaded after `loaded_under` was read, unless the database moved since.
    pub fn put(&self, key: K, value: V, loaded_under: Option<Header>) {
        let Some(loaded_under) = loaded_under else {
            return;
        };
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.0 != loaded_under {
            return;
        }
        if entries.1.len() >= MAX_ENTRIES {
            entries.1.clear();
        }
        entries.1.insert(key, value);
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

    #[test]
    fn a_changed_header_drops_entries() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let shm = dir.path().join("x.db-shm");
        let mut header = [0u8; 96];
        header[12] = 1;
        std::fs::write(&shm, header).unwrap();
        let cache: ReadCache<&str, i32> = ReadCache::new(Some(db));
        let loaded_under = cache.get(&"k").unwrap_err();
        cache.put("k", 1, loaded_under);
        assert_eq!(cache.get(&"k"), Ok(1));
        header[8] = 1; // iChange moved: a transaction committed somewhere
        std::fs::write(&shm, header).unwrap();
        let loaded_under = cache.get(&"k").unwrap_err();
        // A value loaded under an older header is not kept.
        header[8] = 2;
        std::fs::write(&shm, header).unwrap();
        cache.put("k", 2, loaded_under);
        assert!(cache.get(&"k").is_err());
        let disabled: ReadCache<&str, i32> = ReadCache::new(None);
        disabled.put("k", 1, None);
        assert_eq!(disabled.get(&"k"), Err(None));
    }
}

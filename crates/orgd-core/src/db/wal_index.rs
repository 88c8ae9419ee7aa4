//! The WAL-index header of a SQLite database, read where SQLite keeps it: the first bytes of
//! the `-shm` file, which every connection to the database (of any process) maps and updates
//! on each commit (its `iChange` counter is "incremented with each transaction",
//! https://www.sqlite.org/walformat.html).
//!
//! The header is mapped into this process too, so reading it is a memory read rather than a
//! `pread` (three of the five system calls of a cached request were those reads).
//!
//! A connection of its own (the keeper) stays open for as long as the index is used. SQLite
//! deletes the `-shm` file when the last connection to the database closes and creates a new
//! one on the next open, and the first connection to open it truncates it to 3 bytes before
//! initialising it. A pool may close every connection it has (idle timeout, lifetime); with
//! the keeper open neither happens, so the mapped file is the one every writer updates, and
//! its first page never shrinks (reading it cannot fault).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Mutex;

use sqlx::{AnyConnection, Executor};

pub(crate) const HEADER_BYTES: usize = 48;

pub(crate) type Header = [u8; HEADER_BYTES];

pub(crate) struct WalIndex {
    header: NonNull<u8>,
    _shm: File,
    /// Keeps the `-shm` file in place (see the module's comment); never used for queries.
    _keeper: Option<Mutex<AnyConnection>>,
}

// SAFETY: the mapping is read-only and only ever read with volatile reads of plain bytes; the
// pointer is not tied to a thread.
unsafe impl Send for WalIndex {}
// SAFETY: as above; concurrent reads of shared memory are sound for bytes.
unsafe impl Sync for WalIndex {}

impl WalIndex {
    /// The index of the database file `db_path`, kept in place by `keeper` (a connection to
    /// it in WAL mode). `None` when it cannot be mapped: nothing is cached then.
    pub(crate) async fn open(
        mut keeper: AnyConnection,
        db_path: &Path,
    ) -> Result<Option<Self>, sqlx::Error> {
        // A read in WAL mode creates and initialises the index if nobody had.
        keeper.execute("SELECT COUNT(*) FROM sqlite_master").await?;
        Ok(Self::map(&shm_path(db_path), Some(keeper)))
    }

    /// Maps the header of the `-shm` file at `shm` (the cache's tests write one by hand).
    pub(crate) fn map(shm: &Path, keeper: Option<AnyConnection>) -> Option<Self> {
        let file = File::open(shm).ok()?;
        if file.metadata().ok()?.len() < HEADER_BYTES as u64 {
            return None;
        }
        // SAFETY: a fresh read-only shared mapping of a file this struct keeps open; the file
        // never shrinks below its first page while the keeper is open (module comment), and
        // the mapping is unmapped only in `drop`.
        let mapped = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                HEADER_BYTES,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::SHARED,
                &file,
                0,
            )
        }
        .ok()?;
        Some(Self {
            header: NonNull::new(mapped.cast())?,
            _shm: file,
            _keeper: keeper.map(Mutex::new),
        })
    }

    /// The header as it is now, or `None` while the index is not initialised (its `isInit`
    /// byte is 0): such a header says nothing reliable.
    pub(crate) fn header(&self) -> Option<Header> {
        // SAFETY: the mapping is at least HEADER_BYTES long and lives as long as `self`;
        // volatile, because other connections and processes write it.
        let header: Header =
            unsafe { std::ptr::read_volatile(self.header.as_ptr().cast::<Header>()) };
        (header[12] == 1).then_some(header)
    }
}

impl Drop for WalIndex {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, not used after this.
        let _ = unsafe { rustix::mm::munmap(self.header.as_ptr().cast(), HEADER_BYTES) };
    }
}

fn shm_path(db_path: &Path) -> PathBuf {
    let mut shm = db_path.as_os_str().to_owned();
    shm.push("-shm");
    PathBuf::from(shm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::any::AnyConnectOptions;
    use sqlx::{ConnectOptions, Connection};
    use std::str::FromStr;

    async fn connect(url: &str) -> AnyConnection {
        AnyConnectOptions::from_str(url)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    #[test]
    fn reads_what_is_written_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let shm = dir.path().join("x.db-shm");
        let mut header = [0u8; 96];
        std::fs::write(&shm, header).unwrap();
        let index = WalIndex::map(&shm, None).unwrap();
        assert_eq!(index.header(), None, "not initialised");
        header[12] = 1;
        header[8] = 7;
        std::fs::write(&shm, header).unwrap();
        assert_eq!(index.header().unwrap()[8], 7);
    }

    /// Another process's connections come and go (each the last besides the keeper): every
    /// commit they make still moves the mapped header.
    #[tokio::test]
    async fn commits_of_connections_that_come_and_go_move_the_header() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut keeper = connect(&url).await;
        keeper.execute("PRAGMA journal_mode = WAL").await.unwrap();
        let index = WalIndex::open(keeper, &path).await.unwrap().unwrap();
        let mut seen = vec![index.header().unwrap()];
        for statement in [
            "CREATE TABLE t (x INTEGER)",
            "INSERT INTO t VALUES (1)",
            "INSERT INTO t VALUES (2)",
        ] {
            let mut conn = connect(&url).await;
            conn.execute(statement).await.unwrap();
            conn.close().await.unwrap();
            let now = index.header().unwrap();
            assert!(!seen.contains(&now), "{statement} did not move the header");
            seen.push(now);
        }
    }
}

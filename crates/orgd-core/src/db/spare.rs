//! Connections kept aside for the hot path's live reads on PostgreSQL: an organization's
//! counters, read on every request (`organizations::Organizations`, shared by `coalesce`).
//!
//! Through the pool, such a one-row read cost the database three round trips — the pool
//! tests a connection when it hands it out and again when it comes back — and woke a
//! different, cache-cold backend each time, as the pool hands out its idle connections in
//! turn. A spare is used most-recently-returned first and without those tests. A read that
//! fails on one closes it and runs again through the pool, whose tests apply: a spare that
//! died while idle costs one retry, never a failed or wrong answer. A read cancelled midway
//! closes its spare too (its state is unknown) and frees its place.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use sqlx::{AnyConnection, Connection};

/// Spares open at most (idle or in use). Past that a live read uses the pool: one read is in
/// flight per busy organization, so this covers a few organizations under load at once.
const MAX_SPARES: usize = 4;

#[derive(Default)]
pub(super) struct Spares {
    /// Most recently returned last.
    idle: Mutex<Vec<AnyConnection>>,
    /// Spares in existence, idle or in use (each in use is held by a `Place`).
    open: AtomicUsize,
}

/// What `Spares::take` found.
pub(super) enum Taken<'a> {
    Idle(Spare<'a>),
    /// No idle spare, but room to open one.
    Room(Place<'a>),
    Full,
}

impl Spares {
    pub(super) fn take(&self) -> Taken<'_> {
        if let Some(conn) = self.lock().pop() {
            return Taken::Idle(Spare {
                conn,
                place: Place { spares: self },
            });
        }
        // The place is counted before connecting, so readers racing here never open more.
        match self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < MAX_SPARES).then_some(open + 1)
            }) {
            Ok(_) => Taken::Room(Place { spares: self }),
            Err(_) => Taken::Full,
        }
    }

    /// Closes the idle spares (shutdown).
    pub(super) async fn close(&self) {
        let idle = std::mem::take(&mut *self.lock());
        for conn in idle {
            self.open.fetch_sub(1, Ordering::AcqRel);
            let _ = conn.close().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<AnyConnection>> {
        // A push or a pop cannot leave the list torn, whatever panicked elsewhere.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One of the `MAX_SPARES` places, held while a spare is in use or being opened; freed when
/// dropped.
pub(super) struct Place<'a> {
    spares: &'a Spares,
}

impl<'a> Place<'a> {
    pub(super) fn hold(self, conn: AnyConnection) -> Spare<'a> {
        Spare { conn, place: self }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.spares.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A spare in use. `give_back` returns it to the idle list after a read; dropped otherwise —
/// after a failed read, or a read cancelled midway, when its state is unknown — it is closed
/// and its place freed.
pub(super) struct Spare<'a> {
    pub(super) conn: AnyConnection,
    place: Place<'a>,
}

impl Spare<'_> {
    pub(super) fn give_back(self) {
        let Spare { conn, place } = self;
        place.spares.lock().push(conn);
        // The idle connection keeps its place among the open ones.
        std::mem::forget(place);
    }
}

#[cfg(test)]
mod tests {
    use super::MAX_SPARES;
    use crate::db::{Backend, Db};
    use crate::testing::{TestDb, databases};

    /// A PostgreSQL database, when this run was given one (spares exist only there).
    async fn postgres() -> Option<TestDb> {
        databases()
            .await
            .into_iter()
            .find(|test_db| test_db.db.backend() == Backend::Postgres)
    }

    /// The application name of the connection `db.read_live` ran on.
    async fn read_on(db: &Db) -> String {
        let row = db
            .read_live(|| {
                sqlx::query("SELECT CAST(current_setting('application_name') AS TEXT) AS name")
            })
            .await
            .expect("live read")
            .expect("one row");
        sqlx::Row::get(&row, "name")
    }

    /// The application name of `db`'s spares.
    fn spare_name(db: &Db) -> String {
        format!("{}-live", db.cache_channel().expect("PostgreSQL"))
    }

    async fn terminate(db: &Db, name: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1) AS killed",
        )
        .bind(name)
        .fetch_one(db.pool())
        .await
        .expect("terminate")
    }

    #[tokio::test]
    async fn a_spare_that_died_while_idle_costs_a_retry_not_an_answer() {
        let Some(test_db) = postgres().await else {
            return;
        };
        let db = &test_db.db;
        let spare = spare_name(db);
        assert_eq!(read_on(db).await, spare, "the first read opens a spare");
        assert_eq!(read_on(db).await, spare, "and the next one reuses it");
        assert_eq!(
            terminate(db, &spare).await,
            1,
            "one spare for sequential reads"
        );
        // The dead spare fails the read, which is answered through the pool instead.
        assert_ne!(read_on(db).await, spare);
        assert_eq!(read_on(db).await, spare, "a new spare takes its place");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_cancelled_midway_free_their_spares() {
        let Some(test_db) = postgres().await else {
            return;
        };
        let db = &test_db.db;
        // As many reads as there are spares, each dropped while its query runs.
        let cancelled: Vec<_> = (0..MAX_SPARES)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move {
                    tokio::time::timeout(
                        std::time::Duration::from_millis(300),
                        db.read_live(|| sqlx::query("SELECT 1 AS one, pg_sleep(5)")),
                    )
                    .await
                })
            })
            .collect();
        for read in cancelled {
            assert!(read.await.expect("task").is_err(), "the read was cancelled");
        }
        // Their places are free again: the next read runs on a (new) spare, not the pool.
        assert_eq!(read_on(db).await, spare_name(db));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_live_reads_open_at_most_the_spares_allowed() {
        let Some(test_db) = postgres().await else {
            return;
        };
        let db = &test_db.db;
        let reads = (0..32).map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                db.read_live(|| {
                    sqlx::query("SELECT CAST($1 AS BIGINT) AS i, pg_sleep(0.05)").bind(i)
                })
                .await
                .map(|row| row.map(|row| sqlx::Row::get::<i64, _>(&row, "i")))
            })
        });
        for (i, read) in reads.collect::<Vec<_>>().into_iter().enumerate() {
            let answer = read.await.expect("task").expect("live read");
            assert_eq!(answer, Some(i as i64), "each read gets its own answer");
        }
        let spare = spare_name(db);
        let open: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(&spare)
                .fetch_one(db.pool())
                .await
                .expect("count");
        assert!(
            (1..=MAX_SPARES as i64).contains(&open),
            "{open} spares open"
        );
    }
}

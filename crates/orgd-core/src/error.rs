//! The one error type of the core: what went wrong below the domain rules. Refusals a rule
//! makes (a limit, a conflict) are typed outcomes of the operation, not errors.

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A unique constraint refused the write; carries the database's description of it.
    #[error("unique constraint violated: {0}")]
    Conflict(String),
    /// The database could not be reached, did not answer in time, or could not take the
    /// write (disk full, lock or statement timeout): the caller may retry later.
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("database error: {0}")]
    Db(sqlx::Error),
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for CoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict(
                db.constraint()
                    .map_or_else(|| db.message().to_string(), str::to_string),
            ),
            _ if is_outage(&e) => Self::Unavailable(e),
            _ => Self::Db(e),
        }
    }
}

/// Whether `e` says the database is out of reach or out of room, rather than that the
/// query was wrong: the pool, the link, timeouts, locks, a full disk, a server shutting down.
fn is_outage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                postgres_outage(pg.code())
            } else {
                db.try_downcast_ref::<sqlx::sqlite::SqliteError>()
                    .and_then(sqlx::error::DatabaseError::code)
                    .and_then(|code| code.parse::<i32>().ok())
                    .is_some_and(sqlite_outage)
            }
        }
        _ => false,
    }
}

/// SQLSTATE classes and codes of an unreachable, overloaded or timed-out PostgreSQL:
/// connection exceptions (08), insufficient resources (53), operator intervention (57:
/// statement timeout, shutdown), system errors (58), lock timeout (55P03), idle-in-transaction
/// timeout (25P03), and serialization failures or deadlocks (40001, 40P01) a retry resolves.
fn postgres_outage(code: &str) -> bool {
    ["08", "53", "57", "58"]
        .iter()
        .any(|class| code.starts_with(class))
        || ["55P03", "25P03", "40001", "40P01"].contains(&code)
}

/// SQLite primary result codes (the low byte of an extended code) of a busy, locked,
/// unwritable or failing database: BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN,
/// PROTOCOL.
fn sqlite_outage(code: i32) -> bool {
    matches!(code & 0xff, 5 | 6 | 7 | 8 | 10 | 13 | 14 | 15)
}

impl CoreError {
    /// The same error for another caller of a shared read (`db::coalesce`): same class, so
    /// the same answer (503 for an outage), with the database's words as text.
    pub(crate) fn again(&self) -> Self {
        let text = |e: &sqlx::Error| sqlx::Error::Protocol(e.to_string());
        match self {
            Self::Conflict(what) => Self::Conflict(what.clone()),
            Self::Unavailable(e) => Self::Unavailable(text(e)),
            Self::Db(e) => Self::Db(text(e)),
            Self::Corrupt(what) => Self::Corrupt(what.clone()),
        }
    }

    /// True when the violated constraint mentions `needle` (a column or constraint name).
    pub fn is_conflict_on(&self, needle: &str) -> bool {
        matches!(self, Self::Conflict(what) if what.contains(needle))
    }

    /// True when the database was out of reach rather than the request wrong.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

pub type StoreResult<T> = Result<T, CoreError>;

pub type CoreResult<T> = Result<T, CoreError>;

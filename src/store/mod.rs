//! The service's view of the database: the core's `Db` with the read caches of the hot
//! path, and the per-domain query traits implemented on it.

use std::ops::Deref;

use orgd_core::db::Db;

pub use orgd_core::db::{Backend, DbTimeouts, PoolStats, Tx, flag};
pub use orgd_core::error::{CoreError, CoreResult};

use crate::analysis::store::AnalysisStore;
use crate::executions::store::ExecutionStore;
use crate::integrations::store::IntegrationStore;

/// Everything the service needs from its database.
pub trait Store: ExecutionStore + IntegrationStore + AnalysisStore + Deref<Target = Db> {}
impl<T: ExecutionStore + IntegrationStore + AnalysisStore + Deref<Target = Db>> Store for T {}

pub struct SqlStore {
    db: Db,
}

impl SqlStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

impl Deref for SqlStore {
    type Target = Db;
    fn deref(&self) -> &Db {
        &self.db
    }
}

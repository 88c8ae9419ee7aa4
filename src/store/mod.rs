//! The service's view of the database: the core's `Db` with the read caches of the hot
//! path, and the per-domain query traits implemented on it.

use std::ops::Deref;
use std::sync::Arc;

use orgd_core::db::Db;
use orgd_core::db::cache::ReadCache;

pub use orgd_core::db::{Backend, DbTimeouts, PoolStats, Tx, flag};
pub use orgd_core::error::{CoreError, CoreResult};

use crate::analysis::store::AnalysisStore;
use crate::auth::store::{AuthStore, UserRecord};
use crate::executions::store::ExecutionStore;
use crate::integrations::store::IntegrationStore;
use crate::members::store::MemberStore;

/// Everything the service needs from its database.
pub trait Store:
    AuthStore + MemberStore + ExecutionStore + IntegrationStore + AnalysisStore + Deref<Target = Db>
{
}
impl<
    T: AuthStore
        + MemberStore
        + ExecutionStore
        + IntegrationStore
        + AnalysisStore
        + Deref<Target = Db>,
> Store for T
{
}

pub struct SqlStore {
    db: Db,
    /// Who a (user id, token id) is and whether the token was revoked.
    pub(crate) identities: Arc<ReadCache<(String, String), (UserRecord, bool)>>,
}

impl SqlStore {
    pub fn new(db: Db) -> Self {
        Self {
            identities: Arc::new(db.read_cache()),
            db,
        }
    }
}

impl Deref for SqlStore {
    type Target = Db;
    fn deref(&self) -> &Db {
        &self.db
    }
}

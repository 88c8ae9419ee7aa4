//! Storage: report bytes are counted against `maxStorageBytes` before they are written, by one
//! conditional UPDATE, as if the file they replace were already gone; the counter holds the
//! reservation until the file is recorded or the reservation released.

use crate::db::Tx;
use crate::error::CoreResult;
use crate::plans::Limits;

/// The reservation did not fit: what is used and the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageLimit {
    pub used: i64,
    pub limit: i64,
}

/// Reserves `bytes` (replacing a file of `replaced` bytes) on the organization's counter.
pub async fn reserve(
    tx: &mut Tx,
    organization_id: &str,
    limits: &Limits,
    bytes: i64,
    replaced: i64,
) -> CoreResult<Result<(), StorageLimit>> {
    let limit = limits.max_storage_bytes.unwrap_or(i64::MAX);
    let reserved = sqlx::query(
        "UPDATE organizations SET storage_used_bytes = storage_used_bytes + $2
         WHERE id = $1 AND storage_used_bytes + $2 - $3 <= $4",
    )
    .bind(organization_id)
    .bind(bytes)
    .bind(replaced)
    .bind(limit)
    .execute(&mut **tx)
    .await?;
    if reserved.rows_affected() == 1 {
        return Ok(Ok(()));
    }
    let used: i64 =
        sqlx::query_scalar("SELECT storage_used_bytes FROM organizations WHERE id = $1")
            .bind(organization_id)
            .fetch_one(&mut **tx)
            .await?;
    Ok(Err(StorageLimit { used, limit }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plans::Overrides;
    use crate::plans::Plan;
    use crate::testing::{databases, organization};

    async fn used(tx: &mut Tx, org: &str) -> i64 {
        sqlx::query_scalar("SELECT storage_used_bytes FROM organizations WHERE id = $1")
            .bind(org)
            .fetch_one(&mut **tx)
            .await
            .expect("counter")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reservations_fit_the_limit_counting_the_replaced_file_as_gone() {
        for test in databases().await {
            let db = &test.db;
            let org = organization(db, "free", r#"{"maxStorageBytes":100}"#).await;
            let limits = Overrides::from_json(r#"{"maxStorageBytes":100}"#)
                .expect("overrides")
                .apply(Plan::Free.defaults());
            let mut tx = db.begin_write().await.expect("tx");
            assert_eq!(
                reserve(&mut tx, &org, &limits, 60, 0).await.expect("rule"),
                Ok(())
            );
            assert_eq!(
                reserve(&mut tx, &org, &limits, 50, 0).await.expect("rule"),
                Err(StorageLimit {
                    used: 60,
                    limit: 100
                })
            );
            // Replacing a 20-byte file with 60 bytes needs 40 more: 60 + 60 - 20 = 100 fits.
            assert_eq!(
                reserve(&mut tx, &org, &limits, 60, 20).await.expect("rule"),
                Ok(())
            );
            assert_eq!(
                used(&mut tx, &org).await,
                120,
                "the reservation holds both until committed"
            );
            assert_eq!(
                reserve(&mut tx, &org, &limits, 1, 0).await.expect("rule"),
                Err(StorageLimit {
                    used: 120,
                    limit: 100
                })
            );
            tx.rollback().await.expect("rollback");
        }
    }
}

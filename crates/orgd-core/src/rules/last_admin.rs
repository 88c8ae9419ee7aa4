//! An organization always keeps an active admin: a role change, a removal or a move to
//! another organization that would take the last one away is refused.

use crate::db::Tx;
use crate::error::CoreResult;
use crate::users::{Role, UserRecord};

async fn active_admins(tx: &mut Tx, organization_id: &str) -> CoreResult<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM users WHERE organization_id = $1 AND role = 'admin' AND status = 'active'",
    )
    .bind(organization_id)
    .fetch_one(&mut **tx)
    .await?)
}

/// True when taking `target`'s active admin role away (a demotion, a removal, a move to
/// another organization) would leave their organization without an active admin. Callers
/// hold the organization's lock, so the count cannot change before their write.
pub async fn would_orphan(tx: &mut Tx, target: &UserRecord) -> CoreResult<bool> {
    let active_admin = target.role == Role::Admin && target.status == "active";
    Ok(active_admin && active_admins(tx, &target.organization_id).await? <= 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{databases, member, organization};

    async fn user(tx: &mut Tx, id: &str) -> UserRecord {
        let sql = format!(
            "SELECT {} FROM users u WHERE u.id = $1",
            crate::users::USER_COLUMNS
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_one(&mut **tx)
            .await
            .expect("user")
    }

    async fn orphans(tx: &mut Tx, id: &str) -> bool {
        let target = user(tx, id).await;
        would_orphan(tx, &target).await.expect("rule")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_the_last_active_admin_is_protected() {
        for test in databases().await {
            let db = &test.db;
            let org = organization(db, "free", "{}").await;
            let first = member(db, &org, "admin").await;
            let developer = member(db, &org, "developer").await;
            let mut tx = db.begin_write().await.expect("tx");
            assert!(orphans(&mut tx, &first).await);
            assert!(!orphans(&mut tx, &developer).await);
            tx.rollback().await.expect("rollback");

            let second = member(db, &org, "admin").await;
            let mut tx = db.begin_write().await.expect("tx");
            assert!(!orphans(&mut tx, &first).await);
            // A suspended admin does not count as the one that is kept.
            sqlx::query("UPDATE users SET status = 'suspended' WHERE id = $1")
                .bind(&second)
                .execute(&mut *tx)
                .await
                .expect("suspend");
            assert!(orphans(&mut tx, &first).await);
            tx.rollback().await.expect("rollback");
        }
    }
}

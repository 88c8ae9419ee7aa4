//! Projects: an organization has at most `maxProjects`.

use crate::db::Tx;
use crate::error::CoreResult;
use crate::plans::Limits;

/// The project limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectLimit {
    pub limit: i64,
    pub current: i64,
}

/// Whether one more project fits, as `tx` sees the organization (lock it first).
pub async fn admit(
    tx: &mut Tx,
    organization_id: &str,
    limits: &Limits,
) -> CoreResult<Result<(), ProjectLimit>> {
    let Some(limit) = limits.max_projects else {
        return Ok(Ok(()));
    };
    let current: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM projects WHERE organization_id = $1")
            .bind(organization_id)
            .fetch_one(&mut **tx)
            .await?;
    Ok(if current >= limit {
        Err(ProjectLimit { limit, current })
    } else {
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plans::Plan;
    use crate::testing::{NOW, databases, organization};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_free_plan_has_one_project() {
        for test in databases().await {
            let db = &test.db;
            let org = organization(db, "free", "{}").await;
            let limits = Plan::Free.defaults();
            let mut tx = db.begin_write().await.expect("tx");
            assert_eq!(admit(&mut tx, &org, &limits).await.expect("rule"), Ok(()));
            sqlx::query("INSERT INTO projects (id, organization_id, name, slug, created_at) VALUES ($1, $2, 'web', 'web', $3)")
                .bind(crate::ids::new_id(NOW))
                .bind(&org)
                .bind(NOW)
                .execute(&mut *tx)
                .await
                .expect("project");
            assert_eq!(
                admit(&mut tx, &org, &limits).await.expect("rule"),
                Err(ProjectLimit {
                    limit: 1,
                    current: 1
                })
            );
            assert_eq!(
                admit(&mut tx, &org, &Plan::Enterprise.defaults())
                    .await
                    .expect("rule"),
                Ok(())
            );
            tx.rollback().await.expect("rollback");
        }
    }
}

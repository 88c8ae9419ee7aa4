//! Run limits: no more runs created in a calendar month than `maxTestRuns` (deleted runs still
//! count), and no more PENDING or RUNNING at once than `maxConcurrentRuns`.

use super::run_counts;
use crate::db::Tx;
use crate::error::CoreResult;
use crate::executions::Status;
use crate::plans::Limits;
use crate::usage::Period;

/// The runs that hold a concurrency slot.
const ACTIVE: [Status; 2] = [Status::Pending, Status::Running];

/// Why a new run is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunRefusal {
    Monthly { used: i64, limit: i64 },
    Concurrent { active: i64, limit: i64 },
}

/// Whether one more run fits `limits` in `period`, as `tx` sees the organization (lock it
/// first; its runs are inserted under the same lock). The monthly limit is checked first.
pub async fn admit(
    tx: &mut Tx,
    organization_id: &str,
    limits: &Limits,
    period: &Period,
) -> CoreResult<Result<(), RunRefusal>> {
    if let Some(limit) = limits.max_test_runs {
        let used: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(test_runs), 0) FROM usage_counters WHERE organization_id = $1 AND period = $2",
        )
        .bind(organization_id)
        .bind(&period.key)
        .fetch_one(&mut **tx)
        .await?;
        if used >= limit {
            return Ok(Err(RunRefusal::Monthly { used, limit }));
        }
    }
    if let Some(limit) = limits.max_concurrent_runs {
        let active = run_counts::live(&mut **tx, organization_id, &ACTIVE).await?;
        if active >= limit {
            return Ok(Err(RunRefusal::Concurrent { active, limit }));
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plans::Plan;
    use crate::testing::{NOW, databases, organization};

    async fn run(tx: &mut Tx, org: &str, status: &str, deleted: bool) {
        sqlx::query(
            "INSERT INTO executions (id, organization_id, task_id, project_id, status, trigger_source, group_name,
                                     error, output, report_bytes, created_by, created_at, started_at, finished_at, deleted_at)
             VALUES ($1, $2, $1, NULL, $3, NULL, NULL, NULL, NULL, 0, 'x', $4, NULL, NULL, $5)",
        )
        .bind(crate::ids::new_id(NOW))
        .bind(org)
        .bind(status)
        .bind(NOW)
        .bind(deleted.then_some(NOW))
        .execute(&mut **tx)
        .await
        .expect("run");
        if !deleted {
            let status = Status::parse(status);
            run_counts::moved(tx, org, None, status)
                .await
                .expect("counted");
        }
    }

    async fn count_month(tx: &mut Tx, org: &str, period: &Period, runs: i64) {
        sqlx::query("INSERT INTO usage_counters (organization_id, period, test_runs, ai_analyses) VALUES ($1, $2, $3, 0)")
            .bind(org)
            .bind(&period.key)
            .bind(runs)
            .execute(&mut **tx)
            .await
            .expect("counter");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_month_is_checked_before_the_concurrency() {
        for test in databases().await {
            let db = &test.db;
            let org = organization(db, "free", "{}").await;
            let limits = Plan::Free.defaults();
            let period = Period::containing(NOW);
            let mut tx = db.begin_write().await.expect("tx");
            assert_eq!(
                admit(&mut tx, &org, &limits, &period).await.expect("rule"),
                Ok(())
            );
            run(&mut tx, &org, "RUNNING", false).await;
            assert_eq!(
                admit(&mut tx, &org, &limits, &period).await.expect("rule"),
                Err(RunRefusal::Concurrent {
                    active: 1,
                    limit: 1
                })
            );
            count_month(&mut tx, &org, &period, 100).await;
            assert_eq!(
                admit(&mut tx, &org, &limits, &period).await.expect("rule"),
                Err(RunRefusal::Monthly {
                    used: 100,
                    limit: 100
                })
            );
            // Next month starts afresh; a deleted or finished run holds no slot.
            sqlx::query("UPDATE executions SET status = 'PASSED' WHERE organization_id = $1")
                .bind(&org)
                .execute(&mut *tx)
                .await
                .expect("finish");
            run_counts::recount(&mut tx, &org).await.expect("recount");
            run(&mut tx, &org, "PENDING", true).await;
            assert_eq!(
                admit(&mut tx, &org, &limits, &period.next())
                    .await
                    .expect("rule"),
                Ok(())
            );
            tx.rollback().await.expect("rollback");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unlimited_runs_are_never_refused() {
        for test in databases().await {
            let db = &test.db;
            let org = organization(
                db,
                "enterprise",
                r#"{"maxTestRuns":null,"maxConcurrentRuns":null}"#,
            )
            .await;
            let limits = crate::plans::Overrides::from_json(
                r#"{"maxTestRuns":null,"maxConcurrentRuns":null}"#,
            )
            .expect("overrides")
            .apply(Plan::Enterprise.defaults());
            let period = Period::containing(NOW);
            let mut tx = db.begin_write().await.expect("tx");
            count_month(&mut tx, &org, &period, 1_000_000).await;
            for _ in 0..30 {
                run(&mut tx, &org, "RUNNING", false).await;
            }
            assert_eq!(
                admit(&mut tx, &org, &limits, &period).await.expect("rule"),
                Ok(())
            );
            tx.rollback().await.expect("rollback");
        }
    }
}

//! Run counters: `execution_counts` holds, per organization and status, how many live (not
//! deleted) executions there are. Every transaction that creates, moves or deletes a run
//! calls `moved` before it commits, so the counters are exact at every commit and a list's
//! `total` (or the concurrency check) is a lookup, not a count over the whole history.
//! `recount` re-derives them from the executions (`orgd usage reconcile`).

use std::collections::BTreeMap;

use sqlx::Row;

use crate::db::Tx;
use crate::error::CoreResult;
use crate::executions::Status;

/// Records that one run of `organization_id` left status `from` (`None`: it did not exist)
/// for `to` (`None`: it was deleted). Moving to the same status changes nothing.
pub async fn moved(
    tx: &mut Tx,
    organization_id: &str,
    from: Option<Status>,
    to: Option<Status>,
) -> CoreResult<()> {
    if from == to {
        return Ok(());
    }
    for (status, delta) in [(from, -1_i64), (to, 1)] {
        let Some(status) = status else { continue };
        sqlx::query(
            "INSERT INTO execution_counts (organization_id, status, live) VALUES ($1, $2, $3)
             ON CONFLICT (organization_id, status) DO UPDATE SET live = execution_counts.live + $3",
        )
        .bind(organization_id)
        .bind(status.as_str())
        .bind(delta)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Live runs of `organization_id` in any of `statuses`, or in any status when it is empty.
pub async fn live<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    organization_id: &str,
    statuses: &[Status],
) -> CoreResult<i64> {
    let rows = sqlx::query("SELECT status, live FROM execution_counts WHERE organization_id = $1")
        .bind(organization_id)
        .fetch_all(db)
        .await?;
    let mut total = 0;
    for row in &rows {
        let status: String = row.try_get("status")?;
        let counted = statuses.is_empty() || statuses.iter().any(|s| s.as_str() == status);
        if counted {
            total += row.try_get::<i64, _>("live")?;
        }
    }
    Ok(total)
}

/// A counter that did not match the executions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountFix {
    pub status: String,
    pub before: i64,
    pub after: i64,
}

/// Sets the organization's counters to its live executions per status, returning what
/// changed. Every counter row is locked before the runs are counted: a move that already
/// counted itself has committed by then (and is seen), one that has not waits for this
/// transaction and then adds its change to the recounted value.
pub async fn recount(tx: &mut Tx, organization_id: &str) -> CoreResult<Vec<CountFix>> {
    for status in Status::ALL {
        sqlx::query(
            "INSERT INTO execution_counts (organization_id, status, live) VALUES ($1, $2, 0)
             ON CONFLICT (organization_id, status) DO NOTHING",
        )
        .bind(organization_id)
        .bind(status.as_str())
        .execute(&mut **tx)
        .await?;
    }
    let lock = tx.row_lock();
    let counted = counts(
        tx,
        &format!("SELECT status, live AS n FROM execution_counts WHERE organization_id = $1{lock}"),
        organization_id,
    )
    .await?;
    let actual = counts(
        tx,
        "SELECT status, COUNT(*) AS n FROM executions
         WHERE organization_id = $1 AND deleted_at IS NULL GROUP BY status",
        organization_id,
    )
    .await?;
    let mut fixes = Vec::new();
    let statuses: std::collections::BTreeSet<&String> =
        actual.keys().chain(counted.keys()).collect();
    for status in statuses {
        let before = counted.get(status).copied().unwrap_or(0);
        let after = actual.get(status).copied().unwrap_or(0);
        if before == after {
            continue;
        }
        sqlx::query(
            "INSERT INTO execution_counts (organization_id, status, live) VALUES ($1, $2, $3)
             ON CONFLICT (organization_id, status) DO UPDATE SET live = $3",
        )
        .bind(organization_id)
        .bind(status)
        .bind(after)
        .execute(&mut **tx)
        .await?;
        fixes.push(CountFix {
            status: status.clone(),
            before,
            after,
        });
    }
    Ok(fixes)
}

async fn counts(
    tx: &mut Tx,
    sql: &str,
    organization_id: &str,
) -> CoreResult<BTreeMap<String, i64>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(organization_id)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("status")?, row.try_get("n")?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{NOW, databases, organization};
    use Status::*;

    async fn insert_run(tx: &mut Tx, org: &str, status: Status) {
        sqlx::query(
            "INSERT INTO executions (id, organization_id, task_id, status, created_at)
             VALUES ($1, $2, $1, $3, $4)",
        )
        .bind(crate::ids::new_id(NOW))
        .bind(org)
        .bind(status.as_str())
        .bind(NOW)
        .execute(&mut **tx)
        .await
        .expect("run");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counters_follow_creation_moves_and_deletes() {
        for test in databases().await {
            let db = &test.db;
            let org = organization(db, "free", "{}").await;
            let other = organization(db, "free", "{}").await;
            let mut tx = db.begin_write().await.expect("tx");
            assert_eq!(live(&mut *tx, &org, &[]).await.expect("live"), 0);
            for status in [Pending, Pending, Running] {
                moved(&mut tx, &org, None, Some(status)).await.expect("new");
            }
            moved(&mut tx, &other, None, Some(Failed))
                .await
                .expect("new");
            moved(&mut tx, &org, Some(Pending), Some(Failed))
                .await
                .expect("move");
            moved(&mut tx, &org, Some(Running), Some(Running))
                .await
                .expect("no move");
            moved(&mut tx, &org, Some(Pending), None)
                .await
                .expect("delete");
            assert_eq!(live(&mut *tx, &org, &[]).await.expect("live"), 2);
            assert_eq!(live(&mut *tx, &org, &[Running]).await.expect("live"), 1);
            assert_eq!(
                live(&mut *tx, &org, &[Failed, Pending])
                    .await
                    .expect("live"),
                1
            );
            assert_eq!(live(&mut *tx, &org, &[Passed]).await.expect("live"), 0);
            assert_eq!(live(&mut *tx, &other, &[]).await.expect("live"), 1);
            tx.commit().await.expect("commit");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recount_restores_the_counters_from_the_runs() {
        for test in databases().await {
            let db = &test.db;
            let org = organization(db, "free", "{}").await;
            let mut tx = db.begin_write().await.expect("tx");
            insert_run(&mut tx, &org, Passed).await;
            insert_run(&mut tx, &org, Passed).await;
            insert_run(&mut tx, &org, Running).await;
            // Counted wrong: one FAILED that does not exist, RUNNING not counted.
            moved(&mut tx, &org, None, Some(Failed))
                .await
                .expect("drift");
            moved(&mut tx, &org, None, Some(Passed))
                .await
                .expect("drift");
            let mut fixes = recount(&mut tx, &org).await.expect("recount");
            fixes.sort_by(|a, b| a.status.cmp(&b.status));
            let fix = |status: &str, before, after| CountFix {
                status: status.into(),
                before,
                after,
            };
            assert_eq!(
                fixes,
                vec![
                    fix("FAILED", 1, 0),
                    fix("PASSED", 1, 2),
                    fix("RUNNING", 0, 1)
                ]
            );
            assert_eq!(live(&mut *tx, &org, &[]).await.expect("live"), 3);
            assert!(recount(&mut tx, &org).await.expect("again").is_empty());
            tx.commit().await.expect("commit");
        }
    }
}

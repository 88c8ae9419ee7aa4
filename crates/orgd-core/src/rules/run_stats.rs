//! The counters kept with the runs, so the KPIs (`GET /api/analytics/kpis`) and the grouped
//! view (`GET /api/executions/grouped`) cost the same for an empty organization as for one
//! with a million runs: `run_stats` per organization and UTC month of creation (runs,
//! finished, passed, a sum and a count of durations) and `run_groups` per organization and
//! group (runs, passed, newest start time). Only live runs count: a delete takes its run out.
//!
//! Every change of a run goes through `record`, with what the run counted for before and
//! after it, inside the transaction that makes the change. `derive` computes the same
//! figures from the executions table (`orgd usage reconcile`).

use std::collections::BTreeMap;

use sqlx::{AssertSqlSafe, Row};

use crate::db::Tx;
use crate::error::CoreResult;
use crate::executions::{START_TIME_SQL, Status, duration_ms, start_time};
use crate::usage::Period;

/// What a run is, as far as the counters are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFacts {
    pub status: Status,
    pub group_name: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

impl RunFacts {
    fn period(&self) -> String {
        Period::containing(self.created_at).key
    }

    fn group_key(&self) -> &str {
        self.group_name.as_deref().unwrap_or("")
    }

    fn start_time(&self) -> i64 {
        start_time(self.created_at, self.started_at)
    }

    /// What this run adds to its month's counters.
    fn stats(&self) -> RunStats {
        let duration = duration_ms(self.created_at, self.started_at, self.finished_at);
        RunStats {
            total_runs: 1,
            finished_runs: i64::from(self.status.is_finished()),
            passed_runs: i64::from(self.status == Status::Passed),
            duration_sum_ms: duration.unwrap_or(0),
            duration_count: i64::from(duration.is_some()),
        }
    }
}

/// One month's counters of an organization.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    pub total_runs: i64,
    pub finished_runs: i64,
    pub passed_runs: i64,
    pub duration_sum_ms: i64,
    pub duration_count: i64,
}

impl RunStats {
    fn add(&mut self, other: &RunStats, sign: i64) {
        self.total_runs += sign * other.total_runs;
        self.finished_runs += sign * other.finished_runs;
        self.passed_runs += sign * other.passed_runs;
        self.duration_sum_ms += sign * other.duration_sum_ms;
        self.duration_count += sign * other.duration_count;
    }

    fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// passed / finished × 100, rounded to one decimal (half away from zero); 0 when no run
    /// has finished.
    pub fn success_rate(&self) -> f64 {
        if self.finished_runs <= 0 {
            return 0.0;
        }
        let tenths = (i128::from(self.passed_runs) * 2000 + i128::from(self.finished_runs))
            / (2 * i128::from(self.finished_runs));
        tenths as f64 / 10.0
    }

    /// The mean duration in whole milliseconds (rounded); 0 when no run has both times.
    pub fn avg_duration_ms(&self) -> i64 {
        if self.duration_count <= 0 {
            return 0;
        }
        (self.duration_sum_ms as f64 / self.duration_count as f64).round() as i64
    }
}

/// One group's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupStats {
    pub total_runs: i64,
    pub passed_runs: i64,
    pub last_run_at: i64,
}

/// Moves the organization's counters from what the run counted for `before` the change to
/// what it counts for `after` it: `(None, Some)` creates it, `(Some, Some)` changes it (its
/// status, its start), `(Some, None)` deletes it. Call it inside the transaction making the
/// change, after the change is written (a delete recomputes its group's newest start from the
/// live runs). Each counter moves by one upsert, so concurrent changes add up.
pub async fn record(
    tx: &mut Tx,
    org_id: &str,
    before: Option<&RunFacts>,
    after: Option<&RunFacts>,
) -> CoreResult<()> {
    let mut months: BTreeMap<String, RunStats> = BTreeMap::new();
    let mut groups: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (facts, sign) in [(before, -1), (after, 1)] {
        let Some(facts) = facts else { continue };
        months
            .entry(facts.period())
            .or_default()
            .add(&facts.stats(), sign);
        let group = groups.entry(facts.group_key().to_string()).or_default();
        group.0 += sign;
        group.1 += sign * i64::from(facts.status == Status::Passed);
    }
    for (period, delta) in &months {
        if delta.is_zero() {
            continue;
        }
        sqlx::query(
            "INSERT INTO run_stats (organization_id, period, total_runs, finished_runs, passed_runs, duration_sum_ms, duration_count)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (organization_id, period) DO UPDATE SET
                total_runs = run_stats.total_runs + excluded.total_runs,
                finished_runs = run_stats.finished_runs + excluded.finished_runs,
                passed_runs = run_stats.passed_runs + excluded.passed_runs,
                duration_sum_ms = run_stats.duration_sum_ms + excluded.duration_sum_ms,
                duration_count = run_stats.duration_count + excluded.duration_count",
        )
        .bind(org_id)
        .bind(period)
        .bind(delta.total_runs)
        .bind(delta.finished_runs)
        .bind(delta.passed_runs)
        .bind(delta.duration_sum_ms)
        .bind(delta.duration_count)
        .execute(&mut **tx)
        .await?;
    }
    for (key, (total, passed)) in &groups {
        // The run is in this group after the change: its start may be the group's newest.
        let start = after
            .filter(|facts| facts.group_key() == key)
            .map(RunFacts::start_time);
        let start_before = before
            .filter(|facts| facts.group_key() == key)
            .map(RunFacts::start_time);
        if (*total, *passed) == (0, 0) && start == start_before {
            continue;
        }
        match start {
            Some(start) => {
                sqlx::query(
                    "INSERT INTO run_groups (organization_id, group_key, total_runs, passed_runs, last_run_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (organization_id, group_key) DO UPDATE SET
                        total_runs = run_groups.total_runs + excluded.total_runs,
                        passed_runs = run_groups.passed_runs + excluded.passed_runs,
                        last_run_at = CASE WHEN excluded.last_run_at > run_groups.last_run_at
                                           THEN excluded.last_run_at ELSE run_groups.last_run_at END",
                )
                .bind(org_id)
                .bind(key)
                .bind(total)
                .bind(passed)
                .bind(start)
                .execute(&mut **tx)
                .await?;
            }
            None => leave_group(tx, org_id, key, *total, *passed).await?,
        }
    }
    Ok(())
}

/// A run left the group `key` (it was deleted): the counts go down, the newest start is read
/// again from the live runs (one step down the group's index), and a group without live runs
/// goes away.
async fn leave_group(
    tx: &mut Tx,
    org_id: &str,
    key: &str,
    total: i64,
    passed: i64,
) -> CoreResult<()> {
    let newest = format!(
        "SELECT {START_TIME_SQL} FROM executions
         WHERE organization_id = $1 AND {group} AND deleted_at IS NULL
         ORDER BY {START_TIME_SQL} DESC LIMIT 1",
        group = group_condition(key, "$4"),
    );
    let sql = format!(
        "UPDATE run_groups SET total_runs = total_runs + $2, passed_runs = passed_runs + $3,
            last_run_at = COALESCE(({newest}), last_run_at)
         WHERE organization_id = $1 AND group_key = $4"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(org_id)
        .bind(total)
        .bind(passed)
        .bind(key)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "DELETE FROM run_groups WHERE organization_id = $1 AND group_key = $2 AND total_runs <= 0",
    )
    .bind(org_id)
    .bind(key)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The executions of the group `key` (`''`: without a group), its name bound at `param`
/// (unused for `''`). Written so the group index applies (`group_name IS NULL`, not a
/// comparison with `''`).
pub fn group_condition(key: &str, param: &str) -> String {
    if key.is_empty() {
        "group_name IS NULL".to_string()
    } else {
        format!("group_name = {param}")
    }
}

/// One organization's counters as the executions table says they should be: each month's
/// `RunStats` and each group's `GroupStats`, live runs only, each run counted by the same
/// `RunFacts` as `record` uses. Streams every live run of the organization (reconcile only).
pub async fn derive(
    tx: &mut Tx,
    org_id: &str,
) -> CoreResult<(BTreeMap<String, RunStats>, BTreeMap<String, GroupStats>)> {
    let mut rows = sqlx::query(
        "SELECT status, group_name, created_at, started_at, finished_at FROM executions
         WHERE organization_id = $1 AND deleted_at IS NULL",
    )
    .bind(org_id)
    .fetch(&mut **tx);
    let mut months: BTreeMap<String, RunStats> = BTreeMap::new();
    let mut groups: BTreeMap<String, GroupStats> = BTreeMap::new();
    while let Some(row) = std::future::poll_fn(|cx| rows.as_mut().poll_next(cx)).await {
        let row = row?;
        let status: String = row.try_get("status")?;
        let facts = RunFacts {
            status: Status::try_from(status).map_err(crate::error::CoreError::Corrupt)?,
            group_name: row.try_get("group_name")?,
            created_at: row.try_get("created_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
        };
        months
            .entry(facts.period())
            .or_default()
            .add(&facts.stats(), 1);
        let start = facts.start_time();
        let group = groups
            .entry(facts.group_key().to_string())
            .or_insert(GroupStats {
                total_runs: 0,
                passed_runs: 0,
                last_run_at: start,
            });
        group.total_runs += 1;
        group.passed_runs += i64::from(facts.status == Status::Passed);
        group.last_run_at = group.last_run_at.max(start);
    }
    Ok((months, groups))
}

/// The stored counters of one organization (reconcile only).
pub async fn stored(
    tx: &mut Tx,
    org_id: &str,
) -> CoreResult<(BTreeMap<String, RunStats>, BTreeMap<String, GroupStats>)> {
    let rows = sqlx::query(
        "SELECT period, total_runs, finished_runs, passed_runs, duration_sum_ms, duration_count
         FROM run_stats WHERE organization_id = $1",
    )
    .bind(org_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut months = BTreeMap::new();
    for row in &rows {
        months.insert(row.try_get("period")?, stats_from_row(row)?);
    }
    let rows = sqlx::query(
        "SELECT group_key, total_runs, passed_runs, last_run_at FROM run_groups WHERE organization_id = $1",
    )
    .bind(org_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut groups = BTreeMap::new();
    for row in &rows {
        groups.insert(
            row.try_get("group_key")?,
            GroupStats {
                total_runs: row.try_get("total_runs")?,
                passed_runs: row.try_get("passed_runs")?,
                last_run_at: row.try_get("last_run_at")?,
            },
        );
    }
    Ok((months, groups))
}

pub(crate) fn stats_from_row(row: &sqlx::any::AnyRow) -> CoreResult<RunStats> {
    Ok(RunStats {
        total_runs: row.try_get("total_runs")?,
        finished_runs: row.try_get("finished_runs")?,
        passed_runs: row.try_get("passed_runs")?,
        duration_sum_ms: row.try_get("duration_sum_ms")?,
        duration_count: row.try_get("duration_count")?,
    })
}

/// Sets one month's counters (`None`: removes the row).
pub async fn set_month(
    tx: &mut Tx,
    org_id: &str,
    period: &str,
    stats: Option<&RunStats>,
) -> CoreResult<()> {
    sqlx::query("DELETE FROM run_stats WHERE organization_id = $1 AND period = $2")
        .bind(org_id)
        .bind(period)
        .execute(&mut **tx)
        .await?;
    if let Some(s) = stats {
        sqlx::query(
            "INSERT INTO run_stats (organization_id, period, total_runs, finished_runs, passed_runs, duration_sum_ms, duration_count)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(org_id)
        .bind(period)
        .bind(s.total_runs)
        .bind(s.finished_runs)
        .bind(s.passed_runs)
        .bind(s.duration_sum_ms)
        .bind(s.duration_count)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Sets one group's counters (`None`: removes the row).
pub async fn set_group(
    tx: &mut Tx,
    org_id: &str,
    key: &str,
    stats: Option<&GroupStats>,
) -> CoreResult<()> {
    sqlx::query("DELETE FROM run_groups WHERE organization_id = $1 AND group_key = $2")
        .bind(org_id)
        .bind(key)
        .execute(&mut **tx)
        .await?;
    if let Some(g) = stats {
        sqlx::query(
            "INSERT INTO run_groups (organization_id, group_key, total_runs, passed_runs, last_run_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(org_id)
        .bind(key)
        .bind(g.total_runs)
        .bind(g.passed_runs)
        .bind(g.last_run_at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{NOW, databases, organization};

    const HOUR: i64 = 3_600_000;

    fn run(
        status: Status,
        group: Option<&str>,
        started: Option<i64>,
        finished: Option<i64>,
    ) -> RunFacts {
        RunFacts {
            status,
            group_name: group.map(str::to_string),
            created_at: NOW,
            started_at: started,
            finished_at: finished,
        }
    }

    /// Inserts the execution the facts describe (so a delete can recompute its group).
    async fn insert(tx: &mut Tx, org: &str, facts: &RunFacts, deleted: bool) -> String {
        let id = crate::ids::new_id(NOW);
        sqlx::query(
            "INSERT INTO executions (id, organization_id, task_id, status, group_name, report_bytes,
                                     created_at, started_at, finished_at, deleted_at)
             VALUES ($1, $2, $1, $3, $4, 0, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(org)
        .bind(facts.status.as_str())
        .bind(facts.group_name.as_deref())
        .bind(facts.created_at)
        .bind(facts.started_at)
        .bind(facts.finished_at)
        .bind(deleted.then_some(NOW))
        .execute(&mut **tx)
        .await
        .expect("insert execution");
        id
    }

    /// Writes the facts' status and times to the execution `id`.
    async fn update(tx: &mut Tx, id: &str, facts: &RunFacts) {
        sqlx::query(
            "UPDATE executions SET status = $2, started_at = $3, finished_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(facts.status.as_str())
        .bind(facts.started_at)
        .bind(facts.finished_at)
        .execute(&mut **tx)
        .await
        .expect("update");
    }

    async fn delete(tx: &mut Tx, id: &str) {
        sqlx::query("UPDATE executions SET deleted_at = $2 WHERE id = $1")
            .bind(id)
            .bind(NOW)
            .execute(&mut **tx)
            .await
            .expect("delete");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counters_follow_creation_finish_and_delete() {
        for test in databases().await {
            let db = &test.db;
            let org = organization(db, "team", "{}").await;
            let period = Period::containing(NOW).key;
            let mut tx = db.begin_write().await.expect("tx");

            // Created: a PENDING run without a group and a RUNNING one in "nightly".
            let pending = run(Status::Pending, None, None, None);
            let pending_id = insert(&mut tx, &org, &pending, false).await;
            record(&mut tx, &org, None, Some(&pending))
                .await
                .expect("record");
            let running = run(Status::Running, Some("nightly"), Some(NOW + HOUR), None);
            let running_id = insert(&mut tx, &org, &running, false).await;
            record(&mut tx, &org, None, Some(&running))
                .await
                .expect("record");

            // Finished: PASSED after 90 s, and the pending one FAILED without ever running.
            let passed = RunFacts {
                status: Status::Passed,
                finished_at: Some(NOW + HOUR + 90_000),
                ..running.clone()
            };
            update(&mut tx, &running_id, &passed).await;
            record(&mut tx, &org, Some(&running), Some(&passed))
                .await
                .expect("record");
            let failed = RunFacts {
                status: Status::Failed,
                finished_at: Some(NOW + 30_000),
                ..pending.clone()
            };
            update(&mut tx, &pending_id, &failed).await;
            record(&mut tx, &org, Some(&pending), Some(&failed))
                .await
                .expect("record");
            // A third run, still running: counted, not finished, no duration.
            let third = run(Status::Running, Some("nightly"), Some(NOW + 2 * HOUR), None);
            insert(&mut tx, &org, &third, false).await;
            record(&mut tx, &org, None, Some(&third))
                .await
                .expect("record");

            let (months, groups) = stored(&mut tx, &org).await.expect("stored");
            let month = months[&period];
            assert_eq!(
                month,
                RunStats {
                    total_runs: 3,
                    finished_runs: 2,
                    passed_runs: 1,
                    duration_sum_ms: 120_000,
                    duration_count: 2
                }
            );
            assert_eq!(
                (month.success_rate(), month.avg_duration_ms()),
                (50.0, 60_000)
            );
            assert_eq!(
                groups["nightly"],
                GroupStats {
                    total_runs: 2,
                    passed_runs: 1,
                    last_run_at: NOW + 2 * HOUR
                }
            );
            assert_eq!(
                groups[""],
                GroupStats {
                    total_runs: 1,
                    passed_runs: 0,
                    last_run_at: NOW
                }
            );

            // Deleted: the passed run leaves its month and its group; the group's newest
            // start is still the third run's.
            delete(&mut tx, &running_id).await;
            record(&mut tx, &org, Some(&passed), None)
                .await
                .expect("record");
            let (months, groups) = stored(&mut tx, &org).await.expect("stored");
            assert_eq!(
                months[&period],
                RunStats {
                    total_runs: 2,
                    finished_runs: 1,
                    passed_runs: 0,
                    duration_sum_ms: 30_000,
                    duration_count: 1
                }
            );
            assert_eq!(
                groups["nightly"],
                GroupStats {
                    total_runs: 1,
                    passed_runs: 0,
                    last_run_at: NOW + 2 * HOUR
                }
            );
            // What the executions table says agrees with what was recorded.
            assert_eq!(
                derive(&mut tx, &org).await.expect("derive"),
                (months, groups)
            );
            tx.rollback().await.expect("rollback");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deleted_newest_run_moves_its_group_back_and_an_empty_group_goes() {
        for test in databases().await {
            let db = &test.db;
            let org = organization(db, "team", "{}").await;
            let mut tx = db.begin_write().await.expect("tx");
            let old = run(Status::Passed, Some("g"), Some(NOW), Some(NOW + 10));
            let old_id = insert(&mut tx, &org, &old, false).await;
            record(&mut tx, &org, None, Some(&old))
                .await
                .expect("record");
            let new = run(Status::Running, Some("g"), Some(NOW + HOUR), None);
            let new_id = insert(&mut tx, &org, &new, false).await;
            record(&mut tx, &org, None, Some(&new))
                .await
                .expect("record");
            // A deleted run of the group is not a candidate for its newest start.
            let gone = run(Status::Running, Some("g"), Some(NOW + 5 * HOUR), None);
            insert(&mut tx, &org, &gone, true).await;

            delete(&mut tx, &new_id).await;
            record(&mut tx, &org, Some(&new), None)
                .await
                .expect("record");
            let (_, groups) = stored(&mut tx, &org).await.expect("stored");
            assert_eq!(
                groups["g"],
                GroupStats {
                    total_runs: 1,
                    passed_runs: 1,
                    last_run_at: NOW
                }
            );
            delete(&mut tx, &old_id).await;
            record(&mut tx, &org, Some(&old), None)
                .await
                .expect("record");
            let (months, groups) = stored(&mut tx, &org).await.expect("stored");
            assert!(groups.is_empty(), "{groups:?}");
            assert_eq!(months[&Period::containing(NOW).key], RunStats::default());
            tx.rollback().await.expect("rollback");
        }
    }

    #[test]
    fn rates_round_to_one_decimal_and_averages_to_whole_milliseconds() {
        let stats = |finished, passed, sum, count| RunStats {
            total_runs: finished,
            finished_runs: finished,
            passed_runs: passed,
            duration_sum_ms: sum,
            duration_count: count,
        };
        assert_eq!(stats(0, 0, 0, 0).success_rate(), 0.0);
        assert_eq!(stats(0, 0, 0, 0).avg_duration_ms(), 0);
        assert_eq!(stats(3, 2, 0, 0).success_rate(), 66.7);
        assert_eq!(stats(3, 1, 0, 0).success_rate(), 33.3);
        assert_eq!(stats(8, 1, 0, 0).success_rate(), 12.5);
        assert_eq!(stats(16, 1, 0, 0).success_rate(), 6.3);
        assert_eq!(stats(7, 7, 0, 0).success_rate(), 100.0);
        assert_eq!(stats(1, 0, 5, 2).avg_duration_ms(), 3);
        assert_eq!(stats(1, 0, 1_000_001, 3).avg_duration_ms(), 333_334);
    }
}

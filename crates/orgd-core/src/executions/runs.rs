//! Creating, moving, reading, listing and deleting runs. Creation checks its limits in the
//! transaction that holds the organization's lock (`rules::runs`); a status change is one
//! conditional statement, so of two racing finishes exactly one wins.

use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Executor, Row};

use super::{Execution, ExecutionChange, ExecutionFilter, ExecutionLink, NewExecution, Status};
use crate::analysis;
use crate::db::Db;
use crate::db::Tx;
use crate::error::{CoreError, CoreResult};
use crate::idempotency::{self, Replay};
use crate::organizations;
use crate::outbox::{self, EXECUTION_FINISHED, NewEvent};
use crate::rules::runs::{self as run_rules, RunRefusal};
use crate::rules::thresholds::{self, Figure};
use crate::usage::{Period, Resource};

pub enum NewExecutionOutcome {
    Created(Box<Execution>),
    Duplicate,
    ProjectNotFound,
    TestRunLimit { used: i64, limit: i64 },
    ConcurrencyLimit { active: i64, limit: i64 },
}

pub enum UpdateOutcome {
    Updated(Box<Execution>),
    NotFound,
    /// The execution is finished (its status is given) and may not move.
    Finished(Status),
}

const EXECUTION_COLUMNS: &str =
    "id, task_id, project_id, status, trigger_source, group_name, error, report_bytes,
    created_at, started_at, finished_at";

fn execution_from_row(row: &AnyRow, with_output: bool) -> CoreResult<Execution> {
    let status: String = row.try_get("status")?;
    Ok(Execution {
        id: row.try_get("id")?,
        task_id: row.try_get("task_id")?,
        project_id: row.try_get("project_id")?,
        status: Status::try_from(status).map_err(CoreError::Corrupt)?,
        trigger: row.try_get("trigger_source")?,
        group_name: row.try_get("group_name")?,
        error: row.try_get("error")?,
        output: if with_output {
            row.try_get("output")?
        } else {
            None
        },
        report_bytes: row.try_get("report_bytes")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        links: Vec::new(),
        analysis: None,
    })
}

/// `$from, $from+1, ...` for `count` values.
fn placeholders(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Attaches the analysis of every execution in `page` with one query.
async fn attach_analyses(db: &Db, org_id: &str, page: &mut [Execution]) -> CoreResult<()> {
    let ids: Vec<&str> = page.iter().map(|e| e.id.as_str()).collect();
    let mut found = analysis::of_executions(db, org_id, &ids).await?;
    for execution in page.iter_mut() {
        execution.analysis = found.remove(&execution.id);
    }
    Ok(())
}

/// Attaches the ticket links of every execution in `page` with one query.
async fn attach_links<'e>(
    db: impl Executor<'e, Database = Any>,
    org_id: &str,
    page: &mut [Execution],
) -> CoreResult<()> {
    if page.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT execution_id, provider, external_id, url, title, created_by, created_at
         FROM execution_links WHERE organization_id = $1 AND execution_id IN ({})
         ORDER BY created_at, id",
        placeholders(2, page.len())
    );
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(org_id);
    for execution in page.iter() {
        query = query.bind(&execution.id);
    }
    for row in query.fetch_all(db).await? {
        let link = ExecutionLink {
            execution_id: row.try_get("execution_id")?,
            provider: row.try_get("provider")?,
            external_id: row.try_get("external_id")?,
            url: row.try_get("url")?,
            title: row.try_get("title")?,
            created_by: row.try_get("created_by")?,
            created_at: row.try_get("created_at")?,
        };
        if let Some(execution) = page.iter_mut().find(|e| e.id == link.execution_id) {
            execution.links.push(link);
        }
    }
    Ok(())
}

/// Takes `bytes` off the organization's storage counter.
pub(super) async fn subtract_storage<'e>(
    db: impl Executor<'e, Database = Any>,
    org_id: &str,
    bytes: i64,
) -> CoreResult<()> {
    sqlx::query(
        "UPDATE organizations SET storage_used_bytes = storage_used_bytes - $2 WHERE id = $1",
    )
    .bind(org_id)
    .bind(bytes)
    .execute(db)
    .await?;
    Ok(())
}

pub(super) async fn is_live_execution<'e>(
    db: impl Executor<'e, Database = Any>,
    org_id: &str,
    task_id: &str,
) -> CoreResult<bool> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM executions WHERE organization_id = $1 AND task_id = $2 AND deleted_at IS NULL",
    )
    .bind(org_id)
    .bind(task_id)
    .fetch_optional(db)
    .await?;
    Ok(found.is_some())
}

/// Creates the execution and counts it in this month's test runs, unless a limit or the
/// uniqueness of its taskId refuses it.
pub async fn create_execution(
    db: &Db,
    org_id: &str,
    new: &NewExecution,
    now: i64,
    replay: Option<&Replay<'_, Execution>>,
) -> CoreResult<NewExecutionOutcome> {
    let period = Period::containing(now);
    let mut tx = db.begin_write().await?;
    let limits = organizations::lock_limits(&mut tx, org_id)
        .await?
        .ok_or_else(|| CoreError::Corrupt(format!("organization {org_id} vanished")))?;
    // Deleted executions keep their taskId taken.
    let taken: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM executions WHERE organization_id = $1 AND task_id = $2")
            .bind(org_id)
            .bind(new.task_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    if taken.is_some() {
        return Ok(NewExecutionOutcome::Duplicate);
    }
    if let Some(project_id) = &new.project_id {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM projects WHERE organization_id = $1 AND id = $2")
                .bind(org_id)
                .bind(project_id)
                .fetch_optional(&mut *tx)
                .await?;
        if found.is_none() {
            return Ok(NewExecutionOutcome::ProjectNotFound);
        }
    }
    match run_rules::admit(&mut tx, org_id, &limits, &period).await? {
        Ok(()) => {}
        Err(RunRefusal::Monthly { used, limit }) => {
            return Ok(NewExecutionOutcome::TestRunLimit { used, limit });
        }
        Err(RunRefusal::Concurrent { active, limit }) => {
            return Ok(NewExecutionOutcome::ConcurrencyLimit { active, limit });
        }
    }
    let started_at = (new.status == Status::Running).then_some(now);
    sqlx::query(
        "INSERT INTO executions (id, organization_id, task_id, project_id, status, trigger_source, group_name,
                                 error, output, report_bytes, created_by, created_at, started_at, finished_at, deleted_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, 0, $8, $9, $10, NULL, NULL)",
    )
    .bind(&new.id)
    .bind(org_id)
    .bind(new.task_id.as_str())
    .bind(new.project_id.as_deref())
    .bind(new.status.as_str())
    .bind(new.trigger.as_deref())
    .bind(new.group_name.as_deref())
    .bind(&new.created_by)
    .bind(now)
    .bind(started_at)
    .execute(&mut *tx)
    .await?;
    let test_runs: i64 = sqlx::query_scalar(
        "INSERT INTO usage_counters (organization_id, period, test_runs, ai_analyses) VALUES ($1, $2, 1, 0)
         ON CONFLICT (organization_id, period) DO UPDATE SET test_runs = usage_counters.test_runs + 1
         RETURNING test_runs",
    )
    .bind(org_id)
    .bind(&period.key)
    .fetch_one(&mut *tx)
    .await?;
    let figure = |used| Figure {
        used,
        limit: limits.max_test_runs,
    };
    thresholds::record(
        &mut tx,
        org_id,
        Resource::TestRuns,
        figure(test_runs - 1),
        figure(test_runs),
        now,
    )
    .await?;
    let created = Execution {
        id: new.id.clone(),
        task_id: new.task_id.as_str().to_string(),
        project_id: new.project_id.clone(),
        status: new.status,
        trigger: new.trigger.clone(),
        group_name: new.group_name.clone(),
        error: None,
        output: None,
        report_bytes: 0,
        created_at: now,
        started_at,
        finished_at: None,
        links: Vec::new(),
        analysis: None,
    };
    idempotency::store(&mut tx, replay, &created).await?;
    tx.commit().await?;
    Ok(NewExecutionOutcome::Created(Box::new(created)))
}

/// How a finished run is announced: its JSON as the API shows it (the service owns the
/// view), and how long its Slack message waits for an analysis queued with the finish.
#[derive(Clone, Copy)]
pub struct FinishNotice {
    pub view: fn(&Execution) -> serde_json::Value,
    pub analysis_wait_ms: i64,
}

pub async fn update_execution(
    db: &Db,
    org_id: &str,
    task_id: &str,
    change: &ExecutionChange,
    now: i64,
    notice: &FinishNotice,
) -> CoreResult<UpdateOutcome> {
    let status = change.status.map(Status::as_str);
    let finished = change.status.is_some_and(Status::is_finished);
    let mut tx = db.begin_write().await?;
    // One conditional statement: a status change applies only to an unfinished
    // execution, so two racing finishes cannot both win.
    let updated = sqlx::query(
        "UPDATE executions SET
            status = COALESCE($3, status),
            started_at = CASE WHEN $3 = 'RUNNING' THEN COALESCE(started_at, $4) ELSE started_at END,
            finished_at = CASE WHEN $5 = 1 THEN $4 ELSE finished_at END,
            error = COALESCE($6, error),
            output = COALESCE($7, output)
         WHERE organization_id = $1 AND task_id = $2 AND deleted_at IS NULL
           AND ($3 IS NULL OR status IN ('PENDING', 'RUNNING'))",
    )
    .bind(org_id)
    .bind(task_id)
    .bind(status)
    .bind(now)
    .bind(i64::from(finished))
    .bind(change.error.as_deref())
    .bind(change.output.as_deref())
    .execute(&mut *tx)
    .await?;
    // The move into a failed state and the queued analysis commit together.
    let analysis_queued = updated.rows_affected() > 0
        && change.status.is_some_and(Status::is_failure)
        && analysis::queue(&mut tx, org_id, task_id, now).await?;
    // So does the event announcing the finish, frozen as the run is now.
    if updated.rows_affected() > 0 && finished {
        announce_finish(&mut tx, org_id, task_id, analysis_queued, now, notice).await?;
    }
    tx.commit().await?;
    let current = execution(db, org_id, task_id).await?;
    Ok(match current {
        None => UpdateOutcome::NotFound,
        Some(execution) if updated.rows_affected() == 0 => {
            UpdateOutcome::Finished(execution.status)
        }
        Some(execution) => UpdateOutcome::Updated(Box::new(execution)),
    })
}

/// Queues `execution.finished` with the run as `tx` sees it (without its output).
async fn announce_finish(
    tx: &mut Tx,
    org_id: &str,
    task_id: &str,
    analysis_queued: bool,
    now: i64,
    notice: &FinishNotice,
) -> CoreResult<()> {
    let sql = format!(
        "SELECT {EXECUTION_COLUMNS} FROM executions WHERE organization_id = $1 AND task_id = $2"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(org_id)
        .bind(task_id)
        .fetch_one(&mut **tx)
        .await?;
    let mut page = [execution_from_row(&row, false)?];
    attach_links(&mut **tx, org_id, &mut page).await?;
    let [mut execution] = page;
    execution.analysis = analysis::of_execution_in(tx, &execution.id).await?;
    let mut data = serde_json::Map::new();
    data.insert("execution".into(), (notice.view)(&execution));
    let event = NewEvent {
        organization_id: org_id,
        kind: EXECUTION_FINISHED,
        data,
        analysis_wait_until: analysis_queued
            .then(|| (execution.id.as_str(), now + notice.analysis_wait_ms)),
    };
    outbox::enqueue(tx, &event, now).await?;
    Ok(())
}

/// A live (not deleted) execution with its output and links.
pub async fn execution(db: &Db, org_id: &str, task_id: &str) -> CoreResult<Option<Execution>> {
    let sql = format!(
        "SELECT {EXECUTION_COLUMNS}, output FROM executions
         WHERE organization_id = $1 AND task_id = $2 AND deleted_at IS NULL"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(org_id)
        .bind(task_id)
        .fetch_optional(db.pool())
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut page = [execution_from_row(&row, true)?];
    attach_links(db.pool(), org_id, &mut page).await?;
    attach_analyses(db, org_id, &mut page).await?;
    let [execution] = page;
    Ok(Some(execution))
}

/// A page of live executions, newest first, with their links, and how many match.
pub async fn executions(
    db: &Db,
    org_id: &str,
    filter: &ExecutionFilter,
) -> CoreResult<(Vec<Execution>, i64)> {
    let mut condition = String::from("organization_id = $1 AND deleted_at IS NULL");
    if !filter.statuses.is_empty() {
        condition.push_str(&format!(
            " AND status IN ({})",
            placeholders(2, filter.statuses.len())
        ));
    }
    let next = 2 + filter.statuses.len();
    let page_sql = format!(
        "SELECT {EXECUTION_COLUMNS} FROM executions WHERE {condition}
         ORDER BY created_at DESC, id DESC LIMIT ${next} OFFSET ${}",
        next + 1
    );
    let count_sql = format!("SELECT COUNT(*) FROM executions WHERE {condition}");
    let mut page_query = sqlx::query(AssertSqlSafe(page_sql)).bind(org_id);
    let mut count_query = sqlx::query_scalar::<_, i64>(AssertSqlSafe(count_sql)).bind(org_id);
    for status in &filter.statuses {
        page_query = page_query.bind(status.as_str());
        count_query = count_query.bind(status.as_str());
    }
    let rows = page_query
        .bind(filter.limit)
        .bind(filter.offset)
        .fetch_all(db.pool())
        .await?;
    let total = count_query.fetch_one(db.pool()).await?;
    let mut page = rows
        .iter()
        .map(|row| execution_from_row(row, false))
        .collect::<CoreResult<Vec<_>>>()?;
    attach_links(db.pool(), org_id, &mut page).await?;
    attach_analyses(db, org_id, &mut page).await?;
    Ok((page, total))
}

/// Soft-deletes a live execution and forgets its report files, freeing their storage.
pub async fn delete_execution(db: &Db, org_id: &str, task_id: &str, now: i64) -> CoreResult<bool> {
    let mut tx = db.begin_write().await?;
    // Serialized with uploads to this organization, so no file lands after the delete.
    tx.lock_organization(org_id).await?;
    let deleted = sqlx::query(
        "UPDATE executions SET deleted_at = $3, report_bytes = 0
         WHERE organization_id = $1 AND task_id = $2 AND deleted_at IS NULL",
    )
    .bind(org_id)
    .bind(task_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if deleted.rows_affected() == 0 {
        return Ok(false);
    }
    let freed: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM report_files WHERE organization_id = $1 AND task_id = $2",
    )
    .bind(org_id)
    .bind(task_id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM report_files WHERE organization_id = $1 AND task_id = $2")
        .bind(org_id)
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
    subtract_storage(&mut *tx, org_id, freed).await?;
    tx.commit().await?;
    Ok(true)
}

pub async fn execution_exists(db: &Db, org_id: &str, task_id: &str) -> CoreResult<bool> {
    is_live_execution(db.pool(), org_id, task_id).await
}

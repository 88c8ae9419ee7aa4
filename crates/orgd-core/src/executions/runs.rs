//! Creating, moving, reading, listing and deleting runs. Creation checks its limits in the
//! transaction that holds the organization's lock (`rules::runs`); a status change is one
//! conditional statement, so of two racing finishes exactly one wins.

use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Executor, Row};

use super::{
    Execution, ExecutionChange, ExecutionFilter, ExecutionLink, ExecutionPage, NewExecution, Status,
};
use crate::analysis;
use crate::cursor::{Cursor, limit_clause, split_page};
use crate::db::{Db, Tx};
use crate::error::{CoreError, CoreResult};
use crate::idempotency::{self, Replay};
use crate::organizations;
use crate::rules::run_counts;
use crate::rules::runs::{self as run_rules, RunRefusal};
use crate::usage::Period;

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
async fn attach_links(db: &Db, org_id: &str, page: &mut [Execution]) -> CoreResult<()> {
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
    for row in query.fetch_all(db.pool()).await? {
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
    run_counts::moved(&mut tx, org_id, None, Some(new.status)).await?;
    sqlx::query(
        "INSERT INTO usage_counters (organization_id, period, test_runs, ai_analyses) VALUES ($1, $2, 1, 0)
         ON CONFLICT (organization_id, period) DO UPDATE SET test_runs = usage_counters.test_runs + 1",
    )
    .bind(org_id)
    .bind(&period.key)
    .execute(&mut *tx)
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

pub async fn update_execution(
    db: &Db,
    org_id: &str,
    task_id: &str,
    change: &ExecutionChange,
    now: i64,
) -> CoreResult<UpdateOutcome> {
    let status = change.status.map(Status::as_str);
    let finished = change.status.is_some_and(Status::is_finished);
    let mut tx = db.begin_write().await?;
    // The status it moves from, locked until the commit so the counters move with it.
    let before = match change.status {
        Some(_) => current_status(&mut tx, org_id, task_id).await?,
        None => None,
    };
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
    if updated.rows_affected() > 0 && before.is_some() {
        run_counts::moved(&mut tx, org_id, before, change.status).await?;
    }
    // The move into a failed state and the queued analysis commit together.
    if updated.rows_affected() > 0 && change.status.is_some_and(Status::is_failure) {
        analysis::queue(&mut tx, org_id, task_id, now).await?;
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
    attach_links(db, org_id, &mut page).await?;
    attach_analyses(db, org_id, &mut page).await?;
    let [execution] = page;
    Ok(Some(execution))
}

/// A page of live executions, newest first, with their links, how many match (from the
/// run counters) and the cursor of the next page.
///
/// Filtered by status, the page is the newest of each status's own newest rows (one index
/// range per status, `executions_status_page_idx`), so its cost does not grow with the runs
/// of other statuses either.
pub async fn executions(
    db: &Db,
    org_id: &str,
    filter: &ExecutionFilter,
) -> CoreResult<ExecutionPage> {
    // $1 organization, then the statuses, then the cursor; one row more than the page says
    // whether another follows.
    let cursor_at = 2 + filter.statuses.len();
    let mut condition = String::from("organization_id = $1 AND deleted_at IS NULL");
    if filter.after.is_some() {
        condition.push_str(" AND ");
        condition.push_str(&Cursor::older_than(
            &format!("${cursor_at}"),
            &format!("${}", cursor_at + 1),
        ));
    }
    let order = "ORDER BY created_at DESC, id DESC";
    let page = limit_clause(filter.limit + 1, filter.offset);
    let sql = if filter.statuses.is_empty() {
        format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE {condition} {order} {page}")
    } else {
        // Each range reads at most offset + page rows; the outer query picks the page.
        let range = limit_clause(filter.limit + 1 + filter.offset, 0);
        let ranges: Vec<String> = (0..filter.statuses.len())
            .map(|i| {
                format!(
                    "SELECT * FROM (SELECT {EXECUTION_COLUMNS} FROM executions
                     WHERE {condition} AND status = ${} {order} {range}) AS s{i}",
                    2 + i
                )
            })
            .collect();
        format!(
            "SELECT * FROM ({}) AS page {order} {page}",
            ranges.join(" UNION ALL ")
        )
    };
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(org_id);
    for status in &filter.statuses {
        query = query.bind(status.as_str());
    }
    if let Some(cursor) = &filter.after {
        query = query.bind(cursor.created_at).bind(&cursor.id);
    }
    let rows = query.fetch_all(db.pool()).await?;
    let total = run_counts::live(db.pool(), org_id, &filter.statuses).await?;
    let rows = rows
        .iter()
        .map(|row| execution_from_row(row, false))
        .collect::<CoreResult<Vec<_>>>()?;
    let (mut page, next) = split_page(rows, filter.limit, |e| Cursor {
        created_at: e.created_at,
        id: e.id.clone(),
    });
    attach_links(db, org_id, &mut page).await?;
    attach_analyses(db, org_id, &mut page).await?;
    Ok(ExecutionPage {
        executions: page,
        total,
        next,
    })
}

/// The status of a live execution, locked for the rest of `tx`.
async fn current_status(tx: &mut Tx, org_id: &str, task_id: &str) -> CoreResult<Option<Status>> {
    let sql = format!(
        "SELECT status FROM executions
         WHERE organization_id = $1 AND task_id = $2 AND deleted_at IS NULL{}",
        tx.row_lock()
    );
    let status: Option<String> = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(org_id)
        .bind(task_id)
        .fetch_optional(&mut **tx)
        .await?;
    status
        .map(|s| Status::try_from(s).map_err(CoreError::Corrupt))
        .transpose()
}

/// Soft-deletes a live execution and forgets its report files, freeing their storage.
pub async fn delete_execution(db: &Db, org_id: &str, task_id: &str, now: i64) -> CoreResult<bool> {
    let mut tx = db.begin_write().await?;
    // Serialized with uploads to this organization, so no file lands after the delete.
    tx.lock_organization(org_id).await?;
    let deleted: Option<String> = sqlx::query_scalar(
        "UPDATE executions SET deleted_at = $3, report_bytes = 0
         WHERE organization_id = $1 AND task_id = $2 AND deleted_at IS NULL
         RETURNING status",
    )
    .bind(org_id)
    .bind(task_id)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(status) = deleted else {
        return Ok(false);
    };
    let status = Status::try_from(status).map_err(CoreError::Corrupt)?;
    run_counts::moved(&mut tx, org_id, Some(status), None).await?;
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

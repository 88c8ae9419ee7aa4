//! Creating, moving, reading, listing and deleting runs. Creation checks its limits in the
//! transaction that holds the organization's lock (`rules::runs`); a status change is one
//! conditional statement, so of two racing finishes exactly one wins. Every change moves the
//! run counters in its own transaction (`rules::run_stats`); the KPIs and the grouped view
//! read them.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AssertSqlSafe, Executor, Row};

use super::run_requests::{self, RUN_REQUEST_COLUMNS, RunRequest};
use super::{
    Execution, ExecutionChange, ExecutionFilter, ExecutionLink, ExecutionPage, GroupFilter,
    NewExecution, START_TIME_SQL, Source, Status,
};
use crate::analysis;
use crate::cursor::{Cursor, limit_clause, split_page};
use crate::db::{Db, Tx};
use crate::error::{CoreError, CoreResult};
use crate::idempotency::{self, Replay};
use crate::organizations;
use crate::outbox::{self, EXECUTION_FINISHED, NewEvent};
use crate::pull_requests::Ci;
use crate::rules::run_counts;
use crate::rules::run_stats::{self, RunFacts, RunStats, group_condition};
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

/// The columns `execution_from_row` reads, each prefixed with `prefix` (a table alias and a
/// dot, or nothing).
fn execution_columns(prefix: &str) -> String {
    [
        "id",
        "task_id",
        "project_id",
        "status",
        "trigger_source",
        "group_name",
        "source",
        "environment",
        "error",
        "report_bytes",
        "created_at",
        "started_at",
        "finished_at",
        "ci",
    ]
    .map(|column| format!("{prefix}{column}"))
    .join(", ")
}

fn execution_from_row(row: &AnyRow, with_output: bool) -> CoreResult<Execution> {
    let status: String = row.try_get("status")?;
    let source: String = row.try_get("source")?;
    Ok(Execution {
        id: row.try_get("id")?,
        task_id: row.try_get("task_id")?,
        project_id: row.try_get("project_id")?,
        status: Status::try_from(status).map_err(CoreError::Corrupt)?,
        trigger: row.try_get("trigger_source")?,
        group_name: row.try_get("group_name")?,
        source: Source::try_from(source).map_err(CoreError::Corrupt)?,
        environment: row.try_get("environment")?,
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
        run_request: None,
        ci: Ci::from_column(row.try_get::<Option<String>, _>("ci")?.as_deref()),
    })
}

/// What a run counts for in `rules::run_stats`, from a row with its status, group and times.
fn facts_from_row(row: &AnyRow) -> CoreResult<RunFacts> {
    let status: String = row.try_get("status")?;
    Ok(RunFacts {
        status: Status::try_from(status).map_err(CoreError::Corrupt)?,
        group_name: row.try_get("group_name")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// A value bound to a placeholder of a query built at run time.
#[derive(Debug, Clone)]
enum Bind {
    Text(String),
    Int(i64),
}

fn bind_all<'q>(
    mut query: Query<'q, Any, AnyArguments>,
    binds: &[Bind],
) -> Query<'q, Any, AnyArguments> {
    for bind in binds {
        query = match bind {
            Bind::Text(text) => query.bind(text.clone()),
            Bind::Int(n) => query.bind(*n),
        };
    }
    query
}

/// The `WHERE` clause of `filter` over `executions` (unqualified columns, so the start-time
/// expression is the indexes' own) for the organization, and its values; placeholders are
/// numbered from `$first`.
fn filter_condition(org_id: &str, filter: &ExecutionFilter, first: usize) -> (String, Vec<Bind>) {
    let mut binds = vec![Bind::Text(org_id.to_string())];
    let mut sql = format!("organization_id = ${first} AND deleted_at IS NULL");
    let mut push = |sql: &mut String, clause: &str, bind: Bind| {
        binds.push(bind);
        let n = first + binds.len() - 1;
        sql.push_str(&clause.replace('?', &format!("${n}")));
    };
    for (i, status) in filter.statuses.iter().enumerate() {
        let clause = match (i, filter.statuses.len()) {
            (0, 1) => " AND status IN (?)",
            (0, _) => " AND status IN (?",
            (i, len) if i + 1 == len => ", ?)",
            _ => ", ?",
        };
        push(&mut sql, clause, Bind::Text(status.as_str().to_string()));
    }
    if let Some(environment) = &filter.environment {
        // Environments are ASCII (`executions::environment`): both backends' LOWER agree.
        push(
            &mut sql,
            " AND LOWER(environment) = ?",
            Bind::Text(environment.to_ascii_lowercase()),
        );
    }
    match &filter.group {
        Some(GroupFilter::Named(name)) => {
            push(&mut sql, " AND group_name = ?", Bind::Text(name.clone()))
        }
        Some(GroupFilter::Ungrouped) => sql.push_str(" AND group_name IS NULL"),
        None => {}
    }
    if let Some(source) = filter.source {
        push(
            &mut sql,
            " AND source = ?",
            Bind::Text(source.as_str().to_string()),
        );
    }
    if let Some(after) = filter.start_after {
        push(
            &mut sql,
            &format!(" AND {START_TIME_SQL} >= ?"),
            Bind::Int(after),
        );
    }
    if let Some(before) = filter.start_before {
        push(
            &mut sql,
            &format!(" AND {START_TIME_SQL} <= ?"),
            Bind::Int(before),
        );
    }
    (sql, binds)
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
    let environment = new.run_request.as_ref().and_then(|r| r.environment.clone());
    sqlx::query(
        "INSERT INTO executions (id, organization_id, task_id, project_id, status, trigger_source, group_name,
                                 source, environment, error, output, report_bytes, created_by, created_at,
                                 started_at, finished_at, deleted_at, ci)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, 0, $10, $11, $12, NULL, NULL, $13)",
    )
    .bind(&new.id)
    .bind(org_id)
    .bind(new.task_id.as_str())
    .bind(new.project_id.as_deref())
    .bind(new.status.as_str())
    .bind(new.trigger.as_deref())
    .bind(new.group_name.as_deref())
    .bind(new.source().as_str())
    .bind(environment.as_deref())
    .bind(&new.created_by)
    .bind(now)
    .bind(started_at)
    .bind(new.ci.as_ref().map(Ci::to_column))
    .execute(&mut *tx)
    .await?;
    if let Some(request) = &new.run_request {
        run_requests::insert(&mut tx, org_id, &new.id, request, now).await?;
    }
    let facts = RunFacts {
        status: new.status,
        group_name: new.group_name.clone(),
        created_at: now,
        started_at,
        finished_at: None,
    };
    run_stats::record(&mut tx, org_id, None, Some(&facts)).await?;
    run_counts::moved(&mut tx, org_id, None, Some(new.status)).await?;
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
        source: new.source(),
        environment,
        error: None,
        output: None,
        report_bytes: 0,
        created_at: now,
        started_at,
        finished_at: None,
        links: Vec::new(),
        analysis: None,
        run_request: None,
        ci: new.ci.clone(),
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
           AND ($3 IS NULL OR status IN ('PENDING', 'RUNNING'))
         RETURNING status, group_name, created_at, started_at, finished_at",
    )
    .bind(org_id)
    .bind(task_id)
    .bind(status)
    .bind(now)
    .bind(i64::from(finished))
    .bind(change.error.as_deref())
    .bind(change.output.as_deref())
    .fetch_optional(&mut *tx)
    .await?;
    if let (Some(row), Some(_)) = (&updated, change.status) {
        // The statement moved only a PENDING or RUNNING run, which counted as one unfinished
        // run from its creation time; what it was exactly does not change its counts.
        let after = facts_from_row(row)?;
        let before_facts = RunFacts {
            status: Status::Pending,
            started_at: None,
            finished_at: None,
            ..after.clone()
        };
        run_stats::record(&mut tx, org_id, Some(&before_facts), Some(&after)).await?;
        run_counts::moved(&mut tx, org_id, before, change.status).await?;
    }
    // The move into a failed state and the queued analysis commit together.
    let analysis_queued = updated.is_some()
        && change.status.is_some_and(Status::is_failure)
        && analysis::queue(&mut tx, org_id, task_id, now).await?;
    // So does the event announcing the finish, frozen as the run is now.
    if updated.is_some() && finished {
        announce_finish(&mut tx, org_id, task_id, analysis_queued, now, notice).await?;
    }
    tx.commit().await?;
    let current = execution(db, org_id, task_id).await?;
    Ok(match current {
        None => UpdateOutcome::NotFound,
        Some(execution) if updated.is_none() => UpdateOutcome::Finished(execution.status),
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
        "SELECT {} FROM executions WHERE organization_id = $1 AND task_id = $2",
        execution_columns("")
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

/// A live (not deleted) execution with its output, links and run request.
pub async fn execution(db: &Db, org_id: &str, task_id: &str) -> CoreResult<Option<Execution>> {
    let sql = format!(
        "SELECT {columns}, e.output, {RUN_REQUEST_COLUMNS}
         FROM executions e LEFT JOIN run_requests r ON r.execution_id = e.id
         WHERE e.organization_id = $1 AND e.task_id = $2 AND e.deleted_at IS NULL",
        columns = execution_columns("e.")
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(org_id)
        .bind(task_id)
        .fetch_optional(db.pool())
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut execution = execution_from_row(&row, true)?;
    let requested: Option<String> = row.try_get("rr_execution_id")?;
    if requested.is_some() {
        execution.run_request = Some(RunRequest::from_row(&row)?);
    }
    let mut page = [execution];
    attach_links(db.pool(), org_id, &mut page).await?;
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
    // The filter without its statuses ($1…), then the cursor, then one bind per status. The
    // page's bounds are written into the SQL (validated integers), so PostgreSQL's generic
    // plan reads an index range instead of sorting the history.
    let unfiltered = ExecutionFilter {
        statuses: Vec::new(),
        ..filter.clone()
    };
    let (mut condition, mut binds) = filter_condition(org_id, &unfiltered, 1);
    if let Some(cursor) = &filter.after {
        let at = binds.len() + 1;
        condition.push_str(" AND ");
        condition.push_str(&Cursor::older_than(
            &format!("${at}"),
            &format!("${}", at + 1),
        ));
        binds.push(Bind::Int(cursor.created_at));
        binds.push(Bind::Text(cursor.id.clone()));
    }
    let first_status = binds.len() + 1;
    let columns = execution_columns("");
    let order = "ORDER BY created_at DESC, id DESC";
    // One row more than the page says whether another follows.
    let page = limit_clause(filter.limit + 1, filter.offset);
    let sql = if filter.statuses.is_empty() {
        format!("SELECT {columns} FROM executions WHERE {condition} {order} {page}")
    } else {
        // Each range reads at most offset + page rows; the outer query picks the page.
        let range = limit_clause(filter.limit + 1 + filter.offset, 0);
        let ranges: Vec<String> = (0..filter.statuses.len())
            .map(|i| {
                format!(
                    "SELECT * FROM (SELECT {columns} FROM executions
                     WHERE {condition} AND status = ${} {order} {range}) AS s{i}",
                    first_status + i
                )
            })
            .collect();
        format!(
            "SELECT * FROM ({}) AS page {order} {page}",
            ranges.join(" UNION ALL ")
        )
    };
    let mut query = bind_all(sqlx::query(AssertSqlSafe(sql)), &binds);
    for status in &filter.statuses {
        query = query.bind(status.as_str());
    }
    let rows = query.fetch_all(db.pool()).await?;
    let total = if filter.by_status_only() {
        run_counts::live(db.pool(), org_id, &filter.statuses).await?
    } else {
        // The original's filters (environment, group, source, time) are counted from the
        // matching runs: no counter exists for every combination.
        let (condition, binds) = filter_condition(org_id, filter, 1);
        let sql = format!("SELECT COUNT(*) AS n FROM executions WHERE {condition}");
        bind_all(sqlx::query(AssertSqlSafe(sql)), &binds)
            .fetch_one(db.pool())
            .await?
            .try_get("n")?
    };
    let rows = rows
        .iter()
        .map(|row| execution_from_row(row, false))
        .collect::<CoreResult<Vec<_>>>()?;
    let (mut page, next) = split_page(rows, filter.limit, |e| Cursor {
        created_at: e.created_at,
        id: e.id.clone(),
    });
    attach_links(db.pool(), org_id, &mut page).await?;
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
    let deleted = sqlx::query(
        "UPDATE executions SET deleted_at = $3, report_bytes = 0
         WHERE organization_id = $1 AND task_id = $2 AND deleted_at IS NULL
         RETURNING id, status, group_name, created_at, started_at, finished_at",
    )
    .bind(org_id)
    .bind(task_id)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(deleted) = deleted else {
        return Ok(false);
    };
    // A deleted run leaves the KPIs, its group and the live counts (its test-run usage
    // stays: it was run).
    let facts = facts_from_row(&deleted)?;
    run_stats::record(&mut tx, org_id, Some(&facts), None).await?;
    run_counts::moved(&mut tx, org_id, Some(facts.status), None).await?;
    // Its environment values are of no further use to anyone: they go with it.
    let execution_id: String = deleted.try_get("id")?;
    sqlx::query("DELETE FROM run_requests WHERE execution_id = $1")
        .bind(&execution_id)
        .execute(&mut *tx)
        .await?;
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

/// One month's run counters of the organization (zero when it has none).
pub async fn run_stats(db: &Db, org_id: &str, period: &Period) -> CoreResult<RunStats> {
    let row = sqlx::query(
        "SELECT total_runs, finished_runs, passed_runs, duration_sum_ms, duration_count
         FROM run_stats WHERE organization_id = $1 AND period = $2",
    )
    .bind(org_id)
    .bind(&period.key)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref()
        .map(run_stats::stats_from_row)
        .transpose()
        .map(Option::unwrap_or_default)
}

/// A group of runs in the grouped view, with its newest runs (newest first).
#[derive(Debug, Clone)]
pub struct RunGroup {
    pub group: GroupFilter,
    pub total_runs: i64,
    pub passed_runs: i64,
    pub last_run_at: i64,
    pub executions: Vec<Execution>,
}

/// A page of groups (by newest run first) and how many groups there are.
#[derive(Debug, Clone)]
pub struct Grouped {
    pub groups: Vec<RunGroup>,
    pub total_groups: i64,
}

/// The groups of the organization's live runs matching `filter`, `filter.limit` of them from
/// `filter.offset`, ordered by their newest start time, each with its `per_group` newest
/// runs. Without filters other than the group the groups come from the counters
/// (`run_groups`), so the cost does not grow with the history; filtered, they are counted
/// from the runs that match. Each group's runs come from the group index.
pub async fn grouped(
    db: &Db,
    org_id: &str,
    filter: &ExecutionFilter,
    per_group: i64,
) -> CoreResult<Grouped> {
    let (rows, total_groups) = if filter.by_group_only() {
        let mut condition = String::from("organization_id = $1");
        let mut binds = vec![Bind::Text(org_id.to_string())];
        if let Some(group) = &filter.group {
            condition.push_str(" AND group_key = $2");
            binds.push(Bind::Text(group.key().to_string()));
        }
        let next = binds.len() + 1;
        let page = format!(
            "SELECT group_key, total_runs, passed_runs, last_run_at FROM run_groups
             WHERE {condition} ORDER BY last_run_at DESC, group_key LIMIT ${next} OFFSET ${}",
            next + 1
        );
        let count = format!("SELECT COUNT(*) AS n FROM run_groups WHERE {condition}");
        let rows = bind_all(sqlx::query(AssertSqlSafe(page)), &binds)
            .bind(filter.limit)
            .bind(filter.offset)
            .fetch_all(db.pool())
            .await?;
        let total: i64 = bind_all(sqlx::query(AssertSqlSafe(count)), &binds)
            .fetch_one(db.pool())
            .await?
            .try_get("n")?;
        (rows, total)
    } else {
        let (condition, binds) = filter_condition(org_id, filter, 1);
        let next = binds.len() + 1;
        let page = format!(
            "SELECT COALESCE(group_name, '') AS group_key, COUNT(*) AS total_runs,
                    CAST(SUM(CASE WHEN status = 'PASSED' THEN 1 ELSE 0 END) AS BIGINT) AS passed_runs,
                    MAX({START_TIME_SQL}) AS last_run_at
             FROM executions WHERE {condition} GROUP BY COALESCE(group_name, '')
             ORDER BY last_run_at DESC, group_key LIMIT ${next} OFFSET ${}",
            next + 1
        );
        let count = format!(
            "SELECT COUNT(*) AS n FROM
               (SELECT 1 AS one FROM executions WHERE {condition} GROUP BY COALESCE(group_name, '')) AS g"
        );
        let rows = bind_all(sqlx::query(AssertSqlSafe(page)), &binds)
            .bind(filter.limit)
            .bind(filter.offset)
            .fetch_all(db.pool())
            .await?;
        let total: i64 = bind_all(sqlx::query(AssertSqlSafe(count)), &binds)
            .fetch_one(db.pool())
            .await?
            .try_get("n")?;
        (rows, total)
    };
    let mut groups = rows
        .iter()
        .map(|row| {
            Ok(RunGroup {
                group: GroupFilter::from_key(row.try_get("group_key")?),
                total_runs: row.try_get("total_runs")?,
                passed_runs: row.try_get("passed_runs")?,
                last_run_at: row.try_get("last_run_at")?,
                executions: Vec::new(),
            })
        })
        .collect::<CoreResult<Vec<_>>>()?;
    let mut runs = newest_of_groups(db, org_id, filter, &groups, per_group).await?;
    attach_links(db.pool(), org_id, &mut runs).await?;
    attach_analyses(db, org_id, &mut runs).await?;
    for run in runs {
        let key = run.group_name.as_deref().unwrap_or("");
        if let Some(group) = groups.iter_mut().find(|g| g.group.key() == key) {
            group.executions.push(run);
        }
    }
    for group in &mut groups {
        group
            .executions
            .sort_by(|a, b| (b.start_time(), &b.id).cmp(&(a.start_time(), &a.id)));
    }
    Ok(Grouped {
        groups,
        total_groups,
    })
}

/// The `per_group` newest runs (by start time) matching `filter` of each group, in one
/// statement: one index range per group.
async fn newest_of_groups(
    db: &Db,
    org_id: &str,
    filter: &ExecutionFilter,
    groups: &[RunGroup],
    per_group: i64,
) -> CoreResult<Vec<Execution>> {
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let columns = execution_columns("");
    let mut parts = Vec::with_capacity(groups.len());
    let mut binds = Vec::new();
    for (i, group) in groups.iter().enumerate() {
        let (condition, mut own) = filter_condition(org_id, filter, binds.len() + 1);
        let group_param = format!("${}", binds.len() + own.len() + 1);
        let key = group.group.key();
        if !key.is_empty() {
            own.push(Bind::Text(key.to_string()));
        }
        let limit_param = format!("${}", binds.len() + own.len() + 1);
        own.push(Bind::Int(per_group));
        parts.push(format!(
            "SELECT * FROM (SELECT {columns} FROM executions
                WHERE {condition} AND {group}
                ORDER BY {START_TIME_SQL} DESC, id DESC LIMIT {limit_param}) AS g{i}",
            group = group_condition(key, &group_param),
        ));
        binds.extend(own);
    }
    let rows = bind_all(
        sqlx::query(AssertSqlSafe(parts.join(" UNION ALL "))),
        &binds,
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| execution_from_row(row, false))
        .collect()
}

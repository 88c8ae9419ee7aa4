//! Queries behind projects, executions and report files. Every limit is checked and acted
//! on inside one transaction that first locks the organization; every counter (test runs
//! per month, storage bytes) changes in the transaction that changes what it counts.

use std::future::Future;
use std::pin::Pin;

use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Executor, Row};

use super::types::{
    Execution, ExecutionChange, ExecutionFilter, ExecutionLink, NewExecution, Project, ReportFile,
    Status,
};
use crate::store::{CoreError, CoreResult, SqlStore, Tx};
use crate::timestamp::Timestamp;
use orgd_core::plans::Limits;
use orgd_core::usage::Period;

pub enum NewProjectOutcome {
    Created(Project),
    LimitReached { limit: i64, current: i64 },
    Duplicate,
}

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

pub enum Reservation {
    Reserved,
    ExecutionNotFound,
    StorageLimit { used: i64, limit: i64 },
}

pub enum ReportCommit {
    Created,
    Replaced,
    /// The execution was deleted while the bytes were arriving.
    ExecutionGone,
    /// The storage could not make the file visible; nothing was recorded.
    PublishFailed(anyhow::Error),
}

/// Makes an uploaded file visible; run inside the transaction that records it, so rows
/// and files change in the same order under concurrent uploads of one path.
pub type Publish<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

#[async_trait::async_trait]
pub trait ExecutionStore: Send + Sync + 'static {
    async fn create_project(
        &self,
        org_id: &str,
        project: &Project,
    ) -> CoreResult<NewProjectOutcome>;
    async fn projects(&self, org_id: &str) -> CoreResult<Vec<Project>>;
    async fn delete_project(&self, org_id: &str, id: &str) -> CoreResult<bool>;

    /// Creates the execution and counts it in this month's test runs, unless a limit or the
    /// uniqueness of its taskId refuses it.
    async fn create_execution(
        &self,
        org_id: &str,
        new: &NewExecution,
        now: i64,
    ) -> CoreResult<NewExecutionOutcome>;
    async fn update_execution(
        &self,
        org_id: &str,
        task_id: &str,
        change: &ExecutionChange,
        now: i64,
    ) -> CoreResult<UpdateOutcome>;
    /// A live (not deleted) execution with its output and links.
    async fn execution(&self, org_id: &str, task_id: &str) -> CoreResult<Option<Execution>>;
    /// A page of live executions, newest first, with their links, and how many match.
    async fn executions(
        &self,
        org_id: &str,
        filter: &ExecutionFilter,
    ) -> CoreResult<(Vec<Execution>, i64)>;
    /// Soft-deletes a live execution and forgets its report files, freeing their storage.
    async fn delete_execution(&self, org_id: &str, task_id: &str, now: i64) -> CoreResult<bool>;

    /// Counts `bytes` against the storage limit before they are written, as if the file
    /// now at `path` (if any) were already gone. Until `commit_report` or
    /// `release_report_bytes`, the counter holds both.
    async fn reserve_report_bytes(
        &self,
        org_id: &str,
        task_id: &str,
        path: &str,
        bytes: i64,
    ) -> CoreResult<Reservation>;
    /// Records a file of `size` bytes (reserved before) and publishes it; the bytes of the
    /// file it replaces are released.
    async fn commit_report(
        &self,
        org_id: &str,
        task_id: &str,
        path: &str,
        size: i64,
        now: i64,
        publish: Publish<'_>,
    ) -> CoreResult<ReportCommit>;
    async fn release_report_bytes(&self, org_id: &str, bytes: i64) -> CoreResult<()>;
    /// The files of a live execution, by path; `None` when there is no such execution.
    async fn report_files(
        &self,
        org_id: &str,
        task_id: &str,
    ) -> CoreResult<Option<Vec<ReportFile>>>;
    async fn execution_exists(&self, org_id: &str, task_id: &str) -> CoreResult<bool>;
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

fn project_from_row(row: &AnyRow) -> CoreResult<Project> {
    Ok(Project {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        slug: row.try_get("slug")?,
        created_at: Timestamp(row.try_get("created_at")?),
    })
}

/// `$from, $from+1, ...` for `count` values.
fn placeholders(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl SqlStore {
    /// Attaches the ticket links of every execution in `page` with one query.
    async fn attach_links(&self, org_id: &str, page: &mut [Execution]) -> CoreResult<()> {
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
        for row in query.fetch_all(self.pool()).await? {
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

    async fn report_size(
        &self,
        tx: &mut Tx,
        org_id: &str,
        task_id: &str,
        path: &str,
    ) -> CoreResult<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT size FROM report_files WHERE organization_id = $1 AND task_id = $2 AND path = $3",
        )
        .bind(org_id)
        .bind(task_id)
        .bind(path)
        .fetch_optional(&mut **tx)
        .await?)
    }

    /// Locks the organization for the rest of `tx` and reads its limits; it must exist
    /// (the caller is one of its users).
    async fn lock_with_limits(&self, tx: &mut Tx, org_id: &str) -> CoreResult<Limits> {
        orgd_core::organizations::lock_limits(tx, org_id)
            .await?
            .ok_or_else(|| CoreError::Corrupt(format!("organization {org_id} vanished")))
    }
}

/// Takes `bytes` off the organization's storage counter.
async fn subtract_storage<'e>(
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

async fn is_live_execution<'e>(
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

#[async_trait::async_trait]
impl ExecutionStore for SqlStore {
    async fn create_project(
        &self,
        org_id: &str,
        project: &Project,
    ) -> CoreResult<NewProjectOutcome> {
        let mut tx = self.begin_write().await?;
        let limits = self.lock_with_limits(&mut tx, org_id).await?;
        if let Some(limit) = limits.max_projects {
            let current: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM projects WHERE organization_id = $1")
                    .bind(org_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if current >= limit {
                return Ok(NewProjectOutcome::LimitReached { limit, current });
            }
        }
        let inserted = sqlx::query(
            "INSERT INTO projects (id, organization_id, name, slug, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&project.id)
        .bind(org_id)
        .bind(&project.name)
        .bind(&project.slug)
        .bind(project.created_at.0)
        .execute(&mut *tx)
        .await;
        match inserted.map_err(CoreError::from) {
            Err(CoreError::Conflict(_)) => {
                return Ok(NewProjectOutcome::Duplicate);
            }
            other => other?,
        };
        tx.commit().await?;
        Ok(NewProjectOutcome::Created(project.clone()))
    }

    async fn projects(&self, org_id: &str) -> CoreResult<Vec<Project>> {
        let rows = sqlx::query(
            "SELECT id, name, slug, created_at FROM projects WHERE organization_id = $1 ORDER BY created_at, id",
        )
        .bind(org_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(project_from_row).collect()
    }

    async fn delete_project(&self, org_id: &str, id: &str) -> CoreResult<bool> {
        let deleted = sqlx::query("DELETE FROM projects WHERE organization_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn create_execution(
        &self,
        org_id: &str,
        new: &NewExecution,
        now: i64,
    ) -> CoreResult<NewExecutionOutcome> {
        let period = Period::containing(now);
        let mut tx = self.begin_write().await?;
        let limits = self.lock_with_limits(&mut tx, org_id).await?;
        // Deleted executions keep their taskId taken.
        let taken: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM executions WHERE organization_id = $1 AND task_id = $2",
        )
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
        if let Some(limit) = limits.max_test_runs {
            let used: i64 = sqlx::query_scalar(
                "SELECT COALESCE(MAX(test_runs), 0) FROM usage_counters WHERE organization_id = $1 AND period = $2",
            )
            .bind(org_id)
            .bind(&period.key)
            .fetch_one(&mut *tx)
            .await?;
            if used >= limit {
                return Ok(NewExecutionOutcome::TestRunLimit { used, limit });
            }
        }
        if let Some(limit) = limits.max_concurrent_runs {
            let active: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM executions
                 WHERE organization_id = $1 AND status IN ('PENDING', 'RUNNING') AND deleted_at IS NULL",
            )
            .bind(org_id)
            .fetch_one(&mut *tx)
            .await?;
            if active >= limit {
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
        sqlx::query(
            "INSERT INTO usage_counters (organization_id, period, test_runs, ai_analyses) VALUES ($1, $2, 1, 0)
             ON CONFLICT (organization_id, period) DO UPDATE SET test_runs = usage_counters.test_runs + 1",
        )
        .bind(org_id)
        .bind(&period.key)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(NewExecutionOutcome::Created(Box::new(Execution {
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
        })))
    }

    async fn update_execution(
        &self,
        org_id: &str,
        task_id: &str,
        change: &ExecutionChange,
        now: i64,
    ) -> CoreResult<UpdateOutcome> {
        let status = change.status.map(Status::as_str);
        let finished = change.status.is_some_and(Status::is_finished);
        let mut tx = self.begin_write().await?;
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
        if updated.rows_affected() > 0 && change.status.is_some_and(Status::is_failure) {
            crate::analysis::store::queue_analysis(&mut tx, org_id, task_id, now).await?;
        }
        tx.commit().await?;
        let current = self.execution(org_id, task_id).await?;
        Ok(match current {
            None => UpdateOutcome::NotFound,
            Some(execution) if updated.rows_affected() == 0 => {
                UpdateOutcome::Finished(execution.status)
            }
            Some(execution) => UpdateOutcome::Updated(Box::new(execution)),
        })
    }

    async fn execution(&self, org_id: &str, task_id: &str) -> CoreResult<Option<Execution>> {
        let sql = format!(
            "SELECT {EXECUTION_COLUMNS}, output FROM executions
             WHERE organization_id = $1 AND task_id = $2 AND deleted_at IS NULL"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(task_id)
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut page = [execution_from_row(&row, true)?];
        self.attach_links(org_id, &mut page).await?;
        self.attach_analyses(org_id, &mut page).await?;
        let [execution] = page;
        Ok(Some(execution))
    }

    async fn executions(
        &self,
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
            .fetch_all(self.pool())
            .await?;
        let total = count_query.fetch_one(self.pool()).await?;
        let mut page = rows
            .iter()
            .map(|row| execution_from_row(row, false))
            .collect::<CoreResult<Vec<_>>>()?;
        self.attach_links(org_id, &mut page).await?;
        self.attach_analyses(org_id, &mut page).await?;
        Ok((page, total))
    }

    async fn delete_execution(&self, org_id: &str, task_id: &str, now: i64) -> CoreResult<bool> {
        let mut tx = self.begin_write().await?;
        // Serialized with uploads to this organization, so no file lands after the delete.
        self.lock_organization(&mut tx, org_id).await?;
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

    async fn reserve_report_bytes(
        &self,
        org_id: &str,
        task_id: &str,
        path: &str,
        bytes: i64,
    ) -> CoreResult<Reservation> {
        let mut tx = self.begin_write().await?;
        let limits = self.lock_with_limits(&mut tx, org_id).await?;
        if !is_live_execution(&mut *tx, org_id, task_id).await? {
            return Ok(Reservation::ExecutionNotFound);
        }
        let replaced = self
            .report_size(&mut tx, org_id, task_id, path)
            .await?
            .unwrap_or(0);
        let limit = limits.max_storage_bytes.unwrap_or(i64::MAX);
        let reserved = sqlx::query(
            "UPDATE organizations SET storage_used_bytes = storage_used_bytes + $2
             WHERE id = $1 AND storage_used_bytes + $2 - $3 <= $4",
        )
        .bind(org_id)
        .bind(bytes)
        .bind(replaced)
        .bind(limit)
        .execute(&mut *tx)
        .await?;
        if reserved.rows_affected() == 0 {
            let used: i64 =
                sqlx::query_scalar("SELECT storage_used_bytes FROM organizations WHERE id = $1")
                    .bind(org_id)
                    .fetch_one(&mut *tx)
                    .await?;
            return Ok(Reservation::StorageLimit { used, limit });
        }
        tx.commit().await?;
        Ok(Reservation::Reserved)
    }

    async fn commit_report(
        &self,
        org_id: &str,
        task_id: &str,
        path: &str,
        size: i64,
        now: i64,
        publish: Publish<'_>,
    ) -> CoreResult<ReportCommit> {
        let mut tx = self.begin_write().await?;
        self.lock_organization(&mut tx, org_id).await?;
        if !is_live_execution(&mut *tx, org_id, task_id).await? {
            return Ok(ReportCommit::ExecutionGone);
        }
        let replaced = self.report_size(&mut tx, org_id, task_id, path).await?;
        sqlx::query(
            "INSERT INTO report_files (organization_id, task_id, path, size, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (organization_id, task_id, path) DO UPDATE SET size = $4, updated_at = $5",
        )
        .bind(org_id)
        .bind(task_id)
        .bind(path)
        .bind(size)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let old = replaced.unwrap_or(0);
        sqlx::query(
            "UPDATE executions SET report_bytes = report_bytes + $3 - $4 WHERE organization_id = $1 AND task_id = $2",
        )
        .bind(org_id)
        .bind(task_id)
        .bind(size)
        .bind(old)
        .execute(&mut *tx)
        .await?;
        // The reservation already counts `size`; the replaced file's bytes go.
        subtract_storage(&mut *tx, org_id, old).await?;
        if let Err(e) = publish.await {
            return Ok(ReportCommit::PublishFailed(e));
        }
        tx.commit().await?;
        Ok(if replaced.is_some() {
            ReportCommit::Replaced
        } else {
            ReportCommit::Created
        })
    }

    async fn release_report_bytes(&self, org_id: &str, bytes: i64) -> CoreResult<()> {
        subtract_storage(self.pool(), org_id, bytes).await
    }

    async fn report_files(
        &self,
        org_id: &str,
        task_id: &str,
    ) -> CoreResult<Option<Vec<ReportFile>>> {
        if !self.execution_exists(org_id, task_id).await? {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT path, size, updated_at FROM report_files WHERE organization_id = $1 AND task_id = $2 ORDER BY path",
        )
        .bind(org_id)
        .bind(task_id)
        .fetch_all(self.pool())
        .await?;
        let files = rows
            .iter()
            .map(|row| {
                Ok(ReportFile {
                    path: row.try_get("path")?,
                    size: row.try_get("size")?,
                    updated_at: Timestamp(row.try_get("updated_at")?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(Some(files))
    }

    async fn execution_exists(&self, org_id: &str, task_id: &str) -> CoreResult<bool> {
        is_live_execution(self.pool(), org_id, task_id).await
    }
}

//! Report files as the database knows them: bytes reserved against the storage limit before
//! they land (`rules::storage`), recorded and published in one transaction, released when an
//! upload fails.

use std::future::Future;
use std::pin::Pin;

use sqlx::Row;

use super::ReportFile;
use super::runs::{execution_exists, is_live_execution, subtract_storage};
use crate::db::{Db, Tx};
use crate::error::{CoreError, CoreResult};
use crate::organizations;
use crate::rules::storage::{self as storage_rules, StorageLimit};
use crate::rules::thresholds::{self, Figure};
use crate::usage::Resource;

pub enum Reservation {
    Reserved,
    ExecutionNotFound,
    StorageLimit { used: i64, limit: i64 },
}

pub enum ReportCommit {
    Created,
    /// Replaced a file; `object` is the replaced object, to remove now that nothing points
    /// to it.
    Replaced {
        object: Option<String>,
    },
    /// The execution was deleted while the bytes were arriving.
    ExecutionGone,
    /// The storage could not make the file visible; nothing was recorded.
    PublishFailed(anyhow::Error),
}

/// Makes an uploaded file visible; run inside the transaction that records it, so rows
/// and files change in the same order under concurrent uploads of one path.
pub type Publish<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

/// The recorded file at `path`: its size and the object holding it (object stores).
async fn recorded_file(
    tx: &mut Tx,
    org_id: &str,
    task_id: &str,
    path: &str,
) -> CoreResult<Option<(i64, Option<String>)>> {
    Ok(sqlx::query_as(
        "SELECT size, object_key FROM report_files WHERE organization_id = $1 AND task_id = $2 AND path = $3",
    )
    .bind(org_id)
    .bind(task_id)
    .bind(path)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Counts `bytes` against the storage limit before they are written, as if the file
/// now at `path` (if any) were already gone. Until `commit_report` or
/// `release_report_bytes`, the counter holds both.
pub async fn reserve_report_bytes(
    db: &Db,
    org_id: &str,
    task_id: &str,
    path: &str,
    bytes: i64,
) -> CoreResult<Reservation> {
    let mut tx = db.begin_write().await?;
    let limits = organizations::lock_limits(&mut tx, org_id)
        .await?
        .ok_or_else(|| CoreError::Corrupt(format!("organization {org_id} vanished")))?;
    if !is_live_execution(&mut *tx, org_id, task_id).await? {
        return Ok(Reservation::ExecutionNotFound);
    }
    let replaced = recorded_file(&mut tx, org_id, task_id, path)
        .await?
        .map_or(0, |(size, _)| size);
    if let Err(StorageLimit { used, limit }) =
        storage_rules::reserve(&mut tx, org_id, &limits, bytes, replaced).await?
    {
        return Ok(Reservation::StorageLimit { used, limit });
    }
    tx.commit().await?;
    Ok(Reservation::Reserved)
}

/// A completed upload to record: `size` bytes (reserved before) at `path`, held by `object`
/// when the store keeps each upload under its own key.
pub struct NewReport<'a> {
    pub org_id: &'a str,
    pub task_id: &'a str,
    pub path: &'a str,
    pub object: Option<&'a str>,
    pub size: i64,
}

/// Records a file and publishes it; the row now points to its object (the last commit
/// wins), and the bytes of the file it replaces are released.
pub async fn commit_report(
    db: &Db,
    file: NewReport<'_>,
    now: i64,
    publish: Publish<'_>,
) -> CoreResult<ReportCommit> {
    let NewReport {
        org_id,
        task_id,
        path,
        object,
        size,
    } = file;
    let mut tx = db.begin_write().await?;
    tx.lock_organization(org_id).await?;
    if !is_live_execution(&mut *tx, org_id, task_id).await? {
        return Ok(ReportCommit::ExecutionGone);
    }
    let replaced = recorded_file(&mut tx, org_id, task_id, path).await?;
    sqlx::query(
        "INSERT INTO report_files (organization_id, task_id, path, size, updated_at, object_key) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (organization_id, task_id, path) DO UPDATE SET size = $4, updated_at = $5, object_key = $6",
    )
    .bind(org_id)
    .bind(task_id)
    .bind(path)
    .bind(size)
    .bind(now)
    .bind(object)
    .execute(&mut *tx)
    .await?;
    let old = replaced.as_ref().map_or(0, |(size, _)| *size);
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
    // The committed bytes changed by `size - old`: they may cross a threshold.
    let limit = organizations::limits_in(&mut tx, org_id)
        .await?
        .and_then(|limits| limits.max_storage_bytes);
    let used: i64 =
        sqlx::query_scalar("SELECT storage_used_bytes FROM organizations WHERE id = $1")
            .bind(org_id)
            .fetch_one(&mut *tx)
            .await?;
    let figure = |used| Figure { used, limit };
    thresholds::record(
        &mut tx,
        org_id,
        Resource::Storage,
        figure(used - (size - old)),
        figure(used),
        now,
    )
    .await?;
    if let Err(e) = publish.await {
        return Ok(ReportCommit::PublishFailed(e));
    }
    tx.commit().await?;
    Ok(match replaced {
        Some((_, object)) => ReportCommit::Replaced { object },
        None => ReportCommit::Created,
    })
}

pub async fn release_report_bytes(db: &Db, org_id: &str, bytes: i64) -> CoreResult<()> {
    subtract_storage(db.pool(), org_id, bytes).await
}

/// Where the file at `path` of a live execution is: `None` when there is no such execution,
/// else the object its row points to (`None` without a row or an object).
pub async fn report_object(
    db: &Db,
    org_id: &str,
    task_id: &str,
    path: &str,
) -> CoreResult<Option<Option<String>>> {
    // One query: the live execution, and its file's row if there is one.
    let object: Option<Option<String>> = sqlx::query_scalar(
        "SELECT f.object_key FROM executions e
         LEFT JOIN report_files f
           ON f.organization_id = e.organization_id AND f.task_id = e.task_id AND f.path = $3
         WHERE e.organization_id = $1 AND e.task_id = $2 AND e.deleted_at IS NULL",
    )
    .bind(org_id)
    .bind(task_id)
    .bind(path)
    .fetch_optional(db.pool())
    .await?;
    Ok(object)
}

/// The files of a live execution, by path; `None` when there is no such execution.
pub async fn report_files(
    db: &Db,
    org_id: &str,
    task_id: &str,
) -> CoreResult<Option<Vec<ReportFile>>> {
    if !execution_exists(db, org_id, task_id).await? {
        return Ok(None);
    }
    let rows = sqlx::query(
        "SELECT path, size, updated_at FROM report_files WHERE organization_id = $1 AND task_id = $2 ORDER BY path",
    )
    .bind(org_id)
    .bind(task_id)
    .fetch_all(db.pool())
    .await?;
    let files = rows
        .iter()
        .map(|row| {
            Ok(ReportFile {
                path: row.try_get("path")?,
                size: row.try_get("size")?,
                updated_at: row.try_get("updated_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Some(files))
}

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
    Replaced,
    /// The execution was deleted while the bytes were arriving.
    ExecutionGone,
    /// The storage could not make the file visible; nothing was recorded.
    PublishFailed(anyhow::Error),
}

/// Makes an uploaded file visible; run inside the transaction that records it, so rows
/// and files change in the same order under concurrent uploads of one path.
pub type Publish<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

async fn report_size(
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
    let replaced = report_size(&mut tx, org_id, task_id, path)
        .await?
        .unwrap_or(0);
    if let Err(StorageLimit { used, limit }) =
        storage_rules::reserve(&mut tx, org_id, &limits, bytes, replaced).await?
    {
        return Ok(Reservation::StorageLimit { used, limit });
    }
    tx.commit().await?;
    Ok(Reservation::Reserved)
}

/// Records a file of `size` bytes (reserved before) and publishes it; the bytes of the
/// file it replaces are released.
pub async fn commit_report(
    db: &Db,
    org_id: &str,
    task_id: &str,
    path: &str,
    size: i64,
    now: i64,
    publish: Publish<'_>,
) -> CoreResult<ReportCommit> {
    let mut tx = db.begin_write().await?;
    tx.lock_organization(org_id).await?;
    if !is_live_execution(&mut *tx, org_id, task_id).await? {
        return Ok(ReportCommit::ExecutionGone);
    }
    let replaced = report_size(&mut tx, org_id, task_id, path).await?;
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
    Ok(if replaced.is_some() {
        ReportCommit::Replaced
    } else {
        ReportCommit::Created
    })
}

pub async fn release_report_bytes(db: &Db, org_id: &str, bytes: i64) -> CoreResult<()> {
    subtract_storage(db.pool(), org_id, bytes).await
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

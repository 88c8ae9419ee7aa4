//! Projects group runs; `maxProjects` bounds how many an organization has (`rules::projects`).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::Project;
use crate::db::Db;
use crate::error::{CoreError, CoreResult};
use crate::idempotency::{self, Replay};
use crate::organizations;
use crate::rules::projects::{self as project_rules, ProjectLimit};

pub enum NewProjectOutcome {
    Created(Project),
    LimitReached { limit: i64, current: i64 },
    Duplicate,
}

fn project_from_row(row: &AnyRow) -> CoreResult<Project> {
    Ok(Project {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        slug: row.try_get("slug")?,
        created_at: row.try_get("created_at")?,
    })
}

pub async fn create_project(
    db: &Db,
    org_id: &str,
    project: &Project,
    replay: Option<&Replay<'_, Project>>,
) -> CoreResult<NewProjectOutcome> {
    let mut tx = db.begin_write().await?;
    let limits = organizations::lock_limits(&mut tx, org_id)
        .await?
        .ok_or_else(|| CoreError::Corrupt(format!("organization {org_id} vanished")))?;
    if let Err(ProjectLimit { limit, current }) =
        project_rules::admit(&mut tx, org_id, &limits).await?
    {
        return Ok(NewProjectOutcome::LimitReached { limit, current });
    }
    let inserted = sqlx::query(
        "INSERT INTO projects (id, organization_id, name, slug, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&project.id)
    .bind(org_id)
    .bind(&project.name)
    .bind(&project.slug)
    .bind(project.created_at)
    .execute(&mut *tx)
    .await;
    match inserted.map_err(CoreError::from) {
        Err(CoreError::Conflict(_)) => {
            return Ok(NewProjectOutcome::Duplicate);
        }
        other => other?,
    };
    idempotency::store(&mut tx, replay, project).await?;
    tx.commit().await?;
    Ok(NewProjectOutcome::Created(project.clone()))
}

pub async fn projects(db: &Db, org_id: &str) -> CoreResult<Vec<Project>> {
    let rows = sqlx::query(
        "SELECT id, name, slug, created_at FROM projects WHERE organization_id = $1 ORDER BY created_at, id",
    )
    .bind(org_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(project_from_row).collect()
}

pub async fn delete_project(db: &Db, org_id: &str, id: &str) -> CoreResult<bool> {
    let deleted = sqlx::query("DELETE FROM projects WHERE organization_id = $1 AND id = $2")
        .bind(org_id)
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(deleted.rows_affected() > 0)
}

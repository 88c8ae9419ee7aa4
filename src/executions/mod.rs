//! Projects, executions and their report files (API.md, "Executions, projects and reports").
//! Every `/api/executions*` request is counted in the organization's ingest bucket.

pub mod reports;
pub mod storage;
pub mod store;
pub mod types;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::auth::{CurrentUser, Role};
use crate::clock::Timestamp;
use crate::error::{ApiError, OrInternal};
use crate::http::{JsonBody, Object, Page, PageQuery, PathParams};
use crate::organization::usage::limit_refusal;
use crate::state::AppState;
use store::{NewExecutionOutcome, NewProjectOutcome, UpdateOutcome};
use types::{ExecutionChange, ExecutionFilter, NewExecution, Project, Status, TaskId};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/projects", get(list_projects).post(create_project))
        .route("/api/projects/{id}", delete(delete_project))
        .route("/api/executions", get(list).post(create))
        .route(
            "/api/executions/{task_id}",
            get(show).patch(update).delete(remove),
        )
        .merge(reports::router())
        .merge(crate::analysis::router())
}

pub(crate) fn execution_not_found() -> ApiError {
    ApiError::not_found(
        "Execution not found",
        "No execution with this taskId in your organization",
    )
}

/// A taskId from the URL; one that could never have been created does not exist.
pub(crate) fn task_in_path(raw: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(raw).ok_or_else(execution_not_found)
}

fn execution_body(execution: &types::Execution, with_output: bool) -> Json<Value> {
    Json(json!({"success": true, "data": {"execution": execution.view(with_output)}}))
}

async fn create_project(
    State(app): State<AppState>,
    user: CurrentUser,
    body: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    user.require(Role::WRITERS)?;
    let body = body.required()?;
    let name = body
        .required_str("name", ApiError::invalid("name", "name is required"))
        .and_then(|raw| {
            types::project_name(raw)
                .ok_or_else(|| ApiError::invalid("name", "name must be 1 to 100 characters"))
        })?;
    let now = app.now();
    let project = Project {
        id: crate::id::new_id(now),
        slug: crate::auth::slugify(&name),
        name,
        created_at: Timestamp(now),
    };
    match app
        .store
        .create_project(user.org_id(), &project)
        .await
        .or_internal("Failed to create project")?
    {
        NewProjectOutcome::Created(project) => {
            Ok((StatusCode::CREATED, Json(json!({"success": true, "data": {"project": project}}))))
        }
        NewProjectOutcome::Duplicate => Err(ApiError::conflict(
            "Project already exists",
            "A project with this name already exists in your organization",
        )),
        NewProjectOutcome::LimitReached { limit, current } => Err(ApiError::Refused {
            status: StatusCode::FORBIDDEN,
            error: "Project limit reached",
            message: format!("Your plan allows {limit} project(s) per organization. Upgrade your plan to create more.")
                .into(),
            extra: Map::from_iter([("limit".into(), limit.into()), ("current".into(), current.into())]),
        }),
    }
}

async fn list_projects(
    State(app): State<AppState>,
    user: CurrentUser,
) -> Result<Json<Value>, ApiError> {
    let projects = app
        .store
        .projects(user.org_id())
        .await
        .or_internal("Failed to fetch projects")?;
    Ok(Json(
        json!({"success": true, "data": {"projects": projects}}),
    ))
}

async fn delete_project(
    State(app): State<AppState>,
    user: CurrentUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    user.require(Role::WRITERS)?;
    let not_found = || {
        ApiError::not_found(
            "Project not found",
            "No project with this id in your organization",
        )
    };
    if !crate::id::is_valid(&id) {
        return Err(not_found());
    }
    let deleted = app
        .store
        .delete_project(user.org_id(), &id)
        .await
        .or_internal("Failed to delete project")?;
    if !deleted {
        return Err(not_found());
    }
    Ok(Json(
        json!({"success": true, "message": "Project deleted successfully"}),
    ))
}

/// An optional string field of at most `max` characters, not empty.
fn short_text(body: &Object, field: &str, max: usize) -> Result<Option<String>, ApiError> {
    body.opt_str(field)?
        .map(|s| {
            if s.is_empty() || s.chars().count() > max {
                Err(ApiError::invalid(
                    field,
                    format!("{field} must be 1 to {max} characters"),
                ))
            } else {
                Ok(s.to_string())
            }
        })
        .transpose()
}

fn parse_new_execution(
    body: &Object,
    user: &CurrentUser,
    now: i64,
) -> Result<NewExecution, ApiError> {
    let id = crate::id::new_id(now);
    let task_id = match body.opt_str("taskId")? {
        None => TaskId::parse(&id),
        Some(raw) => TaskId::parse(raw),
    }
    .ok_or_else(|| {
        ApiError::invalid(
            "taskId",
            "taskId must be 1 to 128 of A-Z a-z 0-9 . _ : - (not . or ..)",
        )
    })?;
    let project_id = body
        .opt_str("projectId")?
        .map(|raw| {
            crate::id::is_valid(raw)
                .then(|| raw.to_string())
                .ok_or_else(|| ApiError::invalid("projectId", "projectId must be a project id"))
        })
        .transpose()?;
    let status = match body.opt_str("status")? {
        None => Status::Pending,
        Some("PENDING") => Status::Pending,
        Some("RUNNING") => Status::Running,
        Some(_) => {
            return Err(ApiError::invalid(
                "status",
                "status must be PENDING or RUNNING",
            ));
        }
    };
    let trigger = short_text(body, "trigger", 64)?;
    if trigger.as_deref().is_some_and(|t| {
        !t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    }) {
        return Err(ApiError::invalid(
            "trigger",
            "trigger must be made of A-Z a-z 0-9 . _ -",
        ));
    }
    Ok(NewExecution {
        id,
        task_id,
        project_id,
        status,
        trigger,
        group_name: short_text(body, "groupName", 128)?,
        created_by: user.id().to_string(),
    })
}

async fn create(
    State(app): State<AppState>,
    user: CurrentUser,
    body: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    user.require(Role::WRITERS)?;
    let now = app.now();
    let new = parse_new_execution(&body.or_empty()?, &user, now)?;
    let outcome = app
        .store
        .create_execution(user.org_id(), &new, now)
        .await
        .or_internal("Failed to create execution")?;
    match outcome {
        NewExecutionOutcome::Created(execution) => {
            Ok((StatusCode::CREATED, execution_body(&execution, false)))
        }
        NewExecutionOutcome::Duplicate => Err(ApiError::conflict(
            "Execution already exists",
            "An execution with this taskId already exists in your organization",
        )),
        NewExecutionOutcome::ProjectNotFound => Err(ApiError::not_found(
            "Project not found",
            "No project with this projectId in your organization",
        )),
        NewExecutionOutcome::TestRunLimit { used, limit } => Err(limit_refusal(
            "Test run limit exceeded",
            format!(
                "Your organization has reached the monthly test run limit ({used}/{limit}). Upgrade your plan to continue testing."
            ),
            used,
            limit,
        )),
        NewExecutionOutcome::ConcurrencyLimit { active, limit } => Err(ApiError::conflict(
            "Concurrent run limit reached",
            format!(
                "Your organization has {active} execution(s) pending or running; your plan allows {limit} at a time"
            ),
        )),
    }
}

const MAX_ERROR_BYTES: usize = 64 * 1024;
/// Only the end of a run's log is kept: that is where failures show.
const MAX_OUTPUT_BYTES: usize = 256 * 1024;

fn parse_change(body: &Object) -> Result<ExecutionChange, ApiError> {
    let status = body
        .opt_str("status")?
        .map(|raw| {
            Status::parse(raw)
                .filter(|s| *s != Status::Pending)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "status",
                        "status must be RUNNING, PASSED, FAILED, ERROR or UNSTABLE",
                    )
                })
        })
        .transpose()?;
    let error = body.opt_str("error")?;
    if error.is_some_and(|e| e.len() > MAX_ERROR_BYTES) {
        return Err(ApiError::invalid("error", "error cannot exceed 64 KiB"));
    }
    let change = ExecutionChange {
        status,
        error: error.map(str::to_string),
        output: body
            .opt_str("output")?
            .map(|o| types::utf8_tail(o, MAX_OUTPUT_BYTES).to_string()),
    };
    if change.status.is_none() && change.error.is_none() && change.output.is_none() {
        return Err(ApiError::bad_request(
            "Missing fields",
            "At least one field (status, error or output) is required",
        ));
    }
    Ok(change)
}

async fn update(
    State(app): State<AppState>,
    user: CurrentUser,
    PathParams(task_id): PathParams<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    user.require(Role::WRITERS)?;
    let task_id = task_in_path(&task_id)?;
    let change = parse_change(&body.required()?)?;
    let outcome = app
        .store
        .update_execution(user.org_id(), task_id.as_str(), &change, app.now())
        .await
        .or_internal("Failed to update execution")?;
    match outcome {
        UpdateOutcome::Updated(execution) => Ok(execution_body(&execution, false)),
        UpdateOutcome::NotFound => Err(execution_not_found()),
        UpdateOutcome::Finished(current) => Err(ApiError::conflict(
            "Invalid status transition",
            format!(
                "The execution is {} and can no longer change status",
                current.as_str()
            ),
        )),
    }
}

async fn show(
    State(app): State<AppState>,
    user: CurrentUser,
    PathParams(task_id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let task_id = task_in_path(&task_id)?;
    let execution = app
        .store
        .execution(user.org_id(), task_id.as_str())
        .await
        .or_internal("Failed to fetch execution")?
        .ok_or_else(execution_not_found)?;
    Ok(execution_body(&execution, true))
}

#[derive(Debug, serde::Deserialize)]
struct StatusQuery {
    status: Option<String>,
}

fn parse_filter(q: StatusQuery, page: Page) -> Result<ExecutionFilter, ApiError> {
    let mut statuses = Vec::new();
    for raw in q
        .status
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let status = Status::parse(&raw.to_ascii_uppercase()).ok_or_else(|| {
            ApiError::invalid("status", "status must be a comma-separated list of PENDING, RUNNING, PASSED, FAILED, ERROR, UNSTABLE")
        })?;
        if !statuses.contains(&status) {
            statuses.push(status);
        }
    }
    Ok(ExecutionFilter {
        statuses,
        limit: page.limit,
        offset: page.offset,
    })
}

async fn list(
    State(app): State<AppState>,
    user: CurrentUser,
    page: PageQuery,
    query: Result<Query<StatusQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let page = page.page_within(25, 100)?;
    let Query(query) = query.map_err(|_| {
        ApiError::bad_request("Invalid query", "The query string could not be parsed")
    })?;
    let filter = parse_filter(query, page)?;
    let (executions, total) = app
        .store
        .executions(user.org_id(), &filter)
        .await
        .or_internal("Failed to fetch executions")?;
    let executions: Vec<Value> = executions.iter().map(|e| e.view(false)).collect();
    Ok(Json(json!({
        "success": true,
        "data": {"executions": executions, "total": total, "limit": filter.limit, "offset": filter.offset}
    })))
}

async fn remove(
    State(app): State<AppState>,
    user: CurrentUser,
    PathParams(task_id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    user.require(Role::WRITERS)?;
    let task_id = task_in_path(&task_id)?;
    let deleted = app
        .store
        .delete_execution(user.org_id(), task_id.as_str(), app.now())
        .await
        .or_internal("Failed to delete execution")?;
    if !deleted {
        return Err(execution_not_found());
    }
    // The rows and their bytes are already gone from the counters; files left behind by a
    // failure here are found again by `orgd usage reconcile`.
    if let Err(e) = app.reports.delete(user.org_id(), &task_id).await {
        tracing::error!(error = %e, task_id = task_id.as_str(), "could not remove report files");
    }
    Ok(Json(
        json!({"success": true, "message": "Execution deleted successfully"}),
    ))
}

//! Projects, executions and their report files (API.md, "Executions, projects and reports").
//! Every `/api/executions*` request is counted in the organization's ingest bucket.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::Map;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::execution_views::{
    ProjectView, TaskIdParam, execution_not_found, execution_view, task_in_path,
};
use crate::auth::{CurrentUser, Role};
use crate::error::{ApiError, OrInternal};
use crate::http::idempotency::{Claimed, IdempotencyKey, answer, respond};
use crate::http::page::PageParams;
use crate::http::{Done, FromBody, JsonBody, Object, Page, PageQuery, PathParams};
use crate::openapi::ErrorBody;
use crate::routes::usage::limit_refusal;
use crate::state::AppState;
use orgd_core::executions::{
    Execution, ExecutionChange, ExecutionFilter, FinishNotice, NewExecution, NewExecutionOutcome,
    NewProjectOutcome, Project, Status, TaskId, UpdateOutcome, project_name,
};
use orgd_core::text::utf8_tail;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_projects, create_project))
        .routes(routes!(delete_project))
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
}

fn execution_body(
    execution: &orgd_core::executions::Execution,
    with_output: bool,
) -> Json<ExecutionResponse> {
    Json(ExecutionResponse {
        success: true,
        data: ExecutionData {
            execution: execution_view(execution, with_output),
        },
    })
}

#[derive(Serialize, ToSchema)]
pub struct ExecutionResponse {
    success: bool,
    data: ExecutionData,
}

#[derive(Serialize, ToSchema)]
pub struct ExecutionData {
    execution: super::execution_views::ExecutionView,
}

#[derive(Serialize, ToSchema)]
pub struct ExecutionPage {
    success: bool,
    data: ExecutionPageData,
}

#[derive(Serialize, ToSchema)]
pub struct ExecutionPageData {
    /// Newest first; without `output`.
    executions: Vec<super::execution_views::ExecutionView>,
    /// Live (not deleted) executions matching the filter.
    total: i64,
    limit: i64,
    offset: i64,
}

#[derive(ToSchema)]
pub struct ProjectRequest {
    /// Unique in the organization.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
}

impl FromBody for ProjectRequest {
    fn from_body(body: &Object) -> Result<Self, ApiError> {
        let name = body
            .required_str("name", ApiError::invalid("name", "name is required"))
            .and_then(|raw| {
                project_name(raw)
                    .ok_or_else(|| ApiError::invalid("name", "name must be 1 to 100 characters"))
            })?;
        Ok(Self { name })
    }
}

#[derive(Serialize, ToSchema)]
pub struct ProjectResponse {
    success: bool,
    data: ProjectData,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectData {
    project: ProjectView,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectList {
    success: bool,
    data: ProjectListData,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectListData {
    projects: Vec<ProjectView>,
}

#[utoipa::path(
    post,
    path = "/api/projects",
    tag = "executions",
    summary = "Create a project (admin, developer)",
    security(("bearerAuth" = [])),
    params(IdempotencyKey),
    request_body = ProjectRequest,
    responses(
        (status = 201, description = "Created; a replay carries `Idempotent-Replayed: true`", body = ProjectResponse),
        (status = 400, description = "`Invalid name`, `Missing body`, `Invalid JSON`, `Invalid Idempotency-Key`", body = ErrorBody),
        (status = 403, description = "`Forbidden` (viewers); `Project limit reached` with `limit` and `current`", body = ErrorBody),
        (status = 409, description = "`Project already exists`; `Request in progress` with this Idempotency-Key", body = ErrorBody),
        (status = 422, description = "`Idempotency key reused` with another body", body = ErrorBody),

    ),
)]
async fn create_project(
    State(app): State<AppState>,
    user: CurrentUser,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response, ApiError> {
    user.require(Role::WRITERS)?;
    let body = body.required()?;
    let ProjectRequest { name } = ProjectRequest::from_body(&body)?;
    let claim = match key
        .claim(&app, user.org_id(), "POST /api/projects", &body)
        .await?
    {
        Claimed::Replayed(response) => return Ok(response),
        Claimed::Fresh(claim) => claim,
    };
    let now = app.now();
    let project = Project {
        id: orgd_core::ids::new_id(now),
        slug: orgd_core::ids::slugify(&name),
        name,
        created_at: now,
    };
    let answer_for = |project: &Project| {
        answer(
            StatusCode::CREATED,
            &ProjectResponse {
                success: true,
                data: ProjectData {
                    project: ProjectView::from(project),
                },
            },
        )
    };
    let outcome = orgd_core::executions::create_project(
        &app.db,
        user.org_id(),
        &project,
        claim.replay(&answer_for).as_ref(),
    )
    .await
    .or_internal("Failed to create project");
    let result = match outcome {
        Err(e) => Err(e),
        Ok(NewProjectOutcome::Created(project)) => respond(&answer_for(&project)),
        Ok(NewProjectOutcome::Duplicate) => Err(ApiError::conflict(
            "Project already exists",
            "A project with this name already exists in your organization",
        )),
        Ok(NewProjectOutcome::LimitReached { limit, current }) => Err(ApiError::Refused {
            status: StatusCode::FORBIDDEN,
            error: "Project limit reached",
            message: format!("Your plan allows {limit} project(s) per organization. Upgrade your plan to create more.")
                .into(),
            extra: Map::from_iter([("limit".into(), limit.into()), ("current".into(), current.into())]),
        }),
    };
    claim.settle(result).await
}

#[utoipa::path(
    get,
    path = "/api/projects",
    tag = "executions",
    summary = "The organization's projects (all roles)",
    security(("bearerAuth" = [])),
    responses((status = 200, description = "The projects", body = ProjectList)),
)]
async fn list_projects(
    State(app): State<AppState>,
    user: CurrentUser,
) -> Result<Json<ProjectList>, ApiError> {
    let projects = orgd_core::executions::projects(&app.db, user.org_id())
        .await
        .or_internal("Failed to fetch projects")?;
    Ok(Json(ProjectList {
        success: true,
        data: ProjectListData {
            projects: projects.iter().map(ProjectView::from).collect(),
        },
    }))
}

#[utoipa::path(
    delete,
    path = "/api/projects/{id}",
    tag = "executions",
    summary = "Delete a project (admin, developer); its executions stay, without a project",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$", description = "The project's id")),
    responses(
        (status = 200, description = "Deleted", body = Done),
        (status = 403, description = "`Forbidden`: viewers", body = ErrorBody),
        (status = 404, description = "`Project not found`", body = ErrorBody),
    ),
)]
async fn delete_project(
    State(app): State<AppState>,
    user: CurrentUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<Done>, ApiError> {
    user.require(Role::WRITERS)?;
    let not_found = || {
        ApiError::not_found(
            "Project not found",
            "No project with this id in your organization",
        )
    };
    if !orgd_core::ids::is_valid(&id) {
        return Err(not_found());
    }
    let deleted = orgd_core::executions::delete_project(&app.db, user.org_id(), &id)
        .await
        .or_internal("Failed to delete project")?;
    if !deleted {
        return Err(not_found());
    }
    Ok(Done::new("Project deleted successfully"))
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

fn invalid_task_id() -> ApiError {
    ApiError::invalid(
        "taskId",
        "taskId must be 1 to 128 of A-Z a-z 0-9 . _ : - (not . or ..)",
    )
}

/// `POST /api/executions`; every field is optional.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewExecutionRequest {
    /// 1–128 of `A-Za-z0-9._:-`, unique in the organization (deleted executions included);
    /// generated when absent.
    // `TASK_ID_PATTERN`: utoipa takes only a literal here (a test holds the two together).
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    task_id: Option<TaskId>,
    /// A project of the organization.
    #[schema(pattern = "^[0-9a-f]{24}$")]
    project_id: Option<String>,
    /// `PENDING` (default) or `RUNNING`.
    #[schema(value_type = Option<String>, pattern = "^(PENDING|RUNNING)$")]
    status: Status,
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    trigger: Option<String>,
    #[schema(min_length = 1, max_length = 128)]
    group_name: Option<String>,
}

impl FromBody for NewExecutionRequest {
    fn from_body(body: &Object) -> Result<Self, ApiError> {
        let task_id = body
            .opt_str("taskId")?
            .map(|raw| TaskId::parse(raw).ok_or_else(invalid_task_id))
            .transpose()?;
        let project_id = body
            .opt_str("projectId")?
            .map(|raw| {
                orgd_core::ids::is_valid(raw)
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
        Ok(Self {
            task_id,
            project_id,
            status,
            trigger,
            group_name: short_text(body, "groupName", 128)?,
        })
    }
}

impl NewExecutionRequest {
    /// The execution to create as `id`; without a taskId of its own, its id is its taskId.
    fn into_new(self, id: String, created_by: &str) -> Result<NewExecution, ApiError> {
        let task_id = match self.task_id {
            Some(task_id) => task_id,
            None => TaskId::parse(&id).ok_or_else(invalid_task_id)?,
        };
        Ok(NewExecution {
            id,
            task_id,
            project_id: self.project_id,
            status: self.status,
            trigger: self.trigger,
            group_name: self.group_name,
            created_by: created_by.to_string(),
        })
    }
}

#[utoipa::path(
    post,
    path = "/api/executions",
    tag = "executions",
    summary = "Start recording a test execution (admin, developer, API key)",
    security(("bearerAuth" = []), ("apiKey" = [])),
    params(IdempotencyKey),
    request_body(content = NewExecutionRequest, description = "Optional"),
    responses(
        (status = 201, description = "Created; a replay carries `Idempotent-Replayed: true`", body = ExecutionResponse),
        (status = 400, description = "`Invalid taskId`, `Invalid projectId`, `Invalid status`, `Invalid trigger`, `Invalid groupName`, `Invalid JSON`, `Invalid Idempotency-Key`", body = ErrorBody),
        (status = 403, description = "`Forbidden` (viewers); `Test run limit exceeded` with `usage` (the month's runs)", body = ErrorBody),
        (status = 404, description = "`Project not found`", body = ErrorBody),
        (status = 409, description = "`Execution already exists`; `Concurrent run limit reached`; `Request in progress` with this Idempotency-Key", body = ErrorBody),
        (status = 422, description = "`Idempotency key reused` with another body", body = ErrorBody),

    ),
)]
async fn create(
    State(app): State<AppState>,
    user: CurrentUser,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response, ApiError> {
    user.require(Role::WRITERS)?;
    let now = app.now();
    let body = body.or_empty()?;
    let new =
        NewExecutionRequest::from_body(&body)?.into_new(orgd_core::ids::new_id(now), user.id())?;
    let claim = match key
        .claim(&app, user.org_id(), "POST /api/executions", &body)
        .await?
    {
        Claimed::Replayed(response) => return Ok(response),
        Claimed::Fresh(claim) => claim,
    };
    let answer_for =
        |execution: &Execution| answer(StatusCode::CREATED, &execution_body(execution, false).0);
    let outcome = orgd_core::executions::create_execution(
        &app.db,
        user.org_id(),
        &new,
        now,
        claim.replay(&answer_for).as_ref(),
    )
    .await
    .or_internal("Failed to create execution");
    let result = match outcome {
        Ok(NewExecutionOutcome::Duplicate) => Err(ApiError::conflict(
            "Execution already exists",
            "An execution with this taskId already exists in your organization",
        )),
        Ok(NewExecutionOutcome::ProjectNotFound) => Err(ApiError::not_found(
            "Project not found",
            "No project with this projectId in your organization",
        )),
        Ok(NewExecutionOutcome::TestRunLimit { used, limit }) => Err(limit_refusal(
            "Test run limit exceeded",
            format!(
                "Your organization has reached the monthly test run limit ({used}/{limit}). Upgrade your plan to continue testing."
            ),
            used,
            limit,
        )),
        Ok(NewExecutionOutcome::ConcurrencyLimit { active, limit }) => Err(ApiError::conflict(
            "Concurrent run limit reached",
            format!(
                "Your organization has {active} execution(s) pending or running; your plan allows {limit} at a time"
            ),
        )),
        Err(e) => Err(e),
        Ok(NewExecutionOutcome::Created(execution)) => respond(&answer_for(&execution)),
    };
    claim.settle(result).await
}

const MAX_ERROR_BYTES: usize = 64 * 1024;

/// How a finished run is announced: the single-execution view without `output`.
pub(crate) fn finish_notice(app: &AppState) -> FinishNotice {
    FinishNotice {
        view: |execution| {
            serde_json::to_value(execution_view(execution, false)).unwrap_or_default()
        },
        analysis_wait_ms: app.config.delivery.analysis_wait.as_millis() as i64,
    }
}
/// Only the end of a run's log is kept: that is where failures show.
const MAX_OUTPUT_BYTES: usize = 256 * 1024;

/// `PATCH /api/executions/{taskId}`: at least one field.
#[derive(ToSchema)]
pub struct ExecutionPatch {
    /// A finished execution (PASSED, FAILED, ERROR, UNSTABLE) never changes again.
    #[schema(
        value_type = Option<String>,
        pattern = "^(RUNNING|PASSED|FAILED|ERROR|UNSTABLE)$"
    )]
    status: Option<Status>,
    /// At most 64 KiB.
    error: Option<String>,
    /// The run's log; replaces the previous one; its last 256 KiB are kept.
    output: Option<String>,
}

impl FromBody for ExecutionPatch {
    fn from_body(body: &Object) -> Result<Self, ApiError> {
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
        let patch = Self {
            status,
            error: error.map(str::to_string),
            output: body
                .opt_str("output")?
                .map(|o| utf8_tail(o, MAX_OUTPUT_BYTES).to_string()),
        };
        if patch.status.is_none() && patch.error.is_none() && patch.output.is_none() {
            return Err(ApiError::bad_request(
                "Missing fields",
                "At least one field (status, error or output) is required",
            ));
        }
        Ok(patch)
    }
}

#[utoipa::path(
    patch,
    path = "/api/executions/{taskId}",
    tag = "executions",
    summary = "Move an execution along (admin, developer, API key); a failure may queue an AI analysis",
    security(("bearerAuth" = []), ("apiKey" = [])),
    params(TaskIdParam),
    request_body = ExecutionPatch,
    responses(
        (status = 200, description = "Updated", body = ExecutionResponse),
        (status = 400, description = "`Missing fields`, `Invalid status`, `Invalid error`, `Invalid output`, `Missing body`, `Invalid JSON`", body = ErrorBody),
        (status = 403, description = "`Forbidden`: viewers", body = ErrorBody),
        (status = 404, description = "`Execution not found`", body = ErrorBody),
        (status = 409, description = "`Invalid status transition`", body = ErrorBody),
    ),
)]
async fn update(
    State(app): State<AppState>,
    user: CurrentUser,
    PathParams(task_id): PathParams<String>,
    body: JsonBody,
) -> Result<Json<ExecutionResponse>, ApiError> {
    user.require(Role::WRITERS)?;
    let task_id = task_in_path(&task_id)?;
    let ExecutionPatch {
        status,
        error,
        output,
    } = body.parse()?;
    let change = ExecutionChange {
        status,
        error,
        output,
    };
    let outcome = orgd_core::executions::update_execution(
        &app.db,
        user.org_id(),
        task_id.as_str(),
        &change,
        app.now(),
        &finish_notice(&app),
    )
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

#[utoipa::path(
    get,
    path = "/api/executions/{taskId}",
    tag = "executions",
    summary = "One execution with its output, tickets and analysis (all roles, API key)",
    security(("bearerAuth" = []), ("apiKey" = [])),
    params(TaskIdParam),
    responses(
        (status = 200, description = "The execution", body = ExecutionResponse),
        (status = 404, description = "`Execution not found`", body = ErrorBody),
    ),
)]
async fn show(
    State(app): State<AppState>,
    user: CurrentUser,
    PathParams(task_id): PathParams<String>,
) -> Result<Json<ExecutionResponse>, ApiError> {
    let task_id = task_in_path(&task_id)?;
    let execution = orgd_core::executions::execution(&app.db, user.org_id(), task_id.as_str())
        .await
        .or_internal("Failed to fetch execution")?
        .ok_or_else(execution_not_found)?;
    Ok(execution_body(&execution, true))
}

#[derive(Debug, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StatusQuery {
    /// Comma-separated statuses to keep (`FAILED,ERROR`).
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

#[utoipa::path(
    get,
    path = "/api/executions",
    tag = "executions",
    summary = "The organization's executions, newest first (all roles, API key); `limit` 1–100, default 25",
    security(("bearerAuth" = []), ("apiKey" = [])),
    params(PageParams, StatusQuery),
    responses(
        (status = 200, description = "A page of executions", body = ExecutionPage),
        (status = 400, description = "`Invalid limit`, `Invalid offset`, `Invalid status`, `Invalid query`", body = ErrorBody),
    ),
)]
async fn list(
    State(app): State<AppState>,
    user: CurrentUser,
    page: PageQuery,
    query: Result<Query<StatusQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ExecutionPage>, ApiError> {
    let page = page.page_within(25, 100)?;
    let Query(query) = query.map_err(|_| {
        ApiError::bad_request("Invalid query", "The query string could not be parsed")
    })?;
    let filter = parse_filter(query, page)?;
    let (executions, total) = orgd_core::executions::executions(&app.db, user.org_id(), &filter)
        .await
        .or_internal("Failed to fetch executions")?;
    Ok(Json(ExecutionPage {
        success: true,
        data: ExecutionPageData {
            executions: executions
                .iter()
                .map(|e| execution_view(e, false))
                .collect(),
            total,
            limit: filter.limit,
            offset: filter.offset,
        },
    }))
}

#[utoipa::path(
    delete,
    path = "/api/executions/{taskId}",
    tag = "executions",
    summary = "Delete an execution and its report files (admin, developer, API key); it still counts toward the month's runs and its taskId stays taken",
    security(("bearerAuth" = []), ("apiKey" = [])),
    params(TaskIdParam),
    responses(
        (status = 200, description = "Deleted; its storage is freed", body = Done),
        (status = 403, description = "`Forbidden`: viewers", body = ErrorBody),
        (status = 404, description = "`Execution not found`", body = ErrorBody),
    ),
)]
async fn remove(
    State(app): State<AppState>,
    user: CurrentUser,
    PathParams(task_id): PathParams<String>,
) -> Result<Json<Done>, ApiError> {
    user.require(Role::WRITERS)?;
    let task_id = task_in_path(&task_id)?;
    let deleted = orgd_core::executions::delete_execution(
        &app.db,
        user.org_id(),
        task_id.as_str(),
        app.now(),
    )
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
    Ok(Done::new("Execution deleted successfully"))
}

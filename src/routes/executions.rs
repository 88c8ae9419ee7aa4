//! Projects, executions and their report files (API.md, "Executions, projects and reports").
//! Every `/api/executions*` request is counted in the organization's ingest bucket.

use crate::http::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::Map;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::execution_views::{
    CiContext, ExecutionView, ProjectView, TaskIdParam, create_run, execution_not_found,
    execution_view, run_fields, task_in_path,
};
use crate::auth::{CurrentUser, Role};
use crate::error::{ApiError, OrInternal};
use crate::http::idempotency::{Claimed, IdempotencyKey, answer, respond};
use crate::http::page::{CursorParams, PageParams};
use crate::http::{Done, FromBody, JsonBody, Object, Page, PageQuery, PathParams};
use crate::openapi::ErrorBody;
use crate::state::AppState;
use crate::timestamp::Timestamp;
use orgd_core::clock::{DAY_MS, parse_day, parse_rfc3339};
use orgd_core::cursor::Cursor;
use orgd_core::executions::{
    Execution, ExecutionChange, ExecutionFilter, FinishNotice, GroupFilter, NewExecution,
    NewProjectOutcome, Project, Source, Status, UpdateOutcome, project_name,
};
use orgd_core::pull_requests::Ci;
use orgd_core::text::utf8_tail;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_projects, create_project))
        .routes(routes!(delete_project))
        .routes(routes!(list, create))
        .routes(routes!(grouped))
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
#[serde(rename_all = "camelCase")]
pub struct ExecutionPageData {
    /// Newest first; without `output`.
    executions: Vec<super::execution_views::ExecutionView>,
    /// Live (not deleted) executions matching the filter, from counters kept with the runs.
    total: i64,
    limit: i64,
    offset: i64,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
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

/// `POST /api/executions`; every field is optional.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewExecutionRequest {
    /// 1–128 of `A-Za-z0-9._:-`, unique in the organization (deleted executions included),
    /// not `grouped`; generated when absent.
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    task_id: Option<orgd_core::executions::TaskId>,
    /// A project of the organization.
    #[schema(pattern = "^[0-9a-f]{24}$")]
    project_id: Option<String>,
    /// `PENDING` (default) or `RUNNING`.
    #[schema(value_type = Option<String>, pattern = "^(PENDING|RUNNING)$")]
    status: Option<Status>,
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    trigger: Option<String>,
    /// 1–128 characters; not `__ungrouped__` (the grouped view's name for runs without a group).
    #[schema(min_length = 1, max_length = 128)]
    group_name: Option<String>,
    /// The pull request to keep a comment on when the run finishes.
    #[schema(value_type = Option<CiContext>)]
    ci: Option<Ci>,
}

/// Checked in the order of the fields.
impl FromBody for NewExecutionRequest {
    fn from_body(body: &Object) -> Result<Self, ApiError> {
        let task_id = run_fields::task_id(body)?;
        let project_id = run_fields::project_id(body)?;
        let status = match body.opt_str("status")? {
            None | Some("PENDING") => Status::Pending,
            Some("RUNNING") => Status::Running,
            Some(_) => {
                return Err(ApiError::invalid(
                    "status",
                    "status must be PENDING or RUNNING",
                ));
            }
        };
        Ok(Self {
            task_id,
            project_id,
            status: Some(status),
            trigger: run_fields::trigger(body)?,
            group_name: run_fields::group_name(body)?,
            ci: run_fields::ci(body)?,
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
        (status = 400, description = "`Invalid taskId`, `Invalid projectId`, `Invalid status`, `Invalid trigger`, `Invalid groupName`, `Invalid ci`, `Invalid ci.provider`, `Invalid ci.pullRequest`, `Invalid ci.repository`, `Invalid ci.commitSha`, `Invalid ci.buildUrl`, `Invalid JSON`, `Invalid Idempotency-Key`", body = ErrorBody),
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
    let body = body.or_empty()?;
    let request = NewExecutionRequest::from_body(&body)?;
    let claim = match key
        .claim(&app, user.org_id(), "POST /api/executions", &body)
        .await?
    {
        Claimed::Replayed(response) => return Ok(response),
        Claimed::Fresh(claim) => claim,
    };
    let now = app.now();
    let id = orgd_core::ids::new_id(now);
    let new = NewExecution {
        task_id: run_fields::task_id_or(request.task_id, &id)?,
        id,
        project_id: request.project_id,
        status: request.status.unwrap_or(Status::Pending),
        trigger: request.trigger,
        group_name: request.group_name,
        created_by: user.id().to_string(),
        ci: request.ci,
        run_request: None,
    };
    let answer_for =
        |execution: &Execution| answer(StatusCode::CREATED, &execution_body(execution, false).0);
    create_run(&app, user.org_id(), &new, now, claim, &answer_for).await
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

/// The filters of `GET /api/executions` and `GET /api/executions/grouped`.
#[derive(Debug, serde::Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
struct RunQuery {
    /// Comma-separated statuses to keep (`FAILED,ERROR`), any case.
    status: Option<String>,
    /// The run request's `config.environment`, compared without regard to case.
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    environment: Option<String>,
    /// Runs of this group; `__ungrouped__`: runs without a group.
    #[param(min_length = 1, max_length = 128)]
    group_name: Option<String>,
    /// Runs whose `startTime` is at or after this date (`YYYY-MM-DD`, UTC midnight) or
    /// RFC 3339 date-time.
    start_after: Option<String>,
    /// Runs whose `startTime` is at or before this date-time, or within or before this date
    /// (`YYYY-MM-DD`: the whole UTC day is included).
    start_before: Option<String>,
    /// `external-ci` or `agnox-hosted`.
    #[param(pattern = "^(external-ci|agnox-hosted)$")]
    source: Option<String>,
}

/// A `startAfter` / `startBefore` value: a date's first (or, `end_of_day`, last) millisecond
/// in UTC, or an RFC 3339 date-time.
fn start_bound(field: &str, raw: &str, end_of_day: bool) -> Result<i64, ApiError> {
    let day = parse_day(raw).map(|start| {
        if end_of_day {
            start + DAY_MS - 1
        } else {
            start
        }
    });
    day.or_else(|| parse_rfc3339(raw)).ok_or_else(|| {
        ApiError::invalid(
            field,
            format!("{field} must be a date (YYYY-MM-DD) or an RFC 3339 date-time"),
        )
    })
}

fn parse_filter(
    q: RunQuery,
    page: Page,
    after: Option<Cursor>,
) -> Result<ExecutionFilter, ApiError> {
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
    let environment = q
        .environment
        .map(|raw| {
            orgd_core::executions::environment(&raw).ok_or_else(|| {
                ApiError::invalid(
                    "environment",
                    "environment must be 1 to 64 of A-Z a-z 0-9 . _ -",
                )
            })
        })
        .transpose()?;
    let group = q
        .group_name
        .map(|raw| {
            GroupFilter::parse(&raw).ok_or_else(|| {
                ApiError::invalid("groupName", "groupName must be 1 to 128 characters")
            })
        })
        .transpose()?;
    let source = q
        .source
        .map(|raw| {
            Source::parse(&raw).ok_or_else(|| {
                ApiError::invalid("source", "source must be external-ci or agnox-hosted")
            })
        })
        .transpose()?;
    Ok(ExecutionFilter {
        statuses,
        environment,
        group,
        source,
        start_after: q
            .start_after
            .map(|raw| start_bound("startAfter", &raw, false))
            .transpose()?,
        start_before: q
            .start_before
            .map(|raw| start_bound("startBefore", &raw, true))
            .transpose()?,
        limit: page.limit,
        offset: page.offset,
        after,
    })
}

/// The query of a list: 400 `Invalid query` when it cannot be read at all.
type QueryOf<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn read_query<T>(query: QueryOf<T>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|_| ApiError::bad_request("Invalid query", "The query string could not be parsed"))
}

#[utoipa::path(
    get,
    path = "/api/executions",
    tag = "executions",
    summary = "The organization's executions, newest first (all roles, API key); `limit` 1–100, default 25",
    security(("bearerAuth" = []), ("apiKey" = [])),
    params(PageParams, CursorParams, RunQuery),
    responses(
        (status = 200, description = "A page of executions", body = ExecutionPage),
        (status = 400, description = "`Invalid limit`, `Invalid offset`, `Invalid cursor`, `Invalid status`, `Invalid environment`, `Invalid groupName`, `Invalid startAfter`, `Invalid startBefore`, `Invalid source`, `Invalid query`", body = ErrorBody),
    ),
)]
async fn list(
    State(app): State<AppState>,
    user: CurrentUser,
    page: PageQuery,
    query: QueryOf<RunQuery>,
) -> Result<Json<ExecutionPage>, ApiError> {
    let (page, after) = page.keyset_within(25, 100)?;
    let filter = parse_filter(read_query(query)?, page, after)?;
    let found = orgd_core::executions::executions(&app.db, user.org_id(), &filter)
        .await
        .or_internal("Failed to fetch executions")?;
    Ok(Json(ExecutionPage {
        success: true,
        data: ExecutionPageData {
            executions: found
                .executions
                .iter()
                .map(|e| execution_view(e, false))
                .collect(),
            total: found.total,
            limit: filter.limit,
            offset: filter.offset,
            next_cursor: found.next.map(|c| c.encode()),
        },
    }))
}

/// Runs shown per group in the grouped view.
const RUNS_PER_GROUP: i64 = 50;

#[derive(Serialize, ToSchema)]
pub struct GroupedPage {
    success: bool,
    data: GroupedPageData,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupedPageData {
    /// By `lastRunAt`, newest first.
    groups: Vec<RunGroupView>,
    /// Groups with at least one run matching the filters.
    total_groups: i64,
    limit: i64,
    offset: i64,
}

/// A group of runs: every run with the same `groupName`; runs without one are the group
/// `__ungrouped__`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = RunGroup)]
pub struct RunGroupView {
    group_name: String,
    /// Its runs matching the filters.
    total_count: i64,
    /// Of those, the PASSED ones.
    pass_count: i64,
    /// The newest `startTime` among them.
    last_run_at: Timestamp,
    /// Its newest 50 runs (by `startTime`) matching the filters, without `output`.
    executions: Vec<ExecutionView>,
}

#[utoipa::path(
    get,
    path = "/api/executions/grouped",
    tag = "executions",
    summary = "The organization's runs by group, groups with the newest run first (all roles, API key); `limit` groups 1–50, default 10",
    security(("bearerAuth" = []), ("apiKey" = [])),
    params(PageParams, RunQuery),
    responses(
        (status = 200, description = "A page of groups, each with its newest 50 runs", body = GroupedPage),
        (status = 400, description = "`Invalid limit`, `Invalid offset`, `Invalid status`, `Invalid environment`, `Invalid groupName`, `Invalid startAfter`, `Invalid startBefore`, `Invalid source`, `Invalid query`", body = ErrorBody),
    ),
)]
async fn grouped(
    State(app): State<AppState>,
    user: CurrentUser,
    page: PageQuery,
    query: QueryOf<RunQuery>,
) -> Result<Json<GroupedPage>, ApiError> {
    let page = page.page_within(10, 50)?;
    let filter = parse_filter(read_query(query)?, page, None)?;
    let grouped = orgd_core::executions::grouped(&app.db, user.org_id(), &filter, RUNS_PER_GROUP)
        .await
        .or_internal("Failed to fetch executions")?;
    Ok(Json(GroupedPage {
        success: true,
        data: GroupedPageData {
            groups: grouped
                .groups
                .iter()
                .map(|group| RunGroupView {
                    group_name: group.group.label().to_string(),
                    total_count: group.total_runs,
                    pass_count: group.passed_runs,
                    last_run_at: Timestamp(group.last_run_at),
                    executions: group
                        .executions
                        .iter()
                        .map(|e| execution_view(e, false))
                        .collect(),
                })
                .collect(),
            total_groups: grouped.total_groups,
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

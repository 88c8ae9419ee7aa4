//! The API's views of executions, their analyses, projects and report files (the domain types
//! are the core's), and how a route names an execution it cannot find.

use serde::Serialize;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};

use axum::response::Response;

use crate::error::{ApiError, OrInternal};
use crate::http::idempotency::{KeyClaim, respond};
use crate::routes::usage::limit_refusal;
use crate::state::AppState;
use crate::timestamp::Timestamp;
use orgd_core::analysis::AnalysisRecord;
use orgd_core::executions::{
    Execution, NewExecution, NewExecutionOutcome, Project, ReportFile, RunRequest,
};
use orgd_core::executions::{TASK_ID_PATTERN, TaskId};
use orgd_core::idempotency::Answer;

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Project)]
pub struct ProjectView {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub created_at: Timestamp,
}

impl From<&Project> for ProjectView {
    fn from(p: &Project) -> Self {
        Self {
            id: p.id.clone(),
            name: p.name.clone(),
            slug: p.slug.clone(),
            created_at: Timestamp(p.created_at),
        }
    }
}

/// A report file as the store knows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ReportFile)]
pub struct ReportFileView {
    pub path: String,
    pub size: i64,
    pub updated_at: Timestamp,
}

impl From<&ReportFile> for ReportFileView {
    fn from(f: &ReportFile) -> Self {
        Self {
            path: f.path.clone(),
            size: f.size,
            updated_at: Timestamp(f.updated_at),
        }
    }
}

/// The API's execution object.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Execution)]
pub struct ExecutionView {
    id: String,
    task_id: String,
    project_id: Option<String>,
    #[schema(pattern = "^(PENDING|RUNNING|PASSED|FAILED|ERROR|UNSTABLE)$")]
    status: &'static str,
    trigger: Option<String>,
    group_name: Option<String>,
    /// `external-ci` (reported through `POST /api/executions`) or `agnox-hosted` (requested
    /// through `POST /api/execution-request`).
    #[schema(pattern = "^(external-ci|agnox-hosted)$")]
    source: &'static str,
    /// The run request's `config.environment`.
    environment: Option<String>,
    created_at: Timestamp,
    started_at: Option<Timestamp>,
    finished_at: Option<Timestamp>,
    /// `startedAt`, else `createdAt` (the original's name).
    start_time: Timestamp,
    /// `finishedAt` (the original's name).
    end_time: Option<Timestamp>,
    /// Milliseconds from `startTime` to `endTime`; null until the run ends.
    duration: Option<i64>,
    /// The failure's message (at most 64 KiB).
    error: Option<String>,
    report_bytes: i64,
    linear_issues: Vec<LinearIssueLink>,
    monday_items: Vec<MondayItemLink>,
    /// Every ticket filed from this run, on any tracker, oldest first.
    tickets: Vec<TicketLinkView>,
    analysis: Option<AnalysisView>,
    /// The pull request the run reports to; its comment is posted when the run finishes.
    ci: Option<CiContext>,
    /// The run's log (its last 256 KiB); only in the single-execution view.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    output: Option<Option<String>>,
    /// What a runner needs to start the run (runs requested through `POST
    /// /api/execution-request`, else null), with every `envVars` value shown as `***`; only
    /// in the single-execution view. The values: `GET /api/executions/{taskId}/run-request`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<RunRequestView>)]
    run_request: Option<Option<RunRequestView>>,
}

/// A run's CI context: the pull (merge) request orgd keeps one comment on per group
/// (`POST /api/executions`, `POST /api/execution-request`, and the execution object).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CiContext {
    #[schema(pattern = "^(github|gitlab|azuredevops|bitbucket)$")]
    provider: String,
    #[schema(minimum = 1)]
    pull_request: u64,
    /// In the provider's form: GitHub `owner/name`, Bitbucket `workspace/slug`, GitLab a
    /// project id or path, Azure DevOps a repository name or id; default the integration's.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, min_length = 1, max_length = 255)]
    repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = "^[0-9a-fA-F]{7,64}$")]
    commit_sha: Option<String>,
    /// An https:// link to the build.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = "^https://")]
    build_url: Option<String>,
}

impl From<&orgd_core::pull_requests::Ci> for CiContext {
    fn from(ci: &orgd_core::pull_requests::Ci) -> Self {
        Self {
            provider: ci.provider.clone(),
            pull_request: ci.pull_request,
            repository: ci.repository.clone(),
            commit_sha: ci.commit_sha.clone(),
            build_url: ci.build_url.clone(),
        }
    }
}

/// A run request as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = RunRequest)]
pub struct RunRequestView {
    image: String,
    command: String,
    folder: String,
    tests: Vec<String>,
    config: RunConfigView,
    project_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = RunConfig)]
pub struct RunConfigView {
    environment: Option<String>,
    base_url: Option<String>,
    /// Variable names with their values (`***` wherever the values are not asked for).
    env_vars: std::collections::BTreeMap<String, String>,
}

/// The value every `envVars` entry shows outside `GET /api/executions/{taskId}/run-request`.
pub const MASKED: &str = "***";

impl RunRequestView {
    /// `request` with `env_vars` as its variables (masked or opened by the caller).
    pub fn new(request: &RunRequest, env_vars: std::collections::BTreeMap<String, String>) -> Self {
        Self {
            image: request.image.clone(),
            command: request.command.clone(),
            folder: request.folder.clone(),
            tests: request.tests.clone(),
            config: RunConfigView {
                environment: request.environment.clone(),
                base_url: request.base_url.clone(),
                env_vars,
            },
            project_id: request.project_id.clone(),
        }
    }

    /// `request` with every value shown as `MASKED`.
    pub fn masked(request: &RunRequest) -> Self {
        let masked = request
            .env_names
            .iter()
            .map(|name| (name.clone(), MASKED.to_string()))
            .collect();
        Self::new(request, masked)
    }
}

/// A Linear issue filed from the execution.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinearIssueLink {
    issue_id: String,
    issue_url: String,
    title: String,
    created_at: Timestamp,
    created_by: Option<String>,
}

/// A Monday.com item filed from the execution.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MondayItemLink {
    item_id: String,
    item_url: String,
    title: String,
    created_at: Timestamp,
    created_by: Option<String>,
}

/// A ticket filed from a run, whichever tracker holds it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = TicketLink)]
pub struct TicketLinkView {
    #[schema(pattern = "^(linear|monday|jira|github|gitlab|azuredevops|bitbucket)$")]
    provider: String,
    /// What people call it: `ENG-24`, `#42`, `12345`.
    id: String,
    url: String,
    title: String,
    created_at: Timestamp,
    created_by: Option<String>,
}

/// The API's execution object; `output` and `runRequest` only when `with_output` (the
/// single-execution view).
pub fn execution_view(execution: &Execution, with_output: bool) -> ExecutionView {
    let links = |provider: &'static str| {
        execution
            .links
            .iter()
            .filter(move |l| l.provider == provider)
    };
    ExecutionView {
        id: execution.id.clone(),
        task_id: execution.task_id.clone(),
        project_id: execution.project_id.clone(),
        status: execution.status.as_str(),
        trigger: execution.trigger.clone(),
        group_name: execution.group_name.clone(),
        source: execution.source.as_str(),
        environment: execution.environment.clone(),
        created_at: Timestamp(execution.created_at),
        started_at: execution.started_at.map(Timestamp),
        finished_at: execution.finished_at.map(Timestamp),
        start_time: Timestamp(execution.start_time()),
        end_time: execution.finished_at.map(Timestamp),
        duration: execution.duration_ms(),
        error: execution.error.clone(),
        report_bytes: execution.report_bytes,
        linear_issues: links("linear")
            .map(|l| LinearIssueLink {
                issue_id: l.external_id.clone(),
                issue_url: l.url.clone(),
                title: l.title.clone(),
                created_at: Timestamp(l.created_at),
                created_by: l.created_by.clone(),
            })
            .collect(),
        monday_items: links("monday")
            .map(|l| MondayItemLink {
                item_id: l.external_id.clone(),
                item_url: l.url.clone(),
                title: l.title.clone(),
                created_at: Timestamp(l.created_at),
                created_by: l.created_by.clone(),
            })
            .collect(),
        tickets: execution
            .links
            .iter()
            .map(|l| TicketLinkView {
                provider: l.provider.clone(),
                id: l.external_id.clone(),
                url: l.url.clone(),
                title: l.title.clone(),
                created_at: Timestamp(l.created_at),
                created_by: l.created_by.clone(),
            })
            .collect(),
        analysis: execution.analysis.as_ref().map(analysis_view),
        ci: execution.ci.as_ref().map(CiContext::from),
        output: with_output.then(|| execution.output.clone()),
        run_request: with_output
            .then(|| execution.run_request.as_ref().map(RunRequestView::masked)),
    }
}

/// The API's analysis object: an execution's AI failure analysis.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Analysis)]
pub struct AnalysisView {
    /// `queued`, `running`, `completed` or `failed`.
    status: String,
    root_cause: Option<String>,
    suggested_fix: Option<String>,
    model: Option<String>,
    /// `openai`, `anthropic` or `gemini`.
    provider: Option<String>,
    /// `byok` (the organization's key) or `platform`.
    key_source: Option<String>,
    tokens: AnalysisTokens,
    created_at: Timestamp,
    /// Why a failed analysis failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AnalysisTokens {
    input: i64,
    output: i64,
}

pub fn analysis_view(record: &AnalysisRecord) -> AnalysisView {
    AnalysisView {
        status: record.status.clone(),
        root_cause: record.root_cause.clone(),
        suggested_fix: record.suggested_fix.clone(),
        model: record.model.clone(),
        provider: record.provider.clone(),
        key_source: record.key_source.clone(),
        tokens: AnalysisTokens {
            input: record.input_tokens,
            output: record.output_tokens,
        },
        created_at: Timestamp(record.updated_at),
        reason: record.reason.clone(),
    }
}

/// Creates a run (`POST /api/executions`, `POST /api/execution-request`) and answers with
/// `answer_for` it, storing that answer for an idempotent repeat; a refusal frees the key.
pub(crate) async fn create_run(
    app: &AppState,
    organization_id: &str,
    new: &NewExecution,
    now: i64,
    claim: KeyClaim,
    answer_for: &(dyn Fn(&Execution) -> Answer + Send + Sync),
) -> Result<Response, ApiError> {
    let outcome = orgd_core::executions::create_execution(
        &app.db,
        organization_id,
        new,
        now,
        claim.replay(answer_for).as_ref(),
    )
    .await
    .or_internal("Failed to create execution");
    let result = match outcome {
        Ok(NewExecutionOutcome::Created(execution)) => respond(&answer_for(&execution)),
        Ok(refused) => Err(run_refusal(refused)),
        Err(e) => Err(e),
    };
    claim.settle(result).await
}

/// Why a run was not created.
fn run_refusal(outcome: NewExecutionOutcome) -> ApiError {
    match outcome {
        NewExecutionOutcome::Created(_) => ApiError::internal(
            "Failed to create execution",
            anyhow::anyhow!("a created execution was taken for a refusal"),
        ),
        NewExecutionOutcome::Duplicate => ApiError::conflict(
            "Execution already exists",
            "An execution with this taskId already exists in your organization",
        ),
        NewExecutionOutcome::ProjectNotFound => ApiError::not_found(
            "Project not found",
            "No project with this projectId in your organization",
        ),
        NewExecutionOutcome::TestRunLimit { used, limit } => limit_refusal(
            "Test run limit exceeded",
            format!(
                "Your organization has reached the monthly test run limit ({used}/{limit}). Upgrade your plan to continue testing."
            ),
            used,
            limit,
        ),
        NewExecutionOutcome::ConcurrencyLimit { active, limit } => ApiError::conflict(
            "Concurrent run limit reached",
            format!(
                "Your organization has {active} execution(s) pending or running; your plan allows {limit} at a time"
            ),
        ),
    }
}

/// The body fields both ways of creating a run share, with their checks.
pub(crate) mod run_fields {
    use serde_json::Value;

    use crate::error::ApiError;
    use crate::http::Object;
    use orgd_core::executions::TaskId;
    use orgd_core::integrations::Integration;
    use orgd_core::pull_requests::{CI_PROVIDERS, Ci, repository_form};

    const TASK_ID_RULE: &str =
        "taskId must be 1 to 128 of A-Z a-z 0-9 . _ : - (not ., .. or grouped)";

    pub fn task_id(body: &Object) -> Result<Option<TaskId>, ApiError> {
        body.opt_str("taskId")?
            .map(|raw| TaskId::parse(raw).ok_or_else(|| ApiError::invalid("taskId", TASK_ID_RULE)))
            .transpose()
    }

    /// The given taskId, else the execution's generated id.
    pub fn task_id_or(given: Option<TaskId>, id: &str) -> Result<TaskId, ApiError> {
        match given {
            Some(task_id) => Ok(task_id),
            None => TaskId::parse(id).ok_or_else(|| {
                ApiError::internal(
                    "Failed to create execution",
                    anyhow::anyhow!("generated id {id:?} is not a taskId"),
                )
            }),
        }
    }

    pub fn project_id(body: &Object) -> Result<Option<String>, ApiError> {
        body.opt_str("projectId")?
            .map(|raw| {
                orgd_core::ids::is_valid(raw)
                    .then(|| raw.to_string())
                    .ok_or_else(|| ApiError::invalid("projectId", "projectId must be a project id"))
            })
            .transpose()
    }

    /// Free text of 1–64 `A-Za-z0-9._-` (CI systems name themselves in many ways).
    pub fn trigger(body: &Object) -> Result<Option<String>, ApiError> {
        body.opt_str("trigger")?
            .map(|t| {
                let valid = (1..=64).contains(&t.len())
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                valid.then(|| t.to_string()).ok_or_else(|| {
                    ApiError::invalid("trigger", "trigger must be 1 to 64 of A-Z a-z 0-9 . _ -")
                })
            })
            .transpose()
    }

    /// The pull request a run reports to; every problem names its dotted field.
    pub fn ci(body: &Object) -> Result<Option<Ci>, ApiError> {
        let ci = match body.0.get("ci") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(ci)) => ci,
            Some(_) => return Err(ApiError::invalid("ci", "ci must be an object")),
        };
        let text = |field: &str| match ci.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim())),
            Some(_) => Err(ApiError::invalid(
                &format!("ci.{field}"),
                format!("ci.{field} must be a string"),
            )),
        };
        let provider = text("provider")?
            .and_then(orgd_core::integrations::Integration::parse)
            .filter(|p| CI_PROVIDERS.contains(p))
            .ok_or_else(|| {
                ApiError::invalid(
                    "ci.provider",
                    "ci.provider must be github, gitlab, azuredevops or bitbucket",
                )
            })?;
        let pull_request = ci
            .get("pullRequest")
            .and_then(Value::as_u64)
            .filter(|n| (1..=i64::MAX as u64).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "ci.pullRequest",
                    "ci.pullRequest must be a positive integer",
                )
            })?;
        let repository = text("repository")?
            .map(|repository| {
                repository_form(provider, repository)
                    .then(|| repository.to_string())
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "ci.repository",
                            match provider {
                                Integration::Gitlab => {
                                    "ci.repository must be a GitLab project id or group/project path"
                                }
                                Integration::AzureDevops => {
                                    "ci.repository must be an Azure DevOps repository name or id"
                                }
                                _ => "ci.repository must be owner/name",
                            },
                        )
                    })
            })
            .transpose()?;
        let commit_sha = text("commitSha")?
            .map(|sha| {
                let valid =
                    (7..=64).contains(&sha.len()) && sha.bytes().all(|b| b.is_ascii_hexdigit());
                valid.then(|| sha.to_ascii_lowercase()).ok_or_else(|| {
                    ApiError::invalid("ci.commitSha", "ci.commitSha must be 7 to 64 hex digits")
                })
            })
            .transpose()?;
        let build_url = text("buildUrl")?
            .map(|url| {
                let host = url
                    .strip_prefix("https://")
                    .map(|rest| rest.split('/').next().unwrap_or(""));
                let valid = host.is_some_and(|h| !h.is_empty() && !h.contains('@'))
                    && url.len() <= 2048
                    && !url.chars().any(|c| {
                        c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '(' | ')')
                    });
                valid.then(|| url.to_string()).ok_or_else(|| {
                    ApiError::invalid("ci.buildUrl", "ci.buildUrl must be an https:// URL")
                })
            })
            .transpose()?;
        Ok(Some(Ci {
            provider: provider.as_str().to_string(),
            pull_request,
            repository,
            commit_sha,
            build_url,
        }))
    }

    pub fn group_name(body: &Object) -> Result<Option<String>, ApiError> {
        body.opt_str("groupName")?
            .map(|raw| {
                orgd_core::executions::group_name(raw).ok_or_else(|| {
                    ApiError::invalid(
                        "groupName",
                        "groupName must be 1 to 128 characters, not __ungrouped__",
                    )
                })
            })
            .transpose()
    }
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

/// The `{taskId}` path parameter of every execution route, as the document states it. Written
/// by hand because utoipa's `pattern = ...` takes only a literal, and this way the pattern is
/// `TASK_ID_PATTERN` itself.
pub struct TaskIdParam;

impl IntoParams for TaskIdParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(TASK_ID_PATTERN));
        vec![
            ParameterBuilder::new()
                .name("taskId")
                .parameter_in(ParameterIn::Path)
                .description(Some("The execution's taskId"))
                .schema(Some(schema))
                .required(Required::True)
                .build(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use orgd_core::executions::TASK_ID_PATTERN;

    /// The request bodies with a taskId repeat the pattern as a literal (see their fields).
    #[test]
    fn request_bodies_state_the_task_id_pattern() {
        let schemas = &crate::openapi::document_json()["components"]["schemas"];
        for body in [
            "NewExecutionRequest",
            "ExecutionRequest",
            "TicketRequestSchema",
        ] {
            assert_eq!(
                schemas[body]["properties"]["taskId"]["pattern"], TASK_ID_PATTERN,
                "{body}"
            );
        }
    }
}

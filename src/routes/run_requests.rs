//! Run requests, the original's way of starting a run (API.md, "Compatibility with the
//! original's clients"): `POST /api/execution-request` records a PENDING execution carrying
//! what a runner needs — under the same limits, roles and ingest bucket as `POST
//! /api/executions`, through the same core function — and `GET
//! /api/executions/{taskId}/run-request` hands a runner the environment variables' values,
//! which are sealed at rest and written to the audit log whenever they are read.

use std::collections::BTreeMap;

use crate::http::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::execution_views::{
    CiContext, RunRequestView, TaskIdParam, create_run, execution_not_found, run_fields,
    task_in_path,
};
use crate::auth::{Credential, CurrentUser, Role};
use crate::error::{ApiError, OrInternal};
use crate::http::idempotency::{Claimed, IdempotencyKey, answer};
use crate::http::{ClientIp, FromBody, JsonBody, Object, PathParams};
use crate::openapi::ErrorBody;
use crate::state::AppState;
use orgd_core::executions::{EnvVars, Execution, NewExecution, NewRunRequest, Status, TaskId};
use orgd_core::pull_requests::Ci;
use orgd_core::secrets::SecretTable;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(read))
}

const MAX_IMAGE_CHARS: usize = 512;
const MAX_COMMAND_BYTES: usize = 8 * 1024;
const MAX_FOLDER_CHARS: usize = 1024;
const MAX_TESTS: usize = 1000;
const MAX_TEST_CHARS: usize = 1024;
const MAX_URL_CHARS: usize = 2048;
/// The original's default: every test folder.
const DEFAULT_FOLDER: &str = "all";

/// `POST /api/execution-request`: a run for a runner to start.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ExecutionRequest)]
pub struct RunRequestBody {
    /// 1–128 of `A-Za-z0-9._:-`, unique in the organization (deleted runs included), not
    /// `grouped`; generated when absent.
    // `TASK_ID_PATTERN`: utoipa takes only a literal here (a test holds the two together).
    #[schema(value_type = Option<String>, nullable = false, pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    task_id: Option<TaskId>,
    /// The container image to run (no whitespace, at most 512 characters).
    #[schema(min_length = 1, max_length = 512)]
    image: String,
    /// The command the runner executes (at most 8 KiB).
    #[schema(min_length = 1)]
    command: String,
    /// The tests' folder; `all` when absent.
    #[schema(nullable = false, min_length = 1, max_length = 1024)]
    folder: Option<String>,
    /// Tests to run (at most 1,000 names of 1–1,024 characters).
    #[schema(nullable = false)]
    tests: Option<Vec<String>>,
    #[schema(nullable = false)]
    config: Option<RunConfigBody>,
    /// 1–128 characters; not `__ungrouped__`.
    #[schema(nullable = false, min_length = 1, max_length = 128)]
    group_name: Option<String>,
    #[schema(nullable = false, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    trigger: Option<String>,
    /// A project of the organization.
    #[schema(nullable = false, pattern = "^[0-9a-f]{24}$")]
    project_id: Option<String>,
    /// The pull request to keep a comment on when the run finishes.
    #[schema(nullable = false, value_type = Option<CiContext>)]
    ci: Option<Ci>,
}

/// The run's configuration.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ExecutionRequestConfig)]
pub struct RunConfigBody {
    /// Shown as the run's `environment` and filtered on without regard to case.
    #[schema(nullable = false, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    environment: Option<String>,
    /// An `http(s)://` URL of at most 2,048 characters.
    #[schema(nullable = false, max_length = 2048, pattern = "^https?://[^\\s]+$")]
    base_url: Option<String>,
    /// At most 100 variables named `[A-Za-z_][A-Za-z0-9_]*`, each value at most 4 KiB. The
    /// values are encrypted at rest and shown only by `GET
    /// /api/executions/{taskId}/run-request`.
    #[schema(value_type = Option<BTreeMap<String, String>>, nullable = false)]
    env_vars: Option<EnvVars>,
}

/// A required string of `field`: absent, not a string or blank → 400 `Invalid <field>`.
fn required_text<'a>(body: &'a Object, field: &str, what: &str) -> Result<&'a str, ApiError> {
    match body.0.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim()),
        _ => Err(ApiError::invalid(
            field,
            format!("{field} is required: {what}"),
        )),
    }
}

fn image(body: &Object) -> Result<String, ApiError> {
    let image = required_text(body, "image", "the container image to run")?;
    if image.chars().count() > MAX_IMAGE_CHARS
        || image.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::invalid(
            "image",
            "image must be an image reference of at most 512 characters, without spaces",
        ));
    }
    Ok(image.to_string())
}

fn command(body: &Object) -> Result<String, ApiError> {
    let command = required_text(body, "command", "the command the runner executes")?;
    if command.len() > MAX_COMMAND_BYTES {
        return Err(ApiError::invalid("command", "command cannot exceed 8 KiB"));
    }
    Ok(command.to_string())
}

fn folder(body: &Object) -> Result<String, ApiError> {
    match body.opt_str("folder")? {
        None => Ok(DEFAULT_FOLDER.to_string()),
        Some(folder) if (1..=MAX_FOLDER_CHARS).contains(&folder.chars().count()) => {
            Ok(folder.to_string())
        }
        Some(_) => Err(ApiError::invalid(
            "folder",
            "folder must be 1 to 1024 characters",
        )),
    }
}

fn tests(body: &Object) -> Result<Vec<String>, ApiError> {
    let invalid = || {
        ApiError::invalid(
            "tests",
            "tests must be an array of at most 1000 names of 1 to 1024 characters",
        )
    };
    let Some(value) = body.0.get("tests") else {
        return Ok(Vec::new());
    };
    let items = value.as_array().ok_or_else(invalid)?;
    if items.len() > MAX_TESTS {
        return Err(invalid());
    }
    items
        .iter()
        .map(|item| match item.as_str() {
            Some(name) if (1..=MAX_TEST_CHARS).contains(&name.chars().count()) => {
                Ok(name.to_string())
            }
            _ => Err(invalid()),
        })
        .collect()
}

/// `config`: an object whose `environment`, `baseUrl` and `envVars` are checked; anything
/// else in it (the original's `retryAttempts`, `project`) is ignored.
fn config(body: &Object) -> Result<Option<RunConfigBody>, ApiError> {
    let Some(value) = body.0.get("config") else {
        return Ok(None);
    };
    let Value::Object(config) = value else {
        return Err(ApiError::invalid("config", "config must be an object"));
    };
    let text = |field: &str| match config.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(ApiError::invalid(
            &format!("config.{field}"),
            format!("config.{field} must be a string"),
        )),
    };
    let environment = text("environment")?
        .map(|raw| {
            orgd_core::executions::environment(raw).ok_or_else(|| {
                ApiError::invalid(
                    "config.environment",
                    "config.environment must be 1 to 64 of A-Z a-z 0-9 . _ -",
                )
            })
        })
        .transpose()?;
    let base_url = text("baseUrl")?
        .map(|raw| {
            let valid = (raw.starts_with("https://") || raw.starts_with("http://"))
                && raw.len() > "https://".len()
                && raw.chars().count() <= MAX_URL_CHARS
                && !raw.chars().any(|c| c.is_whitespace() || c.is_control());
            valid.then(|| raw.to_string()).ok_or_else(|| {
                ApiError::invalid(
                    "config.baseUrl",
                    "config.baseUrl must be an http(s) URL of at most 2048 characters",
                )
            })
        })
        .transpose()?;
    let env_vars = config.get("envVars").map(env_vars).transpose()?;
    Ok(Some(RunConfigBody {
        environment,
        base_url,
        env_vars,
    }))
}

fn env_vars(value: &Value) -> Result<EnvVars, ApiError> {
    let invalid = |why: String| ApiError::invalid("config.envVars", why);
    let Value::Object(map) = value else {
        return Err(invalid(
            "config.envVars must be an object of names to string values".into(),
        ));
    };
    let mut vars = Vec::with_capacity(map.len());
    for (name, value) in map {
        let Value::String(value) = value else {
            return Err(invalid(format!(
                "config.envVars values must be strings; {:?} is not",
                name.chars().take(64).collect::<String>()
            )));
        };
        vars.push((name.clone(), value.clone()));
    }
    EnvVars::parse(vars).map_err(invalid)
}

/// Checked in the order of the fields (API.md).
impl FromBody for RunRequestBody {
    fn from_body(body: &Object) -> Result<Self, ApiError> {
        Ok(Self {
            task_id: run_fields::task_id(body)?,
            image: image(body)?,
            command: command(body)?,
            folder: Some(folder(body)?),
            tests: Some(tests(body)?),
            config: config(body)?,
            group_name: run_fields::group_name(body)?,
            trigger: run_fields::trigger(body)?,
            project_id: run_fields::project_id(body)?,
            ci: run_fields::ci(body)?,
        })
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Queued {
    success: bool,
    /// Always `Message queued successfully` (the original's words).
    status: &'static str,
    task_id: String,
}

#[utoipa::path(
    post,
    path = "/api/execution-request",
    tag = "executions",
    summary = "Request a run for a runner to start: a PENDING execution with its run request (admin, developer, API key)",
    security(("bearerAuth" = []), ("apiKey" = [])),
    params(IdempotencyKey),
    request_body = RunRequestBody,
    responses(
        (status = 200, description = "Recorded as PENDING (source `agnox-hosted`); a replay carries `Idempotent-Replayed: true`", body = Queued),
        (status = 400, description = "`Invalid taskId`, `Invalid image`, `Invalid command`, `Invalid folder`, `Invalid tests`, `Invalid config`, `Invalid config.environment`, `Invalid config.baseUrl`, `Invalid config.envVars`, `Invalid groupName`, `Invalid trigger`, `Invalid projectId`, `Invalid ci`, `Invalid ci.provider`, `Invalid ci.pullRequest`, `Invalid ci.repository`, `Invalid ci.commitSha`, `Invalid ci.buildUrl`, `Missing body`, `Invalid JSON`, `Invalid Idempotency-Key`", body = ErrorBody),
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
    let body = body.required()?;
    let request = RunRequestBody::from_body(&body)?;
    let claim = match key
        .claim(&app, user.org_id(), "POST /api/execution-request", &body)
        .await?
    {
        Claimed::Replayed(response) => return Ok(response),
        Claimed::Fresh(claim) => claim,
    };
    let now = app.now();
    let id = orgd_core::ids::new_id(now);
    let org = user.org_id();
    let config = request.config;
    let (environment, base_url, env) = match config {
        Some(c) => (c.environment, c.base_url, c.env_vars.unwrap_or_default()),
        None => (None, None, EnvVars::default()),
    };
    // Sealed for this run alone: a value copied to another run or organization does not open.
    let env_values = (!env.is_empty()).then(|| {
        app.vault
            .seal(&env.to_json(), &SecretTable::RunRequests.binding(org, &id))
    });
    let new = NewExecution {
        task_id: run_fields::task_id_or(request.task_id, &id)?,
        id,
        project_id: request.project_id,
        status: Status::Pending,
        trigger: request.trigger,
        group_name: request.group_name,
        created_by: user.id().to_string(),
        ci: request.ci,
        run_request: Some(NewRunRequest {
            image: request.image,
            command: request.command,
            folder: request.folder.unwrap_or_else(|| DEFAULT_FOLDER.into()),
            tests: request.tests.unwrap_or_default(),
            environment,
            base_url,
            env_names: env.names(),
            env_values,
        }),
    };
    let answer_for = |execution: &Execution| {
        answer(
            StatusCode::OK,
            &Queued {
                success: true,
                status: "Message queued successfully",
                task_id: execution.task_id.clone(),
            },
        )
    };
    create_run(&app, org, &new, now, claim, &answer_for).await
}

#[derive(Serialize, ToSchema)]
pub struct RunRequestResponse {
    success: bool,
    data: RunRequestData,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunRequestData {
    /// With the `envVars` values.
    run_request: RunRequestView,
}

#[utoipa::path(
    get,
    path = "/api/executions/{taskId}/run-request",
    tag = "executions",
    summary = "A run request with its environment variables' values, for a runner (admin, developer, API key); audited",
    security(("bearerAuth" = []), ("apiKey" = [])),
    params(TaskIdParam),
    responses(
        (status = 200, description = "The run request; the read is written to the audit log as `execution.run_request_read`", body = RunRequestResponse),
        (status = 403, description = "`Forbidden`: viewers", body = ErrorBody),
        (status = 404, description = "`Execution not found`; `Run request not found` (the run was reported, not requested)", body = ErrorBody),
    ),
)]
async fn read(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    PathParams(task_id): PathParams<String>,
) -> Result<Json<RunRequestResponse>, ApiError> {
    user.require(Role::WRITERS)?;
    let task_id = task_in_path(&task_id)?;
    let org = user.org_id();
    let api_key = match &user.credential {
        Credential::ApiKey { key_id } => Some(key_id.clone()),
        Credential::Session(_) => None,
    };
    let audit = user
        .audit_event(
            ip,
            "execution.run_request_read",
            "execution",
            task_id.as_str(),
        )
        .with_details(json!({"taskId": task_id.as_str(), "apiKeyId": api_key}));
    let found =
        orgd_core::executions::read_run_request(&app.db, org, task_id.as_str(), &audit, app.now())
            .await
            .or_internal("Failed to read run request")?;
    let Some(request) = found else {
        let exists = orgd_core::executions::execution_exists(&app.db, org, task_id.as_str())
            .await
            .or_internal("Failed to read run request")?;
        return Err(if exists {
            ApiError::not_found(
                "Run request not found",
                "This execution was reported through POST /api/executions, not requested as a run",
            )
        } else {
            execution_not_found()
        });
    };
    let env_vars = match &request.env_values {
        None => BTreeMap::new(),
        Some(sealed) => {
            let opened = app
                .vault
                .open(
                    sealed,
                    &SecretTable::RunRequests.binding(org, &request.execution_id),
                )
                .or_internal("Failed to read run request")?;
            EnvVars::from_json(&opened.0)
                .map_err(|e| ApiError::internal("Failed to read run request", anyhow::anyhow!(e)))?
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect()
        }
    };
    Ok(Json(RunRequestResponse {
        success: true,
        data: RunRequestData {
            run_request: RunRequestView::new(&request, env_vars),
        },
    }))
}

//! AI failure analysis (API.md, "AI failure analysis"): `POST /api/executions/:taskId/analysis`
//! runs one synchronously; a failed execution of an organization with the switch on gets one
//! queued, which the background worker leases and runs. Both paths share `run`.

pub mod prompt;

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{CurrentUser, Role};
use crate::config::Secret;
use crate::error::{ApiError, OrInternal, ProviderCall};
use crate::executions::{execution_not_found, task_in_path};
use crate::http::{ClientIp, JsonBody, PathParams};
use crate::state::AppState;
use crate::timestamp::Timestamp;
use orgd_core::analysis::{AnalysisRecord, Finished, Lease};
use orgd_core::audit::{Actor, AuditEvent};
use orgd_core::executions::Execution;
use orgd_core::models::{AiProvider, Model};
use orgd_core::secrets::SecretTable;
use orgd_providers::ProviderError;
use orgd_providers::client::MAX_ATTEMPTS;
use orgd_providers::llm::anthropic::Anthropic;
use orgd_providers::llm::gemini::Gemini;
use orgd_providers::llm::openai::OpenAi;
use orgd_providers::llm::{Call, LlmProtocol, Reply};

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

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(analyze))
}

pub const NOT_CONFIGURED: &str = "AI provider not configured";

fn protocol(provider: AiProvider) -> &'static dyn LlmProtocol {
    match provider {
        AiProvider::Openai => &OpenAi,
        AiProvider::Anthropic => &Anthropic,
        AiProvider::Gemini => &Gemini,
    }
}

fn base_url(app: &AppState, provider: AiProvider) -> &str {
    let ai = &app.config.ai;
    match provider {
        AiProvider::Openai => &ai.openai_api_url,
        AiProvider::Anthropic => &ai.anthropic_api_url,
        AiProvider::Gemini => &ai.gemini_api_url,
    }
}

fn platform_key(app: &AppState, provider: AiProvider) -> Option<&Secret<String>> {
    let ai = &app.config.ai;
    match provider {
        AiProvider::Openai => ai.openai_api_key.as_ref(),
        AiProvider::Anthropic => ai.anthropic_api_key.as_ref(),
        AiProvider::Gemini => ai.gemini_api_key.as_ref(),
    }
}

/// How long a runner owns a row: every attempt timing out, plus the waits between them.
fn lease_ms(app: &AppState) -> i64 {
    let attempts = app.config.provider_timeout * MAX_ATTEMPTS + Duration::from_secs(30);
    attempts.as_millis() as i64
}

/// Why a run produced no answer the caller should get as 201.
enum Failure {
    NotConfigured,
    Provider(ProviderError),
}

impl Failure {
    fn into_api_error(self) -> ApiError {
        match self {
            Self::NotConfigured => ApiError::Refused {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error: NOT_CONFIGURED,
                message: "Neither the organization nor the service has an API key for this model's provider".into(),
                extra: Default::default(),
            },
            Self::Provider(e) => ApiError::provider(e, ProviderCall::Analysis),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AnalyzeRequest {
    /// One of the catalogue's available models; the organization's default when absent.
    model: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AnalysisResponse {
    success: bool,
    data: AnalysisData,
}

#[derive(Serialize, ToSchema)]
pub struct AnalysisData {
    analysis: AnalysisView,
}

#[utoipa::path(
    post,
    path = "/api/executions/{taskId}/analysis",
    tag = "analysis",
    summary = "Analyze a failed execution with the organization's AI model now (admin, developer, API key); replaces the previous analysis",
    security(("bearerAuth" = []), ("apiKey" = [])),
    params(("taskId" = String, Path, pattern = "^[A-Za-z0-9._:-]{1,128}$", description = "The execution's taskId")),
    request_body(content = AnalyzeRequest, description = "Optional"),
    responses(
        (status = 201, description = "`completed`, or `failed` with a `reason` when the provider's answer was unusable (safety block, not JSON)", body = AnalysisResponse),
        (status = 400, description = "`Invalid model`, `Invalid JSON`", body = crate::openapi::ErrorBody),
        (status = 403, description = "`Forbidden` (viewers); `AI analysis disabled`", body = crate::openapi::ErrorBody),
        (status = 404, description = "`Execution not found`", body = crate::openapi::ErrorBody),
        (status = 409, description = "`Execution has not failed`; `Analysis in progress` (by another request or the background worker)", body = crate::openapi::ErrorBody),
        (status = 502, description = "The provider refused the request (a failed analysis is stored)", body = crate::openapi::ErrorBody),
        (status = 503, description = "`AI provider not configured`; the provider is rate limited or unreachable (with `retryAfter` when known)", body = crate::openapi::ErrorBody),
    ),
)]
async fn analyze(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    PathParams(task_id): PathParams<String>,
    body: JsonBody,
) -> Result<(StatusCode, Json<AnalysisResponse>), ApiError> {
    user.require(Role::WRITERS)?;
    let body = body.or_empty()?;
    let now = app.now();
    let model = body
        .opt_str("model")?
        .map(|id| {
            app.config
                .model_catalog
                .choose(id, now)
                .cloned()
                .map_err(|_| {
                    ApiError::invalid("model", "model must be an available model of the catalogue")
                })
        })
        .transpose()?;
    let task_id = task_in_path(&task_id)?;
    let org_id = user.org_id();
    let execution = orgd_core::executions::execution(&app.db, org_id, task_id.as_str())
        .await
        .or_internal("Failed to analyze execution")?
        .ok_or_else(execution_not_found)?;
    let enabled = app
        .orgs
        .get(&app.db, org_id)
        .await
        .or_internal("Failed to analyze execution")?
        .is_some_and(|org| org.ai_analysis_enabled);
    if !enabled {
        return Err(ApiError::Refused {
            status: StatusCode::FORBIDDEN,
            error: "AI analysis disabled",
            message: "AI failure analysis is turned off for this organization".into(),
            extra: Default::default(),
        });
    }
    if !execution.status.is_failure() {
        return Err(ApiError::conflict(
            "Execution has not failed",
            "Only FAILED, ERROR or UNSTABLE executions can be analyzed",
        ));
    }
    let started =
        orgd_core::analysis::start(&app.db, org_id, &execution.id, now, now + lease_ms(&app))
            .await
            .or_internal("Failed to analyze execution")?;
    if !started {
        return Err(ApiError::conflict(
            "Analysis in progress",
            "This execution is being analyzed right now; ask again once that analysis has finished",
        ));
    }
    let audit = user.audit_event(ip, "execution.analyzed", "execution", &execution.task_id);
    let (view, failure) = run(&app, org_id, &execution, model, audit).await?;
    match failure {
        None => Ok((
            StatusCode::CREATED,
            Json(AnalysisResponse {
                success: true,
                data: AnalysisData { analysis: view },
            }),
        )),
        Some(failure) => Err(failure.into_api_error()),
    }
}

/// The model and the key an analysis uses.
struct Resolved {
    model: Model,
    /// The organization's default had retired and was replaced by `model`.
    replaced: Option<String>,
    key: Option<(Secret<String>, &'static str)>,
}

async fn resolve(
    app: &AppState,
    org_id: &str,
    requested: Option<Model>,
) -> Result<Resolved, ApiError> {
    let config = orgd_core::ai_config::get(&app.db, org_id)
        .await
        .or_internal("Failed to analyze execution")?
        .unwrap_or_default();
    let (model, replaced) = match requested {
        Some(model) => (model, None),
        None => {
            let model = app
                .config
                .model_catalog
                .effective(config.default_model.as_deref(), app.now())
                .clone();
            let replaced = config.default_model.filter(|chosen| {
                *chosen != model.id && app.config.model_catalog.get(chosen).is_some()
            });
            (model, replaced)
        }
    };
    let provider = model.provider;
    let byok = if config.byok.contains(&provider) {
        let sealed = orgd_core::ai_config::byok_key(&app.db, org_id, provider)
            .await
            .or_internal("Failed to analyze execution")?;
        sealed
            .map(|sealed| {
                app.vault.open(
                    &sealed,
                    &SecretTable::AiProviderKeys.binding(org_id, provider.as_str()),
                )
            })
            .transpose()
            .or_internal("Failed to read the AI provider key")?
    } else {
        None
    };
    let key = match byok {
        Some(key) => Some((key, "byok")),
        None => platform_key(app, provider).map(|k| (k.clone(), "platform")),
    };
    Ok(Resolved {
        model,
        replaced,
        key,
    })
}

/// Every secret the organization stored, opened, plus the platform keys: none may leave
/// inside a log.
async fn secrets_to_redact(app: &AppState, org_id: &str) -> Result<Vec<String>, ApiError> {
    let sealed = orgd_core::analysis::organization_secrets(&app.db, org_id)
        .await
        .or_internal("Failed to analyze execution")?;
    let mut secrets = Vec::with_capacity(sealed.len() + 3);
    for s in sealed {
        let opened = app
            .vault
            .open(&s.sealed, &s.table.binding(org_id, &s.provider))
            .or_internal("Failed to read stored secrets")?;
        secrets.push(opened.0);
    }
    secrets.extend(
        AiProvider::ALL
            .into_iter()
            .filter_map(|p| platform_key(app, p))
            .map(|k| k.0.clone()),
    );
    Ok(secrets)
}

/// The provider's answer about the execution's error and log; a log too long for the model
/// is cut to a quarter and sent once more (llm-apis.md §4).
async fn call_with_log(
    app: &AppState,
    execution: &Execution,
    secrets: &[String],
    protocol: &dyn LlmProtocol,
    call: Call<'_>,
) -> Result<Reply, ProviderError> {
    let full = app.config.ai.log_budget_bytes;
    let mut budget = full;
    loop {
        let log = prompt::log_text(
            execution.error.as_deref(),
            execution.output.as_deref(),
            secrets,
            budget,
        );
        let with_log = Call { log: &log, ..call };
        match app.llm.analyze(protocol, &with_log).await {
            Err(ProviderError::TooLarge) if budget == full => budget = full / 4,
            other => return other,
        }
    }
}

/// Runs the analysis of `execution` (already marked running) and stores its result with
/// `audit` (whose details are filled here): the API's analysis object, and the failure the
/// on-demand caller gets instead of 201.
async fn run(
    app: &AppState,
    org_id: &str,
    execution: &Execution,
    requested: Option<Model>,
    audit: AuditEvent,
) -> Result<(AnalysisView, Option<Failure>), ApiError> {
    let resolved = resolve(app, org_id, requested).await?;
    let provider = resolved.model.provider;
    let mut finished = Finished {
        completed: false,
        model: resolved.model.id.clone(),
        provider: provider.as_str(),
        key_source: resolved.key.as_ref().map(|(_, source)| *source),
        input_tokens: 0,
        output_tokens: 0,
        root_cause: None,
        suggested_fix: None,
        reason: None,
        reached_provider: false,
    };
    let failure = match &resolved.key {
        None => {
            finished.reason = Some(NOT_CONFIGURED.to_string());
            Some(Failure::NotConfigured)
        }
        Some((key, _)) => {
            let secrets = secrets_to_redact(app, org_id).await?;
            let call = Call {
                base_url: base_url(app, provider),
                model: &resolved.model.id,
                key: &key.0,
                log: "",
            };
            match call_with_log(app, execution, &secrets, protocol(provider), call).await {
                Ok(reply) => {
                    finished.reached_provider = true;
                    apply(&mut finished, reply);
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, provider = provider.as_str(), "AI analysis failed");
                    finished.reached_provider = e.reached_provider();
                    finished.reason = Some(ProviderCall::Analysis.describe(&e));
                    Some(Failure::Provider(e))
                }
            }
        }
    };
    let audit = audit.with_details(json!({
        "model": finished.model,
        "provider": finished.provider,
        "keySource": finished.key_source,
        "status": if finished.completed { "completed" } else { "failed" },
        "replacedModel": resolved.replaced,
    }));
    let view =
        orgd_core::analysis::finish(&app.db, org_id, &execution.id, &finished, &audit, app.now())
            .await
            .or_internal("Failed to store the analysis")?;
    Ok((analysis_view(&view), failure))
}

fn apply(finished: &mut Finished, reply: Reply) {
    match reply {
        Reply::Answer {
            root_cause,
            suggested_fix,
            tokens,
        } => {
            finished.completed = true;
            finished.root_cause = Some(root_cause);
            finished.suggested_fix = Some(suggested_fix);
            finished.input_tokens = tokens.input;
            finished.output_tokens = tokens.output;
        }
        Reply::Unusable { reason, tokens } => {
            finished.reason = Some(reason.to_string());
            finished.input_tokens = tokens.input;
            finished.output_tokens = tokens.output;
        }
    }
}

/// Runs every queued analysis that can be leased now, one after the other; how many ran.
/// The background worker calls this on every tick; tests call it directly.
pub async fn run_pending_once(app: &AppState) -> anyhow::Result<usize> {
    let abandoned = orgd_core::analysis::fail_abandoned(&app.db, app.now()).await?;
    if abandoned > 0 {
        tracing::warn!(abandoned, "analyses interrupted twice were marked failed");
    }
    let mut ran = 0;
    loop {
        let now = app.now();
        let Some(lease) = orgd_core::analysis::lease(&app.db, now, now + lease_ms(app)).await?
        else {
            return Ok(ran);
        };
        if let Err(e) = run_leased(app, &lease).await {
            tracing::error!(error = %e, execution = %lease.execution_id, "a queued analysis could not run");
        }
        ran += 1;
    }
}

async fn run_leased(app: &AppState, lease: &Lease) -> Result<(), ApiError> {
    let org_id = &lease.organization_id;
    let task_id = orgd_core::analysis::execution_task_id(&app.db, org_id, &lease.execution_id)
        .await
        .or_internal("Failed to analyze execution")?;
    let execution = match task_id {
        Some(task_id) => orgd_core::executions::execution(&app.db, org_id, &task_id)
            .await
            .or_internal("Failed to analyze execution")?,
        None => None,
    };
    // Deleted meanwhile: nothing to analyze, and nobody can see the result.
    let Some(execution) = execution else {
        return orgd_core::analysis::drop(&app.db, org_id, &lease.execution_id)
            .await
            .or_internal("Failed to analyze execution");
    };
    let audit = AuditEvent {
        organization_id: org_id.clone(),
        user_id: None,
        actor: Actor::System,
        action: "execution.analyzed",
        target_type: "execution",
        target_id: execution.task_id.clone(),
        details: json!({}),
        ip: None,
    };
    run(app, org_id, &execution, None, audit).await.map(|_| ())
}

/// The background worker: runs queued analyses every `ORGD_AI_POLL_INTERVAL` until aborted.
/// An analysis cut off by the abort keeps its lease and is retried once it expires.
pub async fn work(app: AppState) {
    loop {
        tokio::time::sleep(app.config.ai.poll_interval).await;
        if let Err(e) = run_pending_once(&app).await {
            tracing::error!(error = %e, "the analysis worker failed; trying again later");
        }
    }
}

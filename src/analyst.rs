//! Running an analysis — shared by `POST /api/executions/:taskId/analysis` and the
//! background worker: choose the model and key (the organization's own, else the platform's),
//! send the error and log with every stored secret redacted, store the result with its audit
//! entry. The worker leases queued rows (`orgd_core::analysis::lease`), so two instances never
//! run one at once.

use std::time::Duration;

use serde_json::json;

use crate::config::Secret;
use crate::error::ProviderCall;
use crate::routes::execution_views::analysis_view;
use crate::state::AppState;
use orgd_core::analysis::{AnalysisRecord, Finished, Lease, log_text};
use orgd_core::audit::AuditEvent;
use orgd_core::executions::Execution;
use orgd_core::models::{AiProvider, Model};
use orgd_core::secrets::SecretTable;
use orgd_providers::ProviderError;
use orgd_providers::client::MAX_ATTEMPTS;
use orgd_providers::llm::anthropic::Anthropic;
use orgd_providers::llm::gemini::Gemini;
use orgd_providers::llm::openai::OpenAi;
use orgd_providers::llm::{Call, LlmProtocol, Reply};

pub const NOT_CONFIGURED: &str = "AI provider not configured";

/// A step of a run that failed below the provider: the database or the vault. `public` is
/// the endpoint's 500 string; an unreachable database still answers 503.
#[derive(Debug, thiserror::Error)]
#[error("{public}: {source:#}")]
pub struct RunError {
    pub public: &'static str,
    pub source: anyhow::Error,
}

trait During<T> {
    fn during(self, public: &'static str) -> Result<T, RunError>;
}

impl<T, E: Into<anyhow::Error>> During<T> for Result<T, E> {
    fn during(self, public: &'static str) -> Result<T, RunError> {
        self.map_err(|e| RunError {
            public,
            source: e.into(),
        })
    }
}

const FAILED: &str = "Failed to analyze execution";

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

/// How long a runner owns a row: every attempt timing out, plus the waits between them.
pub fn lease_ms(app: &AppState) -> i64 {
    let attempts = app.config.provider_timeout * MAX_ATTEMPTS + Duration::from_secs(30);
    attempts.as_millis() as i64
}

/// Why a run produced no answer the caller should get as 201.
pub enum Failure {
    NotConfigured,
    Provider(ProviderError),
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
) -> Result<Resolved, RunError> {
    let config = orgd_core::ai_config::get(&app.db, org_id)
        .await
        .during(FAILED)?
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
            .during(FAILED)?;
        sealed
            .map(|sealed| {
                app.vault.open(
                    &sealed,
                    &SecretTable::AiProviderKeys.binding(org_id, provider.as_str()),
                )
            })
            .transpose()
            .during("Failed to read the AI provider key")?
    } else {
        None
    };
    let key = match byok {
        Some(key) => Some((key, "byok")),
        None => app
            .config
            .ai
            .platform_key(provider)
            .map(|k| (k.clone(), "platform")),
    };
    Ok(Resolved {
        model,
        replaced,
        key,
    })
}

/// What must not leave inside a log (`redaction::secrets_to_redact`), and the environment
/// values the run was requested with: a test that prints its environment must not hand its
/// passwords to the provider.
async fn run_secrets_to_redact(
    app: &AppState,
    org_id: &str,
    execution: &Execution,
) -> Result<Vec<String>, RunError> {
    let mut secrets = crate::redaction::secrets_to_redact(app, org_id)
        .await
        .during("Failed to read stored secrets")?;
    let run_env = execution
        .run_request
        .as_ref()
        .and_then(|r| r.env_values.as_deref());
    if let Some(sealed) = run_env {
        let opened = app
            .vault
            .open(
                sealed,
                &SecretTable::RunRequests.binding(org_id, &execution.id),
            )
            .during("Failed to read stored secrets")?;
        let vars = orgd_core::executions::EnvVars::from_json(&opened.0)
            .map_err(anyhow::Error::msg)
            .during("Failed to read stored secrets")?;
        secrets.extend(vars.iter().map(|(_, value)| value.to_string()));
    }
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
        let log = log_text(
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
/// `audit` (whose details are filled here): the stored analysis, and the failure the
/// on-demand caller gets instead of 201.
pub async fn run(
    app: &AppState,
    org_id: &str,
    execution: &Execution,
    requested: Option<Model>,
    audit: AuditEvent,
) -> Result<(AnalysisRecord, Option<Failure>), RunError> {
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
            let secrets = run_secrets_to_redact(app, org_id, execution).await?;
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
    let view = orgd_core::analysis::finish(
        &app.db,
        org_id,
        &execution.id,
        &finished,
        &audit,
        app.now(),
        |record| serde_json::to_value(analysis_view(record)).unwrap_or_default(),
    )
    .await
    .during("Failed to store the analysis")?;
    // The analysis may release a waiting Slack message and is an event itself.
    app.wake_outbox();
    Ok((view, failure))
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

async fn run_leased(app: &AppState, lease: &Lease) -> Result<(), RunError> {
    let org_id = &lease.organization_id;
    let task_id = orgd_core::analysis::execution_task_id(&app.db, org_id, &lease.execution_id)
        .await
        .during(FAILED)?;
    let execution = match task_id {
        Some(task_id) => orgd_core::executions::execution(&app.db, org_id, &task_id)
            .await
            .during(FAILED)?,
        None => None,
    };
    // Deleted meanwhile: nothing to analyze, and nobody can see the result.
    let Some(execution) = execution else {
        return orgd_core::analysis::drop(&app.db, org_id, &lease.execution_id)
            .await
            .during(FAILED);
    };
    let audit = AuditEvent::by_system(
        org_id,
        "execution.analyzed",
        "execution",
        &execution.task_id,
    );
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

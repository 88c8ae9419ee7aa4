//! `POST /api/executions/:taskId/analysis`: an analysis now, replacing the previous one.

use crate::http::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::analyst::{self, Failure, NOT_CONFIGURED, RunError};
use crate::auth::{CurrentUser, Role};
use crate::error::{ApiError, OrInternal, ProviderCall};
use crate::http::{ClientIp, FromBodyWith, JsonBody, Object, PathParams};
use crate::routes::execution_views::{
    AnalysisView, TaskIdParam, analysis_view, execution_not_found, task_in_path,
};
use crate::state::AppState;
use orgd_core::models::{Model, ModelCatalog};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(analyze))
}

fn failure_error(failure: Failure) -> ApiError {
    match failure {
        Failure::NotConfigured => ApiError::Refused {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: NOT_CONFIGURED,
            message:
                "Neither the organization nor the service has an API key for this model's provider"
                    .into(),
            extra: Default::default(),
        },
        Failure::Provider(e) => ApiError::provider(e, ProviderCall::Analysis),
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        ApiError::internal(e.public, e.source)
    }
}

#[derive(ToSchema)]
pub struct AnalyzeRequest {
    /// One of the catalogue's available models; the organization's default when absent.
    #[schema(value_type = Option<String>)]
    model: Option<Model>,
}

/// `model` is checked against the catalogue at the given time.
impl FromBodyWith<(&ModelCatalog, i64)> for AnalyzeRequest {
    fn from_body_with(
        body: &Object,
        (catalog, now): (&ModelCatalog, i64),
    ) -> Result<Self, ApiError> {
        let model = body
            .opt_str("model")?
            .map(|id| {
                catalog.choose(id, now).cloned().map_err(|_| {
                    ApiError::invalid("model", "model must be an available model of the catalogue")
                })
            })
            .transpose()?;
        Ok(Self { model })
    }
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
    params(TaskIdParam),
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
    let now = app.now();
    let AnalyzeRequest { model } =
        body.parse_or_empty_with((app.config.model_catalog.as_ref(), now))?;
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
    let started = orgd_core::analysis::start(
        &app.db,
        org_id,
        &execution.id,
        now,
        now + analyst::lease_ms(&app),
    )
    .await
    .or_internal("Failed to analyze execution")?;
    if !started {
        return Err(ApiError::conflict(
            "Analysis in progress",
            "This execution is being analyzed right now; ask again once that analysis has finished",
        ));
    }
    let audit = user.audit_event(ip, "execution.analyzed", "execution", &execution.task_id);
    let (record, failure) = analyst::run(&app, org_id, &execution, model, audit).await?;
    match failure {
        None => Ok((
            StatusCode::CREATED,
            Json(AnalysisResponse {
                success: true,
                data: AnalysisData {
                    analysis: analysis_view(&record),
                },
            }),
        )),
        Some(failure) => Err(failure_error(failure)),
    }
}

//! Integrations (API.md, Integrations — seed): per-organization settings for eight
//! providers with their credentials sealed in the vault, checked against the provider (every
//! one but Slack) before they are saved.

use crate::http::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use super::integration_settings::{
    Described, HealthView, Integration, IntegrationView, open_secret,
};

use super::integration_settings::{
    Draft, IntegrationSettings, PreparedSave, integration_changed, unlink_audit, view,
};
use crate::auth::{CurrentUser, Role};
use crate::error::{ApiError, OrInternal, ProviderCall};
use crate::http::{ClientIp, Done, FromBodyWith, JsonBody, PathParams};
use crate::openapi::ErrorBody;
use crate::state::AppState;
use crate::trackers;
use orgd_core::integrations::{self as stored, IntegrationRecord};
use orgd_providers::Provider as Outbound;
use orgd_providers::jira::JiraAuth;
use orgd_providers::slack::{self, SlackWebhook};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show, save, unlink))
        .routes(routes!(slack_test))
}

#[derive(Serialize, ToSchema)]
pub struct IntegrationResponse {
    success: bool,
    data: IntegrationView,
}

#[derive(Serialize, ToSchema)]
pub struct Saved {
    success: bool,
    message: String,
}

fn parse_provider(raw: &str) -> Result<Integration, ApiError> {
    Integration::parse(raw).ok_or_else(|| {
        ApiError::not_found(
            "Unsupported provider",
            "Supported providers: github, gitlab, azuredevops, bitbucket, jira, linear, monday, slack",
        )
    })
}

#[utoipa::path(
    get,
    path = "/api/integrations/{provider}",
    tag = "integrations",
    summary = "An integration's settings, without its credential (all roles)",
    security(("bearerAuth" = [])),
    params(("provider" = String, Path, pattern = "^(github|gitlab|azuredevops|bitbucket|jira|linear|monday|slack)$")),
    responses(
        (status = 200, description = "The settings", body = IntegrationResponse),
        (status = 404, description = "`Unsupported provider`", body = ErrorBody),
    ),
)]
async fn show(
    State(app): State<AppState>,
    user: CurrentUser,
    PathParams(provider): PathParams<String>,
) -> Result<Json<IntegrationResponse>, ApiError> {
    let provider = parse_provider(&provider)?;
    let record = stored::get(&app.db, user.org_id(), provider)
        .await
        .or_internal("Failed to fetch integration")?;
    let health = orgd_core::outbox::health(&app.db, user.org_id(), provider.as_str())
        .await
        .or_internal("Failed to fetch integration")?;
    Ok(Json(IntegrationResponse {
        success: true,
        data: view(provider, record.as_ref()).with_health(HealthView::new(record.as_ref(), health)),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct SlackTestResponse {
    success: bool,
    data: SlackTestResult,
}

#[derive(Serialize, ToSchema)]
pub struct SlackTestResult {
    delivered: bool,
}

#[utoipa::path(
    post,
    path = "/api/integrations/slack/test",
    tag = "integrations",
    summary = "Send one test message to the stored Slack webhook now (admin)",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Slack accepted the message", body = SlackTestResponse),
        (status = 400, description = "`Integration not configured`", body = ErrorBody),
        (status = 403, description = "`Forbidden`: admins only", body = ErrorBody),
        (status = 502, description = "`Provider error` with Slack's error code in the message, `Provider unavailable`", body = ErrorBody),
        (status = 503, description = "`Provider rate limited`, with `retryAfter`", body = ErrorBody),
    ),
)]
async fn slack_test(
    State(app): State<AppState>,
    user: CurrentUser,
) -> Result<Json<SlackTestResponse>, ApiError> {
    user.require(Role::ADMIN)?;
    let org = user.org_id();
    let not_configured = || {
        ApiError::bad_request(
            "Integration not configured",
            "Slack is not configured or is disabled for this organization",
        )
    };
    let record = stored::get(&app.db, org, Integration::Slack)
        .await
        .or_internal("Failed to send the test message")?
        .filter(|r| r.enabled)
        .ok_or_else(not_configured)?;
    let url = open_secret(&app, org, Integration::Slack, &record.secret)?;
    let webhook = SlackWebhook::parse(&url.0).ok_or_else(not_configured)?;
    let name = app
        .orgs
        .get(&app.db, org)
        .await
        .or_internal("Failed to send the test message")?
        .map(|o| o.name.clone())
        .unwrap_or_default();
    let posted = app.slack.post(&webhook, &slack::test_message(&name)).await;
    let now = app.now();
    let provider = Integration::Slack.as_str();
    match posted {
        Ok(()) => {
            orgd_core::outbox::record_success(&app.db, org, provider, now)
                .await
                .or_internal("Failed to send the test message")?;
            Ok(Json(SlackTestResponse {
                success: true,
                data: SlackTestResult { delivered: true },
            }))
        }
        Err(error) => {
            let disable_after = i64::from(app.config.delivery.disable_after);
            let permanent = error.is_permanent();
            let words = error.to_string();
            let disabled = orgd_core::outbox::record_failure(
                &app.db,
                org,
                Integration::Slack,
                &words,
                permanent,
                disable_after,
                now,
            )
            .await
            .or_internal("Failed to send the test message")?;
            if disabled {
                app.wake_outbox();
            }
            Err(ApiError::provider(
                error.into(),
                ProviderCall::Notify(Outbound::Slack),
            ))
        }
    }
}

#[utoipa::path(
    put,
    path = "/api/integrations/{provider}",
    tag = "integrations",
    summary = "Configure an integration (admin); `enabled: false` keeps the credential",
    security(("bearerAuth" = [])),
    params(("provider" = String, Path, pattern = "^(github|gitlab|azuredevops|bitbucket|jira|linear|monday|slack)$")),
    request_body = IntegrationSettings,
    responses(
        (status = 200, description = "Saved and audited (field names only)", body = Saved),
        (status = 400, description = "`Missing fields`, `Invalid <field>`, `Invalid credentials` (the provider refused them), `Missing body`, `Invalid JSON`", body = ErrorBody),
        (status = 403, description = "`Forbidden`: admins only", body = ErrorBody),
        (status = 404, description = "`Unsupported provider`", body = ErrorBody),
        (status = 409, description = "`Integration changed` by a concurrent request", body = ErrorBody),
        (status = 502, description = "`Provider unavailable`, `Provider error`", body = ErrorBody),
        (status = 503, description = "`Provider rate limited`, with `retryAfter`", body = ErrorBody),
    ),
)]
async fn save(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    PathParams(provider): PathParams<String>,
    body: JsonBody,
) -> Result<Json<Saved>, ApiError> {
    let provider = parse_provider(&provider)?;
    user.require(Role::ADMIN)?;
    // `Missing body` comes before the stored settings are read; the fields are checked
    // against them.
    let body = body.required()?;
    let org = user.org_id();
    let stored = stored::get(&app.db, org, provider)
        .await
        .or_internal("Failed to save integration")?;
    let request = IntegrationSettings::from_body_with(&body, (provider, stored.as_ref()))?;
    let mut draft = Draft::new(provider, request, stored.as_ref());
    check_with_provider(&app, provider, org, &mut draft, stored.as_ref()).await?;
    let prepared = PreparedSave::new(&app, &user, ip, provider, &draft, stored.as_ref())?;
    let saved = stored::save(
        &app.db,
        &prepared.write(org, provider, &draft.settings),
        &prepared.audit,
        app.now(),
    )
    .await
    .or_internal("Failed to save integration")?;
    if !saved {
        return Err(integration_changed());
    }
    Ok(Json(Saved {
        success: true,
        message: format!("{} integration saved successfully", provider.display_name()),
    }))
}

/// Settings are saved only once the provider confirms them (every provider but Slack): the
/// credential authenticates and what the settings name exists. What the check learns is
/// stored with them: Linear's team (which may be given by key), Monday.com's account, Jira's
/// token kind, cloud id and spellings, whether a repository takes issues, GitLab's project
/// path, Azure DevOps' work item type spelling. A customer's `baseUrl` must pass the
/// outgoing-webhook address rules first.
async fn check_with_provider(
    app: &AppState,
    provider: Integration,
    org: &str,
    draft: &mut Draft,
    stored: Option<&IntegrationRecord>,
) -> Result<(), ApiError> {
    if !provider.is_checked() || (draft.secret.is_none() && !draft.fields_given) {
        return Ok(());
    }
    let secret = match (&draft.secret, stored) {
        (Some(secret), _) => secret.clone(),
        (None, Some(record)) => open_secret(app, org, provider, &record.secret)?,
        (None, None) => return Ok(()),
    };
    let token = secret.0.as_str();
    let settings = &draft.settings;
    let text = |name: &str| settings.get(name).and_then(Value::as_str);
    let refused = |e| ApiError::provider(e, ProviderCall::CheckSettings(provider.outbound()));
    let learned: Vec<(&str, Value)> = match provider {
        Integration::Linear => {
            let team_ref = text("teamId").unwrap_or_default();
            let team = app
                .linear
                .find_team(token, team_ref)
                .await
                .map_err(refused)?;
            vec![
                ("teamId", json!(team.id)),
                ("teamKey", json!(team.key)),
                ("teamName", json!(team.name)),
            ]
        }
        Integration::Monday => {
            let board = text("boardId").unwrap_or_default();
            let account = app
                .monday
                .check_board(token, board, text("groupId"))
                .await
                .map_err(refused)?;
            vec![("accountSlug", json!(account.slug))]
        }
        Integration::Jira => {
            let credentials = trackers::jira_credentials(settings, token)?;
            let project = trackers::needed(settings, "projectKey")?;
            let issue_type = trackers::jira_issue_type(settings);
            let check = app
                .trackers
                .jira
                .check(&credentials, project, issue_type)
                .await
                .map_err(refused)?;
            let cloud_id = match &check.auth {
                JiraAuth::Scoped { cloud_id } => json!(cloud_id),
                JiraAuth::Classic => Value::Null,
            };
            vec![
                ("projectKey", json!(check.project_key)),
                ("issueType", json!(check.issue_type)),
                ("tokenKind", json!(check.auth.token_kind())),
                ("cloudId", cloud_id),
            ]
        }
        Integration::Github => {
            if let Some(url) = text("baseUrl") {
                checked_base_url(app, url).await?;
            }
            let target = trackers::github_target(settings, token)?;
            let repository = app
                .trackers
                .github
                .check_repository(&target)
                .await
                .map_err(refused)?;
            vec![("issuesEnabled", json!(repository.has_issues))]
        }
        Integration::Gitlab => {
            let target = trackers::gitlab_target(settings, token)?;
            if let Some(url) = target.base_url {
                checked_base_url(app, url).await?;
            }
            let project = app
                .trackers
                .gitlab
                .check_project(&target)
                .await
                .map_err(refused)?;
            vec![
                ("projectPath", json!(project.path_with_namespace)),
                ("issuesEnabled", json!(project.issues_enabled)),
            ]
        }
        Integration::AzureDevops => {
            let target = trackers::azure_devops_target(settings, token)?;
            let work_item_type = trackers::azure_devops_work_item_type(settings);
            let project = app
                .trackers
                .azure_devops
                .check(&target, work_item_type)
                .await
                .map_err(refused)?;
            vec![("workItemType", json!(project.work_item_type))]
        }
        Integration::Bitbucket => {
            let target = trackers::bitbucket_target(settings, token)?;
            let repository = app
                .trackers
                .bitbucket
                .check_repository(&target)
                .await
                .map_err(refused)?;
            vec![("issuesEnabled", json!(repository.has_issues))]
        }
        Integration::Slack => Vec::new(),
    };
    for (name, value) in learned {
        match value {
            Value::Null => draft.settings.remove(name),
            value => draft.settings.insert(name.into(), value),
        };
    }
    Ok(())
}

/// A customer's base URL under the outgoing-webhook address rules, or 400 `Invalid baseUrl`.
async fn checked_base_url(app: &AppState, url: &str) -> Result<(), ApiError> {
    app.url_policy
        .check_url(url)
        .await
        .map(|_| ())
        .map_err(|refusal| ApiError::invalid("baseUrl", format!("baseUrl refused: {refusal}")))
}

#[utoipa::path(
    delete,
    path = "/api/integrations/{provider}",
    tag = "integrations",
    summary = "Remove an integration and its credential (admin); idempotent",
    security(("bearerAuth" = [])),
    params(("provider" = String, Path, pattern = "^(github|gitlab|azuredevops|bitbucket|jira|linear|monday|slack)$")),
    responses(
        (status = 200, description = "Removed (or was not configured)", body = Done),
        (status = 403, description = "`Forbidden`: admins only", body = ErrorBody),
        (status = 404, description = "`Unsupported provider`", body = ErrorBody),
    ),
)]
async fn unlink(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    PathParams(provider): PathParams<String>,
) -> Result<Json<Done>, ApiError> {
    let provider = parse_provider(&provider)?;
    user.require(Role::ADMIN)?;
    let audit = unlink_audit(&user, ip, provider);
    stored::delete(&app.db, user.org_id(), provider, &audit, app.now())
        .await
        .or_internal("Failed to unlink integration")?;
    Ok(Done::new("Integration unlinked successfully"))
}

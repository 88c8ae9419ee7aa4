//! `POST /api/linear/issues` and `POST /api/monday/items`: a ticket filed from an execution,
//! linked both ways (the execution lists the ticket; the ticket links back to the run).
//!
//! The work runs in a spawned task the handler awaits: once the provider has created the
//! ticket, the link is recorded even if the client has gone. With an `Idempotency-Key`, a
//! repeat returns the first answer and creates nothing.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};

use super::integration_settings::{Described, Integration, open_secret};
use crate::auth::CurrentUser;
use crate::config::Secret;
use crate::error::{ApiError, OrInternal, ProviderCall};
use crate::http::idempotency::{Claimed, IdempotencyKey, KeyClaim, answer, respond};
use crate::http::{ClientIp, FromBody, JsonBody, Object};
use crate::state::AppState;
use orgd_core::audit::AuditEvent;
use orgd_core::idempotency::Answer;
use orgd_core::integrations::{self as stored, IntegrationRecord, TicketLink};
use orgd_providers::linear::{self, NewIssue};
use orgd_providers::monday;

pub fn router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(create_linear_issue))
        .routes(utoipa_axum::routes!(create_monday_item))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracker {
    Linear,
    Monday,
}

impl Tracker {
    fn provider(self) -> Integration {
        match self {
            Self::Linear => Integration::Linear,
            Self::Monday => Integration::Monday,
        }
    }

    /// The idempotency scope's route.
    fn route(self) -> &'static str {
        match self {
            Self::Linear => "POST /api/linear/issues",
            Self::Monday => "POST /api/monday/items",
        }
    }

    fn audit_action(self) -> &'static str {
        match self {
            Self::Linear => "linear.issue_created",
            Self::Monday => "monday.item_created",
        }
    }
}

/// A ticket to file from an execution.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = TicketRequestSchema)]
pub struct TicketRequest {
    /// The execution the ticket is about.
    // `TASK_ID_PATTERN`: utoipa takes only a literal here (a test holds the two together).
    #[schema(pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    task_id: String,
    /// One line.
    #[schema(min_length = 1, max_length = 255)]
    title: String,
    /// At most 64 KiB; without it the ticket carries the execution's AI analysis, if any.
    description: Option<String>,
}

const MAX_TITLE_CHARS: usize = 255;
const MAX_DESCRIPTION_BYTES: usize = 64 * 1024;

impl FromBody for TicketRequest {
    fn from_body(body: &Object) -> Result<Self, ApiError> {
        let task_id = body
            .required_str("taskId", ApiError::invalid("taskId", "taskId is required"))?
            .to_string();
        let title = body
            .required_str("title", ApiError::invalid("title", "title is required"))?
            .trim()
            .to_string();
        if title.is_empty()
            || title.chars().count() > MAX_TITLE_CHARS
            || title.chars().any(char::is_control)
        {
            return Err(ApiError::invalid(
                "title",
                "title must be 1-255 characters on one line",
            ));
        }
        let description = match body.0.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.len() > MAX_DESCRIPTION_BYTES => {
                return Err(ApiError::invalid(
                    "description",
                    "description cannot exceed 64 KiB",
                ));
            }
            Some(Value::String(s)) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
            Some(_) => {
                return Err(ApiError::invalid(
                    "description",
                    "description must be a string",
                ));
            }
        };
        Ok(Self {
            task_id,
            title,
            description,
        })
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LinearIssueCreated {
    success: bool,
    data: LinearIssueData,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinearIssueData {
    /// The issue's identifier (`ENG-123`).
    issue_id: String,
    issue_url: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MondayItemCreated {
    success: bool,
    data: MondayItemData,
    /// Set when the item was created but its description update failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MondayItemData {
    item_id: String,
    item_url: String,
}

/// The answer to a filed ticket, as sent and as kept for a replay.
#[derive(Serialize)]
#[serde(untagged)]
enum TicketCreated {
    Linear(LinearIssueCreated),
    Monday(MondayItemCreated),
}

/// Why filing a ticket may be refused: the same for both trackers.
#[derive(utoipa::IntoResponses)]
pub enum TicketRefusals {
    /// `Invalid taskId`, `Invalid title`, `Invalid description`, `Invalid Idempotency-Key`,
    /// `Integration not configured`, `Invalid credentials`, `Missing body`, `Invalid JSON`
    #[response(status = 400)]
    Invalid(crate::openapi::ErrorBody),
    /// `Execution not found`
    #[response(status = 404)]
    NoExecution(crate::openapi::ErrorBody),
    /// `Request in progress` with this Idempotency-Key
    #[response(status = 409)]
    InProgress(crate::openapi::ErrorBody),
    /// `Idempotency key reused` with another body
    #[response(status = 422)]
    KeyReused(crate::openapi::ErrorBody),
    /// `Provider unavailable`, `Provider error`
    #[response(status = 502)]
    ProviderFailed(crate::openapi::ErrorBody),
    /// `Provider rate limited`, with `retryAfter`
    #[response(status = 503)]
    ProviderLimited(crate::openapi::ErrorBody),
}

#[utoipa::path(
    post,
    path = "/api/linear/issues",
    tag = "integrations",
    summary = "File a Linear issue from an execution and link it both ways (all roles)",
    security(("bearerAuth" = [])),
    params(IdempotencyKey),
    request_body = TicketRequest,
    responses(
        (status = 201, description = "Created and linked; a replay carries `Idempotent-Replayed: true`", body = LinearIssueCreated),
        TicketRefusals,
    ),
)]
pub async fn create_linear_issue(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response, ApiError> {
    file(app, ip, user, key, body, Tracker::Linear).await
}

#[utoipa::path(
    post,
    path = "/api/monday/items",
    tag = "integrations",
    summary = "File a Monday.com item from an execution and link it both ways (all roles)",
    security(("bearerAuth" = [])),
    params(IdempotencyKey),
    request_body = TicketRequest,
    responses(
        (status = 201, description = "Created and linked; a replay carries `Idempotent-Replayed: true`", body = MondayItemCreated),
        TicketRefusals,
    ),
)]
pub async fn create_monday_item(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response, ApiError> {
    file(app, ip, user, key, body, Tracker::Monday).await
}

async fn file(
    app: AppState,
    ip: ClientIp,
    user: CurrentUser,
    key: IdempotencyKey,
    body: JsonBody,
    tracker: Tracker,
) -> Result<Response, ApiError> {
    let body = body.required()?;
    let request = TicketRequest::from_body(&body)?;
    let claim = match key
        .claim(&app, user.org_id(), tracker.route(), &body)
        .await?
    {
        Claimed::Replayed(response) => return Ok(response),
        Claimed::Fresh(claim) => claim,
    };
    let audit = user.audit_event(ip, tracker.audit_action(), "execution", &request.task_id);
    let job = Job {
        app,
        tracker,
        request,
        audit,
        user_id: user.id().to_string(),
    };
    tokio::spawn(job.run(claim))
        .await
        .or_internal("Failed to create ticket")?
}

/// A created ticket, before it is recorded.
struct Created {
    external_id: String,
    url: String,
    answer: TicketCreated,
}

struct Job {
    app: AppState,
    tracker: Tracker,
    request: TicketRequest,
    audit: AuditEvent,
    user_id: String,
}

impl Job {
    async fn run(self, claim: KeyClaim) -> Result<Response, ApiError> {
        match self.create().await {
            Ok((execution_id, created)) => self.link(execution_id, created, claim).await,
            // Nothing was created: the same key may try again.
            Err(e) => claim.settle(Err(e)).await,
        }
    }

    /// Finds the execution and the integration, and has the provider create the ticket:
    /// `(execution id, ticket)`. When this fails, nothing was created.
    async fn create(&self) -> Result<(String, Created), ApiError> {
        let org = &self.audit.organization_id;
        let provider = self.tracker.provider();
        let execution_id = stored::execution_id(&self.app.db, org, &self.request.task_id)
            .await
            .or_internal("Failed to create ticket")?
            .ok_or_else(|| {
                ApiError::not_found(
                    "Execution not found",
                    "No execution with this taskId exists",
                )
            })?;
        let record = stored::get(&self.app.db, org, provider)
            .await
            .or_internal("Failed to create ticket")?
            .filter(|r| r.enabled)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "Integration not configured",
                    format!(
                        "{} is not configured or is disabled for this organization",
                        provider.display_name()
                    ),
                )
            })?;
        let secret = open_secret(&self.app, org, provider, &record.secret)?;
        // Without a description of its own, the ticket carries the run's analysis.
        let analysis = match &self.request.description {
            Some(_) => None,
            None => orgd_core::analysis::completed(&self.app.db, org, &execution_id)
                .await
                .or_internal("Failed to create ticket")?,
        };
        let created = match self.tracker {
            Tracker::Linear => self.create_linear(&record, &secret, analysis).await,
            Tracker::Monday => self.create_monday(&record, &secret, analysis).await,
        };
        // The call feeds the integration's health (failures in our words, never counted
        // toward disabling a tracker: an admin fixes its settings).
        let now = self.app.now();
        let health = match &created {
            Ok(_) => {
                orgd_core::outbox::record_success(&self.app.db, org, provider.as_str(), now).await
            }
            Err(e) => {
                let (_, words) = e.error_and_message();
                orgd_core::outbox::record_failure(
                    &self.app.db,
                    org,
                    provider,
                    &words,
                    false,
                    i64::MAX,
                    now,
                )
                .await
                .map(|_| ())
            }
        };
        if let Err(e) = health {
            tracing::warn!(error = %e, "the integration's health could not be recorded");
        }
        Ok((execution_id, created?))
    }

    /// Links a created ticket to its execution and builds the answer.
    async fn link(
        &self,
        execution_id: String,
        created: Created,
        claim: KeyClaim,
    ) -> Result<Response, ApiError> {
        let body = serde_json::to_value(&created.answer).or_internal("Failed to record ticket")?;
        // The audit entry: the answer's data, with the taskId and any warning.
        let mut details = body["data"].clone();
        details["taskId"] = json!(self.request.task_id);
        if let Some(warning) = body.get("warning") {
            details["warning"] = warning.clone();
        }
        let link = TicketLink {
            id: orgd_core::ids::new_id(self.app.now()),
            organization_id: self.audit.organization_id.clone(),
            execution_id,
            provider: self.tracker.provider().as_str(),
            external_id: created.external_id,
            url: created.url,
            title: self.request.title.clone(),
            created_by: self.user_id.clone(),
        };
        let audit = self.audit.clone().with_details(details);
        let answer = answer(StatusCode::CREATED, &body);
        match self.record(&link, &audit, &answer, &claim).await {
            Ok(()) => claim.settle(respond(&answer)).await,
            Err(e) => {
                // The ticket exists: a repeat must not file it again until the claim
                // counts as abandoned.
                claim.keep();
                Err(e)
            }
        }
    }

    /// Records the link, the audit entry and the idempotent answer. The ticket exists by
    /// now, so a failing database gets a few more chances before the request gives up.
    async fn record(
        &self,
        link: &TicketLink,
        audit: &AuditEvent,
        answer: &Answer,
        claim: &KeyClaim,
    ) -> Result<(), ApiError> {
        let answer_for = |_: &TicketLink| answer.clone();
        let replay = claim.replay(&answer_for);
        let mut attempt = 0;
        loop {
            match stored::record_ticket(&self.app.db, link, audit, replay.as_ref(), self.app.now())
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 3 => {
                    tracing::warn!(error = %e, attempt, "recording a ticket link failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, provider = link.provider, ticket = %link.external_id, url = %link.url,
                        task_id = %self.request.task_id, "ticket created but its link could not be recorded");
                    return Err(ApiError::internal("Failed to record ticket", e));
                }
            }
        }
    }

    fn provider_error(&self, error: orgd_providers::ProviderError) -> ApiError {
        ApiError::provider(
            error,
            ProviderCall::FileTicket(self.tracker.provider().outbound()),
        )
    }

    /// `{ORGD_PUBLIC_URL}/executions/{taskId}`, when the public URL is configured.
    fn run_url(&self) -> Option<String> {
        let base = self.app.config.public_url.as_ref()?;
        Some(format!(
            "{base}/executions/{}",
            encode_path_segment(&self.request.task_id)
        ))
    }

    async fn create_linear(
        &self,
        record: &IntegrationRecord,
        secret: &Secret<String>,
        analysis: Option<Analysis>,
    ) -> Result<Created, ApiError> {
        let team_id = setting(record, "teamId")?;
        let link_back = self
            .run_url()
            .map(|url| format!("[View this run in orgd]({url})"));
        let text = self.request.description.clone().or_else(|| {
            analysis.map(|(root_cause, fix)| {
                format!("## Root Cause\n{root_cause}\n\n## Suggested Fix\n{fix}")
            })
        });
        let description = match (text, link_back) {
            (Some(text), Some(link)) => Some(format!("{text}\n\n---\n{link}")),
            (text, link) => text.or(link),
        };
        let issue = NewIssue {
            id: linear::new_uuid(),
            team_id: team_id.to_string(),
            title: self.request.title.clone(),
            description,
        };
        let created = self
            .app
            .linear
            .create_issue(&secret.0, &issue)
            .await
            .map_err(|e| self.provider_error(e))?;
        Ok(Created {
            answer: TicketCreated::Linear(LinearIssueCreated {
                success: true,
                data: LinearIssueData {
                    issue_id: created.identifier.clone(),
                    issue_url: created.url.clone(),
                },
            }),
            external_id: created.identifier,
            url: created.url,
        })
    }

    async fn create_monday(
        &self,
        record: &IntegrationRecord,
        secret: &Secret<String>,
        analysis: Option<Analysis>,
    ) -> Result<Created, ApiError> {
        let board = setting(record, "boardId")?;
        let group = record.settings.get("groupId").and_then(Value::as_str);
        let slug = record.settings.get("accountSlug").and_then(Value::as_str);
        let item = self
            .app
            .monday
            .create_item(&secret.0, board, group, &self.request.title, slug)
            .await
            .map_err(|e| self.provider_error(e))?;
        // The item exists from here on: a failing update is a warning, never a re-create.
        let mut warning = None;
        let text = description_html(self.request.description.as_deref(), analysis);
        if let Some(html) = update_html(text, self.run_url().as_deref())
            && let Err(e) = self.app.monday.add_update(&secret.0, &item.id, &html).await
        {
            tracing::warn!(error = %e, item = %item.id, "Monday.com item created but adding its update failed");
            warning = Some("Item created; adding the description failed".to_string());
        }
        Ok(Created {
            answer: TicketCreated::Monday(MondayItemCreated {
                success: true,
                data: MondayItemData {
                    item_id: item.id.clone(),
                    item_url: item.url.clone(),
                },
                warning,
            }),
            external_id: item.id,
            url: item.url,
        })
    }
}

fn setting<'a>(record: &'a IntegrationRecord, name: &str) -> Result<&'a str, ApiError> {
    record
        .settings
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::internal(
                "Failed to create ticket",
                anyhow::anyhow!("stored settings lack {name}"),
            )
        })
}

/// A completed analysis: `(rootCause, suggestedFix)`.
type Analysis = (String, String);

/// Text as an HTML paragraph: escaped, line breaks kept.
fn paragraph(text: &str) -> String {
    format!("<p>{}</p>", monday::escape_html(text).replace('\n', "<br>"))
}

/// The description as Monday.com HTML: the caller's text, else the analysis.
fn description_html(description: Option<&str>, analysis: Option<Analysis>) -> Option<String> {
    match (description, analysis) {
        (Some(text), _) => Some(paragraph(text)),
        (None, Some((root_cause, fix))) => Some(format!(
            "<h2>Root Cause</h2>{}<h2>Suggested Fix</h2>{}",
            paragraph(&root_cause),
            paragraph(&fix)
        )),
        (None, None) => None,
    }
}

/// The Monday.com update: the description (already HTML) and the link back to the run;
/// `None` when there is neither.
fn update_html(description: Option<String>, run_url: Option<&str>) -> Option<String> {
    let mut html = description.unwrap_or_default();
    if let Some(url) = run_url {
        html.push_str(&format!(
            "<p><a href=\"{}\">View this run in orgd</a></p>",
            monday::escape_html(url)
        ));
    }
    (!html.is_empty()).then_some(html)
}

/// Percent-encodes everything but unreserved characters.
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monday_updates_are_escaped() {
        assert_eq!(
            update_html(
                description_html(Some("<b>boom</b>\nline 2"), None),
                Some("https://orgd.example/executions/a%3Ab")
            )
            .as_deref(),
            Some(
                "<p>&lt;b&gt;boom&lt;/b&gt;<br>line 2</p><p><a href=\"https://orgd.example/executions/a%3Ab\">View this run in orgd</a></p>"
            )
        );
        assert_eq!(update_html(None, None), None);
        assert_eq!(
            description_html(None, Some(("a<b".into(), "fix\nit".into()))).as_deref(),
            Some("<h2>Root Cause</h2><p>a&lt;b</p><h2>Suggested Fix</h2><p>fix<br>it</p>")
        );
        assert_eq!(encode_path_segment("run:1 2/x"), "run%3A1%202%2Fx");
    }
}

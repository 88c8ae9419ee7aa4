//! Tickets filed from an execution on every tracker — `POST /api/linear/issues`,
//! `/api/monday/items`, `/api/jira/issues`, `/api/github/issues`, `/api/gitlab/issues`,
//! `/api/bitbucket/issues` and `/api/azuredevops/workitems` — linked both ways (the execution
//! lists the ticket; the ticket links back to the run). One implementation; only the
//! provider call differs.
//!
//! The work runs in a spawned task the handler awaits: once the provider has created the
//! ticket, the link is recorded even if the client has gone. With an `Idempotency-Key`, a
//! repeat returns the first answer and creates nothing. Everything sent has the
//! organization's stored secrets redacted.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::integration_settings::{Described, Integration, open_secret};
use crate::auth::CurrentUser;
use crate::error::{ApiError, OrInternal, ProviderCall, issues_disabled};
use crate::http::idempotency::{Claimed, IdempotencyKey, KeyClaim, answer, respond};
use crate::http::{ClientIp, FromBody, JsonBody, Object};
use crate::state::AppState;
use crate::trackers;
use orgd_core::audit::AuditEvent;
use orgd_core::idempotency::Answer;
use orgd_core::integrations::{self as stored, TicketLink};
use orgd_core::text::redact;
use orgd_providers::ProviderError;
use orgd_providers::azure_devops::AzureDevOpsTarget;
use orgd_providers::bitbucket::BitbucketTarget;
use orgd_providers::github::GitHubTarget;
use orgd_providers::gitlab::GitLabTarget;
use orgd_providers::jira::{JiraAuth, JiraCredentials, NewJiraIssue};
use orgd_providers::linear::{self, NewIssue};
use orgd_providers::monday;
use orgd_providers::tracker::Ticket;

pub fn router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(create_linear_issue))
        .routes(utoipa_axum::routes!(create_monday_item))
        .routes(utoipa_axum::routes!(create_jira_issue))
        .routes(utoipa_axum::routes!(create_github_issue))
        .routes(utoipa_axum::routes!(create_gitlab_issue))
        .routes(utoipa_axum::routes!(create_bitbucket_issue))
        .routes(utoipa_axum::routes!(create_azure_devops_work_item))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracker {
    Linear,
    Monday,
    Jira,
    GitHub,
    GitLab,
    AzureDevOps,
    Bitbucket,
}

impl Tracker {
    fn provider(self) -> Integration {
        match self {
            Self::Linear => Integration::Linear,
            Self::Monday => Integration::Monday,
            Self::Jira => Integration::Jira,
            Self::GitHub => Integration::Github,
            Self::GitLab => Integration::Gitlab,
            Self::AzureDevOps => Integration::AzureDevops,
            Self::Bitbucket => Integration::Bitbucket,
        }
    }

    /// The idempotency scope's route.
    fn route(self) -> &'static str {
        match self {
            Self::Linear => "POST /api/linear/issues",
            Self::Monday => "POST /api/monday/items",
            Self::Jira => "POST /api/jira/issues",
            Self::GitHub => "POST /api/github/issues",
            Self::GitLab => "POST /api/gitlab/issues",
            Self::AzureDevOps => "POST /api/azuredevops/workitems",
            Self::Bitbucket => "POST /api/bitbucket/issues",
        }
    }

    /// `<provider>.issue_created` (API.md), and the seed's `monday.item_created`.
    fn audit_action(self) -> &'static str {
        match self {
            Self::Linear => "linear.issue_created",
            Self::Monday => "monday.item_created",
            Self::Jira => "jira.issue_created",
            Self::GitHub => "github.issue_created",
            Self::GitLab => "gitlab.issue_created",
            Self::AzureDevOps => "azuredevops.issue_created",
            Self::Bitbucket => "bitbucket.issue_created",
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

/// An issue filed on Linear, Jira, GitHub, GitLab, Bitbucket or Azure DevOps.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IssueCreated {
    success: bool,
    data: IssueData,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssueData {
    /// What people call it: `ENG-123` (Linear, Jira), `#42` (GitHub, GitLab, Bitbucket),
    /// `12345` (Azure DevOps).
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
    Issue(IssueCreated),
    Monday(MondayItemCreated),
}

/// Why filing a ticket may be refused: the same for every tracker.
#[derive(utoipa::IntoResponses)]
pub enum TicketRefusals {
    /// `Invalid taskId`, `Invalid title`, `Invalid description`, `Invalid Idempotency-Key`,
    /// `Integration not configured` (missing or disabled), `Integration incomplete` (saved
    /// before a field it now needs existed; the message names it), `Issues disabled` (the
    /// repository takes no issues), `Missing body`, `Invalid JSON`
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
    /// `Provider unavailable`, `Provider error` (also when the tracker refuses the stored
    /// credentials, or answers something that is not its API's answer); nothing is linked
    #[response(status = 502)]
    ProviderFailed(crate::openapi::ErrorBody),
    /// `Provider rate limited`, with `retryAfter`
    #[response(status = 503)]
    ProviderLimited(crate::openapi::ErrorBody),
}

/// One documented route per tracker, each filing through `file` (utoipa documents a path
/// per function, so each tracker has its own).
// rustfmt re-indents an attribute inside `macro_rules!` on every run: kept as written.
#[rustfmt::skip]
macro_rules! ticket_route {
    ($name:ident, $path:literal, $summary:literal, $created:literal, $body:ty, $tracker:expr) => {
        #[utoipa::path(
            post,
            path = $path,
            tag = "integrations",
            summary = $summary,
            security(("bearerAuth" = [])),
            params(IdempotencyKey),
            request_body = TicketRequest,
            responses(
                (status = 201, description = $created, body = $body),
                TicketRefusals,
            ),
        )]
        pub async fn $name(
            State(app): State<AppState>,
            ip: ClientIp,
            user: CurrentUser,
            key: IdempotencyKey,
            body: JsonBody,
        ) -> Result<Response, ApiError> {
            file(app, ip, user, key, body, $tracker).await
        }
    };
}

ticket_route!(
    create_linear_issue,
    "/api/linear/issues",
    "File a Linear issue from an execution and link it both ways (all roles)",
    "Created and linked; a replay carries `Idempotent-Replayed: true`",
    IssueCreated,
    Tracker::Linear
);
ticket_route!(
    create_monday_item,
    "/api/monday/items",
    "File a Monday.com item from an execution and link it both ways (all roles)",
    "Created and linked; a replay carries `Idempotent-Replayed: true`",
    MondayItemCreated,
    Tracker::Monday
);
ticket_route!(
    create_jira_issue,
    "/api/jira/issues",
    "File a Jira issue (description as an ADF document) from an execution and link it both ways (all roles)",
    "Created and linked; `issueId` is the key (`ENG-24`); a replay carries `Idempotent-Replayed: true`",
    IssueCreated,
    Tracker::Jira
);
ticket_route!(
    create_github_issue,
    "/api/github/issues",
    "File a GitHub issue from an execution and link it both ways (all roles)",
    "Created and linked; `issueId` is `#<number>`; a replay carries `Idempotent-Replayed: true`",
    IssueCreated,
    Tracker::GitHub
);
ticket_route!(
    create_gitlab_issue,
    "/api/gitlab/issues",
    "File a GitLab issue from an execution and link it both ways (all roles)",
    "Created and linked; `issueId` is `#<iid>`; a replay carries `Idempotent-Replayed: true`",
    IssueCreated,
    Tracker::GitLab
);
ticket_route!(
    create_bitbucket_issue,
    "/api/bitbucket/issues",
    "File a Bitbucket issue from an execution and link it both ways (all roles)",
    "Created and linked; `issueId` is `#<id>`; a replay carries `Idempotent-Replayed: true`",
    IssueCreated,
    Tracker::Bitbucket
);
ticket_route!(
    create_azure_devops_work_item,
    "/api/azuredevops/workitems",
    "File an Azure DevOps work item (description as escaped HTML) from an execution and link it both ways (all roles)",
    "Created and linked; `issueId` is the work item id; a replay carries `Idempotent-Replayed: true`",
    IssueCreated,
    Tracker::AzureDevOps
);

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

/// What is sent, with the organization's secrets redacted.
struct Outgoing {
    title: String,
    description: Option<String>,
    /// The run's analysis, sent when the caller gives no description.
    analysis: Option<Analysis>,
}

/// The call a tracker's settings make: read (and refused when incomplete or when issues are
/// off) before anything is sent.
enum Call<'a> {
    Linear {
        token: &'a str,
        team_id: &'a str,
    },
    Monday {
        token: &'a str,
        board: &'a str,
        group: Option<&'a str>,
        account_slug: Option<&'a str>,
    },
    Jira {
        credentials: JiraCredentials<'a>,
        auth: JiraAuth,
        project_key: &'a str,
        issue_type: &'a str,
    },
    GitHub(GitHubTarget<'a>),
    GitLab(GitLabTarget<'a>),
    AzureDevOps {
        target: AzureDevOpsTarget<'a>,
        work_item_type: &'a str,
    },
    Bitbucket(BitbucketTarget<'a>),
}

impl<'a> Call<'a> {
    fn new(
        tracker: Tracker,
        settings: &'a Map<String, Value>,
        token: &'a str,
    ) -> Result<Self, ApiError> {
        let text = |name: &str| settings.get(name).and_then(Value::as_str);
        // GitHub, GitLab and Bitbucket repositories may have their issues turned off.
        let takes_issues = |call: Self| {
            if trackers::issues_enabled(settings) {
                Ok(call)
            } else {
                Err(issues_disabled(tracker.provider().display_name()))
            }
        };
        match tracker {
            Tracker::Linear => Ok(Self::Linear {
                token,
                team_id: trackers::needed(settings, "teamId")?,
            }),
            Tracker::Monday => Ok(Self::Monday {
                token,
                board: trackers::needed(settings, "boardId")?,
                group: text("groupId"),
                account_slug: text("accountSlug"),
            }),
            Tracker::Jira => Ok(Self::Jira {
                credentials: trackers::jira_credentials(settings, token)?,
                auth: trackers::jira_auth(settings)?,
                project_key: trackers::needed(settings, "projectKey")?,
                issue_type: trackers::jira_issue_type(settings),
            }),
            Tracker::GitHub => {
                takes_issues(Self::GitHub(trackers::github_target(settings, token)?))
            }
            Tracker::GitLab => {
                takes_issues(Self::GitLab(trackers::gitlab_target(settings, token)?))
            }
            Tracker::AzureDevOps => Ok(Self::AzureDevOps {
                target: trackers::azure_devops_target(settings, token)?,
                work_item_type: trackers::azure_devops_work_item_type(settings),
            }),
            Tracker::Bitbucket => takes_issues(Self::Bitbucket(trackers::bitbucket_target(
                settings, token,
            )?)),
        }
    }
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
            Ok((execution_id, title, created)) => {
                self.link(execution_id, title, created, claim).await
            }
            // Nothing was created: the same key may try again.
            Err(e) => claim.settle(Err(e)).await,
        }
    }

    /// Finds the execution and the integration, and has the provider create the ticket:
    /// `(execution id, title sent, ticket)`. When this fails, nothing was created.
    async fn create(&self) -> Result<(String, String, Created), ApiError> {
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
        let call = Call::new(self.tracker, &record.settings, &secret.0)?;
        let outgoing = self.outgoing(&execution_id).await?;
        let created = self.send(call, &outgoing).await;
        // The call feeds the integration's health (failures in our words).
        let now = self.app.now();
        let health = match &created {
            Ok(_) => {
                orgd_core::outbox::record_success(&self.app.db, org, provider.as_str(), now).await
            }
            Err(e) => {
                let words = self.during().describe(e);
                orgd_core::outbox::record_tracker_failure(&self.app.db, org, provider, &words, now)
                    .await
            }
        };
        if let Err(e) = health {
            tracing::warn!(error = %e, "the integration's health could not be recorded");
        }
        let created = created.map_err(|e| ApiError::provider(e, self.during()))?;
        Ok((execution_id, outgoing.title, created))
    }

    fn during(&self) -> ProviderCall {
        ProviderCall::FileTicket(self.tracker.provider().outbound())
    }

    /// The title, the description and the run's analysis (read when there is no
    /// description), with the organization's secrets redacted.
    async fn outgoing(&self, execution_id: &str) -> Result<Outgoing, ApiError> {
        let org = &self.audit.organization_id;
        let analysis = match &self.request.description {
            Some(_) => None,
            None => orgd_core::analysis::completed(&self.app.db, org, execution_id)
                .await
                .or_internal("Failed to create ticket")?,
        };
        let secrets = crate::redaction::secrets_to_redact(&self.app, org)
            .await
            .or_internal("Failed to create ticket")?;
        let clean = |text: &str| redact(text, &secrets);
        Ok(Outgoing {
            title: clean(&self.request.title),
            description: self.request.description.as_deref().map(clean),
            analysis: analysis.map(|(root_cause, fix)| (clean(&root_cause), clean(&fix))),
        })
    }

    /// Has the provider create the ticket.
    async fn send(&self, call: Call<'_>, outgoing: &Outgoing) -> Result<Created, ProviderError> {
        let trackers = &self.app.trackers;
        let title = outgoing.title.as_str();
        let description = self.markdown(outgoing);
        let ticket = match call {
            Call::Monday {
                token,
                board,
                group,
                account_slug,
            } => {
                return self
                    .send_monday(token, board, group, account_slug, outgoing)
                    .await;
            }
            Call::Linear { token, team_id } => {
                let issue = NewIssue {
                    id: linear::new_uuid(),
                    team_id: team_id.to_string(),
                    title: title.to_string(),
                    description: Some(description).filter(|d| !d.is_empty()),
                };
                let created = self.app.linear.create_issue(token, &issue).await?;
                (created.identifier, created.url)
            }
            Call::Jira {
                credentials,
                auth,
                project_key,
                issue_type,
            } => {
                let issue = NewJiraIssue {
                    project_key,
                    issue_type,
                    title,
                    description: &description,
                };
                key_and_url(
                    trackers
                        .jira
                        .create_issue(&credentials, &auth, &issue)
                        .await?,
                )
            }
            Call::GitHub(target) => key_and_url(
                trackers
                    .github
                    .create_issue(&target, title, &description)
                    .await?,
            ),
            Call::GitLab(target) => key_and_url(
                trackers
                    .gitlab
                    .create_issue(&target, title, &description)
                    .await?,
            ),
            Call::AzureDevOps {
                target,
                work_item_type,
            } => key_and_url(
                trackers
                    .azure_devops
                    .create_work_item(&target, work_item_type, title, &description)
                    .await?,
            ),
            Call::Bitbucket(target) => key_and_url(
                trackers
                    .bitbucket
                    .create_issue(&target, title, &description)
                    .await?,
            ),
        };
        let (key, url) = ticket;
        Ok(Created {
            answer: TicketCreated::Issue(IssueCreated {
                success: true,
                data: IssueData {
                    issue_id: key.clone(),
                    issue_url: url.clone(),
                },
            }),
            external_id: key,
            url,
        })
    }

    /// The description as Markdown (each tracker's client renders it its way): the caller's
    /// text, else the analysis, then the link back to the run.
    fn markdown(&self, outgoing: &Outgoing) -> String {
        let text = match (&outgoing.description, &outgoing.analysis) {
            (Some(text), _) => Some(text.clone()),
            (None, Some((root_cause, fix))) => Some(format!(
                "## Root Cause\n{root_cause}\n\n## Suggested Fix\n{fix}"
            )),
            (None, None) => None,
        };
        let link_back = self
            .run_url()
            .map(|url| format!("[View this run in orgd]({url})"));
        match (text, link_back) {
            (Some(text), Some(link)) => format!("{text}\n\n---\n{link}"),
            (text, link) => text.or(link).unwrap_or_default(),
        }
    }

    /// Creates the item, then adds the description (and the link back) as its first update.
    async fn send_monday(
        &self,
        token: &str,
        board: &str,
        group: Option<&str>,
        account_slug: Option<&str>,
        outgoing: &Outgoing,
    ) -> Result<Created, ProviderError> {
        let item = self
            .app
            .monday
            .create_item(token, board, group, &outgoing.title, account_slug)
            .await?;
        // The item exists from here on: a failing update is a warning, never a re-create.
        let mut warning = None;
        let text = description_html(outgoing.description.as_deref(), outgoing.analysis.clone());
        if let Some(html) = update_html(text, self.run_url().as_deref())
            && let Err(e) = self.app.monday.add_update(token, &item.id, &html).await
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

    /// Links a created ticket to its execution and builds the answer.
    async fn link(
        &self,
        execution_id: String,
        title: String,
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
            title,
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

    /// `{ORGD_PUBLIC_URL}/executions/{taskId}`, when the public URL is configured.
    fn run_url(&self) -> Option<String> {
        let base = self.app.config.public_url.as_ref()?;
        Some(format!(
            "{base}/executions/{}",
            encode_path_segment(&self.request.task_id)
        ))
    }
}

fn key_and_url(ticket: Ticket) -> (String, String) {
    (ticket.key, ticket.url)
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

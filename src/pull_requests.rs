//! Delivering a finished run's pull-request comment (API.md, "Tickets and pull-request
//! comments on every tracker"): one outbox row per finished run with a `ci` context, taken by
//! the delivery worker. The comment's row is claimed first (`orgd_core::pull_requests`), so
//! runs finishing together post one comment and later runs edit it; a comment deleted on the
//! tracker's side is posted anew. Every outcome feeds the integration's health; trackers are
//! never disabled for failing.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::metrics::Delivery as Counted;
use crate::state::AppState;
use crate::trackers;
use orgd_core::clock::parse_rfc3339;
use orgd_core::integrations::{Integration, IntegrationRecord};
use orgd_core::outbox::{self, Channel, Leased};
use orgd_core::pull_requests::{self as comments, Ci, Claim, CommentKey, PostedComment};
use orgd_core::secrets::SecretTable;
use orgd_core::text::redact;
use orgd_providers::ProviderError;
use orgd_providers::azure_devops::AzurePullRequest;
use orgd_providers::tracker::{CommentEdit, PrComment};

/// How long a delivery holding a comment makes another wait before trying again.
const BUSY_RETRY_MS: i64 = 2_000;

/// Why a row ends without a comment.
enum Stop {
    /// Repeating cannot help (settings missing, the tracker refused the credential).
    Final(String),
    /// The tracker failed: try again per the retry schedule (`Retry-After` pushes it later).
    Retry {
        error: String,
        retry_after_secs: Option<u64>,
    },
}

/// How one attempt ended.
enum Outcome {
    /// The tracker shows the run (posted or edited).
    Shown,
    /// A run that finished later is shown already: nothing to do.
    Superseded,
    /// Another delivery holds the comment; the row was handed back for later.
    Waiting,
    Stopped(Stop),
}

/// One attempt at one pull-request row; the row's outcome is recorded here.
pub async fn deliver(app: &AppState, row: Leased) -> anyhow::Result<()> {
    let org = row.organization_id.clone();
    let event: Value = serde_json::from_str(&row.payload).unwrap_or(Value::Null);
    let run = Run::read(&event["data"]["execution"]);
    let tracker =
        Integration::parse(&row.destination).filter(|p| comments::CI_PROVIDERS.contains(p));
    let (Some(run), Some(tracker)) = (run, tracker) else {
        let stop = Stop::Final("the event could not be read".into());
        return finish(app, &row, Outcome::Stopped(stop)).await;
    };
    let record = orgd_core::integrations::get(&app.db, &org, tracker)
        .await?
        .filter(|r| r.enabled);
    let Some(record) = record else {
        let stop = Stop::Final("the integration is not enabled".into());
        return finish(app, &row, Outcome::Stopped(stop)).await;
    };
    let outcome = post_or_edit(app, &row, tracker, &record, &run).await?;
    let now = app.now();
    match &outcome {
        Outcome::Shown => outbox::record_success(&app.db, &org, tracker.as_str(), now).await?,
        Outcome::Stopped(Stop::Final(error) | Stop::Retry { error, .. }) => {
            outbox::record_tracker_failure(&app.db, &org, tracker, error, now).await?;
        }
        Outcome::Superseded | Outcome::Waiting => {}
    }
    finish(app, &row, outcome).await
}

/// Claims the comment and posts or edits it.
async fn post_or_edit(
    app: &AppState,
    row: &Leased,
    tracker: Integration,
    record: &IntegrationRecord,
    run: &Run,
) -> anyhow::Result<Outcome> {
    let org = &row.organization_id;
    let target = match Target::new(app, org, tracker, record, &run.ci) {
        Ok(target) => target,
        Err(stop) => return Ok(Outcome::Stopped(stop)),
    };
    let key = CommentKey {
        organization_id: org,
        provider: tracker,
        repository: &target.repository,
        pull_request: run.ci.pull_request,
        group_name: run.group.as_deref(),
    };
    let now = app.now();
    let claim = comments::claim(
        &app.db,
        &key,
        &row.id,
        run.finished_at,
        row.lease_until,
        now,
    )
    .await?;
    let existing = match claim {
        Claim::Post => None,
        Claim::Edit(comment) => Some(comment),
        Claim::Superseded => return Ok(Outcome::Superseded),
        Claim::Busy { until } => {
            let due = until.min(now + BUSY_RETRY_MS).max(now + 1);
            outbox::release(&app.db, row, due, now).await?;
            return Ok(Outcome::Waiting);
        }
    };
    let secrets = crate::redaction::secrets_to_redact(app, org).await?;
    let body = run.comment(app, org, &secrets).await?;
    let pull_request = run.ci.pull_request;
    let result = match existing {
        Some(comment) => match target.edit(app, pull_request, comment, &body).await {
            Ok(CommentEdit::Edited) => Ok(comment),
            Ok(CommentEdit::Gone) => target.post(app, pull_request, &body).await,
            Err(e) => Err(e),
        },
        None => target.post(app, pull_request, &body).await,
    };
    let now = app.now();
    match result {
        Ok(comment) => {
            let (id, finished_at) = (&run.id, run.finished_at);
            if !comments::shown(&app.db, &key, &row.id, comment, id, finished_at, now).await? {
                tracing::warn!(row = %row.id, "a pull-request comment's claim expired while it was posted");
            }
            Ok(Outcome::Shown)
        }
        Err(stop) => {
            comments::let_go(&app.db, &key, &row.id, now).await?;
            Ok(Outcome::Stopped(stop))
        }
    }
}

/// Records the row's outcome: delivered, retried per the schedule, or failed.
async fn finish(app: &AppState, row: &Leased, outcome: Outcome) -> anyhow::Result<()> {
    let now = app.now();
    let (error, retry_at) = match outcome {
        Outcome::Waiting => return Ok(()),
        Outcome::Shown | Outcome::Superseded => {
            outbox::delivered(&app.db, &[row], None, now).await?;
            app.metrics
                .record_delivery(Channel::PullRequest, Counted::Delivered);
            return Ok(());
        }
        Outcome::Stopped(Stop::Final(error)) => (error, None),
        Outcome::Stopped(Stop::Retry {
            error,
            retry_after_secs,
        }) => {
            let at = crate::outbox::next_attempt(app, row.attempts, now, retry_after_secs);
            (error, at)
        }
    };
    crate::outbox::not_delivered(app, row, None, &error, retry_at).await
}

/// Whether a failed call is worth repeating, in our words.
fn stop_for(error: &ProviderError) -> Stop {
    let words = error.to_string();
    match error {
        ProviderError::RateLimited {
            retry_after_secs, ..
        } => Stop::Retry {
            error: words,
            retry_after_secs: Some(*retry_after_secs),
        },
        ProviderError::Overloaded
        | ProviderError::Failed {
            transient: true, ..
        } => Stop::Retry {
            error: words,
            retry_after_secs: None,
        },
        ProviderError::Unreachable(unreached)
            if !matches!(unreached, orgd_providers::client::Unreached::Blocked(_)) =>
        {
            Stop::Retry {
                error: words,
                retry_after_secs: None,
            }
        }
        _ => Stop::Final(words),
    }
}

/// The finished run as the frozen event shows it.
struct Run {
    id: String,
    task_id: String,
    status: String,
    group: Option<String>,
    error: Option<String>,
    finished_at: i64,
    duration_ms: Option<i64>,
    ci: Ci,
}

impl Run {
    fn read(execution: &Value) -> Option<Self> {
        let text = |key: &str| execution[key].as_str().map(str::to_string);
        let at = |key: &str| execution[key].as_str().and_then(parse_rfc3339);
        let ci: Ci = serde_json::from_value(execution["ci"].clone()).ok()?;
        let finished_at = at("finishedAt")?;
        Some(Self {
            id: text("id")?,
            task_id: text("taskId")?,
            status: text("status")?,
            group: text("groupName"),
            error: text("error"),
            duration_ms: at("startTime").map(|start| finished_at - start),
            finished_at,
            ci,
        })
    }

    /// The comment's Markdown: status, the error's first line, the analysis when there is
    /// one, links to the run and the build, and the hidden marker that names the comment.
    async fn comment(
        &self,
        app: &AppState,
        org: &str,
        secrets: &[String],
    ) -> anyhow::Result<String> {
        let analysis = orgd_core::analysis::completed(&app.db, org, &self.id).await?;
        let run_url = app
            .config
            .public_url
            .as_ref()
            .map(|base| format!("{base}/executions/{}", self.task_id));
        let notice = CommentNotice {
            organization_id: org,
            run: self,
            analysis: analysis
                .as_ref()
                .map(|(cause, fix)| (cause.as_str(), fix.as_str())),
            run_url: run_url.as_deref(),
        };
        Ok(redact(&notice.markdown(), secrets))
    }
}

/// What a comment shows.
struct CommentNotice<'a> {
    organization_id: &'a str,
    run: &'a Run,
    /// `(rootCause, suggestedFix)`.
    analysis: Option<(&'a str, &'a str)>,
    run_url: Option<&'a str>,
}

impl CommentNotice<'_> {
    fn markdown(&self) -> String {
        let run = self.run;
        let group = run.group.as_deref().unwrap_or("default");
        let icon = match run.status.as_str() {
            "PASSED" => "✅",
            "FAILED" | "ERROR" => "❌",
            _ => "⚠️",
        };
        let mut lines = vec![
            format!("<!-- orgd:{}:{group} -->", self.organization_id),
            format!(
                "### {icon} orgd: {} `{}`",
                run.status,
                inline_code(&run.task_id)
            ),
        ];
        let mut facts = vec![format!("**Group:** {}", escape_markdown(group))];
        if let Some(sha) = &run.ci.commit_sha {
            let short: String = sha.chars().take(12).collect();
            facts.push(format!("**Commit:** `{}`", inline_code(&short)));
        }
        if let Some(ms) = run.duration_ms {
            facts.push(format!("**Duration:** {:.1} s", ms as f64 / 1000.0));
        }
        lines.push(facts.join(" · "));
        if let Some(first) = run
            .error
            .as_deref()
            .and_then(|e| e.lines().map(str::trim).find(|l| !l.is_empty()))
        {
            lines.push(format!(
                "**Error:** `{}`",
                inline_code(&truncate(first, 300))
            ));
        }
        if let Some((cause, fix)) = self.analysis {
            lines.push(format!(
                "**Root cause:** {}",
                escape_markdown(&truncate(cause, 2000))
            ));
            lines.push(format!(
                "**Suggested fix:** {}",
                escape_markdown(&truncate(fix, 2000))
            ));
        }
        let mut links = Vec::new();
        if let Some(url) = self.run_url {
            links.push(format!("[View the run in orgd]({url})"));
        }
        if let Some(url) = &run.ci.build_url {
            links.push(format!("[Build]({url})"));
        }
        if !links.is_empty() {
            lines.push(links.join(" · "));
        }
        lines.join("\n\n")
    }
}

/// At most `max` characters, with `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Text inside a single-backtick code span: a backtick would end it early.
fn inline_code(text: &str) -> String {
    text.replace('`', "'")
}

/// Free text that must not open HTML (a hidden comment, a tag) or links of its own.
fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '<' | '>' | '[' | ']' | '\\' | '`' | '*' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Where one comment goes: the tracker, the repository (the run's, else the integration's),
/// and the opened credential.
struct Target {
    tracker: Integration,
    /// The repository as the comment's key names it.
    repository: String,
    token: String,
    /// The integration's settings with the run's repository in place of its own, read by the
    /// same functions as tickets (`crate::trackers`).
    settings: Map<String, Value>,
}

/// A setting the comment needs is missing (a row saved under an earlier field list).
fn incomplete(error: ApiError) -> Stop {
    let (error, message) = error.error_and_message();
    Stop::Final(format!("{error}: {message}"))
}

impl Target {
    fn new(
        app: &AppState,
        org: &str,
        tracker: Integration,
        record: &IntegrationRecord,
        ci: &Ci,
    ) -> Result<Self, Stop> {
        let mut settings = record.settings.clone();
        // The repository names the settings it stands for: `owner/name` is GitHub's owner and
        // repo, Bitbucket's workspace and slug; GitLab's is its project, Azure's its own.
        let fields: &[&str] = match tracker {
            Integration::Github => &["owner", "repo"],
            Integration::Bitbucket => &["workspace", "repoSlug"],
            Integration::Gitlab => &["projectId"],
            _ => &["repository"],
        };
        let repository = match &ci.repository {
            Some(repository) => {
                let parts: Vec<&str> = match fields.len() {
                    2 => repository.splitn(2, '/').collect(),
                    _ => vec![repository.as_str()],
                };
                for (field, part) in fields.iter().zip(parts) {
                    settings.insert((*field).into(), Value::from(part));
                }
                repository.clone()
            }
            None => fields
                .iter()
                .map(|field| trackers::needed(&settings, field).map_err(incomplete))
                .collect::<Result<Vec<_>, _>>()?
                .join("/"),
        };
        let token = app
            .vault
            .open(
                &record.secret,
                &SecretTable::Integrations.binding(org, tracker.as_str()),
            )
            .map_err(|_| Stop::Final("the stored credential cannot be opened".into()))?;
        Ok(Self {
            tracker,
            repository,
            token: token.0,
            settings,
        })
    }

    fn azure_pull_request(&self, number: u64) -> AzurePullRequest<'_> {
        AzurePullRequest {
            repository: &self.repository,
            number,
        }
    }

    async fn post(
        &self,
        app: &AppState,
        pull_request: u64,
        body: &str,
    ) -> Result<PostedComment, Stop> {
        let (settings, token, clients) = (&self.settings, self.token.as_str(), &app.trackers);
        let posted: Result<PrComment, ProviderError> = match self.tracker {
            Integration::Github => {
                let target = trackers::github_target(settings, token).map_err(incomplete)?;
                clients
                    .github
                    .create_comment(&target, pull_request, body)
                    .await
            }
            Integration::Gitlab => {
                let target = trackers::gitlab_target(settings, token).map_err(incomplete)?;
                clients
                    .gitlab
                    .create_note(&target, pull_request, body)
                    .await
            }
            Integration::AzureDevops => {
                let target = trackers::azure_devops_target(settings, token).map_err(incomplete)?;
                let pr = self.azure_pull_request(pull_request);
                clients.azure_devops.create_thread(&target, &pr, body).await
            }
            _ => {
                let target = trackers::bitbucket_target(settings, token).map_err(incomplete)?;
                clients
                    .bitbucket
                    .create_comment(&target, pull_request, body)
                    .await
            }
        };
        let posted = posted.map_err(|e| stop_for(&e))?;
        Ok(PostedComment {
            comment_id: posted.comment_id,
            thread_id: posted.thread_id,
        })
    }

    async fn edit(
        &self,
        app: &AppState,
        pull_request: u64,
        comment: PostedComment,
        body: &str,
    ) -> Result<CommentEdit, Stop> {
        let (settings, token, clients) = (&self.settings, self.token.as_str(), &app.trackers);
        let id = comment.comment_id;
        let edited = match self.tracker {
            Integration::Github => {
                let target = trackers::github_target(settings, token).map_err(incomplete)?;
                clients.github.edit_comment(&target, id, body).await
            }
            Integration::Gitlab => {
                let target = trackers::gitlab_target(settings, token).map_err(incomplete)?;
                clients
                    .gitlab
                    .edit_note(&target, pull_request, id, body)
                    .await
            }
            Integration::AzureDevops => {
                let Some(thread) = comment.thread_id else {
                    return Ok(CommentEdit::Gone);
                };
                let target = trackers::azure_devops_target(settings, token).map_err(incomplete)?;
                let pr = self.azure_pull_request(pull_request);
                clients
                    .azure_devops
                    .edit_comment(&target, &pr, thread, id, body)
                    .await
            }
            _ => {
                let target = trackers::bitbucket_target(settings, token).map_err(incomplete)?;
                clients
                    .bitbucket
                    .edit_comment(&target, pull_request, id, body)
                    .await
            }
        };
        edited.map_err(|e| stop_for(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: &str, error: Option<&str>) -> Run {
        Run {
            id: "e1".into(),
            task_id: "build`42".into(),
            status: status.into(),
            group: None,
            error: error.map(str::to_string),
            finished_at: 10_000,
            duration_ms: Some(1_500),
            ci: Ci {
                provider: "github".into(),
                pull_request: 7,
                repository: None,
                commit_sha: Some("0123456789abcdef0123".into()),
                build_url: Some("https://ci.example.com/b/1".into()),
            },
        }
    }

    #[test]
    fn comments_carry_the_marker_status_and_links() {
        let failed = run("FAILED", Some("\n  AssertionError: <b>x</b>\nat line 2"));
        let text = CommentNotice {
            organization_id: "org1",
            run: &failed,
            analysis: Some(("The [login] <script>", "Fix *it*")),
            run_url: Some("https://orgd.example/executions/build42"),
        }
        .markdown();
        assert!(text.starts_with("<!-- orgd:org1:default -->\n\n### ❌ orgd: FAILED `build'42`"));
        assert!(text.contains("**Commit:** `0123456789ab`"));
        assert!(text.contains("**Duration:** 1.5 s"));
        assert!(text.contains("**Error:** `AssertionError: <b>x</b>`"));
        assert!(!text.contains("at line 2"));
        assert!(text.contains("**Root cause:** The \\[login\\] \\<script\\>"));
        assert!(text.contains("**Suggested fix:** Fix \\*it\\*"));
        assert!(text.ends_with(
            "[View the run in orgd](https://orgd.example/executions/build42) · [Build](https://ci.example.com/b/1)"
        ));
        let mut passed = run("PASSED", None);
        passed.group = Some("nightly".into());
        let text = CommentNotice {
            organization_id: "org1",
            run: &passed,
            analysis: None,
            run_url: None,
        }
        .markdown();
        assert!(text.starts_with("<!-- orgd:org1:nightly -->\n\n### ✅ orgd: PASSED"));
        assert!(!text.contains("Error"));
    }

    #[test]
    fn only_tracker_failures_are_retried() {
        let retried = |e: ProviderError| matches!(stop_for(&e), Stop::Retry { .. });
        assert!(retried(ProviderError::RateLimited {
            retry_after_secs: 5,
            inline: true
        }));
        assert!(retried(ProviderError::Unreachable(
            orgd_providers::client::Unreached::TimedOut
        )));
        assert!(retried(ProviderError::Failed {
            reason: "x".into(),
            transient: true
        }));
        assert!(!retried(ProviderError::InvalidCredentials));
        assert!(!retried(ProviderError::NotFound("repository")));
        assert!(!retried(ProviderError::Unreachable(
            orgd_providers::client::Unreached::Blocked(orgd_providers::ssrf::UrlRefusal::Malformed)
        )));
    }
}

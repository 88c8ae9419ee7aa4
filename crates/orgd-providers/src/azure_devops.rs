//! Azure DevOps Services REST 7.1 (`reference/outbound-apis.md` §4 and §9): checking a project
//! and its work item type, creating work items (a JSON Patch document whose description is
//! HTML), and the one pull-request thread orgd keeps, whose comment it edits.
//!
//! A personal access token goes as Basic `:PAT`, with `X-TFS-FedAuthRedirect: Suppress` so a
//! refused token answers 401 rather than a sign-in page; a sign-in page (203, a redirect, HTML)
//! still means the token was refused.

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, RequestBuilder, Url};
use serde_json::{Value, json};

use crate::client::{Answer, Client, Provider, ProviderError, Repeat};
use crate::markdown;
use crate::tracker::{self, CommentEdit, PrComment, Refusals, Ticket};

const API_VERSION: &str = "7.1";
/// Azure DevOps' advice for a 429 without `Retry-After`: at least 30 s.
const DEFAULT_WAIT_SECS: u64 = 30;

/// The organization and project a call is about, with the token.
#[derive(Debug, Clone, Copy)]
pub struct AzureDevOpsTarget<'a> {
    /// A personal access token.
    pub token: &'a str,
    pub organization: &'a str,
    pub project: &'a str,
}

/// A pull request: its repository (name or id) and number.
#[derive(Debug, Clone, Copy)]
pub struct AzurePullRequest<'a> {
    pub repository: &'a str,
    pub number: u64,
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureProject {
    pub id: String,
    pub name: String,
    /// The work item type's name as the project writes it.
    pub work_item_type: String,
}

pub struct AzureDevOpsClient {
    client: Client,
    api_url: String,
}

impl AzureDevOpsClient {
    /// `api_url` is `AZURE_DEVOPS_API_URL` (`https://dev.azure.com`).
    pub fn new(client: Client, api_url: String) -> Self {
        Self { client, api_url }
    }

    /// The project (which also proves the token), then its work item type.
    pub async fn check(
        &self,
        target: &AzureDevOpsTarget<'_>,
        work_item_type: &str,
    ) -> Result<AzureProject, ProviderError> {
        let path = [target.organization, "_apis", "projects", target.project];
        let (id, name) = self
            .call(
                target,
                Method::GET,
                &path,
                Repeat::Idempotent,
                None,
                |answer| {
                    let body = success(answer, "project")?;
                    match (tracker::text(&body["id"]), tracker::text(&body["name"])) {
                        (Some(id), Some(name)) => Ok((id, name)),
                        _ => Err(tracker::unexpected(answer)),
                    }
                },
            )
            .await?;
        let project = target.project;
        let path = [
            target.organization,
            project,
            "_apis",
            "wit",
            "workitemtypes",
            work_item_type,
        ];
        let work_item_type = self
            .call(
                target,
                Method::GET,
                &path,
                Repeat::Idempotent,
                None,
                |answer| {
                    tracker::text(&success(answer, "work item type")?["name"])
                        .ok_or_else(|| tracker::unexpected(answer))
                },
            )
            .await?;
        Ok(AzureProject {
            id,
            name,
            work_item_type,
        })
    }

    /// Creates a work item of `work_item_type` with the title and the description (Markdown,
    /// sent as HTML; a Bug also gets it as Repro Steps, the field its form shows). Never
    /// repeated once it may have been created.
    pub async fn create_work_item(
        &self,
        target: &AzureDevOpsTarget<'_>,
        work_item_type: &str,
        title: &str,
        description: &str,
    ) -> Result<Ticket, ProviderError> {
        let title = title.split(['\r', '\n']).collect::<Vec<_>>().join(" ");
        let html = markdown::parse(description).to_html();
        let mut patch = vec![
            json!({"op": "add", "path": "/fields/System.Title", "value": title.trim()}),
            json!({"op": "add", "path": "/fields/System.Description", "value": html}),
        ];
        if work_item_type.eq_ignore_ascii_case("Bug") {
            let steps = json!({"op": "add", "path": "/fields/Microsoft.VSTS.TCM.ReproSteps", "value": html});
            patch.push(steps);
        }
        let patch = Value::Array(patch).to_string();
        let kind = format!("${work_item_type}");
        let path = [
            target.organization,
            target.project,
            "_apis",
            "wit",
            "workitems",
            &kind,
        ];
        let web = self.web_root(target)?;
        let body = Body::JsonPatch(patch);
        self.call(
            target,
            Method::POST,
            &path,
            Repeat::IfNotApplied,
            Some(body),
            |answer| {
                let body = success(answer, "work item type")?;
                let id = body["id"]
                    .as_u64()
                    .ok_or_else(|| tracker::unexpected(answer))?;
                let url = tracker::text(&body["_links"]["html"]["href"])
                    .unwrap_or_else(|| format!("{web}/_workitems/edit/{id}"));
                Ok(Ticket {
                    id: id.to_string(),
                    key: id.to_string(),
                    url,
                })
            },
        )
        .await
    }

    /// Opens a thread on the pull request with one comment (Markdown); never repeated once it
    /// may have been posted.
    pub async fn create_thread(
        &self,
        target: &AzureDevOpsTarget<'_>,
        pull_request: &AzurePullRequest<'_>,
        content: &str,
    ) -> Result<PrComment, ProviderError> {
        let body = json!({
            "comments": [{"parentCommentId": 0, "content": content, "commentType": 1}],
            "status": 1,
        });
        let number = pull_request.number.to_string();
        let path = [
            target.organization,
            target.project,
            "_apis",
            "git",
            "repositories",
            pull_request.repository,
            "pullRequests",
            &number,
            "threads",
        ];
        let body = Some(Body::Json(body));
        self.call(
            target,
            Method::POST,
            &path,
            Repeat::IfNotApplied,
            body,
            |answer| {
                let thread = success(answer, "pull request")?;
                match (thread["id"].as_u64(), thread["comments"][0]["id"].as_u64()) {
                    (Some(thread_id), Some(comment_id)) => Ok(PrComment {
                        comment_id,
                        thread_id: Some(thread_id),
                        url: None,
                    }),
                    _ => Err(tracker::unexpected(answer)),
                }
            },
        )
        .await
    }

    /// Edits a comment of a thread. A deleted comment still reads (`isDeleted: true`) and an
    /// edit of it may still answer 200, so it is read first; deleted or not found (the
    /// comment, its thread or its pull request) is `CommentEdit::Gone`.
    pub async fn edit_comment(
        &self,
        target: &AzureDevOpsTarget<'_>,
        pull_request: &AzurePullRequest<'_>,
        thread_id: u64,
        comment_id: u64,
        content: &str,
    ) -> Result<CommentEdit, ProviderError> {
        let number = pull_request.number.to_string();
        let (thread, comment) = (thread_id.to_string(), comment_id.to_string());
        let path = [
            target.organization,
            target.project,
            "_apis",
            "git",
            "repositories",
            pull_request.repository,
            "pullRequests",
            &number,
            "threads",
            &thread,
            "comments",
            &comment,
        ];
        let read = |answer: &Answer| match answer.status.as_u16() {
            404 => Ok(CommentEdit::Gone),
            _ => match success(answer, "comment")?["isDeleted"].as_bool() {
                Some(true) => Ok(CommentEdit::Gone),
                Some(false) => Ok(CommentEdit::Edited),
                None => Err(tracker::unexpected(answer)),
            },
        };
        if self
            .call(target, Method::GET, &path, Repeat::Idempotent, None, read)
            .await?
            == CommentEdit::Gone
        {
            return Ok(CommentEdit::Gone);
        }
        let body = Some(Body::Json(json!({ "content": content })));
        self.call(target, Method::PATCH, &path, Repeat::Idempotent, body, read)
            .await
    }

    /// The project's web pages, for a work item link the answer lacks.
    fn web_root(&self, target: &AzureDevOpsTarget<'_>) -> Result<Url, ProviderError> {
        tracker::endpoint(&self.api_url, &[target.organization, target.project])
    }

    /// Sends `method path?api-version=7.1` with the token and Azure DevOps' headers (and the
    /// body), repeated as `repeat` allows, and reads the answer with `read`.
    async fn call<T>(
        &self,
        target: &AzureDevOpsTarget<'_>,
        method: Method,
        path: &[&str],
        repeat: Repeat,
        body: Option<Body>,
        read: impl Fn(&Answer) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let mut url = tracker::endpoint(&self.api_url, path)?;
        url.query_pairs_mut()
            .append_pair("api-version", API_VERSION);
        let build = || {
            let request = self
                .client
                .request(method.clone(), url.clone())
                .basic_auth("", Some(target.token))
                .header(ACCEPT, HeaderValue::from_static("application/json"))
                .header(
                    "x-tfs-fedauthredirect",
                    HeaderValue::from_static("Suppress"),
                );
            with_body(request, body.as_ref())
        };
        tracker::call(&self.client, Provider::AzureDevOps, repeat, build, read).await
    }
}

/// A request body.
enum Body {
    Json(Value),
    /// A JSON Patch document (work items take nothing else).
    JsonPatch(String),
}

fn with_body(request: RequestBuilder, body: Option<&Body>) -> RequestBuilder {
    match body {
        None => request,
        Some(Body::Json(json)) => request.json(json),
        Some(Body::JsonPatch(patch)) => request
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/json-patch+json"),
            )
            .body(patch.clone()),
    }
}

/// The JSON object of a successful answer, or the failure; `missing` is what a 404 says is
/// missing when the message does not say better.
fn success<'a>(answer: &'a Answer, missing: &'static str) -> Result<&'a Value, ProviderError> {
    if answer.status.as_u16() == 203 || !answer.status.is_success() || answer.is_html() {
        return Err(failure(answer, missing));
    }
    tracker::success(answer)
}

/// Azure DevOps' refusals. A sign-in page — 203, a redirect, or any HTML that is not a server
/// error — means the token was refused. A 404 names what is missing by its message code.
fn failure(answer: &Answer, missing: &'static str) -> ProviderError {
    let status = answer.status;
    if status.as_u16() == 203
        || status.is_redirection()
        || (answer.is_html() && !status.is_server_error())
    {
        return ProviderError::InvalidCredentials;
    }
    let message = answer.body["message"].as_str().unwrap_or_default();
    let missing = match message.split(':').next().unwrap_or_default() {
        "VS402323" => "work item type",
        "TF200016" | "VS800075" => "project",
        "TF401019" => "repository",
        "TF401180" => "pull request",
        _ => missing,
    };
    let refusals = Refusals {
        missing,
        invalid: "a field of the work item was refused",
        default_wait_secs: DEFAULT_WAIT_SECS,
    };
    tracker::failure(answer, &refusals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::tests::{answer, html, with};

    fn ado_error(status: u16, message: &str) -> Answer {
        answer(
            status,
            json!({"$id": "1", "innerException": null, "message": message, "typeKey": "X", "errorCode": 0, "eventId": 3000}),
        )
    }

    #[test]
    fn sign_in_pages_are_refused_credentials() {
        assert_eq!(
            success(&html(203), "project"),
            Err(ProviderError::InvalidCredentials)
        );
        assert_eq!(
            success(&answer(203, json!({})), "project"),
            Err(ProviderError::InvalidCredentials)
        );
        assert_eq!(
            success(&with(html(302), "location", "https://x/_signin"), "project"),
            Err(ProviderError::InvalidCredentials)
        );
        assert_eq!(
            success(&html(200), "project"),
            Err(ProviderError::InvalidCredentials)
        );
        let mut plain = answer(401, Value::Null);
        plain.text = "TF400813: The user '' is not authorized to access this resource.".into();
        assert_eq!(
            success(&plain, "project"),
            Err(ProviderError::InvalidCredentials)
        );
        assert!(matches!(
            success(&html(502), "project"),
            Err(ProviderError::Unreachable(_))
        ));
    }

    #[test]
    fn missing_things_are_named_by_their_code() {
        let fail = |message: &str| failure(&ado_error(404, message), "project");
        assert_eq!(
            fail(
                "VS402323: Work item type Bug does not exist in project Platform Team or you do not have permission to access it."
            ),
            ProviderError::NotFound("work item type")
        );
        assert_eq!(
            fail("TF401019: The Git repository with name or identifier x does not exist."),
            ProviderError::NotFound("repository")
        );
        assert_eq!(fail("anything else"), ProviderError::NotFound("project"));
        assert_eq!(
            failure(
                &ado_error(400, "TF401320: Rule Error for field Title."),
                "x"
            ),
            ProviderError::Refused("a field of the work item was refused")
        );
        assert_eq!(
            failure(
                &ado_error(429, "TF400733: The request has been canceled"),
                "x"
            ),
            ProviderError::RateLimited {
                retry_after_secs: DEFAULT_WAIT_SECS,
                inline: true
            }
        );
    }
}

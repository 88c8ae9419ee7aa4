//! GitLab's REST API v4 (`reference/outbound-apis.md` §3 and §9), on gitlab.com or a
//! self-managed instance whose URL the customer gives (then through the guarded client):
//! checking a project, creating issues, and posting and editing the one note orgd keeps on a
//! merge request. Bodies are Markdown, sent as they are.
//!
//! A project is named by its numeric id or its full path, which travels URL-encoded as one
//! path segment (`group%2Fsub%2Fproject`), never as several.

use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde_json::{Value, json};

use crate::client::{Answer, Client, Provider, ProviderError, Repeat};
use crate::tracker::{self, CommentEdit, PrComment, Refusals, Ticket};

/// GitLab's advice without `Retry-After`: back off from about 5 s.
const DEFAULT_WAIT_SECS: u64 = 5;

/// The project a call is about, with the token and, for a self-managed instance, its URL.
#[derive(Debug, Clone, Copy)]
pub struct GitLabTarget<'a> {
    /// A personal, project or group access token, or an OAuth token (all sent as Bearer).
    pub token: &'a str,
    /// The numeric id (`42`) or the full path (`group/sub/project`).
    pub project: &'a str,
    /// A self-managed instance (`https://gitlab.example.com`) the customer gave: called
    /// through the guarded client. `None`: the default instance.
    pub base_url: Option<&'a str>,
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitLabProject {
    pub id: u64,
    pub path_with_namespace: String,
    pub issues_enabled: bool,
}

pub struct GitLabClient {
    vendor: Client,
    customer: Client,
    instance_url: String,
}

impl GitLabClient {
    /// `vendor` calls `instance_url` (`https://gitlab.com`); `customer` is the guarded
    /// client, for self-managed instances.
    pub fn new(vendor: Client, customer: Client, instance_url: String) -> Self {
        Self {
            vendor,
            customer,
            instance_url,
        }
    }

    /// `GET /projects/:id`: the token can see the project, and whether it has issues.
    pub async fn check_project(
        &self,
        target: &GitLabTarget<'_>,
    ) -> Result<GitLabProject, ProviderError> {
        self.call(
            target,
            Method::GET,
            &[],
            None,
            Repeat::Idempotent,
            |answer| {
                let body = match answer.status.as_u16() {
                    200..=299 => tracker::success(answer)?,
                    _ => return Err(failure(answer, "project", "request refused")),
                };
                match (
                    body["id"].as_u64(),
                    tracker::text(&body["path_with_namespace"]),
                    body["issues_enabled"].as_bool(),
                ) {
                    (Some(id), Some(path_with_namespace), Some(issues_enabled)) => {
                        Ok(GitLabProject {
                            id,
                            path_with_namespace,
                            issues_enabled,
                        })
                    }
                    _ => Err(tracker::unexpected(answer)),
                }
            },
        )
        .await
    }

    /// `POST /projects/:id/issues`; never repeated once it may have been created.
    pub async fn create_issue(
        &self,
        target: &GitLabTarget<'_>,
        title: &str,
        description: &str,
    ) -> Result<Ticket, ProviderError> {
        let body = json!({"title": title, "description": description});
        let repeat = Repeat::IfNotApplied;
        self.call(
            target,
            Method::POST,
            &["issues"],
            Some(body),
            repeat,
            |answer| {
                let body = match answer.status.as_u16() {
                    200..=299 => tracker::success(answer)?,
                    _ => return Err(failure(answer, "project", "the issue was refused")),
                };
                match (
                    tracker::id_number(&body["id"]),
                    body["iid"].as_u64(),
                    tracker::text(&body["web_url"]),
                ) {
                    (Some(id), Some(iid), Some(url)) => Ok(Ticket {
                        id: id.to_string(),
                        key: format!("#{iid}"),
                        url,
                    }),
                    _ => Err(tracker::unexpected(answer)),
                }
            },
        )
        .await
    }

    /// `POST /projects/:id/merge_requests/:iid/notes`; never repeated once it may have been
    /// posted. GitLab gives a note no web URL.
    pub async fn create_note(
        &self,
        target: &GitLabTarget<'_>,
        merge_request: u64,
        body: &str,
    ) -> Result<PrComment, ProviderError> {
        let iid = merge_request.to_string();
        let path = ["merge_requests", iid.as_str(), "notes"];
        let body = json!({ "body": body });
        let repeat = Repeat::IfNotApplied;
        self.call(target, Method::POST, &path, Some(body), repeat, |answer| {
            let body = match answer.status.as_u16() {
                200..=299 => tracker::success(answer)?,
                _ => return Err(failure(answer, "merge request", "the note was refused")),
            };
            match tracker::id_number(&body["id"]) {
                Some(comment_id) => Ok(PrComment {
                    comment_id,
                    thread_id: None,
                    url: None,
                }),
                None => Err(tracker::unexpected(answer)),
            }
        })
        .await
    }

    /// `PUT /projects/:id/merge_requests/:iid/notes/:note_id`; a note someone deleted answers
    /// 404, which is `CommentEdit::Gone`.
    pub async fn edit_note(
        &self,
        target: &GitLabTarget<'_>,
        merge_request: u64,
        note_id: u64,
        body: &str,
    ) -> Result<CommentEdit, ProviderError> {
        let (iid, id) = (merge_request.to_string(), note_id.to_string());
        let path = ["merge_requests", iid.as_str(), "notes", id.as_str()];
        let body = json!({ "body": body });
        self.call(
            target,
            Method::PUT,
            &path,
            Some(body),
            Repeat::Idempotent,
            |answer| match answer.status.as_u16() {
                200..=299 => tracker::success(answer).map(|_| CommentEdit::Edited),
                404 => Ok(CommentEdit::Gone),
                _ => Err(failure(answer, "note", "the note was refused")),
            },
        )
        .await
    }

    /// Sends `method /api/v4/projects/:id/{path…}` with the token (and `body` as JSON),
    /// repeated as `repeat` allows, and reads the answer with `read`.
    async fn call<T>(
        &self,
        target: &GitLabTarget<'_>,
        method: Method,
        path: &[&str],
        body: Option<Value>,
        repeat: Repeat,
        read: impl Fn(&Answer) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let (client, base) = match target.base_url {
            Some(base) => (&self.customer, base),
            None => (&self.vendor, self.instance_url.as_str()),
        };
        // The project is one segment, whatever slashes its path has.
        let segments: Vec<&str> = ["api", "v4", "projects", target.project]
            .into_iter()
            .chain(path.iter().copied())
            .collect();
        let url = tracker::endpoint(base, &segments)?;
        let auth = tracker::bearer(target.token)?;
        let build = || {
            let request = client
                .request(method.clone(), url.clone())
                .header(AUTHORIZATION, auth.clone())
                .header(ACCEPT, HeaderValue::from_static("application/json"));
            match &body {
                Some(body) => request.json(body),
                None => request,
            }
        };
        tracker::call(client, Provider::GitLab, repeat, build, read).await
    }
}

/// GitLab's refusals (`message` may be a string or an object; neither is repeated). A 403 is
/// a token without permission or scope, or a project with issues turned off.
fn failure(answer: &Answer, missing: &'static str, invalid: &'static str) -> ProviderError {
    let refusals = Refusals {
        missing,
        invalid,
        default_wait_secs: DEFAULT_WAIT_SECS,
    };
    tracker::failure(answer, &refusals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::tests::{answer, with};

    #[test]
    fn refusals_in_our_words() {
        let fail = |status, body| failure(&answer(status, body), "project", "invalid");
        assert_eq!(
            fail(401, json!({"message": "401 Unauthorized"})),
            ProviderError::InvalidCredentials
        );
        assert_eq!(
            fail(
                403,
                json!({"error": "insufficient_scope", "error_description": "…", "scope": "api"})
            ),
            ProviderError::InvalidCredentials
        );
        assert_eq!(
            fail(404, json!({"message": "404 Project Not Found"})),
            ProviderError::NotFound("project")
        );
        assert_eq!(
            fail(400, json!({"message": {"title": ["is too long"]}})),
            ProviderError::Refused("invalid")
        );
        let plain = with(answer(429, Value::Null), "retry-after", "1");
        assert_eq!(
            failure(&plain, "project", "x"),
            ProviderError::RateLimited {
                retry_after_secs: 1,
                inline: true
            }
        );
        assert_eq!(
            fail(
                429,
                json!({"message": {"error": "This endpoint has been requested too many times."}})
            ),
            ProviderError::RateLimited {
                retry_after_secs: DEFAULT_WAIT_SECS,
                inline: true
            }
        );
    }
}

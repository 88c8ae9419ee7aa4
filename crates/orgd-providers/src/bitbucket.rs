//! Bitbucket Cloud REST 2.0 (`reference/outbound-apis.md` §5 and §9): checking a repository,
//! creating issues (the tracker is opt-in per repository), and posting and editing the one
//! comment orgd keeps on a pull request. Bodies are Markdown (`content.raw`).
//!
//! Auth is an Atlassian API token with the account's email: Basic `email:token` (app
//! passwords are gone; a Bearer of the same token is refused).

use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderValue};
use serde_json::{Value, json};

use crate::client::{Answer, Client, Provider, ProviderError, Repeat};
use crate::tracker::{self, CommentEdit, PrComment, Refusals, Ticket};

/// Bitbucket's advice for a 429 (which may come without `Retry-After`): back off from 60 s.
const DEFAULT_WAIT_SECS: u64 = 60;

/// The repository a call is about, with the credentials.
#[derive(Debug, Clone, Copy)]
pub struct BitbucketTarget<'a> {
    /// The Atlassian account's email (the Basic user name of an API token).
    pub email: &'a str,
    pub token: &'a str,
    pub workspace: &'a str,
    pub repo_slug: &'a str,
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitbucketRepository {
    /// `workspace/slug` as Bitbucket writes it.
    pub full_name: String,
    /// Whether the repository's issue tracker is on.
    pub has_issues: bool,
}

pub struct BitbucketClient {
    client: Client,
    api_url: String,
}

impl BitbucketClient {
    /// `api_url` is `BITBUCKET_API_URL` (`https://api.bitbucket.org/2.0`).
    pub fn new(client: Client, api_url: String) -> Self {
        Self { client, api_url }
    }

    /// `GET /repositories/{workspace}/{slug}`: the token can see the repository, and whether
    /// its issue tracker is on.
    pub async fn check_repository(
        &self,
        target: &BitbucketTarget<'_>,
    ) -> Result<BitbucketRepository, ProviderError> {
        self.call(
            target,
            Method::GET,
            &[],
            None,
            Repeat::Idempotent,
            |answer| {
                let body = success(answer, "repository", "request refused")?;
                match (
                    tracker::text(&body["full_name"]),
                    body["has_issues"].as_bool(),
                ) {
                    (Some(full_name), Some(has_issues)) => Ok(BitbucketRepository {
                        full_name,
                        has_issues,
                    }),
                    _ => Err(tracker::unexpected(answer)),
                }
            },
        )
        .await
    }

    /// `POST /repositories/{workspace}/{slug}/issues`; never repeated once it may have been
    /// created.
    pub async fn create_issue(
        &self,
        target: &BitbucketTarget<'_>,
        title: &str,
        content: &str,
    ) -> Result<Ticket, ProviderError> {
        let body = json!({"title": title, "content": {"raw": content}});
        let repeat = Repeat::IfNotApplied;
        self.call(
            target,
            Method::POST,
            &["issues"],
            Some(body),
            repeat,
            |answer| {
                if answer.status.as_u16() == 404 && no_tracker(answer) {
                    return Err(ProviderError::Refused(tracker::ISSUES_DISABLED));
                }
                let body = success(answer, "repository", "the issue was refused")?;
                match (
                    tracker::id_number(&body["id"]),
                    tracker::text(&body["links"]["html"]["href"]),
                ) {
                    (Some(id), Some(url)) => Ok(Ticket {
                        id: id.to_string(),
                        key: format!("#{id}"),
                        url,
                    }),
                    _ => Err(tracker::unexpected(answer)),
                }
            },
        )
        .await
    }

    /// `POST …/pullrequests/{id}/comments`; never repeated once it may have been posted.
    pub async fn create_comment(
        &self,
        target: &BitbucketTarget<'_>,
        pull_request: u64,
        content: &str,
    ) -> Result<PrComment, ProviderError> {
        let id = pull_request.to_string();
        let path = ["pullrequests", id.as_str(), "comments"];
        let body = json!({"content": {"raw": content}});
        let repeat = Repeat::IfNotApplied;
        self.call(target, Method::POST, &path, Some(body), repeat, |answer| {
            let body = success(answer, "pull request", "the comment was refused")?;
            match tracker::id_number(&body["id"]) {
                Some(comment_id) => Ok(PrComment {
                    comment_id,
                    thread_id: None,
                    url: tracker::text(&body["links"]["html"]["href"]),
                }),
                None => Err(tracker::unexpected(answer)),
            }
        })
        .await
    }

    /// Edits a pull-request comment. A deleted comment still reads (`deleted: true`) and an
    /// edit of it may still answer 200, so it is read first; deleted or not found is
    /// `CommentEdit::Gone`.
    pub async fn edit_comment(
        &self,
        target: &BitbucketTarget<'_>,
        pull_request: u64,
        comment_id: u64,
        content: &str,
    ) -> Result<CommentEdit, ProviderError> {
        let (pr, id) = (pull_request.to_string(), comment_id.to_string());
        let path = ["pullrequests", pr.as_str(), "comments", id.as_str()];
        let read = |answer: &Answer| match answer.status.as_u16() {
            404 => Ok(CommentEdit::Gone),
            _ => {
                match success(answer, "comment", "the comment was refused")?["deleted"].as_bool() {
                    Some(true) => Ok(CommentEdit::Gone),
                    Some(false) => Ok(CommentEdit::Edited),
                    None => Err(tracker::unexpected(answer)),
                }
            }
        };
        let repeat = Repeat::Idempotent;
        if self
            .call(target, Method::GET, &path, None, repeat, read)
            .await?
            == CommentEdit::Gone
        {
            return Ok(CommentEdit::Gone);
        }
        let body = json!({"content": {"raw": content}});
        self.call(target, Method::PUT, &path, Some(body), repeat, read)
            .await
    }

    /// Sends `method /repositories/{workspace}/{slug}/{path…}` with the credentials (and
    /// `body` as JSON), repeated as `repeat` allows, and reads the answer with `read`.
    async fn call<T>(
        &self,
        target: &BitbucketTarget<'_>,
        method: Method,
        path: &[&str],
        body: Option<Value>,
        repeat: Repeat,
        read: impl Fn(&Answer) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let segments: Vec<&str> = ["repositories", target.workspace, target.repo_slug]
            .into_iter()
            .chain(path.iter().copied())
            .collect();
        let url = tracker::endpoint(&self.api_url, &segments)?;
        let build = || {
            let request = self
                .client
                .request(method.clone(), url.clone())
                .basic_auth(target.email, Some(target.token))
                .header(ACCEPT, HeaderValue::from_static("application/json"));
            match &body {
                Some(body) => request.json(body),
                None => request,
            }
        };
        tracker::call(&self.client, Provider::Bitbucket, repeat, build, read).await
    }
}

/// Bitbucket's 404 for a repository whose issue tracker is off (the message is read to tell
/// it from a missing repository, never shown).
fn no_tracker(answer: &Answer) -> bool {
    answer.body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.to_ascii_lowercase().contains("no issue tracker"))
}

/// The JSON object of a successful answer, or the failure.
fn success<'a>(
    answer: &'a Answer,
    missing: &'static str,
    invalid: &'static str,
) -> Result<&'a Value, ProviderError> {
    if !answer.status.is_success() {
        let refusals = Refusals {
            missing,
            invalid,
            default_wait_secs: DEFAULT_WAIT_SECS,
        };
        return Err(tracker::failure(answer, &refusals));
    }
    tracker::success(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::tests::answer;

    fn error(status: u16, message: &str) -> Answer {
        answer(
            status,
            json!({"type": "error", "error": {"message": message}}),
        )
    }

    #[test]
    fn refusals_in_our_words() {
        let fail = |a: Answer| success(&a, "repository", "invalid").err();
        assert_eq!(
            fail(error(401, "Invalid credentials")),
            Some(ProviderError::InvalidCredentials)
        );
        assert_eq!(
            fail(error(404, "Repository acme/x not found")),
            Some(ProviderError::NotFound("repository"))
        );
        assert_eq!(
            fail(error(400, "Bad request")),
            Some(ProviderError::Refused("invalid"))
        );
        assert_eq!(
            fail(error(429, "Rate limit for this resource has been exceeded")),
            Some(ProviderError::RateLimited {
                retry_after_secs: DEFAULT_WAIT_SECS,
                inline: true
            })
        );
        assert!(no_tracker(&error(404, "Repository has no issue tracker.")));
        assert!(!no_tracker(&error(404, "Repository acme/x not found")));
    }
}

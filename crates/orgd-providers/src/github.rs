//! GitHub's REST API (`reference/outbound-apis.md` §2 and §9), on github.com or a GitHub
//! Enterprise Server whose API root the customer gives (then through the guarded client):
//! checking a repository, creating issues, and posting and editing the one comment orgd keeps
//! on a pull request. Bodies are Markdown, sent as they are.

use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde_json::{Value, json};

use crate::client::{Answer, Client, Provider, ProviderError, Repeat, retry_after};
use crate::tracker::{self, CommentEdit, PrComment, Refusals, Ticket};

/// The pinned REST API version (supported until March 2028).
const API_VERSION: &str = "2022-11-28";
/// GitHub's advice when a rate limit names no time: wait at least a minute.
const DEFAULT_WAIT_SECS: u64 = 60;

/// The repository a call is about, with the token and, for GitHub Enterprise, the API root.
#[derive(Debug, Clone, Copy)]
pub struct GitHubTarget<'a> {
    pub token: &'a str,
    pub owner: &'a str,
    pub repo: &'a str,
    /// A GitHub Enterprise API root (`https://ghe.example.com/api/v3`) the customer gave:
    /// called through the guarded client. `None`: `GITHUB_API_URL`.
    pub base_url: Option<&'a str>,
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubRepository {
    /// `owner/name` as GitHub writes it.
    pub full_name: String,
    /// False: creating an issue answers 410 (pull-request comments still work).
    pub has_issues: bool,
}

pub struct GitHubClient {
    vendor: Client,
    customer: Client,
    api_url: String,
}

impl GitHubClient {
    /// `vendor` calls `api_url` (`GITHUB_API_URL`, default `https://api.github.com`);
    /// `customer` is the guarded client, for Enterprise roots customers give.
    pub fn new(vendor: Client, customer: Client, api_url: String) -> Self {
        Self {
            vendor,
            customer,
            api_url,
        }
    }

    /// `GET /repos/{owner}/{repo}`: the token can see the repository, and whether it has
    /// issues.
    pub async fn check_repository(
        &self,
        target: &GitHubTarget<'_>,
    ) -> Result<GitHubRepository, ProviderError> {
        let path = ["repos", target.owner, target.repo];
        self.call(
            target,
            Method::GET,
            &path,
            None,
            Repeat::Idempotent,
            |answer, now_ms| {
                let body = match answer.status.as_u16() {
                    200..=299 => tracker::success(answer)?,
                    _ => return Err(failure(answer, now_ms, "repository", "request refused")),
                };
                match (
                    tracker::text(&body["full_name"]),
                    body["has_issues"].as_bool(),
                ) {
                    (Some(full_name), Some(has_issues)) => Ok(GitHubRepository {
                        full_name,
                        has_issues,
                    }),
                    _ => Err(tracker::unexpected(answer)),
                }
            },
        )
        .await
    }

    /// `POST /repos/{owner}/{repo}/issues`; never repeated once it may have been created.
    pub async fn create_issue(
        &self,
        target: &GitHubTarget<'_>,
        title: &str,
        body: &str,
    ) -> Result<Ticket, ProviderError> {
        let path = ["repos", target.owner, target.repo, "issues"];
        let body = json!({"title": title, "body": body});
        self.call(
            target,
            Method::POST,
            &path,
            Some(body),
            Repeat::IfNotApplied,
            |answer, now_ms| {
                let body = match answer.status.as_u16() {
                    200..=299 => tracker::success(answer)?,
                    410 => return Err(ProviderError::Refused(tracker::ISSUES_DISABLED)),
                    _ => {
                        return Err(failure(
                            answer,
                            now_ms,
                            "repository",
                            "the issue was refused",
                        ));
                    }
                };
                match (
                    tracker::id_number(&body["id"]),
                    body["number"].as_u64(),
                    tracker::text(&body["html_url"]),
                ) {
                    (Some(id), Some(number), Some(url)) => Ok(Ticket {
                        id: id.to_string(),
                        key: format!("#{number}"),
                        url,
                    }),
                    _ => Err(tracker::unexpected(answer)),
                }
            },
        )
        .await
    }

    /// `POST /repos/{owner}/{repo}/issues/{number}/comments` (a pull request is an issue for
    /// conversation comments); never repeated once it may have been posted.
    pub async fn create_comment(
        &self,
        target: &GitHubTarget<'_>,
        pull_request: u64,
        body: &str,
    ) -> Result<PrComment, ProviderError> {
        let number = pull_request.to_string();
        let path = [
            "repos",
            target.owner,
            target.repo,
            "issues",
            &number,
            "comments",
        ];
        let body = json!({ "body": body });
        self.call(
            target,
            Method::POST,
            &path,
            Some(body),
            Repeat::IfNotApplied,
            |answer, now_ms| {
                let body = match answer.status.as_u16() {
                    200..=299 => tracker::success(answer)?,
                    _ => {
                        let refused = "the comment was refused";
                        return Err(failure(answer, now_ms, "pull request", refused));
                    }
                };
                match tracker::id_number(&body["id"]) {
                    Some(comment_id) => Ok(PrComment {
                        comment_id,
                        thread_id: None,
                        url: tracker::text(&body["html_url"]),
                    }),
                    None => Err(tracker::unexpected(answer)),
                }
            },
        )
        .await
    }

    /// `PATCH /repos/{owner}/{repo}/issues/comments/{id}`; a comment someone deleted answers
    /// 404, which is `CommentEdit::Gone`.
    pub async fn edit_comment(
        &self,
        target: &GitHubTarget<'_>,
        comment_id: u64,
        body: &str,
    ) -> Result<CommentEdit, ProviderError> {
        let id = comment_id.to_string();
        let path = [
            "repos",
            target.owner,
            target.repo,
            "issues",
            "comments",
            &id,
        ];
        let body = json!({ "body": body });
        self.call(
            target,
            Method::PATCH,
            &path,
            Some(body),
            Repeat::Idempotent,
            |answer, now_ms| match answer.status.as_u16() {
                200..=299 => tracker::success(answer).map(|_| CommentEdit::Edited),
                404 => Ok(CommentEdit::Gone),
                _ => Err(failure(
                    answer,
                    now_ms,
                    "comment",
                    "the comment was refused",
                )),
            },
        )
        .await
    }

    /// Sends `method path` with GitHub's headers (and `body` as JSON) to the target's API
    /// root, repeated as `repeat` allows, and reads the answer with `read`, which also gets
    /// the time, for rate-limit resets.
    async fn call<T>(
        &self,
        target: &GitHubTarget<'_>,
        method: Method,
        path: &[&str],
        body: Option<Value>,
        repeat: Repeat,
        read: impl Fn(&Answer, i64) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let (client, base) = self.api(target);
        let url = tracker::endpoint(base, path)?;
        let auth = tracker::bearer(target.token)?;
        let build = || {
            let request = client
                .request(method.clone(), url.clone())
                .header(AUTHORIZATION, auth.clone())
                .header(
                    ACCEPT,
                    HeaderValue::from_static("application/vnd.github+json"),
                )
                .header(
                    "x-github-api-version",
                    HeaderValue::from_static(API_VERSION),
                );
            match &body {
                Some(body) => request.json(body),
                None => request,
            }
        };
        let read = |answer: &Answer| read(answer, client.now_ms());
        tracker::call(client, Provider::GitHub, repeat, build, read).await
    }

    fn api<'a>(&'a self, target: &GitHubTarget<'a>) -> (&'a Client, &'a str) {
        match target.base_url {
            Some(base) => (&self.customer, base),
            None => (&self.vendor, &self.api_url),
        }
    }
}

/// GitHub's refusals: its rate limits first (they arrive as 403 as well as 429), then the
/// ordinary ones.
fn failure(
    answer: &Answer,
    now_ms: i64,
    missing: &'static str,
    invalid: &'static str,
) -> ProviderError {
    if let Some(limited) = rate_limit(answer, now_ms) {
        return limited;
    }
    let refusals = Refusals {
        missing,
        invalid,
        default_wait_secs: DEFAULT_WAIT_SECS,
    };
    tracker::failure(answer, &refusals)
}

/// GitHub's rules for a 403 or 429: `retry-after` when given (secondary limits); else, with
/// `x-ratelimit-remaining: 0`, until `x-ratelimit-reset` (primary limit, epoch seconds); else,
/// for a 429 or a message about a rate limit, at least a minute. Any other 403 is a
/// permission refusal.
fn rate_limit(answer: &Answer, now_ms: i64) -> Option<ProviderError> {
    let status = answer.status.as_u16();
    if !matches!(status, 403 | 429) {
        return None;
    }
    let exhausted = answer.header("x-ratelimit-remaining").map(str::trim) == Some("0");
    let until_reset = || {
        let reset: i64 = answer.header("x-ratelimit-reset")?.trim().parse().ok()?;
        Some(((reset * 1000 - now_ms).max(0) as u64).div_ceil(1000))
    };
    let message = answer.body["message"].as_str().unwrap_or_default();
    let secs = match retry_after(&answer.headers) {
        Some(secs) => secs,
        None if exhausted => until_reset().unwrap_or(DEFAULT_WAIT_SECS),
        None if status == 429 || message.to_ascii_lowercase().contains("rate limit") => {
            DEFAULT_WAIT_SECS
        }
        None => return None,
    };
    Some(ProviderError::RateLimited {
        retry_after_secs: secs.max(1),
        inline: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::tests::{answer, with};

    const NOW_MS: i64 = 1_800_000_000_000;

    fn limited(secs: u64) -> Option<ProviderError> {
        Some(ProviderError::RateLimited {
            retry_after_secs: secs,
            inline: true,
        })
    }

    #[test]
    fn primary_and_secondary_rate_limits() {
        let primary = with(
            with(
                answer(
                    403,
                    json!({"message": "API rate limit exceeded for user ID 1."}),
                ),
                "x-ratelimit-remaining",
                "0",
            ),
            "x-ratelimit-reset",
            &(NOW_MS / 1000 + 90).to_string(),
        );
        assert_eq!(rate_limit(&primary, NOW_MS), limited(90));
        let at_reset = with(answer(429, json!({})), "x-ratelimit-remaining", "0");
        assert_eq!(rate_limit(&at_reset, NOW_MS), limited(60));
        let secondary = with(
            answer(
                429,
                json!({"message": "You have exceeded a secondary rate limit."}),
            ),
            "retry-after",
            "1",
        );
        assert_eq!(rate_limit(&secondary, NOW_MS), limited(1));
        let forbidden_secondary = answer(
            403,
            json!({"message": "You have exceeded a secondary rate limit. Please wait."}),
        );
        assert_eq!(rate_limit(&forbidden_secondary, NOW_MS), limited(60));
        let forbidden = with(
            answer(
                403,
                json!({"message": "Resource not accessible by personal access token"}),
            ),
            "x-ratelimit-remaining",
            "4999",
        );
        assert_eq!(rate_limit(&forbidden, NOW_MS), None);
        assert_eq!(
            failure(&forbidden, NOW_MS, "repository", "x"),
            ProviderError::InvalidCredentials
        );
        let past_reset = with(
            with(answer(403, json!({})), "x-ratelimit-remaining", "0"),
            "x-ratelimit-reset",
            "1",
        );
        assert_eq!(rate_limit(&past_reset, NOW_MS), limited(1));
    }

    #[test]
    fn other_refusals_in_our_words() {
        let fail = |status, body| failure(&answer(status, body), NOW_MS, "repository", "invalid");
        assert_eq!(
            fail(401, json!({"message": "Bad credentials"})),
            ProviderError::InvalidCredentials
        );
        assert_eq!(
            fail(404, json!({"message": "Not Found"})),
            ProviderError::NotFound("repository")
        );
        assert_eq!(
            fail(
                422,
                json!({"message": "Validation Failed", "errors": [{"code": "missing_field"}]})
            ),
            ProviderError::Refused("invalid")
        );
    }
}

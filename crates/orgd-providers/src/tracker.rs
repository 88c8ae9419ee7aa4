//! What the five REST issue trackers share (`reference/outbound-apis.md` §1–5 and §9): the
//! ticket and the pull-request comment they give back, what an edit of a comment someone
//! deleted comes to, and the reading of their answers into the shared `ProviderError`.

use reqwest::header::HeaderValue;
use reqwest::{RequestBuilder, Url};
use serde_json::Value;

use crate::client::{
    Answer, Client, Provider, ProviderError, Repeat, Unreached, retry_after, status_failure,
    with_retries,
};
use crate::ssrf::UrlRefusal;

/// The `ProviderError::Refused` reason of a create refused because the repository's issues
/// are turned off (GitHub's 410, Bitbucket's "no issue tracker").
pub const ISSUES_DISABLED: &str = "issues are disabled";

/// A ticket a tracker created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The tracker's own id of the ticket (Jira `10000`, GitHub's global issue id, …).
    pub id: String,
    /// What people call it: `ENG-24` (Jira), `#42` (GitHub, GitLab, Bitbucket), `12345`
    /// (Azure DevOps).
    pub key: String,
    /// The ticket's page for people.
    pub url: String,
}

/// A comment orgd posted on a pull (merge) request: what an edit needs to find it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrComment {
    pub comment_id: u64,
    /// Azure DevOps only: the thread the comment opened (its comment ids count per thread).
    pub thread_id: Option<u64>,
    /// The comment's page, when the tracker gives one (GitHub, Bitbucket).
    pub url: Option<String>,
}

/// How an edit of an earlier comment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommentEdit {
    Edited,
    /// Someone deleted the comment (or everything around it): post a new one and keep its id.
    Gone,
}

/// `base` with `segments` appended, each one path segment (a `/` inside one is sent as
/// `%2F`, as GitLab's `group%2Fproject` needs). A base that is no URL, or a segment that
/// cannot be one (empty, `.` or `..`, which would address another resource), is refused
/// like any malformed customer URL.
pub(crate) fn endpoint(base: &str, segments: &[&str]) -> Result<Url, ProviderError> {
    let malformed = ProviderError::Unreachable(Unreached::Blocked(UrlRefusal::Malformed));
    if segments.iter().any(|s| matches!(*s, "" | "." | "..")) {
        return Err(malformed);
    }
    let mut url = Url::parse(base).map_err(|_| malformed.clone())?;
    url.path_segments_mut()
        .map_err(|_| malformed)?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// `Authorization: Bearer <token>`, kept out of logs; a token that cannot be a header is a
/// refused credential (it would be refused anyway).
pub(crate) fn bearer(token: &str) -> Result<HeaderValue, ProviderError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| ProviderError::InvalidCredentials)?;
    value.set_sensitive(true);
    Ok(value)
}

/// Sends the request `build` makes, reads its answer with `classify`, and repeats it as the
/// shared retry rule allows for `repeat`.
pub(crate) async fn call<T>(
    client: &Client,
    provider: Provider,
    repeat: Repeat,
    build: impl Fn() -> RequestBuilder,
    classify: impl Fn(&Answer) -> Result<T, ProviderError>,
) -> Result<T, ProviderError> {
    with_retries(repeat, || async {
        client
            .send(provider, build(), &classify)
            .await
            .map_err(incomplete_is_failure)
    })
    .await
}

/// An answer whose body broke off is one the tracker gave: an error answer, not an
/// unreachable tracker (and a write it accepted may have been carried out).
fn incomplete_is_failure(error: ProviderError) -> ProviderError {
    match error {
        ProviderError::Unreachable(Unreached::Truncated { .. }) => ProviderError::Failed {
            reason: "incomplete answer".into(),
            transient: true,
        },
        other => other,
    }
}

/// An answer that is not the API's: an HTML page, a cut or empty document, a success
/// without the fields it must have. After a success the request may have been carried out.
pub(crate) fn unexpected(answer: &Answer) -> ProviderError {
    ProviderError::Failed {
        reason: "unexpected answer".into(),
        transient: answer.status.is_success(),
    }
}

/// The JSON object of a successful answer.
pub(crate) fn success(answer: &Answer) -> Result<&Value, ProviderError> {
    if answer.status.is_success() && !answer.is_html() && answer.body.is_object() {
        Ok(&answer.body)
    } else {
        Err(unexpected(answer))
    }
}

/// How a tracker's ordinary error answers read for one call.
pub(crate) struct Refusals {
    /// What a 404 says is missing (`"project"`, `"repository"`, …).
    pub missing: &'static str,
    /// Our reason for a 400/409/422 (never the tracker's text).
    pub invalid: &'static str,
    /// Seconds to wait after a 429 without `Retry-After`.
    pub default_wait_secs: u64,
}

/// The failure of an error answer no tracker-specific rule claimed: 401 and 403 refuse the
/// credentials, 429 rate limits, 5xx are the tracker's failures; an HTML page (a proxy's or
/// sign-in page) is not the API's answer; 404/410 say something is missing, 400/409/422 that
/// the request was refused, 413 that it was too large.
pub(crate) fn failure(answer: &Answer, refusals: &Refusals) -> ProviderError {
    let status = answer.status.as_u16();
    match status {
        401 => return ProviderError::InvalidCredentials,
        429 => return rate_limited(answer, refusals.default_wait_secs),
        500..=599 => return status_failure(answer.status),
        _ if answer.is_html() => return unexpected(answer),
        _ => {}
    }
    match status {
        403 => ProviderError::InvalidCredentials,
        404 | 410 => ProviderError::NotFound(refusals.missing),
        400 | 409 | 422 => ProviderError::Refused(refusals.invalid),
        413 => ProviderError::TooLarge,
        _ => unexpected(answer),
    }
}

/// Rate limited for `Retry-After` seconds, or `default_secs` without one.
pub(crate) fn rate_limited(answer: &Answer, default_secs: u64) -> ProviderError {
    ProviderError::RateLimited {
        retry_after_secs: retry_after(&answer.headers).unwrap_or(default_secs).max(1),
        inline: true,
    }
}

/// An id the tracker sends as a number or a string of digits.
pub(crate) fn id_number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A non-empty string field.
pub(crate) fn text(value: &Value) -> Option<String> {
    value.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use reqwest::StatusCode;
    use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
    use serde_json::json;

    use super::*;
    use crate::client::{Observer, Outcome};

    struct Unobserved;

    impl Observer for Unobserved {
        fn record(&self, _: Provider, _: Outcome) {}
    }

    /// A client for tests that send nothing.
    pub(crate) fn client() -> Client {
        Client::new(Duration::from_secs(1), Arc::new(Unobserved), Arc::new(|| 0)).unwrap()
    }

    /// An answer as the client would hand it over.
    pub(crate) fn answer(status: u16, body: Value) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            text: body.to_string(),
            body,
        }
    }

    /// An HTML page with `status`.
    pub(crate) fn html(status: u16) -> Answer {
        let mut answer = answer(status, Value::Null);
        answer.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        answer.text = "<html><body>Sign in</body></html>".into();
        answer
    }

    /// `answer` with a header added.
    pub(crate) fn with(mut answer: Answer, name: &'static str, value: &str) -> Answer {
        answer
            .headers
            .insert(name, HeaderValue::from_str(value).unwrap());
        answer
    }

    const REFUSALS: Refusals = Refusals {
        missing: "project",
        invalid: "invalid issue",
        default_wait_secs: 7,
    };

    #[test]
    fn ordinary_error_answers() {
        let fail = |a: Answer| failure(&a, &REFUSALS);
        let body = json!({"message": "whatever the tracker says"});
        assert_eq!(
            fail(answer(401, body.clone())),
            ProviderError::InvalidCredentials
        );
        assert_eq!(fail(html(401)), ProviderError::InvalidCredentials);
        assert_eq!(
            fail(answer(403, body.clone())),
            ProviderError::InvalidCredentials
        );
        assert_eq!(
            fail(answer(404, body.clone())),
            ProviderError::NotFound("project")
        );
        assert_eq!(
            fail(answer(422, body.clone())),
            ProviderError::Refused("invalid issue")
        );
        assert_eq!(fail(answer(413, body.clone())), ProviderError::TooLarge);
        assert_eq!(
            fail(answer(429, body.clone())),
            ProviderError::RateLimited {
                retry_after_secs: 7,
                inline: true
            }
        );
        assert_eq!(
            fail(with(answer(429, body.clone()), "retry-after", "2")),
            ProviderError::RateLimited {
                retry_after_secs: 2,
                inline: true
            }
        );
        assert_eq!(
            fail(answer(503, body.clone())),
            ProviderError::Unreachable(Unreached::Gateway)
        );
        assert!(matches!(
            fail(answer(500, body)),
            ProviderError::Failed {
                transient: true,
                ..
            }
        ));
        for status in [403, 404, 400] {
            assert_eq!(
                fail(html(status)),
                ProviderError::Failed {
                    reason: "unexpected answer".into(),
                    transient: false
                },
                "{status}"
            );
        }
        assert!(matches!(fail(html(302)), ProviderError::Failed { .. }));
    }

    #[test]
    fn successes_must_be_json_objects() {
        assert!(success(&answer(201, json!({"id": 1}))).is_ok());
        for broken in [answer(201, Value::Null), answer(200, json!([1])), html(200)] {
            assert_eq!(
                success(&broken),
                Err(ProviderError::Failed {
                    reason: "unexpected answer".into(),
                    transient: true
                })
            );
        }
    }

    #[test]
    fn endpoints_keep_each_segment_whole() {
        let url = endpoint(
            "https://gitlab.example.com/api/v4/",
            &["projects", "grp/sub/p"],
        );
        assert_eq!(
            url.unwrap().as_str(),
            "https://gitlab.example.com/api/v4/projects/grp%2Fsub%2Fp"
        );
        let url = endpoint("https://dev.azure.com", &["acme", "Platform Team", "$Bug"]);
        assert_eq!(
            url.unwrap().as_str(),
            "https://dev.azure.com/acme/Platform%20Team/$Bug"
        );
        let url = endpoint("https://h.test/x", &["a?b#c", "%2F", "..."]).unwrap();
        assert_eq!(url.as_str(), "https://h.test/x/a%3Fb%23c/%252F/...");
        let malformed = Err(ProviderError::Unreachable(Unreached::Blocked(
            UrlRefusal::Malformed,
        )));
        assert_eq!(endpoint("not a url", &["x"]), malformed);
        for segment in ["", ".", ".."] {
            assert_eq!(endpoint("https://h.test", &["repos", segment]), malformed);
        }
    }

    #[test]
    fn ids_and_tokens() {
        assert_eq!(id_number(&json!(42)), Some(42));
        assert_eq!(id_number(&json!("10000")), Some(10000));
        assert_eq!(id_number(&json!("ENG-1")), None);
        assert_eq!(text(&json!("")), None);
        assert_eq!(bearer("bad\ntoken"), Err(ProviderError::InvalidCredentials));
        assert!(bearer("ghp_x").unwrap().is_sensitive());
    }

    #[test]
    fn cut_answers_are_the_trackers_failures() {
        let cut = ProviderError::Unreachable(Unreached::Truncated {
            status: 201,
            timed_out: false,
        });
        let failed = incomplete_is_failure(cut);
        assert!(failed.maybe_applied());
        assert!(matches!(failed, ProviderError::Failed { .. }));
        let reset = ProviderError::Unreachable(Unreached::Reset);
        assert_eq!(incomplete_is_failure(reset.clone()), reset);
    }
}

//! Linear's GraphQL API (`reference/tracker-apis.md` §1): checking a key and team before
//! saving, and creating issues with a client-generated id so a retry can never file the
//! same issue twice.

use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::header::{self, HeaderMap, HeaderValue};
use serde_json::{Value, json};

use crate::client::{
    Answer, Client, Provider, ProviderError, Repeat, retry_after, status_failure, with_retries,
};
use crate::graphql::Graphql;

/// A team as Linear knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearTeam {
    pub id: String,
    pub key: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearIssue {
    /// Human identifier, e.g. `ENG-123`.
    pub identifier: String,
    pub url: String,
}

#[derive(Debug, Clone)]
pub struct NewIssue {
    /// UUID v4 chosen by us: Linear refuses a second issue with the same id.
    pub id: String,
    pub team_id: String,
    pub title: String,
    pub description: Option<String>,
}

#[async_trait::async_trait]
pub trait LinearApi: Send + Sync + 'static {
    /// Checks that `key` authenticates and finds the team by UUID or by key (`ENG`).
    async fn find_team(&self, key: &str, team: &str) -> Result<LinearTeam, ProviderError>;
    /// Creates the issue, repeating only what cannot file it twice.
    async fn create_issue(&self, key: &str, issue: &NewIssue)
    -> Result<LinearIssue, ProviderError>;
}

const VALIDATE_BY_ID: &str =
    "query Validate($teamId: String!) { viewer { id } team(id: $teamId) { id key name } }";
const VALIDATE_BY_KEY: &str = "query ValidateByKey($key: String!) { viewer { id } teams(filter: { key: { eqIgnoreCase: $key } }, first: 1) { nodes { id key name } } }";
const ISSUE_CREATE: &str = "mutation IssueCreate($input: IssueCreateInput!) { issueCreate(input: $input) { success issue { id identifier url title } } }";
const ISSUE_BY_ID: &str =
    "query IssueById($id: String!) { issue(id: $id) { id identifier url title } }";

pub struct LinearClient {
    endpoint: Graphql,
}

impl LinearClient {
    pub fn new(client: Client, url: String) -> Self {
        Self {
            endpoint: Graphql::new(client, Provider::Linear, url),
        }
    }

    /// One attempt of one operation.
    async fn call(
        &self,
        key: &str,
        query: &'static str,
        variables: Value,
    ) -> Result<Value, ProviderError> {
        self.endpoint
            .post(auth_headers(key)?, query, variables, |answer| {
                classify(answer, self.endpoint.client().now_ms())
            })
            .await
    }

    async fn issue_create_once(
        &self,
        key: &str,
        issue: &NewIssue,
    ) -> Result<LinearIssue, ProviderError> {
        let mut input = json!({"id": issue.id, "teamId": issue.team_id, "title": issue.title});
        if let Some(description) = &issue.description {
            input["description"] = json!(description);
        }
        let data = self
            .call(key, ISSUE_CREATE, json!({"input": input}))
            .await?;
        let payload = &data["issueCreate"];
        if payload["success"] != json!(true) {
            return Err(ProviderError::Failed {
                reason: "the issue was not created".into(),
                transient: false,
            });
        }
        parse_issue(&payload["issue"])
    }

    /// The issue with our client-generated id, if an earlier attempt created it.
    async fn issue_by_id(&self, key: &str, id: &str) -> Option<LinearIssue> {
        let data = self.call(key, ISSUE_BY_ID, json!({"id": id})).await.ok()?;
        parse_issue(&data["issue"]).ok()
    }
}

#[async_trait::async_trait]
impl LinearApi for LinearClient {
    async fn find_team(&self, key: &str, team: &str) -> Result<LinearTeam, ProviderError> {
        let by_id = is_uuid(team);
        let (query, variables) = if by_id {
            (VALIDATE_BY_ID, json!({"teamId": team}))
        } else {
            (VALIDATE_BY_KEY, json!({"key": team}))
        };
        let data = with_retries(Repeat::IfNotApplied, || {
            self.call(key, query, variables.clone())
        })
        .await?;
        if !data["viewer"]["id"].is_string() {
            return Err(ProviderError::InvalidCredentials);
        }
        let found = if by_id {
            &data["team"]
        } else {
            &data["teams"]["nodes"][0]
        };
        match (
            found["id"].as_str(),
            found["key"].as_str(),
            found["name"].as_str(),
        ) {
            (Some(id), Some(key), Some(name)) => Ok(LinearTeam {
                id: id.to_string(),
                key: key.to_string(),
                name: name.to_string(),
            }),
            _ => Err(ProviderError::NotFound("team")),
        }
    }

    async fn create_issue(
        &self,
        key: &str,
        issue: &NewIssue,
    ) -> Result<LinearIssue, ProviderError> {
        // Once an attempt may have created the issue, every later failure looks for it: a
        // repeat with the same id is refused by Linear rather than filed twice.
        let maybe_created = AtomicBool::new(false);
        with_retries(Repeat::Idempotent, || async {
            let err = match self.issue_create_once(key, issue).await {
                Ok(created) => return Ok(created),
                Err(e) => e,
            };
            if err.maybe_applied() {
                maybe_created.store(true, Ordering::Relaxed);
            }
            if maybe_created.load(Ordering::Relaxed)
                && let Some(found) = self.issue_by_id(key, &issue.id).await
            {
                return Ok(found);
            }
            Err(err)
        })
        .await
    }
}

/// Personal API keys go raw in `Authorization`; OAuth tokens (`lin_oauth_…`) as `Bearer`.
fn auth_headers(key: &str) -> Result<HeaderMap, ProviderError> {
    let value = if key.starts_with("lin_oauth_") {
        format!("Bearer {key}")
    } else {
        key.to_string()
    };
    let mut value = HeaderValue::from_str(&value).map_err(|_| ProviderError::InvalidCredentials)?;
    value.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    Ok(headers)
}

fn parse_issue(issue: &Value) -> Result<LinearIssue, ProviderError> {
    match (issue["identifier"].as_str(), issue["url"].as_str()) {
        (Some(identifier), Some(url)) => Ok(LinearIssue {
            identifier: identifier.to_string(),
            url: url.to_string(),
        }),
        _ => Err(ProviderError::Failed {
            reason: "unexpected response".into(),
            transient: false,
        }),
    }
}

/// 8-4-4-4-12 hex digits.
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A random UUID v4 (the issue id we choose).
pub fn new_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Linear's answers, by the body's `errors[].extensions` first and the HTTP status second
/// (rate limits arrive as HTTP 400 `RATELIMITED`; bad keys as 400 or 401).
fn classify(answer: &Answer, now_ms: i64) -> Result<Value, ProviderError> {
    let errors = answer.body["errors"].as_array().filter(|e| !e.is_empty());
    if let Some(errors) = errors {
        return Err(classify_errors(errors, answer, now_ms));
    }
    match answer.status.as_u16() {
        200..=299 => match &answer.body["data"] {
            data @ Value::Object(_) => Ok(data.clone()),
            _ => Err(ProviderError::Failed {
                reason: "unexpected response".into(),
                transient: false,
            }),
        },
        429 => Err(rate_limited(answer, now_ms)),
        // Linear's SDK reads any other 4xx without a GraphQL error as an authentication error.
        400..=499 => Err(ProviderError::InvalidCredentials),
        _ => Err(status_failure(answer.status)),
    }
}

fn classify_errors(errors: &[Value], answer: &Answer, now_ms: i64) -> ProviderError {
    let code = |e: &Value| {
        e["extensions"]["code"]
            .as_str()
            .unwrap_or("")
            .to_ascii_uppercase()
    };
    let kind = |e: &Value| {
        e["extensions"]["type"]
            .as_str()
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let any = |pred: &dyn Fn(&Value) -> bool| errors.iter().any(pred);
    if any(&|e| code(e) == "RATELIMITED" || kind(e) == "ratelimited") {
        return rate_limited(answer, now_ms);
    }
    if any(&|e| {
        matches!(code(e).as_str(), "AUTHENTICATION_ERROR" | "FORBIDDEN")
            || matches!(kind(e).as_str(), "authentication error" | "forbidden")
    }) {
        return ProviderError::InvalidCredentials;
    }
    let not_found = errors.iter().find(|e| {
        let message = e["message"].as_str().unwrap_or("").to_ascii_lowercase();
        (code(e) == "INPUT_ERROR" || kind(e) == "invalid input") && message.contains("not found")
    });
    if let Some(e) = not_found {
        return ProviderError::NotFound(match e["path"][0].as_str() {
            Some("team" | "teams") => "team",
            Some("issue") => "issue",
            _ => "entity",
        });
    }
    let transient = answer.status.is_server_error() || any(&|e| kind(e) == "internal error");
    // Only Linear's documented error types are repeated, never its free text.
    let kind = kind(&errors[0]);
    let reason = KNOWN_ERROR_TYPES
        .iter()
        .find(|t| **t == kind)
        .unwrap_or(&"request refused");
    ProviderError::Failed {
        reason: (*reason).to_string(),
        transient,
    }
}

/// The `extensions.type` values of Linear's SDK error map.
const KNOWN_ERROR_TYPES: [&str; 12] = [
    "feature not accessible",
    "invalid input",
    "network error",
    "bootstrap error",
    "unknown",
    "internal error",
    "other",
    "user error",
    "graphql error",
    "lock timeout",
    "usage limit exceeded",
    "forbidden",
];

/// Waits as Linear says: `Retry-After` (s), else `X-RateLimit-Requests-Reset` (epoch ms).
fn rate_limited(answer: &Answer, now_ms: i64) -> ProviderError {
    let from_reset = || {
        let reset: i64 = answer
            .headers
            .get("x-ratelimit-requests-reset")?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Some(((reset - now_ms).max(0) as u64).div_ceil(1000))
    };
    let secs = retry_after(&answer.headers)
        .or_else(from_reset)
        .unwrap_or(60)
        .max(1);
    ProviderError::RateLimited {
        retry_after_secs: secs,
        inline: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn answer(status: u16, body: Value) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body,
            text: String::new(),
        }
    }

    fn auth_error() -> Value {
        json!({"errors":[{"message":"Authentication required, not authenticated",
            "extensions":{"type":"authentication error","code":"AUTHENTICATION_ERROR","statusCode":401,"userError":true}}]})
    }

    #[test]
    fn classifies_every_documented_form() {
        let now = 1_800_000_000_000;
        assert_eq!(
            classify(&answer(401, auth_error()), now),
            Err(ProviderError::InvalidCredentials)
        );
        assert_eq!(
            classify(&answer(400, auth_error()), now),
            Err(ProviderError::InvalidCredentials)
        );
        let mut limited = answer(
            400,
            json!({"errors":[{"message":"Rate limit exceeded","extensions":{"code":"RATELIMITED"}}]}),
        );
        limited
            .headers
            .insert("x-ratelimit-requests-reset", HeaderValue::from(now + 2_500));
        assert_eq!(
            classify(&limited, now),
            Err(ProviderError::RateLimited {
                retry_after_secs: 3,
                inline: true
            })
        );
        limited.headers.insert("retry-after", HeaderValue::from(7));
        assert_eq!(
            classify(&limited, now),
            Err(ProviderError::RateLimited {
                retry_after_secs: 7,
                inline: true
            })
        );
        let unknown_team = json!({"errors":[{"message":"Entity not found: Team","path":["team"],
            "extensions":{"type":"invalid input","code":"INPUT_ERROR","statusCode":400}}],"data":null});
        assert_eq!(
            classify(&answer(200, unknown_team.clone()), now),
            Err(ProviderError::NotFound("team"))
        );
        assert_eq!(
            classify(&answer(400, unknown_team), now),
            Err(ProviderError::NotFound("team"))
        );
        assert!(matches!(
            classify(&answer(500, Value::Null), now),
            Err(ProviderError::Failed {
                transient: true,
                ..
            })
        ));
        assert!(matches!(
            classify(&answer(503, Value::Null), now),
            Err(ProviderError::Unreachable(_))
        ));
        assert_eq!(
            classify(&answer(403, Value::Null), now),
            Err(ProviderError::InvalidCredentials)
        );
        assert!(matches!(
            classify(&answer(200, json!({"data": null})), now),
            Err(ProviderError::Failed { .. })
        ));
        assert_eq!(
            classify(&answer(200, json!({"data": {"viewer": {"id": "u"}}})), now),
            Ok(json!({"viewer": {"id": "u"}}))
        );
    }

    #[test]
    fn uuids() {
        let id = new_uuid();
        assert!(is_uuid(&id), "{id}");
        assert_eq!(&id[14..15], "4");
        assert!(!is_uuid("ENG"));
        assert!(!is_uuid("9cfb482a-81e3-4154-b5b9-2c805e70a02"));
    }

    #[test]
    fn oauth_tokens_use_bearer() {
        let raw = auth_headers("lin_api_abc").unwrap();
        assert_eq!(raw[header::AUTHORIZATION], "lin_api_abc");
        let oauth = auth_headers("lin_oauth_abc").unwrap();
        assert_eq!(oauth[header::AUTHORIZATION], "Bearer lin_oauth_abc");
        assert!(auth_headers("bad\nkey").is_err());
    }
}

//! Jira Cloud REST v3 (`reference/outbound-apis.md` §1): checking the credentials, the project
//! and the issue type before saving, and creating issues whose description is an ADF tree.
//!
//! A classic API token calls the site (`https://{domain}`, or `JIRA_API_URL`); a scoped token
//! (the only kind a service account has) is refused there and must call the Atlassian gateway
//! (`{JIRA_GATEWAY_URL}/ex/jira/{cloudId}`), with the cloud id the site's `/_edge/tenant_info`
//! gives. The check tries the site first, and reports which kind worked so it can be stored.

use reqwest::header::{ACCEPT, HeaderValue};
use reqwest::{Method, RequestBuilder, Url};
use serde_json::{Value, json};

use crate::client::{Answer, Client, Provider, ProviderError, Repeat, Unreached};
use crate::markdown;
use crate::ssrf::UrlRefusal;
use crate::tracker::{self, Refusals, Ticket};

/// Jira asks for no particular wait before its first retry without `Retry-After`: about 2 s.
const DEFAULT_WAIT_SECS: u64 = 2;

/// Which Jira API a token may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JiraAuth {
    /// A classic API token: the site itself.
    Classic,
    /// A scoped API token: the gateway, for the site with this cloud id.
    Scoped { cloud_id: String },
}

impl JiraAuth {
    /// `classic` or `scoped`, as the integration shows it (`tokenKind`).
    pub fn token_kind(&self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Scoped { .. } => "scoped",
        }
    }
}

/// Who calls which site.
#[derive(Debug, Clone, Copy)]
pub struct JiraCredentials<'a> {
    /// The site's host, `acme.atlassian.net`.
    pub domain: &'a str,
    pub email: &'a str,
    pub token: &'a str,
}

/// What the check found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JiraCheck {
    pub auth: JiraAuth,
    pub project_id: String,
    pub project_key: String,
    /// The issue type's name as Jira writes it (`Bug` for `bug`).
    pub issue_type: String,
}

/// An issue to create.
#[derive(Debug, Clone, Copy)]
pub struct NewJiraIssue<'a> {
    pub project_key: &'a str,
    pub issue_type: &'a str,
    /// One line: Jira refuses line breaks in a summary, so they become spaces.
    pub title: &'a str,
    /// Markdown, sent as an ADF document; left out when blank.
    pub description: &'a str,
}

pub struct JiraClient {
    client: Client,
    /// Replaces `https://{domain}` (tests point it at a fake).
    site_url: Option<String>,
    gateway_url: String,
}

impl JiraClient {
    /// `site_url` is `JIRA_API_URL` when set; `gateway_url` is `JIRA_GATEWAY_URL`
    /// (`https://api.atlassian.com`).
    pub fn new(client: Client, site_url: Option<String>, gateway_url: String) -> Self {
        Self {
            client,
            site_url,
            gateway_url,
        }
    }

    /// Checks the token (on the site, then through the gateway), then that the project exists
    /// and offers the issue type.
    pub async fn check(
        &self,
        credentials: &JiraCredentials<'_>,
        project_key: &str,
        issue_type: &str,
    ) -> Result<JiraCheck, ProviderError> {
        let site = self.site(credentials.domain)?;
        let auth = match self.myself(&site, credentials).await {
            Ok(()) => JiraAuth::Classic,
            Err(ProviderError::InvalidCredentials) => {
                let cloud_id = self.cloud_id(&site).await?;
                self.myself(&self.gateway(&cloud_id)?, credentials).await?;
                JiraAuth::Scoped { cloud_id }
            }
            Err(e) => return Err(e),
        };
        let api = self.api(credentials.domain, &auth)?;
        let project = self
            .get(&api, &["project", project_key], credentials, read_project)
            .await?;
        let types = match project.issue_types {
            Some(types) => types,
            None => {
                let path = ["issue", "createmeta", project.key.as_str(), "issuetypes"];
                self.get(&api, &path, credentials, read_issue_types).await?
            }
        };
        let issue_type = types
            .into_iter()
            .find(|name| name.eq_ignore_ascii_case(issue_type))
            .ok_or(ProviderError::NotFound("issue type"))?;
        Ok(JiraCheck {
            auth,
            project_id: project.id,
            project_key: project.key,
            issue_type,
        })
    }

    /// Creates the issue; never repeated once it may have been created (Jira has no
    /// idempotency key).
    pub async fn create_issue(
        &self,
        credentials: &JiraCredentials<'_>,
        auth: &JiraAuth,
        issue: &NewJiraIssue<'_>,
    ) -> Result<Ticket, ProviderError> {
        let url = rest(&self.api(credentials.domain, auth)?, &["issue"])?;
        let summary = issue
            .title
            .split(['\r', '\n'])
            .collect::<Vec<_>>()
            .join(" ");
        let mut fields = json!({
            "project": {"key": issue.project_key},
            "issuetype": {"name": issue.issue_type},
            "summary": summary.trim(),
        });
        if !issue.description.trim().is_empty() {
            fields["description"] = markdown::parse(issue.description).to_adf();
        }
        let body = json!({ "fields": fields });
        let site = self.site(credentials.domain)?;
        tracker::call(
            &self.client,
            Provider::Jira,
            Repeat::IfNotApplied,
            || {
                self.request(Method::POST, url.clone(), credentials)
                    .json(&body)
            },
            |answer| read_created(answer, &site),
        )
        .await
    }

    async fn get<T>(
        &self,
        api: &str,
        path: &[&str],
        credentials: &JiraCredentials<'_>,
        read: impl Fn(&Answer) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let url = rest(api, path)?;
        tracker::call(
            &self.client,
            Provider::Jira,
            Repeat::Idempotent,
            || self.request(Method::GET, url.clone(), credentials),
            read,
        )
        .await
    }

    /// `GET /rest/api/3/myself` under `api`: the cheapest call that proves the token.
    async fn myself(
        &self,
        api: &str,
        credentials: &JiraCredentials<'_>,
    ) -> Result<(), ProviderError> {
        self.get(api, &["myself"], credentials, read_myself).await
    }

    /// The site's cloud id (`/_edge/tenant_info` needs no credentials).
    async fn cloud_id(&self, site: &str) -> Result<String, ProviderError> {
        let url = tracker::endpoint(site, &["_edge", "tenant_info"])?;
        tracker::call(
            &self.client,
            Provider::Jira,
            Repeat::Idempotent,
            || {
                self.client
                    .request(Method::GET, url.clone())
                    .header(ACCEPT, HeaderValue::from_static("application/json"))
            },
            read_cloud_id,
        )
        .await
    }

    fn request(
        &self,
        method: Method,
        url: Url,
        credentials: &JiraCredentials<'_>,
    ) -> RequestBuilder {
        self.client
            .request(method, url)
            .basic_auth(credentials.email, Some(credentials.token))
            .header(ACCEPT, HeaderValue::from_static("application/json"))
    }

    /// `https://{domain}`, or `JIRA_API_URL` when set. The domain must be a host name, so
    /// that nothing but a host can be put in the URL.
    fn site(&self, domain: &str) -> Result<String, ProviderError> {
        if let Some(site) = &self.site_url {
            return Ok(site.trim_end_matches('/').to_string());
        }
        let host_name = !domain.is_empty()
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if host_name {
            Ok(format!("https://{domain}"))
        } else {
            Err(ProviderError::Unreachable(Unreached::Blocked(
                UrlRefusal::Malformed,
            )))
        }
    }

    fn gateway(&self, cloud_id: &str) -> Result<String, ProviderError> {
        let url = tracker::endpoint(&self.gateway_url, &["ex", "jira", cloud_id])?;
        Ok(url.as_str().trim_end_matches('/').to_string())
    }

    /// Where the REST API is for this kind of token.
    fn api(&self, domain: &str, auth: &JiraAuth) -> Result<String, ProviderError> {
        match auth {
            JiraAuth::Classic => self.site(domain),
            JiraAuth::Scoped { cloud_id } => self.gateway(cloud_id),
        }
    }
}

/// `{api}/rest/api/3/{path…}`.
fn rest(api: &str, path: &[&str]) -> Result<Url, ProviderError> {
    let segments: Vec<&str> = ["rest", "api", "3"].iter().chain(path).copied().collect();
    tracker::endpoint(api, &segments)
}

/// Jira's refusals that are not about one call's subject.
fn failure(answer: &Answer, missing: &'static str, invalid: &'static str) -> ProviderError {
    // Some 503s carry Retry-After: the same as a rate limit.
    if answer.status.as_u16() == 503 && answer.header("retry-after").is_some() {
        return tracker::rate_limited(answer, DEFAULT_WAIT_SECS);
    }
    let refusals = Refusals {
        missing,
        invalid,
        default_wait_secs: DEFAULT_WAIT_SECS,
    };
    tracker::failure(answer, &refusals)
}

fn read_myself(answer: &Answer) -> Result<(), ProviderError> {
    if !answer.status.is_success() {
        return Err(failure(answer, "user", "request refused"));
    }
    match tracker::success(answer)?["accountId"].as_str() {
        Some(_) => Ok(()),
        None => Err(tracker::unexpected(answer)),
    }
}

fn read_cloud_id(answer: &Answer) -> Result<String, ProviderError> {
    match answer.status.as_u16() {
        200..=299 => tracker::text(&tracker::success(answer)?["cloudId"])
            .ok_or_else(|| tracker::unexpected(answer)),
        // The site refused the token and names no gateway site: the token is no good.
        404 => Err(ProviderError::InvalidCredentials),
        _ => Err(failure(answer, "site", "request refused")),
    }
}

/// A project: its id, key, and the issue types it lists (when it lists them).
struct Project {
    id: String,
    key: String,
    issue_types: Option<Vec<String>>,
}

fn read_project(answer: &Answer) -> Result<Project, ProviderError> {
    if !answer.status.is_success() {
        return Err(failure(answer, "project", "request refused"));
    }
    let body = tracker::success(answer)?;
    match (tracker::text(&body["id"]), tracker::text(&body["key"])) {
        (Some(id), Some(key)) => Ok(Project {
            id,
            key,
            issue_types: type_names(&body["issueTypes"]),
        }),
        _ => Err(tracker::unexpected(answer)),
    }
}

fn read_issue_types(answer: &Answer) -> Result<Vec<String>, ProviderError> {
    if !answer.status.is_success() {
        return Err(failure(answer, "project", "request refused"));
    }
    let body = tracker::success(answer)?;
    type_names(&body["issueTypes"])
        .or_else(|| type_names(&body["values"]))
        .ok_or_else(|| tracker::unexpected(answer))
}

fn type_names(types: &Value) -> Option<Vec<String>> {
    let types = types.as_array()?;
    Some(
        types
            .iter()
            .filter_map(|t| tracker::text(&t["name"]))
            .collect(),
    )
}

fn read_created(answer: &Answer, site: &str) -> Result<Ticket, ProviderError> {
    if !answer.status.is_success() {
        return Err(match answer.status.as_u16() {
            400 => field_error(&answer.body["errors"]),
            _ => failure(answer, "project", "the issue was refused"),
        });
    }
    let body = tracker::success(answer)?;
    match (tracker::text(&body["id"]), tracker::text(&body["key"])) {
        (Some(id), Some(key)) => Ok(Ticket {
            url: format!("{site}/browse/{key}"),
            id,
            key,
        }),
        _ => Err(tracker::unexpected(answer)),
    }
}

/// A 400's `errors` object, by the field it names (in our words, never Jira's). A missing
/// permission often arrives this way too ("cannot be set … not on the appropriate screen").
fn field_error(errors: &Value) -> ProviderError {
    let named = |field: &str| errors.get(field).is_some();
    if named("project") {
        ProviderError::NotFound("project")
    } else if named("issuetype") {
        ProviderError::NotFound("issue type")
    } else if named("summary") {
        ProviderError::Refused("the title was refused")
    } else if named("description") {
        ProviderError::Refused("the description was refused")
    } else {
        ProviderError::Refused("a field of the issue was refused")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::tests::{answer, client, html, with};

    #[test]
    fn created_issues_link_to_the_site() {
        let created = answer(
            201,
            json!({"id": "10000", "key": "ENG-24", "self": "https://x/rest/api/3/issue/10000"}),
        );
        assert_eq!(
            read_created(&created, "https://acme.atlassian.net"),
            Ok(Ticket {
                id: "10000".into(),
                key: "ENG-24".into(),
                url: "https://acme.atlassian.net/browse/ENG-24".into(),
            })
        );
        for broken in [
            answer(201, json!({"id": "1"})),
            answer(201, Value::Null),
            html(200),
        ] {
            assert!(matches!(
                read_created(&broken, "https://s"),
                Err(ProviderError::Failed {
                    transient: true,
                    ..
                })
            ));
        }
    }

    #[test]
    fn field_errors_name_the_field_in_our_words() {
        let refused = |errors: Value| {
            read_created(
                &answer(400, json!({"errorMessages": [], "errors": errors})),
                "s",
            )
        };
        assert_eq!(
            refused(json!({"project": "Specify a valid project ID or key"})),
            Err(ProviderError::NotFound("project"))
        );
        assert_eq!(
            refused(json!({"issuetype": "The issue type selected is invalid."})),
            Err(ProviderError::NotFound("issue type"))
        );
        assert_eq!(
            refused(json!({"summary": "You must specify a summary of the issue."})),
            Err(ProviderError::Refused("the title was refused"))
        );
        assert_eq!(
            refused(
                json!({"customfield_10010": "Field 'customfield_10010' cannot be set. It is not on the appropriate screen, or unknown."})
            ),
            Err(ProviderError::Refused("a field of the issue was refused"))
        );
    }

    #[test]
    fn rate_limits_and_refusals() {
        let limited = with(answer(429, json!({})), "retry-after", "1");
        assert_eq!(
            read_created(&limited, "s"),
            Err(ProviderError::RateLimited {
                retry_after_secs: 1,
                inline: true
            })
        );
        assert_eq!(
            read_created(&answer(429, json!({})), "s"),
            Err(ProviderError::RateLimited {
                retry_after_secs: DEFAULT_WAIT_SECS,
                inline: true
            })
        );
        let unavailable = with(answer(503, json!({})), "retry-after", "3");
        assert_eq!(
            read_myself(&unavailable),
            Err(ProviderError::RateLimited {
                retry_after_secs: 3,
                inline: true
            })
        );
        assert_eq!(
            read_myself(&answer(503, json!({}))),
            Err(ProviderError::Unreachable(Unreached::Gateway))
        );
        let unauthenticated = json!({"message": "Client must be authenticated to access this resource.", "status-code": 401});
        assert_eq!(
            read_myself(&answer(401, unauthenticated)),
            Err(ProviderError::InvalidCredentials)
        );
        assert!(matches!(
            read_myself(&answer(200, json!({"displayName": "x"}))),
            Err(ProviderError::Failed { .. })
        ));
        assert_eq!(
            read_project(&answer(
                404,
                json!({"errorMessages": ["No project could be found with key 'X'."], "errors": {}})
            ))
            .err(),
            Some(ProviderError::NotFound("project"))
        );
        assert_eq!(
            read_cloud_id(&answer(200, json!({"cloudId": "abc"}))),
            Ok("abc".into())
        );
        assert_eq!(
            read_cloud_id(&answer(404, json!({}))),
            Err(ProviderError::InvalidCredentials)
        );
    }

    #[test]
    fn issue_types_come_from_the_project_or_createmeta() {
        let project = answer(
            200,
            json!({"id": "10000", "key": "ENG", "issueTypes": [{"name": "Bug"}, {"name": "Task"}]}),
        );
        let read = read_project(&project).unwrap();
        assert_eq!(read.issue_types, Some(vec!["Bug".into(), "Task".into()]));
        let bare = read_project(&answer(200, json!({"id": "1", "key": "K"}))).unwrap();
        assert_eq!(bare.issue_types, None);
        let page = answer(200, json!({"values": [{"name": "Story"}], "total": 1}));
        assert_eq!(read_issue_types(&page), Ok(vec!["Story".to_string()]));
    }

    #[test]
    fn only_host_names_make_a_site() {
        let client = JiraClient::new(client(), None, "https://api.atlassian.com".into());
        assert_eq!(
            client.site("acme.atlassian.net"),
            Ok("https://acme.atlassian.net".into())
        );
        for bad in [
            "",
            "evil.test/x",
            "a@b.atlassian.net",
            "acme.atlassian.net:1",
        ] {
            assert!(client.site(bad).is_err(), "{bad}");
        }
        assert_eq!(
            client.gateway("4f8b-1a3e"),
            Ok("https://api.atlassian.com/ex/jira/4f8b-1a3e".into())
        );
    }
}

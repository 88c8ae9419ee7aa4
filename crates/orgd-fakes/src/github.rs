//! Fake GitHub REST API (`outbound-apis.md` §2 and §9), at the root like `api.github.com` or
//! under a prefix like GitHub Enterprise Server's `https://<host>/api/v3`.
//!
//! It enforces what GitHub enforces on every call, in GitHub's order: a `User-Agent` (403
//! without), a supported `X-GitHub-Api-Version` (400 otherwise; absence is allowed and recorded),
//! and `Authorization: Bearer <token>` (401 `Bad credentials`). Issue and comment ids are above
//! `i32::MAX`, as on GitHub, to catch narrow integer columns.
//!
//! Decisions where the reference is silent or UNCONFIRMED:
//! - only `2022-11-28` is accepted by default although GitHub also supports `2026-03-10`: orgd
//!   pins 2022-11-28, so anything else is a bug ([`GitHub::set_api_versions`] widens it);
//! - only the `Bearer` scheme is accepted (GitHub also takes `token <t>`; orgd must send Bearer);
//! - the 400 for an unsupported version says `Unsupported API version: <v>`;
//! - the title (256) and body (65,536) limits are the community-reported ones (UNCONFIRMED),
//!   answered 422 with an `errors[].code` of `custom`;
//! - a comment's `html_url` is `/issues/{n}#…` when `n` is an issue made here, else `/pull/{n}#…`;
//! - every answer carries `x-ratelimit-*` headers counting down from 5,000.

use std::sync::Mutex;

use serde_json::{Value, json};

use super::common::{Behaviour, Call, Fake, Protocol, Reply, bearer_token, rfc3339, unix_now};

/// A token with write access (push) to every repository.
pub const GITHUB_TOKEN: &str = "ghp_fakeGOOD0123456789abcdefghijklmnopqr";
/// A token that can read but not write: writes answer 403 "Resource not accessible…".
pub const GITHUB_READ_ONLY_TOKEN: &str = "github_pat_fakeREADONLY0123456789abcdefghij";
pub const GITHUB_LOGIN: &str = "orgd-bot";
pub const GITHUB_OWNER: &str = "acme";
/// `acme/shop`, issues enabled.
pub const GITHUB_REPO: &str = "shop";
/// `acme/wiki-only`, issues disabled (`has_issues:false`, creates answer 410).
pub const GITHUB_REPO_NO_ISSUES: &str = "wiki-only";
pub const GITHUB_API_VERSION: &str = "2022-11-28";
/// The prefix GitHub Enterprise Server serves its REST API under.
pub const GHES_PREFIX: &str = "/api/v3";

const DOCS: &str = "https://docs.github.com/rest";

/// A repository the fake serves.
#[derive(Clone, Debug)]
pub struct GhRepo {
    pub id: u64,
    pub owner: String,
    pub name: String,
    pub has_issues: bool,
}

/// An issue created through the fake.
#[derive(Clone, Debug)]
pub struct GhIssue {
    pub id: u64,
    pub number: u64,
    pub owner: String,
    pub repo: String,
    pub title: String,
    pub body: Option<String>,
    pub labels: Vec<String>,
}

/// A comment posted through the fake, with its current body.
#[derive(Clone, Debug)]
pub struct GhComment {
    pub id: u64,
    pub owner: String,
    pub repo: String,
    /// The issue or pull request number.
    pub number: u64,
    pub body: String,
    /// How many times it was edited.
    pub edits: usize,
    /// Deleted by a person (test hook [`GitHub::delete_comment`]); reads and edits answer 404.
    pub deleted: bool,
}

struct Token {
    value: String,
    can_write: bool,
}

/// The GitHub protocol and its state.
pub struct GitHub {
    prefix: String,
    web: String,
    api_versions: Mutex<Vec<String>>,
    tokens: Mutex<Vec<Token>>,
    repos: Mutex<Vec<GhRepo>>,
    issues: Mutex<Vec<GhIssue>>,
    comments: Mutex<Vec<GhComment>>,
    used: Mutex<u64>,
}

pub type FakeGitHub = Fake<GitHub>;

impl Fake<GitHub> {
    /// GitHub.com: the API at the root, web links on `https://github.com`.
    pub async fn spawn() -> Self {
        Fake::start(GitHub::new("", "https://github.com")).await
    }

    /// GitHub Enterprise Server: the API under `/api/v3` ([`GHES_PREFIX`]); requests outside
    /// it answer 404. Web links on `https://ghe.example.com`.
    pub async fn spawn_enterprise() -> Self {
        Fake::start(GitHub::new(GHES_PREFIX, "https://ghe.example.com")).await
    }

    /// The API root to configure (`GITHUB_API_URL` or an integration's `baseUrl`).
    pub fn api_url(&self) -> String {
        format!("{}{}", self.url, self.prefix)
    }
}

impl GitHub {
    fn new(prefix: &str, web: &str) -> Self {
        let github = Self {
            prefix: prefix.to_string(),
            web: web.to_string(),
            api_versions: Mutex::new(vec![GITHUB_API_VERSION.to_string()]),
            tokens: Mutex::new(Vec::new()),
            repos: Mutex::new(Vec::new()),
            issues: Mutex::new(Vec::new()),
            comments: Mutex::new(Vec::new()),
            used: Mutex::new(0),
        };
        github.add_token(GITHUB_TOKEN, true);
        github.add_token(GITHUB_READ_ONLY_TOKEN, false);
        github.add_repo(GITHUB_OWNER, GITHUB_REPO, true);
        github.add_repo(GITHUB_OWNER, GITHUB_REPO_NO_ISSUES, false);
        github
    }

    /// Accepts `token` from now on; `can_write: false` gives 403 on writes.
    pub fn add_token(&self, token: &str, can_write: bool) {
        self.tokens.lock().unwrap().push(Token {
            value: token.to_string(),
            can_write,
        });
    }

    /// Stops accepting every token (revoked).
    pub fn revoke_all(&self) {
        self.tokens.lock().unwrap().clear();
    }

    /// The `X-GitHub-Api-Version` values accepted (default: only `2022-11-28`).
    pub fn set_api_versions(&self, versions: &[&str]) {
        *self.api_versions.lock().unwrap() = versions.iter().map(|v| v.to_string()).collect();
    }

    /// Adds a repository.
    pub fn add_repo(&self, owner: &str, name: &str, has_issues: bool) {
        let mut repos = self.repos.lock().unwrap();
        let id = 700_000_001 + repos.len() as u64;
        repos.push(GhRepo {
            id,
            owner: owner.to_string(),
            name: name.to_string(),
            has_issues,
        });
    }

    /// Turns a repository's issues on or off.
    pub fn set_has_issues(&self, owner: &str, name: &str, has_issues: bool) {
        let mut repos = self.repos.lock().unwrap();
        for repo in repos.iter_mut().filter(|r| r.is(owner, name)) {
            repo.has_issues = has_issues;
        }
    }

    pub fn issues(&self) -> Vec<GhIssue> {
        self.issues.lock().unwrap().clone()
    }

    pub fn comments(&self) -> Vec<GhComment> {
        self.comments.lock().unwrap().clone()
    }

    pub fn comment(&self, id: u64) -> Option<GhComment> {
        self.comments().into_iter().find(|c| c.id == id)
    }

    /// Deletes a comment as a person would on github.com: reads and edits then answer 404.
    pub fn delete_comment(&self, id: u64) {
        let mut comments = self.comments.lock().unwrap();
        for comment in comments.iter_mut().filter(|c| c.id == id) {
            comment.deleted = true;
        }
    }

    fn repo(&self, call: &Call<'_>) -> Option<GhRepo> {
        let (owner, name) = (call.param("owner"), call.param("repo"));
        let repos = self.repos.lock().unwrap();
        repos.iter().find(|r| r.is(&owner, &name)).cloned()
    }

    fn issue_json(&self, base: &str, issue: &GhIssue) -> Value {
        let api = format!(
            "{base}{}/repos/{}/{}/issues/{}",
            self.prefix, issue.owner, issue.repo, issue.number
        );
        json!({
            "id": issue.id, "node_id": format!("I_kwDOFake{}", issue.id), "number": issue.number,
            "title": issue.title, "body": issue.body, "state": "open",
            "labels": issue.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
            "user": {"login": GITHUB_LOGIN},
            "html_url": format!("{}/{}/{}/issues/{}", self.web, issue.owner, issue.repo, issue.number),
            "url": api, "comments_url": format!("{api}/comments"),
        })
    }

    fn comment_json(&self, base: &str, comment: &GhComment) -> Value {
        let is_issue = self.issues.lock().unwrap().iter().any(|i| {
            i.owner == comment.owner && i.repo == comment.repo && i.number == comment.number
        });
        let kind = if is_issue { "issues" } else { "pull" };
        let api = format!(
            "{base}{}/repos/{}/{}/issues",
            self.prefix, comment.owner, comment.repo
        );
        json!({
            "id": comment.id, "node_id": format!("IC_kwDOFake{}", comment.id),
            "body": comment.body, "user": {"login": GITHUB_LOGIN},
            "html_url": format!("{}/{}/{}/{kind}/{}#issuecomment-{}", self.web, comment.owner, comment.repo, comment.number, comment.id),
            "url": format!("{api}/comments/{}", comment.id),
            "issue_url": format!("{api}/{}", comment.number),
            "created_at": rfc3339(unix_now()), "updated_at": rfc3339(unix_now()),
        })
    }

    fn rate_headers(&self, reply: Reply) -> Reply {
        let used = {
            let mut used = self.used.lock().unwrap();
            *used += 1;
            *used
        };
        reply
            .header("x-ratelimit-limit", 5000)
            .header("x-ratelimit-remaining", 5000u64.saturating_sub(used))
            .header("x-ratelimit-used", used)
            .header("x-ratelimit-reset", unix_now() + 3600)
            .header("x-ratelimit-resource", "core")
    }

    fn route(&self, call: &Call<'_>, can_write: bool) -> Reply {
        let base = call.base;
        let Some(route) = call.route else {
            return not_found();
        };
        if route == "GET /user" {
            return Reply::json(
                200,
                json!({"login": GITHUB_LOGIN, "id": 90_000_001, "type": "User", "name": "orgd bot"}),
            )
            .header("x-oauth-scopes", "repo");
        }
        let Some(repo) = self.repo(call) else {
            return not_found();
        };
        let is_write = !route.starts_with("GET ");
        if is_write && !can_write {
            return error(403, "Resource not accessible by personal access token").header(
                "x-accepted-github-permissions",
                "issues=write; pull_requests=write",
            );
        }
        if is_write {
            match &call.seen.json {
                None => return error(400, "Problems parsing JSON"),
                Some(body) if !body.is_object() => {
                    return error(400, "Body should be a JSON object");
                }
                Some(_) => {}
            }
        }
        let body = call.json();
        let number = call.param("number").parse::<u64>().ok().filter(|n| *n > 0);
        let comment_id = call.param("id").parse::<u64>().ok();
        match route {
            "GET /repos/{owner}/{repo}" => Reply::json(
                200,
                json!({
                    "id": repo.id, "node_id": format!("R_kgDOFake{}", repo.id),
                    "name": repo.name, "full_name": format!("{}/{}", repo.owner, repo.name),
                    "private": true, "owner": {"login": repo.owner, "type": "Organization"},
                    "html_url": format!("{}/{}/{}", self.web, repo.owner, repo.name),
                    "has_issues": repo.has_issues,
                    "permissions": {"admin": false, "maintain": false, "push": can_write,
                                    "triage": can_write, "pull": true},
                }),
            ),
            "POST /repos/{owner}/{repo}/issues" => {
                if !repo.has_issues {
                    return Reply::json(
                        410,
                        json!({"message": "Issues are disabled for this repo",
                               "documentation_url": "https://docs.github.com/v3/issues/", "status": "410"}),
                    );
                }
                if let Some(invalid) = validate_text("Issue", body, "title", 256, true)
                    .or_else(|| validate_text("Issue", body, "body", 65_536, false))
                {
                    return invalid;
                }
                let mut issues = self.issues.lock().unwrap();
                let number = 1 + issues
                    .iter()
                    .filter(|i| i.owner == repo.owner && i.repo == repo.name)
                    .count() as u64;
                let issue = GhIssue {
                    id: 3_000_000_001 + issues.len() as u64,
                    number,
                    owner: repo.owner.clone(),
                    repo: repo.name.clone(),
                    title: body["title"].as_str().unwrap_or_default().to_string(),
                    body: body["body"].as_str().map(str::to_string),
                    labels: body["labels"]
                        .as_array()
                        .map(|l| {
                            l.iter()
                                .filter_map(|l| l.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                issues.push(issue.clone());
                drop(issues);
                let json = self.issue_json(base, &issue);
                let location = json["url"].as_str().unwrap_or_default().to_string();
                Reply::json(201, json).header("location", location)
            }
            "GET /repos/{owner}/{repo}/issues/{number}" => {
                let issues = self.issues();
                match issues.iter().find(|i| {
                    i.owner == repo.owner && i.repo == repo.name && Some(i.number) == number
                }) {
                    Some(issue) => Reply::json(200, self.issue_json(base, issue)),
                    None => not_found(),
                }
            }
            "POST /repos/{owner}/{repo}/issues/{number}/comments" => {
                let Some(number) = number else {
                    return not_found();
                };
                if let Some(invalid) = validate_text("IssueComment", body, "body", 65_536, true) {
                    return invalid;
                }
                let mut comments = self.comments.lock().unwrap();
                let comment = GhComment {
                    id: 2_200_000_001 + comments.len() as u64,
                    owner: repo.owner.clone(),
                    repo: repo.name.clone(),
                    number,
                    body: body["body"].as_str().unwrap_or_default().to_string(),
                    edits: 0,
                    deleted: false,
                };
                comments.push(comment.clone());
                drop(comments);
                let json = self.comment_json(base, &comment);
                let location = json["url"].as_str().unwrap_or_default().to_string();
                Reply::json(201, json).header("location", location)
            }
            "GET /repos/{owner}/{repo}/issues/{number}/comments" => {
                let listed: Vec<Value> = self
                    .comments()
                    .iter()
                    .filter(|c| c.owner == repo.owner && c.repo == repo.name)
                    .filter(|c| Some(c.number) == number && !c.deleted)
                    .map(|c| self.comment_json(base, c))
                    .collect();
                Reply::json(200, Value::Array(listed))
            }
            "GET /repos/{owner}/{repo}/issues/comments/{id}"
            | "PATCH /repos/{owner}/{repo}/issues/comments/{id}" => {
                let mut comments = self.comments.lock().unwrap();
                let Some(comment) = comments.iter_mut().find(|c| {
                    Some(c.id) == comment_id
                        && c.owner == repo.owner
                        && c.repo == repo.name
                        && !c.deleted
                }) else {
                    return not_found();
                };
                if route.starts_with("PATCH") {
                    if let Some(invalid) = validate_text("IssueComment", body, "body", 65_536, true)
                    {
                        return invalid;
                    }
                    comment.body = body["body"].as_str().unwrap_or_default().to_string();
                    comment.edits += 1;
                }
                let comment = comment.clone();
                drop(comments);
                Reply::json(200, self.comment_json(base, &comment))
            }
            _ => unreachable!("every route is handled"),
        }
    }
}

impl GhRepo {
    fn is(&self, owner: &str, name: &str) -> bool {
        self.owner.eq_ignore_ascii_case(owner) && self.name.eq_ignore_ascii_case(name)
    }
}

impl Protocol for GitHub {
    const ROUTES: &'static [&'static str] = &[
        "GET /user",
        "GET /repos/{owner}/{repo}",
        "POST /repos/{owner}/{repo}/issues",
        "GET /repos/{owner}/{repo}/issues/{number}",
        "POST /repos/{owner}/{repo}/issues/{number}/comments",
        "GET /repos/{owner}/{repo}/issues/{number}/comments",
        "GET /repos/{owner}/{repo}/issues/comments/{id}",
        "PATCH /repos/{owner}/{repo}/issues/comments/{id}",
    ];

    fn route_path<'p>(&self, path: &'p str) -> Option<&'p str> {
        path.strip_prefix(self.prefix.as_str())
            .filter(|rest| rest.starts_with('/'))
    }

    fn answer(&self, call: &Call<'_>) -> Reply {
        if call.seen.header("user-agent").is_none_or(str::is_empty) {
            return Reply::text(
                403,
                "Request forbidden by administrative rules. Please make sure your request has a \
                 User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). \
                 Check https://developer.github.com for other possible causes.\n",
            );
        }
        if let Some(version) = call.seen.header("x-github-api-version") {
            let accepted = self.api_versions.lock().unwrap();
            if !accepted.iter().any(|v| v == version) {
                return error(400, &format!("Unsupported API version: {version}"));
            }
        }
        let can_write = match bearer_token(call.seen) {
            None if call.seen.header("authorization").is_none() => {
                return self.rate_headers(error(401, "Requires authentication"));
            }
            None => return self.rate_headers(error(401, "Bad credentials")),
            Some(token) => {
                let tokens = self.tokens.lock().unwrap();
                match tokens.iter().find(|t| t.value == token) {
                    Some(t) => t.can_write,
                    None => return self.rate_headers(error(401, "Bad credentials")),
                }
            }
        };
        let reply = self
            .route(call, can_write)
            .header("x-github-api-version-selected", GITHUB_API_VERSION);
        self.rate_headers(reply)
    }
}

/// GitHub's error body: `{"message","documentation_url","status":"<code>"}`.
pub fn error(status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"message": message, "documentation_url": DOCS, "status": status.to_string()}),
    )
}

fn not_found() -> Reply {
    error(404, "Not Found")
}

/// 422 Validation Failed for a missing or too long text field of `resource`, or `None` when
/// it is fine.
fn validate_text(
    resource: &str,
    body: &Value,
    field: &str,
    max: usize,
    required: bool,
) -> Option<Reply> {
    let value = &body[field];
    let problem = match value {
        Value::Null if required => {
            json!({"resource": resource, "code": "missing_field", "field": field})
        }
        Value::Null => return None,
        Value::String(s) if s.chars().count() > max => json!({
            "resource": resource, "code": "custom", "field": field,
            "message": format!("{field} is too long (maximum is {max} characters)")}),
        Value::String(s) if required && s.trim().is_empty() => {
            json!({"resource": resource, "code": "missing_field", "field": field})
        }
        Value::String(_) => return None,
        _ => json!({"resource": resource, "code": "invalid", "field": field}),
    };
    Some(Reply::json(
        422,
        json!({"message": "Validation Failed", "errors": [problem],
               "documentation_url": DOCS, "status": "422"}),
    ))
}

/// Primary rate limit: 403 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` (epoch
/// seconds) `reset_in_secs` from now.
pub fn primary_rate_limit(reset_in_secs: u64) -> Behaviour {
    Behaviour::Respond(
        error(403, "API rate limit exceeded for user ID 90000001.")
            .header("x-ratelimit-limit", 5000)
            .header("x-ratelimit-remaining", 0)
            .header("x-ratelimit-used", 5000)
            .header("x-ratelimit-reset", unix_now() + reset_in_secs)
            .header("x-ratelimit-resource", "core"),
    )
}

/// Secondary rate limit: 429 with `retry-after` and the "secondary rate limit" message
/// (remaining quota left, so only `retry-after` tells when to come back).
pub fn secondary_rate_limit(retry_after_secs: u64) -> Behaviour {
    Behaviour::Respond(
        error(
            429,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. \
             If you reach out to GitHub Support for help, please include the request ID.",
        )
        .header("retry-after", retry_after_secs)
        .header("x-ratelimit-limit", 5000)
        .header("x-ratelimit-remaining", 4990)
        .header("x-ratelimit-reset", unix_now() + 3600),
    )
}

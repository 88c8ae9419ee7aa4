//! Fake Bitbucket Cloud REST 2.0 (`outbound-apis.md` §5 and §9): the user, repositories, issues
//! (the tracker is opt-in per repository) and pull-request comments, under `/2.0`.
//!
//! Auth is a user API token: `Authorization: Basic base64("<Atlassian account email>:<token>")`.
//! The user name must be the account's email (an app-password-style user name gets 401), and a
//! `Bearer` of the same token gets 401 "Token is invalid, expired, or not supported for this
//! endpoint.". Every 401 carries `www-authenticate: Basic realm="Bitbucket.org HTTP"`.
//!
//! Decisions where the reference is silent or UNCONFIRMED:
//! - the 401 body for bad Basic credentials is `{"type":"error","error":{"message":"Invalid credentials"}}`;
//! - a missing title answers 400 `{"type":"error","error":{"message":"Bad request",
//!   "fields":{"title":["This field is required."]}}}`; a bad `kind`/`priority` the same shape;
//!   the enums are bug/enhancement/proposal/task and trivial/minor/major/critical/blocker;
//! - the 429 body is `{"type":"error","error":{"message":"Rate limit for this resource has been
//!   exceeded"}}`; `Retry-After` is UNCONFIRMED, so [`rate_limited`] takes it as an option;
//! - a deleted comment keeps its content and reads `deleted: true` (and stays in the list);
//!   editing it answers 200 by default or 404 with [`EditDeleted::NotFound`];
//! - the repository's `has_issues` field name is UNCONFIRMED; this fake uses `has_issues`;
//! - web links point at `https://bitbucket.org`, API `self` links at the fake.

use std::sync::Mutex;

use serde_json::{Value, json};

use super::common::{Behaviour, Call, EditDeleted, Fake, Protocol, Reply, basic_credentials};
use super::common::{bearer_token, rfc3339, unix_now};

pub const BITBUCKET_EMAIL: &str = "orgd-bot@example.com";
/// An Atlassian API token with Bitbucket scopes, for [`BITBUCKET_EMAIL`].
pub const BITBUCKET_TOKEN: &str = "ATATT3xFfGF0bitbucketGOOD0123456789abcdefABCDEF";
/// The Bitbucket user name of the same account (what app passwords used; refused here).
pub const BITBUCKET_USERNAME: &str = "orgd-bot";
pub const BITBUCKET_WORKSPACE: &str = "acme";
/// `acme/shop`, issue tracker on.
pub const BITBUCKET_REPO: &str = "shop";
/// `acme/web`, no issue tracker.
pub const BITBUCKET_REPO_NO_ISSUES: &str = "web";

const WEB: &str = "https://bitbucket.org";
const ISSUE_KINDS: [&str; 4] = ["bug", "enhancement", "proposal", "task"];
const PRIORITIES: [&str; 5] = ["trivial", "minor", "major", "critical", "blocker"];

/// A repository the fake serves.
#[derive(Clone, Debug)]
pub struct BbRepo {
    pub workspace: String,
    pub slug: String,
    pub has_issues: bool,
}

/// An issue created through the fake.
#[derive(Clone, Debug)]
pub struct BbIssue {
    pub id: u64,
    pub workspace: String,
    pub slug: String,
    pub title: String,
    pub content: Option<String>,
    pub kind: String,
    pub priority: String,
}

/// A pull-request comment posted through the fake, with its current content.
#[derive(Clone, Debug)]
pub struct BbComment {
    pub id: u64,
    pub workspace: String,
    pub slug: String,
    pub pull_request: u64,
    pub raw: String,
    pub edits: usize,
    /// Deleted by a person (test hook [`Bitbucket::delete_comment`]); reads `deleted: true`.
    pub deleted: bool,
}

/// The Bitbucket protocol and its state.
pub struct Bitbucket {
    credentials: Mutex<Vec<(String, String)>>,
    repos: Mutex<Vec<BbRepo>>,
    issues: Mutex<Vec<BbIssue>>,
    comments: Mutex<Vec<BbComment>>,
    edit_deleted: Mutex<EditDeleted>,
}

pub type FakeBitbucket = Fake<Bitbucket>;

impl Fake<Bitbucket> {
    /// Workspace [`BITBUCKET_WORKSPACE`] with [`BITBUCKET_REPO`] (tracker on) and
    /// [`BITBUCKET_REPO_NO_ISSUES`], accepting [`BITBUCKET_EMAIL`] + [`BITBUCKET_TOKEN`].
    pub async fn spawn() -> Self {
        let bitbucket = Bitbucket {
            credentials: Mutex::new(vec![(
                BITBUCKET_EMAIL.to_string(),
                BITBUCKET_TOKEN.to_string(),
            )]),
            repos: Mutex::new(Vec::new()),
            issues: Mutex::new(Vec::new()),
            comments: Mutex::new(Vec::new()),
            edit_deleted: Mutex::new(EditDeleted::default()),
        };
        bitbucket.add_repo(BITBUCKET_WORKSPACE, BITBUCKET_REPO, true);
        bitbucket.add_repo(BITBUCKET_WORKSPACE, BITBUCKET_REPO_NO_ISSUES, false);
        Fake::start(bitbucket).await
    }

    /// The API root to configure (`BITBUCKET_API_URL`, replacing `https://api.bitbucket.org/2.0`).
    pub fn api_url(&self) -> String {
        format!("{}/2.0", self.url)
    }
}

impl Bitbucket {
    pub fn add_credential(&self, email: &str, token: &str) {
        let mut credentials = self.credentials.lock().unwrap();
        credentials.push((email.to_string(), token.to_string()));
    }

    /// Stops accepting every token.
    pub fn revoke_all(&self) {
        self.credentials.lock().unwrap().clear();
    }

    pub fn add_repo(&self, workspace: &str, slug: &str, has_issues: bool) {
        self.repos.lock().unwrap().push(BbRepo {
            workspace: workspace.to_string(),
            slug: slug.to_string(),
            has_issues,
        });
    }

    /// What an edit of a deleted comment answers.
    pub fn set_edit_deleted(&self, mode: EditDeleted) {
        *self.edit_deleted.lock().unwrap() = mode;
    }

    pub fn issues(&self) -> Vec<BbIssue> {
        self.issues.lock().unwrap().clone()
    }

    pub fn comments(&self) -> Vec<BbComment> {
        self.comments.lock().unwrap().clone()
    }

    pub fn comment(&self, id: u64) -> Option<BbComment> {
        self.comments().into_iter().find(|c| c.id == id)
    }

    /// Deletes a comment as a person would: it then reads `deleted: true`.
    pub fn delete_comment(&self, id: u64) {
        let mut comments = self.comments.lock().unwrap();
        for comment in comments.iter_mut().filter(|c| c.id == id) {
            comment.deleted = true;
        }
    }

    fn check_auth(&self, call: &Call<'_>) -> Result<(), Reply> {
        if bearer_token(call.seen).is_some() {
            return Err(unauthorized(
                "Token is invalid, expired, or not supported for this endpoint.",
            ));
        }
        let Some((user, token)) = basic_credentials(call.seen) else {
            return Err(unauthorized("Invalid credentials"));
        };
        let credentials = self.credentials.lock().unwrap();
        let ok = user.contains('@')
            && credentials
                .iter()
                .any(|(email, t)| email.eq_ignore_ascii_case(&user) && *t == token);
        if ok {
            Ok(())
        } else {
            Err(unauthorized("Invalid credentials"))
        }
    }

    fn issue_json(base: &str, issue: &BbIssue) -> Value {
        let full = format!("{}/{}", issue.workspace, issue.slug);
        json!({
            "type": "issue", "id": issue.id, "title": issue.title,
            "content": rendered(issue.content.as_deref().unwrap_or_default()),
            "kind": issue.kind, "priority": issue.priority, "state": "new",
            "repository": {"type": "repository", "full_name": full},
            "created_on": rfc3339(unix_now()),
            "links": {
                "self": {"href": format!("{base}/2.0/repositories/{full}/issues/{}", issue.id)},
                "html": {"href": format!("{WEB}/{full}/issues/{}", issue.id)},
            },
        })
    }

    fn comment_json(base: &str, comment: &BbComment) -> Value {
        let full = format!("{}/{}", comment.workspace, comment.slug);
        let pr = comment.pull_request;
        json!({
            "type": "pullrequest_comment", "id": comment.id, "content": rendered(&comment.raw),
            "deleted": comment.deleted, "pending": false,
            "created_on": rfc3339(unix_now()), "updated_on": rfc3339(unix_now()),
            "user": {"type": "user", "display_name": "orgd bot", "uuid": "{5b0b7f1e-0000-4000-8000-00000000b0b0}"},
            "pullrequest": {"type": "pullrequest", "id": pr,
                            "links": {"html": {"href": format!("{WEB}/{full}/pull-requests/{pr}")}}},
            "links": {
                "self": {"href": format!("{base}/2.0/repositories/{full}/pullrequests/{pr}/comments/{}", comment.id)},
                "html": {"href": format!("{WEB}/{full}/pull-requests/{pr}/_/diff#comment-{}", comment.id)},
            },
        })
    }

    fn route(&self, call: &Call<'_>, route: &str) -> Reply {
        let base = call.base;
        if route == "GET /2.0/user" {
            return Reply::json(
                200,
                json!({"type": "user", "uuid": "{5b0b7f1e-0000-4000-8000-00000000b0b0}",
                       "username": BITBUCKET_USERNAME, "display_name": "orgd bot",
                       "account_id": "712020:0e1f2a3b-4c5d-6e7f-8a9b-0c1d2e3f4a5b"}),
            );
        }
        let (workspace, slug) = (call.param("workspace"), call.param("slug"));
        let repo = {
            let repos = self.repos.lock().unwrap();
            repos
                .iter()
                .find(|r| {
                    r.workspace.eq_ignore_ascii_case(&workspace)
                        && r.slug.eq_ignore_ascii_case(&slug)
                })
                .cloned()
        };
        let Some(repo) = repo else {
            return error(404, &format!("Repository {workspace}/{slug} not found"));
        };
        let body = call.json();
        let pr = call.param("id").parse::<u64>().ok().filter(|n| *n > 0);
        let comment_id = call.param("comment_id").parse::<u64>().ok();
        match route {
            "GET /2.0/repositories/{workspace}/{slug}" => {
                let full = format!("{}/{}", repo.workspace, repo.slug);
                Reply::json(
                    200,
                    json!({
                        "type": "repository", "uuid": "{8c4f3a5e-0000-4000-8000-00000000c0de}",
                        "full_name": full, "name": repo.slug, "slug": repo.slug,
                        "is_private": true, "scm": "git", "has_issues": repo.has_issues,
                        "has_wiki": false, "workspace": {"type": "workspace", "slug": repo.workspace},
                        "links": {
                            "self": {"href": format!("{base}/2.0/repositories/{full}")},
                            "html": {"href": format!("{WEB}/{full}")},
                            "pullrequests": {"href": format!("{base}/2.0/repositories/{full}/pullrequests")},
                        },
                    }),
                )
            }
            "POST /2.0/repositories/{workspace}/{slug}/issues" => {
                if !repo.has_issues {
                    return error(404, "Repository has no issue tracker.");
                }
                let title = body["title"].as_str().filter(|t| !t.trim().is_empty());
                let kind = body["kind"].as_str().unwrap_or("bug");
                let priority = body["priority"].as_str().unwrap_or("major");
                let content = &body["content"];
                let problem = if title.is_none() {
                    Some(("title", "This field is required."))
                } else if !ISSUE_KINDS.contains(&kind) {
                    Some(("kind", "Select a valid choice."))
                } else if !PRIORITIES.contains(&priority) {
                    Some(("priority", "Select a valid choice."))
                } else if !(content.is_null() || content["raw"].is_string()) {
                    Some(("content", "Expected an object with a raw string."))
                } else {
                    None
                };
                if let Some((field, message)) = problem {
                    return Reply::json(
                        400,
                        json!({"type": "error", "error": {"message": "Bad request", "fields": {field: [message]}}}),
                    );
                }
                let mut issues = self.issues.lock().unwrap();
                let id = 1 + issues
                    .iter()
                    .filter(|i| i.workspace == repo.workspace && i.slug == repo.slug)
                    .count() as u64;
                let issue = BbIssue {
                    id,
                    workspace: repo.workspace.clone(),
                    slug: repo.slug.clone(),
                    title: title.unwrap_or_default().to_string(),
                    content: content["raw"].as_str().map(str::to_string),
                    kind: kind.to_string(),
                    priority: priority.to_string(),
                };
                issues.push(issue.clone());
                Reply::json(201, Self::issue_json(base, &issue))
            }
            "GET /2.0/repositories/{workspace}/{slug}/issues/{id}" => {
                let issues = self.issues();
                match issues.iter().find(|i| {
                    i.workspace == repo.workspace && i.slug == repo.slug && Some(i.id) == pr
                }) {
                    Some(issue) => Reply::json(200, Self::issue_json(base, issue)),
                    None => error(404, "Issue not found"),
                }
            }
            "POST /2.0/repositories/{workspace}/{slug}/pullrequests/{id}/comments" => {
                let Some(pr) = pr else {
                    return error(404, "Pull request not found");
                };
                let Some(raw) = body["content"]["raw"].as_str().filter(|r| !r.is_empty()) else {
                    return Reply::json(
                        400,
                        json!({"type": "error", "error": {"message": "Bad request",
                               "fields": {"content": ["This field is required."]}}}),
                    );
                };
                let mut comments = self.comments.lock().unwrap();
                let comment = BbComment {
                    id: 480_000_001 + comments.len() as u64,
                    workspace: repo.workspace.clone(),
                    slug: repo.slug.clone(),
                    pull_request: pr,
                    raw: raw.to_string(),
                    edits: 0,
                    deleted: false,
                };
                comments.push(comment.clone());
                Reply::json(201, Self::comment_json(base, &comment))
            }
            "GET /2.0/repositories/{workspace}/{slug}/pullrequests/{id}/comments" => {
                let values: Vec<Value> = self
                    .comments()
                    .iter()
                    .filter(|c| c.workspace == repo.workspace && c.slug == repo.slug)
                    .filter(|c| Some(c.pull_request) == pr)
                    .map(|c| Self::comment_json(base, c))
                    .collect();
                Reply::json(
                    200,
                    json!({"pagelen": 100, "size": values.len(), "page": 1, "values": values}),
                )
            }
            "GET /2.0/repositories/{workspace}/{slug}/pullrequests/{id}/comments/{comment_id}"
            | "PUT /2.0/repositories/{workspace}/{slug}/pullrequests/{id}/comments/{comment_id}" => {
                let edit_deleted = *self.edit_deleted.lock().unwrap();
                let mut comments = self.comments.lock().unwrap();
                let Some(comment) = comments.iter_mut().find(|c| {
                    Some(c.id) == comment_id
                        && c.workspace == repo.workspace
                        && c.slug == repo.slug
                        && Some(c.pull_request) == pr
                }) else {
                    return error(404, "No PullRequestComment matches the given query.");
                };
                if route.starts_with("PUT") {
                    if comment.deleted && edit_deleted == EditDeleted::NotFound {
                        return error(404, "No PullRequestComment matches the given query.");
                    }
                    let Some(raw) = body["content"]["raw"].as_str() else {
                        return Reply::json(
                            400,
                            json!({"type": "error", "error": {"message": "Bad request",
                                   "fields": {"content": ["This field is required."]}}}),
                        );
                    };
                    comment.raw = raw.to_string();
                    comment.edits += 1;
                }
                Reply::json(200, Self::comment_json(base, comment))
            }
            _ => unreachable!("every route is handled"),
        }
    }
}

impl Protocol for Bitbucket {
    const ROUTES: &'static [&'static str] = &[
        "GET /2.0/user",
        "GET /2.0/repositories/{workspace}/{slug}",
        "POST /2.0/repositories/{workspace}/{slug}/issues",
        "GET /2.0/repositories/{workspace}/{slug}/issues/{id}",
        "POST /2.0/repositories/{workspace}/{slug}/pullrequests/{id}/comments",
        "GET /2.0/repositories/{workspace}/{slug}/pullrequests/{id}/comments",
        "GET /2.0/repositories/{workspace}/{slug}/pullrequests/{id}/comments/{comment_id}",
        "PUT /2.0/repositories/{workspace}/{slug}/pullrequests/{id}/comments/{comment_id}",
    ];

    fn answer(&self, call: &Call<'_>) -> Reply {
        if let Err(refused) = self.check_auth(call) {
            return refused;
        }
        match call.route {
            Some(route) => self.route(call, route),
            None => error(404, "Resource not found"),
        }
    }
}

fn rendered(raw: &str) -> Value {
    json!({"type": "rendered", "raw": raw, "markup": "markdown", "html": format!("<p>{raw}</p>")})
}

/// Bitbucket's error body: `{"type":"error","error":{"message":…}}`.
pub fn error(status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"type": "error", "error": {"message": message}}),
    )
}

fn unauthorized(message: &str) -> Reply {
    error(401, message).header("www-authenticate", "Basic realm=\"Bitbucket.org HTTP\"")
}

/// 429 "Rate limit for this resource has been exceeded", with `Retry-After` only if given
/// (whether Bitbucket sends it is UNCONFIRMED).
pub fn rate_limited(retry_after_secs: Option<u64>) -> Behaviour {
    let reply = error(429, "Rate limit for this resource has been exceeded");
    Behaviour::Respond(match retry_after_secs {
        Some(secs) => reply.header("retry-after", secs),
        None => reply,
    })
}

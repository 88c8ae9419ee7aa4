//! Fake GitLab REST v4 (`outbound-apis.md` §3 and §9), serving `/api/v4` at the fake's origin
//! (the origin is the instance `baseUrl`).
//!
//! Projects are found by numeric id or by the URL-encoded full path, one path segment
//! (`acme%2Fplatform%2Fapi`): routing is done on the raw request path, so a client that
//! decodes `%2F` into `/` hits no route and gets GitLab's `{"error":"404 Not Found"}`.
//! Auth is `PRIVATE-TOKEN: <t>` or `Authorization: Bearer <t>` (OAuth tokens: Bearer only).
//!
//! Decisions where the reference is silent or UNCONFIRMED:
//! - a missing note `body` answers `{"message":"400 (Bad request) \"body\" not given"}` like a
//!   missing `title`; an empty one `{"message":{"note":["can't be blank"]}}`;
//! - the description limit is 1,048,576 characters and the note limit 1,000,000, both answered
//!   with the `{"message":{"<field>":["is too long (maximum is N characters)"]}}` shape;
//! - an unknown or deleted note answers `{"message":"404 Note Not Found"}` (GitLab's
//!   `not_found!("Note")`); merge requests are not modelled, any positive iid exists;
//! - normal answers carry gitlab.com's informational `RateLimit-*` headers.

use std::sync::Mutex;

use serde_json::{Value, json};

use super::common::{Behaviour, Call, Fake, Protocol, Reply, bearer_token, char_len};
use super::common::{http_date, rfc3339, unix_now};

/// A personal access token with the `api` scope (works as PRIVATE-TOKEN and as Bearer).
pub const GITLAB_TOKEN: &str = "glpat-fakeGOOD0123456789abcd";
/// An OAuth2 access token: accepted only as `Authorization: Bearer`.
pub const GITLAB_OAUTH_TOKEN: &str =
    "fakeoauth0123456789abcdef0123456789abcdef0123456789abcdef01234567";
/// A token with only `read_api`: writes answer 403 `insufficient_scope`.
pub const GITLAB_READ_TOKEN: &str = "glpat-fakeREAD0123456789abcd";
/// `acme/shop`, issues enabled.
pub const GITLAB_PROJECT_ID: u64 = 42;
pub const GITLAB_PROJECT_PATH: &str = "acme/shop";
/// `acme/platform/api`, a project in a subgroup (two `%2F` when encoded).
pub const GITLAB_NESTED_PROJECT_ID: u64 = 43;
pub const GITLAB_NESTED_PROJECT_PATH: &str = "acme/platform/api";
/// `acme/docs`, issues disabled (creates answer 403).
pub const GITLAB_NO_ISSUES_PROJECT_ID: u64 = 44;
pub const GITLAB_NO_ISSUES_PROJECT_PATH: &str = "acme/docs";

/// A project the fake serves.
#[derive(Clone, Debug)]
pub struct GlProject {
    pub id: u64,
    pub path_with_namespace: String,
    pub issues_enabled: bool,
}

/// An issue created through the fake.
#[derive(Clone, Debug)]
pub struct GlIssue {
    pub id: u64,
    pub iid: u64,
    pub project_id: u64,
    pub title: String,
    pub description: Option<String>,
    pub labels: Vec<String>,
}

/// A merge-request note posted through the fake, with its current body.
#[derive(Clone, Debug)]
pub struct GlNote {
    pub id: u64,
    pub project_id: u64,
    pub merge_request_iid: u64,
    pub body: String,
    pub edits: usize,
    /// Deleted by a person (test hook [`GitLab::delete_note`]); reads and edits answer 404.
    pub deleted: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    PrivateToken,
    Bearer,
}

struct Token {
    value: String,
    oauth: bool,
    can_write: bool,
}

/// The GitLab protocol and its state.
pub struct GitLab {
    tokens: Mutex<Vec<Token>>,
    projects: Mutex<Vec<GlProject>>,
    issues: Mutex<Vec<GlIssue>>,
    notes: Mutex<Vec<GlNote>>,
    observed: Mutex<u64>,
}

pub type FakeGitLab = Fake<GitLab>;

impl Fake<GitLab> {
    /// A GitLab instance with the three projects above and the three tokens above.
    pub async fn spawn() -> Self {
        let gitlab = GitLab {
            tokens: Mutex::new(Vec::new()),
            projects: Mutex::new(Vec::new()),
            issues: Mutex::new(Vec::new()),
            notes: Mutex::new(Vec::new()),
            observed: Mutex::new(0),
        };
        gitlab.add_token(GITLAB_TOKEN, true);
        gitlab.add_token(GITLAB_READ_TOKEN, false);
        gitlab.tokens.lock().unwrap().push(Token {
            value: GITLAB_OAUTH_TOKEN.to_string(),
            oauth: true,
            can_write: true,
        });
        gitlab.add_project(GITLAB_PROJECT_ID, GITLAB_PROJECT_PATH, true);
        gitlab.add_project(GITLAB_NESTED_PROJECT_ID, GITLAB_NESTED_PROJECT_PATH, true);
        gitlab.add_project(
            GITLAB_NO_ISSUES_PROJECT_ID,
            GITLAB_NO_ISSUES_PROJECT_PATH,
            false,
        );
        Fake::start(gitlab).await
    }

    /// The instance URL (an integration's `baseUrl`); the API is at `{base_url}/api/v4`.
    pub fn base_url(&self) -> String {
        self.url.clone()
    }

    /// `{base_url}/api/v4`.
    pub fn api_url(&self) -> String {
        format!("{}/api/v4", self.url)
    }
}

impl GitLab {
    /// Accepts a personal/project/group access token; `can_write: false` means `read_api` only.
    pub fn add_token(&self, token: &str, can_write: bool) {
        self.tokens.lock().unwrap().push(Token {
            value: token.to_string(),
            oauth: false,
            can_write,
        });
    }

    /// Stops accepting every token.
    pub fn revoke_all(&self) {
        self.tokens.lock().unwrap().clear();
    }

    pub fn add_project(&self, id: u64, path_with_namespace: &str, issues_enabled: bool) {
        self.projects.lock().unwrap().push(GlProject {
            id,
            path_with_namespace: path_with_namespace.to_string(),
            issues_enabled,
        });
    }

    pub fn issues(&self) -> Vec<GlIssue> {
        self.issues.lock().unwrap().clone()
    }

    pub fn notes(&self) -> Vec<GlNote> {
        self.notes.lock().unwrap().clone()
    }

    pub fn note(&self, id: u64) -> Option<GlNote> {
        self.notes().into_iter().find(|n| n.id == id)
    }

    /// Deletes a note as a person would: reads and edits then answer 404.
    pub fn delete_note(&self, id: u64) {
        let mut notes = self.notes.lock().unwrap();
        for note in notes.iter_mut().filter(|n| n.id == id) {
            note.deleted = true;
        }
    }

    /// Finds the project named by the raw `:id` segment: digits, or the encoded full path.
    fn project(&self, raw_id: &str) -> Option<GlProject> {
        let projects = self.projects.lock().unwrap();
        if raw_id.bytes().all(|b| b.is_ascii_digit()) {
            let id = raw_id.parse::<u64>().ok()?;
            return projects.iter().find(|p| p.id == id).cloned();
        }
        let path = super::common::percent_decode(raw_id);
        projects
            .iter()
            .find(|p| p.path_with_namespace.eq_ignore_ascii_case(&path))
            .cloned()
    }

    fn authenticate(&self, call: &Call<'_>) -> Option<bool> {
        let (token, via) = match call.seen.header("private-token") {
            Some(token) => (token, Via::PrivateToken),
            None => (bearer_token(call.seen)?, Via::Bearer),
        };
        let tokens = self.tokens.lock().unwrap();
        tokens
            .iter()
            .find(|t| t.value == token && !(t.oauth && via == Via::PrivateToken))
            .map(|t| t.can_write)
    }

    fn project_json(base: &str, project: &GlProject) -> Value {
        let path = &project.path_with_namespace;
        let name = path.rsplit('/').next().unwrap_or(path);
        json!({
            "id": project.id, "name": name, "path": name,
            "path_with_namespace": path, "name_with_namespace": path.replace('/', " / "),
            "web_url": format!("{base}/{path}"), "default_branch": "main",
            "issues_enabled": project.issues_enabled, "merge_requests_enabled": true,
            "visibility": "private",
        })
    }

    fn note_json(note: &GlNote) -> Value {
        json!({
            "id": note.id, "type": null, "body": note.body, "system": false,
            "author": {"id": 1001, "username": "orgd-bot", "name": "orgd bot"},
            "created_at": rfc3339(unix_now()), "updated_at": rfc3339(unix_now()),
            "noteable_id": 500_000 + note.merge_request_iid, "noteable_type": "MergeRequest",
            "noteable_iid": note.merge_request_iid, "project_id": note.project_id,
            "resolvable": false, "confidential": false, "internal": false,
        })
    }

    fn route(&self, call: &Call<'_>, route: &str, can_write: bool) -> Reply {
        let base = call.base;
        match route {
            "GET /api/v4/user" => {
                return Reply::json(
                    200,
                    json!({"id": 1001, "username": "orgd-bot", "name": "orgd bot", "state": "active",
                           "web_url": format!("{base}/orgd-bot")}),
                );
            }
            "GET /api/v4/personal_access_tokens/self" => {
                let scopes = if can_write { "api" } else { "read_api" };
                return Reply::json(
                    200,
                    json!({"id": 77, "name": "orgd", "revoked": false, "active": true,
                           "scopes": [scopes], "user_id": 1001, "expires_at": "2027-12-31"}),
                );
            }
            _ => {}
        }
        let Some(project) = self.project(call.raw("id")) else {
            return message(404, "404 Project Not Found");
        };
        if !route.starts_with("GET ") && !can_write {
            return Reply::json(
                403,
                json!({"error": "insufficient_scope",
                       "error_description": "The request requires higher privileges than provided by the access token.",
                       "scope": "api"}),
            );
        }
        let body = call.json();
        let iid = call.param("iid").parse::<u64>().ok().filter(|n| *n > 0);
        let note_id = call.param("note_id").parse::<u64>().ok();
        match route {
            "GET /api/v4/projects/{id}" => Reply::json(200, Self::project_json(base, &project)),
            "POST /api/v4/projects/{id}/issues" => {
                if !project.issues_enabled {
                    return message(403, "403 Forbidden");
                }
                if let Some(invalid) = required_text(body, "title", "title", 255)
                    .or_else(|| optional_text(body, "description", 1_048_576))
                {
                    return invalid;
                }
                let labels: Vec<String> = match &body["labels"] {
                    Value::String(s) => s
                        .split(',')
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_string)
                        .collect(),
                    Value::Array(items) => items
                        .iter()
                        .filter_map(|l| l.as_str().map(str::to_string))
                        .collect(),
                    _ => Vec::new(),
                };
                let mut issues = self.issues.lock().unwrap();
                let iid = 1 + issues.iter().filter(|i| i.project_id == project.id).count() as u64;
                let issue = GlIssue {
                    id: 180_000_001 + issues.len() as u64,
                    iid,
                    project_id: project.id,
                    title: body["title"].as_str().unwrap_or_default().to_string(),
                    description: body["description"].as_str().map(str::to_string),
                    labels,
                };
                issues.push(issue.clone());
                Reply::json(
                    201,
                    json!({
                        "id": issue.id, "iid": issue.iid, "project_id": issue.project_id,
                        "title": issue.title, "description": issue.description,
                        "state": "opened", "labels": issue.labels,
                        "created_at": rfc3339(unix_now()),
                        "author": {"id": 1001, "username": "orgd-bot"},
                        "web_url": format!("{base}/{}/-/issues/{}", project.path_with_namespace, issue.iid),
                    }),
                )
            }
            "POST /api/v4/projects/{id}/merge_requests/{iid}/notes" => {
                let Some(iid) = iid else {
                    return message(404, "404 Merge Request Not Found");
                };
                if let Some(invalid) = required_text(body, "body", "note", 1_000_000) {
                    return invalid;
                }
                let mut notes = self.notes.lock().unwrap();
                let note = GlNote {
                    id: 1_900_000_001 + notes.len() as u64,
                    project_id: project.id,
                    merge_request_iid: iid,
                    body: body["body"].as_str().unwrap_or_default().to_string(),
                    edits: 0,
                    deleted: false,
                };
                notes.push(note.clone());
                Reply::json(201, Self::note_json(&note))
            }
            "GET /api/v4/projects/{id}/merge_requests/{iid}/notes" => {
                let notes = self.notes();
                // GitLab lists notes newest first by default.
                let listed: Vec<Value> = notes
                    .iter()
                    .rev()
                    .filter(|n| n.project_id == project.id && Some(n.merge_request_iid) == iid)
                    .filter(|n| !n.deleted)
                    .map(Self::note_json)
                    .collect();
                Reply::json(200, Value::Array(listed))
            }
            "GET /api/v4/projects/{id}/merge_requests/{iid}/notes/{note_id}"
            | "PUT /api/v4/projects/{id}/merge_requests/{iid}/notes/{note_id}" => {
                let mut notes = self.notes.lock().unwrap();
                let Some(note) = notes.iter_mut().find(|n| {
                    Some(n.id) == note_id
                        && n.project_id == project.id
                        && Some(n.merge_request_iid) == iid
                        && !n.deleted
                }) else {
                    return message(404, "404 Note Not Found");
                };
                if route.starts_with("PUT") {
                    if let Some(invalid) = required_text(body, "body", "note", 1_000_000) {
                        return invalid;
                    }
                    note.body = body["body"].as_str().unwrap_or_default().to_string();
                    note.edits += 1;
                }
                Reply::json(200, Self::note_json(note))
            }
            _ => unreachable!("every route is handled"),
        }
    }
}

impl Protocol for GitLab {
    const ROUTES: &'static [&'static str] = &[
        "GET /api/v4/user",
        "GET /api/v4/personal_access_tokens/self",
        "GET /api/v4/projects/{id}",
        "POST /api/v4/projects/{id}/issues",
        "POST /api/v4/projects/{id}/merge_requests/{iid}/notes",
        "GET /api/v4/projects/{id}/merge_requests/{iid}/notes",
        "GET /api/v4/projects/{id}/merge_requests/{iid}/notes/{note_id}",
        "PUT /api/v4/projects/{id}/merge_requests/{iid}/notes/{note_id}",
    ];

    fn answer(&self, call: &Call<'_>) -> Reply {
        let Some(route) = call.route else {
            return Reply::json(404, json!({"error": "404 Not Found"}));
        };
        let Some(can_write) = self.authenticate(call) else {
            return message(401, "401 Unauthorized");
        };
        let reply = self.route(call, route, can_write);
        let observed = {
            let mut observed = self.observed.lock().unwrap();
            *observed += 1;
            *observed
        };
        reply
            .header("ratelimit-name", "throttle_authenticated_api")
            .header("ratelimit-limit", 2000)
            .header("ratelimit-observed", observed)
            .header("ratelimit-remaining", 2000u64.saturating_sub(observed))
            .header("ratelimit-reset", unix_now() + 60)
    }
}

/// GitLab's `{"message": "<text>"}` error.
pub fn message(status: u16, text: &str) -> Reply {
    Reply::json(status, json!({"message": text}))
}

/// GitLab's validation error: `{"message":{"<field>":["<problem>"]}}`.
pub fn field_error(field: &str, problem: &str) -> Reply {
    Reply::json(400, json!({"message": {field: [problem]}}))
}

/// A required string parameter (`param`), validated as the model attribute `field`.
fn required_text(body: &Value, param: &str, field: &str, max: usize) -> Option<Reply> {
    match &body[param] {
        Value::Null => Some(message(
            400,
            &format!("400 (Bad request) \"{param}\" not given"),
        )),
        Value::String(s) if s.trim().is_empty() => Some(field_error(field, "can't be blank")),
        value if char_len(value) > max => Some(field_error(
            field,
            &format!("is too long (maximum is {max} characters)"),
        )),
        Value::String(_) => None,
        _ => Some(message(400, &format!("{param} is invalid"))),
    }
}

fn optional_text(body: &Value, field: &str, max: usize) -> Option<Reply> {
    (char_len(&body[field]) > max)
        .then(|| field_error(field, &format!("is too long (maximum is {max} characters)")))
}

/// gitlab.com's throttle: 429 JSON with `Retry-After`, `RateLimit-Reset` (epoch seconds) and
/// `RateLimit-ResetTime` (HTTP date).
pub fn rate_limited(retry_after_secs: u64) -> Behaviour {
    Behaviour::Respond(throttle_headers(
        Reply::json(
            429,
            json!({"message": {"error": "This endpoint has been requested too many times. Try again later."}}),
        ),
        retry_after_secs,
    ))
}

/// A self-managed instance's throttle: the same headers with the plain-text body `Retry later`.
pub fn rate_limited_plain(retry_after_secs: u64) -> Behaviour {
    Behaviour::Respond(throttle_headers(
        Reply::text(429, "Retry later\n"),
        retry_after_secs,
    ))
}

fn throttle_headers(reply: Reply, retry_after_secs: u64) -> Reply {
    let reset = unix_now() + retry_after_secs;
    reply
        .header("retry-after", retry_after_secs)
        .header("ratelimit-name", "throttle_authenticated_api")
        .header("ratelimit-limit", 2000)
        .header("ratelimit-observed", 2001)
        .header("ratelimit-remaining", 0)
        .header("ratelimit-reset", reset)
        .header("ratelimit-resettime", http_date(reset))
}

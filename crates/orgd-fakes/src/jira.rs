//! Fake Jira Cloud REST v3 (`outbound-apis.md` §1): the site API and the same REST paths under
//! the api.atlassian.com gateway prefix `/ex/jira/{cloudId}` used by scoped API tokens.
//!
//! Auth is Basic `email:token`. A *classic* token works on the site and on the gateway; a
//! *scoped* token gets 401 on the site and works only through the gateway, which is how orgd
//! learns which kind it was given. Issue descriptions must be valid ADF trees (checked by
//! [`validate_adf`]), so tests can trust the bodies recorded here.
//!
//! Decisions where the reference is silent or UNCONFIRMED:
//! - the 429 body is UNCONFIRMED: this fake sends Jira's usual error shape
//!   `{"errorMessages":["Rate limit exceeded."],"errors":{}}`; clients must classify by status;
//! - an ADF document that is a `doc` but breaks the schema (e.g. an empty text node) gets
//!   400 `{"errors":{"description":"INVALID_INPUT"}}` (Jira's usual terse answer); the precise
//!   reason is kept in [`Jira::rejections`];
//! - a gateway call with an unknown cloud id answers 404 `{"errorMessages":["Site not found."]}`;
//! - an unknown REST path answers 404 `{"message":"null for uri: …","status-code":404}`;
//! - `/myself` for a scoped (service-account) token has `accountType:"app"` and a null
//!   `emailAddress` (the reference says it may be null);
//! - the createmeta issue-type page is `{"issueTypes":[…],"maxResults","startAt","total"}`.

use std::sync::Mutex;

use serde_json::{Map, Value, json};

use super::common::{Behaviour, Call, Fake, Protocol, Reply, basic_credentials, iso_minute};
use super::common::{char_len, unix_now};

pub const JIRA_EMAIL: &str = "orgd-bot@example.com";
/// A classic (unscoped) API token for [`JIRA_EMAIL`]: accepted on the site and the gateway.
pub const JIRA_CLASSIC_TOKEN: &str = "ATATT3xFfGF0classicGOOD0123456789abcdefABCDEF";
/// A scoped API token for [`JIRA_EMAIL`]: 401 on the site, accepted on the gateway only.
pub const JIRA_SCOPED_TOKEN: &str = "ATATT3xFfGF0scopedGOOD0123456789abcdefABCDEF";
/// What `GET /_edge/tenant_info` answers, and the only cloud id the gateway serves.
pub const JIRA_CLOUD_ID: &str = "4f8b2c6d-1a3e-4b5f-9c7d-0e1f2a3b4c5d";
pub const JIRA_ACCOUNT_ID: &str = "712020:0e1f2a3b-4c5d-6e7f-8a9b-0c1d2e3f4a5b";
/// Project with id 10000 and the issue types Bug, Task, Story, Epic, Subtask.
pub const JIRA_PROJECT: &str = "ENG";
/// Project with id 10001 and only Task and Story (no Bug).
pub const JIRA_OTHER_PROJECT: &str = "OPS";

/// Issue types this fake knows, with Jira's usual ids.
const ISSUE_TYPES: [(&str, &str, bool); 5] = [
    ("10000", "Epic", false),
    ("10001", "Task", false),
    ("10002", "Story", false),
    ("10003", "Subtask", true),
    ("10004", "Bug", false),
];

/// Fields a create may set; any other field gets Jira's "cannot be set" 400.
const SETTABLE_FIELDS: [&str; 12] = [
    "project",
    "issuetype",
    "summary",
    "description",
    "labels",
    "priority",
    "assignee",
    "reporter",
    "components",
    "parent",
    "environment",
    "duedate",
];

/// Which Jira API a token may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Works on `https://<site>.atlassian.net` and on the gateway.
    Classic,
    /// Works only on the gateway `https://api.atlassian.com/ex/jira/<cloudId>`.
    Scoped,
}

/// A project the fake serves.
#[derive(Clone, Debug)]
pub struct JiraProject {
    pub id: String,
    pub key: String,
    pub name: String,
    /// Names of the issue types available in this project.
    pub issue_types: Vec<String>,
}

/// An issue created through the fake.
#[derive(Clone, Debug)]
pub struct JiraIssue {
    pub id: String,
    /// `<PROJECT>-<n>`, numbered per project from 1.
    pub key: String,
    pub project: String,
    pub issue_type: String,
    /// The `fields` object exactly as sent (the ADF description is in `fields["description"]`).
    pub fields: Value,
    /// Whether the create came through the gateway prefix.
    pub via_gateway: bool,
}

/// The Jira protocol and its state.
pub struct Jira {
    credentials: Mutex<Vec<(String, String, TokenKind)>>,
    projects: Mutex<Vec<JiraProject>>,
    issues: Mutex<Vec<JiraIssue>>,
    rejections: Mutex<Vec<String>>,
}

pub type FakeJira = Fake<Jira>;

impl Fake<Jira> {
    /// A Jira site with [`JIRA_PROJECT`] and [`JIRA_OTHER_PROJECT`], accepting
    /// [`JIRA_EMAIL`] with [`JIRA_CLASSIC_TOKEN`] (classic) and [`JIRA_SCOPED_TOKEN`] (scoped).
    pub async fn spawn() -> Self {
        let jira = Jira {
            credentials: Mutex::new(vec![
                (
                    JIRA_EMAIL.to_string(),
                    JIRA_CLASSIC_TOKEN.to_string(),
                    TokenKind::Classic,
                ),
                (
                    JIRA_EMAIL.to_string(),
                    JIRA_SCOPED_TOKEN.to_string(),
                    TokenKind::Scoped,
                ),
            ]),
            projects: Mutex::new(Vec::new()),
            issues: Mutex::new(Vec::new()),
            rejections: Mutex::new(Vec::new()),
        };
        jira.add_project(
            "10000",
            JIRA_PROJECT,
            "Engineering",
            &["Bug", "Task", "Story", "Epic", "Subtask"],
        );
        jira.add_project(
            "10001",
            JIRA_OTHER_PROJECT,
            "Operations",
            &["Task", "Story"],
        );
        Fake::start(jira).await
    }

    /// The site URL (`JIRA_API_URL`, replacing `https://{domain}`).
    pub fn site_url(&self) -> String {
        self.url.clone()
    }

    /// The gateway URL (`JIRA_GATEWAY_URL`, replacing `https://api.atlassian.com`); the client
    /// appends `/ex/jira/{cloudId}/rest/api/3/...`.
    pub fn gateway_url(&self) -> String {
        self.url.clone()
    }
}

impl Jira {
    /// Accepts `email` with `token` from now on.
    pub fn add_credential(&self, email: &str, token: &str, kind: TokenKind) {
        let mut credentials = self.credentials.lock().unwrap();
        credentials.push((email.to_string(), token.to_string(), kind));
    }

    /// Stops accepting every credential (as if the tokens had been revoked).
    pub fn revoke_all(&self) {
        self.credentials.lock().unwrap().clear();
    }

    /// Adds a project with the given issue type names (from Epic, Task, Story, Subtask, Bug).
    pub fn add_project(&self, id: &str, key: &str, name: &str, issue_types: &[&str]) {
        self.projects.lock().unwrap().push(JiraProject {
            id: id.to_string(),
            key: key.to_string(),
            name: name.to_string(),
            issue_types: issue_types.iter().map(|t| t.to_string()).collect(),
        });
    }

    /// Issues created so far, oldest first.
    pub fn issues(&self) -> Vec<JiraIssue> {
        self.issues.lock().unwrap().clone()
    }

    /// The issue with this key.
    pub fn issue(&self, key: &str) -> Option<JiraIssue> {
        self.issues().into_iter().find(|i| i.key == key)
    }

    /// Why each refused create was refused, oldest first: the `errors` object answered, plus
    /// the precise ADF problem behind an `INVALID_INPUT`.
    pub fn rejections(&self) -> Vec<String> {
        self.rejections.lock().unwrap().clone()
    }

    fn authenticate(&self, call: &Call<'_>) -> Option<TokenKind> {
        let (email, token) = basic_credentials(call.seen)?;
        let credentials = self.credentials.lock().unwrap();
        credentials
            .iter()
            .find(|(e, t, _)| e.eq_ignore_ascii_case(&email) && *t == token)
            .map(|(_, _, kind)| *kind)
    }

    fn project(&self, key_or_id: &str) -> Option<JiraProject> {
        let projects = self.projects.lock().unwrap();
        projects
            .iter()
            .find(|p| p.key.eq_ignore_ascii_case(key_or_id) || p.id == key_or_id)
            .cloned()
    }

    fn project_json(&self, project: &JiraProject, api: &str) -> Value {
        json!({
            "self": format!("{api}/rest/api/3/project/{}", project.id),
            "id": project.id, "key": project.key, "name": project.name,
            "projectTypeKey": "software", "simplified": false, "style": "classic",
            "isPrivate": false,
            "issueTypes": issue_types_json(project, api),
        })
    }

    fn create_issue(&self, call: &Call<'_>, api: &str, via_gateway: bool) -> Reply {
        let Some(body) = call.seen.json.as_ref().filter(|b| b.is_object()) else {
            return errors_reply(
                400,
                &["Invalid request payload. Refer to the REST API documentation and try again."],
                Map::new(),
            );
        };
        let fields = body["fields"].as_object().cloned().unwrap_or_default();
        let mut errors = Map::new();
        let mut adf_problem = None;
        let mut reject = |field: &str, message: &str| {
            errors.insert(field.to_string(), json!(message));
        };

        let project_ref = &fields.get("project").cloned().unwrap_or(Value::Null);
        let project = project_ref["key"]
            .as_str()
            .or(project_ref["id"].as_str())
            .and_then(|k| self.project(k));
        if project.is_none() {
            reject("project", "Specify a valid project ID or key");
        }

        let type_ref = fields.get("issuetype").cloned().unwrap_or(Value::Null);
        let issue_type = match (type_ref["name"].as_str(), type_ref["id"].as_str()) {
            (None, None) => {
                reject("issuetype", "Specify an issue type");
                None
            }
            (name, id) => {
                let found = ISSUE_TYPES.iter().find(|(tid, tname, _)| {
                    name.is_some_and(|n| n.eq_ignore_ascii_case(tname)) || id == Some(*tid)
                });
                let available = found.filter(|(_, tname, _)| {
                    project
                        .as_ref()
                        .is_none_or(|p| p.issue_types.iter().any(|t| t == tname))
                });
                if available.is_none() {
                    reject("issuetype", "The issue type selected is invalid.");
                }
                available.map(|(_, tname, _)| tname.to_string())
            }
        };

        let summary = fields.get("summary").cloned().unwrap_or(Value::Null);
        match summary.as_str() {
            None | Some("") => reject("summary", "You must specify a summary of the issue."),
            Some(s) if s.contains('\n') || s.contains('\r') => reject(
                "summary",
                "The summary is invalid because it contains newline characters.",
            ),
            Some(_) if char_len(&summary) > 255 => {
                reject("summary", "Summary must be less than 255 characters.")
            }
            Some(_) => {}
        }

        if let Some(description) = fields.get("description").filter(|d| !d.is_null()) {
            if description["type"] != "doc" {
                reject(
                    "description",
                    "Operation value must be an Atlassian Document (see the Atlassian Document Format)",
                );
            } else if let Err(problem) = validate_adf(description) {
                adf_problem = Some(problem);
                reject("description", "INVALID_INPUT");
            }
        }

        if let Some(labels) = fields.get("labels") {
            match labels.as_array() {
                None => reject("labels", "Field 'labels' must be an array of strings."),
                Some(labels) => {
                    for label in labels {
                        match label.as_str() {
                            Some(l) if !l.is_empty() && !l.contains(char::is_whitespace) => {}
                            _ => reject(
                                "labels",
                                &format!(
                                    "The label '{}' contains spaces which is invalid.",
                                    label.as_str().unwrap_or_default()
                                ),
                            ),
                        }
                    }
                }
            }
        }

        for name in fields.keys() {
            if !SETTABLE_FIELDS.contains(&name.as_str()) {
                reject(
                    name,
                    &format!(
                        "Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
                    ),
                );
            }
        }

        let (Some(project), Some(issue_type), true) = (project, issue_type, errors.is_empty())
        else {
            let mut reason = Value::Object(errors.clone()).to_string();
            if let Some(problem) = adf_problem {
                reason.push_str(&format!(" (ADF: {problem})"));
            }
            self.rejections.lock().unwrap().push(reason);
            return errors_reply(400, &[], errors);
        };

        let mut issues = self.issues.lock().unwrap();
        let id = (10_000 + issues.len()).to_string();
        let number = issues.iter().filter(|i| i.project == project.key).count() + 1;
        let key = format!("{}-{number}", project.key);
        issues.push(JiraIssue {
            id: id.clone(),
            key: key.clone(),
            project: project.key,
            issue_type,
            fields: Value::Object(fields),
            via_gateway,
        });
        Reply::json(
            201,
            json!({"id": id, "key": key, "self": format!("{api}/rest/api/3/issue/{id}")}),
        )
    }
}

impl Protocol for Jira {
    const ROUTES: &'static [&'static str] = &[
        "GET /_edge/tenant_info",
        "GET /rest/api/3/myself",
        "GET /rest/api/3/project/{key}",
        "POST /rest/api/3/issue",
        "GET /rest/api/3/issue/{key}",
        "GET /rest/api/3/issue/createmeta/{project}/issuetypes",
    ];

    fn route_path<'p>(&self, path: &'p str) -> Option<&'p str> {
        match path.strip_prefix("/ex/jira/") {
            None => Some(path),
            Some(rest) => rest
                .find('/')
                .map(|slash| &rest[slash..])
                .filter(|p| p.starts_with("/rest/")),
        }
    }

    fn answer(&self, call: &Call<'_>) -> Reply {
        let gateway_cloud_id = call
            .seen
            .path
            .strip_prefix("/ex/jira/")
            .map(|rest| rest.split('/').next().unwrap_or_default().to_string());
        if gateway_cloud_id
            .as_deref()
            .is_some_and(|id| id != JIRA_CLOUD_ID)
        {
            return errors_reply(404, &["Site not found."], Map::new());
        }
        let api = match &gateway_cloud_id {
            Some(id) => format!("{}/ex/jira/{id}", call.base),
            None => call.base.to_string(),
        };
        let Some(route) = call.route else {
            return Reply::json(
                404,
                json!({"message": format!("null for uri: {}{}", call.base, call.seen.path), "status-code": 404}),
            );
        };
        if route == "GET /_edge/tenant_info" {
            return Reply::json(200, json!({"cloudId": JIRA_CLOUD_ID}));
        }

        let kind = match self.authenticate(call) {
            Some(TokenKind::Scoped) if gateway_cloud_id.is_none() => None,
            kind => kind,
        };
        let Some(kind) = kind else {
            return unauthorized();
        };

        match route {
            "GET /rest/api/3/myself" => {
                let (account_type, email) = match kind {
                    TokenKind::Classic => ("atlassian", json!(JIRA_EMAIL)),
                    TokenKind::Scoped => ("app", Value::Null),
                };
                Reply::json(
                    200,
                    json!({
                        "self": format!("{api}/rest/api/3/user?accountId={JIRA_ACCOUNT_ID}"),
                        "accountId": JIRA_ACCOUNT_ID, "accountType": account_type,
                        "emailAddress": email, "displayName": "orgd bot", "active": true,
                        "timeZone": "Etc/UTC", "locale": "en_US",
                    }),
                )
            }
            "GET /rest/api/3/project/{key}" => match self.project(&call.param("key")) {
                Some(project) => Reply::json(200, self.project_json(&project, &api)),
                None => project_not_found(&call.param("key")),
            },
            "GET /rest/api/3/issue/createmeta/{project}/issuetypes" => {
                match self.project(&call.param("project")) {
                    Some(project) => {
                        let types = issue_types_json(&project, &api);
                        let total = types.as_array().map_or(0, Vec::len);
                        Reply::json(
                            200,
                            json!({"issueTypes": types, "maxResults": 50, "startAt": 0, "total": total}),
                        )
                    }
                    None => project_not_found(&call.param("project")),
                }
            }
            "POST /rest/api/3/issue" => self.create_issue(call, &api, gateway_cloud_id.is_some()),
            "GET /rest/api/3/issue/{key}" => {
                let wanted = call.param("key");
                let issues = self.issues.lock().unwrap();
                match issues.iter().find(|i| i.key == wanted || i.id == wanted) {
                    Some(issue) => Reply::json(
                        200,
                        json!({"id": issue.id, "key": issue.key,
                               "self": format!("{api}/rest/api/3/issue/{}", issue.id),
                               "fields": issue.fields}),
                    ),
                    None => errors_reply(
                        404,
                        &["Issue does not exist or you do not have permission to see it."],
                        Map::new(),
                    ),
                }
            }
            _ => unreachable!("every route is handled"),
        }
    }
}

fn issue_types_json(project: &JiraProject, api: &str) -> Value {
    let types: Vec<Value> = ISSUE_TYPES
        .iter()
        .filter(|(_, name, _)| project.issue_types.iter().any(|t| t == name))
        .map(|(id, name, subtask)| {
            json!({"self": format!("{api}/rest/api/3/issuetype/{id}"), "id": id, "name": name,
                   "description": "", "subtask": subtask,
                   "hierarchyLevel": if *subtask { -1 } else if *name == "Epic" { 1 } else { 0 }})
        })
        .collect();
    Value::Array(types)
}

/// Jira's error shape: `{"errorMessages":[…],"errors":{"<field>":"<msg>"}}`.
pub fn errors_reply(status: u16, messages: &[&str], errors: Map<String, Value>) -> Reply {
    Reply::json(
        status,
        json!({"errorMessages": messages, "errors": Value::Object(errors)}),
    )
}

fn unauthorized() -> Reply {
    Reply::json(
        401,
        json!({"message": "Client must be authenticated to access this resource.", "status-code": 401}),
    )
}

fn project_not_found(key: &str) -> Reply {
    errors_reply(
        404,
        &[&format!("No project could be found with key '{key}'.")],
        Map::new(),
    )
}

/// Jira's burst limit: 429 with `Retry-After` (seconds), `X-RateLimit-Reset` (ISO 8601 to the
/// minute), `X-RateLimit-Limit`/`-Remaining` and `RateLimit-Reason`.
pub fn rate_limited(retry_after_secs: u64) -> Behaviour {
    Behaviour::Respond(
        errors_reply(429, &["Rate limit exceeded."], Map::new())
            .header("retry-after", retry_after_secs)
            .header(
                "x-ratelimit-reset",
                iso_minute(unix_now() + retry_after_secs),
            )
            .header("x-ratelimit-limit", 100)
            .header("x-ratelimit-remaining", 0)
            .header("ratelimit-reason", "jira-burst-based"),
    )
}

/// A 503 carrying `Retry-After`, which the reference says to handle like a 429.
pub fn unavailable(retry_after_secs: u64) -> Behaviour {
    Behaviour::Respond(
        errors_reply(503, &["Service unavailable."], Map::new())
            .header("retry-after", retry_after_secs),
    )
}

// ---------------------------------------------------------------------------------------------
// ADF validation
// ---------------------------------------------------------------------------------------------

/// Checks an Atlassian Document Format tree against the parts of the schema orgd uses:
/// `doc` v1 → headings (level 1–6), paragraphs, code blocks (plain text only), bullet and ordered
/// lists, blockquotes and rules; inline text (never empty) with strong/em/strike/underline/code/
/// link marks (`code` combines only with `link`), hard breaks, mentions, emoji and inline cards.
/// Returns where and why the tree is invalid.
pub fn validate_adf(doc: &Value) -> Result<(), String> {
    if doc["type"] != "doc" {
        return Err("root: type must be \"doc\"".into());
    }
    if doc["version"] != 1 {
        return Err("root: version must be 1".into());
    }
    let content = doc["content"]
        .as_array()
        .ok_or("root: content must be an array")?;
    for (i, block) in content.iter().enumerate() {
        validate_block(block, &format!("content[{i}]"))?;
    }
    Ok(())
}

fn children<'a>(node: &'a Value, at: &str, required: bool) -> Result<&'a [Value], String> {
    match &node["content"] {
        Value::Null if !required => Ok(&[]),
        Value::Array(items) if !(required && items.is_empty()) => Ok(items),
        _ => Err(format!("{at}: content must be a non-empty array")),
    }
}

fn validate_block(node: &Value, at: &str) -> Result<(), String> {
    let kind = node["type"]
        .as_str()
        .ok_or(format!("{at}: node without a type"))?;
    match kind {
        "paragraph" => validate_inlines(children(node, at, false)?, at),
        "heading" => {
            let level = node["attrs"]["level"].as_u64().unwrap_or(0);
            if !(1..=6).contains(&level) {
                return Err(format!("{at}: heading level must be 1-6"));
            }
            validate_inlines(children(node, at, false)?, at)
        }
        "codeBlock" => {
            let language = &node["attrs"]["language"];
            if !(language.is_null() || language.is_string()) {
                return Err(format!("{at}: codeBlock language must be a string"));
            }
            for (i, child) in children(node, at, false)?.iter().enumerate() {
                let here = format!("{at}.content[{i}]");
                if child["type"] != "text" {
                    return Err(format!("{here}: codeBlock may only contain text"));
                }
                if !child["marks"].is_null() {
                    return Err(format!("{here}: no marks are allowed inside codeBlock"));
                }
                validate_text(child, &here)?;
            }
            Ok(())
        }
        "bulletList" | "orderedList" => {
            if kind == "orderedList" {
                let order = &node["attrs"]["order"];
                if !(order.is_null() || order.as_u64().is_some()) {
                    return Err(format!("{at}: orderedList order must be a number >= 0"));
                }
            }
            for (i, item) in children(node, at, true)?.iter().enumerate() {
                let here = format!("{at}.content[{i}]");
                if item["type"] != "listItem" {
                    return Err(format!("{here}: lists may only contain listItem"));
                }
                let parts = children(item, &here, true)?;
                if !matches!(parts[0]["type"].as_str(), Some("paragraph" | "codeBlock")) {
                    return Err(format!(
                        "{here}: a listItem must start with a paragraph or codeBlock"
                    ));
                }
                validate_nested(parts, &here)?;
            }
            Ok(())
        }
        "blockquote" => validate_nested(children(node, at, true)?, at),
        "rule" => match node["content"] {
            Value::Null => Ok(()),
            _ => Err(format!("{at}: rule has no content")),
        },
        other => Err(format!("{at}: unsupported block node {other:?}")),
    }
}

fn validate_nested(blocks: &[Value], at: &str) -> Result<(), String> {
    for (i, block) in blocks.iter().enumerate() {
        let here = format!("{at}.content[{i}]");
        let kind = block["type"].as_str().unwrap_or_default();
        if !matches!(
            kind,
            "paragraph" | "bulletList" | "orderedList" | "codeBlock"
        ) {
            return Err(format!("{here}: {kind:?} is not allowed here"));
        }
        validate_block(block, &here)?;
    }
    Ok(())
}

fn validate_inlines(nodes: &[Value], at: &str) -> Result<(), String> {
    for (i, node) in nodes.iter().enumerate() {
        let here = format!("{at}.content[{i}]");
        match node["type"].as_str() {
            Some("text") => validate_text(node, &here)?,
            Some("hardBreak") => {}
            Some("mention") if node["attrs"]["id"].is_string() => {}
            Some("emoji") if node["attrs"]["shortName"].is_string() => {}
            Some("inlineCard") if node["attrs"]["url"].is_string() => {}
            other => return Err(format!("{here}: unsupported inline node {other:?}")),
        }
    }
    Ok(())
}

fn validate_text(node: &Value, at: &str) -> Result<(), String> {
    match node["text"].as_str() {
        None => return Err(format!("{at}: text node without text")),
        Some("") => return Err(format!("{at}: empty text node")),
        Some(_) => {}
    }
    let marks = match &node["marks"] {
        Value::Null => return Ok(()),
        Value::Array(marks) => marks,
        _ => return Err(format!("{at}: marks must be an array")),
    };
    let mut kinds = Vec::new();
    for mark in marks {
        let kind = mark["type"].as_str().unwrap_or_default();
        match kind {
            "strong" | "em" | "strike" | "underline" | "code" => {}
            "link" => {
                if mark["attrs"]["href"].as_str().is_none_or(str::is_empty) {
                    return Err(format!("{at}: link mark without href"));
                }
            }
            other => return Err(format!("{at}: unsupported mark {other:?}")),
        }
        if kinds.contains(&kind) {
            return Err(format!("{at}: duplicate {kind} mark"));
        }
        kinds.push(kind);
    }
    if kinds.contains(&"code") && kinds.iter().any(|k| !matches!(*k, "code" | "link")) {
        return Err(format!("{at}: the code mark combines only with link"));
    }
    Ok(())
}

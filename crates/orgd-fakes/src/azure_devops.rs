//! Fake Azure DevOps Services REST API 7.1 (`outbound-apis.md` §4 and §9): projects, work item
//! types, work items created with a JSON Patch document, and pull-request threads and comments.
//!
//! Auth is `Authorization: Basic base64("<any user>:<PAT>")`. A rejected credential answers
//! like Azure DevOps does: 401 only when the client sent `X-TFS-FedAuthRedirect: Suppress`,
//! otherwise a 203 with an HTML sign-in page (or, if configured, a 302 to the sign-in page).
//! Every call except `connectionData` needs an `api-version` (query or `Accept` parameter).
//! Route segments match case-insensitively, as on Azure DevOps.
//!
//! Decisions where the reference is silent or UNCONFIRMED:
//! - creating a thread answers 200 (ADO convention); enum fields come back as strings
//!   (`"commentType":"text"`, `"status":"active"`) whether the client sent numbers or names;
//!   comment ids restart at 1 in every thread; `isDeleted` is always present;
//! - a deleted comment keeps its content and reads `isDeleted: true`; editing it answers 200 by
//!   default (the comment stays deleted) or 404 with [`EditDeleted::NotFound`];
//! - `validateOnly=true` answers 200 with `rev: 0`, the fields and no `id`, and stores nothing;
//! - a field the work item type does not have answers 400 `TF51535: Cannot find field …`;
//!   a title over 255 characters answers `TF401320 … Error code: MaxLength, InvalidTooLong.`;
//! - an unknown organization answers 404 JSON (`NotFoundException`); an unknown route a 404
//!   HTML page; the 401 body is plain text `TF400813`;
//! - api-version: `1.0`–`7.1` are accepted, `7.2-preview…` too; `7.2` without `-preview` and
//!   anything above are refused with 400.

use std::sync::Mutex;

use serde_json::{Map, Value, json};

use super::common::{Behaviour, Call, EditDeleted, Fake, Protocol, Reply, basic_credentials};
use super::common::{char_len, rfc3339, unix_now};

pub const ADO_PAT: &str = "fakeadopatgood0123456789abcdefghijklmnopqrstuvwxyz01";
pub const ADO_ORG: &str = "acme";
/// An Agile-process project (Bug, Task, User Story, Feature, Epic).
pub const ADO_PROJECT: &str = "Shop";
pub const ADO_PROJECT_ID: &str = "6ce954b1-ce1f-45d1-b94d-e6bf2464ba2c";
/// A Basic-process project with a space in its name (Epic, Issue, Task: no Bug).
pub const ADO_BASIC_PROJECT: &str = "Platform Team";
pub const ADO_BASIC_PROJECT_ID: &str = "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6";
/// A repository of [`ADO_PROJECT`], by name and by id.
pub const ADO_REPO: &str = "shop-web";
pub const ADO_REPO_ID: &str = "3411ebc1-d5aa-464f-9615-0b527bc66719";
/// The collection guid in `_links.html.href` (`wi.aspx?pcguid=…&id=…`).
pub const ADO_COLLECTION_ID: &str = "c1b2a3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";

const COMMON_FIELDS: [&str; 10] = [
    "System.Title",
    "System.Description",
    "System.Tags",
    "System.AssignedTo",
    "System.AreaPath",
    "System.IterationPath",
    "System.History",
    "System.State",
    "System.Reason",
    "Microsoft.VSTS.Common.Priority",
];
const BUG_FIELDS: [&str; 3] = [
    "Microsoft.VSTS.TCM.ReproSteps",
    "Microsoft.VSTS.TCM.SystemInfo",
    "Microsoft.VSTS.Common.Severity",
];
const AGILE_TYPES: [&str; 5] = ["Bug", "Task", "User Story", "Feature", "Epic"];
const BASIC_TYPES: [&str; 3] = ["Epic", "Issue", "Task"];
const COMMENT_TYPES: [&str; 4] = ["unknown", "text", "codeChange", "system"];
const THREAD_STATUSES: [&str; 7] = [
    "unknown", "active", "fixed", "wontFix", "closed", "byDesign", "pending",
];

/// How a rejected credential is answered when the client did not send
/// `X-TFS-FedAuthRedirect: Suppress` (with it, the answer is always 401).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthFailure {
    /// 203 Non-Authoritative Information with an HTML sign-in page.
    #[default]
    NonAuthoritative,
    /// 302 to the sign-in page.
    Redirect,
}

/// A project the fake serves.
#[derive(Clone, Debug)]
pub struct AdoProject {
    pub id: String,
    pub name: String,
    pub work_item_types: Vec<String>,
}

/// A work item created through the fake.
#[derive(Clone, Debug)]
pub struct AdoWorkItem {
    pub id: u64,
    pub project: String,
    pub work_item_type: String,
    /// The fields after applying the patch, plus the system fields the server sets.
    pub fields: Map<String, Value>,
    /// The JSON Patch document exactly as sent.
    pub patch: Value,
}

/// A comment in a pull-request thread, with its current content.
#[derive(Clone, Debug)]
pub struct AdoComment {
    /// 1, 2, ... within its thread.
    pub id: u64,
    pub parent_comment_id: u64,
    pub content: String,
    pub comment_type: String,
    pub edits: usize,
    /// Deleted by a person (test hook [`AzureDevOps::delete_comment`]).
    pub deleted: bool,
}

/// A pull-request thread.
#[derive(Clone, Debug)]
pub struct AdoThread {
    pub id: u64,
    pub project: String,
    pub repository: String,
    pub pull_request: u64,
    pub status: String,
    pub comments: Vec<AdoComment>,
}

/// The Azure DevOps protocol and its state.
pub struct AzureDevOps {
    pats: Mutex<Vec<String>>,
    projects: Mutex<Vec<AdoProject>>,
    /// `(project name, repository name, repository id)`.
    repos: Mutex<Vec<(String, String, String)>>,
    work_items: Mutex<Vec<AdoWorkItem>>,
    threads: Mutex<Vec<AdoThread>>,
    auth_failure: Mutex<AuthFailure>,
    edit_deleted: Mutex<EditDeleted>,
}

pub type FakeAzureDevOps = Fake<AzureDevOps>;

impl Fake<AzureDevOps> {
    /// Organization [`ADO_ORG`] with [`ADO_PROJECT`] (and its repository [`ADO_REPO`]) and
    /// [`ADO_BASIC_PROJECT`], accepting [`ADO_PAT`].
    pub async fn spawn() -> Self {
        let ado = AzureDevOps {
            pats: Mutex::new(vec![ADO_PAT.to_string()]),
            projects: Mutex::new(Vec::new()),
            repos: Mutex::new(Vec::new()),
            work_items: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            auth_failure: Mutex::new(AuthFailure::default()),
            edit_deleted: Mutex::new(EditDeleted::default()),
        };
        ado.add_project(ADO_PROJECT_ID, ADO_PROJECT, &AGILE_TYPES);
        ado.add_project(ADO_BASIC_PROJECT_ID, ADO_BASIC_PROJECT, &BASIC_TYPES);
        ado.add_repo(ADO_PROJECT, ADO_REPO, ADO_REPO_ID);
        Fake::start(ado).await
    }

    /// The API origin (`AZURE_DEVOPS_API_URL`, replacing `https://dev.azure.com`).
    pub fn api_url(&self) -> String {
        self.url.clone()
    }
}

impl AzureDevOps {
    pub fn add_pat(&self, pat: &str) {
        self.pats.lock().unwrap().push(pat.to_string());
    }

    /// Stops accepting every PAT (expired or revoked).
    pub fn revoke_all(&self) {
        self.pats.lock().unwrap().clear();
    }

    pub fn add_project(&self, id: &str, name: &str, work_item_types: &[&str]) {
        self.projects.lock().unwrap().push(AdoProject {
            id: id.to_string(),
            name: name.to_string(),
            work_item_types: work_item_types.iter().map(|t| t.to_string()).collect(),
        });
    }

    pub fn add_repo(&self, project: &str, name: &str, id: &str) {
        let mut repos = self.repos.lock().unwrap();
        repos.push((project.to_string(), name.to_string(), id.to_string()));
    }

    /// How rejected credentials are answered without `X-TFS-FedAuthRedirect: Suppress`.
    pub fn set_auth_failure(&self, failure: AuthFailure) {
        *self.auth_failure.lock().unwrap() = failure;
    }

    /// What an edit of a deleted comment answers.
    pub fn set_edit_deleted(&self, mode: EditDeleted) {
        *self.edit_deleted.lock().unwrap() = mode;
    }

    pub fn work_items(&self) -> Vec<AdoWorkItem> {
        self.work_items.lock().unwrap().clone()
    }

    pub fn threads(&self) -> Vec<AdoThread> {
        self.threads.lock().unwrap().clone()
    }

    pub fn comment(&self, thread_id: u64, comment_id: u64) -> Option<AdoComment> {
        let threads = self.threads.lock().unwrap();
        let thread = threads.iter().find(|t| t.id == thread_id)?;
        thread.comments.iter().find(|c| c.id == comment_id).cloned()
    }

    /// Deletes a comment as a person would: it then reads `isDeleted: true`.
    pub fn delete_comment(&self, thread_id: u64, comment_id: u64) {
        let mut threads = self.threads.lock().unwrap();
        for thread in threads.iter_mut().filter(|t| t.id == thread_id) {
            for comment in thread.comments.iter_mut().filter(|c| c.id == comment_id) {
                comment.deleted = true;
            }
        }
    }

    fn authenticated(&self, call: &Call<'_>) -> bool {
        let Some((_, pat)) = basic_credentials(call.seen) else {
            return false;
        };
        self.pats.lock().unwrap().contains(&pat)
    }

    fn project(&self, name_or_id: &str) -> Option<AdoProject> {
        let projects = self.projects.lock().unwrap();
        projects
            .iter()
            .find(|p| {
                p.name.eq_ignore_ascii_case(name_or_id) || p.id.eq_ignore_ascii_case(name_or_id)
            })
            .cloned()
    }

    fn repo(&self, project: &AdoProject, name_or_id: &str) -> Option<(String, String)> {
        let repos = self.repos.lock().unwrap();
        repos
            .iter()
            .find(|(p, name, id)| {
                *p == project.name
                    && (name.eq_ignore_ascii_case(name_or_id)
                        || id.eq_ignore_ascii_case(name_or_id))
            })
            .map(|(_, name, id)| (name.clone(), id.clone()))
    }

    fn rejected(&self, call: &Call<'_>) -> Reply {
        let suppressed = call
            .seen
            .header("x-tfs-fedauthredirect")
            .is_some_and(|v| v.eq_ignore_ascii_case("suppress"));
        if suppressed {
            return Reply::text(
                401,
                "TF400813: The user '' is not authorized to access this resource.",
            )
            .header("www-authenticate", "Basic realm=\"https://dev.azure.com/\"");
        }
        let sign_in = format!(
            "https://spsprodweu5.vssps.visualstudio.com/_signin?realm=dev.azure.com&reply_to={}",
            call.base
        );
        let page = format!(
            "<!DOCTYPE html><html><head><title>Azure DevOps Services | Sign In</title></head>\
             <body><a href=\"{sign_in}\">Sign in</a></body></html>"
        );
        match *self.auth_failure.lock().unwrap() {
            AuthFailure::NonAuthoritative => Reply::html(203, page),
            AuthFailure::Redirect => Reply::html(302, page).header("location", sign_in),
        }
    }

    fn work_item_type_json(&self, call: &Call<'_>, project: &AdoProject, name: &str) -> Value {
        let fields: Vec<Value> = type_fields(name)
            .iter()
            .map(|f| json!({"referenceName": f, "name": f.rsplit('.').next(), "alwaysRequired": *f == "System.Title"}))
            .collect();
        json!({
            "name": name, "referenceName": format!("Microsoft.VSTS.WorkItemTypes.{}", name.replace(' ', "")),
            "description": "", "color": "CC293D", "isDisabled": false, "fields": fields,
            "url": format!("{}/{}/{}/_apis/wit/workItemTypes/{}", call.base, call.param("org"), project.id, name.replace(' ', "%20")),
        })
    }

    fn work_item_json(&self, call: &Call<'_>, project: &AdoProject, item: &AdoWorkItem) -> Value {
        let org = call.param("org");
        let url = format!(
            "{}/{org}/{}/_apis/wit/workItems/{}",
            call.base, project.id, item.id
        );
        json!({
            "id": item.id, "rev": 1, "fields": Value::Object(item.fields.clone()),
            "_links": {
                "self": {"href": url},
                "workItemUpdates": {"href": format!("{url}/updates")},
                "workItemRevisions": {"href": format!("{url}/revisions")},
                "html": {"href": format!("{}/{org}/web/wi.aspx?pcguid={ADO_COLLECTION_ID}&id={}", call.base, item.id)},
            },
            "url": url,
        })
    }

    fn create_work_item(&self, call: &Call<'_>, project: &AdoProject) -> Reply {
        let content_type = call.seen.header("content-type").unwrap_or_default();
        if !content_type
            .to_ascii_lowercase()
            .starts_with("application/json-patch+json")
        {
            return ado_error(
                415,
                &format!(
                    "The request indicated a Content-Type of \"{content_type}\" for method type \"POST\" \
                     which is not supported. Valid content types for this method are: application/json-patch+json."
                ),
                "VssRequestContentTypeNotSupportedException",
            );
        }
        let type_name = call.param("type");
        let type_name = type_name.strip_prefix('$').unwrap_or(&type_name);
        let Some(type_name) = project
            .work_item_types
            .iter()
            .find(|t| t.eq_ignore_ascii_case(type_name))
            .cloned()
        else {
            return type_not_found(type_name, &project.name);
        };
        let Some(ops) = call
            .seen
            .json
            .as_ref()
            .and_then(Value::as_array)
            .filter(|ops| {
                ops.iter().all(|op| {
                    op["path"].is_string()
                        && matches!(
                            op["op"].as_str(),
                            Some("add" | "replace" | "remove" | "test" | "copy" | "move")
                        )
                })
            })
        else {
            return ado_error(
                400,
                "You must pass a valid patch document in the body of the request.",
                "VssPropertyValidationException",
            );
        };

        let allowed = type_fields(&type_name);
        let mut fields = Map::new();
        for op in ops {
            let path = op["path"].as_str().unwrap_or_default();
            let kind = op["op"].as_str().unwrap_or_default();
            if let Some(field) = path.strip_prefix("/fields/") {
                if !allowed.iter().any(|f| f.eq_ignore_ascii_case(field)) {
                    return ado_error(
                        400,
                        &format!("TF51535: Cannot find field {field}."),
                        "WorkItemTrackingFieldDefinitionNotFoundException",
                    );
                }
                match kind {
                    "add" | "replace" => {
                        fields.insert(field.to_string(), op["value"].clone());
                    }
                    "remove" => {
                        fields.remove(field);
                    }
                    _ => {}
                }
            } else if !(path.starts_with("/multilineFieldsFormat/")
                || path.starts_with("/relations/")
                || matches!(path, "/id" | "/rev"))
            {
                return ado_error(
                    400,
                    &format!("The path {path} is not a valid work item path."),
                    "PatchOperationFailedException",
                );
            }
        }
        let title = fields.get("System.Title").cloned().unwrap_or(Value::Null);
        let title_problem = match title.as_str() {
            None | Some("") => Some("Required, InvalidEmpty"),
            Some(_) if char_len(&title) > 255 => Some("MaxLength, InvalidTooLong"),
            Some(_) => None,
        };
        if let Some(problem) = title_problem {
            return Reply::json(
                400,
                json!({"$id": "1", "innerException": null,
                       "message": format!("TF401320: Rule Error for field Title. Error code: {problem}."),
                       "typeName": "Microsoft.TeamFoundation.WorkItemTracking.Server.RuleValidationException, Microsoft.TeamFoundation.WorkItemTracking.Server",
                       "typeKey": "RuleValidationException", "errorCode": 600171, "eventId": 3200}),
            );
        }
        let now = rfc3339(unix_now());
        for (name, value) in [
            ("System.TeamProject", json!(project.name)),
            ("System.AreaPath", json!(project.name)),
            ("System.IterationPath", json!(project.name)),
            ("System.WorkItemType", json!(type_name)),
            ("System.State", json!("New")),
            ("System.Reason", json!("New")),
            ("System.CreatedDate", json!(now)),
            (
                "System.CreatedBy",
                json!({"displayName": "orgd bot", "uniqueName": "orgd-bot@example.com"}),
            ),
        ] {
            fields.entry(name).or_insert(value);
        }
        if call
            .seen
            .query_param("validateOnly")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Reply::json(200, json!({"rev": 0, "fields": Value::Object(fields)}));
        }
        let mut items = self.work_items.lock().unwrap();
        let item = AdoWorkItem {
            id: 5001 + items.len() as u64,
            project: project.name.clone(),
            work_item_type: type_name,
            fields,
            patch: call.json().clone(),
        };
        items.push(item.clone());
        drop(items);
        Reply::json(200, self.work_item_json(call, project, &item))
    }

    fn thread_json(call: &Call<'_>, repo_id: &str, thread: &AdoThread) -> Value {
        let url = format!(
            "{}/{}/{}/_apis/git/repositories/{repo_id}/pullRequests/{}/threads/{}",
            call.base,
            call.param("org"),
            call.param("project"),
            thread.pull_request,
            thread.id
        );
        let comments: Vec<Value> = thread
            .comments
            .iter()
            .map(|c| Self::comment_json(&url, c))
            .collect();
        json!({
            "id": thread.id, "publishedDate": rfc3339(unix_now()), "lastUpdatedDate": rfc3339(unix_now()),
            "comments": comments, "status": thread.status, "threadContext": null,
            "properties": {}, "identities": null, "isDeleted": false,
            "_links": {"self": {"href": url}},
        })
    }

    fn comment_json(thread_url: &str, comment: &AdoComment) -> Value {
        json!({
            "id": comment.id, "parentCommentId": comment.parent_comment_id,
            "author": {"displayName": "orgd bot", "uniqueName": "orgd-bot@example.com",
                       "id": "8d4f6c2a-0000-4000-8000-00000000b07d"},
            "content": comment.content, "commentType": comment.comment_type,
            "publishedDate": rfc3339(unix_now()), "lastUpdatedDate": rfc3339(unix_now()),
            "lastContentUpdatedDate": rfc3339(unix_now()), "isDeleted": comment.deleted,
            "usersLiked": [],
            "_links": {"self": {"href": format!("{thread_url}/comments/{}", comment.id)}},
        })
    }

    fn pull_request_threads(&self, call: &Call<'_>, route: &str, project: &AdoProject) -> Reply {
        let Some((repo_name, repo_id)) = self.repo(project, &call.param("repo")) else {
            return ado_error(
                404,
                &format!(
                    "TF401019: The Git repository with name or identifier {} does not exist or you do not have permissions for the operation you are attempting.",
                    call.param("repo")
                ),
                "GitRepositoryNotFoundException",
            );
        };
        let Some(pr) = call.param("pr").parse::<u64>().ok().filter(|n| *n > 0) else {
            return ado_error(
                404,
                "TF401180: The requested pull request was not found.",
                "GitPullRequestNotFoundException",
            );
        };
        let thread_id = call.param("thread").parse::<u64>().ok();
        let comment_id = call.param("comment").parse::<u64>().ok();
        let body = call.json();
        let mut threads = self.threads.lock().unwrap();
        let in_pr = |t: &AdoThread| t.repository == repo_name && t.pull_request == pr;
        match route {
            "POST /{org}/{project}/_apis/git/repositories/{repo}/pullRequests/{pr}/threads" => {
                let comments = body["comments"].as_array().filter(|c| !c.is_empty());
                let valid = comments.is_some_and(|comments| {
                    comments.iter().all(|c| {
                        c["content"].is_string()
                            && enum_name(&c["commentType"], &COMMENT_TYPES, 1).is_some()
                    })
                });
                let status = enum_name(&body["status"], &THREAD_STATUSES, 1);
                let (Some(comments), true, Some(status)) = (comments, valid, status) else {
                    return ado_error(
                        400,
                        "The thread must contain at least one comment with content.",
                        "InvalidArgumentValueException",
                    );
                };
                let thread = AdoThread {
                    id: 101 + threads.len() as u64,
                    project: project.name.clone(),
                    repository: repo_name,
                    pull_request: pr,
                    status: status.to_string(),
                    comments: comments
                        .iter()
                        .enumerate()
                        .map(|(i, c)| AdoComment {
                            id: i as u64 + 1,
                            parent_comment_id: c["parentCommentId"].as_u64().unwrap_or(0),
                            content: c["content"].as_str().unwrap_or_default().to_string(),
                            comment_type: enum_name(&c["commentType"], &COMMENT_TYPES, 1)
                                .unwrap_or("text")
                                .to_string(),
                            edits: 0,
                            deleted: false,
                        })
                        .collect(),
                };
                threads.push(thread.clone());
                Reply::json(200, Self::thread_json(call, &repo_id, &thread))
            }
            "GET /{org}/{project}/_apis/git/repositories/{repo}/pullRequests/{pr}/threads" => {
                let listed: Vec<Value> = threads
                    .iter()
                    .filter(|t| in_pr(t))
                    .map(|t| Self::thread_json(call, &repo_id, t))
                    .collect();
                Reply::json(200, json!({"value": listed, "count": listed.len()}))
            }
            _ => {
                let Some(thread) = threads
                    .iter_mut()
                    .find(|t| in_pr(t) && Some(t.id) == thread_id)
                else {
                    return ado_error(
                        404,
                        &format!(
                            "TF401181: The pull request thread {} was not found.",
                            call.param("thread")
                        ),
                        "GitPullRequestThreadNotFoundException",
                    );
                };
                if route.ends_with("/threads/{thread}") {
                    return Reply::json(200, Self::thread_json(call, &repo_id, thread));
                }
                let thread_url =
                    Self::thread_json(call, &repo_id, thread)["_links"]["self"]["href"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                let edit_deleted = *self.edit_deleted.lock().unwrap();
                let Some(comment) = thread
                    .comments
                    .iter_mut()
                    .find(|c| Some(c.id) == comment_id)
                else {
                    return comment_not_found();
                };
                if route.starts_with("PATCH") {
                    if comment.deleted && edit_deleted == EditDeleted::NotFound {
                        return comment_not_found();
                    }
                    let Some(content) = body["content"].as_str() else {
                        return ado_error(
                            400,
                            "The comment content must be specified.",
                            "InvalidArgumentValueException",
                        );
                    };
                    comment.content = content.to_string();
                    comment.edits += 1;
                }
                Reply::json(200, Self::comment_json(&thread_url, comment))
            }
        }
    }
}

impl Protocol for AzureDevOps {
    const ROUTES: &'static [&'static str] = &[
        "GET /{org}/_apis/connectionData",
        "GET /{org}/_apis/projects/{project}",
        "GET /{org}/{project}/_apis/wit/workitemtypes",
        "GET /{org}/{project}/_apis/wit/workitemtypes/{type}",
        "POST /{org}/{project}/_apis/wit/workitems/{type}",
        "GET /{org}/{project}/_apis/wit/workitems/{id}",
        "POST /{org}/{project}/_apis/git/repositories/{repo}/pullRequests/{pr}/threads",
        "GET /{org}/{project}/_apis/git/repositories/{repo}/pullRequests/{pr}/threads",
        "GET /{org}/{project}/_apis/git/repositories/{repo}/pullRequests/{pr}/threads/{thread}",
        "GET /{org}/{project}/_apis/git/repositories/{repo}/pullRequests/{pr}/threads/{thread}/comments/{comment}",
        "PATCH /{org}/{project}/_apis/git/repositories/{repo}/pullRequests/{pr}/threads/{thread}/comments/{comment}",
    ];
    const CASE_INSENSITIVE: bool = true;

    fn answer(&self, call: &Call<'_>) -> Reply {
        if !self.authenticated(call) {
            return self.rejected(call);
        }
        let Some(route) = call.route else {
            return Reply::html(
                404,
                "<!DOCTYPE html><html><body><h1>404 - Page not found</h1></body></html>",
            );
        };
        if !call.param("org").eq_ignore_ascii_case(ADO_ORG) {
            return ado_error(
                404,
                &format!(
                    "The organization '{}' could not be found.",
                    call.param("org")
                ),
                "NotFoundException",
            );
        }
        if route == "GET /{org}/_apis/connectionData" {
            let user = json!({"id": "8d4f6c2a-0000-4000-8000-00000000b07d",
                              "providerDisplayName": "orgd bot", "isActive": true});
            return Reply::json(
                200,
                json!({"authenticatedUser": user, "authorizedUser": user,
                       "instanceId": ADO_COLLECTION_ID, "deploymentType": "hosted"}),
            );
        }
        if let Some(refused) = check_api_version(call) {
            return refused;
        }
        let Some(project) = self.project(&call.param("project")) else {
            if route == "GET /{org}/_apis/projects/{project}" {
                return ado_error(
                    404,
                    &format!(
                        "TF200016: The following project does not exist: {}. Verify that the name of the project is correct and that the project exists on the specified Azure DevOps Server.",
                        call.param("project")
                    ),
                    "ProjectDoesNotExistWithNameException",
                );
            }
            return ado_error(
                404,
                &format!(
                    "VS800075: The project with id 'vstfs:///Classification/TeamProject/{}' does not exist, or you do not have permission to access it.",
                    call.param("project")
                ),
                "ProjectDoesNotExistException",
            );
        };
        match route {
            "GET /{org}/_apis/projects/{project}" => Reply::json(
                200,
                json!({
                    "id": project.id, "name": project.name, "description": "",
                    "url": format!("{}/{}/_apis/projects/{}", call.base, call.param("org"), project.id),
                    "state": "wellFormed", "revision": 11, "visibility": "private",
                    "lastUpdateTime": rfc3339(unix_now()),
                    "defaultTeam": {"id": "0f1e2d3c-0000-4000-8000-000000007ea1", "name": format!("{} Team", project.name)},
                }),
            ),
            "GET /{org}/{project}/_apis/wit/workitemtypes" => {
                let types: Vec<Value> = project
                    .work_item_types
                    .iter()
                    .map(|t| self.work_item_type_json(call, &project, t))
                    .collect();
                Reply::json(200, json!({"count": types.len(), "value": types}))
            }
            "GET /{org}/{project}/_apis/wit/workitemtypes/{type}" => {
                let wanted = call.param("type");
                match project
                    .work_item_types
                    .iter()
                    .find(|t| t.eq_ignore_ascii_case(&wanted))
                {
                    Some(name) => Reply::json(200, self.work_item_type_json(call, &project, name)),
                    None => type_not_found(&wanted, &project.name),
                }
            }
            "POST /{org}/{project}/_apis/wit/workitems/{type}" => {
                self.create_work_item(call, &project)
            }
            "GET /{org}/{project}/_apis/wit/workitems/{id}" => {
                let id = call.param("id").parse::<u64>().ok();
                let items = self.work_items();
                match items
                    .iter()
                    .find(|i| Some(i.id) == id && i.project == project.name)
                {
                    Some(item) => Reply::json(200, self.work_item_json(call, &project, item)),
                    None => ado_error(
                        404,
                        &format!(
                            "TF401232: Work item {} does not exist, or you do not have permissions to read it.",
                            call.param("id")
                        ),
                        "WorkItemUnauthorizedAccessException",
                    ),
                }
            }
            _ => self.pull_request_threads(call, route, &project),
        }
    }
}

/// The fields a work item type has (Bugs add Repro Steps, System Info and Severity).
fn type_fields(type_name: &str) -> Vec<&'static str> {
    let mut fields = COMMON_FIELDS.to_vec();
    if type_name.eq_ignore_ascii_case("Bug") {
        fields.extend(BUG_FIELDS);
    }
    fields
}

/// The name of an enum sent as a number or a name, `default` when absent.
fn enum_name(value: &Value, names: &[&'static str], default: usize) -> Option<&'static str> {
    match value {
        Value::Null => Some(names[default]),
        Value::Number(n) => n.as_u64().and_then(|i| names.get(i as usize).copied()),
        Value::String(s) => names.iter().copied().find(|n| n.eq_ignore_ascii_case(s)),
        _ => None,
    }
}

/// Refuses a missing or out-of-range `api-version` (query parameter or `Accept` parameter).
fn check_api_version(call: &Call<'_>) -> Option<Reply> {
    let from_accept = call.seen.header("accept").and_then(|accept| {
        accept
            .split(';')
            .find_map(|p| p.trim().strip_prefix("api-version="))
            .map(str::to_string)
    });
    let Some(version) = call.seen.query_param("api-version").or(from_accept) else {
        return Some(ado_error(
            400,
            &format!(
                "No api-version was supplied for the \"{}\" request. The version must be supplied either as part of the Accept header (e.g. \"application/json; api-version=1.0\") or as a query parameter (e.g. '?api-version=1.0').",
                call.seen.method
            ),
            "VssVersionNotSpecifiedException",
        ));
    };
    let (number, preview) = match version.split_once("-preview") {
        Some((number, _)) => (number, true),
        None => (version.as_str(), false),
    };
    let parsed = number
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?)));
    match parsed {
        Some(v) if ((1, 0)..=(7, 1)).contains(&v) => None,
        Some((7, 2)) if preview => None,
        Some((7, 2)) => Some(ado_error(
            400,
            &format!(
                "The requested version \"{version}\" of the resource is under preview. The -preview flag must be supplied in the api-version for such requests. For example: \"7.2-preview\""
            ),
            "VssInvalidPreviewVersionException",
        )),
        _ => Some(ado_error(
            400,
            &format!(
                "The requested REST API version of {version} is out of range for this server. The latest REST API version for this server is 7.2."
            ),
            "VssVersionOutOfRangeException",
        )),
    }
}

/// Azure DevOps' error body: `{"$id","innerException","message","typeName","typeKey","errorCode","eventId"}`.
pub fn ado_error(status: u16, message: &str, type_key: &str) -> Reply {
    Reply::json(
        status,
        json!({"$id": "1", "innerException": null, "message": message,
               "typeName": format!("Microsoft.VisualStudio.Services.WebApi.{type_key}, Microsoft.VisualStudio.Services.WebApi"),
               "typeKey": type_key, "errorCode": 0, "eventId": 3000}),
    )
}

fn type_not_found(type_name: &str, project: &str) -> Reply {
    ado_error(
        404,
        &format!(
            "VS402323: Work item type {type_name} does not exist in project {project} or you do not have permission to access it."
        ),
        "WorkItemTypeNotFoundException",
    )
}

fn comment_not_found() -> Reply {
    ado_error(
        404,
        "The requested pull request comment was not found.",
        "GitPullRequestCommentNotFoundException",
    )
}

fn rate_headers(reply: Reply, retry_after_secs: u64, remaining: u64) -> Reply {
    reply
        .header("retry-after", retry_after_secs)
        .header("x-ratelimit-resource", "Core")
        .header("x-ratelimit-limit", 200)
        .header("x-ratelimit-remaining", remaining)
        .header("x-ratelimit-reset", unix_now() + retry_after_secs)
}

/// The "delayed" stage: the work is done and answered normally, with `Retry-After`,
/// `X-RateLimit-Delay` and the other `X-RateLimit-*` headers on the 200.
pub fn delayed(retry_after_secs: u64) -> Behaviour {
    let headers = rate_headers(Reply::empty(200), retry_after_secs, 12)
        .header("x-ratelimit-delay", "0.500")
        .headers;
    Behaviour::WithHeaders(headers)
}

/// The "blocked" stage: 429 `TF400733` with `Retry-After` and `X-RateLimit-*`.
pub fn blocked(retry_after_secs: u64) -> Behaviour {
    Behaviour::Respond(rate_headers(
        ado_error(
            429,
            "TF400733: The request has been canceled: Request was blocked due to exceeding usage of resource 'Core' in namespace 'User'.",
            "RequestBlockedException",
        ),
        retry_after_secs,
        0,
    ))
}

//! Fake Linear and Monday.com servers on loopback that speak the documented protocols
//! (`reference/tracker-apis.md` §1.7 and §2.5): they check the auth header forms, answer the
//! operations orgd sends, count what they create, and take injected answers per test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub const LINEAR_KEY: &str = "lin_api_good0123456789abcdefGOOD";
pub const LINEAR_OAUTH_TOKEN: &str = "lin_oauth_good0123456789abcdef";
pub const ENG_TEAM_ID: &str = "9cfb482a-81e3-4154-b5b9-2c805e70a02d";
pub const OPS_TEAM_ID: &str = "1b2c3d4e-0000-4000-8000-00000000abcd";
pub const MONDAY_TOKEN: &str = "monday-good-token-0123456789abcdef";
pub const MONDAY_BOARD: &str = "1234567890";

/// What the fake does instead of (or around) its normal answer.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answer this instead of doing anything.
    Respond {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Value,
    },
    /// Wait, then answer normally.
    DelayBefore(Duration),
    /// Do the work (create the ticket), then wait before answering.
    DelayAfter(Duration),
}

impl Behaviour {
    pub fn status(status: u16, body: Value) -> Self {
        Self::Respond {
            status,
            headers: Vec::new(),
            body,
        }
    }
}

struct Injection {
    /// A substring of the GraphQL document (`issueCreate`, `create_item`, ...) or `*`.
    op: &'static str,
    remaining: usize,
    behaviour: Behaviour,
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub authorization: Option<String>,
    pub api_version: Option<String>,
    pub content_type: Option<String>,
    pub query: String,
    pub variables: Value,
}

/// Status, extra headers and JSON body of a fake's answer.
type Answer = (StatusCode, Vec<(&'static str, String)>, Value);
/// A protocol: what the fake answers to one request.
type Handler = fn(Arc<FakeState>, Seen) -> Answer;

#[derive(Default)]
pub struct FakeState {
    seen: Mutex<Vec<Seen>>,
    injections: Mutex<Vec<Injection>>,
    /// Authorization header values accepted.
    accepted: Mutex<Vec<String>>,
    /// Linear: created issues; Monday: created items.
    created: Mutex<Vec<Value>>,
    /// Monday: updates added to items.
    updates: Mutex<Vec<Value>>,
    /// Monday: board id → group ids.
    boards: HashMap<String, Vec<String>>,
}

pub struct FakeTracker {
    pub url: String,
    state: Arc<FakeState>,
}

impl FakeTracker {
    /// Linear at `POST /graphql` with teams ENG and OPS, accepting `LINEAR_KEY` raw and
    /// `LINEAR_OAUTH_TOKEN` as Bearer.
    pub async fn linear() -> Self {
        let accepted = vec![
            LINEAR_KEY.to_string(),
            format!("Bearer {LINEAR_OAUTH_TOKEN}"),
        ];
        Self::start("/graphql", linear, accepted, HashMap::new()).await
    }

    /// Monday.com at `POST /v2` with one board (groups `topics`, `bugs`), accepting the raw token.
    pub async fn monday() -> Self {
        let boards = HashMap::from([(
            MONDAY_BOARD.to_string(),
            vec!["topics".to_string(), "bugs".to_string()],
        )]);
        Self::start("/v2", monday, vec![MONDAY_TOKEN.to_string()], boards).await
    }

    async fn start(
        path: &str,
        handler: Handler,
        accepted: Vec<String>,
        boards: HashMap<String, Vec<String>>,
    ) -> Self {
        let state = Arc::new(FakeState {
            accepted: Mutex::new(accepted),
            boards,
            ..Default::default()
        });
        let app = Router::new()
            .route(
                path,
                post(
                    move |State(s): State<Arc<FakeState>>, headers: HeaderMap, body: String| {
                        serve(s, headers, body, handler)
                    },
                ),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake");
        let url = format!("http://{}{path}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state }
    }

    /// The next `times` requests whose document contains `op` get `behaviour`.
    pub fn inject(&self, op: &'static str, times: usize, behaviour: Behaviour) {
        self.state.injections.lock().unwrap().push(Injection {
            op,
            remaining: times,
            behaviour,
        });
    }

    pub fn clear_injections(&self) {
        self.state.injections.lock().unwrap().clear();
    }

    /// Stops accepting every credential (as if it had been revoked).
    pub fn revoke_all(&self) {
        self.state.accepted.lock().unwrap().clear();
    }

    /// Tickets created (issues or items).
    pub fn created(&self) -> Vec<Value> {
        self.state.created.lock().unwrap().clone()
    }

    pub fn updates(&self) -> Vec<Value> {
        self.state.updates.lock().unwrap().clone()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Requests whose document contains `op`.
    pub fn seen_op(&self, op: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.query.contains(op))
            .collect()
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn serve(
    state: Arc<FakeState>,
    headers: HeaderMap,
    body: String,
    handler: Handler,
) -> Response {
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let seen = Seen {
        authorization: header(&headers, "authorization"),
        api_version: header(&headers, "api-version"),
        content_type: header(&headers, "content-type"),
        query: parsed["query"].as_str().unwrap_or_default().to_string(),
        variables: parsed["variables"].clone(),
    };
    state.seen.lock().unwrap().push(seen.clone());
    let behaviour = {
        let mut injections = state.injections.lock().unwrap();
        let found = injections
            .iter_mut()
            .find(|i| i.remaining > 0 && (i.op == "*" || seen.query.contains(i.op)));
        found.map(|i| {
            i.remaining -= 1;
            i.behaviour.clone()
        })
    };
    let answer = match behaviour {
        Some(Behaviour::Respond {
            status,
            headers,
            body,
        }) => (StatusCode::from_u16(status).unwrap(), headers, body),
        Some(Behaviour::DelayBefore(wait)) => {
            tokio::time::sleep(wait).await;
            handler(state, seen)
        }
        Some(Behaviour::DelayAfter(wait)) => {
            let answer = handler(state, seen);
            tokio::time::sleep(wait).await;
            answer
        }
        None => handler(state, seen),
    };
    let (status, extra, body) = answer;
    let mut response = (status, axum::Json(body)).into_response();
    for (name, value) in extra {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

fn ok(body: Value) -> Answer {
    (StatusCode::OK, Vec::new(), body)
}

pub fn linear_auth_error() -> Value {
    json!({"errors":[{"message":"Authentication required, not authenticated",
        "extensions":{"type":"authentication error","code":"AUTHENTICATION_ERROR","statusCode":401,"userError":true,
                      "userPresentableMessage":"You need to authenticate to access this operation."}}]})
}

pub fn linear_rate_limited(reset_ms: i64) -> Behaviour {
    Behaviour::Respond {
        status: 400,
        headers: vec![
            ("x-ratelimit-requests-remaining", "0".into()),
            ("x-ratelimit-requests-reset", reset_ms.to_string()),
        ],
        body: json!({"errors":[{"message":"Rate limit exceeded","extensions":{"code":"RATELIMITED"}}]}),
    }
}

fn linear_not_found(path: &str, what: &str) -> Answer {
    ok(
        json!({"errors":[{"message":format!("Entity not found: {what}"),"path":[path],
        "extensions":{"type":"invalid input","code":"INPUT_ERROR","statusCode":400,"userError":true,
                      "userPresentableMessage":format!("Could not find referenced {what}.")}}],"data":null}),
    )
}

fn teams() -> [(&'static str, &'static str, &'static str); 2] {
    [
        (ENG_TEAM_ID, "ENG", "Engineering"),
        (OPS_TEAM_ID, "OPS", "Operations"),
    ]
}

fn team_json(team: (&str, &str, &str)) -> Value {
    json!({"id": team.0, "key": team.1, "name": team.2})
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && s.split('-').map(str::len).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
}

fn linear(state: Arc<FakeState>, seen: Seen) -> Answer {
    let authorized = seen
        .authorization
        .as_ref()
        .is_some_and(|a| state.accepted.lock().unwrap().contains(a));
    if !authorized {
        return (StatusCode::UNAUTHORIZED, Vec::new(), linear_auth_error());
    }
    if seen.content_type.as_deref() != Some("application/json") {
        return (
            StatusCode::BAD_REQUEST,
            Vec::new(),
            json!({"errors":[{"message":"bad content type"}]}),
        );
    }
    let q = &seen.query;
    let vars = &seen.variables;
    if q.contains("issueCreate") {
        let input = &vars["input"];
        let team_id = input["teamId"].as_str().unwrap_or_default();
        if !is_uuid(team_id) {
            return (
                StatusCode::BAD_REQUEST,
                Vec::new(),
                json!({"errors":[{"message":"Argument Validation Error",
                "extensions":{"type":"invalid input","code":"INPUT_ERROR","userPresentableMessage":"teamId must be a UUID."}}]}),
            );
        }
        let Some(team) = teams().into_iter().find(|t| t.0 == team_id) else {
            return linear_not_found("issueCreate", "Team");
        };
        let mut created = state.created.lock().unwrap();
        let id = input["id"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| orgd_core::ids::random_hex(16));
        if created.iter().any(|i| i["id"] == json!(id)) {
            return ok(
                json!({"errors":[{"message":"Entity already exists","extensions":{"type":"invalid input","code":"INPUT_ERROR"}}]}),
            );
        }
        let identifier = format!("{}-{}", team.1, created.len() + 1);
        let issue = json!({
            "id": id, "identifier": identifier, "title": input["title"],
            "url": format!("https://linear.app/fake-org/issue/{identifier}/a-slug"),
            "description": input["description"], "teamId": team_id,
        });
        created.push(issue.clone());
        return ok(json!({"data":{"issueCreate":{"success":true,"issue":{
            "id": issue["id"], "identifier": issue["identifier"], "url": issue["url"], "title": issue["title"]}}}}));
    }
    if q.contains("issue(") {
        let created = state.created.lock().unwrap();
        return match created.iter().find(|i| i["id"] == vars["id"]) {
            Some(issue) => ok(json!({"data":{"issue": issue}})),
            None => linear_not_found("issue", "Issue"),
        };
    }
    if q.contains("teams(") {
        let key = vars["key"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let nodes: Vec<Value> = teams()
            .into_iter()
            .filter(|t| t.1 == key)
            .map(team_json)
            .collect();
        return ok(json!({"data":{"viewer":{"id":"user-1"},"teams":{"nodes": nodes}}}));
    }
    if q.contains("team(") {
        return match teams().into_iter().find(|t| vars["teamId"] == json!(t.0)) {
            Some(team) => ok(json!({"data":{"viewer":{"id":"user-1"},"team": team_json(team)}})),
            None => linear_not_found("team", "Team"),
        };
    }
    (
        StatusCode::BAD_REQUEST,
        Vec::new(),
        json!({"errors":[{"message":"unknown operation",
        "extensions":{"type":"graphql error","code":"GRAPHQL_VALIDATION_FAILED"}}]}),
    )
}

pub fn monday_complexity(retry_in_seconds: u64) -> Behaviour {
    Behaviour::Respond {
        status: 429,
        headers: vec![("retry-after", retry_in_seconds.to_string())],
        body: json!({"errors":[{"message":"Complexity budget exhausted",
            "extensions":{"code":"COMPLEXITY_BUDGET_EXHAUSTED","retry_in_seconds":retry_in_seconds}}]}),
    }
}

fn monday_error(code: &str, message: &str) -> Answer {
    ok(
        json!({"data": null, "errors":[{"message": message, "extensions":{"code": code,"error_data":{},"status_code":200}}],
        "error_code": code, "error_message": message, "account_id": 1}),
    )
}

fn monday(state: Arc<FakeState>, seen: Seen) -> Answer {
    let authorized = seen
        .authorization
        .as_ref()
        .is_some_and(|a| state.accepted.lock().unwrap().contains(a));
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            Vec::new(),
            json!({"errors":["Not Authenticated"],"status":401}),
        );
    }
    if seen.api_version.is_none() {
        return monday_error("InvalidVersionException", "API-Version header missing");
    }
    let q = &seen.query;
    let vars = &seen.variables;
    if q.contains("create_update") {
        let items = state.created.lock().unwrap();
        if !items.iter().any(|i| i["id"] == vars["itemId"]) {
            return monday_error("InvalidItemIdException", "Item not found");
        }
        let mut updates = state.updates.lock().unwrap();
        updates.push(json!({"itemId": vars["itemId"], "body": vars["body"]}));
        return ok(json!({"data":{"create_update":{"id": format!("33{}", updates.len())}}}));
    }
    if q.contains("create_item") {
        let board = vars["boardId"].as_str().unwrap_or_default();
        let Some(groups) = state.boards.get(board) else {
            return monday_error(
                "InvalidBoardIdException",
                "The board does not exist. Please check your board ID and try again",
            );
        };
        if let Some(group) = vars["groupId"].as_str()
            && !groups.iter().any(|g| g == group)
        {
            return monday_error("InvalidGroupIdException", "The group does not exist");
        }
        let mut items = state.created.lock().unwrap();
        let id = format!("98765{:05}", items.len() + 1);
        let url = format!("https://fake-account.monday.com/boards/{board}/pulses/{id}");
        items.push(json!({"id": id, "url": url, "name": vars["itemName"], "boardId": board, "groupId": vars["groupId"]}));
        return ok(
            json!({"data":{"create_item":{"id": id, "url": url}},"account_id":1,"extensions":{"request_id":"r"}}),
        );
    }
    if q.contains("boards(") {
        let ids: Vec<String> = vars["boardIds"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let boards: Vec<Value> = ids.iter().filter_map(|id| {
            state.boards.get(id).map(|groups| json!({"id": id, "groups": groups.iter().map(|g| json!({"id": g})).collect::<Vec<_>>()}))
        }).collect();
        return ok(
            json!({"data":{"me":{"id":"42","account":{"slug":"fake-account"}},"boards": boards}}),
        );
    }
    monday_error("InvalidArgumentException", "unknown operation")
}

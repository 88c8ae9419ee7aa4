//! Fake Slack incoming webhooks (`outbound-apis.md` §6): `POST /services/{team}/{bot}/{secret}`
//! answers a plain-text `ok` or a plain-text error code with Slack's status.
//!
//! Checks, in order: a registered path (404 `no_service`), not archived (410
//! `channel_is_archived`), the per-path rate of one message per second (429 `rate_limited` with
//! `Retry-After: 1`; switchable), a JSON body with `text` or `blocks` (400 `invalid_payload`),
//! and the Block Kit limits of the reference's table (400 `invalid_blocks`). Every request is
//! recorded with the instant it arrived; accepted messages also in [`Slack::messages`].
//!
//! Decisions where the reference is silent or UNCONFIRMED:
//! - `{"text":""}` without blocks answers 400 `no_text`;
//! - the 429 body is `rate_limited`; only messages answered 200 count for the rate;
//! - `ok` is sent as `text/plain`;
//! - limits checked: ≤ 50 blocks; header `plain_text` ≤ 150; section text ≤ 3,000, ≤ 10 fields of
//!   ≤ 2,000; context ≤ 10 elements; actions ≤ 25 elements; button text ≤ 75, url ≤ 3,000,
//!   `action_id` ≤ 255; unknown block types are `invalid_blocks`. Top-level `text` is not limited
//!   (Slack truncates it after 40,000 characters).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::{Behaviour, Call, Fake, Protocol, Reply, char_len};

/// A registered webhook path.
pub const SLACK_PATH: &str = "/services/T0FAKE0001/B0FAKE0001/fakeSecret0123456789abcd";
/// A second registered path, configured as archived (410 `channel_is_archived`).
pub const SLACK_ARCHIVED_PATH: &str = "/services/T0FAKE0001/B0FAKE0002/archivedSecret0123456789";

const BLOCK_TYPES: [&str; 10] = [
    "header",
    "section",
    "context",
    "actions",
    "divider",
    "image",
    "rich_text",
    "input",
    "file",
    "video",
];

/// A message Slack accepted.
#[derive(Clone, Debug)]
pub struct SlackMessage {
    pub path: String,
    pub body: Value,
    pub at: Instant,
}

/// The Slack protocol and its state.
pub struct Slack {
    paths: Mutex<HashSet<String>>,
    archived: Mutex<HashSet<String>>,
    rate_limit: Mutex<bool>,
    last_accepted: Mutex<HashMap<String, Instant>>,
    messages: Mutex<Vec<SlackMessage>>,
}

pub type FakeSlack = Fake<Slack>;

impl Fake<Slack> {
    /// Slack with [`SLACK_PATH`] and the archived [`SLACK_ARCHIVED_PATH`]; rate limit on.
    pub async fn spawn() -> Self {
        let slack = Slack {
            paths: Mutex::new(HashSet::new()),
            archived: Mutex::new(HashSet::new()),
            rate_limit: Mutex::new(true),
            last_accepted: Mutex::new(HashMap::new()),
            messages: Mutex::new(Vec::new()),
        };
        slack.add_webhook(SLACK_PATH);
        slack.add_webhook(SLACK_ARCHIVED_PATH);
        slack.archive(SLACK_ARCHIVED_PATH);
        Fake::start(slack).await
    }

    /// The origin to configure (`SLACK_WEBHOOK_ORIGIN`, replacing `https://hooks.slack.com`).
    pub fn origin(&self) -> String {
        self.url.clone()
    }

    /// The full URL of a webhook path on this fake.
    pub fn webhook_url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

impl Slack {
    /// Registers a webhook path (`/services/T…/B…/…`).
    pub fn add_webhook(&self, path: &str) {
        self.paths.lock().unwrap().insert(path.to_string());
    }

    /// Removes a webhook (then 404 `no_service`).
    pub fn remove_webhook(&self, path: &str) {
        self.paths.lock().unwrap().remove(path);
    }

    /// Archives the channel behind a path (then 410 `channel_is_archived`).
    pub fn archive(&self, path: &str) {
        self.archived.lock().unwrap().insert(path.to_string());
    }

    /// Turns the one-message-per-second-per-path limit on or off.
    pub fn set_rate_limit(&self, on: bool) {
        *self.rate_limit.lock().unwrap() = on;
    }

    /// Messages answered 200, oldest first.
    pub fn messages(&self) -> Vec<SlackMessage> {
        self.messages.lock().unwrap().clone()
    }

    /// Messages answered 200 on one path.
    pub fn messages_to(&self, path: &str) -> Vec<SlackMessage> {
        self.messages()
            .into_iter()
            .filter(|m| m.path == path)
            .collect()
    }

    /// The smallest gap between two consecutive accepted messages on `path`.
    pub fn min_gap(&self, path: &str) -> Option<Duration> {
        let times: Vec<Instant> = self.messages_to(path).iter().map(|m| m.at).collect();
        times.windows(2).map(|w| w[1] - w[0]).min()
    }
}

impl Protocol for Slack {
    const ROUTES: &'static [&'static str] = &["POST /services/{team}/{bot}/{secret}"];

    fn answer(&self, call: &Call<'_>) -> Reply {
        let path = &call.seen.path;
        if call.route.is_none() || !self.paths.lock().unwrap().contains(path) {
            return Reply::text(404, "no_service");
        }
        if self.archived.lock().unwrap().contains(path) {
            return Reply::text(410, "channel_is_archived");
        }
        let mut last = self.last_accepted.lock().unwrap();
        let limited = *self.rate_limit.lock().unwrap()
            && last
                .get(path)
                .is_some_and(|t| call.seen.at.duration_since(*t) < Duration::from_secs(1));
        if limited {
            return Reply::text(429, "rate_limited").header("retry-after", 1);
        }
        let Some(body) = call.seen.json.as_ref().filter(|b| b.is_object()) else {
            return Reply::text(400, "invalid_payload");
        };
        let (text, blocks) = (&body["text"], &body["blocks"]);
        if blocks.is_null() {
            match text {
                Value::String(t) if t.is_empty() => return Reply::text(400, "no_text"),
                Value::String(_) => {}
                _ => return Reply::text(400, "invalid_payload"),
            }
        } else if !(text.is_null() || text.is_string()) {
            return Reply::text(400, "invalid_payload");
        }
        if !blocks.is_null() && !blocks_valid(blocks) {
            return Reply::text(400, "invalid_blocks");
        }
        last.insert(path.clone(), call.seen.at);
        self.messages.lock().unwrap().push(SlackMessage {
            path: path.clone(),
            body: body.clone(),
            at: call.seen.at,
        });
        Reply::text(200, "ok")
    }
}

/// Whether `blocks` respects the Block Kit limits in the reference's table.
pub fn blocks_valid(blocks: &Value) -> bool {
    let Some(blocks) = blocks.as_array() else {
        return false;
    };
    blocks.len() <= 50 && blocks.iter().all(block_valid)
}

fn within(value: &Value, max: usize) -> bool {
    value.is_string() && char_len(value) <= max
}

fn block_valid(block: &Value) -> bool {
    let Some(kind) = block["type"].as_str() else {
        return false;
    };
    if !BLOCK_TYPES.contains(&kind) {
        return false;
    }
    match kind {
        "header" => block["text"]["type"] == "plain_text" && within(&block["text"]["text"], 150),
        "section" => {
            let text_ok = block["text"].is_null() || within(&block["text"]["text"], 3000);
            let fields_ok = match &block["fields"] {
                Value::Null => true,
                Value::Array(fields) => {
                    fields.len() <= 10 && fields.iter().all(|f| within(&f["text"], 2000))
                }
                _ => false,
            };
            let has_content = !block["text"].is_null() || !block["fields"].is_null();
            text_ok && fields_ok && has_content
        }
        "context" => block["elements"]
            .as_array()
            .is_some_and(|e| !e.is_empty() && e.len() <= 10),
        "actions" => block["elements"].as_array().is_some_and(|elements| {
            !elements.is_empty() && elements.len() <= 25 && elements.iter().all(element_valid)
        }),
        _ => true,
    }
}

fn element_valid(element: &Value) -> bool {
    if element["type"] != "button" {
        return element["type"].is_string();
    }
    within(&element["text"]["text"], 75)
        && (element["url"].is_null() || within(&element["url"], 3000))
        && (element["action_id"].is_null() || within(&element["action_id"], 255))
}

/// A Slack error answered instead of the normal work: `status` with the plain-text `code`
/// (`slack::error(403, "invalid_token")`, `slack::error(500, "rollup_error")`, ...).
pub fn error(status: u16, code: &str) -> Behaviour {
    Behaviour::text(status, code)
}

/// 403 `invalid_token` (a revoked app or token behind the webhook).
pub fn invalid_token() -> Behaviour {
    error(403, "invalid_token")
}

//! Slack incoming webhooks (`reference/outbound-apis.md` §6; API.md, "Slack"): the Block Kit
//! messages orgd posts, and one post of one message, its answer classified as the outbox and
//! the test endpoint need it.
//!
//! The webhook URL is the credential: it is stored encrypted, never logged (`SlackWebhook`'s
//! `Debug` hides it), and must be `https://hooks.slack.com/services/…`. The post goes to
//! `{SLACK_WEBHOOK_ORIGIN}` plus the URL's path, so tests can point the origin at a fake.
//! Each call is one attempt: the outbox decides when to try again.

use std::fmt;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};

use crate::client::{Answer, Client, Outcome, Provider, ProviderError, Unreached, retry_after};

/// What every stored Slack webhook URL starts with.
pub const WEBHOOK_PREFIX: &str = "https://hooks.slack.com/services/";
/// Runs a digest lists before "and N more".
pub const DIGEST_MAX_RUNS: usize = 20;

/// Block Kit limits (header 150 characters, section text 3,000, field 2,000, button text 75,
/// button URL 3,000), and ours for the one-line fallback and the texts we quote, which keep a
/// message well under Slack's undocumented total-size limit.
const HEADER_MAX: usize = 150;
const SECTION_MAX: usize = 3000;
const FIELD_MAX: usize = 2000;
const URL_MAX: usize = 3000;
const FALLBACK_MAX: usize = 500;
const ERROR_MAX: usize = 500;
const ROOT_CAUSE_MAX: usize = 1500;
/// Digest lines per section, so 20 runs stay within a section's 3,000 characters.
const DIGEST_LINES_PER_SECTION: usize = 10;

/// A checked Slack webhook: the path after `https://hooks.slack.com`.
#[derive(Clone, PartialEq, Eq)]
pub struct SlackWebhook {
    path: String,
}

impl SlackWebhook {
    /// Accepts `https://hooks.slack.com/services/…` whose rest is path segments of letters,
    /// digits, `_` and `-` (no query, no `..`): nothing else can be appended to the origin.
    pub fn parse(url: &str) -> Option<Self> {
        let rest = url.strip_prefix(WEBHOOK_PREFIX)?;
        let segments_ok = rest.split('/').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        segments_ok.then(|| Self {
            path: format!("/services/{rest}"),
        })
    }
}

impl fmt::Debug for SlackWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL is the credential.
        f.write_str("SlackWebhook(\"https://hooks.slack.com/services/[REDACTED]\")")
    }
}

/// A Block Kit message, with its one-line `text` fallback.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackMessage(Value);

impl SlackMessage {
    pub fn as_json(&self) -> &Value {
        &self.0
    }
}

/// Why a post did not deliver, by what the caller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlackError {
    /// 429: post nothing to this webhook for `retry_after_secs`.
    RateLimited { retry_after_secs: u64 },
    /// No answer (timed out, connection failed…): retried on the webhook schedule.
    Unreachable(Unreached),
    /// Slack failed (5xx, or an answer it never gives): retried on the webhook schedule.
    ServerError { status: u16, code: Option<String> },
    /// 400: Slack refused the message itself — our bug: logged, not retried.
    InvalidMessage { code: Option<String> },
    /// 401/403/404/410: the webhook is refused, removed or its channel archived — permanent:
    /// counts toward disabling the integration.
    WebhookRefused { status: u16, code: Option<String> },
}

impl SlackError {
    /// Slack's error code (`channel_not_found`, `invalid_payload`, …), when it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::ServerError { code, .. }
            | Self::InvalidMessage { code }
            | Self::WebhookRefused { code, .. } => code.as_deref(),
            Self::RateLimited { .. } | Self::Unreachable(_) => None,
        }
    }

    /// Whether this counts toward disabling the integration.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::WebhookRefused { .. })
    }

    /// Whether the message is worth posting again later.
    pub fn is_retried(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Unreachable(_) | Self::ServerError { .. }
        )
    }

    /// `code`, or the HTTP status when Slack sent none.
    fn code_or_status(&self, status: u16) -> String {
        self.code()
            .map_or_else(|| format!("HTTP {status}"), str::to_string)
    }
}

impl fmt::Display for SlackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RateLimited { retry_after_secs } => {
                write!(
                    f,
                    "Slack is rate limiting this webhook (retry after {retry_after_secs} s)"
                )
            }
            Self::Unreachable(unreached) => {
                write!(f, "Slack could not be reached ({})", unreached.reason())
            }
            Self::ServerError { status, .. } => {
                write!(f, "Slack failed ({})", self.code_or_status(*status))
            }
            Self::InvalidMessage { .. } => {
                write!(
                    f,
                    "Slack refused the message ({})",
                    self.code_or_status(400)
                )
            }
            Self::WebhookRefused { status, .. } => {
                write!(
                    f,
                    "Slack refused the webhook ({})",
                    self.code_or_status(*status)
                )
            }
        }
    }
}

/// For the API's answers (the test endpoint): a rate limit is a rate limit, no answer is an
/// unreachable Slack, anything else Slack's error, whose reason is its error code.
impl From<SlackError> for ProviderError {
    fn from(error: SlackError) -> Self {
        let reason = match &error {
            SlackError::RateLimited { retry_after_secs } => {
                return ProviderError::RateLimited {
                    retry_after_secs: *retry_after_secs,
                    inline: false,
                };
            }
            SlackError::Unreachable(unreached) => return ProviderError::Unreachable(*unreached),
            SlackError::ServerError { status, .. } | SlackError::WebhookRefused { status, .. } => {
                error.code_or_status(*status)
            }
            SlackError::InvalidMessage { .. } => error.code_or_status(400),
        };
        ProviderError::Failed {
            reason,
            transient: matches!(error, SlackError::ServerError { .. }),
        }
    }
}

pub struct SlackClient {
    client: Client,
    origin: String,
}

impl SlackClient {
    /// `origin` is `SLACK_WEBHOOK_ORIGIN` (`https://hooks.slack.com`).
    pub fn new(client: Client, origin: String) -> Self {
        Self { client, origin }
    }

    /// Posts `message` once.
    pub async fn post(
        &self,
        webhook: &SlackWebhook,
        message: &SlackMessage,
    ) -> Result<(), SlackError> {
        let url = format!("{}{}", self.origin.trim_end_matches('/'), webhook.path);
        let request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(message.0.to_string());
        self.client
            .exchange(Provider::Slack, request, classify)
            .await
            .map_err(SlackError::Unreachable)?
    }
}

/// Slack's answers: status first, then the plain-text code in the body.
fn classify(answer: &Answer) -> (Outcome, Result<(), SlackError>) {
    let status = answer.status.as_u16();
    let code = error_code(&answer.text);
    match status {
        200..=299 => (Outcome::Ok, Ok(())),
        429 => {
            let retry_after_secs = retry_after(&answer.headers).unwrap_or(1).max(1);
            let limited = SlackError::RateLimited { retry_after_secs };
            (Outcome::RateLimited, Err(limited))
        }
        400 => (
            Outcome::ClientError,
            Err(SlackError::InvalidMessage { code }),
        ),
        401 | 403 | 404 | 410 => (
            Outcome::ClientError,
            Err(SlackError::WebhookRefused { status, code }),
        ),
        _ => (
            Outcome::ServerError,
            Err(SlackError::ServerError { status, code }),
        ),
    }
}

/// Slack's error code: the body when it is one (`channel_not_found`), never other text.
fn error_code(body: &str) -> Option<String> {
    let code = body.trim();
    let is_code = (1..=64).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    is_code.then(|| code.to_string())
}

/// A finished run, as a notification shows it.
#[derive(Debug, Clone, Copy)]
pub struct RunNotice<'a> {
    pub task_id: &'a str,
    /// `PASSED`, `FAILED`, `ERROR` or `UNSTABLE`.
    pub status: &'a str,
    pub trigger: Option<&'a str>,
    pub group: Option<&'a str>,
    pub duration_ms: Option<i64>,
    /// The run's error; its first line is shown.
    pub error: Option<&'a str>,
    /// The analysis' root cause, when there is one.
    pub root_cause: Option<&'a str>,
    /// `{ORGD_PUBLIC_URL}/executions/{taskId}`, when a public URL is configured.
    pub url: Option<&'a str>,
}

/// "🔴 Test run FAILED" with the run's fields, its error's first line, the root cause and an
/// "Open run" button.
pub fn run_finished(run: &RunNotice<'_>) -> SlackMessage {
    let title = format!("{} Test run {}", status_emoji(run.status), run.status);
    let mut fields = vec![field("Run", &format!("`{}`", escape(run.task_id)))];
    if let Some(trigger) = run.trigger {
        fields.push(field("Trigger", &escape(trigger)));
    }
    if let Some(group) = run.group {
        fields.push(field("Group", &escape(group)));
    }
    if let Some(ms) = run.duration_ms {
        fields.push(field("Duration", &duration(ms)));
    }
    let mut blocks = vec![header(&title), json!({"type": "section", "fields": fields})];
    let error = run.error.map(first_line).filter(|e| !e.is_empty());
    if let Some(error) = error {
        blocks.push(section(&format!(
            "*Error:*\n{}",
            escape(&clip(error, ERROR_MAX))
        )));
    }
    if let Some(cause) = run.root_cause.map(str::trim).filter(|c| !c.is_empty()) {
        let cause = escape(&clip(cause, ROOT_CAUSE_MAX));
        blocks.push(section(&format!("*Root cause:*\n{cause}")));
    }
    if let Some(button) = run.url.and_then(|url| open_button(url, run.status)) {
        blocks.push(button);
    }
    let mut text = format!("{title}: {}", run.task_id);
    if let Some(group) = run.group {
        text.push_str(&format!(" ({group})"));
    }
    if let Some(error) = error {
        text.push_str(&format!(" — {error}"));
    }
    message(&text, blocks)
}

/// One message for many finished runs: a line each for at most `DIGEST_MAX_RUNS`, then
/// "and N more".
pub fn digest(runs: &[RunNotice<'_>]) -> SlackMessage {
    let title = format!("{} test runs finished", runs.len());
    let lines: Vec<String> = runs
        .iter()
        .take(DIGEST_MAX_RUNS)
        .map(|run| {
            let mut line = format!(
                "{} *{}* `{}`",
                status_emoji(run.status),
                escape(run.status),
                escape(&clip(run.task_id, 128))
            );
            if let Some(group) = run.group {
                line.push_str(&format!(" · {}", escape(&clip(group, 64))));
            }
            if let Some(ms) = run.duration_ms {
                line.push_str(&format!(" · {}", duration(ms)));
            }
            if let Some(url) = run.url.filter(|u| u.len() <= 500) {
                line.push_str(&format!(" · <{}|Open>", escape(url)));
            }
            line
        })
        .collect();
    let mut blocks = vec![header(&title)];
    for chunk in lines.chunks(DIGEST_LINES_PER_SECTION) {
        blocks.push(section(&chunk.join("\n")));
    }
    let more = runs.len().saturating_sub(DIGEST_MAX_RUNS);
    if more > 0 {
        blocks.push(context(&format!("and {more} more")));
    }
    let failed = runs.iter().filter(|r| r.status != "PASSED").count();
    let text = format!("{title} ({failed} not passed)");
    message(&text, blocks)
}

/// A usage figure that reached a level of its limit.
#[derive(Debug, Clone, Copy)]
pub struct UsageNotice<'a> {
    /// `testRuns`, `users` or `storage`.
    pub resource: &'a str,
    /// `warning` (80 %) or `critical` (100 %).
    pub level: &'a str,
    pub percent_used: f64,
    pub used: i64,
    pub limit: i64,
    /// `YYYY-MM`.
    pub period: &'a str,
}

/// "Test runs at 80 % of the limit": the resource, the percentage and the limit.
pub fn usage_threshold(usage: &UsageNotice<'_>) -> SlackMessage {
    let (name, amount): (&str, fn(i64) -> String) = match usage.resource {
        "testRuns" => ("Test runs", |n| n.to_string()),
        "users" => ("Users", |n| n.to_string()),
        "storage" => ("Storage", bytes),
        other => (other, |n| n.to_string()),
    };
    let (emoji, what) = match usage.level {
        "critical" => ("🔴", "limit reached"),
        _ => ("⚠️", "nearing the limit"),
    };
    let percent = format!("{:.0} %", usage.percent_used);
    let title = format!("{emoji} {name}: {what} ({percent})");
    let detail = format!(
        "*{name}* used: {} of {} ({percent}) in {}.",
        amount(usage.used),
        amount(usage.limit),
        escape(usage.period)
    );
    let text = format!(
        "{name} at {percent} of the limit of {} ({})",
        amount(usage.limit),
        usage.period
    );
    message(&text, vec![header(&title), section(&detail)])
}

/// orgd disabled an integration or a webhook (`what`: "GitHub", "the webhook https://…").
pub fn integration_disabled(what: &str, reason: &str) -> SlackMessage {
    let title = "⚠️ Integration disabled";
    let detail = format!("orgd disabled {}: {}", escape(what), escape(reason));
    let text = format!("{title}: {what} — {reason}");
    message(&text, vec![header(title), section(&detail)])
}

/// What an admin sends to check the webhook (Slack has no dry run).
pub fn test_message(organization: &str) -> SlackMessage {
    let title = "✅ orgd is connected";
    let detail = format!(
        "This is a test message: notifications for *{}* will arrive in this channel.",
        escape(organization)
    );
    message(title, vec![header(title), section(&detail)])
}

fn message(text: &str, blocks: Vec<Value>) -> SlackMessage {
    SlackMessage(json!({"text": clip(text, FALLBACK_MAX), "blocks": blocks}))
}

fn header(text: &str) -> Value {
    json!({"type": "header", "text": {"type": "plain_text", "text": clip(text, HEADER_MAX), "emoji": true}})
}

fn section(mrkdwn: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(mrkdwn, SECTION_MAX)}})
}

fn field(label: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": clip(&format!("*{label}:*\n{value}"), FIELD_MAX)})
}

fn context(mrkdwn: &str) -> Value {
    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": clip(mrkdwn, SECTION_MAX)}]})
}

/// "Open run", unless the URL is longer than a button takes.
fn open_button(url: &str, status: &str) -> Option<Value> {
    if url.chars().count() > URL_MAX {
        return None;
    }
    let mut button = json!({
        "type": "button",
        "text": {"type": "plain_text", "text": "Open run"},
        "url": url,
        "action_id": "open_run",
    });
    if matches!(status, "FAILED" | "ERROR") {
        button["style"] = json!("danger");
    }
    Some(json!({"type": "actions", "elements": [button]}))
}

fn status_emoji(status: &str) -> &'static str {
    match status {
        "PASSED" => "🟢",
        "FAILED" => "🔴",
        _ => "⚠️",
    }
}

fn first_line(text: &str) -> &str {
    text.trim().lines().next().unwrap_or_default().trim()
}

/// `&`, `<` and `>` are Slack's control characters in `mrkdwn`.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters, the last one `…` when cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut clipped: String = text.chars().take(max.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

/// `4m 12s`, `1h 3m`, `850ms`.
fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    let secs = ms / 1000;
    match secs {
        0 => format!("{ms}ms"),
        1..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
    }
}

/// Bytes in binary units, as limits are set (`10 GiB`).
fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n.max(0) as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::tests::{answer, with};

    fn slack(status: u16, body: &str) -> Answer {
        let mut answer = answer(status, Value::Null);
        answer.text = body.into();
        answer
    }

    #[test]
    fn answers_are_classified_as_the_api_says() {
        assert_eq!(classify(&slack(200, "ok")), (Outcome::Ok, Ok(())));
        assert_eq!(
            classify(&with(slack(429, "rate_limited"), "retry-after", "3")),
            (
                Outcome::RateLimited,
                Err(SlackError::RateLimited {
                    retry_after_secs: 3
                })
            )
        );
        let (outcome, result) = classify(&slack(400, "invalid_payload"));
        let invalid = result.unwrap_err();
        assert_eq!(outcome, Outcome::ClientError);
        assert_eq!(invalid.code(), Some("invalid_payload"));
        assert!(!invalid.is_retried() && !invalid.is_permanent());
        for (status, code) in [
            (403, "invalid_token"),
            (403, "action_prohibited"),
            (404, "channel_not_found"),
            (404, "no_service"),
            (410, "channel_is_archived"),
        ] {
            let error = classify(&slack(status, code)).1.unwrap_err();
            assert!(error.is_permanent() && !error.is_retried(), "{status}");
            assert_eq!(error.code(), Some(code));
        }
        let (outcome, result) = classify(&slack(500, "rollup_error"));
        let failed = result.unwrap_err();
        assert_eq!(outcome, Outcome::ServerError);
        assert!(failed.is_retried());
        assert_eq!(failed.to_string(), "Slack failed (rollup_error)");
        let html = classify(&slack(502, "<html>Bad Gateway</html>"))
            .1
            .unwrap_err();
        assert_eq!(
            html.code(),
            None,
            "only codes are repeated, never other text"
        );
        assert_eq!(html.to_string(), "Slack failed (HTTP 502)");
    }

    #[test]
    fn the_api_answers_with_slacks_code() {
        let gone = SlackError::WebhookRefused {
            status: 404,
            code: Some("no_service".into()),
        };
        assert_eq!(gone.to_string(), "Slack refused the webhook (no_service)");
        assert_eq!(
            ProviderError::from(gone),
            ProviderError::Failed {
                reason: "no_service".into(),
                transient: false
            }
        );
        assert_eq!(
            ProviderError::from(SlackError::RateLimited {
                retry_after_secs: 2
            }),
            ProviderError::RateLimited {
                retry_after_secs: 2,
                inline: false
            }
        );
        let timed_out = SlackError::Unreachable(Unreached::TimedOut);
        assert_eq!(
            timed_out.to_string(),
            "Slack could not be reached (timed out)"
        );
        assert!(timed_out.is_retried());
    }

    #[test]
    fn only_slack_webhook_urls_are_accepted() {
        let hook =
            SlackWebhook::parse("https://hooks.slack.com/services/T0/B0/abcDEF_12-3").unwrap();
        assert_eq!(hook.path, "/services/T0/B0/abcDEF_12-3");
        assert!(!format!("{hook:?}").contains("abcDEF"));
        for bad in [
            "http://hooks.slack.com/services/T0/B0/x",
            "https://hooks.slack.com.evil.test/services/T0/B0/x",
            "https://hooks.slack.com/services/",
            "https://hooks.slack.com/services/T0//x",
            "https://hooks.slack.com/services/T0/../../x",
            "https://hooks.slack.com/services/T0/B0/x?y=1",
            "https://hooks.slack.com/services/T0/B0/x#y",
            "https://evil.test/services/T0/B0/x",
        ] {
            assert_eq!(SlackWebhook::parse(bad), None, "{bad}");
        }
    }

    fn failed_run() -> RunNotice<'static> {
        RunNotice {
            task_id: "run-1234",
            status: "FAILED",
            trigger: Some("ci"),
            group: Some("checkout <smoke>"),
            duration_ms: Some(252_000),
            error: Some("AssertionError: expected 200 & got 500\n  at checkout.spec.ts:42"),
            root_cause: Some("The payment stub returns 500."),
            url: Some("https://app.example.com/executions/run-1234"),
        }
    }

    #[test]
    fn a_failed_run() {
        let message = run_finished(&failed_run());
        let json = message.as_json();
        assert_eq!(json["blocks"][0]["text"]["text"], "🔴 Test run FAILED");
        let fields: Vec<&str> = json["blocks"][1]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "*Run:*\n`run-1234`",
                "*Trigger:*\nci",
                "*Group:*\ncheckout &lt;smoke&gt;",
                "*Duration:*\n4m 12s"
            ]
        );
        assert_eq!(
            json["blocks"][2]["text"]["text"],
            "*Error:*\nAssertionError: expected 200 &amp; got 500"
        );
        assert_eq!(
            json["blocks"][3]["text"]["text"],
            "*Root cause:*\nThe payment stub returns 500."
        );
        let button = &json["blocks"][4]["elements"][0];
        assert_eq!(button["text"]["text"], "Open run");
        assert_eq!(button["url"], "https://app.example.com/executions/run-1234");
        assert_eq!(
            json["text"],
            "🔴 Test run FAILED: run-1234 (checkout <smoke>) — AssertionError: expected 200 & got 500"
        );
        assert!(orgd_fakes::slack::blocks_valid(&json["blocks"]));
    }

    #[test]
    fn passed_and_unstable_runs_without_extras() {
        let bare = RunNotice {
            status: "PASSED",
            trigger: None,
            group: None,
            duration_ms: None,
            error: None,
            root_cause: None,
            url: None,
            ..failed_run()
        };
        let json = run_finished(&bare).0;
        assert_eq!(json["blocks"][0]["text"]["text"], "🟢 Test run PASSED");
        assert_eq!(json["blocks"].as_array().unwrap().len(), 2);
        assert_eq!(json["text"], "🟢 Test run PASSED: run-1234");
        let unstable = run_finished(&RunNotice {
            status: "UNSTABLE",
            ..bare
        });
        assert_eq!(
            unstable.0["blocks"][0]["text"]["text"],
            "⚠️ Test run UNSTABLE"
        );
        let error = run_finished(&RunNotice {
            status: "ERROR",
            ..bare
        });
        assert_eq!(error.0["blocks"][0]["text"]["text"], "⚠️ Test run ERROR");
    }

    #[test]
    fn long_texts_are_clipped_to_slacks_limits() {
        let long = "x".repeat(10_000);
        let huge_url = format!("https://app.example.com/{long}");
        let run = RunNotice {
            task_id: &long,
            group: Some(&long),
            error: Some(&long),
            root_cause: Some(&long),
            url: Some(&huge_url),
            ..failed_run()
        };
        let json = run_finished(&run).0;
        assert!(orgd_fakes::slack::blocks_valid(&json["blocks"]));
        assert!(
            json.to_string().len() < 12_000,
            "{}",
            json.to_string().len()
        );
        assert!(
            json["blocks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["type"] != "actions")
        );
    }

    #[test]
    fn digests_list_twenty_runs_then_the_rest() {
        let runs = vec![failed_run(); 23];
        let json = digest(&runs).0;
        assert_eq!(json["blocks"][0]["text"]["text"], "23 test runs finished");
        let listed: usize = json["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == "section")
            .map(|b| b["text"]["text"].as_str().unwrap().lines().count())
            .sum();
        assert_eq!(listed, 20);
        let last = json["blocks"].as_array().unwrap().last().unwrap();
        assert_eq!(last["elements"][0]["text"], "and 3 more");
        assert!(orgd_fakes::slack::blocks_valid(&json["blocks"]));
        let few = digest(&runs[..6]).0;
        assert!(
            few["blocks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["type"] != "context")
        );
    }

    #[test]
    fn usage_disabled_and_test_messages() {
        let storage = usage_threshold(&UsageNotice {
            resource: "storage",
            level: "warning",
            percent_used: 80.4,
            used: 8_632_000_000,
            limit: 10_737_418_240,
            period: "2026-11",
        });
        let json = storage.as_json();
        assert_eq!(
            json["text"],
            "Storage at 80 % of the limit of 10 GiB (2026-11)"
        );
        assert_eq!(
            json["blocks"][0]["text"]["text"],
            "⚠️ Storage: nearing the limit (80 %)"
        );
        let runs = usage_threshold(&UsageNotice {
            resource: "testRuns",
            level: "critical",
            percent_used: 100.0,
            used: 100,
            limit: 100,
            period: "2026-11",
        });
        assert_eq!(
            runs.as_json()["blocks"][1]["text"]["text"],
            "*Test runs* used: 100 of 100 (100 %) in 2026-11."
        );
        let disabled = integration_disabled("GitHub", "5 failures in a row");
        assert_eq!(
            disabled.as_json()["text"],
            "⚠️ Integration disabled: GitHub — 5 failures in a row"
        );
        let test = test_message("Acme & Co");
        assert!(
            test.as_json()["blocks"][1]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("*Acme &amp; Co*")
        );
        for message in [storage, runs, disabled, test] {
            assert!(orgd_fakes::slack::blocks_valid(&message.0["blocks"]));
        }
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(59_999), "59s");
        assert_eq!(duration(3_661_000), "1h 1m");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1_099_511_627_776), "1 TiB");
    }
}

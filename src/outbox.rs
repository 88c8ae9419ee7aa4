//! The delivery worker (API.md, "Notifications and outgoing webhooks"): takes due outbox rows
//! (`orgd_core::outbox::lease`: one conditional UPDATE, fair across organizations), posts them
//! to Slack, the organization's webhooks or a pull request (`crate::pull_requests`), and
//! records what happened. A row whose delivery
//! this instance could not finish keeps its lease until it expires and is then taken again, by
//! this or another instance: a restart loses nothing. Requests never wait for it: they queue
//! rows in their own transaction and wake the worker (`AppState::wake_outbox`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::metrics::Delivery as Counted;
use crate::state::AppState;
use orgd_core::clock::parse_rfc3339;
use orgd_core::integrations::Integration;
use orgd_core::outbox::{
    self, Channel, EXECUTION_FINISHED, INTEGRATION_DISABLED, Leased, USAGE_THRESHOLD_CROSSED,
    Undelivered,
};
use orgd_core::secrets::SecretTable;
use orgd_core::text::{redact, redact_json};
use orgd_core::webhooks::{self, Failure};
use orgd_providers::signing::WebhookSecret;
use orgd_providers::slack::{self, RunNotice, SlackError, SlackMessage, SlackWebhook, UsageNotice};
use orgd_providers::webhook::{Delivery, DeliveryOutcome};

/// Rows taken per lease.
const BATCH: i64 = 64;
/// Deliveries in flight at once (Slack destinations and webhook rows).
const CONCURRENCY: usize = 16;
/// At most one Slack message per second per webhook.
const SLACK_GAP_MS: i64 = 1000;
/// More due run messages than this for one Slack webhook go as one digest.
const DIGEST_OVER: usize = 5;
/// How often delivered and failed rows past the retention are deleted.
const CLEANUP_EVERY_MS: i64 = 3_600_000;

/// How long a worker owns leased rows: a webhook attempt's timeout (or a Slack post's) with
/// room for recording the outcome. A row outliving it is taken again.
fn lease_ms(app: &AppState) -> i64 {
    let attempt = app
        .config
        .delivery
        .webhook_timeout
        .max(app.config.provider_timeout);
    (attempt * 2 + Duration::from_secs(30)).as_millis() as i64
}

/// When attempt `attempts + 1` is due after attempt `attempts` failed at `now`, or `None`
/// when the schedule is exhausted. A receiver's `Retry-After` can only push it later.
pub(crate) fn next_attempt(
    app: &AppState,
    attempts: i64,
    now: i64,
    retry_after_secs: Option<u64>,
) -> Option<i64> {
    let index = usize::try_from(attempts - 1).ok()?;
    let wait = app.config.delivery.retry_schedule.get(index)?;
    let asked = retry_after_secs.map_or(0, |s| s.saturating_mul(1000) as i64);
    Some(now + (wait.as_millis() as i64).max(asked))
}

/// The background worker: delivers whatever is due whenever woken or every
/// `ORGD_OUTBOX_POLL_INTERVAL`, and deletes rows past `ORGD_DELIVERY_RETENTION` hourly.
pub async fn work(app: AppState) {
    let mut cleaned_at = i64::MIN;
    loop {
        if let Err(e) = deliver_due(&app).await {
            tracing::error!(error = %e, "the delivery worker failed; trying again later");
        }
        let now = app.now();
        if now.saturating_sub(cleaned_at) >= CLEANUP_EVERY_MS {
            cleaned_at = now;
            let cutoff = now - app.config.delivery.retention.as_millis() as i64;
            match outbox::delete_expired(&app.db, cutoff).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "outbox rows past the retention deleted"),
                Err(e) => tracing::warn!(error = %e, "outbox retention failed"),
            }
        }
        tokio::select! {
            () = app.outbox_wake.notified() => {}
            () = tokio::time::sleep(app.config.delivery.poll_interval) => {}
        }
    }
}

/// One unit of work: a Slack destination's rows (paced together), one webhook row or one
/// pull-request comment.
enum Unit {
    Slack(Vec<Leased>),
    Webhook(Leased),
    PullRequest(Leased),
}

/// Delivers every row due now, batch after batch; how many rows were taken. Tests call it
/// directly; the worker calls it on every wake.
pub async fn deliver_due(app: &AppState) -> anyhow::Result<usize> {
    let mut taken = 0;
    loop {
        let now = app.now();
        let rows = outbox::lease(&app.db, now, now + lease_ms(app), BATCH).await?;
        if rows.is_empty() {
            return Ok(taken);
        }
        taken += rows.len();
        let mut slack: BTreeMap<String, Vec<Leased>> = BTreeMap::new();
        let mut units = Vec::with_capacity(rows.len());
        for row in rows {
            match row.channel {
                Channel::Slack => slack
                    .entry(outbox::pacing_key(&row.organization_id, &row.destination))
                    .or_default()
                    .push(row),
                Channel::Webhook => units.push(Unit::Webhook(row)),
                Channel::PullRequest => units.push(Unit::PullRequest(row)),
            }
        }
        units.extend(slack.into_values().map(Unit::Slack));
        let hooks: Vec<&Leased> = units
            .iter()
            .filter_map(|u| match u {
                Unit::Webhook(row) => Some(row),
                Unit::Slack(_) | Unit::PullRequest(_) => None,
            })
            .collect();
        let targets = targets(app, &hooks).await?;
        let targets = &targets;
        let delivered: Vec<(Leased, u16)> = futures_util::stream::iter(units)
            .map(|unit| async move {
                let result = match unit {
                    Unit::Slack(rows) => deliver_slack(app, rows).await.map(|()| None),
                    Unit::Webhook(row) => {
                        let target = targets.get(&row.destination);
                        deliver_webhook(app, row, target).await
                    }
                    Unit::PullRequest(row) => {
                        crate::pull_requests::deliver(app, row).await.map(|()| None)
                    }
                };
                // The rows keep their lease and are taken again once it expires.
                result.unwrap_or_else(|e| {
                    tracing::error!(error = %e, "a delivery could not be recorded");
                    None
                })
            })
            .buffer_unordered(CONCURRENCY)
            .filter_map(|done| async move { done })
            .collect()
            .await;
        record_webhook_successes(app, &delivered).await?;
    }
}

/// Marks the batch's delivered webhook rows with one statement per status, and clears their
/// webhooks' failure records.
async fn record_webhook_successes(
    app: &AppState,
    delivered: &[(Leased, u16)],
) -> anyhow::Result<()> {
    let mut by_status: BTreeMap<u16, Vec<&Leased>> = BTreeMap::new();
    for (row, status) in delivered {
        by_status.entry(*status).or_default().push(row);
    }
    for (status, rows) in by_status {
        outbox::delivered(&app.db, &rows, Some(status), app.now()).await?;
    }
    let mut hooks: Vec<&str> = delivered
        .iter()
        .map(|(r, _)| r.destination.as_str())
        .collect();
    hooks.sort_unstable();
    hooks.dedup();
    for hook in hooks {
        webhooks::delivery_succeeded(&app.db, hook).await?;
    }
    for _ in delivered {
        app.metrics
            .record_delivery(Channel::Webhook, Counted::Delivered);
    }
    Ok(())
}

/// Ends `row` without delivering it: retried at `retry_at`, else failed.
pub(crate) async fn not_delivered(
    app: &AppState,
    row: &Leased,
    status_code: Option<u16>,
    error: &str,
    retry_at: Option<i64>,
) -> anyhow::Result<()> {
    let outcome = Undelivered {
        status_code,
        error,
        retry_at,
    };
    outbox::undelivered(&app.db, row, &outcome, app.now()).await?;
    let counted = if retry_at.is_some() {
        Counted::Retried
    } else {
        Counted::Failed
    };
    app.metrics.record_delivery(row.channel, counted);
    Ok(())
}

/// An enabled webhook ready to sign with (its secrets opened once per batch), and what its
/// organization's payloads are redacted with.
struct Target {
    webhook: webhooks::Webhook,
    secrets: Vec<WebhookSecret>,
    /// Every string of a payload leaves with these redacted (a run's error may quote a token).
    redact: Vec<String>,
}

/// The batch's enabled webhooks, by id, each read and opened once.
async fn targets(app: &AppState, rows: &[&Leased]) -> anyhow::Result<HashMap<String, Target>> {
    let mut targets = HashMap::new();
    let mut redact: HashMap<String, Vec<String>> = HashMap::new();
    let now = app.now();
    for row in rows {
        if targets.contains_key(&row.destination) {
            continue;
        }
        let org = &row.organization_id;
        let webhook = webhooks::get(&app.db, org, &row.destination)
            .await?
            .filter(|w| w.enabled);
        let Some(webhook) = webhook else { continue };
        let binding = orgd_core::crypto::Binding::new(org, webhooks::secret_purpose(&webhook.id));
        let current = std::iter::once(webhook.secret.as_str());
        let previous = webhook
            .previous_secret
            .as_ref()
            .filter(|(_, until)| *until > now)
            .map(|(sealed, _)| sealed.as_str());
        let mut secrets = Vec::with_capacity(2);
        for sealed in current.chain(previous) {
            let opened = app.vault.open(sealed, &binding)?;
            secrets.push(
                WebhookSecret::parse(&opened.0)
                    .map_err(|e| anyhow::anyhow!("a stored webhook secret is unusable: {e:?}"))?,
            );
        }
        if !redact.contains_key(org) {
            let secrets = crate::redaction::secrets_to_redact(app, org).await?;
            redact.insert(org.clone(), secrets);
        }
        let redact = redact.get(org).cloned().unwrap_or_default();
        targets.insert(
            row.destination.clone(),
            Target {
                webhook,
                secrets,
                redact,
            },
        );
    }
    Ok(targets)
}

/// One attempt at one webhook row; `Some(status)` when delivered (recorded by the caller with
/// the batch's other successes).
async fn deliver_webhook(
    app: &AppState,
    row: Leased,
    target: Option<&Target>,
) -> anyhow::Result<Option<(Leased, u16)>> {
    let org = &row.organization_id;
    let Some(target) = target else {
        not_delivered(app, &row, None, "the webhook is disabled", None).await?;
        return Ok(None);
    };
    let webhook = &target.webhook;
    let signing: Vec<&WebhookSecret> = target.secrets.iter().collect();
    let mut event: Value = serde_json::from_str(&row.payload)?;
    redact_json(&mut event, &target.redact);
    let body = event.to_string();
    let delivery = Delivery {
        url: &webhook.url,
        id: &row.event_id,
        body: body.as_bytes(),
        secrets: &signing,
    };
    let outcome = app.webhooks.deliver(&delivery).await;
    let now = app.now();
    let (retry_at, failure) = match &outcome {
        DeliveryOutcome::Delivered { status } => return Ok(Some((row, *status))),
        DeliveryOutcome::Gone => (None, Failure::Gone),
        DeliveryOutcome::RetryLater {
            retry_after_secs, ..
        } => {
            let at = next_attempt(app, row.attempts, now, *retry_after_secs);
            (
                at,
                if at.is_some() {
                    Failure::Attempt
                } else {
                    Failure::Exhausted
                },
            )
        }
        DeliveryOutcome::Failed { .. } => {
            let at = next_attempt(app, row.attempts, now, None);
            (
                at,
                if at.is_some() {
                    Failure::Attempt
                } else {
                    Failure::Exhausted
                },
            )
        }
    };
    let error = outcome.error().unwrap_or_default();
    not_delivered(app, &row, outcome.status(), &error, retry_at).await?;
    let disable_after = i64::from(app.config.delivery.disable_after);
    if webhooks::delivery_failed(&app.db, org, &webhook.id, failure, disable_after, now).await? {
        tracing::warn!(webhook = %webhook.id, "a failing webhook was disabled");
        app.wake_outbox();
    }
    Ok(None)
}

/// The rows of one organization's Slack destination: one paced post (a digest when more than
/// `DIGEST_OVER` runs are due), the rest given back for the next turn.
async fn deliver_slack(app: &AppState, rows: Vec<Leased>) -> anyhow::Result<()> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let org = first.organization_id.clone();
    let Some(webhook) = slack_webhook(app, &org).await? else {
        for row in &rows {
            not_delivered(app, row, None, "the Slack integration is not enabled", None).await?;
        }
        return Ok(());
    };
    let key = outbox::pacing_key(&org, &first.destination);
    let now = app.now();
    if let Err(next) = outbox::take_turn(&app.db, &key, now, SLACK_GAP_MS).await? {
        for row in &rows {
            outbox::release(&app.db, row, next, now).await?;
        }
        return Ok(());
    }
    let (runs, others): (Vec<Leased>, Vec<Leased>) = rows
        .into_iter()
        .partition(|r| r.event_type == EXECUTION_FINISHED);
    let (sent, rest) = if runs.len() > DIGEST_OVER {
        (runs, others)
    } else {
        let mut all = runs;
        all.extend(others);
        all.sort_by(|a, b| a.id.cmp(&b.id));
        let rest = all.split_off(1);
        (all, rest)
    };
    for row in &rest {
        outbox::release(&app.db, row, now + SLACK_GAP_MS, now).await?;
    }
    let message = match slack_message(app, &org, &sent).await? {
        Some(message) => message,
        None => {
            for row in &sent {
                not_delivered(app, row, None, "the event could not be read", None).await?;
            }
            return Ok(());
        }
    };
    let posted = app.slack.post(&webhook, &message).await;
    let now = app.now();
    let error = match posted {
        Ok(()) => {
            let rows: Vec<&Leased> = sent.iter().collect();
            outbox::delivered(&app.db, &rows, Some(200), now).await?;
            for _ in &sent {
                app.metrics
                    .record_delivery(Channel::Slack, Counted::Delivered);
            }
            outbox::record_success(&app.db, &org, Integration::Slack.as_str(), now).await?;
            return Ok(());
        }
        Err(error) => error,
    };
    let text = error.to_string();
    match &error {
        SlackError::RateLimited { retry_after_secs } => {
            let until = now + (*retry_after_secs as i64) * 1000;
            outbox::hold_destination(&app.db, &key, until).await?;
            for row in &sent {
                outbox::release(&app.db, row, until, now).await?;
            }
            return Ok(());
        }
        SlackError::InvalidMessage { .. } => {
            // Our message is wrong: repeating it cannot help.
            tracing::error!(error = %text, "Slack refused a message orgd built");
        }
        _ => {}
    }
    let status = match &error {
        SlackError::ServerError { status, .. } | SlackError::WebhookRefused { status, .. } => {
            Some(*status)
        }
        SlackError::InvalidMessage { .. } => Some(400),
        _ => None,
    };
    for row in &sent {
        let retry_at = if error.is_retried() {
            next_attempt(app, row.attempts, now, None)
        } else {
            None
        };
        not_delivered(app, row, status, &text, retry_at).await?;
    }
    let disable_after = i64::from(app.config.delivery.disable_after);
    let disabled = outbox::record_failure(
        &app.db,
        &org,
        Integration::Slack,
        &text,
        error.is_permanent(),
        disable_after,
        now,
    )
    .await?;
    if disabled {
        tracing::warn!("a Slack integration was disabled after permanent failures");
        app.wake_outbox();
    }
    Ok(())
}

/// The organization's enabled Slack webhook, opened.
async fn slack_webhook(app: &AppState, org: &str) -> anyhow::Result<Option<SlackWebhook>> {
    let record = orgd_core::integrations::get(&app.db, org, Integration::Slack)
        .await?
        .filter(|r| r.enabled);
    let Some(record) = record else {
        return Ok(None);
    };
    let url = app.vault.open(
        &record.secret,
        &SecretTable::Integrations.binding(org, Integration::Slack.as_str()),
    )?;
    Ok(SlackWebhook::parse(&url.0))
}

/// A run's fields as the notice shows them, owned.
struct Run {
    task_id: String,
    status: String,
    trigger: Option<String>,
    group: Option<String>,
    duration_ms: Option<i64>,
    error: Option<String>,
    root_cause: Option<String>,
    url: Option<String>,
}

impl Run {
    fn notice(&self) -> RunNotice<'_> {
        RunNotice {
            task_id: &self.task_id,
            status: &self.status,
            trigger: self.trigger.as_deref(),
            group: self.group.as_deref(),
            duration_ms: self.duration_ms,
            error: self.error.as_deref(),
            root_cause: self.root_cause.as_deref(),
            url: self.url.as_deref(),
        }
    }
}

/// The Slack message for `rows` (a digest when there are several); `None` when an event
/// cannot be read. Text from the run has the organization's stored secrets redacted.
async fn slack_message(
    app: &AppState,
    org: &str,
    rows: &[Leased],
) -> anyhow::Result<Option<SlackMessage>> {
    let secrets = crate::redaction::secrets_to_redact(app, org).await?;
    let mut runs = Vec::with_capacity(rows.len());
    for row in rows {
        let Ok(event) = serde_json::from_str::<Value>(&row.payload) else {
            return Ok(None);
        };
        let data = &event["data"];
        match row.event_type.as_str() {
            EXECUTION_FINISHED => runs.push(run(app, org, &data["execution"], &secrets).await?),
            USAGE_THRESHOLD_CROSSED if rows.len() == 1 => {
                let text = |key: &str| data[key].as_str().unwrap_or_default().to_string();
                let (resource, level, period) = (text("resource"), text("level"), text("period"));
                return Ok(Some(slack::usage_threshold(&UsageNotice {
                    resource: &resource,
                    level: &level,
                    percent_used: data["percentUsed"].as_f64().unwrap_or(0.0),
                    used: data["used"].as_i64().unwrap_or(0),
                    limit: data["limit"].as_i64().unwrap_or(0),
                    period: &period,
                })));
            }
            INTEGRATION_DISABLED if rows.len() == 1 => {
                let what = match (data["provider"].as_str(), data["webhookId"].as_str()) {
                    (Some(provider), _) => Integration::parse(provider)
                        .map_or(provider.to_string(), |p| {
                            crate::trackers::outbound(p).display_name().to_string()
                        }),
                    (None, Some(id)) => format!("the webhook {id}"),
                    (None, None) => "an integration".to_string(),
                };
                let reason = data["reason"].as_str().unwrap_or_default();
                return Ok(Some(slack::integration_disabled(
                    &what,
                    &redact(reason, &secrets),
                )));
            }
            _ => return Ok(None),
        }
    }
    let notices: Vec<RunNotice<'_>> = runs.iter().map(Run::notice).collect();
    Ok(match notices.as_slice() {
        [] => None,
        [one] => Some(slack::run_finished(one)),
        many => Some(slack::digest(many)),
    })
}

/// The run of a frozen `execution.finished`, with its analysis' root cause as stored now.
async fn run(
    app: &AppState,
    org: &str,
    execution: &Value,
    secrets: &[String],
) -> anyhow::Result<Run> {
    let text = |key: &str| execution[key].as_str().map(str::to_string);
    let at = |key: &str| execution[key].as_str().and_then(parse_rfc3339);
    let task_id = text("taskId").unwrap_or_default();
    let root_cause = match execution["id"].as_str() {
        Some(id) => orgd_core::analysis::completed(&app.db, org, id)
            .await?
            .map(|(cause, _)| redact(&cause, secrets)),
        None => None,
    };
    let started = at("startedAt").or_else(|| at("createdAt"));
    Ok(Run {
        url: app
            .config
            .public_url
            .as_ref()
            .map(|base| format!("{base}/executions/{task_id}")),
        status: text("status").unwrap_or_default(),
        trigger: text("trigger"),
        group: text("groupName"),
        duration_ms: at("finishedAt")
            .zip(started)
            .map(|(end, start)| end - start),
        error: text("error").map(|e| redact(&e, secrets)),
        root_cause,
        task_id,
    })
}

//! The durable outbox (API.md, "Notifications and outgoing webhooks"): every event that
//! leaves orgd is a row per destination, written by `enqueue` inside the transaction of the
//! change that caused it, with its payload frozen. The delivery worker (the service's
//! `outbox` module) leases due rows with one conditional UPDATE (`lease`), fairly across
//! organizations, delivers them and records the outcome here; a lease that expires (the
//! instance died mid-delivery) makes the row due again. Delivered and failed rows are kept for
//! the retention period, then deleted (`delete_expired`).
//!
//! The core decides *what* is sent *where* and *when*; how a message is built and posted is
//! the service's (it owns the HTTP clients).

use serde_json::{Map, Value, json};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::audit::{self, AuditEvent};
use crate::clock::format_ms;
use crate::db::{Backend, Db, Tx};
use crate::error::CoreResult;
use crate::ids::new_id;
use crate::integrations::Integration;

pub const EXECUTION_FINISHED: &str = "execution.finished";
pub const ANALYSIS_COMPLETED: &str = "analysis.completed";
pub const USAGE_THRESHOLD_CROSSED: &str = "usage.threshold_crossed";
pub const MEMBER_JOINED: &str = "member.joined";
pub const MEMBER_REMOVED: &str = "member.removed";
pub const MEMBER_ROLE_CHANGED: &str = "member.role_changed";
pub const INTEGRATION_DISABLED: &str = "integration.disabled";
pub const WEBHOOK_TEST: &str = "webhook.test";

/// Every event type a subscriber can name (`webhook.test` is only sent on request).
pub const EVENT_TYPES: [&str; 7] = [
    EXECUTION_FINISHED,
    ANALYSIS_COMPLETED,
    USAGE_THRESHOLD_CROSSED,
    MEMBER_JOINED,
    MEMBER_REMOVED,
    MEMBER_ROLE_CHANGED,
    INTEGRATION_DISABLED,
];

/// Statuses a Slack integration posts when its settings name none.
pub const DEFAULT_SLACK_STATUSES: [&str; 3] = ["FAILED", "ERROR", "UNSTABLE"];

/// Where a row goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Slack,
    Webhook,
    /// The comment on the pull request a run reported (destination: the tracker's name).
    PullRequest,
}

impl Channel {
    pub const ALL: [Self; 3] = [Self::Slack, Self::Webhook, Self::PullRequest];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Webhook => "webhook",
            Self::PullRequest => "pull_request",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// An event to queue: its type and `data` (without `organizationId`, added here).
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub organization_id: &'a str,
    pub kind: &'static str,
    pub data: Map<String, Value>,
    /// For `execution.finished` of a run whose analysis was queued in the same transaction:
    /// the Slack row waits for that analysis until this instant (or until it is stored).
    pub analysis_wait_until: Option<(&'a str, i64)>,
}

/// The event as it leaves orgd: `{"type","id","timestamp","data":{"organizationId",…}}`.
fn payload(event: &NewEvent<'_>, id: &str, now: i64) -> Value {
    let mut data = Map::with_capacity(event.data.len() + 1);
    data.insert("organizationId".into(), json!(event.organization_id));
    data.extend(event.data.clone());
    json!({"type": event.kind, "id": id, "timestamp": format_ms(now), "data": data})
}

/// Whether the organization's Slack integration posts this event.
fn slack_wants(settings: &Map<String, Value>, event: &NewEvent<'_>) -> bool {
    match event.kind {
        EXECUTION_FINISHED => {
            let status = event.data["execution"]["status"].as_str().unwrap_or("");
            match settings.get("events").and_then(Value::as_array) {
                Some(events) => events.iter().any(|e| e.as_str() == Some(status)),
                None => DEFAULT_SLACK_STATUSES.contains(&status),
            }
        }
        USAGE_THRESHOLD_CROSSED => true,
        // Slack is not told that Slack itself was disabled.
        INTEGRATION_DISABLED => event.data.get("provider") != Some(&json!("slack")),
        _ => false,
    }
}

/// Queues `event` for every destination that takes it, inside the caller's transaction; the
/// event's id (the same for all its rows). Nothing is written when no destination takes it.
pub async fn enqueue(tx: &mut Tx, event: &NewEvent<'_>, now: i64) -> CoreResult<String> {
    let event_id = new_id(now);
    let body = payload(event, &event_id, now).to_string();
    let slack: Option<String> = sqlx::query_scalar(
        "SELECT settings FROM integrations WHERE organization_id = $1 AND provider = 'slack' AND enabled = 1",
    )
    .bind(event.organization_id)
    .fetch_optional(&mut **tx)
    .await?;
    let slack_settings = slack
        .and_then(|s| serde_json::from_str::<Map<String, Value>>(&s).ok())
        .filter(|settings| slack_wants(settings, event));
    // Messages that show the run's analysis wait for it (up to a bound).
    let (waits_for, analysed_due_at) = match event.analysis_wait_until {
        Some((execution_id, until)) => (Some(execution_id), until),
        None => (None, now),
    };
    if slack_settings.is_some() {
        insert_row(
            tx,
            event,
            &event_id,
            &body,
            Channel::Slack,
            Integration::Slack.as_str(),
            analysed_due_at,
            waits_for,
            now,
        )
        .await?;
    }
    if let Some(tracker) = pull_request_tracker(tx, event).await? {
        insert_row(
            tx,
            event,
            &event_id,
            &body,
            Channel::PullRequest,
            tracker.as_str(),
            analysed_due_at,
            waits_for,
            now,
        )
        .await?;
    }
    let webhooks: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, events FROM webhooks WHERE organization_id = $1 AND enabled = 1 ORDER BY id",
    )
    .bind(event.organization_id)
    .fetch_all(&mut **tx)
    .await?;
    for (webhook_id, events) in webhooks {
        // The disabled webhook is not told about itself.
        if event.data.get("webhookId") == Some(&json!(webhook_id)) {
            continue;
        }
        let subscribed = serde_json::from_str::<Vec<String>>(&events)
            .unwrap_or_default()
            .iter()
            .any(|e| e == "*" || e == event.kind);
        if subscribed {
            insert_row(
                tx,
                event,
                &event_id,
                &body,
                Channel::Webhook,
                &webhook_id,
                now,
                None,
                now,
            )
            .await?;
        }
    }
    Ok(event_id)
}

/// The tracker a finished run's pull-request comment goes to: the run's `ci.provider`, when
/// that integration is connected and enabled.
async fn pull_request_tracker(
    tx: &mut Tx,
    event: &NewEvent<'_>,
) -> CoreResult<Option<Integration>> {
    if event.kind != EXECUTION_FINISHED {
        return Ok(None);
    }
    let tracker = event
        .data
        .get("execution")
        .and_then(|execution| execution["ci"]["provider"].as_str())
        .and_then(Integration::parse)
        .filter(|p| crate::pull_requests::CI_PROVIDERS.contains(p));
    let Some(tracker) = tracker else {
        return Ok(None);
    };
    let enabled: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM integrations WHERE organization_id = $1 AND provider = $2 AND enabled = 1",
    )
    .bind(event.organization_id)
    .bind(tracker.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    Ok(enabled.map(|_| tracker))
}

/// A member as member events carry them.
pub struct MemberNotice<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub email: &'a str,
    pub role: &'a str,
}

/// Queues `member.joined`, `member.removed` or `member.role_changed` in the caller's
/// transaction.
pub async fn member_event(
    tx: &mut Tx,
    organization_id: &str,
    kind: &'static str,
    member: &MemberNotice<'_>,
    previous_role: Option<&str>,
    now: i64,
) -> CoreResult<()> {
    let mut data = Map::new();
    data.insert(
        "member".into(),
        json!({"id": member.id, "name": member.name, "email": member.email, "role": member.role}),
    );
    if let Some(previous) = previous_role {
        data.insert("previousRole".into(), json!(previous));
    }
    let event = NewEvent {
        organization_id,
        kind,
        data,
        analysis_wait_until: None,
    };
    enqueue(tx, &event, now).await?;
    Ok(())
}

/// Queues `event` for one webhook only (its test event, a retry of a delivery).
pub async fn enqueue_to_webhook(
    tx: &mut Tx,
    event: &NewEvent<'_>,
    webhook_id: &str,
    now: i64,
) -> CoreResult<String> {
    let event_id = new_id(now);
    let body = payload(event, &event_id, now).to_string();
    insert_row(
        tx,
        event,
        &event_id,
        &body,
        Channel::Webhook,
        webhook_id,
        now,
        None,
        now,
    )
    .await?;
    Ok(event_id)
}

#[allow(clippy::too_many_arguments)]
async fn insert_row(
    tx: &mut Tx,
    event: &NewEvent<'_>,
    event_id: &str,
    body: &str,
    channel: Channel,
    destination: &str,
    due_at: i64,
    waits_for: Option<&str>,
    now: i64,
) -> CoreResult<()> {
    sqlx::query(
        "INSERT INTO outbox (id, organization_id, event_id, event_type, channel, destination, payload,
                             status, attempts, due_at, lease_until, waits_for, last_status_code, last_error,
                             created_at, delivered_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, NULL, $9, NULL, NULL, $10, NULL, $10)",
    )
    .bind(new_id(now))
    .bind(event.organization_id)
    .bind(event_id)
    .bind(event.kind)
    .bind(channel.as_str())
    .bind(destination)
    .bind(body)
    .bind(due_at)
    .bind(waits_for)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Makes the rows waiting for this execution's analysis due now (the analysis was stored).
pub async fn analysis_stored(tx: &mut Tx, execution_id: &str, now: i64) -> CoreResult<()> {
    sqlx::query(
        "UPDATE outbox SET due_at = $2, updated_at = $2
         WHERE waits_for = $1 AND status = 'pending' AND due_at > $2",
    )
    .bind(execution_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A row the worker now owns, until `lease_until`.
#[derive(Debug, Clone)]
pub struct Leased {
    pub id: String,
    pub organization_id: String,
    pub event_id: String,
    pub event_type: String,
    pub channel: Channel,
    pub destination: String,
    pub payload: String,
    /// Attempts including this one.
    pub attempts: i64,
    pub created_at: i64,
    pub lease_until: i64,
}

fn leased_from_row(row: &AnyRow) -> CoreResult<Leased> {
    let channel: String = row.try_get("channel")?;
    Ok(Leased {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        channel: Channel::parse(&channel)
            .ok_or_else(|| crate::error::CoreError::Corrupt(format!("outbox channel {channel}")))?,
        destination: row.try_get("destination")?,
        payload: row.try_get("payload")?,
        attempts: row.try_get("attempts")?,
        created_at: row.try_get("created_at")?,
        lease_until: row.try_get("lease_until")?,
    })
}

/// The condition of a row that may be leased at `$1`: due and pending, or delivering under a
/// lease that expired (its worker died).
const LEASABLE: &str =
    "((status = 'pending' AND due_at <= $1) OR (status = 'delivering' AND lease_until < $1))";

/// Takes up to `limit` due rows, until `lease_until`. Fair across organizations: each
/// organization's rows are ranked by due time and the batch takes every organization's first
/// row before anyone's second, so one organization's backlog never delays another's first
/// message. One UPDATE decides: its outer condition repeats the inner one, so when two
/// workers pick the same row the second finds it leased and skips it.
pub async fn lease(db: &Db, now: i64, lease_until: i64, limit: i64) -> CoreResult<Vec<Leased>> {
    // PostgreSQL: rows another worker is leasing right now are skipped rather than waited
    // for (two UPDATEs locking overlapping rows in different orders could deadlock). SQLite
    // has one writer at a time and no row locks.
    let skip_locked = match db.backend() {
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "UPDATE outbox SET status = 'delivering', attempts = attempts + 1, lease_until = $2, updated_at = $1
         WHERE id IN (
             SELECT id FROM outbox WHERE id IN (
                 SELECT id FROM (
                     SELECT id, due_at, ROW_NUMBER() OVER (PARTITION BY organization_id ORDER BY due_at, id) AS turn
                     FROM outbox WHERE {LEASABLE}
                 ) ranked ORDER BY turn, due_at, id LIMIT $3)
             {skip_locked})
           AND {LEASABLE}
         RETURNING id, organization_id, event_id, event_type, channel, destination, payload, attempts,
                   created_at, lease_until"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(now)
        .bind(lease_until)
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
    let mut leased = rows
        .iter()
        .map(leased_from_row)
        .collect::<CoreResult<Vec<_>>>()?;
    // RETURNING has no order; keep the fair one for the caller.
    leased.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(leased)
}

/// Marks leased rows delivered (one statement for many).
pub async fn delivered(
    db: &Db,
    rows: &[&Leased],
    status_code: Option<u16>,
    now: i64,
) -> CoreResult<()> {
    for chunk in rows.chunks(200) {
        let placeholders: Vec<String> = (3..chunk.len() + 3).map(|n| format!("${n}")).collect();
        let sql = format!(
            "UPDATE outbox SET status = 'delivered', lease_until = NULL, delivered_at = $1, updated_at = $1,
                last_status_code = $2, last_error = NULL
             WHERE status = 'delivering' AND id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .bind(status_code.map(i64::from));
        for row in chunk {
            query = query.bind(&row.id);
        }
        query.execute(db.pool()).await?;
    }
    Ok(())
}

/// What became of one attempt that did not deliver.
#[derive(Debug, Clone)]
pub struct Undelivered<'a> {
    pub status_code: Option<u16>,
    /// In our words (never a secret or a receiver's body).
    pub error: &'a str,
    /// `Some(at)`: try again at `at`; `None`: no more attempts, the row failed.
    pub retry_at: Option<i64>,
}

/// Records a failed attempt: the row is due again at `retry_at`, or failed for good.
pub async fn undelivered(
    db: &Db,
    row: &Leased,
    outcome: &Undelivered<'_>,
    now: i64,
) -> CoreResult<()> {
    sqlx::query(
        "UPDATE outbox SET status = $2, due_at = COALESCE($3, due_at), lease_until = NULL,
            last_status_code = $4, last_error = $5, updated_at = $6
         WHERE id = $1 AND status = 'delivering'",
    )
    .bind(&row.id)
    .bind(if outcome.retry_at.is_some() {
        "pending"
    } else {
        "failed"
    })
    .bind(outcome.retry_at)
    .bind(outcome.status_code.map(i64::from))
    .bind(outcome.error)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Gives a leased row back without counting the attempt: it is due at `due_at` (a paced
/// destination's next turn, a rate limit's end).
pub async fn release(db: &Db, row: &Leased, due_at: i64, now: i64) -> CoreResult<()> {
    sqlx::query(
        "UPDATE outbox SET status = 'pending', attempts = attempts - 1, due_at = $2, lease_until = NULL,
            updated_at = $3
         WHERE id = $1 AND status = 'delivering'",
    )
    .bind(&row.id)
    .bind(due_at)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Takes the destination's turn if it is free at `now` and books the next one `gap_ms`
/// later; otherwise the instant the turn frees. One conditional statement, shared by every
/// instance: two workers can never both take one turn.
pub async fn take_turn(
    db: &Db,
    destination: &str,
    now: i64,
    gap_ms: i64,
) -> CoreResult<Result<(), i64>> {
    let taken = sqlx::query(
        "INSERT INTO delivery_pacing (destination, next_at) VALUES ($1, $2)
         ON CONFLICT (destination) DO UPDATE SET next_at = $2 WHERE delivery_pacing.next_at <= $3",
    )
    .bind(destination)
    .bind(now + gap_ms)
    .bind(now)
    .execute(db.pool())
    .await?;
    if taken.rows_affected() == 1 {
        return Ok(Ok(()));
    }
    let next: Option<i64> =
        sqlx::query_scalar("SELECT next_at FROM delivery_pacing WHERE destination = $1")
            .bind(destination)
            .fetch_optional(db.pool())
            .await?;
    Ok(Err(next.unwrap_or(now)))
}

/// Keeps the destination silent until `until` (Slack answered 429 with `Retry-After`).
pub async fn hold_destination(db: &Db, destination: &str, until: i64) -> CoreResult<()> {
    sqlx::query(
        "INSERT INTO delivery_pacing (destination, next_at) VALUES ($1, $2)
         ON CONFLICT (destination) DO UPDATE SET next_at = $2 WHERE delivery_pacing.next_at < $2",
    )
    .bind(destination)
    .bind(until)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The pacing key of an organization's destination.
pub fn pacing_key(organization_id: &str, destination: &str) -> String {
    format!("{organization_id}:{destination}")
}

/// Deletes delivered and failed rows last changed before `cutoff`; how many.
pub async fn delete_expired(db: &Db, cutoff: i64) -> CoreResult<u64> {
    let deleted = sqlx::query(
        "DELETE FROM outbox WHERE status IN ('delivered', 'failed') AND updated_at < $1",
    )
    .bind(cutoff)
    .execute(db.pool())
    .await?;
    Ok(deleted.rows_affected())
}

/// Rows not yet delivered or failed, and since when the longest-due of them has waited (ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub pending: i64,
    pub oldest_due_ms: i64,
}

pub async fn backlog(db: &Db, now: i64) -> CoreResult<Backlog> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS pending,
                CAST(MIN(CASE WHEN due_at <= $1 THEN due_at END) AS BIGINT) AS oldest
         FROM outbox WHERE status IN ('pending', 'delivering')",
    )
    .bind(now)
    .fetch_one(db.pool())
    .await?;
    let oldest: Option<i64> = row.try_get("oldest")?;
    Ok(Backlog {
        pending: row.try_get("pending")?,
        oldest_due_ms: oldest.map_or(0, |at| (now - at).max(0)),
    })
}

/// How the calls made with one saved integration went (`GET /api/integrations/:provider`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    pub last_success_at: Option<i64>,
    pub last_failure_at: Option<i64>,
    pub last_error: Option<String>,
    pub consecutive_failures: i64,
}

pub async fn health(db: &Db, organization_id: &str, provider: &str) -> CoreResult<Option<Health>> {
    let row = sqlx::query(
        "SELECT last_success_at, last_failure_at, last_error, consecutive_failures
         FROM integration_health WHERE organization_id = $1 AND provider = $2",
    )
    .bind(organization_id)
    .bind(provider)
    .fetch_optional(db.pool())
    .await?;
    row.map(|row| {
        Ok(Health {
            last_success_at: row.try_get("last_success_at")?,
            last_failure_at: row.try_get("last_failure_at")?,
            last_error: row.try_get("last_error")?,
            consecutive_failures: row.try_get("consecutive_failures")?,
        })
    })
    .transpose()
}

/// A call with the integration succeeded.
pub async fn record_success(
    db: &Db,
    organization_id: &str,
    provider: &str,
    now: i64,
) -> CoreResult<()> {
    sqlx::query(
        "INSERT INTO integration_health (organization_id, provider, last_success_at, consecutive_failures, permanent_failures)
         VALUES ($1, $2, $3, 0, 0)
         ON CONFLICT (organization_id, provider) DO UPDATE SET last_success_at = $3, consecutive_failures = 0,
            permanent_failures = 0",
    )
    .bind(organization_id)
    .bind(provider)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// A call with the integration failed, `error` in our words. A permanent failure (the
/// provider refused the credential or the destination is gone) counts toward disabling: at
/// `disable_after` in a row the integration is disabled, audited with actor system, and the
/// `integration.disabled` event queued — all in one transaction. True when it was disabled.
pub async fn record_failure(
    db: &Db,
    organization_id: &str,
    provider: Integration,
    error: &str,
    permanent: bool,
    disable_after: i64,
    now: i64,
) -> CoreResult<bool> {
    let mut tx = db.begin_write().await?;
    let failures: i64 = sqlx::query_scalar(
        "INSERT INTO integration_health (organization_id, provider, last_failure_at, last_error,
                                         consecutive_failures, permanent_failures)
         VALUES ($1, $2, $3, $4, 1, $5)
         ON CONFLICT (organization_id, provider) DO UPDATE SET last_failure_at = $3, last_error = $4,
            consecutive_failures = integration_health.consecutive_failures + 1,
            permanent_failures = integration_health.permanent_failures + $5
         RETURNING permanent_failures",
    )
    .bind(organization_id)
    .bind(provider.as_str())
    .bind(now)
    .bind(error)
    .bind(i64::from(permanent))
    .fetch_one(&mut *tx)
    .await?;
    let mut disabled = false;
    if permanent && failures >= disable_after {
        disabled = sqlx::query(
            "UPDATE integrations SET enabled = 0, version = version + 1, updated_at = $3
             WHERE organization_id = $1 AND provider = $2 AND enabled = 1",
        )
        .bind(organization_id)
        .bind(provider.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if disabled {
            let reason = format!("{failures} permanent failures in a row; last: {error}");
            let audit = AuditEvent::by_system(
                organization_id,
                "integration.disabled",
                "integration",
                provider.as_str(),
            )
            .with_details(json!({"provider": provider.as_str(), "reason": reason}));
            audit::insert(&mut tx, &audit, now).await?;
            let mut data = Map::new();
            data.insert("provider".into(), json!(provider.as_str()));
            data.insert("reason".into(), json!(reason));
            let event = NewEvent {
                organization_id,
                kind: INTEGRATION_DISABLED,
                data,
                analysis_wait_until: None,
            };
            enqueue(&mut tx, &event, now).await?;
        }
    }
    tx.commit().await?;
    Ok(disabled)
}

/// A call with a tracker failed. Trackers are never disabled for failing (an admin fixes
/// their settings): the failure only feeds the integration's health.
pub async fn record_tracker_failure(
    db: &Db,
    organization_id: &str,
    provider: Integration,
    error: &str,
    now: i64,
) -> CoreResult<()> {
    record_failure(db, organization_id, provider, error, false, i64::MAX, now).await?;
    Ok(())
}

/// Forgets the integration's health (new credentials were saved).
pub async fn reset_health(tx: &mut Tx, organization_id: &str, provider: &str) -> CoreResult<()> {
    sqlx::query("DELETE FROM integration_health WHERE organization_id = $1 AND provider = $2")
        .bind(organization_id)
        .bind(provider)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{NOW, databases, organization};
    use std::collections::HashSet;

    async fn webhook(db: &Db, org: &str, id: &str, events: &str) {
        sqlx::query(
            "INSERT INTO webhooks (id, organization_id, url, events, description, enabled, secret, created_at, updated_at)
             VALUES ($1, $2, 'https://example.com', $3, NULL, 1, 'x', $4, $4)",
        )
        .bind(id)
        .bind(org)
        .bind(events)
        .bind(NOW)
        .execute(db.pool())
        .await
        .expect("webhook");
    }

    async fn queue(db: &Db, org: &str, kind: &'static str, now: i64) -> String {
        let mut tx = db.begin_write().await.expect("tx");
        let event = NewEvent {
            organization_id: org,
            kind,
            data: Map::new(),
            analysis_wait_until: None,
        };
        let id = enqueue(&mut tx, &event, now).await.expect("enqueue");
        tx.commit().await.expect("commit");
        id
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_fan_out_to_subscribed_destinations_with_frozen_payloads() {
        for test in databases().await {
            let db = &test.db;
            let org = organization(db, "free", "{}").await;
            webhook(db, &org, "all", r#"["*"]"#).await;
            webhook(db, &org, "members", r#"["member.joined"]"#).await;
            let id = queue(db, &org, MEMBER_JOINED, NOW).await;
            queue(db, &org, ANALYSIS_COMPLETED, NOW).await;
            let rows = lease(db, NOW, NOW + 1000, 10).await.expect("lease");
            assert_eq!(rows.len(), 3);
            let joined: Vec<&Leased> = rows.iter().filter(|r| r.event_id == id).collect();
            assert_eq!(joined.len(), 2, "one row per subscribed webhook");
            let payload: Value = serde_json::from_str(&joined[0].payload).expect("json");
            assert_eq!(payload["type"], "member.joined");
            assert_eq!(payload["id"], id.as_str());
            assert_eq!(payload["data"]["organizationId"], org.as_str());
            assert!(payload["timestamp"].as_str().is_some());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_workers_never_lease_one_row() {
        for test in databases().await {
            let db = &test.db;
            let org = organization(db, "free", "{}").await;
            webhook(db, &org, "all", r#"["*"]"#).await;
            for _ in 0..200 {
                queue(db, &org, MEMBER_JOINED, NOW).await;
            }
            let workers: Vec<_> = (0..6)
                .map(|_| {
                    let db = db.clone();
                    tokio::spawn(async move {
                        let mut mine = Vec::new();
                        loop {
                            let rows = lease(&db, NOW, NOW + 60_000, 7).await.expect("lease");
                            if rows.is_empty() {
                                return mine;
                            }
                            mine.extend(rows.into_iter().map(|r| r.id));
                        }
                    })
                })
                .collect();
            let mut seen = HashSet::new();
            let mut total = 0;
            for worker in workers {
                for id in worker.await.expect("worker") {
                    total += 1;
                    assert!(seen.insert(id), "a row was leased twice");
                }
            }
            assert_eq!(total, 200);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leases_are_fair_across_organizations() {
        for test in databases().await {
            let db = &test.db;
            let busy = organization(db, "free", "{}").await;
            let quiet = organization(db, "free", "{}").await;
            webhook(db, &busy, "busy", r#"["*"]"#).await;
            webhook(db, &quiet, "quiet", r#"["*"]"#).await;
            for _ in 0..50 {
                queue(db, &busy, MEMBER_JOINED, NOW - 1000).await;
            }
            queue(db, &quiet, MEMBER_JOINED, NOW).await;
            let rows = lease(db, NOW, NOW + 1000, 5).await.expect("lease");
            assert_eq!(rows.len(), 5);
            assert!(
                rows.iter().any(|r| r.organization_id == quiet),
                "the quiet organization's first event is not behind the busy one's backlog"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retries_expired_leases_releases_and_retention() {
        for test in databases().await {
            let db = &test.db;
            let org = organization(db, "free", "{}").await;
            webhook(db, &org, "all", r#"["*"]"#).await;
            queue(db, &org, MEMBER_JOINED, NOW).await;
            let [row] =
                <[Leased; 1]>::try_from(lease(db, NOW, NOW + 1000, 10).await.expect("lease"))
                    .expect("one row");
            assert_eq!(row.attempts, 1);
            assert!(
                lease(db, NOW + 500, NOW + 1500, 10)
                    .await
                    .expect("lease")
                    .is_empty()
            );
            // The worker died: once the lease expired the row is leased again.
            let again = lease(db, NOW + 1001, NOW + 2000, 10).await.expect("lease");
            assert_eq!(again.len(), 1);
            assert_eq!(again[0].attempts, 2);
            // A retry is due at its time, not before.
            let retry = Undelivered {
                status_code: Some(500),
                error: "answered 500",
                retry_at: Some(NOW + 5000),
            };
            undelivered(db, &again[0], &retry, NOW + 1100)
                .await
                .expect("retry");
            assert!(
                lease(db, NOW + 4999, NOW + 6000, 10)
                    .await
                    .expect("lease")
                    .is_empty()
            );
            let third = lease(db, NOW + 5000, NOW + 6000, 10).await.expect("lease");
            assert_eq!(third[0].attempts, 3);
            // Given back without counting (pacing).
            release(db, &third[0], NOW + 5500, NOW + 5000)
                .await
                .expect("release");
            let fourth = lease(db, NOW + 5500, NOW + 6500, 10).await.expect("lease");
            assert_eq!(fourth[0].attempts, 3);
            let done: Vec<&Leased> = fourth.iter().collect();
            delivered(db, &done, Some(200), NOW + 5600)
                .await
                .expect("delivered");
            assert_eq!(backlog(db, NOW + 6000).await.expect("backlog").pending, 0);
            // A failed row and a delivered one are deleted only after the retention.
            queue(db, &org, MEMBER_JOINED, NOW + 6000).await;
            let failing = lease(db, NOW + 6000, NOW + 7000, 10).await.expect("lease");
            let give_up = Undelivered {
                status_code: None,
                error: "timed out",
                retry_at: None,
            };
            undelivered(db, &failing[0], &give_up, NOW + 6000)
                .await
                .expect("failed");
            assert_eq!(delete_expired(db, NOW + 5600).await.expect("retention"), 0);
            assert_eq!(delete_expired(db, NOW + 6001).await.expect("retention"), 2);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pacing_gives_one_turn_per_gap_and_backlog_counts_due_rows() {
        for test in databases().await {
            let db = &test.db;
            assert_eq!(
                take_turn(db, "o:slack", NOW, 1000).await.expect("turn"),
                Ok(())
            );
            assert_eq!(
                take_turn(db, "o:slack", NOW + 10, 1000)
                    .await
                    .expect("turn"),
                Err(NOW + 1000)
            );
            assert_eq!(
                take_turn(db, "other", NOW + 10, 1000).await.expect("turn"),
                Ok(())
            );
            assert_eq!(
                take_turn(db, "o:slack", NOW + 1000, 1000)
                    .await
                    .expect("turn"),
                Ok(())
            );
            hold_destination(db, "o:slack", NOW + 30_000)
                .await
                .expect("hold");
            assert_eq!(
                take_turn(db, "o:slack", NOW + 2000, 1000)
                    .await
                    .expect("turn"),
                Err(NOW + 30_000)
            );
            let org = organization(db, "free", "{}").await;
            webhook(db, &org, "all", r#"["*"]"#).await;
            queue(db, &org, MEMBER_JOINED, NOW).await;
            let backlog = backlog(db, NOW + 3000).await.expect("backlog");
            assert_eq!(
                backlog,
                Backlog {
                    pending: 1,
                    oldest_due_ms: 3000
                }
            );
        }
    }
}

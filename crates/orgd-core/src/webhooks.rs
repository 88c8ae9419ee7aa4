//! Outgoing webhooks (API.md, "Outgoing webhooks"): an organization's receivers, their sealed
//! signing secrets (with the previous one during a rotation), their delivery log (the outbox
//! rows of channel `webhook`), and the rule that disables a receiver that keeps failing.

use serde_json::{Map, Value, json};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::audit::{self, AuditEvent};
use crate::db::{Db, Tx, flag};
use crate::error::CoreResult;
use crate::idempotency::{self, Replay};
use crate::outbox::{self, INTEGRATION_DISABLED, NewEvent, WEBHOOK_TEST};

/// At most this many webhooks per organization.
pub const MAX_WEBHOOKS: i64 = 10;
/// How long the previous secret keeps signing after a rotation.
pub const ROTATION_OVERLAP_MS: i64 = 24 * 3600 * 1000;
/// A webhook failing for this long without a success is disabled.
pub const FAILING_FOR_MS: i64 = 5 * 86_400_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    pub organization_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub created_at: i64,
    /// Sealed for `binding(organization_id, id)`.
    pub secret: String,
    /// The previous sealed secret and until when it still signs.
    pub previous_secret: Option<(String, i64)>,
}

/// The vault purpose a webhook's secret is sealed for.
pub fn secret_purpose(webhook_id: &str) -> String {
    format!("webhook:{webhook_id}")
}

const COLUMNS: &str = "id, organization_id, url, events, description, enabled, created_at, secret,
    previous_secret, previous_secret_until";

fn from_row(row: &AnyRow) -> CoreResult<Webhook> {
    let events: String = row.try_get("events")?;
    let previous: Option<String> = row.try_get("previous_secret")?;
    let until: Option<i64> = row.try_get("previous_secret_until")?;
    Ok(Webhook {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        url: row.try_get("url")?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        description: row.try_get("description")?,
        enabled: flag(row.try_get("enabled")?),
        created_at: row.try_get("created_at")?,
        secret: row.try_get("secret")?,
        previous_secret: previous.zip(until),
    })
}

pub enum Created {
    Created(Box<Webhook>),
    LimitReached,
}

/// Creates the webhook (its secret already sealed for its id) unless the organization has
/// `MAX_WEBHOOKS`; with its audit entry and idempotent answer, in one transaction.
pub async fn create(
    db: &Db,
    webhook: &Webhook,
    audit: &AuditEvent,
    replay: Option<&Replay<'_, Webhook>>,
    now: i64,
) -> CoreResult<Created> {
    let mut tx = db.begin_write().await?;
    tx.lock_organization(&webhook.organization_id).await?;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhooks WHERE organization_id = $1")
        .bind(&webhook.organization_id)
        .fetch_one(&mut *tx)
        .await?;
    if count >= MAX_WEBHOOKS {
        return Ok(Created::LimitReached);
    }
    sqlx::query(
        "INSERT INTO webhooks (id, organization_id, url, events, description, enabled, secret,
                               previous_secret, previous_secret_until, consecutive_failures, failing_since,
                               created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, 0, NULL, $8, $8)",
    )
    .bind(&webhook.id)
    .bind(&webhook.organization_id)
    .bind(&webhook.url)
    .bind(json!(webhook.events).to_string())
    .bind(webhook.description.as_deref())
    .bind(i64::from(webhook.enabled))
    .bind(&webhook.secret)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    audit::insert(&mut tx, audit, now).await?;
    idempotency::store(&mut tx, replay, webhook).await?;
    tx.commit().await?;
    Ok(Created::Created(Box::new(webhook.clone())))
}

pub async fn list(db: &Db, organization_id: &str) -> CoreResult<Vec<Webhook>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM webhooks WHERE organization_id = $1 ORDER BY created_at, id"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(organization_id)
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(from_row).collect()
}

pub async fn get(db: &Db, organization_id: &str, id: &str) -> CoreResult<Option<Webhook>> {
    let sql = format!("SELECT {COLUMNS} FROM webhooks WHERE organization_id = $1 AND id = $2");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(organization_id)
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// A change to a webhook; `None` keeps the field.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

/// Applies `patch` with its audit entry; switching a webhook on clears its failure record.
pub async fn update(
    db: &Db,
    organization_id: &str,
    id: &str,
    patch: &WebhookPatch,
    audit: &AuditEvent,
    now: i64,
) -> CoreResult<Option<Webhook>> {
    let mut tx = db.begin_write().await?;
    let updated = sqlx::query(
        "UPDATE webhooks SET url = COALESCE($3, url), events = COALESCE($4, events),
            description = CASE WHEN $5 = 1 THEN $6 ELSE description END,
            enabled = COALESCE($7, enabled),
            consecutive_failures = CASE WHEN $7 = 1 THEN 0 ELSE consecutive_failures END,
            failing_since = CASE WHEN $7 = 1 THEN NULL ELSE failing_since END,
            updated_at = $8
         WHERE organization_id = $1 AND id = $2",
    )
    .bind(organization_id)
    .bind(id)
    .bind(patch.url.as_deref())
    .bind(patch.events.as_ref().map(|e| json!(e).to_string()))
    .bind(i64::from(patch.description.is_some()))
    .bind(patch.description.clone().flatten())
    .bind(patch.enabled.map(i64::from))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    audit::insert(&mut tx, audit, now).await?;
    tx.commit().await?;
    get(db, organization_id, id).await
}

/// Deletes the webhook and the deliveries still waiting for it, with its audit entry.
pub async fn delete(
    db: &Db,
    organization_id: &str,
    id: &str,
    audit: &AuditEvent,
    now: i64,
) -> CoreResult<bool> {
    let mut tx = db.begin_write().await?;
    let deleted = sqlx::query("DELETE FROM webhooks WHERE organization_id = $1 AND id = $2")
        .bind(organization_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if deleted.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "DELETE FROM outbox WHERE organization_id = $1 AND channel = 'webhook' AND destination = $2",
    )
    .bind(organization_id)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    audit::insert(&mut tx, audit, now).await?;
    tx.commit().await?;
    Ok(true)
}

/// Replaces the secret with `sealed`; the current one keeps signing for 24 h.
pub async fn rotate_secret(
    db: &Db,
    organization_id: &str,
    id: &str,
    sealed: &str,
    audit: &AuditEvent,
    now: i64,
) -> CoreResult<bool> {
    let mut tx = db.begin_write().await?;
    let rotated = sqlx::query(
        "UPDATE webhooks SET previous_secret = secret, previous_secret_until = $3, secret = $4, updated_at = $5
         WHERE organization_id = $1 AND id = $2",
    )
    .bind(organization_id)
    .bind(id)
    .bind(now + ROTATION_OVERLAP_MS)
    .bind(sealed)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if rotated.rows_affected() == 0 {
        return Ok(false);
    }
    audit::insert(&mut tx, audit, now).await?;
    tx.commit().await?;
    Ok(true)
}

/// One delivery of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: String,
    pub event_type: String,
    /// `pending` (also while being delivered), `delivered` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

/// A page of the webhook's deliveries, newest first, after `cursor` (a delivery id); the
/// cursor of the next page.
pub async fn deliveries(
    db: &Db,
    organization_id: &str,
    webhook_id: &str,
    status: Option<&str>,
    limit: i64,
    cursor: Option<&str>,
) -> CoreResult<(Vec<DeliveryRecord>, Option<String>)> {
    let rows = sqlx::query(
        "SELECT id, event_type, status, attempts, last_status_code, last_error, due_at, created_at, delivered_at
         FROM outbox
         WHERE organization_id = $1 AND channel = 'webhook' AND destination = $2
           AND ($3 IS NULL OR id < $3)
           AND ($4 IS NULL OR status = $4 OR ($4 = 'pending' AND status = 'delivering'))
         ORDER BY id DESC LIMIT $5",
    )
    .bind(organization_id)
    .bind(webhook_id)
    .bind(cursor)
    .bind(status)
    .bind(limit + 1)
    .fetch_all(db.pool())
    .await?;
    let mut page = rows
        .iter()
        .map(|row| {
            let status: String = row.try_get("status")?;
            let pending = status == "pending" || status == "delivering";
            let due_at: i64 = row.try_get("due_at")?;
            Ok(DeliveryRecord {
                id: row.try_get("id")?,
                event_type: row.try_get("event_type")?,
                status: if pending { "pending".into() } else { status },
                attempts: row.try_get("attempts")?,
                last_status_code: row.try_get("last_status_code")?,
                last_error: row.try_get("last_error")?,
                next_attempt_at: pending.then_some(due_at),
                created_at: row.try_get("created_at")?,
                delivered_at: row.try_get("delivered_at")?,
            })
        })
        .collect::<CoreResult<Vec<_>>>()?;
    let next = if page.len() as i64 > limit {
        page.truncate(limit as usize);
        page.last().map(|d| d.id.clone())
    } else {
        None
    };
    Ok((page, next))
}

/// Queues a delivery again now, its attempts counted from zero; false when there is no such
/// delivery of this webhook.
pub async fn retry_delivery(
    db: &Db,
    organization_id: &str,
    webhook_id: &str,
    delivery_id: &str,
    now: i64,
) -> CoreResult<bool> {
    let retried = sqlx::query(
        "UPDATE outbox SET status = 'pending', attempts = 0, due_at = $4, lease_until = NULL, updated_at = $4
         WHERE organization_id = $1 AND channel = 'webhook' AND destination = $2 AND id = $3
           AND status <> 'delivering'",
    )
    .bind(organization_id)
    .bind(webhook_id)
    .bind(delivery_id)
    .bind(now)
    .execute(db.pool())
    .await?;
    if retried.rows_affected() == 1 {
        return Ok(true);
    }
    // Being delivered right now: it is queued already.
    let exists: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM outbox WHERE organization_id = $1 AND channel = 'webhook' AND destination = $2 AND id = $3",
    )
    .bind(organization_id)
    .bind(webhook_id)
    .bind(delivery_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(exists.is_some())
}

/// Queues a `webhook.test` event for the webhook; its event id.
pub async fn queue_test(
    db: &Db,
    organization_id: &str,
    webhook_id: &str,
    now: i64,
) -> CoreResult<String> {
    let mut tx = db.begin_write().await?;
    let mut data = Map::new();
    data.insert(
        "message".into(),
        Value::from("This is a test event sent from orgd."),
    );
    let event = NewEvent {
        organization_id,
        kind: WEBHOOK_TEST,
        data,
        analysis_wait_until: None,
    };
    let id = outbox::enqueue_to_webhook(&mut tx, &event, webhook_id, now).await?;
    tx.commit().await?;
    Ok(id)
}

/// A delivery reached the receiver: its failure record is cleared.
pub async fn delivery_succeeded(db: &Db, webhook_id: &str) -> CoreResult<()> {
    sqlx::query(
        "UPDATE webhooks SET consecutive_failures = 0, failing_since = NULL
         WHERE id = $1 AND (consecutive_failures <> 0 OR failing_since IS NOT NULL)",
    )
    .bind(webhook_id)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// How a delivery attempt failed, for the disabling rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// More attempts follow.
    Attempt,
    /// The delivery failed all its attempts.
    Exhausted,
    /// The receiver answered 410: never call it again.
    Gone,
}

/// Records a failed attempt; disables the webhook (audited `webhook.disabled` with actor
/// system, `integration.disabled` queued to the organization's other destinations) when the
/// receiver is gone, after `disable_after` exhausted deliveries in a row, or after 5 days of
/// failing without a success. True when it was disabled now.
pub async fn delivery_failed(
    db: &Db,
    organization_id: &str,
    webhook_id: &str,
    failure: Failure,
    disable_after: i64,
    now: i64,
) -> CoreResult<bool> {
    let mut tx = db.begin_write().await?;
    let row = sqlx::query(
        "UPDATE webhooks SET consecutive_failures = consecutive_failures + $3,
            failing_since = COALESCE(failing_since, $4)
         WHERE organization_id = $1 AND id = $2 AND enabled = 1
         RETURNING consecutive_failures, failing_since",
    )
    .bind(organization_id)
    .bind(webhook_id)
    .bind(i64::from(failure == Failure::Exhausted))
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let failures: i64 = row.try_get("consecutive_failures")?;
    let since: i64 = row.try_get("failing_since")?;
    let reason = if failure == Failure::Gone {
        Some("the receiver answered 410 Gone".to_string())
    } else if failures >= disable_after {
        Some(format!(
            "{failures} deliveries in a row failed all their attempts"
        ))
    } else if now - since >= FAILING_FOR_MS {
        Some("deliveries failed for 5 days without a success".to_string())
    } else {
        None
    };
    let Some(reason) = reason else {
        tx.commit().await?;
        return Ok(false);
    };
    disable(&mut tx, organization_id, webhook_id, &reason, now).await?;
    tx.commit().await?;
    Ok(true)
}

async fn disable(
    tx: &mut Tx,
    organization_id: &str,
    webhook_id: &str,
    reason: &str,
    now: i64,
) -> CoreResult<()> {
    sqlx::query(
        "UPDATE webhooks SET enabled = 0, updated_at = $3 WHERE organization_id = $1 AND id = $2",
    )
    .bind(organization_id)
    .bind(webhook_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let audit = AuditEvent::by_system(organization_id, "webhook.disabled", "webhook", webhook_id)
        .with_details(json!({"reason": reason}));
    audit::insert(tx, &audit, now).await?;
    let mut data = Map::new();
    data.insert("webhookId".into(), json!(webhook_id));
    data.insert("reason".into(), json!(reason));
    let event = NewEvent {
        organization_id,
        kind: INTEGRATION_DISABLED,
        data,
        analysis_wait_until: None,
    };
    outbox::enqueue(tx, &event, now).await?;
    Ok(())
}

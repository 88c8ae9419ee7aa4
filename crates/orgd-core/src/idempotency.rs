//! `Idempotency-Key`: a retried request that creates something gets the first answer back
//! instead of creating it again (a 503 can follow a commit the client never saw). A key is
//! scoped to an organization and a route and kept 24 h; the first request claims it in a
//! transaction of its own, and its answer is stored in the transaction that creates the thing
//! (`complete`), so the creation and its replayable answer commit together.

use serde_json::Value;
use sqlx::Row;

use crate::db::{Db, Tx};
use crate::error::{CoreError, CoreResult};

/// An `Idempotency-Key` scoped to an organization and a route.
#[derive(Debug, Clone)]
pub struct IdempotencyScope {
    pub organization_id: String,
    pub route: &'static str,
    pub key: String,
    pub request_hash: String,
}

/// What claiming an idempotency key found.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// This request owns the key and must complete or release it.
    Acquired,
    /// The first request finished with this status and body.
    Replay { status: u16, body: Value },
    /// The key was used with a different request body.
    Mismatch,
    /// The first request is still running.
    InProgress,
}

/// The stored answer to a request made with an idempotency key.
#[derive(Debug)]
pub struct Completion<'a> {
    pub scope: &'a IdempotencyScope,
    pub status: u16,
    pub body: &'a Value,
}

pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;
/// A claim older than this whose request never finished (the process died) is abandoned.
pub const IDEMPOTENCY_ABANDONED_MS: i64 = 10 * 60 * 1000;

pub async fn claim(db: &Db, scope: &IdempotencyScope, now: i64) -> CoreResult<Claim> {
    let mut tx = db.begin_write().await?;
    // Expired keys, and claims whose request died with its process, are free again.
    sqlx::query(
        "DELETE FROM idempotency_keys
         WHERE organization_id = $1 AND route = $2 AND idempotency_key = $3
           AND (expires_at <= $4 OR (status IS NULL AND created_at <= $5))",
    )
    .bind(&scope.organization_id)
    .bind(scope.route)
    .bind(&scope.key)
    .bind(now)
    .bind(now - IDEMPOTENCY_ABANDONED_MS)
    .execute(&mut *tx)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (organization_id, route, idempotency_key, request_hash, status, response, created_at, expires_at)
         VALUES ($1, $2, $3, $4, NULL, NULL, $5, $6)
         ON CONFLICT (organization_id, route, idempotency_key) DO NOTHING",
    )
    .bind(&scope.organization_id)
    .bind(scope.route)
    .bind(&scope.key)
    .bind(&scope.request_hash)
    .bind(now)
    .bind(now + IDEMPOTENCY_TTL_MS)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let claim = if inserted == 1 {
        Claim::Acquired
    } else {
        let row = sqlx::query(
            "SELECT request_hash, status, response FROM idempotency_keys
             WHERE organization_id = $1 AND route = $2 AND idempotency_key = $3",
        )
        .bind(&scope.organization_id)
        .bind(scope.route)
        .bind(&scope.key)
        .fetch_one(&mut *tx)
        .await?;
        let hash: String = row.try_get("request_hash")?;
        let status: Option<i64> = row.try_get("status")?;
        let response: Option<String> = row.try_get("response")?;
        match (hash == scope.request_hash, status, response) {
            (false, _, _) => Claim::Mismatch,
            (true, Some(status), Some(body)) => Claim::Replay {
                status: u16::try_from(status)
                    .map_err(|_| CoreError::Corrupt("idempotent status".into()))?,
                body: serde_json::from_str(&body)
                    .map_err(|_| CoreError::Corrupt("idempotent response".into()))?,
            },
            (true, _, _) => Claim::InProgress,
        }
    };
    tx.commit().await?;
    Ok(claim)
}

/// Frees a claimed key whose request ended without a result worth replaying.
pub async fn release(db: &Db, scope: &IdempotencyScope) -> CoreResult<()> {
    sqlx::query(
        "DELETE FROM idempotency_keys
         WHERE organization_id = $1 AND route = $2 AND idempotency_key = $3 AND status IS NULL",
    )
    .bind(&scope.organization_id)
    .bind(scope.route)
    .bind(&scope.key)
    .execute(db.pool())
    .await?;
    Ok(())
}

pub async fn complete(tx: &mut Tx, result: &Completion<'_>) -> CoreResult<()> {
    sqlx::query(
        "UPDATE idempotency_keys SET status = $1, response = $2
         WHERE organization_id = $3 AND route = $4 AND idempotency_key = $5",
    )
    .bind(i64::from(result.status))
    .bind(result.body.to_string())
    .bind(&result.scope.organization_id)
    .bind(result.scope.route)
    .bind(&result.scope.key)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

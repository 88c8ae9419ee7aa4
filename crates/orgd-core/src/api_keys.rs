//! API keys for automation: an opaque `orgd_…` secret shown once and stored only as its
//! SHA-256, acting as its creator with the creator's current role, and only in the
//! organization it was created in.

use sqlx::Row;

use crate::audit::{self, AuditEvent};
use crate::db::Db;
use crate::db::notify::Change;
use crate::error::CoreResult;
use crate::idempotency::{self, Replay};
use crate::users::{USER_COLUMNS, UserRecord};

/// A well-formed API key secret.
pub struct ApiKey(String);

impl ApiKey {
    const PREFIX: &'static str = "orgd_";
    /// Characters of the key kept in the clear to recognise it in lists: `orgd_` + 8 hex.
    const SHOWN: usize = 13;

    pub fn generate() -> Self {
        Self(format!("{}{}", Self::PREFIX, crate::ids::random_hex(32)))
    }

    /// `orgd_` followed by 64 lowercase hex characters, or `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        let hex = raw.strip_prefix(Self::PREFIX)?;
        let well_formed = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        well_formed.then(|| Self(raw.to_string()))
    }

    pub fn hash(&self) -> String {
        crate::ids::sha256_hex(&self.0)
    }

    pub fn shown_prefix(&self) -> &str {
        &self.0[..Self::SHOWN]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub struct NewApiKey {
    pub id: String,
    pub organization_id: String,
    pub user_id: String,
    pub name: String,
    pub key_hash: String,
    pub prefix: String,
}

/// An API key as its owner may see it (never the secret, never its hash).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// `lastUsed` is refreshed at most this often, so keys in busy CI do not cost a write per request.
pub const API_KEY_TOUCH_INTERVAL_MS: i64 = 60_000;

pub async fn create(
    db: &Db,
    key: &NewApiKey,
    audit: &AuditEvent,
    now: i64,
    replay: Option<&Replay<'_, NewApiKey>>,
) -> CoreResult<()> {
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "INSERT INTO api_keys (id, organization_id, user_id, name, key_hash, prefix, created_at, last_used_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL)",
    )
    .bind(&key.id)
    .bind(&key.organization_id)
    .bind(&key.user_id)
    .bind(&key.name)
    .bind(&key.key_hash)
    .bind(&key.prefix)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    audit::insert(&mut tx, audit, now).await?;
    idempotency::store(&mut tx, replay, key).await?;
    tx.commit().await?;
    Ok(())
}

/// The live keys `user_id` created in `organization_id`, newest first.
pub async fn list(db: &Db, user_id: &str, organization_id: &str) -> CoreResult<Vec<ApiKeyRecord>> {
    Ok(sqlx::query_as(
        "SELECT id, name, prefix, created_at, last_used_at FROM api_keys
         WHERE user_id = $1 AND organization_id = $2 AND revoked_at IS NULL
         ORDER BY created_at DESC, id DESC",
    )
    .bind(user_id)
    .bind(organization_id)
    .fetch_all(db.pool())
    .await?)
}

/// Revokes one of the caller's live keys and writes `audit` (its details completed with
/// the key's name and prefix). False when there is no such key.
pub async fn revoke(
    db: &Db,
    user_id: &str,
    organization_id: &str,
    key_id: &str,
    audit: AuditEvent,
    now: i64,
) -> CoreResult<bool> {
    let mut tx = db.begin_write().await?;
    let revoked: Option<(String, String)> = sqlx::query_as(
        "UPDATE api_keys SET revoked_at = $1
         WHERE id = $2 AND user_id = $3 AND organization_id = $4 AND revoked_at IS NULL
         RETURNING name, prefix",
    )
    .bind(now)
    .bind(key_id)
    .bind(user_id)
    .bind(organization_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((name, prefix)) = revoked else {
        return Ok(false);
    };
    tx.notify(Change::User(user_id.to_string())).await?;
    let audit = audit.with_details(serde_json::json!({"name": name, "prefix": prefix}));
    audit::insert(&mut tx, &audit, now).await?;
    tx.commit().await?;
    Ok(true)
}

/// The creator of a live key, with the key's id, in one query: `None` when the key is
/// unknown or revoked, its creator removed, or the creator now belongs to another
/// organization than the key. Refreshes the key's `last_used_at` when stale.
pub async fn identity(
    db: &Db,
    key_hash: &str,
    now: i64,
) -> CoreResult<Option<(UserRecord, String)>> {
    let sql = format!(
        "SELECT {USER_COLUMNS}, k.id AS key_id, k.last_used_at AS key_last_used_at
         FROM api_keys k JOIN users u ON u.id = k.user_id AND u.organization_id = k.organization_id
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(key_hash)
        .fetch_optional(db.pool())
        .await?;
    let Some(row) = row else { return Ok(None) };
    let user: UserRecord = sqlx::FromRow::from_row(&row)?;
    let key_id: String = row.try_get("key_id")?;
    let last_used: Option<i64> = row.try_get("key_last_used_at")?;
    if last_used.is_none_or(|t| now - t >= API_KEY_TOUCH_INTERVAL_MS) {
        // Bookkeeping only: a failure here must not refuse an authenticated request.
        if let Err(e) = sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&key_id)
            .execute(db.pool())
            .await
        {
            tracing::warn!(error = %e, "could not record API key use");
        }
    }
    Ok(Some((user, key_id)))
}

//! Queries behind the integration settings, the ticket endpoints and their idempotency keys.

use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::Provider;
use crate::store::{CoreError, CoreResult, SqlStore, Tx, flag};
use orgd_core::audit::{self, AuditEvent};

/// One organization's stored settings for one provider.
#[derive(Clone)]
pub struct IntegrationRecord {
    pub settings: Map<String, Value>,
    /// Sealed by the vault; opened only where the credential is used.
    pub secret: String,
    pub enabled: bool,
    pub version: i64,
}

impl IntegrationRecord {
    fn from_row(row: &AnyRow) -> CoreResult<Self> {
        let settings: String = row.try_get("settings")?;
        let settings = match serde_json::from_str(&settings) {
            Ok(Value::Object(map)) => map,
            _ => return Err(CoreError::Corrupt("integration settings".into())),
        };
        Ok(Self {
            settings,
            secret: row.try_get("secret")?,
            enabled: flag(row.try_get("enabled")?),
            version: row.try_get("version")?,
        })
    }
}

/// What a save writes; `expected_version` is the version the change was based on (`None`
/// for a first save), so a save racing another one is refused instead of merged blindly.
#[derive(Debug)]
pub struct IntegrationWrite<'a> {
    pub organization_id: &'a str,
    pub provider: Provider,
    pub settings: &'a Map<String, Value>,
    pub secret: &'a str,
    pub enabled: bool,
    pub expected_version: Option<i64>,
}

/// A ticket filed from an execution.
#[derive(Debug, Clone)]
pub struct TicketLink {
    pub id: String,
    pub organization_id: String,
    pub execution_id: String,
    /// `linear` or `monday`.
    pub provider: &'static str,
    pub external_id: String,
    pub url: String,
    pub title: String,
    pub created_by: String,
}

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
pub struct IdempotentResult<'a> {
    pub scope: &'a IdempotencyScope,
    pub status: u16,
    pub body: &'a Value,
}

pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;
/// A claim older than this whose request never finished (the process died) is abandoned.
pub const IDEMPOTENCY_ABANDONED_MS: i64 = 10 * 60 * 1000;

#[async_trait::async_trait]
pub trait IntegrationStore: Send + Sync + 'static {
    async fn integration(
        &self,
        organization_id: &str,
        provider: Provider,
    ) -> CoreResult<Option<IntegrationRecord>>;
    /// Writes the settings and the audit entry in one transaction. False when the stored
    /// version is no longer `expected_version` (nothing is written).
    async fn save_integration(
        &self,
        write: &IntegrationWrite<'_>,
        audit: &AuditEvent,
        now: i64,
    ) -> CoreResult<bool>;
    /// Removes the settings and credentials, auditing only when something was removed.
    async fn delete_integration(
        &self,
        organization_id: &str,
        provider: Provider,
        audit: &AuditEvent,
        now: i64,
    ) -> CoreResult<bool>;
    /// The internal id of a live (not deleted) execution of the organization.
    async fn execution_id(
        &self,
        organization_id: &str,
        task_id: &str,
    ) -> CoreResult<Option<String>>;
    /// Appends the link to the execution, writes the audit entry and, when the request had
    /// an idempotency key, its result — all in one transaction.
    async fn record_ticket(
        &self,
        link: &TicketLink,
        audit: &AuditEvent,
        result: Option<IdempotentResult<'_>>,
        now: i64,
    ) -> CoreResult<()>;
    async fn claim_idempotency(&self, scope: &IdempotencyScope, now: i64) -> CoreResult<Claim>;
    /// Frees a claimed key whose request ended without a result worth replaying.
    async fn release_idempotency(&self, scope: &IdempotencyScope) -> CoreResult<()>;
}

const SELECT_INTEGRATION: &str = "SELECT settings, secret, enabled, version FROM integrations
     WHERE organization_id = $1 AND provider = $2";

#[async_trait::async_trait]
impl IntegrationStore for SqlStore {
    async fn integration(
        &self,
        organization_id: &str,
        provider: Provider,
    ) -> CoreResult<Option<IntegrationRecord>> {
        let row = sqlx::query(SELECT_INTEGRATION)
            .bind(organization_id)
            .bind(provider.as_str())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(IntegrationRecord::from_row).transpose()
    }

    async fn save_integration(
        &self,
        write: &IntegrationWrite<'_>,
        audit: &AuditEvent,
        now: i64,
    ) -> CoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let settings = Value::Object(write.settings.clone()).to_string();
        let written = match write.expected_version {
            None => sqlx::query(
                "INSERT INTO integrations (organization_id, provider, settings, secret, enabled, version, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 1, $6, $6)
                 ON CONFLICT (organization_id, provider) DO NOTHING",
            )
            .bind(write.organization_id)
            .bind(write.provider.as_str())
            .bind(&settings)
            .bind(write.secret)
            .bind(i64::from(write.enabled))
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            Some(version) => sqlx::query(
                "UPDATE integrations SET settings = $1, secret = $2, enabled = $3, version = version + 1, updated_at = $4
                 WHERE organization_id = $5 AND provider = $6 AND version = $7",
            )
            .bind(&settings)
            .bind(write.secret)
            .bind(i64::from(write.enabled))
            .bind(now)
            .bind(write.organization_id)
            .bind(write.provider.as_str())
            .bind(version)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        if written == 0 {
            return Ok(false);
        }
        audit::insert(&mut tx, audit, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn delete_integration(
        &self,
        organization_id: &str,
        provider: Provider,
        audit: &AuditEvent,
        now: i64,
    ) -> CoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let removed =
            sqlx::query("DELETE FROM integrations WHERE organization_id = $1 AND provider = $2")
                .bind(organization_id)
                .bind(provider.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if removed > 0 {
            audit::insert(&mut tx, audit, now).await?;
        }
        tx.commit().await?;
        Ok(removed > 0)
    }

    async fn execution_id(
        &self,
        organization_id: &str,
        task_id: &str,
    ) -> CoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM executions WHERE organization_id = $1 AND task_id = $2 AND deleted_at IS NULL",
        )
        .bind(organization_id)
        .bind(task_id)
        .fetch_optional(self.pool())
        .await?)
    }

    async fn record_ticket(
        &self,
        link: &TicketLink,
        audit: &AuditEvent,
        result: Option<IdempotentResult<'_>>,
        now: i64,
    ) -> CoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO execution_links (id, organization_id, execution_id, provider, external_id, url, title, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&link.id)
        .bind(&link.organization_id)
        .bind(&link.execution_id)
        .bind(link.provider)
        .bind(&link.external_id)
        .bind(&link.url)
        .bind(&link.title)
        .bind(&link.created_by)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit::insert(&mut tx, audit, now).await?;
        if let Some(result) = result {
            complete_idempotency(&mut tx, &result).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn claim_idempotency(&self, scope: &IdempotencyScope, now: i64) -> CoreResult<Claim> {
        let mut tx = self.begin_write().await?;
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

    async fn release_idempotency(&self, scope: &IdempotencyScope) -> CoreResult<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys
             WHERE organization_id = $1 AND route = $2 AND idempotency_key = $3 AND status IS NULL",
        )
        .bind(&scope.organization_id)
        .bind(scope.route)
        .bind(&scope.key)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

async fn complete_idempotency(tx: &mut Tx, result: &IdempotentResult<'_>) -> CoreResult<()> {
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

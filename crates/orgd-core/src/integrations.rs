//! The integrations an organization connects: their non-secret settings and sealed credential
//! (a row version guards concurrent saves), and the tickets filed from its runs.

use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::{self, AuditEvent};
use std::sync::Arc;

use crate::db::cache::ReadCache;
use crate::db::notify::Change;
use crate::db::{Db, Tx, flag};
use crate::error::{CoreError, CoreResult};
use crate::idempotency::{self, Replay};

/// The integrations an organization can connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integration {
    Github,
    Gitlab,
    AzureDevops,
    Bitbucket,
    Jira,
    Linear,
    Monday,
    Slack,
}

impl Integration {
    pub const ALL: [Self; 8] = [
        Self::Github,
        Self::Gitlab,
        Self::AzureDevops,
        Self::Bitbucket,
        Self::Jira,
        Self::Linear,
        Self::Monday,
        Self::Slack,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Gitlab => "gitlab",
            Self::AzureDevops => "azuredevops",
            Self::Bitbucket => "bitbucket",
            Self::Jira => "jira",
            Self::Linear => "linear",
            Self::Monday => "monday",
            Self::Slack => "slack",
        }
    }

    /// The body field carrying the credential.
    pub fn secret_field(self) -> &'static str {
        match self {
            Self::Linear | Self::Monday => "apiKey",
            Self::Jira => "apiToken",
            Self::Slack => "webhookUrl",
            Self::Github | Self::Gitlab | Self::AzureDevops | Self::Bitbucket => "token",
        }
    }

    /// Whether credentials are checked against the provider before they are saved (every
    /// tracker; a Slack webhook URL is checked by its shape).
    pub fn is_checked(self) -> bool {
        !matches!(self, Self::Slack)
    }
}

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
    pub integration: Integration,
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

const SELECT_INTEGRATION: &str = "SELECT settings, secret, enabled, version FROM integrations
     WHERE organization_id = $1 AND provider = $2";

pub async fn get(
    db: &Db,
    organization_id: &str,
    integration: Integration,
) -> CoreResult<Option<IntegrationRecord>> {
    let row = sqlx::query(SELECT_INTEGRATION)
        .bind(organization_id)
        .bind(integration.as_str())
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(IntegrationRecord::from_row).transpose()
}

/// Writes the settings and the audit entry in one transaction. False when the stored
/// version is no longer `expected_version` (nothing is written).
pub async fn save(
    db: &Db,
    write: &IntegrationWrite<'_>,
    audit: &AuditEvent,
    now: i64,
) -> CoreResult<bool> {
    let mut tx = db.begin_write().await?;
    if !save_in(&mut tx, write, audit, now).await? {
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

/// A change of one integration made together with other changes (`PATCH
/// /api/organization` saving Slack): the same writes and audit entries as `save` and
/// `delete`, inside the caller's transaction.
#[derive(Debug)]
pub enum IntegrationChange<'a> {
    Save {
        write: IntegrationWrite<'a>,
        audit: AuditEvent,
    },
    Unlink {
        organization_id: &'a str,
        integration: Integration,
        audit: AuditEvent,
    },
}

impl IntegrationChange<'_> {
    /// Applies the change in `tx`. False when a save found the stored version changed (the
    /// caller must not commit).
    pub async fn apply(&self, tx: &mut Tx, now: i64) -> CoreResult<bool> {
        match self {
            Self::Save { write, audit } => save_in(tx, write, audit, now).await,
            Self::Unlink {
                organization_id,
                integration,
                audit,
            } => {
                delete_in(tx, organization_id, *integration, audit, now).await?;
                Ok(true)
            }
        }
    }
}

/// `save`'s writes inside the caller's transaction.
async fn save_in(
    tx: &mut Tx,
    write: &IntegrationWrite<'_>,
    audit: &AuditEvent,
    now: i64,
) -> CoreResult<bool> {
    // The organization view shows the integrations: every instance forgets its copy.
    tx.notify(Change::Organization(write.organization_id.to_string()))
        .await?;
    let settings = Value::Object(write.settings.clone()).to_string();
    let written = match write.expected_version {
        None => sqlx::query(
            "INSERT INTO integrations (organization_id, provider, settings, secret, enabled, version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 1, $6, $6)
             ON CONFLICT (organization_id, provider) DO NOTHING",
        )
        .bind(write.organization_id)
        .bind(write.integration.as_str())
        .bind(&settings)
        .bind(write.secret)
        .bind(i64::from(write.enabled))
        .bind(now)
        .execute(&mut **tx)
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
        .bind(write.integration.as_str())
        .bind(version)
        .execute(&mut **tx)
        .await?
        .rows_affected(),
    };
    if written == 0 {
        return Ok(false);
    }
    // Saved credentials start with a clean health record.
    crate::outbox::reset_health(tx, write.organization_id, write.integration.as_str()).await?;
    audit::insert(tx, audit, now).await?;
    Ok(true)
}

/// Removes the settings and credentials, auditing only when something was removed.
pub async fn delete(
    db: &Db,
    organization_id: &str,
    integration: Integration,
    audit: &AuditEvent,
    now: i64,
) -> CoreResult<bool> {
    let mut tx = db.begin_write().await?;
    let removed = delete_in(&mut tx, organization_id, integration, audit, now).await?;
    tx.commit().await?;
    Ok(removed)
}

/// `delete`'s writes inside the caller's transaction.
async fn delete_in(
    tx: &mut Tx,
    organization_id: &str,
    integration: Integration,
    audit: &AuditEvent,
    now: i64,
) -> CoreResult<bool> {
    tx.notify(Change::Organization(organization_id.to_string()))
        .await?;
    let removed =
        sqlx::query("DELETE FROM integrations WHERE organization_id = $1 AND provider = $2")
            .bind(organization_id)
            .bind(integration.as_str())
            .execute(&mut **tx)
            .await?
            .rows_affected();
    if removed > 0 {
        crate::outbox::reset_health(tx, organization_id, integration.as_str()).await?;
        audit::insert(tx, audit, now).await?;
    }
    Ok(removed > 0)
}

/// What the organization view shows of each integration: whether it is stored, whether it
/// is enabled, and its non-secret settings — never its credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationSummary {
    pub integration: Integration,
    pub enabled: bool,
    pub settings: Map<String, Value>,
}

/// Every stored integration of an organization, without credentials. Read by `GET
/// /api/organization` on every call, so cached like the organization itself (`Db::read_cache`;
/// every change of an integration announces `Change::Organization`).
pub struct Summaries {
    cache: Arc<ReadCache<String, Vec<IntegrationSummary>>>,
}

impl Summaries {
    pub fn new(db: &Db) -> Self {
        Self {
            cache: db
                .read_cache(|key, change| matches!(change, Change::Organization(id) if id == key)),
        }
    }

    pub async fn get(
        &self,
        db: &Db,
        organization_id: &str,
    ) -> CoreResult<Arc<Vec<IntegrationSummary>>> {
        let loaded_under = match self.cache.get(organization_id) {
            Ok(hit) => return Ok(hit),
            Err(header) => header,
        };
        let rows = sqlx::query(
            "SELECT provider, enabled, settings FROM integrations WHERE organization_id = $1",
        )
        .bind(organization_id)
        .fetch_all(db.pool())
        .await?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            let provider: String = row.try_get("provider")?;
            let Some(integration) = Integration::parse(&provider) else {
                return Err(CoreError::Corrupt(format!(
                    "integration provider {provider:?}"
                )));
            };
            let settings: String = row.try_get("settings")?;
            let Ok(Value::Object(settings)) = serde_json::from_str(&settings) else {
                return Err(CoreError::Corrupt("integration settings".into()));
            };
            found.push(IntegrationSummary {
                integration,
                enabled: flag(row.try_get("enabled")?),
                settings,
            });
        }
        let found = Arc::new(found);
        self.cache
            .put(organization_id.to_string(), found.clone(), loaded_under);
        Ok(found)
    }
}

/// The internal id of a live (not deleted) execution of the organization.
pub async fn execution_id(
    db: &Db,
    organization_id: &str,
    task_id: &str,
) -> CoreResult<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM executions WHERE organization_id = $1 AND task_id = $2 AND deleted_at IS NULL",
    )
    .bind(organization_id)
    .bind(task_id)
    .fetch_optional(db.pool())
    .await?)
}

/// Appends the link to the execution, writes the audit entry and, when the request had
/// an idempotency key, its result — all in one transaction.
pub async fn record_ticket(
    db: &Db,
    link: &TicketLink,
    audit: &AuditEvent,
    replay: Option<&Replay<'_, TicketLink>>,
    now: i64,
) -> CoreResult<()> {
    let mut tx = db.begin_write().await?;
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
    idempotency::store(&mut tx, replay, link).await?;
    tx.commit().await?;
    Ok(())
}

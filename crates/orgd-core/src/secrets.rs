//! Where sealed secrets live, and `orgd secrets rotate`: re-encrypting every one of them
//! under the current key so old keys can be retired.

use sqlx::Row;

use crate::crypto::{Binding, Vault, VaultError};
use crate::db::Db;
use crate::error::CoreResult;

/// The tables holding sealed values. Each value belongs to an organization and is named
/// within it (`provider` — the provider, or for run requests the execution's id), and is
/// sealed for the purpose `<purpose prefix>:<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretTable {
    Integrations,
    AiProviderKeys,
    /// A run request's environment variable values (`run_requests.env_values`).
    RunRequests,
}

impl SecretTable {
    pub const ALL: [SecretTable; 3] = [Self::Integrations, Self::AiProviderKeys, Self::RunRequests];

    fn select_sql(self) -> &'static str {
        match self {
            Self::Integrations => {
                "SELECT organization_id, provider, secret FROM integrations ORDER BY organization_id, provider"
            }
            Self::AiProviderKeys => {
                "SELECT organization_id, provider, secret FROM ai_provider_keys ORDER BY organization_id, provider"
            }
            Self::RunRequests => {
                "SELECT organization_id, execution_id AS provider, env_values AS secret FROM run_requests
                 WHERE env_values IS NOT NULL ORDER BY organization_id, execution_id"
            }
        }
    }

    fn replace_sql(self) -> &'static str {
        match self {
            Self::Integrations => {
                "UPDATE integrations SET secret = $1 WHERE organization_id = $2 AND provider = $3 AND secret = $4"
            }
            Self::AiProviderKeys => {
                "UPDATE ai_provider_keys SET secret = $1 WHERE organization_id = $2 AND provider = $3 AND secret = $4"
            }
            Self::RunRequests => {
                "UPDATE run_requests SET env_values = $1 WHERE organization_id = $2 AND execution_id = $3 AND env_values = $4"
            }
        }
    }

    /// The binding a value of this table is sealed for.
    pub fn binding(self, organization_id: &str, provider: &str) -> Binding {
        let prefix = match self {
            Self::Integrations => "integration",
            Self::AiProviderKeys => "byok",
            Self::RunRequests => "run-request",
        };
        Binding::new(organization_id, format!("{prefix}:{provider}"))
    }
}

/// One sealed value as stored.
#[derive(Debug, Clone)]
pub struct StoredSecret {
    pub table: SecretTable,
    pub organization_id: String,
    /// The provider, or the execution's id for `RunRequests`.
    pub provider: String,
    pub sealed: String,
}

/// Every sealed value of `table`.
pub async fn sealed_secrets(db: &Db, table: SecretTable) -> CoreResult<Vec<StoredSecret>> {
    let rows = sqlx::query(table.select_sql()).fetch_all(db.pool()).await?;
    rows.iter()
        .map(|row| {
            Ok(StoredSecret {
                table,
                organization_id: row.try_get("organization_id")?,
                provider: row.try_get("provider")?,
                sealed: row.try_get("secret")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Replaces `secret.sealed` by `resealed` unless it changed meanwhile (then false).
async fn replace_sealed(db: &Db, secret: &StoredSecret, resealed: &str) -> CoreResult<bool> {
    let updated = sqlx::query(secret.table.replace_sql())
        .bind(resealed)
        .bind(&secret.organization_id)
        .bind(&secret.provider)
        .bind(&secret.sealed)
        .execute(db.pool())
        .await?
        .rows_affected();
    Ok(updated == 1)
}

/// What a rotation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// Re-encrypted under the current key.
    pub rotated: usize,
    /// Already under the current key.
    pub current: usize,
    /// Changed by someone else while rotating (they were written under the current key).
    pub skipped: usize,
    /// Could not be decrypted with any configured key: `(table, organization, provider, why)`.
    pub failed: Vec<(SecretTable, String, String, VaultError)>,
}

/// Re-encrypts every stored secret that is not yet under the vault's current key.
pub async fn rotate(db: &Db, vault: &Vault) -> CoreResult<RotationReport> {
    let mut report = RotationReport::default();
    for table in SecretTable::ALL {
        for secret in sealed_secrets(db, table).await? {
            if vault.is_current(&secret.sealed) {
                report.current += 1;
                continue;
            }
            let binding = table.binding(&secret.organization_id, &secret.provider);
            match vault.open(&secret.sealed, &binding) {
                Ok(plaintext) => {
                    let resealed = vault.seal(&plaintext.0, &binding);
                    if replace_sealed(db, &secret, &resealed).await? {
                        report.rotated += 1;
                    } else {
                        report.skipped += 1;
                    }
                }
                Err(e) => report
                    .failed
                    .push((table, secret.organization_id, secret.provider, e)),
            }
        }
    }
    Ok(report)
}

//! Queries behind the AI configuration: the chosen model and the sealed BYOK keys.

use serde_json::json;

use crate::audit::{self, AuditEvent};
use crate::store::{CoreResult, SqlStore};
use orgd_core::models::AiProvider;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AiConfigRecord {
    /// `None`: never chosen (the catalogue's default applies).
    pub default_model: Option<String>,
    /// Providers with a stored key.
    pub byok: Vec<AiProvider>,
}

/// A PATCH: `None` leaves a part alone.
#[derive(Debug, Default)]
pub struct AiConfigChange {
    pub default_model: Option<String>,
    /// The provider and its key sealed for `byok:<provider>`.
    pub set_key: Option<(AiProvider, String)>,
    pub remove_key: Option<AiProvider>,
}

#[async_trait::async_trait]
pub trait AiConfigStore: Send + Sync + 'static {
    /// `None` when the organization does not exist.
    async fn ai_config(&self, organization_id: &str) -> CoreResult<Option<AiConfigRecord>>;
    /// Applies the change with its audit entry in one transaction; the store adds
    /// `defaultModelChanged` to the entry's details, comparing with the stored choice.
    async fn update_ai_config(
        &self,
        organization_id: &str,
        change: &AiConfigChange,
        audit: &AuditEvent,
        now: i64,
    ) -> CoreResult<Option<AiConfigRecord>>;
    /// The sealed BYOK key of one provider.
    async fn byok_key(
        &self,
        organization_id: &str,
        provider: AiProvider,
    ) -> CoreResult<Option<String>>;
}

async fn read(
    conn: &mut sqlx::AnyConnection,
    organization_id: &str,
) -> CoreResult<Option<AiConfigRecord>> {
    let model: Option<Option<String>> =
        sqlx::query_scalar("SELECT ai_default_model FROM organizations WHERE id = $1")
            .bind(organization_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(default_model) = model else {
        return Ok(None);
    };
    let providers: Vec<String> = sqlx::query_scalar(
        "SELECT provider FROM ai_provider_keys WHERE organization_id = $1 ORDER BY provider",
    )
    .bind(organization_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(AiConfigRecord {
        default_model,
        byok: providers
            .iter()
            .filter_map(|p| AiProvider::parse(p))
            .collect(),
    }))
}

#[async_trait::async_trait]
impl AiConfigStore for SqlStore {
    async fn ai_config(&self, organization_id: &str) -> CoreResult<Option<AiConfigRecord>> {
        let mut tx = self.begin_read().await?;
        let record = read(&mut tx, organization_id).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn update_ai_config(
        &self,
        organization_id: &str,
        change: &AiConfigChange,
        audit: &AuditEvent,
        now: i64,
    ) -> CoreResult<Option<AiConfigRecord>> {
        let mut tx = self.begin_write().await?;
        let Some(before) = read(&mut tx, organization_id).await? else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE organizations SET ai_default_model = COALESCE($1, ai_default_model), updated_at = $2 WHERE id = $3",
        )
        .bind(change.default_model.as_deref())
        .bind(now)
        .bind(organization_id)
        .execute(&mut *tx)
        .await?;
        if let Some((provider, sealed)) = &change.set_key {
            sqlx::query(
                "INSERT INTO ai_provider_keys (organization_id, provider, secret, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (organization_id, provider) DO UPDATE SET secret = excluded.secret, updated_at = excluded.updated_at",
            )
            .bind(organization_id)
            .bind(provider.as_str())
            .bind(sealed)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(provider) = change.remove_key {
            sqlx::query(
                "DELETE FROM ai_provider_keys WHERE organization_id = $1 AND provider = $2",
            )
            .bind(organization_id)
            .bind(provider.as_str())
            .execute(&mut *tx)
            .await?;
        }
        let changed =
            change.default_model.is_some() && change.default_model != before.default_model;
        let mut audit = audit.clone();
        audit.details["defaultModelChanged"] = json!(changed);
        audit::insert(&mut tx, &audit, now).await?;
        let after = read(&mut tx, organization_id).await?;
        tx.commit().await?;
        Ok(after)
    }

    async fn byok_key(
        &self,
        organization_id: &str,
        provider: AiProvider,
    ) -> CoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT secret FROM ai_provider_keys WHERE organization_id = $1 AND provider = $2",
        )
        .bind(organization_id)
        .bind(provider.as_str())
        .fetch_optional(self.pool())
        .await?)
    }
}

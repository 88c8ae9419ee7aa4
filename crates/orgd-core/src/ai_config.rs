//! An organization's AI configuration: the chosen model and its own provider keys (BYOK),
//! stored sealed by the vault.

use serde_json::json;

use crate::audit::{self, AuditEvent};
use crate::db::Db;
use crate::db::notify::Change;
use crate::error::CoreResult;
use crate::models::AiProvider;

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

/// `None` when the organization does not exist.
pub async fn get(db: &Db, organization_id: &str) -> CoreResult<Option<AiConfigRecord>> {
    let mut tx = db.begin_read().await?;
    let record = read(&mut tx, organization_id).await?;
    tx.commit().await?;
    Ok(record)
}

/// Applies the change with its audit entry in one transaction; the store adds
/// `defaultModelChanged` to the entry's details, comparing with the stored choice.
pub async fn update(
    db: &Db,
    organization_id: &str,
    change: &AiConfigChange,
    audit: &AuditEvent,
    now: i64,
) -> CoreResult<Option<AiConfigRecord>> {
    let mut tx = db.begin_write().await?;
    let Some(before) = read(&mut tx, organization_id).await? else {
        return Ok(None);
    };
    tx.notify(Change::Organization(organization_id.to_string()))
        .await?;
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
        sqlx::query("DELETE FROM ai_provider_keys WHERE organization_id = $1 AND provider = $2")
            .bind(organization_id)
            .bind(provider.as_str())
            .execute(&mut *tx)
            .await?;
    }
    let changed = change.default_model.is_some() && change.default_model != before.default_model;
    let mut audit = audit.clone();
    audit.details["defaultModelChanged"] = json!(changed);
    audit::insert(&mut tx, &audit, now).await?;
    let after = read(&mut tx, organization_id).await?;
    tx.commit().await?;
    Ok(after)
}

/// The sealed BYOK key of one provider.
pub async fn byok_key(
    db: &Db,
    organization_id: &str,
    provider: AiProvider,
) -> CoreResult<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT secret FROM ai_provider_keys WHERE organization_id = $1 AND provider = $2",
    )
    .bind(organization_id)
    .bind(provider.as_str())
    .fetch_optional(db.pool())
    .await?)
}

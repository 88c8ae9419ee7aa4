//! `GET`/`PATCH /api/organization/ai-config` (API.md): the organization's model, chosen
//! from the configured catalogue, and its own provider keys (BYOK), sealed in the vault and
//! never shown — only whether one is set.

use axum::extract::State;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::ai_store::{AiConfigChange, AiConfigRecord};
use super::models::{AiProvider, Unavailable};
use crate::audit::AuditEvent;
use crate::auth::{CurrentUser, Role};
use crate::clock::{Timestamp, format_ms};
use crate::error::{ApiError, OrInternal};
use crate::http::{ClientIp, JsonBody, Object};
use crate::secrets::SecretTable;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/organization/ai-config",
        axum::routing::get(show).patch(update),
    )
}

const MAX_API_KEY_CHARS: usize = 512;

fn not_found() -> ApiError {
    ApiError::not_found("Organization not found", "The organization does not exist")
}

fn view(app: &AppState, record: &AiConfigRecord) -> Value {
    let now = app.now();
    let catalog = &app.config.model_catalog;
    let models: Vec<Value> = catalog
        .available(now)
        .map(|m| json!({"id": m.id, "provider": m.provider.as_str(), "retiresAt": m.retires_at.map(Timestamp)}))
        .collect();
    let byok: Map<String, Value> = AiProvider::ALL
        .into_iter()
        .map(|p| (p.as_str().to_string(), json!(record.byok.contains(&p))))
        .collect();
    json!({
        "success": true,
        "data": {
            "defaultModel": catalog.effective(record.default_model.as_deref(), now).id,
            "availableModels": models,
            "byokConfigured": byok,
        }
    })
}

async fn show(State(app): State<AppState>, user: CurrentUser) -> Result<Json<Value>, ApiError> {
    let record = app
        .store
        .ai_config(user.org_id())
        .await
        .or_internal("Failed to fetch AI config")?
        .ok_or_else(not_found)?;
    Ok(Json(view(&app, &record)))
}

/// A PATCH body, checked in the seed's order. The key stays plaintext only until sealed.
struct Patch {
    default_model: Option<String>,
    byok: Option<(AiProvider, crate::config::Secret<String>)>,
    remove: Option<AiProvider>,
}

fn provider_field(value: Option<&Value>, field: &str) -> Result<AiProvider, ApiError> {
    value
        .and_then(Value::as_str)
        .and_then(AiProvider::parse)
        .ok_or_else(|| {
            ApiError::invalid(
                field,
                format!("{field} must be one of: gemini, openai, anthropic"),
            )
        })
}

fn parse_patch(app: &AppState, body: &Object) -> Result<Patch, ApiError> {
    if !body.has("defaultModel") && !body.has("byok") && !body.has("removeByok") {
        return Err(ApiError::bad_request(
            "Missing fields",
            "At least one of defaultModel, byok, or removeByok is required",
        ));
    }
    let default_model = match body.0.get("defaultModel") {
        None => None,
        Some(value) => Some(choose_model(app, value)?),
    };
    let byok = match body.0.get("byok") {
        None => None,
        Some(Value::Object(byok)) => {
            let provider = provider_field(byok.get("provider"), "byok.provider")?;
            let key = match byok.get("apiKey") {
                Some(Value::String(k))
                    if !k.trim().is_empty() && k.trim().chars().count() <= MAX_API_KEY_CHARS =>
                {
                    k.trim().to_string()
                }
                _ => {
                    return Err(ApiError::invalid(
                        "byok.apiKey",
                        "byok.apiKey must be a non-empty string of at most 512 characters",
                    ));
                }
            };
            Some((provider, crate::config::Secret(key)))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "byok",
                "byok must be an object with provider and apiKey",
            ));
        }
    };
    let remove = match body.0.get("removeByok") {
        None => None,
        Some(value) => Some(provider_field(Some(value), "removeByok")?),
    };
    if let (Some((set, _)), Some(removed)) = (&byok, remove)
        && *set == removed
    {
        return Err(ApiError::invalid(
            "removeByok",
            "Cannot set and remove the key of the same provider in one request",
        ));
    }
    Ok(Patch {
        default_model,
        byok,
        remove,
    })
}

/// A model from the catalogue that has not retired (by the service's clock).
fn choose_model(app: &AppState, value: &Value) -> Result<String, ApiError> {
    let now = app.now();
    let catalog = &app.config.model_catalog;
    let id = value.as_str().unwrap_or_default();
    match catalog.choose(id, now) {
        Ok(model) => Ok(model.id.clone()),
        Err(Unavailable::Retired {
            retired_at,
            replacement,
        }) => Err(ApiError::invalid(
            "defaultModel",
            format!(
                "{id} was retired on {}; use {replacement} instead",
                &format_ms(retired_at)[..10]
            ),
        )),
        Err(Unavailable::Unknown) => {
            let ids: Vec<&str> = catalog.available(now).map(|m| m.id.as_str()).collect();
            Err(ApiError::invalid(
                "defaultModel",
                format!("defaultModel must be one of: {}", ids.join(", ")),
            ))
        }
    }
}

async fn update(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    user.require(Role::ADMIN)?;
    let patch = parse_patch(&app, &body.or_empty()?)?;
    let org = user.org_id();
    let set_key = patch.byok.map(|(provider, key)| {
        let sealed = app.vault.seal(
            &key.0,
            &SecretTable::AiProviderKeys.binding(org, provider.as_str()),
        );
        (provider, sealed)
    });
    let audit = AuditEvent::by_user(&user, ip, "org.ai_config_updated", "organization", org)
        .with_details(json!({
            "byokProviderSet": set_key.as_ref().map(|(p, _)| p.as_str()),
            "byokProviderRemoved": patch.remove.map(AiProvider::as_str),
        }));
    let change = AiConfigChange {
        default_model: patch.default_model,
        set_key,
        remove_key: patch.remove,
    };
    let record = app
        .store
        .update_ai_config(org, &change, &audit, app.now())
        .await
        .or_internal("Failed to update AI config")?
        .ok_or_else(not_found)?;
    Ok(Json(view(&app, &record)))
}

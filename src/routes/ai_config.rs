//! `GET`/`PATCH /api/organization/ai-config` (API.md): the organization's model, chosen
//! from the configured catalogue, and its own provider keys (BYOK), sealed in the vault and
//! never shown — only whether one is set.

use std::collections::BTreeMap;

use crate::http::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::auth::{CurrentUser, Role};
use crate::config::Secret;
use crate::error::{ApiError, OrInternal};
use crate::http::{ClientIp, FromBodyWith, JsonBody, Object};
use crate::state::AppState;
use crate::timestamp::Timestamp;
use orgd_core::ai_config::{self, AiConfigChange, AiConfigRecord};
use orgd_core::clock::format_ms;
use orgd_core::models::{AiProvider, ModelCatalog, Unavailable};
use orgd_core::secrets::SecretTable;

pub fn router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(show, update))
}

const MAX_API_KEY_CHARS: usize = 512;

fn not_found() -> ApiError {
    ApiError::not_found("Organization not found", "The organization does not exist")
}

#[derive(Serialize, ToSchema)]
pub struct AiConfigResponse {
    success: bool,
    data: AiConfigView,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AiConfig)]
pub struct AiConfigView {
    /// The organization's model, or the catalogue's default (a retired choice answers its
    /// replacement).
    default_model: String,
    available_models: Vec<AvailableModel>,
    /// Per provider (`openai`, `anthropic`, `gemini`): whether the organization's own key is set.
    byok_configured: BTreeMap<&'static str, bool>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AvailableModel {
    id: String,
    #[schema(pattern = "^(openai|anthropic|gemini)$")]
    provider: &'static str,
    /// When the provider retires the model, if announced.
    retires_at: Option<Timestamp>,
}

fn view(app: &AppState, record: &AiConfigRecord) -> AiConfigResponse {
    let now = app.now();
    let catalog = &app.config.model_catalog;
    let available_models = catalog
        .available(now)
        .map(|m| AvailableModel {
            id: m.id.clone(),
            provider: m.provider.as_str(),
            retires_at: m.retires_at.map(Timestamp),
        })
        .collect();
    let byok_configured = AiProvider::ALL
        .into_iter()
        .map(|p| (p.as_str(), record.byok.contains(&p)))
        .collect();
    AiConfigResponse {
        success: true,
        data: AiConfigView {
            default_model: catalog
                .effective(record.default_model.as_deref(), now)
                .id
                .clone(),
            available_models,
            byok_configured,
        },
    }
}

#[utoipa::path(
    get,
    path = "/api/organization/ai-config",
    tag = "organization",
    summary = "The AI model used for failure analysis and which provider keys are set (all roles)",
    security(("bearerAuth" = [])),
    responses((status = 200, description = "The AI configuration", body = AiConfigResponse)),
)]
pub async fn show(
    State(app): State<AppState>,
    user: CurrentUser,
) -> Result<Json<AiConfigResponse>, ApiError> {
    let record = ai_config::get(&app.db, user.org_id())
        .await
        .or_internal("Failed to fetch AI config")?
        .ok_or_else(not_found)?;
    Ok(Json(view(&app, &record)))
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

/// A model from the catalogue that has not retired at `now` (the service's clock).
fn choose_model(catalog: &ModelCatalog, now: i64, value: &Value) -> Result<String, ApiError> {
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

/// `PATCH /api/organization/ai-config`: at least one field. Keys are sealed in the vault and
/// never shown again.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AiConfigPatch {
    /// One of `availableModels`' ids.
    default_model: Option<String>,
    byok: Option<ByokKey>,
    /// Drops the organization's key of this provider.
    #[schema(value_type = Option<String>, pattern = "^(openai|anthropic|gemini)$")]
    remove_byok: Option<AiProvider>,
}

// The key stays plaintext only until the handler seals it.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ByokKey {
    #[schema(value_type = String, pattern = "^(openai|anthropic|gemini)$")]
    provider: AiProvider,
    /// 1–512 characters.
    #[schema(value_type = String)]
    api_key: Secret<String>,
}

/// Checked in the seed's order; `defaultModel` against the catalogue at the given time.
impl FromBodyWith<(&ModelCatalog, i64)> for AiConfigPatch {
    fn from_body_with(
        body: &Object,
        (catalog, now): (&ModelCatalog, i64),
    ) -> Result<Self, ApiError> {
        if !body.has("defaultModel") && !body.has("byok") && !body.has("removeByok") {
            return Err(ApiError::bad_request(
                "Missing fields",
                "At least one of defaultModel, byok, or removeByok is required",
            ));
        }
        let default_model = match body.0.get("defaultModel") {
            None => None,
            Some(value) => Some(choose_model(catalog, now, value)?),
        };
        let byok = match body.0.get("byok") {
            None => None,
            Some(Value::Object(byok)) => {
                let provider = provider_field(byok.get("provider"), "byok.provider")?;
                let key = match byok.get("apiKey") {
                    Some(Value::String(k))
                        if !k.trim().is_empty()
                            && k.trim().chars().count() <= MAX_API_KEY_CHARS =>
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
                Some(ByokKey {
                    provider,
                    api_key: Secret(key),
                })
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "byok",
                    "byok must be an object with provider and apiKey",
                ));
            }
        };
        let remove_byok = match body.0.get("removeByok") {
            None => None,
            Some(value) => Some(provider_field(Some(value), "removeByok")?),
        };
        if let (Some(set), Some(removed)) = (&byok, remove_byok)
            && set.provider == removed
        {
            return Err(ApiError::invalid(
                "removeByok",
                "Cannot set and remove the key of the same provider in one request",
            ));
        }
        Ok(Self {
            default_model,
            byok,
            remove_byok,
        })
    }
}

#[utoipa::path(
    patch,
    path = "/api/organization/ai-config",
    tag = "organization",
    summary = "Choose the model, set or remove a provider key (admin)",
    security(("bearerAuth" = [])),
    request_body = AiConfigPatch,
    responses(
        (status = 200, description = "Updated and audited (without the key)", body = AiConfigResponse),
        (status = 400, description = "`Missing fields`, `Invalid defaultModel` (unknown or retired model), `Invalid byok`, `Invalid byok.provider`, `Invalid byok.apiKey`, `Invalid removeByok`", body = crate::openapi::ErrorBody),
        (status = 403, description = "`Forbidden`: admins only", body = crate::openapi::ErrorBody),
    ),
)]
pub async fn update(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    body: JsonBody,
) -> Result<Json<AiConfigResponse>, ApiError> {
    user.require(Role::ADMIN)?;
    let patch: AiConfigPatch =
        body.parse_or_empty_with((app.config.model_catalog.as_ref(), app.now()))?;
    let org = user.org_id();
    let set_key = patch.byok.map(|ByokKey { provider, api_key }| {
        let sealed = app.vault.seal(
            &api_key.0,
            &SecretTable::AiProviderKeys.binding(org, provider.as_str()),
        );
        (provider, sealed)
    });
    let audit = user
        .audit_event(ip, "org.ai_config_updated", "organization", org)
        .with_details(json!({
            "byokProviderSet": set_key.as_ref().map(|(p, _)| p.as_str()),
            "byokProviderRemoved": patch.remove_byok.map(AiProvider::as_str),
        }));
    let change = AiConfigChange {
        default_model: patch.default_model,
        set_key,
        remove_key: patch.remove_byok,
    };
    let record = ai_config::update(&app.db, org, &change, &audit, app.now())
        .await
        .or_internal("Failed to update AI config")?
        .ok_or_else(not_found)?;
    Ok(Json(view(&app, &record)))
}

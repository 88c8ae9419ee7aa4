//! API keys for automation: `POST/GET /api/auth/api-keys`, `DELETE /api/auth/api-keys/:id`.
//! A key is `orgd_` + 32 random bytes in hex, shown once and stored only as its SHA-256. It
//! acts as its creator with the creator's current role, and only in the organization it was
//! created in: a creator who moves to another organization leaves their keys behind, dead.

use crate::http::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{ApiError, OrInternal};
use crate::http::idempotency::{Claimed, IdempotencyKey, answer, respond};
use crate::http::{ClientIp, Done, FromBody, JsonBody, Object, PathParams};
use crate::state::AppState;
use crate::timestamp::Timestamp;
use orgd_core::api_keys::{ApiKey, ApiKeyRecord, NewApiKey};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

/// The key's label: trimmed, at most 100 characters, `Unnamed Key` when absent or blank.
fn key_name(raw: Option<&str>) -> Result<String, ApiError> {
    let name = raw.map(str::trim).unwrap_or_default();
    match name.chars().count() {
        0 => Ok("Unnamed Key".into()),
        101.. => Err(ApiError::invalid(
            "name",
            "Key name cannot exceed 100 characters",
        )),
        _ => Ok(name.to_string()),
    }
}

/// An API key as listed: never the secret, only its first characters.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ApiKey)]
pub struct KeyView {
    id: String,
    name: String,
    /// `orgd_` and the first 8 characters of the secret.
    prefix: String,
    created_at: Timestamp,
    /// Absent from the answer that creates the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Timestamp>)]
    last_used: Option<Option<Timestamp>>,
}

fn key_view(key: &ApiKeyRecord) -> KeyView {
    KeyView {
        id: key.id.clone(),
        name: key.name.clone(),
        prefix: key.prefix.clone(),
        created_at: Timestamp(key.created_at),
        last_used: Some(key.last_used_at.map(Timestamp)),
    }
}

#[derive(ToSchema)]
pub struct CreateKeyRequest {
    /// At most 100 characters; `Unnamed Key` when absent.
    #[schema(value_type = Option<String>)]
    name: String,
}

impl FromBody for CreateKeyRequest {
    fn from_body(body: &Object) -> Result<Self, ApiError> {
        Ok(Self {
            name: key_name(body.opt_str("name")?)?,
        })
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    success: bool,
    message: &'static str,
    /// The secret, shown this once: send it as `x-api-key`.
    api_key: String,
    data: KeyView,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    success: bool,
    data: Vec<KeyView>,
}

#[utoipa::path(
    post,
    path = "/api/auth/api-keys",
    tag = "auth",
    summary = "Create an API key acting as the caller (shown once)",
    security(("bearerAuth" = [])),
    params(IdempotencyKey),
    request_body(content = CreateKeyRequest, description = "Optional"),
    responses(
        (status = 201, description = "Created; a replay carries `Idempotent-Replayed: true` and the same key", body = CreatedKey),
        (status = 400, description = "`Invalid name`, `Invalid JSON`, `Invalid Idempotency-Key`", body = crate::openapi::ErrorBody),
        (status = 409, description = "`Request in progress` with this Idempotency-Key", body = crate::openapi::ErrorBody),
        (status = 422, description = "`Idempotency key reused` with another body", body = crate::openapi::ErrorBody),

    ),
)]
async fn create(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let body = body.or_empty()?;
    let CreateKeyRequest { name } = CreateKeyRequest::from_body(&body)?;
    let claim = match key
        .claim(&app, user.org_id(), "POST /api/auth/api-keys", &body)
        .await?
    {
        Claimed::Replayed(response) => return Ok(response),
        Claimed::Fresh(claim) => claim,
    };
    let now = app.now();
    let secret = ApiKey::generate();
    let key = NewApiKey {
        id: orgd_core::ids::new_id(now),
        organization_id: user.org_id().to_string(),
        user_id: user.id().to_string(),
        name,
        key_hash: secret.hash(),
        prefix: secret.shown_prefix().to_string(),
    };
    let audit = user
        .audit_event(ip, "apikey.created", "apiKey", &key.id)
        .with_details(json!({"name": key.name, "prefix": key.prefix}));
    let answer_for = |key: &NewApiKey| {
        answer(
            StatusCode::CREATED,
            &CreatedKey {
                success: true,
                message: "API key created. Store this key securely - it will not be shown again.",
                api_key: secret.as_str().to_string(),
                data: KeyView {
                    id: key.id.clone(),
                    name: key.name.clone(),
                    prefix: key.prefix.clone(),
                    created_at: Timestamp(now),
                    last_used: None,
                },
            },
        )
    };
    let created = orgd_core::api_keys::create(
        &app.db,
        &key,
        &audit,
        now,
        claim.replay(&answer_for).as_ref(),
    )
    .await
    .or_internal("Failed to create API key");
    let result = created.and_then(|()| respond(&answer_for(&key)));
    claim.settle(result).await
}

#[utoipa::path(
    get,
    path = "/api/auth/api-keys",
    tag = "auth",
    summary = "The caller's API keys",
    security(("bearerAuth" = [])),
    responses((status = 200, description = "The keys", body = KeyList)),
)]
async fn list(State(app): State<AppState>, user: CurrentUser) -> Result<Json<KeyList>, ApiError> {
    let keys = orgd_core::api_keys::list(&app.db, user.id(), user.org_id())
        .await
        .or_internal("Failed to list API keys")?;
    Ok(Json(KeyList {
        success: true,
        data: keys.iter().map(key_view).collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/api/auth/api-keys/{id}",
    tag = "auth",
    summary = "Revoke one of the caller's API keys; it stops working at once",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, pattern = "^[0-9a-f]{24}$", description = "The key's id")),
    responses(
        (status = 200, description = "Revoked", body = Done),
        (status = 400, description = "`Invalid key ID`", body = crate::openapi::ErrorBody),
        (status = 404, description = "`API key not found`", body = crate::openapi::ErrorBody),
    ),
)]
async fn revoke(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<Done>, ApiError> {
    if !orgd_core::ids::is_valid(&id) {
        return Err(ApiError::bad_request(
            "Invalid key ID",
            "The key id must be 24 lowercase hex characters",
        ));
    }
    let audit = user.audit_event(ip, "apikey.revoked", "apiKey", &id);
    let revoked =
        orgd_core::api_keys::revoke(&app.db, user.id(), user.org_id(), &id, audit, app.now())
            .await
            .or_internal("Failed to revoke API key")?;
    if !revoked {
        return Err(ApiError::not_found(
            "API key not found",
            "The API key does not exist or you do not have permission to delete it.",
        ));
    }
    Ok(Done::new("API key revoked successfully"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_reject_lookalikes() {
        let key = ApiKey::generate();
        assert_eq!(key.as_str().len(), 69);
        assert!(ApiKey::parse(key.as_str()).is_some());
        assert_eq!(key.shown_prefix(), &key.as_str()[..13]);
        assert_eq!(key.hash(), orgd_core::ids::sha256_hex(key.as_str()));
        let upper = key.as_str().to_uppercase().replacen("ORGD_", "orgd_", 1);
        for bad in [
            "",
            "orgd_",
            "orgd_abc",
            &upper,
            &key.as_str()[5..],
            &format!("{}0", key.as_str()),
        ] {
            assert!(ApiKey::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn names_default_trim_and_cap() {
        assert_eq!(key_name(None).ok().as_deref(), Some("Unnamed Key"));
        assert_eq!(key_name(Some("   ")).ok().as_deref(), Some("Unnamed Key"));
        assert_eq!(key_name(Some(" CI ")).ok().as_deref(), Some("CI"));
        assert!(key_name(Some(&"é".repeat(100))).is_ok());
        assert!(key_name(Some(&"é".repeat(101))).is_err());
    }
}

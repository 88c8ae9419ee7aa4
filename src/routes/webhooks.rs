//! Outgoing webhooks (API.md, "Outgoing webhooks"): `/api/webhooks` CRUD (admin), secret
//! rotation, the delivery log with retry, and a test event. A URL is checked against the
//! address rules when saved (`UrlPolicy::check_url`: https, at most 2,048 characters, the host
//! resolving within 2 s to allowed addresses only) and again by the guarded client at every
//! delivery. The signing secret is shown in the creating answer only and stored sealed.

use crate::http::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{CurrentUser, Role};
use crate::error::{ApiError, OrInternal};
use crate::http::idempotency::{Claimed, IdempotencyKey, answer, respond};
use crate::http::{ClientIp, Done, FromBody, JsonBody, Object, PathParams};
use crate::openapi::ErrorBody;
use crate::state::AppState;
use crate::timestamp::Timestamp;
use orgd_core::crypto::Binding;
use orgd_core::outbox::EVENT_TYPES;
use orgd_core::webhooks::{self, Created, DeliveryRecord, MAX_WEBHOOKS, Webhook, WebhookPatch};
use orgd_providers::signing::WebhookSecret;
use orgd_providers::ssrf::MAX_URL_LEN;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(rotate_secret))
        .routes(routes!(deliveries))
        .routes(routes!(retry))
        .routes(routes!(send_test))
}

const MAX_DESCRIPTION_CHARS: usize = 500;

/// A webhook as the API shows it (never its secret).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Webhook)]
pub struct WebhookView {
    id: String,
    url: String,
    /// Event types, or `["*"]` for all.
    events: Vec<String>,
    description: Option<String>,
    enabled: bool,
    created_at: Timestamp,
}

fn view(webhook: &Webhook) -> WebhookView {
    WebhookView {
        id: webhook.id.clone(),
        url: webhook.url.clone(),
        events: webhook.events.clone(),
        description: webhook.description.clone(),
        enabled: webhook.enabled,
        created_at: Timestamp(webhook.created_at),
    }
}

/// The URL's shape; its addresses are checked by `checked_url` after the body parsed.
fn url_field(body: &Object) -> Result<Option<String>, ApiError> {
    let invalid = |message: &str| ApiError::invalid("url", message.to_string());
    match body.0.get("url") {
        None => Ok(None),
        Some(Value::String(url)) if url.chars().count() > MAX_URL_LEN => {
            Err(invalid("url must be at most 2048 characters"))
        }
        Some(Value::String(url)) if !url.is_empty() => Ok(Some(url.clone())),
        Some(_) => Err(invalid("url must be an https URL")),
    }
}

/// Event types, each known (or `["*"]`), at least one, without repeats.
fn events_field(body: &Object) -> Result<Option<Vec<String>>, ApiError> {
    let invalid = || {
        ApiError::invalid(
            "events",
            format!(
                "events must be a non-empty array of: {}, or [\"*\"]",
                EVENT_TYPES.join(", ")
            ),
        )
    };
    let Some(value) = body.0.get("events") else {
        return Ok(None);
    };
    let items = value
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(invalid)?;
    let mut events: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let event = item
            .as_str()
            .filter(|e| *e == "*" || EVENT_TYPES.contains(e))
            .ok_or_else(invalid)?;
        if !events.iter().any(|e| e == event) {
            events.push(event.to_string());
        }
    }
    if events.len() > 1 && events.iter().any(|e| e == "*") {
        return Err(invalid());
    }
    Ok(Some(events))
}

/// `description`: a string of at most 500 characters, or null (PATCH clears it).
fn description_field(body: &Object) -> Result<Option<Option<String>>, ApiError> {
    match body.0.get("description") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if s.chars().count() <= MAX_DESCRIPTION_CHARS => {
            let trimmed = s.trim();
            Ok(Some((!trimmed.is_empty()).then(|| trimmed.to_string())))
        }
        Some(_) => Err(ApiError::invalid(
            "description",
            "description must be a string of at most 500 characters",
        )),
    }
}

/// `POST /api/webhooks`.
#[derive(ToSchema)]
pub struct NewWebhookRequest {
    /// `https://…`, at most 2,048 characters, resolving to public addresses only.
    url: String,
    /// Event types, or `["*"]`.
    events: Vec<String>,
    /// At most 500 characters.
    description: Option<String>,
}

impl FromBody for NewWebhookRequest {
    fn from_body(body: &Object) -> Result<Self, ApiError> {
        let url = url_field(body)?.ok_or_else(|| ApiError::invalid("url", "url is required"))?;
        let events =
            events_field(body)?.ok_or_else(|| ApiError::invalid("events", "events is required"))?;
        Ok(Self {
            url,
            events,
            description: description_field(body)?.flatten(),
        })
    }
}

/// `PATCH /api/webhooks/:id`: at least one field.
#[derive(ToSchema)]
pub struct WebhookPatchRequest {
    url: Option<String>,
    events: Option<Vec<String>>,
    /// `null` clears it.
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    enabled: Option<bool>,
}

impl WebhookPatchRequest {
    fn into_patch(self) -> WebhookPatch {
        WebhookPatch {
            url: self.url,
            events: self.events,
            description: self.description,
            enabled: self.enabled,
        }
    }
}

impl FromBody for WebhookPatchRequest {
    fn from_body(body: &Object) -> Result<Self, ApiError> {
        if !["url", "events", "description", "enabled"]
            .iter()
            .any(|f| body.has(f))
        {
            return Err(ApiError::bad_request(
                "Missing fields",
                "At least one field (url, events, description or enabled) is required",
            ));
        }
        Ok(Self {
            url: url_field(body)?,
            events: events_field(body)?,
            description: description_field(body)?,
            enabled: body.opt_bool("enabled")?,
        })
    }
}

/// The URL after the address rules, or 400 `Invalid url` in our words.
async fn checked_url(app: &AppState, url: &str) -> Result<String, ApiError> {
    app.url_policy
        .check_url(url)
        .await
        .map(|checked| checked.url.to_string())
        .map_err(|refusal| ApiError::invalid("url", format!("url refused: {refusal}")))
}

fn not_found() -> ApiError {
    ApiError::not_found(
        "Webhook not found",
        "No webhook with this id in your organization",
    )
}

fn binding(org: &str, webhook_id: &str) -> Binding {
    Binding::new(org, webhooks::secret_purpose(webhook_id))
}

#[derive(Serialize, ToSchema)]
pub struct CreatedWebhook {
    success: bool,
    data: CreatedWebhookData,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedWebhookData {
    webhook: WebhookView,
    /// `whsec_…`: shown in this answer only.
    secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    success: bool,
    data: WebhookListData,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookListData {
    webhooks: Vec<WebhookView>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookResponse {
    success: bool,
    data: WebhookData,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookData {
    webhook: WebhookView,
}

#[utoipa::path(
    post,
    path = "/api/webhooks",
    tag = "webhooks",
    summary = "Register a webhook (admin); its signing secret is shown in this answer only",
    security(("bearerAuth" = [])),
    params(IdempotencyKey),
    request_body = NewWebhookRequest,
    responses(
        (status = 201, description = "Created and audited", body = CreatedWebhook),
        (status = 400, description = "`Invalid url`, `Invalid events`, `Invalid description`, `Missing body`, `Invalid JSON`", body = ErrorBody),
        (status = 403, description = "`Forbidden`: admins only; `Webhook limit reached` (10)", body = ErrorBody),
        (status = 409, description = "`Request in progress` with this Idempotency-Key", body = ErrorBody),
        (status = 422, description = "`Idempotency key reused` with another body", body = ErrorBody),
    ),
)]
async fn create(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    key: IdempotencyKey,
    body: JsonBody,
) -> Result<Response, ApiError> {
    user.require(Role::ADMIN)?;
    let body = body.required()?;
    let request = NewWebhookRequest::from_body(&body)?;
    let url = checked_url(&app, &request.url).await?;
    let org = user.org_id();
    let claim = match key.claim(&app, org, "POST /api/webhooks", &body).await? {
        Claimed::Replayed(response) => return Ok(response),
        Claimed::Fresh(claim) => claim,
    };
    let now = app.now();
    let id = orgd_core::ids::new_id(now);
    let secret = WebhookSecret::generate().expose();
    let webhook = Webhook {
        secret: app.vault.seal(&secret, &binding(org, &id)),
        id: id.clone(),
        organization_id: org.to_string(),
        url: url.clone(),
        events: request.events,
        description: request.description,
        enabled: true,
        created_at: now,
        previous_secret: None,
    };
    let audit = user
        .audit_event(ip, "webhook.created", "webhook", &id)
        .with_details(json!({"url": url, "events": webhook.events}));
    let answer_for = |webhook: &Webhook| {
        answer(
            StatusCode::CREATED,
            &CreatedWebhook {
                success: true,
                data: CreatedWebhookData {
                    webhook: view(webhook),
                    secret: secret.clone(),
                },
            },
        )
    };
    let created = webhooks::create(
        &app.db,
        &webhook,
        &audit,
        claim.replay(&answer_for).as_ref(),
        now,
    )
    .await
    .or_internal("Failed to create webhook");
    let result = match created {
        Ok(Created::Created(webhook)) => respond(&answer_for(&webhook)),
        Ok(Created::LimitReached) => Err(ApiError::Refused {
            status: StatusCode::FORBIDDEN,
            error: "Webhook limit reached",
            message: format!("An organization can have at most {MAX_WEBHOOKS} webhooks").into(),
            extra: Default::default(),
        }),
        Err(e) => Err(e),
    };
    claim.settle(result).await
}

#[utoipa::path(
    get,
    path = "/api/webhooks",
    tag = "webhooks",
    summary = "The organization's webhooks (admin)",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Oldest first", body = WebhookList),
        (status = 403, description = "`Forbidden`: admins only", body = ErrorBody),
    ),
)]
async fn list(
    State(app): State<AppState>,
    user: CurrentUser,
) -> Result<Json<WebhookList>, ApiError> {
    user.require(Role::ADMIN)?;
    let hooks = webhooks::list(&app.db, user.org_id())
        .await
        .or_internal("Failed to list webhooks")?;
    Ok(Json(WebhookList {
        success: true,
        data: WebhookListData {
            webhooks: hooks.iter().map(view).collect(),
        },
    }))
}

#[utoipa::path(
    get,
    path = "/api/webhooks/{id}",
    tag = "webhooks",
    summary = "One webhook (admin)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The webhook's id")),
    responses(
        (status = 200, description = "The webhook", body = WebhookResponse),
        (status = 403, description = "`Forbidden`: admins only", body = ErrorBody),
        (status = 404, description = "`Webhook not found`", body = ErrorBody),
    ),
)]
async fn show(
    State(app): State<AppState>,
    user: CurrentUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<WebhookResponse>, ApiError> {
    user.require(Role::ADMIN)?;
    let webhook = webhooks::get(&app.db, user.org_id(), &id)
        .await
        .or_internal("Failed to fetch webhook")?
        .ok_or_else(not_found)?;
    Ok(Json(WebhookResponse {
        success: true,
        data: WebhookData {
            webhook: view(&webhook),
        },
    }))
}

#[utoipa::path(
    patch,
    path = "/api/webhooks/{id}",
    tag = "webhooks",
    summary = "Change a webhook's url, events, description or enabled (admin)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The webhook's id")),
    request_body = WebhookPatchRequest,
    responses(
        (status = 200, description = "Updated and audited", body = WebhookResponse),
        (status = 400, description = "`Missing fields`, `Invalid url`, `Invalid events`, `Invalid description`, `Invalid enabled`, `Missing body`, `Invalid JSON`", body = ErrorBody),
        (status = 403, description = "`Forbidden`: admins only", body = ErrorBody),
        (status = 404, description = "`Webhook not found`", body = ErrorBody),
    ),
)]
async fn update(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    PathParams(id): PathParams<String>,
    body: JsonBody,
) -> Result<Json<WebhookResponse>, ApiError> {
    user.require(Role::ADMIN)?;
    let body = body.required()?;
    let mut request = WebhookPatchRequest::from_body(&body)?;
    if let Some(url) = &request.url {
        request.url = Some(checked_url(&app, url).await?);
    }
    let fields: Vec<&str> = ["url", "events", "description", "enabled"]
        .into_iter()
        .filter(|f| body.has(f))
        .collect();
    let audit = user
        .audit_event(ip, "webhook.updated", "webhook", &id)
        .with_details(json!({"fields": fields}));
    let patch = request.into_patch();
    let webhook = webhooks::update(&app.db, user.org_id(), &id, &patch, &audit, app.now())
        .await
        .or_internal("Failed to update webhook")?
        .ok_or_else(not_found)?;
    Ok(Json(WebhookResponse {
        success: true,
        data: WebhookData {
            webhook: view(&webhook),
        },
    }))
}

#[utoipa::path(
    delete,
    path = "/api/webhooks/{id}",
    tag = "webhooks",
    summary = "Delete a webhook and its pending deliveries (admin)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The webhook's id")),
    responses(
        (status = 200, description = "Deleted and audited", body = Done),
        (status = 403, description = "`Forbidden`: admins only", body = ErrorBody),
        (status = 404, description = "`Webhook not found`", body = ErrorBody),
    ),
)]
async fn remove(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<Done>, ApiError> {
    user.require(Role::ADMIN)?;
    let audit = user.audit_event(ip, "webhook.deleted", "webhook", &id);
    let deleted = webhooks::delete(&app.db, user.org_id(), &id, &audit, app.now())
        .await
        .or_internal("Failed to delete webhook")?;
    if !deleted {
        return Err(not_found());
    }
    Ok(Done::new("Webhook deleted successfully"))
}

#[derive(Serialize, ToSchema)]
pub struct RotatedSecret {
    success: bool,
    data: RotatedSecretData,
}

#[derive(Serialize, ToSchema)]
pub struct RotatedSecretData {
    /// The new `whsec_…`, shown in this answer only; for 24 h deliveries are signed with both.
    secret: String,
}

#[utoipa::path(
    post,
    path = "/api/webhooks/{id}/rotate-secret",
    tag = "webhooks",
    summary = "Replace the signing secret; the old one keeps signing for 24 h (admin)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The webhook's id")),
    responses(
        (status = 200, description = "Rotated and audited", body = RotatedSecret),
        (status = 403, description = "`Forbidden`: admins only", body = ErrorBody),
        (status = 404, description = "`Webhook not found`", body = ErrorBody),
    ),
)]
async fn rotate_secret(
    State(app): State<AppState>,
    ip: ClientIp,
    user: CurrentUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<RotatedSecret>, ApiError> {
    user.require(Role::ADMIN)?;
    let org = user.org_id();
    let secret = WebhookSecret::generate().expose();
    let sealed = app.vault.seal(&secret, &binding(org, &id));
    let audit = user.audit_event(ip, "webhook.secret_rotated", "webhook", &id);
    let rotated = webhooks::rotate_secret(&app.db, org, &id, &sealed, &audit, app.now())
        .await
        .or_internal("Failed to rotate the webhook secret")?;
    if !rotated {
        return Err(not_found());
    }
    Ok(Json(RotatedSecret {
        success: true,
        data: RotatedSecretData { secret },
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// 1–200, default 50.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
    /// `pending`, `delivered` or `failed`.
    #[param(pattern = "^(pending|delivered|failed)$")]
    status: Option<String>,
}

/// One delivery of the log.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WebhookDelivery)]
pub struct DeliveryView {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[schema(pattern = "^(pending|delivered|failed)$")]
    status: String,
    attempts: i64,
    last_status_code: Option<i64>,
    /// In our words.
    last_error: Option<String>,
    next_attempt_at: Option<Timestamp>,
    created_at: Timestamp,
    delivered_at: Option<Timestamp>,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(d: DeliveryRecord) -> Self {
        Self {
            id: d.id,
            kind: d.event_type,
            status: d.status,
            attempts: d.attempts,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            next_attempt_at: d.next_attempt_at.map(Timestamp),
            created_at: Timestamp(d.created_at),
            delivered_at: d.delivered_at.map(Timestamp),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    success: bool,
    data: DeliveryPageData,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPageData {
    /// Newest first.
    deliveries: Vec<DeliveryView>,
    next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/webhooks/{id}/deliveries",
    tag = "webhooks",
    summary = "The webhook's delivery log, newest first (admin)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The webhook's id"), DeliveriesQuery),
    responses(
        (status = 200, description = "A page of deliveries", body = DeliveryPage),
        (status = 400, description = "`Invalid limit`, `Invalid cursor`, `Invalid status`, `Invalid query`", body = ErrorBody),
        (status = 403, description = "`Forbidden`: admins only", body = ErrorBody),
        (status = 404, description = "`Webhook not found`", body = ErrorBody),
    ),
)]
async fn deliveries(
    State(app): State<AppState>,
    user: CurrentUser,
    PathParams(id): PathParams<String>,
    query: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeliveryPage>, ApiError> {
    user.require(Role::ADMIN)?;
    let Query(query) = query.map_err(|_| {
        ApiError::bad_request("Invalid query", "The query string could not be parsed")
    })?;
    let limit = match query.limit.as_deref() {
        None => 50,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", "limit must be an integer from 1 to 200"))?,
    };
    if let Some(cursor) = &query.cursor
        && !orgd_core::ids::is_valid(cursor)
    {
        return Err(ApiError::invalid(
            "cursor",
            "cursor is not one this API returned",
        ));
    }
    if let Some(status) = &query.status
        && !["pending", "delivered", "failed"].contains(&status.as_str())
    {
        return Err(ApiError::invalid(
            "status",
            "status must be pending, delivered or failed",
        ));
    }
    let org = user.org_id();
    webhooks::get(&app.db, org, &id)
        .await
        .or_internal("Failed to list deliveries")?
        .ok_or_else(not_found)?;
    let (page, next) = webhooks::deliveries(
        &app.db,
        org,
        &id,
        query.status.as_deref(),
        limit,
        query.cursor.as_deref(),
    )
    .await
    .or_internal("Failed to list deliveries")?;
    Ok(Json(DeliveryPage {
        success: true,
        data: DeliveryPageData {
            deliveries: page.into_iter().map(DeliveryView::from).collect(),
            next_cursor: next,
        },
    }))
}

#[utoipa::path(
    post,
    path = "/api/webhooks/{id}/deliveries/{deliveryId}/retry",
    tag = "webhooks",
    summary = "Queue a delivery again now (admin)",
    security(("bearerAuth" = [])),
    params(
        ("id" = String, Path, description = "The webhook's id"),
        ("deliveryId" = String, Path, description = "The delivery's id"),
    ),
    responses(
        (status = 200, description = "Queued", body = Done),
        (status = 403, description = "`Forbidden`: admins only", body = ErrorBody),
        (status = 404, description = "`Delivery not found`", body = ErrorBody),
    ),
)]
async fn retry(
    State(app): State<AppState>,
    user: CurrentUser,
    PathParams((id, delivery_id)): PathParams<(String, String)>,
) -> Result<Json<Done>, ApiError> {
    user.require(Role::ADMIN)?;
    let queued = webhooks::retry_delivery(&app.db, user.org_id(), &id, &delivery_id, app.now())
        .await
        .or_internal("Failed to retry the delivery")?;
    if !queued {
        return Err(ApiError::not_found(
            "Delivery not found",
            "No delivery with this id for this webhook",
        ));
    }
    Ok(Done::new("Delivery queued"))
}

#[derive(Serialize, ToSchema)]
pub struct QueuedTest {
    success: bool,
    data: QueuedTestData,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueuedTestData {
    /// The `webhook-id` the receiver will see.
    event_id: String,
}

#[utoipa::path(
    post,
    path = "/api/webhooks/{id}/test",
    tag = "webhooks",
    summary = "Queue a `webhook.test` event for this webhook (admin)",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The webhook's id")),
    responses(
        (status = 202, description = "Queued", body = QueuedTest),
        (status = 403, description = "`Forbidden`: admins only", body = ErrorBody),
        (status = 404, description = "`Webhook not found`", body = ErrorBody),
    ),
)]
async fn send_test(
    State(app): State<AppState>,
    user: CurrentUser,
    PathParams(id): PathParams<String>,
) -> Result<(StatusCode, Json<QueuedTest>), ApiError> {
    user.require(Role::ADMIN)?;
    let org = user.org_id();
    webhooks::get(&app.db, org, &id)
        .await
        .or_internal("Failed to queue the test event")?
        .ok_or_else(not_found)?;
    let event_id = webhooks::queue_test(&app.db, org, &id, app.now())
        .await
        .or_internal("Failed to queue the test event")?;
    Ok((
        StatusCode::ACCEPTED,
        Json(QueuedTest {
            success: true,
            data: QueuedTestData { event_id },
        }),
    ))
}

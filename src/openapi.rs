//! The OpenAPI 3.1 document (`GET /api/openapi.json`). Paths and operations come from the
//! `#[utoipa::path]` attribute on each handler, registered together with its route by
//! `utoipa_axum::routes!`, so a route cannot exist without its description. The conventions
//! every operation shares (the error envelope for 400/401/404/413/415/429/500/503) are added here
//! once, from what each operation declares (body, parameters, security).

use std::sync::OnceLock;

use utoipa::OpenApi as DeriveOpenApi;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, ResponseBuilder};

/// Security scheme names used in handlers' `security(...)`.
pub const BEARER: &str = "bearerAuth";
pub const API_KEY: &str = "apiKey";
pub const ADMIN_TOKEN: &str = "adminToken";

pub use crate::error::ErrorBody;

#[derive(DeriveOpenApi)]
#[openapi(
    info(
        title = "orgd",
        description = "The organization layer of a test automation platform: plans and limits, \
usage, members, invitations, API keys, AI analysis settings, issue-tracker integrations, audit \
logs.\n\nConventions: JSON in and out; timestamps are RFC 3339 UTC with milliseconds and `Z`; ids \
are 24 lowercase hex characters. Success bodies carry `\"success\": true`; every error is the \
`ErrorBody` envelope. Every read and write is scoped to the caller's organization: another \
organization's resource answers 404 as if it did not exist. Unknown JSON fields are ignored; a \
JSON object with a duplicated key is refused. Rate limits (per organization: 100/min for the \
API, 1,000/min for `/api/executions*` and `POST /api/execution-request`; per client IP: 10/min for signup, login and invitation \
validation) answer 429 with `Retry-After`; counted responses carry `X-RateLimit-Limit`, \
`X-RateLimit-Remaining` and `X-RateLimit-Reset`.",
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "service", description = "Health, metrics and this document"),
        (name = "auth", description = "Signup, login, sessions and API keys"),
        (name = "organization", description = "The organization, its plan, limits and usage"),
        (name = "members", description = "Members and invitations"),
        (name = "executions", description = "Projects, test executions, run requests and report files"),
        (name = "analytics", description = "Run KPIs"),
        (name = "analysis", description = "AI failure analysis"),
        (name = "integrations", description = "Issue trackers, Slack and tickets"),
        (name = "webhooks", description = "Outgoing webhooks and their deliveries"),
        (name = "audit", description = "The audit log"),
        (name = "billing", description = "Plans and the organization's subscription; payments are not handled by orgd"),
        (name = "operator", description = "Billing/operator API, only when ORGD_ADMIN_TOKEN is set"),
    )
)]
pub struct ApiDoc;

/// The base document the routers add their paths to.
pub fn base() -> OpenApi {
    ApiDoc::openapi()
}

/// Adds what every operation shares and fixes what OpenAPI spells differently from axum.
pub fn finish(mut doc: OpenApi) -> OpenApi {
    add_security_schemes(&mut doc);
    add_error_responses(&mut doc);
    // axum's catch-all `{*path}` is a plain `{path}` parameter in OpenAPI.
    doc.paths.paths = std::mem::take(&mut doc.paths.paths)
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    doc
}

fn add_security_schemes(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    let bearer = |description: &str| {
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(description))
                .build(),
        )
    };
    components.add_security_scheme(
        BEARER,
        bearer("A session JWT from signup or login (HS256, 24 h by default)."),
    );
    components.add_security_scheme(
        API_KEY,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "x-api-key",
            "An `orgd_…` API key; accepted on /api/executions* and POST /api/execution-request only.",
        ))),
    );
    components.add_security_scheme(
        ADMIN_TOKEN,
        bearer("The operator token (ORGD_ADMIN_TOKEN)."),
    );
    for (name, description) in [
        (
            "BadRequest",
            "Malformed JSON, a missing body or an invalid field",
        ),
        (
            "Unauthorized",
            "No, an invalid, an expired or a revoked credential",
        ),
        ("NotFound", "No such resource in the caller's organization"),
        ("PayloadTooLarge", "The body is over the size limit"),
        ("UnsupportedMediaType", "The body is not application/json"),
        (
            "RateLimited",
            "A rate limit refused the request; see Retry-After",
        ),
        (
            "Internal",
            "An unexpected error; the message carries a request id",
        ),
        (
            "Unavailable",
            "`Service unavailable`: the database is out of reach or the request ran past its \
             deadline; nothing was changed that the answer does not say. Retry after \
             Retry-After (a POST that creates something can be retried safely with the same \
             Idempotency-Key)",
        ),
    ] {
        let mut response = ResponseBuilder::new().description(description).content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        );
        let retry_after = match name {
            "RateLimited" => Some("Seconds until a request is counted again"),
            "Unavailable" => Some("Seconds to wait before retrying"),
            _ => None,
        };
        if let Some(description) = retry_after {
            let seconds = ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0));
            let mut header = Header::new(seconds);
            header.description = Some(description.into());
            response = response.header("Retry-After", header);
        }
        components
            .responses
            .insert(name.to_string(), RefOr::T(response.build()));
    }
}

/// Handlers' names repeat across modules (`list`, `show`); operation ids come from the
/// method and path instead: `GET /api/users/{id}` is `getUsersById`.
fn operation_id(method: &str, path: &str) -> String {
    let pascal = |word: &str| {
        word.split(['-', '.', '_'])
            .map(|part| {
                let mut chars = part.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_uppercase().chain(chars).collect()
                })
            })
            .collect::<String>()
    };
    let words = path
        .trim_start_matches("/api")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|segment| match segment.strip_prefix('{') {
            Some(param) => format!("By{}", pascal(param.trim_matches(['*', '}']))),
            None => pascal(segment),
        });
    std::iter::once(method.to_string()).chain(words).collect()
}

fn add_error_responses(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, operation) in [
            ("get", &mut item.get),
            ("post", &mut item.post),
            ("put", &mut item.put),
            ("patch", &mut item.patch),
            ("delete", &mut item.delete),
        ] {
            if let Some(operation) = operation {
                operation.operation_id = Some(operation_id(method, path));
                add_operation_errors(operation);
            }
        }
    }
}

fn add_operation_errors(operation: &mut Operation) {
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    let has_in = |place: ParameterIn| {
        parameters.iter().any(|p| match p {
            RefOr::T(p) => p.parameter_in == place,
            RefOr::Ref(_) => false,
        })
    };
    let json_body = operation
        .request_body
        .as_ref()
        .is_some_and(|body| match body {
            RefOr::T(body) => body.content.contains_key("application/json"),
            RefOr::Ref(_) => false,
        });
    let secured = operation
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty());
    let mut wanted = vec![("500", "Internal"), ("503", "Unavailable")];
    if json_body || has_in(ParameterIn::Query) {
        wanted.push(("400", "BadRequest"));
    }
    if json_body {
        wanted.push(("413", "PayloadTooLarge"));
        wanted.push(("415", "UnsupportedMediaType"));
    }
    if secured {
        wanted.push(("401", "Unauthorized"));
    }
    if secured {
        wanted.push(("429", "RateLimited"));
    }
    if has_in(ParameterIn::Path) {
        wanted.push(("404", "NotFound"));
    }
    for (status, name) in wanted {
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
    }
}

/// The whole document, built once per process from the routers (it depends on nothing but
/// the code).
pub fn document_json() -> &'static serde_json::Value {
    static DOCUMENT: OnceLock<serde_json::Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let (_, doc) = crate::documented_routes(true).split_for_parts();
        let mut document = serde_json::to_value(finish(doc)).unwrap_or_default();
        if let Some(document) = document.as_object_mut() {
            document.insert("webhooks".into(), webhooks());
        }
        document
    })
}

/// The OpenAPI 3.1 `webhooks` section: every event orgd sends to a registered URL, each a
/// `POST` of the Standard Webhooks envelope (utoipa has no model for this section).
fn webhooks() -> serde_json::Value {
    use orgd_core::outbox::{
        ANALYSIS_COMPLETED, EXECUTION_FINISHED, INTEGRATION_DISABLED, MEMBER_JOINED,
        MEMBER_REMOVED, MEMBER_ROLE_CHANGED, USAGE_THRESHOLD_CROSSED, WEBHOOK_TEST,
    };
    use serde_json::json;
    let events = [
        (
            EXECUTION_FINISHED,
            "A run reached PASSED, FAILED, ERROR or UNSTABLE",
            json!({"execution": {"$ref": "#/components/schemas/Execution"}}),
        ),
        (
            ANALYSIS_COMPLETED,
            "An analysis was stored, completed or failed",
            json!({"taskId": {"type": "string"}, "analysis": {"$ref": "#/components/schemas/Analysis"}}),
        ),
        (
            USAGE_THRESHOLD_CROSSED,
            "A usage figure went from below a level (warning 80 %, critical 100 %) to at or above it; once per organization, resource, level and month",
            json!({
            "resource": {"type": "string", "enum": ["testRuns", "users", "storage"]},
            "level": {"type": "string", "enum": ["warning", "critical"]},
            "percentUsed": {"type": "integer"}, "used": {"type": "integer"}, "limit": {"type": "integer"},
            "period": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"}}),
        ),
        (
            MEMBER_JOINED,
            "A member joined (signup with an invitation or an accepted invitation)",
            json!({"member": {"type": "object"}}),
        ),
        (
            MEMBER_REMOVED,
            "A member was removed or left",
            json!({"member": {"type": "object"}}),
        ),
        (
            MEMBER_ROLE_CHANGED,
            "An admin changed a member's role",
            json!({"member": {"type": "object"}, "previousRole": {"type": "string"}}),
        ),
        (
            INTEGRATION_DISABLED,
            "orgd disabled an integration or a webhook",
            json!({"provider": {"type": "string"}, "webhookId": {"type": "string"}, "reason": {"type": "string"}}),
        ),
        (
            WEBHOOK_TEST,
            "Sent by POST /api/webhooks/{id}/test",
            json!({"message": {"type": "string"}}),
        ),
    ];
    let mut section = serde_json::Map::new();
    for (kind, summary, fields) in events {
        let mut properties = json!({"organizationId": {"type": "string"}});
        if let (Some(properties), Some(fields)) = (properties.as_object_mut(), fields.as_object()) {
            properties.extend(fields.clone());
        }
        let schema = json!({
            "type": "object",
            "required": ["type", "id", "timestamp", "data"],
            "properties": {
                "type": {"type": "string", "const": kind},
                "id": {"type": "string", "description": "Also the `webhook-id` header; stable across retries"},
                "timestamp": {"type": "string", "format": "date-time"},
                "data": {"type": "object", "properties": properties},
            },
        });
        let header = |name: &str, description: &str| json!({"name": name, "in": "header", "required": true, "description": description, "schema": {"type": "string"}});
        section.insert(kind.to_string(), json!({"post": {
            "summary": summary,
            "operationId": format!("event{}", kind.split(['.', '_']).map(|w| {
                let mut c = w.chars();
                c.next().map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
            }).collect::<String>()),
            "parameters": [
                header("webhook-id", "The event's id"),
                header("webhook-timestamp", "Unix seconds of this attempt"),
                header("webhook-signature", "`v1,<base64 HMAC-SHA256>`, space-separated during a rotation"),
            ],
            "requestBody": {"required": true, "content": {"application/json": {"schema": schema}}},
            "responses": {"2XX": {"description": "Delivered; anything else is retried on the schedule (410 disables the webhook)"}},
        }}));
    }
    serde_json::Value::Object(section)
}

#[cfg(test)]
mod tests {
    use super::operation_id;

    #[test]
    fn operation_ids_follow_method_and_path() {
        assert_eq!(operation_id("get", "/api/users/{id}"), "getUsersById");
        assert_eq!(
            operation_id("put", "/api/executions/{taskId}/reports/{*path}"),
            "putExecutionsByTaskIdReportsByPath"
        );
        assert_eq!(
            operation_id("post", "/api/auth/api-keys"),
            "postAuthApiKeys"
        );
        assert_eq!(operation_id("get", "/health"), "getHealth");
        assert_eq!(operation_id("get", "/api/openapi.json"), "getOpenapiJson");
    }
}

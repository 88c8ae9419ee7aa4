//! `GET /api/organization/audit-logs` (admin): the organization's audit trail, newest first,
//! filtered and paged by cursor.

use crate::http::Json;
use axum::extract::{Query, State};
use orgd_core::audit::{self, AuditEntry, AuditFilter};
use orgd_core::clock::parse_rfc3339;
use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{CurrentUser, Role};
use crate::error::{ApiError, OrInternal};
use crate::http::page::parse_cursor;
use crate::state::AppState;
use crate::timestamp::Timestamp;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AuditEntry)]
pub struct AuditEntryView {
    pub id: String,
    /// `org.settings_updated`, `user.role_changed`, `integration.updated`, ...
    pub action: String,
    /// `null` for operator and system actions.
    pub user_id: Option<String>,
    pub target_type: String,
    pub target_id: String,
    /// What changed (never a secret).
    #[schema(value_type = Object)]
    pub details: Value,
    pub ip: Option<String>,
    pub timestamp: Timestamp,
}

impl From<AuditEntry> for AuditEntryView {
    fn from(e: AuditEntry) -> Self {
        Self {
            id: e.id,
            action: e.action,
            user_id: e.user_id,
            target_type: e.target_type,
            target_id: e.target_id,
            details: e.details,
            ip: e.ip,
            timestamp: Timestamp(e.created_at),
        }
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Debug, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only entries with this action.
    action: Option<String>,
    /// Only entries by this user.
    #[serde(rename = "userId")]
    user_id: Option<String>,
    /// RFC 3339; entries at or after.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// RFC 3339; entries at or before.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// 1–200, default 50.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditLogPage {
    success: bool,
    /// Newest first.
    audit_logs: Vec<AuditEntryView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

fn parse_filter(q: ListQuery) -> Result<AuditFilter, ApiError> {
    let limit = match q.limit.as_deref() {
        None => 50,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", "limit must be an integer from 1 to 200"))?,
    };
    let time = |field: &str, value: Option<String>| {
        value
            .map(|s| {
                parse_rfc3339(&s).ok_or_else(|| {
                    ApiError::invalid(field, format!("{field} must be an RFC 3339 timestamp"))
                })
            })
            .transpose()
    };
    if let Some(id) = &q.user_id
        && !orgd_core::ids::is_valid(id)
    {
        return Err(ApiError::invalid(
            "userId",
            "userId must be 24 lowercase hex characters",
        ));
    }
    let before = q.cursor.as_deref().map(parse_cursor).transpose()?;
    Ok(AuditFilter {
        from: time("from", q.from)?,
        to: time("to", q.to)?,
        action: q.action.filter(|a| !a.is_empty()),
        user_id: q.user_id,
        before,
        limit,
    })
}

#[utoipa::path(
    get,
    path = "/api/organization/audit-logs",
    tag = "audit",
    summary = "The organization's audit log, newest first (admin)",
    security(("bearerAuth" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of entries", body = AuditLogPage),
        (status = 400, description = "`Invalid limit`, `Invalid from`, `Invalid to`, `Invalid cursor`, `Invalid query`", body = crate::openapi::ErrorBody),
        (status = 403, description = "`Forbidden`: admins only", body = crate::openapi::ErrorBody),
    ),
)]
async fn list(
    State(app): State<AppState>,
    user: CurrentUser,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditLogPage>, ApiError> {
    user.require(Role::ADMIN)?;
    let Query(query) = query.map_err(|_| {
        ApiError::bad_request("Invalid query", "The query string could not be parsed")
    })?;
    let filter = parse_filter(query)?;
    let page = audit::page(&app.db, user.org_id(), &filter)
        .await
        .or_internal("Failed to fetch audit logs")?;
    Ok(Json(AuditLogPage {
        success: true,
        audit_logs: page.entries.into_iter().map(AuditEntryView::from).collect(),
        next_cursor: page.next.map(|c| c.encode()),
    }))
}

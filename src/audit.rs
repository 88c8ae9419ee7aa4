//! The audit trail: entries written inside the same transaction as the change they record,
//! and `GET /api/organization/audit-logs` (admin; filters; cursor pagination, newest first).

use axum::Json;
use axum::extract::{Query, State};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Row};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{CurrentUser, Role};
use crate::error::{ApiError, OrInternal};
use crate::http::ClientIp;
use crate::state::AppState;
use crate::store::{CoreResult, SqlStore, Tx};
use crate::timestamp::Timestamp;
use orgd_core::clock::parse_rfc3339;

/// Who made a change: a user, the operator (CLI / admin API) or the service itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    User,
    Operator,
    System,
}

impl Actor {
    fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Operator => "operator",
            Self::System => "system",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub organization_id: String,
    pub user_id: Option<String>,
    pub actor: Actor,
    pub action: &'static str,
    pub target_type: &'static str,
    pub target_id: String,
    pub details: Value,
    pub ip: Option<String>,
}

impl AuditEvent {
    pub fn by_user(
        user: &CurrentUser,
        ip: ClientIp,
        action: &'static str,
        target_type: &'static str,
        target_id: &str,
    ) -> Self {
        Self {
            organization_id: user.org_id().to_string(),
            user_id: Some(user.id().to_string()),
            actor: Actor::User,
            action,
            target_type,
            target_id: target_id.to_string(),
            details: json!({}),
            ip: Some(ip.0.to_string()),
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// Writes `event` inside the caller's transaction, so it commits with the change or not at all.
pub async fn insert(tx: &mut Tx, event: &AuditEvent, now: i64) -> CoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_logs (id, organization_id, user_id, actor, action, target_type, target_id, details, ip, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(orgd_core::ids::new_id(now))
    .bind(&event.organization_id)
    .bind(event.user_id.as_deref())
    .bind(event.actor.as_str())
    .bind(event.action)
    .bind(event.target_type)
    .bind(&event.target_id)
    .bind(event.details.to_string())
    .bind(event.ip.as_deref())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
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

/// Where a page starts: strictly older than this entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: i64,
    pub id: String,
}

impl Cursor {
    fn encode(&self) -> String {
        format!("{}_{}", self.created_at, self.id)
    }

    fn decode(s: &str) -> Option<Self> {
        let (ms, id) = s.split_once('_')?;
        let created_at = ms.parse().ok()?;
        orgd_core::ids::is_valid(id).then(|| Self {
            created_at,
            id: id.to_string(),
        })
    }
}

#[derive(Debug, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub user_id: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub before: Option<Cursor>,
    pub limit: i64,
}

#[async_trait::async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Entries of one organization matching `filter`, newest first, at most `filter.limit`.
    async fn audit_entries(
        &self,
        organization_id: &str,
        filter: &AuditFilter,
    ) -> CoreResult<Vec<(AuditEntry, i64)>>;
}

#[async_trait::async_trait]
impl AuditStore for SqlStore {
    async fn audit_entries(
        &self,
        organization_id: &str,
        filter: &AuditFilter,
    ) -> CoreResult<Vec<(AuditEntry, i64)>> {
        let mut sql = String::from(
            "SELECT id, action, user_id, target_type, target_id, details, ip, created_at
             FROM audit_logs WHERE organization_id = $1",
        );
        let mut n = 1;
        let mut next = |sql: &mut String, clause: &str| {
            n += 1;
            sql.push_str(&clause.replace('?', &format!("${n}")));
        };
        if filter.action.is_some() {
            next(&mut sql, " AND action = ?");
        }
        if filter.user_id.is_some() {
            next(&mut sql, " AND user_id = ?");
        }
        if filter.from.is_some() {
            next(&mut sql, " AND created_at >= ?");
        }
        if filter.to.is_some() {
            next(&mut sql, " AND created_at <= ?");
        }
        if filter.before.is_some() {
            next(&mut sql, " AND (created_at < ?");
            next(&mut sql, " OR (created_at = ? AND id < ");
            next(&mut sql, "?))");
        }
        next(&mut sql, " ORDER BY created_at DESC, id DESC LIMIT ?");

        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(organization_id);
        if let Some(action) = &filter.action {
            query = query.bind(action);
        }
        if let Some(user_id) = &filter.user_id {
            query = query.bind(user_id);
        }
        if let Some(from) = filter.from {
            query = query.bind(from);
        }
        if let Some(to) = filter.to {
            query = query.bind(to);
        }
        if let Some(cursor) = &filter.before {
            query = query
                .bind(cursor.created_at)
                .bind(cursor.created_at)
                .bind(&cursor.id);
        }
        let rows = query.bind(filter.limit).fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                let created_at: i64 = row.try_get("created_at")?;
                let details: String = row.try_get("details")?;
                Ok((
                    AuditEntry {
                        id: row.try_get("id")?,
                        action: row.try_get("action")?,
                        user_id: row.try_get("user_id")?,
                        target_type: row.try_get("target_type")?,
                        target_id: row.try_get("target_id")?,
                        details: serde_json::from_str(&details).unwrap_or(Value::Null),
                        ip: row.try_get("ip")?,
                        timestamp: Timestamp(created_at),
                    },
                    created_at,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
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
    audit_logs: Vec<AuditEntry>,
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
    let before = q
        .cursor
        .map(|c| {
            Cursor::decode(&c)
                .ok_or_else(|| ApiError::invalid("cursor", "cursor is not one this API returned"))
        })
        .transpose()?;
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
    let mut filter = parse_filter(query)?;
    let page_size = filter.limit;
    filter.limit = page_size + 1;
    let mut entries = app
        .store
        .audit_entries(user.org_id(), &filter)
        .await
        .or_internal("Failed to fetch audit logs")?;
    let next_cursor = if entries.len() as i64 > page_size {
        entries.truncate(page_size as usize);
        entries.last().map(|(e, created_at)| {
            Cursor {
                created_at: *created_at,
                id: e.id.clone(),
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Json(AuditLogPage {
        success: true,
        audit_logs: entries.into_iter().map(|(e, _)| e).collect(),
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            created_at: 1_700_000_000_123,
            id: "507f191e810c19729de860ea".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("garbage"), None);
        assert_eq!(Cursor::decode("12_507F191E810C19729DE860EA"), None);
    }
}

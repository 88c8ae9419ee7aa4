//! The audit trail: who changed what, written inside the same transaction as the change so
//! it commits with it or not at all, and read back a page at a time, newest first.

use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Row};

pub use crate::cursor::Cursor;
use crate::cursor::{limit_clause, split_page};
use crate::db::{Db, Tx};
use crate::error::CoreResult;

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
    /// A change made by `user_id` of `organization_id`, from `ip`.
    pub fn by_user(
        organization_id: &str,
        user_id: &str,
        ip: Option<String>,
        action: &'static str,
        target_type: &'static str,
        target_id: &str,
    ) -> Self {
        Self {
            organization_id: organization_id.to_string(),
            user_id: Some(user_id.to_string()),
            actor: Actor::User,
            action,
            target_type,
            target_id: target_id.to_string(),
            details: json!({}),
            ip,
        }
    }

    /// A change the service made by itself (`userId: null`, `actor: "system"`).
    pub fn by_system(
        organization_id: &str,
        action: &'static str,
        target_type: &'static str,
        target_id: &str,
    ) -> Self {
        Self {
            organization_id: organization_id.to_string(),
            user_id: None,
            actor: Actor::System,
            action,
            target_type,
            target_id: target_id.to_string(),
            details: json!({}),
            ip: None,
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
    .bind(crate::ids::new_id(now))
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

/// One stored entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: String,
    pub action: String,
    pub user_id: Option<String>,
    pub target_type: String,
    pub target_id: String,
    pub details: Value,
    pub ip: Option<String>,
    pub created_at: i64,
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

/// A page of entries and the cursor of the next one (`None` on the last page).
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next: Option<Cursor>,
}

/// Entries of one organization matching `filter`, newest first, at most `filter.limit`.
pub async fn page(db: &Db, organization_id: &str, filter: &AuditFilter) -> CoreResult<AuditPage> {
    let entries = entries(db, organization_id, filter, filter.limit + 1).await?;
    let (entries, next) = split_page(entries, filter.limit, |e| Cursor {
        created_at: e.created_at,
        id: e.id.clone(),
    });
    Ok(AuditPage { entries, next })
}

async fn entries(
    db: &Db,
    organization_id: &str,
    filter: &AuditFilter,
    limit: i64,
) -> CoreResult<Vec<AuditEntry>> {
    let mut sql = String::from(
        "SELECT id, action, user_id, target_type, target_id, details, ip, created_at
         FROM audit_logs WHERE organization_id = $1",
    );
    let mut n = 1;
    // Each `?` of a clause becomes the next numbered placeholder.
    let mut next = |sql: &mut String, clause: &str| {
        for (i, part) in clause.split('?').enumerate() {
            if i > 0 {
                n += 1;
                sql.push_str(&format!("${n}"));
            }
            sql.push_str(part);
        }
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
        next(&mut sql, &format!(" AND {}", Cursor::older_than("?", "?")));
    }
    sql.push_str(" ORDER BY created_at DESC, id DESC ");
    sql.push_str(&limit_clause(limit, 0));

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
        query = query.bind(cursor.created_at).bind(&cursor.id);
    }
    let rows = query.fetch_all(db.pool()).await?;
    rows.iter()
        .map(|row| {
            let details: String = row.try_get("details")?;
            Ok(AuditEntry {
                id: row.try_get("id")?,
                action: row.try_get("action")?,
                user_id: row.try_get("user_id")?,
                target_type: row.try_get("target_type")?,
                target_id: row.try_get("target_id")?,
                details: serde_json::from_str(&details).unwrap_or(Value::Null),
                ip: row.try_get("ip")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

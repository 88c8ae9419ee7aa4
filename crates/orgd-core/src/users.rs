//! Users and their sessions: the roles, sign-up (an organization and its first admin), login
//! with its lockout, who a token belongs to on every request, and revoked tokens.

use sqlx::Row;

use std::sync::Arc;

use crate::db::cache::ReadCache;
use crate::db::notify::Change;
use crate::db::{Backend, Db, Tx};
use crate::error::{CoreError, CoreResult};
use crate::plans::Plan;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Developer,
    Viewer,
}

impl Role {
    pub const ADMIN: &'static [Role] = &[Role::Admin];
    pub const WRITERS: &'static [Role] = &[Role::Admin, Role::Developer];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Developer => "developer",
            Self::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "developer" => Some(Self::Developer),
            "viewer" => Some(Self::Viewer),
            _ => None,
        }
    }
}

impl TryFrom<String> for Role {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("unknown role {s:?}"))
    }
}

/// Failed logins allowed per email and IP within the window before that pair is locked.
pub const LOCKOUT_THRESHOLD: i64 = 5;
pub const LOCKOUT_WINDOW_MS: i64 = 15 * 60 * 1000;

/// Whether a login attempt may go on to the password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginAttempt {
    Counted,
    /// Too many attempts in the window; `newest` is when the latest was counted.
    Locked {
        newest: i64,
    },
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRecord {
    pub id: String,
    pub organization_id: String,
    pub email: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub status: String,
    pub last_login_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A user as seen by login: the record, its password hash and its organization's name.
pub struct LoginCandidate {
    pub user: UserRecord,
    pub password_hash: String,
    pub organization_name: String,
}

pub struct NewUser {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
}

pub struct NewOrganization {
    pub id: String,
    pub name: String,
    pub base_slug: String,
    pub plan: Plan,
}

pub const USER_COLUMNS: &str = "u.id, u.organization_id, u.email, u.name, u.role, u.status, u.last_login_at, u.created_at, u.updated_at";

/// An email address, trimmed and lower-cased, in the original's accepted shape.
pub struct Email(String);

impl Email {
    /// `None` for anything that is not an address.
    pub fn parse(raw: &str) -> Option<Self> {
        let email = raw.trim().to_lowercase();
        let valid = email.len() <= 254
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !email.chars().any(char::is_whitespace)
                    && domain.matches('@').count() == 0
                    && domain
                        .split_once('.')
                        .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
                    && !domain.ends_with('.')
            });
        valid.then_some(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `Conflict` on `email` when the email is taken.
pub async fn create_organization_with_admin(
    db: &Db,
    org: NewOrganization,
    admin: NewUser,
    now: i64,
) -> CoreResult<String> {
    // The unique index decides; a lost race on the slug just picks the next suffix.
    for _ in 0..8 {
        let mut tx = db.begin_write().await?;
        let taken: Vec<String> =
            sqlx::query_scalar("SELECT slug FROM organizations WHERE slug = $1 OR slug LIKE $2")
                .bind(&org.base_slug)
                .bind(format!("{}-%", org.base_slug))
                .fetch_all(&mut *tx)
                .await?;
        let slug = first_free_slug(&org.base_slug, &taken);
        let inserted = sqlx::query(
            "INSERT INTO organizations (id, name, slug, plan, limit_overrides, ai_analysis_enabled, storage_used_bytes, created_at, updated_at)
             VALUES ($1, $2, $3, $4, '{}', 1, 0, $5, $5)",
        )
        .bind(&org.id)
        .bind(&org.name)
        .bind(&slug)
        .bind(org.plan.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted.map_err(CoreError::from) {
            Err(e) if e.is_conflict_on("slug") => continue,
            other => other?,
        };
        sqlx::query(
            "INSERT INTO users (id, organization_id, email, name, password_hash, role, status, last_login_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'active', NULL, $7, $7)",
        )
        .bind(&admin.id)
        .bind(&org.id)
        .bind(&admin.email)
        .bind(&admin.name)
        .bind(&admin.password_hash)
        .bind(Role::Admin.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(slug);
    }
    Err(CoreError::Conflict(
        "organizations.slug (retries exhausted)".into(),
    ))
}

pub async fn login_candidate(db: &Db, email: &str) -> CoreResult<Option<LoginCandidate>> {
    let sql = format!(
        "SELECT {USER_COLUMNS}, u.password_hash, o.name AS organization_name
         FROM users u JOIN organizations o ON o.id = u.organization_id WHERE u.email = $1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(email)
        .fetch_optional(db.pool())
        .await?;
    row.map(|row| {
        Ok(LoginCandidate {
            user: sqlx::FromRow::from_row(&row)?,
            password_hash: row.try_get("password_hash")?,
            organization_name: row.try_get("organization_name")?,
        })
    })
    .transpose()
    .map_err(|e: sqlx::Error| e.into())
}

/// Who is behind a token: the user as stored now, and whether the token was revoked.
#[derive(Debug)]
pub struct Identity {
    pub user: Arc<UserRecord>,
    pub revoked: bool,
}

/// Who is behind a (user id, token id): read on every request, cached until a commit makes
/// it stale (see `db::cache`). Every change of a user, their sessions or their API keys
/// announces `Change::User`.
pub struct Identities {
    cache: Arc<ReadCache<(String, String), Identity>>,
}

impl Identities {
    pub fn new(db: &Db) -> Self {
        Self {
            cache: db.read_cache(
                |(user_id, _), change| matches!(change, Change::User(id) if id == user_id),
            ),
        }
    }

    /// The user behind a token, and whether the token's `jti` was revoked, in one round trip
    /// (none when cached).
    pub async fn get(
        &self,
        db: &Db,
        user_id: &str,
        jti: &str,
    ) -> CoreResult<Option<Arc<Identity>>> {
        let key = (user_id.to_string(), jti.to_string());
        let loaded_under = match self.cache.get(&key) {
            Ok(hit) => return Ok(Some(hit)),
            Err(token) => token,
        };
        let Some((user, revoked)) = load_identity(db, user_id, jti).await? else {
            return Ok(None);
        };
        let identity = Arc::new(Identity {
            user: Arc::new(user),
            revoked,
        });
        self.cache.put(key, identity.clone(), loaded_under);
        Ok(Some(identity))
    }
}

/// Revokes the session token `jti` of `user_id` (logout).
pub async fn revoke_token(
    db: &Db,
    user_id: &str,
    jti: &str,
    expires_at: i64,
    now: i64,
) -> CoreResult<()> {
    let mut tx = db.begin_write().await?;
    tx.notify(Change::User(user_id.to_string())).await?;
    // Entries past their token's expiry can never matter again.
    sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < $1")
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
    )
    .bind(jti)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Failed logins for this email and IP since `since`, newest first (at most `max`).
/// Counts a login attempt of `email` from `ip` before its password is checked, unless
/// `max` attempts since `since` are already counted. Check and count are one serialized
/// transaction, so parallel guesses cannot slip past the lockout. A successful login
/// clears the pair's attempts (`record_login_success`).
pub async fn begin_login_attempt(
    db: &Db,
    email: &str,
    ip: &str,
    now: i64,
    since: i64,
    max: i64,
) -> CoreResult<LoginAttempt> {
    let mut tx = db.begin_write().await?;
    // SQLite's BEGIN IMMEDIATE already serializes writers; PostgreSQL has no row to lock
    // for a pair that has not failed yet, so a transaction lock on the pair stands in.
    if db.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))::text")
            .bind(format!("login\n{email}\n{ip}"))
            .execute(&mut *tx)
            .await?;
    }
    // Attempts older than any lockout window are dead weight.
    sqlx::query("DELETE FROM login_failures WHERE failed_at < $1")
        .bind(now - LOCKOUT_WINDOW_MS * 2)
        .execute(&mut *tx)
        .await?;
    let counted: Vec<i64> = sqlx::query_scalar(
        "SELECT failed_at FROM login_failures WHERE email = $1 AND ip = $2 AND failed_at > $3
         ORDER BY failed_at DESC LIMIT $4",
    )
    .bind(email)
    .bind(ip)
    .bind(since)
    .bind(max)
    .fetch_all(&mut *tx)
    .await?;
    if counted.len() as i64 >= max {
        tx.commit().await?;
        return Ok(LoginAttempt::Locked {
            newest: counted.first().copied().unwrap_or(now),
        });
    }
    sqlx::query("INSERT INTO login_failures (id, email, ip, failed_at) VALUES ($1, $2, $3, $4)")
        .bind(crate::ids::new_id(now))
        .bind(email)
        .bind(ip)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(LoginAttempt::Counted)
}

pub async fn record_login_success(
    db: &Db,
    user_id: &str,
    email: &str,
    ip: &str,
    now: i64,
) -> CoreResult<()> {
    let mut tx = db.begin_write().await?;
    // `lastLoginAt` is part of the cached identity.
    tx.notify(Change::User(user_id.to_string())).await?;
    sqlx::query("UPDATE users SET last_login_at = $1 WHERE id = $2")
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM login_failures WHERE email = $1 AND ip = $2")
        .bind(email)
        .bind(ip)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

async fn load_identity(
    db: &Db,
    user_id: &str,
    jti: &str,
) -> CoreResult<Option<(UserRecord, bool)>> {
    let sql = format!(
        "SELECT {USER_COLUMNS},
                CASE WHEN EXISTS (SELECT 1 FROM revoked_tokens r WHERE r.jti = $2) THEN 1 ELSE 0 END AS revoked
         FROM users u WHERE u.id = $1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .bind(jti)
        .fetch_optional(db.pool())
        .await?;
    row.map(|row| {
        let user: UserRecord = sqlx::FromRow::from_row(&row)?;
        let revoked: i64 = row.try_get("revoked")?;
        Ok((user, revoked != 0))
    })
    .transpose()
    .map_err(|e: sqlx::Error| e.into())
}

/// `base`, else `base-2`, `base-3`, ... whichever is first not in `taken`.
fn first_free_slug(base: &str, taken: &[String]) -> String {
    if !taken.iter().any(|s| s == base) {
        return base.to_string();
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or_else(|| base.to_string())
}

/// The member `user_id` of `organization_id` as `tx` sees it.
pub async fn member_in(
    tx: &mut Tx,
    organization_id: &str,
    user_id: &str,
) -> CoreResult<Option<UserRecord>> {
    let sql =
        format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1 AND u.organization_id = $2");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .bind(organization_id)
        .fetch_optional(&mut **tx)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_take_the_first_free_suffix() {
        let taken = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(first_free_slug("acme", &taken(&[])), "acme");
        assert_eq!(first_free_slug("acme", &taken(&["acme"])), "acme-2");
        assert_eq!(
            first_free_slug("acme", &taken(&["acme", "acme-2", "acme-corp"])),
            "acme-3"
        );
    }

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse(" Bob@Example.COM ").map(|e| e.0),
            Some("bob@example.com".into())
        );
        for bad in [
            "bob",
            "bob@",
            "@x.io",
            "bob@x",
            "bob@x.",
            "b ob@x.io",
            "a@b@c.io",
        ] {
            assert!(Email::parse(bad).is_none(), "{bad}");
        }
    }
}

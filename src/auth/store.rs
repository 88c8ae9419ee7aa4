//! Queries behind sign-up, login, logout and per-request identity.

use sqlx::Row;

use super::Role;
use crate::store::{Backend, CoreError, CoreResult, SqlStore};
use orgd_core::audit::{self, AuditEvent};
use orgd_core::plans::Plan;

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

pub struct NewApiKey {
    pub id: String,
    pub organization_id: String,
    pub user_id: String,
    pub name: String,
    pub key_hash: String,
    pub prefix: String,
}

/// An API key as its owner may see it (never the secret, never its hash).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// `lastUsed` is refreshed at most this often, so keys in busy CI do not cost a write per request.
pub const API_KEY_TOUCH_INTERVAL_MS: i64 = 60_000;

pub const USER_COLUMNS: &str = "u.id, u.organization_id, u.email, u.name, u.role, u.status, u.last_login_at, u.created_at, u.updated_at";

#[async_trait::async_trait]
pub trait AuthStore: Send + Sync + 'static {
    /// Creates an organization with a unique slug and its first user, atomically.
    /// `Conflict` on `email` when the email is taken.
    async fn create_organization_with_admin(
        &self,
        org: NewOrganization,
        admin: NewUser,
        now: i64,
    ) -> CoreResult<String>;
    async fn login_candidate(&self, email: &str) -> CoreResult<Option<LoginCandidate>>;
    /// The user behind a token, and whether the token's `jti` was revoked, in one round trip.
    async fn identity(&self, user_id: &str, jti: &str) -> CoreResult<Option<(UserRecord, bool)>>;
    async fn revoke_token(&self, jti: &str, expires_at: i64, now: i64) -> CoreResult<()>;
    /// Failed logins for this email and IP since `since`, newest first (at most `max`).
    /// Counts a login attempt of `email` from `ip` before its password is checked, unless
    /// `max` attempts since `since` are already counted. Check and count are one serialized
    /// transaction, so parallel guesses cannot slip past the lockout. A successful login
    /// clears the pair's attempts (`record_login_success`).
    async fn begin_login_attempt(
        &self,
        email: &str,
        ip: &str,
        now: i64,
        since: i64,
        max: i64,
    ) -> CoreResult<LoginAttempt>;
    async fn record_login_success(
        &self,
        user_id: &str,
        email: &str,
        ip: &str,
        now: i64,
    ) -> CoreResult<()>;
    async fn create_api_key(&self, key: &NewApiKey, audit: &AuditEvent, now: i64)
    -> CoreResult<()>;
    /// The live keys `user_id` created in `organization_id`, newest first.
    async fn api_keys(&self, user_id: &str, organization_id: &str)
    -> CoreResult<Vec<ApiKeyRecord>>;
    /// Revokes one of the caller's live keys and writes `audit` (its details completed with
    /// the key's name and prefix). False when there is no such key.
    async fn revoke_api_key(
        &self,
        user_id: &str,
        organization_id: &str,
        key_id: &str,
        audit: AuditEvent,
        now: i64,
    ) -> CoreResult<bool>;
    /// The creator of a live key, with the key's id, in one query: `None` when the key is
    /// unknown or revoked, its creator removed, or the creator now belongs to another
    /// organization than the key. Refreshes the key's `last_used_at` when stale.
    async fn api_key_identity(
        &self,
        key_hash: &str,
        now: i64,
    ) -> CoreResult<Option<(UserRecord, String)>>;
}

#[async_trait::async_trait]
impl AuthStore for SqlStore {
    async fn create_organization_with_admin(
        &self,
        org: NewOrganization,
        admin: NewUser,
        now: i64,
    ) -> CoreResult<String> {
        // The unique index decides; a lost race on the slug just picks the next suffix.
        for _ in 0..8 {
            let mut tx = self.begin_write().await?;
            let taken: Vec<String> = sqlx::query_scalar(
                "SELECT slug FROM organizations WHERE slug = $1 OR slug LIKE $2",
            )
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

    async fn login_candidate(&self, email: &str) -> CoreResult<Option<LoginCandidate>> {
        let sql = format!(
            "SELECT {USER_COLUMNS}, u.password_hash, o.name AS organization_name
             FROM users u JOIN organizations o ON o.id = u.organization_id WHERE u.email = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(email)
            .fetch_optional(self.pool())
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

    async fn identity(&self, user_id: &str, jti: &str) -> CoreResult<Option<(UserRecord, bool)>> {
        let key = (user_id.to_string(), jti.to_string());
        let loaded_under = match self.identities.get(&key) {
            Ok(hit) => return Ok(Some(hit)),
            Err(header) => header,
        };
        let found = self.load_identity(user_id, jti).await?;
        if let Some(identity) = &found {
            self.identities.put(key, identity.clone(), loaded_under);
        }
        Ok(found)
    }

    async fn revoke_token(&self, jti: &str, expires_at: i64, now: i64) -> CoreResult<()> {
        let mut tx = self.begin_write().await?;
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

    async fn begin_login_attempt(
        &self,
        email: &str,
        ip: &str,
        now: i64,
        since: i64,
        max: i64,
    ) -> CoreResult<LoginAttempt> {
        let mut tx = self.begin_write().await?;
        // SQLite's BEGIN IMMEDIATE already serializes writers; PostgreSQL has no row to lock
        // for a pair that has not failed yet, so a transaction lock on the pair stands in.
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))::text")
                .bind(format!("login\n{email}\n{ip}"))
                .execute(&mut *tx)
                .await?;
        }
        // Attempts older than any lockout window are dead weight.
        sqlx::query("DELETE FROM login_failures WHERE failed_at < $1")
            .bind(now - super::LOCKOUT_WINDOW_MS * 2)
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
        sqlx::query(
            "INSERT INTO login_failures (id, email, ip, failed_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(orgd_core::ids::new_id(now))
        .bind(email)
        .bind(ip)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(LoginAttempt::Counted)
    }

    async fn record_login_success(
        &self,
        user_id: &str,
        email: &str,
        ip: &str,
        now: i64,
    ) -> CoreResult<()> {
        let mut tx = self.begin_write().await?;
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

    async fn create_api_key(
        &self,
        key: &NewApiKey,
        audit: &AuditEvent,
        now: i64,
    ) -> CoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, organization_id, user_id, name, key_hash, prefix, created_at, last_used_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL)",
        )
        .bind(&key.id)
        .bind(&key.organization_id)
        .bind(&key.user_id)
        .bind(&key.name)
        .bind(&key.key_hash)
        .bind(&key.prefix)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit::insert(&mut tx, audit, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn api_keys(
        &self,
        user_id: &str,
        organization_id: &str,
    ) -> CoreResult<Vec<ApiKeyRecord>> {
        Ok(sqlx::query_as(
            "SELECT id, name, prefix, created_at, last_used_at FROM api_keys
             WHERE user_id = $1 AND organization_id = $2 AND revoked_at IS NULL
             ORDER BY created_at DESC, id DESC",
        )
        .bind(user_id)
        .bind(organization_id)
        .fetch_all(self.pool())
        .await?)
    }

    async fn revoke_api_key(
        &self,
        user_id: &str,
        organization_id: &str,
        key_id: &str,
        audit: AuditEvent,
        now: i64,
    ) -> CoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let revoked: Option<(String, String)> = sqlx::query_as(
            "UPDATE api_keys SET revoked_at = $1
             WHERE id = $2 AND user_id = $3 AND organization_id = $4 AND revoked_at IS NULL
             RETURNING name, prefix",
        )
        .bind(now)
        .bind(key_id)
        .bind(user_id)
        .bind(organization_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((name, prefix)) = revoked else {
            return Ok(false);
        };
        let audit = audit.with_details(serde_json::json!({"name": name, "prefix": prefix}));
        audit::insert(&mut tx, &audit, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn api_key_identity(
        &self,
        key_hash: &str,
        now: i64,
    ) -> CoreResult<Option<(UserRecord, String)>> {
        let sql = format!(
            "SELECT {USER_COLUMNS}, k.id AS key_id, k.last_used_at AS key_last_used_at
             FROM api_keys k JOIN users u ON u.id = k.user_id AND u.organization_id = k.organization_id
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key_hash)
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let user: UserRecord = sqlx::FromRow::from_row(&row)?;
        let key_id: String = row.try_get("key_id")?;
        let last_used: Option<i64> = row.try_get("key_last_used_at")?;
        if last_used.is_none_or(|t| now - t >= API_KEY_TOUCH_INTERVAL_MS) {
            // Bookkeeping only: a failure here must not refuse an authenticated request.
            if let Err(e) = sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&key_id)
                .execute(self.pool())
                .await
            {
                tracing::warn!(error = %e, "could not record API key use");
            }
        }
        Ok(Some((user, key_id)))
    }
}

impl SqlStore {
    async fn load_identity(
        &self,
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
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| {
            let user: UserRecord = sqlx::FromRow::from_row(&row)?;
            let revoked: i64 = row.try_get("revoked")?;
            Ok((user, revoked != 0))
        })
        .transpose()
        .map_err(|e: sqlx::Error| e.into())
    }
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

#[cfg(test)]
mod tests {
    use super::first_free_slug;

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
}

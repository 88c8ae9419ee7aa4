//! `Idempotency-Key`: a retried request that creates something gets the first answer back
//! instead of creating it again (a 503 can follow a commit the client never saw). A key is
//! scoped to an organization and a route and kept 24 h; the first request claims it in a
//! transaction of its own, and its answer is stored in the transaction that creates the thing
//! (`Replay::store`), so the creation and its replayable answer commit together. Answers are
//! sealed with the vault: some of them (API keys, invitation links) are shown only once.

use sqlx::Row;

use crate::crypto::{Binding, Vault};
use crate::db::{Db, Tx};
use crate::error::{CoreError, CoreResult};

/// An `Idempotency-Key` scoped to an organization and a route.
#[derive(Debug, Clone)]
pub struct IdempotencyScope {
    pub organization_id: String,
    pub route: &'static str,
    pub key: String,
    pub request_hash: String,
}

impl IdempotencyScope {
    fn binding(&self) -> Binding {
        Binding::new(
            &self.organization_id,
            format!("idempotency:{}:{}", self.route, self.key),
        )
    }
}

/// A finished request's answer: what a repeat gets back.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    /// The JSON body as sent.
    pub body: String,
}

/// What claiming an idempotency key found.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// This request owns the key and must store its answer or release the key.
    Acquired,
    /// The first request finished with this answer.
    Replay(Answer),
    /// The key was used with a different request body.
    Mismatch,
    /// The first request is still running.
    InProgress,
}

/// How a creating function stores the answer to its request, in its own transaction, once it
/// knows what it created (`T`).
pub struct Replay<'a, T: ?Sized> {
    pub scope: &'a IdempotencyScope,
    pub vault: &'a Vault,
    pub answer: &'a (dyn Fn(&T) -> Answer + Send + Sync),
}

impl<T: ?Sized> Replay<'_, T> {
    /// Stores the answer for `created` in the transaction that creates it.
    pub async fn store(&self, tx: &mut Tx, created: &T) -> CoreResult<()> {
        let answer = (self.answer)(created);
        let sealed = self.vault.seal(&answer.body, &self.scope.binding());
        sqlx::query(
            "UPDATE idempotency_keys SET status = $1, response = $2
             WHERE organization_id = $3 AND route = $4 AND idempotency_key = $5",
        )
        .bind(i64::from(answer.status))
        .bind(sealed)
        .bind(&self.scope.organization_id)
        .bind(self.scope.route)
        .bind(&self.scope.key)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// Stores the answer when the request had a key.
pub async fn store<T: ?Sized>(
    tx: &mut Tx,
    replay: Option<&Replay<'_, T>>,
    created: &T,
) -> CoreResult<()> {
    match replay {
        Some(replay) => replay.store(tx, created).await,
        None => Ok(()),
    }
}

pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;
/// A claim older than this whose request never finished (the process died) is abandoned.
pub const IDEMPOTENCY_ABANDONED_MS: i64 = 10 * 60 * 1000;

pub async fn claim(
    db: &Db,
    vault: &Vault,
    scope: &IdempotencyScope,
    now: i64,
) -> CoreResult<Claim> {
    let mut tx = db.begin_write().await?;
    // Expired keys, and claims whose request died with its process, are free again.
    sqlx::query(
        "DELETE FROM idempotency_keys
         WHERE organization_id = $1 AND route = $2 AND idempotency_key = $3
           AND (expires_at <= $4 OR (status IS NULL AND created_at <= $5))",
    )
    .bind(&scope.organization_id)
    .bind(scope.route)
    .bind(&scope.key)
    .bind(now)
    .bind(now - IDEMPOTENCY_ABANDONED_MS)
    .execute(&mut *tx)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (organization_id, route, idempotency_key, request_hash, status, response, created_at, expires_at)
         VALUES ($1, $2, $3, $4, NULL, NULL, $5, $6)
         ON CONFLICT (organization_id, route, idempotency_key) DO NOTHING",
    )
    .bind(&scope.organization_id)
    .bind(scope.route)
    .bind(&scope.key)
    .bind(&scope.request_hash)
    .bind(now)
    .bind(now + IDEMPOTENCY_TTL_MS)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let claim = if inserted == 1 {
        Claim::Acquired
    } else {
        let row = sqlx::query(
            "SELECT request_hash, status, response FROM idempotency_keys
             WHERE organization_id = $1 AND route = $2 AND idempotency_key = $3",
        )
        .bind(&scope.organization_id)
        .bind(scope.route)
        .bind(&scope.key)
        .fetch_one(&mut *tx)
        .await?;
        let hash: String = row.try_get("request_hash")?;
        let status: Option<i64> = row.try_get("status")?;
        let response: Option<String> = row.try_get("response")?;
        match (hash == scope.request_hash, status, response) {
            (false, _, _) => Claim::Mismatch,
            (true, Some(status), Some(stored)) => Claim::Replay(Answer {
                status: u16::try_from(status)
                    .map_err(|_| CoreError::Corrupt("idempotent status".into()))?,
                body: open_answer(vault, scope, stored)?,
            }),
            (true, _, _) => Claim::InProgress,
        }
    };
    tx.commit().await?;
    Ok(claim)
}

/// A stored answer in the clear. Answers written before they were sealed (plain JSON) are
/// still replayed until they expire.
fn open_answer(vault: &Vault, scope: &IdempotencyScope, stored: String) -> CoreResult<String> {
    if stored.starts_with('{') {
        return Ok(stored);
    }
    vault
        .open(&stored, &scope.binding())
        .map(|body| body.0)
        .map_err(|e| CoreError::Corrupt(format!("idempotent response: {e}")))
}

/// Frees a claimed key whose request ended without a result worth replaying. A key whose
/// answer was stored is left alone, so this is safe to call whatever happened.
pub async fn release(db: &Db, scope: &IdempotencyScope) -> CoreResult<()> {
    sqlx::query(
        "DELETE FROM idempotency_keys
         WHERE organization_id = $1 AND route = $2 AND idempotency_key = $3 AND status IS NULL",
    )
    .bind(&scope.organization_id)
    .bind(scope.route)
    .bind(&scope.key)
    .execute(db.pool())
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{NOW, databases, organization};

    fn vault() -> Vault {
        Vault::new(&[7; 32], &[])
    }

    fn scope(org: &str, key: &str, hash: &str) -> IdempotencyScope {
        IdempotencyScope {
            organization_id: org.to_string(),
            route: "POST /api/things",
            key: key.to_string(),
            request_hash: hash.to_string(),
        }
    }

    fn created(name: &String) -> Answer {
        Answer {
            status: 201,
            body: format!(r#"{{"name":"{name}"}}"#),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_is_claimed_once_then_replays_the_stored_answer_sealed() {
        for test in databases().await {
            let (db, vault) = (&test.db, vault());
            let org = organization(db, "free", "{}").await;
            let first = scope(&org, "k", "h1");
            assert_eq!(
                claim(db, &vault, &first, NOW).await.expect("claim"),
                Claim::Acquired
            );
            assert_eq!(
                claim(db, &vault, &first, NOW).await.expect("claim"),
                Claim::InProgress
            );
            assert_eq!(
                claim(db, &vault, &scope(&org, "k", "h2"), NOW)
                    .await
                    .expect("claim"),
                Claim::Mismatch
            );
            let replay = Replay {
                scope: &first,
                vault: &vault,
                answer: &created,
            };
            let mut tx = db.begin_write().await.expect("tx");
            store(&mut tx, Some(&replay), &"secret-key-1".to_string())
                .await
                .expect("store");
            tx.commit().await.expect("commit");
            let stored: String = sqlx::query_scalar(
                "SELECT response FROM idempotency_keys WHERE organization_id = $1",
            )
            .bind(&org)
            .fetch_one(db.pool())
            .await
            .expect("row");
            assert!(
                !stored.contains("secret-key-1"),
                "the answer is sealed: {stored}"
            );
            assert_eq!(
                claim(db, &vault, &first, NOW + 1).await.expect("claim"),
                Claim::Replay(created(&"secret-key-1".to_string()))
            );
            // Releasing a completed key changes nothing; after 24 h the key is free again.
            release(db, &first).await.expect("release");
            assert!(matches!(
                claim(db, &vault, &first, NOW + 2).await,
                Ok(Claim::Replay(_))
            ));
            assert_eq!(
                claim(db, &vault, &first, NOW + IDEMPOTENCY_TTL_MS)
                    .await
                    .expect("claim"),
                Claim::Acquired
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn released_and_abandoned_claims_are_free_again_and_keys_are_per_organization() {
        for test in databases().await {
            let (db, vault) = (&test.db, vault());
            let org = organization(db, "free", "{}").await;
            let other = organization(db, "free", "{}").await;
            let key = scope(&org, "k", "h");
            assert_eq!(
                claim(db, &vault, &key, NOW).await.expect("claim"),
                Claim::Acquired
            );
            assert_eq!(
                claim(db, &vault, &scope(&other, "k", "h"), NOW)
                    .await
                    .expect("claim"),
                Claim::Acquired
            );
            release(db, &key).await.expect("release");
            assert_eq!(
                claim(db, &vault, &key, NOW).await.expect("claim"),
                Claim::Acquired
            );
            assert_eq!(
                claim(db, &vault, &key, NOW + IDEMPOTENCY_ABANDONED_MS)
                    .await
                    .expect("claim"),
                Claim::Acquired,
                "a claim whose request died is abandoned"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn of_many_parallel_claims_exactly_one_acquires() {
        for test in databases().await {
            let db = test.db.clone();
            let org = organization(&db, "free", "{}").await;
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let (db, key) = (db.clone(), scope(&org, "race", "h"));
                    tokio::spawn(async move { claim(&db, &vault(), &key, NOW).await })
                })
                .collect();
            let mut acquired = 0;
            for task in tasks {
                match task.await.expect("join").expect("claim") {
                    Claim::Acquired => acquired += 1,
                    other => assert_eq!(other, Claim::InProgress),
                }
            }
            assert_eq!(acquired, 1);
        }
    }
}

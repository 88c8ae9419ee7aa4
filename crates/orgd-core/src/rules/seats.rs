//! The seat limit: active members plus pending invitations never exceed the organization's
//! effective `maxUsers`. An invitation reserves its seat when it is created, so accepting it
//! only converts that seat.

use crate::db::Tx;
use crate::error::{CoreError, CoreResult};
use crate::organizations;
use crate::rules::expiry::pending_at;

/// Seats taken (active members + pending unexpired invitations) and the effective limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatUsage {
    pub used: i64,
    pub limit: Option<i64>,
}

impl SeatUsage {
    /// True when `more` seats can be taken without exceeding the limit.
    pub fn admits(&self, more: i64) -> bool {
        self.limit.is_none_or(|limit| self.used + more <= limit)
    }
}

/// The organization's seats at `now`, as `tx` sees them (lock the organization first).
pub async fn usage(tx: &mut Tx, organization_id: &str, now: i64) -> CoreResult<SeatUsage> {
    let limits = organizations::limits_in(tx, organization_id)
        .await?
        .ok_or_else(|| CoreError::Corrupt(format!("organization {organization_id} vanished")))?;
    let sql = format!(
        "SELECT (SELECT COUNT(*) FROM users u WHERE u.organization_id = $1 AND u.status = 'active')
              + (SELECT COUNT(*) FROM invitations i WHERE i.organization_id = $1 AND {pending})",
        pending = pending_at("i", "$2"),
    );
    let used: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(organization_id)
        .bind(now)
        .fetch_one(&mut **tx)
        .await?;
    Ok(SeatUsage {
        used,
        limit: limits.max_users,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{NOW, databases, member, organization};

    async fn invite(tx: &mut Tx, org: &str, email: &str, expires_at: i64) {
        sqlx::query(
            "INSERT INTO invitations (id, organization_id, email, role, token_hash, status, invited_by, expires_at, created_at, accepted_at)
             VALUES ($1, $2, $3, 'developer', $4, 'pending', 'x', $5, $6, NULL)",
        )
        .bind(crate::ids::new_id(NOW))
        .bind(org)
        .bind(email)
        .bind(crate::ids::random_hex(32))
        .bind(expires_at)
        .bind(NOW)
        .execute(&mut **tx)
        .await
        .expect("invitation");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_and_pending_invitations_take_seats_until_the_invitation_expires() {
        for test in databases().await {
            let db = &test.db;
            let org = organization(db, "free", "{}").await;
            member(db, &org, "admin").await;
            let mut tx = db.begin_write().await.expect("tx");
            invite(&mut tx, &org, "a@example.com", NOW + 1_000).await;
            invite(&mut tx, &org, "b@example.com", NOW).await;
            let seats = usage(&mut tx, &org, NOW).await.expect("seats");
            // The free plan has 3 seats: 1 member + 2 invitations, one expiring right now.
            assert_eq!(
                seats,
                SeatUsage {
                    used: 3,
                    limit: Some(3)
                }
            );
            assert!(seats.admits(0) && !seats.admits(1));
            let later = usage(&mut tx, &org, NOW + 1).await.expect("seats");
            assert_eq!(
                later.used, 2,
                "expired strictly after its expiry millisecond"
            );
            assert!(later.admits(1));
            tx.rollback().await.expect("rollback");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overrides_decide_the_limit_and_unlimited_admits_anything() {
        for test in databases().await {
            let db = &test.db;
            let limited = organization(db, "enterprise", r#"{"maxUsers":1}"#).await;
            let unlimited = organization(db, "free", r#"{"maxUsers":null}"#).await;
            member(db, &limited, "admin").await;
            member(db, &unlimited, "admin").await;
            let mut tx = db.begin_write().await.expect("tx");
            let seats = usage(&mut tx, &limited, NOW).await.expect("seats");
            assert_eq!(
                seats,
                SeatUsage {
                    used: 1,
                    limit: Some(1)
                }
            );
            assert!(!seats.admits(1));
            let seats = usage(&mut tx, &unlimited, NOW).await.expect("seats");
            assert_eq!(seats.limit, None);
            assert!(seats.admits(1_000));
            tx.rollback().await.expect("rollback");
        }
    }
}

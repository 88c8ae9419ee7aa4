//! Usage thresholds: a usage figure that goes from below a level (`warning` 80 %,
//! `critical` 100 %) to at or above it queues `usage.threshold_crossed`, in the transaction of
//! the change — at most once per organization, resource, level and calendar month. The
//! database decides "once": the crossing is a row under a unique key, and only the
//! transaction whose INSERT wrote it queues the event (also when two instances cross at the
//! same moment). A jump past both levels sends `critical` only; falling back and crossing again
//! in the same month sends nothing (the rows stay); unlimited resources never cross.

use serde_json::{Map, json};

use crate::db::Tx;
use crate::error::CoreResult;
use crate::outbox::{self, NewEvent, USAGE_THRESHOLD_CROSSED};
use crate::plans::Limits;
use crate::rules::seats;
use crate::usage::{Period, Resource, percent_used};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Warning,
    Critical,
}

impl Level {
    const ALL: [Self; 2] = [Self::Warning, Self::Critical];

    fn percent(self) -> i64 {
        match self {
            Self::Warning => 80,
            Self::Critical => 100,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

fn resource_name(resource: Resource) -> &'static str {
    match resource {
        Resource::TestRuns => "testRuns",
        Resource::Users => "users",
        Resource::Storage => "storage",
    }
}

/// A usage figure against its limit (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figure {
    pub used: i64,
    pub limit: Option<i64>,
}

/// The highest level `after` is at or above while `before` was below it.
pub fn crossed(before: Figure, after: Figure) -> Option<Level> {
    let after_pct = percent_used(after.used, after.limit)?;
    let before_pct = percent_used(before.used, before.limit).unwrap_or(0);
    Level::ALL
        .into_iter()
        .rev()
        .find(|level| before_pct < level.percent() && after_pct >= level.percent())
}

/// Records a change of `resource` from `before` to `after` in the caller's transaction; true
/// when it queued the event.
pub async fn record(
    tx: &mut Tx,
    organization_id: &str,
    resource: Resource,
    before: Figure,
    after: Figure,
    now: i64,
) -> CoreResult<bool> {
    let (Some(level), Some(limit)) = (crossed(before, after), after.limit) else {
        return Ok(false);
    };
    let period = Period::containing(now);
    let mut top_is_new = false;
    // The lower levels are marked crossed too (silently), so a later crossing of a lower
    // level in the same month sends nothing.
    for candidate in Level::ALL.into_iter().filter(|l| *l <= level) {
        let inserted = sqlx::query(
            "INSERT INTO usage_thresholds (organization_id, resource, level, period, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(organization_id)
        .bind(resource_name(resource))
        .bind(candidate.as_str())
        .bind(&period.key)
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        top_is_new = candidate == level && inserted == 1;
    }
    if !top_is_new {
        return Ok(false);
    }
    let mut data = Map::new();
    data.insert("resource".into(), json!(resource_name(resource)));
    data.insert("level".into(), json!(level.as_str()));
    data.insert(
        "percentUsed".into(),
        json!(percent_used(after.used, after.limit)),
    );
    data.insert("used".into(), json!(after.used));
    data.insert("limit".into(), json!(limit));
    data.insert("period".into(), json!(period.key));
    let event = NewEvent {
        organization_id,
        kind: USAGE_THRESHOLD_CROSSED,
        data,
        analysis_wait_until: None,
    };
    outbox::enqueue(tx, &event, now).await?;
    Ok(true)
}

/// The limits changed from `before` to `after` (an operator lowered one): each resource's
/// current figure is measured against both, in the caller's transaction (organization locked).
pub async fn record_limit_change(
    tx: &mut Tx,
    organization_id: &str,
    before: &Limits,
    after: &Limits,
    now: i64,
) -> CoreResult<()> {
    let period = Period::containing(now);
    let test_runs: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(test_runs), 0) FROM usage_counters WHERE organization_id = $1 AND period = $2",
    )
    .bind(organization_id)
    .bind(&period.key)
    .fetch_one(&mut **tx)
    .await?;
    let seats = seats::usage(tx, organization_id, now).await?.used;
    let storage: i64 =
        sqlx::query_scalar("SELECT storage_used_bytes FROM organizations WHERE id = $1")
            .bind(organization_id)
            .fetch_one(&mut **tx)
            .await?;
    let figures = [
        (
            Resource::TestRuns,
            test_runs,
            before.max_test_runs,
            after.max_test_runs,
        ),
        (Resource::Users, seats, before.max_users, after.max_users),
        (
            Resource::Storage,
            storage,
            before.max_storage_bytes,
            after.max_storage_bytes,
        ),
    ];
    for (resource, used, limit_before, limit_after) in figures {
        let before = Figure {
            used,
            limit: limit_before,
        };
        let after = Figure {
            used,
            limit: limit_after,
        };
        record(tx, organization_id, resource, before, after, now).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{NOW, databases, organization};

    fn fig(used: i64, limit: i64) -> Figure {
        Figure {
            used,
            limit: Some(limit),
        }
    }

    #[test]
    fn levels_crossed() {
        assert_eq!(crossed(fig(79, 100), fig(80, 100)), Some(Level::Warning));
        assert_eq!(crossed(fig(80, 100), fig(81, 100)), None);
        assert_eq!(crossed(fig(99, 100), fig(100, 100)), Some(Level::Critical));
        assert_eq!(crossed(fig(10, 100), fig(120, 100)), Some(Level::Critical));
        // A limit lowered under the figure.
        assert_eq!(crossed(fig(50, 100), fig(50, 60)), Some(Level::Warning));
        assert_eq!(crossed(fig(50, 100), fig(50, 50)), Some(Level::Critical));
        let unlimited = Figure {
            used: 5,
            limit: None,
        };
        assert_eq!(crossed(fig(1, 1), unlimited), None);
        assert_eq!(crossed(unlimited, fig(5, 5)), Some(Level::Critical));
    }

    async fn events(tx: &mut Tx, org: &str) -> Vec<String> {
        sqlx::query_scalar::<_, String>(
            "SELECT payload FROM outbox WHERE organization_id = $1 ORDER BY id",
        )
        .bind(org)
        .fetch_all(&mut **tx)
        .await
        .expect("outbox")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn once_per_level_and_month_critical_only_on_a_jump() {
        for test in databases().await {
            let db = &test.db;
            let org = organization(db, "free", "{}").await;
            // A webhook that takes every event, so queued events become rows.
            sqlx::query(
                "INSERT INTO webhooks (id, organization_id, url, events, description, enabled, secret, created_at, updated_at)
                 VALUES ('w1', $1, 'https://example.com', '[\"*\"]', NULL, 1, 'x', $2, $2)",
            )
            .bind(&org)
            .bind(NOW)
            .execute(db.pool())
            .await
            .expect("webhook");
            let mut tx = db.begin_write().await.expect("tx");
            let r = Resource::TestRuns;
            assert!(
                record(&mut tx, &org, r, fig(10, 100), fig(100, 100), NOW)
                    .await
                    .expect("rule")
            );
            // Back under and over again: nothing more this month, neither level.
            assert!(
                !record(&mut tx, &org, r, fig(70, 100), fig(85, 100), NOW)
                    .await
                    .expect("rule")
            );
            assert!(
                !record(&mut tx, &org, r, fig(99, 100), fig(100, 100), NOW)
                    .await
                    .expect("rule")
            );
            let queued = events(&mut tx, &org).await;
            assert_eq!(queued.len(), 1);
            let event: serde_json::Value = serde_json::from_str(&queued[0]).expect("json");
            assert_eq!(event["type"], "usage.threshold_crossed");
            assert_eq!(event["data"]["level"], "critical");
            assert_eq!(event["data"]["resource"], "testRuns");
            assert_eq!(event["data"]["organizationId"], org.as_str());
            // Another resource is its own; next month counts again.
            assert!(
                record(
                    &mut tx,
                    &org,
                    Resource::Storage,
                    fig(0, 10),
                    fig(8, 10),
                    NOW
                )
                .await
                .expect("rule")
            );
            let next_month = NOW + 40 * 86_400_000;
            assert!(
                record(&mut tx, &org, r, fig(0, 10), fig(8, 10), next_month)
                    .await
                    .expect("rule")
            );
            assert_eq!(events(&mut tx, &org).await.len(), 3);
            tx.commit().await.expect("commit");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_crossings_queue_one_event() {
        for test in databases().await {
            let db = &test.db;
            let org = organization(db, "free", "{}").await;
            sqlx::query(
                "INSERT INTO webhooks (id, organization_id, url, events, description, enabled, secret, created_at, updated_at)
                 VALUES ('w1', $1, 'https://example.com', '[\"*\"]', NULL, 1, 'x', $2, $2)",
            )
            .bind(&org)
            .bind(NOW)
            .execute(db.pool())
            .await
            .expect("webhook");
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let (db, org) = (db.clone(), org.clone());
                    tokio::spawn(async move {
                        let mut tx = db.begin_write().await.expect("tx");
                        let queued =
                            record(&mut tx, &org, Resource::Users, fig(2, 3), fig(3, 3), NOW)
                                .await
                                .expect("rule");
                        tx.commit().await.expect("commit");
                        queued
                    })
                })
                .collect();
            let mut queued = 0;
            for task in tasks {
                queued += usize::from(task.await.expect("task"));
            }
            assert_eq!(queued, 1);
            let rows: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE organization_id = $1")
                    .bind(&org)
                    .fetch_one(db.pool())
                    .await
                    .expect("count");
            assert_eq!(rows, 1);
        }
    }
}

//! AI failure analyses. The `analyses` table is also the durable queue: a row is queued in
//! the transaction that fails its execution, leased by one conditional UPDATE (so two
//! workers never run it at once), and finished in the transaction that counts it.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::audit::{self, AuditEvent};
use crate::db::{Db, Tx};
use crate::error::CoreResult;
use crate::secrets::SecretTable;
use crate::text::{redact, utf8_head, utf8_tail};
use crate::usage::Period;

/// A leased row is retried after its lease expired only while it ran fewer times than this.
pub const MAX_RUNS: i64 = 2;

/// How an analysis ended.
#[derive(Debug, Clone)]
pub struct Finished {
    pub completed: bool,
    pub model: String,
    pub provider: &'static str,
    pub key_source: Option<&'static str>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub root_cause: Option<String>,
    pub suggested_fix: Option<String>,
    pub reason: Option<String>,
    /// The provider received the request: it counts in `aiAnalyses.used`.
    pub reached_provider: bool,
}

/// A queued row this runner now owns.
#[derive(Debug, Clone)]
pub struct Lease {
    pub execution_id: String,
    pub organization_id: String,
}

/// A sealed value of an organization, with the table and provider it is bound to.
pub struct SealedSecret {
    pub table: SecretTable,
    pub provider: String,
    pub sealed: String,
}

/// Queues an analysis of the execution inside the caller's transaction, when its
/// organization has analysis switched on; whether it queued one.
pub async fn queue(tx: &mut Tx, org_id: &str, task_id: &str, now: i64) -> CoreResult<bool> {
    let queued = sqlx::query(
        "INSERT INTO analyses (execution_id, organization_id, status, attempts, created_at, updated_at)
         SELECT e.id, e.organization_id, 'queued', 0, $3, $3
         FROM executions e JOIN organizations o ON o.id = e.organization_id
         WHERE e.organization_id = $1 AND e.task_id = $2 AND o.ai_analysis_enabled = 1
         ON CONFLICT (execution_id) DO NOTHING",
    )
    .bind(org_id)
    .bind(task_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(queued.rows_affected() == 1)
}

const ANALYSIS_COLUMNS: &str = "execution_id, status, model, provider, key_source, input_tokens,
    output_tokens, root_cause, suggested_fix, reason, updated_at";

/// An execution's AI failure analysis as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalysisRecord {
    /// `queued`, `running`, `completed` or `failed`.
    pub status: String,
    pub root_cause: Option<String>,
    pub suggested_fix: Option<String>,
    pub model: Option<String>,
    /// `openai`, `anthropic` or `gemini`.
    pub provider: Option<String>,
    /// `byok` (the organization's key) or `platform`.
    pub key_source: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// When the current result was stored.
    pub updated_at: i64,
    /// Why a failed analysis failed.
    pub reason: Option<String>,
}

fn record_from_row(row: &AnyRow) -> CoreResult<AnalysisRecord> {
    Ok(AnalysisRecord {
        status: row.try_get("status")?,
        root_cause: row.try_get("root_cause")?,
        suggested_fix: row.try_get("suggested_fix")?,
        model: row.try_get("model")?,
        provider: row.try_get("provider")?,
        key_source: row.try_get("key_source")?,
        input_tokens: row.try_get::<Option<i64>, _>("input_tokens")?.unwrap_or(0),
        output_tokens: row.try_get::<Option<i64>, _>("output_tokens")?.unwrap_or(0),
        updated_at: row.try_get("updated_at")?,
        reason: row.try_get("reason")?,
    })
}

/// The analyses of the executions `ids` (one query), by execution id.
pub async fn of_executions(
    db: &Db,
    org_id: &str,
    ids: &[&str],
) -> CoreResult<HashMap<String, AnalysisRecord>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let placeholders: Vec<String> = (2..ids.len() + 2).map(|n| format!("${n}")).collect();
    let sql = format!(
        "SELECT {ANALYSIS_COLUMNS} FROM analyses WHERE organization_id = $1 AND execution_id IN ({})",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(org_id);
    for id in ids {
        query = query.bind(*id);
    }
    let mut found = HashMap::with_capacity(ids.len());
    for row in query.fetch_all(db.pool()).await? {
        found.insert(row.try_get("execution_id")?, record_from_row(&row)?);
    }
    Ok(found)
}

/// The analysis of one execution as `tx` sees it.
pub async fn of_execution_in(
    tx: &mut Tx,
    execution_id: &str,
) -> CoreResult<Option<AnalysisRecord>> {
    let sql = format!("SELECT {ANALYSIS_COLUMNS} FROM analyses WHERE execution_id = $1");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(execution_id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(record_from_row).transpose()
}

/// Marks the execution's analysis as running for an on-demand request (creating or
/// replacing the row), leased until `lease_until`; false while another runner holds a
/// live lease on it.
pub async fn start(
    db: &Db,
    org_id: &str,
    execution_id: &str,
    now: i64,
    lease_until: i64,
) -> CoreResult<bool> {
    // One statement decides: a row another runner holds a live lease on stays its own.
    let started = sqlx::query(
        "INSERT INTO analyses (execution_id, organization_id, status, attempts, lease_until, created_at, updated_at)
         VALUES ($1, $2, 'running', 1, $3, $4, $4)
         ON CONFLICT (execution_id) DO UPDATE SET status = 'running', attempts = 1,
            lease_until = $3, updated_at = $4
         WHERE analyses.status <> 'running' OR analyses.lease_until IS NULL
            OR analyses.lease_until <= $4",
    )
    .bind(execution_id)
    .bind(org_id)
    .bind(lease_until)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(started.rows_affected() == 1)
}

/// Takes the oldest runnable row: queued, or running with an expired lease and runs
/// left, of an organization whose switch is on.
pub async fn lease(db: &Db, now: i64, lease_until: i64) -> CoreResult<Option<Lease>> {
    // The outer condition repeats the inner one: when two runners pick the same row,
    // the second UPDATE finds it leased already and changes nothing.
    let sql = format!(
        "UPDATE analyses SET status = 'running', attempts = attempts + 1, lease_until = $2, updated_at = $1
         WHERE execution_id = (
             SELECT a.execution_id FROM analyses a JOIN organizations o ON o.id = a.organization_id
             WHERE o.ai_analysis_enabled = 1
               AND (a.status = 'queued' OR (a.status = 'running' AND a.lease_until < $1 AND a.attempts < {MAX_RUNS}))
             ORDER BY a.updated_at, a.execution_id LIMIT 1)
           AND (status = 'queued' OR (status = 'running' AND lease_until < $1 AND attempts < {MAX_RUNS}))
         RETURNING execution_id, organization_id"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(now)
        .bind(lease_until)
        .fetch_optional(db.pool())
        .await?;
    row.map(|row| {
        Ok(Lease {
            execution_id: row.try_get("execution_id")?,
            organization_id: row.try_get("organization_id")?,
        })
    })
    .transpose()
}

/// Fails rows whose last allowed run died (lease expired); how many.
pub async fn fail_abandoned(db: &Db, now: i64) -> CoreResult<u64> {
    let sql = format!(
        "UPDATE analyses SET status = 'failed', lease_until = NULL, updated_at = $1,
            reason = 'The analysis was interrupted twice and was given up'
         WHERE status = 'running' AND lease_until < $1 AND attempts >= {MAX_RUNS}"
    );
    let failed = sqlx::query(AssertSqlSafe(sql))
        .bind(now)
        .execute(db.pool())
        .await?;
    Ok(failed.rows_affected())
}

/// Stores the result, counts it when it reached the provider, and writes the audit
/// entry, in one transaction; the analysis object as the API shows it.
/// `view` is the analysis as the API shows it, frozen into `analysis.completed`.
pub async fn finish(
    db: &Db,
    org_id: &str,
    execution_id: &str,
    finished: &Finished,
    audit: &AuditEvent,
    now: i64,
    view: fn(&AnalysisRecord) -> serde_json::Value,
) -> CoreResult<AnalysisRecord> {
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "UPDATE analyses SET status = $3, lease_until = NULL, model = $4, provider = $5, key_source = $6,
            input_tokens = $7, output_tokens = $8, root_cause = $9, suggested_fix = $10, reason = $11,
            updated_at = $12
         WHERE organization_id = $1 AND execution_id = $2",
    )
    .bind(org_id)
    .bind(execution_id)
    .bind(if finished.completed { "completed" } else { "failed" })
    .bind(&finished.model)
    .bind(finished.provider)
    .bind(finished.key_source)
    .bind(finished.input_tokens)
    .bind(finished.output_tokens)
    .bind(finished.root_cause.as_deref())
    .bind(finished.suggested_fix.as_deref())
    .bind(finished.reason.as_deref())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if finished.reached_provider {
        sqlx::query(
            "INSERT INTO usage_counters (organization_id, period, test_runs, ai_analyses) VALUES ($1, $2, 0, 1)
             ON CONFLICT (organization_id, period) DO UPDATE SET ai_analyses = usage_counters.ai_analyses + 1",
        )
        .bind(org_id)
        .bind(&Period::containing(now).key)
        .execute(&mut *tx)
        .await?;
    }
    audit::insert(&mut tx, audit, now).await?;
    // A notification waiting for this analysis is due now.
    crate::outbox::analysis_stored(&mut tx, execution_id, now).await?;
    let sql = format!("SELECT {ANALYSIS_COLUMNS} FROM analyses WHERE execution_id = $1");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(execution_id)
        .fetch_one(&mut *tx)
        .await?;
    let record = record_from_row(&row)?;
    let task_id: String = sqlx::query_scalar("SELECT task_id FROM executions WHERE id = $1")
        .bind(execution_id)
        .fetch_one(&mut *tx)
        .await?;
    let mut data = serde_json::Map::new();
    data.insert("taskId".into(), task_id.into());
    data.insert("analysis".into(), view(&record));
    let event = crate::outbox::NewEvent {
        organization_id: org_id,
        kind: crate::outbox::ANALYSIS_COMPLETED,
        data,
        analysis_wait_until: None,
    };
    crate::outbox::enqueue(&mut tx, &event, now).await?;
    tx.commit().await?;
    Ok(record)
}

/// Drops the analysis of an execution deleted before it could run.
pub async fn drop(db: &Db, org_id: &str, execution_id: &str) -> CoreResult<()> {
    sqlx::query("DELETE FROM analyses WHERE organization_id = $1 AND execution_id = $2")
        .bind(org_id)
        .bind(execution_id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// The taskId of a live execution.
pub async fn execution_task_id(
    db: &Db,
    org_id: &str,
    execution_id: &str,
) -> CoreResult<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT task_id FROM executions WHERE organization_id = $1 AND id = $2 AND deleted_at IS NULL",
    )
    .bind(org_id)
    .bind(execution_id)
    .fetch_optional(db.pool())
    .await?)
}

/// Every sealed secret of the organization (integrations and BYOK keys).
pub async fn organization_secrets(db: &Db, org_id: &str) -> CoreResult<Vec<SealedSecret>> {
    let rows = sqlx::query(
        "SELECT 'integration' AS kind, provider, secret FROM integrations WHERE organization_id = $1
         UNION ALL
         SELECT 'byok' AS kind, provider, secret FROM ai_provider_keys WHERE organization_id = $1",
    )
    .bind(org_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let kind: String = row.try_get("kind")?;
            Ok(SealedSecret {
                table: if kind == "byok" {
                    SecretTable::AiProviderKeys
                } else {
                    SecretTable::Integrations
                },
                provider: row.try_get("provider")?,
                sealed: row.try_get("secret")?,
            })
        })
        .collect()
}

/// The completed analysis of an execution: `(rootCause, suggestedFix)`.
pub async fn completed(
    db: &Db,
    org_id: &str,
    execution_id: &str,
) -> CoreResult<Option<(String, String)>> {
    let row = sqlx::query(
        "SELECT root_cause, suggested_fix FROM analyses
         WHERE organization_id = $1 AND execution_id = $2 AND status = 'completed'",
    )
    .bind(org_id)
    .bind(execution_id)
    .fetch_optional(db.pool())
    .await?;
    row.map(|row| Ok((row.try_get("root_cause")?, row.try_get("suggested_fix")?)))
        .transpose()
}

/// The error (its start) and the log (its end), together at most `budget` bytes of text.
pub fn log_text(
    error: Option<&str>,
    output: Option<&str>,
    secrets: &[String],
    budget: usize,
) -> String {
    let error = redact(error.unwrap_or_default(), secrets);
    let output = redact(output.unwrap_or_default(), secrets);
    let error = utf8_head(&error, budget);
    let output = utf8_tail(&output, budget - error.len());
    format!("Error:\n{error}\n\nLog (last part):\n{output}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_before_the_cut() {
        let secrets = vec!["sk-secret-123".to_string(), "ab".to_string()];
        let text = log_text(Some("boom ab"), Some("x sk-secret-123 y"), &secrets, 1000);
        assert!(!text.contains("sk-secret-123") && text.contains("boom ab"));
        assert!(text.contains("x [REDACTED] y"));
        let cut = log_text(None, Some("aaaa sk-secret-123"), &secrets, 6);
        assert!(cut.ends_with("ACTED]"), "{cut}");
        let both = log_text(Some("éééé"), Some("zzzz"), &[], 5);
        assert!(both.contains("éé\n") && both.ends_with("\nz"), "{both}");
    }
}

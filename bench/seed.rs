//! Seeds a benchmark organization directly through the store (not HTTP) and prints a token for
//! its admin. With `--executions N --report-files M` it also bulk-inserts that many executions
//! (finished PASSED runs of this month, spread over `--groups G` groups, default 1000) and
//! report-file records, and sets the counters the service keeps with them (usage, KPIs,
//! groups) to match, as the big data sets of the usage and compat benchmarks. Not part of the
//! product.
//!
//! Usage: `seed <database-url> <jwt-secret> <org-name> [--executions N] [--report-files M] [--groups G]`
//! Prints `<org-id> <token>`.

use anyhow::Context;
use orgd::auth::jwt::JwtKeys;
use orgd_core::clock::{Clock, SystemClock};
use orgd_core::db::{Backend, Db, DbTimeouts};
use orgd_core::ids::slugify;
use orgd_core::plans::Plan;
use orgd_core::users::{self, NewOrganization, NewUser};

fn flag(args: &[String], name: &str) -> i64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, secret, name, ..] = args.as_slice() else {
        anyhow::bail!(
            "usage: seed <database-url> <jwt-secret> <org-name> [--executions N] [--report-files M]"
        );
    };
    let store = Db::connect(url, DbTimeouts::command()).await?;
    store.migrate().await?;
    let now = SystemClock.now_ms();
    let org_id = orgd_core::ids::new_id(now);
    let user_id = orgd_core::ids::new_id(now);
    let hash = orgd_core::passwords::PasswordHasherPool::default()
        .hash("Bench!pass1".into())
        .await?;
    users::create_organization_with_admin(
        &store,
        NewOrganization {
            id: org_id.clone(),
            name: name.clone(),
            base_slug: slugify(name),
            plan: Plan::Enterprise,
        },
        NewUser {
            id: user_id.clone(),
            email: format!("bench-{user_id}@example.com"),
            name: "Bench Admin".into(),
            password_hash: hash,
        },
        now,
    )
    .await
    .context("create organization")?;
    let executions = flag(&args, "--executions");
    let files = flag(&args, "--report-files");
    let groups = match flag(&args, "--groups") {
        0 => 1000,
        n => n,
    };
    if executions > 0 || files > 0 {
        bulk_insert(&store, &org_id, executions, files, groups, now).await?;
    }
    let (token, _) = JwtKeys::new(secret.as_bytes(), 7 * 86400).issue(&user_id, now)?;
    println!("{org_id} {token}");
    Ok(())
}

/// Inserts rows with one statement per table, generated inside the database.
async fn bulk_insert(
    store: &Db,
    org: &str,
    executions: i64,
    files: i64,
    groups: i64,
    now: i64,
) -> anyhow::Result<()> {
    let series = match store.backend() {
        Backend::Postgres => "SELECT generate_series(1, $2) AS n",
        Backend::Sqlite => {
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < $2) SELECT n FROM s"
        }
    };
    let pad = match store.backend() {
        Backend::Postgres => "lpad(to_hex(n), 12, '0')",
        Backend::Sqlite => "printf('%012x', n)",
    };
    // Run n was created n ms before now (all within the last ~17 minutes for a million),
    // started then, and passed 1 to 1.5 s later; it belongs to group n mod `groups`.
    let sql = format!(
        "INSERT INTO executions (id, organization_id, task_id, status, group_name, source, report_bytes,
                                 created_at, started_at, finished_at)
         SELECT $3 || {pad}, $1, 'bench-' || n, 'PASSED', 'group-' || (n % $5), 'external-ci', 0,
                $4 - n, $4 - n, $4 - n + 1000 + (n % 500)
         FROM ({series}) AS series"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(org)
        .bind(executions)
        .bind(&org[..12])
        .bind(now)
        .bind(groups)
        .execute(store.pool())
        .await
        .context("insert executions")?;
    let sql = format!(
        "INSERT INTO report_files (organization_id, task_id, path, size, updated_at)
         SELECT $1, 'bench-' || n, 'report.html', 1024, $3 FROM ({series}) AS series"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(org)
        .bind(files)
        .bind(now)
        .execute(store.pool())
        .await
        .context("insert report files")?;
    // The counters the service keeps with the data, as if it had been inserted through it.
    sqlx::query(
        "INSERT INTO usage_counters (organization_id, period, test_runs, ai_analyses) VALUES ($1, $2, $3, 0)",
    )
    .bind(org)
    .bind(orgd_core::usage::Period::containing(now).key)
    .bind(executions)
    .execute(store.pool())
    .await
    .context("insert usage counter")?;
    // The run counters (rules::run_stats) as the service would have kept them.
    sqlx::query(
        "INSERT INTO run_stats (organization_id, period, total_runs, finished_runs, passed_runs, duration_sum_ms, duration_count)
         SELECT organization_id, $2, COUNT(*), COUNT(*), COUNT(*),
                CAST(SUM(finished_at - started_at) AS BIGINT), COUNT(*)
         FROM executions WHERE organization_id = $1 GROUP BY organization_id",
    )
    .bind(org)
    .bind(orgd_core::usage::Period::containing(now).key)
    .execute(store.pool())
    .await
    .context("insert run counters")?;
    sqlx::query(
        "INSERT INTO run_groups (organization_id, group_key, total_runs, passed_runs, last_run_at)
         SELECT organization_id, group_name, COUNT(*), COUNT(*), MAX(started_at)
         FROM executions WHERE organization_id = $1 GROUP BY organization_id, group_name",
    )
    .bind(org)
    .execute(store.pool())
    .await
    .context("insert group counters")?;
    sqlx::query(
        "INSERT INTO execution_counts (organization_id, status, live) VALUES ($1, 'PASSED', $2)",
    )
    .bind(org)
    .bind(executions)
    .execute(store.pool())
    .await
    .context("insert run counter")?;
    // What autovacuum does after a load this size: without statistics PostgreSQL's planner
    // still believes the tables empty and may pick any index (a real history grows gradually,
    // and autovacuum keeps up with it).
    if store.backend() == Backend::Postgres {
        sqlx::query("ANALYZE")
            .execute(store.pool())
            .await
            .context("analyze")?;
    }
    sqlx::query("UPDATE organizations SET storage_used_bytes = $2 WHERE id = $1")
        .bind(org)
        .bind(files * 1024)
        .execute(store.pool())
        .await
        .context("set storage counter")?;
    Ok(())
}

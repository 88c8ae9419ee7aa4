//! Seeds a benchmark organization directly through the store (not HTTP) and prints a token for
//! its admin. With `--executions N --report-files M` it also bulk-inserts that many executions
//! and report-file records and sets the usage counters to match, as the big data set of the
//! usage benchmark. Not part of the product.
//!
//! Usage: `seed <database-url> <jwt-secret> <org-name> [--executions N] [--report-files M]`
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
    if executions > 0 || files > 0 {
        bulk_insert(&store, &org_id, executions, files, now).await?;
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
    let sql = format!(
        "INSERT INTO executions (id, organization_id, task_id, status, report_bytes, created_at)
         SELECT $3 || {pad}, $1, 'bench-' || n, 'PASSED', 0, $4 FROM ({series}) AS series"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(org)
        .bind(executions)
        .bind(&org[..12])
        .bind(now)
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

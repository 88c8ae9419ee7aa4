//! Databases for the core's own tests: a fresh SQLite file always, and a fresh PostgreSQL
//! schema when `TEST_DATABASE_URL` is set (it must then be reachable: a test fails, never
//! skips). Each comes migrated, with helpers to put an organization and members in it.

use sqlx::AnyPool;

use crate::db::{Db, DbTimeouts};
use crate::ids::new_id;

/// A migrated database that is removed when dropped.
pub struct TestDb {
    pub db: Db,
    _dir: tempfile::TempDir,
    schema: Option<(String, String)>,
}

/// Now, for tests that do not care which instant it is.
pub const NOW: i64 = 1_780_000_000_000;

/// One database per backend this run was given.
pub async fn databases() -> Vec<TestDb> {
    let mut dbs = vec![sqlite().await];
    if let Some(url) = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        dbs.push(postgres(&url).await);
    }
    dbs
}

async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("core.db").display());
    TestDb {
        db: migrated(&url).await,
        _dir: dir,
        schema: None,
    }
}

async fn postgres(base: &str) -> TestDb {
    sqlx::any::install_default_drivers();
    let schema = format!("core_{}", crate::ids::random_hex(6));
    let admin = AnyPool::connect(base)
        .await
        .expect("TEST_DATABASE_URL must be reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .expect("create schema");
    admin.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    TestDb {
        db: migrated(&url).await,
        _dir: tempfile::tempdir().expect("temp dir"),
        schema: Some((base.to_string(), schema)),
    }
}

async fn migrated(url: &str) -> Db {
    let db = Db::connect(url, DbTimeouts::command())
        .await
        .expect("connect");
    db.migrate().await.expect("migrate");
    db
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((base, schema)) = self.schema.take() else {
            return;
        };
        // Drop runs inside the test's runtime; a thread of its own gets another one.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(pool) = AnyPool::connect(&base).await {
                    let _ =
                        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                            .execute(&pool)
                            .await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

/// A new organization on `plan` with `overrides` (JSON), returning its id.
pub async fn organization(db: &Db, plan: &str, overrides: &str) -> String {
    let id = new_id(NOW);
    sqlx::query(
        "INSERT INTO organizations (id, name, slug, plan, limit_overrides, ai_analysis_enabled, storage_used_bytes, created_at, updated_at)
         VALUES ($1, 'Test Org', $2, $3, $4, 1, 0, $5, $5)",
    )
    .bind(&id)
    .bind(format!("org-{id}"))
    .bind(plan)
    .bind(overrides)
    .bind(NOW)
    .execute(db.pool())
    .await
    .expect("insert organization");
    id
}

/// A new active member of `organization_id` with `role`, returning their id.
pub async fn member(db: &Db, organization_id: &str, role: &str) -> String {
    let id = new_id(NOW);
    sqlx::query(
        "INSERT INTO users (id, organization_id, email, name, password_hash, role, status, last_login_at, created_at, updated_at)
         VALUES ($1, $2, $3, 'Member', 'x', $4, 'active', NULL, $5, $5)",
    )
    .bind(&id)
    .bind(organization_id)
    .bind(format!("{id}@example.com"))
    .bind(role)
    .bind(NOW)
    .execute(db.pool())
    .await
    .expect("insert member");
    id
}

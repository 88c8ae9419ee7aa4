//! The test harness: a real orgd on 127.0.0.1:0 per test, on a fresh SQLite file or a fresh
//! PostgreSQL schema, with a manual clock, a raw pool to inspect or poke the store, and typed
//! helpers for the requests every test needs.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use orgd::config::ReportsLocation;
use orgd::{AppState, Config};
use orgd_core::clock::{Clock, ManualClock};
use orgd_core::db::notify::Change;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use sqlx::AnyPool;
use tokio::sync::oneshot;

/// Runs each named `async fn name(backend: Backend)` on SQLite, and on PostgreSQL when
/// `TEST_DATABASE_URL` is set (it then must be reachable: the test fails, never skips).
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(backend) = $crate::helpers::Backend::postgres() {
                        super::$name(backend).await
                    }
                }
            }
        )*
    };
}

/// Runs each named `async fn name(backend: Backend, storage: Storage)` on SQLite and
/// PostgreSQL (as `backend_tests!`) with reports in a directory, on SQLite with reports in
/// `object_store`'s in-memory store, and on SQLite with reports in the S3 server named by
/// `TEST_S3_URL` when it is set (it then must be reachable).
#[macro_export]
macro_rules! storage_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use $crate::helpers::{Backend, Storage};
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(Backend::Sqlite, Storage::Directory).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(backend) = Backend::postgres() {
                        super::$name(backend, Storage::Directory).await
                    }
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    super::$name(Backend::Sqlite, Storage::Memory).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn s3() {
                    if let Some(storage) = Storage::s3() {
                        super::$name(Backend::Sqlite, storage).await
                    }
                }
            }
        )*
    };
}

/// Where a test's report files live.
#[derive(Clone, Debug)]
pub enum Storage {
    Directory,
    Memory,
    /// The S3 server at this endpoint (`TEST_S3_URL`).
    S3(String),
}

/// The bucket S3 tests share; each test writes below a prefix of its own.
const TEST_BUCKET: &str = "orgd-test";

impl Storage {
    pub fn s3() -> Option<Self> {
        std::env::var("TEST_S3_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .map(Self::S3)
    }

    /// The configured location of this storage, for one test.
    pub async fn location(&self, data_dir: &std::path::Path) -> ReportsLocation {
        use orgd_providers::reports::object_store;
        match self {
            Self::Directory => ReportsLocation::Directory(data_dir.join("reports")),
            Self::Memory => ReportsLocation::Store {
                store: Arc::new(object_store::memory::InMemory::new()),
                prefix: unique("reports-"),
            },
            Self::S3(endpoint) => {
                // moto creates a bucket on an unsigned PUT (and keeps an existing one).
                reqwest::Client::new()
                    .put(format!("{endpoint}/{TEST_BUCKET}"))
                    .send()
                    .await
                    .expect("TEST_S3_URL must be reachable");
                let env = |name: &str, default: &str| {
                    std::env::var(name).unwrap_or_else(|_| default.to_string())
                };
                // Explicit settings, not the process environment: parallel tests share it.
                let store = object_store::aws::AmazonS3Builder::new()
                    .with_endpoint(endpoint)
                    .with_allow_http(true)
                    .with_bucket_name(TEST_BUCKET)
                    .with_region(env("AWS_REGION", "us-east-1"))
                    .with_access_key_id(env("AWS_ACCESS_KEY_ID", "test"))
                    .with_secret_access_key(env("AWS_SECRET_ACCESS_KEY", "test"))
                    .build()
                    .expect("S3 client");
                ReportsLocation::Store {
                    store: Arc::new(store),
                    prefix: unique("reports-"),
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    pub fn postgres() -> Option<Self> {
        std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .map(Self::Postgres)
    }
}

/// `TEST_REDIS_URL`, when the run was given a Redis.
pub fn redis_url() -> Option<String> {
    std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

pub const PASSWORD: &str = "Str0ng!pass";

pub fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", orgd_core::ids::random_hex(6))
}

/// A database for one test: a temp SQLite file or a PostgreSQL schema dropped afterwards.
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_schema: Option<(String, String)>,
}

impl TestDb {
    pub async fn create(backend: &Backend) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => Self {
                url: format!("sqlite://{}?mode=rwc", dir.path().join("orgd.db").display()),
                dir,
                pg_schema: None,
            },
            Backend::Postgres(base) => {
                sqlx::any::install_default_drivers();
                let schema = unique("t_");
                let admin = AnyPool::connect(base)
                    .await
                    .expect("TEST_DATABASE_URL must be reachable");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&admin)
                    .await
                    .expect("create schema");
                admin.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                Self {
                    url: format!("{base}{sep}options=-c%20search_path%3D{schema}"),
                    dir,
                    pg_schema: Some((base.clone(), schema)),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((base, schema)) = self.pg_schema.take() else {
            return;
        };
        // Drop runs inside the test's runtime; a separate thread gets its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
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

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub state: AppState,
    /// A separate pool on the same database, for looking at or changing the store directly.
    pub db: AnyPool,
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    // Dropped last: the database outlives the server using it.
    pub test_db: Arc<TestDb>,
}

/// A signed-in user.
#[derive(Clone, Debug)]
pub struct Session {
    pub token: String,
    pub user_id: String,
    pub org_id: String,
    pub email: String,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts an instance whose configuration `tweak` may change first.
    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let db = Arc::new(TestDb::create(&backend).await);
        let clock = Arc::new(ManualClock::new(wall_clock_ms()));
        Self::start(db, clock, tweak).await
    }

    /// Starts an instance keeping its report files in `storage`, whose configuration `tweak`
    /// may change first.
    pub async fn spawn_on(
        backend: Backend,
        storage: &Storage,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let db = Arc::new(TestDb::create(&backend).await);
        let clock = Arc::new(ManualClock::new(wall_clock_ms()));
        let reports = storage.location(&db.dir.path().join("data")).await;
        Self::start(db, clock, move |c| {
            c.reports = reports;
            tweak(c)
        })
        .await
    }

    /// A second instance on the same database and clock (and the same Redis keyspace).
    pub async fn another_instance(&self) -> Self {
        self.another_instance_with(|_| {}).await
    }

    /// Like `another_instance`, with a configuration `tweak` may change first (e.g. keys).
    pub async fn another_instance_with(&self, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.config.clone();
        tweak(&mut config);
        Self::start(self.test_db.clone(), self.clock.clone(), move |c| {
            *c = config
        })
        .await
    }

    /// Stops this instance, then starts a new one on the same database and clock, with a
    /// configuration `tweak` may change first (a restart of the service).
    pub async fn restart_with(self, tweak: impl FnOnce(&mut Config)) -> Self {
        let (db, clock, mut config) = (
            self.test_db.clone(),
            self.clock.clone(),
            self.config.clone(),
        );
        self.stop().await;
        tweak(&mut config);
        Self::start(db, clock, move |c| *c = config).await
    }

    async fn start(
        db: Arc<TestDb>,
        clock: Arc<ManualClock>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = Config::development(db.dir.path().join("data"), db.url.clone())
            .expect("the development configuration");
        // Most tests sign up several users from one IP; the auth limit has its own tests.
        config.auth_rate_limit_per_minute = 10_000;
        config.redis_key_prefix = unique("orgdtest:") + ":";
        // The analysis worker runs only in tests that ask for it (or call run_pending_once),
        // so no test sees analyses appear on their own.
        config.ai.poll_interval = std::time::Duration::from_secs(3600);
        tweak(&mut config);
        let state = AppState::build(config.clone(), Some(clock.clone()))
            .await
            .expect("app state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(orgd::serve(state.clone(), listener, async {
            let _ = rx.await;
        }));
        let pool = AnyPool::connect(&db.url).await.expect("raw pool");
        Self {
            base,
            client: reqwest::Client::new(),
            clock,
            state,
            db: pool,
            config,
            shutdown: Some(tx),
            server: Some(server),
            test_db: db,
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// After a test changed the store by hand: the caches drop what the change named, as
    /// they do for every change the service itself makes (DESIGN.md: exact caches).
    pub async fn announce(&self, change: Change) {
        self.state.db.announce(change).await.expect("announce");
    }

    /// `announce` of a user change.
    pub async fn user_changed(&self, user_id: &str) {
        self.announce(Change::User(user_id.to_string())).await;
    }

    /// `announce` of an organization change.
    pub async fn organization_changed(&self, org_id: &str) {
        self.announce(Change::Organization(org_id.to_string()))
            .await;
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.base, path))
    }

    pub fn get(&self, path: &str, token: &str) -> RequestBuilder {
        self.request(Method::GET, path).bearer_auth(token)
    }

    pub fn send_json(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Value,
    ) -> RequestBuilder {
        self.request(method, path).bearer_auth(token).json(&body)
    }

    /// Signs up a new organization and its admin.
    pub async fn signup(&self, org_name: &str) -> Session {
        let email = format!("{}@example.com", unique("admin-"));
        let res = self
            .request(Method::POST, "/api/auth/signup")
            .json(&json!({"email": email, "password": PASSWORD, "name": "Ada Admin", "organizationName": org_name}))
            .send()
            .await
            .expect("signup request");
        let (status, body) = read(res).await;
        assert_eq!(status, 201, "signup failed: {body}");
        Session {
            token: body["token"].as_str().expect("token").to_string(),
            user_id: body["user"]["id"].as_str().expect("id").to_string(),
            org_id: body["user"]["organizationId"]
                .as_str()
                .expect("org")
                .to_string(),
            email,
        }
    }

    /// Puts a user with `role` into `org_id` directly through the store and mints a token,
    /// for tests that need members before any invitation flow is involved.
    pub async fn add_member(&self, org_id: &str, role: &str) -> Session {
        let now = self.clock.now_ms();
        let id = orgd_core::ids::new_id(now);
        let email = format!("{}@example.com", unique(role));
        let hash = self
            .state
            .passwords
            .hash(PASSWORD.into())
            .await
            .expect("hash");
        sqlx::query(
            "INSERT INTO users (id, organization_id, email, name, password_hash, role, status, last_login_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'active', NULL, $7, $7)",
        )
        .bind(&id)
        .bind(org_id)
        .bind(&email)
        .bind(format!("A {role}"))
        .bind(hash)
        .bind(role)
        .bind(now)
        .execute(&self.db)
        .await
        .expect("insert member");
        let (token, _) = self.state.jwt.issue(&id, now).expect("token");
        Session {
            token,
            user_id: id,
            org_id: org_id.to_string(),
            email,
        }
    }

    pub async fn login(&self, email: &str, password: &str) -> (u16, Value) {
        let res = self
            .request(Method::POST, "/api/auth/login")
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("login request");
        read(res).await
    }

    /// Rows of one organization's audit log, oldest first, straight from the store.
    pub async fn audit_actions(&self, org_id: &str) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT action FROM audit_logs WHERE organization_id = $1 ORDER BY created_at, id",
        )
        .bind(org_id)
        .fetch_all(&self.db)
        .await
        .expect("audit rows")
    }
}

/// Status and JSON body (`Value::Null` when the body is not JSON).
pub async fn read(res: Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let body = res.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// Sends and reads in one go.
pub async fn call(req: RequestBuilder) -> (u16, Value) {
    read(req.send().await.expect("request")).await
}

/// Asserts the error envelope: `{"success":false,"error":<error>,"message":<non-empty>}`.
#[track_caller]
pub fn assert_error(status: u16, body: &Value, expected_status: u16, expected_error: &str) {
    assert_eq!(status, expected_status, "unexpected status, body: {body}");
    assert_eq!(body["success"], json!(false), "body: {body}");
    assert_eq!(body["error"], json!(expected_error), "body: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without a message: {body}"
    );
}

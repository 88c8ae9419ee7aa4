//! The application state: one cheap-to-clone value holding everything a handler needs.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::auth::jwt::JwtKeys;
use crate::auth::password::PasswordHasherPool;
use crate::config::Config;
use crate::executions::storage::{LocalReportStorage, ReportStorage};
use crate::integrations::linear::{LinearApi, LinearClient};
use crate::integrations::monday::{MondayApi, MondayClient};
use crate::metrics::Metrics;
use crate::ratelimit::{MemoryLimiter, RateLimiter, RedisLimiter, Scope};
use crate::store::{SqlStore, Store};
use orgd_core::clock::{SharedClock, SystemClock};
use orgd_core::crypto::Vault;
use orgd_core::db::Db;
use orgd_core::organizations::Organizations;

#[derive(Clone)]
pub struct AppState(pub Arc<App>);

pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    /// Organizations read on the hot path (cached while nothing commits).
    pub orgs: Organizations,
    pub limiter: Arc<dyn RateLimiter>,
    pub clock: SharedClock,
    pub jwt: JwtKeys,
    pub passwords: PasswordHasherPool,
    /// Where report files are kept.
    pub reports: Arc<dyn ReportStorage>,
    pub started_at_ms: i64,
    /// Seals and opens every stored secret.
    pub vault: Vault,
    /// The one outbound HTTP client (connection pool, timeouts) every provider uses.
    pub http: reqwest::Client,
    pub linear: Arc<dyn LinearApi>,
    pub monday: Arc<dyn MondayApi>,
    /// This instance's counters for `/metrics`.
    pub metrics: Arc<Metrics>,
}

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

impl AppState {
    /// Connects to the database (applying migrations) and the rate-limit store.
    pub async fn build(config: Config, clock: Option<SharedClock>) -> anyhow::Result<Self> {
        let clock = clock.unwrap_or_else(|| Arc::new(SystemClock));
        let store =
            SqlStore::new(Db::connect(&config.database_url.0, config.limits.db_timeouts()).await?);
        let orgs = Organizations::new(&store);
        store.migrate().await?;
        let limiter: Arc<dyn RateLimiter> = match &config.redis_url {
            Some(url) => Arc::new(
                RedisLimiter::connect(&url.0, &config.redis_key_prefix, clock.clone()).await?,
            ),
            None => Arc::new(MemoryLimiter::new(clock.clone())),
        };
        let jwt = JwtKeys::new(&config.jwt_secret.0, config.jwt_ttl.as_secs() as i64);
        let http = provider_http_client(config.provider_timeout)?;
        let metrics = Arc::new(Metrics::default());
        let linear = LinearClient::new(
            http.clone(),
            config.linear_api_url.clone(),
            clock.clone(),
            metrics.clone(),
        );
        let monday = MondayClient::new(
            http.clone(),
            config.monday_api_url.clone(),
            &config.monday_api_version,
            clock.clone(),
            metrics.clone(),
        )?;
        Ok(Self(Arc::new(App {
            vault: Vault::new(&config.encryption_key.0, &config.encryption_keys_old),
            http,
            linear: Arc::new(linear),
            monday: Arc::new(monday),
            metrics,
            started_at_ms: clock.now_ms(),
            store: Arc::new(store),
            orgs,
            limiter,
            jwt,
            passwords: PasswordHasherPool::default(),
            reports: Arc::new(LocalReportStorage::new(config.reports_dir())),
            clock,
            config,
        })))
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn limit_for(&self, scope: Scope) -> u32 {
        match scope {
            Scope::Api => self.config.rate_limit_per_minute,
            Scope::Ingest => self.config.ingest_rate_limit_per_minute,
            Scope::Auth => self.config.auth_rate_limit_per_minute,
        }
    }
}

/// Connecting gets at most 5 s of the request timeout; redirects are not followed (a
/// redirected GraphQL POST would be a misconfiguration, and must not carry credentials on).
fn provider_http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("orgd/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot build the HTTP client")
}

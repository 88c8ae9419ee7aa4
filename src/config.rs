//! Configuration: clap flags with environment fallbacks (DESIGN.md, "Runtime contract"), and
//! the secrets generated into the data directory on a zero-config start.

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::http::HeaderValue;
use ipnet::IpNet;

use orgd_core::db::DbTimeouts;
use orgd_core::models::AiProvider;
use orgd_core::models::ModelCatalog;
use orgd_providers::ssrf::PrivateAddresses;

/// Flags and variables shared by every subcommand that touches the database.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Directory for the SQLite database, report files and generated secrets.
    #[arg(long, env = "ORGD_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; defaults to `sqlite://<data-dir>/orgd.db`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl StoreArgs {
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("orgd.db").display()
            ),
        }
    }
}

/// Where report files live; read by `serve` and `usage reconcile`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportsArgs {
    /// A directory, `s3://bucket/prefix` (S3-compatible storage configured by the standard
    /// `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_ALLOW_HTTP` variables) or `memory://` (tests); defaults to `<data-dir>/reports`.
    #[arg(long, env = "ORGD_REPORTS_URL")]
    pub reports_url: Option<String>,
}

impl ReportsArgs {
    pub fn location(&self, data_dir: &Path) -> anyhow::Result<ReportsLocation> {
        match self.reports_url.as_deref().map(str::trim) {
            None | Some("") => Ok(ReportsLocation::Directory(reports_dir(data_dir))),
            Some(url) => ReportsLocation::parse(url),
        }
    }
}

/// Where report files live (`ORGD_REPORTS_URL`).
#[derive(Debug, Clone)]
pub enum ReportsLocation {
    Directory(PathBuf),
    /// `s3://bucket/prefix`; the client is configured by the `AWS_*` variables at start.
    S3 {
        bucket: String,
        prefix: String,
    },
    /// An object store given as such: `memory://` (a fresh in-memory store, shared by the
    /// clones of this configuration), or one a test built.
    Store {
        store: Arc<dyn orgd_providers::reports::object_store::ObjectStore>,
        prefix: String,
    },
}

impl ReportsLocation {
    fn parse(url: &str) -> anyhow::Result<Self> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("ORGD_REPORTS_URL: {url:?} names no bucket (s3://bucket/prefix)");
            }
            return Ok(Self::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if url == "memory://" {
            return Ok(Self::Store {
                store: Arc::new(orgd_providers::reports::object_store::memory::InMemory::new()),
                prefix: String::new(),
            });
        }
        if url.contains("://") {
            bail!("ORGD_REPORTS_URL: {url:?} is not a directory, s3://bucket/prefix or memory://");
        }
        Ok(Self::Directory(PathBuf::from(url)))
    }
}

/// Everything `orgd serve` reads.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Listen address; port 0 picks any free port.
    #[arg(long, env = "ORGD_BIND", default_value = "127.0.0.1:3000")]
    pub bind: SocketAddr,
    /// Shared rate limits across instances.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key: the instances of one deployment share it, deployments (or
    /// test runs) sharing one Redis keep apart by it.
    #[arg(long, env = "ORGD_REDIS_KEY_PREFIX", default_value = "orgd:")]
    pub redis_key_prefix: String,
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// `development` or `production`.
    #[arg(long = "env", env = "ORGD_ENV", default_value = "development")]
    pub environment: Environment,
    #[arg(long, env = "ORGD_RATE_LIMIT_PER_MINUTE", default_value_t = 100)]
    pub rate_limit_per_minute: u32,
    #[arg(
        long,
        env = "ORGD_INGEST_RATE_LIMIT_PER_MINUTE",
        default_value_t = 1000
    )]
    pub ingest_rate_limit_per_minute: u32,
    #[arg(long, env = "ORGD_AUTH_RATE_LIMIT_PER_MINUTE", default_value_t = 10)]
    pub auth_rate_limit_per_minute: u32,
    /// Comma-separated browser origins allowed to call the API.
    #[arg(
        long,
        env = "ORGD_CORS_ORIGINS",
        default_value = "http://localhost:5173,http://localhost:8080"
    )]
    pub cors_origins: String,
    #[arg(long, env = "ORGD_LOG_FORMAT", default_value = "pretty")]
    pub log_format: LogFormat,
    /// Lifetime of user tokens: `24h`, `30m`, `3600s`, `7d` or plain seconds.
    #[arg(long, env = "ORGD_JWT_TTL", default_value = "24h", value_parser = parse_duration)]
    pub jwt_ttl: Duration,
    /// Comma-separated CIDRs whose `X-Forwarded-For` is believed.
    #[arg(long, env = "ORGD_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
    /// Largest single report file accepted, in bytes.
    #[arg(
        long,
        env = "ORGD_MAX_REPORT_FILE_BYTES",
        default_value_t = 104_857_600
    )]
    pub max_report_file_bytes: u64,
    /// Enables the operator API (`/api/admin/...`), authenticated by this bearer token.
    #[arg(long, env = "ORGD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Base URL of the product, for links from tickets back to runs.
    #[arg(long, env = "ORGD_PUBLIC_URL")]
    pub public_url: Option<String>,
    #[arg(
        long,
        env = "LINEAR_API_URL",
        default_value = "https://api.linear.app/graphql"
    )]
    pub linear_api_url: String,
    #[arg(
        long,
        env = "MONDAY_API_URL",
        default_value = "https://api.monday.com/v2"
    )]
    pub monday_api_url: String,
    /// The pinned Monday.com `API-Version` header.
    #[arg(long, env = "MONDAY_API_VERSION", default_value = "2026-07")]
    pub monday_api_version: String,
    /// Replaces `https://{domain}` of every Jira site (tests point it at a fake).
    #[arg(long, env = "JIRA_API_URL")]
    pub jira_api_url: Option<String>,
    /// The Atlassian gateway scoped Jira tokens call.
    #[arg(
        long,
        env = "JIRA_GATEWAY_URL",
        default_value = "https://api.atlassian.com"
    )]
    pub jira_gateway_url: String,
    /// GitHub's API root when an integration gives no `baseUrl`.
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    pub github_api_url: String,
    #[arg(
        long,
        env = "AZURE_DEVOPS_API_URL",
        default_value = "https://dev.azure.com"
    )]
    pub azure_devops_api_url: String,
    #[arg(
        long,
        env = "BITBUCKET_API_URL",
        default_value = "https://api.bitbucket.org/2.0"
    )]
    pub bitbucket_api_url: String,
    /// Request timeout for calls to Linear, Monday.com and the AI providers (connecting gets
    /// at most 5 s of it).
    #[arg(long, env = "ORGD_PROVIDER_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub provider_timeout: Duration,
    /// JSON file replacing the built-in AI model catalogue.
    #[arg(long, env = "ORGD_MODEL_CATALOG")]
    pub model_catalog: Option<PathBuf>,
    #[arg(
        long,
        env = "OPENAI_API_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub openai_api_url: String,
    #[arg(
        long,
        env = "ANTHROPIC_API_URL",
        default_value = "https://api.anthropic.com"
    )]
    pub anthropic_api_url: String,
    #[arg(
        long,
        env = "GEMINI_API_URL",
        default_value = "https://generativelanguage.googleapis.com"
    )]
    pub gemini_api_url: String,
    /// Platform keys, used for organizations without their own key for the provider.
    #[arg(long, env = "ORGD_OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,
    #[arg(long, env = "ORGD_ANTHROPIC_API_KEY", hide_env_values = true)]
    pub anthropic_api_key: Option<String>,
    #[arg(long, env = "ORGD_GEMINI_API_KEY", hide_env_values = true)]
    pub gemini_api_key: Option<String>,
    /// How much of a run's log (error and output tail) is sent for analysis, in bytes.
    #[arg(long, env = "ORGD_AI_LOG_BUDGET_BYTES", default_value_t = 60_000)]
    pub ai_log_budget_bytes: usize,
    /// How often the analysis worker looks for queued analyses.
    #[arg(long, env = "ORGD_AI_POLL_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub ai_poll_interval: Duration,
    /// Monthly plan prices shown by `GET /api/billing/plans`: `plan=price` pairs, comma
    /// separated, whole currency units (`free=0,team=49,enterprise=299`); an unlisted plan
    /// keeps its default.
    #[arg(
        long,
        env = "ORGD_PLAN_PRICES",
        default_value = "free=0,team=49,enterprise=299"
    )]
    pub plan_prices: String,
    #[command(flatten)]
    pub reports: ReportsArgs,
    /// Report uploads streamed at once; more wait briefly for a slot, then answer 503
    /// (bounds the memory S3 multipart buffers take).
    #[arg(long, env = "ORGD_MAX_CONCURRENT_UPLOADS", default_value_t = 4)]
    pub max_concurrent_uploads: u32,
    #[command(flatten)]
    pub limits: ServiceLimits,
    #[command(flatten)]
    pub delivery: DeliveryArgs,
}

/// How events leave orgd: the outbox worker, Slack and outgoing webhooks.
#[derive(Debug, Clone, clap::Args)]
pub struct DeliveryArgs {
    /// How often the delivery worker looks for due deliveries (local events wake it at once).
    #[arg(long, env = "ORGD_OUTBOX_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub outbox_poll_interval: Duration,
    /// Delays between delivery attempts, comma-separated.
    #[arg(
        long,
        env = "ORGD_WEBHOOK_RETRY_SCHEDULE",
        default_value = "5s,5m,30m,2h,5h,10h,10h"
    )]
    pub webhook_retry_schedule: String,
    /// How long a failed run's notification waits for its analysis.
    #[arg(long, env = "ORGD_NOTIFY_ANALYSIS_WAIT", default_value = "90s", value_parser = parse_duration)]
    pub notify_analysis_wait: Duration,
    /// Consecutive permanent failures after which an integration or webhook is disabled.
    #[arg(long, env = "ORGD_INTEGRATION_DISABLE_AFTER", default_value_t = 5)]
    pub integration_disable_after: u32,
    /// `false`, `true`, or comma-separated CIDRs allowed beyond public addresses.
    #[arg(long, env = "ORGD_ALLOW_PRIVATE_URLS", default_value = "false")]
    pub allow_private_urls: String,
    /// Where Slack webhook posts go.
    #[arg(
        long,
        env = "SLACK_WEBHOOK_ORIGIN",
        default_value = "https://hooks.slack.com"
    )]
    pub slack_webhook_origin: String,
    /// One webhook delivery attempt.
    #[arg(long, env = "ORGD_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,
    /// How long delivered and failed outbox rows are kept.
    #[arg(long, env = "ORGD_DELIVERY_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub delivery_retention: Duration,
}

/// Where the REST trackers are called when an integration gives no base URL of its own
/// (GitLab's default instance is a setting: `https://gitlab.com`).
#[derive(Debug, Clone)]
pub struct TrackerUrls {
    /// `JIRA_API_URL`: replaces every `https://{domain}`.
    pub jira_site: Option<String>,
    pub jira_gateway: String,
    pub github: String,
    pub azure_devops: String,
    pub bitbucket: String,
}

impl Default for TrackerUrls {
    fn default() -> Self {
        Self {
            jira_site: None,
            jira_gateway: "https://api.atlassian.com".into(),
            github: "https://api.github.com".into(),
            azure_devops: "https://dev.azure.com".into(),
            bitbucket: "https://api.bitbucket.org/2.0".into(),
        }
    }
}

/// The resolved `DeliveryArgs`.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub poll_interval: Duration,
    /// The wait before attempt n+1 is `retry_schedule[n-1]`; after the last, the delivery failed.
    pub retry_schedule: Vec<Duration>,
    pub analysis_wait: Duration,
    pub disable_after: u32,
    pub private_urls: PrivateAddresses,
    pub slack_origin: String,
    pub webhook_timeout: Duration,
    pub retention: Duration,
}

impl DeliveryConfig {
    fn from_args(args: &DeliveryArgs) -> anyhow::Result<Self> {
        let private_urls = PrivateAddresses::parse(&args.allow_private_urls)
            .map_err(|e| anyhow::anyhow!("ORGD_ALLOW_PRIVATE_URLS: {e}"))?;
        if args.integration_disable_after == 0 {
            bail!("ORGD_INTEGRATION_DISABLE_AFTER must be at least 1");
        }
        Ok(Self {
            poll_interval: args.outbox_poll_interval.max(Duration::from_millis(10)),
            retry_schedule: parse_schedule(&args.webhook_retry_schedule)?,
            analysis_wait: args.notify_analysis_wait,
            disable_after: args.integration_disable_after,
            private_urls,
            slack_origin: http_url(&args.slack_webhook_origin, "SLACK_WEBHOOK_ORIGIN")?,
            webhook_timeout: args.webhook_timeout,
            retention: args.delivery_retention,
        })
    }

    fn development() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            retry_schedule: parse_schedule("5s,5m,30m,2h,5h,10h,10h").unwrap_or_default(),
            analysis_wait: Duration::from_secs(90),
            disable_after: 5,
            private_urls: PrivateAddresses::Refused,
            slack_origin: "https://hooks.slack.com".into(),
            webhook_timeout: Duration::from_secs(10),
            retention: Duration::from_secs(30 * 86_400),
        }
    }
}

/// `5s,5m,30m`: the waits between attempts.
fn parse_schedule(list: &str) -> anyhow::Result<Vec<Duration>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| parse_duration(s).map_err(|e| anyhow::anyhow!("ORGD_WEBHOOK_RETRY_SCHEDULE: {e}")))
        .collect()
}

/// Monthly plan prices in whole currency units (`ORGD_PLAN_PRICES`). orgd takes no payments;
/// these are what the original's billing page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanPrices {
    free: u64,
    team: u64,
    enterprise: u64,
}

impl Default for PlanPrices {
    fn default() -> Self {
        Self {
            free: 0,
            team: 49,
            enterprise: 299,
        }
    }
}

impl PlanPrices {
    /// `free=0,team=49,enterprise=299`: each plan at most once, a non-negative integer each;
    /// plans not listed keep their default.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let mut prices = Self::default();
        let mut seen = Vec::new();
        for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, price)) = pair.split_once('=') else {
                bail!("ORGD_PLAN_PRICES: {pair:?} is not plan=price");
            };
            let name = name.trim();
            let plan = orgd_core::plans::Plan::parse(name).with_context(|| {
                format!("ORGD_PLAN_PRICES: unknown plan {name:?} (free, team or enterprise)")
            })?;
            if seen.contains(&plan) {
                bail!("ORGD_PLAN_PRICES names {name} twice");
            }
            seen.push(plan);
            let price: u64 = price.trim().parse().with_context(|| {
                format!("ORGD_PLAN_PRICES: the price of {name} must be a whole non-negative number")
            })?;
            *prices.slot(plan) = price;
        }
        Ok(prices)
    }

    fn slot(&mut self, plan: orgd_core::plans::Plan) -> &mut u64 {
        match plan {
            orgd_core::plans::Plan::Free => &mut self.free,
            orgd_core::plans::Plan::Team => &mut self.team,
            orgd_core::plans::Plan::Enterprise => &mut self.enterprise,
        }
    }

    pub fn of(&self, plan: orgd_core::plans::Plan) -> u64 {
        match plan {
            orgd_core::plans::Plan::Free => self.free,
            orgd_core::plans::Plan::Team => self.team,
            orgd_core::plans::Plan::Enterprise => self.enterprise,
        }
    }
}

/// How long the service waits on anything, and how many connections it holds open.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ServiceLimits {
    /// Deadline of a request (report streams and routes that call a provider are bounded by
    /// their provider budget instead); past it the answer is 503.
    #[arg(long, env = "ORGD_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// A client must send a request's headers within this time.
    #[arg(long, env = "ORGD_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// A connection on which nothing moves for this long is closed.
    #[arg(long, env = "ORGD_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Connections served at once (the rest wait in the listen backlog); default from the
    /// open-file limit, leaving room for the database pool and files.
    #[arg(long, env = "ORGD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Longest wait for a database connection.
    #[arg(long, env = "ORGD_DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub db_acquire_timeout: Duration,
    /// PostgreSQL statement, lock and idle-in-transaction timeouts; SQLite busy timeout.
    #[arg(long, env = "ORGD_DB_STATEMENT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub db_statement_timeout: Duration,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: None,
            db_acquire_timeout: Duration::from_secs(5),
            db_statement_timeout: Duration::from_secs(10),
        }
    }
}

impl ServiceLimits {
    pub fn db_timeouts(&self) -> DbTimeouts {
        DbTimeouts::service(self.db_acquire_timeout, self.db_statement_timeout)
    }
}

/// The vault keys, shared by `serve` and `secrets rotate`.
#[derive(Clone, clap::Args)]
pub struct KeyArgs {
    /// 32 bytes as 64 hex characters; encrypts every new secret.
    #[arg(long, env = "ENCRYPTION_KEY", hide_env_values = true)]
    pub encryption_key: Option<String>,
    /// Comma-separated earlier keys (64 hex characters each) that still decrypt.
    #[arg(
        long,
        env = "ENCRYPTION_KEYS_OLD",
        hide_env_values = true,
        default_value = ""
    )]
    pub encryption_keys_old: String,
}

impl fmt::Debug for KeyArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyArgs([redacted])")
    }
}

impl KeyArgs {
    /// The current key (from the flag, else the data directory's generated one when
    /// `generate` allows creating it) and the old keys.
    fn resolve(
        &self,
        data_dir: &Path,
        generate: bool,
        refuse: impl FnOnce() -> anyhow::Error,
    ) -> anyhow::Result<VaultKeys> {
        let current = match &self.encryption_key {
            Some(s) => s.clone(),
            None if generate => load_or_generate(data_dir, "encryption_key")?,
            None => return Err(refuse()),
        };
        let old = self
            .encryption_keys_old
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|k| parse_encryption_key(k, "ENCRYPTION_KEYS_OLD").map(Secret))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(VaultKeys {
            current: Secret(parse_encryption_key(&current, "ENCRYPTION_KEY")?),
            old,
        })
    }

    /// The keys for an operator command on `store`: never generates a key (there would be
    /// nothing it could decrypt), but reads the one a zero-config SQLite start generated.
    pub fn for_command(&self, store: &StoreArgs) -> anyhow::Result<VaultKeys> {
        let generated = store.data_dir.join("encryption_key").is_file();
        self.resolve(&store.data_dir, generated, || {
            anyhow::anyhow!("ENCRYPTION_KEY is required (no generated key in the data directory)")
        })
    }
}

/// The vault's keys: `current` encrypts, `old` still decrypt.
#[derive(Debug, Clone)]
pub struct VaultKeys {
    pub current: Secret<[u8; 32]>,
    pub old: Vec<Secret<[u8; 32]>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

pub use orgd_core::secret::Secret;

/// The resolved configuration of a running service.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub database_url: Secret<String>,
    pub redis_url: Option<Secret<String>>,
    /// Prefix of every Redis key, so instances of one deployment share buckets and tests don't.
    pub redis_key_prefix: String,
    pub jwt_secret: Secret<Vec<u8>>,
    /// Encrypts every new secret.
    pub encryption_key: Secret<[u8; 32]>,
    /// Earlier keys that still decrypt (`ENCRYPTION_KEYS_OLD`).
    pub encryption_keys_old: Vec<Secret<[u8; 32]>>,
    pub environment: Environment,
    pub rate_limit_per_minute: u32,
    pub ingest_rate_limit_per_minute: u32,
    pub auth_rate_limit_per_minute: u32,
    pub cors_origins: Vec<HeaderValue>,
    pub jwt_ttl: Duration,
    pub trusted_proxies: Vec<IpNet>,
    pub max_report_file_bytes: u64,
    pub reports: ReportsLocation,
    pub max_concurrent_uploads: u32,
    /// `None`: the operator API does not exist.
    pub admin_token: Option<Secret<String>>,
    /// Base URL of the product without a trailing `/` (`ORGD_PUBLIC_URL`).
    pub public_url: Option<String>,
    pub linear_api_url: String,
    pub monday_api_url: String,
    pub monday_api_version: String,
    pub trackers: TrackerUrls,
    pub provider_timeout: Duration,
    pub model_catalog: Arc<ModelCatalog>,
    pub ai: AiConfig,
    pub plan_prices: PlanPrices,
    pub limits: ServiceLimits,
    pub delivery: DeliveryConfig,
}

/// Where and with which platform keys failure analyses are run.
#[derive(Debug, Clone)]
pub struct AiConfig {
    pub openai_api_url: String,
    pub anthropic_api_url: String,
    pub gemini_api_url: String,
    pub openai_api_key: Option<Secret<String>>,
    pub anthropic_api_key: Option<Secret<String>>,
    pub gemini_api_key: Option<Secret<String>>,
    pub log_budget_bytes: usize,
    pub poll_interval: Duration,
}

impl AiConfig {
    /// The platform's own key for `provider`, used when an organization brings none.
    pub fn platform_key(&self, provider: AiProvider) -> Option<&Secret<String>> {
        match provider {
            AiProvider::Openai => self.openai_api_key.as_ref(),
            AiProvider::Anthropic => self.anthropic_api_key.as_ref(),
            AiProvider::Gemini => self.gemini_api_key.as_ref(),
        }
    }

    fn from_args(args: &ServeArgs) -> anyhow::Result<Self> {
        let key = |k: &Option<String>| {
            k.as_deref()
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| Secret(k.to_string()))
        };
        Ok(Self {
            openai_api_url: http_url(&args.openai_api_url, "OPENAI_API_URL")?,
            anthropic_api_url: http_url(&args.anthropic_api_url, "ANTHROPIC_API_URL")?,
            gemini_api_url: http_url(&args.gemini_api_url, "GEMINI_API_URL")?,
            openai_api_key: key(&args.openai_api_key),
            anthropic_api_key: key(&args.anthropic_api_key),
            gemini_api_key: key(&args.gemini_api_key),
            log_budget_bytes: args.ai_log_budget_bytes.max(1),
            poll_interval: args.ai_poll_interval.max(Duration::from_millis(10)),
        })
    }

    fn development() -> Self {
        Self {
            openai_api_url: "https://api.openai.com/v1".into(),
            anthropic_api_url: "https://api.anthropic.com".into(),
            gemini_api_url: "https://generativelanguage.googleapis.com".into(),
            openai_api_key: None,
            anthropic_api_key: None,
            gemini_api_key: None,
            log_budget_bytes: 60_000,
            poll_interval: Duration::from_secs(2),
        }
    }
}

const MIN_JWT_SECRET_BYTES: usize = 32;
const MIN_ADMIN_TOKEN_BYTES: usize = 32;

impl Config {
    /// Resolves flags into a configuration, loading or generating secrets where allowed.
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Self> {
        let database_url = args.store.database_url();
        let is_sqlite = database_url.starts_with("sqlite:");
        let may_generate = is_sqlite && args.environment == Environment::Development;
        if is_sqlite {
            std::fs::create_dir_all(&args.store.data_dir).with_context(|| {
                format!("cannot create data dir {}", args.store.data_dir.display())
            })?;
        }
        let refuse = |name: &str| -> anyhow::Error {
            if args.environment == Environment::Production {
                anyhow::anyhow!("{name} is required when ORGD_ENV=production")
            } else {
                anyhow::anyhow!(
                    "{name} is required with a non-SQLite DATABASE_URL (instances share the database, so each must be given the same secret)"
                )
            }
        };
        let jwt_secret = match &args.jwt_secret {
            Some(s) => s.clone(),
            None if may_generate => load_or_generate(&args.store.data_dir, "jwt_secret")?,
            None => return Err(refuse("JWT_SECRET")),
        };
        if jwt_secret.len() < MIN_JWT_SECRET_BYTES {
            bail!("JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes long");
        }
        let admin_token = args.admin_token.clone().filter(|t| !t.is_empty());
        if admin_token
            .as_ref()
            .is_some_and(|t| t.len() < MIN_ADMIN_TOKEN_BYTES)
        {
            bail!("ORGD_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_BYTES} bytes long");
        }
        let keys = args.keys.resolve(&args.store.data_dir, may_generate, || {
            refuse("ENCRYPTION_KEY")
        })?;
        let model_catalog = match &args.model_catalog {
            Some(path) => ModelCatalog::load(path)?,
            None => ModelCatalog::builtin()?,
        };
        Ok(Self {
            data_dir: args.store.data_dir.clone(),
            database_url: Secret(database_url),
            redis_url: args.redis_url.clone().filter(|u| !u.is_empty()).map(Secret),
            redis_key_prefix: args.redis_key_prefix.clone(),
            jwt_secret: Secret(jwt_secret.into_bytes()),
            encryption_key: keys.current,
            encryption_keys_old: keys.old,
            environment: args.environment,
            rate_limit_per_minute: positive(
                args.rate_limit_per_minute,
                "ORGD_RATE_LIMIT_PER_MINUTE",
            )?,
            ingest_rate_limit_per_minute: positive(
                args.ingest_rate_limit_per_minute,
                "ORGD_INGEST_RATE_LIMIT_PER_MINUTE",
            )?,
            auth_rate_limit_per_minute: positive(
                args.auth_rate_limit_per_minute,
                "ORGD_AUTH_RATE_LIMIT_PER_MINUTE",
            )?,
            cors_origins: parse_origins(&args.cors_origins)?,
            jwt_ttl: args.jwt_ttl,
            trusted_proxies: parse_cidrs(&args.trusted_proxies)?,
            max_report_file_bytes: args.max_report_file_bytes,
            reports: args.reports.location(&args.store.data_dir)?,
            max_concurrent_uploads: positive(
                args.max_concurrent_uploads,
                "ORGD_MAX_CONCURRENT_UPLOADS",
            )?,
            admin_token: admin_token.map(Secret),
            public_url: args
                .public_url
                .as_deref()
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(|u| http_url(u, "ORGD_PUBLIC_URL"))
                .transpose()?,
            linear_api_url: http_url(&args.linear_api_url, "LINEAR_API_URL")?,
            monday_api_url: http_url(&args.monday_api_url, "MONDAY_API_URL")?,
            monday_api_version: monday_version(&args.monday_api_version)?,
            trackers: TrackerUrls {
                jira_site: args
                    .jira_api_url
                    .as_deref()
                    .map(|u| http_url(u, "JIRA_API_URL"))
                    .transpose()?,
                jira_gateway: http_url(&args.jira_gateway_url, "JIRA_GATEWAY_URL")?,
                github: http_url(&args.github_api_url, "GITHUB_API_URL")?,
                azure_devops: http_url(&args.azure_devops_api_url, "AZURE_DEVOPS_API_URL")?,
                bitbucket: http_url(&args.bitbucket_api_url, "BITBUCKET_API_URL")?,
            },
            provider_timeout: args.provider_timeout,
            model_catalog: Arc::new(model_catalog),
            ai: AiConfig::from_args(args)?,
            plan_prices: PlanPrices::parse(&args.plan_prices)?,
            limits: args.limits,
            delivery: DeliveryConfig::from_args(&args.delivery)?,
        })
    }

    /// A development configuration with fresh random secrets, for tests and tools.
    pub fn development(data_dir: PathBuf, database_url: String) -> anyhow::Result<Self> {
        let mut key = [0u8; 32];
        key.iter_mut().for_each(|b| *b = rand::random());
        let reports = ReportsLocation::Directory(reports_dir(&data_dir));
        Ok(Self {
            data_dir,
            database_url: Secret(database_url),
            redis_url: None,
            redis_key_prefix: "orgd:".into(),
            jwt_secret: Secret(orgd_core::ids::random_hex(32).into_bytes()),
            encryption_key: Secret(key),
            environment: Environment::Development,
            rate_limit_per_minute: 100,
            ingest_rate_limit_per_minute: 1000,
            auth_rate_limit_per_minute: 10,
            cors_origins: parse_origins("http://localhost:5173,http://localhost:8080")
                .unwrap_or_default(),
            jwt_ttl: Duration::from_secs(24 * 3600),
            trusted_proxies: Vec::new(),
            max_report_file_bytes: 104_857_600,
            reports,
            max_concurrent_uploads: 4,
            admin_token: None,
            public_url: None,
            linear_api_url: "https://api.linear.app/graphql".into(),
            monday_api_url: "https://api.monday.com/v2".into(),
            monday_api_version: "2026-07".into(),
            trackers: TrackerUrls::default(),
            provider_timeout: Duration::from_secs(15),
            model_catalog: Arc::new(ModelCatalog::builtin()?),
            encryption_keys_old: Vec::new(),
            ai: AiConfig::development(),
            plan_prices: PlanPrices::default(),
            limits: ServiceLimits::default(),
            delivery: DeliveryConfig::development(),
        })
    }
}

/// Where report files live: `<data-dir>/reports/<organizationId>/<taskId>/<path>`.
pub fn reports_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("reports")
}

fn positive(value: u32, name: &str) -> anyhow::Result<u32> {
    if value == 0 {
        bail!("{name} must be at least 1");
    }
    Ok(value)
}

/// Reads `<dir>/<name>`, or creates it with 32 random bytes as hex, readable by the owner only.
fn load_or_generate(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) => return Ok(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let secret = orgd_core::ids::random_hex(32);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    tracing::info!(file = %path.display(), "generated a new secret");
    Ok(secret)
}

fn parse_encryption_key(hex_key: &str, name: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(hex_key.trim())
        .ok()
        .filter(|b| b.len() == 32)
        .with_context(|| format!("{name} must be exactly 32 bytes written as 64 hex characters"))?;
    let mut key = [0u8; 32];
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// An absolute `http(s)://` URL, without a trailing `/`.
fn http_url(url: &str, name: &str) -> anyhow::Result<String> {
    let url = url.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host)
            if !host.is_empty() && !url.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Ok(url.to_string())
        }
        _ => bail!("{name} must be an absolute http:// or https:// URL"),
    }
}

/// Monday.com versions are quarterly: `YYYY-01|04|07|10`.
fn monday_version(version: &str) -> anyhow::Result<String> {
    let valid = version.len() == 7
        && version.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && ["-01", "-04", "-07", "-10"].contains(&&version[4..]);
    if !valid {
        bail!("MONDAY_API_VERSION must look like 2026-07 (a quarterly version)");
    }
    Ok(version.to_string())
}

fn parse_origins(list: &str) -> anyhow::Result<Vec<HeaderValue>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            HeaderValue::from_str(s.trim_end_matches('/'))
                .with_context(|| format!("invalid CORS origin {s:?}"))
        })
        .collect()
}

fn parse_cidrs(list: &str) -> anyhow::Result<Vec<IpNet>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .with_context(|| format!("invalid ORGD_TRUSTED_PROXIES entry {s:?}"))
        })
        .collect()
}

/// `24h`, `30m`, `90s`, `250ms`, `7d`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {s:?}"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        "d" => n.saturating_mul(86_400_000),
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m, h or d)"
            ));
        }
    };
    if ms == 0 {
        return Err("duration must be positive".into());
    }
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_prices() {
        use orgd_core::plans::Plan;
        let default = PlanPrices::parse("free=0,team=49,enterprise=299").unwrap();
        assert_eq!(default, PlanPrices::default());
        let some = PlanPrices::parse(" team = 99 ").unwrap();
        assert_eq!(
            (
                some.of(Plan::Free),
                some.of(Plan::Team),
                some.of(Plan::Enterprise)
            ),
            (0, 99, 299)
        );
        assert_eq!(PlanPrices::parse("").unwrap(), PlanPrices::default());
        for bad in ["team", "gold=5", "team=-1", "team=4.5", "team=1,team=2"] {
            assert!(PlanPrices::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn cidrs_and_keys() {
        assert_eq!(
            parse_cidrs("10.0.0.0/8, 127.0.0.1").map(|v| v.len()).ok(),
            Some(2)
        );
        assert!(parse_cidrs("nonsense").is_err());
        assert!(parse_encryption_key(&"ab".repeat(32), "K").is_ok());
        assert!(parse_encryption_key("abcd", "K").is_err());
        assert_eq!(
            http_url("https://orgd.example/", "U").ok().as_deref(),
            Some("https://orgd.example")
        );
        assert!(http_url("ftp://x", "U").is_err());
        assert!(http_url("https://", "U").is_err());
        assert!(monday_version("2026-07").is_ok());
        assert!(monday_version("2026-08").is_err());
    }
}

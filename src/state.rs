//! The application state: one cheap-to-clone value holding everything a handler needs.

use std::ops::Deref;
use std::sync::Arc;

use anyhow::Context;

use crate::auth::jwt::JwtKeys;
use crate::config::{Config, ReportsLocation};
use crate::http::rendered::Rendered;
use crate::metrics::Metrics;
use crate::ratelimit::{MemoryLimiter, RateLimiter, RedisLimiter, Scope};
use orgd_core::clock::{SharedClock, SystemClock};
use orgd_core::crypto::Vault;
use orgd_core::db::Db;
use orgd_core::integrations::{IntegrationSummary, Summaries};
use orgd_core::organizations::{OrganizationRecord, Organizations};
use orgd_core::passwords::PasswordHasherPool;
use orgd_core::reports::{LocalReportStorage, ReportStorage};
use orgd_core::users::Identities;
use orgd_providers::azure_devops::AzureDevOpsClient;
use orgd_providers::bitbucket::BitbucketClient;
use orgd_providers::github::GitHubClient;
use orgd_providers::gitlab::GitLabClient;
use orgd_providers::jira::JiraClient;
use orgd_providers::linear::{LinearApi, LinearClient};
use orgd_providers::llm::LlmClient;
use orgd_providers::monday::{MondayApi, MondayClient};
use orgd_providers::reports::ObjectReportStorage;
use orgd_providers::slack::SlackClient;
use orgd_providers::ssrf::UrlPolicy;
use orgd_providers::webhook::WebhookClient;

/// The most of a tracker's answer read from a host a customer named (GitHub Enterprise,
/// self-managed GitLab): their largest answers (a repository) are a few KiB.
const CUSTOMER_TRACKER_ANSWER_CAP: usize = 1024 * 1024;

/// How long the host of a customer URL may take to resolve when it is saved (API.md).
const URL_DNS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Clone)]
pub struct AppState(pub Arc<App>);

/// How long a starting instance waits for its cache listener (PostgreSQL) to hear its first
/// heartbeat; past it the instance serves with the caches bypassed until it does.
const CACHE_START_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// What `GET /api/organization` is built from.
pub type OrgAnswerInputs = (Arc<OrganizationRecord>, Arc<Vec<IntegrationSummary>>);

pub struct App {
    pub config: Config,
    /// The database every domain function of the core takes.
    pub db: Db,
    /// Organizations read on the hot path (cached while nothing commits).
    pub orgs: Organizations,
    /// Who calls, read on every request (cached while nothing commits).
    pub identities: Identities,
    /// What the organization view shows of its integrations (cached while nothing commits).
    pub integrations: Summaries,
    /// `GET /api/organization`'s last answer per organization, with what it was built from.
    pub org_answers: Rendered<String, OrgAnswerInputs>,
    pub limiter: Arc<dyn RateLimiter>,
    pub clock: SharedClock,
    pub jwt: JwtKeys,
    pub passwords: PasswordHasherPool,
    /// Where report files are kept.
    pub reports: Arc<dyn ReportStorage>,
    /// Upload slots (`ORGD_MAX_CONCURRENT_UPLOADS`).
    pub uploads: Arc<tokio::sync::Semaphore>,
    pub started_at_ms: i64,
    /// Seals and opens every stored secret.
    pub vault: Vault,
    /// Linear, Monday.com and the AI providers, all on one outbound client (connection
    /// pool, timeouts, retry rule, metrics).
    pub linear: Arc<dyn LinearApi>,
    pub monday: Arc<dyn MondayApi>,
    pub llm: LlmClient,
    /// The five REST trackers (tickets, credential checks, pull-request comments).
    pub trackers: Trackers,
    /// This instance's counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Slack incoming webhooks (on the shared client, posting to `SLACK_WEBHOOK_ORIGIN`).
    pub slack: SlackClient,
    /// Outgoing webhooks, on the guarded client (address rules, no redirects, 64 KiB read).
    pub webhooks: WebhookClient,
    /// The address rules customer URLs are checked against when saved.
    pub url_policy: UrlPolicy,
    /// Wakes this instance's delivery worker when a request queued an event.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    /// The cache listener (PostgreSQL), stopped with the instance.
    listener: Option<tokio::task::JoinHandle<()>>,
}

/// The REST trackers' clients: the shared outbound client for the vendors' own hosts, a
/// guarded one for hosts a customer names.
pub struct Trackers {
    pub jira: JiraClient,
    pub github: GitHubClient,
    pub gitlab: GitLabClient,
    pub azure_devops: AzureDevOpsClient,
    pub bitbucket: BitbucketClient,
}

impl Trackers {
    fn new(
        config: &Config,
        vendor: &orgd_providers::Client,
        customer: &orgd_providers::Client,
    ) -> Self {
        let urls = &config.trackers;
        Self {
            jira: JiraClient::new(
                vendor.clone(),
                urls.jira_site.clone(),
                urls.jira_gateway.clone(),
            ),
            github: GitHubClient::new(vendor.clone(), customer.clone(), urls.github.clone()),
            gitlab: GitLabClient::new(
                vendor.clone(),
                customer.clone(),
                crate::trackers::GITLAB_DEFAULT_URL.into(),
            ),
            azure_devops: AzureDevOpsClient::new(vendor.clone(), urls.azure_devops.clone()),
            bitbucket: BitbucketClient::new(vendor.clone(), urls.bitbucket.clone()),
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

/// Opens the report store and checks that it answers: a missing bucket, wrong credentials
/// or an unreachable endpoint stop the start with an error naming `ORGD_REPORTS_URL`.
pub async fn open_reports(location: &ReportsLocation) -> anyhow::Result<Arc<dyn ReportStorage>> {
    let reports: Arc<dyn ReportStorage> = match location {
        ReportsLocation::Directory(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("ORGD_REPORTS_URL: cannot create {}", dir.display()))?;
            Arc::new(LocalReportStorage::new(dir.clone()))
        }
        ReportsLocation::S3 { bucket, prefix } => Arc::new(
            ObjectReportStorage::s3(bucket, prefix)
                .with_context(|| format!("ORGD_REPORTS_URL: cannot configure s3://{bucket}"))?,
        ),
        ReportsLocation::Store { store, prefix } => {
            Arc::new(ObjectReportStorage::new(store.clone(), prefix))
        }
    };
    reports
        .check()
        .await
        .context("ORGD_REPORTS_URL: the report storage does not answer")?;
    Ok(reports)
}

impl AppState {
    /// Connects to the database (applying migrations) and the rate-limit store.
    pub async fn build(config: Config, clock: Option<SharedClock>) -> anyhow::Result<Self> {
        let clock = clock.unwrap_or_else(|| Arc::new(SystemClock));
        let reports = open_reports(&config.reports).await?;
        let db = Db::connect(&config.database_url.0, config.limits.db_timeouts()).await?;
        db.migrate().await?;
        // Listening before anything is cached, so no change can slip between a read and
        // the subscription (the caches are bypassed until the first heartbeat is heard).
        let listener = db.listen_for_changes();
        if !db.caches_ready(CACHE_START_WAIT).await {
            tracing::warn!("the cache listener is not hearing yet; caches bypassed until it does");
        }
        let orgs = Organizations::new(&db);
        let identities = Identities::new(&db);
        let integrations = Summaries::new(&db);
        let limiter: Arc<dyn RateLimiter> = match &config.redis_url {
            Some(url) => Arc::new(
                RedisLimiter::connect(&url.0, &config.redis_key_prefix, clock.clone()).await?,
            ),
            None => Arc::new(MemoryLimiter::new(clock.clone())),
        };
        let jwt = JwtKeys::new(&config.jwt_secret.0, config.jwt_ttl.as_secs() as i64);
        let metrics = Arc::new(Metrics::default());
        let now = clock.clone();
        let providers = orgd_providers::Client::new(
            config.provider_timeout,
            metrics.clone(),
            Arc::new(move || now.now_ms()),
        )
        .context("cannot build the HTTP client")?;
        let linear = LinearClient::new(providers.clone(), config.linear_api_url.clone());
        let slack = SlackClient::new(providers.clone(), config.delivery.slack_origin.clone());
        let url_policy = UrlPolicy {
            private: config.delivery.private_urls.clone(),
            dns_timeout: URL_DNS_TIMEOUT,
        };
        let now = clock.clone();
        let webhooks = WebhookClient::new(
            &url_policy,
            config.delivery.webhook_timeout,
            metrics.clone(),
            Arc::new(move || now.now_ms()),
        )
        .context("cannot build the webhook client")?;
        let now = clock.clone();
        let customer = orgd_providers::Client::guarded(
            &url_policy,
            config.provider_timeout,
            CUSTOMER_TRACKER_ANSWER_CAP,
            metrics.clone(),
            Arc::new(move || now.now_ms()),
        )
        .context("cannot build the HTTP client for customer hosts")?;
        let trackers = Trackers::new(&config, &providers, &customer);
        let monday = MondayClient::new(
            providers.clone(),
            config.monday_api_url.clone(),
            &config.monday_api_version,
        )
        .context("invalid Monday.com API version")?;
        Ok(Self(Arc::new(App {
            vault: Vault::new(&config.encryption_key.0, &config.encryption_keys_old),
            linear: Arc::new(linear),
            monday: Arc::new(monday),
            llm: LlmClient::new(providers),
            trackers,
            metrics,
            slack,
            webhooks,
            url_policy,
            outbox_wake: Arc::new(tokio::sync::Notify::new()),
            listener,
            started_at_ms: clock.now_ms(),
            db,
            orgs,
            identities,
            integrations,
            org_answers: Rendered::default(),
            limiter,
            jwt,
            passwords: PasswordHasherPool::default(),
            reports,
            uploads: Arc::new(tokio::sync::Semaphore::new(
                config.max_concurrent_uploads as usize,
            )),
            clock,
            config,
        })))
    }

    /// A request queued an event: deliver it now rather than at the next poll.
    pub fn wake_outbox(&self) {
        self.outbox_wake.notify_one();
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

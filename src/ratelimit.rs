//! Rate limits: an exact sliding log per bucket (no rolling window ever admits more than the
//! limit), kept in process or, with `REDIS_URL`, in one Redis sorted set per bucket updated by
//! one Lua script so every instance shares it. A Redis outage falls back to the in-process log.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use foldhash::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use orgd_core::clock::SharedClock;

pub const WINDOW_MS: i64 = 60_000;

/// The outcome of counting one request against a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    pub window_ms: i64,
    /// When one more request will be admitted (epoch ms).
    pub reset_at_ms: i64,
    pub now_ms: i64,
}

impl Decision {
    fn from_log(
        limit: u32,
        window_ms: i64,
        now_ms: i64,
        count_after: u32,
        oldest_ms: i64,
        allowed: bool,
    ) -> Self {
        let remaining = limit.saturating_sub(count_after);
        let reset_at_ms = if remaining > 0 {
            now_ms
        } else {
            oldest_ms + window_ms
        };
        Self {
            allowed,
            limit,
            remaining,
            window_ms,
            reset_at_ms,
            now_ms,
        }
    }

    /// Whole seconds until a refused request may be retried (at least 1).
    pub fn retry_after_secs(&self) -> i64 {
        ((self.reset_at_ms - self.now_ms).max(0) + 999) / 1000
    }

    pub fn write_headers(&self, headers: &mut HeaderMap) {
        // Names built once: a `&str` name is parsed again on every insert.
        const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
        const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
        const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
        headers.insert(LIMIT, HeaderValue::from(self.limit));
        headers.insert(REMAINING, HeaderValue::from(self.remaining));
        headers.insert(RESET, HeaderValue::from((self.reset_at_ms + 999) / 1000));
    }
}

/// Which bucket a request is counted in (API.md, Rate limiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every authenticated endpoint but ingest, per organization.
    Api,
    /// Executions and report files, per organization.
    Ingest,
    /// Signup, login and invitation validation, per client IP.
    Auth,
}

/// The ingest API (API.md, Conventions and Rate limiting): `/api/executions*` (runs and
/// their report files) and `POST /api/execution-request`. Counted in the ingest bucket, and
/// the only paths where an `x-api-key` is accepted. Exact segments, not a raw prefix (the
/// original's `startsWith` bypass, §10.10).
pub fn is_ingest_path(path: &str) -> bool {
    path == "/api/execution-request"
        || path
            .strip_prefix("/api/executions")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl Scope {
    pub fn for_path(path: &str) -> Self {
        if is_ingest_path(path) {
            Self::Ingest
        } else {
            Self::Api
        }
    }

    pub fn refusal_message(self) -> &'static str {
        match self {
            Self::Api => "API rate limit exceeded. Please try again in a moment.",
            Self::Ingest => "Ingest rate limit exceeded. Please try again in a moment.",
            Self::Auth => "Too many authentication attempts. Please try again in a moment.",
        }
    }

    pub fn bucket(self, subject: &str) -> String {
        let prefix = match self {
            Self::Api => "api:org:",
            Self::Ingest => "ingest:org:",
            Self::Auth => "auth:ip:",
        };
        [prefix, subject].concat()
    }
}

#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request against `bucket` if it fits, and says whether it did.
    async fn hit(&self, bucket: &str, limit: u32, window_ms: i64) -> Decision;
    /// `None` when no shared store is configured, else whether it answers.
    async fn shared_store_healthy(&self) -> Option<bool>;
}

/// The in-process sliding log, sharded so concurrent requests rarely wait on each other.
pub struct MemoryLimiter {
    clock: SharedClock,
    shards: Vec<Mutex<HashMap<String, Bucket>>>,
    /// Picks a bucket's shard.
    shard_of: foldhash::fast::RandomState,
    hits: AtomicI64,
}

const SHARDS: usize = 16;

struct Bucket {
    window_ms: i64,
    log: VecDeque<i64>,
}

const SWEEP_EVERY: i64 = 4096;

impl MemoryLimiter {
    pub fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            shard_of: foldhash::fast::RandomState::default(),
            hits: AtomicI64::new(0),
        }
    }

    fn hit_now(&self, bucket: &str, limit: u32, window_ms: i64) -> Decision {
        let shard = self.shard_of.hash_one(bucket) as usize % SHARDS;
        let mut buckets = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        // Read the clock under the lock so each log stays in time order.
        let now = self.clock.now_ms();
        if self.hits.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == 0 {
            buckets.retain(|_, b| b.log.back().is_some_and(|&t| t > now - b.window_ms));
        }
        // Looked up before inserting: a bucket's name is allocated once, not per request.
        if !buckets.contains_key(bucket) {
            buckets.insert(
                bucket.to_string(),
                Bucket {
                    window_ms,
                    log: VecDeque::new(),
                },
            );
        }
        let Some(entry) = buckets.get_mut(bucket) else {
            return Decision::from_log(limit, window_ms, now, 0, now, true);
        };
        entry.window_ms = window_ms;
        while entry.log.front().is_some_and(|&t| t <= now - window_ms) {
            entry.log.pop_front();
        }
        let allowed = entry.log.len() < limit as usize;
        if allowed {
            entry.log.push_back(now);
        }
        let oldest = entry.log.front().copied().unwrap_or(now);
        Decision::from_log(
            limit,
            window_ms,
            now,
            entry.log.len() as u32,
            oldest,
            allowed,
        )
    }
}

#[async_trait::async_trait]
impl RateLimiter for MemoryLimiter {
    async fn hit(&self, bucket: &str, limit: u32, window_ms: i64) -> Decision {
        self.hit_now(bucket, limit, window_ms)
    }

    async fn shared_store_healthy(&self) -> Option<bool> {
        None
    }
}

/// Trims the log, counts it, and admits by adding `now` — atomically, inside Redis.
const SLIDING_LOG_LUA: &str = r#"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  count = count + 1
  allowed = 1
end
redis.call('PEXPIRE', KEYS[1], window)
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local oldest_ms = now
if oldest[2] then oldest_ms = tonumber(oldest[2]) end
return {allowed, count, oldest_ms}
"#;

/// The shared sliding log in Redis, falling back to the in-process one while Redis is down.
///
/// A circuit breaker keeps an outage off the request path: the first failed call opens it,
/// and while it is open every request is counted in process at once — no request pays a
/// connection attempt or a timeout. One background probe reconnects, with backoff, and
/// closes the breaker when Redis answers again.
pub struct RedisLimiter {
    shared: Arc<RedisShared>,
}

struct RedisShared {
    client: redis::Client,
    prefix: String,
    clock: SharedClock,
    script: redis::Script,
    /// The live connection; `None` while the breaker is open.
    connection: RwLock<Option<ConnectionManager>>,
    probing: AtomicBool,
    fallback: MemoryLimiter,
}

/// Longest wait for one Redis call (and the probe's connection attempt).
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// The probe's first and longest pause between reconnection attempts.
const PROBE_BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(5));

impl RedisLimiter {
    /// Fails only on a malformed URL. Connects once, bounded by `REDIS_TIMEOUT`; an
    /// unreachable server leaves the breaker open and the probe retrying.
    pub async fn connect(url: &str, prefix: &str, clock: SharedClock) -> anyhow::Result<Self> {
        let shared = Arc::new(RedisShared {
            client: redis::Client::open(url)?,
            prefix: prefix.to_string(),
            fallback: MemoryLimiter::new(clock.clone()),
            clock,
            script: redis::Script::new(SLIDING_LOG_LUA),
            connection: RwLock::new(None),
            probing: AtomicBool::new(false),
        });
        match shared.open_connection().await {
            Ok(conn) => shared.close_breaker(conn),
            Err(e) => shared.trip(&e),
        }
        Ok(Self { shared })
    }
}

impl RedisShared {
    fn current(&self) -> Option<ConnectionManager> {
        self.connection
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn open_connection(&self) -> Result<ConnectionManager, String> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(0);
        let mut conn = tokio::time::timeout(
            REDIS_TIMEOUT * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| "connection timed out".to_string())?
        .map_err(|e| e.to_string())?;
        let pong: redis::RedisResult<String> =
            tokio::time::timeout(REDIS_TIMEOUT, redis::cmd("PING").query_async(&mut conn))
                .await
                .map_err(|_| "PING timed out".to_string())?;
        pong.map_err(|e| e.to_string())?;
        Ok(conn)
    }

    fn close_breaker(&self, conn: ConnectionManager) {
        *self
            .connection
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(conn);
        tracing::info!("Redis reachable: rate limits are shared");
    }

    /// Opens the breaker (once) and starts the probe that will close it.
    fn trip(self: &Arc<Self>, why: &str) {
        let was_closed = self
            .connection
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .is_some();
        if was_closed {
            tracing::warn!(
                reason = why,
                "Redis unreachable: rate limits fall back to this instance's memory"
            );
        }
        if !self.probing.swap(true, Ordering::AcqRel) {
            tokio::spawn(self.clone().probe());
        }
    }

    /// Reconnects with exponential backoff until Redis answers, then closes the breaker.
    async fn probe(self: Arc<Self>) {
        let (mut pause, longest) = PROBE_BACKOFF;
        loop {
            tokio::time::sleep(pause).await;
            if let Ok(conn) = self.open_connection().await {
                self.close_breaker(conn);
                self.probing.store(false, Ordering::Release);
                return;
            }
            pause = (pause * 2).min(longest);
        }
    }

    async fn hit_redis(
        &self,
        mut conn: ConnectionManager,
        bucket: &str,
        limit: u32,
        window_ms: i64,
    ) -> Result<Decision, String> {
        let now = self.clock.now_ms();
        let member = format!("{now}-{}", orgd_core::ids::random_hex(8));
        let mut invocation = self.script.key(format!("{}rl:{bucket}", self.prefix));
        invocation.arg(now).arg(window_ms).arg(limit).arg(member);
        let call = invocation.invoke_async::<(i64, i64, i64)>(&mut conn);
        let (allowed, count, oldest) = tokio::time::timeout(REDIS_TIMEOUT, call)
            .await
            .map_err(|_| "Redis did not answer in time".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(Decision::from_log(
            limit,
            window_ms,
            now,
            count as u32,
            oldest,
            allowed == 1,
        ))
    }
}

#[async_trait::async_trait]
impl RateLimiter for RedisLimiter {
    async fn hit(&self, bucket: &str, limit: u32, window_ms: i64) -> Decision {
        let shared = &self.shared;
        if let Some(conn) = shared.current() {
            match shared.hit_redis(conn, bucket, limit, window_ms).await {
                Ok(decision) => return decision,
                Err(why) => shared.trip(&why),
            }
        }
        shared.fallback.hit_now(bucket, limit, window_ms)
    }

    async fn shared_store_healthy(&self) -> Option<bool> {
        let shared = &self.shared;
        let Some(mut conn) = shared.current() else {
            return Some(false);
        };
        let pong: redis::RedisResult<String> =
            tokio::time::timeout(REDIS_TIMEOUT, redis::cmd("PING").query_async(&mut conn))
                .await
                .unwrap_or_else(|_| {
                    Err(redis::RedisError::from((redis::ErrorKind::Io, "timeout")))
                });
        if let Err(e) = &pong {
            shared.trip(&e.to_string());
        }
        Some(pong.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orgd_core::clock::{Clock, ManualClock};
    use proptest::prelude::*;

    fn limiter() -> (Arc<ManualClock>, MemoryLimiter) {
        let clock = Arc::new(ManualClock::new(1_000_000));
        (clock.clone(), MemoryLimiter::new(clock))
    }

    #[test]
    fn admits_the_limit_then_refuses_until_the_oldest_leaves() {
        let (clock, rl) = limiter();
        for i in 0..3 {
            let d = rl.hit_now("b", 3, 60_000);
            assert!(d.allowed);
            assert_eq!(d.remaining, 2 - i);
            clock.advance(10);
        }
        let refused = rl.hit_now("b", 3, 60_000);
        assert!(!refused.allowed);
        assert_eq!(refused.reset_at_ms, 1_000_000 + 60_000);
        assert_eq!(refused.retry_after_secs(), 60);
        clock.set(1_000_000 + 60_000);
        assert!(rl.hit_now("b", 3, 60_000).allowed);
        assert!(!rl.hit_now("b", 3, 60_000).allowed);
        assert!(rl.hit_now("other", 3, 60_000).allowed);
    }

    proptest! {
        /// No half-open span of one window ever contains more admitted requests than the limit.
        #[test]
        fn no_window_admits_more_than_the_limit(
            gaps in proptest::collection::vec(0i64..5_000, 1..400),
            limit in 1u32..20,
        ) {
            let (clock, rl) = limiter();
            let window = 10_000;
            let mut admitted = Vec::new();
            for gap in gaps {
                clock.advance(gap);
                if rl.hit_now("k", limit, window).allowed {
                    admitted.push(clock.now_ms());
                }
            }
            for (i, start) in admitted.iter().enumerate() {
                let in_window = admitted[i..].iter().take_while(|&&t| t < start + window).count();
                prop_assert!(in_window <= limit as usize);
            }
        }
    }
}

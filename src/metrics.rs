//! Prometheus metrics at `GET /metrics` (text exposition format 0.0.4): requests and their
//! latency by route template, rate-limit refusals by scope, outbound provider calls by
//! outcome, and the database pool. Labels are only route templates and fixed enums, so no
//! tenant id, user id or secret can reach a scraper and the number of series stays bounded.
//!
//! Recording is a few relaxed atomic adds; the only lock is a read lock on the route map
//! (written once per route template, on its first request).

use foldhash::HashMap;
use std::fmt::{self, Display, Formatter, Write};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use axum::http::Method;

use crate::ratelimit::Scope;
use orgd_core::db::PoolStats;
use orgd_core::outbox::{Backlog, Channel};
use orgd_providers::client::Observer;
use orgd_providers::{Outcome, Provider};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The route label of requests no route matched: raw paths would be unbounded and carry ids.
pub const UNMATCHED: &str = "unmatched";

/// Every metric of one instance (each `AppState` has its own, so test servers never share).
#[derive(Default)]
pub struct Metrics {
    routes: RwLock<HashMap<Box<str>, RouteSeries>>,
    refusals: [AtomicU64; Refusal::ALL.len()],
    provider_calls: [[AtomicU64; Outcome::ALL.len()]; Provider::ALL.len()],
    /// `accept` calls that failed (usually the open-file limit).
    accept_errors: AtomicU64,
    open_connections: AtomicU64,
    deliveries: [[AtomicU64; Delivery::ALL.len()]; Channel::ALL.len()],
}

impl Metrics {
    /// Counts one answered request; `route` is the matched template, `None` when none matched.
    pub fn record_request(
        &self,
        route: Option<&str>,
        method: &Method,
        status: u16,
        elapsed: Duration,
    ) {
        let route = route.unwrap_or(UNMATCHED);
        let record = |series: &RouteSeries| {
            let series = &series.0[method_index(method)];
            series.statuses.add(status);
            series.latency.observe(elapsed);
        };
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = routes.get(route) {
            return record(series);
        }
        drop(routes);
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        record(routes.entry(route.into()).or_default());
    }

    pub fn record_refusal(&self, refusal: Refusal) {
        self.refusals[refusal as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_accept_error(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts the outcome of one outbox row's attempt.
    pub fn record_delivery(&self, channel: Channel, outcome: Delivery) {
        self.deliveries[channel as usize][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The text a scrape gets, with the pool read at scrape time.
    pub fn exposition(&self, pool: PoolStats) -> Exposition<'_> {
        Exposition {
            metrics: self,
            pool,
            backlog: None,
        }
    }
}

/// What became of one outbox row's attempt (`orgd_deliveries_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// Not delivered; another attempt is scheduled.
    Retried,
    /// Not delivered, and no attempt follows.
    Failed,
}

impl Delivery {
    pub const ALL: [Self; 3] = [Self::Delivered, Self::Retried, Self::Failed];

    fn label(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retried => "retried",
            Self::Failed => "failed",
        }
    }
}

/// Why a request was answered 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Api,
    Ingest,
    Auth,
    /// Too many failed logins for one email from one IP (not a bucket, but also a 429).
    LoginLockout,
}

impl Refusal {
    pub const ALL: [Self; 4] = [Self::Api, Self::Ingest, Self::Auth, Self::LoginLockout];

    fn label(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Ingest => "ingest",
            Self::Auth => "auth",
            Self::LoginLockout => "login_lockout",
        }
    }
}

impl From<Scope> for Refusal {
    fn from(scope: Scope) -> Self {
        match scope {
            Scope::Api => Self::Api,
            Scope::Ingest => Self::Ingest,
            Scope::Auth => Self::Auth,
        }
    }
}

/// Every attempt of an outbound call, as the providers' client classified it.
impl Observer for Metrics {
    fn record(&self, provider: Provider, outcome: Outcome) {
        self.provider_calls[provider as usize][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// The providers orgd has a client for: their series are always present, so rates start from
/// a known zero. A provider joins this list together with its client.
const CALLED_PROVIDERS: [Provider; 7] = [
    Provider::Linear,
    Provider::Monday,
    Provider::Slack,
    Provider::Webhook,
    Provider::OpenAI,
    Provider::Anthropic,
    Provider::Gemini,
];

/// Methods with their own label; anything else is counted as `other`.
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other",
];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::PATCH => 3,
        Method::DELETE => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// One route template's series, per method.
#[derive(Default)]
struct RouteSeries([MethodSeries; METHODS.len()]);

#[derive(Default)]
struct MethodSeries {
    statuses: StatusCounts,
    latency: Histogram,
}

/// Distinct status codes counted per (route, method) before the rest go to `other`; a route
/// answers only a handful.
const STATUS_SLOTS: usize = 16;

/// Counters per status code in slots claimed on first use (0 = free), without a lock.
#[derive(Default)]
struct StatusCounts {
    slots: [(AtomicU16, AtomicU64); STATUS_SLOTS],
    other: AtomicU64,
}

impl StatusCounts {
    fn add(&self, status: u16) {
        for (code, count) in &self.slots {
            let owner = match code.load(Ordering::Acquire) {
                0 => match code.compare_exchange(0, status, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => status,
                    Err(claimed) => claimed,
                },
                claimed => claimed,
            };
            if owner == status {
                count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.other.fetch_add(1, Ordering::Relaxed);
    }

    /// (status label, count) in ascending status order, `other` last when used.
    fn snapshot(&self) -> Vec<(String, u64)> {
        let mut counted: Vec<(u16, u64)> = self
            .slots
            .iter()
            .map(|(code, count)| (code.load(Ordering::Acquire), count.load(Ordering::Relaxed)))
            .filter(|&(code, _)| code != 0)
            .collect();
        counted.sort_unstable();
        let mut labelled: Vec<(String, u64)> = counted
            .into_iter()
            .map(|(code, n)| (code.to_string(), n))
            .collect();
        let other = self.other.load(Ordering::Relaxed);
        if other > 0 {
            labelled.push(("other".into(), other));
        }
        labelled
    }
}

/// Upper bounds of the latency buckets, in nanoseconds (1 ms … 10 s).
const BUCKET_BOUNDS_NANOS: [u64; 13] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Per-bucket (not cumulative) counts, the last one above every bound; cumulated when
/// rendered, so `+Inf` and `_count` always agree within a scrape.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKET_BOUNDS_NANOS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // Prometheus buckets are `le`: a value equal to a bound belongs to that bucket.
        let bucket = BUCKET_BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (the last is `+Inf`, the total) and the sum in seconds.
    fn snapshot(&self) -> ([u64; BUCKET_BOUNDS_NANOS.len() + 1], f64) {
        let mut cumulative = [0; BUCKET_BOUNDS_NANOS.len() + 1];
        let mut total = 0;
        for (bucket, out) in self.buckets.iter().zip(&mut cumulative) {
            total += bucket.load(Ordering::Relaxed);
            *out = total;
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (cumulative, sum)
    }
}

/// A label value with `\`, `"` and newlines escaped as the text format requires.
struct Escaped<'a>(&'a str);

impl Display for Escaped<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// One scrape's text.
pub struct Exposition<'a> {
    metrics: &'a Metrics,
    pool: PoolStats,
    /// The outbox as the database holds it (all instances); absent when it could not be read.
    backlog: Option<Backlog>,
}

impl Exposition<'_> {
    pub fn with_backlog(mut self, backlog: Option<Backlog>) -> Self {
        self.backlog = backlog;
        self
    }

    fn deliveries(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let name = "orgd_deliveries_total";
        family(
            f,
            name,
            "counter",
            "Outbox delivery attempts by this instance, by channel and outcome.",
        )?;
        for channel in Channel::ALL {
            for outcome in Delivery::ALL {
                let n = self.metrics.deliveries[channel as usize][outcome as usize]
                    .load(Ordering::Relaxed);
                writeln!(
                    f,
                    "{name}{{channel=\"{}\",outcome=\"{}\"}} {n}",
                    channel.as_str(),
                    outcome.label()
                )?;
            }
        }
        let Some(backlog) = self.backlog else {
            return Ok(());
        };
        let name = "orgd_outbox_pending";
        family(f, name, "gauge", "Outbox rows not yet delivered or failed.")?;
        writeln!(f, "{name} {}", backlog.pending)?;
        let name = "orgd_outbox_oldest_pending_seconds";
        family(
            f,
            name,
            "gauge",
            "How long the longest-due undelivered outbox row has been due.",
        )?;
        writeln!(f, "{name} {}", backlog.oldest_due_ms as f64 / 1000.0)
    }
}

fn family(f: &mut Formatter<'_>, name: &str, kind: &str, help: &str) -> fmt::Result {
    writeln!(f, "# HELP {name} {help}")?;
    writeln!(f, "# TYPE {name} {kind}")
}

impl Exposition<'_> {
    fn http(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let routes = self
            .metrics
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut sorted: Vec<(&str, &RouteSeries)> =
            routes.iter().map(|(r, s)| (r.as_ref(), s)).collect();
        sorted.sort_unstable_by_key(|&(route, _)| route);
        let series = || {
            sorted.iter().flat_map(|&(route, s)| {
                METHODS
                    .iter()
                    .zip(&s.0)
                    .map(move |(method, m)| (Escaped(route), *method, m))
            })
        };

        let requests = "orgd_http_requests_total";
        family(
            f,
            requests,
            "counter",
            "HTTP requests answered, by matched route template, method and status.",
        )?;
        for (route, method, m) in series() {
            for (status, n) in m.statuses.snapshot() {
                writeln!(
                    f,
                    "{requests}{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
                )?;
            }
        }

        let latency = "orgd_http_request_duration_seconds";
        family(
            f,
            latency,
            "histogram",
            "Time to answer HTTP requests, by matched route template and method.",
        )?;
        for (route, method, m) in series() {
            let (cumulative, sum) = m.latency.snapshot();
            let count = cumulative[BUCKET_BOUNDS_NANOS.len()];
            if count == 0 {
                continue;
            }
            let labels = format!("route=\"{route}\",method=\"{method}\"");
            for (bound, n) in BUCKET_BOUNDS_NANOS.iter().zip(cumulative) {
                let le = *bound as f64 / 1e9;
                writeln!(f, "{latency}_bucket{{{labels},le=\"{le}\"}} {n}")?;
            }
            writeln!(f, "{latency}_bucket{{{labels},le=\"+Inf\"}} {count}")?;
            writeln!(f, "{latency}_sum{{{labels}}} {sum}")?;
            writeln!(f, "{latency}_count{{{labels}}} {count}")?;
        }
        Ok(())
    }

    fn connections(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let name = "orgd_http_open_connections";
        family(f, name, "gauge", "Client connections open right now.")?;
        let open = self.metrics.open_connections.load(Ordering::Relaxed);
        writeln!(f, "{name} {open}")?;
        let name = "orgd_http_accept_errors_total";
        family(
            f,
            name,
            "counter",
            "Connections that could not be accepted (e.g. the open-file limit was reached).",
        )?;
        let failed = self.metrics.accept_errors.load(Ordering::Relaxed);
        writeln!(f, "{name} {failed}")
    }

    fn refusals(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let name = "orgd_rate_limit_refusals_total";
        family(
            f,
            name,
            "counter",
            "Requests refused with 429, by rate-limit scope or login lockout.",
        )?;
        for refusal in Refusal::ALL {
            let n = self.metrics.refusals[refusal as usize].load(Ordering::Relaxed);
            writeln!(f, "{name}{{scope=\"{}\"}} {n}", refusal.label())?;
        }
        Ok(())
    }

    fn provider_calls(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let name = "orgd_provider_calls_total";
        family(
            f,
            name,
            "counter",
            "Outbound HTTP calls to ticket trackers and AI providers (each attempt), by outcome.",
        )?;
        for provider in CALLED_PROVIDERS {
            for outcome in Outcome::ALL {
                let n = self.metrics.provider_calls[provider as usize][outcome as usize]
                    .load(Ordering::Relaxed);
                writeln!(
                    f,
                    "{name}{{provider=\"{}\",outcome=\"{}\"}} {n}",
                    provider.label(),
                    outcome.label()
                )?;
            }
        }
        Ok(())
    }

    fn pool(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let PoolStats { open, idle, max } = self.pool;
        let name = "orgd_db_pool_connections";
        family(
            f,
            name,
            "gauge",
            "Open database connections in the pool, by state.",
        )?;
        writeln!(f, "{name}{{state=\"idle\"}} {idle}")?;
        writeln!(
            f,
            "{name}{{state=\"in_use\"}} {}",
            open.saturating_sub(idle)
        )?;
        let name = "orgd_db_pool_max_connections";
        family(
            f,
            name,
            "gauge",
            "Most database connections the pool opens.",
        )?;
        writeln!(f, "{name} {max}")
    }
}

impl Display for Exposition<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        self.http(f)?;
        self.connections(f)?;
        self.refusals(f)?;
        self.provider_calls(f)?;
        self.deliveries(f)?;
        self.pool(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: PoolStats = PoolStats {
        open: 3,
        idle: 2,
        max: 8,
    };

    fn lines(metrics: &Metrics) -> Vec<String> {
        metrics
            .exposition(POOL)
            .to_string()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn bucket_counts(h: &Histogram) -> Vec<u64> {
        h.snapshot().0.to_vec()
    }

    #[test]
    fn a_value_on_a_bound_is_in_that_bucket_and_buckets_cumulate() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_nanos(1_000_001));
        h.observe(Duration::ZERO);
        h.observe(Duration::from_secs(10));
        h.observe(Duration::from_secs(11));
        assert_eq!(
            bucket_counts(&h),
            [2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 5]
        );
        assert!((h.snapshot().1 - 21.002000001).abs() < 1e-9);

        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(250));
        h.observe(Duration::from_micros(1500));
        assert_eq!(
            bucket_counts(&h),
            [0, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3]
        );
        assert!((h.snapshot().1 - 0.2545).abs() < 1e-12);
    }

    #[test]
    fn renders_the_exposition_format() {
        let m = Metrics::default();
        m.record_request(
            Some("/api/users/{id}"),
            &Method::GET,
            404,
            Duration::from_millis(2),
        );
        m.record_request(
            Some("/api/users/{id}"),
            &Method::GET,
            200,
            Duration::from_millis(20),
        );
        m.record_request(
            Some("/api/users/{id}"),
            &Method::GET,
            200,
            Duration::from_millis(20),
        );
        m.record_request(
            None,
            &Method::from_bytes(b"BREW").unwrap(),
            404,
            Duration::ZERO,
        );
        m.record_refusal(Refusal::Ingest);
        m.record_refusal(Scope::Auth.into());
        m.record(Provider::Monday, Outcome::RateLimited);
        m.record(Provider::Gemini, Outcome::Ok);
        let text = m.exposition(POOL).to_string();
        let expected = r#"# HELP orgd_http_requests_total HTTP requests answered, by matched route template, method and status.
# TYPE orgd_http_requests_total counter
orgd_http_requests_total{route="/api/users/{id}",method="GET",status="200"} 2
orgd_http_requests_total{route="/api/users/{id}",method="GET",status="404"} 1
orgd_http_requests_total{route="unmatched",method="other",status="404"} 1
# HELP orgd_http_request_duration_seconds Time to answer HTTP requests, by matched route template and method.
# TYPE orgd_http_request_duration_seconds histogram
orgd_http_request_duration_seconds_bucket{route="/api/users/{id}",method="GET",le="0.001"} 0
orgd_http_request_duration_seconds_bucket{route="/api/users/{id}",method="GET",le="0.0025"} 1
orgd_http_request_duration_seconds_bucket{route="/api/users/{id}",method="GET",le="0.005"} 1
orgd_http_request_duration_seconds_bucket{route="/api/users/{id}",method="GET",le="0.01"} 1
orgd_http_request_duration_seconds_bucket{route="/api/users/{id}",method="GET",le="0.025"} 3
orgd_http_request_duration_seconds_bucket{route="/api/users/{id}",method="GET",le="0.05"} 3
orgd_http_request_duration_seconds_bucket{route="/api/users/{id}",method="GET",le="0.1"} 3
orgd_http_request_duration_seconds_bucket{route="/api/users/{id}",method="GET",le="0.25"} 3
orgd_http_request_duration_seconds_bucket{route="/api/users/{id}",method="GET",le="0.5"} 3
orgd_http_request_duration_seconds_bucket{route="/api/users/{id}",method="GET",le="1"} 3
orgd_http_request_duration_seconds_bucket{route="/api/users/{id}",method="GET",le="2.5"} 3
orgd_http_request_duration_seconds_bucket{route="/api/users/{id}",method="GET",le="5"} 3
orgd_http_request_duration_seconds_bucket{route="/api/users/{id}",method="GET",le="10"} 3
orgd_http_request_duration_seconds_bucket{route="/api/users/{id}",method="GET",le="+Inf"} 3
orgd_http_request_duration_seconds_sum{route="/api/users/{id}",method="GET"} 0.042
orgd_http_request_duration_seconds_count{route="/api/users/{id}",method="GET"} 3
orgd_http_request_duration_seconds_bucket{route="unmatched",method="other",le="0.001"} 1
"#;
        assert!(text.starts_with(expected), "{text}");
        for line in [
            "orgd_http_request_duration_seconds_count{route=\"unmatched\",method=\"other\"} 1",
            "orgd_rate_limit_refusals_total{scope=\"api\"} 0",
            "orgd_rate_limit_refusals_total{scope=\"ingest\"} 1",
            "orgd_rate_limit_refusals_total{scope=\"auth\"} 1",
            "orgd_rate_limit_refusals_total{scope=\"login_lockout\"} 0",
            "orgd_provider_calls_total{provider=\"monday\",outcome=\"rate_limited\"} 1",
            "orgd_provider_calls_total{provider=\"gemini\",outcome=\"ok\"} 1",
            "orgd_provider_calls_total{provider=\"linear\",outcome=\"ok\"} 0",
            "orgd_db_pool_connections{state=\"idle\"} 2",
            "orgd_db_pool_connections{state=\"in_use\"} 1",
            "orgd_db_pool_max_connections 8",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        // Every provider × outcome is always present, so rates start from a known zero.
        let calls = lines(&m)
            .iter()
            .filter(|l| l.starts_with("orgd_provider_calls_total{"))
            .count();
        assert_eq!(calls, CALLED_PROVIDERS.len() * Outcome::ALL.len());
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn methods_without_requests_have_no_series() {
        let m = Metrics::default();
        m.record_request(Some("/health"), &Method::GET, 200, Duration::ZERO);
        let text = lines(&m).join("\n");
        assert!(!text.contains("method=\"POST\""), "{text}");
        assert_eq!(text.matches("_count{route=\"/health\"").count(), 1);
    }

    #[test]
    fn statuses_beyond_the_slots_are_counted_as_other() {
        let counts = StatusCounts::default();
        for status in 200..200 + STATUS_SLOTS as u16 + 2 {
            counts.add(status);
        }
        counts.add(200);
        let snapshot = counts.snapshot();
        assert_eq!(snapshot.len(), STATUS_SLOTS + 1);
        assert_eq!(snapshot[0], ("200".to_string(), 2));
        assert_eq!(snapshot[STATUS_SLOTS], ("other".to_string(), 2));
    }

    #[test]
    fn concurrent_first_uses_of_a_status_share_one_slot() {
        let counts = std::sync::Arc::new(StatusCounts::default());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let counts = counts.clone();
                std::thread::spawn(move || {
                    for n in 0..1000 {
                        counts.add(if n % 2 == 0 { 200 } else { 500 + i });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let snapshot = counts.snapshot();
        assert_eq!(snapshot[0], ("200".to_string(), 2000));
        assert_eq!(snapshot.iter().map(|(_, n)| n).sum::<u64>(), 4000);
        assert_eq!(snapshot.len(), 5);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            Escaped("a\"b\\c\nd").to_string(),
            "a\\\"b\\\\c\\nd".to_string()
        );
    }
}

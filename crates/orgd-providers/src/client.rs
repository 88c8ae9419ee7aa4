//! The one outbound HTTP client every provider shares (`reference/outbound-apis.md` §0): one
//! connection pool with its timeouts, the classes every failure falls into, the one retry
//! rule, and the hooks for metrics (`Observer`) and time (`Clock`). Customer-supplied URLs
//! (webhooks, self-managed GitLab, GitHub Enterprise) go through a second, guarded pool
//! (`Client::guarded`, §8) that shares everything else: the same `send`, classes and retries.

use std::error::Error as _;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{IntoUrl, Method, RequestBuilder, StatusCode};
use serde_json::Value;

use crate::ssrf::{self, UrlPolicy, UrlRefusal};

/// Everyone orgd sends requests to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Linear,
    Monday,
    Jira,
    GitHub,
    GitLab,
    AzureDevOps,
    Bitbucket,
    Slack,
    /// A customer's own signed webhook.
    Webhook,
    OpenAI,
    Anthropic,
    Gemini,
}

impl Provider {
    pub const ALL: [Self; 12] = [
        Self::Linear,
        Self::Monday,
        Self::Jira,
        Self::GitHub,
        Self::GitLab,
        Self::AzureDevOps,
        Self::Bitbucket,
        Self::Slack,
        Self::Webhook,
        Self::OpenAI,
        Self::Anthropic,
        Self::Gemini,
    ];

    /// The `provider` label of `orgd_provider_calls_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::Monday => "monday",
            Self::Jira => "jira",
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
            Self::AzureDevOps => "azuredevops",
            Self::Bitbucket => "bitbucket",
            Self::Slack => "slack",
            Self::Webhook => "webhook",
            Self::OpenAI => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
        }
    }

    /// The name people know it by, as our messages write it.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Linear => "Linear",
            Self::Monday => "Monday.com",
            Self::Jira => "Jira",
            Self::GitHub => "GitHub",
            Self::GitLab => "GitLab",
            Self::AzureDevOps => "Azure DevOps",
            Self::Bitbucket => "Bitbucket",
            Self::Slack => "Slack",
            Self::Webhook => "Webhook",
            Self::OpenAI => "OpenAI",
            Self::Anthropic => "Anthropic",
            Self::Gemini => "Gemini",
        }
    }
}

/// How one attempt ended, as the client classified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The provider refused the request: credentials, unknown ids, invalid input, quota.
    ClientError,
    RateLimited,
    /// The provider failed or was overloaded (5xx, gateway errors, its internal errors).
    ServerError,
    /// No answer: connection failed, timed out or was cut.
    Unreachable,
}

impl Outcome {
    pub const ALL: [Self; 5] = [
        Self::Ok,
        Self::ClientError,
        Self::RateLimited,
        Self::ServerError,
        Self::Unreachable,
    ];

    /// The `outcome` label of `orgd_provider_calls_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ClientError => "client_error",
            Self::RateLimited => "rate_limited",
            Self::ServerError => "server_error",
            Self::Unreachable => "unreachable",
        }
    }
}

/// Told about every attempt (the service counts them in its metrics).
pub trait Observer: Send + Sync {
    fn record(&self, provider: Provider, outcome: Outcome);
}

/// "Now" in milliseconds since the Unix epoch: rate-limit resets are given as instants.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Everything a provider call can fail with, in our words (never the provider's body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The key or token was refused (or lacks permission).
    #[error("credentials refused")]
    InvalidCredentials,
    /// Something the request named does not exist: `team`, `board`, `group`, `model`, ...
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The provider refused the request itself (invalid input, an account out of credit or
    /// quota); repeating it unchanged gets the same answer. The reason is ours.
    #[error("request refused ({0})")]
    Refused(&'static str),
    /// Too large for the provider: a model's context window, HTTP 413.
    #[error("request too large")]
    TooLarge,
    /// Rejected before it ran; safe to repeat after `retry_after_secs`. `inline` is false
    /// for limits that will not clear soon (Monday.com's daily limit).
    #[error("rate limited for {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64, inline: bool },
    /// A transient refusal worth repeating after a backoff (overloaded, 5xx of an API whose
    /// requests have no effect besides their answer).
    #[error("overloaded")]
    Overloaded,
    /// No usable answer arrived.
    #[error("unreachable ({})", .0.reason())]
    Unreachable(Unreached),
    /// The provider answered with an error. `transient` for its server-side failures, which
    /// may have carried the request out.
    #[error("provider error ({reason})")]
    Failed { reason: String, transient: bool },
}

/// Why no usable answer arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreached {
    /// Nothing accepted the connection (nothing listens there, or the host is down), or the
    /// request could not even be built: it never left, and would fail the same way again.
    ConnectionRefused,
    /// Connecting failed otherwise (name lookup, TLS, connect timeout): it never left.
    ConnectFailed,
    /// Sent, but the answer did not arrive within the timeout.
    TimedOut,
    /// Sent, but the connection broke before the answer was complete.
    Interrupted,
    /// Sent, but the connection was reset before any answer arrived.
    Reset,
    /// The status line and headers arrived, the body did not: the connection broke, or the
    /// timeout fired (`timed_out`) while it was still arriving. The provider did answer
    /// `status`, so a request it accepted may have been carried out.
    Truncated { status: u16, timed_out: bool },
    /// A gateway in front of the provider answered 502, 503 or 504 after the request reached it.
    Gateway,
    /// The address rules for customer-supplied URLs refused the destination: it never left.
    Blocked(UrlRefusal),
}

impl Unreached {
    /// False when the request certainly never left, so it had no effect.
    pub fn sent(self) -> bool {
        !matches!(
            self,
            Self::ConnectionRefused | Self::ConnectFailed | Self::Blocked(_)
        )
    }

    /// In our words. A reset or a cut-off body reads like any other interruption (and a body
    /// still arriving at the timeout like a timeout); callers that tell them apart (webhook
    /// deliveries, tracker answers) match the variant.
    pub fn reason(self) -> &'static str {
        match self {
            Self::ConnectionRefused | Self::ConnectFailed => "connection failed",
            Self::TimedOut
            | Self::Truncated {
                timed_out: true, ..
            } => "timed out",
            Self::Interrupted
            | Self::Reset
            | Self::Truncated {
                timed_out: false, ..
            } => "connection interrupted",
            Self::Gateway => "gateway error",
            Self::Blocked(refusal) => refusal.reason(),
        }
    }
}

impl ProviderError {
    /// True when a request that failed this way may have been carried out anyway.
    pub fn maybe_applied(&self) -> bool {
        match self {
            Self::Unreachable(unreached) => unreached.sent(),
            Self::Failed { transient, .. } => *transient,
            _ => false,
        }
    }

    /// True when the provider itself answered (with any status).
    pub fn reached_provider(&self) -> bool {
        !matches!(self, Self::Unreachable(_))
    }

    /// The least wait before sending a request again after its `attempt`-th attempt (from 1)
    /// failed this way, or `None` when it must not be sent again.
    fn retry_floor(&self, attempt: u32, repeat: Repeat) -> Option<Duration> {
        if attempt >= MAX_ATTEMPTS {
            return None;
        }
        match self {
            Self::RateLimited {
                retry_after_secs,
                inline: true,
            } if *retry_after_secs <= MAX_INLINE_WAIT_SECS => {
                Some(Duration::from_secs(*retry_after_secs).max(backoff(attempt)))
            }
            Self::Overloaded | Self::Unreachable(Unreached::ConnectFailed) => {
                Some(backoff(attempt))
            }
            e if repeat == Repeat::Idempotent && e.maybe_applied() => Some(backoff(attempt)),
            _ => None,
        }
    }
}

/// Whether a request may be sent again after a failure that may have carried it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Only after failures that show it had no effect: a second copy could be a duplicate.
    IfNotApplied,
    /// Also after failures that may have carried it out: the request names its own id, so
    /// the provider refuses a second copy (Linear's `issueCreate`). After each failure the
    /// caller looks for a copy that may exist.
    Idempotent,
}

/// A rate limit that clears within this many seconds is waited out inside the request.
pub const MAX_INLINE_WAIT_SECS: u64 = 5;
/// Attempts per provider operation, the first included.
pub const MAX_ATTEMPTS: u32 = 3;
/// Jitter adds up to this share to every wait, so callers refused together do not all come
/// back at the same instant.
const JITTER: f64 = 0.25;

/// 250 ms, doubling per attempt (capped at 4 s).
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 * 2u64.pow(attempt.saturating_sub(1).min(4)))
}

/// `floor` plus `unit` (in `[0, 1]`) of the jitter.
fn jittered(floor: Duration, unit: f64) -> Duration {
    floor + floor.mul_f64(JITTER * unit.clamp(0.0, 1.0))
}

/// The one retry rule: how long to wait before sending a request again after its
/// `attempt`-th attempt (from 1) failed with `error`, or `None` when it must not be sent
/// again. Only rate limits that clear within `MAX_INLINE_WAIT_SECS` (waited for at least
/// their `Retry-After`), overloads, and connections that failed before anything was sent are
/// repeated (plus, for `Repeat::Idempotent`, failures that may have been carried out), with
/// exponential backoff and jitter, for at most `MAX_ATTEMPTS` attempts. A refused connection
/// is not repeated: nothing listens there, which a second later is still true.
pub fn retry_delay(error: &ProviderError, attempt: u32, repeat: Repeat) -> Option<Duration> {
    error
        .retry_floor(attempt, repeat)
        .map(|floor| jittered(floor, rand::random()))
}

/// Runs `attempt` (one or more `Client::send`s) until it succeeds or `retry_delay` says stop.
pub async fn with_retries<T, F, Fut>(repeat: Repeat, mut attempt: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let mut attempts = 1;
    loop {
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let Some(delay) = retry_delay(&error, attempts, repeat) else {
            return Err(error);
        };
        tracing::info!(%error, attempt = attempts, ?delay, "provider call failed; retrying");
        tokio::time::sleep(delay).await;
        attempts += 1;
    }
}

/// A provider's HTTP answer: status, headers, the JSON body (`Null` when not JSON) and the
/// same body as text (Slack answers in plain text), both as far as the client reads answers.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    /// A header's value, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// An HTML page (a sign-in page, a proxy's error page) rather than the API's answer.
    pub fn is_html(&self) -> bool {
        self.header(CONTENT_TYPE.as_str())
            .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"))
    }
}

const USER_AGENT: &str = concat!("orgd/", env!("CARGO_PKG_VERSION"));

/// The shared client: one connection pool, the observer every attempt is reported to, and
/// the clock. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    observer: Arc<dyn Observer>,
    clock: Clock,
    /// The address rules every request is checked against: set on the guarded client only.
    guard: Option<Arc<UrlPolicy>>,
    /// The most of an answer's body that is read; the rest is never downloaded.
    answer_limit: usize,
}

impl Client {
    /// Every request gets `timeout`, connecting at most 5 s of it. Redirects are not followed:
    /// no provider API redirects a call, and a redirect must not carry credentials elsewhere.
    pub fn new(
        timeout: Duration,
        observer: Arc<dyn Observer>,
        clock: Clock,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .build()?;
        Ok(Self {
            http,
            observer,
            clock,
            guard: None,
            answer_limit: usize::MAX,
        })
    }

    /// The client for customer-supplied URLs (webhooks, self-managed GitLab, GitHub
    /// Enterprise): its own pool, whose resolver connects only to addresses `policy` allows,
    /// with every request's URL checked before it is sent (`UrlPolicy::check_before_send`),
    /// no redirects, no proxy, and at most `answer_limit` bytes of any answer read (a host we
    /// do not run must not make us download without end). Everything else is `Client`'s: the
    /// same `send`, failure classes, retry rule and observer.
    pub fn guarded(
        policy: &UrlPolicy,
        timeout: Duration,
        answer_limit: usize,
        observer: Arc<dyn Observer>,
        clock: Clock,
    ) -> Result<Self, reqwest::Error> {
        let http = ssrf::client_builder(policy, timeout)
            .user_agent(USER_AGENT)
            .build()?;
        Ok(Self {
            http,
            observer,
            clock,
            guard: Some(Arc::new(policy.clone())),
            answer_limit,
        })
    }

    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    pub fn post(&self, url: impl IntoUrl) -> RequestBuilder {
        self.http.post(url)
    }

    pub fn request(&self, method: Method, url: impl IntoUrl) -> RequestBuilder {
        self.http.request(method, url)
    }

    /// Sends `request` once and reads the answer with the provider's `classify`; the
    /// attempt is reported to the observer.
    pub async fn send<T>(
        &self,
        provider: Provider,
        request: RequestBuilder,
        classify: impl FnOnce(&Answer) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        self.exchange(provider, request, |answer| {
            let result = classify(answer);
            (answered_outcome(&result), result)
        })
        .await
        .map_err(ProviderError::Unreachable)?
    }

    /// Sends `request` once; `read` makes the caller's own result of the answer (Slack's and
    /// webhook receivers' answers are not provider errors) and says how the attempt counts.
    /// A request that got no answer fails with why. The attempt is reported to the observer.
    pub async fn exchange<R>(
        &self,
        provider: Provider,
        request: RequestBuilder,
        read: impl FnOnce(&Answer) -> (Outcome, R),
    ) -> Result<R, Unreached> {
        let (outcome, result) = match self.receive(request).await {
            Ok(answer) => {
                let (outcome, result) = read(&answer);
                (outcome, Ok(result))
            }
            Err(e) => (Outcome::Unreachable, Err(e)),
        };
        self.observer.record(provider, outcome);
        result
    }

    async fn receive(&self, request: RequestBuilder) -> Result<Answer, Unreached> {
        // Sent through this client's own pool whichever built it: on the guarded client, the
        // pool whose resolver applies the address rules.
        let request = request.build_split().1.map_err(transport_error)?;
        if let Some(policy) = &self.guard {
            policy
                .check_before_send(request.url())
                .await
                .map_err(Unreached::Blocked)?;
        }
        let mut response = self.http.execute(request).await.map_err(transport_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = ssrf::read_capped(&mut response, self.answer_limit)
            .await
            .map_err(|e| truncated(status, e))?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            headers,
            body,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
}

/// The outcome of an attempt the provider answered (a gateway error is its failure too).
fn answered_outcome<T>(result: &Result<T, ProviderError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(ProviderError::RateLimited { .. }) => Outcome::RateLimited,
        Err(
            ProviderError::Overloaded
            | ProviderError::Unreachable(_)
            | ProviderError::Failed {
                transient: true, ..
            },
        ) => Outcome::ServerError,
        Err(
            ProviderError::InvalidCredentials
            | ProviderError::NotFound(_)
            | ProviderError::Refused(_)
            | ProviderError::TooLarge
            | ProviderError::Failed {
                transient: false, ..
            },
        ) => Outcome::ClientError,
    }
}

fn transport_error(e: reqwest::Error) -> Unreached {
    let causes = || std::iter::successors(e.source(), |&cause| cause.source());
    let io_error = |kind: io::ErrorKind| {
        causes().any(|cause| {
            cause
                .downcast_ref::<io::Error>()
                .is_some_and(|io| io.kind() == kind)
        })
    };
    // The guarded client's resolver found no address it may connect to. (A name that does
    // not resolve fails like any other connection.)
    let blocked = || {
        causes()
            .any(|cause| cause.downcast_ref::<UrlRefusal>() == Some(&UrlRefusal::PrivateAddress))
    };
    if e.is_builder() || (e.is_connect() && io_error(io::ErrorKind::ConnectionRefused)) {
        Unreached::ConnectionRefused
    } else if e.is_connect() && blocked() {
        Unreached::Blocked(UrlRefusal::PrivateAddress)
    } else if e.is_connect() {
        Unreached::ConnectFailed
    } else if e.is_timeout() {
        Unreached::TimedOut
    } else if io_error(io::ErrorKind::ConnectionReset) {
        Unreached::Reset
    } else {
        Unreached::Interrupted
    }
}

/// The failure of an answer whose head (`status`) arrived but whose body did not.
fn truncated(status: StatusCode, e: reqwest::Error) -> Unreached {
    let status = status.as_u16();
    match transport_error(e) {
        Unreached::TimedOut => Unreached::Truncated {
            status,
            timed_out: true,
        },
        Unreached::Interrupted | Unreached::Reset => Unreached::Truncated {
            status,
            timed_out: false,
        },
        other => other,
    }
}

/// Seconds to wait from `retry-after-ms` or `retry-after` (seconds, rounded up; the
/// HTTP-date form is not used by these providers).
pub fn retry_after(headers: &HeaderMap) -> Option<u64> {
    let header = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    header("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| header("retry-after"))
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| s.ceil() as u64)
}

/// The failure for an HTTP status that carried no more specific error, for an API whose
/// server errors may have carried the request out.
pub fn status_failure(status: StatusCode) -> ProviderError {
    match status.as_u16() {
        502..=504 => ProviderError::Unreachable(Unreached::Gateway),
        code => ProviderError::Failed {
            reason: format!("HTTP {code}"),
            transient: status.is_server_error(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn limited(retry_after_secs: u64, inline: bool) -> ProviderError {
        ProviderError::RateLimited {
            retry_after_secs,
            inline,
        }
    }

    fn floor(error: &ProviderError, attempt: u32) -> Option<Duration> {
        error.retry_floor(attempt, Repeat::IfNotApplied)
    }

    #[test]
    fn only_short_limits_overloads_and_unsent_requests_are_retried() {
        let ms = Duration::from_millis;
        // Retry-After is honoured, and never undercut by the backoff.
        assert_eq!(floor(&limited(1, true), 1), Some(ms(1000)));
        assert_eq!(floor(&limited(5, true), 2), Some(ms(5000)));
        assert_eq!(floor(&limited(0, true), 1), Some(ms(250)));
        assert_eq!(floor(&limited(0, true), 2), Some(ms(500)));
        assert_eq!(floor(&limited(6, true), 1), None);
        assert_eq!(floor(&limited(1, false), 1), None);
        assert_eq!(floor(&ProviderError::Overloaded, 1), Some(ms(250)));
        assert_eq!(floor(&ProviderError::Overloaded, 2), Some(ms(500)));
        let connect = ProviderError::Unreachable(Unreached::ConnectFailed);
        assert_eq!(floor(&connect, 1), Some(ms(250)));

        let never = [
            ProviderError::InvalidCredentials,
            ProviderError::NotFound("team"),
            ProviderError::Refused("invalid request"),
            ProviderError::TooLarge,
            ProviderError::Unreachable(Unreached::ConnectionRefused),
            ProviderError::Unreachable(Unreached::TimedOut),
            ProviderError::Unreachable(Unreached::Interrupted),
            ProviderError::Unreachable(Unreached::Gateway),
            ProviderError::Failed {
                reason: "x".into(),
                transient: true,
            },
            ProviderError::Failed {
                reason: "x".into(),
                transient: false,
            },
        ];
        for error in &never {
            assert_eq!(floor(error, 1), None, "{error:?}");
        }
    }

    #[test]
    fn idempotent_requests_are_also_repeated_after_failures_that_may_have_run() {
        let idempotent = |e: &ProviderError| e.retry_floor(1, Repeat::Idempotent);
        let timed_out = ProviderError::Unreachable(Unreached::TimedOut);
        let server = ProviderError::Failed {
            reason: "x".into(),
            transient: true,
        };
        assert!(timed_out.maybe_applied() && server.maybe_applied());
        assert_eq!(idempotent(&timed_out), Some(Duration::from_millis(250)));
        assert_eq!(idempotent(&server), Some(Duration::from_millis(250)));
        assert_eq!(idempotent(&ProviderError::InvalidCredentials), None);
        assert_eq!(idempotent(&limited(60, true)), None);
        assert!(!ProviderError::Unreachable(Unreached::ConnectionRefused).maybe_applied());
        assert!(!ProviderError::Overloaded.maybe_applied());
    }

    #[test]
    fn at_most_three_attempts_with_doubling_backoff() {
        let e = ProviderError::Overloaded;
        assert!(floor(&e, MAX_ATTEMPTS - 1).is_some());
        assert_eq!(floor(&e, MAX_ATTEMPTS), None);
        assert_eq!(retry_delay(&e, MAX_ATTEMPTS, Repeat::Idempotent), None);
        assert_eq!(backoff(3), Duration::from_millis(1000));
        assert_eq!(backoff(9), Duration::from_secs(4));
    }

    #[test]
    fn jitter_only_adds_up_to_a_quarter() {
        let floor = Duration::from_millis(1000);
        assert_eq!(jittered(floor, 0.0), floor);
        assert_eq!(jittered(floor, 1.0), Duration::from_millis(1250));
        assert_eq!(jittered(floor, 7.0), Duration::from_millis(1250));
        let delays: Vec<Duration> = (0..500)
            .filter_map(|_| retry_delay(&limited(1, true), 1, Repeat::IfNotApplied))
            .collect();
        assert_eq!(delays.len(), 500);
        assert!(delays.iter().all(|d| (floor..=floor * 5 / 4).contains(d)));
        assert!(
            delays.iter().any(|d| *d != delays[0]),
            "the waits are spread"
        );
    }

    /// Runs `with_retries` over `errors` (then success), returning attempts and time waited.
    async fn run(repeat: Repeat, errors: Vec<ProviderError>) -> (u32, Duration, bool) {
        let calls = AtomicU32::new(0);
        let errors = Mutex::new(errors.into_iter());
        let started = tokio::time::Instant::now();
        let result = with_retries(repeat, || {
            calls.fetch_add(1, Ordering::SeqCst);
            let next = errors.lock().unwrap().next();
            async move { next.map_or(Ok(()), Err) }
        })
        .await;
        (calls.into_inner(), started.elapsed(), result.is_ok())
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_waits_and_stops_as_the_rule_says() {
        let overloaded = vec![ProviderError::Overloaded; 5];
        let (calls, waited, ok) = run(Repeat::IfNotApplied, overloaded).await;
        assert_eq!((calls, ok), (3, false));
        let least = Duration::from_millis(250 + 500);
        assert!((least..=least * 5 / 4).contains(&waited), "{waited:?}");

        let (calls, waited, ok) = run(Repeat::IfNotApplied, vec![limited(2, true)]).await;
        assert_eq!((calls, ok), (2, true));
        assert!(waited >= Duration::from_secs(2), "{waited:?}");

        let refused = vec![ProviderError::Unreachable(Unreached::ConnectionRefused)];
        assert_eq!(
            run(Repeat::IfNotApplied, refused).await,
            (1, Duration::ZERO, false)
        );
        let timed_out = vec![ProviderError::Unreachable(Unreached::TimedOut)];
        assert_eq!(run(Repeat::IfNotApplied, timed_out.clone()).await.0, 1);
        assert_eq!(run(Repeat::Idempotent, timed_out).await.0, 2);
    }

    #[test]
    fn statuses_and_retry_after_headers() {
        assert_eq!(
            status_failure(StatusCode::BAD_GATEWAY),
            ProviderError::Unreachable(Unreached::Gateway)
        );
        assert_eq!(
            status_failure(StatusCode::INTERNAL_SERVER_ERROR),
            ProviderError::Failed {
                reason: "HTTP 500".into(),
                transient: true
            }
        );
        assert_eq!(
            status_failure(StatusCode::IM_A_TEAPOT),
            ProviderError::Failed {
                reason: "HTTP 418".into(),
                transient: false
            }
        );
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(2));
        h.insert("retry-after", "1.2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(2));
        h.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(retry_after(&h), Some(2));
        h.insert("retry-after-ms", "-1".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn answers_are_counted_by_class() {
        let outcome = |e: ProviderError| answered_outcome::<()>(&Err(e));
        assert_eq!(answered_outcome(&Ok(())), Outcome::Ok);
        assert_eq!(outcome(limited(1, false)), Outcome::RateLimited);
        assert_eq!(outcome(ProviderError::Overloaded), Outcome::ServerError);
        assert_eq!(
            outcome(ProviderError::Unreachable(Unreached::Gateway)),
            Outcome::ServerError
        );
        assert_eq!(outcome(ProviderError::TooLarge), Outcome::ClientError);
        assert_eq!(
            outcome(ProviderError::NotFound("model")),
            Outcome::ClientError
        );
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(Provider, Outcome)>>);

    impl Observer for Recorder {
        fn record(&self, provider: Provider, outcome: Outcome) {
            self.0.lock().unwrap().push((provider, outcome));
        }
    }

    fn client(timeout: Duration) -> (Client, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        let client = Client::new(timeout, recorder.clone(), Arc::new(|| 42)).unwrap();
        (client, recorder)
    }

    /// A loopback address, and the listener keeping it open (dropped: nothing listens).
    fn listener() -> (std::net::TcpListener, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        (listener, url)
    }

    async fn send_once(client: &Client, url: &str) -> Result<(), ProviderError> {
        client
            .send(Provider::Gemini, client.post(url), |_| Ok(()))
            .await
    }

    #[tokio::test]
    async fn transport_failures_are_told_apart_and_counted() {
        let (client, recorder) = client(Duration::from_millis(300));
        assert_eq!(client.now_ms(), 42);
        let closed = listener().1;
        assert_eq!(
            send_once(&client, &closed).await,
            Err(ProviderError::Unreachable(Unreached::ConnectionRefused))
        );
        // The kernel accepts the connection; nobody ever answers.
        let (silent, url) = listener();
        assert_eq!(
            send_once(&client, &url).await,
            Err(ProviderError::Unreachable(Unreached::TimedOut))
        );
        drop(silent);
        // Accepted, then closed without an answer: with the request unread or arriving after
        // the close, the kernel answers with a reset, which reads as any interruption.
        let (hanging_up, url) = listener();
        let closer = std::thread::spawn(move || drop(hanging_up.accept()));
        let hung_up = send_once(&client, &url).await;
        assert!(
            matches!(
                hung_up,
                Err(ProviderError::Unreachable(
                    Unreached::Interrupted | Unreached::Reset
                ))
            ),
            "{hung_up:?}"
        );
        assert_eq!(
            hung_up.unwrap_err().to_string(),
            "unreachable (connection interrupted)"
        );
        closer.join().unwrap();
        assert_eq!(
            *recorder.0.lock().unwrap(),
            vec![(Provider::Gemini, Outcome::Unreachable); 3]
        );
        let bad_header = client.post(&closed).header("x-api-key", "line\nbreak");
        let built = client.send(Provider::OpenAI, bad_header, |_| Ok(())).await;
        assert_eq!(
            built,
            Err(ProviderError::Unreachable(Unreached::ConnectionRefused))
        );
    }

    #[test]
    fn refined_failures_read_and_repeat_as_before() {
        let cut = Unreached::Truncated {
            status: 201,
            timed_out: false,
        };
        let slow = Unreached::Truncated {
            status: 200,
            timed_out: true,
        };
        assert_eq!(Unreached::Reset.reason(), Unreached::Interrupted.reason());
        assert_eq!(cut.reason(), Unreached::Interrupted.reason());
        assert_eq!(slow.reason(), Unreached::TimedOut.reason());
        for sent in [Unreached::Reset, cut, slow] {
            let error = ProviderError::Unreachable(sent);
            assert!(error.maybe_applied(), "{sent:?}");
            assert_eq!(floor(&error, 1), None, "{sent:?}");
            assert!(
                error.retry_floor(1, Repeat::Idempotent).is_some(),
                "{sent:?}"
            );
        }
        let blocked = ProviderError::Unreachable(Unreached::Blocked(UrlRefusal::PrivateAddress));
        assert!(!blocked.maybe_applied());
        assert_eq!(blocked.retry_floor(1, Repeat::Idempotent), None);
        assert_eq!(
            blocked.to_string(),
            "unreachable (the host resolves to a private address)"
        );
    }

    fn refusing_policy() -> UrlPolicy {
        UrlPolicy {
            private: ssrf::PrivateAddresses::Refused,
            dns_timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn the_guarded_client_never_connects_to_a_refused_address() {
        let recorder = Arc::new(Recorder::default());
        let client = Client::guarded(
            &refusing_policy(),
            Duration::from_secs(1),
            1024,
            recorder.clone(),
            Arc::new(|| 42),
        )
        .unwrap();
        let (listener, url) = listener();
        listener.set_nonblocking(true).unwrap();
        let https = url.replace("http:", "https:");
        let send = |url: String| {
            client.send(Provider::Webhook, client.request(Method::POST, url), |_| {
                Ok(())
            })
        };
        let blocked = |refusal| Err(ProviderError::Unreachable(Unreached::Blocked(refusal)));
        assert_eq!(send(url).await, blocked(UrlRefusal::NotHttps));
        assert_eq!(send(https).await, blocked(UrlRefusal::PrivateAddress));
        let metadata = "https://169.254.169.254/latest/meta-data/".to_string();
        assert_eq!(send(metadata).await, blocked(UrlRefusal::PrivateAddress));
        assert!(listener.accept().is_err(), "nothing may connect");
        assert_eq!(
            *recorder.0.lock().unwrap(),
            vec![(Provider::Webhook, Outcome::Unreachable); 3]
        );
    }

    #[tokio::test]
    async fn a_name_the_resolver_refuses_is_a_blocked_destination() {
        let raw = ssrf::client_builder(&refusing_policy(), Duration::from_secs(1))
            .build()
            .unwrap();
        let error = raw.get("https://localhost:9/").send().await.unwrap_err();
        assert_eq!(
            transport_error(error),
            Unreached::Blocked(UrlRefusal::PrivateAddress)
        );
    }

    #[test]
    fn labels_and_names() {
        let labels: Vec<&str> = Provider::ALL.iter().map(|p| p.label()).collect();
        assert_eq!(
            labels,
            [
                "linear",
                "monday",
                "jira",
                "github",
                "gitlab",
                "azuredevops",
                "bitbucket",
                "slack",
                "webhook",
                "openai",
                "anthropic",
                "gemini"
            ]
        );
        assert_eq!(Provider::Monday.display_name(), "Monday.com");
        assert_eq!(Provider::AzureDevOps.display_name(), "Azure DevOps");
        assert_eq!(Outcome::ClientError.label(), "client_error");
    }
}

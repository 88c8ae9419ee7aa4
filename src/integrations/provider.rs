//! What Linear and Monday.com clients share: one GraphQL POST over the shared HTTP client
//! (counted in the metrics), the outcome classes every provider answer falls into, their
//! mapping onto our API errors, and the retry rule.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::metrics::Metrics;
use orgd_providers::client::Observer;
use orgd_providers::{Outcome, Provider};

/// Everything a provider call can fail with, in our words (never the provider's body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The key or token was refused (or lacks permission).
    #[error("credentials refused")]
    InvalidCredentials,
    /// Something the request named does not exist: `team`, `board`, `group`, `issue`, ...
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Rejected before it ran; safe to repeat after `retry_after_secs`. `inline` is false
    /// for limits that will not clear soon (Monday.com's daily limit).
    #[error("rate limited for {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64, inline: bool },
    /// Unreachable or timed out. `sent` is false when the request never left (connect
    /// failure), so it certainly had no effect.
    #[error("unavailable ({reason})")]
    Unavailable { reason: &'static str, sent: bool },
    /// The provider answered with an error. `transient` for its server-side failures.
    #[error("provider error ({reason})")]
    Failed { reason: String, transient: bool },
}

impl ProviderError {
    /// How long to wait before repeating a request that cannot have had an effect, or
    /// `None` when it must not be repeated. `attempt` counts from 1.
    pub fn safe_retry_delay(&self, attempt: u32) -> Option<Duration> {
        match self {
            Self::RateLimited {
                retry_after_secs,
                inline: true,
            } if *retry_after_secs <= MAX_INLINE_WAIT_SECS => {
                Some(Duration::from_secs(*retry_after_secs))
            }
            Self::Unavailable { sent: false, .. } => Some(backoff(attempt)),
            _ => None,
        }
    }

    /// True when a request that failed this way may have been carried out anyway.
    pub fn maybe_applied(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { sent: true, .. }
                | Self::Failed {
                    transient: true,
                    ..
                }
        )
    }

    /// The API error for a failure while talking to `provider` (its display name).
    pub fn into_api_error(self, provider: &'static str) -> ApiError {
        match self {
            Self::InvalidCredentials => ApiError::bad_request(
                "Invalid credentials",
                format!("{provider} refused the credentials"),
            ),
            Self::NotFound(what) => ApiError::bad_request(
                format!("Invalid {}", not_found_field(what)),
                format!("{provider} has no {what} with that id that these credentials can see"),
            ),
            Self::RateLimited {
                retry_after_secs, ..
            } => ApiError::RetryLater {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error: "Provider rate limited",
                message: format!(
                    "{provider} is rate limiting requests; retry after {retry_after_secs} seconds"
                )
                .into(),
                retry_after_secs,
            },
            Self::Unavailable { reason, .. } => ApiError::Refused {
                status: StatusCode::BAD_GATEWAY,
                error: "Provider unavailable",
                message: format!("{provider} could not be reached ({reason})").into(),
                extra: Default::default(),
            },
            Self::Failed { reason, .. } => ApiError::Refused {
                status: StatusCode::BAD_GATEWAY,
                error: "Provider error",
                message: format!("{provider} answered with an error ({reason})").into(),
                extra: Default::default(),
            },
        }
    }

    /// The API error when stored settings stopped working while filing a ticket: the
    /// credentials or the configured team/board are the provider's problem (502), not the
    /// caller's request.
    pub fn into_ticket_error(self, provider: &'static str) -> ApiError {
        let reason = match &self {
            Self::InvalidCredentials => {
                "it refused the stored credentials; an admin must update the integration"
            }
            Self::NotFound(_) => {
                "the configured team, board or group no longer exists; an admin must update the integration"
            }
            _ => return self.into_api_error(provider),
        };
        Self::Failed {
            reason: reason.into(),
            transient: false,
        }
        .into_api_error(provider)
    }
}

fn not_found_field(what: &str) -> &'static str {
    match what {
        "team" => "teamId",
        "board" => "boardId",
        "group" => "groupId",
        _ => "id",
    }
}

/// A rate limit that clears within this many seconds is waited out inside the request.
pub const MAX_INLINE_WAIT_SECS: u64 = 5;
/// Attempts per provider operation, the first included.
pub const MAX_ATTEMPTS: u32 = 3;

/// 250 ms, doubling per attempt (capped at 4 s).
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 * 2u64.pow(attempt.saturating_sub(1).min(4)))
}

/// A provider's HTTP answer: status, headers and the JSON body (`Null` when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// One provider's GraphQL endpoint, counting every call it makes in the metrics.
pub struct GraphqlEndpoint {
    http: reqwest::Client,
    url: String,
    provider: Provider,
    metrics: Arc<Metrics>,
}

impl GraphqlEndpoint {
    pub fn new(
        http: reqwest::Client,
        url: String,
        provider: Provider,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            http,
            url,
            provider,
            metrics,
        }
    }

    /// POSTs one GraphQL operation and reads the answer with the provider's `classify`.
    /// User text travels only in `variables`.
    pub async fn post(
        &self,
        headers: HeaderMap,
        query: &'static str,
        variables: Value,
        classify: impl FnOnce(&Answer) -> Result<Value, ProviderError>,
    ) -> Result<Value, ProviderError> {
        let (outcome, result) = match self.send(headers, query, variables).await {
            Ok(answer) => {
                let result = classify(&answer);
                (answered_outcome(&result), result)
            }
            Err(e) => (Outcome::Unreachable, Err(e)),
        };
        self.metrics.record(self.provider, outcome);
        result
    }

    async fn send(
        &self,
        headers: HeaderMap,
        query: &'static str,
        variables: Value,
    ) -> Result<Answer, ProviderError> {
        let response = self
            .http
            .post(&self.url)
            .headers(headers)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(transport_error)?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// The metrics outcome of a call the provider answered (a gateway error is its failure too).
fn answered_outcome(result: &Result<Value, ProviderError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(ProviderError::RateLimited { .. }) => Outcome::RateLimited,
        Err(
            ProviderError::Unavailable { .. }
            | ProviderError::Failed {
                transient: true, ..
            },
        ) => Outcome::ServerError,
        Err(
            ProviderError::InvalidCredentials
            | ProviderError::NotFound(_)
            | ProviderError::Failed {
                transient: false, ..
            },
        ) => Outcome::ClientError,
    }
}

fn transport_error(e: reqwest::Error) -> ProviderError {
    if e.is_connect() {
        ProviderError::Unavailable {
            reason: "connection failed",
            sent: false,
        }
    } else if e.is_timeout() {
        ProviderError::Unavailable {
            reason: "timed out",
            sent: true,
        }
    } else {
        ProviderError::Unavailable {
            reason: "connection interrupted",
            sent: true,
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by these providers).
pub fn retry_after_header(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The failure for an HTTP status that carried no usable error body.
pub fn status_failure(status: StatusCode) -> ProviderError {
    match status.as_u16() {
        502..=504 => ProviderError::Unavailable {
            reason: "gateway error",
            sent: true,
        },
        500.. => ProviderError::Failed {
            reason: format!("HTTP {}", status.as_u16()),
            transient: true,
        },
        _ => ProviderError::Failed {
            reason: format!("HTTP {}", status.as_u16()),
            transient: false,
        },
    }
}

/// Runs `op` until it succeeds or fails in a way that must not be repeated.
pub async fn with_safe_retries<T, F, Fut>(mut op: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if attempt < MAX_ATTEMPTS => match e.safe_retry_delay(attempt) {
                Some(delay) => {
                    tracing::info!(error = %e, attempt, "provider call failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                None => return Err(e),
            },
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_harmless_failures_are_retried() {
        let limited = ProviderError::RateLimited {
            retry_after_secs: 1,
            inline: true,
        };
        assert_eq!(limited.safe_retry_delay(1), Some(Duration::from_secs(1)));
        assert_eq!(
            ProviderError::RateLimited {
                retry_after_secs: 60,
                inline: true
            }
            .safe_retry_delay(1),
            None
        );
        assert_eq!(
            ProviderError::RateLimited {
                retry_after_secs: 1,
                inline: false
            }
            .safe_retry_delay(1),
            None
        );
        assert!(
            ProviderError::Unavailable {
                reason: "x",
                sent: false
            }
            .safe_retry_delay(1)
            .is_some()
        );
        assert_eq!(
            ProviderError::Unavailable {
                reason: "x",
                sent: true
            }
            .safe_retry_delay(1),
            None
        );
        assert_eq!(ProviderError::InvalidCredentials.safe_retry_delay(1), None);
        assert!(
            ProviderError::Failed {
                reason: "x".into(),
                transient: true
            }
            .maybe_applied()
        );
    }
}

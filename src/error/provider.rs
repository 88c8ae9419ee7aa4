//! The one place a provider's failure becomes an answer: its status, error string and
//! message, and for analyses the reason stored with the failed analysis.

use axum::http::StatusCode;
use orgd_providers::tracker::ISSUES_DISABLED;
use orgd_providers::{Provider, ProviderError};

use super::ApiError;

/// What the service was doing when a provider failed. It decides the words, and whether a
/// refused credential or unknown id is the caller's to fix (400) or the stored
/// integration's (502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderCall {
    /// Checking the integration settings an admin is saving.
    CheckSettings(Provider),
    /// Filing a ticket with the organization's stored settings.
    FileTicket(Provider),
    /// An AI failure analysis.
    Analysis,
    /// Posting a message with the organization's stored settings (Slack's test message).
    Notify(Provider),
}

impl ProviderCall {
    fn subject(self) -> &'static str {
        match self {
            Self::CheckSettings(provider) | Self::FileTicket(provider) | Self::Notify(provider) => {
                provider.display_name()
            }
            Self::Analysis => "The AI provider",
        }
    }

    /// What went wrong, in a sentence of ours (for analyses, the stored reason).
    pub fn describe(self, error: &ProviderError) -> String {
        use ProviderCall::{Analysis, CheckSettings, FileTicket, Notify};
        let who = self.subject();
        match (error, self) {
            (ProviderError::InvalidCredentials, CheckSettings(_)) => {
                format!("{who} refused the credentials")
            }
            (ProviderError::InvalidCredentials, FileTicket(_) | Notify(_)) => format!(
                "{who} answered with an error (it refused the stored credentials; an admin must update the integration)"
            ),
            (ProviderError::InvalidCredentials, Analysis) => format!("{who} refused the API key"),
            (ProviderError::NotFound(what), CheckSettings(_)) => {
                format!("{who} has no {what} with that id that these credentials can see")
            }
            (ProviderError::NotFound(what), FileTicket(_) | Notify(_)) => format!(
                "{who} answered with an error (the configured {what} no longer exists; an admin must update the integration)"
            ),
            (ProviderError::NotFound(what), Analysis) => {
                format!("{who} refused the request ({what} not found)")
            }
            (ProviderError::Refused(reason), _) => format!("{who} refused the request ({reason})"),
            (ProviderError::TooLarge, Analysis) => {
                format!("{who} refused the request (the log is too long for the model)")
            }
            (ProviderError::TooLarge, _) => format!("{who} refused the request as too large"),
            (ProviderError::RateLimited { .. }, _) => format!("{who} is rate limiting requests"),
            (ProviderError::Overloaded, _) => format!("{who} is overloaded"),
            (ProviderError::Unreachable(_), Analysis) => format!("{who} could not be reached"),
            (ProviderError::Unreachable(unreached), _) => {
                format!("{who} could not be reached ({})", unreached.reason())
            }
            (ProviderError::Failed { reason, .. }, _) => {
                format!("{who} answered with an error ({reason})")
            }
        }
    }
}

impl ApiError {
    /// The answer for `error` met while doing `during`.
    pub fn provider(error: ProviderError, during: ProviderCall) -> Self {
        let message = during.describe(&error);
        let (status, error) = match (error, during) {
            (ProviderError::InvalidCredentials, ProviderCall::CheckSettings(_)) => {
                return Self::bad_request("Invalid credentials", message);
            }
            (ProviderError::NotFound(what), ProviderCall::CheckSettings(provider)) => {
                return Self::invalid(not_found_field(provider, what), message);
            }
            (ProviderError::Refused(ISSUES_DISABLED), ProviderCall::FileTicket(_)) => {
                return issues_disabled(during.subject());
            }
            (
                ProviderError::RateLimited {
                    retry_after_secs, ..
                },
                _,
            ) => {
                return Self::RetryLater {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    error: "Provider rate limited",
                    message: format!("{message}; retry after {retry_after_secs} seconds").into(),
                    retry_after_secs,
                };
            }
            (ProviderError::Overloaded, _) => {
                (StatusCode::SERVICE_UNAVAILABLE, "Provider unavailable")
            }
            (ProviderError::Unreachable(_), _) => (StatusCode::BAD_GATEWAY, "Provider unavailable"),
            _ => (StatusCode::BAD_GATEWAY, "Provider error"),
        };
        Self::Refused {
            status,
            error,
            message: message.into(),
            extra: Default::default(),
        }
    }
}

/// 400 `Issues disabled`: the repository takes no issues (its pull requests still take
/// comments). `who` is the tracker's display name.
pub fn issues_disabled(who: &str) -> ApiError {
    ApiError::bad_request(
        "Issues disabled",
        format!("Issues are turned off for the configured {who} repository"),
    )
}

/// The settings field naming what `provider` did not find.
fn not_found_field(provider: Provider, what: &str) -> &'static str {
    match (provider, what) {
        (_, "team") => "teamId",
        (_, "board") => "boardId",
        (_, "group") => "groupId",
        (Provider::Jira, "project") => "projectKey",
        (Provider::Jira, "issue type") => "issueType",
        (Provider::Jira, "site") => "domain",
        (Provider::GitHub, "repository") => "repo",
        (Provider::GitLab, "project") => "projectId",
        (Provider::AzureDevOps, "project") => "project",
        (Provider::AzureDevOps, "work item type") => "workItemType",
        (Provider::AzureDevOps, "repository") => "repository",
        (Provider::Bitbucket, "repository") => "repoSlug",
        _ => "id",
    }
}

#[cfg(test)]
mod tests {
    use orgd_providers::client::Unreached;

    use super::*;

    /// Status, error string and message.
    fn answer(error: ProviderError, during: ProviderCall) -> (u16, String, String) {
        let api = ApiError::provider(error, during);
        let status = api.status().as_u16();
        let (error, message) = api.error_and_message();
        (status, error.into_owned(), message.into_owned())
    }

    fn owned(status: u16, error: &str, message: &str) -> (u16, String, String) {
        (status, error.to_string(), message.to_string())
    }

    #[test]
    fn settings_checks_blame_the_caller_for_refused_credentials_and_ids() {
        let linear = ProviderCall::CheckSettings(Provider::Linear);
        let monday = ProviderCall::CheckSettings(Provider::Monday);
        assert_eq!(
            answer(ProviderError::InvalidCredentials, linear),
            owned(400, "Invalid credentials", "Linear refused the credentials")
        );
        assert_eq!(
            answer(ProviderError::NotFound("group"), monday),
            owned(
                400,
                "Invalid groupId",
                "Monday.com has no group with that id that these credentials can see"
            )
        );
        assert_eq!(
            answer(
                ProviderError::RateLimited {
                    retry_after_secs: 120,
                    inline: true
                },
                linear
            ),
            owned(
                503,
                "Provider rate limited",
                "Linear is rate limiting requests; retry after 120 seconds"
            )
        );
        assert_eq!(
            answer(
                ProviderError::Unreachable(Unreached::ConnectionRefused),
                linear
            ),
            owned(
                502,
                "Provider unavailable",
                "Linear could not be reached (connection failed)"
            )
        );
        assert_eq!(
            answer(
                ProviderError::Failed {
                    reason: "HTTP 500".into(),
                    transient: true
                },
                monday
            ),
            owned(
                502,
                "Provider error",
                "Monday.com answered with an error (HTTP 500)"
            )
        );
    }

    #[test]
    fn tracker_checks_name_the_field_that_was_not_found() {
        let cases = [
            (Provider::Jira, "project", "Invalid projectKey"),
            (Provider::Jira, "issue type", "Invalid issueType"),
            (Provider::GitHub, "repository", "Invalid repo"),
            (Provider::GitLab, "project", "Invalid projectId"),
            (Provider::AzureDevOps, "project", "Invalid project"),
            (
                Provider::AzureDevOps,
                "work item type",
                "Invalid workItemType",
            ),
            (Provider::Bitbucket, "repository", "Invalid repoSlug"),
        ];
        for (provider, what, field) in cases {
            let check = ProviderCall::CheckSettings(provider);
            assert_eq!(answer(ProviderError::NotFound(what), check).1, field);
        }
        let disabled = ProviderError::Refused(ISSUES_DISABLED);
        let ticket = ProviderCall::FileTicket(Provider::GitHub);
        assert_eq!(
            answer(disabled, ticket),
            owned(
                400,
                "Issues disabled",
                "Issues are turned off for the configured GitHub repository"
            )
        );
    }

    #[test]
    fn tickets_blame_the_stored_integration() {
        let ticket = ProviderCall::FileTicket(Provider::Linear);
        assert_eq!(
            answer(ProviderError::InvalidCredentials, ticket),
            owned(
                502,
                "Provider error",
                "Linear answered with an error (it refused the stored credentials; an admin must update the integration)"
            )
        );
        assert_eq!(answer(ProviderError::NotFound("team"), ticket).0, 502);
        assert_eq!(
            answer(ProviderError::Unreachable(Unreached::TimedOut), ticket),
            owned(
                502,
                "Provider unavailable",
                "Linear could not be reached (timed out)"
            )
        );
    }

    #[test]
    fn analyses_store_our_reasons() {
        let cases = [
            (
                ProviderError::InvalidCredentials,
                502,
                "Provider error",
                "The AI provider refused the API key",
            ),
            (
                ProviderError::TooLarge,
                502,
                "Provider error",
                "The AI provider refused the request (the log is too long for the model)",
            ),
            (
                ProviderError::NotFound("model"),
                502,
                "Provider error",
                "The AI provider refused the request (model not found)",
            ),
            (
                ProviderError::Refused("the provider account is out of credit"),
                502,
                "Provider error",
                "The AI provider refused the request (the provider account is out of credit)",
            ),
            (
                ProviderError::Overloaded,
                503,
                "Provider unavailable",
                "The AI provider is overloaded",
            ),
            (
                ProviderError::Unreachable(Unreached::ConnectFailed),
                502,
                "Provider unavailable",
                "The AI provider could not be reached",
            ),
        ];
        for (error, status, string, reason) in cases {
            assert_eq!(ProviderCall::Analysis.describe(&error), reason);
            assert_eq!(
                answer(error, ProviderCall::Analysis),
                owned(status, string, reason)
            );
        }
        let limited = ProviderError::RateLimited {
            retry_after_secs: 0,
            inline: true,
        };
        assert_eq!(
            ProviderCall::Analysis.describe(&limited),
            "The AI provider is rate limiting requests"
        );
        assert_eq!(
            answer(limited, ProviderCall::Analysis),
            owned(
                503,
                "Provider rate limited",
                "The AI provider is rate limiting requests; retry after 0 seconds"
            )
        );
    }
}

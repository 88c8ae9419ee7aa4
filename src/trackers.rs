//! The five REST trackers' targets built from an integration's settings (stored, or being
//! saved) and its opened credential: one reading of the settings for the credential check,
//! tickets and pull-request comments.
//!
//! A row saved under an earlier, shorter field list may lack a field a feature needs; that
//! feature then answers 400 `Integration incomplete` naming the field. Fields with a default
//! (Jira's `issueType`, Azure DevOps' `workItemType`) fall back to it, and a Jira row never
//! checked counts as a classic token (the only kind the earlier field list knew).

use serde_json::{Map, Value};

use crate::error::ApiError;
use orgd_core::integrations::Integration;
use orgd_providers::Provider as Outbound;
use orgd_providers::azure_devops::AzureDevOpsTarget;
use orgd_providers::bitbucket::BitbucketTarget;
use orgd_providers::github::GitHubTarget;
use orgd_providers::gitlab::GitLabTarget;
use orgd_providers::jira::{JiraAuth, JiraCredentials};

/// GitLab's instance when an integration names none: called as a vendor host, without the
/// address rules a customer's `baseUrl` goes through.
pub(crate) const GITLAB_DEFAULT_URL: &str = "https://gitlab.com";

/// The Jira issue type and Azure DevOps work item type of an integration that names none.
pub(crate) const DEFAULT_TYPE: &str = "Bug";

type Settings = Map<String, Value>;

/// The outbound client's name for an integration (metrics, display names).
pub(crate) fn outbound(integration: Integration) -> Outbound {
    match integration {
        Integration::Github => Outbound::GitHub,
        Integration::Gitlab => Outbound::GitLab,
        Integration::AzureDevops => Outbound::AzureDevOps,
        Integration::Bitbucket => Outbound::Bitbucket,
        Integration::Jira => Outbound::Jira,
        Integration::Linear => Outbound::Linear,
        Integration::Monday => Outbound::Monday,
        Integration::Slack => Outbound::Slack,
    }
}

/// A text setting the feature cannot do without.
pub(crate) fn needed<'a>(settings: &'a Settings, name: &str) -> Result<&'a str, ApiError> {
    settings.get(name).and_then(Value::as_str).ok_or_else(|| {
        ApiError::bad_request(
            "Integration incomplete",
            format!("The integration has no {name}; an admin must save it with {name}"),
        )
    })
}

fn optional<'a>(settings: &'a Settings, name: &str) -> Option<&'a str> {
    settings.get(name).and_then(Value::as_str)
}

/// Whether the repository takes issues, as the last check found (unknown counts as yes: the
/// tracker refuses a create itself).
pub(crate) fn issues_enabled(settings: &Settings) -> bool {
    settings
        .get("issuesEnabled")
        .and_then(Value::as_bool)
        .unwrap_or(true)
}

pub(crate) fn jira_credentials<'a>(
    settings: &'a Settings,
    token: &'a str,
) -> Result<JiraCredentials<'a>, ApiError> {
    Ok(JiraCredentials {
        domain: needed(settings, "domain")?,
        email: needed(settings, "email")?,
        token,
    })
}

/// The kind of Jira token the check found (`tokenKind`, and `cloudId` for a scoped one).
pub(crate) fn jira_auth(settings: &Settings) -> Result<JiraAuth, ApiError> {
    match optional(settings, "tokenKind") {
        Some("scoped") => Ok(JiraAuth::Scoped {
            cloud_id: needed(settings, "cloudId")?.to_string(),
        }),
        _ => Ok(JiraAuth::Classic),
    }
}

pub(crate) fn jira_issue_type(settings: &Settings) -> &str {
    optional(settings, "issueType").unwrap_or(DEFAULT_TYPE)
}

pub(crate) fn github_target<'a>(
    settings: &'a Settings,
    token: &'a str,
) -> Result<GitHubTarget<'a>, ApiError> {
    Ok(GitHubTarget {
        token,
        owner: needed(settings, "owner")?,
        repo: needed(settings, "repo")?,
        base_url: optional(settings, "baseUrl"),
    })
}

pub(crate) fn gitlab_target<'a>(
    settings: &'a Settings,
    token: &'a str,
) -> Result<GitLabTarget<'a>, ApiError> {
    Ok(GitLabTarget {
        token,
        project: needed(settings, "projectId")?,
        base_url: optional(settings, "baseUrl").filter(|url| *url != GITLAB_DEFAULT_URL),
    })
}

pub(crate) fn azure_devops_target<'a>(
    settings: &'a Settings,
    token: &'a str,
) -> Result<AzureDevOpsTarget<'a>, ApiError> {
    Ok(AzureDevOpsTarget {
        token,
        organization: needed(settings, "organization")?,
        project: needed(settings, "project")?,
    })
}

pub(crate) fn azure_devops_work_item_type(settings: &Settings) -> &str {
    optional(settings, "workItemType").unwrap_or(DEFAULT_TYPE)
}

pub(crate) fn bitbucket_target<'a>(
    settings: &'a Settings,
    token: &'a str,
) -> Result<BitbucketTarget<'a>, ApiError> {
    Ok(BitbucketTarget {
        email: needed(settings, "email")?,
        token,
        workspace: needed(settings, "workspace")?,
        repo_slug: needed(settings, "repoSlug")?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn settings(value: Value) -> Settings {
        match value {
            Value::Object(map) => map,
            _ => Settings::new(),
        }
    }

    #[test]
    fn earlier_rows_name_what_they_lack() {
        let old_bitbucket = settings(json!({"workspace": "acme", "repoSlug": "shop"}));
        let (error, message) = bitbucket_target(&old_bitbucket, "t")
            .err()
            .map(|e| e.error_and_message())
            .unwrap_or_default();
        assert_eq!(error, "Integration incomplete");
        assert!(message.contains("email"), "{message}");
        let old_jira = settings(json!({"domain": "acme.atlassian.net", "email": "a@b.co"}));
        assert_eq!(jira_auth(&old_jira).ok(), Some(JiraAuth::Classic));
        assert_eq!(jira_issue_type(&old_jira), "Bug");
        assert!(issues_enabled(&old_jira));
    }

    #[test]
    fn the_default_gitlab_instance_is_a_vendor_host() {
        let default = settings(json!({"projectId": "42", "baseUrl": GITLAB_DEFAULT_URL}));
        assert_eq!(
            gitlab_target(&default, "t").map(|t| t.base_url).ok(),
            Some(None)
        );
        let own = settings(json!({"projectId": "42", "baseUrl": "https://git.acme.dev"}));
        assert_eq!(
            gitlab_target(&own, "t").map(|t| t.base_url).ok(),
            Some(Some("https://git.acme.dev"))
        );
    }
}

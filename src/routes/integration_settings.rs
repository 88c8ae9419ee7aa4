//! The provider catalogue (API.md, Integrations): each provider's display name, secret
//! field and non-secret fields with their validation, the `PUT` body, and its merge into
//! the stored settings.

use crate::timestamp::Timestamp;
use orgd_core::outbox::Health;
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::state::AppState;
use crate::trackers::{DEFAULT_TYPE, GITLAB_DEFAULT_URL};
use orgd_core::secrets::SecretTable;

use crate::auth::CurrentUser;
use crate::config::Secret;
use crate::error::{ApiError, OrInternal};
use crate::http::{ClientIp, FromBodyWith, Object};
use orgd_core::audit::AuditEvent;
use orgd_core::integrations::{IntegrationRecord, IntegrationWrite};
use orgd_providers::Provider as Outbound;

pub use orgd_core::integrations::Integration;

/// A non-secret field a `PUT` may set.
pub struct Field {
    pub name: &'static str,
    required: bool,
    /// Where the body keeps it.
    slot: Slot,
    parse: fn(&'static str, &Value) -> Result<Value, ApiError>,
    /// Filled in on the first save when absent, and restored by `null`.
    default: Option<fn() -> Value>,
}

type Slot = fn(&mut IntegrationSettings) -> &mut Option<Setting>;

const fn required(
    name: &'static str,
    slot: Slot,
    parse: fn(&'static str, &Value) -> Result<Value, ApiError>,
) -> Field {
    Field {
        name,
        required: true,
        slot,
        parse,
        default: None,
    }
}

const fn optional(
    name: &'static str,
    slot: Slot,
    parse: fn(&'static str, &Value) -> Result<Value, ApiError>,
    default: Option<fn() -> Value>,
) -> Field {
    Field {
        name,
        required: false,
        slot,
        parse,
        default,
    }
}

const LINEAR_FIELDS: &[Field] = &[required("teamId", |b| &mut b.team_id, team_ref)];
const MONDAY_FIELDS: &[Field] = &[
    required("boardId", |b| &mut b.board_id, monday_board),
    optional("groupId", |b| &mut b.group_id, monday_group, None),
];
const JIRA_FIELDS: &[Field] = &[
    required("domain", |b| &mut b.domain, jira_domain),
    required("email", |b| &mut b.email, email),
    required("projectKey", |b| &mut b.project_key, jira_project),
    optional(
        "issueType",
        |b| &mut b.issue_type,
        type_name,
        Some(|| json!(DEFAULT_TYPE)),
    ),
];
const GITHUB_FIELDS: &[Field] = &[
    required("owner", |b| &mut b.owner, github_owner),
    required("repo", |b| &mut b.repo, repo_name),
    optional("baseUrl", |b| &mut b.base_url, base_url, None),
];
const GITLAB_FIELDS: &[Field] = &[
    optional(
        "baseUrl",
        |b| &mut b.base_url,
        base_url,
        Some(|| json!(GITLAB_DEFAULT_URL)),
    ),
    required("projectId", |b| &mut b.project_id, gitlab_project),
];
const AZURE_FIELDS: &[Field] = &[
    required("organization", |b| &mut b.organization, azure_organization),
    required("project", |b| &mut b.project, azure_project),
    optional("repository", |b| &mut b.repository, azure_repository, None),
    optional(
        "workItemType",
        |b| &mut b.work_item_type,
        type_name,
        Some(|| json!(DEFAULT_TYPE)),
    ),
];
const BITBUCKET_FIELDS: &[Field] = &[
    required("email", |b| &mut b.email, email),
    required("workspace", |b| &mut b.workspace, bitbucket_workspace),
    required("repoSlug", |b| &mut b.repo_slug, repo_name),
];
const SLACK_FIELDS: &[Field] = &[optional(
    "events",
    |b| &mut b.events,
    slack_events,
    Some(|| json!(DEFAULT_SLACK_EVENTS)),
)];

/// What the service knows of each integration besides the core's: the outbound client's
/// name for it, and the fields a `PUT` may set and `GET` shows.
pub trait Described {
    /// The client's name for it (metrics, display names).
    fn outbound(self) -> Outbound;
    fn display_name(self) -> &'static str;
    /// The fields a `PUT` may set.
    fn fields(self) -> &'static [Field];
    /// The fields `GET` shows besides `enabled`; some are learned from the provider when the
    /// settings are checked (Linear's team key and name, Jira's `tokenKind`, GitHub's and
    /// Bitbucket's `issuesEnabled`, GitLab's `projectPath`).
    fn shown(self) -> Vec<&'static str>;
}

impl Described for Integration {
    fn outbound(self) -> Outbound {
        crate::trackers::outbound(self)
    }

    fn display_name(self) -> &'static str {
        self.outbound().display_name()
    }

    fn fields(self) -> &'static [Field] {
        match self {
            Self::Github => GITHUB_FIELDS,
            Self::Gitlab => GITLAB_FIELDS,
            Self::AzureDevops => AZURE_FIELDS,
            Self::Bitbucket => BITBUCKET_FIELDS,
            Self::Jira => JIRA_FIELDS,
            Self::Linear => LINEAR_FIELDS,
            Self::Monday => MONDAY_FIELDS,
            Self::Slack => SLACK_FIELDS,
        }
    }

    fn shown(self) -> Vec<&'static str> {
        match self {
            Self::Linear => vec!["teamId", "teamKey", "teamName"],
            Self::Jira => vec!["domain", "email", "projectKey", "issueType", "tokenKind"],
            Self::Github => vec!["owner", "repo", "baseUrl", "issuesEnabled"],
            Self::Gitlab => vec!["projectId", "baseUrl", "projectPath"],
            Self::Bitbucket => vec!["email", "workspace", "repoSlug", "issuesEnabled"],
            _ => self.fields().iter().map(|f| f.name).collect(),
        }
    }
}

/// A `PUT` body: merged into what is stored (at least one field). The credential field is
/// `apiKey` (linear, monday), `apiToken` (jira), `webhookUrl` (slack, an https URL on
/// hooks.slack.com) or `token` (github, gitlab, azuredevops, bitbucket); it is sealed and never
/// shown again. Every provider but Slack has its settings checked with the provider before
/// they are saved. Fields per provider: linear `teamId`; monday `boardId`, `groupId?`; jira
/// `domain`, `email`, `projectKey`, `issueType?` (`Bug`); github `owner`, `repo`, `baseUrl?`;
/// gitlab `projectId`, `baseUrl?` (`https://gitlab.com`); azuredevops `organization`,
/// `project`, `repository?`, `workItemType?` (`Bug`); bitbucket `email`, `workspace`,
/// `repoSlug`; slack `events?`. A `baseUrl` follows the outgoing-webhook address rules.
#[derive(Default, ToSchema)]
pub struct IntegrationSettings {
    enabled: Option<bool>,
    #[schema(rename = "apiKey", value_type = Option<String>)]
    api_key: Option<Secret<String>>,
    #[schema(rename = "apiToken", value_type = Option<String>)]
    api_token: Option<Secret<String>>,
    #[schema(rename = "webhookUrl", value_type = Option<String>)]
    webhook_url: Option<Secret<String>>,
    #[schema(value_type = Option<String>)]
    token: Option<Secret<String>>,
    /// Linear: the team's id or key.
    #[schema(rename = "teamId", value_type = Option<String>)]
    team_id: Option<Setting>,
    #[schema(rename = "boardId", value_type = Option<String>)]
    board_id: Option<Setting>,
    #[schema(rename = "groupId", value_type = Option<String>)]
    group_id: Option<Setting>,
    #[schema(value_type = Option<String>)]
    domain: Option<Setting>,
    #[schema(value_type = Option<String>)]
    email: Option<Setting>,
    #[schema(rename = "projectKey", value_type = Option<String>)]
    project_key: Option<Setting>,
    /// Jira: the issue type tickets are filed as.
    #[schema(rename = "issueType", value_type = Option<String>)]
    issue_type: Option<Setting>,
    #[schema(value_type = Option<String>)]
    owner: Option<Setting>,
    #[schema(value_type = Option<String>)]
    repo: Option<Setting>,
    #[schema(rename = "baseUrl", value_type = Option<String>)]
    base_url: Option<Setting>,
    /// GitLab: a numeric id or a `group/project` path.
    #[schema(rename = "projectId", value_type = Option<String>)]
    project_id: Option<Setting>,
    #[schema(value_type = Option<String>)]
    organization: Option<Setting>,
    #[schema(value_type = Option<String>)]
    project: Option<Setting>,
    /// Azure DevOps: the repository (name or id) pull-request comments go to.
    #[schema(value_type = Option<String>)]
    repository: Option<Setting>,
    /// Azure DevOps: the work item type tickets are filed as.
    #[schema(rename = "workItemType", value_type = Option<String>)]
    work_item_type: Option<Setting>,
    #[schema(value_type = Option<String>)]
    workspace: Option<Setting>,
    #[schema(rename = "repoSlug", value_type = Option<String>)]
    repo_slug: Option<Setting>,
    /// Slack: which execution statuses to post.
    #[schema(value_type = Option<Vec<String>>)]
    events: Option<Setting>,
}

/// One non-secret setting as the body gives it; only the provider's own fields are read.
pub enum Setting {
    /// The checked value to store.
    Set(Value),
    /// `null` for an optional field: back to its default, or unset.
    Reset,
}

impl IntegrationSettings {
    /// Where the body keeps `provider`'s credential (the field `Integration::secret_field`).
    fn credential(&mut self, provider: Integration) -> &mut Option<Secret<String>> {
        match provider {
            Integration::Linear | Integration::Monday => &mut self.api_key,
            Integration::Jira => &mut self.api_token,
            Integration::Slack => &mut self.webhook_url,
            Integration::Github
            | Integration::Gitlab
            | Integration::AzureDevops
            | Integration::Bitbucket => &mut self.token,
        }
    }
}

/// Checked in the seed's order for `provider`; a first save (nothing `stored`) needs the
/// credential and every required field.
impl FromBodyWith<(Integration, Option<&IntegrationRecord>)> for IntegrationSettings {
    fn from_body_with(
        body: &Object,
        (provider, stored): (Integration, Option<&IntegrationRecord>),
    ) -> Result<Self, ApiError> {
        let secret_field = provider.secret_field();
        let fields = provider.fields();
        if !body.has(secret_field)
            && !body.has("enabled")
            && !fields.iter().any(|f| body.has(f.name))
        {
            let names: Vec<&str> = std::iter::once(secret_field)
                .chain(fields.iter().map(|f| f.name))
                .collect();
            return Err(ApiError::bad_request(
                "Missing fields",
                format!("At least one of {}, enabled is required", names.join(", ")),
            ));
        }
        let mut settings = Self::default();
        let secret = body
            .0
            .get(secret_field)
            .map(|v| parse_secret(provider, v))
            .transpose()?;
        if stored.is_none() && secret.is_none() {
            return Err(ApiError::invalid(
                secret_field,
                format!("{secret_field} is required on the first save"),
            ));
        }
        // A save that will be checked needs every required field, given or stored (a row
        // saved under an earlier, shorter field list may lack one); `enabled` alone does not.
        let checked = secret.is_some() || fields.iter().any(|f| body.has(f.name));
        let stored_has = |name: &str| stored.is_some_and(|r| r.settings.contains_key(name));
        *settings.credential(provider) = secret;
        settings.enabled = body.opt_bool("enabled")?;
        for field in fields {
            let setting = match body.0.get(field.name) {
                Some(Value::Null) if !field.required => Setting::Reset,
                Some(value) => Setting::Set((field.parse)(field.name, value)?),
                None if field.required && checked && !stored_has(field.name) => {
                    return Err(ApiError::invalid(
                        field.name,
                        format!("{} is required", field.name),
                    ));
                }
                None => continue,
            };
            *(field.slot)(&mut settings) = Some(setting);
        }
        Ok(settings)
    }
}

/// A `PUT` body merged into what was stored.
pub struct Draft {
    pub settings: Map<String, Value>,
    /// A newly given credential (`None`: keep the stored one).
    pub secret: Option<Secret<String>>,
    pub enabled: Option<bool>,
    /// Whether the body set any non-secret field.
    pub fields_given: bool,
}

impl Draft {
    /// `body` (read for `provider`) on top of `stored`: partial updates keep the rest, and a
    /// first save starts from the defaults.
    pub fn new(
        provider: Integration,
        mut body: IntegrationSettings,
        stored: Option<&IntegrationRecord>,
    ) -> Self {
        let mut settings = stored.map(|s| s.settings.clone()).unwrap_or_default();
        let mut fields_given = false;
        for field in provider.fields() {
            match (field.slot)(&mut body).take() {
                Some(Setting::Set(value)) => {
                    fields_given = true;
                    settings.insert(field.name.into(), value);
                }
                Some(Setting::Reset) => {
                    fields_given = true;
                    settings.remove(field.name);
                    if let Some(default) = field.default {
                        settings.insert(field.name.into(), default());
                    }
                }
                None if stored.is_none() => {
                    if let Some(default) = field.default {
                        settings.insert(field.name.into(), default());
                    }
                }
                None => {}
            }
        }
        Self {
            settings,
            secret: body.credential(provider).take(),
            enabled: body.enabled,
            fields_given,
        }
    }
}

/// What a save writes besides the settings: the sealed credential, whether the integration
/// is on, its audit entry and the version it is based on — the same for `PUT
/// /api/integrations/:provider` and for Slack saved through `PATCH /api/organization`.
pub struct PreparedSave {
    sealed: String,
    enabled: bool,
    pub audit: AuditEvent,
    expected_version: Option<i64>,
}

impl PreparedSave {
    pub fn new(
        app: &AppState,
        user: &CurrentUser,
        ip: ClientIp,
        provider: Integration,
        draft: &Draft,
        stored: Option<&IntegrationRecord>,
    ) -> Result<Self, ApiError> {
        let org = user.org_id();
        // Saving a new credential turns the integration on unless the body says otherwise.
        let enabled = draft.enabled.unwrap_or(match stored {
            Some(record) if draft.secret.is_none() => record.enabled,
            _ => true,
        });
        let sealed = match (&draft.secret, stored) {
            (Some(secret), _) => app.vault.seal(
                &secret.0,
                &SecretTable::Integrations.binding(org, provider.as_str()),
            ),
            (None, Some(record)) => record.secret.clone(),
            (None, None) => {
                return Err(ApiError::internal(
                    "Failed to save integration",
                    anyhow::anyhow!("no credential"),
                ));
            }
        };
        let before = stored.map(|r| r.settings.clone()).unwrap_or_default();
        let mut fields = changed_fields(provider, &before, &draft.settings);
        if draft.secret.is_some() {
            fields.push(provider.secret_field());
        }
        if stored.is_some_and(|r| r.enabled != enabled) {
            fields.push("enabled");
        }
        let audit = user
            .audit_event(ip, "integration.updated", "integration", provider.as_str())
            .with_details(
                json!({"provider": provider.as_str(), "fields": fields, "enabled": enabled}),
            );
        Ok(Self {
            sealed,
            enabled,
            audit,
            expected_version: stored.map(|r| r.version),
        })
    }

    pub fn write<'a>(
        &'a self,
        organization_id: &'a str,
        provider: Integration,
        settings: &'a Map<String, Value>,
    ) -> IntegrationWrite<'a> {
        IntegrationWrite {
            organization_id,
            integration: provider,
            settings,
            secret: &self.sealed,
            enabled: self.enabled,
            expected_version: self.expected_version,
        }
    }
}

/// The audit entry of removing an integration.
pub fn unlink_audit(user: &CurrentUser, ip: ClientIp, provider: Integration) -> AuditEvent {
    user.audit_event(ip, "integration.unlinked", "integration", provider.as_str())
        .with_details(json!({"provider": provider.as_str()}))
}

/// 409: the save was based on settings another request changed meanwhile.
pub fn integration_changed() -> ApiError {
    ApiError::conflict(
        "Integration changed",
        "The integration was changed by another request meanwhile; reload it and try again",
    )
}

/// What `GET` answers for a provider: `enabled` plus its shown fields (null when unset).
pub fn view(provider: Integration, record: Option<&IntegrationRecord>) -> IntegrationView {
    let Some(record) = record else {
        return IntegrationView::new(false, Map::new());
    };
    let settings = provider
        .shown()
        .into_iter()
        .map(|name| {
            let value = record.settings.get(name).cloned().unwrap_or(Value::Null);
            (name.to_string(), value)
        })
        .collect();
    IntegrationView::new(record.enabled, settings)
}

/// Names of shown fields whose values differ between two settings.
pub fn changed_fields(
    provider: Integration,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
) -> Vec<&'static str> {
    provider
        .shown()
        .into_iter()
        .filter(|name| before.get(*name) != after.get(*name))
        .collect()
}

const MAX_SECRET_CHARS: usize = 2048;

fn string<'a>(field: &str, value: &'a Value) -> Result<&'a str, ApiError> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Ok(s.trim()),
        Value::String(_) => Err(ApiError::invalid(field, format!("{field} cannot be empty"))),
        _ => Err(ApiError::invalid(
            field,
            format!("{field} must be a string"),
        )),
    }
}

/// A string of 1..=`max` characters, each allowed by `ok`.
fn token_text<'a>(
    field: &str,
    value: &'a Value,
    max: usize,
    ok: fn(char) -> bool,
    what: &str,
) -> Result<&'a str, ApiError> {
    let s = string(field, value)?;
    if s.chars().count() > max || !s.chars().all(ok) {
        return Err(ApiError::invalid(field, format!("{field} must be {what}")));
    }
    Ok(s)
}

fn parse_secret(provider: Integration, value: &Value) -> Result<Secret<String>, ApiError> {
    let field = provider.secret_field();
    let s = token_text(
        field,
        value,
        MAX_SECRET_CHARS,
        |c| !c.is_control(),
        "at most 2048 printable characters",
    )?;
    if provider == Integration::Slack {
        return slack_webhook(field, value);
    }
    Ok(Secret(s.to_string()))
}

/// A Slack incoming webhook URL in the body field `field`.
pub fn slack_webhook(field: &str, value: &Value) -> Result<Secret<String>, ApiError> {
    let url = string(field, value)?;
    if url.chars().count() > MAX_SECRET_CHARS || !is_slack_webhook(url) {
        return Err(ApiError::invalid(
            field,
            format!(
                "{field} must be a Slack incoming webhook URL (https://hooks.slack.com/services/...)"
            ),
        ));
    }
    Ok(Secret(url.to_string()))
}

/// `https://hooks.slack.com/services/T…/B…/…` (the seed's shape).
fn is_slack_webhook(url: &str) -> bool {
    let Some(path) = url.strip_prefix("https://hooks.slack.com/services/") else {
        return false;
    };
    let parts: Vec<&str> = path.split('/').collect();
    let upper_id = |s: &str| {
        (9..=11).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    };
    matches!(parts.as_slice(), [team, bot, secret]
        if upper_id(team) && upper_id(bot) && secret.len() >= 24 && secret.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// A Linear team UUID or team key (`ENG`); resolved to the UUID when checked.
fn team_ref(field: &'static str, value: &Value) -> Result<Value, ApiError> {
    Ok(json!(token_text(
        field,
        value,
        100,
        is_id_char,
        "a team id or key such as ENG"
    )?))
}

/// Monday board ids are numeric; accepted as a string or a number.
fn monday_board(field: &'static str, value: &Value) -> Result<Value, ApiError> {
    let text = match value {
        Value::Number(n) if n.is_u64() => n.to_string(),
        other => string(field, other)?.to_string(),
    };
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid(
            field,
            "boardId must be a numeric Monday.com board id",
        ));
    }
    Ok(json!(text))
}

fn monday_group(field: &'static str, value: &Value) -> Result<Value, ApiError> {
    Ok(json!(token_text(
        field,
        value,
        100,
        is_id_char,
        "a Monday.com group id"
    )?))
}

/// `<site>.atlassian.net`; a scheme and a trailing `/` are tolerated and dropped.
fn jira_domain(field: &'static str, value: &Value) -> Result<Value, ApiError> {
    let raw = string(field, value)?.to_ascii_lowercase();
    let host = raw
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let site = host.strip_suffix(".atlassian.net").unwrap_or("");
    let label_ok = !site.is_empty()
        && site.len() <= 63
        && site
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !site.starts_with('-')
        && !site.ends_with('-');
    if !label_ok {
        return Err(ApiError::invalid(
            field,
            "domain must be a valid Atlassian Cloud domain (*.atlassian.net)",
        ));
    }
    Ok(json!(host))
}

fn email(field: &'static str, value: &Value) -> Result<Value, ApiError> {
    let email = orgd_core::users::Email::parse(string(field, value)?)
        .ok_or_else(|| ApiError::invalid(field, "email must be a valid email address"))?;
    Ok(json!(email.as_str()))
}

/// Jira project keys: a letter, then letters, digits or `_`; stored upper-case.
fn jira_project(field: &'static str, value: &Value) -> Result<Value, ApiError> {
    let key = string(field, value)?.to_ascii_uppercase();
    let valid = key.len() <= 255
        && key.starts_with(|c: char| c.is_ascii_uppercase())
        && key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(ApiError::invalid(
            field,
            "projectKey must be a Jira project key such as ENG",
        ));
    }
    Ok(json!(key))
}

fn github_owner(field: &'static str, value: &Value) -> Result<Value, ApiError> {
    let owner = token_text(
        field,
        value,
        39,
        |c| c.is_ascii_alphanumeric() || c == '-',
        "a GitHub user or organization",
    )?;
    if owner.starts_with('-') {
        return Err(ApiError::invalid(
            field,
            "owner must be a GitHub user or organization",
        ));
    }
    Ok(json!(owner))
}

/// GitHub and Bitbucket repository names/slugs.
fn repo_name(field: &'static str, value: &Value) -> Result<Value, ApiError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let name = token_text(
        field,
        value,
        100,
        ok,
        "a repository name (letters, digits, - _ .)",
    )?;
    if name == "." || name == ".." {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be a repository name"),
        ));
    }
    Ok(json!(name))
}

/// A customer's base URL (GitHub Enterprise API root, self-managed GitLab): `https://` (or
/// `http://`, which only an address the operator allows passes when it is checked), without
/// credentials, query or fragment. Its addresses are checked when the settings are.
fn base_url(field: &'static str, value: &Value) -> Result<Value, ApiError> {
    let url = string(field, value)?.trim_end_matches('/');
    let host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .map(|rest| rest.split('/').next().unwrap_or(""));
    let valid = host.is_some_and(|h| !h.is_empty())
        && !url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '@' | '?' | '#'))
        && url.len() <= 2048;
    if !valid {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be an https:// URL"),
        ));
    }
    Ok(json!(url))
}

/// A character Azure DevOps allows in project, repository and type names (and Jira in issue
/// type names): none of the reserved ones.
fn name_char(c: char) -> bool {
    !c.is_control() && !"\\/:*?\"<>|;#$%{}+=[]".contains(c)
}

/// A Jira issue type or Azure DevOps work item type name (`Bug`, `User Story`); the
/// provider's own spelling is stored once checked.
fn type_name(field: &'static str, value: &Value) -> Result<Value, ApiError> {
    Ok(json!(token_text(
        field,
        value,
        128,
        name_char,
        "an issue type name such as Bug"
    )?))
}

/// An Azure DevOps repository name or id.
fn azure_repository(field: &'static str, value: &Value) -> Result<Value, ApiError> {
    let name = token_text(
        field,
        value,
        64,
        name_char,
        "an Azure DevOps repository name or id",
    )?;
    if name.starts_with('.') || name.starts_with('_') || name.ends_with('.') {
        return Err(ApiError::invalid(
            field,
            "repository must be an Azure DevOps repository name or id",
        ));
    }
    Ok(json!(name))
}

/// A numeric project id or a `group/subgroup/project` path.
fn gitlab_project(field: &'static str, value: &Value) -> Result<Value, ApiError> {
    if let Value::Number(n) = value {
        return match n.as_u64() {
            Some(id) if id > 0 => Ok(json!(id.to_string())),
            _ => Err(ApiError::invalid(
                field,
                "projectId must be a positive number or a project path",
            )),
        };
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    let path = token_text(
        field,
        value,
        255,
        ok,
        "a project id or a path such as group/project",
    )?;
    if path.starts_with('/') || path.ends_with('/') || path.contains("//") {
        return Err(ApiError::invalid(
            field,
            "projectId must be a project id or a path such as group/project",
        ));
    }
    Ok(json!(path))
}

fn azure_organization(field: &'static str, value: &Value) -> Result<Value, ApiError> {
    let org = token_text(
        field,
        value,
        50,
        |c| c.is_ascii_alphanumeric() || c == '-',
        "an Azure DevOps organization name",
    )?;
    if org.starts_with('-') || org.ends_with('-') {
        return Err(ApiError::invalid(
            field,
            "organization must be an Azure DevOps organization name",
        ));
    }
    Ok(json!(org))
}

/// Azure DevOps project names: up to 64 characters, none of its reserved ones.
fn azure_project(field: &'static str, value: &Value) -> Result<Value, ApiError> {
    let name = token_text(field, value, 64, name_char, "an Azure DevOps project name")?;
    if name.starts_with('_') || name.ends_with('.') {
        return Err(ApiError::invalid(
            field,
            "project must be an Azure DevOps project name",
        ));
    }
    Ok(json!(name))
}

fn bitbucket_workspace(field: &'static str, value: &Value) -> Result<Value, ApiError> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    let lower = string(field, value)?.to_ascii_lowercase();
    Ok(json!(token_text(
        field,
        &json!(lower),
        62,
        ok,
        "a Bitbucket workspace id"
    )?))
}

/// The Slack events of an integration never given any.
pub const DEFAULT_SLACK_EVENTS: [&str; 3] = ["FAILED", "ERROR", "UNSTABLE"];

/// A subset of the execution statuses that notify; duplicates dropped, order kept.
pub fn slack_events(field: &str, value: &Value) -> Result<Value, ApiError> {
    const EVENTS: [&str; 4] = ["PASSED", "FAILED", "ERROR", "UNSTABLE"];
    let invalid = || {
        ApiError::invalid(
            field,
            format!("{field} must be an array of PASSED, FAILED, ERROR, UNSTABLE"),
        )
    };
    let list = value.as_array().ok_or_else(invalid)?;
    let mut events: Vec<&str> = Vec::new();
    for item in list {
        let event = item
            .as_str()
            .filter(|e| EVENTS.contains(e))
            .ok_or_else(invalid)?;
        if !events.contains(&event) {
            events.push(event);
        }
    }
    Ok(json!(events))
}

/// An integration as shown: `enabled` and the provider's settings, never its credential.
/// `github`: owner, repo, baseUrl, issuesEnabled; `gitlab`: projectId, baseUrl, projectPath;
/// `azuredevops`: organization, project, repository, workItemType; `bitbucket`: email,
/// workspace, repoSlug, issuesEnabled; `jira`: domain, email, projectKey, issueType,
/// tokenKind (`classic`/`scoped`); `linear`: teamId, teamKey, teamName; `monday`: boardId,
/// groupId; `slack`: events. A field a row saved before it existed lacks is `null`. A
/// provider never configured answers `{"enabled": false}`.
#[derive(Serialize, ToSchema)]
pub struct IntegrationView {
    enabled: bool,
    #[serde(flatten)]
    #[schema(ignore)]
    settings: Map<String, Value>,
    /// How the calls orgd made with the saved integration went.
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<HealthView>,
}

impl IntegrationView {
    pub(super) fn new(enabled: bool, settings: Map<String, Value>) -> Self {
        Self {
            enabled,
            settings,
            health: None,
        }
    }

    pub(super) fn with_health(mut self, health: HealthView) -> Self {
        self.health = Some(health);
        self
    }
}

/// An integration's health: `ok`, `failing` (the latest call failed), `disabled` (switched
/// off, by an admin or by orgd) or `unused` (nothing called it since its credentials were saved).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthView {
    #[schema(pattern = "^(ok|failing|disabled|unused)$")]
    status: &'static str,
    last_success_at: Option<Timestamp>,
    last_failure_at: Option<Timestamp>,
    /// In our words; never a secret or a provider's raw answer.
    last_error: Option<String>,
    consecutive_failures: i64,
}

impl HealthView {
    pub fn new(record: Option<&IntegrationRecord>, health: Option<Health>) -> Self {
        let health = health.unwrap_or_default();
        let status = match record {
            None => "unused",
            Some(record) if !record.enabled => "disabled",
            Some(_) if health.consecutive_failures > 0 => "failing",
            Some(_) if health.last_success_at.is_some() => "ok",
            Some(_) => "unused",
        };
        Self {
            status,
            last_success_at: health.last_success_at.map(Timestamp),
            last_failure_at: health.last_failure_at.map(Timestamp),
            last_error: health.last_error,
            consecutive_failures: health.consecutive_failures,
        }
    }
}

/// Opens an organization's stored credential for `provider`.
pub fn open_secret(
    app: &AppState,
    organization_id: &str,
    provider: Integration,
    sealed: &str,
) -> Result<Secret<String>, ApiError> {
    app.vault
        .open(
            sealed,
            &SecretTable::Integrations.binding(organization_id, provider.as_str()),
        )
        .or_internal("Failed to read integration credentials")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(parse: fn(&'static str, &Value) -> Result<Value, ApiError>, v: Value) -> Option<Value> {
        parse("f", &v).ok()
    }

    #[test]
    fn field_rules() {
        assert_eq!(
            ok(jira_domain, json!("https://Acme.atlassian.net/")),
            Some(json!("acme.atlassian.net"))
        );
        assert_eq!(ok(jira_domain, json!("acme.atlassian.net.evil.com")), None);
        assert_eq!(ok(jira_domain, json!(".atlassian.net")), None);
        assert_eq!(ok(jira_domain, json!("a_b.atlassian.net")), None);
        assert!(is_slack_webhook(
            "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
        ));
        assert!(!is_slack_webhook(
            "https://hooks.slack.com.evil.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
        ));
        assert!(!is_slack_webhook(
            "http://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
        ));
        assert!(!is_slack_webhook(
            "https://hooks.slack.com/services/T00000000/B00000000/short"
        ));
        assert_eq!(
            ok(base_url, json!("https://gitlab.example.com/")),
            Some(json!("https://gitlab.example.com"))
        );
        assert_eq!(
            ok(base_url, json!("http://127.0.0.1:8080")),
            Some(json!("http://127.0.0.1:8080"))
        );
        assert_eq!(ok(base_url, json!("ftp://gitlab.example.com")), None);
        assert_eq!(
            ok(base_url, json!("https://user:pw@gitlab.example.com")),
            None
        );
        assert_eq!(ok(base_url, json!("https://")), None);
        assert_eq!(
            ok(type_name, json!("User Story")),
            Some(json!("User Story"))
        );
        assert_eq!(ok(type_name, json!("a/b")), None);
        assert_eq!(
            ok(azure_repository, json!("shop-web")),
            Some(json!("shop-web"))
        );
        assert_eq!(ok(azure_repository, json!("_x")), None);
        assert_eq!(ok(gitlab_project, json!(42)), Some(json!("42")));
        assert_eq!(
            ok(gitlab_project, json!("group/sub/project")),
            Some(json!("group/sub/project"))
        );
        assert_eq!(ok(gitlab_project, json!("/abs")), None);
        assert_eq!(ok(monday_board, json!(123)), Some(json!("123")));
        assert_eq!(ok(monday_board, json!("12a")), None);
        assert_eq!(
            ok(slack_events, json!(["FAILED", "FAILED", "ERROR"])),
            Some(json!(["FAILED", "ERROR"]))
        );
        assert_eq!(ok(slack_events, json!(["BROKEN"])), None);
        assert_eq!(ok(slack_events, json!("FAILED")), None);
        assert_eq!(ok(repo_name, json!("..")), None);
        assert_eq!(ok(github_owner, json!("-x")), None);
        assert_eq!(ok(jira_project, json!("eng")), Some(json!("ENG")));
        assert_eq!(ok(team_ref, json!("")), None);
        assert_eq!(ok(team_ref, json!(" ")), None);
        assert_eq!(ok(team_ref, json!(5)), None);
    }
}

//! Jira, GitHub, GitLab, Azure DevOps and Bitbucket against their loopback fakes
//! (`orgd-fakes`): settings checked before they are saved, tickets filed from executions
//! (what each tracker received, the links, the audit), and the ways either is refused.

use std::time::Duration;

use orgd_fakes::azure_devops::{self as ado, FakeAzureDevOps};
use orgd_fakes::bitbucket::{self as bb, FakeBitbucket};
use orgd_fakes::common::{Behaviour, Seen};
use orgd_fakes::github::{self as gh, FakeGitHub};
use orgd_fakes::gitlab::{self as gl, FakeGitLab};
use orgd_fakes::jira::{self, FakeJira};
use orgd_providers::ssrf::PrivateAddresses;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, Session, TestApp, assert_error, call};
use crate::integrations::{audit_details, eventually, insert_execution, links, put};
use orgd::Config;

crate::backend_tests!(
    settings_are_checked_before_they_are_saved,
    jira_classic_and_scoped_tokens,
    customer_base_urls_follow_the_address_rules,
    tickets_are_filed_linked_and_audited,
    issues_disabled_and_incomplete_rows,
    replays_and_broken_answers,
    a_ticket_created_after_the_client_left_is_still_linked,
);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Jira,
    GitHub,
    GitLab,
    AzureDevOps,
    Bitbucket,
}

const ALL: [Kind; 5] = [
    Kind::Jira,
    Kind::GitHub,
    Kind::GitLab,
    Kind::AzureDevOps,
    Kind::Bitbucket,
];

impl Kind {
    fn provider(self) -> &'static str {
        match self {
            Self::Jira => "jira",
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
            Self::AzureDevOps => "azuredevops",
            Self::Bitbucket => "bitbucket",
        }
    }

    fn display_name(self) -> &'static str {
        match self {
            Self::Jira => "Jira",
            Self::GitHub => "GitHub",
            Self::GitLab => "GitLab",
            Self::AzureDevOps => "Azure DevOps",
            Self::Bitbucket => "Bitbucket",
        }
    }

    fn route(self) -> &'static str {
        match self {
            Self::Jira => "/api/jira/issues",
            Self::GitHub => "/api/github/issues",
            Self::GitLab => "/api/gitlab/issues",
            Self::AzureDevOps => "/api/azuredevops/workitems",
            Self::Bitbucket => "/api/bitbucket/issues",
        }
    }

    fn secret_field(self) -> &'static str {
        match self {
            Self::Jira => "apiToken",
            _ => "token",
        }
    }

    fn secret(self) -> &'static str {
        match self {
            Self::Jira => jira::JIRA_CLASSIC_TOKEN,
            Self::GitHub => gh::GITHUB_TOKEN,
            Self::GitLab => gl::GITLAB_TOKEN,
            Self::AzureDevOps => ado::ADO_PAT,
            Self::Bitbucket => bb::BITBUCKET_TOKEN,
        }
    }

    /// What `issueId` looks like.
    fn issue_id_ok(self, id: &str) -> bool {
        match self {
            Self::Jira => id.starts_with("ENG-"),
            Self::AzureDevOps => !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
            _ => id
                .strip_prefix('#')
                .is_some_and(|n| n.parse::<u64>().is_ok()),
        }
    }
}

/// The five trackers' fakes, for any test that saves or uses a tracker integration.
pub struct Fakes {
    pub jira: FakeJira,
    pub github: FakeGitHub,
    pub gitlab: FakeGitLab,
    pub azure: FakeAzureDevOps,
    pub bitbucket: FakeBitbucket,
}

impl Fakes {
    pub async fn spawn() -> Self {
        Self {
            jira: FakeJira::spawn().await,
            github: FakeGitHub::spawn().await,
            gitlab: FakeGitLab::spawn().await,
            azure: FakeAzureDevOps::spawn().await,
            bitbucket: FakeBitbucket::spawn().await,
        }
    }

    /// Points `config` at the fakes, with loopback addresses allowed (GitLab is reached
    /// through its `baseUrl`, as a self-managed instance).
    pub fn configure(&self, config: &mut Config) {
        config.trackers.jira_site = Some(self.jira.site_url());
        config.trackers.jira_gateway = self.jira.gateway_url();
        config.trackers.github = self.github.api_url();
        config.trackers.azure_devops = self.azure.api_url();
        config.trackers.bitbucket = self.bitbucket.api_url();
        config.delivery.private_urls = PrivateAddresses::Allowed;
    }

    /// A first save of `provider` the fake accepts, with `token` as its credential (the fake
    /// is told to accept it).
    pub fn save_body_with(&self, provider: &str, token: &str) -> Value {
        let kind = ALL
            .into_iter()
            .find(|k| k.provider() == provider)
            .expect("a tracker");
        match kind {
            Kind::Jira => {
                self.jira
                    .add_credential(jira::JIRA_EMAIL, token, jira::TokenKind::Classic)
            }
            Kind::GitHub => self.github.add_token(token, true),
            Kind::GitLab => self.gitlab.add_token(token, true),
            Kind::AzureDevOps => self.azure.add_pat(token),
            Kind::Bitbucket => self.bitbucket.add_credential(bb::BITBUCKET_EMAIL, token),
        }
        let mut body = self.save_body(kind);
        body[kind.secret_field()] = json!(token);
        body
    }
}

struct World {
    app: TestApp,
    fakes: Fakes,
}

impl std::ops::Deref for World {
    type Target = Fakes;

    fn deref(&self) -> &Fakes {
        &self.fakes
    }
}

async fn world(backend: Backend) -> World {
    let fakes = Fakes::spawn().await;
    let app = TestApp::spawn_with(backend, |c| {
        fakes.configure(c);
        c.provider_timeout = Duration::from_millis(1500);
        c.public_url = Some("https://orgd.example".into());
        c.rate_limit_per_minute = 10_000;
    })
    .await;
    World { app, fakes }
}

impl Fakes {
    /// A first save the tracker accepts.
    fn save_body(&self, kind: Kind) -> Value {
        match kind {
            Kind::Jira => json!({"domain": "acme.atlassian.net", "email": jira::JIRA_EMAIL,
                "apiToken": jira::JIRA_CLASSIC_TOKEN, "projectKey": "eng", "issueType": "bug"}),
            Kind::GitHub => {
                json!({"token": gh::GITHUB_TOKEN, "owner": gh::GITHUB_OWNER, "repo": gh::GITHUB_REPO})
            }
            Kind::GitLab => json!({"token": gl::GITLAB_TOKEN, "projectId": gl::GITLAB_PROJECT_PATH,
                "baseUrl": self.gitlab.base_url()}),
            Kind::AzureDevOps => json!({"token": ado::ADO_PAT, "organization": ado::ADO_ORG,
                "project": ado::ADO_PROJECT, "repository": ado::ADO_REPO}),
            Kind::Bitbucket => json!({"email": bb::BITBUCKET_EMAIL, "token": bb::BITBUCKET_TOKEN,
                "workspace": bb::BITBUCKET_WORKSPACE, "repoSlug": bb::BITBUCKET_REPO}),
        }
    }

    /// What `GET` shows after `save_body` (health aside): the tracker's spellings and what
    /// the check learned.
    fn shown(&self, kind: Kind) -> Value {
        match kind {
            Kind::Jira => {
                json!({"enabled": true, "domain": "acme.atlassian.net", "email": jira::JIRA_EMAIL,
                "projectKey": "ENG", "issueType": "Bug", "tokenKind": "classic"})
            }
            Kind::GitHub => {
                json!({"enabled": true, "owner": gh::GITHUB_OWNER, "repo": gh::GITHUB_REPO,
                "baseUrl": null, "issuesEnabled": true})
            }
            Kind::GitLab => json!({"enabled": true, "projectId": gl::GITLAB_PROJECT_PATH,
                "baseUrl": self.gitlab.base_url(), "projectPath": gl::GITLAB_PROJECT_PATH}),
            Kind::AzureDevOps => json!({"enabled": true, "organization": ado::ADO_ORG,
                "project": ado::ADO_PROJECT, "repository": ado::ADO_REPO, "workItemType": "Bug"}),
            Kind::Bitbucket => json!({"enabled": true, "email": bb::BITBUCKET_EMAIL,
                "workspace": bb::BITBUCKET_WORKSPACE, "repoSlug": bb::BITBUCKET_REPO, "issuesEnabled": true}),
        }
    }

    /// A save naming something the tracker does not have, and the error it gets.
    fn unknown(&self, kind: Kind) -> Vec<(Value, &'static str)> {
        let with = |changes: Value| {
            let mut body = self.save_body(kind);
            for (k, v) in changes.as_object().into_iter().flatten() {
                body[k] = v.clone();
            }
            body
        };
        match kind {
            Kind::Jira => vec![
                (with(json!({"projectKey": "NOPE"})), "Invalid projectKey"),
                (
                    with(json!({"projectKey": jira::JIRA_OTHER_PROJECT})),
                    "Invalid issueType",
                ),
            ],
            Kind::GitHub => vec![(with(json!({"repo": "nope"})), "Invalid repo")],
            Kind::GitLab => vec![(with(json!({"projectId": 999})), "Invalid projectId")],
            Kind::AzureDevOps => vec![
                (with(json!({"project": "Nope"})), "Invalid project"),
                (
                    with(json!({"project": ado::ADO_BASIC_PROJECT})),
                    "Invalid workItemType",
                ),
            ],
            Kind::Bitbucket => vec![(with(json!({"repoSlug": "nope"})), "Invalid repoSlug")],
        }
    }

    /// A repository whose issues are off, when the tracker has such a thing.
    fn without_issues(&self, kind: Kind) -> Option<Value> {
        let mut body = self.save_body(kind);
        match kind {
            Kind::GitHub => body["repo"] = json!(gh::GITHUB_REPO_NO_ISSUES),
            Kind::GitLab => body["projectId"] = json!(gl::GITLAB_NO_ISSUES_PROJECT_ID),
            Kind::Bitbucket => body["repoSlug"] = json!(bb::BITBUCKET_REPO_NO_ISSUES),
            Kind::Jira | Kind::AzureDevOps => return None,
        }
        Some(body)
    }

    fn inject(&self, kind: Kind, matcher: &str, times: usize, behaviour: Behaviour) {
        match kind {
            Kind::Jira => self.jira.inject(matcher, times, behaviour),
            Kind::GitHub => self.github.inject(matcher, times, behaviour),
            Kind::GitLab => self.gitlab.inject(matcher, times, behaviour),
            Kind::AzureDevOps => self.azure.inject(matcher, times, behaviour),
            Kind::Bitbucket => self.bitbucket.inject(matcher, times, behaviour),
        }
    }

    fn clear_injections(&self) {
        self.jira.clear_injections();
        self.github.clear_injections();
        self.gitlab.clear_injections();
        self.azure.clear_injections();
        self.bitbucket.clear_injections();
    }

    /// The tracker's way of saying "slow down" for two minutes.
    fn rate_limited(&self, kind: Kind) -> Behaviour {
        match kind {
            Kind::Jira => jira::rate_limited(120),
            Kind::GitHub => gh::secondary_rate_limit(120),
            Kind::GitLab => gl::rate_limited(120),
            Kind::AzureDevOps => ado::blocked(120),
            Kind::Bitbucket => bb::rate_limited(Some(120)),
        }
    }

    fn created(&self, kind: Kind) -> usize {
        match kind {
            Kind::Jira => self.jira.issues().len(),
            Kind::GitHub => self.github.issues().len(),
            Kind::GitLab => self.gitlab.issues().len(),
            Kind::AzureDevOps => self.azure.work_items().len(),
            Kind::Bitbucket => self.bitbucket.issues().len(),
        }
    }

    /// The latest create the tracker received.
    fn last_create(&self, kind: Kind) -> Seen {
        let seen = match kind {
            Kind::Jira => self.jira.last("POST "),
            Kind::GitHub => self.github.last("POST "),
            Kind::GitLab => self.gitlab.last("POST "),
            Kind::AzureDevOps => self.azure.last("POST "),
            Kind::Bitbucket => self.bitbucket.last("POST "),
        };
        seen.expect("a create was received")
    }
}

impl World {
    async fn save(&self, admin: &Session, kind: Kind) {
        let (status, body) = put(
            &self.app,
            &admin.token,
            kind.provider(),
            self.save_body(kind),
        )
        .await;
        assert_eq!(status, 200, "{kind:?}: {body}");
    }
}

/// `GET /api/integrations/:provider`'s `data`, health included.
async fn shown(app: &TestApp, token: &str, provider: &str) -> Value {
    let (status, body) = call(app.get(&format!("/api/integrations/{provider}"), token)).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

fn without_health(mut data: Value) -> Value {
    if let Some(map) = data.as_object_mut() {
        map.remove("health");
    }
    data
}

async fn file(app: &TestApp, token: &str, kind: Kind, body: Value) -> (u16, Value) {
    call(app.send_json(Method::POST, kind.route(), token, body)).await
}

async fn tickets(app: &TestApp, token: &str, task_id: &str) -> Value {
    let (status, body) = call(app.get(&format!("/api/executions/{task_id}"), token)).await;
    assert_eq!(status, 200, "{body}");
    body["data"]["execution"]["tickets"].clone()
}

async fn settings_are_checked_before_they_are_saved(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Tracker Settings").await;
    for kind in ALL {
        let provider = kind.provider();
        let before = shown(app, &admin.token, provider).await;
        assert_eq!(before["enabled"], json!(false));

        // Refused checks change nothing, health included.
        let mut bad_token = w.save_body(kind);
        bad_token[kind.secret_field()] = json!("wrong-token-0123456789");
        let mut refusals = vec![(bad_token, 400, "Invalid credentials")];
        refusals.extend(w.unknown(kind).into_iter().map(|(b, e)| (b, 400, e)));
        for (body, status, error) in refusals {
            let (code, answer) = put(app, &admin.token, provider, body).await;
            assert_error(code, &answer, status, error);
            assert!(
                answer["message"]
                    .as_str()
                    .unwrap()
                    .contains(kind.display_name()),
                "{answer}"
            );
        }
        w.inject(kind, "GET ", 1, w.rate_limited(kind));
        let res = app
            .send_json(
                Method::PUT,
                &format!("/api/integrations/{provider}"),
                &admin.token,
                w.save_body(kind),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["retry-after"], "120", "{kind:?}");
        let (code, answer) = crate::helpers::read(res).await;
        assert_error(code, &answer, 503, "Provider rate limited");
        assert_eq!(answer["retryAfter"], json!(120));
        w.inject(
            kind,
            "GET ",
            5,
            Behaviour::json(500, json!({"message": "boom"})),
        );
        let (code, answer) = put(app, &admin.token, provider, w.save_body(kind)).await;
        assert_error(code, &answer, 502, "Provider error");
        assert!(!answer.to_string().contains("boom"), "{answer}");
        w.clear_injections();
        assert_eq!(shown(app, &admin.token, provider).await, before, "{kind:?}");

        let (code, answer) = put(app, &admin.token, provider, w.save_body(kind)).await;
        assert_eq!(code, 200, "{kind:?}: {answer}");
        assert_eq!(
            answer,
            json!({"success": true, "message": format!("{} integration saved successfully", kind.display_name())})
        );
        let saved = shown(app, &admin.token, provider).await;
        assert_eq!(without_health(saved.clone()), w.shown(kind), "{kind:?}");
        assert!(!saved.to_string().contains(kind.secret()), "{saved}");

        // A refused check of a saved integration leaves it (and its health) as it was.
        let mut bad_token = w.save_body(kind);
        bad_token[kind.secret_field()] = json!("wrong-token-0123456789");
        let (code, answer) = put(app, &admin.token, provider, bad_token).await;
        assert_error(code, &answer, 400, "Invalid credentials");
        assert_eq!(shown(app, &admin.token, provider).await, saved, "{kind:?}");
        // Only the switch: no call.
        let (code, _) = put(app, &admin.token, provider, json!({"enabled": false})).await;
        assert_eq!(code, 200);
    }
    let audit = audit_details(app, &admin.org_id, "integration.updated").await;
    assert_eq!(audit.len(), 10, "one save and one switch each: {audit:?}");
    let text = json!(audit).to_string();
    for kind in ALL {
        assert!(!text.contains(kind.secret()), "{kind:?} in the audit");
    }
}

async fn jira_classic_and_scoped_tokens(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Jira Kinds").await;
    insert_execution(app, &admin.org_id, "run-j").await;
    w.save(&admin, Kind::Jira).await;
    assert_eq!(
        shown(app, &admin.token, "jira").await["tokenKind"],
        json!("classic")
    );
    let (status, body) = file(
        app,
        &admin.token,
        Kind::Jira,
        json!({"taskId": "run-j", "title": "Classic"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        !w.jira.issues()[0].via_gateway,
        "a classic token calls the site"
    );

    // A scoped token is refused by the site: the gateway, with the site's cloud id.
    let (status, body) = put(
        app,
        &admin.token,
        "jira",
        json!({"apiToken": jira::JIRA_SCOPED_TOKEN}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        shown(app, &admin.token, "jira").await["tokenKind"],
        json!("scoped")
    );
    let (status, body) = file(
        app,
        &admin.token,
        Kind::Jira,
        json!({"taskId": "run-j", "title": "Scoped"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        w.jira.issues()[1].via_gateway,
        "a scoped token calls the gateway"
    );
    let create = w.jira.last("POST ").unwrap();
    assert!(
        create.path.starts_with(&format!(
            "/ex/jira/{}/rest/api/3/issue",
            jira::JIRA_CLOUD_ID
        )),
        "{}",
        create.path
    );
    // The link for people is the site's (`JIRA_API_URL` here), whichever API was called.
    assert_eq!(
        body["data"]["issueUrl"],
        json!(format!("{}/browse/ENG-2", w.jira.site_url()))
    );
}

async fn customer_base_urls_follow_the_address_rules(backend: Backend) {
    // The operator allows no private address: a loopback or private baseUrl is refused
    // before anything is sent.
    let strict = TestApp::spawn(backend.clone()).await;
    let admin = strict.signup("Strict").await;
    let ghes = FakeGitHub::spawn_enterprise().await;
    let refused = [
        (
            "github",
            json!({"token": gh::GITHUB_TOKEN, "owner": "acme", "repo": "shop", "baseUrl": ghes.api_url()}),
        ),
        (
            "gitlab",
            json!({"token": gl::GITLAB_TOKEN, "projectId": 42, "baseUrl": "https://10.1.2.3"}),
        ),
        (
            "gitlab",
            json!({"token": gl::GITLAB_TOKEN, "projectId": 42, "baseUrl": "http://192.168.0.10:8080"}),
        ),
    ];
    for (provider, body) in refused {
        let (status, answer) = put(&strict, &admin.token, provider, body).await;
        assert_error(status, &answer, 400, "Invalid baseUrl");
    }
    assert!(ghes.seen().is_empty());
    strict.stop().await;

    // Allowed by the operator: a GitHub Enterprise root is checked and used.
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Enterprise").await;
    insert_execution(app, &admin.org_id, "run-e").await;
    let body = json!({"token": gh::GITHUB_TOKEN, "owner": "acme", "repo": "shop", "baseUrl": ghes.api_url()});
    let (status, answer) = put(app, &admin.token, "github", body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        shown(app, &admin.token, "github").await["baseUrl"],
        json!(ghes.api_url())
    );
    let (status, answer) = file(
        app,
        &admin.token,
        Kind::GitHub,
        json!({"taskId": "run-e", "title": "On GHES"}),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert!(
        answer["data"]["issueUrl"]
            .as_str()
            .unwrap()
            .starts_with("https://ghe.example.com/acme/shop/issues/")
    );
    assert_eq!(ghes.issues().len(), 1);
    assert!(w.github.issues().is_empty(), "GITHUB_API_URL was not used");
}

async fn tickets_are_filed_linked_and_audited(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Tracker Tickets").await;
    let execution = insert_execution(app, &admin.org_id, "run-t").await;
    let developer = app.add_member(&admin.org_id, "developer").await;
    let description = "## Failure\nThe **checkout** failed at `pay()`: see [logs](https://ci.example/1).\n\n- first\n- second\n\n```\nAssertionError <b>\n```";
    for kind in ALL {
        w.save(&admin, kind).await;
        let with_secret = format!("{description}\n\nToken used: {}", kind.secret());
        let (status, body) = file(
            app,
            &developer.token,
            kind,
            json!({"taskId": "run-t", "title": format!("{kind:?} <broke>"), "description": with_secret}),
        )
        .await;
        assert_eq!(status, 201, "{kind:?}: {body}");
        let id = body["data"]["issueId"].as_str().unwrap();
        assert!(kind.issue_id_ok(id), "{kind:?}: {id}");
        assert_eq!(body["success"], json!(true));
        assert_eq!(w.created(kind), 1);
        let sent = w.last_create(kind);
        let text = sent.body_text();
        assert!(
            !text.contains(kind.secret()),
            "{kind:?} sent its secret: {text}"
        );
        assert!(text.contains("[REDACTED]"), "{kind:?}: {text}");
        assert!(
            text.contains("orgd.example/executions/run-t"),
            "{kind:?} links back: {text}"
        );
        let audit = audit_details(
            app,
            &admin.org_id,
            &format!("{}.issue_created", kind.provider()),
        )
        .await;
        assert_eq!(
            audit,
            [json!({"issueId": id, "issueUrl": body["data"]["issueUrl"], "taskId": "run-t"})],
            "{kind:?}"
        );
    }

    // What each tracker received, in its own form.
    let adf = &w.jira.issues()[0].fields["description"];
    assert_eq!(adf["type"], json!("doc"));
    assert_eq!(
        adf["content"][0],
        json!({"type": "heading", "attrs": {"level": 2}, "content": [{"type": "text", "text": "Failure"}]})
    );
    let code = adf["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == json!("codeBlock"))
        .unwrap();
    assert_eq!(code["content"][0]["text"], json!("AssertionError <b>"));
    assert!(jira::validate_adf(adf).is_ok());
    let item = &w.azure.work_items()[0];
    let patch = item.patch.as_array().unwrap();
    assert!(patch.iter().all(|op| op["op"] == json!("add")));
    assert!(patch.contains(
        &json!({"op": "add", "path": "/fields/System.Title", "value": "AzureDevOps <broke>"})
    ));
    let html = item.fields["Microsoft.VSTS.TCM.ReproSteps"]
        .as_str()
        .unwrap();
    assert!(
        html.contains("<h2>Failure</h2>") && html.contains("<strong>checkout</strong>"),
        "{html}"
    );
    assert!(
        html.contains("AssertionError &lt;b&gt;") && !html.contains("<b>"),
        "{html}"
    );
    let sent = w.last_create(Kind::AzureDevOps);
    assert_eq!(
        sent.header("content-type"),
        Some("application/json-patch+json")
    );
    let sent = w.last_create(Kind::GitHub);
    assert!(sent.header("user-agent").unwrap().starts_with("orgd/"));
    assert_eq!(
        sent.header("x-github-api-version"),
        Some(gh::GITHUB_API_VERSION)
    );
    let body = w.github.issues()[0].body.clone().unwrap();
    assert!(
        body.starts_with("## Failure\nThe **checkout**"),
        "Markdown as it is: {body}"
    );
    let description = w.gitlab.issues()[0].description.clone().unwrap();
    assert!(description.starts_with("## Failure\n"), "{description}");
    assert!(
        w.last_create(Kind::GitLab).path.contains("acme%2Fshop"),
        "the path stays one segment"
    );
    let content = w.bitbucket.issues()[0].content.clone().unwrap();
    assert!(content.starts_with("## Failure\n"), "{content}");

    // The execution lists every ticket, oldest first.
    let listed = tickets(app, &admin.token, "run-t").await;
    let providers: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["provider"].as_str().unwrap())
        .collect();
    assert_eq!(
        providers,
        ["jira", "github", "gitlab", "azuredevops", "bitbucket"]
    );
    for ticket in listed.as_array().unwrap() {
        assert_eq!(ticket["createdBy"], json!(developer.user_id));
    }
    assert_eq!(links(app, &execution).await.len(), 5);
}

async fn issues_disabled_and_incomplete_rows(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Tracker Limits").await;
    let execution = insert_execution(app, &admin.org_id, "run-d").await;
    let ticket = json!({"taskId": "run-d", "title": "Nope"});
    for kind in ALL {
        let (status, body) = file(app, &admin.token, kind, ticket.clone()).await;
        assert_error(status, &body, 400, "Integration not configured");
        let Some(save) = w.without_issues(kind) else {
            continue;
        };
        // Saved (pull-request comments still work); tickets are refused without a call.
        let (status, body) = put(app, &admin.token, kind.provider(), save).await;
        assert_eq!(status, 200, "{kind:?}: {body}");
        let (status, body) = file(app, &admin.token, kind, ticket.clone()).await;
        assert_error(status, &body, 400, "Issues disabled");
        assert_eq!(w.created(kind), 0);
    }
    assert_eq!(
        shown(app, &admin.token, "github").await["issuesEnabled"],
        json!(false)
    );
    assert_eq!(
        shown(app, &admin.token, "bitbucket").await["issuesEnabled"],
        json!(false)
    );

    // Issues turned off after the save: the tracker's own refusal says the same.
    w.save(&admin, Kind::GitHub).await;
    w.github
        .set_has_issues(gh::GITHUB_OWNER, gh::GITHUB_REPO, false);
    let (status, body) = file(app, &admin.token, Kind::GitHub, ticket.clone()).await;
    assert_error(status, &body, 400, "Issues disabled");

    // Rows saved under the earlier field lists: what a ticket needs and they lack is named.
    for (kind, lacks) in [(Kind::Jira, "projectKey"), (Kind::Bitbucket, "email")] {
        w.save(&admin, kind).await;
        let settings: String = sqlx::query_scalar(
            "SELECT settings FROM integrations WHERE organization_id = $1 AND provider = $2",
        )
        .bind(&admin.org_id)
        .bind(kind.provider())
        .fetch_one(&app.db)
        .await
        .unwrap();
        let mut settings: Value = serde_json::from_str(&settings).unwrap();
        settings.as_object_mut().unwrap().remove(lacks);
        sqlx::query(
            "UPDATE integrations SET settings = $1 WHERE organization_id = $2 AND provider = $3",
        )
        .bind(settings.to_string())
        .bind(&admin.org_id)
        .bind(kind.provider())
        .execute(&app.db)
        .await
        .unwrap();
        app.organization_changed(&admin.org_id).await;
        assert_eq!(
            shown(app, &admin.token, kind.provider()).await[lacks],
            Value::Null
        );
        let (status, body) = file(app, &admin.token, kind, ticket.clone()).await;
        assert_error(status, &body, 400, "Integration incomplete");
        assert!(body["message"].as_str().unwrap().contains(lacks), "{body}");
        // Switching it off and on needs nothing more; a checked save needs the field.
        let (status, _) = put(app, &admin.token, kind.provider(), json!({"enabled": true})).await;
        assert_eq!(status, 200);
        let secret_only = json!({kind.secret_field(): kind.secret()});
        let (status, body) = put(app, &admin.token, kind.provider(), secret_only).await;
        assert_error(status, &body, 400, &format!("Invalid {lacks}"));
    }
    assert!(links(app, &execution).await.is_empty());
    assert_eq!(w.created(Kind::Jira) + w.created(Kind::Bitbucket), 0);
}

async fn replays_and_broken_answers(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Tracker Replays").await;
    let execution = insert_execution(app, &admin.org_id, "run-r").await;
    let mut expected_links = 0;
    for kind in ALL {
        w.save(&admin, kind).await;
        let ticket = json!({"taskId": "run-r", "title": "Once"});
        let send = || {
            app.send_json(Method::POST, kind.route(), &admin.token, ticket.clone())
                .header("Idempotency-Key", format!("key-{}", kind.provider()))
        };
        let first = send().send().await.unwrap();
        assert_eq!(first.status(), 201, "{kind:?}");
        let first: Value = first.json().await.unwrap();
        let again = send().send().await.unwrap();
        assert_eq!(again.status(), 201);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.json::<Value>().await.unwrap(), first);
        assert_eq!(w.created(kind), 1, "{kind:?}: a replay creates nothing");
        expected_links += 1;

        // Answers that are not the tracker's API: nothing is linked.
        let broken = [
            Behaviour::html(200, "<html><body>Sign in</body></html>"),
            Behaviour::TruncateAfterWork(12),
            Behaviour::json(201, json!({})),
        ];
        for behaviour in broken {
            w.inject(kind, "POST ", 1, behaviour.clone());
            let (status, body) = file(
                app,
                &admin.token,
                kind,
                json!({"taskId": "run-r", "title": "Broken"}),
            )
            .await;
            assert_error(status, &body, 502, "Provider error");
            assert_eq!(
                links(app, &execution).await.len(),
                expected_links,
                "{kind:?} {behaviour:?}"
            );
        }
        w.clear_injections();
        let health = shown(app, &admin.token, kind.provider()).await["health"].clone();
        assert_eq!(health["status"], json!("failing"), "{kind:?}: {health}");
    }
}

async fn a_ticket_created_after_the_client_left_is_still_linked(backend: Backend) {
    let w = world(backend).await;
    let app = &w.app;
    let admin = app.signup("Tracker Leavers").await;
    let execution = insert_execution(app, &admin.org_id, "run-l").await;
    for (n, kind) in ALL.into_iter().enumerate() {
        w.save(&admin, kind).await;
        w.inject(
            kind,
            "POST ",
            1,
            Behaviour::DelayAfter(Duration::from_millis(1000)),
        );
        let send = || {
            app.send_json(
                Method::POST,
                kind.route(),
                &admin.token,
                json!({"taskId": "run-l", "title": "Left early"}),
            )
            .header("Idempotency-Key", "leaving")
        };
        let gave_up = send().timeout(Duration::from_millis(300)).send().await;
        assert!(
            gave_up.is_err(),
            "{kind:?}: the client should have given up"
        );
        eventually(|| async { links(app, &execution).await.len() == n + 1 }).await;
        assert_eq!(w.created(kind), 1, "{kind:?}");
        // The client's retry with its key gets the answer it missed.
        let again = send().send().await.unwrap();
        assert_eq!(again.headers()["idempotent-replayed"], "true", "{kind:?}");
        assert_eq!(again.status(), 201);
        assert_eq!(w.created(kind), 1, "{kind:?}: nothing is created again");
    }
    let found = links(app, &execution).await;
    let providers: Vec<&str> = found.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(providers, ALL.map(Kind::provider));
}

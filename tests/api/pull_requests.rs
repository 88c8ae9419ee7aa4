//! Pull-request comments: a run reported with `ci` gets one comment per (provider,
//! repository, pull request, group) once it finishes, posted through the outbox and edited by
//! later runs — never by an older one; a comment deleted on the tracker is posted anew; runs
//! finishing together post one comment. The trackers are the loopback fakes; the service runs
//! on a manual clock, so retries are due only when a test advances it.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, Session, TestApp, assert_error, call};
use crate::llm_fakes::{FakeLlm, Kind, ROOT_CAUSE};
use crate::notifications::{PUBLIC_URL, analysis_switch, eventually};
use orgd_fakes::azure_devops::{ADO_ORG, ADO_PAT, ADO_PROJECT, ADO_REPO, AzureDevOps};
use orgd_fakes::bitbucket::{
    BITBUCKET_EMAIL, BITBUCKET_REPO, BITBUCKET_TOKEN, BITBUCKET_WORKSPACE, Bitbucket,
};
use orgd_fakes::common::{Behaviour, Fake};
use orgd_fakes::github::{GITHUB_OWNER, GITHUB_REPO, GITHUB_TOKEN, GitHub};

backend_tests!(
    a_run_posts_one_comment_and_later_runs_edit_it,
    the_comment_waits_for_the_analysis,
    an_older_run_never_overwrites_a_newer_one,
    runs_finishing_together_post_one_comment,
    a_deleted_comment_is_posted_anew,
    bitbucket_and_azure_devops_comments,
    refused_comments_feed_health_and_never_disable,
    ci_is_validated_with_dotted_names,
);

struct Trackers {
    github: Fake<GitHub>,
    bitbucket: Fake<Bitbucket>,
    azure: Fake<AzureDevOps>,
}

async fn app(backend: Backend) -> (TestApp, Trackers, Session) {
    app_with(backend, |_| {}).await
}

async fn app_with(
    backend: Backend,
    tweak: impl FnOnce(&mut orgd::Config),
) -> (TestApp, Trackers, Session) {
    let trackers = Trackers {
        github: Fake::<GitHub>::spawn().await,
        bitbucket: Fake::<Bitbucket>::spawn().await,
        azure: Fake::<AzureDevOps>::spawn().await,
    };
    let (github, bitbucket, azure) = (
        trackers.github.api_url(),
        trackers.bitbucket.api_url(),
        trackers.azure.api_url(),
    );
    let app = TestApp::spawn_with(backend, move |c| {
        c.trackers.github = github;
        c.trackers.bitbucket = bitbucket;
        c.trackers.azure_devops = azure;
        c.delivery.poll_interval = Duration::from_millis(50);
        c.delivery.retry_schedule = vec![Duration::from_secs(1), Duration::from_secs(1)];
        c.public_url = Some(PUBLIC_URL.into());
        c.rate_limit_per_minute = 10_000;
        c.ingest_rate_limit_per_minute = 10_000;
        tweak(c);
    })
    .await;
    let admin = app.signup("PR Org").await;
    // Room for several runs at once.
    sqlx::query("UPDATE organizations SET plan = 'enterprise' WHERE id = $1")
        .bind(&admin.org_id)
        .execute(&app.db)
        .await
        .expect("plan");
    app.organization_changed(&admin.org_id).await;
    // Comments waiting for an analysis: `the_comment_waits_for_the_analysis`.
    analysis_switch(&app, &admin, false).await;
    (app, trackers, admin)
}

async fn connect(app: &TestApp, admin: &Session, provider: &str, body: Value) {
    let (status, answer) = call(app.send_json(
        Method::PUT,
        &format!("/api/integrations/{provider}"),
        &admin.token,
        body,
    ))
    .await;
    assert_eq!(status, 200, "{answer}");
}

async fn connect_github(app: &TestApp, admin: &Session) {
    let body = json!({"token": GITHUB_TOKEN, "owner": GITHUB_OWNER, "repo": GITHUB_REPO});
    connect(app, admin, "github", body).await;
}

/// Creates a RUNNING run reporting to `ci`, in `group`.
async fn start(app: &TestApp, s: &Session, task_id: &str, group: Option<&str>, ci: Value) {
    let mut body = json!({"taskId": task_id, "status": "RUNNING", "ci": ci});
    if let Some(group) = group {
        body["groupName"] = json!(group);
    }
    let (code, answer) = call(app.send_json(Method::POST, "/api/executions", &s.token, body)).await;
    assert_eq!(code, 201, "{answer}");
}

async fn finish(app: &TestApp, s: &Session, task_id: &str, status: &str, error: &str) {
    let (code, answer) = call(app.send_json(
        Method::PATCH,
        &format!("/api/executions/{task_id}"),
        &s.token,
        json!({"status": status, "error": error}),
    ))
    .await;
    assert_eq!(code, 200, "{answer}");
}

fn github_pr(number: u64) -> Value {
    json!({"provider": "github", "pullRequest": number, "commitSha": "0123456789abcdef",
           "buildUrl": "https://ci.example.com/builds/1"})
}

/// The live (not deleted) GitHub comments on `number`.
fn live_comments(github: &Fake<GitHub>, number: u64) -> Vec<String> {
    github
        .comments()
        .into_iter()
        .filter(|c| c.number == number && !c.deleted)
        .map(|c| c.body)
        .collect()
}

/// The outbox rows for pull requests, by status.
async fn pr_rows(app: &TestApp, status: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE channel = 'pull_request' AND status = $1")
        .bind(status)
        .fetch_one(&app.db)
        .await
        .expect("count")
}

/// Waits until `count` pull-request rows are `status`, moving the manual clock past the
/// short waits of rows that found the comment held.
async fn settle(app: &TestApp, status: &str, count: i64) {
    for _ in 0..100 {
        if pr_rows(app, status).await >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.clock.advance(2_500);
        app.state.wake_outbox();
    }
    panic!("timed out waiting for {count} {status} rows");
}

async fn health(app: &TestApp, admin: &Session, provider: &str) -> Value {
    let (status, body) =
        call(app.get(&format!("/api/integrations/{provider}"), &admin.token)).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

async fn a_run_posts_one_comment_and_later_runs_edit_it(backend: Backend) {
    let (app, trackers, admin) = app(backend).await;
    let github = &trackers.github;
    connect_github(&app, &admin).await;
    start(&app, &admin, "run-1", None, github_pr(7)).await;
    let (_, view) = call(app.get("/api/executions/run-1", &admin.token)).await;
    assert_eq!(view["data"]["execution"]["ci"], github_pr(7));
    app.clock.advance(1_000);
    finish(
        &app,
        &admin,
        "run-1",
        "FAILED",
        "\nAssertionError: expected 200 got 500\n  at x",
    )
    .await;
    eventually("the comment", || live_comments(github, 7).len() == 1).await;
    let body = &live_comments(github, 7)[0];
    let org = &admin.org_id;
    assert!(
        body.starts_with(&format!("<!-- orgd:{org}:default -->")),
        "{body}"
    );
    assert!(body.contains("FAILED `run-1`"), "{body}");
    assert!(
        body.contains("AssertionError: expected 200 got 500"),
        "{body}"
    );
    assert!(!body.contains("at x"), "{body}");
    assert!(
        body.contains(&format!("{PUBLIC_URL}/executions/run-1")),
        "{body}"
    );
    assert!(body.contains("(https://ci.example.com/builds/1)"), "{body}");
    let seen = github
        .last("POST /repos/acme/shop/issues/7/comments")
        .expect("posted");
    assert_eq!(seen.header("x-github-api-version"), Some("2022-11-28"));
    assert!(seen.header("user-agent").is_some());

    // A later run on the same pull request edits the comment; PASSED runs post too.
    start(&app, &admin, "run-2", None, github_pr(7)).await;
    app.clock.advance(1_000);
    finish(&app, &admin, "run-2", "PASSED", "").await;
    eventually("the edit", || {
        github.comments().first().is_some_and(|c| c.edits == 1)
    })
    .await;
    let comments = github.comments();
    assert_eq!(comments.len(), 1, "one comment per pull request and group");
    assert!(
        comments[0].body.contains("PASSED `run-2`"),
        "{}",
        comments[0].body
    );

    // Another group is another comment; another pull request too.
    start(&app, &admin, "run-3", Some("nightly"), github_pr(7)).await;
    start(&app, &admin, "run-4", None, github_pr(8)).await;
    finish(&app, &admin, "run-3", "ERROR", "boom").await;
    finish(&app, &admin, "run-4", "UNSTABLE", "flaky").await;
    eventually("two more comments", || github.comments().len() == 3).await;
    assert!(
        live_comments(github, 7)
            .iter()
            .any(|b| b.contains(&format!("orgd:{org}:nightly")))
    );
    assert_eq!(live_comments(github, 8).len(), 1);
    let data = health(&app, &admin, "github").await;
    assert_eq!(data["health"]["status"], "ok", "{data}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pr_rows(&app, "delivered").await, 4);
}

async fn the_comment_waits_for_the_analysis(backend: Backend) {
    let openai = FakeLlm::start(Kind::OpenAi, &["sk-platform"]).await;
    let gemini = FakeLlm::start(Kind::Gemini, &["gm-platform"]).await;
    let (openai_url, gemini_url) = (openai.url.clone(), gemini.url.clone());
    let (app, trackers, admin) = app_with(backend, move |c| {
        c.ai.openai_api_url = openai_url;
        c.ai.gemini_api_url = gemini_url;
        c.ai.openai_api_key = Some(orgd::config::Secret("sk-platform".into()));
        c.ai.gemini_api_key = Some(orgd::config::Secret("gm-platform".into()));
    })
    .await;
    let github = &trackers.github;
    analysis_switch(&app, &admin, true).await;
    connect_github(&app, &admin).await;
    start(&app, &admin, "analysed", None, github_pr(30)).await;
    // The run's error quotes a stored credential: it leaves orgd redacted.
    let error = format!("401 from GitHub with token {GITHUB_TOKEN}");
    finish(&app, &admin, "analysed", "FAILED", &error).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        github.comments().is_empty(),
        "the comment waits for the analysis"
    );
    orgd::analyst::run_pending_once(&app.state)
        .await
        .expect("analysis");
    app.state.wake_outbox();
    eventually("the comment after the analysis", || {
        github.comments().len() == 1
    })
    .await;
    let body = &github.comments()[0].body;
    assert!(body.contains(ROOT_CAUSE), "{body}");
    assert!(
        body.contains("[REDACTED]") && !body.contains(GITHUB_TOKEN),
        "{body}"
    );
}

async fn an_older_run_never_overwrites_a_newer_one(backend: Backend) {
    let (app, trackers, admin) = app(backend).await;
    let github = &trackers.github;
    connect_github(&app, &admin).await;
    start(&app, &admin, "older", None, github_pr(3)).await;
    start(&app, &admin, "newer", None, github_pr(3)).await;
    // The older run's post fails once (retried a second later)...
    github.inject(
        "POST /repos/acme/shop/issues/3/comments",
        1,
        Behaviour::Respond(orgd_fakes::github::error(502, "Server Error")),
    );
    finish(&app, &admin, "older", "FAILED", "old failure").await;
    eventually("the failed attempt", || github.pending_injections() == 0).await;
    // ...while the newer run, finishing later, is shown first.
    app.clock.advance(500);
    finish(&app, &admin, "newer", "PASSED", "").await;
    eventually("the newer comment", || live_comments(github, 3).len() == 1).await;
    settle(&app, "delivered", 2).await;
    let comments = github.comments();
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0].body.contains("PASSED `newer`"),
        "{}",
        comments[0].body
    );
    assert_eq!(comments[0].edits, 0, "the older run did not overwrite it");
}

async fn runs_finishing_together_post_one_comment(backend: Backend) {
    let (app, trackers, admin) = app(backend).await;
    let github = &trackers.github;
    connect_github(&app, &admin).await;
    // Slow posts, so the runs' deliveries overlap.
    github.inject(
        "POST /repos/acme/shop/issues/5/comments",
        1,
        Behaviour::DelayBefore(Duration::from_millis(400)),
    );
    let runs: Vec<String> = (0..4).map(|n| format!("together-{n}")).collect();
    for run in &runs {
        start(&app, &admin, run, None, github_pr(5)).await;
    }
    let finishing = runs
        .iter()
        .map(|run| finish(&app, &admin, run, "FAILED", "same failure"));
    futures_util::future::join_all(finishing).await;
    // Those that found the comment held retry two seconds later.
    settle(&app, "delivered", 4).await;
    assert_eq!(
        github.comments().len(),
        1,
        "one comment for runs finishing together"
    );
    assert_eq!(github.count("POST /repos/acme/shop/issues/5/comments"), 1);
}

async fn a_deleted_comment_is_posted_anew(backend: Backend) {
    let (app, trackers, admin) = app(backend).await;
    let github = &trackers.github;
    connect_github(&app, &admin).await;
    start(&app, &admin, "first", None, github_pr(9)).await;
    finish(&app, &admin, "first", "FAILED", "x").await;
    eventually("the comment", || github.comments().len() == 1).await;
    let first = github.comments()[0].id;
    github.delete_comment(first);
    app.clock.advance(1_000);
    start(&app, &admin, "second", None, github_pr(9)).await;
    finish(&app, &admin, "second", "FAILED", "y").await;
    eventually("a new comment", || live_comments(github, 9).len() == 1).await;
    let second = github
        .comments()
        .into_iter()
        .find(|c| !c.deleted)
        .expect("new");
    assert_ne!(second.id, first);
    // The new comment is the one kept: the next run edits it.
    app.clock.advance(1_000);
    start(&app, &admin, "third", None, github_pr(9)).await;
    finish(&app, &admin, "third", "PASSED", "").await;
    eventually("the edit of the new comment", || {
        github.comment(second.id).is_some_and(|c| c.edits == 1)
    })
    .await;
    assert_eq!(github.comments().len(), 2);
}

async fn bitbucket_and_azure_devops_comments(backend: Backend) {
    let (app, trackers, admin) = app(backend).await;
    connect(
        &app,
        &admin,
        "bitbucket",
        json!({"email": BITBUCKET_EMAIL, "token": BITBUCKET_TOKEN,
               "workspace": BITBUCKET_WORKSPACE, "repoSlug": BITBUCKET_REPO}),
    )
    .await;
    connect(
        &app,
        &admin,
        "azuredevops",
        json!({"token": ADO_PAT, "organization": ADO_ORG, "project": ADO_PROJECT}),
    )
    .await;
    let bitbucket = json!({"provider": "bitbucket", "pullRequest": 4});
    let azure = json!({"provider": "azuredevops", "pullRequest": 11, "repository": ADO_REPO});
    for (n, ci) in [&bitbucket, &azure, &bitbucket, &azure]
        .into_iter()
        .enumerate()
    {
        let task = format!("bb-ado-{n}");
        start(&app, &admin, &task, None, ci.clone()).await;
        app.clock.advance(1_000);
        finish(&app, &admin, &task, "FAILED", &format!("failure {n}")).await;
        settle(&app, "delivered", n as i64 + 1).await;
    }
    let comments = trackers.bitbucket.comments();
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert_eq!((comments[0].pull_request, comments[0].edits), (4, 1));
    assert!(comments[0].raw.contains("failure 2"), "{}", comments[0].raw);
    let threads = trackers.azure.threads();
    assert_eq!(threads.len(), 1, "{threads:?}");
    assert_eq!(threads[0].pull_request, 11);
    assert_eq!(threads[0].comments[0].edits, 1);
    assert!(threads[0].comments[0].content.contains("failure 3"));
    // Without a repository of its own, an Azure DevOps run needs the integration's.
    start(
        &app,
        &admin,
        "no-repo",
        None,
        json!({"provider": "azuredevops", "pullRequest": 12}),
    )
    .await;
    finish(&app, &admin, "no-repo", "FAILED", "z").await;
    settle(&app, "failed", 1).await;
    let data = health(&app, &admin, "azuredevops").await;
    assert_eq!(data["health"]["status"], "failing", "{data}");
    assert!(
        data["health"]["lastError"]
            .as_str()
            .unwrap_or("")
            .contains("repository"),
        "{data}"
    );
}

async fn refused_comments_feed_health_and_never_disable(backend: Backend) {
    let (app, trackers, admin) = app(backend).await;
    let github = &trackers.github;
    connect_github(&app, &admin).await;
    github.revoke_all();
    for n in 0..3 {
        let task = format!("refused-{n}");
        start(&app, &admin, &task, None, github_pr(20)).await;
        finish(&app, &admin, &task, "FAILED", "x").await;
    }
    settle(&app, "failed", 3).await;
    let data = health(&app, &admin, "github").await;
    assert_eq!(
        data["enabled"], true,
        "trackers are never auto-disabled: {data}"
    );
    assert_eq!(data["health"]["status"], "failing", "{data}");
    assert_eq!(data["health"]["consecutiveFailures"], 3, "{data}");
    assert!(!data.to_string().contains(GITHUB_TOKEN));
    // A rate limit is retried after its Retry-After.
    github.add_token(GITHUB_TOKEN, true);
    github.inject(
        "POST /repos/acme/shop/issues/21/comments",
        1,
        orgd_fakes::github::secondary_rate_limit(1),
    );
    start(&app, &admin, "limited", None, github_pr(21)).await;
    finish(&app, &admin, "limited", "FAILED", "x").await;
    eventually("the limited attempt", || github.pending_injections() == 0).await;
    app.clock.advance(2_000);
    app.state.wake_outbox();
    eventually("the retried comment", || {
        live_comments(github, 21).len() == 1
    })
    .await;
    // A run without the tracker connected posts nothing.
    start(
        &app,
        &admin,
        "elsewhere",
        None,
        json!({"provider": "gitlab", "pullRequest": 1}),
    )
    .await;
    finish(&app, &admin, "elsewhere", "FAILED", "x").await;
    let rows: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox WHERE channel = 'pull_request' AND destination = 'gitlab'",
    )
    .fetch_one(&app.db)
    .await
    .expect("count");
    assert_eq!(rows, 0);
}

async fn ci_is_validated_with_dotted_names(backend: Backend) {
    let (app, _trackers, admin) = app(backend).await;
    let cases = [
        (json!("github#7"), "Invalid ci"),
        (json!({"pullRequest": 7}), "Invalid ci.provider"),
        (
            json!({"provider": "jira", "pullRequest": 7}),
            "Invalid ci.provider",
        ),
        (json!({"provider": "github"}), "Invalid ci.pullRequest"),
        (
            json!({"provider": "github", "pullRequest": 0}),
            "Invalid ci.pullRequest",
        ),
        (
            json!({"provider": "github", "pullRequest": -3}),
            "Invalid ci.pullRequest",
        ),
        (
            json!({"provider": "github", "pullRequest": "7"}),
            "Invalid ci.pullRequest",
        ),
        (
            json!({"provider": "github", "pullRequest": 1.5}),
            "Invalid ci.pullRequest",
        ),
        (
            json!({"provider": "github", "pullRequest": 7, "repository": "shop"}),
            "Invalid ci.repository",
        ),
        (
            json!({"provider": "bitbucket", "pullRequest": 7, "repository": "a/b/c"}),
            "Invalid ci.repository",
        ),
        (
            json!({"provider": "gitlab", "pullRequest": 7, "repository": "../x"}),
            "Invalid ci.repository",
        ),
        (
            json!({"provider": "github", "pullRequest": 7, "repository": 5}),
            "Invalid ci.repository",
        ),
        (
            json!({"provider": "github", "pullRequest": 7, "commitSha": "xyz"}),
            "Invalid ci.commitSha",
        ),
        (
            json!({"provider": "github", "pullRequest": 7, "buildUrl": "http://ci.example.com"}),
            "Invalid ci.buildUrl",
        ),
    ];
    for (n, (ci, error)) in cases.into_iter().enumerate() {
        let task = format!("invalid-{n}");
        let body = json!({"taskId": task, "ci": ci});
        let (status, answer) =
            call(app.send_json(Method::POST, "/api/executions", &admin.token, body)).await;
        assert_error(status, &answer, 400, error);
        let body = json!({"taskId": task, "image": "node:20", "command": "npm test", "ci": ci});
        let (status, answer) =
            call(app.send_json(Method::POST, "/api/execution-request", &admin.token, body)).await;
        assert_error(status, &answer, 400, error);
        let (status, _) = call(app.get(&format!("/api/executions/{task}"), &admin.token)).await;
        assert_eq!(status, 404, "nothing was created");
    }
    let ci = json!({"provider": "gitlab", "pullRequest": 2, "repository": "acme/platform/api",
                    "commitSha": "ABCDEF1"});
    let body = json!({"taskId": "requested", "image": "node:20", "command": "npm test", "ci": ci});
    let (status, answer) =
        call(app.send_json(Method::POST, "/api/execution-request", &admin.token, body)).await;
    assert_eq!(status, 200, "{answer}");
    let (_, view) = call(app.get("/api/executions/requested", &admin.token)).await;
    assert_eq!(
        view["data"]["execution"]["ci"],
        json!({"provider": "gitlab", "pullRequest": 2, "repository": "acme/platform/api",
               "commitSha": "abcdef1"})
    );
}

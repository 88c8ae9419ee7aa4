//! GitHub: repository checks, issues, the pull-request comment and its edits, rate limits,
//! GitHub Enterprise through the guarded client.

use orgd_fakes::github::{
    self, FakeGitHub, GITHUB_OWNER, GITHUB_READ_ONLY_TOKEN, GITHUB_REPO, GITHUB_REPO_NO_ISSUES,
    GITHUB_TOKEN,
};
use orgd_providers::client::ProviderError;
use orgd_providers::github::{GitHubClient, GitHubRepository, GitHubTarget};
use orgd_providers::tracker::CommentEdit;

use super::{customer, vendor};

const CREATE: &str = "POST /repos/{owner}/{repo}/issues";

fn client(fake: &FakeGitHub) -> GitHubClient {
    GitHubClient::new(vendor().0, customer(), fake.api_url())
}

fn target<'a>(token: &'a str, repo: &'a str) -> GitHubTarget<'a> {
    GitHubTarget {
        token,
        owner: GITHUB_OWNER,
        repo,
        base_url: None,
    }
}

#[tokio::test]
async fn repositories_are_checked_with_githubs_headers() {
    let fake = FakeGitHub::spawn().await;
    let github = client(&fake);
    assert_eq!(
        github
            .check_repository(&target(GITHUB_TOKEN, GITHUB_REPO))
            .await,
        Ok(GitHubRepository {
            full_name: "acme/shop".into(),
            has_issues: true
        })
    );
    let seen = fake.last("*").unwrap();
    assert_eq!(seen.line(), "GET /repos/acme/shop");
    assert_eq!(seen.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(seen.header("x-github-api-version"), Some("2022-11-28"));
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {GITHUB_TOKEN}").as_str())
    );
    assert!(seen.header("user-agent").unwrap().starts_with("orgd/"));

    let no_issues = github
        .check_repository(&target(GITHUB_TOKEN, GITHUB_REPO_NO_ISSUES))
        .await
        .unwrap();
    assert!(!no_issues.has_issues);
    assert_eq!(
        github.check_repository(&target(GITHUB_TOKEN, "nope")).await,
        Err(ProviderError::NotFound("repository"))
    );
    assert_eq!(
        github
            .check_repository(&target("ghp_wrong", GITHUB_REPO))
            .await,
        Err(ProviderError::InvalidCredentials)
    );
}

#[tokio::test]
async fn issues_are_created_once_and_refused_in_our_words() {
    let fake = FakeGitHub::spawn().await;
    let github = client(&fake);
    let ticket = github
        .create_issue(
            &target(GITHUB_TOKEN, GITHUB_REPO),
            "Test failed",
            "## Failure\n```\nx\n```",
        )
        .await
        .unwrap();
    assert_eq!(ticket.key, "#1");
    assert_eq!(ticket.url, "https://github.com/acme/shop/issues/1");
    assert!(ticket.id.parse::<u64>().unwrap() > i32::MAX as u64);
    let stored = &fake.issues()[0];
    assert_eq!(stored.body.as_deref(), Some("## Failure\n```\nx\n```"));

    assert_eq!(
        github
            .create_issue(&target(GITHUB_TOKEN, GITHUB_REPO_NO_ISSUES), "t", "")
            .await,
        Err(ProviderError::Refused("issues are disabled"))
    );
    assert_eq!(
        github
            .create_issue(&target(GITHUB_READ_ONLY_TOKEN, GITHUB_REPO), "t", "")
            .await,
        Err(ProviderError::InvalidCredentials)
    );
    assert_eq!(
        github
            .create_issue(&target(GITHUB_TOKEN, GITHUB_REPO), &"x".repeat(300), "")
            .await,
        Err(ProviderError::Refused("the issue was refused"))
    );
    assert_eq!(fake.issues().len(), 1);
}

#[tokio::test]
async fn the_pull_request_comment_is_edited_and_posted_anew_once_deleted() {
    let fake = FakeGitHub::spawn().await;
    let github = client(&fake);
    let repo = target(GITHUB_TOKEN, GITHUB_REPO);
    let posted = github.create_comment(&repo, 7, "first").await.unwrap();
    assert_eq!(posted.thread_id, None);
    assert!(posted.url.unwrap().contains("/pull/7#issuecomment-"));
    assert_eq!(
        github
            .edit_comment(&repo, posted.comment_id, "second")
            .await,
        Ok(CommentEdit::Edited)
    );
    let stored = fake.comment(posted.comment_id).unwrap();
    assert_eq!((stored.body.as_str(), stored.edits), ("second", 1));

    fake.delete_comment(posted.comment_id);
    assert_eq!(
        github.edit_comment(&repo, posted.comment_id, "third").await,
        Ok(CommentEdit::Gone)
    );
    let again = github.create_comment(&repo, 7, "third").await.unwrap();
    assert_ne!(again.comment_id, posted.comment_id);
}

#[tokio::test]
async fn short_rate_limits_are_waited_out_and_long_ones_reported() {
    let fake = FakeGitHub::spawn().await;
    let github = client(&fake);
    let repo = target(GITHUB_TOKEN, GITHUB_REPO);
    fake.inject(CREATE, 1, github::secondary_rate_limit(1));
    fake.inject(CREATE, 1, github::primary_rate_limit(1));
    github
        .create_issue(&repo, "after two limits", "")
        .await
        .unwrap();
    assert_eq!((fake.count(CREATE), fake.issues().len()), (3, 1));

    fake.inject(CREATE, 1, github::primary_rate_limit(120));
    match github.create_issue(&repo, "later", "").await {
        Err(ProviderError::RateLimited {
            retry_after_secs, ..
        }) => assert!(
            (118..=121).contains(&retry_after_secs),
            "{retry_after_secs}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.count(CREATE), 4, "a long wait is the caller's");
}

#[tokio::test]
async fn enterprise_goes_through_the_guarded_client_under_its_api_root() {
    let fake = FakeGitHub::spawn_enterprise().await;
    let github = GitHubClient::new(vendor().0, customer(), "http://127.0.0.1:9".into());
    let api = fake.api_url();
    let repo = GitHubTarget {
        base_url: Some(&api),
        ..target(GITHUB_TOKEN, GITHUB_REPO)
    };
    github.check_repository(&repo).await.unwrap();
    let ticket = github.create_issue(&repo, "t", "b").await.unwrap();
    assert_eq!(ticket.url, "https://ghe.example.com/acme/shop/issues/1");
    assert_eq!(
        fake.last("*").unwrap().path,
        "/api/v3/repos/acme/shop/issues"
    );
}

//! Bitbucket: email + API token, repository checks, issues (opt-in tracker), the pull-request
//! comment and its edits, rate limits.

use orgd_fakes::bitbucket::{
    self, BITBUCKET_EMAIL, BITBUCKET_REPO, BITBUCKET_REPO_NO_ISSUES, BITBUCKET_TOKEN,
    BITBUCKET_USERNAME, BITBUCKET_WORKSPACE, FakeBitbucket,
};
use orgd_fakes::common::{EditDeleted, basic_header};
use orgd_providers::bitbucket::{BitbucketClient, BitbucketRepository, BitbucketTarget};
use orgd_providers::client::ProviderError;
use orgd_providers::tracker::CommentEdit;

use super::vendor;

const CREATE: &str = "POST /2.0/repositories/{workspace}/{slug}/issues";

fn client(fake: &FakeBitbucket) -> BitbucketClient {
    BitbucketClient::new(vendor().0, fake.api_url())
}

fn target(repo_slug: &str) -> BitbucketTarget<'_> {
    BitbucketTarget {
        email: BITBUCKET_EMAIL,
        token: BITBUCKET_TOKEN,
        workspace: BITBUCKET_WORKSPACE,
        repo_slug,
    }
}

#[tokio::test]
async fn repositories_are_checked_with_email_and_token() {
    let fake = FakeBitbucket::spawn().await;
    let bitbucket = client(&fake);
    assert_eq!(
        bitbucket.check_repository(&target(BITBUCKET_REPO)).await,
        Ok(BitbucketRepository {
            full_name: "acme/shop".into(),
            has_issues: true
        })
    );
    let seen = fake.last("*").unwrap();
    assert_eq!(seen.path, "/2.0/repositories/acme/shop");
    assert_eq!(
        seen.header("authorization"),
        Some(basic_header(BITBUCKET_EMAIL, BITBUCKET_TOKEN).as_str())
    );
    let web = bitbucket
        .check_repository(&target(BITBUCKET_REPO_NO_ISSUES))
        .await
        .unwrap();
    assert!(!web.has_issues);
    assert_eq!(
        bitbucket.check_repository(&target("nope")).await,
        Err(ProviderError::NotFound("repository"))
    );
    let app_password_style = BitbucketTarget {
        email: BITBUCKET_USERNAME,
        ..target(BITBUCKET_REPO)
    };
    assert_eq!(
        bitbucket.check_repository(&app_password_style).await,
        Err(ProviderError::InvalidCredentials)
    );
}

#[tokio::test]
async fn issues_and_a_repository_without_a_tracker() {
    let fake = FakeBitbucket::spawn().await;
    let bitbucket = client(&fake);
    let ticket = bitbucket
        .create_issue(&target(BITBUCKET_REPO), "Test failed", "## Failure")
        .await
        .unwrap();
    assert_eq!((ticket.id.as_str(), ticket.key.as_str()), ("1", "#1"));
    assert_eq!(ticket.url, "https://bitbucket.org/acme/shop/issues/1");
    assert_eq!(fake.issues()[0].content.as_deref(), Some("## Failure"));
    assert_eq!(
        bitbucket
            .create_issue(&target(BITBUCKET_REPO_NO_ISSUES), "t", "")
            .await,
        Err(ProviderError::Refused("issues are disabled"))
    );
    assert_eq!(
        bitbucket
            .create_issue(&target(BITBUCKET_REPO), " ", "")
            .await,
        Err(ProviderError::Refused("the issue was refused"))
    );
}

#[tokio::test]
async fn rate_limits_without_retry_after_are_the_callers() {
    let fake = FakeBitbucket::spawn().await;
    let bitbucket = client(&fake);
    fake.inject(CREATE, 1, bitbucket::rate_limited(Some(1)));
    bitbucket
        .create_issue(&target(BITBUCKET_REPO), "once", "")
        .await
        .unwrap();
    assert_eq!(fake.count(CREATE), 2);
    fake.inject(CREATE, 1, bitbucket::rate_limited(None));
    assert_eq!(
        bitbucket
            .create_issue(&target(BITBUCKET_REPO), "later", "")
            .await,
        Err(ProviderError::RateLimited {
            retry_after_secs: 60,
            inline: true
        })
    );
    assert_eq!(fake.count(CREATE), 3);
}

#[tokio::test]
async fn the_pull_request_comment_is_edited_and_read_as_gone_once_deleted() {
    for mode in [EditDeleted::Succeeds, EditDeleted::NotFound] {
        let fake = FakeBitbucket::spawn().await;
        fake.set_edit_deleted(mode);
        let bitbucket = client(&fake);
        let repo = target(BITBUCKET_REPO);
        let posted = bitbucket.create_comment(&repo, 5, "first").await.unwrap();
        assert!(
            posted
                .url
                .unwrap()
                .ends_with(&format!("#comment-{}", posted.comment_id))
        );
        assert_eq!(
            bitbucket
                .edit_comment(&repo, 5, posted.comment_id, "second")
                .await,
            Ok(CommentEdit::Edited)
        );
        let stored = fake.comment(posted.comment_id).unwrap();
        assert_eq!((stored.raw.as_str(), stored.edits), ("second", 1));
        fake.delete_comment(posted.comment_id);
        assert_eq!(
            bitbucket
                .edit_comment(&repo, 5, posted.comment_id, "third")
                .await,
            Ok(CommentEdit::Gone)
        );
        assert_eq!(
            fake.comment(posted.comment_id).unwrap().edits,
            1,
            "{mode:?}"
        );
        assert_eq!(
            bitbucket.edit_comment(&repo, 5, 1, "x").await,
            Ok(CommentEdit::Gone)
        );
    }
}

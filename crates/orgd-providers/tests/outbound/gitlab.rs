//! GitLab: projects by id or encoded path (one segment), issues, the merge-request note and
//! its edits, throttling, self-managed instances through the guarded client.

use orgd_fakes::gitlab::{
    self, FakeGitLab, GITLAB_NESTED_PROJECT_ID, GITLAB_NESTED_PROJECT_PATH,
    GITLAB_NO_ISSUES_PROJECT_PATH, GITLAB_PROJECT_ID, GITLAB_PROJECT_PATH, GITLAB_READ_TOKEN,
    GITLAB_TOKEN,
};
use orgd_providers::client::ProviderError;
use orgd_providers::gitlab::{GitLabClient, GitLabProject, GitLabTarget};
use orgd_providers::tracker::CommentEdit;

use super::{customer, vendor};

fn client(fake: &FakeGitLab) -> GitLabClient {
    GitLabClient::new(vendor().0, customer(), fake.base_url())
}

fn target(project: &str) -> GitLabTarget<'_> {
    GitLabTarget {
        token: GITLAB_TOKEN,
        project,
        base_url: None,
    }
}

#[tokio::test]
async fn projects_by_id_or_by_a_path_kept_in_one_segment() {
    let fake = FakeGitLab::spawn().await;
    let gitlab = client(&fake);
    let by_id = gitlab.check_project(&target("42")).await.unwrap();
    assert_eq!(
        by_id,
        GitLabProject {
            id: GITLAB_PROJECT_ID,
            path_with_namespace: GITLAB_PROJECT_PATH.into(),
            issues_enabled: true
        }
    );
    let nested = gitlab
        .check_project(&target(GITLAB_NESTED_PROJECT_PATH))
        .await
        .unwrap();
    assert_eq!(nested.id, GITLAB_NESTED_PROJECT_ID);
    let seen = fake.last("*").unwrap();
    assert_eq!(seen.path, "/api/v4/projects/acme%2Fplatform%2Fapi");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {GITLAB_TOKEN}").as_str())
    );
    let docs = gitlab
        .check_project(&target(GITLAB_NO_ISSUES_PROJECT_PATH))
        .await
        .unwrap();
    assert!(!docs.issues_enabled);
    assert_eq!(
        gitlab.check_project(&target("acme/nope")).await,
        Err(ProviderError::NotFound("project"))
    );
    let wrong = GitLabTarget {
        token: "glpat-wrong",
        ..target("42")
    };
    assert_eq!(
        gitlab.check_project(&wrong).await,
        Err(ProviderError::InvalidCredentials)
    );
}

#[tokio::test]
async fn issues_and_their_refusals() {
    let fake = FakeGitLab::spawn().await;
    let gitlab = client(&fake);
    let ticket = gitlab
        .create_issue(&target(GITLAB_PROJECT_PATH), "Test failed", "## Failure")
        .await
        .unwrap();
    assert_eq!(ticket.key, "#1");
    assert_eq!(
        ticket.url,
        format!("{}/acme/shop/-/issues/1", fake.base_url())
    );
    assert_eq!(fake.issues()[0].description.as_deref(), Some("## Failure"));

    let read_only = GitLabTarget {
        token: GITLAB_READ_TOKEN,
        ..target("42")
    };
    assert_eq!(
        gitlab.create_issue(&read_only, "t", "").await,
        Err(ProviderError::InvalidCredentials)
    );
    assert_eq!(
        gitlab
            .create_issue(&target(GITLAB_NO_ISSUES_PROJECT_PATH), "t", "")
            .await,
        Err(ProviderError::InvalidCredentials),
        "GitLab answers a project without issues 403, like a missing permission"
    );
    assert_eq!(
        gitlab.create_issue(&target("42"), "  ", "").await,
        Err(ProviderError::Refused("the issue was refused"))
    );
    assert_eq!(fake.issues().len(), 1);
}

#[tokio::test]
async fn the_merge_request_note_is_edited_and_posted_anew_once_deleted() {
    let fake = FakeGitLab::spawn().await;
    let gitlab = client(&fake);
    let project = target(GITLAB_NESTED_PROJECT_PATH);
    let note = gitlab.create_note(&project, 3, "first").await.unwrap();
    assert_eq!((note.thread_id, note.url.as_deref()), (None, None));
    assert_eq!(
        gitlab
            .edit_note(&project, 3, note.comment_id, "second")
            .await,
        Ok(CommentEdit::Edited)
    );
    let stored = fake.note(note.comment_id).unwrap();
    assert_eq!((stored.body.as_str(), stored.edits), ("second", 1));
    fake.delete_note(note.comment_id);
    assert_eq!(
        gitlab
            .edit_note(&project, 3, note.comment_id, "third")
            .await,
        Ok(CommentEdit::Gone)
    );
}

#[tokio::test]
async fn throttling_is_waited_out_and_self_managed_goes_through_the_guarded_client() {
    let fake = FakeGitLab::spawn().await;
    let gitlab = GitLabClient::new(vendor().0, customer(), "http://127.0.0.1:9".into());
    let instance = fake.base_url();
    let project = GitLabTarget {
        base_url: Some(&instance),
        ..target(GITLAB_PROJECT_PATH)
    };
    fake.inject(
        "POST /api/v4/projects/{id}/issues",
        1,
        gitlab::rate_limited_plain(1),
    );
    gitlab
        .create_issue(&project, "throttled once", "")
        .await
        .unwrap();
    assert_eq!(fake.count("issues"), 2);
    assert_eq!(fake.issues().len(), 1);
}

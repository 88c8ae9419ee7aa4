//! Azure DevOps: project and work item type checks, JSON Patch work items with HTML
//! descriptions, the pull-request thread and its comment edits, sign-in pages, throttling.

use orgd_fakes::azure_devops::{
    self, ADO_BASIC_PROJECT, ADO_COLLECTION_ID, ADO_ORG, ADO_PAT, ADO_PROJECT, ADO_PROJECT_ID,
    ADO_REPO, FakeAzureDevOps,
};
use orgd_fakes::common::{Behaviour, EditDeleted, basic_header};
use orgd_providers::azure_devops::{
    AzureDevOpsClient, AzureDevOpsTarget, AzureProject, AzurePullRequest,
};
use orgd_providers::client::ProviderError;
use orgd_providers::tracker::CommentEdit;
use serde_json::json;

use super::vendor;

const CREATE: &str = "POST /{org}/{project}/_apis/wit/workitems/{type}";

fn client(fake: &FakeAzureDevOps) -> AzureDevOpsClient {
    AzureDevOpsClient::new(vendor().0, fake.api_url())
}

fn target(project: &str) -> AzureDevOpsTarget<'_> {
    AzureDevOpsTarget {
        token: ADO_PAT,
        organization: ADO_ORG,
        project,
    }
}

const PR: AzurePullRequest<'static> = AzurePullRequest {
    repository: ADO_REPO,
    number: 17,
};

#[tokio::test]
async fn projects_and_work_item_types_are_checked() {
    let fake = FakeAzureDevOps::spawn().await;
    let ado = client(&fake);
    assert_eq!(
        ado.check(&target(ADO_PROJECT), "bug").await,
        Ok(AzureProject {
            id: ADO_PROJECT_ID.into(),
            name: ADO_PROJECT.into(),
            work_item_type: "Bug".into()
        })
    );
    let seen = fake.last("*").unwrap();
    assert_eq!(seen.path, "/acme/Shop/_apis/wit/workitemtypes/bug");
    assert_eq!(seen.query_param("api-version").as_deref(), Some("7.1"));
    assert_eq!(seen.header("x-tfs-fedauthredirect"), Some("Suppress"));
    assert_eq!(
        seen.header("authorization"),
        Some(basic_header("", ADO_PAT).as_str())
    );

    assert_eq!(
        ado.check(&target(ADO_BASIC_PROJECT), "Bug").await,
        Err(ProviderError::NotFound("work item type"))
    );
    assert_eq!(
        ado.check(&target(ADO_BASIC_PROJECT), "Issue")
            .await
            .unwrap()
            .work_item_type,
        "Issue"
    );
    assert_eq!(
        ado.check(&target("Nope"), "Bug").await,
        Err(ProviderError::NotFound("project"))
    );
    let wrong = AzureDevOpsTarget {
        token: "expired",
        ..target(ADO_PROJECT)
    };
    assert_eq!(
        ado.check(&wrong, "Bug").await,
        Err(ProviderError::InvalidCredentials)
    );
    // A sign-in page where an answer should be is a refused token too.
    fake.inject(
        "GET /{org}/_apis/projects/{project}",
        1,
        Behaviour::html(203, "<html><title>Sign In</title></html>"),
    );
    assert_eq!(
        ado.check(&target(ADO_PROJECT), "Bug").await,
        Err(ProviderError::InvalidCredentials)
    );
}

#[tokio::test]
async fn work_items_are_json_patch_documents_with_html() {
    let fake = FakeAzureDevOps::spawn().await;
    let ado = client(&fake);
    let ticket = ado
        .create_work_item(
            &target(ADO_PROJECT),
            "Bug",
            "Test failed: checkout",
            "## Failure\n\nOn `main`: <script>x</script>",
        )
        .await
        .unwrap();
    assert_eq!((ticket.id.as_str(), ticket.key.as_str()), ("5001", "5001"));
    assert_eq!(
        ticket.url,
        format!(
            "{}/{ADO_ORG}/web/wi.aspx?pcguid={ADO_COLLECTION_ID}&id=5001",
            fake.api_url()
        )
    );
    let seen = fake.last(CREATE).unwrap();
    assert_eq!(seen.path, "/acme/Shop/_apis/wit/workitems/$Bug");
    assert_eq!(
        seen.header("content-type"),
        Some("application/json-patch+json")
    );
    let item = &fake.work_items()[0];
    assert_eq!(item.fields["System.Title"], "Test failed: checkout");
    let html = item.fields["System.Description"].as_str().unwrap();
    assert!(html.starts_with("<h2>Failure</h2>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;") && html.contains("<code>main</code>"),
        "{html}"
    );
    assert_eq!(item.fields["Microsoft.VSTS.TCM.ReproSteps"], json!(html));

    // Not a Bug: no Repro Steps (the type has no such field), and a name with a space.
    let task = ado
        .create_work_item(&target(ADO_BASIC_PROJECT), "Task", "t", "d")
        .await
        .unwrap();
    assert_eq!(task.key, "5002");
    assert_eq!(
        fake.last(CREATE).unwrap().path,
        "/acme/Platform%20Team/_apis/wit/workitems/$Task"
    );
    assert_eq!(
        ado.create_work_item(&target(ADO_BASIC_PROJECT), "Bug", "t", "d")
            .await,
        Err(ProviderError::NotFound("work item type"))
    );
    assert_eq!(
        ado.create_work_item(&target(ADO_PROJECT), "Bug", &"x".repeat(256), "")
            .await,
        Err(ProviderError::Refused(
            "a field of the work item was refused"
        ))
    );
}

#[tokio::test]
async fn throttling_is_waited_out_and_a_delay_warning_ignored() {
    let fake = FakeAzureDevOps::spawn().await;
    let ado = client(&fake);
    fake.inject(CREATE, 1, azure_devops::blocked(1));
    fake.inject(CREATE, 1, azure_devops::delayed(1));
    ado.create_work_item(&target(ADO_PROJECT), "Bug", "t", "")
        .await
        .unwrap();
    assert_eq!((fake.count(CREATE), fake.work_items().len()), (2, 1));
}

#[tokio::test]
async fn the_thread_comment_is_edited_and_read_as_gone_once_deleted() {
    for mode in [EditDeleted::Succeeds, EditDeleted::NotFound] {
        let fake = FakeAzureDevOps::spawn().await;
        fake.set_edit_deleted(mode);
        let ado = client(&fake);
        let project = target(ADO_PROJECT);
        let posted = ado.create_thread(&project, &PR, "first").await.unwrap();
        let thread_id = posted.thread_id.unwrap();
        assert_eq!(fake.threads()[0].pull_request, 17);
        assert_eq!(
            ado.edit_comment(&project, &PR, thread_id, posted.comment_id, "second")
                .await,
            Ok(CommentEdit::Edited)
        );
        let stored = fake.comment(thread_id, posted.comment_id).unwrap();
        assert_eq!((stored.content.as_str(), stored.edits), ("second", 1));

        fake.delete_comment(thread_id, posted.comment_id);
        assert_eq!(
            ado.edit_comment(&project, &PR, thread_id, posted.comment_id, "third")
                .await,
            Ok(CommentEdit::Gone)
        );
        let stored = fake.comment(thread_id, posted.comment_id).unwrap();
        assert_eq!(
            stored.edits, 1,
            "a deleted comment is not edited ({mode:?})"
        );
        assert_eq!(
            ado.edit_comment(&project, &PR, 999, 1, "x").await,
            Ok(CommentEdit::Gone)
        );
    }
    let fake = FakeAzureDevOps::spawn().await;
    let elsewhere = AzurePullRequest {
        repository: "nope",
        number: 1,
    };
    assert_eq!(
        client(&fake)
            .create_thread(&target(ADO_PROJECT), &elsewhere, "x")
            .await,
        Err(ProviderError::NotFound("repository"))
    );
}

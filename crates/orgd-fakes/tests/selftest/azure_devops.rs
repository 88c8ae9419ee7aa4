//! The Azure DevOps fake: PAT auth and its sign-in answers, api-version, work items as JSON
//! Patch, pull-request threads and comment edits, throttling headers.

use orgd_fakes::azure_devops::{
    self, ADO_BASIC_PROJECT, ADO_ORG, ADO_PAT, ADO_PROJECT, ADO_REPO, ADO_REPO_ID, AuthFailure,
    FakeAzureDevOps,
};
use orgd_fakes::common::EditDeleted;
use serde_json::{Value, json};

use super::{client, header, parts};

const V: &str = "api-version=7.1";

fn request(method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
    client()
        .request(method, url)
        .basic_auth("", Some(ADO_PAT))
        .header("Accept", "application/json")
        .header("X-TFS-FedAuthRedirect", "Suppress")
}

async fn send(builder: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    parts(builder.send().await.unwrap()).await
}

fn patch_doc(title: &str) -> Value {
    json!([
        {"op": "add", "path": "/fields/System.Title", "value": title},
        {"op": "add", "path": "/fields/Microsoft.VSTS.TCM.ReproSteps", "value": "<h2>Failure</h2><pre>trace</pre>"},
        {"op": "add", "path": "/fields/System.Tags", "value": "orgd; flaky"}
    ])
}

fn create(
    fake: &FakeAzureDevOps,
    project: &str,
    work_item_type: &str,
    doc: &Value,
) -> reqwest::RequestBuilder {
    request(
        reqwest::Method::POST,
        format!(
            "{}/{ADO_ORG}/{project}/_apis/wit/workitems/${work_item_type}?{V}",
            fake.api_url()
        ),
    )
    .header("Content-Type", "application/json-patch+json")
    .body(doc.to_string())
}

#[tokio::test]
async fn rejected_credentials_answer_like_azure_devops() {
    let fake = FakeAzureDevOps::spawn().await;
    let url = format!(
        "{}/{ADO_ORG}/_apis/projects/{ADO_PROJECT}?{V}",
        fake.api_url()
    );

    let (status, _, _) = send(request(reqwest::Method::GET, url.clone())).await;
    assert_eq!(status, 200);
    let other_user = client().get(&url).basic_auth("anyone", Some(ADO_PAT));
    assert_eq!(send(other_user).await.0, 200, "any user name works");

    let response = client()
        .get(&url)
        .basic_auth("", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 203);
    assert!(
        header(response.headers(), "content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(response.text().await.unwrap().contains("Sign In"));

    let suppressed = client()
        .get(&url)
        .basic_auth("", Some("wrong"))
        .header("X-TFS-FedAuthRedirect", "Suppress");
    assert_eq!(send(suppressed).await.0, 401);

    fake.set_auth_failure(AuthFailure::Redirect);
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 302);
    assert!(
        header(response.headers(), "location")
            .unwrap()
            .contains("_signin")
    );
}

#[tokio::test]
async fn api_version_projects_and_work_item_types() {
    let fake = FakeAzureDevOps::spawn().await;
    let base = fake.api_url();
    let (status, _, project) = send(request(
        reqwest::Method::GET,
        format!("{base}/{ADO_ORG}/_apis/projects/{ADO_PROJECT}?{V}"),
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(project["name"], ADO_PROJECT);
    assert!(project["id"].is_string());

    let (status, _, body) = send(request(
        reqwest::Method::GET,
        format!("{base}/{ADO_ORG}/_apis/projects/{ADO_PROJECT}"),
    ))
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["typeKey"], "VssVersionNotSpecifiedException");
    let (status, _, _) = send(request(
        reqwest::Method::GET,
        format!("{base}/{ADO_ORG}/_apis/projects/{ADO_PROJECT}?api-version=8.0"),
    ))
    .await;
    assert_eq!(status, 400);

    let (status, _, body) = send(request(
        reqwest::Method::GET,
        format!("{base}/{ADO_ORG}/_apis/projects/Nope?{V}"),
    ))
    .await;
    assert_eq!(status, 404);
    assert!(body["message"].as_str().unwrap().starts_with("TF200016"));
    assert_eq!(body["$id"], "1");

    let spaced = format!("{base}/{ADO_ORG}/Platform%20Team/_apis/wit/workitemtypes/Bug?{V}");
    let (status, _, body) = send(request(reqwest::Method::GET, spaced)).await;
    assert_eq!(status, 404, "the Basic process has no Bug");
    assert!(body["message"].as_str().unwrap().starts_with("VS402323"));
    let (status, _, bug) = send(request(
        reqwest::Method::GET,
        format!("{base}/{ADO_ORG}/{ADO_PROJECT}/_apis/wit/workitemtypes/Bug?{V}"),
    ))
    .await;
    assert_eq!((status, bug["name"].as_str()), (200, Some("Bug")));
    let (_, _, all) = send(request(
        reqwest::Method::GET,
        format!("{base}/{ADO_ORG}/{ADO_BASIC_PROJECT}/_apis/wit/workitemtypes?{V}"),
    ))
    .await;
    assert_eq!(all["count"], 3);
}

#[tokio::test]
async fn work_items_are_created_from_a_json_patch_document() {
    let fake = FakeAzureDevOps::spawn().await;
    let (status, _, item) =
        send(create(&fake, ADO_PROJECT, "Bug", &patch_doc("Test failed"))).await;
    assert_eq!(status, 200, "{item}");
    let id = item["id"].as_u64().unwrap();
    assert_eq!(item["rev"], 1);
    assert_eq!(item["fields"]["System.Title"], "Test failed");
    assert_eq!(item["fields"]["System.WorkItemType"], "Bug");
    let html = item["_links"]["html"]["href"].as_str().unwrap();
    assert!(html.contains("/acme/web/wi.aspx?pcguid=") && html.ends_with(&format!("&id={id}")));
    assert!(
        item["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/_apis/wit/workItems/{id}"))
    );
    assert_eq!(fake.work_items()[0].patch, patch_doc("Test failed"));

    let story = create(
        &fake,
        ADO_PROJECT,
        "User%20Story",
        &json!([{"op": "add", "path": "/fields/System.Title", "value": "s"}]),
    );
    assert_eq!(send(story).await.0, 200);

    let wrong_type = request(
        reqwest::Method::POST,
        format!(
            "{}/{ADO_ORG}/{ADO_PROJECT}/_apis/wit/workitems/$Bug?{V}",
            fake.api_url()
        ),
    )
    .json(&patch_doc("t"));
    let (status, _, body) = send(wrong_type).await;
    assert_eq!(
        (status, body["typeKey"].as_str()),
        (415, Some("VssRequestContentTypeNotSupportedException"))
    );

    let (status, _, body) = send(create(&fake, ADO_PROJECT, "Bug", &json!({"title": "t"}))).await;
    assert_eq!(
        (status, body["typeKey"].as_str()),
        (400, Some("VssPropertyValidationException"))
    );
    let (status, _, body) = send(create(
        &fake,
        ADO_PROJECT,
        "Bug",
        &json!([{"op": "add", "path": "/fields/System.Tags", "value": "x"}]),
    ))
    .await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().starts_with("TF401320"));
    let (status, _, body) = send(create(&fake, ADO_PROJECT, "Task", &patch_doc("t"))).await;
    assert_eq!(status, 400, "Tasks have no Repro Steps");
    assert!(body["message"].as_str().unwrap().starts_with("TF51535"));
    let (status, _, body) = send(create(&fake, ADO_PROJECT, "Defect", &patch_doc("t"))).await;
    assert_eq!(status, 404);
    assert!(body["message"].as_str().unwrap().starts_with("VS402323"));

    let validate = request(
        reqwest::Method::POST,
        format!(
            "{}/{ADO_ORG}/{ADO_PROJECT}/_apis/wit/workitems/$Bug?{V}&validateOnly=true",
            fake.api_url()
        ),
    )
    .header("Content-Type", "application/json-patch+json")
    .body(patch_doc("dry run").to_string());
    let (status, _, dry) = send(validate).await;
    assert_eq!(
        (status, dry["fields"]["System.Title"].as_str()),
        (200, Some("dry run"))
    );
    assert_eq!(fake.work_items().len(), 2, "validateOnly stores nothing");

    let (status, _, read) = send(request(
        reqwest::Method::GET,
        format!(
            "{}/{ADO_ORG}/{ADO_PROJECT}/_apis/wit/workitems/{id}?{V}",
            fake.api_url()
        ),
    ))
    .await;
    assert_eq!((status, read["id"].as_u64()), (200, Some(id)));
}

#[tokio::test]
async fn pull_request_threads_and_comment_edits() {
    let fake = FakeAzureDevOps::spawn().await;
    let threads = format!(
        "{}/{ADO_ORG}/{ADO_PROJECT}/_apis/git/repositories/{ADO_REPO}/pullRequests/12/threads",
        fake.api_url()
    );
    let body = json!({"comments": [{"parentCommentId": 0, "content": "first", "commentType": 1}], "status": 1});
    let (status, _, thread) =
        send(request(reqwest::Method::POST, format!("{threads}?{V}")).json(&body)).await;
    assert_eq!(status, 200);
    let thread_id = thread["id"].as_u64().unwrap();
    assert_eq!(thread["comments"][0]["id"], 1);
    assert_eq!(thread["comments"][0]["commentType"], "text");
    assert_eq!(thread["status"], "active");

    let by_id = format!(
        "{}/{ADO_ORG}/{ADO_PROJECT}/_apis/git/repositories/{ADO_REPO_ID}/pullRequests/12/threads",
        fake.api_url()
    );
    let comment = format!("{by_id}/{thread_id}/comments/1?{V}");
    let (status, _, read) = send(request(reqwest::Method::GET, comment.clone())).await;
    assert_eq!(
        (
            status,
            read["content"].as_str(),
            read["isDeleted"].as_bool()
        ),
        (200, Some("first"), Some(false))
    );

    let (status, _, edited) =
        send(request(reqwest::Method::PATCH, comment.clone()).json(&json!({"content": "second"})))
            .await;
    assert_eq!((status, edited["content"].as_str()), (200, Some("second")));
    assert_eq!(fake.comment(thread_id, 1).unwrap().content, "second");

    fake.delete_comment(thread_id, 1);
    let (_, _, read) = send(request(reqwest::Method::GET, comment.clone())).await;
    assert_eq!(read["isDeleted"], true);
    let (status, _, edited) =
        send(request(reqwest::Method::PATCH, comment.clone()).json(&json!({"content": "third"})))
            .await;
    assert_eq!(
        (status, edited["isDeleted"].as_bool()),
        (200, Some(true)),
        "an edit still answers 200"
    );
    fake.set_edit_deleted(EditDeleted::NotFound);
    let (status, _, _) =
        send(request(reqwest::Method::PATCH, comment).json(&json!({"content": "fourth"}))).await;
    assert_eq!(status, 404);

    let (_, _, listed) = send(request(reqwest::Method::GET, format!("{threads}?{V}"))).await;
    assert_eq!(listed["count"], 1);
    let (status, _, _) = send(request(reqwest::Method::GET, format!("{threads}/999?{V}"))).await;
    assert_eq!(status, 404);
    let unknown_repo = threads.replace(ADO_REPO, "nope");
    let (status, _, body) =
        send(request(reqwest::Method::POST, format!("{unknown_repo}?{V}")).json(&body)).await;
    assert_eq!(status, 404);
    assert!(body["message"].as_str().unwrap().starts_with("TF401019"));
    let (status, _, _) = send(
        request(reqwest::Method::POST, format!("{threads}?{V}")).json(&json!({"comments": []})),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn delayed_and_blocked_rate_limiting() {
    let fake = FakeAzureDevOps::spawn().await;
    fake.inject("/_apis/wit/workitems/", 1, azure_devops::delayed(1));
    fake.inject("/_apis/wit/workitems/", 1, azure_devops::blocked(2));
    let (status, headers, _) = send(create(&fake, ADO_PROJECT, "Bug", &patch_doc("a"))).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    assert!(header(&headers, "x-ratelimit-delay").is_some());
    assert_eq!(fake.work_items().len(), 1, "a delayed request still works");

    let (status, headers, body) = send(create(&fake, ADO_PROJECT, "Bug", &patch_doc("b"))).await;
    assert_eq!(status, 429);
    assert_eq!(header(&headers, "retry-after"), Some("2"));
    assert_eq!(header(&headers, "x-ratelimit-remaining"), Some("0"));
    assert!(body["message"].as_str().unwrap().starts_with("TF400733"));
    assert_eq!(fake.work_items().len(), 1);
}

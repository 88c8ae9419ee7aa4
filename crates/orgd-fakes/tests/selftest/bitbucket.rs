//! The Bitbucket fake: email + API token auth, repositories, issues, PR comments and edits.

use orgd_fakes::bitbucket::{
    self, BITBUCKET_EMAIL, BITBUCKET_REPO, BITBUCKET_REPO_NO_ISSUES, BITBUCKET_TOKEN,
    BITBUCKET_USERNAME, BITBUCKET_WORKSPACE, FakeBitbucket,
};
use orgd_fakes::common::EditDeleted;
use serde_json::{Value, json};

use super::{client, header, parts};

async fn call(
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = client()
        .request(method, url)
        .basic_auth(BITBUCKET_EMAIL, Some(BITBUCKET_TOKEN));
    if let Some(body) = body {
        request = request.json(&body);
    }
    parts(request.send().await.unwrap()).await
}

#[tokio::test]
async fn only_email_and_api_token_in_basic_auth_are_accepted() {
    let fake = FakeBitbucket::spawn().await;
    let user = format!("{}/user", fake.api_url());
    let (status, _, me) = call(reqwest::Method::GET, user.clone(), None).await;
    assert_eq!(
        (status, me["username"].as_str()),
        (200, Some(BITBUCKET_USERNAME))
    );

    let response = client()
        .get(&user)
        .basic_auth(BITBUCKET_USERNAME, Some(BITBUCKET_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "an app-password style user name");
    assert_eq!(
        header(response.headers(), "www-authenticate"),
        Some("Basic realm=\"Bitbucket.org HTTP\"")
    );

    let (status, _, body) = parts(
        client()
            .get(&user)
            .bearer_auth(BITBUCKET_TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        body["error"]["message"],
        "Token is invalid, expired, or not supported for this endpoint."
    );
    assert_eq!(body["type"], "error");
}

#[tokio::test]
async fn repositories_and_issues() {
    let fake = FakeBitbucket::spawn().await;
    let api = fake.api_url();
    let (status, _, repo) = call(
        reqwest::Method::GET,
        format!("{api}/repositories/{BITBUCKET_WORKSPACE}/{BITBUCKET_REPO}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(repo["full_name"], "acme/shop");
    assert_eq!(repo["has_issues"], true);
    assert!(repo["links"]["html"]["href"].is_string());
    let (status, _, _) = call(
        reqwest::Method::GET,
        format!("{api}/repositories/acme/nope"),
        None,
    )
    .await;
    assert_eq!(status, 404);

    let issues = format!("{api}/repositories/acme/shop/issues");
    let body = json!({"title": "Test failed", "content": {"raw": "## Failure"}, "kind": "bug", "priority": "major"});
    let (status, _, issue) = call(reqwest::Method::POST, issues.clone(), Some(body.clone())).await;
    assert_eq!(status, 201);
    assert_eq!(issue["id"], 1);
    assert_eq!(
        issue["links"]["html"]["href"],
        "https://bitbucket.org/acme/shop/issues/1"
    );
    assert_eq!(fake.issues()[0].content.as_deref(), Some("## Failure"));

    let (status, _, body400) = call(
        reqwest::Method::POST,
        issues.clone(),
        Some(json!({"content": {"raw": "x"}})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body400["error"]["fields"]["title"].is_array());
    let (status, _, _) = call(
        reqwest::Method::POST,
        issues,
        Some(json!({"title": "t", "kind": "incident"})),
    )
    .await;
    assert_eq!(status, 400);

    let off = format!("{api}/repositories/acme/{BITBUCKET_REPO_NO_ISSUES}/issues");
    let (status, _, body404) = call(reqwest::Method::POST, off, Some(body)).await;
    assert_eq!(
        (status, body404["error"]["message"].as_str()),
        (404, Some("Repository has no issue tracker."))
    );
    assert_eq!(fake.issues().len(), 1);
}

#[tokio::test]
async fn pull_request_comments_edits_and_deleted_reads() {
    let fake = FakeBitbucket::spawn().await;
    let comments = format!(
        "{}/repositories/acme/shop/pullrequests/3/comments",
        fake.api_url()
    );
    let (status, _, comment) = call(
        reqwest::Method::POST,
        comments.clone(),
        Some(json!({"content": {"raw": "first"}})),
    )
    .await;
    assert_eq!(status, 201);
    let id = comment["id"].as_u64().unwrap();
    assert!(
        comment["links"]["html"]["href"]
            .as_str()
            .unwrap()
            .ends_with(&format!("#comment-{id}"))
    );
    assert_eq!(comment["deleted"], false);

    let one = format!("{comments}/{id}");
    let (status, _, edited) = call(
        reqwest::Method::PUT,
        one.clone(),
        Some(json!({"content": {"raw": "second"}})),
    )
    .await;
    assert_eq!(
        (status, edited["content"]["raw"].as_str()),
        (200, Some("second"))
    );
    assert_eq!(fake.comment(id).unwrap().edits, 1);

    fake.delete_comment(id);
    let (status, _, read) = call(reqwest::Method::GET, one.clone(), None).await;
    assert_eq!((status, read["deleted"].as_bool()), (200, Some(true)));
    let (status, _, _) = call(
        reqwest::Method::PUT,
        one.clone(),
        Some(json!({"content": {"raw": "third"}})),
    )
    .await;
    assert_eq!(
        status, 200,
        "by default an edit of a deleted comment answers 200"
    );
    fake.set_edit_deleted(EditDeleted::NotFound);
    let (status, _, _) = call(
        reqwest::Method::PUT,
        one,
        Some(json!({"content": {"raw": "fourth"}})),
    )
    .await;
    assert_eq!(status, 404);

    let (_, _, page) = call(reqwest::Method::GET, comments.clone(), None).await;
    assert_eq!(page["values"][0]["deleted"], true);
    let (status, _, _) = call(
        reqwest::Method::POST,
        comments,
        Some(json!({"content": "not an object"})),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn rate_limited_by_injection() {
    let fake = FakeBitbucket::spawn().await;
    fake.inject("/pullrequests/", 1, bitbucket::rate_limited(None));
    fake.inject("/pullrequests/", 1, bitbucket::rate_limited(Some(3)));
    let url = format!(
        "{}/repositories/acme/shop/pullrequests/3/comments",
        fake.api_url()
    );
    let body = Some(json!({"content": {"raw": "x"}}));
    let (status, headers, error) = call(reqwest::Method::POST, url.clone(), body.clone()).await;
    assert_eq!(status, 429);
    assert!(header(&headers, "retry-after").is_none());
    assert_eq!(
        error["error"]["message"],
        "Rate limit for this resource has been exceeded"
    );
    let (status, headers, _) = call(reqwest::Method::POST, url.clone(), body.clone()).await;
    assert_eq!((status, header(&headers, "retry-after")), (429, Some("3")));
    assert_eq!(call(reqwest::Method::POST, url, body).await.0, 201);
}

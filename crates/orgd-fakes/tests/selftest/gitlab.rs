//! The GitLab fake: encoded project paths, both token headers, issues, notes and throttling.

use orgd_fakes::gitlab::{
    self, FakeGitLab, GITLAB_NO_ISSUES_PROJECT_ID, GITLAB_OAUTH_TOKEN, GITLAB_PROJECT_ID,
    GITLAB_READ_TOKEN, GITLAB_TOKEN,
};
use serde_json::{Value, json};

use super::{client, header, parts};

async fn call(
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = client().request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    parts(request.send().await.unwrap()).await
}

#[tokio::test]
async fn projects_by_id_or_encoded_path_with_either_token_header() {
    let fake = FakeGitLab::spawn().await;
    let api = fake.api_url();

    let response = client()
        .get(format!("{api}/projects/acme%2Fshop"))
        .header("PRIVATE-TOKEN", GITLAB_TOKEN)
        .send()
        .await
        .unwrap();
    let (status, headers, project) = parts(response).await;
    assert_eq!(status, 200);
    assert_eq!(project["id"], GITLAB_PROJECT_ID);
    assert_eq!(project["path_with_namespace"], "acme/shop");
    assert_eq!(
        project["web_url"].as_str().unwrap(),
        format!("{}/acme/shop", fake.base_url())
    );
    assert_eq!(project["issues_enabled"], true);
    assert!(header(&headers, "ratelimit-remaining").is_some());
    assert_eq!(
        fake.last("GET").unwrap().path,
        "/api/v4/projects/acme%2Fshop",
        "the fake saw %2F"
    );

    let (status, _, nested) = call(
        reqwest::Method::GET,
        format!("{api}/projects/acme%2Fplatform%2Fapi"),
        GITLAB_TOKEN,
        None,
    )
    .await;
    assert_eq!((status, nested["id"].as_u64()), (200, Some(43)));
    let (status, _, _) = call(
        reqwest::Method::GET,
        format!("{api}/projects/42"),
        GITLAB_OAUTH_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 200);

    let (status, _, body) = call(
        reqwest::Method::GET,
        format!("{api}/projects/acme/shop"),
        GITLAB_TOKEN,
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("404 Not Found")),
        "a decoded path is no route"
    );
    let (status, _, body) = call(
        reqwest::Method::GET,
        format!("{api}/projects/acme%2Fnope"),
        GITLAB_TOKEN,
        None,
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("404 Project Not Found"))
    );

    let response = client()
        .get(format!("{api}/projects/42"))
        .header("PRIVATE-TOKEN", GITLAB_OAUTH_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "OAuth tokens only work as Bearer");
    let (status, _, body) = call(
        reqwest::Method::GET,
        format!("{api}/user"),
        "glpat-wrong",
        None,
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("401 Unauthorized"))
    );
    let (status, _, me) = call(
        reqwest::Method::GET,
        format!("{api}/user"),
        GITLAB_TOKEN,
        None,
    )
    .await;
    assert_eq!((status, me["username"].as_str()), (200, Some("orgd-bot")));
    let (_, _, token) = call(
        reqwest::Method::GET,
        format!("{api}/personal_access_tokens/self"),
        GITLAB_READ_TOKEN,
        None,
    )
    .await;
    assert_eq!(token["scopes"], json!(["read_api"]));
}

#[tokio::test]
async fn issues_and_their_refusals() {
    let fake = FakeGitLab::spawn().await;
    let api = fake.api_url();
    let url = format!("{api}/projects/acme%2Fshop/issues");
    let body = json!({"title": "Test failed", "description": "## Failure", "labels": "orgd,flaky"});
    let (status, _, issue) = call(
        reqwest::Method::POST,
        url.clone(),
        GITLAB_TOKEN,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(issue["iid"], 1);
    assert!(issue["id"].is_u64());
    assert_eq!(
        issue["web_url"].as_str().unwrap(),
        format!("{}/acme/shop/-/issues/1", fake.base_url())
    );
    assert_eq!(fake.issues()[0].labels, ["orgd", "flaky"]);
    let (_, _, second) = call(
        reqwest::Method::POST,
        format!("{api}/projects/42/issues"),
        GITLAB_TOKEN,
        Some(body.clone()),
    )
    .await;
    assert_eq!(second["iid"], 2);

    let (status, _, missing) = call(
        reqwest::Method::POST,
        url.clone(),
        GITLAB_TOKEN,
        Some(json!({"description": "x"})),
    )
    .await;
    assert_eq!(
        (status, missing["message"].as_str()),
        (400, Some("400 (Bad request) \"title\" not given"))
    );
    let (status, _, blank) = call(
        reqwest::Method::POST,
        url.clone(),
        GITLAB_TOKEN,
        Some(json!({"title": ""})),
    )
    .await;
    assert_eq!(
        (status, blank["message"]["title"][0].as_str()),
        (400, Some("can't be blank"))
    );
    let (status, _, long) = call(
        reqwest::Method::POST,
        url.clone(),
        GITLAB_TOKEN,
        Some(json!({"title": "x".repeat(256)})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        long["message"]["title"][0]
            .as_str()
            .unwrap()
            .starts_with("is too long")
    );

    let disabled = format!("{api}/projects/{GITLAB_NO_ISSUES_PROJECT_ID}/issues");
    let (status, _, body403) = call(
        reqwest::Method::POST,
        disabled,
        GITLAB_TOKEN,
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        (status, body403["message"].as_str()),
        (403, Some("403 Forbidden"))
    );
    let (status, _, scope) = call(reqwest::Method::POST, url, GITLAB_READ_TOKEN, Some(body)).await;
    assert_eq!(
        (status, scope["error"].as_str()),
        (403, Some("insufficient_scope"))
    );
    assert_eq!(fake.issues().len(), 2);
}

#[tokio::test]
async fn merge_request_notes_are_posted_edited_and_404_once_deleted() {
    let fake = FakeGitLab::spawn().await;
    let notes = format!(
        "{}/projects/acme%2Fplatform%2Fapi/merge_requests/5/notes",
        fake.api_url()
    );
    let (status, _, note) = call(
        reqwest::Method::POST,
        notes.clone(),
        GITLAB_TOKEN,
        Some(json!({"body": "first"})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(note["body"], "first");
    assert_eq!(note["noteable_iid"], 5);
    let id = note["id"].as_u64().unwrap();

    let edit = format!("{notes}/{id}");
    let (status, _, edited) = call(
        reqwest::Method::PUT,
        edit.clone(),
        GITLAB_TOKEN,
        Some(json!({"body": "second"})),
    )
    .await;
    assert_eq!((status, edited["body"].as_str()), (200, Some("second")));
    assert_eq!(fake.note(id).unwrap().edits, 1);

    let (status, _, _) = call(
        reqwest::Method::POST,
        notes.clone(),
        GITLAB_TOKEN,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 400);

    fake.delete_note(id);
    let (status, _, gone) = call(
        reqwest::Method::PUT,
        edit.clone(),
        GITLAB_TOKEN,
        Some(json!({"body": "third"})),
    )
    .await;
    assert_eq!(
        (status, gone["message"].as_str()),
        (404, Some("404 Note Not Found"))
    );
    assert_eq!(
        call(reqwest::Method::GET, edit, GITLAB_TOKEN, None).await.0,
        404
    );
    let (_, _, listed) = call(reqwest::Method::GET, notes, GITLAB_TOKEN, None).await;
    assert!(listed.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn throttled_answers_carry_retry_after_and_reset() {
    let fake = FakeGitLab::spawn().await;
    fake.inject("/issues", 1, gitlab::rate_limited(1));
    fake.inject("/issues", 1, gitlab::rate_limited_plain(2));
    let url = format!("{}/projects/42/issues", fake.api_url());
    let (status, headers, body) = call(
        reqwest::Method::POST,
        url.clone(),
        GITLAB_TOKEN,
        Some(json!({"title": "t"})),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    assert!(
        header(&headers, "ratelimit-reset")
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    assert!(
        header(&headers, "ratelimit-resettime")
            .unwrap()
            .ends_with(" GMT")
    );
    assert!(body["message"]["error"].is_string());
    let (status, _, body) = call(
        reqwest::Method::POST,
        url.clone(),
        GITLAB_TOKEN,
        Some(json!({"title": "t"})),
    )
    .await;
    assert_eq!((status, body.as_str()), (429, Some("Retry later\n")));
    assert_eq!(
        call(
            reqwest::Method::POST,
            url,
            GITLAB_TOKEN,
            Some(json!({"title": "t"}))
        )
        .await
        .0,
        201
    );
}

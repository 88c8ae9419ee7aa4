//! The GitHub fake: required headers, repositories, issues, comments and their edits, rate limits.

use orgd_fakes::github::{
    self, FakeGitHub, GITHUB_API_VERSION, GITHUB_OWNER, GITHUB_READ_ONLY_TOKEN, GITHUB_REPO,
    GITHUB_REPO_NO_ISSUES, GITHUB_TOKEN,
};
use serde_json::{Value, json};

use super::{client, header, parts};

async fn call(
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = client()
        .request(method, url)
        .bearer_auth(token)
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", GITHUB_API_VERSION);
    if let Some(body) = body {
        request = request.json(&body);
    }
    parts(request.send().await.unwrap()).await
}

#[tokio::test]
async fn enforces_user_agent_version_and_bearer_token() {
    let fake = FakeGitHub::spawn().await;
    let bare = reqwest::Client::new();
    let user = format!("{}/user", fake.api_url());
    let response = bare
        .get(&user)
        .bearer_auth(GITHUB_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "no User-Agent");

    let response = client()
        .get(&user)
        .bearer_auth(GITHUB_TOKEN)
        .header("X-GitHub-Api-Version", "2021-01-01")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let response = client()
        .get(&user)
        .bearer_auth(GITHUB_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "no version header is allowed");
    assert!(
        fake.last("GET /user")
            .unwrap()
            .header("x-github-api-version")
            .is_none()
    );

    let (status, headers, body) = call(reqwest::Method::GET, user.clone(), "nope", None).await;
    assert_eq!(status, 401);
    assert_eq!(body["message"], "Bad credentials");
    assert_eq!(body["status"], "401");
    assert!(body["documentation_url"].is_string());
    assert!(header(&headers, "x-ratelimit-remaining").is_some());

    let response = client().get(&user).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = client()
        .get(&user)
        .header("Authorization", format!("token {GITHUB_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "only Bearer is accepted");

    let (status, _, me) = call(reqwest::Method::GET, user, GITHUB_TOKEN, None).await;
    assert_eq!(status, 200);
    assert_eq!(me["login"], "orgd-bot");
}

#[tokio::test]
async fn repositories_issues_and_their_refusals() {
    let fake = FakeGitHub::spawn().await;
    let api = fake.api_url();
    let (status, _, repo) = call(
        reqwest::Method::GET,
        format!("{api}/repos/{GITHUB_OWNER}/{GITHUB_REPO}"),
        GITHUB_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(repo["full_name"], "acme/shop");
    assert_eq!(repo["has_issues"], true);
    assert_eq!(repo["permissions"]["push"], true);
    let (status, _, _) = call(
        reqwest::Method::GET,
        format!("{api}/repos/acme/nope"),
        GITHUB_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 404);

    let issues = format!("{api}/repos/{GITHUB_OWNER}/{GITHUB_REPO}/issues");
    let body = json!({"title": "Test failed: checkout", "body": "## Failure", "labels": ["orgd"]});
    let (status, headers, first) = call(
        reqwest::Method::POST,
        issues.clone(),
        GITHUB_TOKEN,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(first["number"], 1);
    assert!(first["id"].as_u64().unwrap() > i32::MAX as u64);
    assert!(first["node_id"].is_string());
    assert_eq!(first["html_url"], "https://github.com/acme/shop/issues/1");
    assert_eq!(first["url"].as_str().unwrap(), format!("{issues}/1"));
    assert!(header(&headers, "location").is_some());
    let (_, _, second) = call(
        reqwest::Method::POST,
        issues.clone(),
        GITHUB_TOKEN,
        Some(body.clone()),
    )
    .await;
    assert_eq!(second["number"], 2);
    assert_eq!(fake.issues()[0].labels, ["orgd"]);

    let (status, _, missing) = call(
        reqwest::Method::POST,
        issues.clone(),
        GITHUB_TOKEN,
        Some(json!({"body": "x"})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(missing["message"], "Validation Failed");
    assert_eq!(missing["errors"][0]["code"], "missing_field");

    let (status, _, long) = call(
        reqwest::Method::POST,
        issues.clone(),
        GITHUB_TOKEN,
        Some(json!({"title": "x".repeat(257)})),
    )
    .await;
    assert_eq!(
        (status, long["errors"][0]["code"].as_str()),
        (422, Some("custom"))
    );

    let disabled = format!("{api}/repos/{GITHUB_OWNER}/{GITHUB_REPO_NO_ISSUES}/issues");
    let (status, _, gone) = call(
        reqwest::Method::POST,
        disabled,
        GITHUB_TOKEN,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 410);
    assert_eq!(gone["status"], "410");

    let (status, headers, denied) = call(
        reqwest::Method::POST,
        issues,
        GITHUB_READ_ONLY_TOKEN,
        Some(body),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        denied["message"],
        "Resource not accessible by personal access token"
    );
    assert!(header(&headers, "x-accepted-github-permissions").is_some());
    assert_eq!(fake.issues().len(), 2);
}

#[tokio::test]
async fn comments_are_posted_edited_and_404_once_deleted() {
    let fake = FakeGitHub::spawn().await;
    let api = fake.api_url();
    let post = format!("{api}/repos/acme/shop/issues/17/comments");
    let (status, _, comment) = call(
        reqwest::Method::POST,
        post.clone(),
        GITHUB_TOKEN,
        Some(json!({"body": "first <!-- orgd:o:default -->"})),
    )
    .await;
    assert_eq!(status, 201);
    let id = comment["id"].as_u64().unwrap();
    assert!(id > i32::MAX as u64);
    assert_eq!(comment["body"], "first <!-- orgd:o:default -->");
    assert_eq!(
        comment["html_url"].as_str().unwrap(),
        format!("https://github.com/acme/shop/pull/17#issuecomment-{id}")
    );

    let edit = format!("{api}/repos/acme/shop/issues/comments/{id}");
    let (status, _, edited) = call(
        reqwest::Method::PATCH,
        edit.clone(),
        GITHUB_TOKEN,
        Some(json!({"body": "second"})),
    )
    .await;
    assert_eq!((status, edited["body"].as_str()), (200, Some("second")));
    assert_eq!(fake.comment(id).unwrap().body, "second");
    assert_eq!(fake.comment(id).unwrap().edits, 1);

    let (_, _, listed) = call(reqwest::Method::GET, post.clone(), GITHUB_TOKEN, None).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);

    let on_disabled = format!("{api}/repos/acme/{GITHUB_REPO_NO_ISSUES}/issues/3/comments");
    let (status, _, _) = call(
        reqwest::Method::POST,
        on_disabled,
        GITHUB_TOKEN,
        Some(json!({"body": "pr"})),
    )
    .await;
    assert_eq!(status, 201, "PR comments work with issues disabled");

    fake.delete_comment(id);
    let (status, _, body) = call(
        reqwest::Method::PATCH,
        edit.clone(),
        GITHUB_TOKEN,
        Some(json!({"body": "third"})),
    )
    .await;
    assert_eq!((status, body["message"].as_str()), (404, Some("Not Found")));
    assert_eq!(
        call(reqwest::Method::GET, edit, GITHUB_TOKEN, None).await.0,
        404
    );
    let (_, _, listed) = call(reqwest::Method::GET, post, GITHUB_TOKEN, None).await;
    assert!(listed.as_array().unwrap().is_empty());
    assert_eq!(fake.comment(id).unwrap().body, "second");
}

#[tokio::test]
async fn primary_and_secondary_rate_limits() {
    let fake = FakeGitHub::spawn().await;
    let issues = format!("{}/repos/acme/shop/issues", fake.api_url());
    fake.inject(
        "POST /repos/{owner}/{repo}/issues",
        1,
        github::primary_rate_limit(2),
    );
    fake.inject(
        "POST /repos/{owner}/{repo}/issues",
        1,
        github::secondary_rate_limit(1),
    );
    let body = Some(json!({"title": "t"}));

    let (status, headers, _) = call(
        reqwest::Method::POST,
        issues.clone(),
        GITHUB_TOKEN,
        body.clone(),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(header(&headers, "x-ratelimit-remaining"), Some("0"));
    let reset: u64 = header(&headers, "x-ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(reset > now && reset <= now + 3);

    let (status, headers, body429) = call(
        reqwest::Method::POST,
        issues.clone(),
        GITHUB_TOKEN,
        body.clone(),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    assert!(
        body429["message"]
            .as_str()
            .unwrap()
            .contains("secondary rate limit")
    );

    assert_eq!(
        call(reqwest::Method::POST, issues, GITHUB_TOKEN, body)
            .await
            .0,
        201
    );
}

#[tokio::test]
async fn enterprise_serves_under_api_v3_only() {
    let fake = FakeGitHub::spawn_enterprise().await;
    assert!(fake.api_url().ends_with("/api/v3"));
    let (status, _, issue) = call(
        reqwest::Method::POST,
        format!("{}/repos/acme/shop/issues", fake.api_url()),
        GITHUB_TOKEN,
        Some(json!({"title": "t"})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        issue["html_url"],
        "https://ghe.example.com/acme/shop/issues/1"
    );
    assert!(
        issue["url"]
            .as_str()
            .unwrap()
            .contains("/api/v3/repos/acme/shop/issues/1")
    );
    let (status, _, _) = call(
        reqwest::Method::GET,
        format!("{}/user", fake.url),
        GITHUB_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(fake.route_counts()["unmatched"], 1);
}

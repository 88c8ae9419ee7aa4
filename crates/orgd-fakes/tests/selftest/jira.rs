//! The Jira fake: site and gateway, classic and scoped tokens, ADF checks, rate limits.

use orgd_fakes::jira::{
    self, FakeJira, JIRA_CLASSIC_TOKEN, JIRA_CLOUD_ID, JIRA_EMAIL, JIRA_OTHER_PROJECT,
    JIRA_PROJECT, JIRA_SCOPED_TOKEN,
};
use serde_json::{Value, json};

use super::{client, header, parts};

fn adf() -> Value {
    json!({"type":"doc","version":1,"content":[
        {"type":"heading","attrs":{"level":2},"content":[{"type":"text","text":"Failure"}]},
        {"type":"paragraph","content":[
            {"type":"text","text":"Run "},
            {"type":"text","text":"1234","marks":[{"type":"code"}]},
            {"type":"hardBreak"},
            {"type":"text","text":"run","marks":[{"type":"link","attrs":{"href":"https://x.test/r/1"}}]}]},
        {"type":"bulletList","content":[{"type":"listItem","content":[
            {"type":"paragraph","content":[{"type":"text","text":"one","marks":[{"type":"strong"},{"type":"em"}]}]}]}]},
        {"type":"codeBlock","attrs":{"language":"text"},"content":[{"type":"text","text":"line1\nline2"}]},
        {"type":"codeBlock","attrs":{"language":"text"}}]})
}

fn issue(project: &str, description: Value) -> Value {
    json!({"fields":{"project":{"key":project},"issuetype":{"name":"Bug"},
                     "summary":"Test failed: checkout (run 1234)","labels":["orgd"],
                     "description":description}})
}

async fn post(url: String, token: &str, body: &Value) -> (u16, Value) {
    let response = client()
        .post(url)
        .basic_auth(JIRA_EMAIL, Some(token))
        .json(body)
        .send()
        .await
        .unwrap();
    let (status, _, json) = parts(response).await;
    (status, json)
}

async fn get(url: String, token: &str) -> (u16, Value) {
    let response = client()
        .get(url)
        .basic_auth(JIRA_EMAIL, Some(token))
        .send()
        .await
        .unwrap();
    let (status, _, json) = parts(response).await;
    (status, json)
}

#[tokio::test]
async fn classic_tokens_work_on_the_site_and_scoped_only_on_the_gateway() {
    let fake = FakeJira::spawn().await;
    let site = format!("{}/rest/api/3/myself", fake.site_url());
    let gateway = format!(
        "{}/ex/jira/{JIRA_CLOUD_ID}/rest/api/3/myself",
        fake.gateway_url()
    );

    let (status, body) = get(format!("{}/_edge/tenant_info", fake.site_url()), "").await;
    assert_eq!(
        (status, body["cloudId"].as_str()),
        (200, Some(JIRA_CLOUD_ID))
    );

    let (status, me) = get(site.clone(), JIRA_CLASSIC_TOKEN).await;
    assert_eq!(status, 200);
    assert_eq!(me["emailAddress"], JIRA_EMAIL);
    assert!(me["accountId"].is_string() && me["displayName"].is_string());
    assert_eq!(get(gateway.clone(), JIRA_CLASSIC_TOKEN).await.0, 200);

    let (status, body) = get(site, JIRA_SCOPED_TOKEN).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["message"],
        "Client must be authenticated to access this resource."
    );
    let (status, me) = get(gateway, JIRA_SCOPED_TOKEN).await;
    assert_eq!(status, 200);
    assert!(me["emailAddress"].is_null());

    let wrong_site = format!("{}/ex/jira/not-my-cloud/rest/api/3/myself", fake.url);
    assert_eq!(get(wrong_site, JIRA_SCOPED_TOKEN).await.0, 404);
    let (status, _) = get(format!("{}/rest/api/3/myself", fake.url), "wrong").await;
    assert_eq!(status, 401);

    fake.revoke_all();
    let (status, _) = get(
        format!("{}/rest/api/3/myself", fake.url),
        JIRA_CLASSIC_TOKEN,
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn projects_and_issue_types() {
    let fake = FakeJira::spawn().await;
    let (status, project) = get(
        format!("{}/rest/api/3/project/{JIRA_PROJECT}", fake.url),
        JIRA_CLASSIC_TOKEN,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (project["key"].as_str(), project["id"].as_str()),
        (Some("ENG"), Some("10000"))
    );
    assert!(project["name"].is_string());

    let (status, body) = get(
        format!("{}/rest/api/3/project/NOPE", fake.url),
        JIRA_CLASSIC_TOKEN,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        body["errorMessages"][0],
        "No project could be found with key 'NOPE'."
    );
    assert_eq!(body["errors"], json!({}));

    let (status, page) = get(
        format!(
            "{}/rest/api/3/issue/createmeta/{JIRA_OTHER_PROJECT}/issuetypes",
            fake.url
        ),
        JIRA_CLASSIC_TOKEN,
    )
    .await;
    assert_eq!(status, 200);
    let names: Vec<_> = page["issueTypes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Task", "Story"]);
}

#[tokio::test]
async fn creates_issues_with_incrementing_keys_and_records_the_adf() {
    let fake = FakeJira::spawn().await;
    let url = format!("{}/rest/api/3/issue", fake.url);
    let (status, created) = post(url.clone(), JIRA_CLASSIC_TOKEN, &issue("ENG", adf())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["key"], "ENG-1");
    assert_eq!(
        created["self"].as_str().unwrap(),
        format!(
            "{}/rest/api/3/issue/{}",
            fake.url,
            created["id"].as_str().unwrap()
        )
    );
    let (_, second) = post(url, JIRA_CLASSIC_TOKEN, &issue("ENG", adf())).await;
    assert_eq!(second["key"], "ENG-2");

    let gateway = format!("{}/ex/jira/{JIRA_CLOUD_ID}/rest/api/3/issue", fake.url);
    let (status, third) = post(gateway, JIRA_SCOPED_TOKEN, &issue("ENG", adf())).await;
    assert_eq!(status, 201);
    assert_eq!(third["key"], "ENG-3");
    assert!(third["self"].as_str().unwrap().contains("/ex/jira/"));

    let issues = fake.issues();
    assert_eq!(issues.len(), 3);
    assert_eq!(issues[0].fields["description"], adf());
    assert!(issues[2].via_gateway && !issues[0].via_gateway);
    let recorded = fake.last("POST /rest/api/3/issue").unwrap();
    assert_eq!(
        recorded.json.unwrap()["fields"]["description"]["content"][0]["type"],
        "heading"
    );

    let (status, read) = get(
        format!("{}/rest/api/3/issue/ENG-2", fake.url),
        JIRA_CLASSIC_TOKEN,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        read["fields"]["summary"],
        "Test failed: checkout (run 1234)"
    );
}

#[tokio::test]
async fn refuses_what_jira_refuses() {
    let fake = FakeJira::spawn().await;
    let url = format!("{}/rest/api/3/issue", fake.url);

    let (status, body) = post(
        url.clone(),
        JIRA_CLASSIC_TOKEN,
        &issue("ENG", json!("plain text")),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["errors"]["description"]
            .as_str()
            .unwrap()
            .contains("Operation value must be an Atlassian Document")
    );

    let empty_text = json!({"type":"doc","version":1,"content":[
        {"type":"paragraph","content":[{"type":"text","text":""}]}]});
    let (status, body) = post(url.clone(), JIRA_CLASSIC_TOKEN, &issue("ENG", empty_text)).await;
    assert_eq!(
        (status, body["errors"]["description"].as_str()),
        (400, Some("INVALID_INPUT"))
    );
    assert!(
        fake.rejections()[1].contains("empty text node"),
        "{:?}",
        fake.rejections()
    );

    let marks_in_code = json!({"type":"doc","version":1,"content":[{"type":"codeBlock",
        "content":[{"type":"text","text":"x","marks":[{"type":"strong"}]}]}]});
    assert!(
        jira::validate_adf(&marks_in_code)
            .unwrap_err()
            .contains("no marks")
    );
    let bad_heading =
        json!({"type":"doc","version":1,"content":[{"type":"heading","attrs":{"level":7}}]});
    assert!(jira::validate_adf(&bad_heading).is_err());

    let (status, body) = post(url.clone(), JIRA_CLASSIC_TOKEN, &issue("NOPE", adf())).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["errors"]["project"],
        "Specify a valid project ID or key"
    );
    assert_eq!(body["errorMessages"], json!([]));

    let (status, body) = post(
        url.clone(),
        JIRA_CLASSIC_TOKEN,
        &issue(JIRA_OTHER_PROJECT, adf()),
    )
    .await;
    assert_eq!(
        (status, body["errors"]["issuetype"].as_str()),
        (400, Some("The issue type selected is invalid."))
    );

    let mut spaced = issue("ENG", adf());
    spaced["fields"]["labels"] = json!(["two words"]);
    spaced["fields"]["customfield_1"] = json!(1);
    let (status, body) = post(url.clone(), JIRA_CLASSIC_TOKEN, &spaced).await;
    assert_eq!(status, 400);
    assert!(body["errors"]["labels"].is_string() && body["errors"]["customfield_1"].is_string());

    let (status, body) = post(url, JIRA_CLASSIC_TOKEN, &json!({"fields": {}})).await;
    assert_eq!(status, 400);
    assert!(body["errors"]["summary"].is_string());
    assert!(fake.issues().is_empty());
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_and_reset() {
    let fake = FakeJira::spawn().await;
    fake.inject("POST /rest/api/3/issue", 1, jira::rate_limited(1));
    let response = client()
        .post(format!("{}/rest/api/3/issue", fake.url))
        .basic_auth(JIRA_EMAIL, Some(JIRA_CLASSIC_TOKEN))
        .json(&issue("ENG", adf()))
        .send()
        .await
        .unwrap();
    let (status, headers, _) = parts(response).await;
    assert_eq!(status, 429);
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    let reset = header(&headers, "x-ratelimit-reset").unwrap();
    assert_eq!(reset.len(), "2026-11-30T12:35Z".len());
    assert!(reset.ends_with('Z'));
    assert!(fake.issues().is_empty());
    let (status, _) = post(
        format!("{}/rest/api/3/issue", fake.url),
        JIRA_CLASSIC_TOKEN,
        &issue("ENG", adf()),
    )
    .await;
    assert_eq!(status, 201);
}

//! The shared injection machinery, exercised through the GitHub fake.

use std::io;
use std::time::{Duration, Instant};

use orgd_fakes::common::{Behaviour, Reply};
use orgd_fakes::github::{FakeGitHub, GITHUB_OWNER, GITHUB_REPO, GITHUB_TOKEN};
use serde_json::json;

use super::{client, client_with_timeout, header, io_kind, parts};

const CREATE: &str = "POST /repos/{owner}/{repo}/issues";

fn create(fake: &FakeGitHub, client: &reqwest::Client) -> reqwest::RequestBuilder {
    client
        .post(format!(
            "{}/repos/{GITHUB_OWNER}/{GITHUB_REPO}/issues",
            fake.api_url()
        ))
        .bearer_auth(GITHUB_TOKEN)
        .json(&json!({"title": "Test failed: checkout"}))
}

#[tokio::test]
async fn respond_replaces_the_answer_for_n_matching_requests_only() {
    let fake = FakeGitHub::spawn().await;
    let client = client();
    fake.inject(
        CREATE,
        2,
        Behaviour::html(502, "<html><body>Bad gateway</body></html>"),
    );
    for _ in 0..2 {
        let response = create(&fake, &client).send().await.unwrap();
        assert_eq!(response.status(), 502);
        assert!(
            header(response.headers(), "content-type")
                .unwrap()
                .starts_with("text/html")
        );
    }
    assert!(fake.issues().is_empty(), "an injected answer does no work");
    let response = create(&fake, &client).send().await.unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(fake.issues().len(), 1);
    assert_eq!(fake.count(CREATE), 3);
    assert_eq!(fake.route_counts()[CREATE], 3);
    let statuses: Vec<_> = fake.seen().iter().map(|s| s.status).collect();
    assert_eq!(statuses, [Some(502), Some(502), Some(201)]);
    assert_eq!(fake.pending_injections(), 0);
}

#[tokio::test]
async fn matchers_select_by_path_template_wildcard_and_anchor() {
    let fake = FakeGitHub::spawn().await;
    let client = client();
    let issues = format!("POST /repos/{GITHUB_OWNER}/{GITHUB_REPO}/issues$");
    fake.inject(&issues, 1, Behaviour::json(503, json!({"message": "down"})));
    let comment = client
        .post(format!(
            "{}/repos/acme/shop/issues/7/comments",
            fake.api_url()
        ))
        .bearer_auth(GITHUB_TOKEN)
        .json(&json!({"body": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(comment.status(), 201, "the anchored matcher skips comments");
    assert_eq!(create(&fake, &client).send().await.unwrap().status(), 503);

    fake.inject("*", 1, Behaviour::text(500, "boom"));
    let user = client
        .get(format!("{}/user", fake.api_url()))
        .bearer_auth(GITHUB_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), 500);
    assert_eq!(user.text().await.unwrap(), "boom");
    assert_eq!(fake.seen_matching("comments").len(), 1);
    assert_eq!(fake.last("*").unwrap().route, Some("GET /user"));
}

#[tokio::test]
async fn a_raw_truncated_json_body_is_sent_as_is() {
    let fake = FakeGitHub::spawn().await;
    fake.inject(
        CREATE,
        1,
        Behaviour::Respond(Reply::raw(201, "application/json", "{\"id\": 12, \"num")),
    );
    let response = create(&fake, &client()).send().await.unwrap();
    assert_eq!(response.status(), 201);
    assert!(response.json::<serde_json::Value>().await.is_err());
}

#[tokio::test]
async fn delay_before_waits_then_works() {
    let fake = FakeGitHub::spawn().await;
    fake.inject(
        CREATE,
        1,
        Behaviour::DelayBefore(Duration::from_millis(300)),
    );
    let started = Instant::now();
    let response = create(&fake, &client()).send().await.unwrap();
    assert_eq!(response.status(), 201);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn delay_after_work_times_the_client_out_with_the_issue_created() {
    let fake = FakeGitHub::spawn().await;
    fake.inject(CREATE, 1, Behaviour::DelayAfter(Duration::from_secs(5)));
    let client = client_with_timeout(Duration::from_millis(300));
    let error = create(&fake, &client).send().await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(fake.issues().len(), 1);
}

#[tokio::test]
async fn disconnect_after_work_is_a_connection_error_with_the_issue_created() {
    let fake = FakeGitHub::spawn().await;
    let client = client();
    // Warm the pool first: the drop must also work on a reused keep-alive connection.
    let warm = client
        .get(format!("{}/user", fake.api_url()))
        .bearer_auth(GITHUB_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 200);
    fake.inject(CREATE, 1, Behaviour::DisconnectAfterWork);
    let error = create(&fake, &client).send().await.unwrap_err();
    assert!(!error.is_timeout(), "{error:?}");
    assert!(error.status().is_none());
    assert_eq!(fake.issues().len(), 1, "the work was done");
    assert_eq!(fake.seen()[1].status, None);
    // The next request gets a fresh connection and an ordinary answer.
    assert_eq!(create(&fake, &client).send().await.unwrap().status(), 201);
    assert_eq!(fake.issues().len(), 2);
}

#[tokio::test]
async fn disconnect_drops_without_working() {
    let fake = FakeGitHub::spawn().await;
    fake.inject(CREATE, 1, Behaviour::Disconnect);
    let error = create(&fake, &client()).send().await.unwrap_err();
    assert!(!error.is_timeout(), "{error:?}");
    assert!(fake.issues().is_empty());
}

#[tokio::test]
async fn reset_sends_a_tcp_reset() {
    let fake = FakeGitHub::spawn().await;
    fake.inject(CREATE, 1, Behaviour::Reset);
    fake.inject(CREATE, 1, Behaviour::ResetAfterWork);
    let client = client();
    let error = create(&fake, &client).send().await.unwrap_err();
    assert_eq!(
        io_kind(&error),
        Some(io::ErrorKind::ConnectionReset),
        "{error:?}"
    );
    assert!(fake.issues().is_empty());
    let error = create(&fake, &client).send().await.unwrap_err();
    assert_eq!(
        io_kind(&error),
        Some(io::ErrorKind::ConnectionReset),
        "{error:?}"
    );
    assert_eq!(fake.issues().len(), 1);
}

#[tokio::test]
async fn truncate_after_work_sends_headers_then_cuts_the_body() {
    let fake = FakeGitHub::spawn().await;
    fake.inject(CREATE, 1, Behaviour::TruncateAfterWork(10));
    let response = create(&fake, &client()).send().await.unwrap();
    assert_eq!(response.status(), 201);
    assert!(response.content_length().unwrap() > 10);
    assert!(response.bytes().await.is_err());
    assert_eq!(fake.issues().len(), 1);
}

#[tokio::test]
async fn hang_never_answers() {
    let fake = FakeGitHub::spawn().await;
    fake.inject(CREATE, 1, Behaviour::Hang);
    let client = client_with_timeout(Duration::from_millis(300));
    let error = create(&fake, &client).send().await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert!(fake.issues().is_empty());
}

#[tokio::test]
async fn with_headers_adds_headers_to_the_normal_answer() {
    let fake = FakeGitHub::spawn().await;
    fake.inject(
        CREATE,
        1,
        Behaviour::WithHeaders(vec![("retry-after".into(), "7".into())]),
    );
    let (status, headers, _) = parts(create(&fake, &client()).send().await.unwrap()).await;
    assert_eq!(status, 201);
    assert_eq!(header(&headers, "retry-after"), Some("7"));
}

#[tokio::test]
async fn requests_are_recorded_with_raw_body_headers_and_query() {
    let fake = FakeGitHub::spawn().await;
    let client = client();
    client
        .post(format!(
            "{}/repos/acme/shop/issues?x=a%20b&y",
            fake.api_url()
        ))
        .bearer_auth(GITHUB_TOKEN)
        .header("X-GitHub-Api-Version", "2022-11-28")
        .json(&json!({"title": "t"}))
        .send()
        .await
        .unwrap();
    let seen = fake.last(CREATE).unwrap();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/repos/acme/shop/issues");
    assert_eq!(seen.query_param("x").as_deref(), Some("a b"));
    assert_eq!(seen.query_param("y").as_deref(), Some(""));
    assert_eq!(seen.header("X-GitHub-Api-Version"), Some("2022-11-28"));
    assert_eq!(seen.body_raw, br#"{"title":"t"}"#);
    assert_eq!(seen.json.unwrap()["title"], "t");
    fake.clear_seen();
    assert!(fake.seen().is_empty());
}

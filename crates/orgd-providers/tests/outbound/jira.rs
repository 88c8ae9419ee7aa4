//! Jira: classic and scoped tokens, project and issue type checks, ADF descriptions.

use orgd_fakes::common::{Behaviour, Reply};
use orgd_fakes::jira::{
    self, FakeJira, JIRA_CLASSIC_TOKEN, JIRA_CLOUD_ID, JIRA_EMAIL, JIRA_OTHER_PROJECT,
    JIRA_PROJECT, JIRA_SCOPED_TOKEN,
};
use orgd_providers::client::{Outcome, ProviderError};
use orgd_providers::jira::{JiraAuth, JiraClient, JiraCredentials, NewJiraIssue};
use serde_json::json;

use super::vendor;

const CREATE: &str = "POST /rest/api/3/issue";

fn client(fake: &FakeJira) -> JiraClient {
    JiraClient::new(vendor().0, Some(fake.site_url()), fake.gateway_url())
}

fn credentials(token: &str) -> JiraCredentials<'_> {
    JiraCredentials {
        domain: "acme.atlassian.net",
        email: JIRA_EMAIL,
        token,
    }
}

fn issue<'a>(title: &'a str, description: &'a str) -> NewJiraIssue<'a> {
    NewJiraIssue {
        project_key: JIRA_PROJECT,
        issue_type: "Bug",
        title,
        description,
    }
}

#[tokio::test]
async fn a_classic_token_is_checked_on_the_site() {
    let fake = FakeJira::spawn().await;
    let check = client(&fake)
        .check(&credentials(JIRA_CLASSIC_TOKEN), "eng", "bug")
        .await
        .unwrap();
    assert_eq!(check.auth, JiraAuth::Classic);
    assert_eq!(check.auth.token_kind(), "classic");
    assert_eq!(
        (check.project_id.as_str(), check.project_key.as_str()),
        ("10000", JIRA_PROJECT)
    );
    assert_eq!(check.issue_type, "Bug");
    let paths: Vec<String> = fake.seen().iter().map(|s| s.line()).collect();
    assert_eq!(
        paths,
        ["GET /rest/api/3/myself", "GET /rest/api/3/project/eng"]
    );
    let seen = fake.last("myself").unwrap();
    assert_eq!(seen.header("accept"), Some("application/json"));
}

#[tokio::test]
async fn a_scoped_token_is_found_to_work_through_the_gateway() {
    let fake = FakeJira::spawn().await;
    let check = client(&fake)
        .check(&credentials(JIRA_SCOPED_TOKEN), JIRA_PROJECT, "Bug")
        .await
        .unwrap();
    assert_eq!(
        check.auth,
        JiraAuth::Scoped {
            cloud_id: JIRA_CLOUD_ID.into()
        }
    );
    let paths: Vec<String> = fake.seen().iter().map(|s| s.line()).collect();
    assert_eq!(
        paths,
        [
            "GET /rest/api/3/myself".to_string(),
            "GET /_edge/tenant_info".to_string(),
            format!("GET /ex/jira/{JIRA_CLOUD_ID}/rest/api/3/myself"),
            format!("GET /ex/jira/{JIRA_CLOUD_ID}/rest/api/3/project/{JIRA_PROJECT}"),
        ]
    );
    assert_eq!(
        fake.seen()[1].header("authorization"),
        None,
        "tenant_info needs none"
    );

    let created = client(&fake)
        .create_issue(
            &credentials(JIRA_SCOPED_TOKEN),
            &check.auth,
            &issue("Test failed", "x"),
        )
        .await
        .unwrap();
    assert_eq!(created.url, format!("{}/browse/ENG-1", fake.site_url()));
    assert!(fake.issue("ENG-1").unwrap().via_gateway);
}

#[tokio::test]
async fn refused_tokens_and_unknown_projects_and_types() {
    let fake = FakeJira::spawn().await;
    let jira = client(&fake);
    assert_eq!(
        jira.check(&credentials("nope"), JIRA_PROJECT, "Bug").await,
        Err(ProviderError::InvalidCredentials)
    );
    assert_eq!(
        fake.count("project"),
        0,
        "the project is never asked with a bad token"
    );
    assert_eq!(
        jira.check(&credentials(JIRA_CLASSIC_TOKEN), "NOPE", "Bug")
            .await,
        Err(ProviderError::NotFound("project"))
    );
    assert_eq!(
        jira.check(&credentials(JIRA_CLASSIC_TOKEN), JIRA_OTHER_PROJECT, "Bug")
            .await,
        Err(ProviderError::NotFound("issue type"))
    );
}

#[tokio::test]
async fn issues_carry_an_adf_description_and_a_one_line_summary() {
    let fake = FakeJira::spawn().await;
    let description = "## Failure\n\nRun `1234` failed on **main**, see [the run](https://app.test/r/1).\n\n- one\n- two\n\n```\nAssertionError: expected 200\n  at checkout.spec.ts:42\n```\n";
    let created = client(&fake)
        .create_issue(
            &credentials(JIRA_CLASSIC_TOKEN),
            &JiraAuth::Classic,
            &issue("Test failed:\ncheckout (run 1234)", description),
        )
        .await
        .unwrap();
    assert_eq!(created.key, "ENG-1");
    assert_eq!(created.id, "10000");
    assert_eq!(created.url, format!("{}/browse/ENG-1", fake.site_url()));
    let stored = fake.issue("ENG-1").unwrap();
    assert_eq!(stored.fields["summary"], "Test failed: checkout (run 1234)");
    assert_eq!(stored.fields["issuetype"], json!({"name": "Bug"}));
    let adf = &stored.fields["description"];
    assert_eq!(jira::validate_adf(adf), Ok(()));
    assert_eq!(adf["content"][0]["type"], "heading");
    assert_eq!(adf["content"][3]["type"], "codeBlock");
    assert!(fake.rejections().is_empty());

    // No description: the field is left out.
    client(&fake)
        .create_issue(
            &credentials(JIRA_CLASSIC_TOKEN),
            &JiraAuth::Classic,
            &issue("Second", "  "),
        )
        .await
        .unwrap();
    assert!(
        fake.issue("ENG-2")
            .unwrap()
            .fields
            .get("description")
            .is_none()
    );
}

#[tokio::test]
async fn a_short_rate_limit_is_waited_out_once() {
    let fake = FakeJira::spawn().await;
    fake.inject(CREATE, 1, jira::rate_limited(1));
    let created = client(&fake)
        .create_issue(
            &credentials(JIRA_CLASSIC_TOKEN),
            &JiraAuth::Classic,
            &issue("Limited", ""),
        )
        .await
        .unwrap();
    assert_eq!(created.key, "ENG-1");
    assert_eq!(fake.count(CREATE), 2);
    assert_eq!(fake.issues().len(), 1);
}

#[tokio::test]
async fn a_create_that_may_have_landed_is_never_sent_again() {
    let fake = FakeJira::spawn().await;
    let (client_, recorder) = vendor();
    let jira = JiraClient::new(client_, Some(fake.site_url()), fake.gateway_url());
    let (credentials, once) = (credentials(JIRA_CLASSIC_TOKEN), issue("Once", ""));
    let create = || jira.create_issue(&credentials, &JiraAuth::Classic, &once);

    fake.inject(CREATE, 1, Behaviour::TruncateAfterWork(8));
    let cut = create().await.unwrap_err();
    assert_eq!(
        cut,
        ProviderError::Failed {
            reason: "incomplete answer".into(),
            transient: true
        }
    );
    assert!(cut.maybe_applied());
    assert_eq!((fake.count(CREATE), fake.issues().len()), (1, 1));

    fake.inject(CREATE, 1, Behaviour::DisconnectAfterWork);
    let dropped = create().await.unwrap_err();
    assert!(
        matches!(dropped, ProviderError::Unreachable(_)),
        "{dropped:?}"
    );
    assert!(dropped.maybe_applied());
    assert_eq!((fake.count(CREATE), fake.issues().len()), (2, 2));

    fake.inject(
        CREATE,
        1,
        Behaviour::json(500, json!({"errorMessages": ["boom"]})),
    );
    assert!(matches!(
        create().await,
        Err(ProviderError::Failed {
            transient: true,
            ..
        })
    ));
    assert_eq!(fake.count(CREATE), 3);

    fake.inject(
        CREATE,
        1,
        Behaviour::Respond(Reply::html(200, "<html><body>Log in</body></html>")),
    );
    assert!(matches!(create().await, Err(ProviderError::Failed { .. })));
    assert_eq!(
        recorder.outcomes(),
        // A cut answer counts as a connection that was cut, whatever the caller makes of it.
        [
            Outcome::Unreachable,
            Outcome::Unreachable,
            Outcome::ServerError,
            Outcome::ServerError
        ]
    );
}

//! Self-tests of the loopback fakes: each fake is driven with reqwest the way orgd's clients
//! will drive it, through its happy path, its refusals and every injected behaviour.

mod azure_devops;
mod behaviours;
mod bitbucket;
mod github;
mod gitlab;
mod jira;
mod slack;
mod webhook_receiver;

use std::io;
use std::time::Duration;

/// A client like orgd's: short timeouts, no redirects followed.
pub fn client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(3))
}

pub fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("orgd-fakes-selftest/0.1")
        .build()
        .expect("client")
}

/// The kind of the I/O error behind a reqwest error, if there is one.
pub fn io_kind(error: &reqwest::Error) -> Option<io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        source = e.source();
    }
    None
}

/// Status, lower-cased headers and JSON body of an answer.
pub async fn parts(
    response: reqwest::Response,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, headers, json)
}

/// A header's value as text.
pub fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

//! The provider clients against the loopback fakes of `orgd-fakes`, which speak each
//! provider's real protocol: requests as the providers expect them, and their answers —
//! refusals, rate limits, broken connections — read into the shared `ProviderError`.

mod azure_devops;
mod bitbucket;
mod github;
mod gitlab;
mod jira;
mod slack;
mod transport;
mod webhook;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use orgd_providers::client::{Client, Observer, Outcome, Provider};
use orgd_providers::ssrf::{PrivateAddresses, UrlPolicy};

/// Every attempt the clients report.
#[derive(Default)]
pub struct Recorder(Mutex<Vec<(Provider, Outcome)>>);

impl Observer for Recorder {
    fn record(&self, provider: Provider, outcome: Outcome) {
        self.0.lock().unwrap().push((provider, outcome));
    }
}

impl Recorder {
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.0.lock().unwrap().iter().map(|(_, o)| *o).collect()
    }
}

/// Seconds since the Unix epoch, as the clients' clock gives them (in milliseconds).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The vendor client, with a short timeout, and what it reports.
pub fn vendor() -> (Client, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let client = Client::new(Duration::from_secs(3), recorder.clone(), Arc::new(now_ms)).unwrap();
    (client, recorder)
}

/// The vendor client with another timeout.
pub fn vendor_with_timeout(timeout: Duration) -> Client {
    let observer = Arc::new(Recorder::default());
    Client::new(timeout, observer, Arc::new(now_ms)).unwrap()
}

/// The guarded client for customer URLs, allowing loopback as `ORGD_ALLOW_PRIVATE_URLS=true`
/// does in tests.
pub fn customer() -> Client {
    let policy = UrlPolicy {
        private: PrivateAddresses::Allowed,
        dns_timeout: Duration::from_secs(2),
    };
    let observer = Arc::new(Recorder::default());
    Client::guarded(
        &policy,
        Duration::from_secs(3),
        1 << 20,
        observer,
        Arc::new(now_ms),
    )
    .unwrap()
}

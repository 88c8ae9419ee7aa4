//! One GraphQL endpoint (Linear's, Monday.com's) on the shared client: `{query, variables}`
//! POSTs, with user text only ever in `variables`.

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::client::{Answer, Client, Provider, ProviderError};

pub struct Graphql {
    client: Client,
    provider: Provider,
    url: String,
}

impl Graphql {
    pub fn new(client: Client, provider: Provider, url: String) -> Self {
        Self {
            client,
            provider,
            url,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// POSTs one operation once and reads the answer with the provider's `classify`.
    pub async fn post<T>(
        &self,
        headers: HeaderMap,
        query: &'static str,
        variables: Value,
        classify: impl FnOnce(&Answer) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let request = self
            .client
            .post(&self.url)
            .headers(headers)
            .json(&json!({"query": query, "variables": variables}));
        self.client.send(self.provider, request, classify).await
    }
}

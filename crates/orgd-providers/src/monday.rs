//! Monday.com's GraphQL API (`reference/tracker-apis.md` §2): checking a token, board and
//! group before saving, creating an item and adding its description as the first update.
//! Monday has no idempotency for `create_item`, so it is repeated only when it certainly
//! did not run (rate limited, or never sent).

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue, InvalidHeaderValue};
use serde_json::{Value, json};

use crate::client::{
    Answer, Client, Provider, ProviderError, Repeat, retry_after, status_failure, with_retries,
};
use crate::graphql::Graphql;

/// What the check learned about the account behind the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MondayAccount {
    /// `https://<slug>.monday.com`, used to build item URLs if an answer lacks one.
    pub slug: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MondayItem {
    pub id: String,
    pub url: String,
}

#[async_trait::async_trait]
pub trait MondayApi: Send + Sync + 'static {
    /// Checks that `token` authenticates, the board exists and, if given, the group is on it.
    async fn check_board(
        &self,
        token: &str,
        board_id: &str,
        group_id: Option<&str>,
    ) -> Result<MondayAccount, ProviderError>;
    async fn create_item(
        &self,
        token: &str,
        board_id: &str,
        group_id: Option<&str>,
        name: &str,
        account_slug: Option<&str>,
    ) -> Result<MondayItem, ProviderError>;
    /// Adds an update (HTML body) to an item.
    async fn add_update(&self, token: &str, item_id: &str, html: &str)
    -> Result<(), ProviderError>;
}

const VALIDATE: &str = "query Validate($boardIds: [ID!]) { me { id account { slug } } boards(ids: $boardIds) { id groups { id } } }";
const CREATE_ITEM: &str = "mutation createItem($boardId: ID!, $itemName: String!, $groupId: String) { create_item(board_id: $boardId, item_name: $itemName, group_id: $groupId) { id url } }";
const CREATE_UPDATE: &str = "mutation createUpdate($itemId: ID!, $body: String!) { create_update(item_id: $itemId, body: $body) { id } }";

pub struct MondayClient {
    endpoint: Graphql,
    api_version: HeaderValue,
}

impl MondayClient {
    pub fn new(client: Client, url: String, api_version: &str) -> Result<Self, InvalidHeaderValue> {
        Ok(Self {
            endpoint: Graphql::new(client, Provider::Monday, url),
            api_version: HeaderValue::from_str(api_version)?,
        })
    }

    /// One operation, repeated only when it certainly did not run.
    async fn call(
        &self,
        token: &str,
        query: &'static str,
        variables: Value,
    ) -> Result<Value, ProviderError> {
        let mut auth =
            HeaderValue::from_str(token).map_err(|_| ProviderError::InvalidCredentials)?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        // The official SDK sends the bare token, for personal and OAuth tokens alike.
        headers.insert(header::AUTHORIZATION, auth);
        headers.insert(
            HeaderName::from_static("api-version"),
            self.api_version.clone(),
        );
        with_retries(Repeat::IfNotApplied, || {
            self.endpoint
                .post(headers.clone(), query, variables.clone(), |answer| {
                    classify(answer, self.endpoint.client().now_ms())
                })
        })
        .await
    }
}

#[async_trait::async_trait]
impl MondayApi for MondayClient {
    async fn check_board(
        &self,
        token: &str,
        board_id: &str,
        group_id: Option<&str>,
    ) -> Result<MondayAccount, ProviderError> {
        let data = self
            .call(token, VALIDATE, json!({"boardIds": [board_id]}))
            .await?;
        if data["me"]["id"].is_null() {
            return Err(ProviderError::InvalidCredentials);
        }
        let board = data["boards"]
            .as_array()
            .and_then(|boards| {
                boards
                    .iter()
                    .find(|b| id_text(&b["id"]).as_deref() == Some(board_id))
            })
            .ok_or(ProviderError::NotFound("board"))?;
        if let Some(group_id) = group_id {
            let groups = board["groups"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            if !groups.iter().any(|g| g["id"].as_str() == Some(group_id)) {
                return Err(ProviderError::NotFound("group"));
            }
        }
        Ok(MondayAccount {
            slug: data["me"]["account"]["slug"].as_str().map(str::to_string),
        })
    }

    async fn create_item(
        &self,
        token: &str,
        board_id: &str,
        group_id: Option<&str>,
        name: &str,
        account_slug: Option<&str>,
    ) -> Result<MondayItem, ProviderError> {
        let variables = json!({"boardId": board_id, "itemName": name, "groupId": group_id});
        let data = self.call(token, CREATE_ITEM, variables).await?;
        let item = &data["create_item"];
        let id = id_text(&item["id"]).ok_or_else(|| ProviderError::Failed {
            reason: "the item was not created".into(),
            transient: false,
        })?;
        let url = match item["url"].as_str().filter(|u| !u.is_empty()) {
            Some(url) => url.to_string(),
            None => {
                let host = account_slug
                    .map_or_else(|| "monday.com".to_string(), |s| format!("{s}.monday.com"));
                format!("https://{host}/boards/{board_id}/pulses/{id}")
            }
        };
        Ok(MondayItem { id, url })
    }

    async fn add_update(
        &self,
        token: &str,
        item_id: &str,
        html: &str,
    ) -> Result<(), ProviderError> {
        let variables = json!({"itemId": item_id, "body": html});
        let data = self.call(token, CREATE_UPDATE, variables).await?;
        match id_text(&data["create_update"]["id"]) {
            Some(_) => Ok(()),
            None => Err(ProviderError::Failed {
                reason: "the update was not created".into(),
                transient: false,
            }),
        }
    }
}

/// Monday ids come back as strings (older versions: numbers).
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Codes compared case-insensitively without `_` (the docs say `COMPLEXITY_BUDGET_EXHAUSTED`,
/// Monday's own SDK `complexityBudgetExhausted`).
fn normalize(code: &str) -> String {
    code.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

const RATE_LIMIT_CODES: [&str; 5] = [
    "complexitybudgetexhausted",
    "complexityexception",
    "ratelimitexceeded",
    "maxconcurrencyexceeded",
    "ipratelimitexceeded",
];
const AUTH_CODES: [&str; 5] = [
    "userunauthorizedexception",
    "userunauthorized",
    "unauthorized",
    "missingrequiredpermissions",
    "not authenticated",
];

/// Monday's answers: any 401 is a bad token; application errors come inside HTTP 200 in the
/// `errors[].extensions.code` form and the older top-level `error_code` form; rate limits as
/// HTTP 429 and/or a code, with `retry_in_seconds`, `Retry-After` or "reset in N seconds".
fn classify(answer: &Answer, now_ms: i64) -> Result<Value, ProviderError> {
    if answer.status.as_u16() == 401 {
        return Err(ProviderError::InvalidCredentials);
    }
    let body = &answer.body;
    let mut codes: Vec<String> = Vec::new();
    if let Some(errors) = body["errors"].as_array() {
        for e in errors {
            // Old bodies list bare strings: `{"errors":["Not Authenticated"]}`.
            let code = e["extensions"]["code"]
                .as_str()
                .or_else(|| e.as_str())
                .unwrap_or("error");
            codes.push(normalize(code));
        }
    }
    if let Some(code) = body["error_code"].as_str() {
        codes.push(normalize(code));
    }
    let has = |wanted: &[&str]| codes.iter().any(|c| wanted.contains(&c.as_str()));
    if has(&["dailylimitexceeded"]) {
        let day_ms = 86_400_000;
        let until_midnight = (day_ms - now_ms.rem_euclid(day_ms)) as u64;
        return Err(ProviderError::RateLimited {
            retry_after_secs: until_midnight.div_ceil(1000),
            inline: false,
        });
    }
    if answer.status.as_u16() == 429 || has(&RATE_LIMIT_CODES) {
        return Err(ProviderError::RateLimited {
            retry_after_secs: retry_after_secs(answer),
            inline: true,
        });
    }
    if has(&AUTH_CODES) {
        return Err(ProviderError::InvalidCredentials);
    }
    for (code, what) in [
        ("invalidboardidexception", "board"),
        ("invalidgroupidexception", "group"),
        ("invaliditemidexception", "item"),
        ("resourcenotfoundexception", "entity"),
    ] {
        if has(&[code]) {
            return Err(ProviderError::NotFound(what));
        }
    }
    if !codes.is_empty() {
        let transient = answer.status.is_server_error() || has(&["internalservererror"]);
        return Err(ProviderError::Failed {
            reason: "request refused".into(),
            transient,
        });
    }
    match (answer.status.is_success(), &body["data"]) {
        (true, data @ Value::Object(_)) => Ok(data.clone()),
        (true, _) => Err(ProviderError::Failed {
            reason: "unexpected response".into(),
            transient: false,
        }),
        (false, _) => Err(status_failure(answer.status)),
    }
}

fn retry_after_secs(answer: &Answer) -> u64 {
    let from_body = || {
        answer.body["errors"]
            .as_array()?
            .iter()
            .find_map(|e| e["extensions"]["retry_in_seconds"].as_u64())
    };
    // Legacy: "... reset in 3 seconds".
    let from_message = || {
        let message = answer.body["error_message"].as_str()?;
        let rest = &message[message.find("reset in ")? + "reset in ".len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    from_body()
        .or_else(|| retry_after(&answer.headers))
        .or_else(from_message)
        .unwrap_or(60)
        .max(1)
}

/// Escapes text for an update's HTML body.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn answer(status: u16, body: Value) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body,
            text: String::new(),
        }
    }

    #[test]
    fn classifies_every_documented_form() {
        let now = 1_796_083_200_000 - 90_000; // 90 s before midnight UTC
        let not_authenticated = json!({"errors":["Not Authenticated"],"status":401});
        assert_eq!(
            classify(&answer(401, not_authenticated.clone()), now),
            Err(ProviderError::InvalidCredentials)
        );
        assert_eq!(
            classify(&answer(401, Value::Null), now),
            Err(ProviderError::InvalidCredentials)
        );
        assert_eq!(
            classify(&answer(200, not_authenticated), now),
            Err(ProviderError::InvalidCredentials)
        );
        let unauthorized = json!({"data": [], "errors":[{"message":"User unauthorized to perform action",
            "extensions":{"code":"UserUnauthorizedException","error_data":{},"status_code":403}}],"account_id":1});
        assert_eq!(
            classify(&answer(200, unauthorized), now),
            Err(ProviderError::InvalidCredentials)
        );
        let budget = json!({"errors":[{"message":"Complexity budget exhausted","extensions":{"code":"COMPLEXITY_BUDGET_EXHAUSTED","retry_in_seconds":12}}]});
        let limited = Err(ProviderError::RateLimited {
            retry_after_secs: 12,
            inline: true,
        });
        assert_eq!(classify(&answer(200, budget.clone()), now), limited);
        assert_eq!(classify(&answer(429, budget), now), limited);
        let legacy = json!({"error_code":"ComplexityException","status_code":429,
            "error_message":"Complexity budget exhausted, query cost 30001 budget remaining 19986 out of 1000000 reset in 3 seconds"});
        assert_eq!(
            classify(&answer(200, legacy), now),
            Err(ProviderError::RateLimited {
                retry_after_secs: 3,
                inline: true
            })
        );
        let mut bare = answer(429, Value::Null);
        bare.headers.insert("retry-after", HeaderValue::from(9));
        assert_eq!(
            classify(&bare, now),
            Err(ProviderError::RateLimited {
                retry_after_secs: 9,
                inline: true
            })
        );
        let daily = json!({"errors":[{"message":"Daily limit exceeded","extensions":{"code":"DAILY_LIMIT_EXCEEDED"}}]});
        assert_eq!(
            classify(&answer(200, daily), now),
            Err(ProviderError::RateLimited {
                retry_after_secs: 90,
                inline: false
            })
        );
        let camel =
            json!({"errors":[{"message":"x","extensions":{"code":"complexityBudgetExhausted"}}]});
        assert!(matches!(
            classify(&answer(200, camel), now),
            Err(ProviderError::RateLimited { .. })
        ));
        let board = json!({"data":{"create_item":null},"errors":[{"message":"The board does not exist",
            "extensions":{"code":"InvalidBoardIdException","error_data":{"board_id":1},"status_code":200}}],
            "error_code":"InvalidBoardIdException","error_message":"…"});
        assert_eq!(
            classify(&answer(200, board), now),
            Err(ProviderError::NotFound("board"))
        );
        let old_format = json!({"error_code":"InvalidGroupIdException","error_message":"no group","status_code":200});
        assert_eq!(
            classify(&answer(200, old_format), now),
            Err(ProviderError::NotFound("group"))
        );
        assert!(matches!(
            classify(
                &answer(
                    500,
                    json!({"errors":[{"message":"x","extensions":{"code":"INTERNAL_SERVER_ERROR"}}]})
                ),
                now
            ),
            Err(ProviderError::Failed {
                transient: true,
                ..
            })
        ));
        assert!(matches!(
            classify(&answer(500, Value::Null), now),
            Err(ProviderError::Failed {
                transient: true,
                ..
            })
        ));
        assert_eq!(
            classify(&answer(200, json!({"data":{"me":{"id":"1"}}})), now),
            Ok(json!({"me":{"id":"1"}}))
        );
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape_html("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }
}

//! `limit` / `offset` of list endpoints. Like `JsonBody`, the extractor never rejects: the
//! handler reads the page after authorization, so a bad query from an unauthorized caller is
//! still a 403.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::Deserialize;

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

impl Page {
    pub const DEFAULT_LIMIT: i64 = 100;
    pub const MAX_LIMIT: i64 = 500;
}

#[derive(Debug, Deserialize)]
struct RawPage {
    limit: Option<String>,
    offset: Option<String>,
}

pub struct PageQuery(Result<Page, ApiError>);

impl PageQuery {
    /// The requested page, or 400 `Invalid limit` / `Invalid offset` / `Invalid query`.
    pub fn page(self) -> Result<Page, ApiError> {
        self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PageQuery {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parse(&parts.uri)))
    }
}

fn parse(uri: &axum::http::Uri) -> Result<Page, ApiError> {
    let Query(raw) = Query::<RawPage>::try_from_uri(uri).map_err(|_| {
        ApiError::bad_request("Invalid query", "The query string could not be parsed")
    })?;
    let limit = match raw.limit.as_deref() {
        None => Page::DEFAULT_LIMIT,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=Page::MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", "limit must be an integer from 1 to 500"))?,
    };
    let offset =
        match raw.offset.as_deref() {
            None => 0,
            Some(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::invalid("offset", "offset must be a non-negative integer")
            })?,
        };
    Ok(Page { limit, offset })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(q: &str) -> Result<Page, String> {
        let uri: axum::http::Uri = format!("/x{q}").parse().unwrap();
        parse(&uri).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_bounds_and_garbage() {
        assert_eq!(
            page(""),
            Ok(Page {
                limit: 100,
                offset: 0
            })
        );
        assert_eq!(
            page("?limit=500&offset=7"),
            Ok(Page {
                limit: 500,
                offset: 7
            })
        );
        assert_eq!(
            page("?limit=1"),
            Ok(Page {
                limit: 1,
                offset: 0
            })
        );
        for bad in [
            "?limit=0",
            "?limit=501",
            "?limit=x",
            "?offset=-1",
            "?offset=1.5",
            "?limit=",
        ] {
            assert!(page(bad).is_err(), "{bad}");
        }
    }
}

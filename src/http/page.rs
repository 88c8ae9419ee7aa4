//! `limit` / `offset` (and `cursor`, where a list takes one) of list endpoints. Like `JsonBody`, the extractor never rejects: the
//! handler reads the page after authorization, so a bad query from an unauthorized caller is
//! still a 403.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::Deserialize;

use crate::error::ApiError;
use orgd_core::cursor::Cursor;

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
    cursor: Option<String>,
}

pub struct PageQuery(Result<RawPage, ApiError>);

/// `limit` and `offset` as the OpenAPI document shows them.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, at least 1 (the largest and the default depend on the list).
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    /// Entries to skip.
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

/// `cursor` as the OpenAPI document shows it, on the lists that take one.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CursorParams {
    /// `nextCursor` of the previous page: the page after it, at the cost of a first page
    /// (instead of `offset`, which cannot be combined with it).
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The requested page, or 400 `Invalid limit` / `Invalid offset` / `Invalid query`.
    pub fn page(self) -> Result<Page, ApiError> {
        self.page_within(Page::DEFAULT_LIMIT, Page::MAX_LIMIT)
    }

    /// The same with an endpoint's own default and largest `limit`.
    pub fn page_within(self, default_limit: i64, max_limit: i64) -> Result<Page, ApiError> {
        parse(self.0?, default_limit, max_limit)
    }

    /// The page and the `cursor` it starts after, on a list that takes one: 400
    /// `Invalid cursor` for one this API did not hand out, `Invalid offset` for an offset
    /// beside a cursor (a page starts at one or the other).
    pub fn keyset_within(
        self,
        default_limit: i64,
        max_limit: i64,
    ) -> Result<(Page, Option<Cursor>), ApiError> {
        let mut raw = self.0?;
        let cursor = raw.cursor.take();
        let page = parse(raw, default_limit, max_limit)?;
        let Some(cursor) = cursor else {
            return Ok((page, None));
        };
        let cursor = parse_cursor(&cursor)?;
        if page.offset != 0 {
            return Err(ApiError::invalid(
                "offset",
                "offset cannot be combined with cursor",
            ));
        }
        Ok((page, Some(cursor)))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PageQuery {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let raw = Query::<RawPage>::try_from_uri(&parts.uri)
            .map(|Query(raw)| raw)
            .map_err(|_| {
                ApiError::bad_request("Invalid query", "The query string could not be parsed")
            });
        Ok(Self(raw))
    }
}

/// A `cursor` query parameter: one this API handed out as `nextCursor`, else 400
/// `Invalid cursor`.
pub fn parse_cursor(raw: &str) -> Result<Cursor, ApiError> {
    Cursor::decode(raw)
        .ok_or_else(|| ApiError::invalid("cursor", "cursor is not one this API returned"))
}

fn parse(raw: RawPage, default_limit: i64, max_limit: i64) -> Result<Page, ApiError> {
    let limit = match raw.limit.as_deref() {
        None => default_limit,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=max_limit).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("limit must be an integer from 1 to {max_limit}"),
                )
            })?,
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
        let Query(raw) = Query::<RawPage>::try_from_uri(&uri).map_err(|e| e.to_string())?;
        parse(raw, Page::DEFAULT_LIMIT, Page::MAX_LIMIT).map_err(|e| e.to_string())
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

//! The query-parameter rules every route shares, each in one place: paging (`limit`, `offset`:
//! [`Paging`], the same range on every list route) and filters (an empty value filters
//! nothing: [`filter_value`]). `openapi.json` states the same numbers (a unit test checks it).

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query};
use axum::http::Uri;
use axum::http::request::Parts;

use super::ApiError;

/// `limit` when none is given.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit`: a larger one is refused (not clamped), so a client never gets a shorter
/// page than it asked for without being told.
pub const MAX_LIMIT: usize = 1000;
/// The largest `offset`: no fleet or history comes near it, and it fits every client's integers
/// (JSON numbers in JavaScript are exact up to 2^53).
pub const MAX_OFFSET: usize = 1_000_000_000;

/// One page of a list: `?limit=` (1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]) and `?offset=`
/// (0 to [`MAX_OFFSET`], default 0). Anything else, an empty value or the parameter given twice
/// included, is a 400 naming the parameter and its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Paging {
    pub(crate) limit: usize,
    pub(crate) offset: usize,
}

impl Paging {
    /// Read `limit` and `offset` from a request's query string (other parameters are left to
    /// the route's own filters).
    pub(crate) fn from_uri(uri: &Uri) -> Result<Paging, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri).map_err(bad_query)?;
        let mut limit = None;
        let mut offset = None;
        for (name, value) in pairs {
            let slot = match name.as_str() {
                "limit" => &mut limit,
                "offset" => &mut offset,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(ApiError::bad_request(format!(
                    "`{name}` is given more than once"
                )));
            }
        }
        Ok(Paging {
            limit: bounded("limit", limit.as_deref(), 1, MAX_LIMIT, DEFAULT_LIMIT)?,
            offset: bounded("offset", offset.as_deref(), 0, MAX_OFFSET, 0)?,
        })
    }

    /// This page of `items`.
    pub(crate) fn of<T>(self, items: impl Iterator<Item = T>) -> impl Iterator<Item = T> {
        items.skip(self.offset).take(self.limit)
    }
}

/// A decimal integer in `min..=max`, or `default` when the parameter is absent.
fn bounded(
    name: &str,
    text: Option<&str>,
    min: usize,
    max: usize,
    default: usize,
) -> Result<usize, ApiError> {
    let Some(text) = text else {
        return Ok(default);
    };
    text.parse::<usize>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{name}` must be an integer from {min} to {max}, not {text:?}"
            ))
        })
}

impl<S: Send + Sync> FromRequestParts<S> for Paging {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Paging::from_uri(&parts.uri)
    }
}

/// A filter's value, or `None` for no filter: an absent parameter and an empty one (`?agent=`)
/// mean the same, as a form with an empty field sends one (`allowEmptyValue` in the document).
/// Every filter of every route reads its value through this.
pub(crate) fn filter_value(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

/// A route's filters (axum's `Query`), a query string they cannot be read from as a JSON 400.
pub(crate) fn filters<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v).map_err(bad_query)
}

fn bad_query(e: QueryRejection) -> ApiError {
    ApiError::bad_request(format!("bad query: {}", e.body_text()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paging(query: &str) -> Result<Paging, ApiError> {
        let uri: Uri = format!("/api/v1/agents?{query}").parse().expect("uri");
        Paging::from_uri(&uri)
    }

    fn error(query: &str) -> String {
        format!("{:?}", paging(query).expect_err(query))
    }

    #[test]
    fn paging_defaults_and_bounds() {
        assert_eq!(
            paging("status=synced").ok(),
            Some(Paging {
                limit: DEFAULT_LIMIT,
                offset: 0
            })
        );
        assert_eq!(
            paging("limit=1000&offset=1000000000").ok(),
            Some(Paging {
                limit: 1000,
                offset: MAX_OFFSET
            })
        );
        for (query, named) in [
            ("limit=0", "`limit` must be an integer from 1 to 1000"),
            ("limit=1001", "`limit` must be an integer from 1 to 1000"),
            ("limit=ten", "`limit` must be an integer from 1 to 1000"),
            ("limit=", "`limit` must be an integer from 1 to 1000"),
            ("limit=-1", "`limit` must be an integer from 1 to 1000"),
            (
                "offset=99999999999999999999999",
                "`offset` must be an integer from 0 to 1000000000",
            ),
            (
                "offset=1.5",
                "`offset` must be an integer from 0 to 1000000000",
            ),
            ("limit=1&limit=2", "`limit` is given more than once"),
        ] {
            let e = error(query);
            assert!(e.contains(named), "{query}: {e}");
        }
    }

    #[test]
    fn an_empty_filter_is_no_filter() {
        assert_eq!(filter_value(None), None);
        assert_eq!(filter_value(Some("")), None);
        assert_eq!(filter_value(Some("x")), Some("x"));
    }
}

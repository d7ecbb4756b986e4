//! Plain HTTP transport: one POST = one AgentToServer, answered with one
//! ServerToAgent (always 200 unless the request itself is unusable).

use std::io::{Read, Write};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use prost::Message;

use super::Listener;
use crate::proto::AgentToServer;
use crate::report::Transport;
use crate::session::{Connection, handle_poll, take_late_config};

const PROTOBUF: &str = "application/x-protobuf";

/// Why a request body was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("unsupported content encoding")]
    Encoding,
    #[error("invalid request body: {0}")]
    Invalid(String),
    #[error("request body not received within {0:?}")]
    Timeout(std::time::Duration),
}

impl BodyError {
    /// The HTTP status it is answered with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Encoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

impl IntoResponse for BodyError {
    fn into_response(self) -> Response {
        (self.status(), self.to_string()).into_response()
    }
}

/// `application/x-protobuf`, with or without parameters; a missing header is tolerated
/// (some HTTP client libraries leave it to the caller).
fn content_type_ok(headers: &HeaderMap) -> bool {
    match headers.get(CONTENT_TYPE) {
        None => true,
        Some(v) => v.to_str().is_ok_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case(PROTOBUF))
        }),
    }
}

/// True if `Accept-Encoding` allows gzip (or `*`) with q > 0.
pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            if !coding.eq_ignore_ascii_case("gzip") && coding != "*" {
                return false;
            }
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .filter_map(|q| q.trim().parse::<f32>().ok())
                .next()
                .unwrap_or(1.0);
            q > 0.0
        })
}

/// Reads at most `limit` bytes of body, failing as soon as more arrive.
async fn read_limited(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, BodyError> {
    if let Some(len) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(BodyError::TooLarge(limit));
    }
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Invalid(e.to_string()))?;
        if buf.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Gunzips at most `limit` bytes: a gzip bomb stops at the limit.
fn gunzip_limited(data: &[u8], limit: usize) -> Result<Bytes, BodyError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Invalid(format!("bad gzip body: {e}")))?;
    if out.len() > limit {
        return Err(BodyError::TooLarge(limit));
    }
    Ok(Bytes::from(out))
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data)?;
    enc.finish()
}

/// The request body, gunzipped if it says so: at most `limit` bytes before and after
/// decompression (a gzip bomb stops at the limit), whole within `timeout`.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, BodyError> {
    let raw = tokio::time::timeout(timeout, read_limited(body, headers, limit))
        .await
        .map_err(|_| BodyError::Timeout(timeout))??;
    let plain = match headers
        .get(CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "identity") => raw,
        Some("gzip" | "x-gzip") => gunzip_limited(&raw, limit)?,
        Some(_) => return Err(BodyError::Encoding),
    };
    Ok(plain)
}

async fn decode_request(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<AgentToServer, BodyError> {
    let plain = read_body(headers, body, limit, timeout).await?;
    AgentToServer::decode(plain)
        .map_err(|e| BodyError::Invalid(format!("not an AgentToServer: {e}")))
}

pub(super) async fn post(
    State(state): State<Arc<Listener>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !state.authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(_slot) = state.admit() else {
        return super::unavailable();
    };
    if !content_type_ok(&headers) {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected application/x-protobuf",
        )
            .into_response();
    }
    let limit = state.settings.max_message_bytes;
    let msg = match decode_request(&headers, body, limit, state.settings.body_read_timeout).await {
        Ok(m) => m,
        Err(err) => {
            tracing::debug!(error = %err, "rejecting OpAMP HTTP request");
            return err.into_response();
        }
    };
    let mut conn = Connection::new(state.next_conn_id(), Transport::Http, None)
        .with_reach(super::reach_of(&headers));
    let (mut reply, awaiting) = handle_poll(&state.fleet, &mut conn, msg);
    // A plan under way may decide a config for this agent: the reply waits for it (bounded),
    // rather than the agent waiting a whole poll interval (`plan_wait`).
    let wait = state.settings.poll_reply_wait;
    if let Some(a) = awaiting
        && !wait.is_zero()
    {
        // Whether or not the plan finished in time, what it handed over so far goes now.
        let started = std::time::Instant::now();
        if !state.fleet.wait_for_plan(a.ticket, wait).await {
            tracing::debug!(
                wait_ms = started.elapsed().as_millis() as u64,
                "A poll reply waited its whole limit for a plan; answered without it."
            );
        }
        take_late_config(&state.fleet, &conn, &a.uid, &mut reply);
    }
    if !reply.fit(limit, 0) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let body = reply.encode();
    let mut resp_headers = HeaderMap::new();
    resp_headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROTOBUF));
    let body = if accepts_gzip(&headers) {
        match gzip(&body) {
            Ok(z) => {
                resp_headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                Bytes::from(z)
            }
            Err(_) => body,
        }
    } else {
        body
    };
    (StatusCode::OK, resp_headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding() {
        let h = |v: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(ACCEPT_ENCODING, HeaderValue::from_static(v));
            m
        };
        assert!(accepts_gzip(&h("gzip")));
        assert!(accepts_gzip(&h("deflate, gzip;q=0.5")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&HeaderMap::new()));
        assert!(accepts_gzip(&h("*")));
    }

    #[test]
    fn gzip_bomb_is_bounded() {
        let big = vec![0u8; 1 << 20];
        let z = gzip(&big).unwrap();
        assert!(matches!(
            gunzip_limited(&z, 1000),
            Err(BodyError::TooLarge(_))
        ));
        assert_eq!(gunzip_limited(&z, 1 << 20).unwrap().len(), 1 << 20);
    }
}

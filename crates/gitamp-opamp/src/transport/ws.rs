//! WebSocket transport: one task per connection owns the socket, so replies and
//! pushes are written one at a time and never interleave. The framing is ours
//! ([`super::websocket`]): an idle connection holds no read or write buffer.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::AppState;
use super::websocket::{self, CLOSE_NORMAL, Incoming, MessageReader};
use crate::fleet::{Outgoing, Transport};
use crate::frame::decode_frame;
use crate::outbox::{Push, outbox};
use crate::proto::AgentToServer;
use crate::session::{Connection, bad_request, handle_message};

/// `GET` on the OpAMP path: checks the secret and the opening handshake, answers 101 and
/// serves the upgraded connection in its own task.
pub(super) async fn upgrade(State(state): State<Arc<AppState>>, mut req: Request) -> Response {
    if !state.authorized(req.headers()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let accept = match websocket::accept(req.headers()) {
        Ok(accept) => accept,
        Err(err) => {
            return (
                err.status(),
                [(header::SEC_WEBSOCKET_VERSION, "13")],
                err.to_string(),
            )
                .into_response();
        }
    };
    let Some(slot) = state.admit() else {
        return super::unavailable();
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run(TokioIo::new(upgraded), state).await,
            Err(err) => tracing::debug!(error = %err, "websocket upgrade failed"),
        }
        drop(slot);
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    resp
}

/// Writes one outgoing OpAMP frame; false if the connection is gone. A frame over the
/// limit is dropped (and counted), the connection kept.
async fn send_frame<W: AsyncWrite + Unpin>(io: &mut W, frame: &Push, limit: usize) -> bool {
    if frame.len() > limit {
        tracing::warn!(
            len = frame.len(),
            limit,
            "outgoing ServerToAgent over the size limit dropped"
        );
        metrics::counter!("gitamp_opamp_oversize_outgoing_total").increment(1);
        return true;
    }
    websocket::write_binary(io, frame.parts()).await.is_ok()
}

/// The close code to answer a peer's close with: its own (RFC 6455 §5.5.1), unless it sent
/// none or one that may not appear on the wire.
fn echo_close(code: Option<u16>) -> u16 {
    match code {
        Some(c) if !matches!(c, 1005 | 1006 | 1015) && (1000..5000).contains(&c) => c,
        _ => CLOSE_NORMAL,
    }
}

/// Serves one upgraded connection until either side closes it.
async fn run<S>(io: S, state: Arc<AppState>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let id = state.next_conn_id();
    let limit = state.settings.max_message_bytes;
    let (read, mut write) = tokio::io::split(io);
    // The stream keeps the read in progress between polls, so `select!` may drop its `next()`
    // without losing half a frame.
    let incoming = futures_util::stream::unfold(MessageReader::new(read, limit), |mut r| async {
        let next = r.next().await;
        Some((next, r))
    });
    let mut incoming = std::pin::pin!(incoming);
    let (tx, rx) = outbox(state.settings.outbound_queue);
    let mut conn = Connection::new(id, Transport::Ws, Some(tx));
    // Pings let a half-open TCP connection fail on write; liveness never depends on pongs.
    let mut ping = tokio::time::interval(
        state
            .settings
            .heartbeat_interval
            .max(std::time::Duration::from_millis(10)),
    );
    ping.reset();
    tracing::debug!(conn = id, "websocket connected");
    loop {
        tokio::select! {
            Some(incoming) = incoming.next() => {
                let reply: Outgoing = match incoming {
                    Err(err) => {
                        tracing::debug!(conn = id, error = %err, "websocket read ended");
                        if let Some(code) = err.close_code() {
                            let reason = if code == websocket::CLOSE_TOO_BIG {
                                "message too big"
                            } else {
                                "protocol error"
                            };
                            let _ = websocket::write_close(&mut write, code, reason).await;
                        }
                        break;
                    }
                    Ok(Incoming::Binary(data)) => match decode_frame::<AgentToServer>(data) {
                        Ok(msg) => handle_message(&state.fleet, &mut conn, msg),
                        Err(err) => {
                            tracing::debug!(conn = id, error = %err, "malformed websocket frame");
                            bad_request(Bytes::new(), err.to_string())
                        }
                    },
                    Ok(Incoming::Text) => {
                        bad_request(Bytes::new(), "text frames are not OpAMP; send binary frames")
                    }
                    Ok(Incoming::Ping(payload)) => {
                        if websocket::write_pong(&mut write, &payload).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    Ok(Incoming::Pong) => continue,
                    Ok(Incoming::Close(code)) => {
                        let _ = websocket::write_close(&mut write, echo_close(code), "").await;
                        break;
                    }
                };
                let mut reply = reply;
                if !reply.fit(limit, 1) {
                    continue;
                }
                if !send_frame(&mut write, &Push::frame(&reply), limit).await {
                    break;
                }
            }
            push = rx.recv() => {
                if !send_frame(&mut write, &push, limit).await {
                    break;
                }
            }
            _ = ping.tick() => {
                if websocket::write_ping(&mut write).await.is_err() {
                    break;
                }
            }
        }
    }
    let uids: Vec<_> = conn.uids().copied().collect();
    // Drop our sender copy and the receiver so pushes to this connection fail fast.
    drop(conn);
    rx.close();
    state.fleet.connection_closed(id, uids);
    tracing::debug!(conn = id, "websocket closed");
}

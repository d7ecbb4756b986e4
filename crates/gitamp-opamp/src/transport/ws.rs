//! WebSocket transport: one task per connection owns the socket, so replies and
//! pushes are written one at a time and never interleave.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::AppState;
use crate::fleet::{Outgoing, Transport};
use crate::frame::decode_frame;
use crate::proto::AgentToServer;
use crate::session::{Connection, bad_request, handle_message};

/// Small per-connection buffers: tungstenite's 128 KiB defaults cost ~12 GiB at 100k
/// agents; OpAMP messages are usually a few hundred bytes.
const READ_BUFFER: usize = 4 * 1024;
const WRITE_BUFFER: usize = 4 * 1024;

/// Close code for "message too big" (RFC 6455).
const CLOSE_TOO_BIG: u16 = 1009;

pub(super) async fn upgrade(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !state.authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(slot) = state.admit() else {
        return super::unavailable();
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let limit = state.settings.max_message_bytes;
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            run(socket, state).await;
            drop(slot);
        })
}

/// True if a read error is tungstenite's "message/frame too big".
fn is_capacity(err: axum::Error) -> bool {
    err.into_inner()
        .downcast_ref::<tokio_tungstenite::tungstenite::Error>()
        .is_some_and(|e| matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_)))
}

async fn send_frame(socket: &mut WebSocket, frame: Bytes, limit: usize) -> bool {
    if frame.len() > limit {
        tracing::warn!(
            len = frame.len(),
            limit,
            "outgoing ServerToAgent over the size limit dropped"
        );
        metrics::counter!("gitamp_opamp_oversize_outgoing_total").increment(1);
        return true;
    }
    socket.send(Message::Binary(frame)).await.is_ok()
}

async fn run(mut socket: WebSocket, state: Arc<AppState>) {
    let id = state.next_conn_id();
    let limit = state.settings.max_message_bytes;
    let (tx, mut rx) = mpsc::channel::<Bytes>(state.settings.outbound_queue.max(1));
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
            incoming = socket.recv() => {
                let reply: Outgoing = match incoming {
                    None => break,
                    Some(Err(err)) => {
                        if is_capacity(err) {
                            tracing::info!(conn = id, "websocket message over the size limit: closing");
                            let _ = socket
                                .send(Message::Close(Some(CloseFrame {
                                    code: CLOSE_TOO_BIG,
                                    reason: "message too big".into(),
                                })))
                                .await;
                        }
                        break;
                    }
                    Some(Ok(Message::Binary(data))) => match decode_frame::<AgentToServer>(data) {
                        Ok(msg) => handle_message(&state.fleet, &mut conn, msg),
                        Err(err) => {
                            tracing::debug!(conn = id, error = %err, "malformed websocket frame");
                            bad_request(Bytes::new(), err.to_string())
                        }
                    },
                    Some(Ok(Message::Text(_))) => {
                        bad_request(Bytes::new(), "text frames are not OpAMP; send binary frames")
                    }
                    Some(Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                };
                let mut reply = reply;
                if !reply.fit(limit, 1) {
                    continue;
                }
                if !send_frame(&mut socket, reply.encode_frame(), limit).await {
                    break;
                }
            }
            Some(frame) = rx.recv() => {
                if !send_frame(&mut socket, frame, limit).await {
                    break;
                }
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Bytes::new())).await.is_err() {
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

//! WebSocket transport: one task per connection owns the socket, so replies and
//! pushes are written one at a time and never interleave. The framing is ours
//! ([`super::websocket`]): an idle connection holds no read or write buffer.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Listener;
use super::websocket::{self, CLOSE_NORMAL, Incoming, MessageReader, OutFrame};
use crate::frame::decode_frame;
use crate::outbox::{Push, outbox};
use crate::proto::AgentToServer;
use crate::report::Transport;
use crate::session::{Connection, bad_request, handle_message};
use crate::wire::Outgoing;

/// `GET` on the OpAMP path: checks the secret and the opening handshake, answers 101 and
/// serves the upgraded connection in its own task.
pub(super) async fn upgrade(State(state): State<Arc<Listener>>, mut req: Request) -> Response {
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
    let reach = super::reach_of(req.headers());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run(TokioIo::new(upgraded), state, reach).await,
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
        crate::telemetry::oversize_outgoing();
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

/// At most this many replies go out in one write.
const REPLY_BATCH: usize = 16;

/// Replies and pongs owed for messages read together, in the order they are owed.
#[derive(Default)]
struct Answers {
    frames: Vec<Push>,
    /// Pongs, each with the number of replies that precede it.
    pongs: Vec<(usize, Bytes)>,
}

impl Answers {
    fn len(&self) -> usize {
        self.frames.len() + self.pongs.len()
    }

    fn reply(&mut self, mut reply: Outgoing, limit: usize) {
        // A reply that cannot be made to fit is dropped (and counted by `fit`).
        if reply.fit(limit, 1) {
            self.frames.push(Push::frame(&reply));
        }
    }

    /// Writes everything owed in one go; false if the connection is gone. (Replies were made
    /// to fit the limit when they were added.)
    async fn write<W: AsyncWrite + Unpin>(&self, io: &mut W) -> bool {
        if self.len() == 0 {
            return true;
        }
        let mut out = Vec::with_capacity(self.len());
        let mut pongs = self.pongs.iter().peekable();
        for (i, frame) in self.frames.iter().enumerate() {
            while let Some((_, p)) = pongs.next_if(|(at, _)| *at == i) {
                out.push(OutFrame::pong(p));
            }
            out.push(OutFrame::binary(frame.parts()));
        }
        out.extend(pongs.map(|(_, p)| OutFrame::pong(p)));
        websocket::write_frames(io, &out).await.is_ok()
    }
}

/// Serves one upgraded connection until either side closes it.
async fn run<S>(io: S, state: Arc<Listener>, reach: crate::offers::Reach)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let id = state.next_conn_id();
    let limit = state.settings.max_message_bytes;
    let (read, mut write) = tokio::io::split(io);
    // The stream keeps the read in progress between polls, so `select!` may drop its `next()`
    // without losing half a frame.
    let reader =
        MessageReader::new(read, limit).with_message_timeout(state.settings.body_read_timeout);
    let incoming = futures_util::stream::unfold(reader, |mut r| async {
        let next = r.next().await;
        Some((next, r))
    });
    let mut incoming = std::pin::pin!(incoming);
    let (tx, rx) = outbox(state.settings.outbound_queue);
    let mut conn = Connection::new(id, Transport::Ws, Some(tx)).with_reach(reach);
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
            Some(first) = incoming.next() => {
                // Answer every message that is already here, then write the answers together:
                // an agent's APPLYING and APPLIED usually arrive in one segment, and a write
                // (with the loopback peer's receive work it carries) is most of a rollout's
                // server CPU. Each message still gets exactly one reply, in order.
                let mut answers = Answers::default();
                let mut next = Some(first);
                let mut end = None;
                while let Some(item) = next.take() {
                    match item {
                        Err(err) => {
                            tracing::debug!(conn = id, error = %err, "websocket read ended");
                            end = Some(err.close_code().map(|code| {
                                let reason = match code {
                                    websocket::CLOSE_TOO_BIG => "message too big",
                                    websocket::CLOSE_POLICY => "message too slow",
                                    _ => "protocol error",
                                };
                                (code, reason)
                            }));
                        }
                        Ok(Incoming::Binary(data)) => {
                            let reply = match decode_frame::<AgentToServer>(data) {
                                Ok(msg) => handle_message(&state.fleet, &mut conn, msg),
                                Err(err) => {
                                    tracing::debug!(conn = id, error = %err, "malformed websocket frame");
                                    bad_request(Bytes::new(), err.to_string())
                                }
                            };
                            answers.reply(reply, limit);
                        }
                        Ok(Incoming::Text) => answers.reply(
                            bad_request(Bytes::new(), "text frames are not OpAMP; send binary frames"),
                            limit,
                        ),
                        Ok(Incoming::Ping(payload)) => answers.pongs.push((answers.frames.len(), payload)),
                        Ok(Incoming::Pong) => {}
                        Ok(Incoming::Close(code)) => end = Some(Some((echo_close(code), ""))),
                    }
                    if end.is_some() || answers.len() >= REPLY_BATCH {
                        break;
                    }
                    // Cancel-safe: the stream keeps a message that is only partly here.
                    next = incoming.next().now_or_never().flatten();
                }
                if !answers.write(&mut write).await {
                    break;
                }
                if let Some(close) = end {
                    if let Some((code, reason)) = close {
                        let _ = websocket::write_close(&mut write, code, reason).await;
                    }
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

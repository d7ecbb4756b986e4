//! WebSocket driver: one connection per agent, binary frames with the varint header 0.
//!
//! The socket is created and bound by us (`TcpSocket`) and handed to
//! `tokio_tungstenite::client_async_with_config`, because the load generator must choose the
//! source address (127.0.0.x) and tungstenite's own connect cannot.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::Uri;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use super::SimAgent;
use super::driver::{Control, WsOptions};
use crate::frame::{decode_frame, encode_frame};
use crate::proto::{AgentToServer, ServerToAgent};

type Ws = WebSocketStream<TcpStream>;

async fn connect(url: &str, opts: &WsOptions) -> Result<Ws, String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad url {url:?}: {e}"))?;
    let default_port = match uri.scheme_str() {
        Some("ws") => 80,
        other => return Err(format!("unsupported scheme {other:?} (only ws://)")),
    };
    let host = uri.host().ok_or_else(|| format!("no host in {url:?}"))?;
    let authority = format!("{host}:{}", uri.port_u16().unwrap_or(default_port));
    let addr: SocketAddr = tokio::net::lookup_host(&authority)
        .await
        .map_err(|e| format!("resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("resolve {authority}: no address"))?;
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| format!("socket: {e}"))?;
    if let Some(ip) = opts.local_ip {
        sock.bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("bind {ip}: {e}"))?;
    }
    let stream = sock
        .connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut req = url
        .into_client_request()
        .map_err(|e| format!("request: {e}"))?;
    for (k, v) in &opts.headers {
        let name = tungstenite::http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| format!("header {k}: {e}"))?;
        let value = HeaderValue::from_str(v).map_err(|e| format!("header {k}: {e}"))?;
        req.headers_mut().insert(name, value);
    }
    // Frames are buffered until a flush (`send` flushes each; `send_all` flushes a step once).
    let config = WebSocketConfig::default()
        .read_buffer_size(opts.read_buffer_size)
        .write_buffer_size(64 * 1024);
    let (ws, _resp) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    Ok(ws)
}

async fn send(ws: &mut Ws, msg: &AgentToServer) -> Result<(), String> {
    ws.send(Message::Binary(encode_frame(msg)))
        .await
        .map_err(|e| format!("send: {e}"))
}

/// Sends the messages of one step (APPLYING then APPLIED) with one flush: one write instead
/// of one per message, for the load generator's CPU. The server still reads two messages.
async fn send_all(ws: &mut Ws, msgs: &[AgentToServer]) -> Result<(), String> {
    for msg in msgs {
        ws.feed(Message::Binary(encode_frame(msg)))
            .await
            .map_err(|e| format!("send: {e}"))?;
    }
    ws.flush().await.map_err(|e| format!("send: {e}"))
}

enum After {
    Reconnect,
    Stop,
}

/// Runs one agent until [`Control::Stop`] (or the handle's channel closes).
pub(crate) async fn run(
    mut agent: SimAgent,
    url: String,
    opts: WsOptions,
    mut ctl: mpsc::UnboundedReceiver<Control>,
) {
    let mut first = true;
    loop {
        // A Stop queued before we ever connected ends the agent without connecting.
        let connected = tokio::select! {
            r = tokio::time::timeout(opts.connect_timeout, connect(&url, &opts)) => {
                r.unwrap_or_else(|_| Err("connect timed out".to_owned()))
            }
            c = ctl.recv() => match c {
                Some(Control::Stop) | None => break,
                Some(Control::InjectGap) => { agent.inject_sequence_gap(); continue }
                Some(_) => continue,
            }
        };
        let mut ws = match connected {
            Ok(ws) => ws,
            Err(e) => {
                agent.note_transport_error(e);
                if wait_or_stop(&mut ctl, &mut agent, opts.reconnect_delay).await {
                    break;
                }
                continue;
            }
        };
        agent.note_connected(true);
        let hello = if first {
            agent.full_report()
        } else {
            agent.hello_after_reconnect()
        };
        first = false;
        let after = session(&mut agent, &mut ws, hello, &mut ctl).await;
        agent.note_connected(false);
        match after {
            After::Stop => break,
            After::Reconnect => {
                if wait_or_stop(&mut ctl, &mut agent, opts.reconnect_delay).await {
                    break;
                }
            }
        }
    }
    agent.note_finished();
}

/// Sleeps `d`; returns true when a Stop arrived meanwhile.
async fn wait_or_stop(
    ctl: &mut mpsc::UnboundedReceiver<Control>,
    agent: &mut SimAgent,
    d: Duration,
) -> bool {
    let until = Instant::now() + d;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return false,
            c = ctl.recv() => match c {
                Some(Control::Stop) | None => return true,
                Some(Control::InjectGap) => agent.inject_sequence_gap(),
                Some(_) => {}
            }
        }
    }
}

/// One connection's life: hello, then replies, heartbeats and control requests.
async fn session(
    agent: &mut SimAgent,
    ws: &mut Ws,
    hello: AgentToServer,
    ctl: &mut mpsc::UnboundedReceiver<Control>,
) -> After {
    if let Err(e) = send(ws, &hello).await {
        agent.note_transport_error(e);
        return After::Reconnect;
    }
    // Heartbeats count from the last message sent (spec).
    let mut next_hb = Instant::now() + agent.heartbeat_interval();
    loop {
        let beats = agent.sends_heartbeats();
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Binary(b))) => {
                    match decode_frame::<ServerToAgent>(b) {
                        Ok(msg) => {
                            let answers = agent.handle(&msg);
                            if !answers.is_empty() {
                                if let Err(e) = send_all(ws, &answers).await {
                                    agent.note_transport_error(e);
                                    return After::Reconnect;
                                }
                                next_hb = Instant::now() + agent.heartbeat_interval();
                            }
                        }
                        Err(e) => agent.note_transport_error(format!("bad frame from server: {e}")),
                    }
                }
                Some(Ok(Message::Close(_))) | None => return After::Reconnect,
                // Pings are answered by tungstenite on the next write/flush; text is not OpAMP.
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    agent.note_transport_error(format!("read: {e}"));
                    return After::Reconnect;
                }
            },
            _ = tokio::time::sleep_until(next_hb), if beats => {
                let hb = agent.heartbeat();
                if let Err(e) = send(ws, &hb).await {
                    agent.note_transport_error(e);
                    return After::Reconnect;
                }
                next_hb = Instant::now() + agent.heartbeat_interval();
            }
            c = ctl.recv() => match c {
                Some(Control::InjectGap) => agent.inject_sequence_gap(),
                Some(Control::HeartbeatNow) => {
                    let hb = agent.heartbeat();
                    if let Err(e) = send(ws, &hb).await {
                        agent.note_transport_error(e);
                        return After::Reconnect;
                    }
                    next_hb = Instant::now() + agent.heartbeat_interval();
                }
                Some(Control::Reconnect) => {
                    // A network blip: no agent_disconnect, no close handshake.
                    return After::Reconnect;
                }
                Some(Control::Stop) | None => {
                    let bye = agent.disconnect_message();
                    let _ = send(ws, &bye).await;
                    // Complete the close handshake briefly; the server may already be gone.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        let _ = ws.close(None).await;
                        while let Some(Ok(_)) = ws.next().await {}
                    })
                    .await;
                    return After::Stop;
                }
            }
        }
    }
}

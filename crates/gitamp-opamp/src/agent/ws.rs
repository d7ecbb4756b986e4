//! WebSocket driver: one connection per agent, binary frames with the varint header 0.
//!
//! The client speaks RFC 6455 with the same lean codec as the server
//! ([`crate::transport::websocket`], client role): nothing is buffered between messages. A
//! general-purpose client (tungstenite) keeps a read and a write buffer per connection that
//! grow to the largest message and never shrink, so every rollout made each of 15,000 agents
//! grow two buffers to the new config's size: a quarter of the load generator's CPU in a
//! rollout was the kernel zeroing those fresh pages, CPU the server under test did not get.
//! The server's WebSocket side is still tested against clients we did not write: tungstenite
//! (the `server`, `hostile` and `tls` tests) and Python's `websockets` (the interop test);
//! this client is the load generator's.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt;
use http::Uri;
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::SimAgent;
use super::control::{Control, WsOptions};
use crate::frame::{decode_frame, encode_frame};
use crate::proto::{AgentToServer, ServerToAgent};
use crate::transport::websocket::{
    self, CLOSE_NORMAL, Incoming, MessageReader, client_frame_len, opcode, put_client_frame,
};

/// Largest message the agent accepts from the server.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Largest opening-handshake answer read.
const MAX_HANDSHAKE_ANSWER: usize = 16 * 1024;

type Reader = MessageReader<OwnedReadHalf>;

/// Connects, binds to the chosen source address (127.0.0.x: tungstenite's connect could not)
/// and performs the opening handshake.
async fn connect(url: &str, opts: &WsOptions) -> Result<(Reader, Writer), String> {
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
    let mut stream = sock
        .connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    // The key is 16 random bytes, base64 (§4.1).
    let key = base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes());
    let request = upgrade_request(path, &authority, &key, &opts.headers)?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    let already = read_upgrade_answer(&mut stream, &key).await?;
    let (read, write) = stream.into_split();
    let reader = MessageReader::client(read, MAX_MESSAGE, &already)
        .ok_or("upgrade: the server sent frames before the agent's first message")?;
    Ok((
        reader,
        Writer {
            io: write,
            // Any non-zero state; a fresh one per connection.
            masks: uuid::Uuid::new_v4().as_u64_pair().0 | 1,
        },
    ))
}

/// The opening handshake's request (RFC 6455 §4.1). Extra headers are checked to be valid
/// header names and values, so none can smuggle a line of its own.
fn upgrade_request(
    path: &str,
    authority: &str,
    key: &str,
    headers: &[(String, String)],
) -> Result<String, String> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (k, v) in headers {
        http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k}: {e}"))?;
        http::HeaderValue::from_str(v).map_err(|e| format!("header {k}: {e}"))?;
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    Ok(req)
}

/// Reads the answer to the upgrade request and checks it (§4.1: 101, `Upgrade: websocket`,
/// `Connection: upgrade`, the accept value of our key). Returns the bytes read past it.
async fn read_upgrade_answer<R: tokio::io::AsyncRead + Unpin>(
    io: &mut R,
    key: &str,
) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(512);
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() >= MAX_HANDSHAKE_ANSWER {
            return Err("upgrade: answer headers over 16 KiB".to_owned());
        }
        let mut chunk = [0u8; 1024];
        let n = io
            .read(&mut chunk)
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        if n == 0 {
            return Err("upgrade: connection closed during the handshake".to_owned());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "upgrade: answer is not text")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split(' ').nth(1).unwrap_or_default();
    if code != "101" {
        return Err(format!("upgrade: HTTP {code} ({status})"));
    }
    let mut upgrade = false;
    let mut connection = false;
    let mut accepted = false;
    let expected = websocket::accept_value(key.as_bytes());
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "upgrade" => upgrade |= value.eq_ignore_ascii_case("websocket"),
            "connection" => {
                connection |= value
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
            }
            "sec-websocket-accept" => accepted |= value.as_bytes() == expected.as_bytes(),
            _ => {}
        }
    }
    if !(upgrade && connection && accepted) {
        return Err(format!(
            "upgrade: not a WebSocket answer (upgrade {upgrade}, connection {connection}, accept {accepted})"
        ));
    }
    Ok(buf[end..].to_vec())
}

/// The writing half: masks and writes frames, each batch in one write, with no buffer kept
/// between writes.
struct Writer {
    io: OwnedWriteHalf,
    /// xorshift64 state for the masking keys (seeded from a v4 UUID per connection).
    masks: u64,
}

impl Writer {
    fn mask(&mut self) -> [u8; 4] {
        let mut x = self.masks;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.masks = x;
        (x as u32).to_ne_bytes()
    }

    /// Sends the messages of one step (APPLYING then APPLIED) in one write: the server still
    /// reads (and answers) two messages.
    async fn send(&mut self, msgs: &[AgentToServer]) -> Result<(), String> {
        let len = msgs
            .iter()
            .map(|m| client_frame_len(1 + m.encoded_len()))
            .sum();
        let mut out = Vec::with_capacity(len);
        for msg in msgs {
            let mask = self.mask();
            put_client_frame(&mut out, opcode::BINARY, &encode_frame(msg), mask);
        }
        self.write(&out).await
    }

    async fn control(&mut self, op: u8, payload: &[u8]) -> Result<(), String> {
        let mut out = Vec::with_capacity(client_frame_len(payload.len()));
        let mask = self.mask();
        put_client_frame(&mut out, op, payload, mask);
        self.write(&out).await
    }

    async fn write(&mut self, out: &[u8]) -> Result<(), String> {
        self.io
            .write_all(out)
            .await
            .map_err(|e| format!("send: {e}"))
    }

    async fn pong(&mut self, payload: &[u8]) -> Result<(), String> {
        self.control(opcode::PONG, payload).await
    }

    async fn close(&mut self, code: u16) -> Result<(), String> {
        self.control(opcode::CLOSE, &code.to_be_bytes()).await
    }
}

enum After {
    /// The connection died (or the server closed it): try the next server.
    Failover,
    /// A blip asked for by the handle: the same server again.
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
    // Which server of `url` and `opts.failover` (see `WsOptions::server`).
    let mut attempt = 0;
    loop {
        let server = opts.server(&url, attempt);
        // A Stop queued before we ever connected ends the agent without connecting.
        let connected = tokio::select! {
            r = tokio::time::timeout(opts.connect_timeout, connect(server, &opts)) => {
                r.unwrap_or_else(|_| Err("connect timed out".to_owned()))
            }
            c = ctl.recv() => match c {
                Some(Control::Stop) | None => break,
                Some(Control::InjectGap) => { agent.inject_sequence_gap(); continue }
                Some(_) => continue,
            }
        };
        let (reader, writer) = match connected {
            Ok(halves) => halves,
            Err(e) => {
                agent.note_transport_error(e);
                attempt += 1;
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
        let after = session(&mut agent, reader, writer, hello, &mut ctl).await;
        agent.note_connected(false);
        match after {
            After::Stop => break,
            After::Failover | After::Reconnect => {
                if matches!(after, After::Failover) {
                    attempt += 1;
                }
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
    reader: Reader,
    mut writer: Writer,
    hello: AgentToServer,
    ctl: &mut mpsc::UnboundedReceiver<Control>,
) -> After {
    if let Err(e) = writer.send(std::slice::from_ref(&hello)).await {
        agent.note_transport_error(e);
        return After::Failover;
    }
    // The stream keeps a read in progress between polls (`MessageReader::next` is not
    // cancel-safe), so `select!` may drop its `next()` without losing half a frame.
    let incoming = futures_util::stream::unfold(reader, |mut r| async {
        let next = r.next().await;
        Some((next, r))
    });
    let mut incoming = std::pin::pin!(incoming);
    // Heartbeats count from the last message sent (spec).
    let mut next_hb = Instant::now() + agent.heartbeat_interval();
    loop {
        let beats = agent.sends_heartbeats();
        tokio::select! {
            Some(item) = incoming.next() => match item {
                Ok(Incoming::Binary(b)) => match decode_frame::<ServerToAgent>(b) {
                    Ok(msg) => {
                        let answers = agent.handle(&msg);
                        if !answers.is_empty() {
                            if let Err(e) = writer.send(&answers).await {
                                agent.note_transport_error(e);
                                return After::Failover;
                            }
                            next_hb = Instant::now() + agent.heartbeat_interval();
                        }
                    }
                    Err(e) => agent.note_transport_error(format!("bad frame from server: {e}")),
                },
                Ok(Incoming::Ping(payload)) => {
                    if let Err(e) = writer.pong(&payload).await {
                        agent.note_transport_error(e);
                        return After::Failover;
                    }
                }
                // Text is not OpAMP; pongs need no answer.
                Ok(Incoming::Text | Incoming::Pong) => {}
                Ok(Incoming::Close(_)) => {
                    // Answer the close (§5.5.1); the server closes the connection.
                    let _ = writer.close(CLOSE_NORMAL).await;
                    return After::Failover;
                }
                Err(e) => {
                    // A connection that simply ended (a killed server's look) is not counted as
                    // a transport error; anything else is.
                    if !matches!(&e, websocket::ReadError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof) {
                        agent.note_transport_error(format!("read: {e}"));
                    }
                    return After::Failover;
                }
            },
            _ = tokio::time::sleep_until(next_hb), if beats => {
                let hb = agent.heartbeat();
                if let Err(e) = writer.send(std::slice::from_ref(&hb)).await {
                    agent.note_transport_error(e);
                    return After::Failover;
                }
                next_hb = Instant::now() + agent.heartbeat_interval();
            }
            c = ctl.recv() => match c {
                Some(Control::InjectGap) => agent.inject_sequence_gap(),
                Some(Control::HeartbeatNow) => {
                    let hb = agent.heartbeat();
                    if let Err(e) = writer.send(std::slice::from_ref(&hb)).await {
                        agent.note_transport_error(e);
                        return After::Failover;
                    }
                    next_hb = Instant::now() + agent.heartbeat_interval();
                }
                Some(Control::SetHealthy(h)) => {
                    let report = agent.health_report(h);
                    if let Err(e) = writer.send(std::slice::from_ref(&report)).await {
                        agent.note_transport_error(e);
                        return After::Failover;
                    }
                }
                Some(Control::Reconnect) => {
                    // A network blip: no agent_disconnect, no close handshake.
                    return After::Reconnect;
                }
                Some(Control::Stop) | None => {
                    let bye = agent.disconnect_message();
                    let _ = writer.send(std::slice::from_ref(&bye)).await;
                    // Complete the close handshake briefly; the server may already be gone.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        let _ = writer.close(CLOSE_NORMAL).await;
                        while let Some(Ok(item)) = incoming.next().await {
                            if matches!(item, Incoming::Close(_)) {
                                break;
                            }
                        }
                    })
                    .await;
                    return After::Stop;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    async fn answer(text: &str) -> Result<Vec<u8>, String> {
        read_upgrade_answer(&mut text.as_bytes(), KEY).await
    }

    async fn answer_then(text: &str, frames: &[u8]) -> Result<Vec<u8>, String> {
        let bytes = [text.as_bytes(), frames].concat();
        read_upgrade_answer(&mut &bytes[..], KEY).await
    }

    #[tokio::test]
    async fn the_upgrade_answer_must_be_101_with_our_accept_value() {
        // RFC 6455 §1.3's example key and accept value; header names in any case.
        let ok = "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(answer(ok).await.unwrap(), b"");
        // Bytes after the answer (a first frame) are handed to the reader, not lost.
        assert_eq!(answer_then(ok, b"\x82\x01x").await.unwrap(), b"\x82\x01x");

        let wrong = ok.replace("s3pP", "AAAA");
        let err = answer(&wrong).await.unwrap_err();
        assert!(err.contains("accept false"), "{err}");

        let refused = "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            answer(refused).await.unwrap_err(),
            "upgrade: HTTP 401 (HTTP/1.1 401 Unauthorized)"
        );

        let cut = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n";
        assert!(
            answer(cut)
                .await
                .unwrap_err()
                .contains("closed during the handshake")
        );

        let endless = format!("HTTP/1.1 101 OK\r\nX: {}", "a".repeat(20_000));
        assert!(answer(&endless).await.unwrap_err().contains("over 16 KiB"));
    }

    #[test]
    fn extra_headers_cannot_add_lines_to_the_request() {
        let req = upgrade_request(
            "/v1/opamp",
            "127.0.0.1:4320",
            KEY,
            &[("Authorization".into(), "Bearer t".into())],
        )
        .unwrap();
        assert!(req.starts_with("GET /v1/opamp HTTP/1.1\r\nHost: 127.0.0.1:4320\r\n"));
        assert!(req.ends_with("Authorization: Bearer t\r\n\r\n"));
        let smuggled = [("X".to_owned(), "a\r\nEvil: 1".to_owned())];
        assert!(upgrade_request("/", "h:1", KEY, &smuggled).is_err());
    }
}

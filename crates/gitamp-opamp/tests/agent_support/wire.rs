//! Raw OpAMP clients below the simulated agent, for tests that need every byte in view: a
//! WebSocket client (tokio-tungstenite), a hand-written HTTP/1.1 client on a raw `TcpStream`
//! (so every header is visible), raw TCP exchanges, and message builders.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gitamp_opamp::Fleet;
use gitamp_opamp::Uid;
use gitamp_opamp::frame::{decode_frame, encode_frame};
use gitamp_opamp::proto::{self, AgentCapabilities as Cap, AgentToServer, ServerToAgent};
use gitamp_opamp::server::{OpampSettings, ServeOptions, router, serve, serve_with};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Upper bound of one wire exchange (generous, never a speed assertion).
pub const WIRE_WAIT: Duration = Duration::from_secs(20);

/// The capabilities of a typical collector (no heartbeat).
pub const CAPS: u64 = Cap::ReportsStatus as u64
    | Cap::AcceptsRemoteConfig as u64
    | Cap::ReportsEffectiveConfig as u64
    | Cap::ReportsHealth as u64
    | Cap::ReportsRemoteConfig as u64;

pub const FULL_STATE: u64 = proto::ServerToAgentFlags::ReportFullState as u64;

/// The library's own listener (`server::serve`, or `serve_with` when `opts` is given) on an
/// ephemeral loopback port.
pub async fn serve_fleet(
    settings: OpampSettings,
    opts: Option<ServeOptions>,
) -> (Arc<Fleet>, SocketAddr) {
    let fleet = Arc::new(Fleet::new());
    let app = router(fleet.clone(), settings);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    match opts {
        Some(o) => tokio::spawn(serve_with(l, app, None, o)),
        None => tokio::spawn(serve(l, app, None)),
    };
    (fleet, addr)
}

/// The uid `[n; 16]`.
pub fn uid_n(n: u8) -> Uid {
    [n; 16]
}

/// A string attribute.
pub fn kv(k: &str, v: &str) -> proto::KeyValue {
    proto::KeyValue {
        key: k.into(),
        value: Some(proto::AnyValue {
            value: Some(proto::any_value::Value::StringValue(v.into())),
        }),
    }
}

/// A bare message: uid, sequence number, capabilities.
pub fn hb_with(u: Uid, seq: u64, capabilities: u64) -> AgentToServer {
    AgentToServer {
        instance_uid: Bytes::copy_from_slice(&u),
        sequence_num: seq,
        capabilities,
        ..Default::default()
    }
}

/// A heartbeat with [`CAPS`].
pub fn hb(u: Uid, seq: u64) -> AgentToServer {
    hb_with(u, seq, CAPS)
}

/// A first message with a description (`service.name`, `host.name`) and `capabilities`.
pub fn hello_with(u: Uid, seq: u64, name: &str, host: &str, capabilities: u64) -> AgentToServer {
    AgentToServer {
        agent_description: Some(proto::AgentDescription {
            identifying_attributes: vec![kv("service.name", name)],
            non_identifying_attributes: vec![kv("host.name", host)],
        }),
        ..hb_with(u, seq, capabilities)
    }
}

// ---------------------------------------------------------------- HTTP

/// A raw HTTP response.
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as a `ServerToAgent`, gunzipped when the server compressed it.
    pub fn decode(&self) -> ServerToAgent {
        let body = if self.headers.get("content-encoding").map(String::as_str) == Some("gzip") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&self.body[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        } else {
            self.body.clone()
        };
        ServerToAgent::decode(&body[..]).unwrap()
    }
}

/// `POST /v1/opamp` with these headers and body, one connection, `Connection: close`.
pub async fn post_raw(addr: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST /v1/opamp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    // The server may answer (413) before reading everything: ignore write errors.
    let _ = s.write_all(body).await;
    let mut raw = Vec::new();
    // Tolerate a reset after the response (server closed with unread request bytes).
    let _ = tokio::time::timeout(WIRE_WAIT, s.read_to_end(&mut raw))
        .await
        .unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// One protobuf message over HTTP.
pub async fn post(addr: SocketAddr, msg: &AgentToServer) -> Resp {
    post_raw(
        addr,
        &[("Content-Type", "application/x-protobuf")],
        &msg.encode_to_vec(),
    )
    .await
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Raw bytes on a fresh TCP connection; returns what the server sent back before closing (or
/// before a generous timeout).
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // No write shutdown: hyper closes a half-closed connection without answering.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WIRE_WAIT, s.read_to_end(&mut out)).await;
    out
}

/// The status code of a raw HTTP response.
pub fn status_of(resp: &[u8]) -> Option<u16> {
    let line = resp.split(|b| *b == b'\n').next()?;
    std::str::from_utf8(line)
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

// ---------------------------------------------------------------- WebSocket

/// Connect with an optional `Authorization` header; the handshake's error as is.
pub async fn ws_connect_auth(
    addr: SocketAddr,
    auth: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{addr}/v1/opamp")
        .into_client_request()
        .unwrap();
    if let Some(a) = auth {
        req.headers_mut()
            .insert("Authorization", a.parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

/// Connect (within [`WIRE_WAIT`]) or panic.
pub async fn ws_connect(addr: SocketAddr) -> Ws {
    tokio::time::timeout(WIRE_WAIT, ws_connect_auth(addr, None))
        .await
        .expect("connect in time")
        .expect("ws connect")
}

pub async fn ws_send(ws: &mut Ws, msg: &AgentToServer) {
    ws.send(Message::Binary(encode_frame(msg))).await.unwrap();
}

/// The next WebSocket message of any kind.
pub async fn ws_message(ws: &mut Ws) -> Message {
    tokio::time::timeout(WIRE_WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

/// The next server message (pings skipped); panics on anything else, a close included.
pub async fn ws_recv(ws: &mut Ws) -> ServerToAgent {
    loop {
        match ws_message(ws).await {
            Message::Binary(b) => {
                assert_eq!(b[0], 0, "every server frame starts with header 0");
                return decode_frame(b).unwrap();
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Next binary reply, `None` when the server closed the connection.
pub async fn ws_next(ws: &mut Ws) -> Option<ServerToAgent> {
    loop {
        match tokio::time::timeout(WIRE_WAIT, ws.next())
            .await
            .expect("server answers or closes")
        {
            Some(Ok(Message::Binary(b))) => return Some(decode_frame(b).expect("server frame")),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(other)) => panic!("unexpected {other:?}"),
        }
    }
}

/// Send one message and read its reply.
pub async fn ws_rpc(ws: &mut Ws, msg: &AgentToServer) -> ServerToAgent {
    ws_send(ws, msg).await;
    ws_recv(ws).await
}

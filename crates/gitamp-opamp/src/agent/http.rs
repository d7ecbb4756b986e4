//! A minimal HTTP/1.1 keep-alive client for OpAMP's plain-HTTP transport.
//!
//! Why not a general HTTP client crate: OpAMP over HTTP is one `POST` per message with a
//! protobuf body, and the load generator wants thousands of agents to share a handful of
//! keep-alive connections (as agents behind one proxy would). hyper's connection-level API does
//! exactly that with no pool policy to fight: each slot of [`HttpPool`] holds one HTTP/1.1
//! connection, used by one request at a time (no pipelining), re-opened when it breaks.
//!
//! The client is deliberately strict where some real clients are: a reply whose
//! `Content-Type` is not exactly `application/x-protobuf` is an error, so the tests notice a
//! server that those clients would ignore.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use http::header::{
    ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT,
};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::net::TcpSocket;
use tokio::sync::Mutex;

use crate::proto::{AgentToServer, ServerToAgent};

/// The only content type OpAMP uses on HTTP, both ways.
pub const PROTOBUF: &str = "application/x-protobuf";

/// Why one HTTP exchange failed. The message is not retried by the pool; the agent driver
/// decides (it backs off and resends).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The server URL is not `http://host[:port]/path`.
    #[error("bad OpAMP HTTP url {0:?}")]
    BadUrl(String),
    /// TCP connect (or local bind) failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// host:port tried.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed (connection closed, protocol error).
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built (should not happen with a valid url).
    #[error("request: {0}")]
    Request(#[from] http::Error),
    /// The server answered with a status other than 200.
    #[error("HTTP status {status}")]
    Status {
        /// The status code.
        status: u16,
        /// `Retry-After` in delta-seconds, when given (429/503).
        retry_after: Option<Duration>,
    },
    /// The reply's Content-Type was not exactly `application/x-protobuf`.
    #[error("reply Content-Type {0:?}, expected exactly application/x-protobuf")]
    ContentType(String),
    /// gzip encode/decode failed.
    #[error("gzip: {0}")]
    Gzip(std::io::Error),
    /// The body was not a ServerToAgent.
    #[error("decode ServerToAgent: {0}")]
    Decode(#[from] prost::DecodeError),
    /// No answer within the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// How the pool talks to the server.
#[derive(Clone, Debug)]
pub struct HttpPoolOptions {
    /// Keep-alive connections shared by all agents using the pool (at least 1).
    pub connections: usize,
    /// gzip request bodies (`Content-Encoding: gzip`) and accept gzip replies.
    pub gzip: bool,
    /// Local source address to bind (e.g. 127.0.0.5), `None` for the OS default.
    pub local_ip: Option<IpAddr>,
    /// Per-exchange timeout, connect included. Python's client uses 1 s.
    pub timeout: Duration,
    /// Extra request headers (e.g. `Authorization`).
    pub headers: Vec<(String, String)>,
}

impl Default for HttpPoolOptions {
    fn default() -> Self {
        HttpPoolOptions {
            connections: 1,
            gzip: false,
            local_ip: None,
            timeout: Duration::from_secs(5),
            headers: Vec::new(),
        }
    }
}

type Slot = Mutex<Option<SendRequest<Full<Bytes>>>>;

/// A fixed set of HTTP/1.1 keep-alive connections to one OpAMP endpoint, shared by agents.
pub struct HttpPool {
    authority: String,
    path: String,
    opts: HttpPoolOptions,
    slots: Vec<Slot>,
    next: AtomicUsize,
    opened: AtomicU64,
    requests: AtomicU64,
    gzip_replies: AtomicU64,
    latency: LatencyHistogram,
}

impl std::fmt::Debug for HttpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPool")
            .field("authority", &self.authority)
            .field("path", &self.path)
            .field("connections", &self.slots.len())
            .field("opened", &self.connections_opened())
            .finish()
    }
}

impl HttpPool {
    /// A pool for `url` (`http://host:port/v1/opamp`). No connection is opened until needed.
    pub fn new(url: &str, opts: HttpPoolOptions) -> Result<Self, HttpError> {
        let uri: Uri = url.parse().map_err(|_| HttpError::BadUrl(url.to_owned()))?;
        if uri.scheme_str() != Some("http") {
            return Err(HttpError::BadUrl(url.to_owned()));
        }
        let host = uri
            .host()
            .ok_or_else(|| HttpError::BadUrl(url.to_owned()))?;
        let authority = format!("{host}:{}", uri.port_u16().unwrap_or(80));
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        let n = opts.connections.max(1);
        Ok(HttpPool {
            authority,
            path,
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            opened: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            gzip_replies: AtomicU64::new(0),
            latency: LatencyHistogram::default(),
            opts,
        })
    }

    /// TCP connections opened so far (1 per slot unless connections broke).
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Requests sent so far.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Replies that came gzip-compressed (the server compresses when we accept it).
    pub fn gzip_replies(&self) -> u64 {
        self.gzip_replies.load(Ordering::Relaxed)
    }

    /// Time per successful exchange on its connection (the wait for a free slot excluded): the
    /// request latency a load test reports.
    pub fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, HttpError> {
        let err = |source| HttpError::Connect {
            addr: self.authority.clone(),
            source,
        };
        let addr: SocketAddr = tokio::net::lookup_host(&self.authority)
            .await
            .map_err(err)?
            .next()
            .ok_or_else(|| err(std::io::Error::other("no address")))?;
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(err)?;
        if let Some(ip) = self.opts.local_ip {
            sock.bind(SocketAddr::new(ip, 0)).map_err(err)?;
        }
        let stream = sock.connect(addr).await.map_err(err)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        // The connection future drives the socket; it ends when the sender is dropped or the
        // server closes.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(sender)
    }

    /// Sends one AgentToServer and returns the ServerToAgent the server answered with.
    pub async fn exchange(&self, msg: &AgentToServer) -> Result<ServerToAgent, HttpError> {
        let mut body = msg.encode_to_vec();
        if self.opts.gzip {
            let mut enc =
                GzEncoder::new(Vec::with_capacity(body.len() / 2 + 32), Compression::fast());
            enc.write_all(&body).map_err(HttpError::Gzip)?;
            body = enc.finish().map_err(HttpError::Gzip)?;
        }
        let body = Bytes::from(body);
        let idx = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[idx].lock().await;
        let limit = self.opts.timeout;
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(limit, self.exchange_on(&mut slot, msg, body)).await;
        let result = result.unwrap_or(Err(HttpError::Timeout(limit)));
        if result.is_ok() {
            self.latency.record(started.elapsed());
        }
        if result.is_err() {
            // The connection may be mid-response: never reuse it.
            *slot = None;
        }
        result
    }

    async fn exchange_on(
        &self,
        slot: &mut Option<SendRequest<Full<Bytes>>>,
        msg: &AgentToServer,
        body: Bytes,
    ) -> Result<ServerToAgent, HttpError> {
        if slot.as_ref().is_none_or(|s| s.is_closed()) {
            *slot = Some(self.connect().await?);
        }
        let Some(sender) = slot.as_mut() else {
            return Err(HttpError::BadUrl("no connection".into()));
        };
        sender.ready().await?;
        let mut req = Request::post(&self.path)
            .header(HOST, &self.authority)
            .header(CONTENT_TYPE, PROTOBUF)
            .header(
                USER_AGENT,
                concat!("gitamp-simagent/", env!("CARGO_PKG_VERSION")),
            );
        if let Ok(uid) = uuid::Uuid::from_slice(&msg.instance_uid) {
            req = req.header("OpAMP-Instance-UID", uid.to_string());
        }
        if self.opts.gzip {
            req = req
                .header(CONTENT_ENCODING, "gzip")
                .header(ACCEPT_ENCODING, "gzip");
        }
        for (k, v) in &self.opts.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req.body(Full::new(body))?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        // Read the whole body even on error statuses so the connection stays reusable.
        let bytes = resp.into_body().collect().await?.to_bytes();
        if status != StatusCode::OK {
            let retry_after = headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(HttpError::Status {
                status: status.as_u16(),
                retry_after,
            });
        }
        let ct = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if ct != PROTOBUF {
            return Err(HttpError::ContentType(ct.to_owned()));
        }
        let gz = headers
            .get(CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
        let bytes = if gz {
            self.gzip_replies.fetch_add(1, Ordering::Relaxed);
            let mut out = Vec::with_capacity(bytes.len() * 2);
            GzDecoder::new(&bytes[..])
                .read_to_end(&mut out)
                .map_err(HttpError::Gzip)?;
            Bytes::from(out)
        } else {
            bytes
        };
        Ok(ServerToAgent::decode(bytes)?)
    }
}

/// A lock-free latency histogram: microseconds in log buckets with 8 steps per power of two
/// (values within 12.5 %), enough for p50/p99 of a load test.
pub struct LatencyHistogram {
    buckets: Vec<AtomicU64>,
}

const LINEAR: u64 = 16;
const BUCKETS: usize = LINEAR as usize + 8 * 60;

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count())
            .finish()
    }
}

fn bucket_of(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let e = 63 - us.leading_zeros() as u64; // >= 4
    let sub = (us >> (e - 3)) & 7;
    (LINEAR + (e - 4) * 8 + sub) as usize
}

fn bucket_floor_us(idx: usize) -> u64 {
    let idx = idx as u64;
    if idx < LINEAR {
        return idx;
    }
    let e = (idx - LINEAR) / 8 + 4;
    let sub = (idx - LINEAR) % 8;
    (8 + sub) << (e - 3)
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let idx = bucket_of(d.as_micros().min(u64::MAX as u128) as u64).min(BUCKETS - 1);
        self.buckets[idx].fetch_add(1, Ordering::Relaxed);
    }

    /// Durations recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Forgets everything recorded (start of a measurement window).
    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
    }

    /// The p-quantile (0..=1), as the lower bound of its bucket; zero when empty.
    pub fn quantile(&self, p: f64) -> Duration {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((total as f64 * p).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_micros(bucket_floor_us(i));
            }
        }
        Duration::ZERO
    }
}

#[cfg(test)]
mod latency_tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_an_eighth() {
        for us in [0u64, 1, 15, 16, 17, 100, 999, 12_345, 1_000_000, 60_000_000] {
            let floor = bucket_floor_us(bucket_of(us));
            assert!(floor <= us && us - floor <= us / 8, "{us} -> {floor}");
        }
        let h = LatencyHistogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 100);
        let p50 = h.quantile(0.5).as_millis();
        assert!((44..=50).contains(&p50), "{p50}");
        h.reset();
        assert_eq!(h.quantile(0.99), Duration::ZERO);
    }
}

//! OpAMP transports: WebSocket and plain HTTP on one axum route.
//!
//! `GET` + `Upgrade: websocket` is served as WebSocket, `POST` as plain HTTP, both on
//! [`OpampSettings::path`]. Authentication (optional shared secret) runs before any
//! state is touched, on the upgrade request and on every POST.

pub(crate) mod http;
mod tls;
pub mod websocket;
mod ws;

pub use tls::{TlsConfig, TlsError};

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::routing::get;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::fleet::Fleet;

/// Transport settings.
#[derive(Clone)]
pub struct OpampSettings {
    /// URL path for both transports (default `/v1/opamp`).
    pub path: String,
    /// Largest accepted or sent message in bytes, measured after decompression
    /// (default 4 MiB). Larger WS messages close the connection with 1009; larger
    /// HTTP bodies get 413.
    pub max_message_bytes: usize,
    /// Capacity of each WebSocket connection's outbound (push) queue (default 16).
    pub outbound_queue: usize,
    /// Expected agent heartbeat / poll interval (default 30 s).
    pub heartbeat_interval: Duration,
    /// An agent silent for `liveness_factor × heartbeat_interval` is disconnected
    /// (default 3).
    pub liveness_factor: u32,
    /// Optional shared agent secret, accepted as `Authorization: Bearer X` or
    /// `Authorization: Secret-Key X`.
    pub secret: Option<String>,
    /// Overload guard: at most this many open WebSocket connections plus in-flight
    /// HTTP requests; beyond it the upgrade or POST gets `503` + `Retry-After`
    /// (what opamp-go clients honour; they ignore ServerErrorResponse UNAVAILABLE).
    /// `None` (default) means unlimited.
    pub max_connections: Option<usize>,
    /// An HTTP request body must arrive whole within this time, else `408`. Without it a
    /// client that declares a `Content-Length` and then trickles (or stops sending) holds
    /// an in-flight slot, which counts against `max_connections`, forever (default 30 s).
    /// A WebSocket message (all its fragments) must likewise arrive whole within this time of
    /// its first byte, else the connection is closed with 1008; waiting between messages is
    /// not timed.
    pub body_read_timeout: Duration,
    /// Serve gitamp's own-telemetry receiver (OTLP/HTTP metrics) on
    /// [`OTLP_METRICS_PATH`](crate::offers::OTLP_METRICS_PATH) and offer it to agents that report
    /// their own metrics and whose configuration declares no destination (default true).
    pub otlp_receiver: bool,
    /// Over TLS: the certificate chain (PEM) offered to agents as the CA to trust when an
    /// OpAMP connection-settings offer replaces their settings (the supervisor skips
    /// verification when an offer carries none).
    pub tls_ca_pem: Option<bytes::Bytes>,
    /// An HTTP poll's reply that could carry a config waits at most this long for a plan
    /// under way that may decide one (the agent's own report, a new revision), so the agent
    /// gets it now rather than a poll interval later (`plan_wait`; zero: never waits). A new
    /// revision's plan is waited for past it, up to `plan_wait::REVISION_PLAN_WAIT`.
    pub poll_reply_wait: Duration,
}

impl Default for OpampSettings {
    fn default() -> Self {
        Self {
            path: "/v1/opamp".to_owned(),
            max_message_bytes: 4 * 1024 * 1024,
            outbound_queue: 16,
            heartbeat_interval: Duration::from_secs(30),
            liveness_factor: 3,
            secret: None,
            max_connections: None,
            body_read_timeout: Duration::from_secs(30),
            otlp_receiver: true,
            tls_ca_pem: None,
            poll_reply_wait: Duration::from_secs(2),
        }
    }
}

impl std::fmt::Debug for OpampSettings {
    // Hand-written so the secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpampSettings")
            .field("path", &self.path)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("outbound_queue", &self.outbound_queue)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("liveness_factor", &self.liveness_factor)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("max_connections", &self.max_connections)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("otlp_receiver", &self.otlp_receiver)
            .field("tls", &self.tls_ca_pem.is_some())
            .field("poll_reply_wait", &self.poll_reply_wait)
            .finish()
    }
}

impl OpampSettings {
    /// How long an agent may stay silent before it is marked disconnected.
    pub fn liveness_timeout(&self) -> Duration {
        self.heartbeat_interval
            .saturating_mul(self.liveness_factor.max(1))
    }
}

/// `503 Service Unavailable` with `Retry-After`, for overload.
pub(crate) fn unavailable() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, RETRY_AFTER_SECS)],
        "server overloaded, retry later",
    )
        .into_response()
}

/// What every OpAMP handler shares: the registry, the settings, the connection counters.
pub(crate) struct Listener {
    pub(crate) fleet: Arc<Fleet>,
    pub(crate) settings: OpampSettings,
    /// SHA-256 of the secret: comparing digests is constant time whatever the lengths.
    secret_digest: Option<[u8; 32]>,
    next_conn: AtomicU64,
    /// Open WebSocket connections plus in-flight HTTP requests.
    active: Arc<AtomicUsize>,
}

/// Retry-After sent with 503: the spec's minimum recommended retry interval.
pub(crate) const RETRY_AFTER_SECS: &str = "30";

/// Counts one active connection or request until dropped.
pub(crate) struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Listener {
    /// Takes a slot, or None when the server is at `max_connections`.
    pub(crate) fn admit(&self) -> Option<ActiveGuard> {
        let prev = self.active.fetch_add(1, Ordering::AcqRel);
        let guard = ActiveGuard(Arc::clone(&self.active));
        match self.settings.max_connections {
            Some(max) if prev >= max => None,
            _ => Some(guard),
        }
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// True if no secret is configured or the request carries it.
    pub(crate) fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(want) = &self.secret_digest else {
            return true;
        };
        let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some((scheme, token)) = value.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("bearer") && !scheme.eq_ignore_ascii_case("secret-key") {
            return false;
        }
        let got = digest(token.trim());
        bool::from(got.ct_eq(want))
    }
}

/// How an agent reached us, from the request that carried its message.
pub(crate) fn reach_of(headers: &HeaderMap) -> crate::offers::Reach {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    crate::offers::Reach {
        host: text(axum::http::header::HOST).unwrap_or_default(),
        authorization: text(AUTHORIZATION),
    }
}

fn digest(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(Sha256::digest(s.as_bytes()).as_slice());
    out
}

/// Builds the OpAMP router (one route, both transports). When called inside a tokio
/// runtime it also starts the liveness sweeper (see [`spawn_sweeper`]).
pub fn router(fleet: Arc<Fleet>, settings: OpampSettings) -> Router {
    if tokio::runtime::Handle::try_current().is_ok() {
        spawn_sweeper(&fleet, &settings);
    }
    fleet.set_offer_settings(crate::offers::OfferSettings {
        heartbeat: Some(settings.heartbeat_interval),
        opamp_path: settings.path.clone(),
        tls_ca_pem: settings.tls_ca_pem.clone(),
        receiver: settings.otlp_receiver,
    });
    let state = Arc::new(Listener {
        secret_digest: settings.secret.as_deref().map(digest),
        fleet,
        next_conn: AtomicU64::new(1),
        active: Arc::new(AtomicUsize::new(0)),
        settings,
    });
    let path = state.settings.path.clone();
    let mut router = Router::new().route(&path, get(ws::upgrade).post(http::post));
    if state.settings.otlp_receiver {
        router = router.route(
            crate::offers::OTLP_METRICS_PATH,
            axum::routing::post(crate::otlp::post_metrics),
        );
    }
    router.with_state(state)
}

/// Starts the task that marks silent agents disconnected (every half heartbeat
/// interval, timeout `liveness_factor × heartbeat_interval`). It holds only a weak
/// reference and ends when the fleet is dropped.
pub fn spawn_sweeper(fleet: &Arc<Fleet>, settings: &OpampSettings) -> tokio::task::JoinHandle<()> {
    let weak: Weak<Fleet> = Arc::downgrade(fleet);
    let timeout = settings.liveness_timeout();
    let period = (settings.heartbeat_interval / 2).max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(fleet) = weak.upgrade() else { break };
            fleet.sweep(timeout);
        }
    })
}

/// Connection-level limits for [`serve_with`], enforced before any handler runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// A client must send complete request headers within this time, or the connection is
    /// closed. This is the slowloris guard: without it a peer trickling one header byte at a
    /// time holds a socket and a task forever (`axum::serve` configures no hyper timer, so
    /// hyper's own 30 s default never fires). hyper also runs this timer while an idle
    /// keep-alive connection waits for its next request, so the default (65 s) is longer
    /// than OpAMP's default 30 s poll interval: polling HTTP agents keep their connection
    /// between polls. Upgraded WebSocket connections are not affected (their liveness is the
    /// heartbeat sweeper's job).
    pub header_read_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// See [`ServeOptions::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(65);

/// Serves `router` on `listener`, over TLS when `tls` is given, with the default
/// [`ServeOptions`]. Runs until the task is dropped: accept errors (e.g. `EMFILE`) are
/// logged and retried after a short pause.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsConfig>,
) -> std::io::Result<()> {
    serve_with(listener, router, tls, ServeOptions::default()).await
}

/// [`serve`] with explicit connection limits.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsConfig>,
    opts: ServeOptions,
) -> std::io::Result<()> {
    match tls {
        None => serve_plain(listener, router, opts).await,
        Some(tls) => tls::serve_tls(listener, router, tls, opts).await,
    }
}

/// The next connection. An accept error (typically EMFILE) backs off briefly and retries
/// instead of spinning or ending the server.
pub(super) async fn accept(
    listener: &TcpListener,
) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(c) => return c,
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Plain-TCP accept loop: HTTP/1.1 with upgrades (WebSocket) per connection, like
/// `axum::serve`, plus the header-read timeout it lacks.
async fn serve_plain(
    listener: TcpListener,
    router: Router,
    opts: ServeOptions,
) -> std::io::Result<()> {
    loop {
        let (tcp, peer) = accept(&listener).await;
        let router = router.clone();
        let opts = opts.clone();
        tokio::spawn(async move {
            serve_connection(hyper_util::rt::TokioIo::new(tcp), peer, router, &opts).await;
        });
    }
}

/// Serves one (plain or TLS) connection with hyper's HTTP/1.1 server.
pub(crate) async fn serve_connection<I>(
    io: I,
    peer: std::net::SocketAddr,
    router: Router,
    opts: &ServeOptions,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(router);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .serve_connection(io, service)
        .with_upgrades();
    if let Err(err) = conn.await {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}

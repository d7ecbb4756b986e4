//! The test kit of this crate, used by every test binary here that needs helpers
//! (`mod agent_support;`): a real gitamp-opamp server on 127.0.0.1:0 ([`Server`],
//! [`wire::serve_fleet`]), desired configs, raw WebSocket/HTTP clients and message builders
//! ([`wire`]), one seeded PRNG ([`rand`]), and [`eventually`], the one way to wait: for an
//! observed state, never for wall-clock time.
//!
//! Kept in a directory (not `tests/agent_support.rs`) so cargo does not build it as a test
//! binary of its own. Not every binary uses every helper, hence the `allow` below.

#![allow(dead_code, unused_imports)]

pub mod rand;
pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gitamp_opamp::OpampSettings;
use gitamp_opamp::fleet::{AgentSnapshot, DesiredConfig, Fleet, Uid};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

/// The server under test, serving WebSocket and HTTP on `/v1/opamp`.
pub struct Server {
    pub fleet: Arc<Fleet>,
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Starts the router on an ephemeral loopback port with default settings (30 s
    /// heartbeat, so the server's own sweeper stays out of the way).
    pub async fn start() -> Server {
        Server::start_with(OpampSettings::default()).await
    }

    /// Starts the router with `settings`.
    pub async fn start_with(settings: OpampSettings) -> Server {
        let fleet = Arc::new(Fleet::new());
        let app = gitamp_opamp::server::router(fleet.clone(), settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server { fleet, addr, task }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/opamp", self.addr)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}/v1/opamp", self.addr)
    }

    /// Polls the registry until the agent exists and `pred` holds; panics with the last
    /// snapshot otherwise.
    pub async fn wait_agent(
        &self,
        uid: &Uid,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&AgentSnapshot) -> bool,
    ) -> AgentSnapshot {
        let t0 = Instant::now();
        loop {
            let snap = self.fleet.agent(uid);
            if let Some(s) = &snap
                && pred(s)
            {
                return s.clone();
            }
            if t0.elapsed() > timeout {
                panic!("timed out after {timeout:?} waiting for {what}; registry has {snap:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until `pred` holds for the whole registry.
    pub async fn wait_fleet(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[AgentSnapshot]) -> bool,
    ) -> Vec<AgentSnapshot> {
        let t0 = Instant::now();
        loop {
            let all = self.fleet.agents();
            if pred(&all) {
                return all;
            }
            if t0.elapsed() > timeout {
                panic!("timed out after {timeout:?} waiting for {what}; registry has {all:#?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A one-entry config map (key "" and text/yaml, what the Collector supervisor expects) with
/// a deterministic hash: SHA-256 over each key, content type and body, length-prefixed.
pub fn desired(body: &str) -> Arc<DesiredConfig> {
    let mut map = BTreeMap::new();
    map.insert(
        String::new(),
        (
            Bytes::copy_from_slice(body.as_bytes()),
            "text/yaml".to_owned(),
        ),
    );
    let mut h = Sha256::new();
    for (k, (b, ct)) in &map {
        for part in [k.as_bytes(), ct.as_bytes(), &b[..]] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&h.finalize());
    Arc::new(DesiredConfig::new(map, hash))
}

/// The 16-byte uid of a `Bytes` (tests only).
pub fn uid(b: &Bytes) -> Uid {
    <Uid>::try_from(&b[..]).expect("16-byte uid")
}

/// A plausible collector config.
pub fn collector_yaml(tag: &str) -> String {
    format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc: {{}}\nexporters:\n  debug: {{}}\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n\
         # {tag}\n"
    )
}

/// Waits until nothing is in flight between a WebSocket agent and the server: the registry
/// has the agent's last sequence number and the agent got a reply for every message (this
/// server answers every WebSocket message). Call before `set_desired` when a test counts
/// pushes exactly: a message crossing the push on the wire is answered with the config
/// again, since the agent has not acknowledged it yet.
pub async fn quiesce(server: &Server, agent: &gitamp_opamp::agent::AgentHandle) {
    let t0 = Instant::now();
    loop {
        let st = agent.state();
        let reg = server.fleet.agent(&uid(&st.instance_uid));
        if let (Some(r), Some(seq)) = (&reg, st.last_sequence_num)
            && r.sequence_num == seq
            && st.messages_received >= st.messages_sent
        {
            // Settled twice in a row, 50 ms apart: nothing was on the wire.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let again = agent.state();
            if again.messages_sent == st.messages_sent
                && again.messages_received == st.messages_received
            {
                return;
            }
        }
        if t0.elapsed() > Duration::from_secs(10) {
            panic!("agent never quiesced: {st:#?}\nregistry: {reg:#?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What one check observed: the awaited value, or a description of what was seen instead.
pub trait Observed<T> {
    fn observed(self) -> Result<T, String>;
}

impl<T> Observed<T> for Option<T> {
    fn observed(self) -> Result<T, String> {
        self.ok_or_else(|| "not yet (the check returned None)".to_string())
    }
}

impl<T, E: std::fmt::Debug> Observed<T> for Result<T, E> {
    fn observed(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// Run `check` every 20 ms until it observes the awaited state; panic after `timeout` naming
/// `what` and the last observation.
pub async fn eventually<T, C: Observed<T>>(
    timeout: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> C,
) -> T {
    let t0 = Instant::now();
    loop {
        let last = match check().await.observed() {
            Ok(v) => return v,
            Err(last) => last,
        };
        if t0.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last observed: {last}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

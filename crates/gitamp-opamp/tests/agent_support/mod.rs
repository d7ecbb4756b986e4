//! The test kit of this crate, used by every test binary here that needs helpers
//! (`mod agent_support;`): a real gitamp-opamp server on 127.0.0.1:0 ([`Server`],
//! [`wire::serve_fleet`]), desired configs, raw WebSocket/HTTP clients and message builders
//! ([`wire`]), one seeded PRNG ([`rand`]), and [`eventually`], the one way to wait: for an
//! observed state, never for wall-clock time.
//!
//! Kept in a directory (not `tests/agent_support.rs`) so cargo does not build it as a test
//! binary of its own. Not every binary uses every helper, hence the `allow` below.

#![allow(dead_code, unused_imports)]

// The root kit's PRNG and polling helper, the same files (one copy for every test binary).
#[path = "../../../../tests/support/poll.rs"]
pub mod poll;
#[path = "../../../../tests/support/rand.rs"]
pub mod rand;
pub mod wire;

pub use poll::{Observed, eventually};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gitamp_opamp::OpampSettings;
use gitamp_opamp::{AgentSnapshot, Fleet, RemoteConfig, Uid};
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
        eventually(timeout, what, async || match self.fleet.agent(uid) {
            Some(s) if pred(&s) => Ok(s),
            snap => Err(format!("registry has {snap:#?}")),
        })
        .await
    }

    /// Plays the planner's part for one config: hands `config` over again whenever it is
    /// neither waiting to go out nor sent, until it has gone out. The registry drops a config
    /// handed over while the agent owes the full report it was asked for, and withdraws one
    /// when that report arrives (the planner decides again then); clients whose sequence
    /// numbers repeat or skip (the Python client) are asked for full state often.
    pub async fn hand_over_until_sent(
        &self,
        uid: &Uid,
        config: &Arc<RemoteConfig>,
        timeout: Duration,
    ) {
        eventually(timeout, "the config sent", async || {
            let snap = self.fleet.agent(uid).ok_or("agent unknown")?;
            if snap
                .last_sent
                .as_ref()
                .is_some_and(|s| s.hash == *config.hash())
            {
                return Ok(());
            }
            if snap.pending_hash.as_ref() != Some(config.hash()) {
                let d = self.fleet.deliver(uid, Some(config.clone()));
                return Err(format!("handed over again: {d:?}"));
            }
            Err("waiting to go out".to_owned())
        })
        .await
    }

    /// Polls until `pred` holds for the whole registry.
    pub async fn wait_fleet(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[AgentSnapshot]) -> bool,
    ) -> Vec<AgentSnapshot> {
        eventually(timeout, what, async || {
            let all = self.fleet.agents();
            if pred(&all) {
                Ok(all)
            } else {
                Err(format!("registry has {all:#?}"))
            }
        })
        .await
    }
}

/// A one-entry config map (key "" and text/yaml, what the Collector supervisor expects) with
/// a deterministic hash: SHA-256 over each key, content type and body, length-prefixed.
pub fn desired(body: &str) -> Arc<RemoteConfig> {
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
    Arc::new(RemoteConfig::new(map, hash))
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

/// Waits until nothing is in flight between a WebSocket agent and the server: a heartbeat's
/// answer came back ([`round_trip`]; the server answers in order, so every earlier message was
/// answered too) and the registry has the agent's last sequence number. Call before
/// `deliver` when a test counts pushes exactly: a message crossing the push on the wire is
/// answered with the config again, since the agent has not acknowledged it yet.
pub async fn quiesce(server: &Server, agent: &gitamp_opamp::agent::AgentHandle) {
    round_trip(agent, Duration::from_secs(10)).await;
    eventually(
        Duration::from_secs(10),
        "the registry has the agent's last sequence number",
        async || {
            let st = agent.state();
            let reg = server.fleet.agent(&uid(&st.instance_uid));
            match (&reg, st.last_sequence_num) {
                (Some(r), Some(seq)) if r.sequence_num == seq => Ok(()),
                _ => Err(format!("agent {st:#?}\nregistry {reg:#?}")),
            }
        },
    )
    .await;
}

/// Send a heartbeat now and wait for its answer. The server answers every message (in order,
/// on a WebSocket), so once as many answers came back as messages went out since the call,
/// whatever the server had to send before that heartbeat has arrived: the barrier a check
/// that "nothing more was sent" needs.
pub async fn round_trip(
    agent: &gitamp_opamp::agent::AgentHandle,
    timeout: Duration,
) -> gitamp_opamp::agent::AgentState {
    let before = agent.state();
    agent.heartbeat_now();
    agent
        .wait_for(timeout, |s| {
            s.messages_sent > before.messages_sent
                && s.messages_received - before.messages_received
                    >= s.messages_sent - before.messages_sent
        })
        .await
        .unwrap_or_else(|s| panic!("heartbeat unanswered: {s:#?}"))
}

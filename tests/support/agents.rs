//! Swarms of simulated agents (`gitamp_opamp::agent`) over real WebSockets, and what tests
//! observe of them.

use std::time::Duration;

use gitamp_core::ConfigHash;
use gitamp_opamp::agent::{
    AgentHandle, AgentOptions, ClientTransport, SimAgent, WsOptions, spawn_agent,
};

use super::poll::eventually;

/// A production Linux collector named `host`: the example repository's `linux-production`
/// configuration selects it (batched rollout). Heartbeats every 5 s.
pub fn linux_production(host: &str) -> AgentOptions {
    let mut opts =
        AgentOptions::collector("checkout", host, "production").label("os.type", "linux");
    opts.heartbeat_interval = Duration::from_secs(5);
    opts
}

/// WebSocket with a short reconnect delay (a restarted server is found again quickly) and
/// extra `headers`.
pub fn ws(headers: Vec<(String, String)>) -> ClientTransport {
    ClientTransport::WebSocket(WsOptions {
        reconnect_delay: Duration::from_millis(200),
        headers,
        ..WsOptions::default()
    })
}

/// `n` agents made by `options(i)`, connected over [`ws`] to `url`.
pub fn start_agents_with(
    n: usize,
    url: &str,
    options: impl Fn(usize) -> AgentOptions,
) -> Vec<AgentHandle> {
    (0..n)
        .map(|i| spawn_agent(SimAgent::new(options(i)), ws(Vec::new()), url))
        .collect()
}

/// `n` [`linux_production`] agents named `<prefix>-00`, `<prefix>-01`, ...
pub fn start_agents(n: usize, prefix: &str, url: &str) -> Vec<AgentHandle> {
    start_agents_with(n, url, |i| linux_production(&format!("{prefix}-{i:02}")))
}

/// The UID agent `i` of a test fleet gets: a rollout orders agents by UID, so agents 0 and 1
/// make up the first batch of 25% of 8.
pub fn fixed_uid(i: usize) -> [u8; 16] {
    let mut uid = [0x01, 0x93, 0, 0, 0, 0, 0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 0];
    uid[15] = u8::try_from(i).expect("small fleet");
    uid
}

/// The agent's instance UID as the status API shows it (`/api/v1/agents/{id}`).
pub fn uid_of(agent: &AgentHandle) -> String {
    let uid = <[u8; 16]>::try_from(&agent.state().instance_uid[..]).expect("16-byte uid");
    gitamp_opamp::wire::uid_text(&uid)
}

/// Does the agent report `hash` as applied?
pub fn has_applied(agent: &AgentHandle, hash: ConfigHash) -> bool {
    agent.state().applied_hash().map(|h| &h[..]) == Some(hash.as_bytes())
}

/// Was `hash` the last config the agent received?
pub fn last_received(agent: &AgentHandle, hash: ConfigHash) -> bool {
    agent
        .state()
        .last_config
        .as_ref()
        .is_some_and(|c| c.hash.as_ref() == hash.as_bytes())
}

pub fn applied_count(agents: &[AgentHandle], hash: ConfigHash) -> usize {
    agents.iter().filter(|a| has_applied(a, hash)).count()
}

pub fn received_count(agents: &[AgentHandle], hash: ConfigHash) -> usize {
    agents.iter().filter(|a| last_received(a, hash)).count()
}

pub fn all_applied(agents: &[AgentHandle], hash: ConfigHash) -> bool {
    applied_count(agents, hash) == agents.len()
}

/// Configs received that the agent already had (the server must never send those).
pub fn redundant(agents: &[AgentHandle]) -> u64 {
    agents
        .iter()
        .map(|a| a.state().redundant_configs_received)
        .sum()
}

/// Remote configs received in all.
pub fn received_total(agents: &[AgentHandle]) -> u64 {
    agents
        .iter()
        .map(|a| a.state().remote_configs_received)
        .sum()
}

/// Wait until every agent reports `hash` applied.
pub async fn wait_all_applied(
    agents: &[AgentHandle],
    hash: ConfigHash,
    timeout: Duration,
    what: &str,
) {
    eventually(timeout, what, async || {
        let n = applied_count(agents, hash);
        if n == agents.len() {
            Ok(())
        } else {
            Err(format!("{n} of {} applied {}", agents.len(), hash.short()))
        }
    })
    .await;
}

pub async fn stop_all(agents: &[AgentHandle]) {
    for a in agents {
        a.stop(Duration::from_secs(2)).await;
    }
}

/// Make the server plan once more, now, and wait until it has: an agent that cannot accept a
/// remote config (so it is sent nothing) connects after the call, and the status API lists it
/// with a status only a plan gives (before its first plan an agent is `unknown`). A
/// negative assertion ("nothing more was pushed") calls this after observing its trigger, so
/// the plan in which the unwanted push would happen has certainly run.
pub async fn nudge_plan(server: &super::Server, what: &str) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static PROBES: AtomicUsize = AtomicUsize::new(0);
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let mut opts = AgentOptions::collector("plan-probe", &format!("plan-probe-{n}"), "probe");
    opts.capabilities = gitamp_opamp::proto::AgentCapabilities::ReportsStatus as u64;
    let probe = spawn_agent(SimAgent::new(opts), ws(Vec::new()), &server.ws_url());
    let url = server.api_url(&format!("/api/v1/agents/{}", uid_of(&probe)));
    eventually(
        super::server::KIT_WAIT,
        &format!("a plan after {what} (a probe agent planned)"),
        async || {
            let resp = reqwest::get(&url).await.map_err(|e| e.to_string())?;
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            // `unknown` until planned; then `incompatible`, or `unmanaged` where no
            // configuration selects it (either way it is sent nothing).
            if body["status"].as_str().is_some_and(|st| st != "unknown") {
                Ok(())
            } else {
                Err(format!("probe: {body}"))
            }
        },
    )
    .await;
    probe.stop(Duration::from_secs(2)).await;
}

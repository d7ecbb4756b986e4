//! Swarms of simulated agents (`gitamp_opamp::agent`) over real WebSockets, and what tests
//! observe of them.

use std::time::Duration;

use gitamp_core::ConfigHash;
use gitamp_opamp::agent::{AgentHandle, AgentOptions, SimAgent, Transport, WsOptions, spawn_agent};

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
pub fn ws(headers: Vec<(String, String)>) -> Transport {
    Transport::WebSocket(WsOptions {
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

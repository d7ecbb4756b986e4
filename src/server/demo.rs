//! `--demo-agents N`: simulated collectors that connect to this server over WebSocket, so the
//! README's first command shows a fleet syncing with nothing else installed.
//!
//! They are the same `SimAgent`s the tests and the load generator use: a full first report,
//! heartbeats, apply-and-acknowledge with the exact hash.

use std::time::Duration;

use gitamp_opamp::agent::{
    AgentHandle, AgentOptions, ClientTransport, SimAgent, WsOptions, spawn_agent,
};
use tracing::info;

/// The label mixes the example repository's configurations select: production Linux and Windows,
/// staging Linux, and a development host only the catch-all default selects.
const PROFILES: [(&str, &str, &str); 4] = [
    ("production", "linux", "checkout"),
    ("production", "windows", "billing"),
    ("staging", "linux", "checkout"),
    ("development", "darwin", "laptop"),
];

/// Running demo agents.
pub struct Demo {
    agents: Vec<AgentHandle>,
}

/// Start `n` agents against `url` (a `ws://` OpAMP endpoint), ramped over about a second.
pub fn start(n: usize, url: &str, secret: Option<String>) -> Demo {
    let mut ws = WsOptions::default();
    if let Some(secret) = secret {
        ws.headers
            .push(("Authorization".into(), format!("Bearer {secret}")));
    }
    let agents = (0..n)
        .map(|i| {
            let (env, os, service) = PROFILES[i % PROFILES.len()];
            let mut opts = AgentOptions::collector(service, &format!("demo-{os}-{i:04}"), env)
                .label("os.type", os);
            opts.heartbeat_interval = Duration::from_secs(30);
            spawn_agent(
                SimAgent::new(opts),
                ClientTransport::WebSocket(ws.clone()),
                url,
            )
        })
        .collect();
    info!(agents = n, %url, "Demo agents started.");
    Demo { agents }
}

impl Demo {
    /// Stop every agent (each sends agent_disconnect).
    pub async fn stop(self) {
        for agent in &self.agents {
            agent.stop(Duration::from_secs(2)).await;
        }
    }
}

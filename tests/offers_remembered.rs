//! What an agent was offered outlives the server that offered it. An agent that accepts
//! `opamp` connection-settings offers (the collector's supervisor with
//! `accepts_opamp_connection_settings`) replaces its connection on every one it gets, so a
//! server that offered it the same settings again after a restart would make every such agent
//! reconnect once more. (Replicas: tests/replicas_balancer.rs counts the offers of agents that
//! move between replicas.)

mod support;

use std::time::Duration;

use gitamp_opamp::agent::{SimAgent, spawn_agent};
use gitamp_opamp::proto::AgentCapabilities;
use support::agents::{linux_production, stop_all, ws};
use support::{GitOpsServer, eventually, wait_all_applied};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_does_not_offer_an_agent_the_settings_it_already_sent() {
    let mut gitops = GitOpsServer::start("example-repo", &[]);
    let mut opts = linux_production("offers-00");
    opts.capabilities |= AgentCapabilities::AcceptsOpAmpConnectionSettings as u64;
    let agent = spawn_agent(SimAgent::new(opts), ws(Vec::new()), &gitops.server.ws_url());
    let agents = [agent.clone()];
    let hash = gitops.fixture.expected_hashes()["linux-production"];
    wait_all_applied(&agents, hash, WAIT, "the first revision").await;
    eventually(WAIT, "the heartbeat offer", async || {
        (agent.state().opamp_offers_received == 1).then_some(())
    })
    .await;

    // A graceful stop stores what was offered; the restarted server reads it back.
    gitops.server.stop_gracefully();
    let full_before = agent.state().full_reports_sent;
    gitops.restart();
    // The restarted server knows nothing of the agent's session and asks for its full state:
    // the reply that asks is the first it sends, and an offer would have gone with it.
    eventually(WAIT, "the agent re-sent its full state", async || {
        let s = agent.state();
        (s.connected && s.connections >= 2 && s.full_reports_sent > full_before).then_some(())
    })
    .await;
    let s = agent.state();
    assert_eq!(
        s.opamp_offers_received, 1,
        "offered the same settings again after the restart"
    );
    assert_eq!(s.redundant_configs_received, 0, "redundant pushes");
    stop_all(&agents).await;
}

//! An HTTP (polling) agent gets its config in the replies to its first reports: a reply waits
//! for the plan on its report (`--poll-reply-wait`), rather than the agent waiting a whole
//! poll interval. The `gitamp` binary as a process, the example repository in a real Git
//! remote, messages over real HTTP.
//!
//! Timeouts are generous upper bounds for a slow CI machine, never speed assertions.

mod support;

use std::time::Duration;

use gitamp_opamp::agent::SimAgent;
use gitamp_opamp::proto;
use support::agents::linux_production;
use support::wire::post_opamp;
use support::{GitOpsServer, eventually, get_json};

const WAIT: Duration = Duration::from_secs(60);

/// Serves the example repository with `extra` flags, once its first revision is served.
async fn serving(extra: &[&str]) -> GitOpsServer {
    let gitops = GitOpsServer::start("example-repo", extra);
    let server = &gitops.server;
    eventually(WAIT, "the first revision is served", async || {
        let st = get_json(&server.api_url("/api/v1/status")).await;
        st["current_revision"].is_string().then_some(())
    })
    .await;
    gitops
}

/// Whether a new production Linux agent gets a config in the replies to what it sends on its
/// own when it starts (its first report, and the full state the server may ask for), before
/// it would poll again.
async fn config_without_polling(gitops: &GitOpsServer, host: &str) -> bool {
    let mut opts = linux_production(host);
    // What a collector reports before it has a config from us: its local one.
    opts.initial_effective_config = Some(proto::AgentConfigMap {
        config_map: [(
            String::new(),
            proto::AgentConfigFile {
                body: "receivers: {}\n".into(),
                content_type: "text/yaml".into(),
            },
        )]
        .into(),
    });
    let mut agent = SimAgent::new(opts);
    let client = reqwest::Client::new();
    let mut outbox = vec![agent.full_report()];
    let mut rounds = 0;
    while let Some(msg) = outbox.pop() {
        rounds += 1;
        assert!(rounds < 10, "the agent and the server keep talking");
        let (status, reply) = post_opamp(&client, &gitops.server.http_url(), &[], &msg).await;
        assert_eq!(status, 200);
        let reply = reply.expect("a reply");
        if reply.remote_config.is_some() {
            return true;
        }
        outbox.extend(agent.handle(&reply));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_polling_agent_gets_its_config_without_waiting_for_its_next_poll() {
    let gitops = serving(&[]).await;
    for i in 0..3 {
        assert!(
            config_without_polling(&gitops, &format!("poll-first-{i}")).await,
            "agent {i}: no config before its first poll"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_wait_the_first_reply_comes_before_the_plan() {
    let gitops = serving(&["--poll-reply-wait", "0"]).await;
    // The reply is built before the reconciler has seen the report (it gathers events for at
    // least 50 ms before it plans).
    assert!(!config_without_polling(&gitops, "poll-no-wait").await);
}

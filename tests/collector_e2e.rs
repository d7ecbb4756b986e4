//! Real OpenTelemetry Collectors, managed from Git. Each collector is the Collector Builder's
//! build of `tests/collector/manifest.yaml`, run by the collector's own `opampsupervisor`
//! (both built from registries by `scripts/build-peers.sh`), against `gitamp serve` as a
//! process on a Git remote the test makes from `tests/fixtures/collector-fleet`.
//!
//! What is proven, end to end: collectors select configurations by label and apply gitamp's
//! exact hash; the collector really runs the config (its OTLP/HTTP receiver answers on the port
//! the config names); a new commit reaches them; their effective config matches by meaning;
//! health from the opamp extension shows; a commit gitamp accepts but the collector refuses
//! fails the batch, halts the rollout, and the failed collectors are rolled back to the last
//! config they applied and run again; `kill -9` of gitamp mid-rollout converges with no
//! redundant push; the HTTP transport works.
//!
//! Timeouts are generous upper bounds (a supervisor reports APPLIED only after its
//! `config_apply_timeout`, 10 s here), never speed assertions.

mod support;

use std::time::Duration;

use gitamp_core::ConfigHash;
use support::agents::nudge_plan;
use support::collector::{Supervised, find_agent};
use support::{GitOpsServer, Server, agents, eventually, get_json};

const WAIT: Duration = Duration::from_secs(120);

/// The repository every test here serves.
const FIXTURE: &str = "tests/fixtures/collector-fleet";

/// WebSocket supervisors heartbeat on their own; 10 s keeps gitamp's liveness check quick
/// (silent for 3 intervals = disconnected). An HTTP supervisor polls every 30 s, so its test
/// keeps the default 30 s.
const SERVER_FLAGS: [&str; 2] = ["--heartbeat", "10"];

/// The agent entry of collector `name`, once listed.
async fn agent_of(server: &Server, name: &str) -> Option<serde_json::Value> {
    find_agent(&agents(server).await, name).cloned()
}

/// Wait until every named collector is Synced on `hash` as it reports it.
async fn wait_synced(server: &Server, names: &[&str], hash: ConfigHash, what: &str) {
    let hex = hash.to_hex();
    eventually(WAIT, what, async || {
        let list = agents(server).await;
        names
            .iter()
            .all(|n| {
                find_agent(&list, n).is_some_and(|a| {
                    a["status"] == "synced" && a["reported_hash"].as_str() == Some(hex.as_str())
                })
            })
            .then_some(())
    })
    .await;
}

fn describe(collectors: &[&Supervised]) -> String {
    collectors
        .iter()
        .map(|c| format!("--- {} ---\n{}", c.name, c.logs()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervised_collectors_follow_git_fail_halt_and_roll_back() {
    let gitops = GitOpsServer::start(FIXTURE, &SERVER_FLAGS);
    let first = gitops.fixture.expected_hashes();

    let ws = gitops.server.ws_url();
    let edge_a = Supervised::start(&ws, "edge-a", &[("fleet.role", "edge")]);
    let edge_b = Supervised::start(&ws, "edge-b", &[("fleet.role", "edge")]);
    let core = Supervised::start(&ws, "core-a", &[("fleet.role", "core")]);
    let all = [&edge_a, &edge_b, &core];

    // 1. Three collectors, two configurations by label, each APPLIED with gitamp's exact hash.
    wait_synced(
        &gitops.server,
        &["edge-a", "edge-b"],
        first["edge"],
        "edge collectors synced",
    )
    .await;
    wait_synced(
        &gitops.server,
        &["core-a"],
        first["core"],
        "core collector synced",
    )
    .await;

    // 2. The collector runs what it was sent: its OTLP receiver answers on the configured port.
    for c in all {
        assert!(
            c.otlp_accepts().await,
            "{} serves OTLP\n{}",
            c.name,
            describe(&all)
        );
    }

    // 3. Health from the opamp extension, and an effective config equal in meaning.
    for c in all {
        let a = agent_of(&gitops.server, &c.name).await.expect("listed");
        let uid = a["uid"].as_str().expect("uid");
        let detail = get_json(&gitops.server.api_url(&format!("/api/v1/agents/{uid}"))).await;
        assert_eq!(detail["health"]["healthy"], true, "{detail}");
        assert!(
            detail["health"]["components"]
                .as_object()
                .is_some_and(|c| !c.is_empty()),
            "the health tree has the collector's pipelines: {detail}"
        );
        assert_eq!(detail["config_same_meaning"], true, "{detail}");
        assert_eq!(detail["transport"], "ws");
    }

    // 4. A new commit reaches the edge collectors (the supervisor restarts each with it), one
    //    batch at a time; the core collector, whose config did not change, gets nothing.
    gitops
        .fixture
        .edit("processors/tag.yaml", "value: one", "value: two");
    gitops.commit_and_announce("tag two").await;
    let second = gitops.fixture.expected_hashes();
    assert_ne!(second["edge"], first["edge"]);
    assert_eq!(second["core"], first["core"]);
    wait_synced(
        &gitops.server,
        &["edge-a", "edge-b"],
        second["edge"],
        "edge collectors on commit 2",
    )
    .await;
    for c in [&edge_a, &edge_b] {
        assert!(
            c.otlp_accepts().await,
            "{} serves OTLP after the restart",
            c.name
        );
        let file = c.effective_file().unwrap_or_default();
        assert!(
            file.contains("two"),
            "the collector's config file has the change: {file}"
        );
    }
    assert_eq!(
        core.received_hashes(),
        vec![first["core"].to_hex()],
        "core got one push"
    );

    // 5. A commit gitamp accepts but the collector refuses (the batch processor's own check:
    //    send_batch_max_size below send_batch_size). Both configurations change; each halts at
    //    its first failure, and the failed collectors are rolled back to what they applied.
    gitops.fixture.edit(
        "processors/batch.yaml",
        "send_batch_max_size: 1024",
        "send_batch_max_size: 16",
    );
    gitops
        .commit_and_announce("a batch size the collector refuses")
        .await;
    let bad = gitops.fixture.expected_hashes();
    let halted = eventually(WAIT, "both rollouts halt", async || {
        let cfgs = get_json(&gitops.server.api_url("/api/v1/configurations")).await;
        let items = cfgs["items"].as_array().cloned().unwrap_or_default();
        let phases: Vec<String> = items
            .iter()
            .map(|c| {
                c["rollout"]["phase"]["phase"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        (phases.len() == 2 && phases.iter().all(|p| p == "halted")).then_some(cfgs)
    })
    .await;
    // Core (one collector) and the first edge collector failed and came back.
    let rolled_back = eventually(WAIT, "the failed collectors are rolled back", async || {
        let list = agents(&gitops.server).await;
        let rolled: Vec<serde_json::Value> = list
            .iter()
            .filter(|a| a["status"] == "rolled-back")
            .cloned()
            .collect();
        (rolled.len() == 2).then_some(rolled)
    })
    .await;
    let mut names: Vec<&str> = rolled_back
        .iter()
        .map(|a| a["labels"]["host.name"].as_str().unwrap_or(""))
        .collect();
    names.sort();
    assert!(names.contains(&"core-a"), "{names:?}\n{halted}");
    for a in &rolled_back {
        let name = a["labels"]["host.name"].as_str().unwrap_or("");
        let config = a["configuration"].as_str().unwrap_or("");
        let (old, failed) = (second[config], bad[config]);
        assert_eq!(
            a["reported_hash"].as_str(),
            Some(old.to_hex().as_str()),
            "{a}"
        );
        assert_eq!(
            a["last_applied"].as_str(),
            Some(old.to_hex().as_str()),
            "{a}"
        );
        assert!(
            a["failed_hashes"].to_string().contains(&failed.to_hex()),
            "{a}"
        );
        let reason = a["reason"].as_str().unwrap_or("");
        assert!(reason.starts_with("rolled back to"), "{a}");
        let c = all.iter().find(|c| c.name == name).expect("one of ours");
        // The failed hash went out once, the old config came back once.
        let got = c.received_hashes();
        assert_eq!(
            got.iter().filter(|h| **h == failed.to_hex()).count(),
            1,
            "{got:?}"
        );
        assert_eq!(got.last(), Some(&old.to_hex()), "{got:?}");
    }
    // The other edge collector never got the refused config and kept running: checked after
    // one more plan on the halted rollout, the plan that would wrongly send it on.
    nudge_plan(&gitops.server, "the rollback").await;
    let untouched = if names.contains(&"edge-a") {
        &edge_b
    } else {
        &edge_a
    };
    assert!(!untouched.received_hashes().contains(&bad["edge"].to_hex()));
    let listed = agent_of(&gitops.server, &untouched.name)
        .await
        .expect("listed");
    assert_eq!(listed["status"], "pending", "{listed}");
    // Every collector ends healthy, running its last good config.
    for c in all {
        let name = c.name.clone();
        eventually(WAIT, "healthy after the rollback", async || {
            let a = agent_of(&gitops.server, &name).await?;
            (a["healthy"] == true).then_some(())
        })
        .await;
        assert!(
            c.otlp_accepts().await,
            "{} serves OTLP on its old config",
            c.name
        );
    }

    // 6. A collector that crashes after APPLIED: health false with the supervisor's reason,
    //    status unchanged, and it is healthy again once the supervisor restarts it.
    let pid = core.collector_pid().expect("the core collector runs");
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    let crashed = eventually(WAIT, "the crash shows as unhealthy", async || {
        let a = agent_of(&gitops.server, "core-a").await?;
        let uid = a["uid"].as_str()?.to_string();
        let detail = get_json(&gitops.server.api_url(&format!("/api/v1/agents/{uid}"))).await;
        (detail["health"]["healthy"] == false).then_some(detail)
    })
    .await;
    assert!(
        crashed["health"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("exited")),
        "{crashed}"
    );
    eventually(
        WAIT,
        "healthy again after the supervisor's restart",
        async || {
            let a = agent_of(&gitops.server, "core-a").await?;
            (a["healthy"] == true).then_some(())
        },
    )
    .await;
}

/// `kill -9` of gitamp in the middle of a batched rollout to real collectors, restart on the
/// same data directory and port: every collector converges and none receives a config twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_rollout_real_collectors_converge_without_redundant_pushes() {
    let mut gitops = GitOpsServer::start(FIXTURE, &SERVER_FLAGS);
    let first = gitops.fixture.expected_hashes()["edge"];
    let ws = gitops.server.ws_url();
    let names = ["edge-1", "edge-2", "edge-3"];
    let collectors: Vec<Supervised> = names
        .iter()
        .map(|n| Supervised::start(&ws, n, &[("fleet.role", "edge")]))
        .collect();
    wait_synced(
        &gitops.server,
        &names,
        first,
        "three edge collectors synced",
    )
    .await;

    gitops
        .fixture
        .edit("processors/tag.yaml", "value: one", "value: two");
    gitops.commit_and_announce("tag two").await;
    let second = gitops.fixture.expected_hashes()["edge"];
    // Mid-rollout: the first batch has the new config (applying or applied), others wait.
    eventually(
        WAIT,
        "the first batch received the new config",
        async || {
            collectors
                .iter()
                .any(|c| c.received_hashes().contains(&second.to_hex()))
                .then_some(())
        },
    )
    .await;
    gitops.crash_and_restart();
    wait_synced(
        &gitops.server,
        &names,
        second,
        "every collector converges after the restart",
    )
    .await;
    // A redundant push would come from a plan after the reconnects: make sure one has run.
    nudge_plan(&gitops.server, "the collectors converged after the restart").await;
    for c in &collectors {
        let got = c.received_hashes();
        let mut seen = std::collections::BTreeSet::new();
        for h in &got {
            assert!(seen.insert(h), "{} received {h} twice: {got:?}", c.name);
        }
        assert!(c.otlp_accepts().await, "{} serves OTLP", c.name);
    }
}

/// One supervisor over plain HTTP (it polls every 30 s): it gets its configuration, applies it
/// with the exact hash, and the collector runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_over_http_gets_and_runs_its_config() {
    let gitops = GitOpsServer::start(FIXTURE, &[]);
    let core = Supervised::start(
        &gitops.server.http_url(),
        "core-http",
        &[("fleet.role", "core")],
    );
    wait_synced(
        &gitops.server,
        &["core-http"],
        gitops.fixture.expected_hashes()["core"],
        "HTTP collector synced",
    )
    .await;
    let a = agent_of(&gitops.server, "core-http").await.expect("listed");
    assert_eq!(a["transport"], "http", "{a}");
    assert_eq!(a["healthy"], true, "{a}");
    assert!(core.otlp_accepts().await, "serves OTLP\n{}", core.logs());
    assert_eq!(
        core.received_hashes().len(),
        1,
        "one push: {:?}",
        core.received_hashes()
    );
}

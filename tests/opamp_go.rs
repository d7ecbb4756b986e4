//! The opamp-go client library (a third client family beside Python's and our simulated
//! agent) through the whole loop: `gitamp serve` as a process on a real Git remote, agents over
//! WebSocket and HTTP (plain and gzip), a commit that one agent refuses (rolled back to the
//! config it last applied, the failed hash never re-sent), health, and `kill -9` of the server
//! with a restart that pushes nothing to agents already in step.

mod support;

use std::time::Duration;

use support::agents::nudge_plan;
use support::opamp_go::GoAgent;
use support::{GitOpsServer, agents, eventually, metric};

/// The repository every test here serves.
const FIXTURE: &str = "tests/fixtures/collector-fleet";
const WAIT: Duration = Duration::from_secs(90);

fn status_of(list: &[serde_json::Value], uid: &str) -> String {
    list.iter()
        .find(|a| a["uid"].as_str() == Some(uid))
        .and_then(|a| a["status"].as_str())
        .unwrap_or("absent")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opamp_go_agents_follow_commits_roll_back_and_survive_a_server_crash() {
    let mut gitops = GitOpsServer::start(FIXTURE, &["--heartbeat", "5"]);
    let hashes = gitops.fixture.expected_hashes();
    let (edge1, core) = (hashes["edge"], hashes["core"]);

    let ws = gitops.server.ws_url();
    let http = gitops.server.http_url();
    let mut fleet = vec![
        GoAgent::start(
            &ws,
            &[("fleet.role", "core"), ("host.name", "go-core-ws")],
            &[],
        ),
        GoAgent::start(
            &http,
            &[("fleet.role", "core"), ("host.name", "go-core-http")],
            &["--gzip"],
        ),
        GoAgent::start(
            &ws,
            &[("fleet.role", "edge"), ("host.name", "go-edge-ws")],
            &[],
        ),
        GoAgent::start(
            &http,
            &[("fleet.role", "edge"), ("host.name", "go-edge-http")],
            &[],
        ),
    ];

    // 1. Every agent reaches Synced on gitamp's exact hash, whatever its transport.
    let want = [core, core, edge1, edge1];
    eventually(WAIT, "every opamp-go agent synced", async || {
        let list = agents(&gitops.server).await;
        fleet
            .iter()
            .zip(&want)
            .all(|(a, h)| {
                status_of(&list, &a.uid) == "synced"
                    && list.iter().any(|x| {
                        x["uid"].as_str() == Some(a.uid.as_str())
                            && x["reported_hash"].as_str() == Some(h.to_hex().as_str())
                    })
            })
            .then_some(())
    })
    .await;
    for (a, h) in fleet.iter().zip(&want) {
        assert!(a.reported("APPLIED", &h.to_hex()), "{}", a.stderr());
        assert_eq!(a.received(&h.to_hex()), 1, "one push each");
    }

    // 2. Health reported by the client shows in the agent's view.
    fleet[0].command("unhealthy exporter queue is full");
    eventually(WAIT, "unhealthy shows", async || {
        let list = agents(&gitops.server).await;
        list.iter()
            .any(|x| x["uid"].as_str() == Some(fleet[0].uid.as_str()) && x["healthy"] == false)
            .then_some(())
    })
    .await;
    fleet[0].command("healthy");

    // 3. A commit one edge agent refuses: the batched rollout (1 at a time, no failure
    //    tolerated) halts, the agent is sent back what it last applied and ends rolled-back.
    gitops
        .fixture
        .edit("processors/tag.yaml", "value: one", "value: two");
    let edge2 = gitops.fixture.expected_hashes()["edge"];
    assert_ne!(edge1, edge2);
    fleet[2]
        .command_acked(&format!("fail {}", edge2.to_hex()))
        .await;
    gitops.commit_and_announce("tag two").await;
    let list = eventually(WAIT, "the refusing agent is rolled back", async || {
        let list = agents(&gitops.server).await;
        (status_of(&list, &fleet[2].uid) == "rolled-back").then_some(list)
    })
    .await;
    let refused = list
        .iter()
        .find(|x| x["uid"].as_str() == Some(fleet[2].uid.as_str()))
        .expect("listed");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("driver told to fail hash")),
        "{refused}"
    );
    assert_eq!(
        refused["last_applied"].as_str(),
        Some(edge1.to_hex().as_str())
    );
    assert!(fleet[2].reported("FAILED", &edge2.to_hex()));
    assert_eq!(
        fleet[2].received(&edge2.to_hex()),
        1,
        "the failed hash is sent once"
    );
    assert_eq!(
        fleet[2].received(&edge1.to_hex()),
        2,
        "first push, then the rollback"
    );
    // The other edge agent either went first (and applied) or waits behind the halt.
    let other = status_of(&list, &fleet[3].uid);
    assert!(other == "synced" || other == "pending", "{other}");

    // 4. kill -9 and restart on the same data and port: every agent comes back, the statuses
    //    are as before, and nothing is pushed to anyone.
    let before: Vec<String> = fleet.iter().map(|a| status_of(&list, &a.uid)).collect();
    let connected_before: Vec<usize> = fleet
        .iter()
        .map(|a| a.events_of("connected").len())
        .collect();
    let received_before: Vec<usize> = fleet
        .iter()
        .map(|a| a.events_of("remote_config").len())
        .collect();
    // The store holds the failure and the halt (decisions are committed at once, not within
    // the writer's delay): kill the server only then, since what a crash loses is what was
    // never committed.
    let store = gitamp::store::SqliteStore::open(&gitops.data_dir())
        .await
        .expect("store");
    let refuser = fleet[2].uid.replace('-', "");
    eventually(WAIT, "the failure and the halt are committed", async || {
        use gitamp::store::Store;
        let agents = store.load_agents().await.ok()?;
        let failed = agents
            .iter()
            .any(|a| a.instance_uid == refuser && a.failed_hashes.contains(&edge2.to_hex()));
        let rollouts = store.load_rollouts().await.ok()?;
        let halted = rollouts.iter().any(|r| {
            let progress: serde_json::Value = serde_json::from_str(&r.progress).unwrap_or_default();
            r.target_hash == edge2.to_hex() && progress["phase"]["phase"] == "halted"
        });
        (failed && halted).then_some(())
    })
    .await;
    store.close().await;
    gitops.crash_and_restart();
    eventually(WAIT, "the statuses of before the crash", async || {
        let list = agents(&gitops.server).await;
        let now: Vec<String> = fleet.iter().map(|a| status_of(&list, &a.uid)).collect();
        if now == before {
            Ok(())
        } else {
            Err(format!("statuses {now:?}, before {before:?}"))
        }
    })
    .await;
    for (a, n) in fleet.iter().zip(&connected_before) {
        let ws = a.events_of("started")[0]["transport"] == "ws";
        if ws {
            assert!(a.events_of("connected").len() > *n, "{} reconnected", a.uid);
        }
    }
    // Nothing is pushed after the reconnects. A negative check, so first its trigger: the
    // WebSocket agents reconnected (above), a plan ran after that (the probe), and every agent
    // talked to the server after that plan (its `last_seen` moved), so a push decided there
    // would have reached it, HTTP agents included (they poll every 500 ms).
    nudge_plan(&gitops.server, "the agents reconnected").await;
    let seen = |list: &[serde_json::Value], uid: &str| -> String {
        list.iter()
            .find(|a| a["uid"].as_str() == Some(uid))
            .map(|a| a["last_seen"].to_string())
            .unwrap_or_default()
    };
    let seen_at_plan: Vec<String> = {
        let list = agents(&gitops.server).await;
        fleet.iter().map(|a| seen(&list, &a.uid)).collect()
    };
    eventually(
        WAIT,
        "every agent talks to the server after the plan",
        async || {
            let list = agents(&gitops.server).await;
            let now: Vec<String> = fleet.iter().map(|a| seen(&list, &a.uid)).collect();
            if now.iter().zip(&seen_at_plan).all(|(n, b)| n != b) {
                Ok(())
            } else {
                Err(format!("last_seen {now:?}, at the plan {seen_at_plan:?}"))
            }
        },
    )
    .await;
    assert_eq!(
        metric(&gitops.server, "gitamp_config_pushes_total").await,
        0.0
    );
    let received_after: Vec<usize> = fleet
        .iter()
        .map(|a| a.events_of("remote_config").len())
        .collect();
    assert_eq!(
        received_before, received_after,
        "no config received after the restart"
    );

    for a in &mut fleet {
        a.stop();
    }
}

/// The rollback target survives a crash: gitamp pushes a new config, is killed before the agent
/// reports FAILED for it, and the restarted server (which serves the new revision straight from
/// its cache and never rendered the old one) sends the agent back the old config, kept in the
/// store by hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_after_a_restart_sends_a_config_only_the_store_still_has() {
    let mut gitops = GitOpsServer::start(FIXTURE, &[]);
    let edge1 = gitops.fixture.expected_hashes()["edge"];
    // Its answers take 3 s, so the server can be killed between a push and the answer.
    let mut agent = GoAgent::start(
        &gitops.server.ws_url(),
        &[("fleet.role", "edge"), ("host.name", "go-slow")],
        &["--apply-delay", "3s"],
    );
    eventually(WAIT, "synced on the first config", async || {
        (status_of(&agents(&gitops.server).await, &agent.uid) == "synced").then_some(())
    })
    .await;

    gitops
        .fixture
        .edit("processors/tag.yaml", "value: one", "value: two");
    let edge2 = gitops.fixture.expected_hashes()["edge"];
    agent
        .command_acked(&format!("fail {}", edge2.to_hex()))
        .await;
    let sha = gitops.commit_and_announce("tag two").await;
    eventually(WAIT, "the new config reaches the agent", async || {
        (agent.received(&edge2.to_hex()) == 1).then_some(())
    })
    .await;
    // Kill only once the new revision is the store's current one (committed at once), so the
    // restarted server serves it from its cache and renders nothing older.
    let store = gitamp::store::SqliteStore::open(&gitops.data_dir())
        .await
        .expect("store");
    eventually(WAIT, "the new revision is committed", async || {
        use gitamp::store::Store;
        let current = store.last_accepted_revision().await.ok()??;
        (current == sha).then_some(())
    })
    .await;
    store.close().await;
    gitops.server.kill9();
    assert!(
        !agent.reported("FAILED", &edge2.to_hex()),
        "the server must be gone before the agent answers"
    );
    gitops.restart();

    let list = eventually(WAIT, "rolled back by the restarted server", async || {
        let list = agents(&gitops.server).await;
        (status_of(&list, &agent.uid) == "rolled-back").then_some(list)
    })
    .await;
    assert!(agent.reported("FAILED", &edge2.to_hex()));
    assert_eq!(
        agent.received(&edge1.to_hex()),
        2,
        "first push, then the rollback"
    );
    assert_eq!(
        agent.received(&edge2.to_hex()),
        1,
        "the failed config is sent once"
    );
    let item = list
        .iter()
        .find(|a| a["uid"].as_str() == Some(agent.uid.as_str()))
        .expect("listed");
    assert_eq!(
        item["reported_hash"].as_str(),
        Some(edge1.to_hex().as_str())
    );
    assert!(
        !gitops
            .server
            .logs()
            .contains("No config with this hash is kept"),
        "{}",
        gitops.server.logs()
    );
    agent.stop();
}

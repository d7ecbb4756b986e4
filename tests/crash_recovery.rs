//! Crash recovery, scripted and repeated: `kill -9` the server at a point of a rollout chosen by
//! a seeded PRNG, restart it on the same data directory and OpAMP port, and check after every
//! round that
//!
//! - every agent converges to the desired hash,
//! - no agent ever received a config it already had (redundant pushes stay 0),
//! - no agent ever received or reported a config from a rejected revision (bad commits are
//!   interleaved in some rounds, some killed right after their webhook),
//! - the store left behind by the crash only references accepted hashes, and after the final
//!   graceful stop every agent row reports the final desired hash and every rollout row targets
//!   its configuration's current hash.
//!
//! Both run on SQLite and on PostgreSQL (`--store`).
//!
//! The seed is fixed (override with `GITAMP_CRASH_SEED`) so a failure replays; the seed and
//! the kill point of each round are printed. Timeouts are generous upper bounds, never speed
//! assertions.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use gitamp::store::Store;
use gitamp_core::ConfigHash;
use gitamp_opamp::agent::AgentHandle;
use support::agents::{applied_count, received_count, redundant, stop_all};
use support::postgres::TestDb;
use support::rand::{Prng, seed_from_env};
use support::{GitOpsServer, eventually, get_json, post_webhook, start_agents, wait_all_applied};

const WAIT: Duration = Duration::from_secs(60);
const AGENTS: usize = 6;
const ROUNDS: usize = 20;
/// The configuration the test agents are selected by (batched rollout in example-repo).
const CONFIG: &str = "linux-production";

/// Where a round kills the server.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// Right after the webhook answered: the fetch may not even have started.
    AfterWebhook,
    /// As soon as one agent has received the new config (mid-push).
    FirstReceived,
    /// After `k` agents applied the new config.
    Applied(usize),
}

/// Records the hashes of an accepted revision: per configuration (hex, for store rows) and the
/// test agents' configuration (for what the agents saw).
fn accept(
    hashes: &BTreeMap<String, ConfigHash>,
    accepted_all: &mut BTreeMap<String, BTreeSet<String>>,
    accepted: &mut BTreeSet<ConfigHash>,
) {
    for (name, h) in hashes {
        accepted_all
            .entry(name.clone())
            .or_default()
            .insert(h.to_hex());
    }
    accepted.insert(hashes[CONFIG]);
}

/// Every hash an agent was sent (its last config) or reported a status for must come from an
/// accepted revision.
fn assert_only_accepted(agents: &[AgentHandle], accepted: &BTreeSet<ConfigHash>, round: usize) {
    let known: BTreeSet<&[u8]> = accepted.iter().map(|h| h.as_bytes()).collect();
    for a in agents {
        let st = a.state();
        if let Some(c) = &st.last_config {
            assert!(
                known.contains(&c.hash[..]),
                "round {round}: an agent received {} which no accepted revision renders",
                hex::encode(&c.hash)
            );
        }
        for change in &st.status_history {
            assert!(
                change.hash.is_empty() || known.contains(&change.hash[..]),
                "round {round}: an agent reported {:?} for {} which no accepted revision renders",
                change.status,
                hex::encode(&change.hash)
            );
        }
    }
}

/// What a crashed server left on disk only names hashes of accepted revisions.
async fn check_store_after_crash(
    db: &TestDb,
    data_dir: &std::path::Path,
    accepted_all: &BTreeMap<String, BTreeSet<String>>,
    round: usize,
) {
    let store = db.open_server_store(data_dir).await;
    let agents = store.load_agents().await.expect("agents load");
    let linux: &BTreeSet<String> = &accepted_all[CONFIG];
    for a in &agents {
        if let Some(h) = &a.reported_hash {
            assert!(
                linux.contains(h),
                "round {round}: agent {} row reports {h}",
                a.instance_uid
            );
        }
        if let Some(h) = &a.sent_hash {
            assert!(
                linux.contains(h),
                "round {round}: agent {} row was sent {h}",
                a.instance_uid
            );
        }
    }
    for r in store.load_rollouts().await.expect("rollouts load") {
        let known = accepted_all.get(&r.configuration);
        assert!(
            known.is_some_and(|k| k.contains(&r.target_hash)),
            "round {round}: rollout row {}/{} targets a hash no accepted revision renders",
            r.configuration,
            r.target_hash
        );
    }
    store.close().await;
}

const BROKEN: &str = "apiVersion: gitamp.dev/v1\nkind: Configuration\nmetadata:\n  name: broken\nspec:\n  priority: 50\n  selector:\n    matchLabels: {team: nobody}\n  sources: [otlp-default]\n  destinations: [does-not-exist]\n";

async fn kill_9_at_random_rollout_points_repeatedly_converges_and_stays_consistent(db: TestDb) {
    let seed = seed_from_env("GITAMP_CRASH_SEED", 0x6d5a_1f2c_9e37_b401);
    println!("crash recovery seed {seed} (set GITAMP_CRASH_SEED to replay another)");
    let mut rng = Prng::new(seed);
    let started = Instant::now();

    let store_args = db.serve_args();
    let store_args: Vec<&str> = store_args.iter().map(String::as_str).collect();
    let mut gitops = GitOpsServer::start("example-repo", &store_args);
    let data_dir = gitops.data_dir();

    // Every (configuration, hash) an accepted revision renders, hex.
    let mut accepted_all: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut accepted: BTreeSet<ConfigHash> = BTreeSet::new();

    let agents = start_agents(AGENTS, "crash-linux", &gitops.server.ws_url());
    let first = gitops.fixture.expected_hashes();
    accept(&first, &mut accepted_all, &mut accepted);
    wait_all_applied(&agents, first[CONFIG], WAIT, "first revision applied").await;

    let mut rejected_shas = 0;
    for round in 0..ROUNDS {
        // Some rounds first push a bad commit that would also change the agents' config.
        if rng.below(3) == 0 {
            gitops.fixture.edit(
                "processors/env-production.yaml",
                "team: ",
                &format!("team: rejected-{round}-"),
            );
            gitops.fixture.write("configurations/broken.yaml", BROKEN);
            let bad_sha = gitops.fixture.commit_all("a bad commit");
            gitops.fixture.push(false);
            assert_eq!(post_webhook(&gitops.server, &gitops.token).await / 100, 2);
            if rng.below(2) == 0 {
                println!("round {round}: kill right after the bad commit's webhook");
                gitops.crash_and_restart();
            }
            let api = gitops.server.api_url("/api/v1/status");
            eventually(WAIT, "the bad commit is rejected", async || {
                let st = get_json(&api).await;
                (st["last_rejected"]["revision"] == bad_sha.as_str()).then_some(())
            })
            .await;
            rejected_shas += 1;
            // Undo it in the work tree; the next good commit carries the fix.
            support::git(
                &gitops.fixture.work(),
                &["rm", "-q", "configurations/broken.yaml"],
            );
            gitops.fixture.edit(
                "processors/env-production.yaml",
                &format!("team: rejected-{round}-"),
                "team: ",
            );
        }

        // A good change.
        gitops.fixture.set_team(&format!("round-{round}"));
        gitops.fixture.commit_all(&format!("round {round}"));
        gitops.fixture.push(false);
        let hashes = gitops.fixture.expected_hashes();
        let want = hashes[CONFIG];
        accept(&hashes, &mut accepted_all, &mut accepted);

        let point = match rng.below(8) {
            0 => KillPoint::AfterWebhook,
            1 => KillPoint::FirstReceived,
            n => KillPoint::Applied(n as usize - 1),
        };
        println!("round {round}: kill point {point:?}");
        assert_eq!(post_webhook(&gitops.server, &gitops.token).await / 100, 2);
        match point {
            KillPoint::AfterWebhook => {}
            KillPoint::FirstReceived => {
                eventually(WAIT, "one agent received the config", async || {
                    (received_count(&agents, want) >= 1).then_some(())
                })
                .await
            }
            KillPoint::Applied(k) => {
                eventually(WAIT, "k agents applied", async || {
                    (applied_count(&agents, want) >= k).then_some(())
                })
                .await
            }
        }
        gitops.server.kill9();
        check_store_after_crash(&db, &data_dir, &accepted_all, round).await;
        assert_only_accepted(&agents, &accepted, round);

        gitops.restart();
        wait_all_applied(
            &agents,
            want,
            WAIT,
            "every agent converges after the restart",
        )
        .await;
        assert_eq!(redundant(&agents), 0, "round {round}: a redundant push");
        assert_only_accepted(&agents, &accepted, round);
    }
    assert!(rejected_shas > 0, "the seed interleaved no bad commit");

    // Final: wait for the server's view of all agents, stop gracefully, inspect the store.
    let final_hashes = gitops.fixture.expected_hashes();
    let api = gitops.server.api_url("/api/v1/agents?status=synced");
    eventually(WAIT, "the API lists every agent synced", async || {
        (get_json(&api).await["total"] == AGENTS).then_some(())
    })
    .await;
    gitops.server.stop_gracefully();
    let store = db.open_server_store(&data_dir).await;
    let rows = store.load_agents().await.expect("agents load");
    assert_eq!(rows.len(), AGENTS, "one row per agent: {rows:?}");
    let want_hex = final_hashes[CONFIG].to_hex();
    for a in &rows {
        assert_eq!(
            a.reported_hash.as_deref(),
            Some(want_hex.as_str()),
            "agent {} row",
            a.instance_uid
        );
    }
    for r in store.load_rollouts().await.expect("rollouts load") {
        let current = final_hashes.get(&r.configuration).map(|h| h.to_hex());
        assert_eq!(
            current.as_deref(),
            Some(r.target_hash.as_str()),
            "rollout row {} targets a stale hash",
            r.configuration
        );
    }
    store.close().await;
    println!(
        "{ROUNDS} kill -9 rounds ({rejected_shas} with a rejected commit) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    stop_all(&agents).await;
}

/// Events survive a `kill -9`: those a run stored (its revision accepted, an agent connecting
/// and leaving) are in `/api/v1/events` of the next run before any agent connects to it, and
/// in the agent's own events once it is back.
async fn events_survive_a_restart(db: TestDb) {
    use gitamp::store::EventRecord;
    use gitamp_opamp::agent::{AgentOptions, ClientTransport, SimAgent, WsOptions, spawn_agent};
    use support::{GitFixture, Server};

    let fixture = GitFixture::with_example_repo();
    let data = tempfile::tempdir().expect("tempdir");
    let data_dir = data.path().join("data");
    let remote = fixture.remote_url();
    let opamp = format!("127.0.0.1:{}", support::server::free_port());
    let store_args = db.serve_args();
    let mut argv = vec![
        "--repo",
        remote.as_str(),
        "--poll",
        "3600",
        "--opamp-listen",
        opamp.as_str(),
        "--api-listen",
        "127.0.0.1:0",
    ];
    argv.extend(store_args.iter().map(String::as_str));
    let uid = [0x5e; 16];
    let uid_text = uuid::Uuid::from_bytes(uid).hyphenated().to_string();
    let start_agent = |url: &str| {
        let mut opts = AgentOptions::collector("checkout", "events-linux-00", "production")
            .label("os.type", "linux");
        opts.instance_uid = Some(uid);
        spawn_agent(
            SimAgent::new(opts),
            ClientTransport::WebSocket(WsOptions::default()),
            url,
        )
    };

    let mut server = Server::start(&data_dir, &argv);
    let agent = start_agent(&server.ws_url());
    agent
        .wait_for(WAIT, |s| s.last_config.is_some())
        .await
        .expect("the agent gets its config");
    assert!(agent.stop(WAIT).await, "the agent stops");

    // Kill only once the store has committed them: a crash loses what was never committed.
    let store = db.open_server_store(&data_dir).await;
    let has = |events: &[EventRecord], kind: &str, agent: Option<&str>| {
        events
            .iter()
            .any(|e| e.kind == kind && (agent.is_none() || e.agent_uid.as_deref() == agent))
    };
    let stored = eventually(WAIT, "the run's events are committed", async || {
        let events = store.recent_events(None, 100).await.ok()?;
        (has(&events, "revision-accepted", None)
            && has(&events, "connected", Some(&uid_text))
            && has(&events, "disconnected", Some(&uid_text)))
        .then_some(events)
    })
    .await;
    store.close().await;
    server.kill9();

    let server = Server::start(&data_dir, &argv);
    let items = get_json(&server.api_url("/api/v1/events?limit=1000")).await["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let count = |kind: &str, agent: Option<&str>| {
        items
            .iter()
            .filter(|e| e["kind"] == kind && agent.is_none_or(|a| e["agent"] == a))
            .count()
    };
    assert!(
        count("connected", Some(&uid_text)) >= 1 && count("disconnected", Some(&uid_text)) >= 1,
        "the agent's events of the last run: {items:#?}"
    );
    assert!(
        count("revision-accepted", None) >= 2,
        "the last run's accepted revision, then this run's (from the cache): {items:#?}"
    );
    let last_run_accepted = stored
        .iter()
        .find(|e| e.kind == "revision-accepted")
        .map(|e| e.message.clone());
    assert!(
        items.iter().any(|e| e["kind"] == "revision-accepted"
            && e["message"].as_str() == last_run_accepted.as_deref()),
        "same message as stored: {items:#?}"
    );

    // Back on the restarted server, the agent's own events include the last run's.
    let agent = start_agent(&server.ws_url());
    let detail = eventually(WAIT, "the agent is back", async || {
        let resp = reqwest::get(server.api_url(&format!("/api/v1/agents/{uid_text}")))
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json::<serde_json::Value>().await.ok()
    })
    .await;
    let kinds: Vec<&str> = detail["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        kinds.contains(&"disconnected"),
        "the last run's disconnect is among its events: {kinds:?}"
    );
    agent.stop(WAIT).await;
}

both_backends!(
    kill_9_at_random_rollout_points_repeatedly_converges_and_stays_consistent(
        flavor = "multi_thread",
        worker_threads = 2
    ),
    events_survive_a_restart(flavor = "multi_thread", worker_threads = 2),
);

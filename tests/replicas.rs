//! Several `gitamp serve` processes on one PostgreSQL database (the private cluster of
//! `scripts/postgres-env.sh`), with real agents over WebSocket:
//!
//! - agents spread over three replicas converge on each commit, whichever replica the webhook
//!   reaches, with no redundant push, and every replica serves the same revision; a commit the
//!   leader rejects is served by none;
//! - the status API of any replica lists every replica (one leader) and counts the whole fleet;
//! - `kill -9` of the leader: another replica takes over (the time is printed, not asserted)
//!   and a commit pushed meanwhile reaches the agents;
//! - `kill -9` of a follower without a balancer: its agents, given every replica's address,
//!   fail over to the others themselves, re-sync, converge on the next commit, and none is
//!   pushed a config it runs;
//! - a replica started with another repository is refused (exit 2).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gitamp_opamp::agent::{AgentHandle, ClientTransport, SimAgent, WsOptions, spawn_agent};
use support::agents::{linux_production, redundant, stop_all};
use support::replicas::Fleet;
use support::{GitFixture, eventually, get_json, start_agents, wait_all_applied};

const WAIT: Duration = Duration::from_secs(60);
const CONFIG: &str = "linux-production";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_spread_over_three_replicas_converge_on_every_commit() {
    let fleet = Fleet::start("replicas_three_converge", 3).await;
    let agents: Vec<Vec<AgentHandle>> = (0..3)
        .map(|i| start_agents(3, &format!("replica{i}"), &fleet.servers[i].ws_url()))
        .collect();
    let all: Vec<AgentHandle> = agents.iter().flatten().cloned().collect();
    let first = fleet.fixture.expected_hashes()[CONFIG];
    wait_all_applied(&all, first, WAIT, "the first revision, on every replica").await;
    let leader = fleet.leader(&[0, 1, 2]).await;

    // Any replica's status lists the three (one leader) and counts all nine agents.
    for i in 0..3 {
        let url = fleet.servers[i].api_url("/api/v1/status");
        eventually(WAIT, "the whole fleet in the status", async || {
            let status = get_json(&url).await;
            let c = &status["cluster"];
            let replicas = c["replicas"].as_array().cloned().unwrap_or_default();
            let leaders = replicas.iter().filter(|r| r["role"] == "leader").count();
            let held: u64 = replicas.iter().filter_map(|r| r["agents"].as_u64()).sum();
            // `fleet_agents` is the leader's count, published in its row for the others.
            if replicas.len() == 3
                && leaders == 1
                && c["fleet_connected"] == 9
                && c["fleet_agents"] == 9
                && held == 9
            {
                Ok(())
            } else {
                Err(format!("{c}"))
            }
        })
        .await;
    }

    // So does /metrics on any replica.
    let follower = &fleet.servers[(leader + 1) % 3];
    eventually(WAIT, "the fleet's gauges on a follower", async || {
        let got = (
            support::metric(follower, "gitamp_cluster_fleet_connected_agents").await,
            support::metric(follower, "gitamp_cluster_replicas").await,
            support::metric(follower, "gitamp_cluster_leader").await,
            support::metric(&fleet.servers[leader], "gitamp_cluster_leader").await,
        );
        (got == (9.0, 3.0, 0.0, 1.0))
            .then_some(())
            .ok_or(format!("{got:?}"))
    })
    .await;

    // `gitamp status` on a follower shows the fleet and the replicas too.
    let follower_api = fleet.servers[(leader + 1) % 3].api_url("");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gitamp"))
        .args(["status", "--server", follower_api.trim_end_matches('/')])
        .output()
        .expect("gitamp status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("9 agents (9 connected) over 3 replicas"),
        "{text}"
    );
    assert_eq!(text.matches(" leader ").count(), 1, "{text}");
    assert_eq!(text.matches(" follower ").count(), 2, "{text}");

    // A commit announced to a follower (relayed to the leader) reaches every agent.
    fleet.fixture.set_team("replicas-2");
    let sha = fleet.fixture.commit_all("team replicas-2");
    fleet.fixture.push(false);
    let follower = (leader + 1) % 3;
    fleet.webhook(follower).await;
    let second = fleet.fixture.expected_hashes()[CONFIG];
    assert_ne!(first, second);
    wait_all_applied(&all, second, WAIT, "the commit, on every replica").await;
    for i in 0..3 {
        assert_eq!(
            fleet.served(i).await.as_deref(),
            Some(sha.as_str()),
            "replica {i}"
        );
    }
    // Recorded once in the shared history, not once per replica.
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&fleet.url)
        .await
        .expect("connect");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM revisions WHERE revision = $1")
        .bind(&sha)
        .fetch_one(&mut db)
        .await
        .expect("count");
    assert_eq!(rows, 1, "revision rows for {sha}");
    // A commit the leader rejects is served by no replica.
    fleet.fixture.write(
        "configurations/broken.yaml",
        "apiVersion: gitamp.dev/v1\nkind: Configuration\nmetadata:\n  name: broken\nspec:\n  priority: 50\n  selector:\n    matchLabels: {team: nobody}\n  sources: [otlp-default]\n  destinations: [does-not-exist]\n",
    );
    fleet.fixture.set_team("rejected");
    let bad = fleet.fixture.commit_all("a bad commit");
    fleet.fixture.push(false);
    fleet.webhook(leader).await;
    let url = fleet.servers[leader].api_url("/api/v1/status");
    eventually(WAIT, "the leader rejects the bad commit", async || {
        let status = get_json(&url).await;
        (status["last_rejected"]["revision"] == bad.as_str()).then_some(())
    })
    .await;
    // Every follower re-reads the database's revision (a webhook to each makes it poll the
    // leader, and the recheck runs anyway): still the good one.
    for i in 0..3 {
        assert_eq!(
            fleet.served(i).await.as_deref(),
            Some(sha.as_str()),
            "replica {i}"
        );
    }
    assert_eq!(redundant(&all), 0, "redundant pushes");
    for a in &all {
        assert!(
            support::agents::has_applied(a, second),
            "an agent left the good config"
        );
    }
    stop_all(&all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_hands_over_and_a_commit_meanwhile_is_applied() {
    let mut fleet = Fleet::start("replicas_leader_killed", 2).await;
    let leader = fleet.leader(&[0, 1]).await;
    let survivor = 1 - leader;
    let agents = start_agents(3, "survivor", &fleet.servers[survivor].ws_url());
    let first = fleet.fixture.expected_hashes()[CONFIG];
    wait_all_applied(&agents, first, WAIT, "the first revision").await;

    fleet.servers[leader].kill9();
    let killed = Instant::now();
    fleet.fixture.set_team("after-failover");
    let sha = fleet.fixture.commit_all("pushed while the leader is dead");
    fleet.fixture.push(false);
    let took = fleet.leader(&[survivor]).await;
    assert_eq!(took, survivor);
    let failover = killed.elapsed();
    fleet.webhook(survivor).await;
    let second = fleet.fixture.expected_hashes()[CONFIG];
    wait_all_applied(
        &agents,
        second,
        WAIT,
        "the commit pushed during the failover",
    )
    .await;
    println!(
        "leader kill -9 -> new leader in {:.2} s; -> commit applied in {:.2} s",
        failover.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(fleet.served(survivor).await.as_deref(), Some(sha.as_str()));
    assert_eq!(redundant(&agents), 0, "redundant pushes");

    // The dead replica leaves the listing.
    let url = fleet.servers[survivor].api_url("/api/v1/status");
    eventually(WAIT, "the dead replica is retired", async || {
        let status = get_json(&url).await;
        let n = status["cluster"]["replicas"].as_array().map_or(0, Vec::len);
        (n == 1)
            .then_some(())
            .ok_or(format!("{}", status["cluster"]))
    })
    .await;
    stop_all(&agents).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_follower_its_agents_fail_over_to_the_others_by_themselves() {
    let mut fleet = Fleet::start("replicas_client_failover", 3).await;
    let leader = fleet.leader(&[0, 1, 2]).await;
    let victim = (leader + 1) % 3;
    let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let failover: Arc<[String]> = others.iter().map(|&i| fleet.servers[i].ws_url()).collect();
    let agents: Vec<AgentHandle> = (0..6)
        .map(|i| {
            let ws = WsOptions {
                reconnect_delay: Duration::from_millis(200),
                failover: failover.clone(),
                failover_offset: i,
                ..WsOptions::default()
            };
            spawn_agent(
                SimAgent::new(linux_production(&format!("failover-{i:02}"))),
                ClientTransport::WebSocket(ws),
                &fleet.servers[victim].ws_url(),
            )
        })
        .collect();
    let first = fleet.fixture.expected_hashes()[CONFIG];
    wait_all_applied(&agents, first, WAIT, "the first revision, on the victim").await;
    let full_before: Vec<u64> = agents.iter().map(|a| a.state().full_reports_sent).collect();

    fleet.servers[victim].kill9();
    let killed = Instant::now();
    // Every agent connected again (to a survivor: the victim is gone) and re-sent its full
    // state, which a replica that never saw it asks for.
    eventually(WAIT, "every agent re-synced on a survivor", async || {
        let behind = agents
            .iter()
            .zip(&full_before)
            .filter(|(a, before)| {
                let s = a.state();
                !(s.connected && s.connections >= 2 && s.full_reports_sent > **before)
            })
            .count();
        (behind == 0)
            .then_some(())
            .ok_or(format!("{behind} not yet"))
    })
    .await;
    let resynced = killed.elapsed();
    // The survivors hold all six, spread over both (agents start at different offsets).
    let held = eventually(WAIT, "the survivors hold the six agents", async || {
        let mut held = Vec::new();
        for &i in &others {
            let status = get_json(&fleet.servers[i].api_url("/api/v1/status")).await;
            held.push(status["agents"]["connected"].as_u64().unwrap_or(0));
        }
        (held.iter().sum::<u64>() == 6)
            .then_some(held.clone())
            .ok_or(format!("{held:?}"))
    })
    .await;
    assert!(held.iter().all(|&n| n > 0), "spread over both: {held:?}");
    // A survivor's fleet counts: six known, six connected (the dead replica's row says it
    // held six until it is retired; its agents are not counted twice meanwhile), then two
    // replicas listed.
    let survivor = fleet.servers[others[0]].api_url("/api/v1/status");
    eventually(WAIT, "the survivors' fleet counts", async || {
        let c = get_json(&survivor).await["cluster"].clone();
        let listed = c["replicas"].as_array().map_or(0, Vec::len);
        (c["fleet_agents"] == 6 && c["fleet_connected"] == 6 && listed == 2)
            .then_some(())
            .ok_or(format!("{c}"))
    })
    .await;

    // They are planned where they are now: the next commit reaches them all.
    fleet.fixture.set_team("after-client-failover");
    fleet.fixture.commit_all("after the follower died");
    fleet.fixture.push(false);
    fleet.webhook(leader).await;
    let second = fleet.fixture.expected_hashes()[CONFIG];
    wait_all_applied(&agents, second, WAIT, "the commit, on the survivors").await;
    println!(
        "follower kill -9 -> all 6 agents re-synced on the survivors {held:?} in {:.2} s",
        resynced.as_secs_f64()
    );
    assert_eq!(redundant(&agents), 0, "redundant pushes");
    stop_all(&agents).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_another_repository_or_ref_is_refused() {
    let fleet = Fleet::start("replicas_mismatch", 1).await;
    let other = GitFixture::with_example_repo();
    for (repo, git_ref) in [
        (other.remote_url(), None),
        (fleet.fixture.remote_url(), Some("some-other-branch")),
    ] {
        let data = tempfile::tempdir().expect("tempdir");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gitamp"));
        cmd.args(["serve", "--data-dir"])
            .arg(data.path())
            .args(["--repo", &repo, "--store", &fleet.url])
            .args([
                "--opamp-listen",
                "127.0.0.1:0",
                "--api-listen",
                "127.0.0.1:0",
            ]);
        if let Some(r) = git_ref {
            cmd.args(["--ref", r]);
        }
        let out = cmd.output().expect("run gitamp serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
        assert!(
            stderr.contains("every replica on one database must serve the same repository"),
            "stderr: {stderr}"
        );
    }
    // The first replica serves on.
    assert!(
        get_json(&fleet.servers[0].api_url("/api/v1/status")).await["current_revision"].is_string()
    );
}

//! A rollout batch is admitted fleet-wide across replicas (the private PostgreSQL cluster of
//! `scripts/postgres-env.sh`, real `gitamp serve` processes, simulated agents over WebSocket):
//!
//! - eight agents spread over three replicas by UID, so the first batch (25% of 8: the two
//!   lowest UIDs) holds agents of two replicas and the third replica has none in it; the first
//!   batch fails the commit and the rollout halts on every replica: nobody past that batch is
//!   sent the config, on any replica (a replica stepping its own agents' rollout would admit
//!   its first agent at once);
//! - every replica shows the same fleet-wide rollout (8 agents, 2 failed);
//! - `gitamp resume` on a follower is relayed to the leader: the rest of the fleet applies the
//!   config, the rollout completes with the 2 failures excused, with no redundant push;
//! - the commit's convergence on every replica counts the whole fleet (8 targeted);
//! - a burst of agent-change notices (a ramp announces every batch) makes the leader read and
//!   step a few times, not once per notice.

mod support;

use std::time::Duration;

use gitamp_opamp::agent::{AgentHandle, ApplyPolicy, DEFAULT_FAIL_MARKER};
use serde_json::Value;
use support::agents::{
    fixed_uid, linux_production, received_count, redundant, start_agents_with, stop_all,
};
use support::cli::{code, explain, gitamp_async, stdout};
use support::replicas::Fleet;
use support::{eventually, get_json, wait_all_applied};

const WAIT: Duration = Duration::from_secs(60);
const CONFIG: &str = "linux-production";

async fn rollout_on(fleet: &Fleet, i: usize) -> Value {
    let c = get_json(&fleet.servers[i].api_url(&format!("/api/v1/configurations/{CONFIG}"))).await;
    c["rollout"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_admitted_fleet_wide_and_a_halt_holds_every_replica() {
    let fleet = Fleet::start("replicas_fleet_rollouts", 3).await;
    // Agent i connects to replica i % 3; agents 0 and 1 (the first batch) fail a config with
    // the marker, the others apply anything.
    let agents: Vec<AgentHandle> = (0..8)
        .flat_map(|i| {
            start_agents_with(1, &fleet.servers[i % 3].ws_url(), move |_| {
                let mut opts = linux_production(&format!("fleet-rollout-{i:02}"));
                opts.instance_uid = Some(fixed_uid(i));
                opts.policy = if i < 2 {
                    ApplyPolicy::FailOnMarker(DEFAULT_FAIL_MARKER.into())
                } else {
                    ApplyPolicy::Apply
                };
                opts
            })
        })
        .collect();
    let first = fleet.fixture.expected_hashes()[CONFIG];
    wait_all_applied(&agents, first, WAIT, "the first revision, on every replica").await;
    let leader = fleet.leader(&[0, 1, 2]).await;

    // A commit the first batch cannot apply.
    fleet.fixture.edit(
        "processors/env-production.yaml",
        "team: platform",
        &format!("team: {DEFAULT_FAIL_MARKER}"),
    );
    let sha = fleet
        .fixture
        .commit_all("a change the first batch cannot apply");
    fleet.fixture.push(false);
    fleet.webhook((leader + 1) % 3).await;
    let failing = fleet.fixture.expected_hashes()[CONFIG];
    assert_ne!(first, failing);

    // Halted fleet-wide, and every replica shows the one rollout over all eight agents.
    for i in 0..3 {
        eventually(
            WAIT,
            "every replica shows the fleet's rollout halted",
            async || {
                let r = rollout_on(&fleet, i).await;
                (r["phase"]["phase"] == "halted" && r["total"] == 8 && r["failed"] == 2)
                    .then_some(())
                    .ok_or(format!("replica {i}: {r}"))
            },
        )
        .await;
    }
    // Give a replica that admits on its own every chance to show it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        received_count(&agents[2..], failing),
        0,
        "nobody past the first batch, on any replica, got the failing config"
    );

    // Resume on a follower: relayed to the leader, the rest of the fleet gets the config.
    let follower = (leader + 2) % 3;
    let base = format!("http://{}", fleet.servers[follower].api);
    let o = gitamp_async()
        .args(["resume", CONFIG, "--server", &base])
        .output()
        .await
        .expect("gitamp resume");
    assert_eq!(code(&o), 0, "{}", explain(&o));
    assert!(stdout(&o).contains("resumed"), "{}", explain(&o));
    wait_all_applied(
        &agents[2..],
        failing,
        WAIT,
        "the agents after the halted batch, on every replica, apply the resumed rollout",
    )
    .await;
    for i in 0..3 {
        eventually(
            WAIT,
            "every replica shows the rollout complete",
            async || {
                let r = rollout_on(&fleet, i).await;
                (r["phase"]["phase"] == "complete" && r["excused"] == 2 && r["total"] == 8)
                    .then_some(())
                    .ok_or(format!("replica {i}: {r}"))
            },
        )
        .await;
    }
    // The commit's convergence is the fleet's on every replica (the leader's figures): six
    // applied, the two excused agents rolled back.
    for i in 0..3 {
        let url = fleet.servers[i].api_url(&format!("/api/v1/revisions/{sha}"));
        eventually(
            WAIT,
            "every replica shows the fleet's convergence",
            async || {
                let c = get_json(&url).await["convergence"].clone();
                (c["targeted"] == 8 && c["applied"] == 6 && c["rolled_back"] == 2)
                    .then_some(())
                    .ok_or(format!("replica {i}: {c}"))
            },
        )
        .await;
    }
    assert_eq!(redundant(&agents), 0, "redundant pushes");
    stop_all(&agents).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_notices_is_one_read_not_one_per_notice() {
    let fleet = Fleet::start("replicas_notice_burst", 2).await;
    let leader = fleet.leader(&[0, 1]).await;
    let steps = async || {
        support::server::metric(
            &fleet.servers[leader],
            "gitamp_cluster_rollout_step_seconds_count",
        )
        .await
    };
    // Idle: one read per recheck at most.
    eventually(WAIT, "the leader's first steps", async || {
        (steps().await >= 1.0).then_some(())
    })
    .await;
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&fleet.url)
        .await
        .expect("connect");
    // 200 notices, as 200 replicas' batches would send them, in one transaction each.
    for _ in 0..200 {
        sqlx::query("SELECT pg_notify('gitamp_agents', '')")
            .execute(&mut db)
            .await
            .expect("notify");
    }
    let before = steps().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let taken = steps().await - before;
    // One read per notice would be ~30 in 3 s (a 100 ms gather each); the burst is one or
    // two reads, and the 5 s recheck may add one.
    assert!(
        taken <= 4.0,
        "the leader read {taken} times in 3 s after one burst of notices"
    );
}

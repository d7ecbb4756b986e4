//! An agent-version upgrade is admitted fleet-wide across replicas, like a config rollout (the
//! private PostgreSQL cluster of `scripts/postgres-env.sh`, real `gitamp serve` processes,
//! opamp-go agents whose packages syncer downloads the offered file):
//!
//! - four agents over two replicas pin a version whose file arrives corrupted, in batches of 25%
//!   with one failure tolerated: the fleet's first batch (one agent) fails, the second (one more)
//!   fails and the upgrade halts on both replicas. Two agents were offered the version, on
//!   whichever replica; the other two never were. (Replicas stepping their own agents' upgrade
//!   each admit a first batch of their own, and each tolerates one failure: all four would be
//!   offered it.)
//! - every replica shows the one upgrade rollout over the four agents, halted; the halt is one
//!   event, from the leader alone;
//! - each replica's agent list shows the upgrade status of the agents the other one holds.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::opamp_go::GoAgent;
use support::packages::{corrupted_version, package_server};
use support::replicas::Fleet;
use support::{agents, eventually, get_json};

const WAIT: Duration = Duration::from_secs(90);
const CONFIG: &str = "linux-production";

fn field(list: &[Value], uid: &str, key: &str) -> String {
    list.iter()
        .find(|a| a["uid"].as_str() == Some(uid))
        .and_then(|a| a[key].as_str())
        .unwrap_or("-")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_batch_is_admitted_fleet_wide_and_its_halt_holds_every_replica() {
    let files = package_server().await;
    let fleet = Fleet::start("replicas_fleet_upgrades", 2).await;
    // Agent i connects to replica i % 2.
    let go: Vec<(usize, GoAgent)> = (0..4)
        .map(|i| {
            let host = format!("upgrade-{i}");
            let labels = [
                ("service.name", "checkout"),
                ("deployment.environment", "production"),
                ("os.type", "linux"),
                ("host.arch", "amd64"),
                ("host.name", host.as_str()),
            ];
            let agent = GoAgent::start(
                &fleet.servers[i % 2].ws_url(),
                &labels,
                &["--accepts-packages"],
            );
            (i % 2, agent)
        })
        .collect();
    let upgrade_status = async |replica: usize, agent: &GoAgent| {
        field(
            &agents(&fleet.servers[replica]).await,
            &agent.uid,
            "upgrade_status",
        )
    };
    eventually(WAIT, "every agent synced on its replica", async || {
        for (replica, agent) in &go {
            let list = agents(&fleet.servers[*replica]).await;
            let status = field(&list, &agent.uid, "status");
            if status != "synced" {
                return Err(format!("{} on replica {replica}: {status}", agent.uid));
            }
        }
        Ok(())
    })
    .await;
    let leader = fleet.leader(&[0, 1]).await;

    // A version whose file arrives corrupted, pinned by the agents' configuration.
    fleet
        .fixture
        .write("versions/collector-2.yaml", &corrupted_version(&files));
    let path = format!("configurations/{CONFIG}.yaml");
    let text = fleet.fixture.read(&path);
    fleet.fixture.write(
        &path,
        &text.replace("  rollout:", "  agentVersion: collector-2\n  rollout:"),
    );
    fleet.fixture.commit_all("pin collector 2.0.0");
    fleet.fixture.push(false);
    fleet.webhook(leader).await;

    for i in 0..2 {
        eventually(
            WAIT,
            "every replica shows the fleet's upgrade halted",
            async || {
                let c = get_json(
                    &fleet.servers[i].api_url(&format!("/api/v1/configurations/{CONFIG}")),
                )
                .await;
                let u = &c["upgrade"];
                (u["phase"]["phase"] == "halted" && u["total"] == 4 && u["failed"] == 2)
                    .then_some(())
                    .ok_or(format!("replica {i}: {u}"))
            },
        )
        .await;
    }
    // Give a replica that admits on its own every chance to show it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let offered = |a: &GoAgent| {
        a.events_of("packages_offered")
            .iter()
            .any(|e| e["packages"]["collector"] == "2.0.0")
    };
    let mut statuses = Vec::new();
    for (replica, agent) in &go {
        statuses.push((upgrade_status(*replica, agent).await, offered(agent)));
    }
    let failed = statuses
        .iter()
        .filter(|(s, offered)| s == "upgrade-failed" && *offered)
        .count();
    let waiting = statuses
        .iter()
        .filter(|(s, offered)| s == "pending" && !*offered)
        .count();
    assert_eq!(
        (failed, waiting),
        (2, 2),
        "two batches of one failed, the other two were never offered 2.0.0: {statuses:?}"
    );
    // The other replica lists them the same, from the package facts in their rows.
    eventually(
        WAIT,
        "each replica lists the other's agents' upgrades",
        async || {
            for ((replica, agent), (held, _)) in go.iter().zip(&statuses) {
                let there = upgrade_status(1 - replica, agent).await;
                if &there != held {
                    return Err(format!(
                        "{}: {held} on its replica, {there} on the other",
                        agent.uid
                    ));
                }
            }
            Ok(())
        },
    )
    .await;

    // The halt is one event, from the leader alone (events about the whole fleet are the
    // leader's to store and notify).
    let halts = async |i: usize| {
        let page =
            get_json(&fleet.servers[i].api_url("/api/v1/events?kind=rollout-halted&limit=100"))
                .await;
        let count = page["items"].as_array().map_or(0, |items| {
            items
                .iter()
                .filter(|e| {
                    e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("upgrade to agent version 2.0.0"))
                })
                .count()
        });
        (count, page)
    };
    eventually(
        WAIT,
        "the upgrade's halt event on the leader",
        async || match halts(leader).await {
            (0, page) => Err(format!("{page}")),
            (n, _) => Ok(n),
        },
    )
    .await;
    for i in 0..2 {
        let (count, page) = halts(i).await;
        let want = usize::from(i == leader);
        assert_eq!(count, want, "replica {i} (leader {leader}): {page}");
    }
}

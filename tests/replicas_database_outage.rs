//! Replicas while PostgreSQL is down, then back (alone in its binary: it stops the private
//! cluster every other test shares):
//!
//! - the replicas keep serving their agents from memory (connected, their config kept);
//! - a commit made meanwhile is served by none of them: the database does not back it;
//! - once the database is back they reconnect, a leader takes the commit, every agent applies
//!   it with no redundant push, and the database holds every agent's acknowledged state;
//! - a replica the leader retired while it was cut off (its row gone, its agents marked
//!   disconnected) writes its agents' records again on its next heartbeat.

mod support;

use std::time::Duration;

use gitamp_opamp::agent::AgentHandle;
use support::agents::{received_count, redundant, stop_all};
use support::postgres::cluster;
use support::replicas::Fleet;
use support::{eventually, get_json, start_agents, wait_all_applied};

const WAIT: Duration = Duration::from_secs(90);
const CONFIG: &str = "linux-production";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serve_on_without_the_database_push_nothing_it_does_not_back_and_recover() {
    let fleet = Fleet::start("replicas_database_outage", 2).await;
    let agents: Vec<AgentHandle> = (0..2)
        .flat_map(|i| start_agents(3, &format!("outage{i}"), &fleet.servers[i].ws_url()))
        .collect();
    let first = fleet.fixture.expected_hashes()[CONFIG];
    wait_all_applied(&agents, first, WAIT, "the first revision").await;
    let leader = fleet.leader(&[0, 1]).await;
    let served = fleet.served(leader).await;

    cluster("stop");
    // Both replicas notice: the leader loses its lock's connection and steps down.
    let url = fleet.servers[leader].api_url("/api/v1/status");
    eventually(
        WAIT,
        "the leader steps down without its database",
        async || {
            let status = get_json(&url).await;
            (status["cluster"]["leader"] == false).then_some(())
        },
    )
    .await;

    // A commit while the database is down, announced to both replicas.
    fleet.fixture.set_team("during-outage");
    let sha = fleet
        .fixture
        .commit_all("pushed while the database is down");
    fleet.fixture.push(false);
    for i in 0..2 {
        fleet.webhook(i).await;
    }
    let second = fleet.fixture.expected_hashes()[CONFIG];
    // Long enough for a poll, a judgement and a push, had any replica been willing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for i in 0..2 {
        assert_eq!(fleet.served(i).await, served, "replica {i} serves on");
    }
    assert_eq!(
        received_count(&agents, second),
        0,
        "a config the database does not back was pushed"
    );
    for a in &agents {
        assert!(
            a.state().connected,
            "an agent lost its replica during the outage"
        );
        assert!(support::agents::has_applied(a, first));
    }

    cluster("start");
    wait_all_applied(
        &agents,
        second,
        WAIT,
        "the commit, once the database is back",
    )
    .await;
    for i in 0..2 {
        assert_eq!(
            fleet.served(i).await.as_deref(),
            Some(sha.as_str()),
            "replica {i}"
        );
    }
    assert_eq!(redundant(&agents), 0, "redundant pushes");
    // The agents' acknowledged state is in the database (each row reports the new hash).
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&fleet.url)
        .await
        .expect("connect");
    let want = second.to_hex();
    let all_stored = async |db: &mut sqlx::PgConnection, what: &str| {
        eventually(WAIT, what, async || {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM agents WHERE reported_hash = $1 AND connected \
                 AND replica IS NOT NULL",
            )
            .bind(&want)
            .fetch_one(&mut *db)
            .await
            .map_err(|e| e.to_string())?;
            (n == 6).then_some(()).ok_or(format!("{n} of 6 rows"))
        })
        .await
    };
    all_stored(&mut db, "every agent's APPLIED report stored").await;
    // Every row was stale after the outage, and no replica was gone: none was retired.
    for (i, server) in fleet.servers.iter().enumerate() {
        let logs = server.logs();
        assert!(
            !logs.contains("Retired silent replicas"),
            "replica {i} retired a replica that was there all along"
        );
    }

    // What the leader does to a replica silent past `dead_after` while its agents stay: the
    // replica's row goes and its agents are marked disconnected. The replica is not gone.
    let follower = 1 - fleet.leader(&[0, 1]).await;
    let id =
        get_json(&fleet.servers[follower].api_url("/api/v1/status")).await["cluster"]["replica"]
            .as_str()
            .expect("the replica's id")
            .to_string();
    sqlx::query("DELETE FROM replicas WHERE id = $1")
        .bind(&id)
        .execute(&mut db)
        .await
        .expect("retire the follower");
    let cut: u64 =
        sqlx::query("UPDATE agents SET connected = FALSE, replica = NULL WHERE replica = $1")
            .bind(&id)
            .execute(&mut db)
            .await
            .expect("disconnect its agents")
            .rows_affected();
    assert!(cut > 0, "the follower held none of the agents");
    all_stored(&mut db, "the retired replica's agents written again").await;
    stop_all(&agents).await;
}

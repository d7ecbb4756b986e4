//! The whole fleet from any replica (README, "Operating several servers"): three `gitamp serve`
//! processes on the private PostgreSQL cluster, simulated agents connected to each directly,
//! then every replica's
//!
//! - `GET /api/v1/agents` lists every agent with the replica holding it (none for one that left),
//!   its status computed by the reading replica, and filters (`status`, `q`, `configuration`,
//!   `selector`, `sort`, paging) across replicas;
//! - `GET /api/v1/agents/{id}` answers for an agent another replica holds;
//! - `/metrics`, `/api/v1/status` and `gitamp status` count the fleet per status;
//! - `gitamp agents --server` shows them all with a REPLICA column;
//! - and with the database refusing connections (this test's database only), the list answers
//!   with the asked replica's agents and says so (`gitamp-fleet: replica`).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gitamp_opamp::agent::{AgentHandle, AgentOptions, ApplyPolicy};
use support::agents::{linux_production, start_agents_with, stop_all, uid_of};
use support::replicas::Fleet;
use support::{eventually, get_json, wait_all_applied};

const WAIT: Duration = Duration::from_secs(60);
const DATABASE: &str = "replicas_fleet_list";

fn staging(host: &str) -> AgentOptions {
    AgentOptions::collector("checkout", host, "staging").label("os.type", "linux")
}

/// A production Windows collector that fails every config (its own rollout, so the others'
/// are not halted by it).
fn failing_windows(host: &str) -> AgentOptions {
    let mut opts =
        AgentOptions::collector("checkout", host, "production").label("os.type", "windows");
    opts.policy = ApplyPolicy::Fail("boom: cannot bind :4317".into());
    opts
}

/// GET with the response's `gitamp-fleet` header.
async fn get_with_fleet(url: &str) -> (Option<String>, serde_json::Value) {
    let resp = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    let fleet = resp
        .headers()
        .get("gitamp-fleet")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.json().await.expect("JSON");
    (fleet, body)
}

/// uid -> (status, replica) of a page.
fn by_uid(page: &serde_json::Value) -> BTreeMap<String, (String, Option<String>)> {
    page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["uid"].as_str().unwrap_or_default().to_string(),
                (
                    a["status"].as_str().unwrap_or_default().to_string(),
                    a["replica"].as_str().map(str::to_string),
                ),
            )
        })
        .collect()
}

fn uids(page: &serde_json::Value) -> Vec<String> {
    by_uid(page).into_keys().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_lists_counts_and_describes_the_whole_fleet() {
    let fleet = Fleet::start(DATABASE, 3).await;
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for s in &fleet.servers {
            let status = get_json(&s.api_url("/api/v1/status")).await;
            ids.push(
                status["cluster"]["replica"]
                    .as_str()
                    .expect("a replica id")
                    .to_string(),
            );
        }
        ids
    };
    // Replica 0: two production Linux agents; 1: two more and a failing Windows one; 2: two
    // staging agents and one that leaves.
    let r0 = start_agents_with(2, &fleet.servers[0].ws_url(), |i| {
        linux_production(&format!("r0-{i:02}"))
    });
    let r1 = start_agents_with(2, &fleet.servers[1].ws_url(), |i| {
        linux_production(&format!("r1-{i:02}"))
    });
    let win = start_agents_with(1, &fleet.servers[1].ws_url(), |_| failing_windows("r1-win"));
    let stage = start_agents_with(2, &fleet.servers[2].ws_url(), |i| {
        staging(&format!("r2-stage-{i:02}"))
    });
    let gone = start_agents_with(1, &fleet.servers[2].ws_url(), |_| {
        linux_production("r2-gone")
    });
    let hashes = fleet.fixture.expected_hashes();
    let linux: Vec<AgentHandle> = r0.iter().chain(&r1).chain(&gone).cloned().collect();
    wait_all_applied(&linux, hashes["linux-production"], WAIT, "linux agents").await;
    wait_all_applied(&stage, hashes["staging"], WAIT, "staging agents").await;
    stop_all(&gone).await;

    // What each agent's entry must say, on every replica.
    let mut expected: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    for (agents, replica, status) in [
        (&r0, Some(0), "synced"),
        (&r1, Some(1), "synced"),
        (&win, Some(1), "failed"),
        (&stage, Some(2), "synced"),
        (&gone, None, "disconnected"),
    ] {
        for a in agents.iter() {
            expected.insert(
                uid_of(a),
                (status.to_string(), replica.map(|i: usize| ids[i].clone())),
            );
        }
    }
    for (i, server) in fleet.servers.iter().enumerate() {
        let url = server.api_url("/api/v1/agents?limit=1000");
        let started = Instant::now();
        eventually(WAIT, "the whole fleet, each with its replica", async || {
            let (header, page) = get_with_fleet(&url).await;
            let got = by_uid(&page);
            (header.as_deref() == Some("whole") && got == expected && page["total"] == 8)
                .then_some(())
                .ok_or(format!("replica {i} ({header:?}): {got:?}"))
        })
        .await;
        println!(
            "replica {i} listed the whole fleet {:.2} s after the last agent left",
            started.elapsed().as_secs_f64()
        );
    }

    let win_uid = uid_of(&win[0]);
    let stage_uids: Vec<String> = stage.iter().map(uid_of).collect();
    let r1_uids: Vec<String> = r1.iter().chain(&win).map(uid_of).collect();
    for server in &fleet.servers {
        let list = |query: &str| server.api_url(&format!("/api/v1/agents?{query}"));
        // Filters by what the plan decides, across replicas.
        let failed = get_json(&list("status=failed")).await;
        assert_eq!(uids(&failed), vec![win_uid.clone()], "{failed}");
        let reason = failed["items"][0]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("boom"), "{failed}");
        let mut want = stage_uids.clone();
        want.sort();
        let staging_page = get_json(&list("configuration=staging")).await;
        assert_eq!(uids(&staging_page), want, "{staging_page}");
        let disconnected = get_json(&list("status=disconnected,failed")).await;
        assert_eq!(disconnected["total"], 2, "{disconnected}");
        // By what the agents reported.
        let mut want = r1_uids.clone();
        want.sort();
        let named = get_json(&list("q=R1-")).await;
        assert_eq!(uids(&named), want, "{named}");
        let windows = get_json(&list("selector=os.type%3Dwindows")).await;
        assert_eq!(uids(&windows), vec![win_uid.clone()], "{windows}");
        // Sorted and paged over the whole fleet.
        let by_host = get_json(&list("sort=-host&limit=3&offset=1")).await;
        let hosts: Vec<&str> = by_host["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["labels"]["host.name"].as_str())
            .collect();
        assert_eq!(hosts, ["r2-stage-00", "r2-gone", "r1-win"], "{by_host}");
        assert_eq!(by_host["total"], 8, "{by_host}");
    }

    // An agent another replica holds, described by replica 0: from the shared table.
    let r1_agent = uid_of(&r1[0]);
    let (header, detail) =
        get_with_fleet(&fleet.servers[0].api_url(&format!("/api/v1/agents/{r1_agent}"))).await;
    assert_eq!(header.as_deref(), Some("whole"));
    assert_eq!(detail["replica"], ids[1].as_str(), "{detail}");
    assert_eq!(detail["status"], "synced", "{detail}");
    assert_eq!(detail["configuration"], "linux-production", "{detail}");
    assert_eq!(detail["transport"], "unknown", "{detail}");
    assert_eq!(detail["connected"], true, "{detail}");
    assert_eq!(
        detail["description"]["non_identifying"]["host.name"], "r1-00",
        "{detail}"
    );
    assert!(detail["effective_config"].is_null(), "{detail}");
    assert!(detail["desired_config"].is_string(), "{detail}");
    // Its health as it changes (the leader holds a batch for an unhealthy agent, from this
    // row), not as first described.
    assert_eq!(detail["health"]["healthy"], true, "{detail}");
    r1[0].set_healthy(false);
    let url = fleet.servers[0].api_url(&format!("/api/v1/agents/{r1_agent}"));
    eventually(WAIT, "replica 0 sees the agent unhealthy", async || {
        let (_, d) = get_with_fleet(&url).await;
        (d["health"]["healthy"] == false)
            .then_some(())
            .ok_or(d["health"].to_string())
    })
    .await;
    r1[0].set_healthy(true);

    // The same agent from its own replica: held here, with what only it knows.
    let own = get_json(&fleet.servers[1].api_url(&format!("/api/v1/agents/{r1_agent}"))).await;
    assert_eq!(own["replica"], ids[1].as_str(), "{own}");
    assert_eq!(own["transport"], "ws", "{own}");

    // /metrics of replica 2 counts the whole fleet; its own gauge keeps its own agents.
    let expect_counts = [("synced", 6.0), ("failed", 1.0), ("disconnected", 1.0)];
    eventually(WAIT, "the fleet's statuses in /metrics", async || {
        let text = support::scrape(&fleet.servers[2]).await;
        let got: Vec<(&str, f64)> = expect_counts
            .iter()
            .map(|(status, _)| {
                let n = support::server::sample(
                    &text,
                    "gitamp_cluster_fleet_agents_by_status",
                    &[("status", status)],
                )
                .unwrap_or(-1.0);
                (*status, n)
            })
            .collect();
        (got == expect_counts)
            .then_some(())
            .ok_or(format!("{got:?}"))
    })
    .await;
    let text = support::scrape(&fleet.servers[2]).await;
    assert_eq!(
        support::server::sample(&text, "gitamp_agents", &[("status", "synced")]),
        Some(2.0),
        "replica 2's own synced agents"
    );

    // So do its status and `gitamp status`.
    let status = get_json(&fleet.servers[2].api_url("/api/v1/status")).await;
    let by_status = &status["cluster"]["fleet_by_status"];
    assert_eq!(
        (
            &by_status["synced"],
            &by_status["failed"],
            &by_status["disconnected"]
        ),
        (&6.into(), &1.into(), &1.into()),
        "{status}"
    );
    let api = fleet.servers[2].api_url("");
    let out = support::cli::gitamp(&["status", "--server", api.trim_end_matches('/')]);
    let text = support::cli::stdout(&out);
    assert!(
        text.contains("\n  disconnected 1, failed 1, synced 6\n"),
        "{}",
        support::cli::explain(&out)
    );

    // `gitamp agents` against one replica shows them all, with the replica holding each.
    let api = fleet.servers[0].api_url("");
    let out = support::cli::gitamp(&[
        "agents",
        "--server",
        api.trim_end_matches('/'),
        "-o",
        "wide",
    ]);
    let text = support::cli::stdout(&out);
    assert_eq!(
        support::cli::code(&out),
        0,
        "{}",
        support::cli::explain(&out)
    );
    assert!(text.contains("REPLICA"), "{text}");
    assert!(text.contains("8 agent(s)"), "{text}");
    for id in &ids {
        assert!(text.contains(id.as_str()), "{id} missing:\n{text}");
    }

    // The database refuses this fleet's connections (the cluster serves on for others): the
    // list answers with the asked replica's agents and says so.
    let mut admin =
        <sqlx::PgConnection as sqlx::Connection>::connect(&support::postgres::admin_url())
            .await
            .expect("admin connection");
    for sql in [
        format!("ALTER DATABASE {DATABASE} ALLOW_CONNECTIONS false"),
        format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{DATABASE}'"
        ),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .expect("cut the fleet's database off");
    }
    let url = fleet.servers[1].api_url("/api/v1/agents?limit=1000");
    let (header, page) = eventually(WAIT, "replica 1 answers alone", async || {
        let (header, page) = get_with_fleet(&url).await;
        (header.as_deref() == Some("replica"))
            .then_some((header.clone(), page.clone()))
            .ok_or(format!("{header:?}"))
    })
    .await;
    let mut want: Vec<String> = r1_uids.clone();
    want.sort();
    assert_eq!(uids(&page), want, "{header:?} {page}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {DATABASE} ALLOW_CONNECTIONS true"
    )))
    .execute(&mut admin)
    .await
    .expect("let the fleet's database in again");
    eventually(WAIT, "the whole fleet again", async || {
        let (header, page) = get_with_fleet(&url).await;
        (header.as_deref() == Some("whole") && page["total"] == 8)
            .then_some(())
            .ok_or(format!("{header:?} {}", page["total"]))
    })
    .await;
    for agents in [&r0, &r1, &win, &stage] {
        stop_all(agents).await;
    }
}

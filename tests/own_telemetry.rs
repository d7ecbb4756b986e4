//! An agent's lifecycle beyond its config, with real peers: the heartbeat interval gitamp offers
//! (the collector's supervisor and the opamp-go client, WebSocket and HTTP, honour it), and a
//! supervised collector sending its own metrics to gitamp's OTLP receiver, where the items the
//! test pushes through the collector's pipeline show up per component, per configuration and
//! on `/metrics`.
//!
//! Waits are for observed states with generous bounds; the one timed window (the heartbeat test)
//! is there because time is the behaviour under test.

mod support;

use std::time::Duration;

use support::collector::{Supervised, find_agent};
use support::git::copy_tree;
use support::opamp_go::GoAgent;
use support::{GitOpsServer, Server, agents, eventually, get_json};

const WAIT: Duration = Duration::from_secs(120);

/// The collector fleet's repository, with the `core` configuration's collector metrics on (the
/// fixture turns them off: `service.telemetry.metrics.level: none`).
fn tree_with_own_metrics() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(
        &support::workspace().join("tests/fixtures/collector-fleet"),
        dir.path(),
    );
    let core = dir.path().join("configurations/core.yaml");
    let text = std::fs::read_to_string(&core).expect("core.yaml");
    let cut = text.find("  service:").expect("a service section to drop");
    std::fs::write(&core, &text[..cut]).expect("write core.yaml");
    dir
}

async fn detail(server: &Server, uid: &str) -> serde_json::Value {
    get_json(&server.api_url(&format!("/api/v1/agents/{uid}"))).await
}

/// A component's totals in an agent's detail, by kind and type (gitamp names components
/// `type/name`: `otlp/src-otlp-in`).
fn totals<'a>(d: &'a serde_json::Value, kind: &str, type_: &str) -> Option<&'a serde_json::Value> {
    d["throughput"]["components"]
        .as_array()?
        .iter()
        .find(|c| {
            c["kind"] == kind
                && c["id"]
                    .as_str()
                    .is_some_and(|id| id.split('/').next() == Some(type_))
        })
        .map(|c| &c["totals"])
}

/// `n` log records to the collector's OTLP/HTTP receiver, in one request.
async fn send_logs(port: u16, n: usize) {
    let records: Vec<_> = (0..n)
        .map(|i| serde_json::json!({"body": {"stringValue": format!("record {i}")}}))
        .collect();
    let body = serde_json::json!({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]});
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/logs"))
        .json(&body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the collector's OTLP receiver answers");
    assert!(r.status().is_success(), "{}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervised_collector_reports_the_items_its_pipeline_handles() {
    let tree = tree_with_own_metrics();
    let gitops = GitOpsServer::start(tree.path().to_str().expect("utf8"), &["--heartbeat", "5"]);
    let server = &gitops.server;
    let core = gitops.fixture.expected_hashes()["core"];
    let c = Supervised::start_reporting_own_metrics(
        &server.ws_url(),
        "own-a",
        &[("fleet.role", "core")],
    );
    let uid = eventually(WAIT, "the collector synced", async || {
        let list = agents(server).await;
        let a = find_agent(&list, "own-a")?;
        (a["status"] == "synced" && a["reported_hash"] == core.to_hex())
            .then(|| a["uid"].as_str().map(str::to_string))
            .flatten()
    })
    .await;

    // gitamp offered its own receiver, and the collector reports to it (every second; a
    // component's counters appear once items passed it).
    eventually(WAIT, "own metrics reported", async || {
        let d = detail(server, &uid).await;
        let ok = d["connection_settings"]["own_telemetry"]["kind"] == "gitamp"
            && d["telemetry_destination"] == "gitamp"
            && d["throughput"]["updated"].is_u64();
        ok.then_some(()).ok_or_else(|| format!("{d}\n{}", c.logs()))
    })
    .await;
    let effective = c.effective_file().unwrap_or_default();
    assert!(
        effective.contains("/v1/metrics") && effective.contains("periodic"),
        "the supervisor wrote the offer into the collector's telemetry:\n{effective}"
    );

    // Items the test sends through the pipeline: counted exactly, at the receiver and at the
    // exporter, within a reporting interval or two.
    const N: usize = 37;
    send_logs(c.otlp_port, 20).await;
    send_logs(c.otlp_port, N - 20).await;
    eventually(WAIT, "the items counted", async || {
        let d = detail(server, &uid).await;
        let accepted = totals(&d, "receiver", "otlp").and_then(|t| t["accepted"].as_f64());
        let sent = totals(&d, "exporter", "debug").and_then(|t| t["sent"].as_f64());
        (accepted == Some(N as f64) && sent == Some(N as f64))
            .then_some(())
            .ok_or_else(|| format!("accepted {accepted:?}, sent {sent:?}: {}", d["throughput"]))
    })
    .await;
    // A rate needs two exports of one collector process (a restart starts the sums again), so
    // it may follow the totals by an export interval.
    eventually(
        WAIT,
        "a current rate once two exports were seen",
        async || {
            let d = detail(server, &uid).await;
            let receiver = d["throughput"]["components"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["kind"] == "receiver"))
                .cloned()
                .unwrap_or_default();
            receiver["rates"]["accepted"]
                .as_f64()
                .is_some_and(|r| r >= 0.0)
                .then_some(())
                .ok_or_else(|| receiver.to_string())
        },
    )
    .await;

    // Per configuration, and the fleet's aggregates on /metrics (no per-agent series).
    let conf = get_json(&server.api_url("/api/v1/configurations/core")).await;
    assert_eq!(conf["telemetry"]["kind"], "gitamp", "{conf}");
    assert_eq!(conf["throughput"]["agents_reporting"], 1, "{conf}");
    assert_eq!(conf["throughput"]["top_agents"][0]["uid"], uid.as_str());
    let metrics = support::scrape(server).await;
    assert!(
        metrics.contains("gitamp_own_telemetry_agents 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "gitamp_own_telemetry_items_per_second{kind=\"receiver\",measure=\"accepted\"}"
        )
    );
    assert!(!metrics.contains(&uid), "no series names an agent");
    assert!(metrics.contains("gitamp_otlp_requests_total{outcome=\"accepted\"}"));
}

/// Every agent's sequence number and when it connected, by name.
async fn heartbeat_marks(server: &Server, uids: &[(&str, String)]) -> Vec<(u64, String, bool)> {
    let mut out = Vec::new();
    for (_, uid) in uids {
        let d = detail(server, uid).await;
        out.push((
            d["sequence_num"].as_u64().unwrap_or(0),
            d["connected_since"].as_str().unwrap_or("").to_string(),
            d["connected"] == true,
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_arrive_at_the_interval_gitamp_offers() {
    // Liveness at 2 s: an agent silent for 6 s is gone. Left at their own 30 s, none of these
    // agents would last; at the offered 2 s they heartbeat about 5 times in 10 s.
    let gitops = GitOpsServer::start("tests/fixtures/collector-fleet", &["--heartbeat", "2"]);
    let server = &gitops.server;
    let sup = Supervised::start(&server.ws_url(), "hb-sup", &[("fleet.role", "core")]);
    let go_ws = GoAgent::start(
        &server.ws_url(),
        &[("host.name", "hb-go-ws"), ("fleet.role", "core")],
        &["--poll-interval", "30s"],
    );
    let go_http = GoAgent::start(
        &server.http_url(),
        &[("host.name", "hb-go-http"), ("fleet.role", "core")],
        &["--poll-interval", "30s"],
    );
    let sup_uid = eventually(WAIT, "the supervisor offered 2 s", async || {
        let list = agents(server).await;
        let a = find_agent(&list, "hb-sup")?;
        (a["heartbeat_interval_seconds"] == 2)
            .then(|| a["uid"].as_str().map(str::to_string))
            .flatten()
    })
    .await;
    let uids = [
        ("supervisor", sup_uid),
        ("opamp-go ws", go_ws.uid.clone()),
        ("opamp-go http", go_http.uid.clone()),
    ];
    // Offered, and done with their configs (synced and healthy: from here on they only
    // heartbeat).
    eventually(WAIT, "every agent offered 2 s and synced", async || {
        for (name, uid) in &uids {
            let d = detail(server, uid).await;
            if d["heartbeat_interval_seconds"] != 2
                || d["connected"] != true
                || d["status"] != "synced"
                || d["healthy"] != true
            {
                return Err(format!("{name}: {d}"));
            }
        }
        Ok(())
    })
    .await;
    let before = heartbeat_marks(server, &uids).await;
    // Time is the behaviour here: 10 s, longer than the 6 s gitamp allows a silent agent.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = heartbeat_marks(server, &uids).await;
    for (((name, _), b), a) in uids.iter().zip(&before).zip(&after) {
        assert!(a.2, "{name} still connected");
        assert_eq!(
            a.1, b.1,
            "{name} never dropped in between (same connected_since)"
        );
        let beats = a.0.saturating_sub(b.0);
        assert!(
            (3..=10).contains(&beats),
            "{name}: {beats} messages in 10 s, expected about 5 at 2 s\nsupervisor:\n{}\ngo ws:\n{}",
            sup.logs(),
            go_ws.stderr()
        );
    }

    // The CLI shows the interval offered and where each agent's own telemetry goes.
    let api = format!("http://{}", server.api);
    let out = tokio::task::spawn_blocking(move || {
        support::gitamp(&["agents", "-o", "wide", "--server", &api])
    })
    .await
    .expect("gitamp agents");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("HEARTBEAT") && table.contains("TELEMETRY"),
        "{table}"
    );
    let hb_sup_row = table
        .lines()
        .find(|l| l.contains("hb-sup"))
        .unwrap_or_default();
    assert!(
        hb_sup_row.contains(" 2s ") && hb_sup_row.contains("gitamp"),
        "{table}"
    );
}

/// The supervisor `offer-sup`, offered a 5 s heartbeat, connected and synced, once it has
/// connected `n` times; then, 3 s later, still `n` times (an offer goes with the first reply of a
/// connection and the supervisor reconnects on it at once, while synced comes a round trip
/// later: the wait covers a slow reconnect too).
async fn connections_settle_at(server: &support::Server, sup: &Supervised, n: usize, why: &str) {
    eventually(WAIT, why, async || {
        let list = agents(server).await;
        let ready = find_agent(&list, "offer-sup").is_some_and(|a| {
            a["heartbeat_interval_seconds"] == 5
                && a["status"] == "synced"
                && a["connected"] == true
        });
        (ready && sup.connections() >= n)
            .then_some(())
            .ok_or(format!("{} connections", sup.connections()))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sup.connections(), n, "{why}:\n{}", sup.logs());
}

/// A supervisor that accepts gitamp's `opamp` offers replaces its connection on each one. It
/// reconnects once on the first offer; after a gitamp restart it reconnects because the server
/// went away, and gitamp, which stored what it offered, does not offer the same again (which
/// would make every such supervisor reconnect once more). A restarted supervisor, which forgot
/// its interval, is offered it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_that_takes_offers_is_not_made_to_reconnect_after_a_gitamp_restart() {
    let mut gitops = GitOpsServer::start("tests/fixtures/collector-fleet", &["--heartbeat", "5"]);
    let mut sup = Supervised::start_accepting_connection_settings(
        &gitops.server.ws_url(),
        "offer-sup",
        &[("fleet.role", "core")],
    );
    // Its first connection, and the one it made on the offer.
    connections_settle_at(
        &gitops.server,
        &sup,
        2,
        "its start and the reconnect on the offer",
    )
    .await;
    let offered = std::time::Instant::now();

    gitops.server.stop_gracefully();
    gitops.restart();
    connections_settle_at(
        &gitops.server,
        &sup,
        3,
        "back after the gitamp restart, and not offered the same settings again",
    )
    .await;

    // A restarted supervisor forgot the interval (it starts at 30 s): offered it again, it
    // reconnects once on the offer. A new session within 10 s of an offer is taken to be that
    // reconnect (it looks like a new process), so the restart comes later.
    let since = offered.elapsed();
    tokio::time::sleep(Duration::from_secs(11).saturating_sub(since)).await;
    sup.restart();
    connections_settle_at(
        &gitops.server,
        &sup,
        5,
        "the supervisor's restart and its reconnect on the offer, and no more",
    )
    .await;
}

//! Agent upgrades declared in Git, end to end with the opamp-go client library: `gitamp serve`
//! on a real Git remote offers an `AgentVersion` with PackagesAvailable, the library downloads
//! the file from an HTTP server this test runs, its packages syncer reports PackageStatuses,
//! and the status API, `gitamp agents -o wide` and the events show the versions. Then a
//! corrupted file (the driver's store refuses bytes whose SHA-256 is not the offered
//! content_hash; the library reports InstallFailed with that error), a package server that is
//! down (the library's download error), and a PackageStatuses report about an offer gitamp
//! never made (ignored with an event, nothing recorded).

mod support;

use std::time::Duration;

use bytes::Bytes;
use gitamp_opamp::proto;
use support::cli::gitamp_async;
use support::opamp_go::GoAgent;
use support::packages::{
    GOOD, NEWER, agent_version, corrupted_version, down_url, package_server, sha256_hex,
};
use support::wire::{kv, post_opamp};
use support::{GitOpsServer, agents, eventually, get_json};

const FIXTURE: &str = "tests/fixtures/collector-fleet";
const WAIT: Duration = Duration::from_secs(90);
fn item<'a>(list: &'a [serde_json::Value], uid: &str) -> Option<&'a serde_json::Value> {
    list.iter().find(|a| a["uid"].as_str() == Some(uid))
}

fn field(list: &[serde_json::Value], uid: &str, key: &str) -> String {
    item(list, uid)
        .and_then(|a| a[key].as_str())
        .unwrap_or("-")
        .to_string()
}

async fn events_of(gitops: &GitOpsServer, kind: &str) -> Vec<serde_json::Value> {
    let page = get_json(
        &gitops
            .server
            .api_url(&format!("/api/v1/events?kind={kind}&limit=500")),
    )
    .await;
    page["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_from_git_are_installed_by_opamp_go_and_failures_halt_the_upgrade() {
    let files = package_server().await;
    let mut gitops = GitOpsServer::start(FIXTURE, &[]);
    let ws = gitops.server.ws_url();
    let http = gitops.server.http_url();
    let platform = [("os.type", "linux"), ("host.arch", "amd64")];
    let with = |role: &'static str, host: &'static str| {
        let mut l = vec![("fleet.role", role), ("host.name", host)];
        l.extend(platform);
        l
    };
    let edge = [
        GoAgent::start(&ws, &with("edge", "go-edge-1"), &["--accepts-packages"]),
        GoAgent::start(&ws, &with("edge", "go-edge-2"), &["--accepts-packages"]),
    ];
    let core = GoAgent::start(
        &http,
        &with("core", "go-core-http"),
        &["--accepts-packages"],
    );
    let all: Vec<&GoAgent> = edge.iter().chain([&core]).collect();
    eventually(WAIT, "every agent synced on its config", async || {
        let list = agents(&gitops.server).await;
        all.iter()
            .all(|a| field(&list, &a.uid, "status") == "synced")
            .then_some(())
    })
    .await;

    // 1. A version declared and pinned by both configurations: every agent (WebSocket and
    //    HTTP) downloads it, the library reports it installed, the API shows it.
    let good_url = format!("{files}/good");
    gitops.fixture.write(
        "versions/collector-1.yaml",
        &agent_version("collector-1", "1.0.0", &good_url, &sha256_hex(GOOD)),
    );
    for c in ["edge", "core"] {
        let path = format!("configurations/{c}.yaml");
        let text = gitops.fixture.read(&path);
        gitops
            .fixture
            .write(&path, &format!("{text}  agentVersion: collector-1\n"));
    }
    gitops.commit_and_announce("pin collector 1.0.0").await;
    let list = eventually(WAIT, "every agent upgraded to 1.0.0", async || {
        let list = agents(&gitops.server).await;
        if all.iter().all(|a| {
            field(&list, &a.uid, "upgrade_status") == "upgraded"
                && field(&list, &a.uid, "installed_version") == "1.0.0"
        }) {
            return Ok(list);
        }
        Err(all
            .iter()
            .map(|a| {
                format!(
                    "{} {}/{}/{}: {:?}",
                    a.uid,
                    field(&list, &a.uid, "upgrade_status"),
                    field(&list, &a.uid, "installed_version"),
                    field(&list, &a.uid, "upgrade_reason"),
                    a.events()
                        .iter()
                        .filter(|e| e["event"] != "status" && e["event"] != "remote_config")
                        .collect::<Vec<_>>()
                )
            })
            .collect::<Vec<_>>()
            .join("\n"))
    })
    .await;
    for a in &all {
        assert_eq!(field(&list, &a.uid, "desired_version"), "1.0.0");
        let file = a.events_of("package_installed_file");
        assert_eq!(file.len(), 1, "one download each: {}", a.stderr());
        assert_eq!(file[0]["sha256"].as_str(), Some(sha256_hex(GOOD).as_str()));
        assert!(
            a.events_of("package_status").iter().any(|e| e["status"]
                == "PackageStatusEnum_Installed"
                && e["has_version"] == "1.0.0"),
            "{:?}",
            a.events_of("package_status")
        );
    }
    let wide = gitamp_async()
        .args([
            "agents",
            "-o",
            "wide",
            "--server",
            &gitops.server.api_url(""),
        ])
        .output()
        .await
        .expect("gitamp agents runs");
    let wide = String::from_utf8_lossy(&wide.stdout);
    assert!(
        wide.contains("INSTALLED") && wide.contains("DESIRED VERSION") && wide.contains("1.0.0"),
        "{wide}"
    );
    assert_eq!(events_of(&gitops, "upgraded").await.len(), 3);

    // 2. A newer version whose file arrives corrupted: the first agent of the batched edge
    //    rollout (one at a time, no failure tolerated) fails with the client's error, keeps
    //    1.0.0 and is offered it back; the rollout halts, so the other edge agent is never
    //    offered 2.0.0.
    gitops
        .fixture
        .write("versions/collector-2.yaml", &corrupted_version(&files));
    gitops.fixture.edit(
        "configurations/edge.yaml",
        "agentVersion: collector-1",
        "agentVersion: collector-2",
    );
    gitops
        .commit_and_announce("pin collector 2.0.0 on edge")
        .await;
    let (failed, list) = eventually(WAIT, "one edge agent upgrade-failed", async || {
        let list = agents(&gitops.server).await;
        let failed: Vec<usize> = (0..2)
            .filter(|i| field(&list, &edge[*i].uid, "upgrade_status") == "upgrade-failed")
            .collect();
        (failed.len() == 1).then(|| (failed[0], list))
    })
    .await;
    let other = 1 - failed;
    let reason = field(&list, &edge[failed].uid, "upgrade_reason");
    assert!(
        reason.contains("content hash mismatch") && reason.contains("/newer"),
        "the client's error: {reason}"
    );
    assert_eq!(
        field(&list, &edge[failed].uid, "installed_version"),
        "1.0.0"
    );
    assert_eq!(field(&list, &edge[failed].uid, "desired_version"), "2.0.0");
    // The rollback offer (1.0.0 again) is the plan after the failure: once it reached the
    // agent, the halted rollout has been stepped, and the other agent must still wait.
    eventually(WAIT, "1.0.0 offered back to the failed agent", async || {
        (edge[failed]
            .events_of("packages_offered")
            .iter()
            .filter(|e| e["packages"]["collector"] == "1.0.0")
            .count()
            == 2)
            .then_some(())
    })
    .await;
    let list = agents(&gitops.server).await;
    assert_eq!(field(&list, &edge[other].uid, "upgrade_status"), "pending");
    assert_eq!(field(&list, &edge[other].uid, "installed_version"), "1.0.0");
    assert!(
        edge[other]
            .events_of("packages_offered")
            .iter()
            .all(|e| e["packages"]["collector"] == "1.0.0"),
        "the halted rollout offered 2.0.0 to a second agent"
    );
    assert_eq!(field(&list, &core.uid, "upgrade_status"), "upgraded");
    let edge_config = get_json(&gitops.server.api_url("/api/v1/configurations/edge")).await;
    assert_eq!(edge_config["agent_version"], "collector-2");
    let upgrade = edge_config["upgrade"].to_string();
    assert!(
        upgrade.contains("halted") && upgrade.contains("\"failed\":1"),
        "the upgrade rollout halts: {upgrade}"
    );
    let halted = events_of(&gitops, "rollout-halted").await;
    assert!(
        halted.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("edge") && m.contains("agent version 2.0.0"))),
        "{halted:?}"
    );
    let failures = events_of(&gitops, "upgrade-failed").await;
    assert!(
        failures.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("content hash mismatch"))),
        "{failures:?}"
    );

    // 3. A package server that is down: the next version's first agent fails with the
    //    library's download error, nothing else moves.
    let down = down_url();
    gitops.fixture.write(
        "versions/collector-3.yaml",
        &agent_version("collector-3", "3.0.0", &down, &sha256_hex(NEWER)),
    );
    gitops.fixture.edit(
        "configurations/edge.yaml",
        "agentVersion: collector-2",
        "agentVersion: collector-3",
    );
    gitops
        .commit_and_announce("pin collector 3.0.0 on edge")
        .await;
    let list = eventually(WAIT, "one edge agent fails to download 3.0.0", async || {
        let list = agents(&gitops.server).await;
        let failed: Vec<&GoAgent> = edge
            .iter()
            .filter(|a| {
                field(&list, &a.uid, "upgrade_status") == "upgrade-failed"
                    && field(&list, &a.uid, "desired_version") == "3.0.0"
            })
            .collect();
        (failed.len() == 1).then(|| (failed[0].uid.clone(), list))
    })
    .await;
    let reason = field(&list.1, &list.0, "upgrade_reason");
    assert!(
        reason.contains("cannot download file from") && reason.contains(&down),
        "the client's error: {reason}"
    );
    for a in &all {
        assert_eq!(field(&list.1, &a.uid, "installed_version"), "1.0.0");
        assert_eq!(
            field(&list.1, &a.uid, "status"),
            "synced",
            "configs unaffected"
        );
    }

    // 4. PackageStatuses about an offer gitamp never made: ignored with an event; the agent is
    //    registered and planned as usual, and nothing of the report is recorded.
    let stranger = uuid::Uuid::new_v4();
    let msg = proto::AgentToServer {
        instance_uid: Bytes::copy_from_slice(stranger.as_bytes()),
        sequence_num: 0,
        capabilities: (proto::AgentCapabilities::ReportsStatus as u64)
            | proto::AgentCapabilities::AcceptsPackages as u64
            | proto::AgentCapabilities::ReportsPackageStatuses as u64,
        agent_description: Some(proto::AgentDescription {
            identifying_attributes: vec![kv("service.name", "stranger")],
            non_identifying_attributes: vec![
                kv("fleet.role", "core"),
                kv("os.type", "linux"),
                kv("host.arch", "amd64"),
            ],
        }),
        package_statuses: Some(proto::PackageStatuses {
            packages: [(
                "collector".to_string(),
                proto::PackageStatus {
                    name: "collector".into(),
                    agent_has_version: "9.9.9".into(),
                    server_offered_version: "9.9.9".into(),
                    server_offered_hash: Bytes::from_static(&[0x5a; 32]),
                    status: proto::PackageStatusEnum::Installed as i32,
                    ..Default::default()
                },
            )]
            .into(),
            server_provided_all_packages_hash: Bytes::from_static(&[0xa5; 32]),
            error_message: String::new(),
        }),
        ..Default::default()
    };
    let client = reqwest::Client::new();
    let (code, reply) = post_opamp(&client, &http, &[], &msg).await;
    assert_eq!(code, 200);
    assert!(reply.is_some_and(|r| r.error_response.is_none()));
    let uid = stranger.hyphenated().to_string();
    eventually(WAIT, "the unknown offer's report is ignored", async || {
        events_of(&gitops, "package-status-ignored")
            .await
            .iter()
            .any(|e| e["agent"].as_str() == Some(uid.as_str()))
            .then_some(())
    })
    .await;
    let list = eventually(WAIT, "the stranger is planned", async || {
        let list = agents(&gitops.server).await;
        (field(&list, &uid, "upgrade_status") != "-").then_some(list)
    })
    .await;
    assert_eq!(
        field(&list, &uid, "installed_version"),
        "-",
        "nothing recorded"
    );
    assert_eq!(field(&list, &uid, "desired_version"), "1.0.0");
    assert!(
        gitops
            .server
            .logs()
            .contains("PackageStatuses for an offer this server never made"),
        "a clear log line"
    );
    for a in edge.iter().chain([&core]) {
        assert!(a.events_of("fatal").is_empty(), "{}", a.stderr());
    }
    gitops.server.kill9();
}

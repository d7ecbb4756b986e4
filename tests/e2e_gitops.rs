//! The GitOps loop end to end, with real parts: a bare Git remote and a clone that commits, the
//! `gitamp` binary as a process, simulated agents over real WebSockets, and the status API.
//!
//! Timeouts here are generous upper bounds for a slow CI machine, never speed assertions.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use gitamp_core::ConfigHash;
use gitamp_opamp::agent::{AgentHandle, ApplyPolicy, DEFAULT_FAIL_MARKER};
use gitamp_opamp::proto::RemoteConfigStatuses;
use support::agents::{linux_production, nudge_plan, received_total, redundant, stop_all};
use support::{
    GitFixture, GitOpsServer, Server, eventually, get_json, metric, post_webhook, start_agents_with,
};

const WAIT: Duration = Duration::from_secs(90);

/// Production Linux agents: the example repository's `linux-production` configuration selects
/// them (batched rollout, 25% per batch, one failure tolerated); a config carrying the fail
/// marker fails.
fn start_linux_agents(n: usize, url: &str) -> Vec<AgentHandle> {
    start_agents_with(n, url, |i| {
        let mut opts = linux_production(&format!("e2e-linux-{i:02}"));
        opts.policy = ApplyPolicy::FailOnMarker(DEFAULT_FAIL_MARKER.into());
        opts
    })
}

fn applied(agent: &AgentHandle) -> Option<Bytes> {
    agent.state().applied_hash().cloned()
}

fn linux_hash(fixture: &GitFixture) -> ConfigHash {
    fixture.expected_hashes()["linux-production"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_webhook_reject_fix_forcepush_and_halted_rollout() {
    // An hour-long poll: only the webhook wakes the server in this test.
    let gitops = GitOpsServer::start("example-repo", &["--ref", "main"]);
    let (fixture, server, token) = (&gitops.fixture, &gitops.server, gitops.token.as_str());

    // 1. Agents connect and converge on the first revision.
    let agents = start_linux_agents(8, &server.ws_url());
    let first = linux_hash(fixture);
    support::wait_all_applied(
        &agents,
        first,
        WAIT,
        "every agent applies the first revision",
    )
    .await;
    // The server's view follows one plan after the agents' acknowledgments.
    eventually(WAIT, "the API lists 8 synced agents", async || {
        let synced = get_json(&server.api_url("/api/v1/agents?status=synced")).await;
        (synced["total"] == 8).then_some(())
    })
    .await;

    // 2. A commit, pushed, announced by a webhook, reaches every agent (in batches of 2).
    fixture.edit(
        "processors/env-production.yaml",
        "team: platform",
        "team: observability",
    );
    let second_sha = fixture.commit_all("tag production telemetry with the observability team");
    fixture.push(false);
    let second = linux_hash(fixture);
    assert_ne!(first, second);
    assert_eq!(post_webhook(server, token).await / 100, 2);
    support::wait_all_applied(
        &agents,
        second,
        WAIT,
        "every agent applies the second revision",
    )
    .await;
    let st = get_json(&server.api_url("/api/v1/status")).await;
    assert_eq!(st["current_revision"], second_sha.as_str(), "status: {st}");

    // A webhook with a wrong token is refused and wakes nothing.
    assert_eq!(post_webhook(server, "wrong").await, 401);

    // 3. A bad commit is rejected whole: agents keep the second revision, diagnostics shown.
    fixture.write(
        "configurations/broken.yaml",
        "apiVersion: gitamp.dev/v1\nkind: Configuration\nmetadata:\n  name: broken\nspec:\n  priority: 50\n  selector:\n    matchLabels: {team: nobody}\n  sources: [otlp-default]\n  destinations: [does-not-exist]\n",
    );
    let bad_sha = fixture.commit_all("add a configuration with a dangling destination");
    fixture.push(false);
    assert_eq!(post_webhook(server, token).await / 100, 2);
    let rejected = eventually(WAIT, "the bad revision is rejected", async || {
        let st = get_json(&server.api_url("/api/v1/status")).await;
        (st["last_rejected"]["revision"] == bad_sha.as_str()).then_some(st)
    })
    .await;
    let diagnostics = rejected["last_rejected"]["diagnostics"].to_string();
    assert!(
        diagnostics.contains("configurations/broken.yaml")
            && diagnostics.contains("does-not-exist"),
        "diagnostics name the file and the missing destination: {diagnostics}"
    );
    assert_eq!(rejected["current_revision"], second_sha.as_str());
    for a in &agents {
        assert_eq!(
            applied(a).as_deref(),
            Some(second.as_bytes()),
            "agent untouched"
        );
    }

    // 4. The fix applies.
    fixture.edit(
        "configurations/broken.yaml",
        "does-not-exist",
        "otel-gateway",
    );
    let fixed_sha = fixture.commit_all("fix the destination reference");
    fixture.push(false);
    assert_eq!(post_webhook(server, token).await / 100, 2);
    eventually(WAIT, "the fix is served", async || {
        let st = get_json(&server.api_url("/api/v1/status")).await;
        (st["current_revision"] == fixed_sha.as_str()).then_some(())
    })
    .await;

    // 5. A force-push back to the second commit is followed.
    support::git(&fixture.work(), &["reset", "-q", "--hard", &second_sha]);
    fixture.push(true);
    assert_eq!(post_webhook(server, token).await / 100, 2);
    eventually(WAIT, "the force-pushed revision is served", async || {
        let st = get_json(&server.api_url("/api/v1/status")).await;
        (st["current_revision"] == second_sha.as_str()).then_some(())
    })
    .await;
    support::wait_all_applied(&agents, second, WAIT, "agents stay on the second revision").await;

    // 6. A change that makes agents fail halts the batched rollout after the first batch:
    //    2 agents (25% of 8) fail, more than the 1 failure tolerated, the other 6 keep the
    //    second revision.
    fixture.edit(
        "processors/env-production.yaml",
        "team: observability",
        &format!("team: {DEFAULT_FAIL_MARKER}"),
    );
    fixture.commit_all("a change the agents cannot apply");
    fixture.push(false);
    let failing = linux_hash(fixture);
    assert_eq!(post_webhook(server, token).await / 100, 2);
    let halted = eventually(WAIT, "the rollout halts", async || {
        let cfgs = get_json(&server.api_url("/api/v1/configurations")).await;
        let text = cfgs.to_string();
        text.contains("halted").then_some(cfgs)
    })
    .await;
    let failed: Vec<_> = agents
        .iter()
        .filter(|a| {
            a.state()
                .saw_status(failing.as_bytes(), RemoteConfigStatuses::Failed)
        })
        .collect();
    assert_eq!(
        failed.len(),
        2,
        "only the first batch received the failing config: {halted}"
    );
    // The failed pair is rolled back (the default `onFailure`) to the second revision: the
    // status API says so, with the agents' error.
    let rolled_back = eventually(WAIT, "the failed agents are rolled back", async || {
        let list = get_json(&server.api_url("/api/v1/agents?status=rolled-back")).await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 2).then_some(items)
    })
    .await;
    for item in &rolled_back {
        let reason = item["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("rolled back to ") && reason.contains(&failing.short()),
            "{item}"
        );
        assert_eq!(
            item["last_applied"].as_str(),
            Some(second.to_hex().as_str())
        );
    }
    // A wrongly continuing rollout would push the failing config on a later plan: make the
    // server plan once more after the rollback and wait for that plan, then check nobody else
    // got it: no push since the rollback, and all 8 run the second revision (6 never left it,
    // 2 came back to it).
    let pushes = metric(server, "gitamp_config_pushes_total").await;
    nudge_plan(server, "the rollback").await;
    assert_eq!(
        metric(server, "gitamp_config_pushes_total").await,
        pushes,
        "nothing pushed after the rollback"
    );
    let on_second = agents
        .iter()
        .filter(|a| applied(a).as_deref() == Some(second.as_bytes()))
        .count();
    assert_eq!(on_second, 8, "the rest keep their previous config");
    // Every agent that received the failing config reported FAILED for it (the marker fails
    // it), so the two above are the only ones that received it; both got `second` back since.
    for a in &failed {
        let last = a.state().last_config.as_ref().map(|c| c.hash.clone());
        assert_eq!(last.as_deref(), Some(second.as_bytes()), "rolled back last");
    }
    assert_eq!(
        redundant(&agents),
        0,
        "no agent got a config it already had"
    );

    stop_all(&agents).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_rollout_then_restart_converges_without_redundant_pushes() {
    let mut gitops = GitOpsServer::start("example-repo", &[]);
    let agents = start_linux_agents(8, &gitops.server.ws_url());
    let fixture = &gitops.fixture;
    let first = linux_hash(fixture);
    support::wait_all_applied(&agents, first, WAIT, "first revision applied").await;

    fixture.edit(
        "processors/env-production.yaml",
        "team: platform",
        "team: sre",
    );
    fixture.commit_all("change");
    fixture.push(false);
    let second = linux_hash(fixture);
    assert_eq!(post_webhook(&gitops.server, &gitops.token).await / 100, 2);
    // Kill as soon as the rollout has started (the first batch got the config).
    eventually(WAIT, "the rollout starts", async || {
        (support::agents::received_count(&agents, second) > 0).then_some(())
    })
    .await;
    gitops.server.kill9();
    let before = received_total(&agents);
    assert!(before < 16, "killed mid-rollout, not after it");

    gitops.restart();
    support::wait_all_applied(
        &agents,
        second,
        WAIT,
        "every agent converges after the restart",
    )
    .await;
    assert_eq!(
        redundant(&agents),
        0,
        "no agent received a config it already had"
    );
    assert_eq!(
        received_total(&agents),
        16,
        "each agent received each config exactly once"
    );
    drop(gitops);
    stop_all(&agents).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_remote_is_retried_and_shown_while_serving_continues() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        &data.path().join("data"),
        &[
            "--repo",
            "http://127.0.0.1:1/nothing-here.git",
            "--opamp-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ],
    );
    let st = eventually(WAIT, "two failed fetches", async || {
        let st = get_json(&server.api_url("/api/v1/status")).await;
        (st["consecutive_failures"].as_u64().unwrap_or(0) >= 2).then_some(st)
    })
    .await;
    assert!(
        st["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{st}"
    );
    assert!(
        st["next_retry"].is_string() || st["next_retry"].is_number(),
        "{st}"
    );
    let health = reqwest::get(server.api_url("/healthz"))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(server.api_url("/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503, "nothing to serve yet");
}

/// The real Python OpAMP client (PyPI `opentelemetry-opamp-client`, plain HTTP) follows commits
/// through the whole loop: first revision, then a pushed change announced by a webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_agents_follow_commits() {
    use tokio::io::AsyncBufReadExt;

    let python = std::env::var_os("GITAMP_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| support::workspace().join(".venv/bin/python"));
    assert!(
        python.exists(),
        "no Python for the interop test at {}: run scripts/python-env.sh (scripts/test.sh does)",
        python.display()
    );
    let gitops = GitOpsServer::start("example-repo", &[]);
    let (fixture, server, token) = (&gitops.fixture, &gitops.server, gitops.token.as_str());
    // Staging Linux: the `staging` configuration (all at once) selects these agents. Their
    // applied configs go to a folder of the test's, removed with it (the child is killed).
    let workdir = tempfile::tempdir().expect("tempdir");
    let mut child = tokio::process::Command::new(&python)
        .arg(support::workspace().join("tests/interop/python_agent.py"))
        .args(["--endpoint", &server.http_url(), "--agents", "2"])
        .arg("--workdir")
        .arg(workdir.path())
        .args([
            "--environment",
            "staging",
            "--heartbeat",
            "0.5",
            "--duration",
            "80",
        ])
        .args(["--timeout-ms", "5000", "--name-prefix", "py-e2e"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python_agent.py starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let mut applied: BTreeMap<i64, String> = BTreeMap::new();
    let mut wait_applied =
        async |hash: ConfigHash,
               rx: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>| {
            let want = hash.to_hex();
            let deadline = tokio::time::Instant::now() + WAIT;
            while !(applied.len() == 2 && applied.values().all(|h| *h == want)) {
                let ev = tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .unwrap_or_else(|_| panic!("python agents did not apply {want}: {applied:?}"))
                    .expect("python_agent.py ended early");
                if ev["event"] == "applied" {
                    let agent = ev["agent"].as_i64().expect("agent index");
                    applied.insert(agent, ev["hash"].as_str().unwrap_or_default().to_string());
                }
                assert_ne!(
                    ev["event"], "duplicate_config",
                    "a config was pushed twice: {ev}"
                );
            }
        };
    let first = fixture.expected_hashes()["staging"];
    wait_applied(first, &mut rx).await;

    fixture.edit("processors/env-staging.yaml", "team: platform", "team: qa");
    fixture.commit_all("retag staging");
    fixture.push(false);
    let second = fixture.expected_hashes()["staging"];
    assert_ne!(first, second);
    assert_eq!(post_webhook(server, token).await / 100, 2);
    wait_applied(second, &mut rx).await;
    eventually(
        WAIT,
        "the API shows both Python agents synced",
        async || {
            let page =
                get_json(&server.api_url("/api/v1/agents?configuration=staging&status=synced"))
                    .await;
            (page["total"] == 2).then_some(())
        },
    )
    .await;
    let _ = child.kill().await;
}

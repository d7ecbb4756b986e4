//! Per-commit convergence end to end: a running server on a real Git remote with simulated
//! agents; `GET /api/v1/revisions/{revision}` says how many targeted agents applied each
//! revision and how fast, by full id and by prefix, keeps the figures of a superseded revision,
//! says `failed` for a halted rollout, and still has the figures after a `kill -9` restart.
//! `gitamp wait` exits 0 on a converged revision and 1 (with the reason) on a halted, rejected
//! or never-seen one; `gitamp history` shows the figures.

mod support;

use std::time::Duration;

use gitamp_opamp::agent::{AgentHandle, ApplyPolicy, DEFAULT_FAIL_MARKER};
use serde_json::Value;
use support::agents::{linux_production, stop_all};
use support::cli::gitamp_async;
use support::{GitOpsServer, eventually, get_json, start_agents_with, wait_all_applied};

const WAIT: Duration = Duration::from_secs(90);
const AGENTS: usize = 4;

/// `gitamp ARGS --server <the server>`: (exit code, stdout, stderr).
async fn cli(gitops: &GitOpsServer, args: &[&str]) -> (Option<i32>, String, String) {
    let out = gitamp_async()
        .args(args)
        .args(["--server", &gitops.server.api_url("")])
        .output()
        .await
        .expect("gitamp runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn convergence_until(
    gitops: &GitOpsServer,
    revision: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let url = gitops
        .server
        .api_url(&format!("/api/v1/revisions/{revision}"));
    eventually(WAIT, what, async || {
        let resp = reqwest::get(&url).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        if status.is_success() && done(&body) {
            Ok(body)
        } else {
            Err(format!("{status}: {body}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_revision_says_how_many_agents_applied_it_and_how_fast() {
    let mut gitops = GitOpsServer::start("example-repo", &[]);
    let agents: Vec<AgentHandle> = start_agents_with(AGENTS, &gitops.server.ws_url(), |i| {
        let mut opts = linux_production(&format!("conv-linux-{i:02}"));
        opts.policy = ApplyPolicy::FailOnMarker(DEFAULT_FAIL_MARKER.into());
        opts
    });
    let first_sha = support::git(&gitops.fixture.work(), &["rev-parse", "HEAD"]);
    let first = gitops.fixture.expected_hashes()["linux-production"];
    wait_all_applied(&agents, first, WAIT, "the first revision is applied").await;
    let first_view = convergence_until(&gitops, &first_sha, "the first converges", |b| {
        b["convergence"]["state"] == "converged" && b["convergence"]["applied"] == AGENTS
    })
    .await;
    let c = &first_view["convergence"];
    assert_eq!(c["targeted"], AGENTS, "{first_view}");
    assert_eq!(
        c["latency"]["samples"], AGENTS,
        "every agent was pushed: {first_view}"
    );
    let (p50, p99, max) = (
        c["latency"]["p50_ms"].as_u64().unwrap(),
        c["latency"]["p99_ms"].as_u64().unwrap(),
        c["latency"]["max_ms"].as_u64().unwrap(),
    );
    assert!(p50 <= p99 && p99 <= max, "{first_view}");

    // A prefix finds it; too short a one is refused; an unknown one is 404.
    let by_prefix = get_json(
        &gitops
            .server
            .api_url(&format!("/api/v1/revisions/{}", &first_sha[..8])),
    )
    .await;
    assert_eq!(by_prefix["revision"], first_sha.as_str());
    let short = reqwest::get(gitops.server.api_url("/api/v1/revisions/abc"))
        .await
        .unwrap();
    assert_eq!(short.status(), 400);
    let unknown = reqwest::get(gitops.server.api_url("/api/v1/revisions/0123456789"))
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    // A second revision: converges; the first keeps its figures, superseded by it.
    gitops.fixture.edit(
        "processors/env-production.yaml",
        "team: platform",
        "team: convergence",
    );
    let second_sha = gitops.commit_and_announce("a change").await;
    // `gitamp wait` right after the push: it waits for the fetch, then for every agent.
    let (code, out, err) = cli(&gitops, &["wait", &second_sha, "--timeout", "60s"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!(
            "{}: {AGENTS}/{AGENTS} agents applied",
            &second_sha[..12]
        )),
        "{out}"
    );
    let second = gitops.fixture.expected_hashes()["linux-production"];
    wait_all_applied(&agents, second, WAIT, "the second revision is applied").await;
    let second_view = convergence_until(&gitops, &second_sha, "the second converges", |b| {
        b["convergence"]["state"] == "converged"
            && b["convergence"]["latency"]["samples"].as_u64() >= Some(AGENTS as u64)
    })
    .await;
    let first_view = get_json(
        &gitops
            .server
            .api_url(&format!("/api/v1/revisions/{first_sha}")),
    )
    .await;
    assert_eq!(
        first_view["convergence"]["superseded_by"],
        second_sha.as_str(),
        "{first_view}"
    );
    assert_eq!(first_view["convergence"]["state"], "converged");

    // The figures survive a kill -9: the latencies as they were, the counts rebuilt.
    let samples = second_view["convergence"]["latency"]["samples"].clone();
    tokio::time::sleep(Duration::from_millis(500)).await; // the store's write-behind delay
    gitops.crash_and_restart();
    let after = convergence_until(&gitops, &second_sha, "the figures after a restart", |b| {
        b["convergence"]["state"] == "converged" && b["convergence"]["applied"] == AGENTS
    })
    .await;
    assert_eq!(
        after["convergence"]["latency"]["samples"], samples,
        "{after}"
    );
    let list = get_json(&gitops.server.api_url("/api/v1/revisions")).await;
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["revision"] == first_sha.as_str()
                && r["convergence"]["superseded_by"] == second_sha.as_str()),
        "the history keeps the first's figures: {list}"
    );

    // A change the agents cannot apply halts its rollout: failed, with the reason.
    gitops.fixture.edit(
        "processors/env-production.yaml",
        "team: convergence",
        &format!("team: {DEFAULT_FAIL_MARKER}"),
    );
    let failing_sha = gitops
        .commit_and_announce("a change agents cannot apply")
        .await;
    let failing = convergence_until(&gitops, &failing_sha, "the rollout fails", |b| {
        b["convergence"]["state"] == "failed"
    })
    .await;
    let reason = failing["convergence"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("rollout halted (linux-production)"),
        "{failing}"
    );
    stop_all(&agents).await;
}

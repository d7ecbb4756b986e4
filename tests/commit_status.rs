//! Commit statuses written back, end to end: a running `gitamp serve --commit-status`, a real
//! Git remote, simulated agents, and a local HTTP server standing in for the Git host. GitHub
//! and GitLab cannot be reached from the test machines, so the stand-in checks every request
//! against the request shapes the providers document (GitHub's REST "create a commit status":
//! `POST /repos/{owner}/{repo}/statuses/{sha}`, bearer token, `Accept:
//! application/vnd.github+json`, `state` one of error/failure/pending/success, `description`,
//! `context`, `target_url`; GitLab's "set the pipeline status of a commit": `POST
//! /projects/{id}/statuses/{sha}`, `PRIVATE-TOKEN`, `state` one of
//! pending/running/success/failed/canceled, `name`) and refuses anything else.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use gitamp_opamp::agent::{AgentHandle, ApplyPolicy, DEFAULT_FAIL_MARKER};
use support::agents::{linux_production, stop_all};
use support::{GitOpsServer, eventually, metric, start_agents_with, wait_all_applied};

const WAIT: Duration = Duration::from_secs(90);
const TOKEN: &str = "host-api-token-0123";

/// One accepted request: (sha, state, description, the whole body).
type Seen = (String, String, String, serde_json::Value);

#[derive(Clone)]
struct Host {
    gitlab: bool,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Requests still to refuse with 502 (the host failing for a while).
    fail_next: Arc<Mutex<usize>>,
    /// Requests that broke the documented shape, with why.
    bad: Arc<Mutex<Vec<String>>>,
}

impl Host {
    fn statuses(&self, sha: &str) -> Vec<(String, String)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, ..)| s == sha)
            .map(|(_, state, description, _)| (state.clone(), description.clone()))
            .collect()
    }

    fn last(&self, sha: &str) -> Option<(String, String)> {
        self.statuses(sha).pop()
    }
}

/// Check one request against the provider's documented shape; `Err(why)` refuses it.
fn check(host: &Host, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<Seen, String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let path = uri.path();
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let object = json.as_object().ok_or("body is not an object")?;
    let (sha, states, name_field, max_description): (&str, &[&str], &str, usize) = if host.gitlab {
        if header("PRIVATE-TOKEN") != TOKEN {
            return Err("PRIVATE-TOKEN is not the token".into());
        }
        let sha = path
            .strip_prefix("/projects/acme%2Fconfig/statuses/")
            .ok_or(format!(
                "unexpected path {path} (the project path is one encoded segment)"
            ))?;
        (
            sha,
            &["pending", "running", "success", "failed", "canceled"],
            "name",
            255,
        )
    } else {
        if header("authorization") != format!("Bearer {TOKEN}") {
            return Err("Authorization is not Bearer <token>".into());
        }
        if header("accept") != "application/vnd.github+json" {
            return Err(format!("Accept is {:?}", header("accept")));
        }
        if header("X-GitHub-Api-Version").is_empty() || header("user-agent").is_empty() {
            return Err("X-GitHub-Api-Version and User-Agent are required".into());
        }
        let sha = path
            .strip_prefix("/repos/acme/config/statuses/")
            .ok_or(format!("unexpected path {path}"))?;
        (
            sha,
            &["error", "failure", "pending", "success"],
            "context",
            140,
        )
    };
    if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{sha} is not a commit id"));
    }
    for key in object.keys() {
        if !["state", "description", "target_url", name_field].contains(&key.as_str()) {
            return Err(format!("unknown field {key}"));
        }
    }
    let state = object["state"].as_str().ok_or("state is missing")?;
    if !states.contains(&state) {
        return Err(format!("state {state:?} is not one of {states:?}"));
    }
    let description = object["description"]
        .as_str()
        .ok_or("description is missing")?;
    if description.chars().count() > max_description {
        return Err(format!("description longer than {max_description}"));
    }
    if description.contains(TOKEN) {
        return Err("the token is in the description".into());
    }
    if object[name_field] != "gitamp" {
        return Err(format!("{name_field} is not gitamp"));
    }
    let target = object["target_url"]
        .as_str()
        .ok_or("target_url is missing")?;
    if target != format!("https://gitamp.example.com/api/v1/revisions/{sha}") {
        return Err(format!("target_url {target}"));
    }
    Ok((
        sha.to_string(),
        state.to_string(),
        description.to_string(),
        json.clone(),
    ))
}

async fn receive(
    State(host): State<Host>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    {
        let mut fail = host.fail_next.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return StatusCode::BAD_GATEWAY;
        }
    }
    match check(&host, &uri, &headers, &body) {
        Ok(seen) => {
            host.seen.lock().unwrap().push(seen);
            StatusCode::CREATED
        }
        Err(why) => {
            host.bad.lock().unwrap().push(why);
            StatusCode::UNPROCESSABLE_ENTITY
        }
    }
}

async fn start_host(gitlab: bool, fail_first: usize) -> (Host, u16) {
    let host = Host {
        gitlab,
        seen: Arc::default(),
        fail_next: Arc::new(Mutex::new(fail_first)),
        bad: Arc::default(),
    };
    let app = Router::new()
        .fallback(post(receive))
        .with_state(host.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (host, port)
}

fn start_server(provider: &str, port: u16, dir: &std::path::Path) -> GitOpsServer {
    let token = dir.join("host-token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    GitOpsServer::start(
        "example-repo",
        &[
            "--commit-status",
            provider,
            "--commit-status-token-file",
            token.to_str().unwrap(),
            "--commit-status-api",
            &format!("http://127.0.0.1:{port}"),
            "--commit-status-repo",
            "acme/config",
            "--public-url",
            "https://gitamp.example.com/",
        ],
    )
}

async fn wait_for(host: &Host, sha: &str, state: &str) -> String {
    eventually(WAIT, &format!("{sha} gets {state}"), async || {
        match host.last(sha) {
            Some((s, d)) if s == state => Ok(d),
            other => Err(format!(
                "last {other:?}; bad requests {:?}",
                host.bad.lock().unwrap()
            )),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_statuses_follow_rollouts_rejections_and_halts() {
    // The host fails the first two requests: the status still arrives, later.
    let (host, port) = start_host(false, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let gitops = start_server("github", port, dir.path());
    let agents: Vec<AgentHandle> = start_agents_with(8, &gitops.server.ws_url(), |i| {
        let mut opts = linux_production(&format!("status-linux-{i:02}"));
        opts.policy = ApplyPolicy::FailOnMarker(DEFAULT_FAIL_MARKER.into());
        opts
    });
    let first_sha = support::git(&gitops.fixture.work(), &["rev-parse", "HEAD"]);
    let first = gitops.fixture.expected_hashes()["linux-production"];
    wait_all_applied(&agents, first, WAIT, "the first revision is applied").await;
    let done = wait_for(&host, &first_sha, "success").await;
    assert!(
        done.starts_with("8/8 agents applied") || done.contains("agents applied"),
        "{done}"
    );
    assert!(metric(&gitops.server, "gitamp_commit_statuses_total").await >= 2.0);

    // A bad commit: failure, naming the first error's code and place, not its message.
    gitops.fixture.write(
        "configurations/broken.yaml",
        "apiVersion: gitamp.dev/v1\nkind: Configuration\nmetadata:\n  name: broken\nspec:\n  \
         priority: 50\n  selector:\n    matchLabels: {team: nobody}\n  sources: [otlp-default]\n  \
         destinations: [does-not-exist]\n",
    );
    let bad = gitops.commit_and_announce("a bad commit").await;
    let why = wait_for(&host, &bad, "failure").await;
    assert!(
        why.contains("rejected") && why.contains("E012 at configurations/broken.yaml:10"),
        "{why}"
    );
    support::git(
        &gitops.fixture.work(),
        &["rm", "-q", "configurations/broken.yaml"],
    );

    // A good change: pending while it rolls out, then success, coalesced (not one per agent).
    gitops.fixture.edit(
        "processors/env-production.yaml",
        "team: platform",
        "team: statuses",
    );
    let good = gitops.commit_and_announce("a good change").await;
    let second = gitops.fixture.expected_hashes()["linux-production"];
    wait_all_applied(&agents, second, WAIT, "the change is applied").await;
    let done = wait_for(&host, &good, "success").await;
    assert!(done.contains("agents applied"), "{done}");
    let updates = host.statuses(&good);
    assert!(
        updates.len() <= 8,
        "coalesced, not one per agent: {updates:?}"
    );

    // A change the agents cannot apply halts the rollout: failure.
    gitops.fixture.edit(
        "processors/env-production.yaml",
        "team: statuses",
        &format!("team: {DEFAULT_FAIL_MARKER}"),
    );
    let failing = gitops
        .commit_and_announce("a change the agents cannot apply")
        .await;
    let why = wait_for(&host, &failing, "failure").await;
    assert!(why.contains("rollout halted (linux-production)"), "{why}");
    assert!(
        host.bad.lock().unwrap().is_empty(),
        "{:?}",
        host.bad.lock().unwrap()
    );
    stop_all(&agents).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_statuses_use_its_api_shape() {
    let (host, port) = start_host(true, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let gitops = start_server("gitlab", port, dir.path());
    let agents = start_agents_with(2, &gitops.server.ws_url(), |i| {
        linux_production(&format!("gitlab-linux-{i:02}"))
    });
    let sha = support::git(&gitops.fixture.work(), &["rev-parse", "HEAD"]);
    let first = gitops.fixture.expected_hashes()["linux-production"];
    wait_all_applied(&agents, first, WAIT, "the first revision is applied").await;
    wait_for(&host, &sha, "success").await;
    gitops
        .fixture
        .write("configurations/broken.yaml", "kind: [");
    let bad = gitops.commit_and_announce("a bad commit").await;
    wait_for(&host, &bad, "failed").await;
    assert!(
        host.bad.lock().unwrap().is_empty(),
        "{:?}",
        host.bad.lock().unwrap()
    );
    stop_all(&agents).await;
}

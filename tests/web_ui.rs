//! The web page in a real browser: two real servers (one open, one behind `--api-token-file`)
//! on a Git remote, a fleet of simulated agents, and `tests/web/ui.test.mjs` driving Debian's
//! Chromium through Playwright (with axe-core for accessibility). The Node script pushes
//! commits itself (the fixture's work tree, the generic webhook) and watches the page follow
//! them without a reload; this test fails when it fails.
//!
//! Needs `node`, `/usr/bin/chromium` and `tests/web/node_modules`: `scripts/web-env.sh`
//! installs them (`scripts/test.sh` calls it); without them this test fails and says so.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use gitamp_opamp::agent::{AgentHandle, AgentOptions, ApplyPolicy};
use gitamp_opamp::proto;
use support::agents::{linux_production, uid_of};
use support::server::{GitOpsServer, get_json, write_token};
use support::{eventually, start_agents_with, workspace};

const WAIT: Duration = Duration::from_secs(60);
/// The error the failing agent reports (it never applies anything).
const FAILURE: &str = "exporter otlp/gateway: connection refused";
/// The failing agent's own config: what it keeps running, so its diff is not empty.
const LOCAL_CONFIG: &str = "receivers:\n  otlp:\n    protocols:\n      grpc: {}\nexporters:\n  debug: {}\nservice:\n  pipelines:\n    logs:\n      receivers: [otlp]\n      exporters: [debug]\n";

fn chromium() -> PathBuf {
    std::env::var_os("GITAMP_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// The browser, Node.js and the test's npm packages, or a failure naming the install command.
fn check_tools(web: &Path) {
    let install = "run scripts/web-env.sh (Debian's chromium and nodejs, then npm ci in tests/web)";
    assert!(
        chromium().exists(),
        "{} is missing: {install}",
        chromium().display()
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is missing: {install}"
    );
    for package in ["playwright-core", "axe-core"] {
        assert!(
            web.join("node_modules")
                .join(package)
                .join("package.json")
                .exists(),
            "tests/web/node_modules/{package} is missing: {install}"
        );
    }
}

/// A staging collector that fails every config it is sent and keeps reporting its local one.
fn failing_staging_agent() -> AgentOptions {
    let mut opts =
        AgentOptions::collector("payments", "stage-fail", "staging").label("os.type", "linux");
    opts.heartbeat_interval = Duration::from_secs(5);
    opts.policy = ApplyPolicy::Fail(FAILURE.into());
    opts.initial_effective_config = Some(proto::AgentConfigMap {
        config_map: [(
            String::new(),
            proto::AgentConfigFile {
                body: Bytes::from_static(LOCAL_CONFIG.as_bytes()),
                content_type: "text/yaml".into(),
            },
        )]
        .into(),
    });
    opts
}

/// 6 production Linux agents (a batched rollout), a staging one that applies and one that fails.
fn start_fleet(server: &GitOpsServer) -> Vec<AgentHandle> {
    start_agents_with(8, &server.server.ws_url(), |i| match i {
        0..6 => linux_production(&format!("prod-{i:02}")),
        6 => {
            let mut o = AgentOptions::collector("checkout", "stage-ok", "staging")
                .label("os.type", "linux");
            o.heartbeat_interval = Duration::from_secs(5);
            o
        }
        _ => failing_staging_agent(),
    })
}

/// Until the server shows every agent planned: 7 synced, 1 failed.
async fn settled(server: &GitOpsServer) {
    let url = server.server.api_url("/api/v1/status");
    eventually(WAIT, "7 agents synced and 1 failed", async || {
        let st = get_json(&url).await;
        let by = &st["agents"]["by_status"];
        (by["synced"] == 7 && by["failed"] == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_a_commit_to_every_agent_in_a_real_browser() {
    let web = workspace().join("tests/web");
    check_tools(&web);

    let open = GitOpsServer::start("example-repo", &[]);
    let api_token = "web-ui-token-5f1c";
    let token_dir = tempfile::tempdir().expect("tempdir");
    let token_file = write_token(token_dir.path(), api_token);
    let guarded = GitOpsServer::start(
        "example-repo",
        &["--api-token-file", &token_file.display().to_string()],
    );
    let agents = start_fleet(&open);
    settled(&open).await;
    let failing = uid_of(&agents[7]);

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-ui");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let base = format!("http://{}", open.server.api);
    let guarded_base = format!("http://{}", guarded.server.api);
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg("--test")
        .arg("--test-concurrency=1")
        .arg("--test-reporter=spec")
        .arg(web.join("ui.test.mjs"))
        .current_dir(&web)
        .env("GITAMP_UI_BASE", &base)
        .env("GITAMP_UI_GUARDED_BASE", &guarded_base)
        .env("GITAMP_UI_API_TOKEN", api_token)
        .env("GITAMP_UI_WORK", open.fixture.work())
        .env("GITAMP_UI_WEBHOOK_TOKEN", &open.token)
        .env("GITAMP_UI_FAILED_AGENT", &failing)
        .env("GITAMP_UI_SCREENSHOTS", &shots)
        .env("GITAMP_CHROMIUM", chromium())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(600), cmd.output())
        .await
        .expect("the browser tests end within 10 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the browser tests failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        out.status,
        support::server::tail(&open.server.logs(), 40)
    );
    // The script ran every test it has (a filter or an early exit would pass with fewer).
    let passed = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("ℹ pass "))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    assert!(
        passed >= 10,
        "only {passed} browser tests passed:\n{stdout}"
    );
    for name in [
        "overview.png",
        "agent.png",
        "overview-narrow.png",
        "login.png",
    ] {
        assert!(shots.join(name).exists(), "no screenshot {name}");
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// The page's files, its 404, its headers, and that it is public while the API is not.
#[tokio::test]
async fn the_page_is_embedded_strict_and_public_while_the_api_is_not() {
    let token_dir = tempfile::tempdir().expect("tempdir");
    let token = "web-routes-token";
    let file = write_token(token_dir.path(), token);
    let s = GitOpsServer::start(
        "example-repo",
        &["--api-token-file", &file.display().to_string()],
    );
    let base = format!("http://{}", s.server.api);
    let c = client();

    let page = c.get(format!("{base}/")).send().await.expect("GET /");
    assert_eq!(page.status(), 200, "the page needs no token");
    let h = page.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().expect("csp");
    assert!(
        csp.starts_with("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "no-cache");
    let etag = h["etag"].to_str().expect("etag").to_string();
    let body = page.text().await.expect("body");
    assert!(
        body.contains("<script type=\"module\" src=\"/ui/app.js\">"),
        "{body}"
    );
    // Nothing from elsewhere: every script and style is the server's own.
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "{body}"
    );

    let again = c
        .get(format!("{base}/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("GET / again");
    assert_eq!(again.status(), 304, "an unchanged page is not sent again");

    for (file, kind) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("views.js", "text/javascript; charset=utf-8"),
        ("highlight.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let r = c
            .get(format!("{base}/ui/{file}"))
            .send()
            .await
            .expect("asset");
        assert_eq!(r.status(), 200, "{file}");
        assert_eq!(r.headers()["content-type"], kind, "{file}");
    }
    let missing = c
        .get(format!("{base}/ui/nope.js"))
        .send()
        .await
        .expect("asset");
    assert_eq!(missing.status(), 404);

    // A person's typo gets the page (its 404 view), an API client's a JSON error.
    let typo = c
        .get(format!("{base}/agents/list"))
        .send()
        .await
        .expect("typo");
    assert_eq!(typo.status(), 404);
    assert_eq!(typo.headers()["content-type"], "text/html; charset=utf-8");
    assert!(typo.headers().contains_key("content-security-policy"));
    let api_typo = c
        .get(format!("{base}/api/v1/nothing"))
        .bearer_auth(token)
        .send()
        .await
        .expect("api typo");
    assert_eq!(api_typo.status(), 404);
    let err: serde_json::Value = api_typo.json().await.expect("JSON error");
    assert!(err["error"].is_string());
    // The page changes nothing: no route takes a POST but the API's own.
    let post = c.post(format!("{base}/")).send().await.expect("POST /");
    assert_eq!(post.status(), 405);

    // The API and its stream still need the token.
    for path in ["/api/v1/status", "/api/v1/agents", "/api/v1/stream"] {
        let r = c.get(format!("{base}{path}")).send().await.expect("GET");
        assert_eq!(r.status(), 401, "{path}");
        let r = c
            .get(format!("{base}{path}"))
            .bearer_auth("wrong")
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 401, "{path}");
    }
}

/// Read a stream until one whole event arrived; its `data` as JSON.
async fn next_change(resp: &mut reqwest::Response, buf: &mut String) -> serde_json::Value {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            if let Some(data) = frame
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .filter(|_| frame.contains("event: change"))
            {
                return serde_json::from_str(data.trim()).expect("JSON data");
            }
            continue; // a keep-alive comment
        }
        let chunk = tokio::time::timeout(WAIT, resp.chunk())
            .await
            .expect("an event within the wait")
            .expect("read")
            .expect("the stream goes on");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// The stream says what changed (a commit, the fleet), and open streams are bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_reports_changes_and_is_bounded() {
    let s = GitOpsServer::start("example-repo", &[]);
    let base = format!("http://{}", s.server.api);
    let stream_client = reqwest::Client::new();
    let open = || stream_client.get(format!("{base}/api/v1/stream")).send();
    let mut resp = open().await.expect("stream");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    let mut first = next_change(&mut resp, &mut buf).await;
    assert_eq!(first["agents"], 0);
    // The server may not serve its first revision yet: the stream says when it does.
    while first["revision"].is_null() {
        first = next_change(&mut resp, &mut buf).await;
    }
    let served = first["revision"]
        .as_str()
        .expect("a served revision")
        .to_string();

    // Agents connect: the counts move on the stream.
    let agents = start_agents_with(3, &s.server.ws_url(), |i| {
        linux_production(&format!("s-{i}"))
    });
    let mut last = first;
    while last["by_status"]["synced"] != 3 {
        last = next_change(&mut resp, &mut buf).await;
    }
    assert_eq!(last["agents"], 3);
    // A commit: the served revision moves on the stream.
    s.fixture.set_team("streamed");
    let sha = s.commit_and_announce("a change for the stream").await;
    while last["revision"] != sha.as_str() {
        last = next_change(&mut resp, &mut buf).await;
    }
    assert_ne!(served, sha);
    // The status and the revision carry the commit's subject and author, as Git has them.
    let st = get_json_at(&base, "/api/v1/status").await;
    assert_eq!(
        st["current_commit"]["subject"], "a change for the stream",
        "{st}"
    );
    assert_eq!(st["current_commit"]["author"], "gitamp test");
    let rev = get_json_at(&base, &format!("/api/v1/revisions/{sha}")).await;
    assert_eq!(rev["commit"]["subject"], "a change for the stream", "{rev}");

    // Sort and free text on the list the page shows.
    let list = |q: &'static str| get_json_at(&base, q);
    let page = list("/api/v1/agents?sort=-host&limit=2").await;
    assert_eq!(page["total"], 3);
    let hosts: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|a| a["labels"]["host.name"].as_str())
        .collect();
    assert_eq!(hosts, ["s-2", "s-1"]);
    assert_eq!(
        list("/api/v1/agents?q=S-1").await["total"],
        1,
        "ignores case"
    );
    assert_eq!(
        list("/api/v1/agents?q=checkout").await["total"],
        3,
        "service.name"
    );
    assert_eq!(
        list("/api/v1/agents?q=&sort=").await["total"],
        3,
        "empty: no filter"
    );
    assert_eq!(list("/api/v1/agents?q=nobody").await["total"], 0);
    // Orders the plan's view decides read only the page's agents; the answer is the same kind.
    let by_status = list("/api/v1/agents?sort=-configuration&status=synced&limit=2").await;
    assert_eq!(by_status["total"], 3);
    assert_eq!(by_status["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(by_status["items"][0]["configuration"], "linux-production");
    let bad = client()
        .get(format!("{base}/api/v1/agents?sort=colour"))
        .send()
        .await
        .expect("GET");
    assert_eq!(bad.status(), 400);
    let err: serde_json::Value = bad.json().await.expect("JSON");
    assert!(
        err["error"]
            .as_str()
            .is_some_and(|e| e.contains("last_seen")),
        "{err}"
    );
    let long = "x".repeat(257);
    let bad = client()
        .get(format!("{base}/api/v1/agents?q={long}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(bad.status(), 400);

    // At most MAX_STREAMS at once: this one and 63 more, then a 503; closing one frees a slot.
    let max = gitamp::api::stream::MAX_STREAMS;
    let mut held = Vec::new();
    for _ in 1..max {
        let r = open().await.expect("stream");
        assert_eq!(r.status(), 200);
        held.push(r);
    }
    let refused = open().await.expect("stream");
    assert_eq!(refused.status(), 503);
    let err: serde_json::Value = refused.json().await.expect("JSON");
    assert!(
        err["error"]
            .as_str()
            .is_some_and(|e| e.contains("too many open streams")),
        "{err}"
    );
    drop(held.pop());
    eventually(WAIT, "a closed stream's slot is free again", async || {
        open().await.is_ok_and(|r| r.status() == 200).then_some(())
    })
    .await;
    drop(agents);
}

async fn get_json_at(base: &str, path: &str) -> serde_json::Value {
    get_json(&format!("{base}{path}")).await
}

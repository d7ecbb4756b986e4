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

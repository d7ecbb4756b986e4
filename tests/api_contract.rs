//! The status API against its own OpenAPI document, checked by a tool we did not write:
//! [schemathesis](https://schemathesis.readthedocs.io) runs every operation of the document the
//! server serves (`/api/v1/openapi.json`) against a real `gitamp serve` on a real Git repository
//! with simulated agents connected, with all its checks (status codes, response schemas, content
//! types, headers, negative and positive data, unsupported methods), once on a server without an
//! API token and once on a server with one (its requests then carry the token; a request without
//! it must get the documented 401, checked here), and once on a replica of two on PostgreSQL
//! (the whole fleet in the list, an agent another replica holds in the detail, the
//! `gitamp-fleet` headers).
//!
//! schemathesis comes from the project's Python environment (`scripts/python-env.sh`, pinned in
//! `tests/interop/requirements.txt`), found next to `GITAMP_PYTHON` or in `.venv`. Without it the
//! test is skipped with a loud message, except in CI (`CI=true`), where it fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gitamp_opamp::agent::{AgentHandle, AgentOptions};
use serde_json::Value;
use support::agents::stop_all;
use support::server::{KIT_WAIT, api_get};
use support::{GitOpsServer, eventually, start_agents_with};

/// Server-sent events: endless, so schemathesis cannot read an answer to its end.
const STREAM: &str = "/api/v1/stream";
const API_TOKEN: &str = "contract-api-token";
/// Examples per operation and phase: enough to reach every parameter's edges (the coverage
/// phase adds its own boundary cases), few enough that a run takes well under a minute here.
const MAX_EXAMPLES: &str = "25";
/// A fixed seed: a failure reproduces with the same command.
const SEED: &str = "20240519";

/// The schemathesis CLI of the project's Python environment, if installed.
fn schemathesis() -> Option<PathBuf> {
    let python = std::env::var_os("GITAMP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::workspace().join(".venv/bin/python"));
    let cli = python.parent()?.join("schemathesis");
    cli.exists().then_some(cli)
}

/// The CLI, or `None` after a loud skip message; in CI its absence fails the test.
fn schemathesis_or_skip() -> Option<PathBuf> {
    let found = schemathesis();
    if found.is_none() {
        let why = "schemathesis is not installed in the project's Python environment: \
                   run scripts/python-env.sh (scripts/test.sh does)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("\n########## SKIPPED: the API contract is NOT checked: {why} ##########\n");
    }
    found
}

/// A few agents in several states: production Linux (a batched rollout), staging, and one that
/// accepts no remote config (`incompatible`).
fn agents(ws_url: &str) -> Vec<AgentHandle> {
    start_agents_with(5, ws_url, |i| match i {
        0..=1 => support::agents::linux_production(&format!("contract-prod-{i}")),
        2..=3 => AgentOptions::collector("checkout", &format!("contract-staging-{i}"), "staging")
            .label("os.type", "linux"),
        _ => {
            let mut opts = AgentOptions::collector("probe", "contract-readonly", "production");
            opts.capabilities = gitamp_opamp::proto::AgentCapabilities::ReportsStatus as u64;
            opts
        }
    })
}

/// A server under test, its agents, and one agent's id (the document cannot name one).
struct Served {
    server: GitOpsServer,
    agents: Vec<AgentHandle>,
    agent_id: String,
    /// `GET /api/v1/openapi.json`, as served.
    document: String,
}

/// Start a server (with `token` as its API token, if any) and agents, and wait until every
/// agent is planned, so the API has agents, configurations, revisions and events to show.
async fn serve(files: &Path, token: Option<&str>) -> Served {
    let write = |name: &str, value: &str| {
        let path = files.join(name);
        std::fs::write(&path, value).expect("write secret file");
        path.display().to_string()
    };
    // Every webhook provider configured, so each webhook route answers by its own auth rule
    // (an unconfigured one is a 404 for every request).
    let mut args = vec![
        "--webhook-secret-file".to_string(),
        write("github-secret", "contract-github-secret"),
        "--gitlab-token-file".to_string(),
        write("gitlab-token", "contract-gitlab-token"),
    ];
    if let Some(token) = token {
        args.extend(["--api-token-file".to_string(), write("api-token", token)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = GitOpsServer::start("example-repo", &args);
    let agents = agents(&server.server.ws_url());
    let client = reqwest::Client::new();
    let url = server.server.api_url("/api/v1/agents");
    let agent_id = eventually(KIT_WAIT, "every agent planned", async || {
        let (code, body) = api_get(&client, &url, token).await;
        let page: Value = serde_json::from_str(&body).map_err(|e| format!("{code}: {e}"))?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        let planned = items.iter().filter(|a| a["status"] != "unknown").count();
        match items.first().and_then(|a| a["uid"].as_str()) {
            Some(uid) if planned == agents.len() => Ok(uid.to_string()),
            _ => Err(format!("{planned} of {} planned: {body}", agents.len())),
        }
    })
    .await;
    let (code, document) = api_get(
        &client,
        &server.server.api_url("/api/v1/openapi.json"),
        token,
    )
    .await;
    assert_eq!(code, 200, "{document}");
    Served {
        server,
        agents,
        agent_id,
        document,
    }
}

/// What schemathesis runs against: the API's base URL, the served revision, a real agent's id
/// and the served document.
struct Target {
    base: String,
    revision: String,
    agent_id: String,
    document: String,
}

impl Served {
    fn target(&self) -> Target {
        Target {
            base: self.server.server.api_url(""),
            revision: support::git(&self.server.fixture.work(), &["rev-parse", "HEAD"]),
            agent_id: self.agent_id.clone(),
            document: self.document.clone(),
        }
    }
}

/// Run schemathesis over every operation of the served document; panic with its report when a
/// check fails.
fn run_schemathesis(cli: &Path, served: &Target, token: Option<&str>, work: &Path) {
    let base = served.base.clone();
    // A label selector's grammar (balanced parentheses, operators) is more than a JSON Schema
    // says, so a schema-valid `selector` may be a 400 naming what is wrong: expected there.
    // A real agent's id for `/api/v1/agents/{id}` and the served revision for
    // `/api/v1/revisions/{revision}`, so their details (the largest schemas) are checked on
    // 200s, not only on 404s for generated ids.
    let revision = &served.revision;
    let config = work.join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[[operations]]\ninclude-path = \"/api/v1/agents/{{id}}\"\nparameters = {{ id = \"{}\" }}\n\n\
             [[operations]]\ninclude-path = \"/api/v1/revisions/{{revision}}\"\nparameters = {{ revision = \"{revision}\" }}\n\n\
             [[operations]]\ninclude-path = \"/api/v1/agents\"\n\
             checks = {{ positive_data_acceptance = {{ expected-statuses = [\"2XX\", \"400\", \"401\"] }} }}\n",
            served.agent_id
        ),
    )
    .expect("write schemathesis.toml");
    // The document the server serves, as a file: loaded from its URL, schemathesis would leave
    // that URL's own operation untested.
    let document = work.join("openapi.json");
    std::fs::write(&document, &served.document).expect("write openapi.json");
    let mut cmd = Command::new(cli);
    cmd.arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(&document)
        .args(["--url", &base])
        .args(["--checks", "all"])
        // Every failure of an operation in one report, not only its first.
        .arg("--continue-on-failure")
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", SEED])
        // No example database: every run is the seed's alone, and nothing is written.
        .args(["--generation-database", "none"])
        .args(["--workers", "1"])
        .args(["--request-timeout", "15"])
        // Server-sent events never end, so no request of it can be read to its end:
        // tests/api.rs checks its head and tests/web_ui.rs a browser reading it.
        .args(["--exclude-path", STREAM])
        .arg("--no-color")
        // Its working directory is a temporary one: whatever it writes stays there.
        .current_dir(work)
        .env_remove("SCHEMATHESIS_HOOKS")
        // Loopback only, whatever proxy the environment names.
        .env("NO_PROXY", "*")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy");
    if let Some(token) = token {
        cmd.args(["--header", &format!("Authorization: Bearer {token}")]);
    }
    let out = cmd.output().expect("schemathesis runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found the API and its document disagreeing ({}):\n{report}",
        if token.is_some() {
            "server with an API token"
        } else {
            "server without an API token"
        }
    );
    // A run that tested nothing would pass too: it must have covered every operation (but the
    // endless stream, excluded above).
    let doc: Value = serde_json::from_str(&served.document).expect("openapi.json parses");
    let operations: usize = doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(path, _)| *path != STREAM)
        .map(|(_, item)| item.as_object().map_or(0, |i| i.len()))
        .sum();
    assert!(
        report.contains(&format!("Tested: {operations}\n")),
        "schemathesis did not test all {operations} operations:\n{report}"
    );
    eprintln!("{report}");
}

/// Every operation of `doc` whose security admits no token-less request, with `{id}`/`{name}`
/// filled in: `(method, path)`.
fn protected_operations(doc: &Value) -> Vec<(String, String)> {
    let global = doc["security"].clone();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let security = op.get("security").unwrap_or(&global);
            let requirements = security.as_array().cloned().unwrap_or_default();
            // `[]` is public; a requirement `{}` is the token-less alternative.
            if !requirements.is_empty() {
                ops.push((method.clone(), path.clone()));
            }
        }
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_disagreement_without_a_token() {
    let Some(cli) = schemathesis_or_skip() else {
        return;
    };
    let files = tempfile::tempdir().expect("tempdir");
    let served = serve(files.path(), None).await;
    let work = tempfile::tempdir().expect("tempdir");
    let work_path = work.path().to_path_buf();
    let served = tokio::task::spawn_blocking(move || {
        run_schemathesis(&cli, &served.target(), None, &work_path);
        served
    })
    .await
    .expect("schemathesis run");
    stop_all(&served.agents).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_disagreement_with_a_token() {
    let Some(cli) = schemathesis_or_skip() else {
        return;
    };
    let files = tempfile::tempdir().expect("tempdir");
    let served = serve(files.path(), Some(API_TOKEN)).await;
    let server = &served.server;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    // The negative half: every operation the document protects answers a request without the
    // token (and one with a wrong token) with the documented 401: an `Error` body and
    // `WWW-Authenticate: Bearer`.
    let doc: Value = serde_json::from_str(&served.document).expect("openapi.json parses");
    let protected = protected_operations(&doc);
    assert!(protected.len() >= 10, "{protected:?}");
    for (method, path) in &protected {
        let declared = &doc["paths"][path][method]["responses"]["401"];
        assert!(
            declared.is_object(),
            "{method} {path} does not declare its 401"
        );
        let url = server.server.api_url(
            &path
                .replace("{id}", "00000000-0000-0000-0000-000000000001")
                .replace("{name}", "staging"),
        );
        for token in [None, Some("wrong-token")] {
            let mut req = client.request(method.to_uppercase().parse().expect("method"), &url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.expect("request");
            assert_eq!(resp.status(), 401, "{method} {path} with token {token:?}");
            assert_eq!(
                resp.headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok()),
                Some("Bearer"),
                "{method} {path}"
            );
            let body: Value = resp.json().await.expect("a JSON 401");
            assert!(body["error"].is_string(), "{method} {path}: {body}");
        }
    }

    let work = tempfile::tempdir().expect("tempdir");
    let work_path = work.path().to_path_buf();
    let served = tokio::task::spawn_blocking(move || {
        run_schemathesis(&cli, &served.target(), Some(API_TOKEN), &work_path);
        served
    })
    .await
    .expect("schemathesis run");
    stop_all(&served.agents).await;
}

/// A replica lists and describes agents other replicas hold, with headers and fields single
/// servers do not have: they must agree with the document too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_disagreement_on_a_replica() {
    let Some(cli) = schemathesis_or_skip() else {
        return;
    };
    // Two replicas with every webhook provider configured, as `serve` does for one server.
    let mut fleet = support::replicas::Fleet::start("api_contract_replica", 0).await;
    let files = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, value: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, value).expect("write secret file");
        path.display().to_string()
    };
    let mut args = fleet.args();
    args.extend([
        "--webhook-secret-file".to_string(),
        write("github-secret", "contract-github-secret"),
        "--gitlab-token-file".to_string(),
        write("gitlab-token", "contract-gitlab-token"),
    ]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    for i in 0..2 {
        let server = support::Server::start(&fleet.data_dir(i), &argv);
        fleet.servers.push(server);
    }
    let there = agents(&fleet.servers[1].ws_url());
    let here = start_agents_with(2, &fleet.servers[0].ws_url(), |i| {
        support::agents::linux_production(&format!("contract-here-{i}"))
    });
    let total = there.len() + here.len();
    let held_there = support::agents::uid_of(&there[0]);
    let client = reqwest::Client::new();
    let url = fleet.servers[0].api_url("/api/v1/agents");
    eventually(
        KIT_WAIT,
        "replica 0 lists every agent planned",
        async || {
            let resp = client.get(&url).send().await.map_err(|e| e.to_string())?;
            let whole = resp
                .headers()
                .get("gitamp-fleet")
                .and_then(|v| v.to_str().ok())
                == Some("whole");
            let page: Value = resp.json().await.map_err(|e| e.to_string())?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            let planned = items.iter().filter(|a| a["status"] != "unknown").count();
            let remote = items
                .iter()
                .any(|a| a["uid"] == held_there.as_str() && a["replica"].is_string());
            (whole && planned == total && remote)
                .then_some(())
                .ok_or(format!(
                    "{planned} of {total} planned (whole: {whole}): {page}"
                ))
        },
    )
    .await;
    let revision = fleet.served(0).await.expect("a served revision");
    let (code, document) = api_get(
        &client,
        &fleet.servers[0].api_url("/api/v1/openapi.json"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{document}");
    let target = Target {
        base: fleet.servers[0].api_url(""),
        revision,
        agent_id: held_there,
        document,
    };
    let work = tempfile::tempdir().expect("tempdir");
    let work_path = work.path().to_path_buf();
    tokio::task::spawn_blocking(move || run_schemathesis(&cli, &target, None, &work_path))
        .await
        .expect("schemathesis run");
    stop_all(&there).await;
    stop_all(&here).await;
}

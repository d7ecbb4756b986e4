//! No secret in any log line: a real `gitamp serve` with every secret configured to a
//! distinctive random value and every log target at `trace`, driven through everything that
//! touches a secret, then its whole output (stdout, where the logs go, and stderr) is searched
//! for each secret, its distinctive core, a 16-character prefix of that core and its base64
//! forms. The status API's answers are searched too (sensitive values must be masked there).
//!
//! Exercised: agents with the right secret (WebSocket `Authorization: Bearer`, HTTP
//! `Secret-Key`), the server's own demo agents (which carry the secret), agents and raw requests
//! with a wrong or missing secret; GitHub, GitLab and generic webhooks, authentic and not; every
//! API route with the right, a wrong and no token; two rollouts carrying a sensitive parameter
//! value (the second announced by a webhook, rotating the value); a rejected revision whose
//! sensitive parameter has the wrong type; an agent whose FAILED message echoes the sensitive
//! value; and, in a second test, a Git token actually sent to an HTTP remote that refuses it (a
//! fake smart-HTTP server answering 401), with the token in a file and in the URL.
//!
//! Timeouts are generous upper bounds for a slow CI machine, never speed assertions.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use gitamp_opamp::agent::{
    AgentHandle, AgentOptions, ApplyPolicy, ClientTransport, HttpPool, HttpPoolOptions, SimAgent,
    spawn_agent,
};
use support::agents::{linux_production, ws};
use support::server::{
    api_get as get, api_get_json as get_json, github_signature, post_webhook_as as webhook,
};
use support::{GitFixture, Server, eventually};

const WAIT: Duration = Duration::from_secs(90);

/// Every log target at its most verbose (ours and the libraries': hyper, sqlx,
/// git2 all get their chance to print a header or a body).
const LOG_ENV: &[(&str, &str)] = &[("RUST_LOG", "trace"), ("RUST_BACKTRACE", "0")];

/// A secret nobody could mistake for anything else: `<what>-<32 random hex digits>`.
struct Secret {
    what: &'static str,
    value: String,
}

impl Secret {
    fn new(what: &'static str) -> Secret {
        Secret {
            what,
            value: format!("{what}-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// The random part alone.
    fn core(&self) -> &str {
        &self.value[self.what.len() + 1..]
    }

    /// Every form in which it must not appear: whole, its random core, the first 16 digits of
    /// that core (a truncated print), base64 of the value (a logged Basic header or a logged
    /// binary field).
    fn forms(&self) -> Vec<String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        vec![
            self.value.clone(),
            self.core().to_string(),
            self.core()[..16].to_string(),
            b64.encode(&self.value),
        ]
    }
}

/// Panic, naming the secret and showing where, if any form of any secret is in `text`. A line
/// that is JSON (an API answer) is shown as the paths of the strings holding the secret.
fn assert_no_secret(where_: &str, text: &str, secrets: &[&Secret]) {
    let mut found = Vec::new();
    for s in secrets {
        for form in s.forms() {
            for (n, line) in text.lines().enumerate() {
                let Some(at) = line.find(&form) else {
                    continue;
                };
                let place = match serde_json::from_str::<serde_json::Value>(line) {
                    Ok(json) => {
                        let mut paths = Vec::new();
                        json_paths_containing(&json, &form, "$", &mut paths);
                        paths.join(", ")
                    }
                    Err(_) => excerpt(line, at, form.len()),
                };
                found.push(format!("{} ({form}), line {}: {place}", s.what, n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "{} secret occurrence(s) in {where_}:\n{}",
        found.len(),
        found.join("\n")
    );
}

/// Up to 120 characters either side of a match.
fn excerpt(line: &str, at: usize, len: usize) -> String {
    let mut start = at.saturating_sub(120);
    while !line.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (at + len + 120).min(line.len());
    while !line.is_char_boundary(end) {
        end += 1;
    }
    line[start..end].to_string()
}

fn json_paths_containing(v: &serde_json::Value, needle: &str, path: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if s.contains(needle) => {
            let at = s.find(needle).unwrap_or(0);
            out.push(format!("{path} = {:?}", excerpt(s, at, needle.len())));
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                json_paths_containing(item, needle, &format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map {
                json_paths_containing(item, needle, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

fn write_secret(dir: &Path, name: &str, secret: &Secret) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", secret.value)).expect("write secret file");
    path
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

fn linux_agent(host: &str) -> AgentOptions {
    let mut opts = linux_production(host);
    opts.heartbeat_interval = Duration::from_secs(2);
    opts.policy = ApplyPolicy::Apply;
    opts
}

/// The whole body of every config file the agent last received.
fn received_text(agent: &AgentHandle) -> String {
    agent
        .state()
        .last_config
        .map(|c| {
            c.config
                .config_map
                .values()
                .map(|f| String::from_utf8_lossy(&f.body).into_owned())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// A refused Git fetch is logged and the status API answers, without `secret` in the answer.
async fn refused_fetch_is_reported_without(
    server: &Server,
    client: &reqwest::Client,
    secret: &Secret,
) {
    eventually(WAIT, "the refused fetch is logged", async || {
        server.logs().contains("Git sync failed").then_some(())
    })
    .await;
    let (code, status) = get(client, &server.api_url("/api/v1/status"), None).await;
    assert_eq!(code, 200);
    assert_no_secret("the status API's answer", &status, &[secret]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_or_the_api() {
    scenario(false).await;
}

/// The same, plus a production agent whose FAILED message quotes the sensitive value it was
/// sent (a collector echoing the token it could not use), before and after the value is
/// rotated: the message must be masked wherever the API shows it (agent, events) and must not
/// be logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_failure_message_quoting_a_sensitive_value_is_masked() {
    scenario(true).await;
}

/// Everything above, against one server; `echoing_agent` adds the agent of
/// [`an_agents_failure_message_quoting_a_sensitive_value_is_masked`].
async fn scenario(echoing_agent: bool) {
    let agent_secret = Secret::new("agentsecret");
    let wrong_agent_secret = Secret::new("wrongagentsecret");
    let api_token = Secret::new("apitoken");
    let wrong_api_token = Secret::new("wrongapitoken");
    let github_secret = Secret::new("githubsecret");
    let gitlab_token = Secret::new("gitlabtoken");
    let wrong_gitlab_token = Secret::new("wronggitlabtoken");
    let generic_token = Secret::new("generictoken");
    let wrong_generic_token = Secret::new("wronggenerictoken");
    let git_token = Secret::new("gittoken");
    let sensitive_1 = Secret::new("mimirtoken");
    let sensitive_2 = Secret::new("rotatedmimirtoken");
    let sensitive_3 = Secret::new("mistypedmimirtoken");

    // The repository: the example, with a literal value in the sensitive `token` parameter of
    // the destination linux-production sends metrics to (warning W002, still accepted).
    let fixture = GitFixture::with_example_repo();
    fixture.edit(
        "destinations/metrics-store.yaml",
        "token: ${env:MIMIR_TOKEN}",
        &format!("token: {}", sensitive_1.value),
    );
    let first_sha = fixture.commit_all("a literal token (do not do this at home)");
    fixture.push(false);
    let first = fixture.expected_hashes()["linux-production"];

    let tmp = tempfile::tempdir().expect("tempdir");
    let files = tmp.path();
    let mut server = Server::start_with_env(
        &files.join("data"),
        &[
            "--repo",
            &fixture.remote_url(),
            "--ref",
            "main",
            "--poll",
            "3600",
            "--opamp-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
            // A file:// remote never asks for credentials, but the token is parsed and kept.
            "--git-token-file",
            s(&write_secret(files, "git-token", &git_token)),
            "--agent-secret-file",
            s(&write_secret(files, "agent-secret", &agent_secret)),
            "--api-token-file",
            s(&write_secret(files, "api-token", &api_token)),
            "--webhook-secret-file",
            s(&write_secret(files, "github-secret", &github_secret)),
            "--gitlab-token-file",
            s(&write_secret(files, "gitlab-token", &gitlab_token)),
            "--webhook-token-file",
            s(&write_secret(files, "generic-token", &generic_token)),
            "--demo-agents",
            "4",
        ],
        LOG_ENV,
    );
    let client = reqwest::Client::new();
    let bearer = |s: &Secret| vec![("Authorization".to_string(), format!("Bearer {}", s.value))];

    // Agents with the secret: three over WebSocket, one over HTTP with `Secret-Key`.
    let mut agents: Vec<AgentHandle> = (0..3)
        .map(|i| {
            spawn_agent(
                SimAgent::new(linux_agent(&format!("nosecret-ws-{i}"))),
                ws(bearer(&agent_secret)),
                &server.ws_url(),
            )
        })
        .collect();
    let pool = HttpPool::new(
        &server.http_url(),
        HttpPoolOptions {
            headers: vec![(
                "Authorization".into(),
                format!("Secret-Key {}", agent_secret.value),
            )],
            ..HttpPoolOptions::default()
        },
    )
    .expect("HTTP pool");
    agents.push(spawn_agent(
        SimAgent::new(linux_agent("nosecret-http")),
        ClientTransport::Http(Arc::new(pool)),
        &server.http_url(),
    ));
    // A production Linux agent whose FAILED message echoes the sensitive value it was given (a
    // collector quoting the token it could not use): masked in the API, absent from the logs.
    let values = [sensitive_1.value.clone(), sensitive_2.value.clone()];
    let mut failing = linux_agent("nosecret-failing");
    failing.policy = ApplyPolicy::Custom(Arc::new(move |config| {
        let text: String = config
            .config_map
            .values()
            .map(|f| String::from_utf8_lossy(&f.body).into_owned())
            .collect();
        match values.iter().find(|v| text.contains(v.as_str())) {
            Some(v) => Err(format!("exporter: invalid token {v}")),
            None => Ok(()),
        }
    }));
    let failing = echoing_agent.then(|| {
        spawn_agent(
            SimAgent::new(failing),
            ws(bearer(&agent_secret)),
            &server.ws_url(),
        )
    });
    // An agent with a wrong secret keeps being refused.
    let impostor = spawn_agent(
        SimAgent::new(linux_agent("nosecret-wrong")),
        ws(bearer(&wrong_agent_secret)),
        &server.ws_url(),
    );

    // 1. The first rollout carries the sensitive value to every agent.
    eventually(WAIT, "every agent applies the first revision", async || {
        agents
            .iter()
            .all(|a| a.state().applied_hash().map(|h| &h[..]) == Some(first.as_bytes()))
            .then_some(())
    })
    .await;
    for a in &agents {
        assert!(
            received_text(a).contains(&sensitive_1.value),
            "the config pushed to the agent carries the sensitive value"
        );
    }
    if let Some(failing) = &failing {
        eventually(WAIT, "the failing agent reports FAILED", async || {
            failing
                .state()
                .status_history
                .iter()
                .any(|c| !c.error_message.is_empty())
                .then_some(())
        })
        .await;
    }

    // Refused OpAMP requests: wrong secret, no secret, wrong scheme.
    assert!(
        impostor.state().last_config.is_none(),
        "the agent with a wrong secret got a config"
    );
    for auth in [
        Some(format!("Bearer {}", wrong_agent_secret.value)),
        Some(format!("Secret-Key {}", wrong_agent_secret.value)),
        Some(format!("Basic {}", wrong_agent_secret.value)),
        None,
    ] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let (code, _) =
            support::wire::post_opamp_raw(&client, &server.http_url(), &headers, vec![0u8; 4])
                .await;
        assert_eq!(code, 401, "OpAMP POST with {auth:?}");
    }

    // 2. The API with a wrong and without a token: 401, on every protected route.
    let protected = support::routes::protected_gets(
        &support::agents::uid_of(&agents[0]),
        "linux-production",
        &first_sha,
    );
    for path in &protected {
        for token in [Some(wrong_api_token.value.as_str()), None] {
            let (code, _) = get(&client, &server.api_url(path), token).await;
            assert_eq!(code, 401, "GET {path} with token {token:?}");
        }
    }

    // 3. Webhooks that are not authentic: refused, and wake nothing.
    let push = r#"{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000"}"#;
    let wrong_sig = github_signature(&wrong_generic_token.value, push.as_bytes());
    let wrong_gitlab = &wrong_gitlab_token.value;
    let wrong_bearer = format!("Bearer {}", wrong_generic_token.value);
    for (provider, headers) in [
        (
            "github",
            vec![
                ("x-hub-signature-256", wrong_sig.as_str()),
                ("x-github-event", "push"),
            ],
        ),
        (
            "gitlab",
            vec![
                ("x-gitlab-token", wrong_gitlab.as_str()),
                ("x-gitlab-event", "Push Hook"),
            ],
        ),
        ("generic", vec![("authorization", wrong_bearer.as_str())]),
    ] {
        let code = webhook(&client, &server, provider, &headers, push).await;
        assert_eq!(code, 401, "{provider} webhook with a wrong secret");
    }

    // 4. A second commit rotates the sensitive value; an authentic GitHub webhook announces it
    //    and the rollout carries the new value.
    fixture.edit(
        "destinations/metrics-store.yaml",
        &sensitive_1.value,
        &sensitive_2.value,
    );
    fixture.commit_all("rotate the token");
    fixture.push(false);
    let second = fixture.expected_hashes()["linux-production"];
    let sig = github_signature(&github_secret.value, push.as_bytes());
    let code = webhook(
        &client,
        &server,
        "github",
        &[("x-hub-signature-256", &sig), ("x-github-event", "push")],
        push,
    )
    .await;
    assert_eq!(code / 100, 2, "authentic GitHub webhook");
    eventually(
        WAIT,
        "every agent applies the second revision",
        async || {
            agents
                .iter()
                .all(|a| a.state().applied_hash().map(|h| &h[..]) == Some(second.as_bytes()))
                .then_some(())
        },
    )
    .await;
    assert!(received_text(&agents[0]).contains(&sensitive_2.value));

    // 5. A rejected revision: the sensitive parameter holds a mapping (wrong type) with a
    //    third value. Announced by the GitLab and the generic webhooks, authentic.
    fixture.edit(
        "destinations/metrics-store.yaml",
        &format!("token: {}", sensitive_2.value),
        &format!("token:\n      value: {}", sensitive_3.value),
    );
    let bad_sha = fixture.commit_all("a token of the wrong type");
    fixture.push(false);
    let gitlab = &gitlab_token.value;
    let code = webhook(
        &client,
        &server,
        "gitlab",
        &[("x-gitlab-token", gitlab), ("x-gitlab-event", "Push Hook")],
        push,
    )
    .await;
    assert_eq!(code / 100, 2, "authentic GitLab webhook");
    let good_bearer = format!("Bearer {}", generic_token.value);
    let code = webhook(
        &client,
        &server,
        "generic",
        &[("authorization", &good_bearer)],
        "",
    )
    .await;
    assert_eq!(code / 100, 2, "authentic generic webhook");
    let status_url = server.api_url("/api/v1/status");
    eventually(WAIT, "the mistyped revision is rejected", async || {
        let st = get_json(&client, &status_url, &api_token.value).await;
        (st["last_rejected"]["revision"] == bad_sha.as_str()).then_some(())
    })
    .await;

    // 6. Every API route with the right token: nothing secret in any answer (sensitive values
    //    masked in rendered and effective configs, in agents' error messages, in diagnostics).
    let mut answers = String::new();
    for path in &protected {
        let (code, body) = get(&client, &server.api_url(path), Some(&api_token.value)).await;
        assert_eq!(code, 200, "GET {path}: {body}");
        answers.push_str(&format!("GET {path}\n{body}\n"));
    }
    let rendered = get(
        &client,
        &server.api_url("/api/v1/configurations/linux-production/rendered"),
        Some(&api_token.value),
    )
    .await
    .1;
    assert!(
        rendered.contains("***"),
        "the rendered config is masked:\n{rendered}"
    );
    let list = get_json(
        &client,
        &server.api_url("/api/v1/agents?limit=100"),
        &api_token.value,
    )
    .await;
    let items = list["items"].as_array().expect("agents");
    assert!(items.len() >= 5, "agents listed: {list}");
    for item in items {
        let uid = item["uid"].as_str().expect("uid");
        let path = format!("/api/v1/agents/{uid}");
        let (code, body) = get(&client, &server.api_url(&path), Some(&api_token.value)).await;
        assert_eq!(code, 200, "GET {path}: {body}");
        answers.push_str(&format!("GET {path}\n{body}\n"));
    }
    assert!(
        failing.is_none() || answers.contains("invalid token ***"),
        "the FAILED agent's message is listed, masked: {}",
        answers
            .lines()
            .filter(|l| l.contains("invalid token"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    for a in agents.iter().chain(&failing).chain([&impostor]) {
        a.stop(Duration::from_secs(5)).await;
    }
    // Every line the server will ever print, shutdown included, before looking for secrets.
    server.stop_gracefully();

    let everything = [
        &agent_secret,
        &wrong_agent_secret,
        &api_token,
        &wrong_api_token,
        &github_secret,
        &gitlab_token,
        &wrong_gitlab_token,
        &generic_token,
        &wrong_generic_token,
        &git_token,
        &sensitive_1,
        &sensitive_2,
        &sensitive_3,
    ];

    let logs = server.logs();
    // The logs are really at trace level, and really cover what happened.
    for needle in ["TRACE", "DEBUG", "gitamp listening"] {
        assert!(
            logs.contains(needle),
            "no {needle:?} in the server's output"
        );
    }
    if let Ok(path) = std::env::var("NO_SECRET_DUMP") {
        let _ = std::fs::write(path, &logs);
    }
    assert_no_secret("the server's output", &logs, &everything);
    assert_no_secret("the status API's answers", &answers, &everything);
}

/// A smart-HTTP Git "remote" that refuses every request with `401` and a Basic challenge, and
/// remembers the `Authorization` headers it was sent.
fn refusing_remote() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if line == "\r\n" || line == "\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("authorization")
                    && let Ok(mut s) = seen2.lock()
                {
                    s.push(value.trim().to_string());
                }
                line.clear();
            }
            let _ = conn.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_git_token_is_not_logged() {
    let b64 = base64::engine::general_purpose::STANDARD;
    let client = reqwest::Client::new();

    // a. The token in a file: sent by the credential callback as HTTP Basic, refused.
    let token = Secret::new("gittoken");
    let (port, seen) = refusing_remote();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_with_env(
        &tmp.path().join("data"),
        &[
            "--repo",
            &format!("http://127.0.0.1:{port}/config.git"),
            "--poll",
            "1",
            "--opamp-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
            "--git-token-file",
            s(&write_secret(tmp.path(), "git-token", &token)),
        ],
        LOG_ENV,
    );
    let basic = b64.encode(format!("x-access-token:{}", token.value));
    eventually(WAIT, "the remote is sent the token", async || {
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        seen.iter()
            .any(|h| h == &format!("Basic {basic}"))
            .then_some(())
    })
    .await;
    refused_fetch_is_reported_without(&server, &client, &token).await;
    server.stop_gracefully();
    let logs = server.logs();
    assert!(
        !logs.contains(&basic),
        "the Basic credentials are in the logs"
    );
    assert_no_secret("the server's output", &logs, &[&token]);
    drop(server);

    // b. The token in the URL's userinfo (discouraged: `ps` shows it), refused as well, with JSON
    //    logs this time: the URL is redacted wherever it is printed.
    let url_token = Secret::new("urltoken");
    let (port, _seen) = refusing_remote();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_with_env(
        &tmp.path().join("data"),
        &[
            "--repo",
            &format!(
                "http://deploy:{}@127.0.0.1:{port}/config.git",
                url_token.value
            ),
            "--log-format",
            "json",
            "--poll",
            "1",
            "--opamp-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ],
        LOG_ENV,
    );
    refused_fetch_is_reported_without(&server, &client, &url_token).await;
    server.stop_gracefully();
    assert_no_secret("the server's output", &server.logs(), &[&url_token]);
}

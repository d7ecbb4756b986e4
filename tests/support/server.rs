//! `gitamp serve` as a child process ([`Server`], [`GitOpsServer`]) and what tests ask of it:
//! the status API, `/metrics`, webhooks, and "a plan ran after this point"
//! ([`plan_after`]), the trigger a negative assertion must prove before it asserts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::git::GitFixture;
use super::poll::{eventually, eventually_blocking};
use super::{lossy_lines, workspace};

/// The generous upper bound the kit's own waits use (never a speed assertion).
pub const KIT_WAIT: Duration = Duration::from_secs(90);

/// A free loopback port (bound, then released: good enough for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `gitamp serve`.
pub struct Server {
    pub child: Child,
    pub opamp: SocketAddr,
    pub api: SocketAddr,
    pub data_dir: PathBuf,
    /// Every line the server printed, stderr (its logs) and stdout (the listening line), in
    /// the order they were read; collected in the background.
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The lines of stdout alone: the listening line is all a script should find there.
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// How many of its two output streams reached their end (both: every line is in `logs`).
    pub outputs_closed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Server {
    /// Start `gitamp serve` with `args` (plus `--data-dir`), wait for its listening line.
    pub fn start(data_dir: &Path, args: &[&str]) -> Server {
        Server::start_with_env(data_dir, args, &[])
    }

    /// [`Server::start`] with extra environment variables (set after the default
    /// `RUST_LOG=info,gitamp=debug`, so they may override it).
    pub fn start_with_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gitamp"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "info,gitamp=debug")
            // A developer's shell may set gitamp's own GITAMP_OTELCOL: a server checks revisions
            // with the collector only when its test passes `--otelcol`.
            .env_remove("GITAMP_OTELCOL")
            .envs(env.iter().copied())
            .env_remove("GITAMP_REPO")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gitamp serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let outputs_closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let logs2 = logs.clone();
        let closed2 = outputs_closed.clone();
        std::thread::spawn(move || {
            for line in lossy_lines(stderr) {
                if let Ok(mut l) = logs2.lock() {
                    l.push(line);
                }
            }
            closed2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let (tx, rx) = mpsc::channel();
        let logs3 = logs.clone();
        let stdout_lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stdout3 = stdout_lines.clone();
        let closed3 = outputs_closed.clone();
        std::thread::spawn(move || {
            for line in lossy_lines(stdout) {
                if let Some(rest) = line.strip_prefix("gitamp listening ") {
                    let _ = tx.send(rest.to_string());
                }
                if let Ok(mut l) = stdout3.lock() {
                    l.push(line.clone());
                }
                if let Ok(mut l) = logs3.lock() {
                    l.push(line);
                }
            }
            closed3.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let logs = logs.lock().map(|l| l.join("\n")).unwrap_or_default();
                panic!("gitamp serve did not start:\n{logs}");
            }
        };
        let mut opamp = None;
        let mut api = None;
        for part in line.split_whitespace() {
            if let Some(a) = part.strip_prefix("opamp=") {
                opamp = a.parse().ok();
            }
            if let Some(a) = part.strip_prefix("api=") {
                api = a.parse().ok();
            }
        }
        Server {
            child,
            opamp: opamp.expect("opamp address"),
            api: api.expect("api address"),
            data_dir: data_dir.to_path_buf(),
            logs,
            stdout: stdout_lines,
            outputs_closed,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/opamp", self.opamp)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}/v1/opamp", self.opamp)
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// `kill -9`: no shutdown, no flush.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn logs(&self) -> String {
        self.logs.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET a JSON document from the status API.
pub async fn get_json(url: &str) -> serde_json::Value {
    let resp = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    resp.json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// POST the generic webhook with a bearer token; returns the status code.
pub async fn post_webhook(server: &Server, token: &str) -> u16 {
    reqwest::Client::new()
        .post(server.api_url("/webhooks/generic"))
        .bearer_auth(token)
        .body("{}")
        .send()
        .await
        .expect("webhook POST")
        .status()
        .as_u16()
}

/// One sample of the server's `/metrics` (the sum over label sets), 0 when absent.
pub async fn metric(server: &Server, name: &str) -> f64 {
    let text = reqwest::get(server.api_url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The server's whole `/metrics` text.
pub async fn scrape(server: &Server) -> String {
    let resp = reqwest::get(server.api_url("/metrics"))
        .await
        .expect("GET /metrics");
    assert!(
        resp.status().is_success(),
        "GET /metrics: {}",
        resp.status()
    );
    resp.text().await.expect("metrics text")
}

/// Every sample of `name` in a scrape: its labels (values unescaped) and its value.
pub fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .map(|l| {
            let (labels, value) = match l.split_once('{') {
                Some((_, rest)) => {
                    let (labels, value) = rest.rsplit_once("} ").expect("a closed label set");
                    (parse_labels(labels), value)
                }
                None => (BTreeMap::new(), l.rsplit(' ').next().unwrap_or_default()),
            };
            let value = value
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("{l:?}: value {value:?}: {e}"));
            (labels, value)
        })
        .collect()
}

/// The value of the sample of `name` whose labels are exactly `labels`, if there is one.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples(text, name)
        .into_iter()
        .find(|(l, _)| *l == want)
        .map(|(_, v)| v)
}

/// `k="v",k2="v2"` into a map, undoing the text format's escapes (`\\`, `\"`, `\n`).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim_start_matches(',').trim().to_string();
        if key.is_empty() {
            return labels;
        }
        assert_eq!(chars.next(), Some('"'), "label {key} of {text:?} is quoted");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => panic!("{text:?} ends in an escape"),
                },
                c => value.push(c),
            }
        }
        labels.insert(key, value);
    }
}

/// Every agent of the status API (one page of up to 1,000).
pub async fn agents(server: &Server) -> Vec<serde_json::Value> {
    let list = get_json(&server.api_url("/api/v1/agents?limit=1000")).await;
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Write a webhook token file into `dir`; returns its path.
pub fn write_token(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("webhook-token");
    std::fs::write(&path, token).expect("write token");
    path
}

/// `gitamp serve` on a Git remote made from a fixture tree, woken by its generic webhook (it
/// polls once an hour), on a fixed OpAMP port so that a restart keeps the agents' endpoint.
pub struct GitOpsServer {
    pub fixture: GitFixture,
    pub server: Server,
    pub token: String,
    args: Vec<String>,
    data: tempfile::TempDir,
}

/// The flags of a server that follows `fixture`'s remote (polling only when told, webhooks
/// signed with the token in `token_file`), its OpAMP listener on `opamp_listen`.
pub fn gitops_args(fixture: &GitFixture, opamp_listen: &str, token_file: &Path) -> Vec<String> {
    vec![
        "--repo".into(),
        fixture.remote_url(),
        "--poll".into(),
        "3600".into(),
        "--opamp-listen".into(),
        opamp_listen.into(),
        "--api-listen".into(),
        "127.0.0.1:0".into(),
        "--webhook-token-file".into(),
        token_file.display().to_string(),
    ]
}

impl GitOpsServer {
    /// Serve `tree` (relative to the workspace) with `extra` flags.
    pub fn start(tree: &str, extra: &[&str]) -> GitOpsServer {
        let fixture = GitFixture::with_tree(&workspace().join(tree));
        let data = tempfile::tempdir().expect("tempdir");
        let token = "gitops-webhook-token".to_string();
        let token_file = write_token(data.path(), &token);
        let opamp = format!("127.0.0.1:{}", free_port());
        let mut args = gitops_args(&fixture, &opamp, &token_file);
        args.extend(extra.iter().map(|a| a.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = Server::start(&data.path().join("data"), &argv);
        GitOpsServer {
            fixture,
            server,
            token,
            args,
            data,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    /// `kill -9` the server, then start it again on the same data and ports.
    pub fn crash_and_restart(&mut self) {
        self.server.kill9();
        self.restart();
    }

    /// Start the server again (after `server.kill9()`) on the same data and ports.
    pub fn restart(&mut self) {
        let argv: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.server = Server::start(&self.data_dir(), &argv);
    }

    /// Commit everything in the work tree, push it, and ring the webhook; returns the commit.
    pub async fn commit_and_announce(&self, message: &str) -> String {
        let sha = self.fixture.commit_all(message);
        self.fixture.push(false);
        let status = post_webhook(&self.server, &self.token).await;
        assert_eq!(status / 100, 2, "webhook answered {status}");
        sha
    }
}

impl Server {
    /// SIGTERM and wait for the exit: a graceful stop (the store flushes its last batch). Then
    /// wait until both output streams are read to their end: [`Server::logs`] is complete, so a
    /// check that something is *not* in the logs sees every line.
    pub fn stop_gracefully(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let child = &mut self.child;
        let logs = self.logs.clone();
        eventually_blocking(
            Duration::from_secs(20),
            "gitamp serve exits on SIGTERM",
            || match child.try_wait() {
                Ok(Some(status)) => Ok(status),
                _ => Err(format!(
                    "still running; its log ends:\n{}",
                    tail(&logs.lock().map(|l| l.join("\n")).unwrap_or_default(), 20)
                )),
            },
        );
        let closed = self.outputs_closed.clone();
        eventually_blocking(
            Duration::from_secs(20),
            "gitamp serve's output is read to its end",
            || {
                let n = closed.load(std::sync::atomic::Ordering::SeqCst);
                if n == 2 {
                    Ok(())
                } else {
                    Err(format!("{n} of 2 streams closed"))
                }
            },
        );
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// How many plans the server has made (`gitamp_reconcile_duration_seconds_count`).
pub async fn reconcile_count(server: &Server) -> f64 {
    metric(server, "gitamp_reconcile_duration_seconds_count").await
}

/// Wait until the server has made `plans` more plans than it had made when called: the proof
/// that the state observed just before was planned on. A negative assertion ("nothing was
/// pushed") calls this after observing its trigger (a reconnect, a halt), so it cannot pass
/// merely because nothing was planned yet.
pub async fn plan_after(server: &Server, plans: u32, what: &str) {
    let start = reconcile_count(server).await;
    eventually(
        KIT_WAIT,
        &format!("{plans} plan(s) after {what}"),
        async || {
            let now = reconcile_count(server).await;
            if now >= start + f64::from(plans) {
                Ok(())
            } else {
                Err(format!("reconcile count {now}, was {start}"))
            }
        },
    )
    .await;
}

/// `sha256=<hex>`: GitHub's `X-Hub-Signature-256` of `body` under `secret`.
pub fn github_signature(secret: impl AsRef<[u8]>, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_ref()).expect("hmac");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// GET with an optional bearer token: (status, body).
pub async fn api_get(client: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let code = resp.status().as_u16();
    let streamed = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streamed {
        // Server-sent events never end: the answer is the first event.
        let mut resp = resp;
        let mut text = String::new();
        while !text.contains("\n\n") && text.len() < 1 << 16 {
            match resp.chunk().await {
                Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk)),
                _ => break,
            }
        }
        return (code, text);
    }
    (code, resp.text().await.unwrap_or_default())
}

/// GET a JSON document with a bearer token (200 expected).
pub async fn api_get_json(client: &reqwest::Client, url: &str, token: &str) -> serde_json::Value {
    let (code, body) = api_get(client, url, Some(token)).await;
    assert_eq!(code, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"))
}

/// POST a JSON body to `/webhooks/<provider>` with extra headers: the status code.
pub async fn post_webhook_as(
    client: &reqwest::Client,
    server: &Server,
    provider: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> u16 {
    let mut req = client
        .post(server.api_url(&format!("/webhooks/{provider}")))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("webhook POST").status().as_u16()
}

//! Shared helpers for end-to-end tests: real Git repositories (made with the `git` CLI), the
//! `gitamp` binary as a child process, and small HTTP calls to its status API.
#![allow(dead_code)]

pub mod collector;
pub mod opamp_go;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gitamp_core::ConfigHash;

/// The workspace root (where example-repo/ lives).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run `git` in `dir`, panicking with its output on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=gitamp test",
            "-c",
            "user.email=test@gitamp.invalid",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Copy a folder tree (files only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// A bare "remote" and a work clone that commits and pushes to it.
pub struct GitFixture {
    pub dir: tempfile::TempDir,
}

impl GitFixture {
    /// A remote whose `main` holds a copy of `example-repo/`.
    pub fn with_example_repo() -> GitFixture {
        GitFixture::with_tree(&workspace().join("example-repo"))
    }

    /// A bare remote and a work clone holding a copy of `tree`, committed and pushed.
    pub fn with_tree(tree: &Path) -> GitFixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let remote = dir.path().join("remote.git");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&remote).expect("mkdir");
        git(&remote, &["init", "--bare", "-q", "-b", "main"]);
        git(
            dir.path(),
            &["clone", "-q", remote.to_str().expect("utf8"), "work"],
        );
        copy_tree(tree, &work);
        let f = GitFixture { dir };
        f.commit_all("initial import");
        f.push(false);
        f
    }

    pub fn remote_url(&self) -> String {
        format!("file://{}", self.dir.path().join("remote.git").display())
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn write(&self, rel: &str, contents: &str) {
        let path = self.work().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, contents).expect("write");
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.work().join(rel)).expect("read")
    }

    /// Replace `from` by `to` in a file, asserting it was there.
    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let text = self.read(rel);
        assert!(text.contains(from), "{rel} does not contain {from:?}");
        self.write(rel, &text.replacen(from, to, 1));
    }

    /// Commit everything; returns the new commit SHA.
    pub fn commit_all(&self, message: &str) -> String {
        git(&self.work(), &["add", "-A"]);
        git(&self.work(), &["commit", "-q", "-m", message]);
        git(&self.work(), &["rev-parse", "HEAD"])
    }

    pub fn push(&self, force: bool) {
        if force {
            git(&self.work(), &["push", "-q", "-f", "origin", "HEAD:main"]);
        } else {
            git(&self.work(), &["push", "-q", "origin", "HEAD:main"]);
        }
    }

    /// The hashes the repository's work tree renders to, per configuration (the same core the
    /// server runs, so the test knows what agents must end up with).
    pub fn expected_hashes(&self) -> BTreeMap<String, ConfigHash> {
        let snap = gitamp::source::dir::read_dir(&self.work(), 1 << 20)
            .expect("read work tree")
            .snapshot;
        let revision = gitamp_core::compile(&snap)
            .unwrap_or_else(|r| panic!("work tree does not compile:\n{}", r.diagnostics));
        revision
            .rendered
            .configurations
            .iter()
            .map(|(name, r)| (name.clone(), r.hash))
            .collect()
    }
}

/// A free loopback port (bound, then released: good enough for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The lines of a child's output, invalid UTF-8 replaced: reading stops only at end of file, so
/// the child never blocks on a full pipe because one line was not UTF-8.
pub fn lossy_lines(r: impl std::io::Read) -> impl Iterator<Item = String> {
    BufReader::new(r)
        .split(b'\n')
        .map_while(Result::ok)
        .map(|l| {
            String::from_utf8_lossy(&l)
                .trim_end_matches('\r')
                .to_string()
        })
}

/// A running `gitamp serve`.
pub struct Server {
    pub child: Child,
    pub opamp: SocketAddr,
    pub api: SocketAddr,
    pub data_dir: PathBuf,
    /// Every line the server printed, stdout (where its tracing logs go) and stderr, in the
    /// order they were read; collected in the background.
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
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
        let logs2 = logs.clone();
        std::thread::spawn(move || {
            for line in lossy_lines(stderr) {
                if let Ok(mut l) = logs2.lock() {
                    l.push(line);
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        let logs3 = logs.clone();
        std::thread::spawn(move || {
            for line in lossy_lines(stdout) {
                if let Some(rest) = line.strip_prefix("gitamp listening ") {
                    let _ = tx.send(rest.to_string());
                }
                if let Ok(mut l) = logs3.lock() {
                    l.push(line);
                }
            }
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

/// Poll `check` every 100 ms until it returns `Some`, or panic after `timeout` with `what`.
pub async fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A test peer built from registries by `scripts/build-peers.sh`: the Collector Builder's
/// collector (`otelcol-gitamp`), the collector's `opampsupervisor`, the opamp-go driver
/// (`opamp-driver`). Found through its environment variable (`GITAMP_TEST_OTELCOL`,
/// `GITAMP_TEST_SUPERVISOR`, `GITAMP_TEST_OPAMP_GO`; not `GITAMP_OTELCOL`, which is gitamp's
/// own setting), else in the build script's default cache (`GITAMP_PEERS_DIR`). A missing peer fails the test with the command that builds it:
/// nothing is skipped silently.
pub fn peer(env_var: &str, file: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{env_var}={} does not exist", p.display());
        return p;
    }
    let cache = std::env::var_os("GITAMP_PEERS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/gitamp-peers")))
        .unwrap_or_else(|| PathBuf::from(".cache/gitamp-peers"));
    let p = cache.join("bin").join(file);
    assert!(
        p.is_file(),
        "test peer {file} not found ({env_var} unset, {} missing): build it with \
         `scripts/build-peers.sh` (needs Go 1.26 and the Go module proxy), or run the \
         README's test command `scripts/test.sh`, which does",
        p.display()
    );
    p
}

/// The collector built by the Collector Builder from `tests/collector/manifest.yaml`.
pub fn otelcol() -> PathBuf {
    peer("GITAMP_TEST_OTELCOL", "otelcol-gitamp")
}

/// The collector's OpAMP supervisor, built from `tests/collector/supervisor`.
pub fn supervisor() -> PathBuf {
    peer("GITAMP_TEST_SUPERVISOR", "opampsupervisor")
}

/// The opamp-go client driver, built from `tests/opamp-go`.
pub fn opamp_go_driver() -> PathBuf {
    peer("GITAMP_TEST_OPAMP_GO", "opamp-driver")
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

impl GitOpsServer {
    /// Serve `tree` (relative to the workspace) with `extra` flags.
    pub fn start(tree: &str, extra: &[&str]) -> GitOpsServer {
        let fixture = GitFixture::with_tree(&workspace().join(tree));
        let data = tempfile::tempdir().expect("tempdir");
        let token = "gitops-webhook-token".to_string();
        let token_file = write_token(data.path(), &token);
        let mut args: Vec<String> = vec![
            "--repo".into(),
            fixture.remote_url(),
            "--poll".into(),
            "3600".into(),
            "--opamp-listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--api-listen".into(),
            "127.0.0.1:0".into(),
            "--webhook-token-file".into(),
            token_file.display().to_string(),
        ];
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

/// `(code, file, line)` of every diagnostic of a `gitamp validate --format json` report.
pub fn reported(v: &serde_json::Value) -> Vec<(String, String, u64)> {
    let Some(items) = v["diagnostics"].as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .map(|d| {
            let file = d["location"]["file"].as_str().unwrap_or_default();
            (
                d["code"].as_str().unwrap_or_default().to_string(),
                file.to_string(),
                d["location"]["line"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// One case of a diagnostics corpus: `<dir>/<case>/repo` and the diagnostics its
/// `expected.txt` lists (`E012 configurations/prod.yaml:14` lines; `#` comments and blank lines
/// ignored).
pub struct CorpusCase {
    pub name: String,
    pub repo: PathBuf,
    /// The non-comment lines of `expected.txt`, as written.
    pub expected: Vec<String>,
}

impl CorpusCase {
    /// What a `--format json` report (`reported`) lacks of `expected.txt`, one failure message
    /// each; an empty or missing `expected.txt` and unparsable lines are failures too.
    pub fn missing_from(&self, got: &[(String, String, u64)]) -> Vec<String> {
        if self.expected.is_empty() {
            return vec![format!("{}: expected.txt is missing or empty", self.name)];
        }
        let shown = || {
            got.iter()
                .map(|(c, f, l)| format!("{c} {f}:{l}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.expected
            .iter()
            .filter_map(|line| match parse_expected(line) {
                None => Some(format!(
                    "{}: cannot parse expected line {line:?}",
                    self.name
                )),
                Some(want) if !got.contains(&want) => {
                    Some(format!("{}: missing {line}\n  got: {}", self.name, shown()))
                }
                Some(_) => None,
            })
            .collect()
    }
}

/// Every case under `dir` (relative to the workspace) that has a `repo` folder, by name.
pub fn corpus_cases(dir: &str) -> Vec<CorpusCase> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(workspace().join(dir))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.retain(|p| p.join("repo").is_dir());
    paths.sort();
    paths
        .into_iter()
        .map(|case| {
            let text = std::fs::read_to_string(case.join("expected.txt")).unwrap_or_default();
            CorpusCase {
                name: case
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                repo: case.join("repo"),
                expected: text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string)
                    .collect(),
            }
        })
        .collect()
}

/// Parse `E012 configurations/prod.yaml:14`.
fn parse_expected(line: &str) -> Option<(String, String, u64)> {
    let (code, at) = line.trim().split_once(char::is_whitespace)?;
    let (file, line) = at.trim().rsplit_once(':')?;
    Some((code.to_string(), file.to_string(), line.parse().ok()?))
}

//! What gitamp ships as: the release tarball (`scripts/release.sh`), the container image
//! (`Dockerfile`), the systemd unit (`deploy/systemd`), and the scripts' shellcheck. Real tools
//! throughout: GNU tar and sha256sum on the archive, hadolint on the Dockerfile (or a real
//! `docker build` where an engine runs), `systemd-analyze` on the unit, and the server itself
//! under a read-only root filesystem.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::cli::{explain, stderr, stdout};
use support::release::{packaged, release_name, run_release, version};
use support::{GitFixture, eventually, get_json, git, workspace};

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// A tool the project installs into `.venv/bin` (scripts/lint-tools.sh); missing is a failure
/// that names the command to run, never a skip.
fn venv_tool(name: &str) -> PathBuf {
    let path = workspace().join(".venv/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/lint-tools.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

// ---------------------------------------------------------------- the release tarball

/// `tar -tv` lines of an archive.
fn listing(tarball: &Path) -> Vec<String> {
    let out = run(Command::new("tar")
        .args(["--numeric-owner", "--full-time", "-tvzf"])
        .arg(tarball));
    assert!(out.status.success(), "{}", explain(&out));
    stdout(&out).lines().map(str::to_string).collect()
}

#[test]
fn release_tarball_has_the_layout_checksums_and_fixed_metadata() {
    let dir = packaged();
    let name = release_name();
    let tarball = dir.join(format!("{name}.tar.gz"));
    assert!(tarball.is_file(), "no {}", tarball.display());

    // SHA256SUMS verifies with the standard tool, and names exactly the archive.
    let out = run(Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(dir));
    assert!(out.status.success(), "{}", explain(&out));
    assert_eq!(stdout(&out), format!("{name}.tar.gz: OK\n"));

    // Entries sorted, owned by 0/0, every time the commit's (SOURCE_DATE_EPOCH).
    let epoch = git(&workspace(), &["log", "-1", "--format=%ct", "HEAD"]);
    let commit_time = git(
        &workspace(),
        &[
            "log",
            "-1",
            "--format=%cd",
            "--date=format-local:%Y-%m-%d %H:%M:%S",
        ],
    );
    let lines = listing(&tarball);
    let paths: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "entries are sorted");
    for line in &lines {
        assert!(line.contains(" 0/0 "), "owner 0/0: {line}");
        assert!(
            line.contains(&commit_time),
            "time {commit_time} ({epoch}): {line}"
        );
    }
    let binary_entry = lines
        .iter()
        .find(|l| l.ends_with(&format!(" {name}/gitamp")))
        .unwrap_or_else(|| panic!("no {name}/gitamp in {lines:#?}"));
    assert!(binary_entry.starts_with("-rwxr-xr-x "), "{binary_entry}");
    assert!(paths.contains(&format!("{name}/README.md").as_str()));

    // Completions and a man page exactly when the binary can make them.
    let has = |cmd: &str| {
        run(Command::new(env!("CARGO_BIN_EXE_gitamp")).args([cmd, "--help"]))
            .status
            .success()
    };
    let completions = paths.iter().any(|p| p.contains("/completions/"));
    assert_eq!(completions, has("completion"), "{paths:?}");
    let man = paths.contains(&format!("{name}/man/gitamp.1").as_str());
    assert_eq!(man, has("man"), "{paths:?}");

    // The packaged binary is stripped, runs, and names its commit.
    let unpacked = tempfile::tempdir().expect("tempdir");
    let out = run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(unpacked.path()));
    assert!(out.status.success(), "{}", explain(&out));
    let bin = unpacked.path().join(&name).join("gitamp");
    let out = run(Command::new(&bin).arg("--version"));
    // The test binary was built from HEAD (build.rs rebuilds it when HEAD moves).
    let commit = git(&workspace(), &["rev-parse", "--short=12", "HEAD"]);
    assert!(
        stdout(&out).starts_with(&format!("gitamp {} (commit {commit}, ", version())),
        "{}",
        explain(&out)
    );
    let out = run(Command::new("readelf").arg("-S").arg(&bin));
    assert!(!stdout(&out).contains(".symtab"), "not stripped");
}

#[test]
fn release_is_byte_for_byte_reproducible() {
    let again = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let out = run_release(again.path(), &[], &[]);
    assert!(out.status.success(), "{}", explain(&out));
    for file in [format!("{}.tar.gz", release_name()), "SHA256SUMS".into()] {
        let a = std::fs::read(packaged().join(&file)).expect("first");
        let b = std::fs::read(again.path().join(&file)).expect("second");
        assert!(a == b, "{file} differs between two runs");
    }
    // The script prints the glibc floor it measured.
    assert!(
        stdout(&out).contains("glibc floor: 2."),
        "{}",
        explain(&out)
    );
}

#[test]
fn release_fails_when_the_glibc_floor_rises() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = run_release(out_dir.path(), &[("GITAMP_GLIBC_MAX", "2.2.5")], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    assert!(
        stderr(&out).contains("is above 2.2.5"),
        "names the floor and the limit: {}",
        explain(&out)
    );
    // Nothing half-made is left for an upload step to pick up.
    let left: Vec<_> = std::fs::read_dir(out_dir.path())
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn release_refuses_bad_input() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    // A binary that is not this version of gitamp.
    let out = Command::new("bash")
        .arg(workspace().join("scripts/release.sh"))
        .args(["--binary", "/bin/echo", "--out"])
        .arg(out_dir.path())
        .output()
        .expect("bash");
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    assert!(
        stderr(&out).contains(&format!("but Cargo.toml's version is {}", version())),
        "{}",
        explain(&out)
    );
    let out = run_release(out_dir.path(), &[], &["--frobnicate"]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    assert!(
        stderr(&out).contains("unknown argument '--frobnicate'"),
        "{}",
        explain(&out)
    );
    let out = run_release(out_dir.path(), &[("SOURCE_DATE_EPOCH", "yesterday")], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    assert!(
        stderr(&out).contains("SOURCE_DATE_EPOCH"),
        "{}",
        explain(&out)
    );
}

// ---------------------------------------------------------------- the container image

/// `Dockerfile` instructions, continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (word, rest) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((word.to_uppercase(), rest.trim().to_string()));
        current.clear();
    }
    out
}

/// The rules of our own the linter does not know: pinned bases, a non-root user, the data
/// volume and the ports the server listens on, and build arguments that reach the labels.
fn check_our_dockerfile_rules(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let ins = instructions(text);
    let mut stages = Vec::new();
    for (word, rest) in &ins {
        if word != "FROM" {
            continue;
        }
        let parts: Vec<&str> = rest.split_whitespace().collect();
        let image = parts.iter().find(|p| !p.starts_with("--")).copied();
        let image = image.unwrap_or("");
        if !stages.contains(&image) {
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
            let pinned = image.contains("@sha256:")
                || (tag.chars().any(|c| c.is_ascii_digit()) && tag.contains('.'));
            if !pinned || tag == "latest" || image.contains('$') {
                problems.push(format!(
                    "FROM {image}: base images name an exact release (x.y tag) or a digest"
                ));
            }
        }
        if let Some(i) = parts.iter().position(|p| p.eq_ignore_ascii_case("AS")) {
            stages.push(parts.get(i + 1).copied().unwrap_or(""));
        }
    }
    let last_from = ins.iter().rposition(|(w, _)| w == "FROM").unwrap_or(0);
    let user = ins[last_from..]
        .iter()
        .rev()
        .find(|(w, _)| w == "USER")
        .map(|(_, u)| u.clone());
    match user.as_deref() {
        None => problems.push("the runtime stage sets no USER (it would run as root)".into()),
        Some(u) => {
            let name = u.split(':').next().unwrap_or("");
            if name == "root" || name == "0" || name.parse::<u32>().is_err() {
                problems.push(format!(
                    "USER {u}: a numeric, non-root user (so runAsNonRoot can check it)"
                ));
            }
        }
    }
    let runtime: Vec<&(String, String)> = ins[last_from..].iter().collect();
    let has = |word: &str, needle: &str| {
        runtime
            .iter()
            .any(|(w, r)| w == word && r.split_whitespace().any(|t| t.contains(needle)))
    };
    for (word, needle) in [
        ("EXPOSE", "4320"),
        ("EXPOSE", "8080"),
        ("VOLUME", "/var/lib/gitamp"),
        ("ENV", "GITAMP_DATA_DIR=/var/lib/gitamp"),
        ("ENV", "GITAMP_API_LISTEN=0.0.0.0:8080"),
        ("ENV", "GITAMP_OPAMP_LISTEN=0.0.0.0:4320"),
        (
            "LABEL",
            "org.opencontainers.image.revision=\"$GITAMP_BUILD_COMMIT\"",
        ),
        ("ARG", &format!("GITAMP_VERSION={}", version())),
    ] {
        if !has(word, needle) {
            problems.push(format!("the runtime stage lacks {word} {needle}"));
        }
    }
    for arg in ["GITAMP_BUILD_COMMIT", "GITAMP_BUILD_DATE"] {
        let stages_with = ins
            .iter()
            .filter(|(w, r)| w == "ARG" && r.starts_with(arg))
            .count();
        if stages_with < 2 {
            problems.push(format!(
                "ARG {arg} in both stages (build.rs and the labels)"
            ));
        }
    }
    if ins.iter().any(|(w, _)| w == "HEALTHCHECK") {
        problems.push("HEALTHCHECK: the runtime image has no HTTP client to run it".into());
    }
    problems
}

#[test]
fn our_dockerfile_rules_catch_what_they_claim() {
    let good = std::fs::read_to_string(workspace().join("Dockerfile")).expect("Dockerfile");
    assert_eq!(check_our_dockerfile_rules(&good), Vec::<String>::new());
    // Each rule on a broken copy: a check that cannot fail checks nothing.
    for (from, to, problem) in [
        (
            "FROM debian:12.12-slim",
            "FROM debian:latest",
            "FROM debian:latest",
        ),
        (
            "FROM debian:12.12-slim",
            "FROM debian:bookworm-slim",
            "exact release",
        ),
        ("USER 10001:10001", "USER root", "USER root"),
        ("USER 10001:10001", "", "sets no USER"),
        ("EXPOSE 4320 8080", "EXPOSE 4320", "EXPOSE 8080"),
        ("VOLUME [\"/var/lib/gitamp\"]", "", "VOLUME"),
    ] {
        assert!(good.contains(from), "{from}");
        let bad = good.replace(from, to);
        let problems = check_our_dockerfile_rules(&bad);
        assert!(
            problems.iter().any(|p| p.contains(problem)),
            "{from} -> {to}: {problems:?}"
        );
    }
}

#[test]
fn dockerfile_builds_or_passes_hadolint() {
    let dockerfile = workspace().join("Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).expect("Dockerfile");
    let problems = check_our_dockerfile_rules(&text);
    assert!(problems.is_empty(), "{problems:#?}");
    // The builder is the toolchain Cargo.toml asks for.
    let cargo = std::fs::read_to_string(workspace().join("Cargo.toml")).expect("Cargo.toml");
    let rust_version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("rust-version");
    assert!(
        text.contains(&format!("FROM rust:{rust_version}.")),
        "the builder image is not rust {rust_version}"
    );
    let ignore = std::fs::read_to_string(workspace().join(".dockerignore")).expect(".dockerignore");
    for entry in [".git", "target", ".venv"] {
        assert!(
            ignore.lines().any(|l| l == entry),
            ".dockerignore lacks {entry}"
        );
    }

    // A real build where a Docker engine runs; hadolint (the Dockerfile linter) everywhere.
    let engine = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if engine {
        let tag = format!("gitamp-test:{}", version());
        let out = run(Command::new("docker")
            .args([
                "build",
                "-t",
                &tag,
                "--build-arg",
                "GITAMP_BUILD_COMMIT=test",
                ".",
            ])
            .current_dir(workspace()));
        assert!(out.status.success(), "{}", explain(&out));
        let out = run(Command::new("docker").args([
            "run",
            "--rm",
            "--read-only",
            "--tmpfs",
            "/tmp",
            &tag,
            "--version",
        ]));
        assert!(
            stdout(&out).starts_with(&format!("gitamp {} (commit test", version())),
            "{}",
            explain(&out)
        );
    } else {
        eprintln!("no Docker engine (docker info failed): linting the Dockerfile with hadolint");
    }
    let out = run(Command::new(venv_tool("hadolint"))
        .args(["--failure-threshold", "info"])
        .arg(&dockerfile));
    assert!(out.status.success(), "hadolint:\n{}", explain(&out));
    // hadolint finds what it should (the linter really runs on our file's syntax).
    let bad = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        bad.path().join("Dockerfile"),
        text.replace("FROM debian:12.12-slim", "FROM debian:latest"),
    )
    .expect("write");
    let out = run(Command::new(venv_tool("hadolint")).arg(bad.path().join("Dockerfile")));
    assert!(
        !out.status.success() && stdout(&out).contains("DL3007"),
        "{}",
        explain(&out)
    );
}

/// What the image promises with `--read-only --tmpfs /tmp -v data:/var/lib/gitamp`: the server
/// fetches a Git remote, keeps its store and serves agents with every other path read-only.
#[tokio::test]
async fn serves_from_a_read_only_root_filesystem() {
    let fixture = GitFixture::with_example_repo();
    let sha = git(&fixture.work(), &["rev-parse", "HEAD"]);
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let (data, tmp) = (root.path().join("data"), root.path().join("tmp"));
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::create_dir_all(&tmp).expect("mkdir");
    let mut cmd = Command::new("bash");
    cmd.arg(workspace().join("tests/packaging/read-only-root.sh"))
        .arg(&data)
        .arg(&tmp)
        .arg(env!("CARGO_BIN_EXE_gitamp"))
        .arg("serve")
        .args(["--repo", &fixture.remote_url(), "--poll", "3600"])
        .args([
            "--opamp-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .args(["--demo-agents", "3", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "info")
        .env_remove("GITAMP_OTELCOL");
    let mut server = ChildServer::start(cmd);

    let status_url = format!("http://{}/api/v1/status", server.api);
    eventually(
        Duration::from_secs(90),
        "the commit is served and the demo agents are synced",
        async || {
            let st = get_json(&status_url).await;
            let ok =
                st["current_revision"] == sha.as_str() && st["agents"]["by_status"]["synced"] == 3;
            if ok { Ok(()) } else { Err(st.to_string()) }
        },
    )
    .await;
    server.stop();
    let logs = server.logs();
    assert_eq!(server.exit, Some(0), "graceful stop:\n{logs}");
    assert!(
        !logs.contains("Read-only file system") && !logs.contains("os error 30"),
        "{logs}"
    );
    assert!(
        data.join("gitamp.db").is_file(),
        "the store is in the data dir"
    );
    assert!(
        data.join("repos").is_dir(),
        "the Git cache is in the data dir"
    );
}

/// `gitamp serve` started through a wrapper (here: the read-only root): its listening line, its
/// logs, a graceful stop.
struct ChildServer {
    child: std::process::Child,
    api: String,
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// How many of the two output streams were read to their end.
    closed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    exit: Option<i32>,
}

impl ChildServer {
    fn start(mut cmd: Command) -> ChildServer {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for (stream, tx) in [
            (Box::new(stdout) as Box<dyn std::io::Read + Send>, Some(tx)),
            (Box::new(stderr), None),
        ] {
            let (logs, closed) = (logs.clone(), closed.clone());
            std::thread::spawn(move || {
                for line in support::lossy_lines(stream) {
                    if let (Some(tx), Some(rest)) = (&tx, line.strip_prefix("gitamp listening ")) {
                        let _ = tx.send(rest.to_string());
                    }
                    if let Ok(mut l) = logs.lock() {
                        l.push(line);
                    }
                }
                closed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "gitamp serve did not start:\n{}",
                logs.lock().map(|l| l.join("\n")).unwrap_or_default()
            );
        };
        let api = line
            .split_whitespace()
            .find_map(|p| p.strip_prefix("api="))
            .expect("api= in the listening line")
            .to_string();
        ChildServer {
            child,
            api,
            logs,
            closed,
            exit: None,
        }
    }

    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = support::eventually_blocking(
            Duration::from_secs(30),
            "gitamp serve exits on SIGTERM",
            || self.child.try_wait().ok().flatten(),
        );
        self.exit = status.code();
        // Every line read, so a check that something is *not* in the logs sees them all.
        let closed = self.closed.clone();
        support::eventually_blocking(Duration::from_secs(20), "both outputs end", || {
            (closed.load(std::sync::atomic::Ordering::SeqCst) == 2).then_some(())
        });
    }

    fn logs(&self) -> String {
        self.logs.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- the systemd unit

const UNIT: &str = "deploy/systemd/gitamp.service";

/// Directives the unit must keep: state where systemd manages it, no privileges, the hardening
/// `systemd-analyze security` scores, and enough file descriptors for a fleet.
const REQUIRED: &[&str] = &[
    "DynamicUser=yes",
    "StateDirectory=gitamp",
    "Environment=GITAMP_DATA_DIR=%S/gitamp",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "NoNewPrivileges=yes",
    "CapabilityBoundingSet=",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "SystemCallFilter=@system-service",
    "MemoryDenyWriteExecute=yes",
    "LockPersonality=yes",
    "Restart=on-failure",
    "LimitNOFILE=65536",
];

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let text = std::fs::read_to_string(workspace().join(UNIT)).expect("unit");
    for directive in REQUIRED {
        assert!(
            text.lines().any(|l| l.trim() == *directive),
            "{UNIT} lacks {directive}"
        );
    }
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        analyze.is_ok_and(|o| o.status.success()),
        "systemd-analyze is missing: apt-get install systemd (scripts/test.sh does)"
    );
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("gitamp.service");
    let text = text.replace("/usr/local/bin/gitamp", env!("CARGO_BIN_EXE_gitamp"));
    std::fs::write(&unit, &text).expect("write unit");
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&unit));
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify:\n{}",
        explain(&out)
    );
    // A typo is a warning systemd would only log at start: verify must see it.
    let typo = dir.path().join("typo.service");
    std::fs::write(&typo, text.replace("ProtectHome=", "ProtectHom=")).expect("write");
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&typo));
    assert!(stderr(&out).contains("ProtectHom"), "{}", explain(&out));

    // The exposure score systemd itself gives the hardening (0 best, 10 worst; "OK" ≤ 2.0).
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit));
    assert!(out.status.success(), "{}", explain(&out));
    let text = stdout(&out);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for gitamp.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level:\n{text}"));
    assert!(score <= 2.0, "exposure {score} (above 2.0):\n{text}");
}

#[test]
fn systemd_env_file_names_only_real_settings() {
    let help = support::gitamp(&["serve", "--help"]);
    let known: Vec<String> = stdout(&help)
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("GITAMP_"))
        .map(str::to_string)
        .collect();
    assert!(
        known.iter().any(|k| k == "GITAMP_REPO"),
        "{}",
        explain(&help)
    );
    let env = std::fs::read_to_string(workspace().join("deploy/systemd/gitamp.env")).expect("env");
    let mut names = 0;
    for line in env.lines() {
        // Settings, and commented-out examples of settings (`#GITAMP_REPO=...`).
        let setting = line.strip_prefix('#').unwrap_or(line);
        let Some((name, value)) = setting.split_once('=') else {
            continue;
        };
        if !name.starts_with("GITAMP_") {
            continue;
        }
        names += 1;
        assert!(
            known.contains(&name.to_string()),
            "{line}: not a setting of gitamp serve"
        );
        assert!(
            !value.contains(' ') && !value.contains('"'),
            "{line}: EnvironmentFile values stay unquoted and unspaced"
        );
    }
    assert!(names >= 10, "the example shows the settings ({names})");
}

// ---------------------------------------------------------------- shell scripts

#[test]
fn scripts_pass_shellcheck() {
    let mut scripts = vec![workspace().join(".ci/run")];
    for dir in ["scripts", "tests/packaging"] {
        for entry in std::fs::read_dir(workspace().join(dir)).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "sh") {
                scripts.push(path);
            }
        }
    }
    scripts.sort();
    let out = run(Command::new(venv_tool("shellcheck")).args(&scripts));
    assert!(out.status.success(), "shellcheck:\n{}", explain(&out));
}

//! `gitamp reconcile --dry-run` end to end: a real Git repository with two commits (the example
//! repository, then a change), golden plans in every format with and without an agents file,
//! exit codes, and a plan against a running `gitamp serve` with simulated agents.
//!
//! Goldens live in `tests/golden/dry-run/`; regenerate them with `UPDATE_GOLDEN=1`. Commit SHAs
//! vary between runs (commit times), so they are replaced by `<BASE>` before comparing.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use gitamp_core::ConfigHash;
use gitamp_opamp::agent::{AgentHandle, AgentOptions};
use support::cli::{code, explain, gitamp_at, json_of, stdout};
use support::{GitFixture, Server, eventually, get_json, git};

/// The second commit's new configuration: it ties with `staging` for agents labelled role=edge.
const EDGE: &str = "apiVersion: gitamp.dev/v1
kind: Configuration
metadata:
  name: edge
spec:
  selector:
    matchLabels: {role: edge}
  priority: 10
  sources: [otlp-default]
  processors: [batch]
  destinations: [otel-gateway]
";

/// A test repository: `main` (pushed, so `origin/main` exists) holds example-repo; HEAD adds a
/// commit that retags production telemetry, removes `default` and adds `edge`.
struct Repo {
    fixture: GitFixture,
    base_sha: String,
    base: BTreeMap<String, ConfigHash>,
    head: BTreeMap<String, ConfigHash>,
}

fn repo() -> Repo {
    let fixture = GitFixture::with_example_repo();
    let base_sha = git(&fixture.work(), &["rev-parse", "HEAD"]);
    let base = fixture.expected_hashes();
    fixture.edit(
        "processors/env-production.yaml",
        "team: platform",
        "team: observability",
    );
    std::fs::remove_file(fixture.work().join("configurations/default.yaml"))
        .expect("remove default.yaml");
    fixture.write("configurations/edge.yaml", EDGE);
    fixture.commit_all("retag production, drop the catch-all, add edge");
    let head = fixture.expected_hashes();
    Repo {
        fixture,
        base_sha,
        base,
        head,
    }
}

/// The fleet of the agents-file tests: agents on both production configurations (one already on
/// the new hash), a staging agent with nothing to do, one conflict, one left unmanaged.
fn agents_file(repo: &Repo) -> String {
    let b = |n: &str| repo.base[n].to_hex();
    let h = |n: &str| repo.head[n].to_hex();
    let prod = |os: &str, host: &str| serde_json::json!({"deployment.environment": "production", "os.type": os, "host.name": host});
    serde_json::to_string_pretty(&serde_json::json!([
        {"instance_uid": "01-prod-linux-a", "labels": prod("linux", "prod-linux-a"), "reported_hash": b("linux-production")},
        {"instance_uid": "02-prod-linux-b", "labels": prod("linux", "prod-linux-b"), "reported_hash": b("linux-production")},
        {"instance_uid": "03-prod-linux-c", "labels": prod("linux", "prod-linux-c"), "reported_hash": b("linux-production")},
        {"uid": "04-prod-linux-d", "labels": prod("linux", "prod-linux-d"), "reported_hash": h("linux-production"),
         "reported_status": "applied", "capabilities": ["AcceptsRemoteConfig", "ReportsRemoteConfig"]},
        {"instance_uid": "05-prod-windows-a", "labels": prod("windows", "prod-windows-a"), "reported_hash": b("windows-production")},
        {"instance_uid": "06-staging-a", "labels": {"deployment.environment": "staging", "os.type": "linux", "host.name": "staging-a"},
         "reported_hash": b("staging")},
        {"instance_uid": "07-edge-a", "labels": {"deployment.environment": "staging", "os.type": "linux", "role": "edge", "host.name": "edge-a"},
         "reported_hash": b("staging")},
        {"instance_uid": "08-dev-mac", "labels": {"deployment.environment": "dev", "os.type": "macos", "host.name": "dev-mac"},
         "reported_hash": b("default")},
    ]))
    .expect("encode agents")
}

/// Replace what varies between runs (commit SHAs) by placeholders.
fn normalize(text: &str, repo: &Repo) -> String {
    text.replace(&repo.base_sha, "<BASE>")
        .replace(&repo.base_sha[..12], "<BASE>")
}

fn golden_dir() -> PathBuf {
    support::workspace().join("tests/golden/dry-run")
}

fn check_golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden_dir()).expect("mkdir golden");
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    if expected != actual {
        let diff = similar::TextDiff::from_lines(&expected, actual)
            .unified_diff()
            .header("golden", "actual")
            .to_string();
        panic!("{name} differs from its golden file (UPDATE_GOLDEN=1 to accept):\n{diff}");
    }
}

#[test]
fn golden_plans_with_base_and_agents_file() {
    let repo = repo();
    let work = repo.fixture.work();
    std::fs::write(
        repo.fixture.dir.path().join("agents.json"),
        agents_file(&repo),
    )
    .expect("write agents");

    for (scenario, extra) in [
        ("base", vec!["--base", "origin/main"]),
        (
            "base-agents",
            vec!["--base", "origin/main", "--agents", "../agents.json"],
        ),
        ("agents", vec!["--agents", "../agents.json"]),
    ] {
        for (format, ext) in [("text", "txt"), ("json", "json"), ("markdown", "md")] {
            let mut args = vec!["reconcile", "--dry-run", ".", "--format", format];
            args.extend(extra.iter().copied());
            let out = gitamp_at(&work, &args);
            assert_eq!(code(&out), 3, "{scenario}/{format}: {}", explain(&out));
            assert!(
                !stdout(&out).contains('\x1b'),
                "no colour when stdout is not a terminal"
            );
            check_golden(
                &format!("{scenario}.{ext}"),
                &normalize(&stdout(&out), &repo),
            );
        }
    }

    // The json plan carries what the goldens show, in a shape tools can rely on.
    let out = gitamp_at(
        &work,
        &[
            "reconcile",
            "--dry-run",
            "--base",
            "origin/main",
            "--agents",
            "../agents.json",
            "--format",
            "json",
        ],
    );
    let plan = json_of(&out);
    assert_eq!(plan["format_version"], 1);
    assert_eq!(plan["base"]["revision"], repo.base_sha.as_str());
    let changes: BTreeMap<String, String> = plan["configurations"]
        .as_array()
        .expect("configurations")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["change"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(changes["default"], "removed");
    assert_eq!(changes["edge"], "added");
    assert_eq!(changes["linux-production"], "changed");
    assert_eq!(changes["windows-production"], "changed");
    assert!(!changes.contains_key("staging"), "unchanged, nothing to do");
    let s = &plan["summary"];
    assert_eq!(s["agents_total"], 8);
    // Linux: three to update (a batch of 25% now, the rest waits), one already on the new hash.
    assert_eq!(s["by_status"]["synced"], 2, "{s}");
    assert_eq!(s["by_status"]["conflict"], 1, "{s}");
    assert_eq!(s["by_status"]["unmanaged"], 1, "{s}");
    assert_eq!(s["agents_to_update"], 4, "{s}");
    assert_eq!(plan["conflicts"][0]["instance_uid"], "07-edge-a");
    assert_eq!(
        plan["conflicts"][0]["configurations"],
        serde_json::json!(["edge", "staging"])
    );
    assert_eq!(plan["unmanaged"][0]["instance_uid"], "08-dev-mac");
    let linux = plan["configurations"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "linux-production"))
        .expect("linux-production");
    assert_eq!(
        linux["components"]["changed"],
        serde_json::json!([{"section": "processors", "id": "resource/proc-env-production"}])
    );
    let actions: Vec<&str> = linux["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert_eq!(actions.len(), 3, "{linux}");
    assert!(
        actions.contains(&"push") && actions.contains(&"wait"),
        "{actions:?}"
    );
    assert!(
        linux["diff"]
            .as_str()
            .is_some_and(|d| d.contains("-      value: platform")
                && d.contains("+      value: observability")),
        "{linux}"
    );
}

#[test]
fn sensitive_values_stay_masked() {
    let repo = repo();
    let work = repo.fixture.work();
    // A secret written straight into a sensitive parameter (bad practice, yet it must not leak).
    repo.fixture.edit(
        "destinations/otel-gateway.yaml",
        "api_key: ${env:GATEWAY_API_KEY}",
        "api_key: sup3r-s3cret-value",
    );
    for format in ["text", "json", "markdown"] {
        let out = gitamp_at(
            &work,
            &[
                "reconcile",
                "--dry-run",
                "--base",
                "HEAD",
                "--format",
                format,
            ],
        );
        assert_eq!(code(&out), 3, "{}", explain(&out));
        assert!(
            !stdout(&out).contains("sup3r-s3cret-value"),
            "{format} leaks the secret: {}",
            stdout(&out)
        );
    }
    let out = gitamp_at(
        &work,
        &[
            "reconcile",
            "--dry-run",
            "--base",
            "HEAD",
            "--format",
            "json",
        ],
    );
    let plan = json_of(&out);
    let linux = plan["configurations"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "linux-production"))
        .expect("linux-production changed");
    assert_eq!(linux["change"], "changed");
    // The masked YAML is the same, so no diff lines, but the component still counts as changed.
    assert_eq!(linux["only_sensitive_values_changed"], true, "{linux}");
    assert_eq!(linux["diff"], "", "{linux}");
    assert_eq!(
        linux["components"]["changed"],
        serde_json::json!([{"section": "exporters", "id": "otlp/dst-otel-gateway"}])
    );
}

#[test]
fn exit_codes() {
    let repo = repo();
    let work = repo.fixture.work();
    let dry = |args: &[&str]| {
        let mut all = vec!["reconcile", "--dry-run"];
        all.extend_from_slice(args);
        gitamp_at(&work, &all)
    };

    // 0: the working tree is what HEAD holds.
    let same = dry(&["--base", "HEAD"]);
    assert_eq!(code(&same), 0, "{}", explain(&same));
    assert!(
        stdout(&same).contains("nothing to change"),
        "{}",
        explain(&same)
    );

    // 0 with a fleet already on every new hash.
    let synced: Vec<serde_json::Value> = repo
        .head
        .iter()
        .filter(|(name, _)| name.as_str() == "staging")
        .map(|(_, h)| {
            serde_json::json!({"uid": "s1", "labels": {"deployment.environment": "staging"},
                               "reported_hash": h.to_hex()})
        })
        .collect();
    let file = repo.fixture.dir.path().join("synced.yaml");
    std::fs::write(&file, serde_json::to_string(&synced).expect("json")).expect("write");
    let out = dry(&["--agents", file.to_str().expect("utf8")]);
    assert_eq!(code(&out), 0, "{}", explain(&out));

    // 3: across the two commits.
    let out = dry(&["--base", "HEAD~1"]);
    assert_eq!(code(&out), 3, "{}", explain(&out));

    // 1: an invalid working tree prints its diagnostics like `validate`, in each format.
    repo.fixture.write(
        "configurations/broken.yaml",
        "apiVersion: gitamp.dev/v1\nkind: Configuration\nmetadata:\n  name: broken\nspec:\n  \
         selector:\n    matchLabels: {team: nobody}\n  sources: [otlp-default]\n  \
         destinations: [does-not-exist]\n",
    );
    let out = dry(&["--base", "HEAD~1"]);
    assert_eq!(code(&out), 1, "{}", explain(&out));
    assert!(
        stdout(&out).contains("configurations/broken.yaml:") && stdout(&out).contains("E012"),
        "{}",
        explain(&out)
    );
    let out = dry(&["--base", "HEAD~1", "--format", "json"]);
    assert_eq!(code(&out), 1);
    let v = json_of(&out);
    assert_eq!(v["valid"], false);
    assert_eq!(v["diagnostics"][0]["code"], "E012");
    let out = dry(&["--base", "HEAD~1", "--format", "markdown"]);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("invalid repository"),
        "{}",
        explain(&out)
    );
    std::fs::remove_file(work.join("configurations/broken.yaml")).expect("rm");

    // 2: usage and I/O errors.
    let out = gitamp_at(&work, &["reconcile", "--base", "HEAD"]);
    assert_eq!(code(&out), 2, "without --dry-run: {}", explain(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dry-run"));
    let out = dry(&[]);
    assert_eq!(code(&out), 2, "nothing to compare with: {}", explain(&out));
    let out = dry(&["--base", "no-such-branch"]);
    assert_eq!(code(&out), 2, "{}", explain(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-branch"));
    let out = dry(&["--agents", "/does/not/exist.json"]);
    assert_eq!(code(&out), 2, "{}", explain(&out));
    let bad = repo.fixture.dir.path().join("bad.json");
    std::fs::write(&bad, "[{\"uid\": \"x\", \"reported_hash\": \"nothex\"}]").expect("write");
    let out = dry(&["--agents", bad.to_str().expect("utf8")]);
    assert_eq!(code(&out), 2, "{}", explain(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothex"));
    let out = dry(&["--server", "http://127.0.0.1:1"]);
    assert_eq!(code(&out), 2, "server unreachable: {}", explain(&out));
}

/// Production Linux and staging agents connected over WebSocket.
fn start_agents(url: &str) -> Vec<AgentHandle> {
    support::start_agents_with(5, url, |i| match i {
        0..4 => AgentOptions::collector("checkout", &format!("dry-linux-{i}"), "production")
            .label("os.type", "linux"),
        _ => AgentOptions::collector("web", "dry-staging-0", "staging").label("os.type", "linux"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_against_a_running_server() {
    let repo = repo();
    let data = tempfile::tempdir().expect("tempdir");
    // The server serves origin/main (the base); the work tree holds the change.
    let server = Server::start(
        &data.path().join("data"),
        &[
            "--repo",
            &repo.fixture.remote_url(),
            "--ref",
            "main",
            "--opamp-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ],
    );
    let _agents = start_agents(&server.ws_url());
    eventually(
        Duration::from_secs(90),
        "every agent is synced",
        async || {
            let v = get_json(&server.api_url("/api/v1/agents?status=synced")).await;
            (v["total"] == 5).then_some(())
        },
    )
    .await;

    let api = format!("http://{}", server.api);
    let work = repo.fixture.work();
    let run = |args: Vec<String>| {
        let work = work.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            gitamp_at(&work, &args)
        })
    };
    let out = run(vec![
        "reconcile".into(),
        "--dry-run".into(),
        "--server".into(),
        api.clone(),
        "--format".into(),
        "json".into(),
    ])
    .await
    .expect("join");
    assert_eq!(code(&out), 3, "{}", explain(&out));
    let plan = json_of(&out);
    assert_eq!(plan["fleet"]["source"], "server");
    assert_eq!(plan["fleet"]["agents"], 5);
    assert_eq!(plan["fleet"]["server_revision"], repo.base_sha.as_str());
    assert_eq!(plan["summary"]["agents_to_update"], 4, "{plan}");
    assert_eq!(plan["summary"]["by_status"]["synced"], 1, "{plan}");
    let linux = plan["configurations"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "linux-production"))
        .expect("linux-production planned");
    assert!(
        linux["compared_with"]
            .as_str()
            .is_some_and(|s| s.contains("as the server serves it")),
        "{linux}"
    );
    assert_eq!(
        linux["components"]["changed"],
        serde_json::json!([{"section": "processors", "id": "resource/proc-env-production"}])
    );
    assert_eq!(linux["agents"].as_array().map(Vec::len), Some(4), "{linux}");

    // `gitamp agents -o json` is a ready-made agents file that plans the same.
    let exported = run(vec![
        "agents".into(),
        "--server".into(),
        api.clone(),
        "-o".into(),
        "json".into(),
    ])
    .await
    .expect("join");
    assert_eq!(code(&exported), 0, "{}", explain(&exported));
    let file = repo.fixture.dir.path().join("exported.json");
    std::fs::write(&file, &exported.stdout).expect("write export");
    let out = run(vec![
        "reconcile".into(),
        "--dry-run".into(),
        "--agents".into(),
        file.to_string_lossy().into_owned(),
        "--base".into(),
        "origin/main".into(),
        "--format".into(),
        "json".into(),
    ])
    .await
    .expect("join");
    assert_eq!(code(&out), 3, "{}", explain(&out));
    let from_file = json_of(&out);
    assert_eq!(
        from_file["summary"]["by_status"],
        plan["summary"]["by_status"]
    );
    assert_eq!(from_file["summary"]["agents_to_update"], 4);
}

/// Colour on a terminal (a pseudo-terminal from util-linux `script`), none otherwise or with
/// NO_COLOR. Skipped where `script` is missing.
#[test]
fn colour_only_on_a_terminal() {
    let repo = repo();
    let work = repo.fixture.work();
    let on_tty = |no_color: bool| {
        let mut cmd = Command::new("script");
        cmd.args(["-qec"])
            .arg(format!(
                "'{}' reconcile --dry-run --base HEAD~1",
                env!("CARGO_BIN_EXE_gitamp")
            ))
            .arg("/dev/null")
            .current_dir(&work)
            .env_remove("NO_COLOR");
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        cmd.output().ok().filter(|o| o.status.code() == Some(3))
    };
    let Some(coloured) = on_tty(false) else {
        eprintln!("skipped: no usable `script` command");
        return;
    };
    assert!(
        stdout(&coloured).contains("\x1b[33mchanged\x1b[0m"),
        "{}",
        explain(&coloured)
    );
    let plain = on_tty(true).expect("script runs");
    assert!(!stdout(&plain).contains('\x1b'), "{}", explain(&plain));
    let piped = gitamp_at(&work, &["reconcile", "--dry-run", "--base", "HEAD~1"]);
    assert!(!stdout(&piped).contains('\x1b'));
}

/// A pinned agent version that changes is a change of its configuration, shown like one:
/// `none -> 1.0.0` when it is first pinned, `1.0.0 -> 2.0.0` on an upgrade, in every format.
#[test]
fn agent_version_changes_show_per_configuration() {
    let repo = repo();
    let work = repo.fixture.work();
    let dry = |args: &[&str]| {
        let mut all = vec!["reconcile", "--dry-run"];
        all.extend_from_slice(args);
        gitamp_at(&work, &all)
    };
    let version = |name: &str, v: &str| {
        format!(
            "apiVersion: gitamp.dev/v1\nkind: AgentVersion\nmetadata:\n  name: {name}\nspec:\n  \
             version: {v}\n  platforms:\n    - os: linux\n      arch: amd64\n      \
             url: https://dl.example.com/otelcol-{v}.tar.gz\n      sha256: {}\n",
            "ab".repeat(32)
        )
    };
    repo.fixture
        .write("versions/otelcol-1.yaml", &version("otelcol-1", "1.0.0"));
    repo.fixture.write(
        "configurations/edge.yaml",
        &format!("{EDGE}  agentVersion: otelcol-1\n"),
    );
    let out = dry(&["--base", "HEAD"]);
    assert_eq!(code(&out), 3, "{}", explain(&out));
    assert!(
        stdout(&out).contains("configuration edge: changed")
            && stdout(&out).contains("agent version: none -> 1.0.0"),
        "{}",
        explain(&out)
    );
    repo.fixture.commit_all("pin otelcol 1.0.0 on edge");

    repo.fixture
        .write("versions/otelcol-2.yaml", &version("otelcol-2", "2.0.0"));
    repo.fixture.edit(
        "configurations/edge.yaml",
        "agentVersion: otelcol-1",
        "agentVersion: otelcol-2",
    );
    let out = dry(&["--base", "HEAD", "-o", "json"]);
    assert_eq!(code(&out), 3, "{}", explain(&out));
    let v = json_of(&out);
    let edge = v["configurations"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "edge"))
        .unwrap_or_else(|| panic!("edge listed: {v}"));
    assert_eq!(edge["change"], "changed");
    assert_eq!(edge["version"]["from"], "1.0.0");
    assert_eq!(edge["version"]["to"], "2.0.0");
    assert_eq!(v["summary"]["configurations_changed"], 1, "only edge: {v}");
    let out = dry(&["--base", "HEAD", "-o", "markdown"]);
    assert!(
        stdout(&out).contains("Agent version: 1.0.0 -> 2.0.0."),
        "{}",
        explain(&out)
    );
}

/// A change of a configuration's own-telemetry destination alone (its config hash unchanged)
/// is a change to apply: shown per configuration, masked, exit code 3.
#[test]
fn telemetry_destination_changes_show_without_a_config_change() {
    let repo = repo();
    let work = repo.fixture.work();
    repo.fixture.edit(
        "configurations/staging.yaml",
        "spec:\n",
        "spec:\n  telemetry:\n    metrics:\n      endpoint: https://otlp.example.com/v1/metrics\n      headers: {Authorization: 'Bearer ${env:OTLP_TOKEN}'}\n",
    );
    repo.fixture
        .commit_all("staging's own metrics go to the gateway");
    let out = gitamp_at(&work, &["reconcile", "--dry-run", "--base", "HEAD~1"]);
    assert_eq!(code(&out), 3, "{}", explain(&out));
    let text = stdout(&out);
    assert!(
        text.contains("own telemetry: gitamp → https://otlp.example.com/v1/metrics"),
        "{}",
        explain(&out)
    );
    let out = gitamp_at(
        &work,
        &[
            "reconcile",
            "--dry-run",
            "--base",
            "HEAD~1",
            "--format",
            "json",
        ],
    );
    let v = json_of(&out);
    assert_eq!(v["summary"]["telemetry_changed"], 1, "{v}");
    let staging = v["configurations"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "staging"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        staging["change"], "unchanged",
        "the config hash did not move: {staging}"
    );
    assert_eq!(staging["telemetry"]["before"]["kind"], "gitamp");
    assert_eq!(staging["telemetry"]["after"]["kind"], "declared");
    assert_eq!(
        staging["telemetry"]["after"]["metrics"]["headers"]["Authorization"], "***",
        "{staging}"
    );
    assert!(!stdout(&out).contains("OTLP_TOKEN"));
}

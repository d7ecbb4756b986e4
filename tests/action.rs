//! The GitHub Action's steps (`scripts/action.sh run`, what `action.yml` calls) run locally:
//! GITHUB_OUTPUT, GITHUB_STEP_SUMMARY and GITHUB_WORKSPACE point at temporary files and a
//! clone of a test repository, and the freshly built `gitamp` is first on PATH. Asserts the
//! annotations on stdout, the markdown summary and the outputs, for a valid change and an
//! invalid one, and `fail-on-warnings`.
//!
//! The install steps too: `scripts/action.sh download` fetches a release made by
//! `scripts/release.sh` from a local HTTP server (python3 -m http.server), checks its checksum and
//! puts it on GITHUB_PATH; a bad checksum stops the job; no release sends it to the build steps
//! (not run here: a `cargo install` takes minutes, as the other tests put the built gitamp on
//! PATH instead; `action.yml`'s wiring of those steps is checked).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{GitFixture, git, release};

struct Run {
    out: Output,
    summary: String,
    outputs: BTreeMap<String, String>,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    fn explain(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}\nsummary:\n{}\noutputs: {:?}",
            self.out.status.code(),
            self.stdout(),
            String::from_utf8_lossy(&self.out.stderr),
            self.summary,
            self.outputs
        )
    }
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_gitamp"))
        .parent()
        .expect("binary folder")
        .to_path_buf()
}

/// `scripts/action.sh run` in `workspace` with the action's inputs.
fn run_action(workspace: &Path, inputs: &[(&str, &str)]) -> Run {
    action_step("run", &bin_dir(), workspace, inputs)
}

/// `scripts/action.sh <step>` with `bin` first on PATH, in `workspace`, with the inputs.
fn action_step(step: &str, bin: &Path, workspace: &Path, inputs: &[(&str, &str)]) -> Run {
    let tmp = tempfile::tempdir().expect("tempdir");
    let output_file = tmp.path().join("output");
    let summary_file = tmp.path().join("summary.md");
    std::fs::write(&output_file, "").expect("touch");
    std::fs::write(&summary_file, "").expect("touch");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.arg(support::workspace().join("scripts/action.sh"))
        .arg(step)
        .env("PATH", path)
        .env("GITHUB_WORKSPACE", workspace)
        .env("GITHUB_OUTPUT", &output_file)
        .env("GITHUB_STEP_SUMMARY", &summary_file)
        .env_remove("GITHUB_ACTION_PATH")
        .env_remove("GITAMP_API_TOKEN")
        // The script must not depend on where it is started from.
        .current_dir(tmp.path());
    for key in [
        "INPUT_PATH",
        "INPUT_FORMAT",
        "INPUT_BASE_REF",
        "INPUT_SERVER",
        "INPUT_FAIL_ON_WARNINGS",
        // The action's `otelcol` input; a test that wants the collector passes it.
        "GITAMP_OTELCOL",
        // The download step's inputs and what the runner would set.
        "INPUT_VERSION",
        "INPUT_RELEASE_URL",
        "GITAMP_INSTALL_DIR",
        "GITAMP_ACTION_REPOSITORY",
        "GITHUB_ACTION_REPOSITORY",
        "GITHUB_PATH",
        "RUNNER_OS",
        "RUNNER_ARCH",
        "RUNNER_TOOL_CACHE",
    ] {
        cmd.env_remove(key);
    }
    for (k, v) in inputs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("bash runs");
    let outputs = std::fs::read_to_string(&output_file)
        .expect("read outputs")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Run {
        out,
        summary: std::fs::read_to_string(&summary_file).expect("read summary"),
        outputs,
    }
}

/// A pull request checkout: `main` on the remote holds example-repo, the branch changes it, and
/// the clone has no `origin/main` yet (as with a shallow PR checkout), so the step fetches it.
fn pr_checkout() -> GitFixture {
    let fixture = GitFixture::with_example_repo();
    git(&fixture.work(), &["checkout", "-q", "-b", "feature"]);
    fixture.edit(
        "processors/env-production.yaml",
        "team: platform",
        "team: observability",
    );
    fixture.commit_all("retag production telemetry");
    git(
        &fixture.work(),
        &["update-ref", "-d", "refs/remotes/origin/main"],
    );
    fixture
}

#[test]
fn valid_change_writes_plan_and_outputs() {
    let fixture = pr_checkout();
    let run = run_action(&fixture.work(), &[("INPUT_BASE_REF", "main")]);
    assert_eq!(run.out.status.code(), Some(0), "{}", run.explain());
    assert!(!run.stdout().contains("::error"), "{}", run.explain());
    assert!(
        run.summary
            .starts_with("## gitamp dry run: 2 configuration(s) change"),
        "{}",
        run.explain()
    );
    assert!(
        run.summary
            .contains("| `linux-production` | changed | 0 / 0 / 1 |")
    );
    assert!(run.summary.contains("```diff\n"), "{}", run.summary);
    assert!(run.summary.contains("+      value: observability"));
    assert_eq!(run.outputs["valid"], "true");
    assert_eq!(run.outputs["warnings"], "0");
    assert_eq!(run.outputs["changes-pending"], "true");
    assert_eq!(
        run.outputs["changed-configurations"],
        "linux-production,windows-production"
    );
    assert_eq!(run.outputs["affected-agents"], "0");
    // The job log shows the plan in the requested format (text by default).
    assert!(
        run.stdout()
            .contains("configuration linux-production: changed")
    );
}

#[test]
fn invalid_change_annotates_and_fails() {
    let fixture = pr_checkout();
    fixture.write(
        "configurations/broken.yaml",
        "apiVersion: gitamp.dev/v1\nkind: Configuration\nmetadata:\n  name: broken\nspec:\n  \
         selector:\n    matchLabels: {team: nobody}\n  sources: [otlp-default]\n  \
         destinations: [does-not-exist]\n",
    );
    fixture.commit_all("a dangling destination");
    let run = run_action(&fixture.work(), &[("INPUT_BASE_REF", "main")]);
    assert_eq!(run.out.status.code(), Some(1), "{}", run.explain());
    let annotation = run
        .stdout()
        .lines()
        .find(|l| l.starts_with("::error file=configurations/broken.yaml,line="))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no annotation on broken.yaml: {}", run.explain()));
    assert!(annotation.contains(",line=9,"), "{annotation}");
    assert!(
        annotation.contains("title=E012 unknown-destination::"),
        "{annotation}"
    );
    assert!(
        run.summary.contains("invalid repository"),
        "{}",
        run.explain()
    );
    assert!(
        run.summary.contains("`configurations/broken.yaml:9:"),
        "{}",
        run.summary
    );
    assert_eq!(run.outputs["valid"], "false");
    assert_eq!(run.outputs["changed-configurations"], "");
    assert_eq!(run.outputs["affected-agents"], "0");
}

/// The `otelcol` input: a field the collector does not know (gitamp's own checks accept it) is
/// annotated on the template line that wrote it, and the step fails.
#[test]
fn collector_refusal_annotates_the_template_line() {
    let fixture = pr_checkout();
    fixture.edit(
        "types/batch.yaml",
        "          timeout: {{ timeout }}\n",
        "          timeout: {{ timeout }}\n          send_batch_max: 100\n",
    );
    fixture.commit_all("a batch field the collector does not know");
    let collector = support::otelcol();
    let inputs = [
        ("INPUT_BASE_REF", "main"),
        ("GITAMP_OTELCOL", collector.to_str().expect("utf8 path")),
    ];
    let run = run_action(&fixture.work(), &inputs);
    assert_eq!(run.out.status.code(), Some(1), "{}", run.explain());
    let annotation = run
        .stdout()
        .lines()
        .find(|l| l.starts_with("::error file=types/batch.yaml,line=25,"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no annotation on types/batch.yaml:25: {}", run.explain()));
    assert!(
        annotation.contains("title=E112 collector-refused-config::")
            && annotation.contains("send_batch_max"),
        "{annotation}"
    );
    assert_eq!(run.outputs["valid"], "false");
}

#[test]
fn warnings_fail_only_when_asked() {
    let fixture = GitFixture::with_example_repo();
    support::copy_tree(
        &support::workspace().join("tests/fixtures/warnings"),
        &fixture.work().join("cfg"),
    );
    // No base ref (a push build): validation only, the dry run is skipped with a notice.
    let inputs = [("INPUT_PATH", "cfg"), ("INPUT_BASE_REF", "")];
    let run = run_action(&fixture.work(), &inputs);
    assert_eq!(run.out.status.code(), Some(0), "{}", run.explain());
    assert!(
        run.stdout().contains("::warning file=cfg/"),
        "{}",
        run.explain()
    );
    assert!(run.stdout().contains("::notice"), "{}", run.explain());
    assert_eq!(run.outputs["warnings"], "2");

    let strict = [
        ("INPUT_PATH", "cfg"),
        ("INPUT_BASE_REF", ""),
        ("INPUT_FAIL_ON_WARNINGS", "true"),
    ];
    let run = run_action(&fixture.work(), &strict);
    assert_eq!(run.out.status.code(), Some(1), "{}", run.explain());
    assert_eq!(run.outputs["valid"], "true");
}

/// `gitamp validate --format sarif` (for `github/codeql-action/upload-sarif`) on a corpus case:
/// SARIF 2.1.0 with the rule and the result at the line `expected.txt` names.
#[test]
fn sarif_for_code_scanning() {
    let case = support::workspace().join("tests/corpus/12-unknown-destination");
    let expected = std::fs::read_to_string(case.join("expected.txt")).expect("expected.txt");
    // `E012 configurations/prod.yaml:16`
    let (code, location) = expected
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .and_then(|l| l.split_once(' '))
        .expect("an expected diagnostic");
    let (file, line) = location.rsplit_once(':').expect("file:line");
    let line: u64 = line.parse().expect("line number");

    let out = support::cli::gitamp_at(&case, &["validate", "--format", "sarif", "repo"]);
    assert_eq!(out.status.code(), Some(1), "invalid repository exits 1");
    let sarif = support::cli::json_of(&out);
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "gitamp");
    let rules = run["tool"]["driver"]["rules"].as_array().expect("rules");
    assert!(
        rules
            .iter()
            .any(|r| r["id"] == code && r["name"] == "unknown-destination"),
        "{rules:?}"
    );
    let results = run["results"].as_array().expect("results");
    let hit = results
        .iter()
        .find(|r| r["ruleId"] == code)
        .unwrap_or_else(|| panic!("no {code} result: {results:?}"));
    assert_eq!(hit["level"], "error");
    let physical = &hit["locations"][0]["physicalLocation"];
    assert_eq!(physical["artifactLocation"]["uri"], format!("repo/{file}"));
    assert_eq!(physical["region"]["startLine"], line);
    assert!(
        physical["region"]["startColumn"]
            .as_u64()
            .is_some_and(|c| c >= 1)
    );
    assert!(
        hit["message"]["text"]
            .as_str()
            .is_some_and(|m| m.contains("archive"))
    );
}

// ---------------------------------------------------------------- the install steps

/// A folder of releases served over HTTP (`<url>/v<version>/<file>`, as GitHub serves release
/// assets), by Python's own HTTP server; stopped on drop.
struct ReleaseServer {
    child: std::process::Child,
    url: String,
    /// Served until the server stops.
    _root: tempfile::TempDir,
}

impl ReleaseServer {
    /// Serve the release made by `scripts/release.sh` as tag v<version>, with `SHA256SUMS`
    /// passed through `tamper`.
    fn start(tamper: impl Fn(&str) -> String) -> ReleaseServer {
        let root = tempfile::tempdir().expect("tempdir");
        let tag = root.path().join(format!("v{}", release::version()));
        std::fs::create_dir_all(&tag).expect("mkdir");
        let tarball = format!("{}.tar.gz", release::release_name());
        std::fs::copy(release::packaged().join(&tarball), tag.join(&tarball)).expect("copy");
        let sums = std::fs::read_to_string(release::packaged().join("SHA256SUMS")).expect("sums");
        std::fs::write(tag.join("SHA256SUMS"), tamper(&sums)).expect("write");
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(root.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m http.server starts");
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let stdout = child.stdout.take().expect("stdout");
        let first = support::lossy_lines(stdout).next().unwrap_or_default();
        let port = first
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .unwrap_or_else(|| panic!("no port in {first:?}"))
            .to_string();
        ReleaseServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _root: root,
        }
    }
}

impl Drop for ReleaseServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `scripts/action.sh download` on an x86_64 Linux runner (as GitHub names it) with `inputs`;
/// returns the run and the install folder.
fn download(inputs: &[(&str, &str)]) -> (Run, PathBuf, String, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("tool/bin");
    let github_path = tmp.path().join("github_path");
    std::fs::write(&github_path, "").expect("touch");
    let mut all: Vec<(&str, &str)> = vec![
        ("RUNNER_OS", "Linux"),
        ("RUNNER_ARCH", "X64"),
        ("GITAMP_INSTALL_DIR", dir.to_str().expect("utf8")),
        ("GITHUB_PATH", github_path.to_str().expect("utf8")),
    ];
    all.extend_from_slice(inputs);
    // An empty folder first on PATH: what the step finds must be what it installed.
    let run = action_step("download", tmp.path(), tmp.path(), &all);
    let path_lines = std::fs::read_to_string(&github_path).expect("github_path");
    (run, dir, path_lines, tmp)
}

/// The action's default: the release of its own version, verified, installed and then used by
/// the `run` step with no other gitamp on PATH.
#[test]
fn release_binary_is_downloaded_verified_and_used() {
    let server = ReleaseServer::start(str::to_string);
    let (run, dir, github_path, _tmp) = download(&[("INPUT_RELEASE_URL", &server.url)]);
    assert_eq!(run.out.status.code(), Some(0), "{}", run.explain());
    assert_eq!(run.outputs["installed"], "true", "{}", run.explain());
    assert!(
        run.stdout().contains("(sha256 verified)") && run.stdout().contains(&server.url),
        "says which path it took: {}",
        run.explain()
    );
    assert_eq!(github_path, format!("{}\n", dir.display()));
    let installed = dir.join("gitamp");
    assert_eq!(run.outputs["path"], installed.display().to_string());

    // The run step, with only the downloaded gitamp on PATH (not the build's target folder).
    let fixture = pr_checkout();
    let run = action_step("run", &dir, &fixture.work(), &[("INPUT_BASE_REF", "main")]);
    assert_eq!(run.out.status.code(), Some(0), "{}", run.explain());
    assert_eq!(run.outputs["valid"], "true");
    assert_eq!(run.outputs["changes-pending"], "true");
    // A leading `v` in the version input names the same release.
    let version = format!("v{}", release::version());
    let (run, _, _, _tmp) = download(&[
        ("INPUT_RELEASE_URL", &server.url),
        ("INPUT_VERSION", &version),
    ]);
    assert_eq!(run.outputs["installed"], "true", "{}", run.explain());
}

/// A release that exists but does not verify is a hard failure, never a quiet build instead.
#[test]
fn corrupted_checksum_fails_and_installs_nothing() {
    let corrupt = |sums: &str| {
        let flipped = if sums.starts_with('0') { "1" } else { "0" };
        format!("{flipped}{}", &sums[1..])
    };
    let missing_line = |_: &str| "0000  some-other-file.tar.gz\n".to_string();
    for (tamper, message) in [
        (&corrupt as &dyn Fn(&str) -> String, "checksum mismatch"),
        (&missing_line, "has no line for"),
    ] {
        let server = ReleaseServer::start(tamper);
        let (run, dir, github_path, _tmp) = download(&[("INPUT_RELEASE_URL", &server.url)]);
        assert_eq!(run.out.status.code(), Some(2), "{}", run.explain());
        assert!(
            run.stdout().contains("::error") && run.stdout().contains(message),
            "{message}: {}",
            run.explain()
        );
        assert!(!dir.join("gitamp").exists(), "nothing installed");
        assert_eq!(github_path, "", "nothing on PATH");
        assert!(
            !run.outputs.contains_key("installed"),
            "no build either: {:?}",
            run.outputs
        );
    }
}

/// No release of that version (HTTP 404), or a runner that is not x86_64 Linux: the step says
/// so and hands over to the build steps (`installed=false`).
#[test]
fn no_release_falls_back_to_building() {
    let server = ReleaseServer::start(str::to_string);
    let (run, dir, github_path, _tmp) = download(&[
        ("INPUT_RELEASE_URL", &server.url),
        ("INPUT_VERSION", "9.9.9"),
    ]);
    assert_eq!(run.out.status.code(), Some(0), "{}", run.explain());
    assert_eq!(run.outputs["installed"], "false");
    assert!(
        run.stdout().contains("HTTP 404")
            && run.stdout().contains("building gitamp 9.9.9 from source"),
        "{}",
        run.explain()
    );
    assert!(!dir.join("gitamp").exists());
    assert_eq!(github_path, "");

    // An ARM runner does not even ask (the URL is a closed port: asking would fail the step).
    let closed = format!("http://127.0.0.1:{}", support::free_port());
    let (run, _, _, _tmp) = download(&[("INPUT_RELEASE_URL", &closed), ("RUNNER_ARCH", "ARM64")]);
    assert_eq!(run.out.status.code(), Some(0), "{}", run.explain());
    assert_eq!(run.outputs["installed"], "false");
    assert!(
        run.stdout().contains("no release build for Linux/ARM64"),
        "{}",
        run.explain()
    );
    // While on x86_64 an unreachable server is an error, not a reason to build.
    let (run, _, _, _tmp) = download(&[("INPUT_RELEASE_URL", &closed)]);
    assert_eq!(run.out.status.code(), Some(2), "{}", run.explain());
    assert!(run.stdout().contains("(HTTP 000)"), "{}", run.explain());

    // A version that is not one is refused by name.
    let (run, _, _, _tmp) = download(&[
        ("INPUT_RELEASE_URL", &server.url),
        ("INPUT_VERSION", "latest"),
    ]);
    assert_eq!(run.out.status.code(), Some(2), "{}", run.explain());
    assert!(
        run.stdout().contains("version input 'latest'"),
        "{}",
        run.explain()
    );
}

/// `action.yml` runs the cache and build steps only when the download step installed nothing,
/// and passes the download's inputs.
#[test]
fn action_builds_only_when_nothing_was_downloaded() {
    let text =
        std::fs::read_to_string(support::workspace().join("action.yml")).expect("action.yml");
    let action: serde_json::Value = serde_saphyr::from_str(&text).expect("action.yml parses");
    for input in ["version", "release-url"] {
        assert_eq!(action["inputs"][input]["default"], "", "input {input}");
    }
    let steps = action["runs"]["steps"].as_array().expect("steps");
    let position = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        steps.iter().position(pred).expect("step present")
    };
    let download = position(&|s| s["id"] == "download");
    let cache = position(&|s| {
        s["uses"]
            .as_str()
            .is_some_and(|u| u.starts_with("actions/cache@"))
    });
    let build = position(&|s| {
        s["run"]
            .as_str()
            .is_some_and(|r| r.contains("action.sh\" install"))
    });
    assert!(
        download < cache && cache < build,
        "download, then cache, then build"
    );
    for i in [cache, build] {
        let cond = steps[i]["if"].as_str().unwrap_or_default();
        assert!(
            cond.contains("steps.download.outputs.installed != 'true'"),
            "step {i} runs only without a download: {cond}"
        );
    }
    let env = &steps[download]["env"];
    assert_eq!(env["INPUT_VERSION"], "${{ inputs.version }}");
    assert_eq!(env["INPUT_RELEASE_URL"], "${{ inputs.release-url }}");
}

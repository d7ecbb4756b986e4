//! The GitHub Action's steps (`scripts/action.sh run`, what `action.yml` calls) run locally:
//! GITHUB_OUTPUT, GITHUB_STEP_SUMMARY and GITHUB_WORKSPACE point at temporary files and a
//! clone of a test repository, and the freshly built `gitamp` is first on PATH. Asserts the
//! annotations on stdout, the markdown summary and the outputs, for a valid change and an
//! invalid one, and `fail-on-warnings`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{GitFixture, git};

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
    let tmp = tempfile::tempdir().expect("tempdir");
    let output_file = tmp.path().join("output");
    let summary_file = tmp.path().join("summary.md");
    std::fs::write(&output_file, "").expect("touch");
    std::fs::write(&summary_file, "").expect("touch");
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.arg(support::workspace().join("scripts/action.sh"))
        .arg("run")
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

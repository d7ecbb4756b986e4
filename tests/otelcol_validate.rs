//! The collector's own validation (`--otelcol`), with the real collector built by
//! `scripts/build-peers.sh` (found by `support::otelcol()`; a missing one fails the test with
//! the command that builds it):
//!
//! - every configuration of `example-repo/` passes it (the Windows one is reported as not
//!   checkable on this platform, never silently skipped);
//! - each repository of `tests/corpus-otelcol/` passes gitamp's own checks, and the collector
//!   refuses it with each diagnostic its `expected.txt` lists (`E112 file:line`), exit 1;
//! - a missing or non-executable collector, or one that does not finish, is exit 2;
//! - `${env:NAME}` references get typed placeholders, never the caller's values, and
//!   sensitive values never appear in what is printed;
//! - `gitamp serve --otelcol` rejects a revision the collector refuses, with its diagnostics in
//!   the status API, and keeps serving the previous one.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use support::cli::{explain, gitamp_env, json_of};
use support::{GitOpsServer, Server, eventually, get_json};

fn otelcol() -> String {
    support::otelcol().to_string_lossy().into_owned()
}

/// `gitamp validate --format json --otelcol <collector> <repo>`.
fn validate_with_collector(repo: &Path, env: &[(&str, &str)]) -> Output {
    let collector = otelcol();
    gitamp_env(
        &[
            "validate",
            "--format",
            "json",
            "--otelcol",
            &collector,
            &repo.to_string_lossy(),
        ],
        env,
    )
}

#[test]
fn every_example_configuration_passes_the_collector() {
    let out = validate_with_collector(Path::new("example-repo"), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let v = json_of(&out);
    assert_eq!(v["valid"], true);
    let diags = v["diagnostics"].as_array().cloned().unwrap_or_default();
    // The Windows configuration cannot be judged by a Linux collector: said, not hidden.
    let w113: Vec<_> = diags.iter().filter(|d| d["code"] == "W113").collect();
    if cfg!(target_os = "linux") {
        assert_eq!(w113.len(), 1, "{}", explain(&out));
        assert_eq!(
            w113[0]["location"]["file"],
            "configurations/windows-production.yaml"
        );
        let message = w113[0]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("windows-production") && message.contains("not checked"),
            "{message}"
        );
    }
    assert!(
        diags.iter().all(|d| d["severity"] != "error"),
        "{}",
        explain(&out)
    );
}

#[test]
fn collector_only_mistakes_are_reported_where_they_were_written() {
    let cases = support::corpus_cases("tests/corpus-otelcol");
    assert!(cases.len() >= 5, "found {} corpus cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = &case.name;
        // gitamp's own checks accept it: only the collector knows better.
        let own = gitamp_env(&["validate", &case.repo.to_string_lossy()], &[]);
        if own.status.code() != Some(0) {
            failures.push(format!(
                "{name}: gitamp alone rejects it\n{}",
                explain(&own)
            ));
            continue;
        }
        let out = validate_with_collector(&case.repo, &[]);
        if out.status.code() != Some(1) {
            failures.push(format!("{name}: want exit 1\n{}", explain(&out)));
            continue;
        }
        failures.extend(case.missing_from(&support::reported(&json_of(&out))));
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn text_output_names_the_component_and_the_resource() {
    let repo = support::workspace().join("tests/corpus-otelcol/02-bad-duration/repo");
    let collector = otelcol();
    let out = gitamp_env(
        &["validate", "--otelcol", &collector, &repo.to_string_lossy()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("E112 collector-refused-config"))
        .unwrap_or_else(|| panic!("no E112 line:\n{text}"));
    assert!(
        line.contains("processors/batch.yaml:")
            && line.contains("batch/proc-batch")
            && line.contains("Processor `batch`")
            && line.contains("5 seconds"),
        "{line}"
    );
}

#[test]
fn a_missing_or_unusable_collector_is_a_usage_error() {
    let out = gitamp_env(
        &[
            "validate",
            "--otelcol",
            "/nonexistent/otelcol",
            "example-repo",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/otelcol") && err.contains("does not exist"),
        "{err}"
    );

    // From the environment too; a file that is not executable.
    let out = gitamp_env(
        &["validate", "example-repo"],
        &[("GITAMP_OTELCOL", "README.md")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an executable file"),
        "{}",
        explain(&out)
    );

    // `serve` refuses to start with it.
    let data = tempfile::tempdir().expect("tempdir");
    let out = gitamp_env(
        &[
            "serve",
            "--data-dir",
            &data.path().to_string_lossy(),
            "--opamp-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
            "--otelcol",
            "/nonexistent/otelcol",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{}",
        explain(&out)
    );
}

#[test]
fn a_collector_that_does_not_finish_in_time_is_an_error_not_a_verdict() {
    let collector = otelcol();
    let out = gitamp_env(
        &[
            "validate",
            "--otelcol",
            &collector,
            "--otelcol-timeout",
            "0",
            "tests/fixtures/minimal",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not finish"),
        "{}",
        explain(&out)
    );
}

/// A repository whose parameters reference the environment for an int, a bool, a duration and
/// a string: the collector sees a placeholder of each type (a string where it wants a number
/// would be refused), and what the caller's environment holds does not matter.
#[test]
fn environment_references_get_typed_placeholders_not_the_callers_values() {
    let repo = support::workspace().join("tests/fixtures/otelcol-env");
    let out = validate_with_collector(&repo, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    // Values that would be refused if they reached the collector.
    let out = validate_with_collector(
        &repo,
        &[
            ("BATCH_SIZE", "lots"),
            ("BATCH_TIMEOUT", "soon"),
            ("GATEWAY_ENDPOINT", "no port"),
            ("GATEWAY_INSECURE", "perhaps"),
            ("DEBUG_SAMPLING", "maybe"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
}

/// A refusal that quotes a sensitive value prints `***` instead.
#[test]
fn sensitive_values_are_masked_in_the_collectors_messages() {
    let repo = support::workspace().join("tests/fixtures/otelcol-sensitive");
    let out = validate_with_collector(&repo, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let all = explain(&out);
    assert!(all.contains("E112"), "{all}");
    assert!(!all.contains("hunter2-s3cret"), "{all}");
    assert!(all.contains("***"), "{all}");
}

/// A check that cannot finish (here: no time at all) rejects the revision with E114 instead of
/// serving it unchecked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_does_not_serve_a_revision_the_collector_could_not_check() {
    let data = tempfile::tempdir().expect("tempdir");
    let collector = otelcol();
    let server = Server::start(
        &data.path().join("data"),
        &[
            "--opamp-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
            "--otelcol",
            &collector,
            "--otelcol-timeout",
            "0",
        ],
    );
    let st = eventually(WAIT, "the embedded revision is rejected", async || {
        let st = get_json(&server.api_url("/api/v1/status")).await;
        st["last_rejected"].is_object().then_some(st)
    })
    .await;
    assert!(st["current_revision"].is_null(), "{st}");
    let diags = st["last_rejected"]["diagnostics"].to_string();
    assert!(
        diags.contains("E114") && diags.contains("did not finish"),
        "{st}"
    );
}

const WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_rejects_a_revision_the_collector_refuses() {
    let collector = otelcol();
    let gitops = GitOpsServer::start("example-repo", &["--otelcol", &collector]);
    let first_sha = support::git(&gitops.fixture.work(), &["rev-parse", "HEAD"]);
    let (fixture, server) = (&gitops.fixture, &gitops.server);

    // The example repository passes (its Windows configuration with a warning).
    eventually(WAIT, "the first revision is served", async || {
        let st = get_json(&server.api_url("/api/v1/status")).await;
        (st["current_revision"] == first_sha.as_str()).then_some(())
    })
    .await;
    let revisions = get_json(&server.api_url("/api/v1/revisions")).await;
    let accepted = revisions.to_string();
    assert!(
        accepted.contains("W113") && accepted.contains("windows-production"),
        "{revisions}"
    );

    // A field the batch processor does not have: gitamp's checks accept it, the collector not.
    fixture.edit(
        "types/batch.yaml",
        "          timeout: {{ timeout }}\n",
        "          timeout: {{ timeout }}\n          send_batch_max: 100\n",
    );
    let own = gitamp_env(&["validate", &fixture.work().to_string_lossy()], &[]);
    assert_eq!(own.status.code(), Some(0), "{}", explain(&own));
    let bad_sha = gitops
        .commit_and_announce("a batch field the collector does not know")
        .await;
    let st = eventually(WAIT, "the refused revision is rejected", async || {
        let st = get_json(&server.api_url("/api/v1/status")).await;
        (st["last_rejected"]["revision"] == bad_sha.as_str()).then_some(st)
    })
    .await;
    assert_eq!(st["current_revision"], first_sha.as_str(), "{st}");
    let diags = st["last_rejected"]["diagnostics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let refused: Vec<_> = diags.iter().filter(|d| d["code"] == "E112").collect();
    assert!(!refused.is_empty(), "{st}");
    for d in &refused {
        // The status API flattens the location.
        assert_eq!(d["file"], "types/batch.yaml", "{d}");
        assert!(
            d["message"]
                .as_str()
                .is_some_and(|m| m.contains("send_batch_max")),
            "{d}"
        );
    }
    let rejected = get_json(&server.api_url("/api/v1/revisions")).await;
    assert!(
        rejected["items"].as_array().is_some_and(|items| items
            .iter()
            .any(|r| r["revision"] == bad_sha.as_str() && r["accepted"] == false)),
        "{rejected}"
    );

    // The fix is served.
    fixture.edit("types/batch.yaml", "          send_batch_max: 100\n", "");
    let fixed_sha = gitops.commit_and_announce("drop the unknown field").await;
    eventually(WAIT, "the fixed revision is served", async || {
        let st = get_json(&server.api_url("/api/v1/status")).await;
        (st["current_revision"] == fixed_sha.as_str()).then_some(())
    })
    .await;
}

//! `gitamp validate` end to end: every broken repository under `tests/corpus/<case>/repo` must
//! be rejected (exit 1) with each diagnostic its `expected.txt` lists (`E012 file:line` lines;
//! `#` comments and blank lines ignored); valid repositories exit 0; each output format has its
//! shape. New corpus folders are picked up automatically.

mod support;

use support::cli::{gitamp, json_of, stdout};

#[test]
fn corpus_cases_report_their_diagnostics() {
    let cases = support::corpus_cases("tests/corpus");
    assert!(
        cases.len() >= 20,
        "expected at least 20 corpus cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let out = gitamp(&["validate", "--format", "json", &case.repo.to_string_lossy()]);
        if out.status.code() != Some(1) {
            failures.push(format!(
                "{}: exit code {:?}, want 1\n{}",
                case.name,
                out.status.code(),
                stdout(&out)
            ));
            continue;
        }
        failures.extend(case.missing_from(&support::reported(&json_of(&out))));
    }
    assert!(
        failures.is_empty(),
        "{} corpus failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn minimal_fixture_is_valid() {
    let out = gitamp(&["validate", "--format", "json", "tests/fixtures/minimal"]);
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(v["valid"], true);
    assert_eq!(v["errors"], 0);
    assert!(
        v["revision"]
            .as_str()
            .is_some_and(|r| r.starts_with("content-"))
    );
}

#[test]
fn example_repo_is_valid() {
    if !support::workspace().join("example-repo").is_dir() {
        return;
    }
    let out = gitamp(&["validate", "example-repo"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn warnings_do_not_fail() {
    let out = gitamp(&["validate", "--format", "json", "tests/fixtures/warnings"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let v = json_of(&out);
    assert_eq!(v["valid"], true);
    assert_eq!(v["warnings"], 2);
    let got = support::reported(&v);
    assert!(
        got.contains(&("W001".into(), "configurations/prod.yaml".into(), 7)),
        "{got:?}"
    );
    assert!(
        got.contains(&("W002".into(), "destinations/backend.yaml".into(), 11)),
        "{got:?}"
    );
}

const CASE: &str = "tests/corpus/12-unknown-destination/repo";

#[test]
fn text_format() {
    let out = gitamp(&["validate", CASE]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!(
            "{CASE}/configurations/prod.yaml:16:7: error[E012 unknown-destination]: "
        )),
        "{text}"
    );
    assert!(first.contains("`archive`"), "{text}");
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("{CASE}: invalid (1 error, 0 warnings")),
        "{text}"
    );
}

#[test]
fn json_format() {
    let out = gitamp(&["validate", "--format", "json", CASE]);
    assert_eq!(out.status.code(), Some(1));
    let v = json_of(&out);
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"], 1);
    assert_eq!(v["warnings"], 0);
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "E012");
    assert_eq!(d["name"], "unknown-destination");
    assert_eq!(d["severity"], "error");
    assert_eq!(d["location"]["file"], "configurations/prod.yaml");
    assert_eq!(d["location"]["line"], 16);
    assert_eq!(d["location"]["column"], 7);
}

#[test]
fn github_format() {
    let out = gitamp(&["validate", "--format", "github", CASE]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!(
            "::error file={CASE}/configurations/prod.yaml,line=16,col=7,title=E012 unknown-destination::configuration `prod`"
        )),
        "{text}"
    );
    let warn = gitamp(&["validate", "--format", "github", "tests/fixtures/warnings"]);
    assert_eq!(warn.status.code(), Some(0));
    assert!(
        stdout(&warn)
            .contains("::warning file=tests/fixtures/warnings/configurations/prod.yaml,line=7,"),
        "{}",
        stdout(&warn)
    );
}

#[test]
fn github_paths_are_relative_to_cwd_for_absolute_path_arguments() {
    let abs = support::workspace().join(CASE);
    let out = gitamp(&["validate", "--format", "github", &abs.to_string_lossy()]);
    assert!(
        stdout(&out).starts_with(&format!("::error file={CASE}/configurations/prod.yaml,")),
        "{}",
        stdout(&out)
    );
}

#[test]
fn io_and_usage_errors_exit_2() {
    let missing = gitamp(&["validate", "no/such/folder"]);
    assert_eq!(missing.status.code(), Some(2));
    let bad_format = gitamp(&["validate", "--format", "xml", "."]);
    assert_eq!(bad_format.status.code(), Some(2));
}

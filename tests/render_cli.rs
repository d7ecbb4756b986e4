//! `gitamp render` end to end: the real binary on the example repository and on small
//! repositories written to a temporary folder.

mod support;

use std::path::Path;

use support::cli::{gitamp, stderr, stdout};
use support::workspace;

fn example() -> String {
    workspace().join("example-repo").display().to_string()
}

#[test]
fn renders_a_configuration_masked_by_default() {
    let out = gitamp(&["render", &example(), "--configuration", "staging"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let yaml = stdout(&out);
    assert!(yaml.contains("Bearer ***"), "{yaml}");
    assert!(!yaml.contains("STAGING_MIMIR_TOKEN"));
    assert!(stderr(&out).contains("config hash: "));
}

#[test]
fn unmasked_prints_what_agents_receive() {
    let out = gitamp(&["render", &example(), "-c", "staging", "--unmasked"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let golden = std::fs::read_to_string(workspace().join("tests/golden/staging.yaml"))
        .expect("golden file");
    assert_eq!(stdout(&out), golden);
}

#[test]
fn labels_select_by_priority_and_show_hash() {
    let by_labels = gitamp(&[
        "render",
        &example(),
        "--labels",
        "deployment.environment=production,os.type=linux",
        "--show-hash",
    ]);
    assert!(by_labels.status.success(), "{}", stderr(&by_labels));
    assert!(stderr(&by_labels).contains("linux-production"));
    let by_name = gitamp(&[
        "render",
        &example(),
        "-c",
        "linux-production",
        "--show-hash",
    ]);
    let hash = stdout(&by_name);
    assert_eq!(hash.trim().len(), 64, "{hash}");
    assert_eq!(stdout(&by_labels), hash);
}

#[test]
fn unknown_configuration_is_invalid_input() {
    let out = gitamp(&["render", &example(), "-c", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("linux-production"),
        "{}",
        stderr(&out)
    );
}

/// A missing repository is said once: each cause of the error appears once on its line.
#[test]
fn a_missing_repository_names_its_cause_once() {
    let missing = tempfile::tempdir().expect("tempdir").path().join("gone");
    let missing = missing.to_string_lossy().into_owned();
    let out = gitamp(&["validate", &missing]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");
}

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// Two configurations for `env=prod` at the same priority, one for `env=dev`.
fn conflicting_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    for (path, from) in [
        ("types/otlp.yaml", "types/otlp.yaml"),
        ("types/debug.yaml", "types/debug.yaml"),
        ("sources/otlp-default.yaml", "sources/otlp-default.yaml"),
        (
            "destinations/debug-basic.yaml",
            "destinations/debug-basic.yaml",
        ),
    ] {
        let text = std::fs::read_to_string(workspace().join("example-repo").join(from))
            .expect("example file");
        write(root, path, &text);
    }
    let config = |name: &str, env: &str| {
        format!(
            "apiVersion: gitamp.dev/v1\nkind: Configuration\nmetadata:\n  name: {name}\nspec:\n  \
             selector:\n    matchLabels:\n      env: {env}\n  priority: 5\n  sources: [otlp-default]\n  \
             destinations: [debug-basic]\n"
        )
    };
    write(root, "configurations/a.yaml", &config("prod-a", "prod"));
    write(root, "configurations/b.yaml", &config("prod-b", "prod"));
    write(root, "configurations/c.yaml", &config("dev", "dev"));
    dir
}

#[test]
fn conflicts_and_unmatched_labels_exit_1() {
    let dir = conflicting_repo();
    let path = dir.path().display().to_string();
    let conflict = gitamp(&["render", &path, "--labels", "env=prod"]);
    assert_eq!(conflict.status.code(), Some(1), "{}", stderr(&conflict));
    assert!(
        stderr(&conflict).contains("prod-a, prod-b"),
        "{}",
        stderr(&conflict)
    );
    assert!(stdout(&conflict).is_empty());
    let none = gitamp(&["render", &path, "--labels", "env=test"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(stderr(&none).contains("no configuration selects"));
    let dev = gitamp(&["render", &path, "--labels", "env=dev"]);
    assert!(dev.status.success(), "{}", stderr(&dev));
    assert!(stdout(&dev).contains("debug/dst-debug-basic"));
}

#[test]
fn needs_a_configuration_or_labels() {
    let out = gitamp(&["render", &example()]);
    assert_eq!(out.status.code(), Some(2));
}

//! Golden tests: every configuration of `example-repo/` rendered and compared byte for byte with
//! `tests/golden/<name>.yaml` (the form agents receive).
//!
//! After an intended change to rendering or to the example repository, regenerate with
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test -p gitamp-core --test golden
//! ```
//!
//! and review the diff of `tests/golden/` like any other change: it is exactly what every
//! collector of the fleet would receive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gitamp_core::plan::select::{Selection, select};
use gitamp_core::plan::selector::Labels;
use gitamp_core::render::check::check;
use gitamp_core::{Revision, Snapshot, compile};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every YAML file under `root`, paths relative and `/`-separated.
fn read_tree(root: &Path) -> BTreeMap<String, Arc<[u8]>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Arc<[u8]>>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let rel = path.strip_prefix(root).expect("under root");
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.insert(rel, Arc::from(std::fs::read(&path).expect("readable file")));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn example_snapshot() -> Snapshot {
    let files = read_tree(&workspace().join("example-repo"));
    Snapshot {
        revision: Snapshot::content_revision(&files),
        files,
    }
}

fn compile_ok(snapshot: &Snapshot) -> Revision {
    match compile(snapshot) {
        Ok(rev) => rev,
        Err(rejected) => panic!("example-repo is rejected:\n{}", rejected.diagnostics),
    }
}

#[test]
fn example_configurations_match_golden_files() {
    let rev = compile_ok(&example_snapshot());
    assert!(
        rev.warnings.is_empty(),
        "example-repo should be warning-free:\n{}",
        rev.warnings
    );
    assert_eq!(
        rev.rendered.configurations.len(),
        rev.catalog.configurations.len(),
        "every example configuration renders"
    );
    assert!(rev.rendered.configurations.len() >= 3);
    let dir = workspace().join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    if update {
        std::fs::create_dir_all(&dir).expect("create tests/golden");
    }
    let mut mismatches = Vec::new();
    for (name, rendered) in &rev.rendered.configurations {
        let path = dir.join(format!("{name}.yaml"));
        if update {
            std::fs::write(&path, &rendered.yaml).expect("write golden file");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(golden) if golden == rendered.yaml => {}
            Ok(golden) => mismatches.push(format!(
                "{name}: differs from {}\n{}",
                path.display(),
                similar::TextDiff::from_lines(&golden, &rendered.yaml)
                    .unified_diff()
                    .header("golden", "rendered")
            )),
            Err(e) => mismatches.push(format!("{name}: {}: {e}", path.display())),
        }
    }
    // A golden file without a configuration is stale (a renamed or deleted configuration).
    if !update {
        for entry in std::fs::read_dir(&dir).expect("tests/golden exists") {
            let path = entry.expect("entry").path();
            // Only this test's files: other goldens (e.g. `dry-run/`) live in sub-folders.
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            if let Some(stem) = stem
                && !rev.rendered.configurations.contains_key(&stem)
            {
                mismatches.push(format!("stale golden file {}", path.display()));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}\n(regenerate with UPDATE_GOLDEN=1 cargo test -p gitamp-core --test golden)",
        mismatches.join("\n")
    );
}

#[test]
fn example_configurations_pass_the_consistency_check() {
    let rev = compile_ok(&example_snapshot());
    for (name, rendered) in &rev.rendered.configurations {
        if let Err(problems) = check(&rendered.yaml) {
            panic!("{name}:\n{}", problems.join("\n"));
        }
        assert!(check(&rendered.masked_yaml).is_ok(), "{name} (masked)");
        let file = rendered
            .config_map
            .values()
            .next()
            .expect("one config map entry");
        assert_eq!(rendered.config_map.len(), 1);
        assert!(!file.body.is_empty());
        assert_eq!(
            file.content_type,
            gitamp_core::config_map::YAML_CONTENT_TYPE
        );
        assert_eq!(
            rendered.hash,
            gitamp_core::ConfigHash::of(&rendered.config_map)
        );
    }
    let windows = &rev.rendered.configurations["windows-production"];
    assert!(windows.config_map.contains_key("collector.yaml"));
    assert!(
        rev.rendered.configurations["default"]
            .config_map
            .contains_key("")
    );
}

#[test]
fn rendering_is_deterministic() {
    let a = compile_ok(&example_snapshot());
    let b = compile_ok(&example_snapshot());
    for (name, ra) in &a.rendered.configurations {
        let rb = &b.rendered.configurations[name];
        assert_eq!(ra.yaml, rb.yaml, "{name}");
        assert_eq!(ra.masked_yaml, rb.masked_yaml, "{name}");
        assert_eq!(ra.hash, rb.hash, "{name}");
    }
}

/// The same documents in other files and another order render to the same hashes: nothing
/// depends on paths or file order.
#[test]
fn file_layout_and_order_do_not_change_hashes() {
    let original = example_snapshot();
    let reference = compile_ok(&original);

    // Every file renamed so that path order is reversed.
    let n = original.files.len();
    let mut renamed = Snapshot::new("renamed");
    for (i, (path, bytes)) in original.files.iter().enumerate() {
        let flat = path.replace('/', "-");
        renamed.insert(format!("{:03}/{flat}", n - i), &bytes[..]);
    }
    // Every document in one multi-document file, in reverse order.
    let mut all = String::new();
    for bytes in original.files.values().rev() {
        all.push_str("---\n");
        all.push_str(std::str::from_utf8(bytes).expect("UTF-8"));
        if !all.ends_with('\n') {
            all.push('\n');
        }
    }
    let single = Snapshot::new("single").with_file("everything.yaml", all);

    for snapshot in [renamed, single] {
        let rev = compile_ok(&snapshot);
        assert_eq!(
            rev.rendered.configurations.len(),
            reference.rendered.configurations.len()
        );
        for (name, r) in &reference.rendered.configurations {
            assert_eq!(
                rev.rendered.configurations[name].hash, r.hash,
                "{name} in {}",
                snapshot.revision
            );
        }
    }
}

#[test]
fn sensitive_values_are_masked_and_env_references_untouched() {
    let rev = compile_ok(&example_snapshot());
    let staging = &rev.rendered.configurations["staging"];
    let prod = &rev.rendered.configurations["linux-production"];
    // Sensitive values reach agents intact (here `${env:...}` references, passed through
    // verbatim for the collector to expand) and are masked in what people see.
    assert!(staging.yaml.contains("Bearer ${env:STAGING_MIMIR_TOKEN}"));
    assert!(!staging.masked_yaml.contains("STAGING_MIMIR_TOKEN"));
    assert!(staging.masked_yaml.contains("Bearer ***"));
    assert!(staging.yaml.contains("${env:VENDOR_TRIAL_TOKEN}"));
    assert!(!staging.masked_yaml.contains("VENDOR_TRIAL_TOKEN"));
    assert!(prod.yaml.contains("${env:GATEWAY_API_KEY}"));
    assert!(prod.yaml.contains("${env:MIMIR_TOKEN}"));
    // A non-sensitive reference is the same in both forms.
    assert!(prod.yaml.contains("value: ${env:CLOUD_REGION}"));
    assert!(prod.masked_yaml.contains("value: ${env:CLOUD_REGION}"));
    for r in rev.rendered.configurations.values() {
        assert!(
            !r.masked_yaml.contains("${env:GATEWAY_API_KEY}"),
            "{}",
            r.name
        );
    }
}

#[test]
fn example_labels_select_the_expected_configuration() {
    let rev = compile_ok(&example_snapshot());
    let labels = |pairs: &[(&str, &str)]| -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let pick = |pairs: &[(&str, &str)]| select(rev.catalog.configurations.values(), &labels(pairs));
    let one = |n: &str| Selection::One(n.to_string());
    assert_eq!(
        pick(&[
            ("deployment.environment", "production"),
            ("os.type", "linux")
        ]),
        one("linux-production")
    );
    assert_eq!(
        pick(&[
            ("deployment.environment", "production"),
            ("os.type", "windows")
        ]),
        one("windows-production")
    );
    assert_eq!(
        pick(&[("deployment.environment", "staging"), ("os.type", "linux")]),
        one("staging")
    );
    assert_eq!(
        pick(&[
            ("deployment.environment", "staging"),
            ("os.type", "windows")
        ]),
        one("default")
    );
    assert_eq!(pick(&[]), one("default"));
}

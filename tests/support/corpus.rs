//! The diagnostics corpora (`tests/corpus`, `tests/corpus-otelcol`) and `--format json` reports.

use std::path::PathBuf;

use super::workspace;

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

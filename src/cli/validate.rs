//! `gitamp validate [PATH] [-o text|json|github|sarif] [--otelcol PATH]`.
//!
//! Exit codes: 0 valid (warnings allowed), 1 invalid, 2 usage or I/O error (including a
//! collector that is missing or could not finish its check).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use gitamp_core::{Diagnostic, Diagnostics, Severity};

use super::fsread::read_dir_checked;
use crate::otelcol::Otelcol;

/// Check a config repository and print every diagnostic.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository folder.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Output format: text for people, json for tools, github for workflow annotations, sarif
    /// (2.1.0) for code-scanning upload.
    // `--format`: its name before `-o` was every command's; kept, hidden, for scripts.
    #[arg(short = 'o', long = "output", alias = "format", value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// An OpenTelemetry Collector binary (the distribution agents run): each rendered
    /// configuration must also pass its `validate --config=FILE`.
    /// An empty value (an unset CI input) means none.
    #[arg(long, env = "GITAMP_OTELCOL", value_parser = crate::otelcol::path_or_empty())]
    pub otelcol: Option<PathBuf>,
    /// How long one collector run may take before it is killed: 60s, 2m, 500ms; a bare number
    /// is seconds.
    #[arg(long, env = "GITAMP_OTELCOL_TIMEOUT", value_name = "DURATION", default_value = "60s",
          value_parser = super::duration::zero_or_more)]
    pub otelcol_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Github,
    Sarif,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // An empty GITAMP_OTELCOL (an unset Action input) means no collector.
    let otelcol = args
        .otelcol
        .as_ref()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| Otelcol::new(p).map(|o| o.with_timeout(args.otelcol_timeout)))
        .transpose()
        .context("--otelcol")?;
    let (snapshot, skipped) = read_dir_checked(&args.path)
        .with_context(|| format!("cannot read repository {}", args.path.display()))?;
    let (revision, diagnostics, valid) = match gitamp_core::compile_with(&snapshot, skipped) {
        Ok(rev) => match &otelcol {
            None => (rev.revision, rev.warnings, true),
            Some(otelcol) => collector_check(otelcol, rev)?,
        },
        Err(rejected) => (rejected.revision, rejected.diagnostics, false),
    };
    let out = match args.format {
        Format::Text => text(&args.path, &revision, &diagnostics, valid),
        Format::Json => json(&args.path, &revision, &diagnostics, valid)?,
        Format::Github => github(&args.path, &diagnostics),
        Format::Sarif => sarif(&args.path, &diagnostics)?,
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .context("cannot write output")?;
    stdout.flush().context("cannot write output")?;
    Ok(ExitCode::from(if valid {
        super::exit::OK
    } else {
        super::exit::FAILED
    }))
}

/// The collector's verdict added to a revision that passed gitamp's own checks. A
/// configuration the collector could not check is an error of the run (exit 2), not a verdict.
fn collector_check(
    otelcol: &Otelcol,
    rev: gitamp_core::Revision,
) -> anyhow::Result<(String, Diagnostics, bool)> {
    let report = otelcol.check(&rev);
    if !report.failures.is_empty() {
        let reasons: Vec<String> = report
            .failures
            .iter()
            .map(|f| format!("configuration `{}`: {}", f.configuration, f.error))
            .collect();
        anyhow::bail!(
            "the collector {} could not check the repository:\n  {}",
            otelcol.path().display(),
            reasons.join("\n  ")
        );
    }
    let mut diagnostics = rev.warnings;
    diagnostics.extend(report.diagnostics);
    diagnostics.sort();
    let valid = !diagnostics.has_errors();
    Ok((rev.revision, diagnostics, valid))
}

/// The path of a repository file as seen from the current directory, so that editors,
/// terminals and PR annotations open the right file when PATH is a sub-folder.
pub fn display_path(root: &Path, file: &str) -> String {
    let joined = root.join(file);
    let rel = if joined.is_absolute() {
        std::env::current_dir()
            .ok()
            .and_then(|cwd| joined.strip_prefix(cwd).ok().map(Path::to_path_buf))
            .unwrap_or(joined)
    } else {
        joined
    };
    let s = rel.to_string_lossy().replace('\\', "/");
    s.strip_prefix("./").map(str::to_string).unwrap_or(s)
}

fn severity(d: &Diagnostic) -> &'static str {
    match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// `file:line:col: error[E012 unknown-destination]: message` lines, then a summary.
pub fn text(root: &Path, revision: &str, diags: &Diagnostics, valid: bool) -> String {
    let mut out = String::new();
    for d in diags.iter() {
        out.push_str(&format!(
            "{}:{}:{}: {}[{} {}]: {}\n",
            display_path(root, &d.location.file),
            d.location.line,
            d.location.column,
            severity(d),
            d.code,
            d.name,
            d.message
        ));
    }
    let errors = diags.errors().count();
    let warnings = diags.warnings().count();
    out.push_str(&format!(
        "{}: {} ({}, {}; revision {revision})\n",
        root.display(),
        if valid { "valid" } else { "invalid" },
        plural(errors, "error"),
        plural(warnings, "warning"),
    ));
    out
}

/// One JSON object: `valid`, `revision`, counts and every diagnostic (repository-relative
/// files, as the core reports them).
pub fn json(
    root: &Path,
    revision: &str,
    diags: &Diagnostics,
    valid: bool,
) -> anyhow::Result<String> {
    let value = serde_json::json!({
        "valid": valid,
        "path": root.to_string_lossy(),
        "revision": revision,
        "errors": diags.errors().count(),
        "warnings": diags.warnings().count(),
        "diagnostics": diags,
    });
    Ok(serde_json::to_string_pretty(&value)? + "\n")
}

/// GitHub workflow commands: `::error file=…,line=…,col=…,title=E012 unknown-destination::message`.
pub fn github(root: &Path, diags: &Diagnostics) -> String {
    let mut out = String::new();
    for d in diags.iter() {
        out.push_str(&format!(
            "::{} file={},line={},col={},title={}::{}\n",
            severity(d),
            escape_property(&display_path(root, &d.location.file)),
            d.location.line,
            d.location.column,
            escape_property(&format!("{} {}", d.code, d.name)),
            escape_data(&d.message),
        ));
    }
    out
}

/// SARIF 2.1.0, for code scanning (`github/codeql-action/upload-sarif`): one rule per
/// diagnostic code present (id `E012`, name `unknown-destination`), one result per diagnostic.
/// URIs are relative to the current directory (the checkout root in CI), as code scanning
/// resolves them against the repository root.
pub fn sarif(root: &Path, diags: &Diagnostics) -> anyhow::Result<String> {
    let mut rules: std::collections::BTreeMap<&str, serde_json::Value> = Default::default();
    for d in diags.iter() {
        rules.entry(d.code).or_insert_with(|| {
            serde_json::json!({
                "id": d.code,
                "name": d.name,
                "shortDescription": {"text": d.name.replace('-', " ")},
                "defaultConfiguration": {"level": severity(d)},
            })
        });
    }
    let results: Vec<serde_json::Value> = diags
        .iter()
        .map(|d| {
            serde_json::json!({
                "ruleId": d.code,
                "level": severity(d),
                "message": {"text": d.message},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": display_path(root, &d.location.file)},
                        "region": {
                            "startLine": d.location.line.max(1),
                            "startColumn": d.location.column.max(1),
                        },
                    },
                }],
            })
        })
        .collect();
    let value = serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "gitamp",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://example.invalid/gitamp",
                "rules": rules.into_values().collect::<Vec<_>>(),
            }},
            "results": results,
        }],
    });
    Ok(serde_json::to_string_pretty(&value)? + "\n")
}

/// Workflow-command escaping of a message (GitHub's `escapeData`).
fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Workflow-command escaping of a property value (GitHub's `escapeProperty`).
fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(escape_data("a%b\nc"), "a%25b%0Ac");
        assert_eq!(escape_property("a:b,c"), "a%3Ab%2Cc");
    }

    #[test]
    fn paths_join_root() {
        assert_eq!(display_path(Path::new("."), "a/b.yaml"), "a/b.yaml");
        assert_eq!(display_path(Path::new("repo"), "a/b.yaml"), "repo/a/b.yaml");
    }
}

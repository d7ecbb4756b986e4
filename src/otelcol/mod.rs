//! The collector's own check (`--otelcol PATH`): every rendered configuration of a revision is
//! given to `PATH validate --config=FILE`, and what the collector refuses becomes a diagnostic
//! on the file and line that produced it.
//!
//! gitamp's own checks know the repository format, not every collector component: a field a
//! component does not have, a duration it cannot parse, an option an exporter rejects only
//! show up when the collector unmarshals and validates its configuration. Only the collector
//! (the distribution agents run) can say.
//!
//! - **Where**: the collector's error names a component ID; IDs are derived from resource
//!   names (`otlp/dst-gateway__grpc`, see `gitamp_core::render::components`), so the ID leads
//!   back to the resource, and the keys and values the error names lead to the parameter value
//!   or the template line that wrote them ([`locate`]). Without an ID, the configuration's own
//!   location. The collector's message format is described in [`parse`].
//! - **Secrets**: the real rendered YAML is checked (written to a private temporary file, 0600,
//!   removed afterwards), the collector runs with a cleared environment plus a placeholder for
//!   each `${env:NAME}` the configuration references (so it never sees the caller's secrets and
//!   the verdict does not depend on who runs it; [`env`]), and its messages are masked with the
//!   revision's sensitive values before anyone sees them.
//! - **Platforms**: a configuration whose selector admits only agents of another operating
//!   system (`os.type: windows` checked on Linux) is not given to this collector, which lacks or
//!   stubs that system's components; it gets warning W113 instead of a verdict.
//! - **Bounds**: one run per configuration, at most one per core at a time, each killed after
//!   a timeout, its output read up to [`MAX_OUTPUT`] per stream.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gitamp_core::catalog::model::{Selector, SelectorOperator};
use gitamp_core::render::codes;
use gitamp_core::render::mask::{mask_text, secrets_of};
use gitamp_core::{Diagnostics, Location, Rejected, Revision, Snapshot};

use parse::Refusal;

mod env;
mod locate;
mod parse;

/// How long one collector run may take by default. `validate` starts in about a second; the
/// margin is for a loaded CI machine.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes kept of each of the collector's output streams: its verdict is a few lines, and a
/// runaway collector must not fill the server's memory.
pub const MAX_OUTPUT: usize = 64 * 1024;

/// Why the check could not run: a problem of the machine or the collector binary, never of the
/// repository.
#[derive(Debug, thiserror::Error)]
pub enum OtelcolError {
    #[error("the collector {0} does not exist")]
    Missing(PathBuf),
    #[error("the collector {0} is not an executable file")]
    NotExecutable(PathBuf),
    #[error("cannot write the configuration for the collector to check: {0}")]
    TempFile(#[source] std::io::Error),
    #[error("cannot run the collector {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the collector did not finish within {} s (killed)", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("the collector stopped without a verdict ({status}){}", output_suffix(.output))]
    Crashed { status: String, output: String },
}

fn output_suffix(output: &str) -> String {
    match output.trim() {
        "" => String::new(),
        o => format!(": {}", parse::one_line(o, 400)),
    }
}

/// The value parser of `--otelcol`: a path, or empty for none (an unset CI input arrives as
/// an empty variable, which clap's path parser refuses).
pub fn path_or_empty() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    use clap::builder::TypedValueParser;
    clap::builder::OsStringValueParser::new().map(PathBuf::from)
}

/// A collector binary to check configurations with.
#[derive(Debug, Clone)]
pub struct Otelcol {
    path: PathBuf,
    timeout: Duration,
}

/// One configuration the collector could not check.
#[derive(Debug)]
pub struct Failure {
    pub configuration: String,
    pub error: OtelcolError,
}

/// What the collector said about a revision.
#[derive(Debug, Default)]
pub struct Report {
    /// Refusals ([`codes::COLLECTOR_REFUSED_CONFIG`]) and incomplete checks
    /// ([`codes::COLLECTOR_CHECK_INCOMPLETE`]), masked.
    pub diagnostics: Diagnostics,
    /// Configurations the check could not run for (masked messages).
    pub failures: Vec<Failure>,
}

/// The collector's verdict on one configuration.
#[derive(Debug)]
enum Verdict {
    Accepted,
    /// The collector's error, one entry per error it listed.
    Refused(Vec<Refusal>),
}

impl Otelcol {
    /// A collector at `path`, checked now so that a wrong path is a usage error at start, not a
    /// rejected revision later.
    pub fn new(path: impl Into<PathBuf>) -> Result<Otelcol, OtelcolError> {
        let path = path.into();
        let meta = std::fs::metadata(&path).map_err(|_| OtelcolError::Missing(path.clone()))?;
        if !meta.is_file() || !is_executable(&meta) {
            return Err(OtelcolError::NotExecutable(path));
        }
        Ok(Otelcol {
            path,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Kill a run after `timeout` (default [`DEFAULT_TIMEOUT`]).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Otelcol {
        self.timeout = timeout;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Check every rendered configuration of `revision`, in parallel (one run per core). A
    /// configuration whose selector only admits agents of another operating system is not
    /// given to this collector (a Linux build cannot judge a Windows configuration: it lacks
    /// or stubs the Windows-only components); it gets a warning saying it was not checked.
    pub fn check(&self, revision: &Revision) -> Report {
        let mut report = Report::default();
        let host = host_os_type();
        let mut configs = Vec::new();
        for config in revision.rendered.configurations.values() {
            let foreign = revision
                .catalog
                .configurations
                .get(&config.name)
                .and_then(|c| other_os(&c.spec.selector, host).map(|os| (c, os)));
            let Some((c, os)) = foreign else {
                configs.push(config);
                continue;
            };
            let message = format!(
                "configuration `{}` selects only agents with {os} and the collector runs on \
                 {host}: it was not checked by the collector (check it with a collector built \
                 for those agents)",
                config.name
            );
            report.diagnostics.push(
                codes::COLLECTOR_CHECK_INCOMPLETE.at(c.origin.locate("/spec/selector"), message),
            );
        }
        if configs.is_empty() {
            return report;
        }
        let dir = match private_dir() {
            Ok(d) => d,
            Err(e) => {
                report.failures = configs
                    .iter()
                    .map(|c| Failure {
                        configuration: c.name.clone(),
                        error: OtelcolError::TempFile(std::io::Error::new(e.kind(), e.to_string())),
                    })
                    .collect();
                return report;
            }
        };
        let types = env::env_types(&revision.catalog);
        let workers = std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .min(configs.len());
        let next = AtomicUsize::new(0);
        let verdicts: Mutex<BTreeMap<usize, Result<Verdict, OtelcolError>>> = Mutex::default();
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(config) = configs.get(i) else { break };
                        let env = env::placeholders(&config.yaml, &types);
                        let verdict = self.run(dir.path(), &config.name, &config.yaml, &env);
                        verdicts
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(i, verdict);
                    }
                });
            }
        });
        let secrets = secret_forms(secrets_of(revision));
        let verdicts = verdicts.into_inner().unwrap_or_else(|p| p.into_inner());
        for (i, verdict) in verdicts {
            let config = configs[i];
            match verdict {
                Ok(Verdict::Accepted) => {}
                Ok(Verdict::Refused(refusals)) => {
                    let ids = locate::component_ids(&config.yaml);
                    for refusal in &refusals {
                        report.diagnostics.push(locate::diagnose(
                            &revision.catalog,
                            &config.name,
                            &ids,
                            refusal,
                            &secrets,
                        ));
                    }
                }
                Err(error) => report.failures.push(Failure {
                    configuration: config.name.clone(),
                    error: mask_error(error, &secrets),
                }),
            }
        }
        report.diagnostics.sort();
        report
    }

    /// One `validate` run on one configuration.
    fn run(
        &self,
        dir: &Path,
        name: &str,
        yaml: &str,
        env: &[(String, String)],
    ) -> Result<Verdict, OtelcolError> {
        let file = dir.join(format!("{name}.yaml"));
        write_private(&file, yaml).map_err(OtelcolError::TempFile)?;
        let result = self.run_file(dir, &file, env);
        let _ = std::fs::remove_file(&file);
        let (status, output) = result?;
        if status.success() {
            return Ok(Verdict::Accepted);
        }
        // A Go panic or a signal is the collector's failure, not a verdict on the config.
        if status.code().is_none() || output.contains("\npanic: ") || output.starts_with("panic: ")
        {
            return Err(OtelcolError::Crashed {
                status: status.to_string(),
                output,
            });
        }
        let errors = parse::refusals(&output);
        if errors.is_empty() {
            return Err(OtelcolError::Crashed {
                status: status.to_string(),
                output,
            });
        }
        Ok(Verdict::Refused(errors))
    }

    /// Run the collector on `file`; its exit status and what it printed (stderr, then stdout).
    fn run_file(
        &self,
        dir: &Path,
        file: &Path,
        env: &[(String, String)],
    ) -> Result<(ExitStatus, String), OtelcolError> {
        let mut child = Command::new(&self.path)
            .arg("validate")
            .arg(format!("--config={}", file.display()))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| OtelcolError::Spawn {
                path: self.path.clone(),
                source,
            })?;
        let stdout = child.stdout.take().map(read_bounded);
        let stderr = child.stderr.take().map(read_bounded);
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(OtelcolError::Timeout(self.timeout));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(source) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(OtelcolError::Spawn {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        };
        let mut output = String::new();
        for reader in [stderr, stdout].into_iter().flatten() {
            if let Ok(text) = reader.join() {
                output.push_str(&text);
            }
        }
        status.map(|s| (s, output))
    }
}

/// Compile a snapshot and, with a collector, have it check every configuration: what
/// `gitamp serve --otelcol` accepts or rejects. A refusal, or a check that could not run,
/// rejects the revision like any error (the revision is never served unchecked).
pub fn compile_checked(
    snapshot: &Snapshot,
    source_diagnostics: Diagnostics,
    otelcol: Option<&Otelcol>,
) -> Result<Revision, Rejected> {
    let mut revision = gitamp_core::compile_with(snapshot, source_diagnostics)?;
    let Some(otelcol) = otelcol else {
        return Ok(revision);
    };
    let report = otelcol.check(&revision);
    let mut found = report.diagnostics;
    for failure in report.failures {
        let location = revision
            .catalog
            .configurations
            .get(&failure.configuration)
            .map(|c| c.origin.locate("/metadata/name"))
            .unwrap_or_else(|| unknown_location(&failure.configuration));
        found.push(codes::COLLECTOR_CHECK_FAILED.at(
            location,
            format!(
                "configuration `{}`: the collector could not check it: {}; the revision is not \
                 served unchecked",
                failure.configuration, failure.error
            ),
        ));
    }
    let mut diagnostics = std::mem::take(&mut revision.warnings);
    diagnostics.extend(found);
    diagnostics.sort();
    if diagnostics.has_errors() {
        return Err(Rejected {
            revision: revision.revision,
            diagnostics,
        });
    }
    revision.warnings = diagnostics;
    Ok(revision)
}

/// The revision's sensitive values plus the forms the collector is seen to print them in: it
/// quotes a gRPC endpoint without its scheme (`address user:key@host: missing port`), so a
/// secret URL is also masked without its scheme, and its user information on its own.
fn secret_forms(secrets: Vec<String>) -> Vec<String> {
    let mut out = secrets.clone();
    for s in &secrets {
        if let Some((_, rest)) = s.split_once("://") {
            out.push(rest.to_string());
            if let Some((userinfo, _)) = rest.split_once('@') {
                out.push(userinfo.to_string());
            }
        }
    }
    // Longest first, as `secrets_of` orders them: a secret containing another goes whole.
    out.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    out.dedup();
    out
}

/// The `os.type` label value agents on this machine's operating system report (OpenTelemetry
/// semantic conventions: `linux`, `windows`, `darwin`, ...).
fn host_os_type() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        os => os,
    }
}

/// When `selector` cannot match an agent with `os.type` = `host`, the requirement that rules
/// it out (`os.type=windows`), for the message. A selector that says nothing of `os.type` may
/// select agents like this machine, so their configuration is checked.
fn other_os(selector: &Selector, host: &str) -> Option<String> {
    if let Some(os) = selector.match_labels.get(OS_TYPE)
        && os != host
    {
        return Some(format!("{OS_TYPE}={os}"));
    }
    for e in selector
        .match_expressions
        .iter()
        .filter(|e| e.key == OS_TYPE)
    {
        let has_host = e.values.iter().any(|v| v == host);
        match e.operator {
            SelectorOperator::In if !has_host => {
                return Some(format!("{OS_TYPE} in ({})", e.values.join(", ")));
            }
            SelectorOperator::NotIn if has_host => {
                return Some(format!("{OS_TYPE} not in ({})", e.values.join(", ")));
            }
            _ => {}
        }
    }
    None
}

const OS_TYPE: &str = "os.type";

fn unknown_location(config: &str) -> Location {
    Location {
        file: config.into(),
        line: 1,
        column: 1,
    }
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    true
}

/// A new temporary folder only the owner can enter (tempfile's default follows the umask).
fn private_dir() -> std::io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("gitamp-otelcol-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o700));
    }
    builder.tempdir()
}

/// Write `text` to a new file only the owner can read (the config may hold literal secrets).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.flush()
}

/// Read a child's stream on a thread: the first [`MAX_OUTPUT`] bytes are kept, the rest is
/// read and dropped so the child never blocks on a full pipe.
fn read_bounded(mut stream: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = MAX_OUTPUT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}

fn mask_error(error: OtelcolError, secrets: &[String]) -> OtelcolError {
    match error {
        OtelcolError::Crashed { status, output } => OtelcolError::Crashed {
            status,
            output: mask_text(&output, secrets),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gitamp_core::catalog::model::SelectorRequirement;

    #[test]
    fn secret_urls_are_masked_without_their_scheme_too() {
        let forms = secret_forms(vec!["https://user:key@host.example".into()]);
        assert_eq!(
            forms,
            [
                "https://user:key@host.example",
                "user:key@host.example",
                "user:key"
            ]
        );
        let text = "address user:key@host.example: missing port";
        assert_eq!(mask_text(text, &forms), "address ***: missing port");
    }

    #[cfg(unix)]
    #[test]
    fn the_checked_file_is_private_and_removed() -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = private_dir()?;
        let path = dir.path().to_path_buf();
        let file = path.join("c.yaml");
        write_private(&file, "a: b\n")?;
        assert_eq!(
            std::fs::metadata(&path)?.permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            std::fs::metadata(&file)?.permissions().mode() & 0o777,
            0o600
        );
        drop(dir);
        assert!(!path.exists());
        Ok(())
    }

    #[test]
    fn configurations_for_another_os() {
        let mut s = Selector::default();
        assert_eq!(other_os(&s, "linux"), None);
        s.match_labels.insert("os.type".into(), "windows".into());
        assert_eq!(other_os(&s, "linux").as_deref(), Some("os.type=windows"));
        assert_eq!(other_os(&s, "windows"), None);
        let mut s = Selector::default();
        s.match_expressions.push(SelectorRequirement {
            key: "os.type".into(),
            operator: SelectorOperator::NotIn,
            values: vec!["windows".into()],
        });
        assert_eq!(other_os(&s, "linux"), None);
        assert_eq!(
            other_os(&s, "windows").as_deref(),
            Some("os.type not in (windows)")
        );
    }
}

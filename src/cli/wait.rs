//! `gitamp wait REVISION [--timeout 5m]`: wait until every agent a revision targeted applied
//! it, for pipelines ("merge, then wait for the fleet"). Polls
//! `GET /api/v1/revisions/{revision}`, whose `convergence.state` is the server's one verdict.
//!
//! Exit codes: 0 every targeted agent applied it; 1 it was rejected, its rollout failed or
//! halted, a newer revision superseded it first, or the timeout passed (the reason is
//! printed); 2 error.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::StatusCode;

use super::client::{Client, Refused, ServerArgs, segment};
use super::exit::Failed;
use super::output::OutputArgs;
use crate::api::model::{ConvergenceItem, RevisionItem};

/// How often the revision is asked while waiting.
const POLL: Duration = Duration::from_millis(500);

/// Wait until a revision reached every agent it targets.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The commit id, or a unique prefix of at least 4 characters. A revision the server has
    /// not fetched yet is waited for too.
    pub revision: String,
    /// How long to wait: 5m, 90s, 1h.
    #[arg(long, value_name = "DURATION", default_value = "5m",
          value_parser = super::duration::positive)]
    pub timeout: Duration,
    /// `table`/`wide`: a progress line on stderr at each change and a last line on stdout;
    /// `json`/`yaml`: the revision as the server last showed it.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// One line: `3f2a1c9e0b7d: 5/8 agents applied, 1 failed, 2 waiting (p50 40ms, p99 1.2s)`.
pub fn progress(r: &RevisionItem, c: &ConvergenceItem) -> String {
    let short = crate::source::short_revision(&r.revision);
    let mut line = format!("{short}: {}/{} agents applied", c.applied, c.targeted);
    let bad = c.failed + c.rolled_back;
    if bad > 0 {
        line.push_str(&format!(", {bad} failed"));
    }
    if c.waiting > 0 {
        line.push_str(&format!(", {} waiting", c.waiting));
    }
    if let (Some(p50), Some(p99)) = (c.latency.p50_ms, c.latency.p99_ms) {
        let d = |ms| super::duration::to_arg(Duration::from_millis(ms));
        line.push_str(&format!(
            " (push to applied p50 {}, p99 {})",
            d(p50),
            d(p99)
        ));
    }
    line
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.server)?;
    let path = format!("/api/v1/revisions/{}", segment(args.revision.trim()));
    let deadline = Instant::now() + args.timeout;
    let mut last_line = String::new();
    loop {
        let seen: Option<(serde_json::Value, RevisionItem)> = match client.get(&path, &[]) {
            Ok(raw) => {
                let item: RevisionItem = serde_json::from_value(serde_json::Value::clone(&raw))
                    .context("the server's revision has an unexpected shape")?;
                Some((raw, item))
            }
            // Not fetched yet (a push the poller has not seen): keep waiting.
            Err(err)
                if err
                    .downcast_ref::<Refused>()
                    .is_some_and(|r| r.status == StatusCode::NOT_FOUND) =>
            {
                None
            }
            Err(err) => return Err(err),
        };
        if let Some((raw, r)) = &seen {
            if !r.accepted {
                let first = r
                    .diagnostics
                    .iter()
                    .find(|d| d.severity == "error")
                    .map(|d| format!("; first: {}:{}: {} {}", d.file, d.line, d.code, d.message))
                    .unwrap_or_default();
                return Err(Failed(format!(
                    "revision {} was rejected ({} error(s)){first}; `gitamp revisions` lists them",
                    r.revision, r.errors
                ))
                .into());
            }
            let Some(c) = r.convergence.as_ref() else {
                // Accepted a moment ago (or before the server kept figures): ask again.
                if Instant::now() >= deadline {
                    return Err(Failed(format!(
                        "the server has no convergence figures for {}",
                        r.revision
                    ))
                    .into());
                }
                std::thread::sleep(POLL);
                continue;
            };
            let line = progress(r, c);
            match c.state.as_str() {
                "converged" => {
                    finish(&args, raw, &line)?;
                    return Ok(ExitCode::from(super::exit::OK));
                }
                "failed" | "superseded" => {
                    let why = c.reason.as_deref().unwrap_or(&c.state);
                    return Err(Failed(format!("{line}: {why}")).into());
                }
                _ => {
                    if line != last_line && !args.output.output.is_data() {
                        eprintln!("{line}");
                    }
                    last_line = line;
                }
            }
        }
        if Instant::now() >= deadline {
            let state = match &seen {
                Some(_) => last_line,
                None => format!("the server has not seen revision {}", args.revision),
            };
            return Err(Failed(format!(
                "timed out after {}: {state}",
                super::duration::to_arg(args.timeout)
            ))
            .into());
        }
        std::thread::sleep(POLL);
    }
}

/// The last word: the revision as data, or the line for people.
fn finish(args: &Args, raw: &serde_json::Value, line: &str) -> anyhow::Result<()> {
    match args.output.output.data(raw)? {
        Some(data) => print!("{data}"),
        None => println!("{line}"),
    }
    Ok(())
}

//! `gitamp revisions [--limit N]` (alias `gitamp history`): the revisions a running server saw,
//! newest first, accepted or rejected, how many targeted agents applied each (and the p99 of
//! push to applied), with the diagnostics of the rejected ones (`GET /api/v1/revisions`).
//!
//! Exit codes: 0 listed, 2 error.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;

use super::client::{Client, ServerArgs};
use super::output::{self, OutputArgs};
use crate::api::model::{Page, RevisionItem};

/// List the revisions seen.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,
    /// At most this many (the server keeps the last 200).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.server)?;
    let raw: serde_json::Value = client.get(
        "/api/v1/revisions",
        &[("limit", args.limit.max(1).to_string())],
    )?;
    let out = match args.output.output.data(&raw)? {
        Some(data) => data,
        None => {
            let list: Page<RevisionItem> = serde_json::from_value(raw)
                .context("the server's revisions have an unexpected shape")?;
            text(&list.items, args.output.output.is_wide())
        }
    };
    print!("{out}");
    Ok(ExitCode::from(super::exit::OK))
}

/// A table of revisions, then the diagnostics of each rejected one (file:line, as `gitamp
/// validate` prints them; `-o wide` adds the warnings of accepted ones).
fn text(items: &[RevisionItem], wide: bool) -> String {
    let rows = items.iter().map(|r| {
        vec![
            r.revision.clone(),
            if r.accepted { "accepted" } else { "rejected" }.to_string(),
            output::when(&r.at, wide),
            r.errors.to_string(),
            r.warnings.to_string(),
            r.convergence
                .as_ref()
                .map(|c| format!("{}/{} {}", c.applied, c.targeted, c.state))
                .unwrap_or_else(|| "-".into()),
            r.convergence
                .as_ref()
                .and_then(|c| c.latency.p99_ms)
                .map(|ms| super::duration::to_arg(std::time::Duration::from_millis(ms)))
                .unwrap_or_else(|| "-".into()),
        ]
    });
    let mut o = output::table(
        &[
            "REVISION",
            "OUTCOME",
            if wide { "TIME" } else { "AGE" },
            "ERRORS",
            "WARNINGS",
            "APPLIED",
            "P99",
        ],
        rows,
        wide,
    );
    let _ = writeln!(o, "{} revision(s)", items.len());
    for r in items.iter().filter(|r| !r.accepted || wide) {
        if r.diagnostics.is_empty() {
            continue;
        }
        let what = if r.accepted { "warnings" } else { "rejected" };
        let _ = writeln!(o, "\n{} {what}:", r.revision);
        for d in &r.diagnostics {
            let _ = writeln!(
                o,
                "  {}:{}:{}: {}[{} {}]: {}",
                d.file, d.line, d.column, d.severity, d.code, d.name, d.message
            );
        }
    }
    o
}

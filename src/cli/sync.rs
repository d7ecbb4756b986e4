//! `gitamp sync [--timeout 60s]`: have a running server fetch its Git source now
//! (`POST /api/v1/sync`, the path a webhook takes), wait until that fetch is done (its
//! `last_fetch` in `/api/v1/status` moves; the server publishes a fetch's time after its
//! outcome), and print the revision now served, or why the tip is not served.
//!
//! Exit codes: 0 the tip is served, 1 the fetch failed, the tip was rejected, the source is not
//! fetched (a folder) or the fetch did not finish in time, 2 error.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::client::{Client, ServerArgs};
use super::exit::Failed;
use super::output::OutputArgs;
use super::status::tip_rejected;
use crate::api::model::StatusResponse;

/// How often the status is asked while waiting.
const POLL: Duration = Duration::from_millis(200);

/// Fetch the source now and wait for the result.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,
    /// How long to wait for the fetch (and the compile of what it brought): 60s, 2m.
    #[arg(long, value_name = "DURATION", default_value = "60s",
          value_parser = super::duration::positive)]
    pub timeout: Duration,
    /// `table` and `wide` print a line for people; `json` and `yaml` the server's status after
    /// the fetch.
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(serde::Deserialize)]
struct Requested {
    last_fetch: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.server)?;
    let requested: Requested = client.post("/api/v1/sync")?;
    let deadline = Instant::now() + args.timeout;
    let (raw, status) = loop {
        let raw: serde_json::Value = client.get("/api/v1/status", &[])?;
        let status: StatusResponse = serde_json::from_value(raw.clone())
            .context("the server's status has an unexpected shape")?;
        if status.last_fetch.is_some() && status.last_fetch != requested.last_fetch {
            break (raw, status);
        }
        if Instant::now() >= deadline {
            return Err(Failed(format!(
                "the fetch did not finish within {} (last fetch {}); `gitamp status` shows it \
                 when it does",
                super::duration::to_arg(args.timeout),
                requested.last_fetch.as_deref().unwrap_or("never")
            ))
            .into());
        }
        std::thread::sleep(POLL);
    };
    let machine = args.output.output.data(&raw)?;
    if let Some(data) = &machine {
        print!("{data}");
    }
    if let Some(error) = &status.last_error {
        return Err(Failed(format!("the fetch failed: {error}")).into());
    }
    if tip_rejected(&status) {
        let mut why = String::new();
        if let Some(r) = &status.last_rejected {
            let _ = write!(
                why,
                "revision {} was rejected with {} error(s); still serving {}",
                r.revision,
                r.errors,
                status.current_revision.as_deref().unwrap_or("nothing")
            );
            for d in &r.diagnostics {
                let _ = write!(
                    why,
                    "\n  {}:{}:{}: {}[{} {}]: {}",
                    d.file, d.line, d.column, d.severity, d.code, d.name, d.message
                );
            }
        }
        return Err(Failed(why).into());
    }
    if machine.is_none() {
        println!(
            "synced: serving {}{}",
            status.current_revision.as_deref().unwrap_or("nothing yet"),
            status
                .accepted_at
                .as_deref()
                .map(|at| format!(" (accepted {at})"))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::from(super::exit::OK))
}

//! `gitamp sync [--timeout 60s]`: have a running server fetch its Git source now
//! (`POST /api/v1/sync`, the path a webhook takes), wait until that fetch is done (the first
//! fetch in `/api/v1/status` that started after the request; the server publishes a fetch's
//! time after its outcome), and print the revision now served, or why the tip is not served.
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
use super::status::{parse_time, tip_rejected};
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
    requested_at: Option<String>,
    last_fetch: Option<String>,
}

impl Requested {
    /// Whether `status` shows the fetch this request caused: the first to start at or after
    /// the request (its end minus its duration; a fetch under way when the request came in
    /// does not count). Without `requested_at`, any fetch after the one before the request.
    fn done(&self, status: &StatusResponse) -> bool {
        let Some(end) = status.last_fetch.as_deref() else {
            return false;
        };
        let requested = self.requested_at.as_deref().and_then(parse_time);
        match (requested, parse_time(end)) {
            (Some(requested), Some(end)) => {
                let took = status.last_fetch_duration_ms.unwrap_or(0);
                let took = time::Duration::milliseconds(i64::try_from(took).unwrap_or(i64::MAX));
                end - took >= requested
            }
            _ => status.last_fetch != self.last_fetch,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.server)?;
    let requested: Requested = client.post("/api/v1/sync")?;
    let deadline = Instant::now() + args.timeout;
    let (raw, status) = loop {
        let raw: serde_json::Value = client.get("/api/v1/status", &[])?;
        let status: StatusResponse = serde_json::from_value(raw.clone())
            .context("the server's status has an unexpected shape")?;
        if requested.done(&status) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn status(last_fetch: &str, took_ms: u64) -> StatusResponse {
        StatusResponse {
            last_fetch: Some(last_fetch.into()),
            last_fetch_duration_ms: Some(took_ms),
            ..StatusResponse::default()
        }
    }

    #[test]
    fn only_a_fetch_that_started_after_the_request_is_its_answer() {
        let requested = Requested {
            requested_at: Some("2026-12-04T10:00:10Z".into()),
            last_fetch: Some("2026-12-04T10:00:00Z".into()),
        };
        assert!(!requested.done(&StatusResponse::default()), "no fetch yet");
        assert!(
            !requested.done(&status("2026-12-04T10:00:00Z", 100)),
            "the fetch before"
        );
        assert!(
            !requested.done(&status("2026-12-04T10:00:11Z", 2000)),
            "under way when the request came: it may have missed the new tip"
        );
        assert!(requested.done(&status("2026-12-04T10:00:11Z", 500)));
        // An older server without `requested_at`: any fetch after the one before.
        let old = Requested {
            requested_at: None,
            last_fetch: Some("2026-12-04T10:00:00Z".into()),
        };
        assert!(!old.done(&status("2026-12-04T10:00:00Z", 100)));
        assert!(old.done(&status("2026-12-04T10:00:11Z", 2000)));
    }
}

//! `gitamp events [--agent ID] [--kind KIND] [--limit N]`: a running server's recent events,
//! newest first (`GET /api/v1/events`).
//!
//! Exit codes: 0 listed, 1 no such agent (`--agent`), 2 error.

use std::process::ExitCode;

use anyhow::Context;

use super::client::{Client, ServerArgs};
use super::output::{self, OutputArgs};
use crate::api::model::{EventItem, Page};

/// List recent events.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Only this agent's events (its instance UID, or its last digits as `gitamp agents`
    /// shows them).
    #[arg(long, value_name = "ID")]
    pub agent: Option<String>,
    /// Only events of this kind (`rollout-halted`, `failed`, `pushed`, ...).
    #[arg(long)]
    pub kind: Option<String>,
    /// At most this many (the server keeps the last 2,000).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.server)?;
    let mut query = vec![("limit", args.limit.max(1).to_string())];
    if let Some(agent) = &args.agent {
        query.push(("agent", client.agent_uid(agent)?));
    }
    if let Some(kind) = &args.kind {
        query.push(("kind", kind.clone()));
    }
    let raw: serde_json::Value = client.get("/api/v1/events", &query)?;
    let out = match args.output.output.data(&raw)? {
        Some(data) => data,
        None => {
            let events: Page<EventItem> = serde_json::from_value(raw)
                .context("the server's events have an unexpected shape")?;
            table(&events.items, args.output.output.is_wide())
        }
    };
    print!("{out}");
    Ok(ExitCode::from(super::exit::OK))
}

fn table(events: &[EventItem], wide: bool) -> String {
    let rows = events.iter().map(|e| {
        let agent = e.agent.as_deref().map(|a| {
            if wide {
                a.to_string()
            } else {
                output::short_uid(a).to_string()
            }
        });
        vec![
            output::when(&e.at, wide),
            e.kind.clone(),
            output::or_dash(agent),
            e.message.clone(),
        ]
    });
    let header = if wide {
        ["TIME", "KIND", "AGENT", "MESSAGE"]
    } else {
        ["AGE", "KIND", "AGENT", "MESSAGE"]
    };
    format!(
        "{}{} event(s)\n",
        output::table(&header, rows, wide),
        events.len()
    )
}

//! `gitamp describe agent ID`: one agent in detail, kubectl's `describe`: labels,
//! capabilities, health, connection, the hashes it was sent and runs, desired against effective
//! config as a unified diff, and its recent events (`GET /api/v1/agents/{id}` and
//! `GET /api/v1/events?agent=ID`).
//!
//! ID is the instance UID, or its end as `gitamp agents` shows it (the last 12 digits).
//!
//! Exit codes: 0 shown, 1 no such agent (or an ID several agents end with), 2 error.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;

use super::client::{Client, ServerArgs, segment};
use super::output::{self, OutputArgs};
use crate::api::model::{AgentDetail, EventItem, Page};

/// Show one object of a running server in detail.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub what: What,
}

/// What to describe.
#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// One agent: labels, capabilities, health, connection, config diff, recent events.
    Agent(AgentArgs),
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The agent's instance UID, or its last digits as `gitamp agents` shows them.
    pub id: String,
    /// How many of its recent events to show.
    #[arg(long, default_value_t = 20)]
    pub events: usize,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.server)?;
    match args.what {
        What::Agent(a) => agent(&client, &a),
    }
}

fn agent(client: &Client, args: &AgentArgs) -> anyhow::Result<ExitCode> {
    let uid = client.agent_uid(&args.id)?;
    let raw: serde_json::Value = client.get(&format!("/api/v1/agents/{}", segment(&uid)), &[])?;
    let events: Page<EventItem> = client.get(
        "/api/v1/events",
        &[
            ("agent", uid.clone()),
            ("limit", args.events.max(1).to_string()),
        ],
    )?;
    let out = match args.output.output {
        output::Output::Json | output::Output::Yaml => {
            // The agent as the API has it, with the events the events route gave.
            let mut raw = raw;
            if let Some(obj) = raw.as_object_mut() {
                obj.insert(
                    "events".into(),
                    serde_json::to_value(&events.items).context("cannot encode the events")?,
                );
            }
            args.output.output.data(&raw)?.unwrap_or_default()
        }
        output::Output::Table | output::Output::Wide => {
            let detail: AgentDetail = serde_json::from_value(raw)
                .context("the server's agent has an unexpected shape")?;
            text(&detail, &events.items, args.output.output.is_wide())
        }
    };
    print!("{out}");
    Ok(ExitCode::from(super::exit::OK))
}

fn text(d: &AgentDetail, events: &[EventItem], wide: bool) -> String {
    let a = &d.agent;
    let mut o = String::new();
    let _ = writeln!(o, "agent:           {}", a.uid);
    let _ = writeln!(
        o,
        "status:          {}{}",
        a.status,
        a.configuration
            .as_deref()
            .map(|c| format!(" (configuration {c})"))
            .unwrap_or_default()
    );
    if let Some(reason) = &a.reason {
        let _ = writeln!(o, "reason:          {reason}");
    }
    let (identifying, non_identifying) = d.description.as_ref().map_or_else(
        || (BTreeMap::new(), a.labels.clone()),
        |d| (d.identifying.clone(), d.non_identifying.clone()),
    );
    write_map(&mut o, "identifying:", &identifying);
    write_map(&mut o, "labels:", &non_identifying);
    let _ = writeln!(o, "capabilities:    {}", d.capabilities.names.join(", "));
    let _ = writeln!(o, "connection:      {}", connection(a));
    let _ = writeln!(
        o,
        "heartbeat:       {}",
        a.heartbeat_interval_seconds.map_or_else(
            || "- (none offered)".to_string(),
            |s| format!("{s}s offered")
        )
    );
    let _ = writeln!(
        o,
        "own telemetry:   {}{}",
        a.telemetry_destination.as_deref().unwrap_or("-"),
        own_telemetry_line(d)
    );
    let _ = writeln!(o, "health:          {}", health(d.health.as_ref()));
    if let Some(components) = d.health.as_ref().and_then(|h| h["components"].as_object()) {
        for (name, c) in components {
            let _ = writeln!(o, "  {name}: {}", health(Some(c)));
        }
    }
    let hash = |h: &Option<String>| {
        h.as_deref().map_or_else(
            || "-".to_string(),
            |h| {
                if wide {
                    h.to_string()
                } else {
                    output::short_hash(h).to_string()
                }
            },
        )
    };
    let _ = writeln!(o, "desired hash:    {}", hash(&a.desired_hash));
    let _ = writeln!(
        o,
        "reported hash:   {}{}",
        hash(&a.reported_hash),
        a.remote_status
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default()
    );
    if let Some(err) = &a.remote_error {
        let _ = writeln!(o, "reported error:  {err}");
    }
    let _ = writeln!(o, "sent hash:       {}", hash(&a.sent_hash));
    let _ = writeln!(o, "last applied:    {}", hash(&a.last_applied));
    if !a.failed_hashes.is_empty() {
        let failed: Vec<String> = a
            .failed_hashes
            .iter()
            .map(|h| hash(&Some(h.clone())))
            .collect();
        let _ = writeln!(o, "failed hashes:   {}", failed.join(", "));
    }

    let _ = writeln!(o, "\ndesired vs effective config:");
    match (&d.desired_config, &d.effective_config) {
        (None, _) => {
            let _ = writeln!(o, "  no desired config (no configuration selects it)");
        }
        (Some(_), None) => {
            let _ = writeln!(o, "  the agent reports no effective config");
        }
        (Some(_), Some(_)) => {
            let differs = d
                .config_diff
                .as_deref()
                .is_some_and(|diff| !diff.is_empty());
            if let Some(same) = d.config_same_meaning {
                let _ = writeln!(
                    o,
                    "  same meaning: {}",
                    match (same, differs) {
                        (true, true) =>
                            "yes (the diff below is the agent's own additions and formatting)",
                        (true, false) => "yes",
                        (false, _) => "no",
                    }
                );
            }
            if let Some(err) = &d.config_compare_error {
                let _ = writeln!(o, "  not compared: {err}");
            }
            match d.config_diff.as_deref() {
                Some(diff) if !diff.is_empty() => o.push_str(diff),
                _ => {
                    let _ = writeln!(o, "  (no difference)");
                }
            }
        }
    }

    let _ = writeln!(o, "\nevents:");
    if events.is_empty() {
        let _ = writeln!(o, "  none");
    } else {
        o.push_str(&output::table(
            &["AGE", "KIND", "MESSAGE"],
            events
                .iter()
                .map(|e| vec![output::when(&e.at, wide), e.kind.clone(), e.message.clone()]),
            wide,
        ));
    }
    o
}

/// `k=v`, one a line, under a heading; `-` for none.
fn write_map(o: &mut String, heading: &str, map: &BTreeMap<String, String>) {
    if map.is_empty() {
        let _ = writeln!(o, "{heading:<17}-");
    }
    for (i, (k, v)) in map.iter().enumerate() {
        let head = if i == 0 { heading } else { "" };
        let _ = writeln!(o, "{head:<17}{k}={v}");
    }
}

fn connection(a: &crate::api::model::AgentItem) -> String {
    if a.connected {
        let to = a
            .replica
            .as_deref()
            .map_or_else(String::new, |r| format!(" to replica {r}"));
        format!(
            "connected{to} over {} since {}, last seen {} ago",
            a.transport,
            a.connected_since
                .as_deref()
                .map_or_else(|| "?".to_string(), output::timestamp),
            output::age(&a.last_seen)
        )
    } else {
        format!(
            "disconnected, last seen {} ({} ago)",
            output::timestamp(&a.last_seen),
            output::age(&a.last_seen)
        )
    }
}

fn health(h: Option<&serde_json::Value>) -> String {
    let Some(h) = h else {
        return "not reported".into();
    };
    let mut text = match h["healthy"].as_bool() {
        Some(true) => "healthy".to_string(),
        Some(false) => "unhealthy".to_string(),
        None => "?".to_string(),
    };
    for key in ["status", "last_error"] {
        if let Some(v) = h[key].as_str().filter(|v| !v.is_empty()) {
            let _ = write!(text, ", {}: {v}", key.replace('_', " "));
        }
    }
    text
}

/// The agent's answer to its connection settings and what its receivers accept per second.
fn own_telemetry_line(d: &AgentDetail) -> String {
    let mut parts = Vec::new();
    let status = &d.connection_settings["status"];
    if let Some(st) = status["status"].as_str() {
        let err = status["error"]
            .as_str()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        parts.push(format!("offer {st}{err}"));
    }
    let accepted: f64 = d.throughput["components"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["kind"] == "receiver")
        .filter_map(|c| c["rates"]["accepted"].as_f64())
        .sum();
    if d.throughput["components"].is_array() {
        parts.push(format!("{accepted:.1} items/s accepted"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

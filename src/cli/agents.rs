//! `gitamp agents`: list a running server's agents from its status API.
//!
//! Exit codes: 0 listed, 2 error (server unreachable, refused, or an unexpected answer).

use std::process::ExitCode;

use anyhow::Context;

use super::client::{Client, PAGE, ServerArgs};
use super::output::{self, OutputArgs};
use crate::api::model::AgentItem;

/// List agents with their sync status.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Only agents in this sync status (or a comma-separated list: `failed,drifted`).
    #[arg(long)]
    pub status: Option<String>,
    /// Only agents selected by this configuration.
    #[arg(long)]
    pub configuration: Option<String>,
    /// Label selector: `k=v,k2!=v,k3 in (a,b),k4,!k5`.
    #[arg(long)]
    pub selector: Option<String>,
    /// `-o json` (or yaml) prints the agents as a list: a ready-made agents file for
    /// `gitamp reconcile --dry-run`.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Agents per request while following pagination (tests use a small one).
    #[arg(long, hide = true, default_value_t = PAGE)]
    pub page_size: usize,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // The server refuses a status that is not one; say so before asking it.
    if let Some(status) = &args.status {
        crate::api::parse_statuses(status).map_err(|e| anyhow::anyhow!("--status: {e}"))?;
    }
    let client = Client::new(&args.server)?;
    let mut query: Vec<(&str, String)> = Vec::new();
    for (k, v) in [
        ("status", &args.status),
        ("configuration", &args.configuration),
        ("selector", &args.selector),
    ] {
        if let Some(v) = v {
            query.push((k, v.clone()));
        }
    }
    let items = client.get_all("/api/v1/agents", &query, args.page_size.clamp(1, PAGE))?;
    let out = match args.output.output.data(&items)? {
        Some(data) => data,
        None => table(&items, args.output.output.is_wide())?,
    };
    print!("{out}");
    Ok(ExitCode::from(super::exit::OK))
}

fn table(items: &[serde_json::Value], wide: bool) -> anyhow::Result<String> {
    let agents: Vec<AgentItem> = items
        .iter()
        .map(|v| serde_json::from_value(v.clone()).context("unexpected agent item"))
        .collect::<anyhow::Result<_>>()?;
    let health = |h: Option<bool>| match h {
        Some(true) => "ok",
        Some(false) => "unhealthy",
        None => "-",
    };
    // Replicas name the one holding each agent; a single server has none to show.
    let replicas = agents.iter().any(|a| a.replica.is_some());
    let replica = |a: &AgentItem| output::or_dash(a.replica.as_deref());
    let table = if wide {
        output::table(
            &with_replica(
                &[
                    "UID",
                    "STATUS",
                    "CONFIGURATION",
                    "CONNECTED",
                    "TRANSPORT",
                    "HEALTH",
                    "REPORTED",
                    "INSTALLED",
                    "DESIRED VERSION",
                    "UPGRADE",
                    "LAST SEEN",
                    "HEARTBEAT",
                    "TELEMETRY",
                    "LABELS",
                    "REASON",
                ],
                replicas.then_some((4, "REPLICA")),
            ),
            agents.iter().map(|a| {
                let mut row = vec![
                    a.uid.clone(),
                    a.status.clone(),
                    output::or_dash(a.configuration.as_deref()),
                    if a.connected { "yes" } else { "no" }.to_string(),
                    a.transport.clone(),
                    health(a.healthy).to_string(),
                    output::or_dash(a.reported_hash.as_deref().map(output::short_hash)),
                    output::or_dash(a.installed_version.as_deref()),
                    output::or_dash(a.desired_version.as_deref()),
                    output::or_dash(a.upgrade_status.as_deref()),
                    output::timestamp(&a.last_seen),
                    output::or_dash(
                        a.heartbeat_interval_seconds
                            .map(|s| format!("{s}s"))
                            .as_deref(),
                    ),
                    output::or_dash(a.telemetry_destination.as_deref()),
                    all_labels(&a.labels),
                    output::or_dash(a.reason.as_deref().or(a.upgrade_reason.as_deref())),
                ];
                if replicas {
                    row.insert(4, replica(a));
                }
                row
            }),
            true,
        )
    } else {
        output::table(
            &with_replica(
                &[
                    "UID",
                    "STATUS",
                    "CONFIGURATION",
                    "HEALTH",
                    "SEEN",
                    "LABELS",
                    "REASON",
                ],
                replicas.then_some((3, "REPLICA")),
            ),
            agents.iter().map(|a| {
                let mut row = vec![
                    output::short_uid(&a.uid).to_string(),
                    a.status.clone(),
                    output::or_dash(a.configuration.as_deref()),
                    health(a.healthy).to_string(),
                    output::age(&a.last_seen),
                    labels_summary(&a.labels),
                    a.reason
                        .as_deref()
                        .map_or_else(|| "-".into(), |r| output::shorten(r, REASON_CHARS)),
                ];
                if replicas {
                    row.insert(3, replica(a));
                }
                row
            }),
            false,
        )
    };
    Ok(format!("{table}{} agent(s)\n", agents.len()))
}

/// `header` with `extra`'s column inserted at its index.
fn with_replica<'a>(header: &[&'a str], extra: Option<(usize, &'a str)>) -> Vec<&'a str> {
    let mut all = header.to_vec();
    if let Some((at, name)) = extra {
        all.insert(at, name);
    }
    all
}

/// A reason longer than this is cut in the table (`-o wide`, `-o json` and the API have it
/// whole): a collector's error can carry its whole log tail.
const REASON_CHARS: usize = 80;

/// Every label, `k=v, k=v`, in key order.
fn all_labels(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The labels people recognise an agent by first, then the rest, cut to keep rows short.
fn labels_summary(labels: &std::collections::BTreeMap<String, String>) -> String {
    const FIRST: [&str; 3] = ["service.name", "host.name", "deployment.environment"];
    const SHOWN: usize = 3;
    let mut keys: Vec<&String> = FIRST
        .iter()
        .filter_map(|k| labels.get_key_value(*k).map(|(k, _)| k))
        .collect();
    keys.extend(labels.keys().filter(|k| !FIRST.contains(&k.as_str())));
    let mut parts: Vec<String> = keys
        .iter()
        .take(SHOWN)
        .map(|k| format!("{k}={}", labels[*k]))
        .collect();
    if keys.len() > SHOWN {
        parts.push(format!("+{} more", keys.len() - SHOWN));
    }
    parts.join(", ")
}

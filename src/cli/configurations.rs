//! `gitamp configurations [NAME]`: a running server's configurations with their rollouts
//! (`GET /api/v1/configurations`), or one in detail: its rollout policy, progress per batch and
//! the agents it selects (`GET /api/v1/configurations/{name}`).
//!
//! Exit codes: 0 shown, 1 no such configuration, 2 error.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use gitamp_core::catalog::model::{RolloutPolicy, RolloutStrategy, Selector};

use super::client::{Client, ServerArgs, segment};
use super::output::{self, OutputArgs};
use crate::api::model::{ConfigurationDetail, ConfigurationItem, RevisionList};

/// List configurations, or show one.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Show this configuration in detail (rollout per batch, selected agents).
    pub name: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.server)?;
    let out = match &args.name {
        None => {
            let raw: serde_json::Value = client.get("/api/v1/configurations", &[])?;
            match args.output.output.data(&raw)? {
                Some(data) => data,
                None => {
                    let list: RevisionList<ConfigurationItem> = serde_json::from_value(raw)
                        .context("the server's configurations have an unexpected shape")?;
                    list_table(&list, args.output.output.is_wide())
                }
            }
        }
        Some(name) => {
            let path = format!("/api/v1/configurations/{}", segment(name));
            let raw: serde_json::Value = client.get(&path, &[])?;
            match args.output.output.data(&raw)? {
                Some(data) => data,
                None => {
                    let detail: ConfigurationDetail = serde_json::from_value(raw)
                        .context("the server's configuration has an unexpected shape")?;
                    describe(&detail, args.output.output.is_wide())
                }
            }
        }
    };
    print!("{out}");
    Ok(ExitCode::from(super::exit::OK))
}

/// The selector as the text `gitamp agents --selector` takes; every agent when empty.
fn selector_text(value: &serde_json::Value) -> String {
    match serde_json::from_value::<Selector>(value.clone()) {
        Ok(s) if s == Selector::default() => "(every agent)".to_string(),
        Ok(s) => s.to_string(),
        Err(_) => value.to_string(),
    }
}

/// The rollout as the API reports it (`gitamp_core::plan::RolloutProgress`).
#[derive(Debug, Default, serde::Deserialize)]
struct Progress {
    target: Option<String>,
    phase: Option<Phase>,
    #[serde(default)]
    batch: usize,
    #[serde(default)]
    admitted: usize,
    #[serde(default)]
    total: usize,
    #[serde(default)]
    synced: usize,
    #[serde(default)]
    failed: usize,
    #[serde(default)]
    excused: usize,
    #[serde(default)]
    pending: usize,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Phase {
    phase: String,
    reason: Option<String>,
}

fn progress_of(c: &ConfigurationItem) -> Option<Progress> {
    c.rollout
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

fn policy_of(c: &ConfigurationItem) -> RolloutPolicy {
    serde_json::from_value(c.rollout_policy.clone()).unwrap_or_default()
}

/// `batched 2/5 progressing`, `complete`, `halted (batch 1)`: the rollout in a cell.
fn rollout_cell(c: &ConfigurationItem) -> String {
    let Some(p) = progress_of(c) else {
        return "-".into();
    };
    let phase = p.phase.as_ref().map_or("?", |p| p.phase.as_str());
    let policy = policy_of(c);
    match policy.strategy {
        RolloutStrategy::AllAtOnce => phase.to_string(),
        RolloutStrategy::Batched => {
            let size = policy.batch_size_for(p.total);
            let batches = p.total.div_ceil(size).max(1);
            format!("{phase}, batch {}/{batches}", p.batch.min(batches))
        }
    }
}

fn policy_text(policy: &RolloutPolicy) -> String {
    let quantity = |q: Option<gitamp_core::catalog::model::Quantity>, default: &str| {
        q.and_then(|q| serde_json::to_value(q).ok())
            .map_or_else(|| default.to_string(), |v| v.to_string().replace('"', ""))
    };
    let mut text = match policy.strategy {
        RolloutStrategy::AllAtOnce => "AllAtOnce".to_string(),
        RolloutStrategy::Batched => {
            format!("Batched, batchSize {}", quantity(policy.batch_size, "1"))
        }
    };
    let _ = write!(
        text,
        ", maxFailures {}, onFailure {:?}",
        quantity(policy.max_failures, "0"),
        policy.on_failure
    );
    text
}

fn list_table(list: &RevisionList<ConfigurationItem>, wide: bool) -> String {
    let counts = |c: &ConfigurationItem, status: &str| c.counts.get(status).copied().unwrap_or(0);
    let table = if wide {
        output::table(
            &[
                "NAME", "PRIORITY", "SELECTOR", "AGENTS", "SYNCED", "FAILED", "PENDING", "HASH",
                "POLICY", "ROLLOUT",
            ],
            list.items.iter().map(|c| {
                let failed = counts(c, "failed") + counts(c, "rolled-back");
                vec![
                    c.name.clone(),
                    c.priority.to_string(),
                    selector_text(&c.selector),
                    c.matched_agents.to_string(),
                    counts(c, "synced").to_string(),
                    failed.to_string(),
                    (counts(c, "pending") + counts(c, "applying")).to_string(),
                    output::or_dash(c.hash.as_deref().map(output::short_hash)),
                    policy_text(&policy_of(c)),
                    rollout_cell(c),
                ]
            }),
            true,
        )
    } else {
        output::table(
            &[
                "NAME", "PRIORITY", "SELECTOR", "AGENTS", "SYNCED", "ROLLOUT",
            ],
            list.items.iter().map(|c| {
                vec![
                    c.name.clone(),
                    c.priority.to_string(),
                    selector_text(&c.selector),
                    c.matched_agents.to_string(),
                    counts(c, "synced").to_string(),
                    rollout_cell(c),
                ]
            }),
            false,
        )
    };
    format!(
        "{table}{} configuration(s), revision {}\n",
        list.items.len(),
        list.revision.as_deref().unwrap_or("none served yet")
    )
}

/// One configuration for people: what it is, its rollout (per batch), its agents.
fn describe(d: &ConfigurationDetail, wide: bool) -> String {
    let c = &d.configuration;
    let mut o = String::new();
    let _ = writeln!(o, "name:            {}", c.name);
    if let Some(desc) = &c.description {
        let _ = writeln!(o, "description:     {desc}");
    }
    let _ = writeln!(o, "revision:        {}", d.revision);
    let _ = writeln!(o, "hash:            {}", output::or_dash(c.hash.as_deref()));
    let _ = writeln!(o, "priority:        {}", c.priority);
    let _ = writeln!(o, "selector:        {}", selector_text(&c.selector));
    let _ = writeln!(o, "sources:         {}", c.sources.join(", "));
    let _ = writeln!(o, "processors:      {}", or_none(&c.processors));
    let _ = writeln!(o, "destinations:    {}", c.destinations.join(", "));
    let policy = policy_of(c);
    let _ = writeln!(o, "rollout policy:  {}", policy_text(&policy));
    let counts: Vec<String> = c
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let _ = writeln!(
        o,
        "agents:          {} ({})",
        c.matched_agents,
        if counts.is_empty() {
            "none".to_string()
        } else {
            counts.join(", ")
        }
    );
    match progress_of(c) {
        None => {
            let _ = writeln!(o, "rollout:         -");
        }
        Some(p) => {
            let phase = p.phase.as_ref().map_or("?", |p| p.phase.as_str());
            let _ = writeln!(
                o,
                "rollout:         {phase} (target {}): {} synced, {} failed{}, {} pending of {}",
                p.target.as_deref().map_or("-", output::short_hash),
                p.synced,
                p.failed,
                if p.excused > 0 {
                    format!(" ({} excused by a resume)", p.excused)
                } else {
                    String::new()
                },
                p.pending,
                p.total
            );
            if let Some(reason) = p.phase.as_ref().and_then(|p| p.reason.as_deref()) {
                let _ = writeln!(
                    o,
                    "  halted:        {reason} (`gitamp resume {}` goes on)",
                    c.name
                );
            }
            o.push_str(&batches(d, &policy, &p, wide));
        }
    }
    o.push('\n');
    o.push_str(&output::table(
        &["AGENT", "STATUS"],
        d.agents.iter().map(|a| {
            vec![
                if wide {
                    a.uid.clone()
                } else {
                    output::short_uid(&a.uid).to_string()
                },
                a.status.clone(),
            ]
        }),
        wide,
    ));
    o
}

fn or_none(names: &[String]) -> String {
    if names.is_empty() {
        "-".into()
    } else {
        names.join(", ")
    }
}

/// Progress per batch of a batched rollout. Batches are runs of `batchSize` agents in instance
/// UID order, the order a rollout admits them in (agents that joined mid-rollout are appended
/// to its end by the server, so for those this is an approximation).
fn batches(d: &ConfigurationDetail, policy: &RolloutPolicy, p: &Progress, wide: bool) -> String {
    if policy.strategy != RolloutStrategy::Batched || d.agents.is_empty() {
        return String::new();
    }
    let size = policy.batch_size_for(p.total.max(d.agents.len()));
    let mut agents = d.agents.clone();
    agents.sort_by(|a, b| a.uid.cmp(&b.uid));
    let rows = agents.chunks(size).enumerate().map(|(i, chunk)| {
        let count = |names: &[&str]| {
            chunk
                .iter()
                .filter(|a| names.contains(&a.status.as_str()))
                .count()
        };
        let admitted = i * size < p.admitted;
        vec![
            (i + 1).to_string(),
            chunk.len().to_string(),
            if admitted { "yes" } else { "no" }.to_string(),
            count(&["synced"]).to_string(),
            count(&["failed", "rolled-back"]).to_string(),
            count(&["pending", "applying"]).to_string(),
        ]
    });
    output::table(
        &["BATCH", "AGENTS", "ADMITTED", "SYNCED", "FAILED", "PENDING"],
        rows,
        wide,
    )
}

//! `gitamp reconcile --dry-run [PATH] [--server URL | --agents FILE] [--base REV]
//! [-o text|json|markdown]`: what a change to the repository would do, before it merges.
//!
//! The dry run compiles the working tree with [`gitamp_core::compile`] and plans the fleet with
//! [`gitamp_core::plan::plan`], exactly the calls the server's reconciler makes, so the plan it
//! prints is the plan the server would follow. It never sends anything.
//!
//! - `--base REV` compiles that revision of the Git repository PATH lives in and compares it
//!   per configuration: added, removed, changed (hash differs), with the components and
//!   pipelines that differ and a unified diff of the **masked** rendered YAML.
//! - `--agents FILE` / `--server URL` give the fleet: per configuration the agents that would
//!   change (pushed now, or waiting for the rollout), conflicts, unmanaged agents, counts.
//!
//! Exit codes: 0 nothing to change, 1 the working tree is invalid (diagnostics printed as
//! `validate` prints them), 2 usage or I/O error, 3 changes pending (a configuration added,
//! removed or changed against `--base`, or an agent that would be pushed or is waiting).

mod components;
mod fleet;
mod output;
mod telemetry;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use gitamp_core::plan::select::Selection;
use gitamp_core::plan::{Action, Desired, ObservedAgent, StatusCounts, SyncStatus, Timing, plan};
use gitamp_core::render::RenderedConfiguration;
use gitamp_core::{Diagnostics, Revision, compile};
use serde::Serialize;

pub use components::{ComponentChanges, ComponentRef};
pub use fleet::{AgentRecord, parse_agents};

use super::exit;
use super::fsread::read_dir_snapshot;

/// Version of the `--format json` object; bumped only on an incompatible change.
pub const JSON_FORMAT_VERSION: u32 = 1;

/// Show what the server would do with this repository, without doing it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Plan only (required: the server is what reconciles; the CLI only previews).
    #[arg(long)]
    pub dry_run: bool,
    /// The repository folder (the working tree is compiled, committed or not).
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Take the fleet from a running gitamp's status API (e.g. `http://127.0.0.1:8080`).
    #[arg(long, value_name = "URL", conflicts_with = "agents")]
    pub server: Option<String>,
    /// Take the fleet from a JSON or YAML file (what `gitamp agents -o json` prints).
    #[arg(long, value_name = "FILE")]
    pub agents: Option<PathBuf>,
    /// Compare against this revision of the Git repository PATH is in (`origin/main`, a SHA).
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,
    /// text for people (colour on a terminal), json for tools, markdown for a PR comment.
    // `--format`: its name before `-o` was every command's; kept, hidden, for scripts.
    #[arg(short = 'o', long = "output", alias = "format", value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The API token for `--server`.
    #[command(flatten)]
    pub auth: super::client::TokenArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

/// How a configuration differs from the base revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Changed,
    Unchanged,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Changed => "changed",
            Change::Unchanged => "unchanged",
        }
    }
}

/// The whole dry run: the `--format json` object, and what text and markdown are printed from.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub format_version: u32,
    /// Always true here; an invalid tree prints the diagnostics object instead.
    pub valid: bool,
    pub path: String,
    /// The working tree's revision (a content hash).
    pub revision: String,
    pub base: Option<BaseInfo>,
    pub fleet: Option<FleetInfo>,
    /// Anything to change: a configuration added, removed or changed against the base, or an
    /// agent that would be pushed or is waiting for its rollout. Exit code 3 when true.
    pub changes_pending: bool,
    pub summary: Summary,
    /// Configurations that change or have agents to update, by name. Unchanged ones without
    /// agents to update are only counted in the summary.
    pub configurations: Vec<ConfigurationReport>,
    /// Agents several configurations select at the same priority: nothing is pushed to them.
    pub conflicts: Vec<AgentRef>,
    /// Agents no configuration selects: they keep whatever they run.
    pub unmanaged: Vec<AgentRef>,
    /// Warnings of the working tree (they do not reject it).
    pub warnings: Diagnostics,
}

#[derive(Debug, Clone, Serialize)]
pub struct BaseInfo {
    /// The revision as given (`origin/main`).
    pub reference: String,
    /// The commit it names.
    pub revision: String,
    /// False when the base does not compile: every configuration then shows as added.
    pub valid: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetInfo {
    /// `agents-file` or `server`.
    pub source: &'static str,
    /// The file path or the server URL.
    pub location: String,
    pub agents: usize,
    /// The revision the server is serving (`--server` only).
    pub server_revision: Option<String>,
}

/// Counts. The `configurations_*` counts need `--base` (all 0 without it); the `agents_*`
/// counts need a fleet (all 0 without one).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub configurations_added: usize,
    pub configurations_removed: usize,
    pub configurations_changed: usize,
    pub configurations_unchanged: usize,
    /// Configurations whose own-telemetry destination changed (`--base`), whatever their hash.
    pub telemetry_changed: usize,
    pub agents_total: usize,
    /// Agents pushed now plus agents waiting for their rollout.
    pub agents_to_update: usize,
    pub agents_push: usize,
    pub agents_wait: usize,
    /// Every agent by the sync status the plan gives it.
    pub by_status: StatusCounts,
}

/// One configuration's share of the dry run.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigurationReport {
    pub name: String,
    /// Against `--base`; `None` without a base.
    pub change: Option<Change>,
    pub base_hash: Option<String>,
    /// `None` when the configuration was removed.
    pub hash: Option<String>,
    /// What the components and the diff compare against ("base revision abc1234", "served by
    /// the server at revision …", "reported by the agents; unknown rendering").
    pub compared_with: Option<String>,
    pub components: ComponentChanges,
    /// The hashes differ but the masked YAML is the same: only sensitive values changed.
    pub only_sensitive_values_changed: bool,
    /// Unified diff of the masked rendered YAML; `None` when there is nothing to compare.
    pub diff: Option<String>,
    /// Agents that would be pushed now or wait for the rollout, by instance UID.
    pub agents: Vec<AgentChange>,
    /// Agents this configuration selects, by status (with a fleet).
    pub counts: Option<StatusCounts>,
    /// Its pinned agent version against `--base`, when that changed (an upgrade rollout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionChange>,
    /// Its own-telemetry destination changed against `--base` (offered apart from the config,
    /// so the hash does not show it).
    pub telemetry: Option<telemetry::TelemetryChange>,
}

/// A configuration's pinned agent version (`spec.agentVersion`) before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionChange {
    /// The version string pinned in the base (`None`: none pinned).
    pub from: Option<String>,
    /// The version string pinned now (`None`: the pin was removed; agents keep what they run).
    pub to: Option<String>,
    /// The same version string, declared differently (a new URL or hash).
    pub redeclared: bool,
}

/// The version a configuration pins in `revision`: its string and the declaration's identity.
fn pinned(revision: &Revision, name: &str) -> Option<(String, gitamp_core::ConfigHash)> {
    let c = revision.catalog.configurations.get(name)?;
    let v = revision
        .catalog
        .agent_versions
        .get(c.spec.agent_version.as_deref()?)?;
    let d = gitamp_core::plan::upgrade::DesiredVersion::of(v)?;
    Some((d.version, d.target))
}

/// How the pinned version of `name` moved from `base` to `revision`, if it did.
fn version_change(base: &Revision, revision: &Revision, name: &str) -> Option<VersionChange> {
    let (before, now) = (pinned(base, name), pinned(revision, name));
    if before.as_ref().map(|b| b.1) == now.as_ref().map(|n| n.1) {
        return None;
    }
    let redeclared = matches!((&before, &now), (Some(b), Some(n)) if b.0 == n.0);
    Some(VersionChange {
        from: before.map(|b| b.0),
        to: now.map(|n| n.0),
        redeclared,
    })
}

/// What the server would do now for an agent that needs a new configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentAction {
    /// Sent now.
    Push,
    /// Not yet: the configuration's rollout has not reached it.
    Wait,
}

impl AgentAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentAction::Push => "push",
            AgentAction::Wait => "wait",
        }
    }
}

/// One agent that would receive a new configuration.
#[derive(Debug, Clone, Serialize)]
pub struct AgentChange {
    pub instance_uid: String,
    /// Its `host.name` (or `service.name`) label, for people.
    pub name: Option<String>,
    pub status: SyncStatus,
    pub action: AgentAction,
    /// The hash it reports running.
    pub current_hash: Option<String>,
    pub detail: Option<String>,
}

/// An agent listed for a conflict or as unmanaged.
#[derive(Debug, Clone, Serialize)]
pub struct AgentRef {
    pub instance_uid: String,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// For a conflict: the configurations that tie.
    pub configurations: Vec<String>,
    pub current_hash: Option<String>,
}

/// A rendering something may be running: the YAML to compare with, and where it comes from.
#[derive(Debug, Clone)]
pub(crate) struct Baseline {
    pub description: String,
    pub masked_yaml: String,
    /// Unmasked, when known locally: lets a change of a sensitive value count as a change.
    pub yaml: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.dry_run {
        eprintln!(
            "error: only `gitamp reconcile --dry-run` exists as a command: the server \
             (`gitamp serve`) is what reconciles the fleet"
        );
        return Ok(ExitCode::from(exit::ERROR));
    }
    if args.base.is_none() && args.agents.is_none() && args.server.is_none() {
        eprintln!(
            "error: nothing to compare against: give --base REV (a Git revision), --agents FILE \
             or --server URL"
        );
        return Ok(ExitCode::from(exit::ERROR));
    }
    let snapshot = read_dir_snapshot(&args.path)
        .with_context(|| format!("cannot read repository {}", args.path.display()))?;
    let revision = match compile(&snapshot) {
        Ok(r) => r,
        Err(rejected) => {
            let out = output::invalid(&args.path, &rejected, args.format)?;
            write_stdout(&out)?;
            return Ok(ExitCode::from(exit::FAILED));
        }
    };

    let base = match &args.base {
        None => None,
        Some(rev) => {
            let read = crate::source::revision::read_revision(
                &args.path,
                rev,
                crate::source::DEFAULT_MAX_FILE_SIZE,
            )
            .with_context(|| format!("cannot read --base {rev}"))?;
            for s in &read.skipped {
                eprintln!("warning: {rev}: {}: left out: {}", s.path, s.reason);
            }
            let commit = read.snapshot.revision.clone();
            let compiled = compile(&read.snapshot);
            if let Err(rejected) = &compiled {
                eprintln!(
                    "warning: the base revision {rev} ({}) does not compile ({} error(s)); \
                     every configuration is shown as added",
                    short(&commit),
                    rejected.diagnostics.errors().count()
                );
            }
            Some((rev.clone(), commit, compiled.ok()))
        }
    };

    let fleet = match (&args.agents, &args.server) {
        (Some(file), _) => Some(fleet::from_file(file)?),
        (None, Some(url)) => Some(fleet::from_server(url, args.auth.token()?)?),
        (None, None) => None,
    };

    let report = build(&args.path.to_string_lossy(), &revision, base, fleet)?;
    let out = match args.format {
        Format::Json => {
            serde_json::to_string_pretty(&report).context("cannot encode the plan")? + "\n"
        }
        Format::Markdown => output::markdown(&report),
        Format::Text => {
            let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            output::text(&report, colour)
        }
    };
    if args.format != Format::Json && !report.warnings.is_empty() {
        eprint!("{}", report.warnings);
    }
    write_stdout(&out)?;
    Ok(ExitCode::from(if report.changes_pending {
        exit::CHANGES_PENDING
    } else {
        exit::OK
    }))
}

fn write_stdout(out: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write output")
}

pub(crate) use crate::source::short_revision as short;

/// A fleet to plan against, and renderings it may be running (hash → rendering).
pub(crate) struct Fleet {
    pub info: FleetInfo,
    pub agents: Vec<ObservedAgent>,
    /// Renderings known from the fleet's side (the server's served revision), by hash hex.
    pub known: BTreeMap<String, Baseline>,
}

/// Put the dry run together. Pure apart from the clock (the plan's `Timing`).
pub(crate) fn build(
    path: &str,
    revision: &Revision,
    base: Option<(String, String, Option<Revision>)>,
    fleet: Option<Fleet>,
) -> anyhow::Result<Report> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let desired = Desired::from_revision(revision);
    let new = &revision.rendered.configurations;
    let empty = BTreeMap::new();
    let base_rendered: &BTreeMap<String, Arc<RenderedConfiguration>> = base
        .as_ref()
        .and_then(|(_, _, r)| r.as_ref())
        .map(|r| &r.rendered.configurations)
        .unwrap_or(&empty);
    let base_label = base
        .as_ref()
        .map(|(reference, commit, _)| format!("{reference} ({})", short(commit)));

    // Hash → a rendering something may run. Later insertions win: the base's rendering over the
    // server's, the server's over the working tree's (which agents can only run if a
    // configuration moved them).
    let mut known: BTreeMap<String, Baseline> = BTreeMap::new();
    for (name, r) in new {
        known.insert(
            r.hash.to_hex(),
            Baseline {
                description: format!("configuration {name} of this revision"),
                masked_yaml: r.masked_yaml.clone(),
                yaml: Some(r.yaml.clone()),
            },
        );
    }
    if let Some(f) = &fleet {
        known.extend(f.known.clone());
    }
    if let Some(label) = &base_label {
        for (name, r) in base_rendered {
            known.insert(
                r.hash.to_hex(),
                Baseline {
                    description: format!("configuration {name} at {label}"),
                    masked_yaml: r.masked_yaml.clone(),
                    yaml: Some(r.yaml.clone()),
                },
            );
        }
    }

    let mut summary = Summary::default();
    let mut per_config: BTreeMap<String, (Vec<AgentChange>, StatusCounts)> = BTreeMap::new();
    let mut current_hashes: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut conflicts = Vec::new();
    let mut unmanaged = Vec::new();
    if let Some(f) = &fleet {
        // Fresh rollouts: the plan steps each configuration's rollout from its first batch,
        // as the server does when a revision brings a new hash.
        let mut rollouts = BTreeMap::new();
        let fleet_plan = plan(&desired, &f.agents, &mut rollouts, Timing::at(now_ms));
        summary.agents_total = f.agents.len();
        summary.by_status = fleet_plan.summary;
        for (name, cp) in &fleet_plan.configurations {
            per_config.entry(name.clone()).or_default().1 = cp.counts;
        }
        for (agent, ap) in f.agents.iter().zip(&fleet_plan.agents) {
            let current_hash = agent.reported_hash.map(|h| h.to_hex());
            let action = match ap.action {
                Action::Push(_) => Some(AgentAction::Push),
                Action::Wait => Some(AgentAction::Wait),
                Action::Nothing => None,
            };
            match ap.status {
                SyncStatus::Conflict => {
                    let configurations = match desired.select(&agent.labels) {
                        Selection::Conflict(names) => names,
                        _ => Vec::new(),
                    };
                    conflicts.push(agent_ref(agent, configurations));
                }
                SyncStatus::Unmanaged => unmanaged.push(agent_ref(agent, Vec::new())),
                _ => {}
            }
            let (Some(name), Some(action)) = (&ap.configuration, action) else {
                continue;
            };
            match action {
                AgentAction::Push => summary.agents_push += 1,
                AgentAction::Wait => summary.agents_wait += 1,
            }
            if let Some(h) = &current_hash {
                *current_hashes
                    .entry(name.clone())
                    .or_default()
                    .entry(h.clone())
                    .or_default() += 1;
            }
            per_config
                .entry(name.clone())
                .or_default()
                .0
                .push(AgentChange {
                    instance_uid: agent.instance_uid.clone(),
                    name: display_name(&agent.labels),
                    status: ap.status,
                    action,
                    current_hash,
                    detail: ap.detail.clone(),
                });
        }
        summary.agents_to_update = summary.agents_push + summary.agents_wait;
    }
    conflicts.sort_by(|a: &AgentRef, b| a.instance_uid.cmp(&b.instance_uid));
    unmanaged.sort_by(|a: &AgentRef, b| a.instance_uid.cmp(&b.instance_uid));

    let mut names: Vec<&String> = new.keys().chain(base_rendered.keys()).collect();
    names.sort();
    names.dedup();
    let mut configurations = Vec::new();
    for name in names {
        let now = new.get(name);
        let before = base_rendered.get(name);
        let version = base
            .as_ref()
            .and_then(|(_, _, r)| r.as_ref())
            .and_then(|b| version_change(b, revision, name));
        let change = base.as_ref().map(|_| match (before, now) {
            (None, _) => Change::Added,
            (Some(_), None) => Change::Removed,
            (Some(b), Some(n)) if b.hash != n.hash || version.is_some() => Change::Changed,
            (Some(_), Some(_)) => Change::Unchanged,
        });
        match change {
            Some(Change::Added) => summary.configurations_added += 1,
            Some(Change::Removed) => summary.configurations_removed += 1,
            Some(Change::Changed) => summary.configurations_changed += 1,
            Some(Change::Unchanged) => summary.configurations_unchanged += 1,
            None => {}
        }
        let (mut agents, counts) = per_config.remove(name.as_str()).unwrap_or_default();
        agents.sort_by(|a, b| a.instance_uid.cmp(&b.instance_uid));
        let telemetry = telemetry::change(
            base.as_ref().and_then(|(_, _, r)| r.as_ref()),
            revision,
            name,
        );
        if telemetry.is_some() {
            summary.telemetry_changed += 1;
        }
        let interesting = !agents.is_empty()
            || telemetry.is_some()
            || !matches!(change, Some(Change::Unchanged) | None);
        if !interesting {
            continue;
        }
        // What the agents run now: the base's rendering of this configuration with --base,
        // otherwise the rendering of the hash most of its agents to update report, if known.
        let baseline: Option<Baseline> = match (&base_label, before) {
            (Some(label), Some(b)) => Some(Baseline {
                description: label.clone(),
                masked_yaml: b.masked_yaml.clone(),
                yaml: Some(b.yaml.clone()),
            }),
            (Some(_), None) => None,
            (None, _) => current_hashes.get(name.as_str()).and_then(|hashes| {
                let (hash, _) = hashes
                    .iter()
                    .max_by_key(|(h, n)| (**n, std::cmp::Reverse(*h)))?;
                known.get(hash).cloned()
            }),
        };
        let compared_with = match (&baseline, &base_label) {
            (Some(b), _) => Some(b.description.clone()),
            (None, Some(label)) => Some(format!("{label}, where it does not exist")),
            (None, None) => current_hashes
                .get(name.as_str())
                .map(|_| "the hash the agents report (rendering unknown)".to_string()),
        };
        let new_masked = now.map(|r| r.masked_yaml.as_str());
        let old_masked = baseline.as_ref().map(|b| b.masked_yaml.as_str());
        let comparable = baseline.is_some() || base.is_some();
        let components = if comparable {
            // Unmasked when both sides are known locally: a rotated secret is a changed
            // component (only IDs are reported, never values).
            let old_plain = baseline.as_ref().and_then(|b| b.yaml.as_deref());
            let new_plain = now.map(|r| r.yaml.as_str());
            if baseline.is_none() || old_plain.is_some() {
                components::compare(old_plain, new_plain)
            } else {
                components::compare(old_masked, new_masked)
            }
            .with_context(|| format!("comparing the renderings of {name}"))?
        } else {
            ComponentChanges::default()
        };
        let diff = comparable.then(|| {
            unified_diff(
                old_masked.unwrap_or(""),
                new_masked.unwrap_or(""),
                &format!("a/{name}.yaml"),
                &format!("b/{name}.yaml"),
            )
        });
        let only_sensitive = comparable
            && old_masked.is_some()
            && new_masked.is_some()
            && old_masked == new_masked
            && (!components.is_empty() || matches!(change, Some(Change::Changed)));
        configurations.push(ConfigurationReport {
            name: name.clone(),
            change,
            base_hash: before.map(|r| r.hash.to_hex()),
            hash: now.map(|r| r.hash.to_hex()),
            compared_with,
            components,
            only_sensitive_values_changed: only_sensitive,
            diff,
            agents,
            counts: fleet.as_ref().map(|_| counts),
            version,
            telemetry,
        });
    }

    let changes_pending = summary.agents_to_update > 0
        || summary.telemetry_changed > 0
        || summary.configurations_added
            + summary.configurations_removed
            + summary.configurations_changed
            > 0;
    Ok(Report {
        format_version: JSON_FORMAT_VERSION,
        valid: true,
        path: path.to_string(),
        revision: revision.revision.clone(),
        base: base.map(|(reference, revision, compiled)| BaseInfo {
            reference,
            revision,
            valid: compiled.is_some(),
        }),
        fleet: fleet.map(|f| f.info),
        changes_pending,
        summary,
        configurations,
        conflicts,
        unmanaged,
        warnings: revision.warnings.clone(),
    })
}

/// A unified diff with three lines of context; empty when the texts are equal.
fn unified_diff(old: &str, new: &str, a: &str, b: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(a, b)
        .to_string()
}

/// The label people know an agent by.
fn display_name(labels: &BTreeMap<String, String>) -> Option<String> {
    ["host.name", "service.instance.id", "service.name"]
        .iter()
        .find_map(|k| labels.get(*k).cloned())
}

fn agent_ref(agent: &ObservedAgent, configurations: Vec<String>) -> AgentRef {
    AgentRef {
        instance_uid: agent.instance_uid.clone(),
        name: display_name(&agent.labels),
        labels: agent.labels.clone(),
        configurations,
        current_hash: agent.reported_hash.map(|h| h.to_hex()),
    }
}

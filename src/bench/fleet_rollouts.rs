//! `gitamp bench fleet-rollouts`: what stepping rollouts over the whole fleet costs the leader
//! of several replicas, and what adopting them costs every replica, in process (no database,
//! no sockets: the rows are made here as `PgStore::changed_agents` returns them).
//!
//! Each round, for N agents of the example repository's batched `linux-production`:
//! - the full read after a new revision: every row (with labels) folded in, then a step;
//! - a rollout's traffic: every agent's "sent" row, then its "applied" row, folded and stepped
//!   in chunks of `--chunk` rows (one leader read each);
//! - the rollout record the leader writes (JSON, its size) and that each replica parses to
//!   adopt it: whole (its first write, or a new member list), and as every later write has it,
//!   the counts alone (the member list is written and read again only when it changed).
//!
//! Figures are printed (median and spread over `--rounds`), never asserted.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitamp_core::plan::{Desired, Members, Rollout};
use gitamp_opamp::proto::AgentCapabilities;

use crate::server::cluster::FleetRollouts;
use crate::store::fleet::FleetRow;

/// Options of the fleet-wide rollouts benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Agents in the fleet (all selected by `linux-production`).
    #[arg(long, default_value_t = 60_000)]
    pub agents: usize,
    /// Rows per leader read during the rollout.
    #[arg(long, default_value_t = 5_000)]
    pub chunk: usize,
    /// Measured rounds.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

fn row(i: usize, hash: Option<&str>, applied: bool, labels: bool) -> FleetRow {
    let mut uid = [0u8; 16];
    uid[8..].copy_from_slice(&(i as u64).to_be_bytes());
    FleetRow {
        instance_uid: hex::encode(uid),
        labels: if labels {
            [
                ("deployment.environment", "production".to_string()),
                ("os.type", "linux".to_string()),
                ("service.name", "checkout".to_string()),
                ("host.name", format!("host-{i:06}")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
        } else {
            Default::default()
        },
        labels_fresh: labels,
        capabilities: AgentCapabilities::AcceptsRemoteConfig as u64
            | AgentCapabilities::ReportsRemoteConfig as u64,
        reported_hash: hash.filter(|_| applied).map(str::to_string),
        remote_config_status: applied.then(|| "APPLIED".to_string()),
        sent_hash: hash.map(str::to_string),
        applied_hash: hash.filter(|_| applied).map(str::to_string),
        connected: true,
        live: true,
        ..FleetRow::default()
    }
}

/// Median and range of `xs` in ms.
fn spread(xs: &mut [Duration]) -> String {
    xs.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "{:.1} ms (min {:.1}, max {:.1})",
        ms(xs[xs.len() / 2]),
        ms(xs[0]),
        ms(xs[xs.len() - 1])
    )
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let revision = gitamp_core::compile(&crate::embedded::snapshot())
        .map_err(|e| anyhow::anyhow!("the embedded example does not compile: {e:?}"))?;
    let desired = Arc::new(Desired::from_revision(&revision));
    let hash = desired
        .hash_of("linux-production")
        .ok_or_else(|| anyhow::anyhow!("linux-production has no hash"))?
        .to_hex();
    let n = args.agents;
    let (mut full, mut traffic, mut write, mut adopt) = (vec![], vec![], vec![], vec![]);
    let (mut write_counts, mut adopt_counts) = (vec![], vec![]);
    let (mut size, mut counts_size) = (0, 0);
    for _ in 0..args.rounds.max(1) {
        let rows: Vec<FleetRow> = (0..n).map(|i| row(i, None, false, true)).collect();
        let mut fleet = FleetRollouts::new(
            "r".into(),
            desired.clone(),
            0,
            BTreeMap::new(),
            BTreeMap::new(),
        );
        let t = Instant::now();
        fleet.fold(&rows);
        fleet.step();
        full.push(t.elapsed());

        let sent: Vec<FleetRow> = (0..n).map(|i| row(i, Some(&hash), false, false)).collect();
        let applied: Vec<FleetRow> = (0..n).map(|i| row(i, Some(&hash), true, false)).collect();
        let t = Instant::now();
        for chunk in sent.chunks(args.chunk.max(1)) {
            fleet.fold(chunk);
            fleet.step();
        }
        for chunk in applied.chunks(args.chunk.max(1)) {
            fleet.fold(chunk);
            fleet.step();
        }
        traffic.push(t.elapsed());

        let t = Instant::now();
        let writes = fleet
            .writes(None, |_| {})
            .ok_or_else(|| anyhow::anyhow!("nothing to write"))?;
        // The records carry their progress and member list serialized already.
        let records: Vec<_> = writes.batch.rollouts.values().collect();
        write.push(t.elapsed());
        size = records
            .iter()
            .map(|r| r.progress.len() + r.members.as_ref().map_or(0, String::len))
            .sum();

        let t = Instant::now();
        let mut adopted = Vec::with_capacity(records.len());
        for r in &records {
            let members = r.members.as_deref().map_or(Members::None, Members::Json);
            adopted.push(Rollout::from_json(&r.progress, members)?);
        }
        adopt.push(t.elapsed());

        // A later write: the counts alone, parsed with the member list read before.
        let t = Instant::now();
        let counts: Vec<String> = adopted
            .iter()
            .map(Rollout::progress_json)
            .collect::<Result<_, _>>()?;
        write_counts.push(t.elapsed());
        counts_size = counts.iter().map(String::len).sum();
        let t = Instant::now();
        for (text, before) in counts.iter().zip(&adopted) {
            Rollout::from_json(text, Members::Shared(Arc::clone(&before.agents)))?;
        }
        adopt_counts.push(t.elapsed());
    }
    println!(
        "fleet-wide rollouts, {n} agents, {} rounds:",
        args.rounds.max(1)
    );
    println!("  full read folded and stepped:   {}", spread(&mut full));
    println!(
        "  rollout traffic ({} rows in reads of {}): {}",
        2 * n,
        args.chunk,
        spread(&mut traffic)
    );
    println!("  rollouts serialized to write:   {}", spread(&mut write));
    println!("  rollouts parsed to adopt:       {}", spread(&mut adopt));
    println!("  rollout records written: {:.2} MB", size as f64 / 1e6);
    println!(
        "  a later write, the counts alone: serialized {}, parsed {}, {} bytes",
        spread(&mut write_counts),
        spread(&mut adopt_counts),
        counts_size
    );
    Ok(ExitCode::SUCCESS)
}

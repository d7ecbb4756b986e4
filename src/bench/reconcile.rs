//! `gitamp bench reconcile`: the server's own cost of holding a fleet and rolling a config out
//! to it, with no sockets and no load generator sharing the cores.
//!
//! N simulated agents ([`SimAgent`], the load generator's state machine) talk to the fleet
//! registry through `session::handle_message`, the function both transports call, each with a
//! WebSocket-like outbound queue. The real [`Reconciler`] (with its SQLite store in a temporary
//! directory) plans, pushes and publishes its view. Everything runs on one task, one step after
//! the other, so each figure is CPU cost, not latency: what a message, a plan and a rollout cost
//! per agent. Deterministic enough for `valgrind --tool=callgrind` (see docs/benchmarks.md).

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use gitamp_core::Snapshot;
use gitamp_core::plan::SyncStatus;
use gitamp_opamp::agent::{AgentOptions, ApplyPolicy, SimAgent};
use gitamp_opamp::frame::decode_frame;
use gitamp_opamp::outbox::{OutboxReceiver, outbox};
use gitamp_opamp::proto::{AgentToServer, ServerToAgent};
use gitamp_opamp::report::Transport;
use gitamp_opamp::session::{Connection, handle_message};
use gitamp_opamp::{Fleet, FleetEvent};
use tokio::sync::broadcast;

use super::harness::percentile;
use crate::server::reconciler::Reconciler;
use crate::server::state::AppState;
use crate::store::{SqliteStore, StoreWriter, WriterOptions};

/// Options of the in-process reconcile benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Simulated agents (all selected by the example repository's `staging` configuration).
    #[arg(long, default_value_t = 15000)]
    pub agents: usize,
    /// Rollouts of a changed configuration (each one measured).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args))
}

/// One simulated agent and its end of the connection.
struct Peer {
    agent: SimAgent,
    conn: Connection,
    outbound: OutboxReceiver,
}

/// The bench's world: fleet, reconciler, agents, and the event stream between them.
struct World {
    fleet: Arc<Fleet>,
    app: Arc<AppState>,
    reconciler: Reconciler,
    events: broadcast::Receiver<FleetEvent>,
    peers: Vec<Peer>,
    /// Messages handled by the registry, both directions of the session counted once.
    messages: u64,
    /// Time spent in `handle_message` (the message path).
    message_time: Duration,
}

impl World {
    /// Feed pending fleet events to the reconciler, as its run loop does.
    fn drain_events(&mut self) {
        loop {
            match self.events.try_recv() {
                Ok(event) => self.reconciler.note_event(&event),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.reconciler.note_lagged(n),
                Err(_) => break,
            }
        }
    }

    /// One agent message through the registry; the reply goes back to the agent, and whatever
    /// it answers comes back in turn.
    fn exchange(&mut self, i: usize, msg: AgentToServer) -> anyhow::Result<()> {
        let mut pending = vec![msg];
        while let Some(msg) = pending.pop() {
            let peer = &mut self.peers[i];
            let started = Instant::now();
            let reply = handle_message(&self.fleet, &mut peer.conn, msg);
            let encoded = reply.encode();
            self.message_time += started.elapsed();
            self.messages += 1;
            let reply = <ServerToAgent as prost::Message>::decode(encoded)
                .context("decoding the server's reply")?;
            pending.extend(peer.agent.handle(&reply));
        }
        Ok(())
    }

    /// Deliver every queued push (WebSocket frames) and run the agents' answers through the
    /// registry. Returns the pushes delivered.
    fn deliver(&mut self) -> anyhow::Result<u64> {
        let mut delivered = 0;
        for i in 0..self.peers.len() {
            while let Some(push) = self.peers[i].outbound.try_recv() {
                delivered += 1;
                let msg: ServerToAgent =
                    decode_frame(push.to_bytes()).context("decoding a pushed frame")?;
                let answers = self.peers[i].agent.handle(&msg);
                for answer in answers {
                    self.exchange(i, answer)?;
                }
            }
            if i % 500 == 499 {
                self.drain_events();
            }
        }
        self.drain_events();
        Ok(delivered)
    }

    /// One reconcile, timed.
    fn plan(&mut self) -> Duration {
        let started = Instant::now();
        self.reconciler.reconcile();
        started.elapsed()
    }

    fn count(&self, status: SyncStatus) -> usize {
        self.app
            .view
            .load()
            .counts
            .get(status.as_str())
            .copied()
            .unwrap_or(0)
    }
}

/// The embedded example repository with the staging processor changed (a new hash for
/// `staging`), as `bench rollout` commits it.
fn changed_snapshot(round: usize) -> anyhow::Result<Snapshot> {
    let mut snapshot = crate::embedded::snapshot();
    let path = "processors/env-staging.yaml";
    let original = snapshot
        .files
        .get(path)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .context("the embedded example has processors/env-staging.yaml")?;
    snapshot.insert(
        path,
        original.replacen(
            "deployment.environment: staging",
            &format!("deployment.environment: staging\n      bench.round: \"{round}\""),
            1,
        ),
    );
    snapshot.revision = format!("bench-round-{round}");
    Ok(snapshot)
}

fn compile(snapshot: &Snapshot) -> anyhow::Result<gitamp_core::Revision> {
    gitamp_core::compile(snapshot).map_err(|r| {
        anyhow::anyhow!(
            "revision {} rejected: {} error(s)",
            r.revision,
            r.diagnostics.errors().count()
        )
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn per_agent_us(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n.max(1) as f64
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    let n = args.agents;
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path()).await?);
    let (writer, writer_task) = StoreWriter::spawn(store, WriterOptions::default());
    let fleet = Arc::new(Fleet::new());
    let app = Arc::new(AppState::new(fleet.clone(), crate::telemetry::install()));
    let mut reconciler =
        Reconciler::new(app.clone(), writer.clone(), HashMap::new(), BTreeMap::new());
    reconciler.accept(compile(&crate::embedded::snapshot())?);
    let rss_before = super::harness::rss_kib(std::process::id()).unwrap_or(0);

    let mut world = World {
        events: fleet.subscribe(),
        fleet,
        app,
        reconciler,
        peers: Vec::with_capacity(n),
        messages: 0,
        message_time: Duration::ZERO,
    };
    for i in 0..n {
        let mut opts = AgentOptions::collector("bench", &format!("bench-{i:06}"), "staging")
            .label("os.type", "linux");
        opts.policy = ApplyPolicy::Apply;
        let (tx, outbound) = outbox(16);
        world.peers.push(Peer {
            agent: SimAgent::new(opts),
            conn: Connection::new(i as u64 + 1, Transport::Ws, Some(tx)),
            outbound,
        });
    }

    // Connect: every agent's first message is its full report.
    for i in 0..n {
        let report = world.peers[i].agent.full_report();
        world.exchange(i, report)?;
        if i % 500 == 499 {
            world.drain_events();
        }
    }
    world.drain_events();
    let connect_time = world.message_time;
    let connect_msgs = world.messages;
    println!(
        "agents: {n}; connect: {:.1} µs per message ({connect_msgs} messages)",
        per_agent_us(connect_time, connect_msgs as usize)
    );

    // The first plan pushes the configuration to everyone; the agents apply and report.
    let first_plan = world.plan();
    let pushed = world.deliver()?;
    let after_reports = world.plan();
    let extra = world.deliver()?;
    let settle = world.plan();
    println!(
        "first plan (push to all): {:.1} ms ({:.1} µs/agent), {pushed} pushes; plan after {n} reports: {:.1} ms; then {:.1} ms; {extra} extra pushes; synced {}",
        ms(first_plan),
        per_agent_us(first_plan, n),
        ms(after_reports),
        ms(settle),
        world.count(SyncStatus::Synced)
    );

    // Steady state: heartbeats only.
    let mut steady = Vec::new();
    let hb_start = (world.messages, world.message_time);
    for _ in 0..3 {
        for i in 0..n {
            let hb = world.peers[i].agent.heartbeat();
            world.exchange(i, hb)?;
            if i % 500 == 499 {
                world.drain_events();
            }
        }
        world.drain_events();
        steady.push(world.plan());
    }
    steady.sort();
    let hb_msgs = world.messages - hb_start.0;
    let hb_time = world.message_time - hb_start.1;
    println!(
        "heartbeat: {:.2} µs per message; plan with nothing changed: median {:.1} ms ({:.2} µs/agent)",
        per_agent_us(hb_time, hb_msgs as usize),
        ms(steady[steady.len() / 2]),
        per_agent_us(steady[steady.len() / 2], n)
    );

    // Rollouts of a changed configuration.
    let mut rollout_totals = Vec::new();
    for round in 1..=args.rounds {
        let snapshot = changed_snapshot(round)?;
        let started = Instant::now();
        let revision = compile(&snapshot)?;
        let compile_time = started.elapsed();
        let (m0, t0) = (world.messages, world.message_time);
        let cpu0 = super::harness::cpu_seconds(std::process::id()).unwrap_or(0.0);
        let mut plans = Vec::new();
        let mut pushes = 0;
        world.reconciler.accept(revision);
        let mut converged = false;
        for _ in 0..10 {
            plans.push(world.plan());
            pushes += world.deliver()?;
            if world.count(SyncStatus::Synced) == n && world.count(SyncStatus::Applying) == 0 {
                plans.push(world.plan());
                converged = true;
                break;
            }
        }
        let plan_time: Duration = plans.iter().sum();
        let msg_time = world.message_time - t0;
        // The store's share: wait for its writes, then count the whole process's CPU (plans,
        // messages, the simulated agents and the SQLite writer thread).
        let flush_started = Instant::now();
        writer.flush().await.ok();
        let flush_wait = flush_started.elapsed();
        let cpu = super::harness::cpu_seconds(std::process::id()).unwrap_or(0.0) - cpu0;
        let total = compile_time + plan_time + msg_time;
        rollout_totals.push(total);
        println!(
            "rollout {round}: compile {:.1} ms; {} plans {:.1} ms ({}); messages {} in {:.1} ms; {pushes} pushes; server total {:.1} ms ({:.1} µs/agent){}; store flush waited {:.1} ms; process CPU {:.2} s",
            ms(compile_time),
            plans.len(),
            ms(plan_time),
            plans
                .iter()
                .map(|p| format!("{:.1}", ms(*p)))
                .collect::<Vec<_>>()
                .join(" + "),
            world.messages - m0,
            ms(msg_time),
            ms(total),
            per_agent_us(total, n),
            if converged { "" } else { "; NOT converged" },
            ms(flush_wait),
            cpu
        );
    }
    rollout_totals.sort();
    let rss_after = super::harness::rss_kib(std::process::id()).unwrap_or(0);
    println!(
        "rollout server time: median {:.1} ms, max {:.1} ms; process RSS +{:.1} MiB for {n} agents (registry, reconciler and the simulated agents together)",
        ms(percentile(&rollout_totals, 0.5)),
        ms(rollout_totals.last().copied().unwrap_or_default()),
        rss_after.saturating_sub(rss_before) as f64 / 1024.0
    );
    drop(world);
    writer.flush().await.ok();
    drop(writer);
    writer_task.await.ok();
    Ok(ExitCode::SUCCESS)
}

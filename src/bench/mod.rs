//! `gitamp bench ...`: measurements of the hot paths, runnable on any machine without a test
//! harness (`cargo run --release -- bench repo`), so that performance goals are checked where
//! they matter.

pub mod fleet;
pub mod fleet_rollouts;
pub mod harness;
pub mod otlp;
pub mod reconcile;
pub mod replicas;
pub mod repo;
pub mod rollout;

/// What to measure.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Load + validate + render a synthetic repository of N resources.
    Repo(repo::Args),
    /// Webhook to APPLIED on N WebSocket agents (a `gitamp serve` child process).
    Rollout(rollout::Args),
    /// A load generator: N simulated agents (WebSocket or HTTP, in P worker processes) against
    /// a `gitamp serve` child; connect rate, RSS per agent, CPU, latency, rollout, restart.
    Fleet(fleet::Args),
    /// The server's own cost per agent, in process and without sockets: message handling,
    /// plans and rollouts of N simulated agents through the real registry and reconciler.
    Reconcile(reconcile::Args),
    /// The own-telemetry receiver's cost per agent: N collectors' self-metrics every interval
    /// against a `gitamp serve` child (CPU and RSS against a window without them).
    Otlp(otlp::Args),
    /// Replicas: the leader's cost of stepping rollouts over N agents' rows, and every
    /// replica's of adopting them, in process.
    FleetRollouts(fleet_rollouts::Args),
}

/// Run one benchmark.
pub fn run(command: BenchCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {
        BenchCommand::Repo(args) => repo::run(args),
        BenchCommand::Rollout(args) => rollout::run(args),
        BenchCommand::Fleet(args) => fleet::run(args),
        BenchCommand::Reconcile(args) => reconcile::run(args),
        BenchCommand::Otlp(args) => otlp::run(args),
        BenchCommand::FleetRollouts(args) => fleet_rollouts::run(args),
    }
}

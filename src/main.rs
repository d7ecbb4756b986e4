//! The `gitamp` command line. Each subcommand lives in `gitamp::cli::<name>`.

// Non-test code must not panic on input; tests may (clippy.toml: allow-unwrap-in-tests).
#![warn(clippy::unwrap_used)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gitamp::cli;

/// mimalloc instead of glibc's malloc: the server allocates and frees small objects per agent
/// and message, where glibc's consolidation and per-thread arenas cost a third of the CPU of a
/// plan and held freed memory after a rollout (docs/benchmarks.md has the before and after).
/// Off with `--no-default-features`, for heap profilers that hook malloc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "gitamp",
    version = gitamp::build_info::LONG_VERSION,
    about = "Run a fleet of OpenTelemetry collectors from Git (OpAMP server + GitOps reconciler)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve OpAMP and the status API, keeping every agent in step with the repository.
    Serve(Box<cli::serve::Args>),
    /// Check a config repository: schema, references, parameters, templates.
    Validate(cli::validate::Args),
    /// Render the collector YAML of a configuration, or of the agent with given labels.
    Render(cli::render::Args),
    /// List a running server's agents (status, configuration, labels, last seen).
    Agents(cli::agents::Args),
    /// Preview what the server would do with a repository change (`--dry-run`), per agent.
    Reconcile(cli::reconcile::Args),
    /// Show a running server's sync status: revision, last fetch, errors, agents per status.
    Status(cli::status::Args),
    /// Measure hot paths (`bench repo`: load + validate + render of a synthetic repository).
    Bench {
        #[command(subcommand)]
        command: gitamp::bench::BenchCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => cli::serve::run(*args),
        Command::Validate(args) => cli::validate::run(args),
        Command::Render(args) => cli::render::run(args),
        Command::Agents(args) => cli::agents::run(args),
        Command::Status(args) => cli::status::run(args),
        Command::Reconcile(args) => cli::reconcile::run(args),
        Command::Bench { command } => gitamp::bench::run(command),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", cli::error_line(&err));
            ExitCode::from(cli::exit::ERROR)
        }
    }
}

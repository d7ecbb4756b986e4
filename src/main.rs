//! The `gitamp` command line: parse with the library's one clap definition and run.

// Non-test code must not panic on input; tests may (clippy.toml: allow-unwrap-in-tests).
#![warn(clippy::unwrap_used)]

use std::process::ExitCode;

use clap::Parser;
use gitamp::cli;

/// mimalloc instead of glibc's malloc: the server allocates and frees small objects per agent
/// and message, where glibc's consolidation and per-thread arenas cost a third of the CPU of a
/// plan and held freed memory after a rollout (docs/benchmarks.md has the before and after).
/// Off with `--no-default-features`, for heap profilers that hook malloc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::run(cli::Cli::parse())
}

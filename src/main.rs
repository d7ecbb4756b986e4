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

/// How long mimalloc keeps memory a program freed before it gives it back to the system, in
/// ms, unless the operator set `MIMALLOC_PURGE_DELAY`. mimalloc 3's default (1 s) kept what a
/// rollout allocates and frees within a second (every agent's reports, plans, writes) resident
/// all at once: in a rollout to 60,000 agents over 4 replicas the largest replica's peak RSS
/// was 3–7 KiB per agent above the largest steady figure, 2–4 with 10 ms, mimalloc 2's
/// default (docs/benchmarks.md, twelfth round).
#[cfg(feature = "mimalloc")]
const PURGE_DELAY_MS: std::os::raw::c_long = 10;

/// Sets mimalloc's purge delay ([`PURGE_DELAY_MS`]) before anything large is allocated.
#[cfg(feature = "mimalloc")]
fn tune_allocator() {
    /// `mi_option_purge_delay` in mimalloc's `mi_option_t` (15 in mimalloc 2 and 3 alike).
    const MI_OPTION_PURGE_DELAY: std::os::raw::c_int = 15;
    #[allow(unsafe_code)]
    unsafe extern "C" {
        /// mimalloc's own `void mi_option_set(mi_option_t, long)`, linked in by
        /// `libmimalloc-sys` (which declares it only with its `extended` feature).
        fn mi_option_set(option: std::os::raw::c_int, value: std::os::raw::c_long);
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: called first thing in `main`, before any thread of ours exists; the option is a
    // valid `mi_option_t` and the value a delay in ms, as mimalloc.h documents, and mimalloc
    // reads its options as plain integers whenever it purges.
    #[allow(unsafe_code)]
    unsafe {
        mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
    }
}

fn main() -> ExitCode {
    #[cfg(feature = "mimalloc")]
    tune_allocator();
    cli::run(cli::Cli::parse())
}

//! The one test kit every root test binary uses (`mod support;`). Each concern has its module:
//!
//! - [`git`]: real Git repositories (a bare remote and a work clone), made with the `git` CLI;
//! - [`server`]: `gitamp serve` as a child process ([`Server`], [`GitOpsServer`]), its status
//!   API, `/metrics`, webhooks, and [`plan_after`] (a negative assertion's proof of trigger);
//! - [`agents`]: swarms of simulated agents ([`start_agents`], [`wait_all_applied`], counts);
//! - [`wire`]: raw OpAMP (protobuf pieces, in-process exchanges, HTTP POSTs);
//! - [`cli`]: the `gitamp` command with a clean environment, and its output;
//! - [`poll`]: [`eventually`], the one way to wait: for an observed state, never for time;
//! - [`logs`]: log lines of in-process code, to wait for;
//! - [`postgres`]: the store backends (SQLite, the private PostgreSQL cluster), `both_backends!`;
//! - [`replicas`]: N replicas of one fleet on PostgreSQL ([`replicas::Fleet`]);
//! - [`rand`]: one seeded PRNG; [`routes`]: the API's routes; [`corpus`]: diagnostics corpora;
//! - [`release`]: `scripts/release.sh` on the test build, and the release's file names;
//! - [`peers`], [`collector`], [`opamp_go`]: the Go-built peers (collector, supervisor,
//!   opamp-go driver).
//!
//! Not every binary uses every helper, hence the `allow` below.
#![allow(dead_code, unused_imports)]

pub mod agents;
pub mod cli;
pub mod collector;
pub mod corpus;
pub mod git;
pub mod logs;
pub mod opamp_go;
pub mod packages;
pub mod peers;
pub mod poll;
pub mod postgres;
pub mod rand;
pub mod release;
pub mod replicas;
pub mod routes;
pub mod server;
pub mod wire;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;

pub use agents::{start_agents, start_agents_with, wait_all_applied};
pub use cli::gitamp;
pub use corpus::{CorpusCase, corpus_cases, reported};
pub use git::{GitFixture, copy_tree, git};
pub use peers::{opamp_go_driver, otelcol, peer, supervisor};
pub use poll::{eventually, eventually_blocking};
pub use rand::Prng;
pub use routes::ROUTES;
pub use server::{
    GitOpsServer, Server, agents, free_port, get_json, gitops_args, metric, plan_after,
    post_webhook, sample, samples, scrape, write_token,
};

/// The workspace root (where example-repo/ lives).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The lines of a child's output, invalid UTF-8 replaced: reading stops only at end of file, so
/// the child never blocks on a full pipe because one line was not UTF-8.
pub fn lossy_lines(r: impl std::io::Read) -> impl Iterator<Item = String> {
    BufReader::new(r)
        .split(b'\n')
        .map_while(Result::ok)
        .map(|l| {
            String::from_utf8_lossy(&l)
                .trim_end_matches('\r')
                .to_string()
        })
}

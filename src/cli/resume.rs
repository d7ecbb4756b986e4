//! `gitamp resume CONFIGURATION`: resume a halted rollout without a new commit
//! (`POST /api/v1/configurations/{name}/resume`). It goes on from the batch it halted in; the
//! agents that failed keep their status until they report otherwise, and no longer count
//! towards `maxFailures`.
//!
//! Exit codes: 0 resumed, 1 no such configuration or its rollout is not halted, 2 error.

use std::process::ExitCode;

use super::client::{Client, ServerArgs, segment};
use super::output::OutputArgs;

/// Resume a halted rollout.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The configuration whose rollout halted.
    pub configuration: String,
    /// `table` and `wide` print a line for people; `json` and `yaml` the server's answer.
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.server)?;
    let path = format!(
        "/api/v1/configurations/{}/resume",
        segment(&args.configuration)
    );
    let answer: serde_json::Value = client.post(&path)?;
    match args.output.output.data(&answer)? {
        Some(data) => print!("{data}"),
        None => {
            let r = &answer["rollout"];
            let count = |k: &str| r[k].as_u64().unwrap_or(0);
            println!(
                "resumed: rollout of {} is {} (batch {}, {} of {} synced, {} failed agent(s) \
                 excused)",
                args.configuration,
                r["phase"]["phase"].as_str().unwrap_or("?"),
                count("batch"),
                count("synced"),
                count("total"),
                count("excused"),
            );
        }
    }
    Ok(ExitCode::from(super::exit::OK))
}

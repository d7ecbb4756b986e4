//! `gitamp bench rollout`: from a pushed commit's webhook to the config applied on every agent.
//!
//! Real parts only: a bare Git repository made here (a copy of the embedded example repository),
//! this binary started as `gitamp serve` in a child process (so its memory and CPU are its own),
//! N simulated agents over WebSocket in this process, and the generic webhook. It prints the
//! latency from the webhook POST to each agent's APPLIED (median, p99, max), and the server's RSS.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::harness::{BenchRepo, Server, percentile};
use gitamp_opamp::agent::{
    AgentOptions, ApplyPolicy, ClientTransport, SimAgent, WsOptions, spawn_agent,
};

/// Options of the rollout benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Connected agents.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Commits rolled out (each one measured).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Give up on a round after this long (2m, 90s; a bare number is seconds).
    #[arg(long, value_name = "DURATION", default_value = "2m",
          value_parser = crate::cli::duration::positive)]
    pub timeout: Duration,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    let repo = BenchRepo::new()?;
    let server = Server::start(&repo, Duration::from_secs(30))?;
    let url = format!("ws://{}/v1/opamp", server.opamp);
    let idle_rss = server.rss_kib();

    // Staging Linux agents: the `staging` configuration rolls out all at once.
    let ramp = Instant::now();
    let agents: Vec<_> = (0..args.agents)
        .map(|i| {
            let mut opts = AgentOptions::collector("bench", &format!("bench-{i:05}"), "staging")
                .label("os.type", "linux");
            opts.policy = ApplyPolicy::Apply;
            spawn_agent(
                SimAgent::new(opts),
                ClientTransport::WebSocket(WsOptions::default()),
                &url,
            )
        })
        .collect();
    let deadline = args.timeout;
    for a in &agents {
        a.wait_for(deadline, |s| s.applied_hash().is_some())
            .await
            .map_err(|s| {
                anyhow::anyhow!("agent never applied its first config: {:?}", s.last_error)
            })?;
    }
    println!(
        "{} agents connected and applied the first revision in {:.2} s; server RSS {} KiB ({} KiB idle before agents)",
        args.agents,
        ramp.elapsed().as_secs_f64(),
        server.rss_kib(),
        idle_rss
    );

    let client = reqwest::Client::new();
    let mut all = Vec::new();
    for round in 0..args.rounds {
        repo.commit_staging_change(&round.to_string())?;
        let before: Vec<_> = agents
            .iter()
            .map(|a| a.state().applied_hash().cloned())
            .collect();
        let start = Instant::now();
        server.webhook(&client).await?;
        // One watcher per agent records the moment it reports APPLIED for the new hash.
        let mut waits = tokio::task::JoinSet::new();
        for (a, old) in agents.iter().zip(before) {
            let mut rx = a.subscribe();
            waits.spawn(async move {
                let seen = tokio::time::timeout(
                    deadline,
                    rx.wait_for(|s| s.applied_hash().is_some() && s.applied_hash() != old.as_ref()),
                )
                .await;
                matches!(seen, Ok(Ok(_))).then(|| start.elapsed())
            });
        }
        let mut latencies = Vec::with_capacity(agents.len());
        while let Some(r) = waits.join_next().await {
            match r {
                Ok(Some(d)) => latencies.push(d),
                _ => bail!("round {round}: an agent did not apply the new config in time"),
            }
        }
        latencies.sort();
        println!(
            "round {round}: webhook -> APPLIED on {} agents: median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            agents.len(),
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            percentile(&latencies, 1.0).as_secs_f64() * 1e3,
        );
        all.extend(latencies);
    }
    all.sort();
    let redundant: u64 = agents
        .iter()
        .map(|a| a.state().redundant_configs_received)
        .sum();
    println!(
        "all rounds: median {:.1} ms, p99 {:.1} ms, max {:.1} ms; redundant pushes {redundant}; server RSS {} KiB",
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
        percentile(&all, 1.0).as_secs_f64() * 1e3,
        server.rss_kib(),
    );
    for a in &agents {
        a.stop(Duration::from_millis(500)).await;
    }
    drop(server);
    Ok(ExitCode::SUCCESS)
}

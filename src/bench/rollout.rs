//! `gitamp bench rollout`: from a pushed commit's webhook to the config applied on every agent.
//!
//! Real parts only: a bare Git repository made here (a copy of the embedded example repository),
//! this binary started as `gitamp serve` in a child process (so its memory and CPU are its own),
//! N simulated agents over WebSocket in this process, and the generic webhook. It prints the
//! latency from the webhook POST to each agent's APPLIED (median, p99, max), and the server's RSS.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gitamp_opamp::agent::{AgentOptions, ApplyPolicy, SimAgent, Transport, WsOptions, spawn_agent};

/// Options of the rollout benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Connected agents.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Commits rolled out (each one measured).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Give up on a round after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=gitamp bench",
            "-c",
            "user.email=bench@gitamp.invalid",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Resident set size of a process in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let remote = dir.path().join("remote.git");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&remote)?;
    std::fs::create_dir_all(&work)?;
    git(&remote, &["init", "-q", "--bare", "-b", "main"])?;
    git(&work, &["init", "-q", "-b", "main"])?;
    for (path, bytes) in crate::embedded::snapshot().files {
        let target = work.join(&path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(target, &bytes[..])?;
    }
    git(&work, &["add", "-A"])?;
    git(&work, &["commit", "-q", "-m", "bench: initial"])?;
    git(
        &work,
        &[
            "remote",
            "add",
            "origin",
            remote.to_str().context("utf-8 path")?,
        ],
    )?;
    git(&work, &["push", "-q", "origin", "main"])?;

    let token = "bench-token";
    std::fs::write(dir.path().join("token"), token)?;
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut child = Command::new(exe)
        .arg("serve")
        .args(["--repo", &format!("file://{}", remote.display())])
        .args([
            "--poll",
            "3600",
            "--opamp-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .arg("--webhook-token-file")
        .arg(dir.path().join("token"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting gitamp serve")?;
    let pid = child.id();
    let stdout = child.stdout.take().context("server stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = |key: &str| -> anyhow::Result<String> {
        line.split_whitespace()
            .find_map(|p| p.strip_prefix(key))
            .map(str::to_string)
            .with_context(|| format!("server did not print {key}: {line:?}"))
    };
    let opamp = addr("opamp=")?;
    let api = addr("api=")?;
    let url = format!("ws://{opamp}/v1/opamp");
    let idle_rss = rss_kib(pid).unwrap_or(0);

    // Staging Linux agents: the `staging` configuration rolls out all at once.
    let ramp = Instant::now();
    let agents: Vec<_> = (0..args.agents)
        .map(|i| {
            let mut opts = AgentOptions::collector("bench", &format!("bench-{i:05}"), "staging")
                .label("os.type", "linux");
            opts.policy = ApplyPolicy::Apply;
            spawn_agent(
                SimAgent::new(opts),
                Transport::WebSocket(WsOptions::default()),
                &url,
            )
        })
        .collect();
    let deadline = Duration::from_secs(args.timeout);
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
        rss_kib(pid).unwrap_or(0),
        idle_rss
    );

    let client = reqwest::Client::new();
    let mut all = Vec::new();
    let file = work.join("processors/env-staging.yaml");
    let original = std::fs::read_to_string(&file)?;
    for round in 0..args.rounds {
        let text = &original;
        // A new value in a processor the staging configuration uses: a new rendered hash.
        std::fs::write(
            &file,
            text.replace(
                "deployment.environment: staging",
                &format!("deployment.environment: staging\n      bench.round: \"{round}\""),
            ),
        )?;
        git(
            &work,
            &["commit", "-q", "-am", &format!("bench round {round}")],
        )?;
        git(&work, &["push", "-q", "origin", "main"])?;
        let before: Vec<_> = agents
            .iter()
            .map(|a| a.state().applied_hash().cloned())
            .collect();
        let start = Instant::now();
        let resp = client
            .post(format!("http://{api}/webhooks/generic"))
            .bearer_auth(token)
            .body("{}")
            .send()
            .await
            .context("webhook")?;
        if !resp.status().is_success() {
            bail!("webhook answered {}", resp.status());
        }
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
        rss_kib(pid).unwrap_or(0),
    );
    for a in &agents {
        a.stop(Duration::from_millis(500)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(ExitCode::SUCCESS)
}

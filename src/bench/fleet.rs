//! `gitamp bench fleet`: a load generator for the OpAMP server, and the standard measurements.
//!
//! The parent process makes a Git repository (a copy of the embedded example), starts this
//! binary as `gitamp serve` in a child process (so its memory and CPU are its own), and starts
//! `--processes P` workers: this binary again, as `gitamp bench fleet --worker-url ...`, each
//! running `N/P` simulated agents ([`gitamp_opamp::agent::run_fleet`]) from its own loopback
//! source addresses. One process may hold at most ~19,900 sockets here (`ulimit -Hn` is
//! 20,000), hence the workers. Parent and workers talk in lines: commands on the worker's
//! stdin, one JSON object per answer on its stdout.
//!
//! Phases: ramp (connect rate: every agent connected and APPLIED its first config), steady
//! state for `--duration` seconds (server RSS and CPU, messages/s, HTTP request latency), then
//! optionally `--rollout` (commit + webhook, latency to each agent's APPLIED) and `--restart`
//! (kill -9 the server, restart it on the same ports and data directory; time until every
//! agent reconnected and re-sent its full state, until the server sees them all synced, and
//! the pushes that were not needed). The last line is `RESULT {json}` for scripts.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use gitamp_opamp::agent::{
    ApplyPolicy, FleetTransport, SimFleet, SimFleetOptions, WsOptions, run_fleet,
};
use serde_json::{Value, json};

use super::harness::{BenchRepo, Server, percentile};

/// Options of the fleet benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `ws` (one WebSocket per agent) or `http` (agents share a pool of keep-alive
    /// connections).
    #[arg(long, default_value = "ws", value_parser = ["ws", "http"])]
    pub transport: String,
    /// Simulated agents, in total.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Agents started per second, in total (0: all at once).
    #[arg(long, default_value_t = 1000.0)]
    pub ramp: f64,
    /// Heartbeat (WebSocket) / poll (HTTP) interval (30s, 1m; a bare number is seconds; at
    /// least 1s); the server offers the same.
    #[arg(long, value_name = "DURATION", default_value = "30s",
          value_parser = crate::cli::duration::at_least_a_second)]
    pub heartbeat: Duration,
    /// Steady state measured after the ramp (30s, 2m; a bare number is seconds).
    #[arg(long, value_name = "DURATION", default_value = "30s",
          value_parser = crate::cli::duration::positive)]
    pub duration: Duration,
    /// Worker processes for the agents (each holds N/P agents and its own source addresses).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// HTTP keep-alive connections, in total (split over the workers).
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// After the steady state: commit a change, fire the webhook, measure webhook -> APPLIED.
    #[arg(long)]
    pub rollout: bool,
    /// Then kill -9 the server, restart it, measure the reconnect storm.
    #[arg(long)]
    pub restart: bool,
    /// Give up on a phase after this long (5m, 90s; a bare number is seconds).
    #[arg(long, value_name = "DURATION", default_value = "5m",
          value_parser = crate::cli::duration::positive)]
    pub timeout: Duration,
    /// Run N `gitamp serve` replicas on the PostgreSQL server of `--store` (a fresh database
    /// `gitamp_bench_fleet` is made there), worker i talking to replica i mod N (so
    /// `--processes` at least N). 0: one server on SQLite.
    #[arg(long, default_value_t = 0)]
    pub replicas: usize,
    /// With `--replicas` (WebSocket): after the rollout, kill -9 one follower; its agents,
    /// which know every replica's address, fail over to the others by themselves (no
    /// balancer). Measures the time until all of them re-synced elsewhere and the pushes
    /// that were not needed.
    #[arg(long)]
    pub kill_one: bool,
    /// With `--replicas`: a PostgreSQL URL whose user may create databases.
    #[arg(long, env = "GITAMP_BENCH_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// Internal: run as a worker against this OpAMP URL.
    #[arg(long, hide = true)]
    pub worker_url: Option<String>,
    /// Internal: the other servers a worker's WebSocket agents fail over to, in order.
    #[arg(long, hide = true, value_delimiter = ',')]
    pub worker_failover: Vec<String>,
    /// Internal: this worker's index (chooses its source addresses).
    #[arg(long, hide = true, default_value_t = 0)]
    pub worker_index: usize,
}

/// Source addresses a worker binds: 4 per worker for WebSocket (each pair of addresses has
/// ~28,000 ephemeral ports), 1 for HTTP (a handful of connections).
fn source_ips(worker: usize, transport: &str) -> Vec<IpAddr> {
    let per = if transport == "ws" { 4 } else { 1 };
    (0..per)
        .map(|k| {
            let n = 2 + worker * per + k;
            IpAddr::V4(Ipv4Addr::new(127, 0, (n / 250) as u8, (n % 250) as u8 + 2))
        })
        .collect()
}

pub(super) fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(url) = args.worker_url.clone() {
        return runtime.block_on(worker(args, url));
    }
    if args.replicas > 0 {
        return runtime.block_on(super::replicas::parent(args));
    }
    runtime.block_on(parent(args))
}

// ---------------------------------------------------------------------------------------------
// Worker: N agents, answering commands.

struct Tracked {
    fleet: SimFleet,
    /// Per agent: full reports sent at the last `mark`.
    marked_full: Vec<u64>,
    marked_connections: Vec<u32>,
    marked_redundant: u64,
}

impl Tracked {
    fn totals(&self) -> Value {
        let (mut connected, mut applied, mut sent, mut received, mut redundant, mut errors) =
            (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        let mut heartbeats = 0u64;
        for a in &self.fleet.agents {
            let s = a.state_ref();
            connected += s.connected as u64;
            applied += s.applied_hash().is_some() as u64;
            sent += s.messages_sent;
            received += s.messages_received;
            redundant += s.redundant_configs_received;
            errors += s.transport_errors;
            heartbeats += s.heartbeats_sent;
        }
        let (requests, p50, p99, lat_count) = match &self.fleet.http_pool {
            Some(p) => (
                p.requests_sent(),
                p.latency().quantile(0.5).as_micros() as u64,
                p.latency().quantile(0.99).as_micros() as u64,
                p.latency().count(),
            ),
            None => (0, 0, 0, 0),
        };
        json!({
            "type": "stats", "agents": self.fleet.agents.len(), "connected": connected,
            "applied": applied, "sent": sent, "received": received, "redundant": redundant,
            "errors": errors, "heartbeats": heartbeats, "requests": requests,
            "lat_p50_us": p50, "lat_p99_us": p99, "lat_count": lat_count,
            "lat_buckets": self.fleet.http_pool.as_ref().map(|p| latency_samples(p.latency())),
        })
    }
}

/// The histogram as (floor µs, count) pairs, so the parent can merge workers exactly.
fn latency_samples(h: &gitamp_opamp::agent::http::LatencyHistogram) -> Vec<(u64, u64)> {
    // Quantiles at 0.1 % steps are enough to merge p50/p99 across workers.
    let n = h.count();
    if n == 0 {
        return Vec::new();
    }
    (1..=1000)
        .map(|i| {
            (
                h.quantile(i as f64 / 1000.0).as_micros() as u64,
                n.div_ceil(1000),
            )
        })
        .collect()
}

fn reply(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

async fn worker(args: Args, url: String) -> anyhow::Result<ExitCode> {
    let transport = if args.transport == "ws" {
        FleetTransport::WebSocket {
            source_ips: source_ips(args.worker_index, "ws"),
        }
    } else {
        FleetTransport::Http {
            connections: args.connections.max(1),
            gzip: false,
        }
    };
    let mut opts = SimFleetOptions {
        ramp_per_sec: args.ramp,
        heartbeat_interval: args.heartbeat,
        policy: ApplyPolicy::Apply,
        service_name: "otelcol-bench".to_owned(),
        environment: "staging".to_owned(),
        host_prefix: format!("bench-w{}", args.worker_index),
        ws: WsOptions {
            // A restarted server comes back within a second or two; do not hammer it.
            reconnect_delay: Duration::from_millis(500),
            failover: args.worker_failover.clone().into(),
            ..WsOptions::default()
        },
        ..SimFleetOptions::default()
    };
    opts.http.local_ip = source_ips(args.worker_index, "http").first().copied();
    opts.http.timeout = Duration::from_secs(10);
    // Labels: deployment.environment=staging, os.type=linux (this host): the example
    // repository's `staging` configuration (all at once) selects them.
    let fleet = run_fleet(args.agents, transport, &url, opts).context("starting agents")?;
    let n = fleet.agents.len();
    let mut t = Tracked {
        fleet,
        marked_full: Vec::new(),
        marked_connections: Vec::new(),
        marked_redundant: 0,
    };
    let t0 = Instant::now();
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| {
            words
                .get(i)
                .and_then(|w| w.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match words.first().copied() {
            Some("stats") => reply(t.totals()),
            Some("reset-latency") => {
                if let Some(p) = &t.fleet.http_pool {
                    p.latency().reset();
                }
                reply(json!({"type": "ok"}));
            }
            // wait-gen G TIMEOUT_MS: until every agent applied G distinct hashes.
            Some("wait-gen") => {
                let (g, timeout) = (num(1) as u32, Duration::from_millis(num(2)));
                let deadline = Instant::now() + timeout;
                // Each agent records its applied configs itself (no watcher task per agent).
                let applied = |t: &Tracked| -> Vec<f64> {
                    t.fleet
                        .agents
                        .iter()
                        .filter_map(|a| {
                            let s = a.state_ref();
                            (s.applied_generations >= g)
                                .then_some(s.last_applied_unix_ns as f64 / 1e6)
                        })
                        .collect()
                };
                let done = |t: &Tracked| {
                    t.fleet
                        .agents
                        .iter()
                        .filter(|a| a.state_ref().applied_generations >= g)
                        .count()
                };
                // Each agent stamps its own apply time, so the poll's period is not in the
                // figures; a short one only took CPU from the server under test (at 100 ms,
                // 7 % of a worker's CPU during a 60,000-agent rollout went to this count).
                while done(&t) < n && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let ms = applied(&t);
                reply(json!({
                    "type": "applied", "done": done(&t), "agents": n,
                    "since_start_s": t0.elapsed().as_secs_f64(), "applied_unix_ms": ms,
                }));
            }
            Some("mark") => {
                t.marked_full = t
                    .fleet
                    .agents
                    .iter()
                    .map(|a| a.state_ref().full_reports_sent)
                    .collect();
                t.marked_connections = t
                    .fleet
                    .agents
                    .iter()
                    .map(|a| a.state_ref().connections)
                    .collect();
                t.marked_redundant = t
                    .fleet
                    .agents
                    .iter()
                    .map(|a| a.state_ref().redundant_configs_received)
                    .sum();
                reply(json!({"type": "ok"}));
            }
            // wait-resync TIMEOUT_MS: until every agent sent a full report since `mark`
            // (the restarted server asked for its state) and, on WebSocket, reconnected.
            Some("wait-resync") => {
                let deadline = Instant::now() + Duration::from_millis(num(1));
                let ws = args.transport == "ws";
                let mut reconnected_ms = None;
                let started = unix_ns();
                loop {
                    let mut reconnected = 0;
                    let mut resynced = 0;
                    for (i, a) in t.fleet.agents.iter().enumerate() {
                        let s = a.state_ref();
                        if !ws || (s.connected && s.connections > t.marked_connections[i]) {
                            reconnected += 1;
                        }
                        if s.full_reports_sent > t.marked_full[i] {
                            resynced += 1;
                        }
                    }
                    if reconnected == n && reconnected_ms.is_none() {
                        reconnected_ms = Some(unix_ns() as f64 / 1e6);
                    }
                    if (resynced == n && reconnected == n) || Instant::now() >= deadline {
                        let redundant: u64 = t
                            .fleet
                            .agents
                            .iter()
                            .map(|a| a.state_ref().redundant_configs_received)
                            .sum();
                        reply(json!({
                            "type": "resync", "agents": n, "reconnected": reconnected,
                            "resynced": resynced, "reconnected_unix_ms": reconnected_ms,
                            "resynced_unix_ms": unix_ns() as f64 / 1e6,
                            "redundant": redundant - t.marked_redundant,
                            "polled_from_unix_ms": started as f64 / 1e6,
                        }));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Some("stop") => {
                let fleet = t.fleet;
                let stopped = fleet.stop_all(Duration::from_secs(5)).await;
                reply(json!({"type": "stopped", "stopped": stopped}));
                return Ok(ExitCode::SUCCESS);
            }
            _ => reply(json!({"type": "error", "line": line})),
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// Parent: server, workers, phases, figures.

/// CPU seconds of all worker processes (the simulated agents share the machine's cores with the
/// server: the rollout's CPU budget is theirs and the server's together).
pub(super) fn workers_cpu(workers: &[Worker]) -> f64 {
    workers
        .iter()
        .filter_map(|w| super::harness::cpu_seconds(w.child.id()))
        .sum()
}

pub(super) struct Worker {
    pub(super) child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn send(&mut self, cmd: &str) -> anyhow::Result<()> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        Ok(())
    }
    fn recv(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("worker {} ended", self.child.id());
        }
        Ok(serde_json::from_str(&line)?)
    }
}

/// Worker `index` of `args`'s `P`, running `agents` agents against `url`.
pub(super) fn spawn_worker(
    exe: &std::path::Path,
    args: &Args,
    agents: usize,
    index: usize,
    url: &str,
    failover: &[String],
) -> anyhow::Result<Worker> {
    let p = args.processes.max(1);
    let mut command = Command::new(exe);
    command
        .args(["bench", "fleet", "--transport", &args.transport])
        .args(["--agents", &agents.to_string()])
        .args(["--ramp", &(args.ramp / p as f64).to_string()])
        .args(["--heartbeat", &crate::cli::duration::to_arg(args.heartbeat)])
        .args(["--connections", &(args.connections / p).max(1).to_string()])
        .args(["--worker-url", url, "--worker-index", &index.to_string()]);
    if !failover.is_empty() {
        command.args(["--worker-failover", &failover.join(",")]);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting a worker")?;
    let stdin = child.stdin.take().context("worker stdin")?;
    let stdout = BufReader::new(child.stdout.take().context("worker stdout")?);
    Ok(Worker {
        child,
        stdin,
        stdout,
    })
}

/// Sends `cmd` to every worker, then reads one answer from each (in a blocking thread so the
/// runtime keeps running).
/// Polls the server's status API every `every` until it shows `n` agents connected and
/// synced: when that was seen, or `None` after `timeout`.
async fn server_synced(
    server: &Server,
    client: &reqwest::Client,
    n: u64,
    timeout: Duration,
    every: Duration,
) -> Option<Instant> {
    let start = Instant::now();
    loop {
        if let Ok((c, s)) = server.agent_counts(client).await
            && c >= n
            && s >= n
        {
            return Some(Instant::now());
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

pub(super) async fn broadcast(workers: &mut Vec<Worker>, cmd: &str) -> anyhow::Result<Vec<Value>> {
    broadcast_to(workers, |_| true, cmd).await
}

/// [`broadcast`] to the workers whose index `pick` chooses.
pub(super) async fn broadcast_to(
    workers: &mut Vec<Worker>,
    pick: impl Fn(usize) -> bool,
    cmd: &str,
) -> anyhow::Result<Vec<Value>> {
    let picked: Vec<usize> = (0..workers.len()).filter(|&i| pick(i)).collect();
    for &i in &picked {
        workers[i].send(cmd)?;
    }
    let mut taken = std::mem::take(workers);
    let (taken, answers) = tokio::task::spawn_blocking(move || {
        let answers: anyhow::Result<Vec<Value>> = picked.iter().map(|&i| taken[i].recv()).collect();
        (taken, answers)
    })
    .await?;
    *workers = taken;
    answers
}

pub(super) fn sum(vals: &[Value], key: &str) -> u64 {
    vals.iter().map(|v| v[key].as_u64().unwrap_or(0)).sum()
}

/// Merged HTTP latency quantiles (ms) from the workers' quantile samples.
fn merged_latency(stats: &[Value]) -> (f64, f64) {
    let mut samples: Vec<u64> = Vec::new();
    for s in stats {
        if let Some(b) = s["lat_buckets"].as_array() {
            let weight = s["lat_count"].as_u64().unwrap_or(0);
            // Each worker's 1000 quantile points, repeated by its share of requests.
            let reps = (weight / 1000).clamp(1, 100);
            for pair in b {
                for _ in 0..reps {
                    samples.push(pair[0].as_u64().unwrap_or(0));
                }
            }
        }
    }
    samples.sort_unstable();
    (
        percentile(&samples, 0.5) as f64 / 1e3,
        percentile(&samples, 0.99) as f64 / 1e3,
    )
}

async fn parent(args: Args) -> anyhow::Result<ExitCode> {
    let p = args.processes.max(1);
    if args.transport == "ws" && args.agents / p > 19_000 {
        bail!(
            "{} agents per process is over what one process may hold here (ulimit -Hn); use --processes",
            args.agents / p
        );
    }
    let repo = BenchRepo::new()?;
    let mut server = Server::start(&repo, args.heartbeat)?;
    let client = reqwest::Client::new();
    // Let the server fetch and serve the first revision before any agent arrives.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let idle_rss = server.rss_kib();
    let cpu0 = server.cpu_seconds();
    println!(
        "server pid {} opamp={} api={}: idle RSS {idle_rss} KiB",
        server.pid, server.opamp, server.api
    );

    let exe = std::env::current_exe()?;
    let url = if args.transport == "ws" {
        format!("ws://{}/v1/opamp", server.opamp)
    } else {
        format!("http://{}/v1/opamp", server.opamp)
    };
    let mut workers = Vec::with_capacity(p);
    let ramp_start = Instant::now();
    for i in 0..p {
        let agents = args.agents / p + usize::from(i < args.agents % p);
        workers.push(spawn_worker(&exe, &args, agents, i, &url, &[])?);
    }
    let result = phases(
        &args,
        &repo,
        &mut server,
        &client,
        &mut workers,
        ramp_start,
        idle_rss,
        cpu0,
    )
    .await;
    let _ = broadcast(&mut workers, "stop").await;
    for w in &mut workers {
        let _ = w.child.kill();
        let _ = w.child.wait();
    }
    drop(server);
    let summary = result?;
    println!("RESULT {summary}");
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
async fn phases(
    args: &Args,
    repo: &BenchRepo,
    server: &mut Server,
    client: &reqwest::Client,
    workers: &mut Vec<Worker>,
    ramp_start: Instant,
    idle_rss: u64,
    cpu0: f64,
) -> anyhow::Result<Value> {
    let n = args.agents as u64;
    let timeout = args.timeout;
    // The workers' commands take milliseconds.
    let timeout_ms = timeout.as_millis();
    // Ramp: everyone connected and APPLIED the first configuration.
    let answers = broadcast(workers, &format!("wait-gen 1 {timeout_ms}")).await?;
    let ramp_secs = ramp_start.elapsed().as_secs_f64();
    let applied = sum(&answers, "done");
    if applied < n {
        bail!(
            "only {applied} of {n} agents applied their first config within {}",
            crate::cli::duration::to_arg(timeout)
        );
    }
    let cpu_ramp = server.cpu_seconds() - cpu0;
    println!(
        "ramp: {n} agents connected and applied in {ramp_secs:.1} s ({:.0} agents/s); server CPU {cpu_ramp:.1} s",
        n as f64 / ramp_secs
    );
    // Let the first heartbeats after connect settle, then measure the steady state.
    tokio::time::sleep(Duration::from_secs(2)).await;
    broadcast(workers, "reset-latency").await?;
    let s0 = broadcast(workers, "stats").await?;
    let plans_ramp = server.plan_stats(client).await;
    println!(
        "plans so far: {} taking {:.2} s in total ({:.1} ms each)",
        plans_ramp.0,
        plans_ramp.1,
        1e3 * plans_ramp.1 / plans_ramp.0.max(1) as f64
    );
    let (rss_a, cpu_a, t_a) = (server.rss_kib(), server.cpu_seconds(), Instant::now());
    tokio::time::sleep(args.duration).await;
    let s1 = broadcast(workers, "stats").await?;
    let (rss_b, cpu_b, window) = (
        server.rss_kib(),
        server.cpu_seconds(),
        t_a.elapsed().as_secs_f64(),
    );
    let msgs =
        (sum(&s1, "sent") + sum(&s1, "received")) - (sum(&s0, "sent") + sum(&s0, "received"));
    let requests = sum(&s1, "requests") - sum(&s0, "requests");
    let (lat_p50, lat_p99) = merged_latency(&s1);
    let rss = rss_a.max(rss_b);
    let kib_per_agent = (rss.saturating_sub(idle_rss)) as f64 / n as f64;
    let steady_cpu = cpu_b - cpu_a;
    println!(
        "steady {window:.0} s: server RSS {rss} KiB ({idle_rss} idle) = {kib_per_agent:.1} KiB/agent; \
         CPU {steady_cpu:.2} s ({:.1} %); {:.0} messages/s; {:.0} requests/s; connected {}",
        100.0 * steady_cpu / window,
        msgs as f64 / window,
        requests as f64 / window,
        sum(&s1, "connected"),
    );
    if args.transport == "http" {
        println!(
            "HTTP request latency (exchange on a pooled connection): p50 {lat_p50:.2} ms, p99 {lat_p99:.2} ms"
        );
    }
    let plans_steady = server.plan_stats(client).await;
    let plan_delta = |a: (u64, f64), b: (u64, f64)| {
        json!({"plans": b.0.saturating_sub(a.0), "plan_s": b.1 - a.1,
               "plan_ms_each": 1e3 * (b.1 - a.1) / (b.0.saturating_sub(a.0)).max(1) as f64})
    };
    println!(
        "steady plans: {}; redundant pushes so far {}; transport errors so far {}",
        plan_delta(plans_ramp, plans_steady),
        sum(&s1, "redundant"),
        sum(&s1, "errors")
    );
    let mut summary = json!({
        "ramp_plans": plan_delta((0, 0.0), plans_ramp), "steady_plans": plan_delta(plans_ramp, plans_steady),
        "transport": args.transport, "agents": n, "processes": args.processes,
        "connections": if args.transport == "http" { json!(args.connections) } else { Value::Null },
        "heartbeat_s": args.heartbeat.as_secs_f64(), "ramp_s": ramp_secs, "connect_rate": n as f64 / ramp_secs,
        "idle_rss_kib": idle_rss, "rss_kib": rss, "kib_per_agent": kib_per_agent,
        "ramp_cpu_s": cpu_ramp, "steady_cpu_s": steady_cpu, "window_s": window,
        "messages_per_s": msgs as f64 / window, "requests_per_s": requests as f64 / window,
        "lat_p50_ms": lat_p50, "lat_p99_ms": lat_p99,
    });

    if args.rollout {
        repo.commit_staging_change("rollout")?;
        let cpu_r = server.cpu_seconds();
        let workers_cpu_r = workers_cpu(workers);
        let fired = unix_ns() as f64 / 1e6;
        server.webhook(client).await?;
        let answers = broadcast(workers, &format!("wait-gen 2 {timeout_ms}")).await?;
        let done = sum(&answers, "done");
        let mut lat: Vec<f64> = answers
            .iter()
            .flat_map(|a| a["applied_unix_ms"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_f64())
            .map(|at| at - fired)
            .collect();
        lat.sort_by(f64::total_cmp);
        let (first, p10, p50, p90, p99, max) = (
            percentile(&lat, 0.0),
            percentile(&lat, 0.1),
            percentile(&lat, 0.5),
            percentile(&lat, 0.9),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0),
        );
        let cpu = server.cpu_seconds() - cpu_r;
        let workers_cpu = workers_cpu(workers) - workers_cpu_r;
        // The server's side: its acknowledgements answered and planned, every agent synced in
        // its status, and the CPU that took (the figure above stops at the last APPLIED).
        let synced_ms = server_synced(server, client, n, timeout, Duration::from_millis(50))
            .await
            .map(|_| unix_ns() as f64 / 1e6 - fired);
        let cpu_synced = server.cpu_seconds() - cpu_r;
        let plans = plan_delta(plans_steady, server.plan_stats(client).await);
        let after = broadcast(workers, "stats").await?;
        println!(
            "rollout plans: {plans}; redundant pushes so far {}; transport errors so far {}",
            sum(&after, "redundant"),
            sum(&after, "errors")
        );
        println!(
            "rollout: webhook -> APPLIED on {done}/{n} agents: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms (first {first:.0}, p10 {p10:.0}, p90 {p90:.0}); server CPU {cpu:.2} s, agents' CPU {workers_cpu:.2} s; RSS {} KiB",
            server.rss_kib()
        );
        println!(
            "rollout: server saw all {n} synced {} ms after the webhook; server CPU until then {cpu_synced:.2} s",
            synced_ms.map_or("-".to_string(), |m| format!("{m:.0}")),
        );
        summary["rollout"] = json!({
            "done": done, "first_ms": first, "p50_ms": p50, "p99_ms": p99, "max_ms": max,
            "cpu_s": cpu, "agents_cpu_s": workers_cpu,
            "server_synced_ms": synced_ms, "cpu_to_synced_s": cpu_synced,
        });
    }

    if args.restart {
        broadcast(workers, "mark").await?;
        let killed = Instant::now();
        server.kill_and_restart()?;
        let up_ms = killed.elapsed().as_secs_f64() * 1e3;
        let killed_ms = unix_ns() as f64 / 1e6 - up_ms;
        // The server side: poll the status API until every agent is connected and synced.
        let start = Instant::now();
        let server_side = async {
            server_synced(server, client, n, timeout, Duration::from_millis(1000))
                .await
                .map(|at| (at - start).as_secs_f64() * 1e3 + up_ms)
        };
        let resync_cmd = format!("wait-resync {timeout_ms}");
        let (answers, synced_ms) = tokio::join!(broadcast(workers, &resync_cmd), server_side);
        let answers = answers?;
        let max_of = |key: &str| {
            answers
                .iter()
                .filter_map(|a| a[key].as_f64())
                .fold(f64::NAN, f64::max)
                - killed_ms
        };
        let reconnected = max_of("reconnected_unix_ms");
        let resynced = max_of("resynced_unix_ms");
        let redundant = sum(&answers, "redundant");
        let cpu = server.cpu_seconds();
        let plans = plan_delta((0, 0.0), server.plan_stats(client).await);
        println!("restart plans: {plans}");
        println!(
            "restart: server back in {up_ms:.0} ms; all {} reconnected {reconnected:.0} ms and re-sent full state {resynced:.0} ms after kill -9 \
             ({} of {n} resynced); server saw all synced after {} ms; redundant pushes {redundant}; CPU since restart {cpu:.2} s; RSS {} KiB",
            sum(&answers, "reconnected"),
            sum(&answers, "resynced"),
            synced_ms.map_or("-".to_string(), |m| format!("{m:.0}")),
            server.rss_kib(),
        );
        summary["restart"] = json!({
            "server_up_ms": up_ms, "reconnected_ms": reconnected, "resynced_ms": resynced,
            "resynced": sum(&answers, "resynced"), "server_synced_ms": synced_ms,
            "redundant_pushes": redundant, "cpu_s": cpu, "rss_kib": server.rss_kib(), "plans": plans,
        });
    }
    let last = broadcast(workers, "stats").await?;
    summary["redundant_pushes_total"] = json!(sum(&last, "redundant"));
    summary["transport_errors"] = json!(sum(&last, "errors"));
    Ok(summary)
}

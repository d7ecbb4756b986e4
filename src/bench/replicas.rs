//! `gitamp bench fleet --replicas N --store postgres://…`: the fleet benchmark against N
//! `gitamp serve` replicas sharing one PostgreSQL database.
//!
//! Same workers and phases as the one-server benchmark (ramp, steady state, `--rollout`), with
//! figures per replica (RSS per agent it holds, CPU) and the database's share: PostgreSQL's
//! CPU (its server processes, found through `pg_stat_activity`) and rows written per second
//! (`pg_stat_database`). Worker i talks to replica i mod N directly (no balancer: the
//! balancer's failover is what tests/replicas_balancer.rs checks); its WebSocket agents know
//! the other replicas' addresses and fail over to them by themselves, which `--kill-one`
//! measures (a balancer in front of 60,000 agents would need two sockets per agent, past the
//! 20,000 files a process may open here).

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use sqlx::Connection as _;

use super::fleet::{
    Args, Worker, broadcast, broadcast_to, spawn_worker, sum, unix_ns, workers_cpu,
};
use super::harness::{BenchRepo, MachineCpu, Server, cpu_seconds, percentile};

/// The database the benchmark makes (dropped and made again at each run: replicas refuse a
/// database that served another repository, and each run makes a new one).
const DATABASE: &str = "gitamp_bench_fleet";

/// A view of PostgreSQL for the figures: its processes' CPU and the rows written.
struct Database {
    conn: sqlx::PgConnection,
}

impl Database {
    /// CPU seconds of each PostgreSQL server process (backends, background workers and the
    /// postmaster, their parent).
    async fn cpu(&mut self) -> HashMap<u32, f64> {
        let pids: Vec<i32> = sqlx::query_scalar("SELECT pid FROM pg_stat_activity")
            .fetch_all(&mut self.conn)
            .await
            .unwrap_or_default();
        let mut out = HashMap::new();
        for pid in pids {
            let pid = pid as u32;
            if let Some(c) = cpu_seconds(pid) {
                out.insert(pid, c);
            }
            if let Some(parent) = parent_of(pid)
                && let Some(c) = cpu_seconds(parent)
            {
                out.insert(parent, c);
            }
        }
        out
    }

    async fn rows_written(&mut self) -> i64 {
        sqlx::query_scalar(
            "SELECT (tup_inserted + tup_updated + tup_deleted)::bigint FROM pg_stat_database \
             WHERE datname = current_database()",
        )
        .fetch_one(&mut self.conn)
        .await
        .unwrap_or(0)
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// CPU used between two [`Database::cpu`] samples (a process new since `a` counts whole).
fn cpu_between(a: &HashMap<u32, f64>, b: &HashMap<u32, f64>) -> f64 {
    b.iter()
        .map(|(pid, cb)| cb - a.get(pid).copied().unwrap_or(0.0))
        .filter(|d| *d > 0.0)
        .sum()
}

/// `admin` with its database replaced by `name`.
fn database_url(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin, String::new()),
    };
    let root = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    format!("{root}/{name}{query}")
}

pub async fn parent(args: Args) -> anyhow::Result<ExitCode> {
    let r = args.replicas;
    let p = args.processes.max(1);
    if p < r {
        bail!("--processes {p} is fewer than --replicas {r}: every replica needs a worker");
    }
    if args.transport == "ws" && args.agents / p > 19_000 {
        bail!(
            "{} agents per process is over what one process may hold here (ulimit -Hn); use --processes",
            args.agents / p
        );
    }
    if args.restart {
        bail!("--restart is for one server; with --replicas, --kill-one kills a replica");
    }
    if args.kill_one && (args.transport != "ws" || r < 2) {
        bail!("--kill-one needs WebSocket agents and at least 2 replicas");
    }
    let admin = args
        .store
        .clone()
        .context("--replicas needs --store postgres://… (or GITAMP_BENCH_STORE)")?;
    {
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .with_context(|| format!("connecting to {}", crate::source::redact_url(&admin)))?;
        for sql in [
            format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"),
            format!("CREATE DATABASE {DATABASE}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .context("making the benchmark's database")?;
        }
        let _ = conn.close().await;
    }
    let url = database_url(&admin, DATABASE);
    let mut db = Database {
        conn: sqlx::PgConnection::connect(&url).await?,
    };

    let repo = BenchRepo::new()?;
    let mut servers = Vec::with_capacity(r);
    for i in 0..r {
        servers.push(Server::start_replica(&repo, args.heartbeat, Some(&url), i)?);
    }
    let client = reqwest::Client::new();
    // Leadership, and the first revision served everywhere, before any agent arrives.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let idle: Vec<u64> = servers.iter().map(Server::rss_kib).collect();
    println!(
        "{r} replicas on PostgreSQL ({}): idle RSS {idle:?} KiB",
        crate::source::redact_url(&url)
    );

    let exe = std::env::current_exe()?;
    let scheme = if args.transport == "ws" { "ws" } else { "http" };
    let mut workers: Vec<Worker> = Vec::with_capacity(p);
    let mut held = vec![0usize; r];
    let ramp_start = Instant::now();
    for i in 0..p {
        let agents = args.agents / p + usize::from(i < args.agents % p);
        held[i % r] += agents;
        let target = format!("{scheme}://{}/v1/opamp", servers[i % r].opamp);
        // The other replicas, from the next one on (each agent starts at its own offset).
        let failover: Vec<String> = match args.transport.as_str() {
            "ws" => (1..r)
                .map(|k| format!("ws://{}/v1/opamp", servers[(i + k) % r].opamp))
                .collect(),
            _ => Vec::new(),
        };
        workers.push(spawn_worker(&exe, &args, agents, i, &target, &failover)?);
    }
    let result = phases(
        &args,
        &repo,
        &mut servers,
        &held,
        &idle,
        &client,
        &mut workers,
        &mut db,
        ramp_start,
    )
    .await;
    let _ = broadcast(&mut workers, "stop").await;
    for w in &mut workers {
        let _ = w.child.kill();
        let _ = w.child.wait();
    }
    drop(servers);
    let summary = result?;
    println!("RESULT {summary}");
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
async fn phases(
    args: &Args,
    repo: &BenchRepo,
    servers: &mut [Server],
    held: &[usize],
    idle: &[u64],
    client: &reqwest::Client,
    workers: &mut Vec<Worker>,
    db: &mut Database,
    ramp_start: Instant,
) -> anyhow::Result<serde_json::Value> {
    let n = args.agents as u64;
    let timeout_ms = args.timeout.as_millis();
    let cpu = |s: &[Server]| -> Vec<f64> { s.iter().map(Server::cpu_seconds).collect() };
    let answers = broadcast(workers, &format!("wait-gen 1 {timeout_ms}")).await?;
    let ramp_secs = ramp_start.elapsed().as_secs_f64();
    let applied = sum(&answers, "done");
    if applied < n {
        bail!("only {applied} of {n} agents applied their first config");
    }
    println!(
        "ramp: {n} agents over {} replicas connected and applied in {ramp_secs:.1} s ({:.0} agents/s)",
        servers.len(),
        n as f64 / ramp_secs
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Steady state.
    let (cpu_a, pg_a, rows_a, t_a) = (
        cpu(servers),
        db.cpu().await,
        db.rows_written().await,
        Instant::now(),
    );
    tokio::time::sleep(args.duration).await;
    let window = t_a.elapsed().as_secs_f64();
    let (cpu_b, pg_b, rows_b) = (cpu(servers), db.cpu().await, db.rows_written().await);
    let rss: Vec<u64> = servers.iter().map(Server::rss_kib).collect();
    let per_agent = kib_per_agent(&rss, idle, held);
    // The peak so far (`VmHWM`) is the ramp's: set against the rollout's peak below, it says
    // which of the two raised it.
    let ramp_peak: Vec<u64> = servers.iter().map(Server::peak_rss_kib).collect();
    let ramp_peak_per_agent = rounded(&kib_per_agent(&ramp_peak, idle, held));
    let replica_cpu: f64 = cpu_b.iter().zip(&cpu_a).map(|(b, a)| b - a).sum();
    let pg_cpu = cpu_between(&pg_a, &pg_b);
    let rows_per_s = (rows_b - rows_a) as f64 / window;
    let max_per_agent = per_agent.iter().copied().fold(0.0, f64::max);
    println!(
        "steady {window:.0} s: RSS per replica {rss:?} KiB = {:?} KiB/agent held (max {max_per_agent:.1}; \
         peak so far {ramp_peak_per_agent:?}); replicas' CPU {replica_cpu:.2} s ({:.1} %), PostgreSQL CPU \
         {pg_cpu:.2} s ({:.1} %); {rows_per_s:.0} rows written/s",
        rounded(&per_agent),
        100.0 * replica_cpu / window,
        100.0 * pg_cpu / window,
    );
    let mut summary = json!({
        "transport": args.transport, "agents": n, "replicas": servers.len(),
        "processes": args.processes, "ramp_s": ramp_secs, "held": held,
        "idle_rss_kib": idle, "rss_kib": rss, "kib_per_agent": per_agent,
        "max_kib_per_agent": max_per_agent, "ramp_peak_rss_kib": ramp_peak,
        "steady_replicas_cpu_s": replica_cpu,
        "steady_pg_cpu_s": pg_cpu, "steady_rows_per_s": rows_per_s, "window_s": window,
    });

    if args.rollout {
        repo.commit_staging_change("rollout")?;
        let (cpu_r, pg_r, rows_r, wcpu_r) = (
            cpu(servers),
            db.cpu().await,
            db.rows_written().await,
            workers_cpu(workers),
        );
        let machine = MachineCpu::now();
        let fired = unix_ns() as f64 / 1e6;
        let started = Instant::now();
        // Any replica may take the webhook; a follower relays it to the leader.
        servers[0].webhook(client).await?;
        let answers = broadcast(workers, &format!("wait-gen 2 {timeout_ms}")).await?;
        let took = started.elapsed().as_secs_f64();
        let (busy, stolen) = match (machine, MachineCpu::now()) {
            (Some(a), Some(b)) => a.shares(&b),
            _ => (f64::NAN, f64::NAN),
        };
        let done = sum(&answers, "done");
        let mut lat: Vec<f64> = answers
            .iter()
            .flat_map(|a| a["applied_unix_ms"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_f64())
            .map(|at| at - fired)
            .collect();
        lat.sort_by(f64::total_cmp);
        // Worker i talks to replica i mod N: each replica's own p99 shows whether the tail is
        // one replica's (the leader's, busy reading the fleet's rows) or everyone's.
        let mut by_replica: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
        for (i, a) in answers.iter().enumerate() {
            let mine = a["applied_unix_ms"].as_array().cloned().unwrap_or_default();
            by_replica[i % servers.len()]
                .extend(mine.iter().filter_map(|v| v.as_f64()).map(|at| at - fired));
        }
        let p99_by_replica: Vec<f64> = by_replica
            .iter_mut()
            .map(|l| {
                l.sort_by(f64::total_cmp);
                percentile(l, 0.99).round()
            })
            .collect();
        let (first, p10, p50, p90, p99, max) = (
            percentile(&lat, 0.0),
            percentile(&lat, 0.1),
            percentile(&lat, 0.5),
            percentile(&lat, 0.9),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0),
        );
        // Let the replicas' write-behind batches land before counting rows.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let window = started.elapsed().as_secs_f64();
        let replicas_cpu: f64 = cpu(servers).iter().zip(&cpu_r).map(|(b, a)| b - a).sum();
        let pg_cpu = cpu_between(&pg_r, &db.cpu().await);
        let rows = db.rows_written().await - rows_r;
        let after = broadcast(workers, "stats").await?;
        let agents_cpu = workers_cpu(workers) - wcpu_r;
        // The leader reads every agent's row when a revision comes: what that costs shows in
        // the peak, not in the steady RSS above.
        let peak: Vec<u64> = servers.iter().map(Server::peak_rss_kib).collect();
        let peak_per_agent = rounded(&kib_per_agent(&peak, idle, held));
        println!(
            "rollout: webhook -> APPLIED on {done}/{n} agents: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms \
             (first {first:.0}, p10 {p10:.0}, p90 {p90:.0}; {took:.1} s; machine {busy:.0} % busy, \
             {stolen:.1} % stolen by the hypervisor; p99 by replica {p99_by_replica:?}); replicas' CPU {replicas_cpu:.2} s, PostgreSQL CPU {pg_cpu:.2} s ({:.0} % of the replicas'), agents' CPU {:.2} s; \
             {rows} rows written ({:.0}/s over {window:.1} s); redundant pushes {}; \
             peak RSS per replica so far {peak_per_agent:?} KiB/agent held",
            100.0 * pg_cpu / replicas_cpu.max(1e-9),
            agents_cpu,
            rows as f64 / window,
            sum(&after, "redundant"),
        );
        summary["rollout"] = json!({
            "done": done, "first_ms": first, "p10_ms": p10, "p50_ms": p50, "p90_ms": p90,
            "p99_ms": p99, "max_ms": max, "machine_busy_pct": busy, "machine_stolen_pct": stolen,
            "p99_ms_by_replica": p99_by_replica,
            "replicas_cpu_s": replicas_cpu, "pg_cpu_s": pg_cpu, "rows": rows,
            "rows_per_s": rows as f64 / window, "peak_rss_kib": peak,
            "peak_kib_per_agent": peak_per_agent,
        });
    }
    if args.kill_one {
        summary["kill_one"] = kill_one(args, servers, held, client, workers, db).await?;
    }
    let last = broadcast(workers, "stats").await?;
    summary["redundant_pushes_total"] = json!(sum(&last, "redundant"));
    summary["transport_errors"] = json!(sum(&last, "errors"));
    Ok(summary)
}

/// Whether replica `s` says it leads.
async fn is_leader(s: &Server, client: &reqwest::Client) -> anyhow::Result<bool> {
    let status: serde_json::Value = client
        .get(format!("http://{}/api/v1/status", s.api))
        .send()
        .await?
        .json()
        .await?;
    Ok(status["cluster"]["leader"] == true)
}

/// kill -9 of one follower: the time until every one of its agents connected to another
/// replica and re-sent its full state there (the agents' side), until the survivors' status
/// counts the whole fleet connected and synced (the servers' side), and the pushes that were
/// not needed (the agents ran the served config all along: every push is redundant).
async fn kill_one(
    args: &Args,
    servers: &mut [Server],
    held: &[usize],
    client: &reqwest::Client,
    workers: &mut Vec<Worker>,
    db: &mut Database,
) -> anyhow::Result<serde_json::Value> {
    let r = servers.len();
    let n = args.agents as u64;
    // A follower: a leader's death adds an election (tests/replicas.rs measures that one).
    let mut victim = None;
    for i in (0..r).rev() {
        if !is_leader(&servers[i], client).await? {
            victim = Some(i);
            break;
        }
    }
    let v = victim.context("no follower to kill")?;
    let survivors: Vec<usize> = (0..r).filter(|&i| i != v).collect();
    let theirs = |w: usize| w % r == v;
    broadcast_to(workers, theirs, "mark").await?;
    let before = broadcast(workers, "stats").await?;
    let cpu = |s: &[Server]| -> f64 { survivors.iter().map(|&i| s[i].cpu_seconds()).sum() };
    let (cpu_k, pg_k, rows_k, wcpu_k) = (
        cpu(servers),
        db.cpu().await,
        db.rows_written().await,
        workers_cpu(workers),
    );
    let killed_ms = unix_ns() as f64 / 1e6;
    let killed = Instant::now();
    let _ = servers[v].child.kill();
    let _ = servers[v].child.wait();
    let timeout = args.timeout;
    let survivors_ref = &survivors;
    let servers_ref = &*servers;
    // The servers' side: every agent connected and synced on the survivors.
    let server_side = async move {
        loop {
            let (mut connected, mut synced) = (0, 0);
            for &i in survivors_ref {
                if let Ok((c, s)) = servers_ref[i].agent_counts(client).await {
                    connected += c;
                    synced += s;
                }
            }
            if connected >= n && synced >= n {
                return Some(killed.elapsed().as_secs_f64() * 1e3);
            }
            if killed.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let cmd = format!("wait-resync {}", timeout.as_millis());
    let (answers, synced_ms) = tokio::join!(broadcast_to(workers, theirs, &cmd), server_side);
    let answers = answers?;
    let latest = |key: &str| {
        answers
            .iter()
            .filter_map(|a| a[key].as_f64())
            .fold(f64::NAN, f64::max)
            - killed_ms
    };
    let (reconnected_ms, resynced_ms) = (latest("reconnected_unix_ms"), latest("resynced_unix_ms"));
    let moved = sum(&answers, "agents");
    let resynced = sum(&answers, "resynced");
    let after = broadcast(workers, "stats").await?;
    let redundant = sum(&after, "redundant").saturating_sub(sum(&before, "redundant"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = killed.elapsed().as_secs_f64();
    let replicas_cpu = cpu(servers) - cpu_k;
    let pg_cpu = cpu_between(&pg_k, &db.cpu().await);
    let rows = db.rows_written().await - rows_k;
    let agents_cpu = workers_cpu(workers) - wcpu_k;
    let rss: Vec<u64> = survivors.iter().map(|&i| servers[i].rss_kib()).collect();
    println!(
        "kill -9 of follower {v} ({} agents): all reconnected elsewhere {reconnected_ms:.0} ms and re-sent full state {resynced_ms:.0} ms after \
         ({resynced} of {moved} re-synced); survivors saw all {n} connected and synced after {} ms; redundant pushes {redundant}; \
         survivors' CPU {replicas_cpu:.2} s, PostgreSQL CPU {pg_cpu:.2} s, agents' CPU {agents_cpu:.2} s; {rows} rows written ({:.0}/s over {window:.1} s); \
         survivors' RSS {rss:?} KiB",
        held[v],
        synced_ms.map_or("-".to_string(), |m| format!("{m:.0}")),
        rows as f64 / window,
    );
    Ok(json!({
        "victim": v, "moved": moved, "resynced": resynced, "reconnected_ms": reconnected_ms,
        "resynced_ms": resynced_ms, "servers_synced_ms": synced_ms, "redundant_pushes": redundant,
        "replicas_cpu_s": replicas_cpu, "pg_cpu_s": pg_cpu, "agents_cpu_s": agents_cpu,
        "rows": rows, "survivors_rss_kib": rss,
    }))
}

/// Each replica's resident KiB above its idle figure, per agent it holds.
fn kib_per_agent(kib: &[u64], idle: &[u64], held: &[usize]) -> Vec<f64> {
    kib.iter()
        .zip(idle)
        .zip(held)
        .map(|((k, i), h)| k.saturating_sub(*i) as f64 / (*h).max(1) as f64)
        .collect()
}

/// To one decimal, for printing.
fn rounded(values: &[f64]) -> Vec<f64> {
    values.iter().map(|v| (v * 10.0).round() / 10.0).collect()
}

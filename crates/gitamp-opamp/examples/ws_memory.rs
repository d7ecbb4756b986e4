//! Load side of the "server memory per idle WebSocket agent" measurement.
//!
//! Connects N simulated agents over WebSocket to a server running in *another* process
//! (`cargo run --release --example opamp_server`), so the server's RSS is not mixed with the
//! agents'. Source addresses are spread over 127.0.0.2..=127.0.0.(1+ips) so no single address
//! runs out of ephemeral ports. Prints the connect rate, then idles with heartbeats and prints
//! messages per second. With `--server-pid` it also reads the server's VmRSS from /proc before
//! and after connecting and prints KiB per agent.
//!
//! ```text
//! cargo run --release -p gitamp-opamp --example opamp_server -- --port 4320 &
//! cargo run --release -p gitamp-opamp --example ws_memory -- \
//!     --url ws://127.0.0.1:4320/v1/opamp --agents 10000 --ips 20 --heartbeat-ms 1000 \
//!     --idle-secs 20 --server-pid <pid printed by opamp_server>
//! ```
//!
//! Bounded by design: loopback targets only, at most 19,000 agents (the per-process open-file
//! limit here is 20,000), and it stops by itself after the idle period.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use gitamp_opamp::agent::{FleetTransport, SimFleet, SimFleetOptions, caps, run_fleet};

const MAX_AGENTS: usize = 19_000;

struct Args {
    url: String,
    agents: usize,
    ips: u8,
    ramp: f64,
    heartbeat_ms: u64,
    idle_secs: u64,
    server_pid: Option<u32>,
    connect_timeout_secs: u64,
}

fn usage() -> ! {
    eprintln!(
        "usage: ws_memory --url ws://127.0.0.1:PORT/v1/opamp [--agents N] [--ips K] \
         [--ramp PER_SEC] [--heartbeat-ms MS] [--idle-secs S] [--server-pid PID] \
         [--connect-timeout-secs S]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        url: String::new(),
        agents: 1000,
        ips: 20,
        ramp: 0.0,
        heartbeat_ms: 30_000,
        idle_secs: 10,
        server_pid: None,
        connect_timeout_secs: 120,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--url" => a.url = v(),
            "--agents" => a.agents = v().parse().unwrap_or_else(|_| usage()),
            "--ips" => a.ips = v().parse().unwrap_or_else(|_| usage()),
            "--ramp" => a.ramp = v().parse().unwrap_or_else(|_| usage()),
            "--heartbeat-ms" => a.heartbeat_ms = v().parse().unwrap_or_else(|_| usage()),
            "--idle-secs" => a.idle_secs = v().parse().unwrap_or_else(|_| usage()),
            "--server-pid" => a.server_pid = Some(v().parse().unwrap_or_else(|_| usage())),
            "--connect-timeout-secs" => {
                a.connect_timeout_secs = v().parse().unwrap_or_else(|_| usage())
            }
            _ => usage(),
        }
    }
    if a.url.is_empty() || a.agents == 0 || a.ips == 0 || a.ips > 250 {
        usage();
    }
    if a.agents > MAX_AGENTS {
        eprintln!("--agents capped at {MAX_AGENTS} (open-file limit)");
        a.agents = MAX_AGENTS;
    }
    // Loopback only: this tool is a load generator.
    let host_ok = a
        .url
        .split("://")
        .nth(1)
        .and_then(|r| r.split(['/', ':']).next())
        .is_some_and(|h| {
            h == "localhost" || h.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
        });
    if !host_ok {
        eprintln!("refusing a non-loopback target: {}", a.url);
        std::process::exit(2);
    }
    a
}

/// VmRSS of a process in KiB, from /proc.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn totals(fleet: &SimFleet) -> (u64, u64) {
    fleet.agents.iter().fold((0, 0), |(s, r), a| {
        let st = a.subscribe();
        let st = st.borrow();
        (s + st.messages_sent, r + st.messages_received)
    })
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let ips: Vec<IpAddr> = (0..args.ips)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i)))
        .collect();
    let rss0 = args.server_pid.and_then(rss_kib);
    if let Some(r) = rss0 {
        println!("server_rss_before_kib={r}");
    }

    let opts = SimFleetOptions {
        ramp_per_sec: args.ramp,
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms),
        capabilities: caps::FULL,
        environment: "load".to_owned(),
        host_prefix: "ws-mem".to_owned(),
        ..SimFleetOptions::default()
    };
    let t0 = Instant::now();
    let fleet = match run_fleet(
        args.agents,
        FleetTransport::WebSocket { source_ips: ips },
        &args.url,
        opts,
    ) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot start: {e}");
            std::process::exit(1);
        }
    };
    // Connected = the server answered the first message.
    let up = fleet
        .wait_all(Duration::from_secs(args.connect_timeout_secs), |s| {
            s.connected && s.messages_received > 0
        })
        .await;
    let connect_secs = t0.elapsed().as_secs_f64();
    let ok = fleet.count(|s| s.connected && s.messages_received > 0);
    println!(
        "agents={} connected={ok} connect_secs={connect_secs:.2} connect_rate_per_sec={:.0}",
        args.agents,
        ok as f64 / connect_secs
    );
    if let Err(missing) = up {
        let sample = fleet
            .agents
            .iter()
            .find(|a| !a.state().connected)
            .and_then(|a| a.state().last_error);
        println!("not_connected={missing} example_error={sample:?}");
    }

    // Let the server settle (first-message work, allocator) before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = args.server_pid.and_then(rss_kib);

    let (s0, r0) = totals(&fleet);
    let t1 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let (s1, r1) = totals(&fleet);
    let dt = t1.elapsed().as_secs_f64();
    let rss2 = args.server_pid.and_then(rss_kib);
    println!(
        "idle_secs={dt:.1} heartbeat_ms={} sent_per_sec={:.0} received_per_sec={:.0}",
        args.heartbeat_ms,
        (s1 - s0) as f64 / dt,
        (r1 - r0) as f64 / dt
    );
    if let (Some(b), Some(a1), Some(a2)) = (rss0, rss1, rss2) {
        let per = |a: u64| (a.saturating_sub(b)) as f64 / ok.max(1) as f64;
        println!(
            "server_rss_after_connect_kib={a1} server_rss_after_idle_kib={a2} \
             kib_per_agent_connect={:.1} kib_per_agent_idle={:.1}",
            per(a1),
            per(a2)
        );
    }
    let stopped = fleet.stop_all(Duration::from_secs(20)).await;
    println!("stopped={stopped}");
}

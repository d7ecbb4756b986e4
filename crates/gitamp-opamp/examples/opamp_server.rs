//! A minimal OpAMP server process (router + fleet registry, no Git), for measurements that
//! need the server alone in its process: its RSS is read from /proc by the caller while
//! `ws_memory` connects agents from another process.
//!
//! Prints `pid=<pid> url=ws://host:port/v1/opamp` on its first line, then a fleet summary every
//! `--report-secs`. With `--config-bytes N` every agent that connects is assigned one shared
//! desired config of about N bytes (to measure with a config in flight). Ends by itself after
//! `--max-secs`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gitamp_opamp::{Fleet, FleetEvent, RemoteConfig};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::error::RecvError;

struct Args {
    bind: String,
    port: u16,
    config_bytes: usize,
    report_secs: u64,
    max_secs: u64,
    heartbeat_secs: u64,
}

fn usage() -> ! {
    eprintln!(
        "usage: opamp_server [--bind 127.0.0.1] [--port 4320] [--config-bytes N] \
         [--report-secs S] [--max-secs S] [--heartbeat-secs S]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        bind: "127.0.0.1".to_owned(),
        port: 4320,
        config_bytes: 0,
        report_secs: 10,
        max_secs: 3600,
        heartbeat_secs: 30,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--bind" => a.bind = v,
            "--port" => a.port = v.parse().unwrap_or_else(|_| usage()),
            "--config-bytes" => a.config_bytes = v.parse().unwrap_or_else(|_| usage()),
            "--report-secs" => a.report_secs = v.parse().unwrap_or_else(|_| usage()),
            "--max-secs" => a.max_secs = v.parse().unwrap_or_else(|_| usage()),
            "--heartbeat-secs" => a.heartbeat_secs = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    a
}

fn demo_config(size: usize) -> Arc<RemoteConfig> {
    let mut body = String::from("receivers:\n  otlp:\n    protocols:\n      grpc: {}\n");
    while body.len() < size {
        body.push_str("# padding padding padding padding padding padding padding\n");
    }
    let mut map = BTreeMap::new();
    map.insert(String::new(), (Bytes::from(body), "text/yaml".to_owned()));
    let mut h = Sha256::new();
    for (k, (b, ct)) in &map {
        for part in [k.as_bytes(), ct.as_bytes(), &b[..]] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&h.finalize());
    Arc::new(RemoteConfig::new(map, hash))
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let fleet = Arc::new(Fleet::new());
    let settings = gitamp_opamp::OpampSettings {
        heartbeat_interval: Duration::from_secs(args.heartbeat_secs),
        ..Default::default()
    };
    let app = gitamp_opamp::server::router(fleet.clone(), settings);
    let listener = match tokio::net::TcpListener::bind((args.bind.as_str(), args.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bind {}:{}: {e}", args.bind, args.port);
            std::process::exit(1);
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!("pid={} url=ws://{addr}/v1/opamp", std::process::id());
    let _ = std::io::stdout().flush();

    if args.config_bytes > 0 {
        let cfg = demo_config(args.config_bytes);
        let mut events = fleet.subscribe();
        let f = fleet.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(FleetEvent::Connected(uid)) => {
                        f.deliver(&uid, Some(cfg.clone()));
                    }
                    Ok(_) => {}
                    // Missed events: assign to everyone known instead.
                    Err(RecvError::Lagged(_)) => {
                        for a in f.agents() {
                            f.deliver(&a.uid, Some(cfg.clone()));
                        }
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }

    // The router runs the liveness sweeper itself (3 × heartbeat interval).
    let f = fleet.clone();
    let report = args.report_secs.max(1);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(report));
        loop {
            tick.tick().await;
            let all = f.agents();
            let connected = all.iter().filter(|a| a.connection.connected).count();
            println!("agents={} connected={connected}", all.len());
            let _ = std::io::stdout().flush();
        }
    });

    let serve = gitamp_opamp::server::serve(listener, app, None);
    tokio::select! {
        r = serve => {
            if let Err(e) = r {
                eprintln!("serve: {e}");
            }
        }
        _ = tokio::time::sleep(Duration::from_secs(args.max_secs)) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

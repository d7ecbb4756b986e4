//! `gitamp bench repo [--resources 5000] [--iterations 5]`: how fast one revision compiles.
//!
//! Generates, in memory, a repository shaped like a large real one (the example repository's
//! types; about half sources, a quarter processors, a quarter destinations; one configuration per
//! ~25 resources, each with four sources, three processors, two destinations, per-source
//! processors and sensitive values), then times `gitamp_core::compile` (parse, schema and
//! semantic validation, render of every configuration): exactly what the server does for each new
//! revision. Goal: under 1 s for 5,000 resources in release mode on 2 cores.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use gitamp_core::{Snapshot, compile};

use crate::cli::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Documents in the synthetic repository (types, sources, processors, destinations,
    /// configurations together).
    #[arg(long, default_value_t = 5000)]
    pub resources: usize,
    /// Timed runs (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    pub iterations: usize,
}

/// The example repository's types: realistic templates, parameters and signal coverage.
const TYPES: [(&str, &str); 13] = [
    ("otlp", include_str!("../../example-repo/types/otlp.yaml")),
    (
        "hostmetrics",
        include_str!("../../example-repo/types/hostmetrics.yaml"),
    ),
    (
        "filelog",
        include_str!("../../example-repo/types/filelog.yaml"),
    ),
    (
        "prometheus-scrape",
        include_str!("../../example-repo/types/prometheus-scrape.yaml"),
    ),
    ("batch", include_str!("../../example-repo/types/batch.yaml")),
    (
        "memory-limiter",
        include_str!("../../example-repo/types/memory-limiter.yaml"),
    ),
    (
        "resource",
        include_str!("../../example-repo/types/resource.yaml"),
    ),
    (
        "filter",
        include_str!("../../example-repo/types/filter.yaml"),
    ),
    (
        "attributes",
        include_str!("../../example-repo/types/attributes.yaml"),
    ),
    (
        "otlp-grpc",
        include_str!("../../example-repo/types/otlp-grpc.yaml"),
    ),
    (
        "otlp-http",
        include_str!("../../example-repo/types/otlp-http.yaml"),
    ),
    ("debug", include_str!("../../example-repo/types/debug.yaml")),
    (
        "prometheus-remote-write",
        include_str!("../../example-repo/types/prometheus-remote-write.yaml"),
    ),
];

/// Counts of each kind in a synthetic repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub types: usize,
    pub sources: usize,
    pub processors: usize,
    pub destinations: usize,
    pub configurations: usize,
}

impl Shape {
    /// Split `total` documents in realistic proportions (at least one of each).
    pub fn of(total: usize) -> Shape {
        let types = TYPES.len();
        let configurations = (total / 25).max(1);
        let rest = total.saturating_sub(types + configurations).max(4);
        let sources = (rest / 2).max(4);
        let processors = (rest / 4).max(3);
        let destinations = rest.saturating_sub(sources + processors).max(2);
        Shape {
            types,
            sources,
            processors,
            destinations,
            configurations,
        }
    }

    pub fn total(&self) -> usize {
        self.types + self.sources + self.processors + self.destinations + self.configurations
    }
}

fn doc(out: &mut String, kind: &str, name: &str, labels: &str) {
    let _ = write!(
        out,
        "apiVersion: gitamp.dev/v1\nkind: {kind}\nmetadata:\n  name: {name}\n{labels}spec:\n"
    );
}

/// Build the synthetic repository, one document per file as people write them.
pub fn synthetic_repo(total: usize) -> (Snapshot, Shape) {
    let shape = Shape::of(total);
    let mut snap = Snapshot::new("bench");
    for (name, text) in TYPES {
        snap.insert(format!("types/{name}.yaml"), text);
    }
    for i in 0..shape.sources {
        let mut s = String::new();
        doc(&mut s, "Source", &format!("src-{i:05}"), "");
        let body = match i % 4 {
            0 => format!("  type: otlp\n  parameters:\n    grpc_port: {}\n", 4317 + (i % 7)),
            1 => "  type: hostmetrics\n  parameters:\n    collection_interval: 30s\n    scrapers: [cpu, memory, disk, network]\n".to_string(),
            2 => format!("  type: filelog\n  parameters:\n    include: [/var/log/app-{i}/*.log]\n    start_at: beginning\n"),
            _ => format!("  type: prometheus-scrape\n  parameters:\n    job_name: job-{i}\n    targets: [localhost:{}]\n", 9100 + (i % 50)),
        };
        s.push_str(&body);
        snap.insert(format!("sources/src-{i:05}.yaml"), s);
    }
    for i in 0..shape.processors {
        let mut s = String::new();
        doc(&mut s, "Processor", &format!("proc-{i:05}"), "");
        let body = match i % 5 {
            0 => "  type: batch\n".to_string(),
            1 => "  type: memory-limiter\n  parameters:\n    limit_percentage: 75\n".to_string(),
            2 => format!("  type: resource\n  parameters:\n    attributes:\n      team: team-{}\n      cost.center: cc-{i}\n", i % 40),
            3 => "  type: filter\n  parameters:\n    min_severity: INFO\n    drop_metrics: [system.network.connections]\n".to_string(),
            _ => "  type: attributes\n  parameters:\n    delete: [user.email, enduser.id]\n".to_string(),
        };
        s.push_str(&body);
        snap.insert(format!("processors/proc-{i:05}.yaml"), s);
    }
    for i in 0..shape.destinations {
        let mut s = String::new();
        doc(&mut s, "Destination", &format!("dst-{i:05}"), "");
        let body = match i % 4 {
            0 => format!(
                "  type: otlp-grpc\n  parameters:\n    endpoint: gateway-{i}.example.com:4317\n    api_key: ${{env:GATEWAY_KEY_{i}}}\n"
            ),
            1 => format!(
                "  type: prometheus-remote-write\n  parameters:\n    endpoint: https://mimir-{i}.example.com/api/v1/push\n    token: secret-token-{i}\n"
            ),
            2 => format!(
                "  type: otlp-http\n  parameters:\n    endpoint: https://otlp-{i}.example.com\n    bearer_token: ${{env:VENDOR_TOKEN}}\n"
            ),
            _ => "  type: debug\n  parameters:\n    verbosity: normal\n".to_string(),
        };
        s.push_str(&body);
        snap.insert(format!("destinations/dst-{i:05}.yaml"), s);
    }
    for c in 0..shape.configurations {
        let mut s = String::new();
        doc(&mut s, "Configuration", &format!("cfg-{c:05}"), "");
        let _ = write!(
            s,
            "  selector:\n    matchLabels:\n      service.namespace: ns-{c}\n      deployment.environment: {}\n  priority: {}\n  sources:\n",
            if c % 2 == 0 { "production" } else { "staging" },
            c % 3
        );
        for k in 0..4 {
            let i = (c * 4 + k) % shape.sources;
            if k == 2 {
                let p = (c * 3 + 3) % shape.processors;
                let _ = writeln!(s, "    - name: src-{i:05}\n      processors: [proc-{p:05}]");
            } else {
                let _ = writeln!(s, "    - src-{i:05}");
            }
        }
        s.push_str("  processors:\n");
        for k in 0..3 {
            let _ = writeln!(s, "    - proc-{:05}", (c * 3 + k) % shape.processors);
        }
        s.push_str("  destinations:\n");
        for k in 0..2 {
            let _ = writeln!(s, "    - dst-{:05}", (c * 2 + k) % shape.destinations);
        }
        if c % 2 == 0 {
            s.push_str(
                "  rollout:\n    strategy: Batched\n    batchSize: \"25%\"\n    maxFailures: 1\n",
            );
        }
        snap.insert(format!("configurations/cfg-{c:05}.yaml"), s);
    }
    snap.revision = Snapshot::content_revision(&snap.files);
    (snap, shape)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (snapshot, shape) = synthetic_repo(args.resources);
    let bytes: usize = snapshot.files.values().map(|b| b.len()).sum();
    println!(
        "synthetic repository: {} documents ({} types, {} sources, {} processors, {} destinations, {} configurations), {} files, {:.1} MiB",
        shape.total(),
        shape.types,
        shape.sources,
        shape.processors,
        shape.destinations,
        shape.configurations,
        snapshot.files.len(),
        bytes as f64 / (1024.0 * 1024.0)
    );
    // Warm-up: the first run also builds the shared template environment and schema validators.
    let configurations = match compile(&snapshot) {
        Ok(rev) => rev.rendered.configurations.len(),
        Err(rejected) => {
            let shown: Vec<String> = rejected
                .diagnostics
                .iter()
                .take(20)
                .map(ToString::to_string)
                .collect();
            bail!(
                "the synthetic repository was rejected ({} diagnostics), a bug in the generator or the core:\n{}",
                rejected.diagnostics.len(),
                shown.join("\n")
            );
        }
    };
    let iterations = args.iterations.max(1);
    let mut times: Vec<Duration> = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        let result = compile(&snapshot);
        times.push(start.elapsed());
        drop(result);
    }
    times.sort();
    let min = times[0];
    let median = times[times.len() / 2];
    let mean = times.iter().sum::<Duration>() / iterations as u32;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "compile (load + validate + render), {iterations} runs: min {:.1} ms, median {:.1} ms, mean {:.1} ms",
        ms(min),
        ms(median),
        ms(mean)
    );
    println!(
        "{:.0} resources/s (median); {configurations} configurations rendered per run",
        shape.total() as f64 / median.as_secs_f64()
    );
    // Where the time goes: the two stages of `compile`, timed apart (medians).
    let mut load_times = Vec::with_capacity(iterations);
    let mut render_times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        let (catalog, _) = gitamp_core::catalog::load(&snapshot);
        load_times.push(start.elapsed());
        let start = Instant::now();
        let rendered = gitamp_core::render::render(&catalog);
        render_times.push(start.elapsed());
        drop(rendered);
    }
    load_times.sort();
    render_times.sort();
    println!(
        "of which: load + validate {:.1} ms, render {:.1} ms (medians)",
        ms(load_times[iterations / 2]),
        ms(render_times[iterations / 2])
    );
    if configurations != shape.configurations {
        eprintln!(
            "warning: {} of {} configurations rendered",
            configurations, shape.configurations
        );
    }
    Ok(ExitCode::from(exit::OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_adds_up_and_renders() {
        let shape = Shape::of(5000);
        assert!((4990..=5010).contains(&shape.total()), "{shape:?}");
        let (snap, shape) = synthetic_repo(120);
        assert_eq!(snap.files.len(), shape.total());
        match compile(&snap) {
            Ok(rev) => {
                assert_eq!(rev.rendered.configurations.len(), shape.configurations);
            }
            Err(rejected) => panic!("{}", rejected.diagnostics),
        }
    }
}

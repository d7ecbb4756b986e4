//! `gitamp bench otlp`: what the own-telemetry receiver costs per agent.
//!
//! Real parts only: this binary started as `gitamp serve` in a child process (its CPU and memory
//! read from /proc), N simulated agents connected over WebSocket (so the receiver knows them),
//! and, from this process, one OTLP/HTTP exporter per agent posting what a collector exports
//! about itself (about 30 series: receiver, processor and exporter counters for its pipelines,
//! queue gauges, batch-size and request-duration histograms, process figures), protobuf and
//! gzipped like the collector's own exporter, every `--interval`, spread evenly.
//!
//! Each run: a fresh server and fleet, a window without OTLP traffic (the baseline: heartbeats
//! only), then the same window with it. The receiver's cost is the difference: server CPU time
//! per agent and per report, and RSS per agent. Several runs give the spread. Figures are printed,
//! never asserted.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::harness::{BenchRepo, Server};
use gitamp_opamp::agent::{AgentOptions, ClientTransport, SimAgent, WsOptions, spawn_agent};

/// Options of the OTLP receiver benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Agents (each one collector reporting its own metrics).
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// How often each collector reports (10s, 1m; a bare number is seconds).
    #[arg(long, value_name = "DURATION", default_value = "10s",
          value_parser = crate::cli::duration::positive)]
    pub interval: Duration,
    /// Each measured window, with and without OTLP traffic (60s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "60s",
          value_parser = crate::cli::duration::positive)]
    pub duration: Duration,
    /// Runs, each on a fresh server (the spread is printed).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args))
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct RunFigures {
    /// Server CPU, % of one core, per 1,000 agents, added by the OTLP traffic.
    cpu_pct_per_1k: f64,
    /// Server CPU per report, microseconds.
    cpu_us_per_report: f64,
    /// Server RSS after the OTLP window minus after the baseline, KiB per agent (noisy: the
    /// allocator keeps or returns freed memory as it likes).
    rss_kib_per_agent: f64,
    /// What the receiver's figures hold by its own estimate, bytes per agent.
    held_bytes_per_agent: f64,
    /// Server RSS (KiB) after the ramp, after the baseline window, after the OTLP window.
    rss: [u64; 3],
    /// Reports answered 200, and the others.
    ok: u64,
    failed: u64,
    /// Bytes of one report, protobuf then gzipped.
    raw_bytes: usize,
    gz_bytes: usize,
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    if args.agents == 0 || args.runs == 0 {
        bail!("--agents and --runs must be at least 1");
    }
    println!(
        "gitamp bench otlp: {} agents reporting every {:?}, windows of {:?}, {} run(s)",
        args.agents, args.interval, args.duration, args.runs
    );
    let mut all = Vec::new();
    for run in 1..=args.runs {
        let f = one_run(&args).await?;
        println!(
            "run {run}: +{:.2}% of a core per 1,000 agents, {:.0} µs CPU per report; RSS {:+.2} KiB per agent (server RSS {} / {} / {} KiB after ramp / baseline / OTLP), {:.0} B per agent held by the receiver's estimate; {} reports ok, {} failed; a report is {} B protobuf, {} B gzipped",
            f.cpu_pct_per_1k,
            f.cpu_us_per_report,
            f.rss_kib_per_agent,
            f.rss[0],
            f.rss[1],
            f.rss[2],
            f.held_bytes_per_agent,
            f.ok,
            f.failed,
            f.raw_bytes,
            f.gz_bytes
        );
        all.push(f);
    }
    let spread = |pick: fn(&RunFigures) -> f64| {
        let mut v: Vec<f64> = all.iter().map(pick).collect();
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let (c0, c1, c2) = spread(|f| f.cpu_pct_per_1k);
    let (u0, u1, u2) = spread(|f| f.cpu_us_per_report);
    let (r0, r1, r2) = spread(|f| f.rss_kib_per_agent);
    let (h0, h1, h2) = spread(|f| f.held_bytes_per_agent);
    println!(
        "over {} runs (min / median / max): CPU +{c0:.2} / {c1:.2} / {c2:.2} % of a core per 1,000 agents; {u0:.0} / {u1:.0} / {u2:.0} µs per report; RSS {r0:+.2} / {r1:+.2} / {r2:+.2} KiB per agent; held {h0:.0} / {h1:.0} / {h2:.0} B per agent",
        all.len()
    );
    Ok(ExitCode::SUCCESS)
}

async fn one_run(args: &Args) -> anyhow::Result<RunFigures> {
    let repo = BenchRepo::new()?;
    let server = Server::start(&repo, Duration::from_secs(30))?;
    let url = format!("ws://{}/v1/opamp", server.opamp);
    let agents: Vec<_> = (0..args.agents)
        .map(|i| {
            let opts = AgentOptions::collector("bench", &format!("otlp-{i:05}"), "staging")
                .label("os.type", "linux");
            spawn_agent(
                SimAgent::new(opts),
                ClientTransport::WebSocket(WsOptions::default()),
                &url,
            )
        })
        .collect();
    for a in &agents {
        a.wait_for(Duration::from_secs(120), |s| s.applied_hash().is_some())
            .await
            .map_err(|s| {
                anyhow::anyhow!("an agent never applied its config: {:?}", s.last_error)
            })?;
    }
    let uids: Vec<String> = agents
        .iter()
        .map(|a| {
            uuid::Uuid::from_slice(&a.instance_uid())
                .map(|u| u.hyphenated().to_string())
                .unwrap_or_default()
        })
        .collect();
    // Settle, then the baseline window: heartbeats only.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu0, rss0) = (server.cpu_seconds(), server.rss_kib());
    tokio::time::sleep(args.duration).await;
    let (cpu1, rss1) = (server.cpu_seconds(), server.rss_kib());

    // The OTLP window: each agent's collector reports every interval, offsets spread evenly.
    let endpoint = format!("http://{}/v1/metrics", server.opamp);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .context("HTTP client")?;
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let sample = export(&uids[0], 1);
    let raw_bytes = sample.encoded_len();
    let gz_bytes = gzip(&sample.encode_to_vec())?.len();
    let started = Instant::now();
    let stop = started + args.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, uid) in uids.iter().enumerate() {
        let (client, endpoint, uid) = (client.clone(), endpoint.clone(), uid.clone());
        let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
        let offset = args.interval.mul_f64(i as f64 / args.agents as f64);
        let interval = args.interval;
        tasks.spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(interval);
            let mut n = 0u64;
            loop {
                tick.tick().await;
                if Instant::now() >= stop {
                    break;
                }
                n += 1;
                let Ok(body) = gzip(&export(&uid, n).encode_to_vec()) else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let sent = client
                    .post(&endpoint)
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "gzip")
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let window = started.elapsed().as_secs_f64();
    let (cpu2, rss2) = (server.cpu_seconds(), server.rss_kib());
    let base_cpu = (cpu1 - cpu0) / args.duration.as_secs_f64();
    let otlp_cpu = (cpu2 - cpu1) / window;
    let reports = ok.load(Ordering::Relaxed);
    let added = (otlp_cpu - base_cpu).max(0.0);
    let figures = RunFigures {
        cpu_pct_per_1k: added * 100.0 * 1000.0 / args.agents as f64,
        cpu_us_per_report: if reports == 0 {
            0.0
        } else {
            added * window * 1e6 / reports as f64
        },
        rss_kib_per_agent: (rss2 as f64 - rss1 as f64) / args.agents as f64,
        held_bytes_per_agent: held_bytes(&client, &server.api).await? / args.agents as f64,
        rss: [rss0, rss1, rss2],
        ok: reports,
        failed: failed.load(Ordering::Relaxed),
        raw_bytes,
        gz_bytes,
    };
    for a in &agents {
        a.stop(Duration::from_millis(200)).await;
    }
    drop(server);
    Ok(figures)
}

/// `gitamp_own_telemetry_memory_bytes` from the server's `/metrics`.
async fn held_bytes(client: &reqwest::Client, api: &str) -> anyhow::Result<f64> {
    let text = client
        .get(format!("http://{api}/metrics"))
        .send()
        .await
        .context("scraping /metrics")?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix("gitamp_own_telemetry_memory_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .context("no gitamp_own_telemetry_memory_bytes on /metrics")
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data)?;
    e.finish()
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn point(attrs: &[(&str, &str)], v: i64, start: u64, t: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
        start_time_unix_nano: start,
        time_unix_nano: t,
        value: Some(number_data_point::Value::AsInt(v)),
        ..Default::default()
    }
}

fn counter(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        unit: "{items}".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn gauge(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

fn histogram(name: &str, attrs: &[(&str, &str)], n: u64, start: u64, t: u64) -> Metric {
    let bounds: Vec<f64> = [
        10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0,
        6000.0, 7000.0, 8000.0, 9000.0, 10000.0, 20000.0, 30000.0, 50000.0, 100000.0,
    ]
    .to_vec();
    let mut counts = vec![0u64; bounds.len() + 1];
    for (i, c) in counts.iter_mut().enumerate() {
        *c = n * (i as u64 % 5);
    }
    Metric {
        name: name.into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
                start_time_unix_nano: start,
                time_unix_nano: t,
                count: counts.iter().sum(),
                sum: Some(n as f64 * 812.5),
                bucket_counts: counts,
                explicit_bounds: bounds,
                min: Some(1.0),
                max: Some(9000.0),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    }
}

/// What a collector with an OTLP receiver, two processors and two exporters (logs and metrics
/// pipelines) exports about itself at level `normal`, the `n`th time.
fn export(uid: &str, n: u64) -> ExportMetricsServiceRequest {
    let t = now_ns();
    let start = t.saturating_sub(n * 10_000_000_000);
    let items = i64::try_from(n * 1_000).unwrap_or(i64::MAX);
    let rx = [("receiver", "otlp/src-otlp-in"), ("transport", "http")];
    let rx_g = [("receiver", "otlp/src-otlp-in"), ("transport", "grpc")];
    let batch = [("processor", "batch/proc-batch"), ("otel.signal", "logs")];
    let batch_m = [
        ("processor", "batch/proc-batch"),
        ("otel.signal", "metrics"),
    ];
    let mem = [
        ("processor", "memory_limiter/proc-mem"),
        ("otel.signal", "logs"),
    ];
    let ex = [("exporter", "otlphttp/dst-gateway")];
    let dbg = [("exporter", "debug/dst-console")];
    let metrics = vec![
        counter(
            "otelcol_receiver_accepted_log_records",
            vec![
                point(&rx, items, start, t),
                point(&rx_g, items / 2, start, t),
            ],
        ),
        counter(
            "otelcol_receiver_refused_log_records",
            vec![point(&rx, 0, start, t), point(&rx_g, 0, start, t)],
        ),
        counter(
            "otelcol_receiver_failed_log_records",
            vec![point(&rx, 0, start, t), point(&rx_g, 0, start, t)],
        ),
        counter(
            "otelcol_receiver_accepted_metric_points",
            vec![point(&rx, items * 3, start, t)],
        ),
        counter(
            "otelcol_receiver_refused_metric_points",
            vec![point(&rx, 0, start, t)],
        ),
        counter(
            "otelcol_receiver_failed_metric_points",
            vec![point(&rx, 0, start, t)],
        ),
        counter(
            "otelcol_receiver_requests",
            vec![point(
                &[
                    ("receiver", "otlp/src-otlp-in"),
                    ("transport", "http"),
                    ("outcome", "success"),
                ],
                items / 10,
                start,
                t,
            )],
        ),
        counter(
            "otelcol_processor_incoming_items",
            vec![
                point(&batch, items, start, t),
                point(&batch_m, items * 3, start, t),
                point(&mem, items, start, t),
            ],
        ),
        counter(
            "otelcol_processor_outgoing_items",
            vec![
                point(&batch, items, start, t),
                point(&batch_m, items * 3, start, t),
                point(&mem, items, start, t),
            ],
        ),
        counter(
            "otelcol_processor_batch_batch_size_trigger_send",
            vec![point(
                &[("processor", "batch/proc-batch")],
                items / 100,
                start,
                t,
            )],
        ),
        counter(
            "otelcol_processor_batch_timeout_trigger_send",
            vec![point(
                &[("processor", "batch/proc-batch")],
                items / 50,
                start,
                t,
            )],
        ),
        counter(
            "otelcol_exporter_sent_log_records",
            vec![point(&ex, items, start, t), point(&dbg, items, start, t)],
        ),
        counter(
            "otelcol_exporter_send_failed_log_records",
            vec![point(&ex, 3, start, t), point(&dbg, 0, start, t)],
        ),
        counter(
            "otelcol_exporter_enqueue_failed_log_records",
            vec![point(&ex, 0, start, t)],
        ),
        counter(
            "otelcol_exporter_sent_metric_points",
            vec![point(&ex, items * 3, start, t)],
        ),
        counter(
            "otelcol_exporter_send_failed_metric_points",
            vec![point(&ex, 0, start, t)],
        ),
        counter(
            "otelcol_exporter_enqueue_failed_metric_points",
            vec![point(&ex, 0, start, t)],
        ),
        gauge("otelcol_exporter_queue_size", vec![point(&ex, 7, start, t)]),
        gauge(
            "otelcol_exporter_queue_capacity",
            vec![point(&ex, 1000, start, t)],
        ),
        gauge(
            "otelcol_process_uptime",
            vec![point(&[], i64::try_from(n * 10).unwrap_or(0), start, t)],
        ),
        gauge(
            "otelcol_process_memory_rss",
            vec![point(&[], 83_886_080, start, t)],
        ),
        gauge(
            "otelcol_process_runtime_heap_alloc_bytes",
            vec![point(&[], 31_457_280, start, t)],
        ),
        gauge(
            "otelcol_process_runtime_total_sys_memory_bytes",
            vec![point(&[], 62_914_560, start, t)],
        ),
        counter(
            "otelcol_process_cpu_seconds",
            vec![point(&[], i64::try_from(n).unwrap_or(0), start, t)],
        ),
        counter(
            "otelcol_process_runtime_total_alloc_bytes",
            vec![point(&[], items * 4096, start, t)],
        ),
        histogram(
            "otelcol_processor_batch_batch_send_size",
            &[("processor", "batch/proc-batch")],
            n,
            start,
            t,
        ),
        histogram("otelcol_exporter_queue_batch_send_size", &ex, n, start, t),
        histogram(
            "http.server.request.duration",
            &[
                ("http.request.method", "POST"),
                ("http.response.status_code", "200"),
            ],
            n,
            start,
            t,
        ),
        histogram(
            "http.client.request.duration",
            &[
                ("http.request.method", "POST"),
                ("server.address", "gateway"),
            ],
            n,
            start,
            t,
        ),
        histogram(
            "rpc.server.duration",
            &[
                ("rpc.system", "grpc"),
                (
                    "rpc.service",
                    "opentelemetry.proto.collector.logs.v1.LogsService",
                ),
            ],
            n,
            start,
            t,
        ),
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.instance.id", uid),
                    kv("service.name", "otelcol-contrib"),
                    kv("service.version", "0.158.0"),
                    kv("host.name", "bench"),
                    kv("os.type", "linux"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

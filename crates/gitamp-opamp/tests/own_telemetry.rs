//! Connection-settings offers and the own-telemetry OTLP receiver, over real sockets: what an
//! agent is offered (and not offered again), an agent that rejects an offer, and OTLP bodies
//! that are fine, malformed, oversize, unauthenticated or from unknown agents.

mod agent_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gitamp_opamp::offers::{Destination, OwnTelemetry};
use gitamp_opamp::otlp::throughput::Kind;
use gitamp_opamp::proto::{self, AgentCapabilities as Cap};
use gitamp_opamp::server::OpampSettings;
use gitamp_opamp::{Fleet, Uid};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use agent_support::wire::{CAPS, gzip, hb_with, hello_with, serve_fleet, ws_connect_auth, ws_rpc};

const T: Duration = Duration::from_secs(10);
const SECRET: &str = "s3cret";
const AUTH: &str = "Bearer s3cret";
const HB_CAPS: u64 = CAPS | Cap::ReportsHeartbeat as u64;

async fn start() -> (Arc<Fleet>, SocketAddr) {
    serve_fleet(
        OpampSettings {
            heartbeat_interval: Duration::from_secs(7),
            secret: Some(SECRET.into()),
            max_message_bytes: 64 * 1024,
            ..OpampSettings::default()
        },
        None,
    )
    .await
}

fn uid(n: u8) -> Uid {
    let mut u = [n; 16];
    u[6] = 0x70 | (n & 0x0f); // a UUIDv7's version nibble
    u
}

fn uid_text(u: &Uid) -> String {
    uuid::Uuid::from_bytes(*u).hyphenated().to_string()
}

#[tokio::test]
async fn heartbeat_offer_goes_once_repeats_how_the_agent_connects_and_a_rejection_changes_nothing_else()
 {
    let (fleet, addr) = start().await;
    let mut ws = ws_connect_auth(addr, Some(AUTH)).await.expect("connect");
    let u = uid(1);
    let caps = HB_CAPS | Cap::ReportsConnectionSettingsStatus as u64;
    let first = ws_rpc(&mut ws, &hello_with(u, 0, "otelcol", "h1", caps)).await;
    assert_ne!(
        first.capabilities & proto::ServerCapabilities::OffersConnectionSettings as u64,
        0
    );
    let offer = first
        .connection_settings
        .expect("an offer in the first reply");
    assert_eq!(offer.hash.len(), 32);
    let opamp = offer.opamp.expect("opamp part");
    assert_eq!(opamp.heartbeat_interval_seconds, 7);
    assert_eq!(opamp.destination_endpoint, format!("ws://{addr}/v1/opamp"));
    let headers = opamp.headers.expect("headers").headers;
    assert_eq!(headers.len(), 1);
    assert_eq!(
        (headers[0].key.as_str(), headers[0].value.as_str()),
        ("Authorization", AUTH)
    );
    assert!(
        offer.own_metrics.is_none(),
        "nothing decided yet for its own telemetry"
    );

    // Not again while unchanged.
    let second = ws_rpc(&mut ws, &hb_with(u, 1, caps)).await;
    assert!(second.connection_settings.is_none());

    // The agent rejects it: recorded as it said, not offered again, nothing else changes.
    let mut rejected = hb_with(u, 2, caps);
    rejected.connection_settings_status = Some(proto::ConnectionSettingsStatus {
        last_connection_settings_hash: offer.hash.clone(),
        status: proto::ConnectionSettingsStatuses::Failed as i32,
        error_message: "cannot reconnect there".into(),
    });
    let reply = ws_rpc(&mut ws, &rejected).await;
    assert!(reply.error_response.is_none());
    assert!(reply.connection_settings.is_none(), "no retry loop");
    let a = fleet.agent(&u).expect("registered");
    let view = a.offers.expect("offers view");
    let status = view.status.expect("status kept");
    assert_eq!(
        (status.status, status.error.as_str()),
        ("failed", "cannot reconnect there")
    );
    assert_eq!(view.heartbeat_interval_seconds, Some(7));
    assert!(a.connection.connected);
    let desired = agent_support::desired("receivers: {}\n");
    assert!(matches!(
        fleet.deliver(&u, Some(desired.clone())),
        gitamp_opamp::Delivery::Queued(_)
    ));
    let pushed = agent_support::wire::ws_recv(&mut ws).await;
    assert!(pushed.remote_config.is_some(), "configs still flow");

    // Its own telemetry decided: pushed at once, with gitamp's receiver for metrics (the opamp
    // part unchanged, so left out: an agent that accepts it would reconnect), and only once.
    let caps_own = caps | Cap::ReportsOwnMetrics as u64;
    ws_rpc(&mut ws, &hb_with(u, 3, caps_own)).await;
    fleet.set_own_telemetry(&u, Arc::new(OwnTelemetry::Gitamp));
    let push = agent_support::wire::ws_recv(&mut ws).await;
    let offer2 = push.connection_settings.expect("pushed offer");
    assert_ne!(offer2.hash, offer.hash);
    assert!(offer2.opamp.is_none());
    let m = offer2.own_metrics.expect("own metrics");
    assert_eq!(m.destination_endpoint, format!("http://{addr}/v1/metrics"));
    assert_eq!(m.headers.expect("auth").headers[0].value, AUTH);
    fleet.set_own_telemetry(&u, Arc::new(OwnTelemetry::Gitamp));
    assert!(
        ws_rpc(&mut ws, &hb_with(u, 4, caps_own))
            .await
            .connection_settings
            .is_none()
    );

    // A declared destination replaces it; header values are never shown.
    fleet.set_own_telemetry(
        &u,
        Arc::new(OwnTelemetry::Declared {
            metrics: Some(Destination {
                endpoint: "https://otlp.example.com/v1/metrics".into(),
                headers: BTreeMap::from([("Authorization".into(), "Bearer ${env:T}".into())]),
            }),
            logs: None,
        }),
    );
    let push = agent_support::wire::ws_recv(&mut ws).await;
    let m = push
        .connection_settings
        .expect("offer")
        .own_metrics
        .expect("metrics");
    assert_eq!(
        m.destination_endpoint,
        "https://otlp.example.com/v1/metrics"
    );
    let shown = serde_json::to_string(&fleet.agent(&u).expect("agent").offers).expect("json");
    assert!(!shown.contains("env:T"), "{shown}");
    assert!(shown.contains("otlp.example.com"), "{shown}");
}

#[tokio::test]
async fn an_agent_without_the_heartbeat_capability_gets_no_opamp_offer() {
    let (_fleet, addr) = start().await;
    let mut ws = ws_connect_auth(addr, Some(AUTH)).await.expect("connect");
    let r = ws_rpc(&mut ws, &hello_with(uid(2), 0, "otelcol", "h2", CAPS)).await;
    assert!(r.connection_settings.is_none());
}

// ------------------------------------------------------------------------------ OTLP

/// `POST path` on a fresh connection; status and body.
async fn post(addr: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "POST /v1/metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let _ = s.write_all(body).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(T, s.read_to_end(&mut raw)).await;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let len = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if len == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + len]);
        b = &b[eol + 2 + len + 2..];
    }
    out
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

fn sum(name: &str, attr: (&str, &str), value: i64, t_s: u64) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                attributes: vec![kv(attr.0, attr.1), kv("transport", "http")],
                start_time_unix_nano: 1_000_000_000,
                time_unix_nano: t_s * 1_000_000_000,
                value: Some(number_data_point::Value::AsInt(value)),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

/// What a collector exports about itself: its receiver and exporter counts (and a metric
/// gitamp ignores).
fn export(instance: &str, accepted: i64, sent: i64, t_s: u64) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.instance.id", instance), kv("service.name", "c")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    sum(
                        "otelcol_receiver_accepted_log_records",
                        ("receiver", "otlp"),
                        accepted,
                        t_s,
                    ),
                    sum(
                        "otelcol_exporter_sent_log_records",
                        ("exporter", "debug"),
                        sent,
                        t_s,
                    ),
                    sum("otelcol_process_uptime", ("x", "y"), 5, t_s),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

const PB: (&str, &str) = ("Content-Type", "application/x-protobuf");
const JSON: (&str, &str) = ("Content-Type", "application/json");
const AUTHZ: (&str, &str) = ("Authorization", AUTH);

#[tokio::test]
async fn otlp_receiver_keeps_known_agents_rates_and_refuses_bad_input_clearly() {
    let (fleet, addr) = start().await;
    let known = uid(3);
    agent_support::wire::post_raw(
        addr,
        &[PB, AUTHZ],
        &hello_with(known, 0, "otelcol", "h3", HB_CAPS).encode_to_vec(),
    )
    .await;
    let id = uid_text(&known);
    let body = export(&id, 100, 90, 10).encode_to_vec();

    // Bad input, each answered clearly, none recorded.
    assert_eq!(post(addr, &[PB], &body).await.0, 401, "no credentials");
    assert_eq!(
        post(addr, &[PB, ("Authorization", "Bearer nope")], &body)
            .await
            .0,
        401
    );
    let (s, text) = post(addr, &[("Content-Type", "text/plain"), AUTHZ], &body).await;
    assert_eq!(s, 415, "{}", String::from_utf8_lossy(&text));
    let (s, text) = post(addr, &[PB, AUTHZ], b"\xff\xff\xff not protobuf").await;
    assert_eq!(s, 400);
    assert!(String::from_utf8_lossy(&text).contains("ExportMetricsServiceRequest"));
    assert_eq!(
        post(addr, &[JSON, AUTHZ], b"{\"resourceMetrics\": 7}")
            .await
            .0,
        400
    );
    assert_eq!(post(addr, &[PB, AUTHZ], &vec![0u8; 65 * 1024]).await.0, 413);
    let bomb = gzip(&vec![0u8; 8 << 20]);
    assert_eq!(
        post(addr, &[PB, AUTHZ, ("Content-Encoding", "gzip")], &bomb)
            .await
            .0,
        413
    );
    let stranger = uid_text(&uid(9));
    let (s, text) = post(
        addr,
        &[PB, AUTHZ],
        &export(&stranger, 1, 1, 10).encode_to_vec(),
    )
    .await;
    assert_eq!(s, 403);
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains(&stranger) && text.contains("not a known agent"),
        "{text}"
    );
    assert!(
        fleet.throughput().is_empty(),
        "nothing recorded from bad input"
    );
    assert!(
        fleet.agent(&uid(9)).is_none(),
        "an unknown agent is not created"
    );

    // Protobuf, gzipped: totals as reported, no rate before a second export.
    let (s, resp) = post(
        addr,
        &[PB, AUTHZ, ("Content-Encoding", "gzip")],
        &gzip(&body),
    )
    .await;
    assert_eq!(s, 200);
    let resp = ExportMetricsServiceResponse::decode(&resp[..]).expect("OTLP response");
    assert!(resp.partial_success.is_none());
    let t = fleet.throughput().agent(&known).expect("recorded");
    assert_eq!(t.components.len(), 2, "{t:?}");
    let receiver = &t.components[0];
    assert_eq!(
        (receiver.kind, receiver.id.as_str()),
        (Kind::Receiver, "otlp")
    );
    assert_eq!(receiver.totals.accepted, Some(100.0));
    assert!(receiver.rates.is_none());

    // JSON, ten seconds later, with a resource of an unknown agent alongside: the known one is
    // kept, the other counted in partial_success.
    let mut req = export(&id, 300, 250, 20);
    req.resource_metrics
        .extend(export(&stranger, 5, 5, 20).resource_metrics);
    let (s, resp) = post(
        addr,
        &[JSON, AUTHZ],
        &serde_json::to_vec(&req).expect("json"),
    )
    .await;
    assert_eq!(s, 200);
    let resp: serde_json::Value = serde_json::from_slice(&resp).expect("json response");
    assert_eq!(resp["partialSuccess"]["rejectedDataPoints"], 3, "{resp}");
    let t = fleet.throughput().agent(&known).expect("recorded");
    let rates = |kind| {
        t.components
            .iter()
            .find(|c| c.kind == kind)
            .and_then(|c| c.rates)
            .expect("a rate")
    };
    assert_eq!(rates(Kind::Receiver).accepted, Some(20.0));
    assert_eq!(rates(Kind::Exporter).sent, Some(16.0));
    assert_eq!(fleet.throughput().len(), 1);
    // The OpAMP side is unaffected.
    let r = agent_support::wire::post_raw(
        addr,
        &[PB, AUTHZ],
        &hb_with(known, 1, HB_CAPS).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
}

//! gitamp's own-telemetry receiver: OTLP/HTTP metrics (`POST /v1/metrics`) on the OpAMP
//! listener, where agents offered it send their own metrics.
//!
//! Requests are authenticated like agent connections (the same shared secret), bounded like
//! OpAMP bodies (the listener's message limit, before and after gzip), protobuf or JSON (the
//! official OTLP messages of the `opentelemetry-proto` crate). Each resource is attributed to an
//! agent by its `service.instance.id` (the supervisor sets it to the agent's instance UID); a
//! resource of an agent the registry does not know is refused: a request with none known gets
//! `403` and changes nothing, a request with some known is accepted for those, and the others
//! are counted in the answer's `partial_success`. Only the collector's pipeline metrics are
//! kept ([`throughput`]); everything else in a request is ignored.

pub mod throughput;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, metric::Data, number_data_point,
};
use prost::Message;

use crate::fleet::Fleet;
use crate::telemetry::otlp_request;
use crate::transport::Listener;
use crate::transport::http::read_body;
use crate::wire::Uid;
use throughput::{Kind, Sample};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The request's encoding, from its `Content-Type` (parameters ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

fn encoding(headers: &HeaderMap) -> Option<Encoding> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let mime = value.split(';').next()?.trim();
    if mime.eq_ignore_ascii_case(PROTOBUF) {
        Some(Encoding::Protobuf)
    } else if mime.eq_ignore_ascii_case(JSON) {
        Some(Encoding::Json)
    } else {
        None
    }
}

fn refuse(status: StatusCode, outcome: &'static str, text: impl Into<String>) -> Response {
    otlp_request(outcome);
    (status, text.into()).into_response()
}

/// `POST /v1/metrics`.
pub(crate) async fn post_metrics(
    State(state): State<Arc<Listener>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !state.authorized(&headers) {
        return refuse(StatusCode::UNAUTHORIZED, "unauthorized", "unauthorized");
    }
    let Some(_slot) = state.admit() else {
        return crate::transport::unavailable();
    };
    let Some(enc) = encoding(&headers) else {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected application/x-protobuf or application/json",
        );
    };
    let limit = state.settings.max_message_bytes;
    let plain = match read_body(&headers, body, limit, state.settings.body_read_timeout).await {
        Ok(b) => b,
        Err(err) => {
            let outcome = match err.status() {
                StatusCode::PAYLOAD_TOO_LARGE => "too_large",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                _ => "malformed",
            };
            otlp_request(outcome);
            return err.into_response();
        }
    };
    let request = match enc {
        Encoding::Protobuf => ExportMetricsServiceRequest::decode(plain)
            .map_err(|e| format!("not an OTLP ExportMetricsServiceRequest: {e}")),
        Encoding::Json => serde_json::from_slice::<ExportMetricsServiceRequest>(&plain)
            .map_err(|e| format!("not an OTLP/JSON ExportMetricsServiceRequest: {e}")),
    };
    let request = match request {
        Ok(r) => r,
        Err(text) => return refuse(StatusCode::BAD_REQUEST, "malformed", text),
    };
    match ingest(&state.fleet, &request, SystemTime::now()) {
        Ok(rejected) => {
            otlp_request("accepted");
            let response = ExportMetricsServiceResponse {
                partial_success: (rejected.points > 0).then(|| ExportMetricsPartialSuccess {
                    rejected_data_points: rejected.points,
                    error_message: rejected.message(),
                }),
            };
            respond(enc, &response)
        }
        Err(rejected) => refuse(StatusCode::FORBIDDEN, "unknown_agent", rejected.message()),
    }
}

fn respond(enc: Encoding, response: &ExportMetricsServiceResponse) -> Response {
    let (ct, body) = match enc {
        Encoding::Protobuf => (PROTOBUF, response.encode_to_vec()),
        Encoding::Json => (JSON, serde_json::to_vec(response).unwrap_or_default()),
    };
    (
        StatusCode::OK,
        [(CONTENT_TYPE, HeaderValue::from_static(ct))],
        body,
    )
        .into_response()
}

/// Resources that could not be attributed to a known agent.
#[derive(Debug, Default)]
pub struct Rejected {
    /// Data points in them.
    pub points: i64,
    /// Their `service.instance.id` values (at most a few, for the message).
    pub ids: Vec<String>,
    /// How many resources had none.
    pub without_id: usize,
}

impl Rejected {
    fn message(&self) -> String {
        let mut parts = Vec::new();
        if !self.ids.is_empty() {
            parts.push(format!(
                "service.instance.id not a known agent: {}",
                self.ids.join(", ")
            ));
        }
        if self.without_id > 0 {
            parts.push(format!(
                "{} resource(s) without a service.instance.id that is an agent's instance UID",
                self.without_id
            ));
        }
        parts.join("; ")
    }
}

fn string_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(ref s)),
            }) => Some(s.as_str()),
            _ => None,
        })
}

/// Folds a request into the registry's throughput. `Err` when no resource is a known agent's
/// (nothing recorded); `Ok` with what was left out otherwise.
pub fn ingest(
    fleet: &Fleet,
    request: &ExportMetricsServiceRequest,
    now: SystemTime,
) -> Result<Rejected, Rejected> {
    let mut rejected = Rejected::default();
    let mut known: BTreeMap<Uid, BTreeMap<(Kind, String), Sample>> = BTreeMap::new();
    for rm in &request.resource_metrics {
        let attrs = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let id = string_attr(attrs, "service.instance.id");
        let uid = id
            .and_then(|id| uuid::Uuid::parse_str(id).ok())
            .map(uuid::Uuid::into_bytes)
            .filter(|uid| fleet.get(uid).is_some());
        let Some(uid) = uid else {
            rejected.points += rm
                .scope_metrics
                .iter()
                .flat_map(|s| &s.metrics)
                .map(points)
                .sum::<i64>();
            match id {
                Some(id) if rejected.ids.len() < 3 => {
                    rejected.ids.push(id.chars().take(64).collect())
                }
                Some(_) => {}
                None => rejected.without_id += 1,
            }
            continue;
        };
        let samples = known.entry(uid).or_default();
        for metric in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            collect(metric, samples);
        }
    }
    if known.is_empty() && !request.resource_metrics.is_empty() {
        return Err(rejected);
    }
    for (uid, samples) in known {
        fleet.throughput().record(uid, samples, now);
    }
    Ok(rejected)
}

fn points(m: &Metric) -> i64 {
    let n = match &m.data {
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    };
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Adds one metric's data points to the samples by component, if it is one we keep.
fn collect(metric: &Metric, samples: &mut BTreeMap<(Kind, String), Sample>) {
    let Some((kind, measure, attr)) = throughput::classify(&metric.name) else {
        return;
    };
    let Some(Data::Sum(sum)) = &metric.data else {
        return;
    };
    let delta = sum.aggregation_temporality == AggregationTemporality::Delta as i32;
    for p in &sum.data_points {
        let Some(id) = string_attr(&p.attributes, attr) else {
            continue;
        };
        let value = match p.value {
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            Some(number_data_point::Value::AsDouble(d)) if d.is_finite() => d,
            _ => continue,
        };
        samples.entry((kind, id.to_owned())).or_default().add(
            measure,
            value,
            p.time_unix_nano,
            p.start_time_unix_nano,
            delta,
        );
    }
}

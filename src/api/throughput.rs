//! What the status API shows of agents' own telemetry: the connection settings offered to each
//! agent, and the items its pipeline components handle (from its own metrics, see
//! `gitamp_opamp::otlp`), per agent and summed per configuration.

use std::collections::BTreeMap;

use gitamp_opamp::otlp::throughput::{Counts, Kind};
use gitamp_opamp::wire::uid_text;
use gitamp_opamp::{AgentSnapshot, Fleet, Uid};
use serde_json::{Value, json};

use crate::server::own_telemetry;
use crate::server::state::FleetView;

/// How many agents a configuration's `top_agents` lists.
pub const TOP_AGENTS: usize = 5;

/// `heartbeat_interval_seconds` and `telemetry_destination` of an agent item.
pub fn agent_columns(a: &AgentSnapshot) -> (Option<u64>, Option<String>) {
    let Some(o) = &a.offers else {
        return (None, None);
    };
    (
        o.heartbeat_interval_seconds,
        o.own_telemetry.as_deref().map(own_telemetry::summary),
    )
}

/// `connection_settings` of an agent's detail: what was offered and what it said.
pub fn connection_settings(a: &AgentSnapshot) -> Value {
    a.offers
        .as_ref()
        .and_then(|o| serde_json::to_value(o).ok())
        .unwrap_or(Value::Null)
}

/// `throughput` of an agent's detail (null until it reported its own metrics).
pub fn agent(fleet: &Fleet, uid: &Uid) -> Value {
    fleet
        .throughput()
        .agent(uid)
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or(Value::Null)
}

/// `telemetry` of a configuration: where its agents' own telemetry goes (header values masked).
pub fn configuration_destination(
    fleet: &Fleet,
    spec: Option<&gitamp_core::catalog::telemetry::OwnTelemetrySpec>,
) -> Value {
    let own = own_telemetry::of_configuration(spec, fleet.offer_settings().receiver);
    serde_json::to_value(gitamp_opamp::offers::masked(&own)).unwrap_or(Value::Null)
}

/// `throughput` of a configuration: its agents' rates summed per component kind, and the agents
/// that accept the most items.
pub fn configuration(fleet: &Fleet, view: &FleetView, name: &str) -> Value {
    let mut per_kind: BTreeMap<Kind, Counts> = BTreeMap::new();
    let mut per_agent: BTreeMap<Uid, (f64, f64)> = BTreeMap::new();
    for (uid, kind, rates) in fleet.throughput().rates() {
        if view
            .agents
            .get(&uid)
            .and_then(|v| v.configuration.as_deref())
            != Some(name)
        {
            continue;
        }
        per_kind.entry(kind).or_default().add(&rates);
        let entry = per_agent.entry(uid).or_default();
        match kind {
            Kind::Receiver => entry.0 += rates.accepted.unwrap_or(0.0),
            Kind::Exporter => entry.1 += rates.sent.unwrap_or(0.0),
            Kind::Processor => {}
        }
    }
    let mut top: Vec<_> = per_agent.iter().collect();
    top.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then(a.0.cmp(b.0)));
    json!({
        "agents_reporting": per_agent.len(),
        "per_second": per_kind
            .iter()
            .map(|(k, c)| (k.as_str().to_owned(), serde_json::to_value(c).unwrap_or(Value::Null)))
            .collect::<serde_json::Map<_, _>>(),
        "top_agents": top
            .into_iter()
            .take(TOP_AGENTS)
            .map(|(uid, (accepted, sent))| json!({
                "uid": uid_text(uid),
                "accepted_per_second": accepted,
                "sent_per_second": sent,
            }))
            .collect::<Vec<_>>(),
    })
}

//! Per agent and per pipeline component, the items accepted, refused, sent and failed, and their
//! current rates, from the collector's own metrics (`otelcol_receiver_*`, `otelcol_processor_*`,
//! `otelcol_exporter_*`).
//!
//! The collector exports cumulative sums (one series per component and transport or signal);
//! each export is summed per component and compared with the previous one: the rate is the
//! increase over the time between the two exports. A sum that went down or a new start time is a
//! collector restart: the totals start again and the rate waits for the next export. Memory is
//! bounded: only agents the registry knows are kept, at most [`MAX_COMPONENTS`] components each.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use crate::wire::Uid;

/// Components kept per agent; more are ignored (and counted in `dropped_components`).
pub const MAX_COMPONENTS: usize = 64;

/// Longest component ID kept (longer ones are ignored as malformed).
const MAX_ID_LEN: usize = 128;

/// A pipeline component's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A receiver.
    Receiver,
    /// A processor.
    Processor,
    /// An exporter.
    Exporter,
}

impl Kind {
    /// Its name (`receiver`, ...), also the metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Receiver => "receiver",
            Kind::Processor => "processor",
            Kind::Exporter => "exporter",
        }
    }
}

/// What happened to items at a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Measure {
    /// Accepted by a receiver; entering a processor.
    Accepted,
    /// Refused by a receiver (the next component said no).
    Refused,
    /// Sent by an exporter; leaving a processor.
    Sent,
    /// Failed at a receiver, or an exporter failed to send or enqueue them.
    Failed,
}

impl Measure {
    /// Every measure, in display order.
    pub const ALL: [Measure; 4] = [
        Measure::Accepted,
        Measure::Refused,
        Measure::Sent,
        Measure::Failed,
    ];

    /// Its name, also the metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Accepted => "accepted",
            Measure::Refused => "refused",
            Measure::Sent => "sent",
            Measure::Failed => "failed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The component, measure and the data point attribute naming the component, for one of the
/// collector's own metric names (`None`: not one we keep).
pub fn classify(name: &str) -> Option<(Kind, Measure, &'static str)> {
    let name = name.strip_suffix("_total").unwrap_or(name);
    let rest = name.strip_prefix("otelcol_")?;
    let (kind, attr, rest) = if let Some(r) = rest.strip_prefix("receiver_") {
        (Kind::Receiver, "receiver", r)
    } else if let Some(r) = rest.strip_prefix("processor_") {
        (Kind::Processor, "processor", r)
    } else if let Some(r) = rest.strip_prefix("exporter_") {
        (Kind::Exporter, "exporter", r)
    } else {
        return None;
    };
    const SIGNALS: [&str; 4] = ["spans", "metric_points", "log_records", "profile_samples"];
    let per_signal = |prefix: &str| {
        rest.strip_prefix(prefix)
            .is_some_and(|signal| SIGNALS.contains(&signal))
    };
    let measure = match kind {
        Kind::Receiver if per_signal("accepted_") => Measure::Accepted,
        Kind::Receiver if per_signal("refused_") => Measure::Refused,
        Kind::Receiver if per_signal("failed_") => Measure::Failed,
        Kind::Processor if rest == "incoming_items" => Measure::Accepted,
        Kind::Processor if rest == "outgoing_items" => Measure::Sent,
        Kind::Exporter if per_signal("sent_") => Measure::Sent,
        Kind::Exporter if per_signal("send_failed_") || per_signal("enqueue_failed_") => {
            Measure::Failed
        }
        _ => return None,
    };
    Some((kind, measure, attr))
}

/// One export's sums for one component.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Sum over the component's series, per [`Measure`] (cumulative, or this export's increase
    /// for delta sums).
    pub values: [f64; 4],
    /// Whether each value was present in the export.
    pub present: [bool; 4],
    /// Whether the sums are deltas.
    pub delta: bool,
    /// Latest data point time (ns since the epoch).
    pub time_ns: u64,
    /// Earliest start time (ns since the epoch).
    pub start_ns: u64,
}

impl Sample {
    /// Adds one data point.
    pub fn add(&mut self, measure: Measure, value: f64, time_ns: u64, start_ns: u64, delta: bool) {
        let i = measure.index();
        self.values[i] += value;
        self.present[i] = true;
        self.delta |= delta;
        self.time_ns = self.time_ns.max(time_ns);
        self.start_ns = if self.start_ns == 0 {
            start_ns
        } else {
            self.start_ns.min(start_ns)
        };
    }
}

/// One component's totals and rates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentThroughput {
    /// `receiver`, `processor` or `exporter`.
    pub kind: Kind,
    /// The component ID (`otlp`, `batch`, `otlphttp/backend`).
    pub id: String,
    /// Items since the collector started, per measure (absent: the component has none).
    pub totals: Counts,
    /// Items per second over the last reporting interval (none until two exports were seen).
    pub rates: Option<Counts>,
    #[serde(skip)]
    time_ns: u64,
    #[serde(skip)]
    start_ns: u64,
}

/// A value per measure (absent where the component has no such measure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Accepted (receivers), incoming (processors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted: Option<f64>,
    /// Refused (receivers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<f64>,
    /// Sent (exporters), outgoing (processors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<f64>,
    /// Failed (receivers), failed to send or enqueue (exporters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<f64>,
}

impl Counts {
    /// The value of one measure.
    pub fn get(&self, m: Measure) -> Option<f64> {
        match m {
            Measure::Accepted => self.accepted,
            Measure::Refused => self.refused,
            Measure::Sent => self.sent,
            Measure::Failed => self.failed,
        }
    }

    fn set(&mut self, m: Measure, v: Option<f64>) {
        match m {
            Measure::Accepted => self.accepted = v,
            Measure::Refused => self.refused = v,
            Measure::Sent => self.sent = v,
            Measure::Failed => self.failed = v,
        }
    }

    /// Adds `other` measure by measure (absent stays absent only if absent in both).
    pub fn add(&mut self, other: &Counts) {
        for m in Measure::ALL {
            if let Some(v) = other.get(m) {
                self.set(m, Some(self.get(m).unwrap_or(0.0) + v));
            }
        }
    }
}

/// One agent's components and when it last reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgentThroughput {
    /// By component (`kind/id` order).
    pub components: Vec<ComponentThroughput>,
    /// When the last export arrived.
    #[serde(serialize_with = "crate::ser::ser_opt_time")]
    pub updated: Option<SystemTime>,
    /// Components ignored because the agent had [`MAX_COMPONENTS`] already.
    pub dropped_components: u64,
}

impl AgentThroughput {
    /// The sum of every component of `kind`'s rates (none until a rate is known).
    pub fn rates_of(&self, kind: Kind) -> Option<Counts> {
        let mut sum: Option<Counts> = None;
        for c in self.components.iter().filter(|c| c.kind == kind) {
            if let Some(r) = &c.rates {
                sum.get_or_insert_with(Counts::default).add(r);
            }
        }
        sum
    }
}

#[derive(Debug, Default)]
struct AgentState {
    components: BTreeMap<(Kind, String), ComponentThroughput>,
    updated: Option<SystemTime>,
    dropped: u64,
}

/// Every agent's throughput. Share it through the registry ([`crate::Fleet::throughput`]).
#[derive(Debug, Default)]
pub struct Throughput {
    agents: Mutex<HashMap<Uid, AgentState>>,
}

impl Throughput {
    /// Folds one export of agent `uid` in (`samples` by component).
    pub fn record(&self, uid: Uid, samples: BTreeMap<(Kind, String), Sample>, now: SystemTime) {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        let agent = agents.entry(uid).or_default();
        agent.updated = Some(now);
        for ((kind, id), s) in samples {
            if id.len() > MAX_ID_LEN {
                continue;
            }
            let key = (kind, id);
            if !agent.components.contains_key(&key) && agent.components.len() >= MAX_COMPONENTS {
                agent.dropped += 1;
                continue;
            }
            let entry =
                agent
                    .components
                    .entry(key.clone())
                    .or_insert_with(|| ComponentThroughput {
                        kind,
                        id: key.1.clone(),
                        totals: Counts::default(),
                        rates: None,
                        time_ns: 0,
                        start_ns: 0,
                    });
            fold(entry, &s);
        }
    }

    /// One agent's throughput, if it ever reported.
    pub fn agent(&self, uid: &Uid) -> Option<AgentThroughput> {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        agents.get(uid).map(|a| AgentThroughput {
            components: a.components.values().cloned().collect(),
            updated: a.updated,
            dropped_components: a.dropped,
        })
    }

    /// Every agent's sum of rates per kind (for aggregates): `(uid, kind, rates)`.
    pub fn rates(&self) -> Vec<(Uid, Kind, Counts)> {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (uid, a) in agents.iter() {
            let mut per_kind: BTreeMap<Kind, Counts> = BTreeMap::new();
            for c in a.components.values() {
                if let Some(r) = &c.rates {
                    per_kind.entry(c.kind).or_default().add(r);
                }
            }
            out.extend(per_kind.into_iter().map(|(k, r)| (*uid, k, r)));
        }
        out
    }

    /// An estimate of the memory held, in bytes: entries, keys and IDs as allocated, plus a
    /// share of the maps' own overhead (what `/metrics` and `gitamp bench otlp` report).
    pub fn approx_bytes(&self) -> usize {
        const MAP_SLOT: usize = 16;
        const TREE_SHARE: usize = 24;
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        agents
            .values()
            .map(|a| {
                std::mem::size_of::<(Uid, AgentState)>()
                    + MAP_SLOT
                    + a.components
                        .iter()
                        .map(|((_, id), c)| {
                            std::mem::size_of::<((Kind, String), ComponentThroughput)>()
                                + TREE_SHARE
                                + id.capacity()
                                + c.id.capacity()
                        })
                        .sum::<usize>()
            })
            .sum()
    }

    /// How many agents have reported.
    pub fn len(&self) -> usize {
        self.agents.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True if no agent has reported.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Folds one export into a component: new totals, and the rate since the previous export.
/// A new start time, or a cumulative sum that went down, is a collector restart: the totals
/// start again from this export and the rate waits for the next one.
fn fold(c: &mut ComponentThroughput, s: &Sample) {
    let restarted = s.start_ns != 0 && c.start_ns != 0 && s.start_ns != c.start_ns;
    let went_down = !s.delta
        && Measure::ALL.iter().any(|m| {
            s.present[m.index()]
                && c.totals
                    .get(*m)
                    .is_some_and(|prev| s.values[m.index()] < prev)
        });
    let fresh = c.time_ns == 0 || restarted || went_down;
    let dt = s.time_ns.saturating_sub(c.time_ns) as f64 / 1e9;
    let mut rates = Counts::default();
    for m in Measure::ALL {
        let i = m.index();
        if !s.present[i] {
            continue;
        }
        let prev = if fresh { None } else { c.totals.get(m) };
        let (total, increase) = match (s.delta, prev) {
            (true, prev) => (prev.unwrap_or(0.0) + s.values[i], s.values[i]),
            (false, Some(prev)) => (s.values[i], s.values[i] - prev),
            (false, None) => (s.values[i], 0.0),
        };
        c.totals.set(m, Some(total));
        rates.set(m, Some(increase / dt.max(f64::MIN_POSITIVE)));
    }
    c.rates = (!fresh && dt > 0.0).then_some(rates);
    c.time_ns = if fresh {
        s.time_ns
    } else {
        s.time_ns.max(c.time_ns)
    };
    if s.start_ns != 0 {
        c.start_ns = s.start_ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(accepted: f64, sent: Option<f64>, t_s: u64) -> Sample {
        let mut s = Sample::default();
        s.add(Measure::Accepted, accepted, t_s * 1_000_000_000, 1, false);
        if let Some(v) = sent {
            s.add(Measure::Sent, v, t_s * 1_000_000_000, 1, false);
        }
        s
    }

    fn one(t: &Throughput, uid: Uid) -> ComponentThroughput {
        t.agent(&uid).expect("agent").components[0].clone()
    }

    #[test]
    fn names_map_to_components_and_measures() {
        assert_eq!(
            classify("otelcol_receiver_accepted_metric_points"),
            Some((Kind::Receiver, Measure::Accepted, "receiver"))
        );
        assert_eq!(
            classify("otelcol_exporter_send_failed_log_records_total"),
            Some((Kind::Exporter, Measure::Failed, "exporter"))
        );
        assert_eq!(
            classify("otelcol_processor_outgoing_items"),
            Some((Kind::Processor, Measure::Sent, "processor"))
        );
        assert_eq!(classify("otelcol_exporter_queue_size"), None);
        assert_eq!(classify("otelcol_process_uptime"), None);
        assert_eq!(classify("http.server.request.duration"), None);
    }

    #[test]
    fn rates_come_from_two_exports_and_restarts_start_again() {
        let t = Throughput::default();
        let uid = [1; 16];
        let key = (Kind::Receiver, "otlp".to_string());
        let now = SystemTime::now();
        t.record(
            uid,
            BTreeMap::from([(key.clone(), sample(100.0, None, 10))]),
            now,
        );
        let c = one(&t, uid);
        assert_eq!(c.totals.accepted, Some(100.0));
        assert_eq!(c.rates, None);
        t.record(
            uid,
            BTreeMap::from([(key.clone(), sample(300.0, None, 20))]),
            now,
        );
        let c = one(&t, uid);
        assert_eq!(c.totals.accepted, Some(300.0));
        assert_eq!(c.rates.expect("rate").accepted, Some(20.0));
        assert_eq!(c.rates.expect("rate").sent, None);
        // A collector restart: the sum went down.
        t.record(
            uid,
            BTreeMap::from([(key.clone(), sample(5.0, None, 30))]),
            now,
        );
        let c = one(&t, uid);
        assert_eq!(c.totals.accepted, Some(5.0));
        assert_eq!(c.rates, None);
        t.record(uid, BTreeMap::from([(key, sample(25.0, None, 40))]), now);
        assert_eq!(one(&t, uid).rates.expect("rate").accepted, Some(2.0));
    }

    #[test]
    fn components_per_agent_are_capped() {
        let t = Throughput::default();
        let uid = [2; 16];
        let many: BTreeMap<_, _> = (0..MAX_COMPONENTS + 10)
            .map(|i| {
                (
                    (Kind::Exporter, format!("otlp/{i}")),
                    sample(1.0, Some(1.0), 1),
                )
            })
            .collect();
        t.record(uid, many, SystemTime::now());
        let a = t.agent(&uid).expect("agent");
        assert_eq!(a.components.len(), MAX_COMPONENTS);
        assert_eq!(a.dropped_components, 10);
    }
}

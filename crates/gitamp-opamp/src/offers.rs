//! Connection-settings offers (`ServerToAgent.connection_settings`): the heartbeat interval the
//! server wants, and where an agent sends its own metrics and logs.
//!
//! What the real clients do with an offer decides what is sent (opamp-go v0.23, the collector's
//! supervisor v0.158):
//! - opamp-go applies `opamp.heartbeat_interval_seconds` itself to any agent with
//!   ReportsHeartbeat, without a reconnect; an HTTP client refuses 0. So the interval is always
//!   positive (at least 1 s).
//! - only an agent with AcceptsOpAMPConnectionSettings hands `opamp` to its owner, and the
//!   supervisor then *replaces* its server settings with the offer and reconnects: no TLS
//!   certificate means "skip verification", no headers means none. So the `opamp` part always
//!   repeats how the agent reached us: the URL (scheme, the `Host` it sent, the path), its own
//!   `Authorization` header, and over TLS our certificate chain as the CA to trust.
//! - `own_metrics` / `own_logs` reach an agent only with ReportsOwnMetrics / ReportsOwnLogs; the
//!   supervisor writes them into the collector's `service.telemetry` (OTLP/HTTP periodic reader
//!   for metrics) and restarts the collector, so an unchanged offer must never be resent.
//!
//! Every offer carries a hash over everything in it; an agent is sent an offer when its hash
//! differs from the last one it was sent. The agent's ConnectionSettingsStatus (if it reports
//! one) is kept as reported: a FAILED offer is shown, never retried in a loop (the same hash is
//! not sent again until something in it changes).
//!
//! What was last offered outlives this process: it is stored with the agent's record
//! ([`SentOffer::to_text`]) and handed back after a restart ([`Fleet::remember_offers`]) or, on
//! a replica, when an agent comes from another one ([`Fleet::resume_offer`]). Until then an
//! agent that reconnects on an `opamp` offer is offered nothing: resending what another server
//! already sent would make it reconnect once more on every server it reaches.
//!
//! [`Fleet::remember_offers`]: crate::Fleet::remember_offers
//! [`Fleet::resume_offer`]: crate::Fleet::resume_offer

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use prost::Message;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::proto::{self, AgentCapabilities as Cap};
use crate::ser::ser_hex;

/// The path of gitamp's own OTLP/HTTP metrics receiver on the OpAMP listener.
pub const OTLP_METRICS_PATH: &str = "/v1/metrics";

/// One OTLP/HTTP destination for an agent's own telemetry, as declared in Git. Header values
/// are sent as written (secrets as `${env:NAME}`, which the collector resolves on its side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Destination {
    /// The full OTLP/HTTP URL (e.g. `https://otlp.example.com/v1/metrics`).
    pub endpoint: String,
    /// Request headers.
    pub headers: BTreeMap<String, String>,
}

/// Where an agent's own telemetry goes: what the reconciler decides for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OwnTelemetry {
    /// Nowhere (no destination declared and gitamp's receiver is off): an agent that reports its
    /// own telemetry is offered an empty destination, which turns it off.
    None,
    /// gitamp's own receiver, metrics only (the URL is the one the agent reached us at).
    Gitamp,
    /// Declared in the agent's configuration.
    Declared {
        /// Own metrics destination.
        metrics: Option<Destination>,
        /// Own logs destination.
        logs: Option<Destination>,
    },
}

/// How an agent reached this server: what an `opamp` offer must repeat, and what a default
/// own-metrics URL is built from. Taken from the request that carried its message.
#[derive(Clone, PartialEq, Eq)]
pub struct Reach {
    /// `Host` header of the upgrade or POST (empty if absent).
    pub host: String,
    /// The agent's `Authorization` header, repeated so an agent that replaces its settings
    /// keeps its credentials.
    pub authorization: Option<String>,
}

impl std::fmt::Debug for Reach {
    // Hand-written: the credentials never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reach")
            .field("host", &self.host)
            .field("authorization", &self.authorization.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Server-wide facts every offer is built from.
#[derive(Debug, Clone, Default)]
pub struct OfferSettings {
    /// The heartbeat interval to offer (the interval liveness is judged by); `None` offers none.
    pub heartbeat: Option<Duration>,
    /// The OpAMP path (for the `opamp` offer's URL).
    pub opamp_path: String,
    /// Over TLS: the server's certificate chain (PEM), offered as the CA to trust.
    pub tls_ca_pem: Option<Bytes>,
    /// gitamp's own receiver is served: agents with no declared destination are offered it.
    pub receiver: bool,
}

impl OfferSettings {
    fn scheme(&self, ws: bool) -> &'static str {
        match (self.tls_ca_pem.is_some(), ws) {
            (false, false) => "http",
            (false, true) => "ws",
            (true, false) => "https",
            (true, true) => "wss",
        }
    }

    /// Whole seconds, rounded down so an agent never beats slower than liveness expects; none
    /// under 1 s (OpAMP cannot say it, 0 means "no heartbeats" and HTTP clients reject it).
    pub fn heartbeat_seconds(&self) -> Option<u64> {
        self.heartbeat.map(|d| d.as_secs()).filter(|s| *s > 0)
    }
}

/// What an agent reported about the last offer it processed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingsStatus {
    /// The hash of the offer it refers to.
    #[serde(serialize_with = "ser_hex")]
    pub hash: Bytes,
    /// `applied`, `applying`, `failed` or `unset`.
    pub status: &'static str,
    /// The agent's error text (FAILED).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

impl SettingsStatus {
    /// From the wire message.
    pub fn of(s: &proto::ConnectionSettingsStatus) -> SettingsStatus {
        let status = match proto::ConnectionSettingsStatuses::try_from(s.status) {
            Ok(proto::ConnectionSettingsStatuses::Applied) => "applied",
            Ok(proto::ConnectionSettingsStatuses::Applying) => "applying",
            Ok(proto::ConnectionSettingsStatuses::Failed) => "failed",
            _ => "unset",
        };
        SettingsStatus {
            hash: Bytes::copy_from_slice(&s.last_connection_settings_hash),
            status,
            error: s.error_message.clone(),
        }
    }
}

/// One agent's offer state, kept in its registry entry.
#[derive(Debug, Clone, Default)]
pub struct AgentOffers {
    /// How it reached us last.
    pub(crate) reach: Option<Arc<Reach>>,
    /// Where its own telemetry should go (set by the reconciler; none until it decided, and
    /// nothing of it is offered until then).
    pub(crate) own: Option<Arc<OwnTelemetry>>,
    /// `own` as shown (masked once when set, not on every snapshot of the agent).
    own_shown: Option<Arc<OwnTelemetry>>,
    /// The last offer sent to it.
    pub(crate) sent: Option<SentOffer>,
    /// The inputs of the last offer composed: a message with the same ones has nothing new to
    /// offer, so most messages skip composing and hashing.
    composed_from: Option<Inputs>,
    /// What it reported about an offer.
    pub(crate) status: Option<SettingsStatus>,
    /// Since when what earlier servers offered it is being read (a replica's agent that came
    /// from elsewhere): an agent that reconnects on an `opamp` offer is offered nothing until
    /// then, or for at most [`OFFER_HISTORY_WAIT`].
    reading_history: Option<Instant>,
    /// When (ms since the epoch) its process last started anew, as far as its messages say
    /// (see [`AgentOffers::agent_restarted`]).
    started_at: Option<u64>,
}

/// An agent that replaces its connection on an `opamp` offer (the supervisor) starts a new
/// session just as a restarted process does: sequence number 0, its description. One that does
/// so within this long of an offer is taken to be reconnecting on it, and is not offered the
/// same again (that would loop); later, to be a new process that forgot its heartbeat interval,
/// and is offered it again.
pub const RECONNECT_ON_OFFER: Duration = Duration::from_secs(10);

/// How long an agent's offer waits for what earlier servers offered it: a read that never
/// answers (a database outage) delays its offer, never withholds it.
pub const OFFER_HISTORY_WAIT: Duration = Duration::from_secs(10);

/// What was last offered to an agent: kept with its record, so that a restarted server, or
/// another replica, does not offer the same again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SentOffer {
    /// The hash of the whole offer.
    hash: [u8; 32],
    /// A digest of its `opamp` part: an unchanged part is left out of the next offer, since an
    /// agent that accepts it reconnects on every one it gets.
    opamp: Option<[u8; 32]>,
    /// The heartbeat interval offered.
    heartbeat: Option<u64>,
    /// When it was sent (ms since the epoch, the registry's clock).
    at_ms: u64,
}

impl SentOffer {
    /// The stored form: `<hash>/<opamp digest>/<heartbeat seconds>/<sent at, ms>` (digests in
    /// hex; the second and third empty when the offer had no `opamp` part).
    pub fn to_text(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            hex::encode(self.hash),
            self.opamp.map(hex::encode).unwrap_or_default(),
            self.heartbeat.map(|s| s.to_string()).unwrap_or_default(),
            self.at_ms
        )
    }

    /// Whether an agent that starts a new session at `now_ms` is still reconnecting on this
    /// offer (see [`RECONNECT_ON_OFFER`]).
    fn reconnecting_on_it(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.at_ms) <= RECONNECT_ON_OFFER.as_millis() as u64
    }

    /// The inverse of [`SentOffer::to_text`]; `None` for anything else (a row written by
    /// another version is then treated as "never offered": the offer is sent again).
    pub fn from_text(text: &str) -> Option<SentOffer> {
        let mut parts = text.split('/');
        let digest = |s: &str| -> Option<[u8; 32]> { hex::decode(s).ok()?.try_into().ok() };
        let hash = digest(parts.next()?)?;
        let opamp = match parts.next()? {
            "" => None,
            d => Some(digest(d)?),
        };
        let heartbeat = match parts.next()? {
            "" => None,
            n => Some(n.parse().ok()?),
        };
        let at_ms = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(SentOffer {
            hash,
            opamp,
            heartbeat,
            at_ms,
        })
    }
}

/// What an offer is built from, compared cheaply: the shared values by identity (they are
/// replaced, never changed in place; holding them keeps an address from being reused).
#[derive(Debug, Clone)]
struct Inputs {
    caps: u64,
    ws: bool,
    reach: Arc<Reach>,
    own: Option<Arc<OwnTelemetry>>,
    settings: Arc<OfferSettings>,
}

impl Inputs {
    fn same(
        &self,
        caps: u64,
        ws: bool,
        offers: &AgentOffers,
        settings: &Arc<OfferSettings>,
    ) -> bool {
        self.caps == caps
            && self.ws == ws
            && offers
                .reach
                .as_ref()
                .is_some_and(|r| Arc::ptr_eq(r, &self.reach))
            && match (&offers.own, &self.own) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
            && Arc::ptr_eq(settings, &self.settings)
    }
}

/// What the API shows of an agent's offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OffersView {
    /// The heartbeat interval last offered, in seconds (none offered: the agent's default).
    pub heartbeat_interval_seconds: Option<u64>,
    /// Hash of the last offer sent.
    pub offered_hash: Option<String>,
    /// Where its own telemetry goes (header values masked); none before the plan decided.
    pub own_telemetry: Option<Arc<OwnTelemetry>>,
    /// What it reported about the offer (ConnectionSettingsStatus), if it reports one.
    pub status: Option<SettingsStatus>,
}

impl AgentOffers {
    /// The offer due on a message with capabilities `caps` over `ws` (a WebSocket) or HTTP:
    /// `Some` when it differs from the last one sent (recorded as sent at `now_ms`).
    pub(crate) fn take_due(
        &mut self,
        caps: u64,
        ws: bool,
        settings: &Arc<OfferSettings>,
        now_ms: u64,
    ) -> Option<proto::ConnectionSettingsOffers> {
        if let Some(since) = self.reading_history {
            if has(caps, Cap::AcceptsOpAmpConnectionSettings)
                && since.elapsed() < OFFER_HISTORY_WAIT
            {
                return None;
            }
            self.reading_history = None;
        }
        if self
            .composed_from
            .as_ref()
            .is_some_and(|i| i.same(caps, ws, self, settings))
        {
            return None;
        }
        let reach = Arc::clone(self.reach.as_ref()?);
        self.composed_from = Some(Inputs {
            caps,
            ws,
            reach: Arc::clone(&reach),
            own: self.own.clone(),
            settings: Arc::clone(settings),
        });
        let mut offer = compose(caps, ws, settings, &reach, self.own.as_deref())?;
        let hash: [u8; 32] = offer.hash[..].try_into().ok()?;
        if self.sent.map(|s| s.hash) == Some(hash) {
            return None;
        }
        let opamp = offer.opamp.as_ref().map(digest);
        let heartbeat = offer.opamp.as_ref().map(|o| o.heartbeat_interval_seconds);
        if opamp.is_some() && self.sent.and_then(|s| s.opamp) == opamp {
            offer.opamp = None;
        }
        self.sent = Some(SentOffer {
            hash,
            opamp,
            heartbeat,
            at_ms: now_ms,
        });
        Some(offer)
    }

    /// The agent started a new session at `now_ms` as a new process does: forget what was sent
    /// (it forgot the heartbeat interval), unless it replaces its connection on an `opamp`
    /// offer and this is that reconnect, within [`RECONNECT_ON_OFFER`] of the offer (resending
    /// then would make it reconnect again, in a loop).
    pub(crate) fn agent_restarted(&mut self, caps: u64, now_ms: u64) {
        self.started_at = Some(now_ms);
        let reconnecting = has(caps, Cap::AcceptsOpAmpConnectionSettings)
            && self.sent.is_some_and(|s| s.reconnecting_on_it(now_ms));
        if !reconnecting {
            self.sent = None;
            self.composed_from = None;
        }
    }

    /// The last offer sent, if any.
    pub(crate) fn sent(&self) -> Option<SentOffer> {
        self.sent
    }

    /// What earlier servers offered it is to be read before anything is offered (see
    /// [`AgentOffers::take_due`]).
    pub(crate) fn read_history(&mut self) {
        self.reading_history = Some(Instant::now());
    }

    /// What an earlier server (this one before a restart, or another replica) last offered
    /// it: taken as sent unless this server offered it something since, or the agent started
    /// anew after that offer (see [`AgentOffers::agent_restarted`]).
    pub(crate) fn resume(&mut self, earlier: Option<SentOffer>) {
        self.reading_history = None;
        let Some(earlier) = earlier else {
            return;
        };
        let forgotten = self
            .started_at
            .is_some_and(|at| !earlier.reconnecting_on_it(at));
        if self.sent.is_none() && !forgotten {
            self.sent = Some(earlier);
            self.composed_from = None;
        }
    }

    /// Sets the destination; true if it changed.
    pub(crate) fn set_own(&mut self, own: Arc<OwnTelemetry>) -> bool {
        if self.own.as_deref() == Some(&*own) {
            return false;
        }
        self.own_shown = Some(Arc::new(masked(&own)));
        self.own = Some(own);
        true
    }

    /// What the API shows.
    pub(crate) fn view(&self) -> OffersView {
        OffersView {
            heartbeat_interval_seconds: self.sent.and_then(|s| s.heartbeat),
            offered_hash: self.sent.map(|s| hex::encode(&s.hash[..8])),
            own_telemetry: self.own_shown.clone(),
            status: self.status.clone(),
        }
    }
}

/// The destination with every header value replaced by `***`: header values are credentials
/// more often than not, and they are never shown.
pub fn masked(own: &OwnTelemetry) -> OwnTelemetry {
    let mask = |d: &Option<Destination>| {
        d.as_ref().map(|d| Destination {
            endpoint: d.endpoint.clone(),
            headers: d
                .headers
                .keys()
                .map(|k| (k.clone(), "***".to_owned()))
                .collect(),
        })
    };
    match own {
        OwnTelemetry::Declared { metrics, logs } => OwnTelemetry::Declared {
            metrics: mask(metrics),
            logs: mask(logs),
        },
        other => other.clone(),
    }
}

fn digest(m: &impl Message) -> [u8; 32] {
    Sha256::digest(m.encode_to_vec()).into()
}

fn has(caps: u64, c: Cap) -> bool {
    caps & c as u64 != 0
}

fn headers(pairs: impl IntoIterator<Item = (String, String)>) -> Option<proto::Headers> {
    let headers: Vec<_> = pairs
        .into_iter()
        .map(|(key, value)| proto::Header { key, value })
        .collect();
    (!headers.is_empty()).then_some(proto::Headers { headers })
}

fn telemetry(d: &Destination) -> proto::TelemetryConnectionSettings {
    proto::TelemetryConnectionSettings {
        destination_endpoint: d.endpoint.clone(),
        headers: headers(d.headers.clone()),
        ..Default::default()
    }
}

/// The complete offer for an agent, with its hash, or `None` when there is nothing to offer
/// it (no capability asks for any part).
pub fn compose(
    caps: u64,
    ws: bool,
    settings: &OfferSettings,
    reach: &Reach,
    own: Option<&OwnTelemetry>,
) -> Option<proto::ConnectionSettingsOffers> {
    let authorization = || {
        reach
            .authorization
            .clone()
            .map(|v| ("Authorization".to_owned(), v))
    };
    let opamp = settings
        .heartbeat_seconds()
        .filter(|_| has(caps, Cap::ReportsHeartbeat) && !reach.host.is_empty())
        .map(|secs| proto::OpAmpConnectionSettings {
            destination_endpoint: format!(
                "{}://{}{}",
                settings.scheme(ws),
                reach.host,
                settings.opamp_path
            ),
            headers: headers(authorization()),
            certificate: settings
                .tls_ca_pem
                .clone()
                .map(|ca_cert| proto::TlsCertificate {
                    ca_cert,
                    ..Default::default()
                }),
            heartbeat_interval_seconds: secs,
            ..Default::default()
        });
    // An empty destination turns the agent's own telemetry off (the supervisor removes it).
    let off = || Some(proto::TelemetryConnectionSettings::default());
    let (metrics, logs) = match own {
        None => (None, None),
        Some(OwnTelemetry::None) => (off(), off()),
        Some(OwnTelemetry::Gitamp) if reach.host.is_empty() => (None, None),
        Some(OwnTelemetry::Gitamp) => (
            Some(proto::TelemetryConnectionSettings {
                destination_endpoint: format!(
                    "{}://{}{OTLP_METRICS_PATH}",
                    settings.scheme(false),
                    reach.host
                ),
                headers: headers(authorization()),
                ..Default::default()
            }),
            off(),
        ),
        Some(OwnTelemetry::Declared { metrics, logs }) => (
            metrics.as_ref().map(telemetry).or_else(off),
            logs.as_ref().map(telemetry).or_else(off),
        ),
    };
    let mut offer = proto::ConnectionSettingsOffers {
        opamp,
        own_metrics: metrics.filter(|_| has(caps, Cap::ReportsOwnMetrics)),
        own_logs: logs.filter(|_| has(caps, Cap::ReportsOwnLogs)),
        ..Default::default()
    };
    if offer.opamp.is_none() && offer.own_metrics.is_none() && offer.own_logs.is_none() {
        return None;
    }
    // The encoding is deterministic (no maps in these messages; headers in key order).
    offer.hash = Bytes::copy_from_slice(&digest(&offer));
    Some(offer)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HB: u64 = Cap::ReportsStatus as u64 | Cap::ReportsHeartbeat as u64;
    /// When the tests' offers are sent (ms since the epoch).
    const T0: u64 = 1_000_000;

    fn settings() -> OfferSettings {
        OfferSettings {
            heartbeat: Some(Duration::from_secs(5)),
            opamp_path: "/v1/opamp".into(),
            tls_ca_pem: None,
            receiver: true,
        }
    }

    fn reach() -> Reach {
        Reach {
            host: "gitamp:4320".into(),
            authorization: Some("Bearer s3cret".into()),
        }
    }

    #[test]
    fn opamp_offer_repeats_how_the_agent_reached_us() {
        let o = compose(HB, true, &settings(), &reach(), Some(&OwnTelemetry::None)).expect("offer");
        let opamp = o.opamp.expect("opamp");
        assert_eq!(opamp.destination_endpoint, "ws://gitamp:4320/v1/opamp");
        assert_eq!(opamp.heartbeat_interval_seconds, 5);
        let h = opamp.headers.expect("headers").headers;
        assert_eq!(
            (h[0].key.as_str(), h[0].value.as_str()),
            ("Authorization", "Bearer s3cret")
        );
        assert!(opamp.certificate.is_none());
        assert_eq!(o.hash.len(), 32);
        let tls = OfferSettings {
            tls_ca_pem: Some(Bytes::from_static(b"PEM")),
            ..settings()
        };
        let o = compose(HB, false, &tls, &reach(), Some(&OwnTelemetry::None)).expect("offer");
        let opamp = o.opamp.expect("opamp");
        assert_eq!(opamp.destination_endpoint, "https://gitamp:4320/v1/opamp");
        assert_eq!(&opamp.certificate.expect("ca").ca_cert[..], b"PEM");
    }

    #[test]
    fn each_part_needs_its_capability_and_the_interval_is_positive() {
        let s = OfferSettings {
            heartbeat: Some(Duration::from_millis(1500)),
            ..settings()
        };
        assert_eq!(s.heartbeat_seconds(), Some(1));
        let sub_second = OfferSettings {
            heartbeat: Some(Duration::from_millis(200)),
            ..settings()
        };
        assert_eq!(sub_second.heartbeat_seconds(), None);
        let status_only = Cap::ReportsStatus as u64;
        assert!(compose(status_only, true, &s, &reach(), Some(&OwnTelemetry::Gitamp)).is_none());
        let metrics = status_only | Cap::ReportsOwnMetrics as u64;
        let o = compose(metrics, true, &s, &reach(), Some(&OwnTelemetry::Gitamp)).expect("offer");
        assert!(o.opamp.is_none());
        assert_eq!(
            o.own_metrics.expect("metrics").destination_endpoint,
            "http://gitamp:4320/v1/metrics"
        );
        let declared = OwnTelemetry::Declared {
            metrics: None,
            logs: Some(Destination {
                endpoint: "https://logs.example/v1/logs".into(),
                headers: BTreeMap::from([("X-Key".into(), "${env:KEY}".into())]),
            }),
        };
        // Logs declared, agent reports only its metrics: their destination is turned off.
        let o = compose(metrics, true, &s, &reach(), Some(&declared)).expect("offer");
        assert_eq!(
            o.own_metrics,
            Some(proto::TelemetryConnectionSettings::default())
        );
        assert!(o.own_logs.is_none());
        let logs = status_only | Cap::ReportsOwnLogs as u64;
        let o = compose(logs, true, &s, &reach(), Some(&declared)).expect("offer");
        assert_eq!(
            o.own_logs.expect("logs").headers.expect("h").headers[0].value,
            "${env:KEY}"
        );
    }

    #[test]
    fn an_offer_goes_once_per_hash_and_again_after_a_restart() {
        let mut a = AgentOffers {
            reach: Some(Arc::new(reach())),
            ..AgentOffers::default()
        };
        let first = a
            .take_due(HB, true, &Arc::new(settings()), T0)
            .expect("first");
        assert!(a.take_due(HB, true, &Arc::new(settings()), T0).is_none());
        // A change of destination is a new offer with another hash.
        assert!(a.set_own(Arc::new(OwnTelemetry::Gitamp)));
        assert!(!a.set_own(Arc::new(OwnTelemetry::Gitamp)));
        let caps = HB | Cap::ReportsOwnMetrics as u64;
        let second = a
            .take_due(caps, true, &Arc::new(settings()), T0)
            .expect("changed");
        assert_ne!(first.hash, second.hash);
        // Its opamp part did not change: left out (an agent accepting it would reconnect).
        assert!(second.opamp.is_none());
        assert!(second.own_metrics.is_some());
        a.agent_restarted(caps, T0);
        assert!(
            a.take_due(caps, true, &Arc::new(settings()), T0)
                .expect("again")
                .opamp
                .is_some()
        );
        // An agent that reconnects on an opamp offer is not sent it again after a restart.
        let accepts = caps | Cap::AcceptsOpAmpConnectionSettings as u64;
        a.take_due(accepts, true, &Arc::new(settings()), T0);
        a.agent_restarted(accepts, T0);
        assert!(
            a.take_due(accepts, true, &Arc::new(settings()), T0)
                .is_none()
        );
        assert_eq!(a.view().heartbeat_interval_seconds, Some(5));
        // Unless it starts anew long after the offer: a new process, which forgot its interval.
        let later = T0 + RECONNECT_ON_OFFER.as_millis() as u64 + 1;
        a.agent_restarted(accepts, later);
        let again = a.take_due(accepts, true, &Arc::new(settings()), later);
        assert!(again.expect("offered again").opamp.is_some());
        // Its reconnect on that offer is not offered it again.
        a.agent_restarted(accepts, later + 500);
        assert!(
            a.take_due(accepts, true, &Arc::new(settings()), later + 500)
                .is_none()
        );
    }

    #[test]
    fn an_offer_from_before_the_agent_started_anew_is_not_taken_as_sent() {
        let s = Arc::new(settings());
        let (caps, mut elsewhere) = accepting();
        elsewhere.take_due(caps, true, &s, T0).expect("offer");
        let earlier = elsewhere.sent();
        // It reached this replica reconnecting on that offer: taken as sent.
        let (_, mut reconnecting) = accepting();
        reconnecting.agent_restarted(caps, T0 + 800);
        reconnecting.resume(earlier);
        assert!(reconnecting.take_due(caps, true, &s, T0 + 900).is_none());
        // It reached it as a new process, long after: offered again.
        let restarted_at = T0 + RECONNECT_ON_OFFER.as_millis() as u64 + 1;
        let (_, mut restarted) = accepting();
        restarted.agent_restarted(caps, restarted_at);
        restarted.resume(earlier);
        assert!(restarted.take_due(caps, true, &s, restarted_at).is_some());
    }

    #[test]
    fn header_values_are_masked_in_views() {
        let declared = OwnTelemetry::Declared {
            metrics: Some(Destination {
                endpoint: "https://m.example/v1/metrics".into(),
                headers: BTreeMap::from([("Authorization".into(), "Bearer x".into())]),
            }),
            logs: None,
        };
        let json = serde_json::to_string(&masked(&declared)).expect("json");
        assert!(!json.contains("Bearer"), "{json}");
        assert!(json.contains("***"));
    }

    /// An agent with `reach()` that accepts `opamp` offers, as a fresh registry entry has it.
    fn accepting() -> (u64, AgentOffers) {
        let caps = HB | Cap::AcceptsOpAmpConnectionSettings as u64;
        let offers = AgentOffers {
            reach: Some(Arc::new(reach())),
            ..AgentOffers::default()
        };
        (caps, offers)
    }

    #[test]
    fn a_sent_offer_reads_back_from_its_text_and_nothing_else_does() {
        let (caps, mut offers) = accepting();
        let s = Arc::new(settings());
        offers.take_due(caps, true, &s, T0).expect("an offer");
        let sent = offers.sent().expect("sent");
        assert_eq!(sent.heartbeat, Some(5));
        assert_eq!(SentOffer::from_text(&sent.to_text()), Some(sent));
        let own_only = SentOffer {
            opamp: None,
            heartbeat: None,
            ..sent
        };
        assert_eq!(SentOffer::from_text(&own_only.to_text()), Some(own_only));
        let three_fields = format!("{}//", hex::encode(sent.hash));
        for bad in [
            "",
            "zz///1",
            "00/00/5/1",
            &three_fields,
            &format!("{}/x", sent.to_text()),
        ] {
            assert_eq!(SentOffer::from_text(bad), None, "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_offer_waits_for_what_earlier_servers_sent_and_is_not_sent_again() {
        let s = Arc::new(settings());
        // What another server sent this agent, as its record keeps it.
        let (caps, mut elsewhere) = accepting();
        elsewhere.take_due(caps, true, &s, T0).expect("first offer");
        let earlier = elsewhere.sent();

        let (_, mut offers) = accepting();
        offers.read_history();
        assert!(
            offers.take_due(caps, true, &s, T0).is_none(),
            "held while read"
        );
        offers.resume(earlier);
        assert!(
            offers.take_due(caps, true, &s, T0).is_none(),
            "the same offer, already sent elsewhere"
        );

        // Nothing was sent elsewhere: offered once the read answers.
        let (_, mut fresh) = accepting();
        fresh.read_history();
        fresh.resume(None);
        assert!(fresh.take_due(caps, true, &s, T0).is_some());

        // A read that never answers delays the offer, and only for an agent that reconnects
        // on one.
        let (_, mut unanswered) = accepting();
        unanswered.read_history();
        assert!(unanswered.take_due(caps, true, &s, T0).is_none());
        tokio::time::advance(OFFER_HISTORY_WAIT).await;
        assert!(unanswered.take_due(caps, true, &s, T0).is_some());
        let (_, mut heartbeat_only) = accepting();
        heartbeat_only.read_history();
        assert!(heartbeat_only.take_due(HB, true, &s, T0).is_some());

        // What this server sent since wins over an older record.
        let (_, mut ours) = accepting();
        ours.take_due(caps, true, &s, T0).expect("offer");
        let own = ours.sent();
        let other = SentOffer {
            hash: [9; 32],
            ..own.expect("sent")
        };
        ours.resume(Some(other));
        assert_eq!(ours.sent(), own);
    }
}

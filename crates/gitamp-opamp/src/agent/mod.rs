//! A simulated OpAMP agent, for tests, demos (`gitamp serve --demo-agents N`) and load.
//!
//! Why a simulator and not just the real clients: the real ones (Python's
//! `opentelemetry-opamp-client`, the Collector supervisor) cannot be scripted to misbehave on cue,
//! cannot run by the thousand in one process, and some are not installable here. [`SimAgent`]
//! behaves like a well-written agent by default and can be told to do the awkward things real
//! ones do (start numbering at 0 or 1, skip a sequence number, fail a config, reconnect).
//!
//! The design is sans-IO: [`SimAgent`] only turns server messages into agent messages and keeps
//! the observable [`AgentState`]; the drivers ([`spawn_agent`], [`prepare_agent`]) move bytes over WebSocket
//! ([`ClientTransport::WebSocket`]) or plain HTTP through a shared keep-alive [`HttpPool`]
//! ([`ClientTransport::Http`]). [`run_fleet`] starts many agents with a ramp.

mod control;
mod driver;
pub mod http;
mod swarm;
mod ws;

pub use control::WsOptions;
pub use driver::{AgentHandle, ClientTransport, prepare_agent, spawn_agent};
pub use http::{HttpError, HttpPool, HttpPoolOptions};
pub use swarm::{FleetTransport, SimFleet, SimFleetOptions, run_fleet};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::watch;

use crate::proto::{
    AgentCapabilities, AgentConfigMap, AgentDescription, AgentDisconnect, AgentToServer,
    AgentToServerFlags, AnyValue, ComponentHealth, EffectiveConfig, KeyValue, RemoteConfigStatus,
    RemoteConfigStatuses, ServerToAgent, ServerToAgentFlags, any_value,
};

/// The marker that makes the default [`ApplyPolicy`] report FAILED: tests put it in a config
/// body to exercise the failure path without a special agent.
pub const DEFAULT_FAIL_MARKER: &str = "gitamp-test-fail";

/// Attribute keys that go into `AgentDescription.identifying_attributes` (the OpenTelemetry
/// guideline for Collectors); every other label is non-identifying.
pub const IDENTIFYING_KEYS: [&str; 4] = [
    "service.name",
    "service.namespace",
    "service.version",
    "service.instance.id",
];

/// How many status changes [`AgentState::status_history`] keeps: enough for any test, bounded
/// so a long demo run does not grow without limit.
const STATUS_HISTORY_LIMIT: usize = 64;

/// Capability bit helpers (the proto enum is `i32`; the wire field is a `u64` bit set).
pub mod caps {
    use crate::proto::AgentCapabilities as C;

    /// ReportsStatus (required by the spec).
    pub const REPORTS_STATUS: u64 = C::ReportsStatus as u64;
    /// AcceptsRemoteConfig.
    pub const ACCEPTS_REMOTE_CONFIG: u64 = C::AcceptsRemoteConfig as u64;
    /// ReportsEffectiveConfig.
    pub const REPORTS_EFFECTIVE_CONFIG: u64 = C::ReportsEffectiveConfig as u64;
    /// ReportsHealth.
    pub const REPORTS_HEALTH: u64 = C::ReportsHealth as u64;
    /// ReportsRemoteConfig (the agent acknowledges configs with RemoteConfigStatus).
    pub const REPORTS_REMOTE_CONFIG: u64 = C::ReportsRemoteConfig as u64;
    /// ReportsHeartbeat.
    pub const REPORTS_HEARTBEAT: u64 = C::ReportsHeartbeat as u64;
    /// What a managed Collector (supervisor with remote config enabled) announces.
    pub const FULL: u64 = REPORTS_STATUS
        | ACCEPTS_REMOTE_CONFIG
        | REPORTS_EFFECTIVE_CONFIG
        | REPORTS_HEALTH
        | REPORTS_REMOTE_CONFIG
        | REPORTS_HEARTBEAT;
    /// What the Python `opentelemetry-opamp-client` announces.
    pub const PYTHON_CLIENT: u64 = REPORTS_STATUS
        | ACCEPTS_REMOTE_CONFIG
        | REPORTS_EFFECTIVE_CONFIG
        | REPORTS_REMOTE_CONFIG
        | REPORTS_HEARTBEAT;
}

/// A custom apply rule for [`ApplyPolicy::Custom`]: `Err(message)` means FAILED.
pub type ApplyFn = Arc<dyn Fn(&AgentConfigMap) -> Result<(), String> + Send + Sync>;

/// What the agent does with a remote config it has not seen before.
#[derive(Clone)]
pub enum ApplyPolicy {
    /// Always succeeds: APPLYING, then APPLIED.
    Apply,
    /// Always fails with this message: APPLYING, then FAILED.
    Fail(String),
    /// Fails when any body contains the marker, otherwise applies. The default, with
    /// [`DEFAULT_FAIL_MARKER`], so a config repository can trigger a failure on purpose.
    FailOnMarker(String),
    /// Any other rule: `Err(message)` means FAILED.
    Custom(ApplyFn),
}

impl Default for ApplyPolicy {
    fn default() -> Self {
        ApplyPolicy::FailOnMarker(DEFAULT_FAIL_MARKER.to_owned())
    }
}

impl fmt::Debug for ApplyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyPolicy::Apply => f.write_str("Apply"),
            ApplyPolicy::Fail(m) => f.debug_tuple("Fail").field(m).finish(),
            ApplyPolicy::FailOnMarker(m) => f.debug_tuple("FailOnMarker").field(m).finish(),
            ApplyPolicy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl ApplyPolicy {
    /// Decides whether applying `config` succeeds.
    pub fn decide(&self, config: &AgentConfigMap) -> Result<(), String> {
        match self {
            ApplyPolicy::Apply => Ok(()),
            ApplyPolicy::Fail(m) => Err(m.clone()),
            ApplyPolicy::FailOnMarker(marker) => {
                let needle = marker.as_bytes();
                match config.config_map.iter().find(|(_, f)| {
                    !needle.is_empty() && f.body.windows(needle.len()).any(|w| w == needle)
                }) {
                    Some((key, _)) => Err(format!(
                        "config entry {key:?} contains the failure marker {marker:?}"
                    )),
                    None => Ok(()),
                }
            }
            ApplyPolicy::Custom(f) => f(config),
        }
    }
}

/// Everything that makes one simulated agent different from another.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Fixed instance uid; `None` draws a fresh UUIDv7 (what the spec recommends).
    pub instance_uid: Option<[u8; 16]>,
    /// Resource labels. Keys in [`IDENTIFYING_KEYS`] become identifying attributes, the rest
    /// non-identifying. `service.instance.id` defaults to the instance uid as UUID text.
    pub labels: BTreeMap<String, String>,
    /// Capability bits announced in every message (see [`caps`]).
    pub capabilities: u64,
    /// What applying a config does.
    pub policy: ApplyPolicy,
    /// First sequence number: opamp-go starts at 0, other clients at 1.
    pub first_sequence_num: u64,
    /// Skip one sequence number after this many messages (a lost message, as a server sees
    /// it); the server should answer with ReportFullState.
    pub gap_after: Option<u64>,
    /// Heartbeat interval over WebSocket and poll interval over HTTP. A server offer
    /// (`connection_settings.opamp.heartbeat_interval_seconds`) replaces it.
    pub heartbeat_interval: Duration,
    /// Effective config reported before any remote config arrives (a local config file).
    pub initial_effective_config: Option<AgentConfigMap>,
    /// On WebSocket reconnect send a full report (`true`) or, like opamp-go since spec v0.16,
    /// a near-empty message and rely on the server asking for full state (`false`, default).
    pub reconnect_full_report: bool,
    /// Set the RequestInstanceUid flag until the server assigns a uid through
    /// agent_identification (the uid sent meanwhile is temporary).
    pub request_instance_uid: bool,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            instance_uid: None,
            labels: BTreeMap::new(),
            capabilities: caps::FULL,
            policy: ApplyPolicy::default(),
            first_sequence_num: 0,
            gap_after: None,
            heartbeat_interval: Duration::from_secs(30),
            initial_effective_config: None,
            reconnect_full_report: false,
            request_instance_uid: false,
        }
    }
}

impl AgentOptions {
    /// A collector-like agent: service.name, host.name, os.type and deployment.environment set.
    pub fn collector(service_name: &str, host_name: &str, environment: &str) -> Self {
        AgentOptions::default()
            .label("service.name", service_name)
            .label("service.version", env!("CARGO_PKG_VERSION"))
            .label("host.name", host_name)
            .label("os.type", std::env::consts::OS)
            .label("deployment.environment", environment)
    }

    /// Adds or replaces one label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }
}

/// A remote config as the agent received it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedConfig {
    /// `AgentRemoteConfig.config_hash`, byte for byte.
    pub hash: Bytes,
    /// The config map.
    pub config: AgentConfigMap,
}

/// One change of the agent's RemoteConfigStatus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    /// The hash the status is about.
    pub hash: Bytes,
    /// APPLYING, APPLIED or FAILED.
    pub status: RemoteConfigStatuses,
    /// Set with FAILED.
    pub error_message: String,
}

/// What a test (or the load generator) can observe about one agent.
#[derive(Clone, Debug, Default)]
pub struct AgentState {
    /// Current instance uid (changes on agent_identification).
    pub instance_uid: Bytes,
    /// A transport connection is up (WebSocket) or the last exchange succeeded (HTTP).
    pub connected: bool,
    /// Successful connects (WebSocket) or first successful exchange (HTTP: 1).
    pub connections: u32,
    /// The driver has ended (after stop, or the task was dropped).
    pub finished: bool,
    /// AgentToServer messages handed to the transport.
    pub messages_sent: u64,
    /// ServerToAgent messages received.
    pub messages_received: u64,
    /// The sequence number of the last message built.
    pub last_sequence_num: Option<u64>,
    /// The last remote config received (redundant or not).
    pub last_config: Option<ReceivedConfig>,
    /// Every remote_config received, redundant ones included.
    pub remote_configs_received: u64,
    /// Remote configs whose hash equalled the one already applied or failed: pushes a server
    /// should not have made.
    pub redundant_configs_received: u64,
    /// Connection-settings offers with an `opamp` part: an agent that accepts them (the
    /// collector's supervisor) reconnects on each one.
    pub opamp_offers_received: u64,
    /// Status changes, oldest first (bounded).
    pub status_history: Vec<StatusChange>,
    /// The RemoteConfigStatus the agent would report now.
    pub current_status: Option<RemoteConfigStatus>,
    /// The effective config the agent would report now.
    pub effective_config: Option<AgentConfigMap>,
    /// ServerToAgent messages with the ReportFullState flag.
    pub full_state_requests: u64,
    /// Full reports sent (first message, answers to ReportFullState, after a uid change).
    pub full_reports_sent: u64,
    /// Heartbeats (and HTTP polls) sent.
    pub heartbeats_sent: u64,
    /// Heartbeat / poll interval in force.
    pub heartbeat_interval: Duration,
    /// `ServerToAgent.capabilities` last seen (0 until the server sets it).
    pub server_capabilities: u64,
    /// How many times the server assigned a new instance uid.
    pub uid_changes: u32,
    /// ServerErrorResponse messages received.
    pub server_errors: u64,
    /// ClientTransport failures (connect, send, HTTP status, decode).
    pub transport_errors: u64,
    /// The last error of either kind, for test failure messages.
    pub last_error: Option<String>,
    /// Distinct configs applied so far, and when (Unix ns) the latest was: recorded where the
    /// agent applies, so a load generator reads them without a watcher task per agent.
    pub applied_generations: u32,
    /// When (Unix ns) the latest distinct config was applied.
    pub last_applied_unix_ns: u64,
}

impl AgentState {
    /// The hash of the config reported APPLIED last, if the current status is APPLIED.
    pub fn applied_hash(&self) -> Option<&Bytes> {
        self.current_status
            .as_ref()
            .filter(|s| s.status == RemoteConfigStatuses::Applied as i32)
            .map(|s| &s.last_remote_config_hash)
    }

    /// Whether the status history contains `status` for `hash`.
    pub fn saw_status(&self, hash: &[u8], status: RemoteConfigStatuses) -> bool {
        self.status_history
            .iter()
            .any(|c| c.status == status && c.hash.as_ref() == hash)
    }
}

/// The agent's protocol state machine, without I/O.
///
/// Messages are built when they are about to be sent, so sequence numbers rise by exactly one
/// per message on the wire (unless a gap is injected on purpose).
#[derive(Debug)]
pub struct SimAgent {
    uid: Bytes,
    opts: AgentOptions,
    /// Whether `service.instance.id` was derived from the uid (then it follows uid changes).
    instance_id_from_uid: bool,
    description: AgentDescription,
    next_seq: u64,
    built: u64,
    gap_pending: bool,
    requesting_uid: bool,
    status: Option<RemoteConfigStatus>,
    /// The hash of the last config applied (for [`AgentState::applied_generations`]).
    last_applied: Option<Bytes>,
    effective: Option<AgentConfigMap>,
    started_unix_nano: u64,
    /// What it reports as `ComponentHealth.healthy` (a test may change it).
    healthy: bool,
    heartbeat_interval: Duration,
    state: watch::Sender<AgentState>,
}

/// How many configs [`ReceivedBodies`] remembers.
const RECEIVED_BODIES: usize = 4;

/// The config bodies this process's agents hold, shared between agents that received the
/// same bytes.
///
/// A received config is never kept as a slice of its message: that would pin the whole frame
/// buffer for as long as the agent keeps the config. Copying it instead cost every agent a
/// fresh allocation per rollout, and in the load generator (thousands of agents per process)
/// those copies were fresh pages the kernel had to fault in and zero: the largest single cost
/// of the agents' side of a rollout, on the same cores as the server under test. So the first
/// agent to receive a config copies it, and the others that receive the same bytes share that
/// copy (compared byte for byte, not trusted by hash). Bounded: the last few configs only.
#[derive(Default)]
struct ReceivedBodies {
    recent: std::collections::VecDeque<(Bytes, AgentConfigMap)>,
}

impl ReceivedBodies {
    /// The config to keep for `received` (announced with `hash`): a shared copy of the same
    /// bytes when one exists, else a fresh copy that later agents may share.
    fn keep(&mut self, hash: &Bytes, received: Option<&AgentConfigMap>) -> AgentConfigMap {
        let Some(received) = received else {
            return AgentConfigMap::default();
        };
        if let Some((_, same)) = self
            .recent
            .iter()
            .find(|(h, kept)| h == hash && kept == received)
        {
            return same.clone();
        }
        let mut copy = received.clone();
        for file in copy.config_map.values_mut() {
            file.body = Bytes::copy_from_slice(&file.body);
        }
        if self.recent.len() >= RECEIVED_BODIES {
            self.recent.pop_front();
        }
        self.recent.push_back((hash.clone(), copy.clone()));
        copy
    }
}

/// The process's [`ReceivedBodies`], locked for one lookup.
fn received_bodies() -> std::sync::MutexGuard<'static, ReceivedBodies> {
    static BODIES: std::sync::OnceLock<std::sync::Mutex<ReceivedBodies>> =
        std::sync::OnceLock::new();
    BODIES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_unix_nano() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
    }
}

fn has(caps: u64, bit: AgentCapabilities) -> bool {
    caps & bit as u64 != 0
}

impl SimAgent {
    /// Creates an agent; nothing is sent until a driver asks for the first message.
    pub fn new(opts: AgentOptions) -> Self {
        let uid = match opts.instance_uid {
            Some(u) => u,
            None => *uuid::Uuid::now_v7().as_bytes(),
        };
        let uid = Bytes::copy_from_slice(&uid);
        let instance_id_from_uid = !opts.labels.contains_key("service.instance.id");
        let heartbeat_interval = opts.heartbeat_interval;
        let (state, _) = watch::channel(AgentState {
            instance_uid: uid.clone(),
            heartbeat_interval,
            effective_config: opts.initial_effective_config.clone(),
            ..AgentState::default()
        });
        let mut agent = SimAgent {
            uid,
            next_seq: opts.first_sequence_num,
            effective: opts.initial_effective_config.clone(),
            instance_id_from_uid,
            description: AgentDescription::default(),
            built: 0,
            gap_pending: false,
            requesting_uid: opts.request_instance_uid,
            status: None,
            last_applied: None,
            started_unix_nano: now_unix_nano(),
            healthy: true,
            heartbeat_interval,
            state,
            opts,
        };
        agent.rebuild_description();
        agent
    }

    fn rebuild_description(&mut self) {
        let mut labels = self.opts.labels.clone();
        if self.instance_id_from_uid {
            let text = uuid::Uuid::from_slice(&self.uid)
                .map(|u| u.to_string())
                .unwrap_or_else(|_| hex::encode(&self.uid));
            labels.insert("service.instance.id".to_owned(), text);
        }
        let (ident, other): (Vec<_>, Vec<_>) = labels
            .iter()
            .partition(|(k, _)| IDENTIFYING_KEYS.contains(&k.as_str()));
        self.description = AgentDescription {
            identifying_attributes: ident.into_iter().map(|(k, v)| kv(k, v)).collect(),
            non_identifying_attributes: other.into_iter().map(|(k, v)| kv(k, v)).collect(),
        };
    }

    /// The current instance uid (16 bytes).
    pub fn instance_uid(&self) -> &Bytes {
        &self.uid
    }

    /// The AgentDescription sent in full reports.
    pub fn description(&self) -> &AgentDescription {
        &self.description
    }

    /// Announced capability bits.
    pub fn capabilities(&self) -> u64 {
        self.opts.capabilities
    }

    /// Whether the agent sends heartbeats (over WebSocket; HTTP always polls).
    pub fn sends_heartbeats(&self) -> bool {
        has(self.opts.capabilities, AgentCapabilities::ReportsHeartbeat)
    }

    /// The heartbeat (WS) / poll (HTTP) interval in force.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// Whether reconnects start with a full report.
    pub fn reconnect_full_report(&self) -> bool {
        self.opts.reconnect_full_report
    }

    /// A receiver of the observable state; cheap, any number of them.
    pub fn subscribe(&self) -> watch::Receiver<AgentState> {
        self.state.subscribe()
    }

    /// A copy of the observable state now.
    pub fn state(&self) -> AgentState {
        self.state.borrow().clone()
    }

    /// The next message skips one sequence number, as if a message had been lost.
    pub fn inject_sequence_gap(&mut self) {
        self.gap_pending = true;
    }

    fn alloc_seq(&mut self) -> u64 {
        if self.opts.gap_after == Some(self.built) {
            self.gap_pending = true;
        }
        if self.gap_pending {
            self.gap_pending = false;
            self.next_seq += 1;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.built += 1;
        seq
    }

    fn base_message(&mut self) -> AgentToServer {
        let seq = self.alloc_seq();
        self.state.send_modify(|s| {
            s.last_sequence_num = Some(seq);
            s.messages_sent += 1;
        });
        let flags = if self.requesting_uid {
            AgentToServerFlags::RequestInstanceUid as u64
        } else {
            0
        };
        AgentToServer {
            instance_uid: self.uid.clone(),
            sequence_num: seq,
            capabilities: self.opts.capabilities,
            flags,
            ..AgentToServer::default()
        }
    }

    fn health(&self) -> ComponentHealth {
        ComponentHealth {
            healthy: self.healthy,
            start_time_unix_nano: self.started_unix_nano,
            status: if self.healthy { "running" } else { "degraded" }.to_owned(),
            status_time_unix_nano: now_unix_nano(),
            ..ComponentHealth::default()
        }
    }

    fn effective_message(&self) -> Option<EffectiveConfig> {
        if !has(
            self.opts.capabilities,
            AgentCapabilities::ReportsEffectiveConfig,
        ) {
            return None;
        }
        self.effective.as_ref().map(|m| EffectiveConfig {
            config_map: Some(m.clone()),
        })
    }

    fn status_message(&self) -> Option<RemoteConfigStatus> {
        if !has(
            self.opts.capabilities,
            AgentCapabilities::ReportsRemoteConfig,
        ) {
            return None;
        }
        // An agent that never received a config sends no status at all (opamp-spec #379).
        self.status.clone()
    }

    /// Everything the agent knows: description, health, effective config, config status.
    pub fn full_report(&mut self) -> AgentToServer {
        let mut m = self.base_message();
        m.agent_description = Some(self.description.clone());
        if has(self.opts.capabilities, AgentCapabilities::ReportsHealth) {
            m.health = Some(self.health());
        }
        m.effective_config = self.effective_message();
        m.remote_config_status = self.status_message();
        self.state.send_modify(|s| s.full_reports_sent += 1);
        m
    }

    /// A heartbeat (or HTTP poll): uid, sequence number and capabilities only.
    pub fn heartbeat(&mut self) -> AgentToServer {
        let m = self.base_message();
        self.state.send_modify(|s| s.heartbeats_sent += 1);
        m
    }

    /// A report of its health, now `healthy`.
    pub fn health_report(&mut self, healthy: bool) -> AgentToServer {
        self.healthy = healthy;
        let mut m = self.base_message();
        m.health = Some(self.health());
        m
    }

    /// The first message on a new WebSocket connection after the first one.
    pub fn hello_after_reconnect(&mut self) -> AgentToServer {
        if self.opts.reconnect_full_report {
            self.full_report()
        } else {
            self.heartbeat()
        }
    }

    /// The last message before shutting down.
    pub fn disconnect_message(&mut self) -> AgentToServer {
        let mut m = self.base_message();
        m.agent_disconnect = Some(AgentDisconnect {});
        m
    }

    fn set_status(&mut self, hash: &Bytes, status: RemoteConfigStatuses, error: String) {
        let newly_applied =
            status == RemoteConfigStatuses::Applied && self.last_applied.as_ref() != Some(hash);
        if newly_applied {
            self.last_applied = Some(hash.clone());
        }
        let st = RemoteConfigStatus {
            last_remote_config_hash: hash.clone(),
            status: status as i32,
            error_message: error.clone(),
        };
        self.status = Some(st.clone());
        self.state.send_modify(|s| {
            if s.status_history.len() >= STATUS_HISTORY_LIMIT {
                s.status_history.remove(0);
            }
            s.status_history.push(StatusChange {
                hash: hash.clone(),
                status,
                error_message: error,
            });
            s.current_status = Some(st);
            if newly_applied {
                s.applied_generations += 1;
                s.last_applied_unix_ns = now_unix_nano();
            }
        });
    }

    fn note_error(&self, server: bool, text: String) {
        self.state.send_modify(|s| {
            if server {
                s.server_errors += 1;
            } else {
                s.transport_errors += 1;
            }
            s.last_error = Some(text);
        });
    }

    /// Records a transport failure (for drivers).
    pub fn note_transport_error(&self, text: impl Into<String>) {
        self.note_error(false, text.into());
    }

    /// Records the transport state (for drivers).
    pub fn note_connected(&self, up: bool) {
        self.state.send_modify(|s| {
            if up && !s.connected {
                s.connections += 1;
            }
            s.connected = up;
        });
    }

    /// Marks the driver as ended (for drivers).
    pub fn note_finished(&self) {
        self.state.send_modify(|s| {
            s.connected = false;
            s.finished = true;
        });
    }

    /// Processes one server message and returns the messages to send in reply, in order.
    ///
    /// Never panics on odd input: a reply for another uid or a malformed field is recorded in
    /// [`AgentState::last_error`] and otherwise ignored, as a real agent would.
    pub fn handle(&mut self, msg: &ServerToAgent) -> Vec<AgentToServer> {
        let mut out = Vec::new();
        self.state.send_modify(|s| {
            s.messages_received += 1;
            if msg.capabilities != 0 {
                s.server_capabilities = msg.capabilities;
            }
        });
        // Some servers echo the old uid alongside agent_identification (elastic/fleet-server
        // PR #6834); otherwise a reply for another uid is not ours (otel-arrow #3388).
        if !msg.instance_uid.is_empty()
            && msg.instance_uid != self.uid
            && msg.agent_identification.is_none()
        {
            self.note_error(
                true,
                format!(
                    "reply for instance uid {} ignored",
                    hex::encode(&msg.instance_uid)
                ),
            );
            return out;
        }
        if let Some(err) = &msg.error_response {
            // The spec: other fields are unset with an error; an agent should not retry.
            self.note_error(
                true,
                format!("server error type {}: {}", err.r#type, err.error_message),
            );
            return out;
        }

        let mut need_full = false;
        if let Some(id) = &msg.agent_identification {
            if id.new_instance_uid.len() == 16 {
                self.requesting_uid = false;
                self.uid = id.new_instance_uid.clone();
                self.rebuild_description();
                let uid = self.uid.clone();
                self.state.send_modify(|s| {
                    s.instance_uid = uid;
                    s.uid_changes += 1;
                });
                // The server knows nothing under the new uid yet: tell it everything.
                need_full = true;
            } else {
                self.note_error(
                    true,
                    format!(
                        "agent_identification with a {}-byte uid ignored",
                        id.new_instance_uid.len()
                    ),
                );
            }
        }

        let opamp_offer = msg
            .connection_settings
            .as_ref()
            .and_then(|c| c.opamp.as_ref());
        if opamp_offer.is_some() {
            self.state.send_modify(|s| s.opamp_offers_received += 1);
        }
        if let Some(offer) = opamp_offer
            && offer.heartbeat_interval_seconds > 0
            && self.sends_heartbeats()
        {
            self.heartbeat_interval = Duration::from_secs(offer.heartbeat_interval_seconds);
            let iv = self.heartbeat_interval;
            self.state.send_modify(|s| s.heartbeat_interval = iv);
        }

        let mut final_status_changed = false;
        if let Some(rc) = &msg.remote_config {
            let hash = rc.config_hash.clone();
            let config = received_bodies().keep(&hash, rc.config.as_ref());
            let known = self.status.as_ref().is_some_and(|s| {
                s.last_remote_config_hash == hash
                    && s.status != RemoteConfigStatuses::Applying as i32
            });
            self.state.send_modify(|s| {
                s.remote_configs_received += 1;
                if known {
                    s.redundant_configs_received += 1;
                }
                s.last_config = Some(ReceivedConfig {
                    hash: hash.clone(),
                    config: config.clone(),
                });
            });
            let accepts = has(
                self.opts.capabilities,
                AgentCapabilities::AcceptsRemoteConfig,
            );
            // A redundant push is not answered: answering would let a server that re-sends on
            // every message drive a WebSocket ping-pong at full speed.
            if accepts && !known {
                self.set_status(&hash, RemoteConfigStatuses::Applying, String::new());
                if has(
                    self.opts.capabilities,
                    AgentCapabilities::ReportsRemoteConfig,
                ) {
                    let mut m = self.base_message();
                    m.remote_config_status = self.status_message();
                    out.push(m);
                }
                match self.opts.policy.decide(&config) {
                    Ok(()) => {
                        self.effective = Some(config.clone());
                        let eff = self.effective.clone();
                        self.state.send_modify(|s| s.effective_config = eff);
                        self.set_status(&hash, RemoteConfigStatuses::Applied, String::new());
                    }
                    Err(e) => self.set_status(&hash, RemoteConfigStatuses::Failed, e),
                }
                final_status_changed = true;
            }
        }

        if msg.flags & ServerToAgentFlags::ReportFullState as u64 != 0 {
            self.state.send_modify(|s| s.full_state_requests += 1);
            need_full = true;
        }

        if need_full {
            // The full report also carries the final status and effective config.
            out.push(self.full_report());
        } else if final_status_changed {
            let status = self.status_message();
            let applied = self
                .status
                .as_ref()
                .is_some_and(|s| s.status == RemoteConfigStatuses::Applied as i32);
            let effective = if applied {
                self.effective_message()
            } else {
                None
            };
            if status.is_some() || effective.is_some() {
                let mut m = self.base_message();
                m.remote_config_status = status;
                m.effective_config = effective;
                out.push(m);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{AgentConfigFile, AgentIdentification, AgentRemoteConfig};

    fn config(body: &str) -> AgentRemoteConfig {
        let mut map = AgentConfigMap::default();
        map.config_map.insert(
            String::new(),
            AgentConfigFile {
                body: Bytes::copy_from_slice(body.as_bytes()),
                content_type: "text/yaml".into(),
            },
        );
        AgentRemoteConfig {
            config: Some(map),
            config_hash: Bytes::from_static(b"hash-1"),
        }
    }

    #[test]
    fn first_message_is_full_and_heartbeat_is_minimal() {
        let mut a = SimAgent::new(AgentOptions::collector("svc", "host-1", "test"));
        let first = a.full_report();
        assert_eq!(first.sequence_num, 0);
        assert_eq!(first.instance_uid.len(), 16);
        let d = first.agent_description.unwrap();
        let keys: Vec<_> = d
            .identifying_attributes
            .iter()
            .map(|k| k.key.as_str())
            .collect();
        assert!(keys.contains(&"service.name") && keys.contains(&"service.instance.id"));
        assert!(
            d.non_identifying_attributes
                .iter()
                .any(|k| k.key == "host.name")
        );
        assert!(first.health.is_some());
        assert!(
            first.remote_config_status.is_none(),
            "no status before any config"
        );
        let hb = a.heartbeat();
        assert_eq!(hb.sequence_num, 1);
        assert_eq!(
            hb,
            AgentToServer {
                instance_uid: a.instance_uid().clone(),
                sequence_num: 1,
                capabilities: caps::FULL,
                ..Default::default()
            }
        );
    }

    /// Agents that receive the same bytes share one copy, never the message's buffer; other
    /// bytes under the same hash are not taken for it; only the last few configs are kept.
    #[test]
    fn received_bodies_are_shared_by_content_and_bounded() {
        let body = |map: &AgentConfigMap| map.config_map[""].body.clone();
        let mut bodies = ReceivedBodies::default();
        let first_frame = config("receivers: {}");
        let second_frame = config("receivers: {}");
        let first = bodies.keep(&first_frame.config_hash, first_frame.config.as_ref());
        let second = bodies.keep(&second_frame.config_hash, second_frame.config.as_ref());
        assert_eq!(first, second);
        assert_eq!(body(&first).as_ptr(), body(&second).as_ptr(), "shared");
        let received = body(second_frame.config.as_ref().unwrap());
        assert_ne!(body(&second).as_ptr(), received.as_ptr(), "not the message");

        let forged = config("exporters: {}"); // the same hash, other bytes
        let kept = bodies.keep(&forged.config_hash, forged.config.as_ref());
        assert_eq!(&body(&kept)[..], b"exporters: {}");
        assert_ne!(body(&kept).as_ptr(), body(&first).as_ptr());

        for n in 0..RECEIVED_BODIES {
            let other = config(&format!("n: {n}"));
            bodies.keep(&other.config_hash, other.config.as_ref());
        }
        assert_eq!(bodies.recent.len(), RECEIVED_BODIES);
        let again = bodies.keep(&first_frame.config_hash, first_frame.config.as_ref());
        assert_eq!(again, first);
        assert_ne!(body(&again).as_ptr(), body(&first).as_ptr(), "evicted");
    }

    #[test]
    fn applies_and_acknowledges_with_exact_hash() {
        let mut a = SimAgent::new(AgentOptions::default());
        a.full_report();
        let msg = ServerToAgent {
            remote_config: Some(config("receivers: {}\n")),
            ..Default::default()
        };
        let out = a.handle(&msg);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].remote_config_status.as_ref().unwrap().status,
            RemoteConfigStatuses::Applying as i32
        );
        let done = out[1].remote_config_status.as_ref().unwrap();
        assert_eq!(done.status, RemoteConfigStatuses::Applied as i32);
        assert_eq!(done.last_remote_config_hash.as_ref(), b"hash-1");
        assert!(out[1].effective_config.is_some());
        assert_eq!(out[1].sequence_num, out[0].sequence_num + 1);
        // Same hash again: counted as redundant, not answered.
        assert!(a.handle(&msg).is_empty());
        let st = a.state();
        assert_eq!(st.remote_configs_received, 2);
        assert_eq!(st.redundant_configs_received, 1);
        assert_eq!(st.applied_hash().unwrap().as_ref(), b"hash-1");
        assert_eq!(
            st.applied_generations, 1,
            "a redundant push is not a new apply"
        );
        assert!(st.last_applied_unix_ns > 0);
        // A different config is the next generation.
        let mut next = config("receivers: {otlp: {}}\n");
        next.config_hash = Bytes::from_static(b"hash-2");
        a.handle(&ServerToAgent {
            remote_config: Some(next),
            ..Default::default()
        });
        assert_eq!(a.state().applied_generations, 2);
    }

    #[test]
    fn marker_fails_and_full_state_and_identification() {
        let mut a = SimAgent::new(AgentOptions {
            first_sequence_num: 1,
            ..Default::default()
        });
        assert_eq!(a.full_report().sequence_num, 1);
        let out = a.handle(&ServerToAgent {
            remote_config: Some(config("x: gitamp-test-fail")),
            flags: ServerToAgentFlags::ReportFullState as u64,
            ..Default::default()
        });
        let last = out.last().unwrap();
        assert!(last.agent_description.is_some(), "full report requested");
        let st = last.remote_config_status.as_ref().unwrap();
        assert_eq!(st.status, RemoteConfigStatuses::Failed as i32);
        assert!(st.error_message.contains("marker"));
        let new_uid = Bytes::from_static(&[9; 16]);
        let out = a.handle(&ServerToAgent {
            agent_identification: Some(AgentIdentification {
                new_instance_uid: new_uid.clone(),
            }),
            ..Default::default()
        });
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].instance_uid, new_uid);
        assert!(out[0].agent_description.is_some());
        a.inject_sequence_gap();
        let before = a.state().last_sequence_num.unwrap();
        assert_eq!(a.heartbeat().sequence_num, before + 2);
        // A reply for someone else is ignored.
        assert!(
            a.handle(&ServerToAgent {
                instance_uid: Bytes::from_static(&[1; 16]),
                flags: 1,
                ..Default::default()
            })
            .is_empty()
        );
    }
}

//! The fleet registry: the one home for per-agent state.
//!
//! Layout: `RwLock<HashMap<Uid, Arc<Mutex<AgentEntry>>>>`. The outer lock is held only
//! for a lookup or an insert (never across `.await`, never while an entry lock is
//! taken), so agents never contend with each other on the message path; each entry
//! has its own short `std::sync::Mutex`, also never held across `.await`.
//!
//! Events go out on a `tokio::sync::broadcast` channel. `send` on a broadcast never
//! blocks and never fails because of a slow consumer: when a receiver lags, the
//! oldest events are overwritten and that receiver gets `RecvError::Lagged(n)` on its
//! next `recv`. A consumer that sees `Lagged` must resynchronise from
//! [`Fleet::agents`]. An `mpsc` would have forced a choice between blocking the
//! message path and silently dropping newest events; broadcast drops oldest and says so.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use prost::Message;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::outbox::{OutboxSender, Push};
use crate::proto;

/// A 16-byte agent instance UID.
pub type Uid = [u8; 16];

/// Capacity of the event channel; see the module docs for what happens on lag. A rollout to
/// N WebSocket agents produces 2N reports within about a second while the reconciler is busy
/// with the push plan: at 4,096 a 15,000-agent rollout always lagged, and the re-read of the
/// whole fleet that follows cost up to half a second of CPU in the middle of the rollout. The
/// slots (one per event, a few dozen bytes each) are allocated up front.
pub const EVENT_CAPACITY: usize = 65_536;

/// How many distinct FAILED hashes are remembered per agent (oldest forgotten first).
const MAX_FAILED_HASHES: usize = 16;

/// Capabilities this server announces on every reply.
pub const SERVER_CAPABILITIES: u64 = proto::ServerCapabilities::AcceptsStatus as u64
    | proto::ServerCapabilities::OffersRemoteConfig as u64
    | proto::ServerCapabilities::AcceptsEffectiveConfig as u64;

/// The desired remote configuration for one or more agents.
///
/// The `AgentRemoteConfig` message is encoded once, as a complete `ServerToAgent`
/// field 3 (tag, length and body), and shared by every agent that gets it: protobuf
/// messages concatenate, so a reply is the per-agent fields followed by these bytes.
#[derive(Debug)]
pub struct DesiredConfig {
    hash: [u8; 32],
    files: BTreeMap<String, (Bytes, String)>,
    /// `ServerToAgent.remote_config` as encoded field bytes (tag 3 + length + body).
    encoded_field: Bytes,
}

impl DesiredConfig {
    /// A config of one YAML file under the empty name, for tests.
    #[cfg(test)]
    pub(crate) fn one_yaml_file(body: Bytes, hash: [u8; 32]) -> Arc<DesiredConfig> {
        let files = BTreeMap::from([(String::new(), (body, "text/yaml".to_owned()))]);
        Arc::new(DesiredConfig::new(files, hash))
    }

    /// The served bytes of file `name` if they equal `body`, to share instead of a copy.
    /// Bytes that already are the served ones are recognised without comparing them.
    pub(crate) fn same_body(&self, name: &str, body: &[u8]) -> Option<Bytes> {
        self.files
            .get(name)
            .filter(|(served, _)| {
                (served.as_ptr() == body.as_ptr() && served.len() == body.len())
                    || served[..] == *body
            })
            .map(|(served, _)| served.clone())
    }

    /// Builds the config and encodes its `AgentRemoteConfig` once.
    /// `config_map` maps config file names to `(body, content type)`; `hash` is the
    /// caller's deterministic hash of the whole map (it is never empty by type).
    pub fn new(config_map: BTreeMap<String, (Bytes, String)>, hash: [u8; 32]) -> Self {
        let remote = proto::AgentRemoteConfig {
            config: Some(proto::AgentConfigMap {
                config_map: config_map
                    .iter()
                    .map(|(k, (body, ct))| {
                        (
                            k.clone(),
                            proto::AgentConfigFile {
                                body: body.clone(),
                                content_type: ct.clone(),
                            },
                        )
                    })
                    .collect(),
            }),
            config_hash: Bytes::copy_from_slice(&hash),
        };
        let holder = proto::ServerToAgent {
            remote_config: Some(remote),
            ..Default::default()
        };
        let encoded_field = Bytes::from(holder.encode_to_vec());
        Self {
            hash,
            files: config_map,
            encoded_field,
        }
    }

    /// Builds the config with its canonical hash ([`DesiredConfig::canonical_hash`]).
    pub fn from_files(config_map: BTreeMap<String, (Bytes, String)>) -> Self {
        let hash = Self::canonical_hash(&config_map);
        Self::new(config_map, hash)
    }

    /// SHA-256 over a canonical encoding of the whole map: entries in key order, each
    /// key, body and content type prefixed by its length (u64, big endian). Same
    /// content, same hash, across restarts and replicas; never empty.
    pub fn canonical_hash(config_map: &BTreeMap<String, (Bytes, String)>) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"gitamp-config-v1");
        h.update((config_map.len() as u64).to_be_bytes());
        for (k, (body, ct)) in config_map {
            for part in [k.as_bytes(), &body[..], ct.as_bytes()] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(h.finalize().as_slice());
        out
    }

    /// The config hash sent as `config_hash`.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// The config files `(body, content type)` by name.
    pub fn files(&self) -> &BTreeMap<String, (Bytes, String)> {
        &self.files
    }

    /// The cached encoding of `ServerToAgent.remote_config` (tag + length + body).
    pub fn encoded_field(&self) -> &Bytes {
        &self.encoded_field
    }
}

/// A `ServerToAgent` to send: per-agent fields plus, optionally, the shared
/// remote config bytes appended without re-encoding.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// Per-agent fields (its `remote_config` is always `None`).
    pub msg: proto::ServerToAgent,
    /// Shared config, appended as encoded bytes.
    pub remote_config: Option<Arc<DesiredConfig>>,
}

impl Outgoing {
    /// Encoded length of the full message.
    pub fn encoded_len(&self) -> usize {
        self.msg.encoded_len()
            + self
                .remote_config
                .as_ref()
                .map_or(0, |d| d.encoded_field.len())
    }

    /// Encodes the message, prefixed with `prefix` (the WS header, or nothing).
    pub fn encode_with_prefix(&self, prefix: &[u8]) -> Bytes {
        let mut buf = BytesMut::with_capacity(prefix.len() + self.encoded_len());
        buf.extend_from_slice(prefix);
        self.msg.encode_raw(&mut buf);
        if let Some(d) = &self.remote_config {
            buf.extend_from_slice(&d.encoded_field);
        }
        buf.freeze()
    }

    /// Encodes the message (HTTP body).
    pub fn encode(&self) -> Bytes {
        self.encode_with_prefix(&[])
    }

    /// Encodes one WebSocket frame (header 0 then the message).
    pub fn encode_frame(&self) -> Bytes {
        self.encode_with_prefix(&[crate::frame::HEADER])
    }

    /// Makes the message fit `limit` bytes (plus `prefix_len`): a reply must still go
    /// out when the config does not fit, so the remote config is dropped first (and the
    /// drop is logged and counted). Returns false if even the rest does not fit.
    pub fn fit(&mut self, limit: usize, prefix_len: usize) -> bool {
        if self.encoded_len() + prefix_len <= limit {
            return true;
        }
        metrics::counter!("gitamp_opamp_oversize_outgoing_total").increment(1);
        tracing::warn!(
            len = self.encoded_len() + prefix_len,
            limit,
            "ServerToAgent over the size limit: remote config dropped"
        );
        self.remote_config = None;
        self.encoded_len() + prefix_len <= limit
    }
}

/// How long an HTTP agent that was sent a config but still reports another hash waits before
/// it is offered the config again. Clients build their next poll before handling the previous
/// response (the Python client does), so without this every such poll would carry a duplicate.
/// Shorter than the usual 30 s poll, so a lost response is offered again on the next poll.
pub const HTTP_RESEND_AFTER: Duration = Duration::from_secs(10);

/// Which transport an agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// WebSocket (push capable).
    Ws,
    /// Plain HTTP polling.
    Http,
}

/// What changed in a report, for [`FleetEvent::Reported`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// Agent description (labels) changed.
    pub description: bool,
    /// Capabilities changed.
    pub capabilities: bool,
    /// Health changed.
    pub health: bool,
    /// Effective config changed.
    pub effective_config: bool,
    /// Remote config status changed.
    pub remote_config_status: bool,
}

impl Changes {
    /// True if anything changed.
    pub fn any(&self) -> bool {
        self.description
            || self.capabilities
            || self.health
            || self.effective_config
            || self.remote_config_status
    }
}

/// Fleet events for the reconciler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetEvent {
    /// The agent connected (first message on a connection, or back after a disconnect).
    Connected(Uid),
    /// The agent reported changed state.
    Reported(Uid, Changes),
    /// The agent disconnected (agent_disconnect, transport close or liveness timeout).
    Disconnected(Uid),
}

/// Agent description flattened to string attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Description {
    /// Identifying attributes (service.name, service.instance.id, ...).
    pub identifying: BTreeMap<String, String>,
    /// Non-identifying attributes (host.*, os.*, ...).
    pub non_identifying: BTreeMap<String, String>,
}

impl Description {
    /// All attributes, identifying ones winning on key clashes: the agent's labels.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut all = self.non_identifying.clone();
        all.extend(self.identifying.iter().map(|(k, v)| (k.clone(), v.clone())));
        all
    }

    /// Whether [`Description::labels`] would equal `labels`, without building it.
    pub fn labels_equal(&self, labels: &BTreeMap<String, String>) -> bool {
        let mut seen = 0;
        for (k, v) in &self.identifying {
            if labels.get(k) != Some(v) {
                return false;
            }
            seen += 1;
        }
        for (k, v) in &self.non_identifying {
            if self.identifying.contains_key(k) {
                continue;
            }
            if labels.get(k) != Some(v) {
                return false;
            }
            seen += 1;
        }
        seen == labels.len()
    }
}

/// Component health, recursively.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Component is up and healthy.
    pub healthy: bool,
    /// Start time (0 if not running).
    pub start_time_unix_nano: u64,
    /// Last error text.
    pub last_error: String,
    /// Agent-defined status text.
    pub status: String,
    /// When the status was observed.
    pub status_time_unix_nano: u64,
    /// Sub-component health by component id.
    pub components: BTreeMap<String, Health>,
}

/// Makes reported bodies equal to the desired config's files share its bytes: an agent that
/// reported its config before it was assigned (after a server restart, every agent) would
/// otherwise keep its own copy of the same few KiB.
fn share_bodies(effective: &mut BTreeMap<String, ConfigFile>, desired: &DesiredConfig) {
    for (name, file) in effective.iter_mut() {
        if let Some(body) = desired.same_body(name, &file.body) {
            file.body = body;
        }
    }
}

/// One config file as reported in the effective config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigFile {
    /// Body (shown as UTF-8, lossily, when serialized).
    #[serde(serialize_with = "ser_lossy")]
    pub body: Bytes,
    /// MIME type, possibly empty.
    pub content_type: String,
}

/// Remote config status as reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RemoteStatus {
    /// Hash the agent last received (hex when serialized).
    #[serde(serialize_with = "ser_hex")]
    pub hash: Bytes,
    /// UNSET, APPLIED, APPLYING or FAILED.
    pub status: RemoteState,
    /// Error text when FAILED.
    pub error: String,
}

/// `RemoteConfigStatuses`, unknown values mapped to `Unset`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RemoteState {
    /// Not set.
    #[default]
    Unset,
    /// Applied.
    Applied,
    /// Being applied.
    Applying,
    /// Failed (see error).
    Failed,
}

impl From<i32> for RemoteState {
    fn from(v: i32) -> Self {
        match proto::RemoteConfigStatuses::try_from(v) {
            Ok(proto::RemoteConfigStatuses::Applied) => Self::Applied,
            Ok(proto::RemoteConfigStatuses::Applying) => Self::Applying,
            Ok(proto::RemoteConfigStatuses::Failed) => Self::Failed,
            _ => Self::Unset,
        }
    }
}

/// Connection state of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionInfo {
    /// Whether the agent is considered connected.
    pub connected: bool,
    /// Transport of the last message.
    pub transport: Transport,
    /// When the current connection started (None while disconnected).
    #[serde(serialize_with = "ser_opt_time")]
    pub connected_since: Option<SystemTime>,
    /// When the last message arrived.
    #[serde(serialize_with = "ser_time")]
    pub last_seen: SystemTime,
}

/// A cloneable, serializable view of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentSnapshot {
    /// Instance UID (canonical UUID text when serialized).
    #[serde(serialize_with = "ser_uid")]
    pub uid: Uid,
    /// Description, once reported (shared with the registry, not copied).
    pub description: Option<Arc<Description>>,
    /// Agent capabilities bit field.
    pub capabilities: u64,
    /// Health, once reported (shared with the registry, not copied).
    pub health: Option<Arc<Health>>,
    /// Effective config files by name, once reported.
    pub effective_config: Option<BTreeMap<String, ConfigFile>>,
    /// Remote config status, once reported.
    pub remote_config_status: Option<RemoteStatus>,
    /// Connection state.
    pub connection: ConnectionInfo,
    /// Last sequence number received.
    pub sequence_num: u64,
    /// Hash of the desired config assigned by the reconciler, if any.
    #[serde(serialize_with = "ser_opt_hash")]
    pub desired_hash: Option<[u8; 32]>,
    /// Hash of the config last sent to the agent.
    #[serde(serialize_with = "ser_opt_hash")]
    pub sent_hash: Option<[u8; 32]>,
    /// When that config was sent.
    #[serde(serialize_with = "ser_opt_time")]
    pub sent_at: Option<SystemTime>,
    /// Hashes the agent reported FAILED (not re-sent until the desired config changes).
    #[serde(serialize_with = "ser_hex_list")]
    pub failed_hashes: Vec<Bytes>,
}

/// Handle used to push frames to a WebSocket connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnHandle {
    pub(crate) id: u64,
    /// Bounded outbound queue of the WS connection's task.
    pub(crate) tx: Option<OutboxSender>,
}

impl ConnHandle {
    /// A WebSocket connection counts as live while its task holds the receiver.
    pub(crate) fn is_live_ws(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| !tx.is_closed())
    }
}

/// Per-agent state. Only reachable through its mutex.
#[derive(Debug)]
pub(crate) struct AgentEntry {
    pub(crate) uid: Uid,
    pub(crate) description: Option<Arc<Description>>,
    pub(crate) capabilities: u64,
    pub(crate) health: Option<Arc<Health>>,
    pub(crate) effective_config: Option<BTreeMap<String, ConfigFile>>,
    pub(crate) remote_status: Option<RemoteStatus>,
    pub(crate) connected: bool,
    pub(crate) transport: Transport,
    pub(crate) connected_since: Option<SystemTime>,
    pub(crate) last_seen: SystemTime,
    pub(crate) last_seen_mono: Instant,
    /// Last sequence number; `None` until the first message is processed.
    pub(crate) sequence_num: Option<u64>,
    /// Set when the last reply asked for full state; the next message is then
    /// accepted as the full report whatever its sequence number (convergence with
    /// clients whose numbering repeats or skips).
    pub(crate) full_state_requested: bool,
    pub(crate) desired: Option<Arc<DesiredConfig>>,
    pub(crate) sent_hash: Option<[u8; 32]>,
    pub(crate) sent_at: Option<SystemTime>,
    /// The connection `sent_hash` went out on. A WebSocket delivers in order, so the same
    /// hash is never offered twice on one connection: an agent message that crossed the push
    /// on the wire (still reporting the old hash) must not trigger a second copy.
    pub(crate) sent_conn: Option<u64>,
    pub(crate) failed_hashes: Vec<Bytes>,
    pub(crate) conn: Option<ConnHandle>,
    /// Sequence number and time of the agent_disconnect that ended the last session,
    /// to recognise late messages of that session (see `session`).
    pub(crate) left: Option<(u64, Instant)>,
}

impl AgentEntry {
    pub(crate) fn new(uid: Uid, transport: Transport) -> Self {
        Self {
            uid,
            description: None,
            capabilities: 0,
            health: None,
            effective_config: None,
            remote_status: None,
            connected: false,
            transport,
            connected_since: None,
            last_seen: SystemTime::now(),
            last_seen_mono: Instant::now(),
            sequence_num: None,
            full_state_requested: false,
            desired: None,
            sent_hash: None,
            sent_at: None,
            sent_conn: None,
            failed_hashes: Vec::new(),
            conn: None,
            left: None,
        }
    }

    pub(crate) fn snapshot(&self) -> AgentSnapshot {
        self.snapshot_with(true)
    }

    fn snapshot_with(&self, effective_config: bool) -> AgentSnapshot {
        AgentSnapshot {
            uid: self.uid,
            description: self.description.clone(),
            capabilities: self.capabilities,
            health: self.health.clone(),
            effective_config: if effective_config {
                self.effective_config.clone()
            } else {
                None
            },
            remote_config_status: self.remote_status.clone(),
            connection: ConnectionInfo {
                connected: self.connected,
                transport: self.transport,
                connected_since: self.connected_since,
                last_seen: self.last_seen,
            },
            sequence_num: self.sequence_num.unwrap_or(0),
            desired_hash: self.desired.as_ref().map(|d| d.hash),
            sent_hash: self.sent_hash,
            sent_at: self.sent_at,
            failed_hashes: self.failed_hashes.clone(),
        }
    }

    /// Records a FAILED report for `hash` (bounded, deduplicated).
    pub(crate) fn remember_failed(&mut self, hash: &Bytes) {
        if hash.is_empty() || self.failed_hashes.iter().any(|h| h == hash) {
            return;
        }
        if self.failed_hashes.len() >= MAX_FAILED_HASHES {
            self.failed_hashes.remove(0);
        }
        self.failed_hashes.push(hash.clone());
    }

    /// The remote config to send now, if any. The decision uses hashes only, never
    /// the status or the effective config:
    /// - the agent must currently accept remote config;
    /// - its reported hash must differ from the desired one;
    /// - the desired hash must not be one it reported FAILED (no re-push loops,
    ///   including after a rollback to an older config);
    /// - agents that do not report remote config status get each hash once;
    /// - an acknowledging agent whose full state was requested and whose config is unknown
    ///   waits for its full report;
    /// - a hash just sent is not sent again: an agent message that crossed the push (built
    ///   before the agent handled it, so still reporting the old hash) would otherwise get a
    ///   duplicate. Over WebSocket "just" means on this connection (it delivers in order; a
    ///   reconnect gets it again); over HTTP, within [`HTTP_RESEND_AFTER`] (a lost response is
    ///   offered again after that).
    pub(crate) fn config_to_send(&self, conn_id: u64) -> Option<Arc<DesiredConfig>> {
        let desired = self.desired.as_ref()?;
        if self.capabilities & proto::AgentCapabilities::AcceptsRemoteConfig as u64 == 0 {
            return None;
        }
        let reported = self.remote_status.as_ref().map(|s| &s.hash[..]);
        if reported == Some(&desired.hash[..]) {
            return None;
        }
        if self.failed_hashes.iter().any(|h| h[..] == desired.hash[..]) {
            return None;
        }
        let reports_status =
            self.capabilities & proto::AgentCapabilities::ReportsRemoteConfig as u64 != 0;
        // We asked for its full state and know nothing of its config (a reconnect after a
        // server restart): its full report, one round trip away, says what it runs. Offering
        // the config now would re-send what it may already have.
        if reports_status && self.full_state_requested && self.remote_status.is_none() {
            return None;
        }
        if !reports_status && self.sent_hash == Some(desired.hash) {
            return None;
        }
        if self.sent_hash == Some(desired.hash) {
            let just_sent = match self.transport {
                Transport::Ws => self.sent_conn == Some(conn_id),
                Transport::Http => self
                    .sent_at
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age < HTTP_RESEND_AFTER),
            };
            if just_sent {
                return None;
            }
        }
        Some(Arc::clone(desired))
    }

    pub(crate) fn mark_sent(&mut self, hash: [u8; 32], conn_id: u64) {
        self.sent_hash = Some(hash);
        self.sent_at = Some(SystemTime::now());
        self.sent_conn = Some(conn_id);
    }

    /// Marks the agent disconnected; returns true if it was connected.
    pub(crate) fn disconnect(&mut self) -> bool {
        self.conn = None;
        self.connected_since = None;
        std::mem::replace(&mut self.connected, false)
    }
}

/// The fleet registry. Share it as `Arc<Fleet>`.
#[derive(Debug)]
pub struct Fleet {
    agents: RwLock<HashMap<Uid, Arc<Mutex<AgentEntry>>>>,
    events: broadcast::Sender<FleetEvent>,
    /// Every config of the served revision (see [`Fleet::set_served`]).
    served: RwLock<Arc<[Arc<DesiredConfig>]>>,
}

impl Default for Fleet {
    fn default() -> Self {
        Self::new()
    }
}

/// Locks a mutex, recovering from poisoning: entry state stays usable even if a
/// thread panicked while holding it (every update leaves it consistent field by field).
pub(crate) fn lock(m: &Mutex<AgentEntry>) -> MutexGuard<'_, AgentEntry> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fleet {
    /// An empty fleet.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Self {
            agents: RwLock::new(HashMap::new()),
            events,
            served: RwLock::new(Arc::from(Vec::new())),
        }
    }

    /// Names the configs of the revision being served. A reported effective config equal to
    /// one of them shares its bytes even before the agent is assigned a config: after a server
    /// restart every agent reports first, and each report's copy (some KiB per agent, 100,000
    /// agents at once) took the server past 1 GiB until the plan assigned the configs.
    pub fn set_served(&self, configs: impl IntoIterator<Item = Arc<DesiredConfig>>) {
        let configs: Arc<[Arc<DesiredConfig>]> = configs.into_iter().collect();
        *self.served.write().unwrap_or_else(|p| p.into_inner()) = configs;
    }

    /// The configs of the served revision.
    pub(crate) fn served(&self) -> Arc<[Arc<DesiredConfig>]> {
        self.served
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Subscribes to fleet events (see the module docs about lag).
    pub fn subscribe(&self) -> broadcast::Receiver<FleetEvent> {
        self.events.subscribe()
    }

    pub(crate) fn emit(&self, ev: FleetEvent) {
        // No receiver is not an error: nobody is listening yet.
        let _ = self.events.send(ev);
    }

    pub(crate) fn get(&self, uid: &Uid) -> Option<Arc<Mutex<AgentEntry>>> {
        let map = self.agents.read().unwrap_or_else(|p| p.into_inner());
        map.get(uid).cloned()
    }

    /// Returns the entry for `uid`, creating it; the bool is true if it was created.
    pub(crate) fn get_or_insert(
        &self,
        uid: Uid,
        transport: Transport,
    ) -> (Arc<Mutex<AgentEntry>>, bool) {
        if let Some(e) = self.get(&uid) {
            return (e, false);
        }
        let mut map = self.agents.write().unwrap_or_else(|p| p.into_inner());
        let mut created = false;
        let e = map
            .entry(uid)
            .or_insert_with(|| {
                created = true;
                Arc::new(Mutex::new(AgentEntry::new(uid, transport)))
            })
            .clone();
        (e, created)
    }

    fn entries(&self) -> Vec<Arc<Mutex<AgentEntry>>> {
        let map = self.agents.read().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }

    /// How many agents are known (connected or not).
    pub fn len(&self) -> usize {
        self.agents.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True if no agent is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Snapshots of every known agent, sorted by UID.
    pub fn agents(&self) -> Vec<AgentSnapshot> {
        let mut v: Vec<_> = self.entries().iter().map(|e| lock(e).snapshot()).collect();
        v.sort_by_key(|a| a.uid);
        v
    }

    /// Like [`Fleet::agents`] but without the effective config, which planning never reads:
    /// the reconciler snapshots the whole fleet after every burst of events, and copying each
    /// agent's effective config map was a large part of that (see docs/benchmarks.md).
    pub fn agents_for_plan(&self) -> Vec<AgentSnapshot> {
        let mut v: Vec<_> = self
            .entries()
            .iter()
            .map(|e| lock(e).snapshot_with(false))
            .collect();
        v.sort_by_key(|a| a.uid);
        v
    }

    /// Snapshot of one agent.
    pub fn agent(&self, uid: &Uid) -> Option<AgentSnapshot> {
        self.get(uid).map(|e| lock(&e).snapshot())
    }

    /// Snapshot of one agent without its effective config (what planning reads).
    pub fn agent_for_plan(&self, uid: &Uid) -> Option<AgentSnapshot> {
        self.get(uid).map(|e| lock(&e).snapshot_with(false))
    }

    /// Sets (or clears) the desired config of a known agent. Returns false if the
    /// agent is unknown (assign on [`FleetEvent::Connected`]).
    ///
    /// A connected WebSocket agent that should get the config gets it at once through
    /// its bounded outbound queue (never blocking: if the queue is full the config is
    /// not marked sent and goes out with the next reply instead); HTTP agents get it in
    /// the response to their next poll. A change of desired hash forgets the FAILED
    /// hashes, since the operator changed the desired state.
    pub fn set_desired(&self, uid: &Uid, desired: Option<Arc<DesiredConfig>>) -> bool {
        let Some(entry) = self.get(uid) else {
            return false;
        };
        let mut e = lock(&entry);
        let old = e.desired.as_ref().map(|d| d.hash);
        let new = desired.as_ref().map(|d| d.hash);
        if old != new {
            e.failed_hashes.clear();
        }
        if let (Some(d), Some(effective)) = (&desired, e.effective_config.as_mut()) {
            share_bodies(effective, d);
        }
        e.desired = desired;
        if !e.connected {
            return true;
        }
        let Some((conn_id, tx)) = e
            .conn
            .as_ref()
            .and_then(|c| c.tx.clone().map(|tx| (c.id, tx)))
        else {
            return true;
        };
        if let Some(cfg) = e.config_to_send(conn_id) {
            let out = Outgoing {
                msg: proto::ServerToAgent {
                    instance_uid: Bytes::copy_from_slice(uid),
                    capabilities: SERVER_CAPABILITIES,
                    ..Default::default()
                },
                remote_config: Some(Arc::clone(&cfg)),
            };
            match tx.try_send(Push::frame(&out)) {
                Ok(()) => e.mark_sent(cfg.hash, conn_id),
                Err(err) => tracing::debug!(
                    agent = %uid_text(uid),
                    error = %err,
                    "config push not queued; it goes out with the next reply"
                ),
            }
        }
        true
    }

    /// Forgets FAILED hashes and the sent hash of an agent so its desired config is
    /// offered again (operator retry). Returns false if the agent is unknown.
    pub fn retry(&self, uid: &Uid) -> bool {
        let Some(entry) = self.get(uid) else {
            return false;
        };
        let mut e = lock(&entry);
        e.failed_hashes.clear();
        e.sent_hash = None;
        true
    }

    /// Marks agents disconnected whose last message is older than `timeout`.
    /// WebSocket agents without the ReportsHeartbeat capability are exempt: they are
    /// not expected to talk while idle, and their open socket is the liveness signal
    /// (a transport close disconnects them). Returns the UIDs disconnected.
    pub fn sweep(&self, timeout: Duration) -> Vec<Uid> {
        let now = Instant::now();
        let mut gone = Vec::new();
        for entry in self.entries() {
            let mut e = lock(&entry);
            if !e.connected || now.saturating_duration_since(e.last_seen_mono) <= timeout {
                continue;
            }
            let heartbeats =
                e.capabilities & proto::AgentCapabilities::ReportsHeartbeat as u64 != 0;
            let live_ws = e.conn.as_ref().is_some_and(ConnHandle::is_live_ws);
            if live_ws && !heartbeats {
                continue;
            }
            e.disconnect();
            gone.push(e.uid);
        }
        for uid in &gone {
            tracing::info!(agent = %uid_text(uid), "agent silent too long: disconnected");
            self.emit(FleetEvent::Disconnected(*uid));
        }
        gone
    }

    /// Marks every listed agent disconnected if it is still bound to connection
    /// `conn_id` (a transport close; an agent that moved to another connection stays).
    pub(crate) fn connection_closed(&self, conn_id: u64, uids: impl IntoIterator<Item = Uid>) {
        for uid in uids {
            let Some(entry) = self.get(&uid) else {
                continue;
            };
            let was = {
                let mut e = lock(&entry);
                if e.conn.as_ref().is_some_and(|c| c.id == conn_id) {
                    e.disconnect()
                } else {
                    false
                }
            };
            if was {
                self.emit(FleetEvent::Disconnected(uid));
            }
        }
    }
}

/// Canonical UUID text of a UID, for logs and serialization.
pub fn uid_text(uid: &Uid) -> String {
    uuid::Uuid::from_bytes(*uid).hyphenated().to_string()
}

fn ser_uid<S: serde::Serializer>(uid: &Uid, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&uid_text(uid))
}

fn ser_lossy<S: serde::Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

fn ser_hex<S: serde::Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}

fn ser_hex_list<S: serde::Serializer>(v: &[Bytes], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(hex::encode))
}

fn ser_opt_hash<S: serde::Serializer>(h: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
    match h {
        Some(h) => s.serialize_some(&hex::encode(h)),
        None => s.serialize_none(),
    }
}

fn unix_ms(t: &SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(unix_ms(t))
}

fn ser_opt_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&unix_ms(t)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_hash_is_deterministic_and_unambiguous() {
        let mut a = BTreeMap::new();
        a.insert("b".to_owned(), (Bytes::from_static(b"2"), String::new()));
        a.insert(
            "a".to_owned(),
            (Bytes::from_static(b"1"), "text/yaml".to_owned()),
        );
        let mut b = BTreeMap::new();
        b.insert(
            "a".to_owned(),
            (Bytes::from_static(b"1"), "text/yaml".to_owned()),
        );
        b.insert("b".to_owned(), (Bytes::from_static(b"2"), String::new()));
        assert_eq!(
            DesiredConfig::canonical_hash(&a),
            DesiredConfig::canonical_hash(&b)
        );
        let mut c = BTreeMap::new();
        c.insert(
            "a".to_owned(),
            (Bytes::from_static(b"1t"), "ext/yaml".to_owned()),
        );
        c.insert("b".to_owned(), (Bytes::from_static(b"2"), String::new()));
        assert_ne!(
            DesiredConfig::canonical_hash(&a),
            DesiredConfig::canonical_hash(&c)
        );
        let d = DesiredConfig::from_files(a);
        assert_eq!(d.hash(), &DesiredConfig::canonical_hash(d.files()));
    }

    #[test]
    fn cached_field_concatenates() {
        let d = DesiredConfig::one_yaml_file(Bytes::from_static(b"receivers: {}"), [9; 32]);
        let out = Outgoing {
            msg: proto::ServerToAgent {
                instance_uid: Bytes::from_static(&[1; 16]),
                capabilities: SERVER_CAPABILITIES,
                ..Default::default()
            },
            remote_config: Some(d),
        };
        let back = proto::ServerToAgent::decode(out.encode()).unwrap();
        let rc = back.remote_config.unwrap();
        assert_eq!(&rc.config_hash[..], &[9; 32]);
        assert_eq!(
            &rc.config.unwrap().config_map[""].body[..],
            b"receivers: {}"
        );
        assert_eq!(&back.instance_uid[..], &[1; 16]);
        assert_eq!(out.encode_frame().len(), out.encoded_len() + 1);
    }
}

//! The fleet registry: what each agent reported and how to reach it.
//!
//! It keeps observation and delivery facts only: each agent's last reports (description,
//! capabilities, health, effective config, remote config status), its connection, and the
//! config the reconciler handed it that has not gone out yet. Whether a config should go out is
//! not decided here: the plan decides (`gitamp_core::plan::push_decision`) and hands it over
//! with [`Fleet::deliver`]; the registry puts it on the agent's WebSocket at once, or in the
//! reply to its next message, and says when a frame carrying it was queued
//! ([`Delivery::Queued`], [`FleetEvent::ConfigSent`]).
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
//! Nothing is lost with them: remote config statuses not yet read by the planner wait in
//! the entry ([`AgentSnapshot::unread_statuses`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

// tokio's clock (the standard one outside a runtime), so liveness can be tested with paused time.
use tokio::time::Instant;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::offers::{
    AgentOffers, OfferSettings, OffersView, OwnTelemetry, SentOffer, SettingsStatus,
};
use crate::outbox::{OutboxSender, Push};
use crate::packages::{PackageOffer, PackageReport};
use crate::plan_wait::{PlanBarrier, PlanMark};
use crate::proto;
use crate::report::{
    Changes, ConfigFiles, ConnectionInfo, Description, Health, RemoteState, RemoteStatus, Transport,
};
use crate::ser::ser_uid;
use crate::wire::{Outgoing, RemoteConfig, Uid, uid_text};

/// Capacity of the event channel; see the module docs for what happens on lag. A rollout to
/// N WebSocket agents produces 2N reports within about a second while the reconciler is busy
/// with the push plan: at 4,096 a 15,000-agent rollout always lagged, and the re-read of the
/// whole fleet that follows cost up to half a second of CPU in the middle of the rollout. The
/// slots (one per event, a few dozen bytes each) are allocated up front.
pub const EVENT_CAPACITY: usize = 65_536;

/// How many remote config statuses wait for the planner per agent (oldest dropped first; a
/// FAILED one is kept over the others, since it is what stops a re-push loop).
const MAX_UNREAD_STATUSES: usize = 16;

/// Fleet events for the reconciler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetEvent {
    /// The agent connected (first message on a connection, or back after a disconnect).
    Connected(Uid),
    /// The agent reported changed state.
    Reported(Uid, Changes),
    /// The agent disconnected (agent_disconnect, transport close or liveness timeout).
    Disconnected(Uid),
    /// A config handed over with [`Fleet::deliver`] went out in a reply: hash and connection.
    ConfigSent(Uid, [u8; 32], u64),
    /// A package offer handed over with [`Fleet::offer`] went out in a reply: its
    /// all-packages hash and the connection.
    PackagesSent(Uid, [u8; 32], u64),
}

/// The registry's clock, which the reconciler shares: the wall clock when the fleet was made
/// plus tokio's monotonic clock since. Times it stamps (a send) and times a plan computes (a
/// resend due) are on one scale, never jump back with the wall clock, and follow paused time in
/// tests.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: SystemTime,
    start: Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            wall: SystemTime::now(),
            start: Instant::now(),
        }
    }

    /// Now.
    pub fn now(&self) -> SystemTime {
        self.wall + self.start.elapsed()
    }

    /// Now, in ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        unix_ms(self.now())
    }

    /// The tokio instant of a time in ms since the Unix epoch (for a timer).
    pub fn instant_of(&self, at_ms: u64) -> Instant {
        self.start + Duration::from_millis(at_ms.saturating_sub(unix_ms(self.wall)))
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The last config that went out to an agent: a frame carrying it was queued on its
/// WebSocket, or the reply to its poll carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The config hash.
    pub hash: [u8; 32],
    /// The connection it went out on.
    pub conn: u64,
    /// When.
    pub at: SystemTime,
}

/// What [`Fleet::deliver`] did with a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A frame carrying it was queued on the agent's WebSocket.
    Queued(Sent),
    /// It waits for the agent's next message and goes out in the reply (an HTTP agent, or a
    /// full WebSocket queue); [`FleetEvent::ConfigSent`] says when.
    Pending,
    /// Not sent: the agent already reports this hash, no longer accepts remote config, or the
    /// server awaits the full report it asked for (the plan decides again with it).
    Dropped,
    /// The agent is unknown.
    Unknown,
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
    pub effective_config: Option<ConfigFiles>,
    /// Remote config status, once reported.
    pub remote_config_status: Option<RemoteStatus>,
    /// Connection state.
    pub connection: ConnectionInfo,
    /// Last sequence number received.
    pub sequence_num: u64,
    /// The server asked for the agent's full state and has not received it yet (a reconnect
    /// after a server restart, a lost message, or an HTTP agent whose last polls went to other
    /// servers): what it runs is one round trip away, and what this server last heard of it
    /// may be out of date. Nothing is sent to it meanwhile.
    pub awaiting_report: bool,
    /// Hash of a config handed over with [`Fleet::deliver`] that has not gone out yet.
    #[serde(skip)]
    pub pending_hash: Option<[u8; 32]>,
    /// The last config that went out to it (this process's record; none after a restart).
    #[serde(skip)]
    pub last_sent: Option<Sent>,
    /// Remote config statuses reported since the planner last read them, oldest first
    /// (only in [`Fleet::observe`]'s snapshots): two reports between two plans (FAILED then
    /// the rollback's APPLIED) must both reach it.
    #[serde(skip)]
    pub unread_statuses: Vec<RemoteStatus>,
    /// Package statuses, once reported.
    pub package_statuses: Option<PackageReport>,
    /// The last package offer that went out (its all-packages hash).
    #[serde(skip)]
    pub last_offer: Option<Sent>,
    /// Connection-settings offers: what was offered and what the agent said (only in the
    /// API's snapshots, [`Fleet::agents`] and [`Fleet::agent`]).
    #[serde(skip)]
    pub offers: Option<OffersView>,
    /// The last connection-settings offer sent (stored with the agent's record).
    #[serde(skip)]
    pub settings_offered: Option<SentOffer>,
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

/// Per-agent state. Only reachable through its mutex; `session` changes it through the methods
/// below, each keeping one rule.
#[derive(Debug)]
pub(crate) struct AgentEntry {
    uid: Uid,
    description: Option<Arc<Description>>,
    capabilities: u64,
    health: Option<Arc<Health>>,
    effective_config: Option<ConfigFiles>,
    remote_status: Option<RemoteStatus>,
    unread_statuses: Vec<RemoteStatus>,
    connected: bool,
    transport: Transport,
    connected_since: Option<SystemTime>,
    last_seen: SystemTime,
    last_seen_mono: Instant,
    /// Last sequence number; `None` until the first message is processed.
    sequence_num: Option<u64>,
    /// Set when a reply asked for full state, until the full report arrives: the next message
    /// is accepted as it whatever its sequence number (convergence with clients whose
    /// numbering repeats or skips), unless it is an HTTP poll that came after a gap without a
    /// description (see [`AgentEntry::take_sequence`]). While set, [`AgentEntry::awaiting_report`].
    full_state_requested: bool,
    /// Handed over by the plan, not yet gone out.
    pending: Option<Arc<RemoteConfig>>,
    /// What went out last.
    last_sent: Option<Sent>,
    package_statuses: Option<PackageReport>,
    /// A package offer handed over by the plan, not yet gone out.
    pending_offer: Option<Arc<PackageOffer>>,
    /// The package offer that went out last.
    last_offer: Option<Sent>,
    conn: Option<ConnHandle>,
    /// Sequence number and time of the agent_disconnect that ended the last session,
    /// to recognise late messages of that session (see `session`).
    left: Option<(u64, Instant)>,
    /// Connection-settings offers (heartbeat interval, own telemetry): see `offers`.
    pub(crate) offers: AgentOffers,
}

/// How much of an agent a snapshot copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detail {
    /// Everything, the effective config included (one agent's detail, a whole-fleet copy).
    Full,
    /// What a list shows: no effective config (copying 100,000 of them cost most of a list).
    Brief,
    /// What the planner reads: neither the effective config nor the offers it does not use.
    Planner,
}

impl AgentEntry {
    fn new(uid: Uid, transport: Transport) -> Self {
        Self {
            uid,
            description: None,
            capabilities: 0,
            health: None,
            effective_config: None,
            remote_status: None,
            unread_statuses: Vec::new(),
            connected: false,
            transport,
            connected_since: None,
            last_seen: SystemTime::now(),
            last_seen_mono: Instant::now(),
            sequence_num: None,
            full_state_requested: false,
            pending: None,
            last_sent: None,
            package_statuses: None,
            pending_offer: None,
            last_offer: None,
            conn: None,
            left: None,
            offers: AgentOffers::default(),
        }
    }

    fn snapshot_with(&self, detail: Detail) -> AgentSnapshot {
        AgentSnapshot {
            uid: self.uid,
            description: self.description.clone(),
            capabilities: self.capabilities,
            health: self.health.clone(),
            effective_config: if detail == Detail::Full {
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
                id: self.conn.as_ref().map(|c| c.id),
            },
            sequence_num: self.sequence_num.unwrap_or(0),
            awaiting_report: self.awaiting_report(),
            pending_hash: self.pending.as_ref().map(|p| *p.hash()),
            last_sent: self.last_sent,
            unread_statuses: Vec::new(),
            package_statuses: self.package_statuses.clone(),
            last_offer: self.last_offer,
            offers: (detail != Detail::Planner).then(|| self.offers.view()),
            settings_offered: self.offers.sent(),
        }
    }

    /// What the planner reads: the snapshot without the effective config, with the statuses
    /// not read yet (consumed).
    fn observed(&mut self) -> AgentSnapshot {
        let mut snap = self.snapshot_with(Detail::Planner);
        snap.unread_statuses = std::mem::take(&mut self.unread_statuses);
        snap
    }

    /// What this server knows of the agent may be out of date until the full report it asked
    /// for arrives: no config goes out meanwhile (a plan made on it could resend a config
    /// another server sent, or that the agent already applied).
    pub(crate) fn awaiting_report(&self) -> bool {
        self.full_state_requested
    }

    pub(crate) fn uid(&self) -> Uid {
        self.uid
    }

    pub(crate) fn description(&self) -> Option<&Description> {
        self.description.as_deref()
    }

    /// A message of this agent arrived on `conn`: it is seen now, and connected if it was
    /// not (returns true then).
    pub(crate) fn seen_on(
        &mut self,
        conn: u64,
        transport: Transport,
        tx: Option<OutboxSender>,
    ) -> bool {
        let now = SystemTime::now();
        self.left = None;
        self.last_seen = now;
        self.last_seen_mono = Instant::now();
        self.transport = transport;
        self.conn = Some(ConnHandle { id: conn, tx });
        if self.connected {
            return false;
        }
        self.connected = true;
        self.connected_since = Some(now);
        true
    }

    /// Whether a message numbered `seq` without a description is a straggler of the session
    /// its `agent_disconnect` ended (see `session`).
    pub(crate) fn is_straggler(&self, seq: u64, described: bool, window: Duration) -> bool {
        !self.connected
            && !described
            && self
                .left
                .is_some_and(|(left_seq, at)| seq <= left_seq && at.elapsed() < window)
    }

    /// Whether another live WebSocket than `conn` holds this agent.
    pub(crate) fn live_elsewhere(&self, conn: u64) -> bool {
        self.connected
            && self
                .conn
                .as_ref()
                .is_some_and(|c| c.id != conn && c.is_live_ws())
    }

    /// Takes the sequence number of a message; returns whether to ask for the full state
    /// (`incomplete`: the message lacks state the agent's capabilities say it reports;
    /// `described`: it carries the agent description, as every full report does). After
    /// asking, the next message is the full report whatever its number, except:
    /// - an HTTP poll that skipped numbers without a description: the agent's polls may be
    ///   balanced over several servers, so the full report went to another one, and this
    ///   server asks again (a WebSocket's answer comes on the same connection, so a WebSocket
    ///   is never asked twice in a row);
    /// - a message without a description while this server has none: the agent built it
    ///   before it read the request (an APPLIED report queued behind the APPLYING one that
    ///   reached this server first), so the answer is still to come. Taking it for the answer
    ///   would let the plan decide on an agent without labels. It is not asked again (no
    ///   ping-pong with a client that never describes itself), and keeps waiting.
    pub(crate) fn take_sequence(
        &mut self,
        seq: u64,
        created: bool,
        incomplete: bool,
        described: bool,
        disconnecting: bool,
    ) -> bool {
        let in_sequence = !created
            && self
                .sequence_num
                .is_some_and(|prev| prev.wrapping_add(1) == seq);
        // Messages this server did not see (a repeated or lower number is a client's own
        // numbering, accepted as it is).
        let skipped = !created
            && self
                .sequence_num
                .is_some_and(|prev| seq > prev.wrapping_add(1));
        self.sequence_num = Some(seq);
        let (ask, awaiting) = if disconnecting {
            (false, false)
        } else if self.full_state_requested {
            let answered_elsewhere = self.transport == Transport::Http && skipped && !described;
            let still_to_come = !described && self.description.is_none();
            (answered_elsewhere, answered_elsewhere || still_to_come)
        } else {
            // Never described to this server (its first message here was an agent_disconnect):
            // asked even in sequence.
            let ask = incomplete && (!in_sequence || self.description.is_none());
            (ask, ask)
        };
        self.full_state_requested = awaiting;
        ask
    }

    pub(crate) fn capabilities(&self) -> u64 {
        self.capabilities
    }

    pub(crate) fn set_capabilities(&mut self, caps: u64) -> bool {
        std::mem::replace(&mut self.capabilities, caps) != caps
    }

    pub(crate) fn set_description(&mut self, d: Description) -> bool {
        replace_shared(&mut self.description, d)
    }

    pub(crate) fn set_health(&mut self, h: Health) -> bool {
        replace_shared(&mut self.health, h)
    }

    pub(crate) fn set_effective_config(&mut self, files: ConfigFiles) -> bool {
        replace(&mut self.effective_config, files)
    }

    /// Body of the config handed over for this agent, to share reported bytes with.
    pub(crate) fn pending(&self) -> Option<&RemoteConfig> {
        self.pending.as_deref()
    }

    /// Records a remote config status; it also waits for the planner (bounded).
    pub(crate) fn set_remote_status(&mut self, status: RemoteStatus) -> bool {
        if self.remote_status.as_ref() == Some(&status) {
            return false;
        }
        if self.unread_statuses.len() >= MAX_UNREAD_STATUSES {
            let drop = self
                .unread_statuses
                .iter()
                .position(|s| s.status != RemoteState::Failed)
                .unwrap_or(0);
            self.unread_statuses.remove(drop);
        }
        self.unread_statuses.push(status.clone());
        self.remote_status = Some(status);
        true
    }

    /// Records package statuses; returns whether they changed.
    pub(crate) fn set_package_statuses(&mut self, report: PackageReport) -> bool {
        replace(&mut self.package_statuses, report)
    }

    /// The package offer handed over for this agent, if it may go out now in a reply on
    /// `conn` (recorded as sent at `now`): only while the agent still accepts packages.
    pub(crate) fn take_offer(&mut self, conn: u64, now: SystemTime) -> Option<Arc<PackageOffer>> {
        let offer = self.pending_offer.take()?;
        if !self.accepts_packages() {
            return None;
        }
        self.last_offer = Some(Sent {
            hash: *offer.all_hash(),
            conn,
            at: now,
        });
        Some(offer)
    }

    fn accepts_packages(&self) -> bool {
        self.capabilities & proto::AgentCapabilities::AcceptsPackages as u64 != 0
    }

    /// Queues `out` on the agent's live WebSocket at once; the connection's id when it was
    /// queued. `None`: no live WebSocket, or its queue is full, and what `out` carries goes with
    /// the reply to the agent's next message instead.
    fn push_now(&self, out: &Outgoing, what: &str) -> Option<u64> {
        let conn = self.conn.as_ref().filter(|_| self.connected)?;
        let tx = conn.tx.as_ref()?;
        match tx.try_send(Push::frame(out)) {
            Ok(()) => Some(conn.id),
            Err(err) => {
                tracing::debug!(
                    agent = %uid_text(&self.uid),
                    error = %err,
                    "{what} not queued; it goes out with the next reply"
                );
                None
            }
        }
    }

    /// Records the agent's ConnectionSettingsStatus; a FAILED one is logged (and counted): the
    /// offer is not sent again until something in it changes.
    pub(crate) fn set_settings_status(&mut self, status: SettingsStatus) -> bool {
        if self.offers.status.as_ref() == Some(&status) {
            return false;
        }
        if status.status == "failed" {
            crate::telemetry::offer_rejected();
            tracing::warn!(
                agent = %uid_text(&self.uid),
                error = %status.error,
                "agent rejected the connection settings offered to it"
            );
        }
        self.offers.status = Some(status);
        true
    }

    /// Forgets the config handed over and not sent yet (the plan hands it over again if it
    /// still wants it sent).
    pub(crate) fn withdraw_pending(&mut self) {
        self.pending = None;
    }

    /// The agent said goodbye with message `seq`.
    pub(crate) fn said_goodbye(&mut self, seq: u64) {
        self.disconnect();
        self.left = Some((seq, Instant::now()));
    }

    /// The config handed over for this agent, if it may go out now in a reply on `conn`
    /// (recorded as sent at `now`). Nothing goes out while the full report this server asked
    /// for has not arrived (and what was handed over before it is withdrawn when it does:
    /// `session`).
    pub(crate) fn take_pending(&mut self, conn: u64, now: SystemTime) -> Option<Arc<RemoteConfig>> {
        if self.awaiting_report() {
            return None;
        }
        let pending = self.pending.take()?;
        if !self.still_wanted(&pending) {
            return None;
        }
        self.last_sent = Some(Sent {
            hash: *pending.hash(),
            conn,
            at: now,
        });
        Some(pending)
    }

    /// A staleness guard, not a policy (the plan decided to send): a config the agent reports
    /// already (it changed since the plan), or that it no longer accepts, does not go out.
    fn still_wanted(&self, config: &RemoteConfig) -> bool {
        let accepts = self.capabilities & proto::AgentCapabilities::AcceptsRemoteConfig as u64 != 0;
        let reported = self.remote_status.as_ref().map(|s| &s.hash[..]);
        accepts && reported != Some(&config.hash()[..])
    }

    /// Marks the agent disconnected; returns true if it was connected. A config handed over
    /// and not yet sent is dropped: the plan decides again when it is back.
    fn disconnect(&mut self) -> bool {
        self.conn = None;
        self.connected_since = None;
        self.pending = None;
        self.pending_offer = None;
        std::mem::replace(&mut self.connected, false)
    }
}

/// Makes reported bodies equal to a served config's files share its bytes: an agent that
/// reported its config before it was assigned (after a server restart, every agent) would
/// otherwise keep its own copy of the same few KiB.
fn share_bodies(effective: &mut ConfigFiles, config: &RemoteConfig) {
    for (name, file) in effective.iter_mut() {
        if let Some(body) = config.same_body(name, &file.body) {
            file.body = body;
        }
    }
}

/// Replaces `slot` with `new` if the value changed, and says whether it did. An equal value
/// keeps the old one: bodies shared with a served config stay shared, and a repeated report
/// does not pin its message buffer.
fn replace<T: PartialEq>(slot: &mut Option<T>, new: T) -> bool {
    if slot.as_ref() == Some(&new) {
        return false;
    }
    *slot = Some(new);
    true
}

/// [`replace`] for values the registry shares with snapshots.
fn replace_shared<T: PartialEq>(slot: &mut Option<Arc<T>>, new: T) -> bool {
    if slot.as_deref() == Some(&new) {
        return false;
    }
    *slot = Some(Arc::new(new));
    true
}

/// The fleet registry. Share it as `Arc<Fleet>`.
#[derive(Debug)]
pub struct Fleet {
    agents: RwLock<HashMap<Uid, Arc<Mutex<AgentEntry>>>>,
    /// What connection-settings offers are built from (set by the router).
    offer_settings: RwLock<Arc<OfferSettings>>,
    /// What agents report through the own-telemetry receiver.
    throughput: crate::otlp::throughput::Throughput,
    events: broadcast::Sender<FleetEvent>,
    /// Every config of the served revision (see [`Fleet::set_served`]).
    served: RwLock<Arc<[Arc<RemoteConfig>]>>,
    clock: Clock,
    /// How far the planner has got, for poll replies that wait for it (`plan_wait`).
    plans: PlanBarrier,
    /// What a restarted server last offered each agent, taken by the agent's entry when it
    /// comes back (see [`Fleet::remember_offers`]).
    remembered_offers: Mutex<HashMap<Uid, SentOffer>>,
    /// A new agent's offer waits for what other servers offered it ([`Fleet::resume_offer`]).
    offers_read_elsewhere: AtomicBool,
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
            offer_settings: RwLock::default(),
            throughput: Default::default(),
            events,
            served: RwLock::new(Arc::from(Vec::new())),
            clock: Clock::new(),
            plans: PlanBarrier::default(),
            remembered_offers: Mutex::default(),
            offers_read_elsewhere: AtomicBool::new(false),
        }
    }

    /// What this server offered its agents before it restarted (from the store): an agent
    /// that comes back is not offered the same again.
    pub fn remember_offers(&self, offers: HashMap<Uid, SentOffer>) {
        *self
            .remembered_offers
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = offers;
    }

    /// Several servers share the fleet: what an agent new to this one was offered elsewhere is
    /// read before it is offered anything that would make it reconnect; the reader answers
    /// with [`Fleet::resume_offer`].
    pub fn read_offers_elsewhere(&self) {
        self.offers_read_elsewhere.store(true, Ordering::Relaxed);
    }

    /// What other servers last offered `uid` (`None`: nothing, or unknown). A connection-
    /// settings offer that is due now goes out at once on a live WebSocket; true if one did.
    pub fn resume_offer(&self, uid: &Uid, earlier: Option<SentOffer>) -> bool {
        let Some(entry) = self.get(uid) else {
            return false;
        };
        let mut e = lock(&entry);
        e.offers.resume(earlier);
        self.push_due_offer(uid, &mut e)
    }

    /// The clock sends are stamped with (see [`Clock`]).
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Names the configs of the revision being served (and those kept for rollbacks). A
    /// reported effective config equal to one of them shares its bytes: after a server restart
    /// every agent reports first, and each report's copy (some KiB per agent, 100,000 agents at
    /// once) took the server past 1 GiB.
    pub fn set_served(&self, configs: impl IntoIterator<Item = Arc<RemoteConfig>>) {
        let configs: Arc<[Arc<RemoteConfig>]> = configs.into_iter().collect();
        *self.served.write().unwrap_or_else(|p| p.into_inner()) = configs;
    }

    /// The configs of the served revision.
    pub(crate) fn served(&self) -> Arc<[Arc<RemoteConfig>]> {
        self.served
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets what connection-settings offers are built from (the OpAMP router does, from its
    /// settings).
    pub fn set_offer_settings(&self, settings: OfferSettings) {
        *self
            .offer_settings
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
    }

    /// Items each agent's pipeline components handle, from their own metrics.
    pub fn throughput(&self) -> &crate::otlp::throughput::Throughput {
        &self.throughput
    }

    /// What connection-settings offers are built from.
    pub fn offer_settings(&self) -> Arc<OfferSettings> {
        self.offer_settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets where a known agent's own telemetry goes (the reconciler decides, from its
    /// configuration). A changed offer goes out at once on a live WebSocket (best effort: a
    /// full queue leaves it for the next reply), else in the reply to its next message. True
    /// if an offer went out.
    pub fn set_own_telemetry(&self, uid: &Uid, own: Arc<OwnTelemetry>) -> bool {
        let Some(entry) = self.get(uid) else {
            return false;
        };
        let mut e = lock(&entry);
        e.offers.set_own(own) && self.push_due_offer(uid, &mut e)
    }

    /// The connection-settings offer due to a connected agent, on its WebSocket at once (best
    /// effort: a full queue or a polling agent leaves it for the reply to its next message).
    /// True if one went out.
    fn push_due_offer(&self, uid: &Uid, e: &mut AgentEntry) -> bool {
        if !e.connected {
            return false;
        }
        let caps = e.capabilities;
        let mut offers = e.offers.clone();
        let Some(offer) = offers.take_due(caps, true, &self.offer_settings(), self.clock.now_ms())
        else {
            return false;
        };
        let out = Outgoing::push(
            uid,
            proto::ServerToAgent {
                connection_settings: Some(offer),
                ..Default::default()
            },
        );
        let pushed = e.push_now(&out, "connection-settings offer").is_some();
        if pushed {
            e.offers = offers;
        }
        pushed
    }

    /// Subscribes to fleet events (see the module docs about lag).
    pub fn subscribe(&self) -> broadcast::Receiver<FleetEvent> {
        self.events.subscribe()
    }

    /// Sends `ev` to the subscribers; returns its number (see [`Fleet::events_seen_by`]).
    pub(crate) fn emit(&self, ev: FleetEvent) -> u64 {
        self.plans.send(&self.events, ev)
    }

    /// How many events were sent before the first one `rx` has still to read: a planner's
    /// count of the events it has taken in starts there.
    pub fn events_seen_by(&self, rx: &broadcast::Receiver<FleetEvent>) -> u64 {
        self.plans.seen_by(rx)
    }

    /// A new revision is served: poll replies wait for the plan on it (`plan_wait`).
    pub fn expect_plan(&self) {
        self.plans.expect_plan();
    }

    /// What a plan starting now reaches, its planner having taken in `events_seen` events.
    pub fn plan_mark(&self, events_seen: u64) -> PlanMark {
        self.plans.mark(events_seen)
    }

    /// A plan reached `mark`: the poll replies it covers stop waiting. The first call makes
    /// replies wait at all (a registry without a planner never holds one).
    pub fn planned(&self, mark: PlanMark) {
        self.plans.planned(mark);
    }

    /// What a reply to a message that sent event `own` (0: none) would wait for, if a plan may
    /// still decide something for it.
    pub(crate) fn plan_ticket(&self, own: u64) -> Option<PlanMark> {
        let ticket = self.plans.mark(own);
        self.plans.pending(&ticket).then_some(ticket)
    }

    /// Waits until the plans cover `ticket`, at most `limit`; says whether they did.
    pub(crate) async fn wait_for_plan(&self, ticket: PlanMark, limit: Duration) -> bool {
        self.plans.wait(ticket, limit).await
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
                let mut entry = AgentEntry::new(uid, transport);
                if self.offers_read_elsewhere.load(Ordering::Relaxed) {
                    entry.offers.read_history();
                } else if let Some(earlier) = self
                    .remembered_offers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&uid)
                {
                    entry.offers.resume(Some(earlier));
                }
                Arc::new(Mutex::new(entry))
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
        let mut v: Vec<_> = self
            .entries()
            .iter()
            .map(|e| lock(e).snapshot_with(Detail::Full))
            .collect();
        v.sort_by_key(|a| a.uid);
        v
    }

    /// Every known agent's UID, sorted: a list that filters and orders by the plan's view alone
    /// reads only the page it shows ([`Fleet::brief`]), not 100,000 snapshots.
    pub fn uids(&self) -> Vec<Uid> {
        let mut v: Vec<Uid> = self
            .agents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        v.sort_unstable();
        v
    }

    /// Snapshots of every known agent without their effective configs, sorted by UID: what a
    /// list shows (copying every effective config cost most of a 100k-agent list).
    pub fn briefs(&self) -> Vec<AgentSnapshot> {
        let mut v: Vec<_> = self
            .entries()
            .iter()
            .map(|e| lock(e).snapshot_with(Detail::Brief))
            .collect();
        v.sort_by_key(|a| a.uid);
        v
    }

    /// Snapshot of one agent.
    pub fn agent(&self, uid: &Uid) -> Option<AgentSnapshot> {
        self.get(uid).map(|e| lock(&e).snapshot_with(Detail::Full))
    }

    /// One agent without its effective config, consuming nothing (what the store records).
    pub fn brief(&self, uid: &Uid) -> Option<AgentSnapshot> {
        self.get(uid).map(|e| lock(&e).snapshot_with(Detail::Brief))
    }

    /// One agent as the planner reads it, consuming nothing: what the store records of an
    /// agent the plan did not read (neither the effective config nor the offers are copied).
    pub fn peek(&self, uid: &Uid) -> Option<AgentSnapshot> {
        self.get(uid)
            .map(|e| lock(&e).snapshot_with(Detail::Planner))
    }

    /// What the planner reads of one agent: its snapshot without the effective config (which
    /// planning never reads; copying it was a large part of a plan), with the remote config
    /// statuses reported since the last `observe` of it, which this read consumes.
    pub fn observe(&self, uid: &Uid) -> Option<AgentSnapshot> {
        self.get(uid).map(|entry| lock(&entry).observed())
    }

    /// [`Fleet::observe`] for every known agent, sorted by UID (after missed events).
    pub fn observe_all(&self) -> Vec<AgentSnapshot> {
        let mut v: Vec<_> = self
            .entries()
            .iter()
            .map(|entry| lock(entry).observed())
            .collect();
        v.sort_by_key(|a| a.uid);
        v
    }

    /// Hands `config` over for delivery to a known agent: the plan decided it goes out now.
    ///
    /// A connected WebSocket agent gets it at once through its bounded outbound queue (never
    /// blocking); if the queue is full, or the agent polls over HTTP, it waits and goes out in
    /// the reply to the agent's next message ([`FleetEvent::ConfigSent`] then). `None`
    /// withdraws a config handed over earlier that has not gone out. The registry does not
    /// decide whether a config should go out (the plan does); it only refuses one that went
    /// stale since ([`Delivery::Dropped`]).
    pub fn deliver(&self, uid: &Uid, config: Option<Arc<RemoteConfig>>) -> Delivery {
        let Some(entry) = self.get(uid) else {
            return Delivery::Unknown;
        };
        let mut e = lock(&entry);
        let Some(config) = config else {
            e.pending = None;
            return Delivery::Pending;
        };
        if !e.still_wanted(&config) {
            e.pending = None;
            return Delivery::Dropped;
        }
        if let Some(effective) = e.effective_config.as_mut() {
            share_bodies(effective, &config);
        }
        if e.awaiting_report() {
            // What it runs is one round trip away: the plan decides again with its report.
            e.pending = None;
            return Delivery::Dropped;
        }
        let out = Outgoing {
            remote_config: Some(Arc::clone(&config)),
            ..Outgoing::push(uid, proto::ServerToAgent::default())
        };
        if let Some(conn) = e.push_now(&out, "config push") {
            let sent = Sent {
                hash: *config.hash(),
                conn,
                at: self.clock.now(),
            };
            e.pending = None;
            e.last_sent = Some(sent);
            return Delivery::Queued(sent);
        }
        e.pending = Some(config);
        Delivery::Pending
    }

    /// Hands a package offer over for delivery, as [`Fleet::deliver`] does a config: queued on
    /// the agent's WebSocket at once, else in the reply to its next message
    /// ([`FleetEvent::PackagesSent`] then). Dropped when the agent does not accept packages.
    pub fn offer(&self, uid: &Uid, offer: Arc<PackageOffer>) -> Delivery {
        let Some(entry) = self.get(uid) else {
            return Delivery::Unknown;
        };
        let mut e = lock(&entry);
        if !e.accepts_packages() {
            e.pending_offer = None;
            return Delivery::Dropped;
        }
        let out = Outgoing {
            packages: Some(Arc::clone(&offer)),
            ..Outgoing::push(uid, proto::ServerToAgent::default())
        };
        if let Some(conn) = e.push_now(&out, "package offer") {
            let sent = Sent {
                hash: *offer.all_hash(),
                conn,
                at: self.clock.now(),
            };
            e.pending_offer = None;
            e.last_offer = Some(sent);
            return Delivery::Queued(sent);
        }
        e.pending_offer = Some(offer);
        Delivery::Pending
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

//! What the running server knows, shared between the one writer (the reconciler task) and the
//! many readers (the status API, metrics). Readers never block the writer: the big views are
//! swapped whole (`ArcSwap`), the small ones sit behind short `std::sync::Mutex` sections that
//! are never held across `.await`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use gitamp_core::{ConfigHash, Diagnostic, Diagnostics, Revision, Severity};
use gitamp_opamp::{Fleet, RemoteConfig, Uid};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use super::events::{self, Event};
use super::reconciler::Command as ReconcilerCommand;
use crate::store::{StoreOp, StoreWriter};
use crate::telemetry;

/// How many revisions and events the API keeps in memory (the store keeps its own history).
/// Events about the whole fleet and events about agents are bounded apart (see [`EventLog`]).
pub const REVISION_HISTORY: usize = 200;
pub const EVENT_HISTORY: usize = 2000;

/// Shared server state. Cheap to clone behind an `Arc`.
pub struct AppState {
    pub fleet: Arc<Fleet>,
    /// The accepted revision being served (None until the first good one). Set through
    /// [`AppState::serve`], which wakes those waiting for a change ([`AppState::serving_changed`]).
    pub serving: ArcSwapOption<Serving>,
    serving_changed: Notify,
    /// The latest plan over the whole fleet, recomputed by the reconciler.
    pub view: ArcSwap<FleetView>,
    pub sync: Mutex<SyncView>,
    pub history: Mutex<History>,
    pub webhooks: WebhookConfig,
    /// Wakes the Git poller early (webhooks, `POST /api/v1/sync`); `None` when the source does
    /// not poll (a watched folder, the embedded example).
    pub poller: Option<Arc<Notify>>,
    /// Where the API sends operators' requests to the reconciler (the one writer); `None`
    /// without a running reconciler.
    pub reconciler: Option<mpsc::Sender<ReconcilerCommand>>,
    /// When set, every status API route but /healthz and /readyz needs `Authorization: Bearer`.
    pub api_token: Option<String>,
    pub metrics: PrometheusHandle,
    pub started_at: SystemTime,
    /// This replica's membership when several share a PostgreSQL store (set once joined).
    pub cluster: ArcSwapOption<crate::server::cluster::Cluster>,
    /// Where [`AppState::emit`] queues events for the store; empty keeps them in memory only.
    /// Swappable so that shutdown can let go of it: the writer task ends only once every
    /// handle is dropped, and API handlers keep this state alive past that point.
    event_store: ArcSwapOption<StoreWriter>,
    /// Where [`AppState::emit`] offers events for notifications (`--notifications`).
    notifier: ArcSwapOption<super::notify::Notifier>,
}

/// An accepted revision with everything derived from it once (never per agent).
pub struct Serving {
    pub revision: Arc<Revision>,
    pub accepted_at: SystemTime,
    /// Per configuration, the remote config encoded once and shared by every agent.
    pub desired_configs: BTreeMap<String, Arc<RemoteConfig>>,
    /// The revision's sensitive values, for masking what agents send back (their error texts,
    /// effective configs) before it is logged or served: finding them means parsing every
    /// rendered configuration, so it is done here, once.
    pub secrets: Arc<Vec<String>>,
}

impl Serving {
    /// Serve `revision` from now on, with its encoded remote configs.
    pub fn new(
        revision: Arc<Revision>,
        desired_configs: BTreeMap<String, Arc<RemoteConfig>>,
    ) -> Serving {
        Serving {
            secrets: Arc::new(gitamp_core::render::mask::secrets_of(&revision)),
            revision,
            accepted_at: SystemTime::now(),
            desired_configs,
        }
    }
}

/// What the reconciler decided for one agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentView {
    /// Sync status name (`synced`, `pending`, `applying`, `failed`, `drifted`, `unmanaged`,
    /// `conflict`, `incompatible`, `disconnected`).
    pub status: String,
    /// The configuration selecting it, if exactly one does.
    pub configuration: Option<String>,
    pub desired_hash: Option<ConfigHash>,
    /// Why, for statuses that need a reason (conflict: the configurations; failed: the error).
    pub reason: Option<String>,
    /// The last hash it reported APPLIED (a rollback target).
    pub last_applied: Option<ConfigHash>,
    /// The hash last sent to it and when (ms since the Unix epoch).
    pub sent: Option<(ConfigHash, u64)>,
    /// Hashes it reported FAILED.
    pub failed_hashes: Vec<ConfigHash>,
    /// The agent version it reports running (its pinned package's, else the first reported).
    pub installed_version: Option<String>,
    /// Its upgrade, when its configuration pins an agent version.
    pub upgrade: Option<UpgradeView>,
}

/// One agent's upgrade to its configuration's pinned version (`plan::upgrade`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpgradeView {
    /// `upgraded`, `pending`, `upgrading`, `upgrade-failed`, `rolled-back`, `incompatible`,
    /// `no-package` or `disconnected`.
    pub status: &'static str,
    /// The version its configuration pins.
    pub desired_version: String,
    /// Why (the agent's install error, what it waits for).
    pub reason: Option<String>,
}

/// Every agent's [`AgentView`], split into shards that are shared between publications: a
/// plan that re-planned a few agents copies the few shards they live in, not the fleet.
#[derive(Debug, Clone)]
pub struct AgentViews {
    shards: Vec<Arc<HashMap<Uid, AgentView>>>,
    len: usize,
}

impl Default for AgentViews {
    fn default() -> Self {
        AgentViews {
            shards: (0..AGENT_VIEW_SHARDS)
                .map(|_| Arc::new(HashMap::new()))
                .collect(),
            len: 0,
        }
    }
}

/// Shards of [`AgentViews`]; at 100k agents one shard holds ~400.
const AGENT_VIEW_SHARDS: usize = 256;

impl AgentViews {
    fn shard(uid: &Uid) -> usize {
        // UUIDv4 and v7 both end in random bits.
        usize::from(uid[15])
    }

    pub fn get(&self, uid: &Uid) -> Option<&AgentView> {
        self.shards[Self::shard(uid)].get(uid)
    }

    /// Insert or replace; copies the shard only if a published view still shares it.
    pub fn insert(&mut self, uid: Uid, view: AgentView) {
        let shard = Arc::make_mut(&mut self.shards[Self::shard(&uid)]);
        if shard.insert(uid, view).is_none() {
            self.len += 1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Uid, &AgentView)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One configuration's agents and rollout.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConfigurationView {
    pub hash: Option<ConfigHash>,
    pub matched_agents: usize,
    /// Agents per sync status.
    pub counts: BTreeMap<String, usize>,
    /// Rollout progress as the planner reports it.
    pub rollout: Option<serde_json::Value>,
    /// Its rollout is halted (too many failures): nothing more goes out until a new revision
    /// supersedes it or an operator resumes it.
    pub rollout_halted: bool,
    /// Progress of the upgrade to its pinned agent version, as the planner reports it.
    pub upgrade: Option<serde_json::Value>,
}

/// The whole fleet as the reconciler last planned it.
#[derive(Debug, Clone, Default)]
pub struct FleetView {
    pub agents: AgentViews,
    pub configurations: BTreeMap<String, ConfigurationView>,
    /// Agents per sync status, over the fleet.
    pub counts: BTreeMap<String, usize>,
    /// Connected agents as last read by the reconciler.
    pub connected: usize,
    pub computed_at: Option<SystemTime>,
}

impl FleetView {
    /// The configurations whose rollout is halted, by name.
    pub fn halted_rollouts(&self) -> Vec<&str> {
        self.configurations
            .iter()
            .filter(|(_, v)| v.rollout_halted)
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

/// The source side: where the repository comes from and how fetching goes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncView {
    /// The remote URL (credentials removed) or folder path, or `embedded:example-repo`.
    pub source: String,
    /// Tracked branch or tag.
    pub reference: Option<String>,
    pub sub_path: Option<String>,
    pub current_revision: Option<String>,
    /// When the last attempt to read the source finished, successful or not.
    pub last_fetch: Option<SystemTime>,
    /// When the source was last read without error (changed or not).
    pub last_success: Option<SystemTime>,
    pub last_fetch_duration_ms: Option<u64>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub next_retry: Option<SystemTime>,
    pub last_rejected: Option<RevisionView>,
}

/// Whether the repository's tip is rejected: a revision was rejected after the served one was
/// accepted (or nothing is served), so agents do not get what the repository says. The one rule
/// behind `gitamp status`'s exit 1 and the `gitamp_source_tip_rejected` gauge; an older
/// rejection (a newer revision was accepted since) is history, not the news.
pub fn tip_rejected<T: Ord>(last_rejected_at: Option<T>, served_accepted_at: Option<T>) -> bool {
    match (last_rejected_at, served_accepted_at) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(rejected), Some(accepted)) => rejected > accepted,
    }
}

/// One revision the server saw.
#[derive(Debug, Clone, Serialize)]
pub struct RevisionView {
    pub revision: String,
    pub at: SystemTime,
    pub accepted: bool,
    pub errors: usize,
    pub warnings: usize,
    pub diagnostics: Vec<DiagnosticView>,
}

impl RevisionView {
    /// A revision seen now, with its diagnostics (a rejection's errors, or an accepted
    /// revision's warnings).
    pub fn seen(revision: &str, accepted: bool, diagnostics: &Diagnostics) -> RevisionView {
        RevisionView {
            revision: revision.to_string(),
            at: SystemTime::now(),
            accepted,
            errors: diagnostics.errors().count(),
            warnings: diagnostics.warnings().count(),
            diagnostics: diagnostics.iter().map(DiagnosticView::from).collect(),
        }
    }
}

/// One diagnostic as the history keeps it: owned text, so that a revision a previous run stored
/// reads back as it was, codes this version does not know included. Its JSON is the core
/// [`Diagnostic`]'s, which is what the store's `revisions.diagnostics` column holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagnosticView {
    pub code: String,
    pub name: String,
    /// `error` or `warning`.
    pub severity: String,
    pub location: LocationView,
    pub message: String,
}

/// Where a [`DiagnosticView`] was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationView {
    pub file: String,
    pub line: u32,
    pub column: u32,
}

impl From<&Diagnostic> for DiagnosticView {
    fn from(d: &Diagnostic) -> DiagnosticView {
        DiagnosticView {
            code: d.code.to_string(),
            name: d.name.to_string(),
            severity: match d.severity {
                Severity::Error => "error".into(),
                Severity::Warning => "warning".into(),
            },
            location: LocationView {
                file: d.location.file.to_string(),
                line: d.location.line,
                column: d.location.column,
            },
            message: d.message.clone(),
        }
    }
}

/// Something that happened, for people (`/api/v1/agents/{id}` shows an agent's recent ones).
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub at: SystemTime,
    /// Agent instance UID as UUID text, for agent events.
    pub agent: Option<String>,
    /// Short machine-readable kind: one of [`EventKind`](super::events::EventKind)'s names
    /// (`revision-accepted`, `pushed`, `connected`, ...). A string, not the enum: records read
    /// back from the store may carry a kind a later version no longer emits.
    pub kind: String,
    pub message: String,
}

/// The events kept in memory: those about the whole fleet (a revision, a rollout, a fetch) and
/// those about one agent, each the newest [`EVENT_HISTORY`]. One bound for both let a rollout's
/// per-agent events (two per agent) push every revision and rollout event out within seconds
/// at a few thousand agents, so `gitamp events --kind rollout-halted` found nothing.
#[derive(Debug, Default)]
pub struct EventLog {
    fleet: VecDeque<(u64, EventView)>,
    agents: VecDeque<(u64, EventView)>,
    /// Numbers events as they come, to merge the two newest first.
    next: u64,
}

impl EventLog {
    pub fn push(&mut self, e: EventView) {
        let class = match crate::store::EventClass::of(&e.agent) {
            crate::store::EventClass::Agent => &mut self.agents,
            crate::store::EventClass::Fleet => &mut self.fleet,
        };
        if class.len() == EVENT_HISTORY {
            class.pop_front();
        }
        class.push_back((self.next, e));
        self.next += 1;
    }

    /// Events kept (both kinds).
    pub fn len(&self) -> usize {
        self.fleet.len() + self.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The event recorded last.
    pub fn newest(&self) -> Option<&EventView> {
        self.newest_first().next()
    }

    /// Every event kept, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &EventView> + '_ {
        let mut fleet = self.fleet.iter().rev().peekable();
        let mut agents = self.agents.iter().rev().peekable();
        std::iter::from_fn(move || {
            let take_fleet = match (fleet.peek(), agents.peek()) {
                (Some((f, _)), Some((a, _))) => f > a,
                (Some(_), None) => true,
                (None, _) => false,
            };
            let next = if take_fleet {
                fleet.next()
            } else {
                agents.next()
            };
            next.map(|(_, e)| e)
        })
    }

    /// One agent's events (UUID text), newest first.
    pub fn of_agent<'a>(&'a self, agent: &'a str) -> impl Iterator<Item = &'a EventView> + 'a {
        self.agents
            .iter()
            .rev()
            .map(|(_, e)| e)
            .filter(move |e| e.agent.as_deref() == Some(agent))
    }
}

/// Bounded in-memory history for the API.
#[derive(Debug, Default)]
pub struct History {
    pub revisions: VecDeque<RevisionView>,
    pub events: EventLog,
    /// Convergence of accepted revisions, by revision (at most [`REVISION_HISTORY`]).
    pub convergence: HashMap<String, super::convergence::Convergence>,
    /// The commits (subject, author) of the revisions read since start, newest last (at most
    /// [`REVISION_HISTORY`]). Not stored: the source reads the served one again after a restart.
    pub commits: VecDeque<(String, crate::source::CommitInfo)>,
}

impl History {
    pub fn record_revision(&mut self, r: RevisionView) {
        if self.revisions.len() == REVISION_HISTORY {
            self.revisions.pop_front();
        }
        self.revisions.push_back(r);
    }
    /// The latest figures of a revision; the oldest revision's are dropped past the bound.
    pub fn record_convergence(&mut self, c: super::convergence::Convergence) {
        self.convergence.insert(c.revision.clone(), c);
        if self.convergence.len() > REVISION_HISTORY
            && let Some(oldest) = self
                .convergence
                .values()
                .min_by_key(|c| c.accepted_at)
                .map(|c| c.revision.clone())
        {
            self.convergence.remove(&oldest);
        }
    }

    /// Remember a revision's commit (the newest sighting wins).
    pub fn record_commit(&mut self, revision: &str, commit: crate::source::CommitInfo) {
        self.commits.retain(|(r, _)| r != revision);
        if self.commits.len() == REVISION_HISTORY {
            self.commits.pop_front();
        }
        self.commits.push_back((revision.to_string(), commit));
    }

    /// The commit of `revision`, if the source read it since start.
    pub fn commit_of(&self, revision: &str) -> Option<&crate::source::CommitInfo> {
        self.commits
            .iter()
            .rev()
            .find(|(r, _)| r == revision)
            .map(|(_, c)| c)
    }

    pub fn record_event(&mut self, e: EventView) {
        self.events.push(e);
    }
}

/// Webhook secrets and the ref they may wake the poller for.
#[derive(Default)]
pub struct WebhookConfig {
    /// GitHub: HMAC-SHA256 secret for `X-Hub-Signature-256`.
    pub github_secret: Option<Vec<u8>>,
    /// GitLab: the `X-Gitlab-Token` value.
    pub gitlab_token: Option<Vec<u8>>,
    /// Generic: the `Authorization: Bearer` token.
    pub generic_token: Option<Vec<u8>>,
    /// The tracked ref (`main`, `refs/heads/main`, `v1.2`): pushes to other refs are ignored.
    pub tracked_ref: String,
}

impl AppState {
    pub fn new(fleet: Arc<Fleet>, metrics: PrometheusHandle) -> AppState {
        AppState {
            fleet,
            serving: ArcSwapOption::empty(),
            serving_changed: Notify::new(),
            view: ArcSwap::from_pointee(FleetView::default()),
            sync: Mutex::new(SyncView::default()),
            history: Mutex::new(History::default()),
            webhooks: WebhookConfig::default(),
            poller: None,
            reconciler: None,
            api_token: None,
            metrics,
            started_at: SystemTime::now(),
            cluster: ArcSwapOption::empty(),
            event_store: ArcSwapOption::empty(),
            notifier: ArcSwapOption::empty(),
        }
    }

    /// Serve `serving` from now on, and say so to whoever waits ([`AppState::serving_changed`]).
    pub fn serve(&self, serving: Serving) {
        self.serving.store(Some(Arc::new(serving)));
        self.serving_changed.notify_waiters();
    }

    /// Returns once [`AppState::serve`] was called after this future was first polled (check
    /// what is served after creating it, then await it: no change is missed in between).
    pub fn serving_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.serving_changed.notified()
    }

    /// Record an event: log it, count it, keep it in the bounded history and queue it for the
    /// store. Never waits: the store write is dropped (the event stays in memory) when the
    /// writer's queue is short of room, since agents' records matter more than their events.
    pub fn emit(&self, event: Event) {
        let record = event.record();
        event.log(&record);
        telemetry::event(event.kind().as_str());
        // Replicas: an event about the whole fleet (a revision, a rollout) happens on every
        // replica; the leader alone stores and notifies it, so people hear of it once.
        let shared = !event.kind().fleet_wide()
            || self.cluster.load().as_ref().is_none_or(|c| c.is_leader());
        if !shared {
            if let Ok(mut h) = self.history.lock() {
                h.record_event(record);
            }
            return;
        }
        if let Some(store) = &*self.event_store.load() {
            let queued = store.has_headroom()
                && store
                    .try_send(StoreOp::AppendEvent(events::to_store(&record)))
                    .is_ok();
            if !queued {
                tracing::debug!(kind = %record.kind, "Event not stored: the store queue is full.");
            }
        }
        if let Some(notifier) = &*self.notifier.load() {
            notifier.offer(&record);
        }
        // Poisoning is ignored: the history is best effort.
        if let Ok(mut h) = self.history.lock() {
            h.record_event(record);
        }
    }

    /// Offer events to `notifier` from now on.
    pub fn notify_with(&self, notifier: Arc<super::notify::Notifier>) {
        self.notifier.store(Some(notifier));
    }

    /// Queue events for `store` from now on (`None`: memory only, as at shutdown).
    pub fn store_events_in(&self, store: Option<StoreWriter>) {
        self.event_store.store(store.map(Arc::new));
    }

    /// Put revisions a previous run stored back into the history (oldest first), before any
    /// new one: `/api/v1/revisions` then survives a restart.
    pub fn restore_revisions(&self, records: Vec<RevisionView>) {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        for r in records {
            h.record_revision(r);
        }
    }

    /// Put events a previous run stored back into the history (oldest first), before any new
    /// one: `/api/v1/events` and an agent's events then survive a restart.
    pub fn restore_events(&self, records: Vec<EventView>) {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        for r in records {
            h.record_event(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::{EVENT_HISTORY, EventLog, EventView, tip_rejected};

    fn event(agent: Option<&str>, message: String) -> EventView {
        EventView {
            at: SystemTime::UNIX_EPOCH,
            agent: agent.map(str::to_string),
            kind: if agent.is_some() {
                "pushed"
            } else {
                "rollout-halted"
            }
            .to_string(),
            message,
        }
    }

    #[test]
    fn agents_events_never_push_the_fleets_out_and_both_come_back_in_order() {
        let mut log = EventLog::default();
        log.push(event(None, "halted".into()));
        log.push(event(Some("a"), "a0".into()));
        log.push(event(None, "completed".into()));
        for i in 0..EVENT_HISTORY + 5 {
            log.push(event(
                Some(if i % 2 == 0 { "a" } else { "b" }),
                format!("x{i}"),
            ));
        }
        assert_eq!(log.len(), EVENT_HISTORY + 2);
        let messages: Vec<&str> = log.newest_first().map(|e| e.message.as_str()).collect();
        assert_eq!(messages.len(), EVENT_HISTORY + 2);
        assert_eq!(messages[0], format!("x{}", EVENT_HISTORY + 4));
        assert_eq!(
            &messages[EVENT_HISTORY..],
            ["completed", "halted"],
            "the fleet's events outlive a flood of agents' events, oldest last"
        );
        assert!(!messages.contains(&"a0"), "the oldest agent event went");
        assert_eq!(log.newest().map(|e| e.message.as_str()), Some(messages[0]));
        let of_b: Vec<&str> = log.of_agent("b").map(|e| e.message.as_str()).collect();
        assert_eq!(of_b.len(), EVENT_HISTORY / 2);
        assert_eq!(of_b[0], format!("x{}", EVENT_HISTORY + 3));
    }

    #[test]
    fn the_tip_is_rejected_when_a_rejection_is_newer_than_the_served_revision() {
        let early = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        let late = early + Duration::from_millis(1);
        assert!(!tip_rejected(None, Some(early)), "nothing rejected");
        assert!(!tip_rejected::<SystemTime>(None, None), "nothing seen yet");
        assert!(tip_rejected(Some(early), None), "nothing served");
        assert!(tip_rejected(Some(late), Some(early)));
        assert!(!tip_rejected(Some(early), Some(late)), "an older rejection");
    }
}

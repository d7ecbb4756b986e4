//! The reconciler: the one writer of the server's state (kube-runtime's shape).
//!
//! It owns a single task that receives two kinds of input and turns both into one action:
//!
//! - **revisions** from the source ([`SyncEvent`]): each new snapshot goes through the pure core
//!   (`gitamp_core::compile`) off the async threads; an accepted revision replaces what is
//!   served, a rejected one is recorded with its diagnostics and changes nothing for agents;
//! - **fleet events** (an agent connected, reported, disconnected): they only mark the fleet
//!   dirty.
//!
//! Then it plans the whole fleet with `gitamp_core::plan::plan` (a pure function of desired and
//! observed state), hands the configs the plan says to push to the fleet registry (which
//! delivers them at once over WebSocket, or in the next HTTP poll response), steps rollouts,
//! publishes the [`FleetView`] for readers, and persists what changed. Everything derived from a
//! revision (selection data, encoded remote configs) is built once per revision, never per
//! agent.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gitamp_core::plan::{
    self, Action, Desired, ObservedAgent, Planner, ReportedStatus, Rollout, RolloutPhase,
    SyncStatus, Timing,
};
use gitamp_core::{ConfigHash, Revision, Snapshot};
use gitamp_opamp::fleet::{
    AgentSnapshot, DesiredConfig, Fleet, FleetEvent, RemoteState, Uid, uid_text,
};
use gitamp_opamp::proto::AgentCapabilities;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::events::{Event, Masked};
use super::state::{
    AgentView, AgentViews, AppState, ConfigurationView, FleetView, RevisionRecord, Serving,
};
use crate::source::SyncEvent;
use crate::store::{
    self, AgentRecord, AgentResume, ConfigEntry, ConfigRecord, RolloutRecord, StoreOp, StoreWriter,
};
use crate::telemetry;

/// How long fleet events are gathered before one plan runs: a reconnect storm of thousands of
/// agents costs a few plans, not thousands.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Rollouts are stepped and resends considered at least this often, even with no events.
const TICK: Duration = Duration::from_secs(1);
/// The whole fleet is re-read and re-planned this often even if no event was missed: the clock
/// moves (an unacknowledged push is resent after `Timing::resend_after_ms`) and a config can go
/// out in a reply without a fleet event (kube-runtime's periodic resync).
const RESYNC: Duration = Duration::from_secs(30);

/// What the reconciler remembers of an agent beyond what the fleet registry holds, persisted so
/// that a restarted server decides exactly as before (no redundant push, no re-push of a failed
/// hash).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentMemory {
    /// Hashes the agent reported FAILED for.
    pub failed: BTreeSet<ConfigHash>,
    /// The desired hash it was last seen Synced on (for Drifted).
    pub synced: Option<ConfigHash>,
    /// The hash last handed to it and when (ms since the epoch).
    pub sent: Option<(ConfigHash, u64)>,
    /// Labels as the store last recorded them: used until the agent describes itself again
    /// (after a restart), then left empty (the planner holds the live ones).
    pub labels: BTreeMap<String, String>,
    /// The last hash it reported APPLIED: where a rollback takes it.
    pub applied: Option<ConfigHash>,
    /// The error of its last FAILED report.
    pub last_error: Option<String>,
}

/// What was last persisted of a rollout: everything but its member list, so a plan decides
/// whether to write it in O(1) instead of comparing (and cloning) thousands of agent IDs.
#[derive(Debug, Clone, PartialEq)]
struct RolloutStamp {
    target: ConfigHash,
    policy: gitamp_core::catalog::model::RolloutPolicy,
    members: usize,
    admitted: usize,
    batch: usize,
    synced: usize,
    failed: usize,
    pending: usize,
    phase: RolloutPhase,
}

impl RolloutStamp {
    fn of(r: &Rollout) -> RolloutStamp {
        RolloutStamp {
            target: r.target,
            policy: r.policy.clone(),
            members: r.agents.len(),
            admitted: r.admitted,
            batch: r.batch,
            synced: r.synced,
            failed: r.failed,
            pending: r.pending,
            phase: r.phase.clone(),
        }
    }
}

pub struct Reconciler {
    state: Arc<AppState>,
    fleet: Arc<Fleet>,
    store: StoreWriter,
    /// The plan, kept current incrementally; `None` until a revision is served.
    planner: Option<Planner<Uid>>,
    /// Rollouts loaded from the store, handed to the planner with the first revision.
    resumed_rollouts: BTreeMap<String, Rollout>,
    /// Agents named by fleet events since the last plan.
    dirty: HashSet<Uid>,
    /// Agents whose description or health the store has not seen yet: only their records
    /// carry those columns (serializing them for every sent or applied hash was a fifth of a
    /// rollout's plan).
    described: HashSet<Uid>,
    /// Events were missed: every agent re-read counts as described.
    lagged: bool,
    /// Re-read every agent at the next plan (missed events, new revision, resync).
    refresh_all: bool,
    last_resync: Instant,
    /// The per-agent view; publishing it shares its shards.
    view_agents: AgentViews,
    memory: HashMap<Uid, AgentMemory>,
    /// When each outstanding push was handed over, for the push-to-applied histogram.
    pushed_at: HashMap<Uid, (ConfigHash, Instant)>,
    /// Last status per agent, to log transitions as events.
    last_status: HashMap<Uid, SyncStatus>,
    /// Rollout state as last persisted, to write only what changed.
    persisted_rollouts: BTreeMap<String, RolloutStamp>,
    /// Duration of the last plan, to keep plans from running back to back under load.
    last_plan_cost: Duration,
    /// Rendered configs by hash: the served ones and earlier ones some agent last applied,
    /// which a rollback sends (mirrored in the store's `configs` table).
    retained: HashMap<ConfigHash, Arc<DesiredConfig>>,
    /// The last plan made a decision a restart must not forget (a revision accepted, a rollout
    /// started, halted or finished, an agent's failure): the writer is asked to commit at once
    /// instead of within its delay, so a `kill -9` soon after does not resume from before it
    /// (re-sending a failed hash, re-opening a halted rollout).
    durable_now: bool,
    /// `--otelcol`: the collector that must accept a revision before it is served.
    otelcol: Option<Arc<crate::otelcol::Otelcol>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn system_time_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Reconciler {
    /// A reconciler that resumes from what the store remembered (agent memory, rollouts).
    pub fn new(
        state: Arc<AppState>,
        store: StoreWriter,
        memory: HashMap<Uid, AgentMemory>,
        rollouts: BTreeMap<String, Rollout>,
    ) -> Reconciler {
        Reconciler {
            fleet: state.fleet.clone(),
            state,
            store,
            planner: None,
            persisted_rollouts: rollouts
                .iter()
                .map(|(k, r)| (k.clone(), RolloutStamp::of(r)))
                .collect(),
            resumed_rollouts: rollouts,
            dirty: HashSet::new(),
            described: HashSet::new(),
            lagged: false,
            refresh_all: true,
            last_resync: Instant::now(),
            view_agents: AgentViews::default(),
            memory,
            pushed_at: HashMap::new(),
            last_status: HashMap::new(),
            last_plan_cost: Duration::ZERO,
            retained: HashMap::new(),
            durable_now: false,
            otelcol: None,
        }
    }

    /// Have `otelcol` check every new revision after it compiles; one it refuses is rejected.
    pub fn set_otelcol(&mut self, otelcol: crate::otelcol::Otelcol) {
        self.otelcol = Some(Arc::new(otelcol));
    }

    /// Resume the rollback targets the store kept. A record whose bytes do not hash to its
    /// name (a damaged row) is left out: sending it would report a hash it does not have.
    pub fn with_retained_configs(mut self, records: &[ConfigRecord]) -> Reconciler {
        for r in records {
            match config_from_record(r) {
                Some(config) => {
                    self.retained.insert(ConfigHash(*config.hash()), config);
                }
                None => warn!(hash = %r.hash, "Stored config does not match its hash; not kept."),
            }
        }
        self
    }

    /// Run until `cancel` fires or the source's channel closes.
    pub async fn run(
        mut self,
        mut sync_rx: mpsc::Receiver<SyncEvent>,
        mut fleet_rx: broadcast::Receiver<FleetEvent>,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut source_open = true;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                event = sync_rx.recv(), if source_open => match event {
                    Some(event) => {
                        if self.on_sync(event).await {
                            self.reconcile_off_worker();
                        }
                    }
                    None => source_open = false,
                },
                event = fleet_rx.recv() => match event {
                    Ok(event) => {
                        self.note_event(&event);
                        // Gather the rest of a burst, then plan once. A new revision ends the
                        // wait: at 100,000 agents the pause is two plans long (~2 s), and a
                        // rollout must not wait behind agents' routine reports.
                        let pause = DEBOUNCE.max(self.last_plan_cost * 2);
                        let deadline = tokio::time::sleep(pause);
                        tokio::pin!(deadline);
                        loop {
                            tokio::select! {
                                _ = &mut deadline => break,
                                _ = cancel.cancelled() => break,
                                event = sync_rx.recv(), if source_open => match event {
                                    Some(event) => {
                                        if self.on_sync(event).await {
                                            break;
                                        }
                                    }
                                    None => source_open = false,
                                },
                                more = fleet_rx.recv() => match more {
                                    Ok(e) => self.note_event(&e),
                                    Err(broadcast::error::RecvError::Lagged(_)) => self.note_lagged(),
                                    Err(broadcast::error::RecvError::Closed) => break,
                                },
                            }
                        }
                        self.reconcile_off_worker();
                    }
                    // Missed events only mean "something changed": the plan reads the registry.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "Reconciler lagged behind fleet events; planning the whole fleet.");
                        self.note_lagged();
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = tick.tick() => {
                    let resync = self.last_resync.elapsed() >= RESYNC;
                    if resync || self.has_work() || self.has_active_rollouts() {
                        self.reconcile_off_worker();
                    }
                }
            }
        }
        self.persist_rollouts();
        if let Err(err) = self.store.flush().await {
            warn!(error = %err, "Final store flush failed.");
        }
    }

    /// Plan on this thread while the runtime moves its other tasks elsewhere: a large plan
    /// (a new revision, a resync) must not hold up the connections queued behind it.
    fn reconcile_off_worker(&mut self) {
        tokio::task::block_in_place(|| self.reconcile());
    }

    /// Pretend the last plan took `cost`: the pause that gathers a burst of fleet events is
    /// twice that. For tests of the run loop, which cannot wait for a plan that slow.
    #[doc(hidden)]
    pub fn assume_last_plan_cost(&mut self, cost: Duration) {
        self.last_plan_cost = cost;
    }

    /// Anything for the next plan to look at.
    fn has_work(&self) -> bool {
        self.refresh_all
            || !self.dirty.is_empty()
            || self.planner.as_ref().is_some_and(Planner::has_work)
    }

    fn has_active_rollouts(&self) -> bool {
        self.planner.as_ref().is_some_and(|p| {
            p.rollouts()
                .values()
                .any(|r| r.phase == RolloutPhase::Progressing)
        }) || self.fleet_has_applying()
    }

    fn fleet_has_applying(&self) -> bool {
        self.state
            .view
            .load()
            .counts
            .get(SyncStatus::Applying.as_str())
            .is_some_and(|n| *n > 0)
    }

    /// Events were missed: the next plan must read the whole fleet.
    pub fn note_lagged(&mut self) {
        self.refresh_all = true;
        self.lagged = true;
    }

    /// Take note of one fleet event (the run loop calls this for each; so does the bench).
    pub fn note_event(&mut self, event: &FleetEvent) {
        let (FleetEvent::Connected(uid)
        | FleetEvent::Reported(uid, _)
        | FleetEvent::Disconnected(uid)) = event;
        self.dirty.insert(*uid);
        match event {
            FleetEvent::Connected(uid) => {
                self.described.insert(*uid);
                self.state.emit(Event::Connected { agent: *uid });
            }
            FleetEvent::Disconnected(uid) => {
                self.state.emit(Event::Disconnected { agent: *uid });
            }
            FleetEvent::Reported(uid, changes) => {
                if changes.description || changes.health {
                    self.described.insert(*uid);
                }
            }
        }
    }

    /// Handle one source event. Returns true when a new revision is now served.
    async fn on_sync(&mut self, event: SyncEvent) -> bool {
        let info = event.info().clone();
        {
            let mut sync = self.state.sync.lock().unwrap_or_else(|p| p.into_inner());
            sync.last_fetch = info.last_fetch;
            sync.last_fetch_duration_ms = Some(info.last_duration.as_millis() as u64);
            sync.consecutive_failures = info.consecutive_failures;
            sync.next_retry = info.next_retry;
            if !matches!(event, SyncEvent::Error(..)) {
                sync.last_error = None;
            }
        }
        match event {
            SyncEvent::Unchanged(..) => {
                telemetry::fetch(info.last_duration, true);
                false
            }
            SyncEvent::Error(message, _) => {
                telemetry::fetch(info.last_duration, false);
                self.state.emit(Event::FetchError {
                    error: message.clone(),
                });
                let mut sync = self.state.sync.lock().unwrap_or_else(|p| p.into_inner());
                sync.last_error = Some(message);
                false
            }
            SyncEvent::Snapshot(snapshot, _) => {
                telemetry::fetch(info.last_duration, true);
                for skipped in &info.skipped {
                    self.state.emit(Event::FileSkipped {
                        path: skipped.path.clone(),
                        reason: skipped.reason.to_string(),
                    });
                }
                let skipped = crate::source::skipped::skipped_diagnostics(&info.skipped);
                self.on_snapshot(snapshot, skipped).await
            }
        }
    }

    /// Compile a snapshot (off the async threads) and serve it if it is valid. `skipped` holds
    /// the source's diagnostics for files it left out: a configuration file left out rejects
    /// the revision (serving without it would silently change what agents get). With
    /// `--otelcol`, the collector must accept every configuration too.
    async fn on_snapshot(&mut self, snapshot: Snapshot, skipped: gitamp_core::Diagnostics) -> bool {
        let revision_id = snapshot.revision.clone();
        let started = Instant::now();
        let otelcol = self.otelcol.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            crate::otelcol::compile_checked(&snapshot, skipped, otelcol.as_deref())
        })
        .await;
        telemetry::compile(started.elapsed());
        let compiled = match compiled {
            Ok(c) => c,
            Err(err) => {
                self.state.emit(Event::RevisionCrashed {
                    revision: revision_id,
                    error: err.to_string(),
                });
                return false;
            }
        };
        match compiled {
            Ok(revision) => {
                self.accept(revision);
                true
            }
            Err(rejected) => {
                let errors = rejected.diagnostics.errors().count();
                let record = RevisionRecord {
                    revision: rejected.revision.clone(),
                    at: SystemTime::now(),
                    accepted: false,
                    errors,
                    warnings: rejected.diagnostics.warnings().count(),
                    diagnostics: rejected.diagnostics.clone(),
                };
                telemetry::revision(false);
                self.state.emit(Event::RevisionRejected {
                    revision: rejected.revision.clone(),
                    errors,
                });
                self.write(StoreOp::RecordRevision(store::RevisionRecord {
                    revision: record.revision.clone(),
                    time: store::to_ms(record.at),
                    accepted: false,
                    diagnostics: serde_json::to_value(&record.diagnostics).unwrap_or_default(),
                    source_error: None,
                }));
                if let Ok(mut h) = self.state.history.lock() {
                    h.record_revision(record.clone());
                }
                let mut sync = self.state.sync.lock().unwrap_or_else(|p| p.into_inner());
                sync.last_rejected = Some(record);
                false
            }
        }
    }

    /// Serve an accepted revision: build everything derived from it once.
    pub fn accept(&mut self, revision: Revision) {
        let desired = Arc::new(Desired::from_revision(&revision));
        let desired_configs: BTreeMap<String, Arc<DesiredConfig>> = revision
            .rendered
            .configurations
            .iter()
            .map(|(name, rendered)| {
                let files = rendered
                    .config_map
                    .iter()
                    .map(|(k, f)| (k.clone(), (f.body.clone(), f.content_type.clone())))
                    .collect();
                (
                    name.clone(),
                    Arc::new(DesiredConfig::new(files, rendered.hash.0)),
                )
            })
            .collect();
        let record = RevisionRecord {
            revision: revision.revision.clone(),
            at: SystemTime::now(),
            accepted: true,
            errors: 0,
            warnings: revision.warnings.len(),
            diagnostics: revision.warnings.clone(),
        };
        self.durable_now = true;
        telemetry::revision(true);
        self.state.emit(Event::RevisionAccepted {
            revision: revision.revision.clone(),
            configurations: desired_configs.len(),
        });
        self.write(StoreOp::RecordRevision(store::RevisionRecord {
            revision: record.revision.clone(),
            time: store::to_ms(record.at),
            accepted: true,
            diagnostics: serde_json::to_value(&record.diagnostics).unwrap_or_default(),
            source_error: None,
        }));
        if let Ok(mut h) = self.state.history.lock() {
            h.record_revision(record);
        }
        {
            let mut sync = self.state.sync.lock().unwrap_or_else(|p| p.into_inner());
            sync.current_revision = Some(revision.revision.clone());
        }
        self.retain_served(&revision.revision, &desired_configs);
        self.fleet.set_served(desired_configs.values().cloned());
        self.state.serving.store(Some(Arc::new(Serving::new(
            Arc::new(revision),
            desired_configs,
        ))));
        match self.planner.as_mut() {
            Some(planner) => planner.set_desired(desired),
            None => {
                let rollouts = std::mem::take(&mut self.resumed_rollouts);
                self.planner = Some(Planner::new(desired, rollouts));
            }
        }
        // No re-read of the fleet: the planner already holds every agent as last reported
        // (events keep it current) and selects them all again for the new revision.
    }

    /// Keep the configs of an accepted revision as rollback targets (stored once per hash) and
    /// forget those neither served nor last applied by any agent, so the set stays as small as
    /// the fleet's history makes it.
    fn retain_served(&mut self, revision: &str, served: &BTreeMap<String, Arc<DesiredConfig>>) {
        for config in served.values() {
            let hash = ConfigHash(*config.hash());
            if self.retained.insert(hash, config.clone()).is_none() {
                self.write(StoreOp::SaveConfig(config_record(revision, config)));
            }
        }
        let mut keep: HashSet<ConfigHash> =
            served.values().map(|c| ConfigHash(*c.hash())).collect();
        // The memory holds every agent's last applied hash as of the last plan.
        keep.extend(self.memory.values().filter_map(|m| m.applied));
        self.retained.retain(|h, _| keep.contains(h));
        let mut keep: Vec<String> = keep.iter().map(ConfigHash::to_hex).collect();
        keep.sort();
        self.write(StoreOp::PruneConfigs { keep });
    }

    /// Re-read the agents the events named (or the whole fleet) into the planner. Returns the
    /// snapshots read and the agents whose labels changed (their store records are rewritten).
    fn refresh(&mut self) -> (HashMap<Uid, AgentSnapshot>, HashSet<Uid>) {
        let mut labels_changed = HashSet::new();
        let Some(planner) = self.planner.as_mut() else {
            return (HashMap::new(), labels_changed);
        };
        let lagged = std::mem::take(&mut self.lagged);
        let snapshots: Vec<AgentSnapshot> = if std::mem::take(&mut self.refresh_all) {
            self.dirty.clear();
            self.fleet.agents_for_plan()
        } else {
            self.dirty
                .drain()
                .filter_map(|uid| self.fleet.agent_for_plan(&uid))
                .collect()
        };
        for snap in &snapshots {
            let known = planner.agent(&snap.uid).is_some();
            let memory = self.memory.get(&snap.uid);
            let mut relabelled = false;
            planner.update(snap.uid, |agent| {
                relabelled = observe_into(snap, memory, agent);
                relabelled
            });
            if relabelled || !known {
                labels_changed.insert(snap.uid);
            }
            if lagged || !known {
                self.described.insert(snap.uid);
            }
        }
        let snapshots = snapshots.into_iter().map(|s| (s.uid, s)).collect();
        (snapshots, labels_changed)
    }

    /// Bring the plan up to date with what changed and act on it: push what it says to push,
    /// remember what was sent, publish the view, persist what changed. Costs what changed (the
    /// agents named by events, and those whose rollout admission moved), not the fleet; the
    /// whole fleet is re-read after missed events and every [`RESYNC`].
    pub fn reconcile(&mut self) {
        let Some(serving) = self.state.serving.load_full() else {
            return;
        };
        if self.planner.is_none() {
            return;
        }
        let started = Instant::now();
        if self.last_resync.elapsed() >= RESYNC {
            self.last_resync = Instant::now();
            self.refresh_all = true;
            if let Some(p) = self.planner.as_mut() {
                p.replan_all();
            }
        }
        let (snapshots, labels_changed) = self.refresh();
        let now = now_ms();
        let Some(planner) = self.planner.as_mut() else {
            return;
        };
        let t_refresh = started.elapsed();
        let replanned = planner.plan(Timing::at(now));
        let t_plan = started.elapsed();

        // Pushes first, bookkeeping after: the last agent of a rollout gets its config as soon
        // as the plan is made, not after everyone's memory, view and store record. The loop
        // reads the plans in place and remembers only who was pushed: copying 100,000 plans, or
        // hashing them into sets, before the last push would delay it.
        let mut pushed_now: Vec<(Uid, ConfigHash, Instant)> = Vec::new();
        for uid in &replanned {
            let Some((_, Some(agent_plan))) = planner.agent(uid) else {
                continue;
            };
            let Action::Push(hash) = agent_plan.action else {
                continue;
            };
            // The configuration's served config, or (a rollback) an earlier one by hash.
            let config = agent_plan
                .configuration
                .as_ref()
                .and_then(|name| serving.desired_configs.get(name))
                .filter(|c| c.hash() == &hash.0)
                .or_else(|| self.retained.get(&hash));
            let Some(config) = config else {
                warn!(agent = %uid_text(uid), hash = %hash.short(), "No config with this hash is kept; nothing sent.");
                continue;
            };
            if self.fleet.set_desired(uid, Some(config.clone())) {
                pushed_now.push((*uid, hash, Instant::now()));
            }
        }
        if !pushed_now.is_empty() {
            debug!(
                pushes = pushed_now.len(),
                refreshed_ms = t_refresh.as_secs_f64() * 1e3,
                planned_ms = t_plan.as_secs_f64() * 1e3,
                pushed_ms = started.elapsed().as_secs_f64() * 1e3,
                "Pushes handed to the registry."
            );
        }
        let pushes = pushed_now.len() as u64;
        let mut pushed = HashSet::with_capacity(pushed_now.len());
        for (uid, hash, at) in pushed_now {
            pushed.insert(uid);
            self.pushed_at.insert(uid, (hash, at));
        }
        let mut changed_agents = Vec::new();
        let plans: Vec<(Uid, plan::AgentPlan)> = replanned
            .into_iter()
            .filter_map(|uid| {
                planner
                    .agent(&uid)
                    .and_then(|(_, p)| p.cloned())
                    .map(|p| (uid, p))
            })
            .collect();
        let view_agents = &mut self.view_agents;
        for (uid, agent_plan) in plans {
            if let Action::Push(hash) = agent_plan.action
                && pushed.contains(&uid)
            {
                let configuration = agent_plan.configuration.clone();
                self.state.emit(match agent_plan.desired_hash {
                    Some(failed) if failed != hash => Event::PushedRollback {
                        agent: uid,
                        configuration,
                        hash,
                        failed,
                    },
                    _ => Event::Pushed {
                        agent: uid,
                        configuration,
                        hash,
                    },
                });
            }
            planner.record(&uid, now);
            let Some((agent, _)) = planner.agent(&uid) else {
                continue;
            };
            note_transition(
                &self.state,
                &serving.secrets,
                &mut self.last_status,
                &mut self.pushed_at,
                uid,
                &agent_plan,
            );

            // Most re-planned agents keep their memory: compare in place, copy only on change.
            let sent = agent.sent_hash.zip(agent.sent_at);
            let unchanged = self.memory.get(&uid).is_some_and(|m| {
                m.synced == agent.synced_hash
                    && m.sent == sent
                    && m.failed == agent.failed_hashes
                    && m.applied == agent.last_applied
                    && m.last_error == agent.last_error
            });
            if !unchanged || labels_changed.contains(&uid) {
                // A failure must survive a crash (it stops re-sends and holds rollouts); an
                // applied hash is reported again by the agent itself when it reconnects.
                self.durable_now |= self
                    .memory
                    .get(&uid)
                    .map_or(!agent.failed_hashes.is_empty(), |m| {
                        m.failed != agent.failed_hashes
                    });
                let memory = AgentMemory {
                    failed: agent.failed_hashes.clone(),
                    synced: agent.synced_hash,
                    sent,
                    labels: BTreeMap::new(),
                    applied: agent.last_applied,
                    last_error: agent.last_error.clone(),
                };
                // Labels go to the store only when they may be new to it: a rollout rewrites
                // every agent's record, and cloning and serializing unchanged labels for each
                // was a cost of its own.
                let labels = (labels_changed.contains(&uid) || self.described.contains(&uid))
                    .then(|| agent.labels.clone());
                changed_agents.push((uid, labels, memory.clone()));
                self.memory.insert(uid, memory);
            }
            let same_view = view_agents.get(&uid).is_some_and(|v| {
                v.status == agent_plan.status.as_str()
                    && v.configuration == agent_plan.configuration
                    && v.desired_hash == agent_plan.desired_hash
                    && v.reason == agent_plan.detail
                    && v.last_applied == agent.last_applied
                    && v.failed_hashes.iter().eq(agent.failed_hashes.iter())
            });
            if !same_view {
                view_agents.insert(
                    uid,
                    AgentView {
                        status: agent_plan.status.as_str().to_string(),
                        configuration: agent_plan.configuration,
                        desired_hash: agent_plan.desired_hash,
                        reason: agent_plan.detail,
                        last_applied: agent.last_applied,
                        failed_hashes: agent.failed_hashes.iter().copied().collect(),
                    },
                );
            }
        }
        telemetry::pushes(pushes);

        for old in planner.take_superseded() {
            if let RolloutPhase::Superseded { by: Some(by) } = &old.phase {
                self.state.emit(Event::RolloutSuperseded {
                    configuration: old.configuration.clone(),
                    target: old.target,
                    by: *by,
                });
            }
        }

        let configurations = planner
            .configurations()
            .iter()
            .map(|(name, c)| {
                let counts = SyncStatus::ALL
                    .iter()
                    .map(|s| (s.as_str().to_string(), c.counts.get(*s)))
                    .filter(|(_, n)| *n > 0)
                    .collect();
                (
                    name.clone(),
                    ConfigurationView {
                        hash: c.hash,
                        matched_agents: c.counts.total(),
                        counts,
                        rollout: c
                            .rollout
                            .as_ref()
                            .and_then(|r| serde_json::to_value(r).ok()),
                    },
                )
            })
            .collect();
        let summary = planner.summary();
        let counts: BTreeMap<String, usize> = SyncStatus::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), summary.get(*s)))
            .collect();
        telemetry::agents_by_status(counts.iter().map(|(k, v)| (k.as_str(), *v)));
        self.state.view.store(Arc::new(FleetView {
            agents: self.view_agents.clone(),
            configurations,
            counts,
            connected: planner.connected(),
            computed_at: Some(SystemTime::now()),
        }));

        for (uid, labels, memory) in changed_agents {
            // Agents re-read this plan are not read twice; the others (pushed to because
            // their rollout batch opened) are read now.
            let fetched;
            let snap = match snapshots.get(&uid) {
                Some(s) => Some(s),
                None => {
                    fetched = self.fleet.agent_for_plan(&uid);
                    fetched.as_ref()
                }
            };
            if let Some(snap) = snap {
                let described = self.described.remove(&uid);
                let written = self.write(StoreOp::UpsertAgent(agent_record(
                    snap, labels, &memory, described,
                )));
                if !written {
                    // The record that carried the labels, description or health was dropped:
                    // the agent's next record carries them all again.
                    self.described.insert(uid);
                }
            }
        }
        self.persist_rollouts();
        if std::mem::take(&mut self.durable_now) {
            // Committed by the writer's task at once; the plan does not wait for the disk.
            self.store.commit_now();
        }
        self.last_plan_cost = started.elapsed();
        telemetry::reconcile(self.last_plan_cost);
    }

    /// Queue a store write without ever waiting on the disk: the plan must not stall behind a
    /// slow write. A full queue drops the op with a warning; the next change writes it again.
    fn write(&self, op: StoreOp) -> bool {
        match self.store.try_send(op) {
            Ok(()) => true,
            Err(err) => {
                warn!(error = %err, "Store write dropped.");
                false
            }
        }
    }

    /// Write rollouts that changed since the last write; log halts.
    fn persist_rollouts(&mut self) {
        let Some(planner) = self.planner.as_ref() else {
            return;
        };
        let mut ops = Vec::new();
        for (name, rollout) in planner.rollouts() {
            let stamp = RolloutStamp::of(rollout);
            let before = self.persisted_rollouts.get(name);
            if before == Some(&stamp) {
                continue;
            }
            if before.is_none_or(|b| b.phase != stamp.phase || b.target != stamp.target) {
                self.durable_now = true;
            }
            if let RolloutPhase::Halted { reason } = &rollout.phase
                && !matches!(before.map(|b| &b.phase), Some(RolloutPhase::Halted { .. }))
            {
                self.state.emit(Event::RolloutHalted {
                    configuration: name.clone(),
                    reason: reason.to_string(),
                });
            }
            if let Some(old) = before.filter(|o| o.target != rollout.target) {
                ops.push(StoreOp::DeleteRollout {
                    configuration: name.clone(),
                    target_hash: Some(old.target.to_hex()),
                });
            }
            ops.push(StoreOp::SaveRollout(RolloutRecord {
                configuration: name.clone(),
                target_hash: rollout.target.to_hex(),
                progress: serde_json::to_value(rollout).unwrap_or_default(),
                updated_at: store::now_ms(),
            }));
            self.persisted_rollouts.insert(name.clone(), stamp);
        }
        let gone: Vec<String> = self
            .persisted_rollouts
            .keys()
            .filter(|name| !planner.rollouts().contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            self.persisted_rollouts.remove(&name);
            ops.push(StoreOp::DeleteRollout {
                configuration: name,
                target_hash: None,
            });
        }
        for op in ops {
            self.write(op);
        }
    }
}

/// What the plan needs of one agent: the registry's view merged with the reconciler's memory,
/// written over the planner's copy of it (its allocations are reused). Labels come from the
/// agent's description; until it sends one (a reconnect after a restart), they stay what the
/// planner knew, else what the store remembered. Returns whether the labels changed.
fn observe_into(
    snap: &AgentSnapshot,
    memory: Option<&AgentMemory>,
    agent: &mut ObservedAgent,
) -> bool {
    if agent.instance_uid.is_empty() {
        agent.instance_uid = uid_text(&snap.uid);
    }
    let relabelled = match &snap.description {
        Some(d) if !d.labels_equal(&agent.labels) => {
            agent.labels = d.labels();
            true
        }
        Some(_) => false,
        None => match memory.filter(|m| agent.labels.is_empty() && !m.labels.is_empty()) {
            Some(m) => {
                agent.labels = m.labels.clone();
                true
            }
            None => false,
        },
    };
    let caps = snap.capabilities;
    agent.connected = snap.connection.connected;
    agent.accepts_remote_config = caps & AgentCapabilities::AcceptsRemoteConfig as u64 != 0;
    agent.reports_remote_config = caps & AgentCapabilities::ReportsRemoteConfig as u64 != 0;
    agent.healthy = snap.health.as_ref().map(|h| h.healthy);
    agent.failed_hashes.clear();
    agent.synced_hash = None;
    agent.sent_hash = None;
    agent.sent_at = None;
    agent.reported_hash = None;
    agent.reported_status = ReportedStatus::Unset;
    agent.last_applied = None;
    agent.last_error = None;
    if let Some(m) = memory {
        agent.failed_hashes.extend(m.failed.iter().copied());
        agent.synced_hash = m.synced;
        agent.last_applied = m.applied;
        agent.last_error.clone_from(&m.last_error);
        if let Some((h, at)) = m.sent {
            agent.sent_hash = Some(h);
            agent.sent_at = Some(at);
        }
    }
    for h in &snap.failed_hashes {
        if let Some(h) = ConfigHash::from_slice(h) {
            agent.failed_hashes.insert(h);
        }
    }
    if let Some(sent) = snap.sent_hash {
        agent.sent_hash = Some(ConfigHash(sent));
        agent.sent_at = snap.sent_at.map(system_time_ms);
    }
    if let Some(status) = &snap.remote_config_status {
        let reported = match status.status {
            RemoteState::Unset => ReportedStatus::Unset,
            RemoteState::Applied => ReportedStatus::Applied,
            RemoteState::Applying => ReportedStatus::Applying,
            RemoteState::Failed => ReportedStatus::Failed {
                error: status.error.clone(),
            },
        };
        agent.observe_remote_config_status(&status.hash, reported);
    }
    relabelled
}

/// Log status changes as events and feed the push-to-applied histogram.
fn note_transition(
    state: &AppState,
    secrets: &[String],
    last_status: &mut HashMap<Uid, SyncStatus>,
    pushed_at: &mut HashMap<Uid, (ConfigHash, Instant)>,
    uid: Uid,
    agent_plan: &plan::AgentPlan,
) {
    let status = agent_plan.status;
    let previous = last_status.insert(uid, status);
    if previous == Some(status) {
        return;
    }
    let masked = || Masked::new(agent_plan.detail.as_deref().unwrap_or_default(), secrets);
    let event = match status {
        SyncStatus::Synced => {
            if let Some((hash, at)) = pushed_at.remove(&uid)
                && Some(hash) == agent_plan.desired_hash
            {
                telemetry::push_to_applied(at.elapsed());
            }
            previous.map(|_| Event::Applied { agent: uid })
        }
        SyncStatus::Failed => Some(Event::Failed {
            agent: uid,
            error: masked(),
        }),
        SyncStatus::RolledBack => Some(Event::RolledBack {
            agent: uid,
            detail: masked(),
        }),
        SyncStatus::Drifted => Some(Event::Drifted { agent: uid }),
        SyncStatus::Conflict => Some(Event::Conflict {
            agent: uid,
            detail: masked(),
        }),
        _ => None,
    };
    if let Some(event) = event {
        state.emit(event);
    }
}

/// The durable image of one agent: the registry's view plus the reconciler's memory.
fn agent_record(
    snap: &AgentSnapshot,
    labels: Option<BTreeMap<String, String>>,
    memory: &AgentMemory,
    described: bool,
) -> AgentRecord {
    let status = snap.remote_config_status.as_ref();
    AgentRecord {
        instance_uid: hex::encode(snap.uid),
        labels,
        description: described.then(|| serde_json::to_value(&snap.description).unwrap_or_default()),
        capabilities: snap.capabilities,
        health: described.then(|| serde_json::to_value(&snap.health).unwrap_or_default()),
        reported_hash: status
            .map(|s| hex::encode(&s.hash))
            .filter(|h| !h.is_empty()),
        remote_config_status: status
            .and_then(|s| serde_json::to_value(s.status).ok())
            .and_then(|v| v.as_str().map(str::to_string)),
        remote_config_error: status.map(|s| s.error.clone()).filter(|e| !e.is_empty()),
        effective_config_hash: None,
        sent_hash: memory.sent.map(|(h, _)| h.to_hex()),
        sent_at: memory.sent.map(|(_, at)| at as i64),
        failed_hashes: memory.failed.iter().map(ConfigHash::to_hex).collect(),
        applied_hash: memory.applied.map(|h| h.to_hex()),
        last_error: memory.last_error.clone(),
        connected: snap.connection.connected,
        last_seen: store::to_ms(snap.connection.last_seen),
    }
}

/// Rebuild the reconciler's memory of agents from the store (after a restart).
pub fn memory_from_records(records: &[AgentResume]) -> HashMap<Uid, AgentMemory> {
    records
        .iter()
        .filter_map(|r| {
            let uid: Uid = hex::decode(&r.instance_uid).ok()?.try_into().ok()?;
            let sent = r
                .sent_hash
                .as_deref()
                .and_then(ConfigHash::from_hex)
                .zip(r.sent_at.map(|t| t.max(0) as u64));
            Some((
                uid,
                AgentMemory {
                    failed: r
                        .failed_hashes
                        .iter()
                        .filter_map(|h| ConfigHash::from_hex(h))
                        .collect(),
                    synced: None,
                    sent,
                    labels: r.labels.clone(),
                    applied: r.applied_hash.as_deref().and_then(ConfigHash::from_hex),
                    last_error: r.last_error.clone(),
                },
            ))
        })
        .collect()
}

/// The durable image of a served config.
fn config_record(revision: &str, config: &DesiredConfig) -> ConfigRecord {
    ConfigRecord {
        hash: hex::encode(config.hash()),
        config_map: config
            .files()
            .iter()
            .map(|(key, (body, content_type))| {
                let entry = ConfigEntry {
                    content_type: content_type.clone(),
                    body: String::from_utf8_lossy(body).into_owned(),
                };
                (key.clone(), entry)
            })
            .collect(),
        revision: revision.to_string(),
        time: store::now_ms(),
    }
}

/// A stored config, if its bytes still hash to its name (the core's config-map hash).
fn config_from_record(r: &ConfigRecord) -> Option<Arc<DesiredConfig>> {
    let hash = ConfigHash::from_hex(&r.hash)?;
    let map: gitamp_core::config_map::ConfigMap = r
        .config_map
        .iter()
        .map(|(k, e)| {
            let file = gitamp_core::config_map::ConfigFile {
                body: bytes::Bytes::from(e.body.clone().into_bytes()),
                content_type: e.content_type.clone(),
            };
            (k.clone(), file)
        })
        .collect();
    if ConfigHash::of(&map) != hash {
        return None;
    }
    let files = map
        .into_iter()
        .map(|(k, f)| (k, (f.body, f.content_type)))
        .collect();
    Some(Arc::new(DesiredConfig::new(files, hash.0)))
}

/// Rebuild rollouts from the store; unreadable ones are dropped (a new rollout starts).
pub fn rollouts_from_records(records: &[RolloutRecord]) -> BTreeMap<String, Rollout> {
    records
        .iter()
        .filter_map(|r| serde_json::from_value::<Rollout>(r.progress.clone()).ok())
        .map(|r| (r.configuration.clone(), r))
        .collect()
}

//! The reconciler: the one writer of the server's state (kube-runtime's shape).
//!
//! One task turns two kinds of input into one action. Each step has its own module, in the
//! order data flows through them:
//!
//! - [`scheduler`]: the run loop. It gathers bursts of fleet events, takes revisions from the
//!   source, and sleeps until the earliest time a plan asked to be looked at again (or the
//!   periodic resync), never on a fixed tick;
//! - [`revision`]: a new snapshot goes through the pure core (`gitamp_core::compile`) off the
//!   async threads; an accepted revision replaces what is served, a rejected one is recorded
//!   with its diagnostics and changes nothing for agents;
//! - [`observe`]: what the registry saw of the agents named by events (or of every agent) is
//!   folded into the planner, whose `ObservedAgent` is the one record of each agent's
//!   desired, sent, failed and synced state;
//! - [`act`]: the plan (`gitamp_core::plan`, pure) says which configs go out now; they are
//!   handed to the registry, and a push counts once a frame carrying it was queued;
//! - [`publish`]: the [`FleetView`](super::state::FleetView) for readers, the status
//!   transitions as events, the metrics;
//! - [`persist`]: what changed goes to the store (write-behind), and what the store kept is
//!   read back after a restart;
//! - [`command`]: what operators ask through the API (resume a halted rollout), handled by
//!   the run loop between plans.
//!
//! Everything derived from a revision (selection data, encoded remote configs) is built once
//! per revision, never per agent.

mod act;
mod command;
mod evidence;
mod observe;
mod packages;
mod persist;
mod publish;
mod revision;
mod scheduler;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use gitamp_core::ConfigHash;
use gitamp_core::plan::{ObservedAgent, Planner, Rollout, Timing};
use gitamp_opamp::{Clock, Fleet, RemoteConfig, Uid};
use tracing::warn;

use super::convergence::{Convergence, Tracker};
use super::state::{AgentViews, AppState};
use crate::store::{ConfigRecord, StoreWriter};
use crate::telemetry;

pub use command::Command;
use persist::config_from_record;
pub(crate) use persist::{RolloutStamp, Written, rollout_writes};
pub use persist::{agents_from_records, offers_from_records, rollouts_from_records};

/// The reconciler's state. Per agent it keeps only what serves one of its steps: the planner
/// holds the agent's record; the rest are caches keyed by agent (what was last published and
/// persisted, which hand-over still waits for a reply).
pub struct Reconciler {
    state: Arc<AppState>,
    fleet: Arc<Fleet>,
    store: StoreWriter,
    /// The plan, kept current incrementally; `None` until a revision is served.
    planner: Option<Planner<Uid>>,
    /// Rollouts loaded from the store, handed to the planner with the first revision.
    resumed_rollouts: BTreeMap<String, Rollout>,
    /// Replicas: the leader's upgrade rollouts adopted before the first revision was served.
    adopted_upgrades: BTreeMap<String, Rollout>,
    /// Agents as the store remembered them, each folded into the planner when first seen.
    resumed_agents: HashMap<Uid, ObservedAgent>,
    /// Agents named by fleet events since the last plan.
    dirty: HashSet<Uid>,
    /// Agents whose description or health the store has not seen yet: only their records
    /// carry those columns (serializing them for every sent or applied hash was a fifth of a
    /// rollout's plan).
    described: HashSet<Uid>,
    /// Events were missed: every agent re-read counts as described.
    lagged: bool,
    /// Fleet events taken in (missed ones counted too): how far a plan got, for the poll
    /// replies that wait for it (`gitamp_opamp::plan_wait`).
    events_seen: u64,
    /// Re-read every agent at the next plan (missed events, new revision, resync).
    refresh_all: bool,
    last_resync: tokio::time::Instant,
    /// The clock plans read: the registry's, so a send it stamps and a resend a plan computes
    /// are on one scale (and follow paused time in tests).
    clock: Clock,
    /// Configs handed to the registry that wait for the agent's next message; withdrawn if a
    /// later plan no longer sends them.
    handed_over: HashMap<Uid, ConfigHash>,
    /// The per-agent view; publishing it shares its shards.
    view_agents: AgentViews,
    /// A digest of each agent's last stored record, to write only what changed.
    persisted: HashMap<Uid, persist::Digest>,
    /// Rollout state as last persisted, to write only what changed.
    persisted_rollouts: BTreeMap<String, Written>,
    /// Duration of the last plan, to keep plans from running back to back under load.
    last_plan_cost: std::time::Duration,
    /// Rendered configs by hash: the served ones and earlier ones some agent last applied,
    /// which a rollback sends (mirrored in the store's `configs` table).
    retained: HashMap<ConfigHash, Arc<RemoteConfig>>,
    /// The last plan made a decision a restart must not forget (a revision accepted, a rollout
    /// started, halted or finished, an agent's failure): the writer is asked to commit at once
    /// instead of within its delay (see ARCHITECTURE.md, "Durability").
    durable_now: bool,
    /// `--otelcol`: the collector that must accept a revision before it is served.
    otelcol: Option<Arc<crate::otelcol::Otelcol>>,
    /// When this process started, in ms: sends recorded before it (read back from the store)
    /// do not feed the push-to-applied histogram.
    started_ms: u64,
    /// The served revision's convergence (`None` until a revision is served).
    convergence: Option<Tracker>,
    /// The newest convergence the store kept, resumed if its revision is served again.
    stored_convergence: Option<Convergence>,
    /// The served revision's latest figures wait for room in the store's queue.
    convergence_unsaved: bool,
    /// Package offers encoded once per (version, platform), by all-packages hash; rebuilt with
    /// each served revision (bounded by the declared versions and platforms).
    offers: HashMap<ConfigHash, Arc<gitamp_opamp::packages::PackageOffer>>,
    /// Configurations whose upgrade rollout was last seen halted (to emit `rollout-halted`
    /// once per halt).
    halted_upgrades: HashSet<String>,
    /// Package offers handed to the registry that wait for the agent's next message (by
    /// all-packages hash): not handed (nor reported as offered) again meanwhile.
    offers_handed: HashMap<Uid, ConfigHash>,
    /// Operators' requests from the API (`with_commands`); taken by the run loop.
    commands: Option<tokio::sync::mpsc::Receiver<Command>>,
    /// Where each configuration's agents send their own telemetry (offered with the plan).
    own_telemetry: crate::server::own_telemetry::Policy,
    /// Replicas: the leader's judge commits accepted revisions to the shared database before
    /// any replica serves them, so this one keeps them in its own history only.
    accepted_recorded_elsewhere: bool,
    /// Replicas: where to ask for the database's row of an agent that came from elsewhere
    /// ([`evidence`]); set by the run loop.
    evidence: Option<tokio::sync::mpsc::UnboundedSender<Uid>>,
    /// Agents whose row is being read: the plan sends them nothing until it is folded in.
    awaiting_evidence: HashSet<Uid>,
    /// Replicas: rollouts are stepped by the leader over the whole fleet and adopted here
    /// ([`Command::AdoptRollouts`]); this reconciler neither steps nor writes them.
    adopts_rollouts: bool,
}

/// The clock for a plan made now.
pub(super) fn timing(clock: &Clock) -> Timing {
    Timing::at(clock.now_ms())
}

impl Reconciler {
    /// A reconciler that resumes from what the store remembered (agents, rollouts).
    pub fn new(
        state: Arc<AppState>,
        store: StoreWriter,
        agents: HashMap<Uid, ObservedAgent>,
        rollouts: BTreeMap<String, Rollout>,
    ) -> Reconciler {
        let clock = state.fleet.clock();
        Reconciler {
            fleet: state.fleet.clone(),
            state,
            store,
            planner: None,
            persisted_rollouts: rollouts
                .iter()
                .map(|(k, r)| (k.clone(), Written::read_back(r)))
                .collect(),
            resumed_rollouts: rollouts,
            adopted_upgrades: BTreeMap::new(),
            persisted: agents
                .iter()
                .map(|(uid, a)| (*uid, persist::Digest::of(a, false)))
                .collect(),
            resumed_agents: agents,
            dirty: HashSet::new(),
            described: HashSet::new(),
            lagged: false,
            events_seen: 0,
            refresh_all: true,
            last_resync: tokio::time::Instant::now(),
            clock,
            handed_over: HashMap::new(),
            view_agents: AgentViews::default(),
            last_plan_cost: std::time::Duration::ZERO,
            retained: HashMap::new(),
            durable_now: false,
            otelcol: None,
            started_ms: clock.now_ms(),
            convergence: None,
            stored_convergence: None,
            convergence_unsaved: false,
            offers: HashMap::new(),
            halted_upgrades: HashSet::new(),
            offers_handed: HashMap::new(),
            commands: None,
            own_telemetry: Default::default(),
            accepted_recorded_elsewhere: false,
            evidence: None,
            awaiting_evidence: HashSet::new(),
            adopts_rollouts: false,
        }
    }

    /// A replica's reconciler (src/server/cluster): accepted revisions are already in the
    /// shared store when they arrive; writing them again would repeat each in the history
    /// once per replica.
    pub fn with_accepted_recorded_elsewhere(mut self) -> Reconciler {
        self.accepted_recorded_elsewhere = true;
        self
    }

    /// A replica's reconciler (src/server/cluster/rollouts.rs): admit by the rollouts the
    /// leader steps over the whole fleet, from the first plan on.
    pub fn with_adopted_rollouts(mut self) -> Reconciler {
        self.adopts_rollouts = true;
        self
    }

    /// Resume the convergence figures of the revision served before a restart (the newest
    /// record the store kept), if that revision is served again.
    pub fn with_stored_convergence(mut self, newest: Option<Convergence>) -> Reconciler {
        self.stored_convergence = newest;
        self
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

    /// Bring the plan up to date with what changed and act on it: read what the registry saw,
    /// plan, hand over what the plan sends, publish the view, persist what changed. Costs what
    /// changed (the agents named by events, those whose rollout admission moved, those whose
    /// plan asked to be looked at again), not the fleet; the whole fleet is re-read after
    /// missed events and every resync.
    pub fn reconcile(&mut self) {
        // Marked however the plan ends (no revision yet: nothing to wait for).
        let mark = self.plan_mark();
        self.plan_once(mark);
        self.fleet.planned(mark);
    }

    /// What a plan starting now covers, for the poll replies waiting on it (`plan_wait`).
    /// A replica's covers every report: whom a config goes to on an agent's report is admitted
    /// fleet-wide by the leader, a few hundred ms and a database round trip later, so a local
    /// plan could rarely hand one over and a held reply only ties up the agent's connection
    /// (10,000 pooled HTTP agents over 2 replicas: ramp 53.0 s held, 35.1 s not). A new
    /// revision's plan does hand configs over where its rollout lets it (all at once reaches
    /// every agent without the leader), so a poll that comes while it runs waits for it: not
    /// a whole poll interval later.
    pub(super) fn plan_mark(&self) -> gitamp_opamp::PlanMark {
        let mark = self.fleet.plan_mark(self.events_seen);
        if self.adopts_rollouts {
            mark.revisions_only()
        } else {
            mark
        }
    }

    fn plan_once(&mut self, mark: gitamp_opamp::PlanMark) {
        let Some(serving) = self.state.serving.load_full() else {
            return;
        };
        if self.planner.is_none() {
            return;
        }
        let started = Instant::now();
        self.start_resync_if_due();
        let observed = self.observe();
        let replanned = self.plan_and_act(&serving, &observed.sent);
        // What the plan handed over is there: the poll replies waiting for it go now, not
        // after the bookkeeping below.
        self.fleet.planned(mark);
        self.publish(&serving, &replanned);
        self.persist(&replanned, &observed);
        self.store_convergence();
        self.last_plan_cost = started.elapsed();
        telemetry::reconcile(self.last_plan_cost);
    }
}

//! The fleet plan kept up to date as agents report, at the cost of what changed.
//!
//! [`plan`](crate::plan::plan) is a function of the whole fleet: right for the dry run, too dear
//! for a server that re-plans after every burst of reports (at 15,000 agents it cost ~30 µs per
//! agent per plan, most of it selecting and re-planning agents that had not changed). The
//! [`Planner`] holds the same inputs (desired state, every agent, the rollouts) and keeps what
//! `plan` derives from them (each agent's selection, status and plan; the status counts; each
//! rollout's scope) current: [`Planner::upsert`] re-derives one agent, [`Planner::plan`] steps
//! the rollouts whose scope changed and re-plans the agents that changed or whose rollout
//! admission changed. The result is the one `plan` would give for the same inputs (a test
//! checks this on random fleets); everything stays pure: no I/O, time comes in as [`Timing`].
//!
//! An agent's plan depends only on itself, its selection, its configuration's hash and whether
//! that configuration's rollout admits it (see [`plan_agent`]); its status only on the first
//! three. Stepping a rollout twice on the same statuses changes nothing. Those two facts are
//! what make re-planning only the changed agents exact. The one input that moves by itself is
//! the clock: a push [`push_decision`](crate::plan::push_decision) held back until a time
//! sets the plan's `requeue_at`, and the planner re-plans that agent once the time comes
//! ([`Planner::next_wake`] says when the caller should plan next).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use crate::catalog::model::{OnFailure, RolloutStrategy};
use crate::config_map::ConfigHash;
use crate::plan::desired::Desired;
use crate::plan::fleet_plan::{ConfigurationPlan, empty_configurations, reached};
use crate::plan::observed::ObservedAgent;
use crate::plan::rollout::{AgentProgress, Rollout, RolloutProgress};
use crate::plan::rollout_book::{ResumeError, RolloutBook, Target};
use crate::plan::select::Selection;
use crate::plan::status::{StatusCounts, SyncStatus, sync_status};
use crate::plan::upgrade::{UpgradeStatus, plan_upgrade, upgrade_progress, upgrade_status};
use crate::plan::{AgentPlan, Timing, plan_agent};

/// What the planner knows of one agent.
#[derive(Debug, Clone)]
struct Entry {
    agent: ObservedAgent,
    selection: Selection,
    desired_hash: Option<ConfigHash>,
    status: SyncStatus,
    plan: Option<AgentPlan>,
    /// Its upgrade status, when its configuration pins a version.
    upgrade: Option<UpgradeStatus>,
}

/// The incremental fleet planner. `K` is the caller's key for an agent (the server uses the
/// 16-byte instance UID); the rollouts key agents by `ObservedAgent::instance_uid`.
#[derive(Debug)]
pub struct Planner<K> {
    desired: Arc<Desired>,
    /// Each configuration's rollout of its config, over every agent it selects with a hash
    /// (not incompatible), by instance UID.
    rollouts: RolloutBook,
    /// Per configuration pinning an agent version, the upgrade's rollout: the same state
    /// machine over upgrade statuses (see [`crate::plan::upgrade`]). Kept in memory only: after
    /// a restart it starts again from what the agents report (upgraded agents count as done).
    upgrades: RolloutBook,
    /// Boxed: an entry is ~1 KB, and a map of 15,000 inline entries that doubles its table
    /// (at 14,336) holds 30 MB of mostly empty buckets.
    entries: HashMap<K, Box<Entry>>,
    /// Every agent by status, and each configuration's share.
    summary: StatusCounts,
    /// Agents connected (whatever their status: an unmanaged agent counts too).
    connected: usize,
    configurations: BTreeMap<String, ConfigurationPlan>,
    /// Agents whose inputs changed since the last plan.
    dirty: HashSet<K>,
    /// Re-plan every agent and step every rollout at the next plan.
    full: bool,
    /// Agents to re-plan at a time (ms since the Unix epoch), from their plans' `requeue_at`.
    /// An agent re-planned earlier for another reason may leave a stale entry: re-planning it
    /// once more at that time changes nothing.
    wakeups: BTreeMap<u64, Vec<K>>,
}

impl<K: Hash + Eq + Clone> Planner<K> {
    /// A planner for `desired`, resuming `rollouts` (configuration name → rollout, as persisted).
    pub fn new(desired: Arc<Desired>, rollouts: BTreeMap<String, Rollout>) -> Self {
        let mut planner = Planner {
            desired,
            rollouts: RolloutBook::new(rollouts),
            upgrades: RolloutBook::default(),
            entries: HashMap::new(),
            summary: StatusCounts::default(),
            connected: 0,
            configurations: BTreeMap::new(),
            dirty: HashSet::new(),
            full: true,
            wakeups: BTreeMap::new(),
        };
        planner.reset_configurations();
        planner
    }

    /// What the planner plans against.
    pub fn desired(&self) -> &Arc<Desired> {
        &self.desired
    }

    /// Serve a new revision: every agent is selected again and re-planned at the next plan.
    pub fn set_desired(&mut self, desired: Arc<Desired>) {
        self.desired = desired;
        self.reset_configurations();
        self.summary = StatusCounts::default();
        self.connected = 0;
        self.rollouts.clear_scopes();
        self.upgrades.clear_scopes();
        let keys: Vec<K> = self.entries.keys().cloned().collect();
        for key in keys {
            if let Some(mut entry) = self.entries.remove(&key) {
                entry.selection = self.desired.select(&entry.agent.labels);
                self.account(&key, entry);
            }
        }
        self.full = true;
    }

    /// Add or replace one agent's observed state; it is re-planned at the next plan.
    pub fn upsert(&mut self, key: K, agent: ObservedAgent) {
        self.update(key, |slot| {
            let relabelled = slot.labels != agent.labels;
            *slot = agent;
            relabelled
        });
    }

    /// Change one agent's observed state in place (a new agent starts from the default):
    /// `change` returns whether the labels changed, so that only then is it selected again.
    /// Reusing the stored state saves the server an allocation per label on every report.
    pub fn update(&mut self, key: K, change: impl FnOnce(&mut ObservedAgent) -> bool) {
        let (mut entry, known) = match self.unaccount(&key) {
            Some(entry) => (entry, true),
            None => (
                Box::new(Entry {
                    agent: ObservedAgent::default(),
                    selection: Selection::None,
                    desired_hash: None,
                    status: SyncStatus::Unmanaged,
                    plan: None,
                    upgrade: None,
                }),
                false,
            ),
        };
        let relabelled = change(&mut entry.agent);
        if relabelled || !known {
            entry.selection = self.desired.select(&entry.agent.labels);
        }
        self.account(&key, entry);
        self.dirty.insert(key);
    }

    /// Re-plan every agent at the next plan (the clock moved; a periodic resync).
    pub fn replan_all(&mut self) {
        self.full = true;
    }

    /// True if the next plan has agents or rollouts to look at (not counting wakeups).
    pub fn has_work(&self) -> bool {
        self.full || !self.dirty.is_empty() || self.rollouts.has_work() || self.upgrades.has_work()
    }

    /// Resume `configuration`'s halted rollout ([`Rollout::resume`]: from the batch it halted
    /// in, its failures so far excused). The next plan steps it and re-plans its agents.
    pub fn resume(&mut self, configuration: &str) -> Result<RolloutProgress, ResumeError> {
        self.rollouts.resume(configuration)
    }

    /// Take the config rollouts stepped elsewhere (the leader of several replicas steps them
    /// over the whole fleet) instead of stepping them here: from now on this planner admits
    /// by `rollouts` alone, and re-plans the agents of the configurations whose admission
    /// moved at the next plan.
    pub fn adopt_rollouts(&mut self, rollouts: BTreeMap<String, Rollout>) {
        self.rollouts.adopt(rollouts);
    }

    /// Take the upgrade rollouts stepped elsewhere, as [`Planner::adopt_rollouts`] does the
    /// config rollouts: a batch of an agent-version upgrade is admitted fleet-wide too.
    pub fn adopt_upgrades(&mut self, upgrades: BTreeMap<String, Rollout>) {
        self.upgrades.adopt(upgrades);
    }

    /// Whether this planner adopts rollouts stepped elsewhere ([`Planner::adopt_rollouts`]).
    pub fn adopts_rollouts(&self) -> bool {
        self.rollouts.adopting()
    }

    /// The earliest time (ms since the Unix epoch) some agent's plan asked to be looked at
    /// again: the caller plans then, if nothing else made it plan before.
    pub fn next_wake(&self) -> Option<u64> {
        self.wakeups.keys().next().copied()
    }

    /// Step the rollouts that need it and re-plan the agents that changed. Returns the keys of
    /// the agents re-planned (read their plans with [`Planner::agent`]); every other agent's
    /// plan is what it was.
    pub fn plan(&mut self, timing: Timing) -> Vec<K> {
        while let Some(entry) = self.wakeups.first_entry() {
            if *entry.key() > timing.now_ms {
                break;
            }
            for key in entry.remove() {
                if self.entries.contains_key(&key) {
                    self.dirty.insert(key);
                }
            }
        }
        let full = std::mem::take(&mut self.full);
        let admission_changed = self.step_rollouts(full);

        let keys: Vec<K> = if full {
            self.entries.keys().cloned().collect()
        } else {
            let mut keys: Vec<K> = self.dirty.iter().cloned().collect();
            if !admission_changed.is_empty() {
                keys.extend(
                    self.entries
                        .iter()
                        .filter(|(k, e)| {
                            !self.dirty.contains(*k)
                                && matches!(&e.selection, Selection::One(n) if admission_changed.contains(n))
                        })
                        .map(|(k, _)| k.clone()),
                );
            }
            keys
        };
        self.dirty.clear();
        for key in &keys {
            if let Some(entry) = self.entries.get_mut(key) {
                let (admitted, on_failure) = match &entry.selection {
                    Selection::One(name) => match self.desired.configurations.get(name) {
                        Some(c) => (
                            reached(
                                c,
                                self.rollouts.rollouts().get(name),
                                &entry.agent.instance_uid,
                            ),
                            c.on_failure(),
                        ),
                        None => (false, OnFailure::default()),
                    },
                    Selection::None | Selection::Conflict(_) => (false, OnFailure::default()),
                };
                let mut plan = plan_agent(
                    &entry.agent,
                    &entry.selection,
                    entry.desired_hash,
                    admitted,
                    on_failure,
                    timing,
                );
                if let Selection::One(name) = &entry.selection
                    && let Some(c) = self.desired.configurations.get(name)
                    && let Some(version) = &c.version
                {
                    let admitted = match self.upgrades.rollouts().get(name) {
                        Some(r) if r.target == version.target => {
                            r.admits(&entry.agent.instance_uid)
                        }
                        _ => c.rollout().strategy == RolloutStrategy::AllAtOnce,
                    };
                    let up = plan_upgrade(
                        &entry.agent,
                        version,
                        &self.desired.versions,
                        admitted,
                        on_failure,
                        timing,
                    );
                    plan.requeue_at = match (plan.requeue_at, up.requeue_at) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    plan.upgrade = Some(up);
                }
                let before = entry.plan.as_ref().and_then(|p| p.requeue_at);
                if let Some(at) = plan.requeue_at.filter(|at| before != Some(*at)) {
                    self.wakeups.entry(at).or_default().push(key.clone());
                }
                entry.plan = Some(plan);
            }
        }
        keys
    }

    /// One agent: its observed state (with what [`Planner::record`] folded in) and last plan.
    pub fn agent(&self, key: &K) -> Option<(&ObservedAgent, Option<&AgentPlan>)> {
        self.entries.get(key).map(|e| (&e.agent, e.plan.as_ref()))
    }

    /// Every agent's observed state.
    pub fn agents(&self) -> impl Iterator<Item = (&K, &ObservedAgent)> {
        self.entries.iter().map(|(k, e)| (k, &e.agent))
    }

    /// Fold the agent's last plan back into its state ([`AgentPlan::record`]: Synced on an
    /// acknowledged hash is remembered). If that changes its status it is re-planned at the
    /// next plan.
    pub fn record(&mut self, key: &K) {
        // Most plans change nothing: find out without copying the agent.
        let changes = self
            .entries
            .get(key)
            .and_then(|e| e.plan.as_ref().map(|p| p.records_sync(&e.agent)))
            .unwrap_or(false);
        if !changes {
            return;
        }
        let Some(mut entry) = self.unaccount(key) else {
            return;
        };
        if let Some(plan) = entry.plan.as_ref() {
            plan.record(&mut entry.agent);
        }
        self.account(key, entry);
        self.dirty.insert(key.clone());
    }

    /// A config went out to the agent: `hash` at `at_ms` on connection `on`
    /// ([`ObservedAgent::note_push`]). Its status moves (Pending to Applying): it is re-planned
    /// at the next plan.
    pub fn note_sent(&mut self, key: &K, hash: ConfigHash, at_ms: u64, on: Option<u64>) {
        let Some(mut entry) = self.unaccount(key) else {
            return;
        };
        entry.agent.note_push(hash, at_ms, on);
        self.account(key, entry);
        self.dirty.insert(key.clone());
    }

    /// A package offer went out to the agent: `all_hash` at `at_ms` on connection `on`
    /// ([`crate::plan::upgrade::AgentPackages::note_offer`]); it is re-planned at the next plan.
    pub fn note_offer(&mut self, key: &K, all_hash: ConfigHash, at_ms: u64, on: Option<u64>) {
        let Some(mut entry) = self.unaccount(key) else {
            return;
        };
        entry.agent.packages.note_offer(all_hash, at_ms, on);
        self.account(key, entry);
        self.dirty.insert(key.clone());
    }

    /// The upgrade rollouts (configuration name → rollout of its pinned version).
    pub fn upgrades(&self) -> &BTreeMap<String, Rollout> {
        self.upgrades.rollouts()
    }

    /// Every agent by status.
    pub fn summary(&self) -> &StatusCounts {
        &self.summary
    }

    /// How many agents are connected.
    pub fn connected(&self) -> usize {
        self.connected
    }

    /// Each configuration's counts and rollout, as of the last plan.
    pub fn configurations(&self) -> &BTreeMap<String, ConfigurationPlan> {
        &self.configurations
    }

    /// The rollouts (configuration name → rollout).
    pub fn rollouts(&self) -> &BTreeMap<String, Rollout> {
        self.rollouts.rollouts()
    }

    /// Rollouts superseded (a new hash, or their configuration is gone) since the last call.
    pub fn take_superseded(&mut self) -> Vec<Rollout> {
        self.rollouts.take_superseded()
    }

    fn reset_configurations(&mut self) {
        self.configurations = empty_configurations(&self.desired);
    }

    /// Count an entry in (status, configuration counts, rollout scope) and store it.
    fn account(&mut self, key: &K, mut entry: Box<Entry>) {
        entry.desired_hash = match &entry.selection {
            Selection::One(name) => self.desired.hash_of(name),
            Selection::None | Selection::Conflict(_) => None,
        };
        entry.status = sync_status(&entry.agent, &entry.selection, entry.desired_hash);
        entry.upgrade = None;
        if let Selection::One(name) = &entry.selection
            && let Some(version) = self
                .desired
                .configurations
                .get(name)
                .and_then(|c| c.version.as_ref())
        {
            let status = upgrade_status(&entry.agent, version);
            entry.upgrade = Some(status);
            if let Some(progress) = upgrade_progress(&entry.agent, version, status) {
                self.upgrades.set(name, &entry.agent.instance_uid, progress);
            }
        }
        self.summary.add(entry.status);
        self.connected += usize::from(entry.agent.connected);
        match &entry.selection {
            Selection::One(name) => {
                if let Some(c) = self.configurations.get_mut(name) {
                    c.counts.add(entry.status);
                }
                if entry.desired_hash.is_some() && entry.status != SyncStatus::Incompatible {
                    let progress =
                        AgentProgress::of(&entry.agent, entry.status, entry.desired_hash);
                    self.rollouts.set(name, &entry.agent.instance_uid, progress);
                }
            }
            Selection::Conflict(names) => {
                for n in names {
                    if let Some(c) = self.configurations.get_mut(n) {
                        c.counts.add(SyncStatus::Conflict);
                    }
                }
            }
            Selection::None => {}
        }
        self.entries.insert(key.clone(), entry);
    }

    /// Take an entry out of the counts and its rollout scope; returns it.
    fn unaccount(&mut self, key: &K) -> Option<Box<Entry>> {
        let entry = self.entries.remove(key)?;
        self.summary.remove(entry.status);
        if let (Some(_), Selection::One(name)) = (entry.upgrade, &entry.selection) {
            self.upgrades.remove(name, &entry.agent.instance_uid);
        }
        self.connected -= usize::from(entry.agent.connected);
        match &entry.selection {
            Selection::One(name) => {
                if let Some(c) = self.configurations.get_mut(name) {
                    c.counts.remove(entry.status);
                }
                self.rollouts.remove(name, &entry.agent.instance_uid);
            }
            Selection::Conflict(names) => {
                for n in names {
                    if let Some(c) = self.configurations.get_mut(n) {
                        c.counts.remove(SyncStatus::Conflict);
                    }
                }
            }
            Selection::None => {}
        }
        Some(entry)
    }

    /// Start, supersede and step the config rollouts (and the upgrade rollouts, none of which
    /// is persisted or reported superseded: see `upgrades`) whose scope changed, all of them
    /// on a full plan. Returns the configurations whose admission changed.
    fn step_rollouts(&mut self, full: bool) -> HashSet<String> {
        let upgrade_targets = self.desired.configurations.values().filter_map(|c| {
            c.version.as_ref().map(|v| Target {
                name: c.name(),
                hash: v.target,
                policy: c.rollout(),
            })
        });
        let upgrades = self.upgrades.step(upgrade_targets, full, false);
        for (name, rollout) in self.upgrades.rollouts() {
            if let Some(cp) = self.configurations.get_mut(name) {
                cp.upgrade = Some(rollout.progress());
            }
        }
        let targets = self.desired.configurations.values().filter_map(|c| {
            c.hash.map(|hash| Target {
                name: c.name(),
                hash,
                policy: c.rollout(),
            })
        });
        let stepped = self.rollouts.step(targets, full, true);
        for (name, decision) in stepped.decisions {
            if let Some(cp) = self.configurations.get_mut(&name) {
                cp.decision = Some(decision);
            }
        }
        for c in self.desired.configurations.values() {
            let Some(hash) = c.hash else { continue };
            if let (Some(cp), Some(rollout)) = (
                self.configurations.get_mut(c.name()),
                self.rollouts.rollouts().get(c.name()),
            ) && rollout.target == hash
            {
                cp.rollout = Some(rollout.progress());
            }
        }
        let mut admission_changed = upgrades.admission_changed;
        admission_changed.extend(stepped.admission_changed);
        admission_changed
    }
}

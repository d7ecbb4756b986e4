//! How a new desired hash of one configuration reaches its agents: a state machine that is pure
//! data, so the store can persist it and a restarted server resumes where it stopped.
//!
//! One [`Rollout`] exists per (configuration, desired hash). When the configuration's hash
//! changes, a new rollout replaces the old one whatever its phase (so a new revision supersedes a
//! halted rollout; a revision that leaves the hash unchanged keeps it halted, since the same
//! bytes would fail the same way). Agents not admitted keep their previous config.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use indexmap::IndexSet;
use serde::{Deserialize, Serialize};

use crate::catalog::model::{RolloutPolicy, RolloutStrategy};
use crate::config_map::ConfigHash;
use crate::plan::observed::ObservedAgent;
use crate::plan::status::SyncStatus;

/// A rollout's agents in admission order (uids), shared between the rollouts that hold it.
pub type MemberList = IndexSet<String>;

/// What the rollout needs to know of one agent in its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentProgress {
    /// Its sync status against the rollout's target.
    pub status: SyncStatus,
    /// Last reported health; `Some(false)` on a Synced agent holds the next batch back.
    pub healthy: Option<bool>,
    /// It reported FAILED for the rollout's target at some point. A failure even while it is
    /// disconnected: after a restart the agents reconnect one by one, and a rollout that saw
    /// the failed agent as merely absent would admit the next batch.
    pub failed_target: bool,
}

impl AgentProgress {
    /// What the rollout needs of `agent`, whose status against `target` is `status`.
    pub fn of(agent: &ObservedAgent, status: SyncStatus, target: Option<ConfigHash>) -> Self {
        AgentProgress {
            status,
            healthy: agent.healthy,
            failed_target: target.is_some_and(|h| agent.failed_hashes.contains(&h)),
        }
    }
}

impl From<SyncStatus> for AgentProgress {
    fn from(status: SyncStatus) -> Self {
        AgentProgress {
            status,
            healthy: None,
            failed_target: false,
        }
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "phase")]
pub enum RolloutPhase {
    /// Batches are being admitted.
    Progressing,
    /// Every agent is admitted and none is still applying; agents that join later are admitted
    /// at once.
    Complete,
    /// Too many failures: nothing more is pushed for this hash until a new hash supersedes the
    /// rollout or an operator resumes it.
    Halted {
        /// Why, for people.
        reason: String,
    },
    /// Replaced by a newer desired hash (`None`: the configuration left the repository).
    Superseded {
        /// The hash that replaced it.
        by: Option<ConfigHash>,
    },
}

/// What one [`Rollout::step`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "decision")]
pub enum RolloutDecision {
    /// New agents were admitted; `batch` is the index of the last batch admitted.
    Advanced {
        /// Index of the last batch admitted.
        batch: usize,
        /// Agents admitted so far.
        admitted: usize,
    },
    /// Admitted agents are still applying (`in_flight`) or report unhealthy (`unhealthy`).
    Waiting {
        /// Admitted agents still applying.
        in_flight: usize,
        /// Admitted agents that report unhealthy.
        unhealthy: usize,
    },
    /// Failures exceed the threshold; nothing more is admitted.
    Halted {
        /// Why, for people.
        reason: String,
    },
    /// Every agent admitted, none in flight.
    Complete,
}

/// One configuration's rollout of one desired hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The configuration rolled out.
    pub configuration: String,
    /// The hash it rolls out.
    pub target: ConfigHash,
    /// Its rollout policy (batches, failures tolerated, what a failed agent gets).
    pub policy: RolloutPolicy,
    /// Agents in scope, in admission order: sorted by uid when the rollout starts, later joiners
    /// appended (sorted among themselves). An `IndexSet` so `admits` is O(1); shared, because
    /// replicas adopt the leader's rollouts every few seconds and the list (every agent of the
    /// fleet) rarely changes. Left out of the JSON when empty: a store keeps the list apart
    /// from the counts ([`Rollout::members_json`]).
    #[serde(default, skip_serializing_if = "no_members")]
    pub agents: Arc<MemberList>,
    /// `agents[..admitted]` are admitted: batches are prefixes of the order, so this is one
    /// number rather than a set of 100k uids.
    pub admitted: usize,
    /// Batches admitted so far (0 before the first).
    pub batch: usize,
    /// Agents in scope that run the target.
    pub synced: usize,
    /// Agents in scope that failed it (or were rolled back from it), not counting the excused:
    /// what `maxFailures` is held against.
    pub failed: usize,
    /// Agents whose failure an operator excused by resuming the halted rollout
    /// ([`Rollout::resume`]): they keep their status (and are never sent the target again), but
    /// no longer count as failures.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub excused: BTreeSet<String>,
    /// In scope, neither synced nor failed (not admitted, applying, disconnected, ...).
    pub pending: usize,
    /// Where it stands.
    pub phase: RolloutPhase,
}

/// How `step` sees one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Synced and not reported unhealthy.
    Done,
    /// Synced but `healthy == Some(false)`: holds the next batch back, is not a failure.
    Unhealthy,
    Failed,
    /// Pending or Applying: the batch is not finished.
    InFlight,
    /// Drifted (it applied this hash once), Disconnected, or no longer managed by this
    /// configuration: neither blocks the batch nor counts as a failure.
    Inert,
}

fn classify(p: AgentProgress) -> Class {
    if p.failed_target {
        return Class::Failed;
    }
    match p.status {
        SyncStatus::Synced if p.healthy == Some(false) => Class::Unhealthy,
        SyncStatus::Synced => Class::Done,
        SyncStatus::Failed | SyncStatus::RolledBack => Class::Failed,
        SyncStatus::Pending | SyncStatus::Applying => Class::InFlight,
        SyncStatus::Drifted
        | SyncStatus::Disconnected
        | SyncStatus::Unmanaged
        | SyncStatus::Conflict
        | SyncStatus::Incompatible => Class::Inert,
    }
}

impl Rollout {
    /// Start a rollout of `target`. The scope is filled by the first [`Rollout::step`].
    pub fn new(
        configuration: impl Into<String>,
        target: ConfigHash,
        policy: RolloutPolicy,
    ) -> Self {
        Rollout {
            configuration: configuration.into(),
            target,
            policy,
            agents: Arc::default(),
            admitted: 0,
            batch: 0,
            synced: 0,
            failed: 0,
            excused: BTreeSet::new(),
            pending: 0,
            phase: RolloutPhase::Progressing,
        }
    }

    /// May `uid` be pushed the target now? O(1).
    ///
    /// Halted and superseded rollouts admit nobody. A complete rollout, or an all-at-once one,
    /// admits everyone, including agents it has not seen yet. A batched rollout admits the
    /// agents of its admitted batches; an unknown agent waits until a step appends it.
    pub fn admits(&self, uid: &str) -> bool {
        match self.phase {
            RolloutPhase::Halted { .. } | RolloutPhase::Superseded { .. } => false,
            RolloutPhase::Complete => true,
            RolloutPhase::Progressing => match self.policy.strategy {
                RolloutStrategy::AllAtOnce => true,
                RolloutStrategy::Batched => self
                    .agents
                    .get_index_of(uid)
                    .is_some_and(|i| i < self.admitted),
            },
        }
    }

    /// Failures tolerated for the current scope (default 0: the first failure halts).
    pub fn max_failures(&self) -> usize {
        self.policy.max_failures_for(self.agents.len())
    }

    /// Agents per batch for the current scope (default 1, never 0 so a rollout always moves).
    pub fn batch_size(&self) -> usize {
        self.policy.batch_size_for(self.agents.len())
    }

    /// Operator action: resume a halted rollout from the batch it halted in, without a new
    /// commit. The agents that failed the target so far (by `statuses`, as [`Rollout::step`]
    /// reads them) are excused: they keep their status until they report otherwise and are
    /// never sent the target again, but no longer count towards `maxFailures`, so the failure
    /// count starts again from zero; a new failure counts as usual. Returns false, changing
    /// nothing, when the rollout is not halted.
    pub fn resume<K: Borrow<str> + Ord>(&mut self, statuses: &BTreeMap<K, AgentProgress>) -> bool {
        if !matches!(self.phase, RolloutPhase::Halted { .. }) {
            return false;
        }
        self.sync_scope(statuses);
        let failed: Vec<String> = self
            .agents
            .iter()
            .filter(|uid| {
                statuses
                    .get(uid.as_str())
                    .is_some_and(|p| classify(*p) == Class::Failed)
            })
            .cloned()
            .collect();
        self.excused.extend(failed);
        self.phase = RolloutPhase::Progressing;
        true
    }

    /// Advance the state machine from the statuses of the agents this configuration selects
    /// (keys: uids; values computed by [`crate::plan::status::sync_status`] for this target).
    ///
    /// - The scope follows the map: uids not yet in scope are appended in uid order, uids gone
    ///   from the map (deregistered, re-labelled) are dropped, keeping the order of the rest.
    /// - Failed agents anywhere in scope are counted; more than `max_failures` halts.
    /// - All-at-once admits every agent; batched admits the next batch only when every admitted
    ///   agent is finished (Synced and not unhealthy, Failed within the threshold, or inert), and
    ///   keeps admitting while a newly admitted batch is already finished, so a fleet that is
    ///   already on the target completes in one step.
    /// - Complete once every agent is admitted and none is in flight.
    ///
    /// Cost: O(n log n) in the scope, once per fleet plan; never called per agent report.
    pub fn step<K: Borrow<str> + Ord>(
        &mut self,
        statuses: &BTreeMap<K, AgentProgress>,
    ) -> RolloutDecision {
        self.sync_scope(statuses);
        let classes: Vec<Class> = self
            .agents
            .iter()
            .map(|uid| {
                statuses
                    .get(uid.as_str())
                    .map_or(Class::Inert, |p| classify(*p))
            })
            .collect();
        self.recount(&classes);

        match &self.phase {
            RolloutPhase::Halted { reason } => {
                return RolloutDecision::Halted {
                    reason: reason.clone(),
                };
            }
            RolloutPhase::Superseded { .. } => {
                return RolloutDecision::Halted {
                    reason: "superseded".into(),
                };
            }
            RolloutPhase::Progressing | RolloutPhase::Complete => {}
        }
        let max = self.max_failures();
        if self.failed > max {
            let reason = format!(
                "{} agent(s) failed to apply {}, more than the {} tolerated",
                self.failed,
                self.target.short(),
                max
            );
            self.phase = RolloutPhase::Halted {
                reason: reason.clone(),
            };
            return RolloutDecision::Halted { reason };
        }

        let total = self.agents.len();
        let before = self.admitted;
        let batched = self.policy.strategy == RolloutStrategy::Batched
            && self.phase == RolloutPhase::Progressing;
        if !batched {
            if self.admitted < total {
                self.admitted = total;
                self.batch = self.batch.max(1);
            }
        } else {
            // Tally of the admitted prefix, extended incrementally: O(n) overall.
            let mut in_flight = 0;
            let mut unhealthy = 0;
            let tally = |c: Class, f: &mut usize, u: &mut usize| match c {
                Class::InFlight => *f += 1,
                Class::Unhealthy => *u += 1,
                Class::Done | Class::Failed | Class::Inert => {}
            };
            for c in &classes[..self.admitted] {
                tally(*c, &mut in_flight, &mut unhealthy);
            }
            let size = self.batch_size();
            while in_flight == 0 && unhealthy == 0 && self.admitted < total {
                let end = (self.admitted + size).min(total);
                for c in &classes[self.admitted..end] {
                    tally(*c, &mut in_flight, &mut unhealthy);
                }
                self.admitted = end;
                self.batch += 1;
            }
            if self.admitted < total || in_flight > 0 {
                if self.admitted > before {
                    return RolloutDecision::Advanced {
                        batch: self.batch,
                        admitted: self.admitted - before,
                    };
                }
                return RolloutDecision::Waiting {
                    in_flight,
                    unhealthy,
                };
            }
        }
        let in_flight = classes.iter().filter(|c| **c == Class::InFlight).count();
        if in_flight == 0 {
            self.phase = RolloutPhase::Complete;
            RolloutDecision::Complete
        } else if self.admitted > before {
            RolloutDecision::Advanced {
                batch: self.batch,
                admitted: self.admitted - before,
            }
        } else {
            RolloutDecision::Waiting {
                in_flight,
                unhealthy: classes.iter().filter(|c| **c == Class::Unhealthy).count(),
            }
        }
    }

    /// Make the scope the keys of `statuses`, keeping the order and admission of agents that stay.
    fn sync_scope<K: Borrow<str> + Ord>(&mut self, statuses: &BTreeMap<K, AgentProgress>) {
        // Agents are unique: as many as the statuses, all among them, is the same scope. The
        // usual case, and the shared list is then not copied.
        if self.agents.len() == statuses.len()
            && self
                .agents
                .iter()
                .all(|uid| statuses.contains_key(uid.as_str()))
        {
            return;
        }
        let agents = Arc::make_mut(&mut self.agents);
        let mut admitted_kept = 0;
        let mut index = 0;
        let admitted = self.admitted;
        agents.retain(|uid| {
            let keep = statuses.contains_key(uid.as_str());
            if keep && index < admitted {
                admitted_kept += 1;
            }
            index += 1;
            keep
        });
        self.admitted = admitted_kept;
        // BTreeMap keys iterate sorted: joiners are appended in uid order.
        for uid in statuses.keys() {
            if !agents.contains(uid.borrow()) {
                agents.insert(uid.borrow().to_string());
            }
        }
    }

    /// The rollout without its member list, as JSON: what changes at every step, written
    /// apart from [`Rollout::members_json`]. Read back with [`Rollout::from_json`].
    pub fn progress_json(&self) -> Result<String, serde_json::Error> {
        let bare = Rollout {
            agents: Arc::default(),
            ..self.clone()
        };
        serde_json::to_string(&bare)
    }

    /// The member list as a JSON array, in admission order.
    pub fn members_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(&*self.agents)
    }

    /// A fingerprint of the member list (its order included): whether it changed since it was
    /// last written, without keeping a copy.
    pub fn members_fingerprint(&self) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        self.agents.len().hash(&mut h);
        for uid in self.agents.iter() {
            uid.hash(&mut h);
        }
        h.finish()
    }

    /// A rollout read back from [`Rollout::progress_json`] and the member list, either as JSON
    /// (`Members::Json`) or already parsed and shared (`Members::Shared`). A progress written
    /// whole (members included, as before they were kept apart) keeps its own list when
    /// `members` is `Members::None`.
    pub fn from_json(progress: &str, members: Members<'_>) -> Result<Rollout, serde_json::Error> {
        let mut rollout: Rollout = serde_json::from_str(progress)?;
        match members {
            Members::None => {}
            Members::Json(text) => rollout.agents = Arc::new(serde_json::from_str(text)?),
            Members::Shared(agents) => rollout.agents = agents,
        }
        Ok(rollout)
    }
}

/// Where [`Rollout::from_json`] takes the member list from.
#[derive(Debug, Clone)]
pub enum Members<'a> {
    /// From the progress itself (written whole).
    None,
    /// From this JSON array.
    Json(&'a str),
    /// This list, parsed before (shared, not copied).
    Shared(Arc<MemberList>),
}

fn no_members(agents: &Arc<MemberList>) -> bool {
    agents.is_empty()
}

impl Rollout {
    fn recount(&mut self, classes: &[Class]) {
        self.synced = classes
            .iter()
            .filter(|c| matches!(c, Class::Done | Class::Unhealthy))
            .count();
        let failed = classes.iter().filter(|c| **c == Class::Failed).count();
        let excused = if self.excused.is_empty() {
            0
        } else {
            self.agents
                .iter()
                .zip(classes)
                .filter(|(uid, c)| **c == Class::Failed && self.excused.contains(*uid))
                .count()
        };
        self.failed = failed - excused;
        self.pending = classes.len() - self.synced - failed;
    }

    /// A compact view for the status API and the fleet plan.
    pub fn progress(&self) -> RolloutProgress {
        RolloutProgress {
            target: self.target,
            phase: self.phase.clone(),
            batch: self.batch,
            admitted: self.admitted,
            total: self.agents.len(),
            synced: self.synced,
            failed: self.failed,
            excused: self.excused.len(),
            pending: self.pending,
        }
    }
}

/// A rollout without its agent list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutProgress {
    /// The hash rolled out.
    pub target: ConfigHash,
    /// Where it stands.
    pub phase: RolloutPhase,
    /// Batches admitted so far.
    pub batch: usize,
    /// Agents admitted so far.
    pub admitted: usize,
    /// Agents in scope.
    pub total: usize,
    /// Agents that run the target.
    pub synced: usize,
    /// Agents that failed it, not counting the excused.
    pub failed: usize,
    /// Agents whose failure an operator excused by resuming the rollout.
    #[serde(default)]
    pub excused: usize,
    /// Agents neither synced nor failed.
    pub pending: usize,
}

//! Every configuration's rollout over its scope, kept current as agents move: the one place
//! rollouts are started, superseded, stepped and resumed.
//!
//! The [`Planner`](crate::plan::Planner) keeps two books (configs and agent versions) over the
//! agents it holds. Several replicas on one database keep one more: the leader's book over the
//! whole fleet (fed from the shared store), whose rollouts every replica's planner **adopts**
//! ([`RolloutBook::adopt`]) instead of stepping its own, so a batch is admitted fleet-wide.
//! Either way admission is decided by [`Rollout::step`] alone.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::catalog::model::RolloutPolicy;
use crate::config_map::ConfigHash;
use crate::plan::rollout::{
    AgentProgress, Rollout, RolloutDecision, RolloutPhase, RolloutProgress,
};

/// Why [`RolloutBook::resume`] resumed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// The configuration has no rollout: it is not served, or did not render.
    #[error("the configuration has no rollout")]
    NoRollout,
    /// Its rollout is not halted (it is progressing, complete or superseded): as it stands.
    #[error("its rollout is not halted")]
    NotHalted(Box<RolloutProgress>),
    /// Another process steps this rollout (the leader of several replicas): ask it.
    #[error("rollouts are stepped by the leading replica")]
    SteppedElsewhere,
}

/// One configuration's rollout target, as the desired state gives it.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The configuration.
    pub name: &'a str,
    /// The hash it rolls out (a config hash, or an agent version's all-packages hash).
    pub hash: ConfigHash,
    /// Its rollout policy.
    pub policy: RolloutPolicy,
}

/// What one [`RolloutBook::step`] changed.
#[derive(Debug, Default)]
pub struct Stepped {
    /// Configurations whose admission changed: their agents must be planned again.
    pub admission_changed: HashSet<String>,
    /// The decision of each rollout stepped.
    pub decisions: BTreeMap<String, RolloutDecision>,
}

/// Rollouts and the scopes they are stepped over.
#[derive(Debug, Default)]
pub struct RolloutBook {
    rollouts: BTreeMap<String, Rollout>,
    /// Per configuration, every agent in its rollout's scope by instance UID.
    scopes: HashMap<String, BTreeMap<String, AgentProgress>>,
    /// Configurations whose scope changed since the last step.
    scope_changed: HashSet<String>,
    /// Configurations whose rollout an operator resumed since the last step.
    resumed: HashSet<String>,
    /// Rollouts superseded since the last [`RolloutBook::take_superseded`].
    superseded: Vec<Rollout>,
    /// Rollouts are stepped elsewhere and handed in by [`RolloutBook::adopt`].
    adopting: bool,
    /// Configurations whose adopted rollout changed since the last step.
    adopted: HashSet<String>,
}

impl RolloutBook {
    /// A book resuming `rollouts` (configuration name → rollout, as persisted).
    pub fn new(rollouts: BTreeMap<String, Rollout>) -> Self {
        RolloutBook {
            rollouts,
            ..RolloutBook::default()
        }
    }

    /// The rollouts (configuration name → rollout).
    pub fn rollouts(&self) -> &BTreeMap<String, Rollout> {
        &self.rollouts
    }

    /// Whether the next step has something to look at.
    pub fn has_work(&self) -> bool {
        !self.scope_changed.is_empty() || !self.resumed.is_empty() || !self.adopted.is_empty()
    }

    /// Whether this book adopts rollouts stepped elsewhere.
    pub fn adopting(&self) -> bool {
        self.adopting
    }

    /// Put `uid` in `configuration`'s scope with `progress` (replacing what it had).
    pub fn set(&mut self, configuration: &str, uid: &str, progress: AgentProgress) {
        // Clone the names only when a map needs a new key: this runs for every agent a plan
        // records.
        let scope = match self.scopes.get_mut(configuration) {
            Some(s) => s,
            None => self.scopes.entry(configuration.to_string()).or_default(),
        };
        let old = match scope.get_mut(uid) {
            Some(p) => Some(std::mem::replace(p, progress)),
            None => scope.insert(uid.to_string(), progress),
        };
        if old != Some(progress) && !self.scope_changed.contains(configuration) {
            self.scope_changed.insert(configuration.to_string());
        }
    }

    /// Take `uid` out of `configuration`'s scope.
    pub fn remove(&mut self, configuration: &str, uid: &str) {
        if let Some(scope) = self.scopes.get_mut(configuration)
            && scope.remove(uid).is_some()
            && !self.scope_changed.contains(configuration)
        {
            self.scope_changed.insert(configuration.to_string());
        }
    }

    /// Forget every scope (a new revision selects every agent again).
    pub fn clear_scopes(&mut self) {
        self.scopes.clear();
    }

    /// `configuration`'s scope.
    pub fn scope(&self, configuration: &str) -> Option<&BTreeMap<String, AgentProgress>> {
        self.scopes.get(configuration)
    }

    /// Rollouts superseded (a new hash, or their configuration is gone) since the last call.
    pub fn take_superseded(&mut self) -> Vec<Rollout> {
        std::mem::take(&mut self.superseded)
    }

    /// Operator action: resume `configuration`'s halted rollout ([`Rollout::resume`]); the next
    /// step steps it and reports its admission changed.
    pub fn resume(&mut self, configuration: &str) -> Result<RolloutProgress, ResumeError> {
        if self.adopting {
            let rollout = self
                .rollouts
                .get(configuration)
                .ok_or(ResumeError::NoRollout)?;
            return Err(match rollout.phase {
                RolloutPhase::Halted { .. } => ResumeError::SteppedElsewhere,
                _ => ResumeError::NotHalted(Box::new(rollout.progress())),
            });
        }
        let empty = BTreeMap::new();
        let scope = self.scopes.get(configuration).unwrap_or(&empty);
        let rollout = self
            .rollouts
            .get_mut(configuration)
            .ok_or(ResumeError::NoRollout)?;
        if !rollout.resume(scope) {
            return Err(ResumeError::NotHalted(Box::new(rollout.progress())));
        }
        self.resumed.insert(configuration.to_string());
        Ok(rollout.progress())
    }

    /// From now on, take the rollouts stepped elsewhere: `rollouts` replace this book's, and
    /// the configurations whose admission moved are reported by the next step.
    pub fn adopt(&mut self, rollouts: BTreeMap<String, Rollout>) {
        if !self.adopting {
            self.adopting = true;
            self.adopted.extend(self.rollouts.keys().cloned());
        }
        for name in self.rollouts.keys() {
            if !rollouts.contains_key(name) {
                self.adopted.insert(name.clone());
            }
        }
        for (name, new) in &rollouts {
            let moved = self.rollouts.get(name).is_none_or(|old| {
                old.target != new.target
                    || old.admitted != new.admitted
                    || old.phase != new.phase
                    || old.agents != new.agents
            });
            if moved {
                self.adopted.insert(name.clone());
            }
        }
        self.rollouts = rollouts;
    }

    /// Bring the rollouts in line with `targets` and step those that need it (all of them when
    /// `full`):
    ///
    /// - a rollout whose configuration is no longer a target is dropped, one whose target moved
    ///   is replaced by a new one; both are kept for [`RolloutBook::take_superseded`] when
    ///   `report_superseded`;
    /// - a rollout is stepped when it is new, resumed, or its scope changed.
    ///
    /// An adopting book starts and steps nothing: it reports the configurations whose adopted
    /// rollout moved (a rollout for another target than `targets` says is not used; see
    /// [`crate::plan::fleet_plan`]'s `reached`).
    pub fn step<'a>(
        &mut self,
        targets: impl IntoIterator<Item = Target<'a>>,
        full: bool,
        report_superseded: bool,
    ) -> Stepped {
        let mut stepped = Stepped::default();
        let scope_changed = std::mem::take(&mut self.scope_changed);
        let resumed = std::mem::take(&mut self.resumed);
        if self.adopting {
            let adopted = std::mem::take(&mut self.adopted);
            for t in targets {
                if full || adopted.contains(t.name) {
                    stepped.admission_changed.insert(t.name.to_string());
                }
            }
            return stepped;
        }
        let targets: Vec<Target<'a>> = targets.into_iter().collect();
        let stale: Vec<String> = self
            .rollouts
            .keys()
            .filter(|name| !targets.iter().any(|t| t.name == name.as_str()))
            .cloned()
            .collect();
        for name in stale {
            if let Some(mut old) = self.rollouts.remove(&name) {
                old.phase = RolloutPhase::Superseded { by: None };
                if report_superseded {
                    self.superseded.push(old);
                }
            }
        }
        let empty = BTreeMap::new();
        for t in targets {
            let fresh = match self.rollouts.get_mut(t.name) {
                Some(r) if r.target == t.hash => {
                    r.policy = t.policy;
                    false
                }
                _ => {
                    let new = Rollout::new(t.name, t.hash, t.policy);
                    if let Some(mut old) = self.rollouts.insert(t.name.to_string(), new) {
                        old.phase = RolloutPhase::Superseded { by: Some(t.hash) };
                        if report_superseded {
                            self.superseded.push(old);
                        }
                    }
                    true
                }
            };
            let resumed = resumed.contains(t.name);
            if !(full || fresh || resumed || scope_changed.contains(t.name)) {
                continue;
            }
            let Some(rollout) = self.rollouts.get_mut(t.name) else {
                continue;
            };
            let before = (rollout.admitted, rollout.phase.clone());
            let decision = rollout.step(self.scopes.get(t.name).unwrap_or(&empty));
            if fresh || resumed || before != (rollout.admitted, rollout.phase.clone()) {
                stepped.admission_changed.insert(t.name.to_string());
            }
            stepped.decisions.insert(t.name.to_string(), decision);
        }
        stepped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::model::RolloutStrategy;
    use crate::plan::status::SyncStatus;

    fn batched(size: u64) -> RolloutPolicy {
        RolloutPolicy {
            strategy: RolloutStrategy::Batched,
            batch_size: Some(crate::catalog::model::Quantity::Count(size)),
            ..RolloutPolicy::default()
        }
    }

    fn progress(status: SyncStatus) -> AgentProgress {
        AgentProgress {
            status,
            healthy: None,
            failed_target: false,
        }
    }

    fn target(hash: u8, size: u64) -> Target<'static> {
        Target {
            name: "c",
            hash: ConfigHash([hash; 32]),
            policy: batched(size),
        }
    }

    #[test]
    fn a_book_steps_batches_over_its_scope_and_an_adopting_one_takes_them() {
        let mut leader = RolloutBook::default();
        for uid in ["a", "b", "c", "d"] {
            leader.set("c", uid, progress(SyncStatus::Pending));
        }
        let s = leader.step([target(1, 2)], false, true);
        assert!(s.admission_changed.contains("c"));
        assert_eq!(leader.rollouts()["c"].admitted, 2);

        let mut follower = RolloutBook::default();
        follower.set("c", "a", progress(SyncStatus::Pending));
        follower.adopt(leader.rollouts().clone());
        let s = follower.step([target(1, 2)], false, true);
        assert!(
            s.admission_changed.contains("c"),
            "the adopted rollout is news"
        );
        assert!(s.decisions.is_empty(), "an adopting book steps nothing");
        assert!(follower.rollouts()["c"].admits("b"));
        assert!(!follower.rollouts()["c"].admits("c"));
        assert!(
            matches!(follower.resume("c"), Err(ResumeError::NotHalted(_))),
            "a progressing rollout has nothing to resume"
        );
        let mut halted = leader.rollouts().clone();
        if let Some(r) = halted.get_mut("c") {
            r.phase = RolloutPhase::Halted {
                reason: "test".into(),
            };
        }
        let mut other = RolloutBook::default();
        other.adopt(halted);
        assert_eq!(
            other.resume("c"),
            Err(ResumeError::SteppedElsewhere),
            "only the book that steps resumes a halted rollout"
        );

        // Its own scope changing moves nothing; the same rollout adopted again is no news.
        follower.set("c", "b", progress(SyncStatus::Synced));
        follower.adopt(leader.rollouts().clone());
        assert!(
            follower
                .step([target(1, 2)], false, true)
                .admission_changed
                .is_empty()
        );

        // The leader's next batch is.
        leader.set("c", "a", progress(SyncStatus::Synced));
        leader.set("c", "b", progress(SyncStatus::Synced));
        leader.step([target(1, 2)], false, true);
        assert_eq!(leader.rollouts()["c"].admitted, 4);
        follower.adopt(leader.rollouts().clone());
        assert!(
            follower
                .step([target(1, 2)], false, true)
                .admission_changed
                .contains("c")
        );
        assert!(follower.rollouts()["c"].admits("d"));
    }

    #[test]
    fn a_new_target_supersedes_and_a_gone_configuration_drops_the_rollout() {
        let mut book = RolloutBook::default();
        book.set("c", "a", progress(SyncStatus::Pending));
        book.step([target(1, 1)], false, true);
        book.step([target(2, 1)], false, true);
        let superseded = book.take_superseded();
        assert_eq!(superseded.len(), 1);
        assert_eq!(
            superseded[0].phase,
            RolloutPhase::Superseded {
                by: Some(ConfigHash([2; 32]))
            }
        );
        book.step([], false, false);
        assert!(book.rollouts().is_empty());
        assert!(
            book.take_superseded().is_empty(),
            "not reported when not asked"
        );
    }
}

//! The whole fleet in one call ([`plan`]), and one agent on each of its reports ([`plan_one`]).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::catalog::model::OnFailure;
use crate::catalog::model::RolloutStrategy;
use crate::config_map::ConfigHash;
use crate::plan::desired::{Desired, DesiredConfig};
use crate::plan::observed::ObservedAgent;
use crate::plan::rollout::{
    AgentProgress, Rollout, RolloutDecision, RolloutPhase, RolloutProgress,
};
use crate::plan::select::Selection;
use crate::plan::selector::Labels;
use crate::plan::status::{StatusCounts, SyncStatus, sync_status};
use crate::plan::{AgentPlan, Timing, plan_agent};

/// One configuration's share of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigurationPlan {
    /// The configuration's name.
    pub name: String,
    /// Its rendered config's hash (`None`: it did not render).
    pub hash: Option<ConfigHash>,
    /// Agents it selects, by status; `conflict` counts agents it ties for.
    pub counts: StatusCounts,
    /// Its rollout's progress.
    pub rollout: Option<RolloutProgress>,
    /// What this plan's rollout step decided.
    pub decision: Option<RolloutDecision>,
    /// The rollout of its pinned agent version, if it pins one (the incremental planner only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<RolloutProgress>,
}

/// The plan for a fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetPlan {
    /// The revision planned against.
    pub revision: String,
    /// One per agent, in input order.
    pub agents: Vec<AgentPlan>,
    /// Each configuration's share, by name.
    pub configurations: BTreeMap<String, ConfigurationPlan>,
    /// Every agent, by status.
    pub summary: StatusCounts,
    /// Rollouts replaced by a new hash, or whose configuration left the repository, with phase
    /// `Superseded`: for the store's history and the event log.
    pub superseded: Vec<Rollout>,
}

/// Plan the whole fleet against one revision, stepping every configuration's rollout.
///
/// `rollouts` (configuration name → rollout) is the persisted state: a rollout whose target is
/// not the configuration's desired hash is superseded by a new one; rollouts of configurations
/// that are gone or unrendered are removed. Selection runs once per distinct label set, so 100k
/// agents with 10 label sets cost 10 selections. Deterministic: same inputs, same plan.
pub fn plan(
    desired: &Desired,
    agents: &[ObservedAgent],
    rollouts: &mut BTreeMap<String, Rollout>,
    timing: Timing,
) -> FleetPlan {
    let mut cache: HashMap<&Labels, Selection> = HashMap::new();
    for a in agents {
        if !cache.contains_key(&a.labels) {
            cache.insert(&a.labels, desired.select(&a.labels));
        }
    }
    let selection_of = |a: &ObservedAgent| -> &Selection {
        // Every label set was inserted above; `None` is unreachable but stays total.
        cache.get(&a.labels).unwrap_or(&Selection::None)
    };

    let mut configurations = empty_configurations(desired);
    let mut summary = StatusCounts::default();
    let mut scopes: BTreeMap<&str, BTreeMap<&str, AgentProgress>> = BTreeMap::new();
    for a in agents {
        let selection = selection_of(a);
        let hash = match selection {
            Selection::One(name) => desired.hash_of(name),
            Selection::None | Selection::Conflict(_) => None,
        };
        let status = sync_status(a, selection, hash);
        summary.add(status);
        match selection {
            Selection::One(name) => {
                if let Some(c) = configurations.get_mut(name) {
                    c.counts.add(status);
                }
                if hash.is_some() && status != SyncStatus::Incompatible {
                    scopes
                        .entry(name.as_str())
                        .or_default()
                        .insert(a.instance_uid.as_str(), AgentProgress::of(a, status, hash));
                }
            }
            Selection::Conflict(names) => {
                for n in names {
                    if let Some(c) = configurations.get_mut(n) {
                        c.counts.add(SyncStatus::Conflict);
                    }
                }
            }
            Selection::None => {}
        }
    }

    let mut superseded = Vec::new();
    let stale: Vec<String> = rollouts
        .keys()
        .filter(|name| desired.hash_of(name).is_none())
        .cloned()
        .collect();
    for name in stale {
        if let Some(mut old) = rollouts.remove(&name) {
            old.phase = RolloutPhase::Superseded { by: None };
            superseded.push(old);
        }
    }
    let empty = BTreeMap::new();
    for c in desired.configurations.values() {
        let Some(hash) = c.hash else { continue };
        let rollout = match rollouts.get_mut(c.name()) {
            Some(r) if r.target == hash => {
                // Same bytes, possibly a new rollout policy: adopt it, keep the progress.
                r.policy = c.rollout();
                r
            }
            _ => {
                let fresh = Rollout::new(c.name(), hash, c.rollout());
                if let Some(mut old) = rollouts.insert(c.name().to_string(), fresh) {
                    old.phase = RolloutPhase::Superseded { by: Some(hash) };
                    superseded.push(old);
                }
                match rollouts.get_mut(c.name()) {
                    Some(r) => r,
                    None => continue,
                }
            }
        };
        let decision = rollout.step(scopes.get(c.name()).unwrap_or(&empty));
        if let Some(cp) = configurations.get_mut(c.name()) {
            cp.rollout = Some(rollout.progress());
            cp.decision = Some(decision);
        }
    }

    let agents = agents
        .iter()
        .map(|a| {
            let selection = selection_of(a);
            let (hash, reached, on_failure) = match selection {
                Selection::One(name) => match desired.configurations.get(name) {
                    Some(c) => (
                        c.hash,
                        reached(c, rollouts.get(name), &a.instance_uid),
                        c.on_failure(),
                    ),
                    None => (None, false, OnFailure::default()),
                },
                Selection::None | Selection::Conflict(_) => (None, false, OnFailure::default()),
            };
            plan_agent(a, selection, hash, reached, on_failure, timing)
        })
        .collect();

    FleetPlan {
        revision: desired.revision.clone(),
        agents,
        configurations,
        summary,
        superseded,
    }
}

/// Every configuration of `desired` with nothing counted yet.
pub(crate) fn empty_configurations(desired: &Desired) -> BTreeMap<String, ConfigurationPlan> {
    desired
        .configurations
        .values()
        .map(|c| {
            (
                c.name().to_string(),
                ConfigurationPlan {
                    name: c.name().to_string(),
                    hash: c.hash,
                    counts: StatusCounts::default(),
                    rollout: None,
                    decision: None,
                    upgrade: None,
                },
            )
        })
        .collect()
}

/// Plan one agent, on each of its reports: one selection plus O(1) work (the rollout admission
/// is an index lookup). Reads the rollouts, never steps them: an agent the current rollout has
/// not seen yet waits for the next fleet plan unless the rollout is all-at-once or complete.
pub fn plan_one(
    desired: &Desired,
    agent: &ObservedAgent,
    rollouts: &BTreeMap<String, Rollout>,
    timing: Timing,
) -> AgentPlan {
    let selection = desired.select(&agent.labels);
    let (hash, reached, on_failure) = match &selection {
        Selection::One(name) => match desired.configurations.get(name) {
            Some(c) => (
                c.hash,
                reached(c, rollouts.get(name), &agent.instance_uid),
                c.on_failure(),
            ),
            None => (None, false, OnFailure::default()),
        },
        Selection::None | Selection::Conflict(_) => (None, false, OnFailure::default()),
    };
    plan_agent(agent, &selection, hash, reached, on_failure, timing)
}

/// Has the rollout of `config`'s desired hash reached `uid`? Without a rollout for that hash
/// (the fleet plan has not run since the revision changed) an all-at-once policy reaches
/// everyone and a batched one nobody, so a batch gate is never bypassed.
pub(crate) fn reached(config: &DesiredConfig, rollout: Option<&Rollout>, uid: &str) -> bool {
    match (config.hash, rollout) {
        (Some(h), Some(r)) if r.target == h => r.admits(uid),
        (Some(_), _) => config.rollout().strategy == RolloutStrategy::AllAtOnce,
        (None, _) => false,
    }
}

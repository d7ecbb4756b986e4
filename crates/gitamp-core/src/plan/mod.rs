//! The reconcile plan: desired state (the catalog's configurations) against reported state (what
//! agents say), as a pure function returning what to do.
//!
//! Layers, each pure (no I/O, no clock: time comes in as [`Timing`]):
//! - [`select`]: which configuration an agent gets;
//! - [`status::sync_status`]: where the agent stands against it;
//! - [`plan_agent`]: what to do now (push, wait for the rollout, or nothing);
//! - [`rollout::Rollout`]: which agents the rollout of a new hash has reached;
//! - [`fleet_plan::plan`] / [`fleet_plan::plan_one`]: all of it for the fleet or for one agent;
//! - [`planner::Planner`]: the fleet plan kept current at the cost of what changed (the server).
pub mod desired;
pub mod fleet_plan;
pub mod observed;
pub mod planner;
pub mod rollout;
pub mod select;
pub mod selector;
pub mod status;

use serde::{Deserialize, Serialize};

use crate::catalog::model::OnFailure;
use crate::config_map::ConfigHash;
pub use desired::{Desired, DesiredConfig};
pub use fleet_plan::{ConfigurationPlan, FleetPlan, plan, plan_one};
pub use observed::{ObservedAgent, ReportedStatus};
pub use planner::Planner;
pub use rollout::{AgentProgress, Rollout, RolloutDecision, RolloutPhase, RolloutProgress};
use select::Selection;
pub use status::{StatusCounts, SyncStatus, sync_status};

/// What to do with one agent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "action", content = "hash")]
pub enum Action {
    /// Send this hash's config map.
    Push(ConfigHash),
    /// Nothing to send: in sync, failed, applying, conflict, unmanaged, incompatible or
    /// disconnected.
    Nothing,
    /// It needs the desired config but the rollout has not reached it: it keeps its previous one.
    Wait,
}

/// The clock, passed in so the plan stays a pure function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Now, in ms since the Unix epoch.
    pub now_ms: u64,
    /// An acknowledging agent sent the desired hash that has not reported it back after this
    /// long is sent it once more (a push can be lost with a dropped connection). Bounded by this
    /// interval, so it never becomes a resend loop.
    pub resend_after_ms: u64,
}

impl Timing {
    /// Default resend interval: 5 minutes, ten HTTP poll intervals.
    pub const DEFAULT_RESEND_AFTER_MS: u64 = 5 * 60 * 1000;

    /// `now_ms` with the default resend interval.
    pub fn at(now_ms: u64) -> Self {
        Timing {
            now_ms,
            resend_after_ms: Self::DEFAULT_RESEND_AFTER_MS,
        }
    }
}

/// The plan for one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPlan {
    pub instance_uid: String,
    /// The configuration that selects it, if exactly one does.
    pub configuration: Option<String>,
    /// That configuration's hash.
    pub desired_hash: Option<ConfigHash>,
    pub status: SyncStatus,
    pub action: Action,
    /// Why, for people: the conflicting configurations, the agent's error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AgentPlan {
    /// Fold this plan back into the agent record once the shell has acted on it: a push is
    /// recorded (`note_push`), and Synced on an acknowledged hash is remembered (for Drifted).
    pub fn record(&self, agent: &mut ObservedAgent, now_ms: u64) {
        match self.action {
            Action::Push(h) => agent.note_push(h, now_ms),
            Action::Nothing | Action::Wait => {
                if self.status == SyncStatus::Synced
                    && agent.reports_remote_config
                    && agent.reported_hash == self.desired_hash
                {
                    agent.synced_hash = self.desired_hash;
                }
            }
        }
    }
}

/// Plan one agent from its selection, the selected configuration's hash, and whether that
/// configuration's rollout has reached it.
///
/// Actions by status:
/// - Pending → `Push` if reached, `Wait` if not (`Nothing` if there is no hash to send).
/// - Drifted → `Push` again if reached (the push clears `synced_hash`, so once), else `Wait`.
/// - Applying → `Nothing`, unless the agent acknowledges, has not echoed the hash, and the send
///   is older than `timing.resend_after_ms`: then `Push` once more (if still reached).
/// - Failed → with `OnFailure::Rollback`, `Push` of the last hash the agent applied
///   (`last_applied`), once, whether or not the rollout reached it; `Nothing` with `Keep` or
///   when it never applied anything. The failed hash itself is never pushed again.
/// - Synced, RolledBack, Conflict, Incompatible, Disconnected → `Nothing`.
/// - Unmanaged → `Nothing`: the agent keeps whatever it runs. Sending an empty config map would
///   stop its collector, and dropping a configuration from Git must not take a fleet down.
///
/// Every `Push` also passes [`may_push`], the guard the brief sets out in one place.
pub fn plan_agent(
    agent: &ObservedAgent,
    selection: &Selection,
    desired_hash: Option<ConfigHash>,
    reached: bool,
    on_failure: OnFailure,
    timing: Timing,
) -> AgentPlan {
    let status = sync_status(agent, selection, desired_hash);
    let configuration = match selection {
        Selection::One(name) => Some(name.clone()),
        Selection::None | Selection::Conflict(_) => None,
    };
    let detail = match (status, selection) {
        (SyncStatus::Conflict, Selection::Conflict(names)) => Some(format!(
            "selected by {} at the same priority",
            names.join(", ")
        )),
        (SyncStatus::Failed, _) => match (&agent.reported_status, agent.reported_hash) {
            (ReportedStatus::Failed { error }, reported)
                if !error.is_empty() && reported == desired_hash =>
            {
                Some(error.clone())
            }
            // The config it was sent back to failed too: say which is which.
            (ReportedStatus::Failed { error }, Some(reported)) => desired_hash.map(|h| {
                format!(
                    "agent reported FAILED for {}; rolling back to {} failed too: {error}",
                    h.short(),
                    reported.short()
                )
            }),
            _ => desired_hash.map(|h| failure_detail(agent, h)),
        },
        (SyncStatus::RolledBack, _) => desired_hash.map(|h| {
            format!(
                "rolled back to {}: {}",
                agent.reported_hash.map_or_else(String::new, |r| r.short()),
                failure_detail(agent, h)
            )
        }),
        (SyncStatus::Pending, Selection::One(_)) if desired_hash.is_none() => {
            Some("configuration not rendered".into())
        }
        // Say what it waits for: an agent that never answers stays here.
        (SyncStatus::Applying, _) => desired_hash.map(|h| {
            if agent.reported_hash == Some(h) {
                format!("the agent is applying {}", h.short())
            } else {
                format!("sent {}; no status from the agent yet", h.short())
            }
        }),
        _ => None,
    };
    let candidate = match (status, desired_hash) {
        (SyncStatus::Pending | SyncStatus::Drifted, Some(h)) => {
            if reached {
                Action::Push(h)
            } else {
                Action::Wait
            }
        }
        (SyncStatus::Applying, Some(h)) => {
            let expired = agent.reported_hash != Some(h)
                && agent
                    .sent_at
                    .is_some_and(|at| timing.now_ms.saturating_sub(at) >= timing.resend_after_ms);
            if expired && reached {
                Action::Push(h)
            } else {
                Action::Nothing
            }
        }
        (SyncStatus::Failed, Some(h)) => match (on_failure, agent.last_applied) {
            (OnFailure::Rollback, Some(good)) if good != h => Action::Push(good),
            _ => Action::Nothing,
        },
        _ => Action::Nothing,
    };
    let action = match candidate {
        Action::Push(h) if !may_push(agent, h, timing) => Action::Nothing,
        other => other,
    };
    AgentPlan {
        instance_uid: agent.instance_uid.clone(),
        configuration,
        desired_hash,
        status,
        action,
        detail,
    }
}

/// What failed, for people: the agent's own error when it gave one.
fn failure_detail(agent: &ObservedAgent, failed: ConfigHash) -> String {
    match agent.last_error.as_deref().filter(|e| !e.is_empty()) {
        Some(error) => format!("agent reported FAILED for {}: {error}", failed.short()),
        None => format!("agent reported FAILED for {}", failed.short()),
    }
}

/// The push guard: connected, accepts remote config, does not already report `hash`, has not
/// failed it, and, for an agent that never acknowledges, was not already sent it. An
/// acknowledging agent already sent `hash` passes only once the resend interval has elapsed.
pub fn may_push(agent: &ObservedAgent, hash: ConfigHash, timing: Timing) -> bool {
    let already_sent = agent.sent_hash == Some(hash);
    // Never-acknowledging agents get each hash once.
    let once_only = already_sent && !agent.reports_remote_config;
    // Acknowledging agents get it again only after the resend interval, or after drifting.
    let too_soon = already_sent
        && agent.synced_hash != Some(hash)
        && agent
            .sent_at
            .is_some_and(|at| timing.now_ms.saturating_sub(at) < timing.resend_after_ms);
    agent.connected
        && agent.accepts_remote_config
        && agent.reported_hash != Some(hash)
        && !agent.failed_hashes.contains(&hash)
        && !once_only
        && !too_soon
}

#[cfg(test)]
mod tests;

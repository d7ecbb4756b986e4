//! The reconcile plan: desired state (the catalog's configurations) against reported state (what
//! agents say), as a pure function returning what to do.
//!
//! Layers, each pure (no I/O, no clock: time comes in as [`Timing`]):
//! - [`select`]: which configuration an agent gets;
//! - [`status::sync_status`]: where the agent stands against it;
//! - [`plan_agent`]: what to do now (push, wait for the rollout, or nothing);
//! - [`push::push_decision`]: whether a push goes out now, later (a requeue time) or not;
//! - [`rollout::Rollout`]: which agents the rollout of a new hash has reached;
//! - [`fleet_plan::plan`] / [`fleet_plan::plan_one`]: all of it for the fleet or for one agent;
//! - [`planner::Planner`]: the fleet plan kept current at the cost of what changed (the server).
pub mod desired;
pub mod fleet_plan;
pub mod observed;
pub mod planner;
pub mod push;
pub mod rollout;
pub mod rollout_book;
pub mod select;
pub mod selector;
pub mod status;
pub mod upgrade;

use serde::{Deserialize, Serialize};

use crate::catalog::model::OnFailure;
use crate::config_map::ConfigHash;
pub use desired::{Desired, DesiredConfig};
pub use fleet_plan::{ConfigurationPlan, FleetPlan, plan, plan_one};
pub use observed::{ObservedAgent, ReportedStatus};
pub use planner::Planner;
pub use push::{PushDecision, push_decision};
pub use rollout::{
    AgentProgress, MemberList, Members, Rollout, RolloutDecision, RolloutPhase, RolloutProgress,
};
pub use rollout_book::{ResumeError, RolloutBook, Target};
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
    /// An acknowledging agent pushed to on its connection that has not reported the hash back
    /// after this long is sent it once more. Bounded by this interval, so it never becomes a
    /// resend loop (see [`push_decision`]).
    pub resend_after_ms: u64,
    /// The same for a polling (HTTP) agent: shorter than the usual 30 s poll, so a lost reply
    /// is offered again on the next poll, and longer than the crossing of one poll.
    pub poll_resend_after_ms: u64,
}

impl Timing {
    /// Default resend interval on a connection: 5 minutes.
    pub const DEFAULT_RESEND_AFTER_MS: u64 = 5 * 60 * 1000;
    /// Default resend interval for a polling agent: 10 seconds.
    pub const DEFAULT_POLL_RESEND_AFTER_MS: u64 = 10 * 1000;

    /// `now_ms` with the default resend intervals.
    pub fn at(now_ms: u64) -> Self {
        Timing {
            now_ms,
            resend_after_ms: Self::DEFAULT_RESEND_AFTER_MS,
            poll_resend_after_ms: Self::DEFAULT_POLL_RESEND_AFTER_MS,
        }
    }
}

/// The plan for one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPlan {
    /// The agent.
    pub instance_uid: String,
    /// The configuration that selects it, if exactly one does.
    pub configuration: Option<String>,
    /// That configuration's hash.
    pub desired_hash: Option<ConfigHash>,
    /// Where it stands against the desired config.
    pub status: SyncStatus,
    /// What to do now.
    pub action: Action,
    /// Why, for people: the conflicting configurations, the agent's error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Plan this agent again at this time (ms since the Unix epoch) even if nothing about it
    /// changes: a push held back by [`push_decision`] may go out then.
    #[serde(skip)]
    pub requeue_at: Option<u64>,
    /// Its upgrade to the version its configuration pins, if it pins one ([`upgrade`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<upgrade::UpgradePlan>,
}

impl AgentPlan {
    /// Fold this plan back into the agent record: Synced on an acknowledged hash is remembered
    /// (for Drifted). A push is recorded when it is sent ([`ObservedAgent::note_push`]), not
    /// when it is planned.
    pub fn record(&self, agent: &mut ObservedAgent) {
        if self.records_sync(agent) {
            agent.synced_hash = self.desired_hash;
        }
    }

    /// Whether [`AgentPlan::record`] would change `agent`.
    pub fn records_sync(&self, agent: &ObservedAgent) -> bool {
        self.status == SyncStatus::Synced
            && agent.reports_remote_config
            && agent.reported_hash == self.desired_hash
            && agent.synced_hash != self.desired_hash
    }

    /// For tests that act as the transport: record the planned push as sent at `now_ms`, then
    /// what [`AgentPlan::record`] records.
    #[cfg(test)]
    pub(crate) fn record_sent(&self, agent: &mut ObservedAgent, now_ms: u64) {
        match self.action {
            Action::Push(h) => agent.note_push(h, now_ms, agent.connection),
            Action::Nothing | Action::Wait => self.record(agent),
        }
    }
}

/// Plan one agent from its selection, the selected configuration's hash, and whether that
/// configuration's rollout has reached it.
///
/// Actions by status:
/// - Pending → `Push` if reached, `Wait` if not (`Nothing` if there is no hash to send).
/// - Drifted → `Push` again if reached (the push clears `synced_hash`, so once), else `Wait`.
/// - Applying → `Nothing`, unless [`push_decision`] says a push that may have been lost goes
///   out again (if still reached).
/// - Failed → with `OnFailure::Rollback`, `Push` of the last hash the agent applied
///   (`last_applied`), once, whether or not the rollout reached it; `Nothing` with `Keep` or
///   when it never applied anything. The failed hash itself is never pushed again.
/// - Synced, RolledBack, Conflict, Incompatible, Disconnected → `Nothing`.
/// - Unmanaged → `Nothing`: the agent keeps whatever it runs. Sending an empty config map would
///   stop its collector, and dropping a configuration from Git must not take a fleet down.
///
/// Every `Push` passes [`push_decision`]; one it holds back until a time sets `requeue_at`.
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
            if reached {
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
    let (action, requeue_at) = match candidate {
        Action::Push(h) => match push_decision(agent, h, timing) {
            PushDecision::Now => (Action::Push(h), None),
            PushDecision::At(t) => (Action::Nothing, Some(t)),
            PushDecision::Not => (Action::Nothing, None),
        },
        other => (other, None),
    };
    AgentPlan {
        instance_uid: agent.instance_uid.clone(),
        configuration,
        desired_hash,
        status,
        action,
        detail,
        requeue_at,
        upgrade: None,
    }
}

/// What failed, for people: the agent's own error when it gave one.
fn failure_detail(agent: &ObservedAgent, failed: ConfigHash) -> String {
    match agent.last_error.as_deref().filter(|e| !e.is_empty()) {
        Some(error) => format!("agent reported FAILED for {}: {error}", failed.short()),
        None => format!("agent reported FAILED for {}", failed.short()),
    }
}

#[cfg(test)]
mod tests;

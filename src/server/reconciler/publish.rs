//! From the plan to the readers: the [`FleetView`] the status API serves (swapped whole, so
//! readers never block the writer), each agent's status transitions as events, and the metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gitamp_core::plan::{AgentPlan, ObservedAgent, RolloutPhase, SyncStatus};
use gitamp_opamp::Uid;

use super::Reconciler;
use crate::server::events::{Event, Masked};
use crate::server::state::{AgentView, ConfigurationView, FleetView, Serving, UpgradeView};
use crate::telemetry;

impl Reconciler {
    /// Publish what the agents in `replanned` now are, and the fleet's totals.
    pub(super) fn publish(&mut self, serving: &Serving, replanned: &[Uid]) {
        let Some(planner) = self.planner.as_mut() else {
            return;
        };
        for old in planner.take_superseded() {
            if let RolloutPhase::Superseded { by: Some(by) } = &old.phase {
                self.state.emit(Event::RolloutSuperseded {
                    configuration: old.configuration.clone(),
                    target: old.target,
                    by: *by,
                });
            }
        }
        let now = self.clock.now_ms();
        for uid in replanned {
            let Some((agent, Some(plan))) = planner.agent(uid) else {
                continue;
            };
            let previous = self.view_agents.get(uid);
            let status = plan.status.as_str();
            if let Some(tracker) = self.convergence.as_mut() {
                tracker.note(*uid, plan.desired_hash.is_some(), plan.status);
            }
            if previous.is_none_or(|v| v.status != status) {
                let applied = note_transition(
                    &self.state,
                    &serving.secrets,
                    (*uid, previous.is_some()),
                    agent,
                    plan,
                    (now, self.started_ms),
                );
                if let (Some((sent_at, ms)), Some(tracker)) = (applied, self.convergence.as_mut())
                    && sent_at >= tracker.accepted_at()
                {
                    tracker.applied_after(ms);
                }
            }
            let upgrade = plan.upgrade.as_ref().map(|u| UpgradeView {
                status: u.status.as_str(),
                desired_version: u.desired_version.clone(),
                reason: u.detail.clone(),
            });
            let installed_version = installed_version(agent, plan, planner.desired());
            if let Some(u) = plan.upgrade.as_ref()
                && previous
                    .and_then(|v| v.upgrade.as_ref())
                    .is_none_or(|v| v.status != u.status.as_str())
                && let Some(ev) = super::packages::upgrade_event(
                    *uid,
                    u.status,
                    &u.desired_version,
                    u.detail.as_deref(),
                    &serving.secrets,
                )
            {
                self.state.emit(ev);
            }
            let sent = agent.sent_hash.zip(agent.sent_at);
            let same = previous.is_some_and(|v| {
                v.status == status
                    && v.configuration == plan.configuration
                    && v.desired_hash == plan.desired_hash
                    && v.reason == plan.detail
                    && v.last_applied == agent.last_applied
                    && v.sent == sent
                    && v.failed_hashes.iter().eq(agent.failed_hashes.iter())
                    && v.upgrade == upgrade
                    && v.installed_version == installed_version
            });
            if !same {
                self.view_agents.insert(
                    *uid,
                    AgentView {
                        status: status.to_string(),
                        configuration: plan.configuration.clone(),
                        desired_hash: plan.desired_hash,
                        reason: plan.detail.clone(),
                        last_applied: agent.last_applied,
                        sent,
                        failed_hashes: agent.failed_hashes.iter().copied().collect(),
                        installed_version,
                        upgrade,
                    },
                );
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
                        upgrade: c
                            .upgrade
                            .as_ref()
                            .and_then(|r| serde_json::to_value(r).ok()),
                        rollout_halted: c
                            .rollout
                            .as_ref()
                            .is_some_and(|r| matches!(r.phase, RolloutPhase::Halted { .. })),
                    },
                )
            })
            .collect();
        let summary = planner.summary();
        let counts: BTreeMap<String, usize> = SyncStatus::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), summary.get(*s)))
            .collect();
        self.state.view.store(Arc::new(FleetView {
            agents: self.view_agents.clone(),
            configurations,
            counts,
            connected: planner.connected(),
            computed_at: Some(SystemTime::now()),
        }));
        // The first plan after a revision is accepted looks at every agent (`set_desired`).
        if let Some(tracker) = self.convergence.as_mut() {
            tracker.planned();
        }
        if let Some(changed) = self.convergence.as_mut().and_then(|t| t.take_changed()) {
            self.note_convergence(changed);
        }
    }
}

/// Log a status change as an event and feed the push-to-applied histogram. `(now, started)`
/// in ms: a send recorded before this process started (read back from the store) is not
/// timed. Returns `(sent_at, push → applied ms)` when the agent just applied the desired
/// config it was sent.
fn note_transition(
    state: &crate::server::state::AppState,
    secrets: &[String],
    (uid, had_status): (Uid, bool),
    agent: &ObservedAgent,
    plan: &AgentPlan,
    (now, started): (u64, u64),
) -> Option<(u64, u64)> {
    let mut applied = None;
    let masked = || Masked::new(plan.detail.as_deref().unwrap_or_default(), secrets);
    let event = match plan.status {
        SyncStatus::Synced => {
            if let (Some(hash), Some(at)) = (agent.sent_hash, agent.sent_at)
                && Some(hash) == plan.desired_hash
                && at >= started
            {
                let ms = now.saturating_sub(at);
                telemetry::push_to_applied(Duration::from_millis(ms));
                applied = Some((at, ms));
            }
            had_status.then_some(Event::Applied { agent: uid })
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
    applied
}

/// The version an agent reports running (see `AgentPackages::running`).
fn installed_version(
    agent: &ObservedAgent,
    plan: &AgentPlan,
    desired: &gitamp_core::plan::Desired,
) -> Option<String> {
    let pinned = plan
        .configuration
        .as_ref()
        .and_then(|name| desired.configurations.get(name))
        .and_then(|c| c.version.as_ref())
        .map(|v| v.package.as_str());
    agent.packages.running(pinned).map(str::to_string)
}

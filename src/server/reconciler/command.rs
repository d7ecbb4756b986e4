//! What operators ask of the reconciler through the API. The reconciler is the one writer, so
//! the API does not change the plan itself: it sends a [`Command`] with a one-shot channel for
//! the answer, and the run loop ([`super::scheduler`]) handles it between plans.

use std::collections::BTreeMap;

use gitamp_core::plan::{ResumeError, Rollout, RolloutProgress};
use tokio::sync::{mpsc, oneshot};
use tracing::info;

use super::Reconciler;
use crate::server::events::Event;

/// An operator's request.
#[derive(Debug)]
pub enum Command {
    /// Resume a configuration's halted rollout; the answer is its progress after the plan that
    /// followed.
    Resume {
        configuration: String,
        reply: oneshot::Sender<Result<RolloutProgress, ResumeError>>,
    },
    /// Several replicas: the config and upgrade rollouts the leader stepped over the whole
    /// fleet, as the database holds them now; this replica admits by them
    /// (`Planner::adopt_rollouts`, `Planner::adopt_upgrades`).
    AdoptRollouts {
        rollouts: BTreeMap<String, Rollout>,
        upgrades: BTreeMap<String, Rollout>,
    },
    /// Several replicas: the leader retired this replica while it was cut off from the
    /// database and marked its agents disconnected there; write every agent's record again.
    RewriteAgents,
}

impl Reconciler {
    /// Take operators' requests from `commands` (the API holds the sending end).
    pub fn with_commands(mut self, commands: mpsc::Receiver<Command>) -> Reconciler {
        self.commands = Some(commands);
        self
    }

    pub(super) fn on_command(&mut self, command: Command) {
        match command {
            Command::Resume {
                configuration,
                reply,
            } => {
                let result = self.resume(&configuration);
                // The caller may have given up (its request timed out): the resume stands.
                let _ = reply.send(result);
            }
            Command::AdoptRollouts { rollouts, upgrades } => match self.planner.as_mut() {
                Some(planner) => {
                    planner.adopt_rollouts(rollouts);
                    planner.adopt_upgrades(upgrades);
                }
                None => {
                    self.resumed_rollouts = rollouts;
                    self.adopted_upgrades = upgrades;
                }
            },
            Command::RewriteAgents => self.rewrite_agents(),
        }
    }

    /// Forget what the store was last sent of each agent and send every record again, at
    /// once: the shared table no longer says what this replica holds.
    fn rewrite_agents(&mut self) {
        let Some(planner) = self.planner.as_ref() else {
            return;
        };
        let uids: Vec<_> = planner.agents().map(|(uid, _)| *uid).collect();
        info!(agents = uids.len(), "Writing every agent's record again.");
        self.persisted.clear();
        self.persist(&uids, &Default::default());
        self.store.commit_now();
    }

    /// Resume the rollout, record it, and plan at once: the halted batch's agents get their
    /// config now, and the rollout's new phase is committed to the store at once (see
    /// `persist_rollouts`), as its halt was, so a restart does not halt it again.
    fn resume(&mut self, configuration: &str) -> Result<RolloutProgress, ResumeError> {
        let planner = self.planner.as_mut().ok_or(ResumeError::NoRollout)?;
        let progress = planner.resume(configuration)?;
        self.state.emit(Event::RolloutResumed {
            configuration: configuration.to_string(),
            target: progress.target,
            excused: progress.excused,
        });
        self.reconcile_off_worker();
        Ok(self
            .planner
            .as_ref()
            .and_then(|p| p.rollouts().get(configuration))
            .map_or(progress, |r| r.progress()))
    }
}

/// The next request, or never when there is no channel (a reconciler without an API).
pub(super) async fn next(commands: &mut Option<mpsc::Receiver<Command>>) -> Option<Command> {
    match commands {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

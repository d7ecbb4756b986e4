//! When the reconciler plans: after a burst of fleet events (gathered for a moment, so a
//! reconnect storm of thousands of agents costs a few plans), after a new revision (at once),
//! when a plan asked to look at an agent again (`AgentPlan::requeue_at`: a push held back
//! until then), and at the periodic resync. There is no fixed tick: an idle server sleeps.

use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Reconciler;
use crate::source::SyncEvent;
use gitamp_opamp::FleetEvent;

/// How long fleet events are gathered before one plan runs.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// The whole fleet is re-read and re-planned this often even if no event was missed
/// (kube-runtime's periodic resync): a safety net, not what moves rollouts or resends.
const RESYNC: Duration = Duration::from_secs(30);

impl Reconciler {
    /// Run until `cancel` fires or the source's channel closes.
    pub async fn run(
        mut self,
        mut sync_rx: mpsc::Receiver<SyncEvent>,
        mut fleet_rx: broadcast::Receiver<FleetEvent>,
        cancel: CancellationToken,
    ) {
        let mut source_open = true;
        let mut commands = self.commands.take();
        let (ask, mut evidence) = super::evidence::spawn(self.state.clone());
        self.evidence = Some(ask);
        // From here on the registry's poll replies may wait for this planner's plans (on a
        // replica, for those on new revisions only: see `plan_mark`).
        self.events_seen = self.fleet.events_seen_by(&fleet_rx);
        self.fleet.planned(self.plan_mark());
        loop {
            let wake = tokio::time::sleep_until(self.next_wake());
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(answer) = evidence.recv() => self.on_evidence(answer),
                command = super::command::next(&mut commands) => match command {
                    Some(command) => self.on_command(command),
                    None => commands = None,
                },
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
                                    Err(broadcast::error::RecvError::Lagged(n)) => self.note_lagged(n),
                                    Err(broadcast::error::RecvError::Closed) => break,
                                },
                            }
                        }
                        self.reconcile_off_worker();
                    }
                    // Missed events only mean "something changed": the plan reads the registry.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "Reconciler lagged behind fleet events; planning the whole fleet.");
                        self.note_lagged(n);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = wake => self.reconcile_off_worker(),
            }
        }
        self.persist_rollouts();
        if let Err(err) = self.store.flush().await {
            warn!(error = %err, "Final store flush failed.");
        }
    }

    /// When to plan next if no event comes: soon if work is waiting (missed events, agents a
    /// push moved), at the earliest time a plan asked for, at the resync at the latest.
    fn next_wake(&self) -> Instant {
        let resync = self.last_resync + RESYNC;
        if self.planner.is_none() {
            return resync;
        }
        if self.has_work() {
            return Instant::now() + DEBOUNCE;
        }
        let asked = self
            .planner
            .as_ref()
            .and_then(|p| p.next_wake())
            .map(|at_ms| self.clock.instant_of(at_ms));
        asked.map_or(resync, |at| at.min(resync))
    }

    /// Plan off the async threads (`server::off_worker`): a large plan (a new revision, a
    /// resync) must not hold up the connections queued behind it.
    pub(super) fn reconcile_off_worker(&mut self) {
        crate::server::off_worker(|| self.reconcile());
    }

    /// Pretend the last plan took `cost`: the pause that gathers a burst of fleet events is
    /// twice that. For tests of the run loop, which cannot wait for a plan that slow.
    #[doc(hidden)]
    pub fn assume_last_plan_cost(&mut self, cost: Duration) {
        self.last_plan_cost = cost;
    }

    /// Anything for the next plan to look at now.
    fn has_work(&self) -> bool {
        self.refresh_all
            || !self.dirty.is_empty()
            || self.planner.as_ref().is_some_and(|p| p.has_work())
    }

    /// Every [`RESYNC`], re-read and re-plan the whole fleet.
    pub(super) fn start_resync_if_due(&mut self) {
        if self.last_resync.elapsed() >= RESYNC {
            self.last_resync = Instant::now();
            self.refresh_all = true;
            if let Some(p) = self.planner.as_mut() {
                p.replan_all();
            }
        }
    }
}

//! From the plan to the agents: the configs the plan sends now are handed to the registry,
//! which queues them on the agent's WebSocket at once or puts them in the reply to its next
//! poll. A push is recorded (and counted, and logged as a `pushed` event) when a frame carrying
//! it was queued, not when it was handed over.

use std::sync::Arc;

use gitamp_core::ConfigHash;
use gitamp_core::plan::{Action, AgentPlan};
use gitamp_opamp::{Delivery, RemoteConfig, Uid, wire::uid_text};
use tracing::{debug, warn};

use super::Reconciler;
use crate::server::events::Event;
use crate::server::state::Serving;
use crate::telemetry;
use gitamp_opamp::fleet::unix_ms;

impl Reconciler {
    /// Plan, hand over what the plan sends, and record what went out. An agent sent a config
    /// moves (Pending to Applying, a requeue time): it is re-planned at the next reconcile, which
    /// the scheduler runs soon (`Planner::has_work`); doing it here made this plan longer, and
    /// the pause that gathers the agents' answers with it. `sent_in_replies` are configs that
    /// went out in poll replies since the last reconcile (already in the planner's records):
    /// they are counted here, like the pushes. Returns the agents re-planned.
    pub(super) fn plan_and_act(
        &mut self,
        serving: &Serving,
        sent_in_replies: &[(Uid, ConfigHash)],
    ) -> Vec<Uid> {
        let started = std::time::Instant::now();
        let mut sent = sent_in_replies.to_vec();
        let timing = super::timing(&self.clock);
        let Some(planner) = self.planner.as_mut() else {
            return Vec::new();
        };
        let replanned = planner.plan(timing);
        // Pushes first, bookkeeping after: the last agent of a rollout gets its config as soon
        // as the plan is made. Plans are read in place; only who was sent is kept.
        let mut queued = Vec::new();
        let mut awaiting_poll = 0usize;
        for uid in &replanned {
            let Some((_, Some(plan))) = planner.agent(uid) else {
                continue;
            };
            if let Some(own) = self.own_telemetry.for_agent(plan.configuration.as_deref())
                && self.fleet.set_own_telemetry(uid, own)
            {
                // Re-read at the next plan, which stores the offer sent.
                self.dirty.insert(*uid);
            }
            let Action::Push(hash) = plan.action else {
                if self.handed_over.remove(uid).is_some() {
                    self.fleet.deliver(uid, None);
                }
                continue;
            };
            let Some(config) = config_for(serving, &self.retained, plan, hash) else {
                warn!(agent = %uid_text(uid), hash = %hash.short(), "No config with this hash is kept; nothing sent.");
                continue;
            };
            match self.fleet.deliver(uid, Some(config)) {
                Delivery::Queued(s) => {
                    self.handed_over.remove(uid);
                    queued.push((*uid, hash, unix_ms(s.at), s.conn));
                }
                Delivery::Pending => {
                    awaiting_poll += 1;
                    self.handed_over.insert(*uid, hash);
                }
                Delivery::Dropped | Delivery::Unknown => {
                    self.handed_over.remove(uid);
                }
            }
        }
        for (uid, hash, at, conn) in &queued {
            planner.note_sent(uid, *hash, *at, Some(*conn));
            sent.push((*uid, *hash));
        }
        for uid in &replanned {
            planner.record(uid);
        }
        self.offer_packages(&replanned);
        if !sent.is_empty() || awaiting_poll > 0 {
            debug!(
                sent = sent.len(),
                awaiting_poll,
                planned = replanned.len(),
                ms = started.elapsed().as_secs_f64() * 1e3,
                "Configs sent."
            );
        }
        self.count_sent(&sent);
        replanned
    }

    /// Count configs that went out and log each as a `pushed` event.
    fn count_sent(&self, sent: &[(Uid, ConfigHash)]) {
        telemetry::pushes(sent.len() as u64);
        let Some(planner) = self.planner.as_ref() else {
            return;
        };
        for (uid, hash) in sent {
            let plan = planner.agent(uid).and_then(|(_, p)| p);
            let configuration = plan.and_then(|p| p.configuration.clone());
            self.state.emit(match plan.and_then(|p| p.desired_hash) {
                Some(failed) if failed != *hash => Event::PushedRollback {
                    agent: *uid,
                    configuration,
                    hash: *hash,
                    failed,
                },
                _ => Event::Pushed {
                    agent: *uid,
                    configuration,
                    hash: *hash,
                },
            });
        }
    }
}

/// The config a push sends: the configuration's served config, or (a rollback) an earlier one
/// kept by hash.
fn config_for(
    serving: &Serving,
    retained: &std::collections::HashMap<ConfigHash, Arc<RemoteConfig>>,
    plan: &AgentPlan,
    hash: ConfigHash,
) -> Option<Arc<RemoteConfig>> {
    plan.configuration
        .as_ref()
        .and_then(|name| serving.desired_configs.get(name))
        .filter(|c| c.hash() == &hash.0)
        .or_else(|| retained.get(&hash))
        .cloned()
}

//! A revision from the source: compiled by the pure core off the async threads (and, with
//! `--otelcol`, checked by the collector itself), then served if valid. A rejected revision is
//! recorded with its diagnostics and changes nothing for agents: the last good one keeps serving.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use gitamp_core::plan::{Desired, Planner};
use gitamp_core::{ConfigHash, Revision, Snapshot};
use gitamp_opamp::RemoteConfig;

use super::Reconciler;
use super::persist::config_record;
use crate::server::convergence::{Convergence, Tracker};
use crate::server::events::Event;
use crate::server::state::{RevisionView, Serving};
use crate::source::SyncEvent;
use crate::store::{self, StoreOp};
use crate::telemetry;

impl Reconciler {
    /// Handle one source event. Returns true when a new revision is now served.
    ///
    /// The fetch's time goes into the status last, after its outcome (the revision accepted or
    /// rejected, the error): whoever sees `last_fetch` move (`gitamp sync` waits for that) sees
    /// what that fetch brought.
    pub(super) async fn on_sync(&mut self, event: SyncEvent) -> bool {
        let info = event.info().clone();
        let succeeded = !matches!(event, SyncEvent::Error(..));
        let (served, error) = match event {
            SyncEvent::Unchanged(..) => {
                telemetry::fetch(info.last_duration, true);
                (false, None)
            }
            SyncEvent::Error(message, _) => {
                telemetry::fetch(info.last_duration, false);
                self.state.emit(Event::FetchError {
                    error: message.clone(),
                });
                (false, Some(message))
            }
            SyncEvent::Snapshot(snapshot, _) => {
                telemetry::fetch(info.last_duration, true);
                if let Some(commit) = &info.commit {
                    let mut h = self.state.history.lock().unwrap_or_else(|p| p.into_inner());
                    h.record_commit(&snapshot.revision, commit.clone());
                }
                for skipped in &info.skipped {
                    self.state.emit(Event::FileSkipped {
                        path: skipped.path.clone(),
                        reason: skipped.reason.to_string(),
                    });
                }
                // A commit whose signature is refused is not even compiled: nothing of it may
                // reach the collector check or the agents.
                let unverified =
                    crate::source::signature::signature_diagnostics(info.signature.as_ref());
                if unverified.has_errors() {
                    self.reject(gitamp_core::Rejected {
                        revision: snapshot.revision,
                        diagnostics: unverified,
                    });
                    (false, None)
                } else {
                    let skipped = crate::source::skipped::skipped_diagnostics(&info.skipped);
                    (self.on_snapshot(snapshot, skipped).await, None)
                }
            }
        };
        let mut sync = self.state.sync.lock().unwrap_or_else(|p| p.into_inner());
        sync.last_error = error;
        sync.consecutive_failures = info.consecutive_failures;
        sync.next_retry = info.next_retry;
        sync.last_fetch_duration_ms = Some(info.last_duration.as_millis() as u64);
        sync.last_fetch = info.last_fetch;
        if succeeded {
            // The embedded source is read once, at start, with no fetch time of its own.
            sync.last_success = Some(info.last_fetch.unwrap_or_else(SystemTime::now));
        }
        served
    }

    /// Compile a snapshot (off the async threads) and serve it if it is valid. `skipped` holds
    /// the source's diagnostics for files it left out: a configuration file left out rejects
    /// the revision (serving without it would silently change what agents get). With
    /// `--otelcol`, the collector must accept every configuration too.
    pub(super) async fn on_snapshot(
        &mut self,
        snapshot: Snapshot,
        skipped: gitamp_core::Diagnostics,
    ) -> bool {
        let revision_id = snapshot.revision.clone();
        let started = Instant::now();
        let otelcol = self.otelcol.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            crate::otelcol::compile_checked(&snapshot, skipped, otelcol.as_deref())
        })
        .await;
        telemetry::compile(started.elapsed());
        let compiled = match compiled {
            Ok(c) => c,
            Err(err) => {
                self.state.emit(Event::RevisionCrashed {
                    revision: revision_id,
                    error: err.to_string(),
                });
                return false;
            }
        };
        match compiled {
            Ok(revision) => {
                self.accept(revision);
                true
            }
            Err(rejected) => {
                self.reject(rejected);
                false
            }
        }
    }

    /// Refuse a revision: the last good one keeps serving; the log, the events, the history
    /// and the status say why.
    fn reject(&mut self, rejected: gitamp_core::Rejected) {
        // What is wrong, file:line by file:line, next to the rejection in the log.
        crate::server::events::log_rejected_diagnostics(&rejected);
        let record = RevisionView::seen(&rejected.revision, false, &rejected.diagnostics);
        let errors = record.errors;
        telemetry::revision(false);
        let first = rejected.diagnostics.errors().next().map(|d| {
            format!(
                "{}:{}: {} {}",
                d.location.file, d.location.line, d.code, d.message
            )
        });
        self.state.emit(Event::RevisionRejected {
            revision: rejected.revision.clone(),
            errors,
            first,
        });
        self.record_revision(record.clone());
        let mut sync = self.state.sync.lock().unwrap_or_else(|p| p.into_inner());
        sync.last_rejected = Some(record);
    }

    /// Serve an accepted revision: build everything derived from it once.
    pub fn accept(&mut self, revision: Revision) {
        let desired = Arc::new(Desired::from_revision(&revision));
        let desired_configs: BTreeMap<String, Arc<RemoteConfig>> = revision
            .rendered
            .configurations
            .iter()
            .map(|(name, rendered)| {
                let files = rendered
                    .config_map
                    .iter()
                    .map(|(k, f)| (k.clone(), (f.body.clone(), f.content_type.clone())))
                    .collect();
                (
                    name.clone(),
                    Arc::new(RemoteConfig::new(files, rendered.hash.0)),
                )
            })
            .collect();
        let record = RevisionView::seen(&revision.revision, true, &revision.warnings);
        self.track_convergence(&revision.revision);
        self.durable_now = true;
        telemetry::revision(true);
        self.state.emit(Event::RevisionAccepted {
            revision: revision.revision.clone(),
            configurations: desired_configs.len(),
        });
        if self.accepted_recorded_elsewhere {
            if let Ok(mut h) = self.state.history.lock() {
                h.record_revision(record);
            }
        } else {
            self.record_revision(record);
        }
        {
            let mut sync = self.state.sync.lock().unwrap_or_else(|p| p.into_inner());
            sync.current_revision = Some(revision.revision.clone());
        }
        self.retain_served(&revision.revision, &desired_configs);
        self.fleet.set_served(self.retained.values().cloned());
        self.own_telemetry
            .set_revision(&revision, self.fleet.offer_settings().receiver);
        self.state
            .serve(Serving::new(Arc::new(revision), desired_configs));
        // Polls that come before the plan on it wait for that plan (`plan_wait`).
        self.fleet.expect_plan();
        match self.planner.as_mut() {
            Some(planner) => planner.set_desired(desired),
            None => {
                let rollouts = std::mem::take(&mut self.resumed_rollouts);
                self.planner = Some(if self.adopts_rollouts {
                    let mut planner = Planner::new(desired, BTreeMap::new());
                    planner.adopt_rollouts(rollouts);
                    planner.adopt_upgrades(std::mem::take(&mut self.adopted_upgrades));
                    planner
                } else {
                    Planner::new(desired, rollouts)
                });
            }
        }
        // No re-read of the fleet: the planner already holds every agent as last reported
        // (events keep it current) and selects them all again for the new revision.
    }

    /// Keep the configs of an accepted revision as rollback targets (stored once per hash) and
    /// forget those neither served nor last applied by any agent, so the set stays as small as
    /// the fleet's history makes it.
    fn retain_served(&mut self, revision: &str, served: &BTreeMap<String, Arc<RemoteConfig>>) {
        for config in served.values() {
            let hash = ConfigHash(*config.hash());
            if self.retained.insert(hash, config.clone()).is_none() {
                self.write(StoreOp::SaveConfig(config_record(revision, config)));
            }
        }
        let mut keep: HashSet<ConfigHash> =
            served.values().map(|c| ConfigHash(*c.hash())).collect();
        // Every agent's last applied hash: those the planner holds, and those the store
        // remembered of agents not back yet.
        if let Some(planner) = &self.planner {
            keep.extend(planner.agents().filter_map(|(_, a)| a.last_applied));
        }
        keep.extend(self.resumed_agents.values().filter_map(|a| a.last_applied));
        self.retained.retain(|h, _| keep.contains(h));
        let mut keep: Vec<String> = keep.iter().map(ConfigHash::to_hex).collect();
        keep.sort();
        self.write(StoreOp::PruneConfigs { keep });
    }

    /// Track `revision`'s convergence from now on; the one it replaces is frozen as superseded.
    /// The same revision accepted again (served from the cache, then fetched) keeps its figures.
    fn track_convergence(&mut self, revision: &str) {
        let now = self.clock.now_ms();
        let mut tracker = match self.convergence.take() {
            Some(same) if same.revision() == revision => same,
            Some(old) => {
                // Its last figures, final: written now, not left for a later plan.
                let done = old.superseded(revision);
                if !self.adopts_rollouts {
                    self.write(convergence_op(&done));
                }
                self.show_convergence(done);
                Tracker::new(revision, now, None)
            }
            None => Tracker::new(revision, now, self.stored_convergence.take()),
        };
        // Readers see the revision with its (empty) figures from the start, not without any.
        if let Some(first) = tracker.take_changed() {
            self.note_convergence(first);
        }
        self.convergence = Some(tracker);
    }

    /// The served revision's figures changed: the API shows them at once; the store gets them
    /// from [`Reconciler::store_convergence`], after the records a restart needs (they change
    /// at every plan of a rollout).
    pub(super) fn note_convergence(&mut self, c: Convergence) {
        self.convergence_unsaved = !self.adopts_rollouts;
        self.show_convergence(c);
    }

    /// Into the API's history. A replica's figures cover only its own agents: the leader
    /// writes the fleet's (src/server/cluster/rollouts.rs), which every replica shows; this
    /// replica's own are kept for the leader's push → applied times.
    fn show_convergence(&self, c: Convergence) {
        if self.adopts_rollouts {
            if let Some(cluster) = self.state.cluster.load_full() {
                cluster.local_convergence.store(Some(Arc::new(c)));
            }
            return;
        }
        if let Ok(mut h) = self.state.history.lock() {
            h.record_convergence(c);
        }
    }

    /// Write the served revision's figures if they changed and the store's queue has room
    /// (after the plan's agent and rollout records).
    pub(super) fn store_convergence(&mut self) {
        if !self.convergence_unsaved || !self.store.has_headroom() {
            return;
        }
        if let Some(t) = &self.convergence {
            let op = convergence_op(t.record());
            self.write(op);
        }
        self.convergence_unsaved = false;
    }

    /// A revision seen, accepted or not: into the store's history and the API's.
    fn record_revision(&self, record: RevisionView) {
        self.write(StoreOp::RecordRevision(store::RevisionRecord {
            revision: record.revision.clone(),
            time: store::to_ms(record.at),
            accepted: record.accepted,
            diagnostics: serde_json::to_value(&record.diagnostics).unwrap_or_default(),
            source_error: None,
        }));
        if let Ok(mut h) = self.state.history.lock() {
            h.record_revision(record);
        }
    }
}

/// The store's copy of `c`.
fn convergence_op(c: &Convergence) -> StoreOp {
    StoreOp::SaveConvergence(store::ConvergenceRecord {
        revision: c.revision.clone(),
        accepted_at: c.accepted_at as i64,
        record: serde_json::to_value(c).unwrap_or_default(),
    })
}

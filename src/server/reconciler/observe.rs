//! From the registry to the planner: fleet events name the agents to re-read, and what the
//! registry saw of each (its reports, its connection, a config that went out in a reply) is
//! folded into the planner's `ObservedAgent`, the one record of the agent.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use gitamp_core::ConfigHash;
use gitamp_core::plan::{ObservedAgent, ReportedStatus};
use gitamp_opamp::proto::AgentCapabilities;
use gitamp_opamp::report::{RemoteState, RemoteStatus, Transport};
use gitamp_opamp::{AgentSnapshot, FleetEvent, Uid, wire::uid_text};

use super::{Reconciler, packages};
use crate::server::events::Event;
use gitamp_opamp::fleet::unix_ms;

/// What one [`Reconciler::observe`] read.
#[derive(Default)]
pub(super) struct Observed {
    /// The snapshots read, by agent (without effective configs).
    pub snapshots: HashMap<Uid, AgentSnapshot>,
    /// Agents whose labels changed or that are new to the planner: their store records
    /// carry the labels.
    pub labels_changed: HashSet<Uid>,
    /// Configs that went out in replies since the last read (already in the records), to count.
    pub sent: Vec<(Uid, ConfigHash)>,
}

impl Reconciler {
    /// Events were missed: the next plan must read the whole fleet.
    pub fn note_lagged(&mut self, missed: u64) {
        self.events_seen += missed;
        self.refresh_all = true;
        self.lagged = true;
    }

    /// Take note of one fleet event (the run loop calls this for each; so does the bench).
    pub fn note_event(&mut self, event: &FleetEvent) {
        self.events_seen += 1;
        let (FleetEvent::Connected(uid)
        | FleetEvent::Reported(uid, _)
        | FleetEvent::Disconnected(uid)
        | FleetEvent::ConfigSent(uid, ..)
        | FleetEvent::PackagesSent(uid, ..)) = event;
        self.dirty.insert(*uid);
        match event {
            FleetEvent::Connected(uid) => {
                self.described.insert(*uid);
                self.ask_evidence(*uid);
                self.state.emit(Event::Connected { agent: *uid });
            }
            FleetEvent::Disconnected(uid) => {
                self.handed_over.remove(uid);
                self.offers_handed.remove(uid);
                self.state.emit(Event::Disconnected { agent: *uid });
            }
            FleetEvent::Reported(uid, changes) => {
                if changes.description || changes.health {
                    self.described.insert(*uid);
                }
                if changes.full_state {
                    self.ask_evidence(*uid);
                }
            }
            FleetEvent::PackagesSent(uid, ..) => {
                self.offers_handed.remove(uid);
            }
            FleetEvent::ConfigSent(..) => {}
        }
    }

    /// Re-read the agents the events named (or the whole fleet) into the planner.
    pub(super) fn observe(&mut self) -> Observed {
        let mut observed = Observed::default();
        let Some(planner) = self.planner.as_mut() else {
            return observed;
        };
        let lagged = std::mem::take(&mut self.lagged);
        let snapshots: Vec<AgentSnapshot> = if std::mem::take(&mut self.refresh_all) {
            self.dirty.clear();
            self.fleet.observe_all()
        } else {
            self.dirty
                .drain()
                .filter_map(|uid| self.fleet.observe(&uid))
                .collect()
        };
        let desired = Arc::clone(planner.desired());
        for snap in snapshots {
            let known = planner.agent(&snap.uid).is_some();
            let resumed = if known {
                None
            } else {
                self.resumed_agents.remove(&snap.uid)
            };
            let mut relabelled = false;
            let mut sent = None;
            let mut packages = packages::Folded::Nothing;
            let reading_its_row = self.awaiting_evidence.contains(&snap.uid);
            planner.update(snap.uid, |agent| {
                if let Some(resumed) = resumed {
                    *agent = resumed;
                }
                sent = fold_sent(&snap, agent);
                relabelled = observe_into(&snap, agent);
                agent.awaiting_report |= reading_its_row;
                packages = packages::fold(&snap, agent, &desired);
                relabelled
            });
            if let packages::Folded::Ignored(all_hash) = packages {
                self.state.emit(Event::PackageStatusIgnored {
                    agent: snap.uid,
                    all_hash,
                });
            }
            if let Some(hash) = sent {
                observed.sent.push((snap.uid, hash));
                self.handed_over.remove(&snap.uid);
            }
            if relabelled || !known {
                observed.labels_changed.insert(snap.uid);
            }
            if lagged || !known {
                self.described.insert(snap.uid);
            }
            observed.snapshots.insert(snap.uid, snap);
        }
        observed
    }
}

/// A config that went out in a reply (the registry's `last_sent`) that the record does not have
/// yet: recorded as the agent's send. Returns its hash, to be counted.
fn fold_sent(snap: &AgentSnapshot, agent: &mut ObservedAgent) -> Option<ConfigHash> {
    let sent = snap.last_sent?;
    let hash = ConfigHash(sent.hash);
    let at = unix_ms(sent.at);
    if agent.sent_hash == Some(hash) && agent.sent_at == Some(at) {
        return None;
    }
    agent.note_push(hash, at, Some(sent.conn));
    Some(hash)
}

/// What the registry saw of one agent, folded into its record. Labels come from the agent's
/// description; until it sends one (a reconnect after a restart) they stay what the record had
/// (the store's, for a resumed agent). Remote config statuses are folded in the order they
/// came, so a FAILED report followed by the rollback's APPLIED between two plans leaves both
/// marks. Returns whether the labels changed.
fn observe_into(snap: &AgentSnapshot, agent: &mut ObservedAgent) -> bool {
    if agent.instance_uid.is_empty() {
        agent.instance_uid = uid_text(&snap.uid);
    }
    let relabelled = match &snap.description {
        Some(d) if !d.labels_equal(&agent.labels) => {
            agent.labels = d.labels();
            true
        }
        _ => false,
    };
    let caps = snap.capabilities;
    agent.connected = snap.connection.connected;
    agent.connection = snap.connection.id.filter(|_| snap.connection.connected);
    agent.polls = snap.connection.transport == Transport::Http;
    agent.awaiting_report = snap.awaiting_report;
    agent.accepts_remote_config = caps & AgentCapabilities::AcceptsRemoteConfig as u64 != 0;
    agent.reports_remote_config = caps & AgentCapabilities::ReportsRemoteConfig as u64 != 0;
    agent.healthy = snap.health.as_ref().map(|h| h.healthy);
    // Received no later than its latest message: the time orders this report against what
    // other replicas recorded of the agent (`reconciler/evidence.rs`, the store's upsert).
    let at = unix_ms(snap.connection.last_seen);
    for status in &snap.unread_statuses {
        agent.observe_remote_config_status(&status.hash, reported(status), at);
    }
    relabelled
}

fn reported(status: &RemoteStatus) -> ReportedStatus {
    match status.status {
        RemoteState::Unset => ReportedStatus::Unset,
        RemoteState::Applied => ReportedStatus::Applied,
        RemoteState::Applying => ReportedStatus::Applying,
        RemoteState::Failed => ReportedStatus::Failed {
            error: status.error.clone(),
        },
    }
}

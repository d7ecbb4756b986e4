//! Replicas: what the shared database says of an agent whose messages went to other replicas.
//!
//! A replica learns an HTTP agent's state only from the polls that reach it. The full report it
//! asks for after a gap (gitamp-opamp's `AgentEntry::take_sequence`) says what the agent runs
//! now, but not what only the servers' records say: the hashes it reported FAILED to another
//! replica (a rolled-back agent reports APPLIED for its old config), a config another replica
//! sent to an agent that never acknowledges, and the connection settings another replica offered
//! it (an agent that accepts them reconnects on each offer, so this replica must not offer the
//! same again). Those are in the shared `agents` table. So when such an agent comes (back) to
//! this replica, its row is read and folded into the plan's record and the registry's offers,
//! and the plan sends it nothing until then. One batched read per agent that came from
//! elsewhere; none for an agent whose messages keep reaching this replica, and none without
//! replicas.

use std::collections::HashMap;
use std::sync::Arc;

use gitamp_core::plan::{ObservedAgent, ReportedStatus};
use gitamp_opamp::Uid;
use gitamp_opamp::offers::SentOffer;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::Reconciler;
use super::persist::{agents_from_records, offers_from_records};
use crate::server::state::AppState;

/// The agents asked about, and the rows found for them (none for an agent the database does not
/// know, or when it could not be read: the replica then decides from its own record): the
/// planner's part, and the last connection-settings offer another replica sent.
pub(super) type Answer = (
    Vec<Uid>,
    HashMap<Uid, ObservedAgent>,
    HashMap<Uid, SentOffer>,
);

/// Start the reader: it takes the agents to read, reads them in batches, and answers.
pub(super) fn spawn(
    state: Arc<AppState>,
) -> (mpsc::UnboundedSender<Uid>, mpsc::UnboundedReceiver<Answer>) {
    let (ask, mut asked) = mpsc::unbounded_channel::<Uid>();
    let (answer, answers) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(first) = asked.recv().await {
            let mut batch = vec![first];
            while let Ok(uid) = asked.try_recv() {
                batch.push(uid);
            }
            let (found, offers) = match state.cluster.load_full() {
                Some(cluster) => {
                    let uids: Vec<String> = batch.iter().map(hex::encode).collect();
                    match cluster.store().agent_resume_of(&uids).await {
                        Ok(rows) => (agents_from_records(&rows), offers_from_records(&rows)),
                        Err(err) => {
                            warn!(error = %err, agents = batch.len(), "Reading agents from the database failed; deciding from this replica's records.");
                            Default::default()
                        }
                    }
                }
                None => Default::default(),
            };
            debug!(
                asked = batch.len(),
                found = found.len(),
                "Read agents that came from other replicas."
            );
            if answer.send((batch, found, offers)).is_err() {
                return;
            }
        }
    });
    (ask, answers)
}

impl Reconciler {
    /// An agent came to this replica from elsewhere (it connected, or the full report asked for
    /// after a gap arrived): read its row before planning a push to it. Only on replicas.
    pub(super) fn ask_evidence(&mut self, uid: Uid) {
        let Some(ask) = &self.evidence else {
            return;
        };
        if self.state.cluster.load().is_none() || !self.awaiting_evidence.insert(uid) {
            return;
        }
        if ask.send(uid).is_err() {
            self.awaiting_evidence.remove(&uid);
        }
    }

    /// Fold the rows read into the agents' records and plan them again; hand the registry what
    /// the agents were offered elsewhere (an offer due now goes out, and is stored at the plan).
    pub(super) fn on_evidence(&mut self, (asked, found, offers): Answer) {
        for uid in asked {
            self.awaiting_evidence.remove(&uid);
            self.dirty.insert(uid);
            self.fleet.resume_offer(&uid, offers.get(&uid).copied());
            let Some(stored) = found.get(&uid) else {
                continue;
            };
            match self.planner.as_mut() {
                Some(planner) if planner.agent(&uid).is_some() => {
                    planner.update(uid, |agent| {
                        merge(agent, stored);
                        false
                    });
                }
                // Not planned here yet: its first observation starts from the row.
                _ => {
                    self.resumed_agents
                        .entry(uid)
                        .and_modify(|resumed| merge(resumed, stored))
                        .or_insert_with(|| stored.clone());
                }
            }
        }
    }
}

/// What another replica recorded, added to this replica's record of the agent: the hashes it
/// reported FAILED (unless it reports that very hash APPLIED now), the last one it applied if
/// that report is newer than ours (a later APPLIED that reached another replica is what a
/// rollback must send), why it last failed if this record has none, and a later send.
fn merge(agent: &mut ObservedAgent, stored: &ObservedAgent) {
    for hash in &stored.failed_hashes {
        let applied_now =
            agent.reported_hash == Some(*hash) && agent.reported_status == ReportedStatus::Applied;
        if !applied_now {
            agent.failed_hashes.insert(*hash);
        }
    }
    if stored.last_applied.is_some()
        && (agent.last_applied.is_none() || stored.last_applied_at > agent.last_applied_at)
    {
        agent.last_applied = stored.last_applied;
        agent.last_applied_at = stored.last_applied_at;
    }
    if agent.last_error.is_none() {
        agent.last_error.clone_from(&stored.last_error);
    }
    if let (Some(hash), Some(at)) = (stored.sent_hash, stored.sent_at)
        && agent.sent_at.is_none_or(|ours| at > ours)
    {
        agent.sent_hash = Some(hash);
        agent.sent_at = Some(at);
        agent.sent_on = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gitamp_core::ConfigHash;

    fn h(b: u8) -> ConfigHash {
        ConfigHash([b; 32])
    }

    #[test]
    fn another_replicas_failures_and_later_sends_are_added_the_agents_own_report_wins() {
        let mut stored = ObservedAgent::new("a");
        stored.failed_hashes.extend([h(2), h(3)]);
        stored.last_applied = Some(h(1));
        stored.last_applied_at = Some(1_000);
        stored.sent_hash = Some(h(2));
        stored.sent_at = Some(2_000);
        let mut ours = ObservedAgent::new("a");
        ours.observe_remote_config_status(&[3; 32], ReportedStatus::Applied, 5_000);
        ours.sent_hash = Some(h(1));
        ours.sent_at = Some(1_000);
        ours.sent_on = Some(7);
        merge(&mut ours, &stored);
        assert!(ours.failed_hashes.contains(&h(2)));
        assert!(
            !ours.failed_hashes.contains(&h(3)),
            "it applies that hash now"
        );
        assert_eq!(ours.last_applied, Some(h(3)), "its own report is newer");
        assert_eq!(
            (ours.sent_hash, ours.sent_at, ours.sent_on),
            (Some(h(2)), Some(2_000), None)
        );
        // An older send does not replace a newer one.
        stored.sent_at = Some(500);
        stored.sent_hash = Some(h(9));
        merge(&mut ours, &stored);
        assert_eq!(ours.sent_hash, Some(h(2)));
        // A later APPLIED that reached another replica is the rollback's target, not ours.
        stored.last_applied = Some(h(4));
        stored.last_applied_at = Some(9_000);
        merge(&mut ours, &stored);
        assert_eq!(
            (ours.last_applied, ours.last_applied_at),
            (Some(h(4)), Some(9_000))
        );
        // A row without a time (written before it had one) fills only an empty record.
        stored.last_applied = Some(h(5));
        stored.last_applied_at = None;
        merge(&mut ours, &stored);
        assert_eq!(ours.last_applied, Some(h(4)));
        let mut empty = ObservedAgent::new("a");
        merge(&mut empty, &stored);
        assert_eq!(empty.last_applied, Some(h(5)));
    }
}

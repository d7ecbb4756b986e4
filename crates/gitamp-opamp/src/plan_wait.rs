//! Poll replies that wait a moment for a decision under way.
//!
//! A WebSocket agent is pushed its config the moment the planner decides it; a polling (HTTP)
//! agent only gets it in a reply. Without waiting, a poll that lands between a change and the
//! plan on it is answered empty, and the agent hears nothing for a whole poll interval: a new
//! agent's first poll always did (the planner had not seen it yet), and so did every poll that
//! came in while a new revision was being planned. So a reply that could carry a config, while
//! a plan that may decide one is under way, waits for that plan (bounded by
//! `OpampSettings::poll_reply_wait`) and then takes what it handed over.
//!
//! Which plan: the planner counts the fleet events it has taken in (the registry counts those it
//! sent, under the lock it sends them with, so both count in the same order) and the revisions
//! it was told of, and marks both when a plan is done. A reply waits for the mark that covers
//! its own message's events, and the latest revision.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

/// The longest a reply waits for a new revision's plan (counted from the poll, the reply's own
/// limit included): past it, the server is too busy for holding replies to help.
pub const REVISION_PLAN_WAIT: Duration = Duration::from_secs(10);

/// How far plans have got: fleet events taken in, and served revisions, both counted from the
/// registry's start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanMark {
    /// Fleet events (in the order the registry sent them).
    pub events: u64,
    /// Revisions the planner was told of ([`PlanBarrier::expect_plan`]).
    pub revisions: u64,
}

impl PlanMark {
    /// Whether a plan that got to `self` has decided on everything `wanted` names.
    pub fn covers(&self, wanted: &PlanMark) -> bool {
        self.events >= wanted.events && self.revisions >= wanted.revisions
    }

    /// The mark of a planner that waits on revisions only: it covers every event, so a reply
    /// never waits for the plan on a report, only for the plan on a new revision. A replica's
    /// (whom a config goes to on a report is admitted fleet-wide by the leader, later).
    pub fn revisions_only(self) -> PlanMark {
        PlanMark {
            events: u64::MAX,
            ..self
        }
    }
}

/// The registry's side: events counted as they are sent, revisions as they are served, and the
/// planner's last mark (none until a planner attaches: then nothing ever waits).
#[derive(Debug)]
pub(crate) struct PlanBarrier {
    sent: Mutex<u64>,
    revisions: AtomicU64,
    planned: watch::Sender<Option<PlanMark>>,
}

impl Default for PlanBarrier {
    fn default() -> Self {
        PlanBarrier {
            sent: Mutex::new(0),
            revisions: AtomicU64::new(0),
            planned: watch::Sender::new(None),
        }
    }
}

impl PlanBarrier {
    /// Sends `event` and returns its number (the first is 1).
    pub(crate) fn send<T: Clone>(&self, events: &broadcast::Sender<T>, event: T) -> u64 {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        *sent += 1;
        // No receiver is not an error: nobody is listening yet.
        let _ = events.send(event);
        *sent
    }

    /// How many events were sent before the first one `rx` has still to read.
    pub(crate) fn seen_by<T: Clone>(&self, rx: &broadcast::Receiver<T>) -> u64 {
        let sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        sent.saturating_sub(rx.len() as u64)
    }

    pub(crate) fn expect_plan(&self) {
        self.revisions.fetch_add(1, Ordering::SeqCst);
    }

    /// `events` events and every revision served so far: what a plan starting now, having
    /// taken in `events` events, will have reached, and what a reply whose message sent event
    /// `events` (0: none) waits for.
    pub(crate) fn mark(&self, events: u64) -> PlanMark {
        PlanMark {
            events,
            revisions: self.revisions.load(Ordering::SeqCst),
        }
    }

    pub(crate) fn planned(&self, mark: PlanMark) {
        self.planned.send_if_modified(|last| {
            let next = match *last {
                Some(l) => PlanMark {
                    events: l.events.max(mark.events),
                    revisions: l.revisions.max(mark.revisions),
                },
                None => mark,
            };
            let changed = *last != Some(next);
            *last = Some(next);
            changed
        });
    }

    /// Whether a plan may still decide something for `ticket`'s reply.
    pub(crate) fn pending(&self, ticket: &PlanMark) -> bool {
        self.planned
            .borrow()
            .is_some_and(|planned| !planned.covers(ticket))
    }

    /// Waits until the plans cover `ticket`, at most `limit`; says whether they did. A new
    /// revision's plan still under way when `limit` passes is waited for longer, up to
    /// [`REVISION_PLAN_WAIT`] in all: it ends by itself (it is not waiting on anyone), and a
    /// reply sent without it leaves its agent a whole poll interval behind the revision (a
    /// replica's plan of a revision over its 50,000 polling agents, on a busy 2-core machine,
    /// handed its first config over up to 1.7 s after the webhook).
    pub(crate) async fn wait(&self, ticket: PlanMark, limit: Duration) -> bool {
        let mut rx = self.planned.subscribe();
        let done = |m: &Option<PlanMark>| m.is_none_or(|m| m.covers(&ticket));
        if tokio::time::timeout(limit, rx.wait_for(done))
            .await
            .is_ok_and(|r| r.is_ok())
        {
            return true;
        }
        let revision_planned =
            |m: &Option<PlanMark>| m.is_none_or(|m| m.revisions >= ticket.revisions);
        if revision_planned(&rx.borrow()) {
            return false;
        }
        let rest = REVISION_PLAN_WAIT.saturating_sub(limit);
        let _ = tokio::time::timeout(rest, rx.wait_for(revision_planned)).await;
        done(&rx.borrow())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_reply_waits_for_the_plan_that_covers_it_and_no_longer_than_its_limit() {
        let barrier = PlanBarrier::default();
        let (tx, mut rx) = broadcast::channel(8);
        // No planner attached: nothing is pending, nothing waits.
        let own = barrier.send(&tx, 1u8);
        assert!(!barrier.pending(&barrier.mark(own)));
        barrier.planned(barrier.mark(0));
        let ticket = barrier.mark(own);
        assert!(barrier.pending(&ticket));
        assert!(!barrier.wait(ticket, Duration::from_millis(500)).await);
        // The planner takes the event in and plans.
        rx.recv().await.unwrap();
        assert_eq!(barrier.seen_by(&rx), 1);
        barrier.planned(barrier.mark(1));
        assert!(barrier.wait(ticket, Duration::from_millis(500)).await);
        // A new revision: every reply waits for the plan on it.
        barrier.expect_plan();
        let ticket = barrier.mark(0);
        assert!(barrier.pending(&ticket));
        let planning = barrier.mark(1);
        barrier.planned(planning);
        assert!(!barrier.pending(&ticket));
    }

    /// A replica's planner: replies never wait for the plan on their own report, but do for
    /// the plan on a new revision.
    #[tokio::test(start_paused = true)]
    async fn a_revisions_only_mark_holds_replies_for_a_new_revision_alone() {
        let barrier = PlanBarrier::default();
        let (tx, _rx) = broadcast::channel(8);
        barrier.planned(barrier.mark(0).revisions_only());
        let own = barrier.send(&tx, 1u8);
        assert!(
            !barrier.pending(&barrier.mark(own)),
            "a report's reply goes at once"
        );
        barrier.expect_plan();
        let ticket = barrier.mark(barrier.send(&tx, 2u8));
        assert!(
            barrier.pending(&ticket),
            "a new revision's plan is under way"
        );
        assert!(!barrier.wait(ticket, Duration::from_millis(500)).await);
        // The plan on the revision starts (having taken in no event) and ends.
        let planning = barrier.mark(0).revisions_only();
        barrier.planned(planning);
        assert!(barrier.wait(ticket, Duration::from_millis(500)).await);
        let own = barrier.send(&tx, 3u8);
        assert!(!barrier.pending(&barrier.mark(own)));
    }

    /// A new revision's plan that outlasts a reply's limit is waited for, up to
    /// `REVISION_PLAN_WAIT`; a plan on a report is not.
    #[tokio::test(start_paused = true)]
    async fn a_reply_waits_past_its_limit_for_a_new_revisions_plan_alone() {
        let barrier = std::sync::Arc::new(PlanBarrier::default());
        let (tx, _rx) = broadcast::channel(8);
        barrier.planned(barrier.mark(0));
        let limit = Duration::from_secs(2);

        // A plan on the agent's own report that takes 5 s: the reply goes at its limit.
        let ticket = barrier.mark(barrier.send(&tx, 1u8));
        let started = tokio::time::Instant::now();
        assert!(!barrier.wait(ticket, limit).await);
        assert_eq!(started.elapsed(), limit);
        barrier.planned(barrier.mark(1));

        // A new revision's plan that takes 5 s: the reply waits for it.
        barrier.expect_plan();
        let ticket = barrier.mark(1);
        let planner = barrier.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            planner.planned(planner.mark(1));
        });
        let started = tokio::time::Instant::now();
        assert!(barrier.wait(ticket, limit).await);
        assert_eq!(started.elapsed(), Duration::from_secs(5));

        // One that never ends: the reply goes at `REVISION_PLAN_WAIT`.
        barrier.expect_plan();
        let ticket = barrier.mark(1);
        let started = tokio::time::Instant::now();
        assert!(!barrier.wait(ticket, limit).await);
        assert_eq!(started.elapsed(), REVISION_PLAN_WAIT);
    }

    #[test]
    fn seen_by_counts_what_the_receiver_has_not_read_as_unseen() {
        let barrier = PlanBarrier::default();
        let (tx, _keep) = broadcast::channel(8);
        barrier.send(&tx, 1u8);
        let rx = tx.subscribe();
        assert_eq!(barrier.seen_by(&rx), 1);
        barrier.send(&tx, 2u8);
        barrier.send(&tx, 3u8);
        assert_eq!(barrier.seen_by(&rx), 1);
    }
}

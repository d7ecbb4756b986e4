//! The one rule that decides whether a config goes out to an agent now.
//!
//! Every push passes here, in the server and in the dry run alike, and the answer says when to
//! look again (kube-runtime's `Action::requeue`): the server's reconciler sleeps until the
//! earliest such time instead of waking on a fixed tick. The transport never decides; it only
//! delivers what the plan handed it.

use crate::config_map::ConfigHash;
use crate::plan::Timing;
use crate::plan::observed::ObservedAgent;

/// The answer of [`push_decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushDecision {
    /// Send it now.
    Now,
    /// Not before this time (ms since the Unix epoch): then ask again.
    At(u64),
    /// Not until something about the agent changes (a report, a reconnect, a new hash).
    Not,
}

/// Whether `hash` goes to `agent` now.
///
/// Never to an agent that is disconnected, does not accept remote config, already reports
/// `hash`, or reported `hash` FAILED (no re-push loops, including after a rollback). Never
/// before the full report the server asked for ([`ObservedAgent::awaiting_report`]). A hash
/// not yet sent goes now. A hash already sent goes again only when it may have been lost:
/// - never, to an agent that does not acknowledge (it gets each hash once);
/// - at once, to an agent that drifted from it (once: the push clears `synced_hash`);
/// - to a polling (HTTP) agent, once `timing.poll_resend_after_ms` has passed since the
///   send: its next poll may still cross the reply that carried the config (clients build a
///   poll before handling the last reply), and a lost reply is offered again on the poll after;
/// - to a pushed-to (WebSocket) agent, at once on a new connection (the old one may have
///   taken the frame with it), else once `timing.resend_after_ms` has passed.
pub fn push_decision(agent: &ObservedAgent, hash: ConfigHash, timing: Timing) -> PushDecision {
    if !agent.connected
        || !agent.accepts_remote_config
        || agent.reported_hash == Some(hash)
        || agent.failed_hashes.contains(&hash)
    {
        return PushDecision::Not;
    }
    if agent.awaiting_report {
        return PushDecision::Not;
    }
    if agent.sent_hash != Some(hash) {
        return PushDecision::Now;
    }
    if !agent.reports_remote_config {
        return PushDecision::Not;
    }
    if agent.synced_hash == Some(hash) {
        return PushDecision::Now;
    }
    let Some(sent_at) = agent.sent_at else {
        return PushDecision::Now;
    };
    let after = if agent.polls {
        timing.poll_resend_after_ms
    } else {
        if agent.sent_on.is_some() && agent.sent_on != agent.connection {
            return PushDecision::Now;
        }
        timing.resend_after_ms
    };
    let due = sent_at.saturating_add(after);
    if timing.now_ms >= due {
        PushDecision::Now
    } else {
        PushDecision::At(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn h(b: u8) -> ConfigHash {
        ConfigHash([b; 32])
    }

    fn sent(polls: bool) -> ObservedAgent {
        let mut a = ObservedAgent::new("a");
        a.polls = polls;
        a.connection = Some(1);
        a.note_push(h(1), T0, Some(1));
        a
    }

    #[test]
    fn first_send_goes_now_and_guards_hold() {
        let a = ObservedAgent::new("a");
        assert_eq!(push_decision(&a, h(1), Timing::at(T0)), PushDecision::Now);
        let mut b = a.clone();
        b.connected = false;
        assert_eq!(push_decision(&b, h(1), Timing::at(T0)), PushDecision::Not);
        let mut b = a.clone();
        b.accepts_remote_config = false;
        assert_eq!(push_decision(&b, h(1), Timing::at(T0)), PushDecision::Not);
        let mut b = a.clone();
        b.failed_hashes.insert(h(1));
        assert_eq!(push_decision(&b, h(1), Timing::at(T0)), PushDecision::Not);
        let mut b = a.clone();
        b.reported_hash = Some(h(1));
        assert_eq!(push_decision(&b, h(1), Timing::at(T0)), PushDecision::Not);
    }

    #[test]
    fn waits_for_the_full_report_it_asked_for() {
        let mut a = ObservedAgent::new("a");
        a.awaiting_report = true;
        assert_eq!(push_decision(&a, h(1), Timing::at(T0)), PushDecision::Not);
        // A status heard before the request may be out of date (another server's reply
        // carried a config since): still not.
        a.reported_hash = Some(h(2));
        assert_eq!(push_decision(&a, h(1), Timing::at(T0)), PushDecision::Not);
        a.awaiting_report = false;
        assert_eq!(push_decision(&a, h(1), Timing::at(T0)), PushDecision::Now);
    }

    #[test]
    fn polling_agent_is_offered_again_after_the_poll_window() {
        let a = sent(true);
        let due = T0 + Timing::DEFAULT_POLL_RESEND_AFTER_MS;
        assert_eq!(
            push_decision(&a, h(1), Timing::at(T0 + 1)),
            PushDecision::At(due)
        );
        assert_eq!(push_decision(&a, h(1), Timing::at(due)), PushDecision::Now);
    }

    #[test]
    fn pushed_to_agent_gets_it_again_on_a_new_connection_or_after_the_resend_interval() {
        let mut a = sent(false);
        let due = T0 + Timing::DEFAULT_RESEND_AFTER_MS;
        assert_eq!(
            push_decision(&a, h(1), Timing::at(T0 + 1)),
            PushDecision::At(due)
        );
        assert_eq!(push_decision(&a, h(1), Timing::at(due)), PushDecision::Now);
        a.connection = Some(2);
        assert_eq!(
            push_decision(&a, h(1), Timing::at(T0 + 1)),
            PushDecision::Now
        );
    }

    #[test]
    fn never_acknowledging_agent_gets_each_hash_once() {
        let mut a = sent(false);
        a.reports_remote_config = false;
        let much_later = Timing::at(T0 + 100 * Timing::DEFAULT_RESEND_AFTER_MS);
        assert_eq!(push_decision(&a, h(1), much_later), PushDecision::Not);
        assert_eq!(push_decision(&a, h(2), much_later), PushDecision::Now);
    }

    #[test]
    fn drifted_agent_is_sent_the_hash_again_at_once() {
        let mut a = sent(false);
        a.synced_hash = Some(h(1));
        a.reported_hash = Some(h(9));
        assert_eq!(
            push_decision(&a, h(1), Timing::at(T0 + 1)),
            PushDecision::Now
        );
    }
}

//! Tests of the plan, one per status rule and rollout transition, named after the rule.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::catalog::model::{OnFailure, Quantity, RolloutPolicy, RolloutStrategy, Selector};

const T0: u64 = 1_000_000;

fn h(n: u8) -> ConfigHash {
    ConfigHash([n; 32])
}

fn one() -> Selection {
    Selection::One("web".into())
}

fn agent(uid: &str) -> ObservedAgent {
    ObservedAgent::new(uid)
}

fn now() -> Timing {
    Timing::at(T0)
}

fn plan_reached(a: &ObservedAgent, desired: ConfigHash) -> AgentPlan {
    plan_agent(a, &one(), Some(desired), true, OnFailure::Keep, now())
}

fn batched(size: u64, max_failures: Option<u64>) -> RolloutPolicy {
    RolloutPolicy {
        strategy: RolloutStrategy::Batched,
        batch_size: Some(Quantity::Count(size)),
        max_failures: max_failures.map(Quantity::Count),
        ..Default::default()
    }
}

fn progress(pairs: &[(&str, SyncStatus)]) -> BTreeMap<String, AgentProgress> {
    pairs
        .iter()
        .map(|(u, s)| (u.to_string(), AgentProgress::from(*s)))
        .collect()
}

// ---- status rules -------------------------------------------------------------------------

#[test]
fn unmanaged_agent_is_left_alone() {
    let p = plan_agent(
        &agent("a"),
        &Selection::None,
        None,
        true,
        OnFailure::Keep,
        now(),
    );
    assert_eq!(
        (p.status, p.action),
        (SyncStatus::Unmanaged, Action::Nothing)
    );
}

#[test]
fn conflict_gets_nothing() {
    let sel = Selection::Conflict(vec!["a".into(), "b".into()]);
    let p = plan_agent(&agent("a"), &sel, Some(h(1)), true, OnFailure::Keep, now());
    assert_eq!(
        (p.status, p.action),
        (SyncStatus::Conflict, Action::Nothing)
    );
    assert_eq!(
        p.detail.as_deref(),
        Some("selected by a, b at the same priority")
    );
}

#[test]
fn incompatible_agent_never_pushed() {
    let mut a = agent("a");
    a.accepts_remote_config = false;
    let p = plan_reached(&a, h(1));
    assert_eq!(
        (p.status, p.action),
        (SyncStatus::Incompatible, Action::Nothing)
    );
}

#[test]
fn disconnected_agent_gets_nothing() {
    let mut a = agent("a");
    a.connected = false;
    let p = plan_reached(&a, h(1));
    assert_eq!(
        (p.status, p.action),
        (SyncStatus::Disconnected, Action::Nothing)
    );
}

#[test]
fn pending_agent_is_pushed_when_reached() {
    let p = plan_reached(&agent("a"), h(1));
    assert_eq!(
        (p.status, p.action),
        (SyncStatus::Pending, Action::Push(h(1)))
    );
}

#[test]
fn pending_agent_waits_until_rollout_reaches_it() {
    let p = plan_agent(
        &agent("a"),
        &one(),
        Some(h(1)),
        false,
        OnFailure::Keep,
        now(),
    );
    assert_eq!((p.status, p.action), (SyncStatus::Pending, Action::Wait));
}

#[test]
fn decided_on_hash_alone_whatever_the_status() {
    let mut a = agent("a");
    // Matching hash with UNSET status: synced, nothing sent (no resend loop).
    a.reported_hash = Some(h(1));
    a.reported_status = ReportedStatus::Unset;
    assert_eq!(plan_reached(&a, h(1)).action, Action::Nothing);
    assert_eq!(plan_reached(&a, h(1)).status, SyncStatus::Synced);
    // Another hash reported APPLIED: pushed.
    a.reported_hash = Some(h(2));
    a.reported_status = ReportedStatus::Applied;
    assert_eq!(plan_reached(&a, h(1)).action, Action::Push(h(1)));
}

#[test]
fn synced_on_desired_hash_even_with_older_failure_recorded() {
    let mut a = agent("a");
    a.failed_hashes.insert(h(9));
    a.observe_remote_config_status(&[1; 32], ReportedStatus::Applied, T0);
    let p = plan_reached(&a, h(1));
    assert_eq!((p.status, p.action), (SyncStatus::Synced, Action::Nothing));
}

#[test]
fn reported_applying_for_desired_hash_is_applying_and_not_pushed() {
    let mut a = agent("a");
    a.observe_remote_config_status(&[1; 32], ReportedStatus::Applying, T0);
    let p = plan_reached(&a, h(1));
    assert_eq!(
        (p.status, p.action),
        (SyncStatus::Applying, Action::Nothing)
    );
}

#[test]
fn failed_for_desired_hash_is_failed_and_not_repushed() {
    let mut a = agent("a");
    a.note_push(h(1), T0, None);
    a.observe_remote_config_status(
        &[1; 32],
        ReportedStatus::Failed {
            error: "bad exporter".into(),
        },
        T0,
    );
    let p = plan_reached(&a, h(1));
    assert_eq!((p.status, p.action), (SyncStatus::Failed, Action::Nothing));
    assert_eq!(p.detail.as_deref(), Some("bad exporter"));
    // Long after the resend interval: still nothing.
    let later = Timing::at(T0 + 10 * Timing::DEFAULT_RESEND_AFTER_MS);
    assert_eq!(
        plan_agent(&a, &one(), Some(h(1)), true, OnFailure::Keep, later).action,
        Action::Nothing
    );
}

#[test]
fn failed_hash_is_not_repushed_after_rollback_to_older_hash() {
    // Supervisor with rollback: APPLIED(A) -> APPLYING(B) -> FAILED(B) -> APPLIED(A).
    let mut a = agent("a");
    a.observe_remote_config_status(&[0xA; 32], ReportedStatus::Applied, T0);
    a.note_push(h(0xB), T0, None);
    a.observe_remote_config_status(&[0xB; 32], ReportedStatus::Applying, T0);
    a.observe_remote_config_status(&[0xB; 32], ReportedStatus::Failed { error: "x".into() }, T0);
    a.observe_remote_config_status(&[0xA; 32], ReportedStatus::Applied, T0);
    let p = plan_reached(&a, h(0xB));
    assert_eq!(
        (p.status, p.action),
        (SyncStatus::RolledBack, Action::Nothing)
    );
    assert_eq!(
        p.detail.as_deref(),
        Some("rolled back to 0a0a0a0a0a0a: agent reported FAILED for 0b0b0b0b0b0b: x")
    );
}

fn failed_after_applying(good: u8, bad: u8) -> ObservedAgent {
    let mut a = agent("a");
    a.observe_remote_config_status(&[good; 32], ReportedStatus::Applied, T0);
    a.note_push(h(bad), T0, None);
    a.observe_remote_config_status(
        &[bad; 32],
        ReportedStatus::Failed {
            error: "invalid keys: batch/x".into(),
        },
        T0,
    );
    a
}

#[test]
fn rollback_sends_the_last_applied_config_once_then_reports_rolled_back() {
    let mut a = failed_after_applying(0xA, 0xB);
    let p = plan_agent(&a, &one(), Some(h(0xB)), true, OnFailure::Rollback, now());
    assert_eq!(
        (p.status, p.action),
        (SyncStatus::Failed, Action::Push(h(0xA)))
    );
    // The rollout need not reach it: it is already failed.
    let p = plan_agent(&a, &one(), Some(h(0xB)), false, OnFailure::Rollback, now());
    assert_eq!(p.action, Action::Push(h(0xA)));
    p.record_sent(&mut a, T0);
    // Sent, not acknowledged yet: not sent again within the resend interval.
    let p = plan_agent(&a, &one(), Some(h(0xB)), true, OnFailure::Rollback, now());
    assert_eq!((p.status, p.action), (SyncStatus::Failed, Action::Nothing));
    a.observe_remote_config_status(&[0xA; 32], ReportedStatus::Applying, T0);
    a.observe_remote_config_status(&[0xA; 32], ReportedStatus::Applied, T0);
    let p = plan_agent(&a, &one(), Some(h(0xB)), true, OnFailure::Rollback, now());
    assert_eq!(
        (p.status, p.action),
        (SyncStatus::RolledBack, Action::Nothing)
    );
    assert!(p.detail.unwrap().contains("invalid keys: batch/x"));
    // A new commit (another desired hash) goes out to it as to anyone.
    let p = plan_agent(&a, &one(), Some(h(0xC)), true, OnFailure::Rollback, now());
    assert_eq!(
        (p.status, p.action),
        (SyncStatus::Pending, Action::Push(h(0xC)))
    );
}

#[test]
fn rollback_never_pushes_the_failed_hash_and_needs_an_applied_config() {
    // Never applied anything: nothing to roll back to.
    let mut a = agent("a");
    a.note_push(h(0xB), T0, None);
    a.observe_remote_config_status(&[0xB; 32], ReportedStatus::Failed { error: "x".into() }, T0);
    let p = plan_agent(&a, &one(), Some(h(0xB)), true, OnFailure::Rollback, now());
    assert_eq!((p.status, p.action), (SyncStatus::Failed, Action::Nothing));
    // Keep: a failed agent is left alone.
    let a = failed_after_applying(0xA, 0xB);
    let p = plan_agent(&a, &one(), Some(h(0xB)), true, OnFailure::Keep, now());
    assert_eq!((p.status, p.action), (SyncStatus::Failed, Action::Nothing));
    // A disconnected agent gets nothing.
    let mut a = failed_after_applying(0xA, 0xB);
    a.connected = false;
    let p = plan_agent(&a, &one(), Some(h(0xB)), true, OnFailure::Rollback, now());
    assert_eq!(p.action, Action::Nothing);
}

#[test]
fn rolled_back_agents_count_as_failures_of_the_rollout() {
    let mut r = Rollout::new("web", h(1), batched(1, Some(0)));
    let d = r.step(&progress(&[
        ("a", SyncStatus::RolledBack),
        ("b", SyncStatus::Pending),
    ]));
    assert!(matches!(d, RolloutDecision::Halted { .. }), "{d:?}");
    assert_eq!(r.failed, 1);
}

#[test]
fn failed_stays_failed_until_desired_hash_changes() {
    let mut a = agent("a");
    a.observe_remote_config_status(&[2; 32], ReportedStatus::Failed { error: "x".into() }, T0);
    assert_eq!(plan_reached(&a, h(2)).status, SyncStatus::Failed);
    let p = plan_reached(&a, h(3));
    assert_eq!(
        (p.status, p.action),
        (SyncStatus::Pending, Action::Push(h(3)))
    );
}

#[test]
fn operator_retry_allows_repush_of_failed_hash() {
    let mut a = agent("a");
    a.observe_remote_config_status(&[2; 32], ReportedStatus::Failed { error: "x".into() }, T0);
    a.observe_remote_config_status(&[1; 32], ReportedStatus::Applied, T0);
    assert!(a.retry(&h(2)));
    assert_eq!(plan_reached(&a, h(2)).action, Action::Push(h(2)));
}

#[test]
fn operator_retry_repushes_to_agent_still_reporting_failed() {
    let mut a = agent("a");
    a.note_push(h(2), T0, None);
    a.observe_remote_config_status(&[2; 32], ReportedStatus::Failed { error: "x".into() }, T0);
    assert_eq!(plan_reached(&a, h(2)).action, Action::Nothing);
    assert!(a.retry(&h(2)));
    let p = plan_reached(&a, h(2));
    assert_eq!(
        (p.status, p.action),
        (SyncStatus::Pending, Action::Push(h(2)))
    );
    p.record_sent(&mut a, T0 + 1);
    // Fails again: remembered again, not pushed again.
    a.observe_remote_config_status(&[2; 32], ReportedStatus::Failed { error: "x".into() }, T0);
    assert_eq!(plan_reached(&a, h(2)).status, SyncStatus::Failed);
    assert_eq!(plan_reached(&a, h(2)).action, Action::Nothing);
}

#[test]
fn agent_without_reports_remote_config_is_pushed_once() {
    let mut a = agent("a");
    a.reports_remote_config = false;
    let p = plan_reached(&a, h(1));
    assert_eq!(p.action, Action::Push(h(1)));
    p.record_sent(&mut a, T0);
    // Counted Synced once sent (it never acknowledges), and never sent again, even much later.
    let later = Timing::at(T0 + 100 * Timing::DEFAULT_RESEND_AFTER_MS);
    let p = plan_agent(&a, &one(), Some(h(1)), true, OnFailure::Keep, later);
    assert_eq!((p.status, p.action), (SyncStatus::Synced, Action::Nothing));
    // A new desired hash is sent, once.
    assert_eq!(plan_reached(&a, h(2)).action, Action::Push(h(2)));
}

#[test]
fn sent_but_unacknowledged_is_applying() {
    let mut a = agent("a");
    plan_reached(&a, h(1)).record_sent(&mut a, T0);
    let p = plan_reached(&a, h(1));
    assert_eq!(
        (p.status, p.action),
        (SyncStatus::Applying, Action::Nothing)
    );
}

#[test]
fn applying_is_resent_only_after_resend_interval() {
    let mut a = agent("a");
    a.note_push(h(1), T0, None);
    let just_before = Timing::at(T0 + Timing::DEFAULT_RESEND_AFTER_MS - 1);
    assert_eq!(
        plan_agent(&a, &one(), Some(h(1)), true, OnFailure::Keep, just_before).action,
        Action::Nothing
    );
    let after = Timing::at(T0 + Timing::DEFAULT_RESEND_AFTER_MS);
    let p = plan_agent(&a, &one(), Some(h(1)), true, OnFailure::Keep, after);
    assert_eq!(
        (p.status, p.action),
        (SyncStatus::Applying, Action::Push(h(1)))
    );
    // Recorded: the interval starts again.
    p.record_sent(&mut a, after.now_ms);
    assert_eq!(
        plan_agent(&a, &one(), Some(h(1)), true, OnFailure::Keep, after).action,
        Action::Nothing
    );
}

#[test]
fn drifted_agent_is_repushed_once() {
    let mut a = agent("a");
    plan_reached(&a, h(1)).record_sent(&mut a, T0);
    a.observe_remote_config_status(&[1; 32], ReportedStatus::Applied, T0);
    let p = plan_reached(&a, h(1));
    assert_eq!(p.status, SyncStatus::Synced);
    p.record_sent(&mut a, T0);
    assert_eq!(a.synced_hash, Some(h(1)));
    // A local restore: it now reports another hash.
    a.observe_remote_config_status(&[7; 32], ReportedStatus::Applied, T0);
    let p = plan_reached(&a, h(1));
    assert_eq!(
        (p.status, p.action),
        (SyncStatus::Drifted, Action::Push(h(1)))
    );
    p.record_sent(&mut a, T0 + 1);
    let p = plan_reached(&a, h(1));
    assert_eq!(
        (p.status, p.action),
        (SyncStatus::Applying, Action::Nothing)
    );
}

#[test]
fn synced_on_another_hash_is_not_drifted() {
    let mut a = agent("a");
    a.synced_hash = Some(h(1));
    a.observe_remote_config_status(&[1; 32], ReportedStatus::Applied, T0);
    // Desired moved on to h(2): plain Pending, not Drifted.
    assert_eq!(plan_reached(&a, h(2)).status, SyncStatus::Pending);
}

#[test]
fn unrendered_configuration_is_pending_and_never_pushed() {
    let p = plan_agent(&agent("a"), &one(), None, true, OnFailure::Keep, now());
    assert_eq!((p.status, p.action), (SyncStatus::Pending, Action::Nothing));
}

#[test]
fn malformed_reported_hash_is_none() {
    let mut a = agent("a");
    a.observe_remote_config_status(&[], ReportedStatus::Unset, T0);
    assert_eq!(a.reported_hash, None);
    a.observe_remote_config_status(
        &[1; 31],
        ReportedStatus::Failed {
            error: String::new(),
        },
        T0,
    );
    assert_eq!(a.reported_hash, None);
    assert!(a.failed_hashes.is_empty());
}

#[test]
fn sync_status_serializes_lowercase() {
    let names: Vec<String> = SyncStatus::ALL
        .iter()
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .collect();
    for (s, n) in SyncStatus::ALL.iter().zip(&names) {
        assert_eq!(n, &format!("\"{}\"", s.as_str()));
    }
    assert_eq!(names[0], "\"synced\"");
}

// ---- rollout transitions ------------------------------------------------------------------

#[test]
fn all_at_once_admits_everyone() {
    let mut r = Rollout::new("web", h(1), RolloutPolicy::default());
    let st = progress(&[("b", SyncStatus::Pending), ("a", SyncStatus::Pending)]);
    assert_eq!(
        r.step(&st),
        RolloutDecision::Advanced {
            batch: 1,
            admitted: 2
        }
    );
    assert_eq!(
        r.step(&st),
        RolloutDecision::Waiting {
            in_flight: 2,
            unhealthy: 0
        }
    );
    assert!(r.admits("a") && r.admits("b") && r.admits("not-seen-yet"));
    assert_eq!(r.agents.iter().collect::<Vec<_>>(), ["a", "b"]);
}

#[test]
fn batched_rollout_waits_for_batch_to_apply() {
    let mut r = Rollout::new("web", h(1), batched(2, None));
    let mut st = progress(&[
        ("a", SyncStatus::Pending),
        ("b", SyncStatus::Pending),
        ("c", SyncStatus::Pending),
        ("d", SyncStatus::Pending),
    ]);
    assert_eq!(
        r.step(&st),
        RolloutDecision::Advanced {
            batch: 1,
            admitted: 2
        }
    );
    assert!(r.admits("a") && r.admits("b") && !r.admits("c"));
    // One of the batch is still applying: no new batch.
    st.insert("a".into(), SyncStatus::Synced.into());
    st.insert("b".into(), SyncStatus::Applying.into());
    assert_eq!(
        r.step(&st),
        RolloutDecision::Waiting {
            in_flight: 1,
            unhealthy: 0
        }
    );
    assert!(!r.admits("c"));
}

#[test]
fn batched_rollout_advances_when_batch_synced_then_completes() {
    let mut r = Rollout::new("web", h(1), batched(2, None));
    let mut st = progress(&[
        ("a", SyncStatus::Pending),
        ("b", SyncStatus::Pending),
        ("c", SyncStatus::Pending),
    ]);
    r.step(&st);
    st.insert("a".into(), SyncStatus::Synced.into());
    st.insert("b".into(), SyncStatus::Synced.into());
    assert_eq!(
        r.step(&st),
        RolloutDecision::Advanced {
            batch: 2,
            admitted: 1
        }
    );
    assert!(r.admits("c"));
    st.insert("c".into(), SyncStatus::Synced.into());
    assert_eq!(r.step(&st), RolloutDecision::Complete);
    assert_eq!(r.phase, RolloutPhase::Complete);
    assert_eq!((r.synced, r.failed, r.pending), (3, 0, 0));
    assert!(r.admits("late-joiner"));
}

#[test]
fn already_synced_fleet_completes_in_one_step() {
    let mut r = Rollout::new("web", h(1), batched(1, None));
    let st: BTreeMap<String, AgentProgress> = (0..1000)
        .map(|i| (format!("{i:04}"), SyncStatus::Synced.into()))
        .collect();
    assert_eq!(r.step(&st), RolloutDecision::Complete);
    assert_eq!(r.batch, 1000);
}

#[test]
fn unhealthy_synced_agent_holds_next_batch() {
    let mut r = Rollout::new("web", h(1), batched(1, None));
    let mut st = progress(&[("a", SyncStatus::Pending), ("b", SyncStatus::Pending)]);
    r.step(&st);
    st.insert(
        "a".into(),
        AgentProgress {
            status: SyncStatus::Synced,
            healthy: Some(false),
            failed_target: false,
        },
    );
    assert_eq!(
        r.step(&st),
        RolloutDecision::Waiting {
            in_flight: 0,
            unhealthy: 1
        }
    );
    assert!(!r.admits("b"));
    st.insert(
        "a".into(),
        AgentProgress {
            status: SyncStatus::Synced,
            healthy: Some(true),
            failed_target: false,
        },
    );
    assert_eq!(
        r.step(&st),
        RolloutDecision::Advanced {
            batch: 2,
            admitted: 1
        }
    );
}

#[test]
fn rollout_halts_when_failures_exceed_threshold() {
    // Default max_failures 0: the first failure halts.
    let mut r = Rollout::new("web", h(1), batched(1, None));
    let mut st = progress(&[("a", SyncStatus::Pending), ("b", SyncStatus::Pending)]);
    r.step(&st);
    st.insert("a".into(), SyncStatus::Failed.into());
    assert!(matches!(r.step(&st), RolloutDecision::Halted { .. }));
    assert!(matches!(r.phase, RolloutPhase::Halted { .. }));
    assert!(!r.admits("a") && !r.admits("b"));
    // Halted is sticky for this hash, even if the failure goes away.
    st.insert("a".into(), SyncStatus::Synced.into());
    assert!(matches!(r.step(&st), RolloutDecision::Halted { .. }));
}

#[test]
fn failures_within_threshold_count_and_let_rollout_continue() {
    let mut r = Rollout::new("web", h(1), batched(1, Some(1)));
    let mut st = progress(&[
        ("a", SyncStatus::Pending),
        ("b", SyncStatus::Pending),
        ("c", SyncStatus::Pending),
    ]);
    r.step(&st);
    st.insert("a".into(), SyncStatus::Failed.into());
    assert_eq!(
        r.step(&st),
        RolloutDecision::Advanced {
            batch: 2,
            admitted: 1
        }
    );
    assert_eq!(r.failed, 1);
    st.insert("b".into(), SyncStatus::Failed.into());
    assert!(matches!(r.step(&st), RolloutDecision::Halted { .. }));
    assert!(!r.admits("c"));
}

#[test]
fn percent_thresholds_resolve_against_scope() {
    let policy = RolloutPolicy {
        strategy: RolloutStrategy::Batched,
        batch_size: Some(Quantity::Percent(25.0)),
        max_failures: Some(Quantity::Percent(10.0)),
        ..Default::default()
    };
    let mut r = Rollout::new("web", h(1), policy);
    let st: BTreeMap<String, AgentProgress> = (0..10)
        .map(|i| (format!("{i}"), SyncStatus::Pending.into()))
        .collect();
    assert_eq!(
        r.step(&st),
        RolloutDecision::Advanced {
            batch: 1,
            admitted: 3
        }
    );
    assert_eq!(r.max_failures(), 1);
}

#[test]
fn all_at_once_counts_failures_and_halts_further_pushes() {
    let mut r = Rollout::new("web", h(1), RolloutPolicy::default());
    let mut st = progress(&[("a", SyncStatus::Pending), ("b", SyncStatus::Pending)]);
    r.step(&st);
    st.insert("a".into(), SyncStatus::Failed.into());
    assert!(matches!(r.step(&st), RolloutDecision::Halted { .. }));
    assert!(
        !r.admits("b"),
        "b has not been sent yet: it keeps its previous config"
    );
}

#[test]
fn late_joiners_are_appended_at_the_end() {
    let mut r = Rollout::new("web", h(1), batched(1, None));
    let mut st = progress(&[("m", SyncStatus::Pending), ("n", SyncStatus::Pending)]);
    r.step(&st);
    st.insert("a".into(), SyncStatus::Pending.into());
    r.step(&st);
    assert_eq!(r.agents.iter().collect::<Vec<_>>(), ["m", "n", "a"]);
    assert!(r.admits("m") && !r.admits("a"));
}

#[test]
fn departed_agents_are_dropped_keeping_admission_of_the_rest() {
    let mut r = Rollout::new("web", h(1), batched(2, None));
    let mut st = progress(&[
        ("a", SyncStatus::Pending),
        ("b", SyncStatus::Pending),
        ("c", SyncStatus::Pending),
    ]);
    r.step(&st);
    st.remove("a");
    assert_eq!(
        r.step(&st),
        RolloutDecision::Waiting {
            in_flight: 1,
            unhealthy: 0
        }
    );
    assert_eq!((r.agents.len(), r.admitted), (2, 1));
    assert!(r.admits("b") && !r.admits("c"));
}

#[test]
fn disconnected_and_drifted_agents_do_not_block_a_batch() {
    let mut r = Rollout::new("web", h(1), batched(2, None));
    let st = progress(&[
        ("a", SyncStatus::Disconnected),
        ("b", SyncStatus::Drifted),
        ("c", SyncStatus::Pending),
    ]);
    assert_eq!(
        r.step(&st),
        RolloutDecision::Advanced {
            batch: 2,
            admitted: 3
        }
    );
    assert!(r.admits("c"));
}

/// A resume continues from the halted batch: the agents of that batch not reached yet are
/// admitted again, the failures so far are excused (the count starts from zero; the failed
/// agents keep their status), and the next failure past the threshold halts it again.
#[test]
fn a_resumed_rollout_continues_from_its_halted_batch_with_its_failures_excused() {
    let mut r = Rollout::new("web", h(1), batched(2, None));
    let mut st = progress(&[
        ("a", SyncStatus::Pending),
        ("b", SyncStatus::Pending),
        ("c", SyncStatus::Pending),
        ("d", SyncStatus::Pending),
        ("e", SyncStatus::Pending),
    ]);
    r.step(&st);
    st.insert("a".into(), SyncStatus::Failed.into());
    assert!(matches!(r.step(&st), RolloutDecision::Halted { .. }));
    assert!(!r.admits("b"), "a halted rollout admits nobody");
    assert_eq!(r.progress().failed, 1);

    assert!(r.resume(&st));
    assert!(!r.resume(&st), "only a halted rollout resumes");
    assert!(r.admits("b"), "the halted batch goes on");
    assert_eq!(
        r.step(&st),
        RolloutDecision::Waiting {
            in_flight: 1,
            unhealthy: 0
        },
        "b still applies; a's failure no longer halts"
    );
    let p = r.progress();
    assert_eq!((p.failed, p.excused, p.batch), (0, 1, 1));
    assert!(!r.admits("c"));

    st.insert("b".into(), SyncStatus::Synced.into());
    assert_eq!(
        r.step(&st),
        RolloutDecision::Advanced {
            batch: 2,
            admitted: 2
        }
    );
    st.insert("c".into(), SyncStatus::Failed.into());
    assert!(
        matches!(r.step(&st), RolloutDecision::Halted { .. }),
        "a new failure counts"
    );
    assert_eq!(r.progress().failed, 1);
}

#[test]
fn a_rollout_that_is_not_halted_does_not_resume() {
    let mut r = Rollout::new("web", h(1), batched(1, None));
    let st = progress(&[("a", SyncStatus::Pending)]);
    r.step(&st);
    assert!(!r.resume(&st));
    assert_eq!(r.phase, RolloutPhase::Progressing);
    assert!(r.excused.is_empty());
}

#[test]
fn rollout_roundtrips_through_serde() {
    let mut r = Rollout::new("web", h(1), batched(2, Some(1)));
    r.step(&progress(&[
        ("b", SyncStatus::Pending),
        ("a", SyncStatus::Failed),
    ]));
    r.excused.insert("a".into());
    let json = serde_json::to_string(&r).unwrap_or_default();
    let back: Option<Rollout> = serde_json::from_str(&json).ok();
    assert_eq!(back.as_ref(), Some(&r));

    // Kept apart: the progress without the list, the list on its own.
    let progress = r.progress_json().unwrap_or_default();
    let members = r.members_json().unwrap_or_default();
    assert!(!progress.contains("agents"), "{progress}");
    assert_eq!(members, r#"["a","b"]"#);
    let back = Rollout::from_json(&progress, Members::Json(&members)).ok();
    assert_eq!(back.as_ref(), Some(&r));
    let shared = Rollout::from_json(&progress, Members::Shared(Arc::clone(&r.agents))).ok();
    assert!(shared.is_some_and(|s| Arc::ptr_eq(&s.agents, &r.agents)));
    // Written whole (before the list was kept apart): its own list.
    let back = Rollout::from_json(&json, Members::None).ok();
    assert_eq!(back.as_ref(), Some(&r));
}

#[test]
fn a_rollouts_member_list_is_shared_until_its_scope_changes() {
    let mut r = Rollout::new("web", h(1), batched(1, None));
    let st = progress(&[("a", SyncStatus::Pending), ("b", SyncStatus::Pending)]);
    r.step(&st);
    let adopted = r.clone();
    let fingerprint = r.members_fingerprint();
    // The same scope: the list is not copied, and its fingerprint stays.
    r.step(&st);
    assert!(Arc::ptr_eq(&r.agents, &adopted.agents));
    assert_eq!(r.members_fingerprint(), fingerprint);
    // A joiner: this rollout's list changes, the copy handed out keeps the old one.
    let st = progress(&[
        ("a", SyncStatus::Pending),
        ("b", SyncStatus::Pending),
        ("c", SyncStatus::Pending),
    ]);
    r.step(&st);
    assert_eq!(r.agents.len(), 3);
    assert_eq!(adopted.agents.len(), 2);
    assert_ne!(r.members_fingerprint(), fingerprint);
    // The same number of agents, one swapped: a different scope too.
    let st = progress(&[
        ("a", SyncStatus::Pending),
        ("b", SyncStatus::Pending),
        ("d", SyncStatus::Pending),
    ]);
    let before = r.members_fingerprint();
    r.step(&st);
    assert_eq!(
        r.agents.iter().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b", "d"]
    );
    assert_ne!(r.members_fingerprint(), before);
}

// ---- fleet plan ---------------------------------------------------------------------------

fn labels(pairs: &[(&str, &str)]) -> selector::Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn selector(pairs: &[(&str, &str)]) -> Selector {
    Selector {
        match_labels: labels(pairs),
        match_expressions: vec![],
    }
}

fn desired(configs: Vec<DesiredConfig>) -> Desired {
    Desired::new("rev1", configs)
}

fn fleet(n: usize, env: &str) -> Vec<ObservedAgent> {
    (0..n)
        .map(|i| {
            let mut a = agent(&format!("{env}-{i:03}"));
            a.labels = labels(&[("env", env)]);
            a
        })
        .collect()
}

#[test]
fn fleet_plan_counts_by_configuration_and_summary() {
    let d = desired(vec![
        DesiredConfig::new(
            "prod",
            selector(&[("env", "prod")]),
            0,
            batched(2, None),
            Some(h(1)),
        ),
        DesiredConfig::new(
            "dev-a",
            selector(&[("env", "dev")]),
            0,
            RolloutPolicy::default(),
            Some(h(2)),
        ),
        DesiredConfig::new(
            "dev-b",
            selector(&[("env", "dev")]),
            0,
            RolloutPolicy::default(),
            Some(h(3)),
        ),
    ]);
    let mut agents = fleet(5, "prod");
    agents.extend(fleet(2, "dev"));
    agents.extend(fleet(1, "test"));
    let mut rollouts = BTreeMap::new();
    let p = plan(&d, &agents, &mut rollouts, now());
    assert_eq!(p.summary.pending, 5);
    assert_eq!(p.summary.conflict, 2);
    assert_eq!(p.summary.unmanaged, 1);
    assert_eq!(p.summary.total(), 8);
    assert_eq!(p.configurations["prod"].counts.pending, 5);
    assert_eq!(p.configurations["dev-a"].counts.conflict, 2);
    let pushes = p
        .agents
        .iter()
        .filter(|a| matches!(a.action, Action::Push(_)))
        .count();
    let waits = p.agents.iter().filter(|a| a.action == Action::Wait).count();
    assert_eq!((pushes, waits), (2, 3));
    let r = p.configurations["prod"]
        .rollout
        .as_ref()
        .map(|r| (r.batch, r.admitted, r.total));
    assert_eq!(r, Some((1, 2, 5)));
}

#[test]
fn plan_one_agrees_with_fleet_plan() {
    let d = desired(vec![DesiredConfig::new(
        "prod",
        selector(&[("env", "prod")]),
        0,
        batched(3, None),
        Some(h(1)),
    )]);
    let agents = fleet(7, "prod");
    let mut rollouts = BTreeMap::new();
    let p = plan(&d, &agents, &mut rollouts, now());
    for (a, ap) in agents.iter().zip(&p.agents) {
        assert_eq!(&plan_one(&d, a, &rollouts, now()), ap);
    }
}

#[test]
fn batched_plan_one_waits_until_a_rollout_exists() {
    let d = desired(vec![DesiredConfig::new(
        "prod",
        selector(&[]),
        0,
        batched(1, None),
        Some(h(1)),
    )]);
    let p = plan_one(&d, &agent("a"), &BTreeMap::new(), now());
    assert_eq!(p.action, Action::Wait);
    let d = desired(vec![DesiredConfig::new(
        "prod",
        selector(&[]),
        0,
        RolloutPolicy::default(),
        Some(h(1)),
    )]);
    assert_eq!(
        plan_one(&d, &agent("a"), &BTreeMap::new(), now()).action,
        Action::Push(h(1))
    );
}

#[test]
fn new_revision_supersedes_halted_rollout() {
    let cfg = |hash| DesiredConfig::new("prod", selector(&[]), 0, batched(1, None), Some(hash));
    let mut agents = fleet(3, "prod");
    let mut rollouts = BTreeMap::new();
    let p = plan(&desired(vec![cfg(h(1))]), &agents, &mut rollouts, now());
    p.agents[0].record_sent(&mut agents[0], T0);
    agents[0].observe_remote_config_status(
        &[1; 32],
        ReportedStatus::Failed { error: "x".into() },
        T0,
    );
    let p = plan(&desired(vec![cfg(h(1))]), &agents, &mut rollouts, now());
    assert!(matches!(
        rollouts["prod"].phase,
        RolloutPhase::Halted { .. }
    ));
    assert!(p.agents.iter().all(|a| a.action != Action::Push(h(1))));
    // Same hash in a new revision: still halted.
    plan(&desired(vec![cfg(h(1))]), &agents, &mut rollouts, now());
    assert!(matches!(
        rollouts["prod"].phase,
        RolloutPhase::Halted { .. }
    ));
    // A new hash (a fix, or a revert): a new rollout replaces it.
    let p = plan(&desired(vec![cfg(h(2))]), &agents, &mut rollouts, now());
    assert_eq!(rollouts["prod"].target, h(2));
    assert_eq!(rollouts["prod"].phase, RolloutPhase::Progressing);
    assert_eq!(p.superseded.len(), 1);
    assert_eq!(
        p.superseded[0].phase,
        RolloutPhase::Superseded { by: Some(h(2)) }
    );
    assert_eq!(p.agents[0].action, Action::Push(h(2)));
}

#[test]
fn removed_configuration_retires_its_rollout_and_leaves_agents_alone() {
    let mut rollouts = BTreeMap::new();
    let agents = fleet(2, "prod");
    let d = desired(vec![DesiredConfig::new(
        "prod",
        selector(&[]),
        0,
        RolloutPolicy::default(),
        Some(h(1)),
    )]);
    plan(&d, &agents, &mut rollouts, now());
    let p = plan(&desired(vec![]), &agents, &mut rollouts, now());
    assert!(rollouts.is_empty());
    assert_eq!(p.superseded[0].phase, RolloutPhase::Superseded { by: None });
    assert!(
        p.agents
            .iter()
            .all(|a| a.status == SyncStatus::Unmanaged && a.action == Action::Nothing)
    );
}

// ---- property-style ---------------------------------------------------------------------

/// splitmix64: a seeded PRNG good enough to generate fleets, no crate needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn hash(&mut self) -> ConfigHash {
        h(self.below(6) as u8)
    }
}

fn random_desired(rng: &mut Rng) -> Desired {
    let envs = ["prod", "dev", "test"];
    let configs = (0..1 + rng.below(4))
        .map(|i| {
            let sel = if rng.chance(30) {
                selector(&[])
            } else {
                selector(&[("env", envs[rng.below(3) as usize])])
            };
            let policy = if rng.chance(50) {
                RolloutPolicy::default()
            } else {
                batched(1 + rng.below(3), rng.chance(50).then(|| rng.below(3)))
            };
            let hash = rng.chance(95).then(|| rng.hash());
            DesiredConfig::new(format!("c{i}"), sel, rng.below(3) as i64, policy, hash)
        })
        .collect::<Vec<_>>();
    desired(configs)
}

fn random_agent(rng: &mut Rng, i: usize) -> ObservedAgent {
    let envs = ["prod", "dev", "test", "stage"];
    let mut a = agent(&format!("{:04x}", rng.below(0x10000) as usize * 64 + i));
    a.labels = labels(&[("env", envs[rng.below(4) as usize])]);
    a.connected = rng.chance(90);
    a.accepts_remote_config = rng.chance(90);
    a.reports_remote_config = rng.chance(70);
    a.reported_hash = rng.chance(70).then(|| rng.hash());
    a.reported_status = match rng.below(4) {
        0 => ReportedStatus::Unset,
        1 => ReportedStatus::Applied,
        2 => ReportedStatus::Applying,
        _ => ReportedStatus::Failed { error: "e".into() },
    };
    a.sent_hash = rng.chance(50).then(|| rng.hash());
    a.sent_at = a
        .sent_hash
        .map(|_| T0 - rng.below(2 * Timing::DEFAULT_RESEND_AFTER_MS));
    for _ in 0..rng.below(3) {
        a.failed_hashes.insert(rng.hash());
    }
    a.synced_hash = rng.chance(30).then(|| rng.hash());
    a.healthy = [None, Some(true), Some(false)][rng.below(3) as usize];
    a
}

fn check_invariants(d: &Desired, agents: &[ObservedAgent], p: &FleetPlan) {
    assert_eq!(p.agents.len(), agents.len());
    for (a, ap) in agents.iter().zip(&p.agents) {
        if let Action::Push(hash) = ap.action {
            assert!(
                !a.failed_hashes.contains(&hash),
                "pushed a failed hash to {}",
                a.instance_uid
            );
            assert!(a.connected && a.accepts_remote_config);
            assert_ne!(a.reported_hash, Some(hash));
            assert!(a.reports_remote_config || a.sent_hash != Some(hash));
            let name = ap.configuration.as_deref().unwrap_or_default();
            if ap.status == SyncStatus::Failed {
                // A rollback: the last config it applied, never the desired (failed) one.
                assert_eq!(a.last_applied, Some(hash));
                assert_ne!(ap.desired_hash, Some(hash));
            } else {
                assert_eq!(ap.desired_hash, Some(hash));
                assert_eq!(d.hash_of(name), Some(hash));
            }
        }
        if matches!(
            ap.status,
            SyncStatus::Conflict | SyncStatus::Unmanaged | SyncStatus::Incompatible
        ) {
            assert_eq!(ap.action, Action::Nothing);
        }
    }
}

#[test]
fn plan_is_deterministic_and_never_pushes_a_failed_hash() {
    for seed in 0..200 {
        let mut rng = Rng(seed);
        let d = random_desired(&mut rng);
        let agents: Vec<ObservedAgent> = (0..rng.below(60) as usize)
            .map(|i| random_agent(&mut rng, i))
            .collect();
        let mut r1 = BTreeMap::new();
        let mut r2 = BTreeMap::new();
        let p1 = plan(&d, &agents, &mut r1, now());
        let p2 = plan(&d, &agents, &mut r2, now());
        assert_eq!(p1, p2, "seed {seed}");
        assert_eq!(r1, r2, "seed {seed}");
        check_invariants(&d, &agents, &p1);
        for (a, ap) in agents.iter().zip(&p1.agents) {
            assert_eq!(&plan_one(&d, a, &r1, now()), ap, "seed {seed}");
        }
    }
}

#[test]
fn simulated_rollouts_keep_invariants_and_converge() {
    for seed in 0..50 {
        let mut rng = Rng(1000 + seed);
        let d = random_desired(&mut rng);
        let mut agents: Vec<ObservedAgent> = (0..rng.below(40) as usize)
            .map(|i| random_agent(&mut rng, i))
            .collect();
        let mut rollouts = BTreeMap::new();
        let mut t = T0;
        for round in 0..60 {
            let p = plan(&d, &agents, &mut rollouts, Timing::at(t));
            check_invariants(&d, &agents, &p);
            // Batched rollouts never have more agents sent the target than admitted.
            for r in rollouts.values() {
                if r.policy.strategy == RolloutStrategy::Batched
                    && r.phase == RolloutPhase::Progressing
                {
                    for (a, ap) in agents.iter().zip(&p.agents) {
                        if ap.action == Action::Push(r.target) {
                            assert!(r.admits(&a.instance_uid));
                        }
                    }
                }
            }
            for (a, ap) in agents.iter_mut().zip(&p.agents) {
                ap.record_sent(a, t);
                if let Action::Push(hash) = ap.action
                    && a.reports_remote_config
                {
                    let status = if rng.chance(10) {
                        ReportedStatus::Failed {
                            error: "boom".into(),
                        }
                    } else {
                        ReportedStatus::Applied
                    };
                    a.observe_remote_config_status(hash.as_bytes(), status, T0);
                }
                // An agent that said APPLYING finishes.
                if a.reported_status == ReportedStatus::Applying
                    && let Some(hash) = a.reported_hash
                {
                    a.observe_remote_config_status(hash.as_bytes(), ReportedStatus::Applied, T0);
                }
                // Early rounds: agents flap and drift (local restores).
                if round < 30 {
                    if rng.chance(5) {
                        a.connected = !a.connected;
                    }
                    if rng.chance(3) {
                        a.observe_remote_config_status(&[0xEE; 32], ReportedStatus::Applied, T0);
                    }
                } else {
                    // Later rounds: everyone is back and healthy (unhealthy holds a batch).
                    a.connected = true;
                    a.healthy = a.healthy.map(|_| true);
                }
            }
            t += 10_000;
        }
        // Converged: nobody is left with a push to do.
        let p = plan(&d, &agents, &mut rollouts, Timing::at(t));
        let last = plan(&d, &agents, &mut rollouts, Timing::at(t));
        assert_eq!(p, last, "seed {seed}: a converged plan is stable");
        for r in rollouts.values() {
            assert!(
                matches!(
                    r.phase,
                    RolloutPhase::Complete | RolloutPhase::Halted { .. }
                ),
                "seed {seed}: rollout stuck: {:?}",
                r.progress()
            );
        }
        for ap in &p.agents {
            assert!(
                !matches!(ap.action, Action::Push(_)) || ap.status == SyncStatus::Drifted,
                "seed {seed}: {ap:?}"
            );
        }
    }
}

#[test]
#[ignore = "scale check: run with --ignored (100k agents, 10 label sets)"]
fn hundred_thousand_agents_plan_quickly() {
    let d = desired(
        (0..10)
            .map(|i| {
                let env = format!("e{i}");
                DesiredConfig::new(
                    format!("c{i}"),
                    selector(&[("env", env.as_str())]),
                    0,
                    batched(100, Some(10)),
                    Some(h(i as u8)),
                )
            })
            .collect(),
    );
    let agents: Vec<ObservedAgent> = (0..100_000)
        .map(|i| {
            let mut a = agent(&format!("{i:08}"));
            a.labels = labels(&[("env", format!("e{}", i % 10).as_str())]);
            a
        })
        .collect();
    let mut rollouts = BTreeMap::new();
    let start = std::time::Instant::now();
    let p = plan(&d, &agents, &mut rollouts, now());
    let took = start.elapsed();
    assert_eq!(p.summary.pending, 100_000);
    eprintln!("planned 100k agents in {took:?}");
}

#[test]
fn desired_from_revision_takes_rendered_hashes_and_keeps_unrendered_configurations() {
    use crate::catalog::model::{Configuration, ConfigurationSpec, Metadata};
    use crate::render::RenderedConfiguration;
    let config = |name: &str, priority: i64| Configuration {
        metadata: Metadata {
            name: name.into(),
            ..Default::default()
        },
        spec: ConfigurationSpec {
            priority,
            rollout: Some(batched(2, None)),
            ..Default::default()
        },
        origin: Default::default(),
    };
    let mut revision = crate::Revision {
        revision: "abc".into(),
        catalog: Default::default(),
        rendered: Default::default(),
        warnings: Default::default(),
    };
    revision
        .catalog
        .configurations
        .insert("a".into(), config("a", 0));
    revision
        .catalog
        .configurations
        .insert("b".into(), config("b", 5));
    revision.rendered.configurations.insert(
        "a".into(),
        std::sync::Arc::new(RenderedConfiguration {
            name: "a".into(),
            yaml: String::new(),
            masked_yaml: String::new(),
            config_map: Default::default(),
            hash: h(4),
        }),
    );
    let d = Desired::from_revision(&revision);
    assert_eq!(d.revision, "abc");
    assert_eq!(d.hash_of("a"), Some(h(4)));
    assert_eq!(d.hash_of("b"), None);
    assert_eq!(d.configurations["a"].rollout(), batched(2, None));
    // "b" still wins selection (higher priority) though unrendered: its agents are not handed
    // to "a", and get nothing.
    let p = plan_one(&d, &agent("x"), &BTreeMap::new(), now());
    assert_eq!(p.configuration.as_deref(), Some("b"));
    assert_eq!((p.status, p.action), (SyncStatus::Pending, Action::Nothing));
}

// ---- the incremental planner agrees with the whole-fleet plan ------------------------------

/// Random reports, label changes, disconnects and new revisions; after each batch the planner's
/// plans, counts and rollouts must equal `plan` over the same fleet and rollouts.
#[test]
fn incremental_planner_matches_whole_fleet_plan() {
    for seed in 1..=20u64 {
        let mut rng = Rng(5000 + seed);
        let envs = ["prod", "dev", "test", "stage"];
        let mut desired = Arc::new(random_desired(&mut rng));
        let mut agents: Vec<ObservedAgent> = (0..40).map(|i| random_agent(&mut rng, i)).collect();
        let mut reference_rollouts = BTreeMap::new();
        let mut planner: Planner<usize> = Planner::new(desired.clone(), BTreeMap::new());
        for (i, a) in agents.iter().enumerate() {
            planner.upsert(i, a.clone());
        }
        for step in 0..120u64 {
            // A fixed clock: a moving one wakes agents whose plans asked for it, tested below.
            let timing = now();
            let reference = plan(&desired, &agents, &mut reference_rollouts, timing);
            planner.plan(timing);
            for (i, expected) in reference.agents.iter().enumerate() {
                let (_, got) = planner.agent(&i).expect("known agent");
                assert_eq!(got, Some(expected), "seed {seed} step {step} agent {i}");
            }
            assert_eq!(
                planner.summary(),
                &reference.summary,
                "seed {seed} step {step}"
            );
            for (name, c) in &reference.configurations {
                let mine = &planner.configurations()[name];
                assert_eq!(mine.counts, c.counts, "seed {seed} step {step} {name}");
                assert_eq!(mine.rollout, c.rollout, "seed {seed} step {step} {name}");
            }
            assert_eq!(
                planner.rollouts(),
                &reference_rollouts,
                "seed {seed} step {step}"
            );

            // Act on the plan as the server does, then change the world a little.
            for (i, p) in reference.agents.iter().enumerate() {
                p.record_sent(&mut agents[i], timing.now_ms);
                match p.action {
                    Action::Push(h) => {
                        planner.note_sent(&i, h, timing.now_ms, agents[i].connection)
                    }
                    Action::Nothing | Action::Wait => planner.record(&i),
                }
                assert_eq!(planner.agent(&i).map(|(a, _)| a), Some(&agents[i]));
            }
            for _ in 0..rng.below(4) {
                let i = rng.below(agents.len() as u64) as usize;
                let a = &mut agents[i];
                match rng.below(7) {
                    0 => a.connected = !a.connected,
                    1 => a.labels = labels(&[("env", envs[rng.below(4) as usize])]),
                    2 => a.healthy = [None, Some(true), Some(false)][rng.below(3) as usize],
                    3 => a.accepts_remote_config = rng.below(5) != 0,
                    4 => {
                        if let Some(sent) = a.sent_hash {
                            let status = if rng.below(6) == 0 {
                                ReportedStatus::Failed {
                                    error: "bad".into(),
                                }
                            } else {
                                ReportedStatus::Applied
                            };
                            a.observe_remote_config_status(&sent.0, status, T0);
                        }
                    }
                    5 => a.observe_remote_config_status(&rng.hash().0, ReportedStatus::Applied, T0),
                    _ => {
                        if let Some(sent) = a.sent_hash {
                            a.observe_remote_config_status(&sent.0, ReportedStatus::Applying, T0);
                        }
                    }
                }
                planner.upsert(i, a.clone());
            }
            if rng.below(25) == 0 {
                desired = Arc::new(random_desired(&mut rng));
                planner.set_desired(desired.clone());
            }
        }
    }
}

/// The clock is the one input that moves by itself: at the plan's `requeue_at`, an unacknowledged push
/// older than the resend interval is offered again, as `plan` would.
#[test]
fn incremental_planner_wakes_an_agent_at_its_requeue_time() {
    let d = Arc::new(desired(vec![DesiredConfig::new(
        "web",
        selector(&[]),
        0,
        RolloutPolicy::default(),
        Some(h(1)),
    )]));
    let mut planner: Planner<u8> = Planner::new(d, BTreeMap::new());
    planner.upsert(0, agent("a"));
    assert_eq!(planner.plan(now()), vec![0]);
    assert_eq!(
        planner.agent(&0).and_then(|(_, p)| p).map(|p| p.action),
        Some(Action::Push(h(1)))
    );
    planner.note_sent(&0, h(1), T0, None);
    planner.plan(now());
    let action = |p: &Planner<u8>| p.agent(&0).and_then(|(_, p)| p).map(|p| p.action);
    assert_eq!(action(&planner), Some(Action::Nothing));
    let due = T0 + Timing::DEFAULT_RESEND_AFTER_MS;
    assert_eq!(
        planner.next_wake(),
        Some(due),
        "the plan asks to look again"
    );
    assert!(
        planner.plan(Timing::at(due - 1)).is_empty(),
        "nothing changed and not yet due: nothing re-planned"
    );
    assert_eq!(planner.plan(Timing::at(due)), vec![0]);
    assert_eq!(action(&planner), Some(Action::Push(h(1))));
    assert_eq!(planner.next_wake(), None);
}

#[test]
fn a_rollback_that_fails_too_is_not_retried_and_says_which_failed() {
    let mut a = failed_after_applying(0xA, 0xB);
    let p = plan_agent(&a, &one(), Some(h(0xB)), true, OnFailure::Rollback, now());
    p.record_sent(&mut a, T0);
    a.observe_remote_config_status(
        &[0xA; 32],
        ReportedStatus::Failed {
            error: "port in use".into(),
        },
        T0,
    );
    let later = Timing::at(T0 + 10 * Timing::DEFAULT_RESEND_AFTER_MS);
    let p = plan_agent(&a, &one(), Some(h(0xB)), true, OnFailure::Rollback, later);
    assert_eq!((p.status, p.action), (SyncStatus::Failed, Action::Nothing));
    assert_eq!(
        p.detail.as_deref(),
        Some(
            "agent reported FAILED for 0b0b0b0b0b0b; rolling back to 0a0a0a0a0a0a failed too: \
             port in use"
        )
    );
}

#[test]
fn an_agent_that_failed_the_target_counts_as_failed_while_disconnected() {
    // After a restart the failed agent is still disconnected when the rollout steps: it must
    // hold the halt, not let the next batch in.
    let mut r = Rollout::new("web", h(1), batched(1, Some(0)));
    let mut failed = AgentProgress::from(SyncStatus::Disconnected);
    failed.failed_target = true;
    let st = BTreeMap::from([
        ("a".to_string(), failed),
        ("b".to_string(), AgentProgress::from(SyncStatus::Pending)),
    ]);
    assert!(matches!(r.step(&st), RolloutDecision::Halted { .. }));
    assert!(!r.admits("b"));
}

/// A resumed rollout's halted batch goes on at the next plan: an agent of that batch the halt
/// held back is pushed, though the resume itself moved no admission count.
#[test]
fn a_resumed_rollout_pushes_the_agents_its_halt_held_back() {
    let d = Arc::new(desired(vec![DesiredConfig::new(
        "web",
        selector(&[]),
        0,
        batched(2, None),
        Some(h(1)),
    )]));
    let mut planner: Planner<u8> = Planner::new(d, BTreeMap::new());
    for (key, uid) in [(0, "a"), (1, "b"), (2, "c")] {
        planner.upsert(key, agent(uid));
    }
    planner.plan(now());
    let action = |p: &Planner<u8>, key: u8| p.agent(&key).and_then(|(_, p)| p).map(|p| p.action);
    assert_eq!(action(&planner, 0), Some(Action::Push(h(1))));
    assert_eq!(action(&planner, 1), Some(Action::Push(h(1))));
    // `a` gets it and fails; `b`'s push never went out.
    planner.note_sent(&0, h(1), T0, None);
    planner.update(0, |a| {
        a.observe_remote_config_status(
            &[1; 32],
            ReportedStatus::Failed {
                error: "refused".into(),
            },
            T0,
        );
        false
    });
    planner.plan(now());
    assert!(matches!(
        planner.rollouts()["web"].phase,
        RolloutPhase::Halted { .. }
    ));
    assert_eq!(
        action(&planner, 1),
        Some(Action::Wait),
        "the halt holds b back"
    );

    assert_eq!(planner.resume("web").map(|p| p.excused), Ok(1));
    assert!(planner.has_work());
    let replanned = planner.plan(now());
    assert!(replanned.contains(&1), "{replanned:?}");
    assert_eq!(action(&planner, 1), Some(Action::Push(h(1))));
    assert_eq!(
        action(&planner, 2),
        Some(Action::Wait),
        "c waits for its batch"
    );
    assert_eq!(
        action(&planner, 0),
        Some(Action::Nothing),
        "a keeps its status"
    );
    assert!(matches!(
        planner.resume("web"),
        Err(ResumeError::NotHalted(_))
    ));
    assert_eq!(planner.resume("nope"), Err(ResumeError::NoRollout));
}

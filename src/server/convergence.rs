//! Per-commit convergence: for each accepted revision, how many of the agents it targeted have
//! applied it, failed it, were rolled back or still wait, and how long push → applied took.
//! What `GET /api/v1/revisions/{revision}`, `gitamp history` and `gitamp wait` show.
//!
//! The reconciler (the one writer) keeps one [`Tracker`] for the revision it serves: each plan
//! tells it the status of the agents it re-planned, and a new revision freezes the old record
//! as superseded. Records go to the store (write-behind) and are read back at start, so the
//! figures survive a restart: the latency histogram as it was, the counts rebuilt from the
//! agents' states as they report again.

use std::collections::HashMap;

use gitamp_core::plan::SyncStatus;
use gitamp_opamp::Uid;
use serde::{Deserialize, Serialize};

/// Latency buckets per doubling: bucket bounds grow by 2^(1/8), so a percentile read from the
/// histogram is within ~9% of the true value, from 1 ms to days, in a few hundred counters.
const BUCKETS_PER_DOUBLING: f64 = 8.0;

/// Push → applied times, as a sparse log-bucketed histogram (bucket index → count) plus the
/// exact maximum: small enough to store per revision whatever the fleet size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// Bucket index → agents; bucket `i` holds times up to `upper_ms(i)`.
    pub buckets: std::collections::BTreeMap<u32, u64>,
    pub count: u64,
    pub max_ms: u64,
}

impl LatencyHistogram {
    fn bucket(ms: u64) -> u32 {
        if ms <= 1 {
            return 0;
        }
        ((ms as f64).log2() * BUCKETS_PER_DOUBLING).ceil() as u32
    }

    /// The largest time bucket `i` holds, in ms.
    fn upper_ms(i: u32) -> u64 {
        (2f64.powf(f64::from(i) / BUCKETS_PER_DOUBLING)).floor() as u64
    }

    pub fn record(&mut self, ms: u64) {
        *self.buckets.entry(Self::bucket(ms)).or_default() += 1;
        self.count += 1;
        self.max_ms = self.max_ms.max(ms);
    }

    /// The `q` quantile (0 < q ≤ 1) in ms: the upper bound of the bucket holding it, never more
    /// than the maximum seen. None without samples.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(Self::upper_ms(*i).min(self.max_ms));
            }
        }
        Some(self.max_ms)
    }
}

/// One revision's convergence, as stored and served.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Convergence {
    pub revision: String,
    /// When it was accepted (ms since the Unix epoch).
    pub accepted_at: u64,
    /// Agents a configuration of this revision selected while it was served.
    pub targeted: usize,
    /// Of those, running the config this revision gives them (pushed, or already had it).
    pub applied: usize,
    pub failed: usize,
    pub rolled_back: usize,
    /// Neither: pending, applying, disconnected, not yet admitted by a rollout.
    pub waiting: usize,
    /// Push → applied, for the agents that were sent this revision's config.
    pub latency: LatencyHistogram,
    /// The revision that replaced it, if one did: its figures stopped there.
    pub superseded_by: Option<String>,
    /// A plan has looked at every agent since it was accepted: until then the counts are not
    /// the fleet's yet (0 of 0 is not "converged").
    #[serde(default = "planned_before_this_field")]
    pub planned: bool,
}

/// Stored records from before the field were planned.
fn planned_before_this_field() -> bool {
    true
}

impl Convergence {
    /// Every targeted agent applied it (known once a plan has looked at the fleet).
    pub fn converged(&self) -> bool {
        self.planned && self.waiting == 0 && self.failed == 0 && self.rolled_back == 0
    }
}

/// Where a revision's rollout stands, by one rule that the API, `gitamp wait` and the commit
/// statuses all read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Agents are still applying it (or waiting for their batch).
    RollingOut,
    /// Every agent it targeted applied it.
    Converged,
    /// It will not converge by itself: a rollout halted, or agents failed and none waits.
    Failed { reason: String },
    /// A newer revision replaced it before it converged.
    Superseded { by: String },
}

impl Verdict {
    /// The stable name the API shows (`rolling-out`, `converged`, `failed`, `superseded`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::RollingOut => "rolling-out",
            Verdict::Converged => "converged",
            Verdict::Failed { .. } => "failed",
            Verdict::Superseded { .. } => "superseded",
        }
    }
}

/// The verdict on `c`; `halted` names the configurations whose rollout halted (for the served
/// revision; empty for older ones).
pub fn verdict(c: &Convergence, halted: &[&str]) -> Verdict {
    if let Some(by) = &c.superseded_by {
        return if c.converged() {
            Verdict::Converged
        } else {
            Verdict::Superseded { by: by.clone() }
        };
    }
    let bad = c.failed + c.rolled_back;
    if !halted.is_empty() {
        Verdict::Failed {
            reason: format!(
                "rollout halted ({}), {bad} agent(s) failed",
                halted.join(", ")
            ),
        }
    } else if c.converged() {
        Verdict::Converged
    } else if c.planned && c.waiting == 0 {
        Verdict::Failed {
            reason: format!("{bad} agent(s) failed or were rolled back, none is still applying"),
        }
    } else {
        Verdict::RollingOut
    }
}

/// Records the store kept (newest first), read back; a row that does not read is left out
/// (the figures are for people; one bad row must not stop a start).
pub fn from_store(records: Vec<crate::store::ConvergenceRecord>) -> Vec<Convergence> {
    records
        .into_iter()
        .filter_map(|r| serde_json::from_value(r.record).ok())
        .collect()
}

/// Where one targeted agent stands for the tracked revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Applied,
    Failed,
    RolledBack,
    Waiting,
}

impl Outcome {
    fn of(status: SyncStatus) -> Outcome {
        match status {
            SyncStatus::Synced => Outcome::Applied,
            SyncStatus::Failed => Outcome::Failed,
            SyncStatus::RolledBack => Outcome::RolledBack,
            _ => Outcome::Waiting,
        }
    }
}

/// The served revision's convergence, kept current by the reconciler.
#[derive(Debug)]
pub struct Tracker {
    record: Convergence,
    outcomes: HashMap<Uid, Outcome>,
    /// Changed since the last [`Tracker::take_changed`].
    changed: bool,
}

impl Tracker {
    /// Track `revision`, accepted at `accepted_at` (ms), resuming `stored` figures of the same
    /// revision after a restart (its latency histogram; the counts are rebuilt as agents are
    /// planned).
    pub fn new(revision: &str, accepted_at: u64, stored: Option<Convergence>) -> Tracker {
        let record = match stored {
            Some(mut c) if c.revision == revision => {
                c.planned = false;
                c.targeted = 0;
                c.applied = 0;
                c.failed = 0;
                c.rolled_back = 0;
                c.waiting = 0;
                c
            }
            _ => Convergence {
                revision: revision.to_string(),
                accepted_at,
                ..Convergence::default()
            },
        };
        Tracker {
            record,
            outcomes: HashMap::new(),
            changed: true,
        }
    }

    pub fn revision(&self) -> &str {
        &self.record.revision
    }

    /// The figures as they are now.
    pub fn record(&self) -> &Convergence {
        &self.record
    }

    /// When the tracked revision was accepted (ms): sends before it were for another one.
    pub fn accepted_at(&self) -> u64 {
        self.record.accepted_at
    }

    /// An agent as a plan left it: `managed` when a configuration of the revision selects it
    /// (else it leaves the targeted set).
    pub fn note(&mut self, uid: Uid, managed: bool, status: SyncStatus) {
        let new = managed.then(|| Outcome::of(status));
        let old = match new {
            Some(o) => self.outcomes.insert(uid, o),
            None => self.outcomes.remove(&uid),
        };
        if old == new {
            return;
        }
        self.changed = true;
        let r = &mut self.record;
        for (outcome, sign) in [(old, false), (new, true)] {
            let Some(outcome) = outcome else { continue };
            let slot = match outcome {
                Outcome::Applied => &mut r.applied,
                Outcome::Failed => &mut r.failed,
                Outcome::RolledBack => &mut r.rolled_back,
                Outcome::Waiting => &mut r.waiting,
            };
            if sign {
                *slot += 1;
                r.targeted += 1;
            } else {
                *slot = slot.saturating_sub(1);
                r.targeted = r.targeted.saturating_sub(1);
            }
        }
    }

    /// A plan looked at every agent (the first after the revision was accepted does).
    pub fn planned(&mut self) {
        if !self.record.planned {
            self.record.planned = true;
            self.changed = true;
        }
    }

    /// An agent applied this revision's config `ms` after it was pushed.
    pub fn applied_after(&mut self, ms: u64) {
        self.record.latency.record(ms);
        self.changed = true;
    }

    /// The record, if it changed since the last call (for the store and the API).
    pub fn take_changed(&mut self) -> Option<Convergence> {
        std::mem::take(&mut self.changed).then(|| self.record.clone())
    }

    /// Freeze the record: `by` replaced this revision.
    pub fn superseded(mut self, by: &str) -> Convergence {
        self.record.superseded_by = Some(by.to_string());
        self.record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(n: u8) -> Uid {
        [n; 16]
    }

    #[test]
    fn quantiles_are_within_a_bucket_and_never_above_the_max() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        for ms in 1..=1000 {
            h.record(ms);
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((500..=550).contains(&p50), "{p50}");
        assert!((990..=1000).contains(&p99), "{p99}");
        assert_eq!(h.quantile_ms(1.0), Some(1000));
        assert_eq!(h.max_ms, 1000);
        let mut one = LatencyHistogram::default();
        one.record(0);
        assert_eq!(one.quantile_ms(0.99), Some(0));
    }

    #[test]
    fn counts_follow_each_agents_latest_status() {
        let mut t = Tracker::new("abc", 1, None);
        t.planned();
        t.note(uid(1), true, SyncStatus::Pending);
        t.note(uid(2), true, SyncStatus::Applying);
        t.note(uid(3), false, SyncStatus::Unmanaged);
        let c = t.take_changed().unwrap();
        assert_eq!((c.targeted, c.waiting, c.applied), (2, 2, 0));
        assert!(t.take_changed().is_none(), "nothing changed since");
        t.note(uid(1), true, SyncStatus::Synced);
        t.note(uid(2), true, SyncStatus::Failed);
        t.applied_after(120);
        let c = t.take_changed().unwrap();
        assert_eq!((c.targeted, c.applied, c.failed, c.waiting), (2, 1, 1, 0));
        assert!(!c.converged());
        t.note(uid(2), true, SyncStatus::RolledBack);
        t.note(uid(2), false, SyncStatus::Unmanaged);
        let c = t.take_changed().unwrap();
        assert_eq!((c.targeted, c.applied, c.rolled_back), (1, 1, 0));
        assert!(c.converged());
        assert_eq!(c.latency.count, 1);
        let done = t.superseded("def");
        assert_eq!(done.superseded_by.as_deref(), Some("def"));
    }

    #[test]
    fn one_verdict_for_every_reader() {
        let c = |applied, failed, waiting| Convergence {
            targeted: applied + failed + waiting,
            applied,
            failed,
            waiting,
            planned: true,
            ..Convergence::default()
        };
        let unplanned = Convergence::default();
        assert_eq!(
            verdict(&unplanned, &[]),
            Verdict::RollingOut,
            "0 of 0 before a plan"
        );
        assert_eq!(verdict(&c(3, 0, 1), &[]), Verdict::RollingOut);
        assert_eq!(verdict(&c(4, 0, 0), &[]), Verdict::Converged);
        assert_eq!(
            verdict(&c(0, 0, 0), &[]),
            Verdict::Converged,
            "nothing to apply"
        );
        assert_eq!(verdict(&c(3, 1, 0), &[]).as_str(), "failed");
        assert_eq!(verdict(&c(3, 1, 2), &[]), Verdict::RollingOut);
        assert!(
            matches!(verdict(&c(0, 2, 6), &["linux"]), Verdict::Failed { reason } if reason.contains("linux"))
        );
        let mut old = c(1, 0, 3);
        old.superseded_by = Some("def".into());
        assert_eq!(
            verdict(&old, &["linux"]),
            Verdict::Superseded { by: "def".into() }
        );
    }

    #[test]
    fn a_restart_keeps_the_latencies_and_recounts() {
        let mut t = Tracker::new("abc", 1, None);
        t.note(uid(1), true, SyncStatus::Synced);
        t.applied_after(40);
        let stored = t.take_changed().unwrap();
        let mut resumed = Tracker::new("abc", 2, Some(stored.clone()));
        let c = resumed.take_changed().unwrap();
        assert_eq!(c.latency, stored.latency);
        assert_eq!(c.accepted_at, 1, "accepted when it first was");
        assert_eq!(c.targeted, 0, "recounted as agents are planned");
        let other = Tracker::new("def", 3, Some(stored)).take_changed().unwrap();
        assert_eq!((other.revision.as_str(), other.latency.count), ("def", 0));
    }
}

//! The sync status of one agent (the README's "Sync statuses and rollouts" table), derived from
//! the observed agent and what the repository wants, as a pure function.

use serde::{Deserialize, Serialize};

use crate::config_map::ConfigHash;
use crate::plan::observed::{ObservedAgent, ReportedStatus};
use crate::plan::select::Selection;

/// Where one agent stands against the desired configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncStatus {
    /// The agent applied the desired hash (or, for agents that never acknowledge, was sent it).
    Synced,
    /// The desired hash differs and has not been sent yet (the rollout may not have reached it).
    Pending,
    /// The desired hash was sent; no final status yet.
    Applying,
    /// The agent reported FAILED for the desired hash; not re-pushed until the desired hash
    /// changes (or an operator retries).
    Failed,
    /// It reported FAILED for the desired hash and has since applied an earlier config again
    /// (gitamp's rollback, or the agent's own): running, but not on what Git wants.
    #[serde(rename = "rolled-back")]
    RolledBack,
    /// It was Synced on the desired hash, then reported another one; pushed again.
    Drifted,
    /// No configuration selects it.
    Unmanaged,
    /// Several configurations select it at the same, highest priority.
    Conflict,
    /// It cannot accept remote config (no AcceptsRemoteConfig capability).
    Incompatible,
    /// Not connected: nothing can be sent and its last report may be stale.
    Disconnected,
}

impl SyncStatus {
    /// Every status, in declaration order (for tables and metrics).
    pub const ALL: [SyncStatus; 10] = [
        SyncStatus::Synced,
        SyncStatus::Pending,
        SyncStatus::Applying,
        SyncStatus::Failed,
        SyncStatus::RolledBack,
        SyncStatus::Drifted,
        SyncStatus::Unmanaged,
        SyncStatus::Conflict,
        SyncStatus::Incompatible,
        SyncStatus::Disconnected,
    ];

    /// The status named `name` (its serde name, as [`SyncStatus::as_str`] gives it).
    pub fn from_name(name: &str) -> Option<SyncStatus> {
        SyncStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The serde name, for labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Synced => "synced",
            SyncStatus::Pending => "pending",
            SyncStatus::Applying => "applying",
            SyncStatus::Failed => "failed",
            SyncStatus::RolledBack => "rolled-back",
            SyncStatus::Drifted => "drifted",
            SyncStatus::Unmanaged => "unmanaged",
            SyncStatus::Conflict => "conflict",
            SyncStatus::Incompatible => "incompatible",
            SyncStatus::Disconnected => "disconnected",
        }
    }
}

/// Derive the sync status. Rules, first match wins:
///
/// 1. No configuration selects the agent → `Unmanaged`.
/// 2. Several at the top priority → `Conflict`.
/// 3. No AcceptsRemoteConfig → `Incompatible` (the spec forbids offering config).
/// 4. Not connected → `Disconnected` (its report may be stale and nothing can be sent; the
///    rollout neither waits for it nor counts it as failed).
/// 5. The configuration has no rendered hash → `Pending` (nothing to send; cannot happen for a
///    revision that compiled, kept total rather than panicking).
/// 6. Reported hash == desired → decided on the hash: `Failed` if the same report says FAILED,
///    `Applying` if it says APPLYING, otherwise `Synced` (whatever older hashes failed).
/// 7. Desired hash in `failed_hashes` → `RolledBack` if the agent now reports APPLIED for
///    another hash (a rollback, gitamp's or its own), else `Failed`; either way it is not
///    pushed the desired hash again until that hash changes.
/// 8. No ReportsRemoteConfig: such an agent never acknowledges, so **by choice** it counts as
///    `Synced` once the desired hash was sent to it (`sent_hash`), `Pending` before. Drift cannot
///    be seen for it.
/// 9. Was Synced on the desired hash (`synced_hash`) and now reports another → `Drifted`.
/// 10. Desired hash sent, not reported back yet → `Applying`.
/// 11. Otherwise → `Pending`.
///
/// The status does not depend on whether the rollout has reached the agent: only the action does
/// (see [`crate::plan::plan_agent`]). That lets a rollout be stepped from statuses before any
/// action is decided, without a circular dependency.
pub fn sync_status(
    agent: &ObservedAgent,
    selection: &Selection,
    desired_hash: Option<ConfigHash>,
) -> SyncStatus {
    match selection {
        Selection::None => return SyncStatus::Unmanaged,
        Selection::Conflict(_) => return SyncStatus::Conflict,
        Selection::One(_) => {}
    }
    if !agent.accepts_remote_config {
        return SyncStatus::Incompatible;
    }
    if !agent.connected {
        return SyncStatus::Disconnected;
    }
    let Some(desired) = desired_hash else {
        return SyncStatus::Pending;
    };
    if agent.reported_hash == Some(desired) {
        return match agent.reported_status {
            ReportedStatus::Failed { .. } => SyncStatus::Failed,
            ReportedStatus::Applying => SyncStatus::Applying,
            ReportedStatus::Applied | ReportedStatus::Unset => SyncStatus::Synced,
        };
    }
    if agent.failed_hashes.contains(&desired) {
        let runs_another =
            agent.reported_hash.is_some() && agent.reported_status == ReportedStatus::Applied;
        return if runs_another {
            SyncStatus::RolledBack
        } else {
            SyncStatus::Failed
        };
    }
    if !agent.reports_remote_config {
        return if agent.sent_hash == Some(desired) {
            SyncStatus::Synced
        } else {
            SyncStatus::Pending
        };
    }
    if agent.synced_hash == Some(desired) {
        return SyncStatus::Drifted;
    }
    if agent.sent_hash == Some(desired) {
        return SyncStatus::Applying;
    }
    SyncStatus::Pending
}

/// Agents per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    /// Agents that are synced.
    pub synced: usize,
    /// Agents that are pending.
    pub pending: usize,
    /// Agents that are applying.
    pub applying: usize,
    /// Agents that are failed.
    pub failed: usize,
    /// Agents that are rolled back.
    #[serde(rename = "rolled-back")]
    pub rolled_back: usize,
    /// Agents that are drifted.
    pub drifted: usize,
    /// Agents that are unmanaged.
    pub unmanaged: usize,
    /// Agents that are conflict.
    pub conflict: usize,
    /// Agents that are incompatible.
    pub incompatible: usize,
    /// Agents that are disconnected.
    pub disconnected: usize,
}

impl StatusCounts {
    /// Count one more agent in `status`.
    pub fn add(&mut self, status: SyncStatus) {
        *self.slot(status) += 1;
    }

    /// Count one agent less in `status` (never below zero).
    pub fn remove(&mut self, status: SyncStatus) {
        let slot = self.slot(status);
        *slot = slot.saturating_sub(1);
    }

    /// Agents in `status`.
    pub fn get(&self, status: SyncStatus) -> usize {
        let mut copy = *self;
        *copy.slot(status)
    }

    /// Every agent counted.
    pub fn total(&self) -> usize {
        SyncStatus::ALL.iter().map(|s| self.get(*s)).sum()
    }

    fn slot(&mut self, status: SyncStatus) -> &mut usize {
        match status {
            SyncStatus::Synced => &mut self.synced,
            SyncStatus::Pending => &mut self.pending,
            SyncStatus::Applying => &mut self.applying,
            SyncStatus::Failed => &mut self.failed,
            SyncStatus::RolledBack => &mut self.rolled_back,
            SyncStatus::Drifted => &mut self.drifted,
            SyncStatus::Unmanaged => &mut self.unmanaged,
            SyncStatus::Conflict => &mut self.conflict,
            SyncStatus::Incompatible => &mut self.incompatible,
            SyncStatus::Disconnected => &mut self.disconnected,
        }
    }
}

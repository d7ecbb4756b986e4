//! What the server knows of one agent, in plain data independent of OpAMP messages.
//!
//! The OpAMP layer folds each `AgentToServer` into an [`ObservedAgent`] (keeping last known values
//! for omitted fields); the plan reads only this record. Keeping it free of protobuf types lets
//! `reconcile --dry-run` load the same record from an agents file, so the dry run decides exactly
//! as the server would.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::config_map::ConfigHash;
use crate::plan::selector::Labels;

/// The last `RemoteConfigStatus.status` the agent reported (OpAMP `RemoteConfigStatuses`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportedStatus {
    /// UNSET (0), or no status ever reported.
    #[default]
    Unset,
    /// APPLIED (1).
    Applied,
    /// APPLYING (2): received, not yet running.
    Applying,
    /// FAILED (3) with the agent's `error_message`.
    Failed {
        /// The agent's `error_message`.
        #[serde(default)]
        error: String,
    },
}

/// One agent as the plan sees it.
///
/// Every field has a serde default so an agents file for the dry run may list only what it knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ObservedAgent {
    /// Instance UID as text (hex or UUID form); only compared and sorted, never parsed here.
    pub instance_uid: String,
    /// String attributes of the agent description (identifying and non-identifying).
    pub labels: Labels,
    /// Has a live WebSocket, or polled over HTTP within its liveness window.
    pub connected: bool,
    /// Capability AcceptsRemoteConfig (0x2): without it the spec forbids offering config.
    pub accepts_remote_config: bool,
    /// Capability ReportsRemoteConfig (0x1000). Without it the agent never sends a
    /// RemoteConfigStatus, so the plan relies on `sent_hash` instead of an acknowledgment.
    pub reports_remote_config: bool,
    /// `last_remote_config_hash`; `None` when absent, empty or not 32 bytes (not one of ours).
    pub reported_hash: Option<ConfigHash>,
    /// The status that came with `reported_hash`.
    pub reported_status: ReportedStatus,
    /// The hash last sent to this agent: a frame carrying it was queued on its connection, or
    /// a reply to its poll carried it (handing a push to the transport is not sending it).
    pub sent_hash: Option<ConfigHash>,
    /// When `sent_hash` was sent, in ms since the Unix epoch (the caller's clock).
    pub sent_at: Option<u64>,
    /// The connection `sent_hash` went out on (the caller's connection id), if known. A
    /// connection delivers in order, so a push is not repeated on the one it went out on; a
    /// reconnect may have lost it.
    pub sent_on: Option<u64>,
    /// The agent's current connection (the caller's id), if known.
    pub connection: Option<u64>,
    /// It is reached only in the replies to its polls (OpAMP over plain HTTP), not pushed to.
    pub polls: bool,
    /// The server asked for its full state and has not received it yet (a reconnect after a
    /// server restart, a lost message, an HTTP agent whose polls went to other replicas): its
    /// report, one round trip away, says what it runs, so nothing is sent before it (it may
    /// already run the desired config, or have been sent it by another replica).
    pub awaiting_report: bool,
    /// Every hash this agent reported FAILED for. Kept per (agent, hash) because a supervisor
    /// that rolls back reports FAILED(new) then APPLIED(old): comparing hashes alone would push
    /// the failing config forever.
    pub failed_hashes: BTreeSet<ConfigHash>,
    /// The desired hash this agent was last seen Synced on (acknowledged), cleared by a push.
    /// `Some(desired)` while it reports another hash means Drifted.
    pub synced_hash: Option<ConfigHash>,
    /// Last reported health (`ComponentHealth.healthy`); `None` if it does not report health.
    pub healthy: Option<bool>,
    /// The last hash it reported APPLIED: a config known to run on it, what a rollback sends.
    pub last_applied: Option<ConfigHash>,
    /// When the server that received it got that APPLIED report (Unix ms): of two servers'
    /// records of one agent (replicas on one database), the newer report wins.
    pub last_applied_at: Option<u64>,
    /// The error of its last FAILED report, kept after it moves on (a rolled-back agent still
    /// says why).
    pub last_error: Option<String>,
    /// What it reported of its packages and what was offered to it (agent upgrades).
    pub packages: crate::plan::upgrade::AgentPackages,
}

impl ObservedAgent {
    /// A connected agent that accepts and acknowledges remote config, with nothing reported yet.
    pub fn new(instance_uid: impl Into<String>) -> Self {
        ObservedAgent {
            instance_uid: instance_uid.into(),
            connected: true,
            accepts_remote_config: true,
            reports_remote_config: true,
            ..Default::default()
        }
    }

    /// Fold in a `RemoteConfigStatus` received at `at_ms` (Unix ms). `hash` is the raw
    /// `last_remote_config_hash`.
    ///
    /// FAILED adds the hash to `failed_hashes` (and keeps its error); APPLIED removes it (the
    /// agent has since applied those exact bytes, e.g. after a fix on the host), so the memory
    /// never outlives evidence, and makes it `last_applied`.
    pub fn observe_remote_config_status(
        &mut self,
        hash: &[u8],
        status: ReportedStatus,
        at_ms: u64,
    ) {
        let hash = ConfigHash::from_slice(hash);
        if let Some(h) = hash {
            match &status {
                ReportedStatus::Failed { error } => {
                    self.failed_hashes.insert(h);
                    if !error.is_empty() {
                        self.last_error = Some(error.clone());
                    }
                }
                ReportedStatus::Applied => {
                    self.failed_hashes.remove(&h);
                    self.last_applied = Some(h);
                    self.last_applied_at = Some(at_ms);
                }
                ReportedStatus::Unset | ReportedStatus::Applying => {}
            }
        }
        self.reported_hash = hash;
        self.reported_status = status;
    }

    /// Record that `hash` was sent at `now_ms` on connection `on` (if known). Clears
    /// `synced_hash`: after a (re-)push the agent has to acknowledge again, which is what stops
    /// a Drifted agent from being pushed on every message.
    pub fn note_push(&mut self, hash: ConfigHash, now_ms: u64, on: Option<u64>) {
        self.sent_hash = Some(hash);
        self.sent_at = Some(now_ms);
        self.sent_on = on;
        self.synced_hash = None;
    }

    /// An operator retry: forget everything that says `hash` failed or was already sent, so the
    /// plan pushes it again. Also clears a FAILED report of that very hash (an agent without
    /// rollback keeps reporting FAILED(hash), and the plan never pushes a hash the agent reports);
    /// the agent's next report replaces it. Returns whether there was anything to forget.
    pub fn retry(&mut self, hash: &ConfigHash) -> bool {
        let mut forgot = self.failed_hashes.remove(hash);
        if self.reported_hash == Some(*hash)
            && matches!(self.reported_status, ReportedStatus::Failed { .. })
        {
            self.reported_hash = None;
            self.reported_status = ReportedStatus::Unset;
            forgot = true;
        }
        if self.sent_hash == Some(*hash) {
            self.sent_hash = None;
            self.sent_at = None;
            self.sent_on = None;
        }
        forgot
    }
}

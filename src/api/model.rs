//! The JSON shapes of the status API, shared by the server (serialize) and the CLI
//! (`gitamp agents`, `gitamp status`: deserialize), so both sides cannot drift apart.
//!
//! Times are RFC 3339 text in UTC, except `sent_at` (milliseconds since the Unix epoch), which
//! keeps the [`gitamp_core::plan::ObservedAgent`] shape: an agent list item deserializes as an
//! `ObservedAgent`, so `gitamp agents -o json` output is a ready-made agents file for
//! `gitamp reconcile --dry-run`.

use std::collections::BTreeMap;

use gitamp_core::plan::ReportedStatus;
use serde::{Deserialize, Serialize};

/// `{"error": "..."}`, the body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `GET /api/v1/status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusResponse {
    /// Remote URL (credentials removed), folder path, or `embedded:example-repo`.
    pub source: String,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub sub_path: Option<String>,
    /// The accepted revision being served (None until the first good one).
    pub current_revision: Option<String>,
    /// Its commit's subject and author, when the source is Git and read it since start.
    #[serde(default)]
    pub current_commit: Option<CommitItem>,
    pub accepted_at: Option<String>,
    /// Warnings of the served revision (they do not reject it).
    #[serde(default)]
    pub warnings: Vec<DiagnosticItem>,
    pub last_fetch: Option<String>,
    pub last_fetch_duration_ms: Option<u64>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub next_retry: Option<String>,
    pub last_rejected: Option<RevisionItem>,
    pub agents: AgentCounts,
    pub configurations: usize,
    pub started_at: String,
    pub uptime_seconds: u64,
    /// When the reconciler last planned the fleet.
    pub view_computed_at: Option<String>,
    /// Several replicas on PostgreSQL: every replica and the whole fleet's counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::server::cluster::ClusterView>,
}

/// Agents per sync status (every status present, zeros included).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AgentCounts {
    pub total: usize,
    pub connected: usize,
    pub by_status: BTreeMap<String, usize>,
}

/// One diagnostic, flattened for tools.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiagnosticItem {
    pub code: String,
    pub name: String,
    pub severity: String,
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// One revision the server saw (`GET /api/v1/revisions`, `last_rejected`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevisionItem {
    pub revision: String,
    pub at: String,
    pub accepted: bool,
    pub errors: usize,
    pub warnings: usize,
    pub diagnostics: Vec<DiagnosticItem>,
    /// How far an accepted revision reached the fleet; `None` for a rejected one (and for one
    /// accepted before this server recorded convergence).
    pub convergence: Option<ConvergenceItem>,
    /// The commit's subject and author, when the source is Git and read it since start.
    #[serde(default)]
    pub commit: Option<CommitItem>,
}

/// A commit as people know it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitItem {
    /// The message's first line.
    pub subject: String,
    pub author: String,
    pub authored_at: Option<String>,
}

/// One accepted revision's reach: the agents it targeted and where each stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConvergenceItem {
    /// `rolling-out`, `converged`, `failed` or `superseded` (one rule:
    /// `server::convergence::verdict`).
    pub state: String,
    /// Why, for `failed` and `superseded`.
    pub reason: Option<String>,
    pub targeted: usize,
    pub applied: usize,
    pub failed: usize,
    pub rolled_back: usize,
    pub waiting: usize,
    /// Push → applied of the agents sent this revision's config.
    pub latency: LatencyItem,
    pub superseded_by: Option<String>,
}

/// Push → applied times in ms (p50 and p99 from a log histogram, within ~9%; max exact).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyItem {
    pub samples: u64,
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub max_ms: Option<u64>,
}

/// A page of a list: every list route answers one (`api::query::Paging` reads its
/// `limit` and `offset`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Items matching the filters, over all pages.
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
}

/// One agent in `GET /api/v1/agents`. Also a valid `ObservedAgent` (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentItem {
    /// Instance UID as canonical UUID text.
    pub uid: String,
    /// Same as `uid`, under the name the dry-run agents file uses.
    pub instance_uid: String,
    pub labels: BTreeMap<String, String>,
    /// Sync status (`synced`, `pending`, ...), or `unknown` before the reconciler planned it.
    pub status: String,
    pub configuration: Option<String>,
    /// Why, for statuses that carry a reason (conflict, failed).
    pub reason: Option<String>,
    pub desired_hash: Option<String>,
    /// The hash the agent last reported (None unless 32 bytes: not one of ours otherwise).
    pub reported_hash: Option<String>,
    /// The agent's `RemoteConfigStatus.status` as OpAMP names it (`APPLIED`, `FAILED`, ...).
    pub remote_status: Option<String>,
    pub remote_error: Option<String>,
    /// The same report in the dry-run shape.
    pub reported_status: ReportedStatus,
    pub connected: bool,
    /// `ws` or `http`.
    pub transport: String,
    pub connected_since: Option<String>,
    pub last_seen: String,
    /// `ComponentHealth.healthy`, None if the agent does not report health.
    pub healthy: Option<bool>,
    pub accepts_remote_config: bool,
    pub reports_remote_config: bool,
    pub sent_hash: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub sent_at: Option<u64>,
    pub failed_hashes: Vec<String>,
    /// The desired hash while the agent is synced or drifted from it (dry-run shape).
    pub synced_hash: Option<String>,
    /// The last hash it reported APPLIED: what a rollback sends it back to.
    pub last_applied: Option<String>,
    /// The agent version it reports running (OpAMP PackageStatuses `agent_has_version`).
    pub installed_version: Option<String>,
    /// The version its configuration pins (`spec.agentVersion`), if any.
    pub desired_version: Option<String>,
    /// Its upgrade to `desired_version`: `upgraded`, `pending`, `upgrading`, `upgrade-failed`,
    /// `rolled-back`, `incompatible`, `no-package` or `disconnected`.
    pub upgrade_status: Option<String>,
    /// Why (the agent's install error, masked; what it waits for).
    pub upgrade_reason: Option<String>,
    /// The heartbeat interval offered to it (none offered: the agent's own default).
    #[serde(default)]
    pub heartbeat_interval_seconds: Option<u64>,
    /// Where its own telemetry goes: `gitamp`, `none`, or the declared endpoint.
    #[serde(default)]
    pub telemetry_destination: Option<String>,
    /// The replica holding its connection (several servers on PostgreSQL); null when none
    /// does, and always on a single server.
    #[serde(default)]
    pub replica: Option<String>,
}

/// `GET /api/v1/agents/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentDetail {
    #[serde(flatten)]
    pub agent: AgentItem,
    pub description: Option<DescriptionItem>,
    pub capabilities: Capabilities,
    /// The agent's component health tree, as reported.
    pub health: Option<serde_json::Value>,
    pub sequence_num: u64,
    /// The masked YAML of its configuration (never the form sent to the agent).
    pub desired_config: Option<String>,
    /// What the agent reports it runs, normalized and masked.
    pub effective_config: Option<String>,
    /// `desired_config` against `effective_config`, as a unified diff (empty when equal).
    pub config_diff: Option<String>,
    /// The same comparison by meaning: true when the agent runs everything it was sent, whatever
    /// its own additions (a supervisor's `opamp` extension, defaults) and formatting.
    pub config_same_meaning: Option<bool>,
    /// Where they differ by meaning, plus (`added`) what only the agent has.
    pub config_differences: Option<Vec<gitamp_core::render::effective::ConfigDifference>>,
    /// Why the two could not be compared (an effective config that is not YAML).
    pub config_compare_error: Option<String>,
    /// Newest first.
    pub events: Vec<EventItem>,
    /// The connection settings offered to it and its answer (ConnectionSettingsStatus).
    #[serde(default)]
    pub connection_settings: serde_json::Value,
    /// Items its pipeline components handle, from its own metrics (null until it reports).
    #[serde(default)]
    pub throughput: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DescriptionItem {
    pub identifying: BTreeMap<String, String>,
    pub non_identifying: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Capabilities {
    pub bits: u64,
    /// Decoded names (`AcceptsRemoteConfig`, ...); unknown bits as `bit<N>`.
    pub names: Vec<String>,
}

/// One event (`GET /api/v1/events`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventItem {
    pub at: String,
    pub agent: Option<String>,
    pub kind: String,
    pub message: String,
}

/// One configuration (`GET /api/v1/configurations`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigurationItem {
    pub name: String,
    pub description: Option<String>,
    pub priority: i64,
    pub selector: serde_json::Value,
    /// Config hash of the rendered YAML (None if it did not render).
    pub hash: Option<String>,
    pub config_map_key: String,
    pub rollout_policy: serde_json::Value,
    pub matched_agents: usize,
    pub counts: BTreeMap<String, usize>,
    /// Rollout progress as the planner reports it.
    pub rollout: Option<serde_json::Value>,
    /// The AgentVersion it pins (`spec.agentVersion`), if any.
    pub agent_version: Option<String>,
    /// The progress of its upgrade to that version (the same shape as `rollout`).
    pub upgrade: Option<serde_json::Value>,
    pub sources: Vec<String>,
    pub processors: Vec<String>,
    pub destinations: Vec<String>,
}

/// `GET /api/v1/configurations/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigurationDetail {
    #[serde(flatten)]
    pub configuration: ConfigurationItem,
    pub revision: String,
    /// The agents it selects, with their status.
    pub agents: Vec<ConfigurationAgent>,
    /// Where its agents send their own telemetry (header values masked).
    #[serde(default)]
    pub telemetry: serde_json::Value,
    /// Its agents' own-metrics rates summed per component kind, and the top agents.
    #[serde(default)]
    pub throughput: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigurationAgent {
    pub uid: String,
    pub status: String,
}

/// `{revision, items}` for lists tied to the served revision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevisionList<T> {
    pub revision: Option<String>,
    pub items: Vec<T>,
}

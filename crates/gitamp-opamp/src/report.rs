//! What agents report, as plain data the registry keeps and snapshots share: description,
//! health, effective config, remote config status, and how they are connected.

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::proto;
use crate::ser::{ser_hex, ser_lossy, ser_opt_time, ser_time};

/// Which transport an agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// WebSocket (push capable).
    Ws,
    /// Plain HTTP polling.
    Http,
}

/// What changed in a report, for [`FleetEvent::Reported`](crate::fleet::FleetEvent::Reported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// Agent description (labels) changed.
    pub description: bool,
    /// Capabilities changed.
    pub capabilities: bool,
    /// Health changed.
    pub health: bool,
    /// Effective config changed.
    pub effective_config: bool,
    /// Remote config status changed.
    pub remote_config_status: bool,
    /// Package statuses changed.
    pub package_statuses: bool,
    /// The full report the server asked for arrived: what the agent runs is known again.
    pub full_state: bool,
}

impl Changes {
    /// True if anything changed.
    pub fn any(&self) -> bool {
        self.description
            || self.capabilities
            || self.health
            || self.effective_config
            || self.remote_config_status
            || self.package_statuses
            || self.full_state
    }
}

/// Agent description flattened to string attributes. Deserializable: a replica reads another
/// replica's agents back from the shared store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Description {
    /// Identifying attributes (service.name, service.instance.id, ...).
    pub identifying: BTreeMap<String, String>,
    /// Non-identifying attributes (host.*, os.*, ...).
    pub non_identifying: BTreeMap<String, String>,
}

impl Description {
    /// All attributes, identifying ones winning on key clashes: the agent's labels.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut all = self.non_identifying.clone();
        all.extend(self.identifying.iter().map(|(k, v)| (k.clone(), v.clone())));
        all
    }

    /// Whether [`Description::labels`] would equal `labels`, without building it.
    pub fn labels_equal(&self, labels: &BTreeMap<String, String>) -> bool {
        let mut seen = 0;
        for (k, v) in &self.identifying {
            if labels.get(k) != Some(v) {
                return false;
            }
            seen += 1;
        }
        for (k, v) in &self.non_identifying {
            if self.identifying.contains_key(k) {
                continue;
            }
            if labels.get(k) != Some(v) {
                return false;
            }
            seen += 1;
        }
        seen == labels.len()
    }
}

/// Component health, recursively (deserializable, like [`Description`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Health {
    /// Component is up and healthy.
    pub healthy: bool,
    /// Start time (0 if not running).
    pub start_time_unix_nano: u64,
    /// Last error text.
    pub last_error: String,
    /// Agent-defined status text.
    pub status: String,
    /// When the status was observed.
    pub status_time_unix_nano: u64,
    /// Sub-component health by component id.
    pub components: BTreeMap<String, Health>,
}

/// One config file as reported in the effective config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigFile {
    /// Body (shown as UTF-8, lossily, when serialized).
    #[serde(serialize_with = "ser_lossy")]
    pub body: Bytes,
    /// MIME type, possibly empty.
    pub content_type: String,
}

/// Remote config status as reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RemoteStatus {
    /// Hash the agent last received (hex when serialized).
    #[serde(serialize_with = "ser_hex")]
    pub hash: Bytes,
    /// UNSET, APPLIED, APPLYING or FAILED.
    pub status: RemoteState,
    /// Error text when FAILED.
    pub error: String,
}

/// `RemoteConfigStatuses`, unknown values mapped to `Unset`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RemoteState {
    /// Not set.
    #[default]
    Unset,
    /// Applied.
    Applied,
    /// Being applied.
    Applying,
    /// Failed (see error).
    Failed,
}

impl From<i32> for RemoteState {
    fn from(v: i32) -> Self {
        match proto::RemoteConfigStatuses::try_from(v) {
            Ok(proto::RemoteConfigStatuses::Applied) => Self::Applied,
            Ok(proto::RemoteConfigStatuses::Applying) => Self::Applying,
            Ok(proto::RemoteConfigStatuses::Failed) => Self::Failed,
            _ => Self::Unset,
        }
    }
}

/// Connection state of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionInfo {
    /// Whether the agent is considered connected.
    pub connected: bool,
    /// Transport of the last message.
    pub transport: Transport,
    /// When the current connection started (None while disconnected).
    #[serde(serialize_with = "ser_opt_time")]
    pub connected_since: Option<SystemTime>,
    /// When the last message arrived.
    #[serde(serialize_with = "ser_time")]
    pub last_seen: SystemTime,
    /// The connection of the last message (this process's id; an HTTP request counts as one).
    #[serde(skip)]
    pub id: Option<u64>,
}

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
    pub identifying: Attributes,
    /// Non-identifying attributes (host.*, os.*, ...).
    pub non_identifying: Attributes,
}

impl Description {
    /// All attributes, identifying ones winning on key clashes: the agent's labels.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut all: BTreeMap<String, String> = self
            .non_identifying
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
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

/// A small map from names, sorted by name: what the registry keeps per agent where an agent
/// reports a handful of entries (its attributes, its effective config's files).
///
/// A boxed slice rather than a `BTreeMap`: a map's first node is ~550 bytes for string pairs and
/// ~900 for config files, whatever it holds. In a heap profile of a replica with 5,000 agents the
/// three maps each agent kept were 2.2 KiB of its ~10 KiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortedMap<V>(Box<[(String, V)]>);

/// An agent's effective config: its files by name.
pub type ConfigFiles = SortedMap<ConfigFile>;

/// Attributes of an agent's description, flattened to strings.
pub type Attributes = SortedMap<String>;

impl<V> Default for SortedMap<V> {
    fn default() -> Self {
        SortedMap(Box::default())
    }
}

impl<V> SortedMap<V> {
    /// The value under `name`.
    pub fn get(&self, name: &str) -> Option<&V> {
        self.0
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Whether `name` is in it.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The entries in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.0.iter().map(|(n, v)| (n, v))
    }

    /// The entries in name order, values to change in place.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut V)> {
        self.0.iter_mut().map(|(n, v)| (&*n, v))
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Entries by name; of two with one name, the last wins (as collecting into a map would).
impl<V> FromIterator<(String, V)> for SortedMap<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(entries: I) -> Self {
        let mut entries: Vec<(String, V)> = entries.into_iter().collect();
        // Stable: equal names keep their order, and the last of each run is kept below.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut kept: Vec<(String, V)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match kept.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => kept.push(entry),
            }
        }
        SortedMap(kept.into_boxed_slice())
    }
}

impl<'a, V> IntoIterator for &'a SortedMap<V> {
    type Item = (&'a String, &'a V);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, V)>,
        fn(&'a (String, V)) -> (&'a String, &'a V),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(n, v)| (n, v))
    }
}

/// `map["name"]`: panics when absent, as a map's index does.
impl<V> std::ops::Index<&str> for SortedMap<V> {
    type Output = V;

    fn index(&self, name: &str) -> &V {
        self.get(name)
            .unwrap_or_else(|| panic!("no entry named {name:?}"))
    }
}

impl<V: Serialize> Serialize for SortedMap<V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for SortedMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<String, V>::deserialize(d)?.into_iter().collect())
    }
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

impl RemoteState {
    /// The name it serializes as (`APPLIED`, ...): what the store and the API record.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unset => "UNSET",
            Self::Applied => "APPLIED",
            Self::Applying => "APPLYING",
            Self::Failed => "FAILED",
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_state_is_named_as_it_serializes() {
        for state in [
            RemoteState::Unset,
            RemoteState::Applied,
            RemoteState::Applying,
            RemoteState::Failed,
        ] {
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::Value::from(state.name())
            );
        }
    }

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sorted_map_sorts_and_the_last_of_a_name_wins() {
        let m = attrs(&[
            ("os.type", "linux"),
            ("host.name", "a"),
            ("os.type", "windows"),
        ]);
        assert_eq!(m.len(), 2);
        assert_eq!(m["os.type"], "windows");
        assert_eq!(m.get("host.name").map(String::as_str), Some("a"));
        assert_eq!(m.get("absent"), None);
        assert!(!m.contains_key("absent"));
        let names: Vec<&String> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["host.name", "os.type"]);
    }

    #[test]
    fn sorted_map_reads_and_writes_as_a_json_object() {
        let m = attrs(&[("b", "2"), ("a", "1")]);
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(text, r#"{"a":"1","b":"2"}"#);
        let back: Attributes = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
        let d: Description =
            serde_json::from_str(r#"{"identifying":{"service.name":"x"}}"#).unwrap();
        assert_eq!(d.identifying["service.name"], "x");
        assert!(d.non_identifying.is_empty());
    }

    #[test]
    fn labels_let_identifying_attributes_win() {
        let d = Description {
            identifying: attrs(&[("service.name", "id")]),
            non_identifying: attrs(&[("service.name", "other"), ("os.type", "linux")]),
        };
        let labels = d.labels();
        assert_eq!(labels["service.name"], "id");
        assert_eq!(labels["os.type"], "linux");
        assert!(d.labels_equal(&labels));
    }
}

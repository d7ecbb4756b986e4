//! The fleet of a dry run: an agents file, or a running server's status API.
//!
//! Both end as [`ObservedAgent`]s, the record the server's planner reads, so the dry run
//! decides as the server would. The file format is deliberately forgiving (see [`AgentRecord`])
//! because people write it by hand, yet accepts `gitamp agents -o json` output unchanged,
//! which carries the full record (sent hash, failed hashes, ...).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, bail};
use gitamp_core::ConfigHash;
use gitamp_core::plan::{ObservedAgent, ReportedStatus};
use serde::Deserialize;
use serde_json::Value;

use super::{Baseline, Fleet, FleetInfo};
use crate::api::model::{ConfigurationItem, RevisionList};
use crate::cli::client::{Client, PAGE};

/// One agent of an agents file. Only an ID is required.
///
/// Defaults suit a hand-written file: an agent is connected and accepts and acknowledges remote
/// config unless `connected`, `capabilities` or the two capability booleans say otherwise.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AgentRecord {
    pub instance_uid: Option<String>,
    /// The status API's name for the same ID.
    pub uid: Option<String>,
    /// Label values; numbers and booleans are taken as their text.
    pub labels: BTreeMap<String, Value>,
    pub connected: Option<bool>,
    /// Capability names (`["AcceptsRemoteConfig", "ReportsRemoteConfig"]`), the status API's
    /// `{bits, names}`, or the OpAMP bit mask as a number.
    pub capabilities: Option<Value>,
    pub accepts_remote_config: Option<bool>,
    pub reports_remote_config: Option<bool>,
    /// The config hash the agent reports running (64 hex digits).
    #[serde(alias = "current_hash")]
    pub reported_hash: Option<String>,
    pub reported_status: Option<ReportedStatus>,
    pub sent_hash: Option<String>,
    pub sent_at: Option<u64>,
    pub failed_hashes: Vec<String>,
    pub synced_hash: Option<String>,
    pub healthy: Option<bool>,
    /// The last hash it reported APPLIED (what a rollback sends it back to).
    #[serde(alias = "applied_hash")]
    pub last_applied: Option<String>,
    /// The error of its last FAILED report.
    pub last_error: Option<String>,
    /// `ws` or `http` (the status API's field): an HTTP agent is offered a lost config again
    /// sooner, in the reply to its poll.
    pub transport: Option<String>,
}

/// OpAMP AgentCapabilities bits the plan reads.
const ACCEPTS_REMOTE_CONFIG: u64 = 0x2;
const REPORTS_REMOTE_CONFIG: u64 = 0x1000;

impl AgentRecord {
    /// The planner's record; `index` names the entry in errors.
    pub fn into_observed(self, index: usize) -> anyhow::Result<ObservedAgent> {
        let uid = self
            .instance_uid
            .or(self.uid)
            .filter(|u| !u.trim().is_empty())
            .with_context(|| format!("agent #{}: no instance_uid (or uid)", index + 1))?;
        let hash = |field: &str, value: Option<String>| -> anyhow::Result<Option<ConfigHash>> {
            value
                .filter(|v| !v.is_empty())
                .map(|v| {
                    ConfigHash::from_hex(&v).with_context(|| {
                        format!("agent {uid}: {field} {v:?} is not a config hash (64 hex digits)")
                    })
                })
                .transpose()
        };
        let (caps_accept, caps_report) = match &self.capabilities {
            None | Some(Value::Null) => (None, None),
            Some(v) => {
                let (a, r) = capabilities(v)
                    .with_context(|| format!("agent {uid}: unreadable capabilities {v}"))?;
                (Some(a), Some(r))
            }
        };
        let mut labels = BTreeMap::new();
        for (k, v) in self.labels {
            let text = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => bail!("agent {uid}: label {k} is not a string: {other}"),
            };
            labels.insert(k, text);
        }
        let mut failed_hashes = BTreeSet::new();
        for h in self.failed_hashes {
            if let Some(h) = hash("failed_hashes", Some(h))? {
                failed_hashes.insert(h);
            }
        }
        Ok(ObservedAgent {
            labels,
            connected: self.connected.unwrap_or(true),
            accepts_remote_config: self.accepts_remote_config.or(caps_accept).unwrap_or(true),
            reports_remote_config: self.reports_remote_config.or(caps_report).unwrap_or(true),
            reported_hash: hash("reported_hash", self.reported_hash)?,
            reported_status: self.reported_status.unwrap_or_default(),
            sent_hash: hash("sent_hash", self.sent_hash)?,
            sent_at: self.sent_at,
            failed_hashes,
            synced_hash: hash("synced_hash", self.synced_hash)?,
            healthy: self.healthy,
            last_applied: hash("last_applied", self.last_applied)?,
            last_error: self.last_error,
            polls: self.transport.as_deref() == Some("http"),
            instance_uid: uid,
            ..ObservedAgent::default()
        })
    }
}

/// `(accepts_remote_config, reports_remote_config)` from any accepted capabilities form.
fn capabilities(v: &Value) -> Option<(bool, bool)> {
    match v {
        Value::Number(n) => {
            let bits = n.as_u64()?;
            Some((
                bits & ACCEPTS_REMOTE_CONFIG != 0,
                bits & REPORTS_REMOTE_CONFIG != 0,
            ))
        }
        Value::Array(names) => {
            let has = |want: &str| {
                names.iter().any(|n| {
                    n.as_str().is_some_and(|s| {
                        s.eq_ignore_ascii_case(want)
                            || s.eq_ignore_ascii_case(&format!("AgentCapabilities_{want}"))
                    })
                })
            };
            Some((has("AcceptsRemoteConfig"), has("ReportsRemoteConfig")))
        }
        Value::Object(map) => match (map.get("names"), map.get("bits")) {
            (Some(names), _) => capabilities(names),
            (None, Some(bits)) => capabilities(bits),
            (None, None) => None,
        },
        _ => None,
    }
}

/// Parse an agents file: a JSON or YAML list of agents, or an object holding one under
/// `items` (a status API page) or `agents`.
pub fn parse_agents(text: &str) -> anyhow::Result<Vec<ObservedAgent>> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(json_err) => serde_saphyr::from_str(text).map_err(|yaml_err| {
            anyhow::anyhow!("neither JSON ({json_err}) nor YAML ({yaml_err})")
        })?,
    };
    let list = match value {
        Value::Array(list) => list,
        Value::Object(mut map) => match map.remove("items").or_else(|| map.remove("agents")) {
            Some(Value::Array(list)) => list,
            _ => bail!("expected a list of agents (or an object with `items` or `agents`)"),
        },
        Value::Null => Vec::new(),
        _ => bail!("expected a list of agents"),
    };
    let mut agents = Vec::with_capacity(list.len());
    let mut seen = BTreeSet::new();
    for (i, item) in list.into_iter().enumerate() {
        let record: AgentRecord = serde_json::from_value(item)
            .with_context(|| format!("agent #{}: unexpected shape", i + 1))?;
        let agent = record.into_observed(i)?;
        if !seen.insert(agent.instance_uid.clone()) {
            bail!("agent {} is listed twice", agent.instance_uid);
        }
        agents.push(agent);
    }
    Ok(agents)
}

pub(super) fn from_file(path: &Path) -> anyhow::Result<Fleet> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the agents file {}", path.display()))?;
    let agents = parse_agents(&text)
        .with_context(|| format!("the agents file {} is not valid", path.display()))?;
    Ok(Fleet {
        info: FleetInfo {
            source: "agents-file",
            location: path.to_string_lossy().into_owned(),
            agents: agents.len(),
            server_revision: None,
        },
        agents,
        known: BTreeMap::new(),
    })
}

/// Every agent of a running server, plus the masked rendering of each configuration it serves
/// (what its synced agents run now, to diff against when there is no `--base`).
pub(super) fn from_server(url: &str, token: Option<String>) -> anyhow::Result<Fleet> {
    let api = Client::connect(url, token)?;
    let base = api.base().to_string();
    let items: Vec<Value> = api.get_all("/api/v1/agents", &[], PAGE)?;
    let mut agents = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let record: AgentRecord = serde_json::from_value(item)
            .with_context(|| format!("agent #{} from {base}: unexpected shape", i + 1))?;
        agents.push(record.into_observed(i)?);
    }
    let configs: RevisionList<ConfigurationItem> = api.get("/api/v1/configurations", &[])?;
    let served = configs.revision.clone();
    let mut known = BTreeMap::new();
    for c in configs.items {
        let Some(hash) = c.hash else { continue };
        let path = format!("/api/v1/configurations/{}/rendered", c.name);
        let yaml = api.get_bytes(&path, &[])?;
        known.insert(
            hash,
            Baseline {
                description: format!(
                    "configuration {} as the server serves it (revision {})",
                    c.name,
                    served.as_deref().map(super::short).unwrap_or("unknown")
                ),
                masked_yaml: String::from_utf8_lossy(&yaml).into_owned(),
                yaml: None,
            },
        );
    }
    Ok(Fleet {
        info: FleetInfo {
            source: "server",
            location: base,
            agents: agents.len(),
            server_revision: served,
        },
        agents,
        known,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_yaml_defaults_to_a_capable_connected_agent() -> anyhow::Result<()> {
        let h = "ab".repeat(32);
        let agents = parse_agents(&format!(
            "- uid: a\n  labels: {{os.type: linux, port: 8080}}\n  reported_hash: {h}\n\
             - instance_uid: b\n  connected: false\n  capabilities: [AcceptsRemoteConfig]\n"
        ))?;
        assert_eq!(agents.len(), 2);
        assert!(agents[0].connected && agents[0].accepts_remote_config);
        assert_eq!(agents[0].labels["port"], "8080");
        assert_eq!(agents[0].reported_hash.map(|h| h.to_hex()), Some(h));
        assert!(!agents[1].connected && !agents[1].reports_remote_config);
        assert!(parse_agents("[{\"labels\": {}}]").is_err());
        assert!(parse_agents("[{\"uid\": \"a\", \"reported_hash\": \"xyz\"}]").is_err());
        assert!(parse_agents("[{\"uid\": \"a\"}, {\"uid\": \"a\"}]").is_err());
        assert_eq!(parse_agents("{\"items\": [{\"uid\": \"a\"}]}")?.len(), 1);
        Ok(())
    }
}

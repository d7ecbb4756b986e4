//! The whole fleet as the shared `agents` table holds it (PostgreSQL only): what one replica
//! reads of the agents other replicas hold, for the status API's fleet-wide list
//! (`api::fleet`). Read-only; the writer keeps the rows ([`super::postgres`]).

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PgStore, StoreError, UnixMillis};

/// One agent's row, as the list needs it. `health` and `description` are read only for one
/// agent's detail ([`PgStore::fleet_agent`]); the list reads `healthy` alone, so a refresh
/// does not parse every agent's component tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetRow {
    /// Lower-case hex, as written.
    pub instance_uid: String,
    pub labels: BTreeMap<String, String>,
    pub capabilities: u64,
    /// `health.healthy`; `None` when it never reported health.
    pub healthy: Option<bool>,
    pub reported_hash: Option<String>,
    /// `APPLIED`, `FAILED`, ...
    pub remote_config_status: Option<String>,
    pub remote_config_error: Option<String>,
    pub sent_hash: Option<String>,
    pub sent_at: Option<UnixMillis>,
    pub failed_hashes: Vec<String>,
    pub applied_hash: Option<String>,
    pub last_error: Option<String>,
    pub connected: bool,
    pub last_seen: UnixMillis,
    /// The replica holding its connection (`None`: none).
    pub replica: Option<String>,
    /// Only in [`PgStore::fleet_agent`]: the description and health as stored (JSON).
    pub description: Option<serde_json::Value>,
    pub health: Option<serde_json::Value>,
}

const FLEET_COLUMNS: &str = "instance_uid, COALESCE(labels, '{}') AS labels, capabilities, \
 (health::json ->> 'healthy')::boolean AS healthy, reported_hash, remote_config_status, \
 remote_config_error, sent_hash, sent_at, failed_hashes, applied_hash, last_error, connected, \
 last_seen, replica";

fn q(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { what, source }
}

fn json<T: serde::de::DeserializeOwned>(what: &'static str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Json { what, source })
}

fn fleet_row(row: &PgRow) -> Result<FleetRow, StoreError> {
    let r = |source| StoreError::Query {
        what: "reading the fleet's agents",
        source,
    };
    let labels: String = row.try_get("labels").map_err(r)?;
    let failed: String = row.try_get("failed_hashes").map_err(r)?;
    let capabilities: i64 = row.try_get("capabilities").map_err(r)?;
    Ok(FleetRow {
        instance_uid: row.try_get("instance_uid").map_err(r)?,
        labels: json("agents.labels", &labels)?,
        capabilities: capabilities as u64,
        healthy: row.try_get("healthy").map_err(r)?,
        reported_hash: row.try_get("reported_hash").map_err(r)?,
        remote_config_status: row.try_get("remote_config_status").map_err(r)?,
        remote_config_error: row.try_get("remote_config_error").map_err(r)?,
        sent_hash: row.try_get("sent_hash").map_err(r)?,
        sent_at: row.try_get("sent_at").map_err(r)?,
        failed_hashes: json("agents.failed_hashes", &failed)?,
        applied_hash: row.try_get("applied_hash").map_err(r)?,
        last_error: row.try_get("last_error").map_err(r)?,
        connected: row.try_get("connected").map_err(r)?,
        last_seen: row.try_get("last_seen").map_err(r)?,
        replica: row.try_get("replica").map_err(r)?,
        description: None,
        health: None,
    })
}

impl PgStore {
    /// Every agent but those `replica` holds (it knows its own from memory), by id: the
    /// agents other replicas hold and those no replica holds.
    pub async fn fleet_agents(&self, replica: &str) -> Result<Vec<FleetRow>, StoreError> {
        let sql = format!(
            "SELECT {FLEET_COLUMNS} FROM agents WHERE replica IS DISTINCT FROM $1 \
             ORDER BY instance_uid"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(replica)
            .fetch_all(self.pool())
            .await
            .map_err(q("reading the fleet's agents"))?;
        rows.iter().map(fleet_row).collect()
    }

    /// One agent's row with its description and health (`instance_uid` in lower-case hex).
    pub async fn fleet_agent(&self, instance_uid: &str) -> Result<Option<FleetRow>, StoreError> {
        let sql = format!(
            "SELECT {FLEET_COLUMNS}, description, health FROM agents WHERE instance_uid = $1"
        );
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(instance_uid)
            .fetch_optional(self.pool())
            .await
            .map_err(q("reading an agent"))?
        else {
            return Ok(None);
        };
        let mut agent = fleet_row(&row)?;
        let description: Option<String> =
            row.try_get("description").map_err(q("reading an agent"))?;
        let health: Option<String> = row.try_get("health").map_err(q("reading an agent"))?;
        agent.description = description
            .map(|d| json("agents.description", &d))
            .transpose()?;
        agent.health = health.map(|h| json("agents.health", &h)).transpose()?;
        Ok(Some(agent))
    }
}

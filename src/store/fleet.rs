//! The whole fleet as the shared `agents` table holds it (PostgreSQL only): what one replica
//! reads of the agents other replicas hold, for the status API's fleet-wide list
//! (`api::fleet`). Read-only; the writer keeps the rows ([`super::postgres`]).

use std::collections::BTreeMap;

use gitamp_core::ConfigHash;
use gitamp_core::plan::upgrade::AgentPackages;
use gitamp_core::plan::{ObservedAgent, ReportedStatus, Rollout};
use gitamp_opamp::proto::AgentCapabilities;
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::postgres::replica_alive;
use super::{PgStore, RolloutRecord, StoreError, UnixMillis};

/// A rollout row as a replica adopts it ([`PgStore::rollouts_to_adopt`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AdoptedRow {
    /// `members` is the list when the replica does not hold it already, else `None`.
    pub record: RolloutRecord,
    /// When the member list was last written.
    pub members_at: UnixMillis,
    /// The progress holds the list (a row written before migration 0011).
    pub whole: bool,
}

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
    /// Connected to a replica that is alive: it has a row in `replicas` and sessions open (a
    /// killed process's sessions end with it, long before its row is retired).
    pub live: bool,
    /// `labels` were read (the leader's incremental read leaves out labels not written since
    /// its last read: it knows them).
    pub labels_fresh: bool,
    /// What it reports of its packages (default when the row has none).
    pub packages: AgentPackages,
    /// Only in [`PgStore::fleet_agent`]: the description and health as stored (JSON).
    pub description: Option<serde_json::Value>,
    pub health: Option<serde_json::Value>,
}

/// The columns of a [`FleetRow`] but its labels, in the order [`fleet_row`] reads them by
/// position (every query that reads a row lists these first, then `labels, labels_fresh`).
macro_rules! row_columns {
    () => {
        concat!(
            "instance_uid, capabilities, (health::json ->> 'healthy')::boolean AS healthy, \
             reported_hash, remote_config_status, remote_config_error, sent_hash, sent_at, \
             failed_hashes, applied_hash, last_error, connected, last_seen, replica, packages, \
             (connected AND replica IN (SELECT r.id FROM replicas r WHERE ",
            replica_alive!(),
            ")) AS live"
        )
    };
}

const FLEET_COLUMNS: &str = concat!(
    row_columns!(),
    ", COALESCE(labels, '{}') AS labels, TRUE AS labels_fresh"
);

/// Agents' rows written by transactions at or after a watermark, with the watermark for the
/// next read: the oldest transaction still running now (rows it writes will carry an id at or
/// above it). Rows may be read twice; none is missed. Labels only when written since.
const CHANGED_AGENTS: &str = concat!(
    "SELECT ",
    row_columns!(),
    ", CASE WHEN labels_written_by >= $1::text::xid8 THEN COALESCE(labels, '{}') ELSE '{}' END \
     AS labels, (labels_written_by >= $1::text::xid8) AS labels_fresh, \
     pg_snapshot_xmin(pg_current_snapshot())::text AS next \
     FROM agents WHERE written_by >= $1::text::xid8"
);

fn q(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { what, source }
}

fn json<T: serde::de::DeserializeOwned>(what: &'static str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Json { what, source })
}

/// Parses a JSON column, the empty object or array without the parser: most rows' labels
/// (left out of an incremental read) and failed hashes are empty, and the leader reads every
/// agent's row after each revision.
fn json_or_default<T>(what: &'static str, text: &str) -> Result<T, StoreError>
where
    T: serde::de::DeserializeOwned + Default,
{
    match text {
        "{}" | "[]" => Ok(T::default()),
        _ => json(what, text),
    }
}

/// A [`FleetRow`] from the columns [`row_columns!`] lists followed by `labels` and
/// `labels_fresh`, read by position (by name was a lookup per column per row: a tenth of the
/// leader's read of 60,000 rows).
pub(super) fn fleet_row(row: &PgRow) -> Result<FleetRow, StoreError> {
    fn get<'r, T>(row: &'r PgRow, index: usize) -> Result<T, StoreError>
    where
        T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        row.try_get(index).map_err(|source| StoreError::Query {
            what: "reading the fleet's agents",
            source,
        })
    }
    let labels: &str = get(row, 16)?;
    let failed: &str = get(row, 8)?;
    let capabilities: i64 = get(row, 1)?;
    let packages: Option<&str> = get(row, 14)?;
    Ok(FleetRow {
        packages: packages
            .map(|p| json("agents.packages", p))
            .transpose()?
            .unwrap_or_default(),
        instance_uid: get(row, 0)?,
        labels: json_or_default("agents.labels", labels)?,
        capabilities: capabilities as u64,
        healthy: get(row, 2)?,
        reported_hash: get(row, 3)?,
        remote_config_status: get(row, 4)?,
        remote_config_error: get(row, 5)?,
        sent_hash: get(row, 6)?,
        sent_at: get(row, 7)?,
        failed_hashes: json_or_default("agents.failed_hashes", failed)?,
        applied_hash: get(row, 9)?,
        last_error: get(row, 10)?,
        connected: get(row, 11)?,
        last_seen: get(row, 12)?,
        replica: get(row, 13)?,
        live: get::<Option<bool>>(row, 15)?.unwrap_or(false),
        labels_fresh: get(row, 17)?,
        description: None,
        health: None,
    })
}

impl FleetRow {
    /// The record the plan reads, as the replica holding the agent would have it (its labels
    /// left out: callers that select by them have them in the row). What only that replica
    /// knows (an agent that drifted, its connection) is not stored.
    pub fn observed(&self) -> ObservedAgent {
        let caps = self.capabilities;
        ObservedAgent {
            connected: self.live,
            accepts_remote_config: caps & AgentCapabilities::AcceptsRemoteConfig as u64 != 0,
            reports_remote_config: caps & AgentCapabilities::ReportsRemoteConfig as u64 != 0,
            reported_hash: self.reported_hash.as_deref().and_then(ConfigHash::from_hex),
            reported_status: match self.remote_config_status.as_deref() {
                Some("APPLIED") => ReportedStatus::Applied,
                Some("APPLYING") => ReportedStatus::Applying,
                Some("FAILED") => ReportedStatus::Failed {
                    error: self.remote_config_error.clone().unwrap_or_default(),
                },
                _ => ReportedStatus::Unset,
            },
            healthy: self.healthy,
            packages: self.packages.clone(),
            ..super::stored_plan(
                self.sent_hash.as_deref(),
                self.sent_at,
                &self.failed_hashes,
                // The leader steps rollouts and lists the fleet: when it was applied is not
                // read.
                (self.applied_hash.as_deref(), None),
                self.last_error.as_ref(),
            )
        }
    }
}

impl PgStore {
    /// Which rollout records there are and when each was written, without their progress
    /// (each holds every member of the fleet): a replica re-reads them whole only when one
    /// moved.
    pub async fn rollout_stamps(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        sqlx::query_as(
            "SELECT configuration, target_hash, updated_at FROM rollouts \
             ORDER BY configuration, target_hash",
        )
        .fetch_all(self.pool())
        .await
        .map_err(q("reading the rollouts' stamps"))
    }

    /// The rollout records, each with its member list only when `held` (configuration, target,
    /// when its list was written) does not already hold that list: the list is every agent in
    /// scope, rewritten only when it changes, while the counts move every few seconds. One
    /// statement, so the progress and the list are of one moment.
    pub async fn rollouts_to_adopt(
        &self,
        held: &[(String, String, UnixMillis)],
    ) -> Result<Vec<AdoptedRow>, StoreError> {
        /// configuration, target, progress, members, updated_at, members_at, whole.
        type Columns = (String, String, String, Option<String>, i64, i64, bool);
        let rows: Vec<Columns> = sqlx::query_as(
            "SELECT r.configuration, r.target_hash, r.progress, \
             CASE WHEN h.at IS NULL THEN r.members END, r.updated_at, r.members_at, \
             r.members IS NULL \
             FROM rollouts r LEFT JOIN UNNEST($1::text[], $2::text[], $3::bigint[]) AS h(c, t, at) \
             ON h.c = r.configuration AND h.t = r.target_hash AND h.at = r.members_at \
             ORDER BY r.configuration, r.target_hash",
        )
        .bind(held.iter().map(|h| h.0.as_str()).collect::<Vec<_>>())
        .bind(held.iter().map(|h| h.1.as_str()).collect::<Vec<_>>())
        .bind(held.iter().map(|h| h.2).collect::<Vec<_>>())
        .fetch_all(self.pool())
        .await
        .map_err(q("reading the rollouts"))?;
        Ok(rows
            .into_iter()
            .map(
                |(configuration, target_hash, progress, members, updated_at, members_at, whole)| {
                    AdoptedRow {
                        record: RolloutRecord {
                            configuration,
                            target_hash,
                            progress,
                            members,
                            updated_at,
                        },
                        members_at,
                        whole,
                    }
                },
            )
            .collect())
    }

    /// The leader's upgrade rollouts (configuration → the rollout of its pinned agent version);
    /// a record that does not parse (written by another gitamp) is left out.
    pub async fn load_upgrade_rollouts(&self) -> Result<BTreeMap<String, Rollout>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT configuration, progress FROM upgrade_rollouts")
                .fetch_all(self.pool())
                .await
                .map_err(q("reading the upgrade rollouts"))?;
        Ok(rows
            .into_iter()
            .filter_map(|(name, progress)| {
                Some((name, serde_json::from_str::<Rollout>(&progress).ok()?))
            })
            .collect())
    }

    /// Which upgrade rollouts there are and when each was written, without their progress.
    pub async fn upgrade_rollout_stamps(&self) -> Result<Vec<(String, i64)>, StoreError> {
        sqlx::query_as(
            "SELECT configuration, updated_at FROM upgrade_rollouts ORDER BY configuration",
        )
        .fetch_all(self.pool())
        .await
        .map_err(q("reading the upgrade rollouts' stamps"))
    }

    /// Replace the upgrade rollouts with `rollouts`, in one transaction (the leader's write).
    pub async fn save_upgrade_rollouts(
        &self,
        rollouts: &BTreeMap<String, Rollout>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(q("writing the upgrade rollouts"))?;
        let names: Vec<&String> = rollouts.keys().collect();
        sqlx::query("DELETE FROM upgrade_rollouts WHERE NOT (configuration = ANY($1))")
            .bind(&names)
            .execute(&mut *tx)
            .await
            .map_err(q("writing the upgrade rollouts"))?;
        for (name, rollout) in rollouts {
            let progress = serde_json::to_string(rollout).map_err(|source| StoreError::Json {
                what: "upgrade_rollouts.progress",
                source,
            })?;
            sqlx::query(
                "INSERT INTO upgrade_rollouts (configuration, progress, updated_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (configuration) DO UPDATE SET \
                 progress = excluded.progress, updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(progress)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(q("writing the upgrade rollouts"))?;
        }
        tx.commit().await.map_err(q("writing the upgrade rollouts"))
    }

    /// The replicas alive now: a row in `replicas` and sessions open (their sessions carry
    /// the replica's id as `application_name`), sorted.
    pub async fn live_replicas(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(concat!(
            "SELECT r.id FROM replicas r WHERE ",
            replica_alive!(),
            " ORDER BY r.id"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(q("reading the live replicas"))
    }

    /// The agents' rows written since `watermark` (`"0"` for every row), handed to `each` in
    /// chunks of `chunk` as they arrive, and the watermark for the next read. See
    /// [`CHANGED_AGENTS`]; rows are written with `written_by` by [`super::postgres`]'s upsert.
    ///
    /// Streamed, not collected: a full read of 60,000 rows with their labels was ~170 MB on the
    /// leader at once (the rows, and the driver's buffer of the whole result).
    pub async fn changed_agents(
        &self,
        watermark: &str,
        chunk: usize,
        mut each: impl FnMut(&[FleetRow]),
    ) -> Result<Option<String>, StoreError> {
        use futures_util::TryStreamExt;
        let mut rows = sqlx::query(CHANGED_AGENTS)
            .bind(watermark)
            .fetch(self.pool());
        let mut next = None;
        let mut batch = Vec::with_capacity(chunk.max(1));
        while let Some(row) = rows.try_next().await.map_err(q("reading changed agents"))? {
            if next.is_none() {
                next = row.try_get::<String, _>("next").ok();
            }
            batch.push(fleet_row(&row)?);
            if batch.len() >= chunk.max(1) {
                each(&batch);
                batch.clear();
            }
        }
        drop(rows);
        if !batch.is_empty() {
            each(&batch);
        }
        if next.is_none() {
            // No row changed: the watermark moves to now's oldest running transaction.
            next = sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
                .fetch_one(self.pool())
                .await
                .map_err(q("reading the transaction watermark"))?;
        }
        Ok(next)
    }

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

//! The embedded SQLite backend (default): one file, `<data-dir>/gitamp.db`.
//!
//! WAL with `synchronous=NORMAL` keeps every committed transaction across a process crash
//! (only an OS crash can lose the last ones) at a fraction of FULL's fsync cost; readers do not
//! block the single writer. Queries are runtime-checked (`sqlx::query`), so no database is
//! needed at build time and the SQL stays shareable with the PostgreSQL backend.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use tracing::info;

use super::{
    AgentRecord, AgentResume, Batch, ConvergenceRecord, EventRecord, RevisionRecord, RolloutRecord,
    Store, StoreError,
};

/// Retention limits.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Events beyond this many of each kind (about the whole fleet; about agents), oldest
    /// first, are deleted after each write: a rollout's per-agent events must not delete the
    /// revisions' and rollouts'.
    pub max_events: u32,
    /// Revision history entries kept.
    pub max_revisions: u32,
    /// How long a connection waits for a lock before failing.
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_events: super::EVENTS_KEPT,
            max_revisions: 1_000,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The file name inside the data directory.
pub const DB_FILE: &str = "gitamp.db";

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    opts: StoreOptions,
    path: PathBuf,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl SqliteStore {
    /// Open (creating on first run) `<data_dir>/gitamp.db` and bring its schema up to date.
    pub async fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        SqliteStore::open_file(&data_dir.join(DB_FILE), StoreOptions::default()).await
    }

    pub async fn open_file(path: &Path, opts: StoreOptions) -> Result<SqliteStore, StoreError> {
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(opts.busy_timeout)
            .foreign_keys(true)
            // 32 MiB of page cache (the default is 2 MiB): a rollout updates every agent's
            // row, and with the agents table larger than the cache each upsert re-read its
            // pages from the file.
            .pragma("cache_size", "-32768");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(connect)
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        MIGRATOR.run(&pool).await.map_err(|err| match err {
            sqlx::migrate::MigrateError::VersionMissing(found) => StoreError::Newer {
                path: path.to_path_buf(),
                found,
                known: MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0),
            },
            other => StoreError::Migrate(other),
        })?;
        info!(path = %path.display(), "Opened the SQLite store.");
        Ok(SqliteStore {
            pool,
            opts,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// For the status API's own read queries and for tests.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Close every connection (checkpointing the WAL); call after the writer's last flush.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn q(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { what, source }
}

fn to_json(v: &impl serde::Serialize) -> String {
    // Serialising plain data (maps of strings, serde_json::Value) cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_string())
}

fn from_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Json { what, source })
}

fn agent_from_row(row: &SqliteRow) -> Result<AgentRecord, StoreError> {
    let labels: String = row.try_get("labels").map_err(q("reading agents"))?;
    let description: String = row.try_get("description").map_err(q("reading agents"))?;
    let health: String = row.try_get("health").map_err(q("reading agents"))?;
    let failed: String = row.try_get("failed_hashes").map_err(q("reading agents"))?;
    let capabilities: i64 = row.try_get("capabilities").map_err(q("reading agents"))?;
    Ok(AgentRecord {
        instance_uid: row.try_get("instance_uid").map_err(q("reading agents"))?,
        labels: Some(from_json("agents.labels", &labels)?),
        description: Some(from_json("agents.description", &description)?),
        capabilities: capabilities as u64,
        health: Some(from_json("agents.health", &health)?),
        reported_hash: row.try_get("reported_hash").map_err(q("reading agents"))?,
        remote_config_status: row
            .try_get("remote_config_status")
            .map_err(q("reading agents"))?,
        remote_config_error: row
            .try_get("remote_config_error")
            .map_err(q("reading agents"))?,
        effective_config_hash: row
            .try_get("effective_config_hash")
            .map_err(q("reading agents"))?,
        sent_hash: row.try_get("sent_hash").map_err(q("reading agents"))?,
        sent_at: row.try_get("sent_at").map_err(q("reading agents"))?,
        failed_hashes: from_json("agents.failed_hashes", &failed)?,
        applied_hash: row.try_get("applied_hash").map_err(q("reading agents"))?,
        applied_at: row.try_get("applied_at").map_err(q("reading agents"))?,
        last_error: row.try_get("last_error").map_err(q("reading agents"))?,
        connected: row.try_get("connected").map_err(q("reading agents"))?,
        last_seen: row.try_get("last_seen").map_err(q("reading agents"))?,
        packages: None,
        settings_offer: row.try_get("settings_offer").map_err(q("reading agents"))?,
    })
}

fn revision_from_row(row: &SqliteRow) -> Result<RevisionRecord, StoreError> {
    let diagnostics: String = row.try_get("diagnostics").map_err(q("reading revisions"))?;
    Ok(RevisionRecord {
        revision: row.try_get("revision").map_err(q("reading revisions"))?,
        time: row.try_get("time").map_err(q("reading revisions"))?,
        accepted: row.try_get("accepted").map_err(q("reading revisions"))?,
        diagnostics: from_json("revisions.diagnostics", &diagnostics)?,
        source_error: row
            .try_get("source_error")
            .map_err(q("reading revisions"))?,
    })
}

/// The agents columns an upsert always writes; `labels`, `description` and `health` are
/// written only when the record carries them (`None` keeps the stored value, see
/// [`AgentRecord`]). `settings_offer` is always bound, and a NULL keeps the stored one.
const AGENT_COLUMNS: [&str; 15] = [
    "instance_uid",
    "capabilities",
    "reported_hash",
    "remote_config_status",
    "remote_config_error",
    "effective_config_hash",
    "sent_hash",
    "sent_at",
    "failed_hashes",
    "applied_hash",
    "applied_at",
    "last_error",
    "connected",
    "last_seen",
    "settings_offer",
];

/// Rows per upsert statement, largest first: a batch is written in chunks of these sizes, so a
/// 15,000-agent rollout is ~60 statements instead of 15,000 round trips to the SQLite thread,
/// and at most 8 shapes x 5 sizes = 40 distinct statements are ever prepared (sqlx caches
/// them). 256 rows x 17 columns stays far below SQLite's 32,766 bound parameters.
const UPSERT_CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

/// Which of the optional columns the records of one upsert statement carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    labels: bool,
    description: bool,
    health: bool,
}

impl Shape {
    const ALL: usize = 8;

    fn of(a: &AgentRecord) -> Shape {
        Shape {
            labels: a.labels.is_some(),
            description: a.description.is_some(),
            health: a.health.is_some(),
        }
    }

    fn index(self) -> usize {
        usize::from(self.labels) * 4 + usize::from(self.description) * 2 + usize::from(self.health)
    }

    fn from_index(i: usize) -> Shape {
        Shape {
            labels: i & 4 != 0,
            description: i & 2 != 0,
            health: i & 1 != 0,
        }
    }
}

/// The multi-row upsert for `rows` records of one [`Shape`]. Positional `?` placeholders:
/// SQLite numbers them in order, so the builder needs no counter (a PostgreSQL backend would
/// number them `$n`).
fn upsert_agents_sql(shape: Shape, rows: usize) -> String {
    let mut columns: Vec<&str> = AGENT_COLUMNS.to_vec();
    if shape.labels {
        columns.push("labels");
    }
    if shape.description {
        columns.push("description");
    }
    if shape.health {
        columns.push("health");
    }
    let row = format!("({})", vec!["?"; columns.len()].join(", "));
    let updates: Vec<String> = columns[1..]
        .iter()
        .map(|c| match *c {
            "settings_offer" => format!("{c} = COALESCE(excluded.{c}, agents.{c})"),
            _ => format!("{c} = excluded.{c}"),
        })
        .collect();
    format!(
        "INSERT INTO agents ({}) VALUES {} ON CONFLICT (instance_uid) DO UPDATE SET {}",
        columns.join(", "),
        vec![row; rows].join(", "),
        updates.join(", ")
    )
}

/// Upsert `records` (all of one [`Shape`]) in as few statements as [`UPSERT_CHUNKS`] allows.
async fn upsert_agents(
    tx: &mut sqlx::SqliteConnection,
    shape: Shape,
    mut records: &[&AgentRecord],
) -> Result<(), StoreError> {
    for size in UPSERT_CHUNKS {
        if records.len() < size {
            continue;
        }
        // Built from the constant column names only: nothing from input reaches the SQL text.
        let sql: std::sync::Arc<str> = upsert_agents_sql(shape, size).into();
        while records.len() >= size {
            let (chunk, rest) = records.split_at(size);
            records = rest;
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
            for a in chunk {
                query = query
                    .bind(&a.instance_uid)
                    .bind(a.capabilities as i64)
                    .bind(&a.reported_hash)
                    .bind(&a.remote_config_status)
                    .bind(&a.remote_config_error)
                    .bind(&a.effective_config_hash)
                    .bind(&a.sent_hash)
                    .bind(a.sent_at)
                    .bind(to_json(&a.failed_hashes))
                    .bind(&a.applied_hash)
                    .bind(a.applied_at)
                    .bind(&a.last_error)
                    .bind(a.connected)
                    .bind(a.last_seen)
                    .bind(&a.settings_offer);
                if shape.labels {
                    query = query.bind(a.labels.as_ref().map(to_json));
                }
                if shape.description {
                    query = query.bind(a.description.as_ref().map(to_json));
                }
                if shape.health {
                    query = query.bind(a.health.as_ref().map(to_json));
                }
            }
            query
                .execute(&mut *tx)
                .await
                .map_err(q("upserting agents"))?;
        }
    }
    Ok(())
}

impl Store for SqliteStore {
    async fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        // Records grouped by shape (which of labels, description and health they carry),
        // each group written in multi-row statements.
        let mut shapes: [Vec<&AgentRecord>; Shape::ALL] = Default::default();
        for (uid, agent) in &batch.agents {
            match agent {
                Some(a) => {
                    shapes[Shape::of(a).index()].push(a);
                }
                None => {
                    sqlx::query("DELETE FROM agents WHERE instance_uid = $1")
                        .bind(uid)
                        .execute(&mut *tx)
                        .await
                        .map_err(q("deleting an agent"))?;
                }
            }
        }
        for (shape, records) in shapes.iter().enumerate() {
            upsert_agents(&mut tx, Shape::from_index(shape), records).await?;
        }
        for r in &batch.revisions {
            sqlx::query(
                "INSERT INTO revisions (revision, time, accepted, diagnostics, source_error) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&r.revision)
            .bind(r.time)
            .bind(r.accepted)
            .bind(to_json(&r.diagnostics))
            .bind(&r.source_error)
            .execute(&mut *tx)
            .await
            .map_err(q("recording a revision"))?;
            if r.accepted {
                sqlx::query(
                    "INSERT INTO current_revision (id, revision, time) VALUES (1, $1, $2) \
                     ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, \
                     time = excluded.time",
                )
                .bind(&r.revision)
                .bind(r.time)
                .execute(&mut *tx)
                .await
                .map_err(q("setting the current revision"))?;
            }
        }
        if !batch.revisions.is_empty() {
            sqlx::query(
                "DELETE FROM revisions WHERE id <= \
                 (SELECT id FROM revisions ORDER BY id DESC LIMIT 1 OFFSET $1)",
            )
            .bind(i64::from(self.opts.max_revisions))
            .execute(&mut *tx)
            .await
            .map_err(q("pruning revisions"))?;
        }
        for (configuration, target) in &batch.rollout_deletes {
            sqlx::query(
                "DELETE FROM rollouts WHERE configuration = $1 \
                 AND ($2 IS NULL OR target_hash = $2)",
            )
            .bind(configuration)
            .bind(target)
            .execute(&mut *tx)
            .await
            .map_err(q("deleting a rollout"))?;
        }
        for r in batch.rollouts.values() {
            sqlx::query(
                "INSERT INTO rollouts (configuration, target_hash, progress, members, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (configuration, target_hash) \
                 DO UPDATE SET progress = excluded.progress, updated_at = excluded.updated_at, \
                 members = COALESCE(excluded.members, rollouts.members)",
            )
            .bind(&r.configuration)
            .bind(&r.target_hash)
            .bind(&r.progress)
            .bind(&r.members)
            .bind(r.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(q("saving a rollout"))?;
        }
        for c in batch.convergence.values() {
            sqlx::query(
                "INSERT INTO convergence (revision, accepted_at, record) VALUES ($1, $2, $3) \
                 ON CONFLICT (revision) DO UPDATE SET record = excluded.record",
            )
            .bind(&c.revision)
            .bind(c.accepted_at)
            .bind(to_json(&c.record))
            .execute(&mut *tx)
            .await
            .map_err(q("saving convergence"))?;
        }
        if !batch.convergence.is_empty() {
            sqlx::query(
                "DELETE FROM convergence WHERE revision NOT IN \
                 (SELECT revision FROM convergence ORDER BY accepted_at DESC LIMIT $1)",
            )
            .bind(i64::from(self.opts.max_revisions))
            .execute(&mut *tx)
            .await
            .map_err(q("pruning convergence"))?;
        }
        for e in &batch.events {
            sqlx::query(
                "INSERT INTO events (time, agent_uid, kind, message) VALUES ($1, $2, $3, $4)",
            )
            .bind(e.time)
            .bind(&e.agent_uid)
            .bind(&e.kind)
            .bind(&e.message)
            .execute(&mut *tx)
            .await
            .map_err(q("appending an event"))?;
        }
        for class in super::EventClass::in_batch(&batch.events) {
            let sql = format!(
                "DELETE FROM events WHERE {which} AND id <= \
                 (SELECT id FROM events WHERE {which} ORDER BY id DESC LIMIT 1 OFFSET $1)",
                which = class.sql()
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(i64::from(self.opts.max_events))
                .execute(&mut *tx)
                .await
                .map_err(q("pruning events"))?;
        }
        for c in batch.configs.values() {
            sqlx::query(
                "INSERT INTO configs (hash, config_map, revision, time) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (hash) DO NOTHING",
            )
            .bind(&c.hash)
            .bind(to_json(&c.config_map))
            .bind(&c.revision)
            .bind(c.time)
            .execute(&mut *tx)
            .await
            .map_err(q("saving a config"))?;
        }
        if let Some(keep) = &batch.prune_configs {
            sqlx::query(
                "DELETE FROM configs WHERE hash NOT IN \
                 (SELECT applied_hash FROM agents WHERE applied_hash IS NOT NULL) \
                 AND hash NOT IN (SELECT value FROM json_each($1))",
            )
            .bind(to_json(keep))
            .execute(&mut *tx)
            .await
            .map_err(q("pruning configs"))?;
        }
        tx.commit().await.map_err(q("commit"))
    }

    async fn load_configs(&self) -> Result<Vec<super::ConfigRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT hash, config_map, revision, time FROM configs ORDER BY hash")
                .fetch_all(&self.pool)
                .await
                .map_err(q("loading configs"))?;
        rows.iter()
            .map(|row| {
                let map: String = row.try_get("config_map").map_err(q("reading configs"))?;
                Ok(super::ConfigRecord {
                    hash: row.try_get("hash").map_err(q("reading configs"))?,
                    config_map: from_json("configs.config_map", &map)?,
                    revision: row.try_get("revision").map_err(q("reading configs"))?,
                    time: row.try_get("time").map_err(q("reading configs"))?,
                })
            })
            .collect()
    }

    async fn load_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM agents ORDER BY instance_uid")
            .fetch_all(&self.pool)
            .await
            .map_err(q("loading agents"))?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn load_agent_resume(&self) -> Result<Vec<AgentResume>, StoreError> {
        let rows = sqlx::query(
            "SELECT instance_uid, labels, sent_hash, sent_at, failed_hashes, applied_hash, \
             applied_at, last_error, settings_offer FROM agents \
             ORDER BY instance_uid",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("loading agents"))?;
        rows.iter()
            .map(|row| {
                let labels: String = row.try_get("labels").map_err(q("reading agents"))?;
                let failed: String = row.try_get("failed_hashes").map_err(q("reading agents"))?;
                Ok(AgentResume {
                    instance_uid: row.try_get("instance_uid").map_err(q("reading agents"))?,
                    labels: from_json("agents.labels", &labels)?,
                    sent_hash: row.try_get("sent_hash").map_err(q("reading agents"))?,
                    sent_at: row.try_get("sent_at").map_err(q("reading agents"))?,
                    failed_hashes: from_json("agents.failed_hashes", &failed)?,
                    applied_hash: row.try_get("applied_hash").map_err(q("reading agents"))?,
                    applied_at: row.try_get("applied_at").map_err(q("reading agents"))?,
                    last_error: row.try_get("last_error").map_err(q("reading agents"))?,
                    settings_offer: row.try_get("settings_offer").map_err(q("reading agents"))?,
                })
            })
            .collect()
    }

    async fn load_rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT configuration, target_hash, progress, members, updated_at FROM rollouts \
             ORDER BY configuration, target_hash",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("loading rollouts"))?;
        rows.iter()
            .map(|row| {
                Ok(RolloutRecord {
                    configuration: row
                        .try_get("configuration")
                        .map_err(q("reading rollouts"))?,
                    target_hash: row.try_get("target_hash").map_err(q("reading rollouts"))?,
                    progress: row.try_get("progress").map_err(q("reading rollouts"))?,
                    members: row.try_get("members").map_err(q("reading rollouts"))?,
                    updated_at: row.try_get("updated_at").map_err(q("reading rollouts"))?,
                })
            })
            .collect()
    }

    async fn last_accepted_revision(&self) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT revision FROM current_revision WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(q("reading the current revision"))
    }

    async fn revisions(&self, limit: u32) -> Result<Vec<RevisionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT revision, time, accepted, diagnostics, source_error FROM revisions \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(q("loading revisions"))?;
        rows.iter().map(revision_from_row).collect()
    }

    async fn recent_events(
        &self,
        agent: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT time, agent_uid, kind, message FROM events \
             WHERE ($1 IS NULL OR agent_uid = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(agent)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(q("loading events"))?;
        rows.iter()
            .map(|row| {
                Ok(EventRecord {
                    time: row.try_get("time").map_err(q("reading events"))?,
                    agent_uid: row.try_get("agent_uid").map_err(q("reading events"))?,
                    kind: row.try_get("kind").map_err(q("reading events"))?,
                    message: row.try_get("message").map_err(q("reading events"))?,
                })
            })
            .collect()
    }

    async fn load_convergence(&self, limit: u32) -> Result<Vec<ConvergenceRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT revision, accepted_at, record FROM convergence \
             ORDER BY accepted_at DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(q("loading convergence"))?;
        rows.iter()
            .map(|row| {
                let record: String = row.try_get("record").map_err(q("reading convergence"))?;
                Ok(ConvergenceRecord {
                    revision: row.try_get("revision").map_err(q("reading convergence"))?,
                    accepted_at: row
                        .try_get("accepted_at")
                        .map_err(q("reading convergence"))?,
                    record: from_json("convergence.record", &record)?,
                })
            })
            .collect()
    }
}

//! The PostgreSQL backend (`--store postgres://…`): the shared state of several `gitamp serve`
//! replicas (README, "Operating several servers").
//!
//! Same tables and columns as SQLite (migrations/postgres mirror migrations/sqlite step for
//! step), same semantics. Each batch is one transaction; agents, rollouts and events go in as
//! multi-row statements over `UNNEST` of one array per column, so a 20,000-agent plan is a
//! handful of statements (one prepared shape each) instead of thousands of round trips.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection as _, PgConnection, Row};
use tracing::{info, warn};

use super::sqlite::StoreOptions;
use super::{
    AgentRecord, AgentResume, Batch, ConfigRecord, ConvergenceRecord, EventRecord, RevisionRecord,
    RolloutRecord, Store, StoreError,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Rows per multi-row statement: bounds one statement's size (and the server's memory for its
/// arrays) while keeping a plan's burst to a few statements.
const ROWS_PER_STATEMENT: usize = 5_000;

/// How long opening the store waits for the database before giving up with a clear error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    opts: StoreOptions,
    /// The URL without its password, for messages.
    shown: String,
    /// How to open a connection of one's own (the leader lock's, a listener's).
    connect: PgConnectOptions,
    /// This process's replica id: stamped on the agents it holds (`agents.replica`).
    replica: Option<String>,
}

/// `url` with any password replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    crate::source::redact_url(url)
}

impl PgStore {
    /// Connect to `url` and bring the schema up to date (the migrator holds an advisory lock,
    /// so replicas starting together migrate once). A schema from a newer gitamp is refused.
    pub async fn connect(url: &str, opts: StoreOptions) -> Result<PgStore, StoreError> {
        let shown = redact(url);
        let open_err = |source| StoreError::Connect {
            url: shown.clone(),
            source,
        };
        let connect: PgConnectOptions = url.parse().map_err(open_err)?;
        // gitamp's statements are short upserts and reads: PostgreSQL's JIT compiled each
        // large multi-row upsert anew (LLVM was ~15 % of the database's CPU in a 60,000-agent
        // rollout) and never paid back.
        let connect = connect.options([("jit", "off")]);
        // One connection first, so the error says why (refused, no such database, bad
        // password) rather than the pool's "timed out waiting for a connection".
        let probe = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&connect))
            .await
            .map_err(|_| open_err(sqlx::Error::PoolTimedOut))?
            .map_err(open_err)?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(connect.clone())
            .await
            .map_err(open_err)?;
        MIGRATOR.run(&pool).await.map_err(|err| match err {
            sqlx::migrate::MigrateError::VersionMissing(found) => StoreError::Newer {
                path: shown.clone().into(),
                found,
                known: MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0),
            },
            other => StoreError::Migrate(other),
        })?;
        info!(url = %shown, "Opened the PostgreSQL store.");
        Ok(PgStore {
            pool,
            opts,
            connect,
            shown,
            replica: None,
        })
    }

    /// Stamp agents this process writes as connected with `replica` (the whole-fleet view
    /// says which replica holds each agent).
    pub fn for_replica(mut self, replica: &str) -> PgStore {
        self.replica = Some(replica.to_string());
        self
    }

    pub fn connect_options(&self) -> &PgConnectOptions {
        &self.connect
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The URL without its password.
    pub fn shown_url(&self) -> &str {
        &self.shown
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// SQL: the replica of row `r` (of `replicas`) is alive. Each replica names its database
/// sessions after its id (`cluster::with_application_name`), and a killed process loses its
/// sessions at once, long before its row is retired: the one liveness rule every query uses.
macro_rules! replica_alive {
    () => {
        "EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.application_name = r.id)"
    };
}
pub(crate) use replica_alive;

fn q(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { what, source }
}

fn to_json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_string())
}

fn from_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Json { what, source })
}

/// One multi-row agent upsert. A NULL labels, description, health, packages or settings offer
/// keeps the stored value (see [`AgentRecord`]); a new row keeps the NULL, which readers see as
/// the default. Only the replica holding an agent's connection writes its record: a
/// "disconnected" record from a replica the agent has left (it reconnected to another) changes
/// nothing. Every write stamps the row with its transaction (`written_by`, see
/// [`PgStore::changed_agents`]).
///
/// Several replicas may hold one agent (an HTTP agent whose polls are balanced one by one), each
/// writing what reached it, so a write merges with the row rather than replacing it (migration
/// 0010): the agent's reports come from whichever record heard from it last (`last_seen`), the
/// rollback target from the later APPLIED (`applied_at`), the send from the later send
/// (`sent_at`), and the failed hashes are the union of both, less a hash the other record saw
/// APPLIED after this one's last message (`gitamp_merge_failed`, called only when they differ).
const UPSERT_AGENTS: &str = "\
INSERT INTO agents (instance_uid, capabilities, reported_hash, remote_config_status, \
 remote_config_error, effective_config_hash, sent_hash, sent_at, failed_hashes, applied_hash, \
 applied_at, last_error, connected, last_seen, labels, description, health, replica, packages, \
 settings_offer) \
SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
 $7::text[], $8::bigint[], $9::text[], $10::text[], $11::bigint[], $12::text[], $13::bool[], \
 $14::bigint[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[]) \
ON CONFLICT (instance_uid) DO UPDATE SET written_by = pg_current_xact_id(), \
 capabilities = excluded.capabilities, \
 reported_hash = CASE WHEN excluded.last_seen >= agents.last_seen \
  THEN excluded.reported_hash ELSE agents.reported_hash END, \
 remote_config_status = CASE WHEN excluded.last_seen >= agents.last_seen \
  THEN excluded.remote_config_status ELSE agents.remote_config_status END, \
 remote_config_error = CASE WHEN excluded.last_seen >= agents.last_seen \
  THEN excluded.remote_config_error ELSE agents.remote_config_error END, \
 effective_config_hash = CASE WHEN excluded.last_seen >= agents.last_seen \
  THEN excluded.effective_config_hash ELSE agents.effective_config_hash END, \
 last_error = CASE WHEN excluded.last_seen >= agents.last_seen \
  THEN COALESCE(excluded.last_error, agents.last_error) \
  ELSE COALESCE(agents.last_error, excluded.last_error) END, \
 last_seen = GREATEST(agents.last_seen, excluded.last_seen), \
 sent_hash = CASE WHEN agents.sent_at IS NULL OR excluded.sent_at >= agents.sent_at \
  THEN excluded.sent_hash ELSE agents.sent_hash END, \
 sent_at = GREATEST(agents.sent_at, excluded.sent_at), \
 failed_hashes = CASE WHEN excluded.failed_hashes = agents.failed_hashes THEN agents.failed_hashes \
  ELSE gitamp_merge_failed(agents.failed_hashes, agents.last_seen, agents.applied_hash, \
   agents.applied_at, excluded.failed_hashes, excluded.last_seen, excluded.applied_hash, \
   excluded.applied_at) END, \
 applied_hash = CASE WHEN excluded.applied_hash IS NOT NULL AND (agents.applied_hash IS NULL \
   OR agents.applied_at IS NULL OR excluded.applied_at >= agents.applied_at) \
  THEN excluded.applied_hash ELSE agents.applied_hash END, \
 applied_at = CASE WHEN excluded.applied_hash IS NOT NULL AND (agents.applied_hash IS NULL \
   OR agents.applied_at IS NULL OR excluded.applied_at >= agents.applied_at) \
  THEN excluded.applied_at ELSE agents.applied_at END, \
 connected = excluded.connected, \
 labels = COALESCE(excluded.labels, agents.labels), \
 labels_written_by = CASE WHEN excluded.labels IS NULL THEN agents.labels_written_by \
  ELSE pg_current_xact_id() END, \
 description = COALESCE(excluded.description, agents.description), \
 health = COALESCE(excluded.health, agents.health), \
 packages = COALESCE(excluded.packages, agents.packages), \
 settings_offer = COALESCE(excluded.settings_offer, agents.settings_offer), \
 replica = CASE WHEN excluded.connected THEN excluded.replica ELSE NULL END \
 WHERE excluded.connected OR agents.replica IS NULL OR agents.replica IS NOT DISTINCT FROM \
 excluded.replica";

/// The columns of [`UPSERT_AGENTS`], one array each, borrowing the records' text (a rollout's
/// batch is a record per agent: copying each hash again was a second copy of the batch).
#[derive(Default)]
struct AgentColumns<'a> {
    uid: Vec<&'a str>,
    capabilities: Vec<i64>,
    reported_hash: Vec<Option<&'a str>>,
    remote_config_status: Vec<Option<&'a str>>,
    remote_config_error: Vec<Option<&'a str>>,
    effective_config_hash: Vec<Option<&'a str>>,
    sent_hash: Vec<Option<&'a str>>,
    sent_at: Vec<Option<i64>>,
    failed_hashes: Vec<String>,
    applied_hash: Vec<Option<&'a str>>,
    applied_at: Vec<Option<i64>>,
    last_error: Vec<Option<&'a str>>,
    connected: Vec<bool>,
    last_seen: Vec<i64>,
    labels: Vec<Option<String>>,
    description: Vec<Option<String>>,
    health: Vec<Option<String>>,
    replica: Vec<Option<&'a str>>,
    packages: Vec<Option<String>>,
    settings_offer: Vec<Option<&'a str>>,
}

impl<'a> AgentColumns<'a> {
    fn push(&mut self, a: &'a AgentRecord, replica: Option<&'a str>) {
        self.uid.push(&a.instance_uid);
        self.capabilities.push(a.capabilities as i64);
        self.reported_hash.push(a.reported_hash.as_deref());
        self.remote_config_status
            .push(a.remote_config_status.as_deref());
        self.remote_config_error
            .push(a.remote_config_error.as_deref());
        self.effective_config_hash
            .push(a.effective_config_hash.as_deref());
        self.sent_hash.push(a.sent_hash.as_deref());
        self.sent_at.push(a.sent_at);
        self.failed_hashes.push(to_json(&a.failed_hashes));
        self.applied_hash.push(a.applied_hash.as_deref());
        self.applied_at.push(a.applied_at);
        self.last_error.push(a.last_error.as_deref());
        self.connected.push(a.connected);
        self.last_seen.push(a.last_seen);
        self.labels.push(a.labels.as_ref().map(to_json));
        self.description.push(a.description.as_ref().map(to_json));
        self.health.push(a.health.as_ref().map(to_json));
        self.replica.push(replica);
        self.packages.push(a.packages.as_ref().map(to_json));
        self.settings_offer.push(a.settings_offer.as_deref());
    }

    async fn write(self, tx: &mut sqlx::PgConnection) -> Result<(), StoreError> {
        sqlx::query(UPSERT_AGENTS)
            .bind(self.uid)
            .bind(self.capabilities)
            .bind(self.reported_hash)
            .bind(self.remote_config_status)
            .bind(self.remote_config_error)
            .bind(self.effective_config_hash)
            .bind(self.sent_hash)
            .bind(self.sent_at)
            .bind(self.failed_hashes)
            .bind(self.applied_hash)
            .bind(self.applied_at)
            .bind(self.last_error)
            .bind(self.connected)
            .bind(self.last_seen)
            .bind(self.labels)
            .bind(self.description)
            .bind(self.health)
            .bind(self.replica)
            .bind(self.packages)
            .bind(self.settings_offer)
            .execute(tx)
            .await
            .map_err(q("upserting agents"))?;
        Ok(())
    }
}

/// The agent columns read back, with NULL optional JSON read as SQLite's defaults.
const AGENT_SELECT: &str = "SELECT instance_uid, COALESCE(labels, '{}') AS labels, \
 COALESCE(description, 'null') AS description, capabilities, COALESCE(health, 'null') AS health, \
 reported_hash, remote_config_status, remote_config_error, effective_config_hash, sent_hash, \
 sent_at, failed_hashes, applied_hash, applied_at, last_error, connected, last_seen, \
 settings_offer FROM agents";

fn agent_from_row(row: &PgRow) -> Result<AgentRecord, StoreError> {
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
        // Not read back: a restarted replica's agents report their packages again.
        packages: None,
        settings_offer: row.try_get("settings_offer").map_err(q("reading agents"))?,
    })
}

/// What a reconciler resumes an agent from (see [`AgentResume`]).
const RESUME_SELECT: &str = "SELECT instance_uid, COALESCE(labels, '{}') AS labels, sent_hash, \
 sent_at, failed_hashes, applied_hash, applied_at, last_error, settings_offer FROM agents";

fn resume_from_row(row: &PgRow) -> Result<AgentResume, StoreError> {
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
}

impl PgStore {
    /// Deletes the rows of `table` (an id-keyed history: `revisions`, `events`) older than its
    /// newest `keep`, unless another replica is pruning it now: one prune of a table at a time
    /// (a transaction-scoped advisory lock, tried and never waited for), so replicas' prunes
    /// of the same rows cannot deadlock; the next batch prunes what a skipped one left. (Rows
    /// locked with `FOR UPDATE SKIP LOCKED` would do it too, at 7-37 % more per prune.) The
    /// batch is committed by now: a failed prune is logged, not returned, or the writer would
    /// apply the batch again and store its events twice.
    /// `which` is a condition on the rows (`TRUE`: all) that both the deletion and the
    /// count of the newest `keep` hold to; the lock is the table's (what older gitamps take).
    async fn prune_oldest(&self, table: &'static str, which: &'static str, keep: u32) {
        let sql = format!(
            "DELETE FROM {table} WHERE \
             (SELECT pg_try_advisory_xact_lock(hashtext('gitamp'), hashtext('prune {table}'))) \
             AND {which} AND id <= (SELECT id FROM {table} WHERE {which} ORDER BY id DESC LIMIT 1 OFFSET $1)"
        );
        if let Err(err) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(keep))
            .execute(&self.pool)
            .await
        {
            warn!(error = %err, table, "Pruning old rows failed; the next batch prunes them.");
        }
    }

    /// What the shared database says of these agents (lower-case hex uids): a replica reads it
    /// for an agent whose messages went to other replicas, since what it remembers of the
    /// agent (FAILED hashes, sends) is its own (src/server/reconciler/evidence.rs).
    ///
    /// A chunk of uids at a time, each looked up by the primary key: `IN (SELECT unnest($1))`
    /// is planned as a nested loop over it. With `instance_uid = ANY($1)` these reads (every
    /// agent that connected since the last one, in a ramp) took seconds while agents poured
    /// in, busy in PostgreSQL (up to 145 s at 200,000 agents), though the statement took
    /// milliseconds on the same table afterwards; the agents waited for their first config
    /// meanwhile. With this form, no read took over 1 s in two 60,000-agent ramps.
    pub async fn agent_resume_of(&self, uids: &[String]) -> Result<Vec<AgentResume>, StoreError> {
        const UIDS_PER_READ: usize = 1_000;
        let sql = format!("{RESUME_SELECT} WHERE instance_uid IN (SELECT unnest($1::text[]))");
        let mut found = Vec::new();
        for chunk in uids.chunks(UIDS_PER_READ) {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(chunk)
                .fetch_all(&self.pool)
                .await
                .map_err(q("reading agents"))?;
            for row in &rows {
                found.push(resume_from_row(row)?);
            }
        }
        Ok(found)
    }
}

fn revision_from_row(row: &PgRow) -> Result<RevisionRecord, StoreError> {
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

/// The channel an accepted revision is announced on (payload: the revision), sent inside the
/// transaction that records it, so PostgreSQL delivers it only once the row is committed.
pub const REVISION_CHANNEL: &str = "gitamp_revision";

/// The channel the leader announces the rollouts it wrote on (payload: `admission` when an
/// admission moved, `counts` when only counts did): every replica adopts them
/// (src/server/cluster/rollouts.rs).
pub const ROLLOUTS_CHANNEL: &str = "gitamp_rollouts";

/// The channel an operator's resume reaches the leader on (payload: the configuration).
pub const RESUME_CHANNEL: &str = "gitamp_resume";

/// The channel a batch that wrote agents' records is announced on (no payload), in its
/// transaction: the leader reads what changed ([`PgStore::changed_agents`]).
pub const AGENTS_CHANNEL: &str = "gitamp_agents";

impl Store for PgStore {
    async fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        let mut deletes: Vec<String> = Vec::new();
        let mut upserts: Vec<&AgentRecord> = Vec::new();
        for (uid, agent) in &batch.agents {
            match agent {
                Some(a) => upserts.push(a),
                None => deletes.push(uid.clone()),
            }
        }
        if !deletes.is_empty() {
            sqlx::query("DELETE FROM agents WHERE instance_uid = ANY($1)")
                .bind(&deletes)
                .execute(&mut *tx)
                .await
                .map_err(q("deleting agents"))?;
        }
        for chunk in upserts.chunks(ROWS_PER_STATEMENT) {
            let mut cols = AgentColumns::default();
            for a in chunk {
                cols.push(a, self.replica.as_deref());
            }
            cols.write(&mut tx).await?;
        }
        if !upserts.is_empty() || !deletes.is_empty() {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(AGENTS_CHANNEL)
                .execute(&mut *tx)
                .await
                .map_err(q("announcing agent changes"))?;
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
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(REVISION_CHANNEL)
                    .bind(&r.revision)
                    .execute(&mut *tx)
                    .await
                    .map_err(q("announcing the revision"))?;
            }
        }
        for chunk in batch.events.chunks(ROWS_PER_STATEMENT) {
            sqlx::query(
                "INSERT INTO events (time, agent_uid, kind, message) \
                 SELECT e.time, e.agent_uid, e.kind, e.message \
                 FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[]) \
                 WITH ORDINALITY AS e(time, agent_uid, kind, message, n) ORDER BY e.n",
            )
            .bind(chunk.iter().map(|e| e.time).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|e| e.agent_uid.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(chunk.iter().map(|e| e.kind.clone()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|e| e.message.clone()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .map_err(q("appending events"))?;
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
                 AND NOT (hash = ANY($1))",
            )
            .bind(keep)
            .execute(&mut *tx)
            .await
            .map_err(q("pruning configs"))?;
        }
        // Rows every replica writes (a configuration's rollout, a revision's convergence) come
        // last: their row locks are then held only until the commit just after, not while this
        // batch's agents and events are written (replicas otherwise queued behind each other).
        for (configuration, target) in &batch.rollout_deletes {
            sqlx::query(
                "DELETE FROM rollouts WHERE configuration = $1 \
                 AND ($2::text IS NULL OR target_hash = $2)",
            )
            .bind(configuration)
            .bind(target)
            .execute(&mut *tx)
            .await
            .map_err(q("deleting a rollout"))?;
        }
        if !batch.rollouts.is_empty() {
            let rs: Vec<&RolloutRecord> = batch.rollouts.values().collect();
            sqlx::query(
                "INSERT INTO rollouts \
                 (configuration, target_hash, progress, members, updated_at, members_at) \
                 SELECT c, t, p, m, u, u \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) \
                 AS r(c, t, p, m, u) \
                 ON CONFLICT (configuration, target_hash) DO UPDATE SET \
                 progress = excluded.progress, updated_at = excluded.updated_at, \
                 members = COALESCE(excluded.members, rollouts.members), \
                 members_at = CASE WHEN excluded.members IS NULL THEN rollouts.members_at \
                 ELSE excluded.members_at END",
            )
            .bind(
                rs.iter()
                    .map(|r| r.configuration.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(rs.iter().map(|r| r.target_hash.clone()).collect::<Vec<_>>())
            .bind(rs.iter().map(|r| r.progress.as_str()).collect::<Vec<_>>())
            .bind(rs.iter().map(|r| r.members.as_deref()).collect::<Vec<_>>())
            .bind(rs.iter().map(|r| r.updated_at).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .map_err(q("saving rollouts"))?;
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
        tx.commit().await.map_err(q("commit"))?;
        // Retention in statements of their own, after the commit: every replica prunes the same
        // old rows, and inside the batch each would wait for the others' whole transactions.
        if !batch.revisions.is_empty() {
            self.prune_oldest("revisions", "TRUE", self.opts.max_revisions)
                .await;
        }
        for class in super::EventClass::in_batch(&batch.events) {
            self.prune_oldest("events", class.sql(), self.opts.max_events)
                .await;
        }
        Ok(())
    }

    async fn load_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let sql = format!("{AGENT_SELECT} ORDER BY instance_uid");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(q("loading agents"))?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn load_agent_resume(&self) -> Result<Vec<AgentResume>, StoreError> {
        let sql = format!("{RESUME_SELECT} ORDER BY instance_uid");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(q("loading agents"))?;
        rows.iter().map(resume_from_row).collect()
    }

    async fn load_rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        // Each row decoded as it arrives: a fleet-wide rollout's text (every member listed) is
        // not held twice, once in the driver's row and once in the record; every replica reads
        // these whenever the leader writes one.
        let rows: Vec<(String, String, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT configuration, target_hash, progress, members, updated_at FROM rollouts \
             ORDER BY configuration, target_hash",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("loading rollouts"))?;
        Ok(rows
            .into_iter()
            .map(
                |(configuration, target_hash, progress, members, updated_at)| RolloutRecord {
                    configuration,
                    target_hash,
                    progress,
                    members,
                    updated_at,
                },
            )
            .collect())
    }

    async fn load_configs(&self) -> Result<Vec<ConfigRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT hash, config_map, revision, time FROM configs ORDER BY hash")
                .fetch_all(&self.pool)
                .await
                .map_err(q("loading configs"))?;
        rows.iter()
            .map(|row| {
                let map: String = row.try_get("config_map").map_err(q("reading configs"))?;
                Ok(ConfigRecord {
                    hash: row.try_get("hash").map_err(q("reading configs"))?,
                    config_map: from_json("configs.config_map", &map)?,
                    revision: row.try_get("revision").map_err(q("reading configs"))?,
                    time: row.try_get("time").map_err(q("reading configs"))?,
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
             WHERE ($1::text IS NULL OR agent_uid = $1) ORDER BY id DESC LIMIT $2",
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

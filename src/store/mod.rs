//! The agent-state store: what must survive a restart.
//!
//! Hot state lives in memory (the fleet registry); the store receives write-behind batches of
//! meaningful changes through a [`StoreWriter`], so the OpAMP message path never waits on disk.
//! A restart reads agents, rollout progress and the last accepted revision back, so agents
//! whose reported hash already matches get nothing new.
//!
//! [`Store`] is the backend interface (SQLite now, PostgreSQL for replicas later); it uses
//! `impl Future` in the trait (no `async_trait`), so it is used through generics, not `dyn`.

pub mod fleet;
pub mod postgres;
pub mod sqlite;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

pub use postgres::PgStore;
pub use sqlite::{SqliteStore, StoreOptions};

/// Milliseconds since the Unix epoch: the store's time unit (one INTEGER column, same on
/// SQLite and PostgreSQL, trivially JSON).
pub type UnixMillis = i64;

pub fn now_ms() -> UnixMillis {
    to_ms(SystemTime::now())
}

pub fn to_ms(t: SystemTime) -> UnixMillis {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// A planner time (`u64` ms since the epoch) as the store keeps it.
pub fn stored_ms(ms: u64) -> UnixMillis {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A stored time as the planner's (`u64` ms; a time before the epoch reads as 0).
pub fn plan_ms(ms: UnixMillis) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

/// The inverse of [`to_ms`]: a stored time (possibly before the epoch) as a `SystemTime`.
pub fn from_ms(ms: UnixMillis) -> SystemTime {
    let d = std::time::Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

/// One agent as persisted. The fleet owns the live copy; this is its durable image.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AgentRecord {
    /// Instance UID, lower-case hex.
    pub instance_uid: String,
    /// Selection labels. Always read back as `Some`; an upsert with `None` keeps the stored
    /// ones, like `description` (they change only when the agent describes itself anew).
    pub labels: Option<BTreeMap<String, String>>,
    /// The agent description as the fleet keeps it (opaque JSON here). Always read back as
    /// `Some`; an upsert with `None` keeps the stored value: most upserts record a sent or
    /// applied hash, and re-serializing an unchanged description for each cost a fifth of a
    /// rollout's plan (docs/benchmarks.md).
    pub description: Option<serde_json::Value>,
    /// OpAMP AgentCapabilities bit set.
    pub capabilities: u64,
    /// Component health (JSON); `None` in an upsert keeps the stored value, like `description`.
    pub health: Option<serde_json::Value>,
    /// `last_remote_config_hash` from the agent's RemoteConfigStatus (hex).
    pub reported_hash: Option<String>,
    /// The RemoteConfigStatus status name (`APPLIED`, `FAILED`, ...).
    pub remote_config_status: Option<String>,
    pub remote_config_error: Option<String>,
    pub effective_config_hash: Option<String>,
    /// Hash of the config last sent to it, and when.
    pub sent_hash: Option<String>,
    pub sent_at: Option<UnixMillis>,
    /// Hashes the agent reported FAILED for: not re-pushed until the desired config changes.
    pub failed_hashes: Vec<String>,
    /// The last hash it reported APPLIED (what a rollback sends it back to).
    pub applied_hash: Option<String>,
    /// When that APPLIED report was received: of two replicas' records, the newer wins.
    #[serde(default)]
    pub applied_at: Option<UnixMillis>,
    /// The error of its last FAILED report.
    pub last_error: Option<String>,
    pub connected: bool,
    pub last_seen: UnixMillis,
    /// What the agent reports of its packages (the planner's `AgentPackages`, JSON), for the
    /// leader's fleet-wide upgrade rollouts; `None` in an upsert keeps the stored value. Only
    /// the shared PostgreSQL store keeps it: a single server's agents report their packages
    /// again when they reconnect.
    pub packages: Option<serde_json::Value>,
    /// The last connection-settings offer sent to an agent that accepts `opamp` offers (it
    /// reconnects on each; gitamp-opamp's `SentOffer::to_text`): a restarted server, or another
    /// replica, does not offer it the same again. `None` in an upsert keeps the stored value.
    #[serde(default)]
    pub settings_offer: Option<String>,
}

/// One rendered config map, content-addressed, kept so that a rollback can send it after the
/// revision that rendered it stopped being served (even across a restart).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConfigRecord {
    /// Hex of the config-map hash.
    pub hash: String,
    /// Entry name → content type and body (UTF-8: rendered YAML).
    pub config_map: BTreeMap<String, ConfigEntry>,
    /// The revision that first served it.
    pub revision: String,
    pub time: UnixMillis,
}

/// One entry of a stored config map.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConfigEntry {
    pub content_type: String,
    pub body: String,
}

/// One revision the reconciler looked at.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RevisionRecord {
    /// Commit SHA or folder content id; empty when the source failed before producing one.
    pub revision: String,
    pub time: UnixMillis,
    pub accepted: bool,
    /// The core's diagnostics (opaque JSON here).
    pub diagnostics: serde_json::Value,
    pub source_error: Option<String>,
}

/// Rollout progress of one configuration towards one target hash.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RolloutRecord {
    pub configuration: String,
    pub target_hash: String,
    /// The planner's rollout as JSON text without its member list
    /// ([`gitamp_core::plan::Rollout::progress_json`]), stored and read back as is. Written
    /// before migration 0011 (PostgreSQL) or 0006 (SQLite), it holds the members too.
    pub progress: String,
    /// The member list, a JSON array of every agent in scope
    /// ([`gitamp_core::plan::Rollout::members_json`]): kept apart because it is most of the
    /// record (60,000 members: ~2.3 MB) and rarely changes, while the counts move at every
    /// step. In a write, `None` keeps the list stored; read back, `None` means the progress
    /// holds it (an older row).
    pub members: Option<String>,
    pub updated_at: UnixMillis,
}

/// Something that happened, for the status API's recent-events list.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventRecord {
    pub time: UnixMillis,
    pub agent_uid: Option<String>,
    pub kind: String,
    pub message: String,
}

/// How many events of each [`EventClass`] a store keeps by default.
pub const EVENTS_KEPT: u32 = 10_000;

/// The two kinds of event a store keeps apart, each to its own bound: a rollout to 60,000
/// agents records 120,000 events about agents, and one bound for all of them deleted every
/// event about the fleet (revisions, rollouts) within seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClass {
    /// About the whole fleet (no agent).
    Fleet,
    /// About one agent.
    Agent,
}

impl EventClass {
    /// The kind of an event naming `agent` (a record's `agent_uid`, a view's `agent`).
    pub fn of(agent: &Option<String>) -> EventClass {
        if agent.is_some() {
            EventClass::Agent
        } else {
            EventClass::Fleet
        }
    }

    /// The classes `events` hold (those a batch must prune).
    pub fn in_batch(events: &[EventRecord]) -> impl Iterator<Item = EventClass> + use<> {
        let fleet = events
            .iter()
            .any(|e| Self::of(&e.agent_uid) == EventClass::Fleet);
        let agent = events
            .iter()
            .any(|e| Self::of(&e.agent_uid) == EventClass::Agent);
        [
            fleet.then_some(EventClass::Fleet),
            agent.then_some(EventClass::Agent),
        ]
        .into_iter()
        .flatten()
    }

    /// Its rows, as an SQL condition on `events` (the same in SQLite and PostgreSQL).
    pub fn sql(self) -> &'static str {
        match self {
            EventClass::Fleet => "agent_uid IS NULL",
            EventClass::Agent => "agent_uid IS NOT NULL",
        }
    }
}

/// A change for the write-behind writer.
///
/// Not boxed: nearly every op is an agent upsert, so a box would add an allocation per op
/// without making the (bounded) queue smaller.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    /// Insert or replace every column of an agent.
    UpsertAgent(AgentRecord),
    DeleteAgent(String),
    /// Append to the revision history; an accepted one also becomes the current revision.
    RecordRevision(RevisionRecord),
    SaveRollout(RolloutRecord),
    /// Forget one target (or, with `None`, every target) of a configuration.
    DeleteRollout {
        configuration: String,
        target_hash: Option<String>,
    },
    AppendEvent(EventRecord),
    /// Keep a rendered config (a no-op if that hash is stored already).
    SaveConfig(ConfigRecord),
    /// Forget stored configs that no agent last applied, except those listed (the served ones).
    PruneConfigs {
        keep: Vec<String>,
    },
    /// Insert or replace one revision's convergence figures.
    SaveConvergence(ConvergenceRecord),
}

/// One accepted revision's convergence (opaque JSON here; `server::convergence` owns it).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvergenceRecord {
    pub revision: String,
    /// When the revision was accepted (ms since the Unix epoch): the order of the history.
    pub accepted_at: i64,
    pub record: serde_json::Value,
}

/// Coalesced ops, applied by a backend in one transaction.
///
/// Repeated upserts of one agent keep only the latest (a reconnect storm writes each agent
/// once per batch); rollout saves are coalesced per (configuration, target); revisions and
/// events are kept in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// `None` deletes the agent.
    pub agents: BTreeMap<String, Option<AgentRecord>>,
    pub revisions: Vec<RevisionRecord>,
    /// Applied before `rollouts`; a save made after a delete stays in `rollouts`.
    pub rollout_deletes: Vec<(String, Option<String>)>,
    pub rollouts: BTreeMap<(String, String), RolloutRecord>,
    pub events: Vec<EventRecord>,
    /// Configs to keep, by hash.
    pub configs: BTreeMap<String, ConfigRecord>,
    /// The last prune asked for (applied after `configs` and `agents`).
    pub prune_configs: Option<Vec<String>>,
    /// The latest figures of each revision.
    pub convergence: BTreeMap<String, ConvergenceRecord>,
    /// Ops pushed, before coalescing (for logs and the size trigger).
    pub ops: usize,
}

impl Batch {
    pub fn from_ops(ops: impl IntoIterator<Item = StoreOp>) -> Batch {
        let mut b = Batch::default();
        for op in ops {
            b.push(op);
        }
        b
    }

    pub fn push(&mut self, op: StoreOp) {
        self.ops += 1;
        match op {
            StoreOp::UpsertAgent(a) => {
                coalesce_agent(&mut self.agents, a.instance_uid.clone(), Some(a))
            }
            StoreOp::DeleteAgent(uid) => coalesce_agent(&mut self.agents, uid, None),
            StoreOp::RecordRevision(r) => self.revisions.push(r),
            StoreOp::SaveRollout(mut r) => {
                let key = (r.configuration.clone(), r.target_hash.clone());
                // A later save without members keeps the earlier one's: it means "unchanged".
                if r.members.is_none()
                    && let Some(earlier) = self.rollouts.get_mut(&key)
                {
                    r.members = earlier.members.take();
                }
                self.rollouts.insert(key, r);
            }
            StoreOp::DeleteRollout {
                configuration,
                target_hash,
            } => {
                self.rollouts.retain(|(c, h), _| {
                    !(c == &configuration && target_hash.as_ref().is_none_or(|t| t == h))
                });
                self.rollout_deletes.push((configuration, target_hash));
            }
            StoreOp::AppendEvent(e) => self.events.push(e),
            StoreOp::SaveConfig(c) => {
                self.configs.insert(c.hash.clone(), c);
            }
            StoreOp::PruneConfigs { keep } => self.prune_configs = Some(keep),
            StoreOp::SaveConvergence(c) => {
                self.convergence.insert(c.revision.clone(), c);
            }
        }
    }

    /// Takes every record waiting in `queue` (each queued after what this batch holds of its
    /// agent, so it wins).
    fn take_agents(&mut self, queue: &mut AgentQueue) {
        self.ops += std::mem::take(&mut queue.ops);
        if self.agents.is_empty() {
            self.agents = std::mem::take(&mut queue.records);
        } else {
            for (uid, record) in std::mem::take(&mut queue.records) {
                coalesce_agent(&mut self.agents, uid, record);
            }
        }
    }

    /// Events a batch holds at most while the store refuses it: the oldest go first (agent
    /// records, revisions and rollouts are bounded by the fleet and the repository; events
    /// by nothing).
    pub const MAX_HELD_EVENTS: usize = 10_000;

    /// Drops the oldest events past [`Batch::MAX_HELD_EVENTS`] (and a tenth more): events
    /// about agents first, so an outage during a rollout keeps the revisions' and rollouts'
    /// (the stores bound the two kinds apart too: [`EventClass`]).
    fn bound_events(&mut self) {
        // In steps of a tenth, so a long outage warns every thousand events, not every one.
        if self.events.len() <= Batch::MAX_HELD_EVENTS + Batch::MAX_HELD_EVENTS / 10 {
            return;
        }
        let excess = self.events.len() - Batch::MAX_HELD_EVENTS;
        warn!(
            dropped = excess,
            "Store unreachable: oldest held events dropped."
        );
        let mut left = excess;
        self.events.retain(|e| {
            let drop = left > 0 && EventClass::of(&e.agent_uid) == EventClass::Agent;
            left -= usize::from(drop);
            !drop
        });
        // More events about the fleet alone than the bound: the oldest of those go too.
        self.events.drain(..left);
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
            && self.revisions.is_empty()
            && self.rollout_deletes.is_empty()
            && self.rollouts.is_empty()
            && self.events.is_empty()
            && self.configs.is_empty()
            && self.prune_configs.is_none()
            && self.convergence.is_empty()
    }
}

/// Queues `record` (`None`: a delete) of agent `uid` over a pending one: the newest wins, but a
/// pending upsert's labels, description, health, packages or settings offer survive a later
/// one that keeps them.
fn coalesce_agent(
    agents: &mut BTreeMap<String, Option<AgentRecord>>,
    uid: String,
    record: Option<AgentRecord>,
) {
    let record = record.map(|mut a| {
        if let Some(Some(pending)) = agents.get_mut(&uid) {
            if a.labels.is_none() {
                a.labels = pending.labels.take();
            }
            if a.description.is_none() {
                a.description = pending.description.take();
            }
            if a.health.is_none() {
                a.health = pending.health.take();
            }
            if a.packages.is_none() {
                a.packages = pending.packages.take();
            }
            if a.settings_offer.is_none() {
                a.settings_offer = pending.settings_offer.take();
            }
        }
        a
    });
    agents.insert(uid, record);
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating the data directory {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the store {path}: {source}")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: sqlx::Error,
    },
    /// `--store postgres://…` that cannot be reached or refuses us (the URL shown without
    /// its password).
    #[error("connecting to the PostgreSQL store {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// `--store` that is neither a PostgreSQL URL nor empty.
    #[error(
        "--store {0:?} is not a PostgreSQL URL (postgres://user:password@host:port/database); \
         leave it unset for the SQLite store in --data-dir"
    )]
    BadUrl(String),
    #[error("migrating the store schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A downgrade: the store carries a schema step this binary does not know, so reading it
    /// could misread columns it never heard of.
    #[error(
        "the store {path} was written by a newer gitamp (schema step {found}; this binary knows \
         steps up to {known}): run that newer gitamp, or restore a backup made by this version"
    )]
    Newer {
        path: std::path::PathBuf,
        found: i64,
        known: i64,
    },
    #[error("store query ({what}): {source}")]
    Query {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("stored JSON in {what} is unreadable: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the store writer has stopped")]
    Closed,
    #[error("the store writer queue is full")]
    Full,
    #[error("store write failed: {0}")]
    Write(String),
}

impl StoreError {
    /// Whether the same write may succeed later: the database is away, busy, shutting down or
    /// out of room. A write it refuses for what it holds (a value it cannot store, a broken
    /// constraint) fails the same way every time, so a batch holding one is not retried.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Query { source, .. }
            | StoreError::Connect { source, .. }
            | StoreError::Open { source, .. } => transient(source),
            StoreError::Io { .. } => true,
            _ => false,
        }
    }
}

fn transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else {
                return false;
            };
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // An extended result code: busy, locked, I/O error, disk full, cannot open.
                return code
                    .parse::<u32>()
                    .is_ok_and(|extended| matches!(extended & 0xff, 5 | 6 | 10 | 13 | 14));
            }
            // PostgreSQL's SQLSTATE: connection exception (08), insufficient resources (53),
            // object not in prerequisite state (55: lock not available, not accepting
            // connections), operator intervention (57: shutting down), system error (58),
            // serialization failure and deadlock (40001, 40P01).
            ["08", "53", "55", "57", "58"]
                .iter()
                .any(|class| code.starts_with(class))
                || code == "40001"
                || code == "40P01"
        }
        _ => false,
    }
}

/// What the store keeps of the planner's record of an agent, decoded (hex hashes, ms since the
/// epoch): the one reading of those columns, for a restarted reconciler
/// (`agents_from_records`) and for another replica's row ([`fleet::FleetRow::observed`]).
/// Unreadable hashes are left out; the other fields are the default.
pub fn stored_plan(
    sent_hash: Option<&str>,
    sent_at: Option<i64>,
    failed_hashes: &[String],
    applied: (Option<&str>, Option<i64>),
    last_error: Option<&String>,
) -> gitamp_core::plan::ObservedAgent {
    use gitamp_core::ConfigHash;
    let sent = sent_hash
        .and_then(ConfigHash::from_hex)
        .zip(sent_at.map(plan_ms));
    gitamp_core::plan::ObservedAgent {
        sent_hash: sent.map(|(h, _)| h),
        sent_at: sent.map(|(_, at)| at),
        failed_hashes: failed_hashes
            .iter()
            .filter_map(|h| ConfigHash::from_hex(h))
            .collect(),
        last_applied: applied.0.and_then(ConfigHash::from_hex),
        last_applied_at: applied.1.map(plan_ms),
        last_error: last_error.cloned(),
        ..Default::default()
    }
}

/// The part of an [`AgentRecord`] a restarted reconciler resumes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentResume {
    pub instance_uid: String,
    pub labels: BTreeMap<String, String>,
    pub sent_hash: Option<String>,
    pub sent_at: Option<i64>,
    pub failed_hashes: Vec<String>,
    pub applied_hash: Option<String>,
    pub applied_at: Option<i64>,
    pub last_error: Option<String>,
    /// See [`AgentRecord::settings_offer`].
    pub settings_offer: Option<String>,
}

/// A storage backend. Writes go through [`Store::apply`] (one transaction per batch); reads
/// are for start-up and the status API.
pub trait Store: Send + Sync + 'static {
    fn apply(&self, batch: &Batch) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn load_agents(&self) -> impl Future<Output = Result<Vec<AgentRecord>, StoreError>> + Send;
    /// What a restarting reconciler needs of every agent, and nothing more: at 100k agents,
    /// reading and parsing every description and health held the server's start for seconds.
    fn load_agent_resume(
        &self,
    ) -> impl Future<Output = Result<Vec<AgentResume>, StoreError>> + Send {
        async {
            Ok(self
                .load_agents()
                .await?
                .into_iter()
                .map(|a| AgentResume {
                    instance_uid: a.instance_uid,
                    labels: a.labels.unwrap_or_default(),
                    sent_hash: a.sent_hash,
                    sent_at: a.sent_at,
                    failed_hashes: a.failed_hashes,
                    applied_hash: a.applied_hash,
                    applied_at: a.applied_at,
                    last_error: a.last_error,
                    settings_offer: a.settings_offer,
                })
                .collect())
        }
    }
    fn load_rollouts(&self) -> impl Future<Output = Result<Vec<RolloutRecord>, StoreError>> + Send;
    /// Every stored config (rollback targets), for a restarting reconciler.
    fn load_configs(&self) -> impl Future<Output = Result<Vec<ConfigRecord>, StoreError>> + Send;
    /// The revision being served when the process stopped.
    fn last_accepted_revision(
        &self,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;
    /// Newest first.
    fn revisions(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<RevisionRecord>, StoreError>> + Send;
    /// Newest first; only one agent's when `agent` is given.
    fn recent_events(
        &self,
        agent: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<EventRecord>, StoreError>> + Send;
    /// The convergence of the last `limit` accepted revisions, newest first. A backend that
    /// keeps no history (a test's) has none.
    fn load_convergence(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ConvergenceRecord>, StoreError>> + Send {
        let _ = limit;
        async { Ok(Vec::new()) }
    }
}

/// The store `gitamp serve` runs on: SQLite in the data directory (the default, one server) or
/// PostgreSQL (`--store postgres://…`, shared by several replicas). An enum, not `dyn`: the
/// trait's `impl Future` methods are not object-safe, and a match per batch costs nothing.
// One per process, behind an `Arc`: the size of the PostgreSQL variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Whether `--store` names PostgreSQL.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl AnyStore {
    /// Open the store `--store` names (`None`: SQLite in `data_dir`).
    pub async fn open(
        url: Option<&str>,
        data_dir: &std::path::Path,
    ) -> Result<AnyStore, StoreError> {
        match url {
            None => Ok(AnyStore::Sqlite(SqliteStore::open(data_dir).await?)),
            Some(url) if is_postgres_url(url) => Ok(AnyStore::Postgres(
                PgStore::connect(url, StoreOptions::default()).await?,
            )),
            Some(other) => Err(StoreError::BadUrl(postgres::redact(other))),
        }
    }

    pub fn postgres(&self) -> Option<&PgStore> {
        match self {
            AnyStore::Postgres(pg) => Some(pg),
            AnyStore::Sqlite(_) => None,
        }
    }

    pub async fn close(&self) {
        match self {
            AnyStore::Sqlite(s) => s.close().await,
            AnyStore::Postgres(p) => p.close().await,
        }
    }
}

/// Forwards every method to the backend.
macro_rules! each_backend {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $e,
            AnyStore::Postgres($s) => $e,
        }
    };
}

impl Store for AnyStore {
    async fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        each_backend!(self, s => s.apply(batch).await)
    }
    async fn load_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        each_backend!(self, s => s.load_agents().await)
    }
    async fn load_agent_resume(&self) -> Result<Vec<AgentResume>, StoreError> {
        each_backend!(self, s => s.load_agent_resume().await)
    }
    async fn load_rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        each_backend!(self, s => s.load_rollouts().await)
    }
    async fn load_configs(&self) -> Result<Vec<ConfigRecord>, StoreError> {
        each_backend!(self, s => s.load_configs().await)
    }
    async fn last_accepted_revision(&self) -> Result<Option<String>, StoreError> {
        each_backend!(self, s => s.last_accepted_revision().await)
    }
    async fn revisions(&self, limit: u32) -> Result<Vec<RevisionRecord>, StoreError> {
        each_backend!(self, s => s.revisions(limit).await)
    }
    async fn recent_events(
        &self,
        agent: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        each_backend!(self, s => s.recent_events(agent, limit).await)
    }
    async fn load_convergence(&self, limit: u32) -> Result<Vec<ConvergenceRecord>, StoreError> {
        each_backend!(self, s => s.load_convergence(limit).await)
    }
}

/// When the writer commits.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Longest time an op waits before its batch is committed.
    pub max_delay: Duration,
    /// Commit as soon as this many ops are pending.
    pub max_ops: usize,
    /// Capacity of the queue of ops other than agent records; `send` waits (and `try_send`
    /// fails) when it is full. Agent records are not counted: see [`StoreWriter`].
    pub queue: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            max_delay: Duration::from_millis(200),
            // Large enough that a plan's burst (a record per agent of a rollout) is one
            // transaction: each touched page then goes to the WAL once, not once per 1,000
            // rows (at 1,000, writing a 15,000-agent rollout took the SQLite thread ~1 s).
            max_ops: 20_000,
            queue: 16 * 1024,
        }
    }
}

#[allow(clippy::large_enum_variant)] // Flush is rare; see StoreOp.
enum Msg {
    Op(StoreOp),
    Flush(oneshot::Sender<Result<(), String>>),
}

/// Agent records waiting for the writer: the newest per agent (see [`coalesce_agent`]).
#[derive(Default)]
struct AgentQueue {
    records: BTreeMap<String, Option<AgentRecord>>,
    /// Records queued since the writer last took them (for the size trigger and the logs).
    ops: usize,
}

/// What producers and the writer task share besides the op channel.
struct Shared {
    agents: std::sync::Mutex<AgentQueue>,
    /// Wakes the writer when the agent queue stops being empty or reaches `max_ops`.
    wake: Notify,
    max_ops: usize,
}

impl Shared {
    fn agents(&self) -> std::sync::MutexGuard<'_, AgentQueue> {
        // A producer that panicked while holding the lock left a consistent map (inserts only).
        self.agents.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle to the write-behind task: cheap to clone, one per producer.
///
/// Agent records never wait and are never dropped: a burst (a rollout's plan writes a record
/// per agent, a reconnect storm thousands a second) would overflow any bounded queue while a
/// slow commit runs, and a dropped record was a lost applied hash until the agent's next
/// change. They are coalesced per agent instead (the newest replaces the queued one), so what
/// is queued is bounded by the fleet, not by the burst. Every other op goes through a bounded
/// channel, in order.
#[derive(Clone)]
pub struct StoreWriter {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

impl StoreWriter {
    /// Start the writer task. It stops (after committing what is pending) when every handle
    /// is dropped.
    pub fn spawn<S: Store>(store: Arc<S>, opts: WriterOptions) -> (StoreWriter, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(opts.queue.max(1));
        let shared = Arc::new(Shared {
            agents: std::sync::Mutex::new(AgentQueue::default()),
            wake: Notify::new(),
            max_ops: opts.max_ops.max(1),
        });
        let task = tokio::spawn(writer_loop(store, opts, rx, shared.clone()));
        (StoreWriter { tx, shared }, task)
    }

    /// Queues an agent's record (or its deletion) over any queued one of the same agent.
    fn queue_agent(&self, uid: String, record: Option<AgentRecord>) -> Result<(), StoreError> {
        if self.tx.is_closed() {
            return Err(StoreError::Closed);
        }
        let wake = {
            let mut q = self.shared.agents();
            let was_empty = q.records.is_empty();
            coalesce_agent(&mut q.records, uid, record);
            q.ops += 1;
            was_empty || q.ops == self.shared.max_ops
        };
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Queue an op, waiting for room (backpressure); agent records never wait.
    pub async fn send(&self, op: StoreOp) -> Result<(), StoreError> {
        match op {
            StoreOp::UpsertAgent(a) => self.queue_agent(a.instance_uid.clone(), Some(a)),
            StoreOp::DeleteAgent(uid) => self.queue_agent(uid, None),
            op => self
                .tx
                .send(Msg::Op(op))
                .await
                .map_err(|_| StoreError::Closed),
        }
    }

    /// Queue an op without waiting: for paths that must never block on the disk. Only ops
    /// other than agent records can find the queue full.
    pub fn try_send(&self, op: StoreOp) -> Result<(), StoreError> {
        match op {
            StoreOp::UpsertAgent(a) => self.queue_agent(a.instance_uid.clone(), Some(a)),
            StoreOp::DeleteAgent(uid) => self.queue_agent(uid, None),
            op => self.tx.try_send(Msg::Op(op)).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Full,
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            }),
        }
    }

    /// Whether at most a quarter of the op queue is taken: producers of ops that may be
    /// dropped (events) stop there, so those that must not be (revisions, rollouts) keep the
    /// rest.
    pub fn has_headroom(&self) -> bool {
        self.tx.capacity() >= self.tx.max_capacity() - self.tx.max_capacity() / 4
    }

    /// Ask the writer to commit everything queued before this call now rather than after its
    /// delay, without waiting for it: the caller goes on while the disk works. A full queue
    /// drops the request (the batch is then committed within the delay, as any other).
    pub fn commit_now(&self) {
        let (reply, _) = oneshot::channel();
        let _ = self.tx.try_send(Msg::Flush(reply));
    }

    /// Commit everything queued before this call and wait until it is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Flush(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await
            .map_err(|_| StoreError::Closed)?
            .map_err(StoreError::Write)
    }
}

async fn writer_loop<S: Store>(
    store: Arc<S>,
    opts: WriterOptions,
    mut rx: mpsc::Receiver<Msg>,
    shared: Arc<Shared>,
) {
    let mut batch = Batch::default();
    let mut deadline: Option<Instant> = None;
    // While the store refuses writes: when to try again, and the wait after that one.
    let mut retry: Option<Retry> = None;
    let max_ops = shared.max_ops;
    // Commits `batch` with every agent record queued so far (those queued before a flush
    // included: they are in the map by the time its message is read). A batch the store
    // refused stays pending, with a retry scheduled; the next commit carries it and every op
    // queued since.
    let commit_all = async |batch: &mut Batch, retry: &mut Option<Retry>| {
        batch.take_agents(&mut shared.agents());
        match commit(&*store, batch).await {
            Outcome::Committed => {
                if retry.take().is_some() {
                    info!("Store writes succeed again; the held batch is committed.");
                }
                Ok(())
            }
            Outcome::Dropped(err) => {
                *retry = None;
                Err(err)
            }
            Outcome::Held(err) => {
                *retry = Some(Retry::after(retry.take()));
                Err(err)
            }
        }
    };
    loop {
        // A refused batch waits for its retry, not for the size trigger or the usual delay.
        let wake_at = retry.as_ref().map(|r| r.at).or(deadline);
        let msg = tokio::select! {
            m = rx.recv() => Some(m),
            () = shared.wake.notified() => None,
            () = sleep_until_some(wake_at) => {
                let _ = commit_all(&mut batch, &mut retry).await;
                deadline = None;
                continue;
            }
        };
        match msg {
            // Agent records arrived.
            None => {
                if retry.is_none() && batch.ops + shared.agents().ops >= max_ops {
                    let _ = commit_all(&mut batch, &mut retry).await;
                    deadline = None;
                } else if deadline.is_none() {
                    deadline = Some(Instant::now() + opts.max_delay);
                }
            }
            Some(None) => {
                if commit_all(&mut batch, &mut retry).await.is_err() {
                    error!(
                        agents = batch.agents.len(),
                        events = batch.events.len(),
                        "Store writer stopping with writes the store refused; they are lost."
                    );
                }
                break;
            }
            Some(Some(Msg::Op(op))) => {
                batch.push(op);
                if retry.is_some() {
                    batch.bound_events();
                }
                if retry.is_none() && batch.ops >= max_ops {
                    let _ = commit_all(&mut batch, &mut retry).await;
                    deadline = None;
                } else if deadline.is_none() {
                    deadline = Some(Instant::now() + opts.max_delay);
                }
            }
            Some(Some(Msg::Flush(reply))) => {
                let result = commit_all(&mut batch, &mut retry).await;
                deadline = None;
                let _ = reply.send(result);
            }
        }
    }
    debug!("Store writer stopped.");
}

/// The next attempt at a batch the store refused: the wait doubles from [`Retry::FIRST`] up
/// to [`Retry::MAX`], so an unreachable database is tried a few times a minute, not per op.
struct Retry {
    at: Instant,
    wait: Duration,
}

impl Retry {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);

    fn after(previous: Option<Retry>) -> Retry {
        let wait = previous.map_or(Retry::FIRST, |p| (p.wait * 2).min(Retry::MAX));
        Retry {
            at: Instant::now() + wait,
            wait,
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What became of a batch handed to [`commit`].
enum Outcome {
    /// In the store (or there was nothing to write).
    Committed,
    /// Refused for a passing reason ([`StoreError::is_transient`]): put back, to be retried.
    Held(String),
    /// Refused for what it holds: gone, as holding it would hold every later write behind it.
    Dropped(String),
}

/// Apply the pending batch; retry once at once (a busy database, a transient I/O error). A
/// batch that still fails for a passing reason is put back in `batch` (the caller retries it
/// later) and the error logged: an unreachable database loses no agent record, revision or
/// rollout, only events past [`Batch::MAX_HELD_EVENTS`] (the oldest about agents first).
async fn commit<S: Store>(store: &S, batch: &mut Batch) -> Outcome {
    if batch.is_empty() {
        return Outcome::Committed;
    }
    let pending = std::mem::take(batch);
    let started = std::time::Instant::now();
    let mut result = store.apply(&pending).await;
    if let Err(e) = &result {
        warn!(error = %e, ops = pending.ops, "Store write failed; retrying once.");
        tokio::time::sleep(Duration::from_millis(100)).await;
        result = store.apply(&pending).await;
    }
    match result {
        Ok(()) => {
            debug!(
                ops = pending.ops,
                agents = pending.agents.len(),
                events = pending.events.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "Store batch committed."
            );
            Outcome::Committed
        }
        Err(e) if !e.is_transient() => {
            error!(
                error = %e,
                agents = pending.agents.len(),
                events = pending.events.len(),
                "Store write refused; the batch is dropped."
            );
            Outcome::Dropped(e.to_string())
        }
        Err(e) => {
            error!(
                error = %e,
                agents = pending.agents.len(),
                events = pending.events.len(),
                "Store write failed; the batch is held and retried."
            );
            *batch = pending;
            Outcome::Held(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(uid: &str, seen: i64) -> AgentRecord {
        AgentRecord {
            instance_uid: uid.into(),
            last_seen: seen,
            ..Default::default()
        }
    }

    #[test]
    fn an_outage_drops_the_oldest_events_about_agents_first() {
        let event = |n: i64, agent: bool| EventRecord {
            time: n,
            agent_uid: agent.then(|| format!("{n:032x}")),
            kind: if agent { "pushed" } else { "rollout-halted" }.into(),
            message: String::new(),
        };
        let fleet = [0, 5, 7_000];
        let mut b = Batch::from_ops(
            (0..12_000).map(|n| StoreOp::AppendEvent(event(n, !fleet.contains(&n)))),
        );
        b.bound_events();
        assert_eq!(b.events.len(), Batch::MAX_HELD_EVENTS);
        let kept_fleet: Vec<i64> = b
            .events
            .iter()
            .filter(|e| e.agent_uid.is_none())
            .map(|e| e.time)
            .collect();
        assert_eq!(kept_fleet, fleet, "every event about the fleet is kept");
        assert_eq!(b.events.last().map(|e| e.time), Some(11_999));
        assert_eq!(
            b.events[2].time, 2_002,
            "the oldest 2,000 about agents went"
        );

        // Only events about the fleet: the oldest of those go.
        let mut b = Batch::from_ops((0..12_000).map(|n| StoreOp::AppendEvent(event(n, false))));
        b.bound_events();
        assert_eq!(b.events.len(), Batch::MAX_HELD_EVENTS);
        assert_eq!(b.events[0].time, 2_000);
    }

    #[test]
    fn batch_coalesces() {
        let rollout = |c: &str, h: &str, n: i64| RolloutRecord {
            configuration: c.into(),
            target_hash: h.into(),
            progress: serde_json::json!({ "batch": n }).to_string(),
            // The first save carries the member list, the later ones do not (unchanged).
            members: (n == 1).then(|| format!("[\"{c}\"]")),
            updated_at: n,
        };
        let b = Batch::from_ops([
            StoreOp::UpsertAgent(agent("a", 1)),
            StoreOp::UpsertAgent(agent("b", 1)),
            StoreOp::UpsertAgent(agent("a", 2)),
            StoreOp::DeleteAgent("b".into()),
            StoreOp::SaveRollout(rollout("web", "h1", 1)),
            StoreOp::SaveRollout(rollout("web", "h1", 2)),
            StoreOp::SaveRollout(rollout("db", "h9", 1)),
            StoreOp::DeleteRollout {
                configuration: "db".into(),
                target_hash: None,
            },
        ]);
        assert_eq!(b.ops, 8);
        assert_eq!(b.agents.len(), 2);
        assert_eq!(b.agents["a"].as_ref().map(|a| a.last_seen), Some(2));
        // A later upsert that keeps the description or the offer does not lose a pending one.
        let described = AgentRecord {
            description: Some(serde_json::json!({"identifying": {"service.name": "x"}})),
            settings_offer: Some("offer".into()),
            ..agent("c", 1)
        };
        let b2 = Batch::from_ops([
            StoreOp::UpsertAgent(described.clone()),
            StoreOp::UpsertAgent(agent("c", 2)),
        ]);
        let c = b2.agents["c"].as_ref().expect("kept");
        assert_eq!((c.last_seen, &c.description), (2, &described.description));
        assert_eq!(c.settings_offer, described.settings_offer);
        assert_eq!(b.agents["b"], None);
        assert_eq!(b.rollouts.len(), 1);
        assert_eq!(b.rollouts[&("web".into(), "h1".into())].updated_at, 2);
        assert_eq!(
            b.rollouts[&("web".into(), "h1".into())].members.as_deref(),
            Some("[\"web\"]"),
            "a coalesced save without members keeps the earlier save's"
        );
        assert_eq!(b.rollout_deletes, vec![("db".to_string(), None)]);
    }

    #[test]
    fn millis() {
        assert_eq!(to_ms(UNIX_EPOCH + Duration::from_millis(1234)), 1234);
        for ms in [-1234, 0, 1234] {
            assert_eq!(to_ms(from_ms(ms)), ms);
        }
        assert!(now_ms() > 1_700_000_000_000);
    }
}

//! Several `gitamp serve` replicas on one PostgreSQL database (README, "Operating several
//! servers").
//!
//! ```text
//!  leader:   Git poller ──► judge ──(commit revision + NOTIFY)──► PostgreSQL ──► reconciler
//!  follower:                         PostgreSQL ──LISTEN──► follow ──fetch that commit──► reconciler
//! ```
//!
//! - **Leadership** is a PostgreSQL advisory lock held by one dedicated connection: whoever holds
//!   it polls Git and judges new revisions. A leader killed or cut off loses its session, hence
//!   the lock, and another replica's next try (every [`ClusterOptions::lock_retry`]) takes it.
//!   A leader whose lock connection stops answering steps down at once.
//! - **Revisions**: the judge compiles a snapshot; an accepted one is committed to the database
//!   (which announces it with `NOTIFY` in the same transaction) before this replica serves it,
//!   so no replica pushes a revision the database does not back. Every other replica reads the
//!   accepted revision, fetches that commit from Git and compiles it itself (the core is
//!   deterministic, so the hashes match). A rejected revision never reaches the database's
//!   current revision, so no follower serves it.
//! - **Notices are hints**: after a lost listener connection, and every
//!   [`ClusterOptions::recheck`] anyway, a follower re-reads the current revision.
//! - **Replicas** keep a row each (`replicas`), refreshed by a heartbeat with their role and
//!   agents held; the leader removes rows silent for [`ClusterOptions::dead_after`] and marks
//!   the agents those held as disconnected.
//! - The database remembers the repository, ref and path its fleet serves: a replica started
//!   with another one is refused.

mod rollouts;

pub use rollouts::{FleetRollouts, adopt_rollouts, lead_rollouts, relay_resume};

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::postgres::{PgConnection, PgListener, PgPool};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::state::AppState;
use crate::source::{GitSource, SyncEvent, SyncInfo};
use crate::store::postgres::{REVISION_CHANNEL, replica_alive};
use crate::store::{Batch, PgStore, RevisionRecord, Store, StoreOp, now_ms};

/// What one heartbeat found of this replica's own row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Beat {
    /// There, refreshed.
    Listed,
    /// Gone: the leader retired this replica while it could not beat (listed again now).
    Retired,
}

/// One row of the replicas' listing, read each heartbeat.
#[derive(sqlx::FromRow)]
struct ListedReplica {
    id: String,
    opamp_address: String,
    api_address: String,
    leader: bool,
    agents: i64,
    heartbeat_at: i64,
    /// The fleet's agents as this replica counted them, if it led (see `Cluster::beat`).
    fleet_agents: Option<i64>,
    /// Its process has a database session now (`replica_alive!`).
    live: bool,
}

/// The advisory-lock key of leadership ("gitamp" in ASCII).
const LEADER_LOCK: i64 = 0x6769_7461_6d70;
/// The leader disconnects the agents of replicas no longer listed at least this often, even
/// when it retired none itself (one that shut down deleted its own row).
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// The channel a follower's webhook is relayed to the leader on.
const WAKE_CHANNEL: &str = "gitamp_wake";

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// How often a follower tries to take the lock (the failover delay's bound).
    pub lock_retry: Duration,
    /// How often each replica refreshes its row (and reads the others').
    pub heartbeat: Duration,
    /// A replica silent this long is gone: its row is removed, its agents disconnected.
    pub dead_after: Duration,
    /// A follower re-reads the current revision at least this often, notice or not.
    pub recheck: Duration,
    /// Longest wait for every live replica to be ready for a new revision; a replica that
    /// cannot fetch or compile it by then is left behind.
    pub barrier: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            lock_retry: Duration::from_secs(1),
            heartbeat: Duration::from_secs(2),
            dead_after: Duration::from_secs(10),
            recheck: Duration::from_secs(30),
            barrier: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "this database serves the fleet of {database}, and this replica was started with \
         {ours}: every replica on one database must serve the same repository, ref and path \
         (use another database for another fleet)"
    )]
    Mismatch { database: String, ours: String },
    #[error(
        "a PostgreSQL store runs replicas, which fetch the leader's revision by commit: --repo \
         must be a Git repository (a plain folder cannot be shared), or leave --store unset"
    )]
    NotGit,
    #[error("cluster query ({what}): {source}")]
    Query {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("{what}: {source}")]
    Store {
        what: &'static str,
        #[source]
        source: crate::store::StoreError,
    },
}

fn q(what: &'static str) -> impl FnOnce(sqlx::Error) -> ClusterError {
    move |source| ClusterError::Query { what, source }
}

/// Record `ours` as the fleet's source if the database has none yet; refuse another one.
pub async fn check_source(store: &PgStore, ours: &str) -> Result<(), ClusterError> {
    let pool = store.pool();
    sqlx::query("INSERT INTO cluster_source (id, source) VALUES (1, $1) ON CONFLICT DO NOTHING")
        .bind(ours)
        .execute(pool)
        .await
        .map_err(q("recording the fleet's source"))?;
    let database: String = sqlx::query_scalar("SELECT source FROM cluster_source WHERE id = 1")
        .fetch_one(pool)
        .await
        .map_err(q("reading the fleet's source"))?;
    if database != ours {
        return Err(ClusterError::Mismatch {
            database,
            ours: ours.to_string(),
        });
    }
    Ok(())
}

/// One replica as the status API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaView {
    pub id: String,
    pub opamp_address: String,
    pub api_address: String,
    /// `leader` or `follower`.
    pub role: String,
    /// Agents connected to it, as of its last heartbeat.
    pub agents: u64,
    /// RFC 3339.
    pub last_heartbeat: String,
    /// This replica (the one answering).
    #[serde(rename = "self")]
    pub this: bool,
}

/// What the heartbeat last read of the whole fleet, for the status API and `/metrics`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ClusterView {
    pub replica: String,
    pub leader: bool,
    pub replicas: Vec<ReplicaView>,
    /// Agents the database knows, and those connected to some live replica.
    pub fleet_agents: u64,
    pub fleet_connected: u64,
    /// Agents per sync status over the whole fleet (`api::fleet`), filled in by the status
    /// API; absent when the database could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_by_status: Option<std::collections::BTreeMap<String, usize>>,
}

/// This process's membership: its id, its database, its leadership.
pub struct Cluster {
    pub id: String,
    store: PgStore,
    opts: ClusterOptions,
    leader_tx: watch::Sender<bool>,
    /// Latest fleet-wide view (read by the API).
    pub view: arc_swap::ArcSwap<ClusterView>,
    /// This replica's own convergence figures of the revision it serves (its agents only):
    /// the leader takes its push → applied times into the fleet's figures.
    pub local_convergence: arc_swap::ArcSwapOption<crate::server::convergence::Convergence>,
    /// The last count of the agents' rows (`count_fleet`).
    counted: std::sync::Mutex<Option<FleetCount>>,
}

/// A count of the agents' rows, with what told whether it may have moved since.
#[derive(Debug, Clone, Copy)]
struct FleetCount {
    /// PostgreSQL's counters of rows inserted into and deleted from `agents` then.
    changes: i64,
    rows: i64,
    at: std::time::Instant,
}

/// The agents' rows are counted again at least this often even when PostgreSQL's counters
/// say no row came or went (they reach other sessions up to ~10 s late, and a statistics
/// reset moves them).
const RECOUNT_EVERY: Duration = Duration::from_secs(30);

/// A replica id readable in a listing: host, OpAMP port, process id.
pub fn replica_id(opamp_port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gitamp".into());
    // Also the sessions' application_name (see `with_application_name`): safe characters,
    // within PostgreSQL's 63 bytes.
    format!("{host}:{opamp_port}:{}", std::process::id())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-.:_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect()
}

/// `url` with `application_name` set to the replica id (left as it is when the URL sets one,
/// or is not a PostgreSQL URL).
pub fn with_application_name(url: &str, id: &str) -> String {
    if !crate::store::is_postgres_url(url) || url.contains("application_name=") {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={id}")
}

impl Cluster {
    /// Register this replica (its row) and start as a follower.
    pub async fn join(
        store: PgStore,
        id: String,
        opamp_address: &str,
        api_address: &str,
        opts: ClusterOptions,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO replicas (id, opamp_address, api_address, leader, agents, started_at, \
             heartbeat_at) VALUES ($1, $2, $3, FALSE, 0, $4, $4) ON CONFLICT (id) DO UPDATE SET \
             opamp_address = excluded.opamp_address, api_address = excluded.api_address, \
             started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at",
        )
        .bind(&id)
        .bind(opamp_address)
        .bind(api_address)
        .bind(now)
        .execute(store.pool())
        .await
        .map_err(q("registering the replica"))?;
        info!(replica = %id, "Joined the replicas on PostgreSQL.");
        telemetry_leader(false);
        let (leader_tx, _) = watch::channel(false);
        let view = arc_swap::ArcSwap::from_pointee(ClusterView {
            replica: id.clone(),
            ..ClusterView::default()
        });
        Ok(Arc::new(Cluster {
            id,
            store,
            opts,
            leader_tx,
            view,
            local_convergence: arc_swap::ArcSwapOption::empty(),
            counted: std::sync::Mutex::new(None),
        }))
    }

    /// The fleet as last read, with this replica's role as of now (a heartbeat that cannot
    /// reach the database leaves the rest as it was).
    pub fn status(&self) -> ClusterView {
        let mut view = (**self.view.load()).clone();
        view.leader = self.is_leader();
        view
    }

    pub fn is_leader(&self) -> bool {
        *self.leader_tx.borrow()
    }

    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leader_tx.subscribe()
    }

    fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    /// The shared store (the status API reads the other replicas' agents from it, the
    /// reconciler an agent's row: `reconciler::evidence`).
    pub fn store(&self) -> &PgStore {
        &self.store
    }

    /// Contend for leadership until `cancel`: take the lock when free, hold it on a dedicated
    /// connection, and step down the moment that connection stops answering.
    pub async fn lead(self: Arc<Self>, wake: Arc<Notify>, cancel: CancellationToken) {
        let options = self.store.connect_options().clone();
        loop {
            // Not leader: try for the lock.
            let mut conn = match PgConnection::connect_with(&options).await {
                Ok(c) => c,
                Err(err) => {
                    debug!(error = %err, "Leader lock: cannot connect; retrying.");
                    if sleep_or_cancel(self.opts.lock_retry, &cancel).await {
                        return;
                    }
                    continue;
                }
            };
            let mut lost = false;
            loop {
                let got: Result<bool, _> = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(LEADER_LOCK)
                    .fetch_one(&mut conn)
                    .await;
                match got {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(err) => {
                        debug!(error = %err, "Leader lock: connection lost; reconnecting.");
                        lost = true;
                        break;
                    }
                }
                if sleep_or_cancel(self.opts.lock_retry, &cancel).await {
                    return;
                }
            }
            if lost {
                continue;
            }
            // Leader: hold the lock while the connection answers; relay webhooks meanwhile.
            let started = std::time::Instant::now();
            info!(replica = %self.id, "This replica leads: it polls Git and steps rollouts.");
            telemetry_leader(true);
            self.leader_tx.send_replace(true);
            let _ = sqlx::query("UPDATE replicas SET leader = (id = $1)")
                .bind(&self.id)
                .execute(self.pool())
                .await;
            wake.notify_one();
            let mut wakes = PgListener::connect_with(self.pool()).await.ok();
            if let Some(l) = wakes.as_mut()
                && l.listen(WAKE_CHANNEL).await.is_err()
            {
                wakes = None;
            }
            // One check per tick, whatever else wakes the loop.
            let mut tick = tokio::time::interval(self.opts.lock_retry);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let alive = tokio::select! {
                    _ = cancel.cancelled() => {
                        let _ = conn.close().await;
                        self.leader_tx.send_replace(false);
                        return;
                    }
                    _ = tick.tick() => {
                        tokio::time::timeout(
                            self.opts.lock_retry * 3,
                            sqlx::query("SELECT 1").execute(&mut conn),
                        )
                        .await
                        .is_ok_and(|r| r.is_ok())
                    }
                    n = recv_wake(&mut wakes) => {
                        match n {
                            Some(true) => wake.notify_one(),
                            Some(false) => {}
                            // The listener's connection failed: no relayed webhooks until the
                            // next term (the poll interval still applies).
                            None => wakes = None,
                        }
                        true
                    }
                };
                if !alive {
                    break;
                }
            }
            warn!(replica = %self.id, held_s = started.elapsed().as_secs(), "Lost the leader lock's connection; stepping down.");
            telemetry_leader(false);
            self.leader_tx.send_replace(false);
        }
    }

    /// Refresh this replica's row and read the fleet's, every heartbeat; the leader also
    /// retires silent replicas and disconnects their agents.
    ///
    /// A leader retires others only after its own beats have landed for
    /// [`ClusterOptions::dead_after`]: after a database outage every replica's row is stale,
    /// and none of them is gone. A replica that finds itself retired anyway (cut off longer
    /// than that while its agents stayed) writes its agents' records again.
    pub async fn heartbeat(self: Arc<Self>, state: Arc<AppState>, cancel: CancellationToken) {
        let mut beating_since: Option<std::time::Instant> = None;
        let mut swept_at: Option<std::time::Instant> = None;
        let mut rewrite_owed = false;
        loop {
            let leader = self.is_leader();
            if !leader {
                // A new term sweeps at its first chance: the last leader may have died
                // between retiring a replica and disconnecting its agents.
                swept_at = None;
            }
            let agents = state.view.load().connected as i64;
            let may_retire = beating_since.is_some_and(|t| t.elapsed() >= self.opts.dead_after);
            let sweep_due = swept_at.is_none_or(|t| t.elapsed() >= SWEEP_EVERY);
            match self.beat(leader, agents, may_retire, sweep_due).await {
                Ok((found, swept)) => {
                    if swept {
                        swept_at = Some(std::time::Instant::now());
                    }
                    beating_since.get_or_insert_with(std::time::Instant::now);
                    if found == Beat::Retired {
                        warn!(
                            "This replica was retired while cut off from the database; \
                             writing its agents' records again."
                        );
                        rewrite_owed = true;
                    }
                }
                Err(err) => {
                    beating_since = None;
                    warn!(error = %err, "Replica heartbeat failed; serving on from memory.");
                }
            }
            if rewrite_owed && let Some(reconciler) = &state.reconciler {
                rewrite_owed = reconciler
                    .try_send(crate::server::reconciler::Command::RewriteAgents)
                    .is_err();
            }
            if sleep_or_cancel(self.opts.heartbeat, &cancel).await {
                let _ = sqlx::query("DELETE FROM replicas WHERE id = $1")
                    .bind(&self.id)
                    .execute(self.pool())
                    .await;
                return;
            }
        }
    }

    /// One heartbeat: refresh this replica's row, read the listing and the fleet's counts.
    /// Only the leader counts the agents' rows (and publishes the count in its row), and it
    /// disconnects retired replicas' agents only when it retired one or [`SWEEP_EVERY`] passed
    /// (`sweep_due`): both scan the whole `agents` table, which every replica doing every beat
    /// made O(fleet) work per replica per beat. Returns whether it swept.
    async fn beat(
        &self,
        leader: bool,
        agents: i64,
        may_retire: bool,
        sweep_due: bool,
    ) -> Result<(Beat, bool), ClusterError> {
        let now = now_ms();
        let counted = if leader {
            Some(self.count_fleet().await?)
        } else {
            None
        };
        let updated = sqlx::query(
            "UPDATE replicas SET heartbeat_at = $2, leader = $3, agents = $4, fleet_agents = $5 \
             WHERE id = $1",
        )
        .bind(&self.id)
        .bind(now)
        .bind(leader)
        .bind(agents)
        .bind(counted)
        .execute(self.pool())
        .await
        .map_err(q("heartbeat"))?;
        let found = if updated.rows_affected() == 0 {
            Beat::Retired
        } else {
            Beat::Listed
        };
        if found == Beat::Retired {
            // Retired while cut off: back in the listing.
            sqlx::query(
                "INSERT INTO replicas (id, opamp_address, api_address, leader, agents, \
                 started_at, heartbeat_at, fleet_agents) VALUES ($1, '', '', $3, $4, $2, $2, $5) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&self.id)
            .bind(now)
            .bind(leader)
            .bind(agents)
            .bind(counted)
            .execute(self.pool())
            .await
            .map_err(q("heartbeat"))?;
        }
        let mut swept = false;
        if leader && may_retire {
            let cutoff = now - self.opts.dead_after.as_millis() as i64;
            let gone = sqlx::query("DELETE FROM replicas WHERE heartbeat_at < $1")
                .bind(cutoff)
                .execute(self.pool())
                .await
                .map_err(q("retiring silent replicas"))?;
            if gone.rows_affected() > 0 {
                info!(replicas = gone.rows_affected(), "Retired silent replicas.");
            }
            if gone.rows_affected() > 0 || sweep_due {
                sqlx::query(
                    "UPDATE agents SET connected = FALSE, replica = NULL, \
                     written_by = pg_current_xact_id() WHERE replica IS NOT NULL \
                     AND replica NOT IN (SELECT id FROM replicas)",
                )
                .execute(self.pool())
                .await
                .map_err(q("disconnecting the agents of retired replicas"))?;
                swept = true;
            }
        }
        let rows: Vec<ListedReplica> = sqlx::query_as(concat!(
            "SELECT id, opamp_address, api_address, leader, agents, heartbeat_at, fleet_agents, ",
            replica_alive!(),
            " AS live FROM replicas r ORDER BY id"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(q("reading the replicas"))?;
        // A killed replica's agents are counted once, where they reconnected.
        let connected: i64 = rows
            .iter()
            .filter(|r| r.live)
            .map(|r| r.agents.max(0))
            .sum();
        // The newest count: a killed leader's row still says `leader` until it is retired.
        let published = rows
            .iter()
            .filter(|r| r.leader && r.fleet_agents.is_some())
            .max_by_key(|r| r.heartbeat_at)
            .and_then(|r| r.fleet_agents);
        let total = match (counted, published) {
            (Some(n), _) | (None, Some(n)) => n,
            // No leader has published a count yet (a new cluster, a failover): count.
            (None, None) => self.count_fleet().await?,
        };
        let rows_len = rows.len();
        let replicas = rows
            .into_iter()
            .map(|r| ReplicaView {
                this: r.id == self.id,
                id: r.id,
                opamp_address: r.opamp_address,
                api_address: r.api_address,
                role: if r.leader { "leader" } else { "follower" }.into(),
                agents: r.agents.max(0) as u64,
                last_heartbeat: crate::api::rfc3339(crate::store::from_ms(r.heartbeat_at)),
            })
            .collect();
        crate::telemetry::cluster_fleet(rows_len, total, connected);
        self.view.store(Arc::new(ClusterView {
            replica: self.id.clone(),
            leader,
            replicas,
            fleet_agents: total.max(0) as u64,
            fleet_connected: connected.max(0) as u64,
            fleet_by_status: None,
        }));
        Ok((found, swept))
    }

    /// The agents' rows, counted only when rows came or went since the last count (by
    /// PostgreSQL's per-table counters, which a status update does not move), or
    /// [`RECOUNT_EVERY`] passed. A count is an index-only scan only while vacuum has the pages
    /// marked all-visible: under a rollout's updates it reads the table, over a second at
    /// 200,000 agents, and the leader counted on every beat.
    async fn count_fleet(&self) -> Result<i64, ClusterError> {
        let (changes,): (i64,) = sqlx::query_as(
            "SELECT (pg_stat_get_tuples_inserted('agents'::regclass) \
             + pg_stat_get_tuples_deleted('agents'::regclass))::bigint",
        )
        .fetch_one(self.pool())
        .await
        .map_err(q("reading the agents' row counters"))?;
        let last = *self.counted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = last.filter(|c| c.changes == changes && c.at.elapsed() < RECOUNT_EVERY) {
            return Ok(c.rows);
        }
        let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM agents")
            .fetch_one(self.pool())
            .await
            .map_err(q("counting the fleet"))?;
        // The counters were read first: a row they do not show yet is counted already, and
        // moves them for the next beat.
        *self.counted.lock().unwrap_or_else(|p| p.into_inner()) = Some(FleetCount {
            changes,
            rows,
            at: std::time::Instant::now(),
        });
        Ok(rows)
    }

    /// Say this replica is ready to serve `revision` (fetched and compiled), then wait until
    /// every live replica is, or [`ClusterOptions::barrier`] passed. All replicas then switch
    /// within a few tens of milliseconds of each other: an agent whose polls alternate replicas
    /// is not sent the new config by one and the old one back by another that had not
    /// switched yet. Without the database, this replica waits for nothing (it serves nothing
    /// new then anyway: no notice reaches it).
    pub async fn ready_for(&self, revision: &str) {
        if let Err(err) = sqlx::query("UPDATE replicas SET ready = $2 WHERE id = $1")
            .bind(&self.id)
            .bind(revision)
            .execute(self.pool())
            .await
        {
            warn!(error = %err, "Marking this replica ready failed.");
            return;
        }
        let started = std::time::Instant::now();
        loop {
            let cutoff = now_ms() - self.opts.dead_after.as_millis() as i64;
            let behind: Result<i64, _> = sqlx::query_scalar(concat!(
                "SELECT count(*) FROM replicas r WHERE r.heartbeat_at >= $1 \
                 AND r.ready IS DISTINCT FROM $2 AND ",
                replica_alive!()
            ))
            .bind(cutoff)
            .bind(revision)
            .fetch_one(self.pool())
            .await;
            match behind {
                Ok(0) => {
                    debug!(
                        revision,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "Every replica is ready."
                    );
                    return;
                }
                Ok(n) if started.elapsed() >= self.opts.barrier => {
                    warn!(
                        revision,
                        replicas_behind = n,
                        "Not every replica is ready for the revision; serving it anyway."
                    );
                    return;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(err) => {
                    warn!(error = %err, "Waiting for the other replicas failed; serving now.");
                    return;
                }
            }
        }
    }

    /// Ask the leader to poll now (a webhook reached a follower).
    pub async fn relay_wake(&self) {
        if let Err(err) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(WAKE_CHANNEL)
            .execute(self.pool())
            .await
        {
            warn!(error = %err, "Relaying the webhook to the leader failed.");
        }
    }
}

fn telemetry_leader(leader: bool) {
    crate::telemetry::cluster_leader(leader);
}

/// One wake notice (`Some(true)`), a reconnected listener (`Some(false)`), a failed one
/// (`None`); never when there is no listener.
async fn recv_wake(listener: &mut Option<PgListener>) -> Option<bool> {
    match listener {
        Some(l) => match l.try_recv().await {
            Ok(Some(_)) => Some(true),
            Ok(None) => Some(false),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// A LISTEN on one channel that reconnects by itself. Notices are hints: the caller re-reads
/// what they announce after every [`Notices::wait`], whether a notice came, the connection was
/// lost (notices may have been missed) or the recheck passed.
struct Notices {
    pool: PgPool,
    channel: &'static str,
    what: &'static str,
    listener: Option<PgListener>,
}

impl Notices {
    fn new(pool: &PgPool, channel: &'static str, what: &'static str) -> Notices {
        Notices {
            pool: pool.clone(),
            channel,
            what,
            listener: None,
        }
    }

    /// Listen, if not listening yet: before the caller reads, so a notice sent after its read
    /// is not missed.
    async fn ensure(&mut self) {
        if self.listener.is_some() {
            return;
        }
        match PgListener::connect_with(&self.pool).await {
            Ok(mut l) => {
                if l.listen(self.channel).await.is_ok() {
                    self.listener = Some(l);
                }
            }
            Err(err) => debug!(error = %err, listener = self.what, "Listener: cannot connect."),
        }
    }

    /// The next notice's payload, or `None` after `recheck` or a lost connection (after `retry`
    /// when there is no connection to wait on).
    async fn wait(&mut self, recheck: Duration, retry: Duration) -> Option<String> {
        self.ensure().await;
        let Some(l) = self.listener.as_mut() else {
            tokio::time::sleep(retry).await;
            return None;
        };
        match tokio::time::timeout(recheck, l.try_recv()).await {
            Ok(Ok(Some(n))) => Some(n.payload().to_string()),
            Ok(Ok(None)) | Err(_) => None,
            Ok(Err(err)) => {
                debug!(error = %err, listener = self.what, "Listener failed; reconnecting.");
                self.listener = None;
                None
            }
        }
    }
}

/// True when cancelled.
async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = cancel.cancelled() => true,
    }
}

/// The leader's gate between the Git poller and the reconciler: a snapshot that compiles is
/// committed to the database as the current revision (announced to the followers) before the
/// reconciler sees it; one that does not, and every other event, goes through unchanged (the
/// reconciler records rejections). If the database cannot take the accepted revision, this
/// replica does not serve it: the next poll tries again.
pub async fn judge(
    cluster: Arc<Cluster>,
    mut from_poller: mpsc::Receiver<SyncEvent>,
    to_reconciler: mpsc::Sender<SyncEvent>,
    otelcol: Option<Arc<crate::otelcol::Otelcol>>,
) {
    while let Some(event) = from_poller.recv().await {
        if let SyncEvent::Snapshot(snapshot, info) = &event {
            let unverified =
                crate::source::signature::signature_diagnostics(info.signature.as_ref());
            if !unverified.has_errors() {
                let skipped = crate::source::skipped::skipped_diagnostics(&info.skipped);
                let snap = snapshot.clone();
                let otelcol = otelcol.clone();
                let compiled = tokio::task::spawn_blocking(move || {
                    crate::otelcol::compile_checked(&snap, skipped, otelcol.as_deref())
                })
                .await;
                if let Ok(Ok(revision)) = compiled {
                    let store = &cluster.store;
                    // The same revision again (a new leader's first poll): already committed.
                    let known = store.last_accepted_revision().await.ok().flatten();
                    if known.as_deref() == Some(revision.revision.as_str()) {
                        if to_reconciler.send(event).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let view = super::state::RevisionView::seen(
                        &revision.revision,
                        true,
                        &revision.warnings,
                    );
                    let record = RevisionRecord {
                        revision: view.revision.clone(),
                        time: crate::store::to_ms(view.at),
                        accepted: true,
                        diagnostics: serde_json::to_value(&view.diagnostics).unwrap_or_default(),
                        source_error: None,
                    };
                    let batch = Batch::from_ops([StoreOp::RecordRevision(record)]);
                    if let Err(err) = store.apply(&batch).await {
                        warn!(revision = %revision.revision, error = %err, "The database did not take the accepted revision; not serving it yet.");
                        continue;
                    }
                    info!(revision = %revision.revision, "Accepted revision committed for every replica.");
                    cluster.ready_for(&revision.revision).await;
                }
            }
        }
        if to_reconciler.send(event).await.is_err() {
            return;
        }
    }
}

/// A follower's source: on every notice (and every recheck, and after a lost listener), read
/// the revision the leader accepted and, if this replica serves another one, fetch that
/// commit and hand it to the reconciler. While this replica leads, the judge delivers instead
/// (except for a start with nothing served yet).
pub async fn follow(
    cluster: Arc<Cluster>,
    git: GitSource,
    state: Arc<AppState>,
    to_reconciler: mpsc::Sender<SyncEvent>,
    cancel: CancellationToken,
) {
    let mut notices = Notices::new(cluster.pool(), REVISION_CHANNEL, "revisions");
    loop {
        notices.ensure().await;
        let served = state
            .serving
            .load_full()
            .map(|s| s.revision.revision.clone());
        if !cluster.is_leader() || served.is_none() {
            match cluster.store.last_accepted_revision().await {
                Ok(Some(current)) if served.as_deref() != Some(current.as_str()) => {
                    match fetch(&git, &current).await {
                        Some(snapshot) => {
                            // Compiled here first, so that "ready" means ready (the core is
                            // deterministic: the reconciler's compile gives the same).
                            let snap = snapshot.snapshot.clone();
                            let _ =
                                tokio::task::spawn_blocking(move || gitamp_core::compile(&snap))
                                    .await;
                            cluster.ready_for(&current).await;
                            info!(revision = %current, "Serving the revision the leader accepted.");
                            let info = SyncInfo {
                                skipped: snapshot.skipped,
                                signature: snapshot.signature,
                                ..SyncInfo::default()
                            };
                            let event = SyncEvent::Snapshot(snapshot.snapshot, info);
                            tokio::select! {
                                r = to_reconciler.send(event) => if r.is_err() { return },
                                _ = cancel.cancelled() => return,
                            }
                        }
                        None => {
                            warn!(revision = %current, "The leader's revision is not in Git here yet; retrying.");
                            if sleep_or_cancel(cluster.opts.lock_retry, &cancel).await {
                                return;
                            }
                            continue;
                        }
                    }
                }
                Ok(Some(current)) => {
                    // Serving it already (from the cache at start): say so, or others wait.
                    let _ = sqlx::query(
                        "UPDATE replicas SET ready = $2 WHERE id = $1 AND ready IS DISTINCT FROM $2",
                    )
                    .bind(&cluster.id)
                    .bind(&current)
                    .execute(cluster.pool())
                    .await;
                }
                Ok(None) => {}
                Err(err) => warn!(error = %err, "Reading the leader's revision failed."),
            }
        }
        // Wait for a notice, the recheck, or the end.
        tokio::select! {
            _ = cancel.cancelled() => return,
            got = notices.wait(cluster.opts.recheck, cluster.opts.lock_retry) => {
                if let Some(revision) = got {
                    debug!(%revision, "Revision notice.");
                }
            }
        }
    }
}

/// The snapshot of `sha`: from the cache, else after fetching the tip (the leader's revision
/// is usually it), else fetched by id.
async fn fetch(git: &GitSource, sha: &str) -> Option<crate::source::SourceSnapshot> {
    let git = git.clone();
    let sha = sha.to_string();
    let found = tokio::task::spawn_blocking(move || {
        if let Ok(Some(s)) = git.read_commit(&sha) {
            return Some(s);
        }
        let _ = git.sync_blocking(None);
        if let Ok(Some(s)) = git.read_commit(&sha) {
            return Some(s);
        }
        git.fetch_commit(&sha).ok().flatten()
    })
    .await;
    found.ok().flatten()
}

/// Run `work` for each term this replica leads: started when it takes the lead, cancelled
/// (through the token it is given) and awaited when it loses it; returns once `cancel` fires.
pub async fn each_term<F, Fut>(cluster: Arc<Cluster>, cancel: CancellationToken, mut work: F)
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut leadership = cluster.leadership();
    loop {
        while !*leadership.borrow_and_update() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = leadership.changed() => if r.is_err() { return },
            }
        }
        let term = cancel.child_token();
        let task = tokio::spawn(work(term.clone()));
        while *leadership.borrow_and_update() {
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = leadership.changed() => if r.is_err() { break },
            }
        }
        term.cancel();
        let _ = task.await;
        if cancel.is_cancelled() {
            return;
        }
    }
}

/// Run a Git poller (feeding the judge) while this replica leads, and none otherwise.
pub async fn poll_while_leading(
    cluster: Arc<Cluster>,
    git: GitSource,
    wake: Arc<Notify>,
    to_judge: mpsc::Sender<SyncEvent>,
    cancel: CancellationToken,
) {
    each_term(cluster, cancel, |term| {
        let poller = crate::source::GitPoller::new(git.clone()).with_wake(wake.clone());
        let to_judge = to_judge.clone();
        async move {
            poller.run(to_judge, term.clone()).await;
            if term.is_cancelled() {
                info!("No longer leading: the Git poller stopped.");
            }
        }
    })
    .await;
}

/// A follower that received a webhook asks the leader to poll.
pub async fn relay_webhooks(cluster: Arc<Cluster>, wake: Arc<Notify>, cancel: CancellationToken) {
    let mut leadership = cluster.leadership();
    loop {
        if *leadership.borrow_and_update() {
            // The poller itself waits on `wake` while this replica leads.
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = leadership.changed() => if r.is_err() { return },
            }
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = leadership.changed() => if r.is_err() { return },
            _ = wake.notified() => {
                if cluster.is_leader() {
                    wake.notify_one();
                } else {
                    cluster.relay_wake().await;
                }
            }
        }
    }
}

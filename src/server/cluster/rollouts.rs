//! Fleet-wide rollouts: a batch is admitted across every replica, not per replica.
//!
//! ```text
//!  leader:        agents table ──changed rows (NOTIFY gitamp_agents)──► FleetRollouts
//!                 (a RolloutBook over every agent's progress) ──► rollouts table
//!                 ──NOTIFY gitamp_rollouts──►
//!  every replica: read the rollouts ──Command::AdoptRollouts──► its reconciler's planner
//! ```
//!
//! - The **leader** keeps one [`RolloutBook`] over the whole fleet: each agent's progress
//!   towards its configuration's target, derived from the shared `agents` table with the same
//!   pure rules as a single server (`select`, `sync_status`). It reads only the rows written
//!   since its last read (`PgStore::changed_agents`), steps the rollouts whose scope changed,
//!   and writes the rollouts that moved (the halt and completion events with them).
//! - **Every replica** (the leader too) adopts those rollouts: its planner admits by them and
//!   steps none of its own, so an agent on replica B waits for the batch that includes agents
//!   on replica A. Its own agents' progress reaches the leader through its write-behind store.
//! - Notices say whether admission moved (`admission`) or only the counts (`counts`): counts
//!   are written at most every [`COUNTS_EVERY`], so a rollout to 60,000 agents does not make
//!   every replica re-read its member list on every step.
//! - An operator's resume reaching any replica is relayed to the leader (`gitamp_resume`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitamp_core::plan::select::Selection;
use gitamp_core::plan::selector::Labels;
use gitamp_core::plan::status::SyncStatus;
use gitamp_core::plan::upgrade::{ARCH_LABEL, OS_LABEL, upgrade_progress, upgrade_status};
use gitamp_core::plan::{
    AgentProgress, Desired, MemberList, Members, ObservedAgent, ResumeError, Rollout, RolloutBook,
    RolloutPhase, RolloutProgress, Target, sync_status,
};
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Cluster, ClusterError, q, sleep_or_cancel};
use crate::server::convergence::Convergence;
use crate::server::events::Event;
use crate::server::reconciler::{
    Command, RolloutStamp, Written, rollout_writes, rollouts_from_records,
};
use crate::server::state::AppState;
use crate::store::fleet::FleetRow;
use crate::store::postgres::{AGENTS_CHANNEL, RESUME_CHANNEL, ROLLOUTS_CHANNEL};
use crate::store::{Batch, ConvergenceRecord, PgStore, Store, StoreOp};

/// `t` in ms since the Unix epoch.
fn to_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Rollouts whose counts alone moved are written at most this often.
const COUNTS_EVERY: Duration = Duration::from_secs(2);
/// A burst of notices is gathered at least this long before the leader reads and steps once
/// (and twice as long as the last read and step took, so the leader spends at most a third of
/// a core on it however large the fleet).
const GATHER: Duration = Duration::from_millis(100);
/// Without notices, the leader reads and every replica re-reads the rollouts this often.
const RECHECK: Duration = Duration::from_secs(5);
/// Rows folded at a time while a read streams in: what the leader holds of a read at once.
const READ_CHUNK: usize = 1_000;

/// Whom a rollout admits, in a few words: its target and phase and, for a batched rollout in
/// progress, its admitted prefix (as a hash). An all-at-once rollout admits by its phase alone.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Admission {
    target: gitamp_core::ConfigHash,
    phase: RolloutPhase,
    admitted: usize,
    prefix: u64,
}

impl Admission {
    fn of(r: &Rollout) -> Admission {
        use gitamp_core::catalog::model::RolloutStrategy;
        use std::hash::{Hash, Hasher};
        let batched =
            r.policy.strategy != RolloutStrategy::AllAtOnce && r.phase == RolloutPhase::Progressing;
        let (admitted, prefix) = if batched {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for uid in r.agents.iter().take(r.admitted) {
                uid.hash(&mut h);
            }
            (r.admitted, h.finish())
        } else {
            (0, 0)
        };
        Admission {
            target: r.target,
            phase: r.phase.clone(),
            admitted,
            prefix,
        }
    }
}

/// The leader's book over the whole fleet.
pub struct FleetRollouts {
    revision: String,
    desired: Arc<Desired>,
    book: RolloutBook,
    /// Each configuration's upgrade to its pinned agent version, over the whole fleet too.
    upgrades: RolloutBook,
    /// Every agent seen, by uid (rows carry labels only when they were written since the last
    /// read: what the leader needs of them is kept here).
    placed: HashMap<[u8; 16], Placed>,
    /// The configurations' names, shared by the agents `placed` holds.
    names: HashMap<String, Arc<str>>,
    /// The platforms (`os.type`, `host.arch`) agents run on, shared by the agents `placed`
    /// holds.
    platforms: HashMap<Labels, Arc<Labels>>,
    /// The upgrade rollouts as last written (all of them: a handful of configurations).
    /// (Stamps, so a step decides in O(1) per rollout, not by comparing member lists.)
    upgrades_written: BTreeMap<String, RolloutStamp>,
    /// What was last written of each rollout.
    persisted: BTreeMap<String, Written>,
    /// Whom each rollout admitted as last announced, to tell an admission change from a count
    /// change (not the rollouts themselves: each holds every member).
    announced: BTreeMap<String, Admission>,
    /// The same of each upgrade rollout.
    announced_upgrades: BTreeMap<String, Admission>,
    counts_written: Option<Instant>,
    /// The next step steps every rollout (a new revision, a fresh start).
    full: bool,
    /// When the served revision was accepted (ms since the Unix epoch).
    accepted_at: u64,
    /// The fleet's convergence figures as last written.
    convergence: Option<Convergence>,
    /// The replaced revision's final figures, to write.
    superseded: Option<Convergence>,
    /// A step has looked at every agent since the revision changed.
    planned: bool,
}

/// What the leader keeps of one agent between reads.
#[derive(Debug, Clone, Default)]
struct Placed {
    /// The configuration that selects it alone, if one does.
    configuration: Option<Arc<str>>,
    /// Its platform labels: what an upgrade offers it depends on them.
    platform: Option<Arc<Labels>>,
    /// Its configuration's config rollout counts it.
    in_rollout: bool,
    /// Its configuration's upgrade rollout counts it.
    in_upgrade: bool,
}

impl FleetRollouts {
    /// A book for `revision`, resuming `stored` and `stored_upgrades` (the config and upgrade
    /// rollouts the database holds).
    pub fn new(
        revision: String,
        desired: Arc<Desired>,
        accepted_at: u64,
        stored: BTreeMap<String, Rollout>,
        stored_upgrades: BTreeMap<String, Rollout>,
    ) -> Self {
        FleetRollouts {
            announced_upgrades: admissions(&stored_upgrades),
            upgrades_written: stamps_of(&stored_upgrades),
            upgrades: RolloutBook::new(stored_upgrades),
            platforms: HashMap::new(),
            accepted_at,
            convergence: None,
            superseded: None,
            planned: false,
            revision,
            desired,
            persisted: stored
                .iter()
                .map(|(k, r)| (k.clone(), Written::read_back(r)))
                .collect(),
            announced: stored
                .iter()
                .map(|(k, r)| (k.clone(), Admission::of(r)))
                .collect(),
            names: HashMap::new(),
            book: RolloutBook::new(stored),
            placed: HashMap::new(),
            counts_written: None,
            full: true,
        }
    }

    /// Serve another revision: every agent is placed again from a full read.
    pub fn set_desired(&mut self, revision: String, desired: Arc<Desired>, accepted_at: u64) {
        if let Some(mut old) = self.convergence.take() {
            old.superseded_by = Some(revision.clone());
            self.superseded = Some(old);
        }
        self.accepted_at = accepted_at;
        self.planned = false;
        self.revision = revision;
        self.desired = desired;
        self.book.clear_scopes();
        self.upgrades.clear_scopes();
        self.placed.clear();
        self.platforms.clear();
        self.full = true;
    }

    /// Fold agents' records in: each goes to its configuration's scopes (config and upgrade
    /// rollouts), or out of every scope.
    pub fn fold(&mut self, rows: &[FleetRow]) {
        for row in rows {
            let Some(key) = gitamp_opamp::wire::uid_from_hex(&row.instance_uid) else {
                continue;
            };
            // Rollouts name agents as the planner does (`uid_text`), the store in plain hex.
            let uid = gitamp_opamp::wire::uid_text(&key);
            let before = self.placed.get(&key).cloned();
            let (configuration, platform) = match (row.labels_fresh, &before) {
                (true, _) => {
                    let configuration = self.configuration_of(&row.labels);
                    // Kept only where an upgrade needs it (a revision that pins a version
                    // anew is read in full again).
                    let pins = configuration
                        .as_deref()
                        .and_then(|name| self.desired.configurations.get(name))
                        .is_some_and(|c| c.version.is_some());
                    let platform = pins.then(|| self.platform_of(&row.labels)).flatten();
                    (configuration, platform)
                }
                (false, Some(p)) => (p.configuration.clone(), p.platform.clone()),
                // Labels unknown (cannot happen after the first, full read): wait for them.
                (false, None) => continue,
            };
            let mut agent = row.observed();
            let name = configuration.as_deref();
            let now = name.and_then(|name| progress_of(&agent, &self.desired, name));
            let version = name
                .and_then(|name| self.desired.configurations.get(name))
                .and_then(|c| c.version.as_ref());
            let upgrade = version.and_then(|version| {
                // The offer depends on the platform labels alone.
                agent.labels = platform.as_deref().cloned().unwrap_or_default();
                upgrade_progress(&agent, version, upgrade_status(&agent, version))
            });
            if let Some(before) = &before
                && let Some(old) = &before.configuration
            {
                let moved = configuration.as_ref() != Some(old);
                if before.in_rollout && (moved || now.is_none()) {
                    self.book.remove(old, &uid);
                }
                if before.in_upgrade && (moved || upgrade.is_none()) {
                    self.upgrades.remove(old, &uid);
                }
            }
            if let Some(name) = name {
                if let Some(progress) = now {
                    self.book.set(name, &uid, progress);
                }
                if let Some(progress) = upgrade {
                    self.upgrades.set(name, &uid, progress);
                }
            }
            self.placed.insert(
                key,
                Placed {
                    configuration,
                    platform,
                    in_rollout: now.is_some(),
                    in_upgrade: upgrade.is_some(),
                },
            );
        }
    }

    /// The configuration that alone selects an agent labelled `labels`, its name shared.
    fn configuration_of(&mut self, labels: &Labels) -> Option<Arc<str>> {
        let Selection::One(name) = self.desired.select(labels) else {
            return None;
        };
        Some(match self.names.get(&name) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<str> = Arc::from(name.as_str());
                self.names.insert(name, shared.clone());
                shared
            }
        })
    }

    /// The platform labels of `labels` (what an upgrade's offer depends on), shared.
    fn platform_of(&mut self, labels: &Labels) -> Option<Arc<Labels>> {
        let platform: Labels = [OS_LABEL, ARCH_LABEL]
            .into_iter()
            .filter_map(|k| labels.get(k).map(|v| (k.to_string(), v.clone())))
            .collect();
        if platform.is_empty() {
            return None;
        }
        Some(
            self.platforms
                .entry(platform)
                .or_insert_with_key(|p| Arc::new(p.clone()))
                .clone(),
        )
    }

    /// An operator's resume (relayed from any replica).
    pub fn resume(&mut self, configuration: &str) -> Result<RolloutProgress, ResumeError> {
        self.book.resume(configuration)
    }

    /// Step what changed; returns the events of superseded rollouts.
    pub fn step(&mut self) -> Vec<Event> {
        let targets = self.desired.configurations.values().filter_map(|c| {
            c.hash.map(|hash| Target {
                name: c.name(),
                hash,
                policy: c.rollout(),
            })
        });
        let full = std::mem::take(&mut self.full);
        self.book.step(targets, full, true);
        let upgrade_targets = self.desired.configurations.values().filter_map(|c| {
            c.version.as_ref().map(|v| Target {
                name: c.name(),
                hash: v.target,
                policy: c.rollout(),
            })
        });
        // Superseded upgrades are replaced, not reported (as on a single server).
        self.upgrades.step(upgrade_targets, full, false);
        self.planned = true;
        self.book
            .take_superseded()
            .into_iter()
            .filter_map(|old| match old.phase {
                RolloutPhase::Superseded { by: Some(by) } => Some(Event::RolloutSuperseded {
                    configuration: old.configuration.clone(),
                    target: old.target,
                    by,
                }),
                _ => None,
            })
            .collect()
    }

    /// The served revision's convergence over the whole fleet: the counts from every agent's
    /// progress in the book, the push → applied times from `local` (the leader's own agents':
    /// each replica times only the pushes it made, and the leader's are a sample of the fleet).
    pub fn convergence(&self, local: Option<&Convergence>) -> Convergence {
        let mut c = Convergence {
            revision: self.revision.clone(),
            accepted_at: self.accepted_at,
            planned: self.planned,
            latency: local
                .filter(|l| l.revision == self.revision)
                .map(|l| l.latency.clone())
                .unwrap_or_default(),
            ..Convergence::default()
        };
        for config in self.desired.configurations.values() {
            let Some(scope) = self.book.scope(config.name()) else {
                continue;
            };
            for progress in scope.values() {
                c.targeted += 1;
                match progress.status {
                    SyncStatus::Synced => c.applied += 1,
                    SyncStatus::Failed => c.failed += 1,
                    SyncStatus::RolledBack => c.rolled_back += 1,
                    _ => c.waiting += 1,
                }
            }
        }
        c
    }

    /// The writes due now (see [`Writes`]). A move of admission or phase, and a change of the
    /// fleet's convergence verdict, is written at once; counts at most every [`COUNTS_EVERY`].
    pub fn writes(
        &mut self,
        local: Option<&Convergence>,
        mut emit: impl FnMut(Event),
    ) -> Option<Writes> {
        let rollouts = self.book.rollouts();
        let upgrades = self.upgrades.rollouts();
        let admission =
            moved(rollouts, &self.announced) || moved(upgrades, &self.announced_upgrades);
        let convergence = self.convergence(local);
        let verdict_moved = self.convergence.as_ref().is_none_or(|old| {
            old.converged() != convergence.converged()
                || old.planned != convergence.planned
                || (old.failed + old.rolled_back == 0)
                    != (convergence.failed + convergence.rolled_back == 0)
        });
        let counts_due = self
            .counts_written
            .is_none_or(|at| at.elapsed() >= COUNTS_EVERY);
        if !admission && !verdict_moved && !counts_due && self.superseded.is_none() {
            return None;
        }
        let (mut ops, _) = rollout_writes(rollouts, &mut self.persisted, &mut emit);
        if let Some(done) = self.superseded.take() {
            ops.push(convergence_op(&done));
        }
        if self.convergence.as_ref() != Some(&convergence) {
            ops.push(convergence_op(&convergence));
            self.convergence = Some(convergence);
        }
        let stamps = stamps_of(upgrades);
        let upgrades_moved = stamps != self.upgrades_written;
        if upgrades_moved {
            for (name, rollout) in upgrades {
                let RolloutPhase::Halted { reason } = &rollout.phase else {
                    continue;
                };
                let was_halted = self
                    .upgrades_written
                    .get(name)
                    .and_then(RolloutStamp::halted_on)
                    == Some(rollout.target);
                if !was_halted {
                    let version = self
                        .desired
                        .configurations
                        .get(name)
                        .and_then(|c| c.version.as_ref())
                        .map_or_else(String::new, |v| v.version.clone());
                    emit(Event::RolloutHalted {
                        configuration: name.clone(),
                        reason: format!("upgrade to agent version {version}: {reason}"),
                    });
                }
            }
            self.upgrades_written = stamps;
        }
        if ops.is_empty() && !upgrades_moved {
            return None;
        }
        self.counts_written = Some(Instant::now());
        self.announced = admissions(rollouts);
        self.announced_upgrades = admissions(upgrades);
        Some(Writes {
            batch: Batch::from_ops(ops),
            upgrades: upgrades_moved.then(|| upgrades.clone()),
            admission: admission || verdict_moved,
        })
    }
}

/// What the leader writes after a step.
pub struct Writes {
    /// The config rollouts and convergence figures that moved.
    pub batch: Batch,
    /// Every upgrade rollout, when one moved.
    pub upgrades: Option<BTreeMap<String, Rollout>>,
    /// Admission moved (else only counts).
    pub admission: bool,
}

/// Whether any rollout admits otherwise than `announced` says.
fn moved(rollouts: &BTreeMap<String, Rollout>, announced: &BTreeMap<String, Admission>) -> bool {
    rollouts.len() != announced.len()
        || rollouts
            .iter()
            .any(|(name, r)| announced.get(name) != Some(&Admission::of(r)))
}

fn stamps_of(rollouts: &BTreeMap<String, Rollout>) -> BTreeMap<String, RolloutStamp> {
    rollouts
        .iter()
        .map(|(k, r)| (k.clone(), RolloutStamp::of(r)))
        .collect()
}

fn admissions(rollouts: &BTreeMap<String, Rollout>) -> BTreeMap<String, Admission> {
    rollouts
        .iter()
        .map(|(k, r)| (k.clone(), Admission::of(r)))
        .collect()
}

/// The store's copy of a convergence record.
fn convergence_op(c: &Convergence) -> StoreOp {
    StoreOp::SaveConvergence(ConvergenceRecord {
        revision: c.revision.clone(),
        accepted_at: crate::store::stored_ms(c.accepted_at),
        record: serde_json::to_value(c).unwrap_or_default(),
    })
}

/// Where one agent that `configuration` alone selects stands in its rollout, or `None` when
/// no rollout counts it (incompatible), as the planner decides for the agents it holds. What
/// only the holding replica knows (that an agent drifted) is not in the row; it does not move
/// a rollout.
pub fn progress_of(
    agent: &ObservedAgent,
    desired: &Desired,
    configuration: &str,
) -> Option<AgentProgress> {
    let hash = desired.hash_of(configuration)?;
    let selection = Selection::One(configuration.to_string());
    let status = sync_status(agent, &selection, Some(hash));
    (status != SyncStatus::Incompatible).then(|| AgentProgress::of(agent, status, Some(hash)))
}

/// While this replica leads, step the fleet's rollouts (a failed term starts again after a
/// pause); otherwise wait to lead.
pub async fn lead_rollouts(cluster: Arc<Cluster>, state: Arc<AppState>, cancel: CancellationToken) {
    let retry = cluster.opts.lock_retry;
    super::each_term(cluster.clone(), cancel, |term| {
        let (cluster, state) = (cluster.clone(), state.clone());
        async move {
            loop {
                match leader_term(cluster.clone(), state.clone(), term.clone()).await {
                    Ok(()) => return,
                    Err(err) => {
                        warn!(error = %err, "Stepping the fleet's rollouts failed; retrying.")
                    }
                }
                if sleep_or_cancel(retry, &term).await {
                    return;
                }
            }
        }
    })
    .await;
}

/// One leadership term: resume the stored rollouts, then read, step and write until `term`.
async fn leader_term(
    cluster: Arc<Cluster>,
    state: Arc<AppState>,
    term: CancellationToken,
) -> Result<(), ClusterError> {
    let store = &cluster.store;
    let mut listener = PgListener::connect_with(store.pool())
        .await
        .map_err(q("listening for agent changes"))?;
    listener
        .listen_all([AGENTS_CHANNEL, RESUME_CHANNEL])
        .await
        .map_err(q("listening for agent changes"))?;
    let mut fleet: Option<FleetRollouts> = None;
    let mut watermark = "0".to_string();
    let mut live: Option<Vec<String>> = None;
    info!("Stepping rollouts over the whole fleet.");
    loop {
        // A replica gone (killed: its sessions ended) leaves its agents' rows as they were:
        // read every row again, so they count as disconnected at once, not once the heartbeat
        // retires the replica.
        if let Ok(now) = store.live_replicas().await {
            if live
                .as_ref()
                .is_some_and(|was| was.iter().any(|r| !now.contains(r)))
            {
                info!("A replica is gone: reading every agent again.");
                watermark = "0".into();
            }
            live = Some(now);
        }
        if let Some(serving) = state.serving.load_full() {
            let revision = &serving.revision.revision;
            match fleet.as_mut() {
                Some(f) if &f.revision == revision => {}
                Some(f) => {
                    let desired = Arc::new(Desired::from_revision(&serving.revision));
                    f.set_desired(revision.clone(), desired, to_ms(serving.accepted_at));
                    watermark = "0".into();
                }
                None => {
                    let loading = |e| ClusterError::Store {
                        what: "loading the rollouts",
                        source: e,
                    };
                    let stored = store.load_rollouts().await.map_err(loading)?;
                    let upgrades = store.load_upgrade_rollouts().await.map_err(loading)?;
                    let desired = Arc::new(Desired::from_revision(&serving.revision));
                    fleet = Some(FleetRollouts::new(
                        revision.clone(),
                        desired,
                        to_ms(serving.accepted_at),
                        rollouts_from_records(&stored),
                        upgrades,
                    ));
                    watermark = "0".into();
                }
            }
        }
        let started = Instant::now();
        if let Some(f) = fleet.as_mut() {
            let mut read = 0;
            // A full read of a large fleet is a few hundred ms of work: off the async threads,
            // a chunk at a time as the rows arrive.
            let next = store
                .changed_agents(&watermark, READ_CHUNK, |rows| {
                    read += rows.len();
                    crate::server::off_worker(|| f.fold(rows));
                })
                .await
                .map_err(|e| ClusterError::Store {
                    what: "reading the fleet's agents",
                    source: e,
                })?;
            if let Some(next) = next {
                watermark = next;
            }
            let events = crate::server::off_worker(|| f.step());
            crate::telemetry::cluster_rollout_step(started.elapsed(), read);
            debug!(
                revision = %f.revision,
                rows = read,
                ms = started.elapsed().as_millis() as u64,
                "Stepped the fleet's rollouts."
            );
            for event in events {
                state.emit(event);
            }
            write_rollouts(&cluster, &state, f).await?;
        }
        let cost = started.elapsed();
        // Wait for a notice (or the recheck), then gather the rest of the burst.
        let stepped = fleet.as_ref().map(|f| f.revision.clone());
        let notice = tokio::select! {
            _ = term.cancelled() => return Ok(()),
            n = tokio::time::timeout(RECHECK, listener.recv()) => n,
            // A new revision served: its rollouts start now, not at the recheck.
            _ = served_other_than(&state, stepped) => continue,
        };
        let first = match notice {
            Ok(Ok(n)) => Some(n),
            Err(_) => None,
            Ok(Err(err)) => return Err(q("listening for agent changes")(err)),
        };
        let resumes = first
            .as_ref()
            .is_some_and(|n| n.channel() == RESUME_CHANNEL);
        if !resumes && sleep_or_cancel(GATHER.max(cost * 2), &term).await {
            return Ok(());
        }
        // The notices that arrived meanwhile make one read and one step: a ramp's thousands
        // of batches each announced themselves, and reading once per notice kept the leader
        // reading empty changes ten times a second long after the ramp.
        let mut notices: Vec<_> = first.into_iter().collect();
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::ZERO, listener.recv()).await {
            notices.push(n);
        }
        for n in notices.iter().filter(|n| n.channel() == RESUME_CHANNEL) {
            resume(fleet.as_mut(), &state, n.payload());
        }
    }
}

/// An operator's resume relayed to the leader: resume the fleet's rollout of `name`.
fn resume(fleet: Option<&mut FleetRollouts>, state: &AppState, name: &str) {
    match fleet.map(|f| f.resume(name)) {
        Some(Ok(progress)) => {
            info!(configuration = %name, "Resumed the fleet's rollout.");
            state.emit(Event::RolloutResumed {
                configuration: name.to_string(),
                target: progress.target,
                excused: progress.excused,
            });
        }
        Some(Err(err)) => debug!(configuration = %name, error = %err, "Nothing to resume."),
        None => {}
    }
}

/// Returns once this replica serves a revision other than `revision`.
async fn served_other_than(state: &AppState, revision: Option<String>) {
    loop {
        let changed = state.serving_changed();
        tokio::pin!(changed);
        // Registered before the check: a change between the check and the wait is not missed.
        changed.as_mut().enable();
        let now = state
            .serving
            .load()
            .as_ref()
            .map(|s| s.revision.revision.clone());
        if now.is_some() && now != revision {
            return;
        }
        changed.await;
    }
}

/// Write what moved, committed at once, and announce it.
async fn write_rollouts(
    cluster: &Cluster,
    state: &AppState,
    fleet: &mut FleetRollouts,
) -> Result<(), ClusterError> {
    let local = cluster.local_convergence.load_full();
    let Some(writes) = fleet.writes(local.as_deref(), |e| state.emit(e)) else {
        return Ok(());
    };
    let failed = |e| ClusterError::Store {
        what: "writing the fleet's rollouts",
        source: e,
    };
    cluster.store.apply(&writes.batch).await.map_err(failed)?;
    if let Some(upgrades) = &writes.upgrades {
        cluster
            .store
            .save_upgrade_rollouts(upgrades, crate::store::now_ms())
            .await
            .map_err(failed)?;
    }
    let kind = if writes.admission {
        "admission"
    } else {
        "counts"
    };
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(ROLLOUTS_CHANNEL)
        .bind(kind)
        .execute(cluster.store.pool())
        .await
        .map_err(q("announcing the rollouts"))?;
    Ok(())
}

/// Every replica: hand the rollouts the database holds to the reconciler whenever the leader
/// announces new ones (and every [`RECHECK`]), so this replica admits by them.
pub async fn adopt_rollouts(
    cluster: Arc<Cluster>,
    state: Arc<AppState>,
    cancel: CancellationToken,
) {
    let Some(reconciler) = state.reconciler.clone() else {
        return;
    };
    let mut notices = super::Notices::new(cluster.store.pool(), ROLLOUTS_CHANNEL, "rollouts");
    // What was last handed over, as when each record was written: not the rollouts
    // themselves (each holds every member of the fleet).
    let mut last: Option<Stamps> = None;
    let mut lists = MemberLists::default();
    loop {
        notices.ensure().await;
        match stamps(&cluster.store).await {
            Ok(written) if last.as_ref() != Some(&written) => {
                match load_adopted(&cluster.store, &mut lists).await {
                    Ok(command) => {
                        last = Some(written);
                        if reconciler.send(command).await.is_err() {
                            return;
                        }
                    }
                    Err(err) => debug!(error = %err, "Reading the fleet's rollouts failed."),
                }
            }
            Ok(_) => {}
            Err(err) => debug!(error = %err, "Reading the fleet's rollouts failed."),
        }
        // The fleet's convergence figures (the leader's), for the API and commit statuses.
        match cluster.store.load_convergence(2).await {
            Ok(records) => {
                if let Ok(mut h) = state.history.lock() {
                    for c in crate::server::convergence::from_store(records) {
                        h.record_convergence(c);
                    }
                }
            }
            Err(err) => debug!(error = %err, "Reading the fleet's convergence failed."),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = notices.wait(RECHECK, cluster.opts.lock_retry) => {}
        }
    }
}

/// When each config rollout (configuration, target) and upgrade rollout (configuration) was
/// written.
type Stamps = (Vec<(String, String, i64)>, Vec<(String, i64)>);

async fn stamps(store: &PgStore) -> Result<Stamps, crate::store::StoreError> {
    Ok((
        store.rollout_stamps().await?,
        store.upgrade_rollout_stamps().await?,
    ))
}

/// The member lists a replica read last, by (configuration, target): when each was written,
/// and the list, shared with the rollouts handed to the reconciler. The counts move every few
/// seconds in a rollout; the list (every agent in scope) is read and parsed again only when
/// the leader wrote a new one.
type MemberLists = HashMap<(String, String), (crate::store::UnixMillis, Arc<MemberList>)>;

/// The leader's rollouts as the database holds them, for the reconciler to adopt; `lists` are
/// the member lists read before, updated. A record that does not parse is left out (as by
/// [`rollouts_from_records`]).
async fn load_adopted(
    store: &PgStore,
    lists: &mut MemberLists,
) -> Result<Command, crate::store::StoreError> {
    let held: Vec<_> = lists
        .iter()
        .map(|((c, t), (at, _))| (c.clone(), t.clone(), *at))
        .collect();
    let rows = store.rollouts_to_adopt(&held).await?;
    let mut read = MemberLists::with_capacity(rows.len());
    let mut rollouts = BTreeMap::new();
    for row in rows {
        let key = (row.record.configuration, row.record.target_hash);
        let members = if row.whole {
            Members::None
        } else if let Some(text) = &row.record.members {
            Members::Json(text)
        } else if let Some((_, list)) = lists.get(&key) {
            Members::Shared(Arc::clone(list))
        } else {
            continue;
        };
        let Ok(rollout) = Rollout::from_json(&row.record.progress, members) else {
            continue;
        };
        if !row.whole {
            read.insert(key, (row.members_at, Arc::clone(&rollout.agents)));
        }
        rollouts.insert(rollout.configuration.clone(), rollout);
    }
    *lists = read;
    Ok(Command::AdoptRollouts {
        rollouts,
        upgrades: store.load_upgrade_rollouts().await?,
    })
}

/// An operator's resume that reached this replica goes to the leader, which steps rollouts.
pub async fn relay_resume(cluster: &Cluster, configuration: &str) -> Result<(), ClusterError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(RESUME_CHANNEL)
        .bind(configuration)
        .execute(cluster.store.pool())
        .await
        .map_err(q("relaying the resume to the leader"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gitamp_opamp::proto::AgentCapabilities;

    /// The embedded example's desired state (linux-production: batches of 25%, 1 failure
    /// tolerated).
    fn desired() -> Arc<Desired> {
        let revision = gitamp_core::compile(&crate::embedded::snapshot()).expect("the example");
        Arc::new(Desired::from_revision(&revision))
    }

    fn row(i: u8, desired: &Desired, applied: bool) -> FleetRow {
        let hash = desired
            .hash_of("linux-production")
            .expect("rendered")
            .to_hex();
        let labels = [
            ("deployment.environment", "production"),
            ("os.type", "linux"),
            ("service.name", "checkout"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        FleetRow {
            instance_uid: hex::encode([i; 16]),
            labels,
            labels_fresh: true,
            capabilities: AgentCapabilities::AcceptsRemoteConfig as u64
                | AgentCapabilities::ReportsRemoteConfig as u64,
            reported_hash: applied.then(|| hash.clone()),
            remote_config_status: applied.then(|| "APPLIED".to_string()),
            sent_hash: applied.then_some(hash),
            connected: true,
            live: true,
            ..FleetRow::default()
        }
    }

    #[test]
    fn the_leader_admits_batches_over_rows_of_every_replica_and_counts_the_fleet() {
        let desired = desired();
        let mut fleet = FleetRollouts::new(
            "r1".into(),
            desired.clone(),
            0,
            BTreeMap::new(),
            BTreeMap::new(),
        );
        let rows: Vec<FleetRow> = (0..8).map(|i| row(i, &desired, false)).collect();
        fleet.fold(&rows);
        fleet.step();
        let rollout = &fleet.book.rollouts()["linux-production"];
        assert_eq!((rollout.agents.len(), rollout.admitted), (8, 2), "25% of 8");
        let writes = fleet.writes(None, |_| {}).expect("a first write");
        assert!(writes.admission);
        assert!(
            writes.upgrades.is_none(),
            "no version pinned: no upgrade rollout"
        );
        let batch = writes.batch;
        assert!(
            batch.rollouts.keys().any(|(c, _)| c == "linux-production"),
            "{:?}",
            batch.rollouts.keys()
        );
        assert_eq!(batch.convergence.len(), 1);
        // The member list goes with the first write, apart from the progress.
        let members_of = |batch: &Batch| {
            let (_, record) = batch
                .rollouts
                .iter()
                .find(|((c, _), _)| c == "linux-production")
                .expect("the rollout written");
            assert!(!record.progress.contains("agents"), "{}", record.progress);
            record.members.as_deref().map(|m| {
                serde_json::from_str::<Vec<String>>(m)
                    .expect("a JSON list")
                    .len()
            })
        };
        assert_eq!(members_of(&batch), Some(8));
        // Nothing moved: nothing to write (counts are due only every COUNTS_EVERY).
        assert!(fleet.writes(None, |_| {}).is_none());

        // The first batch applied (rows without labels: the leader knows where they belong).
        let mut applied: Vec<FleetRow> = (0..2).map(|i| row(i, &desired, true)).collect();
        for r in &mut applied {
            r.labels.clear();
            r.labels_fresh = false;
        }
        fleet.fold(&applied);
        fleet.step();
        let rollout = &fleet.book.rollouts()["linux-production"];
        assert_eq!(rollout.admitted, 4, "the next batch");
        let c = fleet.convergence(None);
        assert_eq!((c.targeted, c.applied, c.waiting), (8, 2, 6), "{c:?}");
        let moved = fleet.writes(None, |_| {}).expect("admission moved");
        assert_eq!(
            members_of(&moved.batch),
            None,
            "the same members: not written"
        );

        // An agent re-labelled out of the configuration leaves its scope.
        let mut gone = row(7, &desired, false);
        gone.labels
            .insert("deployment.environment".into(), "nowhere".into());
        fleet.fold(&[gone]);
        fleet.step();
        assert_eq!(fleet.book.rollouts()["linux-production"].agents.len(), 7);
        // Not admitted yet, so admission did not move: written with the next counts.
        fleet.counts_written = None;
        let shrunk = fleet.writes(None, |_| {}).expect("counts due");
        assert_eq!(members_of(&shrunk.batch), Some(7), "a new list is written");

        // Read back, the progress and the list make the rollout again; so does a record of
        // before the list was kept apart (its progress holds it, `members` is empty).
        let records: Vec<_> = shrunk.batch.rollouts.values().cloned().collect();
        let read = rollouts_from_records(&records);
        assert_eq!(
            read["linux-production"],
            fleet.book.rollouts()["linux-production"]
        );
        let whole = crate::store::RolloutRecord {
            progress: serde_json::to_string(&fleet.book.rollouts()["linux-production"])
                .expect("serializes"),
            members: None,
            ..records[0].clone()
        };
        assert_eq!(
            rollouts_from_records(&[whole])["linux-production"],
            fleet.book.rollouts()["linux-production"]
        );
    }

    fn same(a: &Rollout, b: &Rollout) -> bool {
        Admission::of(a) == Admission::of(b)
    }

    #[test]
    fn admission_ignores_counts_and_an_all_at_once_rollouts_members() {
        let desired = desired();
        let mut fleet = FleetRollouts::new(
            "r1".into(),
            desired.clone(),
            0,
            BTreeMap::new(),
            BTreeMap::new(),
        );
        fleet.fold(&(0..4).map(|i| row(i, &desired, false)).collect::<Vec<_>>());
        fleet.step();
        let a = fleet.book.rollouts()["linux-production"].clone();
        let mut b = a.clone();
        b.synced += 1;
        assert!(same(&a, &b), "counts alone");
        b.admitted += 1;
        assert!(!same(&a, &b), "one more admitted");
        let mut all = a.clone();
        all.policy.strategy = gitamp_core::catalog::model::RolloutStrategy::AllAtOnce;
        let mut more = all.clone();
        std::sync::Arc::make_mut(&mut more.agents).insert("another".into());
        more.admitted += 1;
        assert!(same(&all, &more), "all at once admits everyone anyway");
    }
}

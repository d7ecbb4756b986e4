//! Between the reconciler and the store: what changed is queued for the write-behind writer
//! (never waiting on the disk), and what the store kept is read back after a restart, so a
//! restarted server decides exactly as before (no redundant push, no re-push of a failed hash,
//! no re-opened halted rollout).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use gitamp_core::ConfigHash;
use gitamp_core::plan::upgrade::AgentPackages;
use gitamp_core::plan::{Members, ObservedAgent, Rollout, RolloutPhase};
use gitamp_opamp::offers::SentOffer;
use gitamp_opamp::proto::AgentCapabilities;
use gitamp_opamp::wire::uid_from_hex;
use gitamp_opamp::{AgentSnapshot, RemoteConfig, Uid};
use tracing::warn;

use super::Reconciler;
use super::observe::Observed;
use crate::server::events::Event;
use crate::store::{
    self, AgentRecord, AgentResume, ConfigEntry, ConfigRecord, RolloutRecord, StoreOp,
};

/// What of an agent's record the store holds, in two numbers: everything persisted of the
/// planner's record, and its failed hashes alone (a change there must be durable at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Digest {
    all: u64,
    failed: u64,
    /// Its package facts (replicas only: the leader steps upgrade rollouts from them), written
    /// only when they change.
    packages: u64,
    /// The last connection-settings offer sent to it (the registry's), written only when it
    /// changes (0: none, or not kept).
    offer: u64,
}

/// The offer of an agent's snapshot that its record keeps: only an agent that accepts `opamp`
/// offers reconnects on one sent again. Others apply an unchanged offer without a change
/// (opamp-go sets the interval; the supervisor restarts its collector only when its own-
/// telemetry config changes), and keeping theirs would widen every row for nothing.
fn kept_offer(snap: &AgentSnapshot) -> Option<SentOffer> {
    let accepts = AgentCapabilities::AcceptsOpAmpConnectionSettings as u64;
    snap.settings_offered
        .filter(|_| snap.capabilities & accepts != 0)
}

/// The [`Digest`] of an offer kept.
fn offer_digest(offer: Option<SentOffer>) -> u64 {
    offer.map_or(0, |o| {
        let mut h = DefaultHasher::new();
        o.hash(&mut h);
        h.finish()
    })
}

impl Digest {
    /// Replicas also store what the agent last reported (`with_reports`): the leader derives
    /// every agent's progress from the stored record (src/server/cluster/rollouts.rs). A
    /// single server does not need it (the agent reports again when it reconnects).
    pub(super) fn of(a: &ObservedAgent, with_reports: bool) -> Digest {
        let mut failed = DefaultHasher::new();
        a.failed_hashes.hash(&mut failed);
        let failed = failed.finish();
        let mut all = DefaultHasher::new();
        (
            failed,
            a.sent_hash,
            a.sent_at,
            a.last_applied,
            a.last_applied_at,
            &a.last_error,
            // The shared table says which agents are connected, and where (replicas list the
            // whole fleet from it): a disconnect alone is written too.
            a.connected,
        )
            .hash(&mut all);
        let mut packages = 0;
        if with_reports {
            // Health too: the leader holds a batch for an agent that reports unhealthy.
            (a.reported_hash, &a.reported_status, a.connected, a.healthy).hash(&mut all);
            if a.packages != AgentPackages::default() {
                let mut h = DefaultHasher::new();
                a.packages.hash(&mut h);
                packages = h.finish();
                packages.hash(&mut all);
            }
        }
        Digest {
            all: all.finish(),
            failed,
            packages,
            offer: 0,
        }
    }
}

/// What was last persisted of a rollout: everything but its member list, so a plan decides
/// whether to write it in O(1) instead of comparing (and cloning) thousands of agent IDs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RolloutStamp {
    target: ConfigHash,
    policy: gitamp_core::catalog::model::RolloutPolicy,
    members: usize,
    admitted: usize,
    batch: usize,
    synced: usize,
    failed: usize,
    excused: usize,
    pending: usize,
    phase: RolloutPhase,
}

/// What was last written of a rollout: its stamp, and a fingerprint of the member list written
/// with it (`None`: not known to be written, as for a rollout read back at start), so the list
/// is written again only when it changed.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    stamp: RolloutStamp,
    members: Option<u64>,
}

impl Written {
    /// A rollout read back from the store: its first write here carries its members (the row
    /// may be an older one whose progress held them).
    pub(crate) fn read_back(r: &Rollout) -> Written {
        Written {
            stamp: RolloutStamp::of(r),
            members: None,
        }
    }
}

impl RolloutStamp {
    /// The target of a halted rollout (`None`: not halted).
    pub(crate) fn halted_on(&self) -> Option<ConfigHash> {
        matches!(self.phase, RolloutPhase::Halted { .. }).then_some(self.target)
    }

    pub(crate) fn of(r: &Rollout) -> RolloutStamp {
        RolloutStamp {
            target: r.target,
            policy: r.policy.clone(),
            members: r.agents.len(),
            admitted: r.admitted,
            batch: r.batch,
            synced: r.synced,
            failed: r.failed,
            excused: r.excused.len(),
            pending: r.pending,
            phase: r.phase.clone(),
        }
    }
}

impl Reconciler {
    /// Write the records of the re-planned agents whose persisted state changed, and the
    /// rollouts that moved; ask for an immediate commit after a decision a restart must know.
    pub(super) fn persist(&mut self, replanned: &[Uid], observed: &Observed) {
        let Some(planner) = self.planner.as_ref() else {
            return;
        };
        let mut records = Vec::new();
        for uid in replanned {
            let Some((agent, _)) = planner.agent(uid) else {
                continue;
            };
            let before = self.persisted.get(uid).copied();
            let mut digest = Digest::of(agent, self.adopts_rollouts);
            // An offer goes out in a reply to one of its messages, which has the agent
            // re-read, or in a push the reconciler marks it dirty for: an agent not re-read
            // has the offer it had.
            digest.offer = match observed.snapshots.get(uid) {
                Some(snap) => offer_digest(kept_offer(snap)),
                None => before.map_or(0, |b| b.offer),
            };
            let relabelled = observed.labels_changed.contains(uid);
            if before == Some(digest) && !relabelled {
                continue;
            }
            // A failure must survive a crash (it stops re-sends and holds rollouts); an
            // applied hash is reported again by the agent itself when it reconnects.
            self.durable_now |= match before {
                Some(before) => before.failed != digest.failed,
                None => !agent.failed_hashes.is_empty(),
            };
            self.persisted.insert(*uid, digest);
            // Labels go to the store only when they may be new to it: a rollout rewrites
            // every agent's record, and serializing unchanged labels for each was a cost.
            let labels = (relabelled || self.described.contains(uid)).then(|| agent.labels.clone());
            // Agents re-read this plan are not read twice; the others (whose rollout batch
            // opened) are read now.
            let fetched;
            let snap = match observed.snapshots.get(uid) {
                Some(s) => Some(s),
                None => {
                    fetched = self.fleet.peek(uid);
                    fetched.as_ref()
                }
            };
            // Package facts only when they changed (an agent that never accepted packages
            // has none: the row's NULL reads as none).
            let packages = (before.map_or(0, |b| b.packages) != digest.packages)
                .then(|| serde_json::to_value(&agent.packages).unwrap_or_default());
            if let Some(snap) = snap {
                let described = self.described.remove(uid);
                let mut record = agent_record(snap, labels, agent, described);
                record.packages = packages;
                if before.map_or(0, |b| b.offer) != digest.offer {
                    record.settings_offer = kept_offer(snap).map(|o| o.to_text());
                }
                records.push((*uid, record, described));
            }
        }
        for (uid, record, described) in records {
            if !self.write(StoreOp::UpsertAgent(record)) {
                // The record that carried the labels, description or health was dropped: the
                // agent's next record carries them all again, and it is written again.
                self.persisted.remove(&uid);
                if described {
                    self.described.insert(uid);
                }
            }
        }
        self.persist_rollouts();
        if std::mem::take(&mut self.durable_now) {
            // Committed by the writer's task at once; the plan does not wait for the disk.
            self.store.commit_now();
        }
    }

    /// Queue a store write without ever waiting on the disk: the plan must not stall behind a
    /// slow write. A full queue drops the op with a warning; the next change writes it again.
    pub(super) fn write(&self, op: StoreOp) -> bool {
        match self.store.try_send(op) {
            Ok(()) => true,
            Err(err) => {
                warn!(error = %err, "Store write dropped.");
                false
            }
        }
    }

    /// Write rollouts that changed since the last write; log halts. A planner that adopts
    /// the leader's rollouts (several replicas) writes none: the leader does.
    pub(super) fn persist_rollouts(&mut self) {
        let Some(planner) = self.planner.as_ref() else {
            return;
        };
        if planner.adopts_rollouts() {
            return;
        }
        let state = &self.state;
        let (ops, durable) =
            rollout_writes(planner.rollouts(), &mut self.persisted_rollouts, |e| {
                state.emit(e)
            });
        self.durable_now |= durable;
        for op in ops {
            self.write(op);
        }
    }
}

/// The store writes for the rollouts that moved since they were last persisted (`persisted`,
/// updated), the events their moves make (a halt, a completion), and whether one of them must
/// be committed at once (started, halted, finished: see ARCHITECTURE.md, "Durability"). The one
/// rule for a server's own rollouts and for the leader's fleet-wide ones.
pub(crate) fn rollout_writes(
    rollouts: &BTreeMap<String, Rollout>,
    persisted: &mut BTreeMap<String, Written>,
    mut emit: impl FnMut(Event),
) -> (Vec<StoreOp>, bool) {
    let mut ops = Vec::new();
    let mut durable = false;
    for (name, rollout) in rollouts {
        let stamp = RolloutStamp::of(rollout);
        let written = persisted.get(name);
        let before = written.map(|w| &w.stamp);
        if before == Some(&stamp) {
            continue;
        }
        if before.is_none_or(|b| b.phase != stamp.phase || b.target != stamp.target) {
            durable = true;
        }
        if let RolloutPhase::Halted { reason } = &rollout.phase
            && !matches!(before.map(|b| &b.phase), Some(RolloutPhase::Halted { .. }))
        {
            emit(Event::RolloutHalted {
                configuration: name.clone(),
                reason: reason.clone(),
            });
        }
        // A rollout seen before (not one read back complete at start) that completes now.
        if rollout.phase == RolloutPhase::Complete
            && before.is_some_and(|b| b.target == stamp.target && b.phase != stamp.phase)
        {
            emit(Event::RolloutCompleted {
                configuration: name.clone(),
                target: rollout.target,
                synced: rollout.synced,
                failed: rollout.failed,
            });
        }
        if let Some(old) = before.filter(|o| o.target != rollout.target) {
            ops.push(StoreOp::DeleteRollout {
                configuration: name.clone(),
                target_hash: Some(old.target.to_hex()),
            });
        }
        // The member list only when it changed (a new target is a new row: with its list).
        let fingerprint = rollout.members_fingerprint();
        let members_written = written
            .filter(|w| w.stamp.target == rollout.target)
            .and_then(|w| w.members);
        let members = (members_written != Some(fingerprint))
            .then(|| rollout.members_json().unwrap_or_default());
        ops.push(StoreOp::SaveRollout(RolloutRecord {
            configuration: name.clone(),
            target_hash: rollout.target.to_hex(),
            progress: rollout.progress_json().unwrap_or_default(),
            members,
            updated_at: store::now_ms(),
        }));
        persisted.insert(
            name.clone(),
            Written {
                stamp,
                members: Some(fingerprint),
            },
        );
    }
    let gone: Vec<String> = persisted
        .keys()
        .filter(|name| !rollouts.contains_key(*name))
        .cloned()
        .collect();
    for name in gone {
        persisted.remove(&name);
        ops.push(StoreOp::DeleteRollout {
            configuration: name,
            target_hash: None,
        });
    }
    (ops, durable)
}

/// The durable image of one agent: what the registry saw plus the planner's record.
fn agent_record(
    snap: &AgentSnapshot,
    labels: Option<BTreeMap<String, String>>,
    agent: &ObservedAgent,
    described: bool,
) -> AgentRecord {
    let status = snap.remote_config_status.as_ref();
    AgentRecord {
        instance_uid: hex::encode(snap.uid),
        labels,
        description: described.then(|| serde_json::to_value(&snap.description).unwrap_or_default()),
        capabilities: snap.capabilities,
        health: described.then(|| serde_json::to_value(&snap.health).unwrap_or_default()),
        reported_hash: status
            .map(|s| hex::encode(&s.hash))
            .filter(|h| !h.is_empty()),
        remote_config_status: status.map(|s| s.status.name().to_string()),
        remote_config_error: status.map(|s| s.error.clone()).filter(|e| !e.is_empty()),
        effective_config_hash: None,
        sent_hash: agent.sent_hash.map(|h| h.to_hex()),
        sent_at: agent.sent_at.map(store::stored_ms),
        failed_hashes: agent.failed_hashes.iter().map(ConfigHash::to_hex).collect(),
        applied_hash: agent.last_applied.map(|h| h.to_hex()),
        applied_at: agent.last_applied_at.map(store::stored_ms),
        last_error: agent.last_error.clone(),
        connected: snap.connection.connected,
        last_seen: store::to_ms(snap.connection.last_seen),
        packages: None,
        settings_offer: None,
    }
}

/// The agents' records as the store kept them (after a restart): each becomes the planner's
/// record of that agent when it is first seen again. Not connected until it says so.
pub fn agents_from_records(records: &[AgentResume]) -> HashMap<Uid, ObservedAgent> {
    records
        .iter()
        .filter_map(|r| {
            let uid = uid_from_hex(&r.instance_uid)?;
            let agent = ObservedAgent {
                instance_uid: gitamp_opamp::wire::uid_text(&uid),
                labels: r.labels.clone(),
                ..store::stored_plan(
                    r.sent_hash.as_deref(),
                    r.sent_at,
                    &r.failed_hashes,
                    (r.applied_hash.as_deref(), r.applied_at),
                    r.last_error.as_ref(),
                )
            };
            Some((uid, agent))
        })
        .collect()
}

/// What this server offered each stored agent before it restarted (see
/// `gitamp_opamp::Fleet::remember_offers`); unreadable offers are left out (offered again).
pub fn offers_from_records(records: &[AgentResume]) -> HashMap<Uid, SentOffer> {
    records
        .iter()
        .filter_map(|r| {
            // Most rows hold no offer: only those that do are looked at further.
            let offer = SentOffer::from_text(r.settings_offer.as_deref()?)?;
            Some((uid_from_hex(&r.instance_uid)?, offer))
        })
        .collect()
}

/// The durable image of a served config.
pub(super) fn config_record(revision: &str, config: &RemoteConfig) -> ConfigRecord {
    ConfigRecord {
        hash: hex::encode(config.hash()),
        config_map: config
            .files()
            .iter()
            .map(|(key, (body, content_type))| {
                let entry = ConfigEntry {
                    content_type: content_type.clone(),
                    body: String::from_utf8_lossy(body).into_owned(),
                };
                (key.clone(), entry)
            })
            .collect(),
        revision: revision.to_string(),
        time: store::now_ms(),
    }
}

/// A stored config, if its bytes still hash to its name (the core's config-map hash).
pub(super) fn config_from_record(r: &ConfigRecord) -> Option<Arc<RemoteConfig>> {
    let hash = ConfigHash::from_hex(&r.hash)?;
    let map: gitamp_core::config_map::ConfigMap = r
        .config_map
        .iter()
        .map(|(k, e)| {
            let file = gitamp_core::config_map::ConfigFile {
                body: bytes::Bytes::from(e.body.clone().into_bytes()),
                content_type: e.content_type.clone(),
            };
            (k.clone(), file)
        })
        .collect();
    if ConfigHash::of(&map) != hash {
        return None;
    }
    let files = map
        .into_iter()
        .map(|(k, f)| (k, (f.body, f.content_type)))
        .collect();
    Some(Arc::new(RemoteConfig::new(files, hash.0)))
}

/// Rebuild rollouts from the store; unreadable ones are dropped (a new rollout starts).
pub fn rollouts_from_records(records: &[RolloutRecord]) -> BTreeMap<String, Rollout> {
    records
        .iter()
        .filter_map(|r| {
            let members = r.members.as_deref().map_or(Members::None, Members::Json);
            Rollout::from_json(&r.progress, members).ok()
        })
        .map(|r| (r.configuration.clone(), r))
        .collect()
}

//! The whole fleet on any replica (README, "Operating several servers"): this replica's agents
//! from memory, the others' from the shared `agents` table.
//!
//! The table is read at most once per [`REFRESH`] whatever the number of requests (one read at a
//! time; the others take the last one, or wait for it when it is too old), off the reconciler: a page of 100 at
//! 60,000 agents does not read 60,000 rows per request. A remote agent's status is computed here
//! with the planner's pure rules (`plan_agent` over the served revision's selection and hashes),
//! from an `ObservedAgent` built of its row. What only the holding replica knows is absent:
//! `drifted` (the row has no "was synced on" hash: such an agent reads `applying` or
//! `pending` elsewhere), its transport (`unknown`), when it connected, its offers, its
//! effective config. Its agent version and upgrade status come from the package facts its
//! replica writes to the row.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use gitamp_core::ConfigHash;
use gitamp_core::catalog::model::OnFailure;
use gitamp_core::plan::upgrade::plan_upgrade;
use gitamp_core::plan::{Desired, Timing, plan_agent};
use gitamp_opamp::report::{
    ConnectionInfo, Description, Health, RemoteState, RemoteStatus, Transport,
};
use gitamp_opamp::wire::uid_text;
use gitamp_opamp::{AgentSnapshot, Uid};

use crate::server::cluster::Cluster;
use crate::server::state::{AgentView, AppState, FleetView, Serving, UpgradeView};
use crate::store::fleet::FleetRow;
use crate::store::{from_ms, now_ms};

/// The shared table is read at most this often for all requests together.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How old a read may be answered while a newer one is made behind it.
pub const SERVED_STALE: Duration = Duration::from_secs(5);
/// Longest wait for one read; past it the answer is this replica's agents alone.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Response header of fleet-wide answers on a replica: `whole` (every replica's agents, the
/// others' as of `gitamp-fleet-read-at`) or `replica` (the database could not be read: this
/// replica's agents only, `gitamp-fleet-error` says why).
pub const FLEET_HEADER: &str = "gitamp-fleet";
pub const FLEET_READ_AT_HEADER: &str = "gitamp-fleet-read-at";
pub const FLEET_ERROR_HEADER: &str = "gitamp-fleet-error";

/// An agent another replica holds (or none does), as read from the shared table.
#[derive(Debug, Clone)]
pub(crate) struct RemoteAgent {
    /// What the list shows, shaped as a local agent's snapshot (labels as the description's
    /// identifying attributes, `healthy` alone of its health).
    pub snapshot: AgentSnapshot,
    /// Its status by the planner's rules; `None` while nothing is served.
    pub view: Option<AgentView>,
    /// The replica holding its connection.
    pub replica: Option<String>,
}

/// The other replicas' agents as of one read, sorted by UID.
#[derive(Debug)]
pub(crate) struct RemoteFleet {
    pub agents: Vec<RemoteAgent>,
    pub read_at: SystemTime,
}

/// What a request gets: the other replicas' agents, or why not.
#[derive(Debug, Clone)]
pub(crate) enum FleetRead {
    Whole(Arc<RemoteFleet>),
    Unavailable(String),
}

impl FleetRead {
    /// The headers saying which (see [`FLEET_HEADER`]).
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        let mut put = |name: &'static str, value: &str| {
            // Visible ASCII only: an error text may carry anything.
            let clean: String = value
                .chars()
                .map(|c| {
                    if c.is_ascii_graphic() || c == ' ' {
                        c
                    } else {
                        '?'
                    }
                })
                .take(300)
                .collect();
            if let Ok(v) = HeaderValue::from_str(&clean) {
                h.insert(HeaderName::from_static(name), v);
            }
        };
        match self {
            FleetRead::Whole(f) => {
                put(FLEET_HEADER, "whole");
                put(FLEET_READ_AT_HEADER, &super::rfc3339(f.read_at));
            }
            FleetRead::Unavailable(why) => {
                put(FLEET_HEADER, "replica");
                put(FLEET_ERROR_HEADER, why);
            }
        }
        h
    }
}

struct Attempt {
    at: Instant,
    /// How long it took: the next read waits at least as long, so reads of a large table
    /// under load take at most half of a core's time.
    took: Duration,
    revision: Option<String>,
    read: FleetRead,
}

/// The last read of the shared table, shared by every request of this replica's API.
#[derive(Default)]
pub(crate) struct FleetCache {
    last: Mutex<Option<Attempt>>,
    /// One read at a time (owned by a background refresh while it runs).
    reading: Arc<tokio::sync::Mutex<()>>,
}

impl FleetCache {
    /// The last read for `revision`, whether it is still fresh, and its age.
    fn last(&self, revision: &Option<String>) -> Option<(bool, Duration, FleetRead)> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref().filter(|a| &a.revision == revision).map(|a| {
            let age = a.at.elapsed();
            (age < REFRESH.max(a.took), age, a.read.clone())
        })
    }

    /// The other replicas' agents. A read younger than [`REFRESH`] (or than the time it took)
    /// is shared; an older
    /// successful one (up to [`SERVED_STALE`]) is answered at once while one request reads the
    /// table again behind it (`gitamp-fleet-read-at` gives its age); past that, or after a
    /// failed read, or for another revision, the request waits for a new read. A failed read is
    /// not retried before [`REFRESH`] either, so an unreachable database costs one wait per
    /// second, not one per request.
    pub async fn read(self: &Arc<Self>, app: &Arc<AppState>, cluster: &Arc<Cluster>) -> FleetRead {
        let revision = app
            .serving
            .load()
            .as_ref()
            .map(|s| s.revision.revision.clone());
        match self.last(&revision) {
            Some((true, _, read)) => return read,
            Some((false, age, read @ FleetRead::Whole(_))) if age < SERVED_STALE => {
                if let Ok(one) = Arc::clone(&self.reading).try_lock_owned() {
                    let (cache, app, cluster) = (self.clone(), app.clone(), cluster.clone());
                    tokio::spawn(async move {
                        let _one = one;
                        cache.refresh(&app, &cluster).await;
                    });
                }
                return read;
            }
            _ => {}
        }
        let _one = self.reading.lock().await;
        match self.last(&revision) {
            Some((true, _, read)) => read,
            _ => self.refresh(app, cluster).await,
        }
    }

    /// Forget a read nobody asked for since it was made: past [`SERVED_STALE`] no request
    /// answers from it, and a replica must not hold every other replica's agents while no one
    /// looks (its memory is sized by the agents it holds).
    fn forget_if_unused(self: &Arc<Self>, at: Instant) {
        let cache = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(SERVED_STALE).await;
            if let Some(cache) = cache.upgrade() {
                let mut last = cache.last.lock().unwrap_or_else(|p| p.into_inner());
                if last.as_ref().is_some_and(|a| a.at == at) {
                    *last = None;
                }
            }
        });
    }

    /// Read the table now (the caller holds `reading`) and keep what came of it (for at most
    /// [`SERVED_STALE`] unless a newer read replaces it).
    async fn refresh(self: &Arc<Self>, app: &AppState, cluster: &Cluster) -> FleetRead {
        let serving = app.serving.load_full();
        let revision = serving.as_ref().map(|s| s.revision.revision.clone());
        let started = Instant::now();
        let read =
            match tokio::time::timeout(READ_TIMEOUT, cluster.store().fleet_agents(&cluster.id))
                .await
            {
                Ok(Ok(rows)) => {
                    tracing::debug!(
                        rows = rows.len(),
                        read_ms = started.elapsed().as_millis() as u64,
                        "Read the other replicas' rows."
                    );
                    let built = tokio::task::spawn_blocking(move || {
                        build(rows, serving.as_deref(), SystemTime::now())
                    })
                    .await;
                    match built {
                        Ok(fleet) => FleetRead::Whole(Arc::new(fleet)),
                        Err(err) => FleetRead::Unavailable(format!("reading the fleet: {err}")),
                    }
                }
                Ok(Err(err)) => FleetRead::Unavailable(err.to_string()),
                Err(_) => FleetRead::Unavailable(format!(
                    "the database did not answer within {} s",
                    READ_TIMEOUT.as_secs()
                )),
            };
        match &read {
            FleetRead::Whole(f) => tracing::debug!(
                agents = f.agents.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "Read the other replicas' agents."
            ),
            FleetRead::Unavailable(why) => tracing::warn!(
                error = %why,
                "Cannot read the other replicas' agents; answering with this replica's."
            ),
        }
        let at = Instant::now();
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Attempt {
            at,
            took: started.elapsed(),
            revision,
            read: read.clone(),
        });
        self.forget_if_unused(at);
        read
    }
}

/// One agent read from the shared table, for its detail.
pub(crate) enum OneRead {
    Found(Box<RemoteAgent>),
    Missing,
    Unavailable(String),
}

impl OneRead {
    /// The headers of [`FleetRead::headers`]: `whole` when the table answered.
    pub fn headers(&self) -> HeaderMap {
        match self {
            OneRead::Found(_) | OneRead::Missing => {
                let mut h = HeaderMap::new();
                h.insert(
                    HeaderName::from_static(FLEET_HEADER),
                    HeaderValue::from_static("whole"),
                );
                h
            }
            OneRead::Unavailable(why) => FleetRead::Unavailable(why.clone()).headers(),
        }
    }
}

/// One agent's row (its description and health included), with its status computed as for the
/// list: one primary-key read per request, bounded by the same timeout.
pub(crate) async fn read_one(app: &AppState, cluster: &Cluster, uid: &Uid) -> OneRead {
    let serving = app.serving.load_full();
    match tokio::time::timeout(READ_TIMEOUT, cluster.store().fleet_agent(&hex::encode(uid))).await {
        Ok(Ok(Some(row))) => {
            let desired = serving
                .as_ref()
                .map(|s| Desired::from_revision(&s.revision));
            match remote_agent(row, desired.as_ref(), now()) {
                Some(agent) => OneRead::Found(Box::new(agent)),
                None => OneRead::Missing,
            }
        }
        Ok(Ok(None)) => OneRead::Missing,
        Ok(Err(err)) => OneRead::Unavailable(err.to_string()),
        Err(_) => OneRead::Unavailable(format!(
            "the database did not answer within {} s",
            READ_TIMEOUT.as_secs()
        )),
    }
}

/// The rows as agents with their statuses against `serving`'s revision.
fn build(rows: Vec<FleetRow>, serving: Option<&Serving>, now: SystemTime) -> RemoteFleet {
    let desired = serving.map(|s| Desired::from_revision(&s.revision));
    let now_ms = u64::try_from(crate::store::to_ms(now)).unwrap_or(0);
    let mut agents: Vec<RemoteAgent> = rows
        .into_iter()
        .filter_map(|row| remote_agent(row, desired.as_ref(), now_ms))
        .collect();
    agents.sort_by_key(|a| a.snapshot.uid);
    RemoteFleet {
        agents,
        read_at: now,
    }
}

fn remote_state(name: Option<&str>) -> Option<RemoteState> {
    name.map(|n| match n {
        "APPLIED" => RemoteState::Applied,
        "APPLYING" => RemoteState::Applying,
        "FAILED" => RemoteState::Failed,
        _ => RemoteState::Unset,
    })
}

/// One row as the list shows it, its status computed as the holding replica's planner would
/// (`None` for a row whose id is not a 16-byte hex UID: not one gitamp wrote).
pub(crate) fn remote_agent(
    row: FleetRow,
    desired: Option<&Desired>,
    now_ms: u64,
) -> Option<RemoteAgent> {
    let uid = gitamp_opamp::wire::uid_from_hex(&row.instance_uid)?;
    let mut observed = row.observed();
    observed.instance_uid = uid_text(&uid);
    let connected = observed.connected;
    let failed_hashes: Vec<ConfigHash> = observed.failed_hashes.iter().copied().collect();
    let sent = observed.sent_hash.zip(observed.sent_at);
    let last_applied = observed.last_applied;
    let view = desired.map(|desired| {
        observed.labels = row.labels.clone();
        let selection = desired.select(&observed.labels);
        let desired_hash = match &selection {
            gitamp_core::plan::select::Selection::One(name) => desired.hash_of(name),
            _ => None,
        };
        // Neither `reached` nor the failure policy changes the status or its reason.
        let plan = plan_agent(
            &observed,
            &selection,
            desired_hash,
            false,
            OnFailure::Keep,
            Timing::at(now_ms),
        );
        let version = plan
            .configuration
            .as_ref()
            .and_then(|name| desired.configurations.get(name))
            .and_then(|c| c.version.as_ref());
        // Whether the upgrade rollout admits it is the holding replica's to say: a remote
        // agent still to be offered the version shows no reason.
        let upgrade = version.map(|v| {
            let up = plan_upgrade(
                &observed,
                v,
                &desired.versions,
                true,
                OnFailure::Keep,
                Timing::at(now_ms),
            );
            UpgradeView {
                status: up.status.as_str(),
                desired_version: up.desired_version,
                reason: up.detail,
            }
        });
        let installed_version = observed
            .packages
            .running(version.map(|v| v.package.as_str()))
            .map(str::to_string);
        AgentView {
            status: plan.status.as_str().to_string(),
            configuration: plan.configuration,
            desired_hash: plan.desired_hash,
            reason: plan.detail,
            last_applied,
            sent,
            failed_hashes: failed_hashes.clone(),
            installed_version,
            upgrade,
        }
    });
    let description = match row.description.as_ref() {
        Some(d) => serde_json::from_value::<Option<Description>>(d.clone())
            .ok()
            .flatten(),
        // The list needs the labels alone (identifying attributes win in both).
        None => (!row.labels.is_empty()).then(|| Description {
            identifying: row
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            non_identifying: Default::default(),
        }),
    };
    let health = match row.health.as_ref() {
        Some(h) => serde_json::from_value::<Option<Health>>(h.clone())
            .ok()
            .flatten(),
        None => row.healthy.map(|healthy| Health {
            healthy,
            ..Health::default()
        }),
    };
    let snapshot = AgentSnapshot {
        uid,
        description: description.map(Arc::new),
        capabilities: row.capabilities,
        health: health.map(Arc::new),
        effective_config: None,
        remote_config_status: remote_state(row.remote_config_status.as_deref()).map(|status| {
            RemoteStatus {
                hash: row
                    .reported_hash
                    .as_deref()
                    .and_then(|h| hex::decode(h).ok())
                    .unwrap_or_default()
                    .into(),
                status,
                error: row.remote_config_error.clone().unwrap_or_default(),
            }
        }),
        connection: ConnectionInfo {
            connected,
            // Not stored; the item says `unknown` (see `Entry::remote`).
            transport: Transport::Ws,
            connected_since: None,
            last_seen: from_ms(row.last_seen),
            id: None,
        },
        sequence_num: 0,
        awaiting_report: false,
        pending_hash: None,
        last_sent: None,
        unread_statuses: Vec::new(),
        package_statuses: None,
        last_offer: None,
        offers: None,
        settings_offered: None,
    };
    Some(RemoteAgent {
        snapshot,
        view,
        replica: row.replica.filter(|_| connected),
    })
}

/// One agent of the merged list.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    pub agent: &'a AgentSnapshot,
    pub view: Option<&'a AgentView>,
    pub replica: Option<&'a str>,
    /// Read from the shared table (another replica holds it, or none does).
    pub remote: bool,
}

/// This replica's agents (`local`, sorted by UID, as [`gitamp_opamp::Fleet::briefs`] gives
/// them) and the others' (`remote`, sorted), one entry per agent, by UID. An agent in both is
/// taken from memory while connected here, from the table while another replica holds it, else
/// from whichever saw it last (both disconnected).
pub(crate) fn merge<'a>(
    local: &'a [AgentSnapshot],
    view: &'a FleetView,
    me: &'a str,
    remote: &'a [RemoteAgent],
) -> Vec<Entry<'a>> {
    let here = |a: &'a AgentSnapshot| Entry {
        agent: a,
        view: view.agents.get(&a.uid),
        replica: a.connection.connected.then_some(me),
        remote: false,
    };
    let there = |r: &'a RemoteAgent| Entry {
        agent: &r.snapshot,
        view: r.view.as_ref(),
        replica: r.replica.as_deref(),
        remote: true,
    };
    let mut out = Vec::with_capacity(local.len() + remote.len());
    let (mut i, mut j) = (0, 0);
    while i < local.len() || j < remote.len() {
        match (local.get(i), remote.get(j)) {
            (Some(l), Some(r)) if l.uid == r.snapshot.uid => {
                let remote_wins = !l.connection.connected
                    && (r.replica.is_some()
                        || r.snapshot.connection.last_seen > l.connection.last_seen);
                out.push(if remote_wins { there(r) } else { here(l) });
                i += 1;
                j += 1;
            }
            (Some(l), Some(r)) if l.uid < r.snapshot.uid => {
                out.push(here(l));
                i += 1;
            }
            (Some(_), Some(r)) | (None, Some(r)) => {
                out.push(there(r));
                j += 1;
            }
            (Some(l), None) => {
                out.push(here(l));
                i += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// Agents per status over `entries` (those not planned yet left out, as in `gitamp_agents`).
pub(crate) fn counts(entries: &[Entry<'_>]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for v in entries.iter().filter_map(|e| e.view) {
        *counts.entry(v.status.clone()).or_insert(0) += 1;
    }
    counts
}

/// Milliseconds now, for callers that plan one agent.
pub(crate) fn now() -> u64 {
    u64::try_from(now_ms()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use gitamp_core::catalog::model::{RolloutPolicy, Selector};
    use gitamp_core::plan::DesiredConfig;

    use super::*;
    use gitamp_opamp::proto::AgentCapabilities;

    const DESIRED: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const OLD: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn desired() -> Desired {
        let selector = Selector {
            match_labels: BTreeMap::from([("os".to_string(), "linux".to_string())]),
            match_expressions: Vec::new(),
        };
        Desired::new(
            "rev",
            [DesiredConfig::new(
                "linux",
                selector,
                0,
                RolloutPolicy::default(),
                ConfigHash::from_hex(DESIRED),
            )],
        )
    }

    /// A connected Linux agent with every capability, held by replica `b`.
    fn row(uid_byte: u8) -> FleetRow {
        FleetRow {
            instance_uid: hex::encode([uid_byte; 16]),
            labels: BTreeMap::from([("os".to_string(), "linux".to_string())]),
            capabilities: AgentCapabilities::AcceptsRemoteConfig as u64
                | AgentCapabilities::ReportsRemoteConfig as u64,
            connected: true,
            replica: Some("b".into()),
            live: true,
            last_seen: 1_000,
            ..FleetRow::default()
        }
    }

    fn status(row: FleetRow) -> (String, Option<String>) {
        let a = remote_agent(row, Some(&desired()), 5_000).expect("a uid");
        let v = a.view.expect("a view");
        (v.status, v.reason)
    }

    #[test]
    fn a_remote_agent_gets_the_status_its_own_replica_would_give() {
        let mut applied = row(1);
        applied.reported_hash = Some(DESIRED.into());
        applied.remote_config_status = Some("APPLIED".into());
        assert_eq!(status(applied).0, "synced");

        let mut failed = row(2);
        failed.reported_hash = Some(DESIRED.into());
        failed.remote_config_status = Some("FAILED".into());
        failed.remote_config_error = Some("boom".into());
        failed.failed_hashes = vec![DESIRED.into()];
        assert_eq!(status(failed), ("failed".into(), Some("boom".into())));

        let mut sent = row(3);
        sent.reported_hash = Some(OLD.into());
        sent.remote_config_status = Some("APPLIED".into());
        sent.sent_hash = Some(DESIRED.into());
        sent.sent_at = Some(4_000);
        assert_eq!(status(sent).0, "applying");

        let mut windows = row(4);
        windows.labels.insert("os".into(), "windows".into());
        assert_eq!(status(windows).0, "unmanaged");

        // Connected per the row but held by no replica (a replica retired meanwhile).
        let mut orphan = row(5);
        orphan.replica = None;
        orphan.live = false;
        let a = remote_agent(orphan, Some(&desired()), 5_000).expect("a uid");
        assert_eq!(a.view.map(|v| v.status).as_deref(), Some("disconnected"));
        assert_eq!(a.replica, None);
        assert!(!a.snapshot.connection.connected);

        // Nothing served: no status to compute.
        assert!(
            remote_agent(row(6), None, 5_000)
                .expect("a uid")
                .view
                .is_none()
        );
        // Not a UID gitamp wrote.
        let mut odd = row(7);
        odd.instance_uid = "not-hex".into();
        assert!(remote_agent(odd, Some(&desired()), 5_000).is_none());
    }

    #[test]
    fn merge_takes_each_agent_from_whoever_holds_it() {
        let remote = |uid: u8, replica: Option<&str>, last_seen: i64| {
            let mut r = row(uid);
            r.replica = replica.map(str::to_string);
            r.connected = replica.is_some();
            r.live = replica.is_some();
            r.last_seen = last_seen;
            remote_agent(r, Some(&desired()), 5_000).expect("a uid")
        };
        let local = |uid: u8, connected: bool, last_seen: i64| {
            let mut a = remote(uid, None, last_seen).snapshot;
            a.connection.connected = connected;
            a
        };
        // 1: here, connected (the table still says b); 2: left here, now held by b;
        // 3: left both, b saw it last; 4: left both, here saw it last; 5: here only; 6: b only.
        let locals = vec![
            local(1, true, 10),
            local(2, false, 10),
            local(3, false, 10),
            local(4, false, 30),
            local(5, false, 10),
        ];
        let remotes = vec![
            remote(1, Some("b"), 5),
            remote(2, Some("b"), 20),
            remote(3, None, 20),
            remote(4, None, 20),
            remote(6, Some("b"), 20),
        ];
        let view = FleetView::default();
        let merged = merge(&locals, &view, "a", &remotes);
        let got: Vec<(u8, bool, Option<&str>)> = merged
            .iter()
            .map(|e| (e.agent.uid[0], e.remote, e.replica))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, false, Some("a")),
                (2, true, Some("b")),
                (3, true, None),
                (4, false, None),
                (5, false, None),
                (6, true, Some("b")),
            ]
        );
        // Local agents this view has not planned are left out, as in `gitamp_agents`.
        let counts = counts(&merged);
        let want = BTreeMap::from([("disconnected".to_string(), 1), ("pending".to_string(), 2)]);
        assert_eq!(counts, want);
    }
}

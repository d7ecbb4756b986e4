//! The read-only routes: each copies what it needs out of [`AppState`] (an `ArcSwap` load or a
//! short mutex section, never held across `.await`) and shapes it into [`super::model`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gitamp_core::ConfigHash;
use gitamp_core::plan::selector::matches;
use gitamp_core::plan::{ReportedStatus, SyncStatus};
use gitamp_core::render::mask;
use gitamp_opamp::proto::AgentCapabilities;
use gitamp_opamp::report::{Health, RemoteState, Transport};
use gitamp_opamp::wire::uid_text;
use gitamp_opamp::{AgentSnapshot, Uid};
use serde::Deserialize;

use super::model::{
    AgentCounts, AgentDetail, AgentItem, Capabilities, CommitItem, ConfigurationAgent,
    ConfigurationDetail, ConfigurationItem, ConvergenceItem, DescriptionItem, DiagnosticItem,
    EventItem, LatencyItem, Page, RevisionItem, RevisionList, StatusResponse,
};
use super::query::{Paging, filter_value, filters};
use super::{Api, ApiError, selector};
use crate::server::convergence::{self, Convergence, Verdict};
use crate::server::events::EventKind;
use crate::server::state::{
    AgentView, DiagnosticView, EventView, FleetView, History, RevisionView, Serving,
};
use crate::source::CommitInfo;

/// Events shown in one agent's detail.
const AGENT_EVENTS: usize = 50;
/// Status of an agent the reconciler has not planned yet.
pub const UNKNOWN_STATUS: &str = "unknown";

/// The `status` filter: one status or a comma-separated list, spaces around the names allowed.
/// An empty value means no filter, as a form with an empty field would send; a name that is not
/// a status is an error (a typo must not pass for "no agent in that status"). The CLI checks
/// its `--status` with it too; `openapi.json` states the same rule as a pattern.
pub fn parse_statuses(text: &str) -> Result<Vec<&str>, String> {
    let mut statuses = Vec::new();
    for name in text
        .split(',')
        .map(|s| s.trim_matches(' '))
        .filter(|s| !s.is_empty())
    {
        if name != UNKNOWN_STATUS && SyncStatus::from_name(name).is_none() {
            let known: Vec<&str> = SyncStatus::ALL
                .iter()
                .map(|s| s.as_str())
                .chain([UNKNOWN_STATUS])
                .collect();
            return Err(format!(
                "unknown status `{name}`; expected one of {}",
                known.join(", ")
            ));
        }
        statuses.push(name);
    }
    Ok(statuses)
}

type ApiResult<T> = Result<T, ApiError>;

/// RFC 3339 in UTC; a time before the epoch or past year 9999 (a broken clock) shows as the epoch.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// Parse an agent id: UUID text in any common form (hyphenated, simple, braced, urn).
fn parse_uid(text: &str) -> Option<Uid> {
    uuid::Uuid::parse_str(text.trim())
        .ok()
        .map(|u| u.into_bytes())
}

/// Agents per status with every status present (zeros too), so clients and gauges see a stable
/// set of keys.
fn counts_with_zeros(counts: &BTreeMap<String, usize>) -> BTreeMap<String, usize> {
    let mut all: BTreeMap<String, usize> = SyncStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), 0))
        .collect();
    for (k, v) in counts {
        *all.entry(k.clone()).or_default() += v;
    }
    all
}

fn diagnostic_items(d: &[DiagnosticView]) -> Vec<DiagnosticItem> {
    d.iter()
        .map(|d| DiagnosticItem {
            code: d.code.clone(),
            name: d.name.clone(),
            severity: d.severity.clone(),
            file: d.location.file.clone(),
            line: d.location.line,
            column: d.location.column,
            message: d.message.clone(),
        })
        .collect()
}

/// A revision as the API shows it; `figures` its convergence and the configurations whose
/// rollout halted (for the served revision), when accepted.
fn revision_item(
    r: &RevisionView,
    figures: Option<(&Convergence, &[&str])>,
    commit: Option<&CommitInfo>,
) -> RevisionItem {
    RevisionItem {
        commit: commit.map(commit_item),
        revision: r.revision.clone(),
        at: rfc3339(r.at),
        accepted: r.accepted,
        errors: r.errors,
        warnings: r.warnings,
        diagnostics: diagnostic_items(&r.diagnostics),
        convergence: figures
            .filter(|_| r.accepted)
            .map(|(c, halted)| convergence_item(c, halted)),
    }
}

fn commit_item(c: &CommitInfo) -> CommitItem {
    CommitItem {
        subject: c.subject.clone(),
        author: c.author.clone(),
        authored_at: c.authored_at.map(rfc3339),
    }
}

fn convergence_item(c: &Convergence, halted: &[&str]) -> ConvergenceItem {
    let verdict = convergence::verdict(c, halted);
    let reason = match &verdict {
        Verdict::Failed { reason } => Some(reason.clone()),
        Verdict::Superseded { by } => Some(format!("superseded by {by} before it converged")),
        _ => None,
    };
    ConvergenceItem {
        state: verdict.as_str().to_string(),
        reason,
        targeted: c.targeted,
        applied: c.applied,
        failed: c.failed,
        rolled_back: c.rolled_back,
        waiting: c.waiting,
        latency: LatencyItem {
            samples: c.latency.count,
            p50_ms: c.latency.quantile_ms(0.5),
            p99_ms: c.latency.quantile_ms(0.99),
            max_ms: (c.latency.count > 0).then_some(c.latency.max_ms),
        },
        superseded_by: c.superseded_by.clone(),
    }
}

/// Revisions as the API shows them: the history's, each with its convergence.
fn revision_items<'a>(
    api: &Api,
    h: &History,
    revisions: impl Iterator<Item = &'a RevisionView>,
) -> Vec<RevisionItem> {
    let served = api
        .app
        .serving
        .load_full()
        .map(|s| s.revision.revision.clone());
    let view = api.app.view.load_full();
    let halted = view.halted_rollouts();
    revisions
        .map(|r| {
            let figures = h.convergence.get(&r.revision).map(|c| {
                let halted: &[&str] = if served.as_deref() == Some(r.revision.as_str()) {
                    &halted
                } else {
                    &[]
                };
                (c, halted)
            });
            revision_item(r, figures, h.commit_of(&r.revision))
        })
        .collect()
}

fn event_item(e: &EventView) -> EventItem {
    EventItem {
        at: rfc3339(e.at),
        agent: e.agent.clone(),
        kind: e.kind.clone(),
        message: e.message.clone(),
    }
}

pub(crate) async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// Ready once a revision is served: before that, agents would get nothing.
pub(crate) async fn readyz(State(api): State<Arc<Api>>) -> Response {
    if let Some(serving) = api.app.serving.load_full() {
        return Json(serde_json::json!({
            "status": "ready",
            "revision": serving.revision.revision,
        }))
        .into_response();
    }
    let reason = {
        let sync = api.app.sync.lock().unwrap_or_else(|p| p.into_inner());
        match (&sync.last_rejected, &sync.last_error) {
            (Some(r), _) => format!(
                "no accepted revision yet: revision {} was rejected with {} error(s)",
                r.revision, r.errors
            ),
            (None, Some(e)) => format!("no accepted revision yet: last fetch failed: {e}"),
            (None, None) => "no accepted revision yet: waiting for the first fetch".to_string(),
        }
    };
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
}

/// Prometheus text: the recorded series and the gauges read from the state as of now (the
/// latest plan, the served revision).
pub(crate) async fn metrics(State(api): State<Arc<Api>>) -> Response {
    // A replica counts the whole fleet too (`api::fleet`), when the database answers.
    let mut fleet = None;
    let mut headers = axum::http::HeaderMap::new();
    if let Some(cluster) = api.app.cluster.load_full() {
        let read = api.fleet.read(&api.app, &cluster).await;
        headers = read.headers();
        if let super::fleet::FleetRead::Whole(remote) = &read {
            let view = api.app.view.load_full();
            let local = api.app.fleet.briefs();
            let entries = super::fleet::merge(&local, &view, &cluster.id, &remote.agents);
            fleet = Some(super::fleet::counts(&entries));
        }
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    (headers, crate::telemetry::scrape(&api.app, fleet.as_ref())).into_response()
}

pub(crate) async fn status(
    State(api): State<Arc<Api>>,
) -> (axum::http::HeaderMap, Json<StatusResponse>) {
    let Json(mut status) = local_status(&api);
    // A replica adds the whole fleet's statuses (`api::fleet`), when the database answers.
    let mut headers = axum::http::HeaderMap::new();
    if let Some(member) = api.app.cluster.load_full()
        && let Some(cluster) = status.cluster.as_mut()
    {
        let read = api.fleet.read(&api.app, &member).await;
        headers = read.headers();
        if let super::fleet::FleetRead::Whole(remote) = &read {
            let plan = api.app.view.load_full();
            let local = api.app.fleet.briefs();
            let entries = super::fleet::merge(&local, &plan, &member.id, &remote.agents);
            cluster.fleet_by_status = Some(counts_with_zeros(&super::fleet::counts(&entries)));
        }
    }
    (headers, Json(status))
}

/// The status as this process knows it (a replica's `cluster` from its last heartbeat).
fn local_status(api: &Api) -> Json<StatusResponse> {
    let app = &api.app;
    let serving = app.serving.load_full();
    let view = app.view.load_full();
    let sync = app.sync.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (current_commit, rejected_commit) = {
        let h = app.history.lock().unwrap_or_else(|p| p.into_inner());
        let of = |rev: Option<&str>| rev.and_then(|r| h.commit_of(r)).map(commit_item);
        (
            of(serving.as_ref().map(|s| s.revision.revision.as_str())),
            of(sync.last_rejected.as_ref().map(|r| r.revision.as_str())),
        )
    };
    let now = SystemTime::now();
    Json(StatusResponse {
        source: sync.source,
        reference: sync.reference,
        sub_path: sync.sub_path,
        // The served revision is the truth; `sync.current_revision` may lag or lead it.
        current_revision: serving.as_ref().map(|s| s.revision.revision.clone()),
        current_commit,
        accepted_at: serving.as_ref().map(|s| rfc3339(s.accepted_at)),
        warnings: serving
            .as_ref()
            .map(|s| {
                let warnings: Vec<DiagnosticView> = s
                    .revision
                    .warnings
                    .iter()
                    .map(DiagnosticView::from)
                    .collect();
                diagnostic_items(&warnings)
            })
            .unwrap_or_default(),
        last_fetch: sync.last_fetch.map(rfc3339),
        last_fetch_duration_ms: sync.last_fetch_duration_ms,
        last_error: sync.last_error,
        consecutive_failures: sync.consecutive_failures,
        next_retry: sync.next_retry.map(rfc3339),
        last_rejected: sync.last_rejected.as_ref().map(|r| {
            let mut item = revision_item(r, None, None);
            item.commit = rejected_commit;
            item
        }),
        // Counted by the reconciler at its last plan (`view_computed_at`): copying the fleet
        // to count it cost seconds of CPU per request at 100k agents.
        agents: AgentCounts {
            total: app.fleet.len(),
            connected: view.connected,
            by_status: counts_with_zeros(&view.counts),
        },
        configurations: serving
            .as_ref()
            .map_or(0, |s| s.revision.catalog.configurations.len()),
        started_at: rfc3339(app.started_at),
        uptime_seconds: now
            .duration_since(app.started_at)
            .map_or(0, |d| d.as_secs()),
        view_computed_at: view.computed_at.map(rfc3339),
        cluster: app.cluster.load_full().map(|c| c.status()),
    })
}

/// Shape one agent for the list (and the head of its detail).
fn agent_item(a: &AgentSnapshot, view: Option<&AgentView>, secrets: &[String]) -> AgentItem {
    let uid = uid_text(&a.uid);
    let remote = a.remote_config_status.as_ref();
    let reported_hash = remote.and_then(|r| ConfigHash::from_slice(&r.hash));
    let remote_error = remote
        .filter(|r| !r.error.is_empty())
        .map(|r| mask::mask_text(&r.error, secrets));
    let reported_status = match remote.map(|r| r.status) {
        Some(RemoteState::Applied) => ReportedStatus::Applied,
        Some(RemoteState::Applying) => ReportedStatus::Applying,
        Some(RemoteState::Failed) => ReportedStatus::Failed {
            error: remote_error.clone().unwrap_or_default(),
        },
        Some(RemoteState::Unset) | None => ReportedStatus::Unset,
    };
    let remote_status = remote.map(|r| {
        match r.status {
            RemoteState::Unset => "UNSET",
            RemoteState::Applied => "APPLIED",
            RemoteState::Applying => "APPLYING",
            RemoteState::Failed => "FAILED",
        }
        .to_string()
    });
    let status = view
        .map_or(UNKNOWN_STATUS, |v| v.status.as_str())
        .to_string();
    let desired_hash = view.and_then(|v| v.desired_hash);
    let synced_hash = desired_hash.filter(|_| status == "synced" || status == "drifted");
    let caps = a.capabilities;
    let (heartbeat_interval_seconds, telemetry_destination) = super::throughput::agent_columns(a);
    AgentItem {
        replica: None,
        heartbeat_interval_seconds,
        telemetry_destination,
        instance_uid: uid.clone(),
        uid,
        labels: a
            .description
            .as_ref()
            .map(|d| d.labels())
            .unwrap_or_default(),
        status,
        configuration: view.and_then(|v| v.configuration.clone()),
        reason: view
            .and_then(|v| v.reason.as_deref())
            .map(|r| mask::mask_text(r, secrets)),
        desired_hash: desired_hash.map(|h| h.to_hex()),
        reported_hash: reported_hash.map(|h| h.to_hex()),
        remote_status,
        remote_error,
        reported_status,
        connected: a.connection.connected,
        transport: match a.connection.transport {
            Transport::Ws => "ws",
            Transport::Http => "http",
        }
        .to_string(),
        connected_since: a.connection.connected_since.map(rfc3339),
        last_seen: rfc3339(a.connection.last_seen),
        healthy: a.health.as_ref().map(|h| h.healthy),
        accepts_remote_config: caps & AgentCapabilities::AcceptsRemoteConfig as u64 != 0,
        reports_remote_config: caps & AgentCapabilities::ReportsRemoteConfig as u64 != 0,
        sent_hash: view.and_then(|v| v.sent).map(|(h, _)| h.to_hex()),
        sent_at: view.and_then(|v| v.sent).map(|(_, at)| at),
        failed_hashes: view
            .iter()
            .flat_map(|v| v.failed_hashes.iter().map(ConfigHash::to_hex))
            .collect(),
        synced_hash: synced_hash.map(|h| h.to_hex()),
        last_applied: view.and_then(|v| v.last_applied).map(|h| h.to_hex()),
        installed_version: view.and_then(|v| v.installed_version.clone()),
        desired_version: view
            .and_then(|v| v.upgrade.as_ref())
            .map(|u| u.desired_version.clone()),
        upgrade_status: view
            .and_then(|v| v.upgrade.as_ref())
            .map(|u| u.status.to_string()),
        upgrade_reason: view
            .and_then(|v| v.upgrade.as_ref())
            .and_then(|u| u.reason.as_deref())
            .map(|r| mask::mask_text(r, secrets)),
    }
}

fn secrets_now(api: &Api) -> (Option<Arc<Serving>>, Arc<Vec<String>>) {
    let serving = api.app.serving.load_full();
    let secrets = serving
        .as_ref()
        .map(|s| Arc::clone(&s.secrets))
        .unwrap_or_default();
    (serving, secrets)
}

/// The filters and order of `GET /api/v1/agents` (paging is [`Paging`]'s).
#[derive(Debug, Deserialize)]
pub(crate) struct AgentsQuery {
    /// One status or a comma-separated list.
    status: Option<String>,
    configuration: Option<String>,
    selector: Option<String>,
    /// Free text: a case-insensitive part of the agent's id, `service.name` or `host.name`.
    q: Option<String>,
    /// A sort key of [`AgentSort`], `-` in front for descending.
    sort: Option<String>,
}

/// The labels a person names an agent by, which the free-text filter `q` searches (with the id).
pub const NAME_LABELS: [&str; 2] = ["service.name", "host.name"];

/// What `GET /api/v1/agents` sorts by (`?sort=`); ties are broken by id, so pages stay stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentSort {
    Id,
    Name,
    Host,
    Status,
    Configuration,
    LastSeen,
}

impl AgentSort {
    /// Every key with its name, as `openapi.json`'s `sort` pattern lists them.
    pub const ALL: [(AgentSort, &'static str); 6] = [
        (AgentSort::Id, "id"),
        (AgentSort::Name, "name"),
        (AgentSort::Host, "host"),
        (AgentSort::Status, "status"),
        (AgentSort::Configuration, "configuration"),
        (AgentSort::LastSeen, "last_seen"),
    ];

    /// `name` or `-name` (descending); an unknown key is an error naming the known ones.
    pub fn parse(text: &str) -> Result<(AgentSort, bool), String> {
        let (descending, name) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        Self::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(k, _)| (*k, descending))
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|(_, n)| *n).collect();
                format!(
                    "unknown sort `{text}`; expected one of {} (a leading `-` sorts descending)",
                    known.join(", ")
                )
            })
    }
}

/// The sort key of one agent (`Id` needs none: the fleet's order is by id already).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SortKey {
    Text(Option<String>),
    Time(SystemTime),
}

fn label<'a>(a: &'a AgentSnapshot, key: &str) -> Option<&'a str> {
    let d = a.description.as_ref()?;
    d.identifying
        .get(key)
        .or_else(|| d.non_identifying.get(key))
        .map(String::as_str)
}

fn sort_key(sort: AgentSort, a: &AgentSnapshot, v: Option<&AgentView>) -> SortKey {
    match sort {
        AgentSort::Name => SortKey::Text(label(a, NAME_LABELS[0]).map(str::to_string)),
        AgentSort::Host => SortKey::Text(label(a, NAME_LABELS[1]).map(str::to_string)),
        AgentSort::LastSeen => SortKey::Time(a.connection.last_seen),
        AgentSort::Id | AgentSort::Status | AgentSort::Configuration => {
            SortKey::Text(view_sort_key(sort, v))
        }
    }
}

/// The sort keys the plan's view holds (status, configuration); `None` for the others.
fn view_sort_key(sort: AgentSort, v: Option<&AgentView>) -> Option<String> {
    match sort {
        AgentSort::Status => Some(v.map_or(UNKNOWN_STATUS, |v| v.status.as_str()).to_string()),
        AgentSort::Configuration => v.and_then(|v| v.configuration.clone()),
        _ => None,
    }
}

/// Whether the free text `needle` (lower case) is part of the agent's id or a naming label.
fn text_matches(a: &AgentSnapshot, needle: &str) -> bool {
    uid_text(&a.uid).contains(needle)
        || NAME_LABELS
            .iter()
            .filter_map(|k| label(a, k))
            .any(|v| v.to_lowercase().contains(needle))
}

/// Longest free-text filter: a name or a host, never a document.
pub const MAX_TEXT_FILTER: usize = 256;

/// The filters of one `GET /api/v1/agents`, checked.
struct AgentFilter<'q> {
    selector: Option<gitamp_core::catalog::model::Selector>,
    statuses: Option<Vec<&'q str>>,
    configuration: Option<&'q str>,
    /// Lower case.
    text: Option<String>,
}

impl AgentFilter<'_> {
    /// What the plan's view alone decides (status, configuration).
    fn planned(&self, v: Option<&AgentView>) -> bool {
        let status = v.map_or(UNKNOWN_STATUS, |v| v.status.as_str());
        if self.statuses.as_ref().is_some_and(|s| !s.contains(&status)) {
            return false;
        }
        self.configuration
            .is_none_or(|c| v.and_then(|v| v.configuration.as_deref()) == Some(c))
    }

    /// Whether the labels and the free text keep the agent (the view aside).
    fn reported(&self, a: &AgentSnapshot) -> bool {
        self.selector.as_ref().is_none_or(|sel| {
            let labels = a
                .description
                .as_ref()
                .map(|d| d.labels())
                .unwrap_or_default();
            matches(sel, &labels)
        }) && self.text.as_deref().is_none_or(|t| text_matches(a, t))
    }
}

pub(crate) async fn agents(
    State(api): State<Arc<Api>>,
    paging: Paging,
    q: Result<Query<AgentsQuery>, QueryRejection>,
) -> ApiResult<(axum::http::HeaderMap, Json<Page<AgentItem>>)> {
    let q = filters(q)?;
    let selector = filter_value(q.selector.as_deref())
        .map(selector::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let statuses = filter_value(q.status.as_deref())
        .map(parse_statuses)
        .transpose()
        .map_err(ApiError::bad_request)?
        .filter(|s| !s.is_empty());
    let configuration = filter_value(q.configuration.as_deref());
    let text = filter_value(q.q.as_deref())
        .map(|t| {
            if t.chars().count() > MAX_TEXT_FILTER {
                Err(ApiError::bad_request(format!(
                    "`q` is at most {MAX_TEXT_FILTER} characters"
                )))
            } else {
                Ok(t.trim().to_lowercase())
            }
        })
        .transpose()?
        .filter(|t| !t.is_empty());
    let (sort, descending) = filter_value(q.sort.as_deref())
        .map(AgentSort::parse)
        .transpose()
        .map_err(ApiError::bad_request)?
        .unwrap_or((AgentSort::Id, false));
    let filter = AgentFilter {
        selector,
        statuses,
        configuration,
        text,
    };
    if let Some(cluster) = api.app.cluster.load_full() {
        return Ok(fleet_agents(&api, &cluster, &filter, (sort, descending), paging).await);
    }
    let Paging { limit, offset } = paging;
    let view = api.app.view.load_full();
    let (_, secrets) = secrets_now(&api);
    let needs_reports = filter.selector.is_some()
        || filter.text.is_some()
        || matches!(
            sort,
            AgentSort::Name | AgentSort::Host | AgentSort::LastSeen
        );
    let (total, items) = if needs_reports {
        // Labels or times decide: every agent's brief (no effective configs: the bulk of a
        // snapshot), sorted by id, then filtered and ordered.
        let fleet = api.app.fleet.briefs();
        let matching = fleet
            .iter()
            .filter(|a| filter.planned(view.agents.get(&a.uid)) && filter.reported(a));
        let mut ordered: Vec<&AgentSnapshot> = if sort == AgentSort::Id {
            matching.collect()
        } else {
            // Stable: ties keep the id order.
            let mut keyed: Vec<(SortKey, &AgentSnapshot)> = matching
                .map(|a| (sort_key(sort, a, view.agents.get(&a.uid)), a))
                .collect();
            keyed.sort_by(|x, y| x.0.cmp(&y.0));
            keyed.into_iter().map(|(_, a)| a).collect()
        };
        if descending {
            ordered.reverse();
        }
        let items = paging
            .of(ordered.iter())
            .map(|a| agent_item(a, view.agents.get(&a.uid), &secrets))
            .collect();
        (ordered.len(), items)
    } else {
        // The view decides: ids only, and the page's agents read one by one. An agent that
        // left in between is left out of the page.
        let mut ordered: Vec<Uid> = api
            .app
            .fleet
            .uids()
            .into_iter()
            .filter(|u| filter.planned(view.agents.get(u)))
            .collect();
        if sort != AgentSort::Id {
            ordered.sort_by_cached_key(|u| view_sort_key(sort, view.agents.get(u)));
        }
        if descending {
            ordered.reverse();
        }
        let items = paging
            .of(ordered.iter())
            .filter_map(|u| api.app.fleet.brief(u))
            .map(|a| agent_item(&a, view.agents.get(&a.uid), &secrets))
            .collect();
        (ordered.len(), items)
    };
    Ok((
        axum::http::HeaderMap::new(),
        Json(Page {
            items,
            total,
            offset,
            limit,
        }),
    ))
}

/// `GET /api/v1/agents` on a replica: this replica's agents and the others' from the shared
/// table (`api::fleet`), filtered, ordered and paged alike; the headers say whether the
/// others' could be read.
async fn fleet_agents(
    api: &Api,
    cluster: &Arc<crate::server::cluster::Cluster>,
    filter: &AgentFilter<'_>,
    (sort, descending): (AgentSort, bool),
    paging: Paging,
) -> (axum::http::HeaderMap, Json<Page<AgentItem>>) {
    let read = api.fleet.read(&api.app, cluster).await;
    let remote = match &read {
        super::fleet::FleetRead::Whole(f) => f.agents.as_slice(),
        super::fleet::FleetRead::Unavailable(_) => &[],
    };
    let view = api.app.view.load_full();
    let (_, secrets) = secrets_now(api);
    let local = api.app.fleet.briefs();
    let entries = super::fleet::merge(&local, &view, &cluster.id, remote);
    let matching = entries
        .iter()
        .filter(|e| filter.planned(e.view) && filter.reported(e.agent));
    let mut ordered: Vec<&super::fleet::Entry> = if sort == AgentSort::Id {
        matching.collect()
    } else {
        let mut keyed: Vec<(SortKey, &super::fleet::Entry)> = matching
            .map(|e| (sort_key(sort, e.agent, e.view), e))
            .collect();
        keyed.sort_by(|x, y| x.0.cmp(&y.0));
        keyed.into_iter().map(|(_, e)| e).collect()
    };
    if descending {
        ordered.reverse();
    }
    let items = paging
        .of(ordered.iter())
        .map(|e| fleet_item(e, &secrets))
        .collect();
    (
        read.headers(),
        Json(Page {
            items,
            total: ordered.len(),
            offset: paging.offset,
            limit: paging.limit,
        }),
    )
}

/// One agent of the merged list, with the replica holding it.
fn fleet_item(e: &super::fleet::Entry, secrets: &[String]) -> AgentItem {
    let mut item = agent_item(e.agent, e.view, secrets);
    item.replica = e.replica.map(str::to_string);
    if e.remote {
        // Not stored: only the holding replica knows it.
        item.transport = "unknown".to_string();
    }
    item
}

/// Names of the capability bits set in `bits`.
fn capability_names(bits: u64) -> Vec<String> {
    (0..64)
        .map(|i| 1u64 << i)
        .filter(|b| bits & b != 0)
        .map(|b| {
            i32::try_from(b)
                .ok()
                .and_then(|v| AgentCapabilities::try_from(v).ok())
                .map(|c| {
                    let name = c.as_str_name();
                    name.strip_prefix("AgentCapabilities_")
                        .unwrap_or(name)
                        .to_string()
                })
                .unwrap_or_else(|| format!("bit{}", b.trailing_zeros()))
        })
        .collect()
}

pub(crate) async fn agent(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> ApiResult<(axum::http::HeaderMap, Json<AgentDetail>)> {
    let not_found = || ApiError::not_found(format!("no agent {id:?}"));
    let uid = parse_uid(&id).ok_or_else(not_found)?;
    let local = api.app.fleet.agent(&uid);
    let mut headers = axum::http::HeaderMap::new();
    let mut remote = None;
    if let Some(cluster) = api.app.cluster.load_full()
        && local.as_ref().is_none_or(|a| !a.connection.connected)
    {
        // Another replica may hold it, or only the shared table know it.
        let read = super::fleet::read_one(&api.app, &cluster, &uid).await;
        headers = read.headers();
        remote = match read {
            super::fleet::OneRead::Found(r) => Some(*r),
            super::fleet::OneRead::Missing | super::fleet::OneRead::Unavailable(_) => None,
        };
    }
    let (a, v, replica, held_elsewhere) = match (local, remote) {
        (Some(l), Some(r))
            if r.replica.is_none() && r.snapshot.connection.last_seen <= l.connection.last_seen =>
        {
            (l, None, None, false)
        }
        (_, Some(r)) => (r.snapshot, r.view, r.replica, true),
        (Some(l), None) => (l, None, None, false),
        (None, None) => return Err(not_found()),
    };
    let view = api.app.view.load_full();
    let v = if held_elsewhere {
        v.as_ref()
    } else {
        view.agents.get(&uid)
    };
    let (serving, secrets) = secrets_now(&api);
    let mut item = agent_item(&a, v, &secrets);
    if held_elsewhere {
        item.transport = "unknown".to_string();
        item.replica = replica;
    } else if a.connection.connected {
        item.replica = api.app.cluster.load_full().map(|c| c.id.clone());
    }

    let rendered = serving.as_ref().and_then(|s| {
        let name = v.and_then(|v| v.configuration.as_deref())?;
        s.revision.rendered.configurations.get(name).cloned()
    });
    let key = serving.as_ref().and_then(|s| {
        let name = v.and_then(|v| v.configuration.as_deref())?;
        s.revision
            .catalog
            .configurations
            .get(name)
            .map(|c| c.config_map_key().to_string())
    });
    let desired_config = rendered.as_ref().map(|r| r.masked_yaml.clone());
    let effective_config = a.effective_config.as_ref().map(|files| {
        // The entry our config went to, else the default key, else every file in key order.
        let chosen = key
            .as_deref()
            .and_then(|k| files.get(k))
            .or_else(|| files.get(""))
            .or_else(|| {
                (files.len() == 1)
                    .then(|| files.iter().next().map(|(_, f)| f))
                    .flatten()
            });
        let text = match chosen {
            Some(f) => String::from_utf8_lossy(&f.body).into_owned(),
            None => files
                .iter()
                .map(|(k, f)| format!("# {k}\n{}\n", String::from_utf8_lossy(&f.body)))
                .collect(),
        };
        mask::mask_effective(&text, desired_config.as_deref(), &secrets)
    });
    let config_diff = match (&desired_config, &effective_config) {
        (Some(d), Some(e)) => Some(
            similar::TextDiff::from_lines(d.as_str(), e.as_str())
                .unified_diff()
                .header("desired", "effective")
                .to_string(),
        ),
        _ => None,
    };
    let (differences, config_compare_error) = match (&desired_config, &effective_config) {
        (Some(d), Some(e)) => match (
            serde_saphyr::from_str::<serde_json::Value>(d),
            serde_saphyr::from_str::<serde_json::Value>(e),
        ) {
            (Ok(d), Ok(e)) => (Some(gitamp_core::render::effective::compare(&d, &e)), None),
            (_, Err(err)) => (
                None,
                Some(format!("the effective config is not YAML: {err}")),
            ),
            (Err(err), _) => (None, Some(format!("the desired config is not YAML: {err}"))),
        },
        _ => (None, None),
    };
    let config_same_meaning = differences
        .as_ref()
        .map(|d| !d.iter().any(|d| d.changes_meaning()));
    let events = {
        let h = api.app.history.lock().unwrap_or_else(|p| p.into_inner());
        h.events
            .of_agent(&item.uid)
            .take(AGENT_EVENTS)
            .map(event_item)
            .collect()
    };
    let health = a.health.as_ref().map(|h| {
        let mut h = Health::clone(h);
        mask_health(&mut h, &secrets);
        serde_json::to_value(h).unwrap_or(serde_json::Value::Null)
    });
    Ok((
        headers,
        Json(AgentDetail {
            description: a.description.as_ref().map(|d| DescriptionItem {
                identifying: strings(&d.identifying),
                non_identifying: strings(&d.non_identifying),
            }),
            capabilities: Capabilities {
                bits: a.capabilities,
                names: capability_names(a.capabilities),
            },
            health,
            sequence_num: a.sequence_num,
            desired_config,
            effective_config,
            config_diff,
            config_same_meaning,
            config_differences: differences,
            config_compare_error: config_compare_error.map(|e| mask::mask_text(&e, &secrets)),
            events,
            connection_settings: super::throughput::connection_settings(&a),
            throughput: super::throughput::agent(&api.app.fleet, &uid),
            agent: item,
        }),
    ))
}

/// Component errors may quote the config they failed on.
fn mask_health(h: &mut Health, secrets: &[String]) {
    h.last_error = mask::mask_text(&h.last_error, secrets);
    h.status = mask::mask_text(&h.status, secrets);
    for c in h.components.values_mut() {
        mask_health(c, secrets);
    }
}

fn configuration_item(
    serving: &Serving,
    view: &FleetView,
    name: &str,
) -> Option<ConfigurationItem> {
    let c = serving.revision.catalog.configurations.get(name)?;
    let rendered = serving.revision.rendered.configurations.get(name);
    let cv = view.configurations.get(name);
    let names = |refs: &[gitamp_core::catalog::model::ComponentRef]| {
        refs.iter().map(|r| r.name().to_string()).collect()
    };
    Some(ConfigurationItem {
        name: name.to_string(),
        description: c.metadata.description.clone(),
        priority: c.spec.priority,
        selector: serde_json::to_value(&c.spec.selector).unwrap_or_default(),
        hash: rendered.map(|r| r.hash.to_hex()),
        config_map_key: c.config_map_key().to_string(),
        rollout_policy: serde_json::to_value(c.rollout()).unwrap_or_default(),
        matched_agents: cv.map_or(0, |v| v.matched_agents),
        counts: counts_with_zeros(&cv.map(|v| v.counts.clone()).unwrap_or_default()),
        rollout: cv.and_then(|v| v.rollout.clone()),
        agent_version: c.spec.agent_version.clone(),
        upgrade: cv.and_then(|v| v.upgrade.clone()),
        sources: names(&c.spec.sources),
        processors: names(&c.spec.processors),
        destinations: names(&c.spec.destinations),
    })
}

pub(crate) async fn configurations(
    State(api): State<Arc<Api>>,
) -> Json<RevisionList<ConfigurationItem>> {
    let Some(serving) = api.app.serving.load_full() else {
        return Json(RevisionList {
            revision: None,
            items: Vec::new(),
        });
    };
    let view = api.app.view.load_full();
    let items = serving
        .revision
        .catalog
        .configurations
        .keys()
        .filter_map(|name| configuration_item(&serving, &view, name))
        .collect();
    Json(RevisionList {
        revision: Some(serving.revision.revision.clone()),
        items,
    })
}

pub(super) fn serving_or_404(api: &Api, name: &str) -> ApiResult<Arc<Serving>> {
    let serving = api
        .app
        .serving
        .load_full()
        .ok_or_else(|| ApiError::not_found("no revision is being served yet"))?;
    if !serving.revision.catalog.configurations.contains_key(name) {
        return Err(ApiError::not_found(format!("no configuration {name:?}")));
    }
    Ok(serving)
}

pub(crate) async fn configuration(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> ApiResult<Json<ConfigurationDetail>> {
    let serving = serving_or_404(&api, &name)?;
    let view = api.app.view.load_full();
    let item = configuration_item(&serving, &view, &name)
        .ok_or_else(|| ApiError::not_found(format!("no configuration {name:?}")))?;
    let mut agents: Vec<ConfigurationAgent> = view
        .agents
        .iter()
        .filter(|(_, v)| v.configuration.as_deref() == Some(name.as_str()))
        .map(|(uid, v)| ConfigurationAgent {
            uid: uid_text(uid),
            status: v.status.clone(),
        })
        .collect();
    agents.sort_by(|a, b| a.uid.cmp(&b.uid));
    let spec = serving
        .revision
        .catalog
        .configurations
        .get(&name)
        .and_then(|c| c.spec.telemetry.as_ref());
    Ok(Json(ConfigurationDetail {
        configuration: item,
        revision: serving.revision.revision.clone(),
        agents,
        telemetry: super::throughput::configuration_destination(&api.app.fleet, spec),
        throughput: super::throughput::configuration(&api.app.fleet, &view, &name),
    }))
}

/// The masked collector YAML of a configuration (never the form agents receive).
pub(crate) async fn rendered(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let serving = serving_or_404(&api, &name)?;
    let rendered = serving
        .revision
        .rendered
        .configurations
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("configuration {name:?} did not render")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/yaml; charset=utf-8"),
        )],
        rendered.masked_yaml.clone(),
    )
        .into_response())
}

/// Revisions seen, newest first, a page at a time.
pub(crate) async fn revisions(
    State(api): State<Arc<Api>>,
    paging: Paging,
) -> Json<Page<RevisionItem>> {
    let h = api.app.history.lock().unwrap_or_else(|p| p.into_inner());
    Json(Page {
        items: revision_items(&api, &h, paging.of(h.revisions.iter().rev())),
        total: h.revisions.len(),
        offset: paging.offset,
        limit: paging.limit,
    })
}

/// Shortest revision prefix `GET /api/v1/revisions/{revision}` takes.
pub const MIN_REVISION_PREFIX: usize = 4;

/// One revision by its id or a unique prefix of it (at least [`MIN_REVISION_PREFIX`]
/// characters), the newest sighting if it was seen more than once.
pub(crate) async fn revision(
    State(api): State<Arc<Api>>,
    Path(wanted): Path<String>,
) -> ApiResult<Json<RevisionItem>> {
    let wanted = wanted.to_ascii_lowercase();
    if wanted.chars().count() < MIN_REVISION_PREFIX {
        return Err(ApiError::bad_request(format!(
            "a revision is its id or at least {MIN_REVISION_PREFIX} of its first characters, \
             not {wanted:?}"
        )));
    }
    let h = api.app.history.lock().unwrap_or_else(|p| p.into_inner());
    let mut matches: Vec<&RevisionView> = h
        .revisions
        .iter()
        .rev()
        .filter(|r| r.revision.starts_with(&wanted))
        .collect();
    let Some(newest) = matches.first().copied() else {
        return Err(ApiError::not_found(format!(
            "no revision {wanted:?} among the last {} seen",
            h.revisions.len()
        )));
    };
    matches.retain(|r| r.revision != newest.revision);
    if let Some(other) = matches.first() {
        return Err(ApiError::bad_request(format!(
            "{wanted:?} names more than one revision ({} and {}); give more characters",
            newest.revision, other.revision
        )));
    }
    let item = revision_items(&api, &h, std::iter::once(newest)).pop();
    item.map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no revision {wanted:?}")))
}

/// The filters of `GET /api/v1/events` (paging is [`Paging`]'s).
#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    agent: Option<String>,
    kind: Option<String>,
}

/// The `kind` filter: an event kind's stable name; any other is an error naming the real ones
/// (as for `status`: a typo must not pass for "no such events").
fn parse_event_kind(name: &str) -> ApiResult<&'static str> {
    EventKind::ALL
        .iter()
        .map(|k| k.as_str())
        .find(|k| *k == name)
        .ok_or_else(|| {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            ApiError::bad_request(format!(
                "unknown event kind `{name}`; expected one of {}",
                known.join(", ")
            ))
        })
}

/// Recent events, newest first, a page at a time.
pub(crate) async fn events(
    State(api): State<Arc<Api>>,
    paging: Paging,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<Json<Page<EventItem>>> {
    let q = filters(q)?;
    let agent = filter_value(q.agent.as_deref())
        .map(|a| {
            parse_uid(a)
                .map(|u| uid_text(&u))
                .ok_or_else(|| ApiError::bad_request(format!("agent {a:?} is not a UUID")))
        })
        .transpose()?;
    let kind = filter_value(q.kind.as_deref())
        .map(parse_event_kind)
        .transpose()?;
    let h = api.app.history.lock().unwrap_or_else(|p| p.into_inner());
    let matching = || {
        h.events
            .newest_first()
            .filter(|e| agent.is_none() || e.agent == agent)
            .filter(|e| kind.is_none_or(|k| e.kind == k))
    };
    Ok(Json(Page {
        items: paging.of(matching()).map(event_item).collect(),
        total: matching().count(),
        offset: paging.offset,
        limit: paging.limit,
    }))
}

/// Attributes as the API's map.
fn strings(attributes: &gitamp_opamp::report::Attributes) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

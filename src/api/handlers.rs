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
use gitamp_core::plan::selector::matches;
use gitamp_core::plan::{ReportedStatus, SyncStatus};
use gitamp_core::render::mask;
use gitamp_core::{ConfigHash, Diagnostics};
use gitamp_opamp::proto::AgentCapabilities;
use gitamp_opamp::report::{Health, RemoteState, Transport};
use gitamp_opamp::wire::uid_text;
use gitamp_opamp::{AgentSnapshot, Uid};
use serde::Deserialize;

use super::model::{
    AgentCounts, AgentDetail, AgentItem, Capabilities, ConfigurationAgent, ConfigurationDetail,
    ConfigurationItem, DescriptionItem, DiagnosticItem, EventItem, Items, Page, RevisionItem,
    RevisionList, StatusResponse,
};
use super::{Api, ApiError, selector};
use crate::server::state::{AgentView, EventView, FleetView, RevisionView, Serving};

/// Default and largest page of `GET /api/v1/agents`.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;
/// Events shown in one agent's detail.
const AGENT_EVENTS: usize = 50;
/// Status of an agent the reconciler has not planned yet.
pub const UNKNOWN_STATUS: &str = "unknown";

/// The `status` filter: one status or a comma-separated list. An empty value means no filter, as
/// a form with an empty field would send; a name that is not a status is an error (a typo must
/// not pass for "no agent in that status"). The CLI checks its `--status` with it too.
pub fn parse_statuses(text: &str) -> Result<Vec<&str>, String> {
    let mut statuses = Vec::new();
    for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
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

fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))
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

fn diagnostic_items(d: &Diagnostics) -> Vec<DiagnosticItem> {
    d.iter()
        .map(|d| DiagnosticItem {
            code: d.code.to_string(),
            name: d.name.to_string(),
            severity: match d.severity {
                gitamp_core::Severity::Error => "error".into(),
                gitamp_core::Severity::Warning => "warning".into(),
            },
            file: d.location.file.to_string(),
            line: d.location.line,
            column: d.location.column,
            message: d.message.clone(),
        })
        .collect()
}

fn revision_item(r: &RevisionView) -> RevisionItem {
    RevisionItem {
        revision: r.revision.clone(),
        at: rfc3339(r.at),
        accepted: r.accepted,
        errors: r.errors,
        warnings: r.warnings,
        diagnostics: diagnostic_items(&r.diagnostics),
    }
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

/// Prometheus text; the per-status agent gauges are refreshed from the view first so a scrape
/// always sees the latest plan.
pub(crate) async fn metrics(State(api): State<Arc<Api>>) -> Response {
    let view = api.app.view.load();
    let counts = counts_with_zeros(&view.counts);
    crate::telemetry::agents_by_status(counts.iter().map(|(k, v)| (k.as_str(), *v)));
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        api.app.metrics.render(),
    )
        .into_response()
}

pub(crate) async fn status(State(api): State<Arc<Api>>) -> Json<StatusResponse> {
    let app = &api.app;
    let serving = app.serving.load_full();
    let view = app.view.load_full();
    let sync = app.sync.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let now = SystemTime::now();
    Json(StatusResponse {
        source: sync.source,
        reference: sync.reference,
        sub_path: sync.sub_path,
        // The served revision is the truth; `sync.current_revision` may lag or lead it.
        current_revision: serving.as_ref().map(|s| s.revision.revision.clone()),
        accepted_at: serving.as_ref().map(|s| rfc3339(s.accepted_at)),
        warnings: serving
            .as_ref()
            .map(|s| diagnostic_items(&s.revision.warnings))
            .unwrap_or_default(),
        last_fetch: sync.last_fetch.map(rfc3339),
        last_fetch_duration_ms: sync.last_fetch_duration_ms,
        last_error: sync.last_error,
        consecutive_failures: sync.consecutive_failures,
        next_retry: sync.next_retry.map(rfc3339),
        last_rejected: sync.last_rejected.as_ref().map(revision_item),
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
    AgentItem {
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

#[derive(Debug, Deserialize)]
pub(crate) struct AgentsQuery {
    /// One status or a comma-separated list.
    status: Option<String>,
    configuration: Option<String>,
    selector: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

pub(crate) async fn agents(
    State(api): State<Arc<Api>>,
    q: Result<Query<AgentsQuery>, QueryRejection>,
) -> ApiResult<Json<Page<AgentItem>>> {
    let q = query(q)?;
    let selector = q
        .selector
        .as_deref()
        .map(selector::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let statuses = q
        .status
        .as_deref()
        .map(parse_statuses)
        .transpose()
        .map_err(ApiError::bad_request)?
        .filter(|s| !s.is_empty());
    let configuration = q.configuration.as_deref().filter(|c| !c.is_empty());
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let offset = q.offset.unwrap_or(0);
    let view = api.app.view.load_full();
    let (_, secrets) = secrets_now(&api);
    let mut total = 0;
    let mut items = Vec::new();
    // Agents come sorted by UID, so pages are stable while the fleet does not change.
    for a in api.app.fleet.agents() {
        let v = view.agents.get(&a.uid);
        let status = v.map_or(UNKNOWN_STATUS, |v| v.status.as_str());
        if statuses.as_ref().is_some_and(|s| !s.contains(&status)) {
            continue;
        }
        if let Some(c) = configuration
            && v.and_then(|v| v.configuration.as_deref()) != Some(c)
        {
            continue;
        }
        if let Some(sel) = &selector {
            let labels = a
                .description
                .as_ref()
                .map(|d| d.labels())
                .unwrap_or_default();
            if !matches(sel, &labels) {
                continue;
            }
        }
        if total >= offset && items.len() < limit {
            items.push(agent_item(&a, v, &secrets));
        }
        total += 1;
    }
    Ok(Json(Page {
        items,
        total,
        offset,
        limit,
    }))
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
) -> ApiResult<Json<AgentDetail>> {
    let not_found = || ApiError::not_found(format!("no agent {id:?}"));
    let uid = parse_uid(&id).ok_or_else(not_found)?;
    let a = api.app.fleet.agent(&uid).ok_or_else(not_found)?;
    let view = api.app.view.load_full();
    let v = view.agents.get(&uid);
    let (serving, secrets) = secrets_now(&api);
    let item = agent_item(&a, v, &secrets);

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
            .or_else(|| (files.len() == 1).then(|| files.values().next()).flatten());
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
            .iter()
            .rev()
            .filter(|e| e.agent.as_deref() == Some(item.uid.as_str()))
            .take(AGENT_EVENTS)
            .map(event_item)
            .collect()
    };
    let health = a.health.as_ref().map(|h| {
        let mut h = Health::clone(h);
        mask_health(&mut h, &secrets);
        serde_json::to_value(h).unwrap_or(serde_json::Value::Null)
    });
    Ok(Json(AgentDetail {
        description: a.description.as_ref().map(|d| DescriptionItem {
            identifying: d.identifying.clone(),
            non_identifying: d.non_identifying.clone(),
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
        agent: item,
    }))
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
    Ok(Json(ConfigurationDetail {
        configuration: item,
        revision: serving.revision.revision.clone(),
        agents,
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

#[derive(Debug, Deserialize)]
pub(crate) struct LimitQuery {
    limit: Option<usize>,
}

pub(crate) async fn revisions(
    State(api): State<Arc<Api>>,
    q: Result<Query<LimitQuery>, QueryRejection>,
) -> ApiResult<Json<Items<RevisionItem>>> {
    let limit = query(q)?.limit.unwrap_or(usize::MAX);
    let h = api.app.history.lock().unwrap_or_else(|p| p.into_inner());
    let items = h
        .revisions
        .iter()
        .rev()
        .take(limit)
        .map(revision_item)
        .collect();
    Ok(Json(Items { items }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    agent: Option<String>,
    kind: Option<String>,
    limit: Option<usize>,
}

pub(crate) async fn events(
    State(api): State<Arc<Api>>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<Json<Items<EventItem>>> {
    let q = query(q)?;
    let agent = q
        .agent
        .as_deref()
        .map(|a| {
            parse_uid(a)
                .map(|u| uid_text(&u))
                .ok_or_else(|| ApiError::bad_request(format!("agent {a:?} is not a UUID")))
        })
        .transpose()?;
    let limit = q
        .limit
        .unwrap_or(DEFAULT_LIMIT)
        .clamp(1, crate::server::state::EVENT_HISTORY);
    let h = api.app.history.lock().unwrap_or_else(|p| p.into_inner());
    let items = h
        .events
        .iter()
        .rev()
        .filter(|e| agent.is_none() || e.agent == agent)
        .filter(|e| q.kind.as_deref().is_none_or(|k| e.kind == k))
        .take(limit)
        .map(event_item)
        .collect();
    Ok(Json(Items { items }))
}

//! The server's own telemetry: every metric name lives here, once (vector's "telemetry as
//! types" rule), so names are stable for dashboards and greppable.
//!
//! Metrics go through the `metrics` facade into a Prometheus recorder whose text the status API
//! serves at `/metrics`; no second HTTP listener. Two kinds of series:
//!
//! - **recorded** (counters, histograms, `gitamp_build_info`): the recorder keeps them. Every
//!   counter whose labels are a closed set is registered at 0 by [`install`], so `rate()` and
//!   `increase()` have a series from the first scrape;
//! - **read at each scrape** ([`StateMetrics`]): gauges derived from the server's state, whose
//!   label values come and go (the served revision, the repository's configurations). The
//!   recorder cannot forget a series, so these are rendered from the state as it is now, and a
//!   revision or configuration that is gone is gone from `/metrics` too.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use gitamp_core::plan::SyncStatus;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::server::events::EventKind;
use crate::server::state::AppState;

/// Always 1, labels `version`, `commit`, `commit_date` (`src/build_info.rs`): which gitamp runs.
pub const BUILD_INFO: &str = "gitamp_build_info";
/// Revisions seen, label `outcome` = accepted | rejected.
pub const REVISIONS: &str = "gitamp_revisions_total";
/// Fetch (poll) duration in seconds.
pub const FETCH_DURATION: &str = "gitamp_fetch_duration_seconds";
/// Failed fetches.
pub const FETCH_ERRORS: &str = "gitamp_fetch_errors_total";
/// Duration of one reconcile pass over the fleet, in seconds.
pub const RECONCILE_DURATION: &str = "gitamp_reconcile_duration_seconds";
/// Remote configs sent to agents: a frame carrying one queued on an agent's WebSocket, or a
/// reply to its poll carrying one (not a config merely handed to the registry).
pub const PUSHES: &str = "gitamp_config_pushes_total";
/// Seconds from sending a config to an agent to its APPLIED report.
pub const PUSH_TO_APPLIED: &str = "gitamp_push_to_applied_seconds";
/// Webhook requests, labels `provider` ([`WEBHOOK_PROVIDERS`]) and `outcome`
/// ([`WebhookResult`]).
pub const WEBHOOKS: &str = "gitamp_webhooks_total";
/// Seconds to load, validate and render one revision.
pub const COMPILE_DURATION: &str = "gitamp_compile_duration_seconds";
/// Events emitted, label `kind` (the bounded set of `server::events::EventKind` names).
pub const EVENTS: &str = "gitamp_events_total";
/// Counter: commit statuses written to the Git host, by outcome (`ok`, `error`).
pub const COMMIT_STATUSES: &str = "gitamp_commit_statuses_total";
/// Counter: notifications by endpoint and outcome (`sent`, `retried`, `failed`, `dropped`).
pub const NOTIFICATIONS: &str = "gitamp_notifications_total";

// Read at each scrape (see [`StateMetrics`]).

/// Agents per sync status (gauge, label `status`, every status present).
pub const AGENTS: &str = "gitamp_agents";
/// Agents a configuration selects, per sync status (labels `configuration`, `status`).
pub const CONFIGURATION_AGENTS: &str = "gitamp_configuration_agents";
/// 1 while a configuration's rollout is halted (label `configuration`), else 0.
pub const ROLLOUT_HALTED: &str = "gitamp_rollout_halted";
/// Always 1, label `revision`: the revision served; only the current one is exported.
pub const SERVED_REVISION: &str = "gitamp_served_revision_info";
/// 1 when the repository's tip is rejected ([`crate::server::state::tip_rejected`]), else 0.
pub const SOURCE_TIP_REJECTED: &str = "gitamp_source_tip_rejected";
/// When the source was last read without error (Unix seconds; 0: not yet).
pub const SYNC_LAST_SUCCESS: &str = "gitamp_sync_last_success_timestamp_seconds";
/// When the source was last read, with or without error (Unix seconds; 0: not yet).
pub const SYNC_LAST_ATTEMPT: &str = "gitamp_sync_last_attempt_timestamp_seconds";
/// Items per second the fleet's pipeline components handle, from agents' own metrics (labels
/// `kind`: receiver, processor, exporter; `measure`: accepted, refused, sent, failed).
pub const OWN_TELEMETRY_ITEMS: &str = "gitamp_own_telemetry_items_per_second";
/// Agents whose own metrics gitamp's receiver holds.
pub const OWN_TELEMETRY_AGENTS: &str = "gitamp_own_telemetry_agents";
/// Estimated memory the receiver's per-agent figures hold, in bytes.
pub const OWN_TELEMETRY_BYTES: &str = "gitamp_own_telemetry_memory_bytes";

/// Replicas: 1 on the replica that leads, else 0.
pub const CLUSTER_LEADER: &str = "gitamp_cluster_leader";
/// Replicas: live replicas (rows in the shared `replicas` table), as of the last heartbeat.
pub const CLUSTER_REPLICAS: &str = "gitamp_cluster_replicas";
/// Replicas: agents the shared database knows.
pub const CLUSTER_FLEET_AGENTS: &str = "gitamp_cluster_fleet_agents";
/// Replicas: agents connected to some live replica.
pub const CLUSTER_FLEET_CONNECTED: &str = "gitamp_cluster_fleet_connected_agents";
/// Replicas, the leader: seconds per read and step of the fleet-wide rollouts.
pub const CLUSTER_ROLLOUT_STEP: &str = "gitamp_cluster_rollout_step_seconds";
/// Replicas, the leader: agent rows read to step the fleet-wide rollouts.
pub const CLUSTER_ROWS_READ: &str = "gitamp_cluster_agent_rows_read_total";

/// The webhook providers, as the `provider` label spells them.
pub const WEBHOOK_PROVIDERS: [&str; 3] = ["github", "gitlab", "generic"];

/// What became of one webhook request (the `outcome` label of [`WEBHOOKS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookResult {
    /// The provider has no secret configured (404).
    NotConfigured,
    /// Malformed, or over the size limit.
    BadRequest,
    /// A bad signature or token.
    Unauthorized,
    /// A push to the tracked ref: the poller was woken.
    Wake,
    /// GitHub's `ping`.
    Pong,
    /// Authenticated, but another ref or event.
    Ignored,
}

impl WebhookResult {
    pub const ALL: [WebhookResult; 6] = [
        WebhookResult::NotConfigured,
        WebhookResult::BadRequest,
        WebhookResult::Unauthorized,
        WebhookResult::Wake,
        WebhookResult::Pong,
        WebhookResult::Ignored,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookResult::NotConfigured => "not_configured",
            WebhookResult::BadRequest => "bad_request",
            WebhookResult::Unauthorized => "unauthorized",
            WebhookResult::Wake => "wake",
            WebhookResult::Pong => "pong",
            WebhookResult::Ignored => "ignored",
        }
    }
}

/// The revision outcomes, as the `outcome` label of [`REVISIONS`] spells them.
const REVISION_OUTCOMES: [&str; 2] = ["accepted", "rejected"];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the process-wide Prometheus recorder (once; later calls return the same handle).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0,
                ])
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // A second install in the same process (tests) fails harmlessly: keep the handle.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            register_at_start();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        BUILD_INFO,
        "Always 1; labels name the version, commit and commit date of this gitamp."
    );
    describe_counter!(
        REVISIONS,
        "Revisions seen, by outcome (accepted, rejected)."
    );
    describe_histogram!(FETCH_DURATION, "Seconds per fetch of the repository.");
    describe_counter!(FETCH_ERRORS, "Failed fetches of the repository.");
    describe_histogram!(
        RECONCILE_DURATION,
        "Seconds per reconcile pass over the fleet."
    );
    describe_counter!(
        PUSHES,
        "Remote configs sent to agents (queued on a WebSocket or in a poll reply)."
    );
    describe_histogram!(
        PUSH_TO_APPLIED,
        "Seconds from sending a config to the agent's APPLIED report."
    );
    describe_counter!(WEBHOOKS, "Webhook requests by provider and outcome.");
    describe_histogram!(
        COMPILE_DURATION,
        "Seconds to load, validate and render a revision."
    );
    describe_counter!(EVENTS, "Events (as in /api/v1/events), by kind.");
    describe_counter!(
        COMMIT_STATUSES,
        "Commit status updates sent to the Git host, by outcome (ok, error: retried later)."
    );
    describe_counter!(
        NOTIFICATIONS,
        "Notifications by endpoint and outcome: sent, retried (an attempt failed), failed \
         (given up), dropped (the endpoint's queue was full)."
    );
    describe_gauge!(
        CLUSTER_LEADER,
        "Replicas: 1 on the replica that leads, else 0."
    );
    describe_gauge!(
        CLUSTER_REPLICAS,
        "Replicas: live replicas on the shared database."
    );
    describe_gauge!(
        CLUSTER_FLEET_AGENTS,
        "Replicas: agents the shared database knows."
    );
    describe_gauge!(
        CLUSTER_FLEET_CONNECTED,
        "Replicas: agents connected to some live replica."
    );
    describe_histogram!(
        CLUSTER_ROLLOUT_STEP,
        "Replicas, on the leader: seconds per read and step of the fleet-wide rollouts."
    );
    describe_counter!(
        CLUSTER_ROWS_READ,
        "Replicas, on the leader: agent rows read to step the fleet-wide rollouts."
    );
    // The OpAMP layer names and describes its own.
    gitamp_opamp::telemetry::describe();
}

/// The series that exist from the start: `gitamp_build_info`, and every counter whose label
/// values are a closed set at 0, so an alert on `increase()` sees the first increment.
fn register_at_start() {
    gauge!(
        BUILD_INFO,
        "version" => crate::build_info::VERSION,
        "commit" => crate::build_info::COMMIT,
        "commit_date" => crate::build_info::COMMIT_DATE
    )
    .set(1.0);
    for outcome in REVISION_OUTCOMES {
        counter!(REVISIONS, "outcome" => outcome).absolute(0);
    }
    counter!(FETCH_ERRORS).absolute(0);
    counter!(PUSHES).absolute(0);
    for provider in WEBHOOK_PROVIDERS {
        for outcome in WebhookResult::ALL {
            counter!(WEBHOOKS, "provider" => provider, "outcome" => outcome.as_str()).absolute(0);
        }
    }
    for kind in EventKind::ALL {
        counter!(EVENTS, "kind" => kind.as_str()).absolute(0);
    }
    gitamp_opamp::telemetry::register_at_start();
}

/// Replicas: whether this one leads.
pub fn cluster_leader(leader: bool) {
    gauge!(CLUSTER_LEADER).set(if leader { 1.0 } else { 0.0 });
}

/// Replicas: what the last heartbeat read of the fleet.
pub fn cluster_fleet(replicas: usize, agents: i64, connected: i64) {
    gauge!(CLUSTER_REPLICAS).set(replicas as f64);
    gauge!(CLUSTER_FLEET_AGENTS).set(agents.max(0) as f64);
    gauge!(CLUSTER_FLEET_CONNECTED).set(connected.max(0) as f64);
}

/// Replicas, the leader: one read and step of the fleet-wide rollouts.
pub fn cluster_rollout_step(duration: Duration, rows: usize) {
    histogram!(CLUSTER_ROLLOUT_STEP).record(duration.as_secs_f64());
    counter!(CLUSTER_ROWS_READ).increment(rows as u64);
}

/// A revision was accepted or rejected.
pub fn revision(accepted: bool) {
    let outcome = REVISION_OUTCOMES[usize::from(!accepted)];
    counter!(REVISIONS, "outcome" => outcome).increment(1);
}

pub fn fetch(duration: Duration, ok: bool) {
    histogram!(FETCH_DURATION).record(duration.as_secs_f64());
    if !ok {
        counter!(FETCH_ERRORS).increment(1);
    }
}

pub fn compile(duration: Duration) {
    histogram!(COMPILE_DURATION).record(duration.as_secs_f64());
}

pub fn reconcile(duration: Duration) {
    histogram!(RECONCILE_DURATION).record(duration.as_secs_f64());
}

pub fn pushes(n: u64) {
    counter!(PUSHES).increment(n);
}

pub fn push_to_applied(d: Duration) {
    histogram!(PUSH_TO_APPLIED).record(d.as_secs_f64());
}

/// One event of `kind` (an `EventKind` name: a bounded label set).
pub fn event(kind: &'static str) {
    counter!(EVENTS, "kind" => kind).increment(1);
}

/// One webhook request of `provider` (one of [`WEBHOOK_PROVIDERS`]).
pub fn webhook(provider: &'static str, outcome: WebhookResult) {
    counter!(WEBHOOKS, "provider" => provider, "outcome" => outcome.as_str()).increment(1);
}

/// The whole `/metrics` text: what the recorder holds, then [`StateMetrics`] as of now.
pub fn scrape(app: &AppState) -> String {
    let mut text = app.metrics.render();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    StateMetrics::of(app).render_into(&mut text);
    text
}

/// The gauges read from the server's state at each scrape (see the module's doc).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateMetrics {
    /// Agents per sync status over the fleet (every status of [`SyncStatus::ALL`]).
    pub agents: BTreeMap<&'static str, usize>,
    /// Per configuration of the served revision: agents per status (every status), and
    /// whether its rollout is halted.
    pub configurations: BTreeMap<String, (BTreeMap<&'static str, usize>, bool)>,
    pub served_revision: Option<String>,
    pub tip_rejected: bool,
    pub last_sync_success: Option<SystemTime>,
    pub last_sync_attempt: Option<SystemTime>,
    /// Fleet-wide items per second by (component kind, measure), every pair present, and how
    /// many agents reported (see `gitamp_opamp::otlp`).
    pub own_telemetry: (BTreeMap<(&'static str, &'static str), f64>, usize),
    /// [`OWN_TELEMETRY_BYTES`].
    pub own_telemetry_bytes: usize,
}

impl StateMetrics {
    /// Read the state as the readers see it (the served revision, the last plan's view, the
    /// source's health); never blocks the reconciler.
    pub fn of(app: &AppState) -> StateMetrics {
        let serving = app.serving.load_full();
        let view = app.view.load_full();
        let (tip_rejected, last_sync_success, last_sync_attempt) = {
            let sync = app.sync.lock().unwrap_or_else(|p| p.into_inner());
            (
                crate::server::state::tip_rejected(
                    sync.last_rejected.as_ref().map(|r| r.at),
                    serving.as_ref().map(|s| s.accepted_at),
                ),
                sync.last_success,
                // A successful read was attempted too (the embedded source's has no fetch time).
                sync.last_fetch.max(sync.last_success),
            )
        };
        StateMetrics {
            agents: every_status(&view.counts),
            configurations: view
                .configurations
                .iter()
                .map(|(name, c)| (name.clone(), (every_status(&c.counts), c.rollout_halted)))
                .collect(),
            served_revision: serving.as_ref().map(|s| s.revision.revision.clone()),
            tip_rejected,
            last_sync_success,
            last_sync_attempt,
            own_telemetry: own_telemetry_rates(&app.fleet),
            own_telemetry_bytes: app.fleet.throughput().approx_bytes(),
        }
    }

    /// Append these series as Prometheus text (each family with its HELP and TYPE).
    pub fn render_into(&self, out: &mut String) {
        family(out, AGENTS, "Agents by sync status.");
        for (status, n) in &self.agents {
            sample(out, AGENTS, &[("status", status)], *n as f64);
        }
        family(
            out,
            CONFIGURATION_AGENTS,
            "Agents a configuration of the served revision selects, by sync status.",
        );
        for (name, (counts, _)) in &self.configurations {
            for (status, n) in counts {
                let labels = [("configuration", name.as_str()), ("status", status)];
                sample(out, CONFIGURATION_AGENTS, &labels, *n as f64);
            }
        }
        family(
            out,
            ROLLOUT_HALTED,
            "1 while the configuration's rollout is halted (too many failures), else 0.",
        );
        for (name, (_, halted)) in &self.configurations {
            let labels = [("configuration", name.as_str())];
            sample(out, ROLLOUT_HALTED, &labels, f64::from(u8::from(*halted)));
        }
        family(
            out,
            SERVED_REVISION,
            "Always 1; the label names the revision served (absent until one is accepted).",
        );
        if let Some(revision) = &self.served_revision {
            sample(out, SERVED_REVISION, &[("revision", revision)], 1.0);
        }
        family(
            out,
            SOURCE_TIP_REJECTED,
            "1 when the repository's tip is rejected: the last rejected revision is newer than the served one.",
        );
        sample(
            out,
            SOURCE_TIP_REJECTED,
            &[],
            f64::from(u8::from(self.tip_rejected)),
        );
        family(
            out,
            SYNC_LAST_SUCCESS,
            "Unix time the source was last read without error (0: not yet).",
        );
        sample(
            out,
            SYNC_LAST_SUCCESS,
            &[],
            unix_seconds(self.last_sync_success),
        );
        family(
            out,
            SYNC_LAST_ATTEMPT,
            "Unix time the source was last read, with or without error (0: not yet).",
        );
        sample(
            out,
            SYNC_LAST_ATTEMPT,
            &[],
            unix_seconds(self.last_sync_attempt),
        );
        family(
            out,
            OWN_TELEMETRY_ITEMS,
            "Items per second the fleet's pipeline components handle, from agents' own metrics.",
        );
        for ((kind, measure), rate) in &self.own_telemetry.0 {
            let labels = [("kind", *kind), ("measure", *measure)];
            sample(out, OWN_TELEMETRY_ITEMS, &labels, *rate);
        }
        family(
            out,
            OWN_TELEMETRY_AGENTS,
            "Agents whose own metrics the OTLP receiver holds.",
        );
        sample(out, OWN_TELEMETRY_AGENTS, &[], self.own_telemetry.1 as f64);
        family(
            out,
            OWN_TELEMETRY_BYTES,
            "Estimated memory the OTLP receiver's per-agent figures hold, in bytes.",
        );
        sample(
            out,
            OWN_TELEMETRY_BYTES,
            &[],
            self.own_telemetry_bytes as f64,
        );
    }
}

/// The fleet's own-metrics rates summed by kind and measure (every pair, zeros too: a bounded
/// label set, no series per agent).
fn own_telemetry_rates(
    fleet: &gitamp_opamp::Fleet,
) -> (BTreeMap<(&'static str, &'static str), f64>, usize) {
    use gitamp_opamp::otlp::throughput::{Kind, Measure};
    let mut sums: BTreeMap<(&'static str, &'static str), f64> =
        [Kind::Receiver, Kind::Processor, Kind::Exporter]
            .iter()
            .flat_map(|k| Measure::ALL.iter().map(|m| ((k.as_str(), m.as_str()), 0.0)))
            .collect();
    for (_, kind, rates) in fleet.throughput().rates() {
        for m in Measure::ALL {
            if let Some(v) = rates.get(m) {
                *sums.entry((kind.as_str(), m.as_str())).or_default() += v;
            }
        }
    }
    (sums, fleet.throughput().len())
}

/// `counts` with every sync status present (zeros too), so a status's series never vanishes.
fn every_status(counts: &BTreeMap<String, usize>) -> BTreeMap<&'static str, usize> {
    SyncStatus::ALL
        .iter()
        .map(|s| (s.as_str(), counts.get(s.as_str()).copied().unwrap_or(0)))
        .collect()
}

fn unix_seconds(t: Option<SystemTime>) -> f64 {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A gauge family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

/// One sample line, label values escaped as the text format requires.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape_label_value(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Backslash, double quote and newline escaped (the Prometheus text format's rule).
fn escape_label_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label_value("a\nb"), r"a\nb");
    }

    #[test]
    fn state_series_render_with_help_and_only_what_is_there() {
        let mut state = StateMetrics {
            agents: every_status(&BTreeMap::from([("failed".to_string(), 2)])),
            configurations: BTreeMap::from([(
                "linux".to_string(),
                (every_status(&BTreeMap::new()), true),
            )]),
            served_revision: Some("abc".into()),
            tip_rejected: true,
            last_sync_success: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1500)),
            last_sync_attempt: None,
            own_telemetry: Default::default(),
            own_telemetry_bytes: 0,
        };
        let mut text = String::new();
        state.render_into(&mut text);
        for line in [
            "# HELP gitamp_agents Agents by sync status.",
            "# TYPE gitamp_agents gauge",
            "gitamp_agents{status=\"failed\"} 2",
            "gitamp_agents{status=\"synced\"} 0",
            "gitamp_configuration_agents{configuration=\"linux\",status=\"synced\"} 0",
            "gitamp_rollout_halted{configuration=\"linux\"} 1",
            "gitamp_served_revision_info{revision=\"abc\"} 1",
            "gitamp_source_tip_rejected 1",
            "gitamp_sync_last_success_timestamp_seconds 1.5",
            "gitamp_sync_last_attempt_timestamp_seconds 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
        state.served_revision = None;
        let mut text = String::new();
        state.render_into(&mut text);
        assert!(!text.contains("revision=\""), "{text}");
    }
}

/// What became of one notification (or one attempt, for `Retried`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyOutcome {
    Sent,
    Retried,
    Failed,
    Dropped,
}

impl NotifyOutcome {
    pub const ALL: [NotifyOutcome; 4] = [
        NotifyOutcome::Sent,
        NotifyOutcome::Retried,
        NotifyOutcome::Failed,
        NotifyOutcome::Dropped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyOutcome::Sent => "sent",
            NotifyOutcome::Retried => "retried",
            NotifyOutcome::Failed => "failed",
            NotifyOutcome::Dropped => "dropped",
        }
    }
}

pub fn notification(endpoint: &str, outcome: NotifyOutcome) {
    metrics::counter!(NOTIFICATIONS, "endpoint" => endpoint.to_string(), "outcome" => outcome.as_str())
        .increment(1);
}

/// Every outcome of `endpoint` at 0 from the start, so that `increase()` alerts have a series.
pub fn notifications_registered(endpoint: &str) {
    for outcome in NotifyOutcome::ALL {
        metrics::counter!(NOTIFICATIONS, "endpoint" => endpoint.to_string(), "outcome" => outcome.as_str())
            .increment(0);
    }
}

/// One commit status request and how it went.
pub fn commit_status(ok: bool) {
    metrics::counter!(COMMIT_STATUSES, "outcome" => if ok { "ok" } else { "error" }).increment(1);
}

/// Both outcomes at 0 from the start (when commit statuses are on).
pub fn commit_statuses_registered() {
    for outcome in ["ok", "error"] {
        metrics::counter!(COMMIT_STATUSES, "outcome" => outcome).increment(0);
    }
}

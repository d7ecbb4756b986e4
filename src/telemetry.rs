//! The server's own telemetry: every metric name lives here, once (vector's "telemetry as
//! types" rule), so names are stable for dashboards and greppable.
//!
//! Metrics go through the `metrics` facade into a Prometheus recorder whose text the status API
//! serves at `/metrics`; no second HTTP listener.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Agents per sync status (gauge, label `status`).
pub const AGENTS: &str = "gitamp_agents";
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
/// Webhook requests, labels `provider` and `outcome`.
pub const WEBHOOKS: &str = "gitamp_webhooks_total";
/// Seconds to load, validate and render one revision.
pub const COMPILE_DURATION: &str = "gitamp_compile_duration_seconds";
/// Events emitted, label `kind` (the bounded set of `server::events::EventKind` names).
pub const EVENTS: &str = "gitamp_events_total";
/// Counter: notifications by endpoint and outcome (`sent`, `retried`, `failed`, `dropped`).
pub const NOTIFICATIONS: &str = "gitamp_notifications_total";

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
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(AGENTS, "Agents by sync status.");
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
        NOTIFICATIONS,
        "Notifications by endpoint and outcome: sent, retried (an attempt failed), failed \
         (given up), dropped (the endpoint's queue was full)."
    );
    // The OpAMP layer names and describes its own.
    gitamp_opamp::telemetry::describe();
}

/// A revision was accepted or rejected.
pub fn revision(accepted: bool) {
    let outcome = if accepted { "accepted" } else { "rejected" };
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

pub fn webhook(provider: &'static str, outcome: &'static str) {
    counter!(WEBHOOKS, "provider" => provider, "outcome" => outcome).increment(1);
}

/// Publish the count of agents per status (every status, zeros included, so series don't vanish).
pub fn agents_by_status<'a>(counts: impl IntoIterator<Item = (&'a str, usize)>) {
    for (status, n) in counts {
        gauge!(AGENTS, "status" => status.to_string()).set(n as f64);
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

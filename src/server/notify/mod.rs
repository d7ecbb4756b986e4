//! Notifications: events worth a person's attention, sent to webhooks (`--notifications FILE`,
//! see [`config`]).
//!
//! Flow: [`AppState::emit`](super::state::AppState::emit) offers every event to the
//! [`Notifier`], which keeps the kinds some endpoint wants and queues them, without waiting,
//! on each such endpoint's own bounded queue; one task per endpoint delivers them in order, with
//! retries and backoff, so a slow or dead endpoint delays nobody else and never the reconciler.
//! A full queue drops the notification and counts it. A watcher turns a source that has failed
//! for longer than `sourceUnreachableAfter` into `source-unreachable` (and its recovery into
//! `source-recovered`), which no single event says.
//!
//! Events are masked before they are emitted ([`Masked`](super::events::Masked)), so no
//! notification can carry a secret of the repository.

pub mod config;
mod deliver;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::{Endpoint, EndpointType, NOTIFIABLE, NotifyConfig, NotifyConfigError};

use super::state::{AppState, EventView};
use crate::telemetry;

/// Notifications an endpoint may have waiting; more are dropped (and counted).
pub const QUEUE_PER_ENDPOINT: usize = 256;

/// One notification, as every endpoint's body is built from it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Notification {
    /// One of [`NOTIFIABLE`].
    pub kind: &'static str,
    pub at: SystemTime,
    /// The agent it is about (UUID text), if any.
    pub agent: Option<String>,
    pub message: String,
}

/// The kind a person is notified of for an event kind, if any: agent-level `failed` and
/// `rolled-back`, revision rejections, rollouts halted and completed.
pub fn notifiable_kind(event_kind: &str) -> Option<&'static str> {
    NOTIFIABLE
        .iter()
        .copied()
        .find(|k| *k == event_kind && !k.starts_with("source-"))
}

/// The emitting side: filters and queues, never waits.
pub struct Notifier {
    queues: Vec<(Endpoint, mpsc::Sender<Notification>)>,
}

impl Notifier {
    /// Start one delivery task per endpoint and the source watcher; they stop with `cancel`.
    pub fn start(
        config: NotifyConfig,
        app: Arc<AppState>,
        cancel: CancellationToken,
    ) -> Arc<Notifier> {
        let client = super::outbound::client();
        let mut queues = Vec::new();
        for endpoint in config.endpoints {
            telemetry::notifications_registered(&endpoint.name);
            let (tx, rx) = mpsc::channel(QUEUE_PER_ENDPOINT);
            tokio::spawn(deliver::run(
                endpoint.clone(),
                client.clone(),
                rx,
                app.clone(),
                cancel.clone(),
            ));
            queues.push((endpoint, tx));
        }
        let notifier = Arc::new(Notifier { queues });
        tokio::spawn(watch_source(
            notifier.clone(),
            app,
            config.source_unreachable_after,
            cancel,
        ));
        notifier
    }

    /// Queue a notification for every endpoint that wants its kind.
    pub fn send(&self, n: Notification) {
        for (endpoint, tx) in &self.queues {
            if !endpoint.events.contains(&n.kind) {
                continue;
            }
            if tx.try_send(n.clone()).is_err() {
                telemetry::notification(&endpoint.name, telemetry::NotifyOutcome::Dropped);
                tracing::warn!(endpoint = %endpoint.name, kind = n.kind, "Notification dropped: the endpoint's queue is full.");
            }
        }
    }

    /// An emitted event, if some endpoint wants its kind.
    pub fn offer(&self, event: &EventView) {
        if let Some(kind) = notifiable_kind(&event.kind) {
            self.send(Notification {
                kind,
                at: event.at,
                agent: event.agent.clone(),
                message: event.message.clone(),
            });
        }
    }
}

/// Watch the source's health: failing for longer than `after` sends `source-unreachable`
/// once; the next success sends `source-recovered`.
async fn watch_source(
    notifier: Arc<Notifier>,
    app: Arc<AppState>,
    after: Duration,
    cancel: CancellationToken,
) {
    let tick = (after / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
    let mut failing_since: Option<Instant> = None;
    let mut told = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = cancel.cancelled() => return,
        }
        let (error, source) = {
            let sync = app.sync.lock().unwrap_or_else(|p| p.into_inner());
            (sync.last_error.clone(), sync.source.clone())
        };
        match error {
            Some(error) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if !told && since.elapsed() >= after {
                    told = true;
                    notifier.send(Notification {
                        kind: "source-unreachable",
                        at: SystemTime::now(),
                        agent: None,
                        message: format!(
                            "the source {source} has failed for more than {}: {error}",
                            gitamp_core::duration::format_duration(after)
                        ),
                    });
                }
            }
            None => {
                if told {
                    notifier.send(Notification {
                        kind: "source-recovered",
                        at: SystemTime::now(),
                        agent: None,
                        message: format!("the source {source} answers again"),
                    });
                }
                failing_since = None;
                told = false;
            }
        }
    }
}

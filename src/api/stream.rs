//! `GET /api/v1/stream`: server-sent events saying "something changed" (what the web page
//! listens to, so that it re-fetches only what it shows instead of polling).
//!
//! Each stream is one small task comparing a [`Change`] (a few fields copied from the state,
//! never a walk over the fleet) every [`TICK`] and sending it when it differs, at most one per
//! [`MIN_GAP`] (coalesced: a burst of plans is one event). The task hands events over a
//! channel of [`QUEUE`] slots; a client that leaves them unread is dropped rather than
//! buffered for. At most [`MAX_STREAMS`] are open at once; the next gets a 503. Keep-alive
//! comments go out every [`KEEP_ALIVE`] so proxies and the page see the stream is alive.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

use super::handlers::rfc3339;
use super::{Api, ApiError};
use crate::server::state::AppState;

/// Streams open at once (every browser tab holds one).
pub const MAX_STREAMS: usize = 64;
/// How often a stream compares the state with what it last sent.
pub const TICK: Duration = Duration::from_millis(500);
/// Shortest time between two events on one stream: changes in between are coalesced.
pub const MIN_GAP: Duration = Duration::from_secs(1);
/// Events waiting for a client; a client that leaves them all unread is dropped.
pub const QUEUE: usize = 8;
/// Keep-alive comment interval.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The open-stream limit, shared by the routes of one router.
pub(crate) struct Streams {
    open: Arc<Semaphore>,
}

impl Streams {
    pub(crate) fn new(max: usize) -> Streams {
        Streams {
            open: Arc::new(Semaphore::new(max)),
        }
    }
}

/// One `change` event's data: enough for a page to tell what moved (and the fleet counts, so
/// an overview redraws its chart without asking).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Change {
    /// The served revision.
    revision: Option<String>,
    /// When the reconciler last planned: any agent or rollout may have moved.
    plan: Option<String>,
    /// The last fetch of the source (successful or not) and its error.
    fetch: Option<String>,
    fetch_error: Option<String>,
    /// The last rejected revision.
    rejected: Option<String>,
    /// The newest event's time and how many the history holds.
    events: Option<String>,
    event_count: usize,
    agents: usize,
    connected: usize,
    by_status: BTreeMap<String, usize>,
}

impl Change {
    /// What the state says now: atomic loads and two short lock sections.
    fn now(app: &AppState) -> Change {
        let serving = app.serving.load();
        let view = app.view.load();
        let (fetch, fetch_error, rejected) = {
            let sync = app.sync.lock().unwrap_or_else(|p| p.into_inner());
            (
                sync.last_fetch.map(rfc3339),
                sync.last_error.clone(),
                sync.last_rejected.as_ref().map(|r| r.revision.clone()),
            )
        };
        let (events, event_count) = {
            let h = app.history.lock().unwrap_or_else(|p| p.into_inner());
            (h.events.newest().map(|e| rfc3339(e.at)), h.events.len())
        };
        Change {
            revision: serving.as_ref().map(|s| s.revision.revision.clone()),
            plan: view.computed_at.map(rfc3339),
            fetch,
            fetch_error,
            rejected,
            events,
            event_count,
            agents: app.fleet.len(),
            connected: view.connected,
            by_status: view.counts.clone(),
        }
    }

    fn event(&self) -> SseEvent {
        SseEvent::default()
            .event("change")
            .json_data(self)
            .unwrap_or_else(|_| SseEvent::default().event("change").data("{}"))
    }
}

pub(crate) async fn stream(State(api): State<Arc<Api>>) -> Response {
    let Ok(permit) = Arc::clone(&api.streams.open).try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many open streams (at most {MAX_STREAMS}); close a page and retry"),
        )
        .into_response();
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(watch(Arc::clone(&api.app), tx, permit));
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// One stream's watcher: sends the first [`Change`] at once, then each new one (coalesced);
/// ends, releasing its slot, when the client goes away or stops reading.
async fn watch(app: Arc<AppState>, tx: mpsc::Sender<SseEvent>, _permit: OwnedSemaphorePermit) {
    let mut sent = Change::now(&app);
    let mut sent_at = Instant::now();
    if tx.try_send(sent.event()).is_err() {
        return;
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if tx.is_closed() {
            return;
        }
        if sent_at.elapsed() < MIN_GAP {
            continue;
        }
        let now = Change::now(&app);
        if now == sent {
            continue;
        }
        match tx.try_send(now.event()) {
            Ok(()) => {
                sent = now;
                sent_at = Instant::now();
            }
            // Full: QUEUE events unread, so the client is not reading; closed: it left.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gitamp_opamp::Fleet;

    use super::*;
    use crate::server::events::Event;

    fn state() -> Arc<AppState> {
        Arc::new(AppState::new(
            Arc::new(Fleet::new()),
            crate::telemetry::install(),
        ))
    }

    fn some_event(app: &AppState) {
        app.emit(Event::SyncRequested);
    }

    /// Changes are coalesced (one event per MIN_GAP however many happened), and a client that
    /// reads nothing is dropped once QUEUE events wait: its watcher ends and frees its slot.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_read_is_dropped_not_buffered_for() {
        let app = state();
        let streams = Streams::new(1);
        let permit = Arc::clone(&streams.open)
            .try_acquire_owned()
            .expect("a slot");
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let watcher = tokio::spawn(watch(Arc::clone(&app), tx, permit));
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_ok(), "the first change goes out at once");

        // Ten changes within one gap: one event.
        for _ in 0..10 {
            some_event(&app);
        }
        tokio::time::sleep(MIN_GAP + TICK).await;
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err(), "coalesced into one event");
        assert_eq!(
            streams.open.available_permits(),
            0,
            "the stream holds its slot"
        );

        // Now the client stops reading while things keep changing.
        for _ in 0..=QUEUE {
            some_event(&app);
            tokio::time::sleep(MIN_GAP + TICK).await;
        }
        tokio::time::sleep(MIN_GAP + TICK).await;
        assert!(watcher.is_finished(), "the watcher gave up on the client");
        assert_eq!(
            streams.open.available_permits(),
            1,
            "its slot is free again"
        );
        assert_eq!(rx.len(), QUEUE, "no more than QUEUE events were ever held");
    }
}

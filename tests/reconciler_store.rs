//! The reconciler over a real store, driven step by step or by its own run loop.
//!
//! What it writes to the store when a write is dropped:
//! Agent records carry the labels, description and health only when they may be new to the
//! store (a rollout rewrites every agent's record; re-serializing unchanged ones was a cost of
//! its own). So a dropped record must not lose them: the agent's next record carries them
//! again. The writer here runs on the test's own single thread, so its queue (one slot) fills
//! and stays full until the test awaits a flush: a real store (SQLite, then PostgreSQL), no mocks.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use gitamp::server::reconciler::Reconciler;
use gitamp::server::state::AppState;
use gitamp::store::{Store, StoreWriter, WriterOptions};
use gitamp_opamp::agent::{AgentOptions, ApplyPolicy, SimAgent};
use gitamp_opamp::frame::decode_frame;
use gitamp_opamp::outbox::outbox;
use gitamp_opamp::proto::{AgentToServer, ServerToAgent};
use gitamp_opamp::report::Transport;
use gitamp_opamp::session::{Connection, handle_message};
use gitamp_opamp::{Fleet, FleetEvent};
use support::postgres::TestDb;
use tokio::sync::broadcast;

fn drain(events: &mut broadcast::Receiver<FleetEvent>, reconciler: &mut Reconciler) {
    while let Ok(event) = events.try_recv() {
        reconciler.note_event(&event);
    }
}

async fn a_dropped_record_does_not_lose_the_agents_labels_and_description(db: TestDb) {
    let store = Arc::new(db.open().await);
    let options = WriterOptions {
        queue: 1,
        ..WriterOptions::default()
    };
    let (writer, _task) = StoreWriter::spawn(store.clone(), options);
    let fleet = Arc::new(Fleet::new());
    let mut events = fleet.subscribe();
    let app = Arc::new(AppState::new(fleet.clone(), gitamp::telemetry::install()));
    let mut reconciler = Reconciler::new(app, writer.clone(), HashMap::new(), BTreeMap::new());
    // The accepted revision's record takes the queue's one slot.
    let revision = gitamp_core::compile(&gitamp::embedded::snapshot()).unwrap();
    reconciler.accept(revision);

    let mut opts =
        AgentOptions::collector("checkout", "host-1", "staging").label("os.type", "linux");
    opts.policy = ApplyPolicy::Apply;
    let mut agent = SimAgent::new(opts);
    let (tx, pushes) = outbox(4);
    let mut conn = Connection::new(1, Transport::Ws, Some(tx));
    let exchange = |agent: &mut SimAgent, conn: &mut Connection, msg: AgentToServer| {
        let mut pending = vec![msg];
        while let Some(msg) = pending.pop() {
            pending.extend(agent.handle(&support::wire::exchange(&fleet, conn, msg)));
        }
    };

    // The agent connects; the plan pushes it a config and writes its first record, the one
    // with labels and description. The queue is full: that record is dropped.
    let report = agent.full_report();
    exchange(&mut agent, &mut conn, report);
    drain(&mut events, &mut reconciler);
    reconciler.reconcile();
    writer.flush().await.unwrap();
    assert!(
        store.load_agents().await.unwrap().is_empty(),
        "the record was dropped"
    );

    // It applies the push; the next plan writes its record (the applied hash) ...
    let push = pushes.try_recv().expect("a config was pushed");
    let push: ServerToAgent = decode_frame(push.to_bytes()).unwrap();
    for answer in agent.handle(&push) {
        exchange(&mut agent, &mut conn, answer);
    }
    drain(&mut events, &mut reconciler);
    reconciler.reconcile();
    writer.flush().await.unwrap();

    // ... and that record carries what the dropped one did.
    let stored = store.load_agents().await.unwrap();
    assert_eq!(stored.len(), 1);
    let labels = stored[0].labels.as_ref().unwrap();
    assert_eq!(
        labels.get("deployment.environment").map(String::as_str),
        Some("staging")
    );
    assert_eq!(labels.get("os.type").map(String::as_str), Some("linux"));
    assert_ne!(stored[0].description, Some(serde_json::Value::Null));
    assert!(stored[0].sent_hash.is_some());
}

/// A new revision does not wait out the pause that gathers fleet events: at 100,000 agents that
/// pause is two plans long (seconds), and the rollout would wait behind routine reports.
async fn a_new_revision_ends_the_wait_for_more_fleet_events(db: TestDb) {
    let store = Arc::new(db.open().await);
    let (writer, _task) = StoreWriter::spawn(store.clone(), WriterOptions::default());
    let fleet = Arc::new(Fleet::new());
    let events = fleet.subscribe();
    let app = Arc::new(AppState::new(fleet.clone(), gitamp::telemetry::install()));
    let mut reconciler =
        Reconciler::new(app.clone(), writer.clone(), HashMap::new(), BTreeMap::new());
    reconciler.accept(gitamp_core::compile(&gitamp::embedded::snapshot()).unwrap());
    // The pause after a fleet event would be 20 minutes.
    reconciler.assume_last_plan_cost(std::time::Duration::from_secs(600));
    let (sync_tx, sync_rx) = tokio::sync::mpsc::channel(4);
    let cancel = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(reconciler.run(sync_rx, events, cancel.clone()));

    // An agent connects: the loop starts gathering fleet events.
    let mut agent = SimAgent::new(AgentOptions::collector("checkout", "host-1", "staging"));
    let mut conn = Connection::new(1, Transport::Ws, None);
    handle_message(&fleet, &mut conn, agent.full_report());
    // Give the loop a moment to take that event and enter its pause. This is the one wall-clock
    // wait left here: the run loop shows nothing when it starts a pause (a debug line or a
    // counter there would let the test wait for it instead). If the revision came first, the
    // loop would serve it without ever pausing and the test would prove nothing.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    // A new revision arrives meanwhile; it is served without waiting for the pause to end.
    let mut snapshot = gitamp::embedded::snapshot();
    snapshot.revision = "second-revision".to_owned();
    sync_tx
        .send(gitamp::source::SyncEvent::Snapshot(
            snapshot,
            Default::default(),
        ))
        .await
        .unwrap();
    // Served well within the 20-minute pause: it did not wait for it.
    support::eventually(
        std::time::Duration::from_secs(30),
        "the new revision served without waiting for the fleet-event pause",
        async || {
            let serving = app.serving.load_full();
            let revision = serving.as_ref().map(|s| s.revision.revision.clone());
            if revision.as_deref() == Some("second-revision") {
                Ok(())
            } else {
                Err(format!("serving {revision:?}"))
            }
        },
    )
    .await;
    cancel.cancel();
    let _ = run.await;
}

both_backends!(
    a_dropped_record_does_not_lose_the_agents_labels_and_description(flavor = "current_thread"),
    a_new_revision_ends_the_wait_for_more_fleet_events(flavor = "multi_thread", worker_threads = 2),
);

//! The reconciler over a real store, driven step by step or by its own run loop.
//!
//! What it writes to the store when the writer's queue is full: agent records never wait for
//! that queue and are never dropped (they are coalesced per agent, the newest wins), so a plan
//! that writes thousands of them behind a slow commit loses none. The writer here runs on the
//! test's own single thread, so its queue (one slot) fills and stays full until the test
//! awaits a flush; a burst behind a stalled PostgreSQL (another session holds a lock the
//! writer's transaction waits for) shows the same at scale. Real stores (SQLite, then
//! PostgreSQL), no mocks.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection as _;

use gitamp::server::reconciler::Reconciler;
use gitamp::server::state::AppState;
use gitamp::store::{
    AgentRecord, PgStore, Store, StoreError, StoreOp, StoreOptions, StoreWriter, WriterOptions,
};
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

async fn a_full_queue_drops_no_agent_record_and_loses_no_labels(db: TestDb) {
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
    // with labels and description. The queue is full, yet that record is kept.
    let report = agent.full_report();
    exchange(&mut agent, &mut conn, report);
    drain(&mut events, &mut reconciler);
    reconciler.reconcile();
    assert!(
        writer
            .try_send(StoreOp::AppendEvent(Default::default()))
            .is_err(),
        "the queue is full (the revision's record takes its one slot)"
    );
    writer.flush().await.unwrap();
    let stored = store.load_agents().await.unwrap();
    assert_eq!(stored.len(), 1, "the first record was kept: {stored:?}");

    // It applies the push; the next plan writes its record (the applied hash) ...
    let push = pushes.try_recv().expect("a config was pushed");
    let push: ServerToAgent = decode_frame(push.to_bytes()).unwrap();
    for answer in agent.handle(&push) {
        exchange(&mut agent, &mut conn, answer);
    }
    drain(&mut events, &mut reconciler);
    reconciler.reconcile();
    writer.flush().await.unwrap();

    // ... and the stored record still carries what the first one did.
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

/// A burst of agent records while PostgreSQL is stalled: many times the writer's queue and its
/// batch size, none refused; the queue of other ops stays bounded; once the stall ends every
/// agent's newest record is stored, with the description an earlier one carried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_agent_records_behind_a_stalled_store_loses_none() {
    const AGENTS: usize = 300;
    const ROUNDS: i64 = 100;
    const QUEUE: usize = 64;
    let url = support::postgres::fresh_database("writer_burst").await;
    let store = Arc::new(
        PgStore::connect(&url, StoreOptions::default())
            .await
            .expect("open PostgreSQL"),
    );
    let options = WriterOptions {
        queue: QUEUE,
        max_ops: 1000,
        ..WriterOptions::default()
    };
    let (writer, _task) = StoreWriter::spawn(store.clone(), options);
    let record = |i: usize, round: i64| AgentRecord {
        instance_uid: format!("{i:032x}"),
        labels: (round == 0).then(|| BTreeMap::from([("n".to_string(), i.to_string())])),
        description: (round == 0).then(|| serde_json::json!({ "host": i })),
        last_seen: round,
        sent_hash: Some(format!("{round:064x}")),
        ..AgentRecord::default()
    };

    // Another session locks the agents table: the writer's next transaction waits for it.
    let mut locker = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::raw_sql("BEGIN; LOCK TABLE agents IN EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .expect("lock the agents table");
    writer
        .try_send(StoreOp::UpsertAgent(record(0, 0)))
        .expect("queued");
    writer.commit_now();
    let mut observer = sqlx::PgConnection::connect(&url).await.expect("connect");
    support::eventually(
        Duration::from_secs(60),
        "the writer's transaction waiting for the lock",
        async || {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE NOT granted \
                 AND relation = 'agents'::regclass",
            )
            .fetch_one(&mut observer)
            .await
            .map_err(|e| e.to_string())?;
            if waiting > 0 {
                Ok(())
            } else {
                Err("no waiting lock".to_string())
            }
        },
    )
    .await;

    // The burst: 30,000 records, 470 times the queue and 30 times the batch size.
    for round in 0..ROUNDS {
        for i in 0..AGENTS {
            writer
                .try_send(StoreOp::UpsertAgent(record(i, round)))
                .unwrap_or_else(|e| panic!("record {i} of round {round} refused: {e}"));
        }
    }
    // Other ops are still bounded: the writer is stuck, so the queue fills and refuses.
    let mut queued = 0;
    let refused = loop {
        match writer.try_send(StoreOp::AppendEvent(Default::default())) {
            Ok(()) => queued += 1,
            Err(e) => break e,
        }
        assert!(
            queued <= QUEUE,
            "{queued} events queued past the queue's {QUEUE}"
        );
    };
    assert!(matches!(refused, StoreError::Full), "{refused}");
    println!("{queued} events queued before the queue refused");

    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("unlock");
    writer.flush().await.expect("flush");
    let stored = store.load_agents().await.expect("load");
    assert_eq!(stored.len(), AGENTS, "every agent stored");
    for a in &stored {
        assert_eq!(
            a.last_seen,
            ROUNDS - 1,
            "{}: the newest record",
            a.instance_uid
        );
        assert_eq!(a.sent_hash, Some(format!("{:064x}", ROUNDS - 1)));
        assert!(
            a.description
                .as_ref()
                .is_some_and(|d| d["host"].is_number()),
            "{a:?}"
        );
        assert!(
            a.labels.as_ref().is_some_and(|l| l.contains_key("n")),
            "{a:?}"
        );
    }
}

both_backends!(
    a_full_queue_drops_no_agent_record_and_loses_no_labels(flavor = "current_thread"),
    a_new_revision_ends_the_wait_for_more_fleet_events(flavor = "multi_thread", worker_threads = 2),
);

//! The reconciler's timers under paused tokio time: it plans when a plan asks to look at an
//! agent again (the resend of a push that may have been lost), not on a fixed tick, and not
//! before. Real registry, real sessions, the real run loop; the store is an in-memory `Store`
//! (SQLite works on its own thread, which paused time would jump past).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gitamp::server::reconciler::Reconciler;
use gitamp::server::state::AppState;
use gitamp::store::{
    AgentRecord, Batch, ConfigRecord, EventRecord, RevisionRecord, RolloutRecord, Store,
    StoreError, StoreWriter, WriterOptions,
};
use gitamp_opamp::agent::{AgentOptions, SimAgent};
use gitamp_opamp::frame::decode_frame;
use gitamp_opamp::outbox::{OutboxReceiver, outbox};
use gitamp_opamp::proto::{AgentToServer, ServerToAgent};
use gitamp_opamp::report::Transport;
use gitamp_opamp::session::{Connection, handle_message};
use gitamp_opamp::{Fleet, FleetEvent};
use tokio_util::sync::CancellationToken;

/// A store that keeps every batch in memory.
#[derive(Default)]
struct MemStore {
    batches: Mutex<Vec<Batch>>,
}

impl Store for MemStore {
    async fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(batch.clone());
        Ok(())
    }
    async fn load_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        Ok(Vec::new())
    }
    async fn load_rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        Ok(Vec::new())
    }
    async fn load_configs(&self) -> Result<Vec<ConfigRecord>, StoreError> {
        Ok(Vec::new())
    }
    async fn last_accepted_revision(&self) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
    async fn revisions(&self, _limit: u32) -> Result<Vec<RevisionRecord>, StoreError> {
        Ok(Vec::new())
    }
    async fn recent_events(
        &self,
        _agent: Option<&str>,
        _limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        Ok(Vec::new())
    }
}

/// The embedded example repository served by a reconciler running its own loop.
struct Running {
    fleet: Arc<Fleet>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// The source's end, kept open (a closed source stops nothing, but a real one stays open).
    _source: tokio::sync::mpsc::Sender<gitamp::source::SyncEvent>,
}

impl Running {
    fn start() -> Running {
        let (writer, _task) =
            StoreWriter::spawn(Arc::new(MemStore::default()), WriterOptions::default());
        let fleet = Arc::new(Fleet::new());
        let app = Arc::new(AppState::new(fleet.clone(), gitamp::telemetry::install()));
        let mut reconciler = Reconciler::new(app, writer, HashMap::new(), BTreeMap::new());
        let revision =
            gitamp_core::compile(&gitamp::embedded::snapshot()).expect("example compiles");
        reconciler.accept(revision);
        let (source, sync_rx) = tokio::sync::mpsc::channel(1);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(reconciler.run(sync_rx, fleet.subscribe(), cancel.clone()));
        Running {
            fleet,
            cancel,
            task,
            _source: source,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// A collector the example's `staging` configuration selects, which never applies anything
/// (the test holds the configs it is sent).
fn silent_agent() -> SimAgent {
    SimAgent::new(
        AgentOptions::collector("checkout", "host-1", "staging").label("os.type", "linux"),
    )
}

/// Send `msg` and let the agent answer what the replies ask (the full report the server asks
/// a new agent for), as a real agent does; the configs replies carry are not applied.
fn exchange(fleet: &Fleet, conn: &mut Connection, agent: &mut SimAgent, msg: AgentToServer) {
    let mut queue = vec![msg];
    while let Some(msg) = queue.pop() {
        let reply = handle_message(fleet, conn, msg).encode();
        let mut reply: ServerToAgent = prost::Message::decode(reply).expect("a reply decodes");
        reply.remote_config = None;
        queue.extend(agent.handle(&reply));
    }
}

fn config_hash(frame: &ServerToAgent) -> Option<Vec<u8>> {
    frame.remote_config.as_ref().map(|c| c.config_hash.to_vec())
}

async fn next_push(rx: &OutboxReceiver, within: Duration) -> Option<ServerToAgent> {
    let push = tokio::time::timeout(within, rx.recv()).await.ok()?;
    Some(decode_frame(push.to_bytes()).expect("a push is a ServerToAgent frame"))
}

/// A WebSocket agent that never answers a push is sent it again once the resend interval (5
/// minutes) has passed on the same connection, and not a moment before: the reconciler sleeps
/// until the time the plan asked for.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_unanswered_push_is_resent_when_the_plan_asks_not_before() {
    let server = Running::start();
    let (tx, rx) = outbox(16);
    let mut conn = Connection::new(1, Transport::Ws, Some(tx));
    let mut agent = silent_agent();
    let hello = agent.full_report();
    exchange(&server.fleet, &mut conn, &mut agent, hello);

    let first = next_push(&rx, Duration::from_secs(5)).await;
    let first = first.expect("the config is pushed once the agent is planned");
    let hash = config_hash(&first).expect("the push carries a config");

    // The agent says nothing. Nine and a half minutes of resyncs and wakeups would re-push on
    // any tick; the plan says "not before five minutes after the send".
    assert!(
        next_push(&rx, Duration::from_secs(299)).await.is_none(),
        "nothing is resent before the resend interval"
    );
    let again = next_push(&rx, Duration::from_secs(2))
        .await
        .expect("resent once the interval has passed");
    assert_eq!(config_hash(&again), Some(hash.clone()));
    // Once per interval: the next one is five minutes later again.
    assert!(next_push(&rx, Duration::from_secs(290)).await.is_none());
    server.stop().await;
}

/// An HTTP agent is offered a config in the reply to its next poll, once: a poll that crossed
/// the reply (the agent built it before handling the config) gets nothing, and the config is
/// offered again only after 10 s, in case the reply was lost.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_polling_agent_is_offered_a_config_again_after_ten_seconds() {
    let server = Running::start();
    let mut events = server.fleet.subscribe();
    let mut conn = Connection::new(7, Transport::Http, None);
    let mut agent = silent_agent();
    let hello = agent.full_report();
    exchange(&server.fleet, &mut conn, &mut agent, hello);
    // The reconciler hands the config over (it waits for the next poll).
    support::eventually(
        Duration::from_secs(5),
        "the config is handed over",
        async || {
            server
                .fleet
                .agent(&uid_of(&server.fleet))
                .and_then(|a| a.pending_hash)
        },
    )
    .await;
    let mut poll = || handle_message(&server.fleet, &mut conn, agent.heartbeat());

    let reply = poll();
    let hash = reply
        .remote_config
        .as_ref()
        .map(|c| *c.hash())
        .expect("the next poll carries it");
    assert!(
        std::iter::from_fn(|| events.try_recv().ok())
            .any(|e| matches!(e, FleetEvent::ConfigSent(_, h, 7) if h == hash)),
        "the registry says it went out"
    );
    // A crossing poll gets nothing; neither does one 9 s later.
    assert!(poll().remote_config.is_none());
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(poll().remote_config.is_none());
    // After 10 s the plan offers it again, and the next poll carries it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = poll();
    assert_eq!(again.remote_config.map(|c| *c.hash()), Some(hash));
    server.stop().await;
}

fn uid_of(fleet: &Fleet) -> gitamp_opamp::Uid {
    fleet.agents().first().expect("the agent is registered").uid
}

//! Liveness under paused tokio time: an agent that reports heartbeats and goes silent is
//! disconnected once `liveness_factor × heartbeat_interval` has passed, not before; one that
//! keeps polling stays connected.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gitamp_opamp::proto::{AgentCapabilities as Cap, AgentToServer};
use gitamp_opamp::report::Transport;
use gitamp_opamp::server::{OpampSettings, spawn_sweeper};
use gitamp_opamp::session::{Connection, handle_message};
use gitamp_opamp::{Fleet, FleetEvent};

fn heartbeat(uid: [u8; 16], seq: u64) -> AgentToServer {
    AgentToServer {
        instance_uid: Bytes::copy_from_slice(&uid),
        sequence_num: seq,
        capabilities: Cap::ReportsStatus as u64 | Cap::ReportsHeartbeat as u64,
        ..Default::default()
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_silent_agent_is_disconnected_after_three_heartbeat_intervals_not_before() {
    let fleet = Arc::new(Fleet::new());
    let settings = OpampSettings {
        heartbeat_interval: Duration::from_secs(10),
        ..OpampSettings::default()
    };
    let sweeper = spawn_sweeper(&fleet, &settings);
    let mut events = fleet.subscribe();
    let (silent, talking) = ([1; 16], [2; 16]);
    let mut conn = Connection::new(1, Transport::Http, None);
    handle_message(&fleet, &mut conn, heartbeat(silent, 0));
    handle_message(&fleet, &mut conn, heartbeat(talking, 0));

    // 29 s: the silent one is still within 3 × 10 s; the other polls every 10 s.
    for seq in 1..=2 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        handle_message(&fleet, &mut conn, heartbeat(talking, seq));
    }
    tokio::time::sleep(Duration::from_secs(9)).await;
    let connected = |uid: &[u8; 16]| fleet.agent(uid).is_some_and(|a| a.connection.connected);
    assert!(connected(&silent), "not yet: 29 s of silence");
    handle_message(&fleet, &mut conn, heartbeat(talking, 3));

    // Past 30 s (and the sweeper's next round, every 5 s): gone, with its event.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(!connected(&silent), "36 s of silence: disconnected");
    assert!(connected(&talking), "a polling agent stays");
    let gone: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .filter_map(|e| match e {
            FleetEvent::Disconnected(uid) => Some(uid),
            _ => None,
        })
        .collect();
    assert_eq!(gone, vec![silent]);
    sweeper.abort();
}

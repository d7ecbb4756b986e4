//! SimAgent over WebSocket against the real gitamp-opamp router on 127.0.0.1:0.
//!
//! What these tests pin down, from the agent's side: a config set in the registry is pushed
//! at once (no poll needed); a reconnect with unchanged state brings nothing new; a sequence
//! gap is answered with ReportFullState once and converges; heartbeats keep an idle agent
//! alive through the liveness sweep; a FAILED config is not re-pushed.

mod agent_support;

use std::time::Duration;

use agent_support::{Server, collector_yaml, desired, eventually, quiesce, round_trip, uid};
use gitamp_opamp::OpampSettings;
use gitamp_opamp::agent::{
    AgentOptions, ApplyPolicy, ClientTransport, SimAgent, WsOptions, caps, spawn_agent,
};
use gitamp_opamp::proto::RemoteConfigStatuses;
use gitamp_opamp::report::RemoteState;
use gitamp_opamp::{Delivery, FleetEvent};

const T: Duration = Duration::from_secs(10);

fn ws() -> ClientTransport {
    ClientTransport::WebSocket(WsOptions::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_at_once_and_reconnect_brings_nothing_new() {
    let server = Server::start().await;
    // Heartbeats far apart: anything that arrives quickly was pushed by the server.
    let opts = AgentOptions {
        heartbeat_interval: Duration::from_secs(60),
        ..AgentOptions::collector("ws-agent", "ws-host-1", "test")
    };
    let agent = spawn_agent(SimAgent::new(opts), ws(), &server.ws_url());
    let id = uid(&agent.instance_uid());
    let snap = server
        .wait_agent(&id, T, "agent registered with description", |s| {
            s.description.is_some() && s.connection.connected
        })
        .await;
    let labels = snap.description.as_ref().unwrap().labels();
    assert_eq!(labels["service.name"], "ws-agent");
    assert_eq!(labels["host.name"], "ws-host-1");
    assert_eq!(labels["deployment.environment"], "test");
    assert_eq!(
        labels["service.instance.id"],
        uuid::Uuid::from_bytes(id).to_string()
    );
    assert_eq!(snap.capabilities, caps::FULL);

    quiesce(&server, &agent).await;
    let cfg = desired(&collector_yaml("v1"));
    let t_set = std::time::Instant::now();
    assert_ne!(
        Delivery::Unknown,
        server.fleet.deliver(&id, Some(cfg.clone()))
    );
    let st = agent
        .wait_for(Duration::from_secs(3), |s| s.applied_hash().is_some())
        .await
        .unwrap_or_else(|s| panic!("config not pushed at once: {s:#?}"));
    assert!(t_set.elapsed() < Duration::from_secs(3));
    assert_eq!(st.applied_hash().unwrap().as_ref(), cfg.hash());
    assert!(st.saw_status(cfg.hash(), RemoteConfigStatuses::Applying));
    let got = st.last_config.as_ref().unwrap();
    assert_eq!(
        got.config.config_map[""].body.as_ref(),
        collector_yaml("v1").as_bytes()
    );
    assert_eq!(got.config.config_map[""].content_type, "text/yaml");

    // The registry holds the acknowledgement and the effective config.
    let snap = server
        .wait_agent(&id, T, "APPLIED + effective config in registry", |s| {
            s.remote_config_status
                .as_ref()
                .is_some_and(|r| r.status == RemoteState::Applied && r.hash.as_ref() == cfg.hash())
                && s.effective_config.is_some()
        })
        .await;
    let eff = snap.effective_config.unwrap();
    assert_eq!(eff[""].body.as_ref(), collector_yaml("v1").as_bytes());

    // Drop the connection (no agent_disconnect) and come back.
    let before = agent.state();
    agent.reconnect();
    agent
        .wait_for(T, |s| s.connections >= 2 && s.connected)
        .await
        .unwrap_or_else(|s| panic!("did not reconnect: {s:#?}"));
    for _ in 0..3 {
        round_trip(&agent, T).await;
    }
    let after = agent
        .wait_for(T, |s| s.messages_received >= before.messages_received + 3)
        .await
        .unwrap_or_else(|s| panic!("no replies after reconnect: {s:#?}"));
    assert_eq!(
        after.remote_configs_received, 1,
        "config re-sent after reconnect: {after:#?}"
    );
    assert_eq!(after.redundant_configs_received, 0);
    assert_eq!(after.applied_hash().unwrap().as_ref(), cfg.hash());
    server
        .wait_agent(&id, T, "connected again", |s| s.connection.connected)
        .await;

    assert!(agent.stop(T).await);
    server
        .wait_agent(&id, T, "disconnected after agent_disconnect", |s| {
            !s.connection.connected
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_gap_asks_full_state_once_and_converges() {
    let server = Server::start().await;
    let opts = AgentOptions {
        first_sequence_num: 1,
        heartbeat_interval: Duration::from_secs(60),
        ..AgentOptions::collector("gap-agent", "gap-host", "test")
    };
    let agent = spawn_agent(SimAgent::new(opts), ws(), &server.ws_url());
    let id = uid(&agent.instance_uid());
    server
        .wait_agent(&id, T, "registered", |s| s.description.is_some())
        .await;
    quiesce(&server, &agent).await;
    let cfg = desired(&collector_yaml("gap"));
    server.fleet.deliver(&id, Some(cfg.clone()));
    agent
        .wait_for(T, |s| s.applied_hash().is_some())
        .await
        .unwrap_or_else(|s| panic!("not applied: {s:#?}"));
    // Let the acknowledgement settle in the registry.
    server
        .wait_agent(&id, T, "APPLIED in registry", |s| {
            s.remote_config_status
                .as_ref()
                .is_some_and(|r| r.status == RemoteState::Applied)
        })
        .await;

    let base = agent.state();
    agent.inject_sequence_gap();
    agent.heartbeat_now();
    let st = agent
        .wait_for(T, |s| {
            s.full_state_requests > base.full_state_requests
                && s.full_reports_sent > base.full_reports_sent
        })
        .await
        .unwrap_or_else(|s| panic!("gap not answered with ReportFullState: {s:#?}"));
    // Converges: more in-sequence heartbeats do not ask again.
    let settled = st.full_state_requests;
    for _ in 0..5 {
        round_trip(&agent, T).await;
    }
    let end = agent
        .wait_for(T, |s| s.messages_received >= st.messages_received + 5)
        .await
        .unwrap_or_else(|s| panic!("heartbeats unanswered: {s:#?}"));
    assert_eq!(
        end.full_state_requests, settled,
        "full state asked again: {end:#?}"
    );
    assert_eq!(end.remote_configs_received, 1, "config re-pushed: {end:#?}");
    let snap = server
        .wait_agent(&id, T, "registry at the agent's sequence number", |s| {
            Some(s.sequence_num) == end.last_sequence_num
        })
        .await;
    assert_eq!(
        snap.remote_config_status.as_ref().unwrap().hash.as_ref(),
        cfg.hash()
    );
    agent.stop(T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_idle_agent_alive() {
    // The server's own sweeper: expects a message every 200 ms, disconnects after 600 ms of
    // silence, sweeps every 100 ms.
    let server = Server::start_with(OpampSettings {
        heartbeat_interval: Duration::from_millis(200),
        liveness_factor: 3,
        ..OpampSettings::default()
    })
    .await;
    let opts = AgentOptions {
        heartbeat_interval: Duration::from_millis(150),
        ..AgentOptions::collector("hb-agent", "hb-host", "test")
    };
    let agent = spawn_agent(SimAgent::new(opts), ws(), &server.ws_url());
    let id = uid(&agent.instance_uid());
    server
        .wait_agent(&id, T, "registered", |s| s.connection.connected)
        .await;
    let mut events = server.fleet.subscribe();
    // Idle for over three liveness periods (600 ms each), counted in the agent's own
    // heartbeats (every 150 ms): heartbeats alone must keep it connected all along.
    let base = agent.state().heartbeats_sent;
    eventually(T, "14 more heartbeats, over 2 s", async || {
        assert!(
            server.fleet.agent(&id).unwrap().connection.connected,
            "swept although heartbeating"
        );
        let n = agent.state().heartbeats_sent;
        if n >= base + 14 {
            Ok(())
        } else {
            Err(format!("{} heartbeats", n - base))
        }
    })
    .await;
    while let Ok(ev) = events.try_recv() {
        assert!(
            !matches!(ev, FleetEvent::Disconnected(u) if u == id),
            "disconnected while heartbeating"
        );
    }
    let st = agent.state();
    assert!(st.heartbeats_sent >= 8, "too few heartbeats: {st:#?}");
    assert!(st.connected);
    assert_eq!(st.connections, 1);
    assert_eq!(st.transport_errors, 0);
    assert!(agent.stop(T).await);
    server
        .wait_agent(&id, T, "disconnected after agent_disconnect", |s| {
            !s.connection.connected
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_config_is_not_pushed_again() {
    let server = Server::start().await;
    let opts = AgentOptions {
        policy: ApplyPolicy::default(),
        // Heartbeats by hand, after the FAILED is in the registry: a timed heartbeat could
        // cross the push on the wire (see the fleet test below) and blur what is tested.
        heartbeat_interval: Duration::from_secs(60),
        ..AgentOptions::collector("fail-agent", "fail-host", "test")
    };
    let agent = spawn_agent(SimAgent::new(opts), ws(), &server.ws_url());
    let id = uid(&agent.instance_uid());
    server
        .wait_agent(&id, T, "registered", |s| s.description.is_some())
        .await;
    quiesce(&server, &agent).await;
    let bad = desired("receivers: {}\n# gitamp-test-fail\n");
    server.fleet.deliver(&id, Some(bad.clone()));
    let st = agent
        .wait_for(T, |s| {
            s.saw_status(bad.hash(), RemoteConfigStatuses::Failed)
        })
        .await
        .unwrap_or_else(|s| panic!("no FAILED: {s:#?}"));
    assert!(
        st.current_status
            .as_ref()
            .unwrap()
            .error_message
            .contains("marker")
    );
    server
        .wait_agent(&id, T, "FAILED in registry", |s| {
            s.remote_config_status
                .as_ref()
                .is_some_and(|r| r.status == RemoteState::Failed && !r.error.is_empty())
        })
        .await;
    // Ten heartbeats: the failed config must not come back.
    let before = agent.state().messages_received;
    for _ in 0..10 {
        round_trip(&agent, T).await;
    }
    let st = agent
        .wait_for(T, |s| s.messages_received >= before + 10)
        .await
        .unwrap_or_else(|s| panic!("heartbeats unanswered: {s:#?}"));
    assert_eq!(
        st.remote_configs_received, 1,
        "failed config re-pushed: {st:#?}"
    );

    // A new desired config goes out and applies.
    let good = desired(&collector_yaml("fixed"));
    server.fleet.deliver(&id, Some(good.clone()));
    let st = agent
        .wait_for(T, |s| {
            s.applied_hash().is_some_and(|h| h.as_ref() == good.hash())
        })
        .await
        .unwrap_or_else(|s| panic!("fixed config not applied: {s:#?}"));
    assert_eq!(st.remote_configs_received, 2);
    agent.stop(T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_assigned_uid_is_adopted() {
    let server = Server::start().await;
    // 1. The agent asks for a uid (RequestInstanceUid) and switches to the one it gets.
    let opts = AgentOptions {
        request_instance_uid: true,
        heartbeat_interval: Duration::from_secs(60),
        ..AgentOptions::collector("uid-agent", "uid-host", "test")
    };
    // Read the temporary uid before the agent runs: the switch may come at once.
    let sim = SimAgent::new(opts);
    let temp = sim.instance_uid().clone();
    let agent = spawn_agent(sim, ws(), &server.ws_url());
    let st = agent
        .wait_for(T, |s| s.uid_changes == 1)
        .await
        .unwrap_or_else(|s| panic!("no agent_identification: {s:#?}"));
    let id = uid(&st.instance_uid);
    assert_ne!(st.instance_uid, temp);
    // The server files the requesting message under the new uid; the agent's next message
    // (a full report under the new uid) updates service.instance.id, which follows the uid
    // here (unlike opamp-go, opamp-go #458).
    let want = uuid::Uuid::from_bytes(id).to_string();
    server
        .wait_agent(&id, T, "description under the assigned uid", |s| {
            s.description
                .as_ref()
                .is_some_and(|d| d.identifying.get("service.instance.id") == Some(&want))
        })
        .await;
    assert!(server.fleet.agent(&uid(&temp)).is_none());
    // Further messages use the new uid and no longer ask for one.
    round_trip(&agent, T).await;
    assert_eq!(agent.state().uid_changes, 1);

    // 2. A clone with the same uid but another description, live on another connection,
    //    is given a fresh uid by the server and adopts it.
    let clone = spawn_agent(
        SimAgent::new(AgentOptions {
            instance_uid: Some(id),
            heartbeat_interval: Duration::from_secs(60),
            ..AgentOptions::collector("uid-agent", "cloned-vm", "test")
        }),
        ws(),
        &server.ws_url(),
    );
    let cst = clone
        .wait_for(T, |s| s.uid_changes == 1)
        .await
        .unwrap_or_else(|s| panic!("duplicate uid not reassigned: {s:#?}"));
    let cid = uid(&cst.instance_uid);
    assert_ne!(cid, id);
    let csnap = server
        .wait_agent(&cid, T, "clone under its new uid", |s| {
            s.description.is_some()
        })
        .await;
    assert_eq!(
        csnap.description.unwrap().non_identifying["host.name"],
        "cloned-vm"
    );
    // The original keeps its uid and description.
    let orig = server.fleet.agent(&id).unwrap();
    assert_eq!(
        orig.description.unwrap().non_identifying["host.name"],
        "uid-host"
    );
    agent.stop(T).await;
    clone.stop(T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_from_several_source_addresses_gets_one_push_each() {
    use gitamp_opamp::agent::{FleetTransport, SimFleetOptions, run_fleet};
    use std::net::{IpAddr, Ipv4Addr};

    const N: usize = 30;
    let server = Server::start().await;
    let ips: Vec<IpAddr> = (2..5)
        .map(|d| IpAddr::V4(Ipv4Addr::new(127, 0, 0, d)))
        .collect();
    let fleet = run_fleet(
        N,
        FleetTransport::WebSocket { source_ips: ips },
        &server.http_url(), // turned into ws:// by run_fleet
        SimFleetOptions {
            ramp_per_sec: 300.0,
            heartbeat_interval: Duration::from_millis(300),
            ..SimFleetOptions::default()
        },
    )
    .unwrap();
    assert!(fleet.http_pool.is_none());
    fleet
        .wait_all(T, |s| s.connected && s.messages_received > 0)
        .await
        .unwrap_or_else(|n| panic!("{n} agents not connected"));
    assert_eq!(fleet.started(), N);
    server
        .wait_fleet(T, "all registered", |a| {
            a.len() == N && a.iter().all(|s| s.description.is_some())
        })
        .await;
    let cfg = desired(&collector_yaml("fleet"));
    for h in &fleet.agents {
        // As a plan would: a server awaiting an agent's full report sends it nothing (the
        // registry drops the config) and decides again once the report is in.
        let started = std::time::Instant::now();
        while let gitamp_opamp::Delivery::Dropped = server
            .fleet
            .deliver(&uid(&h.instance_uid()), Some(cfg.clone()))
        {
            assert!(started.elapsed() < T, "the agent's full report never came");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    fleet
        .wait_all(T, |s| {
            s.applied_hash().is_some_and(|h| h.as_ref() == cfg.hash())
        })
        .await
        .unwrap_or_else(|n| panic!("{n} agents did not apply"));
    // Regression: a heartbeat that crosses the push on the wire (still reporting the old
    // hash) used to be answered with the same config again. A WebSocket delivers in order, so
    // the fleet never offers one hash twice on one connection: exactly one copy each. Checked
    // once every agent's next heartbeat is answered, so a second copy would have arrived.
    for h in &fleet.agents {
        round_trip(h, T).await;
    }
    assert_eq!(
        fleet.count(|s| s.remote_configs_received == 1 && s.redundant_configs_received == 0),
        N,
        "every agent received the config exactly once"
    );
    assert_eq!(fleet.count(|s| s.transport_errors == 0), N);
    assert_eq!(fleet.stop_all(T).await, N);
}

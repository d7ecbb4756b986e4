//! SimAgents over plain HTTP against the real router: gzip both ways, many agents sharing
//! one keep-alive connection (as agents behind one proxy would), configs delivered on the next
//! poll and acknowledged exactly once.

mod agent_support;

use std::collections::HashSet;
use std::time::Duration;

use agent_support::{Server, collector_yaml, desired, eventually, uid};
use gitamp_opamp::agent::{FleetTransport, SimFleetOptions, caps, run_fleet};
use gitamp_opamp::report::{RemoteState, Transport};

const N: usize = 24;
const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_agents_one_gzip_keepalive_connection() {
    // The server offers its heartbeat interval as the agents' poll interval (they honour it,
    // as opamp-go does): 1 s keeps this test's polls quick.
    let server = Server::start_with(gitamp_opamp::OpampSettings {
        heartbeat_interval: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let fleet = run_fleet(
        N,
        FleetTransport::Http {
            connections: 1,
            gzip: true,
        },
        &server.http_url(),
        SimFleetOptions {
            heartbeat_interval: Duration::from_millis(200),
            ramp_per_sec: 200.0,
            first_sequence_num: 1,
            environment: "http-test".to_owned(),
            ..SimFleetOptions::default()
        },
    )
    .unwrap();
    let pool = fleet.http_pool.clone().unwrap();

    let all = server
        .wait_fleet(T, "all agents registered with descriptions", |a| {
            a.len() == N && a.iter().all(|s| s.description.is_some())
        })
        .await;
    let hosts: HashSet<_> = all
        .iter()
        .map(|s| s.description.as_ref().unwrap().labels()["host.name"].clone())
        .collect();
    assert_eq!(hosts.len(), N, "host.name must be distinct");
    for s in &all {
        assert_eq!(s.connection.transport, Transport::Http);
        assert_eq!(s.capabilities, caps::FULL);
        let l = s.description.as_ref().unwrap().labels();
        assert_eq!(l["deployment.environment"], "http-test");
        assert_eq!(l["service.name"], "otelcol-sim");
    }

    // Half get config A, half config B.
    let a = desired(&collector_yaml("A"));
    let b = desired(&collector_yaml("B"));
    for (i, h) in fleet.agents.iter().enumerate() {
        let cfg = if i.is_multiple_of(2) { &a } else { &b };
        assert_ne!(
            server
                .fleet
                .deliver(&uid(&h.instance_uid()), Some(cfg.clone())),
            gitamp_opamp::Delivery::Unknown
        );
    }
    fleet
        .wait_all(T, |s| s.applied_hash().is_some())
        .await
        .unwrap_or_else(|missing| panic!("{missing} agents did not apply"));
    for (i, h) in fleet.agents.iter().enumerate() {
        let want = if i.is_multiple_of(2) {
            a.hash()
        } else {
            b.hash()
        };
        let id = uid(&h.instance_uid());
        server
            .wait_agent(
                &id,
                T,
                "APPLIED with the right hash + effective config",
                |s| {
                    s.remote_config_status.as_ref().is_some_and(|r| {
                        r.status == RemoteState::Applied && r.hash.as_ref() == want
                    }) && s
                        .effective_config
                        .as_ref()
                        .is_some_and(|e| e[""].body.as_ref() == desired_body(i))
                },
            )
            .await;
    }

    // Keep polling: nothing is pushed twice. Checked once every agent has polled (on its own
    // timer) and been answered twice more, so a second push would have come.
    let base: Vec<(u64, u64)> = fleet
        .agents
        .iter()
        .map(|h| {
            let st = h.state();
            (st.heartbeats_sent, st.messages_received)
        })
        .collect();
    eventually(T, "two more answered polls from every agent", async || {
        let behind = fleet
            .agents
            .iter()
            .zip(&base)
            .filter(|(h, (hb, rx))| {
                let st = h.state();
                st.heartbeats_sent < hb + 2 || st.messages_received < rx + 2
            })
            .count();
        if behind == 0 {
            Ok(())
        } else {
            Err(format!("{behind} agents behind"))
        }
    })
    .await;
    for h in &fleet.agents {
        let st = h.state();
        assert_eq!(st.remote_configs_received, 1, "redundant push: {st:#?}");
        assert_eq!(st.transport_errors, 0, "transport errors: {st:#?}");
        assert!(st.heartbeats_sent >= 2, "agent stopped polling: {st:#?}");
    }
    assert_eq!(
        pool.connections_opened(),
        1,
        "all agents must share one keep-alive connection"
    );
    assert!(pool.requests_sent() > (N * 4) as u64);
    // We gzip every request and accept gzip: the server compresses every reply.
    assert_eq!(pool.gzip_replies(), pool.requests_sent());

    assert_eq!(fleet.stop_all(T).await, N);
    server
        .wait_fleet(T, "all disconnected after agent_disconnect", |a| {
            a.iter().all(|s| !s.connection.connected)
        })
        .await;
}

fn desired_body(i: usize) -> Vec<u8> {
    collector_yaml(if i.is_multiple_of(2) { "A" } else { "B" }).into_bytes()
}

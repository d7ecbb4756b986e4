//! Server behaviour over real sockets: WebSocket via tokio-tungstenite, HTTP via a
//! hand-written HTTP/1.1 client on a raw TcpStream (so every header is visible).

mod agent_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gitamp_opamp::Uid;
use gitamp_opamp::frame::{decode_frame, encode_frame};
use gitamp_opamp::proto::{
    self, AgentCapabilities as Cap, AgentToServer, ServerErrorResponseType, ServerToAgent,
};
use gitamp_opamp::report::Transport;
use gitamp_opamp::server::OpampSettings;
use gitamp_opamp::{Delivery, Fleet, FleetEvent, RemoteConfig};
use prost::Message as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use agent_support::wire::{
    CAPS, FULL_STATE, gzip, hb, kv, post, post_raw, serve_fleet, uid_n as uid,
    ws_connect_auth as ws_connect, ws_message, ws_recv, ws_rpc, ws_send,
};

const T: Duration = Duration::from_secs(10);
// AcceptsStatus 0x1, OffersRemoteConfig 0x2, AcceptsEffectiveConfig 0x4, OffersPackages 0x8,
// AcceptsPackagesStatus 0x10, OffersConnectionSettings 0x20 (the spec's values, written out
// rather than read from the code).
const SERVER_CAPS: u64 = 0x3f;

fn full(
    u: Uid,
    seq: u64,
    name: &str,
    hash: &[u8],
    status: proto::RemoteConfigStatuses,
) -> AgentToServer {
    AgentToServer {
        instance_uid: Bytes::copy_from_slice(&u),
        sequence_num: seq,
        capabilities: CAPS,
        agent_description: Some(proto::AgentDescription {
            identifying_attributes: vec![kv("service.name", name)],
            non_identifying_attributes: vec![kv("host.name", "h")],
        }),
        health: Some(proto::ComponentHealth {
            healthy: true,
            status: "ok".into(),
            ..Default::default()
        }),
        effective_config: Some(proto::EffectiveConfig {
            config_map: Some(proto::AgentConfigMap {
                config_map: [(
                    String::new(),
                    proto::AgentConfigFile {
                        body: Bytes::from_static(b"eff: 1"),
                        content_type: "text/yaml".into(),
                    },
                )]
                .into(),
            }),
        }),
        remote_config_status: Some(proto::RemoteConfigStatus {
            last_remote_config_hash: Bytes::copy_from_slice(hash),
            status: status as i32,
            error_message: String::new(),
        }),
        ..Default::default()
    }
}

fn status(u: Uid, seq: u64, hash: &[u8], st: proto::RemoteConfigStatuses) -> AgentToServer {
    let mut m = hb(u, seq);
    m.remote_config_status = Some(proto::RemoteConfigStatus {
        last_remote_config_hash: Bytes::copy_from_slice(hash),
        status: st as i32,
        error_message: "boom".into(),
    });
    m
}

fn desired(body: &'static [u8], h: u8) -> Arc<RemoteConfig> {
    let mut m = BTreeMap::new();
    m.insert(
        String::new(),
        (Bytes::from_static(body), "text/yaml".to_owned()),
    );
    Arc::new(RemoteConfig::new(m, [h; 32]))
}

async fn start(settings: OpampSettings) -> (Arc<Fleet>, SocketAddr) {
    serve_fleet(settings, None).await
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    agent_support::eventually(T, what, async || f().then_some(())).await
}

#[tokio::test]
async fn http_poll_reply_rules() {
    let (fleet, addr) = start(OpampSettings::default()).await;
    let r = post_raw(
        addr,
        &[("Content-Type", "application/x-protobuf; charset=binary")],
        &full(uid(1), 0, "a", b"", proto::RemoteConfigStatuses::Unset).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/x-protobuf");
    let s = r.decode();
    assert_eq!(&s.instance_uid[..], &uid(1));
    assert_eq!(s.capabilities, SERVER_CAPS);
    // A plain poll with nothing pending: only instance_uid and capabilities.
    let r = post(addr, &hb(uid(1), 1)).await.decode();
    assert_eq!(
        r,
        ServerToAgent {
            instance_uid: Bytes::copy_from_slice(&uid(1)),
            capabilities: SERVER_CAPS,
            ..Default::default()
        }
    );
    let a = fleet.agent(&uid(1)).unwrap();
    assert!(a.connection.connected);
    assert_eq!(a.connection.transport, Transport::Http);
    // Omitted fields kept their last values.
    assert_eq!(a.description.unwrap().identifying["service.name"], "a");
    assert_eq!(a.health.unwrap().status, "ok");
    assert_eq!(&a.effective_config.unwrap()[""].body[..], b"eff: 1");
}

#[tokio::test]
async fn http_gzip_both_ways() {
    let (_fleet, addr) = start(OpampSettings::default()).await;
    let body = gzip(&full(uid(2), 0, "a", b"", proto::RemoteConfigStatuses::Unset).encode_to_vec());
    let r = post_raw(
        addr,
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
            ("Accept-Encoding", "gzip"),
        ],
        &body,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-encoding"], "gzip");
    assert_eq!(&r.decode().instance_uid[..], &uid(2));
    let r = post_raw(
        addr,
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Accept-Encoding", "gzip;q=0"),
        ],
        &hb(uid(2), 1).encode_to_vec(),
    )
    .await;
    assert!(!r.headers.contains_key("content-encoding"));
    assert_eq!(&r.decode().instance_uid[..], &uid(2));
}

#[tokio::test]
async fn http_malformed_input() {
    let (fleet, addr) = start(OpampSettings::default()).await;
    post(
        addr,
        &full(uid(3), 0, "ok", b"", proto::RemoteConfigStatuses::Unset),
    )
    .await;
    let ct = [("Content-Type", "application/x-protobuf")];
    assert_eq!(post_raw(addr, &ct, &[0xff, 0xff, 0xff]).await.status, 400);
    let gz = [
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "gzip"),
    ];
    assert_eq!(post_raw(addr, &gz, b"not gzip").await.status, 400);
    // Wrong instance_uid length: 200 with BadRequest and no other fields.
    let mut m = hb(uid(4), 0);
    m.instance_uid = Bytes::from_static(b"0123456789");
    let r = post(addr, &m).await;
    assert_eq!(r.status, 200);
    let s = r.decode();
    assert_eq!(
        s.error_response.as_ref().unwrap().r#type,
        ServerErrorResponseType::BadRequest as i32
    );
    assert!(s.remote_config.is_none() && s.capabilities == 0 && s.flags == 0);
    assert_eq!(&s.instance_uid[..], b"0123456789");
    // The other agent is unaffected.
    let r = post(addr, &hb(uid(3), 1)).await.decode();
    assert_eq!(r.flags & FULL_STATE, 0);
    assert_eq!(fleet.agents().len(), 1);
}

#[tokio::test]
async fn http_body_limit_and_gzip_bomb() {
    let (fleet, addr) = start(OpampSettings {
        max_message_bytes: 16 * 1024,
        ..Default::default()
    })
    .await;
    let ct = [("Content-Type", "application/x-protobuf")];
    assert_eq!(post_raw(addr, &ct, &vec![0u8; 32 * 1024]).await.status, 413);
    let bomb = gzip(&vec![0u8; 8 << 20]);
    assert!(bomb.len() < 16 * 1024);
    let gz = [
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "gzip"),
    ];
    assert_eq!(post_raw(addr, &gz, &bomb).await.status, 413);
    assert!(fleet.agents().is_empty());
}

#[tokio::test]
async fn secret_required_before_any_state() {
    let (fleet, addr) = start(OpampSettings {
        secret: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    let body = hb(uid(5), 0).encode_to_vec();
    for auth in [None, Some("Bearer nope"), Some("Basic s3cret")] {
        let mut h = vec![("Content-Type", "application/x-protobuf")];
        if let Some(a) = auth {
            h.push(("Authorization", a));
        }
        assert_eq!(post_raw(addr, &h, &body).await.status, 401);
        match ws_connect(addr, auth).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
            other => panic!("expected 401, got {other:?}"),
        }
    }
    assert!(fleet.agents().is_empty());
    let ok = [
        ("Content-Type", "application/x-protobuf"),
        ("Authorization", "Bearer s3cret"),
    ];
    assert_eq!(post_raw(addr, &ok, &body).await.status, 200);
    let mut ws = ws_connect(addr, Some("Secret-Key s3cret")).await.unwrap();
    let r = ws_rpc(&mut ws, &hb(uid(6), 0)).await;
    assert_eq!(&r.instance_uid[..], &uid(6));
    assert_eq!(fleet.agents().len(), 2);
}

#[tokio::test]
async fn http_desired_config_next_poll_no_resend() {
    let (fleet, addr) = start(OpampSettings::default()).await;
    let u = uid(7);
    post(
        addr,
        &full(u, 0, "a", b"old", proto::RemoteConfigStatuses::Applied),
    )
    .await;
    assert_ne!(
        Delivery::Unknown,
        fleet.deliver(&u, Some(desired(b"x: 1", 1)))
    );
    let r = post(addr, &hb(u, 1)).await.decode();
    let rc = r.remote_config.unwrap();
    assert_eq!(&rc.config_hash[..], &[1; 32]);
    assert_eq!(&rc.config.unwrap().config_map[""].body[..], b"x: 1");
    assert_eq!(r.capabilities, SERVER_CAPS);
    let r = post(
        addr,
        &status(u, 2, &[1; 32], proto::RemoteConfigStatuses::Applied),
    )
    .await;
    assert!(r.decode().remote_config.is_none());
    assert!(post(addr, &hb(u, 3)).await.decode().remote_config.is_none());
    // Agent without ReportsRemoteConfig: each hash sent once.
    let v = uid(8);
    let mut m = hb(v, 0);
    m.capabilities = Cap::ReportsStatus as u64 | Cap::AcceptsRemoteConfig as u64;
    m.agent_description =
        full(v, 0, "b", b"", proto::RemoteConfigStatuses::Unset).agent_description;
    post(addr, &m).await;
    fleet.deliver(&v, Some(desired(b"y: 1", 2)));
    m.sequence_num = 1;
    assert!(post(addr, &m).await.decode().remote_config.is_some());
    m.sequence_num = 2;
    assert!(post(addr, &m).await.decode().remote_config.is_none());
    // Without AcceptsRemoteConfig: never.
    let w = uid(9);
    let mut m = hb(w, 0);
    m.capabilities = Cap::ReportsStatus as u64;
    post(addr, &m).await;
    fleet.deliver(&w, Some(desired(b"z: 1", 3)));
    m.sequence_num = 1;
    assert!(post(addr, &m).await.decode().remote_config.is_none());
}

#[tokio::test]
async fn heartbeat_timeout_marks_disconnected() {
    let (fleet, addr) = start(OpampSettings {
        heartbeat_interval: Duration::from_millis(50),
        ..Default::default()
    })
    .await;
    let mut events = fleet.subscribe();
    post(
        addr,
        &full(uid(10), 0, "a", b"", proto::RemoteConfigStatuses::Unset),
    )
    .await;
    assert!(fleet.agent(&uid(10)).unwrap().connection.connected);
    eventually("agent 10 disconnected", || {
        !fleet.agent(&uid(10)).unwrap().connection.connected
    })
    .await;
    let mut seen = Vec::new();
    while let Ok(ev) = events.try_recv() {
        seen.push(ev);
    }
    assert_eq!(seen.first(), Some(&FleetEvent::Connected(uid(10))));
    assert_eq!(seen.last(), Some(&FleetEvent::Disconnected(uid(10))));
    // A WS agent with ReportsHeartbeat that goes silent is disconnected too.
    let mut ws = ws_connect(addr, None).await.unwrap();
    let mut m = full(uid(11), 0, "a", b"", proto::RemoteConfigStatuses::Unset);
    m.capabilities |= Cap::ReportsHeartbeat as u64;
    ws_rpc(&mut ws, &m).await;
    eventually("agent 11 disconnected", || {
        !fleet.agent(&uid(11)).unwrap().connection.connected
    })
    .await;
}

#[tokio::test]
async fn http_agent_disconnect() {
    let (fleet, addr) = start(OpampSettings::default()).await;
    post(
        addr,
        &full(uid(12), 0, "a", b"", proto::RemoteConfigStatuses::Unset),
    )
    .await;
    let mut m = hb(uid(12), 1);
    m.agent_disconnect = Some(proto::AgentDisconnect {});
    assert_eq!(post(addr, &m).await.status, 200);
    assert!(!fleet.agent(&uid(12)).unwrap().connection.connected);
}

// ---------------------------------------------------------------- WS tests

#[tokio::test]
async fn ws_reply_rules_and_malformed_frames() {
    let (fleet, addr) = start(OpampSettings::default()).await;
    let mut ws = ws_connect(addr, None).await.unwrap();
    let first = full(uid(20), 0, "a", b"", proto::RemoteConfigStatuses::Unset);
    let r = ws_rpc(&mut ws, &first).await;
    assert_eq!(&r.instance_uid[..], &uid(20));
    assert_eq!(r.capabilities, SERVER_CAPS);
    assert_eq!(r.flags & FULL_STATE, 0);
    // Duplicates each get a reply.
    ws_send(&mut ws, &hb(uid(20), 1)).await;
    ws_send(&mut ws, &hb(uid(20), 1)).await;
    assert_eq!(&ws_recv(&mut ws).await.instance_uid[..], &uid(20));
    assert_eq!(&ws_recv(&mut ws).await.instance_uid[..], &uid(20));
    // Header-only frame = empty AgentToServer (no uid): BadRequest, not a crash.
    ws.send(Message::Binary(Bytes::from_static(&[0])))
        .await
        .unwrap();
    let r = ws_recv(&mut ws).await;
    assert_eq!(
        r.error_response.unwrap().r#type,
        ServerErrorResponseType::BadRequest as i32
    );
    // Non-zero header (and legacy header-less frames): BadRequest.
    let legacy = hb(uid(20), 2).encode_to_vec();
    ws.send(Message::Binary(legacy.into())).await.unwrap();
    assert!(ws_recv(&mut ws).await.error_response.is_some());
    // Text frame: error reply, connection stays usable.
    ws.send(Message::text("hello")).await.unwrap();
    assert!(ws_recv(&mut ws).await.error_response.is_some());
    let r = ws_rpc(&mut ws, &hb(uid(20), 2)).await;
    assert!(r.error_response.is_none());
    assert!(fleet.agent(&uid(20)).unwrap().connection.connected);
    // Transport close without agent_disconnect disconnects the agent.
    ws.close(None).await.unwrap();
    eventually("agent 20 disconnected", || {
        !fleet.agent(&uid(20)).unwrap().connection.connected
    })
    .await;
}

#[tokio::test]
async fn ws_messages_in_one_segment_each_get_one_reply_in_order_with_the_pong_between() {
    // Five agents' messages, a ping and a text frame written with one flush (one segment):
    // the server answers them together, one reply each, in the order they came.
    let (_fleet, addr) = start(OpampSettings::default()).await;
    let mut ws = ws_connect(addr, None).await.unwrap();
    for n in 0..3u8 {
        let m = full(uid(40 + n), 0, "a", b"", proto::RemoteConfigStatuses::Unset);
        ws.feed(Message::Binary(encode_frame(&m))).await.unwrap();
    }
    ws.feed(Message::Ping(Bytes::from_static(b"between")))
        .await
        .unwrap();
    ws.feed(Message::text("not opamp")).await.unwrap();
    for n in 3..5u8 {
        let m = full(uid(40 + n), 0, "a", b"", proto::RemoteConfigStatuses::Unset);
        ws.feed(Message::Binary(encode_frame(&m))).await.unwrap();
    }
    ws.flush().await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 7 {
        match ws_message(&mut ws).await {
            Message::Binary(b) => {
                let r: ServerToAgent = decode_frame(b).unwrap();
                seen.push(match r.error_response {
                    Some(_) => "error".to_string(),
                    None => format!("{}", r.instance_uid[0]),
                });
            }
            Message::Pong(p) => {
                assert_eq!(&p[..], b"between");
                seen.push("pong".into());
            }
            Message::Ping(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["40", "41", "42", "pong", "error", "43", "44"]);
    // Nothing more: exactly one reply per message.
    let extra = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    assert!(
        !matches!(extra, Ok(Some(Ok(Message::Binary(_))))),
        "an extra reply: {extra:?}"
    );
}

#[tokio::test]
async fn ws_oversize_closes_only_that_connection() {
    let (_fleet, addr) = start(OpampSettings {
        max_message_bytes: 1024,
        ..Default::default()
    })
    .await;
    let mut good = ws_connect(addr, None).await.unwrap();
    ws_rpc(&mut good, &hb(uid(21), 0)).await;
    let mut bad = ws_connect(addr, None).await.unwrap();
    let mut big = vec![0u8; 4096];
    big[1] = 0x0a; // whatever follows; the size alone triggers the close
    bad.send(Message::Binary(big.into())).await.unwrap();
    let m = tokio::time::timeout(T, bad.next()).await.unwrap();
    match m {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Size),
        other => panic!("expected close 1009, got {other:?}"),
    }
    let r = ws_rpc(&mut good, &hb(uid(21), 1)).await;
    assert_eq!(&r.instance_uid[..], &uid(21));
}

#[tokio::test]
async fn ws_sequence_gap_and_unknown_agent() {
    let (fleet, addr) = start(OpampSettings::default()).await;
    let mut ws = ws_connect(addr, None).await.unwrap();
    // Unknown agent sending a compressed message (reconnect to a fresh server).
    let r = ws_rpc(&mut ws, &hb(uid(22), 41)).await;
    assert_ne!(r.flags & FULL_STATE, 0);
    let r = ws_rpc(
        &mut ws,
        &full(uid(22), 42, "a", b"", proto::RemoteConfigStatuses::Unset),
    )
    .await;
    assert_eq!(r.flags & FULL_STATE, 0);
    // In sequence, compressed: no request, values kept.
    let r = ws_rpc(&mut ws, &hb(uid(22), 43)).await;
    assert_eq!(r.flags & FULL_STATE, 0);
    // Gap: ask.
    let r = ws_rpc(&mut ws, &hb(uid(22), 45)).await;
    assert_ne!(r.flags & FULL_STATE, 0);
    let a = fleet.agent(&uid(22)).unwrap();
    assert_eq!(a.description.unwrap().identifying["service.name"], "a");
    // Unknown agent with a complete first report: no request.
    let r = ws_rpc(
        &mut ws,
        &full(uid(23), 0, "b", b"", proto::RemoteConfigStatuses::Unset),
    )
    .await;
    assert_eq!(r.flags & FULL_STATE, 0);
}

#[tokio::test]
async fn ws_uid_reassignment() {
    let (fleet, addr) = start(OpampSettings::default()).await;
    let mut a = ws_connect(addr, None).await.unwrap();
    ws_rpc(
        &mut a,
        &full(uid(24), 0, "one", b"", proto::RemoteConfigStatuses::Unset),
    )
    .await;
    // Same uid, different description, while the first connection is live.
    let mut b = ws_connect(addr, None).await.unwrap();
    let r = ws_rpc(
        &mut b,
        &full(uid(24), 0, "two", b"", proto::RemoteConfigStatuses::Unset),
    )
    .await;
    assert_eq!(&r.instance_uid[..], &uid(24));
    let new = r.agent_identification.unwrap().new_instance_uid;
    assert_eq!(new.len(), 16);
    let new: Uid = new[..].try_into().unwrap();
    assert_ne!(new, uid(24));
    // Continuing under the new uid is in sequence: no full-state request.
    let mut m = hb(new, 1);
    m.instance_uid = Bytes::copy_from_slice(&new);
    assert_eq!(ws_rpc(&mut b, &m).await.flags & FULL_STATE, 0);
    let old = fleet.agent(&uid(24)).unwrap();
    assert_eq!(old.description.unwrap().identifying["service.name"], "one");
    let moved = fleet.agent(&new).unwrap();
    assert_eq!(
        moved.description.unwrap().identifying["service.name"],
        "two"
    );
    // RequestInstanceUid.
    let mut m = hb(uid(25), 0);
    m.flags = proto::AgentToServerFlags::RequestInstanceUid as u64;
    let r = ws_rpc(&mut a, &m).await;
    let n = r.agent_identification.unwrap().new_instance_uid;
    assert_eq!(uuid::Uuid::from_slice(&n).unwrap().get_version_num(), 7);
}

#[tokio::test]
async fn ws_push_on_deliver_and_every_status_reaches_the_planner() {
    let (fleet, addr) = start(OpampSettings::default()).await;
    let u = uid(26);
    let mut ws = ws_connect(addr, None).await.unwrap();
    let r = ws_rpc(
        &mut ws,
        &full(u, 0, "a", b"old", proto::RemoteConfigStatuses::Applied),
    )
    .await;
    assert!(r.remote_config.is_none());
    // Pushed at once, without a message from the agent.
    let d = desired(b"a: 1", 1);
    assert!(matches!(
        fleet.deliver(&u, Some(d.clone())),
        Delivery::Queued(_)
    ));
    let push = ws_recv(&mut ws).await;
    assert_eq!(&push.instance_uid[..], &u);
    assert_eq!(&push.remote_config.unwrap().config_hash[..], &[1; 32]);
    // Agent applied it: handing the same config over again sends nothing (it went stale).
    let r = ws_rpc(
        &mut ws,
        &status(u, 1, &[1; 32], proto::RemoteConfigStatuses::Applied),
    )
    .await;
    assert!(r.remote_config.is_none());
    assert_eq!(fleet.deliver(&u, Some(d)), Delivery::Dropped);
    let r = ws_rpc(&mut ws, &hb(u, 2)).await;
    assert!(r.remote_config.is_none());
    // A new config fails and the agent rolls back: both reports wait for the planner, so the
    // failure is not lost behind the rollback's APPLIED.
    fleet.observe(&u);
    fleet.deliver(&u, Some(desired(b"bad", 2)));
    assert!(ws_recv(&mut ws).await.remote_config.is_some());
    ws_rpc(
        &mut ws,
        &status(u, 3, &[2; 32], proto::RemoteConfigStatuses::Failed),
    )
    .await;
    ws_rpc(
        &mut ws,
        &status(u, 4, &[1; 32], proto::RemoteConfigStatuses::Applied),
    )
    .await;
    let seen: Vec<_> = fleet
        .observe(&u)
        .unwrap()
        .unread_statuses
        .iter()
        .map(|s| (s.hash[0], s.status))
        .collect();
    assert_eq!(
        seen,
        vec![
            (2, gitamp_opamp::report::RemoteState::Failed),
            (1, gitamp_opamp::report::RemoteState::Applied)
        ]
    );
    // agent_disconnect: replied to and marked disconnected at once.
    let mut m = hb(u, 6);
    m.agent_disconnect = Some(proto::AgentDisconnect {});
    let r = ws_rpc(&mut ws, &m).await;
    assert!(r.error_response.is_none());
    assert!(!fleet.agent(&u).unwrap().connection.connected);
}

#[tokio::test]
async fn outgoing_over_limit_is_not_sent_but_reply_is() {
    let (fleet, addr) = start(OpampSettings {
        max_message_bytes: 512,
        ..Default::default()
    })
    .await;
    static BIG: [u8; 1024] = [b'x'; 1024];
    // HTTP: the reply still comes, without the config that does not fit.
    let u = uid(30);
    post(addr, &hb(u, 0)).await;
    fleet.deliver(&u, Some(desired(&BIG, 4)));
    let r = post(addr, &hb(u, 1)).await;
    assert_eq!(r.status, 200);
    let s = r.decode();
    assert!(s.remote_config.is_none());
    assert_eq!(&s.instance_uid[..], &u);
    // WebSocket: the push is dropped, the next reply is sent without the config.
    let v = uid(31);
    let mut ws = ws_connect(addr, None).await.unwrap();
    ws_rpc(&mut ws, &hb(v, 0)).await;
    fleet.deliver(&v, Some(desired(&BIG, 5)));
    let r = ws_rpc(&mut ws, &hb(v, 1)).await;
    assert!(r.remote_config.is_none());
    assert_eq!(&r.instance_uid[..], &v);
}

#[tokio::test]
async fn ws_ping_is_answered() {
    let (_fleet, addr) = start(OpampSettings::default()).await;
    let mut ws = ws_connect(addr, None).await.unwrap();
    ws.send(Message::Ping(Bytes::from_static(b"p")))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(T, ws.next()).await.unwrap() {
            Some(Ok(Message::Pong(p))) => {
                assert_eq!(&p[..], b"p");
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected pong, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn overload_gets_503_with_retry_after() {
    let (fleet, addr) = start(OpampSettings {
        max_connections: Some(1),
        ..Default::default()
    })
    .await;
    let mut ws = ws_connect(addr, None).await.unwrap();
    ws_rpc(&mut ws, &hb(uid(40), 0)).await;
    match ws_connect(addr, None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 503);
            assert_eq!(r.headers()["retry-after"], "30");
        }
        other => panic!("expected 503, got {other:?}"),
    }
    let r = post(addr, &hb(uid(41), 0)).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["retry-after"], "30");
    assert!(fleet.agent(&uid(41)).is_none());
    // Once the connection is gone the slot is free again.
    ws.close(None).await.unwrap();
    drop(ws);
    agent_support::eventually(T, "the slot is free again", async || {
        let status = post(addr, &hb(uid(41), 0)).await.status;
        if status == 200 {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    })
    .await;
}

/// Agent 1's first report, over HTTP: the reply.
async fn first_report(addr: SocketAddr) -> ServerToAgent {
    post(
        addr,
        &full(uid(1), 0, "a", b"", proto::RemoteConfigStatuses::Unset),
    )
    .await
    .decode()
}

/// A planner that decides `cfg` for agent 1 `after` a while, as the server's reconciler would
/// (hand over, then mark the plan done). Returns when it has.
async fn plan_later(fleet: Arc<Fleet>, cfg: Arc<RemoteConfig>, after: Duration, seen: u64) {
    tokio::time::sleep(after).await;
    fleet.deliver(&uid(1), Some(cfg));
    fleet.planned(fleet.plan_mark(seen));
}

/// A planner attaches (from here on replies may wait for its plans), and a new agent's first
/// report comes while the plan on it takes `plan_takes` to hand config 7 over: its reply, and
/// how long it took.
async fn first_report_while_planned(
    fleet: &Arc<Fleet>,
    addr: SocketAddr,
    plan_takes: Duration,
) -> (ServerToAgent, Duration) {
    let events = fleet.subscribe();
    fleet.planned(fleet.plan_mark(fleet.events_seen_by(&events)));
    let seen = 2; // Connected and Reported
    let plan = tokio::spawn(plan_later(
        fleet.clone(),
        desired(b"first", 7),
        plan_takes,
        seen,
    ));
    let started = std::time::Instant::now();
    let r = first_report(addr).await;
    plan.await.unwrap();
    (r, started.elapsed())
}

/// A new revision whose plan takes `plan_takes` to hand config 8 over, and agent 1's poll
/// meanwhile: its reply, and how long it took.
async fn poll_while_a_revision_is_planned(
    fleet: &Arc<Fleet>,
    addr: SocketAddr,
    plan_takes: Duration,
) -> (ServerToAgent, Duration) {
    fleet.expect_plan();
    // Events so far (Connected, Reported, ConfigSent), the poll's and the config's, at most.
    let seen = 3 + 3;
    let plan = tokio::spawn(plan_later(
        fleet.clone(),
        desired(b"second", 8),
        plan_takes,
        seen,
    ));
    let started = std::time::Instant::now();
    let r = post(addr, &hb(uid(1), 1)).await.decode();
    plan.await.unwrap();
    (r, started.elapsed())
}

#[tokio::test]
async fn an_http_reply_waits_for_the_plan_under_way_and_carries_its_config() {
    let (fleet, addr) = start(OpampSettings::default()).await;
    // A new agent's first report: the reply waits until the plan on it hands a config over.
    let (r, took) = first_report_while_planned(&fleet, addr, Duration::from_millis(300)).await;
    let rc = r
        .remote_config
        .expect("the first reply carries the config the plan decided");
    assert_eq!(rc.config_hash.as_ref(), &[7u8; 32]);
    assert!(took >= Duration::from_millis(250));

    // A new revision: a plain poll waits for the plan on it too.
    let (r, _) = poll_while_a_revision_is_planned(&fleet, addr, Duration::from_millis(300)).await;
    let rc = r
        .remote_config
        .expect("the poll's reply carries the new revision's config");
    assert_eq!(rc.config_hash.as_ref(), &[8u8; 32]);

    // Nothing under way: a poll is answered at once, with nothing.
    let started = std::time::Instant::now();
    let r = post(addr, &hb(uid(1), 2)).await.decode();
    assert!(r.remote_config.is_none());
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// A new revision's plan that outlasts `poll_reply_wait` is waited for all the same: a reply
/// sent without it would leave the agent a whole poll interval behind.
#[tokio::test]
async fn an_http_reply_waits_past_its_limit_for_a_new_revisions_plan() {
    let (fleet, addr) = start(OpampSettings {
        poll_reply_wait: Duration::from_millis(200),
        ..OpampSettings::default()
    })
    .await;
    let (r, _) = first_report_while_planned(&fleet, addr, Duration::from_millis(50)).await;
    assert!(r.remote_config.is_some());
    let (r, took) =
        poll_while_a_revision_is_planned(&fleet, addr, Duration::from_millis(800)).await;
    let rc = r
        .remote_config
        .expect("the reply waited for the revision's plan past its 200 ms");
    assert_eq!(rc.config_hash.as_ref(), &[8u8; 32]);
    assert!(took >= Duration::from_millis(700));
}

#[tokio::test]
async fn an_http_reply_waits_no_longer_than_its_limit_nor_at_all_when_told_not_to() {
    for (wait, waited) in [(Duration::from_millis(400), true), (Duration::ZERO, false)] {
        let (fleet, addr) = start(OpampSettings {
            poll_reply_wait: wait,
            ..OpampSettings::default()
        })
        .await;
        let events = fleet.subscribe();
        fleet.planned(fleet.plan_mark(fleet.events_seen_by(&events)));
        // No plan ever comes.
        let started = std::time::Instant::now();
        let r = first_report(addr).await;
        assert!(r.remote_config.is_none());
        let took = started.elapsed();
        assert_eq!(
            took >= Duration::from_millis(350),
            waited,
            "{wait:?}: took {took:?}"
        );
        assert!(took < Duration::from_secs(5));
    }
}

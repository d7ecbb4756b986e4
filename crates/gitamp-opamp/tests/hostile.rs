//! Hostile OpAMP peers over real loopback sockets: garbage, broken framing, oversized and
//! compressed-bomb bodies, slowloris headers, connection churn, uid theft and sequence numbers
//! running backwards. After each, the server is still up and a well-behaved simulated agent
//! still gets its config; for the churn test the process RSS (the server runs in-process) is
//! measured before and after and must stay within a generous bound.
//!
//! No speed assertions: every timeout is a generous upper bound for a slow CI machine.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod agent_support;

use agent_support::rand::Prng;
use agent_support::wire::{
    FULL_STATE, hb_with, hello_with, raw_exchange, serve_fleet, status_of, ws_connect, ws_next,
    ws_rpc,
};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gitamp_opamp::agent::caps;
use gitamp_opamp::agent::{
    AgentOptions, ApplyPolicy, ClientTransport, SimAgent, WsOptions, spawn_agent,
};
use gitamp_opamp::frame::encode_frame;
use gitamp_opamp::proto::{AgentToServer, ServerToAgent};
use gitamp_opamp::server::{OpampSettings, ServeOptions};
use gitamp_opamp::{Delivery, Fleet, RemoteConfig, Uid};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);
/// Generous RSS growth bound for the flood tests.
const RSS_BOUND_KIB: u64 = 64 * 1024;

/// Resident set size of this process (server included), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn start(settings: OpampSettings, opts: Option<ServeOptions>) -> (Arc<Fleet>, SocketAddr) {
    serve_fleet(settings, opts).await
}

/// A first message from a full-featured agent on host `hostile`.
fn hello(u: Uid, seq: u64, name: &str) -> AgentToServer {
    hello_with(u, seq, name, "hostile", caps::FULL)
}

fn hb(u: Uid, seq: u64) -> AgentToServer {
    hb_with(u, seq, caps::FULL)
}

fn post_head(addr: SocketAddr, len: usize, extra: &str) -> String {
    format!(
        "POST /v1/opamp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-protobuf\r\nContent-Length: {len}\r\n{extra}\r\n"
    )
}

/// `n` zero bytes, gzipped, streamed in 64 KiB chunks: the test must not hold the inflated
/// size itself (tests share the process whose RSS is measured).
fn gzip_zeros(n: usize) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 64 * 1024];
    for _ in 0..n / chunk.len() {
        e.write_all(&chunk).expect("gzip");
    }
    e.finish().expect("gzip")
}

/// A well-behaved simulated agent (uid `[n; 16]`) connects over WebSocket, gets a config set
/// for it and applies it. Proves the server is up and serving after an attack.
async fn well_behaved_agent_is_served(fleet: &Fleet, addr: SocketAddr, n: u8) {
    let u: Uid = [n; 16];
    let mut opts = AgentOptions::collector("good", &format!("good-{n}"), "test");
    opts.instance_uid = Some(u);
    opts.policy = ApplyPolicy::Apply;
    let ws = WsOptions {
        reconnect_delay: Duration::from_millis(100),
        ..WsOptions::default()
    };
    let agent = spawn_agent(
        SimAgent::new(opts),
        ClientTransport::WebSocket(ws),
        &format!("ws://{addr}/v1/opamp"),
    );
    eventually("the good agent registers", || {
        fleet.agent(&u).is_some_and(|a| a.connection.connected)
    })
    .await;
    let mut files = BTreeMap::new();
    files.insert(
        String::new(),
        (Bytes::from(format!("good: {n}\n")), "text/yaml".to_owned()),
    );
    let hash = [n; 32];
    assert_ne!(
        Delivery::Unknown,
        fleet.deliver(&u, Some(Arc::new(RemoteConfig::new(files, hash))))
    );
    eventually("the good agent applies its config", || {
        agent.state().applied_hash().map(|h| &h[..]) == Some(&hash[..])
    })
    .await;
    assert_eq!(agent.state().redundant_configs_received, 0);
    agent.stop(Duration::from_secs(5)).await;
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    agent_support::eventually(T, what, async || f().then_some(())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_broken_frames_and_wrong_varints_leave_the_server_serving() {
    let settings = OpampSettings {
        body_read_timeout: Duration::from_secs(1),
        ..OpampSettings::default()
    };
    let (fleet, addr) = start(settings, None).await;
    let mut rng = Prng(0x9e37_79b9_7f4a_7c15);
    let valid = encode_frame(&hello([1; 16], 0, "victim"));

    // WebSocket: each hostile frame on its own connection; the server answers with an error
    // or closes, and never hangs.
    let mut frames: Vec<Vec<u8>> = vec![
        Vec::new(),     // empty binary message
        vec![0xff; 11], // unterminated 11-byte header varint
        vec![
            0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x0a,
        ], // 10-byte varint
        vec![0x07, 0x0a, 0x10], // wrong header value
        valid[..valid.len() / 2].to_vec(), // truncated frame
        [&[0u8][..], &[0x0a, 0xff, 0xff, 0xff, 0x0f][..]].concat(), // field length past the end
    ];
    for len in [1, 7, 64, 1000, 65_536] {
        frames.push(rng.bytes(len));
        let mut f = rng.bytes(len);
        f[0] = 0; // right header, garbage body
        frames.push(f);
    }
    for f in &frames {
        let mut ws = ws_connect(addr).await;
        ws.send(Message::Binary(f.clone().into()))
            .await
            .expect("send");
        if let Some(reply) = ws_next(&mut ws).await {
            assert!(
                reply.error_response.is_some(),
                "garbage {f:02x?} got a normal reply"
            );
        }
        // The connection (if still open) is still usable for a valid message.
        let _ = ws
            .send(Message::Binary(encode_frame(&hb([2; 16], 0))))
            .await;
        drop(ws);
    }

    // HTTP: not HTTP at all, a garbage body, a truncated body, a lying chunked body.
    assert!(
        raw_exchange(addr, &rng.bytes(4096)).await.len() < 4096,
        "garbage gets a short answer or none"
    );
    raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    )
    .await;
    for body in [rng.bytes(100), rng.bytes(10_000), valid[1..].to_vec()] {
        let mut req = post_head(addr, body.len(), "").into_bytes();
        req.extend_from_slice(&body);
        let resp = raw_exchange(addr, &req).await;
        let code = status_of(&resp);
        assert!(
            matches!(code, Some(200 | 400)),
            "garbage POST body answered with {code:?}"
        );
    }
    // Content-Length says more than ever arrives: cut off by the body read timeout (408),
    // not held forever.
    let mut truncated = post_head(addr, 1000, "").into_bytes();
    truncated.extend_from_slice(&valid[1..]);
    let resp = raw_exchange(addr, &truncated).await;
    assert_eq!(status_of(&resp), Some(408), "truncated body");
    let chunked = format!(
        "POST /v1/opamp HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-protobuf\r\n\r\nfffffffffffffffff\r\nxx"
    );
    raw_exchange(addr, chunked.as_bytes()).await;

    well_behaved_agent_is_served(&fleet, addr, 0x31).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_messages_16_mib_body_and_gzip_bomb_are_refused_with_bounded_memory() {
    let (fleet, addr) = start(OpampSettings::default(), None).await;
    let limit = OpampSettings::default().max_message_bytes;
    well_behaved_agent_is_served(&fleet, addr, 0x41).await;
    let before = rss_kib();

    // WebSocket message over the limit: close 1009 on that connection only.
    let mut good = ws_connect(addr).await;
    ws_rpc(&mut good, &hello([0x42; 16], 0, "bystander")).await;
    let mut bad = ws_connect(addr).await;
    let mut big = vec![0u8; limit + 1024];
    big[1] = 0x0a;
    let _ = bad.send(Message::Binary(big.into())).await;
    assert!(
        ws_next(&mut bad).await.is_none(),
        "oversized message closes the connection"
    );

    // A 16 MiB HTTP body: 413 (the server may answer before reading it all).
    let sixteen = 16 << 20;
    let mut req = post_head(addr, sixteen, "").into_bytes();
    req.extend(std::iter::repeat_n(0u8, sixteen));
    let resp = raw_exchange(addr, &req).await;
    assert_eq!(status_of(&resp), Some(413), "16 MiB body");
    drop(req);

    // A gzip bomb: 64 MiB of zeros in ~64 KiB, declared gzip; 413 after at most the limit
    // has been inflated. Sent a few times so a leak would show in the RSS.
    let bomb = gzip_zeros(64 << 20);
    assert!(bomb.len() < limit, "the bomb itself is under the limit");
    for _ in 0..8 {
        let mut req = post_head(addr, bomb.len(), "Content-Encoding: gzip\r\n").into_bytes();
        req.extend_from_slice(&bomb);
        let resp = raw_exchange(addr, &req).await;
        assert_eq!(status_of(&resp), Some(413), "gzip bomb");
    }
    drop(bomb);

    // The bystander's connection was not affected.
    let r = ws_rpc(&mut good, &hb([0x42; 16], 1)).await;
    assert!(r.error_response.is_none() && r.flags & FULL_STATE == 0);
    let after = rss_kib();
    println!("oversize/bomb: RSS before {before} KiB, after {after} KiB");
    assert!(
        after.saturating_sub(before) < RSS_BOUND_KIB,
        "RSS grew from {before} KiB to {after} KiB"
    );
    well_behaved_agent_is_served(&fleet, addr, 0x43).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_message_started_and_left_unfinished_is_closed_with_1008() {
    let settings = OpampSettings {
        body_read_timeout: Duration::from_millis(300),
        ..OpampSettings::default()
    };
    let (fleet, addr) = start(settings, None).await;
    let mut ws = ws_connect(addr).await;
    // An idle connection outlives the timeout: waiting between messages is not timed. This
    // wait IS the behaviour under test (idle for twice the body timeout), so it stays.
    tokio::time::sleep(Duration::from_millis(600)).await;
    ws_rpc(&mut ws, &hello([0x51; 16], 0, "slow")).await;
    // A masked binary frame that declares 100 bytes and sends 10, then nothing.
    let mut partial = vec![0x82, 0x80 | 100, 1, 2, 3, 4];
    partial.extend_from_slice(&[0u8; 10]);
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_mut() else {
        panic!("plain TCP expected");
    };
    tcp.write_all(&partial).await.expect("raw write");
    let closed = tokio::time::timeout(T, ws.next())
        .await
        .expect("closed in time");
    match closed {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("expected close 1008, got {other:?}"),
    }
    well_behaved_agent_is_served(&fleet, addr, 0x52).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_do_not_hold_the_server_and_are_cut_off() {
    let opts = ServeOptions {
        header_read_timeout: Duration::from_secs(1),
    };
    let (fleet, addr) = start(OpampSettings::default(), Some(opts)).await;
    // 32 connections each trickling one header byte every 100 ms, for far longer than the
    // header timeout unless the server cuts them off.
    let head = b"POST /v1/opamp HTTP/1.1\r\nHost: slow\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let trickling = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let trickling = trickling.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let started = tokio::time::Instant::now();
            for (i, b) in head.iter().enumerate() {
                if s.write_all(&[*b]).await.is_err() {
                    return Some(started.elapsed());
                }
                if i == 2 {
                    trickling.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                // A closed connection shows as EOF on read.
                let mut buf = [0u8; 256];
                match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                    Ok(Ok(_)) => {} // e.g. a 408 before the close
                    Err(_) => {}    // still open
                }
            }
            None
        }));
    }
    // Meanwhile other agents are served: once every slowloris connection is trickling.
    eventually("32 slowloris connections trickling", || {
        trickling.load(std::sync::atomic::Ordering::SeqCst) == 32
    })
    .await;
    well_behaved_agent_is_served(&fleet, addr, 0x51).await;
    for t in tasks {
        let cut = t.await.expect("slowloris task");
        let cut = cut.expect("the server cut the slowloris connection off");
        assert!(cut < T, "cut off after {cut:?}");
    }
    well_behaved_agent_is_served(&fleet, addr, 0x52).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connect_disconnect_cycles_keep_memory_bounded() {
    let (fleet, addr) = start(OpampSettings::default(), None).await;
    const CYCLES: usize = 10_000;
    const WORKERS: usize = 8;
    /// Reconnecting agents reuse a handful of uids: churn, not growth of the registry.
    const UIDS: u8 = 16;

    async fn cycle(addr: SocketAddr, i: usize, seq: u64) {
        let u: Uid = [0x60 + (i % UIDS as usize) as u8; 16];
        match i % 4 {
            // Bare TCP connect and close.
            0 => drop(TcpStream::connect(addr).await.expect("connect")),
            // WebSocket handshake, one message, close without agent_disconnect.
            1 => {
                let mut ws = ws_connect(addr).await;
                ws.send(Message::Binary(encode_frame(&hello(u, seq, "churn"))))
                    .await
                    .expect("send");
                let _ = ws_next(&mut ws).await;
            }
            // WebSocket handshake then drop without a close frame.
            2 => drop(ws_connect(addr).await),
            // One HTTP exchange.
            _ => {
                let body = hello(u, seq, "churn").encode_to_vec();
                let mut req = post_head(addr, body.len(), "").into_bytes();
                req.extend_from_slice(&body);
                let resp = raw_exchange(addr, &req).await;
                assert_eq!(status_of(&resp), Some(200));
            }
        }
    }

    // Warm up (allocator pools, lazy statics), then measure.
    for i in 0..200 {
        cycle(addr, i, 0).await;
    }
    let before = rss_kib();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        workers.push(tokio::spawn(async move {
            for j in 0..CYCLES / WORKERS {
                cycle(addr, w + j * WORKERS, j as u64).await;
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    // Every agent churned over WebSocket (uid index ≡ 1 mod 4, see `cycle`) is eventually
    // seen as gone; HTTP ones stay "connected" until the liveness sweep, by design.
    eventually("churned WebSocket agents disconnect", || {
        fleet
            .agents()
            .iter()
            .filter(|a| a.uid[0] >= 0x60 && a.uid[0] < 0x60 + UIDS && (a.uid[0] - 0x60) % 4 == 1)
            .all(|a| !a.connection.connected)
    })
    .await;
    let after = rss_kib();
    println!(
        "{CYCLES} connect/disconnect cycles: RSS before {before} KiB, after {after} KiB, agents {}",
        fleet.agents().len()
    );
    assert!(
        fleet.agents().len() <= UIDS as usize,
        "the registry grew with connections, not agents"
    );
    assert!(
        after.saturating_sub(before) < RSS_BOUND_KIB,
        "RSS grew from {before} KiB to {after} KiB"
    );
    well_behaved_agent_is_served(&fleet, addr, 0x71).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_claiming_another_agents_uid_does_not_take_over_its_config() {
    let (fleet, addr) = start(OpampSettings::default(), None).await;
    let victim: Uid = [0x81; 16];
    let mut opts = AgentOptions::collector("victim", "victim-host", "test");
    opts.instance_uid = Some(victim);
    opts.policy = ApplyPolicy::Apply;
    let agent = spawn_agent(
        SimAgent::new(opts),
        ClientTransport::WebSocket(WsOptions::default()),
        &format!("ws://{addr}/v1/opamp"),
    );
    eventually("the victim registers", || {
        fleet.agent(&victim).is_some_and(|a| a.connection.connected)
    })
    .await;
    let mut files = BTreeMap::new();
    files.insert(
        String::new(),
        (Bytes::from_static(b"victim: 1\n"), "text/yaml".to_owned()),
    );
    let config = Arc::new(RemoteConfig::new(files, [0x81; 32]));
    // A config handed over while the server waits for the agent's full report is dropped (the
    // plan decides again with that report): hand it over again, as the plan would.
    eventually("the victim's config handed over", || {
        matches!(
            fleet.deliver(&victim, Some(config.clone())),
            Delivery::Queued(_) | Delivery::Pending
        )
    })
    .await;
    eventually("the victim applies", || {
        agent.state().applied_hash().map(|h| &h[..]) == Some(&[0x81; 32][..])
    })
    .await;

    // An impostor claims the victim's uid with another description, over WS and over HTTP.
    let mut ws = ws_connect(addr).await;
    let r = ws_rpc(&mut ws, &hello(victim, 0, "impostor")).await;
    let new = r
        .agent_identification
        .as_ref()
        .map(|a| a.new_instance_uid.clone())
        .expect("the impostor is given a uid of its own");
    assert_ne!(&new[..], &victim[..]);
    assert!(
        r.remote_config.is_none(),
        "the impostor got the victim's config"
    );
    let body = hello(victim, 0, "impostor-http").encode_to_vec();
    let mut req = post_head(addr, body.len(), "").into_bytes();
    req.extend_from_slice(&body);
    let resp = raw_exchange(addr, &req).await;
    assert_eq!(status_of(&resp), Some(200));

    // The victim's record, connection and config are untouched; a new config still reaches it.
    let rec = fleet.agent(&victim).expect("victim record");
    let desc = rec.description.expect("victim description");
    assert_eq!(desc.identifying["service.name"], "victim");
    assert!(rec.connection.connected);
    let mut files = BTreeMap::new();
    files.insert(
        String::new(),
        (Bytes::from_static(b"victim: 2\n"), "text/yaml".to_owned()),
    );
    assert_ne!(
        Delivery::Unknown,
        fleet.deliver(
            &victim,
            Some(Arc::new(RemoteConfig::new(files, [0x82; 32])))
        )
    );
    eventually("the victim applies the next config", || {
        agent.state().applied_hash().map(|h| &h[..]) == Some(&[0x82; 32][..])
    })
    .await;
    assert_eq!(agent.state().redundant_configs_received, 0);
    agent.stop(Duration::from_secs(5)).await;
    well_behaved_agent_is_served(&fleet, addr, 0x83).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_numbers_running_backwards_ask_for_full_state() {
    let (fleet, addr) = start(OpampSettings::default(), None).await;
    let u: Uid = [0x91; 16];
    let mut ws = ws_connect(addr).await;
    let r = ws_rpc(&mut ws, &hello(u, 10, "backwards")).await;
    assert!(r.error_response.is_none());
    ws_rpc(&mut ws, &hb(u, 11)).await;
    // Each step back is answered with ReportFullState; the full report that follows is
    // accepted whatever its number (the server's documented convergence rule).
    for seq in [5, 4, 0, 3] {
        let r = ws_rpc(&mut ws, &hb(u, seq)).await;
        assert_eq!(
            r.flags & FULL_STATE,
            FULL_STATE,
            "seq {seq} after a higher one"
        );
        let r = ws_rpc(&mut ws, &hello(u, seq + 1, "backwards")).await;
        assert_eq!(r.flags & FULL_STATE, 0, "the full report after seq {seq}");
        assert!(r.error_response.is_none());
    }
    // Wrap-around at u64::MAX: no panic, just a resync.
    let r = ws_rpc(&mut ws, &hb(u, u64::MAX)).await;
    assert_eq!(r.flags & FULL_STATE, FULL_STATE);
    ws_rpc(&mut ws, &hello(u, 0, "backwards")).await;
    // The same over HTTP (a new agent is asked for full state at once: the server has no
    // state for it).
    let u2: Uid = [0x92; 16];
    for (seq, want_full) in [(7u64, true), (8, false), (2, true)] {
        let body = if seq == 7 {
            hello(u2, seq, "back-http")
        } else {
            hb(u2, seq)
        }
        .encode_to_vec();
        let mut req = post_head(addr, body.len(), "").into_bytes();
        req.extend_from_slice(&body);
        let resp = raw_exchange(addr, &req).await;
        assert_eq!(status_of(&resp), Some(200));
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head");
        let reply = ServerToAgent::decode(&resp[split + 4..]).expect("reply");
        assert_eq!(
            reply.flags & FULL_STATE == FULL_STATE,
            want_full,
            "http seq {seq}"
        );
    }
    assert!(fleet.agent(&u).is_some_and(|a| a.connection.connected));
    well_behaved_agent_is_served(&fleet, addr, 0x93).await;
}

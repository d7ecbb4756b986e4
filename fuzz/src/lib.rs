//! The bodies of gitamp's fuzz targets, shared by the libFuzzer entries (`fuzz_targets/`) and
//! the stable-toolchain runner (`src/bin/stable_fuzz.rs`), so both exercise exactly the same
//! code. Each function must never panic, whatever the bytes: a panic is a bug in gitamp.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use gitamp_opamp::report::Transport;
use gitamp_opamp::proto::AgentToServer;
use gitamp_opamp::session::{Connection, handle_message};
use gitamp_opamp::websocket::MessageReader;
use gitamp_opamp::{Fleet, RemoteConfig};
use hmac::{KeyInit, Mac};
use prost::Message as _;
use webhook::{WebhookKind, verify_and_parse};

/// gitamp's webhook verifier and parser (`gitamp::source::webhook`), compiled from its source
/// file so that this crate does not depend on the root `gitamp` crate (libgit2, SQLite, the
/// server: minutes of sanitizer builds for one pure function). The file depends only on
/// axum's `HeaderMap`, hmac, sha2, subtle, serde and thiserror.
#[path = "../../src/source/webhook.rs"]
#[allow(dead_code)]
pub mod webhook;

/// Names of the targets, in the order the runner and the script use.
pub const TARGETS: [&str; 4] = ["opamp_decode", "ws_frame", "repo_load", "webhook_parse"];

/// Runs target `name` on `data`; `false` if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "opamp_decode" => opamp_decode(data),
        "ws_frame" => ws_frame(data),
        "repo_load" => repo_load(data),
        "webhook_parse" => webhook_parse(data),
        _ => return false,
    }
    true
}

/// `AgentToServer` decoding (the HTTP body path) and the session rules on a fresh fleet: the
/// message is handled twice on a WebSocket connection (second time = a repeat, which takes
/// the sequence-number paths) and once over HTTP, with a desired config set in between so the
/// push path runs too.
pub fn opamp_decode(data: &[u8]) {
    let Ok(msg) = AgentToServer::decode(data) else {
        return;
    };
    let fleet = Fleet::new();
    let (tx, _rx) = gitamp_opamp::outbox::outbox(16);
    let mut ws = Connection::new(1, Transport::Ws, Some(tx));
    let _ = handle_message(&fleet, &mut ws, msg.clone());
    if let Ok(uid) = <[u8; 16]>::try_from(&msg.instance_uid[..]) {
        let mut files = BTreeMap::new();
        files.insert(
            String::new(),
            (
                Bytes::from_static(b"receivers: {}\n"),
                "text/yaml".to_owned(),
            ),
        );
        fleet.deliver(&uid, Some(Arc::new(RemoteConfig::from_files(files))));
    }
    let reply = handle_message(&fleet, &mut ws, msg.clone());
    let _ = reply.encode();
    let mut http = Connection::new(2, Transport::Http, None);
    let _ = handle_message(&fleet, &mut http, msg);
    let _ = fleet.agents();
}

/// The WebSocket message path: the RFC 6455 frame codec, then the OpAMP header varint and
/// `AgentToServer`.
pub fn ws_frame(data: &[u8]) {
    let _ = gitamp_opamp::frame::decode_frame::<AgentToServer>(Bytes::copy_from_slice(data));
    // The same bytes as a client's byte stream through the server's WebSocket codec: every
    // message it yields until it stops. A slice never pends, so one poll per message does.
    let mut reader = MessageReader::new(data, 64 * 1024);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        let next = std::pin::pin!(reader.next());
        match std::future::Future::poll(next, &mut cx) {
            std::task::Poll::Ready(Ok(_)) => {}
            _ => break,
        }
    }
}

/// The repository loader, validator and renderer on arbitrary bytes as one YAML file of an
/// otherwise valid repository (tests/fixtures/minimal). The first byte picks which file the
/// bytes replace, or adds them as a new file.
pub fn repo_load(data: &[u8]) {
    const FILES: [(&str, &str); 8] = [
        (
            "configurations/dev.yaml",
            include_str!("../../tests/fixtures/minimal/configurations/dev.yaml"),
        ),
        (
            "configurations/prod.yaml",
            include_str!("../../tests/fixtures/minimal/configurations/prod.yaml"),
        ),
        (
            "destinations/backend.yaml",
            include_str!("../../tests/fixtures/minimal/destinations/backend.yaml"),
        ),
        (
            "processors/batch.yaml",
            include_str!("../../tests/fixtures/minimal/processors/batch.yaml"),
        ),
        (
            "sources/app.yaml",
            include_str!("../../tests/fixtures/minimal/sources/app.yaml"),
        ),
        (
            "types/batch.yaml",
            include_str!("../../tests/fixtures/minimal/types/batch.yaml"),
        ),
        (
            "types/otlp-exporter.yaml",
            include_str!("../../tests/fixtures/minimal/types/otlp-exporter.yaml"),
        ),
        (
            "types/otlp.yaml",
            include_str!("../../tests/fixtures/minimal/types/otlp.yaml"),
        ),
    ];
    let (pick, body) = match data.split_first() {
        Some((p, rest)) => (*p as usize, rest),
        None => (FILES.len(), data),
    };
    let mut snap = gitamp_core::Snapshot::new("fuzz");
    for (path, text) in FILES {
        snap.files
            .insert(path.to_owned(), Arc::from(text.as_bytes()));
    }
    let target = FILES
        .get(pick % (FILES.len() + 1))
        .map(|(p, _)| *p)
        .unwrap_or("fuzz/input.yaml");
    snap.files.insert(target.to_owned(), Arc::from(body));
    let _ = gitamp_core::compile(&snap);
}

/// Webhook authentication and payload parsing for each kind. The first byte picks the kind
/// and whether the request is correctly authenticated (so the parser behind the check is
/// reached) or carries the fuzzed bytes as its credentials; the rest is the body.
pub fn webhook_parse(data: &[u8]) {
    const SECRET: &[u8] = b"fuzz-secret";
    let Some((mode, body)) = data.split_first() else {
        return;
    };
    let kind = match mode % 3 {
        0 => WebhookKind::GitHub,
        1 => WebhookKind::GitLab,
        _ => WebhookKind::Generic,
    };
    let authentic = mode & 0x04 == 0;
    let tracked = if mode & 0x08 == 0 { Some("main") } else { None };
    let event = if mode & 0x10 == 0 { "push" } else { "ping" };
    let lossy = String::from_utf8_lossy(body);
    let credential = if authentic {
        match kind {
            WebhookKind::GitHub => {
                let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET) {
                    Ok(m) => m,
                    Err(_) => return,
                };
                mac.update(body);
                format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
            }
            WebhookKind::GitLab => String::from_utf8_lossy(SECRET).into_owned(),
            WebhookKind::Generic => format!("Bearer {}", String::from_utf8_lossy(SECRET)),
        }
    } else {
        lossy.chars().take(200).collect()
    };
    let headers: Vec<(&str, &str)> = match kind {
        WebhookKind::GitHub => vec![
            ("x-hub-signature-256", credential.as_str()),
            ("x-github-event", event),
        ],
        WebhookKind::GitLab => vec![
            ("x-gitlab-token", credential.as_str()),
            (
                "x-gitlab-event",
                if event == "push" {
                    "Push Hook"
                } else {
                    "Tag Push Hook"
                },
            ),
        ],
        WebhookKind::Generic => vec![("authorization", credential.as_str())],
    };
    let _ = verify_and_parse(kind, &headers[..], body, SECRET, tracked);
}

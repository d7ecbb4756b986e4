//! Interop with a client we did not write: three agents of the Python
//! `opentelemetry-opamp-client` (tests/interop/python_agent.py) against the real router.
//!
//! Python is found through `GITAMP_PYTHON`, else `.venv/bin/python` at the workspace root.
//! Neither existing is a failure, not a skip: run `scripts/python-env.sh` first.

mod agent_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_support::{Server, collector_yaml, desired};
use gitamp_opamp::agent::caps;
use gitamp_opamp::report::{RemoteState, Transport};
use gitamp_opamp::{Delivery, RemoteConfig, Uid};
use serde_json::Value;
use sha2::Digest as _;
use tokio::io::{AsyncBufReadExt, BufReader};

const K: usize = 3;
const T: Duration = Duration::from_secs(30);

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("GITAMP_PYTHON") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "GITAMP_PYTHON={} does not exist; run scripts/python-env.sh",
            p.display()
        );
        return p;
    }
    let p = workspace_root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "no Python for the interop test: set GITAMP_PYTHON or run scripts/python-env.sh \
         (creates {} with opentelemetry-opamp-client)",
        p.display()
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_gets_config_and_acknowledges() {
    let py = python();
    let server = Server::start().await;
    let script = workspace_root().join("tests/interop/python_agent.py");
    let workdir = tempfile_dir();
    let mut child = tokio::process::Command::new(&py)
        .arg(&script)
        .args(["--endpoint", &server.http_url()])
        .args(["--agents", &K.to_string()])
        .args(["--duration", "60", "--linger", "5", "--heartbeat", "0.5"])
        .args([
            "--environment",
            "interop-test",
            "--name-prefix",
            "py-interop",
        ])
        .args(["--workdir", workdir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    let events: Arc<Mutex<Vec<Value>>> = Arc::default();
    let stdout = child.stdout.take().unwrap();
    let sink = events.clone();
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<Value>(&line) {
                Ok(v) => sink.lock().unwrap().push(v),
                Err(_) => eprintln!("python_agent (not JSON): {line}"),
            }
        }
    });

    // All three registered, with their descriptions.
    let all = server
        .wait_fleet(T, "3 python agents with descriptions", |a| {
            a.len() == K && a.iter().all(|s| s.description.is_some())
        })
        .await;
    let mut by_name: BTreeMap<String, Uid> = BTreeMap::new();
    for s in &all {
        let l = s.description.as_ref().unwrap().labels();
        by_name.insert(l["service.name"].clone(), s.uid);
    }
    let configs: BTreeMap<String, Arc<RemoteConfig>> = by_name
        .keys()
        .map(|n| (n.clone(), desired(&collector_yaml(n))))
        .collect();
    for (name, id) in &by_name {
        server.hand_over_until_sent(id, &configs[name], T).await;
    }

    for i in 0..K {
        let name = format!("py-interop-{i}");
        let id = by_name
            .get(&name)
            .unwrap_or_else(|| panic!("no agent named {name}: {by_name:?}"));
        let cfg = &configs[&name];
        let snap = server
            .wait_agent(
                id,
                T,
                "APPLIED with the exact hash and an effective config",
                |s| {
                    s.remote_config_status.as_ref().is_some_and(|r| {
                        r.status == RemoteState::Applied && r.hash.as_ref() == cfg.hash()
                    }) && s.effective_config.is_some()
                },
            )
            .await;
        let d = snap.description.as_ref().unwrap();
        assert_eq!(d.identifying["service.name"], name);
        assert_eq!(
            d.identifying["service.instance.id"],
            format!("py-interop-instance-{i}")
        );
        assert_eq!(d.non_identifying["host.name"], format!("py-host-{i}"));
        assert_eq!(d.non_identifying["deployment.environment"], "interop-test");
        assert_eq!(d.non_identifying["os.type"], "linux");
        assert_eq!(snap.capabilities, caps::PYTHON_CLIENT);
        assert_eq!(snap.connection.transport, Transport::Http);
        assert!(snap.connection.connected);
        let eff = snap.effective_config.as_ref().unwrap();
        assert_eq!(eff.len(), 1, "effective config = the received map: {eff:?}");
        assert_eq!(eff[""].body.as_ref(), collector_yaml(&name).as_bytes());
        assert_eq!(eff[""].content_type, "text/yaml");
    }

    // The script exits ~5 s after every agent applied; each agent sends agent_disconnect.
    let status = tokio::time::timeout(T, child.wait())
        .await
        .expect("python_agent.py did not exit")
        .unwrap();
    assert!(status.success(), "python_agent.py exited with {status}");
    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    server
        .wait_fleet(T, "python agents disconnected", |a| {
            a.iter().all(|s| !s.connection.connected)
        })
        .await;

    // What the Python side saw.
    let ev = events.lock().unwrap().clone();
    let of = |kind: &str| -> Vec<&Value> { ev.iter().filter(|e| e["event"] == kind).collect() };
    let exit = of("exit");
    assert_eq!(exit.len(), 1, "events: {ev:#?}");
    assert_eq!(exit[0]["reason"], "all_applied");
    for i in 0..K {
        let name = format!("py-interop-{i}");
        let want = hex::encode(configs[&name].hash());
        let start = of("start")
            .into_iter()
            .find(|e| e["agent"] == i)
            .unwrap()
            .clone();
        assert_eq!(start["client_version"], "0.5b0");
        assert_eq!(
            start["instance_uid"].as_str().unwrap(),
            hex::encode(by_name[&name]),
            "registry uid differs from the client's"
        );
        let applied: Vec<_> = of("applied")
            .into_iter()
            .filter(|e| e["agent"] == i)
            .collect();
        assert_eq!(
            applied.len(),
            1,
            "agent {i} applied {} times: {ev:#?}",
            applied.len()
        );
        assert_eq!(applied[0]["hash"], want);
        let path = applied[0]["files"][0].as_str().unwrap();
        assert_eq!(
            std::fs::read(path).unwrap(),
            collector_yaml(&name).into_bytes(),
            "bytes written by the agent differ from what was sent"
        );
        let received = of("remote_config")
            .into_iter()
            .filter(|e| e["agent"] == i)
            .count();
        assert_eq!(
            received, 1,
            "agent {i} got the config {received} times: {ev:#?}"
        );
        // Its numbering repeats and skips; ReportFullState must converge, not loop (one
        // for the first message without status, about one per skip; a loop would be one per
        // heartbeat, ~16 here).
        let full = of("full_state_requested")
            .into_iter()
            .filter(|e| e["agent"] == i)
            .count();
        assert!(full <= 6, "agent {i}: {full} full-state requests: {ev:#?}");
        assert!(of("duplicate_config").is_empty());
        assert!(of("failed").is_empty());
        assert!(of("server_error").is_empty(), "{ev:#?}");
    }
    let _ = std::fs::remove_dir_all(&workdir);
}

/// A fresh directory for the configs the Python agents write.
fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "gitamp-py-interop-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The server's own WebSocket codec against `websockets`, a strict RFC 6455 client we did not
/// write (tests/interop/ws_client.py): plain and fragmented messages, a ping, a text frame, a
/// config push read by the client and acknowledged, and the close handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_client_talks_to_our_websocket_codec() {
    let py = python();
    let server = Server::start().await;
    let script = workspace_root().join("tests/interop/ws_client.py");
    let mut child = tokio::process::Command::new(&py)
        .arg(&script)
        .args(["--url", &server.ws_url(), "--name", "py-ws"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(T, lines.next_line())
            .await
            .expect("ws_client.py went quiet")
            .unwrap()
            .expect("ws_client.py ended early");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };

    let start = next().await;
    let uid_hex = start["instance_uid"].as_str().unwrap().to_string();
    let reply = next().await;
    assert_eq!(reply["event"], "reply");
    assert_eq!(reply["uid"], uid_hex);
    assert_ne!(reply["capabilities"], 0);
    assert_eq!(next().await["uid"], uid_hex, "fragmented message answered");
    assert_eq!(next().await["ok"], true, "ping answered with pong");
    assert_eq!(
        next().await["error"],
        true,
        "text frame answered with an error"
    );
    assert_eq!(next().await["event"], "ready");

    // Push a config through the registry: the client reads it as one message.
    let uid: Uid = hex::decode(&uid_hex).unwrap().try_into().unwrap();
    let body = collector_yaml("py-ws");
    let config = desired(&body);
    assert_ne!(
        Delivery::Unknown,
        server.fleet.deliver(&uid, Some(config.clone()))
    );
    let pushed = next().await;
    assert_eq!(pushed["hash"], hex::encode(config.hash()));
    assert_eq!(
        pushed["files"][""],
        hex::encode(sha2::Sha256::digest(body.as_bytes())),
        "the pushed body arrived intact"
    );
    server
        .wait_agent(&uid, T, "APPLIED with the pushed hash", |s| {
            s.remote_config_status.as_ref().is_some_and(|r| {
                r.status == RemoteState::Applied && r.hash.as_ref() == config.hash()
            })
        })
        .await;

    let closed = next().await;
    assert_eq!(closed["received"], 1000, "the server echoed the close code");
    let status = tokio::time::timeout(T, child.wait())
        .await
        .expect("ws_client.py did not exit")
        .unwrap();
    assert!(status.success(), "ws_client.py exited with {status}");
}

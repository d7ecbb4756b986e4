//! Notifications end to end: a running `gitamp serve` with `--notifications`, a real Git
//! remote, simulated agents, and a local HTTP receiver standing in for a generic webhook
//! (which checks the HMAC signature) and a Slack-compatible incoming webhook (the documented
//! `{"text": ...}` body). Slack itself cannot be reached from here; the receiver checks the
//! request shape Slack documents for incoming webhooks.
//!
//! Covered: a rollout completing, a rejected revision, the source unreachable for longer than
//! the threshold and its recovery; a failed delivery retried with backoff (the receiver answers
//! the first request 503); each endpoint gets only the events it lists; the outcome metric.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use gitamp_opamp::agent::AgentHandle;
use support::agents::stop_all;
use support::{GitOpsServer, eventually, metric, start_agents, wait_all_applied};

const WAIT: Duration = Duration::from_secs(90);
const SECRET: &str = "pager-shared-secret";
const CONFIG: &str = "linux-production";

/// What the receiver got: (endpoint, headers, JSON body).
#[derive(Clone, Default)]
struct Received {
    requests: Arc<Mutex<Vec<(String, HeaderMap, serde_json::Value)>>>,
    /// Requests refused so far (the first pager request is refused with 503).
    refused: Arc<Mutex<usize>>,
}

impl Received {
    fn bodies(&self, endpoint: &str) -> Vec<serde_json::Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(e, _, _)| e == endpoint)
            .map(|(_, _, b)| b.clone())
            .collect()
    }

    /// The pager notifications of `kind`.
    fn pager(&self, kind: &str) -> Vec<serde_json::Value> {
        self.bodies("pager")
            .into_iter()
            .filter(|b| b["kind"] == kind)
            .collect()
    }
}

async fn receive(
    State(got): State<Received>,
    UrlPath(endpoint): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if endpoint == "pager" {
        let mut refused = got.refused.lock().unwrap();
        if *refused == 0 {
            *refused += 1;
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        let signature = headers
            .get("X-Gitamp-Signature-256")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if gitamp::source::webhook::verify_github_signature(
            SECRET.as_bytes(),
            &body,
            signature.as_bytes(),
        )
        .is_err()
        {
            return StatusCode::UNAUTHORIZED;
        }
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE;
    }
    got.requests.lock().unwrap().push((endpoint, headers, json));
    StatusCode::OK
}

async fn start_receiver() -> (Received, u16) {
    let got = Received::default();
    let app = Router::new()
        .route("/hooks/{endpoint}", post(receive))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (got, port)
}

const BROKEN: &str = "apiVersion: gitamp.dev/v1\nkind: Configuration\nmetadata:\n  name: broken\nspec:\n  priority: 50\n  selector:\n    matchLabels: {team: nobody}\n  sources: [otlp-default]\n  destinations: [does-not-exist]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_endpoints_that_list_them_with_retries() {
    let (got, port) = start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pager-secret"), format!("{SECRET}\n")).unwrap();
    std::fs::write(
        dir.path().join("chat-url"),
        format!("http://127.0.0.1:{port}/hooks/chat\n"),
    )
    .unwrap();
    let file = dir.path().join("notifications.yaml");
    std::fs::write(
        &file,
        format!(
            "sourceUnreachableAfter: 1s\n\
             endpoints:\n\
             - name: pager\n  type: webhook\n  url: http://127.0.0.1:{port}/hooks/pager\n  \
               secretFile: pager-secret\n\
             - name: chat\n  type: slack\n  urlFile: chat-url\n  \
               events: [revision-rejected, rollout-completed]\n"
        ),
    )
    .unwrap();
    let mut gitops =
        GitOpsServer::start("example-repo", &["--notifications", file.to_str().unwrap()]);
    let agents: Vec<AgentHandle> = start_agents(4, "notify-linux", &gitops.server.ws_url());
    let first = gitops.fixture.expected_hashes()[CONFIG];
    wait_all_applied(&agents, first, WAIT, "the first revision is applied").await;

    // 1. A change rolls out to every agent: rollout-completed, to both endpoints.
    gitops.fixture.set_team("notified");
    gitops.commit_and_announce("a change that rolls out").await;
    let second = gitops.fixture.expected_hashes()[CONFIG];
    wait_all_applied(&agents, second, WAIT, "the change is applied").await;
    eventually(
        WAIT,
        "rollout-completed reaches both endpoints",
        async || {
            let pager = got.pager("rollout-completed");
            let chat = got.bodies("chat");
            let for_config = |b: &serde_json::Value| {
                b.to_string().contains(CONFIG) && b.to_string().contains(&second.short())
            };
            if pager.iter().any(for_config) && chat.iter().any(for_config) {
                Ok(())
            } else {
                Err(format!("pager {pager:?}, chat {chat:?}"))
            }
        },
    )
    .await;
    assert!(
        *got.refused.lock().unwrap() == 1,
        "the first pager request was refused, so this one came by a retry"
    );

    // 2. A bad commit: revision-rejected, naming the revision.
    gitops.fixture.write("configurations/broken.yaml", BROKEN);
    let bad = gitops.commit_and_announce("a bad commit").await;
    eventually(
        WAIT,
        "revision-rejected reaches both endpoints",
        async || {
            let pager = got.pager("revision-rejected");
            let chat: Vec<_> = got
                .bodies("chat")
                .into_iter()
                .filter(|b| {
                    b["text"]
                        .as_str()
                        .unwrap_or("")
                        .contains("revision-rejected")
                })
                .collect();
            if pager
                .iter()
                .any(|b| b["message"].as_str().unwrap_or("").contains(&bad))
                && chat
                    .iter()
                    .any(|b| b["text"].as_str().unwrap_or("").contains(&bad))
            {
                Ok(())
            } else {
                Err(format!("pager {pager:?}, chat {chat:?}"))
            }
        },
    )
    .await;
    let rejected = &got.pager("revision-rejected")[0];
    assert_eq!(
        rejected["revision"].as_str().map(str::len),
        Some(40),
        "{rejected}"
    );
    assert!(
        rejected["source"]
            .as_str()
            .unwrap_or("")
            .starts_with("file://"),
        "{rejected}"
    );
    assert!(
        rejected["at"].as_str().unwrap_or("").ends_with('Z'),
        "{rejected}"
    );

    // 3. The remote goes away for longer than sourceUnreachableAfter, then comes back.
    let remote = gitops.fixture.dir.path().join("remote.git");
    let away = gitops.fixture.dir.path().join("remote-away.git");
    std::fs::rename(&remote, &away).unwrap();
    support::post_webhook(&gitops.server, &gitops.token).await;
    eventually(WAIT, "source-unreachable reaches the pager", async || {
        let n = got.pager("source-unreachable");
        if n.is_empty() {
            Err("none yet".to_string())
        } else {
            Ok(n)
        }
    })
    .await;
    std::fs::rename(&away, &remote).unwrap();
    support::post_webhook(&gitops.server, &gitops.token).await;
    eventually(WAIT, "source-recovered reaches the pager", async || {
        let n = got.pager("source-recovered");
        if n.is_empty() {
            Err("none yet".to_string())
        } else {
            Ok(n)
        }
    })
    .await;
    assert_eq!(got.pager("source-unreachable").len(), 1, "told once");

    // The chat endpoint got only the kinds it lists, each in Slack's shape.
    for body in got.bodies("chat") {
        let text = body["text"].as_str().unwrap_or("");
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
        assert!(
            text.contains("rollout-completed") || text.contains("revision-rejected"),
            "chat got a kind it does not list: {text}"
        );
    }
    assert!(metric(&gitops.server, "gitamp_notifications_total").await >= 4.0);
    let scrape = support::server::scrape(&gitops.server).await;
    assert!(
        scrape.contains(r#"gitamp_notifications_total{endpoint="pager",outcome="retried"} 1"#),
        "{scrape}"
    );
    assert!(
        scrape.contains(r#"gitamp_notifications_total{endpoint="chat",outcome="dropped"} 0"#),
        "every outcome exists from the start: {scrape}"
    );
    stop_all(&agents).await;
    gitops.server.kill9();
}

#[test]
fn a_bad_notifications_file_stops_the_start_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notifications.yaml");
    std::fs::write(
        &file,
        "endpoints:\n- {name: chat, type: slack, url: 'https://x', events: [rollout-halt]}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gitamp"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--notifications")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--notifications"), "{stderr}");
    assert!(
        stderr.contains("unknown event \"rollout-halt\""),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists());
}

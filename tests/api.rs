//! The status API over a real socket: a real `Fleet` fed through the OpAMP session rules, a
//! real compile of `tests/fixtures/api-repo` being served, a hand-made `FleetView`; then every
//! route, the auth, the webhooks, and the `gitamp agents` / `gitamp status` commands.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt;
use gitamp::server::events::{Event, Masked};
use gitamp::server::state::{
    AgentView, AgentViews, AppState, ConfigurationView, FleetView, RevisionView, Serving, SyncView,
};
use gitamp_core::plan::ObservedAgent;
use gitamp_core::{ConfigHash, Revision};
use gitamp_opamp::Fleet;
use gitamp_opamp::proto::{self, AgentCapabilities as Cap};
use gitamp_opamp::report::Transport;
use gitamp_opamp::session::{Connection, handle_message};
use gitamp_opamp::wire::uid_text;
use serde_json::{Value, json};
use support::ROUTES;
use support::cli::gitamp_async;
use support::wire::{kv, uid};

const SECRET: &str = "SUPERSECRET-api-key-1234";
const GITHUB_SECRET: &str = "gh-hook-secret";
const GITLAB_TOKEN: &str = "gl-hook-token";
const GENERIC_TOKEN: &str = "generic-hook-token";
const API_TOKEN: &str = "api-token-xyz";

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/api-repo")
}

fn compile_fixture() -> Revision {
    let snapshot = gitamp::cli::fsread::read_dir_snapshot(&fixture_dir()).expect("fixture reads");
    gitamp_core::compile(&snapshot).expect("fixture repository compiles")
}

const CAPS: u64 = Cap::ReportsStatus as u64
    | Cap::AcceptsRemoteConfig as u64
    | Cap::ReportsEffectiveConfig as u64
    | Cap::ReportsHealth as u64
    | Cap::ReportsRemoteConfig as u64;

struct Report<'a> {
    n: u8,
    env: &'a str,
    effective: Option<&'a str>,
    remote: Option<(ConfigHash, proto::RemoteConfigStatuses, &'a str)>,
    healthy: bool,
}

/// Feed one agent into the fleet the way the OpAMP transports do.
fn report(fleet: &Fleet, r: Report<'_>) {
    let msg = proto::AgentToServer {
        instance_uid: Bytes::copy_from_slice(&uid(r.n)),
        sequence_num: 0,
        capabilities: CAPS,
        agent_description: Some(proto::AgentDescription {
            identifying_attributes: vec![
                kv("service.name", "otelcol"),
                kv("service.instance.id", &format!("i-{}", r.n)),
            ],
            non_identifying_attributes: vec![
                kv("deployment.environment", r.env),
                kv("host.name", &format!("host-{}", r.n)),
                kv(
                    "os.type",
                    if r.n.is_multiple_of(2) {
                        "linux"
                    } else {
                        "windows"
                    },
                ),
            ],
        }),
        health: Some(proto::ComponentHealth {
            healthy: r.healthy,
            last_error: if r.healthy {
                String::new()
            } else {
                format!("exporter rejected key {SECRET}")
            },
            component_health_map: BTreeMap::from([(
                "pipeline:logs".to_string(),
                proto::ComponentHealth {
                    healthy: r.healthy,
                    ..Default::default()
                },
            )]),
            ..Default::default()
        }),
        effective_config: r.effective.map(|body| proto::EffectiveConfig {
            config_map: Some(proto::AgentConfigMap {
                config_map: BTreeMap::from([(
                    String::new(),
                    proto::AgentConfigFile {
                        body: Bytes::copy_from_slice(body.as_bytes()),
                        content_type: "text/yaml".into(),
                    },
                )]),
            }),
        }),
        remote_config_status: r
            .remote
            .map(|(hash, status, error)| proto::RemoteConfigStatus {
                last_remote_config_hash: Bytes::copy_from_slice(hash.as_bytes()),
                status: status as i32,
                error_message: error.into(),
            }),
        ..Default::default()
    };
    let mut conn = Connection::new(u64::from(r.n), Transport::Http, None);
    let _reply = handle_message(fleet, &mut conn, msg);
}

fn view(
    status: &str,
    configuration: Option<&str>,
    hash: Option<ConfigHash>,
    reason: Option<&str>,
) -> AgentView {
    AgentView {
        status: status.into(),
        configuration: configuration.map(Into::into),
        desired_hash: hash,
        reason: reason.map(Into::into),
        last_applied: None,
        sent: None,
        failed_hashes: Vec::new(),
        installed_version: None,
        upgrade: None,
    }
}

struct Server {
    base: String,
    state: Arc<AppState>,
}

/// Build the whole fixture state and serve the router on 127.0.0.1:0.
async fn start(token: Option<&str>, serve_revision: bool) -> Server {
    let rev = compile_fixture();
    let prod = rev.rendered.configurations["production"].clone();
    let staging = rev.rendered.configurations["staging"].clone();
    assert!(
        prod.yaml.contains(SECRET),
        "the fixture must carry a literal secret"
    );

    let fleet = Arc::new(Fleet::new());
    // 1: production, synced, echoes back the unmasked YAML it received as effective config.
    report(
        &fleet,
        Report {
            n: 1,
            env: "production",
            effective: Some(&prod.yaml),
            remote: Some((prod.hash, proto::RemoteConfigStatuses::Applied, "")),
            healthy: true,
        },
    );
    // 2: production, failed; its error quotes the secret.
    let failed_error = format!("exporter: invalid api key {SECRET}");
    report(
        &fleet,
        Report {
            n: 2,
            env: "production",
            effective: Some("receivers: {}\n"),
            remote: Some((
                prod.hash,
                proto::RemoteConfigStatuses::Failed,
                &failed_error,
            )),
            healthy: false,
        },
    );
    // 3..=6: staging, pending (6 reports an effective config that is not YAML); 7: unmanaged;
    // 8: not planned yet.
    for n in 3..=6 {
        report(
            &fleet,
            Report {
                n,
                env: "staging",
                effective: (n == 6).then_some("receivers: [unclosed\n"),
                remote: None,
                healthy: true,
            },
        );
    }
    report(
        &fleet,
        Report {
            n: 7,
            env: "dev",
            effective: None,
            remote: None,
            healthy: true,
        },
    );
    report(
        &fleet,
        Report {
            n: 8,
            env: "dev",
            effective: None,
            remote: None,
            healthy: true,
        },
    );

    let mut agents = AgentViews::default();
    agents.insert(
        uid(1),
        view("synced", Some("production"), Some(prod.hash), None),
    );
    // The planner's record of a failed agent carries the hash it failed (the view shows it).
    let mut failed = view(
        "failed",
        Some("production"),
        Some(prod.hash),
        Some(&failed_error),
    );
    failed.failed_hashes = vec![prod.hash];
    agents.insert(uid(2), failed);
    for n in 3..=6 {
        agents.insert(
            uid(n),
            view("pending", Some("staging"), Some(staging.hash), None),
        );
    }
    agents.insert(uid(7), view("unmanaged", None, None, None));
    let mut counts = BTreeMap::new();
    for (_, v) in agents.iter() {
        *counts.entry(v.status.clone()).or_insert(0) += 1;
    }
    let connected = fleet
        .agents()
        .iter()
        .filter(|a| a.connection.connected)
        .count();
    let fleet_view = FleetView {
        agents,
        connected,
        configurations: BTreeMap::from([
            (
                "production".to_string(),
                ConfigurationView {
                    hash: Some(prod.hash),
                    matched_agents: 2,
                    counts: BTreeMap::from([("synced".into(), 1), ("failed".into(), 1)]),
                    rollout: Some(json!({"phase": "halted", "batch": 1, "synced": 1, "failed": 1})),
                    rollout_halted: true,
                    upgrade: None,
                },
            ),
            (
                "staging".to_string(),
                ConfigurationView {
                    hash: Some(staging.hash),
                    matched_agents: 4,
                    counts: BTreeMap::from([("pending".into(), 4)]),
                    rollout: None,
                    rollout_halted: false,
                    upgrade: None,
                },
            ),
        ]),
        counts,
        computed_at: Some(SystemTime::now()),
    };

    let rejected = gitamp_core::compile(
        &gitamp::cli::fsread::read_dir_snapshot(&fixture_dir())
            .expect("fixture reads")
            .with_file("configurations/broken.yaml", "apiVersion: gitamp.dev/v1\nkind: Configuration\nmetadata: {name: broken}\nspec:\n  destinations: [nowhere]\n"),
    )
    .expect_err("the broken revision is rejected");
    let rejected_record = RevisionView::seen("bad0000", false, &rejected.diagnostics);

    let mut state = AppState::new(Arc::clone(&fleet), gitamp::telemetry::install());
    state.api_token = token.map(Into::into);
    state.webhooks.github_secret = Some(GITHUB_SECRET.into());
    state.webhooks.gitlab_token = Some(GITLAB_TOKEN.into());
    state.webhooks.generic_token = Some(GENERIC_TOKEN.into());
    state.webhooks.tracked_ref = "main".into();
    state.poller = Some(Arc::new(tokio::sync::Notify::new()));
    state.view.store(Arc::new(fleet_view));
    *state.sync.lock().unwrap() = SyncView {
        source: "https://git.example/fleet.git".into(),
        reference: Some("main".into()),
        sub_path: None,
        current_revision: None,
        last_fetch: Some(SystemTime::now()),
        last_success: Some(SystemTime::now()),
        last_fetch_duration_ms: Some(42),
        last_error: None,
        consecutive_failures: 0,
        next_retry: None,
        last_rejected: Some(rejected_record.clone()),
    };
    {
        let mut h = state.history.lock().unwrap();
        h.record_revision(RevisionView::seen(&rev.revision, true, &rev.warnings));
        h.record_revision(rejected_record);
    }
    state.emit(Event::Pushed {
        agent: uid(1),
        configuration: Some("linux".into()),
        hash: ConfigHash([7; 32]),
    });
    state.emit(Event::Applied { agent: uid(1) });
    state.emit(Event::Failed {
        agent: uid(2),
        error: Masked::new("config failed", &[]),
    });
    state.emit(Event::RevisionRejected {
        revision: "bad0000".into(),
        errors: 1,
        first: None,
    });
    if serve_revision {
        state
            .serving
            .store(Some(Arc::new(Serving::new(Arc::new(rev), BTreeMap::new()))));
    }
    let state = Arc::new(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let app = gitamp::api::router(Arc::clone(&state));
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    Server {
        base: format!("http://{addr}"),
        state,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn get(base: &str, path: &str) -> (u16, Value) {
    let resp = client()
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let body = resp.text().await.expect("body");
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, json)
}

#[tokio::test]
async fn health_status_and_readiness() {
    let s = start(None, true).await;
    let (code, body) = get(&s.base, "/healthz").await;
    assert_eq!((code, body["status"].as_str()), (200, Some("ok")));
    let (code, body) = get(&s.base, "/readyz").await;
    assert_eq!(code, 200, "{body}");

    let (code, st) = get(&s.base, "/api/v1/status").await;
    assert_eq!(code, 200);
    assert_eq!(st["source"], "https://git.example/fleet.git");
    assert_eq!(st["ref"], "main");
    assert!(
        st["current_revision"]
            .as_str()
            .is_some_and(|r| r.starts_with("content-")),
        "{st}"
    );
    assert!(st["accepted_at"].is_string());
    assert_eq!(st["last_fetch_duration_ms"], 42);
    assert_eq!(st["agents"]["total"], 8);
    assert_eq!(st["agents"]["by_status"]["pending"], 4);
    assert_eq!(
        st["agents"]["by_status"]["drifted"], 0,
        "every status is listed"
    );
    assert_eq!(st["last_rejected"]["revision"], "bad0000");
    assert!(st["last_rejected"]["errors"].as_u64().unwrap() >= 1);
    let diag = &st["last_rejected"]["diagnostics"][0];
    assert!(
        diag["file"]
            .as_str()
            .is_some_and(|f| f.contains("broken.yaml")),
        "{diag}"
    );
    assert!(diag["line"].as_u64().is_some_and(|l| l > 0));
    assert!(st["uptime_seconds"].is_u64());

    // Not ready before the first accepted revision, with the reason.
    let s = start(None, false).await;
    let (code, body) = get(&s.base, "/readyz").await;
    assert_eq!(code, 503);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("bad0000")),
        "{body}"
    );
    let (code, body) = get(&s.base, "/api/v1/configurations").await;
    assert_eq!(code, 200);
    assert_eq!(body["items"], json!([]));
    let (code, _) = get(&s.base, "/api/v1/configurations/production/rendered").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn agents_list_filters_and_pages() {
    let s = start(None, true).await;
    let (code, page) = get(&s.base, "/api/v1/agents").await;
    assert_eq!(code, 200);
    assert_eq!(
        (
            page["total"].as_u64(),
            page["offset"].as_u64(),
            page["limit"].as_u64()
        ),
        (Some(8), Some(0), Some(100))
    );
    let first = &page["items"][0];
    assert_eq!(first["uid"], uid_text(&uid(1)));
    assert_eq!(first["status"], "synced");
    assert_eq!(first["configuration"], "production");
    assert_eq!(first["labels"]["deployment.environment"], "production");
    assert_eq!(first["reported_hash"], first["desired_hash"]);
    assert_eq!(first["remote_status"], "APPLIED");
    assert_eq!(first["connected"], true);
    assert_eq!(first["transport"], "http");
    assert_eq!(first["healthy"], true);
    assert!(
        first["last_seen"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let second = &page["items"][1];
    assert_eq!(second["remote_status"], "FAILED");
    let err = second["remote_error"].as_str().unwrap();
    assert!(err.contains("***") && !err.contains(SECRET), "{err}");
    assert_eq!(
        page["items"][7]["status"], "unknown",
        "agent 8 is not planned yet"
    );

    // Pagination: three pages of 3, stable order, no overlap.
    let mut seen = Vec::new();
    for offset in [0, 3, 6] {
        let (_, p) = get(&s.base, &format!("/api/v1/agents?limit=3&offset={offset}")).await;
        assert_eq!(p["total"], 8);
        seen.extend(
            p["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["uid"].as_str().unwrap().to_string()),
        );
    }
    let expected: Vec<String> = (1..=8).map(|n| uid_text(&uid(n))).collect();
    assert_eq!(seen, expected);
    let (_, p) = get(&s.base, "/api/v1/agents?offset=100").await;
    assert_eq!(
        (p["total"].as_u64(), p["items"].as_array().map(Vec::len)),
        (Some(8), Some(0))
    );

    // Filters.
    let count = |p: &Value| p["total"].as_u64().unwrap();
    assert_eq!(
        count(&get(&s.base, "/api/v1/agents?status=pending").await.1),
        4
    );
    assert_eq!(
        count(&get(&s.base, "/api/v1/agents?status=synced,failed").await.1),
        2
    );
    assert_eq!(
        count(&get(&s.base, "/api/v1/agents?configuration=staging").await.1),
        4
    );
    assert_eq!(
        count(
            &get(
                &s.base,
                "/api/v1/agents?selector=deployment.environment%3Dproduction"
            )
            .await
            .1
        ),
        2
    );
    assert_eq!(count(&get(&s.base, "/api/v1/agents?selector=deployment.environment%20in%20(staging,dev),os.type!%3Dwindows").await.1), 3);
    assert_eq!(
        count(&get(&s.base, "/api/v1/agents?selector=!host.name").await.1),
        0
    );
    let (_, all) = get(&s.base, "/api/v1/agents?status=&configuration=&selector=").await;
    assert_eq!(count(&all), 8, "empty filters filter nothing");
    assert_eq!(
        count(
            &get(
                &s.base,
                "/api/v1/agents?status=pending&selector=os.type%3Dlinux&limit=1"
            )
            .await
            .1
        ),
        2
    );

    // Bad input is a JSON 400.
    let (code, body) = get(&s.base, "/api/v1/agents?selector=k%20in%20(a").await;
    assert_eq!(code, 400);
    assert!(body["error"].is_string());
    // A status that is not one is refused, naming the real ones (a typo is not "no agents").
    let (code, body) = get(&s.base, "/api/v1/agents?status=synched").await;
    assert_eq!(code, 400, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("`synched`") && error.contains("synced, pending"),
        "{error}"
    );
    // The selector rules are the repository's: `notin ()` is E032, not "every agent".
    let (code, body) = get(&s.base, "/api/v1/agents?selector=os.type%20notin%20()").await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("E032"),
        "{body}"
    );
    // Values without parentheses: the error says where they go.
    let (code, body) = get(&s.base, "/api/v1/agents?selector=os.type%20in%20linux").await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("`os.type in (linux)`"),
        "{body}"
    );
}

/// One paging rule on every list route: `limit` 1 to 1000 (default 100), `offset` 0 to
/// 1,000,000,000; anything else is a JSON 400 naming the parameter and its range, never a clamp
/// nor the query decoder's own words.
#[tokio::test]
async fn every_list_route_pages_by_one_rule() {
    let s = start(None, true).await;
    for route in ["/api/v1/agents", "/api/v1/revisions", "/api/v1/events"] {
        let (code, page) = get(&s.base, route).await;
        assert_eq!(code, 200, "{route}: {page}");
        assert_eq!(
            (page["offset"].as_u64(), page["limit"].as_u64()),
            (Some(0), Some(100)),
            "{route}"
        );
        let total = page["total"].as_u64().unwrap_or_default();
        assert!(total >= 2, "{route}: {page}");
        assert_eq!(
            page["items"].as_array().map(Vec::len),
            usize::try_from(total).ok(),
            "{route}"
        );

        // The second item alone, then past the end.
        let (_, one) = get(&s.base, &format!("{route}?limit=1&offset=1")).await;
        assert_eq!(one["items"].as_array().map(Vec::len), Some(1), "{route}");
        assert_eq!(one["items"][0], page["items"][1], "{route}");
        assert_eq!(one["total"], page["total"], "{route}");
        let (_, past) = get(&s.base, &format!("{route}?offset=1000000000&limit=1000")).await;
        assert_eq!(past["items"], json!([]), "{route}");

        for (query, named) in [
            ("limit=0", "`limit` must be an integer from 1 to 1000"),
            ("limit=1001", "`limit` must be an integer from 1 to 1000"),
            ("limit=5000", "`limit` must be an integer from 1 to 1000"),
            ("limit=ten", "`limit` must be an integer from 1 to 1000"),
            ("limit=", "`limit` must be an integer from 1 to 1000"),
            (
                "limit=18446744073709551616",
                "`limit` must be an integer from 1 to 1000",
            ),
            (
                "offset=-1",
                "`offset` must be an integer from 0 to 1000000000",
            ),
            (
                "offset=1000000001",
                "`offset` must be an integer from 0 to 1000000000",
            ),
            (
                "offset=99999999999999999999999",
                "`offset` must be an integer from 0 to 1000000000",
            ),
            ("limit=1&limit=2", "`limit` is given more than once"),
        ] {
            let (code, body) = get(&s.base, &format!("{route}?{query}")).await;
            assert_eq!(code, 400, "{route}?{query}: {body}");
            let error = body["error"].as_str().unwrap_or_default();
            assert!(error.contains(named), "{route}?{query}: {error}");
        }
    }
}

/// An empty filter filters nothing, on every route; a value that can never match is a 400
/// naming the real ones.
#[tokio::test]
async fn empty_filters_filter_nothing_on_every_route() {
    let s = start(None, true).await;
    let total = |p: &Value| p["total"].as_u64();
    let (_, agents) = get(&s.base, "/api/v1/agents").await;
    let (code, filtered) = get(&s.base, "/api/v1/agents?status=&configuration=&selector=").await;
    assert_eq!(
        (code, total(&filtered)),
        (200, total(&agents)),
        "{filtered}"
    );
    let (_, events) = get(&s.base, "/api/v1/events").await;
    assert!(total(&events) >= Some(4), "{events}");
    let (code, filtered) = get(&s.base, "/api/v1/events?agent=&kind=").await;
    assert_eq!(
        (code, total(&filtered)),
        (200, total(&events)),
        "{filtered}"
    );

    let (code, body) = get(&s.base, "/api/v1/events?kind=aplied").await;
    assert_eq!(code, 400, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("`aplied`") && error.contains("applied, failed"),
        "{error}"
    );
    let (code, only) = get(&s.base, "/api/v1/events?kind=applied").await;
    assert_eq!((code, total(&only)), (200, Some(1)), "{only}");
}

#[tokio::test]
async fn agent_detail_masks_and_diffs() {
    let s = start(None, true).await;
    let (code, a) = get(&s.base, &format!("/api/v1/agents/{}", uid_text(&uid(1)))).await;
    assert_eq!(code, 200);
    let text = a.to_string();
    assert!(!text.contains(SECRET), "the secret leaked: {text}");
    assert_eq!(a["uid"], uid_text(&uid(1)));
    assert_eq!(a["description"]["identifying"]["service.name"], "otelcol");
    assert_eq!(a["capabilities"]["bits"], CAPS);
    let names: Vec<&str> = a["capabilities"]["names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        names.contains(&"AcceptsRemoteConfig") && names.contains(&"ReportsRemoteConfig"),
        "{names:?}"
    );
    assert_eq!(a["health"]["components"]["pipeline:logs"]["healthy"], true);
    assert!(a["desired_config"].as_str().unwrap().contains("***"));
    assert!(a["effective_config"].as_str().unwrap().contains("***"));
    assert_eq!(
        a["config_diff"], "",
        "agent 1 runs exactly the desired config"
    );
    assert_eq!(a["config_same_meaning"], true);
    assert_eq!(a["config_compare_error"], Value::Null);
    let kinds: Vec<&str> = a["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["applied", "pushed"], "its own events, newest first");

    // Agent 2 runs something else: a real diff, and its health error is masked.
    let (_, a) = get(&s.base, &format!("/api/v1/agents/{}", uid_text(&uid(2)))).await;
    assert!(!a.to_string().contains(SECRET));
    let diff = a["config_diff"].as_str().unwrap();
    assert!(
        diff.contains("--- desired") && diff.contains("+++ effective"),
        "{diff}"
    );
    assert!(diff.contains("-exporters:"), "{diff}");
    // By meaning: its components and pipelines are missing.
    assert_eq!(a["config_same_meaning"], false);
    let missing: Vec<&str> = a["config_differences"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "missing")
        .filter_map(|d| d["path"].as_str())
        .collect();
    assert!(missing.contains(&"exporters"), "{missing:?}");

    assert_eq!(
        a["reported_status"]["failed"]["error"],
        "exporter: invalid api key ***"
    );

    // Agent 6 reports an effective config that is not YAML: shown as sent, not compared, and
    // the view says why.
    let (_, a) = get(&s.base, &format!("/api/v1/agents/{}", uid_text(&uid(6)))).await;
    assert_eq!(a["config_same_meaning"], Value::Null);
    assert!(
        a["config_compare_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("the effective config is not YAML")),
        "{a}"
    );

    // Simple-form UUIDs work too; unknown and malformed ids are JSON 404s.
    let simple = uuid::Uuid::from_bytes(uid(3)).simple().to_string();
    assert_eq!(
        get(&s.base, &format!("/api/v1/agents/{simple}")).await.0,
        200
    );
    for id in [uid_text(&uid(99)), "not-a-uuid".to_string()] {
        let (code, body) = get(&s.base, &format!("/api/v1/agents/{id}")).await;
        assert_eq!(code, 404);
        assert!(body["error"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn configurations_revisions_events() {
    let s = start(None, true).await;
    let (code, list) = get(&s.base, "/api/v1/configurations").await;
    assert_eq!(code, 200);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["production", "staging"]);
    let prod = &list["items"][0];
    assert_eq!(prod["priority"], 10);
    assert_eq!(
        prod["selector"]["matchLabels"]["deployment.environment"],
        "production"
    );
    assert_eq!(prod["rollout_policy"]["strategy"], "Batched");
    assert_eq!(prod["matched_agents"], 2);
    assert_eq!(prod["counts"]["failed"], 1);
    assert_eq!(prod["rollout"]["phase"], "halted");
    assert_eq!(prod["hash"].as_str().map(str::len), Some(64));
    assert_eq!(prod["destinations"], json!(["vendor-prod"]));

    let (code, one) = get(&s.base, "/api/v1/configurations/staging").await;
    assert_eq!(code, 200);
    assert_eq!(one["agents"].as_array().map(Vec::len), Some(4));
    assert_eq!(get(&s.base, "/api/v1/configurations/nope").await.0, 404);

    let resp = client()
        .get(format!(
            "{}/api/v1/configurations/production/rendered",
            s.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/yaml")
    );
    let yaml = resp.text().await.unwrap();
    assert!(yaml.contains("***") && !yaml.contains(SECRET), "{yaml}");
    assert!(yaml.contains("otlp/dst-vendor-prod"));
    assert_eq!(
        get(&s.base, "/api/v1/configurations/nope/rendered").await.0,
        404
    );

    let (_, revs) = get(&s.base, "/api/v1/revisions").await;
    let revs = revs["items"].as_array().unwrap();
    assert_eq!(revs[0]["revision"], "bad0000", "newest first");
    assert_eq!(revs[0]["accepted"], false);
    assert_eq!(revs[1]["accepted"], true);

    let (_, ev) = get(&s.base, "/api/v1/events").await;
    assert_eq!(ev["items"][0]["kind"], "revision-rejected");
    let (_, ev) = get(
        &s.base,
        &format!("/api/v1/events?agent={}&limit=1", uid_text(&uid(1))),
    )
    .await;
    assert_eq!(ev["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(ev["items"][0]["kind"], "applied");
    assert_eq!(get(&s.base, "/api/v1/events?agent=zzz").await.0, 400);
}

#[tokio::test]
async fn metrics_openapi_and_unknown_routes() {
    let s = start(None, true).await;
    let (code, body) = get(&s.base, "/metrics").await;
    assert_eq!(code, 200);
    let text = body.as_str().unwrap();
    assert!(
        text.contains("gitamp_agents{status=\"pending\"} 4"),
        "{text}"
    );

    let (code, doc) = get(&s.base, "/api/v1/openapi.json").await;
    assert_eq!(code, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in ROUTES {
        assert!(
            paths.get(*path).is_some_and(|p| p[method].is_object()),
            "openapi.json lacks {method} {path}"
        );
    }
    assert_eq!(
        paths.len(),
        ROUTES.len(),
        "openapi.json lists a path the router does not serve"
    );
    // And every listed route is really served (none falls through to the 404 fallback).
    for (method, path) in ROUTES {
        let url = format!(
            "{}{}",
            s.base,
            path.replace("{id}", &uid_text(&uid(1)))
                .replace("{name}", "production")
        );
        let resp = if *method == "get" {
            client().get(url)
        } else {
            client().post(url)
        }
        .send()
        .await
        .unwrap();
        if *path == "/api/v1/stream" {
            // Server-sent events never end: the answer's head says it is served.
            assert_eq!(
                resp.headers()[reqwest::header::CONTENT_TYPE],
                "text/event-stream"
            );
            continue;
        }
        let body = resp.text().await.unwrap();
        assert!(
            !body.contains("no such route"),
            "{method} {path} is not served"
        );
    }

    let (code, body) = get(&s.base, "/api/v1/nothing").await;
    assert_eq!((code, body["error"].is_string()), (404, true));
    let resp = client()
        .post(format!("{}/api/v1/status", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
}

#[tokio::test]
async fn bearer_token_guards_everything_but_health_and_webhooks() {
    let s = start(Some(API_TOKEN), true).await;
    let protected = support::routes::protected_gets(&uid_text(&uid(1)), "production", "bad0000");
    assert!(protected.len() >= 10, "{protected:?}");
    for path in &protected {
        let path = path.as_str();
        let (code, body) = get(&s.base, path).await;
        assert_eq!(code, 401, "{path}");
        assert!(body["error"].is_string());
        let resp = client()
            .get(format!("{}{path}", s.base))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        let resp = client()
            .get(format!("{}{path}", s.base))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    assert_eq!(get(&s.base, "/healthz").await.0, 200);
    assert_eq!(get(&s.base, "/readyz").await.0, 200);
    let resp = client()
        .post(format!("{}/webhooks/generic", s.base))
        .bearer_auth(GENERIC_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "webhooks carry their own auth");
}

/// The write routes (`POST /api/v1/sync`, `.../resume`) are behind the API token as well.
#[tokio::test]
async fn write_routes_need_the_token_too() {
    let s = start(Some(API_TOKEN), true).await;
    let posts: Vec<&str> = ROUTES
        .iter()
        .filter(|(m, p)| *m == "post" && !support::routes::is_public(p))
        .map(|(_, p)| *p)
        .collect();
    assert_eq!(
        posts,
        ["/api/v1/sync", "/api/v1/configurations/{name}/resume"]
    );
    for path in posts {
        let url = format!("{}{}", s.base, path.replace("{name}", "production"));
        let resp = client().post(&url).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        let resp = client()
            .post(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        let resp = client()
            .post(&url)
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        assert_ne!(resp.status(), 401, "{path}");
    }
    // This state has a poller and no reconciler: the sync is asked for (and the poller woken),
    // the resume cannot be.
    let resp = client()
        .post(format!("{}/api/v1/sync", s.base))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let resp = client()
        .post(format!("{}/api/v1/configurations/nope/resume", s.base))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

fn github_signature(body: &[u8]) -> String {
    support::server::github_signature(GITHUB_SECRET, body)
}

/// Did the webhook that was just answered wake the source? The handler wakes it (a stored
/// permit) before it answers, so after the answer the permit is there or never will be: no wait.
fn woken(state: &AppState) -> bool {
    state
        .poller
        .as_ref()
        .is_some_and(|p| p.notified().now_or_never().is_some())
}

#[tokio::test]
async fn webhooks_wake_only_when_authentic() {
    let s = start(Some(API_TOKEN), true).await;
    let url = |p: &str| format!("{}/webhooks/{p}", s.base);
    let push_main = br#"{"ref":"refs/heads/main","after":"abc123"}"#;
    let push_dev = br#"{"ref":"refs/heads/dev","after":"def456"}"#;

    // GitHub: wrong signature is 401 and wakes nothing.
    let resp = client()
        .post(url("github"))
        .header("x-github-event", "push")
        .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
        .body(&push_main[..])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(!woken(&s.state));
    // Valid push to the tracked ref wakes the poller.
    let resp = client()
        .post(url("github"))
        .header("x-github-event", "push")
        .header("x-hub-signature-256", github_signature(push_main))
        .body(&push_main[..])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.json::<Value>().await.unwrap()["outcome"], "wake");
    assert!(woken(&s.state));
    // Ping answers pong; another ref is ignored; neither wakes.
    let ping = br#"{"zen":"hi"}"#;
    let resp = client()
        .post(url("github"))
        .header("x-github-event", "ping")
        .header("x-hub-signature-256", github_signature(ping))
        .body(&ping[..])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["outcome"], "pong");
    let resp = client()
        .post(url("github"))
        .header("x-github-event", "push")
        .header("x-hub-signature-256", github_signature(push_dev))
        .body(&push_dev[..])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.json::<Value>().await.unwrap()["outcome"], "ignored");
    assert!(!woken(&s.state));

    // GitLab token.
    let resp = client()
        .post(url("gitlab"))
        .header("x-gitlab-event", "Push Hook")
        .header("x-gitlab-token", "wrong")
        .body(&push_main[..])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(!woken(&s.state));
    let resp = client()
        .post(url("gitlab"))
        .header("x-gitlab-event", "Push Hook")
        .header("x-gitlab-token", GITLAB_TOKEN)
        .body(&push_main[..])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert!(woken(&s.state));

    // Generic bearer.
    let resp = client()
        .post(url("generic"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(!woken(&s.state));
    let resp = client()
        .post(url("generic"))
        .bearer_auth(GENERIC_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert!(woken(&s.state));

    // Malformed payload after valid auth: 400; oversized body: 413; neither wakes.
    let resp = client()
        .post(url("generic"))
        .bearer_auth(GENERIC_TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let big = vec![b' '; gitamp::source::webhook::MAX_BODY_BYTES + 1];
    let resp = client()
        .post(url("generic"))
        .bearer_auth(GENERIC_TOKEN)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert!(!woken(&s.state));

    // Authenticated outcomes are events; counted in the metrics.
    let webhook_events = s
        .state
        .history
        .lock()
        .unwrap()
        .events
        .newest_first()
        .filter(|e| e.kind == "webhook")
        .count();
    assert_eq!(webhook_events, 5, "wake x3, pong, ignored");
    let metrics = client()
        .get(format!("{}/metrics", s.base))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gitamp_webhooks_total{provider=\"github\",outcome=\"unauthorized\"}"),
        "{metrics}"
    );

    // A provider without a secret is not there.
    let mut bare = AppState::new(Arc::new(Fleet::new()), gitamp::telemetry::install());
    bare.webhooks.tracked_ref = "main".into();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, gitamp::api::router(Arc::new(bare)))
            .await
            .unwrap()
    });
    let resp = client()
        .post(format!("http://{addr}/webhooks/github"))
        .header("x-github-event", "push")
        .header("x-hub-signature-256", github_signature(push_main))
        .body(&push_main[..])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

/// A status typo fails before any request (no server needed), with the usage exit code.
#[tokio::test]
async fn cli_agents_refuses_a_status_that_is_not_one() {
    let out = run_cli(&[
        "agents",
        "--server",
        "http://127.0.0.1:1",
        "--status",
        "synched",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--status: unknown status `synched`") && !stderr.contains("cannot reach"),
        "{stderr}"
    );
}

async fn run_cli(args: &[&str]) -> std::process::Output {
    gitamp_async()
        .args(args)
        .output()
        .await
        .expect("run gitamp")
}

#[tokio::test]
async fn cli_agents_and_status_against_the_server() {
    let s = start(Some(API_TOKEN), true).await;
    // JSON output follows pagination (pages of 3) and is a valid dry-run agents file.
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("api-token");
    std::fs::write(&token_file, format!("{API_TOKEN}\n")).unwrap();
    let token_file = token_file.to_str().unwrap();
    let out = run_cli(&[
        "agents",
        "--server",
        &s.base,
        "--token-file",
        token_file,
        "-o",
        "json",
        "--page-size",
        "3",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let agents: Vec<ObservedAgent> = serde_json::from_slice(&out.stdout).expect("an agents file");
    assert_eq!(agents.len(), 8);
    assert_eq!(agents[0].instance_uid, uid_text(&uid(1)));
    assert!(agents[0].reported_hash.is_some() && agents[0].synced_hash == agents[0].reported_hash);
    assert!(agents[1].failed_hashes.len() == 1);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET));

    let out = run_cli(&[
        "agents",
        "--server",
        &s.base,
        "--token-file",
        token_file,
        "--status",
        "pending",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("staging") && table.contains("4 agent(s)"),
        "{table}"
    );
    assert!(table.contains(&uid_text(&uid(3))[24..]));

    // Without the token: a clear error and exit 2.
    let out = run_cli(&["agents", "--server", &s.base]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("--token-file"), "{err}");
    // A token is never a flag any more.
    let out = run_cli(&["agents", "--server", &s.base, "--token", API_TOKEN]).await;
    assert_eq!(out.status.code(), Some(2));

    let out = gitamp_async()
        .args(["status", "--server", &s.base])
        .env("GITAMP_API_TOKEN", API_TOKEN)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("https://git.example/fleet.git @ main"),
        "{text}"
    );
    assert!(text.contains("last rejected:   bad0000"), "{text}");
    // Rejected before the served revision was accepted here: said to be old, and exit 0.
    assert!(text.contains("older than the served revision"), "{text}");
    assert!(text.contains("broken.yaml"), "{text}");
    assert!(text.contains("pending 4"), "{text}");

    let out = run_cli(&[
        "status",
        "--server",
        &s.base,
        "--token-file",
        token_file,
        "-o",
        "json",
    ])
    .await;
    assert!(out.status.success());
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["agents"]["total"], 8);

    // Unreachable server: exit 2 and the URL in the message.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let out = run_cli(&["status", "--server", &dead]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&dead) && err.contains("cannot reach"), "{err}");
}

//! Three replicas behind a real load balancer (HAProxy from Debian's package, installed by
//! scripts/test.sh), on the private PostgreSQL cluster:
//!
//! - WebSocket agents through the balancer (TCP mode) spread over the three replicas and
//!   converge on a commit;
//! - HTTP agents through the balancer (HTTP mode, consecutive polls on different replicas) get
//!   each config once;
//! - `kill -9` of a follower mid-rollout: its agents reconnect through the balancer to the
//!   others and converge, with no redundant push, and the rollout's batches hold fleet-wide
//!   throughout (no more agents have the config than the leader's rollout admits);
//! - `kill -9` of the leader: the last replica takes over and a commit pushed then reaches every
//!   agent;
//! - through both kills, the WebSocket agents (which accept `opamp` connection-settings offers,
//!   as the collector's supervisor can, and would reconnect on each) are offered their settings
//!   once: the replica an agent moves to reads what the others offered it.
//!
//! Times are printed, never asserted.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitamp_opamp::agent::{
    AgentHandle, ClientTransport, HttpPool, HttpPoolOptions, SimAgent, spawn_agent,
};
use gitamp_opamp::proto::{AgentCapabilities, RemoteConfigStatuses};
use support::agents::{linux_production, received_count, redundant, start_agents_with, stop_all};
use support::postgres::fresh_database;
use support::{GitFixture, Server, eventually, free_port, get_json, wait_all_applied};

const WAIT: Duration = Duration::from_secs(90);
/// The bound of the HTTP test's waits: a replica sends an HTTP agent nothing until its full
/// report reaches that replica, so with polls balanced one by one a config takes a few polls,
/// and fleet-wide batches of one agent each add up (34-75 s for the first revision on a loaded
/// machine, load average 8 on 2 cores).
const HTTP_WAIT: Duration = Duration::from_secs(240);
const CONFIG: &str = "linux-production";

/// HAProxy in the foreground on its own config, killed when dropped.
struct Balancer {
    child: Child,
    ws_port: u16,
    http_port: u16,
}

impl Balancer {
    fn start(dir: &Path, replicas: &[std::net::SocketAddr]) -> Balancer {
        let haproxy = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!(
                    "haproxy is not installed: run scripts/test.sh (it installs Debian's haproxy)"
                )
            });
        let (ws_port, http_port) = (free_port(), free_port());
        let servers = |check: &str| {
            replicas
                .iter()
                .enumerate()
                .map(|(i, a)| format!("    server r{i} {a} {check}\n"))
                .collect::<String>()
        };
        let config = format!(
            "global\n    maxconn 4000\n\
             defaults\n    timeout connect 2s\n    timeout client 1h\n    timeout server 1h\n    \
             retries 3\n    option redispatch\n\
             frontend opamp_ws\n    mode tcp\n    bind 127.0.0.1:{ws_port}\n    default_backend ws\n\
             backend ws\n    mode tcp\n    balance roundrobin\n{}\
             frontend opamp_http\n    mode http\n    bind 127.0.0.1:{http_port}\n    \
             option http-server-close\n    default_backend http\n\
             backend http\n    mode http\n    balance roundrobin\n    option http-server-close\n{}",
            servers("check inter 300 fall 1 rise 2"),
            servers("check inter 300 fall 1 rise 2"),
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let check = Command::new(haproxy)
            .args(["-c", "-q", "-f"])
            .arg(&path)
            .output()
            .expect("haproxy -c");
        assert!(
            check.status.success(),
            "haproxy refused its config: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(haproxy)
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        support::eventually_blocking(Duration::from_secs(10), "haproxy listens", || {
            std::net::TcpStream::connect(("127.0.0.1", ws_port))
                .ok()
                .map(|_| ())
        });
        Balancer {
            child,
            ws_port,
            http_port,
        }
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/opamp", self.ws_port)
    }

    fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/opamp", self.http_port)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each agent's counts, for a failure message.
fn describe(agents: &[AgentHandle]) -> String {
    agents
        .iter()
        .map(|a| {
            let s = a.state();
            // Each config it took, in order, as the start of its hash and what it reported.
            let history: Vec<String> = s
                .status_history
                .iter()
                .map(|c| format!("{}:{:?}", hex::encode(&c.hash[..4]), c.status))
                .collect();
            format!(
                "{} connections={} connected={} received={} redundant={} opamp offers={} \
                 applied={:?} history=[{}]\n",
                support::agents::uid_of(a),
                s.connections,
                s.connected,
                s.remote_configs_received,
                s.redundant_configs_received,
                s.opamp_offers_received,
                s.applied_hash().map(hex::encode),
                history.join(" "),
            )
        })
        .collect()
}

fn replica_args(fixture: &GitFixture, url: &str, token_file: &Path) -> Vec<String> {
    let opamp = format!("127.0.0.1:{}", free_port());
    let mut args = support::gitops_args(fixture, &opamp, token_file);
    args.extend(["--store".into(), url.to_string()]);
    args
}

/// Until aborted, check that the agents that received `target` never outnumber the agents the
/// fleet's rollout of it admits (read after them): a batch is admitted fleet-wide before any
/// replica pushes it. A failed check ends the task with a panic, which the caller re-raises.
async fn batches_hold(url: String, agents: Vec<AgentHandle>, target: gitamp_core::ConfigHash) {
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("connect");
    let mut most = 0;
    loop {
        let received = received_count(&agents, target)
            + agents
                .iter()
                .filter(|a| support::agents::has_applied(a, target))
                .filter(|a| !support::agents::last_received(a, target))
                .count();
        let admitted: Option<String> = sqlx::query_scalar(
            "SELECT progress FROM rollouts WHERE configuration = $1 AND target_hash = $2",
        )
        .bind(CONFIG)
        .bind(target.to_hex())
        .fetch_optional(&mut db)
        .await
        .expect("read the rollout");
        let admitted = admitted
            .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
            .and_then(|p| p["admitted"].as_u64())
            .unwrap_or(0) as usize;
        // An all-at-once rollout would admit everyone: this fixture's is batched (25%).
        assert!(
            received <= admitted || admitted == agents.len(),
            "{received} agents have the config, the fleet's rollout admits {admitted}"
        );
        if received > most {
            most = received;
            println!("batches hold: {received} agents have it, {admitted} admitted");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn is_leader(server: &Server) -> bool {
    get_json(&server.api_url("/api/v1/status")).await["cluster"]["leader"] == true
}

/// Agents each replica holds, by its own status (None: it does not answer).
async fn held(servers: &[Server], live: &[usize]) -> Vec<u64> {
    let mut out = Vec::new();
    for &i in live {
        let status = get_json(&servers[i].api_url("/api/v1/status")).await;
        out.push(status["agents"]["connected"].as_u64().unwrap_or(0));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_behind_haproxy_survive_kill_9_of_a_follower_and_of_the_leader() {
    let fixture = GitFixture::with_example_repo();
    let url = fresh_database("replicas_balancer").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "balancer-webhook-token";
    let token_file = support::write_token(dir.path(), token);
    let data = |i: usize| -> PathBuf { dir.path().join(format!("replica-{i}")) };
    let mut servers: Vec<Server> = (0..3)
        .map(|i| {
            let args = replica_args(&fixture, &url, &token_file);
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            Server::start(&data(i), &argv)
        })
        .collect();
    let addrs: Vec<_> = servers.iter().map(|s| s.opamp).collect();
    let balancer = Balancer::start(dir.path(), &addrs);

    // 12 WebSocket agents through the balancer, accepting `opamp` offers.
    let agents = start_agents_with(12, &balancer.ws_url(), |i| {
        let mut opts = linux_production(&format!("lb-ws-{i:02}"));
        opts.capabilities |= AgentCapabilities::AcceptsOpAmpConnectionSettings as u64;
        opts
    });
    let first = fixture.expected_hashes()[CONFIG];
    wait_all_applied(
        &agents,
        first,
        WAIT,
        "the first revision through the balancer",
    )
    .await;
    let spread = held(&servers, &[0, 1, 2]).await;
    println!("agents connected per replica: {spread:?}");
    assert!(
        spread.iter().all(|n| *n > 0),
        "round robin left a replica without agents: {spread:?}"
    );

    // A commit; kill -9 a follower as soon as the first agent has the new config.
    let leader = eventually(WAIT, "one replica leads", async || {
        let mut leaders = Vec::new();
        for (i, s) in servers.iter().enumerate() {
            if is_leader(s).await {
                leaders.push(i);
            }
        }
        match leaders.as_slice() {
            [one] => Ok(*one),
            other => Err(format!("leaders: {other:?}")),
        }
    })
    .await;
    let victim = (leader + 1) % 3;
    fixture.set_team("lb-2");
    fixture.commit_all("team lb-2");
    fixture.push(false);
    assert_eq!(
        support::post_webhook(&servers[leader], token).await / 100,
        2
    );
    let second = fixture.expected_hashes()[CONFIG];
    // Batches hold fleet-wide, across the kill: no more agents ever have the new config than
    // the leader's rollout (in the database, which a replica adopts before it pushes) admits.
    let holds = tokio::spawn(batches_hold(url.clone(), agents.clone(), second));
    eventually(WAIT, "the rollout has started", async || {
        (received_count(&agents, second) > 0).then_some(())
    })
    .await;
    servers[victim].kill9();
    let killed = Instant::now();
    wait_all_applied(&agents, second, WAIT, "every agent, the victim's included").await;
    holds.abort();
    if let Err(e) = holds.await
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
    println!(
        "follower kill -9 mid-rollout: every agent applied within {:.2} s",
        killed.elapsed().as_secs_f64()
    );
    let live: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let ws_agents = &agents[..];
    let moved = eventually(
        WAIT,
        "the victim's agents reconnected elsewhere",
        async || {
            let moved = ws_agents
                .iter()
                .filter(|a| a.state().connections >= 2)
                .count();
            let connected = ws_agents.iter().filter(|a| a.state().connected).count();
            (moved > 0 && connected == 12)
                .then_some(moved)
                .ok_or(format!("{moved} moved, {connected} of 12 connected"))
        },
    )
    .await;
    println!(
        "follower kill -9: its {moved} WebSocket agents reconnected through the balancer, all \
         12 connected {:.2} s after",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(
        redundant(&agents),
        0,
        "redundant pushes:\n{}",
        describe(&agents)
    );

    // kill -9 of the leader: the last replica leads, and a commit pushed then arrives.
    servers[leader].kill9();
    let killed = Instant::now();
    let last = live.into_iter().find(|i| *i != leader).expect("one left");
    fixture.set_team("lb-3");
    fixture.commit_all("team lb-3");
    fixture.push(false);
    eventually(WAIT, "the last replica leads", async || {
        is_leader(&servers[last]).await.then_some(())
    })
    .await;
    let took_over = killed.elapsed();
    assert_eq!(support::post_webhook(&servers[last], token).await / 100, 2);
    let third = fixture.expected_hashes()[CONFIG];
    wait_all_applied(&agents, third, WAIT, "the commit after the leader died").await;
    println!(
        "leader kill -9: new leader after {:.2} s, commit applied by all after {:.2} s",
        took_over.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(
        redundant(&agents),
        0,
        "redundant pushes:\n{}",
        describe(&agents)
    );
    assert!(
        agents.iter().all(|a| a.state().opamp_offers_received == 1),
        "each agent offered its settings once, wherever it went:\n{}",
        describe(&agents)
    );
    stop_all(&agents).await;
    drop(balancer);
}

/// HTTP agents through the balancer in HTTP mode (each poll balanced on its own, so consecutive
/// polls land on different replicas) get each config exactly once.
///
/// A replica learns an HTTP agent's state only from the polls that reach it, and OpAMP agents
/// report an unchanged status once. Before the fix this test saw a replica that missed the
/// APPLIED report send the config again (3 received, 1 redundant), a config resent by a
/// replica whose record of the send was 10 s old, and an agent a replica had only heard a
/// heartbeat from sent the `default` configuration (no labels yet): 4 received. Now a replica
/// that missed some of the agent's messages (a sequence gap) asks for its full state and sends
/// nothing until that report reaches it (asking again when it went to another replica). Two
/// full runs in six still sent `default` (one in CI, whose history named the config): a
/// replica whose first message from an agent was its APPLYING report asked, then took the
/// APPLIED report queued behind it for the answer. A message without a description no longer
/// answers for an agent never described there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_agents_whose_polls_alternate_replicas_get_each_config_once() {
    let fixture = GitFixture::with_example_repo();
    let url = fresh_database("replicas_balancer_http").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "balancer-webhook-token";
    let token_file = support::write_token(dir.path(), token);
    // Polls every second (the replicas offer their heartbeat interval, which replaces the
    // agents' own): many polls, each balanced on its own, in a short test.
    let servers: Vec<Server> = (0..3)
        .map(|i| {
            let mut args = replica_args(&fixture, &url, &token_file);
            args.extend(["--heartbeat".into(), "1".into()]);
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            Server::start(&dir.path().join(format!("replica-{i}")), &argv)
        })
        .collect();
    let addrs: Vec<_> = servers.iter().map(|s| s.opamp).collect();
    let balancer = Balancer::start(dir.path(), &addrs);
    let pool = Arc::new(
        HttpPool::new(
            &balancer.http_url(),
            HttpPoolOptions {
                connections: 1,
                ..HttpPoolOptions::default()
            },
        )
        .expect("HTTP pool"),
    );
    let started = Instant::now();
    let agents: Vec<AgentHandle> = (0..3)
        .map(|i| {
            let mut opts = linux_production(&format!("lb-http-{i:02}"));
            opts.heartbeat_interval = Duration::from_secs(1);
            spawn_agent(
                SimAgent::new(opts),
                ClientTransport::Http(pool.clone()),
                &balancer.http_url(),
            )
        })
        .collect();
    let all_applied = async |hash, what: &str| {
        eventually(HTTP_WAIT, what, async || {
            if support::agents::all_applied(&agents, hash) {
                Ok(())
            } else {
                Err(describe(&agents))
            }
        })
        .await
    };
    let six_more_polls = async |what: &str| {
        let polled: Vec<u64> = agents.iter().map(|a| a.state().heartbeats_sent).collect();
        eventually(HTTP_WAIT, what, async || {
            let behind = agents
                .iter()
                .zip(&polled)
                .filter(|(a, before)| a.state().heartbeats_sent < *before + 6)
                .count();
            (behind == 0)
                .then_some(())
                .ok_or(format!("{behind} agents behind"))
        })
        .await
    };
    let first = fixture.expected_hashes()[CONFIG];
    all_applied(first, "the first revision over HTTP").await;
    println!(
        "HTTP through the balancer: first revision applied by all 3 agents after {:.2} s",
        started.elapsed().as_secs_f64()
    );
    fixture.set_team("lb-http-2");
    fixture.commit_all("team lb-http-2");
    fixture.push(false);
    let pushed = Instant::now();
    assert_eq!(support::post_webhook(&servers[0], token).await / 100, 2);
    let second = fixture.expected_hashes()[CONFIG];
    all_applied(second, "the commit over HTTP").await;
    println!(
        "HTTP through the balancer: commit applied by all 3 agents {:.2} s after the webhook",
        pushed.elapsed().as_secs_f64()
    );
    // The polls did alternate: every replica has heard from every agent.
    for (i, server) in servers.iter().enumerate() {
        for a in &agents {
            let uid = support::agents::uid_of(a);
            let url = server.api_url(&format!("/api/v1/agents/{uid}"));
            eventually(
                WAIT,
                &format!("replica {i} knows agent {uid}"),
                async || {
                    let status = reqwest::get(&url)
                        .await
                        .map_err(|e| e.to_string())?
                        .status();
                    status.is_success().then_some(()).ok_or(status.to_string())
                },
            )
            .await;
        }
    }
    // Six more polls each, around the replicas, after the last APPLIED: a late second push
    // (a replica that missed the report) would go out in the reply to one of them.
    six_more_polls("six more polls from every agent").await;
    for a in &agents {
        assert_eq!(
            a.state().remote_configs_received,
            2,
            "each config once:\n{}",
            describe(&agents)
        );
    }
    assert_eq!(
        redundant(&agents),
        0,
        "redundant pushes:\n{}",
        describe(&agents)
    );

    // A commit every agent fails (the simulated agents fail a config carrying the marker): the
    // agents that tried it are rolled back to the config they ran before, and none is sent the
    // failed config again. A replica that missed the FAILED or the rollback's APPLIED report
    // learns it from the agent's row, which every replica holding the agent writes: before
    // those writes merged (migration 0010) the last writer won, and about 1 run in 10 sent the
    // failed config again or rolled an agent back further.
    fixture.set_team(gitamp_opamp::agent::DEFAULT_FAIL_MARKER);
    fixture.commit_all("a config the agents fail");
    fixture.push(false);
    let failing_pushed = Instant::now();
    assert_eq!(support::post_webhook(&servers[0], token).await / 100, 2);
    let failing = fixture.expected_hashes()[CONFIG];
    let failed = |a: &AgentHandle| {
        a.state()
            .saw_status(&failing.0, RemoteConfigStatuses::Failed)
    };
    let runs_failing = |a: &AgentHandle| {
        let s = a.state();
        s.current_status
            .as_ref()
            .is_some_and(|c| c.last_remote_config_hash[..] == failing.0[..])
    };
    eventually(
        HTTP_WAIT,
        "an agent failed, and every one that did is rolled back",
        async || {
            let failures = agents.iter().filter(|a| failed(a)).count();
            let rolled_back = agents
                .iter()
                .all(|a| !runs_failing(a) && a.state().applied_hash().is_some());
            (failures > 0 && rolled_back)
                .then_some(())
                .ok_or_else(|| describe(&agents))
        },
    )
    .await;
    println!(
        "HTTP through the balancer: {} of 3 agents failed the commit and were rolled back {:.2} s \
         after the webhook",
        agents.iter().filter(|a| failed(a)).count(),
        failing_pushed.elapsed().as_secs_f64()
    );
    six_more_polls("six more polls from every agent after the rollback").await;
    for a in &agents {
        let s = a.state();
        let tries = s
            .status_history
            .iter()
            .filter(|c| c.hash[..] == failing.0[..] && c.status == RemoteConfigStatuses::Applying)
            .count();
        let runs = s.applied_hash().map(|h| hex::encode(&h[..6]));
        println!(
            "agent {}: {} messages, {} full-state requests answered, {} configs received (the \
             failing one {tries} times), {} redundant, runs {}",
            support::agents::uid_of(a),
            s.messages_sent,
            s.full_state_requests,
            s.remote_configs_received,
            s.redundant_configs_received,
            runs.unwrap_or_default(),
        );
        assert!(
            tries <= 1,
            "the failed config went out once at most:\n{}",
            describe(&agents)
        );
        assert_eq!(
            s.applied_hash().map(|h| h[..] == second.0[..]),
            Some(true),
            "rolled back to the config it ran before:\n{}",
            describe(&agents)
        );
    }
    assert_eq!(
        redundant(&agents),
        0,
        "redundant pushes:\n{}",
        describe(&agents)
    );
    stop_all(&agents).await;
    drop(balancer);
}

//! Smoke test of `gitamp bench fleet`: a few agents, a few seconds, every phase. It checks that
//! the load generator runs end to end and prints its figures; it asserts no timing.

mod support;

fn run(transport: &str) -> serde_json::Value {
    let out = support::cli::gitamp_command()
        .args(["bench", "fleet", "--transport", transport, "--agents", "50"])
        .args([
            "--processes",
            "2",
            "--ramp",
            "0",
            "--heartbeat",
            "2",
            "--duration",
            "2",
        ])
        .args([
            "--connections",
            "2",
            "--rollout",
            "--restart",
            "--timeout",
            "40",
        ])
        .output()
        .expect("running gitamp bench fleet");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench fleet failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in {stdout}"));
    serde_json::from_str(line).expect("RESULT is JSON")
}

#[test]
fn bench_fleet_ws_and_http_run_every_phase() {
    for transport in ["ws", "http"] {
        let r = run(transport);
        assert_eq!(r["agents"], 50, "{r}");
        assert_eq!(r["rollout"]["done"], 50, "{transport}: {r}");
        assert_eq!(r["restart"]["resynced"], 50, "{transport}: {r}");
        assert!(r["rss_kib"].as_u64().unwrap_or(0) > 0, "{r}");
    }
}

/// `--replicas 2` on the private PostgreSQL cluster: both replicas serve, the rollout reaches
/// every agent, and the database's figures are there; over WebSocket, `--kill-one` kills the
/// follower and its agents all re-sync on the other replica by themselves.
#[test]
fn bench_fleet_replicas_run_on_postgres() {
    let url = support::postgres::admin_url();
    for transport in ["ws", "http"] {
        let out = support::cli::gitamp_command()
            .args(["bench", "fleet", "--transport", transport, "--agents", "50"])
            .args(["--replicas", "2", "--processes", "2", "--ramp", "0"])
            .args(["--heartbeat", "2", "--duration", "2", "--connections", "2"])
            .args(["--rollout", "--timeout", "40", "--store", &url])
            .args((transport == "ws").then_some("--kill-one"))
            .output()
            .expect("running gitamp bench fleet --replicas");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "bench fleet --replicas failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .unwrap_or_else(|| panic!("no RESULT line in {stdout}"));
        let r: serde_json::Value = serde_json::from_str(line).expect("RESULT is JSON");
        assert_eq!(r["replicas"], 2, "{r}");
        assert_eq!(r["held"], serde_json::json!([25, 25]), "{r}");
        assert_eq!(r["rollout"]["done"], 50, "{transport}: {r}");
        assert!(r["rollout"]["rows"].as_i64().unwrap_or(0) > 0, "{r}");
        assert_eq!(r["redundant_pushes_total"], 0, "{transport}: {r}");
        if transport == "ws" {
            let k = &r["kill_one"];
            assert_eq!(k["moved"], 25, "{r}");
            assert_eq!(k["resynced"], 25, "{r}");
            assert_eq!(k["redundant_pushes"], 0, "{r}");
        }
    }
}

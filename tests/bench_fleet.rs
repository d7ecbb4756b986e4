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

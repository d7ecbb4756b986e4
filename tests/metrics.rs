//! The metrics an operator alerts on, over a real `gitamp serve` on a real Git repository with
//! simulated agents: what `/metrics` shows at start, after a good and a bad commit, per
//! configuration and status; `promtool check metrics` on a real scrape; and the example alert
//! rules (`deploy/prometheus/`) through `promtool check rules` and `promtool test rules`.
//!
//! promtool comes from Debian's `prometheus` package (`scripts/test.sh` installs it). In CI
//! (`CI=true`) a missing promtool fails the test; elsewhere the promtool checks skip loudly.
//!
//! Timeouts are generous upper bounds for a slow CI machine, never speed assertions.

mod support;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use gitamp_core::ConfigHash;
use gitamp_opamp::agent::{AgentHandle, ApplyPolicy, DEFAULT_FAIL_MARKER};
use support::agents::{linux_production, stop_all};
use support::{
    GitFixture, GitOpsServer, Server, eventually, git, gitamp, sample, samples, scrape,
    start_agents_with, workspace,
};

const WAIT: Duration = Duration::from_secs(90);

/// Every sync status, as the `status` label spells them.
const STATUSES: [&str; 10] = [
    "synced",
    "pending",
    "applying",
    "failed",
    "rolled-back",
    "drifted",
    "unmanaged",
    "conflict",
    "incompatible",
    "disconnected",
];

/// Every event kind, as the `kind` label spells them.
const EVENT_KINDS: [&str; 15] = [
    "revision-accepted",
    "revision-rejected",
    "fetch-error",
    "file-skipped",
    "connected",
    "disconnected",
    "pushed",
    "applied",
    "failed",
    "rolled-back",
    "drifted",
    "conflict",
    "rollout-halted",
    "rollout-superseded",
    "webhook",
];

const WEBHOOK_PROVIDERS: [&str; 3] = ["github", "gitlab", "generic"];
const WEBHOOK_OUTCOMES: [&str; 6] = [
    "not_configured",
    "bad_request",
    "unauthorized",
    "wake",
    "pong",
    "ignored",
];

/// The promtool to run, or `None` (outside CI, after saying loudly that the check is skipped).
fn promtool() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    let found = on_path.or_else(|| {
        let usr_bin = PathBuf::from("/usr/bin/promtool");
        usr_bin.is_file().then_some(usr_bin)
    });
    if found.is_none() {
        let message = "promtool not found on PATH or in /usr/bin (Debian package `prometheus`; \
                       scripts/test.sh installs it)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{message}");
        }
        eprintln!("########################################################################");
        eprintln!("## SKIPPED: {message}: the promtool checks did NOT run.");
        eprintln!("########################################################################");
    }
    found
}

/// Run promtool with `args` in `dir`, `stdin` fed to it; panics with its output unless it
/// succeeds and has nothing to complain about.
fn run_promtool(promtool: &PathBuf, dir: &std::path::Path, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(stdin.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {args:?} failed ({}):\n{text}",
        out.status
    );
    text
}

/// The fixture's current commit.
fn head(fixture: &GitFixture) -> String {
    git(&fixture.work(), &["rev-parse", "HEAD"])
        .trim()
        .to_string()
}

/// Production Linux agents (the `linux-production` configuration: batches of 25%, one failure
/// tolerated) that fail a config carrying the fail marker.
fn start_linux_agents(n: usize, prefix: &str, url: &str) -> Vec<AgentHandle> {
    start_agents_with(n, url, |i| {
        let mut opts = linux_production(&format!("{prefix}-{i:02}"));
        opts.policy = ApplyPolicy::FailOnMarker(DEFAULT_FAIL_MARKER.into());
        opts
    })
}

/// Staging Linux agents (the `staging` configuration selects them).
fn start_staging_agents(n: usize, url: &str) -> Vec<AgentHandle> {
    start_agents_with(n, url, |i| {
        let mut opts = gitamp_opamp::agent::AgentOptions::collector(
            "checkout",
            &format!("staging-{i:02}"),
            "staging",
        )
        .label("os.type", "linux");
        opts.heartbeat_interval = Duration::from_secs(5);
        opts
    })
}

/// Wait until a scrape satisfies `check` (`Err` says what it showed instead); returns it.
async fn scrape_until(
    server: &Server,
    what: &str,
    check: impl Fn(&str) -> Result<(), String>,
) -> String {
    eventually(WAIT, what, async || {
        let text = scrape(server).await;
        check(&text).map(|()| text)
    })
    .await
}

/// The revisions `gitamp_served_revision_info` names.
fn served_revisions(text: &str) -> Vec<String> {
    samples(text, "gitamp_served_revision_info")
        .into_iter()
        .map(|(labels, value)| {
            assert_eq!(value, 1.0, "an info metric is 1");
            labels.get("revision").cloned().unwrap_or_default()
        })
        .collect()
}

fn one(text: &str, name: &str) -> f64 {
    sample(text, name, &[]).unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_exist_at_zero_from_the_start_and_build_info_names_this_build() {
    let gitops = GitOpsServer::start("example-repo", &[]);
    let text = scrape(&gitops.server).await;

    for outcome in ["accepted", "rejected"] {
        assert!(
            sample(&text, "gitamp_revisions_total", &[("outcome", outcome)]).is_some(),
            "gitamp_revisions_total{{outcome={outcome}}} missing:\n{text}"
        );
    }
    // Nothing of these happened yet: each is there, at 0.
    let zeros = [
        ("gitamp_revisions_total", vec![("outcome", "rejected")]),
        ("gitamp_fetch_errors_total", vec![]),
        ("gitamp_opamp_oversize_outgoing_total", vec![]),
        ("gitamp_events_total", vec![("kind", "rollout-halted")]),
    ];
    for (name, labels) in &zeros {
        assert_eq!(
            sample(&text, name, labels),
            Some(0.0),
            "{name}{labels:?}:\n{text}"
        );
    }
    assert!(
        sample(&text, "gitamp_config_pushes_total", &[]).is_some(),
        "{text}"
    );
    for kind in EVENT_KINDS {
        assert!(
            sample(&text, "gitamp_events_total", &[("kind", kind)]).is_some(),
            "gitamp_events_total{{kind={kind}}} missing:\n{text}"
        );
    }
    for provider in WEBHOOK_PROVIDERS {
        for outcome in WEBHOOK_OUTCOMES {
            let labels = [("provider", provider), ("outcome", outcome)];
            assert_eq!(
                sample(&text, "gitamp_webhooks_total", &labels),
                Some(0.0),
                "no webhook yet: {labels:?}:\n{text}"
            );
        }
    }
    for status in STATUSES {
        assert!(
            sample(&text, "gitamp_agents", &[("status", status)]).is_some(),
            "gitamp_agents{{status={status}}} missing:\n{text}"
        );
    }

    // build_info says what `gitamp --version` says: `gitamp 0.1.0 (commit abc, 2026-12-04)`.
    let version = String::from_utf8_lossy(&gitamp(&["--version"]).stdout).into_owned();
    let info = samples(&text, "gitamp_build_info");
    assert_eq!(info.len(), 1, "one build_info series:\n{text}");
    let (labels, value) = &info[0];
    assert_eq!(*value, 1.0);
    let expected = format!(
        "gitamp {} (commit {}, {})",
        labels["version"], labels["commit"], labels["commit_date"]
    );
    assert_eq!(version.trim(), expected, "labels: {labels:?}");
    assert_eq!(labels["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_revision_tip_rejected_and_last_sync_follow_the_repository() {
    let gitops = GitOpsServer::start("example-repo", &[]);
    let (fixture, server) = (&gitops.fixture, &gitops.server);
    let first = head(fixture);

    // The served revision at once; its configurations as of the plan that follows.
    let windows = [
        ("configuration", "windows-production"),
        ("status", "synced"),
    ];
    let text = scrape_until(server, "the first revision is served and planned", |t| {
        let served = served_revisions(t);
        let windows = sample(t, "gitamp_configuration_agents", &windows);
        (served == [first.clone()] && windows == Some(0.0))
            .then_some(())
            .ok_or(format!(
                "served {served:?}, windows-production synced {windows:?}"
            ))
    })
    .await;
    assert_eq!(one(&text, "gitamp_source_tip_rejected"), 0.0);
    let first_sync = one(&text, "gitamp_sync_last_success_timestamp_seconds");
    assert!(first_sync > 1.0e9, "a Unix time: {first_sync}");
    assert!(one(&text, "gitamp_sync_last_attempt_timestamp_seconds") >= first_sync);

    // A good commit (one configuration fewer): the new revision replaces the old one, whose
    // series is gone, as are the removed configuration's.
    std::fs::remove_file(
        fixture
            .work()
            .join("configurations/windows-production.yaml"),
    )
    .expect("remove a configuration");
    let second = gitops
        .commit_and_announce("drop the windows configuration")
        .await;
    let text = scrape_until(server, "the second revision is served and planned", |t| {
        let served = served_revisions(t);
        let windows = samples(t, "gitamp_configuration_agents")
            .iter()
            .filter(|(l, _)| l["configuration"] == "windows-production")
            .count();
        (served == [second.clone()] && windows == 0)
            .then_some(())
            .ok_or(format!(
                "served {served:?}, {windows} windows-production series"
            ))
    })
    .await;
    assert!(
        one(&text, "gitamp_sync_last_success_timestamp_seconds") > first_sync,
        "the last successful sync moved:\n{text}"
    );
    assert_eq!(one(&text, "gitamp_source_tip_rejected"), 0.0);

    // A bad commit: the tip is rejected, the second revision still served.
    fixture.write(
        "configurations/broken.yaml",
        "apiVersion: gitamp.dev/v1\nkind: Configuration\nmetadata:\n  name: broken\nspec:\n  priority: 50\n  selector:\n    matchLabels: {team: nobody}\n  sources: [otlp-default]\n  destinations: [does-not-exist]\n",
    );
    gitops.commit_and_announce("a dangling destination").await;
    let text = scrape_until(server, "the tip is rejected", |t| {
        match sample(t, "gitamp_source_tip_rejected", &[]) {
            Some(1.0) => Ok(()),
            other => Err(format!("gitamp_source_tip_rejected {other:?}")),
        }
    })
    .await;
    assert_eq!(served_revisions(&text), [second]);
    assert_eq!(
        sample(&text, "gitamp_revisions_total", &[("outcome", "rejected")]),
        Some(1.0)
    );

    // The fix: served, and the tip is no longer rejected (the rejection is older than it).
    fixture.edit(
        "configurations/broken.yaml",
        "does-not-exist",
        "otel-gateway",
    );
    let fixed = gitops.commit_and_announce("fix the destination").await;
    let text = scrape_until(server, "the fix is served", |t| {
        let served = served_revisions(t);
        (served == [fixed.clone()])
            .then_some(())
            .ok_or(format!("{served:?}"))
    })
    .await;
    assert_eq!(one(&text, "gitamp_source_tip_rejected"), 0.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_per_configuration_and_status_and_a_halted_rollout() {
    let gitops = GitOpsServer::start("example-repo", &[]);
    let (fixture, server) = (&gitops.fixture, &gitops.server);
    let linux = start_linux_agents(8, "metrics-linux", &server.ws_url());
    let staging = start_staging_agents(2, &server.ws_url());
    let hashes = fixture.expected_hashes();
    support::wait_all_applied(&linux, hashes["linux-production"], WAIT, "linux applied").await;
    support::wait_all_applied(&staging, hashes["staging"], WAIT, "staging applied").await;

    let per = |configuration: &'static str, status: &'static str| {
        move |t: &str| {
            sample(
                t,
                "gitamp_configuration_agents",
                &[("configuration", configuration), ("status", status)],
            )
        }
    };
    let text = scrape_until(server, "10 agents synced, per configuration", |t| {
        let seen = (
            per("linux-production", "synced")(t),
            per("staging", "synced")(t),
        );
        (seen == (Some(8.0), Some(2.0)))
            .then_some(())
            .ok_or(format!("{seen:?}"))
    })
    .await;
    for configuration in [
        "linux-production",
        "staging",
        "default",
        "windows-production",
    ] {
        for status in STATUSES {
            assert!(
                per(configuration, status)(&text).is_some(),
                "{configuration}/{status} missing:\n{text}"
            );
        }
        assert_eq!(
            sample(
                &text,
                "gitamp_rollout_halted",
                &[("configuration", configuration)]
            ),
            Some(0.0),
            "{text}"
        );
    }
    assert_eq!(per("staging", "failed")(&text), Some(0.0));
    assert_eq!(
        sample(&text, "gitamp_agents", &[("status", "synced")]),
        Some(10.0)
    );

    // A change the linux agents cannot apply: the first batch (2 of 8) fails, more than the
    // one failure tolerated, and the rollout halts; the failed pair is rolled back.
    fixture.edit(
        "processors/env-production.yaml",
        "team: platform",
        &format!("team: {DEFAULT_FAIL_MARKER}"),
    );
    gitops
        .commit_and_announce("a change the agents cannot apply")
        .await;
    let failing: ConfigHash = fixture.expected_hashes()["linux-production"];
    assert_ne!(failing, hashes["linux-production"]);
    let text = scrape_until(server, "the linux rollout halts", |t| {
        let halted = sample(
            t,
            "gitamp_rollout_halted",
            &[("configuration", "linux-production")],
        );
        let rolled_back = per("linux-production", "rolled-back")(t);
        (halted == Some(1.0) && rolled_back == Some(2.0))
            .then_some(())
            .ok_or(format!("halted {halted:?}, rolled back {rolled_back:?}"))
    })
    .await;
    assert_eq!(
        sample(
            &text,
            "gitamp_rollout_halted",
            &[("configuration", "staging")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "gitamp_events_total", &[("kind", "rollout-halted")]),
        Some(1.0)
    );

    // A staging agent leaves: it counts as disconnected, there and over the fleet.
    staging[0].stop(Duration::from_secs(5)).await;
    scrape_until(server, "a staging agent is disconnected", |t| {
        let seen = (
            per("staging", "disconnected")(t),
            sample(t, "gitamp_agents", &[("status", "disconnected")]),
        );
        (seen == (Some(1.0), Some(1.0)))
            .then_some(())
            .ok_or(format!("{seen:?}"))
    })
    .await;

    stop_all(&linux).await;
    stop_all(&staging).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_a_real_scrape_and_the_alert_rules_use_real_metrics() {
    let Some(promtool) = promtool() else {
        return;
    };
    let gitops = GitOpsServer::start("example-repo", &[]);
    let server = &gitops.server;
    let agents = start_linux_agents(4, "promtool", &server.ws_url());
    let hash = gitops.fixture.expected_hashes()["linux-production"];
    support::wait_all_applied(&agents, hash, WAIT, "agents applied").await;
    // Histograms with samples, a served revision, agents per configuration and status.
    let text = scrape_until(
        server,
        "the agents are planned as synced",
        |t| match sample(t, "gitamp_agents", &[("status", "synced")]) {
            Some(4.0) => Ok(()),
            other => Err(format!("synced {other:?}")),
        },
    )
    .await;

    let complaints = run_promtool(&promtool, &workspace(), &["check", "metrics"], &text);
    assert!(
        complaints.trim().is_empty(),
        "promtool check metrics complains:\n{complaints}\nabout:\n{text}"
    );

    // Every gitamp metric an example rule uses is one the server exports.
    let rules = std::fs::read_to_string(workspace().join("deploy/prometheus/gitamp-alerts.yml"))
        .expect("read the alert rules");
    let used: BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("gitamp_"))
        .collect();
    assert!(!used.is_empty(), "the rules use gitamp metrics");
    for name in used {
        assert!(
            text.lines().any(|l| l == format!("# TYPE {name} gauge")
                || l.starts_with(&format!("# TYPE {name} "))),
            "the alert rules use {name}, which /metrics does not export"
        );
    }
    stop_all(&agents).await;
}

#[test]
fn the_example_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(promtool) = promtool() else {
        return;
    };
    let dir = workspace().join("deploy/prometheus");
    let checked = run_promtool(
        &promtool,
        &dir,
        &["check", "rules", "gitamp-alerts.yml"],
        "",
    );
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run_promtool(
        &promtool,
        &dir,
        &["test", "rules", "gitamp-alerts.test.yml"],
        "",
    );
    assert!(tested.contains("SUCCESS"), "{tested}");
}

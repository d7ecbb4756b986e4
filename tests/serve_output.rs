//! What `gitamp serve` prints where: the listening line alone on stdout (scripts read it),
//! the logs on stderr without colour escapes when stderr is not a terminal, and a rejected
//! revision's diagnostics in the log (file:line, code), bounded, not only a one-line warning.

mod support;

use std::time::Duration;

use support::{GitOpsServer, eventually, get_json, post_webhook};

const WAIT: Duration = Duration::from_secs(90);

/// More broken configurations than the log shows diagnostics for (20).
const BROKEN: usize = 23;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_line_alone_on_stdout_plain_logs_and_rejection_diagnostics() {
    let mut gitops = GitOpsServer::start("example-repo", &["--ref", "main"]);
    let (fixture, server, token) = (&gitops.fixture, &gitops.server, gitops.token.as_str());

    // A commit with a dangling destination in each of many configurations is rejected.
    for i in 0..BROKEN {
        fixture.write(
            &format!("configurations/broken-{i:02}.yaml"),
            &format!(
                "apiVersion: gitamp.dev/v1\nkind: Configuration\nmetadata:\n  name: broken-{i:02}\n\
                 spec:\n  priority: {}\n  selector:\n    matchLabels: {{team: nobody}}\n  \
                 sources: [otlp-default]\n  destinations: [does-not-exist]\n",
                100 + i
            ),
        );
    }
    let bad_sha = fixture.commit_all("configurations with a dangling destination");
    fixture.push(false);
    assert_eq!(post_webhook(server, token).await / 100, 2);
    let status = eventually(WAIT, "the bad revision is rejected", async || {
        let st = get_json(&server.api_url("/api/v1/status")).await;
        (st["last_rejected"]["revision"] == bad_sha.as_str()).then_some(st)
    })
    .await;
    let diagnostics = status["last_rejected"]["diagnostics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let first_error = diagnostics
        .iter()
        .find(|d| d["severity"] == "error")
        .unwrap_or_else(|| panic!("an error among the diagnostics: {status}"));
    let at = format!(
        "{}:{}:",
        first_error["file"].as_str().unwrap(),
        first_error["line"]
    );
    let code = first_error["code"].as_str().unwrap().to_string();
    assert!(
        diagnostics.len() > 20,
        "enough diagnostics to be cut: {status}"
    );

    // Every line read to its end before the assertions.
    gitops.server.stop_gracefully();
    let stdout = gitops.server.stdout.lock().unwrap().clone();
    let logs = gitops.server.logs();

    assert_eq!(
        stdout.len(),
        1,
        "stdout holds the listening line alone: {stdout:#?}"
    );
    assert!(
        stdout[0].starts_with("gitamp listening opamp="),
        "{stdout:?}"
    );
    assert!(
        logs.contains("Serving revision."),
        "the logs are on stderr:\n{logs}"
    );
    assert!(
        !logs.contains('\x1b'),
        "no ANSI escapes in logs piped to a file:\n{logs}"
    );

    let logged: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(bad_sha.as_str()) && l.contains(" WARN "))
        .collect();
    assert!(
        logged.iter().any(|l| l.contains(&at) && l.contains(&code)),
        "the log names the diagnostic at {at} ({code}):\n{logs}"
    );
    let diagnostic_lines = logged
        .iter()
        .filter(|l| l.contains("error[") || l.contains("warning["))
        .count();
    assert_eq!(diagnostic_lines, 20, "the first 20 diagnostics:\n{logs}");
    let more = format!("… and {} more diagnostic(s)", diagnostics.len() - 20);
    assert!(
        logged.iter().any(|l| l.contains(&more)),
        "{more:?} in the log:\n{logs}"
    );
}

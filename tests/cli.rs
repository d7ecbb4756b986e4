//! The operator's CLI against real running servers (`gitamp serve` as a process, simulated
//! agents over real WebSockets, a real Git remote): the output convention (`-o
//! table|wide|json|yaml`, tables within 100 columns), the token from a file or the
//! environment, `configurations`, `describe agent`, `events`, `revisions`, `sync`, `resume`
//! (and that a resume survives a restart), exit codes; and the generated parts: `--version`,
//! shell completions, the man page.
//!
//! Timeouts are generous upper bounds for a slow CI machine, never speed assertions.

mod support;

use std::time::Duration;

use gitamp_opamp::agent::{AgentHandle, AgentOptions, ApplyPolicy, DEFAULT_FAIL_MARKER};
use serde_json::Value;
use support::agents::{fixed_uid, linux_production, uid_of};
use support::cli::{code, explain, gitamp_command, json_of, stderr, stdout};
use support::{GitOpsServer, Server, eventually, get_json, start_agents_with};

const WAIT: Duration = Duration::from_secs(90);

/// `gitamp args` (blocking: run it off the async threads so the agents keep talking).
async fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = gitamp_command();
    cmd.args(args).envs(env.iter().copied());
    tokio::task::spawn_blocking(move || cmd.output().expect("run gitamp"))
        .await
        .expect("gitamp ran")
}

/// `gitamp args --server URL`.
async fn at(server: &Server, args: &[&str]) -> std::process::Output {
    let base = format!("http://{}", server.api);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--server", base.as_str()]);
    run(&all, &[]).await
}

/// The last 12 digits of an agent's UID, as `gitamp agents` shows it.
fn short_of(agent: &AgentHandle) -> String {
    let uid = uid_of(agent);
    uid.rsplit('-').next().unwrap_or_default().to_string()
}

fn ok(o: &std::process::Output) -> String {
    assert_eq!(code(o), 0, "{}", explain(o));
    stdout(o)
}

/// A halted rollout resumed from the CLI goes on from its halted batch (the failures so far
/// excused, the failed agents keep their status), a second resume is refused, the resume is
/// an event and survives a restart; `configurations`, `describe agent`, `events` and
/// `revisions` show all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_rollout_resumed_from_the_cli_goes_on_and_stays_resumed() {
    let mut gitops = GitOpsServer::start("example-repo", &["--ref", "main"]);
    // Agents 0 and 1 (the first batch) fail a config with the marker; the rest apply anything.
    let agents: Vec<AgentHandle> = start_agents_with(8, &gitops.server.ws_url(), |i| {
        let mut opts = linux_production(&format!("cli-linux-{i:02}"));
        opts.instance_uid = Some(fixed_uid(i));
        opts.policy = if i < 2 {
            ApplyPolicy::FailOnMarker(DEFAULT_FAIL_MARKER.into())
        } else {
            ApplyPolicy::Apply
        };
        opts
    });
    let first = gitops.fixture.expected_hashes()["linux-production"];
    support::wait_all_applied(&agents, first, WAIT, "the first revision is applied").await;

    // The list, as a table and as the API's JSON.
    let server = &gitops.server;
    eventually(WAIT, "the server sees 8 synced", async || {
        let c = get_json(&server.api_url("/api/v1/configurations/linux-production")).await;
        (c["counts"]["synced"] == 8).then_some(())
    })
    .await;
    let table = ok(&at(server, &["configurations"]).await);
    assert!(
        table.contains("linux-production") && table.contains("complete"),
        "{table}"
    );
    let listed = json_of(&at(server, &["configurations", "-o", "json"]).await);
    let api = get_json(&server.api_url("/api/v1/configurations")).await;
    assert_eq!(
        listed["items"]
            .as_array()
            .map(|i| i.iter().map(|c| c["name"].clone()).collect::<Vec<_>>()),
        api["items"]
            .as_array()
            .map(|i| i.iter().map(|c| c["name"].clone()).collect::<Vec<_>>()),
        "-o json is the API's list"
    );

    // Not halted: nothing to resume (exit 1, said so); an unknown configuration: exit 1.
    let o = at(server, &["resume", "linux-production"]).await;
    assert_eq!(code(&o), 1, "{}", explain(&o));
    assert!(stderr(&o).contains("is not halted"), "{}", explain(&o));
    let o = at(server, &["resume", "no-such-configuration"]).await;
    assert_eq!(code(&o), 1, "{}", explain(&o));
    assert!(stderr(&o).contains("no configuration"), "{}", explain(&o));

    // A commit the first batch fails halts the rollout: 2 failures, 1 tolerated.
    gitops.fixture.edit(
        "processors/env-production.yaml",
        "team: platform",
        &format!("team: {DEFAULT_FAIL_MARKER}"),
    );
    gitops
        .commit_and_announce("a change the first batch cannot apply")
        .await;
    let failing = gitops.fixture.expected_hashes()["linux-production"];
    let server = &gitops.server;
    eventually(WAIT, "the rollout halts", async || {
        let c = get_json(&server.api_url("/api/v1/configurations/linux-production")).await;
        (c["rollout"]["phase"]["phase"] == "halted").then_some(())
    })
    .await;
    let shown = ok(&at(server, &["configurations", "linux-production"]).await);
    assert!(
        shown.contains("halted")
            && shown.contains("gitamp resume linux-production")
            && shown.contains("BATCH"),
        "{shown}"
    );
    assert_eq!(
        support::agents::received_count(&agents[2..], failing),
        0,
        "nobody past the first batch got the failing config"
    );

    // Resume: the rest of the fleet gets it, the first batch keeps its status.
    let resumed = ok(&at(server, &["resume", "linux-production"]).await);
    assert!(
        resumed.contains("resumed") && resumed.contains("2 failed agent(s) excused"),
        "{resumed}"
    );
    support::wait_all_applied(
        &agents[2..],
        failing,
        WAIT,
        "the agents after the halted batch apply the resumed rollout's config",
    )
    .await;
    let complete = eventually(WAIT, "the resumed rollout completes", async || {
        let c = get_json(&server.api_url("/api/v1/configurations/linux-production")).await;
        (c["rollout"]["phase"]["phase"] == "complete").then_some(c)
    })
    .await;
    assert_eq!(complete["rollout"]["excused"], 2, "{complete}");
    assert_eq!(complete["rollout"]["failed"], 0, "{complete}");
    for a in &agents[..2] {
        let item = get_json(&server.api_url(&format!("/api/v1/agents/{}", uid_of(a)))).await;
        assert_eq!(item["status"], "rolled-back", "{item}");
    }

    // Its event, and the rest of what the read commands show.
    let mine = ok(&at(server, &["events", "--agent", &short_of(&agents[0])]).await);
    assert!(
        mine.contains("failed") && !mine.contains("rollout-resumed"),
        "{mine}"
    );
    let events = ok(&at(server, &["events", "--kind", "rollout-resumed"]).await);
    assert!(
        events.contains("rollout-resumed") && events.contains("Rollout of linux-production"),
        "{events}"
    );
    let revisions = ok(&at(server, &["revisions"]).await);
    assert!(
        revisions.contains("accepted") && revisions.contains(" revision(s)"),
        "{revisions}"
    );
    let failed_one = uid_of(&agents[0]);
    let short = short_of(&agents[0]);
    let described = ok(&at(server, &["describe", "agent", &short]).await);
    for part in [
        failed_one.as_str(),
        "rolled-back",
        "host.name=cli-linux-00",
        "AcceptsRemoteConfig",
        "connected over ws",
        "desired vs effective config",
        "KIND",
        "failed",
    ] {
        assert!(described.contains(part), "no {part:?} in:\n{described}");
    }
    let o = at(
        server,
        &["describe", "agent", "00000000-0000-7000-8000-000000000999"],
    )
    .await;
    assert_eq!(code(&o), 1, "{}", explain(&o));
    assert!(stderr(&o).contains("no agent"), "{}", explain(&o));
    let o = at(server, &["describe", "agent", "fffffffffff9"]).await;
    assert_eq!(code(&o), 1, "{}", explain(&o));
    assert!(
        stderr(&o).contains("no agent \"fffffffffff9\""),
        "{}",
        explain(&o)
    );
    let described = json_of(&at(server, &["describe", "agent", &failed_one, "-o", "json"]).await);
    assert_eq!(described["uid"], failed_one.as_str());
    assert!(
        described["events"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    );

    // A restart keeps the resume: the failures stay excused, the rollout does not halt again
    // once the failed agents are back.
    gitops.server.stop_gracefully();
    gitops.restart();
    let server = &gitops.server;
    eventually(
        WAIT,
        "the restarted server has all 8 agents back",
        async || {
            let c = get_json(&server.api_url("/api/v1/configurations/linux-production")).await;
            let counts = &c["counts"];
            let back = counts["synced"].as_u64().unwrap_or(0)
                + counts["rolled-back"].as_u64().unwrap_or(0);
            (back == 8).then_some(())
        },
    )
    .await;
    support::agents::nudge_plan(server, "the agents came back").await;
    let c = get_json(&server.api_url("/api/v1/configurations/linux-production")).await;
    assert_eq!(c["rollout"]["phase"]["phase"], "complete", "{c}");
    assert_eq!(c["rollout"]["excused"], 2, "{c}");
    support::agents::stop_all(&agents).await;
}

/// `gitamp sync` fetches now and says what it found; the write route needs the token, from
/// `--token-file` or `GITAMP_API_TOKEN`, never a flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_fetches_now_and_reports_the_revision_or_the_rejection() {
    let tokens = tempfile::tempdir().expect("tempdir");
    let token_file = tokens.path().join("api-token");
    std::fs::write(&token_file, "cli-api-token\n").expect("token");
    let token_path = token_file.to_str().expect("utf-8 path");
    let gitops = GitOpsServer::start(
        "example-repo",
        &["--ref", "main", "--api-token-file", token_path],
    );
    let server = &gitops.server;
    // The first fetch is done: the next one is the one `sync` asks for.
    eventually(WAIT, "the first revision is served", async || {
        let ready = reqwest::get(server.api_url("/readyz")).await.ok()?;
        ready.status().is_success().then_some(())
    })
    .await;

    // Without the token: refused (401), exit 2, and how to pass one.
    let o = at(server, &["sync"]).await;
    assert_eq!(code(&o), 2, "{}", explain(&o));
    assert!(
        stderr(&o).contains("401") && stderr(&o).contains("--token-file"),
        "{}",
        explain(&o)
    );
    // A token file that is empty or missing is named.
    let empty = tokens.path().join("empty");
    std::fs::write(&empty, "\n").expect("empty");
    let o = at(
        server,
        &["sync", "--token-file", empty.to_str().expect("path")],
    )
    .await;
    assert_eq!(code(&o), 2, "{}", explain(&o));
    assert!(stderr(&o).contains("is empty"), "{}", explain(&o));
    let o = at(server, &["status", "--token-file", "/nonexistent/token"]).await;
    assert_eq!(code(&o), 2, "{}", explain(&o));
    assert!(stderr(&o).contains("/nonexistent/token"), "{}", explain(&o));

    // A commit nobody announced: `sync` fetches it and prints it.
    gitops.fixture.edit(
        "processors/env-production.yaml",
        "team: platform",
        "team: sre",
    );
    let sha = gitops.fixture.commit_all("a change only sync announces");
    gitops.fixture.push(false);
    let o = at(server, &["sync", "--token-file", token_path]).await;
    let out = ok(&o);
    assert!(out.contains(&format!("synced: serving {sha}")), "{out}");

    // A broken commit: exit 1, the rejection and where it is wrong, the old one still served.
    gitops.fixture.write(
        "configurations/broken.yaml",
        "apiVersion: gitamp.dev/v1\nkind: Configuration\nmetadata: {name: broken}\nspec:\n  sources: [nope]\n  destinations: [nope]\n",
    );
    let bad = gitops.fixture.commit_all("a broken configuration");
    gitops.fixture.push(false);
    let base = format!("http://{}", server.api);
    let o = run(
        &["sync", "--server", &base],
        &[("GITAMP_API_TOKEN", "cli-api-token")],
    )
    .await;
    assert_eq!(code(&o), 1, "{}", explain(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("revision {bad} was rejected"))
            && err.contains(&format!("still serving {sha}"))
            && err.contains("configurations/broken.yaml:"),
        "{err}"
    );
    // And as the server's status, for scripts.
    let o = run(
        &["sync", "--server", &base, "-o", "json"],
        &[("GITAMP_API_TOKEN", "cli-api-token")],
    )
    .await;
    assert_eq!(code(&o), 1, "{}", explain(&o));
    assert_eq!(json_of(&o)["current_revision"], sha.as_str());
}

/// Agents with long names and many labels: every default table stays within 100 columns,
/// `-o wide` shows what was cut, `-o yaml` is the same data as `-o json`; a folder source has
/// nothing to sync (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_fit_100_columns_wide_shows_the_rest_and_yaml_is_json() {
    let data = tempfile::tempdir().expect("tempdir");
    let repo = data.path().join("repo");
    support::copy_tree(&support::workspace().join("example-repo"), &repo);
    let server = Server::start(
        &data.path().join("data"),
        &[
            "--repo",
            repo.to_str().expect("path"),
            "--opamp-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ],
    );
    let long = "a-very-long-label-value-that-no-table-column-could-ever-hold-whole";
    let agents = start_agents_with(3, &server.ws_url(), |i| {
        let mut opts = AgentOptions::collector(
            "checkout-service-with-a-name-longer-than-any-sane-column",
            &format!("host-{i}-{long}"),
            "production",
        )
        .label("os.type", "linux")
        .label("cloud.availability_zone", long);
        opts.heartbeat_interval = Duration::from_secs(5);
        opts
    });
    eventually(WAIT, "3 agents planned", async || {
        let list = get_json(&server.api_url("/api/v1/agents?status=synced")).await;
        (list["total"] == 3).then_some(())
    })
    .await;

    for args in [
        &["agents"][..],
        &["configurations"],
        &["configurations", "linux-production"],
        &["events"],
        &["revisions"],
        &["describe", "agent", &uid_of(&agents[0])],
    ] {
        let out = ok(&at(&server, args).await);
        for line in out
            .lines()
            .filter(|l| l.starts_with(['│', '┌', '├', '└', '╞']))
        {
            assert!(
                line.chars().count() <= 100,
                "gitamp {args:?}: a line of {} columns:\n{out}",
                line.chars().count()
            );
        }
    }
    let table = ok(&at(&server, &["agents"]).await);
    assert!(
        !table.contains(long) && table.contains("3 agent(s)"),
        "{table}"
    );
    let wide = ok(&at(&server, &["agents", "-o", "wide"]).await);
    for part in [
        format!("host.name=host-0-{long}"),
        format!("cloud.availability_zone={long}"),
        uid_of(&agents[0]),
    ] {
        assert!(wide.contains(&part), "no {part:?} in:\n{wide}");
    }

    let json = json_of(&at(&server, &["agents", "-o", "json"]).await);
    let yaml = ok(&at(&server, &["agents", "-o", "yaml"]).await);
    let from_yaml: Value = serde_saphyr::from_str(&yaml).expect("-o yaml is YAML");
    assert_eq!(json.as_array().map(Vec::len), Some(3));
    assert_eq!(
        json[0]["uid"], from_yaml[0]["uid"],
        "the same objects:\n{yaml}"
    );
    let status = ok(&at(&server, &["status", "-o", "yaml"]).await);
    assert!(status.contains("current_revision:"), "{status}");

    // A folder is read on every change: nothing to fetch.
    let o = at(&server, &["sync"]).await;
    assert_eq!(code(&o), 1, "{}", explain(&o));
    assert!(
        stderr(&o).contains("only a Git source can sync"),
        "{}",
        explain(&o)
    );
    support::agents::stop_all(&agents).await;
}

/// `-o` is the one output flag; `--format` stays a hidden alias for existing scripts (the
/// Action's).
#[test]
fn output_is_the_flag_and_format_its_old_name() {
    let repo = support::workspace().join("example-repo");
    let repo = repo.to_str().expect("path");
    let new = support::gitamp(&["validate", "-o", "json", repo]);
    let old = support::gitamp(&["validate", "--format", "json", repo]);
    assert_eq!((code(&new), stdout(&new)), (code(&old), stdout(&old)));
    let agents = tempfile::NamedTempFile::new().expect("agents file");
    std::fs::write(agents.path(), "[]").expect("write");
    let path = agents.path().to_str().expect("path");
    let new = support::gitamp(&[
        "reconcile",
        "--dry-run",
        repo,
        "--agents",
        path,
        "-o",
        "json",
    ]);
    let old = support::gitamp(&[
        "reconcile",
        "--dry-run",
        repo,
        "--agents",
        path,
        "--format",
        "json",
    ]);
    assert_eq!(json_of(&new)["revision"], json_of(&old)["revision"]);
    let help = stdout(&support::gitamp(&["reconcile", "--help"]));
    assert!(
        help.contains("--output") && !help.contains("--format"),
        "{help}"
    );
    // Clap's own usage errors exit 2.
    let o = support::gitamp(&["agents", "-o", "xml"]);
    assert_eq!(code(&o), 2, "{}", explain(&o));
}

#[test]
fn version_names_the_commit_and_its_date() {
    let o = support::gitamp(&["--version"]);
    let out = ok(&o);
    let line = out.trim();
    let rest = line
        .strip_prefix(&format!("gitamp {} (commit ", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected --version: {line}"));
    let (commit, date) = rest.split_once(", ").expect("commit, date");
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{line}"
    );
    let d: Vec<&str> = date.split('-').collect();
    assert!(
        date == "unknown"
            || (d.len() == 3
                && [4, 2, 2] == [d[0].len(), d[1].len(), d[2].len()]
                && d.iter().all(|p| p.chars().all(|c| c.is_ascii_digit()))),
        "{line}"
    );
}

/// Every subcommand the binary parses (from the library's one clap definition).
fn subcommands() -> Vec<String> {
    gitamp::cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect()
}

#[test]
fn bash_completion_loads_and_completes_subcommands() {
    let script = ok(&support::gitamp(&["completion", "bash"]));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gitamp.bash");
    std::fs::write(&file, &script).expect("write");
    let probe = format!(
        "source {}; complete -p gitamp && COMP_WORDS=(gitamp re) COMP_CWORD=1 COMP_LINE='gitamp re' COMP_POINT=9 && _gitamp gitamp re gitamp && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let o = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &probe])
        .output()
        .expect("bash runs");
    let out = ok(&o);
    assert!(out.contains("complete") && out.contains("gitamp"), "{out}");
    assert!(
        out.lines().any(|l| l == "resume") && out.lines().any(|l| l == "revisions"),
        "completing `gitamp re`:\n{out}"
    );
    for shell in ["zsh", "fish", "powershell", "elvish"] {
        let script = ok(&support::gitamp(&["completion", shell]));
        for name in subcommands() {
            assert!(script.contains(&name), "{shell} completion lacks {name}");
        }
    }
    let o = support::gitamp(&["completion", "tcsh"]);
    assert_eq!(code(&o), 2, "{}", explain(&o));
}

#[test]
fn the_man_page_names_every_subcommand_and_renders_cleanly() {
    let page = ok(&support::gitamp(&["man"]));
    assert!(
        page.starts_with(".ie") || page.contains(".TH gitamp"),
        "{page}"
    );
    for name in subcommands().iter().filter(|n| *n != "help") {
        assert!(
            page.contains(name.as_str()),
            "the man page lacks `{name}`:\n{page}"
        );
    }
    let groff = std::process::Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    match groff {
        Ok(mut child) => {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(page.as_bytes())
                .expect("groff reads");
            let o = child.wait_with_output().expect("groff ends");
            assert!(
                o.status.success() && o.stderr.is_empty(),
                "groff: {}",
                explain(&o)
            );
        }
        Err(_) => println!("note: groff is not installed; the man page was not rendered"),
    }
    // Every page, one per subcommand, into a folder.
    let dir = tempfile::tempdir().expect("tempdir");
    let o = support::gitamp(&["man", "--dir", dir.path().to_str().expect("path")]);
    ok(&o);
    for name in subcommands().iter().filter(|n| *n != "help") {
        let page = dir.path().join(format!("gitamp-{name}.1"));
        assert!(page.is_file(), "no {}", page.display());
    }
    assert!(dir.path().join("gitamp-describe-agent.1").is_file());
}

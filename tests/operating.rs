//! What the README's "Operating gitamp" section promises, done the way it tells an operator to
//! do it: an online backup of the running server's SQLite store restores the fleet's state on an
//! empty data directory (the last good revision served even though the tip is now rejected,
//! its history kept, no redundant push), and a store written by a newer gitamp is refused at
//! start with a message that says so, leaving the file as it was.
//!
//! The backup uses SQLite's online backup API through Python's standard `sqlite3` module, the
//! same API as the `sqlite3` shell's `.backup` command the README shows.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::agents::{nudge_plan, redundant, stop_all};
use support::{GitOpsServer, eventually, get_json, start_agents, wait_all_applied};

const WAIT: Duration = Duration::from_secs(90);
const CONFIG: &str = "linux-production";
/// A configuration naming a destination that does not exist: the revision is rejected.
const BROKEN: &str = "apiVersion: gitamp.dev/v1\nkind: Configuration\nmetadata:\n  name: broken\nspec:\n  priority: 50\n  selector:\n    matchLabels: {team: nobody}\n  sources: [otlp-default]\n  destinations: [does-not-exist]\n";

/// `python3 -c CODE ARGS...`, which must succeed.
fn python(code: &str, args: &[&Path]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An online backup of `from` (in use by a running server) into `to`.
fn online_backup(from: &Path, to: &Path) {
    python(
        "import sqlite3, sys\n\
         src = sqlite3.connect(sys.argv[1]); dst = sqlite3.connect(sys.argv[2])\n\
         src.backup(dst); dst.close(); src.close()",
        &[from, to],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_restores_the_fleet_on_an_empty_data_dir() {
    let mut gitops = GitOpsServer::start("example-repo", &[]);
    let first_sha = support::git(&gitops.fixture.work(), &["rev-parse", "HEAD"]);
    let agents = start_agents(4, "backup-linux", &gitops.server.ws_url());
    let first = gitops.fixture.expected_hashes()[CONFIG];
    wait_all_applied(&agents, first, WAIT, "the first revision is applied").await;

    // A second revision, so the backup holds more than a first start would rebuild.
    gitops.fixture.edit(
        "processors/env-production.yaml",
        "team: ",
        "team: backed-up-",
    );
    let second_sha = gitops.commit_and_announce("before the backup").await;
    let second = gitops.fixture.expected_hashes()[CONFIG];
    wait_all_applied(&agents, second, WAIT, "the second revision is applied").await;
    let status_url = gitops.server.api_url("/api/v1/status");
    eventually(WAIT, "the store has the second revision", async || {
        let st = get_json(&status_url).await;
        (st["current_revision"] == second_sha.as_str()).then_some(())
    })
    .await;
    // Let the write-behind store catch up (it commits within 200 ms of a change).
    tokio::time::sleep(Duration::from_secs(1)).await;

    let backup_dir = tempfile::tempdir().expect("tempdir");
    let backup = backup_dir.path().join("gitamp.db");
    online_backup(&gitops.data_dir().join("gitamp.db"), &backup);

    // The disk is lost: the server dies and its data directory with it (Git cache included).
    // Meanwhile a bad commit lands: only the backup knows which revision was the last good one.
    gitops.server.kill9();
    gitops.fixture.write("configurations/broken.yaml", BROKEN);
    let bad_sha = gitops
        .fixture
        .commit_all("a bad commit while the server is down");
    gitops.fixture.push(false);
    let data = gitops.data_dir();
    std::fs::remove_dir_all(&data).expect("remove the data dir");
    std::fs::create_dir_all(&data).expect("an empty data dir");
    std::fs::copy(&backup, data.join("gitamp.db")).expect("restore the backup");
    let before = redundant(&agents);
    gitops.restart();

    let status_url = gitops.server.api_url("/api/v1/status");
    eventually(
        WAIT,
        "the restored server rejects the tip and serves the second revision",
        async || {
            let st = get_json(&status_url).await;
            if st["current_revision"] == second_sha.as_str()
                && st["last_rejected"]["revision"] == bad_sha.as_str()
            {
                Ok(())
            } else {
                Err(format!("status: {st}"))
            }
        },
    )
    .await;
    let revisions = get_json(&gitops.server.api_url("/api/v1/revisions")).await;
    for sha in [&first_sha, &second_sha] {
        assert!(
            revisions.to_string().contains(sha.as_str()),
            "the restored history lacks {sha}: {revisions}"
        );
    }
    let agents_url = gitops.server.api_url("/api/v1/agents");
    eventually(WAIT, "the agents reconnect and show Synced", async || {
        let list = get_json(&agents_url).await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let synced = items
            .iter()
            .filter(|a| a["status"] == "synced" && a["connected"] == true)
            .count();
        if synced >= agents.len() {
            Ok(())
        } else {
            Err(format!("{synced} of {} synced: {list}", agents.len()))
        }
    })
    .await;
    nudge_plan(
        &gitops.server,
        "the agents reconnected to the restored server",
    )
    .await;
    assert_eq!(
        redundant(&agents),
        before,
        "an agent got again the config it already had after the restore"
    );
    stop_all(&agents).await;
}

#[tokio::test]
async fn a_store_from_a_newer_gitamp_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // A store made by this version (one run that stops at once: `validate`-like start).
    {
        let store = gitamp::store::SqliteStore::open(&data)
            .await
            .expect("open a new store");
        store.close().await;
    }
    let db = data.join("gitamp.db");
    // A newer gitamp added a schema step this binary does not know.
    python(
        "import sqlite3, sys\n\
         db = sqlite3.connect(sys.argv[1])\n\
         db.execute(\"INSERT INTO _sqlx_migrations (version, description, success, checksum, \
         execution_time) VALUES (9999, 'from the future', 1, x'00', 0)\")\n\
         db.commit(); db.close()",
        &[&db],
    );
    let before = std::fs::read(&db).expect("read the store");

    let out = Command::new(env!("CARGO_BIN_EXE_gitamp"))
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args([
            "--opamp-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .env_remove("GITAMP_REPO")
        .output()
        .expect("run gitamp serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("written by a newer gitamp (schema step 9999"),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert_eq!(
        std::fs::read(&db).expect("read the store again"),
        before,
        "the refused store was modified"
    );
}

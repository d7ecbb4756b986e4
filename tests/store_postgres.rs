//! `gitamp serve --store postgres://…` at start: a wrong, unreachable or refusing database is a
//! clear error and exit 2 (the password never shown), and a schema from a newer gitamp is
//! refused and left as it was. Against the private cluster of `scripts/postgres-env.sh`.

mod support;

use std::process::{Command, Output};

use gitamp::store::Store;
use sqlx::Connection as _;
use support::postgres::{admin_url, database_url, fresh_database};

/// `gitamp serve` with `store` (as the flag or, with `env`, as `GITAMP_STORE`), to its exit.
fn serve_with_store(store: &str, env: bool) -> Output {
    let data = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gitamp"));
    cmd.args(["serve", "--data-dir"])
        .arg(data.path())
        .args([
            "--opamp-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .env_remove("GITAMP_REPO")
        .env_remove("GITAMP_STORE");
    if env {
        cmd.env("GITAMP_STORE", store);
    } else {
        cmd.args(["--store", store]);
    }
    cmd.output().expect("run gitamp serve")
}

fn assert_exit_2(out: &Output, wants: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    for want in wants {
        assert!(stderr.contains(want), "wanted {want:?} in stderr: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(!stderr.contains("s3cret"), "the password leaked: {stderr}");
}

#[test]
fn a_store_that_is_not_a_postgres_url_is_a_usage_error() {
    let out = serve_with_store("mysql://u:s3cret@127.0.0.1/db", false);
    assert_exit_2(
        &out,
        &["is not a PostgreSQL URL", "mysql://u:***@127.0.0.1/db"],
    );
}

#[test]
fn an_unreachable_database_is_a_clear_error_and_exit_2() {
    // A port nothing listens on (bound and released).
    let port = support::free_port();
    let url = format!("postgres://gitamp:s3cret@127.0.0.1:{port}/gitamp");
    let out = serve_with_store(&url, true);
    assert_exit_2(
        &out,
        &[
            "connecting to the PostgreSQL store",
            &format!("postgres://gitamp:***@127.0.0.1:{port}/gitamp"),
        ],
    );
}

#[test]
fn a_database_that_does_not_exist_is_a_clear_error_and_exit_2() {
    let url = database_url(&admin_url(), "gitamp_no_such_database");
    let out = serve_with_store(&url, false);
    assert_exit_2(
        &out,
        &[
            "connecting to the PostgreSQL store",
            "gitamp_no_such_database",
        ],
    );
}

#[tokio::test]
async fn a_schema_from_a_newer_gitamp_is_refused_and_left_as_it_was() {
    let url = fresh_database("store_postgres_newer_schema").await;
    {
        let store = gitamp::store::PgStore::connect(&url, Default::default())
            .await
            .expect("open a new store");
        assert_eq!(store.load_agents().await.expect("agents").len(), 0);
        store.close().await;
    }
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, '\\x00', 0)",
    )
    .execute(&mut conn)
    .await
    .expect("add a step from the future");
    let snapshot = async |conn: &mut sqlx::PgConnection| -> Vec<(i64, String)> {
        sqlx::query_as("SELECT version, description FROM _sqlx_migrations ORDER BY version")
            .fetch_all(conn)
            .await
            .expect("read the migrations")
    };
    let before = snapshot(&mut conn).await;

    let out = serve_with_store(&url, false);
    assert_exit_2(&out, &["written by a newer gitamp (schema step 9999"]);
    assert_eq!(
        snapshot(&mut conn).await,
        before,
        "the refused schema was modified"
    );
    let _ = conn.close().await;
}

/// A store on a fresh database `name` and a write-behind writer that commits every 50 ms.
/// A store on a database of its own, `name`, created for the test.
async fn new_store(name: &str) -> gitamp::store::PgStore {
    let url = fresh_database(name).await;
    gitamp::store::PgStore::connect(&url, Default::default())
        .await
        .expect("open a new store")
}

async fn store_and_writer(
    name: &str,
) -> (
    std::sync::Arc<gitamp::store::PgStore>,
    gitamp::store::StoreWriter,
) {
    use gitamp::store::{StoreWriter, WriterOptions};
    let url = fresh_database(name).await;
    let store = std::sync::Arc::new(
        gitamp::store::PgStore::connect(&url, Default::default())
            .await
            .expect("open a new store"),
    );
    let (writer, _task) = StoreWriter::spawn(
        store.clone(),
        WriterOptions {
            max_delay: std::time::Duration::from_millis(50),
            max_ops: 1_000,
            queue: 64,
        },
    );
    (store, writer)
}

/// While the database refuses connections the writer holds what it could not commit (agent
/// records coalesced per agent, events, revisions) and retries on its own: once the database
/// is back, every write lands with no further op or flush.
#[tokio::test]
async fn writes_refused_while_the_database_is_away_are_held_and_land_once_it_is_back() {
    use gitamp::store::{AgentRecord, EventRecord, StoreOp};
    use std::time::Duration;

    let name = "store_postgres_writer_outage";
    let (store, writer) = store_and_writer(name).await;
    let agent = |uid: &str, applied: &str| AgentRecord {
        instance_uid: uid.to_string(),
        applied_hash: Some(applied.to_string()),
        connected: true,
        ..Default::default()
    };
    let mut admin = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("connect as admin");
    let allow = async |admin: &mut sqlx::PgConnection, on: bool| {
        let sql = if on {
            "ALTER DATABASE store_postgres_writer_outage WITH ALLOW_CONNECTIONS true"
        } else {
            "ALTER DATABASE store_postgres_writer_outage WITH ALLOW_CONNECTIONS false"
        };
        sqlx::query(sql)
            .execute(&mut *admin)
            .await
            .expect("alter the database");
        if !on {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(name)
            .execute(&mut *admin)
            .await
            .expect("cut the store's sessions");
        }
    };

    allow(&mut admin, false).await;
    writer
        .send(StoreOp::UpsertAgent(agent("0a", "h1")))
        .await
        .unwrap();
    writer
        .send(StoreOp::AppendEvent(EventRecord {
            time: 1,
            agent_uid: Some("0a".into()),
            kind: "config_sent".into(),
            message: "sent while the database was away".into(),
        }))
        .await
        .unwrap();
    let refused = writer.flush().await;
    assert!(
        refused.is_err(),
        "a flush with the database away: {refused:?}"
    );
    // Newer records queued on top of the held batch: the newest of each agent wins.
    writer
        .send(StoreOp::UpsertAgent(agent("0a", "h2")))
        .await
        .unwrap();
    writer
        .send(StoreOp::UpsertAgent(agent("0b", "h2")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    allow(&mut admin, true).await;

    support::eventually(
        Duration::from_secs(60),
        "the held writes to land",
        async || {
            let agents = store.load_agents().await.map_err(|e| e.to_string())?;
            let applied: Vec<(String, Option<String>)> = agents
                .iter()
                .map(|a| (a.instance_uid.clone(), a.applied_hash.clone()))
                .collect();
            let events = store
                .recent_events(None, 10)
                .await
                .map_err(|e| e.to_string())?;
            let want = vec![
                ("0a".to_string(), Some("h2".to_string())),
                ("0b".to_string(), Some("h2".to_string())),
            ];
            (applied == want && events.len() == 1)
                .then_some(())
                .ok_or(format!("agents {applied:?}, {} events", events.len()))
        },
    )
    .await;
    let _ = admin.close().await;
}

/// A replica's read of agents that came from elsewhere finds the rows there are among more
/// uids than one statement asks for (a ramp queues thousands), and only those.
#[tokio::test]
async fn reading_agents_that_came_from_elsewhere_finds_each_stored_one_across_chunks() {
    use gitamp::store::{AgentRecord, Batch, StoreOp};

    let store = new_store("store_postgres_resume_of").await;
    let uid = |i: usize| format!("{i:032x}");
    let stored = [3, 999, 1_000, 2_400];
    store
        .apply(&Batch::from_ops(stored.iter().map(|&i| {
            StoreOp::UpsertAgent(AgentRecord {
                instance_uid: uid(i),
                sent_hash: Some(format!("sent-{i}")),
                failed_hashes: vec![format!("failed-{i}")],
                connected: true,
                ..Default::default()
            })
        })))
        .await
        .expect("insert");
    let asked: Vec<String> = (0..2_500).map(uid).collect();
    let mut found = store.agent_resume_of(&asked).await.expect("read");
    found.sort_by(|a, b| a.instance_uid.cmp(&b.instance_uid));
    let got: Vec<(String, Option<String>, Vec<String>)> = found
        .into_iter()
        .map(|a| (a.instance_uid, a.sent_hash, a.failed_hashes))
        .collect();
    let want: Vec<(String, Option<String>, Vec<String>)> = stored
        .iter()
        .map(|&i| {
            (
                uid(i),
                Some(format!("sent-{i}")),
                vec![format!("failed-{i}")],
            )
        })
        .collect();
    assert_eq!(got, want);
    assert!(store.agent_resume_of(&[]).await.expect("read").is_empty());
    store.close().await;
}

/// Replicas holding one agent (an HTTP agent whose polls are balanced one by one) each write
/// what reached them, in any order: a write merges with the row (migration 0010). Each step is
/// one replica's record of the agent and the row expected after it.
#[tokio::test]
async fn writes_of_one_agent_from_several_replicas_merge_the_newest_of_each() {
    use gitamp::store::{AgentRecord, Batch, StoreOp};

    /// One replica's record: when it last heard from the agent, what the agent reported last,
    /// the hashes it knows failed, the last APPLIED (hash, when) and the last send (hash, when).
    struct Write {
        seen: i64,
        reported: (&'static str, &'static str),
        failed: &'static [&'static str],
        applied: Option<(&'static str, i64)>,
        sent: Option<(&'static str, i64)>,
    }
    /// The row after the write: reported (hash, status), failed, applied (hash, when), sent
    /// hash, last seen.
    type Row = (
        (String, String),
        Vec<String>,
        (Option<String>, Option<i64>),
        Option<String>,
        i64,
    );
    let hash = |name: &str| name.repeat(32);
    let row = |reported: (&str, &str),
               failed: &[&str],
               applied: Option<(&str, i64)>,
               sent: &str,
               seen|
     -> Row {
        (
            (hash(reported.0), reported.1.to_string()),
            failed.iter().map(|h| hash(h)).collect(),
            (applied.map(|(h, _)| hash(h)), applied.map(|(_, at)| at)),
            Some(hash(sent)),
            seen,
        )
    };
    let steps: Vec<(&str, Write, Row)> = vec![
        (
            "replica 1: the agent failed c2 and runs c1",
            Write {
                seen: 2_000,
                reported: ("c2", "FAILED"),
                failed: &["c2"],
                applied: Some(("c1", 1_000)),
                sent: Some(("c2", 1_500)),
            },
            row(("c2", "FAILED"), &["c2"], Some(("c1", 1_000)), "c2", 2_000),
        ),
        (
            "replica 0, which last heard from it before the failure: nothing of its older record wins",
            Write {
                seen: 1_600,
                reported: ("c2", "APPLYING"),
                failed: &[],
                applied: Some(("c0", 500)),
                sent: Some(("c1", 900)),
            },
            row(("c2", "FAILED"), &["c2"], Some(("c1", 1_000)), "c2", 2_000),
        ),
        (
            "replica 2, which missed the failure but saw the rollback's APPLIED: the failure stays",
            Write {
                seen: 3_000,
                reported: ("c1", "APPLIED"),
                failed: &[],
                applied: Some(("c1", 2_900)),
                sent: Some(("c1", 2_500)),
            },
            row(("c1", "APPLIED"), &["c2"], Some(("c1", 2_900)), "c1", 3_000),
        ),
        (
            "replica 0 again: it knows c3 failed long ago; the union keeps both",
            Write {
                seen: 1_700,
                reported: ("c3", "FAILED"),
                failed: &["c3"],
                applied: Some(("c0", 500)),
                sent: Some(("c1", 900)),
            },
            row(
                ("c1", "APPLIED"),
                &["c2", "c3"],
                Some(("c1", 2_900)),
                "c1",
                3_000,
            ),
        ),
        (
            "replica 1: the agent applied c2 after all (fixed on its host), which clears it",
            Write {
                seen: 4_000,
                reported: ("c2", "APPLIED"),
                failed: &[],
                applied: Some(("c2", 4_000)),
                sent: Some(("c2", 3_500)),
            },
            row(("c2", "APPLIED"), &["c3"], Some(("c2", 4_000)), "c2", 4_000),
        ),
        (
            "replica 2's stale record with c2 failed does not bring the failure back",
            Write {
                seen: 3_100,
                reported: ("c1", "APPLIED"),
                failed: &["c2", "c3"],
                applied: Some(("c1", 2_900)),
                sent: Some(("c1", 2_500)),
            },
            row(("c2", "APPLIED"), &["c3"], Some(("c2", 4_000)), "c2", 4_000),
        ),
        (
            "a failure of c2 reported after it was applied counts again",
            Write {
                seen: 5_000,
                reported: ("c2", "FAILED"),
                failed: &["c2"],
                applied: Some(("c1", 2_900)),
                sent: Some(("c2", 3_500)),
            },
            row(
                ("c2", "FAILED"),
                &["c2", "c3"],
                Some(("c2", 4_000)),
                "c2",
                5_000,
            ),
        ),
    ];

    let store = new_store("store_postgres_merged_writes").await;
    for (what, write, want) in steps {
        let record = AgentRecord {
            instance_uid: "0a".repeat(16),
            reported_hash: Some(hash(write.reported.0)),
            remote_config_status: Some(write.reported.1.to_string()),
            failed_hashes: write.failed.iter().map(|h| hash(h)).collect(),
            applied_hash: write.applied.map(|(h, _)| hash(h)),
            applied_at: write.applied.map(|(_, at)| at),
            sent_hash: write.sent.map(|(h, _)| hash(h)),
            sent_at: write.sent.map(|(_, at)| at),
            connected: true,
            last_seen: write.seen,
            ..Default::default()
        };
        store
            .apply(&Batch::from_ops([StoreOp::UpsertAgent(record)]))
            .await
            .expect("write");
        let agents = store.load_agents().await.expect("read");
        let [got] = agents.as_slice() else {
            panic!("one row, got {agents:?}");
        };
        let got: Row = (
            (
                got.reported_hash.clone().unwrap_or_default(),
                got.remote_config_status.clone().unwrap_or_default(),
            ),
            got.failed_hashes.clone(),
            (got.applied_hash.clone(), got.applied_at),
            got.sent_hash.clone(),
            got.last_seen,
        );
        assert_eq!(got, want, "{what}");
    }
    store.close().await;
}

/// An agent's row is updated in place (a heap-only tuple: no new index entries) when a record
/// changes what it reports: no index covers a column every write changes (migration 0006).
#[tokio::test]
async fn agent_updates_are_heap_only() {
    use gitamp::store::{AgentRecord, Batch, StoreOp};
    use std::time::Duration;

    let url = fresh_database("store_postgres_hot_updates").await;
    let store = gitamp::store::PgStore::connect(&url, Default::default())
        .await
        .expect("open a new store");
    let batch = |applied: &str| {
        Batch::from_ops((0..100).map(|i| {
            StoreOp::UpsertAgent(AgentRecord {
                instance_uid: format!("{i:032x}"),
                applied_hash: Some(applied.to_string()),
                connected: true,
                ..Default::default()
            })
        }))
    };
    store.apply(&batch("h1")).await.expect("insert");
    store.apply(&batch("h2")).await.expect("update");
    store.apply(&batch("h3")).await.expect("update");
    store.close().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    // Statistics reach pg_stat_user_tables once the writing sessions flush them (at close).
    support::eventually(Duration::from_secs(30), "200 updates counted", async || {
        let (updated, hot): (i64, i64) = sqlx::query_as(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'agents'",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
        (updated >= 200)
            .then_some(hot)
            .ok_or(format!("{updated} updates, {hot} heap-only"))
    })
    .await;
    let (updated, hot): (i64, i64) = sqlx::query_as(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'agents'",
    )
    .fetch_one(&mut conn)
    .await
    .expect("table statistics");
    // An index on a column every write changes makes none heap-only. The pages' free space
    // (fill factor 70) takes about a third of these updates; pruning frees room for more,
    // unless other sessions' snapshots keep the old versions (other tests in the cluster).
    assert!(
        hot * 5 >= updated,
        "{hot} of {updated} agent updates were heap-only"
    );
    let _ = conn.close().await;
}

/// A batch the database refuses for what it holds (here a NUL byte, which PostgreSQL text
/// cannot store) is dropped, not retried: holding it would hold every later write.
#[tokio::test]
async fn a_batch_the_database_refuses_for_its_content_is_dropped_and_later_writes_land() {
    use gitamp::store::{AgentRecord, StoreOp};

    let (store, writer) = store_and_writer("store_postgres_poison_batch").await;
    let agent = |uid: &str| AgentRecord {
        instance_uid: uid.to_string(),
        connected: true,
        ..Default::default()
    };
    writer
        .send(StoreOp::UpsertAgent(agent("bad\0uid")))
        .await
        .unwrap();
    let refused = writer.flush().await;
    assert!(refused.is_err(), "a NUL byte stored: {refused:?}");
    writer
        .send(StoreOp::UpsertAgent(agent("0c")))
        .await
        .unwrap();
    writer.flush().await.expect("the next batch lands");
    let uids: Vec<String> = store
        .load_agents()
        .await
        .expect("agents")
        .into_iter()
        .map(|a| a.instance_uid)
        .collect();
    assert_eq!(uids, vec!["0c".to_string()]);
}

/// Replicas commit events at once and each prunes the events table after its batch: no prune
/// fails (a prune another replica is running is skipped, not waited for), and the table ends
/// with exactly the newest `max_events`. (The deadlock seen in a 60,000-agent benchmark did not
/// reproduce here; this holds the pruning's result under concurrency.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_pruning_events_at_once_keep_exactly_the_newest() {
    use gitamp::store::{Batch, EventRecord, PgStore, StoreOp, StoreOptions};
    support::logs::capture();
    let url = fresh_database("store_postgres_concurrent_prunes").await;
    let opts = StoreOptions {
        max_events: 1_000,
        ..Default::default()
    };
    const PER_BATCH: usize = 200;
    const BATCHES: usize = 40;
    let mut replicas = Vec::new();
    for _ in 0..4 {
        replicas.push(std::sync::Arc::new(
            PgStore::connect(&url, opts.clone())
                .await
                .expect("open a store"),
        ));
    }
    let tasks: Vec<_> = replicas
        .iter()
        .enumerate()
        .map(|(r, store)| {
            let store = store.clone();
            tokio::spawn(async move {
                for b in 0..BATCHES {
                    let batch = Batch::from_ops((0..PER_BATCH).map(|i| {
                        StoreOp::AppendEvent(EventRecord {
                            time: 0,
                            agent_uid: None,
                            kind: "test".into(),
                            message: format!("replica {r} batch {b} event {i}"),
                        })
                    }));
                    store.apply(&batch).await.expect("commit a batch of events");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a committing task");
    }
    let failed = support::logs::count(&["Pruning old rows failed"]);
    assert_eq!(failed, 0, "prunes failed: {:#?}", support::logs::lines());
    // One more batch alone prunes to the limit.
    let last = Batch::from_ops([StoreOp::AppendEvent(EventRecord {
        time: 0,
        agent_uid: None,
        kind: "test".into(),
        message: "last".into(),
    })]);
    replicas[0]
        .apply(&last)
        .await
        .expect("commit the last batch");
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut conn)
        .await
        .expect("count events");
    assert_eq!(left, i64::from(opts.max_events), "kept max_events rows");
    let span: i64 = sqlx::query_scalar("SELECT max(id) - min(id) + 1 FROM events")
        .fetch_one(&mut conn)
        .await
        .expect("span of ids");
    assert_eq!(span, left, "the rows kept are the newest, with no gap");
    let _ = conn.close().await;
}

/// While another session holds a table's prune (its advisory lock), a replica's batch commits
/// at once and leaves the pruning to a later batch: prunes never wait on each other.
#[tokio::test]
async fn a_prune_another_replica_runs_is_skipped_not_waited_for() {
    use gitamp::store::{Batch, EventRecord, PgStore, StoreOp, StoreOptions};
    use std::time::Duration;
    let url = fresh_database("store_postgres_prune_skipped").await;
    let store = PgStore::connect(
        &url,
        StoreOptions {
            max_events: 10,
            ..Default::default()
        },
    )
    .await
    .expect("open a store");
    let events = |n: usize| {
        Batch::from_ops((0..n).map(|i| {
            StoreOp::AppendEvent(EventRecord {
                time: 0,
                agent_uid: None,
                kind: "test".into(),
                message: format!("event {i}"),
            })
        }))
    };
    let mut other = sqlx::PgConnection::connect(&url).await.expect("connect");
    let count = async |c: &mut sqlx::PgConnection| -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(c)
            .await
            .expect("count events")
    };
    // Another replica's prune, in a transaction it keeps open.
    sqlx::query("BEGIN")
        .execute(&mut other)
        .await
        .expect("begin");
    let held: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(hashtext('gitamp'), hashtext('prune events'))",
    )
    .fetch_one(&mut other)
    .await
    .expect("take the prune lock");
    assert!(held);
    tokio::time::timeout(Duration::from_secs(10), store.apply(&events(30)))
        .await
        .expect("the batch does not wait for the other prune")
        .expect("commit");
    let mut mine = sqlx::PgConnection::connect(&url).await.expect("connect");
    assert_eq!(
        count(&mut mine).await,
        30,
        "pruning was left to a later batch"
    );
    sqlx::query("COMMIT")
        .execute(&mut other)
        .await
        .expect("commit");
    store.apply(&events(1)).await.expect("commit");
    assert_eq!(count(&mut mine).await, 10, "the next batch prunes");
    let _ = other.close().await;
    let _ = mine.close().await;
}

/// A replica adopting the leader's rollouts reads a rollout's member list (every agent in
/// scope) only when the leader wrote a new one: the counts, rewritten every few seconds in a
/// rollout, come without it.
#[tokio::test]
async fn a_replica_reads_a_rollouts_member_list_only_when_it_was_written_again() {
    use gitamp::store::{Batch, RolloutRecord, StoreOp};
    let store = new_store("store_postgres_rollout_members").await;
    let save = async |progress: &str, members: Option<&str>, at: i64| {
        let record = RolloutRecord {
            configuration: "web".into(),
            target_hash: "aa".repeat(32),
            progress: progress.into(),
            members: members.map(str::to_string),
            updated_at: at,
        };
        store
            .apply(&Batch::from_ops([StoreOp::SaveRollout(record)]))
            .await
            .expect("saved");
    };
    let held = |at: i64| vec![("web".to_string(), "aa".repeat(32), at)];

    save(r#"{"batch":1}"#, Some(r#"["a","b"]"#), 10).await;
    let rows = store.rollouts_to_adopt(&[]).await.expect("read");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].record.members.as_deref(), Some(r#"["a","b"]"#));
    assert_eq!((rows[0].members_at, rows[0].whole), (10, false));
    // Held already: the progress alone.
    let rows = store.rollouts_to_adopt(&held(10)).await.expect("read");
    assert_eq!(rows[0].record.members, None);
    assert_eq!(rows[0].record.progress, r#"{"batch":1}"#);

    // The counts moved, the list did not: still not read again, and still stored.
    save(r#"{"batch":2}"#, None, 20).await;
    let rows = store.rollouts_to_adopt(&held(10)).await.expect("read");
    assert_eq!(rows[0].record.members, None);
    assert_eq!(
        (
            rows[0].record.progress.as_str(),
            rows[0].record.updated_at,
            rows[0].members_at
        ),
        (r#"{"batch":2}"#, 20, 10)
    );
    let all = store.load_rollouts().await.expect("load");
    assert_eq!(all[0].members.as_deref(), Some(r#"["a","b"]"#));

    // A new list: read again by a replica that held the old one.
    save(r#"{"batch":2}"#, Some(r#"["a","b","c"]"#), 30).await;
    let rows = store.rollouts_to_adopt(&held(10)).await.expect("read");
    assert_eq!(rows[0].record.members.as_deref(), Some(r#"["a","b","c"]"#));
    assert_eq!(rows[0].members_at, 30);

    // A row written whole, before the list was kept apart: its progress holds the list.
    sqlx::query("UPDATE rollouts SET members = NULL, progress = $1")
        .bind(r#"{"batch":2,"agents":["a"]}"#)
        .execute(store.pool())
        .await
        .expect("an older row");
    let rows = store.rollouts_to_adopt(&held(30)).await.expect("read");
    assert!(rows[0].whole);
    assert_eq!(rows[0].record.members, None);
    store.close().await;
}

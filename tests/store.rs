//! The store, on SQLite and on PostgreSQL alike: every table round-trips, data survives a reopen, the write-behind writer
//! coalesces and flushes, and the event cap holds.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gitamp::store::{
    AgentRecord, AnyStore, Batch, ConfigEntry, ConfigRecord, EventRecord, RevisionRecord,
    RolloutRecord, Store, StoreOp, StoreOptions, StoreWriter, WriterOptions,
};
use serde_json::json;
use support::eventually;
use support::postgres::{Backend, TestDb};

fn agent(uid: &str, seen: i64) -> AgentRecord {
    AgentRecord {
        instance_uid: uid.to_string(),
        labels: Some(BTreeMap::from([
            ("service.name".to_string(), "checkout".to_string()),
            ("deployment.environment".to_string(), "prod".to_string()),
        ])),
        description: Some(json!({ "identifying": { "service.name": "checkout" } })),
        capabilities: 0x1_0000_0003,
        health: Some(json!({ "healthy": true, "status": "ok" })),
        reported_hash: Some("aa".repeat(32)),
        remote_config_status: Some("APPLIED".into()),
        remote_config_error: None,
        effective_config_hash: Some("bb".repeat(32)),
        sent_hash: Some("aa".repeat(32)),
        sent_at: Some(seen - 10),
        failed_hashes: vec!["cc".repeat(32)],
        applied_hash: Some("dd".repeat(32)),
        applied_at: Some(seen - 5),
        last_error: Some("invalid keys: batch/x".into()),
        connected: true,
        last_seen: seen,
        // Written by replicas for the leader, not read back (a restarted replica's agents
        // report their packages again).
        packages: None,
        settings_offer: Some(format!("{}/{}/30", "ee".repeat(32), "ff".repeat(32))),
    }
}

fn event(n: i64, agent: Option<&str>) -> EventRecord {
    EventRecord {
        time: n,
        agent_uid: agent.map(str::to_string),
        kind: "config_sent".into(),
        message: format!("event {n}"),
    }
}

async fn every_table_round_trips_and_survives_reopen(db: TestDb) {
    let store = db.open().await;
    if db.backend == Backend::Sqlite {
        assert!(db.path().join("gitamp.db").exists());
    }
    assert_eq!(store.last_accepted_revision().await.unwrap(), None);

    let a = agent("0102", 1000);
    let mut b = agent("0a0b", 2000);
    b.connected = false;
    b.remote_config_status = Some("FAILED".into());
    b.remote_config_error = Some("bad exporter".into());
    b.reported_hash = None;
    b.sent_at = None;
    let rev1 = RevisionRecord {
        revision: "1111".into(),
        time: 10,
        accepted: true,
        diagnostics: json!([]),
        source_error: None,
    };
    let rev2 = RevisionRecord {
        revision: "2222".into(),
        time: 20,
        accepted: false,
        diagnostics: json!([{ "severity": "error", "message": "unknown type" }]),
        source_error: None,
    };
    let rev3 = RevisionRecord {
        revision: String::new(),
        time: 30,
        accepted: false,
        diagnostics: json!([]),
        source_error: Some("listing refs: connection refused".into()),
    };
    let rollout = RolloutRecord {
        configuration: "web".into(),
        target_hash: "dd".repeat(32),
        progress: json!({ "batch": 2 }).to_string(),
        members: Some(json!(["0102", "0a0b"]).to_string()),
        updated_at: 40,
    };
    store
        .apply(&Batch::from_ops([
            StoreOp::UpsertAgent(a.clone()),
            StoreOp::UpsertAgent(b.clone()),
            StoreOp::RecordRevision(rev1.clone()),
            StoreOp::RecordRevision(rev2.clone()),
            StoreOp::RecordRevision(rev3.clone()),
            StoreOp::SaveRollout(rollout.clone()),
            StoreOp::AppendEvent(event(1, Some("0102"))),
            StoreOp::AppendEvent(event(2, None)),
        ]))
        .await
        .unwrap();

    let check = |store: AnyStore| {
        let (a, b, rev1, rev2, rev3, rollout) = (
            a.clone(),
            b.clone(),
            rev1.clone(),
            rev2.clone(),
            rev3.clone(),
            rollout.clone(),
        );
        async move {
            assert_eq!(store.load_agents().await.unwrap(), vec![a, b]);
            assert_eq!(
                store.revisions(10).await.unwrap(),
                vec![rev3, rev2, rev1.clone()]
            );
            assert_eq!(store.revisions(1).await.unwrap().len(), 1);
            // The rejected and failed revisions after it do not replace the served one.
            assert_eq!(
                store.last_accepted_revision().await.unwrap(),
                Some(rev1.revision)
            );
            assert_eq!(store.load_rollouts().await.unwrap(), vec![rollout]);
            assert_eq!(
                store.recent_events(None, 10).await.unwrap(),
                vec![event(2, None), event(1, Some("0102"))]
            );
            assert_eq!(
                store.recent_events(Some("0102"), 10).await.unwrap(),
                vec![event(1, Some("0102"))]
            );
            assert!(
                store
                    .recent_events(Some("ffff"), 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
    };
    check(store.clone()).await;
    store.close().await;
    drop(store);

    let reopened = db.open().await;
    check(reopened.clone()).await;

    // A rollout saved without its members keeps the stored list (the leader writes the list
    // only when it changed), and a save with one replaces it.
    let moved = RolloutRecord {
        progress: json!({ "batch": 3 }).to_string(),
        members: None,
        updated_at: 45,
        ..rollout.clone()
    };
    reopened
        .apply(&Batch::from_ops([StoreOp::SaveRollout(moved.clone())]))
        .await
        .unwrap();
    assert_eq!(
        reopened.load_rollouts().await.unwrap(),
        vec![RolloutRecord {
            members: rollout.members.clone(),
            ..moved.clone()
        }]
    );
    let grown = RolloutRecord {
        members: Some(json!(["0102", "0a0b", "0c0d"]).to_string()),
        updated_at: 46,
        ..moved
    };
    reopened
        .apply(&Batch::from_ops([StoreOp::SaveRollout(grown.clone())]))
        .await
        .unwrap();
    assert_eq!(reopened.load_rollouts().await.unwrap(), vec![grown]);

    // Updates replace, deletes delete.
    let mut a2 = agent("0102", 5000);
    a2.connected = false;
    reopened
        .apply(&Batch::from_ops([
            StoreOp::UpsertAgent(a2.clone()),
            StoreOp::DeleteAgent("0a0b".into()),
            StoreOp::DeleteRollout {
                configuration: "web".into(),
                target_hash: None,
            },
            StoreOp::RecordRevision(RevisionRecord {
                revision: "3333".into(),
                time: 50,
                accepted: true,
                ..Default::default()
            }),
        ]))
        .await
        .unwrap();
    assert_eq!(reopened.load_agents().await.unwrap(), vec![a2]);
    assert!(reopened.load_rollouts().await.unwrap().is_empty());
    assert_eq!(
        reopened.last_accepted_revision().await.unwrap().as_deref(),
        Some("3333")
    );
}

async fn an_upsert_without_labels_description_health_or_offer_keeps_the_stored_ones(db: TestDb) {
    let store = db.open().await;
    let first = agent("0c0d", 1000);
    store
        .apply(&Batch::from_ops([StoreOp::UpsertAgent(first.clone())]))
        .await
        .unwrap();
    // A later upsert (say, the applied hash) without the unchanged description and health.
    let mut later = agent("0c0d", 2000);
    later.labels = None;
    later.description = None;
    later.health = None;
    later.settings_offer = None;
    later.sent_hash = Some("dd".repeat(32));
    // A new agent whose first upsert has neither gets the column defaults.
    let mut bare = agent("0e0f", 3000);
    bare.description = None;
    bare.health = None;
    store
        .apply(&Batch::from_ops([
            StoreOp::UpsertAgent(later.clone()),
            StoreOp::UpsertAgent(bare.clone()),
        ]))
        .await
        .unwrap();
    let loaded = store.load_agents().await.unwrap();
    let expected = AgentRecord {
        labels: first.labels.clone(),
        description: first.description.clone(),
        health: first.health.clone(),
        settings_offer: first.settings_offer.clone(),
        ..later
    };
    assert_eq!(loaded[0], expected);
    // A restarted server reads the offer back with what it resumes from.
    let resumed = store.load_agent_resume().await.unwrap();
    let resumed = resumed.iter().find(|a| a.instance_uid == "0c0d").unwrap();
    assert_eq!(resumed.settings_offer, first.settings_offer);
    assert_eq!(loaded[1].description, Some(serde_json::Value::Null));
    assert_eq!(loaded[1].health, Some(serde_json::Value::Null));
    assert_eq!(loaded[1].last_seen, 3000);
}

/// A batch is written in multi-row statements (chunks of 256, 64, 16, 4 and 1 rows, one
/// statement shape per combination of labels, description and health present): every row of every
/// shape and chunk size must land with its own values, and an update must touch only its row.
async fn a_large_mixed_batch_lands_row_for_row(db: TestDb) {
    let store = db.open().await;
    // 700 agents, 87 or 88 of each of the 8 shapes (which of labels, description and health
    // they carry): each shape goes through several chunk sizes (88 = 64 + 16 + 2x4); the
    // update below goes through 256 too.
    let shaped = |n: usize| {
        let mut a = agent(&format!("{n:04x}"), 1000 + n as i64);
        a.sent_hash = Some(format!("{n:064x}"));
        a.applied_hash = n.is_multiple_of(3).then(|| format!("{:064x}", n + 1));
        a.last_error = n.is_multiple_of(5).then(|| format!("error {n}"));
        a.labels = (n % 8 >= 4).then(|| BTreeMap::from([("n".to_string(), n.to_string())]));
        a.description = (n % 4 >= 2).then(|| json!({ "n": n }));
        a.health = (n % 2 == 1).then(|| json!({ "healthy": n.is_multiple_of(3) }));
        a
    };
    let first: Vec<AgentRecord> = (0..700).map(shaped).collect();
    store
        .apply(&Batch::from_ops(
            first.iter().cloned().map(StoreOp::UpsertAgent),
        ))
        .await
        .unwrap();
    // Then every agent again (an update): 300 without description or health, which keep
    // theirs; the rest with new ones; and agent 5 deleted.
    let mut second: Vec<StoreOp> = (0..700)
        .filter(|n| *n != 5)
        .map(|n| {
            let mut a = shaped(n);
            a.last_seen = 5000 + n as i64;
            if n < 300 {
                a.labels = None;
                a.description = None;
                a.health = None;
            } else {
                a.labels = Some(BTreeMap::from([("again".to_string(), n.to_string())]));
                a.description = Some(json!({ "n": n, "again": true }));
                a.health = Some(json!({ "healthy": false }));
            }
            StoreOp::UpsertAgent(a)
        })
        .collect();
    second.push(StoreOp::DeleteAgent(format!("{:04x}", 5)));
    store.apply(&Batch::from_ops(second)).await.unwrap();

    let loaded = store.load_agents().await.unwrap();
    assert_eq!(loaded.len(), 699);
    for got in &loaded {
        let n = usize::from_str_radix(&got.instance_uid, 16).unwrap();
        assert_ne!(n, 5, "agent 5 was deleted");
        let original = &first[n];
        assert_eq!(got.last_seen, 5000 + n as i64, "agent {n}");
        assert_eq!(got.sent_hash, original.sent_hash, "agent {n}");
        let (labels, description, health) = if n < 300 {
            (
                original.labels.clone().unwrap_or_default(),
                original.description.clone().unwrap_or_default(),
                original.health.clone().unwrap_or_default(),
            )
        } else {
            (
                BTreeMap::from([("again".to_string(), n.to_string())]),
                json!({ "n": n, "again": true }),
                json!({ "healthy": false }),
            )
        };
        assert_eq!(got.labels, Some(labels), "agent {n}");
        assert_eq!(got.description, Some(description), "agent {n}");
        assert_eq!(got.health, Some(health), "agent {n}");
    }
}

async fn writer_coalesces_and_flushes(db: TestDb) {
    let store = Arc::new(db.open().await);
    let (writer, task) = StoreWriter::spawn(
        store.clone(),
        WriterOptions {
            // Long enough that only flush() commits in this test.
            max_delay: Duration::from_secs(3600),
            max_ops: 100_000,
            queue: 1024,
        },
    );
    for seen in 0..500 {
        writer
            .send(StoreOp::UpsertAgent(agent("0102", seen)))
            .await
            .unwrap();
    }
    writer
        .try_send(StoreOp::UpsertAgent(agent("0303", 7)))
        .unwrap();
    writer
        .send(StoreOp::AppendEvent(event(1, None)))
        .await
        .unwrap();
    // Nothing is durable before the batch commits.
    assert!(store.load_agents().await.unwrap().is_empty());
    writer.flush().await.unwrap();
    let agents = store.load_agents().await.unwrap();
    assert_eq!(agents.len(), 2);
    assert_eq!(agents[0].last_seen, 499, "latest upsert wins");
    assert_eq!(store.recent_events(None, 10).await.unwrap().len(), 1);

    // Dropping the last handle commits what is pending and stops the task.
    writer
        .send(StoreOp::DeleteAgent("0303".into()))
        .await
        .unwrap();
    drop(writer);
    task.await.unwrap();
    assert_eq!(store.load_agents().await.unwrap().len(), 1);
}

async fn writer_commits_after_the_delay_and_at_the_size_limit(db: TestDb) {
    let store = Arc::new(db.open().await);
    let (writer, _task) = StoreWriter::spawn(
        store.clone(),
        WriterOptions {
            max_delay: Duration::from_millis(200),
            max_ops: 3,
            queue: 16,
        },
    );
    // Size trigger: the third op commits without any timer.
    for n in 0..3 {
        writer
            .send(StoreOp::AppendEvent(event(n, None)))
            .await
            .unwrap();
    }
    // Time trigger: a lone op is committed ~200 ms later (polled for up to 10 s).
    writer
        .send(StoreOp::AppendEvent(event(9, None)))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the lone op committed after the delay",
        async || {
            let seen = store.recent_events(None, 10).await.unwrap().len();
            if seen == 4 {
                Ok(())
            } else {
                Err(format!("{seen} events"))
            }
        },
    )
    .await;
}

async fn event_cap_keeps_the_newest(db: TestDb) {
    let store = db
        .open_with(StoreOptions {
            max_events: 5,
            max_revisions: 3,
            ..Default::default()
        })
        .await;
    for chunk in (0..12).collect::<Vec<i64>>().chunks(4) {
        store
            .apply(&Batch::from_ops(
                chunk.iter().map(|n| StoreOp::AppendEvent(event(*n, None))),
            ))
            .await
            .unwrap();
    }
    let kept: Vec<i64> = store
        .recent_events(None, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.time)
        .collect();
    assert_eq!(kept, vec![11, 10, 9, 8, 7]);

    // Events about agents have a bound of their own: a flood of them (a rollout) keeps its
    // newest five and deletes none of the fleet's.
    for chunk in (100..120).collect::<Vec<i64>>().chunks(6) {
        store
            .apply(&Batch::from_ops(chunk.iter().map(|n| {
                StoreOp::AppendEvent(event(*n, Some(if n % 2 == 0 { "0a" } else { "0b" })))
            })))
            .await
            .unwrap();
    }
    let kept: Vec<(i64, Option<String>)> = store
        .recent_events(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.time, e.agent_uid))
        .collect();
    let of = |a: &str| Some(a.to_string());
    assert_eq!(
        kept,
        vec![
            (119, of("0b")),
            (118, of("0a")),
            (117, of("0b")),
            (116, of("0a")),
            (115, of("0b")),
            (11, None),
            (10, None),
            (9, None),
            (8, None),
            (7, None),
        ]
    );

    for n in 0..6 {
        store
            .apply(&Batch::from_ops([StoreOp::RecordRevision(
                RevisionRecord {
                    revision: format!("r{n}"),
                    time: n,
                    accepted: n == 1,
                    ..Default::default()
                },
            )]))
            .await
            .unwrap();
    }
    let revs: Vec<String> = store
        .revisions(100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.revision)
        .collect();
    assert_eq!(revs, ["r5", "r4", "r3"]);
    // Pruned history does not forget what is being served.
    assert_eq!(
        store.last_accepted_revision().await.unwrap().as_deref(),
        Some("r1")
    );
}

fn config(hash: &str, revision: &str) -> ConfigRecord {
    ConfigRecord {
        hash: hash.to_string(),
        config_map: BTreeMap::from([(
            String::new(),
            ConfigEntry {
                content_type: "text/yaml".into(),
                body: format!("receivers: {{}} # {hash}\n"),
            },
        )]),
        revision: revision.into(),
        time: 7,
    }
}

/// Rollback targets: a config is stored once per hash, survives a reopen, and a prune keeps
/// exactly the listed (served) ones and those some agent last applied.
async fn configs_are_kept_once_and_pruned_to_served_and_applied(db: TestDb) {
    let store = db.open().await;
    let (h1, h2, h3) = ("11".repeat(32), "22".repeat(32), "33".repeat(32));
    let mut applied = agent("01", 1);
    applied.applied_hash = Some(h2.clone());
    store
        .apply(&Batch::from_ops([
            StoreOp::SaveConfig(config(&h1, "rev1")),
            StoreOp::SaveConfig(config(&h2, "rev1")),
            StoreOp::SaveConfig(config(&h3, "rev2")),
            StoreOp::UpsertAgent(applied),
        ]))
        .await
        .unwrap();
    // Saving a known hash again changes nothing (the first revision that served it stays).
    store
        .apply(&Batch::from_ops([StoreOp::SaveConfig(config(&h1, "rev9"))]))
        .await
        .unwrap();
    let all = store.load_configs().await.unwrap();
    assert_eq!(
        all,
        vec![
            config(&h1, "rev1"),
            config(&h2, "rev1"),
            config(&h3, "rev2")
        ]
    );

    store
        .apply(&Batch::from_ops([StoreOp::PruneConfigs {
            keep: vec![h3.clone()],
        }]))
        .await
        .unwrap();
    store.close().await;
    let store = db.open().await;
    let kept: Vec<String> = store
        .load_configs()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.hash)
        .collect();
    assert_eq!(kept, vec![h2, h3], "h1 is neither served nor applied");
}

/// `commit_now` commits at once what the delay would hold for an hour, without the caller
/// waiting (the reconciler asks for it after a decision a restart must know).
async fn commit_now_commits_without_waiting_for_the_delay(db: TestDb) {
    let store = Arc::new(db.open().await);
    let (writer, _task) = StoreWriter::spawn(
        store.clone(),
        WriterOptions {
            max_delay: Duration::from_secs(3600),
            max_ops: 1000,
            // One slot: a send returns only once the writer has taken the previous op.
            queue: 1,
        },
    );
    writer
        .send(StoreOp::AppendEvent(event(1, None)))
        .await
        .unwrap();
    writer
        .send(StoreOp::AppendEvent(event(2, None)))
        .await
        .unwrap();
    // The writer holds event 1 (the second send proves it took it) and, without the request,
    // commits nothing for an hour.
    assert!(store.recent_events(None, 10).await.unwrap().is_empty());
    // A request finding the one slot still taken by event 2 is dropped (by design), so it is
    // asked again until it lands; the delay of an hour is never what commits.
    eventually(
        Duration::from_secs(10),
        "both events committed on request",
        async || {
            writer.commit_now();
            let seen = store.recent_events(None, 10).await.unwrap().len();
            if seen == 2 {
                Ok(())
            } else {
                Err(format!("{seen} events"))
            }
        },
    )
    .await;
}

both_backends!(
    every_table_round_trips_and_survives_reopen,
    an_upsert_without_labels_description_health_or_offer_keeps_the_stored_ones,
    a_large_mixed_batch_lands_row_for_row,
    writer_coalesces_and_flushes,
    writer_commits_after_the_delay_and_at_the_size_limit,
    event_cap_keeps_the_newest,
    configs_are_kept_once_and_pruned_to_served_and_applied,
    commit_now_commits_without_waiting_for_the_delay
);

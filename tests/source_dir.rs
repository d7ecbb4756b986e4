//! Folder source: the watcher sends the initial snapshot, a new one after a change, and
//! nothing after a no-op touch.

mod support;

use std::time::Duration;

use gitamp::source::dir::{DirOptions, DirWatcher, read_dir};
use gitamp::source::{DirSpec, SyncEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

async fn next(rx: &mut mpsc::Receiver<SyncEvent>, secs: u64) -> Option<SyncEvent> {
    tokio::time::timeout(Duration::from_secs(secs), rx.recv())
        .await
        .ok()
        .flatten()
}

fn snapshot(ev: Option<SyncEvent>) -> gitamp_core::Snapshot {
    match ev {
        Some(SyncEvent::Snapshot(s, _)) => s,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_emits_on_change_and_not_on_touch() {
    watcher_scenario(None).await;
}

/// The polling watcher (for NFS and bind mounts) behaves the same.
#[tokio::test]
async fn poll_watcher_emits_on_change_and_not_on_touch() {
    watcher_scenario(Some(Duration::from_millis(100))).await;
}

async fn watcher_scenario(poll_interval: Option<Duration>) {
    support::logs::capture();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cfg");
    std::fs::create_dir_all(root.join("configurations")).unwrap();
    std::fs::write(root.join("configurations/web.yaml"), "v: 1\n").unwrap();

    let (tx, mut rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let handle = DirWatcher::new(
        DirSpec {
            root: root.clone(),
            sub_path: None,
        },
        DirOptions {
            debounce: Duration::from_millis(100),
            poll_interval,
            ..Default::default()
        },
    )
    .start(tx, cancel.clone())
    .unwrap();

    let first = snapshot(next(&mut rx, 10).await);
    assert_eq!(&*first.files["configurations/web.yaml"], b"v: 1\n");

    // Change a file the way editors do: temp file + rename. The watch was set up before
    // `start` returned, so no wait is needed.
    std::fs::write(root.join("configurations/.web.yaml.tmp"), "v: 2\n").unwrap();
    std::fs::rename(
        root.join("configurations/.web.yaml.tmp"),
        root.join("configurations/web.yaml"),
    )
    .unwrap();
    let second = snapshot(next(&mut rx, 10).await);
    assert_ne!(second.revision, first.revision);
    assert_eq!(&*second.files["configurations/web.yaml"], b"v: 2\n");

    // A new folder with a file inside is seen too (recursive watch).
    std::fs::create_dir_all(root.join("types/nested")).unwrap();
    std::fs::write(root.join("types/nested/t.yaml"), "t: 1\n").unwrap();
    let mut third = snapshot(next(&mut rx, 10).await);
    // Creating the folder and the file may land in two debounce windows.
    while !third.files.contains_key("types/nested/t.yaml") {
        third = snapshot(next(&mut rx, 10).await);
    }

    // Touch and rewrite identical bytes: events fire, the content revision does not change.
    // The touch moves the mtime a few seconds ahead, so the polling watcher (which compares
    // mtimes in whole seconds) sees it too. Proof that the watcher reacted: its re-read logs
    // "content unchanged" once more; only then is "no snapshot" meaningful.
    let root_text = root.display().to_string();
    let unchanged = || support::logs::count(&["Folder re-read; content unchanged", &root_text]);
    let before = unchanged();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(root.join("configurations/web.yaml"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    std::fs::write(root.join("types/nested/t.yaml"), "t: 1\n").unwrap();
    support::eventually(
        Duration::from_secs(10),
        "the watcher re-reads the folder after the touch",
        async || {
            let n = unchanged();
            if n > before {
                Ok(())
            } else {
                Err(format!("{n} unchanged re-reads, was {before}"))
            }
        },
    )
    .await;
    assert!(
        matches!(rx.try_recv(), Err(mpsc::error::TryRecvError::Empty)),
        "no snapshot after a no-op touch"
    );
    // And the next event is the next real change, not a late snapshot of the touch.
    std::fs::write(root.join("configurations/web.yaml"), "v: 3\n").unwrap();
    let fourth = snapshot(next(&mut rx, 10).await);
    assert_eq!(&*fourth.files["configurations/web.yaml"], b"v: 3\n");

    cancel.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn sub_path_and_missing_folder() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("deploy")).unwrap();
    std::fs::write(tmp.path().join("deploy/a.yaml"), "a").unwrap();
    std::fs::write(tmp.path().join("outside.yaml"), "o").unwrap();
    let spec = DirSpec {
        root: tmp.path().to_path_buf(),
        sub_path: Some("deploy".into()),
    };
    let s = read_dir(&spec.effective_root(), 1 << 20).unwrap();
    assert_eq!(s.snapshot.files.keys().collect::<Vec<_>>(), ["a.yaml"]);

    let (tx, _rx) = mpsc::channel(1);
    let missing = DirWatcher::new(
        DirSpec {
            root: tmp.path().join("missing"),
            sub_path: None,
        },
        DirOptions::default(),
    );
    assert!(missing.start(tx, CancellationToken::new()).is_err());
}

/// `--repo <folder>` parses to a folder source and `source::start` runs its watcher.
#[tokio::test]
async fn start_from_parsed_spec() {
    use gitamp::source::{SourceArgs, SourceSettings, SourceSpec, start};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cfg");
    std::fs::create_dir_all(root.join("deploy")).unwrap();
    std::fs::write(root.join("deploy/a.yaml"), "a: 1\n").unwrap();
    let spec = SourceSpec::parse(&SourceArgs {
        repo: root.to_string_lossy().into_owned(),
        sub_path: Some("deploy".into()),
        ..Default::default()
    })
    .unwrap();
    assert!(matches!(spec, SourceSpec::Dir(_)));
    let (tx, mut rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let running = start(
        spec,
        &SourceSettings::new(tmp.path().join("data")),
        tx,
        cancel.clone(),
    )
    .unwrap();
    assert!(running.wake.is_none() && running.git.is_none());
    let s = snapshot(next(&mut rx, 10).await);
    assert_eq!(s.files.keys().collect::<Vec<_>>(), ["a.yaml"]);
    cancel.cancel();
    running.task.await.unwrap();
}

//! Git source against real repositories made here: a bare "remote" whose commits are written
//! with git2 (a force-push is just moving the ref to an unrelated commit), served through the
//! local transport, `file://`, and `git daemon` on loopback for the shallow path. The poller's
//! interval and backoff are checked in paused (virtual) tokio time.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use git2::{IndexEntry, IndexTime, Oid, Repository, Signature};
use gitamp::source::git::{GitError, GitOptions, GitPoller, GitSource, SyncOutcome};
use gitamp::source::{GitAuth, GitSpec, SkipReason, SyncEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Remote {
    _tmp: tempfile::TempDir,
    path: PathBuf,
    repo: Repository,
    data_dir: PathBuf,
}

enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Link(&'a str, &'a str),
}
use Entry::{File, Link};

impl Remote {
    fn new() -> Remote {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("remote.git");
        let repo = Repository::init_bare(&path).unwrap();
        repo.set_head("refs/heads/main").unwrap();
        let data_dir = tmp.path().join("data");
        Remote {
            _tmp: tmp,
            path,
            repo,
            data_dir,
        }
    }

    /// Write a commit holding exactly `entries` and point `refname` at it (forcibly).
    fn commit(&self, refname: &str, parent: Option<Oid>, entries: &[Entry<'_>]) -> Oid {
        let mut index = git2::Index::new().unwrap();
        for e in entries {
            let (path, mode, bytes) = match e {
                File(p, b) => (*p, 0o100644, *b),
                Link(p, target) => (*p, 0o120000, target.as_bytes()),
            };
            let id = self.repo.blob(bytes).unwrap();
            index
                .add(&IndexEntry {
                    ctime: IndexTime::new(0, 0),
                    mtime: IndexTime::new(0, 0),
                    dev: 0,
                    ino: 0,
                    mode,
                    uid: 0,
                    gid: 0,
                    file_size: bytes.len() as u32,
                    id,
                    flags: 0,
                    flags_extended: 0,
                    path: path.as_bytes().to_vec(),
                })
                .unwrap();
        }
        let tree_id = index.write_tree_to(&self.repo).unwrap();
        let tree = self.repo.find_tree(tree_id).unwrap();
        let sig = Signature::now("test", "test@example.invalid").unwrap();
        let parents: Vec<_> = parent
            .map(|p| self.repo.find_commit(p).unwrap())
            .into_iter()
            .collect();
        let parent_refs: Vec<_> = parents.iter().collect();
        let oid = self
            .repo
            .commit(None, &sig, &sig, "test commit", &tree, &parent_refs)
            .unwrap();
        self.repo.reference(refname, oid, true, "test").unwrap();
        oid
    }

    fn source(&self, git_ref: Option<&str>, sub_path: Option<&str>) -> GitSource {
        self.source_with(
            self.path.to_string_lossy().into_owned(),
            git_ref,
            sub_path,
            1024 * 1024,
        )
    }

    fn source_with(
        &self,
        url: String,
        git_ref: Option<&str>,
        sub_path: Option<&str>,
        max: u64,
    ) -> GitSource {
        let mut opts = GitOptions::new(&self.data_dir);
        opts.max_file_size = max;
        GitSource::new(
            GitSpec {
                url,
                git_ref: git_ref.map(str::to_string),
                sub_path: sub_path.map(str::to_string),
                auth: GitAuth::None,
            },
            opts,
        )
        .unwrap()
    }
}

fn updated(outcome: SyncOutcome) -> (gitamp::source::SourceSnapshot, bool) {
    match outcome {
        SyncOutcome::Updated { snapshot, fetched } => (snapshot, fetched),
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

fn file(s: &gitamp::source::SourceSnapshot, path: &str) -> String {
    String::from_utf8(s.snapshot.files[path].to_vec()).unwrap()
}

#[tokio::test]
async fn first_fetch_new_commit_and_no_change_means_no_fetch() {
    let remote = Remote::new();
    let c1 = remote.commit(
        "refs/heads/main",
        None,
        &[
            File("configurations/web.yaml", b"v: 1\n"),
            File("README.md", b"hi"),
        ],
    );
    let src = remote.source(Some("main"), None);
    let (snap, fetched) = updated(src.sync(None).await.unwrap());
    assert!(fetched);
    assert_eq!(snap.snapshot.revision, c1.to_string());
    assert_eq!(file(&snap, "configurations/web.yaml"), "v: 1\n");
    assert_eq!(snap.snapshot.files.len(), 2);
    assert!(snap.skipped.is_empty());
    assert_eq!(src.fetch_count(), 1);

    // Nothing moved: ls-remote only, no fetch, nothing read.
    let out = src.sync(Some(c1.to_string())).await.unwrap();
    assert!(matches!(out, SyncOutcome::Unchanged { ref revision } if *revision == c1.to_string()));
    assert_eq!(src.fetch_count(), 1);

    let c2 = remote.commit(
        "refs/heads/main",
        Some(c1),
        &[File("configurations/web.yaml", b"v: 2\n")],
    );
    let (snap, fetched) = updated(src.sync(Some(c1.to_string())).await.unwrap());
    assert!(fetched);
    assert_eq!(snap.snapshot.revision, c2.to_string());
    assert_eq!(file(&snap, "configurations/web.yaml"), "v: 2\n");
    assert!(!snap.snapshot.files.contains_key("README.md"));
    assert_eq!(src.fetch_count(), 2);

    // A restart reuses the cache: the first sync reads the tree but fetches nothing.
    let restarted = remote.source(Some("main"), None);
    assert_eq!(restarted.cache_dir(), src.cache_dir());
    let (snap, fetched) = updated(restarted.sync(None).await.unwrap());
    assert!(!fetched);
    assert_eq!(snap.snapshot.revision, c2.to_string());
    assert_eq!(restarted.fetch_count(), 0);
    assert_eq!(
        restarted.read_cached().unwrap().unwrap().snapshot.revision,
        c2.to_string()
    );
    assert_eq!(
        restarted
            .read_commit(&c2.to_string())
            .unwrap()
            .unwrap()
            .snapshot
            .revision,
        c2.to_string()
    );
}

#[tokio::test]
async fn default_branch_and_file_url() {
    let remote = Remote::new();
    let c1 = remote.commit("refs/heads/main", None, &[File("a.yaml", b"a")]);
    remote.commit("refs/heads/other", None, &[File("b.yaml", b"b")]);
    let url = format!("file://{}", remote.path.display());
    let src = remote.source_with(url, None, None, 1 << 20);
    let (snap, _) = updated(src.sync(None).await.unwrap());
    assert_eq!(snap.snapshot.revision, c1.to_string());
    assert!(snap.snapshot.files.contains_key("a.yaml"));
    assert_eq!(
        src.read_cached().unwrap().unwrap().snapshot.revision,
        c1.to_string()
    );
}

#[tokio::test]
async fn force_push_is_followed() {
    let remote = Remote::new();
    let c1 = remote.commit("refs/heads/main", None, &[File("a.yaml", b"1")]);
    let c2 = remote.commit("refs/heads/main", Some(c1), &[File("a.yaml", b"2")]);
    let src = remote.source(Some("main"), None);
    let (snap, _) = updated(src.sync(None).await.unwrap());
    assert_eq!(snap.snapshot.revision, c2.to_string());
    // Rewrite history: main now points at an unrelated root commit.
    let rewritten = remote.commit("refs/heads/main", None, &[File("a.yaml", b"rewritten")]);
    let (snap, fetched) = updated(src.sync(Some(c2.to_string())).await.unwrap());
    assert!(fetched);
    assert_eq!(snap.snapshot.revision, rewritten.to_string());
    assert_eq!(file(&snap, "a.yaml"), "rewritten");
}

#[tokio::test]
async fn tags_are_tracked_and_peeled() {
    let remote = Remote::new();
    let c1 = remote.commit("refs/heads/main", None, &[File("a.yaml", b"1")]);
    let sig = Signature::now("t", "t@example.invalid").unwrap();
    let obj = remote.repo.find_object(c1, None).unwrap();
    remote
        .repo
        .tag("v1", &obj, &sig, "release 1", false)
        .unwrap();

    let src = remote.source(Some("v1"), None);
    let (snap, _) = updated(src.sync(None).await.unwrap());
    assert_eq!(
        snap.snapshot.revision,
        c1.to_string(),
        "annotated tag peeled to its commit"
    );

    // Commits on main do not move the tag.
    let c2 = remote.commit("refs/heads/main", Some(c1), &[File("a.yaml", b"2")]);
    let fetches = src.fetch_count();
    assert!(matches!(
        src.sync(Some(c1.to_string())).await.unwrap(),
        SyncOutcome::Unchanged { .. }
    ));
    assert_eq!(src.fetch_count(), fetches);

    // Moving the tag (force) is followed.
    let obj = remote.repo.find_object(c2, None).unwrap();
    remote
        .repo
        .tag("v1", &obj, &sig, "release 1 again", true)
        .unwrap();
    let (snap, _) = updated(src.sync(Some(c1.to_string())).await.unwrap());
    assert_eq!(snap.snapshot.revision, c2.to_string());

    // A full tag ref name works too.
    let full = remote.source(Some("refs/tags/v1"), None);
    let (snap, _) = updated(full.sync(None).await.unwrap());
    assert_eq!(snap.snapshot.revision, c2.to_string());
}

#[tokio::test]
async fn sub_path_restricts_and_relativises() {
    let remote = Remote::new();
    let c1 = remote.commit(
        "refs/heads/main",
        None,
        &[
            File("deploy/configurations/web.yaml", b"w"),
            File("deploy/types/t.yaml", b"t"),
            File("docs/readme.md", b"r"),
        ],
    );
    let src = remote.source(Some("main"), Some("deploy"));
    let (snap, _) = updated(src.sync(None).await.unwrap());
    let paths: Vec<_> = snap.snapshot.files.keys().cloned().collect();
    assert_eq!(paths, ["configurations/web.yaml", "types/t.yaml"]);
    assert_eq!(snap.snapshot.revision, c1.to_string());

    let missing = remote.source(Some("main"), Some("nope"));
    assert!(matches!(
        missing.sync(None).await,
        Err(GitError::SubPathMissing { .. })
    ));
    let not_dir = remote.source(Some("main"), Some("docs/readme.md"));
    assert!(matches!(
        not_dir.sync(None).await,
        Err(GitError::SubPathNotDir { .. })
    ));
}

#[tokio::test]
async fn symlinks_and_big_files_are_skipped_and_reported() {
    let remote = Remote::new();
    let big = vec![b'x'; 4096];
    remote.commit(
        "refs/heads/main",
        None,
        &[
            File("ok.yaml", b"fine"),
            File("blobs/big.yaml", &big),
            Link("escape.yaml", "/etc/passwd"),
        ],
    );
    let src = remote.source_with(
        remote.path.to_string_lossy().into_owned(),
        Some("main"),
        None,
        1024,
    );
    let (snap, _) = updated(src.sync(None).await.unwrap());
    assert_eq!(snap.snapshot.files.keys().collect::<Vec<_>>(), ["ok.yaml"]);
    let mut skipped: Vec<_> = snap
        .skipped
        .iter()
        .map(|s| (s.path.clone(), s.reason.clone()))
        .collect();
    skipped.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        skipped,
        vec![
            (
                "blobs/big.yaml".to_string(),
                SkipReason::TooLarge {
                    size: 4096,
                    limit: 1024
                }
            ),
            ("escape.yaml".to_string(), SkipReason::Symlink),
        ]
    );
}

#[tokio::test]
async fn deleted_branch_is_an_error_and_the_cache_keeps_the_last_good() {
    let remote = Remote::new();
    remote.commit("refs/heads/main", None, &[File("m.yaml", b"m")]);
    let f1 = remote.commit("refs/heads/feature", None, &[File("f.yaml", b"f")]);
    let src = remote.source(Some("feature"), None);
    updated(src.sync(None).await.unwrap());

    remote
        .repo
        .find_reference("refs/heads/feature")
        .unwrap()
        .delete()
        .unwrap();
    let err = src.sync(Some(f1.to_string())).await.unwrap_err();
    assert!(matches!(err, GitError::RefNotFound { .. }), "{err}");
    assert!(err.to_string().contains("feature"));
    let cached = src.read_cached().unwrap().expect("last good still cached");
    assert_eq!(cached.snapshot.revision, f1.to_string());
    assert!(cached.snapshot.files.contains_key("f.yaml"));
}

#[tokio::test]
async fn corrupted_cache_is_recreated() {
    let remote = Remote::new();
    let c1 = remote.commit("refs/heads/main", None, &[File("a.yaml", b"1")]);
    let src = remote.source(Some("main"), None);
    updated(src.sync(None).await.unwrap());
    let cache = src.cache_dir().to_path_buf();

    // Objects gone but refs intact: reading fails, the cache is wiped and cloned again.
    std::fs::remove_dir_all(cache.join("objects")).unwrap();
    std::fs::create_dir_all(cache.join("objects")).unwrap();
    let fresh = remote.source(Some("main"), None);
    let (snap, fetched) = updated(fresh.sync(None).await.unwrap());
    assert!(fetched);
    assert_eq!(snap.snapshot.revision, c1.to_string());
    assert!(fresh.recovery_count() >= 1);

    // Not a repository at all (a crash mid-init, a stray file).
    std::fs::remove_dir_all(&cache).unwrap();
    std::fs::write(&cache, b"garbage").unwrap();
    let fresh = remote.source(Some("main"), None);
    let (snap, _) = updated(fresh.sync(None).await.unwrap());
    assert_eq!(snap.snapshot.revision, c1.to_string());
    assert!(cache.is_dir());

    // Garbage HEAD and config.
    std::fs::write(cache.join("HEAD"), b"nonsense").unwrap();
    std::fs::write(cache.join("config"), b"[[[").unwrap();
    let fresh = remote.source(Some("main"), None);
    let (snap, _) = updated(fresh.sync(None).await.unwrap());
    assert_eq!(snap.snapshot.revision, c1.to_string());
}

#[tokio::test]
async fn unreachable_remotes_fail() {
    let remote = Remote::new();
    for url in ["file:///nonexistent/x.git", "http://127.0.0.1:1/x.git"] {
        let src = remote.source_with(url.to_string(), Some("main"), None, 1 << 20);
        let err = src.sync(None).await.unwrap_err();
        assert!(matches!(err, GitError::Connect { .. }), "{url}: {err}");
        assert!(src.read_cached().unwrap().is_none());
    }
}

/// A source tracking `main` of the test's local remote.
fn main_of(remote: &Remote, opts: GitOptions) -> GitSource {
    GitSource::new(
        GitSpec {
            url: remote.path.to_string_lossy().into_owned(),
            git_ref: Some("main".into()),
            sub_path: None,
            auth: GitAuth::None,
        },
        opts,
    )
    .expect("a source for the local remote")
}

/// A source whose remote never answers (nothing listens on port 1).
fn unreachable_source(opts: GitOptions) -> GitSource {
    GitSource::new(
        GitSpec {
            url: "http://127.0.0.1:1/x.git".into(),
            git_ref: Some("main".into()),
            sub_path: None,
            auth: GitAuth::None,
        },
        opts,
    )
    .expect("a source for an unreachable remote")
}

async fn next(rx: &mut mpsc::Receiver<SyncEvent>) -> SyncEvent {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("event within 30 s")
        .expect("channel open")
}

#[tokio::test]
async fn poller_backs_off_on_errors() {
    let remote = Remote::new();
    let mut opts = GitOptions::new(&remote.data_dir);
    opts.backoff_base = Duration::from_millis(5);
    opts.backoff_cap = Duration::from_millis(50);
    let src = unreachable_source(opts);
    let (tx, mut rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(GitPoller::new(src).run(tx, cancel.clone()));
    for expected in 1..=3u32 {
        match next(&mut rx).await {
            SyncEvent::Error(msg, info) => {
                assert_eq!(info.consecutive_failures, expected);
                assert!(msg.contains("127.0.0.1"), "{msg}");
                let (Some(last), Some(retry)) = (info.last_fetch, info.next_retry) else {
                    panic!("times missing")
                };
                assert!(retry >= last);
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn poller_sends_snapshots_and_wakes_on_notify() {
    let remote = Remote::new();
    let c1 = remote.commit("refs/heads/main", None, &[File("a.yaml", b"1")]);
    let mut opts = GitOptions::new(&remote.data_dir);
    opts.interval = Duration::from_secs(3600);
    let src = main_of(&remote, opts);
    let poller = GitPoller::new(src);
    let wake: Arc<tokio::sync::Notify> = poller.wake_handle();
    let (tx, mut rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(poller.run(tx, cancel.clone()));
    match next(&mut rx).await {
        SyncEvent::Snapshot(s, info) => {
            assert_eq!(s.revision, c1.to_string());
            assert_eq!(info.consecutive_failures, 0);
        }
        other => panic!("{other:?}"),
    }
    // Without a wake the next poll is an hour away; the webhook path wakes it now.
    wake.notify_one();
    assert!(matches!(next(&mut rx).await, SyncEvent::Unchanged(ref r, _) if *r == c1.to_string()));
    let c2 = remote.commit("refs/heads/main", Some(c1), &[File("a.yaml", b"2")]);
    wake.notify_one();
    match next(&mut rx).await {
        SyncEvent::Snapshot(s, _) => assert_eq!(s.revision, c2.to_string()),
        other => panic!("{other:?}"),
    }
    cancel.cancel();
    task.await.unwrap();
}

/// The poller's timers are tokio's: with time paused, an hour-long poll interval passes at once
/// and is measured exactly. A commit made right after a poll is seen at the next one, an
/// hour of virtual time later, and not before.
#[tokio::test(start_paused = true)]
async fn poller_polls_once_per_interval_in_virtual_time() {
    const HOUR: Duration = Duration::from_secs(3600);
    let remote = Remote::new();
    let c1 = remote.commit("refs/heads/main", None, &[File("a.yaml", b"1")]);
    let mut opts = GitOptions::new(&remote.data_dir);
    opts.interval = HOUR;
    let src = main_of(&remote, opts);
    let (tx, mut rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let started = tokio::time::Instant::now();
    let task = tokio::spawn(GitPoller::new(src).run(tx, cancel.clone()));
    // (The fetch runs on a blocking thread, which holds virtual time still meanwhile.)
    match rx.recv().await {
        Some(SyncEvent::Snapshot(s, _)) => assert_eq!(s.revision, c1.to_string()),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the first poll is at once"
    );
    let polled = tokio::time::Instant::now();
    let c2 = remote.commit("refs/heads/main", Some(c1), &[File("a.yaml", b"2")]);
    // Nothing before the interval is up ...
    assert!(
        tokio::time::timeout(HOUR - Duration::from_secs(1), rx.recv())
            .await
            .is_err(),
        "no poll before the interval"
    );
    // ... and the new commit right at its end.
    match rx.recv().await {
        Some(SyncEvent::Snapshot(s, _)) => assert_eq!(s.revision, c2.to_string()),
        other => panic!("{other:?}"),
    }
    let waited = polled.elapsed();
    assert!(
        waited >= HOUR && waited < HOUR + Duration::from_secs(1),
        "polled after {waited:?}"
    );
    cancel.cancel();
    task.await.unwrap();
}

/// Failures back off on tokio's clock too: each retry waits between half and all of a delay
/// that doubles from the base up to the cap (equal jitter), measured exactly in virtual time.
#[tokio::test(start_paused = true)]
async fn poller_backoff_doubles_up_to_its_cap_in_virtual_time() {
    let remote = Remote::new();
    let mut opts = GitOptions::new(&remote.data_dir);
    opts.backoff_base = Duration::from_secs(2);
    opts.backoff_cap = Duration::from_secs(10);
    let src = unreachable_source(opts);
    let (tx, mut rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(GitPoller::new(src).run(tx, cancel.clone()));
    let mut at = Vec::new();
    for expected in 1..=6u32 {
        match rx.recv().await {
            Some(SyncEvent::Error(_, info)) => assert_eq!(info.consecutive_failures, expected),
            other => panic!("expected an error, got {other:?}"),
        }
        at.push(tokio::time::Instant::now());
    }
    for (k, pair) in at.windows(2).enumerate() {
        let full = (Duration::from_secs(2) * (1 << k)).min(Duration::from_secs(10));
        let waited = pair[1] - pair[0];
        assert!(
            waited >= full / 2 && waited <= full + Duration::from_millis(2),
            "retry after failure {}: waited {waited:?}, want {:?}..={full:?}",
            k + 1,
            full / 2
        );
    }
    cancel.cancel();
    task.await.unwrap();
}

/// `git daemon` serving the folder holding `remote` on a loopback port, killed on drop; None
/// when git daemon is unavailable. Like GitHub and GitLab, it lets a client fetch any commit
/// reachable from a ref by its id.
struct GitDaemon {
    child: std::process::Child,
    port: u16,
}

impl GitDaemon {
    fn serve(remote: &Remote) -> Option<GitDaemon> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let base = remote.path.parent().unwrap().to_path_buf();
        let child = std::process::Command::new("git")
            .args([
                "-c",
                "uploadpack.allowReachableSHA1InWant=true",
                "daemon",
                "--export-all",
                "--reuseaddr",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.display()),
            ])
            .arg(&base)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        support::eventually_blocking(Duration::from_secs(10), "git daemon listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
        });
        Some(GitDaemon { child, port })
    }

    fn url(&self) -> String {
        format!("git://127.0.0.1:{}/remote.git", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A remote with two commits on `main` (the second the tip), served by `git daemon`; None when
/// git daemon is unavailable.
fn two_commits_over_git_daemon() -> Option<(Remote, GitDaemon, Oid, Oid)> {
    let remote = Remote::new();
    let c1 = remote.commit("refs/heads/main", None, &[File("a.yaml", b"1")]);
    let c2 = remote.commit("refs/heads/main", Some(c1), &[File("a.yaml", b"2")]);
    let Some(daemon) = GitDaemon::serve(&remote) else {
        eprintln!("git daemon unavailable; skipping");
        return None;
    };
    Some((remote, daemon, c1, c2))
}

/// Network transports fetch with depth 1: serve the remote with `git daemon` on loopback.
#[tokio::test]
async fn network_fetch_is_shallow() {
    let Some((remote, daemon, c1, c2)) = two_commits_over_git_daemon() else {
        return;
    };
    let src = remote.source_with(daemon.url(), Some("main"), None, 1 << 20);
    let (snap, fetched) = updated(src.sync(None).await.unwrap());
    assert!(fetched);
    assert_eq!(snap.snapshot.revision, c2.to_string());
    let cache = Repository::open_bare(src.cache_dir()).unwrap();
    assert!(cache.is_shallow(), "depth-1 fetch over the network");
    assert!(cache.find_commit(c1).is_err(), "history was not fetched");
    let c3 = remote.commit("refs/heads/main", Some(c2), &[File("a.yaml", b"3")]);
    let (snap, _) = updated(src.sync(Some(c2.to_string())).await.unwrap());
    assert_eq!(snap.snapshot.revision, c3.to_string());
    assert_eq!(file(&snap, "a.yaml"), "3");
}

/// A shallow cache lacks older commits: the last accepted revision of a restored store is
/// fetched by its id (and a commit the remote never had is simply not found).
#[tokio::test]
async fn an_older_commit_is_fetched_by_id_over_a_shallow_fetch() {
    let Some((remote, daemon, c1, c2)) = two_commits_over_git_daemon() else {
        return;
    };
    let src = remote.source_with(daemon.url(), Some("main"), None, 1 << 20);
    let (snap, _) = updated(src.sync(None).await.unwrap());
    assert_eq!(snap.snapshot.revision, c2.to_string());
    assert!(
        src.read_commit(&c1.to_string()).unwrap().is_none(),
        "not in a depth-1 cache"
    );
    let older = src
        .fetch_commit(&c1.to_string())
        .unwrap()
        .expect("fetched by id");
    assert_eq!(older.snapshot.revision, c1.to_string());
    assert_eq!(file(&older, "a.yaml"), "1");
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    assert!(src.fetch_commit(unknown).unwrap().is_none());
}

/// libgit2 asks for credentials again after every rejection; the callback must give up
/// instead of looping forever. A loopback server answers every request with 401.
#[tokio::test]
async fn rejected_token_gives_up() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let remote = Remote::new();
    let src = GitSource::new(
        GitSpec {
            url: format!("http://127.0.0.1:{port}/x.git"),
            git_ref: Some("main".into()),
            sub_path: None,
            auth: GitAuth::Token {
                username: "x-access-token".into(),
                token: "secret-token-value".into(),
            },
        },
        GitOptions::new(&remote.data_dir),
    )
    .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), src.sync(None))
        .await
        .expect("gave up instead of looping")
        .unwrap_err();
    let msg = gitamp::source::git::error_chain(&err);
    assert!(msg.contains("token was rejected"), "{msg}");
    assert!(!msg.contains("secret-token-value"));
    let n = requests.load(Ordering::SeqCst);
    assert!((1..=4).contains(&n), "{n} requests");
}

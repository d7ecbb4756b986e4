//! Folder source: a plain directory (not a Git repository) read whole into a snapshot and
//! watched for changes.
//!
//! Editors save by writing a temporary file and renaming it, so the folder is watched
//! recursively (not file by file) and any debounced event triggers a full re-read: config
//! repositories are small, and a full read cannot miss a change the way event bookkeeping
//! can. A snapshot is sent only when the content revision changed, so `touch` or an editor
//! that rewrites identical bytes sends nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gitamp_core::Snapshot;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, NoCache, RecommendedCache, new_debouncer_opt};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    DEFAULT_MAX_FILE_SIZE, DirSpec, SkipReason, SkippedFile, SourceSnapshot, SyncEvent, SyncInfo,
};

/// Quiet time before a burst of file-system events is acted on.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct DirOptions {
    pub max_file_size: u64,
    pub debounce: Duration,
    /// Scan the folder at this interval instead of using native events: inotify does not see
    /// changes made on NFS or through some container bind mounts.
    pub poll_interval: Option<Duration>,
}

impl Default for DirOptions {
    fn default() -> Self {
        DirOptions {
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            debounce: DEFAULT_DEBOUNCE,
            poll_interval: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("watching {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("the folder reader stopped unexpectedly: {0}")]
    Task(String),
}

/// Read every regular file under `root` into a snapshot whose revision is the content hash.
///
/// `.git` is skipped, symlinks are never followed (they could leave the folder) and files
/// over `max_file_size` are left out; both are reported in [`SourceSnapshot::skipped`].
pub fn read_dir(root: &Path, max_file_size: u64) -> Result<SourceSnapshot, DirError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DirError::Io { path, source }
    };
    let meta = std::fs::metadata(root).map_err(io_err(root))?;
    if !meta.is_dir() {
        return Err(DirError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    let mut files = std::collections::BTreeMap::new();
    let mut skipped = Vec::new();
    // (absolute dir, relative prefix with trailing '/')
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                skipped.push(SkippedFile {
                    path: format!("{prefix}{}", file_name.to_string_lossy()),
                    reason: SkipReason::NonUtf8Name,
                });
                continue;
            };
            if name == ".git" {
                continue;
            }
            let rel = format!("{prefix}{name}");
            let path = entry.path();
            // `DirEntry::file_type` does not follow symlinks.
            let ft = entry.file_type().map_err(io_err(&path))?;
            if ft.is_symlink() {
                skipped.push(SkippedFile {
                    path: rel,
                    reason: SkipReason::Symlink,
                });
            } else if ft.is_dir() {
                stack.push((path, format!("{rel}/")));
            } else if ft.is_file() {
                let size = entry.metadata().map_err(io_err(&path))?.len();
                if size > max_file_size {
                    skipped.push(SkippedFile {
                        path: rel,
                        reason: SkipReason::TooLarge {
                            size,
                            limit: max_file_size,
                        },
                    });
                    continue;
                }
                match std::fs::read(&path) {
                    Ok(bytes) => {
                        files.insert(rel, Arc::<[u8]>::from(bytes));
                    }
                    // Deleted between listing and reading (an editor's temp file): the
                    // next event re-reads anyway.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(DirError::Io { path, source }),
                }
            } else {
                skipped.push(SkippedFile {
                    path: rel,
                    reason: SkipReason::NotRegular,
                });
            }
        }
    }
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    let revision = Snapshot::content_revision(&files);
    Ok(SourceSnapshot {
        snapshot: Snapshot { revision, files },
        skipped,
        signature: None,
        commit: None,
    })
}

/// Watches a [`DirSpec`] and sends a [`SyncEvent::Snapshot`] whenever its content changes
/// (and once at start).
pub struct DirWatcher {
    spec: DirSpec,
    opts: DirOptions,
}

impl DirWatcher {
    pub fn new(spec: DirSpec, opts: DirOptions) -> DirWatcher {
        DirWatcher { spec, opts }
    }

    /// Start watching (fails now if the folder cannot be watched), then run until `cancel`
    /// fires or the receiver is dropped. The first event is the initial snapshot (or error).
    pub fn start(
        self,
        tx: mpsc::Sender<SyncEvent>,
        cancel: CancellationToken,
    ) -> Result<JoinHandle<()>, DirError> {
        let root = self.spec.effective_root();
        if !root.is_dir() {
            return Err(DirError::NotADirectory { path: root });
        }
        let changed = Arc::new(Notify::new());
        let notify_tx = changed.clone();
        let handler = move |result: DebounceEventResult| match result {
            Ok(events) => {
                // Our own re-read opens every file, and inotify reports opens: ignore
                // accesses other than a close after writing, or we would loop forever.
                let relevant = events.iter().any(|e| match e.kind {
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                    EventKind::Access(_) => false,
                    _ => true,
                });
                if relevant {
                    notify_tx.notify_one();
                }
            }
            Err(errors) => {
                for e in errors {
                    warn!(error = %e, "Folder watcher error.");
                }
                notify_tx.notify_one();
            }
        };
        let config = notify::Config::default().with_follow_symlinks(false);
        let watch_err = |source| DirError::Watch {
            path: root.clone(),
            source,
        };
        // Kept alive by the task below; dropping it stops the watcher thread.
        let debouncer: Box<dyn Send> = match self.opts.poll_interval {
            None => {
                let mut d = new_debouncer_opt::<_, notify::RecommendedWatcher, RecommendedCache>(
                    self.opts.debounce,
                    None,
                    handler,
                    RecommendedCache::new(),
                    config,
                )
                .map_err(watch_err)?;
                d.watch(&root, RecursiveMode::Recursive)
                    .map_err(watch_err)?;
                Box::new(d)
            }
            Some(every) => {
                let mut d = new_debouncer_opt::<_, notify::PollWatcher, NoCache>(
                    self.opts.debounce,
                    None,
                    handler,
                    NoCache,
                    // PollWatcher compares mtimes in whole seconds: compare contents too, or
                    // two saves within a second look like one.
                    config.with_poll_interval(every).with_compare_contents(true),
                )
                .map_err(watch_err)?;
                d.watch(&root, RecursiveMode::Recursive)
                    .map_err(watch_err)?;
                Box::new(d)
            }
        };
        info!(path = %root.display(), "Watching folder for changes.");
        let max = self.opts.max_file_size;
        Ok(tokio::spawn(async move {
            let _debouncer = debouncer;
            let mut last: Option<String> = None;
            let mut info = SyncInfo::default();
            loop {
                let started = Instant::now();
                let dir = root.clone();
                let result = tokio::task::spawn_blocking(move || read_dir(&dir, max))
                    .await
                    .map_err(|e| DirError::Task(e.to_string()))
                    .and_then(|r| r);
                info.last_fetch = Some(SystemTime::now());
                info.last_duration = started.elapsed();
                let event = match result {
                    Ok(s) if last.as_deref() == Some(s.snapshot.revision.as_str()) => {
                        debug!(path = %root.display(), "Folder re-read; content unchanged.");
                        let recovered = info.consecutive_failures > 0;
                        info.consecutive_failures = 0;
                        recovered.then(|| SyncEvent::Unchanged(s.snapshot.revision, info.clone()))
                    }
                    Ok(s) => {
                        info!(
                            path = %root.display(),
                            revision = %s.snapshot.revision,
                            files = s.snapshot.files.len(),
                            skipped = s.skipped.len(),
                            "Folder has a new revision."
                        );
                        for f in &s.skipped {
                            warn!(path = %f.path, reason = %f.reason, "File left out of the snapshot.");
                        }
                        last = Some(s.snapshot.revision.clone());
                        info.consecutive_failures = 0;
                        info.skipped = s.skipped;
                        Some(SyncEvent::Snapshot(s.snapshot, info.clone()))
                    }
                    Err(e) => {
                        info.consecutive_failures = info.consecutive_failures.saturating_add(1);
                        let message = super::git::error_chain(&e);
                        warn!(path = %root.display(), error = %message, "Reading the folder failed.");
                        Some(SyncEvent::Error(message, info.clone()))
                    }
                };
                if let Some(event) = event {
                    tokio::select! {
                        r = tx.send(event) => if r.is_err() { break },
                        _ = cancel.cancelled() => break,
                    }
                }
                tokio::select! {
                    _ = changed.notified() => {}
                    _ = cancel.cancelled() => break,
                }
            }
            debug!(path = %root.display(), "Folder watcher stopped.");
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_skips_and_hashes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/config"), "x").unwrap();
        std::fs::write(root.join("a/b/c.yaml"), "kind: Source\n").unwrap();
        std::fs::write(root.join("top.yaml"), "x: 1\n").unwrap();
        std::fs::write(root.join("big.bin"), vec![0u8; 2048]).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/passwd", root.join("link.yaml")).unwrap();
        let s = read_dir(root, 1024).unwrap();
        let paths: Vec<_> = s.snapshot.files.keys().cloned().collect();
        assert_eq!(paths, ["a/b/c.yaml", "top.yaml"]);
        assert!(s.snapshot.revision.starts_with("content-"));
        let reasons: Vec<_> = s
            .skipped
            .iter()
            .map(|f| (f.path.as_str(), &f.reason))
            .collect();
        assert_eq!(
            reasons[0],
            (
                "big.bin",
                &SkipReason::TooLarge {
                    size: 2048,
                    limit: 1024
                }
            )
        );
        #[cfg(unix)]
        assert_eq!(reasons[1], ("link.yaml", &SkipReason::Symlink));
        assert_eq!(
            read_dir(root, 1024).unwrap().snapshot.revision,
            s.snapshot.revision
        );
        assert!(matches!(
            read_dir(&root.join("top.yaml"), 1024),
            Err(DirError::NotADirectory { .. })
        ));
    }
}

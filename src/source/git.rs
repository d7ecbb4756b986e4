//! Git source: a bare cache repository per remote, polled cheaply.
//!
//! Each poll lists the remote's refs (`ls-remote`, one round trip, no objects) and fetches only
//! when the tracked ref's tip moved: depth 1 over the network (the history is never needed),
//! a full fetch for local paths and `file://` (libgit2's local transport cannot do shallow).
//! Files are read straight from the commit's tree, so there is no worktree and no checkout race.
//! The cache lives under `<data-dir>/repos/<hash-of-url>`, survives restarts (a restart with an
//! unchanged remote fetches nothing) and is deleted and re-cloned when it is found corrupted.
//!
//! git2 is blocking: every call runs in `spawn_blocking`, and one mutex per source keeps two
//! syncs from writing the same cache at once.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime};

use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, Direction, ErrorClass,
    FetchOptions, ObjectType, Oid, RemoteCallbacks, Repository,
};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::known_hosts::{HostKeyStatus, KnownHosts};
use super::{
    BACKOFF_BASE, BACKOFF_CAP, DEFAULT_MAX_FILE_SIZE, GitAuth, GitSpec, SourceSnapshot, SyncEvent,
    SyncInfo, backoff_delay, redact_url,
};

/// libgit2 calls the credentials callback again after each rejection, forever; give up after
/// this many calls in one connection.
const MAX_CREDENTIAL_CALLS: u32 = 3;

/// Credential requests seen in one connection: libgit2 gives no other way to know that the
/// previous answer was rejected.
#[derive(Default)]
struct CredAttempts {
    calls: Cell<u32>,
    secret_given: Cell<bool>,
}

impl CredAttempts {
    fn reset(&self) {
        self.calls.set(0);
        self.secret_given.set(false);
    }
}

/// Default time between polls when no webhook wakes the poller earlier.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);

/// How a [`GitSource`] behaves; `data_dir` is the only required field.
#[derive(Debug, Clone)]
pub struct GitOptions {
    /// The cache goes to `<data_dir>/repos/<hash-of-url>`.
    pub data_dir: PathBuf,
    /// Bigger blobs are skipped (and reported).
    pub max_file_size: u64,
    /// Time between polls.
    pub interval: Duration,
    /// First retry delay after a failure; doubles up to `backoff_cap`.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// `--verify-signatures`: every snapshot carries its commit's signature verdict.
    pub signatures: Option<std::sync::Arc<super::signature::SignaturePolicy>>,
}

impl GitOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> GitOptions {
        GitOptions {
            data_dir: data_dir.into(),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            interval: DEFAULT_POLL_INTERVAL,
            backoff_base: BACKOFF_BASE,
            backoff_cap: BACKOFF_CAP,
            signatures: None,
        }
    }
}

/// Why a sync failed. The message names the (redacted) URL and ref; never a secret.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("listing refs of {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: git2::Error,
    },
    #[error("{what} not found on {url} (deleted?); keeping the last good revision")]
    RefNotFound { url: String, what: String },
    #[error("fetching {refname} from {url}: {source}")]
    Fetch {
        url: String,
        refname: String,
        #[source]
        source: git2::Error,
    },
    #[error("reading {what} in the cache of {url}: {source}")]
    Read {
        url: String,
        what: String,
        #[source]
        source: git2::Error,
    },
    #[error("sub-path {path:?} does not exist in commit {commit}")]
    SubPathMissing { path: String, commit: String },
    #[error("sub-path {path:?} in commit {commit} is not a directory")]
    SubPathNotDir { path: String, commit: String },
    #[error("cache directory {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the cache repository {path}: {source}")]
    CacheInit {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("reading known_hosts: {0}")]
    KnownHosts(#[from] super::known_hosts::KnownHostsError),
    #[error("the git task stopped unexpectedly: {0}")]
    Task(String),
}

impl GitError {
    /// Errors that mean the cache itself is damaged (not the network, not the remote): worth
    /// deleting the cache and cloning again once.
    fn is_cache_damage(&self) -> bool {
        let e = match self {
            GitError::Read { source, .. } | GitError::Fetch { source, .. } => source,
            _ => return false,
        };
        matches!(
            e.class(),
            ErrorClass::Odb
                | ErrorClass::Object
                | ErrorClass::Repository
                | ErrorClass::Reference
                | ErrorClass::Zlib
                | ErrorClass::Index
                | ErrorClass::Tree
                | ErrorClass::Indexer
        )
    }
}

/// Result of one sync.
#[derive(Debug, Clone)]
pub enum SyncOutcome {
    /// The tracked commit is the one the caller already has; nothing was fetched or read.
    Unchanged { revision: String },
    /// A snapshot of the tracked commit. `fetched` is false when the cache already had it
    /// (first sync after a restart with an unchanged remote).
    Updated {
        snapshot: SourceSnapshot,
        fetched: bool,
    },
}

/// A Git remote with its cache. Cheap to clone; clones share the cache lock and counters.
#[derive(Clone)]
pub struct GitSource {
    inner: Arc<Inner>,
}

struct Inner {
    spec: GitSpec,
    opts: GitOptions,
    cache_dir: PathBuf,
    known_hosts: Option<KnownHosts>,
    /// Serialises access to the cache repository.
    lock: Mutex<()>,
    fetches: AtomicU64,
    recoveries: AtomicU64,
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("url", &redact_url(&self.inner.spec.url))
            .field("ref", &self.inner.spec.git_ref)
            .field("cache_dir", &self.inner.cache_dir)
            .finish()
    }
}

/// The cache folder for a URL: sha-256 of the URL without its userinfo, so a rotated token
/// keeps the same cache and the folder name reveals nothing.
pub fn cache_dir_for(data_dir: &Path, url: &str) -> PathBuf {
    let mut h = Sha256::new();
    h.update(strip_userinfo(url).as_bytes());
    data_dir
        .join("repos")
        .join(&hex::encode(h.finalize())[..16])
}

fn strip_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{path}"),
        None => url.to_string(),
    }
}

static LIBGIT2_INIT: Once = Once::new();

/// Network timeouts so a hung server cannot park a blocking thread forever.
fn init_libgit2() {
    LIBGIT2_INIT.call_once(|| {
        // One of the two `unsafe` of the workspace (`unsafe_code` is denied elsewhere; the
        // other sets mimalloc's purge delay in main.rs): libgit2 has no safe way to set its
        // network timeouts.
        // SAFETY: git2 asks that these C globals not be written while another thread may use
        // them (they are not synchronized). They are written here once (`Once`), before the
        // process's first Git network operation: every remote is reached through a
        // `GitSource`, and `GitSource::new` calls this first, so no fetch can read them
        // concurrently; nothing else in gitamp sets libgit2 options.
        #[allow(unsafe_code)]
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(15_000);
            let _ = git2::opts::set_server_timeout_in_milliseconds(60_000);
        }
        let v = git2::Version::get();
        info!(
            libgit2 = ?v.libgit2_version(),
            https = v.https(),
            ssh = v.ssh(),
            "Git transport support."
        );
    });
}

impl GitSource {
    pub fn new(spec: GitSpec, opts: GitOptions) -> Result<GitSource, GitError> {
        init_libgit2();
        let known_hosts = match &spec.auth {
            GitAuth::SshKey {
                known_hosts: Some(path),
                ..
            } => Some(KnownHosts::load(path)?),
            _ => None,
        };
        let cache_dir = cache_dir_for(&opts.data_dir, &spec.url);
        Ok(GitSource {
            inner: Arc::new(Inner {
                spec,
                opts,
                cache_dir,
                known_hosts,
                lock: Mutex::new(()),
                fetches: AtomicU64::new(0),
                recoveries: AtomicU64::new(0),
            }),
        })
    }

    pub fn spec(&self) -> &GitSpec {
        &self.inner.spec
    }

    pub fn options(&self) -> &GitOptions {
        &self.inner.opts
    }

    pub fn cache_dir(&self) -> &Path {
        &self.inner.cache_dir
    }

    /// How many fetches this source ran (tests and metrics: "no change, no fetch").
    pub fn fetch_count(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }

    /// How many times the cache was found damaged and re-created.
    pub fn recovery_count(&self) -> u64 {
        self.inner.recoveries.load(Ordering::Relaxed)
    }

    /// One sync, off the async runtime. `known` is the revision the caller already has.
    pub async fn sync(&self, known: Option<String>) -> Result<SyncOutcome, GitError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.sync_blocking(known.as_deref()))
            .await
            .map_err(|e| GitError::Task(e.to_string()))?
    }

    /// The blocking sync, for callers without a runtime (e.g. `gitamp validate <url>`).
    pub fn sync_blocking(&self, known: Option<&str>) -> Result<SyncOutcome, GitError> {
        let _guard = self.inner.lock.lock().unwrap_or_else(|p| p.into_inner());
        match self.inner.sync_once(known) {
            Err(err) if err.is_cache_damage() => {
                warn!(
                    cache = %self.inner.cache_dir.display(),
                    error = %err,
                    "Git cache looks damaged; deleting it and cloning again."
                );
                self.inner.wipe_cache()?;
                self.inner.recoveries.fetch_add(1, Ordering::Relaxed);
                self.inner.sync_once(known)
            }
            other => other,
        }
    }

    /// The snapshot of the tracked ref as last fetched into the cache, without any network
    /// access: what a restart can serve while the remote is unreachable. `None` when the
    /// cache has never fetched that ref.
    pub fn read_cached(&self) -> Result<Option<SourceSnapshot>, GitError> {
        let _guard = self.inner.lock.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(repo) = Repository::open_bare(&self.inner.cache_dir) else {
            return Ok(None);
        };
        let local = match &self.inner.spec.git_ref {
            Some(r) if r.starts_with("refs/") => vec![r.clone()],
            Some(r) => vec![format!("refs/heads/{r}"), format!("refs/tags/{r}")],
            None => vec![LOCAL_HEAD.to_string()],
        };
        let mut oid = None;
        for name in &local {
            if let Ok(id) = repo.refname_to_id(name) {
                oid = Some(id);
                break;
            }
        }
        let Some(oid) = oid else { return Ok(None) };
        self.inner.read_snapshot(&repo, oid).map(Some)
    }

    /// Fetch one commit by its id (a depth-1 fetch over the network brings the tip alone, so
    /// an older revision, such as the last accepted one after a restore, must be asked for by
    /// name), then read it. `Ok(None)` when the remote does not have it (any more).
    pub fn fetch_commit(&self, sha: &str) -> Result<Option<SourceSnapshot>, GitError> {
        if let Some(found) = self.read_commit(sha)? {
            return Ok(Some(found));
        }
        if Oid::from_str(sha).is_err() {
            return Ok(None);
        }
        {
            let _guard = self.inner.lock.lock().unwrap_or_else(|p| p.into_inner());
            let inner = &self.inner;
            let repo = inner.open_cache()?;
            let url = inner.url_for_logs();
            let attempts = CredAttempts::default();
            let mut remote =
                repo.remote_anonymous(&inner.spec.url)
                    .map_err(|source| GitError::Connect {
                        url: url.clone(),
                        source,
                    })?;
            let mut fo = inner.fetch_options(&attempts);
            // A server that refuses a want by id answers with an error: treat it as "not there".
            if let Err(err) = remote.fetch(&[sha], Some(&mut fo), None) {
                debug!(url = %url, revision = %sha, error = %err, "Fetching one commit by id failed.");
                return Ok(None);
            }
            inner.fetches.fetch_add(1, Ordering::Relaxed);
        }
        self.read_commit(sha)
    }

    /// The snapshot of one commit (e.g. the last accepted revision recorded in the store) if
    /// the cache has it.
    pub fn read_commit(&self, sha: &str) -> Result<Option<SourceSnapshot>, GitError> {
        let _guard = self.inner.lock.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(repo) = Repository::open_bare(&self.inner.cache_dir) else {
            return Ok(None);
        };
        let Ok(oid) = Oid::from_str(sha) else {
            return Ok(None);
        };
        if repo.find_commit(oid).is_err() {
            return Ok(None);
        }
        self.inner.read_snapshot(&repo, oid).map(Some)
    }
}

/// Where the remote's default branch is kept when it was tracked through `HEAD`.
const LOCAL_HEAD: &str = "refs/gitamp/HEAD";

impl Inner {
    fn url_for_logs(&self) -> String {
        redact_url(&self.spec.url)
    }

    fn wipe_cache(&self) -> Result<(), GitError> {
        // A stray file (or symlink) where the folder should be is removed as such.
        let is_dir = std::fs::symlink_metadata(&self.cache_dir).is_ok_and(|m| m.is_dir());
        let removed = if is_dir {
            std::fs::remove_dir_all(&self.cache_dir)
        } else {
            std::fs::remove_file(&self.cache_dir)
        };
        match removed {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(GitError::Cache {
                path: self.cache_dir.clone(),
                source,
            }),
        }
    }

    /// Open the cache, or create it; a folder that is not a usable bare repository is
    /// deleted and created again (a crash during init, a disk error, someone's `rm`).
    fn open_cache(&self) -> Result<Repository, GitError> {
        let path = &self.cache_dir;
        if path.exists() {
            match Repository::open_bare(path) {
                Ok(repo) if repo.is_bare() => return Ok(repo),
                Ok(_) => {
                    warn!(cache = %path.display(), "Git cache is not a bare repository; re-creating it.")
                }
                Err(e) => {
                    warn!(cache = %path.display(), error = %e, "Git cache cannot be opened; re-creating it.")
                }
            }
            self.wipe_cache()?;
            self.recoveries.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| GitError::Cache {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let repo = Repository::init_bare(path).map_err(|source| GitError::CacheInit {
            path: path.clone(),
            source,
        })?;
        // Human breadcrumb: which remote this hashed folder mirrors.
        let _ = std::fs::write(path.join("description"), self.url_for_logs());
        debug!(cache = %path.display(), url = %self.url_for_logs(), "Created Git cache.");
        Ok(repo)
    }

    fn callbacks<'a>(&'a self, attempts: &'a CredAttempts) -> RemoteCallbacks<'a> {
        let mut cb = RemoteCallbacks::new();
        let auth = &self.spec.auth;
        let url = &self.spec.url;
        cb.credentials(move |_url, username_from_url, allowed| {
            let n = attempts.calls.get() + 1;
            attempts.calls.set(n);
            if n > MAX_CREDENTIAL_CALLS {
                return Err(git2::Error::from_str(
                    "authentication failed: the remote rejected the configured credentials",
                ));
            }
            match auth {
                GitAuth::Token { username, token }
                    if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) =>
                {
                    // Being asked again means the token was refused: stop here.
                    if attempts.secret_given.replace(true) {
                        return Err(git2::Error::from_str(
                            "authentication failed: the token was rejected",
                        ));
                    }
                    Cred::userpass_plaintext(username, token)
                }
                GitAuth::SshKey { .. } if allowed.contains(CredentialType::USERNAME) => {
                    Cred::username(username_from_url.unwrap_or("git"))
                }
                GitAuth::SshKey {
                    key_file,
                    passphrase,
                    ..
                } if allowed.contains(CredentialType::SSH_KEY) => {
                    if attempts.secret_given.replace(true) {
                        return Err(git2::Error::from_str(
                            "authentication failed: the SSH key was rejected",
                        ));
                    }
                    Cred::ssh_key(
                        username_from_url.unwrap_or("git"),
                        None,
                        key_file,
                        passphrase.as_deref(),
                    )
                }
                _ => Err(git2::Error::from_str(
                    "the remote asks for credentials this source does not have \
                     (configure a token for https or an SSH key for ssh)",
                )),
            }
        });
        let known_hosts = self.known_hosts.as_ref();
        let port = url_port(url);
        cb.certificate_check(move |cert, host| {
            let (Some(kh), Some(hostkey)) = (known_hosts, cert.as_hostkey()) else {
                // TLS, or SSH without our own known_hosts: libgit2's own checks decide.
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let Some(key) = hostkey.hostkey() else {
                return Err(git2::Error::from_str(
                    "the SSH server's raw host key is unavailable; cannot check known_hosts",
                ));
            };
            match kh.check(host, port, key) {
                HostKeyStatus::Match => Ok(CertificateCheckStatus::CertificateOk),
                HostKeyStatus::Unknown => Err(git2::Error::from_str(&format!(
                    "SSH host {host} is not in the configured known_hosts file"
                ))),
                HostKeyStatus::Mismatch => Err(git2::Error::from_str(&format!(
                    "SSH host key of {host} does not match the configured known_hosts file"
                ))),
                HostKeyStatus::Revoked => Err(git2::Error::from_str(&format!(
                    "SSH host key of {host} is marked @revoked"
                ))),
            }
        });
        cb
    }

    /// Resolve the tracked ref against an ls-remote listing: `(remote ref name, oid)`.
    fn resolve_ref(
        &self,
        heads: &[(String, Oid, Option<String>)],
    ) -> Result<(String, Oid), GitError> {
        let find = |name: &str| {
            heads
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(n, o, _)| (n.clone(), *o))
        };
        let found = match &self.spec.git_ref {
            Some(r) if r.starts_with("refs/") || r == "HEAD" => find(r),
            Some(r) => find(&format!("refs/heads/{r}")).or_else(|| find(&format!("refs/tags/{r}"))),
            None => match heads.iter().find(|(n, _, _)| n == "HEAD") {
                // Prefer the branch HEAD points to, so the local ref and webhooks match it.
                Some((_, oid, Some(target))) => find(target).or(Some(("HEAD".to_string(), *oid))),
                Some((_, oid, None)) => Some(("HEAD".to_string(), *oid)),
                None => None,
            },
        };
        found.ok_or_else(|| GitError::RefNotFound {
            url: self.url_for_logs(),
            what: match &self.spec.git_ref {
                Some(r) => format!("ref {r:?}"),
                None => "the default branch (HEAD)".to_string(),
            },
        })
    }

    /// How every fetch goes: our credentials, no tags, and only the wanted commit over the
    /// network (depth 1: the history is never read; a local remote gives it for free).
    fn fetch_options<'a>(&'a self, attempts: &'a CredAttempts) -> FetchOptions<'a> {
        let mut fo = FetchOptions::new();
        fo.remote_callbacks(self.callbacks(attempts));
        fo.download_tags(AutotagOption::None);
        if self.spec.is_network() {
            fo.depth(1);
        }
        fo
    }

    fn sync_once(&self, known: Option<&str>) -> Result<SyncOutcome, GitError> {
        let started = Instant::now();
        let repo = self.open_cache()?;
        let url = self.url_for_logs();
        let attempts = CredAttempts::default();

        let mut remote =
            repo.remote_anonymous(&self.spec.url)
                .map_err(|source| GitError::Connect {
                    url: url.clone(),
                    source,
                })?;
        let heads: Vec<(String, Oid, Option<String>)> = {
            let conn = remote
                .connect_auth(Direction::Fetch, Some(self.callbacks(&attempts)), None)
                .map_err(|source| GitError::Connect {
                    url: url.clone(),
                    source,
                })?;
            conn.list()
                .map_err(|source| GitError::Connect {
                    url: url.clone(),
                    source,
                })?
                .iter()
                .map(|h| {
                    (
                        h.name().to_string(),
                        h.oid(),
                        h.symref_target().map(str::to_string),
                    )
                })
                .collect()
        };
        let (remote_ref, remote_oid) = self.resolve_ref(&heads)?;
        let local_ref = if remote_ref.starts_with("refs/") {
            remote_ref.clone()
        } else {
            LOCAL_HEAD.to_string()
        };
        let local_oid = repo.refname_to_id(&local_ref).ok();
        let mut fetched = false;
        if local_oid != Some(remote_oid) {
            attempts.reset();
            let mut fo = self.fetch_options(&attempts);
            let refspec = format!("+{remote_ref}:{local_ref}");
            remote
                .fetch(&[refspec.as_str()], Some(&mut fo), None)
                .map_err(|source| GitError::Fetch {
                    url: url.clone(),
                    refname: remote_ref.clone(),
                    source,
                })?;
            self.fetches.fetch_add(1, Ordering::Relaxed);
            fetched = true;
        }
        let tip = repo
            .refname_to_id(&local_ref)
            .map_err(|source| GitError::Read {
                url: url.clone(),
                what: local_ref.clone(),
                source,
            })?;
        let commit = repo
            .find_object(tip, None)
            .and_then(|o| o.peel_to_commit())
            .map_err(|source| GitError::Read {
                url: url.clone(),
                what: format!("the commit of {local_ref}"),
                source,
            })?;
        let revision = commit.id().to_string();
        if self.spec.git_ref.is_none() && local_ref != LOCAL_HEAD {
            // Remember which branch the default was, so `read_cached` finds it offline.
            if let Err(e) = repo.reference_symbolic(LOCAL_HEAD, &local_ref, true, "gitamp") {
                debug!(error = %e, "Could not record the default branch in the cache.");
            }
        }
        if known == Some(revision.as_str()) {
            debug!(url = %url, git_ref = %remote_ref, revision = %revision, fetched, "Git source unchanged.");
            return Ok(SyncOutcome::Unchanged { revision });
        }
        let snapshot = self.read_snapshot(&repo, commit.id())?;
        info!(
            url = %url,
            git_ref = %remote_ref,
            revision = %revision,
            fetched,
            files = snapshot.snapshot.files.len(),
            skipped = snapshot.skipped.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Git source has a new revision."
        );
        Ok(SyncOutcome::Updated { snapshot, fetched })
    }

    /// Read the files of a commit (under the sub-path) straight from its tree.
    fn read_snapshot(&self, repo: &Repository, oid: Oid) -> Result<SourceSnapshot, GitError> {
        let url = self.url_for_logs();
        let read_err = |what: String| {
            let url = url.clone();
            move |source| GitError::Read { url, what, source }
        };
        let commit = repo
            .find_object(oid, None)
            .and_then(|o| o.peel_to_commit())
            .map_err(read_err(format!("commit {oid}")))?;
        let revision = commit.id().to_string();
        let root = commit
            .tree()
            .map_err(read_err(format!("the tree of {revision}")))?;
        let tree = match &self.spec.sub_path {
            None => root,
            Some(sub) => {
                let entry = root.get_path(Path::new(sub)).map_err(|e| {
                    if e.code() == git2::ErrorCode::NotFound {
                        GitError::SubPathMissing {
                            path: sub.clone(),
                            commit: revision.clone(),
                        }
                    } else {
                        read_err(format!("{sub} in {revision}"))(e)
                    }
                })?;
                if entry.kind() != Some(ObjectType::Tree) {
                    return Err(GitError::SubPathNotDir {
                        path: sub.clone(),
                        commit: revision,
                    });
                }
                repo.find_tree(entry.id())
                    .map_err(read_err(format!("{sub} in {revision}")))?
            }
        };

        let mut read = super::tree::tree_snapshot(repo, &tree, &revision, self.opts.max_file_size)
            .map_err(|(what, e)| read_err(what)(e))?;
        let author = commit.author();
        let authored_at = u64::try_from(author.when().seconds())
            .ok()
            .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        read.commit = Some(super::CommitInfo::new(
            &String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()),
            &String::from_utf8_lossy(author.name_bytes()),
            authored_at,
        ));
        for s in &read.skipped {
            warn!(revision = %revision, path = %s.path, reason = %s.reason, "File left out of the snapshot.");
        }
        if let Some(policy) = &self.opts.signatures {
            let check = policy.check(&self.cache_dir, &revision);
            match &check {
                super::SignatureCheck::Trusted { signer, key } => {
                    debug!(revision = %revision, signer = %signer, key = %key, "Commit signed by a trusted key.")
                }
                super::SignatureCheck::Refused { reason } => {
                    warn!(revision = %revision, "{reason}")
                }
            }
            read.signature = Some(check);
        }
        Ok(read)
    }
}

/// The explicit port of a URL, for `[host]:port` lines in known_hosts.
fn url_port(url: &str) -> Option<u16> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let host = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    if host.ends_with(']') {
        return None;
    }
    host.rsplit_once(':')?.1.parse().ok()
}

/// Polls a [`GitSource`] and sends [`SyncEvent`]s: a snapshot when the revision changed, an
/// error (with growing backoff) when a sync failed, and an `Unchanged` heartbeat otherwise so
/// the status API can show the last successful fetch.
pub struct GitPoller {
    source: GitSource,
    wake: Arc<Notify>,
    /// The last accepted revision (from the store) when the cache did not have it at start:
    /// a data directory restored from a backup, or a lost cache. Looked for again after the
    /// first fetch, which brings the tip's history, so that a rejected tip does not leave the
    /// server with nothing to serve.
    restore: Option<String>,
}

impl GitPoller {
    pub fn new(source: GitSource) -> GitPoller {
        GitPoller {
            source,
            wake: Arc::new(Notify::new()),
            restore: None,
        }
    }

    /// Offer `revision` (the last accepted one, missing from the cache) before the first
    /// fetched tip, once the fetch has brought it.
    pub fn restoring(mut self, revision: Option<String>) -> GitPoller {
        self.restore = revision;
        self
    }

    /// The restored revision's snapshot if the fetch just made brought it and it is not the
    /// tip itself (which is offered anyway).
    async fn restored(&mut self, tip: &str, url: &str) -> Option<SourceSnapshot> {
        let sha = self.restore.take().filter(|sha| sha != tip)?;
        let source = self.source.clone();
        let wanted = sha.clone();
        match tokio::task::spawn_blocking(move || source.fetch_commit(&wanted)).await {
            Ok(Ok(Some(snapshot))) => {
                info!(url = %url, revision = %sha, "Restored the last accepted revision from the remote (it was not in the Git cache).");
                Some(snapshot)
            }
            Ok(Ok(None)) => {
                warn!(url = %url, revision = %sha, "The last accepted revision is not on the remote any more; serving the tip if it is valid.");
                None
            }
            Ok(Err(err)) => {
                warn!(url = %url, revision = %sha, error = %err, "Reading the last accepted revision failed.");
                None
            }
            Err(err) => {
                warn!(error = %err, "Reading the last accepted revision failed.");
                None
            }
        }
    }

    /// Poll early when `wake` is notified (instead of a notifier of its own): a replica starts a
    /// poller each time it becomes leader, and webhooks must reach whichever runs.
    pub fn with_wake(mut self, wake: Arc<Notify>) -> GitPoller {
        self.wake = wake;
        self
    }

    /// Call `notify_one()` on this to poll now (a webhook said the remote changed).
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub fn source(&self) -> &GitSource {
        &self.source
    }

    /// Poll until `cancel` fires or the receiver is dropped.
    pub async fn run(mut self, tx: mpsc::Sender<SyncEvent>, cancel: CancellationToken) {
        let opts = self.source.options().clone();
        let url = redact_url(&self.source.spec().url);
        let mut known: Option<String> = None;
        let mut failures: u32 = 0;
        let mut info = SyncInfo::default();
        loop {
            let started = Instant::now();
            let result = tokio::select! {
                r = self.source.sync(known.clone()) => r,
                _ = cancel.cancelled() => break,
            };
            info.last_fetch = Some(SystemTime::now());
            info.last_duration = started.elapsed();
            let (event, delay) = match result {
                Ok(SyncOutcome::Unchanged { revision }) => {
                    failures = 0;
                    info.consecutive_failures = 0;
                    info.next_retry = Some(SystemTime::now() + opts.interval);
                    (SyncEvent::Unchanged(revision, info.clone()), opts.interval)
                }
                Ok(SyncOutcome::Updated { snapshot, .. }) => {
                    failures = 0;
                    known = Some(snapshot.snapshot.revision.clone());
                    info.consecutive_failures = 0;
                    info.next_retry = Some(SystemTime::now() + opts.interval);
                    if let Some(restored) = self.restored(&snapshot.snapshot.revision, &url).await {
                        info.skipped = restored.skipped;
                        info.signature = restored.signature;
                        info.commit = restored.commit;
                        let event = SyncEvent::Snapshot(restored.snapshot, info.clone());
                        tokio::select! {
                            r = tx.send(event) => if r.is_err() { break },
                            _ = cancel.cancelled() => break,
                        }
                    }
                    info.skipped = snapshot.skipped;
                    info.signature = snapshot.signature;
                    info.commit = snapshot.commit;
                    (
                        SyncEvent::Snapshot(snapshot.snapshot, info.clone()),
                        opts.interval,
                    )
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff_delay(
                        failures,
                        opts.backoff_base,
                        opts.backoff_cap,
                        rand::random::<f64>(),
                    );
                    info.consecutive_failures = failures;
                    info.next_retry = Some(SystemTime::now() + delay);
                    let message = error_chain(&err);
                    warn!(url = %url, failures, retry_in_ms = delay.as_millis() as u64, error = %message, "Git sync failed.");
                    (SyncEvent::Error(message, info.clone()), delay)
                }
            };
            tokio::select! {
                r = tx.send(event) => if r.is_err() { break },
                _ = cancel.cancelled() => break,
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.wake.notified() => debug!(url = %url, "Git poller woken early."),
                _ = cancel.cancelled() => break,
            }
        }
        debug!(url = %url, "Git poller stopped.");
    }
}

/// `error: cause: cause` in one line (for events and the status API), skipping causes the
/// message already quotes.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_ignores_credentials() {
        let d = Path::new("/data");
        assert_eq!(
            cache_dir_for(d, "https://user:tok1@example.com/a.git"),
            cache_dir_for(d, "https://example.com/a.git")
        );
        assert_ne!(
            cache_dir_for(d, "https://example.com/a.git"),
            cache_dir_for(d, "https://example.com/b.git")
        );
    }

    #[test]
    fn ports() {
        assert_eq!(url_port("ssh://git@host:2222/x.git"), Some(2222));
        assert_eq!(url_port("ssh://git@host/x.git"), None);
        assert_eq!(url_port("git@host:x.git"), None);
    }
}

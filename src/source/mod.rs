//! Where revisions of the config repository come from: a Git remote (polled, woken by webhooks)
//! or a plain local folder (watched). Both end in a [`gitamp_core::Snapshot`] sent as a
//! [`SyncEvent`] over a bounded channel; the reconciler never sees Git or the file system.
//!
//! * [`git`]: a bare cache repository per remote, `ls-remote` each poll, fetch only when the tip
//!   moved, blobs read straight from the commit's tree (no worktree, so no checkout races).
//! * [`dir`]: a folder read whole into a snapshot, re-read after debounced file-system events.
//! * [`webhook`]: pure signature checks and payload parsing; the HTTP route lives in the API.

pub mod dir;
pub mod git;
pub mod known_hosts;
pub mod revision;
pub mod signature;
pub mod skipped;
pub mod tree;
pub mod webhook;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use gitamp_core::Snapshot;

pub use dir::{DirOptions, DirWatcher};
pub use git::{GitOptions, GitPoller, GitSource};

/// Files larger than this are left out of a snapshot by default: a config repository holds
/// small YAML files, and a stray binary must not be read into memory on every poll.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1024 * 1024;

/// A file present in the repository but left out of the snapshot, so the caller can show it
/// (a diagnostic) instead of silently ignoring it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SkippedFile {
    /// Path relative to the snapshot root, `/`-separated.
    pub path: String,
    pub reason: SkipReason,
}

/// Why a file was left out of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// Symlinks are never followed: they could point outside the repository.
    Symlink,
    /// Bigger than the configured limit.
    TooLarge { size: u64, limit: u64 },
    /// A Git submodule (a commit pointer, not content).
    Submodule,
    /// A name that is not valid UTF-8 cannot be a snapshot path.
    NonUtf8Name,
    /// Not a regular file (socket, device, fifo).
    NotRegular,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Symlink => f.write_str("symbolic links are not followed"),
            SkipReason::TooLarge { size, limit } => {
                write!(f, "file is {size} bytes, over the {limit}-byte limit")
            }
            SkipReason::Submodule => f.write_str("submodules are not read"),
            SkipReason::NonUtf8Name => f.write_str("file name is not valid UTF-8"),
            SkipReason::NotRegular => f.write_str("not a regular file"),
        }
    }
}

/// The first 12 characters of a commit or hash, for people. A folder's content revision
/// (`content-<16 hex>`) is kept whole: its prefix alone says nothing.
pub fn short_revision(s: &str) -> &str {
    if s.starts_with("content-") {
        return s;
    }
    s.get(..12).unwrap_or(s)
}

/// A snapshot plus what was left out of it.
#[derive(Debug, Clone)]
pub struct SourceSnapshot {
    pub snapshot: Snapshot,
    pub skipped: Vec<SkippedFile>,
    /// The commit's signature, checked when `--verify-signatures` is on (Git sources only).
    pub signature: Option<SignatureCheck>,
    /// Who wrote the commit and what it says (Git sources only).
    pub commit: Option<CommitInfo>,
}

/// A commit as people know it: its subject line and author (for the status API and the page).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommitInfo {
    /// The message's first line, at most [`CommitInfo::MAX_SUBJECT`] characters.
    pub subject: String,
    /// The author's name.
    pub author: String,
    /// When it was authored.
    pub authored_at: Option<SystemTime>,
}

impl CommitInfo {
    /// Longest subject kept: a subject is a line, not a document.
    pub const MAX_SUBJECT: usize = 200;

    /// From Git's own fields, the subject cut to [`CommitInfo::MAX_SUBJECT`] characters.
    pub fn new(subject: &str, author: &str, authored_at: Option<SystemTime>) -> CommitInfo {
        CommitInfo {
            subject: subject.chars().take(Self::MAX_SUBJECT).collect(),
            author: author.chars().take(Self::MAX_SUBJECT).collect(),
            authored_at,
        }
    }
}

/// What the signature check said of a commit (`--verify-signatures`, [`signature`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum SignatureCheck {
    /// Signed by a trusted key: `signer` is the principal or user id (may be empty), `key`
    /// the key's fingerprint.
    Trusted { signer: String, key: String },
    /// Not served, and why (naming the commit and the key).
    Refused { reason: String },
}

/// Health of a source, sent with every event so the status API can show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncInfo {
    /// When the last attempt (successful or not) finished.
    pub last_fetch: Option<SystemTime>,
    /// How long the last attempt took.
    pub last_duration: Duration,
    /// Failures in a row; 0 after a success.
    pub consecutive_failures: u32,
    /// When the next attempt is planned (a poll or a retry after backoff).
    pub next_retry: Option<SystemTime>,
    /// Files left out of the last snapshot (kept on later errors and unchanged polls).
    pub skipped: Vec<SkippedFile>,
    /// The last snapshot's signature verdict, with `--verify-signatures`.
    pub signature: Option<SignatureCheck>,
    /// The last snapshot's commit (Git sources).
    pub commit: Option<CommitInfo>,
}

/// What a source sends to the reconciler.
#[derive(Debug, Clone)]
pub enum SyncEvent {
    /// A new revision (the first one after start, then only when it changed).
    Snapshot(Snapshot, SyncInfo),
    /// The source failed; the reconciler keeps serving the last good revision.
    Error(String, SyncInfo),
    /// A successful poll that found the revision (the first field) unchanged: only the health
    /// changed (last fetch time; a recovery after errors). Cheap for the reconciler to ignore.
    Unchanged(String, SyncInfo),
}

impl SyncEvent {
    pub fn info(&self) -> &SyncInfo {
        match self {
            SyncEvent::Snapshot(_, i) | SyncEvent::Error(_, i) | SyncEvent::Unchanged(_, i) => i,
        }
    }
}

/// Where to get revisions from, parsed from `--repo URL|PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Git(GitSpec),
    Dir(DirSpec),
}

/// A Git repository to poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSpec {
    /// The remote URL (https, ssh, scp-like `git@host:path`, file://) or a local repository
    /// path. May carry credentials in its userinfo: log it only through [`redact_url`].
    pub url: String,
    /// The tracked ref (`main`, `refs/heads/main`, `v1.2`, `refs/tags/v1.2`); `None` follows
    /// the remote's default branch (its `HEAD`).
    pub git_ref: Option<String>,
    /// Only files under this sub-path are read, and paths are relative to it.
    pub sub_path: Option<String>,
    pub auth: GitAuth,
}

impl GitSpec {
    /// Whether the URL goes over the network (libgit2 can fetch shallow only then: the local
    /// transport has no depth support).
    pub fn is_network(&self) -> bool {
        is_network_url(&self.url)
    }
}

/// Credentials for a Git remote. Secrets are read at parse time and never logged.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum GitAuth {
    #[default]
    None,
    /// HTTPS basic auth with a token as the password (GitHub, GitLab, Gitea all accept it).
    Token { username: String, token: String },
    /// SSH with a private key file and, optionally, a known_hosts file to check the host key
    /// against (libgit2 otherwise only knows `~/.ssh/known_hosts`, absent in containers).
    SshKey {
        key_file: PathBuf,
        passphrase: Option<String>,
        known_hosts: Option<PathBuf>,
    },
}

impl fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitAuth::None => f.write_str("None"),
            GitAuth::Token { username, .. } => f
                .debug_struct("Token")
                .field("username", username)
                .field("token", &"<redacted>")
                .finish(),
            GitAuth::SshKey {
                key_file,
                known_hosts,
                passphrase,
            } => f
                .debug_struct("SshKey")
                .field("key_file", key_file)
                .field("passphrase", &passphrase.as_ref().map(|_| "<redacted>"))
                .field("known_hosts", known_hosts)
                .finish(),
        }
    }
}

/// A plain folder (not a Git repository) to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSpec {
    pub root: PathBuf,
    pub sub_path: Option<String>,
}

impl DirSpec {
    /// The folder actually read: the root joined with the sub-path.
    pub fn effective_root(&self) -> PathBuf {
        match &self.sub_path {
            Some(sub) => self.root.join(sub),
            None => self.root.clone(),
        }
    }
}

/// The raw options a CLI gives, turned into a [`SourceSpec`] by [`SourceSpec::parse`].
#[derive(Debug, Clone, Default)]
pub struct SourceArgs {
    /// `--repo URL|PATH`.
    pub repo: String,
    /// `--ref`.
    pub git_ref: Option<String>,
    /// `--path` (sub-path inside the repository).
    pub sub_path: Option<String>,
    /// A file holding an HTTPS token (first line, trimmed).
    pub token_file: Option<PathBuf>,
    /// The token itself (e.g. from an environment variable, via clap's `env`).
    pub token: Option<String>,
    /// Username sent with the token; defaults to the URL's user or `x-access-token`.
    pub token_username: Option<String>,
    pub ssh_key: Option<PathBuf>,
    pub ssh_passphrase: Option<String>,
    pub known_hosts: Option<PathBuf>,
}

/// Why `--repo` and friends could not be turned into a source.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("--repo is empty")]
    Empty,
    #[error("{path}: no such file or directory")]
    NotFound { path: PathBuf },
    #[error("{path}: not a directory")]
    NotADirectory { path: PathBuf },
    #[error("reading the token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token file {path} is empty")]
    EmptyToken { path: PathBuf },
    #[error("{path}: {what} not found")]
    MissingFile { path: PathBuf, what: &'static str },
    #[error("invalid --path {path:?}: {reason}")]
    BadSubPath { path: String, reason: &'static str },
    #[error("--ref, --token and --ssh-key apply to Git sources only, and {path} is a plain folder")]
    GitOptionOnFolder { path: PathBuf },
}

impl SourceSpec {
    /// Decide what `--repo` names: a URL is a Git remote; an existing path is a Git source when
    /// it is a Git repository (read through the cache like any remote, so uncommitted edits are
    /// not served) and a watched folder otherwise.
    pub fn parse(args: &SourceArgs) -> Result<SourceSpec, SpecError> {
        let repo = args.repo.trim();
        if repo.is_empty() {
            return Err(SpecError::Empty);
        }
        let sub_path = args
            .sub_path
            .as_deref()
            .map(normalize_sub_path)
            .transpose()?
            .flatten();
        if looks_like_url(repo) {
            let auth = parse_auth(args, repo)?;
            return Ok(SourceSpec::Git(GitSpec {
                url: repo.to_string(),
                git_ref: args.git_ref.clone().filter(|r| !r.trim().is_empty()),
                sub_path,
                auth,
            }));
        }
        let path = Path::new(repo);
        let meta = std::fs::metadata(path).map_err(|_| SpecError::NotFound {
            path: path.to_path_buf(),
        })?;
        if !meta.is_dir() {
            return Err(SpecError::NotADirectory {
                path: path.to_path_buf(),
            });
        }
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if is_git_repository(&abs) {
            let auth = parse_auth(args, repo)?;
            return Ok(SourceSpec::Git(GitSpec {
                url: abs.to_string_lossy().into_owned(),
                git_ref: args.git_ref.clone().filter(|r| !r.trim().is_empty()),
                sub_path,
                auth,
            }));
        }
        if args.git_ref.is_some()
            || args.token.is_some()
            || args.token_file.is_some()
            || args.ssh_key.is_some()
        {
            return Err(SpecError::GitOptionOnFolder { path: abs });
        }
        Ok(SourceSpec::Dir(DirSpec {
            root: abs,
            sub_path,
        }))
    }
}

fn parse_auth(args: &SourceArgs, url: &str) -> Result<GitAuth, SpecError> {
    if let Some(key_file) = &args.ssh_key {
        if !key_file.is_file() {
            return Err(SpecError::MissingFile {
                path: key_file.clone(),
                what: "SSH key",
            });
        }
        if let Some(kh) = &args.known_hosts
            && !kh.is_file()
        {
            return Err(SpecError::MissingFile {
                path: kh.clone(),
                what: "known_hosts file",
            });
        }
        return Ok(GitAuth::SshKey {
            key_file: key_file.clone(),
            passphrase: args.ssh_passphrase.clone(),
            known_hosts: args.known_hosts.clone(),
        });
    }
    let token = match (&args.token_file, &args.token) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(|source| SpecError::TokenFile {
                path: path.clone(),
                source,
            })?;
            let token = text.lines().next().unwrap_or("").trim().to_string();
            if token.is_empty() {
                return Err(SpecError::EmptyToken { path: path.clone() });
            }
            Some(token)
        }
        (None, Some(t)) if !t.trim().is_empty() => Some(t.trim().to_string()),
        _ => None,
    };
    Ok(match token {
        Some(token) => GitAuth::Token {
            username: args
                .token_username
                .clone()
                .or_else(|| url_username(url))
                .unwrap_or_else(|| "x-access-token".to_string()),
            token,
        },
        None => GitAuth::None,
    })
}

/// A sub-path must stay inside the repository: relative, no `..`, `/`-separated.
fn normalize_sub_path(raw: &str) -> Result<Option<String>, SpecError> {
    let trimmed = raw.trim().trim_matches('/');
    let mut parts = Vec::new();
    for part in trimmed.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(SpecError::BadSubPath {
                    path: raw.to_string(),
                    reason: "`..` is not allowed",
                });
            }
            p if p.contains('\\') => {
                return Err(SpecError::BadSubPath {
                    path: raw.to_string(),
                    reason: "use `/` as the separator",
                });
            }
            p => parts.push(p),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

fn is_git_repository(path: &Path) -> bool {
    git2::Repository::open_ext(
        path,
        git2::RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&std::ffi::OsStr>(),
    )
    .is_ok()
}

/// `scheme://...` or scp-like `user@host:path` (but not a Windows drive like `C:\x`).
fn looks_like_url(s: &str) -> bool {
    if s.contains("://") {
        return true;
    }
    match (s.find('@'), s.find(':')) {
        (Some(at), Some(colon)) => at < colon && !s[..colon].contains('/'),
        _ => false,
    }
}

/// Network transports (everything but local paths and `file://`).
pub(crate) fn is_network_url(url: &str) -> bool {
    if let Some((scheme, _)) = url.split_once("://") {
        return !scheme.eq_ignore_ascii_case("file");
    }
    looks_like_url(url)
}

fn url_username(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let user = userinfo.split(':').next()?;
    (!user.is_empty()).then(|| user.to_string())
}

/// The URL with any userinfo password/token removed, safe for logs and the status API.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://{user}@{host}{path}")
            }
        }
        None => url.to_string(),
    }
}

/// Settings shared by both kinds of source (CLI flags of `gitamp serve`).
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Git caches go under `<data_dir>/repos/`.
    pub data_dir: PathBuf,
    pub max_file_size: u64,
    /// Git poll interval.
    pub interval: Duration,
    /// Folder: quiet time before re-reading.
    pub debounce: Duration,
    /// Folder: poll instead of native events (NFS, bind mounts).
    pub poll_interval: Option<Duration>,
}

impl SourceSettings {
    pub fn new(data_dir: impl Into<PathBuf>) -> SourceSettings {
        SourceSettings {
            data_dir: data_dir.into(),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            interval: git::DEFAULT_POLL_INTERVAL,
            debounce: dir::DEFAULT_DEBOUNCE,
            poll_interval: None,
        }
    }
}

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Git(#[from] git::GitError),
    #[error(transparent)]
    Dir(#[from] dir::DirError),
}

/// A started source: its task, and for Git the poller's wake handle (for webhooks) and the
/// source itself (for `read_cached` / `read_commit` at start-up).
#[derive(Debug)]
pub struct RunningSource {
    pub task: tokio::task::JoinHandle<()>,
    pub wake: Option<std::sync::Arc<tokio::sync::Notify>>,
    pub git: Option<GitSource>,
}

/// Start the poller or watcher that `spec` calls for, sending events to `tx` until `cancel`.
pub fn start(
    spec: SourceSpec,
    settings: &SourceSettings,
    tx: tokio::sync::mpsc::Sender<SyncEvent>,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<RunningSource, SourceError> {
    match spec {
        SourceSpec::Git(g) => {
            let mut opts = GitOptions::new(&settings.data_dir);
            opts.max_file_size = settings.max_file_size;
            opts.interval = settings.interval;
            let source = GitSource::new(g, opts)?;
            let poller = GitPoller::new(source.clone());
            let wake = poller.wake_handle();
            let task = tokio::spawn(poller.run(tx, cancel));
            Ok(RunningSource {
                task,
                wake: Some(wake),
                git: Some(source),
            })
        }
        SourceSpec::Dir(d) => {
            let opts = DirOptions {
                max_file_size: settings.max_file_size,
                debounce: settings.debounce,
                poll_interval: settings.poll_interval,
            };
            let task = DirWatcher::new(d, opts).start(tx, cancel)?;
            Ok(RunningSource {
                task,
                wake: None,
                git: None,
            })
        }
    }
}

/// Exponential backoff with jitter, as a pure function so it can be tested without clocks.
///
/// `failures` is the number of consecutive failures (1 for the first). The delay doubles from
/// `base` and is capped at `cap`; `jitter` in `[0, 1)` picks a point in the upper half
/// (`d/2 + d/2 * jitter`, "equal jitter"), which spreads retries of many replicas while keeping
/// the delay growing.
pub fn backoff_delay(failures: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let exp = failures.saturating_sub(1).min(30);
    let full = base.checked_mul(1u32 << exp).unwrap_or(cap).min(cap);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let half = full / 2;
    half + half.mul_f64(jitter)
}

/// Defaults of the retry policy: first retry after ~2 s, never more than 5 min apart.
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let d: Vec<_> = (1..=12)
            .map(|n| backoff_delay(n, BACKOFF_BASE, BACKOFF_CAP, 0.0))
            .collect();
        assert!(d.windows(2).all(|w| w[0] <= w[1]), "{d:?}");
        assert_eq!(d[0], Duration::from_secs(1));
        assert_eq!(d[1], Duration::from_secs(2));
        assert_eq!(*d.last().unwrap(), BACKOFF_CAP / 2);
        assert_eq!(
            backoff_delay(40, BACKOFF_BASE, BACKOFF_CAP, 0.999_999),
            (BACKOFF_CAP / 2) + (BACKOFF_CAP / 2).mul_f64(0.999_999)
        );
        assert_eq!(
            backoff_delay(u32::MAX, BACKOFF_BASE, BACKOFF_CAP, 1.0),
            BACKOFF_CAP
        );
        assert_eq!(
            backoff_delay(0, BACKOFF_BASE, BACKOFF_CAP, 0.5),
            Duration::ZERO
        );
        // Jitter stays inside [d/2, d].
        for j in [0.0, 0.3, 0.9, f64::NAN] {
            let x = backoff_delay(3, BACKOFF_BASE, BACKOFF_CAP, j);
            assert!(x >= Duration::from_secs(4) && x <= Duration::from_secs(8));
        }
    }

    #[test]
    fn urls_are_recognised_and_redacted() {
        assert!(looks_like_url("https://example.com/a.git"));
        assert!(looks_like_url("git@github.com:org/repo.git"));
        assert!(!looks_like_url("./some/dir"));
        assert!(!looks_like_url("/tmp/a@b:c/x"));
        assert!(is_network_url("ssh://git@host/x"));
        assert!(!is_network_url("file:///tmp/x"));
        assert!(!is_network_url("/tmp/x"));
        assert_eq!(
            redact_url("https://user:s3cret@example.com/a.git"),
            "https://user:***@example.com/a.git"
        );
        assert_eq!(
            url_username("ssh://deploy@host/x").as_deref(),
            Some("deploy")
        );
        assert_eq!(url_username("https://host/x"), None);
    }

    #[test]
    fn sub_paths_stay_inside() {
        assert_eq!(
            normalize_sub_path("/a/./b/").unwrap().as_deref(),
            Some("a/b")
        );
        assert_eq!(normalize_sub_path("").unwrap(), None);
        assert!(normalize_sub_path("a/../../etc").is_err());
    }

    #[test]
    fn parse_picks_git_or_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().join("plain");
        std::fs::create_dir(&folder).unwrap();
        let repo = tmp.path().join("repo");
        git2::Repository::init(&repo).unwrap();
        let spec = |repo: &Path| {
            SourceSpec::parse(&SourceArgs {
                repo: repo.to_string_lossy().into_owned(),
                ..Default::default()
            })
        };
        assert!(matches!(spec(&folder).unwrap(), SourceSpec::Dir(_)));
        assert!(matches!(spec(&repo).unwrap(), SourceSpec::Git(_)));
        assert!(matches!(
            spec(&tmp.path().join("missing")),
            Err(SpecError::NotFound { .. })
        ));
        let token_file = tmp.path().join("token");
        std::fs::write(&token_file, "abc123\n").unwrap();
        let parsed = SourceSpec::parse(&SourceArgs {
            repo: "https://example.com/org/cfg.git".into(),
            token_file: Some(token_file),
            git_ref: Some("v1".into()),
            sub_path: Some("deploy/".into()),
            ..Default::default()
        })
        .unwrap();
        let SourceSpec::Git(g) = parsed else {
            panic!("not git")
        };
        assert_eq!(g.git_ref.as_deref(), Some("v1"));
        assert_eq!(g.sub_path.as_deref(), Some("deploy"));
        assert!(g.is_network());
        assert!(!format!("{:?}", g.auth).contains("abc123"));
        assert_eq!(
            g.auth,
            GitAuth::Token {
                username: "x-access-token".into(),
                token: "abc123".into()
            }
        );
    }
}

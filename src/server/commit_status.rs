//! Commit statuses written back to the Git host (`--commit-status github|gitlab`), as Argo CD
//! and Flux do: the commit page shows whether the commit reached the fleet.
//!
//! A task looks at the served state every [`TICK`] and works out, for the revisions people
//! look at (the served one, the newest rejected one, and one just superseded), the status the
//! host should show: `pending` with "n/N agents applied" while a rollout runs, `success` when
//! every targeted agent applied it, `failure` for a rejected revision or a halted rollout. It
//! sends only what differs from what the host last accepted, so updates are coalesced (one per
//! tick at most per revision, never one per agent) and a failed request is simply tried again
//! at a later tick, with the tick backing off while the host fails. The reconciler never waits
//! for it.
//!
//! Descriptions are built from counts, codes and file:line positions only, never from agents'
//! texts or diagnostics' messages, so no secret can reach the Git host.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::convergence::{Convergence, Verdict, verdict};
use super::state::AppState;
use crate::source::short_revision;

/// How often the task looks for changes while the host answers.
pub const TICK: Duration = Duration::from_secs(2);
/// The longest it waits between tries while the host fails.
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// GitHub truncates descriptions at 140 characters; GitLab takes 255. Keep to the smaller.
pub const MAX_DESCRIPTION: usize = 140;
/// The status's name on the host (GitHub's `context`, GitLab's `name`).
pub const CONTEXT: &str = "gitamp";

/// Which host API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// `POST {api}/repos/{owner}/{repo}/statuses/{sha}` (REST statuses API).
    GitHub,
    /// `POST {api}/projects/{id}/statuses/{sha}` (commit status API).
    GitLab,
}

impl Provider {
    pub fn parse(name: &str) -> Option<Provider> {
        match name {
            "github" => Some(Provider::GitHub),
            "gitlab" => Some(Provider::GitLab),
            _ => None,
        }
    }

    /// The public API base, when `--commit-status-api` does not say.
    pub fn default_api(self) -> &'static str {
        match self {
            Provider::GitHub => "https://api.github.com",
            Provider::GitLab => "https://gitlab.com/api/v4",
        }
    }
}

/// Where and how statuses are written, checked at start.
#[derive(Clone)]
pub struct CommitStatusConfig {
    pub provider: Provider,
    /// API base URL, without a trailing slash.
    pub api: String,
    /// `owner/name` (GitHub) or the project's path or numeric id (GitLab).
    pub repository: String,
    pub token: String,
    /// Base URL of gitamp's API as people reach it, for `target_url`.
    pub public_url: Option<String>,
}

impl std::fmt::Debug for CommitStatusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitStatusConfig")
            .field("provider", &self.provider)
            .field("api", &self.api)
            .field("repository", &self.repository)
            .field("token", &"<set>")
            .field("public_url", &self.public_url)
            .finish()
    }
}

/// The repository's `owner/name` path from a Git remote URL (https, ssh, scp-like), for
/// `--commit-status-repo`'s default.
pub fn repository_of(url: &str) -> Option<String> {
    let rest = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/')?.1.to_string(),
        // scp-like: git@github.com:acme/config.git
        None => url.split_once(':')?.1.to_string(),
    };
    let path = rest.trim_matches('/').trim_end_matches(".git").to_string();
    (path.contains('/') && !path.contains("..")).then_some(path)
}

/// A status as the host shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    pub description: String,
}

/// The states both hosts have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Success,
    Failure,
    /// Superseded before it finished: neither success nor a fault of this commit.
    Error,
}

impl State {
    fn name(self, provider: Provider) -> &'static str {
        match (self, provider) {
            (State::Pending, _) => "pending",
            (State::Success, _) => "success",
            (State::Failure, Provider::GitHub) => "failure",
            (State::Failure, Provider::GitLab) => "failed",
            (State::Error, Provider::GitHub) => "error",
            (State::Error, Provider::GitLab) => "canceled",
        }
    }
}

fn status(state: State, description: String) -> Status {
    let mut description = description;
    if description.chars().count() > MAX_DESCRIPTION {
        description = description.chars().take(MAX_DESCRIPTION - 1).collect();
        description.push('…');
    }
    Status { state, description }
}

/// What the host should show now for each revision of interest.
pub fn wanted(app: &AppState) -> Vec<(String, Status)> {
    let mut out = Vec::new();
    let (served, rejected) = {
        let sync = app.sync.lock().unwrap_or_else(|p| p.into_inner());
        (
            app.serving.load_full().map(|s| s.revision.revision.clone()),
            sync.last_rejected.clone(),
        )
    };
    let view = app.view.load_full();
    let history = app.history.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = rejected {
        let first = r.diagnostics.iter().find(|d| d.severity == "error");
        let at = first
            .map(|d| {
                format!(
                    ", first {} at {}:{}",
                    d.code, d.location.file, d.location.line
                )
            })
            .unwrap_or_default();
        out.push((
            r.revision.clone(),
            status(
                State::Failure,
                format!(
                    "rejected: {} error(s){at}; the last good revision keeps serving",
                    r.errors
                ),
            ),
        ));
    }
    if let Some(served) = served
        && let Some(c) = history.convergence.get(&served)
    {
        let halted = view.halted_rollouts();
        out.push((served.clone(), status_of(c, &halted)));

        // The revision it replaced, if that one never finished.
        if let Some(old) = history
            .convergence
            .values()
            .filter(|o| o.superseded_by.as_deref() == Some(served.as_str()))
            .max_by_key(|o| o.accepted_at)
        {
            out.push((old.revision.clone(), status_of(old, &[])));
        }
    }
    out
}

/// A revision's status from its convergence [`verdict`].
fn status_of(c: &Convergence, halted: &[&str]) -> Status {
    let applied = format!("{}/{} agents applied", c.applied, c.targeted);
    match verdict(c, halted) {
        Verdict::Converged => {
            let p99 = c
                .latency
                .quantile_ms(0.99)
                .map(|ms| {
                    format!(
                        ", p99 {}",
                        gitamp_core::duration::format_duration(Duration::from_millis(ms))
                    )
                })
                .unwrap_or_default();
            status(State::Success, format!("{applied}{p99}"))
        }
        Verdict::Failed { reason } => status(State::Failure, format!("{reason}: {applied}")),
        Verdict::Superseded { by } => status(
            State::Error,
            format!("superseded by {} at {applied}", short_revision(&by)),
        ),
        Verdict::RollingOut if c.failed + c.rolled_back > 0 => status(
            State::Pending,
            format!(
                "{applied}, {} failed, {} waiting",
                c.failed + c.rolled_back,
                c.waiting
            ),
        ),
        Verdict::RollingOut => status(State::Pending, format!("{applied}, {} waiting", c.waiting)),
    }
}

/// Write statuses until `cancel`.
pub async fn run(config: CommitStatusConfig, app: Arc<AppState>, cancel: CancellationToken) {
    let client = super::outbound::client();
    // What the host last accepted, per revision; bounded by pruning to what is wanted now.
    let mut sent: HashMap<String, Status> = HashMap::new();
    let mut delay = TICK;
    info!(provider = ?config.provider, repository = %config.repository, "Writing commit statuses.");
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => return,
        }
        // Replicas: the leader alone writes commit statuses (one writer, as Argo CD's one
        // controller); a replica that starts leading sends what it sees once.
        if app.cluster.load().as_ref().is_some_and(|c| !c.is_leader()) {
            sent.clear();
            continue;
        }
        let wanted = wanted(&app);
        let mut failed = false;
        for (revision, want) in &wanted {
            if sent.get(revision) == Some(want) || !is_commit(revision) {
                continue;
            }
            match post(&client, &config, revision, want).await {
                Ok(()) => {
                    debug!(revision = %revision, state = want.state.name(config.provider), "Commit status set.");
                    crate::telemetry::commit_status(true);
                    sent.insert(revision.clone(), want.clone());
                }
                Err(why) => {
                    crate::telemetry::commit_status(false);
                    warn!(revision = %revision, "Setting the commit status failed ({why}); trying again later.");
                    failed = true;
                }
            }
        }
        sent.retain(|r, _| wanted.iter().any(|(w, _)| w == r));
        delay = if failed {
            (delay * 2).min(BACKOFF_CAP)
        } else {
            TICK
        };
    }
}

/// A full commit id (a folder source's content ids are not commits).
fn is_commit(revision: &str) -> bool {
    (revision.len() == 40 || revision.len() == 64)
        && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The request body the provider documents.
pub fn body(config: &CommitStatusConfig, revision: &str, s: &Status) -> serde_json::Value {
    let target_url = config
        .public_url
        .as_ref()
        .map(|base| format!("{}/api/v1/revisions/{revision}", base.trim_end_matches('/')));
    let mut body = serde_json::json!({
        "state": s.state.name(config.provider),
        "description": s.description,
    });
    match config.provider {
        Provider::GitHub => body["context"] = CONTEXT.into(),
        Provider::GitLab => body["name"] = CONTEXT.into(),
    }
    if let Some(url) = target_url {
        body["target_url"] = url.into();
    }
    body
}

/// The request URL the provider documents.
pub fn url(config: &CommitStatusConfig, revision: &str) -> String {
    match config.provider {
        Provider::GitHub => format!(
            "{}/repos/{}/statuses/{revision}",
            config.api, config.repository
        ),
        Provider::GitLab => format!(
            "{}/projects/{}/statuses/{revision}",
            config.api,
            percent_encode_path(&config.repository)
        ),
    }
}

/// GitLab takes a project's path as one URL-encoded segment (`group%2Fproject`).
fn percent_encode_path(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn post(
    client: &reqwest::Client,
    config: &CommitStatusConfig,
    revision: &str,
    s: &Status,
) -> Result<(), String> {
    let mut req = client
        .post(url(config, revision))
        .json(&body(config, revision, s));
    req = match config.provider {
        Provider::GitHub => req
            .bearer_auth(&config.token)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28"),
        Provider::GitLab => req.header("PRIVATE-TOKEN", &config.token),
    };
    match req.send().await {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(format!("the host answered {}", resp.status())),
        Err(err) => Err(super::outbound::failure(&err).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_comes_from_the_remote_url() {
        for (url, want) in [
            ("https://github.com/acme/config.git", Some("acme/config")),
            (
                "https://x-access-token@github.com/acme/config",
                Some("acme/config"),
            ),
            ("git@github.com:acme/config.git", Some("acme/config")),
            (
                "ssh://git@gitlab.example.com:2222/group/sub/project.git",
                Some("group/sub/project"),
            ),
            ("https://github.com/config.git", None),
        ] {
            assert_eq!(repository_of(url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn long_descriptions_are_cut_to_what_github_keeps() {
        let s = status(State::Pending, "x".repeat(500));
        assert_eq!(s.description.chars().count(), MAX_DESCRIPTION);
    }

    #[test]
    fn gitlab_paths_are_one_segment() {
        let c = CommitStatusConfig {
            provider: Provider::GitLab,
            api: "https://gitlab.example/api/v4".into(),
            repository: "group/sub project".into(),
            token: "t".into(),
            public_url: None,
        };
        assert_eq!(
            url(&c, "abc"),
            "https://gitlab.example/api/v4/projects/group%2Fsub%20project/statuses/abc"
        );
    }
}

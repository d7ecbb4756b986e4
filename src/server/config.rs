//! What `gitamp serve` runs with, as the server needs it: checked values, not flags.
//!
//! The command line (`cli::serve`) builds a [`ServerConfig`] and does all the checking of user
//! input there (files read, paths resolved, TLS loaded), so the server never sees clap and a
//! test or an embedding can start one without a command line.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gitamp_opamp::server::TlsConfig;

use crate::otelcol::Otelcol;
use crate::source::SourceSpec;

/// Everything the server runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The config repository; `None` serves the example repository embedded in the binary.
    pub source: Option<SourceSpec>,
    /// The `--ref` as given: webhooks for other refs do not wake the poller.
    pub tracked_ref: Option<String>,
    /// Time between polls of a Git remote.
    pub poll: Duration,
    /// OpAMP listener (WebSocket and HTTP on one path).
    pub opamp_listen: SocketAddr,
    /// OpAMP URL path.
    pub opamp_path: String,
    /// Status API listener (read-only API, /metrics, webhooks).
    pub api_listen: SocketAddr,
    /// Where the store and the Git cache live; created if missing.
    pub data_dir: PathBuf,
    /// `--store postgres://…`: the shared database of several replicas; `None` is SQLite in
    /// `data_dir`.
    pub store: Option<String>,
    /// Tokens and secrets, already read from their files.
    pub secrets: Secrets,
    /// TLS for both listeners.
    pub tls: Option<TlsConfig>,
    /// Agent heartbeat interval expected (and offered to agents that heartbeat).
    pub heartbeat: Duration,
    /// How long an HTTP poll's reply may wait for a plan under way (`OpampSettings`).
    pub poll_reply_wait: Duration,
    /// Serve the own-telemetry OTLP receiver on the OpAMP listener and offer it by default.
    pub otlp_receiver: bool,
    /// Over TLS: the certificate chain (PEM, certificates only), offered to agents as the CA
    /// to trust in an OpAMP connection-settings offer.
    pub tls_ca_pem: Option<bytes::Bytes>,
    /// Largest OpAMP message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Simulated agents to start against this server (the demo).
    pub demo_agents: usize,
    /// A collector binary every new revision must also pass.
    pub otelcol: Option<Otelcol>,
    /// How logs are written to stderr.
    pub log_format: LogFormat,
    /// `--verify-signatures`: serve only commits signed by these keys (Git sources only).
    pub signatures: Option<SignatureFiles>,
    /// `--notifications`: which events go to which endpoint, already read and checked.
    pub notifications: Option<super::notify::NotifyConfig>,
    /// `--commit-status`: where commit statuses are written.
    pub commit_status: Option<super::commit_status::CommitStatusConfig>,
}

/// The trusted keys of `--verify-signatures`, as files (at least one is set). The server turns
/// them into a [`SignaturePolicy`](crate::source::signature::SignaturePolicy) in its data
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFiles {
    /// SSH allowed signers, the format of git's `gpg.ssh.allowedSignersFile`.
    pub allowed_signers: Option<PathBuf>,
    /// OpenPGP public keys (armored or binary), as `gpg --export` writes them.
    pub trusted_gpg_keys: Option<PathBuf>,
}

/// The secrets the server checks callers against. `Debug` says which are set, never what they
/// are, so a logged config leaks nothing.
#[derive(Clone, Default)]
pub struct Secrets {
    /// Bearer token the status API requires.
    pub api_token: Option<String>,
    /// GitHub webhook secret (`X-Hub-Signature-256`).
    pub github_webhook_secret: Option<String>,
    /// GitLab webhook token (`X-Gitlab-Token`).
    pub gitlab_webhook_token: Option<String>,
    /// Generic webhook bearer token.
    pub webhook_token: Option<String>,
    /// Secret agents must present.
    pub agent_secret: Option<String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |s: &Option<String>| if s.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("Secrets")
            .field("api_token", &set(&self.api_token))
            .field("github_webhook_secret", &set(&self.github_webhook_secret))
            .field("gitlab_webhook_token", &set(&self.gitlab_webhook_token))
            .field("webhook_token", &set(&self.webhook_token))
            .field("agent_secret", &set(&self.agent_secret))
            .finish()
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// For people.
    #[default]
    Text,
    /// One JSON object a line, for log pipelines.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_secret() {
        let secrets = Secrets {
            api_token: Some("hunter2".into()),
            ..Secrets::default()
        };
        let shown = format!("{secrets:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("api_token: \"<set>\""), "{shown}");
    }
}

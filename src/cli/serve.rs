//! `gitamp serve`: the GitOps loop. Every flag can also come from a `GITAMP_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::secret::read_secret;
use crate::server::{LogFormat, Secrets, ServerConfig};
use crate::source::{SourceArgs, SourceSpec};

/// Serve OpAMP and the status API, keeping every agent in step with the repository.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The config repository: a Git URL (https, ssh, file://), a local Git repository, or a plain
    /// folder (watched for changes). Without it, the example repository embedded in the binary.
    #[arg(long, env = "GITAMP_REPO")]
    pub repo: Option<String>,
    /// Branch or tag to track (default: the remote's default branch).
    #[arg(long = "ref", env = "GITAMP_REF")]
    pub git_ref: Option<String>,
    /// Sub-path of the repository holding the resources.
    #[arg(long, env = "GITAMP_PATH")]
    pub path: Option<String>,
    /// Time between polls of the Git remote (webhooks wake it earlier): 30s, 1m, 1h30m; a bare
    /// number is seconds. At least 1s.
    #[arg(long, env = "GITAMP_POLL", value_name = "DURATION", default_value = "30s",
          value_parser = super::duration::at_least_a_second)]
    pub poll: Duration,
    /// File holding an HTTPS token for the Git remote.
    #[arg(long, env = "GITAMP_GIT_TOKEN_FILE")]
    pub git_token_file: Option<PathBuf>,
    /// Private key for an ssh remote.
    #[arg(long, env = "GITAMP_SSH_KEY")]
    pub ssh_key: Option<PathBuf>,
    /// known_hosts file to check the ssh remote's host key against.
    #[arg(long, env = "GITAMP_KNOWN_HOSTS")]
    pub known_hosts: Option<PathBuf>,
    /// OpAMP listener (WebSocket and HTTP on one path).
    #[arg(long, env = "GITAMP_OPAMP_LISTEN", default_value = "0.0.0.0:4320")]
    pub opamp_listen: SocketAddr,
    /// OpAMP URL path.
    #[arg(long, env = "GITAMP_OPAMP_PATH", default_value = "/v1/opamp")]
    pub opamp_path: String,
    /// Status API listener (read-only API, /metrics, webhooks).
    #[arg(long, env = "GITAMP_API_LISTEN", default_value = "127.0.0.1:8080")]
    pub api_listen: SocketAddr,
    /// Where the store (gitamp.db) and the Git cache live; created on first run.
    #[arg(long, env = "GITAMP_DATA_DIR", default_value = "gitamp-data")]
    pub data_dir: PathBuf,
    /// GitHub webhook secret (X-Hub-Signature-256), read from this file.
    #[arg(long, env = "GITAMP_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// GitLab webhook token (X-Gitlab-Token), read from this file.
    #[arg(long, env = "GITAMP_GITLAB_TOKEN_FILE")]
    pub gitlab_token_file: Option<PathBuf>,
    /// Generic webhook bearer token, read from this file.
    #[arg(long, env = "GITAMP_WEBHOOK_TOKEN_FILE")]
    pub webhook_token_file: Option<PathBuf>,
    /// Bearer token required by the status API (read from this file).
    #[arg(long, env = "GITAMP_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Secret agents must present (`Authorization: Bearer` or `Secret-Key`), read from this file.
    #[arg(long, env = "GITAMP_AGENT_SECRET_FILE")]
    pub agent_secret_file: Option<PathBuf>,
    /// PEM certificate chain: serve both listeners over TLS (with --tls-key).
    #[arg(long, env = "GITAMP_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "GITAMP_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Agent heartbeat interval expected (30s, 1m; a bare number is seconds; at least 1s): an
    /// agent silent for 3 intervals is disconnected.
    #[arg(long, env = "GITAMP_HEARTBEAT", value_name = "DURATION", default_value = "30s",
          value_parser = super::duration::at_least_a_second)]
    pub heartbeat: Duration,
    /// Largest OpAMP message accepted, in bytes.
    #[arg(long, env = "GITAMP_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Start N simulated agents (WebSocket) against this server, with labels that the example
    /// repository's configurations select: a live demo with no collector installed.
    #[arg(long, env = "GITAMP_DEMO_AGENTS", default_value_t = 0)]
    pub demo_agents: usize,
    /// An OpenTelemetry Collector binary (the distribution agents run): a new revision is
    /// accepted only if every configuration also passes its `validate --config=FILE`.
    /// An empty value (an unset CI input) means none.
    #[arg(long, env = "GITAMP_OTELCOL", value_parser = crate::otelcol::path_or_empty())]
    pub otelcol: Option<PathBuf>,
    /// How long one collector run may take before it is killed (the revision is then
    /// rejected): 60s, 2m, 500ms; a bare number is seconds.
    #[arg(long, env = "GITAMP_OTELCOL_TIMEOUT", value_name = "DURATION", default_value = "60s",
          value_parser = super::duration::zero_or_more)]
    pub otelcol_timeout: Duration,
    /// Log format.
    #[arg(long, env = "GITAMP_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl Args {
    /// Checks the flags and reads what they point to: every mistake in them is reported here,
    /// before the server opens its store or binds a port.
    pub fn into_config(self) -> anyhow::Result<ServerConfig> {
        // A wrong collector path is a usage error now, not a rejected revision later.
        let otelcol = self
            .otelcol
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| crate::otelcol::Otelcol::new(p).map(|o| o.with_timeout(self.otelcol_timeout)))
            .transpose()
            .context("--otelcol")?;
        let secret = |path: &Option<PathBuf>| path.as_deref().map(read_secret).transpose();
        let secrets = Secrets {
            api_token: secret(&self.api_token_file)?,
            github_webhook_secret: secret(&self.webhook_secret_file)?,
            gitlab_webhook_token: secret(&self.gitlab_token_file)?,
            webhook_token: secret(&self.webhook_token_file)?,
            agent_secret: secret(&self.agent_secret_file)?,
        };
        let source = self
            .repo
            .as_ref()
            .map(|repo| {
                SourceSpec::parse(&SourceArgs {
                    repo: repo.clone(),
                    git_ref: self.git_ref.clone(),
                    sub_path: self.path.clone(),
                    token_file: self.git_token_file.clone(),
                    ssh_key: self.ssh_key.clone(),
                    known_hosts: self.known_hosts.clone(),
                    ..SourceArgs::default()
                })
            })
            .transpose()
            .context("--repo")?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(
                gitamp_opamp::server::TlsConfig::from_pem_files(cert, key)
                    .context("loading the TLS certificate")?,
            ),
            _ => None,
        };
        let log_format = match self.log_format.as_str() {
            "json" => LogFormat::Json,
            _ => LogFormat::Text,
        };
        Ok(ServerConfig {
            source,
            tracked_ref: self.git_ref,
            poll: self.poll,
            opamp_listen: self.opamp_listen,
            opamp_path: self.opamp_path,
            api_listen: self.api_listen,
            data_dir: self.data_dir,
            secrets,
            tls,
            heartbeat: self.heartbeat,
            max_message_bytes: self.max_message_bytes,
            demo_agents: self.demo_agents,
            otelcol,
            log_format,
        })
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Pushes first. The reconciler wakes the connections it pushes to from outside the
        // runtime's workers (it plans on `block_in_place`), so their tasks wait in the shared
        // queue, while the connections woken by agents' acknowledgements wait in each worker's
        // own queue, which a worker otherwise prefers (by default it looks at the shared queue
        // about once per 200 µs of polls, up to 127 tasks). Looking at the shared queue first
        // delivers a rollout's configs before it answers the acknowledgements of the first
        // ones: the 15,000-agent rollout's p99 went from ~1.2 s to ~0.6 s on 2 cores
        // (docs/benchmarks.md, fifth round). The check is an atomic load when the queue is empty.
        .global_queue_interval(1)
        .build()?;
    runtime.block_on(crate::server::run(config))?;
    Ok(ExitCode::from(super::exit::OK))
}

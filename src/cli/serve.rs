//! `gitamp serve`: the GitOps loop. Every flag can also come from a `GITAMP_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::secret::read_secret;
use crate::server::commit_status::{CommitStatusConfig, Provider};
use crate::server::{LogFormat, Secrets, ServerConfig, SignatureFiles};
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
    /// A PostgreSQL URL (postgres://user:password@host:port/db): the database shared by several
    /// replicas of gitamp serve (README, "Operating several servers"). Unset: SQLite in
    /// --data-dir, for one server.
    #[arg(long, env = "GITAMP_STORE", value_name = "URL")]
    pub store: Option<String>,
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
    /// How long an HTTP poll's reply may wait for a plan under way that may give the agent a
    /// config (its own first report, a new revision), so it gets the config in this reply
    /// rather than a poll interval later (0 never waits).
    #[arg(long, env = "GITAMP_POLL_REPLY_WAIT", value_name = "DURATION", default_value = "2s",
          value_parser = super::duration::zero_or_more)]
    pub poll_reply_wait: Duration,
    /// Largest OpAMP message accepted, in bytes (also the limit of an OTLP request to the
    /// own-telemetry receiver, before and after gzip).
    #[arg(long, env = "GITAMP_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Do not serve the own-telemetry receiver (OTLP/HTTP `/v1/metrics` on the OpAMP listener)
    /// nor offer it to agents: only destinations declared in Git are offered.
    #[arg(long, env = "GITAMP_NO_OTLP_RECEIVER")]
    pub no_otlp_receiver: bool,
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
    /// Serve only commits signed by a trusted key (--allowed-signers and/or
    /// --trusted-gpg-keys); any other tip is rejected like an invalid revision.
    #[arg(long, env = "GITAMP_VERIFY_SIGNATURES")]
    pub verify_signatures: bool,
    /// SSH keys trusted to sign commits, in the format of git's gpg.ssh.allowedSignersFile
    /// (`principal key-type key` per line).
    #[arg(long, env = "GITAMP_ALLOWED_SIGNERS", value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
    /// OpenPGP public keys trusted to sign commits (`gpg --export --armor KEY > FILE`).
    #[arg(long, env = "GITAMP_TRUSTED_GPG_KEYS", value_name = "FILE")]
    pub trusted_gpg_keys: Option<PathBuf>,
    /// Send events worth a person's attention (revision rejected, rollout halted, ...) to the
    /// webhooks this YAML file lists (see the README's Notifications).
    #[arg(long, env = "GITAMP_NOTIFICATIONS", value_name = "FILE")]
    pub notifications: Option<PathBuf>,
    /// Write each revision's rollout state back to the Git host as a commit status (pending
    /// "n/N agents applied", success, failure).
    #[arg(long, env = "GITAMP_COMMIT_STATUS", value_parser = ["github", "gitlab"], requires = "commit_status_token_file")]
    pub commit_status: Option<String>,
    /// Token for the commit status API (GitHub: statuses write; GitLab: api scope).
    #[arg(long, env = "GITAMP_COMMIT_STATUS_TOKEN_FILE", value_name = "FILE")]
    pub commit_status_token_file: Option<PathBuf>,
    /// The host's API base URL (GitHub Enterprise, self-managed GitLab); default the public
    /// one.
    #[arg(long, env = "GITAMP_COMMIT_STATUS_API", value_name = "URL")]
    pub commit_status_api: Option<String>,
    /// `owner/name` (GitHub) or the project's path or id (GitLab); default from --repo.
    #[arg(long, env = "GITAMP_COMMIT_STATUS_REPO", value_name = "REPO")]
    pub commit_status_repo: Option<String>,
    /// gitamp's API as people reach it (https://gitamp.example.com): commit statuses link to
    /// the revision there.
    #[arg(long, env = "GITAMP_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
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
        let tls_ca_pem = match &self.tls_cert {
            Some(cert) => Some(certificates_only(
                &std::fs::read(cert).context("reading --tls-cert")?,
            )),
            None => None,
        };
        let signatures = self.signature_files(source.as_ref())?;
        let notifications = self
            .notifications
            .as_deref()
            .map(crate::server::notify::NotifyConfig::load)
            .transpose()
            .context("--notifications")?;
        let commit_status = self.commit_status_config(source.as_ref())?;
        let store = self.store.filter(|s| !s.is_empty());
        if let Some(url) = &store
            && !crate::store::is_postgres_url(url)
        {
            return Err(crate::store::StoreError::BadUrl(crate::source::redact_url(url)).into());
        }
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
            store,
            secrets,
            tls,
            heartbeat: self.heartbeat,
            poll_reply_wait: self.poll_reply_wait,
            otlp_receiver: !self.no_otlp_receiver,
            tls_ca_pem,
            max_message_bytes: self.max_message_bytes,
            demo_agents: self.demo_agents,
            otelcol,
            log_format,
            signatures,
            notifications,
            commit_status,
        })
    }

    /// `--commit-status` and its settings, checked: a token, a Git source, and a repository
    /// (given, or read from the remote URL).
    fn commit_status_config(
        &self,
        source: Option<&SourceSpec>,
    ) -> anyhow::Result<Option<CommitStatusConfig>> {
        let Some(name) = &self.commit_status else {
            return Ok(None);
        };
        let provider = Provider::parse(name)
            .with_context(|| format!("--commit-status: {name:?} is not github or gitlab"))?;
        let Some(SourceSpec::Git(git)) = source else {
            anyhow::bail!("--commit-status needs a Git --repo (statuses are set on its commits)");
        };
        let token_file = self
            .commit_status_token_file
            .as_deref()
            .context("--commit-status needs --commit-status-token-file")?;
        let token = read_secret(token_file).context("--commit-status-token-file")?;
        let repository = match &self.commit_status_repo {
            Some(r) => r.clone(),
            None => crate::server::commit_status::repository_of(&git.url).with_context(|| {
                "--commit-status: cannot tell the repository from --repo; give --commit-status-repo"
            })?,
        };
        let api = self
            .commit_status_api
            .clone()
            .unwrap_or_else(|| provider.default_api().to_string())
            .trim_end_matches('/')
            .to_string();
        for (flag, url) in [
            ("--commit-status-api", Some(&api)),
            ("--public-url", self.public_url.as_ref()),
        ] {
            if let Some(url) = url {
                anyhow::ensure!(
                    url.starts_with("https://") || url.starts_with("http://"),
                    "{flag}: {url:?} is not an http(s) URL"
                );
            }
        }
        Ok(Some(CommitStatusConfig {
            provider,
            api,
            repository,
            token,
            public_url: self.public_url.clone(),
        }))
    }

    /// `--verify-signatures` and its key files, checked: each file readable, at least one
    /// given, and a Git source to verify (a folder or the embedded example has no commits).
    fn signature_files(
        &self,
        source: Option<&SourceSpec>,
    ) -> anyhow::Result<Option<SignatureFiles>> {
        let files = SignatureFiles {
            allowed_signers: self.allowed_signers.clone(),
            trusted_gpg_keys: self.trusted_gpg_keys.clone(),
        };
        let any = files.allowed_signers.is_some() || files.trusted_gpg_keys.is_some();
        if !self.verify_signatures {
            anyhow::ensure!(
                !any,
                "--allowed-signers and --trusted-gpg-keys take effect with --verify-signatures; \
                 add it (or remove them)"
            );
            return Ok(None);
        }
        anyhow::ensure!(
            any,
            "--verify-signatures needs the trusted keys: --allowed-signers FILE (SSH) and/or \
             --trusted-gpg-keys FILE (OpenPGP)"
        );
        anyhow::ensure!(
            matches!(source, Some(SourceSpec::Git(_))),
            "--verify-signatures needs a Git --repo (a folder or the embedded example has no \
             signed commits)"
        );
        for (flag, path) in [
            ("--allowed-signers", &files.allowed_signers),
            ("--trusted-gpg-keys", &files.trusted_gpg_keys),
        ] {
            if let Some(path) = path {
                std::fs::metadata(path)
                    .with_context(|| format!("{flag}: reading {}", path.display()))?;
            }
        }
        Ok(Some(files))
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

/// The `CERTIFICATE` blocks of a PEM file (a chain file may also hold a key: it never leaves).
fn certificates_only(pem: &[u8]) -> bytes::Bytes {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(pem);
    let mut out = String::new();
    let mut rest = &*text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        out.push_str(&rest[start..start + len + END.len()]);
        out.push('\n');
        rest = &rest[start + len + END.len()..];
    }
    bytes::Bytes::from(out)
}

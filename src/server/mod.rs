//! `gitamp serve`: wires the tasks together.
//!
//! ```text
//!  source task ──SyncEvent──► reconciler ──deliver────► fleet ◄──► OpAMP listener ◄── agents
//!  (git poll / dir watch /        │  ▲                       │
//!   embedded)        webhooks ─wake  │  └────FleetEvent───────┘
//!                                 ▼
//!                      AppState (views) ──► status API listener     store writer (SQLite)
//! ```
//!
//! One writer (the reconciler) and many readers (API handlers read `AppState`); the OpAMP
//! message path touches only the fleet registry, never the reconciler.

pub mod cluster;
pub mod commit_status;
pub mod config;
pub mod convergence;
pub mod demo;
pub mod events;
pub mod notify;
pub mod outbound;
pub mod own_telemetry;
pub mod reconciler;
pub mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use gitamp_opamp::Fleet;
use gitamp_opamp::server::{self as opamp, OpampSettings};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::source::{
    self, DirOptions, DirWatcher, GitOptions, GitPoller, GitSource, SignatureCheck, SourceSpec,
    SyncEvent, SyncInfo,
};
use crate::store::{AnyStore, Store, StoreWriter, WriterOptions};
use crate::telemetry;
use reconciler::Reconciler;
use state::AppState;

pub use config::{LogFormat, Secrets, ServerConfig, SignatureFiles};

/// Connections waiting to be accepted on the OpAMP listener. After a restart every agent
/// reconnects within a second or so; with tokio's default of 1,024 the kernel drops the SYNs
/// past it and those agents retry a second later (TCP's SYN retransmission), so a 5,000-agent
/// reconnect storm took ~2.9 s instead of ~2 s about half the time. The kernel caps the value at
/// `net.core.somaxconn` (4,096 on current kernels).
const OPAMP_LISTEN_BACKLOG: u32 = 16 * 1024;

/// Binds like `TcpListener::bind` (address reuse, so a restarted server gets its port back at
/// once) with the larger accept backlog above.
fn bind_for_storms(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(OPAMP_LISTEN_BACKLOG)
}

/// Logs go to stderr so that stdout carries only the line for scripts (`gitamp listening …`).
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    // (No wire-level library traces to cap: tungstenite's printed `Authorization` headers and
    // config payloads at trace; the WebSocket codec is now ours and logs neither.)
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = log_colours(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    // A second init (tests running several servers in one process) is harmless.
    let _ = if format == LogFormat::Json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Colours only for a person at a terminal: escapes in a log file or a pipeline are noise.
/// `NO_COLOR` set to anything but the empty string turns them off (no-color.org).
fn log_colours(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Run the server until Ctrl-C or SIGTERM.
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    init_tracing(config.log_format);
    let metrics = telemetry::install();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;

    // The store, and what it remembers from the last run.
    let replica_id = cluster::replica_id(config.opamp_listen.port());
    // Each replica's sessions carry its id, so PostgreSQL itself says which replicas are alive
    // (a killed one's sessions end with it): see `cluster::Cluster::ready_for`.
    let store_url = config
        .store
        .as_deref()
        .map(|url| cluster::with_application_name(url, &replica_id));
    let store = match AnyStore::open(store_url.as_deref(), &config.data_dir)
        .await
        .context("opening the store")?
    {
        AnyStore::Postgres(pg) => {
            // Replicas: every one serves the same source, or the fleet would split.
            let identity = match &config.source {
                None => "embedded:example-repo".to_string(),
                Some(SourceSpec::Git(git)) => format!(
                    "{} ref={} path={}",
                    source::redact_url(&git.url),
                    git.git_ref.as_deref().unwrap_or("(default branch)"),
                    git.sub_path.as_deref().unwrap_or("/"),
                ),
                Some(SourceSpec::Dir(_)) => return Err(cluster::ClusterError::NotGit.into()),
            };
            cluster::check_source(&pg, &identity).await?;
            AnyStore::Postgres(pg.for_replica(&replica_id))
        }
        sqlite => sqlite,
    };
    let store = Arc::new(store);
    // What a replica starts once it knows its addresses (`None`: one server on SQLite).
    let mut replica = store.postgres().map(|pg| Replica {
        store: pg.clone(),
        wake: Arc::new(tokio::sync::Notify::new()),
        git: None,
        otelcol: config.otelcol.clone().map(Arc::new),
    });
    let agent_records = store.load_agent_resume().await.context("loading agents")?;
    let rollout_records = store.load_rollouts().await.context("loading rollouts")?;
    let config_records = store.load_configs().await.context("loading kept configs")?;
    let last_accepted = store
        .last_accepted_revision()
        .await
        .context("loading the last accepted revision")?;
    // Both kinds of event, each kept to its own bound: the newest of the store's whole
    // history (the in-memory log keeps each kind's newest).
    let event_records = store
        .recent_events(None, 2 * crate::store::EVENTS_KEPT)
        .await
        .context("loading recent events")?;
    let revision_records = store
        .revisions(state::REVISION_HISTORY as u32)
        .await
        .context("loading the revision history")?;
    let convergence = convergence::from_store(
        store
            .load_convergence(state::REVISION_HISTORY as u32)
            .await
            .context("loading convergence figures")?,
    );
    let (store_writer, store_task) = StoreWriter::spawn(store.clone(), WriterOptions::default());

    let fleet = Arc::new(Fleet::new());
    // What agents were offered before (an agent that accepts `opamp` offers reconnects on
    // each): one server remembers its own offers; a replica reads, for each agent new to it,
    // what the others offered (src/server/reconciler/evidence.rs).
    if replica.is_some() {
        fleet.read_offers_elsewhere();
    } else {
        fleet.remember_offers(reconciler::offers_from_records(&agent_records));
    }
    let mut app = AppState::new(fleet.clone(), metrics);
    // The last run's events first, so those of this run (the cached revision accepted below)
    // come after them.
    app.restore_events(events::from_store(event_records));
    app.restore_revisions(events::revisions_from_store(revision_records));
    let newest_convergence = convergence.first().cloned();
    if let Ok(mut h) = app.history.lock() {
        for c in convergence.into_iter().rev() {
            h.record_convergence(c);
        }
    }
    app.store_events_in(Some(store_writer.clone()));
    let secrets = &config.secrets;
    app.api_token = secrets.api_token.clone();
    app.webhooks.github_secret = secrets
        .github_webhook_secret
        .clone()
        .map(String::into_bytes);
    app.webhooks.gitlab_token = secrets.gitlab_webhook_token.clone().map(String::into_bytes);
    app.webhooks.generic_token = secrets.webhook_token.clone().map(String::into_bytes);
    app.webhooks.tracked_ref = config.tracked_ref.clone().unwrap_or_default();

    let cancel = CancellationToken::new();
    let (sync_tx, sync_rx) = mpsc::channel::<SyncEvent>(16);
    let (command_tx, command_rx) = mpsc::channel(16);
    app.reconciler = Some(command_tx);

    // The source: embedded example, a watched folder, or a polled Git remote.
    let mut initial_revision = None;
    match &config.source {
        None => {
            let snapshot = crate::embedded::snapshot();
            app.sync.lock().unwrap_or_else(|p| p.into_inner()).source =
                "embedded:example-repo".into();
            info!(revision = %snapshot.revision, "Serving the embedded example repository.");
            sync_tx
                .send(SyncEvent::Snapshot(snapshot, SyncInfo::default()))
                .await
                .context("starting the embedded source")?;
        }
        Some(spec) => {
            match spec.clone() {
                SourceSpec::Dir(dir) => {
                    {
                        let mut sync = app.sync.lock().unwrap_or_else(|p| p.into_inner());
                        sync.source = dir.root.display().to_string();
                        sync.sub_path = dir.sub_path.clone();
                    }
                    DirWatcher::new(dir, DirOptions::default())
                        .start(sync_tx.clone(), cancel.clone())
                        .context("watching the repository folder")?;
                }
                SourceSpec::Git(git) => {
                    {
                        let mut sync = app.sync.lock().unwrap_or_else(|p| p.into_inner());
                        sync.source = source::redact_url(&git.url);
                        sync.reference = git.git_ref.clone();
                        sync.sub_path = git.sub_path.clone();
                    }
                    let mut opts = GitOptions::new(&config.data_dir);
                    opts.interval = config.poll;
                    if let Some(files) = &config.signatures {
                        let policy = crate::source::signature::SignaturePolicy::prepare(
                            files.allowed_signers.as_deref(),
                            files.trusted_gpg_keys.as_deref(),
                            &config.data_dir,
                        )
                        .context("--verify-signatures")?;
                        info!("Serving only commits signed by a trusted key.");
                        opts.signatures = Some(Arc::new(policy));
                    }
                    let git_source = GitSource::new(git, opts).context("setting up Git")?;
                    // Serve the last accepted revision from the cache at once, so a restart
                    // keeps serving (and never serves a rejected tip) before the first fetch.
                    // Not in the cache (a restored backup, a lost cache): the poller looks for it
                    // again after its first fetch.
                    let mut restore = None;
                    if let Some(sha) = &last_accepted {
                        match git_source.read_commit(sha) {
                            // Keys trusted then may not be now: such a revision waits for the
                            // first fetch, which judges the tip.
                            Ok(Some(snap))
                                if matches!(
                                    snap.signature,
                                    Some(SignatureCheck::Refused { .. })
                                ) =>
                            {
                                warn!(revision = %sha, "The last accepted revision is not signed by a trusted key now; waiting for the first fetch.");
                            }
                            Ok(Some(snap)) => initial_revision = Some(snap.snapshot),
                            Ok(None) => restore = Some(sha.clone()),
                            Err(err) => {
                                warn!(revision = %sha, error = %err, "Cached revision unreadable; waiting for the first fetch.");
                                restore = Some(sha.clone());
                            }
                        }
                    }
                    match replica.as_mut() {
                        // A replica polls only while it leads, through the judge.
                        Some(replica) => {
                            app.poller = Some(replica.wake.clone());
                            let (to_judge, judged) = mpsc::channel::<SyncEvent>(16);
                            replica.git = Some((git_source, to_judge, judged));
                        }
                        None => {
                            let poller = GitPoller::new(git_source).restoring(restore);
                            app.poller = Some(poller.wake_handle());
                            tokio::spawn(poller.run(sync_tx.clone(), cancel.clone()));
                        }
                    }
                }
            }
        }
    }
    let app = Arc::new(app);
    if let Some(notifications) = config.notifications.clone() {
        let endpoints = notifications.endpoints.len();
        app.notify_with(notify::Notifier::start(
            notifications,
            app.clone(),
            cancel.clone(),
        ));
        info!(endpoints, "Sending notifications.");
    }
    if let Some(commit_status) = config.commit_status.clone() {
        telemetry::commit_statuses_registered();
        tokio::spawn(commit_status::run(
            commit_status,
            app.clone(),
            cancel.clone(),
        ));
    }

    // The reconciler, resumed from the store.
    let agents = reconciler::agents_from_records(&agent_records);
    let rollouts: BTreeMap<_, _> = reconciler::rollouts_from_records(&rollout_records);
    info!(
        agents = agents.len(),
        rollouts = rollouts.len(),
        events = app.history.lock().map_or(0, |h| h.events.len()),
        "Loaded state from the store."
    );
    let mut reconciler = Reconciler::new(app.clone(), store_writer.clone(), agents, rollouts)
        .with_retained_configs(&config_records)
        .with_stored_convergence(newest_convergence)
        .with_commands(command_rx);
    if replica.as_ref().is_some_and(|r| r.git.is_some()) {
        reconciler = reconciler
            .with_accepted_recorded_elsewhere()
            .with_adopted_rollouts();
    }
    if let Some(otelcol) = config.otelcol.clone() {
        info!(otelcol = %otelcol.path().display(), "Every new revision must pass the collector's validate.");
        reconciler.set_otelcol(otelcol);
    }
    if let Some(snapshot) = initial_revision {
        match tokio::task::spawn_blocking(move || gitamp_core::compile(&snapshot)).await {
            Ok(Ok(revision)) => reconciler.accept(revision),
            Ok(Err(rejected)) => {
                warn!(revision = %rejected.revision, "The last accepted revision no longer compiles.")
            }
            Err(err) => warn!(error = %err, "Compiling the cached revision failed."),
        }
    }
    let fleet_rx = fleet.subscribe();
    let reconciler_task = tokio::spawn(reconciler.run(sync_rx, fleet_rx, cancel.clone()));

    // The OpAMP listener.
    let settings = OpampSettings {
        path: config.opamp_path.clone(),
        max_message_bytes: config.max_message_bytes,
        heartbeat_interval: config.heartbeat,
        secret: config.secrets.agent_secret.clone(),
        otlp_receiver: config.otlp_receiver,
        poll_reply_wait: config.poll_reply_wait,
        tls_ca_pem: config.tls_ca_pem.clone(),
        ..OpampSettings::default()
    };
    let opamp_listener = bind_for_storms(config.opamp_listen)
        .with_context(|| format!("binding the OpAMP listener {}", config.opamp_listen))?;
    let opamp_addr = opamp_listener.local_addr()?;
    let opamp_router = opamp::router(fleet.clone(), settings.clone());
    let tls = config.tls.clone();
    let opamp_task = tokio::spawn(opamp::serve(opamp_listener, opamp_router, tls.clone()));

    // The status API listener.
    let api_listener = TcpListener::bind(config.api_listen)
        .await
        .with_context(|| format!("binding the API listener {}", config.api_listen))?;
    let api_addr = api_listener.local_addr()?;
    let api_task = tokio::spawn(opamp::serve(
        api_listener,
        crate::api::router(app.clone()),
        tls.clone(),
    ));
    if let Some(replica) = replica.take() {
        replica
            .start(
                replica_id,
                opamp_addr,
                api_addr,
                app.clone(),
                sync_tx.clone(),
                &cancel,
            )
            .await?;
    }
    drop(sync_tx);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let ws_scheme = if tls.is_some() { "wss" } else { "ws" };
    info!(
        opamp = %format!("{ws_scheme}://{opamp_addr}{}", settings.path),
        api = %format!("{scheme}://{api_addr}"),
        data_dir = %config.data_dir.display(),
        "gitamp is serving."
    );
    // A machine-readable line for scripts and tests that bind port 0, alone on stdout (logs
    // go to stderr). A closed stdout is no reason to stop serving: the error is ignored.
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "gitamp listening opamp={opamp_addr} api={api_addr}")
            .and_then(|()| out.flush());
    }

    let demo = if config.demo_agents > 0 {
        let url = format!("ws://{}{}", loopback(opamp_addr), settings.path);
        Some(demo::start(
            config.demo_agents,
            &url,
            settings.secret.clone(),
        ))
    } else {
        None
    };

    let mut opamp_task = opamp_task;
    let mut api_task = api_task;
    tokio::select! {
        _ = shutdown_signal() => info!("Shutting down."),
        r = &mut opamp_task => warn!(result = ?r, "The OpAMP listener stopped."),
        r = &mut api_task => warn!(result = ?r, "The API listener stopped."),
    }
    cancel.cancel();
    if let Some(demo) = demo {
        demo.stop().await;
    }
    let _ = reconciler_task.await;
    // The writer stops once every handle is gone; the API's state outlives this function.
    app.store_events_in(None);
    if let Err(err) = store_writer.flush().await {
        warn!(error = %err, "Store flush at shutdown failed.");
    }
    drop(store_writer);
    let _ = store_task.await;
    store.close().await;
    Ok(())
}

/// A replica's parts, gathered while the server starts and started once its addresses are
/// known (src/server/cluster).
struct Replica {
    store: crate::store::PgStore,
    /// Webhooks ring this; the poller waits on it while this replica leads.
    wake: Arc<tokio::sync::Notify>,
    /// A Git source, and the judge's input its poller feeds (both ends).
    git: Option<(
        GitSource,
        mpsc::Sender<SyncEvent>,
        mpsc::Receiver<SyncEvent>,
    )>,
    /// `--otelcol`, for the judge.
    otelcol: Option<Arc<crate::otelcol::Otelcol>>,
}

impl Replica {
    async fn start(
        self,
        id: String,
        opamp: SocketAddr,
        api: SocketAddr,
        app: Arc<AppState>,
        to_reconciler: mpsc::Sender<SyncEvent>,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        let member = cluster::Cluster::join(
            self.store,
            id,
            &opamp.to_string(),
            &api.to_string(),
            cluster::ClusterOptions::default(),
        )
        .await?;
        app.cluster.store(Some(member.clone()));
        tokio::spawn(member.clone().lead(self.wake.clone(), cancel.clone()));
        tokio::spawn(member.clone().heartbeat(app.clone(), cancel.clone()));
        if let Some((git, to_judge, judged)) = self.git {
            tokio::spawn(cluster::lead_rollouts(
                member.clone(),
                app.clone(),
                cancel.clone(),
            ));
            tokio::spawn(cluster::adopt_rollouts(
                member.clone(),
                app.clone(),
                cancel.clone(),
            ));
            tokio::spawn(cluster::judge(
                member.clone(),
                judged,
                to_reconciler.clone(),
                self.otelcol,
            ));
            tokio::spawn(cluster::follow(
                member.clone(),
                git.clone(),
                app,
                to_reconciler,
                cancel.clone(),
            ));
            tokio::spawn(cluster::relay_webhooks(
                member.clone(),
                self.wake.clone(),
                cancel.clone(),
            ));
            tokio::spawn(cluster::poll_while_leading(
                member,
                git,
                self.wake,
                to_judge,
                cancel.clone(),
            ));
        }
        Ok(())
    }
}

/// Run `work` on this thread while the runtime moves its other tasks elsewhere: a long plan or
/// step must not hold up the connections queued behind it. A single-threaded runtime (tests
/// with paused time) has nowhere to move them: it runs inline.
pub(crate) fn off_worker<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// Where local demo agents connect: the listener's address, with an unspecified IP replaced by
/// loopback.
fn loopback(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    #[test]
    fn log_colours_only_at_a_terminal_without_no_color() {
        assert!(super::log_colours(true, None));
        assert!(super::log_colours(true, Some(OsStr::new(""))));
        assert!(!super::log_colours(true, Some(OsStr::new("1"))));
        assert!(!super::log_colours(false, None));
    }
}

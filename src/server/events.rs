//! Events: what happened, for people. One type ([`Event`]) so that every kind has one stable
//! name (the API's `kind`, the `gitamp_events_total{kind}` label), one message and one log
//! level, and one path ([`AppState::emit`](super::state::AppState::emit)) that logs, counts,
//! keeps it in the bounded in-memory history and queues it for the store (so the history
//! survives a restart).
//!
//! Adding a kind: a variant here, its [`EventKind`] (name and place in [`EventKind::ALL`]), its
//! message and log level in [`Event::message`] and [`Event::log`]; then `emit` it.

use std::time::SystemTime;

use gitamp_core::ConfigHash;
use gitamp_opamp::Uid;
use gitamp_opamp::wire::uid_text;
use tracing::{debug, info, warn};

use super::state::{DiagnosticView, EventView, RevisionView};
use crate::store;

/// The kinds of [`Event`]: a bounded set, so it can label a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    RevisionAccepted,
    RevisionRejected,
    FetchError,
    FileSkipped,
    Connected,
    Disconnected,
    Pushed,
    Applied,
    Failed,
    RolledBack,
    Drifted,
    Conflict,
    RolloutHalted,
    RolloutCompleted,
    RolloutSuperseded,
    RolloutResumed,
    Webhook,
    SyncRequested,
    PackageOffered,
    Upgraded,
    UpgradeFailed,
    PackageStatusIgnored,
}

impl EventKind {
    /// Whether it is about the whole fleet rather than one agent or one replica's traffic:
    /// with several replicas, the leader alone stores and notifies these.
    pub fn fleet_wide(self) -> bool {
        matches!(
            self,
            EventKind::RevisionAccepted
                | EventKind::RevisionRejected
                | EventKind::FetchError
                | EventKind::FileSkipped
                | EventKind::RolloutHalted
                | EventKind::RolloutCompleted
                | EventKind::RolloutSuperseded
                | EventKind::RolloutResumed
        )
    }

    pub const ALL: [EventKind; 22] = [
        EventKind::RevisionAccepted,
        EventKind::RevisionRejected,
        EventKind::FetchError,
        EventKind::FileSkipped,
        EventKind::Connected,
        EventKind::Disconnected,
        EventKind::Pushed,
        EventKind::Applied,
        EventKind::Failed,
        EventKind::RolledBack,
        EventKind::Drifted,
        EventKind::Conflict,
        EventKind::RolloutHalted,
        EventKind::RolloutCompleted,
        EventKind::RolloutSuperseded,
        EventKind::RolloutResumed,
        EventKind::Webhook,
        EventKind::SyncRequested,
        EventKind::PackageOffered,
        EventKind::Upgraded,
        EventKind::UpgradeFailed,
        EventKind::PackageStatusIgnored,
    ];

    /// The stable name: the API's `kind` and `?kind=` filter and the metric label depend on it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RevisionAccepted => "revision-accepted",
            EventKind::RevisionRejected => "revision-rejected",
            EventKind::FetchError => "fetch-error",
            EventKind::FileSkipped => "file-skipped",
            EventKind::Connected => "connected",
            EventKind::Disconnected => "disconnected",
            EventKind::Pushed => "pushed",
            EventKind::Applied => "applied",
            EventKind::Failed => "failed",
            EventKind::RolledBack => "rolled-back",
            EventKind::Drifted => "drifted",
            EventKind::Conflict => "conflict",
            EventKind::RolloutHalted => "rollout-halted",
            EventKind::RolloutCompleted => "rollout-completed",
            EventKind::RolloutSuperseded => "rollout-superseded",
            EventKind::RolloutResumed => "rollout-resumed",
            EventKind::Webhook => "webhook",
            EventKind::SyncRequested => "sync-requested",
            EventKind::PackageOffered => "package-offered",
            EventKind::Upgraded => "upgraded",
            EventKind::UpgradeFailed => "upgrade-failed",
            EventKind::PackageStatusIgnored => "package-status-ignored",
        }
    }
}

/// Text an agent sent (an error, a conflict's detail) with the served revision's sensitive
/// values masked: the only way such text gets into an event, so no event can carry a secret
/// to the logs, the API or the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked(String);

impl Masked {
    pub fn new(text: &str, secrets: &[String]) -> Masked {
        Masked(gitamp_core::render::mask::mask_text(text, secrets))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A revision is served from now on.
    RevisionAccepted {
        revision: String,
        configurations: usize,
    },
    /// A revision failed validation; the last good one keeps serving.
    RevisionRejected {
        revision: String,
        errors: usize,
        /// The first error, `file:line: CODE message` (diagnostics never quote a sensitive
        /// value), so that a notification says why without a second look.
        first: Option<String>,
    },
    /// Compiling a revision panicked; it is rejected (kind `revision-rejected`).
    RevisionCrashed {
        revision: String,
        error: String,
    },
    /// The source could not fetch (the text is the source's, credentials already removed).
    FetchError {
        error: String,
    },
    /// The source left a file out of the snapshot.
    FileSkipped {
        path: String,
        reason: String,
    },
    Connected {
        agent: Uid,
    },
    Disconnected {
        agent: Uid,
    },
    /// A configuration's config was handed to an agent.
    Pushed {
        agent: Uid,
        configuration: Option<String>,
        hash: ConfigHash,
    },
    /// The config an agent last applied was handed back to it because `failed` failed
    /// (kind `pushed`).
    PushedRollback {
        agent: Uid,
        configuration: Option<String>,
        hash: ConfigHash,
        failed: ConfigHash,
    },
    /// An agent is in sync again.
    Applied {
        agent: Uid,
    },
    Failed {
        agent: Uid,
        error: Masked,
    },
    /// `detail` says what it runs instead and why.
    RolledBack {
        agent: Uid,
        detail: Masked,
    },
    Drifted {
        agent: Uid,
    },
    /// `detail` names the configurations that select it.
    Conflict {
        agent: Uid,
        detail: Masked,
    },
    RolloutHalted {
        configuration: String,
        reason: String,
    },
    /// Every agent of a rollout is admitted and none is still applying.
    RolloutCompleted {
        configuration: String,
        target: ConfigHash,
        synced: usize,
        failed: usize,
    },
    RolloutSuperseded {
        configuration: String,
        target: ConfigHash,
        by: ConfigHash,
    },
    /// An operator resumed a halted rollout (`POST /api/v1/configurations/{name}/resume`);
    /// `excused` agents had failed it.
    RolloutResumed {
        configuration: String,
        target: ConfigHash,
        excused: usize,
    },
    /// An operator asked for a fetch now (`POST /api/v1/sync`, `gitamp sync`).
    SyncRequested,
    /// An authenticated push webhook woke the poller.
    WebhookWake {
        provider: &'static str,
        git_ref: Option<String>,
        after: Option<String>,
    },
    WebhookPong {
        provider: &'static str,
    },
    WebhookIgnored {
        provider: &'static str,
        reason: String,
    },
    /// A package (an agent version) was offered to an agent; `rollback` when it is the version
    /// it ran before a failed upgrade.
    PackageOffered {
        agent: Uid,
        version: String,
        rollback: bool,
    },
    /// An agent runs the version its configuration pins.
    Upgraded {
        agent: Uid,
        version: String,
    },
    /// An agent reported InstallFailed for the pinned version (the agent's error).
    UpgradeFailed {
        agent: Uid,
        version: String,
        error: Masked,
    },
    /// A PackageStatuses report about an offer this server never made was ignored; nothing
    /// of it was recorded.
    PackageStatusIgnored {
        agent: Uid,
        all_hash: String,
    },
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::RevisionAccepted { .. } => EventKind::RevisionAccepted,
            Event::RevisionRejected { .. } | Event::RevisionCrashed { .. } => {
                EventKind::RevisionRejected
            }
            Event::FetchError { .. } => EventKind::FetchError,
            Event::FileSkipped { .. } => EventKind::FileSkipped,
            Event::Connected { .. } => EventKind::Connected,
            Event::Disconnected { .. } => EventKind::Disconnected,
            Event::Pushed { .. } | Event::PushedRollback { .. } => EventKind::Pushed,
            Event::Applied { .. } => EventKind::Applied,
            Event::Failed { .. } => EventKind::Failed,
            Event::RolledBack { .. } => EventKind::RolledBack,
            Event::Drifted { .. } => EventKind::Drifted,
            Event::Conflict { .. } => EventKind::Conflict,
            Event::RolloutHalted { .. } => EventKind::RolloutHalted,
            Event::RolloutCompleted { .. } => EventKind::RolloutCompleted,
            Event::RolloutSuperseded { .. } => EventKind::RolloutSuperseded,
            Event::RolloutResumed { .. } => EventKind::RolloutResumed,
            Event::SyncRequested => EventKind::SyncRequested,
            Event::PackageOffered { .. } => EventKind::PackageOffered,
            Event::Upgraded { .. } => EventKind::Upgraded,
            Event::UpgradeFailed { .. } => EventKind::UpgradeFailed,
            Event::PackageStatusIgnored { .. } => EventKind::PackageStatusIgnored,
            Event::WebhookWake { .. }
            | Event::WebhookPong { .. }
            | Event::WebhookIgnored { .. } => EventKind::Webhook,
        }
    }

    /// The agent it is about, if any.
    pub fn agent(&self) -> Option<&Uid> {
        match self {
            Event::Connected { agent }
            | Event::Disconnected { agent }
            | Event::Pushed { agent, .. }
            | Event::PushedRollback { agent, .. }
            | Event::Applied { agent }
            | Event::Failed { agent, .. }
            | Event::RolledBack { agent, .. }
            | Event::Drifted { agent }
            | Event::Conflict { agent, .. }
            | Event::PackageOffered { agent, .. }
            | Event::Upgraded { agent, .. }
            | Event::UpgradeFailed { agent, .. }
            | Event::PackageStatusIgnored { agent, .. } => Some(agent),
            _ => None,
        }
    }

    /// The message people read in the API.
    pub fn message(&self) -> String {
        match self {
            Event::RevisionAccepted {
                revision,
                configurations,
            } => format!("{revision} accepted: {configurations} configuration(s)"),
            Event::RevisionRejected {
                revision,
                errors,
                first,
            } => match first {
                Some(first) => {
                    format!("{revision} rejected with {errors} error(s); first: {first}")
                }
                None => format!("{revision} rejected with {errors} error(s)"),
            },
            Event::RevisionCrashed { revision, .. } => format!("{revision}: internal error"),
            Event::FetchError { error } => error.clone(),
            Event::FileSkipped { path, reason } => format!("{path}: {reason}"),
            Event::Connected { .. } => "Agent connected.".into(),
            Event::Disconnected { .. } => "Agent disconnected.".into(),
            Event::Pushed {
                configuration,
                hash,
                ..
            } => format!(
                "Configuration {} ({}) sent.",
                configuration.as_deref().unwrap_or("?"),
                hash.short()
            ),
            Event::PushedRollback {
                configuration,
                hash,
                failed,
                ..
            } => format!(
                "Rolled back to {} (the last config it applied): {} ({}) failed.",
                hash.short(),
                configuration.as_deref().unwrap_or("?"),
                failed.short()
            ),
            Event::Applied { .. } => "Agent is in sync.".into(),
            Event::Failed { error, .. } => format!("Agent failed to apply: {}", error.as_str()),
            Event::RolledBack { detail, .. } => format!("Agent {}", detail.as_str()),
            Event::Drifted { .. } => "Agent reports another config than it applied.".into(),
            Event::Conflict { detail, .. } => detail.as_str().to_string(),
            Event::RolloutHalted {
                configuration,
                reason,
            } => format!("Rollout of {configuration} halted: {reason}"),
            Event::RolloutCompleted {
                configuration,
                target,
                synced,
                failed,
            } => format!(
                "Rollout of {configuration} ({}) complete: {synced} agent(s) synced, {failed} \
                 failed.",
                target.short()
            ),
            Event::RolloutSuperseded {
                configuration,
                target,
                by,
            } => format!(
                "Rollout of {configuration} ({}) superseded by {}.",
                target.short(),
                by.short()
            ),
            Event::RolloutResumed {
                configuration,
                target,
                excused,
            } => format!(
                "Rollout of {configuration} ({}) resumed; {excused} failed agent(s) excused.",
                target.short()
            ),
            Event::SyncRequested => "Fetch requested: polling now".into(),
            Event::WebhookWake {
                provider,
                git_ref,
                after,
            } => format!(
                "{provider} push to {} ({}): polling now",
                git_ref.as_deref().unwrap_or("the tracked ref"),
                after.as_deref().unwrap_or("tip unknown"),
            ),
            Event::WebhookPong { provider } => format!("{provider} ping"),
            Event::PackageOffered {
                version, rollback, ..
            } => {
                if *rollback {
                    format!("Version {version} offered back (rollback of a failed upgrade).")
                } else {
                    format!("Version {version} offered.")
                }
            }
            Event::Upgraded { version, .. } => format!("Agent runs version {version}."),
            Event::UpgradeFailed { version, error, .. } => {
                format!(
                    "Agent failed to install version {version}: {}",
                    error.as_str()
                )
            }
            Event::PackageStatusIgnored { all_hash, .. } => {
                format!("PackageStatuses for an offer this server never made ({all_hash}) ignored.")
            }
            Event::WebhookIgnored { provider, reason } => {
                format!("{provider} webhook ignored: {reason}")
            }
        }
    }

    /// Log it. Revision, rollout and webhook-wake events keep the lines (and levels) they had
    /// before events were typed; per-agent events are routine (thousands in a reconnect storm)
    /// and fetch errors and skipped files are already warned about by the source, so those
    /// go out at debug.
    pub fn log(&self, record: &EventView) {
        match self {
            Event::RevisionAccepted {
                revision,
                configurations,
            } => info!(revision = %revision, configurations, "Serving revision."),
            Event::RevisionRejected {
                revision, errors, ..
            } => warn!(
                revision = %revision,
                errors,
                "Revision rejected; the last good revision keeps serving."
            ),
            Event::RevisionCrashed { revision, error } => warn!(
                revision = %revision,
                error = %error,
                "Compiling a revision panicked; it is rejected."
            ),
            Event::RolloutHalted {
                configuration,
                reason,
            } => warn!(configuration = %configuration, reason = %reason, "Rollout halted."),
            Event::RolloutSuperseded { .. }
            | Event::RolloutCompleted { .. }
            | Event::RolloutResumed { .. }
            | Event::SyncRequested => {
                info!(kind = %record.kind, "{}", record.message)
            }
            Event::WebhookWake {
                provider,
                git_ref,
                after,
            } => info!(provider, git_ref = ?git_ref, after = ?after, "webhook: waking the poller"),
            Event::WebhookIgnored { provider, reason } => {
                debug!(provider, %reason, "webhook ignored")
            }
            Event::UpgradeFailed { .. } | Event::PackageStatusIgnored { .. } => {
                warn!(kind = %record.kind, agent = ?record.agent, "{}", record.message)
            }
            _ => debug!(kind = %record.kind, agent = ?record.agent, "{}", record.message),
        }
    }

    /// The record the API serves and the store keeps, stamped now.
    pub fn record(&self) -> EventView {
        EventView {
            at: SystemTime::now(),
            agent: self.agent().map(uid_text),
            kind: self.kind().as_str().to_string(),
            message: self.message(),
        }
    }
}

/// The store's image of a record (the agent as UUID text, as the API filters it).
pub fn to_store(e: &EventView) -> store::EventRecord {
    store::EventRecord {
        time: store::to_ms(e.at),
        agent_uid: e.agent.clone(),
        kind: e.kind.clone(),
        message: e.message.clone(),
    }
}

/// Records read back from the store (newest first, as `Store::recent_events` returns them),
/// oldest first as the in-memory history keeps them.
pub fn from_store(records: Vec<store::EventRecord>) -> Vec<EventView> {
    records
        .into_iter()
        .rev()
        .map(|r| EventView {
            at: store::from_ms(r.time),
            agent: r.agent_uid,
            kind: r.kind,
            message: r.message,
        })
        .collect()
}

/// Revisions a previous run stored (newest first, as the store answers), oldest first for
/// [`AppState::restore_revisions`](super::state::AppState::restore_revisions). A row whose
/// diagnostics do not read back keeps its counts from its verdict alone: the history is for
/// people, and one unreadable row must not stop a start.
pub fn revisions_from_store(records: Vec<store::RevisionRecord>) -> Vec<RevisionView> {
    records
        .into_iter()
        .rev()
        .map(|r| {
            let diagnostics: Vec<DiagnosticView> =
                serde_json::from_value(r.diagnostics).unwrap_or_default();
            let errors = diagnostics.iter().filter(|d| d.severity == "error").count();
            RevisionView {
                at: store::from_ms(r.time),
                revision: r.revision,
                accepted: r.accepted,
                errors,
                warnings: diagnostics.len() - errors,
                diagnostics,
            }
        })
        .collect()
}

/// How many diagnostics of a rejected revision are logged: enough to act on, bounded so that a
/// broken repository cannot flood the logs (the status API and `gitamp status` have them all).
pub const LOGGED_DIAGNOSTICS: usize = 20;

/// Log why a revision is rejected, one warn line a diagnostic (`file:line:column:
/// error[CODE name]: message`, errors first), so that the logs alone say what to fix. They
/// need no masking: the core never quotes a parameter's value in a diagnostic, and the
/// collector's messages (`--otelcol`) are masked before they become diagnostics
/// (`tests/no_secret_in_logs.rs` rejects a revision and checks the output).
pub fn log_rejected_diagnostics(rejected: &gitamp_core::Rejected) {
    let diagnostics = &rejected.diagnostics;
    for d in diagnostics
        .errors()
        .chain(diagnostics.warnings())
        .take(LOGGED_DIAGNOSTICS)
    {
        warn!(revision = %rejected.revision, code = d.code, "{d}");
    }
    if let Some(more) = diagnostics.len().checked_sub(LOGGED_DIAGNOSTICS)
        && more > 0
    {
        warn!(
            revision = %rejected.revision,
            "… and {more} more diagnostic(s) (`gitamp status` lists them all)."
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use gitamp_opamp::fleet::Fleet;

    use super::*;
    use crate::server::state::AppState;
    use crate::store::{SqliteStore, Store, StoreWriter, WriterOptions};

    /// A stored revision row reads back with the diagnostics the core wrote, codes this
    /// version does not know included, oldest first.
    #[test]
    fn stored_revisions_read_back_oldest_first_with_their_diagnostics() {
        let loc = gitamp_core::Location {
            file: "configurations/broken.yaml".into(),
            line: 10,
            column: 18,
        };
        let core = gitamp_core::Diagnostics(vec![gitamp_core::Diagnostic {
            code: "E012",
            name: "unknown-destination",
            severity: gitamp_core::Severity::Error,
            location: loc,
            message: "no such destination".into(),
        }]);
        let mut future = serde_json::to_value(&core).unwrap();
        future[0]["code"] = "E999".into();
        let rows = vec![
            store::RevisionRecord {
                revision: "newer".into(),
                time: 2_000,
                accepted: false,
                diagnostics: future,
                source_error: None,
            },
            store::RevisionRecord {
                revision: "older".into(),
                time: 1_000,
                accepted: true,
                diagnostics: serde_json::json!("not a list"),
                source_error: None,
            },
        ];
        let views = revisions_from_store(rows);
        assert_eq!(views[0].revision, "older");
        assert!(views[0].diagnostics.is_empty());
        assert_eq!(views[1].revision, "newer");
        assert_eq!((views[1].errors, views[1].warnings), (1, 0));
        let d = &views[1].diagnostics[0];
        assert_eq!(d.code, "E999");
        assert_eq!(
            (d.location.file.as_str(), d.location.line, d.location.column),
            ("configurations/broken.yaml", 10, 18)
        );
        assert_eq!(views[1].at, UNIX_EPOCH + Duration::from_secs(2));
    }

    /// `gitamp_events_total{kind}` as the recorder renders it now.
    fn counted(app: &AppState, kind: &str) -> f64 {
        let prefix = format!("{}{{kind=\"{kind}\"}} ", crate::telemetry::EVENTS);
        app.metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.parse().ok()))
            .unwrap_or(0.0)
    }

    #[test]
    fn kinds_are_distinct_and_stable() {
        let names: std::collections::BTreeSet<_> =
            EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), EventKind::ALL.len());
        let rollback = Event::PushedRollback {
            agent: [1; 16],
            configuration: Some("linux".into()),
            hash: ConfigHash([0xaa; 32]),
            failed: ConfigHash([0xbb; 32]),
        };
        assert_eq!(rollback.kind().as_str(), "pushed");
        assert_eq!(
            rollback.message(),
            "Rolled back to aaaaaaaaaaaa (the last config it applied): linux (bbbbbbbbbbbb) failed."
        );
        let failed = Event::Failed {
            agent: [1; 16],
            error: Masked::new("token hunter2 refused", &["hunter2".to_string()]),
        };
        assert!(
            !failed.message().contains("hunter2"),
            "{}",
            failed.message()
        );
    }

    /// One emit counts, keeps and stores the event; what the store keeps reads back as the
    /// same record (the restart path).
    #[tokio::test]
    async fn emit_counts_keeps_and_stores() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SqliteStore::open(dir.path()).await.expect("store"));
        let (writer, task) = StoreWriter::spawn(store.clone(), WriterOptions::default());
        let app = AppState::new(Arc::new(Fleet::new()), crate::telemetry::install());
        app.store_events_in(Some(writer.clone()));
        let before = counted(&app, "rollout-superseded");

        app.emit(Event::RolloutSuperseded {
            configuration: "linux".into(),
            target: ConfigHash([1; 32]),
            by: ConfigHash([2; 32]),
        });
        app.emit(Event::Connected { agent: [3; 16] });

        // Other tests in this process may emit too: at least ours was counted.
        assert!(counted(&app, "rollout-superseded") >= before + 1.0);
        let mut kept: Vec<EventView> = app
            .history
            .lock()
            .expect("history")
            .events
            .newest_first()
            .cloned()
            .collect();
        kept.reverse();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].kind, "rollout-superseded");
        assert_eq!(
            kept[0].message,
            "Rollout of linux (010101010101) superseded by 020202020202."
        );
        assert_eq!(kept[1].agent.as_deref(), Some(uid_text(&[3; 16]).as_str()));

        writer.flush().await.expect("flush");
        let stored = store.recent_events(None, 10).await.expect("events");
        assert_eq!(
            stored,
            kept.iter().rev().map(to_store).collect::<Vec<_>>(),
            "newest first, as recorded"
        );
        let restored = from_store(stored);
        assert_eq!(
            restored.iter().map(to_store).collect::<Vec<_>>(),
            kept.iter().map(to_store).collect::<Vec<_>>(),
            "read back oldest first"
        );
        app.store_events_in(None);
        drop(writer);
        task.await.expect("writer stops");
    }
}

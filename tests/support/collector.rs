//! Real OpenTelemetry Collectors under the collector's own OpAMP supervisor, as test peers.
//!
//! Each [`Supervised`] is one `opampsupervisor` process (in a process group of its own, so the
//! collector it starts is stopped with it) with its own storage folder, labels, and an OTLP/HTTP
//! port handed to the collector through its environment (`GITAMP_TEST_OTLP_PORT`, which the
//! `collector-fleet` fixture's source reads), so several collectors run side by side.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::lossy_lines;
use super::poll::wait_for_exit;
use super::server::free_port;

/// How long a supervisor waits for its collector to report healthy after a new config before it
/// reports FAILED. A collector starts in well under a second on an idle machine; two busy cores
/// running cargo, Go builds and several collectors can take many times that.
///
/// This supervisor (v0.158) reports APPLIED only when this timer fires with the collector
/// healthy, so it is also how long every apply takes; a collector that exits on a config it
/// refuses is reported FAILED at once.
pub const CONFIG_APPLY_TIMEOUT: &str = "10s";

/// One supervised collector. The supervisor's `agent.args` switch the collector's own metrics
/// endpoint off (it listens on port 8888 by default, so a second collector on the host, even
/// while it bootstraps, would fail to start); its logs are at debug level so a test can see
/// every remote config it received.
pub struct Supervised {
    pub name: String,
    pub otlp_port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// Every line the supervisor (and, through it, the collector) printed.
    pub logs: Arc<Mutex<Vec<String>>>,
    endpoint: String,
    labels: Vec<(String, String)>,
    /// Reports its own metrics (`reports_own_metrics`), exported every second.
    own_metrics: bool,
    /// Takes the server's `opamp` offers (`accepts_opamp_connection_settings`): it replaces
    /// its connection on each.
    accepts_connection_settings: bool,
}

impl Supervised {
    /// Start a supervisor that connects to `endpoint` (`ws://…/v1/opamp` or `http://…`) and
    /// describes its collector with `labels` (non-identifying attributes, plus `host.name`).
    pub fn start(endpoint: &str, name: &str, labels: &[(&str, &str)]) -> Supervised {
        Supervised::start_with(endpoint, name, labels, false)
    }

    /// A supervisor that accepts the server's `opamp` connection-settings offers: it replaces
    /// its server settings with each one and reconnects.
    pub fn start_accepting_connection_settings(
        endpoint: &str,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Supervised {
        let mut s = Supervised::new(endpoint, name, labels, false);
        s.accepts_connection_settings = true;
        s.spawn();
        s
    }

    /// A collector that reports its own metrics to whatever the server offers, every second
    /// (`OTEL_METRIC_EXPORT_INTERVAL`, which the collector's periodic reader honours). Until an
    /// offer arrives its own Prometheus endpoint listens on a free port (a config file merged
    /// before the offer's), never on the shared default :8888.
    pub fn start_reporting_own_metrics(
        endpoint: &str,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Supervised {
        Supervised::start_with(endpoint, name, labels, true)
    }

    fn start_with(
        endpoint: &str,
        name: &str,
        labels: &[(&str, &str)],
        own_metrics: bool,
    ) -> Supervised {
        let mut s = Supervised::new(endpoint, name, labels, own_metrics);
        s.spawn();
        s
    }

    fn new(endpoint: &str, name: &str, labels: &[(&str, &str)], own_metrics: bool) -> Supervised {
        let dir = tempfile::Builder::new()
            .prefix(&format!("gitamp-sup-{name}-"))
            .tempdir()
            .expect("tempdir");
        Supervised {
            name: name.to_string(),
            otlp_port: free_port(),
            dir,
            child: None,
            logs: Arc::new(Mutex::new(Vec::new())),
            endpoint: endpoint.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            own_metrics,
            accepts_connection_settings: false,
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("supervisor.yaml")
    }

    /// The supervisor's config: everything gitamp needs it to do, from the test's values.
    /// Written as JSON, which is YAML too.
    pub fn config_yaml(&self) -> String {
        let mut attributes = serde_json::Map::new();
        attributes.insert("host.name".into(), self.name.clone().into());
        for (k, v) in &self.labels {
            attributes.insert(k.clone(), v.clone().into());
        }
        let mut config = serde_json::json!({
            "server": { "endpoint": self.endpoint },
            "capabilities": {
                "accepts_remote_config": true,
                "reports_remote_config": true,
                "reports_effective_config": true,
                "reports_health": true,
                "reports_heartbeat": true,
                "reports_own_metrics": false,
                "accepts_opamp_connection_settings": self.accepts_connection_settings,
            },
            "agent": {
                "executable": super::otelcol(),
                "config_apply_timeout": CONFIG_APPLY_TIMEOUT,
                "args": ["--set=service.telemetry.metrics.level=none"],
                "env": { "GITAMP_TEST_OTLP_PORT": self.otlp_port.to_string() },
                "description": {
                    "identifying_attributes": { "service.name": "otelcol-gitamp-test" },
                    "non_identifying_attributes": attributes,
                },
            },
            "storage": { "directory": self.dir.path().join("storage") },
            "telemetry": { "logs": { "level": "debug" } },
        });
        if self.own_metrics {
            let local = self.dir.path().join("telemetry-port.yaml");
            let port = free_port();
            let _ = std::fs::write(
                &local,
                format!(
                    "service:\n  telemetry:\n    metrics:\n      readers:\n        - pull:\n            exporter:\n              prometheus:\n                host: 127.0.0.1\n                port: {port}\n"
                ),
            );
            config["capabilities"]["reports_own_metrics"] = true.into();
            config["agent"]["args"] = serde_json::json!([]);
            config["agent"]["env"]["OTEL_METRIC_EXPORT_INTERVAL"] = "1000".into();
            config["agent"]["config_files"] = serde_json::json!([local, "$OWN_TELEMETRY_CONFIG"]);
        }
        serde_json::to_string_pretty(&config).unwrap_or_default()
    }

    fn spawn(&mut self) {
        std::fs::write(self.config_path(), self.config_yaml()).expect("write supervisor config");
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(super::supervisor())
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("opampsupervisor starts");
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = self.logs.clone();
            std::thread::spawn(move || {
                for line in lossy_lines(pipe) {
                    if let Ok(mut l) = logs.lock()
                        && l.len() < 20_000
                    {
                        l.push(line);
                    }
                }
            });
        }
        self.child = Some(child);
    }

    /// Stop the supervisor and its collector (SIGTERM to the group, then SIGKILL).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = format!("-{}", child.id());
        let signal = |sig: &str| {
            // The group may be gone already: nothing to report then.
            let _ = Command::new("kill")
                .args([sig, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        signal("-TERM");
        let _ = wait_for_exit(&mut child, Duration::from_secs(5));
        signal("-KILL");
        let _ = child.wait();
    }

    /// Start it again on the same storage (same instance UID, last config kept).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Does the collector's OTLP/HTTP receiver (the port its config names) accept a request?
    /// Proves the collector runs the config gitamp sent, not only that the supervisor said so.
    pub async fn otlp_accepts(&self) -> bool {
        let url = format!("http://127.0.0.1:{}/v1/logs", self.otlp_port);
        let sent = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(r#"{"resourceLogs":[]}"#)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        sent.is_ok_and(|r| r.status().is_success())
    }

    pub fn logs(&self) -> String {
        self.logs.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// How many times it connected to the OpAMP server (its info log says so on each).
    pub fn connections(&self) -> usize {
        self.logs.lock().map_or(0, |l| {
            l.iter()
                .filter(|line| line.contains("Connected to the OpAMP server."))
                .count()
        })
    }

    /// The collector's own config file as the supervisor last wrote it.
    pub fn effective_file(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("storage/effective.yaml")).ok()
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The agent in a status API agent list whose `host.name` label is `name`.
pub fn find_agent<'a>(items: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    items
        .iter()
        .find(|a| a["labels"]["host.name"].as_str() == Some(name))
}

/// Remove a whole folder tree, ignoring errors (test clean-up).
pub fn remove(path: &Path) {
    let _ = std::fs::remove_dir_all(path);
}

impl Supervised {
    /// The hashes of the remote configs the supervisor received, in order (from its debug log).
    pub fn received_hashes(&self) -> Vec<String> {
        let logs = self.logs.lock().map(|l| l.clone()).unwrap_or_default();
        logs.iter()
            .filter(|l| l.contains("Received remote config from server"))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["hash"].as_str().map(str::to_string))
            .collect()
    }

    /// The collector process the supervisor runs, if any (its child).
    pub fn collector_pid(&self) -> Option<u32> {
        let child = self.child.as_ref()?;
        let out = Command::new("pgrep")
            .args(["-P", &child.id().to_string()])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

//! The opamp-go client library as a test peer: `tests/opamp-go`'s `opamp-driver`, one process
//! per agent, steered through its stdin and observed through the JSON event lines it prints.

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::lossy_lines;
use super::poll::{eventually, wait_for_exit};

/// One opamp-go agent.
pub struct GoAgent {
    pub uid: String,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Every event line, parsed; unparsable lines are kept as `{"event":"unparsed","line":…}`.
    events: Arc<Mutex<Vec<serde_json::Value>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl GoAgent {
    /// Start a driver connecting to `endpoint` with `labels` and extra flags (`--gzip`,
    /// `--fail-hash H`, ...). Its instance UID is fixed up front so the test can find it.
    pub fn start(endpoint: &str, labels: &[(&str, &str)], flags: &[&str]) -> GoAgent {
        let uid = uuid::Uuid::new_v4().hyphenated().to_string();
        let mut cmd = Command::new(super::opamp_go_driver());
        cmd.args([
            "--endpoint",
            endpoint,
            "--uid",
            &uid,
            "--poll-interval",
            "500ms",
        ]);
        for (k, v) in labels {
            cmd.arg("--label").arg(format!("{k}={v}"));
        }
        let mut child = cmd
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("opamp-driver starts");
        let events = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let ev = events.clone();
        std::thread::spawn(move || {
            for line in lossy_lines(out) {
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({"event": "unparsed", "line": line}));
                if let Ok(mut e) = ev.lock() {
                    e.push(v);
                }
            }
        });
        let err = child.stderr.take().expect("stderr");
        let se = stderr.clone();
        std::thread::spawn(move || {
            for line in lossy_lines(err) {
                if let Ok(mut e) = se.lock()
                    && e.len() < 10_000
                {
                    e.push(line);
                }
            }
        });
        GoAgent {
            uid,
            stdin: child.stdin.take(),
            child,
            events,
            stderr,
        }
    }

    /// Send one stdin command (`fail <hex>`, `unhealthy msg`, `label k=v`, `stop`, ...).
    pub fn command(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Events of one kind.
    pub fn events_of(&self, kind: &str) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == kind)
            .collect()
    }

    /// Remote configs received with this hash.
    pub fn received(&self, hash_hex: &str) -> usize {
        self.events_of("remote_config")
            .iter()
            .filter(|e| e["hash"].as_str() == Some(hash_hex))
            .count()
    }

    /// Did it report `status` (APPLIED, FAILED, ...) for `hash_hex`?
    pub fn reported(&self, status: &str, hash_hex: &str) -> bool {
        self.events_of("status")
            .iter()
            .any(|e| e["status"] == status && e["hash"].as_str() == Some(hash_hex))
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Send a command and wait until the driver has carried it out (it prints
    /// `{"event":"command","command":<line>}` after each one it handled).
    pub async fn command_acked(&mut self, line: &str) {
        let before = self.acks(line);
        self.command(line);
        eventually(
            Duration::from_secs(30),
            &format!("the driver handles {line:?}"),
            async || {
                let n = self.acks(line);
                if n > before {
                    Ok(())
                } else {
                    Err(format!("no ack yet; stderr:\n{}", self.stderr()))
                }
            },
        )
        .await;
    }

    fn acks(&self, line: &str) -> usize {
        self.events_of("command")
            .iter()
            .filter(|e| e["command"].as_str() == Some(line))
            .count()
    }

    /// Ask it to stop, then make sure it has.
    pub fn stop(&mut self) {
        self.command("stop");
        if wait_for_exit(&mut self.child, Duration::from_secs(3)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for GoAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

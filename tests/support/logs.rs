//! The log lines of code running in the test's own process: a tracing subscriber (installed
//! once per test binary) that keeps every line, so an in-process test can wait for a log line
//! the way process tests read the server's output.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Start keeping this process's log lines (`gitamp=debug`); idempotent.
pub fn capture() {
    SINK.get_or_init(|| {
        let sink = Sink::default();
        let writer = sink.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,gitamp=debug"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        sink
    });
}

/// Every line logged since [`capture`].
pub fn lines() -> Vec<String> {
    let Some(sink) = SINK.get() else {
        panic!("support::logs::capture() was not called")
    };
    let bytes = sink.0.lock().map(|b| b.clone()).unwrap_or_default();
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::to_string)
        .collect()
}

/// How many logged lines contain every one of `parts`.
pub fn count(parts: &[&str]) -> usize {
    lines()
        .iter()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

//! The one polling helper. Tests wait for an observed state, never for wall-clock time: a check
//! returns `Some`/`Ok` when the awaited state is there, `None`/`Err(observation)` otherwise, and
//! a timeout (a generous upper bound, never a speed assertion) fails with what was awaited and
//! the last observation.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// How often a check runs.
pub const POLL: Duration = Duration::from_millis(50);

/// What one check observed: the awaited value, or a description of what was seen instead.
pub trait Observed<T> {
    fn observed(self) -> Result<T, String>;
}

impl<T> Observed<T> for Option<T> {
    fn observed(self) -> Result<T, String> {
        self.ok_or_else(|| "not yet (the check returned None)".to_string())
    }
}

impl<T, E: Debug> Observed<T> for Result<T, E> {
    fn observed(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// Run `check` every [`POLL`] until it observes the awaited state; panic after `timeout` naming
/// `what` and the last observation.
pub async fn eventually<T, C: Observed<T>>(
    timeout: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> C,
) -> T {
    let start = Instant::now();
    loop {
        let last = match check().await.observed() {
            Ok(v) => return v,
            Err(last) => last,
        };
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last observed: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for code without an async runtime (blocking the calling thread).
pub fn eventually_blocking<T, C: Observed<T>>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> C,
) -> T {
    let start = Instant::now();
    loop {
        let last = match check().observed() {
            Ok(v) => return v,
            Err(last) => last,
        };
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last observed: {last}");
        }
        std::thread::sleep(POLL);
    }
}

/// Wait up to `timeout` for `child` to exit (polling its status); `None` if it still runs.
pub fn wait_for_exit(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

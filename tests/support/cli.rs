//! The `gitamp` binary as a command: one way to run it, with the caller's gitamp settings
//! (`GITAMP_*`, `NO_COLOR`) cleared so a developer's shell cannot change a test's outcome.

use std::path::Path;
use std::process::{Command, Output};

use super::workspace;

/// Variables of the caller's environment a test must not inherit.
const CLEARED: &[&str] = &[
    "GITAMP_OTELCOL",
    "GITAMP_API_TOKEN",
    "GITAMP_SERVER",
    "GITAMP_REPO",
    "NO_COLOR",
];

/// `gitamp` in the workspace with a clean environment; add arguments, variables, a folder.
pub fn gitamp_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gitamp"));
    cmd.current_dir(workspace());
    for var in CLEARED {
        cmd.env_remove(var);
    }
    cmd
}

/// [`gitamp_command`] for an async test whose server runs on the same runtime (a blocking
/// `output()` would stall it).
pub fn gitamp_async() -> tokio::process::Command {
    tokio::process::Command::from(gitamp_command())
}

/// Run `gitamp args` in the workspace.
pub fn gitamp(args: &[&str]) -> Output {
    gitamp_in(&workspace(), args, &[])
}

/// Run `gitamp args` in `dir` with extra variables.
pub fn gitamp_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    gitamp_command()
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run gitamp {args:?}: {e}"))
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code, stdout and stderr, for an assertion's message.
pub fn explain(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    )
}

/// stdout as JSON, or a failure showing the whole output.
pub fn json_of(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("output is not JSON ({e}):\n{}", explain(o)))
}

/// Run `gitamp args` in the workspace with extra variables.
pub fn gitamp_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    gitamp_in(&workspace(), args, env)
}

/// Run `gitamp args` in `dir`.
pub fn gitamp_at(dir: &Path, args: &[&str]) -> Output {
    gitamp_in(dir, args, &[])
}

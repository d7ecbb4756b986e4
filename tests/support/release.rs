//! `scripts/release.sh` on the test build of `gitamp` (`--binary`: a release build would take
//! minutes), and what the release's files are called.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use super::workspace;

/// The target every release archive is named for.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// The crate's version: what the release is named after.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// `gitamp-<version>-x86_64-unknown-linux-gnu`: the archive's stem and its one folder.
pub fn release_name() -> String {
    format!("gitamp-{}-{TARGET}", version())
}

/// Run `scripts/release.sh --binary <test gitamp> --out out` with extra variables and arguments.
pub fn run_release(out: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new("bash")
        .arg(workspace().join("scripts/release.sh"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_gitamp"))
        .arg("--out")
        .arg(out)
        .args(args)
        .env_remove("GITAMP_GLIBC_MAX")
        .env_remove("SOURCE_DATE_EPOCH")
        .envs(env.iter().copied())
        // The script must not depend on where it is started from.
        .current_dir(std::env::temp_dir())
        .output()
        .expect("bash runs scripts/release.sh")
}

/// One packaged release per test binary, in the target's temporary folder (strip and gzip of
/// the debug binary take seconds; every test that needs a release shares this one). The
/// folder is named after the test binary and made anew by each run, so runs leave one copy.
pub fn packaged() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("release-{}", env!("CARGO_CRATE_NAME")));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let out = run_release(&dir, &[], &[]);
        assert!(
            out.status.success(),
            "scripts/release.sh failed:\n{}",
            super::cli::explain(&out)
        );
        dir
    })
}

//! Which gitamp this is: version, commit and commit date, recorded by `build.rs` at build time.
//! One home for `gitamp --version`, the `gitamp_build_info` metric and `/api/v1/status`.

/// The crate's version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit built from, abbreviated to 12 hex digits, or `unknown` (no Git at build time).
pub const COMMIT: &str = env!("GITAMP_COMMIT");
/// The commit's date (`YYYY-MM-DD`), or `unknown`.
pub const COMMIT_DATE: &str = env!("GITAMP_COMMIT_DATE");

/// `0.1.0 (commit 0123456789ab, 2026-12-04)`: what `gitamp --version` prints after the name.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("GITAMP_COMMIT"),
    ", ",
    env!("GITAMP_COMMIT_DATE"),
    ")"
);

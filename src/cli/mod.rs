//! The command-line interface: one module per subcommand, each with its `Args` and `run`.
//!
//! Exit codes: 0 success (valid / nothing to change), 1 invalid input (a repository with
//! errors), 2 usage or I/O error; `reconcile --dry-run` adds 3 (changes pending).

pub mod agents;
pub mod duration;
pub mod fsread;
pub mod reconcile;
pub mod render;
pub mod serve;
pub mod status;
pub mod validate;

/// Process exit codes shared by every subcommand.
pub mod exit {
    pub const OK: u8 = 0;
    pub const INVALID: u8 = 1;
    pub const ERROR: u8 = 2;
    pub const CHANGES_PENDING: u8 = 3;
}

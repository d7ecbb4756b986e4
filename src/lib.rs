//! gitamp: keep a fleet of OpenTelemetry collectors in step with a Git repository.
//!
//! The pure core (load, validate, render, plan) is the `gitamp-core` crate and the OpAMP
//! protocol side is `gitamp-opamp`; this crate is the shell that moves bytes and owns tasks:
//! sources (Git, folder, webhooks), the store, the status API, the reconciler loop and the CLI.

// Non-test code must not panic on input; tests may (clippy.toml: allow-unwrap-in-tests).
#![warn(clippy::unwrap_used)]

pub mod api;
pub mod bench;
pub mod build_info;
pub mod cli;
pub mod embedded;
pub mod otelcol;
pub mod secret;
pub mod server;
pub mod source;
pub mod store;
pub mod telemetry;

//! gitamp's OpAMP server side, in layers that depend only downwards:
//!
//! 1. protocol messages ([`proto`]), WebSocket framing ([`frame`]), what goes out encoded once
//!    ([`wire`]) and what agents report as plain data ([`report`]);
//! 2. each WebSocket connection's outbound queue ([`outbox`]);
//! 3. the fleet registry ([`fleet`]): reports and delivery facts per agent;
//! 4. per-message session rules ([`session`]);
//! 5. the WebSocket + HTTP transports ([`server`], on our own RFC 6455 codec: [`websocket`]).
#![warn(missing_docs)]

/// OpAMP messages generated at build time from `proto/opamp.proto` and
/// `proto/anyvalue.proto` (package `opamp.proto`). `bytes` fields are `bytes::Bytes`
/// and map fields are `BTreeMap` (deterministic encoding).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/opamp.proto.rs"));
}

pub mod fleet;
pub mod frame;
pub mod offers;
pub mod otlp;
pub mod outbox;
pub mod packages;
pub mod plan_wait;
pub mod report;
mod ser;
pub mod session;
pub mod telemetry;
mod transport;
pub mod wire;

/// The server entry points: [`server::router`] and [`server::serve`].
pub mod server {
    pub use crate::transport::{
        DEFAULT_HEADER_READ_TIMEOUT, OpampSettings, ServeOptions, TlsConfig, TlsError, router,
        serve, serve_with, spawn_sweeper,
    };
}

/// The server's WebSocket codec (handshake and frames), public for the fuzz targets.
pub use transport::websocket;

pub use fleet::{AgentSnapshot, Clock, Delivery, Fleet, FleetEvent, Sent};
pub use plan_wait::PlanMark;
pub use server::OpampSettings;
pub use wire::{RemoteConfig, Uid};

// The simulated agent/client lives in `src/agent/` (owned by another engineer):
pub mod agent;

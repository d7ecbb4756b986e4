//! gitamp's OpAMP server side: protocol messages ([`proto`]), WebSocket framing
//! ([`frame`]), the fleet registry ([`fleet`]), per-message session rules
//! ([`session`]), each WebSocket connection's outbound queue ([`outbox`]) and the
//! WebSocket + HTTP transports ([`server`], on our own RFC 6455 codec: [`websocket`]).

/// OpAMP messages generated at build time from `proto/opamp.proto` and
/// `proto/anyvalue.proto` (package `opamp.proto`). `bytes` fields are `bytes::Bytes`
/// and map fields are `BTreeMap` (deterministic encoding).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/opamp.proto.rs"));
}

pub mod fleet;
pub mod frame;
pub mod outbox;
pub mod session;
mod transport;

/// The server entry points: [`server::router`] and [`server::serve`].
pub mod server {
    pub use crate::transport::{
        DEFAULT_HEADER_READ_TIMEOUT, OpampSettings, ServeOptions, TlsConfig, TlsError, router,
        serve, serve_with, spawn_sweeper,
    };
}

/// The server's WebSocket codec (handshake and frames), public for the fuzz targets.
pub use transport::websocket;

pub use fleet::{AgentSnapshot, DesiredConfig, Fleet, FleetEvent, Uid};
pub use server::OpampSettings;

// The simulated agent/client lives in `src/agent/` (owned by another engineer):
pub mod agent;

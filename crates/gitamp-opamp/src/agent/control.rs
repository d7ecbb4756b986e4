//! What the driver and the WebSocket client share: connection options and the handle's
//! requests to a running agent (its own module, so neither depends on the other for them).

use std::net::IpAddr;
use std::time::Duration;

/// WebSocket connection options.
#[derive(Clone, Debug)]
pub struct WsOptions {
    /// Local source address to bind before connecting (e.g. 127.0.0.5): spreading agents over
    /// several loopback addresses keeps each under the ephemeral-port limit.
    pub local_ip: Option<IpAddr>,
    /// Connect + upgrade timeout.
    pub connect_timeout: Duration,
    /// Wait before reconnecting after a failure or a server close.
    pub reconnect_delay: Duration,
    /// Extra upgrade request headers (e.g. `Authorization`).
    pub headers: Vec<(String, String)>,
}

impl Default for WsOptions {
    fn default() -> Self {
        WsOptions {
            local_ip: None,
            connect_timeout: Duration::from_secs(10),
            reconnect_delay: Duration::from_millis(200),
            headers: Vec::new(),
        }
    }
}

/// Requests from the handle to the running agent.
#[derive(Debug)]
pub(crate) enum Control {
    InjectGap,
    HeartbeatNow,
    /// Drop the connection without agent_disconnect (a network blip), then reconnect.
    Reconnect,
    /// Send agent_disconnect, close, end.
    Stop,
}

//! What the driver and the WebSocket client share: connection options and the handle's
//! requests to a running agent (its own module, so neither depends on the other for them).

use std::net::IpAddr;
use std::sync::Arc;
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
    /// Other servers (`ws://` URLs) of the same fleet: when the connection dies or cannot be
    /// made, the agent tries the next one (client-side failover, as agents behind a DNS name
    /// with several addresses do), cycling back to its own URL after the last.
    pub failover: Arc<[String]>,
    /// Where in `failover` this agent starts (its index, say): agents of one dead server then
    /// spread over the others instead of all landing on the next.
    pub failover_offset: usize,
}

impl WsOptions {
    /// The URL of the `attempt`-th server tried, `url` being the agent's own (attempt 0).
    pub(crate) fn server<'a>(&'a self, url: &'a str, attempt: usize) -> &'a str {
        let others = self.failover.len();
        match attempt % (others + 1) {
            0 => url,
            k => &self.failover[(k - 1 + self.failover_offset) % others],
        }
    }
}

impl Default for WsOptions {
    fn default() -> Self {
        WsOptions {
            local_ip: None,
            connect_timeout: Duration::from_secs(10),
            reconnect_delay: Duration::from_millis(200),
            headers: Vec::new(),
            failover: Arc::from([]),
            failover_offset: 0,
        }
    }
}

/// Requests from the handle to the running agent.
#[derive(Debug)]
pub(crate) enum Control {
    InjectGap,
    HeartbeatNow,
    /// Report this health (`ComponentHealth.healthy`) now.
    SetHealthy(bool),
    /// Drop the connection without agent_disconnect (a network blip), then reconnect.
    Reconnect,
    /// Send agent_disconnect, close, end.
    Stop,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_cycles_from_the_agents_own_server_through_the_others() {
        let others: Arc<[String]> = ["b", "c", "d"].map(String::from).into();
        let order = |offset| {
            let o = WsOptions {
                failover: others.clone(),
                failover_offset: offset,
                ..WsOptions::default()
            };
            (0..5)
                .map(|a| o.server("a", a).to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(order(0), ["a", "b", "c", "d", "a"]);
        // Agents with consecutive offsets try different servers first.
        assert_eq!(order(1), ["a", "c", "d", "b", "a"]);
        assert_eq!(order(2), ["a", "d", "b", "c", "a"]);
        assert_eq!(WsOptions::default().server("a", 3), "a");
    }
}

//! Runs a [`SimAgent`] over a transport and gives the caller an [`AgentHandle`] to watch and
//! steer it.
//!
//! The handle exists before the task runs ([`prepare_agent`]), so [`super::run_fleet`] can hand
//! out every handle at once and start the agents at a ramp rate.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::control::{Control, WsOptions};
use super::http::{HttpError, HttpPool};
use super::{AgentState, SimAgent, ws};

/// How an agent reaches the server.
#[derive(Clone, Debug)]
pub enum ClientTransport {
    /// One WebSocket connection per agent.
    WebSocket(WsOptions),
    /// One POST per message over a keep-alive pool that many agents may share.
    Http(Arc<HttpPool>),
}

/// Watches and steers one running agent. Dropping it does not stop the agent; call
/// [`AgentHandle::stop`].
#[derive(Clone, Debug)]
pub struct AgentHandle {
    state: watch::Receiver<AgentState>,
    control: mpsc::UnboundedSender<Control>,
}

impl AgentHandle {
    /// A copy of the agent's observable state now.
    pub fn state(&self) -> AgentState {
        self.state.borrow().clone()
    }

    /// The instance uid in use now.
    pub fn instance_uid(&self) -> Bytes {
        self.state.borrow().instance_uid.clone()
    }

    /// Reads the agent's state in place: no copy and no new receiver, for a load generator
    /// that looks at tens of thousands of agents several times a second.
    /// Do not hold it across an `.await`: the agent waits for it to update its state.
    pub fn state_ref(&self) -> watch::Ref<'_, AgentState> {
        self.state.borrow()
    }

    /// A receiver that wakes on every state change.
    pub fn subscribe(&self) -> watch::Receiver<AgentState> {
        self.state.clone()
    }

    /// Waits until `pred` holds; on timeout returns the last state as the error, so a test
    /// can print what the agent did see.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&AgentState) -> bool,
    ) -> Result<AgentState, Box<AgentState>> {
        let mut rx = self.state.clone();
        let res = tokio::time::timeout(timeout, async {
            match rx.wait_for(|s| pred(s)).await {
                Ok(s) => Some(s.clone()),
                Err(_) => None,
            }
        })
        .await;
        match res {
            Ok(Some(s)) => Ok(s),
            _ => Err(Box::new(self.state())),
        }
    }

    /// The next message skips a sequence number.
    pub fn inject_sequence_gap(&self) {
        let _ = self.control.send(Control::InjectGap);
    }

    /// Sends a heartbeat (HTTP: a poll) now instead of at the next interval.
    pub fn heartbeat_now(&self) {
        let _ = self.control.send(Control::HeartbeatNow);
    }

    /// Reports `healthy` (and from now on in every full report), at once.
    pub fn set_healthy(&self, healthy: bool) {
        let _ = self.control.send(Control::SetHealthy(healthy));
    }

    /// WebSocket: drops the connection without agent_disconnect and reconnects, keeping all
    /// agent state. HTTP: no effect (there is no session to drop).
    pub fn reconnect(&self) {
        let _ = self.control.send(Control::Reconnect);
    }

    /// Asks the agent to send agent_disconnect and end, then waits up to `timeout` for it.
    /// Returns whether it ended in time.
    pub async fn stop(&self, timeout: Duration) -> bool {
        let _ = self.control.send(Control::Stop);
        let mut rx = self.state.clone();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|s| s.finished)).await,
            Ok(Ok(_))
        )
    }
}

/// Builds the handle and the future that runs the agent; the caller spawns the future when it
/// wants the agent to start.
pub fn prepare_agent(
    agent: SimAgent,
    transport: ClientTransport,
    server_url: &str,
) -> (AgentHandle, impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = AgentHandle {
        state: agent.subscribe(),
        control: tx,
    };
    let url = server_url.to_owned();
    let fut = async move {
        match transport {
            ClientTransport::WebSocket(opts) => ws::run(agent, url, opts, rx).await,
            ClientTransport::Http(pool) => run_http(agent, pool, rx).await,
        }
    };
    (handle, fut)
}

/// Starts the agent on the current tokio runtime.
pub fn spawn_agent(agent: SimAgent, transport: ClientTransport, server_url: &str) -> AgentHandle {
    let (handle, fut) = prepare_agent(agent, transport, server_url);
    tokio::spawn(fut);
    handle
}

/// Backoff after a failed exchange: the server's Retry-After when given, else doubling from
/// 100 ms up to the poll interval.
fn http_backoff(err: &HttpError, failures: u32, poll: Duration) -> Duration {
    if let HttpError::Status {
        retry_after: Some(d),
        ..
    } = err
    {
        return *d;
    }
    let base = Duration::from_millis(100).saturating_mul(1 << failures.min(8));
    base.min(poll.max(Duration::from_millis(100)))
}

/// HTTP driver: one POST per message; polls at the heartbeat interval when idle; a failed
/// message is resent (same content, same sequence number) after a backoff.
async fn run_http(
    mut agent: SimAgent,
    pool: Arc<HttpPool>,
    mut ctl: mpsc::UnboundedReceiver<Control>,
) {
    let mut queue = std::collections::VecDeque::new();
    queue.push_back(agent.full_report());
    let mut failures = 0u32;
    let mut stopping = false;
    'run: loop {
        while let Some(msg) = queue.front() {
            match pool.exchange(msg).await {
                Ok(reply) => {
                    failures = 0;
                    queue.pop_front();
                    agent.note_connected(true);
                    if stopping {
                        break 'run;
                    }
                    queue.extend(agent.handle(&reply));
                }
                Err(e) => {
                    failures += 1;
                    let wait = http_backoff(&e, failures, agent.heartbeat_interval());
                    agent.note_transport_error(e.to_string());
                    agent.note_connected(false);
                    if stopping {
                        break 'run;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        c = ctl.recv() => match c {
                            Some(Control::Stop) | None => break 'run,
                            Some(Control::InjectGap) => agent.inject_sequence_gap(),
                            Some(_) => {}
                        }
                    }
                }
            }
            // Control requests are handled between exchanges (no message is cut in half).
            while let Ok(c) = ctl.try_recv() {
                match c {
                    Control::InjectGap => agent.inject_sequence_gap(),
                    Control::HeartbeatNow => queue.push_back(agent.heartbeat()),
                    Control::SetHealthy(h) => queue.push_back(agent.health_report(h)),
                    Control::Reconnect => {}
                    Control::Stop => {
                        queue.clear();
                        queue.push_back(agent.disconnect_message());
                        stopping = true;
                    }
                }
            }
        }
        if stopping {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(agent.heartbeat_interval()) => queue.push_back(agent.heartbeat()),
            c = ctl.recv() => match c {
                Some(Control::InjectGap) => agent.inject_sequence_gap(),
                Some(Control::HeartbeatNow) => queue.push_back(agent.heartbeat()),
                Some(Control::SetHealthy(h)) => queue.push_back(agent.health_report(h)),
                Some(Control::Reconnect) => {}
                Some(Control::Stop) | None => {
                    queue.push_back(agent.disconnect_message());
                    stopping = true;
                }
            }
        }
    }
    agent.note_finished();
}

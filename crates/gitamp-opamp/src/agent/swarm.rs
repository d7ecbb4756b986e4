//! Many simulated agents at once: `gitamp serve --demo-agents N`, the WebSocket memory
//! measurement and the load generator all start their agents here.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::control::WsOptions;
use super::driver::{AgentHandle, ClientTransport, prepare_agent};
use super::http::{HttpError, HttpPool, HttpPoolOptions};
use super::{AgentOptions, AgentState, ApplyPolicy, SimAgent, caps};

/// How the agents of a [`SimFleet`] reach the server.
#[derive(Clone, Debug)]
pub enum FleetTransport {
    /// One WebSocket per agent. Agent `i` binds `source_ips[i % len]` (none: OS default).
    WebSocket {
        /// Local addresses to spread connections over, e.g. 127.0.0.2..=127.0.0.21.
        source_ips: Vec<IpAddr>,
    },
    /// Plain HTTP: every agent shares one [`HttpPool`] of `connections` keep-alive
    /// connections.
    Http {
        /// Keep-alive connections in the shared pool.
        connections: usize,
        /// gzip bodies both ways.
        gzip: bool,
    },
}

/// A per-agent hook to change the generated options (labels, policy, capabilities...).
pub type Customize = Arc<dyn Fn(usize, &mut AgentOptions) + Send + Sync>;

/// What every agent of the fleet gets, before [`SimFleetOptions::customize`].
#[derive(Clone)]
pub struct SimFleetOptions {
    /// Agents started per second; 0 or less starts them all at once.
    pub ramp_per_sec: f64,
    /// Heartbeat / poll interval.
    pub heartbeat_interval: Duration,
    /// Capability bits.
    pub capabilities: u64,
    /// What applying a config does.
    pub policy: ApplyPolicy,
    /// First sequence number (0 like opamp-go, or 1).
    pub first_sequence_num: u64,
    /// `service.name` of every agent.
    pub service_name: String,
    /// `deployment.environment` of every agent.
    pub environment: String,
    /// `host.name` is `{host_prefix}-{index:05}`.
    pub host_prefix: String,
    /// Last word on each agent's options.
    pub customize: Option<Customize>,
    /// WebSocket options (the local address and the failover offset are set per agent).
    pub ws: WsOptions,
    /// HTTP pool options (connections and gzip come from the transport).
    pub http: HttpPoolOptions,
}

impl Default for SimFleetOptions {
    fn default() -> Self {
        SimFleetOptions {
            ramp_per_sec: 0.0,
            heartbeat_interval: Duration::from_secs(30),
            capabilities: caps::FULL,
            policy: ApplyPolicy::default(),
            first_sequence_num: 0,
            service_name: "otelcol-sim".to_owned(),
            environment: "demo".to_owned(),
            host_prefix: "sim-host".to_owned(),
            customize: None,
            ws: WsOptions::default(),
            http: HttpPoolOptions::default(),
        }
    }
}

impl std::fmt::Debug for SimFleetOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimFleetOptions")
            .field("ramp_per_sec", &self.ramp_per_sec)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("capabilities", &self.capabilities)
            .field("policy", &self.policy)
            .field("service_name", &self.service_name)
            .field("environment", &self.environment)
            .finish_non_exhaustive()
    }
}

/// The running agents of [`run_fleet`].
#[derive(Debug)]
pub struct SimFleet {
    /// One handle per agent, index order; valid before the agent has started.
    pub agents: Vec<AgentHandle>,
    /// The shared pool when the transport is HTTP (to count connections and requests).
    pub http_pool: Option<Arc<HttpPool>>,
    started: Arc<AtomicUsize>,
    ramp: JoinHandle<()>,
}

impl SimFleet {
    /// Agents whose task has been spawned so far (the ramp may still be running).
    pub fn started(&self) -> usize {
        self.started.load(Ordering::Relaxed)
    }

    /// How many agents satisfy `pred` now.
    pub fn count(&self, mut pred: impl FnMut(&AgentState) -> bool) -> usize {
        self.agents
            .iter()
            .filter(|a| pred(&a.subscribe().borrow()))
            .count()
    }

    /// Waits until every agent satisfies `pred`; on timeout returns how many did not.
    pub async fn wait_all(
        &self,
        timeout: Duration,
        pred: impl Fn(&AgentState) -> bool,
    ) -> Result<(), usize> {
        let deadline = Instant::now() + timeout;
        for a in &self.agents {
            let left = deadline.saturating_duration_since(Instant::now());
            if a.wait_for(left, &pred).await.is_err() {
                return Err(self.agents.len() - self.count(&pred));
            }
        }
        Ok(())
    }

    /// Stops every agent (agent_disconnect, close) and waits up to `timeout` in total.
    /// Returns how many ended in time.
    pub async fn stop_all(self, timeout: Duration) -> usize {
        self.ramp.abort();
        let waits = self.agents.iter().map(|a| a.stop(timeout));
        futures_util::future::join_all(waits)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }
}

fn with_scheme(url: &str, ws: bool) -> String {
    let (from, to) = if ws {
        ("http://", "ws://")
    } else {
        ("ws://", "http://")
    };
    match url.strip_prefix(from) {
        Some(rest) => format!("{to}{rest}"),
        None => url.to_owned(),
    }
}

/// Starts `n` simulated agents against `server_url` (`ws://` or `http://`, either is turned
/// into the scheme the transport needs), `ramp_per_sec` per second, and returns at once with
/// every handle. Must be called inside a tokio runtime.
pub fn run_fleet(
    n: usize,
    transport: FleetTransport,
    server_url: &str,
    opts: SimFleetOptions,
) -> Result<SimFleet, HttpError> {
    let (make_transport, url): (Box<dyn Fn(usize) -> ClientTransport>, String) = match &transport {
        FleetTransport::WebSocket { source_ips } => {
            let ips = source_ips.clone();
            let ws = opts.ws.clone();
            (
                Box::new(move |i| {
                    let mut o = ws.clone();
                    if !ips.is_empty() {
                        o.local_ip = Some(ips[i % ips.len()]);
                    }
                    o.failover_offset = i;
                    ClientTransport::WebSocket(o)
                }),
                with_scheme(server_url, true),
            )
        }
        FleetTransport::Http { connections, gzip } => {
            let url = with_scheme(server_url, false);
            let pool = Arc::new(HttpPool::new(
                &url,
                HttpPoolOptions {
                    connections: *connections,
                    gzip: *gzip,
                    ..opts.http.clone()
                },
            )?);
            (Box::new(move |_| ClientTransport::Http(pool.clone())), url)
        }
    };
    let http_pool = match make_transport(0) {
        ClientTransport::Http(p) => Some(p),
        ClientTransport::WebSocket(_) => None,
    };

    let mut handles = Vec::with_capacity(n);
    let mut futures = Vec::with_capacity(n);
    for i in 0..n {
        let mut ao = AgentOptions {
            capabilities: opts.capabilities,
            policy: opts.policy.clone(),
            first_sequence_num: opts.first_sequence_num,
            heartbeat_interval: opts.heartbeat_interval,
            ..AgentOptions::default()
        }
        .label("service.name", &opts.service_name)
        .label("service.version", env!("CARGO_PKG_VERSION"))
        .label("host.name", &format!("{}-{i:05}", opts.host_prefix))
        .label("os.type", std::env::consts::OS)
        .label("deployment.environment", &opts.environment)
        .label("sim.index", &i.to_string());
        if let Some(c) = &opts.customize {
            c(i, &mut ao);
        }
        let (h, fut) = prepare_agent(SimAgent::new(ao), make_transport(i), &url);
        handles.push(h);
        futures.push(fut);
    }

    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    let rate = opts.ramp_per_sec;
    let ramp = tokio::spawn(async move {
        let t0 = Instant::now();
        for (i, fut) in futures.into_iter().enumerate() {
            if rate > 0.0 && i > 0 {
                tokio::time::sleep_until(t0 + Duration::from_secs_f64(i as f64 / rate)).await;
            }
            tokio::spawn(fut);
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok(SimFleet {
        agents: handles,
        http_pool,
        started,
        ramp,
    })
}

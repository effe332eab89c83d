//! The facade: [`Hub::start`] validates the config, binds every listener and
//! starts serving; the handle gives receivers, events, counters and
//! shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::codec::FramingConfig;
use crate::config::{ConfigError, HubConfig, Protocol, QueueConfig};
use crate::event::ConnectionEvent;
use crate::listener::{self, AcceptState, HubContext, ListenerShared};
use crate::receiver::Receiver;
use crate::registry::{ConnectionInfo, Registry};
use crate::router::{NewNodes, NodeStatus, Router};
use crate::stats::Counters;

/// Events buffered per subscriber before the slowest one starts to lag.
const EVENT_CAPACITY: usize = 4096;

/// Why a hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A listener could not bind its address.
    #[error("listener {listener:?} cannot bind {addr}: {source}")]
    Bind {
        /// The listener's name.
        listener: String,
        /// The address it tried.
        addr: SocketAddr,
        /// The last bind error.
        source: io::Error,
    },
}

/// A running listener, as [`Hub::listeners`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerInfo {
    /// Its name.
    pub name: String,
    /// The address it is bound to (the real port when configured with 0).
    pub local_addr: SocketAddr,
    /// Its framing.
    pub framing: FramingConfig,
    /// Its protocol.
    pub protocol: Protocol,
    /// Whether its node protocol requires a token.
    pub auth_required: bool,
    /// Whether it is accepting connections: its accept loop runs and has
    /// not failed within [`ACCEPT_ERROR_MEMORY`].
    pub is_accepting: bool,
    /// The last `accept()` error, if within [`ACCEPT_ERROR_MEMORY`] (out of
    /// file descriptors, ...).
    pub accept_error: Option<String>,
}

/// How long a failed `accept()` keeps a listener reported as failing: the
/// accept loop retries at least once a second while the cause lasts, so an
/// error older than this was a one-off.
pub const ACCEPT_ERROR_MEMORY: Duration = Duration::from_secs(10);

struct Bound {
    shared: Arc<ListenerShared>,
    local_addr: SocketAddr,
}

struct HubInner {
    router: Arc<Router>,
    registry: Arc<Registry>,
    listeners: Vec<Bound>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    events: broadcast::Sender<ConnectionEvent>,
    grace: Duration,
}

impl HubInner {
    /// No producer will push again: receivers drain and then end.
    fn finish_queues(&self) {
        self.router.finish();
        for b in &self.listeners {
            if let Some(q) = &b.shared.raw_queue {
                q.finish();
            }
        }
    }
}

impl Drop for HubInner {
    fn drop(&mut self) {
        // The last handle is gone: stop serving, and let receivers the
        // application still holds end instead of waiting forever.
        self.cancel.cancel();
        self.finish_queues();
    }
}

/// A running hub. Cheap to clone; every clone is the same hub.
///
/// ```no_run
/// # async fn demo() -> Result<(), framehub::HubError> {
/// use framehub::{Hub, HubConfig, ListenerConfig};
/// let config = HubConfig {
///     listener: vec![ListenerConfig { bind: Some("127.0.0.1:0".parse().unwrap()), ..Default::default() }],
///     ..Default::default()
/// };
/// let hub = Hub::start(config).await?;
/// let radar3 = hub.receiver("radar3");
/// if let Some(frame) = radar3.recv().await {
///     println!("{}", String::from_utf8_lossy(&frame.payload));
/// }
/// hub.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("listeners", &self.listeners())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// Validates `config`, binds every listener (retrying while an address
    /// is in use) and starts accepting connections.
    pub async fn start(config: HubConfig) -> Result<Hub, HubError> {
        config.validate()?;
        let router = Arc::new(Router::new(config.nodes.clone()));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let registry = Arc::new(Registry::default());
        let context = HubContext {
            router: router.clone(),
            events: events.clone(),
            next_conn_id: Arc::new(AtomicU64::new(1)),
            cancel: cancel.clone(),
            registry: registry.clone(),
        };
        let mut bound = Vec::new();
        let mut sockets = Vec::new();
        for lc in config.listeners() {
            let addr = lc.effective_bind();
            if !lc.auth.is_required() && lc.protocol == Protocol::Node && lc.bind.is_none() {
                tracing::warn!(
                    listener = %lc.name,
                    %addr,
                    "no token configured: listening on loopback only; set a token to accept other hosts"
                );
            }
            let socket =
                listener::bind(addr, &lc.socket)
                    .await
                    .map_err(|source| HubError::Bind {
                        listener: lc.name.clone(),
                        addr,
                        source,
                    })?;
            let local_addr = socket.local_addr().map_err(|source| HubError::Bind {
                listener: lc.name.clone(),
                addr,
                source,
            })?;
            tracing::info!(listener = %lc.name, %local_addr, framing = lc.framing.name(), protocol = ?lc.protocol, "listening");
            let shared = Arc::new(ListenerShared::new(lc, &context));
            sockets.push((socket, shared.clone()));
            bound.push(Bound { shared, local_addr });
        }
        // Accept only once every listener is bound, so a failing bind does
        // not leave half a hub serving.
        for (socket, shared) in sockets {
            tracker.spawn(listener::accept_loop(socket, shared, tracker.clone()));
        }
        Ok(Hub {
            inner: Arc::new(HubInner {
                router,
                registry,
                listeners: bound,
                cancel,
                tracker,
                events,
                grace: config.shutdown_grace,
            }),
        })
    }

    /// The address of the first listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.listeners[0].local_addr
    }

    /// Every listener with its bound address.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.inner
            .listeners
            .iter()
            .map(|b| {
                let (is_accepting, accept_error) = match &*b.shared.accept_state.lock() {
                    // Bound and listening: the kernel queues connections
                    // until the loop, spawned already, takes them.
                    AcceptState::Starting | AcceptState::Accepting => (true, None),
                    AcceptState::Failing { error, at } => {
                        if at.elapsed() < ACCEPT_ERROR_MEMORY {
                            (false, Some(error.clone()))
                        } else {
                            (true, None)
                        }
                    }
                    AcceptState::Stopped => (false, None),
                };
                ListenerInfo {
                    name: b.shared.name.to_string(),
                    local_addr: b.local_addr,
                    framing: b.shared.config.framing.clone(),
                    protocol: b.shared.config.protocol,
                    auth_required: b.shared.config.auth.is_required(),
                    is_accepting,
                    accept_error,
                }
            })
            .collect()
    }

    /// Every open connection with its live counters (as of its last read),
    /// by id.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.inner.registry.snapshot()
    }

    /// Registers a node (if new) and returns its receiver, with the default
    /// queue settings (2000 frames, drop-oldest, dedup on).
    pub fn receiver(&self, node: &str) -> Receiver {
        self.receiver_with(node, QueueConfig::default())
    }

    /// Registers a node (if new) with its own queue settings and returns its
    /// receiver. A node that already exists keeps its queue.
    pub fn receiver_with(&self, node: &str, queue: QueueConfig) -> Receiver {
        Receiver::new(self.inner.router.register(node, queue))
    }

    /// The receiver of a `raw` listener: every frame it accepts.
    pub fn listener_receiver(&self, listener: &str) -> Option<Receiver> {
        self.inner
            .listeners
            .iter()
            .find(|b| &*b.shared.name == listener)
            .and_then(|b| b.shared.raw_queue.clone())
            .map(Receiver::new)
    }

    /// The stream of auto-provisioned nodes. Only the first call gets it.
    pub fn new_nodes(&self) -> Option<NewNodes> {
        self.inner.router.take_new_nodes()
    }

    /// Subscribes to connection events from now on.
    pub fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.inner.events.subscribe()
    }

    /// Counters summed over every listener.
    pub fn counters(&self) -> Counters {
        let mut sum = Counters::default();
        for b in &self.inner.listeners {
            sum.merge(&b.shared.counters.snapshot());
        }
        sum
    }

    /// One listener's counters.
    pub fn listener_counters(&self, listener: &str) -> Option<Counters> {
        self.inner
            .listeners
            .iter()
            .find(|b| &*b.shared.name == listener)
            .map(|b| b.shared.counters.snapshot())
    }

    /// Every known node with its health, queue counters and connections,
    /// by name.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        let mut nodes = self.inner.router.nodes();
        // One pass over the open connections, not one per node.
        let mut by_node: std::collections::HashMap<Arc<str>, Vec<ConnectionInfo>> =
            std::collections::HashMap::new();
        for c in self.connections() {
            if let Some(node) = &c.node {
                by_node.entry(node.clone()).or_default().push(c);
            }
        }
        for n in &mut nodes {
            if let Some(conns) = by_node.remove(n.name.as_str()) {
                n.connections = conns.len();
                // The most recent connection is the one an operator looks
                // for after a reconnect.
                if let Some(latest) = conns.iter().max_by_key(|c| (c.since, c.id)) {
                    n.peer = Some(latest.peer);
                    n.connected_since = Some(latest.since);
                }
            }
        }
        nodes
    }

    /// The token that stops the hub when cancelled (then call
    /// [`Hub::shutdown`] to wait for it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    /// Stops accepting, closes every connection, waits for their tasks (at
    /// most `shutdown_grace`), then lets consumers drain what was queued:
    /// receivers return the remaining frames and then `None`.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.cancel.cancel();
        inner.tracker.close();
        if tokio::time::timeout(inner.grace, inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?inner.grace, "connections still open after the shutdown grace period");
        }
        inner.finish_queues();
    }

    /// Serves until `signal` completes, then shuts down.
    pub async fn run_until(&self, signal: impl Future<Output = ()>) {
        tokio::select! {
            _ = signal => {}
            _ = self.inner.cancel.cancelled() => {}
        }
        self.shutdown().await;
    }
}

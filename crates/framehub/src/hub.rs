//! The facade: [`Hub::start`] validates the config, binds every listener and
//! starts serving (on the caller's runtime or on I/O threads of its own);
//! the handle gives receivers and group streams, egress, events, counters,
//! statistics and shutdown.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ack::{AckTable, Acks};
use crate::codec::FramingConfig;
use crate::config::{ConfigError, Delivery, HubConfig, ListenerConfig, Protocol, QueueConfig};
use crate::context::{AcceptState, HubContext, ListenerShared};
use crate::egress::{self, EgressError};
use crate::event::ConnectionEvent;
use crate::group::Groups;
use crate::handler::Handler;
use crate::history::ConnectionHistory;
use crate::listener;
use crate::receiver::Receiver;
use crate::registry::{self, ConnectionInfo};
use crate::router::{NewNodes, NodeStatus, NodesPage, Router};
use crate::secret::Tokens;
use crate::snapshot::{Sampler, Sources, StatsSnapshot};
use crate::stats::{Counters, DropReason, ListenerCounters};
use crate::tls::Tls;

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
    /// Whether it speaks TLS (`[listener.tls]`).
    pub tls: bool,
    /// How it delivers frames.
    pub delivery: Delivery,
    /// Whether it is accepting connections: its accept loop runs and has
    /// not failed within [`ACCEPT_ERROR_MEMORY`].
    pub is_accepting: bool,
    /// The last `accept()` error, if within [`ACCEPT_ERROR_MEMORY`] (out of
    /// file descriptors, a listening socket being rebuilt, ...).
    pub accept_error: Option<String>,
}

/// A node listener's tokens, files read; errors name `prefix.auth...`.
fn listener_tokens(lc: &ListenerConfig, prefix: &str) -> Result<Tokens, ConfigError> {
    if lc.protocol != Protocol::Node {
        return Ok(Tokens::default());
    }
    lc.auth.load_tokens().map_err(|e| ConfigError {
        key: format!("{prefix}.{}", e.key),
        message: e.message,
    })
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
    listeners: Vec<Bound>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    events: broadcast::Sender<ConnectionEvent>,
    grace: Duration,
    /// Egress drops that belong to no listener (no such connection/node).
    unrouted: Arc<ListenerCounters>,
    stats: watch::Sender<StatsSnapshot>,
    /// The hub's own I/O runtime (`[runtime]`), if it has one.
    runtime: Option<Runtime>,
    /// Acknowledged delivery's marks.
    acks: Arc<AckTable>,
    /// The newest closed connections (`connection_history`).
    history: Arc<ConnectionHistory>,
}

impl HubInner {
    /// No producer will push again: receivers drain and then end.
    fn finish_queues(&self) {
        self.router.finish();
        for b in &self.listeners {
            if let Some(q) = &b.shared.raw_queue {
                q.finish();
            }
            if let Some(g) = &b.shared.groups {
                g.finish();
            }
        }
    }

    fn listener(&self, name: &str) -> Option<&Arc<ListenerShared>> {
        self.listeners
            .iter()
            .find(|b| &*b.shared.name == name)
            .map(|b| &b.shared)
    }
}

impl Drop for HubInner {
    fn drop(&mut self) {
        // The last handle is gone: stop serving, and let receivers the
        // application still holds end instead of waiting forever.
        self.cancel.cancel();
        self.finish_queues();
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime blocks, which panics inside another
            // runtime; the tasks were told to stop above.
            runtime.shutdown_background();
        }
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
        Hub::start_with(config, Vec::<(String, Handler)>::new()).await
    }

    /// [`Hub::start`] with request handlers, by listener name: every frame
    /// of such a listener goes to its handler (not to a receiver or group
    /// stream), which answers on the same connection.
    ///
    /// ```no_run
    /// # async fn demo(config: framehub::HubConfig) -> Result<(), framehub::HubError> {
    /// use framehub::{Handler, Hub};
    /// let echo = Handler::new(|req| async move { Ok(vec![req.payload]) });
    /// let hub = Hub::start_with(config, [("default", echo)]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start_with<N: Into<String>>(
        config: HubConfig,
        handlers: impl IntoIterator<Item = (N, Handler)>,
    ) -> Result<Hub, HubError> {
        Hub::start_recovered(config, handlers, Vec::new()).await
    }

    /// [`Hub::start_with`] for acknowledged delivery after a restart: the
    /// highest durable sequence number per node (or `length` stream) that
    /// the consumer found again in what it stored (a daemon's file sink
    /// scans its file). Resends at or below it are dropped as `duplicate`
    /// and acknowledged, from the first connection on.
    pub async fn start_recovered<N: Into<String>>(
        config: HubConfig,
        handlers: impl IntoIterator<Item = (N, Handler)>,
        durable: Vec<(String, u64)>,
    ) -> Result<Hub, HubError> {
        config.validate()?;
        let mut handlers: HashMap<String, Handler> =
            handlers.into_iter().map(|(n, h)| (n.into(), h)).collect();
        let listeners = config.listeners();
        if let Some(name) = handlers
            .keys()
            .find(|name| !listeners.iter().any(|l| &l.name == *name))
        {
            return Err(HubError::Config(ConfigError {
                key: "listener".into(),
                message: format!("a handler is given for {name:?}, but no listener has that name"),
            }));
        }
        let runtime = crate::runtime::build(&config.runtime)?;
        // Everything the hub runs goes onto its own runtime, or the
        // caller's.
        let handle = runtime
            .as_ref()
            .map_or_else(Handle::current, |rt| rt.handle().clone());
        let router = Arc::new(Router::new(config.nodes.clone()));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        // Every node, and every `length` stream a connection of an ack
        // listener may name.
        let ack_capacity = config.nodes.max_nodes.max(1)
            + listeners
                .iter()
                .filter(|l| l.ack.is_on() && l.protocol == Protocol::Raw)
                .map(|l| l.max_connections)
                .sum::<usize>();
        let acks = Arc::new(AckTable::new(ack_capacity, durable));
        let history = Arc::new(ConnectionHistory::new(config.connection_history));
        let context = HubContext {
            acks: acks.clone(),
            history: history.clone(),
            router: router.clone(),
            events: events.clone(),
            next_conn_id: Arc::new(AtomicU64::new(1)),
            cancel: cancel.clone(),
            partial_budget: Arc::new(crate::budget::PartialBudget::new(
                config.partial_frame_budget.0,
            )),
            fd_reserve: config.fd_reserve,
        };
        // Token files are read before anything is bound: one that cannot
        // be read fails the start, naming the listener's key.
        let tokens = listeners
            .iter()
            .enumerate()
            .map(|(i, lc)| listener_tokens(lc, &format!("listener[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        // Certificates are read before any port is bound: a bad file is a
        // config error naming its key, and nothing half starts.
        let mut tls = listeners
            .iter()
            .enumerate()
            .map(|(i, lc)| {
                Tls::load(&lc.tls, &format!("listener[{i}].tls")).map(|t| t.map(Arc::new))
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter();
        let mut bound = Vec::new();
        let mut sockets = Vec::new();
        for (lc, tokens) in listeners.into_iter().zip(tokens) {
            let addr = lc.effective_bind();
            if !lc.auth.is_required() && lc.protocol == Protocol::Node && lc.bind.is_none() {
                tracing::warn!(
                    listener = %lc.name,
                    %addr,
                    "no token configured: listening on loopback only; set a token to accept other hosts"
                );
            }
            let bind_error = |source| HubError::Bind {
                listener: lc.name.clone(),
                addr,
                source,
            };
            // A socket belongs to the runtime that registers it: bind on
            // the one that will serve it.
            let options = lc.socket.clone();
            let socket = handle
                .spawn(async move { listener::bind(addr, &options).await })
                .await
                .map_err(|e| bind_error(io::Error::other(e)))?
                .map_err(bind_error)?;
            let local_addr = socket.local_addr().map_err(bind_error)?;
            tracing::info!(listener = %lc.name, %local_addr, framing = lc.framing.name(), protocol = ?lc.protocol, delivery = ?lc.delivery, tls = lc.tls.is_enabled(), client_certificates = lc.tls.client_ca.is_some(), "listening");
            let handler = handlers.remove(&lc.name);
            let mut shared = ListenerShared::new(lc, &tokens, handler, &context);
            shared.tls = tls.next().flatten();
            let shared = Arc::new(shared);
            sockets.push((socket, local_addr, shared.clone()));
            bound.push(Bound { shared, local_addr });
        }
        let unrouted = Arc::new(ListenerCounters::default());
        let (stats, _) = watch::channel(StatsSnapshot::default());
        let sampler = Sampler::new(
            Sources {
                listeners: bound.iter().map(|b| b.shared.clone()).collect(),
                unrouted: unrouted.clone(),
                router: router.clone(),
            },
            config.stats_interval,
            stats.clone(),
            cancel.clone(),
        );
        handle.spawn(sampler.run());
        // Accept only once every listener is bound, so a failing bind does
        // not leave half a hub serving.
        for (socket, local_addr, shared) in sockets {
            handle.spawn(tracker.track_future(listener::accept_loop(
                socket,
                local_addr,
                shared,
                tracker.clone(),
            )));
        }
        Ok(Hub {
            inner: Arc::new(HubInner {
                router,
                listeners: bound,
                cancel,
                tracker,
                events,
                grace: config.shutdown_grace,
                unrouted,
                stats,
                runtime,
                acks,
                history,
            }),
        })
    }

    /// Replaces the tokens of a node listener: connections that open from
    /// now on are checked against `tokens`; open connections stay as they
    /// are (authenticated, bound to their node). What the daemon does on
    /// SIGHUP, with tokens from [`crate::AuthConfig::load_tokens`].
    ///
    /// Refused, keeping the old tokens: an unknown or raw listener, and
    /// new settings without any token for a listener that had some
    /// (removing authentication needs a restart, since the default address
    /// depends on it).
    ///
    /// ```no_run
    /// # fn demo(hub: framehub::Hub) -> Result<(), framehub::HubError> {
    /// let auth = framehub::AuthConfig {
    ///     token_file: Some("/etc/framehub/token".into()),
    ///     ..Default::default()
    /// };
    /// hub.set_tokens("default", auth.load_tokens()?)?;
    /// # Ok(()) }
    /// ```
    pub fn set_tokens(&self, listener: &str, tokens: Tokens) -> Result<(), HubError> {
        let error = |message: String| {
            HubError::Config(ConfigError {
                key: format!("listener {listener:?}"),
                message,
            })
        };
        let shared = self
            .inner
            .listener(listener)
            .ok_or_else(|| error("no such listener".to_owned()))?;
        shared.set_tokens(&tokens).map_err(error)?;
        tracing::info!(
            listener,
            shared_token = tokens.shared.is_some(),
            nodes_with_tokens = tokens.per_node.len(),
            "tokens replaced; open connections keep theirs"
        );
        Ok(())
    }

    /// Reads the TLS files of `listener` again (`tls.cert`, `tls.key`,
    /// `tls.client_ca`): new connections get the new certificates, open
    /// ones keep theirs. When a file is missing or bad, the error names its
    /// key and the listener keeps what it had.
    ///
    /// ```no_run
    /// # async fn demo(hub: framehub::Hub) {
    /// if let Err(e) = hub.reload_tls("default") {
    ///     eprintln!("certificates not reloaded: {e}");
    /// }
    /// # }
    /// ```
    pub fn reload_tls(&self, listener: &str) -> Result<(), ConfigError> {
        let index = self
            .inner
            .listeners
            .iter()
            .position(|b| &*b.shared.name == listener);
        let Some(shared) = index.map(|i| &self.inner.listeners[i].shared) else {
            return Err(ConfigError {
                key: "listener".into(),
                message: format!("no listener named {listener:?}"),
            });
        };
        let Some(tls) = &shared.tls else {
            return Err(ConfigError {
                key: format!("listener[{}].tls.cert", index.unwrap_or_default()),
                message: format!("listener {listener:?} has no TLS to reload"),
            });
        };
        tls.reload()?;
        tracing::info!(listener, "TLS certificates reloaded");
        Ok(())
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
                    auth_required: b.shared.requires_auth(),
                    tls: b.shared.tls.is_some(),
                    delivery: b.shared.config.delivery,
                    is_accepting,
                    accept_error,
                }
            })
            .collect()
    }

    /// Every open connection with its live counters (as of its last read),
    /// by id.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let now = std::time::Instant::now();
        let mut out = Vec::new();
        for b in &self.inner.listeners {
            b.shared
                .peers
                .for_each(|peer| out.push(registry::info(&b.shared.name, peer, now)));
        }
        out.sort_by_key(|c| c.id);
        out
    }

    /// The newest closed connections (at most `connection_history`), with
    /// why each ended and what went through it; page them with
    /// [`ConnectionHistory::page`].
    ///
    /// ```no_run
    /// # fn demo(hub: &framehub::Hub) {
    /// let page = hub.closed_connections().page(0, 20, |c| c.node.as_deref() == Some("radar3"));
    /// for c in page.connections {
    ///     println!("{} {} {:?}: {}", c.id, c.peer, c.duration(), c.reason);
    /// }
    /// # }
    /// ```
    pub fn closed_connections(&self) -> &ConnectionHistory {
        &self.inner.history
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
            .listener(listener)
            .and_then(|l| l.raw_queue.clone())
            .map(Receiver::new)
    }

    /// The group stream of a listener with `delivery = "groups"`: every
    /// frame of every connection, in groups of up to `group_size`. `None`
    /// for an unknown listener or one that delivers to receivers.
    pub fn groups(&self, listener: &str) -> Option<Groups> {
        self.inner
            .listener(listener)
            .and_then(|l| l.groups.clone())
            .map(Groups::new)
    }

    /// Sends `msg` to every connection of every listener, framed in each
    /// listener's framing. Returns how many clients took it into their
    /// egress buffer (it is written to each as fast as that client reads).
    ///
    /// Never waits: a client whose buffer is full loses this message
    /// (counted as `egress_full`) or is disconnected, by its listener's
    /// `slow_client`; a listener with no client counts it as `no_client`.
    /// An error means no listener could frame it, and nothing was sent.
    ///
    /// ```no_run
    /// # fn demo(hub: framehub::Hub) -> Result<(), framehub::EgressError> {
    /// let clients = hub.broadcast(b"set-rate 10")?;
    /// println!("sent to {clients} clients");
    /// # Ok(()) }
    /// ```
    pub fn broadcast(&self, msg: &[u8]) -> Result<usize, EgressError> {
        let mut sent = 0;
        let mut first_error = None;
        let mut framed = false;
        for b in &self.inner.listeners {
            match egress::broadcast(&b.shared, msg) {
                Ok(n) => {
                    framed = true;
                    sent += n;
                }
                Err(e) => {
                    tracing::debug!(listener = %b.shared.name, error = %e, "broadcast skipped this listener");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if !framed => Err(e),
            _ => Ok(sent),
        }
    }

    /// Sends `msg` to every connection of one listener; see
    /// [`Hub::broadcast`].
    pub fn broadcast_on(&self, listener: &str, msg: &[u8]) -> Result<usize, EgressError> {
        let shared = self
            .inner
            .listener(listener)
            .ok_or_else(|| EgressError::UnknownListener(listener.to_owned()))?;
        egress::broadcast(shared, msg)
    }

    /// Sends `msg` to one connection (its id is in every [`crate::Frame`]'s
    /// source and in connection events). Returns 1 if its egress buffer
    /// took it, 0 if it did not (full, or no such connection: counted).
    pub fn send_to_connection(&self, conn: u64, msg: &[u8]) -> Result<usize, EgressError> {
        for b in &self.inner.listeners {
            if let Some(peer) = b.shared.peers.get(conn) {
                let wire = egress::encode(&b.shared, msg)?;
                return Ok(usize::from(egress::deliver(&b.shared, &peer, &wire)));
            }
        }
        self.inner.unrouted.dropped(DropReason::NoClient, 1);
        Ok(0)
    }

    /// Sends `msg` to every connection bound to `node` (node protocol).
    /// Returns how many took it; 0 when the node is not connected
    /// (counted).
    pub fn send_to_node(&self, node: &str, msg: &[u8]) -> Result<usize, EgressError> {
        let mut sent = 0;
        let mut found = false;
        for b in &self.inner.listeners {
            let mut wire = None;
            let mut result = Ok(());
            b.shared.peers.for_each(|peer| {
                if result.is_err() || peer.node.get().map(|n| &**n) != Some(node) {
                    return;
                }
                found = true;
                if wire.is_none() {
                    match egress::encode(&b.shared, msg) {
                        Ok(w) => wire = Some(w),
                        Err(e) => {
                            result = Err(e);
                            return;
                        }
                    }
                }
                if let Some(wire) = &wire {
                    sent += usize::from(egress::deliver(&b.shared, peer, wire));
                }
            });
            result?;
        }
        if !found {
            self.inner.unrouted.dropped(DropReason::NoClient, 1);
        }
        Ok(sent)
    }

    /// The consumer's side of acknowledged delivery (`[listener.ack]`):
    /// acknowledge frames once they are safe, and the server tells their
    /// clients. See [`Acks`].
    pub fn acks(&self) -> Acks {
        Acks::new(&self.inner.acks)
    }

    /// The traffic statistics, a new [`StatsSnapshot`] every
    /// `stats_interval` (1 s): per listener and per connection, frames and
    /// bytes in and out per second, mean and largest frame, open
    /// connections, drops by reason; per node, frames delivered and their
    /// rate.
    pub fn stats(&self) -> watch::Receiver<StatsSnapshot> {
        self.inner.stats.subscribe()
    }

    /// The stream of auto-provisioned nodes. Only the first call gets it.
    pub fn new_nodes(&self) -> Option<NewNodes> {
        self.inner.router.take_new_nodes()
    }

    /// Every frame the hub delivers from now on, in one bounded stream of
    /// batches: every node's receiver (known now, or auto-provisioned
    /// later), every `raw` listener's receiver and every group stream.
    /// What a daemon's sinks consume; see [`crate::AllFrames`]. It takes
    /// the frames from those receivers, so do not also receive from them.
    ///
    /// Takes the new-node stream (so [`Hub::new_nodes`] returns `None`
    /// afterwards, and this fails if that was called first).
    ///
    /// # Panics
    /// Outside a Tokio runtime: its tasks run on the caller's runtime.
    pub fn all_frames(
        &self,
        config: crate::fanin::AllFramesConfig,
    ) -> Result<crate::fanin::AllFrames, crate::fanin::NewNodesTaken> {
        Ok(crate::fanin::AllFrames::start(
            self.fan_in_sources()?,
            config,
        ))
    }

    /// [`Hub::all_frames`] into a channel of the caller's, each batch
    /// converted with `T::from`: for a consumer whose queue also carries
    /// other messages (ticks, control), without a second hop per batch.
    /// The channel's capacity bounds the batches waiting; its receiver
    /// sees the end once the hub shut down, every source is drained and
    /// the caller's own senders are gone.
    ///
    /// # Panics
    /// Outside a Tokio runtime, as [`Hub::all_frames`].
    pub fn all_frames_into<T>(
        &self,
        batch: usize,
        tx: tokio::sync::mpsc::Sender<T>,
    ) -> Result<(), crate::fanin::NewNodesTaken>
    where
        T: From<Vec<crate::receiver::Frame>> + Send + 'static,
    {
        self.all_frames_map(batch, tx, T::from)
    }

    /// [`Hub::all_frames_into`] with each batch converted by `map` in the
    /// fan-in's tasks, on the runtime's threads, before it is queued: work
    /// per frame done there (encoding records, say) is spread over the
    /// cores instead of falling on the one consumer. Frames of one source
    /// stay in order.
    ///
    /// ```no_run
    /// # async fn demo(hub: framehub::Hub) -> Result<(), framehub::NewNodesTaken> {
    /// let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    /// hub.all_frames_map(1024, tx, |batch: Vec<framehub::Frame>| {
    ///     batch.iter().map(|f| f.payload.len()).sum::<usize>()
    /// })?;
    /// while let Some(bytes) = rx.recv().await {
    ///     println!("{bytes} bytes of frames");
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    /// Outside a Tokio runtime, as [`Hub::all_frames`].
    pub fn all_frames_map<T, F>(
        &self,
        batch: usize,
        tx: tokio::sync::mpsc::Sender<T>,
        map: F,
    ) -> Result<(), crate::fanin::NewNodesTaken>
    where
        T: Send + 'static,
        F: Fn(Vec<crate::receiver::Frame>) -> T + Send + Sync + 'static,
    {
        crate::fanin::spawn(self.fan_in_sources()?, batch, tx, std::sync::Arc::new(map));
        Ok(())
    }

    fn fan_in_sources(&self) -> Result<crate::fanin::Sources, crate::fanin::NewNodesTaken> {
        let new_nodes = self.new_nodes().ok_or(crate::fanin::NewNodesTaken)?;
        let listeners = &self.inner.listeners;
        Ok(crate::fanin::Sources {
            nodes: self.inner.router.receivers(),
            raw: listeners
                .iter()
                .filter_map(|b| b.shared.raw_queue.clone().map(Receiver::new))
                .collect(),
            groups: listeners
                .iter()
                .filter_map(|b| b.shared.groups.clone().map(Groups::new))
                .collect(),
            new_nodes,
        })
    }

    /// Subscribes to connection events from now on.
    pub fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.inner.events.subscribe()
    }

    /// Counters summed over every listener (and egress drops that had no
    /// listener: messages for a connection or node that was not there).
    pub fn counters(&self) -> Counters {
        let mut sum = self.inner.unrouted.snapshot();
        for b in &self.inner.listeners {
            sum.merge(&b.shared.counters.snapshot());
        }
        sum
    }

    /// One listener's counters.
    pub fn listener_counters(&self, listener: &str) -> Option<Counters> {
        self.inner.listener(listener).map(|l| l.counters.snapshot())
    }

    /// Every known node with its health, queue counters and connections,
    /// by name.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        self.with_connections(self.inner.router.nodes())
    }

    /// One page of [`Hub::nodes`]: how many nodes there are, and the
    /// `limit` of them from the `offset`th on, by name. The table may hold
    /// `max_nodes` nodes; a page costs only its own.
    ///
    /// ```no_run
    /// # fn demo(hub: framehub::Hub) {
    /// let page = hub.nodes_page(0, 100);
    /// println!("{} of {} nodes", page.nodes.len(), page.total);
    /// # }
    /// ```
    pub fn nodes_page(&self, offset: usize, limit: usize) -> NodesPage {
        let (total, nodes) = self.inner.router.nodes_page(offset, limit);
        NodesPage {
            total,
            nodes: self.with_connections(nodes),
        }
    }

    /// Fills in each node's connections, peer and `connected_since`.
    fn with_connections(&self, mut nodes: Vec<NodeStatus>) -> Vec<NodeStatus> {
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
}

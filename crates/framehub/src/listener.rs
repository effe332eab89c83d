//! Binding a listening socket (options, retry while the address is in use)
//! and the accept loop (connection limit, per-socket options, accept errors).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ListenerConfig, Protocol, SocketConfig};
use crate::event::ConnectionEvent;
use crate::node::NodeProtocol;
use crate::receiver::Queue;
use crate::router::Router;
use crate::stats::{ListenerCounters, WarnLimiter};

/// The longest wait between two bind attempts.
const MAX_BIND_BACKOFF: Duration = Duration::from_secs(5);
/// The longest pause after a failed `accept()`.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// What every connection of one listener shares.
pub(crate) struct ListenerShared {
    pub(crate) name: Arc<str>,
    pub(crate) config: ListenerConfig,
    pub(crate) counters: ListenerCounters,
    /// The node protocol's prepared settings (`protocol = "node"`).
    pub(crate) node_protocol: Option<Arc<NodeProtocol>>,
    /// Where frames of a `raw` listener go.
    pub(crate) raw_queue: Option<Arc<Queue>>,
    /// The server heartbeat's wire bytes and period (`server_heartbeat`).
    pub(crate) heartbeat: Option<(Bytes, Duration)>,
    pub(crate) router: Arc<Router>,
    pub(crate) events: broadcast::Sender<ConnectionEvent>,
    pub(crate) next_conn_id: Arc<AtomicU64>,
    pub(crate) cancel: CancellationToken,
    /// Rate limit of warnings about rejected connections and auth failures.
    pub(crate) reject_warning: WarnLimiter,
    pub(crate) auth_warning: WarnLimiter,
}

impl ListenerShared {
    pub(crate) fn new(
        config: ListenerConfig,
        router: Arc<Router>,
        events: broadcast::Sender<ConnectionEvent>,
        next_conn_id: Arc<AtomicU64>,
        cancel: CancellationToken,
    ) -> ListenerShared {
        let name: Arc<str> = Arc::from(config.name.as_str());
        let (node_protocol, raw_queue) = match config.protocol {
            Protocol::Node => (
                Some(Arc::new(NodeProtocol::new(
                    &config.auth,
                    &config.fields,
                    config.max_json_depth,
                ))),
                None,
            ),
            Protocol::Raw => (None, Some(Queue::new(name.clone(), config.queue))),
        };
        // Validation refused framings without an empty frame, so `frame`
        // only fails for a config that never reaches here.
        let heartbeat = config
            .server_heartbeat
            .and_then(|every| crate::heartbeat::frame(&config).ok().map(|f| (f, every)));
        ListenerShared {
            name,
            heartbeat,
            config,
            counters: ListenerCounters::default(),
            node_protocol,
            raw_queue,
            router,
            events,
            next_conn_id,
            cancel,
            reject_warning: WarnLimiter::new(Duration::from_secs(5)),
            auth_warning: WarnLimiter::new(Duration::from_secs(1)),
        }
    }

    /// Sends an event if anyone listens; events are advisory and never block.
    pub(crate) fn emit(&self, event: ConnectionEvent) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(event);
        }
    }
}

/// Binds `addr`, retrying with doubling backoff while it is in use.
pub(crate) async fn bind(addr: SocketAddr, socket: &SocketConfig) -> io::Result<TcpListener> {
    let mut delay = socket.bind_backoff;
    let mut attempt = 1;
    loop {
        match bind_once(addr, socket) {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && attempt < socket.bind_attempts => {
                tracing::warn!(
                    %addr,
                    attempt,
                    of = socket.bind_attempts,
                    retry_in = ?delay,
                    "address in use; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BIND_BACKOFF);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn bind_once(addr: SocketAddr, options: &SocketConfig) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(options.reuse_addr)?;
    #[cfg(unix)]
    if options.reuse_port {
        socket.set_reuse_port(true)?;
    }
    // Set before listen(): accepted sockets inherit the buffer sizes, and
    // the TCP window scale is fixed at the handshake.
    if let Some(size) = options.recv_buffer_bytes {
        socket.set_recv_buffer_size(size.0)?;
    }
    if let Some(size) = options.send_buffer_bytes {
        socket.set_send_buffer_size(size.0)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(options.backlog).unwrap_or(i32::MAX))?;
    TcpListener::from_std(socket.into())
}

fn configure_accepted(stream: &TcpStream, options: &SocketConfig) -> io::Result<()> {
    stream.set_nodelay(options.nodelay)?;
    if let Some(idle) = options.keepalive {
        SockRef::from(stream).set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
    }
    Ok(())
}

/// Accepts connections until cancelled, one task per connection, each
/// holding a permit of the connection limit.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<ListenerShared>,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(shared.config.max_connections));
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(5);
                pair
            }
            Err(e) => {
                // Out of file descriptors and the like: pause so the loop
                // does not spin, then go on serving.
                ListenerCounters::add(&shared.counters.accept_errors, 1);
                tracing::warn!(listener = %shared.name, error = %e, retry_in = ?backoff, "accept failed");
                tokio::select! {
                    _ = shared.cancel.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            ListenerCounters::add(&shared.counters.connections_rejected, 1);
            if let Some(suppressed) = shared.reject_warning.check() {
                tracing::warn!(
                    listener = %shared.name,
                    %peer,
                    max_connections = shared.config.max_connections,
                    suppressed,
                    "connection limit reached; closing new connection"
                );
            }
            shared.emit(ConnectionEvent::Rejected {
                peer,
                listener: shared.name.clone(),
            });
            drop(stream);
            continue;
        };
        if let Err(e) = configure_accepted(&stream, &shared.config.socket) {
            tracing::debug!(%peer, error = %e, "could not set socket options");
        }
        ListenerCounters::add(&shared.counters.connections_accepted, 1);
        tracker.spawn(crate::connection::serve(
            shared.clone(),
            stream,
            peer,
            permit,
        ));
    }
    tracing::debug!(listener = %shared.name, "accept loop stopped");
}

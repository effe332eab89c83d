//! Binding a listening socket (options, retry while the address is in use),
//! the accept loop (connection limit, per-socket options, accept errors),
//! and rebuilding a listening socket that failed.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::config::SocketConfig;
use crate::context::{AcceptState, ListenerShared};
use crate::event::ConnectionEvent;
use crate::stats::ListenerCounters;

/// The longest wait between two bind attempts.
const MAX_BIND_BACKOFF: Duration = Duration::from_secs(5);
/// The longest pause after a failed `accept()`.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

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

/// What a failed `accept()` means for the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptFailure {
    /// A network error of the one connection being accepted: go on at once.
    Connection,
    /// Out of file descriptors, buffers or memory: pause, then go on.
    Resources,
    /// The listening socket itself is broken: rebuild it.
    Socket,
}

fn classify(e: &io::Error) -> AcceptFailure {
    use rustix::io::Errno;
    match Errno::from_io_error(e) {
        // accept(2): Linux reports pending network errors of the new
        // connection here; they say nothing about the listening socket.
        Some(
            Errno::CONNABORTED
            | Errno::PROTO
            | Errno::PERM
            | Errno::NETDOWN
            | Errno::NOPROTOOPT
            | Errno::HOSTDOWN
            | Errno::NONET
            | Errno::HOSTUNREACH
            | Errno::OPNOTSUPP
            | Errno::NETUNREACH
            | Errno::INTR
            | Errno::AGAIN,
        ) => AcceptFailure::Connection,
        Some(Errno::BADF | Errno::INVAL | Errno::NOTSOCK | Errno::FAULT) => AcceptFailure::Socket,
        _ => AcceptFailure::Resources,
    }
}

/// Accepts connections until cancelled, one task per connection, each
/// holding a permit of the connection limit. A listening socket that fails
/// is rebuilt on the same address.
pub(crate) async fn accept_loop(
    mut listener: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<ListenerShared>,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(shared.config.max_connections));
    // Read once: a daemon raises it before any listener starts.
    let fd_limit = crate::fdlimit::nofile_limit();
    let mut backoff = Duration::from_millis(5);
    let mut failing = false;
    shared.set_accept_state(AcceptState::Accepting);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                if failing {
                    failing = false;
                    shared.set_accept_state(AcceptState::Accepting);
                }
                backoff = Duration::from_millis(5);
                pair
            }
            Err(e) => {
                ListenerCounters::add(&shared.counters.accept_errors, 1);
                match classify(&e) {
                    AcceptFailure::Connection => {
                        tracing::debug!(listener = %shared.name, error = %e, "accept failed for one connection");
                        continue;
                    }
                    AcceptFailure::Resources => {
                        // Out of file descriptors and the like: pause so
                        // the loop does not spin, then go on serving.
                        failing = true;
                        shared.accept_failed(&e);
                        tracing::warn!(listener = %shared.name, error = %e, retry_in = ?backoff, "accept failed");
                        tokio::select! {
                            _ = shared.cancel.cancelled() => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                        continue;
                    }
                    AcceptFailure::Socket => {
                        tracing::warn!(listener = %shared.name, %local_addr, error = %e, "listening socket failed; rebuilding it");
                        // Close the broken socket before binding again.
                        drop(listener);
                        shared.accept_failed(&e);
                        match rebuild(local_addr, &shared).await {
                            Some(rebuilt) => {
                                listener = rebuilt;
                                shared.set_accept_state(AcceptState::Accepting);
                                continue;
                            }
                            None => break,
                        }
                    }
                }
            }
        };
        if !keeps_fd_reserve(&shared, &stream, peer, fd_limit) {
            continue;
        }
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
    shared.set_accept_state(AcceptState::Stopped);
    tracing::debug!(listener = %shared.name, "accept loop stopped");
}

/// Whether an accepted connection leaves `fd_reserve` descriptors free;
/// if not, it is closed at once (counted as shed, logged within limits)
/// so that the admin port and the sinks can still open theirs.
fn keeps_fd_reserve(
    shared: &ListenerShared,
    stream: &TcpStream,
    peer: SocketAddr,
    fd_limit: Option<u64>,
) -> bool {
    use std::os::fd::AsRawFd;
    let fd = u64::try_from(stream.as_raw_fd()).unwrap_or_default();
    let reserve = shared.fd_reserve as u64;
    if crate::fdlimit::is_within_reserve(fd, fd_limit, reserve) {
        return true;
    }
    ListenerCounters::add(&shared.counters.connections_shed, 1);
    if let Some(suppressed) = shared.reject_warning.check() {
        tracing::warn!(
            listener = %shared.name,
            %peer,
            fd,
            fd_limit = fd_limit.unwrap_or(u64::MAX),
            fd_reserve = reserve,
            suppressed,
            "file descriptors running out; closing new connection to keep fd_reserve free"
        );
    }
    shared.emit(ConnectionEvent::Rejected {
        peer,
        listener: shared.name.clone(),
    });
    false
}

/// Binds `addr` again, retrying with backoff for as long as it takes (as
/// the robotics stage does), until the hub shuts down (`None`).
/// Connections already open are not affected.
async fn rebuild(addr: SocketAddr, shared: &ListenerShared) -> Option<TcpListener> {
    // A zero `bind_backoff` must not turn this into a busy loop.
    let mut delay = shared
        .config
        .socket
        .bind_backoff
        .max(Duration::from_millis(10));
    let mut attempt: u64 = 1;
    loop {
        match bind_once(addr, &shared.config.socket) {
            Ok(listener) => {
                ListenerCounters::add(&shared.counters.listener_rebuilds, 1);
                tracing::info!(listener = %shared.name, %addr, attempt, "listening socket rebuilt");
                return Some(listener);
            }
            Err(e) => {
                tracing::warn!(listener = %shared.name, %addr, attempt, error = %e, retry_in = ?delay, "cannot bind again yet");
            }
        }
        tokio::select! {
            _ = shared.cancel.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_BIND_BACKOFF);
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::net::Shutdown;
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use std::sync::atomic::AtomicU64;

    use tokio::sync::broadcast;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::{ListenerConfig, NodesConfig, Protocol};
    use crate::context::HubContext;
    use crate::receiver::Receiver;
    use crate::router::Router;

    #[test]
    fn accept_errors_are_told_apart() {
        let err = |e: rustix::io::Errno| io::Error::from(e);
        use rustix::io::Errno;
        assert_eq!(
            classify(&err(Errno::CONNABORTED)),
            AcceptFailure::Connection
        );
        assert_eq!(classify(&err(Errno::MFILE)), AcceptFailure::Resources);
        assert_eq!(classify(&err(Errno::NFILE)), AcceptFailure::Resources);
        assert_eq!(classify(&err(Errno::INVAL)), AcceptFailure::Socket);
        assert_eq!(classify(&err(Errno::BADF)), AcceptFailure::Socket);
    }

    /// The listening socket fails under the accept loop (shut down through
    /// a duplicate of its descriptor, which makes accept() fail with
    /// EINVAL): the loop binds the same address again and serves on.
    #[tokio::test]
    async fn a_failed_listening_socket_is_rebuilt_on_the_same_address() {
        let config = ListenerConfig {
            bind: Some("127.0.0.1:0".parse().expect("addr")),
            protocol: Protocol::Raw,
            socket: SocketConfig {
                bind_backoff: Duration::from_millis(10),
                ..SocketConfig::default()
            },
            ..ListenerConfig::default()
        };
        let addr = config.effective_bind();
        let cancel = CancellationToken::new();
        let hub = HubContext {
            router: Arc::new(Router::new(NodesConfig::default())),
            events: broadcast::channel(16).0,
            next_conn_id: Arc::new(AtomicU64::new(1)),
            cancel: cancel.clone(),
            acks: Arc::new(crate::ack::AckTable::new(1, [])),
            history: Arc::new(crate::history::ConnectionHistory::new(16)),
            partial_budget: Arc::new(crate::budget::PartialBudget::new(1 << 20)),
            fd_reserve: 0,
        };
        let shared = Arc::new(ListenerShared::new(config, &Default::default(), None, &hub));
        let receiver = Receiver::new(shared.raw_queue.clone().expect("raw queue"));
        let listener = bind(addr, &shared.config.socket).await.expect("bind");
        let local = listener.local_addr().expect("addr");
        let dup = SockRef::from(&listener).try_clone().expect("dup");
        let tracker = TaskTracker::new();
        let task = tokio::spawn(accept_loop(
            listener,
            local,
            shared.clone(),
            tracker.clone(),
        ));

        let send = |line: &'static [u8]| async move {
            let mut s = TcpStream::connect(local).await.expect("connect");
            s.write_all(line).await.expect("write");
            s
        };
        let _before = send(b"before\n").await;
        let frame = tokio::time::timeout(Duration::from_secs(10), receiver.recv())
            .await
            .expect("in time");
        assert_eq!(frame.map(|f| f.payload), Some("before".into()));

        dup.shutdown(Shutdown::Both).expect("shutdown");
        drop(dup);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while shared.counters.snapshot().listener_rebuilds == 0 {
            assert!(tokio::time::Instant::now() < deadline, "not rebuilt");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(shared.counters.snapshot().accept_errors >= 1);

        let _after = send(b"after\n").await;
        let frame = tokio::time::timeout(Duration::from_secs(10), receiver.recv())
            .await
            .expect("in time");
        assert_eq!(frame.map(|f| f.payload), Some("after".into()));
        cancel.cancel();
        task.await.expect("accept loop ends");
    }
}

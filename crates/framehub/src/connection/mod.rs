//! One task per connection: the async driver around the connection's
//! protocol core. It reads into one buffer, hands each read to the core
//! ([`proto`]), pushes the read's frames to their queue or group stream (or
//! the request handler, [`dispatch`]) in one push, and sleeps until the
//! core's next deadline. Writing to the client is the egress writer's job.
//! Before any of it, a PROXY protocol header, when the listener expects
//! one, settles who the peer is ([`proxy`]).
//! On a TLS listener the handshake runs here first, in the connection's
//! own task, so a slow or silent client never holds up the accept loop.
//!
//! Memory per connection is bounded by one read plus `max_frame_bytes`:
//! the decoders never keep more. Frames that wait in a queue never pin much
//! more than their own size ([`arena`]).

mod arena;
mod deliver;
mod dispatch;
pub(crate) mod proto;
pub(crate) mod proxy;
pub(crate) mod readbuf;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use self::deliver::Delivery;
use self::proto::Core;
use self::readbuf::ReadBuffer;
use crate::ack::Binding;
use crate::config::{Protocol, ProxyProtocol};
use crate::context::ListenerShared;
use crate::egress::EgressWriter;
use crate::event::{CloseReason, ConnectionCounts, ConnectionEvent};
use crate::frame::Source;
use crate::history::ClosedConnection;
use crate::node::push_json_string;
use crate::reason::TlsFailure;
use crate::registry::Peer;
use crate::stats::{LinkCounters, ListenerCounters};
use crate::transport::Transport;

/// A deadline that never comes, for timers whose branch is off.
const FAR_FUTURE: Duration = Duration::from_secs(86400 * 365);

/// Serves one accepted connection until it ends; the permit of the
/// connection limit is released when this returns.
pub(crate) async fn serve(
    shared: Arc<ListenerShared>,
    mut stream: TcpStream,
    socket_peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let opened = SystemTime::now();
    // Who the peer is, settled once and before anything that shows it
    // (the registry's handle, the frames' source, events, logs) exists:
    // behind a load balancer, the device its PROXY header names.
    // The header reader's state is boxed, and only when there can be a
    // header: inline, it would widen this task's future, which an idle
    // connection keeps for as long as it is open (issue 16).
    let origin = if shared.config.proxy_protocol == ProxyProtocol::Off {
        Ok(socket_peer)
    } else {
        Box::pin(proxy::origin(&shared, &mut stream, socket_peer)).await
    };
    let peer = match origin {
        Ok(peer) => peer,
        Err(reason) => return refuse(&shared, socket_peer, opened, reason),
    };
    let conn = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    if peer == socket_peer {
        tracing::debug!(%peer, conn, listener = %shared.name, "connection accepted");
    } else {
        tracing::debug!(%peer, conn, listener = %shared.name, proxy = %socket_peer, "connection accepted");
    }
    shared.emit(ConnectionEvent::Connected {
        conn,
        peer,
        listener: shared.name.clone(),
    });
    // A PROXY protocol header, when the listener expects one, comes in
    // plaintext ahead of everything else: it is read here, before the TLS
    // handshake.
    let (transport, identity) = match secure(&shared, stream).await {
        Ok(secured) => secured,
        Err(reason) => return refused(&shared, (conn, peer, opened), reason),
    };
    let link = Arc::new(Peer::new(
        conn,
        peer,
        shared.cancel.child_token(),
        shared.config.egress_buffer_bytes.0,
    ));
    shared.peers.insert(link.clone());
    // The writer task owns the write half, so a client that does not read
    // can never hold up this read loop.
    let (reader, writer) = transport.into_split();
    let egress = EgressWriter::spawn(writer, link.clone(), shared.clone());
    let mut driver = Driver::new(shared.clone(), link.clone(), identity);
    if let Some(node) = driver.core.take_bound() {
        // Bound by its certificate: the node is known before any frame.
        driver.bind(node);
    }
    let reason = driver.run(reader).await;
    shared.peers.remove(conn);
    if let Some(dispatcher) = driver.delivery.take_dispatcher() {
        // A peer that half-closed after its last request still gets the
        // replies to all of them; any other end abandons them.
        let answer = reason == CloseReason::PeerClosed;
        let grace = shared
            .handler
            .as_ref()
            .map_or(Duration::ZERO, |h| h.timeout_of());
        let totals = dispatcher.finish(answer).await;
        if answer {
            // A shutdown meanwhile does not wait for a client that reads
            // slowly.
            tokio::select! {
                _ = link.wait_drained(Instant::now() + grace) => {}
                _ = link.cancel.cancelled() => {}
            }
        }
        let counts = &mut driver.core.counts;
        counts.handler_errors = totals.errors;
        counts.handler_timeouts = totals.timeouts;
        counts.handler_panics = totals.panics;
    }
    egress.stop().await;
    let out = &link.counters;
    let counts = &mut driver.core.counts;
    counts.frames_out += out.frames_out.load(Ordering::Relaxed);
    counts.bytes_out += out.bytes_out.load(Ordering::Relaxed);
    counts.replies = out.replies_out.load(Ordering::Relaxed);
    counts.telemetry = counts.frames_out - counts.replies;
    driver.finish(reason);
}

/// Closes a connection before it is served because its PROXY header was
/// refused, or it ended or the hub shut down before the header came: logged
/// with the socket's address, and reported as a connection that opened and
/// closed.
fn refuse(shared: &ListenerShared, peer: SocketAddr, opened: SystemTime, reason: CloseReason) {
    let conn = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    if let CloseReason::ProxyRejected(why) = reason {
        shared.counters.proxy_rejected(why);
        if let Some(suppressed) = shared.close_warning.check() {
            tracing::warn!(%peer, conn, listener = %shared.name, suppressed, "PROXY header refused, closing connection: {why}");
        }
    } else {
        tracing::debug!(%peer, conn, listener = %shared.name, "connection closed before its PROXY header: {reason}");
    }
    shared.emit(ConnectionEvent::Connected {
        conn,
        peer,
        listener: shared.name.clone(),
    });
    refused(shared, (conn, peer, opened), reason);
}

/// The TLS handshake, when the listener has TLS (bounded by its
/// `handshake_timeout`, cut short by shutdown), and the node the client
/// certificate names when it is the identity.
async fn secure(
    shared: &ListenerShared,
    stream: TcpStream,
) -> Result<(Transport, Option<Arc<str>>), CloseReason> {
    let Some(tls) = &shared.tls else {
        return Ok((Transport::Plain(stream), None));
    };
    let stream = tokio::select! {
        biased;
        _ = shared.cancel.cancelled() => return Err(CloseReason::Shutdown),
        // Boxed, like the PROXY header's reader, to keep the handshake's
        // state out of the connection task's future.
        accepted = Box::pin(tls.accept(stream)) => accepted.map_err(CloseReason::TlsFailed)?,
    };
    ListenerCounters::add(&shared.counters.tls_handshakes, 1);
    let auth = &shared.config.auth;
    let identity = if auth.is_by_certificate() && shared.config.protocol == Protocol::Node {
        let node = crate::tls::identity(&stream, auth.identity_from)
            .ok_or(CloseReason::TlsFailed(TlsFailure::NoIdentity))?;
        Some(Arc::from(node))
    } else {
        None
    };
    Ok((Transport::Tls(stream), identity))
}

/// Ends a connection that never got to be served (its PROXY header was
/// refused, its TLS handshake failed, or the hub shut down meanwhile):
/// counted as closed, TLS failures logged within limits, reported.
fn refused(
    shared: &ListenerShared,
    (conn, peer, opened): (u64, SocketAddr, SystemTime),
    reason: CloseReason,
) {
    shared.counters.closed(&reason);
    record_closed(
        shared,
        (conn, peer, opened),
        None,
        &reason,
        &ConnectionCounts::default(),
    );
    if let CloseReason::TlsFailed(failure) = reason {
        shared.counters.tls_failed(failure);
        if let Some(suppressed) = shared.tls_warning.check() {
            tracing::warn!(%peer, conn, listener = %shared.name, suppressed, "closing connection: TLS handshake failed: {failure}");
        }
    }
    shared.emit(ConnectionEvent::Closed {
        conn,
        peer,
        node: None,
        reason,
        counts: ConnectionCounts::default(),
    });
}

/// Why the connection's token was cancelled: the hub is shutting down, or
/// egress found this client too slow.
fn cancel_reason(shared: &ListenerShared, link: &Peer) -> CloseReason {
    if shared.cancel.is_cancelled() {
        CloseReason::Shutdown
    } else if link.rewound.load(Ordering::Relaxed) {
        CloseReason::Rewound
    } else if link.is_slow() {
        CloseReason::SlowClient
    } else if !shared.cancel.is_cancelled() && shared.partial_budget.was_cut(link.conn) {
        CloseReason::PartialBudget
    } else {
        CloseReason::Shutdown
    }
}

/// How acks reach this connection: through its egress buffer, in the
/// listener's framing (`{"type":"ack","seq":N}` with the configured names,
/// or the `length` layout's 8-byte number); and how a rewind closes it.
/// Weak: the ack table never keeps a closed connection alive.
fn ack_binding(shared: &Arc<ListenerShared>, link: &Arc<Peer>, prefixed: bool) -> Binding {
    let (to_shared, to_link) = (Arc::downgrade(shared), Arc::downgrade(link));
    let mut node_ack = Vec::new();
    if !prefixed {
        node_ack.push(b'{');
        push_json_string(&mut node_ack, &shared.config.fields.msg_type);
        node_ack.extend_from_slice(b":\"ack\",");
        push_json_string(&mut node_ack, &shared.config.ack.seq_field);
        node_ack.push(b':');
    }
    let closing = Arc::downgrade(link);
    Binding {
        conn: link.conn,
        send: Box::new(move |seq| {
            let (Some(shared), Some(link)) = (to_shared.upgrade(), to_link.upgrade()) else {
                return;
            };
            let msg = if prefixed {
                seq.to_be_bytes().to_vec()
            } else {
                let mut msg = node_ack.clone();
                msg.extend_from_slice(seq.to_string().as_bytes());
                msg.push(b'}');
                msg
            };
            match crate::egress::encode(&shared, &msg) {
                Ok(wire) => {
                    crate::egress::deliver(&shared, &link, &wire);
                }
                Err(e) => {
                    tracing::warn!(peer = %link.addr, conn = link.conn, "cannot frame an ack: {e}")
                }
            }
        }),
        close: Box::new(move || {
            if let Some(link) = closing.upgrade() {
                link.rewound.store(true, Ordering::Relaxed);
                link.cancel.cancel();
            }
        }),
    }
}

/// The connection task's state around its core: where frames go, and the
/// shared counters it publishes to.
struct Driver {
    shared: Arc<ListenerShared>,
    /// What egress and the statistics share with this task.
    link: Arc<Peer>,
    core: Core,
    /// Where the frames go.
    delivery: Delivery,
    /// Bytes of an unfinished frame this connection holds, as last told
    /// to the hub's `partial_frame_budget`.
    partial_held: usize,
}

impl Driver {
    /// `identity`: the node the client certificate named, which binds the
    /// connection from the start.
    fn new(shared: Arc<ListenerShared>, link: Arc<Peer>, identity: Option<Arc<str>>) -> Driver {
        let source = Source {
            conn: link.conn,
            peer: link.addr,
            listener: shared.name.clone(),
            node: None,
            protocol: shared.config.protocol,
        };
        let mut core = Core::new(
            &shared.config,
            shared.current_node_protocol(),
            source,
            shared.drop_warning.clone(),
            identity,
            Instant::now(),
        );
        if let Some(table) = &shared.acks {
            let prefixed = shared.config.protocol == Protocol::Raw;
            core = core.with_acks(table.clone(), prefixed);
        }
        Driver {
            delivery: Delivery::new(&shared, &link),
            core,
            shared,
            link,
            partial_held: 0,
        }
    }

    async fn run(&mut self, mut stream: impl AsyncRead + Unpin) -> CloseReason {
        let cancel = self.link.cancel.clone();
        let mut read = ReadBuffer::new(self.shared.config.read_buffer_bytes.0);
        self.core.read_buffer_allocated(read.buf.capacity());
        let far = Instant::now() + FAR_FUTURE;
        // The timer is armed at the core's deadline and re-armed only when
        // it fires, not on every read: a deadline that moved (a read, the
        // peer authenticated) just makes it fire early once.
        let mut deadline = self.core.poll_timeout();
        let timer = tokio::time::sleep_until(deadline.unwrap_or(far));
        tokio::pin!(timer);
        loop {
            if let Some(capacity) = read.prepare() {
                // Called only when it must act, so the buffer now starts at
                // the start of its allocation (moved or new).
                self.core.read_buffer_allocated(capacity);
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return cancel_reason(&self.shared, &self.link),
                _ = &mut timer, if deadline.is_some() => {
                    if let Err(reason) = self.core.handle_timeout(Instant::now()) {
                        return reason;
                    }
                    deadline = self.core.poll_timeout();
                    timer.as_mut().reset(deadline.unwrap_or(far));
                }
                result = stream.read_buf(&mut read.buf) => match result {
                    Ok(n) => {
                        if let Err(reason) = self.process(&mut read.buf, n).await {
                            return reason;
                        }
                        read.after_read(n);
                        if n == 0 {
                            return CloseReason::PeerClosed;
                        }
                        // A read may bring a deadline earlier than the one
                        // armed (a frame began: `frame_timeout`).
                        let next = self.core.poll_timeout();
                        if next.is_some_and(|next| deadline.is_none_or(|armed| next < armed)) {
                            deadline = next;
                            timer.as_mut().reset(deadline.unwrap_or(far));
                        }
                    }
                    Err(e) => return CloseReason::ReadError(e.to_string()),
                },
            }
        }
    }

    /// Hands one read (`n == 0`: the end of the stream) to the core, then
    /// its frames to their queue.
    async fn process(&mut self, buf: &mut BytesMut, n: usize) -> Result<(), CloseReason> {
        let decoded = self
            .core
            .handle_read(buf, n, Instant::now(), SystemTime::now());
        // What is left in the buffer is the unfinished frame.
        self.shared.partial_budget.update(
            self.link.conn,
            &mut self.partial_held,
            buf.len(),
            &self.link.cancel,
        );
        if let Some(node) = self.core.take_bound() {
            self.bind(node);
        }
        let flushed = self
            .delivery
            .deliver(&mut self.core, &self.shared, &self.link)
            .await;
        self.publish_counts();
        decoded.and(flushed)
    }

    /// Binds the connection to its node: the node's queue is looked up
    /// once, and the node becomes healthy.
    fn bind(&mut self, node: Arc<str>) {
        let _ = self.link.node.set(node.clone());
        tracing::debug!(peer = %self.link.addr, conn = self.link.conn, node = %node, "connection bound to node");
        self.shared.emit(ConnectionEvent::Authenticated {
            conn: self.link.conn,
            peer: self.link.addr,
            node,
        });
        self.delivery.resolve_queue(self.core.node(), &self.shared);
        if let Some(stream) = self.core.ack_stream() {
            let prefixed = self.core.acks_prefixed();
            stream.bind(ack_binding(&self.shared, &self.link, prefixed), prefixed);
        }
    }

    /// Adds what the core counted since the last read to the listener's
    /// and the connection's shared counters: once per read.
    fn publish_counts(&mut self) {
        let c = &self.shared.counters;
        let p = self.core.take_pending();
        ListenerCounters::add(&c.frames_received, p.frames);
        ListenerCounters::add(&c.bytes_received, p.bytes);
        ListenerCounters::add(&c.frame_bytes_received, p.frame_bytes);
        ListenerCounters::add(&c.heartbeats, p.heartbeats);
        for &(reason, n) in &p.drops {
            c.dropped(reason, n);
        }
        let link = &self.link.counters;
        ListenerCounters::add(&link.frames_in, p.frames);
        ListenerCounters::add(&link.bytes_in, p.bytes);
        ListenerCounters::add(&link.frame_bytes_in, p.frame_bytes);
        ListenerCounters::add(&link.dropped, p.dropped());
        LinkCounters::raise_max(&link.max_frame_in, p.max_frame);
        self.link.touch_read();
    }

    fn finish(mut self, reason: CloseReason) {
        self.shared
            .partial_budget
            .release(self.link.conn, self.partial_held);
        self.publish_counts();
        if let Some(stream) = self.core.ack_stream() {
            stream.unbind(self.link.conn);
        }
        self.delivery.close();
        let shared = &self.shared;
        let (conn, peer) = (self.link.conn, self.link.addr);
        // The statistics no longer see this connection: its largest frame
        // of the current interval is kept on the listener.
        let link = &self.link.counters;
        LinkCounters::raise_max(
            &shared.counters.max_frame_received,
            link.max_frame_in.load(Ordering::Relaxed),
        );
        LinkCounters::raise_max(
            &shared.counters.max_frame_sent,
            link.max_frame_out.load(Ordering::Relaxed),
        );
        shared.counters.closed(&reason);
        let node = self.core.node().cloned();
        match &reason {
            CloseReason::AuthFailed(failure) => {
                ListenerCounters::add(&shared.counters.auth_failures, 1);
                if let Some(suppressed) = shared.auth_warning.check() {
                    tracing::warn!(
                        %peer,
                        conn,
                        listener = %shared.name,
                        suppressed,
                        "authentication failed, closing connection: {failure}"
                    );
                }
            }
            CloseReason::FramingLost(_)
            | CloseReason::ReadError(_)
            | CloseReason::SlowClient
            | CloseReason::FrameTimeout
            | CloseReason::PartialBudget => {
                if let Some(suppressed) = shared.close_warning.check() {
                    tracing::warn!(%peer, conn, node = node.as_deref().unwrap_or("-"), suppressed, "connection closed: {reason}");
                }
            }
            _ => {
                tracing::debug!(%peer, conn, node = node.as_deref().unwrap_or("-"), "connection closed: {reason}");
            }
        }
        record_closed(
            shared,
            (conn, peer, self.link.since),
            node.clone(),
            &reason,
            &self.core.counts,
        );
        shared.emit(ConnectionEvent::Closed {
            conn,
            peer,
            node,
            reason,
            counts: self.core.counts,
        });
    }
}

/// Keeps the record of a connection that ended in the hub's history.
fn record_closed(
    shared: &ListenerShared,
    (id, peer, opened): (u64, SocketAddr, SystemTime),
    node: Option<Arc<str>>,
    reason: &CloseReason,
    counts: &ConnectionCounts,
) {
    shared.history.record(ClosedConnection {
        id,
        listener: shared.name.clone(),
        peer,
        node,
        opened,
        closed: SystemTime::now(),
        reason: reason.clone(),
        frames_in: counts.frames_in,
        bytes_in: counts.bytes_in,
        frames_out: counts.frames_out,
        bytes_out: counts.bytes_out,
        dropped: counts.dropped,
    });
}

//! One task per connection: read into one buffer, cut frames, run the
//! protocol, and hand each read's frames to their queue or group stream in
//! one push. Writing to the client is the egress writer's job.
//!
//! Memory per connection is bounded by one read plus `max_frame_bytes`:
//! the decoders never keep more. Frames that wait in a queue never pin much
//! more than their own size: they are copied out of the read buffer, unless
//! the delivered frames of a read fill at least three quarters of the
//! buffer's allocation, in which case they share it.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use crate::codec::{CodecError, FrameDecoder, consume};
use crate::config::OverflowPolicy;
use crate::egress::EgressWriter;
use crate::event::{CloseReason, ConnectionCounts, ConnectionEvent};
use crate::group::Inbox;
use crate::handler::Dispatcher;
use crate::listener::ListenerShared;
use crate::node::{AuthFailure, NodeSession, Verdict};
use crate::receiver::{Frame, Incoming, Source, compact, pack, share_out};
use crate::registry::Peer;
use crate::stats::{DropReason, LinkCounters, ListenerCounters, WarnLimiter};

/// A deadline that never comes, for timers whose branch is off.
const FAR_FUTURE: Duration = Duration::from_secs(86400 * 365);

/// Serves one accepted connection until it ends; the permit of the
/// connection limit is released when this returns.
pub(crate) async fn serve(
    shared: Arc<ListenerShared>,
    stream: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let conn = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%peer, conn, listener = %shared.name, "connection accepted");
    shared.emit(ConnectionEvent::Connected {
        conn,
        peer,
        listener: shared.name.clone(),
    });
    let peer_state = Arc::new(Peer::new(
        conn,
        peer,
        shared.cancel.child_token(),
        shared.config.egress_buffer_bytes.0,
    ));
    shared.peers.insert(peer_state.clone());
    // The writer task owns the write half, so a client that does not read
    // can never hold up this read loop.
    let (reader, writer) = stream.into_split();
    let egress = EgressWriter::spawn(writer, peer_state.clone(), shared.clone());
    let mut connection = Connection::new(shared.clone(), peer_state.clone());
    connection.dispatcher = shared
        .handler
        .clone()
        .map(|h| Dispatcher::start(h, shared.clone(), peer_state.clone()));
    let reason = connection.run(reader).await;
    shared.peers.remove(conn);
    if let Some(dispatcher) = connection.dispatcher.take() {
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
                _ = peer_state.wait_drained(Instant::now() + grace) => {}
                _ = peer_state.cancel.cancelled() => {}
            }
        }
        connection.counts.handler_errors = totals.errors;
        connection.counts.handler_timeouts = totals.timeouts;
        connection.counts.handler_panics = totals.panics;
    }
    egress.stop().await;
    let link = &peer_state.counters;
    connection.counts.frames_out += link.frames_out.load(Ordering::Relaxed);
    connection.counts.bytes_out += link.bytes_out.load(Ordering::Relaxed);
    connection.counts.replies = link.replies_out.load(Ordering::Relaxed);
    connection.counts.telemetry = connection.counts.frames_out - connection.counts.replies;
    connection.finish(reason);
}

struct Connection {
    shared: Arc<ListenerShared>,
    /// What egress and the statistics share with this task.
    link: Arc<Peer>,
    conn: u64,
    peer: SocketAddr,
    decoder: FrameDecoder,
    /// The node protocol's state; `None` on raw listeners.
    session: Option<NodeSession>,
    /// Stamped on every frame; replaced once when the node binds.
    source: Arc<Source>,
    /// The queue or group stream this connection's frames go to, once
    /// known.
    queue: Option<Inbox>,
    /// Why frames are dropped while there is no queue.
    no_queue: DropReason,
    /// Whether this connection counts towards its node's health.
    bound_to_node: bool,
    /// Frames of the current read, pushed together.
    batch: Vec<Incoming>,
    /// Where the batch's frames lie in the read buffer (in-place decoding).
    spans: Vec<Range<usize>>,
    /// The size of the read buffer's allocation: what a frame handed out
    /// without a copy keeps alive.
    read_alloc: usize,
    counts: ConnectionCounts,
    /// Counts not yet added to the listener's counters.
    pending: Pending,
    warning: WarnLimiter,
    /// The listener's request handler, if it has one: every frame goes to
    /// it instead of a queue.
    dispatcher: Option<Dispatcher>,
}

#[derive(Default)]
struct Pending {
    frames: u64,
    bytes: u64,
    /// Payload bytes of the frames (framing removed), and the largest.
    frame_bytes: u64,
    max_frame: u64,
    heartbeats: u64,
}

impl Connection {
    fn new(shared: Arc<ListenerShared>, link: Arc<Peer>) -> Connection {
        let (conn, peer) = (link.conn, link.addr);
        let config = &shared.config;
        let session = shared
            .node_protocol
            .as_ref()
            .map(|p| NodeSession::new(p.clone()));
        // Until a peer authenticates it may only send a small first message,
        // so an unauthenticated peer cannot make the server buffer 1 MiB.
        let max_frame = match &session {
            Some(s) if !s.is_authenticated() => {
                config.auth.max_frame_bytes.0.min(config.max_frame_bytes.0)
            }
            _ => config.max_frame_bytes.0,
        };
        let source = Arc::new(Source {
            conn,
            peer,
            listener: shared.name.clone(),
            node: None,
            protocol: config.protocol,
        });
        Connection {
            decoder: FrameDecoder::new(&config.framing, max_frame),
            queue: shared.inbox(),
            no_queue: DropReason::MissingNodeId,
            bound_to_node: false,
            session,
            source,
            batch: Vec::new(),
            spans: Vec::new(),
            read_alloc: 0,
            counts: ConnectionCounts::default(),
            pending: Pending::default(),
            warning: WarnLimiter::new(Duration::from_secs(5)),
            dispatcher: None,
            shared,
            link,
            conn,
            peer,
        }
    }

    /// Why the connection's token was cancelled: the hub is shutting down,
    /// or egress found this client too slow.
    fn cancel_reason(&self) -> CloseReason {
        if self.link.is_slow() && !self.shared.cancel.is_cancelled() {
            CloseReason::SlowClient
        } else {
            CloseReason::Shutdown
        }
    }

    fn is_authenticated(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.is_authenticated())
    }

    /// The next moment a timer must look at this connection, if any.
    fn deadline(&self, accepted: Instant, last_read: Instant) -> Option<Instant> {
        let config = &self.shared.config;
        let auth = (!self.is_authenticated()).then(|| accepted + config.auth.timeout);
        let idle = config.idle_timeout.map(|idle| last_read + idle);
        match (auth, idle) {
            (Some(a), Some(i)) => Some(a.min(i)),
            (a, i) => a.or(i),
        }
    }

    async fn run(&mut self, mut stream: impl AsyncRead + Unpin) -> CloseReason {
        let cancel = self.link.cancel.clone();
        let read_size = self.shared.config.read_buffer_bytes.0;
        let mut buf = BytesMut::with_capacity(read_size);
        self.read_alloc = buf.capacity();
        let accepted = Instant::now();
        let mut last_read = accepted;
        // A far-away placeholder when no timer applies; the branch is off.
        let far = accepted + FAR_FUTURE;
        let mut deadline = self.deadline(accepted, last_read);
        let timer = tokio::time::sleep_until(deadline.unwrap_or(far));
        tokio::pin!(timer);
        loop {
            if buf.capacity() - buf.len() < read_size / 2 {
                buf.reserve(read_size);
                // Called only when it must act, so the buffer now starts at
                // the start of its allocation (moved or new).
                self.read_alloc = buf.capacity();
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return self.cancel_reason(),
                _ = &mut timer, if deadline.is_some() => {
                    // The timer is only re-armed here, not on every read:
                    // reads just move `last_read`.
                    let now = Instant::now();
                    if !self.is_authenticated() && now >= accepted + self.shared.config.auth.timeout {
                        return CloseReason::AuthFailed(AuthFailure::Timeout);
                    }
                    if let Some(idle) = self.shared.config.idle_timeout
                        && now >= last_read + idle {
                            return CloseReason::IdleTimeout;
                        }
                    deadline = self.deadline(accepted, last_read);
                    timer.as_mut().reset(deadline.unwrap_or(far));
                }
                read = stream.read_buf(&mut buf) => match read {
                    Ok(0) => {
                        let end = self.process(&mut buf, true).await;
                        return end.err().unwrap_or(CloseReason::PeerClosed);
                    }
                    Ok(n) => {
                        last_read = Instant::now();
                        self.counts.bytes_in += n as u64;
                        self.pending.bytes += n as u64;
                        let was_authenticated = self.is_authenticated();
                        if let Err(reason) = self.process(&mut buf, false).await {
                            return reason;
                        }
                        if !was_authenticated && self.is_authenticated() {
                            // The auth deadline no longer applies.
                            deadline = self.deadline(accepted, last_read);
                            timer.as_mut().reset(deadline.unwrap_or(far));
                        }
                    }
                    Err(e) => return CloseReason::ReadError(e.to_string()),
                },
            }
        }
    }

    /// Cuts every complete frame out of `buf`, runs each through the
    /// protocol, and pushes the read's frames to their queue.
    async fn process(&mut self, buf: &mut BytesMut, eof: bool) -> Result<(), CloseReason> {
        let received_at = SystemTime::now();
        let result = if self.decoder.decodes_in_place() {
            self.decode_in_place(buf, eof, received_at)
        } else {
            self.decode_and_cut(buf, eof, received_at)
        };
        let flushed = self.flush_batch().await;
        self.publish_counts();
        result.and(flushed)
    }

    /// The decode loop of framings whose frames are found where they lie in
    /// the read (`lines`, `cobs`): each frame is checked in place (a COBS
    /// frame first decoded straight into this read's arena). The delivered
    /// ones either share the read buffer, when they fill most of its
    /// allocation, or are copied once into an allocation of about their
    /// size; the buffer is never split per frame.
    fn decode_in_place(
        &mut self,
        buf: &mut BytesMut,
        eof: bool,
        received_at: SystemTime,
    ) -> Result<(), CloseReason> {
        let first = self.batch.len();
        self.spans.clear();
        let encoded = self.decoder.finds_encoded();
        // Decoded frames go here as they are found (a payload is never
        // longer than its encoding); plain ones are copied once at the end.
        let mut decoded = BytesMut::new();
        let mut pos = 0;
        let result = loop {
            let span = match self.decoder.next_in(buf, &mut pos, eof) {
                Ok(Some(span)) => span,
                Ok(None) => break Ok(()),
                Err(e) => match self.handle_codec_error(e) {
                    Ok(()) => continue,
                    Err(reason) => break Err(reason),
                },
            };
            let (frame, span) = if encoded {
                if decoded.capacity() == 0 {
                    decoded.reserve(buf.len() - span.start);
                }
                let start = decoded.len();
                if let Err(e) = self.decoder.decode_found(&buf[span], &mut decoded) {
                    match self.handle_codec_error(e) {
                        Ok(()) => continue,
                        Err(reason) => break Err(reason),
                    }
                }
                (&decoded[start..], start..decoded.len())
            } else {
                (&buf[span.clone()], span)
            };
            match self.accept(frame) {
                Ok(Some(timestamp)) => {
                    self.spans.push(span);
                    self.push_frame(Bytes::new(), received_at, timestamp);
                }
                Ok(None) if encoded => decoded.truncate(span.start),
                Ok(None) => {}
                Err(reason) => break Err(reason),
            }
        };
        let spans = &self.spans;
        let delivered: usize = spans.iter().map(|span| span.len()).sum();
        if !encoded && delivered * 4 >= self.read_alloc * 3 {
            // This read's delivered frames fill three quarters of the read
            // buffer's allocation: hand out slices of it instead of copying
            // them. What they keep alive is at most a third more than their
            // own size; the next reads go to what is left of it, then to a
            // fresh buffer.
            let read = buf.split_to(pos).freeze();
            for (item, span) in self.batch[first..].iter_mut().zip(spans) {
                item.frame.payload = read.slice(span.clone());
            }
            return result;
        }
        let arena = if encoded {
            // Sized for the whole read: copied to an exact allocation when
            // skipped or invalid frames left much of it unused.
            if decoded.capacity() > 2 * decoded.len() + 4096 {
                pack(std::iter::once(&decoded[..]))
            } else {
                decoded.freeze()
            }
        } else {
            pack(spans.iter().map(|span| &buf[span.clone()]))
        };
        share_out(&mut self.batch[first..], arena, |i, _| spans[i].len());
        consume(buf, pos);
        result
    }

    /// The decode loop of the other framings (`length`, `spacepacket`,
    /// `chunk`): each frame is cut out of the buffer, and the read's frames
    /// are then copied into one allocation of their size.
    fn decode_and_cut(
        &mut self,
        buf: &mut BytesMut,
        eof: bool,
        received_at: SystemTime,
    ) -> Result<(), CloseReason> {
        let first = self.batch.len();
        let result = loop {
            let decoded = if eof {
                self.decoder.decode_eof(buf)
            } else {
                self.decoder.decode(buf)
            };
            match decoded {
                Ok(Some(frame)) => match self.accept(&frame) {
                    Ok(Some(timestamp)) => self.push_frame(frame, received_at, timestamp),
                    Ok(None) => {}
                    Err(reason) => break Err(reason),
                },
                Ok(None) => break Ok(()),
                Err(e) => {
                    if let Err(reason) = self.handle_codec_error(e) {
                        break Err(reason);
                    }
                }
            }
        };
        compact(&mut self.batch[first..]);
        result
    }

    fn handle_codec_error(&mut self, e: CodecError) -> Result<(), CloseReason> {
        if matches!(e, CodecError::Oversize { .. }) && !self.is_authenticated() {
            return Err(CloseReason::AuthFailed(AuthFailure::FirstMessageTooLarge));
        }
        if e.is_fatal() {
            return Err(CloseReason::FramingLost(e.to_string()));
        }
        let reason = match e {
            CodecError::InvalidCobs => DropReason::InvalidCobs,
            CodecError::InvalidHeader => DropReason::InvalidHeader,
            CodecError::UnknownPacketId { .. } => DropReason::UnknownPacketId,
            CodecError::Truncated { .. } => DropReason::Truncated,
            _ => DropReason::Oversize,
        };
        self.drop_frames(reason, 1, &e);
        Ok(())
    }

    /// Counts a frame and runs it through the protocol. `Ok(Some(timestamp))`:
    /// deliver it, with the span of its dedup key; `Ok(None)`: it was a
    /// heartbeat or was skipped (and counted).
    fn accept(&mut self, payload: &[u8]) -> Result<Option<Option<Range<usize>>>, CloseReason> {
        self.counts.frames_in += 1;
        self.pending.frames += 1;
        let len = payload.len() as u64;
        self.pending.frame_bytes += len;
        self.pending.max_frame = self.pending.max_frame.max(len);
        let Some(session) = self.session.as_mut() else {
            return Ok(Some(None));
        };
        let verdict = session.handle(payload);
        if let Some(node) = session.take_just_bound() {
            self.bind(node);
        }
        match verdict {
            Verdict::Deliver { timestamp } => Ok(Some(timestamp)),
            Verdict::Heartbeat => {
                self.pending.heartbeats += 1;
                Ok(None)
            }
            Verdict::Skip(reason) => {
                self.drop_frames(reason, 1, &reason.as_str());
                Ok(None)
            }
            Verdict::Reject(failure) => Err(CloseReason::AuthFailed(failure)),
        }
    }

    fn push_frame(
        &mut self,
        payload: Bytes,
        received_at: SystemTime,
        timestamp: Option<Range<usize>>,
    ) {
        self.batch.push(Incoming::new(
            Frame {
                payload,
                received_at,
                source: self.source.clone(),
            },
            timestamp,
        ));
    }

    /// Binds the connection to its node: the frames' source names it, the
    /// node's queue is looked up once, and the node becomes healthy.
    fn bind(&mut self, node: Arc<str>) {
        // Authenticated now: frames may be as large as any other.
        self.decoder
            .set_max_frame_bytes(self.shared.config.max_frame_bytes.0);
        self.source = Arc::new(Source {
            node: Some(node.clone()),
            ..(*self.source).clone()
        });
        let _ = self.link.node.set(node.clone());
        tracing::debug!(peer = %self.peer, conn = self.conn, node = %node, "connection bound to node");
        self.shared.emit(ConnectionEvent::Authenticated {
            conn: self.conn,
            peer: self.peer,
            node,
        });
        self.resolve_queue();
    }

    fn resolve_queue(&mut self) {
        let Some(node) = self.source.node.as_deref() else {
            return;
        };
        if self.shared.groups.is_some() {
            // Grouped delivery: every frame goes to the listener's stream.
            return;
        }
        match self.shared.router.resolve(node, self.shared.config.queue) {
            Ok(queue) => {
                queue.connection_bound();
                self.bound_to_node = true;
                self.queue = Some(Inbox::Queue(queue));
            }
            Err(reason) => self.no_queue = reason,
        }
    }

    async fn flush_batch(&mut self) -> Result<(), CloseReason> {
        if self.batch.is_empty() {
            return Ok(());
        }
        if self.dispatcher.is_some() {
            return self.dispatch_batch().await;
        }
        if self.queue.is_none() {
            // The node was unknown at bind time; it may have been
            // registered since. One lookup per read, not per frame.
            self.resolve_queue();
        }
        let Some(queue) = self.queue.clone() else {
            let n = self.batch.len() as u64;
            self.batch.clear();
            let reason = self.no_queue;
            self.drop_frames(reason, n, &"no receiver for this node");
            return Ok(());
        };
        // A consumer that keeps up on average may just not have been
        // scheduled yet: until `full_grace` has passed, frames that do not
        // fit wait for room instead of being dropped.
        let grace = match queue.policy() {
            OverflowPolicy::Block => None,
            _ => Some(Instant::now() + queue.full_grace()),
        };
        loop {
            let may_drop = grace.is_some_and(|deadline| Instant::now() >= deadline);
            let out = queue.push(&mut self.batch, may_drop);
            let counters = &self.shared.counters;
            self.counts.delivered += out.enqueued as u64;
            let dropped = (out.dropped_full + out.dropped_closed) as u64;
            self.counts.dropped += dropped;
            ListenerCounters::add(&self.link.counters.dropped, dropped);
            ListenerCounters::add(&counters.frames_delivered, out.enqueued as u64);
            ListenerCounters::add(&counters.duplicates, out.duplicates as u64);
            ListenerCounters::add(&counters.groups_published, out.groups_published as u64);
            counters.dropped(DropReason::QueueFull, out.dropped_full as u64);
            counters.dropped(DropReason::ReceiverClosed, out.dropped_closed as u64);
            if out.dropped_full > 0
                && let Some(suppressed) = queue.full_warning().check()
            {
                tracing::warn!(
                    node = %queue.name(),
                    peer = %self.peer,
                    conn = self.conn,
                    policy = ?queue.policy(),
                    suppressed,
                    "receiver queue full; dropping frames"
                );
            }
            if self.batch.is_empty() {
                if out.filling {
                    // A busy socket would otherwise be read again and again
                    // (tokio's budget allows 128 reads) before the consumer
                    // gets a turn: let it drain before the queue overflows.
                    tokio::task::yield_now().await;
                }
                return Ok(());
            }
            // Stop reading this socket until the consumer makes room (for
            // good with `block`, so TCP pushes back on the sender; until the
            // grace ends otherwise).
            let deadline = grace.unwrap_or(Instant::now() + FAR_FUTURE);
            tokio::select! {
                biased;
                _ = self.link.cancel.cancelled() => {
                    let n = self.batch.len() as u64;
                    self.batch.clear();
                    self.counts.dropped += n;
                    ListenerCounters::add(&self.link.counters.dropped, n);
                    counters.dropped(DropReason::QueueFull, n);
                    return Err(self.cancel_reason());
                }
                // Room for the whole rest (or a full queue's worth): waking
                // for a handful of slots would push a few frames per wakeup.
                _ = queue.has_room(self.batch.len()) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Hands the read's frames to the request handler, in order, waiting
    /// while the connection has `max_in_flight` requests unanswered.
    async fn dispatch_batch(&mut self) -> Result<(), CloseReason> {
        // (The batch was compacted as it was decoded: a request waiting in
        // the handler does not pin the read buffer.)
        let Some(dispatcher) = &self.dispatcher else {
            return Ok(());
        };
        let cancel = &self.link.cancel;
        let mut dispatched = 0;
        let mut refused = 0;
        // Drained in place: the batch keeps its allocation for the next
        // read.
        let mut items = self.batch.drain(..);
        for item in items.by_ref() {
            if dispatcher
                .dispatch(item.frame.payload, item.frame.source, cancel)
                .await
                .is_err()
            {
                // The one refused plus the rest of the read.
                refused = 1 + items.len() as u64;
                break;
            }
            dispatched += 1;
        }
        drop(items);
        self.counts.requests += dispatched;
        if refused > 0 {
            let n = refused;
            self.counts.dropped += n;
            ListenerCounters::add(&self.link.counters.dropped, n);
            self.shared.counters.dropped(DropReason::Unanswered, n);
            return Err(self.cancel_reason());
        }
        Ok(())
    }

    fn drop_frames(&mut self, reason: DropReason, n: u64, why: &dyn std::fmt::Display) {
        self.counts.dropped += n;
        ListenerCounters::add(&self.link.counters.dropped, n);
        self.shared.counters.dropped(reason, n);
        // Limited per connection, and per listener so that a peer which
        // reconnects after every bad frame cannot flood the log either.
        let allowed = self.warning.check().and_then(|mine| {
            self.shared
                .drop_warning
                .check()
                .map(|listener| mine + listener)
        });
        if let Some(suppressed) = allowed {
            tracing::warn!(
                peer = %self.peer,
                conn = self.conn,
                node = self.source.node.as_deref().unwrap_or("-"),
                reason = reason.as_str(),
                suppressed,
                "dropping frame: {why}"
            );
        }
    }

    fn publish_counts(&mut self) {
        let c = &self.shared.counters;
        let p = std::mem::take(&mut self.pending);
        ListenerCounters::add(&c.frames_received, p.frames);
        ListenerCounters::add(&c.bytes_received, p.bytes);
        ListenerCounters::add(&c.frame_bytes_received, p.frame_bytes);
        ListenerCounters::add(&c.heartbeats, p.heartbeats);
        let link = &self.link.counters;
        ListenerCounters::add(&link.frames_in, p.frames);
        ListenerCounters::add(&link.bytes_in, p.bytes);
        ListenerCounters::add(&link.frame_bytes_in, p.frame_bytes);
        LinkCounters::raise_max(&link.max_frame_in, p.max_frame);
        self.link.touch_read();
    }

    fn finish(mut self, reason: CloseReason) {
        self.publish_counts();
        if self.bound_to_node
            && let Some(Inbox::Queue(queue)) = &self.queue
        {
            queue.connection_unbound();
        }
        let shared = &self.shared;
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
        let node = self.source.node.clone();
        match &reason {
            CloseReason::AuthFailed(failure) => {
                ListenerCounters::add(&shared.counters.auth_failures, 1);
                if let Some(suppressed) = shared.auth_warning.check() {
                    tracing::warn!(
                        peer = %self.peer,
                        conn = self.conn,
                        listener = %shared.name,
                        suppressed,
                        "authentication failed, closing connection: {failure}"
                    );
                }
            }
            CloseReason::FramingLost(_) | CloseReason::ReadError(_) | CloseReason::SlowClient => {
                if let Some(suppressed) = shared.close_warning.check() {
                    tracing::warn!(peer = %self.peer, conn = self.conn, node = node.as_deref().unwrap_or("-"), suppressed, "connection closed: {reason}");
                }
            }
            _ => {
                tracing::debug!(peer = %self.peer, conn = self.conn, node = node.as_deref().unwrap_or("-"), "connection closed: {reason}");
            }
        }
        shared.emit(ConnectionEvent::Closed {
            conn: self.conn,
            peer: self.peer,
            node,
            reason,
            counts: self.counts,
        });
    }
}

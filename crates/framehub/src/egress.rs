//! Egress: everything the hub writes to clients, through one writer task
//! and one egress buffer, bounded in bytes, per connection. Messages from
//! [`crate::Hub::broadcast`], [`crate::Hub::send_to_connection`] and
//! [`crate::Hub::send_to_node`], and the listener's server heartbeat, all
//! take this one path.
//!
//! Offering a message never waits: it is copied into the client's buffer
//! or, when that is full, dropped for that client (counted) or the client
//! is disconnected (`slow_client = "disconnect"`). A client that stops
//! reading therefore fills only its own buffer and stalls only its own
//! writer; no other client and no read loop ever waits for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::codec::Encoder;
use tokio_util::sync::CancellationToken;

use crate::codec::{CodecError, FrameEncoder};
use crate::config::SlowClientPolicy;
use crate::context::ListenerShared;
use crate::stats::{DropReason, LinkCounters, ListenerCounters};

/// A writer keeps its drained buffer for the next batch only up to this
/// capacity, so an idle client does not hold on to a burst's worth.
const KEEP_BUFFER: usize = 64 << 10;

/// Why an egress message could not be sent to anyone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// No listener has this name.
    #[error("no listener named {0:?}")]
    UnknownListener(String),
    /// The listener's framing cannot carry this message (a `lines` message
    /// with a newline, a message over `max_frame_bytes`, an empty `chunk`,
    /// ...).
    #[error("listener {listener:?} cannot frame this message: {source}")]
    Unencodable {
        /// The listener whose framing refused it.
        listener: String,
        /// Why.
        source: CodecError,
    },
    /// The framed message is larger than a whole egress buffer, so no
    /// client could ever take it.
    #[error(
        "a {len}-byte message cannot fit an egress buffer of {limit} bytes (listener {listener:?})"
    )]
    LargerThanBuffer {
        /// The listener.
        listener: String,
        /// The framed message's length.
        len: usize,
        /// The listener's `egress_buffer_bytes`.
        limit: usize,
    },
}

/// What a client's buffer did with an offered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offer {
    Taken,
    Full,
    Closed,
}

/// Bytes waiting for one client's socket.
#[derive(Default)]
struct Outbox {
    /// Messages not yet taken by the writer, already framed.
    pending: BytesMut,
    pending_msgs: u64,
    /// Of `pending_msgs`, the request handler's replies.
    pending_replies: u64,
    /// Bytes and messages the writer is writing now; they count against
    /// the limit until the socket has taken them.
    in_flight: usize,
    in_flight_msgs: u64,
    in_flight_replies: u64,
    /// The connection is closing: nothing more is taken.
    closed: bool,
}

/// One connection as egress and the statistics see it: its address, node,
/// live counters, egress buffer, and the token that disconnects it.
pub(crate) struct Peer {
    pub(crate) conn: u64,
    pub(crate) addr: SocketAddr,
    /// Set once when a node-protocol connection binds to its node.
    pub(crate) node: OnceLock<Arc<str>>,
    pub(crate) counters: LinkCounters,
    /// When the connection was accepted, for `Hub::connections`.
    pub(crate) since: SystemTime,
    accepted: Instant,
    /// Nanoseconds after `accepted` at which the last read completed.
    last_read_nanos: AtomicU64,
    /// Cancelled when the listener shuts down or this client is
    /// disconnected for being slow; the read loop stops on it.
    pub(crate) cancel: CancellationToken,
    slow: AtomicBool,
    limit: usize,
    outbox: Mutex<Outbox>,
    wake: Notify,
    /// Told whenever the writer has written everything it had.
    drained: Notify,
}

impl Peer {
    pub(crate) fn new(
        conn: u64,
        addr: SocketAddr,
        cancel: CancellationToken,
        limit: usize,
    ) -> Peer {
        Peer {
            conn,
            addr,
            node: OnceLock::new(),
            counters: LinkCounters::default(),
            since: SystemTime::now(),
            accepted: Instant::now(),
            last_read_nanos: AtomicU64::new(0),
            cancel,
            slow: AtomicBool::new(false),
            limit,
            outbox: Mutex::new(Outbox::default()),
            wake: Notify::new(),
            drained: Notify::new(),
        }
    }

    /// Records that a read just completed (once per read).
    pub(crate) fn touch_read(&self) {
        let nanos = u64::try_from(self.accepted.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_read_nanos.store(nanos, Ordering::Relaxed);
    }

    /// How long ago the last read completed (since the connection was
    /// accepted, if nothing was read yet).
    pub(crate) fn idle(&self, now: Instant) -> Duration {
        let last =
            self.accepted + Duration::from_nanos(self.last_read_nanos.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }

    /// Bytes queued or being written to the client now.
    pub(crate) fn egress_pending(&self) -> usize {
        let outbox = self.outbox.lock();
        outbox.pending.len() + outbox.in_flight
    }

    /// Whether this client was disconnected because its buffer was full.
    pub(crate) fn is_slow(&self) -> bool {
        self.slow.load(Ordering::Relaxed)
    }

    /// Copies one framed message (a handler's reply if `reply`) into the
    /// buffer if it fits.
    fn offer(&self, wire: &[u8], reply: bool) -> Offer {
        let mut outbox = self.outbox.lock();
        if outbox.closed {
            return Offer::Closed;
        }
        if outbox.pending.len() + outbox.in_flight + wire.len() > self.limit {
            return Offer::Full;
        }
        outbox.pending.extend_from_slice(wire);
        outbox.pending_msgs += 1;
        outbox.pending_replies += u64::from(reply);
        drop(outbox);
        LinkCounters::raise_max(&self.counters.max_frame_out, wire.len() as u64);
        self.wake.notify_one();
        Offer::Taken
    }

    /// Queues a heartbeat only when nothing else is queued or being
    /// written: a heartbeat says "the link is alive", which any other
    /// message says as well, and ticks that come while a write is stuck
    /// must not pile up behind it.
    fn offer_heartbeat(&self, wire: &[u8]) -> bool {
        let mut outbox = self.outbox.lock();
        if outbox.closed || !outbox.pending.is_empty() || outbox.in_flight > 0 {
            return false;
        }
        outbox.pending.extend_from_slice(wire);
        outbox.pending_msgs += 1;
        true
    }

    /// Hands everything pending to the writer, leaving `spare` (empty) in
    /// its place so the next messages reuse its allocation.
    fn take(&self, spare: BytesMut) -> Option<(BytesMut, u64, u64)> {
        let mut outbox = self.outbox.lock();
        if outbox.pending.is_empty() {
            return None;
        }
        let taken = std::mem::replace(&mut outbox.pending, spare);
        let msgs = std::mem::take(&mut outbox.pending_msgs);
        let replies = std::mem::take(&mut outbox.pending_replies);
        outbox.in_flight = taken.len();
        outbox.in_flight_msgs = msgs;
        outbox.in_flight_replies = replies;
        Some((taken, msgs, replies))
    }

    fn written(&self) {
        let mut outbox = self.outbox.lock();
        outbox.in_flight = 0;
        outbox.in_flight_msgs = 0;
        outbox.in_flight_replies = 0;
        if outbox.pending.is_empty() {
            self.drained.notify_waiters();
        }
    }

    /// Waits until everything queued so far has been written, the writer
    /// stopped, or `deadline` passed: a peer that half-closed after its
    /// last request still gets the replies to it.
    pub(crate) async fn wait_drained(&self, deadline: tokio::time::Instant) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            // Registered before looking, so a wakeup in between is not lost.
            drained.as_mut().enable();
            {
                let outbox = self.outbox.lock();
                if outbox.closed || (outbox.pending.is_empty() && outbox.in_flight == 0) {
                    return;
                }
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                return;
            }
        }
    }

    /// Takes nothing more; returns the messages that were never written.
    fn close(&self) -> u64 {
        let mut outbox = self.outbox.lock();
        outbox.closed = true;
        self.drained.notify_waiters();
        let unsent = outbox.pending_msgs + outbox.in_flight_msgs;
        *outbox = Outbox {
            closed: true,
            ..Outbox::default()
        };
        unsent
    }

    /// Bytes queued or being written now.
    #[cfg(test)]
    fn buffered(&self) -> usize {
        let outbox = self.outbox.lock();
        outbox.pending.len() + outbox.in_flight
    }
}

/// The open connections of one listener, by id: what egress sends to and
/// the statistics read. Touched once when a connection opens and once when
/// it closes, never per frame.
#[derive(Default)]
pub(crate) struct Peers {
    map: RwLock<HashMap<u64, Arc<Peer>>>,
}

impl Peers {
    pub(crate) fn insert(&self, peer: Arc<Peer>) {
        self.map.write().insert(peer.conn, peer);
    }

    pub(crate) fn remove(&self, conn: u64) {
        self.map.write().remove(&conn);
    }

    pub(crate) fn get(&self, conn: u64) -> Option<Arc<Peer>> {
        self.map.read().get(&conn).cloned()
    }

    /// Runs `f` on every open connection, under the read lock: `f` must not
    /// wait.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Arc<Peer>)) {
        for peer in self.map.read().values() {
            f(peer);
        }
    }
}

/// Frames `msg` in the listener's framing, checked against its limits.
pub(crate) fn encode(shared: &ListenerShared, msg: &[u8]) -> Result<Bytes, EgressError> {
    let config = &shared.config;
    let mut wire = BytesMut::new();
    FrameEncoder::new(&config.framing, config.max_frame_bytes.0)
        .encode(msg, &mut wire)
        .map_err(|source| EgressError::Unencodable {
            listener: shared.name.to_string(),
            source,
        })?;
    if wire.is_empty() {
        return Err(EgressError::Unencodable {
            listener: shared.name.to_string(),
            source: CodecError::Unencodable("an empty message writes nothing in this framing"),
        });
    }
    let limit = config.egress_buffer_bytes.0;
    if wire.len() > limit {
        return Err(EgressError::LargerThanBuffer {
            listener: shared.name.to_string(),
            len: wire.len(),
            limit,
        });
    }
    Ok(wire.freeze())
}

/// Offers one framed message to one client; true if it was taken. A full
/// buffer drops the message for this client, or disconnects it, by the
/// listener's `slow_client` policy; both are counted.
pub(crate) fn deliver(shared: &ListenerShared, peer: &Peer, wire: &[u8]) -> bool {
    offer(shared, peer, wire, false)
}

/// [`deliver`] for a request handler's reply, counted as one.
pub(crate) fn deliver_reply(shared: &ListenerShared, peer: &Peer, wire: &[u8]) -> bool {
    offer(shared, peer, wire, true)
}

fn offer(shared: &ListenerShared, peer: &Peer, wire: &[u8], reply: bool) -> bool {
    let counters = &shared.counters;
    match peer.offer(wire, reply) {
        Offer::Taken => true,
        Offer::Closed => {
            counters.dropped(DropReason::EgressUnsent, 1);
            false
        }
        Offer::Full => {
            counters.dropped(DropReason::EgressFull, 1);
            ListenerCounters::add(&peer.counters.dropped, 1);
            match shared.config.slow_client {
                SlowClientPolicy::Drop => {
                    if let Some(suppressed) = shared.egress_warning.check() {
                        tracing::warn!(
                            peer = %peer.addr,
                            conn = peer.conn,
                            listener = %shared.name,
                            suppressed,
                            "egress buffer full; dropping message for this client"
                        );
                    }
                }
                SlowClientPolicy::Disconnect => {
                    if !peer.slow.swap(true, Ordering::Relaxed) {
                        ListenerCounters::add(&counters.slow_clients_disconnected, 1);
                        tracing::warn!(
                            peer = %peer.addr,
                            conn = peer.conn,
                            listener = %shared.name,
                            "egress buffer full; disconnecting slow client"
                        );
                        peer.cancel.cancel();
                    }
                }
            }
            false
        }
    }
}

/// Sends `msg` to every open connection of one listener; returns how many
/// took it. With no connection open it is dropped and counted.
pub(crate) fn broadcast(shared: &ListenerShared, msg: &[u8]) -> Result<usize, EgressError> {
    let wire = encode(shared, msg)?;
    let mut taken = 0;
    let mut offered = 0;
    shared.peers.for_each(|peer| {
        offered += 1;
        if deliver(shared, peer, &wire) {
            taken += 1;
        }
    });
    if offered == 0 {
        shared.counters.dropped(DropReason::NoClient, 1);
    }
    Ok(taken)
}

/// A running egress writer; [`EgressWriter::stop`] ends it.
pub(crate) struct EgressWriter {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl EgressWriter {
    /// Starts the writer of one connection. It owns the write half, so a
    /// client that stops reading stalls only this task: the read loop goes
    /// on (its own `idle_timeout` decides about silent peers), and
    /// messages for this client wait in its bounded buffer.
    pub(crate) fn spawn(
        writer: OwnedWriteHalf,
        peer: Arc<Peer>,
        listener: Arc<ListenerShared>,
    ) -> EgressWriter {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(writer, peer, listener, stop.clone()));
        EgressWriter { stop, task }
    }

    /// Stops the writer, abandoning a write in progress (the connection is
    /// closing anyway), and waits for it, so the socket is closed once the
    /// caller drops the read half.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn run(
    mut writer: OwnedWriteHalf,
    peer: Arc<Peer>,
    listener: Arc<ListenerShared>,
    stop: CancellationToken,
) {
    let heartbeat = listener.heartbeat.clone();
    // Without a heartbeat the tick branch is off; the period is a harmless
    // placeholder.
    let every = heartbeat
        .as_ref()
        .map_or(Duration::from_secs(3600), |(_, every)| *every);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    // The first tick is immediate; the first heartbeat is due one interval
    // after the connection opened.
    tick.tick().await;
    let counters = &listener.counters;
    let mut spare = BytesMut::new();
    'serve: loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = peer.wake.notified() => {}
            _ = tick.tick(), if heartbeat.is_some() => {
                if let Some((frame, _)) = &heartbeat {
                    peer.offer_heartbeat(frame);
                }
            }
        }
        while let Some((buf, msgs, replies)) = peer.take(std::mem::take(&mut spare)) {
            let result = tokio::select! {
                biased;
                _ = stop.cancelled() => break 'serve,
                result = writer.write_all(&buf) => result,
            };
            if let Err(e) = result {
                // The read loop sees the same dead socket and ends the
                // connection; until then, writing more would fail again.
                tracing::debug!(peer = %peer.addr, conn = peer.conn, error = %e, "egress write failed");
                break 'serve;
            }
            peer.written();
            let len = buf.len() as u64;
            ListenerCounters::add(&peer.counters.frames_out, msgs);
            ListenerCounters::add(&peer.counters.replies_out, replies);
            ListenerCounters::add(&counters.replies_sent, replies);
            ListenerCounters::add(&peer.counters.bytes_out, len);
            ListenerCounters::add(&counters.frames_sent, msgs);
            ListenerCounters::add(&counters.bytes_sent, len);
            if buf.capacity() <= KEEP_BUFFER {
                spare = buf;
                spare.clear();
            }
        }
    }
    let unsent = peer.close();
    counters.dropped(DropReason::EgressUnsent, unsent);
    // Dropping the write half would send a FIN while the read loop may
    // still be reading; leave the socket to close with the read half.
    writer.forget();
}

#[cfg(test)]
mod tests {
    use super::*;
    fn peer(limit: usize) -> Peer {
        Peer::new(
            1,
            "127.0.0.1:1".parse().expect("addr"),
            CancellationToken::new(),
            limit,
        )
    }

    impl Peer {
        fn offer_t(&self, wire: &[u8]) -> Offer {
            self.offer(wire, false)
        }
    }

    #[test]
    fn the_buffer_is_bounded_in_bytes_including_what_is_being_written() {
        let p = peer(10);
        assert_eq!(p.offer_t(b"0123"), Offer::Taken);
        assert_eq!(p.offer_t(b"4567"), Offer::Taken);
        assert_eq!(p.offer_t(b"89a"), Offer::Full);
        assert_eq!(p.offer_t(b"89"), Offer::Taken);
        let (taken, msgs, _) = p.take(BytesMut::new()).expect("pending");
        assert_eq!((&taken[..], msgs), (&b"0123456789"[..], 3));
        // Still being written: still counted.
        assert_eq!(p.buffered(), 10);
        assert_eq!(p.offer_t(b"x"), Offer::Full);
        p.written();
        assert_eq!(p.offer_t(b"x"), Offer::Taken);
        assert_eq!(p.close(), 1);
        assert_eq!(p.offer_t(b"y"), Offer::Closed);
    }

    #[test]
    fn heartbeats_only_go_out_on_an_idle_link() {
        let p = peer(100);
        assert!(p.offer_heartbeat(b"hb"));
        assert!(!p.offer_heartbeat(b"hb"), "one already pending");
        let _ = p.take(BytesMut::new());
        assert!(!p.offer_heartbeat(b"hb"), "a write in progress");
        p.written();
        assert!(p.offer_heartbeat(b"hb"));
    }
}

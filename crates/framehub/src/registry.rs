//! The open connections, one handle each ([`Peer`], kept per listener in
//! [`Peers`]), and their public snapshot ([`ConnectionInfo`], behind
//! [`crate::Hub::connections`] and the per-node detail of
//! [`crate::Hub::nodes`]).
//!
//! A [`Peer`] is what the connection's read task, its egress writer, the
//! request handler and the statistics share: its address and node, live
//! counters (added to once per read and once per write, never once per
//! frame), its egress buffer, and the token that disconnects it. Only
//! leaf modules are imported here, so every module that serves a
//! connection can import this one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::AddAssign;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;

use crate::outbuf::OutBuf;
use crate::stats::LinkCounters;

/// One open connection as [`crate::Hub::connections`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The connection's id, unique within the process.
    pub id: u64,
    /// The listener that accepted it.
    pub listener: Arc<str>,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The node it is bound to (node protocol), once it is.
    pub node: Option<Arc<str>>,
    /// When it was accepted.
    pub since: SystemTime,
    /// How long ago its last read completed (since it was accepted, if it
    /// has sent nothing).
    pub idle: Duration,
    /// Frames cut from its stream, as of its last read.
    pub frames_in: u64,
    /// Bytes read from it.
    pub bytes_in: u64,
    /// Frames written to it (egress, replies, heartbeats).
    pub frames_out: u64,
    /// Bytes written to it.
    pub bytes_out: u64,
    /// Its frames and egress messages dropped, whatever the reason.
    pub dropped: u64,
    /// Bytes queued or being written to it now.
    pub egress_pending_bytes: u64,
}

/// What a connection's egress buffer counts per message: the writer adds
/// it to the counters once written, and what was never written is counted
/// as dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Messages {
    pub(crate) total: u64,
    /// Of `total`, the request handler's replies.
    pub(crate) replies: u64,
}

impl AddAssign for Messages {
    fn add_assign(&mut self, other: Messages) {
        self.total += other.total;
        self.replies += other.replies;
    }
}

/// One open connection: its address, node, live counters, egress buffer,
/// and the token that disconnects it.
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
    /// Set once when egress disconnects this client for being slow.
    pub(crate) slow: AtomicBool,
    /// Set when acknowledged delivery closes this connection so that its
    /// client sends again from its last ack.
    pub(crate) rewound: AtomicBool,
    /// Framed messages waiting for the egress writer, bounded by the
    /// listener's `egress_buffer_bytes`.
    pub(crate) egress: OutBuf<Messages>,
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
            rewound: AtomicBool::new(false),
            egress: OutBuf::new(limit),
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
        self.egress.used()
    }

    /// Whether this client was disconnected because its buffer was full.
    pub(crate) fn is_slow(&self) -> bool {
        self.slow.load(Ordering::Relaxed)
    }

    /// Waits until everything queued so far has been written, the writer
    /// stopped, or `deadline` passed: a peer that half-closed after its
    /// last request still gets the replies to it.
    pub(crate) async fn wait_drained(&self, deadline: tokio::time::Instant) {
        self.egress.wait_drained(deadline).await;
    }
}

/// Reads one connection's live state.
pub(crate) fn info(listener: &Arc<str>, peer: &Peer, now: Instant) -> ConnectionInfo {
    let c = &peer.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    ConnectionInfo {
        id: peer.conn,
        listener: listener.clone(),
        peer: peer.addr,
        node: peer.node.get().cloned(),
        since: peer.since,
        idle: peer.idle(now),
        frames_in: get(&c.frames_in),
        bytes_in: get(&c.bytes_in),
        frames_out: get(&c.frames_out),
        bytes_out: get(&c.bytes_out),
        dropped: get(&c.dropped),
        egress_pending_bytes: peer.egress_pending() as u64,
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

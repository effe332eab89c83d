//! The per-connection view behind [`crate::Hub::connections`] and the
//! per-node detail of [`crate::Hub::nodes`].
//!
//! The open connections themselves are the listeners' egress peers
//! (`egress::Peers`): each connection task adds to its peer's counters once
//! per read, never once per frame, and the writer once per write. This
//! module only reads them into [`ConnectionInfo`] snapshots.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crate::egress::Peer;

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

/// Reads one connection's live state.
pub(crate) fn info(listener: &Arc<str>, peer: &Peer, now: Instant) -> ConnectionInfo {
    let c = &peer.counters;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
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

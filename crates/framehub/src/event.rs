//! Connection lifecycle events the application can subscribe to. Why a
//! connection closed lives in `reason`, re-exported here.

use std::net::SocketAddr;
use std::sync::Arc;

pub use crate::reason::{CloseReason, Ending};

/// Per-connection totals, reported when it closes (with its peer address
/// and [`CloseReason`] in [`ConnectionEvent::Closed`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionCounts {
    /// Frames cut from the stream.
    pub frames_in: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Frames written to the peer: `replies` plus `telemetry`.
    pub frames_out: u64,
    /// Frames handed to the listener's request handler (telecommands).
    pub requests: u64,
    /// Handler replies written to the peer (error replies included).
    pub replies: u64,
    /// Every other frame written to the peer: messages the application
    /// pushed (`Hub::send_to_connection`, `send_to_node`, `broadcast`)
    /// and server heartbeats.
    pub telemetry: u64,
    /// Requests whose handler returned an error.
    pub handler_errors: u64,
    /// Requests whose handler ran past its timeout.
    pub handler_timeouts: u64,
    /// Requests whose handler panicked.
    pub handler_panics: u64,
    /// Bytes written to the peer.
    pub bytes_out: u64,
    /// Frames put into a receiver's queue.
    pub delivered: u64,
    /// Frames dropped, whatever the reason.
    pub dropped: u64,
}

/// Something that happened to a connection. Subscribe with
/// [`crate::Hub::events`]; a subscriber that falls behind loses the oldest
/// events and is told how many (`RecvError::Lagged`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// A connection was accepted.
    Connected {
        /// The connection's id.
        conn: u64,
        /// The peer's address.
        peer: SocketAddr,
        /// The listener that accepted it.
        listener: Arc<str>,
    },
    /// A node-protocol connection authenticated and bound to a node.
    Authenticated {
        /// The connection's id.
        conn: u64,
        /// The peer's address.
        peer: SocketAddr,
        /// The node it is bound to.
        node: Arc<str>,
    },
    /// A connection over `max_connections` was accepted and closed at once.
    Rejected {
        /// The peer's address.
        peer: SocketAddr,
        /// The listener that refused it.
        listener: Arc<str>,
    },
    /// A connection ended.
    Closed {
        /// The connection's id.
        conn: u64,
        /// The peer's address.
        peer: SocketAddr,
        /// The node it was bound to, if any.
        node: Option<Arc<str>>,
        /// Why it ended.
        reason: CloseReason,
        /// What went through it.
        counts: ConnectionCounts,
    },
}

//! Connection lifecycle events the application can subscribe to, and why a
//! connection closed.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::node::AuthFailure;

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed its side.
    PeerClosed,
    /// The hub shut down.
    Shutdown,
    /// Nothing was received for `idle_timeout`.
    IdleTimeout,
    /// Authentication failed (the socket was closed on purpose).
    AuthFailed(AuthFailure),
    /// The framing lost sync (e.g. a length prefix over the maximum).
    FramingLost(String),
    /// Reading from the socket failed.
    ReadError(String),
    /// The client's egress buffer was full and the listener disconnects
    /// slow clients (`slow_client = "disconnect"`).
    SlowClient,
}

/// Who ended a connection, in the three classes sat-rs reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The hub shut down.
    Shutdown,
    /// The peer closed its side.
    Peer,
    /// Anything else: a read error, lost framing, a failed
    /// authentication, an idle or slow client.
    Error,
}

impl CloseReason {
    /// Every label [`CloseReason::as_str`] returns, in a fixed order (the
    /// index into counter arrays).
    pub const LABELS: [&'static str; 8] = [
        "peer_closed",
        "shutdown",
        "idle_timeout",
        "auth_timeout",
        "auth_failed",
        "framing_lost",
        "read_error",
        "slow_client",
    ];

    pub(crate) fn index(&self) -> usize {
        let label = self.as_str();
        CloseReason::LABELS
            .iter()
            .position(|l| *l == label)
            .unwrap_or_default()
    }

    /// Whether the connection ended by shutdown, by the peer, or by an
    /// error.
    pub fn ending(&self) -> Ending {
        match self {
            CloseReason::Shutdown => Ending::Shutdown,
            CloseReason::PeerClosed => Ending::Peer,
            _ => Ending::Error,
        }
    }

    /// A stable snake_case label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Shutdown => "shutdown",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::AuthFailed(AuthFailure::Timeout) => "auth_timeout",
            CloseReason::AuthFailed(_) => "auth_failed",
            CloseReason::FramingLost(_) => "framing_lost",
            CloseReason::ReadError(_) => "read_error",
            CloseReason::SlowClient => "slow_client",
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::AuthFailed(why) => write!(f, "authentication failed: {why}"),
            CloseReason::FramingLost(why) => write!(f, "framing lost: {why}"),
            CloseReason::ReadError(why) => write!(f, "read error: {why}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Per-connection totals, reported when it closes (with its peer address
/// and [`CloseReason`] in [`ConnectionEvent::Closed`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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

//! Why things end or get lost: why a connection closed ([`CloseReason`],
//! [`Ending`]), why authentication failed ([`AuthFailure`]), why a PROXY
//! protocol header was refused ([`ProxyFailure`]), why a TLS handshake
//! failed ([`TlsFailure`]), why a frame was not delivered ([`DropReason`]).
//!
//! A leaf module: it imports nothing from the crate, so the protocol
//! (`node`), the events (`event`) and the counters (`stats`) can all name
//! the reasons without importing each other. Each reason has a stable
//! snake_case label and a fixed index, the position of its counter in the
//! per-reason arrays of `stats`.

/// Why a connection failed to authenticate (it is then closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// The first message was not a JSON object.
    #[error("first message is not a JSON object")]
    InvalidFirstMessage,
    /// The first message had no token.
    #[error("first message has no token")]
    MissingToken,
    /// The token did not match.
    #[error("wrong token")]
    WrongToken,
    /// The first message was larger than `auth.max_frame_bytes`.
    #[error("first message too large")]
    FirstMessageTooLarge,
    /// No valid first message within `auth.timeout`.
    #[error("no valid first message in time")]
    Timeout,
    /// The frame that would bind the connection names a node id longer
    /// than `nodes.max_node_id_bytes`.
    #[error("node_id longer than nodes.max_node_id_bytes")]
    NodeIdTooLong,
}

/// Why a connection's PROXY protocol header was refused (the connection
/// is then closed before anything else is read from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyFailure {
    /// The peer is not in `trusted_proxies`: with `proxy_protocol =
    /// "required"` it is refused at once, with `"optional"` as soon as it
    /// starts a PROXY header.
    #[error("PROXY header from an address not in trusted_proxies")]
    Untrusted,
    /// `proxy_protocol = "required"` and the stream does not start with a
    /// PROXY header.
    #[error("no PROXY header")]
    Missing,
    /// A PROXY header that does not parse.
    #[error("malformed PROXY header")]
    Malformed,
    /// A PROXY header longer than the bound (107 bytes for v1, 1 KiB for v2).
    #[error("PROXY header too long")]
    Oversized,
    /// The stream ended inside the PROXY header.
    #[error("stream ended inside the PROXY header")]
    Truncated,
    /// No complete PROXY header within `proxy_timeout`.
    #[error("no complete PROXY header in time")]
    Timeout,
}

impl ProxyFailure {
    /// Every reason, in a fixed order (the index into counter arrays).
    pub const ALL: [ProxyFailure; 6] = [
        ProxyFailure::Untrusted,
        ProxyFailure::Missing,
        ProxyFailure::Malformed,
        ProxyFailure::Oversized,
        ProxyFailure::Truncated,
        ProxyFailure::Timeout,
    ];

    /// A stable snake_case label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyFailure::Untrusted => "untrusted",
            ProxyFailure::Missing => "missing",
            ProxyFailure::Malformed => "malformed",
            ProxyFailure::Oversized => "oversized",
            ProxyFailure::Truncated => "truncated",
            ProxyFailure::Timeout => "timeout",
        }
    }

    pub(crate) fn index(self) -> usize {
        ProxyFailure::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or_default()
    }
}

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
    /// Its PROXY protocol header was refused (`proxy_protocol`).
    ProxyRejected(ProxyFailure),
    /// The TLS handshake failed or did not finish within
    /// `tls.handshake_timeout` (a TLS listener only).
    TlsFailed(TlsFailure),
    /// Acknowledged delivery (`[listener.ack]`): frames this connection
    /// sent were accepted and then lost before they were durable (a
    /// durable sink failed, or a frame could not be delivered); the server
    /// fell back to the last durable sequence number and closed the
    /// connection so that the client sends the rest again.
    Rewound,
    /// A frame was not whole within `frame_timeout` of its first byte (a
    /// peer trickling a never-ending frame).
    FrameTimeout,
    /// The connection held one of the largest unfinished frames when all
    /// connections together held more than `partial_frame_budget`.
    PartialBudget,
}

/// Why a TLS handshake failed (the connection is then closed). Each has a
/// label for `framehub_tls_handshake_failures_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum TlsFailure {
    /// No handshake finished within `tls.handshake_timeout` (a stalled or
    /// silent client).
    #[error("no TLS handshake in time")]
    Timeout,
    /// The client does not speak TLS (a plaintext client on a TLS port).
    #[error("the client does not speak TLS")]
    NotTls,
    /// `client_ca` is set and the client sent no certificate.
    #[error("no client certificate")]
    NoCertificate,
    /// The client certificate is not signed by `client_ca`.
    #[error("client certificate from an unknown CA")]
    UnknownCa,
    /// The client certificate has expired.
    #[error("client certificate expired")]
    Expired,
    /// The client certificate is not valid yet.
    #[error("client certificate not valid yet")]
    NotYetValid,
    /// The client certificate is not for client authentication (its
    /// extended key usage lacks `clientAuth`).
    #[error("client certificate not for client authentication")]
    WrongPurpose,
    /// Any other fault of the client certificate (bad signature, revoked,
    /// malformed).
    #[error("bad client certificate")]
    BadCertificate,
    /// `identity = "certificate"` and the certificate names no node in the
    /// field `identity_from` reads.
    #[error("client certificate names no node")]
    NoIdentity,
    /// The client broke off the handshake, or it failed in any other way
    /// (no common version or cipher suite, a protocol error).
    #[error("handshake failed")]
    Handshake,
}

impl TlsFailure {
    /// Every failure, in a fixed order (the index into counter arrays).
    pub const ALL: [TlsFailure; 10] = [
        TlsFailure::Timeout,
        TlsFailure::NotTls,
        TlsFailure::NoCertificate,
        TlsFailure::UnknownCa,
        TlsFailure::Expired,
        TlsFailure::NotYetValid,
        TlsFailure::WrongPurpose,
        TlsFailure::BadCertificate,
        TlsFailure::NoIdentity,
        TlsFailure::Handshake,
    ];

    /// The labels of [`TlsFailure::ALL`], in the same order.
    pub const LABELS: [&'static str; 10] = [
        "timeout",
        "not_tls",
        "no_certificate",
        "unknown_ca",
        "expired",
        "not_yet_valid",
        "wrong_purpose",
        "bad_certificate",
        "no_identity",
        "handshake",
    ];

    /// A stable snake_case label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        TlsFailure::LABELS[self.index()]
    }

    pub(crate) fn index(self) -> usize {
        TlsFailure::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or_default()
    }
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
    pub const LABELS: [&'static str; 13] = [
        "peer_closed",
        "shutdown",
        "idle_timeout",
        "auth_timeout",
        "auth_failed",
        "framing_lost",
        "read_error",
        "slow_client",
        "proxy_rejected",
        "rewound",
        "tls_failed",
        "frame_timeout",
        "partial_budget",
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
            CloseReason::ProxyRejected(_) => "proxy_rejected",
            CloseReason::TlsFailed(_) => "tls_failed",
            CloseReason::Rewound => "rewound",
            CloseReason::FrameTimeout => "frame_timeout",
            CloseReason::PartialBudget => "partial_budget",
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::AuthFailed(why) => write!(f, "authentication failed: {why}"),
            CloseReason::FramingLost(why) => write!(f, "framing lost: {why}"),
            CloseReason::ReadError(why) => write!(f, "read error: {why}"),
            CloseReason::ProxyRejected(why) => write!(f, "PROXY protocol: {why}"),
            CloseReason::TlsFailed(why) => write!(f, "TLS handshake failed: {why}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Why a frame (or an egress message) was not delivered. Every drop has a
/// reason and a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Larger than `max_frame_bytes`.
    Oversize,
    /// Not valid JSON (node protocol, including empty lines; `json` framing,
    /// including bytes between values that cannot start one).
    InvalidJson,
    /// Not valid UTF-8 (node protocol).
    InvalidUtf8,
    /// JSON nested deeper than `max_json_depth`.
    TooDeep,
    /// A node frame without a string `node_id`.
    MissingNodeId,
    /// A node frame whose `node_id` differs from the one the connection is
    /// bound to.
    NodeMismatch,
    /// No receiver for the node and auto-provisioning is off.
    UnknownNode,
    /// No receiver for the node and `max_nodes` is reached.
    MaxNodes,
    /// The receiver's queue, or the listener's group stream, was full
    /// (`drop-oldest` or `drop-newest`).
    QueueFull,
    /// The receiver was closed.
    ReceiverClosed,
    /// A COBS frame that did not decode.
    InvalidCobs,
    /// A space packet with an invalid header.
    InvalidHeader,
    /// A space packet whose ID is not allowed.
    UnknownPacketId,
    /// The stream ended inside a frame.
    Truncated,
    /// Egress: a message for a client whose egress buffer was full
    /// (dropped for that client only).
    EgressFull,
    /// Egress: a message with no connected client to go to.
    NoClient,
    /// Egress: a message queued for a client whose connection closed
    /// before it was written.
    EgressUnsent,
    /// A request handed to a handler whose connection ended before its
    /// replies were sent (shutdown, error, or the handler still running).
    Unanswered,
    /// A reply the listener's framing cannot carry (dropped, the other
    /// replies of the request still go out).
    ReplyUnencodable,
    /// The first message of a connection that failed to authenticate
    /// (no token, a wrong one, or not a valid node message): the
    /// connection is closed and the frame counted here.
    AuthFailed,
    /// Acknowledged delivery: a frame whose sequence number is at or
    /// below the highest its node (or stream) already had accepted, i.e. a
    /// resend of a frame the server has (it is acknowledged all the same,
    /// once durable: acks are cumulative).
    Duplicate,
    /// Read from a socket but not delivered because the hub shut down
    /// before its queue had room (`block`, after `shutdown_grace`).
    Shutdown,
    /// Acknowledged delivery: read on a connection being closed because
    /// its node was rewound (frames were lost before they were durable);
    /// the client sends it again.
    Rewound,
    /// A node id longer than `nodes.max_node_id_bytes` (a connection whose
    /// client certificate names one: its frames are dropped).
    NodeIdTooLong,
}

impl DropReason {
    /// Every reason, in a fixed order (the index into counter arrays).
    pub const ALL: [DropReason; 24] = [
        DropReason::Oversize,
        DropReason::InvalidJson,
        DropReason::InvalidUtf8,
        DropReason::TooDeep,
        DropReason::MissingNodeId,
        DropReason::NodeMismatch,
        DropReason::UnknownNode,
        DropReason::MaxNodes,
        DropReason::QueueFull,
        DropReason::ReceiverClosed,
        DropReason::InvalidCobs,
        DropReason::InvalidHeader,
        DropReason::UnknownPacketId,
        DropReason::Truncated,
        DropReason::EgressFull,
        DropReason::NoClient,
        DropReason::EgressUnsent,
        DropReason::Unanswered,
        DropReason::ReplyUnencodable,
        DropReason::AuthFailed,
        DropReason::Duplicate,
        DropReason::Shutdown,
        DropReason::Rewound,
        DropReason::NodeIdTooLong,
    ];

    /// A stable snake_case label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Oversize => "oversize",
            DropReason::InvalidJson => "invalid_json",
            DropReason::InvalidUtf8 => "invalid_utf8",
            DropReason::TooDeep => "too_deep",
            DropReason::MissingNodeId => "missing_node_id",
            DropReason::NodeMismatch => "node_mismatch",
            DropReason::UnknownNode => "unknown_node",
            DropReason::MaxNodes => "max_nodes",
            DropReason::QueueFull => "queue_full",
            DropReason::ReceiverClosed => "receiver_closed",
            DropReason::InvalidCobs => "invalid_cobs",
            DropReason::InvalidHeader => "invalid_header",
            DropReason::UnknownPacketId => "unknown_packet_id",
            DropReason::Truncated => "truncated",
            DropReason::EgressFull => "egress_full",
            DropReason::NoClient => "no_client",
            DropReason::EgressUnsent => "egress_unsent",
            DropReason::Unanswered => "unanswered",
            DropReason::ReplyUnencodable => "reply_unencodable",
            DropReason::AuthFailed => "auth_failed",
            DropReason::Duplicate => "duplicate",
            DropReason::Shutdown => "shutdown",
            DropReason::Rewound => "rewound",
            DropReason::NodeIdTooLong => "node_id_too_long",
        }
    }

    pub(crate) fn index(self) -> usize {
        DropReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_sits_at_its_own_index() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let closes = [
            CloseReason::PeerClosed,
            CloseReason::Shutdown,
            CloseReason::IdleTimeout,
            CloseReason::AuthFailed(AuthFailure::Timeout),
            CloseReason::AuthFailed(AuthFailure::WrongToken),
            CloseReason::FramingLost(String::new()),
            CloseReason::ReadError(String::new()),
            CloseReason::SlowClient,
            CloseReason::ProxyRejected(ProxyFailure::Missing),
            CloseReason::Rewound,
            CloseReason::TlsFailed(TlsFailure::Timeout),
            CloseReason::FrameTimeout,
            CloseReason::PartialBudget,
        ];
        for (i, r) in closes.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
            assert_eq!(CloseReason::LABELS[i], r.as_str());
        }
        for (i, r) in ProxyFailure::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        for (i, r) in TlsFailure::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
    }
}

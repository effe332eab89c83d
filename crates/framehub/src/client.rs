//! The reconnecting client: the node side of the wire. It frames messages
//! in any framing, keeps one connection up through cuts, stalls, half-open
//! links and server restarts, and holds messages in a bounded outbox while
//! the link is down.
//!
//! ```no_run
//! # async fn demo() -> Result<(), framehub::ClientError> {
//! use std::time::Duration;
//! use framehub::{Client, ClientConfig, ClientProtocol, NodeIdentity};
//!
//! let client = Client::start(ClientConfig {
//!     protocol: ClientProtocol::Node(NodeIdentity {
//!         node_id: Some("radar3".into()),
//!         token: Some("secret".into()),
//!         ..NodeIdentity::default()
//!     }),
//!     ..ClientConfig::new("hub.example:30050")
//! })?;
//! // node_id is filled in; the token travels in the authenticating
//! // heartbeat that opens every connection.
//! client.send(&br#"{"timestamp":1768932172478,"delay":[40.46]}"#[..]).await?;
//! client.close(Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```
//!
//! # How it behaves
//! - **Reconnects** with exponential backoff and jitter (`backoff_initial`
//!   100 ms doubling up to `backoff_max` 5 s, each wait drawn from the upper
//!   half of its step). The backoff starts over after a connection that
//!   stayed up for `backoff_max`, so a server that accepts and drops at once
//!   is not hammered.
//! - **Outbox**: messages are framed when accepted (so an unframeable one is
//!   refused at once) and wait in a queue of `outbox_capacity` messages.
//!   `drop-oldest` evicts the oldest (counted); `block` makes `send` wait and
//!   `try_send` fail with [`ClientError::Full`]. Queued messages are written
//!   in order after every reconnect.
//! - **What a cut loses**: a message counts as sent once the kernel took its
//!   last byte. A message the kernel took only in part when the link broke
//!   is written again, whole, on the next connection. Without acks, bytes
//!   the kernel had accepted but the server had not read when the link died
//!   (the socket buffers) are lost: delivery is at most once.
//! - **Acknowledged delivery** ([`ClientAckConfig`], off by default; the server's
//!   listener needs `[listener.ack] mode = "durable"`, docs/acks.md): the
//!   client numbers every message, keeps it after writing it until the
//!   server's cumulative ack says it is durable, and after a reconnect
//!   writes the unacknowledged ones again, in order, before anything new.
//!   The outbox is then bounded in bytes (`max_unacked_bytes`) and a full
//!   one makes `send` wait (`block`) or fail (`fail`), never drop. Frames
//!   outstanding with no ack progress for `ack.timeout` mean a dead link
//!   (a silent network drop), and the client reconnects.
//! - **Dead servers** are noticed by a failed write, by TCP keepalive, and,
//!   once the server has sent anything on a connection (its
//!   `server_heartbeat`), by `liveness_timeout` (3 s) without data.
//! - **Heartbeats**: when nothing was written for `heartbeat_interval`, a
//!   heartbeat frame is (node protocol: `{"node_id":..,"token":..,
//!   "type":"heartbeat"}`; raw: [`ClientProtocol::Raw`]'s frame, if any).
//! - **Node protocol**: every connection opens with an authenticating
//!   heartbeat carrying `node_id` and `token`, so the connection is bound
//!   and healthy before the first message, and the secret is not copied into
//!   every stored message. A message that is a JSON object without the
//!   `node_id` field gets it. `timestamp` is never added: the server
//!   deduplicates on it, so it belongs to the application. Anything else is
//!   sent as given.

mod backoff;
mod driver;
mod outbox;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};
use tokio_util::codec::Encoder;
use tokio_util::sync::CancellationToken;

use crate::codec::{CodecError, FrameEncoder, FramingConfig};
use crate::config::FieldsConfig;
use crate::json::{self, EnvelopeKeys};
use crate::node::{heartbeat_payload, push_json_string};

use outbox::{Budget, Outbox, PushError, Pushed};

/// What one message costs the byte budget of an acknowledged outbox on top
/// of its own bytes: its sequence number on the wire (up to 30 bytes as a
/// JSON member), framing, and its entry in the outbox's queues.
pub const ACK_OVERHEAD_BYTES: usize = 128;

/// Status events buffered per subscriber before the slowest one lags.
const EVENT_CAPACITY: usize = 256;

/// Settings of a [`Client`]. Start from [`ClientConfig::new`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server, `host:port`; resolved again on every connect, so a
    /// server that moves to another address is found. Several servers,
    /// comma-separated (`"a:30050,b:30050"`): the client connects to the
    /// one that answered last and moves to the next when it is down.
    pub addr: String,
    /// How messages are framed on the wire (and the server's frames read).
    pub framing: FramingConfig,
    /// What the client adds to the stream: node envelope or nothing.
    pub protocol: ClientProtocol,
    /// Largest message accepted, framing excluded (1 MiB, the server's
    /// default maximum).
    pub max_frame_bytes: usize,
    /// First wait before reconnecting (100 ms).
    pub backoff_initial: Duration,
    /// Longest wait between two connection attempts (5 s).
    pub backoff_max: Duration,
    /// Give up on one connection attempt after this long (5 s).
    pub connect_timeout: Duration,
    /// Send a heartbeat when nothing was written for this long (10 s;
    /// `None`: never). The node protocol always has a heartbeat; a raw
    /// client only with [`ClientProtocol::Raw`]'s `heartbeat` frame.
    pub heartbeat_interval: Option<Duration>,
    /// Reconnect when the server sent nothing for this long, once it has
    /// sent something on the connection (3 s, as NinjaTCP; `None`: never).
    pub liveness_timeout: Option<Duration>,
    /// TCP keepalive idle time (10 s; `None`: off). Probes follow every
    /// third of it, three times, so a vanished server on an idle link is
    /// noticed after about twice this.
    pub keepalive: Option<Duration>,
    /// `TCP_NODELAY` (true): messages leave at once rather than wait to
    /// fill a segment.
    pub nodelay: bool,
    /// `SO_SNDBUF` (unset: the kernel's, which autotunes up to megabytes).
    /// Everything in it is lost if the server dies, so a small buffer
    /// bounds the loss of a restart.
    pub send_buffer_bytes: Option<usize>,
    /// Messages the outbox holds at most (2000, the radar system's queue).
    pub outbox_capacity: usize,
    /// What a full outbox does (`drop-oldest`).
    pub outbox_policy: OutboxPolicy,
    /// TLS to the server (unset: plaintext).
    pub tls: Option<ClientTlsConfig>,
    /// Acknowledged delivery (off).
    pub ack: ClientAckConfig,
}

/// Acknowledged delivery (docs/acks.md): the client numbers messages,
/// keeps each until the server acknowledges it as durable, and writes the
/// unacknowledged ones again after a reconnect. The server's listener must
/// have `[listener.ack] mode = "durable"`.
///
/// ```no_run
/// # async fn demo() -> Result<(), framehub::ClientError> {
/// use std::time::Duration;
/// use framehub::{ClientAckConfig, ClientAckMode, Client, ClientConfig, OutboxPolicy};
/// let client = Client::start(ClientConfig {
///     ack: ClientAckConfig::new(ClientAckMode::node()),
///     // Nothing is dropped: a full outbox makes `send` wait.
///     outbox_policy: OutboxPolicy::Block,
///     ..ClientConfig::new("hub.example:30050")
/// })?;
/// client.send(&br#"{"node_id":"radar3","timestamp":1}"#[..]).await?;
/// // Returns Ok only once the server acknowledged every message.
/// client.close(Duration::from_secs(30)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAckConfig {
    /// How messages are numbered and acks read (`Off`: no acks).
    pub mode: ClientAckMode,
    /// The first message's sequence number (> 0). Unset: the wall clock in
    /// microseconds since the Unix epoch when the client starts, so a
    /// restarted device numbers above its previous run without storing
    /// anything (as long as it sent fewer than a million messages per
    /// second).
    pub first_seq: Option<u64>,
    /// Bytes of messages accepted and not yet acknowledged the outbox holds
    /// at most (8 MiB; each message counts its bytes plus
    /// [`ACK_OVERHEAD_BYTES`]). At most 4 GiB.
    pub max_unacked_bytes: usize,
    /// With messages outstanding, no ack progress for this long means the
    /// link is dead (a silent network drop): reconnect and write the
    /// unacknowledged messages again (10 s).
    pub timeout: Duration,
}

impl ClientAckConfig {
    /// Acks in `mode` with the default bounds.
    pub fn new(mode: ClientAckMode) -> ClientAckConfig {
        ClientAckConfig {
            mode,
            first_seq: None,
            max_unacked_bytes: 8 << 20,
            timeout: Duration::from_secs(10),
        }
    }

    /// Whether acks are on.
    pub fn is_on(&self) -> bool {
        self.mode != ClientAckMode::Off
    }
}

impl Default for ClientAckConfig {
    fn default() -> ClientAckConfig {
        ClientAckConfig::new(ClientAckMode::Off)
    }
}

/// How an acknowledged client numbers its messages (docs/acks.md).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClientAckMode {
    /// No numbering, no acks: at most once.
    #[default]
    Off,
    /// Node protocol (`lines`): every message, a JSON object, gets the
    /// member `"<seq_field>":N` first; the server answers
    /// `{"type":"ack","seq":N}` lines. A message that is not a JSON object
    /// or has its own `seq_field` is refused ([`ClientError::Unnumberable`]).
    Node {
        /// The member carrying the number (the listener's `seq_field`,
        /// default `seq`).
        seq_field: String,
    },
    /// `length` framing: every payload starts with its 8-byte big-endian
    /// number; each connection opens with number 0 and `stream_id`; acks
    /// are 8-byte frames.
    Length {
        /// The stream's id, 1 to 128 bytes: what the server deduplicates
        /// and acknowledges by (a node id for binary frames).
        stream_id: String,
    },
}

impl ClientAckMode {
    /// The node protocol with the default member `seq`.
    pub fn node() -> ClientAckMode {
        ClientAckMode::Node {
            seq_field: "seq".into(),
        }
    }
}

/// TLS of a [`Client`]: the server's certificate is checked against `ca`
/// and `server_name`; `cert` and `key` are the client's own for servers
/// that ask for one (mTLS). The files are read once, by [`Client::start`];
/// every reconnect makes a new handshake with them.
///
/// ```no_run
/// # fn demo() -> Result<(), framehub::ClientError> {
/// use framehub::{Client, ClientConfig, ClientTlsConfig};
/// let client = Client::start(ClientConfig {
///     tls: Some(ClientTlsConfig {
///         cert: Some("radar3.pem".into()),
///         key: Some("radar3.key".into()),
///         ..ClientTlsConfig::new("ca.pem")
///     }),
///     ..ClientConfig::new("hub.example:30050")
/// })?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClientTlsConfig {
    /// CA certificates (PEM) the server's certificate must chain to.
    pub ca: PathBuf,
    /// The client's certificate chain (PEM), for mTLS.
    pub cert: Option<PathBuf>,
    /// The client's private key (PEM), with `cert`.
    pub key: Option<PathBuf>,
    /// The name the server's certificate must carry (a DNS name or an IP
    /// address); unset: the host part of `addr`.
    pub server_name: Option<String>,
}

impl ClientTlsConfig {
    /// TLS trusting the CAs in `ca`, no client certificate, the server
    /// name taken from the address.
    pub fn new(ca: impl Into<PathBuf>) -> ClientTlsConfig {
        ClientTlsConfig {
            ca: ca.into(),
            ..ClientTlsConfig::default()
        }
    }
}

impl ClientConfig {
    /// Defaults for the server at `addr` (`host:port`): `lines` framing and
    /// the node protocol without identity.
    pub fn new(addr: impl Into<String>) -> ClientConfig {
        ClientConfig {
            addr: addr.into(),
            framing: FramingConfig::Lines,
            protocol: ClientProtocol::Node(NodeIdentity::default()),
            max_frame_bytes: 1 << 20,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            heartbeat_interval: Some(Duration::from_secs(10)),
            liveness_timeout: Some(Duration::from_secs(3)),
            keepalive: Some(Duration::from_secs(10)),
            nodelay: true,
            send_buffer_bytes: None,
            outbox_capacity: 2000,
            outbox_policy: OutboxPolicy::DropOldest,
            tls: None,
            ack: ClientAckConfig::default(),
        }
    }

    fn validate(&self) -> Result<(), ClientError> {
        let bad = |key: &'static str, message: String| ClientError::Config { key, message };
        if self.addr.is_empty() {
            return Err(bad("addr", "must not be empty".into()));
        }
        self.framing.validate().map_err(|m| bad("framing", m))?;
        if self.max_frame_bytes == 0 {
            return Err(bad("max_frame_bytes", "must be > 0".into()));
        }
        if self.outbox_capacity == 0 {
            return Err(bad("outbox_capacity", "must be > 0".into()));
        }
        if self.backoff_initial.is_zero() {
            return Err(bad("backoff_initial", "must be > 0".into()));
        }
        if self.backoff_max < self.backoff_initial {
            return Err(bad(
                "backoff_max",
                "must be at least backoff_initial".into(),
            ));
        }
        for (key, value) in [
            ("connect_timeout", Some(self.connect_timeout)),
            ("heartbeat_interval", self.heartbeat_interval),
            ("liveness_timeout", self.liveness_timeout),
            ("keepalive", self.keepalive),
        ] {
            if value.is_some_and(|d| d.is_zero()) {
                return Err(bad(key, "must be > 0 (use None to turn it off)".into()));
            }
        }
        if let ClientProtocol::Node(_) = self.protocol
            && self.framing != FramingConfig::Lines
        {
            return Err(bad(
                "protocol",
                format!(
                    "the node protocol needs framing \"lines\", not {:?}",
                    self.framing.name()
                ),
            ));
        }
        self.validate_ack()
    }

    fn validate_ack(&self) -> Result<(), ClientError> {
        let bad = |key: &'static str, message: String| ClientError::Config { key, message };
        let ack = &self.ack;
        match (&ack.mode, &self.protocol) {
            (ClientAckMode::Off, _) => return Ok(()),
            (ClientAckMode::Node { seq_field }, ClientProtocol::Node(identity)) => {
                if seq_field.is_empty() || *seq_field == identity.fields.node_id {
                    return Err(bad(
                        "ack.mode",
                        "seq_field must be a member name other than the node id's".into(),
                    ));
                }
            }
            (ClientAckMode::Node { .. }, ClientProtocol::Raw { .. }) => {
                return Err(bad(
                    "ack.mode",
                    "node acks need the node protocol; use ClientAckMode::Length for length framing"
                        .into(),
                ));
            }
            (ClientAckMode::Length { stream_id }, protocol) => {
                if !matches!(self.framing, FramingConfig::Length(_)) {
                    return Err(bad(
                        "ack.mode",
                        format!(
                            "length acks need framing \"length\", not {:?}",
                            self.framing.name()
                        ),
                    ));
                }
                if !matches!(protocol, ClientProtocol::Raw { heartbeat: None }) {
                    return Err(bad(
                        "protocol",
                        "acknowledged length framing has no heartbeat frame: the server would \
                         read its first 8 bytes as a sequence number"
                            .into(),
                    ));
                }
                if !(1..=128).contains(&stream_id.len()) {
                    return Err(bad("ack.mode", "stream_id must be 1 to 128 bytes".into()));
                }
            }
        }
        if self.outbox_policy == OutboxPolicy::DropOldest {
            return Err(bad(
                "outbox_policy",
                "acknowledged delivery never drops: use block (send waits) or fail".into(),
            ));
        }
        if ack.first_seq == Some(0) {
            return Err(bad("ack.first_seq", "must be > 0".into()));
        }
        if ack.max_unacked_bytes < self.max_frame_bytes.saturating_add(ACK_OVERHEAD_BYTES)
            || ack.max_unacked_bytes > u32::MAX as usize
        {
            return Err(bad(
                "ack.max_unacked_bytes",
                format!(
                    "must hold the largest message (max_frame_bytes + {ACK_OVERHEAD_BYTES}) and be at most 4 GiB"
                ),
            ));
        }
        if ack.timeout.is_zero() {
            return Err(bad("ack.timeout", "must be > 0".into()));
        }
        Ok(())
    }
}

/// What a full outbox does with the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutboxPolicy {
    /// Drop the oldest waiting message (counted): a sensor's newest reading
    /// matters most.
    #[default]
    DropOldest,
    /// `send` waits for room and `try_send` fails: nothing is dropped, the
    /// producer slows down (a file being replayed).
    Block,
    /// `send` and `try_send` fail at once with [`ClientError::Full`]: the
    /// producer decides (a device that must not stall its loop).
    Fail,
}

/// What the client adds to the byte stream.
#[derive(Debug, Clone)]
pub enum ClientProtocol {
    /// The node protocol: authenticating heartbeat on every connect,
    /// heartbeats, `node_id` filled in.
    Node(NodeIdentity),
    /// Messages as given; an optional heartbeat payload (framed like any
    /// message) for servers that expect one.
    Raw {
        /// The heartbeat payload, or `None` for no heartbeats.
        heartbeat: Option<Bytes>,
    },
}

/// Who a node-protocol client is.
#[derive(Debug, Clone, Default)]
pub struct NodeIdentity {
    /// The node's id, filled into messages that lack one.
    pub node_id: Option<String>,
    /// The token that authenticates each connection.
    pub token: Option<String>,
    /// The server's field names (the radar system's by default).
    pub fields: FieldsConfig,
}

/// Why a client could not start, send or close cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A setting that cannot work; `key` names it.
    #[error("client config {key}: {message}")]
    Config {
        /// The field of [`ClientConfig`] at fault.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The message cannot be framed (too large, a newline in a `lines`
    /// message, ...); nothing was queued.
    #[error("message refused: {0}")]
    Unframeable(#[source] CodecError),
    /// A full outbox: `try_send` under the `block` policy, or either call
    /// under `fail`.
    #[error("outbox full")]
    Full,
    /// Acknowledged delivery cannot number this message (node protocol:
    /// not a JSON object, or it has its own sequence member); nothing was
    /// queued.
    #[error("message refused: {0}")]
    Unnumberable(&'static str),
    /// The client is closing or closed.
    #[error("client closed")]
    Closed,
    /// `close` ran out of time; `unsent` messages were dropped (counted).
    #[error("close timed out with {unsent} messages unsent")]
    CloseTimeout {
        /// Messages that never reached the socket.
        unsent: u64,
    },
    /// Acknowledged delivery: `close` ran out of time before the server
    /// acknowledged `unacked` messages (written or not; none of them is
    /// known to be durable). Counted in `dropped_unsent` and
    /// `dropped_unacked`.
    #[error("close timed out with {unacked} messages not acknowledged")]
    Unacknowledged {
        /// Messages accepted and never acknowledged.
        unacked: u64,
    },
}

/// The client's connection state, as [`Client::state`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Resolving and connecting.
    Connecting,
    /// Connected; messages flow.
    Connected,
    /// Waiting before the next attempt.
    BackingOff,
    /// Closed for good.
    Closed,
}

/// Why a connection (or an attempt) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// Resolving or connecting failed or timed out.
    ConnectFailed(String),
    /// The server closed the connection.
    PeerClosed,
    /// Reading failed (e.g. connection reset, keepalive timeout).
    ReadError(String),
    /// Writing failed (e.g. broken pipe, connection reset).
    WriteError(String),
    /// The server, which had been sending, was silent for this long.
    LivenessTimeout(Duration),
    /// The server's byte stream did not follow the framing.
    FramingLost(String),
    /// Acknowledged delivery: messages were outstanding and no ack
    /// advanced for this long (`ack.timeout`).
    AckTimeout(Duration),
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DisconnectReason::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            DisconnectReason::PeerClosed => f.write_str("server closed the connection"),
            DisconnectReason::ReadError(e) => write!(f, "read error: {e}"),
            DisconnectReason::WriteError(e) => write!(f, "write error: {e}"),
            DisconnectReason::LivenessTimeout(d) => {
                write!(f, "nothing received for {d:?}: connection presumed dead")
            }
            DisconnectReason::FramingLost(e) => write!(f, "framing lost: {e}"),
            DisconnectReason::AckTimeout(d) => write!(
                f,
                "no ack progress for {d:?} with messages outstanding: connection presumed dead"
            ),
        }
    }
}

/// What happened to the client's link. Subscribe with [`Client::events`]; a
/// subscriber that falls behind loses the oldest events and is told how
/// many (`RecvError::Lagged`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// An attempt to connect began (`attempt` counts since the last
    /// connection, from 1).
    Connecting {
        /// The configured `host:port`.
        addr: String,
        /// Attempts since the last successful connection, this one included.
        attempt: u32,
    },
    /// Connected.
    Connected {
        /// The server's address.
        peer: SocketAddr,
        /// The local end.
        local: SocketAddr,
    },
    /// A connection or an attempt ended.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
    /// Waiting this long before the next attempt.
    BackingOff {
        /// The wait.
        delay: Duration,
    },
    /// The client stopped; `unsent` messages were dropped.
    Closed {
        /// Messages that never reached the socket.
        unsent: u64,
    },
}

/// A snapshot of a client's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCounters {
    /// Messages accepted by `send`/`try_send`.
    pub accepted: u64,
    /// Messages whose last byte the kernel took.
    pub sent: u64,
    /// Bytes written, framing and heartbeats included.
    pub bytes_sent: u64,
    /// Heartbeats written (the authenticating ones included).
    pub heartbeats_sent: u64,
    /// Messages written again, whole, because a cut came while the kernel
    /// had taken only part of them; with acks, also every unacknowledged
    /// message written again after a reconnect.
    pub resent: u64,
    /// Messages refused by `send`/`try_send` (unframeable, full, closed).
    pub rejected: u64,
    /// Messages dropped from a full outbox (`drop-oldest`).
    pub dropped_outbox_full: u64,
    /// Messages still unsent when the client closed or was dropped.
    pub dropped_unsent: u64,
    /// Messages waiting in the outbox now.
    pub outbox_len: u64,
    /// Connections established.
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Established connections that ended (not counting `close`).
    pub disconnects: u64,
    /// Of those, how many for [`DisconnectReason::LivenessTimeout`].
    pub liveness_timeouts: u64,
    /// Frames received from the server (its heartbeats included; they are
    /// not delivered anywhere).
    pub frames_received: u64,
    /// Bytes received from the server.
    pub bytes_received: u64,
    /// Server frames that did not decode (dropped; the link goes on).
    pub frames_received_invalid: u64,
    /// Acks received (acknowledged delivery).
    pub acks_received: u64,
    /// Messages acknowledged as durable by the server.
    pub acked: u64,
    /// Bytes of those messages, framing included.
    pub bytes_acked: u64,
    /// Bytes written again after a reconnect (unacknowledged messages and
    /// messages cut in part), framing included.
    pub bytes_resent: u64,
    /// Messages accepted and not acknowledged yet, now (queued or written).
    pub unacked: u64,
    /// Their bytes, framing included, now.
    pub bytes_unacked: u64,
    /// Messages written but never acknowledged when the client closed or
    /// was dropped (the never-written ones are in `dropped_unsent`).
    pub dropped_unacked: u64,
    /// The highest sequence number acknowledged (0: none yet).
    pub acked_seq: u64,
    /// The sequence number the next message gets (acknowledged delivery).
    pub next_seq: u64,
}

/// The live counters behind [`ClientCounters`].
#[derive(Debug, Default)]
struct Stats {
    accepted: AtomicU64,
    sent: AtomicU64,
    bytes_sent: AtomicU64,
    heartbeats_sent: AtomicU64,
    resent: AtomicU64,
    rejected: AtomicU64,
    dropped_outbox_full: AtomicU64,
    dropped_unsent: AtomicU64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
    disconnects: AtomicU64,
    liveness_timeouts: AtomicU64,
    frames_received: AtomicU64,
    bytes_received: AtomicU64,
    frames_received_invalid: AtomicU64,
    acks_received: AtomicU64,
    acked: AtomicU64,
    bytes_acked: AtomicU64,
    bytes_resent: AtomicU64,
    /// Gauges: raised when a message is queued (under the outbox's lock,
    /// so before the driver can see it), lowered when it is acknowledged.
    unacked: AtomicU64,
    bytes_unacked: AtomicU64,
    dropped_unacked: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What the driver task and every handle share.
struct Shared {
    config: ClientConfig,
    outbox: Outbox,
    /// Frames messages at `send` time (stateless; the lock only satisfies
    /// `Encoder`'s `&mut self`).
    encoder: Mutex<FrameEncoder>,
    /// The heartbeat on the wire, already framed; for the node protocol it
    /// also authenticates.
    heartbeat: Option<Bytes>,
    /// What opens every connection, already framed: the authenticating
    /// heartbeat (node protocol with an identity), or the stream's
    /// number-0 frame (acknowledged `length` framing).
    opener: Option<Bytes>,
    /// The highest sequence number acknowledged (acknowledged delivery).
    acked: watch::Sender<u64>,
    /// The TLS client, its files read at start (`tls`).
    tls: Option<tls::Connector>,
    stats: Stats,
    events: broadcast::Sender<ClientEvent>,
    state: watch::Sender<ClientState>,
    /// Stops the driver at once (close deadline passed, last handle gone).
    shutdown: CancellationToken,
    /// Cancelled by the driver when it has stopped.
    done: CancellationToken,
}

impl Shared {
    fn emit(&self, event: ClientEvent) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(event);
        }
    }

    fn set_state(&self, state: ClientState) {
        self.state.send_replace(state);
    }

    /// The node-protocol rewrite of one message: `node_id` added to a JSON
    /// object that lacks it. With node acks the message must be a JSON
    /// object without its own sequence member.
    fn prepare(&self, message: Bytes) -> Result<Bytes, ClientError> {
        let ClientProtocol::Node(identity) = &self.config.protocol else {
            return Ok(message);
        };
        let seq_field = match &self.config.ack.mode {
            ClientAckMode::Node { seq_field } => Some(seq_field.as_bytes()),
            _ => None,
        };
        let node_id = identity.node_id.as_deref();
        if node_id.is_none() && seq_field.is_none() {
            return Ok(message);
        }
        // The envelope scan finds one more top-level member by name: the
        // timestamp's slot looks for the sequence member instead (nothing
        // here needs the timestamp).
        let keys = EnvelopeKeys {
            node_id: identity.fields.node_id.as_bytes(),
            timestamp: seq_field.unwrap_or(EnvelopeKeys::DEFAULT.timestamp),
            ..EnvelopeKeys::DEFAULT
        };
        let scanned = json::scan_envelope(&message, &keys, json::DEFAULT_MAX_DEPTH);
        if seq_field.is_some() {
            match &scanned {
                Err(_) => {
                    return Err(ClientError::Unnumberable(
                        "acknowledged delivery needs a JSON object to carry the sequence number",
                    ));
                }
                Ok(envelope) if envelope.timestamp.is_some() => {
                    return Err(ClientError::Unnumberable(
                        "the message has its own sequence member; the client numbers messages",
                    ));
                }
                Ok(_) => {}
            }
        }
        match (scanned, node_id) {
            (Ok(envelope), Some(node_id)) if envelope.node_id.is_none() => Ok(insert_field(
                &message,
                &identity.fields.node_id,
                &json_string(node_id),
            )),
            // Has its own node_id, or is not a JSON object: the server
            // judges it (and counts it if it must).
            _ => Ok(message),
        }
    }

    /// The wire bytes of a prepared message numbered `seq` (acks), framed.
    fn render(&self, message: &[u8], seq: u64) -> Result<Bytes, ClientError> {
        let numbered;
        let payload: &[u8] = match &self.config.ack.mode {
            ClientAckMode::Off => message,
            ClientAckMode::Node { seq_field } => {
                numbered = insert_field(message, seq_field, &seq.to_string());
                &numbered
            }
            ClientAckMode::Length { .. } => {
                let mut out = Vec::with_capacity(8 + message.len());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(message);
                numbered = Bytes::from(out);
                &numbered
            }
        };
        let mut wire = BytesMut::with_capacity(payload.len() + 8);
        self.encoder
            .lock()
            .encode(payload, &mut wire)
            .map_err(ClientError::Unframeable)?;
        Ok(wire.freeze())
    }

    /// What queueing `message` costs the outbox's budget: a slot, or with
    /// acks its bytes and overhead (capped at the largest message, which
    /// framing refuses anyway, so no sender waits for more than exists).
    fn cost(&self, message: &[u8]) -> u32 {
        if !self.config.ack.is_on() {
            return 1;
        }
        let bytes = message.len().min(self.config.max_frame_bytes) + ACK_OVERHEAD_BYTES;
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    /// Renders `seq` and, with acks, counts the message as unacknowledged
    /// before the driver can see it.
    fn render_counted(&self, message: &[u8], seq: u64) -> Result<Bytes, ClientError> {
        let wire = self.render(message, seq)?;
        if self.config.ack.is_on() {
            add(&self.stats.unacked, 1);
            add(&self.stats.bytes_unacked, wire.len() as u64);
        }
        Ok(wire)
    }

    fn settle(
        &self,
        result: Result<Result<Pushed, PushError>, ClientError>,
    ) -> Result<(), ClientError> {
        match result {
            Ok(Ok(pushed)) => {
                add(&self.stats.accepted, 1);
                if pushed == Pushed::DroppedOldest {
                    add(&self.stats.dropped_outbox_full, 1);
                }
                Ok(())
            }
            Ok(Err(e)) => {
                add(&self.stats.rejected, 1);
                Err(match e {
                    PushError::Full => ClientError::Full,
                    PushError::Closed => ClientError::Closed,
                })
            }
            Err(e) => {
                add(&self.stats.rejected, 1);
                Err(e)
            }
        }
    }

    /// Acknowledged messages leave: their budget is free again and the
    /// gauges fall.
    fn acknowledged(&self, freed: &[outbox::Outgoing], seq: u64) {
        let mut bytes = 0u64;
        for frame in freed {
            bytes += frame.frame.len() as u64;
            self.outbox.release(frame.cost);
        }
        let n = freed.len() as u64;
        add(&self.stats.acked, n);
        add(&self.stats.bytes_acked, bytes);
        self.stats.unacked.fetch_sub(n, Ordering::Relaxed);
        self.stats.bytes_unacked.fetch_sub(bytes, Ordering::Relaxed);
        self.acked.send_if_modified(|acked| {
            let raised = seq > *acked;
            if raised {
                *acked = seq;
            }
            raised
        });
    }
}

/// `value` as a JSON string.
fn json_string(value: &str) -> String {
    let mut out = Vec::with_capacity(value.len() + 2);
    push_json_string(&mut out, value);
    // push_json_string writes valid UTF-8: the input's, quotes and escapes.
    String::from_utf8(out).unwrap_or_default()
}

/// `{"key":value,` + the rest of `object` (a JSON object, checked by the
/// caller; `value` is JSON already), so the new field comes first and the
/// original bytes follow untouched.
fn insert_field(object: &[u8], key: &str, value: &str) -> Bytes {
    let open = object.iter().position(|&b| b == b'{').unwrap_or(0);
    let rest = &object[open + 1..];
    let is_empty = rest
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'}');
    let mut out = Vec::with_capacity(object.len() + key.len() + value.len() + 8);
    out.extend_from_slice(&object[..=open]);
    push_json_string(&mut out, key);
    out.push(b':');
    out.extend_from_slice(value.as_bytes());
    if !is_empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Bytes::from(out)
}

/// Ends the driver when the last handle is dropped.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.outbox.close();
        self.shared.shutdown.cancel();
    }
}

/// A reconnecting client. Cheap to clone: every clone sends through the
/// same connection and outbox; dropping the last one stops it at once
/// (call [`Client::close`] to flush first).
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.shared().config.addr)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Validates `config` and starts connecting in the background; messages
    /// can be sent at once and wait in the outbox until the link is up.
    /// Must be called within a Tokio runtime.
    pub fn start(config: ClientConfig) -> Result<Client, ClientError> {
        config.validate()?;
        let tls = config
            .tls
            .as_ref()
            .map(|t| tls::Connector::new(t, &config.addr))
            .transpose()?;
        let encoder = FrameEncoder::new(&config.framing, config.max_frame_bytes);
        let (heartbeat, heartbeat_authenticates) = match &config.protocol {
            ClientProtocol::Node(identity) => {
                let payload = heartbeat_payload(
                    &identity.fields,
                    identity.node_id.as_deref(),
                    identity.token.as_deref(),
                );
                let authenticates = identity.node_id.is_some() || identity.token.is_some();
                (Some(Bytes::from(payload)), authenticates)
            }
            ClientProtocol::Raw { heartbeat } => (heartbeat.clone(), false),
        };
        let frame_once = |payload: &[u8], what: &str| {
            let mut wire = BytesMut::new();
            encoder
                .clone()
                .encode(payload, &mut wire)
                .map(|()| wire.freeze())
                .map_err(|e| ClientError::Config {
                    key: "protocol",
                    message: format!("{what} cannot be framed: {e}"),
                })
        };
        let heartbeat = heartbeat
            .map(|payload| frame_once(&payload, "heartbeat"))
            .transpose()?;
        let opener = match &config.ack.mode {
            ClientAckMode::Length { stream_id } => {
                let mut payload = 0u64.to_be_bytes().to_vec();
                payload.extend_from_slice(stream_id.as_bytes());
                Some(frame_once(&payload, "ack.mode's stream_id")?)
            }
            _ => heartbeat.clone().filter(|_| heartbeat_authenticates),
        };
        let (budget, first_seq) = if config.ack.is_on() {
            let first_seq = config.ack.first_seq.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
                    .unwrap_or(1)
                    .max(1)
            });
            (Budget::Bytes(config.ack.max_unacked_bytes), first_seq)
        } else {
            (Budget::Frames(config.outbox_capacity), 0)
        };
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let shared = Arc::new(Shared {
            outbox: Outbox::new(budget, config.outbox_policy, first_seq),
            encoder: Mutex::new(encoder),
            heartbeat,
            opener,
            acked: watch::Sender::new(0),
            tls,
            stats: Stats::default(),
            events,
            state: watch::Sender::new(ClientState::Connecting),
            shutdown: CancellationToken::new(),
            done: CancellationToken::new(),
            config,
        });
        tokio::spawn(driver::run(shared.clone()));
        Ok(Client {
            handle: Arc::new(Handle { shared }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// Frames `message` and queues it, waiting for room under the `block`
    /// policy. Returns once queued, not once written (nor acknowledged:
    /// [`Client::close`] and [`Client::watch_acked`] tell that).
    pub async fn send(&self, message: impl Into<Bytes>) -> Result<(), ClientError> {
        let shared = self.shared();
        let result = match shared.prepare(message.into()) {
            Ok(message) => {
                let cost = shared.cost(&message);
                shared
                    .outbox
                    .push(cost, |seq| shared.render_counted(&message, seq))
                    .await
            }
            Err(e) => Err(e),
        };
        shared.settle(result)
    }

    /// Frames `message` and queues it without waiting: under the `block`
    /// and `fail` policies a full outbox is [`ClientError::Full`].
    pub fn try_send(&self, message: impl Into<Bytes>) -> Result<(), ClientError> {
        let shared = self.shared();
        let result = shared.prepare(message.into()).and_then(|message| {
            let cost = shared.cost(&message);
            shared
                .outbox
                .try_push(cost, |seq| shared.render_counted(&message, seq))
        });
        shared.settle(result)
    }

    /// The highest sequence number the server acknowledged (0: none yet),
    /// as a receiver that sees every rise (acknowledged delivery).
    pub fn watch_acked(&self) -> watch::Receiver<u64> {
        self.shared().acked.subscribe()
    }

    /// Stops accepting messages, writes everything queued (reconnecting if
    /// need be), with acks waits until the server acknowledged everything,
    /// half-closes the connection and waits for the server to close its
    /// side, all within `deadline`. Past it, whatever is left is dropped,
    /// counted and reported as [`ClientError::CloseTimeout`] (with acks,
    /// [`ClientError::Unacknowledged`]). Closing a closed client returns at
    /// once.
    pub async fn close(&self, deadline: Duration) -> Result<(), ClientError> {
        let shared = self.shared();
        shared.outbox.close();
        if tokio::time::timeout(deadline, shared.done.cancelled())
            .await
            .is_err()
        {
            shared.shutdown.cancel();
            shared.done.cancelled().await;
        }
        let unsent = shared.stats.dropped_unsent.load(Ordering::Relaxed);
        let unacked = shared.stats.dropped_unacked.load(Ordering::Relaxed);
        match (shared.config.ack.is_on(), unsent + unacked) {
            (_, 0) => Ok(()),
            (true, unacked) => Err(ClientError::Unacknowledged { unacked }),
            (false, _) => Err(ClientError::CloseTimeout { unsent }),
        }
    }

    /// Subscribes to status events from now on.
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.shared().events.subscribe()
    }

    /// The current state; `watch` it to wait for a change.
    pub fn state(&self) -> ClientState {
        *self.shared().state.borrow()
    }

    /// A receiver of state changes.
    pub fn watch_state(&self) -> watch::Receiver<ClientState> {
        self.shared().state.subscribe()
    }

    /// Whether the link is up now.
    pub fn is_connected(&self) -> bool {
        self.state() == ClientState::Connected
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> ClientCounters {
        let s = &self.shared().stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClientCounters {
            accepted: get(&s.accepted),
            sent: get(&s.sent),
            bytes_sent: get(&s.bytes_sent),
            heartbeats_sent: get(&s.heartbeats_sent),
            resent: get(&s.resent),
            rejected: get(&s.rejected),
            dropped_outbox_full: get(&s.dropped_outbox_full),
            dropped_unsent: get(&s.dropped_unsent),
            outbox_len: self.shared().outbox.len() as u64,
            connects: get(&s.connects),
            connect_failures: get(&s.connect_failures),
            disconnects: get(&s.disconnects),
            liveness_timeouts: get(&s.liveness_timeouts),
            frames_received: get(&s.frames_received),
            bytes_received: get(&s.bytes_received),
            frames_received_invalid: get(&s.frames_received_invalid),
            acks_received: get(&s.acks_received),
            acked: get(&s.acked),
            bytes_acked: get(&s.bytes_acked),
            bytes_resent: get(&s.bytes_resent),
            unacked: get(&s.unacked),
            bytes_unacked: get(&s.bytes_unacked),
            dropped_unacked: get(&s.dropped_unacked),
            acked_seq: *self.shared().acked.borrow(),
            next_seq: if self.shared().config.ack.is_on() {
                self.shared().outbox.next_seq()
            } else {
                0
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn node_client_shared(node_id: &str) -> Shared {
        shared_with(ClientConfig {
            protocol: ClientProtocol::Node(NodeIdentity {
                node_id: Some(node_id.into()),
                token: Some("s".into()),
                ..NodeIdentity::default()
            }),
            ..ClientConfig::new("127.0.0.1:1")
        })
    }

    fn shared_with(config: ClientConfig) -> Shared {
        Shared {
            outbox: Outbox::new(Budget::Frames(1), OutboxPolicy::Block, 1),
            encoder: Mutex::new(FrameEncoder::new(&config.framing, 1024)),
            heartbeat: None,
            opener: None,
            acked: watch::Sender::new(0),
            tls: None,
            stats: Stats::default(),
            events: broadcast::channel(1).0,
            state: watch::Sender::new(ClientState::Connecting),
            shutdown: CancellationToken::new(),
            done: CancellationToken::new(),
            config,
        }
    }

    /// TLS files are read at start; a missing one is named.
    #[test]
    fn tls_files_are_checked_at_start() {
        let key = |tls: ClientTlsConfig| match Client::start(ClientConfig {
            tls: Some(tls),
            ..ClientConfig::new("127.0.0.1:1")
        }) {
            Err(ClientError::Config { key, .. }) => key,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert_eq!(key(ClientTlsConfig::new("/nonexistent/ca.pem")), "tls.ca");
    }

    #[test]
    fn node_id_is_filled_in_only_when_missing() {
        let shared = node_client_shared("radar\"3");
        let filled = shared
            .prepare(Bytes::from_static(br#" { "timestamp":5,"delay":[1]}"#))
            .unwrap();
        assert_eq!(
            &filled[..],
            br#" {"node_id":"radar\"3", "timestamp":5,"delay":[1]}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&filled).unwrap();
        assert_eq!(v["node_id"], "radar\"3");
        assert_eq!(v["timestamp"], 5);
        assert!(
            v.get("token").is_none(),
            "the token is not copied into data"
        );
        assert_eq!(
            &shared.prepare(Bytes::from_static(b"{}")).unwrap()[..],
            br#"{"node_id":"radar\"3"}"#
        );
        for unchanged in [
            &br#"{"node_id":"other","timestamp":1}"#[..],
            b"not json",
            b"[1,2]",
            b"{\"truncated\":",
        ] {
            assert_eq!(
                &shared.prepare(Bytes::copy_from_slice(unchanged)).unwrap()[..],
                unchanged
            );
        }
    }

    fn frame(shared: &Shared, message: Bytes, seq: u64) -> Result<Bytes, ClientError> {
        shared.prepare(message).and_then(|m| shared.render(&m, seq))
    }

    #[test]
    fn frames_are_refused_before_queueing() {
        let shared = node_client_shared("a");
        assert!(matches!(
            frame(&shared, Bytes::from_static(b"{\"a\":\n1}"), 0),
            Err(ClientError::Unframeable(_))
        ));
        assert!(matches!(
            frame(&shared, Bytes::from(vec![b' '; 2000]), 0),
            Err(ClientError::Unframeable(CodecError::Oversize { .. }))
        ));
        assert_eq!(
            &frame(&shared, Bytes::from_static(b"{}"), 0).unwrap()[..],
            b"{\"node_id\":\"a\"}\n"
        );
    }

    #[test]
    fn node_acks_number_json_objects_and_refuse_the_rest() {
        let shared = shared_with(ClientConfig {
            protocol: ClientProtocol::Node(NodeIdentity {
                node_id: Some("n".into()),
                ..NodeIdentity::default()
            }),
            outbox_policy: OutboxPolicy::Block,
            ack: ClientAckConfig::new(ClientAckMode::Node {
                seq_field: "sq".into(),
            }),
            ..ClientConfig::new("127.0.0.1:1")
        });
        let wire = frame(&shared, Bytes::from_static(br#"{"timestamp":5}"#), 42).unwrap();
        assert_eq!(
            &wire[..],
            br#"{"sq":42,"node_id":"n","timestamp":5}"#
                .as_slice()
                .iter()
                .chain(b"\n")
                .copied()
                .collect::<Vec<_>>()
        );
        assert_eq!(
            &frame(&shared, Bytes::from_static(b"{}"), 7).unwrap()[..],
            b"{\"sq\":7,\"node_id\":\"n\"}\n"
        );
        for refused in [&b"[1]"[..], b"not json", br#"{"sq":3}"#] {
            assert!(
                matches!(
                    frame(&shared, Bytes::copy_from_slice(refused), 1),
                    Err(ClientError::Unnumberable(_))
                ),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
    }

    #[test]
    fn length_acks_lead_each_payload_with_its_number() {
        let shared = shared_with(ClientConfig {
            framing: FramingConfig::Length(Default::default()),
            protocol: ClientProtocol::Raw { heartbeat: None },
            outbox_policy: OutboxPolicy::Fail,
            ack: ClientAckConfig::new(ClientAckMode::Length {
                stream_id: "cam".into(),
            }),
            ..ClientConfig::new("127.0.0.1:1")
        });
        let wire = frame(&shared, Bytes::from_static(b"\x01\x02"), 0x0102).unwrap();
        let mut payload = 0x0102u64.to_be_bytes().to_vec();
        payload.extend_from_slice(&[1, 2]);
        assert_eq!(&wire[wire.len() - 10..], &payload[..]);
        assert!(wire.len() > 10, "the length header comes first");
    }

    #[test]
    fn config_is_validated_naming_the_field() {
        let key = |config: ClientConfig| match config.validate() {
            Err(ClientError::Config { key, .. }) => key,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert!(ClientConfig::new("h:1").validate().is_ok());
        assert_eq!(
            key(ClientConfig {
                outbox_capacity: 0,
                ..ClientConfig::new("h:1")
            }),
            "outbox_capacity"
        );
        assert_eq!(
            key(ClientConfig {
                backoff_max: Duration::from_millis(1),
                ..ClientConfig::new("h:1")
            }),
            "backoff_max"
        );
        assert_eq!(
            key(ClientConfig {
                framing: FramingConfig::Cobs,
                ..ClientConfig::new("h:1")
            }),
            "protocol"
        );
        assert_eq!(
            key(ClientConfig {
                liveness_timeout: Some(Duration::ZERO),
                ..ClientConfig::new("h:1")
            }),
            "liveness_timeout"
        );
    }

    #[test]
    fn ack_config_is_validated_naming_the_field() {
        let key = |config: ClientConfig| match config.validate() {
            Err(ClientError::Config { key, .. }) => key,
            other => panic!("expected a config error, got {other:?}"),
        };
        let acked = |ack: ClientAckConfig| ClientConfig {
            outbox_policy: OutboxPolicy::Block,
            ack,
            ..ClientConfig::new("h:1")
        };
        assert!(
            acked(ClientAckConfig::new(ClientAckMode::node()))
                .validate()
                .is_ok()
        );
        // Acks never drop: drop-oldest is refused.
        assert_eq!(
            key(ClientConfig {
                ack: ClientAckConfig::new(ClientAckMode::node()),
                ..ClientConfig::new("h:1")
            }),
            "outbox_policy"
        );
        assert_eq!(
            key(acked(ClientAckConfig {
                first_seq: Some(0),
                ..ClientAckConfig::new(ClientAckMode::node())
            })),
            "ack.first_seq"
        );
        assert_eq!(
            key(acked(ClientAckConfig {
                max_unacked_bytes: 1000,
                ..ClientAckConfig::new(ClientAckMode::node())
            })),
            "ack.max_unacked_bytes"
        );
        assert_eq!(
            key(acked(ClientAckConfig::new(ClientAckMode::Length {
                stream_id: "s".into()
            }))),
            "ack.mode"
        );
        let length = |stream_id: &str, heartbeat: Option<Bytes>| ClientConfig {
            framing: FramingConfig::Length(Default::default()),
            protocol: ClientProtocol::Raw { heartbeat },
            ..acked(ClientAckConfig::new(ClientAckMode::Length {
                stream_id: stream_id.into(),
            }))
        };
        assert!(length("cam1", None).validate().is_ok());
        assert_eq!(key(length("", None)), "ack.mode");
        assert_eq!(
            key(length("cam1", Some(Bytes::from_static(b"hb")))),
            "protocol"
        );
    }
}

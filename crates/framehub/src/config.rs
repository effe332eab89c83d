//! Every setting of a hub and its listeners, with its default, in one place.
//!
//! The structs deserialize from TOML (`framehub serve --config`) and are
//! equally usable from code: each has a `Default` that matches the radar
//! system framehub replaces (port 30050, `lines` + `node`, queue 2000, 1 MiB
//! frames). [`HubConfig::validate`] runs before any port is bound and names
//! the offending key. Sizes and durations are parsed by [`crate::units`]
//! (re-exported here, where they used to live).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::FramingConfig;
use crate::json::EnvelopeKeys;
pub use crate::units::{
    ByteSize, duration, opt_byte_size, opt_duration, parse_duration, parse_opt_duration,
    ser_duration, ser_opt_byte_size, ser_opt_duration,
};

/// The port the radar system's nodes connect to, kept as framehub's default.
pub const DEFAULT_PORT: u16 = 30050;

/// The default `auth.timeout`: three heartbeat periods of the radar
/// nodes' simulator (10 s), so a node whose first message is its first
/// heartbeat gets in even if it misses one.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(30);

/// The default `proxy_timeout`: a balancer writes the PROXY header with
/// the connection's first bytes, so anything slower is not a balancer.
pub const DEFAULT_PROXY_TIMEOUT: Duration = Duration::from_secs(5);
/// The default `tls.handshake_timeout`: a handshake takes two round trips
/// and a certificate chain, which a radio or satellite link with a second
/// of latency still finishes well within.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest `max_nodes` accepted: far beyond one machine's fleet, and
/// within what the new-node channel can be sized to.
pub const MAX_NODES_LIMIT: usize = 1_000_000;

/// The largest `group_size`: a group is one allocation of this many frames.
pub const MAX_GROUP_SIZE: usize = 1 << 20;

/// The most `io_threads`: far past any machine framehub runs on.
pub const MAX_IO_THREADS: usize = 1024;

/// CPUs a Linux CPU set can name (`CPU_SETSIZE`).
pub const MAX_CPU_ID: usize = 1024;

/// The largest `max_frame_bytes` (and `auth.max_frame_bytes`): a frame is
/// held whole in memory, and a gigabyte is past any device's message.
pub const MAX_FRAME_BYTES_LIMIT: usize = 1 << 30;
/// The largest `read_buffer_bytes`: one read per connection is held at
/// once, so this times `max_connections` is memory.
pub const MAX_READ_BUFFER_BYTES: usize = 64 << 20;
/// The largest `queue.capacity` (frames): a queue grows with use up to
/// it, each frame holding its bytes.
pub const MAX_QUEUE_CAPACITY: usize = 1_000_000;
/// The largest `group_capacity` (groups waiting).
pub const MAX_GROUP_CAPACITY: usize = 1 << 16;
/// The largest `egress_buffer_bytes` (per client).
pub const MAX_EGRESS_BUFFER_BYTES: usize = 1 << 30;
/// The largest `socket.recv_buffer_bytes` / `send_buffer_bytes` (the
/// kernel takes an `int` and clamps far lower anyway).
pub const MAX_SOCKET_BUFFER_BYTES: usize = 1 << 30;
/// The largest `max_connections` of one listener: far past one machine's
/// descriptors, and within what a semaphore can count.
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;
/// The largest `max_json_depth`.
pub const MAX_JSON_DEPTH_LIMIT: usize = 1 << 16;
/// The largest `nodes.max_node_id_bytes`.
pub const MAX_NODE_ID_BYTES_LIMIT: usize = 64 << 10;

/// The default `frame_timeout`: a frame (a line, a length-prefixed
/// message...) that has not arrived whole this long after its first byte
/// closes the connection. 1 MiB in 30 s is 35 KB/s, slower than any link
/// a device streams frames over.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// The default `partial_frame_budget`: the bytes of unfinished frames all
/// connections together may hold (256 connections at the default 1 MiB
/// `max_frame_bytes`; a few hundred thousand devices sending small frames).
pub const DEFAULT_PARTIAL_FRAME_BUDGET: usize = 256 << 20;

/// The default `fd_reserve`: descriptors the listeners leave free for the
/// rest of the process (the admin port, sink files, taps, TLS files).
pub const DEFAULT_FD_RESERVE: usize = 128;

/// Settings of a whole hub: its listeners and the node table they share.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// The listeners (`[[listener]]` tables). An empty list means one
    /// listener with every default.
    pub listener: Vec<ListenerConfig>,
    /// Settings of the node table shared by all listeners.
    pub nodes: NodesConfig,
    /// How long shutdown waits for connections to close before it gives up
    /// on them (`"5s"`).
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub shutdown_grace: Duration,
    /// Period of the traffic statistics ([`crate::Hub::stats`]; `"1s"`).
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub stats_interval: Duration,
    /// The threads the hub's I/O runs on (`[runtime]`).
    pub runtime: RuntimeConfig,
    /// Closed connections remembered for [`crate::Hub::closed_connections`]
    /// (`/api/connections?state=closed`); the oldest go first. 0 keeps none.
    pub connection_history: usize,
    /// Bytes of unfinished frames all connections of the hub may hold
    /// together (`"256MiB"`). Past it, the connections holding the largest
    /// unfinished frames are closed (counted as `partial_budget`) until
    /// the rest fits: a few hundred peers trickling never-ending frames
    /// cannot take the memory other clients need. At least every
    /// listener's `max_frame_bytes`.
    pub partial_frame_budget: ByteSize,
    /// File descriptors the listeners leave free (`128`): a connection
    /// accepted when fewer remain under the process's limit is closed at
    /// once (counted as `connections_shed`), so the admin port, sinks and
    /// reloads keep working when devices take every descriptor.
    pub fd_reserve: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            listener: Vec::new(),
            nodes: NodesConfig::default(),
            shutdown_grace: Duration::from_secs(5),
            stats_interval: Duration::from_secs(1),
            runtime: RuntimeConfig::default(),
            connection_history: crate::history::DEFAULT_CONNECTION_HISTORY,
            partial_frame_budget: ByteSize(DEFAULT_PARTIAL_FRAME_BUDGET),
            fd_reserve: DEFAULT_FD_RESERVE,
        }
    }
}

/// Where the hub's I/O runs: by default on the tokio runtime of the program
/// that starts it; with any of these set, on runtime threads of its own,
/// placed and prioritised as asked (the robotics stage's I/O thread).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Worker threads of the hub's own runtime. 0 (default): no runtime of
    /// its own, unless `cpu_affinity` or `thread_priority` is set; then one
    /// thread per CPU in `cpu_affinity`, or one per CPU of the machine.
    pub io_threads: usize,
    /// CPUs the hub's threads may run on (`[0, 1]`); empty: any.
    pub cpu_affinity: Vec<usize>,
    /// Priority of the hub's threads: a nice value (`-20`..`19`), or
    /// `"realtime:N"` for `SCHED_FIFO` priority N (1..99) when the process
    /// is allowed to; otherwise a warning, and the threads run on at normal
    /// priority. Unset: inherited.
    pub thread_priority: Option<ThreadPriority>,
}

impl RuntimeConfig {
    /// Whether the hub needs runtime threads of its own.
    pub fn is_dedicated(&self) -> bool {
        self.io_threads > 0 || !self.cpu_affinity.is_empty() || self.thread_priority.is_some()
    }
}

/// A thread priority, as `thread_priority` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadPriority {
    /// A nice value for the normal scheduler (-20 highest .. 19 lowest).
    Nice(i32),
    /// `SCHED_FIFO` with this static priority (1..99).
    Realtime(u8),
}

impl ThreadPriority {
    /// Parses `"realtime:10"`, `"fifo:10"` or a nice value such as `"-5"`.
    pub fn parse(text: &str) -> Result<ThreadPriority, String> {
        let text = text.trim();
        if let Some(n) = text
            .strip_prefix("realtime:")
            .or_else(|| text.strip_prefix("fifo:"))
        {
            return match n.trim().parse::<u8>() {
                Ok(p) if (1..=99).contains(&p) => Ok(ThreadPriority::Realtime(p)),
                _ => Err(format!("{text:?}: a realtime priority is 1..99")),
            };
        }
        match text.parse::<i32>() {
            Ok(n) => ThreadPriority::nice(n),
            Err(_) => Err(format!(
                "{text:?} is neither a nice value (-20..19) nor \"realtime:N\""
            )),
        }
    }

    fn nice(n: i32) -> Result<ThreadPriority, String> {
        if (-20..=19).contains(&n) {
            Ok(ThreadPriority::Nice(n))
        } else {
            Err(format!("nice value {n} is outside -20..19"))
        }
    }
}

/// As written: a nice value as a number, realtime as `"realtime:N"`.
impl Serialize for ThreadPriority {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ThreadPriority::Nice(n) => s.serialize_i32(*n),
            ThreadPriority::Realtime(p) => s.collect_str(&format_args!("realtime:{p}")),
        }
    }
}

impl<'de> Deserialize<'de> for ThreadPriority {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Int(i64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Int(n) => i32::try_from(n)
                .map_err(|_| format!("nice value {n} is outside -20..19"))
                .and_then(ThreadPriority::nice)
                .map_err(serde::de::Error::custom),
            Repr::Text(t) => ThreadPriority::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// The node table: which nodes exist and whether unknown ones are added.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodesConfig {
    /// Create a receiver for a node the first time it sends, and tell the
    /// application through [`crate::Hub::new_nodes`].
    pub auto_provision: bool,
    /// The most nodes auto-provisioning may create; frames of further nodes
    /// are dropped and counted (`max_nodes`), unless a node can be evicted
    /// (`evict_idle_after`).
    pub max_nodes: usize,
    /// Longest `node_id` in bytes (`256`): a frame that would bind a
    /// connection to a longer one closes it (counted as an auth failure),
    /// so node names cannot be used to fill memory.
    pub max_node_id_bytes: usize,
    /// When the table is full, an auto-provisioned node with no connection,
    /// no frame waiting and nothing received for this long (`"5m"`) is
    /// evicted to make room for a new one (counted as `nodes_evicted`; its
    /// receivers end). `"off"` (or `"0s"`): never evict.
    #[serde(deserialize_with = "opt_duration", serialize_with = "ser_opt_duration")]
    pub evict_idle_after: Option<Duration>,
}

/// The default `nodes.evict_idle_after`.
pub const DEFAULT_EVICT_IDLE_AFTER: Duration = Duration::from_secs(300);

impl Default for NodesConfig {
    fn default() -> Self {
        NodesConfig {
            auto_provision: true,
            max_nodes: 1024,
            max_node_id_bytes: 256,
            evict_idle_after: Some(DEFAULT_EVICT_IDLE_AFTER),
        }
    }
}

/// What a listener does with each frame once it is cut out of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// JSON envelope with `node_id`, token on the first message, heartbeats
    /// (the radar system's protocol). Requires `lines` or `json` framing.
    #[default]
    Node,
    /// Frames are delivered as they are, to the listener's own receiver.
    Raw,
}

/// One listening socket and everything about the connections it accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Name used in logs, events and records (`default`).
    pub name: String,
    /// Address to bind. When unset: `0.0.0.0:30050` if a token is
    /// configured, else `127.0.0.1:30050` (protected mode).
    pub bind: Option<SocketAddr>,
    /// How the byte stream is cut into frames.
    pub framing: FramingConfig,
    /// What is done with each frame.
    pub protocol: Protocol,
    /// Largest frame accepted (`"1MiB"`).
    pub max_frame_bytes: ByteSize,
    /// Size of one read from the socket (`"64KiB"`).
    pub read_buffer_bytes: ByteSize,
    /// Connections over this many are accepted and closed at once.
    pub max_connections: usize,
    /// Close a connection that sent nothing for this long (`"30s"`; unset:
    /// never).
    #[serde(deserialize_with = "opt_duration", serialize_with = "ser_opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// A frame must arrive whole within this time of its first byte
    /// (`"30s"`), or the connection is closed (counted as
    /// `frame_timeout`): a peer trickling a never-ending frame byte by
    /// byte keeps `idle_timeout` from firing, not this.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub frame_timeout: Duration,
    /// Authentication of the node protocol.
    pub auth: AuthConfig,
    /// TLS on this listener (`[listener.tls]`; off unless `cert` is set).
    pub tls: TlsConfig,
    /// Names of the node protocol's JSON fields.
    pub fields: FieldsConfig,
    /// Top-level fields removed from every node frame before anything
    /// receives it, besides the token field (always removed): e.g.
    /// `["password"]`. The frame stays valid JSON, otherwise byte for byte.
    pub redact: Vec<String>,
    /// The queue of each receiver this listener provisions.
    pub queue: QueueConfig,
    /// Socket options of the listening and accepted sockets.
    pub socket: SocketConfig,
    /// Deepest JSON nesting accepted in a node frame, and in a frame of the
    /// `json` framing.
    pub max_json_depth: usize,
    /// Write a heartbeat frame to every client this often (`"1s"`; unset:
    /// never), so clients can tell a live but quiet server from a half-open
    /// connection. Node protocol: `{"type":"heartbeat"}` (with the
    /// configured field names); other protocols: an empty frame in the
    /// listener's framing (`lines`, `length` and `cobs` only: `chunk`,
    /// `spacepacket` and `json` cannot carry an empty frame).
    #[serde(deserialize_with = "opt_duration", serialize_with = "ser_opt_duration")]
    pub server_heartbeat: Option<Duration>,
    /// Bytes each client's egress buffer holds at most (`"1MiB"`): what
    /// [`crate::Hub::broadcast`] and friends queue for it until the socket
    /// takes them.
    pub egress_buffer_bytes: ByteSize,
    /// What happens to a client whose egress buffer is full.
    pub slow_client: SlowClientPolicy,
    /// Where frames go: per-node receivers, or one stream of groups.
    pub delivery: Delivery,
    /// `delivery = "groups"`: frames per group at most.
    pub group_size: usize,
    /// `delivery = "groups"`: a group is published this long after its
    /// first frame even if not full (`"5ms"`).
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub group_max_delay: Duration,
    /// `delivery = "groups"`: published groups waiting for the consumer at
    /// most; past that `group_overflow` applies.
    pub group_capacity: usize,
    /// `delivery = "groups"`: what a full group stream does, as a receiver's
    /// `queue.overflow` (`full_grace` is the queue's too).
    pub group_overflow: OverflowPolicy,
    /// Whether connections start with a PROXY protocol header (v1 or v2)
    /// from a load balancer, whose source address then stands for the
    /// connection's peer everywhere (records, logs, events,
    /// [`crate::Hub::connections`]).
    pub proxy_protocol: ProxyProtocol,
    /// The balancers allowed to send a PROXY header, as CIDRs
    /// (`"10.0.0.0/8"`, `"2001:db8::/32"`) or single addresses. A header
    /// from any other address is refused, never trusted. Required when
    /// `proxy_protocol` is not `off`.
    #[serde(deserialize_with = "ip_nets", serialize_with = "ser_ip_nets")]
    pub trusted_proxies: Vec<IpNet>,
    /// A connection whose PROXY header is not complete within this time is
    /// closed (`"5s"`); with `optional`, one that has not started a header
    /// by then is served with its socket address (a balancer writes the
    /// header at once). Counted from the accept; `auth.timeout` starts
    /// after it.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub proxy_timeout: Duration,
    /// Every frame is a request answered by a NATS service
    /// (`handler = { nats = "svc.commands" }`) instead of going to a
    /// receiver; the application builds the handler
    /// (`framehub::nats::request_handler`, feature `nats`) and passes it to
    /// [`crate::Hub::start_with`], as `framehub serve` does.
    pub handler: Option<HandlerConfig>,
    /// Acknowledged delivery (`[listener.ack]`, off by default): the
    /// server tells each client which of its frames are durable.
    pub ack: AckConfig,
}

/// A listener's requests answered by a NATS service:
/// `handler = { nats = "svc.commands", timeout = "5s", max_in_flight = 64 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// The subject each request frame is sent to as a NATS request.
    pub nats: String,
    /// How long a request may take before the device gets the timeout
    /// reply.
    #[serde(
        default = "default_handler_timeout",
        deserialize_with = "duration",
        serialize_with = "ser_duration"
    )]
    pub timeout: Duration,
    /// Requests of one connection in flight at most; past this the
    /// connection stops reading.
    #[serde(default = "default_handler_in_flight")]
    pub max_in_flight: usize,
}

/// How long a request may run by default (every handler's default, also
/// [`crate::handler::DEFAULT_TIMEOUT`]).
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests of one connection in flight by default (also
/// [`crate::handler::DEFAULT_MAX_IN_FLIGHT`]).
pub const DEFAULT_HANDLER_MAX_IN_FLIGHT: usize = 64;

fn default_handler_timeout() -> Duration {
    DEFAULT_HANDLER_TIMEOUT
}

fn default_handler_in_flight() -> usize {
    DEFAULT_HANDLER_MAX_IN_FLIGHT
}

/// Whether a listener acknowledges frames, and how they are numbered
/// (`docs/acks.md` has the protocol).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AckConfig {
    /// `"off"` (existing clients untouched) or `"durable"`: frames that
    /// carry a sequence number are acknowledged, cumulatively, once every
    /// durable consumer says they are safe; resends are dropped as
    /// `duplicate`. Needs `protocol = "node"` (on `lines` or `json`) or
    /// `protocol = "raw"` on `framing = "length"`, and `overflow = "block"`
    /// for the queues (a frame dropped after it was accepted would be
    /// covered by a later ack).
    pub mode: AckMode,
    /// Node protocol: the top-level member holding a frame's sequence
    /// number (an integer > 0, increasing per node).
    pub seq_field: String,
}

impl Default for AckConfig {
    fn default() -> Self {
        AckConfig {
            mode: AckMode::Off,
            seq_field: "seq".to_owned(),
        }
    }
}

impl AckConfig {
    /// Whether the listener acknowledges frames.
    pub fn is_on(&self) -> bool {
        self.mode != AckMode::Off
    }
}

/// See [`AckConfig::mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AckMode {
    /// No acknowledgements; sequence numbers are not looked for.
    #[default]
    Off,
    /// Acknowledge what is durable (written and synced by every durable
    /// sink; for a library user: what the consumer acknowledged).
    Durable,
}

/// Whether a listener's connections carry a PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyProtocol {
    /// No header is read; the peer is the socket's address.
    #[default]
    Off,
    /// A connection from a trusted proxy may start with a header; one
    /// without is served with its socket address.
    Optional,
    /// Every connection must start with a header from a trusted proxy;
    /// any other is closed (counted).
    Required,
}

/// Reads `trusted_proxies`: each entry a CIDR or a single address.
fn ip_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    texts
        .iter()
        .map(|t| parse_ip_net(t).map_err(serde::de::Error::custom))
        .collect()
}

fn ser_ip_nets<S: Serializer>(nets: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(nets.iter().map(|n| n.to_string()))
}

/// Parses `"10.0.0.0/8"`, `"::1/128"`, or a single address
/// (`"127.0.0.1"`, a /32 or /128 of its own).
pub fn parse_ip_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net);
    }
    text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        format!("{text:?} is not a CIDR (\"10.0.0.0/8\", \"fd00::/8\") or an IP address")
    })
}

/// What a client whose egress buffer is full costs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowClientPolicy {
    /// The message is dropped for that client (counted); it stays connected.
    #[default]
    Drop,
    /// The client is disconnected (counted), as NATS does with a slow
    /// consumer.
    Disconnect,
}

/// How a listener hands frames to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Per-node receivers (node protocol) or the listener's receiver (raw):
    /// [`crate::Hub::receiver`], [`crate::Hub::listener_receiver`].
    #[default]
    Receivers,
    /// One stream of groups of frames from every connection of the
    /// listener: [`crate::Hub::groups`]. No receivers are provisioned.
    Groups,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            name: "default".to_owned(),
            bind: None,
            framing: FramingConfig::default(),
            protocol: Protocol::Node,
            max_frame_bytes: ByteSize(1 << 20),
            read_buffer_bytes: ByteSize(64 << 10),
            max_connections: 10_000,
            idle_timeout: None,
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            fields: FieldsConfig::default(),
            redact: Vec::new(),
            queue: QueueConfig::default(),
            socket: SocketConfig::default(),
            max_json_depth: crate::json::DEFAULT_MAX_DEPTH,
            server_heartbeat: None,
            egress_buffer_bytes: ByteSize(1 << 20),
            slow_client: SlowClientPolicy::Drop,
            delivery: Delivery::Receivers,
            group_size: 64,
            group_max_delay: Duration::from_millis(5),
            group_capacity: 64,
            group_overflow: OverflowPolicy::DropOldest,
            proxy_protocol: ProxyProtocol::Off,
            trusted_proxies: Vec::new(),
            proxy_timeout: DEFAULT_PROXY_TIMEOUT,
            handler: None,
            ack: AckConfig::default(),
        }
    }
}

impl ListenerConfig {
    /// The address this listener binds: the configured one, or port 30050
    /// on all interfaces when a token protects it and on loopback when not.
    pub fn effective_bind(&self) -> SocketAddr {
        self.bind.unwrap_or_else(|| {
            let ip = if self.auth.is_required() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            };
            SocketAddr::new(ip, DEFAULT_PORT)
        })
    }
}

/// TLS of one listener: on when `cert` is set. TLS 1.2 and 1.3 only.
/// The files are read when the hub starts and again by
/// [`crate::Hub::reload_tls`]; a bad file is a config error naming its key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM, leaf first (`"server.pem"`).
    pub cert: Option<PathBuf>,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// CA certificates, PEM: when set, every client must present a
    /// certificate signed by one of them (mTLS).
    pub client_ca: Option<PathBuf>,
    /// A connection whose handshake has not finished within this time is
    /// closed and counted (`"5s"`): a plaintext client or a stalled one
    /// never holds a connection slot longer.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub handshake_timeout: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            client_ca: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

impl TlsConfig {
    /// Whether the listener speaks TLS.
    pub fn is_enabled(&self) -> bool {
        self.cert.is_some()
    }
}

/// How a node-protocol connection says which node it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Identity {
    /// The first frame's `node_id` binds the connection (checked against a
    /// token when tokens are configured).
    #[default]
    Token,
    /// The client certificate names the node (`identity_from`); the
    /// connection is bound at the handshake, no token needed. Needs
    /// `tls.client_ca`.
    Certificate,
}

/// Which field of a client certificate names the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityFrom {
    /// The subject's common name (`CN=radar3`): what `openssl req -subj
    /// "/CN=radar3"` writes, and free of the DNS-name syntax a SAN needs,
    /// so any node id fits.
    #[default]
    Cn,
    /// The first DNS name of the subject alternative names.
    DnsSan,
    /// The first URI of the subject alternative names (e.g.
    /// `spiffe://fleet/radar3`; the whole URI is the node id).
    UriSan,
}

/// Authentication of the node protocol: the first message must carry a
/// valid token.
///
/// Tokens can be written here (`token`, `tokens`) or, to keep them out of
/// the config file, read from files (`token_file`, `tokens_file`) when the
/// hub starts and again on [`crate::Hub::set_tokens`] (the daemon's
/// SIGHUP). `Debug` never prints a token.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// One token shared by every node.
    pub token: Option<String>,
    /// A file holding the shared token (surrounding whitespace ignored);
    /// instead of `token`.
    pub token_file: Option<PathBuf>,
    /// A token per node (`node_id -> token`); checked before `token`. A
    /// node with its own token is reachable only with that token.
    pub tokens: BTreeMap<String, String>,
    /// A TOML file of per-node tokens, one `node = "token"` line each;
    /// instead of `tokens`.
    pub tokens_file: Option<PathBuf>,
    /// A connection that has not authenticated within this time is closed.
    ///
    /// 30 s by default: a radar node speaks first at its heartbeat period
    /// (tracker-host's simulator sends its first heartbeat 10 s after
    /// connecting), and a missed beat must not lock it out. A silent
    /// connection costs little meanwhile: it holds one `max_connections`
    /// permit and at most `max_frame_bytes` of this section plus one read.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Largest first message of an unauthenticated connection; a larger one
    /// closes the connection.
    pub max_frame_bytes: ByteSize,
    /// What names the node: the first frame with a token (`"token"`), or
    /// the client certificate (`"certificate"`, needs `tls.client_ca`).
    pub identity: Identity,
    /// With `identity = "certificate"`: the certificate field that holds
    /// the node id: `"cn"` (default), `"dns_san"` or `"uri_san"`.
    pub identity_from: IdentityFrom,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token: None,
            token_file: None,
            tokens: BTreeMap::new(),
            tokens_file: None,
            timeout: DEFAULT_AUTH_TIMEOUT,
            max_frame_bytes: ByteSize(64 << 10),
            identity: Identity::Token,
            identity_from: IdentityFrom::Cn,
        }
    }
}

/// Names the nodes, never their tokens: configs end up in logs.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("token", &self.token.as_ref().map(|_| Redacted))
            .field("token_file", &self.token_file)
            .field("tokens", &RedactedValues(&self.tokens))
            .field("tokens_file", &self.tokens_file)
            .field("timeout", &self.timeout)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .finish()
    }
}

/// What `Debug` shows in place of a secret.
pub struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A map whose keys `Debug` shows and whose values it hides.
pub struct RedactedValues<'a, K>(pub &'a BTreeMap<K, String>);

impl<K: std::fmt::Debug> std::fmt::Debug for RedactedValues<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, Redacted)))
            .finish()
    }
}

impl AuthConfig {
    /// Whether connections must authenticate: with their first message,
    /// or with a client certificate.
    pub fn is_required(&self) -> bool {
        self.token.is_some()
            || self.token_file.is_some()
            || !self.tokens.is_empty()
            || self.tokens_file.is_some()
            || self.is_by_certificate()
    }

    /// Whether the client certificate names the node.
    pub fn is_by_certificate(&self) -> bool {
        self.identity == Identity::Certificate
    }
}

/// Names of the node protocol's JSON fields (the radar system's by default).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FieldsConfig {
    /// The field naming the node (`node_id`).
    pub node_id: String,
    /// The field carrying the token (`token`).
    pub token: String,
    /// The field holding the message type (`type`).
    #[serde(rename = "type")]
    pub msg_type: String,
    /// The value of the type field that marks a heartbeat (`heartbeat`).
    pub heartbeat: String,
    /// The field deduplication compares (`timestamp`).
    pub timestamp: String,
}

impl Default for FieldsConfig {
    /// The scanner's [`EnvelopeKeys::DEFAULT`], and `heartbeat`.
    fn default() -> Self {
        let keys = EnvelopeKeys::DEFAULT;
        let name = |key: &[u8]| String::from_utf8_lossy(key).into_owned();
        FieldsConfig {
            node_id: name(keys.node_id),
            token: name(keys.token),
            msg_type: name(keys.msg_type),
            heartbeat: "heartbeat".to_owned(),
            timestamp: name(keys.timestamp),
        }
    }
}

/// What a full receiver queue does with the next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverflowPolicy {
    /// Drop the oldest queued frame to make room (the radar system's choice).
    #[default]
    DropOldest,
    /// Drop the arriving frame.
    DropNewest,
    /// Stop reading the sender's socket until there is room, so TCP pushes
    /// back on the sender.
    Block,
}

/// A receiver's bounded queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Frames the queue holds at most.
    pub capacity: usize,
    /// What happens when it is full.
    pub overflow: OverflowPolicy,
    /// Skip a frame whose `timestamp` equals the previous frame's.
    pub dedup: bool,
    /// With `drop-oldest` or `drop-newest`: how long a connection whose
    /// frames do not fit waits for the consumer to make room before
    /// dropping (`"5ms"`; `"0s"` drops at once). Absorbs scheduling
    /// hiccups of a consumer that keeps up on average.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub full_grace: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: 2000,
            overflow: OverflowPolicy::DropOldest,
            dedup: true,
            full_grace: Duration::from_millis(5),
        }
    }
}

/// Socket options, applied to the listening socket and every accepted one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SocketConfig {
    /// `SO_REUSEADDR` on the listening socket.
    pub reuse_addr: bool,
    /// `SO_REUSEPORT` on the listening socket (Unix).
    pub reuse_port: bool,
    /// Length of the accept backlog.
    pub backlog: u32,
    /// `TCP_NODELAY` on every accepted socket.
    pub nodelay: bool,
    /// TCP keepalive idle time on accepted sockets (unset: off).
    #[serde(deserialize_with = "opt_duration", serialize_with = "ser_opt_duration")]
    pub keepalive: Option<Duration>,
    /// `SO_RCVBUF` (unset: the kernel's default).
    pub recv_buffer_bytes: Option<ByteSize>,
    /// `SO_SNDBUF` (unset: the kernel's default).
    pub send_buffer_bytes: Option<ByteSize>,
    /// Attempts to bind while the address is in use.
    pub bind_attempts: u32,
    /// Wait before the second bind attempt; doubles after each, up to 5 s.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub bind_backoff: Duration,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            reuse_addr: true,
            reuse_port: false,
            backlog: 1024,
            nodelay: true,
            keepalive: Some(Duration::from_secs(60)),
            recv_buffer_bytes: None,
            send_buffer_bytes: None,
            bind_attempts: 10,
            bind_backoff: Duration::from_millis(100),
        }
    }
}

/// A configuration that cannot work, naming the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted path of the key, e.g. `listener[0].queue.capacity`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl HubConfig {
    /// The listeners to start: the configured ones, or one default listener.
    pub fn listeners(&self) -> Vec<ListenerConfig> {
        if self.listener.is_empty() {
            vec![ListenerConfig::default()]
        } else {
            self.listener.clone()
        }
    }

    /// Checks everything that can be checked before binding a port.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.connection_history > crate::history::MAX_CONNECTION_HISTORY {
            return Err(ConfigError::new(
                "connection_history",
                format!("must be at most {}", crate::history::MAX_CONNECTION_HISTORY),
            ));
        }
        let listeners = self.listeners();
        for (i, l) in listeners.iter().enumerate() {
            let key = |k: &str| format!("listener[{i}].{k}");
            if l.name.is_empty() {
                return Err(ConfigError::new(key("name"), "must not be empty"));
            }
            if listeners[..i].iter().any(|o| o.name == l.name) {
                return Err(ConfigError::new(
                    key("name"),
                    format!("listener name {:?} is used twice", l.name),
                ));
            }
            l.framing
                .validate()
                .map_err(|m| ConfigError::new(key("framing"), m))?;
            if l.max_frame_bytes.0 == 0 {
                return Err(ConfigError::new(key("max_frame_bytes"), "must be > 0"));
            }
            if l.read_buffer_bytes.0 < 512 {
                return Err(ConfigError::new(
                    key("read_buffer_bytes"),
                    "must be at least 512 bytes",
                ));
            }
            if l.max_connections == 0 {
                return Err(ConfigError::new(key("max_connections"), "must be > 0"));
            }
            if l.queue.capacity == 0 {
                return Err(ConfigError::new(key("queue.capacity"), "must be > 0"));
            }
            if l.max_json_depth == 0 {
                return Err(ConfigError::new(key("max_json_depth"), "must be > 0"));
            }
            if l.socket.bind_attempts == 0 {
                return Err(ConfigError::new(
                    key("socket.bind_attempts"),
                    "must be at least 1",
                ));
            }
            if l.egress_buffer_bytes.0 == 0 {
                return Err(ConfigError::new(key("egress_buffer_bytes"), "must be > 0"));
            }
            if l.group_size == 0 || l.group_size > MAX_GROUP_SIZE {
                return Err(ConfigError::new(
                    key("group_size"),
                    format!("must be 1..={MAX_GROUP_SIZE}"),
                ));
            }
            if l.group_capacity == 0 {
                return Err(ConfigError::new(key("group_capacity"), "must be > 0"));
            }
            if l.proxy_protocol != ProxyProtocol::Off {
                if l.trusted_proxies.is_empty() {
                    return Err(ConfigError::new(
                        key("trusted_proxies"),
                        "must list the load balancers' addresses when proxy_protocol is on (a header from any other address is refused)",
                    ));
                }
                if l.proxy_timeout.is_zero() {
                    return Err(ConfigError::new(key("proxy_timeout"), "must be > 0"));
                }
            }
            if let Some(h) = &l.handler {
                if h.nats.is_empty()
                    || h.nats.contains(['*', '>'])
                    || h.nats.contains(char::is_whitespace)
                {
                    return Err(ConfigError::new(
                        key("handler.nats"),
                        "a NATS subject without wildcards or spaces",
                    ));
                }
                if h.timeout.is_zero() {
                    return Err(ConfigError::new(key("handler.timeout"), "must be > 0"));
                }
                if h.max_in_flight == 0 {
                    return Err(ConfigError::new(
                        key("handler.max_in_flight"),
                        "must be > 0",
                    ));
                }
            }
            // The node protocol's heartbeat is a JSON object, which `json`
            // carries; the other protocols' is an empty frame, which it cannot.
            let no_empty_frame = match l.framing {
                FramingConfig::Chunk | FramingConfig::SpacePacket(_) => true,
                FramingConfig::Json(_) => l.protocol != Protocol::Node,
                _ => false,
            };
            if l.server_heartbeat.is_some() && no_empty_frame {
                return Err(ConfigError::new(
                    key("server_heartbeat"),
                    format!(
                        "framing {:?} cannot carry an empty heartbeat frame; use lines, length or cobs",
                        l.framing.name()
                    ),
                ));
            }
            l.validate_tls(&key)?;
            l.validate_ack(&key)?;
            l.validate_limits(&key, self.partial_frame_budget)?;
            match l.protocol {
                Protocol::Node => {
                    if !matches!(l.framing, FramingConfig::Lines | FramingConfig::Json(_)) {
                        return Err(ConfigError::new(
                            key("protocol"),
                            format!(
                                "protocol \"node\" needs framing \"lines\" or \"json\", not {:?}",
                                l.framing.name()
                            ),
                        ));
                    }
                    if l.auth.max_frame_bytes.0 == 0 {
                        return Err(ConfigError::new(key("auth.max_frame_bytes"), "must be > 0"));
                    }
                    if l.auth.token.as_deref() == Some("") {
                        return Err(ConfigError::new(key("auth.token"), "must not be empty"));
                    }
                    if l.auth.token.is_some() && l.auth.token_file.is_some() {
                        return Err(ConfigError::new(
                            key("auth.token_file"),
                            "give either token or token_file, not both",
                        ));
                    }
                    if !l.auth.tokens.is_empty() && l.auth.tokens_file.is_some() {
                        return Err(ConfigError::new(
                            key("auth.tokens_file"),
                            "give either tokens or tokens_file, not both",
                        ));
                    }
                    if let Some(i) = l.redact.iter().position(String::is_empty) {
                        return Err(ConfigError::new(
                            key(&format!("redact[{i}]")),
                            "must not be empty",
                        ));
                    }
                    if let Some((node, _)) = l.auth.tokens.iter().find(|(_, t)| t.is_empty()) {
                        return Err(ConfigError::new(
                            key(&format!("auth.tokens.{node}")),
                            "must not be empty",
                        ));
                    }
                    for (name, value) in [
                        ("fields.node_id", &l.fields.node_id),
                        ("fields.token", &l.fields.token),
                        ("fields.type", &l.fields.msg_type),
                        ("fields.timestamp", &l.fields.timestamp),
                    ] {
                        if value.is_empty() {
                            return Err(ConfigError::new(key(name), "must not be empty"));
                        }
                    }
                }
                Protocol::Raw => {
                    if !l.redact.is_empty() {
                        return Err(ConfigError::new(
                            key("redact"),
                            "redact needs protocol = \"node\" (JSON frames)",
                        ));
                    }
                    if l.auth.is_by_certificate() {
                        return Err(ConfigError::new(
                            key("auth.identity"),
                            "identity = \"certificate\" needs protocol = \"node\"",
                        ));
                    }
                    if l.auth.is_required() {
                        return Err(ConfigError::new(
                            key("auth"),
                            "tokens need protocol = \"node\"",
                        ));
                    }
                }
            }
        }
        if self.stats_interval.is_zero() {
            return Err(ConfigError::new("stats_interval", "must be > 0"));
        }
        self.runtime.validate()?;
        self.nodes.validate_limits()?;
        if self.fd_reserve > MAX_CONNECTIONS_LIMIT {
            return Err(ConfigError::new(
                "fd_reserve",
                format!("must be at most {MAX_CONNECTIONS_LIMIT}"),
            ));
        }
        if self.nodes.max_nodes > MAX_NODES_LIMIT {
            return Err(ConfigError::new(
                "nodes.max_nodes",
                format!("must be at most {MAX_NODES_LIMIT}"),
            ));
        }
        if self.nodes.auto_provision && self.nodes.max_nodes == 0 {
            return Err(ConfigError::new(
                "nodes.max_nodes",
                "must be > 0 when auto_provision is on",
            ));
        }
        Ok(())
    }
}

impl ListenerConfig {
    /// Acknowledged delivery needs a protocol that carries sequence
    /// numbers, and queues that never drop what was accepted.
    fn validate_ack(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        if !self.ack.is_on() {
            return Ok(());
        }
        let carries_seq = match self.protocol {
            Protocol::Node => true,
            Protocol::Raw => matches!(self.framing, FramingConfig::Length(_)),
        };
        if !carries_seq {
            return Err(ConfigError::new(
                key("ack.mode"),
                "acknowledged delivery needs protocol = \"node\", or protocol = \"raw\" with framing = \"length\"",
            ));
        }
        if self.protocol == Protocol::Node && self.ack.seq_field.is_empty() {
            return Err(ConfigError::new(key("ack.seq_field"), "must not be empty"));
        }
        let (name, policy) = match self.delivery {
            Delivery::Groups => ("group_overflow", self.group_overflow),
            Delivery::Receivers => ("queue.overflow", self.queue.overflow),
        };
        if policy != OverflowPolicy::Block {
            return Err(ConfigError::new(
                key(name),
                "must be \"block\" with ack.mode = \"durable\": a frame dropped after it was accepted would be covered by a later ack",
            ));
        }
        Ok(())
    }

    /// The TLS keys fit together; the files are read later, by the hub.
    fn validate_tls(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let tls = &self.tls;
        match (&tls.cert, &tls.key) {
            (Some(_), None) => {
                return Err(ConfigError::new(key("tls.key"), "tls.cert needs tls.key"));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(key("tls.cert"), "tls.key needs tls.cert"));
            }
            _ => {}
        }
        if tls.client_ca.is_some() && !tls.is_enabled() {
            return Err(ConfigError::new(
                key("tls.client_ca"),
                "client certificates need TLS: set tls.cert and tls.key",
            ));
        }
        if tls.is_enabled() && tls.handshake_timeout.is_zero() {
            return Err(ConfigError::new(
                key("tls.handshake_timeout"),
                "must be > 0",
            ));
        }
        if self.auth.is_by_certificate() {
            if tls.client_ca.is_none() {
                return Err(ConfigError::new(
                    key("auth.identity"),
                    "identity = \"certificate\" needs tls.client_ca (client certificates)",
                ));
            }
            if self.auth.token.is_some() || !self.auth.tokens.is_empty() {
                return Err(ConfigError::new(
                    key("auth.identity"),
                    "identity = \"certificate\" takes no auth.token or auth.tokens: the certificate names the node",
                ));
            }
        }
        Ok(())
    }
}

impl ListenerConfig {
    /// Every size has an upper bound and every duration that would stop
    /// the listener from working at zero is refused: what validation
    /// accepts, a hub runs (issue 18).
    fn validate_limits(
        &self,
        key: &dyn Fn(&str) -> String,
        partial_frame_budget: ByteSize,
    ) -> Result<(), ConfigError> {
        let at_most = |name: &str, value: usize, max: usize, unit: &str| {
            if value > max {
                Err(ConfigError::new(
                    key(name),
                    format!("must be at most {max}{unit}"),
                ))
            } else {
                Ok(())
            }
        };
        at_most(
            "max_frame_bytes",
            self.max_frame_bytes.0,
            MAX_FRAME_BYTES_LIMIT,
            " bytes (1GiB)",
        )?;
        if self.max_frame_bytes.0 > partial_frame_budget.0 {
            return Err(ConfigError::new(
                key("max_frame_bytes"),
                format!(
                    "must be at most partial_frame_budget ({} bytes): a frame that large could never be buffered",
                    partial_frame_budget.0
                ),
            ));
        }
        at_most(
            "auth.max_frame_bytes",
            self.auth.max_frame_bytes.0,
            MAX_FRAME_BYTES_LIMIT,
            " bytes (1GiB)",
        )?;
        at_most(
            "read_buffer_bytes",
            self.read_buffer_bytes.0,
            MAX_READ_BUFFER_BYTES,
            " bytes (64MiB)",
        )?;
        at_most(
            "max_connections",
            self.max_connections,
            MAX_CONNECTIONS_LIMIT,
            "",
        )?;
        at_most(
            "queue.capacity",
            self.queue.capacity,
            MAX_QUEUE_CAPACITY,
            " frames",
        )?;
        at_most(
            "group_capacity",
            self.group_capacity,
            MAX_GROUP_CAPACITY,
            " groups",
        )?;
        at_most(
            "egress_buffer_bytes",
            self.egress_buffer_bytes.0,
            MAX_EGRESS_BUFFER_BYTES,
            " bytes (1GiB)",
        )?;
        at_most(
            "max_json_depth",
            self.max_json_depth,
            MAX_JSON_DEPTH_LIMIT,
            "",
        )?;
        for (name, size) in [
            ("socket.recv_buffer_bytes", self.socket.recv_buffer_bytes),
            ("socket.send_buffer_bytes", self.socket.send_buffer_bytes),
        ] {
            if let Some(size) = size {
                if size.0 == 0 {
                    return Err(ConfigError::new(key(name), "must be > 0 (or unset)"));
                }
                at_most(name, size.0, MAX_SOCKET_BUFFER_BYTES, " bytes (1GiB)")?;
            }
        }
        // Zero durations that would close every connection at once, or
        // make a timer panic: refused rather than given a surprising
        // meaning; each has "off" (or a default) for "never".
        let positive = |name: &str, value: Option<Duration>, off: &str| {
            if value.is_some_and(|d| d.is_zero()) {
                Err(ConfigError::new(key(name), format!("must be > 0{off}")))
            } else {
                Ok(())
            }
        };
        positive("idle_timeout", self.idle_timeout, " (\"off\": never)")?;
        positive(
            "server_heartbeat",
            self.server_heartbeat,
            " (\"off\": no heartbeat)",
        )?;
        positive("frame_timeout", Some(self.frame_timeout), "")?;
        positive(
            "auth.timeout",
            Some(self.auth.timeout),
            ": a connection must have time to send its first message",
        )?;
        positive(
            "socket.keepalive",
            self.socket.keepalive,
            " (\"off\": no keepalive)",
        )?;
        Ok(())
    }
}

impl NodesConfig {
    fn validate_limits(&self) -> Result<(), ConfigError> {
        if self.max_node_id_bytes == 0 || self.max_node_id_bytes > MAX_NODE_ID_BYTES_LIMIT {
            return Err(ConfigError::new(
                "nodes.max_node_id_bytes",
                format!("must be 1..={MAX_NODE_ID_BYTES_LIMIT}"),
            ));
        }
        Ok(())
    }
}

impl RuntimeConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.io_threads > MAX_IO_THREADS {
            return Err(ConfigError::new(
                "runtime.io_threads",
                format!("must be at most {MAX_IO_THREADS}"),
            ));
        }
        if let Some(cpu) = self.cpu_affinity.iter().find(|c| **c >= MAX_CPU_ID) {
            return Err(ConfigError::new(
                "runtime.cpu_affinity",
                format!("CPU {cpu} is beyond the {MAX_CPU_ID} CPUs a CPU set can name"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_config_parses_and_defaults_fill_in() {
        let cfg: HubConfig = toml::from_str(
            r#"
            shutdown_grace = "2s"
            [nodes]
            max_nodes = 10
            [[listener]]
            name = "radar"
            bind = "127.0.0.1:0"
            max_frame_bytes = "512KiB"
            idle_timeout = "30s"
            server_heartbeat = "1s"
            [listener.auth]
            token = "secret"
            [listener.auth.tokens]
            radar3 = "other"
            [listener.queue]
            overflow = "drop-newest"
            "#,
        )
        .expect("valid config");
        assert_eq!(cfg.shutdown_grace, Duration::from_secs(2));
        assert_eq!(cfg.nodes.max_nodes, 10);
        let l = &cfg.listener[0];
        assert_eq!(l.max_frame_bytes, ByteSize(512 << 10));
        assert_eq!(l.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(l.server_heartbeat, Some(Duration::from_secs(1)));
        assert_eq!(ListenerConfig::default().server_heartbeat, None);
        assert_eq!(l.queue.overflow, OverflowPolicy::DropNewest);
        assert_eq!(l.queue.capacity, 2000);
        assert_eq!(l.auth.tokens["radar3"], "other");
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = toml::from_str::<HubConfig>("[[listener]]\nmax_frame = 3\n")
            .expect_err("unknown key must be rejected");
        assert!(err.to_string().contains("max_frame"), "{err}");
    }

    #[test]
    fn validation_names_the_bad_key() {
        let mut cfg = HubConfig::default();
        cfg.listener.push(ListenerConfig::default());
        cfg.listener[0].queue.capacity = 0;
        let err = cfg.validate().expect_err("capacity 0 is invalid");
        assert_eq!(err.key, "listener[0].queue.capacity");

        let mut cfg = HubConfig::default();
        cfg.listener.push(ListenerConfig {
            framing: FramingConfig::Cobs,
            ..ListenerConfig::default()
        });
        assert_eq!(
            cfg.validate().expect_err("node needs lines").key,
            "listener[0].protocol"
        );

        let mut cfg = HubConfig::default();
        cfg.listener.push(ListenerConfig {
            framing: FramingConfig::Chunk,
            protocol: Protocol::Raw,
            server_heartbeat: Some(Duration::from_secs(1)),
            ..ListenerConfig::default()
        });
        assert_eq!(
            cfg.validate().expect_err("chunk has no empty frame").key,
            "listener[0].server_heartbeat"
        );

        // `json`: node frames are JSON objects, and so is the node heartbeat;
        // a raw listener's empty heartbeat frame does not exist there.
        let json = FramingConfig::Json(crate::codec::JsonConfig::default());
        let mut cfg = HubConfig::default();
        cfg.listener.push(ListenerConfig {
            framing: json.clone(),
            server_heartbeat: Some(Duration::from_secs(1)),
            ..ListenerConfig::default()
        });
        cfg.validate().expect("node protocol on json framing");
        cfg.listener[0].protocol = Protocol::Raw;
        assert_eq!(
            cfg.validate().expect_err("json has no empty frame").key,
            "listener[0].server_heartbeat"
        );
    }

    #[test]
    fn proxy_protocol_keys_parse_and_are_checked() {
        let cfg: HubConfig = toml::from_str(
            r#"
            [[listener]]
            proxy_protocol = "required"
            trusted_proxies = ["10.0.0.0/8", "127.0.0.1", "fd00::/8", "::1"]
            proxy_timeout = "2s"
            "#,
        )
        .expect("valid config");
        let l = &cfg.listener[0];
        assert_eq!(l.proxy_protocol, ProxyProtocol::Required);
        assert_eq!(l.proxy_timeout, Duration::from_secs(2));
        let nets: Vec<String> = l.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8", "::1/128"]);
        assert!(cfg.validate().is_ok());
        // Serialized back as written, so a dumped config parses again.
        let text = toml::to_string(&cfg).expect("serializes");
        let again: HubConfig = toml::from_str(&text).expect("parses again");
        assert_eq!(again.listener[0].trusted_proxies, l.trusted_proxies);

        let err =
            toml::from_str::<HubConfig>("[[listener]]\ntrusted_proxies = [\"10.0.0.0/33\"]\n")
                .expect_err("prefix too long");
        assert!(err.to_string().contains("trusted_proxies"), "{err}");
        assert!(err.to_string().contains("10.0.0.0/33"), "{err}");

        let mut cfg = HubConfig::default();
        cfg.listener.push(ListenerConfig {
            proxy_protocol: ProxyProtocol::Optional,
            ..ListenerConfig::default()
        });
        assert_eq!(
            cfg.validate().expect_err("nobody trusted").key,
            "listener[0].trusted_proxies"
        );
        cfg.listener[0].trusted_proxies = vec![parse_ip_net("10.0.0.1").expect("addr")];
        cfg.listener[0].proxy_timeout = Duration::ZERO;
        assert_eq!(
            cfg.validate().expect_err("zero timeout").key,
            "listener[0].proxy_timeout"
        );
    }

    #[test]
    fn tls_keys_are_checked_together() {
        let check = |toml: &str| {
            let cfg: HubConfig = toml::from_str(toml).expect("parses");
            cfg.validate().map_err(|e| e.key)
        };
        assert_eq!(
            check("[[listener]]\n[listener.tls]\ncert = \"s.pem\"\n"),
            Err("listener[0].tls.key".into())
        );
        assert_eq!(
            check("[[listener]]\n[listener.tls]\nclient_ca = \"ca.pem\"\n"),
            Err("listener[0].tls.client_ca".into())
        );
        assert_eq!(
            check(
                "[[listener]]\n[listener.auth]\nidentity = \"certificate\"\n[listener.tls]\ncert = \"s.pem\"\nkey = \"s.key\"\n"
            ),
            Err("listener[0].auth.identity".into())
        );
        let ok = "[[listener]]\n[listener.auth]\nidentity = \"certificate\"\nidentity_from = \"uri_san\"\n[listener.tls]\ncert = \"s.pem\"\nkey = \"s.key\"\nclient_ca = \"ca.pem\"\nhandshake_timeout = \"2s\"\n";
        assert_eq!(check(ok), Ok(()));
        let cfg: HubConfig = toml::from_str(ok).expect("parses");
        let l = &cfg.listener[0];
        assert_eq!(l.auth.identity_from, IdentityFrom::UriSan);
        assert_eq!(l.tls.handshake_timeout, Duration::from_secs(2));
        assert!(l.auth.is_required() && l.tls.is_enabled());
        assert!(!ListenerConfig::default().tls.is_enabled());
    }

    /// Issue 18: values that passed validation and then failed (a panic,
    /// every client closed before it speaks, gigabytes per connection)
    /// are refused, naming the key.
    #[test]
    fn values_that_cannot_run_are_refused() {
        let check = |toml: &str| {
            let cfg: HubConfig = toml::from_str(toml).expect("parses");
            cfg.validate().map_err(|e| e.key)
        };
        for (toml, key) in [
            (
                "[[listener]]\nread_buffer_bytes = \"4GiB\"\n",
                "listener[0].read_buffer_bytes",
            ),
            (
                "[[listener]]\n[listener.queue]\ncapacity = 1099511627776\n",
                "listener[0].queue.capacity",
            ),
            (
                "[[listener]]\nmax_frame_bytes = \"2GiB\"\n",
                "listener[0].max_frame_bytes",
            ),
            (
                "[[listener]]\n[listener.auth]\nmax_frame_bytes = \"2GiB\"\n",
                "listener[0].auth.max_frame_bytes",
            ),
            (
                "[[listener]]\nmax_connections = 9223372036854775807\n",
                "listener[0].max_connections",
            ),
            (
                "[[listener]]\ngroup_capacity = 1099511627776\n",
                "listener[0].group_capacity",
            ),
            (
                "[[listener]]\negress_buffer_bytes = \"2GiB\"\n",
                "listener[0].egress_buffer_bytes",
            ),
            (
                "[[listener]]\nmax_json_depth = 1099511627776\n",
                "listener[0].max_json_depth",
            ),
            (
                "[[listener]]\n[listener.socket]\nrecv_buffer_bytes = \"8GiB\"\n",
                "listener[0].socket.recv_buffer_bytes",
            ),
            (
                "[[listener]]\n[listener.socket]\nsend_buffer_bytes = 0\n",
                "listener[0].socket.send_buffer_bytes",
            ),
            (
                "[[listener]]\n[listener.auth]\ntimeout = \"0s\"\n",
                "listener[0].auth.timeout",
            ),
            (
                "[[listener]]\nframe_timeout = \"0s\"\n",
                "listener[0].frame_timeout",
            ),
            (
                "partial_frame_budget = \"512KiB\"\n",
                "listener[0].max_frame_bytes",
            ),
            ("fd_reserve = 1099511627776\n", "fd_reserve"),
            (
                "[nodes]\nmax_node_id_bytes = 0\n",
                "nodes.max_node_id_bytes",
            ),
            (
                "[nodes]\nmax_node_id_bytes = 1048576\n",
                "nodes.max_node_id_bytes",
            ),
        ] {
            assert_eq!(check(toml), Err(key.to_owned()), "{toml}");
        }
        // The bounds themselves, "off", and zeros with a meaning pass.
        for toml in [
            "[[listener]]\nread_buffer_bytes = \"64MiB\"\nmax_frame_bytes = \"256MiB\"\n",
            "[[listener]]\n[listener.queue]\ncapacity = 1000000\nfull_grace = \"0s\"\n",
            "[[listener]]\nidle_timeout = \"off\"\nserver_heartbeat = \"off\"\n",
            // A zero optional duration means "off", as written in the docs.
            "[[listener]]\nidle_timeout = \"0s\"\nserver_heartbeat = \"0s\"\n",
            "[[listener]]\n[listener.socket]\nkeepalive = \"0s\"\n",
            "shutdown_grace = \"0s\"\nfd_reserve = 0\n[nodes]\nevict_idle_after = \"1ms\"\n",
            "[nodes]\nevict_idle_after = \"off\"\nmax_node_id_bytes = 1\n",
        ] {
            assert_eq!(check(toml), Ok(()), "{toml}");
        }
    }

    #[test]
    fn bind_default_follows_token() {
        let mut l = ListenerConfig::default();
        assert_eq!(l.effective_bind(), "127.0.0.1:30050".parse().expect("addr"));
        l.auth.token = Some("s".into());
        assert_eq!(l.effective_bind(), "0.0.0.0:30050".parse().expect("addr"));
    }
}

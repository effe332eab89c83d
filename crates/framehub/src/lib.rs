//! framehub: the front door for fleets of devices that keep persistent TCP
//! connections and push framed messages (radar nodes, robots, ground links,
//! sensors).
//!
//! A [`Hub`] accepts connections on one or more listeners, cuts each byte
//! stream into frames, authenticates the sender, and routes every frame to
//! the [`Receiver`] of its node, with bounded memory under any input.
//!
//! ```no_run
//! # async fn demo() -> Result<(), framehub::HubError> {
//! use framehub::{AuthConfig, Hub, HubConfig, ListenerConfig};
//! let hub = Hub::start(HubConfig {
//!     listener: vec![ListenerConfig {
//!         bind: Some("0.0.0.0:30050".parse().unwrap()),
//!         auth: AuthConfig { token: Some("secret".into()), ..Default::default() },
//!         ..Default::default()
//!     }],
//!     ..Default::default()
//! })
//! .await?;
//! let radar3 = hub.receiver("radar3");
//! while let Some(frame) = radar3.recv().await {
//!     // frame.payload is the node's JSON, byte for byte
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//! The data flow reads top to bottom:
//! socket -> codec -> protocol -> router -> receiver or group -> consumer,
//! and back: hub -> egress -> socket.
//!
//! - [`codec`]: framings, sans-IO (`lines`, `length`, `cobs`, `spacepacket`,
//!   `chunk`), each a tokio-util codec that `FramedRead` can drive.
//! - [`json`]: the one-pass JSON validator and envelope scanner.
//! - `node`: the node protocol (token, binding, heartbeats) as a state
//!   machine.
//! - `context`: what every connection of a listener shares, and what every
//!   listener of a hub shares; a leaf the layers above import.
//! - [`fdlimit`]: the file-descriptor limit, raised at a daemon's start;
//!   the accept loops keep `fd_reserve` descriptors free.
//! - `budget`: the hub-wide budget for bytes of unfinished frames
//!   (`partial_frame_budget`): the largest holders are cut past it.
//! - `listener`: bind with retry, socket options, accept loop, connection
//!   limit.
//! - `connection`: one task per connection: a load balancer's PROXY
//!   header read first (who the peer really is), then a sans-IO core
//!   (bytes and time in; frames, drops, binding, deadlines out) driven by
//!   a short async read loop, delivery to queues, request dispatch.
//! - `frame`: [`Frame`] and [`Source`], what a consumer receives.
//! - `router`: node table, auto-provisioning, new-node stream.
//! - `registry`: the open connections: one handle each (address, node,
//!   counters, egress buffer, disconnect token) and the snapshot
//!   `Hub::connections` reports.
//! - [`receiver`]: bounded per-node queues with overflow policy and dedup.
//! - [`handler`]: request handlers: each frame answered on its own
//!   connection, in order, with a timeout and a bound on requests in
//!   flight; [`command`]: a router of handlers by key (JSON field, APID,
//!   packet ID, prefix byte).
//! - [`group`]: grouped delivery: one stream of groups of frames from
//!   every connection of a listener.
//! - [`egress`]: broadcast and unicast to clients (and server heartbeats)
//!   through one writer and one bounded buffer per connection.
//! - [`outbuf`]: that bounded outgoing byte buffer, also the one the
//!   `framehub` binary's tap gives each subscriber.
//! - [`fanin`]: every delivered frame of a hub in one bounded stream of
//!   batches ([`Hub::all_frames`]), as a daemon's sinks consume them.
//! - [`stats`]: every counter, declared once, and the views derived from
//!   the declaration; [`snapshot`]: 1 Hz statistics.
//! - [`runtime`]: the hub's own I/O threads, CPU affinity and priority.
//! - [`event`]: connection events.
//! - [`reason`]: why a connection closed, authentication failed or a
//!   frame was dropped (a leaf: every layer names them).
//! - [`secret`]: tokens read from the config and their files, never
//!   shown by `Debug`.
//! - [`config`]: every setting with its default; [`units`]: the one parser
//!   of sizes and durations (`"64KiB"`, `"10s"`) for config and CLI.
//! - `tls`: a listener's TLS: certificates loaded (and reloaded) from
//!   their files, the handshake under its timeout, its failures told apart,
//!   the node a client certificate names; `transport`: the plaintext or
//!   TLS halves the read loop and the egress writer work on.
//! - `ack`: acknowledged delivery's marks per node and stream (accepted,
//!   durable), the acks sent back, and [`Acks`], the consumer's side.
//! - `hub`: the facade that ties them together.
//! - `nats` (feature `nats`): NATS JetStream as the backbone of several
//!   instances: the sink with publish acks, the egress and command bridge,
//!   the cluster-wide node view.
//! - [`client`]: the node side: a reconnecting client with heartbeats and
//!   a bounded outbox.
//! - [`guide`]: the library guide (`docs/library.md`), its examples doctests.
//! - `fuzzing` (hidden): the crate-internal sans-IO cores (connection core,
//!   PROXY header reader) for the fuzz targets in `fuzz/`.

#![forbid(unsafe_code)]

mod ack;
mod budget;
pub mod client;
pub mod codec;
pub mod command;
pub mod config;
mod connection;
mod context;
pub mod egress;
pub mod event;
pub mod fanin;
pub mod fdlimit;
mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod group;
pub mod guide;
pub mod handler;
pub mod history;
mod hub;
pub mod json;
mod listener;
#[cfg(feature = "nats")]
pub mod nats;
mod node;
pub mod outbuf;
pub mod reason;
pub mod receiver;
mod registry;
mod router;
pub mod runtime;
pub mod secret;
pub mod snapshot;
pub mod stats;
mod tls;
mod transport;
pub mod units;

pub use ack::Acks;
pub use client::{
    ACK_OVERHEAD_BYTES, Client, ClientAckConfig, ClientAckMode, ClientConfig, ClientCounters,
    ClientError, ClientEvent, ClientProtocol, ClientState, ClientTlsConfig, DisconnectReason,
    NodeIdentity, OutboxPolicy,
};
pub use codec::FramingConfig;
pub use config::{
    AckConfig, AckMode, AuthConfig, ConfigError, Delivery, FieldsConfig, HubConfig, Identity,
    IdentityFrom, ListenerConfig, NodesConfig, OverflowPolicy, Protocol, ProxyProtocol,
    QueueConfig, RuntimeConfig, SlowClientPolicy, SocketConfig, ThreadPriority, TlsConfig,
};
pub use egress::EgressError;
pub use event::{ConnectionCounts, ConnectionEvent};
pub use fanin::{AllFrames, AllFramesConfig, NewNodesTaken};
pub use frame::{Frame, Seq, Source};
pub use group::{Group, GroupStats, Groups};
pub use handler::{Failure, Handler, HandlerError, Replies, Request};
pub use history::{ClosedConnection, ConnectionHistory, HistoryPage};
pub use hub::{ACCEPT_ERROR_MEMORY, Hub, HubError, ListenerInfo};
pub use reason::{AuthFailure, CloseReason, DropReason, Ending, ProxyFailure, TlsFailure};
pub use receiver::{QueueStats, Receiver, RecvTimeoutError, TryRecvError};
pub use registry::ConnectionInfo;
pub use router::{NewNodes, NodeStatus, NodesPage};
pub use secret::Tokens;
pub use snapshot::{ConnectionStats, ListenerStats, NodeStats, StatsSnapshot, Traffic};
pub use stats::Counters;
pub use units::ByteSize;

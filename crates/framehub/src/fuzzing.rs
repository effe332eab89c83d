//! Entry points for the fuzz targets in `fuzz/` (and their regression
//! tests): the crate-internal sans-IO pieces a hostile peer reaches, behind
//! the smallest API that drives them as the connection task does. Not a
//! stable interface, and hidden from the docs.
//!
//! - [`Session`]: one connection's protocol core (`connection/proto.rs`):
//!   reads and the time in; delivered frames, drops, the bound node and the
//!   close reason out. On a raw listener it is the decode loop the hub
//!   really runs (in place for `lines`, `cobs` and `json`), so targets can
//!   hold it to the public codecs' `decode_next`.
//! - [`HeaderReader`] and [`Step`]: the PROXY header reader
//!   (`connection/proxy.rs`), driven by peeks.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::time::Instant;

use crate::config::{ConfigError, ListenerConfig, Protocol};
use crate::connection::proto::Core;
pub use crate::connection::proxy::{HeaderReader, MAX_HEADER_BYTES, Step};
use crate::connection::readbuf::ReadBuffer;
use crate::event::{CloseReason, ConnectionCounts};
use crate::frame::Source;
use crate::node::NodeProtocol;
use crate::reason::DropReason;
use crate::stats::WarnLimiter;

/// A frame the protocol core delivered.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The payload as a consumer receives it (token and `redact` fields
    /// already taken out).
    pub payload: Bytes,
    /// The node the connection was bound to when the frame was delivered.
    pub node: Option<Arc<str>>,
    /// The span of the frame's `timestamp` value in `payload`.
    pub timestamp: Option<Range<usize>>,
}

/// One connection's protocol core with its read buffer, driven as the
/// connection task drives it; times are offsets from its accept.
pub struct Session {
    core: Core,
    read: ReadBuffer,
    accepted: Instant,
    heartbeats: u64,
    drops: Vec<(DropReason, u64)>,
}

impl Session {
    /// A connection of a listener configured as `config` (its tokens read
    /// from the config, never from files here).
    pub fn new(config: &ListenerConfig) -> Result<Session, ConfigError> {
        let node = match config.protocol {
            Protocol::Node => Some(Arc::new(NodeProtocol::new(
                &config.auth.load_tokens()?,
                &config.fields,
                &config.redact,
                config.max_json_depth,
            ))),
            Protocol::Raw => None,
        };
        let source = Source {
            conn: 1,
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 9)),
            listener: config.name.as_str().into(),
            node: None,
            protocol: config.protocol,
        };
        let accepted = Instant::now();
        let warning = Arc::new(WarnLimiter::new(Duration::from_secs(5)));
        let mut core = Core::new(config, node, source, warning, None, accepted);
        let read = ReadBuffer::new(config.read_buffer_bytes.0);
        core.read_buffer_allocated(read.buf.capacity());
        Ok(Session {
            core,
            read,
            accepted,
            heartbeats: 0,
            drops: Vec::new(),
        })
    }

    /// One read of `bytes` completing `at` after the accept (empty: the
    /// peer closed its side). Returns the frames it delivered and, when
    /// the connection closes after them, why (the driver delivers a read's
    /// frames before it closes).
    pub fn read(
        &mut self,
        bytes: &[u8],
        at: Duration,
    ) -> (Vec<Delivered>, Result<(), CloseReason>) {
        if let Some(capacity) = self.read.prepare() {
            self.core.read_buffer_allocated(capacity);
        }
        self.read.buf.extend_from_slice(bytes);
        let result = self.core.handle_read(
            &mut self.read.buf,
            bytes.len(),
            self.accepted + at,
            SystemTime::UNIX_EPOCH,
        );
        self.read.after_read(bytes.len());
        // The driver takes the binding once; here each frame names its node.
        self.core.take_bound();
        let pending = self.core.take_pending();
        self.heartbeats += pending.heartbeats;
        for (reason, n) in pending.drops {
            match self.drops.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, count)) => *count += n,
                None => self.drops.push((reason, n)),
            }
        }
        let delivered = self
            .core
            .batch()
            .drain(..)
            .map(|item| Delivered {
                payload: item.frame.payload,
                node: item.frame.source.node.clone(),
                timestamp: item.timestamp,
            })
            .collect();
        (delivered, result)
    }

    /// When the core next needs [`Session::timeout`], as an offset from the
    /// accept.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.core
            .poll_timeout()
            .map(|at| at.saturating_duration_since(self.accepted))
    }

    /// The timer fired `at` after the accept.
    pub fn timeout(&mut self, at: Duration) -> Result<(), CloseReason> {
        self.core.handle_timeout(self.accepted + at)
    }

    /// Whether the peer authenticated (always, on a raw listener).
    pub fn is_authenticated(&self) -> bool {
        self.core.is_authenticated()
    }

    /// The node the connection is bound to.
    pub fn node(&self) -> Option<&Arc<str>> {
        self.core.node()
    }

    /// Bytes of an incomplete frame held in the read buffer.
    pub fn buffered(&self) -> usize {
        self.read.buf.len()
    }

    /// The connection's counts (`frames_in`, `bytes_in`, `dropped`).
    pub fn counts(&self) -> &ConnectionCounts {
        &self.core.counts
    }

    /// Heartbeats absorbed so far.
    pub fn heartbeats(&self) -> u64 {
        self.heartbeats
    }

    /// Frames dropped so far, by reason.
    pub fn drops(&self) -> &[(DropReason, u64)] {
        &self.drops
    }
}

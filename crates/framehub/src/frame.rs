//! What a consumer receives: a [`Frame`] (the bytes of one frame, when it
//! came, and its [`Source`]), and the crate's wrapper for a frame on its way
//! into a queue.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::config::Protocol;

/// Where a frame came from: one per connection, shared by all its frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The connection's id, unique within the process.
    pub conn: u64,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The name of the listener that accepted the connection.
    pub listener: Arc<str>,
    /// The node the connection is bound to (node protocol), if any.
    pub node: Option<Arc<str>>,
    /// The listener's protocol: `Node` frames are validated single-line
    /// JSON objects.
    pub protocol: Protocol,
}

/// One frame as delivered to a consumer.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The frame's bytes exactly as received (framing removed). For the
    /// node protocol this is the original JSON, never re-serialised.
    pub payload: Bytes,
    /// When the read that carried this frame completed.
    pub received_at: SystemTime,
    /// The connection it came from.
    pub source: Arc<Source>,
    /// Its sequence number, on a listener with acknowledged delivery
    /// (`[listener.ack]`); `None` otherwise, or when the frame carried
    /// none. Acknowledge it with [`crate::Acks`] once it is safe.
    pub seq: Option<Seq>,
}

/// A frame's sequence number under acknowledged delivery, as
/// [`crate::Acks::acknowledge`] takes it back: the number the client gave
/// it, and the round of its node's acknowledgements it belongs to (after
/// [`crate::Acks::fail`], acknowledgements of frames accepted before are
/// ignored, since the client sends them again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Seq {
    value: u64,
    epoch: u64,
}

impl Seq {
    pub(crate) fn new(value: u64, epoch: u64) -> Seq {
        Seq { value, epoch }
    }

    /// The number the client gave the frame.
    pub fn value(self) -> u64 {
        self.value
    }

    pub(crate) fn epoch(self) -> u64 {
        self.epoch
    }
}

/// A frame on its way into a queue, with the span of its dedup key.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) frame: Frame,
    /// Byte range of the raw `timestamp` value inside the payload.
    pub(crate) timestamp: Option<Range<usize>>,
    /// Set by [`mark_repeats`]: the timestamp equals the one of the
    /// previous frame with a timestamp in the same batch.
    pub(crate) repeats: bool,
}

impl Incoming {
    pub(crate) fn new(frame: Frame, timestamp: Option<Range<usize>>) -> Incoming {
        Incoming {
            frame,
            timestamp,
            repeats: false,
        }
    }

    /// The raw bytes of the frame's dedup key, if it has one.
    pub(crate) fn key(&self) -> Option<&[u8]> {
        self.timestamp.clone().map(|r| &self.frame.payload[r])
    }
}

/// A source for unit tests: connection 1 from 127.0.0.1:1 on listener
/// `default`, bound to node `n`.
#[cfg(test)]
pub(crate) fn test_source() -> Arc<Source> {
    Arc::new(Source {
        conn: 1,
        peer: "127.0.0.1:1".parse().expect("addr"),
        listener: "default".into(),
        node: Some("n".into()),
        protocol: Protocol::Node,
    })
}

//! The server's heartbeat (`server_heartbeat`): the frame a listener writes
//! to every client, and the small writer task that writes it without ever
//! holding up the connection's read loop.
//!
//! A client that hears nothing from the server cannot tell a quiet server
//! from a half-open connection (a peer gone without a FIN); a heartbeat
//! every interval lets it reconnect after a few silent intervals instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::codec::Encoder;
use tokio_util::sync::CancellationToken;

use crate::codec::{CodecError, FrameEncoder};
use crate::config::{ListenerConfig, Protocol};
use crate::node::heartbeat_payload;
use crate::stats::ListenerCounters;

/// The bytes of one heartbeat on the wire for this listener.
///
/// Node protocol: `{"type":"heartbeat"}` + `\n` with the configured field
/// names, which the client's node protocol treats as a heartbeat. Any other
/// protocol: an empty frame in the listener's framing (`\n`, a zero length
/// prefix, an empty COBS frame): an empty frame carries nothing an
/// application could mistake for data. `chunk` and `spacepacket` cannot
/// carry one (config validation refuses them).
pub(crate) fn frame(config: &ListenerConfig) -> Result<Bytes, CodecError> {
    let payload = match config.protocol {
        Protocol::Node => heartbeat_payload(&config.fields, None, None),
        Protocol::Raw => Vec::new(),
    };
    let mut wire = BytesMut::new();
    FrameEncoder::new(&config.framing, usize::MAX).encode(&payload[..], &mut wire)?;
    if wire.is_empty() {
        return Err(CodecError::Unencodable("this framing has no empty frame"));
    }
    Ok(wire.freeze())
}

/// What a heartbeat writer has written, for the connection's counts.
#[derive(Debug, Default)]
pub(crate) struct Written {
    pub(crate) frames: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

/// A running heartbeat writer; [`HeartbeatWriter::stop`] ends it.
pub(crate) struct HeartbeatWriter {
    stop: CancellationToken,
    task: JoinHandle<()>,
    pub(crate) written: Arc<Written>,
}

/// What the writer task needs, passed as one value.
pub(crate) struct HeartbeatContext {
    pub(crate) frame: Bytes,
    pub(crate) every: Duration,
    pub(crate) listener: Arc<crate::listener::ListenerShared>,
}

impl HeartbeatWriter {
    /// Starts writing `frame` to `writer` every interval.
    ///
    /// The task owns the write half, so a client that stops reading stalls
    /// only this task: ticks that come while a write is stuck are skipped,
    /// and the read loop goes on (its own `idle_timeout` decides about
    /// silent peers). A heartbeat is written whole or the task stops, so a
    /// half-written frame can never be followed by another.
    pub(crate) fn spawn(writer: OwnedWriteHalf, context: HeartbeatContext) -> HeartbeatWriter {
        let stop = CancellationToken::new();
        let written = Arc::new(Written::default());
        let task = tokio::spawn(run(writer, context, stop.clone(), written.clone()));
        HeartbeatWriter {
            stop,
            task,
            written,
        }
    }

    /// Stops the writer (abandoning a write in progress: the connection is
    /// closing anyway) and waits for it, so the socket is closed once the
    /// caller drops the read half.
    pub(crate) async fn stop(self) -> Arc<Written> {
        self.stop.cancel();
        let _ = self.task.await;
        self.written
    }
}

async fn run(
    mut writer: OwnedWriteHalf,
    context: HeartbeatContext,
    stop: CancellationToken,
    written: Arc<Written>,
) {
    let mut tick = tokio::time::interval(context.every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    // The first tick is immediate; the first heartbeat is due one interval
    // after the connection opened.
    tick.tick().await;
    let counters = &context.listener.counters;
    loop {
        let result = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tick.tick() => tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                result = writer.write_all(&context.frame) => result,
            },
        };
        match result {
            Ok(()) => {
                let len = context.frame.len() as u64;
                written.frames.fetch_add(1, Ordering::Relaxed);
                written.bytes.fetch_add(len, Ordering::Relaxed);
                ListenerCounters::add(&counters.frames_sent, 1);
                ListenerCounters::add(&counters.bytes_sent, len);
            }
            Err(e) => {
                // The read loop sees the same dead socket and ends the
                // connection; until then, writing more would fail again.
                tracing::debug!(listener = %context.listener.name, error = %e, "heartbeat write failed");
                break;
            }
        }
    }
    // Dropping the write half would send a FIN while the read loop may
    // still be reading; leave the socket to close with the read half.
    writer.forget();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{FramingConfig, LengthPrefix};

    #[test]
    fn heartbeat_frames_per_framing() {
        let node = ListenerConfig::default();
        assert_eq!(
            frame(&node).ok().as_deref(),
            Some(&b"{\"type\":\"heartbeat\"}\n"[..])
        );
        let mut renamed = ListenerConfig::default();
        renamed.fields.msg_type = "kind".into();
        renamed.fields.heartbeat = "ping".into();
        assert_eq!(
            frame(&renamed).ok().as_deref(),
            Some(&b"{\"kind\":\"ping\"}\n"[..])
        );
        let raw = |framing| ListenerConfig {
            framing,
            protocol: Protocol::Raw,
            ..ListenerConfig::default()
        };
        assert_eq!(
            frame(&raw(FramingConfig::Lines)).ok().as_deref(),
            Some(&b"\n"[..])
        );
        assert_eq!(
            frame(&raw(FramingConfig::Length(LengthPrefix::default())))
                .ok()
                .as_deref(),
            Some(&b"\0\0\0\0"[..])
        );
        assert_eq!(
            frame(&raw(FramingConfig::Cobs)).ok().as_deref(),
            Some(&b"\0\x01\0"[..])
        );
        assert!(frame(&raw(FramingConfig::Chunk)).is_err());
        assert!(frame(&raw(FramingConfig::SpacePacket(Default::default()))).is_err());
    }
}

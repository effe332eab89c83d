//! Egress: everything the hub writes to clients, through one writer task
//! and one egress buffer, bounded in bytes, per connection. Messages from
//! [`crate::Hub::broadcast`], [`crate::Hub::send_to_connection`] and
//! [`crate::Hub::send_to_node`], and the listener's server heartbeat, all
//! take this one path.
//!
//! Offering a message never waits: it is copied into the client's buffer
//! (the [`crate::outbuf::OutBuf`] of its `registry::Peer` handle) or,
//! when that is full, dropped for that client (counted) or the client is
//! disconnected (`slow_client = "disconnect"`). A client that stops
//! reading therefore fills only its own buffer and stalls only its own
//! writer; no other client and no read loop ever waits for it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::codec::Encoder;
use tokio_util::sync::CancellationToken;

use crate::codec::{CodecError, FrameEncoder};
use crate::config::SlowClientPolicy;
use crate::context::ListenerShared;
use crate::outbuf::{Offer, Take};
use crate::registry::{Messages, Peer};
use crate::stats::{DropReason, LinkCounters, ListenerCounters};
use crate::transport::WriteHalf;

/// Why an egress message could not be sent to anyone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// No listener has this name.
    #[error("no listener named {0:?}")]
    UnknownListener(String),
    /// The listener's framing cannot carry this message (a `lines` message
    /// with a newline, a message over `max_frame_bytes`, an empty `chunk`,
    /// ...).
    #[error("listener {listener:?} cannot frame this message: {source}")]
    Unencodable {
        /// The listener whose framing refused it.
        listener: String,
        /// Why.
        source: CodecError,
    },
    /// The framed message is larger than a whole egress buffer, so no
    /// client could ever take it.
    #[error(
        "a {len}-byte message cannot fit an egress buffer of {limit} bytes (listener {listener:?})"
    )]
    LargerThanBuffer {
        /// The listener.
        listener: String,
        /// The framed message's length.
        len: usize,
        /// The listener's `egress_buffer_bytes`.
        limit: usize,
    },
}

/// Frames `msg` in the listener's framing, checked against its limits.
pub(crate) fn encode(shared: &ListenerShared, msg: &[u8]) -> Result<Bytes, EgressError> {
    let config = &shared.config;
    let mut wire = BytesMut::new();
    FrameEncoder::new(&config.framing, config.max_frame_bytes.0)
        .encode(msg, &mut wire)
        .map_err(|source| EgressError::Unencodable {
            listener: shared.name.to_string(),
            source,
        })?;
    if wire.is_empty() {
        return Err(EgressError::Unencodable {
            listener: shared.name.to_string(),
            source: CodecError::Unencodable("an empty message writes nothing in this framing"),
        });
    }
    let limit = config.egress_buffer_bytes.0;
    if wire.len() > limit {
        return Err(EgressError::LargerThanBuffer {
            listener: shared.name.to_string(),
            len: wire.len(),
            limit,
        });
    }
    Ok(wire.freeze())
}

/// Offers one framed message to one client; true if it was taken. A full
/// buffer drops the message for this client, or disconnects it, by the
/// listener's `slow_client` policy; both are counted.
pub(crate) fn deliver(shared: &ListenerShared, peer: &Peer, wire: &[u8]) -> bool {
    offer(shared, peer, wire, false)
}

/// [`deliver`] for a request handler's reply, counted as one.
pub(crate) fn deliver_reply(shared: &ListenerShared, peer: &Peer, wire: &[u8]) -> bool {
    offer(shared, peer, wire, true)
}

fn offer(shared: &ListenerShared, peer: &Peer, wire: &[u8], reply: bool) -> bool {
    let counters = &shared.counters;
    let tally = Messages {
        total: 1,
        replies: u64::from(reply),
    };
    match peer.egress.offer_copy(wire, tally) {
        Offer::Taken => {
            LinkCounters::raise_max(&peer.counters.max_frame_out, wire.len() as u64);
            true
        }
        Offer::Closed => {
            counters.dropped(DropReason::EgressUnsent, 1);
            false
        }
        Offer::Full => {
            counters.dropped(DropReason::EgressFull, 1);
            ListenerCounters::add(&peer.counters.dropped, 1);
            match shared.config.slow_client {
                SlowClientPolicy::Drop => {
                    if let Some(suppressed) = shared.egress_warning.check() {
                        tracing::warn!(
                            peer = %peer.addr,
                            conn = peer.conn,
                            listener = %shared.name,
                            suppressed,
                            "egress buffer full; dropping message for this client"
                        );
                    }
                }
                SlowClientPolicy::Disconnect => {
                    if !peer.slow.swap(true, Ordering::Relaxed) {
                        ListenerCounters::add(&counters.slow_clients_disconnected, 1);
                        tracing::warn!(
                            peer = %peer.addr,
                            conn = peer.conn,
                            listener = %shared.name,
                            "egress buffer full; disconnecting slow client"
                        );
                        peer.cancel.cancel();
                    }
                }
            }
            false
        }
    }
}

/// Sends `msg` to every open connection of one listener; returns how many
/// took it. With no connection open it is dropped and counted.
pub(crate) fn broadcast(shared: &ListenerShared, msg: &[u8]) -> Result<usize, EgressError> {
    let wire = encode(shared, msg)?;
    let mut taken = 0;
    let mut offered = 0;
    shared.peers.for_each(|peer| {
        offered += 1;
        if deliver(shared, peer, &wire) {
            taken += 1;
        }
    });
    if offered == 0 {
        shared.counters.dropped(DropReason::NoClient, 1);
    }
    Ok(taken)
}

/// A running egress writer; [`EgressWriter::stop`] ends it.
pub(crate) struct EgressWriter {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl EgressWriter {
    /// Starts the writer of one connection. It owns the write half, so a
    /// client that stops reading stalls only this task: the read loop goes
    /// on (its own `idle_timeout` decides about silent peers), and
    /// messages for this client wait in its bounded buffer.
    pub(crate) fn spawn(
        writer: WriteHalf,
        peer: Arc<Peer>,
        listener: Arc<ListenerShared>,
    ) -> EgressWriter {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(writer, peer, listener, stop.clone()));
        EgressWriter { stop, task }
    }

    /// Stops the writer, abandoning a write in progress (the connection is
    /// closing anyway), and waits for it, so the socket is closed once the
    /// caller drops the read half.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn run(
    mut writer: WriteHalf,
    peer: Arc<Peer>,
    listener: Arc<ListenerShared>,
    stop: CancellationToken,
) {
    let heartbeat = listener.heartbeat.clone();
    // Without a heartbeat there is no timer (an interval is an allocation
    // every idle connection would keep).
    let mut tick = match &heartbeat {
        Some((_, every)) => {
            let mut tick = tokio::time::interval(*every);
            tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
            // The first tick is immediate; the first heartbeat is due one
            // interval after the connection opened.
            tick.tick().await;
            Some(tick)
        }
        None => None,
    };
    let counters = &listener.counters;
    let buffer = &peer.egress;
    'serve: loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = buffer.ready() => {}
            _ = async {
                match &mut tick {
                    Some(tick) => tick.tick().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some((frame, _)) = &heartbeat {
                    buffer.offer_if_idle(frame, Messages { total: 1, replies: 0 });
                }
            }
        }
        while let Take::Write(buf, sent) = buffer.take() {
            let result = tokio::select! {
                biased;
                _ = stop.cancelled() => break 'serve,
                // TLS keeps what it encrypted until flushed; for TCP the
                // flush is free.
                result = async {
                    writer.write_all(&buf).await?;
                    writer.flush().await
                } => result,
            };
            if let Err(e) = result {
                // The read loop sees the same dead socket and ends the
                // connection; until then, writing more would fail again.
                tracing::debug!(peer = %peer.addr, conn = peer.conn, error = %e, "egress write failed");
                break 'serve;
            }
            let len = buf.len() as u64;
            buffer.written(buf);
            ListenerCounters::add(&peer.counters.frames_out, sent.total);
            ListenerCounters::add(&peer.counters.replies_out, sent.replies);
            ListenerCounters::add(&counters.replies_sent, sent.replies);
            ListenerCounters::add(&peer.counters.bytes_out, len);
            ListenerCounters::add(&counters.frames_sent, sent.total);
            ListenerCounters::add(&counters.bytes_sent, len);
        }
    }
    let unsent = buffer.close();
    counters.dropped(DropReason::EgressUnsent, unsent.total);
    // Dropping the write half would send a FIN while the read loop may
    // still be reading; leave the socket to close with the read half.
    writer.forget();
}

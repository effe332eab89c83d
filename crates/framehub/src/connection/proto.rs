//! The connection's protocol core, without I/O and without a clock: bytes
//! and the time go in; frames to deliver, drops by reason, "bound to node
//! X", deadlines and the reason to close come out.
//!
//! The async driver (`connection/mod.rs`) reads the socket into a buffer,
//! hands each read to [`Core::handle_read`], pushes [`Core::batch`] to its
//! queue, and sleeps until [`Core::poll_timeout`]. Everything decided about
//! the bytes is decided here, so it is unit-tested without a socket, as the
//! node protocol (`node.rs`) and the codecs are.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::arena::{compact, pack, share_out};
use crate::ack::{Accepted, AckTable, Stream};
use crate::codec::{CodecError, FrameDecoder, consume};
use crate::config::ListenerConfig;
use crate::event::{CloseReason, ConnectionCounts};
use crate::frame::{Frame, Incoming, Seq, Source};
use crate::node::{AuthFailure, NodeProtocol, NodeSession, Verdict};
use crate::stats::{DropReason, WarnLimiter};

/// What the protocol made of one frame.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// Deliver it; the range is its dedup key (`timestamp`), if it has one.
    Deliver(Option<Range<usize>>),
    /// Deliver it once [`Core::redact`] took the token (and the `redact`
    /// fields) out of it.
    Redact(Option<Range<usize>>),
    /// A heartbeat, or skipped and counted: nothing to deliver.
    Absorbed,
}

/// Counts gathered during reads and published by the driver once per read
/// (never per frame): the listener's and the connection's counters are
/// shared atomics.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) frames: u64,
    pub(crate) bytes: u64,
    /// Payload bytes of the frames (framing removed), and the largest.
    pub(crate) frame_bytes: u64,
    pub(crate) max_frame: u64,
    pub(crate) heartbeats: u64,
    /// Frames dropped, by reason (a handful of reasons at most).
    pub(crate) drops: Vec<(DropReason, u64)>,
}

impl Pending {
    /// Frames dropped, whatever the reason.
    pub(crate) fn dropped(&self) -> u64 {
        self.drops.iter().map(|(_, n)| n).sum()
    }
}

/// The limits and deadlines of one connection, from its listener's config.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_frame_bytes: usize,
    auth_timeout: Duration,
    idle_timeout: Option<Duration>,
    frame_timeout: Duration,
}

/// Acknowledged delivery on one connection (`[listener.ack]`).
struct AckSession {
    table: Arc<AckTable>,
    /// `length` framing: every frame starts with an 8-byte big-endian
    /// sequence number, and the first one (number 0) names the stream.
    prefixed: bool,
    /// The marks of the node or stream the connection is bound to; `None`
    /// before it binds, or when the table had no room.
    stream: Option<Arc<Stream>>,
    /// The round of acknowledgements this connection's frames belong to.
    epoch: u64,
    /// The last sequence number this connection took.
    last: u64,
}

/// The longest stream id a `length` connection's hello may carry.
pub(crate) const MAX_STREAM_ID: usize = 128;

/// One connection's protocol state: decoder, node session, the frames of
/// the current read, its counts and its deadlines.
pub(crate) struct Core {
    limits: Limits,
    decoder: FrameDecoder,
    /// The node protocol's state; `None` on raw listeners.
    session: Option<NodeSession>,
    /// Stamped on every frame; replaced once when the node binds.
    source: Arc<Source>,
    /// Set when the node binds, until the driver takes it.
    just_bound: Option<Arc<str>>,
    /// Frames of the current read, to be pushed together by the driver.
    batch: Vec<Incoming>,
    /// Where the batch's frames lie in the read buffer (in-place decoding).
    spans: Vec<Range<usize>>,
    /// The size of the read buffer's allocation: what a frame handed out
    /// without a copy keeps alive.
    read_alloc: usize,
    accepted: Instant,
    last_read: Instant,
    /// When the first byte of the frame still incomplete at the end of the
    /// last read arrived: the frame must be whole by `frame_timeout` after.
    partial_since: Option<Instant>,
    /// What this connection did, reported when it closes.
    pub(crate) counts: ConnectionCounts,
    pending: Pending,
    /// Drop warnings are limited per connection and per listener, so that
    /// a peer which reconnects after every bad frame cannot flood the log.
    warning: WarnLimiter,
    listener_warning: Arc<WarnLimiter>,
    /// Acknowledged delivery, when the listener has it.
    ack: Option<AckSession>,
    /// The sequence number of the frame being accepted, for its `Frame`.
    seq: Option<Seq>,
    /// Bytes to cut from the front of the frame being accepted (the
    /// `length` layout's sequence number).
    strip: usize,
}

impl Core {
    /// The core of a connection accepted at `now`, stamping `source` on its
    /// frames; `identity` is the node its client certificate names, bound
    /// from the start (node protocol only).
    pub(crate) fn new(
        config: &ListenerConfig,
        node_protocol: Option<Arc<NodeProtocol>>,
        source: Source,
        listener_warning: Arc<WarnLimiter>,
        identity: Option<Arc<str>>,
        now: Instant,
    ) -> Core {
        let mut session = node_protocol.map(|protocol| match &identity {
            Some(node) => NodeSession::bound(protocol, node.clone()),
            None => NodeSession::new(protocol),
        });
        let bound = session.as_mut().and_then(NodeSession::take_just_bound);
        // Until a peer authenticates it may only send a small first message,
        // so an unauthenticated peer cannot make the server buffer 1 MiB.
        let max_frame = match &session {
            Some(s) if !s.is_authenticated() => {
                config.auth.max_frame_bytes.0.min(config.max_frame_bytes.0)
            }
            _ => config.max_frame_bytes.0,
        };
        let mut core = Core {
            limits: Limits {
                max_frame_bytes: config.max_frame_bytes.0,
                auth_timeout: config.auth.timeout,
                idle_timeout: config.idle_timeout,
                frame_timeout: config.frame_timeout,
            },
            decoder: FrameDecoder::new(&config.framing, max_frame)
                .with_max_json_depth(config.max_json_depth),
            session,
            source: Arc::new(source),
            just_bound: None,
            batch: Vec::new(),
            spans: Vec::new(),
            read_alloc: 0,
            accepted: now,
            last_read: now,
            partial_since: None,
            counts: ConnectionCounts::default(),
            pending: Pending::default(),
            warning: WarnLimiter::new(Duration::from_secs(5)),
            listener_warning,
            ack: None,
            seq: None,
            strip: 0,
        };
        if let Some(node) = bound {
            core.bind(node);
        }
        core
    }

    /// Turns on acknowledged delivery with the hub's marks (`prefixed`: the
    /// `length` layout). A connection bound from the start (by its
    /// certificate) finds its node's marks at once.
    pub(crate) fn with_acks(mut self, table: Arc<AckTable>, prefixed: bool) -> Core {
        self.ack = Some(AckSession {
            table,
            prefixed,
            stream: None,
            epoch: 0,
            last: 0,
        });
        if let Some(node) = self.source.node.clone() {
            self.find_stream(&node);
        }
        self
    }

    /// The marks of the node or stream this connection is bound to, under
    /// acknowledged delivery.
    pub(crate) fn ack_stream(&self) -> Option<&Arc<Stream>> {
        self.ack.as_ref().and_then(|a| a.stream.as_ref())
    }

    /// Whether acks use the `length` layout (else the node protocol's).
    pub(crate) fn acks_prefixed(&self) -> bool {
        self.ack.as_ref().is_some_and(|a| a.prefixed)
    }

    fn find_stream(&mut self, node: &Arc<str>) {
        if let Some(ack) = &mut self.ack {
            ack.stream = ack.table.stream(node);
            ack.epoch = ack.stream.as_ref().map_or(0, |s| s.epoch());
            if ack.stream.is_none() {
                tracing::warn!(peer = %self.source.peer, conn = self.source.conn, node = %node, "acknowledgement table full: this node's frames are dropped (max_nodes)");
            }
        }
    }

    pub(crate) fn is_authenticated(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.is_authenticated())
    }

    /// The node this connection is bound to, once it is.
    pub(crate) fn node(&self) -> Option<&Arc<str>> {
        self.source.node.as_ref()
    }

    /// The node, once, right after the read whose frame bound it.
    pub(crate) fn take_bound(&mut self) -> Option<Arc<str>> {
        self.just_bound.take()
    }

    /// The frames of the last read(s) not yet delivered: the driver pushes
    /// them to their queue, which takes what fits.
    pub(crate) fn batch(&mut self) -> &mut Vec<Incoming> {
        &mut self.batch
    }

    /// The counts gathered since the last call, for the driver to publish.
    pub(crate) fn take_pending(&mut self) -> Pending {
        let drops = Vec::with_capacity(self.pending.drops.capacity());
        std::mem::replace(
            &mut self.pending,
            Pending {
                drops,
                ..Pending::default()
            },
        )
    }

    /// Counts `n` frames dropped for `reason`: in this connection's counts
    /// and, once published, in the connection's and the listener's
    /// counters. Every drop, here or in the driver, goes through this.
    pub(crate) fn dropped(&mut self, reason: DropReason, n: u64) {
        if n == 0 {
            return;
        }
        self.counts.dropped += n;
        match self.pending.drops.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, count)) => *count += n,
            None => self.pending.drops.push((reason, n)),
        }
    }

    /// The next moment [`Core::handle_timeout`] must be called, if any:
    /// the auth deadline until the peer authenticates, and the idle
    /// deadline after the last read.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let auth = (!self.is_authenticated()).then(|| self.accepted + self.limits.auth_timeout);
        let idle = self.limits.idle_timeout.map(|idle| self.last_read + idle);
        [auth, idle, self.frame_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// When the frame in progress must be whole, if one is.
    fn frame_deadline(&self) -> Option<Instant> {
        self.partial_since
            .map(|since| since + self.limits.frame_timeout)
    }

    /// Starts, keeps or stops the clock of the incomplete frame after a
    /// read: `consumed` says whether the read completed (or skipped)
    /// whatever was in progress before it, `left` how many bytes of a
    /// frame are still waiting for the rest. Bytes that only extend the
    /// same frame never restart it, so a peer trickling one never-ending
    /// frame byte by byte runs into `frame_timeout` (issue 18).
    fn track_partial_frame(&mut self, consumed: bool, left: usize, now: Instant) {
        self.partial_since = match self.partial_since {
            _ if left == 0 => None,
            Some(since) if !consumed => Some(since),
            _ => Some(now),
        };
    }

    /// The reason to close if a deadline passed by `now`. Called early (a
    /// deadline that no longer applies) it does nothing.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Result<(), CloseReason> {
        if !self.is_authenticated() && now >= self.accepted + self.limits.auth_timeout {
            return Err(CloseReason::AuthFailed(AuthFailure::Timeout));
        }
        if self
            .frame_deadline()
            .is_some_and(|deadline| now >= deadline)
        {
            return Err(CloseReason::FrameTimeout);
        }
        if let Some(idle) = self.limits.idle_timeout
            && now >= self.last_read + idle
        {
            return Err(CloseReason::IdleTimeout);
        }
        Ok(())
    }

    /// Takes a read of `n` bytes that completed at `now` (`n == 0`: the
    /// peer closed its side) and is now at the end of `buf`: cuts every
    /// complete frame out of `buf` and runs each through the protocol. The
    /// frames to deliver are added to [`Core::batch`], each stamped
    /// `received_at`; what is left of `buf` is an incomplete frame.
    pub(crate) fn handle_read(
        &mut self,
        buf: &mut BytesMut,
        n: usize,
        now: Instant,
        received_at: SystemTime,
    ) -> Result<(), CloseReason> {
        let eof = n == 0;
        if !eof {
            self.last_read = now;
            self.counts.bytes_in += n as u64;
            self.pending.bytes += n as u64;
        }
        let before = buf.len();
        let decoded = if self.decoder.decodes_in_place() {
            self.decode_in_place(buf, eof, received_at)
        } else {
            self.decode_and_cut(buf, eof, received_at)
        };
        self.track_partial_frame(buf.len() < before, buf.len(), now);
        decoded
    }

    /// Tells the core how large the read buffer's allocation is now (after
    /// the driver reserved room for the next read): frames that share the
    /// buffer keep this much alive.
    pub(crate) fn read_buffer_allocated(&mut self, capacity: usize) {
        self.read_alloc = capacity;
    }

    /// The decode loop of framings whose frames are found where they lie in
    /// the read (`lines`, `cobs`): each frame is checked in place (a COBS
    /// frame first decoded straight into this read's arena). The delivered
    /// ones either share the read buffer, when they fill most of its
    /// allocation, or are copied once into an allocation of about their
    /// size; the buffer is never split per frame.
    fn decode_in_place(
        &mut self,
        buf: &mut BytesMut,
        eof: bool,
        received_at: SystemTime,
    ) -> Result<(), CloseReason> {
        let first = self.batch.len();
        self.spans.clear();
        let encoded = self.decoder.finds_encoded();
        // Decoded frames go here as they are found (a payload is never
        // longer than its encoding); plain ones are copied once at the end.
        let mut decoded = BytesMut::new();
        let mut pos = 0;
        let result = loop {
            let span = match self.decoder.next_in(buf, &mut pos, eof) {
                Ok(Some(span)) => span,
                Ok(None) => break Ok(()),
                Err(e) => match self.handle_codec_error(e) {
                    Ok(()) => continue,
                    Err(reason) => break Err(reason),
                },
            };
            let (frame, span) = if encoded {
                if decoded.capacity() == 0 {
                    decoded.reserve(buf.len() - span.start);
                }
                let start = decoded.len();
                if let Err(e) = self.decoder.decode_found(&buf[span], &mut decoded) {
                    match self.handle_codec_error(e) {
                        Ok(()) => continue,
                        Err(reason) => break Err(reason),
                    }
                }
                let end = decoded.len();
                (&mut decoded[start..], start..end)
            } else {
                (&mut buf[span.clone()], span)
            };
            match self.accept(frame) {
                Ok(Fate::Deliver(timestamp)) => {
                    self.spans.push(span);
                    self.push_frame(Bytes::new(), received_at, timestamp);
                }
                Ok(Fate::Redact(mut timestamp)) => {
                    // Cut in place: the frame only gets shorter, and its
                    // bytes are this frame's own (the read buffer's or
                    // this read's arena's), not yet handed out.
                    let len = self.redact(frame, &mut timestamp);
                    let span = span.start..span.start + len;
                    if encoded {
                        decoded.truncate(span.end);
                    }
                    self.spans.push(span);
                    self.push_frame(Bytes::new(), received_at, timestamp);
                }
                Ok(Fate::Absorbed) if encoded => decoded.truncate(span.start),
                Ok(Fate::Absorbed) => {}
                Err(reason) => break Err(reason),
            }
        };
        let spans = &self.spans;
        let delivered: usize = spans.iter().map(|span| span.len()).sum();
        if !encoded && delivered * 4 >= self.read_alloc * 3 {
            // This read's delivered frames fill three quarters of the read
            // buffer's allocation: hand out slices of it instead of copying
            // them. What they keep alive is at most a third more than their
            // own size; the next reads go to what is left of it, then to a
            // fresh buffer.
            let read = buf.split_to(pos).freeze();
            for (item, span) in self.batch[first..].iter_mut().zip(spans) {
                item.frame.payload = read.slice(span.clone());
            }
            return result;
        }
        let arena = if encoded {
            // Sized for the whole read: copied to an exact allocation when
            // skipped or invalid frames left much of it unused.
            if decoded.capacity() > 2 * decoded.len() + 4096 {
                pack(std::iter::once(&decoded[..]))
            } else {
                decoded.freeze()
            }
        } else {
            pack(spans.iter().map(|span| &buf[span.clone()]))
        };
        share_out(&mut self.batch[first..], arena, |i, _| spans[i].len());
        consume(buf, pos);
        result
    }

    /// The decode loop of the other framings (`length`, `spacepacket`,
    /// `chunk`): each frame is cut out of the buffer, and the read's frames
    /// are then copied into one allocation of their size.
    fn decode_and_cut(
        &mut self,
        buf: &mut BytesMut,
        eof: bool,
        received_at: SystemTime,
    ) -> Result<(), CloseReason> {
        let first = self.batch.len();
        let result = loop {
            let decoded = self.decoder.decode_next(buf, eof);
            match decoded {
                Ok(Some(mut frame)) => match self.accept(&frame) {
                    Ok(Fate::Deliver(timestamp)) => {
                        let strip = std::mem::take(&mut self.strip);
                        if strip > 0 {
                            frame = frame.slice(strip..);
                        }
                        self.push_frame(frame, received_at, timestamp)
                    }
                    Ok(Fate::Redact(mut timestamp)) => {
                        // Node frames come in `lines`, decoded in place;
                        // any other framing pays a copy here.
                        let mut copy = BytesMut::from(&frame[..]);
                        let len = self.redact(&mut copy, &mut timestamp);
                        copy.truncate(len);
                        self.push_frame(copy.freeze(), received_at, timestamp);
                    }
                    Ok(Fate::Absorbed) => {}
                    Err(reason) => break Err(reason),
                },
                Ok(None) => break Ok(()),
                Err(e) => {
                    if let Err(reason) = self.handle_codec_error(e) {
                        break Err(reason);
                    }
                }
            }
        };
        compact(&mut self.batch[first..]);
        result
    }

    /// A frame the codec skipped is counted and decoding goes on; a lost
    /// framing, or an oversized first message, closes the connection.
    fn handle_codec_error(&mut self, e: CodecError) -> Result<(), CloseReason> {
        if matches!(e, CodecError::Oversize { .. }) && !self.is_authenticated() {
            return Err(CloseReason::AuthFailed(AuthFailure::FirstMessageTooLarge));
        }
        if e.is_fatal() {
            return Err(CloseReason::FramingLost(e.to_string()));
        }
        let reason = match e {
            CodecError::InvalidCobs => DropReason::InvalidCobs,
            CodecError::InvalidHeader => DropReason::InvalidHeader,
            CodecError::UnknownPacketId { .. } => DropReason::UnknownPacketId,
            CodecError::Truncated { .. } => DropReason::Truncated,
            CodecError::InvalidJson => DropReason::InvalidJson,
            CodecError::TooDeep { .. } => DropReason::TooDeep,
            _ => DropReason::Oversize,
        };
        self.skip(reason, &e);
        Ok(())
    }

    /// Counts a frame and runs it through the protocol.
    fn accept(&mut self, payload: &[u8]) -> Result<Fate, CloseReason> {
        self.counts.frames_in += 1;
        self.pending.frames += 1;
        let len = payload.len() as u64;
        self.pending.frame_bytes += len;
        self.pending.max_frame = self.pending.max_frame.max(len);
        let Some(session) = self.session.as_mut() else {
            if self.acks_prefixed() {
                return self.accept_prefixed(payload);
            }
            return Ok(Fate::Deliver(None));
        };
        let verdict = session.handle(payload);
        let seq = session.seq();
        if let Some(node) = session.take_just_bound() {
            self.bind(node);
        }
        match verdict {
            Verdict::Deliver { .. } if self.ack.is_some() && !self.sequence(seq) => {
                Ok(Fate::Absorbed)
            }
            Verdict::Deliver {
                timestamp,
                redact: false,
            } => Ok(Fate::Deliver(timestamp)),
            Verdict::Deliver {
                timestamp,
                redact: true,
            } => Ok(Fate::Redact(timestamp)),
            Verdict::Heartbeat => {
                self.pending.heartbeats += 1;
                Ok(Fate::Absorbed)
            }
            Verdict::Skip(reason) => {
                self.skip(reason, &reason.as_str());
                Ok(Fate::Absorbed)
            }
            Verdict::Reject(failure) => {
                // The frame was read: it is counted, like every other one.
                self.dropped(DropReason::AuthFailed, 1);
                Err(CloseReason::AuthFailed(failure))
            }
        }
    }

    /// Acknowledged delivery's check of a frame about to be delivered:
    /// false (counted) for a duplicate, or when the node has no marks (the
    /// table was full); a frame without a sequence number is delivered and
    /// never acknowledged.
    fn sequence(&mut self, seq: Option<u64>) -> bool {
        let Some(ack) = &mut self.ack else {
            return true;
        };
        let Some(stream) = &ack.stream else {
            self.skip(
                DropReason::MaxNodes,
                &"no room for this node's acknowledgements",
            );
            return false;
        };
        let Some(seq) = seq else {
            return true;
        };
        // Within one connection numbers must rise; across connections of
        // the node the queue decides (`Stream::deliver_in_order`).
        let verdict = if seq <= ack.last {
            Accepted::Duplicate
        } else {
            stream.check(seq, ack.epoch)
        };
        let epoch = ack.epoch;
        match verdict {
            Accepted::Taken => ack.last = seq,
            Accepted::Duplicate => {
                // A resend after a reconnect: expected, counted, not logged.
                self.dropped(DropReason::Duplicate, 1);
                return false;
            }
            Accepted::Stale => {
                self.dropped(DropReason::Rewound, 1);
                return false;
            }
        }
        self.seq = Some(Seq::new(seq, epoch));
        true
    }

    /// A frame of a `length` listener with acknowledged delivery: an
    /// 8-byte big-endian sequence number, then the payload; the first
    /// frame (number 0) carries the stream id instead and binds the
    /// connection to it.
    fn accept_prefixed(&mut self, payload: &[u8]) -> Result<Fate, CloseReason> {
        let Some((head, rest)) = payload.split_first_chunk::<8>() else {
            self.skip(
                DropReason::Truncated,
                &"shorter than its 8-byte sequence number",
            );
            return Ok(Fate::Absorbed);
        };
        let seq = u64::from_be_bytes(*head);
        if self.source.node.is_none() {
            if seq != 0 {
                return Err(CloseReason::FramingLost(
                    "acknowledged delivery: the first frame must be the stream hello (sequence number 0, then the stream id)".to_owned(),
                ));
            }
            let id = std::str::from_utf8(rest)
                .ok()
                .filter(|id| (1..=MAX_STREAM_ID).contains(&id.len()))
                .ok_or_else(|| {
                    CloseReason::FramingLost(format!(
                        "acknowledged delivery: the stream id must be 1 to {MAX_STREAM_ID} bytes of UTF-8"
                    ))
                })?;
            self.bind(Arc::from(id));
            return Ok(Fate::Absorbed);
        }
        if seq == 0 {
            self.skip(DropReason::InvalidHeader, &"a second stream hello");
            return Ok(Fate::Absorbed);
        }
        if !self.sequence(Some(seq)) {
            return Ok(Fate::Absorbed);
        }
        self.strip = head.len();
        Ok(Fate::Deliver(None))
    }

    /// Takes the token and the `redact` fields out of a frame about to be
    /// delivered: returns its new length, `timestamp` moved with its bytes.
    fn redact(&self, frame: &mut [u8], timestamp: &mut Option<Range<usize>>) -> usize {
        match &self.session {
            Some(session) => session.redact(frame, timestamp),
            None => frame.len(),
        }
    }

    fn push_frame(
        &mut self,
        payload: Bytes,
        received_at: SystemTime,
        timestamp: Option<Range<usize>>,
    ) {
        self.batch.push(Incoming::new(
            Frame {
                payload,
                received_at,
                source: self.source.clone(),
                seq: self.seq.take(),
            },
            timestamp,
        ));
    }

    /// The connection is bound to its node: its frames' source names it
    /// from this frame on, and it may send frames as large as any other.
    fn bind(&mut self, node: Arc<str>) {
        self.decoder
            .set_max_frame_bytes(self.limits.max_frame_bytes);
        self.source = Arc::new(Source {
            node: Some(node.clone()),
            ..(*self.source).clone()
        });
        self.find_stream(&node);
        self.just_bound = Some(node);
    }

    /// A frame skipped by the codec or the protocol: counted, and logged
    /// within the warning limits.
    fn skip(&mut self, reason: DropReason, why: &dyn std::fmt::Display) {
        self.dropped(reason, 1);
        self.warn_drop(reason, 1, why);
    }

    /// Logs dropped frames, at most once per period per connection and per
    /// listener.
    pub(crate) fn warn_drop(&self, reason: DropReason, n: u64, why: &dyn std::fmt::Display) {
        let allowed = self
            .warning
            .check()
            .and_then(|mine| self.listener_warning.check().map(|theirs| mine + theirs));
        if let Some(suppressed) = allowed {
            tracing::warn!(
                peer = %self.source.peer,
                conn = self.source.conn,
                node = self.source.node.as_deref().unwrap_or("-"),
                reason = reason.as_str(),
                dropped = n,
                suppressed,
                "dropping frame: {why}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{FramingConfig, LengthPrefix};
    use crate::config::{AuthConfig, ByteSize, Protocol};

    fn config(framing: FramingConfig, protocol: Protocol) -> ListenerConfig {
        ListenerConfig {
            framing,
            protocol,
            ..ListenerConfig::default()
        }
    }

    fn core_at(config: &ListenerConfig, now: Instant) -> Core {
        let node = (config.protocol == Protocol::Node).then(|| {
            Arc::new(
                NodeProtocol::new(
                    &config.auth.load_tokens().expect("tokens"),
                    &config.fields,
                    &config.redact,
                    config.max_json_depth,
                )
                .with_seq(config.ack.is_on().then_some(config.ack.seq_field.as_str())),
            )
        });
        let source = Source {
            conn: 7,
            peer: "127.0.0.1:9".parse().expect("addr"),
            listener: "default".into(),
            node: None,
            protocol: config.protocol,
        };
        Core::new(
            config,
            node,
            source,
            Arc::new(WarnLimiter::new(Duration::from_secs(1))),
            None,
            now,
        )
    }

    fn new_core(config: &ListenerConfig) -> Core {
        core_at(config, Instant::now())
    }

    /// Appends `bytes` to `buf` as one read and hands it to the core.
    fn read(core: &mut Core, buf: &mut BytesMut, bytes: &[u8]) -> Result<(), CloseReason> {
        buf.extend_from_slice(bytes);
        core.handle_read(buf, bytes.len(), Instant::now(), SystemTime::now())
    }

    fn payloads(core: &mut Core) -> Vec<String> {
        core.batch()
            .drain(..)
            .map(|i| String::from_utf8_lossy(&i.frame.payload).into_owned())
            .collect()
    }

    fn drops(pending: &Pending) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = pending
            .drops
            .iter()
            .map(|(r, n)| (r.as_str(), *n))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn lines_in_pieces_come_out_whole_and_in_order() {
        let c = config(FramingConfig::Lines, Protocol::Raw);
        let mut core = new_core(&c);
        let mut buf = BytesMut::with_capacity(1024);
        read(&mut core, &mut buf, b"one\ntw").expect("open");
        assert_eq!(payloads(&mut core), ["one"]);
        read(&mut core, &mut buf, b"o\r\nthree\n").expect("open");
        assert_eq!(payloads(&mut core), ["two", "three"]);
        let p = core.take_pending();
        assert_eq!(
            (p.frames, p.bytes, p.frame_bytes, p.max_frame),
            (3, 15, 11, 5)
        );
        assert_eq!(core.counts.frames_in, 3);
        assert_eq!(core.counts.bytes_in, 15);
        // A last line without its newline is still a line at the end.
        read(&mut core, &mut buf, b"four").expect("open");
        assert!(payloads(&mut core).is_empty());
        core.handle_read(&mut buf, 0, Instant::now(), SystemTime::now())
            .expect("eof");
        assert_eq!(payloads(&mut core), ["four"]);
    }

    #[test]
    fn node_frames_authenticate_bind_and_carry_their_source() {
        let mut c = config(FramingConfig::Lines, Protocol::Node);
        c.auth = AuthConfig {
            token: Some("secret".into()),
            ..AuthConfig::default()
        };
        let mut core = new_core(&c);
        assert!(!core.is_authenticated());
        let mut buf = BytesMut::new();
        read(
            &mut core,
            &mut buf,
            b"{\"node_id\":\"radar3\",\"token\":\"secret\",\"timestamp\":1}\n\
              {\"node_id\":\"radar3\",\"type\":\"heartbeat\"}\n\
              {\"node_id\":\"radar9\",\"timestamp\":2}\n\
              not json\n\
              {\"node_id\":\"radar3\",\"timestamp\":3}\n",
        )
        .expect("open");
        assert!(core.is_authenticated());
        assert_eq!(core.take_bound().as_deref(), Some("radar3"));
        assert_eq!(core.take_bound(), None, "told once");
        let batch: Vec<_> = core.batch().drain(..).collect();
        assert_eq!(batch.len(), 2);
        for item in &batch {
            assert_eq!(item.frame.source.node.as_deref(), Some("radar3"));
            assert_eq!(item.frame.source.conn, 7);
        }
        // The dedup key is the raw timestamp.
        let ts = batch[1].timestamp.clone().expect("timestamp");
        assert_eq!(&batch[1].frame.payload[ts], b"3");
        let p = core.take_pending();
        assert_eq!(p.heartbeats, 1);
        assert_eq!(p.frames, 5);
        assert_eq!(
            drops(&p),
            [("invalid_json", 1), ("node_mismatch", 1)],
            "skipped frames are counted by reason"
        );
        assert_eq!(core.counts.dropped, 2);
        assert_eq!(core.node().map(|n| &**n), Some("radar3"));
    }

    /// Issue 13: no receiver ever sees a token, whether the read's frames
    /// are handed out as slices of the read buffer or copied.
    #[test]
    fn delivered_frames_carry_no_token_nor_redacted_fields() {
        let mut c = config(FramingConfig::Lines, Protocol::Node);
        c.auth.token = Some("secret".into());
        c.redact = vec!["password".into()];
        for read_alloc in [0, 1 << 20] {
            let mut core = new_core(&c);
            core.read_buffer_allocated(read_alloc);
            let mut buf = BytesMut::new();
            read(
                &mut core,
                &mut buf,
                b"{\"token\":\"secret\", \"node_id\":\"r\",\"timestamp\":1}\n\
                  {\"node_id\":\"r\",\"timestamp\":2,\"token\":\"secret\"}\n\
                  {\"node_id\":\"r\",\"password\":\"p\",\"timestamp\":3}\n\
                  {\"node_id\":\"r\",\"timestamp\":4}\n",
            )
            .expect("open");
            let batch: Vec<_> = core.batch().drain(..).collect();
            let texts: Vec<_> = batch
                .iter()
                .map(|i| String::from_utf8_lossy(&i.frame.payload).into_owned())
                .collect();
            assert_eq!(
                texts,
                [
                    "{ \"node_id\":\"r\",\"timestamp\":1}",
                    "{\"node_id\":\"r\",\"timestamp\":2}",
                    "{\"node_id\":\"r\",\"timestamp\":3}",
                    "{\"node_id\":\"r\",\"timestamp\":4}",
                ],
                "read buffer allocation {read_alloc}"
            );
            for (n, item) in batch.iter().enumerate() {
                let ts = item.timestamp.clone().expect("timestamp");
                assert_eq!(item.frame.payload[ts], *(n + 1).to_string().as_bytes());
            }
        }
    }

    #[test]
    fn a_wrong_token_closes_with_its_reason() {
        let mut c = config(FramingConfig::Lines, Protocol::Node);
        c.auth.token = Some("secret".into());
        let mut core = new_core(&c);
        let mut buf = BytesMut::new();
        let end = read(
            &mut core,
            &mut buf,
            b"{\"node_id\":\"a\",\"token\":\"guess\"}\n",
        );
        assert_eq!(end, Err(CloseReason::AuthFailed(AuthFailure::WrongToken)));
        assert!(core.batch().is_empty());
        // The frame read is counted, under its reason.
        let p = core.take_pending();
        assert_eq!(p.frames, 1);
        assert_eq!(drops(&p), [("auth_failed", 1)]);
    }

    #[test]
    fn an_oversized_first_message_closes_and_later_ones_are_skipped() {
        let mut c = config(FramingConfig::Lines, Protocol::Node);
        c.auth.token = Some("secret".into());
        c.auth.max_frame_bytes = ByteSize(64);
        c.max_frame_bytes = ByteSize(128);
        let mut first = new_core(&c);
        let mut buf = BytesMut::new();
        let long = [b'x'; 100];
        assert_eq!(
            read(&mut first, &mut buf, &long),
            Err(CloseReason::AuthFailed(AuthFailure::FirstMessageTooLarge))
        );
        // Once bound, the listener's limit applies, and a longer line is
        // skipped (counted) while the connection goes on.
        let mut core = new_core(&c);
        let mut buf = BytesMut::new();
        read(
            &mut core,
            &mut buf,
            b"{\"node_id\":\"n\",\"token\":\"secret\"}\n",
        )
        .expect("auth");
        let mut line = format!("{{\"node_id\":\"n\",\"pad\":\"{}\"}}\n", "p".repeat(90));
        read(&mut core, &mut buf, line.as_bytes()).expect("fits 128");
        line = format!("{{\"node_id\":\"n\",\"pad\":\"{}\"}}\n", "p".repeat(200));
        read(&mut core, &mut buf, line.as_bytes()).expect("skipped, not closed");
        read(&mut core, &mut buf, b"{\"node_id\":\"n\"}\n").expect("open");
        assert_eq!(core.batch().len(), 3);
        assert_eq!(drops(&core.take_pending()), [("oversize", 1)]);
    }

    #[test]
    fn binary_framings_count_their_skips_and_lose_framing_when_they_must() {
        // COBS: an invalid frame is skipped, the next one decodes.
        let c = config(FramingConfig::Cobs, Protocol::Raw);
        let mut core = new_core(&c);
        let mut buf = BytesMut::new();
        read(&mut core, &mut buf, b"\x03ab\x00\x05ab\x00\x02c\x00").expect("open");
        assert_eq!(payloads(&mut core), ["ab", "c"]);
        assert_eq!(drops(&core.take_pending()), [("invalid_cobs", 1)]);

        // length: an announced length over the maximum loses the framing.
        let mut c = config(
            FramingConfig::Length(LengthPrefix::default()),
            Protocol::Raw,
        );
        c.max_frame_bytes = ByteSize(16);
        let mut core = new_core(&c);
        let mut buf = BytesMut::new();
        read(&mut core, &mut buf, b"\0\0\0\x02hi\0\0\0\x03").expect("open");
        assert_eq!(payloads(&mut core), ["hi"]);
        let end = read(&mut core, &mut buf, b"abc\0\0\x10\0");
        assert!(matches!(end, Err(CloseReason::FramingLost(_))), "{end:?}");
        assert_eq!(payloads(&mut core), ["abc"]);
    }

    #[test]
    fn deadlines_auth_then_idle() {
        let mut c = config(FramingConfig::Lines, Protocol::Node);
        c.auth.token = Some("secret".into());
        c.auth.timeout = Duration::from_secs(10);
        c.idle_timeout = Some(Duration::from_secs(60));
        let t0 = Instant::now();
        let mut core = core_at(&c, t0);
        // Before auth, the auth deadline comes first.
        assert_eq!(core.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(core.handle_timeout(t0 + Duration::from_secs(9)), Ok(()));
        assert_eq!(
            core.handle_timeout(t0 + Duration::from_secs(10)),
            Err(CloseReason::AuthFailed(AuthFailure::Timeout))
        );
        // After auth only the idle deadline is left, moved by each read.
        let mut core = core_at(&c, t0);
        let mut buf = BytesMut::new();
        let line = b"{\"node_id\":\"n\",\"token\":\"secret\"}\n";
        buf.extend_from_slice(line);
        let t1 = t0 + Duration::from_secs(5);
        core.handle_read(&mut buf, line.len(), t1, SystemTime::now())
            .expect("auth");
        assert_eq!(core.poll_timeout(), Some(t1 + Duration::from_secs(60)));
        assert_eq!(core.handle_timeout(t0 + Duration::from_secs(30)), Ok(()));
        assert_eq!(
            core.handle_timeout(t1 + Duration::from_secs(60)),
            Err(CloseReason::IdleTimeout)
        );
        // A raw listener without idle_timeout has no deadline at all.
        let raw = config(FramingConfig::Lines, Protocol::Raw);
        assert_eq!(core_at(&raw, t0).poll_timeout(), None);
    }

    /// Issue 18: a frame must be whole within `frame_timeout` of its first
    /// byte; bytes that only extend it do not restart the clock (each read
    /// still moves the idle deadline), a completed frame stops it, and the
    /// next frame's first byte starts it again.
    #[test]
    fn a_frame_trickled_byte_by_byte_runs_into_frame_timeout() {
        let mut c = config(FramingConfig::Lines, Protocol::Raw);
        c.frame_timeout = Duration::from_secs(30);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut core = core_at(&c, t0);
        let mut buf = BytesMut::new();
        let read_at = |core: &mut Core, buf: &mut BytesMut, bytes: &[u8], t: Instant| {
            buf.extend_from_slice(bytes);
            core.handle_read(buf, bytes.len(), t, SystemTime::now())
        };
        assert_eq!(core.poll_timeout(), None, "nothing in progress");
        read_at(&mut core, &mut buf, b"a", at(1)).expect("open");
        assert_eq!(core.poll_timeout(), Some(at(31)));
        for s in 2..30 {
            read_at(&mut core, &mut buf, b"b", at(s)).expect("open");
            assert_eq!(core.poll_timeout(), Some(at(31)), "not moved at {s}s");
        }
        assert_eq!(core.handle_timeout(at(30)), Ok(()));
        assert_eq!(core.handle_timeout(at(31)), Err(CloseReason::FrameTimeout));
        // The frame completes, and the next one starts in the same read.
        read_at(&mut core, &mut buf, b"c\nnext", at(30)).expect("open");
        assert_eq!(payloads(&mut core).len(), 1);
        assert_eq!(core.poll_timeout(), Some(at(60)));
        assert_eq!(core.handle_timeout(at(31)), Ok(()), "the new frame's clock");
        read_at(&mut core, &mut buf, b"\n", at(40)).expect("open");
        assert_eq!(core.poll_timeout(), None, "nothing left in progress");
        // With an idle timeout too, the earlier deadline comes first.
        c.idle_timeout = Some(Duration::from_secs(10));
        let mut core = core_at(&c, t0);
        read_at(&mut core, &mut buf, b"x", at(25)).expect("open");
        assert_eq!(core.poll_timeout(), Some(at(35)));
        read_at(&mut core, &mut buf, b"x", at(34)).expect("open");
        assert_eq!(
            core.poll_timeout(),
            Some(at(44)),
            "idle before the frame's 55 s"
        );
        assert_eq!(core.handle_timeout(at(44)), Err(CloseReason::IdleTimeout));
    }

    /// Whole frames leave no clock running in any framing: the
    /// whitespace after a `json` value, a `length` frame, a COBS frame.
    #[test]
    fn whole_frames_leave_no_frame_deadline() {
        for (framing, bytes) in [
            (
                FramingConfig::Json(crate::codec::JsonConfig::default()),
                &b"{\"a\":1}\n  \r\n"[..],
            ),
            (
                FramingConfig::Length(LengthPrefix::default()),
                &b"\0\0\0\x02hi"[..],
            ),
            (FramingConfig::Cobs, &b"\x03ab\x00"[..]),
            (FramingConfig::Lines, &b"line\n"[..]),
        ] {
            let name = framing.name();
            let c = config(framing, Protocol::Raw);
            let mut core = new_core(&c);
            let mut buf = BytesMut::new();
            read(&mut core, &mut buf, bytes).expect("open");
            assert_eq!(payloads(&mut core).len(), 1, "{name}");
            assert_eq!(core.poll_timeout(), None, "{name}: {buf:?} left");
        }
    }

    #[test]
    fn drops_from_the_driver_add_up_with_the_cores() {
        let c = config(FramingConfig::Cobs, Protocol::Raw);
        let mut core = new_core(&c);
        let mut buf = BytesMut::new();
        read(&mut core, &mut buf, b"\x05ab\x00").expect("open");
        core.dropped(DropReason::QueueFull, 3);
        core.dropped(DropReason::InvalidCobs, 2);
        core.dropped(DropReason::QueueFull, 0);
        let p = core.take_pending();
        assert_eq!(drops(&p), [("invalid_cobs", 3), ("queue_full", 3)]);
        assert_eq!(p.dropped(), 6);
        assert_eq!(core.counts.dropped, 6);
        assert!(core.take_pending().drops.is_empty(), "published once");
    }

    #[test]
    fn frames_of_a_sparse_read_do_not_share_the_read_buffer() {
        // A small frame in a large buffer is copied out; frames that fill
        // most of the buffer share it.
        let c = config(FramingConfig::Lines, Protocol::Raw);
        let mut core = new_core(&c);
        let mut buf = BytesMut::with_capacity(4096);
        core.read_buffer_allocated(buf.capacity());
        read(&mut core, &mut buf, b"small\n").expect("open");
        let item = core.batch().pop().expect("frame");
        assert!(!same_allocation(&item.frame.payload, &buf));
        let mut core = new_core(&c);
        let mut buf = BytesMut::with_capacity(64);
        core.read_buffer_allocated(buf.capacity());
        let dense = [b"a".repeat(62), b"\n".to_vec()].concat();
        read(&mut core, &mut buf, &dense).expect("open");
        let item = core.batch().pop().expect("frame");
        assert_eq!(item.frame.payload.len(), 62);
        assert!(buf.is_empty(), "the read was handed out whole");
    }

    fn ack_config(framing: FramingConfig, protocol: Protocol) -> ListenerConfig {
        let mut c = config(framing, protocol);
        c.ack.mode = crate::config::AckMode::Durable;
        c.queue.overflow = crate::config::OverflowPolicy::Block;
        c
    }

    fn seqs(core: &mut Core) -> Vec<Option<u64>> {
        core.batch()
            .drain(..)
            .map(|i| i.frame.seq.map(|s| s.value()))
            .collect()
    }

    /// Acknowledged delivery, node protocol: each frame's seq is read in
    /// the envelope scan, frames at or below the node's accepted mark are
    /// dropped as `duplicate` (across connections: the mark is the
    /// node's), and a frame without a (valid) seq is delivered unnumbered.
    #[test]
    fn node_frames_carry_their_seq_and_resends_are_duplicates() {
        let c = ack_config(FramingConfig::Lines, Protocol::Node);
        let table = Arc::new(AckTable::new(8, [("n".to_owned(), 2)]));
        let mut core = new_core(&c).with_acks(table.clone(), false);
        let mut buf = BytesMut::new();
        read(
            &mut core,
            &mut buf,
            b"{\"node_id\":\"n\",\"seq\":1}\n\
              {\"node_id\":\"n\",\"seq\":3}\n\
              {\"node_id\":\"n\",\"seq\":3}\n\
              {\"node_id\":\"n\",\"x\":{\"seq\":9}}\n\
              {\"node_id\":\"n\",\"seq\":\"4\"}\n\
              {\"node_id\":\"n\",\"seq\":0}\n\
              {\"node_id\":\"n\",\"seq\":5.0}\n\
              {\"node_id\":\"n\",\"seq\":4}\n",
        )
        .expect("open");
        assert_eq!(drops(&core.take_pending()), [("duplicate", 2)]);
        let stream = core.ack_stream().cloned().expect("bound");
        // Another connection of the node shares its marks, which rise only
        // as frames reach the queue: read before the first connection's
        // frames are queued, seq 4 is taken by both...
        let mut other = new_core(&c).with_acks(table.clone(), false);
        let mut buf = BytesMut::new();
        read(
            &mut other,
            &mut buf,
            b"{\"node_id\":\"n\",\"seq\":4}\n{\"node_id\":\"n\",\"seq\":18446744073709551615}\n",
        )
        .expect("open");
        // ...and the queue keeps the node's order: the first connection's
        // frames go in, then of the other's only what is above them.
        let (first, filtered) = stream.deliver_in_order(core.batch(), |b| {
            b.drain(..)
                .map(|i| i.frame.seq.map(|s| s.value()))
                .collect::<Vec<_>>()
        });
        assert_eq!(first, [Some(3), None, None, None, None, Some(4)]);
        assert_eq!(filtered.duplicates, 0);
        let (second, filtered) = stream.deliver_in_order(other.batch(), |b| {
            b.drain(..)
                .map(|i| i.frame.seq.map(|s| s.value()))
                .collect::<Vec<_>>()
        });
        assert_eq!(second, [Some(u64::MAX)]);
        assert_eq!(filtered.duplicates, 1);
        // Read after the queueing, a resend is a duplicate at once.
        let mut late = new_core(&c).with_acks(table, false);
        let mut buf = BytesMut::new();
        read(&mut late, &mut buf, b"{\"node_id\":\"n\",\"seq\":4}\n").expect("open");
        assert_eq!(seqs(&mut late), []);
        assert_eq!(drops(&late.take_pending()), [("duplicate", 1)]);
    }

    #[test]
    fn seq_values_that_are_not_positive_integers_are_none() {
        use crate::node::parse_seq;
        assert_eq!(parse_seq(b"1"), Some(1));
        assert_eq!(parse_seq(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b"0"[..],
            b"01",
            b"-1",
            b"1.5",
            b"1e3",
            b"\"1\"",
            b"",
            b"18446744073709551616",
        ] {
            assert_eq!(parse_seq(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    /// The `length` layout: the hello binds the stream and is absorbed,
    /// later frames lose their 8-byte prefix, duplicates and a second
    /// hello are dropped, a short frame is truncated; a first frame that
    /// is not a hello, or a bad stream id, closes.
    #[test]
    fn length_frames_bind_by_hello_and_lose_their_prefix() {
        let c = ack_config(
            FramingConfig::Length(LengthPrefix::default()),
            Protocol::Raw,
        );
        let table = Arc::new(AckTable::new(8, []));
        let frame = |seq: u64, payload: &[u8]| {
            let mut f = ((8 + payload.len()) as u32).to_be_bytes().to_vec();
            f.extend_from_slice(&seq.to_be_bytes());
            f.extend_from_slice(payload);
            f
        };
        let mut core = new_core(&c).with_acks(table.clone(), true);
        let mut buf = BytesMut::new();
        let mut wire = frame(0, b"cam-1");
        wire.extend(frame(1, b"a"));
        wire.extend(frame(2, b"b"));
        wire.extend(frame(2, b"b again"));
        wire.extend(frame(0, b"cam-1"));
        wire.extend(b"\0\0\0\x03abc");
        wire.extend(frame(3, b""));
        read(&mut core, &mut buf, &wire).expect("open");
        assert_eq!(core.take_bound().as_deref(), Some("cam-1"));
        let batch: Vec<_> = core.batch().drain(..).collect();
        let got: Vec<_> = batch
            .iter()
            .map(|i| (i.frame.payload.to_vec(), i.frame.seq.map(|s| s.value())))
            .collect();
        assert_eq!(
            got,
            [
                (b"a".to_vec(), Some(1)),
                (b"b".to_vec(), Some(2)),
                (Vec::new(), Some(3))
            ]
        );
        assert_eq!(batch[0].frame.source.node.as_deref(), Some("cam-1"));
        assert_eq!(
            drops(&core.take_pending()),
            [("duplicate", 1), ("invalid_header", 1), ("truncated", 1)]
        );
        for first in [
            frame(1, b"x"),
            frame(0, b""),
            frame(0, &[b'x'; 129]),
            frame(0, b"\xff"),
        ] {
            let mut core = new_core(&c).with_acks(table.clone(), true);
            let mut buf = BytesMut::new();
            let end = read(&mut core, &mut buf, &first);
            assert!(matches!(end, Err(CloseReason::FramingLost(_))), "{end:?}");
        }
    }

    fn same_allocation(frame: &Bytes, buf: &BytesMut) -> bool {
        let f = frame.as_ptr() as usize;
        let b = buf.as_ptr() as usize;
        f >= b && f < b + buf.capacity()
    }
}

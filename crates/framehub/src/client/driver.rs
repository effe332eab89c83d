//! The client's one background task: connect, write the outbox in order,
//! read and watch the server (its acks free what they cover), and after any
//! failure back off, reconnect and write again what was not acknowledged,
//! until the client is closed or dropped.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, sleep, sleep_until};
use tokio_rustls::client::TlsStream;

use super::backoff::Backoff;
use super::outbox::Outgoing;
use super::{
    ClientAckMode, ClientConfig, ClientEvent, ClientProtocol, ClientState, DisconnectReason,
    Shared, add,
};
use crate::codec::FrameDecoder;
use crate::json::{self, EnvelopeKeys};
use crate::stats::WarnLimiter;

/// Bytes taken from the outbox per write: large enough that a backlog
/// leaves in few system calls, small enough to bound what is held twice.
const BATCH_BYTES: usize = 64 << 10;
/// One read of the server's stream (heartbeats are tiny).
const READ_BYTES: usize = 8 << 10;

/// A connected socket, after its TLS handshake when the client has TLS.
enum Link {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// How a connection ended.
enum End {
    /// Closing: everything was written and the server closed its side.
    Closed,
    /// The client is shutting down now.
    Shutdown,
    /// The link failed; reconnect.
    Lost(DisconnectReason),
}

pub(super) async fn run(shared: Arc<Shared>) {
    let config = &shared.config;
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut pending = Pending::new(config.ack.is_on());
    let mut attempt = 0u32;
    let connect_warning = WarnLimiter::new(Duration::from_secs(10));
    // Which of the servers (`addr` may list several) is tried first: the
    // one that answered last.
    let mut first = 0;
    loop {
        if shared.shutdown.is_cancelled() || is_flushed(&shared, &pending) {
            break;
        }
        attempt += 1;
        shared.set_state(ClientState::Connecting);
        shared.emit(ClientEvent::Connecting {
            addr: config.addr.clone(),
            attempt,
        });
        let connected = tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => break,
            connected = connect(&shared, &mut first) => connected,
        };
        let reason = match connected {
            Ok((stream, peer, local)) => {
                attempt = 0;
                add(&shared.stats.connects, 1);
                tracing::debug!(addr = %config.addr, %peer, "connected");
                shared.set_state(ClientState::Connected);
                shared.emit(ClientEvent::Connected { peer, local });
                let up = Instant::now();
                let end = match stream {
                    Link::Plain(mut tcp) => {
                        let (reader, writer) = tcp.split();
                        session(&shared, reader, writer, &mut pending).await
                    }
                    Link::Tls(tls) => {
                        let (reader, writer) = tokio::io::split(*tls);
                        session(&shared, reader, writer, &mut pending).await
                    }
                };
                if up.elapsed() >= config.backoff_max {
                    // The link proved stable: the next outage starts over
                    // with a short wait.
                    backoff.reset();
                }
                match end {
                    End::Closed | End::Shutdown => break,
                    End::Lost(reason) => {
                        add(&shared.stats.disconnects, 1);
                        if matches!(reason, DisconnectReason::LivenessTimeout(_)) {
                            add(&shared.stats.liveness_timeouts, 1);
                        }
                        tracing::warn!(addr = %config.addr, %peer, "disconnected: {reason}");
                        reason
                    }
                }
            }
            Err(reason) => {
                add(&shared.stats.connect_failures, 1);
                if let Some(suppressed) = connect_warning.check() {
                    tracing::warn!(addr = %config.addr, attempt, suppressed, "{reason}");
                }
                reason
            }
        };
        shared.emit(ClientEvent::Disconnected { reason });
        if is_flushed(&shared, &pending) {
            break;
        }
        let delay = backoff.next_delay();
        shared.set_state(ClientState::BackingOff);
        shared.emit(ClientEvent::BackingOff { delay });
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => break,
            _ = sleep(delay) => {}
        }
    }
    let unsent = pending.data_frames() as u64 + shared.outbox.clear() as u64;
    let unacked = pending.unacked.len() as u64;
    add(&shared.stats.dropped_unsent, unsent);
    add(&shared.stats.dropped_unacked, unacked);
    if unsent > 0 || unacked > 0 {
        tracing::warn!(
            addr = %config.addr,
            unsent,
            unacked,
            "client stopped with messages unsent or not acknowledged"
        );
    }
    shared.set_state(ClientState::Closed);
    shared.emit(ClientEvent::Closed { unsent });
    shared.done.cancel();
}

/// Closing, and nothing is left to write or to be acknowledged.
fn is_flushed(shared: &Shared, pending: &Pending) -> bool {
    shared.outbox.is_closed() && pending.is_settled() && shared.outbox.len() == 0
}

/// Connects to the first server that answers, starting with `first` (the
/// one that answered last) and moving to the next when one is down
/// (`addr` may list several, comma-separated): each address resolved
/// again, the socket options set, then the TLS handshake if the client
/// has TLS, all within `connect_timeout` per server.
async fn connect(
    shared: &Shared,
    first: &mut usize,
) -> Result<(Link, SocketAddr, SocketAddr), DisconnectReason> {
    let config = &shared.config;
    let servers: Vec<&str> = config
        .addr
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    let mut errors = Vec::new();
    for i in 0..servers.len() {
        let at = (*first + i) % servers.len();
        match tokio::time::timeout(config.connect_timeout, connect_to(shared, servers[at])).await {
            Ok(Ok(connected)) => {
                *first = at;
                return Ok(connected);
            }
            Ok(Err(e)) => errors.push(format!("cannot connect to {}: {e}", servers[at])),
            Err(_) => errors.push(format!(
                "cannot connect to {}: timed out after {:?}",
                servers[at], config.connect_timeout
            )),
        }
    }
    if errors.is_empty() {
        errors.push(format!("no server address in {:?}", config.addr));
    }
    Err(DisconnectReason::ConnectFailed(errors.join("; ")))
}

/// Resolves one `host:port` and connects to the first of its addresses
/// that answers.
async fn connect_to(shared: &Shared, server: &str) -> io::Result<(Link, SocketAddr, SocketAddr)> {
    let config = &shared.config;
    let mut last_error = None;
    for addr in tokio::net::lookup_host(server).await? {
        match connect_one(addr, config).await {
            Ok(stream) => {
                let local = stream.local_addr()?;
                let link = match &shared.tls {
                    None => Link::Plain(stream),
                    Some(tls) => Link::Tls(Box::new(tls.connect(stream).await.map_err(|e| {
                        io::Error::new(e.kind(), format!("TLS handshake failed: {e}"))
                    })?)),
                };
                return Ok((link, addr, local));
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name has no address")))
}

async fn connect_one(addr: SocketAddr, config: &ClientConfig) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(size) = config.send_buffer_bytes {
        socket.set_send_buffer_size(u32::try_from(size).unwrap_or(u32::MAX))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(config.nodelay)?;
    if let Some(idle) = config.keepalive {
        let probe_every = (idle / 3).max(Duration::from_secs(1));
        let keepalive = TcpKeepalive::new()
            .with_time(idle)
            .with_interval(probe_every)
            .with_retries(3);
        SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
    }
    Ok(stream)
}

/// One connection: writes what is pending, then the outbox, heartbeats
/// when idle; reads the server's frames (acks free what they cover); ends
/// at the first sign the link is gone. Generic over the halves, so
/// plaintext stays on the bare TCP halves.
async fn session<R, W>(shared: &Shared, mut reader: R, mut writer: W, pending: &mut Pending) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let config = &shared.config;
    let resent = pending.restart(shared.opener.as_ref());
    add(&shared.stats.resent, resent.frames);
    add(&shared.stats.bytes_resent, resent.bytes);
    let heartbeat = shared.heartbeat.as_ref().and(config.heartbeat_interval);
    let mut decoder = FrameDecoder::new(&config.framing, config.max_frame_bytes);
    let mut received = BytesMut::with_capacity(READ_BYTES);
    let mut freed = Vec::new();
    // Liveness is only judged once the server has shown it sends at all
    // (acks do not count: a server sends them only when there is
    // something to acknowledge, so an idle link would look dead).
    let mut last_received: Option<Instant> = None;
    // Since when messages have been outstanding without ack progress.
    let mut ack_wait: Option<Instant> = None;
    let ack_timeout = config.ack.is_on().then_some(config.ack.timeout);
    let mut last_sent = Instant::now();
    let mut half_closed = false;
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    loop {
        if pending.is_empty() && !half_closed {
            pending.fill(&shared.outbox);
            if pending.is_settled() && shared.outbox.is_closed() {
                // Everything is in the kernel (and acknowledged). A FIN
                // after it lets the server read to the end; its own close
                // tells us it has.
                if let Err(e) = writer.shutdown().await {
                    return End::Lost(DisconnectReason::WriteError(e.to_string()));
                }
                half_closed = true;
            }
        }
        if received.capacity() - received.len() < READ_BYTES / 2 {
            received.reserve(READ_BYTES);
        }
        if ack_timeout.is_some() {
            ack_wait = match (pending.is_outstanding(), ack_wait) {
                (false, _) => None,
                (true, None) => Some(Instant::now()),
                (true, since) => since,
            };
        }
        let ack_due = ack_timeout.zip(ack_wait).map(|(t, since)| since + t);
        let heartbeat_due = heartbeat
            .filter(|_| pending.is_empty() && !half_closed)
            .map(|every| last_sent + every);
        let liveness = config.liveness_timeout;
        let liveness_due = liveness.zip(last_received).map(|(t, at)| at + t);
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => return End::Shutdown,
            read = reader.read_buf(&mut received) => match read {
                Ok(0) if half_closed => return End::Closed,
                Ok(0) => return End::Lost(DisconnectReason::PeerClosed),
                Ok(n) => {
                    add(&shared.stats.bytes_received, n as u64);
                    let got = match read_frames(shared, &mut decoder, &mut received) {
                        Ok(got) => got,
                        Err(reason) => return End::Lost(reason),
                    };
                    if got.other {
                        last_received = Some(Instant::now());
                    }
                    if let Some(seq) = got.ack {
                        if pending.ack(seq, &mut freed) {
                            ack_wait = None;
                        }
                        shared.acknowledged(&freed, pending.acked);
                        freed.clear();
                    }
                }
                // Everything was written; a reset now loses nothing of ours.
                Err(_) if half_closed => return End::Closed,
                Err(e) => return End::Lost(DisconnectReason::ReadError(e.to_string())),
            },
            // After the read (data that came in time counts), before the
            // write: a link that swallows every write (a half-open path
            // through a middlebox) must still be judged.
            _ = sleep_until(liveness_due.unwrap_or(far)), if liveness_due.is_some() => {
                let silent = liveness.unwrap_or_default();
                return End::Lost(DisconnectReason::LivenessTimeout(silent));
            }
            _ = sleep_until(ack_due.unwrap_or(far)), if ack_due.is_some() => {
                return End::Lost(DisconnectReason::AckTimeout(ack_timeout.unwrap_or_default()));
            }
            written = writer.write(pending.unwritten()), if !pending.is_empty() => match written {
                Ok(0) => {
                    return End::Lost(DisconnectReason::WriteError(
                        "the connection accepts no more bytes".into(),
                    ));
                }
                Ok(n) => {
                    last_sent = Instant::now();
                    let done = pending.advance(n, &mut freed);
                    add(&shared.stats.bytes_sent, n as u64);
                    add(&shared.stats.sent, done.data);
                    add(&shared.stats.heartbeats_sent, done.heartbeats);
                    if !freed.is_empty() {
                        shared.acknowledged(&freed, pending.acked);
                        freed.clear();
                    }
                    // TLS may hold what it took until flushed (a no-op on
                    // TCP); still judged by shutdown and liveness meanwhile.
                    let due = liveness_due.into_iter().chain(ack_due).min();
                    tokio::select! {
                        biased;
                        _ = shared.shutdown.cancelled() => return End::Shutdown,
                        _ = sleep_until(due.unwrap_or(far)), if due.is_some() => {
                            return End::Lost(if liveness_due == due {
                                DisconnectReason::LivenessTimeout(liveness.unwrap_or_default())
                            } else {
                                DisconnectReason::AckTimeout(ack_timeout.unwrap_or_default())
                            });
                        }
                        flushed = writer.flush() => if let Err(e) = flushed {
                            return End::Lost(DisconnectReason::WriteError(e.to_string()));
                        },
                    }
                }
                Err(e) => return End::Lost(DisconnectReason::WriteError(e.to_string())),
            },
            _ = shared.outbox.ready.notified(), if pending.is_empty() && !half_closed => {}
            _ = sleep_until(heartbeat_due.unwrap_or(far)), if heartbeat_due.is_some() => {
                if let Some(frame) = &shared.heartbeat {
                    pending.push(Outgoing::unnumbered(frame.clone()), true);
                }
            }
        }
    }
}

/// What one read brought.
#[derive(Debug, Default, PartialEq, Eq)]
struct Received {
    /// The highest ack in it.
    ack: Option<u64>,
    /// Whether anything but acks came (heartbeats): the server is alive.
    other: bool,
}

/// Cuts the server's frames out of `received`: acks are read (the highest
/// is returned), anything else is counted and dropped (heartbeats carry
/// nothing for the application).
fn read_frames(
    shared: &Shared,
    decoder: &mut FrameDecoder,
    received: &mut BytesMut,
) -> Result<Received, DisconnectReason> {
    let mut got = Received::default();
    loop {
        match decoder.decode_next(received, false) {
            Ok(Some(frame)) => {
                add(&shared.stats.frames_received, 1);
                match parse_ack(&shared.config, &frame) {
                    Some(seq) => {
                        add(&shared.stats.acks_received, 1);
                        got.ack = got.ack.max(Some(seq));
                    }
                    None => got.other = true,
                }
            }
            Ok(None) => return Ok(got),
            Err(e) if e.is_fatal() => return Err(DisconnectReason::FramingLost(e.to_string())),
            // A bad frame from the server costs only that frame.
            Err(_) => add(&shared.stats.frames_received_invalid, 1),
        }
    }
}

/// The number an ack frame acknowledges up to (docs/acks.md): node
/// protocol `{"type":"ack","seq":N}` in the listener's names (its
/// `fields.msg_type` and `ack.seq_field`, which the client's identity and
/// ack mode mirror), `length` framing 8 bytes big-endian.
fn parse_ack(config: &ClientConfig, frame: &[u8]) -> Option<u64> {
    match (&config.ack.mode, &config.protocol) {
        (ClientAckMode::Length { .. }, _) => Some(u64::from_be_bytes(frame.try_into().ok()?)),
        (ClientAckMode::Node { seq_field }, ClientProtocol::Node(identity)) => {
            // The timestamp's slot finds the number: nothing here needs a
            // timestamp.
            let keys = EnvelopeKeys {
                msg_type: identity.fields.msg_type.as_bytes(),
                timestamp: seq_field.as_bytes(),
                ..EnvelopeKeys::DEFAULT
            };
            let envelope = json::scan_envelope(frame, &keys, 4).ok()?;
            if !envelope.msg_type?.str_eq("ack") {
                return None;
            }
            std::str::from_utf8(envelope.timestamp?.raw())
                .ok()?
                .parse()
                .ok()
        }
        _ => None,
    }
}

/// Frames taken from the outbox (and heartbeats) that the kernel has not
/// fully taken yet, oldest first, with their bytes back to back so that one
/// `write` can carry many; with acks, also the frames written whole and not
/// acknowledged yet.
#[derive(Debug, Default)]
struct Pending {
    entries: VecDeque<Entry>,
    wire: BytesMut,
    /// Bytes of `wire` the kernel has taken.
    written: usize,
    /// Reused for taking batches from the outbox.
    batch: Vec<Outgoing>,
    /// Acks on: written frames wait in `unacked` for their ack.
    acking: bool,
    /// Written whole, not acknowledged, oldest (lowest number) first.
    unacked: VecDeque<Outgoing>,
    /// The highest number acknowledged.
    acked: u64,
}

#[derive(Debug)]
struct Entry {
    out: Outgoing,
    /// Offset in `wire` just past this frame.
    end: usize,
    heartbeat: bool,
}

/// Frames the kernel finished taking in one `advance`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Done {
    data: u64,
    heartbeats: u64,
}

/// What a new connection writes again.
#[derive(Debug, Default, PartialEq, Eq)]
struct Resent {
    /// Frames written before (whole, or in part when the link broke).
    frames: u64,
    /// Their bytes.
    bytes: u64,
}

impl Outgoing {
    /// A frame outside the numbering and the budget (heartbeat, opener).
    fn unnumbered(frame: Bytes) -> Outgoing {
        Outgoing {
            seq: 0,
            frame,
            cost: 0,
        }
    }
}

impl Pending {
    fn new(acking: bool) -> Pending {
        Pending {
            acking,
            ..Pending::default()
        }
    }

    /// Nothing to write.
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Nothing to write and nothing waiting for an ack.
    fn is_settled(&self) -> bool {
        self.entries.is_empty() && self.unacked.is_empty()
    }

    /// Something written or to be written waits for an ack.
    fn is_outstanding(&self) -> bool {
        self.acking && !self.is_settled()
    }

    fn unwritten(&self) -> &[u8] {
        &self.wire[self.written..]
    }

    fn data_frames(&self) -> usize {
        self.entries.iter().filter(|e| !e.heartbeat).count()
    }

    fn push(&mut self, out: Outgoing, heartbeat: bool) {
        self.wire.extend_from_slice(&out.frame);
        self.entries.push_back(Entry {
            out,
            end: self.wire.len(),
            heartbeat,
        });
    }

    /// Takes the next batch from the outbox.
    fn fill(&mut self, outbox: &super::Outbox) {
        let mut batch = std::mem::take(&mut self.batch);
        outbox.take(&mut batch, BATCH_BYTES);
        for frame in batch.drain(..) {
            self.push(frame, false);
        }
        self.batch = batch;
    }

    /// The kernel took `n` more bytes: frames now complete leave, with
    /// acks into `unacked` (or into `freed` if an ack already covers them).
    fn advance(&mut self, n: usize, freed: &mut Vec<Outgoing>) -> Done {
        self.written += n;
        let mut done = Done::default();
        while let Some(entry) = self.entries.front() {
            if entry.end > self.written {
                break;
            }
            let Some(entry) = self.entries.pop_front() else {
                break;
            };
            if entry.heartbeat {
                done.heartbeats += 1;
                continue;
            }
            done.data += 1;
            if !self.acking {
                continue;
            }
            if entry.out.seq <= self.acked {
                freed.push(entry.out);
            } else {
                self.unacked.push_back(entry.out);
            }
        }
        if self.entries.is_empty() {
            self.wire.clear();
            self.written = 0;
        }
        done
    }

    /// The server acknowledged every frame numbered up to `seq`: those
    /// waiting leave into `freed`. Returns whether this was progress (a
    /// higher number than before).
    fn ack(&mut self, seq: u64, freed: &mut Vec<Outgoing>) -> bool {
        let raised = seq > self.acked;
        self.acked = self.acked.max(seq);
        while self.unacked.front().is_some_and(|f| f.seq <= self.acked) {
            freed.extend(self.unacked.pop_front());
        }
        raised
    }

    /// Prepares a new connection: stale heartbeats go, `opener` comes
    /// first, then every frame written but not acknowledged (acks), then
    /// every frame not fully taken by the old connection, whole, in order.
    fn restart(&mut self, opener: Option<&Bytes>) -> Resent {
        let mut resent = Resent::default();
        if let Some(e) = self.entries.front()
            && !e.heartbeat
            && self.written > 0
            && e.end - e.out.frame.len() < self.written
        {
            resent.frames += 1;
            resent.bytes += e.out.frame.len() as u64;
        }
        let entries = std::mem::take(&mut self.entries);
        let unacked = std::mem::take(&mut self.unacked);
        self.wire.clear();
        self.written = 0;
        if let Some(opener) = opener {
            self.push(Outgoing::unnumbered(opener.clone()), true);
        }
        for out in unacked {
            resent.frames += 1;
            resent.bytes += out.frame.len() as u64;
            self.push(out, false);
        }
        for entry in entries.into_iter().filter(|e| !e.heartbeat) {
            self.push(entry.out, false);
        }
        resent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(frame: &'static [u8]) -> Outgoing {
        Outgoing::unnumbered(Bytes::from_static(frame))
    }

    fn numbered(seq: u64) -> Outgoing {
        Outgoing {
            seq,
            frame: Bytes::from(format!("{seq}\n")),
            cost: 1,
        }
    }

    fn advance(p: &mut Pending, n: usize) -> Done {
        let mut freed = Vec::new();
        let done = p.advance(n, &mut freed);
        assert!(freed.is_empty());
        done
    }

    #[test]
    fn frames_leave_only_when_the_kernel_took_their_last_byte() {
        let mut p = Pending::default();
        p.push(data(b"aaa\n"), false);
        p.push(data(b"hb\n"), true);
        p.push(data(b"bbb\n"), false);
        assert_eq!(p.unwritten(), b"aaa\nhb\nbbb\n");
        assert_eq!(advance(&mut p, 3), Done::default());
        assert_eq!(
            advance(&mut p, 3),
            Done {
                data: 1,
                heartbeats: 0
            }
        );
        assert_eq!(p.unwritten(), b"\nbbb\n");
        assert_eq!(
            advance(&mut p, 1),
            Done {
                data: 0,
                heartbeats: 1
            }
        );
        assert_eq!(p.data_frames(), 1);
        // Cut after part of "bbb\n": it is written again whole, after the
        // new connection's opener.
        advance(&mut p, 2);
        let opener = Bytes::from_static(b"auth\n");
        assert_eq!(
            p.restart(Some(&opener)),
            Resent {
                frames: 1,
                bytes: 4
            }
        );
        assert_eq!(p.unwritten(), b"auth\nbbb\n");
        assert_eq!(
            advance(&mut p, 9),
            Done {
                data: 1,
                heartbeats: 1
            }
        );
        assert!(p.is_empty() && p.unwritten().is_empty());
        assert!(p.is_settled(), "without acks nothing waits once written");
    }

    #[test]
    fn restart_drops_stale_heartbeats_and_counts_no_partial_when_none() {
        let mut p = Pending::default();
        p.push(data(b"hb\n"), true);
        p.push(data(b"a\n"), false);
        assert_eq!(p.restart(None), Resent::default());
        assert_eq!(p.unwritten(), b"a\n");
        // The heartbeat was taken in part: no data frame was.
        let mut p = Pending::default();
        p.push(data(b"hb\n"), true);
        p.push(data(b"a\n"), false);
        advance(&mut p, 1);
        assert_eq!(p.restart(None), Resent::default());
        assert_eq!(p.unwritten(), b"a\n");
    }

    /// Written frames wait for their ack; an ack frees every frame up to
    /// its number; a reconnect writes the rest again, in order, before the
    /// frames never written.
    #[test]
    fn acks_free_written_frames_and_a_restart_resends_the_rest_first() {
        let mut p = Pending::new(true);
        for seq in 1..=4 {
            p.push(numbered(seq), false);
        }
        // 1, 2 and 3 written whole ("1\n2\n3\n"), 4 not yet.
        assert_eq!(advance(&mut p, 6).data, 3);
        assert!(!p.is_empty() && p.is_outstanding());
        assert_eq!(p.unacked.len(), 3);
        let mut freed = Vec::new();
        assert!(p.ack(1, &mut freed));
        assert_eq!(freed.iter().map(|f| f.seq).collect::<Vec<_>>(), [1]);
        // An old ack is no progress and frees nothing.
        freed.clear();
        assert!(!p.ack(1, &mut freed));
        assert!(freed.is_empty());
        let resent = p.restart(Some(&Bytes::from_static(b"hi\n")));
        assert_eq!(
            resent,
            Resent {
                frames: 2,
                bytes: 4
            }
        );
        assert_eq!(p.unwritten(), b"hi\n2\n3\n4\n");
        // The server knew 3 already (its ack on binding): once written
        // again, 2 and 3 leave at once.
        assert!(p.ack(3, &mut freed));
        assert!(freed.is_empty(), "nothing written on this connection yet");
        p.advance(7, &mut freed);
        assert_eq!(freed.iter().map(|f| f.seq).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(p.unacked.len(), 0);
        freed.clear();
        p.advance(2, &mut freed);
        assert_eq!(p.unacked.iter().map(|f| f.seq).collect::<Vec<_>>(), [4]);
        assert!(p.is_empty() && !p.is_settled());
        assert!(p.ack(10, &mut freed));
        assert!(p.is_settled());
    }

    #[test]
    fn acks_are_parsed_per_mode_in_the_listeners_names() {
        let node = ClientConfig {
            ack: super::super::ClientAckConfig::new(ClientAckMode::node()),
            ..ClientConfig::new("h:1")
        };
        assert_eq!(parse_ack(&node, br#"{"type":"ack","seq":42}"#), Some(42));
        assert_eq!(
            parse_ack(&node, br#"{ "seq" : 7 , "type" : "ack" }"#),
            Some(7)
        );
        assert_eq!(parse_ack(&node, br#"{"type":"heartbeat"}"#), None);
        assert_eq!(parse_ack(&node, br#"{"type":"ack","seq":-1}"#), None);
        assert_eq!(parse_ack(&node, br#"{"type":"ack","seq":"5"}"#), None);
        assert_eq!(parse_ack(&node, b"garbage"), None);
        let mut renamed = node.clone();
        renamed.ack.mode = ClientAckMode::Node {
            seq_field: "n".into(),
        };
        if let ClientProtocol::Node(identity) = &mut renamed.protocol {
            identity.fields.msg_type = "kind".into();
        }
        assert_eq!(parse_ack(&renamed, br#"{"kind":"ack","n":3}"#), Some(3));
        assert_eq!(parse_ack(&renamed, br#"{"type":"ack","seq":3}"#), None);
        let length = ClientConfig {
            ack: super::super::ClientAckConfig::new(ClientAckMode::Length {
                stream_id: "s".into(),
            }),
            ..ClientConfig::new("h:1")
        };
        assert_eq!(parse_ack(&length, &9u64.to_be_bytes()), Some(9));
        assert_eq!(parse_ack(&length, b"short"), None);
        let off = ClientConfig::new("h:1");
        assert_eq!(parse_ack(&off, br#"{"type":"ack","seq":1}"#), None);
    }
}

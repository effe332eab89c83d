//! The client's one background task: connect, write the outbox in order,
//! read and watch the server, and after any failure back off and
//! reconnect, until the client is closed or dropped.

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
use super::{ClientConfig, ClientEvent, ClientState, DisconnectReason, Shared, add};
use crate::codec::FrameDecoder;
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
    let mut pending = Pending::default();
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
    add(&shared.stats.dropped_unsent, unsent);
    if unsent > 0 {
        tracing::warn!(addr = %config.addr, unsent, "client stopped with messages unsent");
    }
    shared.set_state(ClientState::Closed);
    shared.emit(ClientEvent::Closed { unsent });
    shared.done.cancel();
}

/// Closing, and nothing is left to write.
fn is_flushed(shared: &Shared, pending: &Pending) -> bool {
    shared.outbox.is_closed() && pending.is_empty() && shared.outbox.len() == 0
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
/// when idle; reads and counts what the server sends; ends at the first
/// sign the link is gone. Generic over the halves, so plaintext stays on
/// the bare TCP halves.
async fn session<R, W>(shared: &Shared, mut reader: R, mut writer: W, pending: &mut Pending) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let config = &shared.config;
    let opener = shared
        .heartbeat
        .as_ref()
        .filter(|_| shared.heartbeat_authenticates);
    let resent = pending.restart(opener);
    add(&shared.stats.resent, resent);
    let heartbeat = shared.heartbeat.as_ref().and(config.heartbeat_interval);
    let mut decoder = FrameDecoder::new(&config.framing, config.max_frame_bytes);
    let mut received = BytesMut::with_capacity(READ_BYTES);
    // Liveness is only judged once the server has shown it sends at all.
    let mut last_received: Option<Instant> = None;
    let mut last_sent = Instant::now();
    let mut half_closed = false;
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    loop {
        if pending.is_empty() && !half_closed {
            pending.fill(&shared.outbox);
            if pending.is_empty() && shared.outbox.is_closed() {
                // Everything is in the kernel. A FIN after it lets the
                // server read to the end; its own close tells us it has.
                if let Err(e) = writer.shutdown().await {
                    return End::Lost(DisconnectReason::WriteError(e.to_string()));
                }
                half_closed = true;
            }
        }
        if received.capacity() - received.len() < READ_BYTES / 2 {
            received.reserve(READ_BYTES);
        }
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
                    last_received = Some(Instant::now());
                    add(&shared.stats.bytes_received, n as u64);
                    if let Err(reason) = count_frames(shared, &mut decoder, &mut received) {
                        return End::Lost(reason);
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
            written = writer.write(pending.unwritten()), if !pending.is_empty() => match written {
                Ok(0) => {
                    return End::Lost(DisconnectReason::WriteError(
                        "the connection accepts no more bytes".into(),
                    ));
                }
                Ok(n) => {
                    last_sent = Instant::now();
                    let done = pending.advance(n);
                    add(&shared.stats.bytes_sent, n as u64);
                    add(&shared.stats.sent, done.data);
                    add(&shared.stats.heartbeats_sent, done.heartbeats);
                    // TLS may hold what it took until flushed (a no-op on
                    // TCP); still judged by shutdown and liveness meanwhile.
                    tokio::select! {
                        biased;
                        _ = shared.shutdown.cancelled() => return End::Shutdown,
                        _ = sleep_until(liveness_due.unwrap_or(far)), if liveness_due.is_some() => {
                            let silent = liveness.unwrap_or_default();
                            return End::Lost(DisconnectReason::LivenessTimeout(silent));
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
                    pending.push(frame.clone(), true);
                }
            }
        }
    }
}

/// Cuts the server's frames out of `received` and counts them; they carry
/// nothing for the application (heartbeats), so they are not kept.
fn count_frames(
    shared: &Shared,
    decoder: &mut FrameDecoder,
    received: &mut BytesMut,
) -> Result<(), DisconnectReason> {
    loop {
        match decoder.decode_next(received, false) {
            Ok(Some(_)) => add(&shared.stats.frames_received, 1),
            Ok(None) => return Ok(()),
            Err(e) if e.is_fatal() => return Err(DisconnectReason::FramingLost(e.to_string())),
            // A bad frame from the server costs only that frame.
            Err(_) => add(&shared.stats.frames_received_invalid, 1),
        }
    }
}

/// Frames taken from the outbox (and heartbeats) that the kernel has not
/// fully taken yet, oldest first, with their bytes back to back so that one
/// `write` can carry many.
#[derive(Debug, Default)]
struct Pending {
    entries: VecDeque<Entry>,
    wire: BytesMut,
    /// Bytes of `wire` the kernel has taken.
    written: usize,
    /// Reused for taking batches from the outbox.
    batch: Vec<Bytes>,
}

#[derive(Debug)]
struct Entry {
    frame: Bytes,
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

impl Pending {
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn unwritten(&self) -> &[u8] {
        &self.wire[self.written..]
    }

    fn data_frames(&self) -> usize {
        self.entries.iter().filter(|e| !e.heartbeat).count()
    }

    fn push(&mut self, frame: Bytes, heartbeat: bool) {
        self.wire.extend_from_slice(&frame);
        self.entries.push_back(Entry {
            frame,
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

    /// The kernel took `n` more bytes: frames now complete leave.
    fn advance(&mut self, n: usize) -> Done {
        self.written += n;
        let mut done = Done::default();
        while let Some(entry) = self.entries.front() {
            if entry.end > self.written {
                break;
            }
            if entry.heartbeat {
                done.heartbeats += 1;
            } else {
                done.data += 1;
            }
            self.entries.pop_front();
        }
        if self.entries.is_empty() {
            self.wire.clear();
            self.written = 0;
        }
        done
    }

    /// Prepares a new connection: stale heartbeats go, `opener` (the
    /// authenticating heartbeat) comes first, and every frame not fully
    /// taken by the old connection is written again, whole. Returns how
    /// many data frames the old connection had taken in part.
    fn restart(&mut self, opener: Option<&Bytes>) -> u64 {
        let partial = self.entries.front().is_some_and(|e| {
            !e.heartbeat && e.end - e.frame.len() < self.written && self.written > 0
        });
        let entries = std::mem::take(&mut self.entries);
        self.wire.clear();
        self.written = 0;
        if let Some(opener) = opener {
            self.push(opener.clone(), true);
        }
        for entry in entries.into_iter().filter(|e| !e.heartbeat) {
            self.push(entry.frame, false);
        }
        u64::from(partial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_leave_only_when_the_kernel_took_their_last_byte() {
        let mut p = Pending::default();
        p.push(Bytes::from_static(b"aaa\n"), false);
        p.push(Bytes::from_static(b"hb\n"), true);
        p.push(Bytes::from_static(b"bbb\n"), false);
        assert_eq!(p.unwritten(), b"aaa\nhb\nbbb\n");
        assert_eq!(p.advance(3), Done::default());
        assert_eq!(
            p.advance(3),
            Done {
                data: 1,
                heartbeats: 0
            }
        );
        assert_eq!(p.unwritten(), b"\nbbb\n");
        assert_eq!(
            p.advance(1),
            Done {
                data: 0,
                heartbeats: 1
            }
        );
        assert_eq!(p.data_frames(), 1);
        // Cut after part of "bbb\n": it is written again whole, after the
        // new connection's opener.
        p.advance(2);
        let opener = Bytes::from_static(b"auth\n");
        assert_eq!(p.restart(Some(&opener)), 1);
        assert_eq!(p.unwritten(), b"auth\nbbb\n");
        assert_eq!(
            p.advance(9),
            Done {
                data: 1,
                heartbeats: 1
            }
        );
        assert!(p.is_empty() && p.unwritten().is_empty());
    }

    #[test]
    fn restart_drops_stale_heartbeats_and_counts_no_partial_when_none() {
        let mut p = Pending::default();
        p.push(Bytes::from_static(b"hb\n"), true);
        p.push(Bytes::from_static(b"a\n"), false);
        assert_eq!(p.restart(None), 0);
        assert_eq!(p.unwritten(), b"a\n");
        // The heartbeat was taken in part: no data frame was.
        let mut p = Pending::default();
        p.push(Bytes::from_static(b"hb\n"), true);
        p.push(Bytes::from_static(b"a\n"), false);
        p.advance(1);
        assert_eq!(p.restart(None), 0);
        assert_eq!(p.unwritten(), b"a\n");
    }
}

//! The `tap` sink: a TCP port where any number of subscribers (up to
//! `max_subscribers`) connect and receive every record live, as NDJSON.
//!
//! Each subscriber has a buffer bounded in bytes (`buffer_bytes`, plus at
//! most one chunk when the buffer was empty, so a record larger than the
//! buffer still gets through): the library's egress buffer,
//! [`framehub::outbuf::OutBuf`], holding the sink thread's chunks without
//! copying them. Publishing never waits: a subscriber whose
//! buffer is full misses those records (`on_full = "drop"`, counted) or is
//! disconnected (`"disconnect"`, counted), so a slow or stuck subscriber
//! never slows ingest or the other sinks.
//!
//! A subscriber may state a filter in its first line (`framehub tap --node
//! --listener`, see [`filter`]): from then on the tap queues only matching
//! records for it, so a filtered subscriber costs neither its bandwidth
//! nor its buffer for the rest. Anything else it sends is read and ignored
//! (to notice when it leaves).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use framehub::outbuf::{Offer, OutBuf, Take};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{TapOverflow, TapSinkConfig};
use crate::sink::{Chunk, Sink, SinkStatus};

use self::filter::{MAX_HELLO_BYTES, Selected, TapFilter};

pub mod filter;

/// A running tap: its port, its subscribers.
pub struct Tap {
    shared: Arc<TapShared>,
    tasks: TaskTracker,
    /// Stops accepting subscribers.
    stop_accepting: CancellationToken,
    /// Ends every subscriber at once, written or not.
    hard_stop: CancellationToken,
}

struct TapShared {
    config: TapSinkConfig,
    status: Arc<SinkStatus>,
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
}

struct Subscriber {
    peer: SocketAddr,
    /// Chunks waiting for it, counting the records each holds.
    buffer: OutBuf<u64>,
    /// Cancelled when the subscriber is cut, even in the middle of a write
    /// to a peer that does not read.
    cut: CancellationToken,
    lost: AtomicU64,
    warned: AtomicBool,
    /// Its filter, once confirmed in its stream; `None`: every record.
    /// Set and read under the subscriber list's lock, so it changes
    /// between two chunks.
    filter: Mutex<Option<TapFilter>>,
}

impl Tap {
    /// Binds the tap's port and starts accepting subscribers.
    pub async fn bind(config: TapSinkConfig, status: Arc<SinkStatus>) -> io::Result<Tap> {
        let listener = TcpListener::bind(config.bind).await?;
        let local_addr = listener.local_addr()?;
        let tap = Tap {
            shared: Arc::new(TapShared {
                config,
                status,
                subscribers: Mutex::new(Vec::new()),
            }),
            tasks: TaskTracker::new(),
            stop_accepting: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
        };
        tap.tasks.spawn(accept_loop(
            listener,
            tap.shared.clone(),
            tap.tasks.clone(),
            tap.stop_accepting.clone(),
            tap.hard_stop.clone(),
        ));
        tracing::info!(sink = %tap.shared.status.name, %local_addr, "tap listening");
        Ok(tap)
    }

    /// The half that runs on the sink thread.
    pub fn publisher(&self) -> TapPublisher {
        TapPublisher {
            shared: self.shared.clone(),
        }
    }

    /// Stops accepting, lets every subscriber receive what it has buffered
    /// for at most `grace`, then closes the rest.
    pub async fn shutdown(self, grace: Duration) {
        self.stop_accepting.cancel();
        for sub in self.shared.subscribers.lock().iter() {
            // No more chunks will come: write what is left, then end.
            sub.buffer.finish();
        }
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            self.hard_stop.cancel();
            self.tasks.wait().await;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<TapShared>,
    tasks: TaskTracker,
    stop: CancellationToken,
    hard_stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(sink = %shared.status.name, error = %e, "tap accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let sub = {
            let mut subs = shared.subscribers.lock();
            if subs.len() >= shared.config.max_subscribers {
                None
            } else {
                let sub = Arc::new(Subscriber {
                    peer,
                    buffer: OutBuf::new(shared.config.buffer_bytes.0).with_oversized_when_empty(),
                    cut: hard_stop.child_token(),
                    lost: AtomicU64::new(0),
                    warned: AtomicBool::new(false),
                    filter: Mutex::new(None),
                });
                subs.push(sub.clone());
                shared
                    .status
                    .subscribers
                    .store(subs.len() as u64, Ordering::Relaxed);
                Some(sub)
            }
        };
        let Some(sub) = sub else {
            shared
                .status
                .subscribers_rejected
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                sink = %shared.status.name,
                %peer,
                max_subscribers = shared.config.max_subscribers,
                "tap full; closing new subscriber"
            );
            continue;
        };
        tracing::info!(sink = %shared.status.name, %peer, "tap subscriber connected");
        tasks.spawn(serve(shared.clone(), sub, stream));
    }
}

/// Writes a subscriber's buffer to it until it leaves, is cut, or the tap
/// shuts down.
async fn serve(shared: Arc<TapShared>, sub: Arc<Subscriber>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut input = [0u8; 512];
    let mut hello = HelloReader::default();
    let mut wanted: Option<TapFilter> = None;
    let why = loop {
        // The hello line is looked for between writes too: a subscriber
        // that connects into a flood gets its filter without waiting for
        // the backlog.
        if !hello.done {
            match reader.try_read(&mut input) {
                Ok(0) => break "subscriber left",
                Ok(n) => wanted = wanted.or(hello.feed(&input[..n], &shared, &sub)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break "subscriber left",
            }
        }
        if let Some(filter) = wanted.take() {
            wanted = apply_filter(&shared, &sub, filter);
        }
        match sub.buffer.take() {
            Take::Ended => break "tap closed",
            Take::Idle => tokio::select! {
                biased;
                _ = sub.cut.cancelled() => break "cut",
                _ = sub.buffer.ready() => {}
                read = reader.read(&mut input) => match read {
                    Ok(0) | Err(_) => break "subscriber left",
                    Ok(n) if !hello.done => {
                        wanted = wanted.or(hello.feed(&input[..n], &shared, &sub));
                    }
                    Ok(_) => {}
                },
            },
            Take::Write(chunk, _) => {
                tokio::select! {
                    biased;
                    _ = sub.cut.cancelled() => break "cut",
                    written = writer.write_all(&chunk) => if written.is_err() {
                        break "subscriber left";
                    },
                }
                // Freed only once written, so the buffer bounds what is in
                // memory, in flight included.
                sub.buffer.written(chunk);
            }
        }
    };
    // Records still buffered never reached it (it left, or shutdown cut
    // it short): they count as lost too.
    let unsent = sub.buffer.close();
    if unsent > 0 {
        sub.lost.fetch_add(unsent, Ordering::Relaxed);
        shared
            .status
            .records_lost
            .fetch_add(unsent, Ordering::Relaxed);
    }
    let remaining = {
        let mut subs = shared.subscribers.lock();
        subs.retain(|s| !Arc::ptr_eq(s, &sub));
        subs.len()
    };
    shared
        .status
        .subscribers
        .store(remaining as u64, Ordering::Relaxed);
    tracing::info!(
        sink = %shared.status.name,
        peer = %sub.peer,
        records_lost = sub.lost.load(Ordering::Relaxed),
        "tap subscriber gone: {why}"
    );
}

/// The first line a subscriber sends, gathered up to [`MAX_HELLO_BYTES`].
#[derive(Default)]
struct HelloReader {
    line: Vec<u8>,
    /// A line was read (a filter or not), or too much came without one:
    /// what comes next is ignored.
    done: bool,
}

impl HelloReader {
    /// Takes bytes from the subscriber; the filter, once a hello line is
    /// complete.
    fn feed(&mut self, bytes: &[u8], shared: &TapShared, sub: &Subscriber) -> Option<TapFilter> {
        let end = memchr::memchr(b'\n', bytes);
        let take = end
            .unwrap_or(bytes.len())
            .min(MAX_HELLO_BYTES + 1 - self.line.len());
        self.line.extend_from_slice(&bytes[..take]);
        if end.is_none() && self.line.len() <= MAX_HELLO_BYTES {
            return None;
        }
        self.done = true;
        let line = std::mem::take(&mut self.line);
        let filter = if line.len() <= MAX_HELLO_BYTES {
            TapFilter::from_hello(&line)
        } else {
            None
        };
        if filter.is_none() {
            shared
                .status
                .subscribe_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                sink = %shared.status.name,
                peer = %sub.peer,
                "tap subscriber sent something that is not a filter; it gets every record"
            );
        }
        filter
    }
}

/// Puts the confirmation into the subscriber's stream and sets its filter
/// in one step, under the list's lock, so every chunk after that line is
/// filtered and none before it. Returns the filter when the buffer has no
/// room for the line yet (tried again after the next write).
fn apply_filter(shared: &TapShared, sub: &Subscriber, filter: TapFilter) -> Option<TapFilter> {
    let _subs = shared.subscribers.lock();
    match sub
        .buffer
        .offer_shared(Bytes::from(filter.confirm_line()), 0)
    {
        Offer::Full => return Some(filter),
        Offer::Closed => return None,
        Offer::Taken => {}
    }
    tracing::info!(
        sink = %shared.status.name,
        peer = %sub.peer,
        node = ?filter.node,
        listener = ?filter.listener,
        "tap subscriber filters"
    );
    *sub.filter.lock() = (!filter.is_everything()).then_some(filter);
    None
}

/// The tap's sink-thread half: hands each chunk to every subscriber's
/// buffer without ever waiting.
pub struct TapPublisher {
    shared: Arc<TapShared>,
}

impl Sink for TapPublisher {
    fn status(&self) -> &Arc<SinkStatus> {
        &self.shared.status
    }

    fn write(&mut self, chunk: &Chunk) {
        let shared = &*self.shared;
        let status = &shared.status;
        let cap = shared.config.buffer_bytes.0;
        let len = chunk.bytes.len();
        let mut subs = shared.subscribers.lock();
        subs.retain(|sub| {
            let selected = match &*sub.filter.lock() {
                Some(filter) => filter.select(chunk),
                None => Selected::All,
            };
            let (bytes, records) = match selected {
                Selected::All => (chunk.bytes.clone(), chunk.records),
                Selected::Some(bytes, records) => (bytes, records),
                Selected::Nothing => return true,
            };
            match sub.buffer.offer_shared(bytes, records) {
                // A closed buffer's subscriber is on its way out.
                Offer::Taken | Offer::Closed => return true,
                Offer::Full => {}
            }
            match shared.config.on_full {
                TapOverflow::Drop => {
                    sub.lost.fetch_add(records, Ordering::Relaxed);
                    status.records_lost.fetch_add(records, Ordering::Relaxed);
                    if !sub.warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            sink = %status.name,
                            peer = %sub.peer,
                            buffer_bytes = cap,
                            "tap subscriber is not keeping up; dropping records for it (counted)"
                        );
                    }
                    true
                }
                TapOverflow::Disconnect => {
                    // What it had buffered is lost with it.
                    let lost = records + sub.buffer.close();
                    sub.lost.fetch_add(lost, Ordering::Relaxed);
                    status.records_lost.fetch_add(lost, Ordering::Relaxed);
                    status.subscribers_cut.fetch_add(1, Ordering::Relaxed);
                    sub.cut.cancel();
                    tracing::warn!(
                        sink = %status.name,
                        peer = %sub.peer,
                        buffer_bytes = cap,
                        "tap subscriber is not keeping up; disconnecting it"
                    );
                    false
                }
            }
        });
        status
            .subscribers
            .store(subs.len() as u64, Ordering::Relaxed);
        drop(subs);
        status.wrote(chunk.records, len as u64);
    }
}

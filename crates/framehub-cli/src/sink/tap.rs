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
//! never slows ingest or the other sinks. What a subscriber sends is read
//! and ignored (to notice when it leaves).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use framehub::outbuf::{Offer, OutBuf, Take};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{TapOverflow, TapSinkConfig};
use crate::sink::{Chunk, Sink, SinkStatus};

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
    let mut ignored = [0u8; 512];
    let why = loop {
        match sub.buffer.take() {
            Take::Ended => break "tap closed",
            Take::Idle => tokio::select! {
                biased;
                _ = sub.cut.cancelled() => break "cut",
                _ = sub.buffer.ready() => {}
                read = reader.read(&mut ignored) => match read {
                    Ok(0) | Err(_) => break "subscriber left",
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
            match sub.buffer.offer_shared(chunk.bytes.clone(), chunk.records) {
                // A closed buffer's subscriber is on its way out.
                Offer::Taken | Offer::Closed => return true,
                Offer::Full => {}
            }
            match shared.config.on_full {
                TapOverflow::Drop => {
                    sub.lost.fetch_add(chunk.records, Ordering::Relaxed);
                    status
                        .records_lost
                        .fetch_add(chunk.records, Ordering::Relaxed);
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
                    let lost = chunk.records + sub.buffer.close();
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

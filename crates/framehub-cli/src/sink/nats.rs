//! The `nats` sink in the daemon: the sink thread hands each batch of
//! frames to the library's [`NatsSink`] (blocking while its buffer is
//! full), and a small task copies the sink's health and counters into its
//! [`SinkStatus`] every 200 ms, so `/healthz` tells why NATS is not taking
//! frames even while the sink thread waits. With acknowledged delivery it
//! is one of the durable sinks: a chunk counts as synced here once
//! JetStream acknowledged every frame taken up to it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use framehub::Frame;
use framehub::nats::sink::{Acked, NatsSinkMonitor, OnAcked};
use framehub::nats::{NatsSink, NatsSinkConfig};
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use super::durable::Durability;
use super::{Chunk, Sink, SinkStatus};

/// Which chunks JetStream has acknowledged, for [`Durability`].
struct ChunkAcks {
    durability: Arc<Durability>,
    /// This sink's index among the durable sinks.
    index: usize,
    /// Chunks handed over and not yet acknowledged: (chunk number, frames
    /// taken by the sink when it was cut). At most one per frame held, so
    /// bounded by `buffer_frames`.
    chunks: Mutex<VecDeque<(u64, u64)>>,
    /// Every frame taken up to this number is acknowledged.
    through: AtomicU64,
    /// Failed frames already reported.
    failed: AtomicU64,
}

impl ChunkAcks {
    /// Reports the chunks whose frames are all acknowledged.
    fn release(&self) {
        let through = self.through.load(Ordering::Acquire);
        let mut synced = None;
        {
            let mut chunks = self.chunks.lock();
            while chunks.front().is_some_and(|(_, taken)| *taken <= through) {
                synced = chunks.pop_front().map(|(no, _)| no);
            }
        }
        if let Some(no) = synced {
            self.durability.synced(self.index, no);
        }
    }
}

/// How often health and counters are copied into the status.
const MONITOR_PERIOD: Duration = Duration::from_millis(200);

/// The sink-thread half of a `nats` sink.
pub struct NatsSinkWriter {
    sink: NatsSink,
    status: Arc<SinkStatus>,
    drain_timeout: Duration,
    monitor: JoinHandle<()>,
    acks: Option<Arc<ChunkAcks>>,
}

impl NatsSinkWriter {
    /// Starts the sink on the shared connection; `listeners` give the
    /// subjects of a stream it creates; `report` says in its health why the
    /// connection is down. With `durability` (some listener acknowledges
    /// frames) it joins the durable sinks.
    pub async fn start(
        client: framehub::nats::async_nats::Client,
        report: framehub::nats::ConnectionReport,
        config: NatsSinkConfig,
        instance: String,
        listeners: &[&str],
        status: Arc<SinkStatus>,
        durability: Option<Arc<Durability>>,
    ) -> Result<NatsSinkWriter, String> {
        let drain_timeout = config.drain_timeout;
        let acks = durability.map(|durability| {
            Arc::new(ChunkAcks {
                index: durability.register(),
                durability,
                chunks: Mutex::new(VecDeque::new()),
                through: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            })
        });
        let on_acked: Option<OnAcked> = acks.clone().map(|acks| {
            Arc::new(move |acked: Acked<'_>| {
                acks.through.fetch_max(acked.through, Ordering::AcqRel);
                acks.release();
            }) as OnAcked
        });
        let sink = NatsSink::start(client, config, instance, listeners, on_acked)
            .await
            .map_err(|e| format!("sink {:?}: {e}", status.name))?;
        sink.report_connection(report);
        let monitor = tokio::spawn(watch(sink.monitor(), status.clone(), acks.clone()));
        Ok(NatsSinkWriter {
            sink,
            status,
            drain_timeout,
            monitor,
            acks,
        })
    }
}

/// Copies health and counters into the status until aborted; a frame given
/// up fails the acks pending (their clients send them again).
async fn watch(monitor: NatsSinkMonitor, status: Arc<SinkStatus>, acks: Option<Arc<ChunkAcks>>) {
    let mut every = tokio::time::interval(MONITOR_PERIOD);
    loop {
        every.tick().await;
        sync(&monitor, &status);
        if let Some(acks) = &acks {
            let failed = monitor.stats().failed.load(Ordering::Relaxed);
            if acks.failed.swap(failed, Ordering::AcqRel) < failed {
                acks.durability.failed(acks.index);
            }
        }
    }
}

fn sync(monitor: &NatsSinkMonitor, status: &SinkStatus) {
    let s = monitor.stats();
    let published = s.published.load(Ordering::Relaxed);
    let bytes = s.bytes.load(Ordering::Relaxed);
    let written = status.records_written.load(Ordering::Relaxed);
    let written_bytes = status.bytes_written.load(Ordering::Relaxed);
    status
        .records_written
        .store(published.max(written), Ordering::Relaxed);
    status
        .bytes_written
        .store(bytes.max(written_bytes), Ordering::Relaxed);
    // Dropped on purpose (`on_full = "drop"`): lost, not failed.
    status
        .records_lost
        .store(s.dropped.load(Ordering::Relaxed), Ordering::Relaxed);
    let failed = s.failed.load(Ordering::Relaxed);
    let counted = status.records_failed.load(Ordering::Relaxed);
    match monitor.health() {
        Err(why) => status.fail(why, failed.saturating_sub(counted)),
        Ok(()) if failed > counted => status.fail(
            "frames refused by NATS for good (see the log)".to_owned(),
            failed - counted,
        ),
        Ok(()) => status.recover(),
    }
}

impl Sink for NatsSinkWriter {
    fn status(&self) -> &Arc<SinkStatus> {
        &self.status
    }

    fn write(&mut self, chunk: &Chunk) {
        // Every frame of the chunk was handed over before it was cut.
        if let Some(acks) = &self.acks {
            acks.chunks.lock().push_back((chunk.no, self.sink.taken()));
            acks.release();
        }
    }

    fn wants_records(&self) -> bool {
        false
    }

    fn write_frames(&mut self, frames: &[Frame]) {
        self.sink.push_blocking(frames);
    }

    fn finish(&mut self) {
        self.sink.finish_blocking(self.drain_timeout);
        self.monitor.abort();
        let monitor = self.sink.monitor();
        sync(&monitor, &self.status);
    }
}

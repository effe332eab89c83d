//! The `nats` sink in the daemon: the sink thread hands each batch of
//! frames to the library's [`NatsSink`] (blocking while its buffer is
//! full), and a small task copies the sink's health and counters into its
//! [`SinkStatus`] every 200 ms, so `/healthz` tells why NATS is not taking
//! frames even while the sink thread waits.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use framehub::Frame;
use framehub::nats::sink::{NatsSinkMonitor, OnAcked};
use framehub::nats::{NatsSink, NatsSinkConfig};
use tokio::task::JoinHandle;

use super::{Chunk, Sink, SinkStatus};

/// How often health and counters are copied into the status.
const MONITOR_PERIOD: Duration = Duration::from_millis(200);

/// The sink-thread half of a `nats` sink.
pub struct NatsSinkWriter {
    sink: NatsSink,
    status: Arc<SinkStatus>,
    drain_timeout: Duration,
    monitor: JoinHandle<()>,
}

impl NatsSinkWriter {
    /// Starts the sink on the shared connection; `listeners` give the
    /// subjects of a stream it creates.
    pub async fn start(
        client: framehub::nats::async_nats::Client,
        config: NatsSinkConfig,
        instance: String,
        listeners: &[&str],
        status: Arc<SinkStatus>,
        on_acked: Option<OnAcked>,
    ) -> Result<NatsSinkWriter, String> {
        let drain_timeout = config.drain_timeout;
        let sink = NatsSink::start(client, config, instance, listeners, on_acked)
            .await
            .map_err(|e| format!("sink {:?}: {e}", status.name))?;
        let monitor = tokio::spawn(watch(sink.monitor(), status.clone()));
        Ok(NatsSinkWriter {
            sink,
            status,
            drain_timeout,
            monitor,
        })
    }
}

/// Copies health and counters into the status until aborted.
async fn watch(monitor: NatsSinkMonitor, status: Arc<SinkStatus>) {
    let mut every = tokio::time::interval(MONITOR_PERIOD);
    loop {
        every.tick().await;
        sync(&monitor, &status);
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

    fn write(&mut self, _chunk: &Chunk) {}

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

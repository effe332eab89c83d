//! Acknowledged delivery through the library's `Client` (`framehub bench
//! --client`, `--ack`): frames per second until every frame is written
//! (without acks: handed to the kernel) or acknowledged (with acks), the
//! latency from `send` to the ack that covers the frame, and the client's
//! memory per MiB of unacknowledged frames (`--outbox-memory`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use framehub::{
    Client, ClientAckConfig, ClientAckMode, ClientConfig, ClientProtocol, NodeIdentity,
    OutboxPolicy,
};
use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::{Latency, frames, mbps, per_sec};

/// What one run sends.
#[derive(Debug, Clone)]
pub struct ClientLoad {
    /// The server, `host:port`.
    pub to: String,
    /// Clients (one connection and one node each: `bench-1`...).
    pub conns: usize,
    /// Frames per client.
    pub frames: u64,
    /// Payload bytes per frame.
    pub size: usize,
    /// Frames per second per client (0: as fast as the outbox takes them).
    pub rate: u64,
    /// The listener's token.
    pub token: Option<String>,
    /// Acknowledged delivery (`[listener.ack] mode = "durable"` needed).
    pub ack: bool,
    /// The outbox bound with acks (bytes).
    pub max_unacked: usize,
}

/// The result of a [`run`].
#[derive(Debug, Clone, Serialize)]
pub struct ClientReport {
    /// Whether frames were acknowledged.
    pub ack: bool,
    /// Clients.
    pub conns: usize,
    /// Frames sent in all.
    pub frames: u64,
    /// Payload bytes per frame.
    pub size: usize,
    /// From the first send until every client closed (all written, or all
    /// acknowledged).
    pub elapsed_s: f64,
    /// Frames per second over `elapsed_s`.
    pub frames_per_sec: f64,
    /// Payload MB/s over `elapsed_s`.
    pub mb_per_sec: f64,
    /// `send` to the covering ack (acks only).
    pub ack_latency: Option<Latency>,
    /// Frames written again after reconnects (should be 0).
    pub resent: u64,
}

impl ClientReport {
    /// A short table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "client load ({}): {} conns x {} B, {} frames in {:.2}s: {:.0} frames/s, {:.1} MB/s, resent {}\n",
            if self.ack { "acks" } else { "no acks" },
            self.conns,
            self.size,
            self.frames,
            self.elapsed_s,
            self.frames_per_sec,
            self.mb_per_sec,
            self.resent,
        );
        if let Some(l) = self.ack_latency {
            out.push_str(&format!(
                "ack latency: p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us ({} frames)\n",
                l.p50_us, l.p99_us, l.p999_us, l.max_us, l.samples
            ));
        }
        out
    }
}

fn client_config(load: &ClientLoad, node: &str) -> ClientConfig {
    ClientConfig {
        protocol: ClientProtocol::Node(NodeIdentity {
            node_id: Some(node.to_owned()),
            token: load.token.clone(),
            ..NodeIdentity::default()
        }),
        outbox_policy: OutboxPolicy::Block,
        // Without acks the outbox holds messages: about as many bytes as
        // the acked run may have unacknowledged.
        outbox_capacity: (load.max_unacked / (load.size + 64)).max(1),
        ack: if load.ack {
            ClientAckConfig {
                first_seq: Some(1),
                max_unacked_bytes: load.max_unacked,
                ..ClientAckConfig::new(ClientAckMode::node())
            }
        } else {
            ClientAckConfig::default()
        },
        ..ClientConfig::new(load.to.clone())
    }
}

/// Runs `load` against a running server and reports.
pub async fn run(load: ClientLoad) -> anyhow::Result<ClientReport> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let histogram = Arc::new(Mutex::new(hdrhistogram::Histogram::<u64>::new(3)?));
    for i in 1..=load.conns.max(1) {
        let load = load.clone();
        let histogram = histogram.clone();
        tasks.spawn(async move { one_client(load, i, histogram).await });
    }
    let mut resent = 0;
    while let Some(done) = tasks.join_next().await {
        resent += done??;
    }
    let elapsed = started.elapsed();
    let total = load.frames * load.conns.max(1) as u64;
    let latency = Latency::from_histogram(&histogram.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(ClientReport {
        ack: load.ack,
        conns: load.conns.max(1),
        frames: total,
        size: load.size,
        elapsed_s: elapsed.as_secs_f64(),
        frames_per_sec: per_sec(total, elapsed),
        mb_per_sec: mbps(total * load.size as u64, elapsed),
        ack_latency: if load.ack { latency } else { None },
        resent,
    })
}

/// One client: sends its frames (paced with `rate`), records each
/// frame's send time and, as acks rise, the time to its ack; closes once
/// everything is written or acknowledged. Returns the frames resent.
async fn one_client(
    load: ClientLoad,
    index: usize,
    histogram: Arc<Mutex<hdrhistogram::Histogram<u64>>>,
) -> anyhow::Result<u64> {
    let node = format!("bench-{index}");
    let client = Client::start(client_config(&load, &node))?;
    // seq -> send time, oldest first; bounded by the outbox (a frame
    // leaves when acknowledged).
    let sent: Arc<Mutex<VecDeque<(u64, Instant)>>> = Arc::default();
    let watcher = load.ack.then(|| {
        let mut acked = client.watch_acked();
        let sent = sent.clone();
        let histogram = histogram.clone();
        tokio::spawn(async move {
            while acked.changed().await.is_ok() {
                let upto = *acked.borrow_and_update();
                let now = Instant::now();
                let mut sent = sent.lock().unwrap_or_else(|e| e.into_inner());
                let mut h = histogram.lock().unwrap_or_else(|e| e.into_inner());
                while sent.front().is_some_and(|&(seq, _)| seq <= upto) {
                    if let Some((_, at)) = sent.pop_front() {
                        let _ = h.record(now.duration_since(at).as_nanos() as u64);
                    }
                }
            }
        })
    });
    let period = (load.rate > 0).then(|| Duration::from_secs_f64(1.0 / load.rate as f64));
    let mut tick = period.map(|p| {
        let mut t = tokio::time::interval(p);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    for k in 0..load.frames {
        if let Some(tick) = &mut tick {
            tick.tick().await;
        }
        let frame = frames::detection(&node, k, load.size);
        if load.ack {
            // The client numbers from 1: frame k is seq k + 1.
            sent.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back((k + 1, Instant::now()));
        }
        client.send(frame).await?;
    }
    client.close(Duration::from_secs(300)).await?;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    Ok(client.counters().resent)
}

/// The client's memory per unacknowledged MiB.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxMemory {
    /// Frame payload bytes.
    pub size: usize,
    /// Bytes of frames accepted and not acknowledged at the measurement.
    pub unacked_bytes: u64,
    /// Frames in the outbox.
    pub unacked_frames: u64,
    /// Resident memory of this process before the client started, KiB.
    pub rss_before_kib: u64,
    /// ... and with the outbox full, KiB.
    pub rss_full_kib: u64,
    /// (rss_full - rss_before) / unacked MiB.
    pub kib_per_unacked_mib: f64,
}

impl OutboxMemory {
    /// A short table.
    pub fn table(&self) -> String {
        format!(
            "outbox memory: {} frames of {} B unacknowledged = {:.1} MiB; RSS {} -> {} KiB: {:.0} KiB per unacknowledged MiB\n",
            self.unacked_frames,
            self.size,
            self.unacked_bytes as f64 / 1048576.0,
            self.rss_before_kib,
            self.rss_full_kib,
            self.kib_per_unacked_mib,
        )
    }
}

/// Fills one acknowledging client's outbox (`max_unacked` bytes) against
/// a server in this process that reads everything and never acknowledges,
/// and compares this process's resident memory before and after.
pub async fn outbox_memory(size: usize, max_unacked: usize) -> anyhow::Result<OutboxMemory> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sink = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    let rss_before_kib = crate::idle::rss_kib(std::process::id())?;
    let load = ClientLoad {
        to: addr.to_string(),
        conns: 1,
        frames: 0,
        size,
        rate: 0,
        token: None,
        ack: true,
        max_unacked,
    };
    let client = Client::start(ClientConfig {
        outbox_policy: OutboxPolicy::Fail,
        ..client_config(&load, "bench-1")
    })?;
    let mut k = 0;
    loop {
        match client.try_send(frames::detection("bench-1", k, size)) {
            Ok(()) => k += 1,
            Err(framehub::ClientError::Full) => break,
            Err(e) => return Err(e.into()),
        }
    }
    // Let the driver write what it took, so the frames sit in the
    // unacknowledged list rather than the queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_full_kib = crate::idle::rss_kib(std::process::id())?;
    let c = client.counters();
    drop(client);
    sink.abort();
    let mib = c.bytes_unacked as f64 / 1048576.0;
    Ok(OutboxMemory {
        size,
        unacked_bytes: c.bytes_unacked,
        unacked_frames: c.unacked,
        rss_before_kib,
        rss_full_kib,
        kib_per_unacked_mib: (rss_full_kib.saturating_sub(rss_before_kib)) as f64
            / mib.max(f64::MIN_POSITIVE),
    })
}

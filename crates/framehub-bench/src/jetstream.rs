//! The reference JetStream publisher: the frames of a load run published
//! straight into a stream with async-nats, with publish acknowledgements
//! and a bound on the acks in flight, the way a program written for NATS
//! would. `framehub serve` with a `nats` sink is measured against it
//! (`bench/nats_sink.sh`): the same frames, subjects and headers, so the
//! difference is what framehub costs.
//!
//! One NATS connection (the daemon's sink has one too) and `publishers`
//! tasks: by default one per simulated device connection, each publishing
//! its node's frames in order on `framehub.<listener>.<node>`; with fewer,
//! each task takes its share of the connections and publishes their frames
//! in turn (which of one task and one per connection is faster varied
//! from run to run: `bench/nats_sink.sh` runs both). One task collects the
//! acks. The bound on acks in flight is shared by all publishers and
//! defaults to the sink's own default (`max_acks_in_flight`, 4096), kept by
//! async-nats's JetStream context: a publish waits for a permit, an ack
//! returns it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use bytes::Bytes;
use framehub::nats::JetStreamConfig;
use framehub::nats::sink::{
    HEADER_CONN, HEADER_INSTANCE, HEADER_LISTENER, HEADER_NODE, HEADER_PEER, HEADER_RECEIVED_AT,
};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;
use tokio::sync::{Barrier, mpsc};

use crate::frames;
use crate::load::Load;
use crate::{mbps, per_sec};

/// Payloads generated per connection before the clock starts; longer runs
/// publish them again (every message keeps its own `Nats-Msg-Id`).
const BLOCK_FRAMES: usize = 2048;

/// The bound on acks in flight the daemon's `nats` sink uses by default.
pub fn default_max_acks_in_flight() -> usize {
    JetStreamConfig::default().max_acks_in_flight
}

/// One reference run's settings.
#[derive(Debug, Clone)]
pub struct JetStreamLoad {
    /// The NATS server (`nats://127.0.0.1:4222`).
    pub server: String,
    /// The stream: created when missing (file storage, one replica, the
    /// sink's default duplicate window) with the subjects
    /// `framehub.<listener>.>`; an existing one is used as it is.
    pub stream: String,
    /// The listener token of the subjects, as the daemon's would be.
    pub listener: String,
    /// Connections, nodes, frames per connection, size. A frame count is
    /// required; `rate` and `duration` do not apply.
    pub load: Load,
    /// Publisher tasks sharing the connections (at most one per
    /// connection; 0: one per connection).
    pub publishers: usize,
    /// Publishes waiting for their ack, at most (all publishers together).
    pub max_acks_in_flight: usize,
    /// Send the headers the sink sends (source, receive time,
    /// `Nats-Msg-Id`); `false`: the bare frame, the cheapest publish.
    pub headers: bool,
    /// How long a publish may wait for its ack before it counts as failed.
    pub ack_timeout: Duration,
}

/// What a reference run did.
#[derive(Debug, Clone, Serialize)]
pub struct JetStreamReport {
    /// Always `jetstream`.
    pub target: String,
    /// The stream.
    pub stream: String,
    /// Simulated connections (nodes' frame sequences).
    pub conns: usize,
    /// Publisher tasks sharing them.
    pub publishers: usize,
    /// Nodes.
    pub nodes: usize,
    /// Payload size.
    pub size: usize,
    /// The bound on acks in flight.
    pub max_acks_in_flight: usize,
    /// Whether the sink's headers were sent.
    pub headers: bool,
    /// Frames published.
    pub frames_sent: u64,
    /// Frames JetStream acknowledged.
    pub frames_acked: u64,
    /// Of those, frames it already held (a duplicate `Nats-Msg-Id`).
    pub duplicates: u64,
    /// Publishes that failed or were not acknowledged in time.
    pub errors: u64,
    /// Messages the stream gained during the run (its count after minus
    /// before).
    pub stored: u64,
    /// Seconds from the first publish to the last ack.
    pub acked_secs: f64,
    /// Frames acknowledged per second over that time.
    pub acked_fps: f64,
    /// Payload megabytes (10^6) acknowledged per second.
    pub acked_mbps: f64,
}

impl JetStreamReport {
    /// A human-readable table.
    pub fn table(&self) -> String {
        format!(
            "target             jetstream (stream {}, {} acks in flight at most, headers {})\n\
             connections        {} ({} nodes) from {} publisher tasks, {} B frames\n\
             acked              {} of {} frames in {:.3} s: {:.0} frames/s, {:.1} MB/s\n\
             stored             {} (duplicates {}, errors {})\n",
            self.stream,
            self.max_acks_in_flight,
            if self.headers { "on" } else { "off" },
            self.conns,
            self.nodes,
            self.publishers,
            self.size,
            self.frames_acked,
            self.frames_sent,
            self.acked_secs,
            self.acked_fps,
            self.acked_mbps,
            self.stored,
            self.duplicates,
            self.errors,
        )
    }
}

/// What the collector counted.
#[derive(Default)]
struct Acked {
    frames: u64,
    duplicates: u64,
    errors: u64,
    last: Option<Instant>,
}

/// Publishes the load into the stream and waits for every ack.
pub async fn run(cfg: JetStreamLoad) -> anyhow::Result<JetStreamReport> {
    let frames_per_conn = cfg
        .load
        .frames
        .context("the reference publisher needs a frame count")?;
    anyhow::ensure!(cfg.load.rate == 0, "the reference publisher has no --rate");
    let max_in_flight = cfg.max_acks_in_flight.max(1);
    let client = async_nats::ConnectOptions::new()
        .name("framehub bench jetstream")
        .connect(cfg.server.as_str())
        .await
        .with_context(|| format!("connecting to {}", cfg.server))?;
    let js = jetstream::ContextBuilder::new()
        .timeout(cfg.ack_timeout)
        .max_ack_inflight(max_in_flight)
        .backpressure_on_inflight(true)
        .build(client.clone());
    let before = ensure_stream(&js, &cfg).await?;

    let conns = cfg.load.conns.max(1);
    let publishers = match cfg.publishers {
        0 => conns,
        n => n.min(conns),
    };
    let barrier = Arc::new(Barrier::new(publishers + 1));
    // The permits bound what is in flight; the channel only hands the ack
    // futures over and never holds more than they allow.
    let (acks_tx, acks_rx) = mpsc::channel::<PublishAckFuture>(max_in_flight);
    let collector = tokio::spawn(collect(acks_rx));
    let boot = fastrand::u64(..);
    let sent = Arc::new(AtomicU64::new(0));
    let mut shares: Vec<Vec<Connection>> = (0..publishers).map(|_| Vec::new()).collect();
    for conn in 0..conns {
        let node = cfg.load.node_of(conn);
        // Generated before the clock starts, as the TCP generator does.
        let count = frames_per_conn.clamp(1, BLOCK_FRAMES as u64) as usize;
        let first = (conn as u64) << 32;
        let payloads: Vec<Bytes> = (0..count)
            .map(|i| Bytes::from(frames::detection(&node, first + i as u64, cfg.load.size)))
            .collect();
        shares[conn % publishers].push(Connection {
            subject: async_nats::Subject::from(format!("framehub.{}.{node}", cfg.listener)),
            base: cfg
                .headers
                .then(|| source_headers(&cfg.listener, &node, conn)),
            first,
            payloads,
        });
    }
    let mut tasks = Vec::with_capacity(publishers);
    for share in shares {
        let publisher = Publisher {
            js: js.clone(),
            conns: share,
            boot,
            frames: frames_per_conn,
        };
        let barrier = barrier.clone();
        let acks = acks_tx.clone();
        let sent = sent.clone();
        let progress = cfg.load.progress.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            publisher.run(&acks, &sent, progress.as_deref()).await
        }));
    }
    drop(acks_tx);
    barrier.wait().await;
    let start = Instant::now();
    let first_error = crate::load::first_error(tasks).await;
    let acked = collector.await.context("ack collector")?;
    if let Some(e) = first_error {
        return Err(e);
    }
    let after = stream_messages(&js, &cfg.stream).await?;
    let elapsed = acked.last.map_or(Duration::ZERO, |t| t - start);
    Ok(JetStreamReport {
        target: "jetstream".to_owned(),
        stream: cfg.stream.clone(),
        conns,
        publishers,
        nodes: cfg.load.nodes,
        size: cfg.load.size,
        max_acks_in_flight: max_in_flight,
        headers: cfg.headers,
        frames_sent: sent.load(Ordering::Relaxed),
        frames_acked: acked.frames,
        duplicates: acked.duplicates,
        errors: acked.errors,
        stored: after.saturating_sub(before),
        acked_secs: elapsed.as_secs_f64(),
        acked_fps: per_sec(acked.frames, elapsed),
        acked_mbps: mbps(acked.frames * cfg.load.size as u64, elapsed),
    })
}

/// One simulated connection: its node's subject, headers and frames.
struct Connection {
    subject: async_nats::Subject,
    /// The source headers of every message, or none.
    base: Option<HeaderMap>,
    /// Message ids are `<boot>-<first + i>`: unique within the run.
    first: u64,
    payloads: Vec<Bytes>,
}

/// One publisher task: its connections' frames, one of each in turn.
struct Publisher {
    js: jetstream::Context,
    conns: Vec<Connection>,
    boot: u64,
    frames: u64,
}

impl Publisher {
    async fn run(
        self,
        acks: &mpsc::Sender<PublishAckFuture>,
        sent: &AtomicU64,
        progress: Option<&AtomicU64>,
    ) -> anyhow::Result<()> {
        // The receive time changes per read in the daemon; here it is
        // formatted again once per this many frames.
        const TIME_EVERY: u64 = 64;
        let mut time = String::new();
        for i in 0..self.frames {
            if i % TIME_EVERY == 0 {
                time = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
            }
            for c in &self.conns {
                let payload = c.payloads[(i % c.payloads.len() as u64) as usize].clone();
                let mut publish = jetstream::message::PublishMessage::build().payload(payload);
                if let Some(base) = &c.base {
                    let mut headers = base.clone();
                    headers.insert(HEADER_RECEIVED_AT, time.as_str());
                    let id = format!("{:016x}-{}", self.boot, c.first + i);
                    headers.insert("Nats-Msg-Id", id.as_str());
                    publish = publish.headers(headers);
                }
                // Waits for a permit while `max_acks_in_flight` acks are out.
                let ack = self
                    .js
                    .send_publish(c.subject.clone(), publish)
                    .await
                    .with_context(|| format!("publishing on {}", c.subject))?;
                sent.fetch_add(1, Ordering::Relaxed);
                if let Some(p) = progress {
                    p.fetch_add(1, Ordering::Relaxed);
                }
                acks.send(ack)
                    .await
                    .map_err(|_| anyhow::anyhow!("the ack collector stopped"))?;
            }
        }
        Ok(())
    }
}

/// The headers the daemon's sink puts on a frame of this node and
/// connection (the receive time and message id are added per frame).
fn source_headers(listener: &str, node: &str, conn: usize) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(HEADER_LISTENER, listener);
    h.insert(HEADER_NODE, node);
    h.insert(HEADER_CONN, (conn + 1).to_string().as_str());
    h.insert(
        HEADER_PEER,
        format!("127.0.0.1:{}", 40_000 + conn % 20_000).as_str(),
    );
    h.insert(HEADER_INSTANCE, "bench:1");
    h
}

/// Awaits every ack handed over, until the publishers are done.
async fn collect(mut rx: mpsc::Receiver<PublishAckFuture>) -> Acked {
    let mut out = Acked::default();
    let mut pending = FuturesUnordered::new();
    let mut open = true;
    while open || !pending.is_empty() {
        tokio::select! {
            ack = rx.recv(), if open => match ack {
                Some(ack) => pending.push(ack.into_future()),
                None => open = false,
            },
            Some(result) = pending.next(), if !pending.is_empty() => {
                match result {
                    Ok(ack) => {
                        out.frames += 1;
                        if ack.duplicate {
                            out.duplicates += 1;
                        }
                    }
                    Err(e) => {
                        if out.errors == 0 {
                            tracing::warn!("JetStream publish not acknowledged: {e}");
                        }
                        out.errors += 1;
                    }
                }
                out.last = Some(Instant::now());
            }
        }
    }
    out
}

/// Finds or creates the stream; its message count now.
async fn ensure_stream(js: &jetstream::Context, cfg: &JetStreamLoad) -> anyhow::Result<u64> {
    let defaults = JetStreamConfig::default();
    let mut s = js
        .get_or_create_stream(stream::Config {
            name: cfg.stream.clone(),
            subjects: vec![format!("framehub.{}.>", cfg.listener)],
            storage: stream::StorageType::File,
            num_replicas: 1,
            duplicate_window: defaults.duplicate_window,
            description: Some("framehub bench: the reference publisher".to_owned()),
            ..stream::Config::default()
        })
        .await
        .with_context(|| format!("stream {:?}", cfg.stream))?;
    Ok(s.info().await?.state.messages)
}

async fn stream_messages(js: &jetstream::Context, name: &str) -> anyhow::Result<u64> {
    let mut s = js
        .get_stream(name)
        .await
        .with_context(|| format!("stream {name:?}"))?;
    Ok(s.info().await?.state.messages)
}

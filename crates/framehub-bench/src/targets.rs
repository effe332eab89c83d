//! What receives the load, and the run that ties generator and receiver
//! together: the hub in process with a consumer draining every receiver,
//! the ceiling server, a NATS subscriber, or a remote server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use framehub::codec::FramingConfig;
use framehub::{AuthConfig, Hub, HubConfig, ListenerConfig, NodesConfig, Protocol, Receiver};
use merge::Histograms;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::frames;
use crate::load::{self, Load, Wire};
use crate::{Latency, Report, mbps, per_sec};

/// Where the load goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// A hub in this process, with a consumer draining every receiver.
    Inproc,
    /// A server in this process that only counts newlines (or bytes).
    Ceiling,
    /// nats-server at this address: publishers on `det.<node>`, one
    /// subscriber on `det.>` in this process.
    Nats(SocketAddr),
    /// A running framehub (or anything else) at this address.
    Remote(SocketAddr),
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Inproc => "inproc",
            Target::Ceiling => "ceiling",
            Target::Nats(_) => "nats",
            Target::Remote(_) => "remote",
        }
    }
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// What to send.
    pub load: Load,
    /// Framing (`lines` means the node protocol).
    pub framing: FramingConfig,
    /// Token of the node protocol.
    pub token: Option<String>,
    /// Where to send.
    pub target: Target,
    /// Capacity of each receiver's queue (in-process hub).
    pub queue_capacity: usize,
    /// TLS to the hub (in process or remote).
    pub tls: Option<crate::tls::BenchTls>,
}

/// Frames and payload bytes received, and when the last one came.
#[derive(Default)]
pub(crate) struct Delivery {
    pub(crate) frames: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

impl Delivery {
    pub(crate) fn add(&self, frames: u64, bytes: u64) {
        self.frames.fetch_add(frames, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Send-time latency histograms, merged from every consumer task.
pub(crate) mod merge {
    use std::sync::Mutex;

    use hdrhistogram::Histogram;

    /// Consumers record locally and merge once at the end.
    #[derive(Default)]
    pub(crate) struct Histograms(Mutex<Option<Histogram<u64>>>);

    impl Histograms {
        pub(crate) fn new_local() -> Histogram<u64> {
            // 1 ns .. 100 s at 3 significant digits: constant, valid bounds.
            Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
        }

        pub(crate) fn merge(&self, local: &Histogram<u64>) {
            let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
            match all.as_mut() {
                Some(h) => {
                    let _ = h.add(local);
                }
                None => *all = Some(local.clone()),
            }
        }

        pub(crate) fn take(&self) -> Option<Histogram<u64>> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
        }
    }
}

/// Records the latency of every frame whose send time it can read.
pub(crate) fn record_latency(h: &mut hdrhistogram::Histogram<u64>, epoch: Instant, payload: &[u8]) {
    if let Some(sent) = frames::read_sent(payload) {
        let now = epoch.elapsed().as_nanos() as u64;
        let _ = h.record(now.saturating_sub(sent).max(1));
    }
}

struct FramehubWire {
    framing: FramingConfig,
    token: Option<String>,
}

impl Wire for FramehubWire {
    fn preamble(&self, node: &str) -> Vec<u8> {
        match (&self.framing, &self.token) {
            (FramingConfig::Lines, Some(token)) => frames::hello(node, token),
            _ => Vec::new(),
        }
    }
    fn wrap(&self, _node: &str, payload: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
        frames::encode(&self.framing, payload, out)
    }
}

/// Runs the load against the target and reports.
pub async fn run(cfg: BenchConfig) -> anyhow::Result<Report> {
    let epoch = Instant::now();
    let delivery = Arc::new(Delivery::default());
    let histograms = Arc::new(Histograms::default());
    let mut hub = None;
    let (addr, wire): (SocketAddr, Arc<dyn Wire>) = match &cfg.target {
        Target::Inproc => {
            let h = start_hub(&cfg, delivery.clone(), histograms.clone(), epoch).await?;
            let addr = h.local_addr();
            hub = Some(h);
            (addr, framehub_wire(&cfg))
        }
        Target::Ceiling => {
            let addr = start_ceiling(&cfg.framing, delivery.clone()).await?;
            let wire = Arc::new(FramehubWire {
                framing: cfg.framing.clone(),
                token: None,
            });
            (addr, wire)
        }
        Target::Nats(addr) => {
            crate::nats::subscribe(
                *addr,
                delivery.clone(),
                histograms.clone(),
                epoch,
                cfg.load.rate > 0,
            )
            .await?;
            (*addr, Arc::new(crate::nats::NatsWire))
        }
        Target::Remote(addr) => (*addr, framehub_wire(&cfg)),
    };

    let tls = cfg
        .tls
        .as_ref()
        .map(|t| crate::tls::Connector::new(t, addr))
        .transpose()?;
    let start = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let start_slot = start.clone();
    let load = cfg.load.clone();
    let generator = tokio::spawn(async move {
        load::run(addr, tls.as_ref(), &load, wire, epoch, move |t| {
            *start_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        })
        .await
    });

    let measures_delivery = !matches!(cfg.target, Target::Remote(_));
    let mut last_count = 0;
    let mut last_bytes = 0;
    let mut last_change = Instant::now();
    let mut sent = None;
    let mut generator = Some(generator);
    loop {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if let Some(g) = generator.as_ref()
            && g.is_finished()
            && let Some(g) = generator.take()
        {
            sent = Some(g.await.context("generator")??);
        }
        let count = delivery.frames.load(Ordering::Relaxed);
        // The ceiling counts only bytes for binary framings: progress is
        // either.
        let bytes = delivery.bytes.load(Ordering::Relaxed);
        if count != last_count || bytes != last_bytes {
            last_count = count;
            last_bytes = bytes;
            last_change = Instant::now();
        }
        if let Some(s) = &sent {
            let done = match expected_deliveries(&cfg, s) {
                Some(expected) => count >= expected,
                None => bytes >= s.wire_bytes,
            };
            if !measures_delivery || done || last_change.elapsed() > Duration::from_secs(3) {
                break;
            }
        }
    }
    let sent = sent.unwrap_or_default();
    let start = start
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(epoch);
    let drops_counted = match &hub {
        Some(h) => {
            let c = h.counters();
            h.shutdown().await;
            Some(c.dropped_total())
        }
        None => None,
    };
    // Consumers merge their histograms as they end.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let latency = histograms.take().as_ref().and_then(Latency::from_histogram);
    let delivered_frames = match (&cfg.target, &cfg.framing) {
        // The ceiling counted bytes for binary framings: convert.
        (Target::Ceiling, f) if !ceiling_counts_frames(f) => {
            let per = sent.wire_bytes / sent.frames.max(1);
            delivery.bytes.load(Ordering::Relaxed) / per.max(1)
        }
        _ => last_count,
    };
    let delivery_secs = last_change.saturating_duration_since(start);
    let payload_per_frame = sent.payload_bytes / sent.frames.max(1);
    Ok(Report {
        target: cfg.target.name().to_owned(),
        framing: cfg.framing.name().to_owned(),
        conns: cfg.load.conns,
        nodes: cfg.load.nodes,
        size: cfg.load.size,
        frames_sent: sent.frames,
        send_secs: sent.elapsed.as_secs_f64(),
        sent_fps: per_sec(sent.frames, sent.elapsed),
        sent_mbps: mbps(sent.payload_bytes, sent.elapsed),
        frames_delivered: measures_delivery.then_some(delivered_frames),
        delivery_secs: measures_delivery.then_some(delivery_secs.as_secs_f64()),
        delivered_fps: measures_delivery.then(|| per_sec(delivered_frames, delivery_secs)),
        delivered_mbps: measures_delivery
            .then(|| mbps(delivered_frames * payload_per_frame, delivery_secs)),
        drops: match drops_counted {
            Some(d) => Some(d),
            None => measures_delivery.then(|| sent.frames.saturating_sub(delivered_frames)),
        },
        latency,
    })
}

/// Frames the receiver should count; `None` when it counts only bytes
/// (the ceiling with a binary framing).
fn expected_deliveries(cfg: &BenchConfig, sent: &load::Sent) -> Option<u64> {
    match (&cfg.target, &cfg.framing) {
        (Target::Ceiling, f) if !ceiling_counts_frames(f) => None,
        _ => Some(sent.frames),
    }
}

fn framehub_wire(cfg: &BenchConfig) -> Arc<dyn Wire> {
    Arc::new(FramehubWire {
        framing: cfg.framing.clone(),
        token: cfg.token.clone(),
    })
}

async fn start_hub(
    cfg: &BenchConfig,
    delivery: Arc<Delivery>,
    histograms: Arc<Histograms>,
    epoch: Instant,
) -> anyhow::Result<Hub> {
    let node = cfg.framing == FramingConfig::Lines;
    let listener = ListenerConfig {
        bind: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        framing: cfg.framing.clone(),
        protocol: if node { Protocol::Node } else { Protocol::Raw },
        max_frame_bytes: framehub::ByteSize(cfg.load.size.max(1 << 20) * 2),
        queue: framehub::QueueConfig {
            capacity: cfg.queue_capacity,
            ..framehub::QueueConfig::default()
        },
        auth: AuthConfig {
            token: if node { cfg.token.clone() } else { None },
            ..AuthConfig::default()
        },
        tls: match cfg.tls.as_ref().and_then(|t| t.server.clone()) {
            Some((cert, key)) => framehub::TlsConfig {
                cert: Some(cert),
                key: Some(key),
                ..framehub::TlsConfig::default()
            },
            None if cfg.tls.is_some() => {
                anyhow::bail!("TLS in process needs --tls-cert and --tls-key for the hub")
            }
            None => framehub::TlsConfig::default(),
        },
        ..ListenerConfig::default()
    };
    let hub = Hub::start(HubConfig {
        listener: vec![listener],
        nodes: NodesConfig {
            auto_provision: true,
            max_nodes: cfg.load.nodes.max(1024),
            ..NodesConfig::default()
        },
        ..HubConfig::default()
    })
    .await?;
    let latency = cfg.load.rate > 0;
    let spawn_consumer = {
        let delivery = delivery.clone();
        let histograms = histograms.clone();
        move |r: Receiver| {
            tokio::spawn(consume(
                r,
                delivery.clone(),
                histograms.clone(),
                epoch,
                latency,
            ));
        }
    };
    if let Some(r) = hub.listener_receiver("default") {
        spawn_consumer(r);
    }
    if let Some(mut new_nodes) = hub.new_nodes() {
        tokio::spawn(async move {
            while let Some(r) = new_nodes.recv().await {
                spawn_consumer(r);
            }
        });
    }
    Ok(hub)
}

/// Drains one receiver in batches, counting, until the hub shuts down.
async fn consume(
    r: Receiver,
    delivery: Arc<Delivery>,
    histograms: Arc<Histograms>,
    epoch: Instant,
    latency: bool,
) {
    let mut batch = Vec::with_capacity(4096);
    let mut h = Histograms::new_local();
    loop {
        batch.clear();
        let n = r.recv_many(&mut batch, 4096).await;
        if n == 0 {
            break;
        }
        let bytes: usize = batch.iter().map(|f| f.payload.len()).sum();
        if latency {
            for f in &batch {
                record_latency(&mut h, epoch, &f.payload);
            }
        }
        delivery.add(n as u64, bytes as u64);
    }
    if latency {
        histograms.merge(&h);
    }
}

/// Whether the ceiling counts frames (newlines) rather than bytes: `lines`,
/// and `json`, whose encoder ends each value with a newline.
fn ceiling_counts_frames(framing: &FramingConfig) -> bool {
    matches!(framing, FramingConfig::Lines | FramingConfig::Json(_))
}

/// The ceiling: accepts connections and only counts newlines (or bytes for
/// binary framings) with 1 MiB reads: what loopback allows for this load.
async fn start_ceiling(
    framing: &FramingConfig,
    delivery: Arc<Delivery>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let count_lines = ceiling_counts_frames(framing);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let delivery = delivery.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let lines = if count_lines {
                                memchr::memchr_iter(b'\n', &buf[..n]).count() as u64
                            } else {
                                0
                            };
                            delivery.add(lines, n as u64);
                        }
                    }
                }
            });
        }
    });
    Ok(addr)
}

//! The load generator: N connections, each writing pre-generated frames of
//! its node, as fast as possible or at a fixed rate with send times patched
//! in for latency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::Barrier;

use crate::frames::{self, Block};
use crate::tls::{Conn, Connector};

/// Frames generated per connection before the clock starts; larger runs
/// send the block again (timestamps keep changing, so dedup drops none).
const BLOCK_FRAMES: usize = 2048;

/// How each connection frames and introduces itself.
pub trait Wire: Send + Sync + 'static {
    /// Bytes written once after connecting (authentication, CONNECT).
    fn preamble(&self, node: &str) -> Vec<u8>;
    /// Frames one payload of `node` for the wire.
    fn wrap(&self, node: &str, payload: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()>;
}

/// What to send.
#[derive(Debug, Clone)]
pub struct Load {
    /// Connections.
    pub conns: usize,
    /// Distinct nodes (connections are spread over them).
    pub nodes: usize,
    /// Frames per connection; `None` with a duration.
    pub frames: Option<u64>,
    /// How long to send when no frame count is given.
    pub duration: Duration,
    /// Payload size in bytes.
    pub size: usize,
    /// Frames per second per connection; 0 = as fast as possible.
    pub rate: u64,
    /// Also counts the frames written here, as they go (a progress line).
    pub progress: Option<Arc<AtomicU64>>,
}

impl Load {
    /// The node of connection `i` (`node-1`..).
    pub fn node_of(&self, conn: usize) -> String {
        format!("node-{}", conn % self.nodes.max(1) + 1)
    }
}

/// What the generator did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent {
    /// Frames written.
    pub frames: u64,
    /// Payload bytes written (without framing).
    pub payload_bytes: u64,
    /// Wire bytes written.
    pub wire_bytes: u64,
    /// From the start signal to the last write.
    pub elapsed: Duration,
}

struct Counters {
    frames: AtomicU64,
    payload_bytes: AtomicU64,
    wire_bytes: AtomicU64,
}

/// Connects every connection, writes the preambles, then starts the clock
/// (`started` is called with the start instant) and sends.
pub async fn run(
    addr: SocketAddr,
    tls: Option<&Connector>,
    load: &Load,
    wire: Arc<dyn Wire>,
    epoch: Instant,
    started: impl FnOnce(Instant),
) -> anyhow::Result<Sent> {
    let barrier = Arc::new(Barrier::new(load.conns + 1));
    let counters = Arc::new(Counters {
        frames: AtomicU64::new(0),
        payload_bytes: AtomicU64::new(0),
        wire_bytes: AtomicU64::new(0),
    });
    let mut tasks = Vec::with_capacity(load.conns);
    for conn in 0..load.conns {
        let node = load.node_of(conn);
        // Frames are generated here, before the clock starts.
        let count = load
            .frames
            .map_or(BLOCK_FRAMES, |n| n.min(BLOCK_FRAMES as u64) as usize);
        let block = Block::new(
            &node,
            (conn as u64) << 32,
            count.max(1),
            load.size,
            |p, out| wire.wrap(&node, p, out),
        )?;
        let mut stream = crate::tls::connect(addr, tls).await?;
        stream.write_all(&wire.preamble(&node)).await?;
        let barrier = barrier.clone();
        let counters = counters.clone();
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let result = if load.rate == 0 {
                flood(&mut stream, &block, &load, &counters).await
            } else {
                paced(&mut stream, block, &load, epoch, &counters).await
            };
            // Keep the connection open until the consumer drained it;
            // dropping it here is fine: the bytes are already in the kernel.
            result
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    started(start);
    let first_error = first_error(tasks).await;
    let elapsed = start.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(Sent {
        frames: counters.frames.load(Ordering::Relaxed),
        payload_bytes: counters.payload_bytes.load(Ordering::Relaxed),
        wire_bytes: counters.wire_bytes.load(Ordering::Relaxed),
        elapsed,
    })
}

async fn flood(stream: &mut Conn, block: &Block, load: &Load, c: &Counters) -> anyhow::Result<()> {
    let per_block = block.ends.len() as u64;
    let deadline = Instant::now() + load.duration;
    let mut sent = 0u64;
    loop {
        let left = match load.frames {
            Some(total) if sent >= total => break,
            Some(total) => total - sent,
            None if Instant::now() >= deadline => break,
            None => per_block,
        };
        let (bytes, frames, payload) = if left >= per_block {
            (&block.bytes[..], per_block, block.payload_bytes as u64)
        } else {
            let end = block.ends[left as usize - 1];
            let payload = block.payload_bytes as u64 * left / per_block;
            (&block.bytes[..end], left, payload)
        };
        stream.write_all(bytes).await?;
        sent += frames;
        c.frames.fetch_add(frames, Ordering::Relaxed);
        if let Some(p) = &load.progress {
            p.fetch_add(frames, Ordering::Relaxed);
        }
        c.payload_bytes.fetch_add(payload, Ordering::Relaxed);
        c.wire_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    }
    // TLS may still hold the last records.
    stream.flush().await?;
    Ok(())
}

/// Writes the frames due every millisecond, each stamped with its send time
/// (nanoseconds since `epoch`) right before the write.
async fn paced(
    stream: &mut Conn,
    mut block: Block,
    load: &Load,
    epoch: Instant,
    c: &Counters,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let deadline = start + load.duration;
    let per_frame = block.payload_bytes as u64 / block.ends.len().max(1) as u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = 0u64;
    let mut next = 0usize;
    loop {
        tick.tick().await;
        let now = Instant::now();
        if load.frames.is_some_and(|t| sent >= t) || (load.frames.is_none() && now >= deadline) {
            break;
        }
        let due = (now - start).as_nanos() as u64 * load.rate / 1_000_000_000 + 1;
        let due = load.frames.map_or(due, |t| due.min(t));
        while sent < due {
            let begin = if next == 0 { 0 } else { block.ends[next - 1] };
            let end = block.ends[next];
            let nanos = epoch.elapsed().as_nanos() as u64;
            frames::patch_sent(&mut block.bytes, block.sent_at[next], nanos);
            stream.write_all(&block.bytes[begin..end]).await?;
            stream.flush().await?;
            c.frames.fetch_add(1, Ordering::Relaxed);
            if let Some(p) = &load.progress {
                p.fetch_add(1, Ordering::Relaxed);
            }
            c.payload_bytes.fetch_add(per_frame, Ordering::Relaxed);
            c.wire_bytes
                .fetch_add((end - begin) as u64, Ordering::Relaxed);
            sent += 1;
            next = (next + 1) % block.ends.len();
        }
    }
    Ok(())
}

/// Waits for every task; the first error of a task, or its panic, if any.
pub(crate) async fn first_error(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
) -> Option<anyhow::Error> {
    let mut first = None;
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first.get_or_insert(e);
            }
            Err(e) => {
                first.get_or_insert(e.into());
            }
        }
    }
    first
}

//! The fan-in: every frame a hub delivers (from every node's receiver,
//! present and auto-provisioned later, every `raw` listener's receiver and
//! every group stream) in one bounded stream of batches, as a daemon's
//! sinks take them ([`crate::Hub::all_frames`]).
//!
//! One task per source moves frames on in batches: a receiver's
//! `recv_many` (one lock per batch) and one channel send per batch, never
//! per frame. A consumer may have each batch converted on the way
//! ([`crate::Hub::all_frames_map`]): the conversion runs in those tasks,
//! on the runtime's threads, so per-frame work such as encoding records
//! is spread over the cores instead of done by the one consumer. The channel is bounded in batches; when the consumer falls
//! behind, the tasks wait, the sources fill, and each applies its own
//! overflow policy: `drop-*` drops (counted), `block` stops reading the
//! sockets so TCP pushes back on the senders.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::group::Groups;
use crate::receiver::{Frame, Receiver};
use crate::router::NewNodes;

/// How [`crate::Hub::all_frames`] batches and bounds its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllFramesConfig {
    /// The most frames taken from one receiver at once (one batch). A group
    /// stream's groups are batches as they are.
    pub batch: usize,
    /// Batches waiting for the consumer; past this, sources fill and their
    /// overflow policies apply.
    pub queue: usize,
}

impl Default for AllFramesConfig {
    /// 1024 frames per batch, 64 batches waiting.
    fn default() -> AllFramesConfig {
        AllFramesConfig {
            batch: 1024,
            queue: 64,
        }
    }
}

/// [`crate::Hub::all_frames`] needs the stream of auto-provisioned nodes
/// (to follow nodes that appear later), and it was already taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the new-node stream was already taken (by Hub::new_nodes or an earlier Hub::all_frames)")]
pub struct NewNodesTaken;

/// What the fan-in drains, gathered by the hub.
pub(crate) struct Sources {
    /// Every node known when the fan-in starts.
    pub(crate) nodes: Vec<Receiver>,
    /// Every `raw` listener's receiver.
    pub(crate) raw: Vec<Receiver>,
    /// Every group stream.
    pub(crate) groups: Vec<Groups>,
    /// Nodes auto-provisioned from now on (and any announced already).
    pub(crate) new_nodes: NewNodes,
}

/// Converts a batch in the fan-in's tasks, before it is queued.
type Map<T> = Arc<dyn Fn(Vec<Frame>) -> T + Send + Sync>;

/// Starts one task per source (and one that follows new nodes), each
/// sending batches of frames, converted by `map`, into `tx` until its
/// source ends (the hub shut down and it is drained) or the receiving side
/// is gone. Must run inside a Tokio runtime; the tasks run on it.
pub(crate) fn spawn<T: Send + 'static>(
    sources: Sources,
    batch: usize,
    tx: mpsc::Sender<T>,
    map: Map<T>,
) {
    let batch = batch.max(1);
    let mut known = HashMap::new();
    for receiver in sources.nodes {
        known.insert(receiver.name().to_owned(), receiver.clone());
        tokio::spawn(drain(receiver, batch, tx.clone(), map.clone()));
    }
    for receiver in sources.raw {
        tokio::spawn(drain(receiver, batch, tx.clone(), map.clone()));
    }
    for groups in sources.groups {
        tokio::spawn(drain_groups(groups, tx.clone(), map.clone()));
    }
    tokio::spawn(follow_new_nodes(sources.new_nodes, known, batch, tx, map));
}

/// Moves a receiver's frames on in batches until it ends (the hub shut
/// down and it is drained) or the receiving side is gone.
async fn drain<T>(receiver: Receiver, batch: usize, tx: mpsc::Sender<T>, map: Map<T>) {
    loop {
        // Allocated by `recv_many` once frames are there, at their number:
        // an idle node holds no batch buffer.
        let mut frames: Vec<Frame> = Vec::new();
        if receiver.recv_many(&mut frames, batch).await == 0 {
            return;
        }
        if tx.send(map(frames)).await.is_err() {
            tracing::debug!(
                source = receiver.name(),
                "all-frames stream dropped; stop draining"
            );
            return;
        }
    }
}

/// Moves each group on as one batch until the stream ends or the receiving
/// side is gone.
async fn drain_groups<T>(groups: Groups, tx: mpsc::Sender<T>, map: Map<T>) {
    while let Some(group) = groups.recv().await {
        if tx.send(map(group.frames)).await.is_err() {
            tracing::debug!(
                listener = groups.listener(),
                "all-frames stream dropped; stop draining"
            );
            return;
        }
    }
}

/// Drains every node auto-provisioned from now on, until the hub shuts
/// down. `known` holds the nodes drained already: one provisioned just
/// before the fan-in started is both known and announced, and a second
/// task on its receiver would reorder its frames. A node of that name
/// provisioned again after an eviction has a queue of its own: drained.
async fn follow_new_nodes<T: Send + 'static>(
    mut new_nodes: NewNodes,
    mut known: HashMap<String, Receiver>,
    batch: usize,
    tx: mpsc::Sender<T>,
    map: Map<T>,
) {
    while let Some(receiver) = new_nodes.recv().await {
        if tx.is_closed() {
            return;
        }
        // Announced once at most, so a match is needed only once.
        if known
            .remove(receiver.name())
            .is_some_and(|k| k.same_queue(&receiver))
        {
            continue;
        }
        tokio::spawn(drain(receiver, batch, tx.clone(), map.clone()));
    }
}

/// Every frame a hub delivers, in batches, from [`crate::Hub::all_frames`]:
/// frames of one source come in the order that source delivered them;
/// sources interleave by batch. Ends (`None`, 0) once the hub shut down
/// and every source is drained.
///
/// Dropping it stops the fan-in at each source's next batch, which is
/// lost; the sources then fill and apply their overflow policies.
///
/// ```no_run
/// # async fn demo(hub: framehub::Hub) -> Result<(), framehub::NewNodesTaken> {
/// let mut all = hub.all_frames(framehub::AllFramesConfig::default())?;
/// while let Some(batch) = all.recv().await {
///     for frame in &batch {
///         println!("{} bytes from {}", frame.payload.len(), frame.source.peer);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AllFrames {
    rx: mpsc::Receiver<Vec<Frame>>,
    /// What is left of a batch that [`AllFrames::recv_many`] split.
    rest: std::vec::IntoIter<Frame>,
}

impl AllFrames {
    pub(crate) fn start(sources: Sources, config: AllFramesConfig) -> AllFrames {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        spawn(sources, config.batch, tx, Arc::new(|frames| frames));
        AllFrames {
            rx,
            rest: Vec::new().into_iter(),
        }
    }

    /// Waits for the next batch, as a source handed it over (no copy);
    /// `None` once the hub shut down and everything was handed out.
    pub async fn recv(&mut self) -> Option<Vec<Frame>> {
        if self.rest.len() > 0 {
            return Some(self.rest.by_ref().collect());
        }
        self.rx.recv().await
    }

    /// Waits for frames and appends up to `max` of them to `out`, returning
    /// how many; 0 means the hub shut down and everything was handed out.
    /// Takes every batch already waiting, up to `max`; an empty `out`
    /// with no allocation takes a whole batch without copying it.
    pub async fn recv_many(&mut self, out: &mut Vec<Frame>, max: usize) -> usize {
        let max = max.max(1);
        let mut added = 0;
        while added < max {
            if self.rest.len() == 0 {
                let next = if added == 0 {
                    self.rx.recv().await
                } else {
                    self.rx.try_recv().ok()
                };
                let Some(batch) = next else { break };
                if out.capacity() == 0 && batch.len() <= max {
                    *out = batch;
                    added = out.len();
                    continue;
                }
                self.rest = batch.into_iter();
            }
            let n = (max - added).min(self.rest.len());
            out.extend(self.rest.by_ref().take(n));
            added += n;
        }
        added
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use bytes::Bytes;

    use super::*;
    use crate::config::Protocol;
    use crate::receiver::Source;

    fn frame(n: u8) -> Frame {
        Frame {
            payload: Bytes::copy_from_slice(&[n]),
            received_at: SystemTime::UNIX_EPOCH,
            source: Arc::new(Source {
                conn: 1,
                peer: "127.0.0.1:1".parse().expect("addr"),
                listener: "l".into(),
                node: None,
                protocol: Protocol::Raw,
            }),
            seq: None,
        }
    }

    fn stream_of(batches: Vec<Vec<Frame>>) -> AllFrames {
        let (tx, rx) = mpsc::channel(batches.len().max(1));
        for b in batches {
            tx.try_send(b).expect("room");
        }
        AllFrames {
            rx,
            rest: Vec::new().into_iter(),
        }
    }

    fn payloads(frames: &[Frame]) -> Vec<u8> {
        frames.iter().map(|f| f.payload[0]).collect()
    }

    #[tokio::test]
    async fn recv_many_splits_and_joins_batches_in_order() {
        let mut all = stream_of(vec![
            vec![frame(1), frame(2), frame(3)],
            vec![frame(4)],
            vec![frame(5), frame(6)],
        ]);
        let mut out = Vec::with_capacity(8);
        assert_eq!(all.recv_many(&mut out, 2).await, 2);
        assert_eq!(payloads(&out), [1, 2]);
        out.clear();
        // The rest of the first batch, then whatever is waiting.
        assert_eq!(all.recv_many(&mut out, 3).await, 3);
        assert_eq!(payloads(&out), [3, 4, 5]);
        // A split batch's rest comes out of `recv` as one batch.
        assert_eq!(all.recv().await.map(|b| payloads(&b)), Some(vec![6]));
        // Every sender gone and everything handed out: the end.
        assert_eq!(all.recv_many(&mut out, 4).await, 0);
        assert!(all.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_whole_batch_moves_into_an_unallocated_vec() {
        let batch = vec![frame(1), frame(2)];
        let at = batch.as_ptr();
        let mut all = stream_of(vec![batch]);
        let mut out = Vec::new();
        assert_eq!(all.recv_many(&mut out, 1024).await, 2);
        assert_eq!(out.as_ptr(), at, "not copied");
    }
}

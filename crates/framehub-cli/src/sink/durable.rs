//! Group commit for acknowledged delivery: which chunks every durable sink
//! (each `file` sink) has made durable, and the acks that this releases.
//!
//! The sink thread numbers each chunk and records, per chunk, the last
//! sequence number of each node in it ([`Durability::emitted`]). A file
//! sink's sync thread reports the chunk its fsync covered
//! ([`Durability::synced`]); once every durable sink has reported a chunk,
//! its nodes are acknowledged through [`framehub::Acks`]: one ack per node
//! per sync, never before the sync. A sink that fails to write or sync
//! ([`Durability::failed`]) acknowledges nothing of what it had pending:
//! those nodes are rewound, and their clients send again.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use framehub::{Acks, Seq};
use parking_lot::Mutex;

/// The last sequence number of each node in one chunk.
pub type Marks = Arc<[(Arc<str>, Seq)]>;

/// Marks being gathered or released: each node once, its last number.
type MarkList = Vec<(Arc<str>, Seq)>;

/// Chunks waiting for their sync, at most: past this, the two oldest
/// entries are merged (their acks then wait for the later one's sync).
const MAX_PENDING: usize = 1024;

/// The sinks' common record of what is durable.
#[derive(Default)]
pub struct Durability {
    inner: Mutex<Inner>,
    acks: OnceLock<Acks>,
}

#[derive(Default)]
struct Inner {
    /// Per registered durable sink, the highest chunk it made durable.
    synced: Vec<u64>,
    /// Chunks emitted and not yet durable everywhere, oldest first.
    pending: VecDeque<(u64, MarkList)>,
}

impl Durability {
    /// A record shared by the sink thread and the sinks.
    pub fn new() -> Arc<Durability> {
        Arc::default()
    }

    /// Where acks go, once the hub is running (no frame comes before).
    pub fn set_acks(&self, acks: Acks) {
        let _ = self.acks.set(acks);
    }

    /// A durable sink joins: acks wait for its syncs. Returns its index.
    pub fn register(&self) -> usize {
        let mut inner = self.inner.lock();
        inner.synced.push(0);
        inner.synced.len() - 1
    }

    /// Chunk `no` (numbered from 1, increasing) holds `marks` and is being
    /// handed to the sinks. Without any durable sink it counts as durable
    /// once handed over.
    pub fn emitted(&self, no: u64, marks: &Marks) {
        if marks.is_empty() {
            return;
        }
        let release = {
            let mut inner = self.inner.lock();
            if inner.synced.is_empty() {
                marks.to_vec()
            } else {
                if inner.pending.len() >= MAX_PENDING
                    && let Some((_, older)) = inner.pending.pop_front()
                    && let Some((_, next)) = inner.pending.front_mut()
                {
                    merge(next, older);
                }
                inner.pending.push_back((no, marks.to_vec()));
                return;
            }
        };
        self.release(release);
    }

    /// Sink `sink` made every chunk up to `no` durable.
    pub fn synced(&self, sink: usize, no: u64) {
        let release = {
            let mut inner = self.inner.lock();
            let Some(mark) = inner.synced.get_mut(sink) else {
                return;
            };
            *mark = (*mark).max(no);
            let everywhere = inner.synced.iter().copied().min().unwrap_or(0);
            let mut release = Vec::new();
            while inner
                .pending
                .front()
                .is_some_and(|(chunk, _)| *chunk <= everywhere)
            {
                if let Some((_, marks)) = inner.pending.pop_front() {
                    merge(&mut release, marks);
                }
            }
            release
        };
        self.release(release);
    }

    /// Sink `sink` lost chunks it had not made durable (a write or a sync
    /// failed): nothing pending is acknowledged, and its nodes are rewound
    /// so their clients send it again.
    pub fn failed(&self, _sink: usize) {
        let lost: Vec<_> = {
            let mut inner = self.inner.lock();
            let mut nodes: MarkList = Vec::new();
            for (_, marks) in inner.pending.drain(..) {
                merge(&mut nodes, marks);
            }
            nodes
        };
        if let Some(acks) = self.acks.get() {
            for (node, _) in lost {
                acks.fail(&node);
            }
        }
    }

    fn release(&self, marks: MarkList) {
        if let Some(acks) = self.acks.get() {
            for (node, seq) in marks {
                acks.acknowledge(&node, seq);
            }
        }
    }
}

/// Adds `more` (later) to `into`: a node's later mark replaces its earlier.
fn merge(into: &mut MarkList, more: MarkList) {
    for (node, seq) in more {
        match into.iter_mut().find(|(n, _)| *n == node) {
            Some(entry) => entry.1 = seq,
            None => into.push((node, seq)),
        }
    }
}

/// Collects a chunk's marks as its records are encoded: frames of one node
/// come in runs, so the map is touched once per run, not per frame.
#[derive(Default)]
pub struct MarkCollector {
    marks: MarkList,
}

impl MarkCollector {
    /// Notes a frame of `node` numbered `seq`.
    pub fn note(&mut self, node: &Arc<str>, seq: Seq) {
        if let Some(last) = self.marks.last_mut()
            && Arc::ptr_eq(&last.0, node)
        {
            last.1 = seq;
            return;
        }
        match self.marks.iter_mut().find(|(n, _)| n == node) {
            Some(entry) => entry.1 = seq,
            None => self.marks.push((node.clone(), seq)),
        }
    }

    /// The marks of the chunk just cut, and a fresh start.
    pub fn take(&mut self) -> Marks {
        std::mem::take(&mut self.marks).into()
    }
}

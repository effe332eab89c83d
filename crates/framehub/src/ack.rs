//! Acknowledged delivery (`[listener.ack]`, issue 14): per node (or
//! `length` stream) the highest sequence number accepted (handed to the
//! consumers; anything at or below it is a `duplicate`) and the highest
//! durable (what the consumer acknowledged), and the connections bound to
//! it, which are told the durable one, cumulatively, whenever it rises.
//! [`Acks`] is the consumer's side: what a daemon's file sink calls after
//! its fsync, and what a library user calls once a frame is safe.
//!
//! A leaf below the connection and the hub: a connection registers how to
//! send an ack and how to close itself as closures, so nothing here knows
//! sockets, framings or listeners. The table is bounded; see
//! [`AckTable::stream`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};

use crate::frame::{Frame, Incoming, Seq};

/// How one bound connection is told an ack, and closed after a rewind.
pub(crate) struct Binding {
    pub(crate) conn: u64,
    /// Offers the ack of `seq` to the connection's egress (never waits).
    pub(crate) send: Box<dyn Fn(u64) + Send + Sync>,
    /// Closes the connection so that its client sends again from the
    /// last ack ([`crate::CloseReason::Rewound`]).
    pub(crate) close: Box<dyn Fn() + Send + Sync>,
}

/// What [`Stream::accept`] made of a frame's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// Above everything accepted: deliver it.
    Taken,
    /// At or below the accepted mark: a resend the server has.
    Duplicate,
    /// The connection belongs to a round that was rewound (it is being
    /// closed; its client sends the frame again).
    Stale,
}

/// What [`Stream::deliver_in_order`] took out of a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Filtered {
    /// At or below what the node's consumers already have: resends.
    pub(crate) duplicates: u64,
    /// Read in a round that was rewound since.
    pub(crate) stale: u64,
}

/// The accepted mark and the round it belongs to, changed together.
struct Marks {
    /// The highest sequence number handed to the consumers.
    accepted: u64,
    /// Raised by a rewind: acknowledgements of frames accepted before it
    /// are ignored, and connections of an earlier round accept nothing.
    epoch: u64,
}

/// One node's (or stream's) marks.
pub(crate) struct Stream {
    /// Taken once per frame by the connection bound to the node: a lock
    /// nobody else wants but a rewind.
    marks: Mutex<Marks>,
    /// The highest sequence number the consumers acknowledged.
    durable: AtomicU64,
    /// The connections bound now (usually one; a reconnect briefly
    /// overlaps the dead connection's last moments).
    bindings: Mutex<Vec<Binding>>,
}

impl Stream {
    fn new(durable: u64) -> Stream {
        Stream {
            marks: Mutex::new(Marks {
                accepted: durable,
                epoch: 0,
            }),
            durable: AtomicU64::new(durable),
            bindings: Mutex::new(Vec::new()),
        }
    }

    /// What a frame numbered `seq`, from a connection of round `epoch`,
    /// is as it is read: taken if it is above everything handed to the
    /// consumers so far. The mark is not raised here: it rises only when
    /// the frame is queued ([`Stream::deliver_in_order`]), since a frame
    /// read by one connection may still wait for room while the node's
    /// next connection delivers.
    pub(crate) fn check(&self, seq: u64, epoch: u64) -> Accepted {
        Self::verdict(&self.marks.lock(), seq, epoch)
    }

    fn verdict(marks: &Marks, seq: u64, epoch: u64) -> Accepted {
        if marks.epoch != epoch {
            Accepted::Stale
        } else if seq <= marks.accepted {
            Accepted::Duplicate
        } else {
            Accepted::Taken
        }
    }

    /// Takes `seq` if it is above everything accepted so far and raises
    /// the mark: [`Stream::check`] and the queueing in one step.
    #[cfg(test)]
    pub(crate) fn accept(&self, seq: u64, epoch: u64) -> Accepted {
        let mut marks = self.marks.lock();
        let verdict = Self::verdict(&marks, seq, epoch);
        if verdict == Accepted::Taken {
            marks.accepted = seq;
        }
        verdict
    }

    /// Hands a connection's numbered frames to the consumers in the node's
    /// order. Under the node's lock: frames at or below what was already
    /// handed over (by this or another connection of the node) are taken
    /// out of `batch` as duplicates, frames of a rewound round as stale;
    /// then `push` queues from the front of `batch` (what does not fit
    /// stays there), and the mark rises to the last frame it took.
    ///
    /// Why here and not as frames are read: after a silent network drop
    /// the node's old connection can hold a read's frames while it waits
    /// for room, and the client's new connection sends those frames and
    /// later ones; had the old connection raised the mark as it read, the
    /// new one's later frames would be queued first and the old ones after
    /// them, out of order.
    pub(crate) fn deliver_in_order<T>(
        &self,
        batch: &mut Vec<Incoming>,
        push: impl FnOnce(&mut Vec<Incoming>) -> T,
    ) -> (T, Filtered) {
        let mut marks = self.marks.lock();
        let mut filtered = Filtered::default();
        batch.retain(|item| match item.frame.seq {
            None => true,
            Some(seq) => match Self::verdict(&marks, seq.value(), seq.epoch()) {
                Accepted::Taken => true,
                Accepted::Duplicate => {
                    filtered.duplicates += 1;
                    false
                }
                Accepted::Stale => {
                    filtered.stale += 1;
                    false
                }
            },
        });
        // Numbers rise within a connection's batch, so what `push` took is
        // everything below the first numbered frame it left.
        let last = batch.iter().rev().find_map(|i| i.frame.seq);
        let out = push(batch);
        let taken = match batch.iter().find_map(|i| i.frame.seq) {
            Some(first_left) => first_left.value().checked_sub(1),
            None => last.map(|s| s.value()),
        };
        if let Some(taken) = taken
            && taken > marks.accepted
        {
            marks.accepted = taken;
        }
        (out, filtered)
    }

    /// The round frames accepted now belong to.
    pub(crate) fn epoch(&self) -> u64 {
        self.marks.lock().epoch
    }

    pub(crate) fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Registers a connection and tells it at once where the server
    /// stands (when `always`, or when something is durable already).
    pub(crate) fn bind(&self, binding: Binding, always: bool) {
        let mut bindings = self.bindings.lock();
        let durable = self.durable();
        if always || durable > 0 {
            (binding.send)(durable);
        }
        bindings.push(binding);
    }

    pub(crate) fn unbind(&self, conn: u64) {
        self.bindings.lock().retain(|b| b.conn != conn);
    }

    fn is_idle(&self) -> bool {
        self.bindings.lock().is_empty()
    }

    /// Everything up to `seq` is durable: raises the mark and tells the
    /// bound connections, unless `seq` belongs to an earlier round.
    fn acknowledge(&self, seq: Seq) {
        let bindings = self.bindings.lock();
        if seq.epoch() != self.epoch() {
            return;
        }
        let value = seq.value();
        if self.durable.fetch_max(value, Ordering::AcqRel) >= value {
            return;
        }
        for b in bindings.iter() {
            (b.send)(value);
        }
    }

    /// Frames accepted and not yet durable were lost: accepted falls back
    /// to durable (so their resends are taken, not dropped as
    /// duplicates), acknowledgements of the lost round are ignored from now
    /// on, and the bound connections are closed so their clients resend.
    pub(crate) fn rewind(&self) {
        let bindings = self.bindings.lock();
        {
            let mut marks = self.marks.lock();
            marks.epoch += 1;
            marks.accepted = self.durable();
        }
        for b in bindings.iter() {
            (b.close)();
        }
    }
}

/// Every node's and stream's marks, bounded by `capacity`.
pub(crate) struct AckTable {
    streams: RwLock<HashMap<Arc<str>, Arc<Stream>>>,
    capacity: usize,
}

impl AckTable {
    /// A table for at most `capacity` nodes and streams, starting from the
    /// durable marks a consumer recovered (a file sink's file, at start).
    pub(crate) fn new(capacity: usize, recovered: impl IntoIterator<Item = (String, u64)>) -> Self {
        let streams = recovered
            .into_iter()
            .take(capacity)
            .map(|(name, durable)| (Arc::from(name), Arc::new(Stream::new(durable))))
            .collect();
        AckTable {
            streams: RwLock::new(streams),
            capacity,
        }
    }

    fn get(&self, name: &str) -> Option<Arc<Stream>> {
        self.streams.read().get(name).cloned()
    }

    /// The marks of `name`, created when new. When the table is full, a
    /// node with no connection bound is forgotten to make room (a later
    /// resend of its frames is then written again: at-least-once); `None`
    /// when every entry has a connection.
    pub(crate) fn stream(&self, name: &Arc<str>) -> Option<Arc<Stream>> {
        if let Some(s) = self.get(name) {
            return Some(s);
        }
        let mut streams = self.streams.write();
        if let Some(s) = streams.get(name) {
            return Some(s.clone());
        }
        if streams.len() >= self.capacity {
            let idle = streams
                .iter()
                .find(|(_, s)| Arc::strong_count(s) == 1 && s.is_idle())
                .map(|(n, _)| n.clone())?;
            tracing::debug!(evicted = %idle, "acknowledgement table full; forgetting an idle node");
            streams.remove(&idle);
        }
        let s = Arc::new(Stream::new(0));
        streams.insert(name.clone(), s.clone());
        Some(s)
    }
}

/// The consumer's side of acknowledged delivery: says which frames are
/// safe, so the server can acknowledge them to their clients. Cheap to
/// clone; from [`crate::Hub::acks`].
///
/// Acknowledgements are cumulative per node: acknowledging a frame says
/// every earlier frame of its node is safe too, so a consumer acknowledges
/// in the order it received frames (a receiver's or the fan-in's order),
/// after it made them safe, never before.
///
/// ```no_run
/// # async fn demo(hub: framehub::Hub) {
/// let acks = hub.acks();
/// let radar3 = hub.receiver("radar3");
/// while let Some(frame) = radar3.recv().await {
///     // ... store the frame somewhere safe, then:
///     acks.acknowledge_frame(&frame);
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct Acks {
    table: Weak<AckTable>,
}

impl std::fmt::Debug for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acks").finish_non_exhaustive()
    }
}

impl Acks {
    pub(crate) fn new(table: &Arc<AckTable>) -> Acks {
        Acks {
            table: Arc::downgrade(table),
        }
    }

    /// Every frame of `node` up to `seq` is safe: the node's connections
    /// are told (one ack per call at most, and only when the mark rises).
    /// Ignored for a frame accepted before a [`Acks::fail`] of its node.
    pub fn acknowledge(&self, node: &str, seq: Seq) {
        if let Some(s) = self.table.upgrade().and_then(|t| t.get(node)) {
            s.acknowledge(seq);
        }
    }

    /// [`Acks::acknowledge`] for one frame (nothing if it has no sequence
    /// number or no node).
    pub fn acknowledge_frame(&self, frame: &Frame) {
        if let (Some(node), Some(seq)) = (&frame.source.node, frame.seq) {
            self.acknowledge(node, seq);
        }
    }

    /// [`Acks::acknowledge`] for a batch, in order: one acknowledgement
    /// per node, for its last frame.
    pub fn acknowledge_frames(&self, frames: &[Frame]) {
        let mut last: Vec<(&Arc<str>, Seq)> = Vec::new();
        for frame in frames {
            if let (Some(node), Some(seq)) = (&frame.source.node, frame.seq) {
                match last
                    .iter_mut()
                    .find(|(n, _)| Arc::ptr_eq(n, node) || n == &node)
                {
                    Some(entry) => entry.1 = seq,
                    None => last.push((node, seq)),
                }
            }
        }
        for (node, seq) in last {
            self.acknowledge(node, seq);
        }
    }

    /// The consumer lost frames of `node` it had not acknowledged (a sink
    /// failed to write or sync them): the server takes their resends again
    /// and closes the node's connections so that their clients send
    /// everything not acknowledged again (at-least-once: what did reach
    /// the consumer comes twice).
    pub fn fail(&self, node: &str) {
        if let Some(s) = self.table.upgrade().and_then(|t| t.get(node)) {
            tracing::warn!(
                node,
                durable = s.durable(),
                "frames lost before they were durable; closing the node's connections so they are sent again"
            );
            s.rewind();
        }
    }

    /// The highest durable sequence number of `node`, if it is known.
    pub fn durable(&self, node: &str) -> Option<u64> {
        self.table
            .upgrade()
            .and_then(|t| t.get(node))
            .map(|s| s.durable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn binding(conn: u64, sent: &Arc<Mutex<Vec<u64>>>, closed: &Arc<AtomicBool>) -> Binding {
        let sent = sent.clone();
        let closed = closed.clone();
        Binding {
            conn,
            send: Box::new(move |n| sent.lock().push(n)),
            close: Box::new(move || closed.store(true, Ordering::Relaxed)),
        }
    }

    #[test]
    fn accepted_dedups_durable_acks_cumulatively_and_a_rewind_starts_a_new_round() {
        let table = Arc::new(AckTable::new(4, [("r".to_owned(), 10)]));
        let acks = Acks::new(&table);
        let s = table.stream(&Arc::from("r")).expect("room");
        assert_eq!(s.accept(10, 0), Accepted::Duplicate, "recovered as durable");
        assert_eq!(s.accept(11, 0), Accepted::Taken);
        assert_eq!(s.accept(15, 0), Accepted::Taken);
        assert_eq!(s.accept(12, 0), Accepted::Duplicate);
        let sent = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicBool::new(false));
        s.bind(binding(1, &sent, &closed), false);
        assert_eq!(*sent.lock(), [10], "the ack on bind");
        let e0 = s.epoch();
        acks.acknowledge("r", Seq::new(11, e0));
        acks.acknowledge("r", Seq::new(11, e0));
        acks.acknowledge("r", Seq::new(9, e0));
        assert_eq!(*sent.lock(), [10, 11], "only a rise is told");
        acks.fail("r");
        assert!(closed.load(Ordering::Relaxed));
        assert_eq!(acks.durable("r"), Some(11));
        // A frame of the lost round is not acknowledged; its resend is
        // taken again and is.
        acks.acknowledge("r", Seq::new(15, e0));
        assert_eq!(*sent.lock(), [10, 11]);
        assert_eq!(
            s.accept(16, e0),
            Accepted::Stale,
            "the old round accepts nothing"
        );
        assert_eq!(
            s.accept(12, s.epoch()),
            Accepted::Taken,
            "fell back to durable"
        );
        acks.acknowledge("r", Seq::new(12, s.epoch()));
        assert_eq!(*sent.lock(), [10, 11, 12]);
        s.unbind(1);
        assert!(s.is_idle());
    }

    #[test]
    fn the_table_is_bounded_and_forgets_only_idle_nodes() {
        let table = AckTable::new(2, []);
        let a = table.stream(&Arc::from("a")).expect("room");
        let b = table.stream(&Arc::from("b")).expect("room");
        assert!(table.stream(&Arc::from("c")).is_none(), "both in use");
        drop(b);
        assert!(table.stream(&Arc::from("c")).is_some(), "b was idle");
        assert!(table.get("b").is_none());
        assert!(Arc::ptr_eq(
            &a,
            &table.stream(&Arc::from("a")).expect("kept")
        ));
    }
}

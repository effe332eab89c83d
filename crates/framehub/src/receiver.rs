//! The bounded per-source queue and the [`Receiver`] a consumer reads it with:
//! overflow policy, timestamp dedup, health, close.
//!
//! Producers (connection tasks) push a whole read's worth of frames under one
//! lock; consumers wait on a [`Notify`]. Nothing here grows past the
//! configured capacity, except a raw listener's fair queue ([`lanes`]),
//! which holds less than twice it.

mod lanes;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use futures_core::Stream;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::ReusableBoxFuture;

use crate::config::{OverflowPolicy, QueueConfig};
use crate::frame::Incoming;
pub use crate::frame::{Frame, Source};
use crate::json::short_eq;
use crate::stats::WarnLimiter;
use lanes::Lanes;
pub(crate) use lanes::lane_of;

/// Compares each frame's dedup key with the previous keyed frame of the
/// batch, before the queue's lock is taken: under the lock only a batch's
/// first keyed frame is compared (with the queue's last key), and the key is
/// stored once per batch instead of once per frame.
fn mark_repeats(batch: &mut [Incoming]) {
    let mut prev: Option<usize> = None;
    for i in 0..batch.len() {
        let Some(key) = batch[i].key() else { continue };
        let repeats = prev
            .and_then(|p| batch[p].key())
            .is_some_and(|p| short_eq(p, key));
        batch[i].repeats = repeats;
        prev = Some(i);
    }
}

/// Counts of what happened to frames offered to one queue.
#[derive(Debug, Default)]
pub(crate) struct QueueCounters {
    pub(crate) enqueued: AtomicU64,
    pub(crate) dropped_oldest: AtomicU64,
    pub(crate) dropped_newest: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) dropped_closed: AtomicU64,
}

/// A snapshot of a queue's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Frames accepted into the queue.
    pub enqueued: u64,
    /// Frames dropped because the queue was full (oldest or newest).
    pub dropped_full: u64,
    /// Frames skipped because their timestamp repeated the previous one.
    pub duplicates: u64,
    /// Frames dropped because the receiver was closed.
    pub dropped_closed: u64,
    /// Frames waiting in the queue now.
    pub depth: usize,
    /// When the read carrying the last accepted frame completed.
    pub last_frame_at: Option<SystemTime>,
}

struct State {
    frames: VecDeque<Frame>,
    /// A raw listener's queue: frames in one lane per connection instead
    /// of `frames`, served round-robin.
    lanes: Option<Lanes>,
    /// Raw bytes of the last accepted frame's timestamp (dedup key).
    last_timestamp: Vec<u8>,
    has_last_timestamp: bool,
    /// `received_at` of the last accepted frame.
    last_frame_at: Option<SystemTime>,
    /// When the queue was created or its last connection ended: with
    /// `last_frame_at`, how long the node has been idle.
    last_unbound: SystemTime,
    /// No consumer wants more: pushes are dropped.
    closed: bool,
    /// No producer will push again: consumers drain and then see the end.
    finished: bool,
}

impl State {
    /// Frames waiting.
    fn len(&self) -> usize {
        match &self.lanes {
            Some(lanes) => lanes.len(),
            None => self.frames.len(),
        }
    }

    /// Whether a batch's keyed frame repeats the key before it: for the
    /// batch's first keyed frame the queue's last key, after that the
    /// previous keyed frame's (as [`mark_repeats`] found).
    fn repeats(&self, item: &Incoming, key: &[u8], first_keyed: &mut bool) -> bool {
        if std::mem::take(first_keyed) {
            self.has_last_timestamp && short_eq(&self.last_timestamp, key)
        } else {
            item.repeats
        }
    }
}

/// The shared state behind a [`Receiver`].
pub(crate) struct Queue {
    name: Arc<str>,
    config: QueueConfig,
    state: Mutex<State>,
    readable: Notify,
    writable: Notify,
    /// Connections currently bound to this source.
    connections: AtomicUsize,
    pub(crate) counters: QueueCounters,
    /// Queue-full warnings, at most one per period per queue.
    pub(crate) full_warning: WarnLimiter,
}

/// What a push did, for the caller's counters and flow control.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PushOutcome {
    pub(crate) enqueued: usize,
    pub(crate) dropped_full: usize,
    pub(crate) duplicates: usize,
    pub(crate) dropped_closed: usize,
    /// The queue is at least half full after this push.
    pub(crate) filling: bool,
    /// Groups this push published (group streams only).
    pub(crate) groups_published: usize,
}

impl Queue {
    pub(crate) fn new(name: Arc<str>, config: QueueConfig) -> Arc<Queue> {
        Queue::build(name, config, None)
    }

    /// A queue fair to the connections that push to it (a raw listener's,
    /// where any peer may connect): each gets a share of the capacity and
    /// consumers take round-robin, so a flooder loses only its own frames.
    pub(crate) fn fair(name: Arc<str>, config: QueueConfig) -> Arc<Queue> {
        Queue::build(name, config, Some(Lanes::default()))
    }

    fn build(name: Arc<str>, config: QueueConfig, lanes: Option<Lanes>) -> Arc<Queue> {
        Arc::new(Queue {
            name,
            config,
            state: Mutex::new(State {
                // Grows with use: a node that never sends (or only sends
                // heartbeats) costs no frame storage.
                frames: VecDeque::new(),
                lanes,
                last_timestamp: Vec::new(),
                has_last_timestamp: false,
                last_frame_at: None,
                last_unbound: SystemTime::now(),
                closed: false,
                finished: false,
            }),
            readable: Notify::new(),
            writable: Notify::new(),
            connections: AtomicUsize::new(0),
            counters: QueueCounters::default(),
            full_warning: WarnLimiter::new(Duration::from_secs(5)),
        })
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub(crate) fn policy(&self) -> OverflowPolicy {
        self.config.overflow
    }

    /// Pushes frames from the front of `batch` under one lock. With the
    /// `block` policy, or when `may_drop` is false, frames that do not fit
    /// stay in `batch` and the caller waits for [`Queue::has_room`] before
    /// trying again; otherwise the drop policy makes room.
    pub(crate) fn push(&self, batch: &mut Vec<Incoming>, may_drop: bool) -> PushOutcome {
        let mut out = PushOutcome::default();
        if batch.is_empty() {
            return out;
        }
        let mut state = self.state.lock();
        if state.closed || state.finished {
            out.dropped_closed = batch.len();
            batch.clear();
            drop(state);
            self.counters
                .dropped_closed
                .fetch_add(out.dropped_closed as u64, Ordering::Relaxed);
            return out;
        }
        let dedup = self.config.dedup;
        if dedup {
            mark_repeats(batch);
        }
        let limit = if may_drop && self.config.overflow != OverflowPolicy::Block {
            batch.len()
        } else {
            self.fits_without_blocking(&state, batch)
        };
        // The key stored for the next batch: the last keyed frame's, copied
        // once.
        let last_keyed = if dedup {
            batch[..limit].iter().rposition(|i| i.timestamp.is_some())
        } else {
            None
        };
        let mut first_keyed = true;
        for (i, item) in batch.drain(..limit).enumerate() {
            if let Some(key) = item.key().filter(|_| dedup) {
                let duplicate = state.repeats(&item, key, &mut first_keyed);
                if Some(i) == last_keyed {
                    state.last_timestamp.clear();
                    state.last_timestamp.extend_from_slice(key);
                    state.has_last_timestamp = true;
                }
                if duplicate {
                    out.duplicates += 1;
                    continue;
                }
            }
            let state = &mut *state;
            if let Some(lanes) = &mut state.lanes {
                let (lane, received_at) = (lanes::lane_of(&item.frame), item.frame.received_at);
                let offered =
                    lanes.offer(lane, item.frame, self.config.capacity, self.config.overflow);
                out.dropped_full += offered.dropped;
                if offered.enqueued {
                    out.enqueued += 1;
                    state.last_frame_at = Some(received_at);
                }
                continue;
            }
            if state.frames.len() >= self.config.capacity {
                if self.config.overflow == OverflowPolicy::DropNewest {
                    out.dropped_full += 1;
                    continue;
                }
                // DropOldest; Block never gets here thanks to `limit`.
                state.frames.pop_front();
                out.dropped_full += 1;
            }
            state.frames.push_back(item.frame);
            out.enqueued += 1;
        }
        out.filling = state.len() * 2 >= self.config.capacity;
        if out.enqueued > 0 && state.lanes.is_none() {
            state.last_frame_at = state.frames.back().map(|f| f.received_at);
        }
        drop(state);
        if out.enqueued > 0 {
            self.readable.notify_one();
        }
        let c = &self.counters;
        c.enqueued.fetch_add(out.enqueued as u64, Ordering::Relaxed);
        if out.duplicates > 0 {
            c.duplicates
                .fetch_add(out.duplicates as u64, Ordering::Relaxed);
        }
        if out.dropped_full > 0 {
            let counter = match self.config.overflow {
                OverflowPolicy::DropNewest => &c.dropped_newest,
                _ => &c.dropped_oldest,
            };
            counter.fetch_add(out.dropped_full as u64, Ordering::Relaxed);
        }
        out
    }

    /// How many leading frames of `batch` the queue takes without exceeding
    /// its capacity: duplicates take no room.
    fn fits_without_blocking(&self, state: &State, batch: &[Incoming]) -> usize {
        let mut free = match (&state.lanes, batch.first()) {
            // A batch is one connection's read.
            (Some(lanes), Some(first)) => {
                lanes.room_for(lanes::lane_of(&first.frame), self.config.capacity)
            }
            _ => self.config.capacity.saturating_sub(state.len()),
        };
        if free >= batch.len() {
            // Fits even if nothing is a duplicate: no need to look.
            return batch.len();
        }
        let mut first_keyed = true;
        for (i, item) in batch.iter().enumerate() {
            if let Some(key) = item.key().filter(|_| self.config.dedup) {
                let duplicate = state.repeats(item, key, &mut first_keyed);
                if duplicate {
                    continue;
                }
            }
            if free == 0 {
                return i;
            }
            free -= 1;
        }
        batch.len()
    }

    /// Waits until the queue has room for `n` frames of lane `conn` (a
    /// connection, or an acknowledged stream: [`lane_of`])
    /// (or for all it can hold, or its share of a fair queue, if `n` is
    /// more), or is closed.
    pub(crate) async fn has_room(&self, conn: u64, n: usize) {
        let capacity = self.config.capacity;
        loop {
            let notified = self.writable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.state.lock();
                let (room, wanted) = match &state.lanes {
                    Some(lanes) => (
                        lanes.room_for(conn, capacity),
                        lanes.wanted(conn, n, capacity),
                    ),
                    None => (
                        capacity - state.frames.len().min(capacity),
                        n.min(capacity).max(1),
                    ),
                };
                if room >= wanted || state.closed || state.finished {
                    return;
                }
            }
            notified.await;
        }
    }

    /// How long a producer facing a full queue waits for room before the
    /// drop policy applies.
    pub(crate) fn full_grace(&self) -> Duration {
        self.config.full_grace
    }

    pub(crate) fn connection_bound(&self) {
        self.connections.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn connection_unbound(&self) {
        let mut state = self.state.lock();
        state.last_unbound = SystemTime::now();
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    /// How long the queue has had no connection, no frame waiting and no
    /// frame pushed, as of `now`; `None` if it has any of these.
    pub(crate) fn idle_for(&self, now: SystemTime) -> Option<Duration> {
        let state = self.state.lock();
        if self.connections.load(Ordering::Acquire) > 0 || state.len() > 0 {
            return None;
        }
        let last = state
            .last_frame_at
            .map_or(state.last_unbound, |f| f.max(state.last_unbound));
        Some(now.duration_since(last).unwrap_or_default())
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.connections.load(Ordering::Acquire) > 0
    }

    /// No producer will push again: wake consumers so they drain and stop.
    pub(crate) fn finish(&self) {
        self.state.lock().finished = true;
        self.readable.notify_waiters();
        self.readable.notify_one();
        self.writable.notify_waiters();
    }

    pub(crate) fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        let dropped = state.frames.len() + state.lanes.as_mut().map_or(0, Lanes::clear);
        state.frames.clear();
        drop(state);
        self.counters
            .dropped_closed
            .fetch_add(dropped as u64, Ordering::Relaxed);
        self.readable.notify_waiters();
        self.readable.notify_one();
        self.writable.notify_waiters();
    }

    pub(crate) fn stats(&self) -> QueueStats {
        let c = &self.counters;
        let (depth, last_frame_at) = {
            let state = self.state.lock();
            (state.len(), state.last_frame_at)
        };
        QueueStats {
            enqueued: c.enqueued.load(Ordering::Relaxed),
            dropped_full: c.dropped_oldest.load(Ordering::Relaxed)
                + c.dropped_newest.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            dropped_closed: c.dropped_closed.load(Ordering::Relaxed),
            depth,
            last_frame_at,
        }
    }

    /// Takes up to `max` frames into `out`; `Err(())` once the queue is
    /// closed or finished and empty.
    fn take(&self, out: &mut impl Take, max: usize) -> Result<usize, ()> {
        let mut state = self.state.lock();
        let n = state.len().min(max);
        if n == 0 {
            return if state.closed || state.finished {
                Err(())
            } else {
                Ok(0)
            };
        }
        match &mut state.lanes {
            Some(lanes) => {
                lanes.take(n, out);
            }
            None => out.take_from(&mut state.frames, n),
        }
        let more = state.len() > 0;
        drop(state);
        if more {
            // Another consumer of the same source may be waiting.
            self.readable.notify_one();
        }
        // Producers may wait for room (block, or the grace before a drop).
        self.writable.notify_waiters();
        Ok(n)
    }

    async fn recv_many(&self, out: &mut impl Take, max: usize) -> usize {
        loop {
            let notified = self.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.take(out, max) {
                Ok(0) => notified.await,
                Ok(n) => return n,
                Err(()) => return 0,
            }
        }
    }
}

/// Where frames taken from a queue go: a consumer's `Vec`, or the one slot
/// of `recv()`.
trait Take: Extend<Frame> {
    /// Moves the first `n` frames out of `frames` (under the queue's lock).
    fn take_from(&mut self, frames: &mut VecDeque<Frame>, n: usize);
}

impl Take for Vec<Frame> {
    fn take_from(&mut self, frames: &mut VecDeque<Frame>, n: usize) {
        if self.is_empty() && n == frames.len() && self.capacity() >= n {
            // All of them into an empty buffer that can hold them: swap the
            // storage instead of moving every frame while producers wait for
            // the lock. The consumer's empty buffer becomes the queue's, so
            // no memory is added; producers push from its start, so the
            // conversion back is O(1) unless drop-oldest wrapped the ring.
            let spare = VecDeque::from(std::mem::take(self));
            *self = Vec::from(std::mem::replace(frames, spare));
        } else {
            self.extend(frames.drain(..n));
        }
    }
}

/// Where a single-frame receive puts its frame: no `Vec` allocated per
/// `recv()` call.
struct One(Option<Frame>);

impl Take for One {
    fn take_from(&mut self, frames: &mut VecDeque<Frame>, n: usize) {
        self.extend(frames.drain(..n));
    }
}

impl Extend<Frame> for One {
    fn extend<I: IntoIterator<Item = Frame>>(&mut self, frames: I) {
        for frame in frames {
            self.0 = Some(frame);
        }
    }
}

/// Why [`Receiver::try_recv`] returned no frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// No frame is waiting now.
    #[error("no frame waiting")]
    Empty,
    /// The receiver was closed or the hub shut down, and the queue is empty.
    #[error("receiver closed")]
    Closed,
}

/// Why [`Receiver::recv_timeout`] returned no frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvTimeoutError {
    /// No frame arrived within the timeout.
    #[error("timed out waiting for a frame")]
    Timeout,
    /// The receiver was closed or the hub shut down, and the queue is empty.
    #[error("receiver closed")]
    Closed,
}

/// The consumer's end of one source's queue (a node, or a raw listener).
///
/// Clones share the queue: each frame goes to one of them. A `Receiver` is also a
/// [`Stream`] of frames that ends where [`Receiver::recv`] returns `None`.
///
/// ```no_run
/// # async fn demo(hub: framehub::Hub) {
/// let radar3 = hub.receiver("radar3");
/// while let Some(frame) = radar3.recv().await {
///     println!("{} bytes from {}", frame.payload.len(), frame.source.peer);
/// }
/// # }
/// ```
///
/// ```no_run
/// use futures_util::StreamExt;
///
/// # async fn demo(hub: framehub::Hub) {
/// let mut big = hub.receiver("radar3").filter(|f| std::future::ready(f.payload.len() > 1000));
/// while let Some(frame) = big.next().await {
///     println!("{} bytes", frame.payload.len());
/// }
/// # }
/// ```
pub struct Receiver {
    queue: Arc<Queue>,
    /// The `Stream` impl's receive in progress.
    next: NextItem<Frame>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("name", &self.queue.name)
            .finish()
    }
}

impl Receiver {
    pub(crate) fn new(queue: Arc<Queue>) -> Receiver {
        Receiver {
            queue,
            next: NextItem::default(),
        }
    }

    /// The node (or listener) this receiver belongs to.
    pub fn name(&self) -> &str {
        &self.queue.name
    }

    /// Whether both receive from the same queue (a node evicted and
    /// provisioned again has a new one).
    pub(crate) fn same_queue(&self, other: &Receiver) -> bool {
        Arc::ptr_eq(&self.queue, &other.queue)
    }

    /// Waits for the next frame; `None` once closed or shut down and drained.
    pub async fn recv(&self) -> Option<Frame> {
        let mut one = One(None);
        self.queue.recv_many(&mut one, 1).await;
        one.0
    }

    /// Waits for frames and appends up to `max` of them to `out`, returning
    /// how many; 0 means closed or shut down and drained. One lock for the
    /// whole batch: the way to drain a busy source.
    pub async fn recv_many(&self, out: &mut Vec<Frame>, max: usize) -> usize {
        self.queue.recv_many(out, max.max(1)).await
    }

    /// Waits at most `timeout` for the next frame.
    pub async fn recv_timeout(&self, timeout: Duration) -> Result<Frame, RecvTimeoutError> {
        match tokio::time::timeout(timeout, self.recv()).await {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => Err(RecvTimeoutError::Closed),
            Err(_) => Err(RecvTimeoutError::Timeout),
        }
    }

    /// Takes the next frame if one is waiting.
    pub fn try_recv(&self) -> Result<Frame, TryRecvError> {
        let mut one = One(None);
        match self.queue.take(&mut one, 1) {
            Ok(_) => one.0.ok_or(TryRecvError::Empty),
            Err(()) => Err(TryRecvError::Closed),
        }
    }

    /// Whether the node has a live connection.
    pub fn is_healthy(&self) -> bool {
        self.queue.is_healthy()
    }

    /// Frames waiting now.
    pub fn len(&self) -> usize {
        self.queue.state.lock().len()
    }

    /// Whether no frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters of this receiver's queue.
    pub fn stats(&self) -> QueueStats {
        self.queue.stats()
    }

    /// Stops receiving: queued frames are discarded and later frames for this
    /// source are dropped and counted.
    pub fn close(&self) {
        self.queue.close();
    }
}

/// Another consumer of the same queue, with no receive in progress.
impl Clone for Receiver {
    fn clone(&self) -> Receiver {
        Receiver::new(self.queue.clone())
    }
}

/// [`Receiver::recv`] as a stream: the same frames, ending once the receiver is closed or the
/// hub shut down and the queue is drained. The pending receive is one allocation, made at the
/// first poll and reused for every frame after it.
impl Stream for Receiver {
    type Item = Frame;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let this = self.get_mut();
        this.next.poll(cx, || recv_owned(this.queue.clone()))
    }
}

/// The receive a `Stream` of receivers or groups has in progress, kept across polls: one
/// allocation, made at the first poll and reused for every item after it.
pub(crate) struct NextItem<T>(Mutex<Option<ReusableBoxFuture<'static, Option<T>>>>);

impl<T> Default for NextItem<T> {
    fn default() -> Self {
        NextItem(Mutex::new(None))
    }
}

impl<T: Send + 'static> NextItem<T> {
    /// Polls the receive in progress (started with `recv` at the first poll); once it is
    /// ready, the next one is started in the same allocation. The lock only keeps the
    /// handle `Sync`: with `&mut self` it is never taken.
    pub(crate) fn poll<F>(&mut self, cx: &mut Context<'_>, recv: impl Fn() -> F) -> Poll<Option<T>>
    where
        F: Future<Output = Option<T>> + Send + 'static,
    {
        let next = self
            .0
            .get_mut()
            .get_or_insert_with(|| ReusableBoxFuture::new(recv()));
        let item = ready!(next.poll(cx));
        next.set(recv());
        Poll::Ready(item)
    }
}

/// [`Receiver::recv`] on a queue the future owns, so that it can be kept across polls.
async fn recv_owned(queue: Arc<Queue>) -> Option<Frame> {
    let mut one = One(None);
    queue.recv_many(&mut one, 1).await;
    one.0
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use bytes::Bytes;

    use super::*;

    use crate::frame::test_source as source;

    fn incoming(payload: &'static str, ts: Option<Range<usize>>) -> Incoming {
        Incoming::new(
            Frame {
                payload: Bytes::from_static(payload.as_bytes()),
                received_at: SystemTime::now(),
                source: source(),
                seq: None,
            },
            ts,
        )
    }

    fn queue(capacity: usize, overflow: OverflowPolicy, dedup: bool) -> Arc<Queue> {
        Queue::new(
            "n".into(),
            QueueConfig {
                capacity,
                overflow,
                dedup,
                full_grace: Duration::ZERO,
            },
        )
    }

    fn payloads(r: &Receiver) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(f) = r.try_recv() {
            out.push(String::from_utf8(f.payload.to_vec()).expect("utf8"));
        }
        out
    }

    #[test]
    fn drop_oldest_keeps_the_newest() {
        let q = queue(2, OverflowPolicy::DropOldest, false);
        let mut batch = vec![
            incoming("a", None),
            incoming("b", None),
            incoming("c", None),
        ];
        let out = q.push(&mut batch, true);
        assert_eq!(out.enqueued, 3);
        assert_eq!(out.dropped_full, 1);
        assert!(batch.is_empty());
        let r = Receiver::new(q);
        assert_eq!(payloads(&r), ["b", "c"]);
        assert_eq!(r.stats().dropped_full, 1);
    }

    #[test]
    fn drop_newest_keeps_the_oldest() {
        let q = queue(2, OverflowPolicy::DropNewest, false);
        let mut batch = vec![
            incoming("a", None),
            incoming("b", None),
            incoming("c", None),
        ];
        q.push(&mut batch, true);
        assert_eq!(payloads(&Receiver::new(q)), ["a", "b"]);
    }

    #[test]
    fn block_leaves_the_rest_in_the_batch() {
        let q = queue(2, OverflowPolicy::Block, false);
        let mut batch = vec![
            incoming("a", None),
            incoming("b", None),
            incoming("c", None),
        ];
        let out = q.push(&mut batch, true);
        assert_eq!(out.enqueued, 2);
        assert_eq!(batch.len(), 1);
        let r = Receiver::new(q.clone());
        assert_eq!(payloads(&r), ["a", "b"]);
        q.push(&mut batch, true);
        assert_eq!(payloads(&r), ["c"]);
    }

    #[test]
    fn dedup_skips_an_unchanged_timestamp() {
        let q = queue(10, OverflowPolicy::DropOldest, true);
        let mut batch = vec![
            incoming("t=1a", Some(2..3)),
            incoming("t=1b", Some(2..3)),
            incoming("t=2", Some(2..3)),
            incoming("none", None),
        ];
        let out = q.push(&mut batch, true);
        assert_eq!(out.duplicates, 1);
        assert_eq!(payloads(&Receiver::new(q)), ["t=1a", "t=2", "none"]);
    }

    #[test]
    fn dedup_carries_the_last_key_across_batches() {
        let q = queue(10, OverflowPolicy::DropOldest, true);
        let r = Receiver::new(q.clone());
        // The batch ends with a duplicate: the key kept is still "2".
        let out = q.push(
            &mut vec![
                incoming("t=1", Some(2..3)),
                incoming("t=2a", Some(2..3)),
                incoming("none", None),
                incoming("t=2b", Some(2..3)),
            ],
            true,
        );
        assert_eq!(out.duplicates, 1);
        let out = q.push(
            &mut vec![
                incoming("t=2c", Some(2..3)),
                incoming("t=3", Some(2..3)),
                incoming("t=3b", Some(2..3)),
                incoming("t=1b", Some(2..3)),
            ],
            true,
        );
        assert_eq!(out.duplicates, 2);
        assert_eq!(payloads(&r), ["t=1", "t=2a", "none", "t=3", "t=1b"]);
    }

    #[test]
    fn dedup_of_a_remainder_compares_with_the_queue() {
        // Block policy, room for 2: the rest of the batch waits; meanwhile
        // another connection of the node pushes key "5".
        let q = queue(2, OverflowPolicy::Block, true);
        let r = Receiver::new(q.clone());
        let mut batch = vec![
            incoming("t=1", Some(2..3)),
            incoming("t=2", Some(2..3)),
            incoming("t=5", Some(2..3)),
            incoming("t=5b", Some(2..3)),
        ];
        assert_eq!(q.push(&mut batch, false).enqueued, 2);
        assert_eq!(batch.len(), 2);
        assert_eq!(payloads(&r), ["t=1", "t=2"]);
        q.push(&mut vec![incoming("t=5x", Some(2..3))], false);
        let out = q.push(&mut batch, false);
        assert_eq!((out.enqueued, out.duplicates), (0, 2));
        assert_eq!(payloads(&r), ["t=5x"]);
    }

    #[test]
    fn close_drops_and_ends() {
        let q = queue(10, OverflowPolicy::DropOldest, false);
        let r = Receiver::new(q.clone());
        q.push(&mut vec![incoming("a", None)], true);
        r.close();
        assert_eq!(r.try_recv().err(), Some(TryRecvError::Closed));
        let out = q.push(&mut vec![incoming("b", None)], true);
        assert_eq!(out.dropped_closed, 1);
        assert_eq!(r.stats().dropped_closed, 2);
    }

    #[tokio::test]
    async fn recv_many_hands_over_whole_queues_and_keeps_order() {
        let q = queue(8, OverflowPolicy::DropOldest, false);
        let r = Receiver::new(q.clone());
        let names = |v: &[Frame]| {
            v.iter()
                .map(|f| String::from_utf8_lossy(&f.payload).into_owned())
                .collect::<Vec<_>>()
        };
        // An empty buffer with room takes the queue's storage in one swap.
        q.push(&mut vec![incoming("a", None), incoming("b", None)], true);
        let mut out = Vec::with_capacity(16);
        assert_eq!(r.recv_many(&mut out, 16).await, 2);
        assert_eq!(names(&out), ["a", "b"]);
        // The queue works on with the buffer it was handed, past a wrap of
        // its ring (drop-oldest).
        let many: Vec<Incoming> = ["c", "d", "e", "f", "g", "h", "i", "j", "k", "l"]
            .into_iter()
            .map(|p| incoming(p, None))
            .collect();
        q.push(&mut { many }, true);
        out.clear();
        assert_eq!(r.recv_many(&mut out, 16).await, 8);
        assert_eq!(names(&out), ["e", "f", "g", "h", "i", "j", "k", "l"]);
        // A buffer that already holds frames, or has no room, is appended to.
        q.push(&mut vec![incoming("m", None), incoming("n", None)], true);
        assert_eq!(r.recv_many(&mut out, 16).await, 2);
        assert_eq!(names(&out[8..]), ["m", "n"]);
        q.push(&mut vec![incoming("o", None), incoming("p", None)], true);
        let mut small = Vec::new();
        assert_eq!(r.recv_many(&mut small, 1).await, 1);
        assert_eq!(r.recv_many(&mut small, 16).await, 1);
        assert_eq!(names(&small), ["o", "p"]);
        assert!(r.is_empty());
    }

    #[tokio::test]
    async fn finish_lets_consumers_drain_then_end() {
        let q = queue(10, OverflowPolicy::DropOldest, false);
        let r = Receiver::new(q.clone());
        q.push(&mut vec![incoming("a", None)], true);
        q.finish();
        assert_eq!(r.recv().await.map(|f| f.payload), Some(Bytes::from("a")));
        assert!(r.recv().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn recv_timeout_times_out() {
        let r = Receiver::new(queue(10, OverflowPolicy::DropOldest, false));
        assert_eq!(
            r.recv_timeout(Duration::from_secs(1)).await.err(),
            Some(RecvTimeoutError::Timeout)
        );
    }
}

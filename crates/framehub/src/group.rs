//! Grouped delivery (`delivery = "groups"`): frames from every connection
//! of a listener, in groups of up to `group_size`, each published when full
//! or `group_max_delay` after its first frame; and [`Groups`], the one
//! stream a consumer reads them from.
//!
//! Connections push a whole read's frames under one lock, as they do into a
//! receiver's queue. Published groups wait in a queue bounded in groups
//! (`group_capacity`) with the receivers' overflow policies. No task keeps
//! the time: a push seals an open group that has outlived its delay before
//! adding to it, and a waiting consumer wakes at the open group's deadline
//! and seals it itself, so a group never holds a frame that arrived after
//! its deadline and is never published later than it.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::{ListenerConfig, OverflowPolicy};
use crate::frame::{Frame, Incoming};
use crate::receiver::{NextItem, PushOutcome, Queue, RecvTimeoutError, TryRecvError};
use crate::stats::WarnLimiter;

/// Frames from any connection of one listener, published together.
///
/// Each frame carries its own connection id, peer address, node (when
/// known), listener and receive time in [`Frame::source`] and
/// [`Frame::received_at`].
#[derive(Debug, Clone)]
pub struct Group {
    /// The group's number on its listener, from 1. A gap means groups were
    /// dropped (`group_overflow`).
    pub seq: u64,
    /// The frames, in the order the hub received them (per connection;
    /// connections interleave by read).
    pub frames: Vec<Frame>,
}

impl Group {
    /// Payload bytes of all frames.
    pub fn bytes(&self) -> usize {
        self.frames.iter().map(|f| f.payload.len()).sum()
    }

    /// How many distinct connections the frames came from.
    pub fn connections(&self) -> usize {
        self.frames
            .iter()
            .map(|f| f.source.conn)
            .collect::<HashSet<_>>()
            .len()
    }
}

/// A group stream's settings, taken from its listener.
#[derive(Debug, Clone, Copy)]
struct GroupConfig {
    size: usize,
    max_delay: Duration,
    capacity: usize,
    overflow: OverflowPolicy,
    full_grace: Duration,
}

struct State {
    /// The group being filled; its frames count as received, not published.
    open: Vec<Frame>,
    /// When `open` got its first frame.
    opened: Instant,
    ready: VecDeque<Group>,
    next_seq: u64,
    closed: bool,
    finished: bool,
}

/// The shared state behind [`Groups`].
pub(crate) struct GroupQueue {
    name: Arc<str>,
    config: GroupConfig,
    state: Mutex<State>,
    readable: Notify,
    writable: Notify,
    pub(crate) full_warning: WarnLimiter,
}

/// What sealing the open group did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sealed {
    /// Published (possibly after dropping the oldest group).
    Published { dropped_frames: usize },
    /// Dropped whole (`drop-newest`).
    Dropped { frames: usize },
    /// No room and no drop allowed: the group stays open.
    NoRoom,
}

impl GroupQueue {
    pub(crate) fn new(name: Arc<str>, config: &ListenerConfig) -> Arc<GroupQueue> {
        let config = GroupConfig {
            size: config.group_size.max(1),
            max_delay: config.group_max_delay,
            capacity: config.group_capacity.max(1),
            overflow: config.group_overflow,
            full_grace: config.queue.full_grace,
        };
        Arc::new(GroupQueue {
            name,
            config,
            state: Mutex::new(State {
                open: Vec::new(),
                opened: Instant::now(),
                ready: VecDeque::with_capacity(config.capacity.min(64)),
                next_seq: 1,
                closed: false,
                finished: false,
            }),
            readable: Notify::new(),
            writable: Notify::new(),
            full_warning: WarnLimiter::new(Duration::from_secs(5)),
        })
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub(crate) fn policy(&self) -> OverflowPolicy {
        self.config.overflow
    }

    pub(crate) fn full_grace(&self) -> Duration {
        self.config.full_grace
    }

    fn is_due(&self, state: &State, now: Instant) -> bool {
        !state.open.is_empty() && now >= state.opened + self.config.max_delay
    }

    /// Moves the open group to the published queue, making room by the
    /// overflow policy when `may_drop`.
    fn seal(&self, state: &mut State, may_drop: bool) -> Sealed {
        let mut dropped_frames = 0;
        if state.ready.len() >= self.config.capacity {
            if !may_drop || self.config.overflow == OverflowPolicy::Block {
                return Sealed::NoRoom;
            }
            if self.config.overflow == OverflowPolicy::DropNewest {
                let frames = state.open.len();
                state.open.clear();
                state.next_seq += 1;
                return Sealed::Dropped { frames };
            }
            dropped_frames = state.ready.pop_front().map_or(0, |g| g.frames.len());
        }
        let frames = std::mem::take(&mut state.open);
        let seq = state.next_seq;
        state.next_seq += 1;
        state.ready.push_back(Group { seq, frames });
        Sealed::Published { dropped_frames }
    }

    fn account(out: &mut PushOutcome, sealed: Sealed) {
        match sealed {
            Sealed::Published { dropped_frames } => {
                out.groups_published += 1;
                out.dropped_full += dropped_frames;
            }
            Sealed::Dropped { frames } => out.dropped_full += frames,
            Sealed::NoRoom => {}
        }
    }

    /// Adds frames from the front of `batch` to the open group, publishing
    /// each group that fills. Frames that cannot go in without dropping
    /// (`block`, or `may_drop` false) stay in `batch`; the caller waits for
    /// [`GroupQueue::has_room`] and tries again.
    pub(crate) fn push(&self, batch: &mut Vec<Incoming>, may_drop: bool) -> PushOutcome {
        let mut out = PushOutcome::default();
        if batch.is_empty() {
            return out;
        }
        let mut state = self.state.lock();
        if state.closed || state.finished {
            out.dropped_closed = batch.len();
            batch.clear();
            return out;
        }
        let now = Instant::now();
        if self.is_due(&state, now) {
            let sealed = self.seal(&mut state, may_drop);
            Self::account(&mut out, sealed);
        }
        let mut taken = 0;
        // Frames are moved, not cloned: no per-frame refcount traffic. The
        // leftover vector only allocates when a blocked stream leaves frames.
        let mut leftover = Vec::new();
        {
            let mut frames = batch.drain(..);
            while let Some(item) = frames.next() {
                if state.open.len() >= self.config.size {
                    let sealed = self.seal(&mut state, may_drop);
                    Self::account(&mut out, sealed);
                    if sealed == Sealed::NoRoom {
                        leftover.push(item);
                        leftover.extend(frames.by_ref());
                        break;
                    }
                }
                if state.open.is_empty() {
                    state.opened = now;
                    // One allocation per group, not per frame.
                    state.open.reserve_exact(self.config.size);
                }
                state.open.push(item.frame);
                taken += 1;
            }
        }
        if state.open.len() >= self.config.size {
            let sealed = self.seal(&mut state, may_drop);
            Self::account(&mut out, sealed);
        }
        out.enqueued = taken;
        out.filling = state.ready.len() * 2 >= self.config.capacity;
        let published = out.groups_published > 0;
        drop(state);
        batch.append(&mut leftover);
        if published || taken > 0 {
            // A consumer waits either for a published group or for the
            // deadline of a group that just opened.
            self.readable.notify_one();
        }
        out
    }

    /// Waits until the published queue has room for one more group, or the
    /// stream was closed.
    pub(crate) async fn has_room(&self) {
        loop {
            let notified = self.writable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.state.lock();
                if state.ready.len() < self.config.capacity || state.closed || state.finished {
                    return;
                }
            }
            notified.await;
        }
    }

    /// No producer will push again: consumers drain, then see the end.
    pub(crate) fn finish(&self) {
        self.state.lock().finished = true;
        self.readable.notify_waiters();
        self.readable.notify_one();
        self.writable.notify_waiters();
    }

    fn close(&self) -> usize {
        let mut state = self.state.lock();
        state.closed = true;
        let dropped = state.open.len() + state.ready.iter().map(|g| g.frames.len()).sum::<usize>();
        state.open.clear();
        state.ready.clear();
        drop(state);
        self.readable.notify_waiters();
        self.readable.notify_one();
        self.writable.notify_waiters();
        dropped
    }

    /// The next group: a published one, else the open one if it is due (or
    /// the stream is ending); otherwise when to look again.
    fn take(&self, now: Instant) -> Take {
        let mut state = self.state.lock();
        if let Some(group) = state.ready.pop_front() {
            // A producer blocked on a full open group can go on now.
            if state.open.len() >= self.config.size {
                let _ = self.seal(&mut state, false);
            }
            drop(state);
            self.writable.notify_waiters();
            return Take::Group(group);
        }
        let ending = state.closed || state.finished;
        if !state.open.is_empty() && (ending || self.is_due(&state, now)) {
            let sealed = self.seal(&mut state, false);
            debug_assert!(matches!(sealed, Sealed::Published { .. }));
            let group = state.ready.pop_front();
            drop(state);
            self.writable.notify_waiters();
            return group.map_or(Take::Wait(None), Take::Group);
        }
        if ending {
            return Take::End;
        }
        let deadline = (!state.open.is_empty()).then(|| state.opened + self.config.max_delay);
        Take::Wait(deadline)
    }

    async fn recv(&self) -> Option<Group> {
        loop {
            let notified = self.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.take(Instant::now()) {
                Take::Group(group) => return Some(group),
                Take::End => return None,
                Take::Wait(None) => notified.await,
                Take::Wait(Some(deadline)) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(deadline) => {}
                    }
                }
            }
        }
    }

    fn stats(&self) -> GroupStats {
        let state = self.state.lock();
        GroupStats {
            waiting: state.ready.len(),
            open_frames: state.open.len(),
        }
    }
}

enum Take {
    Group(Group),
    /// Nothing yet; wake on a push or at this deadline.
    Wait(Option<Instant>),
    End,
}

/// What a group stream holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupStats {
    /// Published groups waiting for the consumer.
    pub waiting: usize,
    /// Frames in the group being filled.
    pub open_frames: usize,
}

/// The consumer's end of a listener's group stream
/// ([`crate::Hub::groups`]). Clones share the stream: each group goes to
/// one of them. `Groups` is also a [`Stream`] of groups that ends where
/// [`Groups::recv`] returns `None`.
///
/// ```no_run
/// # async fn demo(hub: framehub::Hub) {
/// let groups = hub.groups("stage").expect("a listener with delivery = \"groups\"");
/// while let Some(group) = groups.recv().await {
///     println!("group {} packets {} bytes from {} clients",
///         group.frames.len(), group.bytes(), group.connections());
/// }
/// # }
/// ```
///
/// ```no_run
/// use futures_util::StreamExt;
///
/// # async fn demo(hub: framehub::Hub) {
/// let groups = hub.groups("stage").expect("a listener with delivery = \"groups\"");
/// let mut sizes = groups.map(|group| group.frames.len());
/// while let Some(frames) = sizes.next().await {
///     println!("{frames} frames");
/// }
/// # }
/// ```
pub struct Groups {
    queue: Arc<GroupQueue>,
    /// The `Stream` impl's receive in progress.
    next: NextItem<Group>,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups")
            .field("listener", &self.queue.name)
            .finish()
    }
}

impl Groups {
    pub(crate) fn new(queue: Arc<GroupQueue>) -> Groups {
        Groups {
            queue,
            next: NextItem::default(),
        }
    }

    /// The listener this stream belongs to.
    pub fn listener(&self) -> &str {
        &self.queue.name
    }

    /// Waits for the next group: a full one, or one whose first frame is
    /// `group_max_delay` old. `None` once the hub shut down (after the
    /// last frames were handed out) or the stream was closed.
    pub async fn recv(&self) -> Option<Group> {
        self.queue.recv().await
    }

    /// Waits at most `timeout` for the next group.
    pub async fn recv_timeout(&self, timeout: Duration) -> Result<Group, RecvTimeoutError> {
        match tokio::time::timeout(timeout, self.recv()).await {
            Ok(Some(group)) => Ok(group),
            Ok(None) => Err(RecvTimeoutError::Closed),
            Err(_) => Err(RecvTimeoutError::Timeout),
        }
    }

    /// Takes the next group if one is published (or due) now.
    pub fn try_recv(&self) -> Result<Group, TryRecvError> {
        match self.queue.take(Instant::now()) {
            Take::Group(group) => Ok(group),
            Take::Wait(_) => Err(TryRecvError::Empty),
            Take::End => Err(TryRecvError::Closed),
        }
    }

    /// What the stream holds now.
    pub fn stats(&self) -> GroupStats {
        self.queue.stats()
    }

    /// Stops receiving: waiting groups are discarded and later frames are
    /// dropped (counted as `receiver_closed`).
    pub fn close(&self) {
        self.queue.close();
    }
}

/// Another consumer of the same stream, with no receive in progress.
impl Clone for Groups {
    fn clone(&self) -> Groups {
        Groups::new(self.queue.clone())
    }
}

/// [`Groups::recv`] as a stream: the same groups, published at the same times, ending once
/// the stream is closed or the hub shut down and the last groups are handed out. The pending
/// receive is one allocation, made at the first poll and reused for every group after it.
impl Stream for Groups {
    type Item = Group;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Group>> {
        let this = self.get_mut();
        this.next.poll(cx, || recv_owned(this.queue.clone()))
    }
}

/// [`Groups::recv`] on a queue the future owns, so that it can be kept across polls.
async fn recv_owned(queue: Arc<GroupQueue>) -> Option<Group> {
    queue.recv().await
}

/// Where a connection's frames go: a receiver's queue or a group stream.
/// Both take a whole read's frames at once and apply the same overflow
/// policies.
#[derive(Clone)]
pub(crate) enum Inbox {
    Queue(Arc<Queue>),
    Groups(Arc<GroupQueue>),
}

impl Inbox {
    pub(crate) fn name(&self) -> &Arc<str> {
        match self {
            Inbox::Queue(q) => q.name(),
            Inbox::Groups(g) => g.name(),
        }
    }

    pub(crate) fn policy(&self) -> OverflowPolicy {
        match self {
            Inbox::Queue(q) => q.policy(),
            Inbox::Groups(g) => g.policy(),
        }
    }

    pub(crate) fn full_grace(&self) -> Duration {
        match self {
            Inbox::Queue(q) => q.full_grace(),
            Inbox::Groups(g) => g.full_grace(),
        }
    }

    pub(crate) fn full_warning(&self) -> &WarnLimiter {
        match self {
            Inbox::Queue(q) => &q.full_warning,
            Inbox::Groups(g) => &g.full_warning,
        }
    }

    pub(crate) fn push(&self, batch: &mut Vec<Incoming>, may_drop: bool) -> PushOutcome {
        match self {
            Inbox::Queue(q) => q.push(batch, may_drop),
            Inbox::Groups(g) => g.push(batch, may_drop),
        }
    }

    /// Waits for room for `n` frames of connection `conn`.
    pub(crate) async fn has_room(&self, conn: u64, n: usize) {
        match self {
            Inbox::Queue(q) => q.has_room(conn, n).await,
            Inbox::Groups(g) => g.has_room().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::SystemTime;

    use bytes::Bytes;

    use super::*;
    use crate::config::{Protocol, QueueConfig};
    use crate::frame::Source;

    fn incoming(conn: u64, payload: &'static str) -> Incoming {
        let peer: SocketAddr = format!("127.0.0.1:{}", 1000 + conn).parse().expect("addr");
        Incoming::new(
            Frame {
                payload: Bytes::from_static(payload.as_bytes()),
                received_at: SystemTime::now(),
                source: Arc::new(Source {
                    conn,
                    peer,
                    listener: "stage".into(),
                    node: None,
                    protocol: Protocol::Raw,
                }),
                seq: None,
            },
            None,
        )
    }

    fn queue(size: usize, capacity: usize, overflow: OverflowPolicy) -> Arc<GroupQueue> {
        GroupQueue::new(
            "stage".into(),
            &ListenerConfig {
                group_size: size,
                group_capacity: capacity,
                group_overflow: overflow,
                group_max_delay: Duration::from_millis(5),
                queue: QueueConfig {
                    full_grace: Duration::ZERO,
                    ..QueueConfig::default()
                },
                ..ListenerConfig::default()
            },
        )
    }

    fn payloads(g: &Group) -> Vec<&[u8]> {
        g.frames.iter().map(|f| &f.payload[..]).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn groups_fill_to_size_across_connections() {
        let q = queue(3, 8, OverflowPolicy::DropOldest);
        let groups = Groups::new(q.clone());
        let mut a = vec![incoming(1, "a1"), incoming(1, "a2")];
        let mut b = vec![incoming(2, "b1"), incoming(2, "b2"), incoming(2, "b3")];
        assert_eq!(q.push(&mut a, true).enqueued, 2);
        let out = q.push(&mut b, true);
        assert_eq!((out.enqueued, out.groups_published), (3, 1));
        let first = groups.try_recv().expect("a full group");
        assert_eq!(first.seq, 1);
        assert_eq!(payloads(&first), [&b"a1"[..], b"a2", b"b1"]);
        assert_eq!(first.connections(), 2);
        assert_eq!(first.bytes(), 6);
        // The rest is not due yet...
        assert_eq!(groups.try_recv().err(), Some(TryRecvError::Empty));
        // ...and is published max_delay after its first frame.
        let started = Instant::now();
        let second = groups.recv().await.expect("due group");
        assert_eq!(started.elapsed(), Duration::from_millis(5));
        assert_eq!(
            (second.seq, payloads(&second)),
            (2, vec![&b"b2"[..], b"b3"])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_push_after_the_deadline_starts_a_new_group() {
        let q = queue(10, 8, OverflowPolicy::DropOldest);
        let groups = Groups::new(q.clone());
        q.push(&mut vec![incoming(1, "old")], true);
        tokio::time::advance(Duration::from_millis(6)).await;
        q.push(&mut vec![incoming(1, "new")], true);
        let g = groups.try_recv().expect("the old group");
        assert_eq!(payloads(&g), [&b"old"[..]]);
        assert_eq!(groups.try_recv().err(), Some(TryRecvError::Empty));
    }

    #[test]
    fn drop_oldest_and_drop_newest_count_whole_groups() {
        for (policy, kept) in [
            (OverflowPolicy::DropOldest, [&b"b"[..], b"c"]),
            (OverflowPolicy::DropNewest, [&b"a"[..], b"b"]),
        ] {
            let q = queue(1, 2, policy);
            let mut batch = vec![incoming(1, "a"), incoming(1, "b"), incoming(1, "c")];
            let out = q.push(&mut batch, true);
            assert_eq!(out.dropped_full, 1, "{policy:?}");
            let groups = Groups::new(q);
            let got: Vec<_> = std::iter::from_fn(|| groups.try_recv().ok()).collect();
            let got: Vec<&[u8]> = got.iter().map(|g| &g.frames[0].payload[..]).collect();
            assert_eq!(got, kept, "{policy:?}");
        }
    }

    #[test]
    fn block_leaves_frames_in_the_batch_until_a_group_is_taken() {
        let q = queue(1, 1, OverflowPolicy::Block);
        let mut batch = vec![incoming(1, "a"), incoming(1, "b"), incoming(1, "c")];
        let out = q.push(&mut batch, true);
        // "a" published, "b" in a full open group that cannot be published.
        assert_eq!((out.enqueued, batch.len()), (2, 1));
        let groups = Groups::new(q.clone());
        assert_eq!(payloads(&groups.try_recv().expect("a")), [&b"a"[..]]);
        q.push(&mut batch, true);
        assert!(batch.is_empty());
        assert_eq!(payloads(&groups.try_recv().expect("b")), [&b"b"[..]]);
    }

    #[tokio::test]
    async fn finish_hands_out_the_open_group_then_ends() {
        let q = queue(10, 2, OverflowPolicy::DropOldest);
        let groups = Groups::new(q.clone());
        q.push(&mut vec![incoming(1, "last")], true);
        q.finish();
        assert_eq!(groups.recv().await.map(|g| g.frames.len()), Some(1));
        assert!(groups.recv().await.is_none());
    }
}

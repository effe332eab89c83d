//! The outgoing byte buffer between producers that never wait and the one
//! task that writes it to a socket, bounded in bytes: each connection's
//! egress buffer (`egress`) and each tap subscriber's buffer in the
//! `framehub` binary are one [`OutBuf`] each.
//!
//! Offering never waits: the bytes are taken if they fit, or the offer is
//! refused ([`Offer::Full`]) and the caller applies its own policy (drop and
//! count, or disconnect). What the writer is writing still counts against
//! the bound until it calls [`OutBuf::written`], so the bound holds for
//! everything in memory, in flight included.
//!
//! Two ways in, for two kinds of producers: [`OutBuf::offer_copy`] copies
//! small messages into one growing segment, so a burst goes out in one
//! write; [`OutBuf::offer_shared`] queues a [`Bytes`] as it is, so a large
//! chunk shared by many buffers is never copied per buffer.

use std::collections::VecDeque;
use std::ops::{AddAssign, Deref};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// A written segment of copied messages is kept for the next ones only up
/// to this capacity, so an idle client does not hold on to a burst's worth.
const KEEP_SEGMENT: usize = 64 << 10;

/// What the buffer did with an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued; the writer has been woken.
    Taken,
    /// It does not fit now: nothing was queued.
    Full,
    /// The buffer was finished or closed: nothing more is taken.
    Closed,
}

/// Bytes the writer takes at once: the messages copied into one segment,
/// or one shared chunk.
#[derive(Debug)]
pub enum Segment {
    /// Messages offered with [`OutBuf::offer_copy`], back to back.
    Copied(BytesMut),
    /// One chunk offered with [`OutBuf::offer_shared`].
    Shared(Bytes),
}

impl Deref for Segment {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Segment::Copied(b) => b,
            Segment::Shared(b) => b,
        }
    }
}

/// What the writer should do next, from [`OutBuf::take`].
#[derive(Debug)]
pub enum Take<T> {
    /// Write this segment, then call [`OutBuf::written`]. The tally is the
    /// sum of what was offered with its messages.
    Write(Segment, T),
    /// Nothing to write now: wait for [`OutBuf::ready`].
    Idle,
    /// Finished and everything written, or closed: the writer is done.
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// No more offers; what is queued is still written.
    Finishing,
    /// No more offers; what was queued is gone.
    Closed,
}

struct State<T> {
    queue: VecDeque<(Segment, T)>,
    /// Bytes in `queue`.
    queued: usize,
    /// Bytes the writer took and has not written yet, and their tally.
    in_flight: usize,
    in_flight_tally: T,
    /// An empty allocation for the next copied segment.
    spare: BytesMut,
    phase: Phase,
}

/// A bounded outgoing byte buffer with one writer.
///
/// `T` is what the caller counts per offer (messages, records, replies):
/// [`Take::Write`] hands the writer the sum for the segment it writes, and
/// [`OutBuf::close`] returns the sum of what was never written.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use framehub::outbuf::{Offer, OutBuf, Take};
///
/// // Bounded at 8 bytes; each offer counts one message.
/// let buf = OutBuf::<u64>::new(8);
/// assert_eq!(buf.offer_copy(b"hello", 1), Offer::Taken);
/// assert_eq!(buf.offer_copy(b"world", 1), Offer::Full);
///
/// // The writer's loop: take, write, mark written; wait when idle.
/// let mut socket = Vec::new();
/// loop {
///     match buf.take() {
///         Take::Write(segment, messages) => {
///             socket.extend_from_slice(&segment); // the socket write
///             assert_eq!(messages, 1);
///             buf.written(segment);
///         }
///         Take::Idle => break, // a real writer awaits `buf.ready()`
///         Take::Ended => break,
///     }
/// }
/// assert_eq!(socket, b"hello");
/// assert_eq!(buf.offer_copy(b"world", 1), Offer::Taken);
/// assert_eq!(buf.close(), 1, "one message never written");
/// # }
/// ```
pub struct OutBuf<T = u64> {
    limit: usize,
    /// Whether an empty buffer takes one offer of any size.
    oversized_when_empty: bool,
    state: Mutex<State<T>>,
    /// Wakes the writer: something was offered, or the buffer ended.
    wake: Notify,
    /// Told whenever the writer has written everything it had.
    drained: Notify,
}

impl<T> std::fmt::Debug for OutBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutBuf")
            .field("limit", &self.limit)
            .field("used", &self.used())
            .finish_non_exhaustive()
    }
}

impl<T> OutBuf<T> {
    /// The bound in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes queued or being written now.
    pub fn used(&self) -> usize {
        let state = self.state.lock();
        state.queued + state.in_flight
    }
}

impl<T: Copy + Default + AddAssign> OutBuf<T> {
    /// An empty buffer that holds at most `limit` bytes, in flight
    /// included.
    pub fn new(limit: usize) -> OutBuf<T> {
        OutBuf {
            limit,
            oversized_when_empty: false,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued: 0,
                in_flight: 0,
                in_flight_tally: T::default(),
                spare: BytesMut::new(),
                phase: Phase::Open,
            }),
            wake: Notify::new(),
            drained: Notify::new(),
        }
    }

    /// Lets an empty buffer (nothing queued, nothing in flight) take one
    /// offer larger than the limit, so a message bigger than the whole
    /// buffer still reaches a reader that keeps up. The bound becomes
    /// `limit` plus at most one offer.
    #[must_use]
    pub fn with_oversized_when_empty(mut self) -> OutBuf<T> {
        self.oversized_when_empty = true;
        self
    }

    fn fits(&self, state: &State<T>, len: usize) -> bool {
        let used = state.queued + state.in_flight;
        used + len <= self.limit || (self.oversized_when_empty && used == 0)
    }

    /// Copies `bytes` in after what is queued if they fit, counting `tally`
    /// with them.
    pub fn offer_copy(&self, bytes: &[u8], tally: T) -> Offer {
        let mut state = self.state.lock();
        if state.phase != Phase::Open {
            return Offer::Closed;
        }
        if !self.fits(&state, bytes.len()) {
            return Offer::Full;
        }
        state.push_copy(bytes, tally);
        drop(state);
        self.wake.notify_one();
        Offer::Taken
    }

    /// Queues `bytes` as they are (no copy) if they fit, counting `tally`
    /// with them. The writer takes them as one segment of their own.
    pub fn offer_shared(&self, bytes: Bytes, tally: T) -> Offer {
        let mut state = self.state.lock();
        if state.phase != Phase::Open {
            return Offer::Closed;
        }
        if !self.fits(&state, bytes.len()) {
            return Offer::Full;
        }
        state.queued += bytes.len();
        state.queue.push_back((Segment::Shared(bytes), tally));
        drop(state);
        self.wake.notify_one();
        Offer::Taken
    }

    /// Copies `bytes` in only when nothing is queued or being written (the
    /// bound aside): for a keepalive, which any other message would stand
    /// in for, and which must not pile up behind a stuck write.
    pub fn offer_if_idle(&self, bytes: &[u8], tally: T) -> bool {
        let mut state = self.state.lock();
        if state.phase != Phase::Open || state.queued > 0 || state.in_flight > 0 {
            return false;
        }
        state.push_copy(bytes, tally);
        drop(state);
        self.wake.notify_one();
        true
    }

    /// Hands the writer the oldest segment; it counts against the bound
    /// until [`OutBuf::written`].
    pub fn take(&self) -> Take<T> {
        let mut state = self.state.lock();
        if state.phase == Phase::Closed {
            return Take::Ended;
        }
        match state.queue.pop_front() {
            Some((segment, tally)) => {
                state.queued -= segment.len();
                state.in_flight = segment.len();
                state.in_flight_tally = tally;
                Take::Write(segment, tally)
            }
            None if state.phase == Phase::Finishing => Take::Ended,
            None => Take::Idle,
        }
    }

    /// The writer has written what it took: that space is free again, and
    /// `segment`'s allocation may serve the next copied messages.
    pub fn written(&self, segment: Segment) {
        let mut state = self.state.lock();
        state.in_flight = 0;
        state.in_flight_tally = T::default();
        if let Segment::Copied(mut buf) = segment
            && buf.capacity() <= KEEP_SEGMENT
            && state.spare.capacity() == 0
            && state.phase != Phase::Closed
        {
            buf.clear();
            state.spare = buf;
        }
        if state.queue.is_empty() {
            self.drained.notify_waiters();
        }
    }

    /// Waits until something may have been offered (or the buffer ended)
    /// since the writer last looked; then [`OutBuf::take`] tells.
    pub async fn ready(&self) {
        self.wake.notified().await;
    }

    /// Takes no more offers; the writer still gets what is queued, then
    /// [`Take::Ended`].
    pub fn finish(&self) {
        let mut state = self.state.lock();
        if state.phase == Phase::Open {
            state.phase = Phase::Finishing;
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Takes no more offers and discards what is queued or in flight;
    /// returns its tally (what was never written). Closing again returns
    /// nothing.
    pub fn close(&self) -> T {
        let mut state = self.state.lock();
        let mut unsent = state.in_flight_tally;
        for (_, tally) in state.queue.drain(..) {
            unsent += tally;
        }
        *state = State {
            queue: VecDeque::new(),
            queued: 0,
            in_flight: 0,
            in_flight_tally: T::default(),
            spare: BytesMut::new(),
            phase: Phase::Closed,
        };
        drop(state);
        self.drained.notify_waiters();
        self.wake.notify_one();
        unsent
    }

    /// Waits until everything queued so far has been written, the buffer
    /// was closed, or `deadline` passed.
    pub async fn wait_drained(&self, deadline: tokio::time::Instant) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            // Registered before looking, so a wakeup in between is not lost.
            drained.as_mut().enable();
            {
                let state = self.state.lock();
                if state.phase == Phase::Closed || (state.queued == 0 && state.in_flight == 0) {
                    return;
                }
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                return;
            }
        }
    }
}

impl<T: Copy + Default + AddAssign> State<T> {
    /// Appends to the newest segment if it holds copies, else starts one
    /// (in the spare allocation).
    fn push_copy(&mut self, bytes: &[u8], tally: T) {
        self.queued += bytes.len();
        if let Some((Segment::Copied(buf), sum)) = self.queue.back_mut() {
            buf.extend_from_slice(bytes);
            *sum += tally;
            return;
        }
        let mut buf = std::mem::take(&mut self.spare);
        buf.extend_from_slice(bytes);
        self.queue.push_back((Segment::Copied(buf), tally));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_one<T: Copy + Default + AddAssign>(buf: &OutBuf<T>) -> Option<(Vec<u8>, T)> {
        match buf.take() {
            Take::Write(segment, tally) => {
                let bytes = segment.to_vec();
                buf.written(segment);
                Some((bytes, tally))
            }
            Take::Idle | Take::Ended => None,
        }
    }

    #[test]
    fn the_buffer_is_bounded_in_bytes_including_what_is_being_written() {
        let b = OutBuf::<u64>::new(10);
        assert_eq!(b.offer_copy(b"0123", 1), Offer::Taken);
        assert_eq!(b.offer_copy(b"4567", 1), Offer::Taken);
        assert_eq!(b.offer_copy(b"89a", 1), Offer::Full);
        assert_eq!(b.offer_copy(b"89", 1), Offer::Taken);
        let Take::Write(taken, msgs) = b.take() else {
            panic!("pending")
        };
        assert_eq!((&taken[..], msgs), (&b"0123456789"[..], 3));
        // Still being written: still counted.
        assert_eq!(b.used(), 10);
        assert_eq!(b.offer_copy(b"x", 1), Offer::Full);
        b.written(taken);
        assert_eq!(b.offer_copy(b"x", 1), Offer::Taken);
        assert_eq!(b.close(), 1);
        assert_eq!(b.offer_copy(b"y", 1), Offer::Closed);
    }

    #[test]
    fn heartbeats_only_go_out_on_an_idle_link() {
        let b = OutBuf::<u64>::new(100);
        assert!(b.offer_if_idle(b"hb", 1));
        assert!(!b.offer_if_idle(b"hb", 1), "one already pending");
        let Take::Write(segment, _) = b.take() else {
            panic!("pending")
        };
        assert!(!b.offer_if_idle(b"hb", 1), "a write in progress");
        b.written(segment);
        assert!(b.offer_if_idle(b"hb", 1));
    }

    #[test]
    fn shared_chunks_are_written_one_at_a_time_in_order_with_copies() {
        let b = OutBuf::<u64>::new(100);
        assert_eq!(b.offer_copy(b"a", 1), Offer::Taken);
        assert_eq!(b.offer_shared(Bytes::from_static(b"BB"), 5), Offer::Taken);
        assert_eq!(b.offer_copy(b"c", 1), Offer::Taken);
        assert_eq!(b.offer_copy(b"d", 1), Offer::Taken);
        assert_eq!(write_one(&b), Some((b"a".to_vec(), 1)));
        assert_eq!(write_one(&b), Some((b"BB".to_vec(), 5)));
        assert_eq!(write_one(&b), Some((b"cd".to_vec(), 2)));
        assert_eq!(write_one(&b), None);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn an_empty_buffer_takes_one_oversized_offer_only_when_allowed() {
        let strict = OutBuf::<u64>::new(4);
        assert_eq!(
            strict.offer_shared(Bytes::from_static(b"12345"), 1),
            Offer::Full
        );
        let lenient = OutBuf::<u64>::new(4).with_oversized_when_empty();
        assert_eq!(
            lenient.offer_shared(Bytes::from_static(b"12345"), 1),
            Offer::Taken
        );
        assert_eq!(
            lenient.offer_shared(Bytes::from_static(b"1"), 1),
            Offer::Full
        );
        let Take::Write(segment, _) = lenient.take() else {
            panic!("pending")
        };
        // Still being written: the buffer is not empty yet.
        assert_eq!(
            lenient.offer_shared(Bytes::from_static(b"12345"), 1),
            Offer::Full
        );
        lenient.written(segment);
        assert_eq!(
            lenient.offer_shared(Bytes::from_static(b"12345"), 1),
            Offer::Taken
        );
    }

    #[test]
    fn finishing_writes_the_rest_and_closing_counts_it_unsent() {
        let b = OutBuf::<u64>::new(100);
        b.offer_shared(Bytes::from_static(b"one"), 2);
        b.offer_shared(Bytes::from_static(b"two"), 3);
        b.finish();
        assert_eq!(b.offer_copy(b"late", 1), Offer::Closed);
        assert_eq!(write_one(&b), Some((b"one".to_vec(), 2)));
        assert!(matches!(b.take(), Take::Write(_, 3)), "in flight");
        // Cut while writing: what was in flight never arrived.
        assert_eq!(b.close(), 3);
        assert_eq!(b.close(), 0);
        assert!(matches!(b.take(), Take::Ended));

        let empty = OutBuf::<u64>::new(100);
        empty.finish();
        assert!(matches!(empty.take(), Take::Ended));
    }

    #[tokio::test]
    async fn wait_drained_returns_once_written_or_closed() {
        let b = std::sync::Arc::new(OutBuf::<u64>::new(100));
        b.offer_copy(b"x", 1);
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.wait_drained(far).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(write_one(&b).is_some());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("drained")
            .expect("task");
        b.offer_copy(b"y", 1);
        let closed = tokio::spawn({
            let b = b.clone();
            async move { b.wait_drained(far).await }
        });
        tokio::task::yield_now().await;
        b.close();
        tokio::time::timeout(std::time::Duration::from_secs(5), closed)
            .await
            .expect("closed")
            .expect("task");
    }
}

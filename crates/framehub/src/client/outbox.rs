//! The client's bounded outbox: wire-ready frames waiting for the link,
//! with its overflow policy (drop the oldest, make senders wait, or refuse),
//! and, under acknowledged delivery, the numbering of frames and the byte
//! budget that also covers frames written but not yet acknowledged.
//!
//! Senders push from any task; the one driver task takes batches. The lock
//! is held only to push or pop, never across an `.await`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore, TryAcquireError};

use super::OutboxPolicy;

/// Why a push did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PushError {
    /// No room: `block` policy from `try_push`, or the `fail` policy.
    Full,
    /// The client is closing or closed.
    Closed,
}

/// What a successful push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pushed {
    /// Queued; nothing was lost.
    Queued,
    /// Queued after dropping the oldest waiting frame (`drop-oldest`).
    DroppedOldest,
}

/// A frame on its way: its bytes on the wire, its sequence number (0
/// without acks) and what it costs the budget until it leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Outgoing {
    pub(super) seq: u64,
    pub(super) frame: Bytes,
    /// Budget units held: 1 slot without acks (given back when taken),
    /// bytes with acks (given back when acknowledged).
    pub(super) cost: u32,
}

/// What the outbox is bounded by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Budget {
    /// At most this many waiting frames; a slot is free again once the
    /// driver takes the frame.
    Frames(usize),
    /// At most this many bytes of frames accepted and not yet
    /// acknowledged; the driver gives them back as acks arrive.
    Bytes(usize),
}

struct Queue {
    frames: VecDeque<Outgoing>,
    /// The sequence number of the next frame (acks only).
    next_seq: u64,
}

pub(super) struct Outbox {
    queue: Mutex<Queue>,
    budget: Budget,
    policy: OutboxPolicy,
    /// Free budget units under the `block` and `fail` policies: a sender
    /// holds its units from acquiring them until its frame is queued, and
    /// the driver gives them back. Closed when the client closes, which
    /// wakes every waiting sender.
    slots: Semaphore,
    closed: AtomicBool,
    /// Wakes the driver: a frame was queued, or the client is closing.
    /// `notify_one` keeps a permit when the driver is not waiting, so no
    /// wake-up is lost between its check and its wait.
    pub(super) ready: Notify,
}

impl Outbox {
    /// An outbox within `budget`; with acks, frames are numbered from
    /// `first_seq`.
    pub(super) fn new(budget: Budget, policy: OutboxPolicy, first_seq: u64) -> Outbox {
        let (units, preallocate) = match budget {
            Budget::Frames(n) => (n, n.min(4096)),
            Budget::Bytes(n) => (n, 1024),
        };
        Outbox {
            queue: Mutex::new(Queue {
                frames: VecDeque::with_capacity(preallocate),
                next_seq: first_seq,
            }),
            budget,
            policy,
            slots: Semaphore::new(units.min(Semaphore::MAX_PERMITS)),
            closed: AtomicBool::new(false),
            ready: Notify::new(),
        }
    }

    fn counts_slots(&self) -> bool {
        self.policy != OutboxPolicy::DropOldest
    }

    /// Queues the frame `render` makes from its sequence number, waiting
    /// for `cost` budget units under the `block` policy. Numbers are given
    /// under the queue's lock, so they rise in queue order whatever the
    /// number of senders; a frame `render` refuses uses no number.
    pub(super) async fn push<E>(
        &self,
        cost: u32,
        render: impl FnOnce(u64) -> Result<Bytes, E>,
    ) -> Result<Result<Pushed, PushError>, E> {
        if self.counts_slots() {
            let acquired = if self.policy == OutboxPolicy::Block {
                // A closed semaphore is the only error: the client is closing.
                self.slots
                    .acquire_many(cost)
                    .await
                    .map_err(|_| PushError::Closed)
            } else {
                self.try_acquire(cost)
            };
            match acquired {
                Ok(permit) => permit.forget(),
                Err(e) => return Ok(Err(e)),
            }
        }
        self.enqueue(cost, render)
    }

    /// Like [`Outbox::push`] without waiting: no room is
    /// [`PushError::Full`] under every policy but `drop-oldest`.
    pub(super) fn try_push<E>(
        &self,
        cost: u32,
        render: impl FnOnce(u64) -> Result<Bytes, E>,
    ) -> Result<Result<Pushed, PushError>, E> {
        if self.counts_slots() {
            match self.try_acquire(cost) {
                Ok(permit) => permit.forget(),
                Err(e) => return Ok(Err(e)),
            }
        }
        self.enqueue(cost, render)
    }

    fn try_acquire(&self, cost: u32) -> Result<tokio::sync::SemaphorePermit<'_>, PushError> {
        match self.slots.try_acquire_many(cost) {
            Ok(permit) => Ok(permit),
            Err(TryAcquireError::NoPermits) => Err(PushError::Full),
            Err(TryAcquireError::Closed) => Err(PushError::Closed),
        }
    }

    fn enqueue<E>(
        &self,
        cost: u32,
        render: impl FnOnce(u64) -> Result<Bytes, E>,
    ) -> Result<Result<Pushed, PushError>, E> {
        let pushed = {
            let mut queue = self.queue.lock();
            // Checked under the lock, so nothing is queued after `close`
            // has made its final count.
            if self.closed.load(Ordering::Acquire) {
                return Ok(Err(PushError::Closed));
            }
            let seq = queue.next_seq;
            let frame = match render(seq) {
                Ok(frame) => frame,
                Err(e) => {
                    drop(queue);
                    self.release(cost);
                    return Err(e);
                }
            };
            if let Budget::Bytes(_) = self.budget {
                queue.next_seq = seq.wrapping_add(1);
            }
            queue.frames.push_back(Outgoing { seq, frame, cost });
            match self.budget {
                Budget::Frames(capacity)
                    if self.policy == OutboxPolicy::DropOldest && queue.frames.len() > capacity =>
                {
                    queue.frames.pop_front();
                    Pushed::DroppedOldest
                }
                _ => Pushed::Queued,
            }
        };
        self.ready.notify_one();
        Ok(Ok(pushed))
    }

    /// Moves frames, oldest first, into `into` until about `max_bytes` are
    /// taken (at least one frame if any waits); returns how many. Without
    /// acks their slots are free again.
    pub(super) fn take(&self, into: &mut impl Extend<Outgoing>, max_bytes: usize) -> usize {
        let mut taken = 0;
        let mut bytes = 0;
        let mut slots = 0u64;
        {
            let mut queue = self.queue.lock();
            while bytes < max_bytes {
                let Some(frame) = queue.frames.pop_front() else {
                    break;
                };
                bytes += frame.frame.len();
                slots += u64::from(frame.cost);
                taken += 1;
                into.extend(std::iter::once(frame));
            }
        }
        if let Budget::Frames(_) = self.budget {
            self.release_units(slots);
        }
        taken
    }

    /// Gives back the budget of frames that left it (acknowledged).
    pub(super) fn release(&self, cost: u32) {
        self.release_units(u64::from(cost));
    }

    fn release_units(&self, units: u64) {
        if self.counts_slots() && units > 0 {
            self.slots
                .add_permits(usize::try_from(units).unwrap_or(usize::MAX));
        }
    }

    pub(super) fn len(&self) -> usize {
        self.queue.lock().frames.len()
    }

    /// The sequence number the next frame will get.
    pub(super) fn next_seq(&self) -> u64 {
        self.queue.lock().next_seq
    }

    /// Refuses further frames and wakes waiting senders (they get
    /// [`PushError::Closed`]) and the driver.
    pub(super) fn close(&self) {
        {
            let _queue = self.queue.lock();
            self.closed.store(true, Ordering::Release);
        }
        self.slots.close();
        self.ready.notify_one();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Empties the outbox, returning how many frames were in it.
    pub(super) fn clear(&self) -> usize {
        let mut queue = self.queue.lock();
        let n = queue.frames.len();
        queue.frames.clear();
        n
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn frames(outbox: &Outbox) -> Vec<Bytes> {
        let mut out = Vec::new();
        outbox.take(&mut out, usize::MAX);
        out.into_iter().map(|o| o.frame).collect()
    }

    fn as_is(frame: &'static [u8]) -> impl FnOnce(u64) -> Result<Bytes, ()> {
        move |_| Ok(Bytes::from_static(frame))
    }

    fn push_now(outbox: &Outbox, frame: &'static [u8]) -> Result<Pushed, PushError> {
        outbox.try_push(1, as_is(frame)).unwrap()
    }

    fn slots(capacity: usize, policy: OutboxPolicy) -> Outbox {
        Outbox::new(Budget::Frames(capacity), policy, 0)
    }

    #[test]
    fn drop_oldest_keeps_the_newest_in_order() {
        let outbox = slots(3, OutboxPolicy::DropOldest);
        let mut dropped = 0;
        for i in 0..5u8 {
            let pushed = outbox
                .try_push(1, |_| Ok::<_, ()>(Bytes::from(vec![i])))
                .unwrap()
                .unwrap();
            if pushed == Pushed::DroppedOldest {
                dropped += 1;
            }
        }
        assert_eq!(dropped, 2);
        assert_eq!(frames(&outbox), [vec![2u8], vec![3], vec![4]]);
    }

    #[test]
    fn block_refuses_when_full_and_frees_slots_on_take() {
        let outbox = slots(2, OutboxPolicy::Block);
        push_now(&outbox, b"a").unwrap();
        push_now(&outbox, b"b").unwrap();
        assert_eq!(push_now(&outbox, b"c"), Err(PushError::Full));
        let mut one = Vec::new();
        assert_eq!(outbox.take(&mut one, 1), 1);
        assert_eq!(one[0].frame, Bytes::from_static(b"a"));
        push_now(&outbox, b"c").unwrap();
        assert_eq!(outbox.len(), 2);
    }

    #[tokio::test]
    async fn blocked_sender_waits_for_a_slot_and_close_releases_it() {
        let outbox = std::sync::Arc::new(slots(1, OutboxPolicy::Block));
        outbox.push(1, as_is(b"a")).await.unwrap().unwrap();
        let waiting = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.push(1, as_is(b"b")).await.unwrap() })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        frames(&outbox);
        assert_eq!(waiting.await.unwrap(), Ok(Pushed::Queued));

        let waiting = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.push(1, as_is(b"c")).await.unwrap() })
        };
        tokio::task::yield_now().await;
        outbox.close();
        assert_eq!(waiting.await.unwrap(), Err(PushError::Closed));
        assert_eq!(push_now(&outbox, b"d"), Err(PushError::Closed));
    }

    #[test]
    fn take_stops_after_the_byte_budget() {
        let outbox = slots(10, OutboxPolicy::DropOldest);
        for _ in 0..4 {
            push_now(&outbox, b"12345").unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(outbox.take(&mut out, 6), 2);
        assert_eq!(outbox.len(), 2);
    }

    /// With acks, taking a frame does not free its bytes: only an ack
    /// (`release`) does. Numbers rise in queue order and a refused frame
    /// uses none.
    #[tokio::test]
    async fn acked_budget_is_freed_by_release_not_by_take() {
        let outbox = std::sync::Arc::new(Outbox::new(Budget::Bytes(100), OutboxPolicy::Block, 7));
        let numbered = |seq: u64| Ok::<_, ()>(Bytes::from(seq.to_string()));
        outbox.push(60, numbered).await.unwrap().unwrap();
        assert_eq!(outbox.try_push(1, |_| Err::<Bytes, _>("bad")), Err("bad"));
        outbox.push(40, numbered).await.unwrap().unwrap();
        let mut out = Vec::new();
        outbox.take(&mut out, usize::MAX);
        assert_eq!(
            out.iter().map(|o| (o.seq, o.cost)).collect::<Vec<_>>(),
            [(7, 60), (8, 40)]
        );
        assert_eq!(outbox.next_seq(), 9);
        // Taken but not acknowledged: still no room.
        assert_eq!(outbox.try_push(1, numbered).unwrap(), Err(PushError::Full));
        let waiting = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.push(50, numbered).await.unwrap() })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        outbox.release(60);
        assert_eq!(waiting.await.unwrap(), Ok(Pushed::Queued));
    }

    #[test]
    fn fail_policy_refuses_at_once_when_full() {
        let outbox = Outbox::new(Budget::Bytes(10), OutboxPolicy::Fail, 1);
        assert_eq!(
            outbox.try_push(10, as_is(b"x")).unwrap(),
            Ok(Pushed::Queued)
        );
        assert_eq!(
            outbox.try_push(1, as_is(b"y")).unwrap(),
            Err(PushError::Full)
        );
    }

    #[tokio::test]
    async fn fail_policy_push_does_not_wait() {
        let outbox = Outbox::new(Budget::Bytes(10), OutboxPolicy::Fail, 1);
        outbox.push(10, as_is(b"x")).await.unwrap().unwrap();
        assert_eq!(
            outbox.push(1, as_is(b"y")).await.unwrap(),
            Err(PushError::Full)
        );
    }
}

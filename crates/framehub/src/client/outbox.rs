//! The client's bounded outbox: wire-ready frames waiting for the link,
//! with its overflow policy (drop the oldest, or make senders wait).
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
    /// `block` policy and no free slot (only from `try_push`).
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

pub(super) struct Outbox {
    queue: Mutex<VecDeque<Bytes>>,
    capacity: usize,
    policy: OutboxPolicy,
    /// Free slots under the `block` policy: a sender holds one from
    /// acquiring it until its frame is queued, and the driver gives slots
    /// back as it takes frames. Closed when the client closes, which wakes
    /// every waiting sender.
    slots: Semaphore,
    closed: AtomicBool,
    /// Wakes the driver: a frame was queued, or the client is closing.
    /// `notify_one` keeps a permit when the driver is not waiting, so no
    /// wake-up is lost between its check and its wait.
    pub(super) ready: Notify,
}

impl Outbox {
    pub(super) fn new(capacity: usize, policy: OutboxPolicy) -> Outbox {
        Outbox {
            queue: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity,
            policy,
            slots: Semaphore::new(capacity),
            closed: AtomicBool::new(false),
            ready: Notify::new(),
        }
    }

    /// Queues `frame`, waiting for a free slot under the `block` policy.
    pub(super) async fn push(&self, frame: Bytes) -> Result<Pushed, PushError> {
        if self.policy == OutboxPolicy::Block {
            // A closed semaphore is the only error: the client is closing.
            let permit = self.slots.acquire().await.map_err(|_| PushError::Closed)?;
            permit.forget();
        }
        self.enqueue(frame)
    }

    /// Queues `frame` without waiting.
    pub(super) fn try_push(&self, frame: Bytes) -> Result<Pushed, PushError> {
        if self.policy == OutboxPolicy::Block {
            match self.slots.try_acquire() {
                Ok(permit) => permit.forget(),
                Err(TryAcquireError::NoPermits) => return Err(PushError::Full),
                Err(TryAcquireError::Closed) => return Err(PushError::Closed),
            }
        }
        self.enqueue(frame)
    }

    fn enqueue(&self, frame: Bytes) -> Result<Pushed, PushError> {
        let pushed = {
            let mut queue = self.queue.lock();
            // Checked under the lock, so nothing is queued after `close`
            // has made its final count.
            if self.closed.load(Ordering::Acquire) {
                return Err(PushError::Closed);
            }
            queue.push_back(frame);
            if queue.len() > self.capacity {
                queue.pop_front();
                Pushed::DroppedOldest
            } else {
                Pushed::Queued
            }
        };
        self.ready.notify_one();
        Ok(pushed)
    }

    /// Moves frames, oldest first, into `into` until about `max_bytes` are
    /// taken (at least one frame if any waits); returns how many.
    pub(super) fn take(&self, into: &mut impl Extend<Bytes>, max_bytes: usize) -> usize {
        let mut taken = 0;
        let mut bytes = 0;
        {
            let mut queue = self.queue.lock();
            while bytes < max_bytes {
                let Some(frame) = queue.pop_front() else {
                    break;
                };
                bytes += frame.len();
                taken += 1;
                into.extend(std::iter::once(frame));
            }
        }
        if self.policy == OutboxPolicy::Block && taken > 0 {
            self.slots.add_permits(taken);
        }
        taken
    }

    pub(super) fn len(&self) -> usize {
        self.queue.lock().len()
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
        let n = queue.len();
        queue.clear();
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
        out
    }

    #[test]
    fn drop_oldest_keeps_the_newest_in_order() {
        let outbox = Outbox::new(3, OutboxPolicy::DropOldest);
        let mut dropped = 0;
        for i in 0..5u8 {
            if outbox.try_push(Bytes::from(vec![i])).unwrap() == Pushed::DroppedOldest {
                dropped += 1;
            }
        }
        assert_eq!(dropped, 2);
        assert_eq!(frames(&outbox), [vec![2u8], vec![3], vec![4]]);
    }

    #[test]
    fn block_refuses_when_full_and_frees_slots_on_take() {
        let outbox = Outbox::new(2, OutboxPolicy::Block);
        outbox.try_push(Bytes::from_static(b"a")).unwrap();
        outbox.try_push(Bytes::from_static(b"b")).unwrap();
        assert_eq!(
            outbox.try_push(Bytes::from_static(b"c")),
            Err(PushError::Full)
        );
        let mut one = Vec::new();
        assert_eq!(outbox.take(&mut one, 1), 1);
        assert_eq!(one, [Bytes::from_static(b"a")]);
        outbox.try_push(Bytes::from_static(b"c")).unwrap();
        assert_eq!(outbox.len(), 2);
    }

    #[tokio::test]
    async fn blocked_sender_waits_for_a_slot_and_close_releases_it() {
        let outbox = std::sync::Arc::new(Outbox::new(1, OutboxPolicy::Block));
        outbox.push(Bytes::from_static(b"a")).await.unwrap();
        let waiting = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.push(Bytes::from_static(b"b")).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        frames(&outbox);
        assert_eq!(waiting.await.unwrap(), Ok(Pushed::Queued));

        let waiting = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.push(Bytes::from_static(b"c")).await })
        };
        tokio::task::yield_now().await;
        outbox.close();
        assert_eq!(waiting.await.unwrap(), Err(PushError::Closed));
        assert_eq!(
            outbox.try_push(Bytes::from_static(b"d")),
            Err(PushError::Closed)
        );
    }

    #[test]
    fn take_stops_after_the_byte_budget() {
        let outbox = Outbox::new(10, OutboxPolicy::DropOldest);
        for _ in 0..4 {
            outbox.try_push(Bytes::from_static(b"12345")).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(outbox.take(&mut out, 6), 2);
        assert_eq!(outbox.len(), 2);
    }
}

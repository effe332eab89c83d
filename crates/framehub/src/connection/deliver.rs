//! Where a connection's frames go: its node's queue, the listener's raw
//! queue or group stream, or the request handler; and what happens when
//! they do not fit (wait for room within the queue's grace, or for good
//! with `block`; then drop, counted).

use std::sync::Arc;

use tokio::time::Instant;

use super::dispatch::Dispatcher;
use super::proto::Core;
use super::{FAR_FUTURE, cancel_reason};
use crate::config::OverflowPolicy;
use crate::context::ListenerShared;
use crate::event::CloseReason;
use crate::group::Inbox;
use crate::registry::Peer;
use crate::stats::{DropReason, ListenerCounters};

/// One connection's way to its consumer.
pub(super) struct Delivery {
    /// The queue or group stream this connection's frames go to, once
    /// known.
    queue: Option<Inbox>,
    /// Why frames are dropped while there is no queue.
    no_queue: DropReason,
    /// Whether this connection counts towards its node's health.
    bound_to_node: bool,
    /// The listener's request handler, if it has one: every frame goes to
    /// it instead of a queue.
    dispatcher: Option<Dispatcher>,
}

impl Delivery {
    pub(super) fn new(shared: &Arc<ListenerShared>, link: &Arc<Peer>) -> Delivery {
        Delivery {
            queue: shared.inbox(),
            no_queue: DropReason::MissingNodeId,
            bound_to_node: false,
            dispatcher: shared
                .handler
                .clone()
                .map(|h| Dispatcher::start(h, shared.clone(), link.clone())),
        }
    }

    /// The request dispatcher, for the connection to finish it.
    pub(super) fn take_dispatcher(&mut self) -> Option<Dispatcher> {
        self.dispatcher.take()
    }

    /// The connection ended: its node no longer counts it.
    pub(super) fn close(&mut self) {
        if self.bound_to_node
            && let Some(Inbox::Queue(queue)) = &self.queue
        {
            queue.connection_unbound();
        }
    }

    /// Looks up the queue of the connection's node, once it is bound
    /// (grouped delivery needs none: every frame goes to the listener's
    /// stream).
    pub(super) fn resolve_queue(&mut self, node: Option<&Arc<str>>, shared: &ListenerShared) {
        let Some(node) = node else {
            return;
        };
        if shared.groups.is_some() || shared.raw_queue.is_some() {
            // Grouped delivery: every frame goes to the listener's stream;
            // a raw listener's `length` streams (acknowledged delivery)
            // go to its receiver.
            return;
        }
        match shared
            .router
            .bind(node, shared.config.queue, &shared.counters)
        {
            Ok(queue) => {
                self.bound_to_node = true;
                self.queue = Some(Inbox::Queue(queue));
            }
            Err(reason) => self.no_queue = reason,
        }
    }

    /// Drops what is left of the batch for `reason`: counted, and the
    /// batch cleared.
    fn drop_batch(core: &mut Core, reason: DropReason) -> u64 {
        let n = core.batch().len() as u64;
        core.batch().clear();
        core.dropped(reason, n);
        n
    }

    /// Pushes the frames of the core's batch to the connection's queue or
    /// group stream (or the request handler), waiting for room as the
    /// queue's overflow policy says; whatever cannot be delivered is
    /// counted as dropped.
    pub(super) async fn deliver(
        &mut self,
        core: &mut Core,
        shared: &ListenerShared,
        link: &Peer,
    ) -> Result<(), CloseReason> {
        if core.batch().is_empty() {
            return Ok(());
        }
        if self.dispatcher.is_some() {
            return self.dispatch_batch(core, shared, link).await;
        }
        if self.queue.is_none() {
            // The node was unknown at bind time; it may have been
            // registered since. One lookup per read, not per frame.
            self.resolve_queue(core.node(), shared);
        }
        let Some(queue) = self.queue.clone() else {
            let reason = self.no_queue;
            let n = Self::drop_batch(core, reason);
            core.warn_drop(reason, n, &"no receiver for this node");
            rewind_if_acked(core);
            return Ok(());
        };
        // A consumer that keeps up on average may just not have been
        // scheduled yet: until `full_grace` has passed, frames that do not
        // fit wait for room instead of being dropped.
        let grace = match queue.policy() {
            OverflowPolicy::Block => None,
            _ => Some(Instant::now() + queue.full_grace()),
        };
        // With `block`, a shutdown does not drop what was read: the
        // consumers drain while the hub waits (`shutdown_grace`), and only
        // what is left when the queues are finished is dropped, counted as
        // `shutdown`.
        let mut draining = false;
        loop {
            let may_drop = grace.is_some_and(|deadline| Instant::now() >= deadline);
            let out = match core.ack_stream().cloned() {
                // Acknowledged delivery: frames go to the queue in the
                // node's order, whichever of its connections read them.
                Some(stream) => {
                    let (out, filtered) =
                        stream.deliver_in_order(core.batch(), |batch| queue.push(batch, may_drop));
                    core.dropped(DropReason::Duplicate, filtered.duplicates);
                    core.dropped(DropReason::Rewound, filtered.stale);
                    out
                }
                None => queue.push(core.batch(), may_drop),
            };
            let closed = if shared.cancel.is_cancelled() {
                DropReason::Shutdown
            } else {
                DropReason::ReceiverClosed
            };
            let counters = &shared.counters;
            core.counts.delivered += out.enqueued as u64;
            ListenerCounters::add(&counters.frames_delivered, out.enqueued as u64);
            ListenerCounters::add(&counters.duplicates, out.duplicates as u64);
            ListenerCounters::add(&counters.groups_published, out.groups_published as u64);
            core.dropped(DropReason::QueueFull, out.dropped_full as u64);
            core.dropped(closed, out.dropped_closed as u64);
            // Acknowledged delivery: a frame a drop policy evicted (a node
            // whose receiver was made with a dropping policy) would be
            // covered by a later ack; rewinding makes its client resend.
            if out.dropped_closed > 0 || out.dropped_full > 0 {
                rewind_if_acked(core);
            }
            if out.dropped_full > 0
                && let Some(suppressed) = queue.full_warning().check()
            {
                tracing::warn!(
                    node = %queue.name(),
                    peer = %link.addr,
                    conn = link.conn,
                    policy = ?queue.policy(),
                    suppressed,
                    "receiver queue full; dropping frames"
                );
            }
            if core.batch().is_empty() {
                if out.filling {
                    // A busy socket would otherwise be read again and again
                    // (tokio's budget allows 128 reads) before the consumer
                    // gets a turn: let it drain before the queue overflows.
                    tokio::task::yield_now().await;
                }
                return Ok(());
            }
            // Stop reading this socket until the consumer makes room (for
            // good with `block`, so TCP pushes back on the sender; until the
            // grace ends otherwise).
            let deadline = grace.unwrap_or(Instant::now() + FAR_FUTURE);
            let rest = core.batch().len();
            // A fair queue counts room per lane: this batch's.
            let lane = core
                .batch()
                .first()
                .map_or(link.conn, |i| crate::receiver::lane_of(&i.frame));
            tokio::select! {
                biased;
                _ = link.cancel.cancelled(), if !draining => {
                    if grace.is_none() && shared.cancel.is_cancelled() {
                        draining = true;
                        continue;
                    }
                    Self::drop_batch(core, DropReason::QueueFull);
                    rewind_if_acked(core);
                    return Err(cancel_reason(shared, link));
                }
                // Room for the whole rest (or a full queue's worth): waking
                // for a handful of slots would push a few frames per wakeup.
                _ = queue.has_room(lane, rest) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Hands the read's frames to the request handler, in order, waiting
    /// while the connection has `max_in_flight` requests unanswered.
    async fn dispatch_batch(
        &mut self,
        core: &mut Core,
        shared: &ListenerShared,
        link: &Peer,
    ) -> Result<(), CloseReason> {
        // (The batch was compacted as it was decoded: a request waiting in
        // the handler does not pin the read buffer.)
        let Some(dispatcher) = &self.dispatcher else {
            return Ok(());
        };
        let cancel = &link.cancel;
        let mut dispatched = 0;
        let mut refused = 0;
        // Drained in place: the batch keeps its allocation for the next
        // read.
        let mut items = core.batch().drain(..);
        for item in items.by_ref() {
            if dispatcher
                .dispatch(item.frame.payload, item.frame.source, cancel)
                .await
                .is_err()
            {
                // The one refused plus the rest of the read.
                refused = 1 + items.len() as u64;
                break;
            }
            dispatched += 1;
        }
        drop(items);
        core.counts.requests += dispatched;
        if refused > 0 {
            core.dropped(DropReason::Unanswered, refused);
            return Err(cancel_reason(shared, link));
        }
        Ok(())
    }
}

/// Acknowledged delivery: frames of this connection were accepted and then
/// not delivered; a later ack must not cover them, so the node's marks
/// fall back to what is durable and its connections close (the client
/// sends again from its last ack).
fn rewind_if_acked(core: &Core) {
    if let Some(stream) = core.ack_stream() {
        stream.rewind();
    }
}

//! A connection's side of its listener's request [`Handler`]: each frame
//! is handed to the handler as a task of its own, at most `max_in_flight`
//! at a time, and the replies are sent in request order through the
//! connection's egress.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::error::Elapsed;
use tokio_util::sync::CancellationToken;

use crate::context::ListenerShared;
use crate::egress;
use crate::frame::Source;
use crate::handler::{Failure, Handler, OnFailure, Outcome, Replies, Request};
use crate::registry::Peer;
use crate::stats::{DropReason, ListenerCounters};

/// One request whose replies are still to be sent.
struct InFlight {
    payload: Bytes,
    task: JoinHandle<Result<Outcome, Elapsed>>,
    /// Held until the replies are queued: the in-flight bound.
    _slot: OwnedSemaphorePermit,
}

/// What a connection's handler did, for its [`crate::ConnectionCounts`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct HandlerTotals {
    pub(crate) errors: u64,
    pub(crate) timeouts: u64,
    pub(crate) panics: u64,
}

/// A connection's side of its listener's handler: hands requests to it
/// and runs the task that sends their replies in order.
pub(crate) struct Dispatcher {
    handler: Handler,
    listener: Arc<ListenerShared>,
    slots: Arc<Semaphore>,
    queue: mpsc::Sender<InFlight>,
    stop: CancellationToken,
    replier: JoinHandle<HandlerTotals>,
}

impl Dispatcher {
    pub(crate) fn start(
        handler: Handler,
        listener: Arc<ListenerShared>,
        peer: Arc<Peer>,
    ) -> Dispatcher {
        let n = handler.max_in_flight_of();
        // The channel holds at most as many as there are slots, so sending
        // into it never waits.
        let (queue, rx) = mpsc::channel(n);
        let stop = peer.cancel.child_token();
        let replier = tokio::spawn(reply_in_order(
            rx,
            handler.on_failure_of(),
            handler.timeout_of(),
            listener.clone(),
            peer,
            stop.clone(),
        ));
        Dispatcher {
            handler,
            listener,
            slots: Arc::new(Semaphore::new(n)),
            queue,
            stop,
            replier,
        }
    }

    /// Hands one request to the handler, waiting while `max_in_flight` of
    /// this connection's are unanswered. `Err` gives the payload back when
    /// the connection is being cancelled meanwhile.
    pub(crate) async fn dispatch(
        &self,
        payload: Bytes,
        source: Arc<Source>,
        cancel: &CancellationToken,
    ) -> Result<(), Bytes> {
        let slot = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(payload),
            slot = self.slots.clone().acquire_owned() => slot,
        };
        // The semaphore is never closed, so acquiring cannot fail.
        let Ok(slot) = slot else { return Err(payload) };
        let task = self.handler.spawn(Request::new(
            payload.clone(),
            source,
            self.listener.counters.clone(),
        ));
        ListenerCounters::add(&self.listener.counters.requests, 1);
        let in_flight = InFlight {
            payload,
            task,
            _slot: slot,
        };
        if let Err(e) = self.queue.try_send(in_flight) {
            // Only if the reply task ended early (it stopped on cancel).
            let in_flight = e.into_inner();
            in_flight.task.abort();
            self.listener.counters.dropped(DropReason::Unanswered, 1);
        }
        Ok(())
    }

    /// No more requests. With `answer`, waits for the replies to every
    /// request handed over (each bounded by the handler's timeout);
    /// without, abandons them (counted as `unanswered`).
    pub(crate) async fn finish(self, answer: bool) -> HandlerTotals {
        drop(self.queue);
        if !answer {
            self.stop.cancel();
        }
        self.replier.await.unwrap_or_default()
    }
}

/// Sends the replies of each request, in the order the requests came.
async fn reply_in_order(
    mut rx: mpsc::Receiver<InFlight>,
    on_failure: OnFailure,
    timeout: Duration,
    listener: Arc<ListenerShared>,
    peer: Arc<Peer>,
    stop: CancellationToken,
) -> HandlerTotals {
    let counters = &listener.counters;
    let mut totals = HandlerTotals::default();
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            next = rx.recv() => next,
        };
        let Some(mut request) = next else { break };
        let outcome = tokio::select! {
            biased;
            _ = stop.cancelled() => {
                request.task.abort();
                counters.dropped(DropReason::Unanswered, 1);
                break;
            }
            outcome = &mut request.task => outcome,
        };
        let failure = match outcome {
            Ok(Ok(Ok(replies))) => {
                send(&listener, &peer, replies);
                continue;
            }
            Ok(Ok(Err(e))) => {
                totals.errors += 1;
                ListenerCounters::add(&counters.handler_errors, 1);
                Failure::Error(e)
            }
            Ok(Err(_elapsed)) => {
                totals.timeouts += 1;
                ListenerCounters::add(&counters.handler_timeouts, 1);
                Failure::TimedOut(timeout)
            }
            Err(e) if e.is_panic() => {
                totals.panics += 1;
                ListenerCounters::add(&counters.handler_panics, 1);
                tracing::warn!(peer = %peer.addr, conn = peer.conn, listener = %listener.name, "request handler panicked; the connection goes on");
                Failure::Panicked
            }
            Err(_) => {
                // Aborted from outside: only at shutdown.
                counters.dropped(DropReason::Unanswered, 1);
                continue;
            }
        };
        // The application's error reply may itself panic; that must not
        // take the connection's replies down with it.
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            on_failure(&request.payload, &failure)
        }));
        match built {
            Ok(replies) => send(&listener, &peer, replies),
            Err(_) => {
                ListenerCounters::add(&counters.handler_panics, 1);
                counters.dropped(DropReason::Unanswered, 1);
            }
        }
    }
    // Requests never answered: stop their handlers, count them.
    rx.close();
    while let Ok(request) = rx.try_recv() {
        request.task.abort();
        counters.dropped(DropReason::Unanswered, 1);
    }
    totals
}

/// Frames and queues one request's replies on the connection's egress.
fn send(listener: &ListenerShared, peer: &Peer, replies: Replies) {
    for reply in replies {
        match egress::encode(listener, &reply) {
            Ok(wire) => {
                egress::deliver_reply(listener, peer, &wire);
            }
            Err(e) => {
                listener.counters.dropped(DropReason::ReplyUnencodable, 1);
                tracing::warn!(peer = %peer.addr, conn = peer.conn, listener = %listener.name, error = %e, "dropping a reply the framing cannot carry");
            }
        }
    }
}

//! Request handlers: a listener's [`Handler`] is called for each frame and
//! answers with zero or more frames on the same connection, in request
//! order, through the connection's one egress writer.
//!
//! Per connection, each request runs as its own task under the handler's
//! timeout, so a slow request delays only the replies after it on its own
//! connection. At most `max_in_flight` requests of a connection are
//! running or waiting to be answered; beyond that the connection stops
//! reading and TCP pushes back on the sender. A handler error, a timeout
//! or a panic is answered by the application's error reply
//! ([`Handler::on_failure`]) and counted; the connection goes on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::error::Elapsed;
use tokio_util::sync::CancellationToken;

use crate::egress;
use crate::listener::ListenerShared;
use crate::receiver::Source;
use crate::registry::Peer;
use crate::stats::{Counters, DropReason, ListenerCounters};

/// The frames a handler answers with, each framed in the listener's
/// framing; empty for no answer.
pub type Replies = Vec<Bytes>;

/// What a handler may fail with; the application turns it into an error
/// reply with [`Handler::on_failure`].
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// How long a request may run by default before it is answered as timed
/// out.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How many requests of one connection may be running or waiting to be
/// answered by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

type Outcome = Result<Replies, HandlerError>;
type BoxFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;
type Call = Arc<dyn Fn(Request) -> BoxFuture + Send + Sync>;
type OnFailure = Arc<dyn Fn(&Bytes, &Failure) -> Replies + Send + Sync>;

/// One frame handed to a handler.
pub struct Request {
    /// The frame, framing removed.
    pub payload: Bytes,
    /// Where it came from: connection id, peer address, listener, node.
    pub source: Arc<Source>,
    listener: Arc<ListenerShared>,
}

impl Request {
    /// The counters of the listener the request came in on.
    pub fn listener_counters(&self) -> Counters {
        self.listener.counters.snapshot()
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("payload", &self.payload)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Why a request got no answer of its own handler.
#[derive(Debug)]
#[non_exhaustive]
pub enum Failure {
    /// The handler returned this error.
    Error(HandlerError),
    /// The handler ran longer than its timeout and was cancelled.
    TimedOut(Duration),
    /// The handler panicked.
    Panicked,
}

/// A request handler: an async function from a [`Request`] to the frames
/// that answer it, with a timeout, a bound on requests in flight per
/// connection, and the error reply for a failed request. Cheap to clone.
///
/// ```
/// use framehub::handler::{Failure, Handler};
/// let echo = Handler::new(|req| async move { Ok(vec![req.payload]) })
///     .timeout(std::time::Duration::from_secs(1))
///     .on_failure(|_request, failure| match failure {
///         Failure::TimedOut(_) => vec!["error timeout".into()],
///         _ => vec!["error".into()],
///     });
/// ```
#[derive(Clone)]
pub struct Handler {
    call: Call,
    on_failure: OnFailure,
    timeout: Duration,
    max_in_flight: usize,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("timeout", &self.timeout)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

impl Handler {
    /// A handler that runs `f` for each request, with the default timeout
    /// (5 s), 64 requests in flight per connection and no error reply.
    pub fn new<F, Fut>(f: F) -> Handler
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Replies, HandlerError>> + Send + 'static,
    {
        Handler {
            call: Arc::new(move |req| Box::pin(f(req))),
            on_failure: Arc::new(|_, _| Vec::new()),
            timeout: DEFAULT_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }

    /// How long one request may run before it is cancelled and answered
    /// by [`Handler::on_failure`] with [`Failure::TimedOut`].
    pub fn timeout(mut self, timeout: Duration) -> Handler {
        self.timeout = timeout;
        self
    }

    /// How many requests of one connection may be running or waiting for
    /// their turn to be answered (at least 1).
    pub fn max_in_flight(mut self, n: usize) -> Handler {
        self.max_in_flight = n.max(1);
        self
    }

    /// Builds the reply to a request (its payload is given) whose handler
    /// failed, timed out or panicked. Without it such a request gets no
    /// reply (still counted).
    pub fn on_failure<F>(mut self, f: F) -> Handler
    where
        F: Fn(&Bytes, &Failure) -> Replies + Send + Sync + 'static,
    {
        self.on_failure = Arc::new(f);
        self
    }

    /// Calls the handler's function alone, without timeout or failure
    /// handling (a router's route runs under its router's).
    pub(crate) fn call(&self, req: Request) -> BoxFuture {
        (self.call)(req)
    }

    pub(crate) fn timeout_of(&self) -> Duration {
        self.timeout
    }

    /// Runs the handler for `req` as a task of its own, under the timeout.
    fn spawn(&self, req: Request) -> JoinHandle<Result<Outcome, Elapsed>> {
        let call = self.call.clone();
        let timeout = self.timeout;
        // The call itself runs inside the task, so a panic while building
        // the future is caught like one while running it.
        tokio::spawn(async move { tokio::time::timeout(timeout, call(req)).await })
    }
}

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
        let n = handler.max_in_flight;
        // The channel holds at most as many as there are slots, so sending
        // into it never waits.
        let (queue, rx) = mpsc::channel(n);
        let stop = peer.cancel.child_token();
        let replier = tokio::spawn(reply_in_order(
            rx,
            handler.on_failure.clone(),
            handler.timeout,
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
        let task = self.handler.spawn(Request {
            payload: payload.clone(),
            source,
            listener: self.listener.clone(),
        });
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

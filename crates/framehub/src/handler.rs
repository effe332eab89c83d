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
use tokio::task::JoinHandle;
use tokio::time::error::Elapsed;

use crate::frame::Source;
use crate::stats::{Counters, ListenerCounters};

/// The frames a handler answers with, each framed in the listener's
/// framing; empty for no answer.
pub type Replies = Vec<Bytes>;

/// What a handler may fail with; the application turns it into an error
/// reply with [`Handler::on_failure`].
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// How long a request may run by default before it is answered as timed
/// out.
pub const DEFAULT_TIMEOUT: Duration = crate::config::DEFAULT_HANDLER_TIMEOUT;

/// How many requests of one connection may be running or waiting to be
/// answered by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = crate::config::DEFAULT_HANDLER_MAX_IN_FLIGHT;

pub(crate) type Outcome = Result<Replies, HandlerError>;
type BoxFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;
type Call = Arc<dyn Fn(Request) -> BoxFuture + Send + Sync>;
pub(crate) type OnFailure = Arc<dyn Fn(&Bytes, &Failure) -> Replies + Send + Sync>;

/// One frame handed to a handler.
pub struct Request {
    /// The frame, framing removed.
    pub payload: Bytes,
    /// Where it came from: connection id, peer address, listener, node.
    pub source: Arc<Source>,
    counters: Arc<ListenerCounters>,
}

impl Request {
    pub(crate) fn new(
        payload: Bytes,
        source: Arc<Source>,
        counters: Arc<ListenerCounters>,
    ) -> Request {
        Request {
            payload,
            source,
            counters,
        }
    }

    /// The counters of the listener the request came in on.
    pub fn listener_counters(&self) -> Counters {
        self.counters.snapshot()
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

    /// Runs this handler's function for `req`, without its own timeout or
    /// failure reply: for a handler that wraps another (rewrites a request,
    /// then hands it on), whose timeout and failure reply then apply.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use framehub::handler::Handler;
    /// let echo = Handler::new(|req| async move { Ok(vec![req.payload]) });
    /// // Answers in upper case what `echo` answers.
    /// let shout = Handler::new(move |mut req| {
    ///     req.payload = Bytes::from(req.payload.to_ascii_uppercase());
    ///     echo.handle(req)
    /// });
    /// ```
    pub fn handle(
        &self,
        req: Request,
    ) -> impl Future<Output = Result<Replies, HandlerError>> + Send + use<> {
        self.call(req)
    }

    /// Calls the handler's function alone, without timeout or failure
    /// handling (a router's route runs under its router's).
    pub(crate) fn call(&self, req: Request) -> BoxFuture {
        (self.call)(req)
    }

    pub(crate) fn timeout_of(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn max_in_flight_of(&self) -> usize {
        self.max_in_flight
    }

    pub(crate) fn on_failure_of(&self) -> OnFailure {
        self.on_failure.clone()
    }

    /// Runs the handler for `req` as a task of its own, under the timeout.
    pub(crate) fn spawn(&self, req: Request) -> JoinHandle<Result<Outcome, Elapsed>> {
        let call = self.call.clone();
        let timeout = self.timeout;
        // The call itself runs inside the task, so a panic while building
        // the future is caught like one while running it.
        tokio::spawn(async move { tokio::time::timeout(timeout, call(req)).await })
    }
}

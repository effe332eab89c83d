//! Egress and commands across instances: every instance subscribes to
//! `<prefix>.send.<node>` and `<prefix>.broadcast.<listener>` and writes
//! each message to the devices it holds ([`EgressBridge`]); a listener's
//! requests can be answered by a NATS service ([`request_handler`]).
//!
//! A `send` message reaches the node wherever it is connected: every
//! instance gets it, the one holding the node writes it. When the message
//! has a reply subject, the instances that wrote it answer with
//! `{"clients":N,"instance":"..."}`; an instance that does not hold the
//! node stays silent, so a requester that hears nothing within its timeout
//! knows no instance holds it. A `broadcast` is answered by every instance
//! with how many of its clients took it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::task::JoinHandle;

use crate::handler::{Failure, Handler, HandlerError};
use crate::hub::Hub;
use crate::nats::NatsError;
use crate::nats::config::NatsHandlerConfig;
use crate::nats::sink::{HEADER_CONN, HEADER_LISTENER, HEADER_NODE, HEADER_PEER};
use crate::nats::subject;

/// Counters of the egress bridge.
#[derive(Debug, Default)]
pub struct EgressStats {
    /// `send` messages for a node this instance holds, written.
    pub sent: AtomicU64,
    /// `broadcast` messages written.
    pub broadcasts: AtomicU64,
    /// Messages for a node this instance does not hold (ignored).
    pub not_here: AtomicU64,
    /// Messages that could not be written (bad subject, framing refused).
    pub refused: AtomicU64,
}

/// The running egress bridge; stops when dropped or on [`EgressBridge::stop`].
pub struct EgressBridge {
    task: JoinHandle<()>,
    stats: Arc<EgressStats>,
}

impl EgressBridge {
    /// Subscribes on `client` to `<prefix>.send.*` and
    /// `<prefix>.broadcast.*` and writes what comes to `hub`'s clients.
    /// `instance` names this instance in replies.
    pub async fn start(
        client: async_nats::Client,
        hub: Hub,
        prefix: &str,
        instance: String,
    ) -> Result<EgressBridge, NatsError> {
        let sub = |what: &str| format!("{prefix}.{what}.*");
        let send = client
            .subscribe(sub("send"))
            .await
            .map_err(|e| NatsError::Connect(e.to_string()))?;
        let broadcast = client
            .subscribe(sub("broadcast"))
            .await
            .map_err(|e| NatsError::Connect(e.to_string()))?;
        let stats = Arc::new(EgressStats::default());
        let task = tokio::spawn(run(
            client,
            hub,
            futures_util::stream::select(send, broadcast),
            instance,
            stats.clone(),
        ));
        Ok(EgressBridge { task, stats })
    }

    /// Its counters.
    pub fn stats(&self) -> &Arc<EgressStats> {
        &self.stats
    }

    /// Unsubscribes.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for EgressBridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    client: async_nats::Client,
    hub: Hub,
    mut messages: impl futures_util::Stream<Item = async_nats::Message> + Unpin,
    instance: String,
    stats: Arc<EgressStats>,
) {
    while let Some(msg) = messages.next().await {
        let mut tokens = msg.subject.rsplitn(3, '.');
        let target = tokens.next().and_then(subject::name);
        let kind = tokens.next();
        let (written, is_send) = match (kind, target) {
            (Some("send"), Some(node)) => {
                // Every instance gets the message; only the holder counts it.
                if !holds(&hub, &node) {
                    stats.not_here.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                (hub.send_to_node(&node, &msg.payload), true)
            }
            (Some("broadcast"), Some(listener)) => {
                (hub.broadcast_on(&listener, &msg.payload), false)
            }
            _ => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(subject = %msg.subject, "egress: not a send or broadcast subject");
                continue;
            }
        };
        let clients = match written {
            Ok(n) => n,
            Err(e) => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(subject = %msg.subject, error = %e, "egress: message not written");
                if is_send {
                    continue;
                }
                0
            }
        };
        if is_send {
            stats.sent.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.broadcasts.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(reply) = msg.reply {
            let body = serde_json::json!({ "clients": clients, "instance": instance });
            if let Err(e) = client.publish(reply, body.to_string().into()).await {
                tracing::debug!(error = %e, "egress: cannot answer");
            }
        }
    }
}

/// Whether this instance holds a connection of `node` (it may hold one
/// whose buffer is full: then it answers 0).
fn holds(hub: &Hub, node: &str) -> bool {
    hub.connections()
        .iter()
        .any(|c| c.node.as_deref() == Some(node))
}

/// The reply a device gets when the service failed: one frame,
/// `{"type":"error","error":"timeout"}` (or `"no responders"`, or the
/// client's error).
fn error_reply(failure: &Failure) -> Bytes {
    let why = match failure {
        Failure::TimedOut(_) => "timeout".to_owned(),
        Failure::Error(e) => e.to_string(),
        Failure::Panicked => "internal error".to_owned(),
    };
    // Written by hand so that `type` comes first, as in every frame of the
    // node protocol.
    let why = serde_json::Value::String(why).to_string();
    Bytes::from(format!("{{\"type\":\"error\",\"error\":{why}}}"))
}

/// A request handler that sends each request frame as a NATS request to
/// `config.nats` (its source in headers, as the sink's) and writes the
/// reply's payload back to the device; an empty reply payload answers
/// nothing. Replies go back in request order, with the timeout and
/// in-flight bound of any [`Handler`]; a request with no answer in time
/// gets `{"type":"error","error":"timeout"}`, one no service listens to
/// `{"type":"error","error":"no responders"}`.
pub fn request_handler(client: async_nats::Client, config: &NatsHandlerConfig) -> Handler {
    let subject = config.nats.clone();
    let timeout = config.timeout;
    Handler::new(move |req| {
        let client = client.clone();
        let subject = subject.clone();
        async move {
            let s = &req.source;
            let mut headers = HeaderMap::new();
            headers.insert(HEADER_LISTENER, &*s.listener);
            if let Some(node) = &s.node {
                headers.insert(HEADER_NODE, &**node);
            }
            headers.insert(HEADER_CONN, s.conn.to_string().as_str());
            headers.insert(HEADER_PEER, s.peer.to_string().as_str());
            let request = async_nats::Request::new()
                .payload(req.payload)
                .headers(headers)
                // The handler's own timeout cancels first; this one only
                // keeps the client from waiting longer than that.
                .timeout(Some(timeout + Duration::from_millis(100)));
            match client.send_request(subject, request).await {
                Ok(reply) if reply.payload.is_empty() => Ok(Vec::new()),
                Ok(reply) => Ok(vec![reply.payload]),
                Err(e) => {
                    let why: HandlerError = match e.kind() {
                        async_nats::client::RequestErrorKind::NoResponders => {
                            "no responders".into()
                        }
                        async_nats::client::RequestErrorKind::TimedOut => "timeout".into(),
                        _ => format!("nats: {e}").into(),
                    };
                    Err(why)
                }
            }
        }
    })
    .timeout(config.timeout)
    .max_in_flight(config.max_in_flight)
    .on_failure(|_request, failure| vec![error_reply(failure)])
}

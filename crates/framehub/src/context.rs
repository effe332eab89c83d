//! What every connection of one listener shares ([`ListenerShared`]), and
//! what every listener of a hub shares ([`HubContext`]).
//!
//! A leaf of the crate's layers: the accept loop, the connection task,
//! egress, the request dispatcher and the statistics all take these from
//! here, and this module imports none of them.

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};
use tokio::sync::broadcast;
use tokio_util::codec::Encoder;
use tokio_util::sync::CancellationToken;

use crate::ack::AckTable;
use crate::budget::PartialBudget;
use crate::codec::{CodecError, FrameEncoder};
use crate::config::{Delivery, ListenerConfig, Protocol};
use crate::event::ConnectionEvent;
use crate::group::{GroupQueue, Inbox};
use crate::handler::Handler;
use crate::history::ConnectionHistory;
use crate::node::{NodeProtocol, heartbeat_payload};
use crate::receiver::Queue;
use crate::registry::Peers;
use crate::router::Router;
use crate::secret::Tokens;
use crate::stats::{ListenerCounters, WarnLimiter};
use crate::tls::Tls;

/// Where a listener's accept loop stands, for health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AcceptState {
    /// Bound; the loop has not started yet.
    Starting,
    /// Accepting; the last `accept()` succeeded (or none was tried yet).
    Accepting,
    /// `accept()` fails for want of resources (out of file descriptors,
    /// ...), or the listening socket failed and is being rebuilt; the loop
    /// backs off and retries.
    Failing {
        /// The error.
        error: String,
        /// When it happened.
        at: Instant,
    },
    /// The loop ended (the hub shut down).
    Stopped,
}

/// What every listener of one hub shares: passed down at construction,
/// never reached back for.
#[derive(Clone)]
pub(crate) struct HubContext {
    pub(crate) router: Arc<Router>,
    pub(crate) events: broadcast::Sender<ConnectionEvent>,
    /// Connection ids, unique within the hub.
    pub(crate) next_conn_id: Arc<AtomicU64>,
    /// Cancelled when the hub shuts down.
    pub(crate) cancel: CancellationToken,
    /// Acknowledged delivery's marks, per node and stream.
    pub(crate) acks: Arc<AckTable>,
    /// Where connections that end are recorded.
    pub(crate) history: Arc<ConnectionHistory>,
    /// Bytes of unfinished frames every connection of the hub holds.
    pub(crate) partial_budget: Arc<PartialBudget>,
    /// File descriptors the accept loops leave free (`fd_reserve`).
    pub(crate) fd_reserve: usize,
}

/// What every connection of one listener shares.
pub(crate) struct ListenerShared {
    pub(crate) name: Arc<str>,
    pub(crate) config: ListenerConfig,
    /// Shared with the requests a handler sees
    /// ([`crate::Request::listener_counters`]).
    pub(crate) counters: Arc<ListenerCounters>,
    /// The node protocol's prepared settings (`protocol = "node"`): read
    /// once when a connection opens, replaced when the tokens are
    /// ([`ListenerShared::set_tokens`]), so open connections keep theirs.
    pub(crate) node_protocol: Option<RwLock<Arc<NodeProtocol>>>,
    /// Where frames of a `raw` listener go (`delivery = "receivers"`).
    pub(crate) raw_queue: Option<Arc<Queue>>,
    /// Where every frame of the listener goes with `delivery = "groups"`.
    pub(crate) groups: Option<Arc<GroupQueue>>,
    /// The open connections, for egress and the statistics.
    pub(crate) peers: Peers,
    /// The server heartbeat's wire bytes and period (`server_heartbeat`).
    pub(crate) heartbeat: Option<(Bytes, Duration)>,
    pub(crate) router: Arc<Router>,
    pub(crate) events: broadcast::Sender<ConnectionEvent>,
    pub(crate) next_conn_id: Arc<AtomicU64>,
    pub(crate) cancel: CancellationToken,
    /// Where connections that end are recorded, shared by the hub.
    pub(crate) history: Arc<ConnectionHistory>,
    /// The hub's budget for unfinished frames.
    pub(crate) partial_budget: Arc<PartialBudget>,
    /// File descriptors the accept loop leaves free (`fd_reserve`).
    pub(crate) fd_reserve: usize,
    /// Whether the accept loop runs and its last `accept()` succeeded.
    pub(crate) accept_state: Mutex<AcceptState>,
    /// Rate limit of warnings about rejected connections and auth failures.
    pub(crate) reject_warning: WarnLimiter,
    pub(crate) auth_warning: WarnLimiter,
    /// Rate limit of warnings about clients whose egress buffer is full.
    pub(crate) egress_warning: WarnLimiter,
    /// Rate limit of warnings about dropped frames and connections closed
    /// on an error, over all connections (each connection has its own too).
    pub(crate) drop_warning: Arc<WarnLimiter>,
    pub(crate) close_warning: WarnLimiter,
    /// The request handler: when set, every frame goes to it instead of
    /// a receiver or group stream.
    pub(crate) handler: Option<Handler>,
    /// The listener's TLS, when `tls.cert` is set (loaded by the hub, which
    /// can fail; set after construction).
    pub(crate) tls: Option<Arc<Tls>>,
    /// Rate limit of warnings about failed TLS handshakes.
    pub(crate) tls_warning: WarnLimiter,
    /// Acknowledged delivery's marks, when `[listener.ack]` is on.
    pub(crate) acks: Option<Arc<AckTable>>,
}

impl ListenerShared {
    /// `tokens`: the listener's, files read (node protocol only).
    pub(crate) fn new(
        config: ListenerConfig,
        tokens: &Tokens,
        handler: Option<Handler>,
        hub: &HubContext,
    ) -> ListenerShared {
        let name: Arc<str> = Arc::from(config.name.as_str());
        let node_protocol = (config.protocol == Protocol::Node).then(|| {
            let max_id = hub.router.max_node_id_bytes();
            RwLock::new(Arc::new(node_protocol(&config, tokens, max_id)))
        });
        let (raw_queue, groups) = match (config.delivery, config.protocol) {
            (Delivery::Groups, _) => (None, Some(GroupQueue::new(name.clone(), &config))),
            // Anyone may connect to a raw listener: its queue is fair to
            // each connection, so a flooder loses only its own frames.
            (Delivery::Receivers, Protocol::Raw) => {
                (Some(Queue::fair(name.clone(), config.queue)), None)
            }
            (Delivery::Receivers, Protocol::Node) => (None, None),
        };
        // Validation refused framings without an empty frame, so `frame`
        // only fails for a config that never reaches here.
        let heartbeat = config
            .server_heartbeat
            .and_then(|every| heartbeat_frame(&config).ok().map(|f| (f, every)));
        let acks = config.ack.is_on().then(|| hub.acks.clone());
        ListenerShared {
            name,
            heartbeat,
            config,
            counters: Arc::default(),
            node_protocol,
            raw_queue,
            groups,
            peers: Peers::default(),
            router: hub.router.clone(),
            events: hub.events.clone(),
            next_conn_id: hub.next_conn_id.clone(),
            cancel: hub.cancel.clone(),
            history: hub.history.clone(),
            partial_budget: hub.partial_budget.clone(),
            fd_reserve: hub.fd_reserve,
            reject_warning: WarnLimiter::new(Duration::from_secs(5)),
            auth_warning: WarnLimiter::new(Duration::from_secs(1)),
            accept_state: Mutex::new(AcceptState::Starting),
            egress_warning: WarnLimiter::new(Duration::from_secs(5)),
            drop_warning: Arc::new(WarnLimiter::new(Duration::from_millis(200))),
            close_warning: WarnLimiter::new(Duration::from_secs(1)),
            handler,
            tls: None,
            tls_warning: WarnLimiter::new(Duration::from_secs(1)),
            acks,
        }
    }

    /// The node protocol a connection opening now uses (`None`: raw).
    pub(crate) fn current_node_protocol(&self) -> Option<Arc<NodeProtocol>> {
        self.node_protocol.as_ref().map(|p| p.read().clone())
    }

    /// Whether connections opening now must authenticate.
    pub(crate) fn requires_auth(&self) -> bool {
        self.current_node_protocol()
            .is_some_and(|p| p.requires_auth())
    }

    /// Replaces the tokens new connections are checked against; open
    /// connections keep the ones they were opened with.
    pub(crate) fn set_tokens(&self, tokens: &Tokens) -> Result<(), String> {
        let Some(current) = &self.node_protocol else {
            return Err("tokens need protocol = \"node\"".to_owned());
        };
        if tokens.is_empty() && current.read().requires_auth() {
            // A listener bound to every interface because it had a token
            // must not silently become open to anyone.
            return Err(
                "the new settings have no token; removing authentication needs a restart"
                    .to_owned(),
            );
        }
        let max_id = self.router.max_node_id_bytes();
        *current.write() = Arc::new(node_protocol(&self.config, tokens, max_id));
        Ok(())
    }

    /// Where this listener's frames go before any node is known: its group
    /// stream, or the raw listener's receiver; `None` for per-node queues.
    pub(crate) fn inbox(&self) -> Option<Inbox> {
        match (&self.groups, &self.raw_queue) {
            (Some(groups), _) => Some(Inbox::Groups(groups.clone())),
            (None, Some(queue)) => Some(Inbox::Queue(queue.clone())),
            (None, None) => None,
        }
    }

    /// Records where the accept loop stands (for `Hub::listeners`).
    pub(crate) fn set_accept_state(&self, state: AcceptState) {
        *self.accept_state.lock() = state;
    }

    /// Records a failed `accept()` (for `Hub::listeners`).
    pub(crate) fn accept_failed(&self, error: &io::Error) {
        self.set_accept_state(AcceptState::Failing {
            error: error.to_string(),
            at: Instant::now(),
        });
    }

    /// Sends an event if anyone listens; events are advisory and never block.
    pub(crate) fn emit(&self, event: ConnectionEvent) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(event);
        }
    }
}

fn node_protocol(config: &ListenerConfig, tokens: &Tokens, max_node_id: usize) -> NodeProtocol {
    NodeProtocol::new(
        tokens,
        &config.fields,
        &config.redact,
        config.max_json_depth,
    )
    .with_seq(config.ack.is_on().then_some(config.ack.seq_field.as_str()))
    .with_max_node_id_bytes(max_node_id)
}

/// The bytes of one heartbeat on the wire for this listener.
///
/// Node protocol: `{"type":"heartbeat"}` + `\n` with the configured field
/// names, which the client's node protocol treats as a heartbeat. Any other
/// protocol: an empty frame in the listener's framing (`\n`, a zero length
/// prefix, an empty COBS frame): an empty frame carries nothing an
/// application could mistake for data. `chunk` and `spacepacket` cannot
/// carry one (config validation refuses them).
pub(crate) fn heartbeat_frame(config: &ListenerConfig) -> Result<Bytes, CodecError> {
    let payload = match config.protocol {
        Protocol::Node => heartbeat_payload(&config.fields, None, None),
        Protocol::Raw => Vec::new(),
    };
    let mut wire = BytesMut::new();
    FrameEncoder::new(&config.framing, usize::MAX).encode(&payload[..], &mut wire)?;
    if wire.is_empty() {
        return Err(CodecError::Unencodable("this framing has no empty frame"));
    }
    Ok(wire.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{FramingConfig, LengthPrefix};

    #[test]
    fn heartbeat_frames_per_framing() {
        let node = ListenerConfig::default();
        assert_eq!(
            heartbeat_frame(&node).ok().as_deref(),
            Some(&b"{\"type\":\"heartbeat\"}\n"[..])
        );
        let mut renamed = ListenerConfig::default();
        renamed.fields.msg_type = "kind".into();
        renamed.fields.heartbeat = "ping".into();
        assert_eq!(
            heartbeat_frame(&renamed).ok().as_deref(),
            Some(&b"{\"kind\":\"ping\"}\n"[..])
        );
        let raw = |framing| ListenerConfig {
            framing,
            protocol: Protocol::Raw,
            ..ListenerConfig::default()
        };
        assert_eq!(
            heartbeat_frame(&raw(FramingConfig::Lines)).ok().as_deref(),
            Some(&b"\n"[..])
        );
        assert_eq!(
            heartbeat_frame(&raw(FramingConfig::Length(LengthPrefix::default())))
                .ok()
                .as_deref(),
            Some(&b"\0\0\0\0"[..])
        );
        assert_eq!(
            heartbeat_frame(&raw(FramingConfig::Cobs)).ok().as_deref(),
            Some(&b"\0\x01\0"[..])
        );
        assert!(heartbeat_frame(&raw(FramingConfig::Chunk)).is_err());
        assert!(heartbeat_frame(&raw(FramingConfig::SpacePacket(Default::default()))).is_err());
    }
}

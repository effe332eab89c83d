//! The node protocol as a state machine without I/O: token on the first
//! message, binding of the connection to the first `node_id` (a node with
//! its own token only with that token), heartbeats, the verdict on every
//! frame, and the removal of the token (and `redact` fields) from the
//! frames it delivers.
//!
//! The connection task feeds it frames and acts on its [`Verdict`]s; tests
//! drive it directly with byte strings.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::config::{FieldsConfig, Redacted};
use crate::json::{self, EnvelopeKeys, JsonError, RawValue};
pub use crate::reason::AuthFailure;
use crate::reason::DropReason;
use crate::secret::Tokens;

/// The protocol's settings, prepared once per listener (and again when its
/// tokens are replaced). A connection takes the current one when it opens
/// and keeps it: new tokens apply to new connections.
pub(crate) struct NodeProtocol {
    node_id: Box<[u8]>,
    token: Box<[u8]>,
    msg_type: Box<[u8]>,
    timestamp: Box<[u8]>,
    /// The sequence number's key, on a listener with acknowledged delivery.
    seq: Option<Box<[u8]>>,
    heartbeat: Box<str>,
    shared_token: Option<Box<[u8]>>,
    node_tokens: HashMap<Box<str>, Box<[u8]>>,
    /// Keys removed from delivered frames: the token's, then `redact`.
    redact: Vec<Box<[u8]>>,
    max_depth: usize,
    /// Longest node id a connection may bind to (`nodes.max_node_id_bytes`).
    max_node_id_bytes: usize,
}

/// Never shows a token.
impl std::fmt::Debug for NodeProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeProtocol")
            .field(
                "shared_token",
                &self.shared_token.as_ref().map(|_| Redacted),
            )
            .field("nodes_with_tokens", &self.node_tokens.len())
            .field("redact", &self.redact.len())
            .finish_non_exhaustive()
    }
}

/// What to do with one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Deliver it to the bound node; `timestamp` is the span of the dedup
    /// key inside the frame. With `redact`, the frame carries the token or
    /// a `redact` field: [`NodeSession::redact`] it first.
    Deliver {
        timestamp: Option<Range<usize>>,
        redact: bool,
    },
    /// A heartbeat: keeps the connection alive, never delivered.
    Heartbeat,
    /// Skip it and count why; the connection stays open.
    Skip(DropReason),
    /// Close the connection.
    Reject(AuthFailure),
}

impl NodeProtocol {
    pub(crate) fn new(
        tokens: &Tokens,
        fields: &FieldsConfig,
        redact: &[String],
        max_depth: usize,
    ) -> Self {
        let bytes = |s: &str| s.as_bytes().to_vec().into_boxed_slice();
        NodeProtocol {
            node_id: bytes(&fields.node_id),
            token: bytes(&fields.token),
            msg_type: bytes(&fields.msg_type),
            timestamp: bytes(&fields.timestamp),
            seq: None,
            heartbeat: fields.heartbeat.clone().into_boxed_str(),
            shared_token: tokens.shared.as_deref().map(bytes),
            node_tokens: tokens
                .per_node
                .iter()
                .map(|(node, token)| (node.clone().into_boxed_str(), bytes(token)))
                .collect(),
            redact: std::iter::once(&fields.token)
                .chain(redact)
                .map(|k| bytes(k))
                .collect(),
            max_depth,
            max_node_id_bytes: crate::config::NodesConfig::default().max_node_id_bytes,
        }
    }

    /// Looks for each frame's sequence number in `key` (acknowledged
    /// delivery).
    pub(crate) fn with_seq(mut self, key: Option<&str>) -> Self {
        self.seq = key.map(|k| k.as_bytes().to_vec().into_boxed_slice());
        self
    }

    /// Caps the node id a connection may bind to: a longer one closes it
    /// (`AuthFailure::NodeIdTooLong`).
    pub(crate) fn with_max_node_id_bytes(mut self, max: usize) -> Self {
        self.max_node_id_bytes = max;
        self
    }

    pub(crate) fn requires_auth(&self) -> bool {
        self.shared_token.is_some() || !self.node_tokens.is_empty()
    }

    fn keys(&self) -> EnvelopeKeys<'_> {
        EnvelopeKeys {
            node_id: &self.node_id,
            token: &self.token,
            msg_type: &self.msg_type,
            timestamp: &self.timestamp,
            seq: self.seq.as_deref(),
        }
    }

    /// Whether the frame holds one of the `redact` fields (not the token,
    /// which the envelope scan finds): a cheap search that only frames of
    /// listeners with `redact` set pay. A key written with escapes is
    /// caught by the search for a backslash.
    fn has_redact_field(&self, frame: &[u8]) -> bool {
        self.redact.len() > 1
            && (self.redact[1..]
                .iter()
                .any(|k| memchr::memmem::find(frame, k).is_some())
                || memchr::memchr(b'\\', frame).is_some())
    }

    /// Checks a token in constant time against the node's own token, or
    /// the shared one when the node has none.
    fn token_matches(&self, node: Option<&str>, token: &[u8]) -> bool {
        let expected = node
            .and_then(|n| self.node_tokens.get(n))
            .or(self.shared_token.as_ref());
        match expected {
            Some(expected) => bool::from(expected.as_ref().ct_eq(token)),
            None => false,
        }
    }
}

/// One connection's progress through the protocol.
#[derive(Debug)]
pub(crate) struct NodeSession {
    protocol: Arc<NodeProtocol>,
    authenticated: bool,
    node: Option<Arc<str>>,
    /// The bound node's id as its first frame wrote it (quotes and escapes
    /// included): later frames almost always write it the same way, and
    /// equal raw bytes need no unescaping to compare.
    node_raw: Vec<u8>,
    just_bound: bool,
    /// The sequence number of the last frame delivered, if it had one.
    seq: Option<u64>,
}

impl NodeSession {
    pub(crate) fn new(protocol: Arc<NodeProtocol>) -> Self {
        let authenticated = !protocol.requires_auth();
        NodeSession {
            protocol,
            authenticated,
            node: None,
            node_raw: Vec::new(),
            just_bound: false,
            seq: None,
        }
    }

    /// A session already bound to `node` (named by the client
    /// certificate): authenticated, so no token is asked for, and every
    /// frame naming another node is dropped as `node_mismatch`.
    pub(crate) fn bound(protocol: Arc<NodeProtocol>, node: Arc<str>) -> Self {
        let mut node_raw = Vec::with_capacity(node.len() + 2);
        push_json_string(&mut node_raw, &node);
        NodeSession {
            protocol,
            authenticated: true,
            node: Some(node),
            node_raw,
            just_bound: true,
            seq: None,
        }
    }

    pub(crate) fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The node, once, right after the frame that bound it.
    pub(crate) fn take_just_bound(&mut self) -> Option<Arc<str>> {
        if std::mem::take(&mut self.just_bound) {
            self.node.clone()
        } else {
            None
        }
    }

    /// The sequence number of the frame [`NodeSession::handle`] just
    /// delivered: `None` without one (or one that is not an integer > 0).
    pub(crate) fn seq(&self) -> Option<u64> {
        self.seq
    }

    /// Removes the token and the `redact` fields from a frame this session
    /// delivers (`Verdict::Deliver { redact: true, .. }`), in place;
    /// returns its new length and moves `timestamp` with its bytes.
    pub(crate) fn redact(&self, frame: &mut [u8], timestamp: &mut Option<Range<usize>>) -> usize {
        let protocol = &*self.protocol;
        // The frame was scanned as an object already; an error here would
        // be a bug, and delivering nothing is safer than a token.
        json::remove_members(frame, &protocol.redact, protocol.max_depth, timestamp).unwrap_or(0)
    }

    pub(crate) fn handle(&mut self, frame: &[u8]) -> Verdict {
        let protocol = &*self.protocol;
        let envelope = match json::scan_envelope(frame, &protocol.keys(), protocol.max_depth) {
            Ok(envelope) => envelope,
            Err(_) if !self.authenticated => {
                return Verdict::Reject(AuthFailure::InvalidFirstMessage);
            }
            Err(e) => return Verdict::Skip(skip_reason(&e)),
        };
        // A non-string node_id counts as missing.
        let node_id = envelope.node_id.filter(|v| v.is_string());
        if !self.authenticated {
            let Some(token) = envelope.token.and_then(|t| t.as_str()) else {
                return Verdict::Reject(AuthFailure::MissingToken);
            };
            let node = node_id.and_then(|v| v.as_str());
            if !protocol.token_matches(node.as_deref(), token.as_bytes()) {
                return Verdict::Reject(AuthFailure::WrongToken);
            }
            self.authenticated = true;
        }
        let is_heartbeat = envelope
            .msg_type
            .is_some_and(|t| t.str_eq(&protocol.heartbeat));
        match (&self.node, node_id) {
            (_, None) if is_heartbeat => return Verdict::Heartbeat,
            (_, None) => return Verdict::Skip(DropReason::MissingNodeId),
            (None, Some(id_raw)) => {
                // Binding happens once per connection: only here is the
                // name turned into a string.
                let Some(id) = id_raw.as_str() else {
                    return Verdict::Skip(DropReason::MissingNodeId);
                };
                // Node ids end up in the node table, the connection list
                // and every record: a long one is refused, not stored.
                if id.len() > protocol.max_node_id_bytes {
                    return Verdict::Reject(AuthFailure::NodeIdTooLong);
                }
                // A node with its own token is reachable only with it: the
                // frame that binds it must carry that token, whatever
                // authenticated the connection (the shared token on a
                // heartbeat or a frame naming no node). A frame without it
                // closes the connection, as it would have as the first
                // message: a peer claiming a node it cannot prove is either
                // misconfigured or hostile, and either should be seen.
                if protocol.node_tokens.contains_key(id.as_ref()) {
                    let Some(token) = envelope.token.and_then(|t| t.as_str()) else {
                        return Verdict::Reject(AuthFailure::MissingToken);
                    };
                    if !protocol.token_matches(Some(&id), token.as_bytes()) {
                        return Verdict::Reject(AuthFailure::WrongToken);
                    }
                }
                self.node = Some(Arc::from(id.as_ref()));
                self.node_raw = id_raw.raw().to_vec();
                self.just_bound = true;
            }
            // Every later frame: compare bytes, no string built.
            (Some(bound), Some(id)) => {
                if !json::short_eq(id.raw(), &self.node_raw) && !id.str_eq(bound) {
                    return Verdict::Skip(DropReason::NodeMismatch);
                }
            }
        }
        if is_heartbeat {
            return Verdict::Heartbeat;
        }
        self.seq = envelope.seq.and_then(|v| parse_seq(v.raw()));
        Verdict::Deliver {
            timestamp: envelope.timestamp.map(|ts| span_in(frame, ts)),
            redact: envelope.token.is_some() || protocol.has_redact_field(frame),
        }
    }
}

/// A sequence number: a JSON integer from 1 to `u64::MAX`, written
/// without sign, fraction or exponent.
pub(crate) fn parse_seq(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || raw.len() > 20 || (raw[0] == b'0') {
        return None;
    }
    raw.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// The byte range of `value` within `frame` (it is a sub-slice of it).
fn span_in(frame: &[u8], value: RawValue<'_>) -> Range<usize> {
    let start = value.raw().as_ptr() as usize - frame.as_ptr() as usize;
    start..start + value.raw().len()
}

fn skip_reason(e: &JsonError) -> DropReason {
    match e {
        JsonError::InvalidUtf8 => DropReason::InvalidUtf8,
        JsonError::TooDeep { .. } => DropReason::TooDeep,
        _ => DropReason::InvalidJson,
    }
}

/// Appends `s` to `out` as a JSON string literal, quotes included.
///
/// Field names and node ids come from configuration and may hold any
/// character; escaping them keeps every frame we write valid JSON.
pub(crate) fn push_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// A heartbeat payload (without the newline): `{"type":"heartbeat"}` with
/// the configured names, preceded by `node_id` and `token` when given (what
/// a node sends; the server's own heartbeat names no node).
pub(crate) fn heartbeat_payload(
    fields: &FieldsConfig,
    node_id: Option<&str>,
    token: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(b'{');
    for (key, value) in [(&fields.node_id, node_id), (&fields.token, token)] {
        if let Some(value) = value {
            push_json_string(&mut out, key);
            out.push(b':');
            push_json_string(&mut out, value);
            out.push(b',');
        }
    }
    push_json_string(&mut out, &fields.msg_type);
    out.push(b':');
    push_json_string(&mut out, &fields.heartbeat);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn session(token: Option<&str>, tokens: &[(&str, &str)]) -> NodeSession {
        let tokens = Tokens {
            shared: token.map(str::to_owned),
            per_node: tokens
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect::<BTreeMap<_, _>>(),
        };
        NodeSession::new(Arc::new(NodeProtocol::new(
            &tokens,
            &FieldsConfig::default(),
            &[],
            128,
        )))
    }

    #[test]
    fn first_message_authenticates_and_binds() {
        let mut s = session(Some("secret"), &[]);
        let v = s.handle(br#"{"node_id":"radar3","token":"secret","timestamp":17}"#);
        assert!(matches!(
            v,
            Verdict::Deliver {
                timestamp: Some(_),
                ..
            }
        ));
        assert_eq!(s.take_just_bound().as_deref(), Some("radar3"));
        assert_eq!(s.take_just_bound(), None);
        // Later messages need no token.
        assert!(matches!(
            s.handle(br#"{"node_id":"radar3","timestamp":18}"#),
            Verdict::Deliver { .. }
        ));
    }

    #[test]
    fn timestamp_span_points_at_the_raw_value() {
        let mut s = session(None, &[]);
        let frame = br#"{"node_id":"a","timestamp":1768932172478}"#;
        let Verdict::Deliver {
            timestamp: Some(span),
            ..
        } = s.handle(frame)
        else {
            panic!("expected delivery");
        };
        assert_eq!(&frame[span], b"1768932172478");
    }

    #[test]
    fn wrong_or_missing_token_rejects() {
        let mut s = session(Some("secret"), &[]);
        assert_eq!(
            s.handle(br#"{"node_id":"a","token":"nope"}"#),
            Verdict::Reject(AuthFailure::WrongToken)
        );
        let mut s = session(Some("secret"), &[]);
        assert_eq!(
            s.handle(br#"{"node_id":"a"}"#),
            Verdict::Reject(AuthFailure::MissingToken)
        );
        let mut s = session(Some("secret"), &[]);
        assert_eq!(
            s.handle(b"not json"),
            Verdict::Reject(AuthFailure::InvalidFirstMessage)
        );
    }

    #[test]
    fn per_node_tokens_win_over_the_shared_one() {
        let mut s = session(Some("shared"), &[("radar3", "own")]);
        assert_eq!(
            s.handle(br#"{"node_id":"radar3","token":"shared"}"#),
            Verdict::Reject(AuthFailure::WrongToken)
        );
        let mut s = session(Some("shared"), &[("radar3", "own")]);
        assert!(matches!(
            s.handle(br#"{"node_id":"radar3","token":"own"}"#),
            Verdict::Deliver { .. }
        ));
        let mut s = session(None, &[("radar3", "own")]);
        assert_eq!(
            s.handle(br#"{"node_id":"radar4","token":"own"}"#),
            Verdict::Reject(AuthFailure::WrongToken)
        );
    }

    /// Regression (issue 13, point 6): the shared token used on a message
    /// that binds no node let the connection bind later to any node,
    /// including nodes with their own token.
    #[test]
    fn a_node_with_its_own_token_is_reachable_only_with_it() {
        let shared = || session(Some("shared"), &[("radar3", "own")]);
        // Every way to authenticate without binding a node first.
        let openers: [&[u8]; 4] = [
            br#"{"token":"shared","type":"heartbeat"}"#,
            br#"{"node_id":7,"token":"shared"}"#,
            br#"{"token":"shared","timestamp":1}"#,
            br#"{"node_id":null,"token":"shared","type":"heartbeat"}"#,
        ];
        for opener in openers {
            // Then frames as radar3: without a token, with the shared one,
            // with another node's: closed, never delivered.
            for (claim, failure) in [
                (
                    &br#"{"node_id":"radar3","timestamp":2}"#[..],
                    AuthFailure::MissingToken,
                ),
                (
                    br#"{"node_id":"radar3","token":"shared"}"#,
                    AuthFailure::WrongToken,
                ),
                (
                    br#"{"node_id":"radar\u0033","token":"x"}"#,
                    AuthFailure::WrongToken,
                ),
                (
                    br#"{"node_id":"radar3","token":7}"#,
                    AuthFailure::MissingToken,
                ),
                (
                    br#"{"node_id":"radar3","type":"heartbeat"}"#,
                    AuthFailure::MissingToken,
                ),
            ] {
                let mut s = shared();
                assert!(
                    !matches!(s.handle(opener), Verdict::Reject(_)),
                    "{}",
                    String::from_utf8_lossy(opener)
                );
                assert_eq!(s.handle(claim), Verdict::Reject(failure));
                assert_eq!(s.take_just_bound(), None);
            }
            // With radar3's own token on the binding frame, it binds.
            let mut s = shared();
            s.handle(opener);
            assert!(matches!(
                s.handle(br#"{"node_id":"radar3","token":"own","timestamp":2}"#),
                Verdict::Deliver { .. }
            ));
            assert_eq!(s.take_just_bound().as_deref(), Some("radar3"));
            // A node without a token of its own binds as before.
            let mut s = shared();
            s.handle(opener);
            assert!(matches!(
                s.handle(br#"{"node_id":"radar4","timestamp":2}"#),
                Verdict::Deliver { .. }
            ));
            assert_eq!(s.take_just_bound().as_deref(), Some("radar4"));
            // ... and stays bound to it: radar3 is another node.
            assert_eq!(
                s.handle(br#"{"node_id":"radar3","token":"own"}"#),
                Verdict::Skip(DropReason::NodeMismatch)
            );
        }
        // The shared token naming radar3 on the first message: refused.
        let mut s = shared();
        assert_eq!(
            s.handle(br#"{"node_id":"radar3","token":"shared","type":"heartbeat"}"#),
            Verdict::Reject(AuthFailure::WrongToken)
        );
        // Bound to radar3 with its token: other nodes' frames are dropped.
        let mut s = shared();
        assert_eq!(
            s.handle(br#"{"node_id":"radar3","token":"own","type":"heartbeat"}"#),
            Verdict::Heartbeat
        );
        for other in [
            &br#"{"node_id":"radar4"}"#[..],
            br#"{"node_id":"radar4","token":"shared"}"#,
        ] {
            assert_eq!(s.handle(other), Verdict::Skip(DropReason::NodeMismatch));
        }
        // Per-node tokens only: a message naming no node never authenticates.
        let mut s = session(None, &[("radar3", "own")]);
        assert_eq!(
            s.handle(br#"{"token":"own","type":"heartbeat"}"#),
            Verdict::Reject(AuthFailure::WrongToken)
        );
    }

    #[test]
    fn delivered_frames_lose_the_token_and_redacted_fields() {
        let protocol = Arc::new(NodeProtocol::new(
            &Tokens {
                shared: Some("s".into()),
                ..Tokens::default()
            },
            &FieldsConfig::default(),
            &["password".to_owned()],
            128,
        ));
        let mut s = NodeSession::new(protocol);
        let mut frame = br#"{"node_id":"a","token":"s","timestamp":5,"password":"p"}"#.to_vec();
        let Verdict::Deliver {
            mut timestamp,
            redact: true,
        } = s.handle(&frame)
        else {
            panic!("a frame with a token is delivered, redacted");
        };
        let len = s.redact(&mut frame, &mut timestamp);
        assert_eq!(&frame[..len], br#"{"node_id":"a","timestamp":5}"#);
        assert_eq!(&frame[timestamp.expect("kept")], b"5");
        // Frames without those fields are delivered as they are.
        assert_eq!(
            s.handle(br#"{"node_id":"a","timestamp":6}"#),
            Verdict::Deliver {
                timestamp: Some(27..28),
                redact: false
            }
        );
        assert!(matches!(
            s.handle(br#"{"node_id":"a","pass\u0077ord":1}"#),
            Verdict::Deliver { redact: true, .. }
        ));
    }

    #[test]
    fn heartbeats_bind_but_are_not_delivered() {
        let mut s = session(Some("t"), &[]);
        assert_eq!(
            s.handle(br#"{"node_id":"r","token":"t","type":"heartbeat"}"#),
            Verdict::Heartbeat
        );
        assert_eq!(s.take_just_bound().as_deref(), Some("r"));
        assert_eq!(s.handle(br#"{"type":"heartbeat"}"#), Verdict::Heartbeat);
    }

    #[test]
    fn bad_frames_after_auth_are_skipped_with_a_reason() {
        let mut s = session(None, &[]);
        assert_eq!(s.handle(b"{"), Verdict::Skip(DropReason::InvalidJson));
        assert_eq!(s.handle(b""), Verdict::Skip(DropReason::InvalidJson));
        assert_eq!(
            s.handle(b"{\"node_id\":\"\xff\"}"),
            Verdict::Skip(DropReason::InvalidUtf8)
        );
        assert_eq!(
            s.handle(br#"{"timestamp":1}"#),
            Verdict::Skip(DropReason::MissingNodeId)
        );
        assert_eq!(
            s.handle(br#"{"node_id":7}"#),
            Verdict::Skip(DropReason::MissingNodeId)
        );
        let deep = "[".repeat(100_000);
        assert_eq!(
            s.handle(format!(r#"{{"node_id":"a","x":{deep}"#).as_bytes()),
            Verdict::Skip(DropReason::TooDeep)
        );
        assert!(matches!(
            s.handle(br#"{"node_id":"a"}"#),
            Verdict::Deliver { .. }
        ));
        assert_eq!(
            s.handle(br#"{"node_id":"b"}"#),
            Verdict::Skip(DropReason::NodeMismatch)
        );
    }

    #[test]
    fn the_bound_node_matches_however_its_id_is_escaped() {
        // Bound with an escape; later frames write it plainly, escaped the
        // same way, or escaped differently: all the same node.
        let mut s = session(None, &[]);
        assert!(matches!(
            s.handle(br#"{"node_id":"radar\u0033"}"#),
            Verdict::Deliver { .. }
        ));
        assert_eq!(s.take_just_bound().as_deref(), Some("radar3"));
        for same in [
            &br#"{"node_id":"radar3"}"#[..],
            br#"{"node_id":"radar\u0033"}"#,
            br#"{"node_id":"\u0072adar3"}"#,
        ] {
            assert!(matches!(s.handle(same), Verdict::Deliver { .. }));
        }
        for other in [
            &br#"{"node_id":"radar4"}"#[..],
            br#"{"node_id":"radar\u0034"}"#,
            br#"{"node_id":"radar33"}"#,
        ] {
            assert_eq!(s.handle(other), Verdict::Skip(DropReason::NodeMismatch));
        }
    }

    #[test]
    fn heartbeat_payloads_are_json_the_protocol_accepts() {
        let fields = FieldsConfig::default();
        assert_eq!(
            heartbeat_payload(&fields, None, None),
            br#"{"type":"heartbeat"}"#
        );
        let node = heartbeat_payload(&fields, Some("r\"3\n"), Some("s"));
        assert_eq!(
            node,
            br#"{"node_id":"r\"3\n","token":"s","type":"heartbeat"}"#
        );
        let mut s = session(Some("s"), &[]);
        assert_eq!(s.handle(&node), Verdict::Heartbeat);
        assert_eq!(s.take_just_bound().as_deref(), Some("r\"3\n"));
        let mut odd = Vec::new();
        push_json_string(&mut odd, "\u{1}é\t\\");
        assert_eq!(odd, "\"\\u0001é\\t\\\\\"".as_bytes());
    }

    #[test]
    fn field_names_are_configurable() {
        let fields = FieldsConfig {
            node_id: "id".into(),
            token: "key".into(),
            msg_type: "kind".into(),
            heartbeat: "ping".into(),
            timestamp: "ts".into(),
        };
        let tokens = Tokens {
            shared: Some("k".into()),
            ..Tokens::default()
        };
        let mut s = NodeSession::new(Arc::new(NodeProtocol::new(&tokens, &fields, &[], 128)));
        assert_eq!(
            s.handle(br#"{"id":"x","key":"k","kind":"ping"}"#),
            Verdict::Heartbeat
        );
        assert!(matches!(
            s.handle(br#"{"id":"x","ts":5}"#),
            Verdict::Deliver {
                timestamp: Some(_),
                ..
            }
        ));
    }

    /// A session bound by a client certificate needs no token and drops
    /// frames of any other node, even with a valid token.
    #[test]
    fn a_certificate_bound_session_keeps_to_its_node() {
        let tokens = Tokens {
            shared: Some("k".into()),
            per_node: BTreeMap::new(),
        };
        let protocol = Arc::new(NodeProtocol::new(
            &tokens,
            &FieldsConfig::default(),
            &[],
            128,
        ));
        let mut s = NodeSession::bound(protocol, Arc::from("radar\"3"));
        assert!(s.is_authenticated());
        assert_eq!(s.take_just_bound().as_deref(), Some("radar\"3"));
        assert!(matches!(
            s.handle(br#"{"node_id":"radar\"3","v":1}"#),
            Verdict::Deliver { .. }
        ));
        assert!(matches!(
            s.handle(br#"{"node_id":"radar\u00223","v":1}"#),
            Verdict::Deliver { .. }
        ));
        assert_eq!(
            s.handle(br#"{"node_id":"radar4","token":"k","v":1}"#),
            Verdict::Skip(DropReason::NodeMismatch)
        );
        assert_eq!(s.handle(br#"{"type":"heartbeat"}"#), Verdict::Heartbeat);
        assert_eq!(s.take_just_bound(), None);
    }
}

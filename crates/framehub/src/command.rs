//! The command router: handlers registered by key, the key taken from each
//! request (a top-level JSON field, a space packet's APID or packet ID, or
//! the first byte); a request with an unknown key or none gets the
//! application's error reply. A [`CommandRouter`] becomes a listener's
//! [`Handler`].
//!
//! ```
//! use framehub::command::{CommandRouter, KeyFrom};
//! let router = CommandRouter::new(KeyFrom::json_field("cmd"))
//!     .route(1, |_req| async { Ok(vec![r#"{"cmd":2,"response_data":"pong"}"#.into()]) })
//!     .on_unknown(|_req, _key| vec![r#"{"error_code":3}"#.into()])
//!     .on_invalid(|_req| vec![r#"{"error_code":1}"#.into()]);
//! let handler = router.into_handler();
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use crate::handler::{Handler, HandlerError, Replies, Request};
use crate::json::{self, EnvelopeKeys};

/// Where a request's key is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFrom {
    /// A top-level field of a JSON object, an integer or a string (the
    /// LinuxIT model's `cmd`). The frame must be valid JSON.
    JsonField(String),
    /// The 11-bit APID of a CCSDS space packet.
    Apid,
    /// The 13-bit packet ID of a CCSDS space packet: type, secondary
    /// header flag and APID.
    PacketId,
    /// The frame's first byte.
    PrefixByte,
}

impl KeyFrom {
    /// The key is the value of this top-level JSON field.
    pub fn json_field(name: impl Into<String>) -> KeyFrom {
        KeyFrom::JsonField(name.into())
    }
}

/// A command key: an integer (JSON number, APID, packet ID, prefix byte)
/// or a string (JSON string).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// An integer key.
    Int(i64),
    /// A string key.
    Text(Box<str>),
}

impl From<i64> for Key {
    fn from(n: i64) -> Key {
        Key::Int(n)
    }
}

impl From<i32> for Key {
    fn from(n: i32) -> Key {
        Key::Int(n.into())
    }
}

impl From<u16> for Key {
    fn from(n: u16) -> Key {
        Key::Int(n.into())
    }
}

impl From<u8> for Key {
    fn from(n: u8) -> Key {
        Key::Int(n.into())
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        Key::Text(s.into())
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Int(n) => write!(f, "{n}"),
            Key::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// Nesting limit for the JSON a key is read from.
const MAX_DEPTH: usize = json::DEFAULT_MAX_DEPTH;

impl KeyFrom {
    /// The key of one request; `None` when the frame has none (not JSON,
    /// no such field, a value that is neither an integer nor a string, a
    /// frame too short for a space packet header).
    pub fn key_of(&self, payload: &[u8]) -> Option<Key> {
        match self {
            KeyFrom::JsonField(field) => {
                let name = field.as_bytes();
                // The envelope scanner validates the frame and finds
                // top-level fields in one pass; all four slots look for the
                // one field.
                let keys = EnvelopeKeys {
                    node_id: name,
                    token: name,
                    msg_type: name,
                    timestamp: name,
                    seq: None,
                };
                let envelope = json::scan_envelope(payload, &keys, MAX_DEPTH).ok()?;
                let value = envelope.node_id?;
                if value.is_string() {
                    return value.as_str().map(|s| Key::Text(s.into()));
                }
                std::str::from_utf8(value.raw())
                    .ok()?
                    .parse::<i64>()
                    .ok()
                    .map(Key::Int)
            }
            KeyFrom::Apid => match payload {
                [b0, b1, _, _, _, _, ..] => {
                    Some(Key::Int(i64::from(u16::from_be_bytes([*b0, *b1]) & 0x07FF)))
                }
                _ => None,
            },
            KeyFrom::PacketId => match payload {
                [b0, b1, _, _, _, _, ..] => {
                    Some(Key::Int(i64::from(u16::from_be_bytes([*b0, *b1]) & 0x1FFF)))
                }
                _ => None,
            },
            KeyFrom::PrefixByte => payload.first().map(|b| Key::Int(i64::from(*b))),
        }
    }
}

type Route = Handler;
type OnUnknown = Arc<dyn Fn(&Request, &Key) -> Replies + Send + Sync>;
type OnInvalid = Arc<dyn Fn(&Request) -> Replies + Send + Sync>;

/// Handlers by key; see the module documentation.
pub struct CommandRouter {
    from: KeyFrom,
    routes: HashMap<Key, Route>,
    on_unknown: OnUnknown,
    on_invalid: OnInvalid,
}

impl std::fmt::Debug for CommandRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandRouter")
            .field("from", &self.from)
            .field("keys", &self.routes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl CommandRouter {
    /// A router with no routes that reads keys as `from` says; unknown and
    /// invalid requests get no reply until [`CommandRouter::on_unknown`]
    /// and [`CommandRouter::on_invalid`] say what to answer.
    pub fn new(from: KeyFrom) -> CommandRouter {
        CommandRouter {
            from,
            routes: HashMap::new(),
            on_unknown: Arc::new(|_, _| Vec::new()),
            on_invalid: Arc::new(|_| Vec::new()),
        }
    }

    /// Answers requests with `key` by `f` (a later route for the same key
    /// replaces it).
    pub fn route<F, Fut>(mut self, key: impl Into<Key>, f: F) -> CommandRouter
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Replies, HandlerError>> + Send + 'static,
    {
        self.routes.insert(key.into(), Handler::new(f));
        self
    }

    /// The reply to a request whose key has no route.
    pub fn on_unknown<F>(mut self, f: F) -> CommandRouter
    where
        F: Fn(&Request, &Key) -> Replies + Send + Sync + 'static,
    {
        self.on_unknown = Arc::new(f);
        self
    }

    /// The reply to a request without a key (see [`KeyFrom::key_of`]).
    pub fn on_invalid<F>(mut self, f: F) -> CommandRouter
    where
        F: Fn(&Request) -> Replies + Send + Sync + 'static,
    {
        self.on_invalid = Arc::new(f);
        self
    }

    /// The handler that routes each request; set its timeout, in-flight
    /// bound and error reply on the result.
    pub fn into_handler(self) -> Handler {
        let router = Arc::new(self);
        Handler::new(move |req: Request| {
            let router = router.clone();
            async move {
                let Some(key) = router.from.key_of(&req.payload) else {
                    return Ok((router.on_invalid)(&req));
                };
                match router.routes.get(&key) {
                    Some(route) => route.call(req).await,
                    None => Ok((router.on_unknown)(&req, &key)),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_json_space_packets_and_prefix_bytes() {
        let cmd = KeyFrom::json_field("cmd");
        assert_eq!(
            cmd.key_of(br#"{"cmd":1,"request_data":null}"#),
            Some(Key::Int(1))
        );
        assert_eq!(
            cmd.key_of(br#"{"x":{"cmd":9},"cmd":"ping"}"#),
            Some("ping".into())
        );
        assert_eq!(cmd.key_of(br#"{"cmd":1.5}"#), None);
        assert_eq!(cmd.key_of(br#"{"request_data":1}"#), None);
        assert_eq!(cmd.key_of(b"not json"), None);
        assert_eq!(cmd.key_of(br#"{"cmd":1"#), None, "truncated JSON");
        // Version 0, TC with secondary header, APID 0x123.
        let header = [0x19, 0x23, 0xC0, 0x00, 0x00, 0x00, 0xAA];
        assert_eq!(KeyFrom::Apid.key_of(&header), Some(Key::Int(0x123)));
        assert_eq!(KeyFrom::PacketId.key_of(&header), Some(Key::Int(0x1923)));
        assert_eq!(KeyFrom::Apid.key_of(&header[..5]), None);
        assert_eq!(KeyFrom::PrefixByte.key_of(b"\x07rest"), Some(Key::Int(7)));
        assert_eq!(KeyFrom::PrefixByte.key_of(b""), None);
    }
}

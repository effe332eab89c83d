//! What a tap subscriber asks for (`framehub tap --node --listener`): the
//! hello line it sends when it connects, the line the tap confirms it with
//! in the stream, and which records of a chunk match.
//!
//! The protocol, one line each way: the subscriber sends
//! `{"subscribe":{"node":["radar3"],"listener":["default"]}}` (either list
//! may be missing or empty: any); the tap puts
//! `{"subscribed":{"node":["radar3"],"listener":["default"]}}` into that
//! subscriber's stream, and every record after that line matches. Records
//! before it were queued before the filter was known (a subscriber that
//! sends nothing, e.g. `nc`, keeps getting everything at once), so the
//! subscriber skips them.

use bytes::{Bytes, BytesMut};
use framehub::Source;
use serde::{Deserialize, Serialize};

use crate::sink::Chunk;

/// The longest hello line the tap reads; anything longer is ignored and
/// the subscriber gets every record.
pub const MAX_HELLO_BYTES: usize = 4096;

/// Which records a subscriber wants: those of any of `node` (when not
/// empty) and of any of `listener` (when not empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapFilter {
    /// Node names; records of connections bound to none never match.
    #[serde(default)]
    pub node: Vec<String>,
    /// Listener names.
    #[serde(default)]
    pub listener: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hello {
    subscribe: TapFilter,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirm {
    subscribed: TapFilter,
}

/// What of a chunk goes to one subscriber.
#[derive(Debug, PartialEq, Eq)]
pub enum Selected {
    /// The whole chunk, shared.
    All,
    /// Nothing.
    Nothing,
    /// These records (bytes, count).
    Some(Bytes, u64),
}

impl TapFilter {
    /// Whether it lets every record through.
    pub fn is_everything(&self) -> bool {
        self.node.is_empty() && self.listener.is_empty()
    }

    /// Whether a record from `source` matches.
    pub fn matches(&self, source: &Source) -> bool {
        let node_ok = self.node.is_empty()
            || source
                .node
                .as_deref()
                .is_some_and(|n| self.node.iter().any(|w| w == n));
        let listener_ok =
            self.listener.is_empty() || self.listener.iter().any(|w| **w == *source.listener);
        node_ok && listener_ok
    }

    /// The line a subscriber sends, `\n` included.
    pub fn hello_line(&self) -> Vec<u8> {
        line(&Hello {
            subscribe: self.clone(),
        })
    }

    /// Reads a hello line (without its `\n`); `None` if it is not one.
    pub fn from_hello(line: &[u8]) -> Option<TapFilter> {
        serde_json::from_slice::<Hello>(line.trim_ascii())
            .ok()
            .map(|h| h.subscribe)
    }

    /// The line the tap confirms the filter with, `\n` included.
    pub fn confirm_line(&self) -> Vec<u8> {
        line(&Confirm {
            subscribed: self.clone(),
        })
    }

    /// Whether `line` is the tap's confirmation of a filter.
    pub fn is_confirm(line: &[u8]) -> bool {
        line.starts_with(b"{\"subscribed\":")
            && serde_json::from_slice::<Confirm>(line.trim_ascii()).is_ok()
    }

    /// The records of `chunk` that match: the whole chunk shared, a slice
    /// of it when they lie together, else a copy of the matching runs.
    pub fn select(&self, chunk: &Chunk) -> Selected {
        if self.is_everything() {
            return Selected::All;
        }
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        let mut records = 0;
        let mut start = 0;
        for run in &chunk.runs {
            if self.matches(&run.source) {
                records += run.records;
                match ranges.last_mut() {
                    Some(last) if last.1 == start => last.1 = run.end,
                    _ => ranges.push((start, run.end)),
                }
            }
            start = run.end;
        }
        match ranges.as_slice() {
            [] => Selected::Nothing,
            [(0, end)] if *end == chunk.bytes.len() && records == chunk.records => Selected::All,
            [(from, to)] => Selected::Some(chunk.bytes.slice(*from..*to), records),
            many => {
                let mut out = BytesMut::with_capacity(many.iter().map(|(f, t)| t - f).sum());
                for (from, to) in many {
                    out.extend_from_slice(&chunk.bytes[*from..*to]);
                }
                Selected::Some(out.freeze(), records)
            }
        }
    }
}

fn line<T: Serialize>(value: &T) -> Vec<u8> {
    // A struct of strings always serialises.
    let mut out = serde_json::to_vec(value).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sink::Run;

    fn source(conn: u64, listener: &str, node: Option<&str>) -> Arc<Source> {
        Arc::new(Source {
            conn,
            peer: "127.0.0.1:9".parse().expect("addr"),
            listener: listener.into(),
            node: node.map(Arc::from),
            protocol: framehub::Protocol::Node,
        })
    }

    /// Three runs: a (2 records), b (1), a again (1).
    fn chunk() -> Chunk {
        let a = source(1, "main", Some("a"));
        let b = source(2, "other", Some("b"));
        let text = "a1\na2\nb1\na3\n";
        Chunk {
            bytes: Bytes::from(text),
            lines: Bytes::new(),
            records: 4,
            no: 1,
            marks: Arc::from(Vec::new()),
            runs: vec![
                Run {
                    end: 6,
                    records: 2,
                    source: a.clone(),
                },
                Run {
                    end: 9,
                    records: 1,
                    source: b,
                },
                Run {
                    end: 12,
                    records: 1,
                    source: a,
                },
            ],
        }
    }

    fn filter(node: &[&str], listener: &[&str]) -> TapFilter {
        TapFilter {
            node: node.iter().map(|s| s.to_string()).collect(),
            listener: listener.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn select_takes_the_matching_runs_only() {
        let c = chunk();
        assert_eq!(filter(&[], &[]).select(&c), Selected::All);
        assert_eq!(filter(&["a", "b"], &[]).select(&c), Selected::All);
        assert_eq!(
            filter(&["a"], &[]).select(&c),
            Selected::Some(Bytes::from("a1\na2\na3\n"), 3)
        );
        assert_eq!(
            filter(&[], &["other"]).select(&c),
            Selected::Some(Bytes::from("b1\n"), 1)
        );
        // Both given: both must match.
        assert_eq!(filter(&["a"], &["other"]).select(&c), Selected::Nothing);
        assert_eq!(filter(&["nobody"], &[]).select(&c), Selected::Nothing);
    }

    #[test]
    fn a_node_filter_never_matches_a_connection_without_a_node() {
        let raw = source(3, "main", None);
        assert!(!filter(&["a"], &[]).matches(&raw));
        assert!(filter(&[], &["main"]).matches(&raw));
    }

    #[test]
    fn hello_and_confirm_lines_round_trip() {
        let f = filter(&["radar3"], &["default"]);
        let hello = f.hello_line();
        assert!(hello.ends_with(b"\n"));
        assert_eq!(TapFilter::from_hello(&hello), Some(f.clone()));
        assert_eq!(
            TapFilter::from_hello(b"{\"subscribe\":{\"node\":[\"x\"]}}"),
            Some(filter(&["x"], &[]))
        );
        assert_eq!(TapFilter::from_hello(b"hello there"), None);
        assert_eq!(
            TapFilter::from_hello(b"{\"subscribe\":{\"nodes\":[]}}"),
            None
        );
        assert!(TapFilter::is_confirm(&f.confirm_line()));
        assert!(!TapFilter::is_confirm(
            b"{\"received_at\":\"x\",\"subscribed\":{}}"
        ));
    }
}

//! The connection registry: every open connection with its live counters,
//! for [`crate::Hub::connections`] and the per-node view of
//! [`crate::Hub::nodes`].
//!
//! A connection task publishes its counts here once per read (plain stores
//! into atomics only it writes), never once per frame; readers take a
//! snapshot. An entry lives exactly as long as its [`Registration`], so the
//! table holds at most the open connections, which `max_connections`
//! bounds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::event::ConnectionCounts;

/// One open connection as [`crate::Hub::connections`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The connection's id, unique within the process.
    pub id: u64,
    /// The listener that accepted it.
    pub listener: Arc<str>,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The node it is bound to (node protocol), once it is.
    pub node: Option<Arc<str>>,
    /// When it was accepted.
    pub since: SystemTime,
    /// How long ago its last read completed (since it was accepted, if it
    /// has sent nothing).
    pub idle: Duration,
    /// What went through it so far, as of its last read.
    pub counts: ConnectionCounts,
    /// Bytes waiting to be written to the peer (0 until the hub sends data
    /// to clients).
    pub egress_pending_bytes: u64,
}

/// Live counters of one connection: written by its task, read by anyone.
#[derive(Debug)]
pub(crate) struct LiveConnection {
    id: u64,
    listener: Arc<str>,
    peer: SocketAddr,
    since: SystemTime,
    accepted: Instant,
    node: OnceLock<Arc<str>>,
    frames_in: AtomicU64,
    bytes_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_out: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    /// Nanoseconds after `accepted` at which the last read completed.
    last_read_nanos: AtomicU64,
}

impl LiveConnection {
    fn info(&self, now: Instant) -> ConnectionInfo {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let last_read = self.accepted + Duration::from_nanos(get(&self.last_read_nanos));
        ConnectionInfo {
            id: self.id,
            listener: self.listener.clone(),
            peer: self.peer,
            node: self.node.get().cloned(),
            since: self.since,
            idle: now.saturating_duration_since(last_read),
            counts: ConnectionCounts {
                frames_in: get(&self.frames_in),
                bytes_in: get(&self.bytes_in),
                frames_out: get(&self.frames_out),
                bytes_out: get(&self.bytes_out),
                delivered: get(&self.delivered),
                dropped: get(&self.dropped),
            },
            egress_pending_bytes: 0,
        }
    }
}

/// Every open connection, by id.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    connections: Mutex<HashMap<u64, Arc<LiveConnection>>>,
}

impl Registry {
    /// Adds a connection; it is removed when the registration is dropped.
    pub(crate) fn register(
        self: &Arc<Self>,
        id: u64,
        listener: Arc<str>,
        peer: SocketAddr,
    ) -> Registration {
        let live = Arc::new(LiveConnection {
            id,
            listener,
            peer,
            since: SystemTime::now(),
            accepted: Instant::now(),
            node: OnceLock::new(),
            frames_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_read_nanos: AtomicU64::new(0),
        });
        self.connections.lock().insert(id, live.clone());
        Registration {
            registry: self.clone(),
            live,
        }
    }

    /// A snapshot of every open connection, by id.
    pub(crate) fn snapshot(&self) -> Vec<ConnectionInfo> {
        // Clone the handles and let go of the lock before formatting, so
        // connections opening and closing never wait for a reader.
        let live: Vec<Arc<LiveConnection>> = self.connections.lock().values().cloned().collect();
        let now = Instant::now();
        let mut out: Vec<ConnectionInfo> = live.iter().map(|c| c.info(now)).collect();
        out.sort_by_key(|c| c.id);
        out
    }
}

/// A connection's entry in the registry, owned by its task; dropping it
/// removes the entry.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<Registry>,
    live: Arc<LiveConnection>,
}

impl Registration {
    /// Publishes the connection's totals after a read. Only the owning task
    /// writes, so plain stores suffice.
    pub(crate) fn publish(&self, counts: &ConnectionCounts) {
        let l = &*self.live;
        l.frames_in.store(counts.frames_in, Ordering::Relaxed);
        l.bytes_in.store(counts.bytes_in, Ordering::Relaxed);
        l.frames_out.store(counts.frames_out, Ordering::Relaxed);
        l.bytes_out.store(counts.bytes_out, Ordering::Relaxed);
        l.delivered.store(counts.delivered, Ordering::Relaxed);
        l.dropped.store(counts.dropped, Ordering::Relaxed);
        let nanos = u64::try_from(l.accepted.elapsed().as_nanos()).unwrap_or(u64::MAX);
        l.last_read_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Records the node the connection bound to (once; later calls are
    /// ignored, as a connection binds once).
    pub(crate) fn set_node(&self, node: &Arc<str>) {
        let _ = self.live.node.set(node.clone());
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.connections.lock().remove(&self.live.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_as_long_as_their_registration() {
        let registry = Arc::new(Registry::default());
        let peer: SocketAddr = "127.0.0.1:4000".parse().expect("addr");
        let a = registry.register(1, "l".into(), peer);
        let b = registry.register(2, "l".into(), peer);
        a.publish(&ConnectionCounts {
            frames_in: 3,
            bytes_in: 30,
            ..Default::default()
        });
        a.set_node(&Arc::from("radar3"));
        let snap = registry.snapshot();
        assert_eq!(snap.iter().map(|c| c.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(snap[0].counts.frames_in, 3);
        assert_eq!(snap[0].counts.bytes_in, 30);
        assert_eq!(snap[0].node.as_deref(), Some("radar3"));
        assert_eq!(snap[1].node, None);
        drop(a);
        assert_eq!(
            registry.snapshot().iter().map(|c| c.id).collect::<Vec<_>>(),
            [2]
        );
        drop(b);
        assert!(registry.snapshot().is_empty());
    }
}

//! The memory of connections that ended: one [`ClosedConnection`] record
//! per closed connection, the newest `connection_history` of them kept in
//! a bounded ring ([`ConnectionHistory`], behind
//! [`crate::Hub::closed_connections`]).
//!
//! A leaf of the crate's layers (it names only `reason`): the connection
//! task records into it once when a connection ends, never per frame, and
//! the admin API reads pages of it. When the ring is full the oldest
//! record goes, counted in [`ConnectionHistory::evicted`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use crate::reason::CloseReason;

/// Closed connections a hub remembers by default (`connection_history`).
pub const DEFAULT_CONNECTION_HISTORY: usize = 10_000;

/// The most `connection_history` accepted: one record is about 200 bytes.
pub const MAX_CONNECTION_HISTORY: usize = 1_000_000;

/// One connection that ended, as [`crate::Hub::closed_connections`]
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClosedConnection {
    /// The connection's id, unique within the process.
    pub id: u64,
    /// The listener that accepted it.
    pub listener: Arc<str>,
    /// The peer's address (the device's, behind a PROXY header).
    pub peer: SocketAddr,
    /// The node it was bound to, if any.
    pub node: Option<Arc<str>>,
    /// When it was accepted.
    pub opened: SystemTime,
    /// When it ended.
    pub closed: SystemTime,
    /// Why it ended.
    pub reason: CloseReason,
    /// Frames cut from its stream.
    pub frames_in: u64,
    /// Bytes read from it.
    pub bytes_in: u64,
    /// Frames written to it.
    pub frames_out: u64,
    /// Bytes written to it.
    pub bytes_out: u64,
    /// Its frames dropped, whatever the reason.
    pub dropped: u64,
}

impl ClosedConnection {
    /// How long it was open (zero if the clock went back meanwhile).
    pub fn duration(&self) -> Duration {
        self.closed
            .duration_since(self.opened)
            .unwrap_or(Duration::ZERO)
    }
}

/// The newest closed connections, at most `capacity` of them: the oldest
/// record is dropped (and counted) to make room for a new one.
#[derive(Debug)]
pub struct ConnectionHistory {
    capacity: usize,
    ring: Mutex<VecDeque<ClosedConnection>>,
    recorded: AtomicU64,
    evicted: AtomicU64,
}

/// One page of the history, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryPage {
    /// Records that matched the filter, in all.
    pub total: usize,
    /// At most `limit` of them, from `offset` on, newest first.
    pub connections: Vec<ClosedConnection>,
}

impl ConnectionHistory {
    /// A history of at most `capacity` records (0 keeps none).
    pub fn new(capacity: usize) -> ConnectionHistory {
        ConnectionHistory {
            capacity,
            // Grown as records come: an idle hub does not hold 10,000
            // empty slots.
            ring: Mutex::new(VecDeque::new()),
            recorded: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    /// How many records it keeps at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Adds the record of a connection that just ended, dropping the
    /// oldest when full.
    pub fn record(&self, closed: ClosedConnection) {
        self.recorded.fetch_add(1, Ordering::Relaxed);
        if self.capacity == 0 {
            self.evicted.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut ring = self.ring.lock();
        if ring.len() >= self.capacity {
            ring.pop_front();
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        ring.push_back(closed);
    }

    /// Connections recorded since the hub started.
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }

    /// Records dropped to make room (or all of them, with capacity 0).
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Records held now.
    pub fn len(&self) -> usize {
        self.ring.lock().len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records `keep` accepts, newest first: `limit` of them after
    /// skipping `offset`, and how many matched in all. Only the page is
    /// cloned, under the lock; `keep` must not wait.
    pub fn page(
        &self,
        offset: usize,
        limit: usize,
        mut keep: impl FnMut(&ClosedConnection) -> bool,
    ) -> HistoryPage {
        let ring = self.ring.lock();
        let mut page = HistoryPage::default();
        for c in ring.iter().rev().filter(|c| keep(c)) {
            if page.total >= offset && page.connections.len() < limit {
                page.connections.push(c.clone());
            }
            page.total += 1;
        }
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(id: u64, node: Option<&str>) -> ClosedConnection {
        let opened = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        ClosedConnection {
            id,
            listener: Arc::from("default"),
            peer: "127.0.0.1:9".parse().expect("addr"),
            node: node.map(Arc::from),
            opened,
            closed: opened + Duration::from_millis(1500),
            reason: CloseReason::PeerClosed,
            frames_in: id,
            bytes_in: 10 * id,
            frames_out: 0,
            bytes_out: 0,
            dropped: 0,
        }
    }

    #[test]
    fn keeps_the_newest_and_counts_what_it_drops() {
        let h = ConnectionHistory::new(3);
        for id in 1..=5 {
            h.record(closed(id, None));
        }
        assert_eq!(h.len(), 3);
        assert_eq!(h.recorded(), 5);
        assert_eq!(h.evicted(), 2);
        let page = h.page(0, 10, |_| true);
        assert_eq!(page.total, 3);
        let ids: Vec<u64> = page.connections.iter().map(|c| c.id).collect();
        assert_eq!(ids, [5, 4, 3]);
        assert_eq!(page.connections[0].duration(), Duration::from_millis(1500));
    }

    #[test]
    fn pages_and_filters() {
        let h = ConnectionHistory::new(100);
        for id in 1..=10 {
            h.record(closed(id, Some(if id % 2 == 0 { "even" } else { "odd" })));
        }
        let page = h.page(1, 2, |c| c.node.as_deref() == Some("even"));
        assert_eq!(page.total, 5);
        let ids: Vec<u64> = page.connections.iter().map(|c| c.id).collect();
        assert_eq!(ids, [8, 6]);
        let past_end = h.page(20, 5, |_| true);
        assert_eq!(past_end.total, 10);
        assert!(past_end.connections.is_empty());
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let h = ConnectionHistory::new(0);
        h.record(closed(1, None));
        assert!(h.is_empty());
        assert_eq!((h.recorded(), h.evicted()), (1, 1));
    }
}

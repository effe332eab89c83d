//! Counters of every event that matters, per listener and per connection,
//! and the limiter that keeps repeated warnings from flooding the log.
//!
//! Connection tasks add to these once per read, not once per frame, so
//! many connections do not fight over the same cache line per frame. The
//! 1 Hz rates computed from them live in `snapshot`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::reason::CloseReason;
pub use crate::reason::DropReason;

/// Live counters of one listener.
#[derive(Debug, Default)]
pub(crate) struct ListenerCounters {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_rejected: AtomicU64,
    pub(crate) connections_closed: AtomicU64,
    closed_by: [AtomicU64; CloseReason::LABELS.len()],
    pub(crate) accept_errors: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    /// Payload bytes of the frames received (framing removed).
    pub(crate) frame_bytes_received: AtomicU64,
    /// Largest frame received since the stats last looked, from connections
    /// that closed meanwhile (open ones keep their own).
    pub(crate) max_frame_received: AtomicU64,
    pub(crate) frames_delivered: AtomicU64,
    pub(crate) heartbeats: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) frames_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    /// Largest egress message queued since the stats last looked.
    pub(crate) max_frame_sent: AtomicU64,
    pub(crate) groups_published: AtomicU64,
    pub(crate) slow_clients_disconnected: AtomicU64,
    pub(crate) listener_rebuilds: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) replies_sent: AtomicU64,
    pub(crate) handler_errors: AtomicU64,
    pub(crate) handler_timeouts: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
}

impl ListenerCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// A served connection ended.
    pub(crate) fn closed(&self, reason: &CloseReason) {
        Self::add(&self.connections_closed, 1);
        Self::add(&self.closed_by[reason.index()], 1);
    }

    pub(crate) fn dropped(&self, reason: DropReason, n: u64) {
        Self::add(&self.dropped[reason.index()], n);
    }

    pub(crate) fn snapshot(&self) -> Counters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let accepted = get(&self.connections_accepted);
        let closed = get(&self.connections_closed);
        Counters {
            connections_accepted: accepted,
            connections_rejected: get(&self.connections_rejected),
            connections_closed: closed,
            connections_closed_by: std::array::from_fn(|i| {
                (CloseReason::LABELS[i], get(&self.closed_by[i]))
            }),
            connections_open: accepted.saturating_sub(closed),
            accept_errors: get(&self.accept_errors),
            auth_failures: get(&self.auth_failures),
            frames_received: get(&self.frames_received),
            bytes_received: get(&self.bytes_received),
            frame_bytes_received: get(&self.frame_bytes_received),
            frames_delivered: get(&self.frames_delivered),
            heartbeats: get(&self.heartbeats),
            duplicates: get(&self.duplicates),
            frames_sent: get(&self.frames_sent),
            bytes_sent: get(&self.bytes_sent),
            groups_published: get(&self.groups_published),
            slow_clients_disconnected: get(&self.slow_clients_disconnected),
            listener_rebuilds: get(&self.listener_rebuilds),
            requests: get(&self.requests),
            replies_sent: get(&self.replies_sent),
            handler_errors: get(&self.handler_errors),
            handler_timeouts: get(&self.handler_timeouts),
            handler_panics: get(&self.handler_panics),
            dropped: DropReason::ALL.map(|r| (r, get(&self.dropped[r.index()]))),
        }
    }
}

/// A snapshot of a listener's counters (or their sum over listeners).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Connections accepted and served.
    pub connections_accepted: u64,
    /// Connections accepted and closed at once because of `max_connections`.
    pub connections_rejected: u64,
    /// Served connections that have ended.
    pub connections_closed: u64,
    /// Served connections that have ended, by [`CloseReason::as_str`].
    pub connections_closed_by: [(&'static str, u64); CloseReason::LABELS.len()],
    /// Served connections open now.
    pub connections_open: u64,
    /// Errors from `accept()` (the listener backed off and went on).
    pub accept_errors: u64,
    /// Connections closed for a wrong or missing token, an oversized or
    /// missing first message.
    pub auth_failures: u64,
    /// Frames cut from the streams (before any protocol check).
    pub frames_received: u64,
    /// Bytes read from the sockets.
    pub bytes_received: u64,
    /// Payload bytes of the frames received (framing removed).
    pub frame_bytes_received: u64,
    /// Frames put into a receiver's queue.
    pub frames_delivered: u64,
    /// Heartbeats received (never delivered).
    pub heartbeats: u64,
    /// Frames skipped because their timestamp repeated (dedup).
    pub duplicates: u64,
    /// Frames written to clients (egress messages and server heartbeats).
    pub frames_sent: u64,
    /// Bytes written to clients.
    pub bytes_sent: u64,
    /// Groups published to the group stream (`delivery = "groups"`).
    pub groups_published: u64,
    /// Clients disconnected because their egress buffer was full
    /// (`slow_client = "disconnect"`).
    pub slow_clients_disconnected: u64,
    /// Times a failed listening socket was rebuilt.
    pub listener_rebuilds: u64,
    /// Frames handed to a request handler.
    pub requests: u64,
    /// Handler replies written to clients (also counted in `frames_sent`).
    pub replies_sent: u64,
    /// Requests whose handler returned an error (answered by the error reply).
    pub handler_errors: u64,
    /// Requests whose handler ran past the handler's timeout.
    pub handler_timeouts: u64,
    /// Requests whose handler panicked (the connection went on).
    pub handler_panics: u64,
    /// Frames (and egress messages) dropped, by reason.
    pub dropped: [(DropReason, u64); DropReason::ALL.len()],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            connections_accepted: 0,
            connections_rejected: 0,
            connections_closed: 0,
            connections_closed_by: CloseReason::LABELS.map(|l| (l, 0)),
            connections_open: 0,
            accept_errors: 0,
            auth_failures: 0,
            frames_received: 0,
            bytes_received: 0,
            frame_bytes_received: 0,
            frames_delivered: 0,
            heartbeats: 0,
            duplicates: 0,
            frames_sent: 0,
            bytes_sent: 0,
            groups_published: 0,
            slow_clients_disconnected: 0,
            listener_rebuilds: 0,
            requests: 0,
            replies_sent: 0,
            handler_errors: 0,
            handler_timeouts: 0,
            handler_panics: 0,
            dropped: DropReason::ALL.map(|r| (r, 0)),
        }
    }
}

impl Counters {
    /// Frames dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()].1
    }

    /// Frames dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }

    /// Adds another snapshot into this one.
    pub fn merge(&mut self, other: &Counters) {
        self.connections_accepted += other.connections_accepted;
        self.connections_rejected += other.connections_rejected;
        self.connections_closed += other.connections_closed;
        for (mine, theirs) in self
            .connections_closed_by
            .iter_mut()
            .zip(other.connections_closed_by.iter())
        {
            mine.1 += theirs.1;
        }
        self.connections_open += other.connections_open;
        self.accept_errors += other.accept_errors;
        self.auth_failures += other.auth_failures;
        self.frames_received += other.frames_received;
        self.bytes_received += other.bytes_received;
        self.frame_bytes_received += other.frame_bytes_received;
        self.frames_delivered += other.frames_delivered;
        self.heartbeats += other.heartbeats;
        self.duplicates += other.duplicates;
        self.frames_sent += other.frames_sent;
        self.bytes_sent += other.bytes_sent;
        self.groups_published += other.groups_published;
        self.slow_clients_disconnected += other.slow_clients_disconnected;
        self.listener_rebuilds += other.listener_rebuilds;
        self.requests += other.requests;
        self.replies_sent += other.replies_sent;
        self.handler_errors += other.handler_errors;
        self.handler_timeouts += other.handler_timeouts;
        self.handler_panics += other.handler_panics;
        for (mine, theirs) in self.dropped.iter_mut().zip(other.dropped.iter()) {
            mine.1 += theirs.1;
        }
    }
}

/// Live counters of one connection, for the per-connection stats. The
/// connection adds to them once per read and the egress writer once per
/// write; `max_*` hold the largest frame since the stats last took them.
#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    pub(crate) frames_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) frame_bytes_in: AtomicU64,
    pub(crate) max_frame_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    /// Of `frames_out`, the handler's replies.
    pub(crate) replies_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) max_frame_out: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

impl LinkCounters {
    pub(crate) fn raise_max(counter: &AtomicU64, n: u64) {
        if n > counter.load(Ordering::Relaxed) {
            counter.fetch_max(n, Ordering::Relaxed);
        }
    }
}

/// Lets one warning through per period and counts the ones it held back,
/// so a misbehaving peer cannot flood the log.
#[derive(Debug)]
pub(crate) struct WarnLimiter {
    period_ms: u64,
    /// Milliseconds since [`epoch`] before which warnings are suppressed.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl WarnLimiter {
    pub(crate) fn new(period: Duration) -> Self {
        WarnLimiter {
            period_ms: period.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a warning may be logged now, `n` being how many were
    /// suppressed since the last one; `None` when it must be suppressed.
    pub(crate) fn check(&self) -> Option<u64> {
        let now = epoch().elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + self.period_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_lets_one_through_per_period_and_counts_the_rest() {
        let l = WarnLimiter::new(Duration::from_secs(3600));
        assert_eq!(l.check(), Some(0));
        assert_eq!(l.check(), None);
        assert_eq!(l.check(), None);
        l.next_ms.store(0, Ordering::Relaxed);
        assert_eq!(l.check(), Some(2));
    }

    #[test]
    fn drops_are_counted_by_reason() {
        let c = ListenerCounters::default();
        c.dropped(DropReason::Oversize, 2);
        c.dropped(DropReason::QueueFull, 3);
        let s = c.snapshot();
        assert_eq!(s.dropped(DropReason::Oversize), 2);
        assert_eq!(s.dropped(DropReason::QueueFull), 3);
        assert_eq!(s.dropped_total(), 5);
        let mut sum = Counters::default();
        sum.merge(&s);
        sum.merge(&s);
        assert_eq!(sum.dropped_total(), 10);
    }
}

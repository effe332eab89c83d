//! Traffic statistics at a fixed period (`stats_interval`, 1 s): per
//! listener and per connection, frames and bytes in and out, their rates,
//! mean and largest frame, open connections and drops by reason. One task
//! per hub computes them from the live counters and publishes each
//! [`StatsSnapshot`] on a watch channel ([`crate::Hub::stats`]).
//!
//! The counters are cumulative; a snapshot holds what changed during its
//! interval, so a consumer that looks late still sees exact per-interval
//! figures for the latest one.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::listener::ListenerShared;
use crate::registry::Peer;
use crate::stats::{Counters, DropReason, LinkCounters, ListenerCounters};

/// One period's statistics of a whole hub.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatsSnapshot {
    /// The snapshot's number, from 1; 0 before the first period ended.
    pub seq: u64,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The period it covers, in seconds (about `stats_interval`).
    pub interval_secs: f64,
    /// Each listener, in configuration order.
    pub listeners: Vec<ListenerStats>,
    /// Egress messages for a connection or node that was not connected
    /// (no listener to count them on), by reason, during the period.
    pub unrouted_dropped: BTreeMap<&'static str, u64>,
}

/// One listener's statistics over one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListenerStats {
    /// The listener's name.
    pub listener: String,
    /// Connections open at the end of the period.
    pub connections_open: u64,
    /// Traffic of all its connections, including those that closed during
    /// the period.
    #[serde(flatten)]
    pub traffic: Traffic,
    /// Frames and egress messages dropped during the period, by reason
    /// (reasons with none are left out).
    pub dropped: BTreeMap<&'static str, u64>,
    /// Each connection open at the end of the period, by id.
    pub connections: Vec<ConnectionStats>,
}

/// One connection's statistics over one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionStats {
    /// The connection's id.
    pub conn: u64,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The node it is bound to, if any.
    pub node: Option<String>,
    /// Its traffic.
    #[serde(flatten)]
    pub traffic: Traffic,
    /// Frames and egress messages of this connection dropped during the
    /// period, whatever the reason.
    pub dropped: u64,
}

/// Frames and bytes over one period. In: frames cut from the stream and
/// bytes read (framing included), frame sizes without framing. Out: egress
/// messages and heartbeats written, sizes as written (framing included).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Traffic {
    /// Frames received.
    pub frames_in: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Frames written.
    pub frames_out: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// `frames_in` per second.
    pub frames_in_per_sec: f64,
    /// `bytes_in` per second.
    pub bytes_in_per_sec: f64,
    /// `frames_out` per second.
    pub frames_out_per_sec: f64,
    /// `bytes_out` per second.
    pub bytes_out_per_sec: f64,
    /// Mean payload size of the frames received (0 without frames).
    pub mean_frame_bytes_in: f64,
    /// Largest frame received.
    pub max_frame_bytes_in: u64,
    /// Mean size of the frames written.
    pub mean_frame_bytes_out: f64,
    /// Largest message queued for writing.
    pub max_frame_bytes_out: u64,
}

/// Cumulative totals behind [`Traffic`], to subtract the previous ones.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    frames_in: u64,
    bytes_in: u64,
    frame_bytes_in: u64,
    frames_out: u64,
    bytes_out: u64,
    dropped: u64,
}

impl Totals {
    fn of_link(c: &LinkCounters) -> Totals {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Totals {
            frames_in: get(&c.frames_in),
            bytes_in: get(&c.bytes_in),
            frame_bytes_in: get(&c.frame_bytes_in),
            frames_out: get(&c.frames_out),
            bytes_out: get(&c.bytes_out),
            dropped: get(&c.dropped),
        }
    }

    fn of_listener(c: &Counters) -> Totals {
        Totals {
            frames_in: c.frames_received,
            bytes_in: c.bytes_received,
            frame_bytes_in: c.frame_bytes_received,
            frames_out: c.frames_sent,
            bytes_out: c.bytes_sent,
            dropped: c.dropped_total(),
        }
    }

    fn since(self, before: Totals) -> Totals {
        Totals {
            frames_in: self.frames_in.saturating_sub(before.frames_in),
            bytes_in: self.bytes_in.saturating_sub(before.bytes_in),
            frame_bytes_in: self.frame_bytes_in.saturating_sub(before.frame_bytes_in),
            frames_out: self.frames_out.saturating_sub(before.frames_out),
            bytes_out: self.bytes_out.saturating_sub(before.bytes_out),
            dropped: self.dropped.saturating_sub(before.dropped),
        }
    }

    fn traffic(self, secs: f64, max_in: u64, max_out: u64) -> Traffic {
        let mean = |bytes: u64, frames: u64| {
            if frames == 0 {
                0.0
            } else {
                bytes as f64 / frames as f64
            }
        };
        Traffic {
            frames_in: self.frames_in,
            bytes_in: self.bytes_in,
            frames_out: self.frames_out,
            bytes_out: self.bytes_out,
            frames_in_per_sec: self.frames_in as f64 / secs,
            bytes_in_per_sec: self.bytes_in as f64 / secs,
            frames_out_per_sec: self.frames_out as f64 / secs,
            bytes_out_per_sec: self.bytes_out as f64 / secs,
            mean_frame_bytes_in: mean(self.frame_bytes_in, self.frames_in),
            max_frame_bytes_in: max_in,
            mean_frame_bytes_out: mean(self.bytes_out, self.frames_out),
            max_frame_bytes_out: max_out,
        }
    }
}

fn drops_since(now: &Counters, before: &Counters) -> BTreeMap<&'static str, u64> {
    DropReason::ALL
        .iter()
        .filter_map(|r| {
            let n = now.dropped(*r).saturating_sub(before.dropped(*r));
            (n > 0).then_some((r.as_str(), n))
        })
        .collect()
}

/// The sampling task's state: what it reads, and the totals of the
/// previous period to subtract.
pub(crate) struct Sampler {
    listeners: Vec<Arc<ListenerShared>>,
    unrouted: Arc<ListenerCounters>,
    every: Duration,
    tx: watch::Sender<StatsSnapshot>,
    cancel: CancellationToken,
    last_at: Instant,
    last: Vec<Counters>,
    last_unrouted: Counters,
    last_links: HashMap<u64, Totals>,
}

impl Sampler {
    /// Takes the baseline now, before any connection is served, so the
    /// first period counts everything from the start whenever the task
    /// first runs.
    pub(crate) fn new(
        listeners: Vec<Arc<ListenerShared>>,
        unrouted: Arc<ListenerCounters>,
        every: Duration,
        tx: watch::Sender<StatsSnapshot>,
        cancel: CancellationToken,
    ) -> Sampler {
        let last = listeners.iter().map(|l| l.counters.snapshot()).collect();
        let last_unrouted = unrouted.snapshot();
        Sampler {
            listeners,
            unrouted,
            every,
            tx,
            cancel,
            last_at: Instant::now(),
            last,
            last_unrouted,
            last_links: HashMap::new(),
        }
    }

    /// Publishes one snapshot per period until the hub shuts down.
    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval_at(self.last_at + self.every, self.every);
        // A late tick measures a longer period; it is not made up for.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut seq = 0;
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            seq += 1;
            let snapshot = self.sample(seq);
            self.tx.send_replace(snapshot);
        }
    }

    fn sample(&mut self, seq: u64) -> StatsSnapshot {
        let now = Instant::now();
        let secs = (now - self.last_at).as_secs_f64().max(1e-6);
        self.last_at = now;
        let mut links = HashMap::with_capacity(self.last_links.len());
        let mut listeners = Vec::with_capacity(self.listeners.len());
        for (shared, before) in self.listeners.iter().zip(self.last.iter_mut()) {
            let counters = shared.counters.snapshot();
            let stats = listener_stats(
                shared,
                &counters,
                before,
                secs,
                &self.last_links,
                &mut links,
            );
            *before = counters;
            listeners.push(stats);
        }
        self.last_links = links;
        let unrouted = self.unrouted.snapshot();
        let unrouted_dropped = drops_since(&unrouted, &self.last_unrouted);
        self.last_unrouted = unrouted;
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        StatsSnapshot {
            seq,
            unix_ms,
            interval_secs: secs,
            listeners,
            unrouted_dropped,
        }
    }
}

/// One listener's period: its totals' differences, and each open
/// connection's (whose totals are recorded in `links` for next time).
fn listener_stats(
    shared: &ListenerShared,
    counters: &Counters,
    before: &Counters,
    secs: f64,
    last_links: &HashMap<u64, Totals>,
    links: &mut HashMap<u64, Totals>,
) -> ListenerStats {
    // Closed connections left their largest frames on the listener.
    let mut max_in = shared
        .counters
        .max_frame_received
        .swap(0, Ordering::Relaxed);
    let mut max_out = shared.counters.max_frame_sent.swap(0, Ordering::Relaxed);
    let mut connections = Vec::new();
    shared.peers.for_each(|peer: &Arc<Peer>| {
        let c = &peer.counters;
        let conn_max_in = c.max_frame_in.swap(0, Ordering::Relaxed);
        let conn_max_out = c.max_frame_out.swap(0, Ordering::Relaxed);
        max_in = max_in.max(conn_max_in);
        max_out = max_out.max(conn_max_out);
        let totals = Totals::of_link(c);
        let delta = totals.since(last_links.get(&peer.conn).copied().unwrap_or_default());
        links.insert(peer.conn, totals);
        connections.push(ConnectionStats {
            conn: peer.conn,
            peer: peer.addr,
            node: peer.node.get().map(|n| n.to_string()),
            traffic: delta.traffic(secs, conn_max_in, conn_max_out),
            dropped: delta.dropped,
        });
    });
    connections.sort_by_key(|c| c.conn);
    let delta = Totals::of_listener(counters).since(Totals::of_listener(before));
    ListenerStats {
        listener: shared.name.to_string(),
        connections_open: counters.connections_open,
        traffic: delta.traffic(secs, max_in, max_out),
        dropped: drops_since(counters, before),
        connections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_divides_by_the_period_and_never_by_zero_frames() {
        let t = Totals {
            frames_in: 100,
            bytes_in: 2_100,
            frame_bytes_in: 2_000,
            frames_out: 0,
            bytes_out: 0,
            dropped: 0,
        }
        .traffic(2.0, 30, 0);
        assert_eq!(t.frames_in_per_sec, 50.0);
        assert_eq!(t.bytes_in_per_sec, 1_050.0);
        assert_eq!(t.mean_frame_bytes_in, 20.0);
        assert_eq!(t.max_frame_bytes_in, 30);
        assert_eq!(t.mean_frame_bytes_out, 0.0);
    }

    #[test]
    fn drops_list_only_reasons_that_changed() {
        let before = ListenerCounters::default();
        before.dropped(DropReason::Oversize, 2);
        let b = before.snapshot();
        before.dropped(DropReason::Oversize, 3);
        before.dropped(DropReason::EgressFull, 1);
        let d = drops_since(&before.snapshot(), &b);
        assert_eq!(
            d.into_iter().collect::<Vec<_>>(),
            [("egress_full", 1), ("oversize", 3)]
        );
    }
}

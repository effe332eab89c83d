//! Traffic statistics at a fixed period (`stats_interval`, 1 s): per
//! listener and per connection, frames and bytes in and out, their rates,
//! mean and largest frame, open connections and drops by reason. One task
//! per hub computes them from the live counters and publishes each
//! [`StatsSnapshot`] on a watch channel ([`crate::Hub::stats`]).
//!
//! The counters are cumulative (declared in `stats`); a snapshot holds
//! what changed during its interval (their `since`), so a consumer that
//! looks late still sees exact per-interval figures for the latest one.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::context::ListenerShared;
use crate::registry::Peer;
use crate::router::Router;
use crate::stats::{Counters, LinkTotals, ListenerCounters};

/// One period's statistics of a whole hub.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
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
    /// Each known node, by name: frames delivered into its queue during
    /// the period and their rate (left out of the JSON form, which
    /// `framehub serve --stats` and `/api/stats` print; `/api/nodes` shows
    /// the rate).
    #[serde(skip)]
    pub nodes: Vec<NodeStats>,
}

impl StatsSnapshot {
    /// The period's figures of one node, if it was known at the end of it.
    pub fn node(&self, name: &str) -> Option<&NodeStats> {
        self.nodes
            .binary_search_by(|n| n.node.as_str().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

/// One node's deliveries over one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct NodeStats {
    /// The node's name.
    pub node: String,
    /// Frames put into its queue during the period (from its creation, if
    /// it appeared during the period).
    pub frames_delivered: u64,
    /// `frames_delivered` per second.
    pub frames_per_sec: f64,
}

/// One listener's statistics over one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
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

/// A listener's counters as the totals of a connection, to compute the
/// same [`Traffic`] from them.
fn listener_totals(c: &Counters) -> LinkTotals {
    LinkTotals {
        frames_in: c.frames_received,
        bytes_in: c.bytes_received,
        frame_bytes_in: c.frame_bytes_received,
        frames_out: c.frames_sent,
        replies_out: c.replies_sent,
        bytes_out: c.bytes_sent,
        dropped: c.dropped_total(),
    }
}

/// One period's traffic from its totals (differences of the counters).
fn traffic(t: &LinkTotals, secs: f64, max_in: u64, max_out: u64) -> Traffic {
    let mean = |bytes: u64, frames: u64| {
        if frames == 0 {
            0.0
        } else {
            bytes as f64 / frames as f64
        }
    };
    Traffic {
        frames_in: t.frames_in,
        bytes_in: t.bytes_in,
        frames_out: t.frames_out,
        bytes_out: t.bytes_out,
        frames_in_per_sec: t.frames_in as f64 / secs,
        bytes_in_per_sec: t.bytes_in as f64 / secs,
        frames_out_per_sec: t.frames_out as f64 / secs,
        bytes_out_per_sec: t.bytes_out as f64 / secs,
        mean_frame_bytes_in: mean(t.frame_bytes_in, t.frames_in),
        max_frame_bytes_in: max_in,
        mean_frame_bytes_out: mean(t.bytes_out, t.frames_out),
        max_frame_bytes_out: max_out,
    }
}

/// A period's drops by reason, leaving out reasons with none.
fn drops(delta: &Counters) -> BTreeMap<&'static str, u64> {
    delta
        .dropped
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.as_str(), *n))
        .collect()
}

/// What the sampling task reads.
pub(crate) struct Sources {
    /// Every listener, in configuration order.
    pub(crate) listeners: Vec<Arc<ListenerShared>>,
    /// Egress drops that had no listener to count them on.
    pub(crate) unrouted: Arc<ListenerCounters>,
    /// The node table, for the per-node rates.
    pub(crate) router: Arc<Router>,
}

/// The sampling task's state: what it reads, and the totals of the
/// previous period to subtract.
pub(crate) struct Sampler {
    sources: Sources,
    every: Duration,
    tx: watch::Sender<StatsSnapshot>,
    cancel: CancellationToken,
    last_at: Instant,
    last: Vec<Counters>,
    last_unrouted: Counters,
    last_links: HashMap<u64, LinkTotals>,
    /// Frames each node had delivered at the end of the previous period.
    last_nodes: HashMap<String, u64>,
}

impl Sampler {
    /// Takes the baseline now, before any connection is served, so the
    /// first period counts everything from the start whenever the task
    /// first runs.
    pub(crate) fn new(
        sources: Sources,
        every: Duration,
        tx: watch::Sender<StatsSnapshot>,
        cancel: CancellationToken,
    ) -> Sampler {
        let last = sources
            .listeners
            .iter()
            .map(|l| l.counters.snapshot())
            .collect();
        let last_unrouted = sources.unrouted.snapshot();
        let last_nodes = node_totals(&sources.router);
        Sampler {
            sources,
            every,
            tx,
            cancel,
            last_at: Instant::now(),
            last,
            last_unrouted,
            last_links: HashMap::new(),
            last_nodes,
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
        let mut listeners = Vec::with_capacity(self.sources.listeners.len());
        for (shared, before) in self.sources.listeners.iter().zip(self.last.iter_mut()) {
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
        let unrouted = self.sources.unrouted.snapshot();
        let unrouted_dropped = drops_since(&unrouted, &self.last_unrouted);
        self.last_unrouted = unrouted;
        let nodes = node_totals(&self.sources.router);
        let node_stats = node_stats(&nodes, &self.last_nodes, secs);
        self.last_nodes = nodes;
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        StatsSnapshot {
            seq,
            unix_ms,
            interval_secs: secs,
            listeners,
            unrouted_dropped,
            nodes: node_stats,
        }
    }
}

/// Frames each known node has had delivered into its queue.
fn node_totals(router: &Router) -> HashMap<String, u64> {
    router
        .nodes()
        .into_iter()
        .map(|n| (n.name, n.queue.enqueued))
        .collect()
}

/// Each node's deliveries over the period, by name; a node that appeared
/// during it counts from zero.
fn node_stats(
    now: &HashMap<String, u64>,
    before: &HashMap<String, u64>,
    secs: f64,
) -> Vec<NodeStats> {
    let mut nodes: Vec<NodeStats> = now
        .iter()
        .map(|(name, &frames)| {
            let delivered = frames.saturating_sub(before.get(name).copied().unwrap_or(0));
            NodeStats {
                node: name.clone(),
                frames_delivered: delivered,
                frames_per_sec: delivered as f64 / secs,
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    nodes
}

/// A period's drops by reason from the counters now and before.
fn drops_since(now: &Counters, before: &Counters) -> BTreeMap<&'static str, u64> {
    drops(&now.since(before))
}

/// One listener's period: its counters' differences, and each open
/// connection's (whose totals are recorded in `links` for next time).
fn listener_stats(
    shared: &ListenerShared,
    counters: &Counters,
    before: &Counters,
    secs: f64,
    last_links: &HashMap<u64, LinkTotals>,
    links: &mut HashMap<u64, LinkTotals>,
) -> ListenerStats {
    // Closed connections left their largest frames on the listener.
    let mut max_in = shared
        .counters
        .max_frame_received
        .swap(0, Ordering::Relaxed);
    let mut max_out = shared.counters.max_frame_sent.swap(0, Ordering::Relaxed);
    // Sized from the last period's count: doubling from empty would leave
    // up to half of it unused in the snapshot kept until the next one.
    let mut connections = Vec::with_capacity(last_links.len());
    shared.peers.for_each(|peer: &Arc<Peer>| {
        let c = &peer.counters;
        let conn_max_in = c.max_frame_in.swap(0, Ordering::Relaxed);
        let conn_max_out = c.max_frame_out.swap(0, Ordering::Relaxed);
        max_in = max_in.max(conn_max_in);
        max_out = max_out.max(conn_max_out);
        let totals = c.snapshot();
        let delta = totals.since(&last_links.get(&peer.conn).copied().unwrap_or_default());
        links.insert(peer.conn, totals);
        connections.push(ConnectionStats {
            conn: peer.conn,
            peer: peer.addr,
            node: peer.node.get().map(|n| n.to_string()),
            traffic: traffic(&delta, secs, conn_max_in, conn_max_out),
            dropped: delta.dropped,
        });
    });
    connections.sort_by_key(|c| c.conn);
    let delta = counters.since(before);
    ListenerStats {
        listener: shared.name.to_string(),
        connections_open: counters.connections_open,
        traffic: traffic(&listener_totals(&delta), secs, max_in, max_out),
        dropped: drops(&delta),
        connections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::DropReason;

    #[test]
    fn traffic_divides_by_the_period_and_never_by_zero_frames() {
        let t = traffic(
            &LinkTotals {
                frames_in: 100,
                bytes_in: 2_100,
                frame_bytes_in: 2_000,
                ..LinkTotals::default()
            },
            2.0,
            30,
            0,
        );
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

    #[test]
    fn node_rates_count_new_nodes_from_zero_and_forget_gone_ones() {
        let before = HashMap::from([("a".to_owned(), 10), ("gone".to_owned(), 5)]);
        let now = HashMap::from([("b".to_owned(), 4), ("a".to_owned(), 30)]);
        let stats = node_stats(&now, &before, 2.0);
        let snapshot = StatsSnapshot {
            nodes: stats,
            ..StatsSnapshot::default()
        };
        let names: Vec<&str> = snapshot.nodes.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let a = snapshot.node("a").expect("a");
        assert_eq!((a.frames_delivered, a.frames_per_sec), (20, 10.0));
        let b = snapshot.node("b").expect("b");
        assert_eq!((b.frames_delivered, b.frames_per_sec), (4, 2.0));
        assert!(snapshot.node("gone").is_none());
        // The JSON form (`--stats`, `/api/stats`) stays as it was.
        let json = serde_json::to_value(&snapshot).expect("json");
        assert!(json.get("nodes").is_none(), "{json}");
    }
}

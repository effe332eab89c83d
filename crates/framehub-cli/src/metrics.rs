//! `/metrics`: the hub's and the sinks' counters in the Prometheus text
//! format, rendered from snapshots at scrape time.
//!
//! Every family has HELP and TYPE lines and its unit in its name
//! (`_bytes`, `_frames`, `_seconds`, `_total` for counters). Labels are the
//! listener, the reason and the sink only, all bounded by the config or
//! the code: never a peer or a node, whose number the devices decide
//! (per-connection and per-node detail is in `/api/connections` and
//! `/api/nodes`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use framehub::{Counters, Hub};

use crate::sink::SinkStatus;

/// What `/metrics` reports besides the hub itself.
pub struct MetricsSources<'a> {
    /// The hub.
    pub hub: &'a Hub,
    /// Every sink's status.
    pub sinks: &'a [Arc<SinkStatus>],
    /// When the daemon started.
    pub started: Instant,
    /// Batches waiting for the sink thread, and how many it can hold.
    pub sink_queue: (usize, usize),
}

/// Builds the exposition text: one family at a time, HELP and TYPE first.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"");
                escape_label(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with one sample per listener.
    fn per_listener(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        listeners: &[(String, Counters)],
        value: impl Fn(&Counters) -> u64,
    ) {
        self.family(name, kind, help);
        for (listener, c) in listeners {
            self.sample(name, &[("listener", listener)], value(c));
        }
    }

    /// A family with one sample per sink of the given type (all if `None`).
    fn per_sink(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        sinks: &[Arc<SinkStatus>],
        of_type: Option<&str>,
        value: impl Fn(&SinkStatus) -> u64,
    ) {
        self.family(name, kind, help);
        for s in sinks.iter().filter(|s| of_type.is_none_or(|t| s.kind == t)) {
            self.sample(name, &[("sink", &s.name)], value(s));
        }
    }
}

/// Label values are escaped as the text format requires.
fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The whole exposition.
pub fn render(src: &MetricsSources<'_>) -> String {
    let hub = src.hub;
    let mut m = Exposition {
        out: String::with_capacity(16 << 10),
    };
    let listeners_info = hub.listeners();
    let listeners: Vec<(String, Counters)> = listeners_info
        .iter()
        .map(|l| {
            let counters = hub.listener_counters(&l.name).unwrap_or_default();
            (l.name.clone(), counters)
        })
        .collect();

    m.family(
        "framehub_build_info",
        "gauge",
        "Always 1; the version of the running framehub.",
    );
    m.sample(
        "framehub_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    m.family(
        "framehub_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
    );
    m.sample(
        "framehub_uptime_seconds",
        &[],
        format!("{:.3}", src.started.elapsed().as_secs_f64()),
    );

    m.family(
        "framehub_listener_up",
        "gauge",
        "1 while the listener accepts connections, 0 if its accept loop stopped or accept() is failing.",
    );
    for l in &listeners_info {
        m.sample(
            "framehub_listener_up",
            &[("listener", &l.name)],
            u8::from(l.is_accepting),
        );
    }
    m.per_listener(
        "framehub_connections_open",
        "gauge",
        "Connections open now.",
        &listeners,
        |c| c.connections_open,
    );
    m.per_listener(
        "framehub_connections_accepted_total",
        "counter",
        "Connections accepted and served.",
        &listeners,
        |c| c.connections_accepted,
    );
    m.per_listener(
        "framehub_connections_rejected_total",
        "counter",
        "Connections accepted and closed at once because max_connections were open.",
        &listeners,
        |c| c.connections_rejected,
    );
    m.family(
        "framehub_connections_closed_total",
        "counter",
        "Served connections that ended, by reason.",
    );
    for (listener, c) in &listeners {
        for (reason, n) in c.connections_closed_by {
            m.sample(
                "framehub_connections_closed_total",
                &[("listener", listener), ("reason", reason)],
                n,
            );
        }
    }
    m.per_listener(
        "framehub_accept_errors_total",
        "counter",
        "Errors from accept() (out of file descriptors, ...); the listener backs off and retries.",
        &listeners,
        |c| c.accept_errors,
    );
    m.per_listener(
        "framehub_auth_failures_total",
        "counter",
        "Connections closed for a wrong or missing token, or an oversized or missing first message.",
        &listeners,
        |c| c.auth_failures,
    );
    m.per_listener(
        "framehub_bytes_received_total",
        "counter",
        "Bytes read from the sockets.",
        &listeners,
        |c| c.bytes_received,
    );
    m.per_listener(
        "framehub_frames_received_total",
        "counter",
        "Frames cut from the streams, before any protocol check.",
        &listeners,
        |c| c.frames_received,
    );
    m.per_listener(
        "framehub_frames_delivered_total",
        "counter",
        "Frames put into a receiver queue.",
        &listeners,
        |c| c.frames_delivered,
    );
    m.per_listener(
        "framehub_heartbeats_received_total",
        "counter",
        "Heartbeat frames received (never delivered).",
        &listeners,
        |c| c.heartbeats,
    );
    m.per_listener(
        "framehub_frames_duplicate_total",
        "counter",
        "Frames skipped because their timestamp repeated the previous one's (dedup).",
        &listeners,
        |c| c.duplicates,
    );
    m.per_listener(
        "framehub_frames_sent_total",
        "counter",
        "Frames written to clients: egress messages, handler replies, server heartbeats.",
        &listeners,
        |c| c.frames_sent,
    );
    m.per_listener(
        "framehub_bytes_sent_total",
        "counter",
        "Bytes written to clients, framing included.",
        &listeners,
        |c| c.bytes_sent,
    );
    m.per_listener(
        "framehub_groups_published_total",
        "counter",
        "Groups published by a listener with delivery = \"groups\".",
        &listeners,
        |c| c.groups_published,
    );
    m.per_listener(
        "framehub_requests_total",
        "counter",
        "Frames handed to the listener's request handler.",
        &listeners,
        |c| c.requests,
    );
    m.per_listener(
        "framehub_slow_clients_disconnected_total",
        "counter",
        "Clients disconnected because their egress buffer was full (slow_client = \"disconnect\").",
        &listeners,
        |c| c.slow_clients_disconnected,
    );
    m.per_listener(
        "framehub_listener_rebuilds_total",
        "counter",
        "Times the listening socket failed and was bound again.",
        &listeners,
        |c| c.listener_rebuilds,
    );
    m.family(
        "framehub_frames_dropped_total",
        "counter",
        "Frames and egress messages not delivered, by reason.",
    );
    for (listener, c) in &listeners {
        for (reason, n) in c.dropped {
            m.sample(
                "framehub_frames_dropped_total",
                &[("listener", listener), ("reason", reason.as_str())],
                n,
            );
        }
    }

    let nodes = hub.nodes();
    let mut depths: Vec<usize> = nodes.iter().map(|n| n.queue.depth).collect();
    depths.extend(
        listeners_info
            .iter()
            .filter_map(|l| hub.listener_receiver(&l.name))
            .map(|r| r.stats().depth),
    );
    m.family("framehub_nodes", "gauge", "Nodes known to the hub.");
    m.sample("framehub_nodes", &[], nodes.len());
    m.family(
        "framehub_nodes_connected",
        "gauge",
        "Nodes with at least one open connection (healthy).",
    );
    m.sample(
        "framehub_nodes_connected",
        &[],
        nodes.iter().filter(|n| n.healthy).count(),
    );
    m.family(
        "framehub_queue_depth_frames",
        "gauge",
        "Frames waiting in all receiver queues (nodes and raw listeners).",
    );
    m.sample(
        "framehub_queue_depth_frames",
        &[],
        depths.iter().sum::<usize>(),
    );
    m.family(
        "framehub_queue_depth_max_frames",
        "gauge",
        "Frames waiting in the fullest receiver queue.",
    );
    m.sample(
        "framehub_queue_depth_max_frames",
        &[],
        depths.iter().max().copied().unwrap_or(0),
    );

    let (pending, capacity) = src.sink_queue;
    m.family(
        "framehub_sink_queue_batches",
        "gauge",
        "Batches of frames waiting for the sink thread.",
    );
    m.sample("framehub_sink_queue_batches", &[], pending);
    m.family(
        "framehub_sink_queue_capacity_batches",
        "gauge",
        "Batches the sink thread's queue holds before receivers fill up.",
    );
    m.sample("framehub_sink_queue_capacity_batches", &[], capacity);
    m.family(
        "framehub_sink_up",
        "gauge",
        "1 while the sink works, 0 while it fails (see /healthz for why).",
    );
    for s in src.sinks {
        m.sample(
            "framehub_sink_up",
            &[("sink", &s.name), ("type", s.kind)],
            u8::from(s.error().is_none()),
        );
    }
    let get = |f: fn(&SinkStatus) -> &std::sync::atomic::AtomicU64| {
        move |s: &SinkStatus| f(s).load(Ordering::Relaxed)
    };
    m.per_sink(
        "framehub_sink_records_written_total",
        "counter",
        "Records written by the sink (a tap: handed to its subscribers).",
        src.sinks,
        None,
        get(|s| &s.records_written),
    );
    m.per_sink(
        "framehub_sink_bytes_written_total",
        "counter",
        "Bytes written by the sink.",
        src.sinks,
        None,
        get(|s| &s.bytes_written),
    );
    m.per_sink(
        "framehub_sink_records_failed_total",
        "counter",
        "Records the sink could not write (disk full, permission, closed pipe).",
        src.sinks,
        None,
        get(|s| &s.records_failed),
    );
    m.per_sink(
        "framehub_sink_file_rotations_total",
        "counter",
        "Files rotated by a file sink.",
        src.sinks,
        Some("file"),
        get(|s| &s.rotations),
    );
    m.per_sink(
        "framehub_tap_subscribers",
        "gauge",
        "Subscribers connected to a tap.",
        src.sinks,
        Some("tap"),
        get(|s| &s.subscribers),
    );
    m.per_sink(
        "framehub_tap_records_dropped_total",
        "counter",
        "Records a tap subscriber missed because its buffer was full, summed over subscribers.",
        src.sinks,
        Some("tap"),
        get(|s| &s.records_lost),
    );
    m.per_sink(
        "framehub_tap_subscribers_cut_total",
        "counter",
        "Tap subscribers disconnected because their buffer was full.",
        src.sinks,
        Some("tap"),
        get(|s| &s.subscribers_cut),
    );
    m.per_sink(
        "framehub_tap_subscribers_rejected_total",
        "counter",
        "Tap subscribers refused because max_subscribers were connected.",
        src.sinks,
        Some("tap"),
        get(|s| &s.subscribers_rejected),
    );
    m.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut m = Exposition { out: String::new() };
        m.sample("x_total", &[("listener", "a\"b\\c\nd")], 3);
        assert_eq!(m.out, "x_total{listener=\"a\\\"b\\\\c\\nd\"} 3\n");
    }
}

//! `/metrics`: the hub's and the sinks' counters in the Prometheus text
//! format, rendered from snapshots at scrape time.
//!
//! The listeners' families are not listed here: the library declares them
//! once ([`Counters::METRICS`]) and this walks the declaration. The sinks'
//! families are declared once in [`SINK_FAMILIES`].
//!
//! Every family has HELP and TYPE lines and its unit in its name
//! (`_bytes`, `_frames`, `_seconds`, `_total` for counters). Labels are the
//! listener, the reason and the sink only, all bounded by the config or
//! the code: never a peer or a node, whose number the devices decide
//! (per-connection and per-node detail is in `/api/connections` and
//! `/api/nodes`).

mod process;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use framehub::{Counters, Hub};

use crate::histogram::Histogram;
use crate::reload::Reloads;
use crate::sink::{DELIVERY_LATENCY, SinkStatus};

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
    /// SIGHUP reloads, by result.
    pub reloads: &'a Reloads,
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

    /// Every family the library declares for listeners, in declaration
    /// order, one sample per listener (and per reason).
    fn listener_families(&mut self, listeners: &[(String, Counters)]) {
        let values: Vec<_> = listeners.iter().map(|(_, c)| c.metric_values()).collect();
        for (i, info) in Counters::METRICS.iter().enumerate() {
            let Some(name) = info.prometheus else {
                continue;
            };
            self.family(name, info.kind.as_str(), info.help);
            for ((listener, _), values) in listeners.iter().zip(&values) {
                values[i].for_each(|label, n| match (info.label, label) {
                    (Some(key), Some(value)) => {
                        self.sample(name, &[("listener", listener), (key, value)], n)
                    }
                    _ => self.sample(name, &[("listener", listener)], n),
                });
            }
        }
    }

    /// A family with one sample per sink of its type.
    fn sink_family(&mut self, family: &SinkFamily, sinks: &[Arc<SinkStatus>]) {
        self.family(family.name, family.kind, family.help);
        for s in sinks
            .iter()
            .filter(|s| family.of_type.is_none_or(|t| s.kind == t))
        {
            let value = (family.value)(s).load(Ordering::Relaxed);
            self.sample(family.name, &[("sink", &s.name)], value);
        }
    }
}

impl Exposition {
    /// A histogram's samples: cumulative `_bucket`s by `le` (`+Inf`
    /// last), `_sum` in seconds, `_count`.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut count = 0;
        for b in h.buckets() {
            let le = b.le.map_or_else(|| "+Inf".to_owned(), |le| le.to_string());
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, b.cumulative);
            count = b.cumulative;
        }
        self.sample(&format!("{name}_sum"), labels, h.sum_seconds());
        self.sample(&format!("{name}_count"), labels, count);
    }

    /// A histogram family with one histogram per sink of its type.
    fn sink_histogram(&mut self, family: &SinkHistogram, sinks: &[Arc<SinkStatus>]) {
        self.family(family.name, "histogram", family.help);
        for s in sinks.iter().filter(|s| s.kind == family.of_type) {
            self.histogram(family.name, &[("sink", &s.name)], (family.value)(s));
        }
    }
}

/// A sink's histogram as `/metrics` shows it.
struct SinkHistogram {
    name: &'static str,
    help: &'static str,
    /// The sink type that has it.
    of_type: &'static str,
    value: fn(&SinkStatus) -> &Histogram,
}

/// The sinks' histograms, in the order `/metrics` shows them.
const SINK_HISTOGRAMS: &[SinkHistogram] = &[
    SinkHistogram {
        name: "framehub_sink_file_write_duration_seconds",
        help: "Time a file sink took to write one chunk of records (a rotation included).",
        of_type: "file",
        value: |s| &s.write_duration,
    },
    SinkHistogram {
        name: "framehub_sink_file_sync_duration_seconds",
        help: "Time one fsync of a file sink's sync thread took.",
        of_type: "file",
        value: |s| &s.sync_duration,
    },
];

/// A sink counter as `/metrics` shows it.
struct SinkFamily {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    /// The sink type that has it; `None`: every sink.
    of_type: Option<&'static str>,
    value: fn(&SinkStatus) -> &AtomicU64,
}

/// The sinks' counters, in the order `/metrics` shows them.
const SINK_FAMILIES: &[SinkFamily] = &[
    SinkFamily {
        name: "framehub_sink_records_written_total",
        kind: "counter",
        help: "Records written by the sink (a tap: handed to its subscribers).",
        of_type: None,
        value: |s| &s.records_written,
    },
    SinkFamily {
        name: "framehub_sink_written_bytes_total",
        kind: "counter",
        help: "Bytes written by the sink.",
        of_type: None,
        value: |s| &s.bytes_written,
    },
    SinkFamily {
        name: "framehub_sink_records_failed_total",
        kind: "counter",
        help: "Records the sink could not write (disk full, permission, closed pipe).",
        of_type: None,
        value: |s| &s.records_failed,
    },
    SinkFamily {
        name: "framehub_sink_file_rotations_total",
        kind: "counter",
        help: "Files rotated by a file sink.",
        of_type: Some("file"),
        value: |s| &s.rotations,
    },
    SinkFamily {
        name: "framehub_tap_subscribers",
        kind: "gauge",
        help: "Subscribers connected to a tap.",
        of_type: Some("tap"),
        value: |s| &s.subscribers,
    },
    SinkFamily {
        name: "framehub_tap_records_dropped_total",
        kind: "counter",
        help: "Records a tap subscriber missed because its buffer was full, summed over subscribers.",
        of_type: Some("tap"),
        value: |s| &s.records_lost,
    },
    SinkFamily {
        name: "framehub_tap_subscribers_cut_total",
        kind: "counter",
        help: "Tap subscribers disconnected because their buffer was full.",
        of_type: Some("tap"),
        value: |s| &s.subscribers_cut,
    },
    SinkFamily {
        name: "framehub_tap_subscribers_rejected_total",
        kind: "counter",
        help: "Tap subscribers refused because max_subscribers were connected.",
        of_type: Some("tap"),
        value: |s| &s.subscribers_rejected,
    },
    SinkFamily {
        name: "framehub_tap_filters_refused_total",
        kind: "counter",
        help: "First lines from tap subscribers that were not a filter (those subscribers get every record).",
        of_type: Some("tap"),
        value: |s| &s.subscribe_refused,
    },
];

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
        "framehub_reloads_total",
        "counter",
        "SIGHUP reloads (tokens, file sinks), by result; a failed one kept the previous settings.",
    );
    for (result, n) in [("ok", &src.reloads.ok), ("failed", &src.reloads.failed)] {
        m.sample(
            "framehub_reloads_total",
            &[("result", result)],
            n.load(Ordering::Relaxed),
        );
    }

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
    m.listener_families(&listeners);

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
    for family in SINK_FAMILIES {
        m.sink_family(family, src.sinks);
    }
    m.family(
        "framehub_sink_delivery_latency_seconds",
        "histogram",
        "Time from the read that carried a frame to the sink thread taking it (queue wait), per frame.",
    );
    m.histogram(
        "framehub_sink_delivery_latency_seconds",
        &[],
        &DELIVERY_LATENCY,
    );
    for family in SINK_HISTOGRAMS {
        m.sink_histogram(family, src.sinks);
    }

    let history = hub.closed_connections();
    m.family(
        "framehub_connection_history_records",
        "gauge",
        "Closed connections remembered for /api/connections?state=closed (at most connection_history).",
    );
    m.sample("framehub_connection_history_records", &[], history.len());
    m.family(
        "framehub_connection_history_evicted_total",
        "counter",
        "Closed connections forgotten to make room for newer ones.",
    );
    m.sample(
        "framehub_connection_history_evicted_total",
        &[],
        history.evicted(),
    );
    m.process_families(&process::ProcessStats::read());
    m.out
}

impl Exposition {
    /// The `process_*` families as Prometheus' client libraries name
    /// them; one left out when `/proc` cannot say.
    fn process_families(&mut self, p: &process::ProcessStats) {
        let families: [(&str, &str, &str, Option<String>); 6] = [
            (
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                p.open_fds.map(|v| v.to_string()),
            ),
            (
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                p.max_fds.map(|v| v.to_string()),
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                p.resident_memory_bytes.map(|v| v.to_string()),
            ),
            (
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                p.virtual_memory_bytes.map(|v| v.to_string()),
            ),
            (
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                p.cpu_seconds.map(|v| format!("{v:.2}")),
            ),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                p.start_time_seconds.map(|v| format!("{v:.2}")),
            ),
        ];
        for (name, kind, help, value) in families {
            if let Some(value) = value {
                self.family(name, kind, help);
                self.sample(name, &[], value);
            }
        }
    }
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

    #[test]
    fn every_declared_family_appears_once_with_help_and_type() {
        let listeners = vec![
            ("radar".to_owned(), Counters::default()),
            ("ground".to_owned(), Counters::default()),
        ];
        let mut m = Exposition { out: String::new() };
        m.listener_families(&listeners);
        let mut exported = 0;
        for info in Counters::METRICS {
            let Some(name) = info.prometheus else {
                continue;
            };
            exported += 1;
            let help = format!("# HELP {name} {}\n", info.help);
            let kind = format!("# TYPE {name} {}\n", info.kind.as_str());
            assert_eq!(m.out.matches(&help).count(), 1, "{name}");
            assert_eq!(m.out.matches(&kind).count(), 1, "{name}");
            let samples: Vec<&str> = m
                .out
                .lines()
                .filter(|l| l.starts_with(&format!("{name}{{")))
                .collect();
            let per_listener = match info.label {
                Some(_) => samples.len() / 2,
                None => 1,
            };
            assert_eq!(samples.len(), 2 * per_listener, "{name}");
            assert!(samples[0].starts_with(&format!("{name}{{listener=\"radar\"")));
            assert!(samples[per_listener].starts_with(&format!("{name}{{listener=\"ground\"")));
        }
        // Nothing else: figures without a family stay out.
        assert_eq!(m.out.matches("# HELP ").count(), exported);
    }

    #[test]
    fn a_histogram_is_exposed_with_cumulative_buckets_sum_and_count() {
        let h = Histogram::new();
        h.observe(std::time::Duration::from_millis(2));
        h.observe(std::time::Duration::from_secs(30));
        let mut m = Exposition { out: String::new() };
        m.histogram("x_seconds", &[("sink", "f")], &h);
        let lines: Vec<&str> = m.out.lines().collect();
        assert_eq!(lines[0], "x_seconds_bucket{sink=\"f\",le=\"0.00005\"} 0");
        assert!(lines.contains(&"x_seconds_bucket{sink=\"f\",le=\"0.0025\"} 1"));
        assert!(lines.contains(&"x_seconds_bucket{sink=\"f\",le=\"10\"} 1"));
        let n = lines.len();
        assert_eq!(lines[n - 3], "x_seconds_bucket{sink=\"f\",le=\"+Inf\"} 2");
        assert_eq!(lines[n - 2], "x_seconds_sum{sink=\"f\"} 30.002");
        assert_eq!(lines[n - 1], "x_seconds_count{sink=\"f\"} 2");
    }

    #[test]
    fn sink_families_are_declared_once() {
        let mut names = std::collections::HashSet::new();
        for f in SINK_FAMILIES {
            assert!(names.insert(f.name), "{} twice", f.name);
            assert_eq!(
                f.name.ends_with("_total"),
                f.kind == "counter",
                "{}",
                f.name
            );
        }
    }
}

//! `framehub bench`: a load generator that measures framehub (in process or
//! a running server), the loopback ceiling, nats-server, and a reference
//! JetStream publisher, on the same frames and connection counts, and
//! reports one table or JSON object.
//!
//! # Layout
//! - [`frames`]: realistic radar frames padded to a size, framed.
//! - [`load`]: the generator (flood or paced with send times).
//! - [`targets`]: what receives: the hub in process, the ceiling server,
//!   a NATS subscriber, or nothing (a remote server).
//! - [`idle`]: many idle authenticated connections and the server's memory.
//! - [`tls`]: the generator's TLS client (`--tls-ca`).
//! - [`ack`]: the library's `Client` as the generator, with or without
//!   acknowledged delivery: throughput, ack latency, outbox memory.
//! - [`jetstream`]: the reference JetStream publisher the daemon's `nats`
//!   sink is measured against.

#![forbid(unsafe_code)]

pub mod ack;
pub mod frames;
pub mod idle;
pub mod jetstream;
pub mod load;
pub mod nats;
pub mod targets;
pub mod tls;

use std::time::Duration;

use serde::Serialize;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    /// Frames measured.
    pub samples: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

impl Latency {
    /// Percentiles of a histogram recorded in nanoseconds.
    pub fn from_histogram(h: &hdrhistogram::Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let us = |v: u64| v as f64 / 1000.0;
        Some(Latency {
            samples: h.len(),
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        })
    }
}

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What received the load: `inproc`, `ceiling`, `nats`, `remote`.
    pub target: String,
    /// Framing of the frames.
    pub framing: String,
    /// Connections.
    pub conns: usize,
    /// Nodes.
    pub nodes: usize,
    /// Payload size.
    pub size: usize,
    /// Frames written by the generator.
    pub frames_sent: u64,
    /// Seconds from start to the last write.
    pub send_secs: f64,
    /// Frames written per second.
    pub sent_fps: f64,
    /// Payload megabytes (10^6) written per second.
    pub sent_mbps: f64,
    /// Frames the consumer received (absent for a remote server).
    pub frames_delivered: Option<u64>,
    /// Seconds from start to the last delivery.
    pub delivery_secs: Option<f64>,
    /// Frames delivered per second.
    pub delivered_fps: Option<f64>,
    /// Payload megabytes (10^6) delivered per second.
    pub delivered_mbps: Option<f64>,
    /// Frames sent but not delivered (counted drops for framehub).
    pub drops: Option<u64>,
    /// Write-to-receive latency (`--rate` runs).
    pub latency: Option<Latency>,
}

impl Report {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut row = |k: &str, v: String| out.push_str(&format!("{k:<18} {v}\n"));
        row("target", self.target.clone());
        row(
            "framing",
            format!("{} ({} B frames)", self.framing, self.size),
        );
        row(
            "connections",
            format!("{} ({} nodes)", self.conns, self.nodes),
        );
        row(
            "sent",
            format!(
                "{} frames in {:.3} s: {:.0} frames/s, {:.1} MB/s",
                self.frames_sent, self.send_secs, self.sent_fps, self.sent_mbps
            ),
        );
        if let (Some(n), Some(s), Some(fps), Some(mbps)) = (
            self.frames_delivered,
            self.delivery_secs,
            self.delivered_fps,
            self.delivered_mbps,
        ) {
            row(
                "delivered",
                format!("{n} frames in {s:.3} s: {fps:.0} frames/s, {mbps:.1} MB/s"),
            );
        }
        if let Some(d) = self.drops {
            row("drops", d.to_string());
        }
        if let Some(l) = self.latency {
            row(
                "latency",
                format!(
                    "p50 {:.0} us, p99 {:.0} us, p999 {:.0} us, max {:.0} us ({} samples)",
                    l.p50_us, l.p99_us, l.p999_us, l.max_us, l.samples
                ),
            );
        }
        out
    }
}

/// Megabytes (10^6) per second.
pub fn mbps(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

/// Per second.
pub fn per_sec(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(1e-9)
}

//! Many idle, authenticated connections: the server's resident memory per
//! connection and the rate at which it takes them in.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::frames;
use crate::tls::Connector;

/// What `--idle-conns` measured.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Connections opened and authenticated.
    pub conns: usize,
    /// Seconds to open them all.
    pub open_secs: f64,
    /// Connections opened per second (one after the other; with TLS,
    /// handshakes per second).
    pub accept_rate: f64,
    /// Whether the connections speak TLS.
    pub tls: bool,
    /// Server resident memory before, KiB (with `--server-pid`).
    pub rss_before_kib: Option<u64>,
    /// Server resident memory with every connection open, KiB.
    pub rss_after_kib: Option<u64>,
    /// (after - before) / conns, bytes.
    pub bytes_per_conn: Option<f64>,
}

impl IdleReport {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "idle connections   {} opened{} in {:.3} s: {:.0} connections/s\n",
            self.conns,
            if self.tls { " with TLS" } else { "" },
            self.open_secs,
            self.accept_rate
        );
        if let (Some(b), Some(a), Some(per)) =
            (self.rss_before_kib, self.rss_after_kib, self.bytes_per_conn)
        {
            out.push_str(&format!(
                "server memory      {b} KiB -> {a} KiB: {:.2} KiB per connection\n",
                per / 1024.0
            ));
        }
        out
    }
}

/// Resident memory of a process, KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}

/// Opens `conns` connections to `addr` (with a TLS handshake each when
/// `tls` is given), each sending an authenticating heartbeat, keeps them
/// open while measuring, and closes them.
pub async fn run(
    addr: SocketAddr,
    tls: Option<&Connector>,
    conns: usize,
    token: Option<&str>,
    server_pid: Option<u32>,
) -> anyhow::Result<IdleReport> {
    let before = server_pid.map(rss_kib).transpose()?;
    let start = Instant::now();
    let mut open = Vec::with_capacity(conns);
    for i in 0..conns {
        let node = format!("idle-{}", i + 1);
        let mut s = crate::tls::connect(addr, tls)
            .await
            .with_context(|| format!("connection {} of {conns}", i + 1))?;
        let hello = match token {
            Some(t) => frames::hello(&node, t),
            None => format!("{{\"node_id\":\"{node}\",\"type\":\"heartbeat\"}}\n").into_bytes(),
        };
        s.write_all(&hello).await?;
        s.flush().await?;
        open.push(s);
    }
    let open_secs = start.elapsed();
    // Let the server take in the last connections and their heartbeats.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server_pid.map(rss_kib).transpose()?;
    let per = match (before, after) {
        (Some(b), Some(a)) => Some((a.saturating_sub(b) * 1024) as f64 / conns.max(1) as f64),
        _ => None,
    };
    drop(open);
    Ok(IdleReport {
        conns,
        open_secs: open_secs.as_secs_f64(),
        accept_rate: conns as f64 / open_secs.as_secs_f64().max(1e-9),
        tls: tls.is_some(),
        rss_before_kib: before,
        rss_after_kib: after,
        bytes_per_conn: per,
    })
}

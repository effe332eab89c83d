//! Just enough of the NATS text protocol to load nats-server the way the
//! generator loads framehub: publishers write `PUB det.<node>` frames, one
//! subscriber on `det.>` counts what is delivered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::load::Wire;
use crate::targets::merge::Histograms;
use crate::targets::{Delivery, record_latency};

/// Publishers: `CONNECT`, then `PUB det.<node> <len>\r\n<payload>\r\n`.
pub struct NatsWire;

const CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false}\r\n";

impl Wire for NatsWire {
    fn preamble(&self, _node: &str) -> Vec<u8> {
        CONNECT.to_vec()
    }
    fn wrap(&self, node: &str, payload: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
        out.extend_from_slice(format!("PUB det.{node} {}\r\n", payload.len()).as_bytes());
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        Ok(())
    }
}

/// Connects the subscriber, waits until the server confirmed the
/// subscription (PING/PONG), and counts deliveries in a task.
pub(crate) async fn subscribe(
    addr: SocketAddr,
    delivery: Arc<Delivery>,
    histograms: Arc<Histograms>,
    epoch: Instant,
    latency: bool,
) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to nats-server at {addr}"))?;
    stream.set_nodelay(true)?;
    stream.write_all(CONNECT).await?;
    stream.write_all(b"SUB det.> 1\r\nPING\r\n").await?;
    let mut buf = Vec::with_capacity(1 << 20);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline.into(), stream.read(&mut chunk))
            .await
            .context("no PONG from nats-server")??;
        if n == 0 {
            bail!("nats-server closed the subscriber connection");
        }
        buf.extend_from_slice(&chunk[..n]);
        if memchr::memmem::find(&buf, b"-ERR").is_some() {
            bail!("nats-server refused: {}", String::from_utf8_lossy(&buf));
        }
        if memchr::memmem::find(&buf, b"PONG\r\n").is_some() {
            break;
        }
    }
    tokio::spawn(async move {
        if let Err(e) = read_messages(stream, &delivery, &histograms, epoch, latency).await {
            tracing::warn!(error = %e, "nats subscriber stopped");
        }
    });
    Ok(())
}

async fn read_messages(
    mut stream: TcpStream,
    delivery: &Delivery,
    histograms: &Histograms,
    epoch: Instant,
    latency: bool,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 4 << 20];
    let mut filled = 0;
    let mut h = Histograms::new_local();
    loop {
        if filled == buf.len() {
            bail!("a NATS message larger than the read buffer");
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
        let mut pos = 0;
        let (mut frames, mut bytes) = (0u64, 0u64);
        while let Some(eol) = memchr::memmem::find(&buf[pos..filled], b"\r\n") {
            let line = &buf[pos..pos + eol];
            if let Some(rest) = line.strip_prefix(b"MSG ") {
                let len: usize = rest
                    .rsplit(|&b| b == b' ')
                    .next()
                    .and_then(|l| std::str::from_utf8(l).ok())
                    .and_then(|l| l.parse().ok())
                    .context("bad MSG line")?;
                let start = pos + eol + 2;
                if filled < start + len + 2 {
                    break;
                }
                if latency {
                    record_latency(&mut h, epoch, &buf[start..start + len]);
                }
                frames += 1;
                bytes += len as u64;
                pos = start + len + 2;
            } else if line == b"PING" {
                stream.write_all(b"PONG\r\n").await?;
                pos += eol + 2;
            } else if line.starts_with(b"-ERR") {
                tracing::warn!(reply = %String::from_utf8_lossy(line), "nats-server error");
                pos += eol + 2;
            } else {
                pos += eol + 2;
            }
        }
        delivery.add(frames, bytes);
        buf.copy_within(pos..filled, 0);
        filled -= pos;
        // Merge per read: the run ends while this connection is still open.
        if latency && frames > 0 {
            histograms.merge(&h);
            h.reset();
        }
    }
    Ok(())
}

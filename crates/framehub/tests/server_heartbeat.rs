//! `server_heartbeat` against real sockets: what each framing writes, that
//! it is counted, that it is off by default, and that a client that never
//! reads cannot slow down the read loop.

mod common;

use std::time::Duration;

use common::*;
use framehub::codec::{FramingConfig, LengthPrefix};
use framehub::{ByteSize, ConnectionEvent, ListenerConfig, Protocol, SocketConfig};
use tokio::io::AsyncReadExt;

/// Reads exactly `len` bytes or panics after [`PATIENCE`].
async fn read_exact(stream: &mut tokio::net::TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut buf))
        .await
        .expect("heartbeats in time")
        .expect("read");
    buf
}

#[tokio::test]
async fn node_listener_writes_heartbeat_lines_and_counts_them() {
    let hub = start(ListenerConfig {
        server_heartbeat: Some(Duration::from_millis(50)),
        ..node_listener(Some("secret"))
    })
    .await;
    let mut events = hub.events();
    let mut s = connect(&hub).await;
    send_line(&mut s, &heartbeat("radar1", Some("secret"))).await;
    let hb = b"{\"type\":\"heartbeat\"}\n";
    let got = read_exact(&mut s, hb.len() * 4).await;
    assert_eq!(got, hb.repeat(4));
    drop(s);
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(ConnectionEvent::Closed { counts, .. }) = events.recv().await {
                return counts;
            }
        }
    })
    .await
    .expect("closed event");
    assert!(closed.frames_out >= 4, "{closed:?}");
    assert_eq!(closed.bytes_out, closed.frames_out * hb.len() as u64);
    let c = hub.counters();
    assert_eq!(c.frames_sent, closed.frames_out);
    assert_eq!(c.bytes_sent, closed.bytes_out);
}

#[tokio::test]
async fn raw_listeners_write_an_empty_frame_in_their_framing() {
    for (framing, empty) in [
        (FramingConfig::Lines, &b"\n"[..]),
        (FramingConfig::Length(LengthPrefix::default()), b"\0\0\0\0"),
        (FramingConfig::Cobs, b"\0\x01\0"),
    ] {
        let hub = start(ListenerConfig {
            framing: framing.clone(),
            protocol: Protocol::Raw,
            server_heartbeat: Some(Duration::from_millis(30)),
            ..node_listener(None)
        })
        .await;
        let mut s = connect(&hub).await;
        assert_eq!(
            read_exact(&mut s, empty.len() * 3).await,
            empty.repeat(3),
            "{framing:?}"
        );
    }
}

#[tokio::test]
async fn heartbeats_are_off_by_default() {
    let hub = start(node_listener(None)).await;
    let mut s = connect(&hub).await;
    send_line(&mut s, &detection("radar1", None, 1)).await;
    assert!(still_open(&mut s, Duration::from_millis(500)).await);
    assert_eq!(hub.counters().frames_sent, 0);
}

/// A client that never reads: its receive buffer and the server's send
/// buffer fill with heartbeats until the writer is stuck. Frames it sends
/// must still be read and delivered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_hold_up_the_read_loop() {
    let hub = start(ListenerConfig {
        server_heartbeat: Some(Duration::from_millis(1)),
        socket: SocketConfig {
            send_buffer_bytes: Some(ByteSize(4096)),
            ..SocketConfig::default()
        },
        ..node_listener(None)
    })
    .await;
    let radar = hub.receiver("radar1");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut s = socket.connect(hub.local_addr()).await.expect("connect");
    // Fill both buffers: at 1 heartbeat/ms of 21 bytes this takes well
    // under the wait; then the writer task blocks and stops counting.
    let stuck = counters_until(&hub, "heartbeat writer blocked", |c| c.frames_sent > 100).await;
    let mut last = stuck.frames_sent;
    let mut stable = 0;
    eventually("heartbeat writer blocked", || {
        let now = hub.counters().frames_sent;
        if now == last {
            stable += 1;
        } else {
            stable = 0;
            last = now;
        }
        let done = stable >= 30;
        async move { done }
    })
    .await;
    let blocked_at = hub.counters().frames_sent;
    for ts in 0..1000 {
        send_line(&mut s, &detection("radar1", None, ts)).await;
    }
    for ts in 0..1000u64 {
        let frame = radar.recv_timeout(PATIENCE).await.expect("delivered");
        let v: serde_json::Value = serde_json::from_slice(&frame.payload).expect("json");
        assert_eq!(v["timestamp"], ts);
    }
    assert_eq!(
        hub.counters().frames_sent,
        blocked_at,
        "the writer stayed blocked while frames flowed"
    );
    // Reading again unblocks the writer.
    let mut sink = vec![0u8; 1 << 16];
    let _ = s.read(&mut sink).await.expect("read");
    counters_until(&hub, "writer resumes", |c| c.frames_sent > blocked_at).await;
}

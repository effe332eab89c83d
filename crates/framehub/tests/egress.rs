//! Egress on real sockets: broadcast in each listener's framing, unicast to
//! a connection or a node, drops counted, and a client that stops reading
//! never delaying the others (dropped for, or disconnected).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use framehub::codec::{FramingConfig, LengthPrefix};
use framehub::{
    ByteSize, CloseReason, ConnectionEvent, DropReason, Hub, ListenerConfig, Protocol,
    SlowClientPolicy, SocketConfig,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

fn raw_listener(framing: FramingConfig) -> ListenerConfig {
    ListenerConfig {
        framing,
        protocol: Protocol::Raw,
        ..node_listener(None)
    }
}

/// Reads exactly `len` bytes or panics after [`PATIENCE`].
async fn read_exact(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut buf))
        .await
        .expect("egress in time")
        .expect("read");
    buf
}

async fn open(hub: &Hub, n: usize) -> Vec<TcpStream> {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(connect(hub).await);
    }
    counters_until(hub, "clients accepted", |c| c.connections_open == n as u64).await;
    clients
}

#[tokio::test]
async fn broadcast_reaches_every_client_in_the_listeners_framing() {
    for (framing, wire) in [
        (FramingConfig::Lines, &b"hello\n"[..]),
        (
            FramingConfig::Length(LengthPrefix::default()),
            b"\0\0\0\x05hello",
        ),
        (FramingConfig::Cobs, b"\0\x06hello\0"),
        (FramingConfig::Chunk, b"hello"),
    ] {
        let hub = start(raw_listener(framing.clone())).await;
        let mut clients = open(&hub, 3).await;
        assert_eq!(hub.broadcast(b"hello").expect("framable"), 3, "{framing:?}");
        for c in &mut clients {
            assert_eq!(read_exact(c, wire.len()).await, wire, "{framing:?}");
        }
        let c = counters_until(&hub, "written", |c| c.frames_sent == 3).await;
        assert_eq!(c.bytes_sent, 3 * wire.len() as u64);
        assert_eq!(c.dropped_total(), 0);
    }
}

#[tokio::test]
async fn a_broadcast_without_clients_is_dropped_and_counted() {
    let hub = start(raw_listener(FramingConfig::Lines)).await;
    assert_eq!(hub.broadcast(b"anyone?").expect("framable"), 0);
    assert_eq!(hub.counters().dropped(DropReason::NoClient), 1);
    // A message the framing cannot carry is an error, not a drop.
    assert!(hub.broadcast(b"two\nlines").is_err());
    assert!(hub.broadcast_on("nope", b"x").is_err());
    assert_eq!(hub.counters().dropped_total(), 1);
}

#[tokio::test]
async fn unicast_goes_to_one_connection_or_to_one_node() {
    let hub = start(node_listener(None)).await;
    let r1 = hub.receiver("radar1");
    let mut a = connect(&hub).await;
    let mut b = connect(&hub).await;
    send_line(&mut a, &detection("radar1", None, 1)).await;
    send_line(&mut b, &detection("radar2", None, 1)).await;
    let conn_a = r1.recv_timeout(PATIENCE).await.expect("frame").source.conn;
    counters_until(&hub, "both bound", |c| c.frames_delivered == 2).await;

    assert_eq!(
        hub.send_to_connection(conn_a, b"{\"cmd\":1}").expect("ok"),
        1
    );
    assert_eq!(hub.send_to_node("radar2", b"{\"cmd\":2}").expect("ok"), 1);
    let mut a = BufReader::new(a);
    let mut b = BufReader::new(b);
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, a.read_line(&mut line))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(line, "{\"cmd\":1}\n");
    line.clear();
    tokio::time::timeout(PATIENCE, b.read_line(&mut line))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(line, "{\"cmd\":2}\n");
    // Each got only its own message.
    counters_until(&hub, "both written", |c| c.frames_sent == 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hub.counters().frames_sent, 2);

    assert_eq!(hub.send_to_connection(9999, b"x").expect("ok"), 0);
    assert_eq!(hub.send_to_node("radar9", b"x").expect("ok"), 0);
    assert_eq!(hub.counters().dropped(DropReason::NoClient), 2);
}

const MESSAGES: usize = 2000;

/// A listener whose server-side buffers are small, so a client that does
/// not read fills them quickly.
fn small_buffers(slow_client: SlowClientPolicy) -> ListenerConfig {
    ListenerConfig {
        egress_buffer_bytes: ByteSize(32 << 10),
        slow_client,
        socket: SocketConfig {
            send_buffer_bytes: Some(ByteSize(4096)),
            ..SocketConfig::default()
        },
        ..raw_listener(FramingConfig::Lines)
    }
}

/// A client whose own receive buffer is small too, and that never reads.
async fn connect_slow(hub: &Hub) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    socket.connect(hub.local_addr()).await.expect("connect")
}

/// Reads `MESSAGES` numbered lines, checks each arrived in order, and
/// reports progress; returns the stream, still open.
async fn read_all(stream: TcpStream, progress: Arc<AtomicUsize>) -> TcpStream {
    let mut lines = BufReader::new(stream).lines();
    for i in 0..MESSAGES {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("fast client keeps receiving")
            .expect("read")
            .expect("line");
        assert_eq!(line.split(' ').next(), Some(i.to_string().as_str()));
        progress.fetch_add(1, Ordering::Relaxed);
    }
    lines.into_inner().into_inner()
}

/// Starts a reader per fast client.
type Readers = Vec<JoinHandle<TcpStream>>;

fn spawn_readers(fast: Vec<TcpStream>) -> (Readers, Vec<Arc<AtomicUsize>>) {
    fast.into_iter()
        .map(|s| {
            let progress = Arc::new(AtomicUsize::new(0));
            (tokio::spawn(read_all(s, progress.clone())), progress)
        })
        .unzip()
}

/// Broadcasts `MESSAGES` lines of about 1 KiB; returns how many clients
/// missed each, summed. Every 16 messages it waits until the fast readers
/// have them (half an egress buffer), so on a busy machine only a client
/// that does not read at all can fill up.
async fn broadcast_all(hub: &Hub, clients: usize, fast: &[Arc<AtomicUsize>]) -> usize {
    let pad = "x".repeat(1000);
    let mut missed = 0;
    for i in 0..MESSAGES {
        let took = hub
            .broadcast(format!("{i} {pad}").as_bytes())
            .expect("framable");
        missed += clients - took;
        if i % 16 == 15 {
            eventually("fast clients keep up", || {
                let caught_up = fast.iter().all(|p| p.load(Ordering::Relaxed) > i);
                async move { caught_up }
            })
            .await;
        }
    }
    missed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_messages_and_delays_nobody() {
    let hub = start(small_buffers(SlowClientPolicy::Drop)).await;
    let slow = connect_slow(&hub).await;
    let fast: Vec<_> = open_more(&hub, 2, 1).await;
    let (readers, progress) = spawn_readers(fast);
    let missed = broadcast_all(&hub, 3, &progress).await;
    let mut fast = Vec::new();
    for r in readers {
        fast.push(r.await.expect("every message reached each fast client"));
    }
    // Everything missed was the slow client's, and each one was counted.
    assert!(missed > MESSAGES / 2, "the slow client filled up: {missed}");
    let c = hub.counters();
    assert_eq!(c.dropped(DropReason::EgressFull), missed as u64);
    assert_eq!(c.connections_open, 3, "dropping does not disconnect");
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_disconnected_when_the_listener_says_so() {
    let hub = start(small_buffers(SlowClientPolicy::Disconnect)).await;
    let mut events = hub.events();
    let mut slow = connect_slow(&hub).await;
    let slow_addr = slow.local_addr().expect("addr");
    let fast: Vec<_> = open_more(&hub, 2, 1).await;
    let (readers, progress) = spawn_readers(fast);
    broadcast_all(&hub, 3, &progress).await;
    let mut fast = Vec::new();
    for r in readers {
        fast.push(r.await.expect("every message reached each fast client"));
    }
    let (reason, peer) = next_close(&mut events).await;
    assert_eq!((reason, peer), (CloseReason::SlowClient, slow_addr));
    let c = hub.counters();
    assert_eq!(c.slow_clients_disconnected, 1);
    assert!(c.dropped(DropReason::EgressFull) >= 1);
    assert_eq!(c.connections_open, 2);
    expect_closed(&mut slow).await;
}

/// Opens `n` more clients when `already` are connected.
async fn open_more(hub: &Hub, n: usize, already: usize) -> Vec<TcpStream> {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(connect(hub).await);
    }
    counters_until(hub, "clients accepted", |c| {
        c.connections_open == (n + already) as u64
    })
    .await;
    clients
}

#[tokio::test]
async fn server_heartbeats_and_messages_share_one_writer() {
    let hub = start(ListenerConfig {
        server_heartbeat: Some(Duration::from_millis(20)),
        ..raw_listener(FramingConfig::Lines)
    })
    .await;
    let mut s = BufReader::new(open(&hub, 1).await.remove(0));
    let mut line = String::new();
    // A heartbeat (an empty line) comes on its own...
    tokio::time::timeout(PATIENCE, s.read_line(&mut line))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(line, "\n");
    // ...and a message goes out whole between heartbeats.
    assert_eq!(hub.broadcast(b"data").expect("framable"), 1);
    let mut saw_data = false;
    for _ in 0..100 {
        line.clear();
        tokio::time::timeout(PATIENCE, s.read_line(&mut line))
            .await
            .expect("in time")
            .expect("read");
        assert!(line == "\n" || line == "data\n", "{line:?}");
        if line == "data\n" {
            saw_data = true;
            break;
        }
    }
    assert!(saw_data);
    let closed = {
        let mut events = hub.events();
        drop(s);
        loop {
            match tokio::time::timeout(PATIENCE, events.recv()).await {
                Ok(Ok(ConnectionEvent::Closed { counts, .. })) => break counts,
                Ok(_) => continue,
                Err(_) => panic!("no close event"),
            }
        }
    };
    assert!(closed.frames_out >= 2, "{closed:?}");
}

//! Acknowledged delivery (issue 14) on real sockets, with a raw-socket
//! client: acks come only once the consumer acknowledges, cumulatively;
//! the ack on bind; duplicates dropped and counted; the `length` layout;
//! a consumer's failure rewinds and closes, and resends are taken again.

mod common;

use std::time::Duration;

use common::*;
use framehub::codec::{FramingConfig, LengthPrefix};
use framehub::{
    AckConfig, AckMode, DropReason, Hub, HubConfig, ListenerConfig, OverflowPolicy, Protocol,
    QueueConfig,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;

fn ack_listener() -> ListenerConfig {
    ListenerConfig {
        ack: AckConfig {
            mode: AckMode::Durable,
            ..AckConfig::default()
        },
        queue: QueueConfig {
            overflow: OverflowPolicy::Block,
            ..QueueConfig::default()
        },
        ..node_listener(None)
    }
}

/// A raw listener of the `length` layout with acknowledged delivery.
fn length_listener() -> ListenerConfig {
    ListenerConfig {
        framing: FramingConfig::Length(LengthPrefix::default()),
        protocol: Protocol::Raw,
        ..ack_listener()
    }
}

/// One frame of the `length` layout: its length, its 8-byte sequence
/// number, the payload.
fn framed(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut f = ((8 + payload.len()) as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn frame(node: &str, seq: u64) -> String {
    format!("{{\"node_id\":\"{node}\",\"seq\":{seq},\"v\":{seq}}}\n")
}

/// The next line the server sends, within [`PATIENCE`].
async fn next_line(reader: &mut BufReader<OwnedReadHalf>) -> String {
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, reader.read_line(&mut line))
        .await
        .expect("a line in time")
        .expect("read");
    line
}

/// Whether the server sends anything within `wait`.
async fn silent(reader: &mut BufReader<OwnedReadHalf>, wait: Duration) -> bool {
    let mut line = String::new();
    tokio::time::timeout(wait, reader.read_line(&mut line))
        .await
        .is_err()
}

#[tokio::test]
async fn acks_follow_the_consumer_cumulatively_and_duplicates_are_dropped() {
    let hub = start(ack_listener()).await;
    let acks = hub.acks();
    let rx = hub.receiver("r1");
    let stream = connect(&hub).await;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    use tokio::io::AsyncWriteExt;
    for seq in 1..=5 {
        write
            .write_all(frame("r1", seq).as_bytes())
            .await
            .expect("send");
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(
            tokio::time::timeout(PATIENCE, rx.recv())
                .await
                .expect("frame")
                .expect("open"),
        );
    }
    assert_eq!(
        got.iter()
            .map(|f| f.seq.map(|s| s.value()))
            .collect::<Vec<_>>(),
        [Some(1), Some(2), Some(3), Some(4), Some(5)]
    );
    // Nothing is acknowledged before the consumer says so.
    assert!(
        silent(&mut reader, Duration::from_millis(300)).await,
        "no ack before the consumer's"
    );
    acks.acknowledge_frames(&got[..3]);
    assert_eq!(
        next_line(&mut reader).await,
        "{\"type\":\"ack\",\"seq\":3}\n"
    );
    // One ack per call, for the batch's last frame.
    acks.acknowledge_frames(&got[3..]);
    assert_eq!(
        next_line(&mut reader).await,
        "{\"type\":\"ack\",\"seq\":5}\n"
    );
    assert_eq!(acks.durable("r1"), Some(5));
    // Resends (a reconnecting client) are dropped, counted as duplicates;
    // a new frame goes through; a frame without seq is delivered unacked.
    drop(write);
    let stream = connect(&hub).await;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    for seq in 4..=6 {
        write
            .write_all(frame("r1", seq).as_bytes())
            .await
            .expect("send");
    }
    write
        .write_all(b"{\"node_id\":\"r1\",\"v\":0}\n")
        .await
        .expect("send");
    // The ack on bind: where the server stands.
    assert_eq!(
        next_line(&mut reader).await,
        "{\"type\":\"ack\",\"seq\":5}\n"
    );
    let six = tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("frame")
        .expect("open");
    assert_eq!(six.seq.map(|s| s.value()), Some(6));
    let plain = tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("frame")
        .expect("open");
    assert_eq!(plain.seq, None);
    let c = counters_until(&hub, "duplicates counted", |c| {
        c.dropped(DropReason::Duplicate) == 2
    })
    .await;
    assert_eq!(c.dropped(DropReason::Duplicate), 2);
    acks.acknowledge_frame(&six);
    assert_eq!(
        next_line(&mut reader).await,
        "{\"type\":\"ack\",\"seq\":6}\n"
    );
    acks.acknowledge_frame(&plain);
    assert!(
        silent(&mut reader, Duration::from_millis(200)).await,
        "a frame without seq acks nothing"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_failed_consumer_rewinds_closes_and_takes_the_resends() {
    let hub = start(ack_listener()).await;
    let acks = hub.acks();
    let rx = hub.receiver("r2");
    let stream = connect(&hub).await;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    use tokio::io::AsyncWriteExt;
    for seq in [10, 11, 12] {
        write
            .write_all(frame("r2", seq).as_bytes())
            .await
            .expect("send");
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            tokio::time::timeout(PATIENCE, rx.recv())
                .await
                .expect("frame")
                .expect("open"),
        );
    }
    acks.acknowledge_frame(&got[0]);
    assert_eq!(
        next_line(&mut reader).await,
        "{\"type\":\"ack\",\"seq\":10}\n"
    );
    // 11 and 12 are lost by the consumer: the connection closes.
    acks.fail("r2");
    let mut rest = Vec::new();
    let end = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut rest)).await;
    assert!(matches!(end, Ok(Ok(_))), "closed: {end:?}");
    // An acknowledgement of the lost round is ignored.
    acks.acknowledge_frame(&got[2]);
    assert_eq!(acks.durable("r2"), Some(10));
    // The client sends 11 and 12 again: taken, not duplicates.
    let stream = connect(&hub).await;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    for seq in [11, 12] {
        write
            .write_all(frame("r2", seq).as_bytes())
            .await
            .expect("send");
    }
    // The ack on bind (the first frame binds).
    assert_eq!(
        next_line(&mut reader).await,
        "{\"type\":\"ack\",\"seq\":10}\n"
    );
    let mut again = Vec::new();
    for _ in 0..2 {
        again.push(
            tokio::time::timeout(PATIENCE, rx.recv())
                .await
                .expect("frame")
                .expect("open"),
        );
    }
    acks.acknowledge_frames(&again);
    assert_eq!(
        next_line(&mut reader).await,
        "{\"type\":\"ack\",\"seq\":12}\n"
    );
    assert_eq!(hub.counters().dropped(DropReason::Duplicate), 0);
    let closes = hub.counters();
    assert!(closes.connections_closed >= 1);
    hub.shutdown().await;
}

/// The `length` layout: an 8-byte big-endian sequence number leads each
/// frame, the first (0) names the stream and is answered at once, the
/// consumer gets the payload without the prefix, acks are 8-byte frames.
#[tokio::test]
async fn the_length_layout_hello_strip_and_acks() {
    let hub = start(length_listener()).await;
    let acks = hub.acks();
    let rx = hub.listener_receiver("default").expect("raw receiver");
    let mut stream = connect(&hub).await;
    send(&mut stream, &framed(0, b"dev-7")).await;
    let ack = |n: u64| {
        let mut f = 8u32.to_be_bytes().to_vec();
        f.extend_from_slice(&n.to_be_bytes());
        f
    };
    let mut buf = vec![0u8; 12];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut buf))
        .await
        .expect("hello ack")
        .expect("read");
    assert_eq!(
        buf,
        ack(0),
        "the hello is answered with what is durable: nothing"
    );
    let mut wire = Vec::new();
    for seq in 1..=3u64 {
        wire.extend(framed(seq, format!("payload {seq}").as_bytes()));
    }
    wire.extend(framed(2, b"again"));
    send(&mut stream, &wire).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            tokio::time::timeout(PATIENCE, rx.recv())
                .await
                .expect("frame")
                .expect("open"),
        );
    }
    assert_eq!(&got[0].payload[..], b"payload 1", "the prefix is stripped");
    assert_eq!(got[2].source.node.as_deref(), Some("dev-7"));
    assert_eq!(got[2].seq.map(|s| s.value()), Some(3));
    acks.acknowledge_frames(&got);
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut buf))
        .await
        .expect("ack")
        .expect("read");
    assert_eq!(buf, ack(3));
    counters_until(&hub, "the resend is a duplicate", |c| {
        c.dropped(DropReason::Duplicate) == 1
    })
    .await;
    // A second connection for the stream learns where the server stands.
    let mut other = connect(&hub).await;
    send(&mut other, &framed(0, b"dev-7")).await;
    tokio::time::timeout(PATIENCE, other.read_exact(&mut buf))
        .await
        .expect("ack")
        .expect("read");
    assert_eq!(buf, ack(3));
    // A first frame that is not a hello loses the framing.
    let mut bad = connect(&hub).await;
    send(&mut bad, &framed(5, b"no hello")).await;
    expect_closed(&mut bad).await;
    hub.shutdown().await;
}

/// A `length` stream's frames reach the consumer in the stream's order
/// even when two connections carry it at once (after a silent network
/// drop, the old connection still has frames queued when the client's new
/// connection sends the next ones): a fair raw queue gives the stream one
/// lane, not one per connection, which round-robin would interleave.
#[tokio::test]
async fn a_length_stream_keeps_its_order_across_two_connections() {
    let hub = start(length_listener()).await;
    let rx = hub.listener_receiver("default").expect("raw receiver");
    let burst = |from: u64, to: u64| {
        let mut wire = framed(0, b"dev-9");
        for seq in from..=to {
            wire.extend(framed(seq, format!("payload {seq}").as_bytes()));
        }
        wire
    };
    // Nothing is consumed yet: the first connection's frames wait queued.
    let mut old = connect(&hub).await;
    send(&mut old, &burst(1, 20)).await;
    counters_until(&hub, "the old connection's frames queued", |c| {
        c.frames_received >= 20
    })
    .await;
    let mut new = connect(&hub).await;
    send(&mut new, &burst(21, 40)).await;
    counters_until(&hub, "the new connection's frames queued", |c| {
        c.frames_received >= 40
    })
    .await;
    let mut order = Vec::new();
    for _ in 0..40 {
        let frame = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("frame")
            .expect("open");
        order.push(frame.seq.expect("numbered").value());
    }
    assert_eq!(order, (1..=40).collect::<Vec<u64>>(), "the stream's order");
    drop((old, new));
    hub.shutdown().await;
}

#[tokio::test]
async fn a_listener_with_acks_must_block_and_carry_seq() {
    let mut dropping = ack_listener();
    dropping.queue.overflow = OverflowPolicy::DropOldest;
    let e = Hub::start(HubConfig {
        listener: vec![dropping],
        ..HubConfig::default()
    })
    .await
    .expect_err("drop-oldest with acks");
    assert!(e.to_string().contains("queue.overflow"), "{e}");
    let cobs = ListenerConfig {
        framing: FramingConfig::Cobs,
        protocol: Protocol::Raw,
        ..ack_listener()
    };
    let e = Hub::start(HubConfig {
        listener: vec![cobs],
        ..HubConfig::default()
    })
    .await
    .expect_err("cobs with acks");
    assert!(e.to_string().contains("ack.mode"), "{e}");
}

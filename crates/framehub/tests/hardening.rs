//! Issue 18, against real sockets: a frame trickled forever runs into
//! `frame_timeout`; one flooder on a raw listener loses only its own
//! frames; unfinished frames of all connections stay within
//! `partial_frame_budget`; node ids are capped and idle nodes evicted.

mod common;

use std::time::Duration;

use common::*;
use framehub::{
    AuthFailure, CloseReason, Counters, DropReason, HubConfig, ListenerConfig, NodesConfig,
    Protocol,
};
use tokio::io::AsyncWriteExt;

fn raw_lines() -> ListenerConfig {
    ListenerConfig {
        bind: Some(loopback()),
        protocol: Protocol::Raw,
        ..ListenerConfig::default()
    }
}

fn closed_by(c: &Counters, label: &str) -> u64 {
    c.connections_closed_by
        .iter()
        .find(|(l, _)| *l == label)
        .map_or(0, |(_, n)| *n)
}

/// Slowloris without a token: one byte every 100 ms of a line that never
/// ends keeps resetting any idle timeout, but not `frame_timeout`; a
/// client whose lines each take a while to arrive, but complete, stays.
#[tokio::test]
async fn a_never_ending_frame_trickled_byte_by_byte_is_closed() {
    let hub = start(ListenerConfig {
        frame_timeout: Duration::from_secs(1),
        idle_timeout: Some(Duration::from_secs(30)),
        ..raw_lines()
    })
    .await;
    let receiver = hub.listener_receiver("default").expect("raw receiver");
    let mut events = hub.events();
    let mut trickler = connect(&hub).await;
    let trickler_addr = trickler.local_addr().expect("addr");
    let mut polite = connect(&hub).await;
    let started = tokio::time::Instant::now();
    let trickle = tokio::spawn(async move {
        // Stops writing once the server closed it (the write fails).
        for _ in 0..200 {
            if trickler.write_all(b"x").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    // Each line takes 600 ms to arrive whole: within the 1 s.
    for n in 0..4 {
        let line = format!("line {n}\n");
        let (head, tail) = line.as_bytes().split_at(3);
        send(&mut polite, head).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        send(&mut polite, tail).await;
    }
    let (reason, peer) = next_close(&mut events).await;
    assert_eq!(reason, CloseReason::FrameTimeout);
    assert_eq!(peer, trickler_addr);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "closed long before the trickle would have ended: {:?}",
        started.elapsed()
    );
    assert!(
        trickle.await.expect("task"),
        "the server closed the trickler"
    );
    let c = counters_until(&hub, "the close counted", |c| {
        closed_by(c, "frame_timeout") == 1
    })
    .await;
    assert_eq!(c.connections_closed, 1, "only the trickler: {c:?}");
    for n in 0..4 {
        let f = receiver.recv_timeout(PATIENCE).await.expect("polite line");
        assert_eq!(&f.payload[..], format!("line {n}").as_bytes());
    }
    assert!(still_open(&mut polite, Duration::from_millis(200)).await);
}

/// One flooder on a raw listener (no auth: anyone may connect) can only
/// lose its own frames: a polite peer sending 20 frames/s through a slow
/// consumer loses none, and the flooder's drops are counted, on its own
/// connection.
#[tokio::test]
async fn a_flooder_on_a_raw_listener_loses_only_its_own_frames() {
    let mut listener = raw_lines();
    listener.queue.capacity = 64;
    let hub = start(listener).await;
    let receiver = hub.listener_receiver("default").expect("raw receiver");
    let mut flooder = connect(&hub).await;
    let mut polite = connect(&hub).await;
    let polite_addr = polite.local_addr().expect("addr");
    let flooder_addr = flooder.local_addr().expect("addr");
    const POLITE_FRAMES: usize = 60;
    let stop = tokio_util::sync::CancellationToken::new();
    let flood = tokio::spawn({
        let stop = stop.clone();
        async move {
            let burst = "flood flood flood flood flood flood\n".repeat(2000);
            let mut sent = 0u64;
            while !stop.is_cancelled() {
                flooder.write_all(burst.as_bytes()).await.expect("flood");
                sent += 2000;
            }
            (flooder, sent)
        }
    });
    // The slow consumer: about 200 frames/s, far below the flood. It
    // gives up once the polite peer is long done (a lost frame would
    // never come).
    let give_up =
        tokio::time::Instant::now() + Duration::from_millis(50) * POLITE_FRAMES as u32 + PATIENCE;
    let consumer = tokio::spawn(async move {
        let mut polite_seen = Vec::new();
        let mut flood_seen = 0u64;
        while polite_seen.len() < POLITE_FRAMES && tokio::time::Instant::now() < give_up {
            let Ok(f) = receiver.recv_timeout(PATIENCE).await else {
                break;
            };
            if let Some(n) = f.payload.strip_prefix(b"polite ") {
                polite_seen.push(String::from_utf8_lossy(n).parse::<usize>().expect("n"));
            } else {
                flood_seen += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (polite_seen, flood_seen)
    });
    for n in 0..POLITE_FRAMES {
        send_line(&mut polite, &format!("polite {n}")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (polite_seen, flood_seen) = consumer.await.expect("consumer");
    let conns = hub.connections();
    stop.cancel();
    let (_flooder, flood_sent) = flood.await.expect("flooder");
    assert_eq!(
        polite_seen,
        (0..POLITE_FRAMES).collect::<Vec<_>>(),
        "the polite peer lost frames to the flooder"
    );
    let by_peer = |addr| {
        conns
            .iter()
            .find(|c| c.peer == addr)
            .expect("connection listed")
    };
    assert_eq!(by_peer(polite_addr).dropped, 0);
    let flooder_dropped = by_peer(flooder_addr).dropped;
    assert!(
        flooder_dropped > 0,
        "the flood overflowed the queue ({flood_sent} sent, {flood_seen} consumed)"
    );
    let c = hub.counters();
    assert!(
        c.dropped(framehub::DropReason::QueueFull) >= flooder_dropped,
        "{c:?}"
    );
}

/// A node id longer than `nodes.max_node_id_bytes` never gets into the
/// node table: the connection that names one is closed, counted as an
/// auth failure; an id of the maximum length binds as any other.
#[tokio::test]
async fn a_node_id_longer_than_the_cap_is_refused() {
    let hub = start_config(HubConfig {
        listener: vec![node_listener(Some("t"))],
        nodes: NodesConfig {
            max_node_id_bytes: 16,
            ..NodesConfig::default()
        },
        ..HubConfig::default()
    })
    .await;
    let mut events = hub.events();
    let mut long = connect(&hub).await;
    send_line(&mut long, &detection(&"x".repeat(17), Some("t"), 1)).await;
    expect_closed(&mut long).await;
    let (reason, _) = next_close(&mut events).await;
    assert_eq!(reason, CloseReason::AuthFailed(AuthFailure::NodeIdTooLong));
    let mut fits = connect(&hub).await;
    send_line(&mut fits, &detection(&"y".repeat(16), Some("t"), 1)).await;
    let mut new_nodes = hub.new_nodes().expect("new-node stream");
    let node = tokio::time::timeout(PATIENCE, new_nodes.recv())
        .await
        .expect("in time")
        .expect("a node");
    assert_eq!(node.name(), "y".repeat(16));
    node.recv_timeout(PATIENCE).await.expect("its frame");
    let names: Vec<String> = hub.nodes().into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["y".repeat(16)]);
    assert_eq!(hub.counters().auth_failures, 1);
}

/// One token holder inventing node ids cannot lock real nodes out until a
/// restart: when the table is full, a node that has been disconnected,
/// drained and silent for `evict_idle_after` makes room (counted; its
/// receivers end); a connected one never does.
#[tokio::test]
async fn idle_nodes_are_evicted_when_the_table_is_full() {
    let hub = start_config(HubConfig {
        listener: vec![node_listener(Some("t"))],
        nodes: NodesConfig {
            max_nodes: 2,
            evict_idle_after: Some(Duration::from_millis(300)),
            ..NodesConfig::default()
        },
        ..HubConfig::default()
    })
    .await;
    let mut new_nodes = hub.new_nodes().expect("new-node stream");
    let mut next_node = async || {
        tokio::time::timeout(PATIENCE, new_nodes.recv())
            .await
            .expect("in time")
            .expect("a node")
    };
    // An invented id: one frame, then gone.
    let mut invented = connect(&hub).await;
    send_line(&mut invented, &detection("invented", Some("t"), 1)).await;
    let invented_rx = next_node().await;
    invented_rx.recv_timeout(PATIENCE).await.expect("frame");
    drop(invented);
    // A real node that stays connected.
    let mut real = connect(&hub).await;
    send_line(&mut real, &detection("real", Some("t"), 1)).await;
    let real_rx = next_node().await;
    real_rx.recv_timeout(PATIENCE).await.expect("frame");
    eventually("the invented node disconnected", || {
        let unhealthy = !invented_rx.is_healthy();
        async move { unhealthy }
    })
    .await;
    // Too early: nothing has been idle long enough yet.
    let mut early = connect(&hub).await;
    send_line(&mut early, &detection("early", Some("t"), 1)).await;
    counters_until(&hub, "the early node dropped", |c| {
        c.dropped(DropReason::MaxNodes) == 1
    })
    .await;
    drop(early);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut later = connect(&hub).await;
    send_line(&mut later, &detection("later", Some("t"), 2)).await;
    let later_rx = next_node().await;
    assert_eq!(later_rx.name(), "later");
    later_rx.recv_timeout(PATIENCE).await.expect("its frame");
    assert!(
        matches!(
            invented_rx.recv_timeout(PATIENCE).await,
            Err(framehub::RecvTimeoutError::Closed)
        ),
        "the evicted node's receiver ended"
    );
    let names: Vec<String> = hub.nodes().into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["later", "real"]);
    let c = hub.counters();
    assert_eq!(c.nodes_evicted, 1);
    assert_eq!(c.dropped(DropReason::MaxNodes), 1);
    // The connected node is never the one evicted: a third newcomer, with
    // nothing idle, is dropped.
    let mut third = connect(&hub).await;
    send_line(&mut third, &detection("third", Some("t"), 1)).await;
    counters_until(&hub, "the third node dropped", |c| {
        c.dropped(DropReason::MaxNodes) == 2
    })
    .await;
    assert_eq!(hub.counters().nodes_evicted, 1);
    assert!(real_rx.is_healthy());
}

/// Many connections holding unfinished frames: past
/// `partial_frame_budget`, the largest holders are closed (counted as
/// `partial_budget`) until the rest fits, and a client sending whole
/// frames goes on unharmed.
#[tokio::test]
async fn unfinished_frames_of_all_connections_stay_within_the_budget() {
    const BUDGET: usize = 1 << 20;
    const PARTIAL: usize = 200 << 10;
    const HOLDERS: usize = 20;
    let hub = start_config(HubConfig {
        listener: vec![ListenerConfig {
            max_frame_bytes: framehub::ByteSize(256 << 10),
            ..raw_lines()
        }],
        partial_frame_budget: framehub::ByteSize(BUDGET),
        ..HubConfig::default()
    })
    .await;
    let receiver = hub.listener_receiver("default").expect("raw receiver");
    let mut polite = connect(&hub).await;
    let mut holders = Vec::new();
    for _ in 0..HOLDERS {
        let mut s = connect(&hub).await;
        // 200 KiB of a line that never ends.
        s.write_all(&vec![b'p'; PARTIAL]).await.expect("write");
        holders.push(s);
        send_line(&mut polite, "still here").await;
    }
    // At most BUDGET / PARTIAL (5) holders fit: the others are cut.
    let c = counters_until(&hub, "the largest holders cut", |c| {
        closed_by(c, "partial_budget") >= (HOLDERS - BUDGET / PARTIAL) as u64
    })
    .await;
    assert_eq!(
        c.connections_closed,
        closed_by(&c, "partial_budget"),
        "only holders were closed: {c:?}"
    );
    let mut open = 0;
    for s in &mut holders {
        if still_open(s, Duration::from_millis(50)).await {
            open += 1;
        }
    }
    assert!(
        open * PARTIAL <= BUDGET,
        "{open} holders of {PARTIAL} bytes left"
    );
    assert!(open >= 1, "the budget is used, not emptied");
    for _ in 0..HOLDERS {
        let f = receiver.recv_timeout(PATIENCE).await.expect("polite line");
        assert_eq!(&f.payload[..], b"still here");
    }
    assert!(still_open(&mut polite, Duration::from_millis(50)).await);
}

//! Grouped delivery on real sockets: groups fill to `group_size`, flush
//! after `group_max_delay`, mix frames of several clients with each frame's
//! own address, work on `chunk` framing, and overflow by policy, counted.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use framehub::codec::{FramingConfig, LengthPrefix};
use framehub::{
    Delivery, DropReason, Group, Groups, Hub, ListenerConfig, OverflowPolicy, Protocol,
};
use tokio::net::TcpStream;

fn grouped(framing: FramingConfig, size: usize, delay: Duration) -> ListenerConfig {
    ListenerConfig {
        name: "stage".into(),
        framing,
        protocol: Protocol::Raw,
        delivery: Delivery::Groups,
        group_size: size,
        group_max_delay: delay,
        ..node_listener(None)
    }
}

fn length_frame(payload: &str) -> Vec<u8> {
    let mut wire = (payload.len() as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(payload.as_bytes());
    wire
}

async fn frames_received(hub: &Hub, n: u64) {
    counters_until(hub, "frames received", |c| c.frames_received == n).await;
}

async fn next_group(groups: &Groups) -> Group {
    groups
        .recv_timeout(PATIENCE)
        .await
        .expect("a group in time")
}

#[tokio::test]
async fn groups_fill_to_group_size_and_mix_clients_with_their_addresses() {
    // A long delay: only a full group can be published.
    let hub = start(grouped(
        FramingConfig::Length(LengthPrefix::default()),
        10,
        Duration::from_secs(30),
    ))
    .await;
    let groups = hub.groups("stage").expect("grouped listener");
    assert!(hub.listener_receiver("stage").is_none(), "no receiver too");
    let mut clients: Vec<(TcpStream, SocketAddr)> = Vec::new();
    for _ in 0..3 {
        let s = connect(&hub).await;
        let addr = s.local_addr().expect("addr");
        clients.push((s, addr));
    }
    // Client 0 sends 5, then client 1 sends 5 (one group, two clients),
    // then client 2 sends 15 and client 0 5 more.
    let mut sent = 0;
    for (who, count) in [(0usize, 5), (1, 5), (2, 15), (0, 5)] {
        let mut wire = Vec::new();
        for i in 0..count {
            wire.extend(length_frame(&format!("c{who}-{i}")));
        }
        send(&mut clients[who].0, &wire).await;
        sent += count as u64;
        frames_received(&hub, sent).await;
    }
    let before = SystemTime::now();
    let mut all = Vec::new();
    for seq in 1..=3 {
        let g = next_group(&groups).await;
        assert_eq!(g.seq, seq);
        assert_eq!(g.frames.len(), 10, "full groups only");
        all.push(g);
    }
    assert!(groups.try_recv().is_err(), "the rest waits for its delay");
    assert_eq!(all[0].connections(), 2);
    let addr_of: HashMap<String, SocketAddr> = clients
        .iter()
        .enumerate()
        .map(|(i, (_, a))| (format!("c{i}"), *a))
        .collect();
    for g in &all {
        for f in &g.frames {
            let text = std::str::from_utf8(&f.payload).expect("utf8");
            let who = text.split('-').next().expect("tag");
            assert_eq!(f.source.peer, addr_of[who], "{text}");
            assert_eq!(&*f.source.listener, "stage");
            assert!(f.received_at <= before);
        }
    }
    // Frames of one client keep their order across groups.
    let c2: Vec<_> = all
        .iter()
        .flat_map(|g| g.frames.iter())
        .filter(|f| f.payload.starts_with(b"c2-"))
        .map(|f| f.payload.clone())
        .collect();
    let expected: Vec<_> = (0..15).map(|i| format!("c2-{i}").into_bytes()).collect();
    assert_eq!(c2, expected);
    let c = hub.counters();
    assert_eq!(c.groups_published, 3);
    assert_eq!(c.frames_delivered, 30);
}

#[tokio::test]
async fn a_group_that_is_not_full_flushes_after_group_max_delay() {
    let delay = Duration::from_millis(300);
    let hub = start(grouped(FramingConfig::Lines, 1000, delay)).await;
    let groups = hub.groups("stage").expect("grouped listener");
    let mut s = connect(&hub).await;
    let started = Instant::now();
    send(&mut s, b"a\nb\nc\n").await;
    let g = next_group(&groups).await;
    let waited = started.elapsed();
    assert_eq!(g.frames.len(), 3);
    // The first frame came after `started`, so the group cannot be due
    // before `delay`; timers are rounded to the millisecond.
    assert!(waited >= delay - Duration::from_millis(2), "{waited:?}");
    assert!(waited < delay + PATIENCE, "{waited:?}");
}

#[tokio::test]
async fn chunk_framing_makes_each_read_one_frame_of_a_group() {
    let hub = start(grouped(FramingConfig::Chunk, 3, Duration::from_secs(30))).await;
    let groups = hub.groups("stage").expect("grouped listener");
    let mut a = connect(&hub).await;
    let mut b = connect(&hub).await;
    // One read per write: wait for each to be read before the next.
    send(&mut a, b"first packet").await;
    frames_received(&hub, 1).await;
    send(&mut b, b"second").await;
    frames_received(&hub, 2).await;
    send(&mut a, b"third").await;
    let g = next_group(&groups).await;
    let payloads: Vec<&[u8]> = g.frames.iter().map(|f| &f.payload[..]).collect();
    assert_eq!(payloads, [&b"first packet"[..], b"second", b"third"]);
    assert_eq!(g.connections(), 2);
    assert_eq!(g.bytes(), 12 + 6 + 5);
}

#[tokio::test]
async fn a_full_group_stream_drops_by_policy_and_counts() {
    let hub = start(ListenerConfig {
        group_capacity: 2,
        group_overflow: OverflowPolicy::DropOldest,
        ..grouped(FramingConfig::Lines, 1, Duration::from_secs(30))
    })
    .await;
    let groups = hub.groups("stage").expect("grouped listener");
    let mut s = connect(&hub).await;
    for i in 0..10 {
        send_line(&mut s, &i.to_string()).await;
    }
    let c = counters_until(&hub, "drops counted", |c| {
        c.dropped(DropReason::QueueFull) == 8
    })
    .await;
    assert_eq!(c.groups_published, 10);
    // The newest two are left, numbered so the gap shows.
    let g = next_group(&groups).await;
    assert_eq!((g.seq, &g.frames[0].payload[..]), (9, &b"8"[..]));
    let g = next_group(&groups).await;
    assert_eq!((g.seq, &g.frames[0].payload[..]), (10, &b"9"[..]));
}

#[tokio::test]
async fn node_frames_in_groups_carry_their_node() {
    let hub = start(ListenerConfig {
        delivery: Delivery::Groups,
        group_size: 2,
        group_max_delay: Duration::from_secs(30),
        ..node_listener(None)
    })
    .await;
    assert!(hub.groups("default").is_some());
    let groups = hub.groups("default").expect("grouped");
    let mut a = connect(&hub).await;
    let mut b = connect(&hub).await;
    send_line(&mut a, &detection("radar1", None, 1)).await;
    frames_received(&hub, 1).await;
    send_line(&mut b, &detection("radar2", None, 1)).await;
    let g = next_group(&groups).await;
    let nodes: Vec<_> = g
        .frames
        .iter()
        .map(|f| f.source.node.as_deref().unwrap_or("-"))
        .collect();
    assert_eq!(nodes, ["radar1", "radar2"]);
    // Grouped listeners provision no per-node receivers.
    assert!(hub.nodes().is_empty());
    assert!(hub.groups("nope").is_none());
}

#[tokio::test]
async fn shutdown_hands_out_the_open_group_then_ends_the_stream() {
    let hub = start(grouped(FramingConfig::Lines, 100, Duration::from_secs(30))).await;
    let groups = hub.groups("stage").expect("grouped listener");
    let mut s = connect(&hub).await;
    send(&mut s, b"x\ny\n").await;
    frames_received(&hub, 2).await;
    hub.shutdown().await;
    assert_eq!(next_group(&groups).await.frames.len(), 2);
    assert!(groups.recv().await.is_none());
}

//! The connection registry and the per-node view on real sockets: live
//! per-connection counters, node peer and timestamps, close reasons, and
//! listener health.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use framehub::{HubConfig, ListenerConfig, Protocol};

#[tokio::test]
async fn connections_are_listed_with_live_counters_until_they_close() {
    let hub = start(node_listener(None)).await;
    let mut a = connect(&hub).await;
    let mut b = connect(&hub).await;
    let mut sent = 0usize;
    for ts in 0..10 {
        let line = detection("radar3", None, ts);
        sent += line.len() + 1;
        send_line(&mut a, &line).await;
    }
    send_line(&mut b, "not json").await;
    eventually("both connections counted", || {
        let conns = hub.connections();
        let ok = conns.len() == 2 && conns[0].frames_in == 10 && conns[1].frames_in == 1;
        async move { ok }
    })
    .await;
    let conns = hub.connections();
    let (ca, cb) = (&conns[0], &conns[1]);
    assert!(ca.id < cb.id, "listed by id");
    assert_eq!(&*ca.listener, "default");
    assert_eq!(ca.peer, a.local_addr().expect("addr"));
    assert_eq!(ca.node.as_deref(), Some("radar3"));
    assert_eq!(ca.bytes_in, sent as u64);
    assert_eq!(ca.dropped, 0);
    assert_eq!(cb.node, None, "never bound: its only frame was not JSON");
    assert_eq!(cb.dropped, 1);
    assert!(ca.since <= SystemTime::now());
    assert_eq!(ca.egress_pending_bytes, 0);

    // Idle time grows while nothing is read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = hub.connections()[0].idle;
    assert!(idle >= Duration::from_millis(150), "{idle:?}");

    drop(b);
    eventually("closed connection leaves the registry", || {
        let n = hub.connections().len();
        async move { n == 1 }
    })
    .await;
    let c = hub.counters();
    let closed: Vec<_> = c
        .connections_closed_by
        .iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(closed, [&("peer_closed", 1)]);
    drop(a);
}

#[tokio::test]
async fn nodes_report_their_peer_since_and_last_frame() {
    let hub = start(node_listener(None)).await;
    let r = hub.receiver("radar3");
    let before = SystemTime::now();
    let mut s = connect(&hub).await;
    send_line(&mut s, &detection("radar3", None, 1)).await;
    let frame = r.recv_timeout(PATIENCE).await.expect("frame");
    let node = hub
        .nodes()
        .into_iter()
        .find(|n| n.name == "radar3")
        .expect("radar3");
    assert!(node.healthy);
    assert_eq!(node.connections, 1);
    assert_eq!(node.peer, Some(s.local_addr().expect("addr")));
    assert!(node.connected_since.expect("since") >= before);
    assert_eq!(node.queue.last_frame_at, Some(frame.received_at));

    drop(s);
    eventually("node disconnected", || {
        let n = hub.nodes().into_iter().find(|n| n.name == "radar3");
        async move { n.is_some_and(|n| !n.healthy) }
    })
    .await;
    let node = hub
        .nodes()
        .into_iter()
        .find(|n| n.name == "radar3")
        .expect("radar3");
    assert_eq!(node.connections, 0);
    assert_eq!(node.peer, None);
    assert_eq!(node.connected_since, None);
    // The last frame's time outlives the connection.
    assert_eq!(node.queue.last_frame_at, Some(frame.received_at));
}

#[tokio::test]
async fn listeners_report_accepting_until_shutdown() {
    let hub = start_config(HubConfig {
        listener: vec![
            node_listener(None),
            ListenerConfig {
                name: "raw".into(),
                bind: Some(loopback()),
                protocol: Protocol::Raw,
                framing: framehub::FramingConfig::Chunk,
                ..ListenerConfig::default()
            },
        ],
        ..HubConfig::default()
    })
    .await;
    eventually("both accepting", || {
        let ok = hub.listeners().iter().all(|l| l.is_accepting);
        async move { ok }
    })
    .await;
    assert!(hub.listeners().iter().all(|l| l.accept_error.is_none()));
    hub.shutdown().await;
    assert!(hub.listeners().iter().all(|l| !l.is_accepting));
}

//! Connection history on real sockets: every connection that ends leaves
//! a record (reason, node, peer, duration, traffic each way) in a ring
//! bounded by `connection_history`, the oldest going first, counted.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use framehub::{AuthFailure, CloseReason, HubConfig};

#[tokio::test]
async fn closed_connections_are_remembered_with_reason_and_traffic() {
    let hub = start(node_listener(Some("secret"))).await;
    let before = SystemTime::now();
    let mut a = connect(&hub).await;
    let mut sent = 0u64;
    for ts in 0..5 {
        let line = detection("radar3", Some("secret"), ts);
        sent += line.len() as u64 + 1;
        send_line(&mut a, &line).await;
    }
    eventually("frames counted", || {
        let ok = hub.connections().first().is_some_and(|c| c.frames_in == 5);
        async move { ok }
    })
    .await;
    let open_id = hub.connections()[0].id;
    let peer_a = a.local_addr().expect("addr");
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(a);
    // A second connection with a wrong token: closed by the hub.
    let mut b = connect(&hub).await;
    let peer_b = b.local_addr().expect("addr");
    send_line(&mut b, &detection("radar4", Some("wrong"), 1)).await;
    eventually("two closed connections recorded", || {
        let n = hub.closed_connections().len();
        async move { n == 2 }
    })
    .await;
    let page = hub.closed_connections().page(0, 10, |_| true);
    assert_eq!(page.total, 2);
    let (newest, oldest) = (&page.connections[0], &page.connections[1]);
    assert_eq!(oldest.id, open_id);
    assert_eq!(oldest.peer, peer_a);
    assert_eq!(oldest.node.as_deref(), Some("radar3"));
    assert_eq!(&*oldest.listener, "default");
    assert_eq!(oldest.reason, CloseReason::PeerClosed);
    assert_eq!(oldest.frames_in, 5);
    assert_eq!(oldest.bytes_in, sent);
    assert!(oldest.opened >= before && oldest.closed >= oldest.opened);
    assert!(
        oldest.duration() >= Duration::from_millis(40),
        "{:?}",
        oldest.duration()
    );
    assert_eq!(newest.peer, peer_b);
    assert_eq!(
        newest.reason,
        CloseReason::AuthFailed(AuthFailure::WrongToken)
    );
    assert_eq!(newest.node, None);
    // Filters see the same records.
    let by_node = hub
        .closed_connections()
        .page(0, 10, |c| c.node.as_deref() == Some("radar3"));
    assert_eq!(by_node.total, 1);
    assert_eq!(by_node.connections[0].id, open_id);
    drop(b);
}

#[tokio::test]
async fn history_is_bounded_by_connection_history() {
    let hub = start_config(HubConfig {
        listener: vec![node_listener(None)],
        connection_history: 3,
        ..HubConfig::default()
    })
    .await;
    let mut peers = Vec::new();
    for _ in 0..5 {
        let s = connect(&hub).await;
        peers.push(s.local_addr().expect("addr"));
        eventually("connection registered", || {
            let n = hub.connections().len();
            async move { n == 1 }
        })
        .await;
        drop(s);
        eventually("connection gone", || {
            let n = hub.connections().len();
            async move { n == 0 }
        })
        .await;
    }
    eventually("five recorded", || {
        let n = hub.closed_connections().recorded();
        async move { n == 5 }
    })
    .await;
    let history = hub.closed_connections();
    assert_eq!(history.len(), 3);
    assert_eq!(history.evicted(), 2);
    let kept: Vec<_> = history
        .page(0, 10, |_| true)
        .connections
        .iter()
        .map(|c| c.peer)
        .collect();
    let newest_first: Vec<_> = peers.iter().rev().take(3).copied().collect();
    assert_eq!(kept, newest_first);
}

#[tokio::test]
async fn connection_history_over_the_limit_is_refused() {
    let config = HubConfig {
        connection_history: framehub::history::MAX_CONNECTION_HISTORY + 1,
        ..HubConfig::default()
    };
    let err = config.validate().expect_err("too large");
    assert_eq!(err.key, "connection_history");
}

//! The radar system's acceptance criteria, each a named test against a real
//! socket on 127.0.0.1.
#![allow(unsafe_code)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use framehub::{AuthFailure, CloseReason, ConnectionEvent, DropReason, HubConfig, NodesConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_node_connections() {
    const NODES: usize = 200;
    const FRAMES: u64 = 50;
    let hub = start(node_listener(Some("secret"))).await;
    let receivers: Vec<_> = (0..NODES)
        .map(|i| hub.receiver(&format!("radar{i}")))
        .collect();
    let mut clients = Vec::new();
    for i in 0..NODES {
        let mut s = connect(&hub).await;
        clients.push(tokio::spawn(async move {
            let node = format!("radar{i}");
            let mut all = String::new();
            for ts in 0..FRAMES {
                let token = (ts == 0).then_some("secret");
                all.push_str(&detection(&node, token, ts));
                all.push('\n');
            }
            send(&mut s, all.as_bytes()).await;
            s
        }));
    }
    let mut open = Vec::new();
    for c in clients {
        open.push(c.await.expect("client"));
    }
    for (i, r) in receivers.iter().enumerate() {
        for ts in 0..FRAMES {
            let f = r.recv_timeout(PATIENCE).await.expect("frame");
            let v: serde_json::Value = serde_json::from_slice(&f.payload).expect("json");
            assert_eq!(v["node_id"], format!("radar{i}"));
            assert_eq!(v["timestamp"], ts);
        }
        assert!(r.is_healthy());
    }
    let c = hub.counters();
    assert_eq!(c.connections_open, NODES as u64);
    assert_eq!(c.frames_delivered, NODES as u64 * FRAMES);
    assert_eq!(c.dropped_total(), 0);
}

#[tokio::test]
async fn token_checked_on_first_message() {
    let hub = start(node_listener(Some("secret"))).await;
    let r = hub.receiver("radar3");
    let mut s = connect(&hub).await;
    // Only the first message carries the token.
    send_line(&mut s, &detection("radar3", Some("secret"), 1)).await;
    send_line(&mut s, &detection("radar3", None, 2)).await;
    assert!(r.recv_timeout(PATIENCE).await.is_ok());
    assert!(r.recv_timeout(PATIENCE).await.is_ok());

    // A first message without a token closes the connection.
    let mut s2 = connect(&hub).await;
    send_line(&mut s2, &detection("radar3", None, 3)).await;
    expect_closed(&mut s2).await;
    let c = counters_until(&hub, "auth failure counted", |c| c.auth_failures == 1).await;
    assert_eq!(c.frames_delivered, 2);
}

/// Collects log output of the current thread's subscriber.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

// current-thread runtime: every task runs on this thread, under the
// thread-local log subscriber set here.
#[tokio::test(flavor = "current_thread")]
async fn invalid_token_closes_socket_and_logs_a_warning() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let hub = start(node_listener(Some("secret"))).await;
    let mut events = hub.events();
    let r = hub.receiver("radar3");
    let mut s = connect(&hub).await;
    let peer = s.local_addr().expect("local addr");
    send_line(&mut s, &detection("radar3", Some("wrong"), 1)).await;
    expect_closed(&mut s).await;
    counters_until(&hub, "auth failure counted", |c| c.auth_failures == 1).await;
    assert!(r.try_recv().is_err(), "nothing delivered");

    let closed = next_close(&mut events).await;
    assert_eq!(
        closed,
        (CloseReason::AuthFailed(AuthFailure::WrongToken), peer)
    );
    let text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf8");
    assert!(text.contains("WARN"), "{text}");
    assert!(text.contains("wrong token"), "{text}");
    assert!(
        text.contains(&peer.to_string()),
        "warning names the peer: {text}"
    );
}

#[tokio::test]
async fn frames_routed_to_the_right_receiver_by_node_id() {
    let hub = start(node_listener(Some("t"))).await;
    let a = hub.receiver("radarA");
    let b = hub.receiver("radarB");
    let mut sa = connect(&hub).await;
    let mut sb = connect(&hub).await;
    for ts in 0..10 {
        let token = (ts == 0).then_some("t");
        send_line(&mut sa, &detection("radarA", token, ts)).await;
        send_line(&mut sb, &detection("radarB", token, ts)).await;
    }
    for ts in 0..10u64 {
        let fa = a.recv_timeout(PATIENCE).await.expect("a");
        let fb = b.recv_timeout(PATIENCE).await.expect("b");
        assert_eq!(fa.source.node.as_deref(), Some("radarA"));
        assert_eq!(fb.source.node.as_deref(), Some("radarB"));
        // Byte for byte, except that the token is cut out of the first
        // frame (issue 13: receivers never see a token).
        assert_eq!(fa.payload, detection("radarA", None, ts).as_bytes());
        assert_eq!(fb.payload, detection("radarB", None, ts).as_bytes());
    }
    assert!(a.try_recv().is_err() && b.try_recv().is_err());
}

#[tokio::test]
async fn heartbeats_never_reach_a_receiver() {
    let hub = start(node_listener(Some("t"))).await;
    let r = hub.receiver("radar3");
    let mut s = connect(&hub).await;
    send_line(&mut s, &heartbeat("radar3", Some("t"))).await;
    for _ in 0..5 {
        send_line(&mut s, &heartbeat("radar3", None)).await;
    }
    send_line(&mut s, &detection("radar3", None, 1)).await;
    let f = r.recv_timeout(PATIENCE).await.expect("the detection");
    assert!(!f.payload.windows(9).any(|w| w == b"heartbeat"));
    let c = counters_until(&hub, "heartbeats counted", |c| c.heartbeats == 6).await;
    assert_eq!(c.frames_delivered, 1);
    assert!(r.try_recv().is_err());
    // The first heartbeat authenticated and bound the node.
    assert!(r.is_healthy());
}

#[tokio::test]
async fn queue_bounded_at_2000_dropping_the_oldest() {
    let hub = start(node_listener(None)).await;
    let r = hub.receiver("radar3");
    let mut s = connect(&hub).await;
    let mut all = String::new();
    for ts in 0..2500 {
        all.push_str(&detection("radar3", None, ts));
        all.push('\n');
    }
    send(&mut s, all.as_bytes()).await;
    let c = counters_until(&hub, "2500 frames offered", |c| c.frames_received == 2500).await;
    assert_eq!(c.dropped(DropReason::QueueFull), 500);
    assert_eq!(r.len(), 2000);
    assert_eq!(r.stats().dropped_full, 500);
    for ts in 500..2500u64 {
        let f = r.try_recv().expect("queued frame");
        let v: serde_json::Value = serde_json::from_slice(&f.payload).expect("json");
        assert_eq!(v["timestamp"], ts, "oldest 500 dropped, order kept");
    }
    assert!(r.try_recv().is_err());
}

/// Reads TCP_NODELAY of the server's end of the connection from `client`:
/// the hub runs in this process, so its socket is one of our descriptors.
fn server_side_nodelay(client: &tokio::net::TcpStream) -> bool {
    use std::os::fd::FromRawFd;
    let want_local = client.peer_addr().expect("peer");
    let want_peer = client.local_addr().expect("local");
    for entry in std::fs::read_dir("/proc/self/fd").expect("fd dir") {
        let entry = entry.expect("entry");
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !target.to_string_lossy().starts_with("socket:") {
            continue;
        }
        let fd: i32 = entry
            .file_name()
            .to_string_lossy()
            .parse()
            .expect("fd number");
        // SAFETY: the descriptor is open for the duration of this call and
        // ManuallyDrop keeps us from closing a socket the hub owns.
        let socket = std::mem::ManuallyDrop::new(unsafe { socket2::Socket::from_raw_fd(fd) });
        let (Ok(local), Ok(peer)) = (socket.local_addr(), socket.peer_addr()) else {
            continue;
        };
        if local.as_socket() == Some(want_local) && peer.as_socket() == Some(want_peer) {
            return socket.tcp_nodelay().expect("getsockopt");
        }
    }
    panic!("server socket not found");
}

#[tokio::test]
async fn tcp_nodelay_set_on_accepted_sockets() {
    let hub = start(node_listener(None)).await;
    let r = hub.receiver("radar3");
    let mut s = tokio::net::TcpStream::connect(hub.local_addr())
        .await
        .expect("connect");
    send_line(&mut s, &detection("radar3", None, 1)).await;
    r.recv_timeout(PATIENCE)
        .await
        .expect("frame: the socket is accepted");
    assert!(server_side_nodelay(&s));

    // And off when configured off, so the check can fail.
    let mut off = node_listener(None);
    off.socket.nodelay = false;
    let hub = start(off).await;
    let r = hub.receiver("radar3");
    let mut s = tokio::net::TcpStream::connect(hub.local_addr())
        .await
        .expect("connect");
    send_line(&mut s, &detection("radar3", None, 1)).await;
    r.recv_timeout(PATIENCE).await.expect("frame");
    assert!(!server_side_nodelay(&s));
}

#[tokio::test]
async fn line_over_1mib_is_dropped_and_connection_survives() {
    let hub = start(node_listener(Some("t"))).await;
    let r = hub.receiver("radar3");
    let mut s = connect(&hub).await;
    send_line(&mut s, &detection("radar3", Some("t"), 1)).await;
    let huge = format!(
        "{{\"node_id\":\"radar3\",\"timestamp\":2,\"pad\":\"{}\"}}",
        "x".repeat(1 << 20)
    );
    send_line(&mut s, &huge).await;
    send_line(&mut s, &detection("radar3", None, 3)).await;
    let first = r.recv_timeout(PATIENCE).await.expect("first");
    let third = r
        .recv_timeout(PATIENCE)
        .await
        .expect("frame after the oversized one");
    assert!(first.payload.ends_with(b"}"));
    let v: serde_json::Value = serde_json::from_slice(&third.payload).expect("json");
    assert_eq!(v["timestamp"], 3);
    let c = hub.counters();
    assert_eq!(c.dropped(DropReason::Oversize), 1);
    assert_eq!(c.connections_open, 1);
}

#[tokio::test]
async fn connect_disconnect_updates_is_healthy() {
    let hub = start(node_listener(Some("t"))).await;
    let r = hub.receiver("radar3");
    assert!(!r.is_healthy(), "no connection yet");
    let mut s = connect(&hub).await;
    send_line(&mut s, &heartbeat("radar3", Some("t"))).await;
    eventually("healthy after connect", || {
        let h = r.is_healthy();
        async move { h }
    })
    .await;
    assert!(hub.nodes().iter().any(|n| n.name == "radar3" && n.healthy));
    drop(s);
    eventually("unhealthy after disconnect", || {
        let h = r.is_healthy();
        async move { !h }
    })
    .await;
    // And healthy again on reconnect.
    let mut s = connect(&hub).await;
    send_line(&mut s, &heartbeat("radar3", Some("t"))).await;
    eventually("healthy after reconnect", || {
        let h = r.is_healthy();
        async move { h }
    })
    .await;
}

#[tokio::test]
async fn unchanged_timestamp_is_deduplicated() {
    let hub = start(node_listener(None)).await;
    let r = hub.receiver("radar3");
    let mut s = connect(&hub).await;
    for ts in [1, 1, 2, 2, 2, 3] {
        send_line(&mut s, &detection("radar3", None, ts)).await;
    }
    let c = counters_until(&hub, "6 frames", |c| c.frames_received == 6).await;
    assert_eq!(c.duplicates, 3);
    let got: Vec<u64> = std::iter::from_fn(|| r.try_recv().ok())
        .map(|f| {
            serde_json::from_slice::<serde_json::Value>(&f.payload).expect("json")["timestamp"]
                .as_u64()
                .expect("ts")
        })
        .collect();
    assert_eq!(got, [1, 2, 3]);
}

#[tokio::test]
async fn unknown_nodes_are_auto_provisioned_up_to_max_nodes() {
    let hub = start_config(HubConfig {
        listener: vec![node_listener(None)],
        nodes: NodesConfig {
            auto_provision: true,
            max_nodes: 2,
            ..NodesConfig::default()
        },
        ..HubConfig::default()
    })
    .await;
    let mut new_nodes = hub.new_nodes().expect("stream");
    let mut conns = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let mut s = connect(&hub).await;
        send_line(&mut s, &detection(name, None, 1)).await;
        send_line(&mut s, &detection(name, None, 2)).await;
        conns.push(s);
    }
    let mut seen = Vec::new();
    for _ in 0..2 {
        let r = tokio::time::timeout(PATIENCE, new_nodes.recv())
            .await
            .expect("in time")
            .expect("node");
        assert_eq!(
            r.recv_timeout(PATIENCE)
                .await
                .expect("frame")
                .source
                .node
                .as_deref(),
            Some(r.name())
        );
        seen.push(r.name().to_owned());
    }
    seen.sort();
    let c = counters_until(&hub, "n3 dropped", |c| c.dropped(DropReason::MaxNodes) == 2).await;
    assert_eq!(c.frames_delivered, 4);
    assert_eq!(hub.nodes().len(), 2);
    assert!(new_nodes.try_recv().is_none());
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn without_auto_provisioning_unknown_nodes_are_dropped() {
    let hub = start_config(HubConfig {
        listener: vec![node_listener(None)],
        nodes: NodesConfig {
            auto_provision: false,
            max_nodes: 10,
            ..NodesConfig::default()
        },
        ..HubConfig::default()
    })
    .await;
    let mut s = connect(&hub).await;
    send_line(&mut s, &detection("ghost", None, 1)).await;
    counters_until(&hub, "unknown node dropped", |c| {
        c.dropped(DropReason::UnknownNode) == 1
    })
    .await;
    // Registered later: the same connection's next frame finds it.
    let r = hub.receiver("ghost");
    send_line(&mut s, &detection("ghost", None, 2)).await;
    assert!(r.recv_timeout(PATIENCE).await.is_ok());
}

#[tokio::test]
async fn connection_events_report_lifecycle_and_counts() {
    let hub = start(node_listener(Some("t"))).await;
    let mut events = hub.events();
    let _r = hub.receiver("radar3");
    let mut s = connect(&hub).await;
    let line = detection("radar3", Some("t"), 1);
    send_line(&mut s, &line).await;
    send_line(&mut s, &heartbeat("radar3", None)).await;
    send_line(&mut s, "not json").await;
    counters_until(&hub, "3 frames", |c| c.frames_received == 3).await;
    drop(s);
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(
            tokio::time::timeout(PATIENCE, events.recv())
                .await
                .expect("event")
                .expect("open"),
        );
    }
    assert!(matches!(got[0], ConnectionEvent::Connected { .. }));
    assert!(matches!(&got[1], ConnectionEvent::Authenticated { node, .. } if &**node == "radar3"));
    let ConnectionEvent::Closed {
        reason,
        counts,
        node,
        ..
    } = &got[2]
    else {
        panic!("{got:?}")
    };
    assert_eq!(*reason, CloseReason::PeerClosed);
    assert_eq!(node.as_deref(), Some("radar3"));
    assert_eq!(counts.frames_in, 3);
    assert_eq!(counts.delivered, 1);
    assert_eq!(counts.dropped, 1);
    let bytes = line.len() + 1 + heartbeat("radar3", None).len() + 1 + "not json\n".len();
    assert_eq!(counts.bytes_in, bytes as u64);
}

#[tokio::test]
async fn shutdown_closes_connections_and_lets_consumers_drain() {
    let hub = start(node_listener(None)).await;
    let r = hub.receiver("radar3");
    let mut s = connect(&hub).await;
    for ts in 0..10 {
        send_line(&mut s, &detection("radar3", None, ts)).await;
    }
    counters_until(&hub, "10 delivered", |c| c.frames_delivered == 10).await;
    hub.shutdown().await;
    expect_closed(&mut s).await;
    for _ in 0..10 {
        assert!(r.recv().await.is_some(), "queued frames survive shutdown");
    }
    assert!(r.recv().await.is_none(), "then the receiver ends");
    assert!(
        tokio::net::TcpStream::connect(hub.local_addr())
            .await
            .is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn block_policy_stops_reading_instead_of_dropping() {
    let mut l = node_listener(None);
    l.queue.capacity = 10;
    l.queue.overflow = framehub::OverflowPolicy::Block;
    let hub = start(l).await;
    let mut s = connect(&hub).await;
    let writer = tokio::spawn(async move {
        for ts in 0..500 {
            send_line(&mut s, &detection("radar3", None, ts)).await;
        }
        s
    });
    let mut new_nodes = hub.new_nodes().expect("stream");
    let r = tokio::time::timeout(PATIENCE, new_nodes.recv())
        .await
        .expect("in time")
        .expect("node");
    for ts in 0..500u64 {
        let f = r.recv_timeout(PATIENCE).await.expect("frame");
        let v: serde_json::Value = serde_json::from_slice(&f.payload).expect("json");
        assert_eq!(v["timestamp"], ts);
        if ts % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    writer.await.expect("writer");
    assert_eq!(hub.counters().dropped_total(), 0);
}

#[tokio::test]
async fn full_grace_waits_for_a_late_consumer_before_dropping() {
    for (grace, expect_drops) in [(Duration::from_secs(5), false), (Duration::ZERO, true)] {
        let mut l = node_listener(None);
        l.queue.capacity = 10;
        l.queue.full_grace = grace;
        let hub = start(l).await;
        let mut s = connect(&hub).await;
        // Bind the node first so its receiver exists.
        send_line(&mut s, &detection("radar3", None, 0)).await;
        let mut new_nodes = hub.new_nodes().expect("stream");
        let r = tokio::time::timeout(PATIENCE, new_nodes.recv())
            .await
            .expect("in time")
            .expect("node");
        let mut all = String::new();
        for ts in 1..=30 {
            all.push_str(&detection("radar3", None, ts));
            all.push('\n');
        }
        send(&mut s, all.as_bytes()).await;
        // The consumer is late, but well within the grace.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut got = 0;
        while got < 31 {
            match r.recv_timeout(Duration::from_millis(500)).await {
                Ok(_) => got += 1,
                Err(_) => break,
            }
        }
        let drops = hub.counters().dropped(DropReason::QueueFull);
        if expect_drops {
            assert!(drops > 0 && got < 31, "grace 0: got {got}, drops {drops}");
        } else {
            assert_eq!((got, drops), (31, 0), "grace {grace:?}");
        }
    }
}

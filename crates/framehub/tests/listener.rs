//! Listener behaviour on real sockets: port 0, connection limit, idle and
//! auth timeouts, bind retry.

mod common;

use std::time::{Duration, Instant};

use common::*;
use framehub::{AuthFailure, CloseReason, Hub, HubConfig, HubError};

#[tokio::test]
async fn port_zero_reports_the_bound_address() {
    let hub = start(node_listener(None)).await;
    let addr = hub.local_addr();
    assert_ne!(addr.port(), 0);
    assert_eq!(hub.listeners()[0].local_addr, addr);
    tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to reported address");
}

#[tokio::test]
async fn max_connections_closes_the_extra_connection_and_keeps_serving() {
    let mut l = node_listener(None);
    l.max_connections = 2;
    let hub = start(l).await;
    let r = hub.receiver("radar3");
    let mut a = connect(&hub).await;
    let mut b = connect(&hub).await;
    counters_until(&hub, "two accepted", |c| c.connections_accepted == 2).await;

    let mut extra = connect(&hub).await;
    expect_closed(&mut extra).await;
    let c = counters_until(&hub, "one rejected", |c| c.connections_rejected == 1).await;
    assert_eq!(c.connections_open, 2);

    // The two served connections still work...
    send_line(&mut a, &detection("radar3", None, 1)).await;
    assert!(r.recv_timeout(PATIENCE).await.is_ok());
    assert!(still_open(&mut b, Duration::from_millis(100)).await);
    // ...and a slot freed by a close is usable again.
    drop(a);
    counters_until(&hub, "one closed", |c| c.connections_closed == 1).await;
    let mut again = connect(&hub).await;
    send_line(&mut again, &detection("radar3", None, 2)).await;
    assert!(r.recv_timeout(PATIENCE).await.is_ok());
}

#[tokio::test]
async fn idle_timeout_closes_a_silent_connection() {
    let mut l = node_listener(None);
    l.idle_timeout = Some(Duration::from_millis(300));
    let hub = start(l).await;
    let mut events = hub.events();
    let r = hub.receiver("radar3");
    let mut busy = connect(&hub).await;
    let mut silent = connect(&hub).await;
    let started = Instant::now();
    // The busy one keeps sending for longer than the timeout and survives.
    for ts in 0..8 {
        send_line(&mut busy, &detection("radar3", None, ts)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect_closed(&mut silent).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed too early"
    );
    assert!(still_open(&mut busy, Duration::from_millis(50)).await);
    assert_eq!(r.len(), 8);
    assert_eq!(next_close(&mut events).await.0, CloseReason::IdleTimeout);
}

#[tokio::test]
async fn auth_timeout_closes_a_connection_that_never_authenticates() {
    let mut l = node_listener(Some("t"));
    l.auth.timeout = Duration::from_millis(300);
    let hub = start(l).await;
    let mut events = hub.events();
    let mut silent = connect(&hub).await;
    let mut authed = connect(&hub).await;
    send_line(&mut authed, &heartbeat("radar3", Some("t"))).await;
    let started = Instant::now();
    expect_closed(&mut silent).await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "closed too early"
    );
    counters_until(&hub, "auth failure", |c| c.auth_failures == 1).await;
    // An authenticated connection is not subject to the auth timeout.
    assert!(still_open(&mut authed, Duration::from_millis(500)).await);
    assert_eq!(
        next_close(&mut events).await.0,
        CloseReason::AuthFailed(AuthFailure::Timeout)
    );
}

#[tokio::test]
async fn bind_is_retried_while_the_address_is_in_use() {
    let blocker = std::net::TcpListener::bind(loopback()).expect("blocker");
    let addr = blocker.local_addr().expect("addr");
    let mut l = node_listener(None);
    l.bind = Some(addr);
    l.socket.bind_attempts = 100;
    l.socket.bind_backoff = Duration::from_millis(20);
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(blocker);
    });
    let started = Instant::now();
    let hub = start(l).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "bound before the port was free"
    );
    assert_eq!(hub.local_addr(), addr);
    release.await.expect("release");
}

#[tokio::test]
async fn bind_gives_up_after_the_configured_attempts() {
    let blocker = std::net::TcpListener::bind(loopback()).expect("blocker");
    let mut l = node_listener(None);
    l.bind = Some(blocker.local_addr().expect("addr"));
    l.socket.bind_attempts = 3;
    l.socket.bind_backoff = Duration::from_millis(10);
    let err = Hub::start(HubConfig {
        listener: vec![l],
        ..HubConfig::default()
    })
    .await
    .expect_err("address stays in use");
    match err {
        HubError::Bind { source, .. } => assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse),
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn invalid_config_is_refused_before_binding() {
    let mut l = node_listener(None);
    l.queue.capacity = 0;
    let err = Hub::start(HubConfig {
        listener: vec![l],
        ..HubConfig::default()
    })
    .await
    .expect_err("invalid");
    assert!(
        err.to_string().contains("listener[0].queue.capacity"),
        "{err}"
    );
}

#[tokio::test]
async fn dropping_the_hub_stops_serving_and_ends_its_receivers() {
    let hub = start(node_listener(None)).await;
    let addr = hub.local_addr();
    let r = hub.receiver("radar3");
    let mut s = connect(&hub).await;
    drop(hub);
    expect_closed(&mut s).await;
    let ended = tokio::time::timeout(PATIENCE, r.recv())
        .await
        .expect("recv ends");
    assert!(ended.is_none());
    common::eventually("listener closed", || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
}

//! The PROXY protocol on real sockets: a trusted balancer's v1 and v2
//! headers make the device's address what frames, connections, nodes and
//! events show; untrusted, malformed, missing and slow headers are refused
//! and counted by reason.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use framehub::config::parse_ip_net;
use framehub::{CloseReason, ConnectionEvent, Hub, ListenerConfig, ProxyFailure, ProxyProtocol};
use tokio::net::TcpStream;

/// A node listener that reads PROXY headers, trusting `trusted`.
fn proxied(mode: ProxyProtocol, trusted: &[&str]) -> ListenerConfig {
    ListenerConfig {
        proxy_protocol: mode,
        trusted_proxies: trusted
            .iter()
            .map(|t| parse_ip_net(t).expect("cidr"))
            .collect(),
        ..node_listener(None)
    }
}

/// Trusts the test's own address.
fn trusting(mode: ProxyProtocol) -> ListenerConfig {
    proxied(mode, &["127.0.0.1/32", "::1/128"])
}

/// Trusts a network the test is not in.
fn distrusting(mode: ProxyProtocol) -> ListenerConfig {
    proxied(mode, &["10.0.0.0/8"])
}

fn v1(source: SocketAddr) -> Vec<u8> {
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    let dest = if source.is_ipv4() { "127.0.0.1" } else { "::1" };
    format!(
        "PROXY {family} {} {dest} {} 30050\r\n",
        source.ip(),
        source.port()
    )
    .into_bytes()
}

/// A v2 PROXY header for a TCP connection from `source`, with a TLV a
/// balancer might add (it must be skipped).
fn v2(source: SocketAddr) -> Vec<u8> {
    let mut addresses = Vec::new();
    let family = match source.ip() {
        IpAddr::V4(ip) => {
            addresses.extend_from_slice(&ip.octets());
            addresses.extend_from_slice(&[127, 0, 0, 1]);
            0x11
        }
        IpAddr::V6(ip) => {
            addresses.extend_from_slice(&ip.octets());
            addresses.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
            0x21
        }
    };
    addresses.extend_from_slice(&source.port().to_be_bytes());
    addresses.extend_from_slice(&30050u16.to_be_bytes());
    // PP2_TYPE_AUTHORITY
    addresses.extend_from_slice(&[0x02, 0, 13]);
    addresses.extend_from_slice(b"radar.example");
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.push(0x21);
    out.push(family);
    out.extend_from_slice(&u16::try_from(addresses.len()).expect("short").to_be_bytes());
    out.extend_from_slice(&addresses);
    out
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

/// Sends `header` and a frame of `node` in one write, and checks that the
/// device's address is what the frame, the connection list, the node
/// table and the events show.
async fn device_address_is_shown(header: Vec<u8>, device: SocketAddr, node: &str) {
    let hub = start(trusting(ProxyProtocol::Required)).await;
    let mut events = hub.events();
    let r = hub.receiver(node);
    let mut s = connect(&hub).await;
    let mut bytes = header;
    bytes.extend_from_slice(detection(node, None, 1).as_bytes());
    bytes.push(b'\n');
    send(&mut s, &bytes).await;
    let frame = r.recv_timeout(PATIENCE).await.expect("frame");
    assert_eq!(frame.source.peer, device);
    let conns = hub.connections();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].peer, device);
    let status = hub
        .nodes()
        .into_iter()
        .find(|n| n.name == node)
        .expect("node");
    assert_eq!(status.peer, Some(device));
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(PATIENCE, events.recv()).await {
            Ok(Ok(ConnectionEvent::Connected { peer, .. })) => seen.push(("connected", peer)),
            Ok(Ok(ConnectionEvent::Authenticated { peer, .. })) => {
                seen.push(("authenticated", peer))
            }
            Ok(Ok(_)) => {}
            other => panic!("no event: {other:?}"),
        }
    }
    assert_eq!(seen, [("connected", device), ("authenticated", device)]);
    drop(s);
    let (reason, peer) = next_close(&mut events).await;
    assert_eq!((reason, peer), (CloseReason::PeerClosed, device));
    assert_eq!(
        hub.counters()
            .proxy_rejected
            .iter()
            .map(|(_, n)| n)
            .sum::<u64>(),
        0
    );
}

#[tokio::test]
async fn v1_from_a_trusted_proxy_shows_the_device_ipv4() {
    let device = addr("192.0.2.7:51234");
    device_address_is_shown(v1(device), device, "radar3").await;
}

#[tokio::test]
async fn v1_from_a_trusted_proxy_shows_the_device_ipv6() {
    let device = addr("[2001:db8::7]:4000");
    device_address_is_shown(v1(device), device, "radar4").await;
}

#[tokio::test]
async fn v2_from_a_trusted_proxy_shows_the_device_ipv4() {
    let device = addr("198.51.100.9:7000");
    device_address_is_shown(v2(device), device, "radar5").await;
}

#[tokio::test]
async fn v2_from_a_trusted_proxy_shows_the_device_ipv6() {
    let device = addr("[2001:db8::9]:7001");
    device_address_is_shown(v2(device), device, "radar6").await;
}

/// Expects the server to close `s` and the refusal to be counted under
/// `why`, with a `proxy_rejected` close event naming the socket's address.
async fn refused(
    hub: &Hub,
    events: &mut tokio::sync::broadcast::Receiver<ConnectionEvent>,
    s: &mut TcpStream,
    why: ProxyFailure,
) {
    let local = s.local_addr().expect("addr");
    expect_closed(s).await;
    let (reason, peer) = next_close(events).await;
    assert_eq!(reason, CloseReason::ProxyRejected(why));
    assert_eq!(peer, local);
    let c = counters_until(hub, "refusal counted", |c| c.proxy_rejected(why) == 1).await;
    assert_eq!(c.connections_open, 0);
    assert_eq!(c.frames_received, 0);
    let closed = c
        .connections_closed_by
        .iter()
        .find(|(l, _)| *l == "proxy_rejected")
        .map(|(_, n)| *n);
    assert_eq!(closed, Some(1));
}

#[tokio::test]
async fn an_untrusted_peer_is_refused_and_counted() {
    // Required: refused before it sends anything.
    let hub = start(distrusting(ProxyProtocol::Required)).await;
    let mut events = hub.events();
    let mut s = connect(&hub).await;
    refused(&hub, &mut events, &mut s, ProxyFailure::Untrusted).await;

    // Optional: its header is refused, never believed...
    let hub = start(distrusting(ProxyProtocol::Optional)).await;
    let mut events = hub.events();
    let r = hub.receiver("radar3");
    let mut s = connect(&hub).await;
    let mut bytes = v1(addr("192.0.2.7:1"));
    bytes.extend_from_slice(format!("{}\n", detection("radar3", None, 1)).as_bytes());
    send(&mut s, &bytes).await;
    refused(&hub, &mut events, &mut s, ProxyFailure::Untrusted).await;
    assert!(r.try_recv().is_err(), "nothing delivered");

    // ... and without one it is served as itself.
    let mut s = connect(&hub).await;
    send_line(&mut s, &detection("radar3", None, 2)).await;
    let frame = r.recv_timeout(PATIENCE).await.expect("frame");
    assert_eq!(frame.source.peer, s.local_addr().expect("addr"));
}

#[tokio::test]
async fn malformed_headers_are_refused() {
    let hub = start(trusting(ProxyProtocol::Optional)).await;
    let mut events = hub.events();
    let mut s = connect(&hub).await;
    send(&mut s, b"PROXY TCP4 192.0.2.7 nowhere 1 2\r\n{}\n").await;
    refused(&hub, &mut events, &mut s, ProxyFailure::Malformed).await;

    // A v2 header with an unknown version.
    let mut bad = v2(addr("192.0.2.7:1"));
    bad[12] = 0x31;
    let mut s = connect(&hub).await;
    send(&mut s, &bad).await;
    expect_closed(&mut s).await;
    let c = counters_until(&hub, "second refusal", |c| {
        c.proxy_rejected(ProxyFailure::Malformed) == 2
    })
    .await;
    assert_eq!(c.frames_received, 0);
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let hub = start(trusting(ProxyProtocol::Required)).await;
    let mut events = hub.events();
    let mut s = connect(&hub).await;
    // A v2 length field of 4000 bytes: refused without reading them.
    let mut big = v2(addr("192.0.2.7:1"));
    big[14..16].copy_from_slice(&4000u16.to_be_bytes());
    send(&mut s, &big).await;
    refused(&hub, &mut events, &mut s, ProxyFailure::Oversized).await;

    let mut s = connect(&hub).await;
    send(
        &mut s,
        format!("PROXY TCP4 {}\r\n", "1".repeat(150)).as_bytes(),
    )
    .await;
    expect_closed(&mut s).await;
    counters_until(&hub, "v1 too long", |c| {
        c.proxy_rejected(ProxyFailure::Oversized) == 2
    })
    .await;
}

#[tokio::test]
async fn a_missing_header_is_refused_when_required() {
    let hub = start(trusting(ProxyProtocol::Required)).await;
    let mut events = hub.events();
    let r = hub.receiver("radar3");
    let mut s = connect(&hub).await;
    send_line(&mut s, &detection("radar3", None, 1)).await;
    refused(&hub, &mut events, &mut s, ProxyFailure::Missing).await;
    assert!(r.try_recv().is_err(), "nothing delivered");
}

#[tokio::test]
async fn optional_without_a_header_is_served_normally() {
    let hub = start(trusting(ProxyProtocol::Optional)).await;
    let r = hub.receiver("radar3");
    let mut s = connect(&hub).await;
    let local = s.local_addr().expect("addr");
    send_line(&mut s, &detection("radar3", None, 1)).await;
    send_line(&mut s, &detection("radar3", None, 2)).await;
    for ts in [1, 2] {
        let frame = r.recv_timeout(PATIENCE).await.expect("frame");
        assert_eq!(frame.source.peer, local);
        let v: serde_json::Value = serde_json::from_slice(&frame.payload).expect("json");
        assert_eq!(v["timestamp"], ts);
    }
    assert_eq!(hub.connections()[0].peer, local);
    // And a trusted proxy's header on the same listener is honoured.
    let device = addr("192.0.2.8:2000");
    let mut s = connect(&hub).await;
    let mut bytes = v2(device);
    bytes.extend_from_slice(format!("{}\n", detection("radar3", None, 3)).as_bytes());
    send(&mut s, &bytes).await;
    let frame = r.recv_timeout(PATIENCE).await.expect("frame");
    assert_eq!(frame.source.peer, device);
}

/// The header arrives in pieces, the frames right behind its last piece:
/// all of them are delivered, from the device's address.
#[tokio::test]
async fn a_header_split_across_writes_and_the_frames_after_it() {
    for (header, mode) in [
        (v1(addr("192.0.2.7:51234")), ProxyProtocol::Required),
        (v2(addr("192.0.2.7:51234")), ProxyProtocol::Optional),
    ] {
        let hub = start(trusting(mode)).await;
        let r = hub.receiver("radar3");
        let mut s = connect(&hub).await;
        let mut bytes = header;
        for ts in 0..50 {
            bytes.extend_from_slice(format!("{}\n", detection("radar3", None, ts)).as_bytes());
        }
        // Cuts inside the signature, inside the addresses, and between
        // the header's end and the first frame.
        for piece in [&bytes[..3], &bytes[3..9], &bytes[9..20], &bytes[20..]] {
            send(&mut s, piece).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        for ts in 0..50 {
            let frame = r.recv_timeout(PATIENCE).await.expect("frame");
            assert_eq!(frame.source.peer, addr("192.0.2.7:51234"));
            let v: serde_json::Value = serde_json::from_slice(&frame.payload).expect("json");
            assert_eq!(v["timestamp"], ts);
        }
        assert_eq!(hub.counters().dropped_total(), 0);
    }
}

#[tokio::test]
async fn a_slow_header_is_closed_after_proxy_timeout() {
    let hub = start(ListenerConfig {
        proxy_timeout: Duration::from_millis(300),
        ..trusting(ProxyProtocol::Required)
    })
    .await;
    let mut events = hub.events();
    let mut s = connect(&hub).await;
    let started = tokio::time::Instant::now();
    send(&mut s, b"PROXY TCP4 192.0.2.7 ").await;
    refused(&hub, &mut events, &mut s, ProxyFailure::Timeout).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed too early"
    );

    // Optional: a header begun and not finished is refused too...
    let hub = start(ListenerConfig {
        proxy_timeout: Duration::from_millis(100),
        ..trusting(ProxyProtocol::Optional)
    })
    .await;
    let mut events = hub.events();
    let mut s = connect(&hub).await;
    send(&mut s, b"\r\n\r\n\0\r\nQUIT\n\x21").await;
    refused(&hub, &mut events, &mut s, ProxyFailure::Timeout).await;

    // ... but a peer that says nothing is no balancer (one writes the
    // header at once): it is served as itself once proxy_timeout passes,
    // as radar nodes that speak first at their heartbeat period need.
    let r = hub.receiver("radar3");
    let mut s = connect(&hub).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_line(&mut s, &detection("radar3", None, 1)).await;
    let frame = r.recv_timeout(PATIENCE).await.expect("frame");
    assert_eq!(frame.source.peer, s.local_addr().expect("addr"));
    assert_eq!(hub.counters().proxy_rejected(ProxyFailure::Timeout), 1);
}

/// A balancer's health check connects and closes, or sends a LOCAL
/// header: neither is a refusal.
#[tokio::test]
async fn health_checks_are_not_refusals() {
    let hub = start(trusting(ProxyProtocol::Required)).await;
    let mut events = hub.events();
    let s = connect(&hub).await;
    let local = s.local_addr().expect("addr");
    drop(s);
    assert_eq!(
        next_close(&mut events).await,
        (CloseReason::PeerClosed, local)
    );

    let mut s = connect(&hub).await;
    let local = s.local_addr().expect("addr");
    let mut local_cmd = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local_cmd.extend_from_slice(&[0x20, 0x00, 0, 0]);
    send(&mut s, &local_cmd).await;
    eventually("LOCAL connection served", || {
        let ok = hub.connections().iter().any(|c| c.peer == local);
        async move { ok }
    })
    .await;
    drop(s);
    assert_eq!(
        next_close(&mut events).await,
        (CloseReason::PeerClosed, local)
    );
    let c = hub.counters();
    assert_eq!(c.proxy_rejected.iter().map(|(_, n)| n).sum::<u64>(), 0);
}

//! Helpers shared by the socket tests: start a hub on 127.0.0.1:0, connect,
//! send frames, wait for a condition with a generous bound.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use framehub::{
    AuthConfig, CloseReason, ConnectionEvent, Counters, Hub, HubConfig, ListenerConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound for anything that should happen "at once" on loopback.
/// 30 s, not 10: with CI's two cores shared by a dozen test binaries and
/// their daemons, a reader task went 10 s without being scheduled (the
/// egress tests' "fast client keeps receiving").
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// A node-protocol listener on an ephemeral port, optionally with a token.
pub fn node_listener(token: Option<&str>) -> ListenerConfig {
    ListenerConfig {
        bind: Some(loopback()),
        auth: AuthConfig {
            token: token.map(str::to_owned),
            ..AuthConfig::default()
        },
        ..ListenerConfig::default()
    }
}

pub async fn start(listener: ListenerConfig) -> Hub {
    start_config(HubConfig {
        listener: vec![listener],
        ..HubConfig::default()
    })
    .await
}

pub async fn start_config(config: HubConfig) -> Hub {
    Hub::start(config).await.expect("hub starts")
}

pub async fn connect(hub: &Hub) -> TcpStream {
    let s = TcpStream::connect(hub.local_addr()).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s
}

pub async fn send(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.expect("write");
}

pub async fn send_line(stream: &mut TcpStream, line: &str) {
    let mut bytes = line.as_bytes().to_vec();
    bytes.push(b'\n');
    send(stream, &bytes).await;
}

/// A radar detection frame (~200 bytes with the token).
pub fn detection(node: &str, token: Option<&str>, ts: u64) -> String {
    let token = token
        .map(|t| format!(",\"token\":\"{t}\""))
        .unwrap_or_default();
    format!(
        "{{\"node_id\":\"{node}\"{token},\"timestamp\":{ts},\"delay\":[40.46,41.02],\"doppler\":[-27.99,12.5],\"snr\":[12.08,9.7],\"adsb\":[null,null]}}"
    )
}

pub fn heartbeat(node: &str, token: Option<&str>) -> String {
    let token = token
        .map(|t| format!(",\"token\":\"{t}\""))
        .unwrap_or_default();
    format!("{{\"node_id\":\"{node}\"{token},\"type\":\"heartbeat\"}}")
}

/// Waits until `check` holds, polling; panics after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the hub's counters satisfy `check`, and returns them.
pub async fn counters_until(hub: &Hub, what: &str, check: impl Fn(&Counters) -> bool) -> Counters {
    eventually(what, || {
        let ok = check(&hub.counters());
        async move { ok }
    })
    .await;
    hub.counters()
}

/// Reads until the peer closes; panics if it does not within [`PATIENCE`].
pub async fn expect_closed(stream: &mut TcpStream) {
    let mut sink = [0u8; 1024];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "server did not close the connection");
}

/// True if the server has not closed the connection (no EOF within `wait`).
pub async fn still_open(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut one = [0u8; 1];
    match tokio::time::timeout(wait, stream.read(&mut one)).await {
        Err(_) => true,
        Ok(Ok(n)) => n > 0,
        Ok(Err(_)) => false,
    }
}

/// The reason and peer of the next connection that closes.
pub async fn next_close(
    events: &mut tokio::sync::broadcast::Receiver<ConnectionEvent>,
) -> (CloseReason, SocketAddr) {
    loop {
        match tokio::time::timeout(PATIENCE, events.recv())
            .await
            .expect("a close event in time")
            .expect("event stream open")
        {
            ConnectionEvent::Closed { reason, peer, .. } => return (reason, peer),
            _ => continue,
        }
    }
}

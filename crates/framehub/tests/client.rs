//! The reconnecting client against a real hub on 127.0.0.1, through a
//! fault-injecting proxy (tests/common/proxy.rs): cuts, refused connects,
//! stalls and half-open links. Time bounds are generous; what they bound
//! is stated next to each.

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::time::{Duration, Instant};

use common::*;
use framehub::{
    Client, ClientConfig, ClientError, ClientEvent, ClientProtocol, ClientState, DisconnectReason,
    Hub, ListenerConfig, NodeIdentity, OutboxPolicy, QueueConfig, Receiver,
};
use proxy::{Mode, Proxy};
use tokio::sync::broadcast;

const TOKEN: &str = "secret";
/// Scheduling slack on top of a bound the client promises (the machine is
/// shared; loopback itself takes microseconds).
const SLACK: Duration = Duration::from_secs(1);

fn node_config(addr: std::net::SocketAddr, node: &str) -> ClientConfig {
    ClientConfig {
        protocol: ClientProtocol::Node(NodeIdentity {
            node_id: Some(node.into()),
            token: Some(TOKEN.into()),
            ..NodeIdentity::default()
        }),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        ..ClientConfig::new(addr.to_string())
    }
}

/// Waits for the first event matching `want`; panics after `within`.
async fn wait_event(
    events: &mut broadcast::Receiver<ClientEvent>,
    within: Duration,
    what: &str,
    want: impl Fn(&ClientEvent) -> bool,
) -> ClientEvent {
    let found = tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(e) if want(&e) => return e,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("events ended before {what}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {what} within {within:?}"))
}

/// Waits for the state to be `Connected`; unlike an event, a state set
/// before we looked is still seen.
async fn until_connected(client: &Client) {
    let mut state = client.watch_state();
    tokio::time::timeout(PATIENCE, state.wait_for(|s| *s == ClientState::Connected))
        .await
        .expect("connected in time")
        .expect("client alive");
}

fn is_connected(e: &ClientEvent) -> bool {
    matches!(e, ClientEvent::Connected { .. })
}

fn is_disconnected(e: &ClientEvent) -> bool {
    matches!(e, ClientEvent::Disconnected { .. })
}

/// A message the application would send: no node_id (the client adds it).
fn message(seq: u64) -> String {
    format!(
        r#"{{"timestamp":{seq},"delay":[40.46],"doppler":[-27.99],"snr":[12.08],"adsb":[null]}}"#
    )
}

/// Receives `n` frames and returns their timestamps.
async fn timestamps(receiver: &Receiver, n: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let frame = receiver
            .recv_timeout(PATIENCE)
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} frames arrived", out.len()));
        let v: serde_json::Value = serde_json::from_slice(&frame.payload).expect("json");
        out.push(v["timestamp"].as_u64().expect("timestamp"));
    }
    out
}

async fn assert_nothing_more(receiver: &Receiver) {
    let extra = receiver.recv_timeout(Duration::from_millis(300)).await;
    assert!(extra.is_err(), "unexpected extra frame: {extra:?}");
}

async fn hub_with(listener: ListenerConfig) -> Hub {
    start(ListenerConfig {
        auth: framehub::AuthConfig {
            token: Some(TOKEN.into()),
            ..Default::default()
        },
        ..listener
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_within_the_backoff_bound() {
    let hub = hub_with(node_listener(None)).await;
    let proxy = Proxy::start(hub.local_addr()).await;
    let config = node_config(proxy.addr(), "radar1");
    let (initial, max) = (config.backoff_initial, config.backoff_max);
    let client = Client::start(config).expect("client");
    let mut events = client.events();
    until_connected(&client).await;
    // Stay up longer than backoff_max: the link counts as stable, so the
    // next outage starts over from the initial delay.
    tokio::time::sleep(max + Duration::from_millis(300)).await;

    // A cut with the server still there: back within one initial delay.
    let cut = Instant::now();
    proxy.cut();
    wait_event(&mut events, PATIENCE, "disconnect", is_disconnected).await;
    wait_event(&mut events, PATIENCE, "reconnect", is_connected).await;
    let back = cut.elapsed();
    assert!(
        back < initial + SLACK,
        "reconnect after a cut took {back:?} (initial backoff {initial:?})"
    );

    // Down for 3 s: attempts back off, each wait at most backoff_max, and
    // the waits grow.
    tokio::time::sleep(max + Duration::from_millis(300)).await;
    proxy.down().await;
    let down_for = Duration::from_secs(3);
    let mut delays = Vec::new();
    let until = Instant::now() + down_for;
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(ClientEvent::BackingOff { delay })) => delays.push(delay),
            Ok(Ok(ClientEvent::Connected { .. })) => panic!("connected while the proxy is down"),
            _ => {}
        }
    }
    assert!(delays.len() >= 4, "too few attempts while down: {delays:?}");
    assert!(
        delays.iter().all(|d| *d <= max),
        "over the bound: {delays:?}"
    );
    assert!(delays[0] <= initial, "{delays:?}");
    assert!(
        delays.iter().any(|d| *d >= max / 2),
        "delays never grew towards the maximum: {delays:?}"
    );
    let failures = client.counters().connect_failures;
    assert!(failures >= 4, "{failures} failed attempts");

    // Up again: connected within one maximum wait (plus slack).
    proxy.up().await;
    let up = Instant::now();
    wait_event(
        &mut events,
        max + PATIENCE,
        "reconnect after down",
        is_connected,
    )
    .await;
    let back = up.elapsed();
    assert!(
        back <= max + SLACK,
        "reconnect took {back:?} after the server came back (backoff_max {max:?})"
    );
    assert!(client.is_connected());
    client.close(PATIENCE).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_accepted_while_disconnected_arrive_once_and_in_order() {
    let hub = hub_with(node_listener(None)).await;
    // Room for the whole backlog, so the hub's own queue drops nothing.
    let radar = hub.receiver_with(
        "radar1",
        QueueConfig {
            capacity: 10_000,
            ..QueueConfig::default()
        },
    );
    let proxy = Proxy::start(hub.local_addr()).await;
    let client = Client::start(ClientConfig {
        outbox_capacity: 10_000,
        ..node_config(proxy.addr(), "radar1")
    })
    .expect("client");
    let mut events = client.events();

    for seq in 0..100 {
        client.send(message(seq)).await.expect("send");
    }
    assert_eq!(timestamps(&radar, 100).await, (0..100).collect::<Vec<_>>());

    // The link goes down; everything sent meanwhile waits in the outbox.
    proxy.down().await;
    wait_event(&mut events, PATIENCE, "disconnect", is_disconnected).await;
    let sent_before = client.counters().sent;
    for seq in 100..5100 {
        client.try_send(message(seq)).expect("queued");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = client.counters();
    assert_eq!(c.sent, sent_before, "nothing can be sent while down");
    assert_eq!(c.outbox_len, 5000);
    assert!(radar.is_empty());

    proxy.up().await;
    assert_eq!(
        timestamps(&radar, 5000).await,
        (100..5100).collect::<Vec<_>>(),
        "every message accepted while down, once, in order"
    );
    assert_nothing_more(&radar).await;

    // A frame as the hub received it: node_id filled in, no token copied.
    client.send(message(9999)).await.expect("send");
    let frame = radar.recv_timeout(PATIENCE).await.expect("frame");
    let v: serde_json::Value = serde_json::from_slice(&frame.payload).expect("json");
    assert_eq!(v["node_id"], "radar1");
    assert!(v.get("token").is_none());

    client.close(PATIENCE).await.expect("close");
    let c = client.counters();
    assert_eq!(c.accepted, 5101);
    assert_eq!(c.sent, 5101);
    assert_eq!(c.dropped_outbox_full + c.dropped_unsent, 0);
    assert_eq!(hub.counters().dropped_total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_drops_the_oldest_and_counts_it() {
    let hub = hub_with(node_listener(None)).await;
    let radar = hub.receiver("radar1");
    let proxy = Proxy::start(hub.local_addr()).await;
    proxy.down().await;
    let client = Client::start(ClientConfig {
        outbox_capacity: 10,
        ..node_config(proxy.addr(), "radar1")
    })
    .expect("client");
    for seq in 0..25 {
        client
            .try_send(message(seq))
            .expect("drop-oldest never refuses");
    }
    let c = client.counters();
    assert_eq!(
        (c.accepted, c.dropped_outbox_full, c.outbox_len),
        (25, 15, 10)
    );
    proxy.up().await;
    assert_eq!(timestamps(&radar, 10).await, (15..25).collect::<Vec<_>>());
    assert_nothing_more(&radar).await;
    client.close(PATIENCE).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_policy_makes_senders_wait_instead_of_dropping() {
    let hub = hub_with(node_listener(None)).await;
    let radar = hub.receiver("radar1");
    let proxy = Proxy::start(hub.local_addr()).await;
    proxy.down().await;
    let client = Client::start(ClientConfig {
        outbox_capacity: 10,
        outbox_policy: OutboxPolicy::Block,
        ..node_config(proxy.addr(), "radar1")
    })
    .expect("client");
    for seq in 0..10 {
        client.try_send(message(seq)).expect("room");
    }
    assert!(matches!(
        client.try_send(message(10)),
        Err(ClientError::Full)
    ));
    let producer = {
        let client = client.clone();
        tokio::spawn(async move {
            for seq in 10..200 {
                client.send(message(seq)).await.expect("send waits");
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !producer.is_finished(),
        "send must wait while the outbox is full"
    );
    proxy.up().await;
    tokio::time::timeout(PATIENCE, producer)
        .await
        .expect("producer finishes once the link is up")
        .expect("producer");
    assert_eq!(timestamps(&radar, 200).await, (0..200).collect::<Vec<_>>());
    let c = client.counters();
    assert_eq!((c.dropped_outbox_full, c.rejected), (0, 1));
    client.close(PATIENCE).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_an_idle_link_alive() {
    let idle_timeout = Duration::from_millis(800);
    let hub = hub_with(ListenerConfig {
        idle_timeout: Some(idle_timeout),
        ..node_listener(None)
    })
    .await;
    let with_heartbeats = Client::start(ClientConfig {
        heartbeat_interval: Some(Duration::from_millis(200)),
        // The hub sends nothing here: liveness must not be judged.
        liveness_timeout: Some(Duration::from_millis(300)),
        ..node_config(hub.local_addr(), "radar1")
    })
    .expect("client");
    let without = Client::start(ClientConfig {
        heartbeat_interval: None,
        ..node_config(hub.local_addr(), "radar2")
    })
    .expect("client");

    tokio::time::sleep(idle_timeout * 4).await;
    let c = with_heartbeats.counters();
    assert_eq!(c.connects, 1);
    assert_eq!(c.disconnects, 0, "the idle link was kept alive");
    assert!(c.heartbeats_sent >= 10, "{c:?}");
    // The control: the same hub closes a link without heartbeats.
    let control = without.counters();
    assert!(control.disconnects >= 2, "{control:?}");
    let healthy: Vec<_> = hub
        .nodes()
        .into_iter()
        .filter(|n| n.healthy)
        .map(|n| n.name)
        .collect();
    assert!(healthy.iter().any(|n| n == "radar1"), "{healthy:?}");
    assert!(hub.counters().heartbeats >= 10);
    with_heartbeats.close(PATIENCE).await.expect("close");
    without.close(PATIENCE).await.expect("close");
}

/// The hub heartbeats every 200 ms; the proxy then stops passing data on
/// the open link without closing it. The client must notice within its
/// liveness timeout and come back on a fresh link.
async fn half_open_link_is_detected(mode: Mode, flood: bool) {
    let liveness = Duration::from_secs(1);
    let hub = hub_with(ListenerConfig {
        server_heartbeat: Some(Duration::from_millis(200)),
        ..node_listener(None)
    })
    .await;
    let radar = hub.receiver("radar1");
    let proxy = Proxy::start(hub.local_addr()).await;
    let client = Client::start(ClientConfig {
        liveness_timeout: Some(liveness),
        // Flooding: the producer always waits on a full outbox, so the
        // client always has something to write.
        outbox_policy: if flood {
            OutboxPolicy::Block
        } else {
            OutboxPolicy::DropOldest
        },
        ..node_config(proxy.addr(), "radar1")
    })
    .expect("client");
    let mut events = client.events();
    until_connected(&client).await;
    eventually("a server heartbeat reaches the client", || {
        let n = client.counters().frames_received;
        async move { n >= 2 }
    })
    .await;

    proxy.set_mode(mode);
    let silent_from = Instant::now();
    // Writes still succeed into the void (or the kernel buffer): only the
    // silence gives the link away.
    let producer = flood.then(|| {
        let client = client.clone();
        tokio::spawn(async move {
            for seq in 0.. {
                if client.send(message(seq)).await.is_err() {
                    return;
                }
            }
        })
    });
    if !flood {
        for seq in 0..3 {
            client.send(message(seq)).await.expect("send");
        }
    }
    let event = wait_event(&mut events, liveness + PATIENCE, "liveness timeout", |e| {
        matches!(
            e,
            ClientEvent::Disconnected {
                reason: DisconnectReason::LivenessTimeout(_)
            }
        )
    })
    .await;
    let detected = silent_from.elapsed();
    // At most one heartbeat interval was already running when the link
    // went silent, then the timeout; allow loopback slack.
    assert!(
        detected >= liveness.saturating_sub(Duration::from_millis(250))
            && detected <= liveness + SLACK,
        "{mode:?}: detected after {detected:?}, liveness timeout {liveness:?}: {event:?}"
    );
    if let Some(producer) = producer {
        producer.abort();
        assert_eq!(client.counters().liveness_timeouts, 1);
        return;
    }
    wait_event(&mut events, PATIENCE, "reconnect", is_connected).await;
    assert_eq!(client.counters().liveness_timeouts, 1);
    client.send(message(1000)).await.expect("send");
    // Frames swallowed by the dead link are lost (at most once: they were
    // in the kernel's hands); the fresh link delivers.
    assert_eq!(timestamps(&radar, 1).await, [1000]);
    assert_nothing_more(&radar).await;
    assert_eq!(proxy.accepted(), 2);
    client.close(PATIENCE).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_link_dropping_data_is_detected_within_liveness_timeout() {
    half_open_link_is_detected(Mode::Blackhole, false).await;
}

/// With a producer that always has more to write, the write side never
/// idles; the silence must still be noticed (the liveness timer is checked
/// before each write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_link_is_detected_while_a_backlog_is_written() {
    half_open_link_is_detected(Mode::Blackhole, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_link_is_detected_within_liveness_timeout() {
    half_open_link_is_detected(Mode::Stall, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_flushes_the_outbox_within_its_deadline() {
    let hub = hub_with(node_listener(None)).await;
    let radar = hub.receiver("radar1");
    let proxy = Proxy::start(hub.local_addr()).await;
    proxy.down().await;
    let client = Client::start(node_config(proxy.addr(), "radar1")).expect("client");
    for seq in 0..500 {
        client.try_send(message(seq)).expect("queued");
    }
    // The link comes back while close() waits.
    let closing = {
        let client = client.clone();
        tokio::spawn(async move { client.close(PATIENCE).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        client.try_send(message(0)),
        Err(ClientError::Closed)
    ));
    proxy.up().await;
    closing.await.expect("join").expect("everything flushed");
    assert_eq!(timestamps(&radar, 500).await, (0..500).collect::<Vec<_>>());
    assert_eq!(client.state(), ClientState::Closed);

    // A server that never comes back: close gives up at its deadline and
    // counts what it dropped.
    proxy.down().await;
    let stuck = Client::start(node_config(proxy.addr(), "radar2")).expect("client");
    for seq in 0..7 {
        stuck.try_send(message(seq)).expect("queued");
    }
    let started = Instant::now();
    let result = stuck.close(Duration::from_millis(500)).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        matches!(result, Err(ClientError::CloseTimeout { unsent: 7 })),
        "{result:?}"
    );
    assert_eq!(stuck.counters().dropped_unsent, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_backs_off_instead_of_hammering() {
    let hub = hub_with(node_listener(None)).await;
    let client = Client::start(ClientConfig {
        protocol: ClientProtocol::Node(NodeIdentity {
            node_id: Some("radar1".into()),
            token: Some("wrong".into()),
            ..NodeIdentity::default()
        }),
        ..node_config(hub.local_addr(), "radar1")
    })
    .expect("client");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failures = hub.counters().auth_failures;
    // 100 ms doubling to 1 s: about 6 attempts in 3 s, not 30.
    assert!((2..=10).contains(&failures), "{failures} auth failures");
    drop(client);
}

//! The fan-in on real sockets: frames of nodes known before it started,
//! nodes provisioned later, a `raw` listener and a group stream all arrive
//! in one stream, in order per source, once each; shutdown ends it after
//! everything queued was handed out.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use framehub::{
    AllFrames, AllFramesConfig, Delivery, Frame, Hub, HubConfig, ListenerConfig, Protocol,
};
use tokio::net::TcpStream;

fn config() -> HubConfig {
    HubConfig {
        listener: vec![
            ListenerConfig {
                name: "nodes".into(),
                ..node_listener(None)
            },
            ListenerConfig {
                name: "raw".into(),
                protocol: Protocol::Raw,
                ..node_listener(None)
            },
            ListenerConfig {
                name: "stage".into(),
                protocol: Protocol::Raw,
                delivery: Delivery::Groups,
                group_size: 2,
                group_max_delay: Duration::from_millis(20),
                ..node_listener(None)
            },
        ],
        ..HubConfig::default()
    }
}

fn addr_of(hub: &Hub, listener: &str) -> SocketAddr {
    hub.listeners()
        .into_iter()
        .find(|l| l.name == listener)
        .expect("listener")
        .local_addr
}

async fn connect_to(hub: &Hub, listener: &str) -> TcpStream {
    TcpStream::connect(addr_of(hub, listener))
        .await
        .expect("connect")
}

/// Where a frame came from: its node, or its listener for raw frames.
fn origin(frame: &Frame) -> String {
    frame
        .source
        .node
        .as_deref()
        .map_or_else(|| frame.source.listener.to_string(), str::to_owned)
}

/// Takes frames until `n` arrived, by origin, in arrival order.
async fn take(all: &mut AllFrames, n: usize) -> HashMap<String, Vec<String>> {
    let mut by_origin: HashMap<String, Vec<String>> = HashMap::new();
    let mut got = 0;
    while got < n {
        let mut batch = Vec::new();
        let added = tokio::time::timeout(PATIENCE, all.recv_many(&mut batch, 3))
            .await
            .expect("frames in time");
        assert!(added > 0, "the stream ended early after {got} frames");
        for f in batch {
            by_origin
                .entry(origin(&f))
                .or_default()
                .push(String::from_utf8_lossy(&f.payload).into_owned());
        }
        got += added;
    }
    by_origin
}

fn detections(node: &str, from: u64, to: u64) -> Vec<String> {
    (from..to).map(|ts| detection(node, None, ts)).collect()
}

#[tokio::test]
async fn nodes_old_and_new_a_raw_listener_and_groups_all_arrive_once_in_order() {
    let hub = start_config(config()).await;
    // Known before the fan-in starts: registered, and auto-provisioned
    // (which is also announced on the new-node stream it takes over).
    drop(hub.receiver("registered"));
    let mut early = connect_to(&hub, "nodes").await;
    for line in detections("early", 1, 4) {
        send_line(&mut early, &line).await;
    }
    counters_until(&hub, "early delivered", |c| c.frames_delivered == 3).await;

    let mut all = hub
        .all_frames(AllFramesConfig::default())
        .expect("new-node stream untaken");
    assert!(hub.new_nodes().is_none(), "the fan-in took it");
    assert!(hub.all_frames(AllFramesConfig::default()).is_err());

    for line in detections("early", 4, 6) {
        send_line(&mut early, &line).await;
    }
    let mut late = connect_to(&hub, "nodes").await;
    for line in detections("late", 1, 5) {
        send_line(&mut late, &line).await;
    }
    let mut registered = connect_to(&hub, "nodes").await;
    for line in detections("registered", 1, 3) {
        send_line(&mut registered, &line).await;
    }
    let mut raw = connect_to(&hub, "raw").await;
    send(&mut raw, b"r1\nr2\nr3\n").await;
    let mut stage = connect_to(&hub, "stage").await;
    send(&mut stage, b"s1\ns2\ns3\n").await;

    let got = take(&mut all, 5 + 4 + 2 + 3 + 3).await;
    assert_eq!(got["early"], detections("early", 1, 6));
    assert_eq!(got["late"], detections("late", 1, 5));
    assert_eq!(got["registered"], detections("registered", 1, 3));
    assert_eq!(got["raw"], ["r1", "r2", "r3"]);
    assert_eq!(got["stage"], ["s1", "s2", "s3"]);
    assert_eq!(got.len(), 5);
    hub.shutdown().await;
    assert!(
        tokio::time::timeout(PATIENCE, all.recv())
            .await
            .expect("ends in time")
            .is_none(),
        "nothing more, and the stream ends"
    );
}

#[tokio::test]
async fn shutdown_ends_the_stream_after_everything_queued_is_handed_out() {
    let hub = start_config(config()).await;
    // A queue of one batch: the rest waits in the sources.
    let mut all = hub
        .all_frames(AllFramesConfig { batch: 2, queue: 1 })
        .expect("untaken");
    let mut a = connect_to(&hub, "nodes").await;
    for line in detections("a", 1, 11) {
        send_line(&mut a, &line).await;
    }
    let mut b = connect_to(&hub, "nodes").await;
    for line in detections("b", 1, 11) {
        send_line(&mut b, &line).await;
    }
    let mut raw = connect_to(&hub, "raw").await;
    send(&mut raw, b"x\ny\n").await;
    counters_until(&hub, "everything received", |c| c.frames_delivered == 22).await;
    hub.shutdown().await;

    let mut by_origin: HashMap<String, Vec<String>> = HashMap::new();
    while let Some(batch) = tokio::time::timeout(PATIENCE, all.recv())
        .await
        .expect("in time")
    {
        assert!(batch.len() <= 2, "batches of at most `batch` frames");
        for f in batch {
            by_origin
                .entry(origin(&f))
                .or_default()
                .push(String::from_utf8_lossy(&f.payload).into_owned());
        }
    }
    assert_eq!(by_origin["a"], detections("a", 1, 11));
    assert_eq!(by_origin["b"], detections("b", 1, 11));
    assert_eq!(by_origin["raw"], ["x", "y"]);
}

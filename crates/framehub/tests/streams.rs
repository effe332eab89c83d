//! `Receiver`, `Groups` and `NewNodes` as `futures::Stream`s on real sockets: the same items
//! as their `recv`, in order, and the end of the stream when the hub shuts down or the
//! receiver is closed.

mod common;

use std::time::Duration;

use common::*;
use framehub::codec::FramingConfig;
use framehub::{Delivery, Frame, Group, ListenerConfig, Protocol, Receiver};
use futures_util::{Stream, StreamExt};

/// The next item of `stream`, within [`PATIENCE`].
async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("the stream yields or ends in time")
}

fn payload(frame: &Frame) -> &str {
    std::str::from_utf8(&frame.payload).expect("utf8")
}

#[test]
fn stream_handles_stay_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Receiver>();
    send_sync::<framehub::Groups>();
    fn send<T: Send>() {}
    send::<framehub::NewNodes>();
}

#[tokio::test]
async fn receiver_stream_yields_frames_then_ends_at_shutdown() {
    let hub = start(node_listener(None)).await;
    let mut radar3 = hub.receiver("radar3");
    let mut s = connect(&hub).await;
    let lines: Vec<String> = (1..=3).map(|ts| detection("radar3", None, ts)).collect();
    for line in &lines {
        send_line(&mut s, line).await;
    }
    for line in &lines[..2] {
        let frame = next(&mut radar3).await.expect("a frame");
        assert_eq!(payload(&frame), line);
    }
    eventually("the third frame queued", || {
        let queued = radar3.len() == 1;
        async move { queued }
    })
    .await;
    hub.shutdown().await;
    // Drained first, then the end; and the end again when polled after it.
    let frame = next(&mut radar3).await.expect("the queued frame");
    assert_eq!(payload(&frame), lines[2]);
    assert!(next(&mut radar3).await.is_none());
    assert!(next(&mut radar3).await.is_none());
}

#[tokio::test]
async fn receiver_stream_and_recv_share_the_queue() {
    let hub = start(node_listener(None)).await;
    let mut stream = hub.receiver("radar3");
    let other = stream.clone();
    let mut s = connect(&hub).await;
    for ts in 1..=4 {
        send_line(&mut s, &detection("radar3", None, ts)).await;
    }
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(next(&mut stream).await.expect("a frame").payload);
        let frame = tokio::time::timeout(PATIENCE, other.recv()).await;
        seen.push(frame.expect("in time").expect("a frame").payload);
    }
    let expected: Vec<String> = (1..=4).map(|ts| detection("radar3", None, ts)).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn receiver_stream_ends_when_closed_while_waiting() {
    let hub = start(node_listener(None)).await;
    let mut waiting = hub.receiver("radar3");
    let closer = waiting.clone();
    let task = tokio::spawn(async move { waiting.next().await.map(|f| f.payload) });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!task.is_finished(), "nothing was sent");
    closer.close();
    let ended = tokio::time::timeout(PATIENCE, task).await;
    assert_eq!(ended.expect("woken in time").expect("task"), None);
}

/// A stream left waiting (its `next()` dropped by a timeout) picks up where it was.
#[tokio::test]
async fn receiver_stream_survives_a_dropped_next() {
    let hub = start(node_listener(None)).await;
    let mut radar3 = hub.receiver("radar3");
    let idle = tokio::time::timeout(Duration::from_millis(20), radar3.next()).await;
    assert!(idle.is_err(), "nothing was sent");
    let mut s = connect(&hub).await;
    send_line(&mut s, &detection("radar3", None, 1)).await;
    let frame = next(&mut radar3).await.expect("a frame");
    assert_eq!(payload(&frame), detection("radar3", None, 1));
}

fn grouped(size: usize) -> ListenerConfig {
    ListenerConfig {
        name: "stage".into(),
        framing: FramingConfig::Lines,
        protocol: Protocol::Raw,
        delivery: Delivery::Groups,
        group_size: size,
        group_max_delay: Duration::from_secs(30),
        ..node_listener(None)
    }
}

fn group_payloads(group: &Group) -> Vec<&str> {
    group.frames.iter().map(payload).collect()
}

#[tokio::test]
async fn groups_stream_yields_groups_then_ends_at_shutdown() {
    let hub = start(grouped(2)).await;
    let mut groups = hub.groups("stage").expect("grouped listener");
    let mut s = connect(&hub).await;
    send(&mut s, b"a\nb\nc\nd\ne\n").await;
    let first = next(&mut groups).await.expect("a full group");
    assert_eq!((first.seq, group_payloads(&first)), (1, vec!["a", "b"]));
    let second = next(&mut groups).await.expect("a full group");
    assert_eq!((second.seq, group_payloads(&second)), (2, vec!["c", "d"]));
    counters_until(&hub, "five frames", |c| c.frames_received == 5).await;
    hub.shutdown().await;
    // The open group is handed out at shutdown, then the stream ends.
    let last = next(&mut groups).await.expect("the open group");
    assert_eq!(group_payloads(&last), ["e"]);
    assert!(next(&mut groups).await.is_none());
}

#[tokio::test]
async fn groups_stream_ends_when_closed() {
    let hub = start(grouped(2)).await;
    let mut groups = hub.groups("stage").expect("grouped listener");
    groups.clone().close();
    assert!(next(&mut groups).await.is_none());
}

#[tokio::test]
async fn new_nodes_stream_yields_receivers_then_ends_at_shutdown() {
    let hub = start(node_listener(None)).await;
    let mut new_nodes = hub.new_nodes().expect("taken once");
    let mut s = connect(&hub).await;
    send_line(&mut s, &detection("radar7", None, 1)).await;
    let mut radar7 = next(&mut new_nodes).await.expect("a new node");
    assert_eq!(radar7.name(), "radar7");
    let frame = next(&mut radar7).await.expect("its first frame");
    assert_eq!(payload(&frame), detection("radar7", None, 1));
    hub.shutdown().await;
    assert!(next(&mut new_nodes).await.is_none());
    assert!(next(&mut radar7).await.is_none());
}

//! Issue 18, against real sockets: a frame trickled forever runs into
//! `frame_timeout`; one flooder on a raw listener loses only its own
//! frames; unfinished frames of all connections stay within
//! `partial_frame_budget`; node ids are capped and idle nodes evicted.

mod common;

use std::time::Duration;

use common::*;
use framehub::{CloseReason, Counters, ListenerConfig, Protocol};
use tokio::io::AsyncWriteExt;

fn raw_lines() -> ListenerConfig {
    ListenerConfig {
        bind: Some(loopback()),
        protocol: Protocol::Raw,
        ..ListenerConfig::default()
    }
}

fn closed_by(c: &Counters, label: &str) -> u64 {
    c.connections_closed_by
        .iter()
        .find(|(l, _)| *l == label)
        .map_or(0, |(_, n)| *n)
}

/// Slowloris without a token: one byte every 100 ms of a line that never
/// ends keeps resetting any idle timeout, but not `frame_timeout`; a
/// client whose lines each take a while to arrive, but complete, stays.
#[tokio::test]
async fn a_never_ending_frame_trickled_byte_by_byte_is_closed() {
    let hub = start(ListenerConfig {
        frame_timeout: Duration::from_secs(1),
        idle_timeout: Some(Duration::from_secs(30)),
        ..raw_lines()
    })
    .await;
    let receiver = hub.listener_receiver("default").expect("raw receiver");
    let mut events = hub.events();
    let mut trickler = connect(&hub).await;
    let trickler_addr = trickler.local_addr().expect("addr");
    let mut polite = connect(&hub).await;
    let started = tokio::time::Instant::now();
    let trickle = tokio::spawn(async move {
        // Stops writing once the server closed it (the write fails).
        for _ in 0..200 {
            if trickler.write_all(b"x").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    // Each line takes 600 ms to arrive whole: within the 1 s.
    for n in 0..4 {
        let line = format!("line {n}\n");
        let (head, tail) = line.as_bytes().split_at(3);
        send(&mut polite, head).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        send(&mut polite, tail).await;
    }
    let (reason, peer) = next_close(&mut events).await;
    assert_eq!(reason, CloseReason::FrameTimeout);
    assert_eq!(peer, trickler_addr);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "closed long before the trickle would have ended: {:?}",
        started.elapsed()
    );
    assert!(
        trickle.await.expect("task"),
        "the server closed the trickler"
    );
    let c = counters_until(&hub, "the close counted", |c| {
        closed_by(c, "frame_timeout") == 1
    })
    .await;
    assert_eq!(c.connections_closed, 1, "only the trickler: {c:?}");
    for n in 0..4 {
        let f = receiver.recv_timeout(PATIENCE).await.expect("polite line");
        assert_eq!(&f.payload[..], format!("line {n}").as_bytes());
    }
    assert!(still_open(&mut polite, Duration::from_millis(200)).await);
}

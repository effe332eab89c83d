//! The 1 Hz statistics on real sockets: a known load (N frames of S bytes
//! per second) is reported as N frames/s and N*S bytes/s within 5%, per
//! listener and per connection, with egress and drops alongside.

mod common;

use std::time::Duration;

use common::*;
use framehub::codec::{FramingConfig, LengthPrefix};
use framehub::{ListenerConfig, Protocol, StatsSnapshot};
use tokio::time::MissedTickBehavior;

/// Frames per second and payload bytes per frame of the load.
const N: u64 = 2000;
const S: u64 = 100;
/// Seconds of load: the first and last snapshots are partly idle, the
/// middle ones measure it.
const SECONDS: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_load_is_reported_within_five_percent() {
    let hub = start(ListenerConfig {
        name: "stage".into(),
        framing: FramingConfig::Length(LengthPrefix::default()),
        protocol: Protocol::Raw,
        ..node_listener(None)
    })
    .await;
    let receiver = hub.listener_receiver("stage").expect("raw listener");
    let drain = tokio::spawn(async move {
        let mut batch = Vec::new();
        while receiver.recv_many(&mut batch, 1024).await > 0 {
            batch.clear();
        }
    });
    // Every snapshot, as it is published (the watch channel keeps only
    // the latest).
    let mut stats = hub.stats();
    let collector = tokio::spawn(async move {
        let mut seen: Vec<StatsSnapshot> = Vec::new();
        while stats.changed().await.is_ok() {
            seen.push(stats.borrow_and_update().clone());
            if seen.len() as u64 >= SECONDS + 3 {
                break;
            }
        }
        seen
    });
    let mut s = connect(&hub).await;
    let peer = s.local_addr().expect("addr");
    let mut frame = (S as u32).to_be_bytes().to_vec();
    frame.extend(std::iter::repeat_n(b'x', S as usize));
    // N per second as 20 ticks of N/20: a late tick is made up at once
    // (Burst), so every second carries N frames on average.
    let per_tick = (N / 20) as usize;
    let burst = frame.repeat(per_tick);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    for _ in 0..SECONDS * 20 {
        tick.tick().await;
        send(&mut s, &burst).await;
        // Egress on the side: one 10-byte message per tick.
        hub.broadcast(b"0123456789").expect("framable");
    }
    let total = SECONDS * N;
    counters_until(&hub, "all frames read", |c| c.frames_received == total).await;
    let seen = tokio::time::timeout(PATIENCE, collector)
        .await
        .expect("a snapshot every second")
        .expect("collector");
    // Nothing is lost between snapshots: they add up to the whole load.
    let counted: u64 = seen.iter().map(|s| s.listeners[0].traffic.frames_in).sum();
    assert!(counted <= total);
    let rates: Vec<f64> = seen
        .iter()
        .map(|s| s.listeners[0].traffic.frames_in_per_sec)
        .collect();
    let mut busy: Vec<&StatsSnapshot> = seen
        .iter()
        .filter(|s| s.listeners[0].traffic.frames_in_per_sec > N as f64 / 2.0)
        .collect();
    eprintln!("frames/s per snapshot: {rates:?}");
    assert!(busy.len() >= 3, "rates seen: {rates:?}");
    // The first and last busy intervals may be partly idle: judge the
    // middle ones, by their median.
    busy.sort_by(|a, b| {
        let rate = |s: &StatsSnapshot| s.listeners[0].traffic.frames_in_per_sec;
        rate(a).total_cmp(&rate(b))
    });
    let median = busy[busy.len() / 2];
    let l = &median.listeners[0];
    let within = |got: f64, want: f64| (got - want).abs() <= want * 0.05;
    assert!(within(l.traffic.frames_in_per_sec, N as f64), "{l:?}");
    // Bytes read include the 4-byte prefix; frame sizes do not.
    assert!(
        within(l.traffic.bytes_in_per_sec, (N * (S + 4)) as f64),
        "{l:?}"
    );
    assert_eq!(l.traffic.mean_frame_bytes_in, S as f64);
    assert_eq!(l.traffic.max_frame_bytes_in, S);
    // Egress is one broadcast per 50 ms tick: where a tick falls on an
    // interval's edge, that interval holds 19 or 21 of them, 5% either way,
    // so the check allows one message and not a percentage.
    assert!(l.traffic.frames_out.abs_diff(20) <= 1, "{l:?}");
    assert!(
        (l.traffic.frames_out_per_sec - l.traffic.frames_out as f64 / median.interval_secs).abs()
            < 1e-6,
        "{l:?}"
    );
    assert_eq!(l.traffic.mean_frame_bytes_out, 14.0);
    assert_eq!(l.connections_open, 1);
    assert!(l.dropped.is_empty(), "{:?}", l.dropped);
    // The one connection carries the listener's whole load.
    let c = &l.connections[0];
    assert_eq!(c.peer, peer);
    assert_eq!(c.traffic.frames_in, l.traffic.frames_in);
    assert_eq!(c.traffic.bytes_in, l.traffic.bytes_in);
    assert_eq!(c.dropped, 0);
    assert!((median.interval_secs - 1.0).abs() < 0.5, "{median:?}");
    // And it prints as one JSON line.
    let json = serde_json::to_string(median).expect("serializes");
    assert!(!json.contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["listeners"][0]["listener"], "stage");
    assert!(v["listeners"][0]["frames_in_per_sec"].as_f64().is_some());
    drop(s);
    hub.shutdown().await;
    drain.await.expect("drain");
}

#[tokio::test]
async fn drops_show_by_reason_in_the_period_they_happened() {
    let hub = start(ListenerConfig {
        max_frame_bytes: framehub::ByteSize(8),
        protocol: Protocol::Raw,
        ..node_listener(None)
    })
    .await;
    let mut stats = hub.stats();
    let mut s = connect(&hub).await;
    send(&mut s, b"far too long for eight\nok\n").await;
    counters_until(&hub, "read", |c| c.frames_received >= 1).await;
    // The drop happened in the first period or the second (if the
    // sampler looked between the two frames), never later.
    let mut snapshot = None;
    for _ in 0..2 {
        tokio::time::timeout(PATIENCE, stats.changed())
            .await
            .expect("a snapshot every second")
            .expect("hub alive");
        let snap = stats.borrow_and_update().clone();
        if !snap.listeners[0].dropped.is_empty() {
            snapshot = Some(snap);
            break;
        }
    }
    let snapshot = snapshot.expect("the drop shows in a snapshot");
    let l = &snapshot.listeners[0];
    assert_eq!(l.dropped.get("oversize"), Some(&1));
    assert_eq!(l.connections[0].dropped, 1);
}

//! The seed systems' own clients, as they behave, against the default
//! configuration: tracker-host's radar simulator in `--heartbeat-only`
//! mode, and its failed logins.

mod common;

use std::time::Duration;

use common::*;
use framehub::DropReason;
use tokio::io::AsyncReadExt;

/// tracker-host's simulator period: its first heartbeat comes this long
/// after it connects.
const SEED_HEARTBEAT_PERIOD: Duration = Duration::from_secs(10);

/// A node that connects, says nothing, and speaks first at its heartbeat
/// period (plus a little: the simulator's timer is not exact) gets in
/// under the default `auth.timeout`, and shows up as healthy.
#[tokio::test]
async fn a_heartbeat_only_node_speaking_first_after_its_period_gets_in() {
    let hub = start(node_listener(Some("secret"))).await;
    let radar = hub.receiver("radar7");
    let mut s = connect(&hub).await;
    tokio::time::sleep(SEED_HEARTBEAT_PERIOD + Duration::from_millis(500)).await;
    send_line(&mut s, &heartbeat("radar7", Some("secret"))).await;
    eventually("radar7 healthy", || {
        let healthy = radar.is_healthy();
        async move { healthy }
    })
    .await;
    // Still open, and its next heartbeats keep it so.
    send_line(&mut s, &heartbeat("radar7", None)).await;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(300), s.read(&mut byte)).await;
    assert!(read.is_err(), "the connection stays open: {read:?}");
    let c = hub.counters();
    assert_eq!(c.auth_failures, 0);
    assert_eq!(c.heartbeats, 2);
}

/// Every frame read is delivered or counted under a reason: the first
/// message of a failed login is a dropped frame (`auth_failed`).
#[tokio::test]
async fn failed_logins_are_counted_as_dropped_frames() {
    let hub = start(node_listener(Some("secret"))).await;
    for token in [Some("guess"), None] {
        let mut s = connect(&hub).await;
        send_line(&mut s, &detection("radar3", token, 1)).await;
        expect_closed(&mut s).await;
    }
    let c = counters_until(&hub, "two auth failures", |c| c.auth_failures == 2).await;
    assert_eq!(c.frames_received, 2);
    assert_eq!(c.frames_delivered, 0);
    assert_eq!(c.dropped(DropReason::AuthFailed), 2);
    assert_eq!(c.dropped_total(), 2, "{c:?}");
}

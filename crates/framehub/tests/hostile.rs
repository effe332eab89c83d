//! Hostile and odd input against a real socket: deep nesting, oversized
//! first messages, invalid UTF-8, zero-length frames in every framing, and
//! every raw framing end to end with an independent encoder.

mod common;

use std::time::Duration;

use common::*;
use framehub::codec::{FramingConfig, LengthPrefix, SpacePacketConfig};
use framehub::{AuthFailure, CloseReason, DropReason, ListenerConfig, Protocol, Receiver};
use spacepackets::{CcsdsPacketCreator, PacketId, PacketSequenceControl, SpHeader};
use tokio::io::AsyncWriteExt;

fn raw_listener(framing: FramingConfig) -> ListenerConfig {
    ListenerConfig {
        bind: Some(loopback()),
        protocol: Protocol::Raw,
        framing,
        ..ListenerConfig::default()
    }
}

async fn frames(r: &Receiver, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            r.recv_timeout(PATIENCE)
                .await
                .expect("frame")
                .payload
                .to_vec(),
        );
    }
    out
}

#[tokio::test]
async fn json_nested_100000_levels_is_skipped_without_crashing() {
    let hub = start(node_listener(Some("t"))).await;
    let r = hub.receiver("radar3");
    let mut s = connect(&hub).await;
    send_line(&mut s, &heartbeat("radar3", Some("t"))).await;
    let deep_array = format!(
        r#"{{"node_id":"radar3","x":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let deep_object = format!(
        r#"{{"node_id":"radar3","x":{}1{}}}"#,
        "{\"a\":".repeat(100_000),
        "}".repeat(100_000)
    );
    send_line(&mut s, &deep_array).await;
    send_line(&mut s, &deep_object).await;
    send_line(&mut s, &detection("radar3", None, 1)).await;
    let f = r
        .recv_timeout(PATIENCE)
        .await
        .expect("the valid frame after the deep ones");
    assert!(
        f.payload
            .starts_with(b"{\"node_id\":\"radar3\",\"timestamp\":1")
    );
    assert_eq!(hub.counters().dropped(DropReason::TooDeep), 2);
    assert!(still_open(&mut s, Duration::from_millis(50)).await);
}

#[tokio::test]
async fn unauthenticated_first_message_over_64k_closes_the_connection() {
    let hub = start(node_listener(Some("t"))).await;
    let mut events = hub.events();
    let mut s = connect(&hub).await;
    // No newline needed: the server stops at 64 KiB + 1 without one.
    let big = format!(
        r#"{{"node_id":"radar3","token":"t","pad":"{}"#,
        "x".repeat(70 << 10)
    );
    let _ = s.write_all(big.as_bytes()).await;
    expect_closed(&mut s).await;
    let c = counters_until(&hub, "auth failure", |c| c.auth_failures == 1).await;
    assert_eq!(c.frames_delivered, 0);
    assert_eq!(
        next_close(&mut events).await.0,
        CloseReason::AuthFailed(AuthFailure::FirstMessageTooLarge)
    );
    // An authenticated connection may send frames that large.
    let r = hub.receiver("radar3");
    let mut ok = connect(&hub).await;
    send_line(&mut ok, &heartbeat("radar3", Some("t"))).await;
    send_line(
        &mut ok,
        &format!(r#"{{"node_id":"radar3","pad":"{}"}}"#, "x".repeat(70 << 10)),
    )
    .await;
    assert_eq!(
        r.recv_timeout(PATIENCE)
            .await
            .expect("large frame")
            .payload
            .len(),
        (70 << 10) + r#"{"node_id":"radar3","pad":""}"#.len()
    );
}

#[tokio::test]
async fn invalid_utf8_is_skipped_and_counted() {
    let hub = start(node_listener(None)).await;
    let r = hub.receiver("radar3");
    let mut s = connect(&hub).await;
    send(&mut s, b"{\"node_id\":\"radar3\",\"x\":\"\xff\xfe\"}\n").await;
    send(&mut s, b"{\"node_id\":\"radar3\",\"x\xc3\":1}\n").await;
    send_line(&mut s, &detection("radar3", None, 1)).await;
    let f = r.recv_timeout(PATIENCE).await.expect("valid frame");
    assert!(std::str::from_utf8(&f.payload).is_ok());
    assert_eq!(hub.counters().dropped(DropReason::InvalidUtf8), 2);
    assert!(r.try_recv().is_err());
}

#[tokio::test]
async fn invalid_json_and_missing_node_id_are_skipped_and_counted() {
    let hub = start(node_listener(None)).await;
    let r = hub.receiver("radar3");
    let mut s = connect(&hub).await;
    send_line(&mut s, &detection("radar3", None, 1)).await;
    send_line(&mut s, "{\"node_id\":\"radar3\",").await;
    send_line(&mut s, "[1,2,3]").await;
    send_line(&mut s, "{\"timestamp\":5}").await;
    send_line(&mut s, &detection("radar3", None, 2)).await;
    assert_eq!(frames(&r, 2).await.len(), 2);
    let c = hub.counters();
    assert_eq!(c.dropped(DropReason::InvalidJson), 2);
    assert_eq!(c.dropped(DropReason::MissingNodeId), 1);
}

#[tokio::test]
async fn zero_length_lines_node_protocol() {
    let hub = start(node_listener(None)).await;
    let r = hub.receiver("radar3");
    let mut s = connect(&hub).await;
    send(&mut s, b"\n\r\n").await;
    send_line(&mut s, &detection("radar3", None, 1)).await;
    r.recv_timeout(PATIENCE)
        .await
        .expect("frame after empty lines");
    assert_eq!(hub.counters().dropped(DropReason::InvalidJson), 2);
}

#[tokio::test]
async fn zero_length_lines_raw() {
    let hub = start(raw_listener(FramingConfig::Lines)).await;
    let r = hub.listener_receiver("default").expect("raw receiver");
    let mut s = connect(&hub).await;
    send(&mut s, b"\n\r\nabc\n").await;
    assert_eq!(
        frames(&r, 3).await,
        [b"".to_vec(), b"".to_vec(), b"abc".to_vec()]
    );
    assert!(r.try_recv().is_err());
}

#[tokio::test]
async fn length_frames_ninjatcp_prefix_and_zero_length() {
    let hub = start(raw_listener(FramingConfig::Length(LengthPrefix::default()))).await;
    let r = hub.listener_receiver("default").expect("raw receiver");
    let mut s = connect(&hub).await;
    // NinjaTCP's framing, written by hand: 4-byte big-endian length.
    let mut wire = Vec::new();
    for msg in [&b""[..], b"hello", &[0u8; 1000][..]] {
        wire.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        wire.extend_from_slice(msg);
    }
    send(&mut s, &wire).await;
    assert_eq!(
        frames(&r, 3).await,
        [b"".to_vec(), b"hello".to_vec(), vec![0u8; 1000]]
    );
}

#[tokio::test]
async fn cobs_frames_from_the_cobs_crate_and_zero_length() {
    let hub = start(raw_listener(FramingConfig::Cobs)).await;
    let r = hub.listener_receiver("default").expect("raw receiver");
    let mut s = connect(&hub).await;
    let mut wire = vec![0u8, 0u8]; // empty delimiter runs: no frame
    for msg in [&b"tc\x00with\x00zeros"[..], b"", b"x"] {
        wire.extend_from_slice(&cobs::encode_vec(msg));
        wire.push(0);
    }
    wire.extend_from_slice(&[0x05, 0x00]); // does not decode: dropped
    wire.extend_from_slice(&cobs::encode_vec(b"after"));
    wire.push(0);
    send(&mut s, &wire).await;
    assert_eq!(
        frames(&r, 4).await,
        [
            b"tc\x00with\x00zeros".to_vec(),
            b"".to_vec(),
            b"x".to_vec(),
            b"after".to_vec()
        ]
    );
    assert_eq!(hub.counters().dropped(DropReason::InvalidCobs), 1);
}

fn space_packet(packet_id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let header = SpHeader::new(
        PacketId::from(packet_id),
        PacketSequenceControl::from(seq),
        0,
    );
    let packet_type = spacepackets::packet_type_in_raw_packet_id(packet_id);
    CcsdsPacketCreator::new(header, packet_type, data, None)
        .expect("packet")
        .to_vec()
}

#[tokio::test]
async fn space_packets_from_the_spacepackets_crate_with_allowlist() {
    let hub = start(raw_listener(FramingConfig::SpacePacket(
        SpacePacketConfig {
            allowed_packet_ids: Some(vec![0x1801]),
        },
    )))
    .await;
    let r = hub.listener_receiver("default").expect("raw receiver");
    let mut s = connect(&hub).await;
    let allowed = space_packet(0x1801, 0xC001, b"ping");
    let unknown = space_packet(0x1802, 0xC002, b"nope");
    let allowed2 = space_packet(0x1801, 0xC003, &[7u8; 300]);
    let mut wire = allowed.clone();
    wire.extend_from_slice(&unknown);
    wire.push(0xE0); // invalid header byte (version 7): resync
    wire.extend_from_slice(&allowed2);
    send(&mut s, &wire).await;
    assert_eq!(frames(&r, 2).await, [allowed, allowed2]);
    let c = hub.counters();
    assert_eq!(c.dropped(DropReason::UnknownPacketId), 1);
    assert_eq!(c.dropped(DropReason::InvalidHeader), 1);
}

#[tokio::test]
async fn chunk_each_read_is_a_frame() {
    let hub = start(raw_listener(FramingConfig::Chunk)).await;
    let r = hub.listener_receiver("default").expect("raw receiver");
    let mut s = connect(&hub).await;
    send(&mut s, b"first packet").await;
    assert_eq!(frames(&r, 1).await, [b"first packet".to_vec()]);
    send(&mut s, b"second").await;
    assert_eq!(frames(&r, 1).await, [b"second".to_vec()]);
    // A zero-length read is the end of the stream, not a frame.
    drop(s);
    counters_until(&hub, "closed", |c| c.connections_closed == 1).await;
    assert!(r.try_recv().is_err());
}

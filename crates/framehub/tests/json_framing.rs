//! The `json` framing through a real listener: objects written with no delimiter (one per
//! write, several per write, one split over many writes), pretty-printed documents (LinuxIT's
//! CSV sender writes one `indent=4` document per connection), garbage, oversize and deep values
//! skipped and counted, and the node protocol on `json`.

mod common;

use std::time::Duration;

use common::*;
use framehub::codec::{FramingConfig, JsonConfig};
use framehub::{ByteSize, DropReason, ListenerConfig, Protocol, Receiver};
use serde_json::json;

fn json_listener(protocol: Protocol) -> ListenerConfig {
    ListenerConfig {
        bind: Some(loopback()),
        protocol,
        framing: FramingConfig::Json(JsonConfig::default()),
        ..ListenerConfig::default()
    }
}

async fn frames(r: &Receiver, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let f = r.recv_timeout(PATIENCE).await.expect("frame");
        out.push(String::from_utf8(f.payload.to_vec()).expect("utf-8"));
    }
    out
}

/// Lets the previous write arrive as a read of its own.
async fn pause() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

#[tokio::test]
async fn objects_without_delimiters_pretty_documents_and_skips() {
    let hub = start(ListenerConfig {
        max_frame_bytes: ByteSize(256),
        max_json_depth: 8,
        ..json_listener(Protocol::Raw)
    })
    .await;
    let r = hub.listener_receiver("default").expect("raw receiver");
    let mut s = connect(&hub).await;

    // LinuxIT's TCPClient: one `json.dumps` object per write, no newline.
    let a = json!({"cmd": 1, "request_data": ["test.jpg"]}).to_string();
    let b = json!({"cmd": 34, "request_data": null}).to_string();
    send(&mut s, a.as_bytes()).await;
    assert_eq!(frames(&r, 1).await, [a.as_str()]);
    pause().await;
    send(&mut s, b.as_bytes()).await;
    assert_eq!(frames(&r, 1).await, [b.as_str()]);

    // Several in one write, back to back and one per line.
    send(&mut s, format!("{a}{b}\n{a}\r\n").as_bytes()).await;
    assert_eq!(frames(&r, 3).await, [a.clone(), b.clone(), a.clone()]);

    // One object split over many writes.
    for piece in a.as_bytes().chunks(7) {
        send(&mut s, piece).await;
        pause().await;
    }
    assert_eq!(frames(&r, 1).await, [a.as_str()]);

    // LinuxIT's CSV sender: `json.dumps(record, ensure_ascii=False, indent=4)`.
    let record = json!({
        "id": "extctrl",
        "cmd": "res_ext_data",
        "data": [{"slave_id": "1", "ext_pos": "37.5665,126.9780", "온도": "21.5"}],
        "timestamp": "2025-01-01 12:00:00"
    });
    let pretty = serde_json::to_string_pretty(&record).expect("json");
    assert!(pretty.contains("\n  "), "multi-line");
    send(&mut s, pretty.as_bytes()).await;
    assert_eq!(frames(&r, 1).await, [pretty.as_str()]);

    // Garbage, an invalid value, an oversize and a too deep one: each skipped and counted,
    // and the stream goes on.
    let big = json!({"pad": "x".repeat(300)}).to_string();
    let deep = format!("{}1{}", "[".repeat(20), "]".repeat(20));
    send(
        &mut s,
        format!("}} oops {a} {{\"cmd\": 0x01}} {big} {deep} {b}").as_bytes(),
    )
    .await;
    assert_eq!(frames(&r, 2).await, [a.clone(), b.clone()]);
    let c = hub.counters();
    assert_eq!(c.dropped(DropReason::InvalidJson), 2);
    assert_eq!(c.dropped(DropReason::Oversize), 1);
    assert_eq!(c.dropped(DropReason::TooDeep), 1);

    // A second connection, closed after one pretty document, as the CSV sender does: one
    // record per document.
    let mut csv = connect(&hub).await;
    send(&mut csv, pretty.as_bytes()).await;
    drop(csv);
    assert_eq!(frames(&r, 1).await, [pretty]);
    assert!(r.try_recv().is_err());
}

#[tokio::test]
async fn node_protocol_on_json_framing() {
    let hub = start(ListenerConfig {
        framing: FramingConfig::Json(JsonConfig::default()),
        ..node_listener(Some("t"))
    })
    .await;
    let r = hub.receiver("radar3");
    let mut s = connect(&hub).await;
    // The first message carries the token; no newlines anywhere.
    let first = heartbeat("radar3", Some("t"));
    let d1 = detection("radar3", None, 1);
    let d2 = detection("radar3", None, 2);
    send(&mut s, format!("{first}{d1}").as_bytes()).await;
    pause().await;
    send(&mut s, d2.as_bytes()).await;
    let got: Vec<String> = frames(&r, 2).await;
    assert_eq!(got, [d1, d2]);
    let c = counters_until(&hub, "heartbeat counted", |c| c.heartbeats == 1).await;
    assert_eq!(c.dropped_total(), 0);
}

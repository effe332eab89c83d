//! `framehub bench jetstream`, the reference publisher of
//! `bench/nats_sink.sh`: against a nats-server started here, every frame
//! acknowledged and stored once, with the headers the nats sink sends, read
//! back by the tests' own nats-py reader.

mod common;
mod nats_support;

use std::collections::HashSet;
use std::process::Command;

use common::temp_dir;
use nats_support::{NatsServer, dump_stream};
use serde_json::Value;

fn bench(nats: &NatsServer, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_framehub"))
        .args([
            "bench",
            "jetstream",
            "--to",
            &nats.addr().to_string(),
            "--json",
        ])
        .args(args)
        .output()
        .expect("run framehub bench");
    assert!(
        out.status.success(),
        "framehub bench jetstream failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON report")
}

#[test]
fn the_reference_publisher_stores_every_frame_once_with_the_sinks_headers() {
    // Fewer publisher tasks than connections: each takes its share in turn.
    // A server each: both streams would take the subjects framehub.bench.>.
    for (publishers, stream) in [("0", "REF_EACH"), ("2", "REF_SHARED")] {
        let dir = temp_dir(&format!("bench-jetstream-{publishers}"));
        let nats = NatsServer::start(&dir);
        let report = bench(
            &nats,
            &[
                "--stream",
                stream,
                "--conns",
                "5",
                "--frames",
                "300",
                "--size",
                "200",
                "--max-acks-in-flight",
                "64",
                "--publishers",
                publishers,
            ],
        );
        assert_eq!(report["frames_sent"], 1500, "{report}");
        assert_eq!(report["frames_acked"], 1500, "{report}");
        assert_eq!(report["stored"], 1500, "{report}");
        assert_eq!(report["errors"], 0, "{report}");
        assert_eq!(report["duplicates"], 0, "{report}");
        assert_eq!(report["max_acks_in_flight"], 64, "{report}");
        assert!(report["acked_fps"].as_f64().expect("acked_fps") > 0.0);

        let messages = dump_stream(&nats.url(), stream);
        assert_eq!(messages.len(), 1500);
        let mut ids = HashSet::new();
        let mut per_node = std::collections::BTreeMap::<String, usize>::new();
        for m in &messages {
            let h = &m["headers"];
            for name in [
                "Framehub-Received-At",
                "Framehub-Listener",
                "Framehub-Node",
                "Framehub-Conn",
                "Framehub-Peer",
                "Framehub-Instance",
            ] {
                assert!(h[name].is_string(), "header {name} missing: {m}");
            }
            let text = m["data"].as_str().expect("data");
            let data: Value = serde_json::from_str(text).expect("JSON frame");
            let node = data["node_id"].as_str().expect("node_id");
            // The frame the TCP load generator sends for this node and time.
            let ts = data["timestamp"].as_u64().expect("timestamp");
            assert_eq!(
                text.as_bytes(),
                framehub_bench::frames::detection(node, ts, 200),
                "{m}"
            );
            assert_eq!(h["Framehub-Node"], node);
            assert_eq!(m["subject"], format!("framehub.bench.{node}").as_str());
            assert!(
                ids.insert(h["Nats-Msg-Id"].as_str().expect("Nats-Msg-Id").to_owned()),
                "a message id twice: {m}"
            );
            *per_node.entry(node.to_owned()).or_default() += 1;
        }
        assert_eq!(per_node.len(), 5, "{per_node:?}");
        assert!(per_node.values().all(|n| *n == 300), "{per_node:?}");
    }
}

#[test]
fn without_headers_the_reference_publishes_the_bare_frames() {
    let dir = temp_dir("bench-jetstream-bare");
    let nats = NatsServer::start(&dir);
    let report = bench(&nats, &["--conns", "2", "--frames", "100", "--no-headers"]);
    assert_eq!(report["stored"], 200, "{report}");
    assert_eq!(report["headers"], false, "{report}");
    let messages = dump_stream(&nats.url(), "FRAMEHUB_BENCH");
    assert_eq!(messages.len(), 200);
    assert!(
        messages
            .iter()
            .all(|m| m["headers"].as_object().is_none_or(|h| h.is_empty())),
        "headers found: {}",
        messages[0]
    );
}

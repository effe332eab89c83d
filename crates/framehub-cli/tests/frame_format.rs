//! `format = "frame"` (issue 16): a file or stdout sink writes each frame
//! as received, one per line, in each connection's order, beside sinks that
//! write records of the same frames; a `json` framing's multi-line value
//! comes out on one line; binary framings and acknowledged delivery are
//! refused at config check. Real `framehub serve` processes, real sockets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;
use serde_json::Value;

#[test]
fn a_frame_sink_writes_each_frame_as_received_in_order_beside_a_record_sink() {
    let dir = temp_dir("frame-format");
    let frames = dir.join("frames.ndjson");
    let records_path = dir.join("records.ndjson");
    let mut daemon = Daemon::with_config(
        &dir,
        &format!(
            r#"
[[listener]]
name = "radar"
bind = "127.0.0.1:0"
[listener.auth]
token = "secret"

[[sink]]
type = "file"
name = "frames"
path = "{}"
format = "frame"

[[sink]]
type = "file"
name = "records"
path = "{}"
"#,
            frames.display(),
            records_path.display()
        ),
        &[],
    );
    let addr = daemon.listener_addr("radar");
    // Several connections at once, enough frames for several batches and
    // chunks per connection.
    let nodes: Vec<String> = (0..4).map(|n| format!("radar{n}")).collect();
    let mut conns = Vec::new();
    for node in &nodes {
        let mut s = TcpStream::connect(addr).expect("connect");
        let mut all = String::new();
        for ts in 0..5000u64 {
            all.push_str(&detection(node, (ts == 0).then_some("secret"), ts));
        }
        s.write_all(all.as_bytes()).expect("write");
        conns.push(s);
    }
    drop(conns);
    eventually("every frame in both files", || {
        line_count(&frames) == 20_000 && line_count(&records_path) == 20_000
    });
    assert_eq!(daemon.terminate(), 0);
    let stopped = daemon.wait_log("stopped; every delivered frame written");
    assert_eq!(stopped["written"], 20_000);

    let text = std::fs::read_to_string(&frames).expect("frame file");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 20_000);
    // Each node's lines are its frames as sent (the token cut out, as in a
    // record), byte for byte, in the order sent.
    for node in &nodes {
        let got: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.contains(&format!("\"node_id\":\"{node}\"")))
            .collect();
        let sent: Vec<String> = (0..5000u64)
            .map(|ts| detection(node, None, ts).trim_end().to_owned())
            .collect();
        assert_eq!(got.len(), sent.len(), "{node}");
        for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
            assert_eq!(g, s, "{node}: frame {i} not as sent, or out of order");
        }
    }
    // The record sink holds the same frames in the same order: both come
    // from the same chunks.
    let recs = records(&records_path);
    assert_eq!(recs.len(), lines.len());
    for (r, l) in recs.iter().zip(&lines) {
        let frame: Value = serde_json::from_str(l).expect("a frame line is JSON");
        assert_eq!(r["frame"], frame);
        assert_eq!(r["node"], frame["node_id"]);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_json_framing_value_over_several_lines_comes_out_on_one_line_on_stdout() {
    let dir = temp_dir("frame-format-json");
    let mut daemon = Daemon::with_config(
        &dir,
        r#"
[[listener]]
name = "json"
bind = "127.0.0.1:0"
framing = "json"
protocol = "raw"
[listener.queue]
dedup = false

[[sink]]
type = "stdout"
format = "frame"
"#,
        &[],
    );
    let addr = daemon.listener_addr("json");
    let sent = [
        "{\"a\":\n  1,\n  \"b\": [1,\r\n2],\n  \"s\": \"x\\ny\"\n}",
        "{\"c\":\"compact\"}",
        "[\n]",
    ];
    let mut s = TcpStream::connect(addr).expect("connect");
    for v in sent {
        s.write_all(v.as_bytes()).expect("write");
    }
    drop(s);
    let mut stdout = daemon.child.stdout.take().expect("stdout");
    // Reads until the three lines are there (the daemon keeps stdout open).
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.iter().filter(|&&b| b == b'\n').count() < sent.len() {
        let n = stdout.read(&mut buf).expect("read stdout");
        assert!(
            n > 0,
            "stdout ended early: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(daemon.terminate(), 0);
    let text = String::from_utf8(out).expect("utf8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), sent.len(), "{text}");
    for (line, value) in lines.iter().zip(sent) {
        // Byte for byte but for the line breaks, which became spaces (an
        // escaped `\n` inside a string is two bytes, not a line break, and
        // stays).
        assert_eq!(*line, value.replace('\n', " "));
        let a: Value = serde_json::from_str(line).expect("one JSON value per line");
        let b: Value = serde_json::from_str(value).expect("sent JSON");
        assert_eq!(a, b, "the same JSON value");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn format_frame_is_refused_with_a_binary_framing_and_with_acknowledged_delivery() {
    let dir = temp_dir("frame-format-check");
    let cfg = dir.join("frame.toml");
    let binary = |framing: &str, sink: &str| {
        format!(
            "[[listener]]\nframing = \"{framing}\"\nprotocol = \"raw\"\n\n[[sink]]\n{sink}format = \"frame\"\n"
        )
    };
    for (text, needle) in [
        (
            binary("length", "type = \"file\"\npath = \"f\"\n"),
            "listener \"default\" has binary frames (framing length)",
        ),
        (
            binary("cobs", "type = \"stdout\"\n"),
            "has binary frames (framing cobs)",
        ),
        (
            binary("chunk", "type = \"file\"\npath = \"f\"\n"),
            "has binary frames (framing chunk)",
        ),
        (
            "[[listener]]\n[listener.queue]\noverflow = \"block\"\n[listener.ack]\nmode = \"durable\"\n\n[[sink]]\ntype = \"file\"\npath = \"f\"\nformat = \"frame\"\n".to_owned(),
            "leaves out each record's node and seq",
        ),
    ] {
        std::fs::write(&cfg, &text).expect("write");
        let out = framehub()
            .arg("check-config")
            .arg(&cfg)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(64), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("sink[0].format"), "key not named: {err}");
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
    // Text framings are fine, and so is a record sink beside a binary one.
    for text in [
        binary("json", "type = \"file\"\npath = \"f\"\n"),
        "[[listener]]\n\n[[sink]]\ntype = \"stdout\"\nformat = \"frame\"\n".to_owned(),
        "[[listener]]\nframing = \"length\"\nprotocol = \"raw\"\n\n[[sink]]\ntype = \"file\"\npath = \"f\"\nformat = \"record\"\n".to_owned(),
    ] {
        std::fs::write(&cfg, &text).expect("write");
        let out = framehub()
            .arg("check-config")
            .arg(&cfg)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{text}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

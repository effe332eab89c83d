//! `framehub serve` as an operator runs it, as real processes on real
//! sockets: several listeners into one file sink, `/metrics` parsed as
//! Prometheus text, `/api/nodes` and `/api/connections`, SIGTERM during
//! ingest with `fsync = "always"`, failing sinks on `/healthz`, a tap
//! subscriber that never reads, and rate-limited warnings.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use prometheus_parse::{Scrape, Value as Sample};
use serde_json::Value;

/// A `/metrics` scrape, parsed by a Prometheus text-format parser.
struct Metrics {
    scrape: Scrape,
}

impl Metrics {
    fn scrape(admin: SocketAddr) -> Metrics {
        let (status, body) = http_get(admin, "/metrics");
        assert_eq!(status, 200);
        let lines: Vec<std::io::Result<String>> = body.lines().map(|l| Ok(l.to_owned())).collect();
        let scrape = Scrape::parse(lines.into_iter()).expect("Prometheus text format");
        // The parser skips lines it cannot read: every sample line must
        // have become a sample. A histogram's `_bucket` lines become one
        // sample per series (its labels but `le`, which comes last).
        let mut series = std::collections::HashSet::new();
        let sample_lines = body
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter(|l| match l.split_once("_bucket{") {
                Some(_) => series.insert(l.split("le=\"").next().unwrap_or(l)),
                None => true,
            })
            .count();
        assert_eq!(
            scrape.samples.len(),
            sample_lines,
            "unparsed lines in:\n{body}"
        );
        Metrics { scrape }
    }

    /// The value of `name` whose labels include all of `labels`; summed
    /// when several samples match.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut found = false;
        let mut sum = 0.0;
        for s in &self.scrape.samples {
            if s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)) {
                found = true;
                sum += match s.value {
                    Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => v,
                    _ => panic!("{name}: not a counter or gauge"),
                };
            }
        }
        assert!(found, "no sample {name} {labels:?}");
        sum
    }

    fn kind(&self, name: &str) -> &'static str {
        let s = self
            .scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("no {name}"));
        match s.value {
            Sample::Counter(_) => "counter",
            Sample::Gauge(_) => "gauge",
            _ => "other",
        }
    }
}

fn length_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

#[test]
fn several_listeners_reach_the_file_and_metrics_count_a_known_load() {
    let dir = temp_dir("metrics");
    let out = dir.join("frames.ndjson");
    let mut daemon = Daemon::with_config(
        &dir,
        &format!(
            r#"
[[listener]]
name = "radar"
bind = "127.0.0.1:0"
[listener.auth]
token = "secret"

[[listener]]
name = "ground"
bind = "127.0.0.1:0"
framing = "length"
protocol = "raw"
[listener.queue]
dedup = false

[[sink]]
type = "file"
path = "{}"
"#,
            out.display()
        ),
        &[],
    );
    let radar = daemon.listener_addr("radar");
    let ground = daemon.listener_addr("ground");
    let admin = daemon.admin();

    let before = Metrics::scrape(admin);
    // Every family has help text and a type; labels are never per peer.
    // The parser gives a histogram's `_sum` and `_count` lines samples of
    // their own; their HELP is the histogram's.
    let histograms: Vec<&str> = before
        .scrape
        .samples
        .iter()
        .filter(|s| matches!(s.value, Sample::Histogram(_)))
        .map(|s| s.metric.as_str())
        .collect();
    for s in &before.scrape.samples {
        let family = ["_sum", "_count"]
            .iter()
            .filter_map(|suffix| s.metric.strip_suffix(suffix))
            .find(|base| histograms.contains(base))
            .unwrap_or(&s.metric);
        assert!(
            before
                .scrape
                .docs
                .get(family)
                .is_some_and(|d| !d.is_empty()),
            "{} has no HELP",
            s.metric
        );
        for label in s.labels.keys() {
            assert!(
                ["listener", "reason", "result", "sink", "type", "version"]
                    .contains(&label.as_str()),
                "{} has label {label}",
                s.metric
            );
        }
    }
    assert_eq!(before.kind("framehub_frames_received_total"), "counter");
    assert_eq!(before.kind("framehub_connections_open"), "gauge");
    assert_eq!(
        before.get("framehub_frames_received_total", &[("listener", "radar")]),
        0.0
    );
    assert_eq!(before.get("framehub_listener_up", &[]), 2.0);

    // The known load: 3 nodes x 100 frames, 2 invalid lines, 1 bad token on
    // "radar"; 50 binary frames on "ground".
    let mut radar_bytes = 0;
    let mut conns = Vec::new();
    for n in 0..3 {
        let mut s = TcpStream::connect(radar).expect("connect");
        let mut all = String::new();
        for ts in 0..100u64 {
            all.push_str(&detection(
                &format!("radar{n}"),
                (ts == 0).then_some("secret"),
                ts,
            ));
        }
        if n == 0 {
            all.push_str("not json\n{\"node_id\":\n");
        }
        radar_bytes += all.len();
        s.write_all(all.as_bytes()).expect("write");
        conns.push(s);
    }
    let mut intruder = TcpStream::connect(radar).expect("connect");
    let bad = detection("radar9", Some("wrong"), 1);
    radar_bytes += bad.len();
    intruder.write_all(bad.as_bytes()).expect("write");
    let mut g = TcpStream::connect(ground).expect("connect");
    let mut ground_bytes = 0;
    for i in 0..50u8 {
        let frame = length_frame(&[0, 1, i, 0xff]);
        ground_bytes += frame.len();
        g.write_all(&frame).expect("write");
    }

    eventually("every record in the file", || line_count(&out) == 350);
    let m = Metrics::scrape(admin);
    let radar_l = [("listener", "radar")];
    let ground_l = [("listener", "ground")];
    assert_eq!(m.get("framehub_frames_received_total", &radar_l), 303.0);
    assert_eq!(m.get("framehub_frames_delivered_total", &radar_l), 300.0);
    assert_eq!(
        m.get("framehub_received_bytes_total", &radar_l),
        radar_bytes as f64
    );
    assert_eq!(m.get("framehub_auth_failures_total", &radar_l), 1.0);
    assert_eq!(
        m.get(
            "framehub_frames_dropped_total",
            &[("listener", "radar"), ("reason", "invalid_json")]
        ),
        2.0
    );
    // The failed login's frame is counted too: received = delivered + dropped.
    assert_eq!(
        m.get(
            "framehub_frames_dropped_total",
            &[("listener", "radar"), ("reason", "auth_failed")]
        ),
        1.0
    );
    assert_eq!(m.get("framehub_frames_dropped_total", &[]), 3.0);
    assert_eq!(
        m.get(
            "framehub_connections_closed_total",
            &[("listener", "radar"), ("reason", "auth_failed")]
        ),
        1.0
    );
    assert_eq!(m.get("framehub_connections_open", &radar_l), 3.0);
    assert_eq!(m.get("framehub_connections_accepted_total", &radar_l), 4.0);
    assert_eq!(m.get("framehub_frames_received_total", &ground_l), 50.0);
    assert_eq!(m.get("framehub_frames_delivered_total", &ground_l), 50.0);
    assert_eq!(
        m.get("framehub_received_bytes_total", &ground_l),
        ground_bytes as f64
    );
    assert_eq!(m.get("framehub_connections_open", &ground_l), 1.0);
    assert_eq!(m.get("framehub_nodes", &[]), 3.0);
    assert_eq!(m.get("framehub_nodes_connected", &[]), 3.0);
    assert_eq!(m.get("framehub_queue_depth_frames", &[]), 0.0);
    // The file sink of the config is named after its type.
    let file_sink = [("sink", "file")];
    assert_eq!(
        m.get("framehub_sink_records_written_total", &file_sink),
        350.0
    );
    assert_eq!(m.get("framehub_sink_records_failed_total", &file_sink), 0.0);
    assert_eq!(m.get("framehub_sink_up", &file_sink), 1.0);

    // Both listeners' frames are in the one file, as NDJSON records.
    let recs = records(&out);
    let by_listener = |name: &str| recs.iter().filter(|r| r["listener"] == name).count();
    assert_eq!(by_listener("radar"), 300);
    assert_eq!(by_listener("ground"), 50);
    let binary = recs
        .iter()
        .find(|r| r["listener"] == "ground")
        .expect("a ground record");
    assert_eq!(binary["node"], Value::Null);
    assert!(binary["frame_b64"].is_string(), "{binary}");

    drop(conns);
    drop(g);
    assert_eq!(daemon.terminate(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn api_lists_nodes_and_connections_sorted_and_bounded() {
    let mut daemon = Daemon::start(&["--listen", "127.0.0.1:0", "--out", "/dev/null"]);
    let addr = daemon.addr();
    let admin = daemon.admin();
    let mut big = TcpStream::connect(addr).expect("connect");
    let mut small = TcpStream::connect(addr).expect("connect");
    let idle = TcpStream::connect(addr).expect("connect");
    for ts in 0..200 {
        big.write_all(detection("radar1", None, ts).as_bytes())
            .expect("write");
    }
    for ts in 0..20 {
        small
            .write_all(detection("radar2", None, ts).as_bytes())
            .expect("write");
    }
    eventually("frames counted", || {
        let nodes = get_json(admin, "/api/nodes");
        let frames = |name: &str| {
            nodes["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .find(|n| n["name"] == name)
                .map(|n| n["frames"].as_u64().expect("frames"))
        };
        frames("radar1") == Some(200) && frames("radar2") == Some(20)
    });
    let nodes = get_json(admin, "/api/nodes");
    let radar1 = &nodes["nodes"][0];
    assert_eq!(radar1["name"], "radar1");
    assert_eq!(radar1["connected"], true);
    assert_eq!(radar1["connections"], 1);
    assert_eq!(radar1["peer"], big.local_addr().expect("addr").to_string());
    assert!(
        radar1["connected_since"]
            .as_str()
            .expect("since")
            .ends_with('Z')
    );
    assert!(
        radar1["last_frame_at"]
            .as_str()
            .expect("last frame")
            .ends_with('Z')
    );
    assert_eq!(radar1["dropped"], 0);
    assert_eq!(radar1["queue_depth"], 0);
    assert!(radar1["frames_per_second"].as_f64().expect("rate") >= 0.0);

    let all = get_json(admin, "/api/connections");
    assert_eq!(all["total"], 3);
    let conns = all["connections"].as_array().expect("connections");
    assert_eq!(conns.len(), 3);
    let ids: Vec<u64> = conns
        .iter()
        .map(|c| c["id"].as_u64().expect("id"))
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "by id by default: {ids:?}"
    );
    for c in conns {
        for key in [
            "listener",
            "peer",
            "since",
            "idle_seconds",
            "bytes_in",
            "frames_in",
            "bytes_out",
            "frames_out",
            "egress_pending",
        ] {
            assert!(!c[key].is_null(), "{key} missing in {c}");
        }
    }
    let top = get_json(admin, "/api/connections?sort=-bytes_in&limit=1");
    assert_eq!(top["total"], 3);
    assert_eq!(top["returned"], 1);
    let top = &top["connections"][0];
    assert_eq!(top["node"], "radar1");
    assert_eq!(top["frames_in"], 200);
    assert_eq!(top["peer"], big.local_addr().expect("addr").to_string());
    let quiet = get_json(admin, "/api/connections?sort=bytes_in&limit=1");
    assert_eq!(
        quiet["connections"][0]["peer"],
        idle.local_addr().expect("addr").to_string()
    );
    assert_eq!(quiet["connections"][0]["node"], Value::Null);
    let (status, body) = http_get(admin, "/api/connections?sort=colour");
    assert_eq!(status, 400);
    assert!(body.contains("bytes_in"), "{body}");

    let (status, body) = http_get(admin, "/readyz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(admin, "/healthz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(daemon.terminate(), 0);
}

/// Sends frames with consecutive timestamps until the server stops reading
/// or `stop` is set.
fn push_until_stopped(addr: SocketAddr, node: String, token: &'static str, stop: Arc<AtomicBool>) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return;
    };
    let mut ts = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut batch = String::new();
        for _ in 0..50 {
            batch.push_str(&detection(&node, (ts == 0).then_some(token), ts));
            ts += 1;
        }
        if s.write_all(batch.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn sigterm_during_ingest_with_fsync_always_writes_every_frame_received() {
    let dir = temp_dir("fsync");
    let out = dir.join("frames.ndjson");
    let mut daemon = Daemon::with_config(
        &dir,
        &format!(
            r#"
[[listener]]
bind = "127.0.0.1:0"
[listener.auth]
token = "secret"
[listener.queue]
# Nothing may be dropped by the queue: whatever is received must be written.
capacity = 1000000
overflow = "block"

[[sink]]
type = "file"
path = "{}"
fsync = "always"
"#,
            out.display()
        ),
        &[],
    );
    let addr = daemon.addr();
    let admin = daemon.admin();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|n| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                push_until_stopped(addr, format!("radar{n}"), "secret", stop)
            })
        })
        .collect();
    // Kill it in the middle of the stream, once it has taken some in.
    eventually("ingest under way", || {
        Metrics::scrape(admin).get("framehub_frames_received_total", &[]) >= 20_000.0
    });
    assert_eq!(daemon.terminate(), 0);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    let stopped = daemon.wait_log("stopped; every delivered frame written");
    let received = stopped["received"].as_u64().expect("received");
    assert!(received >= 20_000);
    assert_eq!(stopped["dropped"], 0);
    assert_eq!(stopped["failed"], 0);
    assert_eq!(stopped["delivered"], received);
    assert_eq!(stopped["written"], received);
    let recs = records(&out);
    assert_eq!(
        recs.len() as u64,
        received,
        "every frame received is in the file"
    );
    // Per node, the file holds a prefix of what was sent, in order, without
    // gaps: nothing in the middle went missing.
    let mut next: HashMap<String, u64> = HashMap::new();
    for r in &recs {
        let node = r["node"].as_str().expect("node").to_owned();
        let ts = r["frame"]["timestamp"].as_u64().expect("timestamp");
        let expected = next.entry(node.clone()).or_insert(0);
        assert_eq!(ts, *expected, "{node}: gap or reorder");
        *expected += 1;
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn failing_sinks_are_reported_on_healthz_and_every_lost_record_counted() {
    let dir = temp_dir("healthz");
    let mut daemon = Daemon::with_config(
        &dir,
        r#"
[[listener]]
bind = "127.0.0.1:0"

[[sink]]
type = "file"
name = "unreachable"
path = "/proc/framehub-no-such-dir/frames.ndjson"

[[sink]]
type = "file"
name = "full"
path = "/dev/full"   # every write fails with ENOSPC, as on a full disk
fsync = "always"
"#,
        &[],
    );
    let addr = daemon.addr();
    let admin = daemon.admin();
    // A path that cannot be opened is reported from the start.
    let (status, body) = http_get(admin, "/healthz");
    assert_eq!(status, 503, "{body}");
    let health: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(health["status"], "failing");
    let problems = health["problems"].to_string();
    assert!(problems.contains("unreachable"), "{problems}");
    assert!(
        problems.contains("/proc/framehub-no-such-dir"),
        "{problems}"
    );
    // Readiness only looks at the listeners: devices can still connect.
    assert_eq!(http_get(admin, "/readyz").0, 200);

    let mut s = TcpStream::connect(addr).expect("connect");
    for ts in 0..100 {
        s.write_all(detection("radar3", None, ts).as_bytes())
            .expect("write");
    }
    eventually("both sinks counted every record as failed", || {
        let m = Metrics::scrape(admin);
        m.get("framehub_sink_records_failed_total", &[("sink", "full")]) == 100.0
            && m.get(
                "framehub_sink_records_failed_total",
                &[("sink", "unreachable")],
            ) == 100.0
    });
    let m = Metrics::scrape(admin);
    assert_eq!(m.get("framehub_sink_up", &[("sink", "full")]), 0.0);
    assert_eq!(
        m.get("framehub_sink_records_written_total", &[("sink", "full")]),
        0.0
    );
    let (status, body) = http_get(admin, "/healthz");
    assert_eq!(status, 503);
    assert!(body.contains("No space left on device"), "{body}");
    daemon.wait_log_where(
        "sink failing: cannot write /dev/full: No space left on device (os error 28)",
        |f| f["sink"] == "full",
    );

    drop(s);
    // Records were lost: the exit code says so, and so does the last line.
    assert_eq!(daemon.terminate(), 1);
    let stopped = daemon.wait_log("stopped; some delivered frames could not be written");
    assert_eq!(stopped["failed"], 200);
    assert_eq!(stopped["written"], 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// A tap subscriber that reads everything, counting records.
fn reading_subscriber(addr: SocketAddr) -> std::thread::JoinHandle<usize> {
    let mut s = TcpStream::connect(addr).expect("connect to tap");
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut lines = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return lines,
                Ok(n) => lines += buf[..n].iter().filter(|&&c| c == b'\n').count(),
            }
        }
    })
}

#[test]
fn a_tap_subscriber_that_never_reads_loses_records_or_is_cut_and_ingest_goes_on() {
    let dir = temp_dir("tap");
    let out = dir.join("frames.ndjson");
    let mut daemon = Daemon::with_config(
        &dir,
        &format!(
            r#"
[[listener]]
bind = "127.0.0.1:0"
[listener.queue]
capacity = 1000000
overflow = "block"

[[sink]]
type = "file"
path = "{}"
fsync = "never"

[[sink]]
type = "tap"
name = "lossy"
bind = "127.0.0.1:0"
buffer_bytes = "64KiB"
on_full = "drop"

[[sink]]
type = "tap"
name = "strict"
bind = "127.0.0.1:0"
buffer_bytes = "64KiB"
on_full = "disconnect"
"#,
            out.display()
        ),
        &[],
    );
    let addr = daemon.addr();
    let admin = daemon.admin();
    let lossy = daemon.tap("lossy");
    let strict = daemon.tap("strict");
    // Subscribers that never read: the kernel buffers a few MB for each,
    // then their buffers in the daemon fill.
    let stuck_lossy = TcpStream::connect(lossy).expect("connect");
    let mut stuck_strict = TcpStream::connect(strict).expect("connect");
    let reader = reading_subscriber(lossy);
    eventually("three subscribers", || {
        let m = Metrics::scrape(admin);
        m.get("framehub_tap_subscribers", &[("sink", "lossy")]) == 2.0
            && m.get("framehub_tap_subscribers", &[("sink", "strict")]) == 1.0
    });

    // About 50 MB of records, far more than the kernel and the tap buffer.
    let pad = "x".repeat(1000);
    let frames_per_conn = 10_000u64;
    let senders: Vec<_> = (0..4)
        .map(|n| {
            let pad = pad.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("connect");
                // A stalled ingest fails the test instead of hanging it.
                s.set_write_timeout(Some(PATIENCE)).expect("timeout");
                let mut batch = String::new();
                for ts in 0..frames_per_conn {
                    batch.push_str(&format!(
                        "{{\"node_id\":\"radar{n}\",\"timestamp\":{ts},\"pad\":\"{pad}\"}}\n"
                    ));
                    if batch.len() > 1 << 16 {
                        s.write_all(batch.as_bytes()).expect("ingest never stalls");
                        batch.clear();
                    }
                }
                s.write_all(batch.as_bytes()).expect("write");
            })
        })
        .collect();
    for s in senders {
        s.join().expect("sender");
    }
    let total = 4 * frames_per_conn as usize;
    eventually("every frame in the file", || line_count(&out) == total);

    let m = Metrics::scrape(admin);
    let lossy_l = [("sink", "lossy")];
    let strict_l = [("sink", "strict")];
    assert_eq!(m.get("framehub_frames_received_total", &[]), total as f64);
    assert_eq!(m.get("framehub_frames_dropped_total", &[]), 0.0);
    assert_eq!(
        m.get("framehub_sink_records_written_total", &[("sink", "file")]),
        total as f64
    );
    // The lossy tap kept its stuck subscriber and counted what it missed.
    assert!(m.get("framehub_tap_records_dropped_total", &lossy_l) > 0.0);
    assert_eq!(m.get("framehub_tap_subscribers", &lossy_l), 2.0);
    assert_eq!(m.get("framehub_tap_subscribers_cut_total", &lossy_l), 0.0);
    // The strict tap cut its stuck subscriber, and counted it.
    assert_eq!(m.get("framehub_tap_subscribers_cut_total", &strict_l), 1.0);
    assert_eq!(m.get("framehub_tap_subscribers", &strict_l), 0.0);
    assert!(m.get("framehub_tap_records_dropped_total", &strict_l) > 0.0);
    // A tap is best effort: health does not depend on its subscribers.
    assert_eq!(http_get(admin, "/healthz").0, 200);
    // The cut subscriber sees its connection end once it reads.
    stuck_strict
        .set_read_timeout(Some(PATIENCE))
        .expect("timeout");
    let mut sink = vec![0u8; 1 << 16];
    loop {
        match stuck_strict.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }

    assert_eq!(daemon.terminate(), 0);
    let got = reader.join().expect("reader");
    assert!(got > 0, "the reading subscriber got records");
    drop(stuck_lossy);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn warnings_about_misbehaving_peers_are_rate_limited() {
    let mut daemon = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--framing",
        "length",
        "--out",
        "/dev/null",
    ]);
    let addr = daemon.addr();
    let admin = daemon.admin();
    // 50 connections in a row, each announcing a frame far over the
    // maximum: every one is closed with "framing lost".
    for _ in 0..50 {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(&u32::MAX.to_be_bytes()).expect("write");
        let mut buf = [0u8; 16];
        let _ = s.read(&mut buf);
    }
    eventually("all closed", || {
        Metrics::scrape(admin).get(
            "framehub_connections_closed_total",
            &[("reason", "framing_lost")],
        ) == 50.0
    });
    let mut warnings = 0;
    eventually("a warning", || {
        warnings = daemon
            .logs_so_far()
            .iter()
            .filter(|v| {
                v["level"] == "WARN"
                    && v["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("connection closed"))
            })
            .count();
        warnings > 0
    });
    assert!(
        (1..=5).contains(&warnings),
        "50 bad connections gave {warnings} warnings"
    );
    assert_eq!(daemon.terminate(), 0);
}

/// Reads one line from a client socket.
fn read_line(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut line = Vec::new();
    let mut byte = [0u8];
    while s.read(&mut byte).expect("read") == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8(line).expect("utf-8")
}

#[test]
fn api_stats_and_send_use_the_hubs_statistics_and_egress() {
    let dir = temp_dir("send");
    let mut daemon = Daemon::with_config(
        &dir,
        "[admin]\nsend = true\n[[listener]]\nbind = \"127.0.0.1:0\"\n",
        &["--out", "/dev/null"],
    );
    let addr = daemon.addr();
    let admin = daemon.admin();
    let mut a = TcpStream::connect(addr).expect("connect");
    let mut b = TcpStream::connect(addr).expect("connect");
    a.write_all(detection("radar1", None, 1).as_bytes())
        .expect("write");
    b.write_all(detection("radar2", None, 1).as_bytes())
        .expect("write");
    eventually("a stats snapshot with both frames", || {
        get_json(admin, "/api/stats")["listeners"][0]["frames_in"].as_u64() == Some(2)
    });
    let stats = get_json(admin, "/api/stats");
    assert_eq!(stats["listeners"][0]["listener"], "default");
    assert_eq!(stats["listeners"][0]["connections_open"], 2);

    let conns = get_json(admin, "/api/connections?sort=node");
    let a_id = conns["connections"][0]["id"].as_u64().expect("id");
    assert_eq!(conns["connections"][0]["node"], "radar1");
    let (status, body) = http_request(admin, "POST", &format!("/api/send?conn={a_id}"), b"to-a");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["sent"],
        1
    );
    assert_eq!(read_line(&mut a), "to-a");
    let (status, body) = http_request(admin, "POST", "/api/send?node=radar2", b"to-b");
    assert_eq!((status, body.contains("\"sent\":1")), (200, true), "{body}");
    assert_eq!(read_line(&mut b), "to-b");
    let (status, body) = http_request(admin, "POST", "/api/send", b"all");
    assert_eq!((status, body.contains("\"sent\":2")), (200, true), "{body}");
    assert_eq!(read_line(&mut a), "all");
    assert_eq!(read_line(&mut b), "all");
    // A message the framing cannot carry is refused, naming why.
    let (status, body) = http_request(admin, "POST", "/api/send", b"two\nlines");
    assert_eq!(status, 400, "{body}");
    let (status, _) = http_request(admin, "POST", "/api/send?conn=1&node=radar1", b"x");
    assert_eq!(status, 400);
    eventually("the writes are counted", || {
        Metrics::scrape(admin).get("framehub_frames_sent_total", &[("listener", "default")]) == 4.0
    });
    assert_eq!(daemon.terminate(), 0);

    // Off by default: whoever reaches the admin port cannot command devices.
    let mut daemon = Daemon::start(&["--listen", "127.0.0.1:0", "--out", "/dev/null"]);
    let admin = daemon.admin();
    let (status, body) = http_request(admin, "POST", "/api/send", b"x");
    assert_eq!(status, 403, "{body}");
    assert_eq!(daemon.terminate(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

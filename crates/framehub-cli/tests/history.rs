//! `/api/connections?state=closed`: the daemon remembers connections that
//! ended, with reason and traffic; `offset`, `node=`, `listener=` filter
//! both states.

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::*;

#[test]
fn closed_connections_are_listed_with_reason_and_filters() {
    let dir = temp_dir("history");
    let mut daemon = Daemon::with_config(
        &dir,
        r#"
connection_history = 2
[[listener]]
name = "radars"
bind = "127.0.0.1:0"
[[listener]]
name = "other"
bind = "127.0.0.1:0"
"#,
        &["--out", "/dev/null"],
    );
    let radars = daemon.listener_addr("radars");
    let other = daemon.listener_addr("other");
    let admin = daemon.admin();

    // Three connections end: two on "radars" (radar1, radar2), one on "other".
    let mut peers = Vec::new();
    for (addr, node, frames) in [
        (radars, "radar1", 7),
        (radars, "radar2", 3),
        (other, "radar9", 1),
    ] {
        let mut s = TcpStream::connect(addr).expect("connect");
        for ts in 0..frames {
            s.write_all(detection(node, None, ts).as_bytes())
                .expect("write");
        }
        peers.push(s.local_addr().expect("addr").to_string());
        eventually("frames counted", || {
            let open = get_json(admin, &format!("/api/connections?node={node}"));
            open["total"] == 1 && open["connections"][0]["frames_in"] == frames
        });
        drop(s);
        eventually("connection closed", || {
            get_json(admin, "/api/connections")["total"] == 0
        });
    }

    let closed = get_json(admin, "/api/connections?state=closed");
    assert_eq!(closed["state"], "closed");
    assert_eq!(
        closed["total"], 2,
        "connection_history = 2 keeps the newest two: {closed}"
    );
    let list = closed["connections"].as_array().expect("connections");
    assert_eq!(list[0]["peer"], peers[2], "newest first");
    assert_eq!(list[1]["peer"], peers[1]);
    let c = &list[1];
    assert_eq!(c["listener"], "radars");
    assert_eq!(c["node"], "radar2");
    assert_eq!(c["reason"], "peer_closed");
    assert_eq!(c["frames_in"], 3);
    assert_eq!(
        c["bytes_in"].as_u64().expect("bytes_in"),
        (0..3)
            .map(|ts| detection("radar2", None, ts).len() as u64)
            .sum::<u64>()
    );
    assert_eq!(c["frames_out"], 0);
    assert!(c["duration_seconds"].as_f64().expect("duration") >= 0.0);
    assert!(c["closed"].as_str().expect("closed").ends_with('Z'));

    let by_listener = get_json(admin, "/api/connections?state=closed&listener=radars");
    assert_eq!(by_listener["total"], 1);
    assert_eq!(by_listener["connections"][0]["node"], "radar2");
    let by_node = get_json(admin, "/api/connections?state=closed&node=radar9");
    assert_eq!(by_node["total"], 1);
    assert_eq!(by_node["connections"][0]["listener"], "other");
    let paged = get_json(admin, "/api/connections?state=closed&offset=1&limit=5");
    assert_eq!(
        (paged["total"].as_u64(), paged["returned"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(paged["connections"][0]["peer"], peers[1]);

    // The same filters on open connections.
    let mut a = TcpStream::connect(radars).expect("connect");
    let mut b = TcpStream::connect(other).expect("connect");
    a.write_all(detection("radar1", None, 1).as_bytes())
        .expect("write");
    b.write_all(detection("radar9", None, 1).as_bytes())
        .expect("write");
    eventually("both bound", || {
        get_json(admin, "/api/connections?node=radar1")["total"] == 1
            && get_json(admin, "/api/connections?node=radar9")["total"] == 1
    });
    let open = get_json(admin, "/api/connections?listener=other");
    assert_eq!(open["total"], 1);
    assert_eq!(open["connections"][0]["node"], "radar9");
    let skipped = get_json(admin, "/api/connections?offset=1");
    assert_eq!(
        (skipped["total"].as_u64(), skipped["returned"].as_u64()),
        (Some(2), Some(1))
    );

    let (status, body) = http_get(admin, "/api/connections?state=gone");
    assert_eq!(status, 400, "{body}");
    let (status, _) = http_get(admin, "/api/connections?state=closed&sort=id");
    assert_eq!(status, 400);
    drop((a, b));
    assert_eq!(daemon.terminate(), 0);
}

/// `/metrics` carries the process families Prometheus' client libraries
/// export, the history's size, and byte counters named `..._bytes_total`.
#[test]
fn metrics_have_process_families_and_history() {
    let mut daemon = Daemon::start(&["--listen", "127.0.0.1:0", "--out", "/dev/null"]);
    let addr = daemon.addr();
    let admin = daemon.admin();
    let s = TcpStream::connect(addr).expect("connect");
    drop(s);
    eventually("one closed connection", || {
        get_json(admin, "/api/connections?state=closed")["total"] == 1
    });
    let (status, text) = http_get(admin, "/metrics");
    assert_eq!(status, 200);
    let lines: Vec<&str> = text.lines().collect();
    let value = |name: &str| -> f64 {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing"))
            .parse()
            .expect("number")
    };
    let pid_fds = std::fs::read_dir(format!("/proc/{}/fd", daemon.child.id()))
        .expect("daemon's fds")
        .count() as f64;
    let open = value("process_open_fds");
    assert!(
        open >= 5.0 && (open - pid_fds).abs() < 20.0,
        "{open} vs {pid_fds}"
    );
    assert!(value("process_max_fds") >= open);
    assert!(value("process_resident_memory_bytes") > 1_000_000.0);
    assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
    assert!(value("process_cpu_seconds_total") >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let start = value("process_start_time_seconds");
    assert!(
        start <= now && start > now - 600.0,
        "started {start}, now {now}"
    );
    assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
    assert_eq!(value("framehub_connection_history_records"), 1.0);
    assert_eq!(value("framehub_connection_history_evicted_total"), 0.0);
    for name in [
        "framehub_received_bytes_total",
        "framehub_sent_bytes_total",
        "framehub_sink_written_bytes_total",
    ] {
        assert!(text.contains(&format!("# TYPE {name} counter")), "{name}");
    }
    assert!(!text.contains("framehub_bytes_received_total"));
}

//! Issue 18 against the real `framehub` binary: what `check-config`
//! accepts, `serve` runs; and under a low file-descriptor limit, a flood
//! of device connections leaves `/healthz` answering.

mod common;

use common::*;

/// Values `check-config` used to accept and `serve` then failed on (a
/// panicking status task, every client closed before it speaks, 4 GiB per
/// read, a 2^40-frame queue) exit 64 naming the key, from `check-config`
/// and from `serve` alike.
#[test]
fn check_config_refuses_values_that_cannot_run() {
    let dir = temp_dir("hardening-check");
    let cfg = dir.join("bad.toml");
    for (text, key) in [
        (
            "[serve]\nstatus_interval = \"0s\"\n",
            "serve.status_interval",
        ),
        (
            "[[listener]]\n[listener.auth]\ntimeout = \"0s\"\n",
            "listener[0].auth.timeout",
        ),
        (
            "[[listener]]\nread_buffer_bytes = \"4GiB\"\n",
            "listener[0].read_buffer_bytes",
        ),
        (
            "[[listener]]\n[listener.queue]\ncapacity = 1099511627776\n",
            "listener[0].queue.capacity",
        ),
        (
            "[[listener]]\nmax_frame_bytes = \"2GiB\"\n",
            "listener[0].max_frame_bytes",
        ),
        (
            "[[listener]]\nframe_timeout = \"0s\"\n",
            "listener[0].frame_timeout",
        ),
    ] {
        std::fs::write(&cfg, text).expect("write");
        let out = framehub()
            .arg("check-config")
            .arg(&cfg)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{text}: {err}");
        assert!(err.contains(key), "{key} not named in: {err}");
        let out = framehub()
            .args(["serve", "--no-admin", "--config"])
            .arg(&cfg)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(64), "serve: {text}");
    }
    // The largest values accepted do run: the daemon starts, and SIGTERM
    // ends it cleanly.
    let good = "[serve]\nstatus_interval = \"1ms\"\n\
                [[listener]]\nbind = \"127.0.0.1:0\"\nread_buffer_bytes = \"64MiB\"\n\
                max_frame_bytes = \"256MiB\"\n\
                [listener.queue]\ncapacity = 1000000\n";
    std::fs::write(&cfg, good).expect("write");
    let out = framehub()
        .arg("check-config")
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut daemon = Daemon::with_config(&dir, good, &[]);
    let addr = daemon.addr();
    let mut device = std::net::TcpStream::connect(addr).expect("connect");
    std::io::Write::write_all(&mut device, b"{\"node_id\":\"n\"}\n").expect("write");
    drop(device);
    assert_eq!(daemon.terminate(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// `/api/nodes` is paged: `offset` and `limit` (100 by default), with the
/// table's total, so the answer stays small whatever the table holds.
#[test]
fn api_nodes_is_paged() {
    let dir = temp_dir("hardening-nodes");
    let mut daemon = Daemon::with_config(&dir, "[[listener]]\nbind = \"127.0.0.1:0\"\n", &[]);
    let addr = daemon.addr();
    let admin = daemon.admin();
    let mut devices = Vec::new();
    for n in 0..5 {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        std::io::Write::write_all(&mut s, detection(&format!("node{n}"), None, 1).as_bytes())
            .expect("write");
        devices.push(s);
    }
    eventually("five nodes", || {
        get_json(admin, "/api/nodes")["total"].as_u64() == Some(5)
    });
    let all = get_json(admin, "/api/nodes");
    assert_eq!(all["returned"], 5);
    assert_eq!(all["offset"], 0);
    let page = get_json(admin, "/api/nodes?offset=1&limit=2");
    assert_eq!(page["total"], 5);
    assert_eq!(page["offset"], 1);
    assert_eq!(page["returned"], 2);
    let names: Vec<&str> = page["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["node1", "node2"]);
    assert_eq!(
        get_json(admin, "/api/nodes?offset=9")["returned"],
        0,
        "past the end: an empty page"
    );
    let (status, _) = http_get(admin, "/api/nodes?limit=many");
    assert_eq!(status, 400);
    drop(devices);
    let _ = std::fs::remove_dir_all(dir);
}

/// Under a low descriptor limit (soft = hard = 256, so it cannot be
/// raised), `serve` warns that `max_connections` does not fit, and a flood
/// of device connections is shed once `fd_reserve` descriptors are left:
/// `/healthz` still answers, and the daemon exits cleanly.
#[test]
fn a_connection_flood_under_a_low_fd_limit_leaves_healthz_answering() {
    let prlimit = std::process::Command::new("prlimit")
        .arg("--version")
        .output();
    assert!(
        prlimit.is_ok_and(|o| o.status.success()),
        "this test needs prlimit (util-linux): apt-get install util-linux"
    );
    let dir = temp_dir("hardening-fds");
    let cfg = dir.join("framehub.toml");
    std::fs::write(&cfg, "[[listener]]\nbind = \"127.0.0.1:0\"\n").expect("write");
    let mut command = std::process::Command::new("prlimit");
    command
        .arg("--nofile=256:256")
        .arg(env!("CARGO_BIN_EXE_framehub"))
        .args([
            "serve",
            "--log-format",
            "json",
            "--quiet",
            "--admin",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(&cfg);
    let mut daemon = Daemon::spawn(command);
    let warning = daemon.wait_log_where(
        "max_connections plus the daemon's other descriptors exceed the file descriptor limit; \
         new connections past the limit less fd_reserve will be closed at once (raise LimitNOFILE)",
        |f| f["fd_limit"] == 256 && f["max_connections"] == 10_000,
    );
    assert_eq!(warning["fd_reserve"], 128);
    // The admin port alone may hold 256 connections: more than the reserve.
    let reserve = daemon.wait_log_where(
        "fd_reserve is smaller than the descriptors the admin port, taps and sinks may hold; \
         under a flood of devices some of theirs will fail (raise fd_reserve, or lower [admin] max_connections)",
        |f| f["fd_reserve"] == 128 && f["admin_max_connections"] == 256,
    );
    assert!(
        reserve["other_descriptors"].as_u64() > Some(256),
        "{reserve}"
    );
    let addr = daemon.addr();
    let admin = daemon.admin();
    // Far more connections than descriptors; all held open.
    let mut flood = Vec::new();
    for _ in 0..400 {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => flood.push(s),
            Err(e) => panic!("connect: {e}"),
        }
    }
    let (status, body) = http_get(admin, "/healthz");
    assert_eq!(status, 200, "{body}");
    eventually("the flood shed and counted", || {
        let (status, metrics) = http_get(admin, "/metrics");
        status == 200
            && metrics.lines().any(|l| {
                l.starts_with("framehub_connections_shed_total")
                    && l.rsplit(' ')
                        .next()
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|v| v >= 100.0)
            })
    });
    // A device connecting now is shed too; one that got in still works.
    let (status, _) = http_get(admin, "/healthz");
    assert_eq!(status, 200);
    drop(flood);
    // Gone for the daemon too: it has read every flood connection's end
    // and given its descriptor back (a device connecting before that may
    // still be shed).
    eventually("the flood's connections closed", || {
        let (status, metrics) = http_get(admin, "/metrics");
        status == 200
            && metrics.lines().any(|l| {
                l.starts_with("framehub_connections_open")
                    && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(0.0)
            })
    });
    let mut device = std::net::TcpStream::connect(addr).expect("connect");
    std::io::Write::write_all(&mut device, detection("late", None, 1).as_bytes()).expect("write");
    eventually("the late device served once the flood is gone", || {
        get_json(admin, "/api/nodes")["total"].as_u64() == Some(1)
    });
    assert_eq!(daemon.terminate(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

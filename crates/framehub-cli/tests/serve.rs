//! `framehub serve` and `framehub check-config` as real processes: frames
//! pushed over TCP come out as NDJSON records, SIGTERM exits 0 with every
//! delivered frame written, bad config exits 64 naming the key.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

#[test]
fn serve_writes_ndjson_records_and_exits_0_on_sigterm_with_everything_flushed() {
    let dir = temp_dir("sigterm");
    let out = dir.join("frames.ndjson");
    let mut daemon = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--token",
        "secret",
        "--out",
        out.to_str().expect("path"),
    ]);
    let addr = daemon.addr();

    let mut conns: Vec<TcpStream> = Vec::new();
    let mut sent = Vec::new();
    for n in 0..4 {
        let node = format!("radar{n}");
        let mut s = TcpStream::connect(addr).expect("connect");
        let mut all = String::new();
        for ts in 0..2500u64 {
            let line = detection(&node, (ts == 0).then_some("secret"), ts);
            // What the record holds: the frame as sent, byte for byte,
            // minus its token (issue 13).
            sent.push(detection(&node, None, ts).trim_end().to_owned());
            all.push_str(&line);
        }
        s.write_all(all.as_bytes()).expect("write");
        conns.push(s);
    }
    // SIGTERM right away: whatever the server took in must be written.
    assert_eq!(daemon.terminate(), 0);
    let stopped = daemon.wait_log("stopped; every delivered frame written");
    let recs = records(&out);
    assert_eq!(stopped["written"].as_u64(), Some(recs.len() as u64));
    assert_eq!(stopped["delivered"], stopped["written"]);
    assert_eq!(stopped["dropped"], 0);

    for r in &recs {
        let node = r["node"].as_str().expect("node");
        assert!(node.starts_with("radar"));
        assert_eq!(r["listener"], "default");
        assert!(r["conn"].as_u64().is_some());
        assert!(r["peer"].as_str().expect("peer").starts_with("127.0.0.1:"));
        let at = r["received_at"].as_str().expect("received_at");
        assert!(
            at.ends_with('Z') && at.len() == "2026-01-20T18:02:52.478123Z".len(),
            "{at}"
        );
        assert_eq!(r["frame"]["node_id"], node);
    }
    // The frame is the original JSON byte for byte: find it in the raw file.
    let text = std::fs::read_to_string(&out).expect("file");
    assert!(!text.contains("secret"), "a record carries the token");
    for line in text.lines().take(50) {
        let frame_start = line.find("\"frame\":").expect("frame key") + "\"frame\":".len();
        let frame = &line[frame_start..line.len() - 1];
        assert!(
            sent.iter().any(|s| s == frame),
            "not byte for byte: {frame}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn frames_are_complete_when_the_daemon_had_time() {
    let dir = temp_dir("complete");
    let out = dir.join("frames.ndjson");
    let mut daemon = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--out",
        out.to_str().expect("path"),
    ]);
    let addr = daemon.addr();
    let mut s = TcpStream::connect(addr).expect("connect");
    for ts in 0..1000u64 {
        s.write_all(detection("radar7", None, ts).as_bytes())
            .expect("write");
    }
    drop(s);
    let deadline = Instant::now() + PATIENCE;
    while records(&out).len() < 1000 {
        assert!(
            Instant::now() < deadline,
            "only {} records",
            records(&out).len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(daemon.terminate(), 0);
    let recs = records(&out);
    assert_eq!(recs.len(), 1000);
    for (ts, r) in recs.iter().enumerate() {
        assert_eq!(r["frame"]["timestamp"], ts as u64, "in order");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn without_a_token_serve_binds_loopback_and_says_so() {
    // No --listen: the default address. The warning comes before the bind,
    // so this holds even if something else already uses port 30050.
    let mut daemon = Daemon::start(&[]);
    let warning = daemon.wait_log(
        "no token configured: listening on loopback only; set a token to accept other hosts",
    );
    assert_eq!(warning["addr"], "127.0.0.1:30050");
    drop(daemon);

    let dir = temp_dir("loopback");
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, "").expect("write");
    let out = framehub()
        .arg("check-config")
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("127.0.0.1:30050"), "{text}");
    std::fs::write(&cfg, "[[listener]]\n[listener.auth]\ntoken = \"s\"\n").expect("write");
    let out = framehub()
        .arg("check-config")
        .arg(&cfg)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("0.0.0.0:30050"),
        "with a token: all interfaces: {text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_config_names_the_bad_key_and_exits_64() {
    let dir = temp_dir("check");
    let cfg = dir.join("bad.toml");
    for (text, key) in [
        (
            "[[listener]]\nname = \"a\"\n[listener.queue]\ncapacity = 0\n",
            "listener[0].queue.capacity",
        ),
        (
            "[[listener]]\nmax_frame_bytes = \"1 parsec\"\n",
            "listener[0].max_frame_bytes",
        ),
        ("[[listener]]\nframing = \"cobs\"\n", "listener[0].protocol"),
        ("[nodes]\nmax_nodez = 3\n", "max_nodez"),
        ("[serve]\nout = 3\n", "serve.out"),
        ("[[sink]]\ntype = \"file\"\n", "sink[0].path"),
        ("[[sink]]\ntype = \"tap\"\nonfull = \"drop\"\n", "onfull"),
        ("[admin]\nbind = 30051\n", "admin.bind"),
    ] {
        std::fs::write(&cfg, text).expect("write");
        let out = framehub()
            .arg("check-config")
            .arg(&cfg)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(64), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{key} not named in: {err}");
        // serve refuses the same file the same way, before binding.
        let out = framehub()
            .args(["serve", "--config"])
            .arg(&cfg)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(64), "serve: {text}");
    }
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[[listener]]\nname = \"radar\"\nbind = \"127.0.0.1:0\"\n[listener.auth]\ntoken = \"s\"\n",
    )
    .expect("write");
    let out = framehub()
        .arg("check-config")
        .arg(&good)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The README's Python snippet, run for real when python3 is installed.
#[test]
fn readme_python_snippet_pushes_a_frame() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 not installed; the Rust tests above cover the same path");
        return;
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README");
    let start = readme.find("```python\n").expect("python block in README") + "```python\n".len();
    let snippet = &readme[start..start + readme[start..].find("```").expect("end of block")];
    let dir = temp_dir("python");
    let out = dir.join("frames.ndjson");
    let mut daemon = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--out",
        out.to_str().expect("path"),
    ]);
    let addr = daemon.addr();
    let snippet = snippet.replace("30050", &addr.port().to_string());
    let status = Command::new("python3")
        .arg("-c")
        .arg(&snippet)
        .status()
        .expect("python3");
    assert!(status.success());
    let deadline = Instant::now() + PATIENCE;
    while records(&out).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no record from the python snippet"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(daemon.terminate(), 0);
    let recs = records(&out);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["node"], "radar3");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn stats_flag_prints_one_json_line_per_second() {
    let mut daemon = Daemon::start(&["--listen", "127.0.0.1:0", "--stats"]);
    let addr = daemon.addr();
    let mut s = TcpStream::connect(addr).expect("connect");
    for ts in 0..10u64 {
        s.write_all(detection("radar1", None, ts).as_bytes())
            .expect("write");
    }
    let busy = daemon.wait_line("a stats line with the frames", |v| {
        v["listeners"][0]["frames_in"].as_u64().unwrap_or(0) > 0
    });
    let l = &busy["listeners"][0];
    assert_eq!(l["listener"], "default");
    assert_eq!(l["connections_open"], 1);
    assert_eq!(l["connections"][0]["node"], "radar1");
    assert!(l["frames_in_per_sec"].as_f64().is_some(), "{busy}");
    // The next one follows about a second later.
    let seq = busy["seq"].as_u64().expect("seq");
    let next = daemon.wait_line("the next stats line", |v| {
        v["seq"].as_u64() == Some(seq + 1)
    });
    let gap = next["unix_ms"].as_u64().expect("ms") - busy["unix_ms"].as_u64().expect("ms");
    assert!((500..=5000).contains(&gap), "{gap} ms apart");
    drop(s);
    assert_eq!(daemon.terminate(), 0);
}

/// The effective user id of this test process.
fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

/// `thread_priority = "realtime:10"` where the process may not use
/// SCHED_FIFO: a warning, and the daemon serves on at normal priority.
/// As root (this sandbox) SCHED_FIFO would succeed, so the daemon runs as
/// the unprivileged user `nobody` through `setpriv`, which is what an
/// unprivileged deployment is.
#[test]
fn an_unprivileged_realtime_priority_falls_back_with_a_warning() {
    let dir = temp_dir("realtime");
    let cfg = dir.join("stage.toml");
    std::fs::write(
        &cfg,
        "[runtime]\nio_threads = 1\nthread_priority = \"realtime:10\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n",
    )
    .expect("write");
    let mut command = if euid() == Some(0) {
        let available = Command::new("setpriv").arg("--version").output();
        assert!(
            available.is_ok_and(|o| o.status.success()),
            "running as root: setpriv (util-linux) is needed to test as an unprivileged user"
        );
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_framehub"));
        c
    } else {
        framehub()
    };
    command
        .args(["serve", "--log-format", "json", "--quiet"])
        .args(["--admin", "127.0.0.1:0", "--config"])
        .arg(&cfg);
    let mut daemon = Daemon::spawn(command);
    let warning = daemon.wait_log(
        "cannot set the I/O threads' priority (not permitted?); running at normal priority",
    );
    assert!(
        warning["error"]
            .as_str()
            .is_some_and(|e| e.contains("not permitted")),
        "{warning}"
    );
    // It serves on: a frame becomes a record on stdout.
    let addr = daemon.addr();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(detection("radar1", None, 1).as_bytes())
        .expect("write");
    let stdout = daemon.child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(PATIENCE).expect("a record in time");
    let record: Value = serde_json::from_str(&line).expect("json record");
    assert_eq!(record["node"], "radar1");
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

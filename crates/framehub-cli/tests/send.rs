//! `framehub send` against `framehub serve`, both as real processes: a
//! server restart in the middle of 100,000 lines, a simulated fleet in the
//! status line, binary framings, and the simulation's fault modes.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(30);

mod common;

use common::{framehub, line_count, temp_dir};

/// A port nothing listens on now (the kernel picks it; we let it go).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A running `framehub` process whose stderr lines are collected.
struct Proc {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(name: &'static str, mut command: Command) -> Proc {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn framehub");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Proc {
            name,
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Forgets every line received so far, so the next wait sees only
    /// lines printed from now on.
    fn forget_lines(&mut self) {
        self.seen.clear();
        while self.lines.try_recv().is_ok() {}
    }

    fn stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("stdin piped")
    }

    /// Waits for a stderr line that satisfies `want`.
    fn wait_line(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.seen.iter().find(|l| want(l)) {
            return line.clone();
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                panic!(
                    "{}: no line {what} within {PATIENCE:?}; saw:\n{}",
                    self.name,
                    self.seen.join("\n")
                );
            };
            self.seen.push(line.clone());
            if want(&line) {
                return line;
            }
        }
    }

    /// The fields of the JSON log line whose message is `message`.
    fn wait_log(&mut self, message: &str) -> Value {
        let line = self.wait_line(message, |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| v["fields"]["message"] == message)
        });
        serde_json::from_str::<Value>(&line).expect("json")["fields"].clone()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Collect what is left on stderr for the assertions.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return status.code().expect("exit code, not a signal");
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(config: &Path, out: &Path, quiet: bool) -> Proc {
    let mut command = framehub();
    command
        .args([
            "serve",
            "--log-format",
            "json",
            "--admin",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(config)
        .arg("--out")
        .arg(out);
    if quiet {
        command.arg("--quiet");
    }
    let mut proc = Proc::spawn("serve", command);
    proc.wait_log("listening");
    proc
}

fn records(path: &Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .map(|l| serde_json::from_str(l).expect("every record is one JSON line"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Waits until the file holds `n` records (serve writes them from its own
/// thread, a moment after the counters move), then checks it stays there.
fn wait_records(path: &Path, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while line_count(path) < n {
        assert!(
            Instant::now() < deadline,
            "{} records, expected {n}",
            line_count(path)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(line_count(path), n, "more records than expected");
}

/// `key=value` from a summary or status line.
/// The daemon's status line: a JSON log line (`--log-format json`).
fn is_status(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line)
        .is_ok_and(|v| v["fields"]["message"] == "status")
}

fn field(line: &str, key: &str) -> u64 {
    // A JSON log line (the daemon's status line): its `fields`.
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        return v["fields"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key} in {line}"));
    }
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

/// What a restart may lose: the bytes in the kernel's socket buffers. The
/// client's SO_SNDBUF and the listener's SO_RCVBUF are both set to
/// BUFFER_BYTES; Linux doubles each (the doubled figure includes its
/// bookkeeping, so it also bounds the payload).
const BUFFER_BYTES: usize = 64 << 10;
const LOSS_BOUND_BYTES: usize = 2 * BUFFER_BYTES + 2 * BUFFER_BYTES;

#[test]
fn server_restart_mid_send_loses_at_most_the_socket_buffers() {
    const LINES: u64 = 100_000;
    let dir = temp_dir("restart");
    let port = free_port();
    let config = dir.join("serve.toml");
    // A queue that never fills, so serve itself drops nothing and any
    // loss is the kernel's buffers.
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nbind = \"127.0.0.1:{port}\"\n[listener.auth]\ntoken = \"secret\"\n\
             [listener.socket]\nrecv_buffer_bytes = {BUFFER_BYTES}\n\
             [listener.queue]\ncapacity = 200000\noverflow = \"block\"\n"
        ),
    )
    .expect("config");
    let (out1, out2) = (dir.join("before.ndjson"), dir.join("after.ndjson"));
    let mut first = serve(&config, &out1, true);

    let mut send_cmd = framehub();
    send_cmd
        .args(["send", "--to", &format!("127.0.0.1:{port}")])
        .args(["--node-id", "radar1", "--token", "secret"])
        .args(["--send-buffer", &BUFFER_BYTES.to_string()])
        .args(["--log-format", "json"])
        .stdin(Stdio::piped());
    let mut sender = Proc::spawn("send", send_cmd);
    let mut stdin = sender.stdin();
    let line = |i: u64| {
        format!(
            "{{\"timestamp\":{i},\"delay\":[40.46],\"doppler\":[-27.99],\"snr\":[12.08],\"adsb\":[null]}}\n"
        )
    };
    // Injected node_id included, as the server stores it.
    let shortest = line(0).len() + r#""node_id":"radar1","#.len();
    let writer = std::thread::spawn(move || {
        for chunk in 0..LINES / 1000 {
            let text: String = (chunk * 1000..(chunk + 1) * 1000).map(line).collect();
            stdin.write_all(text.as_bytes()).expect("stdin");
            // Paced a little, so the restart lands mid-stream.
            std::thread::sleep(Duration::from_millis(5));
        }
    });

    // Restart once a fifth has gone through: SIGTERM, then the same port.
    let deadline = Instant::now() + PATIENCE;
    while line_count(&out1) < (LINES / 5) as usize {
        assert!(Instant::now() < deadline, "serve got too little");
        std::thread::sleep(Duration::from_millis(5));
    }
    first.signal("TERM");
    assert_eq!(first.wait_exit(), 0);
    let stopped = first.wait_log("stopped; every delivered frame written");
    assert_eq!(stopped["dropped"], 0, "serve itself dropped nothing");
    let mut second = serve(&config, &out2, true);

    writer.join().expect("writer");
    let code = sender.wait_exit();
    let summary = sender.wait_line("summary", |l| l.starts_with("framehub send:"));
    assert_eq!(code, 0, "{summary}");
    second.signal("TERM");
    assert_eq!(second.wait_exit(), 0);

    let (before, after) = (records(&out1), records(&out2));
    assert!(
        !after.is_empty(),
        "the restart came after everything was sent"
    );
    let mut seen = HashSet::new();
    for file in [&before, &after] {
        let mut last = None;
        for r in file {
            assert_eq!(r["frame"]["node_id"], "radar1");
            let ts = r["frame"]["timestamp"].as_u64().expect("timestamp");
            assert!(seen.insert(ts), "timestamp {ts} delivered twice");
            assert!(last < Some(ts), "out of order at {ts}");
            last = Some(ts);
        }
    }
    let lost = LINES as usize - seen.len();
    let bound = LOSS_BOUND_BYTES / shortest;
    eprintln!(
        "restart: before={} after={} lost={lost} (bound {bound} lines = {LOSS_BOUND_BYTES} bytes); {summary}",
        before.len(),
        after.len()
    );
    assert!(lost <= bound, "lost {lost} lines, bound {bound}");
    assert_eq!(field(&summary, "lines"), LINES);
    assert_eq!(field(&summary, "sent"), LINES);
    assert!(field(&summary, "connects") >= 2, "{summary}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn fifty_simulated_nodes_are_healthy_in_the_status_line() {
    let dir = temp_dir("simulate");
    let config = dir.join("serve.toml");
    std::fs::write(
        &config,
        "[serve]\nstatus_interval = \"1s\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n\
         [listener.auth]\ntoken = \"secret\"\n",
    )
    .expect("config");
    let out = dir.join("frames.ndjson");
    let mut daemon = serve(&config, &out, false);
    let addr = daemon.wait_log("listening")["local_addr"]
        .as_str()
        .expect("addr")
        .to_owned();

    let mut command = framehub();
    command.args([
        "send",
        "--to",
        &addr,
        "--token",
        "secret",
        "--simulate",
        "50",
        "--rate",
        "2",
    ]);
    let mut sender = Proc::spawn("send", command);
    let status = daemon.wait_line("nodes=50 healthy=50", |l| {
        is_status(l) && field(l, "nodes") == 50 && field(l, "healthy") == 50
    });
    assert_eq!(field(&status, "connections"), 50, "{status}");
    // Let a few rounds of frames through, then Ctrl-C.
    std::thread::sleep(Duration::from_secs(2));
    sender.signal("INT");
    assert_eq!(sender.wait_exit(), 0);
    let summary = sender.wait_line("summary", |l| l.starts_with("framehub send: simulated"));
    assert_eq!(field(&summary, "unsent"), 0, "{summary}");
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(), 0);

    let recs = records(&out);
    assert_eq!(recs.len() as u64, field(&summary, "sent"), "{summary}");
    let nodes: HashSet<&str> = recs
        .iter()
        .map(|r| r["node"].as_str().expect("node"))
        .collect();
    assert_eq!(nodes.len(), 50);
    for r in &recs {
        let f = &r["frame"];
        assert_eq!(f["node_id"], r["node"]);
        let n = f["delay"].as_array().expect("delay").len();
        assert!((1..=5).contains(&n));
        for key in ["doppler", "snr", "adsb"] {
            assert_eq!(f[key].as_array().expect(key).len(), n);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs one short simulation against `addr` and returns its summary line.
fn simulate(addr: &str, extra: &[&str]) -> String {
    let mut command = framehub();
    command
        .args(["send", "--to", addr, "--token", "secret"])
        .args(["--simulate", "3", "--rate", "20", "--duration", "2s"])
        .args(extra);
    let mut sender = Proc::spawn("send", command);
    assert_eq!(sender.wait_exit(), 0, "{extra:?}");
    sender.wait_line("summary", |l| l.starts_with("framehub send: simulated"))
}

#[test]
fn simulation_fault_modes_show_up_on_the_server() {
    let dir = temp_dir("modes");
    let config = dir.join("serve.toml");
    std::fs::write(
        &config,
        "[serve]\nstatus_interval = \"200ms\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n\
         [listener.auth]\ntoken = \"secret\"\n",
    )
    .expect("config");
    let out = dir.join("frames.ndjson");
    let mut daemon = serve(&config, &out, false);
    let addr = daemon.wait_log("listening")["local_addr"]
        .as_str()
        .expect("addr")
        .to_owned();
    // The first status line printed after the sender has exited: every
    // frame it sent is counted by then (each session ends with a clean
    // close that the server acknowledges after reading everything).
    let status = |daemon: &mut Proc| {
        daemon.forget_lines();
        daemon.wait_line("status", is_status)
    };

    // Wrong token: every connection is refused; the client accounts for
    // every frame (written into a doomed connection, dropped or unsent).
    let summary = simulate(&addr, &["--invalid-token"]);
    assert_eq!(
        field(&summary, "frames"),
        field(&summary, "sent") + field(&summary, "unsent") + field(&summary, "dropped"),
        "{summary}"
    );
    let s = status(&mut daemon);
    assert!(field(&s, "auth_failures") >= 3, "{s}");
    assert_eq!(field(&s, "healthy"), 0, "{s}");
    assert_eq!(line_count(&out), 0, "nothing from nodes with a wrong token");
    // Each refused login's frame is counted as dropped (`auth_failed`),
    // before its connection is counted as an auth failure.
    let refused = field(&s, "dropped");
    assert!(refused >= field(&s, "auth_failures"), "{s}");

    // Malformed: every fifth frame is dropped by the server, counted.
    let summary = simulate(&addr, &["--malformed"]);
    let sent = field(&summary, "sent");
    let s = status(&mut daemon);
    // The status line's count is since start: this phase's is the rest.
    let dropped = field(&s, "dropped") - refused;
    assert!(
        dropped + 3 >= sent / 5 && dropped <= sent / 5 + 3,
        "{s} / {summary}"
    );
    let delivered = sent - dropped;
    wait_records(&out, delivered as usize);

    // Disconnect churn: a fresh connection every 5 frames, nothing lost,
    // since every session ends with a flush and a clean close.
    let summary = simulate(&addr, &["--disconnect-after", "5"]);
    let connects = field(&summary, "connects");
    // 3 nodes x 20 frames/s x 2 s = ~120 frames, a new connection every 5.
    assert!(connects >= 15, "{summary}");
    assert_eq!(field(&summary, "unsent"), 0, "{summary}");
    assert_eq!(
        field(&summary, "frames"),
        field(&summary, "sent"),
        "{summary}"
    );
    wait_records(&out, (delivered + field(&summary, "sent")) as usize);

    let before = line_count(&out);
    let mut command = framehub();
    command.args([
        "send",
        "--to",
        &addr,
        "--token",
        "secret",
        "--simulate",
        "4",
        "--heartbeat-only",
        "--heartbeat",
        "200ms",
    ]);
    let mut hb = Proc::spawn("send", command);
    daemon.wait_line("4 healthy heartbeat-only nodes", |l| {
        is_status(l) && field(l, "healthy") == 4
    });
    std::thread::sleep(Duration::from_millis(600));
    hb.signal("INT");
    assert_eq!(hb.wait_exit(), 0);
    let summary = hb.wait_line("summary", |l| l.starts_with("framehub send: simulated"));
    assert_eq!(field(&summary, "frames"), 0);
    assert!(field(&summary, "heartbeats") >= 8, "{summary}");
    assert_eq!(line_count(&out), before, "heartbeats are never delivered");

    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn binary_framings_take_hex_lines() {
    let dir = temp_dir("hex");
    let config = dir.join("serve.toml");
    std::fs::write(
        &config,
        "[[listener]]\nbind = \"127.0.0.1:0\"\nframing = \"length\"\nprotocol = \"raw\"\n",
    )
    .expect("config");
    let out = dir.join("frames.ndjson");
    let mut daemon = serve(&config, &out, true);
    let addr = daemon.wait_log("listening")["local_addr"]
        .as_str()
        .expect("addr")
        .to_owned();
    let mut command = framehub();
    command
        .args(["send", "--to", &addr, "--framing", "length", "--hex"])
        .stdin(Stdio::piped());
    let mut sender = Proc::spawn("send", command);
    let mut stdin = sender.stdin();
    stdin
        .write_all(b"00ff10\nde ad be ef\n0a\n")
        .expect("stdin");
    drop(stdin);
    assert_eq!(sender.wait_exit(), 0);
    let deadline = Instant::now() + PATIENCE;
    while line_count(&out) < 3 {
        assert!(Instant::now() < deadline, "frames did not arrive");
        std::thread::sleep(Duration::from_millis(20));
    }
    let frames: Vec<String> = records(&out)
        .iter()
        .map(|r| r["frame_b64"].as_str().expect("binary frame").to_owned())
        .collect();
    // base64 of 00ff10, deadbeef, 0a (a lone newline byte is a frame too).
    assert_eq!(frames, ["AP8Q", "3q2+7w==", "Cg=="]);

    // A bad hex line is skipped, reported, and the exit code says so.
    let mut command = framehub();
    command
        .args(["send", "--to", &addr, "--framing", "length", "--hex"])
        .stdin(Stdio::piped());
    let mut sender = Proc::spawn("send", command);
    let mut stdin = sender.stdin();
    stdin.write_all(b"zz\n01\n").expect("stdin");
    drop(stdin);
    assert_eq!(sender.wait_exit(), 1);
    let summary = sender.wait_line("summary", |l| l.starts_with("framehub send:"));
    assert_eq!(
        (field(&summary, "skipped"), field(&summary, "sent")),
        (1, 1)
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

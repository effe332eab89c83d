//! Acknowledged delivery and exact shutdown with `framehub serve` as a
//! real process (issues 14 and 18): an ack never precedes the file's sync,
//! the durable marks survive a `kill -9`, a partial record left by a crash
//! is repaired, the default config loses nothing under full-speed load, a
//! second SIGTERM forces the exit.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The test-only switch of debug builds: while the file it names exists,
/// every sync of a file sink fails.
const FAIL_SYNC_ENV: &str = "FRAMEHUB_TEST_FAIL_SYNC";

fn ack_config(out: &std::path::Path, fsync: &str) -> String {
    format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[listener.auth]\ntoken = \"secret\"\n\
         [listener.ack]\nmode = \"durable\"\n\
         [[sink]]\ntype = \"file\"\npath = {:?}\nfsync = \"{fsync}\"\nfsync_interval = \"100ms\"\n",
        out.to_str().expect("path")
    )
}

/// A raw-socket device: numbered frames out, ack lines in.
struct Device {
    write: TcpStream,
    read: BufReader<TcpStream>,
}

impl Device {
    fn connect(addr: SocketAddr) -> Device {
        let write = TcpStream::connect(addr).expect("connect");
        let read = BufReader::new(write.try_clone().expect("clone"));
        let mut d = Device { write, read };
        d.send_raw("{\"node_id\":\"dev\",\"token\":\"secret\",\"type\":\"heartbeat\"}\n");
        d
    }

    fn send_raw(&mut self, text: &str) {
        self.write.write_all(text.as_bytes()).expect("send");
    }

    fn send(&mut self, node: &str, seqs: impl IntoIterator<Item = u64>) {
        let mut text = String::new();
        for seq in seqs {
            text.push_str(&format!(
                "{{\"node_id\":\"{node}\",\"seq\":{seq},\"v\":\"{}\"}}\n",
                "x".repeat(100)
            ));
        }
        self.send_raw(&text);
    }

    /// The next line within `wait`: `Some(line)`, `None` on timeout; an
    /// empty string when the server closed the connection.
    fn line_within(&mut self, wait: Duration) -> Option<String> {
        self.read
            .get_ref()
            .set_read_timeout(Some(wait))
            .expect("timeout");
        let mut line = String::new();
        match self.read.read_line(&mut line) {
            Ok(_) => Some(line),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(_) => Some(String::new()),
        }
    }

    /// Reads acks until one covers `seq`; returns the acks seen.
    fn acked_through(&mut self, seq: u64) -> Vec<u64> {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let Some(line) = self.line_within(Duration::from_secs(1)) else {
                continue;
            };
            assert!(
                !line.is_empty(),
                "closed before the ack of {seq}; acks {seen:?}"
            );
            let v: serde_json::Value = serde_json::from_str(&line).expect("an ack is JSON");
            if v["type"] == "heartbeat" {
                continue;
            }
            assert_eq!(v["type"], "ack", "{line}");
            let n = v["seq"].as_u64().expect("seq");
            seen.push(n);
            if n >= seq {
                return seen;
            }
        }
        panic!("no ack of {seq}; acks {seen:?}");
    }
}

/// seq -> how many records of `node` carry it, and the order they came.
fn seqs_in(out: &std::path::Path, node: &str) -> (HashMap<u64, usize>, Vec<u64>) {
    let mut count = HashMap::new();
    let mut order = Vec::new();
    for r in records(out) {
        if r["node"] == node {
            let seq = r["seq"].as_u64().expect("record seq");
            assert_eq!(r["frame"]["seq"].as_u64(), Some(seq));
            *count.entry(seq).or_insert(0) += 1;
            order.push(seq);
        }
    }
    (count, order)
}

#[test]
fn an_ack_never_precedes_the_sync_and_the_resend_is_written() {
    let dir = temp_dir("ack-sync");
    let out = dir.join("frames.ndjson");
    let flag = dir.join("refuse-sync");
    std::fs::write(&flag, "").expect("flag");
    let config = dir.join("framehub.toml");
    std::fs::write(&config, ack_config(&out, "always")).expect("config");
    let mut command = framehub();
    command
        .args([
            "serve",
            "--log-format",
            "json",
            "--quiet",
            "--no-admin",
            "--config",
        ])
        .arg(&config)
        .env(FAIL_SYNC_ENV, &flag);
    let mut daemon = Daemon::spawn(command);
    let addr = daemon.addr();
    let mut dev = Device::connect(addr);
    dev.send("dev", 1..=100);
    // Written (the file has them), never synced: no ack; the failed sync
    // rewinds the node and closes the connection so the client resends.
    eventually("the frames reach the file", || line_count(&out) >= 100);
    let deadline = Instant::now() + PATIENCE;
    loop {
        match dev.line_within(Duration::from_secs(1)) {
            Some(line) if line.is_empty() => break,
            Some(line) => panic!("the server said {line:?} while no sync succeeded"),
            None => assert!(Instant::now() < deadline, "the connection stays open"),
        }
    }
    daemon.wait_line("the failed sync logged", |v| {
        v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("sink failing: cannot sync"))
    });
    // The disk works again: the client resends everything unacknowledged.
    std::fs::remove_file(&flag).expect("unflag");
    let mut dev = Device::connect(addr);
    dev.send("dev", 1..=100);
    let acks = dev.acked_through(100);
    assert!(acks.iter().all(|n| *n <= 100), "{acks:?}");
    let (count, order) = seqs_in(&out, "dev");
    for seq in 1..=100 {
        assert!(
            count.get(&seq).is_some_and(|n| *n >= 1),
            "seq {seq} not in the file"
        );
    }
    // The resend is in the file after the unsynced first copies, whole and
    // in order.
    assert_eq!(
        order[order.len() - 100..],
        (1..=100).collect::<Vec<_>>()[..]
    );
    assert_eq!(daemon.terminate(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn durable_marks_survive_kill_9_and_a_partial_record_is_repaired() {
    let dir = temp_dir("ack-kill");
    let out = dir.join("frames.ndjson");
    let mut daemon = Daemon::with_config(&dir, &ack_config(&out, "interval"), &[]);
    let addr = daemon.addr();
    let mut dev = Device::connect(addr);
    dev.send("dev", 1..=50);
    dev.acked_through(50);
    // A crash mid-write leaves half a record at the end.
    let _ = daemon.child.kill();
    let _ = daemon.child.wait();
    drop(dev);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&out)
        .expect("file");
    file.write_all(b"{\"received_at\":\"2026-01-20T18:02:52.478123Z\",\"listener\":\"def")
        .expect("torn");
    drop(file);
    let mut daemon = Daemon::with_config(&dir, &ack_config(&out, "interval"), &[]);
    let repaired =
        daemon.wait_log("cut off a partial last record (the previous run ended mid-write)");
    assert!(repaired["bytes"].as_u64().is_some_and(|b| b > 0));
    let addr = daemon.addr();
    let mut dev = Device::connect(addr);
    // The client does not know what was durable and sends 41..60 again:
    // the ack on bind says 50, 41..50 are duplicates, 51..60 are new.
    dev.send("dev", 41..=60);
    let acks = dev.acked_through(60);
    assert_eq!(
        acks[0], 50,
        "the ack on bind tells the recovered mark: {acks:?}"
    );
    let (count, order) = seqs_in(&out, "dev");
    assert_eq!(
        order,
        (1..=60).collect::<Vec<_>>(),
        "every frame once, in order"
    );
    assert!(count.values().all(|n| *n == 1));
    assert_eq!(daemon.terminate(), 0);
    let stopped = daemon.wait_log("stopped; every delivered frame written");
    assert_eq!(stopped["written"], 10);
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue 14 point 4: `serve --out FILE` with the default config blocks
/// instead of dropping, so a full-speed load loses nothing.
#[test]
fn the_default_config_writes_every_frame_of_a_full_speed_load() {
    let dir = temp_dir("full-speed");
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
    const CONNS: usize = 8;
    const FRAMES: u64 = 10_000;
    let senders: Vec<_> = (0..CONNS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("connect");
                let mut text = String::new();
                for ts in 0..FRAMES {
                    text.push_str(&detection(
                        &format!("n{c}"),
                        (ts == 0).then_some("secret"),
                        ts,
                    ));
                }
                s.write_all(text.as_bytes()).expect("write");
                s
            })
        })
        .collect();
    let conns: Vec<TcpStream> = senders
        .into_iter()
        .map(|t| t.join().expect("sender"))
        .collect();
    let total = CONNS * FRAMES as usize;
    eventually("every frame in the file", || line_count(&out) >= total);
    assert_eq!(daemon.terminate(), 0);
    let stopped = daemon.wait_log("stopped; every delivered frame written");
    assert_eq!(stopped["dropped"], 0);
    assert_eq!(stopped["written"], total as u64);
    assert_eq!(line_count(&out), total);
    drop(conns);
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue 18 item 7: with `block` (the default with a file sink), SIGTERM
/// right after a burst writes every frame the server read, and the exit
/// line's words and numbers agree.
#[test]
fn sigterm_during_a_burst_writes_every_frame_read() {
    let dir = temp_dir("burst-term");
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
    let mut conns = Vec::new();
    for c in 0..8 {
        let mut s = TcpStream::connect(addr).expect("connect");
        let mut text = String::new();
        for ts in 0..20_000u64 {
            text.push_str(&detection(
                &format!("b{c}"),
                (ts == 0).then_some("secret"),
                ts,
            ));
        }
        // Non-blocking, so the signal comes while the burst is under way.
        s.set_nonblocking(true).expect("nonblocking");
        let _ = s.write(text.as_bytes());
        conns.push(s);
    }
    assert_eq!(daemon.terminate(), 0);
    let stopped = daemon.wait_log("stopped; every delivered frame written");
    let recs = line_count(&out) as u64;
    assert_eq!(stopped["written"].as_u64(), Some(recs));
    assert_eq!(stopped["delivered"], stopped["written"]);
    assert_eq!(stopped["dropped"], 0, "{stopped}");
    drop(conns);
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue 18 item 7: stdout into a pipe nobody reads blocks the sink for
/// good; a second SIGTERM ends the process anyway.
#[test]
fn a_second_sigterm_forces_the_exit() {
    let mut command = framehub();
    command
        .args([
            "serve",
            "--log-format",
            "json",
            "--quiet",
            "--no-admin",
            "--listen",
            "127.0.0.1:0",
            "--token",
            "secret",
        ])
        .stdin(Stdio::null());
    let mut daemon = Daemon::spawn(command);
    let addr = daemon.addr();
    let mut s = TcpStream::connect(addr).expect("connect");
    let mut text = String::new();
    for ts in 0..5_000u64 {
        text.push_str(&detection("p", (ts == 0).then_some("secret"), ts));
    }
    s.write_all(text.as_bytes()).expect("write");
    // The pipe (64 KiB) is full long before 5,000 records of ~200 bytes.
    std::thread::sleep(Duration::from_millis(500));
    let pid = daemon.child.id().to_string();
    let kill = |sig: &str| {
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .expect("kill")
                .success()
        );
    };
    kill("-TERM");
    daemon.wait_log("shutting down");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        daemon.child.try_wait().expect("wait").is_none(),
        "the first SIGTERM cannot finish while stdout is full"
    );
    kill("-TERM");
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = daemon.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the second SIGTERM did not end it"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
    daemon.wait_log("second signal: exiting now; frames not yet written are lost");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

/// Issue 18 item 7: a sink that cannot keep up (stdout into a pipe nobody
/// reads) with drop-oldest queues in front of it shows on `/healthz`.
#[test]
fn healthz_reports_a_sink_queue_that_is_full_and_dropping() {
    let mut daemon = Daemon::start(&["--listen", "127.0.0.1:0", "--token", "secret"]);
    let addr = daemon.addr();
    let admin = daemon.admin();
    let (status, body) = http_get(admin, "/healthz");
    assert_eq!(status, 200, "{body}");
    let sender = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        let mut text = String::new();
        for ts in 0..150_000u64 {
            text.push_str(&detection("h", (ts == 0).then_some("secret"), ts));
        }
        let _ = s.write_all(text.as_bytes());
        s
    });
    let mut last = String::new();
    eventually(
        "/healthz says the sinks' queue is full and dropping",
        || {
            let (status, body) = http_get(admin, "/healthz");
            last = body.clone();
            status == 503
                && body.contains("the sinks' queue is full and receiver queues drop frames")
        },
    );
    assert!(last.contains("queue_full"), "{last}");
    let _ = daemon.child.kill();
    let _ = sender.join();
}

/// Issue 18 item 6: a sync that does not return holds up neither the
/// file's writes nor another sink nor ingest; its acks wait for it.
#[test]
fn a_stalled_sync_stops_neither_writes_nor_other_sinks_and_holds_its_acks() {
    let dir = temp_dir("held-sync");
    let out = dir.join("frames.ndjson");
    let hold = dir.join("hold-sync");
    std::fs::write(&hold, "").expect("hold");
    let config = dir.join("framehub.toml");
    let text = format!(
        "{}[[sink]]\ntype = \"tap\"\nname = \"live\"\nbind = \"127.0.0.1:0\"\n",
        ack_config(&out, "always")
    );
    std::fs::write(&config, text).expect("config");
    let mut command = framehub();
    command
        .args([
            "serve",
            "--log-format",
            "json",
            "--quiet",
            "--no-admin",
            "--config",
        ])
        .arg(&config)
        .env("FRAMEHUB_TEST_HOLD_SYNC", &hold);
    let mut daemon = Daemon::spawn(command);
    let addr = daemon.addr();
    let tap = daemon.tap("live");
    let mut subscriber = BufReader::new(TcpStream::connect(tap).expect("tap"));
    std::thread::sleep(Duration::from_millis(200));
    let mut dev = Device::connect(addr);
    dev.send("dev", 1..=10);
    eventually("the first batch is written", || line_count(&out) >= 10);
    // The sync of the first batch is stuck; the next batches are still
    // written, and the tap still gets every record.
    for round in 1..5u64 {
        dev.send("dev", round * 10 + 1..=round * 10 + 10);
        eventually("a later batch is written while the sync waits", || {
            line_count(&out) >= (round as usize + 1) * 10
        });
    }
    let mut line = String::new();
    for _ in 0..50 {
        line.clear();
        subscriber.read_line(&mut line).expect("tap record");
        assert!(line.contains("\"node\":\"dev\""), "{line}");
    }
    assert!(hold.exists(), "the sync was held all along");
    assert_eq!(
        dev.line_within(Duration::from_millis(500)),
        None,
        "no ack while the sync has not returned"
    );
    std::fs::remove_file(&hold).expect("release");
    let acks = dev.acked_through(50);
    assert_eq!(acks.last(), Some(&50));
    assert_eq!(daemon.terminate(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

//! Secrets that stay secret and rotation without restart (issue 13), as
//! real processes: tokens from a file and from `FRAMEHUB_TOKEN` (never on
//! the command line), no token in any record, tap line or log line, and
//! SIGHUP swapping a token and reopening a moved file sink, with a failed
//! reload keeping the old settings.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn write_secret(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write secret");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s
}

/// Whether the server closes `s` (a refused login) within [`PATIENCE`].
fn is_closed_by_server(s: &mut TcpStream) -> bool {
    let mut byte = [0u8; 64];
    loop {
        match s.read(&mut byte) {
            Ok(0) | Err(_) => return true,
            // A server heartbeat or such: keep waiting for the close.
            Ok(_) => continue,
        }
    }
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .expect("/proc cmdline")
}

fn metric(admin: SocketAddr, line_start: &str) -> Option<f64> {
    let (_, body) = http_get(admin, "/metrics");
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn sighup(daemon: &Daemon) {
    let status = Command::new("kill")
        .args(["-HUP", &daemon.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// tracker-host's nodes put the token in every frame: first, middle and
/// last member, and on heartbeats. None of it may reach a record, a tap
/// line or a log line; the token comes from a file, not argv.
#[test]
fn a_token_from_a_file_reaches_no_record_tap_line_or_log_line() {
    let token = "tok-3f9a-file-secret";
    let dir = temp_dir("secret-file");
    let token_file = dir.join("token");
    write_secret(&token_file, &format!("{token}\n"));
    let out = dir.join("frames.ndjson");
    let mut daemon = Daemon::with_config(
        &dir,
        &format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\nredact = [\"password\"]\n\
             [listener.auth]\ntoken_file = \"{}\"\n\
             [[sink]]\ntype = \"file\"\npath = \"{}\"\n\
             [[sink]]\ntype = \"tap\"\nbind = \"127.0.0.1:0\"\n",
            token_file.display(),
            out.display()
        ),
        &[],
    );
    let addr = daemon.addr();
    let tap = daemon.tap("tap");
    assert!(!cmdline(daemon.child.id()).contains(token));
    let subscriber = connect(tap);
    // The tap has its subscriber before anything is sent.
    eventually("tap subscriber", || {
        metric(daemon.admin(), "framehub_tap_subscribers{").unwrap_or(0.0) >= 1.0
    });

    let mut node = connect(addr);
    let frames = [
        format!("{{\"token\":\"{token}\",\"node_id\":\"radar3\",\"timestamp\":1}}\n"),
        detection("radar3", Some(token), 2),
        format!("{{\"node_id\":\"radar3\",\"timestamp\":3,\"token\":\"{token}\"}}\n"),
        format!(
            "{{ \"node_id\" : \"radar3\" , \"token\" : \"{token}\" , \"type\" : \"heartbeat\" }}\n"
        ),
        format!(
            "{{\"node_id\":\"radar3\",\"timestamp\":4,\"password\":\"{token}\",\"token\":\"{token}\"}}\n"
        ),
        "{\"node_id\":\"radar3\",\n\"timestamp\":5}\n".to_owned(),
    ];
    for f in &frames {
        node.write_all(f.as_bytes()).expect("send");
    }
    // A wrong token, which is logged as a failure.
    let mut wrong = connect(addr);
    wrong
        .write_all(detection("radar4", Some("not-the-token"), 1).as_bytes())
        .expect("send");
    assert!(is_closed_by_server(&mut wrong));

    // 4 detections (the heartbeat is not delivered; the multi-line one is
    // two invalid lines).
    eventually("4 records", || line_count(&out) >= 4);
    let mut tap_lines = Vec::new();
    let mut reader = BufReader::new(subscriber.try_clone().expect("clone"));
    while tap_lines.len() < 4 {
        let mut line = String::new();
        reader.read_line(&mut line).expect("tap line");
        tap_lines.push(line);
    }
    subscriber
        .shutdown(std::net::Shutdown::Both)
        .expect("shutdown");
    assert_eq!(daemon.terminate(), 0);

    let records = records(&out);
    assert_eq!(records.len(), 4);
    for (i, r) in records.iter().enumerate() {
        let frame = r["frame"].as_object().expect("frame is the JSON object");
        assert!(!frame.contains_key("token"), "{r}");
        assert!(!frame.contains_key("password"), "{r}");
        assert_eq!(frame["node_id"], "radar3");
        assert_eq!(frame["timestamp"], i as u64 + 1);
    }
    // Otherwise byte for byte: the detection keeps its other fields.
    assert_eq!(records[1]["frame"]["snr"], serde_json::json!([12.08]));
    let file_text = std::fs::read_to_string(&out).expect("file");
    assert!(!file_text.contains(token), "{file_text}");
    for line in &tap_lines {
        assert!(!line.contains(token), "{line}");
    }
    let logs = daemon.logs_so_far().to_vec();
    assert!(
        logs.iter()
            .any(|l| l["fields"]["message"] == "connection closed"
                || l.to_string().contains("wrong token")),
        "the refused login is logged: {logs:?}"
    );
    for l in &logs {
        assert!(
            !l.to_string().contains(token),
            "log line with the token: {l}"
        );
    }
}

/// `FRAMEHUB_TOKEN`: the token is in the environment, not in argv.
#[test]
fn a_token_from_the_environment_is_used_and_not_on_the_command_line() {
    let token = "tok-env-7c1e-secret";
    let dir = temp_dir("secret-env");
    let out = dir.join("frames.ndjson");
    let mut command = framehub();
    command
        .arg("serve")
        .args(["--log-format", "json", "--quiet", "--admin", "127.0.0.1:0"])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--out",
            out.to_str().expect("path"),
        ])
        .env("FRAMEHUB_TOKEN", token);
    let mut daemon = Daemon::spawn(command);
    let addr = daemon.addr();
    assert!(!cmdline(daemon.child.id()).contains(token));

    let mut wrong = connect(addr);
    wrong
        .write_all(detection("radar3", Some("guess"), 1).as_bytes())
        .expect("send");
    assert!(is_closed_by_server(&mut wrong));
    let mut node = connect(addr);
    node.write_all(detection("radar3", Some(token), 1).as_bytes())
        .expect("send");
    node.write_all(detection("radar3", None, 2).as_bytes())
        .expect("send");
    eventually("2 records", || line_count(&out) >= 2);
    assert_eq!(daemon.terminate(), 0);
    let text = std::fs::read_to_string(&out).expect("file");
    assert_eq!(text.lines().count(), 2);
    assert!(!text.contains(token));
    for l in daemon.logs_so_far() {
        assert!(!l.to_string().contains(token), "{l}");
    }
}

/// SIGHUP: the new token is required of new connections, the old one
/// refused; an open connection keeps delivering; a file sink moved away
/// is reopened with nothing lost; a reload from a bad token file changes
/// nothing and is counted as failed.
#[test]
fn sighup_swaps_the_token_and_reopens_a_moved_file_sink() {
    let dir = temp_dir("sighup");
    let token_file = dir.join("token");
    write_secret(&token_file, "old-token\n");
    let out = dir.join("frames.ndjson");
    let moved = dir.join("frames.ndjson.1");
    let mut daemon = Daemon::with_config(
        &dir,
        &format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[listener.auth]\ntoken_file = \"{}\"\n\
             [[sink]]\ntype = \"file\"\npath = \"{}\"\n",
            token_file.display(),
            out.display()
        ),
        &[],
    );
    let addr = daemon.addr();
    let admin = daemon.admin();

    let mut open = connect(addr);
    open.write_all(detection("radar1", Some("old-token"), 0).as_bytes())
        .expect("send");
    for ts in 1..10 {
        open.write_all(detection("radar1", None, ts).as_bytes())
            .expect("send");
    }
    eventually("10 records", || line_count(&out) >= 10);

    // logrotate's move, a new token, then SIGHUP.
    std::fs::rename(&out, &moved).expect("move");
    write_secret(&token_file, "new-token\n");
    sighup(&daemon);
    daemon.wait_log("reloaded");
    daemon.wait_log("file reopened");

    // The open connection is unaffected.
    for ts in 10..20 {
        open.write_all(detection("radar1", None, ts).as_bytes())
            .expect("send");
    }
    // The old token is refused on a new connection; the new one works.
    let mut old = connect(addr);
    old.write_all(detection("radar2", Some("old-token"), 0).as_bytes())
        .expect("send");
    assert!(is_closed_by_server(&mut old));
    let mut new = connect(addr);
    for ts in 0..10 {
        let token = (ts == 0).then_some("new-token");
        new.write_all(detection("radar3", token, ts).as_bytes())
            .expect("send");
    }
    eventually("20 records in the new file", || line_count(&out) >= 20);
    assert_eq!(
        line_count(&moved),
        10,
        "the moved file has what came before"
    );
    assert_eq!(
        metric(admin, "framehub_reloads_total{result=\"ok\"}"),
        Some(1.0)
    );

    // A bad token file: the reload fails and the new token still works.
    write_secret(&token_file, "\n");
    sighup(&daemon);
    let failed = daemon.wait_line("a failed reload", |v| {
        v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("reload failed: ") && m.contains("token_file"))
    });
    assert_eq!(failed["level"], "ERROR");
    assert_eq!(
        metric(admin, "framehub_reloads_total{result=\"failed\"}"),
        Some(1.0)
    );
    let mut again = connect(addr);
    again
        .write_all(detection("radar4", Some("new-token"), 0).as_bytes())
        .expect("send");
    eventually("the kept token still admits", || line_count(&out) >= 21);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(daemon.terminate(), 0);

    // Nothing lost, nothing twice, across both files.
    let mut all = records(&moved);
    all.extend(records(&out));
    assert_eq!(all.len(), 31);
    let mut seen: Vec<(String, u64)> = all
        .iter()
        .map(|r| {
            (
                r["node"].as_str().expect("node").to_owned(),
                r["frame"]["timestamp"].as_u64().expect("ts"),
            )
        })
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 31);
}

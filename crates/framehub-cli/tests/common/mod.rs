//! Helpers shared by the daemon tests: run `framehub serve` as a real
//! process with its JSON logs collected, read its output files, talk HTTP
//! to its admin server.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Generous bound for anything that should happen soon.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn framehub() -> Command {
    Command::new(env!("CARGO_BIN_EXE_framehub"))
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("framehub-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A running daemon whose JSON log lines are collected from stderr. It
/// always gets an admin server on an ephemeral port, so tests can run in
/// parallel.
pub struct Daemon {
    pub child: Child,
    logs: mpsc::Receiver<Value>,
    pub seen: Vec<Value>,
}

impl Daemon {
    pub fn start(args: &[&str]) -> Daemon {
        let mut command = framehub();
        command
            .arg("serve")
            .args(["--log-format", "json", "--quiet", "--admin", "127.0.0.1:0"])
            .args(args);
        Daemon::spawn(command)
    }

    /// Starts `command` (a `framehub serve` with JSON logs, maybe wrapped).
    pub fn spawn(mut command: Command) -> Daemon {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn framehub");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                } else {
                    eprintln!("daemon: {line}");
                }
            }
        });
        Daemon {
            child,
            logs,
            seen: Vec::new(),
        }
    }

    /// Starts a daemon on a config file holding `toml`.
    pub fn with_config(dir: &Path, toml: &str, args: &[&str]) -> Daemon {
        let path = dir.join("framehub.toml");
        std::fs::write(&path, toml).expect("write config");
        let mut all = vec!["--config", path.to_str().expect("path")];
        all.extend_from_slice(args);
        Daemon::start(&all)
    }

    /// Waits for a log line whose message is `message` and returns its
    /// fields.
    pub fn wait_log(&mut self, message: &str) -> Value {
        self.wait_log_where(message, |_| true)
    }

    /// Waits for a log line whose message is `message` and whose fields
    /// satisfy `check`.
    pub fn wait_log_where(&mut self, message: &str, check: impl Fn(&Value) -> bool) -> Value {
        let what = format!("log line {message:?}");
        self.wait_line(&what, |v| {
            v["fields"]["message"] == message && check(&v["fields"])
        })["fields"]
            .clone()
    }

    /// Waits for a JSON line on stderr that satisfies `check`.
    pub fn wait_line(&mut self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| check(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .logs
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {what}; saw {:?}", self.seen));
            self.seen.push(v.clone());
            if check(&v) {
                return v;
            }
        }
    }

    /// Every log line received so far (without waiting).
    pub fn logs_so_far(&mut self) -> &[Value] {
        while let Ok(v) = self.logs.try_recv() {
            self.seen.push(v);
        }
        &self.seen
    }

    fn addr_of(&mut self, message: &str, check: impl Fn(&Value) -> bool) -> SocketAddr {
        let fields = self.wait_log_where(message, check);
        fields["local_addr"]
            .as_str()
            .expect("local_addr")
            .parse()
            .expect("addr")
    }

    /// The first listener's address.
    pub fn addr(&mut self) -> SocketAddr {
        self.addr_of("listening", |_| true)
    }

    /// A named listener's address.
    pub fn listener_addr(&mut self, name: &str) -> SocketAddr {
        self.addr_of("listening", |f| f["listener"] == name)
    }

    /// The admin server's address.
    pub fn admin(&mut self) -> SocketAddr {
        self.addr_of("admin listening", |_| true)
    }

    /// A tap's address.
    pub fn tap(&mut self, sink: &str) -> SocketAddr {
        self.addr_of("tap listening", |f| f["sink"] == sink)
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(&mut self) -> i32 {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code().expect("exit code, not a signal");
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every record of an NDJSON file; each line must be one JSON object.
pub fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("output file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("every record is one JSON line"))
        .collect()
}

/// Lines in a file (0 if it does not exist yet).
pub fn line_count(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// A radar detection frame as one line, optionally with a token and
/// padding to make it larger.
pub fn detection(node: &str, token: Option<&str>, ts: u64) -> String {
    let token = token
        .map(|t| format!(",\"token\":\"{t}\""))
        .unwrap_or_default();
    format!(
        "{{\"node_id\":\"{node}\"{token},\"timestamp\":{ts},\"delay\":[40.46],\"doppler\":[-27.99],\"snr\":[12.08],\"adsb\":[null]}}\n"
    )
}

/// Waits until `check` holds, polling; panics after [`PATIENCE`].
pub fn eventually(what: &str, check: impl FnMut() -> bool) {
    eventually_within(PATIENCE, what, check)
}

/// [`eventually`] with a bound of its own, for waits whose work grows with
/// the load (a backlog of tens of thousands of frames drained through a
/// debug build on a busy machine).
pub fn eventually_within(patience: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// One HTTP/1.1 GET: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, b"")
}

/// One HTTP/1.1 request with a body: the status code and the body.
pub fn http_request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to admin");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("request");
    s.write_all(body).expect("body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("response");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// GET returning JSON with status 200.
pub fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = http_get(addr, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON body")
}

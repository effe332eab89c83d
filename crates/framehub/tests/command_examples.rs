//! `examples/command_server.rs` and `examples/tmtc_server.rs` as real
//! processes, driven with independent encoders (`serde_json`, `cobs`,
//! `spacepackets`): replies in order under 1,000 pipelined requests, the
//! timeout error code while other connections are served, a panicking
//! command that leaves connection and server alive, and the accounting
//! each example prints when a connection ends; the command server's `json`
//! listener driven as LinuxIT-TCP-IP's own `TCPClient` drives its server
//! (one object per write, no newline, `0x` literals, one read per reply).
//!
//! `cargo test` builds the examples next to this test binary
//! (`target/<profile>/examples/`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spacepackets::{
    CcsdsPacketCreator, CcsdsPacketReader, PacketId, PacketSequenceControl, PacketType, SpHeader,
};

const PATIENCE: Duration = Duration::from_secs(20);

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} not built; `cargo test` builds examples (or run `cargo build --examples`)",
        path.display()
    );
    path
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running example: its listeners by name and its stdout lines.
struct Server {
    _child: Kill,
    addrs: HashMap<String, String>,
    stdout: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `name` with `args` and reads `listeners` lines of
    /// `listening <name> <addr>`.
    fn start(name: &str, args: &[&str], listeners: usize) -> Server {
        let mut child = Kill(
            Command::new(example(name))
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn the example"),
        );
        let pipe = child.0.stdout.take().expect("stdout");
        let (tx, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut addrs = HashMap::new();
        for _ in 0..listeners {
            let line = stdout.recv_timeout(PATIENCE).expect("a listening line");
            let mut words = line.split_whitespace();
            assert_eq!(words.next(), Some("listening"), "{line}");
            let (Some(listener), Some(addr)) = (words.next(), words.next()) else {
                panic!("unexpected: {line}");
            };
            addrs.insert(listener.to_owned(), addr.to_owned());
        }
        Server {
            _child: child,
            addrs,
            stdout,
        }
    }

    fn connect(&self, listener: &str) -> TcpStream {
        let s = TcpStream::connect(&self.addrs[listener]).expect("connect");
        s.set_read_timeout(Some(PATIENCE)).expect("timeout");
        s
    }

    /// The `closed ...` line of the connection from `local`, as key=value.
    fn closed(&self, local: std::net::SocketAddr) -> HashMap<String, String> {
        let deadline = Instant::now() + PATIENCE;
        let want = format!("closed peer={local} ");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.stdout.recv_timeout(left).expect("a closed line");
            if line.starts_with(&want) {
                return line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
            }
        }
    }
}

fn read_json(reader: &mut BufReader<TcpStream>) -> Value {
    let mut line = String::new();
    let n = reader.read_line(&mut line).expect("a reply line");
    assert!(n > 0, "connection closed before the reply");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
}

/// LinuxIT's error response without its `message` (see [`message_of`]).
fn error(code: u8) -> Value {
    json!({
        "cmd": null,
        "response_data": [{"error_code": code, "file_name": null, "result": null}],
        "request_data": null
    })
}

/// Takes the `message` out of an error response, checking it is a
/// non-empty string; other replies are returned as they are.
fn message_of(mut reply: Value) -> (Value, Option<String>) {
    if !reply["cmd"].is_null() {
        return (reply, None);
    }
    let message = reply["response_data"][0]
        .as_object_mut()
        .and_then(|error| error.remove("message"))
        .and_then(|m| m.as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("an error reply without a message: {reply}"));
    assert!(!message.is_empty(), "{reply}");
    (reply, Some(message))
}

fn without_message(reply: Value) -> Value {
    message_of(reply).0
}

#[test]
fn command_server_answers_a_thousand_pipelined_commands_in_order_and_accounts_for_them() {
    let server = Server::start("command_server", &["--listen", "127.0.0.1:0"], 1);
    let stream = server.connect("lines");
    let local = stream.local_addr().expect("local");
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for i in 0..1000 {
        let (request, reply) = match i % 5 {
            0 => (
                json!({"cmd": 1, "request_data": null}).to_string(),
                json!({"cmd": 2, "response_data": "pong", "request_data": null}),
            ),
            1 | 2 => (
                json!({"cmd": 3, "request_data": {"i": i, "v": [1, "x"]}}).to_string(),
                json!({"cmd": 4, "response_data": {"i": i, "v": [1, "x"]}, "request_data": null}),
            ),
            3 => (json!({"cmd": 42, "request_data": i}).to_string(), error(3)),
            _ if i % 10 == 4 => (format!("not json {i}"), error(1)),
            _ => (json!({"request_data": i}).to_string(), error(1)),
        };
        requests.push(request);
        expected.push(reply);
    }
    let mut wire = requests.join("\n");
    wire.push('\n');
    let mut reader = BufReader::new(stream);
    reader.get_mut().write_all(wire.as_bytes()).expect("send");
    let mut bytes_out = 0;
    for (i, want) in expected.iter().enumerate() {
        let got = read_json(&mut reader);
        assert_eq!(
            &without_message(got.clone()),
            want,
            "reply {i} to {}",
            requests[i]
        );
        bytes_out += got.to_string().len() + 1;
    }
    // Stats: code 6 with the hub's counters, which saw every request.
    let stats_request = b"{\"cmd\":5,\"request_data\":null}\n";
    reader.get_mut().write_all(stats_request).expect("send");
    let stats = read_json(&mut reader);
    assert_eq!(stats["cmd"], 6);
    assert_eq!(stats["response_data"]["requests"], 1001);
    assert_eq!(stats["response_data"]["replies_sent"], 1000);
    bytes_out += stats.to_string().len() + 1;
    reader
        .get_mut()
        .shutdown(Shutdown::Write)
        .expect("half-close");

    let closed = server.closed(local);
    assert_eq!(closed["requests"], "1001");
    assert_eq!(closed["replies"], "1001");
    assert_eq!(closed["telemetry"], "0");
    assert_eq!(
        closed["bytes_in"],
        (wire.len() + stats_request.len()).to_string()
    );
    assert_eq!(closed["bytes_out"], bytes_out.to_string());
    assert_eq!(closed["ending"], "peer");
}

#[test]
fn command_server_times_out_one_command_while_serving_others_and_survives_a_panic() {
    let server = Server::start(
        "command_server",
        &["--listen", "127.0.0.1:0", "--timeout", "300ms"],
        1,
    );
    let mut slow = BufReader::new(server.connect("lines"));
    let mut other = BufReader::new(server.connect("lines"));
    slow.get_mut()
        .write_all(b"{\"cmd\":7,\"request_data\":60000}\n{\"cmd\":1}\n")
        .expect("send");
    let started = Instant::now();
    other
        .get_mut()
        .write_all(b"{\"cmd\":7,\"request_data\":10}\n")
        .expect("send");
    assert_eq!(read_json(&mut other)["cmd"], 8);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "the other connection waited for the slow one"
    );
    assert_eq!(without_message(read_json(&mut slow)), error(4));
    assert_eq!(read_json(&mut slow)["response_data"], "pong");

    // Command 9 panics in its handler: an error reply, and the connection
    // and the server go on.
    other
        .get_mut()
        .write_all(b"{\"cmd\":9}\n{\"cmd\":1}\n")
        .expect("send");
    assert_eq!(without_message(read_json(&mut other)), error(5));
    assert_eq!(read_json(&mut other)["response_data"], "pong");
    let mut fresh = BufReader::new(server.connect("lines"));
    fresh.get_mut().write_all(b"{\"cmd\":5}\n").expect("send");
    let stats = read_json(&mut fresh)["response_data"].clone();
    assert_eq!(stats["handler_panics"], 1);
    assert_eq!(stats["handler_timeouts"], 1);
}

fn tc(apid: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let header = SpHeader::new(
        // A telecommand with a secondary header; unsegmented.
        PacketId::from(0x1800 | apid),
        PacketSequenceControl::from(0xC000 | seq),
        0,
    );
    CcsdsPacketCreator::new(header, PacketType::Tc, data, None)
        .expect("packet")
        .to_vec()
}

#[test]
fn tmtc_server_answers_space_packets_with_telemetry_and_echoes_cobs_frames() {
    let server = Server::start(
        "tmtc_server",
        &[
            "--cobs",
            "127.0.0.1:0",
            "--spacepacket",
            "127.0.0.1:0",
            "--allow-apid",
            "2",
            "--allow-apid",
            "1000",
        ],
        2,
    );
    // 1,000 pipelined telecommands for APIDs 2 and 1000, and every tenth
    // for APID 3, which is not allowed: skipped and counted.
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    let mut skipped = 0;
    for i in 0..1000u16 {
        let data = format!("tc {i}").into_bytes();
        if i % 10 == 9 {
            wire.extend_from_slice(&tc(3, i, &data));
            skipped += 1;
            continue;
        }
        let apid = if i % 2 == 0 { 2 } else { 1000 };
        wire.extend_from_slice(&tc(apid, i, &data));
        expected.push((apid, i, data));
    }
    let mut stream = server.connect("spacepacket");
    let local = stream.local_addr().expect("local");
    stream.write_all(&wire).expect("send");
    let mut bytes_out = 0;
    let mut buf = Vec::new();
    for (apid, seq, data) in &expected {
        // Read one whole packet: header, then its data length + 1.
        buf.resize(6, 0);
        stream.read_exact(&mut buf).expect("a header");
        let len = usize::from(u16::from_be_bytes([buf[4], buf[5]])) + 1;
        buf.resize(6 + len, 0);
        stream.read_exact(&mut buf[6..]).expect("the data");
        bytes_out += buf.len();
        let tm = CcsdsPacketReader::new(&buf, None).expect("a space packet");
        assert_eq!(tm.packet_type(), PacketType::Tm);
        assert_eq!(tm.apid().value(), *apid);
        assert_eq!(tm.psc().seq_count.value(), *seq);
        assert_eq!(tm.packet_data(), &data[..]);
    }
    stream.shutdown(Shutdown::Write).expect("half-close");
    let closed = server.closed(local);
    assert_eq!(closed["requests"], expected.len().to_string());
    assert_eq!(closed["replies"], expected.len().to_string());
    assert_eq!(closed["dropped"], skipped.to_string());
    assert_eq!(closed["bytes_in"], wire.len().to_string());
    assert_eq!(closed["bytes_out"], bytes_out.to_string());
    assert_eq!(closed["ending"], "peer");

    // COBS: each frame comes back, COBS-encoded between 0x00 delimiters.
    let frames: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| {
            let mut f = i.to_be_bytes().to_vec();
            f.extend_from_slice(b"\x00zero\x00");
            f
        })
        .collect();
    let mut wire = Vec::new();
    for f in &frames {
        wire.extend_from_slice(&cobs::encode_vec(f));
        wire.push(0);
    }
    let mut stream = server.connect("cobs");
    stream.write_all(&wire).expect("send");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let mut echoed = Vec::new();
    stream
        .read_to_end(&mut echoed)
        .expect("replies until close");
    let decoded: Vec<Vec<u8>> = echoed
        .split(|&b| b == 0)
        .filter(|chunk| !chunk.is_empty())
        .map(|chunk| cobs::decode_vec(chunk).expect("valid COBS"))
        .collect();
    assert_eq!(decoded, frames);
    assert_eq!(echoed.first(), Some(&0), "a frame starts at a delimiter");
    assert_eq!(echoed.last(), Some(&0), "and ends at one");
}

/// LinuxIT's `TCPClient.send_request`: one request per write, no newline,
/// then one read of up to 4096 bytes parsed as the reply (Python's
/// `json.loads`, which ignores the trailing newline).
fn linuxit_request(stream: &mut TcpStream, request: &str) -> Value {
    stream.write_all(request.as_bytes()).expect("send");
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).expect("a reply");
    assert!(n > 0, "connection closed before the reply to {request}");
    serde_json::from_slice(&buf[..n])
        .unwrap_or_else(|e| panic!("{:?} is not one JSON value: {e}", &buf[..n]))
}

#[test]
fn command_server_answers_linuxit_clients_on_json_framing() {
    let server = Server::start(
        "command_server",
        &["--listen", "127.0.0.1:0", "--json", "127.0.0.1:0"],
        2,
    );
    let mut s = server.connect("json");
    let local = s.local_addr().expect("local");
    let pong = json!({"cmd": 2, "response_data": "pong", "request_data": null});

    // What `json.dumps({"cmd": 1, "request_data": [...]})` writes.
    let dumps = json!({"cmd": 1, "request_data": ["test.jpg"]}).to_string();
    assert_eq!(linuxit_request(&mut s, &dumps), pong);
    // LinuxIT's README, typed into a terminal tool: `0x` literals, spaces.
    let readme = r#"{"cmd" : 0x01, "request_data": ["test.jpg", "test1.jpg", "test2.jpg"]}"#;
    assert_eq!(linuxit_request(&mut s, readme), pong);
    // `0x` literals anywhere outside strings; strings are left alone.
    let echo = r#"{"cmd": 0x03, "request_data": {"file": "0x10.jpg", "n": [0x20, -0x1]}}"#;
    assert_eq!(
        linuxit_request(&mut s, echo),
        json!({"cmd": 4, "response_data": {"file": "0x10.jpg", "n": [32, -1]}, "request_data": null})
    );
    // Pretty-printed over several lines.
    let pretty = "{\n    \"cmd\": 0x01,\n    \"request_data\": null\n}";
    assert_eq!(linuxit_request(&mut s, pretty), pong);

    // LinuxIT's `test_invalid_request`, with its assertions.
    let invalid = json!({"cmd": 0xFF, "request_data": []}).to_string();
    let response = linuxit_request(&mut s, &invalid);
    assert!(response.get("cmd").is_some() && response["cmd"].is_null());
    let data = response["response_data"].as_array().expect("a list");
    assert!(!data.is_empty());
    assert!(!data[0]["error_code"].is_null());
    assert!(data[0].get("message").is_some());
    let (rest, message) = message_of(response);
    assert_eq!(rest, error(3));
    assert_eq!(message.as_deref(), Some("Invalid command code: 0xff"));

    // Not JSON even with the literals rewritten, and no `cmd`: error 1, the
    // message saying why, as LinuxIT's validator does.
    let (rest, message) = message_of(linuxit_request(
        &mut s,
        r#"{"cmd": 0x01, "request_data": nope}"#,
    ));
    assert_eq!(rest, error(1));
    assert!(message.is_some_and(|m| m.starts_with("Invalid JSON format")));
    let (rest, message) = message_of(linuxit_request(&mut s, r#"{"request_data": []}"#));
    assert_eq!(rest, error(1));
    assert_eq!(message.as_deref(), Some("Request must contain 'cmd' field"));

    // Newline-terminated lines are JSON values too.
    assert_eq!(
        linuxit_request(&mut s, "{\"cmd\":1,\"request_data\":null}\n"),
        pong
    );
    s.shutdown(Shutdown::Write).expect("half-close");
    let closed = server.closed(local);
    assert_eq!(closed["requests"], "8");
    assert_eq!(closed["replies"], "8");
    assert_eq!(closed["dropped"], "0");
    assert_eq!(closed["ending"], "peer");

    // The lines listener reads `0x` literals the same way.
    let mut lines = BufReader::new(server.connect("lines"));
    lines
        .get_mut()
        .write_all(b"{\"cmd\": 0x01, \"request_data\": null}\n")
        .expect("send");
    assert_eq!(read_json(&mut lines), pong);
}

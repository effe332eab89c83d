//! `examples/command_server.rs` and `examples/tmtc_server.rs` as real
//! processes, driven with independent encoders (`serde_json`, `cobs`,
//! `spacepackets`): replies in order under 1,000 pipelined requests, the
//! timeout error code while other connections are served, a panicking
//! command that leaves connection and server alive, the accounting each
//! example prints when a connection ends, sat-rs's PUS answers to a ping,
//! read back with the CRC checked by the Rust `spacepackets` crate and by
//! the Python `spacepackets` package pytmtc uses, and the command server's
//! `json` listener driven as LinuxIT-TCP-IP's own `TCPClient` drives its
//! server (one object per write, no newline, `0x` literals, one read per
//! reply).
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
use spacepackets::ecss::tc::PusTcCreator;
use spacepackets::ecss::tm::{GenericPusTmSecondaryHeader, PusTmReader};
use spacepackets::ecss::{CreatorConfig, MessageTypeId};
use spacepackets::time::CcsdsTimeProvider;
use spacepackets::time::cds::CdsTime;
use spacepackets::{
    CcsdsPacket, CcsdsPacketCreator, CcsdsPacketReader, PacketId, PacketSequenceControl,
    PacketType, SpHeader,
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
    // Stats: code 6 with the hub's counters, which saw every request. A
    // reply is counted once its write returned, which can be a moment
    // after this client read it: ask again until all 1,000 are counted.
    let stats_request = b"{\"cmd\":5,\"request_data\":null}\n";
    let mut asked = 0;
    let stats = loop {
        reader.get_mut().write_all(stats_request).expect("send");
        asked += 1;
        let stats = read_json(&mut reader);
        assert_eq!(stats["cmd"], 6);
        bytes_out += stats.to_string().len() + 1;
        let sent = stats["response_data"]["replies_sent"]
            .as_u64()
            .expect("a count");
        // Every reply before this stats request, and never more.
        assert!(sent < 1000 + asked, "{stats}");
        if sent == 1000 + asked - 1 || asked == 200 {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(stats["response_data"]["requests"], 1000 + asked);
    assert_eq!(stats["response_data"]["replies_sent"], 1000 + asked - 1);
    reader
        .get_mut()
        .shutdown(Shutdown::Write)
        .expect("half-close");

    let closed = server.closed(local);
    assert_eq!(closed["requests"], (1000 + asked).to_string());
    assert_eq!(closed["replies"], (1000 + asked).to_string());
    assert_eq!(closed["telemetry"], "0");
    assert_eq!(
        closed["bytes_in"],
        (wire.len() + stats_request.len() * asked as usize).to_string()
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

/// A PUS-C telecommand without application data, as pytmtc builds them.
fn pus_tc(apid: u16, seq: u16, service: u8, subtype: u8) -> Vec<u8> {
    let header = SpHeader::new(
        PacketId::from(apid),
        PacketSequenceControl::from(0xC000 | seq),
        0,
    );
    PusTcCreator::new_simple(
        header,
        MessageTypeId::new(service, subtype),
        &[],
        CreatorConfig::default(),
    )
    .to_vec()
    .expect("a PUS TC")
}

/// `tc` with its CRC-16 broken.
fn bad_crc(mut tc: Vec<u8>) -> Vec<u8> {
    if let Some(last) = tc.last_mut() {
        *last ^= 0xFF;
    }
    tc
}

/// One whole space packet from `stream`: the header, then its data
/// length + 1 bytes.
fn read_space_packet(stream: &mut TcpStream) -> Vec<u8> {
    let mut packet = vec![0; 6];
    stream.read_exact(&mut packet).expect("a header");
    let len = usize::from(u16::from_be_bytes([packet[4], packet[5]])) + 1;
    packet.resize(6 + len, 0);
    stream.read_exact(&mut packet[6..]).expect("the data");
    packet
}

/// What a reply must be: the TC it answers, its service and subtype, and
/// for a failure report the failure code and data.
struct Want<'a> {
    tc: &'a [u8],
    service: u8,
    subtype: u8,
    failure: Option<(u16, &'a [u8])>,
}

fn want(tc: &[u8], service: u8, subtype: u8) -> Want<'_> {
    Want {
        tc,
        service,
        subtype,
        failure: None,
    }
}

fn failed<'a>(tc: &'a [u8], subtype: u8, code: u16, data: &'a [u8]) -> Want<'a> {
    Want {
        tc,
        service: 1,
        subtype,
        failure: Some((code, data)),
    }
}

/// sat-rs's answer to a ping TC[17,1]: acceptance, start, ping reply,
/// completion.
fn ping_answer(tc: &[u8]) -> [Want<'_>; 4] {
    [
        want(tc, 1, 1),
        want(tc, 1, 3),
        want(tc, 17, 2),
        want(tc, 1, 7),
    ]
}

/// Decodes `raw` as a PUS-C TM with the CRC checked and checks it against
/// `want`: service, subtype, the TC's APID, the TC's request ID in a
/// verification report, a CDS short time stamp of about now. Returns the
/// sequence count and the message type counter.
fn check_tm(raw: &[u8], want: &Want) -> (u16, u16) {
    let tm = PusTmReader::new(raw, 7)
        .unwrap_or_else(|e| panic!("{raw:02x?} is not a PUS TM with a good CRC: {e}"));
    assert_eq!(tm.len_packed(), raw.len(), "one whole packet");
    assert_eq!(tm.packet_type(), PacketType::Tm);
    assert!(tm.sec_header_flag());
    let kind = (tm.service_type_id(), tm.message_subtype_id());
    assert_eq!(kind, (want.service, want.subtype), "{raw:02x?}");
    let tc = CcsdsPacketReader::new(want.tc, None).expect("the TC");
    assert_eq!(tm.apid(), tc.apid(), "TM[{},{}]", kind.0, kind.1);
    let stamp = CdsTime::from_bytes_with_u16_days(tm.timestamp()).expect("a CDS short stamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let age = i64::try_from(now).expect("secs") - stamp.unix_secs();
    assert!(age.abs() < 60, "time stamp {age} s from now");
    let source = tm.source_data();
    if want.service == 1 {
        assert_eq!(
            &source[..4],
            &want.tc[..4],
            "request ID of TM[1,{}]",
            kind.1
        );
        match want.failure {
            Some((code, data)) => {
                assert_eq!(&source[4..6], &code.to_be_bytes(), "failure code");
                assert_eq!(&source[6..], data, "failure data");
            }
            None => assert_eq!(source.len(), 4, "a success report is its request ID"),
        }
    } else {
        assert!(source.is_empty(), "a ping reply has no data");
    }
    (tm.seq_count().value(), tm.msg_type_counter())
}

#[test]
fn tmtc_server_answers_pus_telecommands_as_sat_rs_does_over_space_packets_and_cobs() {
    let server = Server::start(
        "tmtc_server",
        &[
            "--cobs",
            "127.0.0.1:0",
            "--spacepacket",
            "127.0.0.1:0",
            "--allow-apid",
            "2",
        ],
        2,
    );
    // Space packets: garbage and a ping for APID 3 (skipped and counted),
    // then a ping, a TC of a service the server lacks (3: housekeeping),
    // an unknown subtype of service 17, a ping whose CRC is broken, and a
    // packet that is not PUS (still answered as raw telemetry).
    let ping = pus_tc(2, 10, 17, 1);
    let housekeeping = pus_tc(2, 11, 3, 27);
    let subtype = pus_tc(2, 12, 17, 99);
    let broken = bad_crc(pus_tc(2, 13, 17, 1));
    let raw = tc(2, 14, b"raw");
    let mut wire = vec![0xFF, 0xFF, 0xFE];
    for tc in [
        &pus_tc(3, 1, 17, 1),
        &ping,
        &housekeeping,
        &subtype,
        &broken,
        &raw,
    ] {
        wire.extend_from_slice(tc);
    }
    let mut expected: Vec<Want> = ping_answer(&ping).into();
    expected.extend([
        want(&housekeeping, 1, 1),
        failed(&housekeeping, 4, 0x0002, &[3]),
        want(&subtype, 1, 1),
        failed(&subtype, 4, 0x0001, &[99]),
        failed(&broken, 2, 0x0007, &[]),
    ]);
    let mut stream = server.connect("spacepacket");
    let local = stream.local_addr().expect("local");
    stream.write_all(&wire).expect("send");
    let mut bytes_out = 0;
    let mut service_1 = 0;
    for (i, want) in expected.iter().enumerate() {
        let packet = read_space_packet(&mut stream);
        bytes_out += packet.len();
        let (seq, msg_counter) = check_tm(&packet, want);
        // One TM funnel numbers them: per APID, and per service.
        assert_eq!(usize::from(seq), i, "sequence count");
        if want.service == 1 {
            assert_eq!(msg_counter, service_1, "message type counter");
            service_1 += 1;
        } else {
            assert_eq!(msg_counter, 0, "the first ping reply");
        }
    }
    let echo = read_space_packet(&mut stream);
    bytes_out += echo.len();
    let echo = CcsdsPacketReader::new(&echo, None).expect("a space packet");
    assert_eq!(echo.packet_type(), PacketType::Tm);
    assert_eq!(echo.seq_count().value(), 14);
    assert_eq!(echo.packet_data(), b"raw");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let closed = server.closed(local);
    assert_eq!(closed["requests"], "5");
    assert_eq!(closed["replies"], (expected.len() + 1).to_string());
    assert_eq!(closed["dropped"], "2", "the garbage run and APID 3");
    assert_eq!(closed["bytes_in"], wire.len().to_string());
    assert_eq!(closed["bytes_out"], bytes_out.to_string());
    assert_eq!(closed["ending"], "peer");

    // COBS: the same PUS answers, each TM a COBS frame; the counters go
    // on from the other listener's. A TC of another APID and a frame that
    // is not PUS come back as they went.
    let ping = pus_tc(2, 20, 17, 1);
    let broken = bad_crc(pus_tc(2, 21, 17, 1));
    let other_apid = pus_tc(3, 22, 17, 1);
    let mut wire = Vec::new();
    for frame in [&ping[..], &broken, &other_apid, b"not pus"] {
        wire.extend_from_slice(&cobs::encode_vec(frame));
        wire.push(0);
    }
    let mut stream = server.connect("cobs");
    stream.write_all(&wire).expect("send");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let mut replies = Vec::new();
    stream
        .read_to_end(&mut replies)
        .expect("replies until close");
    let frames: Vec<Vec<u8>> = replies
        .split(|&b| b == 0)
        .filter(|chunk| !chunk.is_empty())
        .map(|chunk| cobs::decode_vec(chunk).expect("valid COBS"))
        .collect();
    let mut expected: Vec<Want> = ping_answer(&ping).into();
    expected.push(failed(&broken, 2, 0x0007, &[]));
    assert_eq!(frames.len(), expected.len() + 2, "{frames:02x?}");
    for (i, (frame, want)) in frames.iter().zip(&expected).enumerate() {
        let (seq, _) = check_tm(frame, want);
        assert_eq!(usize::from(seq), 9 + i, "sequence count");
    }
    assert_eq!(frames[expected.len()], other_apid);
    assert_eq!(frames[expected.len() + 1], b"not pus");
}

/// The Python `spacepackets` version pytmtc gets (`tmtccmd~=8.1` pins
/// `spacepackets~=0.28.0`), installed from PyPI into the target dir
/// when it is not there yet. Returns the directory for `PYTHONPATH`.
fn python_spacepackets() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("py-spacepackets-0.28");
    let importable = || {
        Command::new("python3")
            .args(["-c", "import spacepackets.ecss"])
            .env("PYTHONPATH", &dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !importable() {
        let out = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--target"])
            .arg(&dir)
            .arg("spacepackets~=0.28.0")
            .output()
            .expect("python3 -m pip: python3 must be installed for this test");
        assert!(
            out.status.success() && importable(),
            "pip install spacepackets~=0.28.0 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

/// pytmtc's side, with its own library calls: builds a ping and two TCs
/// the server refuses, sends them, reads every reply to the end and
/// decodes it as pytmtc's `PusHandler` does (`PusTm.unpack` checks the
/// CRC; `Service1Tm` with sat-rs's field widths; the `PusVerificator`
/// tracking each TC). Prints one JSON line per TM, then each TC's status.
const PYTMTC_SIDE: &str = r#"
import json, socket, sys
from spacepackets.ccsds import CdsShortTimestamp
from spacepackets.ecss import PusTelecommand, PusTm, PusVerificator
from spacepackets.ecss.pus_1_verification import Service1Tm, UnpackParams
from spacepackets.ecss.pus_17_test import Service17Tm

host, port = sys.argv[1], int(sys.argv[2])
ping = PusTelecommand(apid=2, service=17, subservice=1, seq_count=5)
housekeeping = PusTelecommand(apid=2, service=3, subservice=27, seq_count=6)
broken_ping = PusTelecommand(apid=2, service=17, subservice=1, seq_count=7)
broken = bytearray(broken_ping.pack())
broken[-1] ^= 0xFF
verificator = PusVerificator()
for tc in (ping, housekeeping, broken_ping):
    verificator.add_tc(tc)
s = socket.create_connection((host, port), timeout=20)
s.sendall(ping.pack() + housekeeping.pack() + bytes(broken))
s.shutdown(socket.SHUT_WR)
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
stamp_len = CdsShortTimestamp.TIMESTAMP_SIZE
while data:
    n = ((data[4] << 8) | data[5]) + 7
    raw, data = data[:n], data[n:]
    tm = PusTm.unpack(raw, timestamp_len=stamp_len)
    stamp = CdsShortTimestamp.unpack(tm.timestamp)
    out = {"service": tm.service, "subservice": tm.subservice, "apid": tm.apid,
           "unix": stamp.as_unix_seconds()}
    if tm.service == 1:
        report = Service1Tm.unpack(raw, UnpackParams(stamp_len, 1, 2))
        out["request_id"] = report.tc_req_id.as_u32()
        if report.error_code is not None:
            out["code"] = report.error_code.val
        verificator.add_tm(report)
    elif tm.service == 17:
        Service17Tm.unpack(raw, timestamp_len=stamp_len)
    print(json.dumps(out))
for request_id, status in verificator.verif_dict.items():
    print(json.dumps({"tc": request_id.as_u32(), "accepted": status.accepted.value,
                      "started": status.started.value, "completed": status.completed.value,
                      "all_received": status.all_verifs_recvd}))
"#;

#[test]
fn tmtc_server_replies_decode_with_the_python_spacepackets_pytmtc_uses() {
    let pythonpath = python_spacepackets();
    let server = Server::start(
        "tmtc_server",
        &[
            "--cobs",
            "127.0.0.1:0",
            "--spacepacket",
            "127.0.0.1:0",
            "--allow-apid",
            "2",
        ],
        2,
    );
    let (host, port) = server.addrs["spacepacket"]
        .rsplit_once(':')
        .expect("host:port");
    let out = Command::new("python3")
        .args(["-c", PYTMTC_SIDE, host, port])
        .env("PYTHONPATH", &pythonpath)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "the Python side failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    // Request IDs: version, packet ID (TC, secondary header, APID 2) and
    // sequence control (unsegmented, count) of each TC.
    let (ping, housekeeping, broken) = (0x1802_C005_u32, 0x1802_C006_u32, 0x1802_C007_u32);
    let tm = |service: u8, subservice: u8, request_id: Option<u32>, code: Option<u16>| {
        (service, subservice, request_id, code)
    };
    let expected = [
        tm(1, 1, Some(ping), None),
        tm(1, 3, Some(ping), None),
        tm(17, 2, None, None),
        tm(1, 7, Some(ping), None),
        tm(1, 1, Some(housekeeping), None),
        tm(1, 4, Some(housekeeping), Some(0x0002)),
        tm(1, 2, Some(broken), Some(0x0007)),
    ];
    assert_eq!(lines.len(), expected.len() + 3, "{lines:#?}");
    for (got, (service, subservice, request_id, code)) in lines.iter().zip(expected) {
        assert_eq!(got["service"], service, "{got}");
        assert_eq!(got["subservice"], subservice, "{got}");
        assert_eq!(got["apid"], 2, "{got}");
        assert_eq!(
            got["request_id"].as_u64(),
            request_id.map(u64::from),
            "{got}"
        );
        assert_eq!(got["code"].as_u64(), code.map(u64::from), "{got}");
        let age = now - got["unix"].as_f64().expect("a time stamp");
        assert!(age.abs() < 60.0, "time stamp {age} s from now: {got}");
    }
    // pytmtc's verificator: the ping accepted, started and completed with
    // every report received; the others refused, and nothing pending.
    let status = |tc: u32| {
        lines[expected.len()..]
            .iter()
            .find(|l| l["tc"] == tc)
            .unwrap_or_else(|| panic!("status of {tc:#x}"))
            .clone()
    };
    assert_eq!(
        status(ping),
        json!({"tc": ping, "accepted": 1, "started": 1, "completed": 1, "all_received": true})
    );
    assert_eq!(
        status(housekeeping),
        json!({"tc": housekeeping, "accepted": 1, "started": 0, "completed": -1, "all_received": true})
    );
    assert_eq!(
        status(broken),
        json!({"tc": broken, "accepted": 0, "started": -1, "completed": -1, "all_received": true})
    );
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

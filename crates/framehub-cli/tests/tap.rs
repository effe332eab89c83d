//! `framehub tap` against a real `framehub serve`: the filter is applied by
//! the daemon (a subscriber that states a node gets only that node's
//! records after the tap's confirmation), the command prints what it asked
//! for, and an unfiltered subscriber still gets everything.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::mpsc;

use serde_json::Value;

use common::*;

/// `framehub tap` as a child process printing `count` records.
fn tap_command(tap: SocketAddr, filter: &[&str], count: u64) -> Child {
    framehub()
        .args([
            "tap",
            "--tap",
            &tap.to_string(),
            "--count",
            &count.to_string(),
        ])
        .args(filter)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn framehub tap")
}

/// Its records once it exits (within [`PATIENCE`]).
fn records_of(child: Child) -> Vec<Value> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = rx
        .recv_timeout(PATIENCE)
        .expect("framehub tap exits after --count records")
        .expect("output");
    assert!(output.status.success(), "{:?}", output.status);
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record per line"))
        .collect()
}

fn send(addr: SocketAddr, node: &str, stamps: std::ops::Range<u64>) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    for ts in stamps {
        s.write_all(detection(node, None, ts).as_bytes())
            .expect("send");
    }
    s
}

fn node_and_ts(records: &[Value]) -> Vec<(String, u64)> {
    records
        .iter()
        .map(|r| {
            (
                r["node"].as_str().expect("node").to_owned(),
                r["frame"]["timestamp"].as_u64().expect("timestamp"),
            )
        })
        .collect()
}

#[test]
fn a_filtered_tap_gets_only_its_node_and_an_unfiltered_one_gets_both() {
    let mut daemon = Daemon::start(&["--listen", "127.0.0.1:0", "--tap", "127.0.0.1:0"]);
    let addr = daemon.addr();
    let admin = daemon.admin();
    let tap = daemon.tap("tap");

    let only_a = tap_command(tap, &["--node", "alpha"], 20);
    let everything = tap_command(tap, &[], 40);
    // A subscriber speaking the protocol by hand, so what the daemon
    // sends it is seen unfiltered by any client code.
    let mut raw = TcpStream::connect(tap).expect("connect to tap");
    raw.set_read_timeout(Some(PATIENCE)).expect("timeout");
    raw.write_all(b"{\"subscribe\":{\"node\":[\"bravo\"],\"listener\":[\"default\"]}}\n")
        .expect("hello");
    let mut raw = BufReader::new(raw);
    eventually("three subscribers, two filters confirmed", || {
        let filtering = daemon
            .logs_so_far()
            .iter()
            .filter(|v| v["fields"]["message"] == "tap subscriber filters")
            .count();
        let (_, metrics) = http_get(admin, "/metrics");
        filtering == 2 && metrics.contains("framehub_tap_subscribers{sink=\"tap\"} 3")
    });

    // Two nodes on two connections, interleaved, so chunks hold both.
    let mut a = send(addr, "alpha", 0..0);
    let mut b = send(addr, "bravo", 0..0);
    for ts in 0..20 {
        a.write_all(detection("alpha", None, ts).as_bytes())
            .expect("alpha");
        b.write_all(detection("bravo", None, ts).as_bytes())
            .expect("bravo");
    }

    let everything = records_of(everything);
    let mut seen = node_and_ts(&everything);
    seen.sort();
    let mut expected: Vec<(String, u64)> = (0..20)
        .flat_map(|ts| [("alpha".to_owned(), ts), ("bravo".to_owned(), ts)])
        .collect();
    expected.sort();
    assert_eq!(seen, expected, "the unfiltered tap gets both nodes");

    let only_a = node_and_ts(&records_of(only_a));
    assert_eq!(
        only_a,
        (0..20)
            .map(|ts| ("alpha".to_owned(), ts))
            .collect::<Vec<_>>(),
        "framehub tap --node alpha prints alpha's records, in order"
    );

    // The daemon sent the raw subscriber its confirmation first, then
    // bravo's records only; a last bravo frame, sent after every alpha
    // record reached the taps, is the next line: nothing of alpha's came
    // in between.
    b.write_all(detection("bravo", None, 999).as_bytes())
        .expect("bravo");
    let mut line = String::new();
    raw.read_line(&mut line).expect("confirmation");
    assert_eq!(
        line,
        "{\"subscribed\":{\"node\":[\"bravo\"],\"listener\":[\"default\"]}}\n"
    );
    let mut got = Vec::new();
    for _ in 0..21 {
        line.clear();
        raw.read_line(&mut line).expect("record");
        got.push(serde_json::from_str::<Value>(&line).expect("record"));
    }
    let mut expected: Vec<(String, u64)> = (0..20).map(|ts| ("bravo".to_owned(), ts)).collect();
    expected.push(("bravo".to_owned(), 999));
    assert_eq!(node_and_ts(&got), expected);
    assert!(got.iter().all(|r| r["listener"] == "default"), "{got:?}");
    drop((a, b));
    assert_eq!(daemon.terminate(), 0);
}

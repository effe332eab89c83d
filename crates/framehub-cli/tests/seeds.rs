//! The seed systems' clients against `framehub serve` as a process: a
//! failed login shows in the exit line's counts, and logs written to a
//! pipe carry no colour codes.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Instant;

use common::*;

/// After two failed logins, `received=2` and `dropped=2`: the frames of a
/// connection closed for a bad token are counted, not lost from sight.
#[test]
fn failed_logins_show_in_the_exit_line() {
    let mut d = Daemon::start(&["--listen", "127.0.0.1:0", "--token", "secret"]);
    let addr = d.addr();
    for token in [Some("guess"), None] {
        let mut s = TcpStream::connect(addr).expect("connect");
        writeln!(s, "{}", detection("radar3", token, 1)).expect("write");
        s.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let mut rest = Vec::new();
        // The server closes the connection: read returns 0 (or a reset).
        let _ = std::io::Read::read_to_end(&mut s, &mut rest);
        assert!(rest.is_empty(), "no reply to a failed login");
    }
    assert_eq!(d.terminate(), 0);
    let stopped = d.wait_log("stopped; every delivered frame written");
    assert_eq!(stopped["received"], 2, "{stopped}");
    assert_eq!(stopped["delivered"], 0, "{stopped}");
    assert_eq!(stopped["dropped"], 2, "{stopped}");
}

/// The default (pretty) log format on a pipe: plain text, no escape codes.
#[test]
fn logs_on_a_pipe_carry_no_colour_codes() {
    let mut child = framehub()
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn framehub");
    let stderr = child.stderr.take().expect("stderr");
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("utf-8 log line");
        let listening = line.contains("listening");
        seen.push(line);
        if listening || Instant::now() > deadline {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter().any(|l| l.contains("listening")),
        "no listening line: {seen:?}"
    );
    for line in &seen {
        assert!(!line.contains('\u{1b}'), "escape code on a pipe: {line:?}");
    }
}

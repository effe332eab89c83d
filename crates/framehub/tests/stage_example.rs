//! `examples/stage.rs` as a real process: packets of three clients come out
//! as one group line on stdout, and a line typed on stdin reaches every
//! client, newline included.
//!
//! `cargo test` builds the examples next to this test binary
//! (`target/<profile>/examples/`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(20);

fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>/examples/stage
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join("examples").join("stage");
    assert!(
        path.exists(),
        "{} not built; `cargo test` builds examples (or run `cargo build --examples`)",
        path.display()
    );
    path
}

/// Lines of a child's pipe, read on a thread so waits can time out.
fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_stage_groups_packets_and_broadcasts_stdin() {
    let mut child = Kill(
        Command::new(example())
            .args(["--listen", "127.0.0.1:0", "--group-max-delay", "1s"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the stage example"),
    );
    let stdout = lines(child.0.stdout.take().expect("stdout"));
    let stderr = lines(child.0.stderr.take().expect("stderr"));
    let first = stderr.recv_timeout(PATIENCE).expect("listening line");
    let addr = first
        .strip_prefix("stage listening on ")
        .unwrap_or_else(|| panic!("unexpected: {first}"));
    let mut clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    // Three packets of 8 bytes, one per client, well within the group's
    // delay (1 s) of each other.
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(format!("packet-{i}").as_bytes()).expect("send");
    }
    let group = stdout.recv_timeout(PATIENCE).expect("a group line");
    assert_eq!(group, "group 3 packets 24 bytes from 3 clients");

    let mut stdin = child.0.stdin.take().expect("stdin");
    stdin.write_all(b"hello clients\n").expect("type a line");
    assert_eq!(
        stderr.recv_timeout(PATIENCE).expect("broadcast report"),
        "sent to 3 clients"
    );
    for c in &mut clients {
        c.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let mut got = [0u8; 14];
        c.read_exact(&mut got).expect("the line");
        assert_eq!(&got, b"hello clients\n");
    }
}

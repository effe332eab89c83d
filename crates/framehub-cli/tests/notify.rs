//! `Type=notify` under a service manager: the daemon says READY=1 once it
//! serves, pings WATCHDOG=1 at half of WATCHDOG_USEC, and says STOPPING=1
//! when SIGTERM arrives; checked against a NOTIFY_SOCKET the test binds.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

fn recv(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification in time");
    String::from_utf8(buf[..n].to_vec()).expect("utf-8")
}

#[test]
fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = temp_dir("notify");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the fake NOTIFY_SOCKET");
    socket.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut command = framehub();
    command
        .args(["serve", "--log-format", "json", "--quiet"])
        .args([
            "--admin",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--out",
            "/dev/null",
        ])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID");
    let mut daemon = Daemon::spawn(command);

    let first = recv(&socket);
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    // Ready means serving: the admin server and the listener answer now.
    let admin = daemon.admin();
    let (status, body) = http_get(admin, "/readyz");
    assert_eq!(status, 200, "{body}");
    std::net::TcpStream::connect(daemon.addr()).expect("listener accepts");

    // The watchdog: every 100 ms (half of 200 ms), so several in a second.
    let start = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        let m = recv(&socket);
        assert_eq!(m, "WATCHDOG=1", "only pings between ready and stop");
        pings += 1;
    }
    assert!(start.elapsed() < PATIENCE);

    assert_eq!(daemon.terminate(), 0);
    let mut seen = Vec::new();
    loop {
        let m = recv(&socket);
        let stop = m.lines().any(|l| l == "STOPPING=1");
        seen.push(m);
        if stop {
            break;
        }
        assert!(seen.len() < 100, "no STOPPING=1: {seen:?}");
    }
}

#[test]
fn without_notify_socket_nothing_is_needed() {
    // The daemon starts and stops as before without the variables.
    let mut command = framehub();
    command
        .args(["serve", "--log-format", "json", "--quiet"])
        .args([
            "--admin",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--out",
            "/dev/null",
        ])
        .env_remove("NOTIFY_SOCKET")
        .env("WATCHDOG_USEC", "100000");
    let mut daemon = Daemon::spawn(command);
    daemon.addr();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(daemon.terminate(), 0);
}

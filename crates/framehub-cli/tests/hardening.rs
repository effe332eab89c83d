//! Issue 18 against the real `framehub` binary: what `check-config`
//! accepts, `serve` runs; and under a low file-descriptor limit, a flood
//! of device connections leaves `/healthz` answering.

mod common;

use common::*;

/// Values `check-config` used to accept and `serve` then failed on (a
/// panicking status task, every client closed before it speaks, 4 GiB per
/// read, a 2^40-frame queue) exit 64 naming the key, from `check-config`
/// and from `serve` alike.
#[test]
fn check_config_refuses_values_that_cannot_run() {
    let dir = temp_dir("hardening-check");
    let cfg = dir.join("bad.toml");
    for (text, key) in [
        (
            "[serve]\nstatus_interval = \"0s\"\n",
            "serve.status_interval",
        ),
        (
            "[[listener]]\n[listener.auth]\ntimeout = \"0s\"\n",
            "listener[0].auth.timeout",
        ),
        (
            "[[listener]]\nread_buffer_bytes = \"4GiB\"\n",
            "listener[0].read_buffer_bytes",
        ),
        (
            "[[listener]]\n[listener.queue]\ncapacity = 1099511627776\n",
            "listener[0].queue.capacity",
        ),
        (
            "[[listener]]\nmax_frame_bytes = \"2GiB\"\n",
            "listener[0].max_frame_bytes",
        ),
        (
            "[[listener]]\nframe_timeout = \"0s\"\n",
            "listener[0].frame_timeout",
        ),
    ] {
        std::fs::write(&cfg, text).expect("write");
        let out = framehub()
            .arg("check-config")
            .arg(&cfg)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{text}: {err}");
        assert!(err.contains(key), "{key} not named in: {err}");
        let out = framehub()
            .args(["serve", "--no-admin", "--config"])
            .arg(&cfg)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(64), "serve: {text}");
    }
    // The largest values accepted do run: the daemon starts, and SIGTERM
    // ends it cleanly.
    let good = "[serve]\nstatus_interval = \"1ms\"\n\
                [[listener]]\nbind = \"127.0.0.1:0\"\nread_buffer_bytes = \"64MiB\"\n\
                max_frame_bytes = \"256MiB\"\n\
                [listener.queue]\ncapacity = 1000000\n";
    std::fs::write(&cfg, good).expect("write");
    let out = framehub()
        .arg("check-config")
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut daemon = Daemon::with_config(&dir, good, &[]);
    let addr = daemon.addr();
    let mut device = std::net::TcpStream::connect(addr).expect("connect");
    std::io::Write::write_all(&mut device, b"{\"node_id\":\"n\"}\n").expect("write");
    drop(device);
    assert_eq!(daemon.terminate(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

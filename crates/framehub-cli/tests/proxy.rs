//! `framehub serve` behind a load balancer: with `proxy_protocol =
//! "required"`, the device address of the balancer's PROXY header is the
//! record's `peer` and `/api/connections`' peer, and a connection without
//! a header is refused and counted in `/metrics`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// A v2 PROXY header for TCP over IPv4 from `device`.
fn v2(device: [u8; 4], port: u16) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[0x21, 0x11, 0, 12]);
    out.extend_from_slice(&device);
    out.extend_from_slice(&[127, 0, 0, 1]);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&30050u16.to_be_bytes());
    out
}

#[test]
fn serve_records_the_device_address_from_the_proxy_header() {
    let dir = temp_dir("proxy");
    let out = dir.join("frames.ndjson");
    let mut daemon = Daemon::with_config(
        &dir,
        &format!(
            r#"
[[listener]]
bind = "127.0.0.1:0"
proxy_protocol = "required"
trusted_proxies = ["127.0.0.1/32"]
[listener.auth]
token = "secret"

[[sink]]
type = "file"
path = "{}"
"#,
            out.display()
        ),
        &[],
    );
    let addr = daemon.addr();
    let admin = daemon.admin();

    // v2 and its first frame in one write, as HAProxy's send-proxy-v2 does.
    let mut a = TcpStream::connect(addr).expect("connect");
    let mut bytes = v2([192, 0, 2, 7], 51234);
    bytes.extend_from_slice(detection("radar1", Some("secret"), 1).as_bytes());
    bytes.extend_from_slice(detection("radar1", None, 2).as_bytes());
    a.write_all(&bytes).expect("write");
    // v1 from another device.
    let mut b = TcpStream::connect(addr).expect("connect");
    let mut bytes = b"PROXY TCP6 2001:db8::7 ::1 4000 30050\r\n".to_vec();
    bytes.extend_from_slice(detection("radar2", Some("secret"), 1).as_bytes());
    b.write_all(&bytes).expect("write");

    eventually("both devices listed", || {
        let conns = get_json(admin, "/api/connections");
        let peers: Vec<String> = conns["connections"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["peer"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        peers.contains(&"192.0.2.7:51234".to_owned())
            && peers.contains(&"[2001:db8::7]:4000".to_owned())
    });

    // No header: refused, counted, nothing recorded.
    let mut c = TcpStream::connect(addr).expect("connect");
    c.write_all(detection("radar3", Some("secret"), 1).as_bytes())
        .expect("write");
    c.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut sink = [0u8; 64];
    assert!(matches!(c.read(&mut sink), Ok(0) | Err(_)), "not closed");
    eventually("refusal in /metrics", || {
        let (status, text) = http_get(admin, "/metrics");
        status == 200
            && text.lines().any(|l| {
                l.starts_with("framehub_proxy_rejected_total{")
                    && l.contains("reason=\"missing\"")
                    && l.ends_with(" 1")
            })
    });

    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(daemon.terminate(), 0);
    let recs = records(&out);
    assert_eq!(recs.len(), 3, "{recs:?}");
    for r in &recs {
        let expected = match r["node"].as_str() {
            Some("radar1") => "192.0.2.7:51234",
            Some("radar2") => "[2001:db8::7]:4000",
            other => panic!("unexpected node {other:?}"),
        };
        assert_eq!(r["peer"], expected);
    }
    drop((a, b));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_config_names_bad_proxy_keys_and_exits_64() {
    let dir = temp_dir("proxy-check");
    let cfg = dir.join("bad.toml");
    for (text, key, says) in [
        (
            "[[listener]]\nproxy_protocol = \"required\"\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
            "listener[0].trusted_proxies",
            "10.0.0.0/33",
        ),
        (
            "[[listener]]\nproxy_protocol = \"optional\"\n",
            "listener[0].trusted_proxies",
            "must list",
        ),
        (
            "[[listener]]\nproxy_protocol = \"on\"\ntrusted_proxies = [\"::1\"]\n",
            "listener[0].proxy_protocol",
            "optional",
        ),
    ] {
        std::fs::write(&cfg, text).expect("write");
        let out = framehub()
            .arg("check-config")
            .arg(&cfg)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(64), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key) && err.contains(says), "{text}: {err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

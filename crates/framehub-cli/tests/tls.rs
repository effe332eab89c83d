//! TLS end to end with real processes and the OpenSSL commands of
//! `docs/tls.md`: `framehub serve` with mTLS and certificate identity,
//! `framehub send --ca --cert --key` pushing to it, and a bad certificate
//! file refused at start with exit code 64 naming the key.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// The first `sh` block of docs/tls.md: the CA and certificate commands.
fn doc_commands() -> &'static str {
    let doc = include_str!("../../../docs/tls.md");
    let start = doc.find("```sh\n").expect("sh block in docs/tls.md") + "```sh\n".len();
    &doc[start..start + doc[start..].find("```").expect("block end")]
}

/// openssl, installed if missing (never skipped).
fn ensure_openssl() {
    let has = || {
        Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has() {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "openssl"])
            .status();
    }
    assert!(has(), "openssl is needed and could not be installed");
}

/// Runs the documented commands in `dir`.
fn make_certificates(dir: &Path) {
    ensure_openssl();
    let out = Command::new("sh")
        .args(["-e", "-c", doc_commands()])
        .current_dir(dir)
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "docs/tls.md's commands failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "ca.pem",
        "server.pem",
        "server.key",
        "radar3.pem",
        "radar3.key",
    ] {
        assert!(dir.join(f).exists(), "{f} not made");
    }
}

#[test]
fn send_pushes_over_mtls_with_certificate_identity() {
    let dir = temp_dir("tls-send");
    make_certificates(&dir);
    let out = dir.join("frames.ndjson");
    let config = format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"
[listener.auth]
identity = "certificate"
[listener.tls]
cert = "{d}/server.pem"
key = "{d}/server.key"
client_ca = "{d}/ca.pem"
"#,
        d = dir.display()
    );
    let mut daemon = Daemon::with_config(&dir, &config, &["--out", out.to_str().expect("path")]);
    let addr = daemon.addr();
    let mut send = framehub()
        .args(["send", "--to", &format!("localhost:{}", addr.port())])
        .arg("--ca")
        .arg(dir.join("ca.pem"))
        .arg("--cert")
        .arg(dir.join("radar3.pem"))
        .arg("--key")
        .arg(dir.join("radar3.key"))
        .args(["--node-id", "radar3", "--heartbeat", "off"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("send runs");
    {
        let mut stdin = send.stdin.take().expect("stdin");
        for ts in 0..100u64 {
            writeln!(stdin, "{{\"timestamp\":{ts},\"delay\":[1.5]}}").expect("write");
        }
    }
    let sent = send.wait_with_output().expect("send exits");
    assert!(
        sent.status.success(),
        "send failed: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    eventually("100 records", || line_count(&out) == 100);
    for (ts, r) in records(&out).iter().enumerate() {
        assert_eq!(r["node"], "radar3");
        assert_eq!(r["frame"]["timestamp"], ts as u64);
    }
    assert_eq!(daemon.terminate(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_certificate_file_exits_64_naming_the_key() {
    let dir = temp_dir("tls-bad");
    make_certificates(&dir);
    std::fs::write(dir.join("broken.pem"), "not PEM").expect("write");
    for (key, cert, private) in [
        ("listener[0].tls.cert", "missing.pem", "server.key"),
        ("listener[0].tls.cert", "broken.pem", "server.key"),
        ("listener[0].tls.key", "server.pem", "radar3.key"),
    ] {
        let config = format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[listener.tls]\ncert = \"{d}/{cert}\"\nkey = \"{d}/{private}\"\n",
            d = dir.display()
        );
        let path = dir.join("bad.toml");
        std::fs::write(&path, config).expect("write");
        let out = framehub()
            .args(["serve", "--admin", "127.0.0.1:0", "--config"])
            .arg(&path)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{cert}/{private}: {err}");
        assert!(err.contains(key), "{key} not named in: {err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `framehub send` pushing one frame over TLS trusting `ca`: whether it
/// got through (it retries a failed handshake for ever, so it is stopped
/// after a few seconds and counts as failed).
fn send_one(addr: std::net::SocketAddr, ca: &Path, ts: u64) -> bool {
    let mut send = framehub()
        .args(["send", "--to", &format!("localhost:{}", addr.port())])
        .arg("--ca")
        .arg(ca)
        .args(["--node-id", "radar3", "--heartbeat", "off"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("send runs");
    {
        let mut stdin = send.stdin.take().expect("stdin");
        writeln!(stdin, "{{\"timestamp\":{ts}}}").expect("write");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    loop {
        if let Some(status) = send.try_wait().expect("wait") {
            return status.success();
        }
        if std::time::Instant::now() > deadline {
            let _ = send.kill();
            let _ = send.wait();
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// SIGHUP rereads a TLS listener's certificate and key: after the files
/// are replaced by ones from another CA, new handshakes need that CA.
#[test]
fn sighup_reloads_the_certificates() {
    let dir = temp_dir("tls-hup");
    let (old, new, live) = (dir.join("old"), dir.join("new"), dir.join("live"));
    for d in [&old, &new, &live] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    make_certificates(&old);
    make_certificates(&new);
    for f in ["server.pem", "server.key"] {
        std::fs::copy(old.join(f), live.join(f)).expect("copy");
    }
    let out = dir.join("frames.ndjson");
    let config = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[listener.tls]\ncert = \"{d}/server.pem\"\nkey = \"{d}/server.key\"\n",
        d = live.display()
    );
    let mut daemon = Daemon::with_config(&dir, &config, &["--out", out.to_str().expect("path")]);
    let addr = daemon.addr();
    assert!(send_one(addr, &old.join("ca.pem"), 1), "the first CA works");
    assert!(
        !send_one(addr, &new.join("ca.pem"), 2),
        "the second CA is not trusted before the reload"
    );
    for f in ["server.pem", "server.key"] {
        std::fs::copy(new.join(f), live.join(f)).expect("copy");
    }
    let status = Command::new("kill")
        .args(["-HUP", &daemon.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    daemon.wait_log("reloaded");
    assert!(
        send_one(addr, &new.join("ca.pem"), 3),
        "the new certificate is served"
    );
    eventually("two records", || line_count(&out) == 2);
    let stamps: Vec<_> = records(&out)
        .iter()
        .map(|r| r["frame"]["timestamp"].clone())
        .collect();
    assert_eq!(stamps, [1, 3]);
    assert_eq!(daemon.terminate(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

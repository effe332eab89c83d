//! The admin port's door, against real `framehub serve` processes: a token
//! off loopback (or no start), 401s counted, open probes, HTTPS with a
//! certificate made here, stalled headers and bodies closed in bounded
//! time, and the connection cap.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Daemon, PATIENCE, eventually, framehub, http_get, temp_dir};
use tokio_rustls::rustls;

const TOKEN: &str = "adm1n-t0ken-for-tests";

/// `framehub serve` with JSON logs, the admin server on `admin`, a config
/// file holding `toml`, and `FRAMEHUB_ADMIN_TOKEN` set to `env_token`
/// (removed when `None`, so the caller's environment cannot leak in).
fn serve(dir: &Path, admin: &str, toml: &str, env_token: Option<&str>) -> Command {
    let config = dir.join("framehub.toml");
    std::fs::write(&config, toml).expect("write config");
    let mut command = framehub();
    command
        .args(["serve", "--log-format", "json", "--quiet", "--admin", admin])
        .arg("--config")
        .arg(&config)
        .env_remove("FRAMEHUB_ADMIN_TOKEN");
    if let Some(token) = env_token {
        command.env("FRAMEHUB_ADMIN_TOKEN", token);
    }
    command
}

/// A listener on an ephemeral port, so daemons can run in parallel.
const LISTENER: &str = "[[listener]]\nbind = \"127.0.0.1:0\"\n";

/// The admin server's address, reached over loopback even when it is
/// bound to every address.
fn admin_addr(daemon: &mut Daemon) -> SocketAddr {
    let mut addr = daemon.admin();
    if addr.ip().is_unspecified() {
        addr.set_ip([127, 0, 0, 1].into());
    }
    addr
}

/// One request written as `head` (request line and headers, without the
/// blank line) on `stream`: the status code and the body.
fn exchange(mut stream: impl Read + Write, head: &str) -> (u16, String) {
    write!(stream, "{head}\r\nConnection: close\r\n\r\n").expect("request");
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        // A TLS peer that closes without close_notify, once the whole
        // response is in.
        Err(e) if e.kind() == ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => panic!("response: {e}"),
    }
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, body.to_owned())
}

fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let auth = token
        .map(|t| format!("\r\nAuthorization: Bearer {t}"))
        .unwrap_or_default();
    exchange(
        stream,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}{auth}"),
    )
}

/// A sample of `/metrics` (fetched with `token`), by name and labels.
fn metric(addr: SocketAddr, token: Option<&str>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (status, body) = get(addr, "/metrics", token);
    assert_eq!(status, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("exposition");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name}: not a number"),
        })
        .unwrap_or_else(|| panic!("no {name} {labels:?} in /metrics"))
}

/// Waits for the process to exit (killing it after [`PATIENCE`]) and
/// returns its exit code and stderr.
fn exit_of(mut command: Command) -> (i32, String) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn framehub");
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("framehub kept running; it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    (
        output.status.code().expect("exit code"),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Reads until the server closes `stream` (EOF or reset); how long that
/// took from `since`.
fn closed_after(stream: &mut TcpStream, since: Instant) -> Duration {
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return since.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!("still open after {:?}", since.elapsed())
            }
            Err(_) => return since.elapsed(),
        }
    }
}

#[test]
fn admin_off_loopback_without_a_token_does_not_start() {
    let dir = temp_dir("admin-no-token");
    let (code, stderr) = exit_of(serve(&dir, "0.0.0.0:0", LISTENER, None));
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("admin.token"), "{stderr}");
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    // The same from the config file, and check-config says so too.
    let config = dir.join("bind.toml");
    std::fs::write(&config, format!("{LISTENER}[admin]\nbind = \"[::]:0\"\n")).expect("write");
    let (code, stderr) = exit_of({
        let mut c = framehub();
        c.args(["serve", "--quiet", "--config"])
            .arg(&config)
            .env_remove("FRAMEHUB_ADMIN_TOKEN");
        c
    });
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("admin.token"), "{stderr}");
    let (code, stderr) = exit_of({
        let mut c = framehub();
        c.arg("check-config")
            .arg(&config)
            .env_remove("FRAMEHUB_ADMIN_TOKEN");
        c
    });
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("admin.token"), "{stderr}");
}

#[test]
fn the_token_guards_metrics_and_the_api_and_the_probes_stay_open() {
    let dir = temp_dir("admin-token");
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let toml = format!(
        "{LISTENER}[admin]\nsend = true\ntoken_file = {:?}\n",
        token_file.to_str().expect("path")
    );
    let mut daemon = Daemon::spawn(serve(&dir, "0.0.0.0:0", &toml, None));
    let admin = admin_addr(&mut daemon);

    for path in [
        "/metrics",
        "/api/nodes",
        "/api/connections",
        "/api/stats",
        "/nope",
    ] {
        assert_eq!(get(admin, path, None).0, 401, "{path} without a token");
        assert_eq!(get(admin, path, Some("wrong")).0, 401, "{path} wrong token");
    }
    let long = format!("{TOKEN}x");
    assert_eq!(get(admin, "/metrics", Some(&long)).0, 401);
    assert_eq!(
        get(admin, "/metrics", Some(&TOKEN[..TOKEN.len() - 1])).0,
        401
    );
    let (status, body) = common::http_request(admin, "POST", "/api/send", b"x");
    assert_eq!(status, 401, "{body}");
    // 10 x 2 + 2 + 1 refused.
    assert_eq!(
        metric(
            admin,
            Some(TOKEN),
            "framehub_admin_requests_rejected_total",
            &[("reason", "unauthorized")]
        ),
        13.0
    );
    for path in ["/api/nodes", "/api/connections", "/api/stats"] {
        let (status, body) = get(admin, path, Some(TOKEN));
        assert_eq!(status, 200, "{path}: {body}");
    }
    // Health checks of load balancers and orchestrators need no token.
    assert_eq!(http_get(admin, "/healthz").0, 200);
    assert_eq!(http_get(admin, "/readyz").0, 200);

    // Every refusal names the peer; no log line holds the token.
    let refused = daemon.wait_log("admin request refused: missing or wrong token");
    assert!(
        refused["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:"))
    );
    let logs = serde_json::to_string(daemon.logs_so_far()).expect("logs");
    assert!(!logs.contains(TOKEN), "the token is in a log line");
    assert_eq!(daemon.terminate(), 0);
}

#[test]
fn stalled_headers_are_closed_within_the_header_timeout() {
    const STALLED: usize = 300;
    let dir = temp_dir("admin-stalled-headers");
    let toml = format!("{LISTENER}[admin]\nheader_timeout = \"1s\"\nmax_connections = 1000\n");
    let mut daemon = Daemon::spawn(serve(&dir, "127.0.0.1:0", &toml, None));
    let admin = admin_addr(&mut daemon);
    let start = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..STALLED)
        .map(|i| {
            let mut s = TcpStream::connect(admin).expect("connect");
            // Some send half a request line, some half the headers, some
            // nothing at all.
            let partial: &[u8] = match i % 3 {
                0 => b"GET /metr",
                1 => b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
                _ => b"",
            };
            s.write_all(partial).expect("partial request");
            s
        })
        .collect();
    let opened = start.elapsed();
    // A whole request is answered meanwhile.
    assert_eq!(http_get(admin, "/healthz").0, 200);
    for s in &mut stalled {
        let after = closed_after(s, start);
        assert!(
            after < opened + Duration::from_secs(4),
            "a stalled connection was held {after:?} with header_timeout = 1s"
        );
    }
    eventually("every stalled connection counted", || {
        metric(
            admin,
            None,
            "framehub_admin_connections_closed_total",
            &[("reason", "header_timeout")],
        ) == STALLED as f64
    });
    daemon.wait_log(
        "admin connection closed: no whole request headers within [admin] header_timeout",
    );
    assert_eq!(daemon.terminate(), 0);
}

#[test]
fn a_stalled_body_is_closed_within_the_body_timeout_and_a_huge_one_refused() {
    let dir = temp_dir("admin-stalled-body");
    let toml = format!(
        "{LISTENER}[admin]\nsend = true\nbody_timeout = \"1s\"\nheader_timeout = \"30s\"\n"
    );
    let mut daemon = Daemon::spawn(serve(&dir, "127.0.0.1:0", &toml, None));
    let admin = admin_addr(&mut daemon);

    let mut s = TcpStream::connect(admin).expect("connect");
    let start = Instant::now();
    write!(
        s,
        "POST /api/send HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 100\r\n\r\nonly ten b"
    )
    .expect("request");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut raw = Vec::new();
    // The 408 and then the end of the connection, in bounded time.
    let _ = s.read_to_end(&mut raw);
    let after = start.elapsed();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        after < Duration::from_secs(4),
        "a stalled body was held {after:?} with body_timeout = 1s"
    );
    assert_eq!(
        metric(
            admin,
            None,
            "framehub_admin_requests_rejected_total",
            &[("reason", "body_timeout")]
        ),
        1.0
    );

    // Over 2 MiB: refused from its Content-Length, before it is read.
    let s = TcpStream::connect(admin).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let (status, body) = exchange(
        s,
        &format!("POST /api/send HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 3000000"),
    );
    assert_eq!(status, 413, "{body}");
    // Chunked, so only the bytes tell.
    let mut s = TcpStream::connect(admin).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    write!(
        s,
        "POST /api/send HTTP/1.1\r\nHost: {admin}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .expect("head");
    let chunk = vec![b'a'; 64 << 10];
    let mut raw = Vec::new();
    for _ in 0..40 {
        if write!(s, "{:x}\r\n", chunk.len()).is_err()
            || s.write_all(&chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(
        metric(
            admin,
            None,
            "framehub_admin_requests_rejected_total",
            &[("reason", "body_too_large")]
        ),
        2.0
    );
    assert_eq!(daemon.terminate(), 0);
}

#[test]
fn connections_beyond_max_connections_are_refused_and_the_slots_come_back() {
    let dir = temp_dir("admin-max-connections");
    let toml = format!("{LISTENER}[admin]\nmax_connections = 4\nheader_timeout = \"30s\"\n");
    let mut daemon = Daemon::spawn(serve(&dir, "127.0.0.1:0", &toml, None));
    let admin = admin_addr(&mut daemon);
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(admin).expect("connect"))
        .collect();
    // Accepted in order: these find every slot taken, and are closed at
    // once, long before the 30 s header timeout.
    for _ in 0..3 {
        let mut extra = TcpStream::connect(admin).expect("connect");
        let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let after = closed_after(&mut extra, Instant::now());
        assert!(after < Duration::from_secs(5), "refused after {after:?}");
    }
    let refused = daemon.wait_log("admin connection refused: max_connections open");
    assert_eq!(refused["max_connections"], 4);
    drop(held);
    eventually("/healthz answers once the held connections close", || {
        TcpStream::connect(admin)
            .ok()
            .and_then(|s| {
                s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                let mut s = s;
                write!(
                    s,
                    "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
                .ok()?;
                let mut raw = String::new();
                s.read_to_string(&mut raw).ok()?;
                Some(raw.starts_with("HTTP/1.1 200"))
            })
            .unwrap_or(false)
    });
    // The three, and any /healthz above that came before the server saw
    // the held connections close.
    let rejected = metric(
        admin,
        None,
        "framehub_admin_connections_rejected_total",
        &[],
    );
    assert!(rejected >= 3.0, "{rejected}");
    assert_eq!(daemon.terminate(), 0);
}

/// A client that trusts only `ca_der`, over the ring provider.
fn tls_client(
    addr: SocketAddr,
    ca_der: rustls::pki_types::CertificateDer<'static>,
) -> impl Read + Write {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(PATIENCE)).expect("timeout");
    rustls::StreamOwned::new(conn, tcp)
}

#[test]
fn admin_over_tls_answers_with_the_token() {
    let dir = temp_dir("admin-tls");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let (cert, key) = (dir.join("admin.pem"), dir.join("admin.key"));
    std::fs::write(&cert, certified.cert.pem()).expect("cert");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("key");
    let toml = format!(
        "{LISTENER}[admin]\nheader_timeout = \"1s\"\n[admin.tls]\ncert = {:?}\nkey = {:?}\n",
        cert.to_str().expect("path"),
        key.to_str().expect("path")
    );
    // With TLS, off loopback still needs the token: here from the
    // environment, never on the command line.
    let (code, stderr) = exit_of(serve(&dir, "0.0.0.0:0", &toml, None));
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("admin.token"), "{stderr}");
    let mut daemon = Daemon::spawn(serve(&dir, "0.0.0.0:0", &toml, Some(TOKEN)));
    let admin = admin_addr(&mut daemon);
    let ca = certified.cert.der().clone();

    let head = |path: &str, token: Option<&str>| {
        let auth = token
            .map(|t| format!("\r\nAuthorization: Bearer {t}"))
            .unwrap_or_default();
        format!("GET {path} HTTP/1.1\r\nHost: localhost{auth}")
    };
    let (status, body) = exchange(
        tls_client(admin, ca.clone()),
        &head("/metrics", Some(TOKEN)),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("framehub_admin_connections_open"), "{body}");
    assert_eq!(
        exchange(tls_client(admin, ca.clone()), &head("/api/nodes", None)).0,
        401
    );
    assert_eq!(
        exchange(tls_client(admin, ca.clone()), &head("/healthz", None)).0,
        200
    );

    // Plain HTTP on the TLS port, and a client that never starts its
    // handshake: both closed within the header timeout, and counted.
    let mut plain = TcpStream::connect(admin).expect("connect");
    let start = Instant::now();
    let _ = write!(plain, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(closed_after(&mut plain, start) < Duration::from_secs(4));
    let mut silent = TcpStream::connect(admin).expect("connect");
    let start = Instant::now();
    assert!(closed_after(&mut silent, start) < Duration::from_secs(4));
    let mut closed = 0.0;
    eventually("both counted", || {
        let (status, body) = exchange(
            tls_client(admin, ca.clone()),
            &head("/metrics", Some(TOKEN)),
        );
        assert_eq!(status, 200);
        closed = body
            .lines()
            .find(|l| {
                l.starts_with("framehub_admin_connections_closed_total{reason=\"tls_handshake\"}")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .expect("tls_handshake sample");
        closed == 2.0
    });
    let logs = serde_json::to_string(daemon.logs_so_far()).expect("logs");
    assert!(!logs.contains(TOKEN), "the token is in a log line");
    assert_eq!(daemon.terminate(), 0);
}

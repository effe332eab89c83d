//! TLS and mTLS on real sockets, with certificates made at test time:
//! round trips in two framings and egress, client certificates refused by
//! reason, certificate identity, plaintext and stalled clients, another
//! TLS stack (python3's `ssl`), the reconnecting client over TLS, and
//! reloading certificates.

mod common;
#[path = "common/tls.rs"]
mod pki;

use std::time::{Duration, Instant};

use common::*;
use framehub::codec::LengthPrefix;
use framehub::{
    AuthConfig, Client, ClientConfig, ClientTlsConfig, CloseReason, DropReason, FramingConfig,
    HubConfig, HubError, Identity, IdentityFrom, ListenerConfig, Protocol, TlsFailure,
};
use pki::{Ca, Leaf, Pki};
use rcgen::ExtendedKeyUsagePurpose;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn tls_listener(pki: &Pki, client_ca: bool) -> ListenerConfig {
    ListenerConfig {
        tls: pki.server_tls(client_ca),
        ..node_listener(None)
    }
}

/// Reads from a TLS stream until `want` bytes came, or panics.
async fn read_exactly<S: AsyncReadExt + Unpin>(stream: &mut S, want: usize) -> Vec<u8> {
    let mut got = vec![0u8; want];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut got))
        .await
        .expect("in time")
        .expect("read");
    got
}

/// True when the server closes the TLS stream (EOF or error) in time.
async fn tls_closed<S: AsyncReadExt + Unpin>(stream: &mut S) -> bool {
    let mut sink = [0u8; 256];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.is_ok()
}

#[tokio::test]
async fn node_lines_and_egress_over_tls() {
    let pki = Pki::new();
    let hub = start(ListenerConfig {
        server_heartbeat: Some(Duration::from_millis(200)),
        ..tls_listener(&pki, false)
    })
    .await;
    let radar3 = hub.receiver("radar3");
    let mut s = pki
        .connect(hub.local_addr(), None)
        .await
        .expect("handshake");
    for ts in 1..=3 {
        let line = format!("{}\n", detection("radar3", None, ts));
        s.write_all(line.as_bytes()).await.expect("write");
    }
    s.flush().await.expect("flush");
    for ts in 1..=3 {
        let frame = radar3.recv_timeout(PATIENCE).await.expect("frame");
        assert_eq!(frame.payload, detection("radar3", None, ts).as_bytes());
    }
    // Egress: a broadcast and the server heartbeat come back encrypted.
    eventually("connection registered", || {
        let n = hub.connections().len();
        async move { n == 1 }
    })
    .await;
    assert_eq!(hub.broadcast(b"{\"cmd\":\"stop\"}").expect("broadcast"), 1);
    let mut got = Vec::new();
    while !got.windows(15).any(|w| w == b"{\"cmd\":\"stop\"}\n") {
        let mut chunk = [0u8; 256];
        let n = tokio::time::timeout(PATIENCE, s.read(&mut chunk))
            .await
            .expect("egress in time")
            .expect("read");
        assert!(n > 0, "closed before egress arrived");
        got.extend_from_slice(&chunk[..n]);
    }
    let c = hub.counters();
    assert_eq!(c.tls_handshakes, 1);
    assert_eq!(c.frames_delivered, 3);
    hub.shutdown().await;
}

/// Regression: a device that only writes and then closes without reading
/// (nor sending close_notify) loses nothing and closes as `peer_closed`.
/// With TLS 1.3 session tickets on, the unread tickets made its close a
/// reset, and the reset discarded frames the hub had not read yet.
#[tokio::test]
async fn a_device_that_never_reads_loses_nothing_when_it_closes() {
    let pki = Pki::new();
    let hub = start(tls_listener(&pki, false)).await;
    let mut events = hub.events();
    let radar3 = hub.receiver_with(
        "radar3",
        framehub::QueueConfig {
            capacity: 20_000,
            ..framehub::QueueConfig::default()
        },
    );
    let mut s = pki
        .connect(hub.local_addr(), None)
        .await
        .expect("handshake");
    let mut all = String::new();
    for ts in 0..10_000 {
        all.push_str(&detection("radar3", None, ts));
        all.push('\n');
    }
    s.write_all(all.as_bytes()).await.expect("write");
    s.flush().await.expect("flush");
    drop(s);
    assert_eq!(next_close(&mut events).await.0, CloseReason::PeerClosed);
    let c = counters_until(&hub, "every frame", |c| c.frames_delivered == 10_000).await;
    assert_eq!(c.dropped_total(), 0);
    assert_eq!(radar3.len(), 10_000);
    hub.shutdown().await;
}

#[tokio::test]
async fn length_framing_over_tls() {
    let pki = Pki::new();
    let hub = start(ListenerConfig {
        protocol: Protocol::Raw,
        framing: FramingConfig::Length(LengthPrefix::default()),
        ..tls_listener(&pki, false)
    })
    .await;
    let rx = hub.listener_receiver("default").expect("raw receiver");
    let mut s = pki
        .connect(hub.local_addr(), None)
        .await
        .expect("handshake");
    let payloads: [&[u8]; 3] = [b"\x00\x01binary\xff", b"", &[7u8; 5000]];
    for p in payloads {
        s.write_all(&(p.len() as u32).to_be_bytes())
            .await
            .expect("prefix");
        s.write_all(p).await.expect("payload");
    }
    s.flush().await.expect("flush");
    for p in payloads {
        let frame = rx.recv_timeout(PATIENCE).await.expect("frame");
        assert_eq!(&frame.payload[..], p);
    }
    // And back: a length-framed broadcast.
    eventually("connection registered", || {
        let n = hub.connections().len();
        async move { n == 1 }
    })
    .await;
    hub.broadcast(b"cmd").expect("broadcast");
    assert_eq!(read_exactly(&mut s, 7).await, b"\0\0\0\x03cmd");
    hub.shutdown().await;
}

/// A good client certificate gets in; an unknown CA, an expired, a not yet
/// valid, a server-only and a missing one are refused, each counted under
/// its reason.
#[tokio::test]
async fn mtls_refuses_bad_client_certificates_by_reason() {
    let pki = Pki::new();
    let hub = start(tls_listener(&pki, true)).await;
    let addr = hub.local_addr();
    let radar3 = hub.receiver("radar3");

    let good = pki.client("good", &pki.ca, Leaf::client("radar3"));
    let mut s = pki
        .connect(addr, Some((&good.0, &good.1)))
        .await
        .expect("good handshake");
    s.write_all(format!("{}\n", detection("radar3", None, 1)).as_bytes())
        .await
        .expect("write");
    s.flush().await.expect("flush");
    assert!(radar3.recv_timeout(PATIENCE).await.is_ok());

    let other = Ca::new("someone else's CA");
    let expired = Leaf {
        validity: Some((2000, 2001)),
        ..Leaf::client("radar3")
    };
    let not_yet = Leaf {
        validity: Some((2090, 2091)),
        ..Leaf::client("radar3")
    };
    let server_only = Leaf {
        purposes: vec![ExtendedKeyUsagePurpose::ServerAuth],
        ..Leaf::client("radar3")
    };
    let cases = [
        (
            "unknown",
            pki.client("unknown", &other, Leaf::client("radar3")),
            TlsFailure::UnknownCa,
        ),
        (
            "expired",
            pki.client("expired", &pki.ca, expired),
            TlsFailure::Expired,
        ),
        (
            "notyet",
            pki.client("notyet", &pki.ca, not_yet),
            TlsFailure::NotYetValid,
        ),
        (
            "purpose",
            pki.client("purpose", &pki.ca, server_only),
            TlsFailure::WrongPurpose,
        ),
    ];
    for (name, (cert, key), failure) in &cases {
        // TLS 1.3 clients finish before the server has judged their
        // certificate: the refusal shows as the server closing.
        if let Ok(mut bad) = pki.connect(addr, Some((cert, key))).await {
            let _ = bad
                .write_all(format!("{}\n", detection("radar3", None, 9)).as_bytes())
                .await;
            let _ = bad.flush().await;
            assert!(tls_closed(&mut bad).await, "{name}: not closed");
        }
        counters_until(&hub, name, |c| c.tls_failures(*failure) == 1).await;
    }
    if let Ok(mut bare) = pki.connect(addr, None).await {
        assert!(tls_closed(&mut bare).await, "no certificate: not closed");
    }
    let c = counters_until(&hub, "missing certificate", |c| {
        c.tls_failures(TlsFailure::NoCertificate) == 1
    })
    .await;
    assert_eq!(c.tls_handshakes, 1);
    assert_eq!(
        c.connections_closed_by
            .iter()
            .find(|(label, _)| *label == "tls_failed"),
        Some(&("tls_failed", 5))
    );
    // Nothing of theirs got through.
    assert!(radar3.try_recv().is_err());
    hub.shutdown().await;
}

/// identity = "certificate": the CN binds the connection without a
/// token; frames naming another node are dropped as node_mismatch.
#[tokio::test]
async fn certificate_identity_binds_the_node() {
    let pki = Pki::new();
    let hub = start(ListenerConfig {
        auth: AuthConfig {
            identity: Identity::Certificate,
            ..AuthConfig::default()
        },
        ..tls_listener(&pki, true)
    })
    .await;
    let radar3 = hub.receiver("radar3");
    let radar4 = hub.receiver("radar4");
    let (cert, key) = pki.client("radar3", &pki.ca, Leaf::client("radar3"));
    let mut s = pki
        .connect(hub.local_addr(), Some((&cert, &key)))
        .await
        .expect("handshake");
    // Bound at the handshake, before any frame.
    eventually("bound by certificate", || {
        let bound = hub
            .connections()
            .iter()
            .any(|c| c.node.as_deref() == Some("radar3"));
        async move { bound }
    })
    .await;
    for line in [
        detection("radar4", None, 1),
        detection("radar3", None, 2),
        "{\"node_id\":\"radar4\",\"token\":\"anything\",\"timestamp\":3}".to_owned(),
    ] {
        s.write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write");
    }
    s.flush().await.expect("flush");
    let frame = radar3.recv_timeout(PATIENCE).await.expect("radar3's frame");
    assert_eq!(frame.payload, detection("radar3", None, 2).as_bytes());
    assert_eq!(frame.source.node.as_deref(), Some("radar3"));
    let c = counters_until(&hub, "two mismatches", |c| {
        c.dropped(DropReason::NodeMismatch) == 2
    })
    .await;
    assert_eq!(c.auth_failures, 0);
    assert!(radar4.try_recv().is_err());

    // A certificate without the field identity_from reads is refused.
    let nameless = Leaf {
        cn: None,
        dns: vec!["radar5.fleet".into()],
        ..Leaf::client("")
    };
    let (cert, key) = pki.client("nameless", &pki.ca, nameless);
    if let Ok(mut s) = pki.connect(hub.local_addr(), Some((&cert, &key))).await {
        assert!(tls_closed(&mut s).await);
    }
    counters_until(&hub, "no identity", |c| {
        c.tls_failures(TlsFailure::NoIdentity) == 1
    })
    .await;
    hub.shutdown().await;
}

#[tokio::test]
async fn identity_from_a_uri_san() {
    let pki = Pki::new();
    let hub = start(ListenerConfig {
        auth: AuthConfig {
            identity: Identity::Certificate,
            identity_from: IdentityFrom::UriSan,
            ..AuthConfig::default()
        },
        ..tls_listener(&pki, true)
    })
    .await;
    let node = "spiffe://fleet/radar7";
    let rx = hub.receiver(node);
    let leaf = Leaf {
        uris: vec![node.into()],
        ..Leaf::client("not-the-node")
    };
    let (cert, key) = pki.client("uri", &pki.ca, leaf);
    let mut s = pki
        .connect(hub.local_addr(), Some((&cert, &key)))
        .await
        .expect("handshake");
    let line = format!("{}\n", detection(node, None, 1));
    s.write_all(line.as_bytes()).await.expect("write");
    s.flush().await.expect("flush");
    let frame = rx.recv_timeout(PATIENCE).await.expect("frame");
    assert_eq!(frame.source.node.as_deref(), Some(node));
    hub.shutdown().await;
}

/// A plaintext client is closed at once; a silent one and one that stalls
/// mid-handshake within the handshake timeout; each counted.
#[tokio::test]
async fn plaintext_and_stalled_handshakes_are_closed_in_time() {
    let pki = Pki::new();
    let timeout = Duration::from_millis(300);
    let mut l = tls_listener(&pki, false);
    l.tls.handshake_timeout = timeout;
    l.max_connections = 2;
    let hub = start(l).await;
    let mut events = hub.events();

    let mut plain = connect(&hub).await;
    send_line(&mut plain, &detection("radar3", None, 1)).await;
    let started = Instant::now();
    expect_closed(&mut plain).await;
    assert!(
        started.elapsed() < timeout,
        "plaintext closed only after the timeout"
    );
    assert_eq!(
        next_close(&mut events).await.0,
        CloseReason::TlsFailed(TlsFailure::NotTls)
    );

    let mut silent = connect(&hub).await;
    // The start of a ClientHello, then nothing.
    let mut stalled = connect(&hub).await;
    send(&mut stalled, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await;
    let started = Instant::now();
    expect_closed(&mut silent).await;
    expect_closed(&mut stalled).await;
    let took = started.elapsed();
    assert!(
        took >= timeout - Duration::from_millis(50),
        "closed early: {took:?}"
    );
    assert!(
        took < timeout + Duration::from_secs(3),
        "closed late: {took:?}"
    );
    let c = counters_until(&hub, "two timeouts", |c| {
        c.tls_failures(TlsFailure::Timeout) == 2
    })
    .await;
    assert_eq!(c.tls_failures(TlsFailure::NotTls), 1);
    assert_eq!(c.connections_open, 0);
    // The slots are free again: max_connections is 2.
    let mut a = pki.connect(hub.local_addr(), None).await.expect("a");
    let mut b = pki.connect(hub.local_addr(), None).await.expect("b");
    a.write_all(b"{}\n").await.expect("a writes");
    b.write_all(b"{}\n").await.expect("b writes");
    hub.shutdown().await;
}

/// Another TLS stack: python3's `ssl` module, with a client certificate.
#[tokio::test]
async fn python_ssl_client_talks_to_framehub() {
    ensure_python_ssl();
    let pki = Pki::new();
    let hub = start(ListenerConfig {
        auth: AuthConfig {
            identity: Identity::Certificate,
            ..AuthConfig::default()
        },
        ..tls_listener(&pki, true)
    })
    .await;
    let rx = hub.receiver("py1");
    let (cert, key) = pki.client("py1", &pki.ca, Leaf::client("py1"));
    let script = r#"
import socket, ssl, sys
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
ctx.load_cert_chain(cert, key)
with socket.create_connection(("127.0.0.1", port)) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b'{"node_id":"py1","timestamp":1,"v":"' + s.version().encode() + b'"}\n')
        s.recv(1)  # until the server closes
"#;
    let port = hub.local_addr().port().to_string();
    let mut child = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&port)
        .arg(pki.path("ca.pem"))
        .arg(&cert)
        .arg(&key)
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let frame = rx.recv_timeout(PATIENCE).await.expect("python's frame");
    let text = String::from_utf8_lossy(&frame.payload).into_owned();
    assert!(
        text.starts_with("{\"node_id\":\"py1\",\"timestamp\":1,\"v\":\"TLSv1."),
        "{text}"
    );
    hub.shutdown().await;
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("python exits")
        .expect("status");
    assert!(status.success(), "python3 failed: {status}");
}

/// python3 with its `ssl` module, installed if missing (never skipped).
fn ensure_python_ssl() {
    let has = || {
        std::process::Command::new("python3")
            .args(["-c", "import ssl"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has() {
        let _ = std::process::Command::new("apt-get")
            .args(["install", "-y", "python3"])
            .status();
    }
    assert!(
        has(),
        "python3 with the ssl module is needed and could not be installed"
    );
}

/// The reconnecting client over mTLS: its frames arrive, and after the
/// server restarts on the same port it reconnects and goes on.
#[tokio::test]
async fn client_over_tls_reconnects() {
    let pki = Pki::new();
    let listener = ListenerConfig {
        auth: AuthConfig {
            identity: Identity::Certificate,
            ..AuthConfig::default()
        },
        ..tls_listener(&pki, true)
    };
    let hub = start(listener.clone()).await;
    let addr = hub.local_addr();
    let (cert, key) = pki.client("radar3", &pki.ca, Leaf::client("radar3"));
    let client = Client::start(ClientConfig {
        protocol: framehub::ClientProtocol::Node(framehub::NodeIdentity {
            node_id: Some("radar3".into()),
            ..Default::default()
        }),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        tls: Some(ClientTlsConfig {
            cert: Some(cert),
            key: Some(key),
            ..ClientTlsConfig::new(pki.path("ca.pem"))
        }),
        ..ClientConfig::new(format!("localhost:{}", addr.port()))
    })
    .expect("client starts");
    let rx = hub.receiver("radar3");
    client
        .send(detection("radar3", None, 1).into_bytes())
        .await
        .expect("send");
    let frame = rx.recv_timeout(PATIENCE).await.expect("first frame");
    assert_eq!(frame.payload, detection("radar3", None, 1).as_bytes());
    hub.shutdown().await;
    drop(hub);

    let hub = start(ListenerConfig {
        bind: Some(addr),
        ..listener
    })
    .await;
    let rx = hub.receiver("radar3");
    client
        .send(detection("radar3", None, 2).into_bytes())
        .await
        .expect("send");
    let frame = rx
        .recv_timeout(PATIENCE)
        .await
        .expect("frame after restart");
    assert_eq!(frame.payload, detection("radar3", None, 2).as_bytes());
    assert!(client.counters().connects >= 2);
    client.close(PATIENCE).await.expect("close");
    hub.shutdown().await;
}

/// A client that does not trust the server's CA never gets in, and keeps
/// retrying with backoff like after any failed connect.
#[tokio::test]
async fn client_with_the_wrong_ca_retries() {
    let pki = Pki::new();
    let hub = start(tls_listener(&pki, false)).await;
    let other = Pki::new();
    let client = Client::start(ClientConfig {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(50),
        tls: Some(ClientTlsConfig::new(other.path("ca.pem"))),
        ..ClientConfig::new(hub.local_addr().to_string())
    })
    .expect("client starts");
    eventually("retries", || {
        let failures = client.counters().connect_failures;
        async move { failures >= 3 }
    })
    .await;
    assert_eq!(client.counters().connects, 0);
    counters_until(&hub, "refusals counted", |c| {
        c.tls_failures(TlsFailure::Handshake) >= 3
    })
    .await;
    hub.shutdown().await;
}

/// Certificates are read at start (a bad file names its key) and again by
/// reload_tls: new handshakes use the new ones, open connections stay.
#[tokio::test]
async fn certificates_load_and_reload() {
    let pki = Pki::new();
    let mut bad = tls_listener(&pki, false);
    bad.tls.cert = Some(pki.path("missing.pem"));
    match framehub::Hub::start(HubConfig {
        listener: vec![bad],
        ..HubConfig::default()
    })
    .await
    {
        Err(HubError::Config(e)) => assert_eq!(e.key, "listener[0].tls.cert"),
        other => panic!("expected a config error, got {other:?}"),
    }

    let hub = start(tls_listener(&pki, false)).await;
    let rx = hub.receiver("radar3");
    let mut old = pki.connect(hub.local_addr(), None).await.expect("old");

    // A new CA and server certificate replace the files.
    let next = Ca::new("next CA");
    let (cert, key) = next.issue(Leaf::server());
    let garbage = pki.write("server.pem", "not a certificate");
    let err = hub
        .reload_tls("default")
        .expect_err("a bad file is refused");
    assert_eq!(err.key, "listener[0].tls.cert");
    assert!(
        pki.connect(hub.local_addr(), None).await.is_ok(),
        "old settings kept"
    );
    std::fs::write(&garbage, cert).expect("cert");
    pki.write("server.key", &key);
    hub.reload_tls("default").expect("reload");
    assert!(
        pki.connect(hub.local_addr(), None).await.is_err(),
        "the old CA no longer fits"
    );
    pki.write("ca.pem", &next.pem());
    let mut new = pki.connect(hub.local_addr(), None).await.expect("new CA");
    for (s, ts) in [(&mut old, 1), (&mut new, 2)] {
        s.write_all(format!("{}\n", detection("radar3", None, ts)).as_bytes())
            .await
            .expect("write");
        s.flush().await.expect("flush");
        let frame = rx.recv_timeout(PATIENCE).await.expect("frame");
        assert_eq!(frame.payload, detection("radar3", None, ts).as_bytes());
    }
    assert!(hub.reload_tls("nope").is_err());
    hub.shutdown().await;
}

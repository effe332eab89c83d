//! Request handlers on real sockets: replies in request order through the
//! connection's egress, a timeout answered by the application's error
//! reply while other connections are served, a panic that leaves the
//! connection alive, telemetry between replies, and the accounting a
//! connection reports when it ends.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{PATIENCE, connect, loopback, send};
use framehub::{
    CloseReason, ConnectionCounts, ConnectionEvent, DropReason, Ending, Failure, Handler, Hub,
    HubConfig, ListenerConfig, Protocol,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn lines_listener() -> ListenerConfig {
    ListenerConfig {
        bind: Some(loopback()),
        protocol: Protocol::Raw,
        ..ListenerConfig::default()
    }
}

/// `sleep N` sleeps N ms then answers `slept N`; `panic` panics; `fail`
/// errs; `two X` answers twice; anything else is echoed with `re `.
fn test_handler(timeout: Duration) -> Handler {
    Handler::new(|req| async move {
        let text = String::from_utf8_lossy(&req.payload).into_owned();
        if let Some(ms) = text.strip_prefix("sleep ") {
            let ms: u64 = ms.parse()?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            return Ok(vec![Bytes::from(format!("slept {ms}"))]);
        }
        match text.as_str() {
            "panic" => panic!("handler panics on purpose"),
            "fail" => Err("asked to fail".into()),
            _ => match text.strip_prefix("two ") {
                Some(x) => Ok(vec![format!("a {x}").into(), format!("b {x}").into()]),
                None => Ok(vec![format!("re {text}").into()]),
            },
        }
    })
    .timeout(timeout)
    .on_failure(|request, failure| {
        let what = match failure {
            Failure::TimedOut(_) => "timeout",
            Failure::Panicked => "panic",
            Failure::Error(_) => "error",
            _ => "other",
        };
        vec![format!("error {what} for {}", String::from_utf8_lossy(request)).into()]
    })
}

async fn start(timeout: Duration) -> Hub {
    Hub::start_with(
        HubConfig {
            listener: vec![lines_listener()],
            ..HubConfig::default()
        },
        [("default", test_handler(timeout))],
    )
    .await
    .expect("hub starts")
}

async fn read_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    let n = tokio::time::timeout(PATIENCE, reader.read_line(&mut line))
        .await
        .expect("a reply in time")
        .expect("read");
    assert!(n > 0, "connection closed before the reply");
    line.trim_end().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pipelined_requests_are_answered_in_order() {
    let hub = start(Duration::from_secs(5)).await;
    let mut stream = connect(&hub).await;
    // Later requests finish first: only the ordering keeps them in line.
    let mut all = String::new();
    for i in 0..1000 {
        if i % 100 == 0 {
            all.push_str(&format!("sleep {}\n", 20 - i / 100));
        } else {
            all.push_str(&format!("{i}\n"));
        }
    }
    send(&mut stream, all.as_bytes()).await;
    let mut reader = BufReader::new(stream);
    for i in 0..1000 {
        let want = if i % 100 == 0 {
            format!("slept {}", 20 - i / 100)
        } else {
            format!("re {i}")
        };
        assert_eq!(read_line(&mut reader).await, want, "reply {i}");
    }
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_past_its_timeout_gets_the_error_reply_while_others_are_served() {
    let hub = start(Duration::from_millis(200)).await;
    let mut slow = BufReader::new(connect(&hub).await);
    let mut other = BufReader::new(connect(&hub).await);
    send(slow.get_mut(), b"sleep 60000\nafter\n").await;
    // While the slow request runs, another connection is answered at once.
    let started = std::time::Instant::now();
    send(other.get_mut(), b"hello\n").await;
    assert_eq!(read_line(&mut other).await, "re hello");
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(read_line(&mut slow).await, "error timeout for sleep 60000");
    // The request after it is answered, in order, on the same connection.
    assert_eq!(read_line(&mut slow).await, "re after");
    assert_eq!(hub.counters().handler_timeouts, 1);
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_or_failing_handler_leaves_the_connection_and_the_server_alive() {
    let hub = start(Duration::from_secs(5)).await;
    let mut reader = BufReader::new(connect(&hub).await);
    send(reader.get_mut(), b"before\npanic\nfail\nafter\n").await;
    assert_eq!(read_line(&mut reader).await, "re before");
    assert_eq!(read_line(&mut reader).await, "error panic for panic");
    assert_eq!(read_line(&mut reader).await, "error error for fail");
    assert_eq!(read_line(&mut reader).await, "re after");
    // A new connection is served as well.
    let mut fresh = BufReader::new(connect(&hub).await);
    send(fresh.get_mut(), b"new\n").await;
    assert_eq!(read_line(&mut fresh).await, "re new");
    let c = hub.counters();
    assert_eq!((c.handler_panics, c.handler_errors), (1, 1));
    assert_eq!(c.connections_closed, 0);
    hub.shutdown().await;
}

async fn next_closed(
    events: &mut tokio::sync::broadcast::Receiver<ConnectionEvent>,
) -> (std::net::SocketAddr, CloseReason, ConnectionCounts) {
    loop {
        let event = tokio::time::timeout(PATIENCE, events.recv())
            .await
            .expect("an event in time")
            .expect("events open");
        if let ConnectionEvent::Closed {
            peer,
            reason,
            counts,
            ..
        } = event
        {
            return (peer, reason, counts);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_reports_requests_replies_telemetry_and_bytes() {
    let hub = start(Duration::from_secs(5)).await;
    let mut events = hub.events();
    let stream = connect(&hub).await;
    let local = stream.local_addr().expect("local addr");
    let mut reader = BufReader::new(stream);
    let conn = loop {
        if let ConnectionEvent::Connected { conn, .. } = events.recv().await.expect("event") {
            break conn;
        }
    };
    let sent = b"one\ntwo x\nfail\n";
    send(reader.get_mut(), sent).await;
    let mut received = 0;
    for want in ["re one", "a x", "b x", "error error for fail"] {
        assert_eq!(read_line(&mut reader).await, want);
        received += want.len() + 1;
    }
    // Telemetry on the same connection, between requests.
    assert_eq!(hub.send_to_connection(conn, b"tm 1").expect("send"), 1);
    assert_eq!(hub.broadcast(b"tm 2").expect("broadcast"), 1);
    assert_eq!(read_line(&mut reader).await, "tm 1");
    assert_eq!(read_line(&mut reader).await, "tm 2");
    received += 10;
    // A last request, then half-close: its reply still comes.
    reader.get_mut().write_all(b"last\n").await.expect("write");
    reader.get_mut().shutdown().await.expect("half-close");
    assert_eq!(read_line(&mut reader).await, "re last");
    received += 8;

    let (peer, reason, counts) = next_closed(&mut events).await;
    assert_eq!(peer, local);
    assert_eq!(reason.ending(), Ending::Peer);
    assert_eq!(counts.requests, 4);
    assert_eq!(counts.replies, 5);
    assert_eq!(counts.telemetry, 2);
    assert_eq!(counts.frames_out, 7);
    assert_eq!(counts.handler_errors, 1);
    assert_eq!(counts.bytes_in, (sent.len() + 5) as u64);
    assert_eq!(counts.bytes_out, received as u64);
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_connection_and_counts_its_unanswered_requests() {
    let hub = start(Duration::from_secs(60)).await;
    let mut events = hub.events();
    let mut reader = BufReader::new(connect(&hub).await);
    send(reader.get_mut(), b"ping\nsleep 60000\n").await;
    assert_eq!(read_line(&mut reader).await, "re ping");
    common::counters_until(&hub, "both requests handed over", |c| c.requests == 2).await;
    hub.shutdown().await;
    let (_, reason, counts) = next_closed(&mut events).await;
    assert_eq!(reason.ending(), Ending::Shutdown);
    assert_eq!((counts.requests, counts.replies), (2, 1));
    assert_eq!(hub.counters().dropped(DropReason::Unanswered), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_per_connection_are_bounded() {
    let handler = Handler::new(|_req| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(Vec::new())
    })
    .max_in_flight(4);
    let hub = Hub::start_with(
        HubConfig {
            listener: vec![lines_listener()],
            ..HubConfig::default()
        },
        [("default", handler)],
    )
    .await
    .expect("hub starts");
    let mut stream = connect(&hub).await;
    send(&mut stream, b"1\n2\n3\n4\n5\n6\n7\n8\n").await;
    common::counters_until(&hub, "four requests in flight", |c| c.requests == 4).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hub.counters().requests, 4, "the fifth waits for a slot");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_handler_for_an_unknown_listener_is_a_config_error() {
    let result = Hub::start_with(
        HubConfig {
            listener: vec![lines_listener()],
            ..HubConfig::default()
        },
        [("nope", test_handler(Duration::from_secs(1)))],
    )
    .await;
    assert!(result.is_err());
}

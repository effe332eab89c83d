//! Acknowledged delivery, the client's side (issue 14, docs/acks.md),
//! against a tiny acking server written here on real sockets: numbering,
//! acks freeing the outbox, resending what was not acknowledged after a
//! cut (in order, before anything new), a byte-bounded outbox that waits
//! or fails but never drops, and a silent link noticed by the ack timeout.
//! The daemon's side is tested with `framehub serve` in framehub-cli.

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{PATIENCE, loopback};
use framehub::codec::{FrameDecoder, FramingConfig};
use framehub::{
    ACK_OVERHEAD_BYTES, Client, ClientAckConfig, ClientAckMode, ClientConfig, ClientError,
    ClientProtocol, DisconnectReason, NodeIdentity, OutboxPolicy,
};
use proxy::{Mode, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Scheduling slack on top of a bound the client promises.
const SLACK: Duration = Duration::from_secs(2);

/// One data frame as the tiny server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    seq: u64,
    /// The application's `timestamp` (node) or payload (length).
    body: String,
}

/// One accepted connection of the tiny server: reads frames in the
/// client's framing and writes acks in it.
struct Conn {
    stream: TcpStream,
    decoder: FrameDecoder,
    buf: BytesMut,
    length: bool,
    /// Frames read that carry no number (heartbeats, the length opener).
    unnumbered: Vec<Bytes>,
}

impl Conn {
    async fn accept(listener: &TcpListener, length: bool) -> Conn {
        let (stream, _) = tokio::time::timeout(PATIENCE, listener.accept())
            .await
            .expect("the client connects in time")
            .expect("accept");
        let framing = if length {
            FramingConfig::Length(Default::default())
        } else {
            FramingConfig::Lines
        };
        Conn {
            stream,
            decoder: FrameDecoder::new(&framing, 1 << 20),
            buf: BytesMut::new(),
            length,
            unnumbered: Vec::new(),
        }
    }

    /// The next frame, or `None` at the end of the stream.
    async fn frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self
                .decoder
                .decode_next(&mut self.buf, false)
                .expect("framing")
            {
                return Some(frame);
            }
            let n = tokio::time::timeout(PATIENCE, self.stream.read_buf(&mut self.buf))
                .await
                .expect("the client writes in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// Reads until `n` numbered frames came.
    async fn data(&mut self, n: usize) -> Vec<Seen> {
        let mut out = Vec::new();
        while out.len() < n {
            let frame = self.frame().await.expect("more frames");
            match self.parse(&frame) {
                Some(seen) => out.push(seen),
                None => self.unnumbered.push(frame),
            }
        }
        out
    }

    fn parse(&self, frame: &[u8]) -> Option<Seen> {
        if self.length {
            let seq = u64::from_be_bytes(frame[..8].try_into().expect("8-byte prefix"));
            if seq == 0 {
                return None;
            }
            return Some(Seen {
                seq,
                body: String::from_utf8(frame[8..].to_vec()).expect("utf-8"),
            });
        }
        let v: serde_json::Value = serde_json::from_slice(frame).expect("json");
        Some(Seen {
            seq: v.get("seq")?.as_u64().expect("seq is a number"),
            body: v["timestamp"].to_string(),
        })
    }

    async fn ack(&mut self, seq: u64) {
        let mut wire = Vec::new();
        if self.length {
            wire.extend_from_slice(&8u32.to_be_bytes());
            wire.extend_from_slice(&seq.to_be_bytes());
        } else {
            wire.extend_from_slice(format!("{{\"type\":\"ack\",\"seq\":{seq}}}\n").as_bytes());
        }
        self.stream.write_all(&wire).await.expect("ack written");
    }

    /// Acks `seq`, then plays the server's part of a clean close: reads
    /// to the client's FIN and closes.
    fn ack_and_finish(mut self, seq: u64) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            self.ack(seq).await;
            while self.frame().await.is_some() {}
        })
    }
}

fn node_client(addr: SocketAddr, ack: ClientAckConfig) -> ClientConfig {
    ClientConfig {
        protocol: ClientProtocol::Node(NodeIdentity {
            node_id: Some("dev1".into()),
            ..NodeIdentity::default()
        }),
        outbox_policy: OutboxPolicy::Block,
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ack,
        ..ClientConfig::new(addr.to_string())
    }
}

fn node_ack(first_seq: u64) -> ClientAckConfig {
    ClientAckConfig {
        first_seq: Some(first_seq),
        ..ClientAckConfig::new(ClientAckMode::node())
    }
}

fn message(ts: u64) -> String {
    format!(r#"{{"timestamp":{ts},"delay":[40.46]}}"#)
}

async fn listener() -> TcpListener {
    TcpListener::bind(loopback()).await.expect("bind")
}

/// Polls the client's counters until `check` holds.
async fn until(client: &Client, what: &str, check: impl Fn(&framehub::ClientCounters) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check(&client.counters()) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            client.counters()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn seqs(seen: &[Seen]) -> Vec<u64> {
    seen.iter().map(|s| s.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_numbered_and_acks_free_them() {
    let listener = listener().await;
    let client = Client::start(node_client(
        listener.local_addr().expect("local addr"),
        node_ack(100),
    ))
    .expect("client");
    for ts in 0..5 {
        client.send(message(ts)).await.expect("queued");
    }
    let mut conn = Conn::accept(&listener, false).await;
    let seen = conn.data(5).await;
    assert_eq!(seqs(&seen), [100, 101, 102, 103, 104]);
    assert_eq!(
        seen.iter().map(|s| s.body.as_str()).collect::<Vec<_>>(),
        ["0", "1", "2", "3", "4"]
    );
    // Numbers are the client's own: the opener heartbeat carries none.
    assert_eq!(conn.unnumbered.len(), 1, "the authenticating heartbeat");
    let c = client.counters();
    assert_eq!((c.unacked, c.acked, c.next_seq), (5, 0, 105));
    assert!(c.bytes_unacked > 0);

    let mut acked = client.watch_acked();
    conn.ack(102).await;
    tokio::time::timeout(PATIENCE, acked.wait_for(|&s| s == 102))
        .await
        .expect("ack seen in time")
        .expect("client alive");
    until(&client, "three acked", |c| c.acked == 3).await;
    let c = client.counters();
    assert_eq!((c.unacked, c.acked_seq, c.acks_received), (2, 102, 1));

    let finished = conn.ack_and_finish(104);
    client
        .close(PATIENCE)
        .await
        .expect("close returns once everything is acknowledged");
    finished.await.expect("server task");
    let c = client.counters();
    assert_eq!((c.acked, c.unacked, c.bytes_unacked), (5, 0, 0));
    // Every data byte written was acknowledged; the heartbeat was not.
    assert!(c.bytes_acked > 0 && c.bytes_acked < c.bytes_sent, "{c:?}");
}

/// A cut loses nothing: what the server did not acknowledge is written
/// again, in order, before any message queued after the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_are_resent_in_order_before_new_ones() {
    let listener = listener().await;
    let client = Client::start(node_client(
        listener.local_addr().expect("local addr"),
        node_ack(1),
    ))
    .expect("client");
    for ts in 1..=10 {
        client.send(message(ts)).await.expect("queued");
    }
    let mut conn = Conn::accept(&listener, false).await;
    assert_eq!(seqs(&conn.data(10).await), (1..=10).collect::<Vec<_>>());
    conn.ack(4).await;
    until(&client, "four acked", |c| c.acked == 4).await;
    // The server dies with 5..=10 read but not durable.
    drop(conn);
    for ts in 11..=12 {
        client.send(message(ts)).await.expect("queued");
    }
    let mut conn = Conn::accept(&listener, false).await;
    let again = conn.data(8).await;
    assert_eq!(seqs(&again), (5..=12).collect::<Vec<_>>());
    assert_eq!(again[0].body, "5");
    let c = client.counters();
    // 5..=10 are written again; so are 11 and 12 if they went out on the
    // dead connection before the client saw it die (every write counts).
    assert!((6..=8).contains(&c.resent), "5..=10 written again: {c:?}");
    assert_eq!(
        c.sent,
        12 + c.resent,
        "each message once, plus resends: {c:?}"
    );
    assert!(c.bytes_resent > 0);
    let finished = conn.ack_and_finish(12);
    client.close(PATIENCE).await.expect("all acknowledged");
    finished.await.expect("server task");
    assert_eq!(client.counters().acked, 12);
}

/// The server's first ack on a new connection (what it knew durable
/// already) frees the resent messages it covers as soon as they are
/// written, and only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_for_resent_messages_frees_them() {
    let listener = listener().await;
    let client = Client::start(node_client(
        listener.local_addr().expect("local addr"),
        node_ack(1),
    ))
    .expect("client");
    for ts in 1..=6 {
        client.send(message(ts)).await.expect("queued");
    }
    let mut conn = Conn::accept(&listener, false).await;
    conn.data(6).await;
    drop(conn);
    let mut conn = Conn::accept(&listener, false).await;
    // It had made 1..=3 durable before the cut.
    conn.ack(3).await;
    assert_eq!(seqs(&conn.data(6).await), (1..=6).collect::<Vec<_>>());
    until(&client, "three acked", |c| c.acked == 3 && c.unacked == 3).await;
    let finished = conn.ack_and_finish(6);
    client.close(PATIENCE).await.expect("all acknowledged");
    finished.await.expect("server task");
}

/// The outbox is bounded in bytes of unacknowledged messages: `block`
/// makes `send` wait until an ack frees room, `fail` refuses at once;
/// nothing is dropped either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_waits_or_fails_and_never_drops() {
    for policy in [OutboxPolicy::Block, OutboxPolicy::Fail] {
        let listener = listener().await;
        let one = message(1_000_000).len() + ACK_OVERHEAD_BYTES;
        let client = Client::start(ClientConfig {
            outbox_policy: policy,
            max_frame_bytes: 256,
            ..node_client(
                listener.local_addr().expect("local addr"),
                ClientAckConfig {
                    max_unacked_bytes: 4 * one + one / 2,
                    ..node_ack(1)
                },
            )
        })
        .expect("client");
        for ts in 1_000_000..1_000_004 {
            client.try_send(message(ts)).expect("room for four");
        }
        assert!(matches!(
            client.try_send(message(1_000_004)),
            Err(ClientError::Full)
        ));
        let mut conn = Conn::accept(&listener, false).await;
        assert_eq!(seqs(&conn.data(4).await), [1, 2, 3, 4]);
        // Written is not acknowledged: still full.
        let fifth = {
            let client = client.clone();
            tokio::spawn(async move { client.send(message(1_000_004)).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        match policy {
            OutboxPolicy::Block => {
                assert!(!fifth.is_finished(), "send waits for an ack");
                conn.ack(1).await;
                tokio::time::timeout(PATIENCE, fifth)
                    .await
                    .expect("an ack makes room")
                    .expect("task")
                    .expect("queued");
                assert_eq!(seqs(&conn.data(1).await), [5]);
                conn.ack_and_finish(5);
            }
            _ => {
                assert!(matches!(fifth.await.expect("task"), Err(ClientError::Full)));
                conn.ack_and_finish(4);
            }
        }
        client.close(PATIENCE).await.expect("all acknowledged");
        let c = client.counters();
        assert_eq!(c.dropped_outbox_full, 0);
        assert_eq!(c.acked, c.accepted, "{policy:?}: {c:?}");
    }
}

/// A server that reads but never acknowledges (or a path that swallows
/// everything) is left after `ack.timeout`, and the messages go again on
/// the next connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ack_progress_within_the_timeout_means_reconnect_and_resend() {
    let listener = listener().await;
    let timeout = Duration::from_millis(800);
    let client = Client::start(ClientConfig {
        liveness_timeout: None,
        ..node_client(
            listener.local_addr().expect("local addr"),
            ClientAckConfig {
                timeout,
                ..node_ack(1)
            },
        )
    })
    .expect("client");
    let mut events = client.events();
    client.send(message(1)).await.expect("queued");
    let mut conn = Conn::accept(&listener, false).await;
    assert_eq!(seqs(&conn.data(1).await), [1]);
    let silent_since = Instant::now();
    let mut conn2 = Conn::accept(&listener, false).await;
    let waited = silent_since.elapsed();
    assert!(
        waited >= timeout.mul_f64(0.9) && waited <= timeout + SLACK,
        "reconnected after {waited:?}"
    );
    let reason = loop {
        match events.recv().await.expect("event") {
            framehub::ClientEvent::Disconnected { reason } => break reason,
            _ => continue,
        }
    };
    assert_eq!(reason, DisconnectReason::AckTimeout(timeout));
    assert_eq!(seqs(&conn2.data(1).await), [1]);
    drop(conn);
    let finished = conn2.ack_and_finish(1);
    client.close(PATIENCE).await.expect("acknowledged");
    finished.await.expect("server task");
}

/// The silent network drop: a proxy that keeps accepting bytes and
/// forwards nothing, without closing. Writes succeed; only the missing
/// acks tell the client, which reconnects and resends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_network_drop_is_noticed_by_the_missing_acks() {
    let listener = listener().await;
    let proxy = Proxy::start(listener.local_addr().expect("local addr")).await;
    let client = Client::start(node_client(
        proxy.addr(),
        ClientAckConfig {
            timeout: Duration::from_secs(1),
            ..node_ack(1)
        },
    ))
    .expect("client");
    client.send(message(1)).await.expect("queued");
    let mut conn = Conn::accept(&listener, false).await;
    assert_eq!(seqs(&conn.data(1).await), [1]);
    conn.ack(1).await;
    until(&client, "first acked", |c| c.acked == 1).await;
    proxy.set_mode(Mode::Blackhole);
    for ts in 2..=4 {
        client.send(message(ts)).await.expect("queued");
    }
    let mut conn2 = Conn::accept(&listener, false).await;
    assert_eq!(seqs(&conn2.data(3).await), [2, 3, 4]);
    drop(conn);
    let finished = conn2.ack_and_finish(4);
    client.close(PATIENCE).await.expect("acknowledged");
    finished.await.expect("server task");
    let c = client.counters();
    assert_eq!((c.acked, c.disconnects), (4, 1), "{c:?}");
}

/// `close` that runs out of time says how many messages were never
/// acknowledged, and counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_reports_what_was_never_acknowledged() {
    let listener = listener().await;
    let client = Client::start(node_client(
        listener.local_addr().expect("local addr"),
        node_ack(1),
    ))
    .expect("client");
    for ts in 1..=3 {
        client.send(message(ts)).await.expect("queued");
    }
    let mut conn = Conn::accept(&listener, false).await;
    conn.data(3).await;
    conn.ack(1).await;
    until(&client, "first acked", |c| c.acked == 1).await;
    let result = client.close(Duration::from_millis(500)).await;
    assert!(
        matches!(result, Err(ClientError::Unacknowledged { unacked: 2 })),
        "{result:?}"
    );
    let c = client.counters();
    assert_eq!((c.dropped_unacked, c.dropped_unsent), (2, 0));
}

/// The `length` layout: each connection opens with number 0 and the
/// stream id, every payload leads with its 8-byte number, acks are 8-byte
/// frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_framing_carries_numbers_and_a_stream_id() {
    let listener = listener().await;
    let client = Client::start(ClientConfig {
        framing: FramingConfig::Length(Default::default()),
        protocol: ClientProtocol::Raw { heartbeat: None },
        outbox_policy: OutboxPolicy::Block,
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ack: ClientAckConfig {
            first_seq: Some(7),
            ..ClientAckConfig::new(ClientAckMode::Length {
                stream_id: "camera-2".into(),
            })
        },
        ..ClientConfig::new(listener.local_addr().expect("local addr").to_string())
    })
    .expect("client");
    for payload in ["a", "b", "c"] {
        client.send(payload).await.expect("queued");
    }
    let mut conn = Conn::accept(&listener, true).await;
    let seen = conn.data(3).await;
    assert_eq!(seqs(&seen), [7, 8, 9]);
    assert_eq!(
        seen.iter().map(|s| s.body.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    let mut opener = 0u64.to_be_bytes().to_vec();
    opener.extend_from_slice(b"camera-2");
    assert_eq!(conn.unnumbered, [Bytes::from(opener.clone())]);
    conn.ack(7).await;
    until(&client, "first acked", |c| c.acked == 1).await;
    drop(conn);
    let mut conn = Conn::accept(&listener, true).await;
    assert_eq!(seqs(&conn.data(2).await), [8, 9]);
    assert_eq!(
        conn.unnumbered,
        [Bytes::from(opener)],
        "every connection opens with it"
    );
    let finished = conn.ack_and_finish(9);
    client.close(PATIENCE).await.expect("acknowledged");
    finished.await.expect("server task");
    assert_eq!(client.counters().acked, 3);
}

/// End to end in one process: the client against a real hub with
/// `[listener.ack] mode = "durable"`, whose consumer acknowledges what it
/// received in batches, through a proxy that cuts the link three times
/// mid-stream. The consumer sees every message exactly once, in order
/// (the hub drops resends as duplicates), and `close` returns Ok only
/// once everything was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_real_hub_every_message_arrives_once_across_cuts() {
    const N: u64 = 20_000;
    let block = framehub::QueueConfig {
        overflow: framehub::OverflowPolicy::Block,
        ..Default::default()
    };
    let hub = common::start(framehub::ListenerConfig {
        ack: framehub::AckConfig {
            mode: framehub::AckMode::Durable,
            ..Default::default()
        },
        queue: block,
        ..common::node_listener(None)
    })
    .await;
    // The node's own queue must block too: a frame dropped after the hub
    // accepted it would be covered by a later ack.
    let receiver = hub.receiver_with("dev1", block);
    let acks = hub.acks();
    let consumer = tokio::spawn(async move {
        let mut timestamps = Vec::new();
        let mut batch = Vec::new();
        while (timestamps.len() as u64) < N {
            let Ok(frame) = receiver.recv_timeout(PATIENCE).await else {
                break;
            };
            let v: serde_json::Value = serde_json::from_slice(&frame.payload).expect("json");
            timestamps.push(v["timestamp"].as_u64().expect("timestamp"));
            batch.push(frame);
            if batch.len() >= 100 || receiver.is_empty() {
                acks.acknowledge_frames(&batch);
                batch.clear();
            }
        }
        acks.acknowledge_frames(&batch);
        timestamps
    });
    let proxy = Proxy::start(hub.local_addr()).await;
    let client = Client::start(node_client(proxy.addr(), node_ack(1))).expect("client");
    for ts in 0..N {
        client.send(message(ts)).await.expect("queued");
        if ts > 0 && ts % (N / 4) == 0 {
            // Mid-stream, on a live link: some acknowledged, much not.
            until(&client, "progress", |c| c.acked >= ts - N / 8).await;
            until(&client, "a link", |_| {
                client.is_connected() && proxy.open_links() > 0
            })
            .await;
            proxy.cut();
        }
    }
    client
        .close(PATIENCE * 3)
        .await
        .expect("every message acknowledged");
    let timestamps = consumer.await.expect("consumer");
    assert_once_in_order(&timestamps, N);
    let drops = hub.counters();
    assert_eq!(drops.frames_delivered, N, "{drops:?}");
    let c = client.counters();
    assert_eq!((c.acked, c.unacked, c.acked_seq), (N, 0, N), "{c:?}");
    assert!(c.connects >= 4, "{c:?}");
}

/// `got` is exactly 0..n; otherwise says where it first differs, without
/// printing thousands of numbers.
fn assert_once_in_order(got: &[u64], n: u64) {
    let first_bad = got.iter().zip(0..n).position(|(&g, want)| g != want);
    let mut sorted = got.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert!(
        first_bad.is_none() && got.len() as u64 == n,
        "{} received ({} distinct) of {n}; first out of place at index {first_bad:?}: {:?}",
        got.len(),
        sorted.len(),
        first_bad.map(|i| &got[i.saturating_sub(2)..(i + 3).min(got.len())]),
    );
}

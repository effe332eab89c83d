//! The client with several servers (issue 15): it connects to the first
//! that answers, and when that one goes down it moves to the next, with
//! nothing the application sent lost on the way (what was unsent is sent
//! to the next server). Real hubs on 127.0.0.1.

mod common;

use std::time::Duration;

use common::*;
use framehub::{Client, ClientConfig, ClientEvent, ClientProtocol, NodeIdentity};

fn config(addrs: &str) -> ClientConfig {
    ClientConfig {
        protocol: ClientProtocol::Node(NodeIdentity {
            node_id: Some("radar7".into()),
            ..NodeIdentity::default()
        }),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..ClientConfig::new(addrs)
    }
}

#[tokio::test]
async fn the_client_moves_to_the_next_server_when_one_is_down() {
    let first = start(node_listener(None)).await;
    let second = start(node_listener(None)).await;
    // A port nobody listens on comes first: it is skipped.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let addrs = format!("{dead}, {},{}", first.local_addr(), second.local_addr());
    let client = Client::start(config(&addrs)).expect("client");
    let mut events = client.events();
    client.send(r#"{"timestamp":1}"#).await.expect("send");
    let on_first = first.receiver("radar7");
    let frame = tokio::time::timeout(PATIENCE, on_first.recv())
        .await
        .expect("the first live server gets it")
        .expect("frame");
    assert!(
        std::str::from_utf8(&frame.payload)
            .expect("utf-8")
            .contains(r#""timestamp":1"#),
        "{:?}",
        frame.payload
    );

    first.shutdown().await;
    let connected_to = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(ClientEvent::Connected { peer, .. }) = events.recv().await
                && peer == second.local_addr()
            {
                return peer;
            }
        }
    })
    .await
    .expect("connected to the second server");
    assert_eq!(connected_to, second.local_addr());
    client.send(r#"{"timestamp":2}"#).await.expect("send");
    let on_second = second.receiver("radar7");
    let frame = tokio::time::timeout(PATIENCE, on_second.recv())
        .await
        .expect("the second server gets what is sent after the move")
        .expect("frame");
    assert!(
        std::str::from_utf8(&frame.payload)
            .expect("utf-8")
            .contains(r#""timestamp":2"#),
        "{:?}",
        frame.payload
    );
    client.close(Duration::from_secs(5)).await.expect("close");
}

//! The cluster-wide node view: each instance records the nodes it holds in
//! a JetStream key-value bucket (key: the node, value: instance, listener,
//! peer, since), puts them again every third of the TTL while they stay
//! connected and at once when one binds, and deletes its own entry when a
//! node leaves it. The bucket's `max_age` is the TTL: a crashed instance's
//! entries expire by themselves, and a node that moved to another instance
//! shows there as soon as it binds.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::event::ConnectionEvent;
use crate::hub::Hub;
use crate::nats::NatsError;
use crate::nats::config::NatsViewConfig;
use crate::nats::subject;

/// Entries one cluster listing reads at most.
const MAX_LISTED: usize = 100_000;
/// How long one cluster listing may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// One node as the cluster view has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// The node's name.
    pub node: String,
    /// The instance holding it.
    pub instance: String,
    /// The listener its connection came in on.
    pub listener: String,
    /// Its peer's address.
    pub peer: String,
    /// When its connection was accepted (RFC 3339).
    pub since: String,
    /// When the holder last refreshed the entry (RFC 3339).
    pub updated_at: String,
}

/// The running view of one instance.
pub struct NodeView {
    js: jetstream::Context,
    bucket: String,
    kv: kv::Store,
    task: JoinHandle<()>,
}

/// A node's key in the bucket: its subject token, with `=` for `%` (key
/// characters are `-/_=.a-zA-Z0-9`).
pub fn key(node: &str) -> String {
    subject::token(node).replace('%', "=")
}

impl NodeView {
    /// Opens (or creates) the bucket and starts recording `hub`'s nodes as
    /// held by `instance`.
    pub async fn start(
        client: async_nats::Client,
        hub: Hub,
        config: &NatsViewConfig,
        instance: String,
    ) -> Result<NodeView, NatsError> {
        let js = jetstream::new(client);
        let bucket = config.bucket.clone();
        let kv = match js.get_key_value(&config.bucket).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: config.bucket.clone(),
                    description: "which framehub instance holds which node".to_owned(),
                    history: 1,
                    max_age: config.ttl,
                    num_replicas: config.replicas,
                    storage: jetstream::stream::StorageType::File,
                    ..kv::Config::default()
                })
                .await
                .map_err(|e| {
                    NatsError::JetStream(format!(
                        "cannot open or create bucket {:?}: {e}",
                        config.bucket
                    ))
                })?,
        };
        let task = tokio::spawn(record(kv.clone(), hub, instance, config.ttl / 3));
        Ok(NodeView {
            js,
            bucket,
            kv,
            task,
        })
    }

    /// Every node of the cluster, by name (a node held by two instances at
    /// once, during a move, is listed with the latest holder).
    pub async fn cluster(&self) -> Result<Vec<ClusterNode>, NatsError> {
        list(&self.js, &self.bucket, &self.kv).await
    }
}

impl Drop for NodeView {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads the current values of `bucket` (opened as `kv`).
pub async fn list(
    js: &jetstream::Context,
    bucket: &str,
    kv: &kv::Store,
) -> Result<Vec<ClusterNode>, NatsError> {
    let err = |e: &dyn std::fmt::Display| NatsError::JetStream(format!("node view: {e}"));
    // Fresh from the server (the store's own status is the one it had
    // when opened): a watch of an empty bucket would wait for ever.
    let mut stream = js
        .get_stream(format!("KV_{bucket}"))
        .await
        .map_err(|e| err(&e))?;
    let messages = stream.info().await.map_err(|e| err(&e))?.state.messages;
    let mut out = BTreeMap::new();
    if messages == 0 {
        return Ok(Vec::new());
    }
    // The last entry of every key, then updates: read until the last one.
    let mut watch = kv.watch_with_history(">").await.map_err(|e| err(&e))?;
    let read = async {
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| err(&e))?;
            if entry.operation == kv::Operation::Put {
                if let Ok(n) = serde_json::from_slice::<ClusterNode>(&entry.value) {
                    out.insert(n.node.clone(), n);
                }
            } else {
                out.retain(|_, n: &mut ClusterNode| key(&n.node) != entry.key);
            }
            if entry.delta == 0 || out.len() >= MAX_LISTED {
                break;
            }
        }
        Ok::<(), NatsError>(())
    };
    // An entry that expires while it is read may leave the watch waiting
    // for one that never comes: what was read by then is the answer.
    if let Ok(result) = tokio::time::timeout(LIST_TIMEOUT, read).await {
        result?;
    }
    Ok(out.into_values().collect())
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Puts the node's entry as held by `instance`.
async fn put(kv: &kv::Store, instance: &str, c: &crate::ConnectionInfo, node: &str) {
    let value = ClusterNode {
        node: node.to_owned(),
        instance: instance.to_owned(),
        listener: c.listener.to_string(),
        peer: c.peer.to_string(),
        since: rfc3339(c.since),
        updated_at: rfc3339(SystemTime::now()),
    };
    let Ok(bytes) = serde_json::to_vec(&value) else {
        return;
    };
    if let Err(e) = kv.put(key(node), Bytes::from(bytes)).await {
        tracing::debug!(node, error = %e, "node view: cannot record");
    }
}

/// The latest open connection of each node this instance holds.
fn held(hub: &Hub) -> BTreeMap<String, crate::ConnectionInfo> {
    let mut out: BTreeMap<String, crate::ConnectionInfo> = BTreeMap::new();
    for c in hub.connections() {
        if let Some(node) = c.node.clone() {
            match out.get(&*node) {
                Some(prev) if prev.since > c.since => {}
                _ => {
                    out.insert(node.to_string(), c);
                }
            }
        }
    }
    out
}

/// Keeps this instance's entries: all of them every `every`, one at once
/// when a node binds, deleted when the node leaves (if the entry is still
/// this instance's).
async fn record(kv: kv::Store, hub: Hub, instance: String, every: Duration) {
    let mut events = hub.events();
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for (node, c) in held(&hub) {
                    put(&kv, &instance, &c, &node).await;
                }
            }
            event = events.recv() => match event {
                Ok(ConnectionEvent::Authenticated { node, .. }) => {
                    if let Some(c) = held(&hub).get(&*node) {
                        put(&kv, &instance, c, &node).await;
                    }
                }
                Ok(ConnectionEvent::Closed { node: Some(node), .. }) => {
                    if !held(&hub).contains_key(&*node) {
                        forget(&kv, &instance, &node).await;
                    }
                }
                Ok(_) => {}
                // Missed events: the next tick puts every held node again.
                Err(RecvError::Lagged(_)) => tick.reset_immediately(),
                Err(RecvError::Closed) => return,
            }
        }
    }
}

/// Deletes the node's entry if this instance wrote the latest one: a node
/// that already bound elsewhere keeps the other instance's entry.
async fn forget(kv: &kv::Store, instance: &str, node: &str) {
    let k = key(node);
    let Ok(Some(entry)) = kv.entry(k.clone()).await else {
        return;
    };
    let ours =
        serde_json::from_slice::<ClusterNode>(&entry.value).is_ok_and(|n| n.instance == instance);
    if ours && let Err(e) = kv.delete_expect_revision(&k, Some(entry.revision)).await {
        tracing::debug!(node, error = %e, "node view: entry changed meanwhile; kept");
    }
}

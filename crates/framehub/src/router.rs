//! The node table: node name -> queue, explicit registration,
//! auto-provisioning capped by `max_nodes`, and the stream of new nodes.
//!
//! Connections look a node up here once, when they bind to it, and keep the
//! queue handle; the table's lock is never taken per frame.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use futures_core::Stream;
use parking_lot::RwLock;
use tokio::sync::mpsc;

use crate::config::{NodesConfig, QueueConfig};
use crate::reason::DropReason;
use crate::receiver::{Queue, QueueStats, Receiver};

/// Nodes the hub auto-provisioned, one [`Receiver`] each, in the order they
/// first sent a frame. Taken once with [`crate::Hub::new_nodes`]. Also a
/// [`Stream`] of receivers that ends where [`NewNodes::recv`] returns `None`.
///
/// The channel holds at most `max_nodes` entries, which is also the most
/// nodes auto-provisioning can ever create, so it never drops one.
#[derive(Debug)]
pub struct NewNodes {
    rx: mpsc::Receiver<Receiver>,
}

impl NewNodes {
    /// The next auto-provisioned node; `None` after the hub shut down.
    pub async fn recv(&mut self) -> Option<Receiver> {
        self.rx.recv().await
    }

    /// The next auto-provisioned node if one is waiting.
    pub fn try_recv(&mut self) -> Option<Receiver> {
        self.rx.try_recv().ok()
    }
}

/// [`NewNodes::recv`] as a stream: ends once the hub shut down.
impl Stream for NewNodes {
    type Item = Receiver;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Receiver>> {
        self.rx.poll_recv(cx)
    }
}

/// One node as [`crate::Hub::nodes`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's name (`node_id`).
    pub name: String,
    /// Whether it has a live connection.
    pub healthy: bool,
    /// Its queue's counters.
    pub queue: QueueStats,
    /// Connections bound to it now.
    pub connections: usize,
    /// The peer of its most recent connection, while one is open.
    pub peer: Option<SocketAddr>,
    /// When its most recent open connection was accepted.
    pub connected_since: Option<SystemTime>,
}

pub(crate) struct Router {
    nodes: RwLock<HashMap<Arc<str>, Arc<Queue>>>,
    config: NodesConfig,
    /// Nodes created by auto-provisioning (explicit ones do not count
    /// against `max_nodes`).
    provisioned: parking_lot::Mutex<usize>,
    new_nodes_tx: parking_lot::Mutex<Option<mpsc::Sender<Receiver>>>,
    new_nodes_rx: parking_lot::Mutex<Option<NewNodes>>,
}

impl Router {
    pub(crate) fn new(config: NodesConfig) -> Router {
        let (tx, rx) = mpsc::channel(config.max_nodes.max(1));
        Router {
            nodes: RwLock::new(HashMap::new()),
            config,
            provisioned: parking_lot::Mutex::new(0),
            new_nodes_tx: parking_lot::Mutex::new(Some(tx)),
            new_nodes_rx: parking_lot::Mutex::new(Some(NewNodes { rx })),
        }
    }

    /// Returns the node's queue, creating it with `config` if it is new.
    pub(crate) fn register(&self, name: &str, config: QueueConfig) -> Arc<Queue> {
        if let Some(q) = self.nodes.read().get(name) {
            return q.clone();
        }
        self.nodes
            .write()
            .entry(Arc::from(name))
            .or_insert_with_key(|k| Queue::new(k.clone(), config))
            .clone()
    }

    /// Finds the queue for a node a connection wants to bind to,
    /// auto-provisioning it when allowed.
    pub(crate) fn resolve(
        &self,
        name: &str,
        config: QueueConfig,
    ) -> Result<Arc<Queue>, DropReason> {
        if let Some(q) = self.nodes.read().get(name) {
            return Ok(q.clone());
        }
        if !self.config.auto_provision {
            return Err(DropReason::UnknownNode);
        }
        let mut provisioned = self.provisioned.lock();
        let mut nodes = self.nodes.write();
        if let Some(q) = nodes.get(name) {
            return Ok(q.clone());
        }
        if *provisioned >= self.config.max_nodes {
            return Err(DropReason::MaxNodes);
        }
        *provisioned += 1;
        let key: Arc<str> = Arc::from(name);
        let queue = Queue::new(key.clone(), config);
        nodes.insert(key, queue.clone());
        drop(nodes);
        drop(provisioned);
        if let Some(tx) = self.new_nodes_tx.lock().as_ref() {
            // Capacity is max_nodes and at most max_nodes are provisioned,
            // so this only fails once the application dropped the stream.
            let _ = tx.try_send(Receiver::new(queue.clone()));
        }
        tracing::info!(node = name, "auto-provisioned node");
        Ok(queue)
    }

    /// A receiver for every node known now.
    pub(crate) fn receivers(&self) -> Vec<Receiver> {
        self.nodes
            .read()
            .values()
            .map(|q| Receiver::new(q.clone()))
            .collect()
    }

    pub(crate) fn take_new_nodes(&self) -> Option<NewNodes> {
        self.new_nodes_rx.lock().take()
    }

    pub(crate) fn nodes(&self) -> Vec<NodeStatus> {
        let mut out: Vec<NodeStatus> = self
            .nodes
            .read()
            .values()
            .map(|q| NodeStatus {
                name: q.name().to_string(),
                healthy: q.is_healthy(),
                queue: q.stats(),
                connections: 0,
                peer: None,
                connected_since: None,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.nodes.read().len()
    }

    /// After shutdown: every queue drains and then ends, and the new-node
    /// stream ends.
    pub(crate) fn finish(&self) {
        self.new_nodes_tx.lock().take();
        for q in self.nodes.read().values() {
            q.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_provisioning_is_capped_and_announced() {
        let router = Router::new(NodesConfig {
            auto_provision: true,
            max_nodes: 2,
            ..NodesConfig::default()
        });
        let mut new = router.take_new_nodes().expect("first take");
        assert!(router.take_new_nodes().is_none());
        let q = QueueConfig::default();
        let a = router.resolve("a", q).expect("a");
        assert!(Arc::ptr_eq(&a, &router.resolve("a", q).expect("a again")));
        router.resolve("b", q).expect("b");
        assert_eq!(router.resolve("c", q).err(), Some(DropReason::MaxNodes));
        // Explicit registration is the application's choice, not capped.
        router.register("d", q);
        assert_eq!(router.len(), 3);
        assert_eq!(
            new.try_recv().map(|r| r.name().to_owned()),
            Some("a".into())
        );
        assert_eq!(
            new.try_recv().map(|r| r.name().to_owned()),
            Some("b".into())
        );
        assert!(new.try_recv().is_none());
    }

    #[test]
    fn unknown_nodes_are_refused_without_auto_provisioning() {
        let router = Router::new(NodesConfig {
            auto_provision: false,
            max_nodes: 2,
            ..NodesConfig::default()
        });
        let q = QueueConfig::default();
        assert_eq!(router.resolve("x", q).err(), Some(DropReason::UnknownNode));
        let registered = router.register("x", q);
        assert!(Arc::ptr_eq(
            &registered,
            &router.resolve("x", q).expect("x")
        ));
    }
}

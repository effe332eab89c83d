//! The node table: node name -> queue, explicit registration,
//! auto-provisioning capped by `max_nodes` (room made by evicting nodes
//! idle for `evict_idle_after`), node ids capped at `max_node_id_bytes`,
//! pages of the table, and the stream of new nodes.
//!
//! Connections look a node up here once, when they bind to it, and keep the
//! queue handle; the table's lock is never taken per frame.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_core::Stream;
use parking_lot::RwLock;
use tokio::sync::mpsc;

use crate::config::{NodesConfig, QueueConfig};
use crate::reason::DropReason;
use crate::receiver::{Queue, QueueStats, Receiver};
use crate::stats::ListenerCounters;

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

/// A page of the node table, from [`crate::Hub::nodes_page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodesPage {
    /// Nodes in the table.
    pub total: usize,
    /// The nodes of the page, by name.
    pub nodes: Vec<NodeStatus>,
}

/// One node of the table.
struct Entry {
    queue: Arc<Queue>,
    /// Created by auto-provisioning, so it may be evicted; the application's
    /// own nodes ([`crate::Hub::receiver`]) never are.
    provisioned: bool,
}

pub(crate) struct Router {
    nodes: RwLock<HashMap<Arc<str>, Entry>>,
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

    /// The longest node id a connection may bind to.
    pub(crate) fn max_node_id_bytes(&self) -> usize {
        self.config.max_node_id_bytes
    }

    /// Returns the node's queue, creating it with `config` if it is new.
    /// The application's node is its own: never evicted, not counted
    /// against `max_nodes`.
    pub(crate) fn register(&self, name: &str, config: QueueConfig) -> Arc<Queue> {
        if let Some(e) = self.nodes.read().get(name)
            && !e.provisioned
        {
            return e.queue.clone();
        }
        let mut provisioned = self.provisioned.lock();
        let mut nodes = self.nodes.write();
        let entry = nodes.entry(Arc::from(name)).or_insert_with_key(|k| Entry {
            queue: Queue::new(k.clone(), config),
            provisioned: false,
        });
        if std::mem::take(&mut entry.provisioned) {
            *provisioned -= 1;
        }
        entry.queue.clone()
    }

    /// Finds the queue of the node a connection binds to, auto-provisioning
    /// it when allowed (evicting an idle node when the table is full), and
    /// counts the connection on it, under the table's lock so that the
    /// node cannot be evicted in between.
    pub(crate) fn bind(
        &self,
        name: &str,
        config: QueueConfig,
        counters: &ListenerCounters,
    ) -> Result<Arc<Queue>, DropReason> {
        if name.len() > self.config.max_node_id_bytes {
            return Err(DropReason::NodeIdTooLong);
        }
        if let Some(e) = self.nodes.read().get(name) {
            e.queue.connection_bound();
            return Ok(e.queue.clone());
        }
        if !self.config.auto_provision {
            return Err(DropReason::UnknownNode);
        }
        let mut provisioned = self.provisioned.lock();
        let mut nodes = self.nodes.write();
        if let Some(e) = nodes.get(name) {
            e.queue.connection_bound();
            return Ok(e.queue.clone());
        }
        if *provisioned >= self.config.max_nodes {
            let Some(evicted) = self.evict_idle(&mut nodes) else {
                return Err(DropReason::MaxNodes);
            };
            *provisioned -= 1;
            ListenerCounters::add(&counters.nodes_evicted, 1);
            tracing::info!(node = %evicted, new_node = name, "node table full: evicted an idle node");
        }
        *provisioned += 1;
        let key: Arc<str> = Arc::from(name);
        let queue = Queue::new(key.clone(), config);
        queue.connection_bound();
        nodes.insert(
            key,
            Entry {
                queue: queue.clone(),
                provisioned: true,
            },
        );
        drop(nodes);
        drop(provisioned);
        if let Some(tx) = self.new_nodes_tx.lock().as_ref() {
            // Capacity is max_nodes, which is at most as many as exist at
            // once: this fails only once the application dropped the
            // stream, or never reads it and nodes were evicted.
            if tx.try_send(Receiver::new(queue.clone())).is_err() {
                tracing::debug!(node = name, "new-node stream full or gone; not announced");
            }
        }
        tracing::info!(node = name, "auto-provisioned node");
        Ok(queue)
    }

    /// Removes the auto-provisioned node idle the longest, if one has been
    /// for `evict_idle_after` (no connection, no frame waiting, nothing
    /// received): its receivers end. Called with the table locked, so no
    /// connection binds to it meanwhile.
    fn evict_idle(&self, nodes: &mut HashMap<Arc<str>, Entry>) -> Option<Arc<str>> {
        let after = self.config.evict_idle_after?;
        let now = SystemTime::now();
        let (name, _) = nodes
            .iter()
            .filter(|(_, e)| e.provisioned)
            .filter_map(|(name, e)| {
                let idle = e.queue.idle_for(now)?;
                (idle >= after).then_some((name, idle))
            })
            .max_by_key(|(_, idle): &(&Arc<str>, Duration)| *idle)?;
        let name = name.clone();
        let entry = nodes.remove(&name)?;
        entry.queue.finish();
        Some(name)
    }

    /// A receiver for every node known now.
    pub(crate) fn receivers(&self) -> Vec<Receiver> {
        self.nodes
            .read()
            .values()
            .map(|e| Receiver::new(e.queue.clone()))
            .collect()
    }

    pub(crate) fn take_new_nodes(&self) -> Option<NewNodes> {
        self.new_nodes_rx.lock().take()
    }

    pub(crate) fn nodes(&self) -> Vec<NodeStatus> {
        self.nodes_page(0, usize::MAX).1
    }

    /// How many nodes there are, and the `limit` nodes from the `offset`th
    /// on, by name: the statuses of the other nodes are never built.
    pub(crate) fn nodes_page(&self, offset: usize, limit: usize) -> (usize, Vec<NodeStatus>) {
        // The page's queues are picked under the table's lock; their
        // statuses (a lock of each queue) are read after it.
        let (total, page) = {
            let nodes = self.nodes.read();
            let mut names: Vec<&Arc<str>> = nodes.keys().collect();
            names.sort_unstable();
            let page: Vec<Arc<Queue>> = names
                .iter()
                .skip(offset)
                .take(limit)
                .filter_map(|n| nodes.get(*n))
                .map(|e| e.queue.clone())
                .collect();
            (names.len(), page)
        };
        let statuses = page
            .iter()
            .map(|q| NodeStatus {
                name: q.name().to_string(),
                healthy: q.is_healthy(),
                queue: q.stats(),
                connections: 0,
                peer: None,
                connected_since: None,
            })
            .collect();
        (total, statuses)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.nodes.read().len()
    }

    /// After shutdown: every queue drains and then ends, and the new-node
    /// stream ends.
    pub(crate) fn finish(&self) {
        self.new_nodes_tx.lock().take();
        for e in self.nodes.read().values() {
            e.queue.finish();
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
        let counters = ListenerCounters::default();
        let a = router.bind("a", q, &counters).expect("a");
        assert!(Arc::ptr_eq(
            &a,
            &router.bind("a", q, &counters).expect("a again")
        ));
        router.bind("b", q, &counters).expect("b");
        assert_eq!(
            router.bind("c", q, &counters).err(),
            Some(DropReason::MaxNodes)
        );
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

    /// Issue 18: a full table makes room by evicting the provisioned node
    /// idle the longest, never one with a connection or frames waiting,
    /// nor one the application registered; ids over the cap are refused.
    #[test]
    fn a_full_table_evicts_idle_provisioned_nodes_only() {
        let router = Router::new(NodesConfig {
            auto_provision: true,
            max_nodes: 1,
            max_node_id_bytes: 8,
            evict_idle_after: Some(Duration::ZERO),
        });
        let q = QueueConfig::default();
        let counters = ListenerCounters::default();
        let a = router.bind("a", q, &counters).expect("a");
        assert_eq!(
            router.bind("b", q, &counters).err(),
            Some(DropReason::MaxNodes),
            "a is connected"
        );
        a.connection_unbound();
        let b = router.bind("b", q, &counters).expect("a evicted for b");
        assert_eq!(counters.snapshot().nodes_evicted, 1);
        assert!(Receiver::new(a).try_recv().is_err());
        b.connection_unbound();
        b.push(
            &mut vec![crate::frame::Incoming::new(
                crate::frame::Frame {
                    payload: bytes::Bytes::from_static(b"x"),
                    received_at: SystemTime::now(),
                    source: crate::frame::test_source(),
                    seq: None,
                },
                None,
            )],
            true,
        );
        assert_eq!(
            router.bind("c", q, &counters).err(),
            Some(DropReason::MaxNodes),
            "b has a frame waiting"
        );
        router.register("app", q);
        Receiver::new(b.clone()).try_recv().expect("b's frame");
        router.bind("c", q, &counters).expect("b evicted for c");
        assert_eq!(router.len(), 2, "the application's node stays");
        assert_eq!(
            router.bind("123456789", q, &counters).err(),
            Some(DropReason::NodeIdTooLong)
        );
        let (total, page) = router.nodes_page(1, 5);
        assert_eq!(total, 2);
        assert_eq!(
            page.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["c"]
        );
    }

    #[test]
    fn unknown_nodes_are_refused_without_auto_provisioning() {
        let router = Router::new(NodesConfig {
            auto_provision: false,
            max_nodes: 2,
            ..NodesConfig::default()
        });
        let q = QueueConfig::default();
        let counters = ListenerCounters::default();
        assert_eq!(
            router.bind("x", q, &counters).err(),
            Some(DropReason::UnknownNode)
        );
        let registered = router.register("x", q);
        assert!(Arc::ptr_eq(
            &registered,
            &router.bind("x", q, &counters).expect("x")
        ));
    }
}

//! The admin HTTP server (axum): `/healthz`, `/readyz`, `/metrics`,
//! `/api/nodes`, `/api/connections`, `/api/stats`, and `POST /api/send`
//! when enabled.
//!
//! Handlers only read snapshots (the hub's counters, node table, open
//! connections and 1 Hz statistics, the sinks' statuses) or hand one
//! message to the hub's egress; nothing here is on the ingest path.
//! [`router`] builds the probes and [`api_router`] the JSON API, one
//! `.route()` per endpoint; [`door`] keeps the door (token, TLS, deadlines,
//! connection cap) in front of them.

pub mod dashboard;
pub mod door;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use framehub::{ClosedConnection, ConnectionInfo, DropReason, Hub};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::door::{Door, DoorConfig, DoorCounters};
use crate::metrics::{self, MetricsSources};
use crate::reload::Reloads;
use crate::sink::{Message, SinkStatus};

/// Connections `/api/connections` returns when no `limit` is given.
pub const DEFAULT_CONNECTIONS_LIMIT: usize = 100;
/// The most connections one `/api/connections` response holds.
pub const MAX_CONNECTIONS_LIMIT: usize = 10_000;

/// What the handlers read.
pub struct AdminState {
    /// The hub.
    pub hub: Hub,
    /// Every sink's status.
    pub sinks: Vec<Arc<SinkStatus>>,
    /// When the daemon started.
    pub started: Instant,
    /// Set once shutdown begins: `/readyz` turns 503.
    pub shutting_down: AtomicBool,
    /// The sink thread's queue, to report its depth; weak, so it never
    /// keeps the sink thread waiting at shutdown.
    pub sink_queue: mpsc::WeakSender<Message>,
    /// Whether `POST /api/send` may write to clients (`[admin] send`).
    pub allow_send: bool,
    /// SIGHUP reloads done, by result.
    pub reloads: Arc<Reloads>,
    /// What the door turned away, for `/metrics`.
    pub door: Arc<DoorCounters>,
    /// The NATS node view `/api/nodes?scope=cluster` reads, when NATS is on.
    pub cluster_view: parking_lot::Mutex<Option<crate::cluster::ViewCell>>,
}

impl AdminState {
    /// Why the daemon is unhealthy: one line per listener that does not
    /// accept and per sink that fails; empty when all is well.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for l in self.hub.listeners() {
            if !l.is_accepting {
                problems.push(match l.accept_error {
                    Some(e) => format!("listener {:?}: accept() failing: {e}", l.name),
                    None => format!("listener {:?}: not accepting connections", l.name),
                });
            }
        }
        for s in &self.sinks {
            if let Some(e) = s.error() {
                problems.push(format!("sink {:?} ({}): {e}", s.name, s.kind));
            }
        }
        // The sinks do not keep up and the queues in front of them drop
        // (a drop policy): frames are being lost now. (Full with `block`
        // is backpressure, not a fault.)
        if let Some(queue) = self.sink_queue.upgrade()
            && queue.capacity() == 0
        {
            let dropped = self.hub.counters().dropped(DropReason::QueueFull);
            if dropped > 0 {
                problems.push(format!(
                    "the sinks' queue is full and receiver queues drop frames ({dropped} dropped as queue_full so far)"
                ));
            }
        }
        problems
    }

    /// Batches waiting for the sink thread, and how many it holds at most
    /// (0, 0 once it is gone).
    pub fn sink_queue_depth(&self) -> (usize, usize) {
        self.sink_queue
            .upgrade()
            .map(|tx| (tx.max_capacity() - tx.capacity(), tx.max_capacity()))
            .unwrap_or((0, 0))
    }
}

/// The probes and `/metrics`, with the JSON API under `/api`, every
/// request through `door`'s [`door::gate`].
pub fn router(state: Arc<AdminState>, door: Arc<Door>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .nest("/api", api_router())
        .merge(dashboard::routes())
        .layer(axum::middleware::from_fn_with_state(door, door::gate))
        .with_state(state)
}

/// The JSON API.
pub fn api_router() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/nodes", get(nodes))
        .route("/connections", get(connections))
        .route("/stats", get(stats))
        .route("/send", post(send))
}

/// Serves until `shutdown` is cancelled, then finishes the requests in
/// flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    config: DoorConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let door = Door::new(config, state.door.clone());
    door::run(listener, router(state, door.clone()), door, shutdown).await
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    problems: Vec<String>,
}

async fn healthz(State(state): State<Arc<AdminState>>) -> Response {
    let problems = state.problems();
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if problems.is_empty() { "ok" } else { "failing" },
        problems,
    };
    (status, Json(body)).into_response()
}

/// Ready while every listener accepts and shutdown has not begun. A failing
/// sink makes `/healthz` fail but not this: devices can still connect and
/// the other sinks still work.
async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    let mut problems = Vec::new();
    if state.shutting_down.load(Ordering::Relaxed) {
        problems.push("shutting down".to_owned());
    }
    for l in state.hub.listeners() {
        if !l.is_accepting {
            problems.push(format!("listener {:?}: not accepting connections", l.name));
        }
    }
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if problems.is_empty() {
            "ready"
        } else {
            "not ready"
        },
        problems,
    };
    (status, Json(body)).into_response()
}

async fn metrics_text(State(state): State<Arc<AdminState>>) -> Response {
    let sink_queue = state.sink_queue_depth();
    let mut text = metrics::render(&MetricsSources {
        hub: &state.hub,
        sinks: &state.sinks,
        started: state.started,
        sink_queue,
        reloads: &state.reloads,
    });
    state.door.render(&mut text);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

#[derive(Serialize)]
struct NodeView {
    name: String,
    connected: bool,
    connections: usize,
    peer: Option<SocketAddr>,
    connected_since: Option<String>,
    last_frame_at: Option<String>,
    /// Frames delivered into its queue.
    frames: u64,
    /// Frames its queue dropped (full, or closed).
    dropped: u64,
    /// Frames skipped by dedup.
    duplicates: u64,
    queue_depth: usize,
    frames_per_second: f64,
}

#[derive(Serialize)]
struct NodesResponse {
    /// Nodes in the table.
    total: usize,
    /// Where this page starts.
    offset: usize,
    /// How many are listed (at most `limit`).
    returned: usize,
    nodes: Vec<NodeView>,
}

/// Nodes `/api/nodes` returns when no `limit` is given.
pub const DEFAULT_NODES_LIMIT: usize = 100;
/// The most nodes one `/api/nodes` response holds.
pub const MAX_NODES_LIMIT: usize = 10_000;

/// `?offset=n&limit=m`: a page of the node table, by name;
/// `?scope=cluster`: every instance's nodes, from the NATS node view.
#[derive(Debug, Deserialize)]
struct NodesQuery {
    offset: Option<usize>,
    limit: Option<usize>,
    scope: Option<String>,
}

/// `/api/nodes?scope=cluster`: which instance holds which node, fleet-wide.
async fn cluster_nodes(state: &AdminState) -> Response {
    let cell = state.cluster_view.lock().clone();
    let Some(cell) = cell else {
        return (
            StatusCode::NOT_FOUND,
            "scope=cluster needs NATS with [nats.view] enabled\n",
        )
            .into_response();
    };
    let Some(view) = cell.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the NATS node view is not open yet\n",
        )
            .into_response();
    };
    match view.cluster().await {
        Ok(nodes) => {
            Json(serde_json::json!({ "scope": "cluster", "nodes": nodes })).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// A page of the nodes (`offset`, `limit`; 100 by default, at most
/// 10,000, so an answer stays small whatever the table holds), each with
/// its rate over the latest statistics period (0 before the first one
/// ended); `?scope=cluster`: the whole fleet's.
async fn nodes(State(state): State<Arc<AdminState>>, Query(query): Query<NodesQuery>) -> Response {
    if query.scope.as_deref() == Some("cluster") {
        return cluster_nodes(&state).await;
    }
    let offset = query.offset.unwrap_or(0);
    let limit = query
        .limit
        .unwrap_or(DEFAULT_NODES_LIMIT)
        .min(MAX_NODES_LIMIT);
    let page = state.hub.nodes_page(offset, limit);
    let nodes = page.nodes;
    let stats = state.hub.stats();
    // Held only while the views are built: the sampler waits for it.
    let stats = stats.borrow();
    let nodes = nodes
        .into_iter()
        .map(|n| NodeView {
            frames_per_second: stats.node(&n.name).map_or(0.0, |r| r.frames_per_sec),
            connected: n.healthy,
            connections: n.connections,
            peer: n.peer,
            connected_since: n.connected_since.map(rfc3339),
            last_frame_at: n.queue.last_frame_at.map(rfc3339),
            frames: n.queue.enqueued,
            dropped: n.queue.dropped_full + n.queue.dropped_closed,
            duplicates: n.queue.duplicates,
            queue_depth: n.queue.depth,
            name: n.name,
        })
        .collect::<Vec<_>>();
    Json(NodesResponse {
        total: page.total,
        offset,
        returned: nodes.len(),
        nodes,
    })
    .into_response()
}

/// `?state=open` (the default) or `?state=closed`; `?sort=field`
/// (ascending) or `?sort=-field` (descending; open connections only,
/// closed ones are listed newest first); `?offset=n&limit=n`;
/// `?node=NAME`, `?listener=NAME`.
#[derive(Debug, Deserialize)]
struct ConnectionsQuery {
    state: Option<String>,
    sort: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
    node: Option<String>,
    listener: Option<String>,
}

impl ConnectionsQuery {
    /// Whether a connection of `listener`, bound to `node`, passes the
    /// `node=` and `listener=` filters.
    fn keeps(&self, listener: &str, node: Option<&str>) -> bool {
        self.listener.as_deref().is_none_or(|l| l == listener)
            && self.node.as_deref().is_none_or(|n| Some(n) == node)
    }

    fn limit(&self) -> usize {
        self.limit
            .unwrap_or(DEFAULT_CONNECTIONS_LIMIT)
            .min(MAX_CONNECTIONS_LIMIT)
    }
}

/// Fields `/api/connections` sorts by.
const SORT_FIELDS: &[&str] = &[
    "id",
    "listener",
    "peer",
    "node",
    "since",
    "idle",
    "bytes_in",
    "frames_in",
    "bytes_out",
    "frames_out",
    "egress_pending",
];

/// An open connection as `/api/connections` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConnectionView {
    /// Its id.
    pub id: u64,
    /// The listener that accepted it.
    pub listener: String,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The node it is bound to.
    pub node: Option<String>,
    /// When it was accepted (RFC 3339).
    pub since: String,
    /// Seconds since its last read.
    pub idle_seconds: f64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Frames written.
    pub frames_out: u64,
    /// Its frames and messages dropped.
    pub dropped: u64,
    /// Bytes queued for it now.
    pub egress_pending: u64,
}

impl From<ConnectionInfo> for ConnectionView {
    fn from(c: ConnectionInfo) -> ConnectionView {
        ConnectionView {
            id: c.id,
            listener: c.listener.to_string(),
            peer: c.peer,
            node: c.node.as_deref().map(str::to_owned),
            since: rfc3339(c.since),
            idle_seconds: c.idle.as_secs_f64(),
            bytes_in: c.bytes_in,
            frames_in: c.frames_in,
            bytes_out: c.bytes_out,
            frames_out: c.frames_out,
            dropped: c.dropped,
            egress_pending: c.egress_pending_bytes,
        }
    }
}

#[derive(Serialize)]
struct ConnectionsResponse<T> {
    /// `open` or `closed`.
    state: &'static str,
    /// Connections that pass the filters, in all.
    total: usize,
    /// How many were skipped (`offset`).
    offset: usize,
    /// How many are listed (at most `limit`).
    returned: usize,
    connections: Vec<T>,
}

/// A closed connection, from the hub's history.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClosedView {
    /// Its id.
    pub id: u64,
    /// The listener that accepted it.
    pub listener: String,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The node it was bound to.
    pub node: Option<String>,
    /// When it was accepted (RFC 3339).
    pub opened: String,
    /// When it ended (RFC 3339).
    pub closed: String,
    /// How long it was open.
    pub duration_seconds: f64,
    /// The stable label (`peer_closed`, `auth_failed`, ...).
    pub reason: String,
    /// The reason in words, with its detail.
    pub detail: String,
    /// Bytes read.
    pub bytes_in: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Frames written.
    pub frames_out: u64,
    /// Its frames and messages dropped.
    pub dropped: u64,
}

impl From<ClosedConnection> for ClosedView {
    fn from(c: ClosedConnection) -> ClosedView {
        ClosedView {
            id: c.id,
            listener: c.listener.to_string(),
            peer: c.peer,
            node: c.node.as_deref().map(str::to_owned),
            opened: rfc3339(c.opened),
            closed: rfc3339(c.closed),
            duration_seconds: c.duration().as_secs_f64(),
            reason: c.reason.as_str().to_owned(),
            detail: c.reason.to_string(),
            bytes_in: c.bytes_in,
            frames_in: c.frames_in,
            bytes_out: c.bytes_out,
            frames_out: c.frames_out,
            dropped: c.dropped,
        }
    }
}

fn sort_connections(conns: &mut [ConnectionInfo], field: &str) -> Result<(), String> {
    let (field, descending) = match field.strip_prefix('-') {
        Some(f) => (f, true),
        None => (field, false),
    };
    match field {
        "id" => conns.sort_by_key(|c| c.id),
        "listener" => conns.sort_by(|a, b| a.listener.cmp(&b.listener)),
        "peer" => conns.sort_by_key(|c| c.peer),
        "node" => conns.sort_by(|a, b| a.node.cmp(&b.node)),
        "since" => conns.sort_by_key(|c| c.since),
        "idle" => conns.sort_by_key(|c| c.idle),
        "bytes_in" => conns.sort_by_key(|c| c.bytes_in),
        "frames_in" => conns.sort_by_key(|c| c.frames_in),
        "bytes_out" => conns.sort_by_key(|c| c.bytes_out),
        "frames_out" => conns.sort_by_key(|c| c.frames_out),
        "egress_pending" => conns.sort_by_key(|c| c.egress_pending_bytes),
        other => {
            return Err(format!(
                "unknown sort field {other:?}; one of {} (prefix - for descending)",
                SORT_FIELDS.join(", ")
            ));
        }
    }
    if descending {
        conns.reverse();
    }
    Ok(())
}

async fn connections(
    State(state): State<Arc<AdminState>>,
    Query(query): Query<ConnectionsQuery>,
) -> Response {
    match query.state.as_deref().unwrap_or("open") {
        "open" => open_connections(&state.hub, &query),
        "closed" => closed_connections(&state.hub, &query),
        other => (
            StatusCode::BAD_REQUEST,
            format!("unknown state {other:?}; open or closed\n"),
        )
            .into_response(),
    }
}

fn open_connections(hub: &Hub, query: &ConnectionsQuery) -> Response {
    let mut conns = hub.connections();
    conns.retain(|c| query.keeps(&c.listener, c.node.as_deref()));
    if let Err(e) = sort_connections(&mut conns, query.sort.as_deref().unwrap_or("id")) {
        return (StatusCode::BAD_REQUEST, e).into_response();
    }
    let offset = query.offset.unwrap_or(0);
    let total = conns.len();
    let connections: Vec<ConnectionView> = conns
        .into_iter()
        .skip(offset)
        .take(query.limit())
        .map(ConnectionView::from)
        .collect();
    Json(ConnectionsResponse {
        state: "open",
        total,
        offset,
        returned: connections.len(),
        connections,
    })
    .into_response()
}

/// The hub's history of closed connections, newest first.
fn closed_connections(hub: &Hub, query: &ConnectionsQuery) -> Response {
    if query.sort.is_some() {
        return (
            StatusCode::BAD_REQUEST,
            "closed connections are listed newest first; sort is for state=open\n",
        )
            .into_response();
    }
    let offset = query.offset.unwrap_or(0);
    let page = hub.closed_connections().page(offset, query.limit(), |c| {
        query.keeps(&c.listener, c.node.as_deref())
    });
    let connections: Vec<ClosedView> = page.connections.into_iter().map(Into::into).collect();
    Json(ConnectionsResponse {
        state: "closed",
        total: page.total,
        offset,
        returned: connections.len(),
        connections,
    })
    .into_response()
}

/// The latest 1 Hz statistics snapshot (`seq` 0 before the first period
/// ended), as `framehub serve --stats` prints them.
async fn stats(State(state): State<Arc<AdminState>>) -> Response {
    let snapshot = state.hub.stats().borrow().clone();
    Json(snapshot).into_response()
}

/// `?conn=ID`, `?node=NAME`, `?listener=NAME`, or none of them.
#[derive(Debug, Deserialize)]
struct SendQuery {
    conn: Option<u64>,
    node: Option<String>,
    listener: Option<String>,
}

#[derive(Serialize)]
struct SendResponse {
    /// Clients whose egress buffer took the message.
    sent: usize,
}

/// Writes the request body, as one message in the listener's framing, to
/// one connection (`?conn=`), every connection of a node (`?node=`), every
/// client of a listener (`?listener=`) or every client. A client whose
/// buffer is full does not take it (counted, as for any egress).
async fn send(
    State(state): State<Arc<AdminState>>,
    Query(query): Query<SendQuery>,
    body: Bytes,
) -> Response {
    if !state.allow_send {
        return (
            StatusCode::FORBIDDEN,
            "sending to clients is off; set [admin] send = true\n",
        )
            .into_response();
    }
    let hub = &state.hub;
    let result = match (query.conn, query.node.as_deref(), query.listener.as_deref()) {
        (Some(conn), None, None) => hub.send_to_connection(conn, &body),
        (None, Some(node), None) => hub.send_to_node(node, &body),
        (None, None, Some(listener)) => hub.broadcast_on(listener, &body),
        (None, None, None) => hub.broadcast(&body),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "give at most one of conn, node, listener\n",
            )
                .into_response();
        }
    };
    match result {
        Ok(sent) => Json(SendResponse { sent }).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

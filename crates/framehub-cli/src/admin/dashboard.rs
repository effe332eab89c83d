//! The live dashboard: `/` serves one self-contained page (HTML, CSS and
//! script embedded in the binary, nothing fetched from elsewhere: the
//! machines it runs on are often offline), and `/api/overview` the one
//! JSON document it polls every second. `framehub top` reads the same
//! document, so the browser and the terminal show the same figures.
//!
//! The overview is built from the snapshots the rest of the admin API
//! reads (the 1 Hz statistics, the counters, the node table, the open and
//! closed connections, the sinks' statuses); every list in it is capped,
//! so a fleet of 100,000 devices does not make a 100 MB page.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::{AdminState, ClosedView, ConnectionView, rfc3339};

/// The page: markup, style and script in one file.
const PAGE: &str = include_str!("dashboard.html");

/// Open connections the overview lists at most (the page sorts and
/// filters these; `/api/connections` pages through all).
pub const OVERVIEW_CONNECTIONS: usize = 500;
/// Nodes the overview lists at most, busiest first.
pub const OVERVIEW_NODES: usize = 500;
/// Closed connections the overview lists, newest first.
pub const OVERVIEW_CLOSED: usize = 50;

/// `/` and `/api/overview`.
pub fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/", get(page))
        .route("/api/overview", get(overview))
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Nothing but this page's own inline code and its own origin.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

/// Everything the dashboard and `framehub top` show, as of one moment.
#[derive(Debug, Serialize, Deserialize)]
pub struct Overview {
    /// The daemon's version.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_seconds: f64,
    /// The statistics period the rates are from (`seq` 0: none ended yet).
    pub seq: u64,
    /// When that period ended, ms since the Unix epoch.
    pub unix_ms: u64,
    /// Each listener: rates over the period, totals since start.
    pub listeners: Vec<ListenerOverview>,
    /// Known nodes in all.
    pub nodes_total: usize,
    /// At most [`OVERVIEW_NODES`] of them, busiest first.
    pub nodes: Vec<NodeOverview>,
    /// Open connections in all.
    pub connections_total: usize,
    /// At most [`OVERVIEW_CONNECTIONS`] of them, by id.
    pub connections: Vec<ConnectionView>,
    /// Every sink.
    pub sinks: Vec<SinkOverview>,
    /// Record batches waiting for the sink thread, and its capacity.
    pub sink_queue: (usize, usize),
    /// Closed connections remembered now.
    pub closed_total: usize,
    /// The newest [`OVERVIEW_CLOSED`] of them.
    pub closed: Vec<ClosedView>,
}

/// One listener in the overview.
#[derive(Debug, Serialize, Deserialize)]
pub struct ListenerOverview {
    /// Its name.
    pub name: String,
    /// Connections open at the end of the period.
    pub connections_open: u64,
    /// Frames received during the period.
    pub frames_in: u64,
    /// Bytes read during the period.
    pub bytes_in: u64,
    /// Frames written during the period.
    pub frames_out: u64,
    /// Bytes written during the period.
    pub bytes_out: u64,
    /// Rates over the period.
    pub frames_in_per_sec: f64,
    /// Bytes read per second.
    pub bytes_in_per_sec: f64,
    /// Frames written per second.
    pub frames_out_per_sec: f64,
    /// Bytes written per second.
    pub bytes_out_per_sec: f64,
    /// Dropped during the period, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Since start: frames received.
    pub frames_received_total: u64,
    /// Since start: bytes read.
    pub bytes_received_total: u64,
    /// Since start: frames delivered to a receiver.
    pub frames_delivered_total: u64,
    /// Since start: frames written.
    pub frames_sent_total: u64,
    /// Since start: dropped, by reason (reasons with none left out).
    pub dropped_total: BTreeMap<String, u64>,
    /// Since start: connections accepted.
    pub connections_accepted_total: u64,
}

/// One node in the overview.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeOverview {
    /// Its name.
    pub name: String,
    /// Whether a connection is bound to it now.
    pub connected: bool,
    /// Its connections now.
    pub connections: usize,
    /// Its peer's address (the latest connection's).
    pub peer: Option<SocketAddr>,
    /// When its last frame was delivered.
    pub last_frame_at: Option<String>,
    /// Frames delivered into its queue since start.
    pub frames: u64,
    /// Frames per second over the statistics period.
    pub frames_per_second: f64,
    /// Frames waiting in its queue.
    pub queue_depth: usize,
    /// Frames its queue dropped.
    pub dropped: u64,
}

/// One sink in the overview.
#[derive(Debug, Serialize, Deserialize)]
pub struct SinkOverview {
    /// Its name.
    pub name: String,
    /// file, stdout or tap.
    pub kind: String,
    /// Why it fails, or `None` while it works.
    pub error: Option<String>,
    /// Records written.
    pub records_written: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Records it could not write.
    pub records_failed: u64,
    /// Files rotated.
    pub rotations: u64,
    /// Tap subscribers now.
    pub subscribers: u64,
    /// Records tap subscribers missed.
    pub records_lost: u64,
}

async fn overview(State(state): State<Arc<AdminState>>) -> Json<Overview> {
    Json(build(&state))
}

/// The overview as of now.
pub fn build(state: &AdminState) -> Overview {
    let hub = &state.hub;
    let snapshot = hub.stats().borrow().clone();
    let mut listeners = Vec::new();
    // Every listener, also before the first statistics period ended.
    for info in hub.listeners() {
        let Some(totals) = hub.listener_counters(&info.name) else {
            continue;
        };
        let period = snapshot.listeners.iter().find(|l| l.listener == info.name);
        let t = period.map(|l| l.traffic.clone()).unwrap_or_default();
        let connections_open = period.map_or(totals.connections_open, |l| l.connections_open);
        let dropped = period.map(|l| &l.dropped);
        listeners.push(ListenerOverview {
            name: info.name.clone(),
            connections_open,
            frames_in: t.frames_in,
            bytes_in: t.bytes_in,
            frames_out: t.frames_out,
            bytes_out: t.bytes_out,
            frames_in_per_sec: t.frames_in_per_sec,
            bytes_in_per_sec: t.bytes_in_per_sec,
            frames_out_per_sec: t.frames_out_per_sec,
            bytes_out_per_sec: t.bytes_out_per_sec,
            dropped: dropped
                .into_iter()
                .flatten()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            frames_received_total: totals.frames_received,
            bytes_received_total: totals.bytes_received,
            frames_delivered_total: totals.frames_delivered,
            frames_sent_total: totals.frames_sent,
            dropped_total: totals
                .dropped
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| (r.as_str().to_owned(), *n))
                .collect(),
            connections_accepted_total: totals.connections_accepted,
        });
    }
    let mut nodes: Vec<NodeOverview> = hub
        .nodes()
        .into_iter()
        .map(|n| NodeOverview {
            frames_per_second: snapshot.node(&n.name).map_or(0.0, |r| r.frames_per_sec),
            connected: n.healthy,
            connections: n.connections,
            peer: n.peer,
            last_frame_at: n.queue.last_frame_at.map(rfc3339),
            frames: n.queue.enqueued,
            queue_depth: n.queue.depth,
            dropped: n.queue.dropped_full + n.queue.dropped_closed,
            name: n.name,
        })
        .collect();
    let nodes_total = nodes.len();
    // Busiest first, then by name, so the cut keeps the ones that matter.
    nodes.sort_by(|a, b| {
        b.frames_per_second
            .total_cmp(&a.frames_per_second)
            .then_with(|| a.name.cmp(&b.name))
    });
    nodes.truncate(OVERVIEW_NODES);
    let open = hub.connections();
    let connections_total = open.len();
    let connections = open
        .into_iter()
        .take(OVERVIEW_CONNECTIONS)
        .map(ConnectionView::from)
        .collect();
    let sinks = state
        .sinks
        .iter()
        .map(|s| {
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            SinkOverview {
                name: s.name.clone(),
                kind: s.kind.to_owned(),
                error: s.error(),
                records_written: get(&s.records_written),
                bytes_written: get(&s.bytes_written),
                records_failed: get(&s.records_failed),
                rotations: get(&s.rotations),
                subscribers: get(&s.subscribers),
                records_lost: get(&s.records_lost),
            }
        })
        .collect();
    let history = hub.closed_connections().page(0, OVERVIEW_CLOSED, |_| true);
    Overview {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: state.started.elapsed().as_secs_f64(),
        seq: snapshot.seq,
        unix_ms: snapshot.unix_ms,
        listeners,
        nodes_total,
        nodes,
        connections_total,
        connections,
        sinks,
        sink_queue: state.sink_queue_depth(),
        closed_total: history.total,
        closed: history.connections.into_iter().map(Into::into).collect(),
    }
}

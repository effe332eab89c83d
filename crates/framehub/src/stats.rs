//! Every counter of the hub, declared once, and the limiter that keeps
//! repeated warnings from flooding the log.
//!
//! `counter_set!` declares a set of counters once, each with its name,
//! Prometheus family (unit in the name), help text and kind, and derives
//! from that one table: the live atomics the connection tasks add to, the
//! plain snapshot ([`Counters`]), summing (`merge`), the difference of two
//! snapshots (`since`, what the 1 Hz statistics in `snapshot` report), and
//! the list of (name, help, kind, value) that `/metrics` walks
//! ([`Counters::METRICS`], [`Counters::metric_values`]).
//!
//! Connection tasks add to the atomics once per read, not once per frame,
//! so many connections do not fight over the same cache line per frame.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::reason::{CloseReason, TlsFailure};
pub use crate::reason::{DropReason, ProxyFailure};

/// How a declared figure behaves over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricKind {
    /// Only goes up; a period's figure is the difference of two snapshots.
    Counter,
    /// A level now; a period's figure is its latest value.
    Gauge,
}

impl MetricKind {
    /// The Prometheus `# TYPE`.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        }
    }
}

/// One declared figure of a [`Counters`] snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricInfo {
    /// The field of the snapshot that holds it.
    pub field: &'static str,
    /// Its Prometheus family, unit in the name; `None` when `/metrics`
    /// leaves it out.
    pub prometheus: Option<&'static str>,
    /// What it counts (the field's doc and the `# HELP` text).
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// The label that tells its samples apart when it has one per reason.
    pub label: Option<&'static str>,
}

/// A declared figure's value in one snapshot: one number, or one per
/// reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricValue<'a> {
    /// One number.
    One(u64),
    /// One number per [`CloseReason`] label.
    ByCloseReason(&'a [(&'static str, u64)]),
    /// One number per [`DropReason`].
    ByDropReason(&'a [(DropReason, u64)]),
    /// One number per [`ProxyFailure`].
    ByProxyFailure(&'a [(ProxyFailure, u64)]),
    /// One number per [`TlsFailure`] label.
    ByTlsFailure(&'a [(&'static str, u64)]),
}

impl MetricValue<'_> {
    /// Calls `f` with each sample: the reason label (`None` for a single
    /// number) and the value, in the declared order of the reasons.
    pub fn for_each(&self, mut f: impl FnMut(Option<&'static str>, u64)) {
        match *self {
            MetricValue::One(n) => f(None, n),
            MetricValue::ByCloseReason(v) | MetricValue::ByTlsFailure(v) => {
                v.iter().for_each(|&(r, n)| f(Some(r), n));
            }
            MetricValue::ByDropReason(v) => v.iter().for_each(|&(r, n)| f(Some(r.as_str()), n)),
            MetricValue::ByProxyFailure(v) => v.iter().for_each(|&(r, n)| f(Some(r.as_str()), n)),
        }
    }
}

/// What each shape of counter is, live and in a snapshot, and how it is
/// loaded, summed, differenced and shown: `count` is one number,
/// `by_close`, `by_drop`, `by_proxy` and `by_tls` one per reason.
macro_rules! cell {
    (live count) => { AtomicU64 };
    (live by_close) => { [AtomicU64; CloseReason::LABELS.len()] };
    (live by_drop) => { [AtomicU64; DropReason::ALL.len()] };
    (live by_proxy) => { [AtomicU64; ProxyFailure::ALL.len()] };
    (value count) => { u64 };
    (value by_close) => { [(&'static str, u64); CloseReason::LABELS.len()] };
    (value by_drop) => { [(DropReason, u64); DropReason::ALL.len()] };
    (value by_proxy) => { [(ProxyFailure, u64); ProxyFailure::ALL.len()] };
    (zero count) => { 0 };
    (zero by_close) => { CloseReason::LABELS.map(|l| (l, 0)) };
    (zero by_drop) => { DropReason::ALL.map(|r| (r, 0)) };
    (zero by_proxy) => { ProxyFailure::ALL.map(|r| (r, 0)) };
    (live by_tls) => { [AtomicU64; TlsFailure::ALL.len()] };
    (value by_tls) => { [(&'static str, u64); TlsFailure::ALL.len()] };
    (zero by_tls) => { TlsFailure::LABELS.map(|l| (l, 0)) };
    (load count, $a:expr) => { $a.load(Ordering::Relaxed) };
    (load by_close, $a:expr) => {
        std::array::from_fn(|i| (CloseReason::LABELS[i], $a[i].load(Ordering::Relaxed)))
    };
    (load by_tls, $a:expr) => {
        std::array::from_fn(|i| (TlsFailure::LABELS[i], $a[i].load(Ordering::Relaxed)))
    };
    (load by_drop, $a:expr) => {
        DropReason::ALL.map(|r| (r, $a[r.index()].load(Ordering::Relaxed)))
    };
    (load by_proxy, $a:expr) => {
        ProxyFailure::ALL.map(|r| (r, $a[r.index()].load(Ordering::Relaxed)))
    };
    (add count, $mine:expr, $theirs:expr) => { $mine += $theirs };
    (add $by:ident, $mine:expr, $theirs:expr) => {
        for (m, t) in $mine.iter_mut().zip($theirs.iter()) {
            m.1 += t.1;
        }
    };
    (sub count, $now:expr, $before:expr) => { $now.saturating_sub($before) };
    (sub $by:ident, $now:expr, $before:expr) => {{
        let mut d = $now;
        for (n, b) in d.iter_mut().zip($before.iter()) {
            n.1 = n.1.saturating_sub(b.1);
        }
        d
    }};
    (show count, $v:expr) => { MetricValue::One($v) };
    (show by_close, $v:expr) => { MetricValue::ByCloseReason(&$v) };
    (show by_drop, $v:expr) => { MetricValue::ByDropReason(&$v) };
    (show by_proxy, $v:expr) => { MetricValue::ByProxyFailure(&$v) };
    (show by_tls, $v:expr) => { MetricValue::ByTlsFailure(&$v) };
    (label count) => { None };
    (label $by:ident) => { Some("reason") };
}

/// `Some` of the Prometheus name when a row has one.
macro_rules! prometheus_name {
    () => {
        None
    };
    ($name:literal) => {
        Some($name)
    };
}

/// Declares a set of counters once and derives the rest:
/// - `live`: the atomics, one per `counters` row and per `maxima` row
///   (`pub(crate)` fields named as the rows);
/// - `view`: the snapshot, one field per `derived` and `counters` row,
///   with `Default` (all zero), `merge` (sum), `since` (difference;
///   derived gauges keep the newer value), `METRICS` and `metric_values`
///   (the same rows, in order, for `/metrics`);
/// - `live.snapshot()`: the view, derived rows computed from the others.
///
/// Rows read `field: shape [as "prometheus_name"], "help";` (see `cell!`
/// for the shapes); `maxima` are largest-value atomics that the 1 Hz
/// statistics take and reset, never summed or rendered.
macro_rules! counter_set {
    (
        $(#[$live_meta:meta])*
        live $Live:ident;
        $(#[$view_meta:meta])*
        view $vis:vis $View:ident;
        derived {
            $( $dfield:ident: gauge $(as $dprom:literal)?, $dhelp:literal = |$dc:ident| $dexpr:expr; )*
        }
        counters {
            $( $field:ident: $shape:ident $(as $prom:literal)?, $help:literal; )*
        }
        maxima {
            $( $mfield:ident: max, $mhelp:literal; )*
        }
    ) => {
        $(#[$live_meta])*
        pub(crate) struct $Live {
            $( #[doc = $help] pub(crate) $field: cell!(live $shape), )*
            $( #[doc = $mhelp] pub(crate) $mfield: AtomicU64, )*
        }

        $(#[$view_meta])*
        $vis struct $View {
            $( #[doc = $dhelp] $vis $dfield: u64, )*
            $( #[doc = $help] $vis $field: cell!(value $shape), )*
        }

        impl Default for $View {
            fn default() -> Self {
                $View {
                    $( $dfield: 0, )*
                    $( $field: cell!(zero $shape), )*
                }
            }
        }

        impl $Live {
            /// The counters now (each loaded on its own, `Relaxed`).
            pub(crate) fn snapshot(&self) -> $View {
                #[allow(unused_mut)]
                let mut view = $View {
                    $( $dfield: 0, )*
                    $( $field: cell!(load $shape, self.$field), )*
                };
                $( view.$dfield = { let $dc = &view; $dexpr }; )*
                view
            }
        }

        // Not every set is summed or rendered (a connection's is neither).
        #[allow(dead_code)]
        impl $View {
            /// How many figures [`Self::METRICS`] declares.
            const LEN: usize = [$(stringify!($dfield),)* $(stringify!($field),)*].len();

            /// Every figure of the snapshot, in declaration order (the
            /// order of `/metrics`).
            pub const METRICS: [MetricInfo; Self::LEN] = [
                $( MetricInfo {
                    field: stringify!($dfield),
                    prometheus: prometheus_name!($($dprom)?),
                    help: $dhelp,
                    kind: MetricKind::Gauge,
                    label: None,
                }, )*
                $( MetricInfo {
                    field: stringify!($field),
                    prometheus: prometheus_name!($($prom)?),
                    help: $help,
                    kind: MetricKind::Counter,
                    label: cell!(label $shape),
                }, )*
            ];

            /// The value of each of [`Self::METRICS`], in the same order.
            pub fn metric_values(&self) -> [MetricValue<'_>; Self::LEN] {
                [
                    $( MetricValue::One(self.$dfield), )*
                    $( cell!(show $shape, self.$field), )*
                ]
            }

            /// Adds another snapshot into this one.
            pub fn merge(&mut self, other: &$View) {
                $( self.$dfield += other.$dfield; )*
                $( cell!(add $shape, self.$field, other.$field); )*
            }

            /// What changed from `before` to this snapshot: counters'
            /// differences, gauges' values now.
            pub fn since(&self, before: &$View) -> $View {
                $View {
                    $( $dfield: self.$dfield, )*
                    $( $field: cell!(sub $shape, self.$field, before.$field), )*
                }
            }
        }
    };
}

counter_set! {
    /// Live counters of one listener.
    #[derive(Debug, Default)]
    live ListenerCounters;
    /// A snapshot of a listener's counters (or their sum over listeners).
    #[derive(Debug, Clone, PartialEq, Eq)]
    #[non_exhaustive]
    view pub Counters;
    derived {
        connections_open: gauge as "framehub_connections_open",
            "Connections open now."
            = |c| c.connections_accepted.saturating_sub(c.connections_closed);
    }
    counters {
        connections_accepted: count as "framehub_connections_accepted_total",
            "Connections accepted and served.";
        connections_rejected: count as "framehub_connections_rejected_total",
            "Connections accepted and closed at once because max_connections were open.";
        connections_closed: count,
            "Served connections that ended.";
        connections_closed_by: by_close as "framehub_connections_closed_total",
            "Served connections that ended, by reason.";
        accept_errors: count as "framehub_accept_errors_total",
            "Errors from accept() (out of file descriptors, ...); the listener backs off and retries.";
        auth_failures: count as "framehub_auth_failures_total",
            "Connections closed for a wrong or missing token, or an oversized or missing first message.";
        bytes_received: count as "framehub_received_bytes_total",
            "Bytes read from the sockets.";
        frames_received: count as "framehub_frames_received_total",
            "Frames cut from the streams, before any protocol check.";
        frame_bytes_received: count,
            "Payload bytes of the frames received (framing removed).";
        frames_delivered: count as "framehub_frames_delivered_total",
            "Frames put into a receiver queue.";
        heartbeats: count as "framehub_heartbeats_received_total",
            "Heartbeat frames received (never delivered).";
        duplicates: count as "framehub_frames_duplicate_total",
            "Frames skipped because their timestamp repeated the previous one's (dedup).";
        frames_sent: count as "framehub_frames_sent_total",
            "Frames written to clients: egress messages, handler replies, server heartbeats.";
        bytes_sent: count as "framehub_sent_bytes_total",
            "Bytes written to clients, framing included.";
        groups_published: count as "framehub_groups_published_total",
            "Groups published by a listener with delivery = \"groups\".";
        requests: count as "framehub_requests_total",
            "Frames handed to the listener's request handler.";
        replies_sent: count,
            "Handler replies written to clients (also counted in frames_sent).";
        handler_errors: count,
            "Requests whose handler returned an error (answered by the error reply).";
        handler_timeouts: count,
            "Requests whose handler ran past the handler's timeout.";
        handler_panics: count,
            "Requests whose handler panicked (the connection went on).";
        slow_clients_disconnected: count as "framehub_slow_clients_disconnected_total",
            "Clients disconnected because their egress buffer was full (slow_client = \"disconnect\").";
        listener_rebuilds: count as "framehub_listener_rebuilds_total",
            "Times the listening socket failed and was bound again.";
        proxy_rejected: by_proxy as "framehub_proxy_rejected_total",
            "Connections closed because their PROXY protocol header was refused (untrusted sender, missing, malformed, oversized, truncated, too slow), by reason.";
        dropped: by_drop as "framehub_frames_dropped_total",
            "Frames and egress messages not delivered, by reason.";
        tls_handshakes: count as "framehub_tls_handshakes_total",
            "TLS handshakes that succeeded (TLS listeners).";
        tls_handshake_failures: by_tls as "framehub_tls_handshake_failures_total",
            "TLS handshakes that failed or timed out, by reason; each connection is also closed as tls_failed.";
        connections_shed: count as "framehub_connections_shed_total",
            "Connections accepted and closed at once because fewer than fd_reserve file descriptors were left.";
        nodes_evicted: count as "framehub_nodes_evicted_total",
            "Auto-provisioned nodes evicted, idle for nodes.evict_idle_after, to make room in a full node table (counted on the listener of the node that took the place).";
    }
    maxima {
        max_frame_received: max,
            "Largest frame received since the stats last looked, from connections that closed meanwhile (open ones keep their own).";
        max_frame_sent: max,
            "Largest egress message queued since the stats last looked.";
    }
}

impl ListenerCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// A served connection ended.
    pub(crate) fn closed(&self, reason: &CloseReason) {
        Self::add(&self.connections_closed, 1);
        Self::add(&self.connections_closed_by[reason.index()], 1);
    }

    pub(crate) fn dropped(&self, reason: DropReason, n: u64) {
        Self::add(&self.dropped[reason.index()], n);
    }

    /// A connection's PROXY header was refused (it is also counted as
    /// closed, with the reason `proxy_rejected`).
    pub(crate) fn proxy_rejected(&self, reason: ProxyFailure) {
        Self::add(&self.proxy_rejected[reason.index()], 1);
    }

    /// A TLS handshake failed (the connection is closed as well).
    pub(crate) fn tls_failed(&self, failure: TlsFailure) {
        Self::add(&self.tls_handshake_failures[failure.index()], 1);
    }
}

impl Counters {
    /// Frames dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()].1
    }

    /// Frames dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }

    /// Connections whose PROXY header was refused for `reason`.
    pub fn proxy_rejected(&self, reason: ProxyFailure) -> u64 {
        self.proxy_rejected[reason.index()].1
    }

    /// TLS handshakes that failed for `failure`.
    pub fn tls_failures(&self, failure: TlsFailure) -> u64 {
        self.tls_handshake_failures[failure.index()].1
    }
}

counter_set! {
    /// Live counters of one connection, for the per-connection stats. The
    /// connection adds to them once per read and the egress writer once
    /// per write.
    #[derive(Debug, Default)]
    live LinkCounters;
    /// A snapshot of one connection's counters.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    view pub(crate) LinkTotals;
    derived {}
    counters {
        frames_in: count, "Frames cut from its stream.";
        bytes_in: count, "Bytes read from it.";
        frame_bytes_in: count, "Payload bytes of the frames received (framing removed).";
        frames_out: count, "Frames written to it (egress, replies, heartbeats).";
        replies_out: count, "Of frames_out, the handler's replies.";
        bytes_out: count, "Bytes written to it.";
        dropped: count, "Its frames and egress messages dropped, whatever the reason.";
    }
    maxima {
        max_frame_in: max, "Largest frame received since the stats last took it.";
        max_frame_out: max, "Largest message queued for it since the stats last took it.";
    }
}

impl LinkCounters {
    pub(crate) fn raise_max(counter: &AtomicU64, n: u64) {
        if n > counter.load(Ordering::Relaxed) {
            counter.fetch_max(n, Ordering::Relaxed);
        }
    }
}

/// Lets one warning through per period and counts the ones it held back,
/// so a misbehaving peer cannot flood the log.
#[derive(Debug)]
pub(crate) struct WarnLimiter {
    period_ms: u64,
    /// Milliseconds since [`epoch`] before which warnings are suppressed.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl WarnLimiter {
    pub(crate) fn new(period: Duration) -> Self {
        WarnLimiter {
            period_ms: period.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a warning may be logged now, `n` being how many were
    /// suppressed since the last one; `None` when it must be suppressed.
    pub(crate) fn check(&self) -> Option<u64> {
        let now = epoch().elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + self.period_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_lets_one_through_per_period_and_counts_the_rest() {
        let l = WarnLimiter::new(Duration::from_secs(3600));
        assert_eq!(l.check(), Some(0));
        assert_eq!(l.check(), None);
        assert_eq!(l.check(), None);
        l.next_ms.store(0, Ordering::Relaxed);
        assert_eq!(l.check(), Some(2));
    }

    #[test]
    fn drops_are_counted_by_reason() {
        let c = ListenerCounters::default();
        c.dropped(DropReason::Oversize, 2);
        c.dropped(DropReason::QueueFull, 3);
        let s = c.snapshot();
        assert_eq!(s.dropped(DropReason::Oversize), 2);
        assert_eq!(s.dropped(DropReason::QueueFull), 3);
        assert_eq!(s.dropped_total(), 5);
        let mut sum = Counters::default();
        sum.merge(&s);
        sum.merge(&s);
        assert_eq!(sum.dropped_total(), 10);
    }

    #[test]
    fn every_figure_is_declared_once_with_a_unique_prometheus_family() {
        let mut fields = std::collections::HashSet::new();
        let mut families = std::collections::HashSet::new();
        for m in Counters::METRICS {
            assert!(fields.insert(m.field), "{} declared twice", m.field);
            assert!(!m.help.is_empty(), "{} has no help", m.field);
            if let Some(name) = m.prometheus {
                assert!(families.insert(name), "{name} declared twice");
                assert!(name.starts_with("framehub_"), "{name}");
                // Prometheus naming: counters end in _total, gauges do not.
                assert_eq!(
                    name.ends_with("_total"),
                    m.kind == MetricKind::Counter,
                    "{name}"
                );
            }
        }
        // One value per declared figure, per-reason ones with a label.
        let c = ListenerCounters::default().snapshot();
        for (m, v) in Counters::METRICS.iter().zip(c.metric_values()) {
            let mut samples = 0;
            v.for_each(|label, _| {
                assert_eq!(label.is_some(), m.label.is_some(), "{}", m.field);
                samples += 1;
            });
            let expected = match m.field {
                "connections_closed_by" => CloseReason::LABELS.len(),
                "dropped" => DropReason::ALL.len(),
                "proxy_rejected" => ProxyFailure::ALL.len(),
                "tls_handshake_failures" => TlsFailure::ALL.len(),
                _ => 1,
            };
            assert_eq!(samples, expected, "{}", m.field);
        }
    }

    #[test]
    fn since_subtracts_counters_and_keeps_gauges() {
        let live = ListenerCounters::default();
        ListenerCounters::add(&live.connections_accepted, 3);
        ListenerCounters::add(&live.frames_received, 10);
        live.dropped(DropReason::Oversize, 1);
        let before = live.snapshot();
        ListenerCounters::add(&live.connections_accepted, 2);
        live.closed(&CloseReason::PeerClosed);
        ListenerCounters::add(&live.frames_received, 5);
        live.dropped(DropReason::Oversize, 4);
        let now = live.snapshot();
        assert_eq!(now.connections_open, 4);
        let d = now.since(&before);
        assert_eq!(d.connections_accepted, 2);
        assert_eq!(d.connections_closed, 1);
        assert_eq!(d.connections_closed_by[0], ("peer_closed", 1));
        assert_eq!(d.frames_received, 5);
        assert_eq!(d.dropped(DropReason::Oversize), 4);
        assert_eq!(d.dropped_total(), 4);
        // A gauge is a level, not a difference.
        assert_eq!(d.connections_open, 4);
        assert_eq!(
            now.since(&now),
            Counters {
                connections_open: 4,
                ..Counters::default()
            }
        );

        let mut sum = now.clone();
        sum.merge(&before);
        assert_eq!(sum.connections_open, 7);
        assert_eq!(sum.frames_received, 25);
    }

    #[test]
    fn a_connection_snapshot_subtracts_like_a_listener_one() {
        let live = LinkCounters::default();
        ListenerCounters::add(&live.frames_in, 7);
        ListenerCounters::add(&live.bytes_in, 70);
        let before = live.snapshot();
        ListenerCounters::add(&live.frames_in, 3);
        LinkCounters::raise_max(&live.max_frame_in, 12);
        let d = live.snapshot().since(&before);
        assert_eq!((d.frames_in, d.bytes_in), (3, 0));
        assert_eq!(live.max_frame_in.load(Ordering::Relaxed), 12);
    }
}

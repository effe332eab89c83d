//! `framehub serve`: config and flags -> a running hub, every delivered
//! frame (from receivers or group streams) to every sink, the admin HTTP
//! server, a status line or the JSON statistics, and a clean exit on SIGINT
//! or SIGTERM with everything received written and synced.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use framehub::{Frame, FramingConfig, Groups, Hub, Protocol, Receiver};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::config::{self, FileConfig, SinkConfig, TapSinkConfig};
use crate::sink::file::FileSink;
use crate::sink::stdout::StdoutSink;
use crate::sink::tap::Tap;
use crate::sink::{self, Message, Sink, SinkStatus};
use crate::{EXIT_BAD_CONFIG, ServeArgs};

/// Frames taken from a receiver per batch handed to the sink thread.
const DRAIN_BATCH: usize = 1024;
/// Batches waiting for the sink thread; past this, receivers fill and their
/// overflow policy applies (counted).
const SINK_QUEUE: usize = 64;
/// How long tap subscribers get at exit to receive what they have buffered.
const TAP_GRACE: Duration = Duration::from_secs(2);
/// How long requests in flight get at exit.
const ADMIN_GRACE: Duration = Duration::from_secs(2);

/// Applies the command-line flags on top of the file config.
fn apply_flags(cfg: &mut FileConfig, args: &ServeArgs) -> Result<(), String> {
    if cfg.hub.listener.is_empty() {
        cfg.hub.listener = cfg.hub.listeners();
    }
    let first = &mut cfg.hub.listener[0];
    if let Some(addr) = args.listen {
        first.bind = Some(addr);
    }
    if let Some(token) = &args.token {
        first.auth.token = Some(token.clone());
    }
    if let Some(framing) = &args.framing {
        first.framing = FramingConfig::deserialize(toml::Value::String(framing.clone()))
            .map_err(|e| format!("--framing: {e}"))?;
        if first.framing != FramingConfig::Lines {
            first.protocol = Protocol::Raw;
        }
    }
    if let Some(out) = &args.out {
        cfg.serve.out = Some(out.clone());
    }
    if let Some(bind) = args.tap {
        cfg.sink.push(SinkConfig::Tap(TapSinkConfig {
            bind,
            ..TapSinkConfig::default()
        }));
    }
    if let Some(bind) = args.admin {
        cfg.admin.enabled = true;
        cfg.admin.bind = bind;
    }
    if args.no_admin {
        cfg.admin.enabled = false;
    }
    cfg.validate().map_err(|e| e.to_string())
}

/// The sinks, built: the sink-thread halves, their statuses, and the taps'
/// servers.
struct Sinks {
    sinks: Vec<Box<dyn Sink>>,
    statuses: Vec<Arc<SinkStatus>>,
    taps: Vec<Tap>,
}

async fn build_sinks(configs: Vec<SinkConfig>) -> Result<Sinks, String> {
    let mut built = Sinks {
        sinks: Vec::new(),
        statuses: Vec::new(),
        taps: Vec::new(),
    };
    for config in configs {
        let status = SinkStatus::new(config.name(), config.kind(), config.is_durable());
        built.statuses.push(status.clone());
        let sink: Box<dyn Sink> = match config {
            SinkConfig::File(c) => Box::new(FileSink::new(c, status)),
            SinkConfig::Stdout(_) => Box::new(StdoutSink::new(status)),
            SinkConfig::Tap(c) => {
                let bind = c.bind;
                let tap = Tap::bind(c, status.clone())
                    .await
                    .map_err(|e| format!("sink {:?}: cannot bind {bind}: {e}", status.name))?;
                let publisher = tap.publisher();
                built.taps.push(tap);
                Box::new(publisher)
            }
        };
        built.sinks.push(sink);
    }
    Ok(built)
}

pub async fn run(args: ServeArgs) -> ExitCode {
    let signal = match crate::shutdown_signal() {
        Ok(signal) => signal,
        Err(e) => {
            eprintln!("framehub: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut cfg = match &args.config {
        Some(path) => match config::load(path) {
            Ok(cfg) => cfg,
            Err(e) => {
                eprintln!("framehub: {}: {e}", path.display());
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
        },
        None => FileConfig::default(),
    };
    if let Err(e) = apply_flags(&mut cfg, &args) {
        eprintln!("framehub: {e}");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    let started = Instant::now();
    // The daemon's own ports are bound before the hub's, so a port that is
    // taken fails the start before any device has connected.
    let admin_listener = if cfg.admin.enabled {
        match tokio::net::TcpListener::bind(cfg.admin.bind).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("framehub: admin: cannot bind {}: {e}", cfg.admin.bind);
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let Sinks {
        sinks,
        statuses,
        taps,
    } = match build_sinks(cfg.sinks()).await {
        Ok(built) => built,
        Err(e) => {
            eprintln!("framehub: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !cfg.hub.nodes.auto_provision {
        tracing::warn!(
            "nodes.auto_provision is off: node frames have no receiver in `serve` and will be dropped (counted)"
        );
    }
    let hub = match Hub::start(cfg.hub.clone()).await {
        Ok(hub) => hub,
        Err(e) => {
            eprintln!("framehub: {e}");
            return ExitCode::FAILURE;
        }
    };

    let (tx, rx) = mpsc::channel::<Message>(SINK_QUEUE);
    // A named thread of its own, so `top -H` shows what the sinks cost.
    let (sink_done, sink_thread) = tokio::sync::oneshot::channel();
    if let Err(e) = std::thread::Builder::new()
        .name("framehub-sink".to_owned())
        .spawn(move || {
            let _ = sink_done.send(sink::run(rx, sinks));
        })
    {
        eprintln!("framehub: cannot start the sink thread: {e}");
        return ExitCode::FAILURE;
    }
    tokio::spawn(sink::ticker(tx.downgrade()));
    let drains = TaskTracker::new();
    for l in hub.listeners() {
        if let Some(r) = hub.listener_receiver(&l.name) {
            drains.spawn(drain(r, tx.clone()));
        }
        if let Some(g) = hub.groups(&l.name) {
            drains.spawn(drain_groups(g, tx.clone()));
        }
    }
    if let Some(mut new_nodes) = hub.new_nodes() {
        let tx = tx.clone();
        let tracker = drains.clone();
        drains.spawn(async move {
            while let Some(r) = new_nodes.recv().await {
                tracker.spawn(drain(r, tx.clone()));
            }
        });
    }
    let admin_state = Arc::new(AdminState {
        hub: hub.clone(),
        sinks: statuses.clone(),
        started,
        shutting_down: AtomicBool::new(false),
        sink_queue: tx.downgrade(),
        allow_send: cfg.admin.send,
    });
    drop(tx);
    let admin_stop = CancellationToken::new();
    let admin_server = admin_listener.map(|listener| {
        if let Ok(local_addr) = listener.local_addr() {
            tracing::info!(%local_addr, "admin listening");
        }
        tokio::spawn(admin::serve(
            listener,
            admin_state.clone(),
            admin_stop.clone(),
        ))
    });
    let status = if args.stats {
        Some(tokio::spawn(print_stats(hub.clone())))
    } else {
        (!args.quiet).then(|| tokio::spawn(status_line(hub.clone(), cfg.serve.status_interval)))
    };

    signal.await;
    tracing::info!("shutting down");
    admin_state.shutting_down.store(true, Ordering::Relaxed);
    hub.shutdown().await;
    drains.close();
    drains.wait().await;
    if let Some(status) = status {
        status.abort();
    }
    // Every sender is gone: the thread writes what is left, syncs, returns.
    let thread = sink_thread.await;
    for tap in taps {
        tap.shutdown(TAP_GRACE).await;
    }
    let counters = hub.counters();
    for s in &statuses {
        tracing::info!(
            sink = %s.name,
            kind = s.kind,
            written = s.records_written.load(Ordering::Relaxed),
            failed = s.records_failed.load(Ordering::Relaxed),
            lost_by_subscribers = s.records_lost.load(Ordering::Relaxed),
            "sink stopped"
        );
    }
    let durable = || statuses.iter().filter(|s| s.durable);
    let written = durable()
        .map(|s| s.records_written.load(Ordering::Relaxed))
        .min()
        .unwrap_or(0);
    let failed: u64 = durable()
        .map(|s| s.records_failed.load(Ordering::Relaxed))
        .sum();
    let code = match thread {
        Err(_) => {
            // The thread ended without a result: it panicked.
            tracing::error!("sink thread failed");
            ExitCode::FAILURE
        }
        Ok(_) if failed > 0 => {
            tracing::error!(
                written,
                failed,
                received = counters.frames_received,
                delivered = counters.frames_delivered,
                dropped = counters.dropped_total(),
                "stopped; some delivered frames could not be written"
            );
            ExitCode::FAILURE
        }
        Ok(busy) => {
            tracing::info!(
                written,
                failed,
                write_secs = busy.as_secs_f64(),
                received = counters.frames_received,
                delivered = counters.frames_delivered,
                dropped = counters.dropped_total(),
                heartbeats = counters.heartbeats,
                duplicates = counters.duplicates,
                "stopped; every delivered frame written"
            );
            ExitCode::SUCCESS
        }
    };
    admin_stop.cancel();
    if let Some(server) = admin_server
        && tokio::time::timeout(ADMIN_GRACE, server).await.is_err()
    {
        tracing::warn!("admin requests still running at exit");
    }
    code
}

/// Moves a receiver's frames to the sink thread in batches until the hub
/// shut down and the receiver is drained.
async fn drain(receiver: Receiver, tx: mpsc::Sender<Message>) {
    loop {
        // Allocated by `recv_many` once frames are there, at their number:
        // an idle node holds no batch buffer.
        let mut batch: Vec<Frame> = Vec::new();
        if receiver.recv_many(&mut batch, DRAIN_BATCH).await == 0 {
            return;
        }
        if tx.send(Message::Frames(batch)).await.is_err() {
            tracing::error!(node = receiver.name(), "sink thread is gone; stop draining");
            return;
        }
    }
}

/// Moves each group's frames to the sink thread as one batch until the hub
/// shut down and the stream is drained.
async fn drain_groups(groups: Groups, tx: mpsc::Sender<Message>) {
    while let Some(group) = groups.recv().await {
        if tx.send(Message::Frames(group.frames)).await.is_err() {
            tracing::error!(
                listener = groups.listener(),
                "sink thread is gone; stop draining"
            );
            return;
        }
    }
}

/// Prints every statistics snapshot on stderr as one JSON line.
async fn print_stats(hub: Hub) {
    let mut stats = hub.stats();
    while stats.changed().await.is_ok() {
        let line = serde_json::to_string(&*stats.borrow_and_update());
        match line {
            Ok(line) => eprintln!("{line}"),
            Err(e) => tracing::warn!(error = %e, "cannot print statistics"),
        }
    }
}

/// Prints one line on stderr per interval: connections, nodes, rates, drops.
async fn status_line(hub: Hub, every: Duration) {
    let mut last = hub.counters();
    let mut at = Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = hub.counters();
        let secs = at.elapsed().as_secs_f64().max(1e-3);
        at = Instant::now();
        let nodes = hub.nodes();
        let healthy = nodes.iter().filter(|n| n.healthy).count();
        eprintln!(
            "framehub status: connections={} nodes={} healthy={} frames_in/s={:.0} delivered/s={:.0} dropped={} auth_failures={}",
            now.connections_open,
            nodes.len(),
            healthy,
            (now.frames_received - last.frames_received) as f64 / secs,
            (now.frames_delivered - last.frames_delivered) as f64 / secs,
            now.dropped_total(),
            now.auth_failures,
        );
        last = now;
    }
}

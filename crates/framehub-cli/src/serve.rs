//! `framehub serve`: config and flags -> a running hub, every delivered
//! frame (from receivers or group streams) to the NDJSON sink, a status
//! line or the JSON statistics, and a clean exit on SIGINT or SIGTERM with
//! everything received written and flushed.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use framehub::{Frame, FramingConfig, Groups, Hub, Protocol, Receiver};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::config::{self, FileConfig};
use crate::sink::{self, Output};
use crate::{EXIT_BAD_CONFIG, ServeArgs};

/// Frames taken from a receiver per batch handed to the writer.
const DRAIN_BATCH: usize = 1024;
/// Batches waiting for the writer; past this, receivers fill and their
/// overflow policy applies (counted).
const WRITER_QUEUE: usize = 64;

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
    cfg.hub.validate().map_err(|e| e.to_string())
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
    let output = match Output::open(cfg.serve.out.as_deref()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("framehub: cannot open output: {e}");
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

    let (tx, rx) = mpsc::channel::<Vec<Frame>>(WRITER_QUEUE);
    let writer = tokio::task::spawn_blocking(move || sink::write_all(output, rx));
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
    drop(tx);
    let status = if args.stats {
        Some(tokio::spawn(print_stats(hub.clone())))
    } else {
        (!args.quiet).then(|| tokio::spawn(status_line(hub.clone(), cfg.serve.status_interval)))
    };

    let writer_failed = tokio::select! {
        _ = signal => false,
        _ = writer_done(&writer) => true,
    };
    tracing::info!("shutting down");
    hub.shutdown().await;
    drains.close();
    drains.wait().await;
    if let Some(status) = status {
        status.abort();
    }
    let counters = hub.counters();
    match writer.await {
        Ok(Ok(written)) if !writer_failed => {
            tracing::info!(
                written = written.records,
                write_secs = written.busy.as_secs_f64(),
                received = counters.frames_received,
                delivered = counters.frames_delivered,
                dropped = counters.dropped_total(),
                "stopped; every delivered frame written"
            );
            ExitCode::SUCCESS
        }
        Ok(Ok(_)) => ExitCode::FAILURE,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "output failed; records were not all written");
            ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!(error = %e, "writer thread failed");
            ExitCode::FAILURE
        }
    }
}

/// Completes when the writer thread has ended, which before shutdown means
/// it failed.
async fn writer_done<T>(writer: &tokio::task::JoinHandle<T>) {
    while !writer.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Moves a receiver's frames to the writer in batches until the hub shut
/// down and the receiver is drained.
async fn drain(receiver: Receiver, tx: mpsc::Sender<Vec<Frame>>) {
    loop {
        let mut batch = Vec::with_capacity(DRAIN_BATCH);
        if receiver.recv_many(&mut batch, DRAIN_BATCH).await == 0 {
            return;
        }
        if tx.send(batch).await.is_err() {
            tracing::error!(node = receiver.name(), "writer is gone; stop draining");
            return;
        }
    }
}

/// Moves each group's frames to the writer as one batch until the hub shut
/// down and the stream is drained.
async fn drain_groups(groups: Groups, tx: mpsc::Sender<Vec<Frame>>) {
    while let Some(group) = groups.recv().await {
        if tx.send(group.frames).await.is_err() {
            tracing::error!(
                listener = groups.listener(),
                "writer is gone; stop draining"
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

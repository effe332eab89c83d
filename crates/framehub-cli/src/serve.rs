//! `framehub serve`: config and flags -> a running hub, every delivered
//! frame (the hub's fan-in of receivers and group streams) to every sink,
//! the admin HTTP server, a status line or the JSON statistics, a reload on
//! SIGHUP (`reload.rs`), and a clean exit on SIGINT or SIGTERM with
//! everything received written and synced.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use framehub::{Counters, FramingConfig, Hub, HubError, Protocol};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::door::DoorConfig;
use crate::admin::{self, AdminState};
use crate::config::{self, FileConfig, SinkConfig, TapSinkConfig};
use crate::reload::Reloader;
use crate::sink::durable::Durability;
use crate::sink::file::FileSink;
use crate::sink::nats::NatsSinkWriter;
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

/// Applies the command-line flags on top of the file config. The first
/// listener's shared token: `--token`, else `env_token`
/// (`FRAMEHUB_TOKEN`), else the config's `token` or `token_file`.
fn apply_flags(
    cfg: &mut FileConfig,
    args: &ServeArgs,
    env_token: Option<String>,
) -> Result<(), String> {
    if cfg.hub.listener.is_empty() {
        cfg.hub.listener = cfg.hub.listeners();
    }
    let first = &mut cfg.hub.listener[0];
    if let Some(addr) = args.listen {
        first.bind = Some(addr);
    }
    if let Some(token) = args.token.as_ref().map(|t| t.0.clone()).or(env_token) {
        first.auth.token = Some(token);
        first.auth.token_file = None;
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
    if cfg.apply_serve_defaults() {
        tracing::debug!(
            "a file sink is configured: queues whose overflow is not set block instead of dropping"
        );
    }
    Ok(())
}

/// The sinks, built: the sink-thread halves, their statuses, and the taps'
/// servers.
struct Sinks {
    sinks: Vec<Box<dyn Sink>>,
    statuses: Vec<Arc<SinkStatus>>,
    taps: Vec<Tap>,
    /// Acknowledged delivery: what the file sinks made durable.
    durability: Arc<Durability>,
    /// Each node's durable sequence number found again in every file sink
    /// (the lowest of theirs; a node one of them lacks is not durable).
    recovered: Vec<(String, u64)>,
}

/// `acks`: some listener acknowledges frames, so file sinks find their
/// durable marks again and report their syncs.
async fn build_sinks(
    configs: Vec<SinkConfig>,
    acks: bool,
    cfg: &FileConfig,
    nats: Option<&crate::cluster::Nats>,
) -> Result<Sinks, String> {
    let mut built = Sinks {
        sinks: Vec::new(),
        statuses: Vec::new(),
        taps: Vec::new(),
        durability: Durability::new(),
        recovered: Vec::new(),
    };
    let mut recovered: Option<HashMap<String, u64>> = None;
    let mut skip_recovery = false;
    for config in configs {
        let status = SinkStatus::new(config.name(), config.kind(), config.is_durable());
        built.statuses.push(status.clone());
        let sink: Box<dyn Sink> = match config {
            SinkConfig::File(c) => {
                let durability = acks.then(|| built.durability.clone());
                let file = FileSink::with_durability(c, status, durability);
                if acks {
                    let found: HashMap<String, u64> = file.recovered().into_iter().collect();
                    recovered = Some(match recovered {
                        None => found,
                        Some(mut so_far) => {
                            so_far.retain(|node, seq| match found.get(node) {
                                Some(other) => {
                                    *seq = (*seq).min(*other);
                                    true
                                }
                                None => false,
                            });
                            so_far
                        }
                    });
                }
                Box::new(file)
            }
            SinkConfig::Stdout(c) => Box::new(StdoutSink::new(status, c.format)),
            SinkConfig::Tap(c) => {
                let bind = c.bind;
                let tap = Tap::bind(c, status.clone())
                    .await
                    .map_err(|e| format!("sink {:?}: cannot bind {bind}: {e}", status.name))?;
                let publisher = tap.publisher();
                built.taps.push(tap);
                Box::new(publisher)
            }
            SinkConfig::Nats(c) => {
                let nats = nats.ok_or("a nats sink without a NATS connection")?;
                let listeners = cfg.hub.listeners();
                let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
                let durability = acks.then(|| built.durability.clone());
                // The file sinks' marks say nothing of what the stream
                // holds: resends after a restart are taken again (the
                // stream stores them once by Nats-Msg-Id; a file beside it
                // may hold them twice).
                skip_recovery = true;
                Box::new(
                    NatsSinkWriter::start(
                        nats.client.clone(),
                        nats.report.clone(),
                        c,
                        nats.instance.clone(),
                        &names,
                        status,
                        durability,
                    )
                    .await?,
                )
            }
        };
        built.sinks.push(sink);
    }
    if !skip_recovery {
        built.recovered = recovered.unwrap_or_default().into_iter().collect();
    }
    Ok(built)
}

/// Why `serve` did not start: printed as `framehub: {message}`.
pub(crate) struct StartError {
    pub(crate) message: String,
    code: ExitCode,
}

impl StartError {
    /// The configuration is wrong (exit code 64).
    fn config(message: String) -> StartError {
        StartError {
            message,
            code: ExitCode::from(EXIT_BAD_CONFIG),
        }
    }

    /// Anything else.
    fn failure(message: String) -> StartError {
        StartError {
            message,
            code: ExitCode::FAILURE,
        }
    }
}

pub async fn run(args: ServeArgs) -> ExitCode {
    match serve(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("framehub: {}", e.message);
            e.code
        }
    }
}

async fn serve(args: ServeArgs) -> Result<ExitCode, StartError> {
    let signal = crate::shutdown_signal()
        .map_err(|e| StartError::failure(format!("cannot install signal handlers: {e}")))?;
    let hup = crate::reload::hangup_signal()
        .map_err(|e| StartError::failure(format!("cannot install the SIGHUP handler: {e}")))?;
    let cfg = load_config(&args)?;
    raise_fd_limit(&cfg);
    let started = Instant::now();
    // The daemon's own ports are bound before the hub's, so a port that is
    // taken fails the start before any device has connected.
    let admin_listener = bind_admin(&cfg).await?;
    let nats = crate::cluster::connect(&cfg).await.map_err(|e| match e {
        framehub::nats::NatsError::Config(_) => StartError::config(e.to_string()),
        _ => StartError::failure(e.to_string()),
    })?;
    let acks = cfg.hub.listeners().iter().any(|l| l.ack.is_on());
    let mut sinks = build_sinks(cfg.sinks(), acks, &cfg, nats.as_ref())
        .await
        .map_err(StartError::failure)?;
    let handlers = crate::cluster::handlers(&cfg, nats.as_ref());
    let hub = start_hub(&cfg, handlers, std::mem::take(&mut sinks.recovered)).await?;
    sinks.durability.set_acks(hub.acks());
    let sink_thread = SinkThread::start(sinks, &hub)?;
    let cluster = crate::cluster::Cluster::start(nats.as_ref(), &hub).await;
    let admin = Admin::start(admin_listener, &cfg, &hub, &sink_thread, started);
    admin.set_cluster_view(cluster.view.clone());
    let status = start_status_output(&args, &cfg, &hub);
    let reloader = Reloader {
        args,
        hub: hub.clone(),
        sinks: sink_thread.queue.clone(),
        reloads: admin.state.reloads.clone(),
    }
    .start(hup);
    let notifier = Arc::new(crate::notify::Notifier::from_env());
    notifier.ready();
    let watchdog = notifier.spawn_watchdog();

    signal.await;
    notifier.stopping();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    tracing::info!("shutting down");
    force_exit_on_second_signal();
    reloader.abort();
    admin.begin_shutdown();
    hub.shutdown().await;
    if let Some(status) = status {
        status.abort();
    }
    drop(cluster);
    let code = sink_thread.finish(&hub).await;
    admin.stop().await;
    Ok(code)
}

/// A second SIGINT or SIGTERM during the shutdown exits at once (code
/// 130), for a shutdown that cannot finish (a sink blocked on a full pipe,
/// a disk that does not answer): what is not written is lost, and said so.
fn force_exit_on_second_signal() {
    match crate::shutdown_signal() {
        Ok(second) => {
            tokio::spawn(async move {
                second.await;
                tracing::error!("second signal: exiting now; frames not yet written are lost");
                std::process::exit(130);
            });
        }
        Err(e) => tracing::warn!("cannot watch for a second signal: {e}"),
    }
}

/// The file config (if any) with the command-line flags and the
/// environment on top; also what a reload reads.
pub(crate) fn load_config(args: &ServeArgs) -> Result<FileConfig, StartError> {
    let mut cfg = match &args.config {
        // Validated once the flags are applied: `--out` can make a file
        // valid (acknowledged delivery needs the blocking queues a file
        // sink brings).
        Some(path) => config::load_unchecked(path)
            .map_err(|e| StartError::config(format!("{}: {e}", path.display())))?,
        None => FileConfig::default(),
    };
    let env_token = std::env::var(crate::TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty());
    apply_flags(&mut cfg, args, env_token).map_err(StartError::config)?;
    cfg.validate().map_err(|e| {
        StartError::config(match &args.config {
            Some(path) => format!("{}: {e}", path.display()),
            None => e.to_string(),
        })
    })?;
    Ok(cfg)
}

/// The admin server's socket and how its door is kept; `None` when it is
/// off. Its token (from `FRAMEHUB_ADMIN_TOKEN`, `token_file` or `token`)
/// and TLS files are read here, before anything is bound: a non-loopback
/// admin without a token does not start.
async fn bind_admin(cfg: &FileConfig) -> Result<Option<AdminListener>, StartError> {
    if !cfg.admin.enabled {
        return Ok(None);
    }
    let token = cfg
        .admin
        .resolve_token(std::env::var_os(config::ADMIN_TOKEN_ENV))
        .map_err(|e| StartError::config(e.to_string()))?;
    let door = DoorConfig::new(&cfg.admin, token).map_err(StartError::config)?;
    let listener = tokio::net::TcpListener::bind(cfg.admin.bind)
        .await
        .map_err(|e| StartError::failure(format!("admin: cannot bind {}: {e}", cfg.admin.bind)))?;
    Ok(Some(AdminListener { listener, door }))
}

/// The admin server, bound and not yet serving.
struct AdminListener {
    listener: tokio::net::TcpListener,
    door: DoorConfig,
}

/// Descriptors the daemon holds besides its sockets to devices, admin
/// clients and tap subscribers: standard streams, the runtime's epoll and
/// wakers, signal pipes, config and certificate files, logs.
const OTHER_DESCRIPTORS: u64 = 32;

/// Raises the soft descriptor limit to the hard one (systemd starts
/// services at 1024), and warns when the connections the config allows do
/// not fit: past `limit - fd_reserve` the listeners close new connections
/// at once, so the admin port and the sinks keep theirs.
fn raise_fd_limit(cfg: &FileConfig) {
    let limits = match framehub::fdlimit::raise_nofile_limit() {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the file descriptor limit (RLIMIT_NOFILE)");
            return;
        }
    };
    if limits.soft > limits.was {
        tracing::info!(
            from = limits.was,
            to = limits.soft,
            "raised the file descriptor limit"
        );
    }
    let listeners = cfg.hub.listeners();
    let ingest: u64 = listeners.iter().map(|l| l.max_connections as u64).sum();
    let sinks = cfg.sinks();
    let taps: u64 = sinks
        .iter()
        .map(|s| match s {
            SinkConfig::Tap(t) => t.max_subscribers as u64 + 1,
            _ => 1,
        })
        .sum();
    let admin = if cfg.admin.enabled {
        cfg.admin.max_connections as u64 + 1
    } else {
        0
    };
    let other = listeners.len() as u64 + taps + admin + OTHER_DESCRIPTORS;
    if ingest.saturating_add(other) > limits.soft {
        let reserve = cfg.hub.fd_reserve as u64;
        tracing::warn!(
            fd_limit = limits.soft,
            fd_hard_limit = limits.hard.unwrap_or(u64::MAX),
            max_connections = ingest,
            other_descriptors = other,
            fd_reserve = reserve,
            devices_at_most = limits.soft.saturating_sub(reserve),
            "max_connections plus the daemon's other descriptors exceed the file descriptor limit; \
             new connections past the limit less fd_reserve will be closed at once (raise LimitNOFILE)"
        );
        // The reserve is all the admin port, the taps and the sinks get
        // once devices took the rest: say so when they may need more.
        if other > reserve {
            tracing::warn!(
                fd_reserve = reserve,
                other_descriptors = other,
                admin_max_connections = admin.saturating_sub(1),
                "fd_reserve is smaller than the descriptors the admin port, taps and sinks may hold; \
                 under a flood of devices some of theirs will fail (raise fd_reserve, or lower [admin] max_connections)"
            );
        }
    }
}

async fn start_hub(
    cfg: &FileConfig,
    handlers: Vec<(String, framehub::Handler)>,
    recovered: Vec<(String, u64)>,
) -> Result<Hub, StartError> {
    if !cfg.hub.nodes.auto_provision {
        tracing::warn!(
            "nodes.auto_provision is off: node frames have no receiver in `serve` and will be dropped (counted)"
        );
    }
    Hub::start_recovered(cfg.hub.clone(), handlers, recovered)
        .await
        .map_err(|e| match e {
            // A certificate file that is missing or bad is a config error.
            HubError::Config(_) => StartError::config(e.to_string()),
            _ => StartError::failure(e.to_string()),
        })
}

/// The sink thread, fed every delivered frame by the hub's fan-in, and the
/// sinks' statuses and tap servers.
struct SinkThread {
    /// The thread's result: how long the sinks were busy writing.
    done: oneshot::Receiver<Duration>,
    /// The thread's queue, weak, to report its depth.
    queue: mpsc::WeakSender<Message>,
    statuses: Vec<Arc<SinkStatus>>,
    taps: Vec<Tap>,
}

impl SinkThread {
    fn start(sinks: Sinks, hub: &Hub) -> Result<SinkThread, StartError> {
        let (tx, rx) = mpsc::channel::<Message>(SINK_QUEUE);
        let writers = sinks.sinks;
        let encoding = sink::Encoding::of(&writers);
        let durability = sinks.durability;
        let (sink_done, done) = oneshot::channel();
        // A named thread of its own, so `top -H` shows what the sinks cost.
        std::thread::Builder::new()
            .name("framehub-sink".to_owned())
            .spawn(move || {
                let _ = sink_done.send(sink::run(rx, writers, durability));
            })
            .map_err(|e| StartError::failure(format!("cannot start the sink thread: {e}")))?;
        tokio::spawn(sink::ticker(tx.downgrade()));
        let queue = tx.downgrade();
        // From here only the fan-in holds senders: once the hub has shut
        // down and every source is drained, the thread writes what is left,
        // syncs, and returns. Each fan-in task encodes its batch before
        // queueing it, on the runtime's threads: the sink thread only
        // writes.
        hub.all_frames_map(DRAIN_BATCH, tx, move |frames| {
            Message::Encoded(sink::encode(frames, encoding))
        })
        .map_err(|e| StartError::failure(e.to_string()))?;
        Ok(SinkThread {
            done,
            queue,
            statuses: sinks.statuses,
            taps: sinks.taps,
        })
    }

    /// After the hub's shutdown: waits until everything delivered is
    /// written, gives tap subscribers their grace, logs what each sink did
    /// and the exit line; returns the exit code.
    async fn finish(self, hub: &Hub) -> ExitCode {
        let thread = self.done.await;
        for tap in self.taps {
            tap.shutdown(TAP_GRACE).await;
        }
        report_exit(&self.statuses, thread.ok(), &hub.counters())
    }
}

/// Logs every sink's totals and the exit line (`stopped; ...` with
/// `written` and `write_secs`, which `bench/compare.sh` reads). `busy` is
/// `None` when the sink thread died.
fn report_exit(
    statuses: &[Arc<SinkStatus>],
    busy: Option<Duration>,
    counters: &Counters,
) -> ExitCode {
    for s in statuses {
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
    match busy {
        None => {
            // The thread ended without a result: it panicked.
            tracing::error!("sink thread failed");
            ExitCode::FAILURE
        }
        Some(_) if failed > 0 => {
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
        Some(busy) if written < counters.frames_delivered => {
            // Delivered frames a drop policy evicted from a full queue
            // before the sinks took them (counted as queue_full).
            tracing::warn!(
                written,
                failed,
                write_secs = busy.as_secs_f64(),
                received = counters.frames_received,
                delivered = counters.frames_delivered,
                not_written = counters.frames_delivered - written,
                dropped = counters.dropped_total(),
                heartbeats = counters.heartbeats,
                duplicates = counters.duplicates,
                "stopped; some delivered frames were dropped from full queues before the sinks took them"
            );
            ExitCode::SUCCESS
        }
        Some(busy) => {
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
    }
}

/// The admin HTTP server (when enabled) and what its handlers read.
struct Admin {
    state: Arc<AdminState>,
    stop: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Admin {
    fn start(
        listener: Option<AdminListener>,
        cfg: &FileConfig,
        hub: &Hub,
        sink_thread: &SinkThread,
        started: Instant,
    ) -> Admin {
        let state = Arc::new(AdminState {
            hub: hub.clone(),
            sinks: sink_thread.statuses.clone(),
            started,
            shutting_down: AtomicBool::new(false),
            sink_queue: sink_thread.queue.clone(),
            allow_send: cfg.admin.send,
            reloads: Arc::default(),
            door: Arc::default(),
            cluster_view: Default::default(),
        });
        let stop = CancellationToken::new();
        let server = listener.map(|AdminListener { listener, door }| {
            if let Ok(local_addr) = listener.local_addr() {
                tracing::info!(
                    %local_addr,
                    tls = door.tls.is_some(),
                    token = door.token.is_some(),
                    max_connections = door.max_connections,
                    "admin listening"
                );
            }
            tokio::spawn(admin::serve(listener, state.clone(), door, stop.clone()))
        });
        Admin {
            state,
            stop,
            server,
        }
    }

    /// Where `/api/nodes?scope=cluster` reads (NATS).
    fn set_cluster_view(&self, view: Option<crate::cluster::ViewCell>) {
        *self.state.cluster_view.lock() = view;
    }

    /// `/readyz` turns 503 from now on.
    fn begin_shutdown(&self) {
        self.state.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Lets requests in flight finish, for at most `ADMIN_GRACE`.
    async fn stop(self) {
        self.stop.cancel();
        if let Some(server) = self.server
            && tokio::time::timeout(ADMIN_GRACE, server).await.is_err()
        {
            tracing::warn!("admin requests still running at exit");
        }
    }
}

/// The JSON statistics (`--stats`) or the status line (unless `--quiet`)
/// on stderr.
fn start_status_output(args: &ServeArgs, cfg: &FileConfig, hub: &Hub) -> Option<JoinHandle<()>> {
    if args.stats {
        Some(tokio::spawn(print_stats(hub.clone())))
    } else {
        (!args.quiet).then(|| tokio::spawn(status_line(hub.clone(), cfg.serve.status_interval)))
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
        // Through the logging, so `--log-format json` is JSON only.
        tracing::info!(
            connections = now.connections_open,
            nodes = nodes.len(),
            healthy,
            frames_in_per_sec =
                ((now.frames_received - last.frames_received) as f64 / secs).round(),
            delivered_per_sec =
                ((now.frames_delivered - last.frames_delivered) as f64 / secs).round(),
            dropped = now.dropped_total(),
            auth_failures = now.auth_failures,
            "status"
        );
        last = now;
    }
}

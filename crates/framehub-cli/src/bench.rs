//! `framehub bench`: turns flags into a load run (see the `framehub-bench`
//! crate) and prints its report as a table or one JSON object.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::ValueEnum;
use framehub::FramingConfig;
use framehub::units::parse_duration;
use framehub_bench::load::Load;
use framehub_bench::targets::{BenchConfig, Target};
use framehub_bench::tls::{BenchTls, Connector};
use serde::Deserialize;

use crate::progress::{Figures, Progress};

/// What receives the load.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Mode {
    /// framehub: in process with `--inproc`, or the server at `--to`.
    Hub,
    /// The loopback ceiling: a server in this process that only counts newlines.
    Ceiling,
    /// nats-server at `--to`: publishers on det.<node>, one subscriber on det.>.
    Nats,
    /// The reference JetStream publisher: the frames published straight
    /// into the stream `--stream` at the nats-server at `--to`, with publish
    /// acks, at most `--max-acks-in-flight` of them waiting.
    Jetstream,
}

/// Arguments of `framehub bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// What receives the load.
    #[arg(value_enum, default_value = "hub")]
    pub mode: Mode,
    /// A running server to load (framehub, or nats-server with `nats`).
    #[arg(long, conflicts_with = "inproc")]
    pub to: Option<SocketAddr>,
    /// Start a hub in this process with a consumer draining every receiver.
    #[arg(long)]
    pub inproc: bool,
    /// Connections.
    #[arg(long, default_value_t = 64)]
    pub conns: usize,
    /// Nodes (default: one per connection).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Frames per connection.
    #[arg(long, conflicts_with = "duration")]
    pub frames: Option<u64>,
    /// Send for this long instead of a frame count (e.g. 10s).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Payload size: a radar detection frame padded to this many bytes.
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// Framing: lines (node protocol), length, cobs, spacepacket, json.
    #[arg(long, default_value = "lines")]
    pub framing: String,
    /// Token for the node protocol.
    #[arg(long)]
    pub token: Option<String>,
    /// Frames per second per connection (0 = as fast as possible); measures latency.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Capacity of each receiver's queue (with --inproc).
    #[arg(long, default_value_t = 2000)]
    pub queue: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Open this many idle authenticated connections to `--to` instead of a load.
    #[arg(long)]
    pub idle_conns: Option<usize>,
    /// The server's PID, to read its memory from /proc (with --idle-conns).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Speak TLS to the hub, trusting the CA certificates in this PEM file.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// With --inproc and --tls-ca: the in-process hub's certificate chain.
    #[arg(long, value_name = "PEM", requires_all = ["tls_ca", "tls_key", "inproc"])]
    pub tls_cert: Option<PathBuf>,
    /// With --tls-cert: the in-process hub's private key.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name the server's certificate must carry (default: its IP).
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
    /// Send through the library's reconnecting `Client` (one per
    /// connection) to `--to`; ends when every frame was written.
    #[arg(long, requires = "to")]
    pub client: bool,
    /// With the client: acknowledged delivery (the listener needs
    /// [listener.ack] mode = "durable"); ends when every frame was
    /// acknowledged, and reports the latency from send to ack.
    #[arg(long, requires = "client")]
    pub ack: bool,
    /// With the client: bytes of unacknowledged frames (or, without acks,
    /// about as many bytes of queued frames) each client holds at most.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    pub max_unacked: usize,
    /// Measure the client's memory per MiB of unacknowledged frames (a
    /// server in this process that never acknowledges), then exit.
    #[arg(long)]
    pub outbox_memory: bool,
    /// With jetstream: the stream (created when missing: file, one
    /// replica, subjects framehub.bench.>).
    #[arg(long, default_value = "FRAMEHUB_BENCH")]
    pub stream: String,
    /// With jetstream: publishes waiting for their ack at most (default:
    /// the nats sink's default, `max_acks_in_flight`).
    #[arg(long, default_value_t = framehub_bench::jetstream::default_max_acks_in_flight())]
    pub max_acks_in_flight: usize,
    /// With jetstream: publisher tasks sharing the connections' frames
    /// (0: one per connection; 1: one task publishes every node's frames
    /// in turn).
    #[arg(long, default_value_t = 0)]
    pub publishers: usize,
    /// With jetstream: publish the bare frames, without the headers the
    /// nats sink adds (source, receive time, Nats-Msg-Id).
    #[arg(long)]
    pub no_headers: bool,
}

fn parse_size(text: &str) -> Result<usize, String> {
    framehub::ByteSize::parse(text).map(|s| s.0)
}

impl BenchArgs {
    fn tls(&self) -> Option<BenchTls> {
        let ca = self.tls_ca.clone()?;
        Some(BenchTls {
            ca,
            server: self.tls_cert.clone().zip(self.tls_key.clone()),
            server_name: self.tls_server_name.clone(),
        })
    }
}

pub async fn run(args: BenchArgs) -> ExitCode {
    match run_inner(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("framehub bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_inner(args: BenchArgs) -> anyhow::Result<()> {
    if args.outbox_memory {
        let report = framehub_bench::ack::outbox_memory(args.size, args.max_unacked).await?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{}", report.table());
        }
        return Ok(());
    }
    if args.client {
        let to = args
            .to
            .ok_or_else(|| anyhow::anyhow!("--client needs --to"))?;
        let report = framehub_bench::ack::run(framehub_bench::ack::ClientLoad {
            to: to.to_string(),
            conns: args.conns.max(1),
            frames: args.frames.unwrap_or(100_000),
            size: args.size,
            rate: args.rate,
            token: args.token.clone(),
            ack: args.ack,
            max_unacked: args.max_unacked,
        })
        .await?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{}", report.table());
        }
        return Ok(());
    }
    if let Some(n) = args.idle_conns {
        let to = args
            .to
            .ok_or_else(|| anyhow::anyhow!("--idle-conns needs --to"))?;
        let tls = args.tls().map(|t| Connector::new(&t, to)).transpose()?;
        let report =
            framehub_bench::idle::run(to, tls.as_ref(), n, args.token.as_deref(), args.server_pid)
                .await?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{}", report.table());
        }
        return Ok(());
    }
    let framing = FramingConfig::deserialize(toml::Value::String(args.framing.clone()))
        .map_err(|e| anyhow::anyhow!("--framing: {e}"))?;
    let target = match (args.mode, args.to, args.inproc) {
        (Mode::Ceiling, _, _) => Target::Ceiling,
        (Mode::Nats, Some(to), _) => Target::Nats(to),
        (Mode::Nats, None, _) => anyhow::bail!("nats needs --to HOST:PORT of a nats-server"),
        (Mode::Hub, Some(to), _) => Target::Remote(to),
        (Mode::Hub, None, true) => Target::Inproc,
        (Mode::Hub, None, false) => anyhow::bail!("give --to HOST:PORT or --inproc"),
        (Mode::Jetstream, _, _) => return jetstream(&args).await,
    };
    let sent = Arc::new(AtomicU64::new(0));
    let frames = match (args.frames, args.duration) {
        (None, None) => Some(100_000),
        (f, _) => f,
    };
    let cfg = BenchConfig {
        load: Load {
            conns: args.conns.max(1),
            nodes: args.nodes.unwrap_or(args.conns).max(1),
            frames,
            duration: args.duration.unwrap_or(Duration::from_secs(10)),
            size: args.size,
            rate: args.rate,
            progress: Some(sent.clone()),
        },
        framing,
        token: args.token.clone(),
        target,
        queue_capacity: args.queue.max(1),
        tls: args.tls(),
    };
    print_report(
        args.json,
        sent,
        framehub_bench::targets::run(cfg),
        |r: &framehub_bench::Report| r.table(),
    )
    .await
}

/// Runs one load with the progress line on (`sent` counts what went out),
/// then prints its report: JSON with `--json`, else its table.
async fn print_report<R: serde::Serialize, E: Into<anyhow::Error>>(
    json: bool,
    sent: Arc<AtomicU64>,
    run: impl std::future::Future<Output = Result<R, E>>,
    table: impl FnOnce(&R) -> String,
) -> anyhow::Result<()> {
    let progress = Progress::start(move || Figures {
        sent: sent.load(Ordering::Relaxed),
        acked: None,
    });
    let report = run.await;
    progress.finish();
    let report = report.map_err(Into::into)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

/// `framehub bench jetstream`: the reference publisher.
async fn jetstream(args: &BenchArgs) -> anyhow::Result<()> {
    let to = args
        .to
        .ok_or_else(|| anyhow::anyhow!("jetstream needs --to HOST:PORT of a nats-server"))?;
    anyhow::ensure!(
        args.duration.is_none() && args.rate == 0,
        "jetstream publishes a frame count: give --frames, not --duration or --rate"
    );
    let sent = Arc::new(AtomicU64::new(0));
    let cfg = framehub_bench::jetstream::JetStreamLoad {
        server: format!("nats://{to}"),
        stream: args.stream.clone(),
        listener: "bench".to_owned(),
        load: Load {
            conns: args.conns.max(1),
            nodes: args.nodes.unwrap_or(args.conns).max(1),
            frames: Some(args.frames.unwrap_or(100_000)),
            duration: Duration::ZERO,
            size: args.size,
            rate: 0,
            progress: Some(sent.clone()),
        },
        publishers: args.publishers,
        max_acks_in_flight: args.max_acks_in_flight,
        headers: !args.no_headers,
        ack_timeout: Duration::from_secs(30),
    };
    print_report(
        args.json,
        sent,
        framehub_bench::jetstream::run(cfg),
        |r: &framehub_bench::jetstream::JetStreamReport| r.table(),
    )
    .await
}

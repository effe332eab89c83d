//! The `framehub` binary: parses arguments and hands over to the library.
//! Each subcommand lives in its own module; this file only wires them.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod admin;
mod bench;
mod cluster;
mod config;
mod histogram;
mod metrics;
mod notify;
mod progress;
mod reload;
mod send;
mod serve;
mod simulate;
mod sink;
mod subscribe;
mod top;

/// Exit code for a configuration that cannot be used (sysexits EX_USAGE,
/// as linkerd and others use for bad config).
pub const EXIT_BAD_CONFIG: u8 = 64;

#[derive(Parser, Debug)]
#[command(
    name = "framehub",
    version,
    about = "The front door for fleets of devices pushing framed messages over TCP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Accept connections and write every delivered frame as one NDJSON record.
    Serve(ServeArgs),
    /// Send stdin's lines (or simulated radar nodes) to a server through
    /// the reconnecting client.
    Send(send::SendArgs),
    /// Load generator: framehub in process or remote, the loopback ceiling, nats-server.
    Bench(bench::BenchArgs),
    /// Validate a config file without binding anything.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// A running daemon's live view in the terminal (its admin API).
    Top(top::TopArgs),
    /// Subscribe to a daemon's tap sink: its records live on stdout,
    /// filtered by the daemon (--node, --listener).
    Tap(subscribe::TapArgs),
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout: `framehub man > framehub.1`.
    Man,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Arguments of `framehub serve`; flags override the config file.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// TOML config file (see docs/configuration.md).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address of the first listener, e.g. 0.0.0.0:30050 (port 0 picks one).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Shared token of the first listener's node protocol. Visible to
    /// every user in the process list: prefer `token_file` or the
    /// FRAMEHUB_TOKEN environment variable. Overrides both.
    #[arg(long)]
    pub token: Option<Secret>,
    /// Framing of the first listener: lines, length, cobs, spacepacket, chunk, json.
    /// Anything but lines switches it to the raw protocol.
    #[arg(long)]
    pub framing: Option<String>,
    /// Write records to this file (appending) instead of stdout: a file
    /// sink named `out` (replaces `[serve] out`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also stream every record live to TCP subscribers on this address
    /// (a tap sink named `tap`).
    #[arg(long)]
    pub tap: Option<std::net::SocketAddr>,
    /// Address of the admin HTTP server (/healthz, /metrics, /api/...);
    /// default 127.0.0.1:30051.
    #[arg(long, conflicts_with = "no_admin")]
    pub admin: Option<std::net::SocketAddr>,
    /// No admin HTTP server.
    #[arg(long)]
    pub no_admin: bool,
    /// No status line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Print the traffic statistics on stderr as one JSON line per
    /// `stats_interval` (1 s), instead of the status line.
    #[arg(long)]
    pub stats: bool,
    /// Log format on stderr; filter with RUST_LOG (default info).
    #[arg(long, value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
}

/// A secret given on the command line: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The environment variable a shared token can come from.
pub const TOKEN_ENV: &str = "FRAMEHUB_TOKEN";

fn init_logs(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = use_colour(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let secrets = tracing_subscriber::filter::filter_fn(not_secret);
    match format {
        LogFormat::Pretty => builder.finish().with(secrets).init(),
        LogFormat::Json => builder.json().finish().with(secrets).init(),
    }
}

/// async-nats (0.50) logs its CONNECT message, NATS token or password
/// included, at trace level: whatever `RUST_LOG` asks, that module logs at
/// debug at most.
fn not_secret(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() != tracing::Level::TRACE || !meta.target().starts_with("async_nats::connection")
}

/// Colour escape codes only on a terminal, and never when `NO_COLOR` is
/// set to anything but the empty string (no-color.org): a log file or a
/// pipe gets plain text.
fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the SIGINT/SIGTERM handlers now, before anything is bound or
/// connected, so a signal that comes early is still handled; the returned
/// future completes on the first signal.
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

fn block_on(task: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(task),
        Err(e) => {
            eprintln!("framehub: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => config::check_config(&file),
        Command::Serve(args) => {
            init_logs(args.log_format);
            block_on(serve::run(args))
        }
        Command::Send(args) => {
            init_logs(args.log_format);
            block_on(send::run(args))
        }
        Command::Top(args) => match top::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("framehub top: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Tap(args) => match subscribe::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("framehub tap: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "framehub",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Man => {
            use clap::CommandFactory;
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("framehub man: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Bench(args) => {
            init_logs(LogFormat::Pretty);
            block_on(bench::run(args))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::use_colour;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert!(use_colour(true, None));
        assert!(
            use_colour(true, Some(OsStr::new(""))),
            "an empty NO_COLOR is unset"
        );
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None), "a file or a pipe");
        assert!(!use_colour(false, Some(OsStr::new("1"))));
    }
}

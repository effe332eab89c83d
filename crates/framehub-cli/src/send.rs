//! `framehub send`: stdin's lines (or a simulated fleet, see `simulate`)
//! through the library's reconnecting client, exiting 0 once everything
//! read was written (with `--ack`: acknowledged as durable by the server).
//!
//! Stdin is cut into lines with the library's `lines` decoder, so a line
//! that never ends cannot grow a buffer past `--max-frame-bytes`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use framehub::codec::{FrameDecoder, FramingConfig};
use framehub::units::{parse_duration, parse_opt_duration};
use framehub::{
    ByteSize, Client, ClientAckConfig, ClientAckMode, ClientConfig, ClientCounters, ClientError,
    ClientProtocol, ClientTlsConfig, NodeIdentity, OutboxPolicy,
};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::{EXIT_BAD_CONFIG, LogFormat};

/// Exit code when interrupted before stdin ended (128 + SIGINT, as shells
/// report it).
const EXIT_INTERRUPTED: u8 = 130;
/// One read of stdin.
const READ_BYTES: usize = 64 << 10;

/// Arguments of `framehub send`.
#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// The server, HOST:PORT (resolved again on every reconnect); several,
    /// comma-separated: the next is tried when one is down.
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]")]
    pub to: String,
    /// Node id, filled into JSON messages that lack one (node protocol).
    #[arg(long)]
    pub node_id: Option<String>,
    /// Token that authenticates every connection (node protocol).
    #[arg(long)]
    pub token: Option<String>,
    /// Speak TLS, trusting the CA certificates in this PEM file.
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) for servers that ask for one (mTLS).
    #[arg(long, value_name = "PEM", requires_all = ["ca", "key"])]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "PEM", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The name the server's certificate must carry (default: the host of
    /// --to).
    #[arg(long, value_name = "NAME", requires = "ca")]
    pub server_name: Option<String>,
    /// Framing: lines (node protocol), or length, cobs, spacepacket, chunk, json
    /// (raw: messages as given).
    #[arg(long, default_value = "lines")]
    pub framing: String,
    /// With lines framing: send lines as they are, without the node
    /// protocol (no authenticating heartbeat, no node_id).
    #[arg(long)]
    pub raw: bool,
    /// Each stdin line is the hex of one message (for binary framings).
    #[arg(long)]
    pub hex: bool,
    /// Send a heartbeat when nothing was written for this long ("off": none).
    // Spelled out so clap keeps the `Option` as the value ("off" is None)
    // instead of making the flag optional.
    #[arg(long, default_value = "10s", value_parser = parse_opt_duration)]
    pub heartbeat: std::option::Option<Duration>,
    /// Raw heartbeat payload (hex with --hex); the node protocol has its own.
    #[arg(long)]
    pub heartbeat_frame: Option<String>,
    /// Reconnect when a server that was sending is silent this long ("off").
    #[arg(long, default_value = "3s", value_parser = parse_opt_duration)]
    pub liveness_timeout: std::option::Option<Duration>,
    /// Messages held while the link is down. Stdin waits when it is full;
    /// a simulation drops the oldest (counted).
    #[arg(long, default_value_t = 2000)]
    pub outbox: usize,
    /// SO_SNDBUF, e.g. 64KiB: what a server crash can lose (default: kernel).
    #[arg(long, value_parser = parse_size)]
    pub send_buffer: Option<usize>,
    /// Largest message.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub max_frame_bytes: usize,
    /// How long the final flush may take before giving up; with --ack,
    /// how long to wait at the end of stdin for the last acks.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub close_timeout: Duration,
    /// Acknowledged delivery: number every line, keep it until the server
    /// acknowledges it as durable, send it again after a reconnect; exit 0
    /// only when every line was acknowledged (the listener needs
    /// [listener.ack] mode = "durable").
    #[arg(long, conflicts_with = "simulate")]
    pub ack: bool,
    /// With --ack (node protocol): the member carrying the number.
    #[arg(long, default_value = "seq", requires = "ack")]
    pub seq_field: String,
    /// With --ack and length framing: the stream's id (what the server
    /// deduplicates and acknowledges by).
    #[arg(long, requires = "ack")]
    pub stream_id: Option<String>,
    /// With --ack: the first line's number (default: the wall clock in
    /// microseconds, so a rerun numbers above the last run).
    #[arg(long, requires = "ack")]
    pub first_seq: Option<u64>,
    /// With --ack: bytes of lines sent and not acknowledged held at most
    /// (stdin waits when full; replaces --outbox).
    #[arg(long, default_value = "8MiB", value_parser = parse_size, requires = "ack")]
    pub max_unacked: usize,
    /// With --ack: lines outstanding and no ack for this long means the
    /// link is dead (a silent network drop): reconnect and send again.
    #[arg(long, default_value = "10s", value_parser = parse_duration, requires = "ack")]
    pub ack_timeout: Duration,
    /// Simulate N radar nodes (node-1..node-N) instead of reading stdin.
    #[arg(long, value_name = "N")]
    pub simulate: Option<usize>,
    /// Detection frames per second per simulated node.
    #[arg(long, default_value_t = 1.0, requires = "simulate")]
    pub rate: f64,
    /// Stop the simulation after this long (default: at Ctrl-C).
    #[arg(long, requires = "simulate", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Each simulated node closes its connection after K frames (K
    /// heartbeats with --heartbeat-only) and reconnects.
    #[arg(long, value_name = "K", requires = "simulate")]
    pub disconnect_after: Option<u64>,
    /// Simulated nodes authenticate with a wrong token.
    #[arg(long, requires = "simulate")]
    pub invalid_token: bool,
    /// Every fifth simulated frame is malformed (truncated JSON, not JSON,
    /// invalid UTF-8, a non-string node_id).
    #[arg(long, requires = "simulate")]
    pub malformed: bool,
    /// Simulated nodes connect and send only heartbeats (every --heartbeat).
    #[arg(long, requires = "simulate", conflicts_with = "malformed")]
    pub heartbeat_only: bool,
    /// Log format on stderr; filter with RUST_LOG (default info).
    #[arg(long, value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
}

fn parse_size(text: &str) -> Result<usize, String> {
    ByteSize::parse(text).map(|s| s.0)
}

/// Decodes a hex line (whitespace between digits allowed).
pub fn decode_hex(line: &[u8]) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = line
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    let value = |d: u8| match d {
        b'0'..=b'9' => Ok(d - b'0'),
        b'a'..=b'f' => Ok(d - b'a' + 10),
        b'A'..=b'F' => Ok(d - b'A' + 10),
        _ => Err(format!("{:?} is not a hex digit", d as char)),
    };
    digits
        .chunks_exact(2)
        .map(|pair| Ok(value(pair[0])? << 4 | value(pair[1])?))
        .collect()
}

/// The client settings the flags describe; errors name the flag.
pub fn client_config(args: &SendArgs) -> Result<ClientConfig, String> {
    let framing = FramingConfig::deserialize(toml::Value::String(args.framing.clone()))
        .map_err(|e| format!("--framing: {e}"))?;
    let node = framing == FramingConfig::Lines && !args.raw;
    if !node && (args.node_id.is_some() || args.token.is_some()) {
        return Err("--node-id and --token need the node protocol (lines, without --raw)".into());
    }
    if node && args.heartbeat_frame.is_some() {
        return Err("--heartbeat-frame is for raw framings; the node protocol has its own".into());
    }
    if args.simulate.is_some() && !node {
        return Err("--simulate sends node-protocol frames: use lines framing".into());
    }
    let ack_mode = match (args.ack, node, &args.stream_id) {
        (false, _, _) => ClientAckMode::Off,
        (true, true, None) => ClientAckMode::Node {
            seq_field: args.seq_field.clone(),
        },
        (true, true, Some(_)) => {
            return Err("--stream-id is for --ack with length framing".into());
        }
        (true, false, Some(stream_id)) => ClientAckMode::Length {
            stream_id: stream_id.clone(),
        },
        (true, false, None) => {
            return Err(
                "--ack with a binary framing needs --framing length and --stream-id".into(),
            );
        }
    };
    if ack_mode != ClientAckMode::Off && args.heartbeat_frame.is_some() {
        return Err("--heartbeat-frame cannot be told from data under --ack".into());
    }
    let protocol = if node {
        ClientProtocol::Node(NodeIdentity {
            node_id: args.node_id.clone(),
            token: args.token.clone(),
            ..NodeIdentity::default()
        })
    } else {
        let heartbeat = match &args.heartbeat_frame {
            Some(text) if args.hex => Some(Bytes::from(
                decode_hex(text.as_bytes()).map_err(|e| format!("--heartbeat-frame: {e}"))?,
            )),
            Some(text) => Some(Bytes::from(text.clone())),
            None => None,
        };
        ClientProtocol::Raw { heartbeat }
    };
    let config = ClientConfig {
        framing,
        protocol,
        max_frame_bytes: args.max_frame_bytes,
        heartbeat_interval: args.heartbeat,
        liveness_timeout: args.liveness_timeout,
        send_buffer_bytes: args.send_buffer,
        outbox_capacity: args.outbox,
        // Replaying input must not lose lines: the reader waits instead.
        outbox_policy: OutboxPolicy::Block,
        tls: args.ca.as_ref().map(|ca| ClientTlsConfig {
            cert: args.cert.clone(),
            key: args.key.clone(),
            server_name: args.server_name.clone(),
            ..ClientTlsConfig::new(ca)
        }),
        ack: ClientAckConfig {
            mode: ack_mode,
            first_seq: args.first_seq,
            max_unacked_bytes: args.max_unacked,
            timeout: args.ack_timeout,
        },
        ..ClientConfig::new(args.to.clone())
    };
    Ok(config)
}

/// What was done with stdin's lines.
#[derive(Debug, Default)]
struct Lines {
    /// Lines handed to the client.
    queued: u64,
    /// Lines skipped: too long, bad hex, refused by the framing.
    skipped: u64,
}

pub async fn run(args: SendArgs) -> ExitCode {
    let signal = match crate::shutdown_signal() {
        Ok(signal) => signal,
        Err(e) => {
            eprintln!("framehub: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match client_config(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("framehub send: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if let Some(nodes) = args.simulate {
        return crate::simulate::run(
            config,
            crate::simulate::Plan::from_args(&args, nodes),
            signal,
        )
        .await;
    }
    let node = matches!(config.protocol, ClientProtocol::Node(_));
    let client = match Client::start(config) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("framehub send: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let mut lines = Lines::default();
    let watched = client.clone();
    let progress = crate::progress::Progress::start(move || crate::progress::Figures {
        sent: watched.counters().sent,
        acked: None,
    });
    let read = tokio::select! {
        read = pump_stdin(&client, &args, node, &mut lines) => Some(read),
        _ = signal => None,
    };
    progress.finish();
    let interrupted = read.is_none();
    let closed = client.close(args.close_timeout).await;
    let c = client.counters();
    eprintln!("{}", summary(&c, &lines, args.ack));
    match (read, closed) {
        (Some(Err(e)), _) => {
            eprintln!("framehub send: reading stdin failed: {e}");
            ExitCode::FAILURE
        }
        (_, Err(ClientError::Unacknowledged { unacked })) => {
            eprintln!(
                "framehub send: {unacked} of {} lines not acknowledged within --close-timeout {:?}",
                lines.queued, args.close_timeout
            );
            ExitCode::FAILURE
        }
        (_, Err(e)) => {
            eprintln!("framehub send: {e}");
            ExitCode::FAILURE
        }
        _ if interrupted => ExitCode::from(EXIT_INTERRUPTED),
        _ if lines.skipped > 0 => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

/// The summary line on stderr; tests parse it.
fn summary(c: &ClientCounters, lines: &Lines, ack: bool) -> String {
    let mut line = format!(
        "framehub send: lines={} skipped={} sent={} resent={} heartbeats={} connects={} disconnects={} dropped={} unsent={}",
        lines.queued,
        lines.skipped,
        c.sent,
        c.resent,
        c.heartbeats_sent,
        c.connects,
        c.disconnects,
        c.dropped_outbox_full,
        c.dropped_unsent,
    );
    if ack {
        line.push_str(&format!(
            " acked={} unacked={} bytes_resent={} acked_seq={}",
            c.acked,
            c.dropped_unacked + c.dropped_unsent,
            c.bytes_resent,
            c.acked_seq,
        ));
    }
    line
}

/// Reads stdin to its end, handing each line to the client (waiting while
/// its outbox is full).
async fn pump_stdin(
    client: &Client,
    args: &SendArgs,
    node: bool,
    lines: &mut Lines,
) -> std::io::Result<()> {
    let mut stdin = tokio::io::stdin();
    // A hex line is twice its message, plus slack for spaces.
    let max_line = if args.hex {
        args.max_frame_bytes.saturating_mul(3)
    } else {
        args.max_frame_bytes
    };
    let mut decoder = FrameDecoder::new(&FramingConfig::Lines, max_line);
    let mut buf = BytesMut::with_capacity(READ_BYTES);
    loop {
        if buf.capacity() - buf.len() < READ_BYTES / 2 {
            buf.reserve(READ_BYTES);
        }
        let eof = stdin.read_buf(&mut buf).await? == 0;
        loop {
            let decoded = decoder.decode_next(&mut buf, eof);
            let line = match decoded {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => {
                    lines.skipped += 1;
                    tracing::warn!(skipped = lines.skipped, "stdin line skipped: {e}");
                    continue;
                }
            };
            // NDJSON files often hold blank lines; they are no message.
            if node && line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let message = if args.hex {
                match decode_hex(&line) {
                    Ok(bytes) => Bytes::from(bytes),
                    Err(e) => {
                        lines.skipped += 1;
                        tracing::warn!(skipped = lines.skipped, "stdin line skipped: {e}");
                        continue;
                    }
                }
            } else {
                line
            };
            match client.send(message).await {
                Ok(()) => lines.queued += 1,
                Err(e @ (ClientError::Unframeable(_) | ClientError::Unnumberable(_))) => {
                    lines.skipped += 1;
                    tracing::warn!(skipped = lines.skipped, "stdin line skipped: {e}");
                }
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        if eof {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        send: SendArgs,
    }

    fn args(argv: &[&str]) -> SendArgs {
        Cli::try_parse_from(std::iter::once("send").chain(argv.iter().copied()))
            .expect("valid args")
            .send
    }

    #[test]
    fn hex_lines_decode() {
        assert_eq!(decode_hex(b"00ff 10"), Ok(vec![0, 255, 16]));
        assert!(decode_hex(b"abc").is_err());
        assert!(decode_hex(b"zz").is_err());
    }

    #[test]
    fn flags_become_client_settings() {
        let c = client_config(&args(&[
            "--to",
            "h:1",
            "--node-id",
            "n",
            "--token",
            "t",
            "--heartbeat",
            "off",
        ]))
        .expect("config");
        assert!(matches!(c.protocol, ClientProtocol::Node(_)));
        assert_eq!(c.heartbeat_interval, None);
        assert_eq!(c.outbox_policy, OutboxPolicy::Block);

        let c = client_config(&args(&[
            "--to",
            "h:1",
            "--framing",
            "length",
            "--hex",
            "--heartbeat-frame",
            "beef",
        ]))
        .expect("config");
        assert!(matches!(
            c.protocol,
            ClientProtocol::Raw { heartbeat: Some(ref h) } if h[..] == [0xbe, 0xef]
        ));

        let err = client_config(&args(&["--to", "h:1", "--framing", "cobs", "--token", "t"]))
            .expect_err("token needs node");
        assert!(err.contains("--token"), "{err}");
        let err =
            client_config(&args(&["--to", "h:1", "--framing", "xml"])).expect_err("bad framing");
        assert!(err.contains("--framing"), "{err}");
    }

    #[test]
    fn ack_flags_become_ack_settings() {
        let c = client_config(&args(&[
            "--to",
            "h:1",
            "--ack",
            "--first-seq",
            "5",
            "--max-unacked",
            "2MiB",
            "--ack-timeout",
            "3s",
        ]))
        .expect("config");
        assert_eq!(
            c.ack,
            ClientAckConfig {
                mode: ClientAckMode::node(),
                first_seq: Some(5),
                max_unacked_bytes: 2 << 20,
                timeout: Duration::from_secs(3),
            }
        );
        assert_eq!(
            c.outbox_policy,
            OutboxPolicy::Block,
            "lines are never dropped"
        );
        let c = client_config(&args(&[
            "--to",
            "h:1",
            "--ack",
            "--framing",
            "length",
            "--stream-id",
            "cam",
        ]))
        .expect("config");
        assert_eq!(
            c.ack.mode,
            ClientAckMode::Length {
                stream_id: "cam".into()
            }
        );
        let err = client_config(&args(&["--to", "h:1", "--ack", "--framing", "length"]))
            .expect_err("length needs a stream id");
        assert!(err.contains("--stream-id"), "{err}");
        assert_eq!(
            client_config(&args(&["--to", "h:1"]))
                .expect("config")
                .ack
                .mode,
            ClientAckMode::Off
        );
    }
}

//! The LinuxIT-TCP-IP command server on framehub: JSON commands, each
//! answered on the same connection by a response whose code is the
//! request's plus one.
//!
//! Two listeners share one handler: `lines` (`--listen`, one command per
//! line) and, with `--json ADDR`, `json`: a stream of JSON values, which is
//! what LinuxIT's `TCPClient`, its test scripts and the terminal tool its
//! README recommends send (one object per write, no newline; newline-ended
//! lines work too). The `json` listener cuts values by their structure only
//! (`validate = false`), so a malformed request still reaches the handler
//! and gets LinuxIT's error reply instead of silence.
//!
//! Requests are read as LinuxIT's server reads them: a `0x..` literal
//! (`{"cmd": 0x01, ...}`, as LinuxIT's README writes) is taken as the
//! number it stands for before the JSON is parsed. Only outside strings:
//! LinuxIT's server rewrites inside strings too, which changes a file name
//! such as `"0x10.jpg"`; here strings are left as they are. This leniency
//! is the example's: framehub's own JSON stays strict.
//!
//! ```sh
//! cargo run -p framehub --example command_server -- --listen 127.0.0.1:30070 --json 127.0.0.1:9090
//! # stdout: listening lines 127.0.0.1:30070
//! #         listening json 127.0.0.1:9090
//! printf '{"cmd":1,"request_data":null}\n' | nc -q1 127.0.0.1 30070
//! # {"cmd":2,"request_data":null,"response_data":"pong"}
//! printf '{"cmd" : 0x01, "request_data": ["test.jpg"]}' | nc -q1 127.0.0.1 9090
//! # {"cmd":2,"request_data":null,"response_data":"pong"}
//! ```
//!
//! Commands: 1 ping (-> 2, `"pong"`), 3 echo (-> 4, the request's
//! `request_data`), 5 stats (-> 6, the listener's counters), 7 sleep
//! `request_data` milliseconds (-> 8; try it past `--timeout`), 9 panic
//! (the connection survives). Errors are LinuxIT's error response,
//! `{"cmd":null,"request_data":null,"response_data":[{"error_code":N,
//! "file_name":null,"message":"...","result":null}]}`, with LinuxIT's
//! codes: 1 invalid message (not JSON, no `cmd`, bad `request_data`),
//! 2 resource not found, 3 unknown command, 4 timeout; 5 (internal error:
//! the handler panicked) is this example's own.
//!
//! Every connection that ends is reported on stdout as one line:
//! `closed peer=.. requests=.. replies=.. telemetry=.. dropped=..
//! bytes_in=.. bytes_out=.. ending=peer|shutdown|error`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use framehub::codec::{FramingConfig, JsonConfig};
use framehub::command::{CommandRouter, Key, KeyFrom};
use framehub::handler::{Failure, Handler, HandlerError, Replies, Request};
use framehub::{Hub, HubConfig, ListenerConfig, Protocol};
use serde_json::{Value, json};

#[path = "shared/report.rs"]
mod report;

/// LinuxIT's error codes.
const INVALID_MESSAGE: u8 = 1;
const UNKNOWN_COMMAND: u8 = 3;
const TIMEOUT: u8 = 4;
/// Not LinuxIT's: the handler panicked.
const INTERNAL_ERROR: u8 = 5;

struct Args {
    listen: SocketAddr,
    /// The `json` listener, if any.
    json: Option<SocketAddr>,
    timeout: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        listen: "127.0.0.1:30070".parse()?,
        json: None,
        timeout: Duration::from_secs(5),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => args.listen = value()?.parse().context("--listen ADDR")?,
            "--json" => args.json = Some(value()?.parse().context("--json ADDR")?),
            "--timeout" => {
                args.timeout =
                    framehub::units::parse_duration(&value()?).map_err(anyhow::Error::msg)?;
            }
            other => {
                bail!(
                    "unknown argument {other:?}; usage: command_server --listen ADDR [--json ADDR] [--timeout 5s]"
                )
            }
        }
    }
    Ok(args)
}

fn frame(value: &Value) -> Replies {
    vec![Bytes::from(value.to_string())]
}

/// LinuxIT's error response (its `Peer._send_error`): the fields its
/// client reads, `message` saying what was wrong.
fn error_reply(code: u8, message: &str) -> Replies {
    frame(&json!({
        "cmd": null,
        "response_data": [{
            "file_name": null,
            "result": null,
            "error_code": code,
            "message": message,
        }],
        "request_data": null,
    }))
}

/// Why a request has no command key, in the words of LinuxIT's validator.
fn invalid_message(payload: &[u8]) -> String {
    match serde_json::from_slice::<Value>(payload) {
        Err(e) => format!("Invalid JSON format: {e}"),
        Ok(Value::Object(request)) => match request.get("cmd") {
            None => "Request must contain 'cmd' field".to_owned(),
            Some(cmd) => format!("Invalid command code: {cmd}"),
        },
        Ok(_) => "Request must be a dictionary".to_owned(),
    }
}

/// `payload` with every `0x..` literal outside strings written in decimal,
/// as LinuxIT's server reads requests (`None`: nothing to rewrite). A
/// literal too large for a `u64` is left as is, and so is not JSON.
fn decimal_literals(payload: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let (mut i, mut copied, mut in_string) = (0, 0, false);
    while i < payload.len() {
        let b = payload[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        let at_token_start = i == 0 || !payload[i - 1].is_ascii_alphanumeric();
        let digits = payload[i..]
            .strip_prefix(b"0x")
            .or_else(|| payload[i..].strip_prefix(b"0X"))
            .map(|rest| rest.iter().take_while(|c| c.is_ascii_hexdigit()).count())
            .unwrap_or(0);
        let value = (at_token_start && digits > 0)
            .then(|| std::str::from_utf8(&payload[i + 2..i + 2 + digits]).ok())
            .flatten()
            .and_then(|hex| u64::from_str_radix(hex, 16).ok());
        match value {
            Some(n) => {
                let out = out.get_or_insert_with(|| Vec::with_capacity(payload.len()));
                out.extend_from_slice(&payload[copied..i]);
                out.extend_from_slice(n.to_string().as_bytes());
                i += 2 + digits;
                copied = i;
            }
            None => {
                in_string = b == b'"';
                i += 1;
            }
        }
    }
    let mut out = out?;
    out.extend_from_slice(&payload[copied..]);
    Some(out)
}

fn response(request_code: i64, data: Value) -> Result<Replies, HandlerError> {
    Ok(frame(
        &json!({"cmd": request_code + 1, "response_data": data, "request_data": null}),
    ))
}

/// The request's `request_data`; a frame the router let through is JSON.
fn request_data(req: &Request) -> Result<Value, HandlerError> {
    let mut value: Value = serde_json::from_slice(&req.payload)?;
    Ok(value
        .get_mut("request_data")
        .map(Value::take)
        .unwrap_or(Value::Null))
}

fn handler(timeout: Duration) -> Handler {
    let router = router();
    Handler::new(move |mut req: Request| {
        if let Some(rewritten) = decimal_literals(&req.payload) {
            req.payload = Bytes::from(rewritten);
        }
        router.handle(req)
    })
    .timeout(timeout)
    .on_failure(|_request, failure| match failure {
        Failure::TimedOut(after) => error_reply(TIMEOUT, &format!("Timeout after {after:?}")),
        Failure::Panicked => error_reply(INTERNAL_ERROR, "Internal server error"),
        Failure::Error(e) => error_reply(INVALID_MESSAGE, &format!("Invalid request: {e}")),
        _ => error_reply(INVALID_MESSAGE, "Invalid request"),
    })
}

fn router() -> Handler {
    CommandRouter::new(KeyFrom::json_field("cmd"))
        .route(1, |_req| async { response(1, json!("pong")) })
        .route(3, |req| async move { response(3, request_data(&req)?) })
        .route(5, |req| async move {
            let c = req.listener_counters();
            response(
                5,
                json!({
                    "connections_open": c.connections_open,
                    "connections_accepted": c.connections_accepted,
                    "frames_received": c.frames_received,
                    "bytes_received": c.bytes_received,
                    "frames_sent": c.frames_sent,
                    "bytes_sent": c.bytes_sent,
                    "requests": c.requests,
                    "replies_sent": c.replies_sent,
                    "handler_errors": c.handler_errors,
                    "handler_timeouts": c.handler_timeouts,
                    "handler_panics": c.handler_panics,
                    "dropped": c.dropped_total(),
                }),
            )
        })
        .route(7, |req| async move {
            let ms = request_data(&req)?
                .as_u64()
                .ok_or("request_data must be milliseconds")?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            response(7, json!(ms))
        })
        .route(9, |_req| async { panic!("command 9 panics on purpose") })
        .on_unknown(|_req, key| {
            let code = match key {
                Key::Int(n) => format!("{n:#04x}"),
                Key::Text(s) => format!("{s:?}"),
            };
            error_reply(UNKNOWN_COMMAND, &format!("Invalid command code: {code}"))
        })
        .on_invalid(|req| error_reply(INVALID_MESSAGE, &invalid_message(&req.payload)))
        .into_handler()
}

#[path = "shared/logs.rs"]
mod logs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    logs::init();
    let mut listener = vec![ListenerConfig {
        name: "commands".into(),
        bind: Some(args.listen),
        protocol: Protocol::Raw,
        ..ListenerConfig::default()
    }];
    if let Some(addr) = args.json {
        listener.push(ListenerConfig {
            name: "json".into(),
            bind: Some(addr),
            protocol: Protocol::Raw,
            // Cut by structure only: the handler answers malformed requests.
            framing: FramingConfig::Json(JsonConfig { validate: false }),
            ..ListenerConfig::default()
        });
    }
    let handler = handler(args.timeout);
    let handlers: Vec<(String, Handler)> = listener
        .iter()
        .map(|l| (l.name.clone(), handler.clone()))
        .collect();
    let hub = Hub::start_with(
        HubConfig {
            listener,
            ..HubConfig::default()
        },
        handlers,
    )
    .await?;
    // Subscribed before the addresses are out: a client that connects
    // and finishes at once must still get its line.
    report::print_closed_connections(&hub);
    for info in hub.listeners() {
        let kind = if info.name == "json" { "json" } else { "lines" };
        println!("listening {kind} {}", info.local_addr);
    }
    tokio::signal::ctrl_c().await?;
    hub.shutdown().await;
    Ok(())
}

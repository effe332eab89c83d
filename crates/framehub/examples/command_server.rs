//! The LinuxIT-TCP-IP command server on framehub: one JSON command per
//! line, answered on the same connection by a response whose code is the
//! request's plus one.
//!
//! ```sh
//! cargo run -p framehub --example command_server -- --listen 127.0.0.1:30070
//! # stdout: listening lines 127.0.0.1:30070
//! printf '{"cmd":1,"request_data":null}\n' | nc -q1 127.0.0.1 30070
//! # {"cmd":2,"request_data":null,"response_data":"pong"}
//! ```
//!
//! Commands: 1 ping (-> 2, `"pong"`), 3 echo (-> 4, the request's
//! `request_data`), 5 stats (-> 6, the listener's counters), 7 sleep
//! `request_data` milliseconds (-> 8; try it past `--timeout`), 9 panic
//! (the connection survives). Errors are
//! `{"cmd":null,"request_data":null,"response_data":[{"error_code":N}]}`
//! with LinuxIT's codes: 1 invalid message (not JSON, no `cmd`, bad
//! `request_data`), 2 resource not found, 3 unknown command, 4 timeout;
//! 5 (internal error: the handler panicked) is this example's own.
//!
//! Every connection that ends is reported on stdout as one line:
//! `closed peer=.. requests=.. replies=.. telemetry=.. dropped=..
//! bytes_in=.. bytes_out=.. ending=peer|shutdown|error`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use framehub::command::{CommandRouter, KeyFrom};
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
    timeout: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        listen: "127.0.0.1:30070".parse()?,
        timeout: Duration::from_secs(5),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => args.listen = value()?.parse().context("--listen ADDR")?,
            "--timeout" => {
                args.timeout =
                    framehub::units::parse_duration(&value()?).map_err(anyhow::Error::msg)?;
            }
            other => {
                bail!(
                    "unknown argument {other:?}; usage: command_server --listen ADDR [--timeout 5s]"
                )
            }
        }
    }
    Ok(args)
}

fn frame(value: &Value) -> Replies {
    vec![Bytes::from(value.to_string())]
}

fn error_reply(code: u8) -> Replies {
    frame(&json!({"cmd": null, "response_data": [{"error_code": code}], "request_data": null}))
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
        .on_unknown(|_req, _key| error_reply(UNKNOWN_COMMAND))
        .on_invalid(|_req| error_reply(INVALID_MESSAGE))
        .into_handler()
        .timeout(timeout)
        .on_failure(|_request, failure| match failure {
            Failure::TimedOut(_) => error_reply(TIMEOUT),
            Failure::Panicked => error_reply(INTERNAL_ERROR),
            _ => error_reply(INVALID_MESSAGE),
        })
}

#[path = "shared/logs.rs"]
mod logs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    logs::init();
    let hub = Hub::start_with(
        HubConfig {
            listener: vec![ListenerConfig {
                name: "commands".into(),
                bind: Some(args.listen),
                protocol: Protocol::Raw,
                ..ListenerConfig::default()
            }],
            ..HubConfig::default()
        },
        [("commands", handler(args.timeout))],
    )
    .await?;
    println!("listening lines {}", hub.local_addr());
    report::print_closed_connections(&hub);
    tokio::signal::ctrl_c().await?;
    hub.shutdown().await;
    Ok(())
}

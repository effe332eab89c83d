//! The robotics "TCP server stage" rebuilt on framehub: every read from a
//! client is a packet (`chunk` framing), packets of all clients are
//! published in groups, and every line typed on stdin is written back to
//! every connected client.
//!
//! ```sh
//! cargo run -p framehub --example stage -- --listen 127.0.0.1:30060
//! ```
//!
//! Each group is printed on stdout as
//! `group <n> packets <bytes> bytes from <k> clients`; the number of
//! clients each stdin line reached goes to stderr.

use std::io::BufRead;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use framehub::codec::FramingConfig;
use framehub::{Delivery, Hub, HubConfig, ListenerConfig, Protocol};

struct Args {
    listen: SocketAddr,
    group_size: usize,
    group_max_delay: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        listen: "127.0.0.1:30060".parse()?,
        group_size: 64,
        group_max_delay: Duration::from_millis(5),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => args.listen = value()?.parse().context("--listen ADDR")?,
            "--group-size" => args.group_size = value()?.parse().context("--group-size N")?,
            "--group-max-delay" => {
                args.group_max_delay =
                    framehub::units::parse_duration(&value()?).map_err(anyhow::Error::msg)?;
            }
            other => bail!(
                "unknown argument {other:?}; usage: stage --listen ADDR [--group-size N] [--group-max-delay 5ms]"
            ),
        }
    }
    Ok(args)
}

#[path = "shared/logs.rs"]
mod logs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    logs::init();
    let hub = Hub::start(HubConfig {
        listener: vec![ListenerConfig {
            name: "stage".into(),
            bind: Some(args.listen),
            framing: FramingConfig::Chunk,
            protocol: Protocol::Raw,
            delivery: Delivery::Groups,
            group_size: args.group_size,
            group_max_delay: args.group_max_delay,
            ..ListenerConfig::default()
        }],
        ..HubConfig::default()
    })
    .await?;
    eprintln!("stage listening on {}", hub.local_addr());

    let groups = hub.groups("stage").context("the stage listener groups")?;
    let printer = tokio::spawn(async move {
        while let Some(group) = groups.recv().await {
            println!(
                "group {} packets {} bytes from {} clients",
                group.frames.len(),
                group.bytes(),
                group.connections()
            );
        }
    });

    // Broadcasting never waits, so a plain thread can do it; a blocking
    // stdin read on the runtime would hold up its shutdown.
    {
        let hub = hub.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { return };
                let mut msg = line.into_bytes();
                msg.push(b'\n');
                match hub.broadcast(&msg) {
                    Ok(n) => eprintln!("sent to {n} clients"),
                    Err(e) => eprintln!("not sent: {e}"),
                }
            }
        });
    }

    // Serve until Ctrl-C, also after stdin has ended.
    tokio::signal::ctrl_c().await?;
    hub.shutdown().await;
    printer.await?;
    Ok(())
}

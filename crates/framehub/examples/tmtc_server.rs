//! The sat-rs TCP TMTC servers on framehub: telecommands as COBS frames on
//! one listener and as CCSDS space packets on another, answered with
//! telemetry on the same connection.
//!
//! ```sh
//! cargo run -p framehub --example tmtc_server -- \
//!     --cobs 127.0.0.1:7301 --spacepacket 127.0.0.1:7302 --allow-apid 2 --allow-apid 3
//! # stdout: listening cobs 127.0.0.1:7301
//! #         listening spacepacket 127.0.0.1:7302
//! ```
//!
//! - Space packets: a telecommand whose APID is allowed (`--allow-apid`,
//!   repeatable; with or without a secondary header) is answered by a
//!   telemetry packet (type bit 0) with the same APID, secondary header
//!   flag and sequence flags and count, and the telecommand's data as its
//!   data. Any other packet is skipped and counted (`unknown_packet_id`).
//! - COBS: every frame is answered by the same bytes, COBS-encoded
//!   between 0x00 delimiters.
//!
//! Every connection that ends is reported on stdout as one line with its
//! counts, as sat-rs's servers report them (see `shared/report.rs`).

use std::net::SocketAddr;

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use framehub::codec::{FramingConfig, SpacePacketConfig};
use framehub::command::{CommandRouter, KeyFrom};
use framehub::handler::Handler;
use framehub::{Hub, HubConfig, ListenerConfig, Protocol};

#[path = "shared/report.rs"]
mod report;

/// The packet type bit in the first byte of the primary header.
const TYPE_TC: u8 = 0x10;
/// The secondary header flag's place in the packet ID.
const SECONDARY_HEADER: u16 = 0x0800;
const MAX_APID: u16 = 0x07FF;

struct Args {
    cobs: SocketAddr,
    spacepacket: SocketAddr,
    apids: Vec<u16>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        cobs: "127.0.0.1:7301".parse()?,
        spacepacket: "127.0.0.1:7302".parse()?,
        apids: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--cobs" => args.cobs = value()?.parse().context("--cobs ADDR")?,
            "--spacepacket" => args.spacepacket = value()?.parse().context("--spacepacket ADDR")?,
            "--allow-apid" => {
                let apid: u16 = value()?.parse().context("--allow-apid N")?;
                if apid > MAX_APID {
                    bail!("--allow-apid {apid}: an APID has 11 bits (at most {MAX_APID})");
                }
                args.apids.push(apid);
            }
            other => bail!(
                "unknown argument {other:?}; usage: tmtc_server --cobs ADDR --spacepacket ADDR --allow-apid N..."
            ),
        }
    }
    if args.apids.is_empty() {
        bail!("give at least one --allow-apid N: no telecommand would be accepted");
    }
    Ok(args)
}

/// The telemetry answer to a telecommand: the same packet with the type
/// bit cleared (same APID, flags, sequence count, length and data).
fn telemetry_for(telecommand: &[u8]) -> Bytes {
    let mut tm = BytesMut::from(telecommand);
    if let Some(first) = tm.first_mut() {
        *first &= !TYPE_TC;
    }
    tm.freeze()
}

fn spacepacket_handler(apids: &[u16]) -> Handler {
    let mut router = CommandRouter::new(KeyFrom::Apid);
    for &apid in apids {
        router = router.route(
            apid,
            |req| async move { Ok(vec![telemetry_for(&req.payload)]) },
        );
    }
    // The framing lets only allowed telecommands through, so every packet
    // has a route; nothing to answer otherwise.
    router.into_handler()
}

#[path = "shared/logs.rs"]
mod logs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    logs::init();
    // The allowlist is by packet ID: telecommands of each APID, with and
    // without a secondary header.
    let tc_ids = args
        .apids
        .iter()
        .flat_map(|&apid| {
            let id = (u16::from(TYPE_TC) << 8) | apid;
            [id, id | SECONDARY_HEADER]
        })
        .collect();
    let hub = Hub::start_with(
        HubConfig {
            listener: vec![
                ListenerConfig {
                    name: "cobs".into(),
                    bind: Some(args.cobs),
                    framing: FramingConfig::Cobs,
                    protocol: Protocol::Raw,
                    ..ListenerConfig::default()
                },
                ListenerConfig {
                    name: "spacepacket".into(),
                    bind: Some(args.spacepacket),
                    framing: FramingConfig::SpacePacket(SpacePacketConfig {
                        allowed_packet_ids: Some(tc_ids),
                    }),
                    protocol: Protocol::Raw,
                    ..ListenerConfig::default()
                },
            ],
            ..HubConfig::default()
        },
        [
            (
                "cobs",
                Handler::new(|req| async move { Ok(vec![req.payload]) }),
            ),
            ("spacepacket", spacepacket_handler(&args.apids)),
        ],
    )
    .await?;
    for listener in hub.listeners() {
        println!("listening {} {}", listener.name, listener.local_addr);
    }
    report::print_closed_connections(&hub);
    tokio::signal::ctrl_c().await?;
    hub.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn telemetry_clears_only_the_type_bit() {
        let tc = [0x18, 0x02, 0xC0, 0x05, 0x00, 0x01, 0xAB, 0xCD];
        assert_eq!(
            &super::telemetry_for(&tc)[..],
            &[0x08, 0x02, 0xC0, 0x05, 0x00, 0x01, 0xAB, 0xCD]
        );
    }
}

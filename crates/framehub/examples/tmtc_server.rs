//! The sat-rs TCP TMTC servers on framehub: telecommands as COBS frames on
//! one listener and as CCSDS space packets on another, answered with
//! telemetry on the same connection, as sat-rs's PUS stack answers them,
//! so its ground client `pytmtc` (on `tmtccmd`/`spacepackets`) works
//! unchanged.
//!
//! ```sh
//! cargo run -p framehub --example tmtc_server -- \
//!     --cobs 127.0.0.1:7302 --spacepacket 127.0.0.1:7301 --allow-apid 2 --allow-apid 3
//! # stdout: listening cobs 127.0.0.1:7302
//! #         listening spacepacket 127.0.0.1:7301
//! # then, in sat-rs's satrs-example/pytmtc (its tmtc_conf.json: tcp, port 7301):
//! python3 main.py -c tcp -p /test/ping
//! ```
//!
//! The defaults are these addresses: space packets on 7301, where sat-rs's
//! example server listens and pytmtc connects.
//!
//! - A PUS-C telecommand (TC type, secondary header, PUS version 2) of an
//!   allowed APID (`--allow-apid`, repeatable), on either listener, is
//!   answered with PUS-C telemetry of the same APID, each packet with a
//!   CDS short time stamp and a CRC-16 (see `shared/pus.rs`): a ping
//!   TC[17,1] with TM[1,1] acceptance, TM[1,3] start, TM[17,2] ping reply
//!   and TM[1,7] completion, sat-rs's order; any other service, or
//!   another subtype of 17, with TM[1,1] then TM[1,4] start failure; a TC
//!   whose CRC-16 does not match or that is cut short with TM[1,2]
//!   acceptance failure. Verification reports carry the TC's request ID.
//! - Space packets: any other packet of an allowed APID (no secondary
//!   header, or not PUS-C) is answered by the same packet as telemetry
//!   (type bit cleared: same APID, flags, sequence count and data). A
//!   packet of any other APID, and garbage, is skipped and counted
//!   (`unknown_packet_id`, `invalid_header`).
//! - COBS: any other frame is answered by the same bytes, COBS-encoded
//!   between 0x00 delimiters.
//!
//! Every connection that ends is reported on stdout as one line with its
//! counts, as sat-rs's servers report them (see `shared/report.rs`).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use framehub::codec::{FramingConfig, SpacePacketConfig};
use framehub::handler::Handler;
use framehub::{Hub, HubConfig, ListenerConfig, Protocol};

#[path = "shared/pus.rs"]
mod pus;
#[path = "shared/report.rs"]
mod report;

use pus::PusService;

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
        cobs: "127.0.0.1:7302".parse()?,
        spacepacket: "127.0.0.1:7301".parse()?,
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

/// A listener's handler: the PUS answer to a PUS-C telecommand, `other`
/// to any other frame.
fn handler(pus: &Arc<PusService>, other: fn(Bytes) -> Bytes) -> Handler {
    let pus = pus.clone();
    Handler::new(move |req| {
        let answer = pus
            .answer(&req.payload)
            .unwrap_or_else(|| vec![other(req.payload)]);
        async move { Ok(answer) }
    })
    // One request of a connection at a time, as sat-rs's TC source takes
    // them: the telemetry's sequence counts then go out in order.
    .max_in_flight(1)
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
    // One PUS service for both listeners: sat-rs's TCP servers carry the
    // same PUS packets in either framing, numbered by one TM funnel.
    let pus = Arc::new(PusService::new(&args.apids));
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
            ("cobs", handler(&pus, |frame| frame)),
            (
                "spacepacket",
                handler(&pus, |packet| telemetry_for(&packet)),
            ),
        ],
    )
    .await?;
    // Subscribed before the addresses are out: a client that connects
    // and finishes at once must still get its line.
    report::print_closed_connections(&hub);
    for listener in hub.listeners() {
        println!("listening {} {}", listener.name, listener.local_addr);
    }
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

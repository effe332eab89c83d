//! The PUS answers of `tmtc_server`: what sat-rs's PUS stack sends for a
//! PUS-C telecommand (verification reports, service 1, and the ping reply,
//! service 17), as PUS-C telemetry with a CDS short time stamp and a
//! CRC-16, built and read with the `spacepackets` crate.
//!
//! sat-rs's order for a ping TC[17,1]: TM[1,1] acceptance, TM[1,3] start,
//! TM[17,2] ping reply, TM[1,7] completion. A service other than 17 gets
//! TM[1,1] then TM[1,4] (start failure, "service not implemented"), a
//! service 17 subtype other than 1 TM[1,1] then TM[1,4] ("invalid
//! subservice"), as sat-rs's distributor and test service answer them. A
//! PUS-C TC that cannot be read (CRC-16 mismatch, shorter than its header
//! says) gets TM[1,2] acceptance failure: sat-rs drops those with a
//! warning only, which leaves a ground client waiting; ECSS's acceptance
//! check is where such a TC is refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};

use bytes::Bytes;
use spacepackets::ecss::tc::PusTcReader;
use spacepackets::ecss::tm::{PusTmCreator, PusTmSecondaryHeader};
use spacepackets::ecss::{CreatorConfig, MessageTypeId, PusError, PusPacket};
use spacepackets::time::cds::CdsTime;
use spacepackets::{CcsdsPacket, PacketId, PacketSequenceControl, PacketType, SpHeader};

/// A CDS short time stamp (16-bit days, milliseconds of day), as sat-rs
/// stamps its telemetry and pytmtc reads it.
pub const TIMESTAMP_LEN: usize = 7;

/// PUS version 2 (PUS-C) in the high nibble of the first secondary header
/// byte; sat-rs and pytmtc speak PUS-C only.
const PUS_C: u8 = 2;

/// Failure codes of the verification reports: two bytes, group (0: TMTC)
/// then unique ID, as sat-rs's `tmtc_err` result codes.
pub mod code {
    /// sat-rs `INVALID_PUS_SUBSERVICE`; failure data: the subservice.
    pub const INVALID_PUS_SUBSERVICE: u16 = 0x0001;
    /// sat-rs `PUS_SERVICE_NOT_IMPLEMENTED`; failure data: the service.
    pub const PUS_SERVICE_NOT_IMPLEMENTED: u16 = 0x0002;
    /// The TC's CRC-16 does not match its bytes (sat-rs has no code: it
    /// drops such a TC); failure data: none.
    pub const CRC_MISMATCH: u16 = 0x0007;
    /// The TC is shorter than a PUS-C TC or than its header says;
    /// failure data: none.
    pub const MALFORMED: u16 = 0x0008;
}

/// Service 1 (verification) subtypes.
const ACCEPTANCE_SUCCESS: u8 = 1;
const ACCEPTANCE_FAILURE: u8 = 2;
const START_SUCCESS: u8 = 3;
const START_FAILURE: u8 = 4;
const COMPLETION_SUCCESS: u8 = 7;
const VERIFICATION: u8 = 1;
const TEST: u8 = 17;
const PING: u8 = 1;
const PING_REPLY: u8 = 2;

/// The PUS side of the server: the telemetry counters sat-rs's TM funnel
/// keeps (a sequence count per APID, a message type counter per service),
/// shared by every connection.
pub struct PusService {
    /// Fixed at start: the allowed APIDs, so no lock is needed.
    seq_counts: HashMap<u16, AtomicU16>,
    msg_counters: [AtomicU16; 256],
}

impl PusService {
    /// Answers PUS-C telecommands of `apids`.
    pub fn new(apids: &[u16]) -> PusService {
        PusService {
            seq_counts: apids.iter().map(|&a| (a, AtomicU16::new(0))).collect(),
            msg_counters: std::array::from_fn(|_| AtomicU16::new(0)),
        }
    }

    /// The telemetry answering `frame`, or `None` when it is not a PUS-C
    /// telecommand of an allowed APID (a TC with a secondary header whose
    /// PUS version is 2): the caller answers such a frame its own way.
    pub fn answer(&self, frame: &[u8]) -> Option<Vec<Bytes>> {
        let (header, _) = SpHeader::from_be_bytes(frame).ok()?;
        let apid = header.apid().value();
        let pus_version = frame.get(6).map(|b| b >> 4);
        if header.packet_type() != PacketType::Tc
            || !header.sec_header_flag()
            || pus_version != Some(PUS_C)
            || !self.seq_counts.contains_key(&apid)
        {
            return None;
        }
        // The request ID: CCSDS version, packet ID and sequence control of
        // the TC, its first four bytes.
        let request_id = &frame[..4];
        let stamp = now();
        let tm = |service, subtype, data: &[u8]| self.tm(apid, service, subtype, &stamp, data);
        let report = |subtype| tm(VERIFICATION, subtype, request_id);
        let failure = |subtype, code: u16, data: &[u8]| {
            let mut source = request_id.to_vec();
            source.extend_from_slice(&code.to_be_bytes());
            source.extend_from_slice(data);
            tm(VERIFICATION, subtype, &source)
        };
        let tc = match PusTcReader::new(frame) {
            Ok(tc) => tc,
            Err(PusError::ChecksumFailure(_)) => {
                return Some(vec![failure(ACCEPTANCE_FAILURE, code::CRC_MISMATCH, &[])]);
            }
            Err(_) => return Some(vec![failure(ACCEPTANCE_FAILURE, code::MALFORMED, &[])]),
        };
        let (service, subtype) = (tc.service_type_id(), tc.message_subtype_id());
        Some(match (service, subtype) {
            (TEST, PING) => vec![
                report(ACCEPTANCE_SUCCESS),
                report(START_SUCCESS),
                tm(TEST, PING_REPLY, &[]),
                report(COMPLETION_SUCCESS),
            ],
            (TEST, _) => vec![
                report(ACCEPTANCE_SUCCESS),
                failure(START_FAILURE, code::INVALID_PUS_SUBSERVICE, &[subtype]),
            ],
            _ => vec![
                report(ACCEPTANCE_SUCCESS),
                failure(START_FAILURE, code::PUS_SERVICE_NOT_IMPLEMENTED, &[service]),
            ],
        })
    }

    /// One PUS-C TM packet of `apid`, numbered by the counters.
    fn tm(&self, apid: u16, service: u8, subtype: u8, stamp: &[u8], data: &[u8]) -> Bytes {
        // A 14-bit count that wraps, as CCSDS's does.
        let seq = self
            .seq_counts
            .get(&apid)
            .map_or(0, |c| c.fetch_add(1, Ordering::Relaxed))
            & 0x3FFF;
        let msg_counter = self.msg_counters[usize::from(service)].fetch_add(1, Ordering::Relaxed);
        // Unsegmented (0b11 sequence flags); type and secondary header flag
        // are set by the creator.
        let header = SpHeader::new(
            PacketId::from(apid),
            PacketSequenceControl::from(0xC000 | seq),
            0,
        );
        // Destination ID 0, as sat-rs's reporters send it.
        let secondary =
            PusTmSecondaryHeader::new(MessageTypeId::new(service, subtype), msg_counter, 0, stamp);
        let tm = PusTmCreator::new(header, secondary, data, CreatorConfig::default());
        // Writing fails only for a packet over 64 KiB; these are tens of
        // bytes.
        Bytes::from(tm.to_vec().expect("a verification or ping TM fits"))
    }
}

/// Now as a CDS short time stamp. A clock that 16-bit days cannot hold
/// (before 1958, after 2137) leaves the CCSDS epoch, all zeros, rather
/// than drop the answer.
fn now() -> [u8; TIMESTAMP_LEN] {
    let mut stamp = [0; TIMESTAMP_LEN];
    if let Ok(time) = CdsTime::now_with_u16_days() {
        // The buffer has the stamp's length: writing cannot fail.
        let _ = time.write_to_slice(&mut stamp);
    }
    stamp
}

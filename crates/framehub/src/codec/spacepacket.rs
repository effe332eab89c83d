//! The `spacepacket` framing: CCSDS space packets, back to back, as sat-rs's TCP servers read
//! them.
//!
//! The 6-byte primary header holds the version (3 bits, must be 0), the packet ID (packet
//! type, secondary header flag and APID: 13 bits), the sequence flags and count, and a data
//! length field; the whole packet is that field + 7 bytes, so no packet is shorter than 7 bytes
//! and there are no empty frames. A frame is the whole packet, header included.
//!
//! Resynchronisation follows sat-rs: a byte whose version bits are not 0 cannot start a packet
//! and is skipped (one error per run of such bytes); a packet whose ID is not allowed, or that
//! is longer than the maximum, is skipped whole, even when its bytes arrive over many reads.

use bytes::{Buf, Bytes, BytesMut};

use super::{
    CodecError, MAX_PACKET_ID, Skipped, SpacePacketConfig, decoder_methods, encoder_impls,
};

/// Length of the CCSDS primary header.
const HEADER_LEN: usize = 6;

/// Allowed packet IDs as a bitset over the 13-bit ID space (1 KiB): one lookup per packet
/// however long the allowlist is.
type PacketIdSet = Box<[u64; (MAX_PACKET_ID as usize + 1) / 64]>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    /// At a packet boundary (or in garbage looking for one).
    Head,
    /// Dropping the rest of a rejected packet: this many bytes to go.
    Skip(usize),
}

/// The `spacepacket` framing's codec: CCSDS space packets back to back, optionally filtered
/// by packet ID. A packet whose ID is not allowed or that is longer than `max_frame_bytes` is
/// skipped whole, and each run of bytes that cannot start a packet is skipped to resync; both
/// are counted in [`skipped`](Self::skipped) and decoding goes on. A payload to encode must be
/// one whole packet, written as is.
///
/// ```
/// use bytes::BytesMut;
/// use framehub::codec::{SpacePacketCodec, SpacePacketConfig};
/// use tokio_util::codec::Decoder;
///
/// let config = SpacePacketConfig { allowed_packet_ids: Some(vec![0x1801]) };
/// let mut codec = SpacePacketCodec::new(&config, 1024);
/// // A TC for APID 2 (not allowed), then one for APID 1, each with one byte of data.
/// let mut buf = BytesMut::from(&b"\x18\x02\xc0\0\0\0\xaa\x18\x01\xc0\0\0\0\xbb"[..]);
/// assert_eq!(codec.decode(&mut buf)?.as_deref(), Some(&b"\x18\x01\xc0\0\0\0\xbb"[..]));
/// assert_eq!(codec.skipped().unknown_packet_id, 1);
/// # Ok::<(), framehub::codec::CodecError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SpacePacketCodec {
    decoder: SpacePacketDecoder,
    max_frame_bytes: usize,
    skipped: Skipped,
}

impl SpacePacketCodec {
    /// A codec for packets of at most `max_frame_bytes` (header included) whose ID `config`
    /// allows; IDs over 13 bits (which validation refuses) never match.
    pub fn new(config: &SpacePacketConfig, max_frame_bytes: usize) -> Self {
        Self {
            decoder: SpacePacketDecoder::new(config),
            max_frame_bytes,
            skipped: Skipped::default(),
        }
    }

    fn encode_payload(&self, payload: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        encode(payload, dst)
    }
}

decoder_methods!(SpacePacketCodec);
encoder_impls!(SpacePacketCodec);

#[derive(Debug, Clone)]
pub(super) struct SpacePacketDecoder {
    /// `None` accepts every packet ID.
    allowed: Option<PacketIdSet>,
    state: DecodeState,
    /// Inside a run of bytes that cannot start a packet, already reported.
    in_garbage: bool,
}

impl SpacePacketDecoder {
    pub(super) fn new(config: &SpacePacketConfig) -> Self {
        let allowed = config.allowed_packet_ids.as_ref().map(|ids| {
            let mut set: PacketIdSet = Box::new([0; (MAX_PACKET_ID as usize + 1) / 64]);
            // IDs over 13 bits fail validation; here they are left out so they never match.
            for &id in ids.iter().filter(|&&id| id <= MAX_PACKET_ID) {
                set[usize::from(id / 64)] |= 1 << (id % 64);
            }
            set
        });
        Self {
            allowed,
            state: DecodeState::Head,
            in_garbage: false,
        }
    }

    fn is_allowed(&self, packet_id: u16) -> bool {
        self.allowed.as_ref().is_none_or(|set| {
            set.get(usize::from(packet_id / 64))
                .is_some_and(|word| word & (1 << (packet_id % 64)) != 0)
        })
    }

    pub(super) fn decode(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<Bytes>, CodecError> {
        loop {
            if let DecodeState::Skip(remaining) = self.state
                && !self.skip(buf, remaining)
            {
                return Ok(None);
            }
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            if !is_header_start(first) {
                let run = buf
                    .iter()
                    .position(|&b| is_header_start(b))
                    .unwrap_or(buf.len());
                buf.advance(run);
                if !std::mem::replace(&mut self.in_garbage, true) {
                    return Err(CodecError::InvalidHeader);
                }
                continue;
            }
            self.in_garbage = false;
            if buf.len() < HEADER_LEN {
                return Ok(None);
            }
            let packet_id = u16::from_be_bytes([buf[0], buf[1]]) & MAX_PACKET_ID;
            let total = usize::from(u16::from_be_bytes([buf[4], buf[5]])) + HEADER_LEN + 1;
            let rejected = if !self.is_allowed(packet_id) {
                Some(CodecError::UnknownPacketId { packet_id })
            } else if total > max {
                Some(CodecError::Oversize { max })
            } else {
                None
            };
            if let Some(err) = rejected {
                self.skip(buf, total);
                return Err(err);
            }
            if buf.len() < total {
                // Bounded by the maximum (checked above) and by the 16-bit length field.
                buf.reserve(total - buf.len());
                return Ok(None);
            }
            return Ok(Some(buf.split_to(total).freeze()));
        }
    }

    /// Drops up to `remaining` bytes of a rejected packet; true once all of it is gone.
    fn skip(&mut self, buf: &mut BytesMut, remaining: usize) -> bool {
        let now = remaining.min(buf.len());
        buf.advance(now);
        if now < remaining {
            self.state = DecodeState::Skip(remaining - now);
            false
        } else {
            self.state = DecodeState::Head;
            true
        }
    }

    /// A partial packet at end of stream is dropped and reported once; the tail of an already
    /// rejected packet or of a garbage run is dropped silently.
    pub(super) fn decode_eof(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<Bytes>, CodecError> {
        if let Some(frame) = self.decode(buf, max)? {
            return Ok(Some(frame));
        }
        self.state = DecodeState::Head;
        self.in_garbage = false;
        if buf.is_empty() {
            return Ok(None);
        }
        let bytes = buf.len();
        buf.clear();
        Err(CodecError::Truncated { bytes })
    }
}

/// Whether `byte` can be the first byte of a primary header: version bits 0.
fn is_header_start(byte: u8) -> bool {
    byte >> 5 == 0
}

/// Space packets are their own framing: the payload must be exactly one valid packet, which is
/// written as is.
pub(super) fn encode(packet: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
    let [first, _, _, _, len_hi, len_lo, ..] = *packet else {
        return Err(CodecError::Unencodable(
            "a space packet needs at least a 6-byte primary header",
        ));
    };
    if !is_header_start(first) {
        return Err(CodecError::Unencodable("space packet version is not 0"));
    }
    if usize::from(u16::from_be_bytes([len_hi, len_lo])) + HEADER_LEN + 1 != packet.len() {
        return Err(CodecError::Unencodable(
            "space packet length field does not match the payload length",
        ));
    }
    dst.extend_from_slice(packet);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codec::{FrameDecoder, FrameEncoder, FramingConfig};
    use tokio_util::codec::Encoder;

    /// A packet with this 13-bit packet ID and `data_len` bytes of data.
    fn packet(packet_id: u16, data_len: usize) -> Vec<u8> {
        let field = u16::try_from(data_len - 1).unwrap();
        let mut p = Vec::with_capacity(HEADER_LEN + data_len);
        p.extend_from_slice(&packet_id.to_be_bytes());
        p.extend_from_slice(&0xC000u16.to_be_bytes());
        p.extend_from_slice(&field.to_be_bytes());
        p.extend((0..data_len).map(|i| i as u8));
        p
    }

    fn decoder(allowed: Option<Vec<u16>>, max: usize) -> FrameDecoder {
        FrameDecoder::new(
            &FramingConfig::SpacePacket(SpacePacketConfig {
                allowed_packet_ids: allowed,
            }),
            max,
        )
    }

    use crate::codec::test_support::drain;

    fn ok(p: &[u8]) -> Result<Bytes, String> {
        Ok(Bytes::copy_from_slice(p))
    }

    #[test]
    fn packets_across_reads() {
        let mut d = decoder(None, 1024);
        let (a, b) = (packet(0x1801, 1), packet(0x0802, 300));
        let stream = [a.clone(), b.clone()].concat();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for read in stream.chunks(5) {
            buf.extend_from_slice(read);
            frames.extend(drain(&mut d, &mut buf, false));
        }
        assert_eq!(frames, [ok(&a), ok(&b)]);
        assert_eq!(a.len(), 7);
    }

    #[test]
    fn zero_length_input_and_smallest_packet() {
        let mut d = decoder(None, 1024);
        let mut buf = BytesMut::new();
        assert_eq!(drain(&mut d, &mut buf, false), []);
        assert_eq!(drain(&mut d, &mut buf, true), []);
        // Data length field 0 means one byte of data: 7 bytes in all.
        buf.extend_from_slice(&[0x18, 0x01, 0xC0, 0x00, 0x00, 0x00]);
        assert_eq!(drain(&mut d, &mut buf, false), []);
        buf.extend_from_slice(&[0xAA]);
        assert_eq!(
            drain(&mut d, &mut buf, false),
            [ok(&[0x18, 0x01, 0xC0, 0x00, 0x00, 0x00, 0xAA])]
        );
    }

    #[test]
    fn unknown_packet_id_is_skipped_whole_across_reads() {
        let mut d = decoder(Some(vec![0x1801]), 1024);
        let (unknown, known) = (packet(0x0802, 500), packet(0x1801, 20));
        let stream = [unknown, known.clone()].concat();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for read in stream.chunks(64) {
            buf.extend_from_slice(read);
            frames.extend(drain(&mut d, &mut buf, false));
            assert!(buf.len() <= 64);
        }
        assert_eq!(frames, [Err("unknown_packet_id".into()), ok(&known)]);
    }

    #[test]
    fn unknown_packet_id_error_names_the_id() {
        let mut d = decoder(Some(vec![0x1801]), 1024);
        let mut buf = BytesMut::from(&packet(0x0802, 3)[..]);
        assert!(matches!(
            d.decode_next(&mut buf, false),
            Err(CodecError::UnknownPacketId { packet_id: 0x0802 })
        ));
    }

    #[test]
    fn invalid_header_resyncs_once_per_run() {
        let mut d = decoder(None, 1024);
        let good = packet(0x1801, 4);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0xFF; 10]);
        assert_eq!(
            drain(&mut d, &mut buf, false),
            [Err("invalid_header".into())]
        );
        // The run goes on in the next read: not reported again.
        buf.extend_from_slice(&[0xE0, 0x20, 0x40]);
        assert_eq!(drain(&mut d, &mut buf, false), []);
        buf.extend_from_slice(&good);
        buf.extend_from_slice(&[0x20]);
        buf.extend_from_slice(&good);
        assert_eq!(
            drain(&mut d, &mut buf, false),
            [ok(&good), Err("invalid_header".into()), ok(&good)]
        );
    }

    #[test]
    fn oversize_packet_is_skipped_whole() {
        let mut d = decoder(None, 64);
        let (big, small) = (packet(0x1801, 100), packet(0x1801, 10));
        let mut buf = BytesMut::from(&[big, small.clone()].concat()[..]);
        assert_eq!(
            drain(&mut d, &mut buf, false),
            [Err("oversize".into()), ok(&small)]
        );
    }

    #[test]
    fn set_max_frame_bytes() {
        let mut d = decoder(None, 7);
        d.set_max_frame_bytes(16);
        let p = packet(0x1801, 10);
        let mut buf = BytesMut::from(&p[..]);
        assert_eq!(drain(&mut d, &mut buf, false), [ok(&p)]);
    }

    #[test]
    fn eof_inside_a_packet() {
        let mut d = decoder(Some(vec![0x1801]), 1024);
        let mut buf = BytesMut::from(&packet(0x1801, 10)[..8]);
        assert_eq!(drain(&mut d, &mut buf, true), [Err("truncated".into())]);
        // The tail of a skipped packet is not reported twice.
        let mut buf = BytesMut::from(&packet(0x0802, 10)[..8]);
        assert_eq!(
            drain(&mut d, &mut buf, true),
            [Err("unknown_packet_id".into())]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn packet_ids_over_13_bits_never_match() {
        let d = SpacePacketDecoder::new(&SpacePacketConfig {
            allowed_packet_ids: Some(vec![0x3801, 0x0001]),
        });
        assert!(!d.is_allowed(0x1801));
        assert!(d.is_allowed(0x0001));
        assert!(SpacePacketDecoder::new(&SpacePacketConfig::default()).is_allowed(0x1FFF));
    }

    #[test]
    fn encoder_checks_the_packet() {
        let mut e = FrameEncoder::new(
            &FramingConfig::SpacePacket(SpacePacketConfig::default()),
            1024,
        );
        let mut dst = BytesMut::new();
        let p = packet(0x0802, 5);
        e.encode(&p[..], &mut dst).unwrap();
        assert_eq!(&dst[..], &p[..]);
        for bad in [
            &p[..6],
            &p[..p.len() - 1],
            &[0x20, 0, 0, 0, 0, 0, 0][..],
            &[][..],
        ] {
            assert!(matches!(
                e.encode(bad, &mut dst),
                Err(CodecError::Unencodable(_))
            ));
        }
        assert_eq!(dst.len(), p.len());
    }
}

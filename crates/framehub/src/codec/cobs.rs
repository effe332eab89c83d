//! The `cobs` framing: COBS-encoded frames delimited by `0x00`, as sat-rs sends them (a `0x00`
//! before and after each frame).
//!
//! Nothing between two delimiters is not a frame and is skipped, which absorbs sat-rs's doubled
//! delimiters; the encoding of an empty payload (`0x01`) is an empty frame. `Decoder::decode`
//! decodes a frame in place in the read buffer; the connection instead finds frames in place
//! ([`CobsDecoder::next_in`]) and decodes each straight into its read's arena
//! ([`decode_into`]), one copy in all. The maximum applies to the
//! decoded frame; an encoded frame longer than any frame of that size could encode to is
//! discarded up to its delimiter without being buffered.
//!
//! Decoding is hand-written because copying whole runs measured about twice as fast as the
//! `cobs` crate's byte-by-byte loop (a test checks both agree on any input); encoding uses the
//! crate.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::delimited::{DelimitedScanner, Found};
use super::{CodecError, Skipped, cut, decoder_methods, encoder_impls};

/// The `cobs` framing's codec: COBS-encoded frames between `0x00` delimiters, as sat-rs sends
/// them. A frame that does not decode, or decodes to more than `max_frame_bytes`, is skipped
/// and counted in [`skipped`](Self::skipped), and decoding goes on at the next delimiter.
///
/// ```
/// use bytes::BytesMut;
/// use framehub::codec::CobsCodec;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = CobsCodec::new(1024);
/// let mut wire = BytesMut::new();
/// codec.encode(&b"a\0b"[..], &mut wire)?;
/// assert_eq!(&wire[..], b"\0\x02a\x02b\0");
/// wire.extend_from_slice(b"\x05a\0"); // invalid: 0x05 announces four more bytes
/// codec.encode(&b"c"[..], &mut wire)?;
/// assert_eq!(codec.decode(&mut wire)?.as_deref(), Some(&b"a\0b"[..]));
/// assert_eq!(codec.decode(&mut wire)?.as_deref(), Some(&b"c"[..]));
/// assert_eq!(codec.skipped().invalid_cobs, 1);
/// # Ok::<(), framehub::codec::CodecError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CobsCodec {
    decoder: CobsDecoder,
    max_frame_bytes: usize,
    skipped: Skipped,
}

impl CobsCodec {
    /// A codec for frames of at most `max_frame_bytes` once decoded.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            decoder: CobsDecoder::default(),
            max_frame_bytes,
            skipped: Skipped::default(),
        }
    }

    fn encode_payload(&self, payload: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        encode(payload, dst)
    }
}

decoder_methods!(CobsCodec);
encoder_impls!(CobsCodec);

#[derive(Debug, Clone)]
pub(super) struct CobsDecoder {
    scanner: DelimitedScanner,
}

impl Default for CobsDecoder {
    fn default() -> Self {
        Self {
            scanner: DelimitedScanner::new(0),
        }
    }
}

/// Longest COBS encoding of `max` bytes: one code byte per started run of 254 bytes.
fn max_encoded_len(max: usize) -> usize {
    max.saturating_add(max.div_ceil(254).max(1))
}

impl CobsDecoder {
    pub(super) fn decode(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<Bytes>, CodecError> {
        let mut pos = 0;
        let found = self.next_in(buf, &mut pos, max);
        match cut(buf, pos, found)? {
            Some(encoded) => decode_frame(encoded, max).map(Some),
            None => Ok(None),
        }
    }

    /// Bytes after the last `0x00` at end of stream are a frame that never ended: dropped and
    /// reported once (sat-rs always terminates its frames).
    pub(super) fn decode_eof(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<Bytes>, CodecError> {
        let mut pos = 0;
        let found = self.next_in_eof(buf, &mut pos, max);
        match cut(buf, pos, found)? {
            Some(encoded) => decode_frame(encoded, max).map(Some),
            None => Ok(None),
        }
    }

    /// The next non-empty *encoded* frame of `buf[*pos..]` (without delimiters) as a range of
    /// `buf`, `*pos` moved past it and its delimiter; see [`decode_into`] for the decoding.
    pub(super) fn next_in(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
        max: usize,
    ) -> Result<Option<Range<usize>>, CodecError> {
        let limit = max_encoded_len(max);
        loop {
            match self.scanner.scan_at(buf, pos, limit) {
                Found::Frame(encoded) if encoded.is_empty() => continue,
                Found::Frame(encoded) => return Ok(Some(encoded)),
                Found::Oversize => return Err(CodecError::Oversize { max }),
                Found::Pending => return Ok(None),
            }
        }
    }

    /// The in-place form of [`Self::decode_eof`].
    pub(super) fn next_in_eof(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
        max: usize,
    ) -> Result<Option<Range<usize>>, CodecError> {
        if let Some(frame) = self.next_in(buf, pos, max)? {
            return Ok(Some(frame));
        }
        let bytes = buf.len() - *pos;
        *pos = buf.len();
        if self.scanner.finish() || bytes == 0 {
            return Ok(None);
        }
        Err(CodecError::Truncated { bytes })
    }
}

/// Decodes one encoded frame (as [`CobsDecoder::next_in`] finds them) onto the end of `out`.
/// On an invalid or oversize frame `out` is left as it was.
pub(crate) fn decode_into(
    encoded: &[u8],
    out: &mut BytesMut,
    max: usize,
) -> Result<(), CodecError> {
    let start = out.len();
    let mut read = 0;
    while read < encoded.len() {
        let code = usize::from(encoded[read]);
        let end = read + code;
        // A zero code cannot occur between delimiters; refusing it also rules out a loop.
        if code == 0 || end > encoded.len() {
            out.truncate(start);
            return Err(CodecError::InvalidCobs);
        }
        out.extend_from_slice(&encoded[read + 1..end]);
        read = end;
        // Every run but a full one (0xFF) and the last stands for a zero byte.
        if code != 0xFF && read < encoded.len() {
            out.put_u8(0);
        }
    }
    // The encoded bound lets through frames whose zeros cost no overhead, up to a few bytes over.
    if out.len() - start > max {
        out.truncate(start);
        return Err(CodecError::Oversize { max });
    }
    Ok(())
}

fn decode_frame(mut encoded: BytesMut, max: usize) -> Result<Bytes, CodecError> {
    let len = decode_in_place(&mut encoded).ok_or(CodecError::InvalidCobs)?;
    // The encoded bound lets through frames whose zeros cost no overhead, up to a few bytes over.
    if len > max {
        return Err(CodecError::Oversize { max });
    }
    encoded.truncate(len);
    Ok(encoded.freeze())
}

/// Decodes one COBS frame (without delimiters) in place and returns the decoded length, or
/// `None` if a code byte points past the end. Same result as `cobs::decode_in_place`, but
/// copies whole runs instead of byte by byte.
fn decode_in_place(frame: &mut [u8]) -> Option<usize> {
    let (mut read, mut write) = (0, 0);
    while read < frame.len() {
        let code = usize::from(frame[read]);
        let end = read + code;
        // A zero code cannot occur between delimiters; refusing it also rules out a loop.
        if code == 0 || end > frame.len() {
            return None;
        }
        frame.copy_within(read + 1..end, write);
        write += code - 1;
        read = end;
        // Every run but a full one (0xFF) and the last stands for a zero byte.
        if code != 0xFF && read < frame.len() {
            frame[write] = 0;
            write += 1;
        }
    }
    Some(write)
}

pub(super) fn encode(payload: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
    let start = dst.len();
    dst.resize(start + 1 + ::cobs::max_encoding_length(payload.len()), 0);
    // Cannot panic: the destination was sized with the crate's own worst case.
    let written = ::cobs::encode(payload, &mut dst[start + 1..]);
    dst.truncate(start + 1 + written);
    dst.put_u8(0);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codec::{FrameDecoder, FrameEncoder, FramingConfig};
    use tokio_util::codec::Encoder;

    use crate::codec::test_support::drain;

    fn ok(s: &[u8]) -> Result<Bytes, String> {
        Ok(Bytes::copy_from_slice(s))
    }

    fn wire(frames: &[&[u8]]) -> BytesMut {
        let mut e = FrameEncoder::new(&FramingConfig::Cobs, 1 << 20);
        let mut dst = BytesMut::new();
        for f in frames {
            e.encode(*f, &mut dst).unwrap();
        }
        dst
    }

    #[test]
    fn sat_rs_style_frames() {
        let mut d = FrameDecoder::new(&FramingConfig::Cobs, 1024);
        let mut buf = wire(&[b"\x01\x02\x00\x03", b"tc", &[0u8; 300]]);
        assert_eq!(&buf[..8], b"\0\x03\x01\x02\x02\x03\0\0");
        assert_eq!(
            drain(&mut d, &mut buf, false),
            [ok(b"\x01\x02\x00\x03"), ok(b"tc"), ok(&[0u8; 300])]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn zero_length_input_and_frames() {
        let mut d = FrameDecoder::new(&FramingConfig::Cobs, 16);
        let mut buf = BytesMut::new();
        assert_eq!(drain(&mut d, &mut buf, true), []);
        // Runs of delimiters carry no frame; an encoded empty payload is an empty frame.
        buf.extend_from_slice(b"\0\0\0\x01\0\0");
        assert_eq!(drain(&mut d, &mut buf, true), [ok(b"")]);
        assert_eq!(&wire(&[b""])[..], b"\0\x01\0");
    }

    #[test]
    fn invalid_frame_is_dropped_and_stream_resyncs() {
        let mut d = FrameDecoder::new(&FramingConfig::Cobs, 16);
        // 0x05 announces four more bytes but the frame ends after one.
        let mut buf = BytesMut::from(&b"\0\x05a\0\x02b\0"[..]);
        assert_eq!(
            drain(&mut d, &mut buf, false),
            [Err("invalid_cobs".into()), ok(b"b")]
        );
    }

    #[test]
    fn oversize_frame_is_discarded_across_reads() {
        let mut d = FrameDecoder::new(&FramingConfig::Cobs, 8);
        let mut buf = wire(&[b"12345678", b"123456789"]);
        // Cut after ten encoded bytes of the long frame: one more than any 8-byte frame needs.
        let tail = buf.split_off(22);
        assert_eq!(
            drain(&mut d, &mut buf, false),
            [ok(b"12345678"), Err("oversize".into())]
        );
        buf.extend_from_slice(&tail);
        buf.extend_from_slice(&wire(&[b"ok"]));
        assert_eq!(drain(&mut d, &mut buf, false), [ok(b"ok")]);
    }

    #[test]
    fn decoded_size_is_checked_too() {
        // 301 zeros encode to 302 bytes, within the encoded bound for 300 (302).
        let mut d = FrameDecoder::new(&FramingConfig::Cobs, 300);
        let mut buf = wire(&[&[0u8; 300], &[0u8; 301], b"ok"]);
        assert_eq!(
            drain(&mut d, &mut buf, false),
            [ok(&[0u8; 300]), Err("oversize".into()), ok(b"ok")]
        );
    }

    #[test]
    fn unterminated_frame_at_eof() {
        let mut d = FrameDecoder::new(&FramingConfig::Cobs, 8);
        let mut buf = BytesMut::from(&b"\0\x02a\0\x02b"[..]);
        assert_eq!(
            drain(&mut d, &mut buf, true),
            [ok(b"a"), Err("truncated".into())]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn set_max_frame_bytes() {
        let mut d = FrameDecoder::new(&FramingConfig::Cobs, 2);
        let mut buf = wire(&[b"abc", b"abc"]);
        assert_eq!(drain(&mut d, &mut buf, false)[0], Err("oversize".into()));
        let mut d = FrameDecoder::new(&FramingConfig::Cobs, 2);
        d.set_max_frame_bytes(3);
        let mut buf = wire(&[b"abc"]);
        assert_eq!(drain(&mut d, &mut buf, false), [ok(b"abc")]);
    }

    proptest::proptest! {
        /// The hand-written decoder (about twice as fast) agrees with the `cobs` crate on any
        /// frame, valid or not.
        #[test]
        fn decode_in_place_matches_the_cobs_crate(
            frame in proptest::collection::vec(
                proptest::prop_oneof![1u8..=8, 250u8..=255, 1u8..=255],
                1..700,
            ),
        ) {
            let (mut ours, mut theirs) = (frame.clone(), frame);
            match (decode_in_place(&mut ours), ::cobs::decode_in_place(&mut theirs)) {
                (Some(a), Ok(b)) => {
                    proptest::prop_assert_eq!(a, b);
                    proptest::prop_assert_eq!(&ours[..a], &theirs[..b]);
                }
                (None, Err(_)) => {}
                (a, b) => proptest::prop_assert!(false, "ours {:?}, cobs crate {:?}", a, b),
            }
        }

        /// Decoding onto the end of an arena (the connection's in-place path) gives the same
        /// payload or error as decoding a cut-out frame, and leaves the arena as it was on an
        /// error.
        #[test]
        fn decode_into_matches_decoding_a_cut_frame(
            frame in proptest::collection::vec(
                proptest::prop_oneof![1u8..=8, 250u8..=255, 1u8..=255],
                1..700,
            ),
            max in 0usize..700,
        ) {
            let mut arena = BytesMut::from(&b"before"[..]);
            let into = decode_into(&frame, &mut arena, max);
            let cut = decode_frame(BytesMut::from(&frame[..]), max);
            match (into, cut) {
                (Ok(()), Ok(payload)) => proptest::prop_assert_eq!(&arena[6..], &payload[..]),
                (Err(a), Err(b)) => {
                    proptest::prop_assert_eq!(a.to_string(), b.to_string());
                    proptest::prop_assert_eq!(&arena[..], b"before");
                }
                (a, b) => proptest::prop_assert!(false, "into {:?}, cut {:?}", a, b),
            }
        }
    }

    #[test]
    fn encoded_bound() {
        assert_eq!(max_encoded_len(0), 1);
        assert_eq!(max_encoded_len(254), 255);
        assert_eq!(max_encoded_len(255), 257);
        assert_eq!(max_encoded_len(usize::MAX), usize::MAX);
        for len in [0, 1, 253, 254, 255, 508, 509, 1000] {
            assert_eq!(max_encoded_len(len), ::cobs::max_encoding_length(len));
        }
    }
}

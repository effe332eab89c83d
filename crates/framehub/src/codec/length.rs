//! The `length` framing: each frame is preceded by its length in 1, 2, 4 or 8 bytes, big or
//! little endian (NinjaTCP: 4 bytes, big endian).
//!
//! A prefix over the maximum is fatal: nothing marks where the next frame starts, so the
//! framing of the rest of the stream is lost. The announced length is never reserved up front
//! (a `u32::MAX` prefix must not allocate 4 GiB); at most [`RESERVE_CAP`] bytes are reserved
//! per call and the buffer otherwise grows with what actually arrives.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{CodecError, Endian, LengthPrefix, Skipped, decoder_methods, encoder_impls};

/// Most bytes reserved ahead of a frame's data: enough for one large read, never the whole
/// announced length.
const RESERVE_CAP: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    /// Waiting for a whole prefix.
    Head,
    /// The prefix was read; waiting for this many bytes of data.
    Data(usize),
}

/// The `length` framing's codec: each frame is preceded by its length in 1, 2, 4 or 8 bytes,
/// big or little endian. Nothing is ever skipped: a prefix over `max_frame_bytes` loses the
/// framing, so it is an `Err` ([`CodecError::LengthOversize`]) and a `FramedRead` ends there.
///
/// ```
/// use bytes::BytesMut;
/// use framehub::codec::{Endian, LengthCodec, LengthPrefix};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// // NinjaTCP: 4 bytes, big endian.
/// let mut codec = LengthCodec::new(LengthPrefix::default(), 1024);
/// let mut wire = BytesMut::new();
/// codec.encode(&b"hello"[..], &mut wire)?;
/// assert_eq!(&wire[..], b"\0\0\0\x05hello");
/// assert_eq!(codec.decode(&mut wire)?.as_deref(), Some(&b"hello"[..]));
///
/// let mut small = LengthCodec::new(LengthPrefix { bytes: 2, endian: Endian::Little }, 4);
/// let mut wire = BytesMut::from(&b"\x05\0hello"[..]);
/// assert!(small.decode(&mut wire).unwrap_err().is_fatal());
/// # Ok::<(), framehub::codec::CodecError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LengthCodec {
    decoder: LengthDecoder,
    prefix: LengthPrefix,
    max_frame_bytes: usize,
    skipped: Skipped,
}

impl LengthCodec {
    /// A codec for frames of at most `max_frame_bytes` behind a `prefix`. A prefix width
    /// outside 1..=8 (which [`crate::codec::FramingConfig::validate`] refuses) is clamped.
    pub fn new(prefix: LengthPrefix, max_frame_bytes: usize) -> Self {
        Self {
            decoder: LengthDecoder::new(prefix),
            prefix,
            max_frame_bytes,
            skipped: Skipped::default(),
        }
    }

    fn encode_payload(&self, payload: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        encode(self.prefix, payload, dst)
    }
}

decoder_methods!(LengthCodec);
encoder_impls!(LengthCodec);

#[derive(Debug, Clone)]
pub(super) struct LengthDecoder {
    width: usize,
    endian: Endian,
    state: DecodeState,
}

impl LengthDecoder {
    pub(super) fn new(prefix: LengthPrefix) -> Self {
        Self {
            width: prefix_width(prefix),
            endian: prefix.endian,
            state: DecodeState::Head,
        }
    }

    pub(super) fn decode(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<Bytes>, CodecError> {
        let len = match self.state {
            DecodeState::Data(len) => len,
            DecodeState::Head => {
                if buf.len() < self.width {
                    return Ok(None);
                }
                let announced = match self.endian {
                    Endian::Big => buf.get_uint(self.width),
                    Endian::Little => buf.get_uint_le(self.width),
                };
                let len = usize::try_from(announced)
                    .ok()
                    .filter(|&len| len <= max)
                    .ok_or(CodecError::LengthOversize { announced, max })?;
                self.state = DecodeState::Data(len);
                len
            }
        };
        if buf.len() < len {
            buf.reserve((len - buf.len()).min(RESERVE_CAP));
            return Ok(None);
        }
        self.state = DecodeState::Head;
        Ok(Some(buf.split_to(len).freeze()))
    }

    /// A partial frame at end of stream is dropped and reported once.
    pub(super) fn decode_eof(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<Bytes>, CodecError> {
        if let Some(frame) = self.decode(buf, max)? {
            return Ok(Some(frame));
        }
        let in_frame = self.state != DecodeState::Head;
        self.state = DecodeState::Head;
        if buf.is_empty() && !in_frame {
            return Ok(None);
        }
        let bytes = buf.len();
        buf.clear();
        Err(CodecError::Truncated { bytes })
    }
}

/// The configured width, clamped to what a `u64` holds so an unvalidated config cannot panic.
fn prefix_width(prefix: LengthPrefix) -> usize {
    usize::from(prefix.bytes.clamp(1, 8))
}

pub(super) fn encode(
    prefix: LengthPrefix,
    payload: &[u8],
    dst: &mut BytesMut,
) -> Result<(), CodecError> {
    let width = prefix_width(prefix);
    let expressible = u64::MAX >> (64 - 8 * width);
    let len = u64::try_from(payload.len())
        .ok()
        .filter(|&len| len <= expressible)
        .ok_or(CodecError::Oversize {
            // Saturates only on 32-bit targets, where no payload can reach the prefix limit.
            max: usize::try_from(expressible).unwrap_or(usize::MAX),
        })?;
    dst.reserve(width + payload.len());
    match prefix.endian {
        Endian::Big => dst.put_uint(len, width),
        Endian::Little => dst.put_uint_le(len, width),
    }
    dst.put_slice(payload);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codec::{FrameDecoder, FrameEncoder, FramingConfig};
    use tokio_util::codec::{Decoder, Encoder};

    fn config(bytes: u8, endian: Endian) -> FramingConfig {
        FramingConfig::Length(LengthPrefix { bytes, endian })
    }

    fn ninja(max: usize) -> FrameDecoder {
        FrameDecoder::new(&config(4, Endian::Big), max)
    }

    #[test]
    fn ninjatcp_frames_across_reads() {
        let mut d = ninja(64);
        let mut buf = BytesMut::from(&b"\0\0\0\x05hel"[..]);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"lo\0\0");
        assert_eq!(d.decode(&mut buf).unwrap().as_deref(), Some(&b"hello"[..]));
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\0\x01!");
        assert_eq!(d.decode(&mut buf).unwrap().as_deref(), Some(&b"!"[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn zero_length_frames_and_input() {
        let mut d = ninja(64);
        let mut buf = BytesMut::new();
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert_eq!(d.decode_eof(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\0\0\0\0\0\0\0\0");
        assert_eq!(d.decode(&mut buf).unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(d.decode(&mut buf).unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(d.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn every_width_and_endian() {
        let cases: [(u8, Endian, &[u8]); 6] = [
            (1, Endian::Big, b"\x03abc"),
            (2, Endian::Big, b"\0\x03abc"),
            (2, Endian::Little, b"\x03\0abc"),
            (4, Endian::Little, b"\x03\0\0\0abc"),
            (8, Endian::Big, b"\0\0\0\0\0\0\0\x03abc"),
            (8, Endian::Little, b"\x03\0\0\0\0\0\0\0abc"),
        ];
        for (bytes, endian, wire) in cases {
            let framing = config(bytes, endian);
            let mut d = FrameDecoder::new(&framing, 64);
            let mut buf = BytesMut::from(wire);
            assert_eq!(d.decode(&mut buf).unwrap().as_deref(), Some(&b"abc"[..]));
            let mut encoded = BytesMut::new();
            FrameEncoder::new(&framing, 64)
                .encode(&b"abc"[..], &mut encoded)
                .unwrap();
            assert_eq!(&encoded[..], wire, "{bytes} {endian:?}");
        }
    }

    #[test]
    fn oversize_is_fatal() {
        let mut d = ninja(4);
        let mut buf = BytesMut::from(&b"\0\0\0\x04abcd\0\0\0\x05abcde"[..]);
        assert_eq!(d.decode(&mut buf).unwrap().as_deref(), Some(&b"abcd"[..]));
        let err = d.decode(&mut buf).unwrap_err();
        assert!(err.is_fatal());
        assert!(matches!(
            err,
            CodecError::LengthOversize {
                announced: 5,
                max: 4
            }
        ));
    }

    #[test]
    fn four_gib_prefix_does_not_allocate() {
        let mut d = ninja(1 << 20);
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&u32::MAX.to_be_bytes());
        let err = d.decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            CodecError::LengthOversize { announced, .. } if announced == u64::from(u32::MAX)
        ));
        assert!(err.is_fatal());
        assert!(buf.capacity() <= 64, "capacity {}", buf.capacity());
    }

    #[test]
    fn large_allowed_frame_reserves_a_bounded_amount() {
        let mut d = ninja(usize::MAX);
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert!(
            buf.capacity() <= RESERVE_CAP + 64,
            "capacity {}",
            buf.capacity()
        );
    }

    #[test]
    fn partial_frame_at_eof_is_reported_once() {
        let mut d = ninja(64);
        let mut buf = BytesMut::from(&b"\0\0\0\x05hel"[..]);
        assert!(matches!(
            d.decode_next(&mut buf, true),
            Err(CodecError::Truncated { bytes: 3 })
        ));
        assert!(buf.is_empty());
        assert_eq!(d.decode_next(&mut buf, true).unwrap(), None);
        // A partial prefix too.
        buf.extend_from_slice(b"\0\0");
        assert!(matches!(
            d.decode_next(&mut buf, true),
            Err(CodecError::Truncated { bytes: 2 })
        ));
        assert_eq!(d.decode_next(&mut buf, true).unwrap(), None);
    }

    #[test]
    fn set_max_frame_bytes_applies_at_the_next_prefix() {
        let mut d = ninja(2);
        let mut buf = BytesMut::from(&b"\0\0\0\x03abc"[..]);
        assert!(d.decode(&mut buf).is_err_and(|e| e.is_fatal()));
        let mut d = ninja(2);
        d.set_max_frame_bytes(3);
        let mut buf = BytesMut::from(&b"\0\0\0\x03abc"[..]);
        assert_eq!(d.decode(&mut buf).unwrap().as_deref(), Some(&b"abc"[..]));
    }

    #[test]
    fn encoder_refuses_what_the_prefix_cannot_express() {
        let mut e = FrameEncoder::new(&config(1, Endian::Big), 1024);
        let mut dst = BytesMut::new();
        e.encode(&[7u8; 255][..], &mut dst).unwrap();
        assert_eq!(dst.len(), 256);
        assert!(matches!(
            e.encode(&[7u8; 256][..], &mut dst),
            Err(CodecError::Oversize { max: 255 })
        ));
        assert_eq!(dst.len(), 256);
    }
}

//! The `chunk` framing: each socket read is one frame, as the Ark TCP server stage treats every
//! `recv()` as a packet.
//!
//! The connection decodes after every read, so whatever is buffered is that read. A read longer
//! than the maximum is split into frames of `max` bytes and a shorter last one; nothing is
//! dropped. An empty buffer is no frame (TCP has no empty reads). With a maximum of 0 no byte
//! can be delivered, so a non-empty buffer is dropped with one `Oversize` instead of looping on
//! empty frames.

use bytes::{Bytes, BytesMut};

use super::{CodecError, Skipped, decoder_methods, encoder_impls};

/// The `chunk` framing's codec: each read is a frame of at most `max_frame_bytes` (a longer
/// read is split), and a payload is written as is.
///
/// With `FramedRead`, a frame is whatever the socket read returned, so this suits protocols
/// that are one message per `write` on a quiet link (as the Ark stage's are) and nothing else.
///
/// ```
/// use bytes::BytesMut;
/// use framehub::codec::ChunkCodec;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = ChunkCodec::new(4);
/// let mut buf = BytesMut::new();
/// codec.encode(&b"abcdef"[..], &mut buf).unwrap_err(); // over the maximum: refused
/// codec.encode(&b"abc"[..], &mut buf)?;
/// assert_eq!(codec.decode(&mut buf)?.as_deref(), Some(&b"abc"[..]));
/// buf.extend_from_slice(b"012345");
/// assert_eq!(codec.decode(&mut buf)?.as_deref(), Some(&b"0123"[..]));
/// assert_eq!(codec.decode(&mut buf)?.as_deref(), Some(&b"45"[..]));
/// # Ok::<(), framehub::codec::CodecError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ChunkCodec {
    decoder: ChunkDecoder,
    max_frame_bytes: usize,
    skipped: Skipped,
}

impl ChunkCodec {
    /// A codec whose frames hold at most `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            decoder: ChunkDecoder,
            max_frame_bytes,
            skipped: Skipped::default(),
        }
    }

    fn encode_payload(&self, payload: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        encode(payload, dst)
    }
}

decoder_methods!(ChunkCodec);
encoder_impls!(ChunkCodec);

/// No state: a read is complete as soon as it is buffered.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChunkDecoder;

impl ChunkDecoder {
    pub(super) fn decode(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<Bytes>, CodecError> {
        if buf.is_empty() {
            return Ok(None);
        }
        if max == 0 {
            buf.clear();
            return Err(CodecError::Oversize { max });
        }
        let len = buf.len().min(max);
        Ok(Some(buf.split_to(len).freeze()))
    }

    pub(super) fn decode_eof(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<Bytes>, CodecError> {
        self.decode(buf, max)
    }
}

pub(super) fn encode(payload: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
    dst.extend_from_slice(payload);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::codec::{CodecError, FrameDecoder, FrameEncoder, FramingConfig};
    use bytes::BytesMut;
    use tokio_util::codec::{Decoder, Encoder};

    #[test]
    fn each_read_is_a_frame() {
        let mut d = FrameDecoder::new(&FramingConfig::Chunk, 64);
        let mut buf = BytesMut::new();
        for read in [&b"first read"[..], b"\0\n\r", b"x"] {
            buf.extend_from_slice(read);
            assert_eq!(d.decode(&mut buf).unwrap().as_deref(), Some(read));
            assert_eq!(d.decode(&mut buf).unwrap(), None);
        }
    }

    #[test]
    fn zero_length_input() {
        let mut d = FrameDecoder::new(&FramingConfig::Chunk, 64);
        let mut buf = BytesMut::new();
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert_eq!(d.decode_eof(&mut buf).unwrap(), None);
        let mut wire = BytesMut::new();
        FrameEncoder::new(&FramingConfig::Chunk, 64)
            .encode(&b""[..], &mut wire)
            .unwrap();
        assert!(wire.is_empty());
    }

    #[test]
    fn long_read_is_split_at_the_maximum() {
        let mut d = FrameDecoder::new(&FramingConfig::Chunk, 4);
        let mut buf = BytesMut::from(&b"0123456789"[..]);
        assert_eq!(d.decode(&mut buf).unwrap().as_deref(), Some(&b"0123"[..]));
        assert_eq!(d.decode(&mut buf).unwrap().as_deref(), Some(&b"4567"[..]));
        d.set_max_frame_bytes(1);
        assert_eq!(d.decode_eof(&mut buf).unwrap().as_deref(), Some(&b"8"[..]));
        assert_eq!(d.decode_eof(&mut buf).unwrap().as_deref(), Some(&b"9"[..]));
        assert_eq!(d.decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn zero_maximum_drops_instead_of_looping() {
        let mut d = FrameDecoder::new(&FramingConfig::Chunk, 0);
        let mut buf = BytesMut::from(&b"abc"[..]);
        assert!(matches!(
            d.decode_next(&mut buf, false),
            Err(CodecError::Oversize { max: 0 })
        ));
        assert_eq!(d.decode_next(&mut buf, false).unwrap(), None);
    }
}

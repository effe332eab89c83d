//! The `chunk` framing: each socket read is one frame, as the Ark TCP server stage treats every
//! `recv()` as a packet.
//!
//! The connection decodes after every read, so whatever is buffered is that read. A read longer
//! than the maximum is split into frames of `max` bytes and a shorter last one; nothing is
//! dropped. An empty buffer is no frame (TCP has no empty reads). With a maximum of 0 no byte
//! can be delivered, so a non-empty buffer is dropped with one `Oversize` instead of looping on
//! empty frames.

use bytes::{Bytes, BytesMut};

use super::CodecError;

/// Also serves as `decode_eof`: a read is complete as soon as it is buffered.
pub(super) fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, CodecError> {
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
            d.decode(&mut buf),
            Err(CodecError::Oversize { max: 0 })
        ));
        assert_eq!(d.decode(&mut buf).unwrap(), None);
    }
}

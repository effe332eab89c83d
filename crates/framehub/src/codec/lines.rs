//! The `lines` framing: frames end at `\n`, a trailing `\r` is stripped.
//!
//! The maximum applies to the frame as delivered (without `\r\n`). An empty line is an empty
//! frame: the protocol layer decides to skip it. At end of stream a last line without its `\n`
//! is still a frame, as with tokio's `LinesCodec`: a sender that closes after
//! `printf '{...}'` has said what it meant to.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::delimited::{DelimitedScanner, Found};
use super::{CodecError, Skipped, cut, decoder_methods, encoder_impls};

/// The `lines` framing's codec: frames end at `\n`, a trailing `\r` is stripped, and a line
/// over `max_frame_bytes` is discarded up to its newline, counted in
/// [`skipped`](Self::skipped), while decoding goes on (as tokio-util's `LinesCodec` with a
/// maximum does). Frames are bytes, not checked for UTF-8.
///
/// ```
/// use framehub::codec::LinesCodec;
/// use futures_util::StreamExt;
/// use tokio_util::codec::FramedRead;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let input = &b"one\nthis line is far too long\ntwo\r\nthree"[..];
/// let mut lines = FramedRead::new(input, LinesCodec::new(8));
/// let mut frames = Vec::new();
/// while let Some(line) = lines.next().await {
///     frames.push(line.expect("only a lost framing is an error"));
/// }
/// assert_eq!(frames, ["one", "two", "three"]);
/// assert_eq!(lines.decoder().skipped().oversize, 1);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LinesCodec {
    decoder: LinesDecoder,
    max_frame_bytes: usize,
    skipped: Skipped,
}

impl LinesCodec {
    /// A codec for lines of at most `max_frame_bytes` (without `\r\n`).
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            decoder: LinesDecoder::default(),
            max_frame_bytes,
            skipped: Skipped::default(),
        }
    }

    fn encode_payload(&self, payload: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        encode(payload, dst)
    }
}

decoder_methods!(LinesCodec);
encoder_impls!(LinesCodec);

#[derive(Debug, Clone)]
pub(super) struct LinesDecoder {
    scanner: DelimitedScanner,
}

impl Default for LinesDecoder {
    fn default() -> Self {
        Self {
            scanner: DelimitedScanner::new(b'\n'),
        }
    }
}

impl LinesDecoder {
    pub(super) fn decode(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<Bytes>, CodecError> {
        let mut pos = 0;
        let found = self.next_in(buf, &mut pos, max);
        Ok(cut(buf, pos, found)?.map(BytesMut::freeze))
    }

    pub(super) fn decode_eof(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<Bytes>, CodecError> {
        let mut pos = 0;
        let found = self.next_in_eof(buf, &mut pos, max);
        Ok(cut(buf, pos, found)?.map(BytesMut::freeze))
    }

    /// The in-place form of [`Self::decode`]: the next line of `buf[*pos..]` as a range of
    /// `buf`, `*pos` moved past what was consumed (see [`DelimitedScanner::scan_at`]).
    pub(super) fn next_in(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
        max: usize,
    ) -> Result<Option<Range<usize>>, CodecError> {
        // One more byte than the maximum, for the `\r` that is stripped afterwards.
        match self.scanner.scan_at(buf, pos, max.saturating_add(1)) {
            Found::Frame(line) => finish_line(buf, line, max).map(Some),
            Found::Oversize => Err(CodecError::Oversize { max }),
            Found::Pending => Ok(None),
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
        let rest = &buf[*pos..];
        let line = *pos..buf.len();
        *pos = buf.len();
        if self.scanner.finish() || rest.is_empty() || rest == b"\r" {
            return Ok(None);
        }
        // `next_in` returned `Pending`, so at most `max + 1` bytes are left.
        finish_line(buf, line, max).map(Some)
    }
}

/// Strips the `\r` of `\r\n` and checks the maximum.
fn finish_line(buf: &[u8], mut line: Range<usize>, max: usize) -> Result<Range<usize>, CodecError> {
    if line.end > line.start && buf[line.end - 1] == b'\r' {
        line.end -= 1;
    }
    if line.len() > max {
        return Err(CodecError::Oversize { max });
    }
    Ok(line)
}

pub(super) fn encode(payload: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
    if memchr::memchr(b'\n', payload).is_some() {
        return Err(CodecError::Unencodable(
            "a lines payload cannot contain '\\n'",
        ));
    }
    if payload.last() == Some(&b'\r') {
        return Err(CodecError::Unencodable(
            "a lines payload cannot end with '\\r' (it would be stripped)",
        ));
    }
    dst.reserve(payload.len() + 1);
    dst.put_slice(payload);
    dst.put_u8(b'\n');
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codec::{FrameDecoder, FrameEncoder, FramingConfig};
    use tokio_util::codec::Encoder;

    fn decoder(max: usize) -> FrameDecoder {
        FrameDecoder::new(&FramingConfig::Lines, max)
    }

    /// Runs the connection's loop: every frame, and the reason of every non-fatal error.
    use crate::codec::test_support::drain;

    fn ok(s: &str) -> Result<Bytes, String> {
        Ok(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn frames_crlf_and_empty_lines() {
        let mut d = decoder(64);
        let mut buf = BytesMut::from(&b"one\ntwo\r\n\n\r\nthree"[..]);
        assert_eq!(
            drain(&mut d, &mut buf, false),
            [ok("one"), ok("two"), ok(""), ok("")]
        );
        assert_eq!(&buf[..], b"three");
        buf.extend_from_slice(b" and more\n");
        assert_eq!(drain(&mut d, &mut buf, false), [ok("three and more")]);
        assert!(buf.is_empty());
    }

    #[test]
    fn zero_length_input() {
        let mut d = decoder(64);
        let mut buf = BytesMut::new();
        assert_eq!(drain(&mut d, &mut buf, false), []);
        assert_eq!(drain(&mut d, &mut buf, true), []);
        // A lone "\r" at EOF is not a line, as with tokio's LinesCodec.
        buf.extend_from_slice(b"\r");
        assert_eq!(drain(&mut d, &mut buf, true), []);
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_line_at_eof_is_a_frame() {
        let mut d = decoder(64);
        let mut buf = BytesMut::from(&b"a\nlast\r"[..]);
        assert_eq!(drain(&mut d, &mut buf, true), [ok("a"), ok("last")]);
        assert!(buf.is_empty());
    }

    #[test]
    fn maximum_is_counted_without_crlf() {
        let mut d = decoder(4);
        let mut buf = BytesMut::from(&b"1234\r\n1234\n12345\n1234\r"[..]);
        assert_eq!(
            drain(&mut d, &mut buf, true),
            [ok("1234"), ok("1234"), Err("oversize".into()), ok("1234")]
        );
        let mut buf = BytesMut::from(&b"12345"[..]);
        assert_eq!(drain(&mut d, &mut buf, true), [Err("oversize".into())]);
    }

    #[test]
    fn oversize_line_is_discarded_and_stream_goes_on() {
        let mut d = decoder(8);
        let mut buf = BytesMut::from(&b"ok\nthis line is far too long"[..]);
        assert_eq!(
            drain(&mut d, &mut buf, false),
            [ok("ok"), Err("oversize".into())]
        );
        // The rest of the long line arrives over several reads and is dropped silently.
        for _ in 0..3 {
            buf.extend_from_slice(b"still the same line");
            assert_eq!(drain(&mut d, &mut buf, false), []);
            assert!(buf.is_empty());
        }
        buf.extend_from_slice(b" end\nnext\n");
        assert_eq!(drain(&mut d, &mut buf, false), [ok("next")]);
        // The tail of a discarded line at EOF is dropped, not yielded.
        buf.extend_from_slice(b"another very long line without end");
        assert_eq!(drain(&mut d, &mut buf, true), [Err("oversize".into())]);
        assert!(buf.is_empty());
    }

    #[test]
    fn ten_mib_without_newline_keeps_memory_bounded() {
        const MAX: usize = 1024 * 1024;
        const READ: usize = 64 * 1024;
        const SLACK: usize = 4096;
        let mut d = decoder(MAX);
        let mut buf = BytesMut::with_capacity(READ);
        let read = vec![b'x'; READ];
        let mut errors = 0;
        for _ in 0..(10 * 1024 * 1024 / READ) {
            buf.extend_from_slice(&read);
            for step in drain(&mut d, &mut buf, false) {
                assert_eq!(step, Err("oversize".into()));
                errors += 1;
            }
            assert!(buf.len() <= MAX + READ, "len {}", buf.len());
            assert!(
                buf.capacity() <= MAX + READ + SLACK,
                "capacity {}",
                buf.capacity()
            );
        }
        assert_eq!(errors, 1);
        buf.extend_from_slice(b"\nafter\n");
        assert_eq!(drain(&mut d, &mut buf, false), [ok("after")]);
    }

    #[test]
    fn lowering_the_maximum_mid_line() {
        let mut d = decoder(100);
        let mut buf = BytesMut::from(&b"0123456789"[..]);
        assert_eq!(drain(&mut d, &mut buf, false), []);
        d.set_max_frame_bytes(4);
        assert_eq!(drain(&mut d, &mut buf, false), [Err("oversize".into())]);
        buf.extend_from_slice(b"rest\nok\n");
        assert_eq!(drain(&mut d, &mut buf, false), [ok("ok")]);
    }

    #[test]
    fn encoder_frames_and_refuses_newlines() {
        let mut e = FrameEncoder::new(&FramingConfig::Lines, 16);
        let mut dst = BytesMut::new();
        e.encode(&b"{\"a\":1}"[..], &mut dst).unwrap();
        e.encode(&b""[..], &mut dst).unwrap();
        assert_eq!(&dst[..], b"{\"a\":1}\n\n");
        assert!(matches!(
            e.encode(&b"a\nb"[..], &mut dst),
            Err(CodecError::Unencodable(_))
        ));
        assert!(matches!(
            e.encode(&b"a\r"[..], &mut dst),
            Err(CodecError::Unencodable(_))
        ));
        assert_eq!(dst.len(), 9);
    }
}

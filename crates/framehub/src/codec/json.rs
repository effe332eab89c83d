//! The `json` framing: a stream of JSON values, each value one frame (LinuxIT's clients write
//! one object per `write`, with no delimiter).
//!
//! Values may follow each other directly (`{..}{..}`), one per line, or pretty-printed over
//! many lines, with any JSON whitespace between them. The frame is the value's bytes exactly,
//! without the whitespace around it.
//!
//! How a value's end is found: a small state machine over the bytes (inside or outside a
//! string, a pending backslash, the nesting depth) finds where an object, array or string
//! closes; a number or a literal (`true`, `false`, `null`) at the top level ends at the first
//! byte that cannot continue it (or at the end of the stream). Nesting is a counter, never a
//! stack or a recursion, and the machine keeps its place across reads, so each call scans only
//! the bytes that arrived since the last one. Once the end is found, the value is checked in
//! full by the crate's one JSON grammar ([`crate::json::validate`]) unless the framing is
//! configured with `validate = false`.
//!
//! What is skipped, counted, and how the stream goes on:
//! - A value over `max_frame_bytes` ([`CodecError::Oversize`]): discarded up to its end
//!   (across reads), while only the current read is held, even if it never ends.
//! - A value nested deeper than `max_json_depth` ([`CodecError::TooDeep`]): reported at the
//!   first bracket too deep and discarded up to its end, counting brackets.
//! - A value that turns out invalid ([`CodecError::InvalidJson`]): dropped whole, up to its
//!   end; decoding goes on with what follows.
//! - Garbage ([`CodecError::InvalidJson`]): a byte that cannot start a value (`}`, `:`, a
//!   letter other than `t`/`f`/`n`, ...), or a newline inside a string (a raw newline is never
//!   valid in a JSON string, so the value is broken, e.g. a quote lost on a terminal line).
//!   The decoder then resynchronises at the next `{` or `[`: everything up to it is dropped as
//!   that one skip. Top-level scalars in the dropped run are dropped with it.
//! - At end of stream a value still open is dropped ([`CodecError::Truncated`]); a number or
//!   literal ends there and is a frame.
//!
//! An object that never closes (a missing `}`) keeps the decoder waiting until it grows past
//! `max_frame_bytes`; the stream goes on after that.
//!
//! The encoder writes one strict JSON value as it is, followed by `\n`, so that a line-based
//! reader (and LinuxIT's client, whose `json.loads` ignores trailing whitespace) reads it too;
//! it refuses anything that is not exactly one JSON value (surrounding whitespace included,
//! since the decoder would not give it back).

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::config::JsonConfig;
use super::{CodecError, Skipped, cut, decoder_methods, encoder_impls};
use crate::json::{self, JsonError};

/// The `json` framing's codec: each JSON value of the stream is a frame, whatever whitespace
/// (or none) separates the values; oversize, too deep, invalid values and garbage are skipped
/// and counted in [`skipped`](Self::skipped) while decoding goes on (see the module docs of
/// `codec::json` for the resynchronisation rule). The encoder writes a value followed by `\n`.
///
/// ```
/// use framehub::codec::{JsonCodec, JsonConfig};
/// use futures_util::StreamExt;
/// use tokio_util::codec::FramedRead;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let input = &b"{\"cmd\":1}{\"cmd\":2}\n[1,\n 2]  \"s\" } {\"cmd\":3}"[..];
/// let mut values = FramedRead::new(input, JsonCodec::new(&JsonConfig::default(), 64));
/// let mut frames = Vec::new();
/// while let Some(value) = values.next().await {
///     frames.push(value.expect("only a lost framing is an error"));
/// }
/// assert_eq!(frames, ["{\"cmd\":1}", "{\"cmd\":2}", "[1,\n 2]", "\"s\"", "{\"cmd\":3}"]);
/// assert_eq!(values.decoder().skipped().invalid_json, 1); // the stray `}`
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct JsonCodec {
    decoder: JsonDecoder,
    max_frame_bytes: usize,
    skipped: Skipped,
}

impl JsonCodec {
    /// A codec for values of at most `max_frame_bytes`, nested at most
    /// [`json::DEFAULT_MAX_DEPTH`] levels (see [`Self::with_max_json_depth`]).
    pub fn new(config: &JsonConfig, max_frame_bytes: usize) -> Self {
        Self {
            decoder: JsonDecoder::new(config),
            max_frame_bytes,
            skipped: Skipped::default(),
        }
    }

    /// Values nested deeper than `depth` levels (the top-level object or array is level 1)
    /// are skipped and counted as `too_deep`.
    pub fn with_max_json_depth(mut self, depth: usize) -> Self {
        self.decoder.max_depth = depth;
        self
    }

    fn encode_payload(&self, payload: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        encode(payload, dst)
    }
}

decoder_methods!(JsonCodec);
encoder_impls!(JsonCodec);

/// Where the decoder is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Between values: whitespace is skipped, the next byte starts a value.
    Between,
    /// Inside a value that starts at the caller's position.
    Value,
    /// Inside a value already reported (oversize or too deep): dropped up to its end.
    Discard,
    /// After garbage: dropped up to the next `{` or `[`.
    Resync,
}

/// What kind of value is being scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An object, an array or a string: ends where its brackets or quotes close.
    Nested,
    /// A number or a literal: ends before the first byte that cannot continue it.
    Token,
}

/// What one scan of a value's bytes found, as offsets from the value's (or the discarded
/// rest's) first byte.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// The value ends before this offset.
    End(usize),
    /// The bracket before this offset nests deeper than the limit.
    TooDeep(usize),
    /// A newline inside a string, before this offset: the value is broken.
    Broken(usize),
    /// No end yet; every byte given was scanned.
    Pending,
}

#[derive(Debug, Clone)]
pub(super) struct JsonDecoder {
    validate: bool,
    max_depth: usize,
    mode: Mode,
    kind: Kind,
    /// Bytes of the current value scanned so far (`Mode::Value`), so a value arriving in many
    /// reads is scanned once.
    scanned: usize,
    /// Open objects and arrays.
    depth: usize,
    in_string: bool,
    /// The last byte scanned was a backslash inside a string.
    escaped: bool,
}

impl JsonDecoder {
    pub(super) fn new(config: &JsonConfig) -> Self {
        Self {
            validate: config.validate,
            max_depth: json::DEFAULT_MAX_DEPTH,
            mode: Mode::Between,
            kind: Kind::Nested,
            scanned: 0,
            depth: 0,
            in_string: false,
            escaped: false,
        }
    }

    pub(super) fn set_max_depth(&mut self, depth: usize) {
        self.max_depth = depth;
    }

    #[cfg(test)]
    pub(super) fn scanned(&self) -> usize {
        self.scanned
    }

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

    /// The next value of `buf[*pos..]` as a range of `buf`, `*pos` moved past what was
    /// consumed (the value, whitespace, dropped bytes). A value still incomplete is left at
    /// `*pos`, where the next call finds it with the bytes that arrived meanwhile.
    pub(super) fn next_in(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
        max: usize,
    ) -> Result<Option<Range<usize>>, CodecError> {
        loop {
            match self.mode {
                Mode::Between => {
                    let rest = &buf[*pos..];
                    let Some(start) = rest.iter().position(|&b| !is_ws(b)) else {
                        *pos = buf.len();
                        return Ok(None);
                    };
                    *pos += start;
                    self.kind = match rest[start] {
                        b'{' | b'[' | b'"' => Kind::Nested,
                        b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => Kind::Token,
                        _ => {
                            *pos += 1;
                            self.mode = Mode::Resync;
                            return Err(CodecError::InvalidJson);
                        }
                    };
                    self.mode = Mode::Value;
                    self.scanned = 0;
                }
                Mode::Value => return self.value(buf, pos, max),
                Mode::Discard => {
                    let rest = &buf[*pos..];
                    let step = match self.kind {
                        Kind::Nested => self.scan(rest, 0, false),
                        Kind::Token => scan_token(rest, 0),
                    };
                    match step {
                        Step::End(n) => {
                            *pos += n;
                            self.reset(Mode::Between);
                        }
                        Step::Broken(n) => {
                            *pos += n;
                            self.reset(Mode::Resync);
                        }
                        Step::TooDeep(_) | Step::Pending => {
                            *pos = buf.len();
                            return Ok(None);
                        }
                    }
                }
                Mode::Resync => match memchr::memchr2(b'{', b'[', &buf[*pos..]) {
                    Some(at) => {
                        *pos += at;
                        self.mode = Mode::Between;
                    }
                    None => {
                        *pos = buf.len();
                        return Ok(None);
                    }
                },
            }
        }
    }

    /// The in-place form of [`Self::decode_eof`]: a number or literal ends at the end of the
    /// stream; a value still open there is dropped as truncated.
    pub(super) fn next_in_eof(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
        max: usize,
    ) -> Result<Option<Range<usize>>, CodecError> {
        if let Some(frame) = self.next_in(buf, pos, max)? {
            return Ok(Some(frame));
        }
        let value = *pos..buf.len();
        *pos = buf.len();
        let mode = std::mem::replace(&mut self.mode, Mode::Between);
        let kind = self.kind;
        self.reset(Mode::Between);
        match mode {
            // `next_in` left a value pending, so it holds at most `max` bytes.
            Mode::Value if kind == Kind::Token => self.check(buf, value).map(Some),
            Mode::Value => Err(CodecError::Truncated { bytes: value.len() }),
            // Whitespace, or the tail of a value or of garbage already reported.
            Mode::Between | Mode::Discard | Mode::Resync => Ok(None),
        }
    }

    /// Goes on scanning the value at `*pos`, within `max + 1` bytes of its start.
    fn value(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
        max: usize,
    ) -> Result<Option<Range<usize>>, CodecError> {
        let rest = &buf[*pos..];
        let window = &rest[..rest.len().min(max.saturating_add(1))];
        let step = match self.kind {
            Kind::Nested => self.scan(window, self.scanned, true),
            Kind::Token => scan_token(window, self.scanned),
        };
        match step {
            Step::End(n) if n > max => {
                *pos += n;
                self.reset(Mode::Between);
                Err(CodecError::Oversize { max })
            }
            Step::End(n) => {
                let value = *pos..*pos + n;
                *pos += n;
                self.reset(Mode::Between);
                self.check(buf, value).map(Some)
            }
            Step::TooDeep(n) => {
                *pos += n;
                self.scanned = 0;
                self.mode = Mode::Discard;
                Err(CodecError::TooDeep {
                    max_depth: self.max_depth,
                })
            }
            Step::Broken(n) => {
                *pos += n;
                self.reset(Mode::Resync);
                Err(CodecError::InvalidJson)
            }
            Step::Pending if rest.len() > max => {
                // More than `max` bytes and no end: drop what was scanned (the maximum may
                // have been lowered since, so that can be more than the window) and discard
                // the rest of the value as it arrives, the scan state carrying on.
                self.scanned = self.scanned.max(window.len());
                *pos += self.scanned;
                self.scanned = 0;
                self.mode = Mode::Discard;
                Err(CodecError::Oversize { max })
            }
            Step::Pending => {
                self.scanned = self.scanned.max(window.len());
                Ok(None)
            }
        }
    }

    /// Checks a complete value with the crate's JSON grammar (unless `validate = false`).
    fn check(&self, buf: &[u8], value: Range<usize>) -> Result<Range<usize>, CodecError> {
        if !self.validate {
            return Ok(value);
        }
        match json::validate(&buf[value.clone()], self.max_depth) {
            Ok(()) => Ok(value),
            Err(JsonError::TooDeep { max_depth }) => Err(CodecError::TooDeep { max_depth }),
            Err(_) => Err(CodecError::InvalidJson),
        }
    }

    fn reset(&mut self, mode: Mode) {
        self.mode = mode;
        self.scanned = 0;
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
    }

    /// Scans `bytes[from..]` of an object, array or string, carrying the string and nesting
    /// state; with `check_depth`, stops at the first bracket deeper than the limit.
    fn scan(&mut self, bytes: &[u8], from: usize, check_depth: bool) -> Step {
        let mut i = from;
        while i < bytes.len() {
            if self.escaped {
                // The byte after a backslash, whatever it is (`\"` does not close the string).
                self.escaped = false;
                i += 1;
                continue;
            }
            if self.in_string {
                let Some(at) = memchr::memchr3(b'"', b'\\', b'\n', &bytes[i..]) else {
                    return Step::Pending;
                };
                i += at;
                match bytes[i] {
                    b'"' => {
                        self.in_string = false;
                        i += 1;
                        if self.depth == 0 {
                            return Step::End(i);
                        }
                    }
                    b'\\' => {
                        self.escaped = true;
                        i += 1;
                    }
                    _ => return Step::Broken(i + 1),
                }
                continue;
            }
            match bytes[i] {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    if check_depth && self.depth > self.max_depth {
                        return Step::TooDeep(i + 1);
                    }
                }
                b'}' | b']' => {
                    // Only the opening bracket of this value can be at depth 0 here.
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Step::End(i + 1);
                    }
                }
                _ => {}
            }
            i += 1;
        }
        Step::Pending
    }
}

/// Scans `bytes[from..]` of a top-level number or literal: it ends before the first byte that
/// no number or literal contains.
fn scan_token(bytes: &[u8], from: usize) -> Step {
    match bytes
        .get(from..)
        .unwrap_or_default()
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
    {
        Some(at) => Step::End(from + at),
        None => Step::Pending,
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

pub(super) fn encode(payload: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
    if payload.first().is_some_and(|&b| is_ws(b)) || payload.last().is_some_and(|&b| is_ws(b)) {
        return Err(CodecError::Unencodable(
            "a json payload cannot start or end with whitespace (the decoder drops it)",
        ));
    }
    // Any depth: the scanner needs no recursion, and a peer's limit is not known here.
    if json::validate(payload, usize::MAX).is_err() {
        return Err(CodecError::Unencodable(
            "a json payload must be exactly one JSON value",
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
    use crate::codec::test_support::drain;
    use crate::codec::{FrameDecoder, FrameEncoder, FramingConfig};
    use tokio_util::codec::{Decoder, Encoder};

    fn decoder(max: usize) -> FrameDecoder {
        FrameDecoder::new(&FramingConfig::Json(JsonConfig::default()), max)
    }

    fn ok(s: &str) -> Result<Bytes, String> {
        Ok(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn err(reason: &str) -> Result<Bytes, String> {
        Err(reason.to_owned())
    }

    #[test]
    fn values_back_to_back_per_line_and_pretty_printed() {
        let mut d = decoder(256);
        let pretty = "{\n  \"cmd\": 1,\n  \"data\": [\n    \"a}\",\n    {\"b\": \"\\\"]\"}\n  ]\n}";
        let input = format!(
            "{{\"a\":1}}{{\"b\":2}}\n{{\"c\":3}}\r\n\t {pretty}[]\"x\" 12 -1.5e3 true null\n"
        );
        let mut buf = BytesMut::from(input.as_bytes());
        assert_eq!(
            drain(&mut d, &mut buf, false),
            [
                ok("{\"a\":1}"),
                ok("{\"b\":2}"),
                ok("{\"c\":3}"),
                ok(pretty),
                ok("[]"),
                ok("\"x\""),
                ok("12"),
                ok("-1.5e3"),
                ok("true"),
                ok("null"),
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn a_token_at_the_end_waits_for_its_end_or_the_stream_end() {
        let mut d = decoder(64);
        let mut buf = BytesMut::from(&b"{} 12"[..]);
        assert_eq!(drain(&mut d, &mut buf, false), [ok("{}")]);
        assert_eq!(&buf[..], b"12");
        buf.extend_from_slice(b"3");
        assert_eq!(drain(&mut d, &mut buf, false), []);
        assert_eq!(drain(&mut d, &mut buf, true), [ok("123")]);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_value_arriving_byte_by_byte_is_scanned_once() {
        let mut d = decoder(1 << 20);
        let value = format!("{{\"k\":\"{}\",\"n\":[1,2,{{}}]}}", "v".repeat(1000));
        let mut buf = BytesMut::new();
        for (i, b) in value.bytes().enumerate() {
            buf.extend_from_slice(&[b]);
            let out = drain(&mut d, &mut buf, false);
            if i + 1 < value.len() {
                assert_eq!(out, []);
                // The scan position follows the buffer: nothing is scanned twice.
                assert_eq!(d.json_scanned(), buf.len());
            } else {
                assert_eq!(out, [ok(&value)]);
            }
        }
    }

    #[test]
    fn garbage_resyncs_at_the_next_object_or_array() {
        let mut d = decoder(64);
        let mut buf = BytesMut::from(&b"} hello: 1 2 {\"a\":1} ]x[1]"[..]);
        assert_eq!(
            drain(&mut d, &mut buf, false),
            [
                err("invalid_json"),
                ok("{\"a\":1}"),
                err("invalid_json"),
                ok("[1]")
            ]
        );
        // A number that is not one, and a value that is not valid JSON: each dropped whole,
        // and the next value is found right after.
        let mut buf = BytesMut::from(&b"01 {\"cmd\": 0x01} {\"a\":,} {\"ok\":true}"[..]);
        assert_eq!(
            drain(&mut d, &mut buf, false),
            [
                err("invalid_json"),
                err("invalid_json"),
                err("invalid_json"),
                ok("{\"ok\":true}")
            ]
        );
    }

    #[test]
    fn a_newline_inside_a_string_breaks_the_value() {
        let mut d = decoder(64);
        let mut buf = BytesMut::from(&b"{\"cmd\": \"abc}\n  \"b\": 2 }\n{\"cmd\":1}\n"[..]);
        assert_eq!(
            drain(&mut d, &mut buf, false),
            [err("invalid_json"), ok("{\"cmd\":1}")]
        );
        // An escaped newline is an escape, not the end of a line.
        let mut buf = BytesMut::from(&b"[\"a\\\nb\"] [\"\\\\\"]"[..]);
        assert_eq!(
            drain(&mut d, &mut buf, false),
            [err("invalid_json"), ok("[\"\\\\\"]")]
        );
    }

    #[test]
    fn oversize_value_is_discarded_to_its_end() {
        let mut d = decoder(8);
        // Exactly the maximum, then one over, then a long one over several reads.
        let mut buf = BytesMut::from(&b"[123456] [1234567] {\"a\":\"}}}"[..]);
        assert_eq!(
            drain(&mut d, &mut buf, false),
            [ok("[123456]"), err("oversize"), err("oversize")]
        );
        for _ in 0..3 {
            buf.extend_from_slice(b"still in the string ]]] {{{");
            assert_eq!(drain(&mut d, &mut buf, false), []);
            assert!(buf.is_empty());
        }
        buf.extend_from_slice(b"\"}{\"b\":2}");
        assert_eq!(drain(&mut d, &mut buf, false), [ok("{\"b\":2}")]);
        // A long number, and a long value cut by the end of the stream: one report each.
        let mut buf = BytesMut::from(&b"1234567890 [1,2,3,4,5,6,7"[..]);
        assert_eq!(
            drain(&mut d, &mut buf, true),
            [err("oversize"), err("oversize")]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn ten_mib_value_that_never_ends_keeps_memory_bounded() {
        const MAX: usize = 1024 * 1024;
        const READ: usize = 64 * 1024;
        let mut d = decoder(MAX);
        let mut buf = BytesMut::with_capacity(READ);
        buf.extend_from_slice(b"{\"k\":\"");
        let read = vec![b'x'; READ];
        let mut errors = 0;
        for _ in 0..(10 * 1024 * 1024 / READ) {
            buf.extend_from_slice(&read);
            errors += drain(&mut d, &mut buf, false).len();
            assert!(buf.len() <= MAX + READ + 8, "len {}", buf.len());
        }
        assert_eq!(errors, 1);
        buf.extend_from_slice(b"\"}\n{\"after\":1}");
        assert_eq!(drain(&mut d, &mut buf, false), [ok("{\"after\":1}")]);
    }

    #[test]
    fn deep_nesting_is_skipped_without_recursion() {
        let mut d = decoder(1 << 20).with_max_json_depth(128);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&vec![b'['; 100_000]);
        buf.extend_from_slice(&vec![b']'; 100_000]);
        buf.extend_from_slice(b"[[1]]");
        assert_eq!(
            drain(&mut d, &mut buf, false),
            [err("too_deep"), ok("[[1]]")]
        );
        // At the limit is allowed; one more is not.
        let mut d = decoder(64).with_max_json_depth(2);
        let mut buf = BytesMut::from(&b"[{}] [{\"a\":[]}] {\"a\":{\"b\":[1]}}"[..]);
        assert_eq!(
            drain(&mut d, &mut buf, false),
            [ok("[{}]"), err("too_deep"), err("too_deep")]
        );
        // 100,000 `[` that never close: reported once, and dropped as they arrive.
        let mut d = decoder(1 << 20);
        let mut buf = BytesMut::new();
        for _ in 0..100 {
            buf.extend_from_slice(&[b'['; 1000]);
            let out = drain(&mut d, &mut buf, false);
            assert!(out.is_empty() || out == [err("too_deep")]);
        }
        assert_eq!(drain(&mut d, &mut buf, true), []);
        assert_eq!(d.json_scanned(), 0);
    }

    #[test]
    fn truncated_at_eof() {
        let mut d = decoder(64);
        let mut buf = BytesMut::from(&b"{\"a\":1} {\"b\":"[..]);
        assert_eq!(
            drain(&mut d, &mut buf, true),
            [ok("{\"a\":1}"), err("truncated")]
        );
        assert!(buf.is_empty());
        let mut buf = BytesMut::from(&b" \n\t "[..]);
        assert_eq!(drain(&mut d, &mut buf, true), []);
        assert!(buf.is_empty());
    }

    #[test]
    fn unvalidated_values_are_cut_by_their_structure_only() {
        let config = JsonConfig { validate: false };
        let mut d = FrameDecoder::new(&FramingConfig::Json(config), 64);
        let mut buf =
            BytesMut::from(&b"{\"cmd\" : 0x01, \"request_data\": null}{\"a\":,} x {}"[..]);
        assert_eq!(
            drain(&mut d, &mut buf, false),
            [
                ok("{\"cmd\" : 0x01, \"request_data\": null}"),
                ok("{\"a\":,}"),
                err("invalid_json"),
                ok("{}")
            ]
        );
    }

    #[test]
    fn lowering_the_maximum_mid_value() {
        let mut d = decoder(100);
        let mut buf = BytesMut::from(&b"[\"0123456789"[..]);
        assert_eq!(drain(&mut d, &mut buf, false), []);
        d.set_max_frame_bytes(4);
        assert_eq!(drain(&mut d, &mut buf, false), [err("oversize")]);
        buf.extend_from_slice(b"\"] [1]");
        assert_eq!(drain(&mut d, &mut buf, false), [ok("[1]")]);
    }

    #[test]
    fn codec_counts_skips_under_framed_read() {
        let mut codec = JsonCodec::new(&JsonConfig::default(), 16).with_max_json_depth(1);
        let mut buf = BytesMut::from(&b"x [[]] {\"a\":1}"[..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap().as_deref(),
            Some(&b"{\"a\":1}"[..])
        );
        assert_eq!(
            (codec.skipped().invalid_json, codec.skipped().too_deep),
            (1, 1)
        );
    }

    #[test]
    fn encoder_writes_one_value_and_a_newline() {
        let mut e = FrameEncoder::new(&FramingConfig::Json(JsonConfig::default()), 32);
        let mut dst = BytesMut::new();
        e.encode(&b"{\"a\":[1,2]}"[..], &mut dst).unwrap();
        e.encode(&b"7"[..], &mut dst).unwrap();
        assert_eq!(&dst[..], b"{\"a\":[1,2]}\n7\n");
        for bad in [
            &b""[..],
            b"{} {}",
            b" {}",
            b"{}\n",
            b"{\"cmd\":0x01}",
            b"nope",
        ] {
            assert!(
                matches!(e.encode(bad, &mut dst), Err(CodecError::Unencodable(_))),
                "{bad:?}"
            );
        }
        assert_eq!(dst.len(), 14);
    }
}

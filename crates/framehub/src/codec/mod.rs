//! Framings: cutting a TCP byte stream into frames and framing payloads for the wire, sans-IO.
//!
//! Each framing lives in its own module (`lines`, `length`, `cobs`, `spacepacket`, `chunk`);
//! this module owns what they share: the [`FramingConfig`] a listener is configured with, the
//! [`FrameDecoder`] and [`FrameEncoder`] that dispatch to the framing (an enum, so the hot path
//! has no virtual call), and [`CodecError`].
//!
//! # The decode loop contract
//!
//! The connection appends each socket read to one `BytesMut` and calls
//! [`Decoder::decode`] until it returns `Ok(None)`:
//!
//! - `Ok(Some(frame))`: one frame, cut out of the buffer without copying.
//! - `Ok(None)`: more bytes are needed.
//! - `Err(e)` with `!e.is_fatal()`: exactly one frame (or one run of garbage) was dropped and
//!   counted under `e.reason()`; call `decode` again on the same buffer and the stream goes on.
//! - `Err(e)` with `e.is_fatal()`: the framing is lost; close the connection.
//!
//! At end of stream the same loop runs with `decode_eof`, which never leaves bytes behind: a
//! trailing partial frame is either yielded (a `lines` line without its newline, a `chunk`) or
//! dropped with one non-fatal [`CodecError::Truncated`].
//!
//! For `lines` the connection runs the same loop in place (crate-internal `next_in`): each
//! frame comes back as a range of the buffer, with the same results in the same order, and the
//! buffer is advanced once per read instead of split per frame. `decode` is built on it, so the
//! property tests of `decode` cover both.
//!
//! Memory stays bounded whatever the peer sends: no framing holds more than
//! `max_frame_bytes` (plus its framing overhead) and the current read, and no framing reserves
//! memory for a length the peer merely announced.
//!
//! ```
//! use bytes::BytesMut;
//! use framehub::codec::{FrameDecoder, FramingConfig};
//! use tokio_util::codec::Decoder;
//!
//! let mut decoder = FrameDecoder::new(&FramingConfig::Lines, 1024);
//! let mut buf = BytesMut::from(&b"{\"a\":1}\r\n\npartial"[..]);
//! assert_eq!(decoder.decode(&mut buf)?.as_deref(), Some(&b"{\"a\":1}"[..]));
//! assert_eq!(decoder.decode(&mut buf)?.as_deref(), Some(&b""[..]));
//! assert_eq!(decoder.decode(&mut buf)?, None);
//! assert_eq!(decoder.decode_eof(&mut buf)?.as_deref(), Some(&b"partial"[..]));
//! # Ok::<(), framehub::codec::CodecError>(())
//! ```

mod chunk;
mod cobs;
mod delimited;
mod length;
mod lines;
mod spacepacket;

use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Unexpected, Visitor};
use tokio_util::codec::{Decoder, Encoder};

/// Which framing a listener speaks.
///
/// In TOML, either a plain string that takes the defaults for every parameter, or a table with a
/// `method` key and that method's parameters; unknown keys are rejected by name:
///
/// ```toml
/// framing = "lines"                 # or "length", "cobs", "spacepacket", "chunk"
/// framing = { method = "length", prefix_bytes = 2, endian = "little" }
/// framing = { method = "spacepacket", allowed_packet_ids = [0x1801, 0x0802] }
/// ```
///
/// ```
/// use framehub::codec::{Endian, FramingConfig, LengthPrefix};
///
/// #[derive(serde::Deserialize)]
/// struct Listener { framing: FramingConfig }
///
/// let l: Listener = toml::from_str(r#"framing = { method = "length", prefix_bytes = 2 }"#)?;
/// assert_eq!(l.framing, FramingConfig::Length(LengthPrefix { bytes: 2, endian: Endian::Big }));
/// # Ok::<(), toml::de::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FramingConfig {
    /// Frames end at `\n`; a trailing `\r` is stripped (newline-delimited JSON from radar nodes).
    #[default]
    Lines,
    /// Each frame is preceded by its length (NinjaTCP: 4 bytes, big endian).
    Length(LengthPrefix),
    /// COBS-encoded frames delimited by `0x00` (sat-rs).
    Cobs,
    /// CCSDS space packets, optionally filtered by packet ID (sat-rs).
    SpacePacket(SpacePacketConfig),
    /// Each socket read is one frame (the Ark TCP server stage).
    Chunk,
}

/// The length prefix of the `length` framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthPrefix {
    /// Width of the prefix in bytes: 1, 2, 4 or 8 (TOML key `prefix_bytes`).
    pub bytes: u8,
    /// Byte order of the prefix (TOML key `endian`: `"big"` or `"little"`).
    pub endian: Endian,
}

impl Default for LengthPrefix {
    /// 4 bytes, big endian, as NinjaTCP sends.
    fn default() -> Self {
        Self {
            bytes: 4,
            endian: Endian::Big,
        }
    }
}

/// Byte order of a length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endian {
    /// Most significant byte first (network order).
    #[default]
    Big,
    /// Least significant byte first.
    Little,
}

/// Parameters of the `spacepacket` framing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpacePacketConfig {
    /// Packet IDs to accept; `None` accepts every packet.
    ///
    /// A packet ID is the first 16 bits of the primary header without the 3 version bits, i.e.
    /// packet type (1 bit), secondary header flag (1 bit) and APID (11 bits): sat-rs's
    /// `PacketId::raw()`. A TC with a secondary header for APID 1 is `0x1801`.
    pub allowed_packet_ids: Option<Vec<u16>>,
}

/// Largest packet ID: 13 bits (type, secondary header flag, APID).
const MAX_PACKET_ID: u16 = 0x1FFF;

const METHODS: &[&str] = &["lines", "length", "cobs", "spacepacket", "chunk"];

impl FramingConfig {
    /// The method name as written in the config (`"lines"`, `"length"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Lines => "lines",
            Self::Length(_) => "length",
            Self::Cobs => "cobs",
            Self::SpacePacket(_) => "spacepacket",
            Self::Chunk => "chunk",
        }
    }

    /// Checks parameters that the types alone cannot: the prefix width and the packet IDs.
    /// The error names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Length(prefix) if !matches!(prefix.bytes, 1 | 2 | 4 | 8) => Err(format!(
                "framing.prefix_bytes = {}: must be 1, 2, 4 or 8",
                prefix.bytes
            )),
            Self::SpacePacket(SpacePacketConfig {
                allowed_packet_ids: Some(ids),
            }) => {
                if ids.is_empty() {
                    return Err(
                        "framing.allowed_packet_ids is empty: every packet would be \
                                dropped (omit the key to accept all packets)"
                            .to_owned(),
                    );
                }
                match ids.iter().find(|&&id| id > MAX_PACKET_ID) {
                    Some(id) => Err(format!(
                        "framing.allowed_packet_ids: {id:#06x} is not a packet ID (13 bits: \
                         type, secondary header flag, APID; at most {MAX_PACKET_ID:#06x})"
                    )),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Keys a table may hold for this method, for "unknown field" errors.
    fn keys(&self) -> &'static [&'static str] {
        match self {
            Self::Length(_) => &["method", "prefix_bytes", "endian"],
            Self::SpacePacket(_) => &["method", "allowed_packet_ids"],
            Self::Lines | Self::Cobs | Self::Chunk => &["method"],
        }
    }

    fn from_method<E: de::Error>(method: &str) -> Result<Self, E> {
        Ok(match method {
            "lines" => Self::Lines,
            "length" => Self::Length(LengthPrefix::default()),
            "cobs" => Self::Cobs,
            "spacepacket" => Self::SpacePacket(SpacePacketConfig::default()),
            "chunk" => Self::Chunk,
            other => return Err(E::unknown_variant(other, METHODS)),
        })
    }
}

impl<'de> Deserialize<'de> for FramingConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FramingVisitor)
    }
}

/// The inverse of the parser: a plain method name when every parameter has
/// its default, else a table with `method` and the parameters.
impl serde::Serialize for FramingConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Self::Length(prefix) => {
                let mut map = serializer.serialize_map(Some(3))?;
                map.serialize_entry("method", self.name())?;
                map.serialize_entry("prefix_bytes", &prefix.bytes)?;
                map.serialize_entry("endian", &prefix.endian)?;
                map.end()
            }
            Self::SpacePacket(SpacePacketConfig {
                allowed_packet_ids: Some(ids),
            }) => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("method", self.name())?;
                map.serialize_entry("allowed_packet_ids", ids)?;
                map.end()
            }
            _ => serializer.serialize_str(self.name()),
        }
    }
}

/// Hand-written so that a string and a table are both accepted while errors still name the
/// method or key at fault (`#[serde(untagged)]` would only say "did not match any variant").
struct FramingVisitor;

impl<'de> Visitor<'de> for FramingVisitor {
    type Value = FramingConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a framing method name or a table with a `method` key")
    }

    fn visit_str<E: de::Error>(self, method: &str) -> Result<FramingConfig, E> {
        FramingConfig::from_method(method)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FramingConfig, A::Error> {
        const ALL_KEYS: &[&str] = &["method", "prefix_bytes", "endian", "allowed_packet_ids"];
        let mut method: Option<String> = None;
        let mut prefix_bytes: Option<u8> = None;
        let mut endian: Option<Endian> = None;
        let mut allowed_packet_ids: Option<Vec<u16>> = None;
        // Keys arrive in any order, so which keys the method allows is checked after the loop.
        let mut seen: Vec<&'static str> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let Some(&known) = ALL_KEYS.iter().find(|k| **k == key) else {
                return Err(de::Error::unknown_field(&key, ALL_KEYS));
            };
            if seen.contains(&known) {
                return Err(de::Error::duplicate_field(known));
            }
            seen.push(known);
            match known {
                "method" => method = Some(map.next_value()?),
                "prefix_bytes" => {
                    let bytes: u8 = map.next_value()?;
                    if !matches!(bytes, 1 | 2 | 4 | 8) {
                        return Err(de::Error::invalid_value(
                            Unexpected::Unsigned(bytes.into()),
                            &"prefix_bytes = 1, 2, 4 or 8",
                        ));
                    }
                    prefix_bytes = Some(bytes);
                }
                "endian" => endian = Some(map.next_value()?),
                _ => allowed_packet_ids = Some(map.next_value()?),
            }
        }
        let method = method.ok_or_else(|| de::Error::missing_field("method"))?;
        let mut config = FramingConfig::from_method::<A::Error>(&method)?;
        if let Some(extra) = seen.iter().find(|k| !config.keys().contains(k)) {
            return Err(de::Error::unknown_field(extra, config.keys()));
        }
        match &mut config {
            FramingConfig::Length(prefix) => {
                prefix.bytes = prefix_bytes.unwrap_or(prefix.bytes);
                prefix.endian = endian.unwrap_or(prefix.endian);
            }
            FramingConfig::SpacePacket(sp) => sp.allowed_packet_ids = allowed_packet_ids,
            FramingConfig::Lines | FramingConfig::Cobs | FramingConfig::Chunk => {}
        }
        config.validate().map_err(de::Error::custom)?;
        Ok(config)
    }
}

/// Why a frame could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A frame longer than the maximum. Non-fatal: `lines`, `cobs` and `spacepacket` discard
    /// that frame up to its end (across reads if need be) and the stream goes on; `chunk` and
    /// the encoders drop only that frame. A `length` prefix over the maximum is
    /// [`CodecError::LengthOversize`] instead, which is fatal.
    #[error("frame longer than the maximum of {max} bytes")]
    Oversize {
        /// The maximum in force (after COBS decoding, for `cobs`).
        max: usize,
    },
    /// A `length` prefix announcing more than the maximum. Fatal: the prefix cannot be trusted,
    /// so the framing of the rest of the stream is lost. Counted as `"oversize"`.
    #[error("length prefix announces {announced} bytes, over the maximum of {max}: framing lost")]
    LengthOversize {
        /// The length the prefix announced.
        announced: u64,
        /// The maximum in force.
        max: usize,
    },
    /// A COBS frame that does not decode: dropped; the stream resyncs at the next `0x00`.
    #[error("invalid COBS frame")]
    InvalidCobs,
    /// Bytes that cannot start a space packet (CCSDS version not 0). The decoder skips them one
    /// by one to resync and reports each run of such bytes once, not once per byte.
    #[error("invalid space packet header (version not 0): skipping to resync")]
    InvalidHeader,
    /// A space packet whose packet ID is not in the allowlist: skipped whole.
    #[error("space packet ID {packet_id:#06x} is not allowed: packet skipped")]
    UnknownPacketId {
        /// Packet type, secondary header flag and APID (13 bits).
        packet_id: u16,
    },
    /// The stream ended inside a frame; the partial frame was dropped.
    #[error("stream ended inside a frame: {bytes} bytes dropped")]
    Truncated {
        /// Buffered bytes of the partial frame that were dropped.
        bytes: usize,
    },
    /// The encoder was given a payload that this framing cannot carry (a `lines` payload with a
    /// newline, a `spacepacket` payload that is not one valid packet, ...).
    #[error("payload cannot be framed: {0}")]
    Unencodable(&'static str),
    /// An I/O error from the transport (required by `tokio_util::codec`).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl CodecError {
    /// Whether the connection must close: the framing is lost or the transport failed.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::LengthOversize { .. } | Self::Io(_))
    }

    /// A short stable label for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Oversize { .. } | Self::LengthOversize { .. } => "oversize",
            Self::InvalidCobs => "invalid_cobs",
            Self::InvalidHeader => "invalid_header",
            Self::UnknownPacketId { .. } => "unknown_packet_id",
            Self::Truncated { .. } => "truncated",
            Self::Unencodable(_) => "unencodable",
            Self::Io(_) => "io",
        }
    }
}

/// Drops the first `n` bytes of `buf`. All of it is a `clear`, which keeps the allocation's
/// start: advancing to the end would leave the next read only the capacity behind the consumed
/// bytes, and the buffer would be reallocated (and grow) instead of reused.
pub fn consume(buf: &mut BytesMut, n: usize) {
    if n >= buf.len() {
        buf.clear();
    } else {
        bytes::Buf::advance(buf, n);
    }
}

/// Cuts the frame an in-place call found out of `buf`, and drops what that call consumed
/// (`buf[..pos]`) whatever it found.
pub(super) fn cut(
    buf: &mut BytesMut,
    pos: usize,
    found: Result<Option<std::ops::Range<usize>>, CodecError>,
) -> Result<Option<BytesMut>, CodecError> {
    let Ok(Some(frame)) = found else {
        consume(buf, pos);
        return found.map(|_| None);
    };
    let mut bytes = buf.split_to(pos);
    bytes::Buf::advance(&mut bytes, frame.start);
    bytes.truncate(frame.len());
    Ok(Some(bytes))
}

/// Decodes frames of any framing from a read buffer; see the [module docs](self) for the loop
/// contract.
///
/// ```
/// use bytes::BytesMut;
/// use framehub::codec::{CodecError, FrameDecoder, FramingConfig, LengthPrefix};
/// use tokio_util::codec::Decoder;
///
/// let mut decoder = FrameDecoder::new(&FramingConfig::Length(LengthPrefix::default()), 16);
/// let mut buf = BytesMut::from(&b"\0\0\0\x02hi\xff\xff\xff\xff"[..]);
/// assert_eq!(decoder.decode(&mut buf)?.as_deref(), Some(&b"hi"[..]));
/// let err = decoder.decode(&mut buf).unwrap_err();
/// assert!(matches!(err, CodecError::LengthOversize { .. }) && err.is_fatal());
/// # Ok::<(), CodecError>(())
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    framing: FramingDecoder,
    max_frame_bytes: usize,
}

#[derive(Debug)]
enum FramingDecoder {
    Lines(lines::LinesDecoder),
    Length(length::LengthDecoder),
    Cobs(cobs::CobsDecoder),
    SpacePacket(spacepacket::SpacePacketDecoder),
    Chunk,
}

impl FrameDecoder {
    /// A decoder for `framing` that accepts frames of at most `max_frame_bytes` (payload bytes,
    /// without delimiter, prefix or COBS overhead).
    ///
    /// `framing` is expected to have passed [`FramingConfig::validate`]; rather than panic on an
    /// invalid one, a prefix width outside 1..=8 is clamped and packet IDs over 13 bits never
    /// match.
    pub fn new(framing: &FramingConfig, max_frame_bytes: usize) -> Self {
        let framing = match framing {
            FramingConfig::Lines => FramingDecoder::Lines(lines::LinesDecoder::default()),
            FramingConfig::Length(prefix) => {
                FramingDecoder::Length(length::LengthDecoder::new(*prefix))
            }
            FramingConfig::Cobs => FramingDecoder::Cobs(cobs::CobsDecoder::default()),
            FramingConfig::SpacePacket(config) => {
                FramingDecoder::SpacePacket(spacepacket::SpacePacketDecoder::new(config))
            }
            FramingConfig::Chunk => FramingDecoder::Chunk,
        };
        Self {
            framing,
            max_frame_bytes,
        }
    }

    /// Changes the maximum from the next frame on: the connection lowers it to
    /// `max_auth_frame_bytes` until the peer authenticates, then raises it. A `length` frame
    /// whose prefix was already read keeps the limit it was checked against.
    pub fn set_max_frame_bytes(&mut self, max: usize) {
        self.max_frame_bytes = max;
    }

    /// The maximum frame size in force.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Whether [`Self::next_in`] serves this framing: its frames are bytes of the input, found
    /// without cutting the buffer (`lines`; `cobs` frames are found in place and decoded straight
    /// into the caller's arena). (Measured for `length` too: 7% slower than cutting, so it is
    /// not used there.)
    pub(crate) fn decodes_in_place(&self) -> bool {
        matches!(
            self.framing,
            FramingDecoder::Lines(_) | FramingDecoder::Cobs(_)
        )
    }

    /// Whether the ranges [`Self::next_in`] finds are encoded frames that
    /// [`Self::decode_found`] turns into payloads (`cobs`), rather than the payloads themselves.
    pub(crate) fn finds_encoded(&self) -> bool {
        matches!(self.framing, FramingDecoder::Cobs(_))
    }

    /// Decodes an encoded frame found by [`Self::next_in`] onto the end of `out` (left as it
    /// was on an error): the same payload, or the same error, as [`Decoder::decode`] gives.
    pub(crate) fn decode_found(
        &self,
        encoded: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), CodecError> {
        cobs::decode_into(encoded, out, self.max_frame_bytes)
    }

    /// The in-place decode loop, for framings that [`Self::decodes_in_place`]: the next frame of
    /// `buf[*pos..]` as a range of `buf`, with `*pos` moved past everything consumed (frames,
    /// delimiters, dropped bytes). Same results, in the same order, as
    /// [`Decoder::decode`] (or `decode_eof` when `eof`); the caller drops `buf[..*pos]` with
    /// [`consume`] once it is done with the frames, so the read buffer is never split per frame.
    /// Other framings find nothing here.
    pub(crate) fn next_in(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
        eof: bool,
    ) -> Result<Option<std::ops::Range<usize>>, CodecError> {
        let max = self.max_frame_bytes;
        match &mut self.framing {
            FramingDecoder::Lines(d) if eof => d.next_in_eof(buf, pos, max),
            FramingDecoder::Lines(d) => d.next_in(buf, pos, max),
            FramingDecoder::Cobs(d) if eof => d.next_in_eof(buf, pos, max),
            FramingDecoder::Cobs(d) => d.next_in(buf, pos, max),
            _ => Ok(None),
        }
    }
}

impl Decoder for FrameDecoder {
    type Item = Bytes;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        let max = self.max_frame_bytes;
        match &mut self.framing {
            FramingDecoder::Lines(d) => d.decode(buf, max),
            FramingDecoder::Length(d) => d.decode(buf, max),
            FramingDecoder::Cobs(d) => d.decode(buf, max),
            FramingDecoder::SpacePacket(d) => d.decode(buf, max),
            FramingDecoder::Chunk => chunk::decode(buf, max),
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        let max = self.max_frame_bytes;
        match &mut self.framing {
            FramingDecoder::Lines(d) => d.decode_eof(buf, max),
            FramingDecoder::Length(d) => d.decode_eof(buf, max),
            FramingDecoder::Cobs(d) => d.decode_eof(buf, max),
            FramingDecoder::SpacePacket(d) => d.decode_eof(buf, max),
            FramingDecoder::Chunk => chunk::decode(buf, max),
        }
    }
}

/// Frames payloads for the wire in any framing (egress, clients, tests).
///
/// A payload the framing cannot carry is refused with an error and nothing is written.
/// For `spacepacket` the payload must already be one whole space packet, checked but written
/// as is; the allowlist is not applied (it filters what peers send, not what we answer).
/// For `chunk` the payload is written as is; an empty payload writes nothing, since an empty
/// read cannot exist.
///
/// ```
/// use bytes::BytesMut;
/// use framehub::codec::{FrameEncoder, FramingConfig};
/// use tokio_util::codec::Encoder;
///
/// let mut encoder = FrameEncoder::new(&FramingConfig::Cobs, 1024);
/// let mut wire = BytesMut::new();
/// encoder.encode(&b"a\0b"[..], &mut wire)?;
/// assert_eq!(&wire[..], b"\0\x02a\x02b\0");
/// # Ok::<(), framehub::codec::CodecError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FrameEncoder {
    framing: FramingConfig,
    max_frame_bytes: usize,
}

impl FrameEncoder {
    /// An encoder for `framing` that refuses payloads over `max_frame_bytes`.
    pub fn new(framing: &FramingConfig, max_frame_bytes: usize) -> Self {
        Self {
            framing: framing.clone(),
            max_frame_bytes,
        }
    }
}

impl Encoder<&[u8]> for FrameEncoder {
    type Error = CodecError;

    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        let max = self.max_frame_bytes;
        if payload.len() > max {
            return Err(CodecError::Oversize { max });
        }
        match &self.framing {
            FramingConfig::Lines => lines::encode(payload, dst),
            FramingConfig::Length(prefix) => length::encode(*prefix, payload, dst),
            FramingConfig::Cobs => cobs::encode(payload, dst),
            FramingConfig::SpacePacket(_) => spacepacket::encode(payload, dst),
            FramingConfig::Chunk => {
                dst.extend_from_slice(payload);
                Ok(())
            }
        }
    }
}

impl Encoder<Bytes> for FrameEncoder {
    type Error = CodecError;

    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(&payload[..], dst)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Listener {
        framing: FramingConfig,
    }

    fn parse(text: &str) -> Result<FramingConfig, String> {
        toml::from_str::<Listener>(text)
            .map(|l| l.framing)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn plain_strings_take_defaults() {
        assert_eq!(parse(r#"framing = "lines""#), Ok(FramingConfig::Lines));
        assert_eq!(
            parse(r#"framing = "length""#),
            Ok(FramingConfig::Length(LengthPrefix {
                bytes: 4,
                endian: Endian::Big
            }))
        );
        assert_eq!(parse(r#"framing = "cobs""#), Ok(FramingConfig::Cobs));
        assert_eq!(
            parse(r#"framing = "spacepacket""#),
            Ok(FramingConfig::SpacePacket(SpacePacketConfig {
                allowed_packet_ids: None
            }))
        );
        assert_eq!(parse(r#"framing = "chunk""#), Ok(FramingConfig::Chunk));
    }

    #[test]
    fn tables_carry_parameters() {
        assert_eq!(
            parse(r#"framing = { method = "length", prefix_bytes = 2, endian = "little" }"#),
            Ok(FramingConfig::Length(LengthPrefix {
                bytes: 2,
                endian: Endian::Little
            }))
        );
        assert_eq!(
            parse(r#"framing = { endian = "little", method = "length" }"#),
            Ok(FramingConfig::Length(LengthPrefix {
                bytes: 4,
                endian: Endian::Little
            }))
        );
        assert_eq!(
            parse(r#"framing = { method = "spacepacket", allowed_packet_ids = [0x1801, 0x0802] }"#),
            Ok(FramingConfig::SpacePacket(SpacePacketConfig {
                allowed_packet_ids: Some(vec![0x1801, 0x0802])
            }))
        );
        assert_eq!(
            parse("[framing]\nmethod = \"cobs\"\n"),
            Ok(FramingConfig::Cobs)
        );
    }

    #[test]
    fn errors_name_the_key_or_method() {
        let err = parse(r#"framing = { method = "length", prefix_byte = 2 }"#).unwrap_err();
        assert!(err.contains("unknown field `prefix_byte`"), "{err}");
        // A key that exists, but for another method.
        let err = parse(r#"framing = { method = "lines", endian = "big" }"#).unwrap_err();
        assert!(err.contains("unknown field `endian`"), "{err}");
        let err = parse(r#"framing = "json""#).unwrap_err();
        assert!(err.contains("unknown variant `json`"), "{err}");
        let err = parse(r#"framing = { prefix_bytes = 2 }"#).unwrap_err();
        assert!(err.contains("missing field `method`"), "{err}");
        let err = parse(r#"framing = { method = "length", prefix_bytes = 3 }"#).unwrap_err();
        assert!(err.contains("prefix_bytes"), "{err}");
        let err = parse(r#"framing = { method = "length", endian = "middle" }"#).unwrap_err();
        assert!(err.contains("middle"), "{err}");
        let err = parse(r#"framing = { method = "spacepacket", allowed_packet_ids = [0x2000] }"#)
            .unwrap_err();
        assert!(err.contains("allowed_packet_ids"), "{err}");
        let err =
            parse(r#"framing = { method = "spacepacket", allowed_packet_ids = [] }"#).unwrap_err();
        assert!(err.contains("allowed_packet_ids"), "{err}");
    }

    #[test]
    fn validate_and_name() {
        for (config, name) in [
            (FramingConfig::Lines, "lines"),
            (FramingConfig::Length(LengthPrefix::default()), "length"),
            (FramingConfig::Cobs, "cobs"),
            (
                FramingConfig::SpacePacket(SpacePacketConfig::default()),
                "spacepacket",
            ),
            (FramingConfig::Chunk, "chunk"),
        ] {
            assert_eq!(config.name(), name);
            assert_eq!(config.validate(), Ok(()));
        }
        let bad = FramingConfig::Length(LengthPrefix {
            bytes: 0,
            endian: Endian::Big,
        });
        assert!(bad.validate().is_err_and(|e| e.contains("prefix_bytes")));
    }

    #[test]
    fn error_classification() {
        assert!(!CodecError::Oversize { max: 1 }.is_fatal());
        let lost = CodecError::LengthOversize {
            announced: 9,
            max: 1,
        };
        assert!(lost.is_fatal());
        assert_eq!(lost.reason(), "oversize");
        assert!(!CodecError::InvalidCobs.is_fatal());
        assert!(!CodecError::Truncated { bytes: 1 }.is_fatal());
        assert!(CodecError::Io(std::io::Error::other("x")).is_fatal());
        assert_eq!(
            CodecError::UnknownPacketId { packet_id: 1 }.reason(),
            "unknown_packet_id"
        );
    }

    #[test]
    fn set_max_frame_bytes_applies_to_next_frame() {
        let mut decoder = FrameDecoder::new(&FramingConfig::Lines, 4);
        assert_eq!(decoder.max_frame_bytes(), 4);
        let mut buf = BytesMut::from(&b"123456\n123456\n"[..]);
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(CodecError::Oversize { max: 4 })
        ));
        decoder.set_max_frame_bytes(8);
        assert_eq!(decoder.max_frame_bytes(), 8);
        assert_eq!(
            decoder.decode(&mut buf).ok().flatten().as_deref(),
            Some(&b"123456"[..])
        );
    }

    #[test]
    fn encoder_refuses_oversize_in_every_framing() {
        for framing in [
            FramingConfig::Lines,
            FramingConfig::Length(LengthPrefix::default()),
            FramingConfig::Cobs,
            FramingConfig::SpacePacket(SpacePacketConfig::default()),
            FramingConfig::Chunk,
        ] {
            let mut encoder = FrameEncoder::new(&framing, 4);
            let mut dst = BytesMut::new();
            let err = encoder.encode(&b"12345"[..], &mut dst).unwrap_err();
            assert!(
                matches!(err, CodecError::Oversize { max: 4 }),
                "{framing:?}"
            );
            assert!(dst.is_empty());
        }
    }
}

/// Helpers shared by the framings' unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use bytes::{Bytes, BytesMut};
    use tokio_util::codec::Decoder;

    use super::FrameDecoder;

    /// Decodes everything `buf` holds; non-fatal errors become `Err(reason)`.
    pub(crate) fn drain(
        d: &mut FrameDecoder,
        buf: &mut BytesMut,
        eof: bool,
    ) -> Vec<Result<Bytes, String>> {
        let mut out = Vec::new();
        loop {
            let step = if eof {
                d.decode_eof(buf)
            } else {
                d.decode(buf)
            };
            match step {
                Ok(Some(frame)) => out.push(Ok(frame)),
                Ok(None) => return out,
                Err(e) => {
                    assert!(!e.is_fatal(), "{e}");
                    out.push(Err(e.reason().to_owned()));
                }
            }
        }
    }
}

//! Framings: cutting a TCP byte stream into frames and framing payloads for the wire, sans-IO.
//!
//! Each framing lives in its own module and has its own public codec, usable alone with
//! `tokio_util::codec::{FramedRead, FramedWrite, Framed}` as tokio-util's `LinesCodec` is:
//! [`LinesCodec`], [`LengthCodec`], [`CobsCodec`], [`SpacePacketCodec`], [`ChunkCodec`],
//! [`JsonCodec`].
//! This module owns what they share: the [`FramingConfig`] a listener is configured with
//! (with its serde code, in `codec/config.rs`), the [`FrameDecoder`] and [`FrameEncoder`] that dispatch to the framing a
//! config names (an enum, so the hot path has no virtual call), [`CodecError`] and the
//! [`Skipped`] tally.
//!
//! # Two decode loops
//!
//! [`Decoder::decode`] and [`Decoder::decode_eof`] behave as tokio-util's codecs do under
//! `FramedRead`: a frame the framing can skip (an oversize line discarded up to its newline,
//! an invalid COBS frame, a space packet with an unknown ID, a run of bytes that cannot start a
//! packet, a JSON value that is invalid or nested too deep, a partial frame at end of stream)
//! is counted in [`Skipped`] (read it with
//! `skipped()`, e.g. through `FramedRead::decoder()`) and decoding goes on, so the stream does
//! not end there. Only a lost framing ([`CodecError::is_fatal`], e.g. a `length` prefix over
//! the maximum) is an `Err`, after which `FramedRead` ends the stream.
//!
//! The hub's connections count each skipped frame by reason themselves, so they call
//! `decode_next(buf, eof)` (on [`FrameDecoder::decode_next`] or any codec), which reports every
//! skip as it happens, until it returns `Ok(None)`:
//!
//! - `Ok(Some(frame))`: one frame, cut out of the buffer without copying.
//! - `Ok(None)`: more bytes are needed.
//! - `Err(e)` with `!e.is_fatal()`: exactly one frame (or one run of garbage) was dropped, to be
//!   counted under `e.reason()`; call again on the same buffer and the stream goes on.
//! - `Err(e)` with `e.is_fatal()`: the framing is lost; close the connection.
//!
//! `decode` is that loop with the skips counted instead of returned (one more match per
//! call, which the connection does not pay). At end of stream (`eof`, or `decode_eof`) no bytes are left
//! behind: a trailing partial frame is either yielded (a `lines` line without its newline, a
//! `chunk`) or dropped with one non-fatal [`CodecError::Truncated`].
//!
//! For `lines`, `cobs` and `json` the connection runs the same loop in place (crate-internal
//! `next_in`): each frame comes back as a range of the buffer, with the same results in the
//! same order, and the buffer is advanced once per read instead of split per frame.
//! `decode_next` is built on it, so the property tests cover both.
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
//!
//! A skipped frame, seen by each loop:
//!
//! ```
//! use bytes::BytesMut;
//! use framehub::codec::{CodecError, FrameDecoder, FramingConfig};
//! use tokio_util::codec::Decoder;
//!
//! let mut decoder = FrameDecoder::new(&FramingConfig::Lines, 8);
//! let mut buf = BytesMut::from(&b"ok\nfar too long\npartial"[..]);
//! // The connection's loop: every skipped frame is reported.
//! assert_eq!(decoder.decode_next(&mut buf, false)?.as_deref(), Some(&b"ok"[..]));
//! let skipped = decoder.decode_next(&mut buf, false).unwrap_err();
//! assert!(matches!(skipped, CodecError::Oversize { max: 8 }) && !skipped.is_fatal());
//! assert_eq!(decoder.decode_next(&mut buf, false)?, None);
//! // tokio-util's loop: skipped frames are counted, not returned.
//! buf.extend_from_slice(b"\nthis one is too long\nlast");
//! assert_eq!(decoder.decode(&mut buf)?.as_deref(), Some(&b"partial"[..]));
//! assert_eq!(decoder.decode(&mut buf)?, None);
//! assert_eq!(decoder.skipped().oversize, 1);
//! assert_eq!(decoder.decode_eof(&mut buf)?.as_deref(), Some(&b"last"[..]));
//! # Ok::<(), CodecError>(())
//! ```

mod chunk;
mod cobs;
mod config;
mod delimited;
mod json;
mod length;
mod lines;
mod spacepacket;

use bytes::{Bytes, BytesMut};
#[cfg(doc)]
use tokio_util::codec::Decoder;

pub use self::chunk::ChunkCodec;
pub use self::cobs::CobsCodec;
use self::config::MAX_PACKET_ID;
pub use self::config::{Endian, FramingConfig, JsonConfig, LengthPrefix, SpacePacketConfig};
pub use self::json::JsonCodec;
pub use self::length::LengthCodec;
pub use self::lines::LinesCodec;
pub use self::spacepacket::SpacePacketCodec;

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
    /// A `json` frame that is not valid JSON, or bytes between values that cannot start one:
    /// skipped (see [`JsonCodec`] for where the stream goes on).
    #[error("invalid JSON value or bytes between values: skipped")]
    InvalidJson,
    /// A `json` frame nested deeper than `max_json_depth`: skipped up to its end.
    #[error("JSON value nested deeper than {max_depth} levels: skipped")]
    TooDeep {
        /// The limit in force.
        max_depth: usize,
    },
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
            Self::InvalidJson => "invalid_json",
            Self::TooDeep { .. } => "too_deep",
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

/// Frames a decoder skipped while [`Decoder::decode`] and [`Decoder::decode_eof`] went on
/// decoding, by reason (the labels of [`CodecError::reason`]). `decode_next` reports each skip
/// as an error instead and does not count it here.
///
/// ```
/// use bytes::BytesMut;
/// use framehub::codec::CobsCodec;
/// use tokio_util::codec::Decoder;
///
/// let mut codec = CobsCodec::new(64);
/// // An invalid frame (0x05 announces four more bytes), then a valid one.
/// let mut buf = BytesMut::from(&b"\0\x05a\0\x02b\0"[..]);
/// assert_eq!(codec.decode(&mut buf)?.as_deref(), Some(&b"b"[..]));
/// assert_eq!(codec.skipped().invalid_cobs, 1);
/// assert_eq!(codec.skipped().total(), 1);
/// # Ok::<(), framehub::codec::CodecError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Skipped {
    /// Frames over the maximum, discarded up to their end ([`CodecError::Oversize`]).
    pub oversize: u64,
    /// COBS frames that did not decode ([`CodecError::InvalidCobs`]).
    pub invalid_cobs: u64,
    /// Runs of bytes that cannot start a space packet ([`CodecError::InvalidHeader`]).
    pub invalid_header: u64,
    /// Space packets whose ID is not allowed ([`CodecError::UnknownPacketId`]).
    pub unknown_packet_id: u64,
    /// Partial frames dropped at end of stream ([`CodecError::Truncated`]).
    pub truncated: u64,
    /// Invalid JSON values and runs of garbage between them ([`CodecError::InvalidJson`]).
    pub invalid_json: u64,
    /// JSON values nested too deep ([`CodecError::TooDeep`]).
    pub too_deep: u64,
}

impl Skipped {
    /// Frames skipped for any reason.
    pub fn total(&self) -> u64 {
        self.oversize
            + self.invalid_cobs
            + self.invalid_header
            + self.unknown_packet_id
            + self.truncated
            + self.invalid_json
            + self.too_deep
    }

    /// Counts `e` if it is a skipped frame; false for the errors that must reach the caller.
    fn count(&mut self, e: &CodecError) -> bool {
        let counter = match e {
            CodecError::Oversize { .. } => &mut self.oversize,
            CodecError::InvalidCobs => &mut self.invalid_cobs,
            CodecError::InvalidHeader => &mut self.invalid_header,
            CodecError::UnknownPacketId { .. } => &mut self.unknown_packet_id,
            CodecError::Truncated { .. } => &mut self.truncated,
            CodecError::InvalidJson => &mut self.invalid_json,
            CodecError::TooDeep { .. } => &mut self.too_deep,
            CodecError::LengthOversize { .. } | CodecError::Unencodable(_) | CodecError::Io(_) => {
                return false;
            }
        };
        *counter += 1;
        true
    }
}

/// Runs `next` until it gives a frame, needs more bytes or fails fatally, counting the frames
/// it skips on the way: `decode_next`'s loop as `FramedRead` wants it.
fn skipping(
    skipped: &mut Skipped,
    mut next: impl FnMut() -> Result<Option<Bytes>, CodecError>,
) -> Result<Option<Bytes>, CodecError> {
    loop {
        match next() {
            Err(e) if skipped.count(&e) => {}
            step => return step,
        }
    }
}

/// The decoding side every codec shares, for a type with fields `decoder` (whose
/// `decode`/`decode_eof` take the buffer and the maximum), `max_frame_bytes` and `skipped`.
macro_rules! decoder_methods {
    ($codec:ty) => {
        impl $codec {
            /// The maximum frame size in force (payload bytes, without delimiter, prefix or
            /// COBS overhead).
            pub fn max_frame_bytes(&self) -> usize {
                self.max_frame_bytes
            }

            /// Changes the maximum from the next frame on (the hub lowers it until a peer
            /// authenticates). A `length` frame whose prefix was already read keeps the limit
            /// it was checked against.
            pub fn set_max_frame_bytes(&mut self, max: usize) {
                self.max_frame_bytes = max;
            }

            /// Frames that `Decoder::decode` and `decode_eof` skipped so far, by reason.
            pub fn skipped(&self) -> &$crate::codec::Skipped {
                &self.skipped
            }

            /// The next frame of `buf` (at end of stream when `eof`), reporting a skipped frame
            /// as a non-fatal `Err` rather than counting it: the loop contract of the
            /// [module docs](crate::codec). `Decoder::decode` is this loop with the skips
            /// counted in [`Self::skipped`].
            #[inline]
            pub fn decode_next(
                &mut self,
                buf: &mut ::bytes::BytesMut,
                eof: bool,
            ) -> Result<Option<::bytes::Bytes>, $crate::codec::CodecError> {
                if eof {
                    self.decoder.decode_eof(buf, self.max_frame_bytes)
                } else {
                    self.decoder.decode(buf, self.max_frame_bytes)
                }
            }
        }

        /// Skipped frames are counted in `skipped()` and decoding goes on; only a lost
        /// framing is an `Err`, so a `FramedRead` ends its stream only there.
        impl tokio_util::codec::Decoder for $codec {
            type Item = ::bytes::Bytes;
            type Error = $crate::codec::CodecError;

            fn decode(
                &mut self,
                buf: &mut ::bytes::BytesMut,
            ) -> Result<Option<::bytes::Bytes>, $crate::codec::CodecError> {
                let max = self.max_frame_bytes;
                $crate::codec::skipping(&mut self.skipped, || self.decoder.decode(buf, max))
            }

            fn decode_eof(
                &mut self,
                buf: &mut ::bytes::BytesMut,
            ) -> Result<Option<::bytes::Bytes>, $crate::codec::CodecError> {
                let max = self.max_frame_bytes;
                $crate::codec::skipping(&mut self.skipped, || self.decoder.decode_eof(buf, max))
            }
        }
    };
}

/// The encoding side every codec shares, for a type with a field `max_frame_bytes` and a
/// method `encode_payload` that frames a payload of at most that size.
macro_rules! encoder_impls {
    ($codec:ty) => {
        /// A payload over the maximum, or one the framing cannot carry, is refused with an
        /// error and nothing is written.
        impl tokio_util::codec::Encoder<&[u8]> for $codec {
            type Error = $crate::codec::CodecError;

            fn encode(
                &mut self,
                payload: &[u8],
                dst: &mut ::bytes::BytesMut,
            ) -> Result<(), $crate::codec::CodecError> {
                let max = self.max_frame_bytes;
                if payload.len() > max {
                    return Err($crate::codec::CodecError::Oversize { max });
                }
                self.encode_payload(payload, dst)
            }
        }

        impl tokio_util::codec::Encoder<::bytes::Bytes> for $codec {
            type Error = $crate::codec::CodecError;

            fn encode(
                &mut self,
                payload: ::bytes::Bytes,
                dst: &mut ::bytes::BytesMut,
            ) -> Result<(), $crate::codec::CodecError> {
                tokio_util::codec::Encoder::encode(self, &payload[..], dst)
            }
        }
    };
}

pub(crate) use {decoder_methods, encoder_impls};

/// Decodes frames of the framing a [`FramingConfig`] names, from a read buffer; see the
/// [module docs](self) for the two decode loops. With `FramedRead` it behaves as the
/// framing's own codec ([`LinesCodec`], ...) does.
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
///
/// Over a socket, with the framing chosen at run time:
///
/// ```no_run
/// use framehub::codec::{FrameDecoder, FramingConfig};
/// use futures_util::StreamExt;
/// use tokio_util::codec::FramedRead;
///
/// # async fn demo(socket: tokio::net::TcpStream) -> Result<(), framehub::codec::CodecError> {
/// let mut frames = FramedRead::new(socket, FrameDecoder::new(&FramingConfig::Cobs, 4096));
/// while let Some(frame) = frames.next().await {
///     println!("{} bytes", frame?.len());
/// }
/// println!("{} frames skipped", frames.decoder().skipped().total());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    decoder: FramingDecoder,
    max_frame_bytes: usize,
    skipped: Skipped,
}

#[derive(Debug)]
enum FramingDecoder {
    Lines(lines::LinesDecoder),
    Length(length::LengthDecoder),
    Cobs(cobs::CobsDecoder),
    SpacePacket(spacepacket::SpacePacketDecoder),
    Chunk(chunk::ChunkDecoder),
    Json(json::JsonDecoder),
}

impl FramingDecoder {
    #[inline]
    fn decode(&mut self, buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, CodecError> {
        match self {
            Self::Lines(d) => d.decode(buf, max),
            Self::Length(d) => d.decode(buf, max),
            Self::Cobs(d) => d.decode(buf, max),
            Self::SpacePacket(d) => d.decode(buf, max),
            Self::Chunk(d) => d.decode(buf, max),
            Self::Json(d) => d.decode(buf, max),
        }
    }

    #[inline]
    fn decode_eof(&mut self, buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, CodecError> {
        match self {
            Self::Lines(d) => d.decode_eof(buf, max),
            Self::Length(d) => d.decode_eof(buf, max),
            Self::Cobs(d) => d.decode_eof(buf, max),
            Self::SpacePacket(d) => d.decode_eof(buf, max),
            Self::Chunk(d) => d.decode_eof(buf, max),
            Self::Json(d) => d.decode_eof(buf, max),
        }
    }
}

impl FrameDecoder {
    /// A decoder for `framing` that accepts frames of at most `max_frame_bytes` (payload bytes,
    /// without delimiter, prefix or COBS overhead).
    ///
    /// `framing` is expected to have passed [`FramingConfig::validate`]; rather than panic on an
    /// invalid one, a prefix width outside 1..=8 is clamped and packet IDs over 13 bits never
    /// match.
    pub fn new(framing: &FramingConfig, max_frame_bytes: usize) -> Self {
        let decoder = match framing {
            FramingConfig::Lines => FramingDecoder::Lines(lines::LinesDecoder::default()),
            FramingConfig::Length(prefix) => {
                FramingDecoder::Length(length::LengthDecoder::new(*prefix))
            }
            FramingConfig::Cobs => FramingDecoder::Cobs(cobs::CobsDecoder::default()),
            FramingConfig::SpacePacket(config) => {
                FramingDecoder::SpacePacket(spacepacket::SpacePacketDecoder::new(config))
            }
            FramingConfig::Chunk => FramingDecoder::Chunk(chunk::ChunkDecoder),
            FramingConfig::Json(config) => FramingDecoder::Json(json::JsonDecoder::new(config)),
        };
        Self {
            decoder,
            max_frame_bytes,
            skipped: Skipped::default(),
        }
    }

    /// `json` framing: values nested deeper than `depth` levels (the top-level object or array
    /// is level 1) are skipped and counted as `too_deep` (a listener passes its
    /// `max_json_depth`; the default is [`crate::json::DEFAULT_MAX_DEPTH`]). Other framings
    /// ignore it.
    pub fn with_max_json_depth(mut self, depth: usize) -> Self {
        if let FramingDecoder::Json(d) = &mut self.decoder {
            d.set_max_depth(depth);
        }
        self
    }

    /// Bytes of the current `json` value scanned so far (tests: nothing is scanned twice).
    #[cfg(test)]
    pub(crate) fn json_scanned(&self) -> usize {
        match &self.decoder {
            FramingDecoder::Json(d) => d.scanned(),
            _ => 0,
        }
    }

    /// Whether [`Self::next_in`] serves this framing: its frames are bytes of the input, found
    /// without cutting the buffer (`lines`, `json`; `cobs` frames are found in place and decoded straight
    /// into the caller's arena). (Measured for `length` too: 7% slower than cutting, so it is
    /// not used there.)
    pub(crate) fn decodes_in_place(&self) -> bool {
        matches!(
            self.decoder,
            FramingDecoder::Lines(_) | FramingDecoder::Cobs(_) | FramingDecoder::Json(_)
        )
    }

    /// Whether the ranges [`Self::next_in`] finds are encoded frames that
    /// [`Self::decode_found`] turns into payloads (`cobs`), rather than the payloads themselves.
    pub(crate) fn finds_encoded(&self) -> bool {
        matches!(self.decoder, FramingDecoder::Cobs(_))
    }

    /// Decodes an encoded frame found by [`Self::next_in`] onto the end of `out` (left as it
    /// was on an error): the same payload, or the same error, as [`Self::decode_next`] gives.
    pub(crate) fn decode_found(
        &self,
        encoded: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), CodecError> {
        cobs::decode_into(encoded, out, self.max_frame_bytes)
    }

    /// The in-place decode loop, for framings that [`Self::decodes_in_place`]: the next frame of
    /// `buf[*pos..]` as a range of `buf`, with `*pos` moved past everything consumed (frames,
    /// delimiters, dropped bytes). Same results, in the same order, as [`Self::decode_next`];
    /// the caller drops `buf[..*pos]` with [`consume`] once it is done with the frames, so the
    /// read buffer is never split per frame. Other framings find nothing here.
    pub(crate) fn next_in(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
        eof: bool,
    ) -> Result<Option<std::ops::Range<usize>>, CodecError> {
        let max = self.max_frame_bytes;
        match &mut self.decoder {
            FramingDecoder::Lines(d) if eof => d.next_in_eof(buf, pos, max),
            FramingDecoder::Lines(d) => d.next_in(buf, pos, max),
            FramingDecoder::Cobs(d) if eof => d.next_in_eof(buf, pos, max),
            FramingDecoder::Cobs(d) => d.next_in(buf, pos, max),
            FramingDecoder::Json(d) if eof => d.next_in_eof(buf, pos, max),
            FramingDecoder::Json(d) => d.next_in(buf, pos, max),
            _ => Ok(None),
        }
    }
}

decoder_methods!(FrameDecoder);

/// Frames payloads for the wire in the framing a [`FramingConfig`] names (egress, clients,
/// tests); with `FramedWrite` it behaves as the framing's own codec does.
///
/// A payload the framing cannot carry is refused with an error and nothing is written.
/// For `spacepacket` the payload must already be one whole space packet, checked but written
/// as is; the allowlist is not applied (it filters what peers send, not what we answer).
/// For `chunk` the payload is written as is; an empty payload writes nothing, since an empty
/// read cannot exist. For `json` the payload must be exactly one JSON value (strict, whatever
/// the framing's `validate`), written as is and followed by `\n`.
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

    fn encode_payload(&self, payload: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        match &self.framing {
            FramingConfig::Lines => lines::encode(payload, dst),
            FramingConfig::Length(prefix) => length::encode(*prefix, payload, dst),
            FramingConfig::Cobs => cobs::encode(payload, dst),
            FramingConfig::SpacePacket(_) => spacepacket::encode(payload, dst),
            FramingConfig::Chunk => chunk::encode(payload, dst),
            FramingConfig::Json(_) => json::encode(payload, dst),
        }
    }
}

encoder_impls!(FrameEncoder);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio_util::codec::{Decoder, Encoder};

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
            decoder.decode_next(&mut buf, false),
            Err(CodecError::Oversize { max: 4 })
        ));
        decoder.set_max_frame_bytes(8);
        assert_eq!(decoder.max_frame_bytes(), 8);
        assert_eq!(
            decoder
                .decode_next(&mut buf, false)
                .ok()
                .flatten()
                .as_deref(),
            Some(&b"123456"[..])
        );
    }

    #[test]
    fn decode_counts_skipped_frames_and_goes_on() {
        let mut decoder = FrameDecoder::new(&FramingConfig::Cobs, 4);
        // Oversize, invalid, valid, then a frame cut off by the end of the stream.
        let mut buf = BytesMut::from(&b"\0\x0612345\0\x05a\0\x02b\0\x02c"[..]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap().as_deref(),
            Some(&b"b"[..])
        );
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        assert_eq!(decoder.decode_eof(&mut buf).unwrap(), None);
        let skipped = *decoder.skipped();
        assert_eq!(
            (skipped.oversize, skipped.invalid_cobs, skipped.truncated),
            (1, 1, 1)
        );
        assert_eq!(skipped.total(), 3);
        // `decode_next` reports skips instead of counting them.
        let mut buf = BytesMut::from(&b"\0\x05a\0"[..]);
        assert!(matches!(
            decoder.decode_next(&mut buf, false),
            Err(CodecError::InvalidCobs)
        ));
        assert_eq!(decoder.skipped(), &skipped);
    }

    #[test]
    fn decode_returns_a_lost_framing() {
        let mut codec = LengthCodec::new(LengthPrefix::default(), 2);
        let mut buf = BytesMut::from(&b"\0\0\0\x01a\0\0\0\x03abc"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some(&b"a"[..]));
        assert!(codec.decode(&mut buf).is_err_and(|e| e.is_fatal()));
        assert_eq!(codec.skipped().total(), 0);
    }

    #[test]
    fn framing_codecs_encode_as_frame_encoder_does() {
        let prefix = LengthPrefix {
            bytes: 2,
            endian: Endian::Little,
        };
        let packet = &b"\x18\x01\xc0\0\0\0\xbb"[..];
        type Encode = Box<dyn FnMut(&[u8], &mut BytesMut) -> Result<(), CodecError>>;
        let cases: [(FramingConfig, Encode); 5] = [
            (
                FramingConfig::Lines,
                Box::new(|p, dst| LinesCodec::new(8).encode(p, dst)),
            ),
            (
                FramingConfig::Length(prefix),
                Box::new(move |p, dst| LengthCodec::new(prefix, 8).encode(p, dst)),
            ),
            (
                FramingConfig::Cobs,
                Box::new(|p, dst| CobsCodec::new(8).encode(p, dst)),
            ),
            (
                FramingConfig::SpacePacket(SpacePacketConfig::default()),
                Box::new(|p, dst| {
                    SpacePacketCodec::new(&SpacePacketConfig::default(), 8).encode(p, dst)
                }),
            ),
            (
                FramingConfig::Chunk,
                Box::new(|p, dst| ChunkCodec::new(8).encode(p, dst)),
            ),
        ];
        for (framing, mut encode) in cases {
            let mut ours = BytesMut::new();
            let mut theirs = BytesMut::new();
            let payload = if matches!(framing, FramingConfig::SpacePacket(_)) {
                packet
            } else {
                &b"a\0b"[..]
            };
            encode(payload, &mut ours).unwrap();
            FrameEncoder::new(&framing, 8)
                .encode(payload, &mut theirs)
                .unwrap();
            assert_eq!(ours, theirs, "{framing:?}");
            assert!(matches!(
                encode(&b"123456789"[..], &mut ours),
                Err(CodecError::Oversize { max: 8 })
            ));
        }
    }

    #[test]
    fn encoder_refuses_oversize_in_every_framing() {
        for framing in [
            FramingConfig::Lines,
            FramingConfig::Length(LengthPrefix::default()),
            FramingConfig::Cobs,
            FramingConfig::SpacePacket(SpacePacketConfig::default()),
            FramingConfig::Chunk,
            FramingConfig::Json(JsonConfig::default()),
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

    use super::FrameDecoder;

    /// Decodes everything `buf` holds; non-fatal errors become `Err(reason)`.
    pub(crate) fn drain(
        d: &mut FrameDecoder,
        buf: &mut BytesMut,
        eof: bool,
    ) -> Vec<Result<Bytes, String>> {
        let mut out = Vec::new();
        loop {
            let step = d.decode_next(buf, eof);
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

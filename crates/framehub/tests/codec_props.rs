//! Property tests for every framing: however the byte stream is split into reads, the decoder
//! yields the same frames and the same errors. Streams are built with encoders independent of
//! ours where one exists (the `cobs` crate, the `spacepackets` crate, a hand-written NinjaTCP
//! prefix, a plain `\n` join, `serde_json`); `FrameEncoder` is then checked against our own
//! decoder.
//! Every stream is also decoded as `FramedRead` does (`Decoder::decode`, by `FrameDecoder` and
//! by the framing's own codec): the same frames, with the skipped ones counted by reason.

#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use framehub::codec::{
    ChunkCodec, CobsCodec, CodecError, Endian, FrameDecoder, FrameEncoder, FramingConfig,
    JsonCodec, JsonConfig, LengthCodec, LengthPrefix, LinesCodec, Skipped, SpacePacketCodec,
    SpacePacketConfig,
};
use framehub::json::DEFAULT_MAX_DEPTH;
use proptest::prelude::*;
use proptest::sample::Index;
use spacepackets::{CcsdsPacketCreator, PacketId, PacketSequenceControl, SpHeader};
use tokio_util::codec::{Decoder, Encoder};

/// A frame, or the reason of an error (with `!` appended when fatal).
type Out = Result<Vec<u8>, String>;

/// Feeds `stream` in reads cut at `cuts`, decoding after each read as the connection does, then
/// drains with `decode_eof`. Stops at the first fatal error.
fn decode_split(framing: &FramingConfig, max: usize, stream: &[u8], cuts: &[Index]) -> Vec<Out> {
    decode_split_depth(framing, max, DEFAULT_MAX_DEPTH, stream, cuts)
}

/// [`decode_split`] with a nesting limit for `json`.
fn decode_split_depth(
    framing: &FramingConfig,
    max: usize,
    depth: usize,
    stream: &[u8],
    cuts: &[Index],
) -> Vec<Out> {
    let mut decoder = FrameDecoder::new(framing, max).with_max_json_depth(depth);
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    for read in split(stream, cuts) {
        buf.extend_from_slice(read);
        if !drain(&mut decoder, &mut buf, false, &mut out) {
            return out;
        }
    }
    drain(&mut decoder, &mut buf, true, &mut out);
    assert!(buf.is_empty(), "decode_eof left {} bytes", buf.len());
    check_framed(framing, max, depth, stream, cuts, &out);
    out
}

/// Runs the decode loop until more bytes are needed; false after a fatal error.
fn drain(decoder: &mut FrameDecoder, buf: &mut BytesMut, eof: bool, out: &mut Vec<Out>) -> bool {
    loop {
        let step = decoder.decode_next(buf, eof);
        match step {
            Ok(Some(frame)) => out.push(Ok(frame.to_vec())),
            Ok(None) => return true,
            Err(e) if e.is_fatal() => {
                out.push(Err(format!("{}!", e.reason())));
                return false;
            }
            Err(e) => out.push(Err(e.reason().to_owned())),
        }
    }
}

/// A decoder as `FramedRead` uses it, with its tally of skipped frames.
trait Counting: Decoder<Item = Bytes, Error = CodecError> {
    fn tally(&self) -> Skipped;
}

macro_rules! counting {
    ($($codec:ty),*) => {
        $(impl Counting for $codec {
            fn tally(&self) -> Skipped {
                *self.skipped()
            }
        })*
    };
}

counting!(
    FrameDecoder,
    LinesCodec,
    LengthCodec,
    CobsCodec,
    SpacePacketCodec,
    ChunkCodec,
    JsonCodec
);

/// The framing's own codec.
fn codec_for(framing: &FramingConfig, max: usize, depth: usize) -> Box<dyn Counting> {
    match framing {
        FramingConfig::Lines => Box::new(LinesCodec::new(max)),
        FramingConfig::Length(prefix) => Box::new(LengthCodec::new(*prefix, max)),
        FramingConfig::Cobs => Box::new(CobsCodec::new(max)),
        FramingConfig::SpacePacket(config) => Box::new(SpacePacketCodec::new(config, max)),
        FramingConfig::Chunk => Box::new(ChunkCodec::new(max)),
        FramingConfig::Json(config) => {
            Box::new(JsonCodec::new(config, max).with_max_json_depth(depth))
        }
    }
}

/// Checks that `FramedRead`'s loop over the same reads, with `FrameDecoder` and with the
/// framing's own codec, gives the frames and the fatal error of `reported` (what `decode_next`
/// reported) and counts its skipped frames by reason instead of returning them.
fn check_framed(
    framing: &FramingConfig,
    max: usize,
    depth: usize,
    stream: &[u8],
    cuts: &[Index],
    reported: &[Out],
) {
    let mut skips = Skipped::default();
    let mut delivered = Vec::new();
    for out in reported {
        let counter = match out {
            Err(reason) if !reason.ends_with('!') => match reason.as_str() {
                "oversize" => &mut skips.oversize,
                "invalid_cobs" => &mut skips.invalid_cobs,
                "invalid_header" => &mut skips.invalid_header,
                "unknown_packet_id" => &mut skips.unknown_packet_id,
                "truncated" => &mut skips.truncated,
                "invalid_json" => &mut skips.invalid_json,
                "too_deep" => &mut skips.too_deep,
                other => panic!("unexpected skip reason {other}"),
            },
            _ => {
                delivered.push(out.clone());
                continue;
            }
        };
        *counter += 1;
    }
    let decoders: [Box<dyn Counting>; 2] = [
        Box::new(FrameDecoder::new(framing, max).with_max_json_depth(depth)),
        codec_for(framing, max, depth),
    ];
    for mut decoder in decoders {
        assert_eq!(
            framed_split(&mut *decoder, stream, cuts),
            delivered,
            "{framing:?}"
        );
        assert_eq!(decoder.tally(), skips, "{framing:?}");
    }
}

/// Decodes `stream` read by read as `FramedRead` does: `decode` after each read, then
/// `decode_eof` until it has nothing more; the first error ends the stream.
fn framed_split(decoder: &mut dyn Counting, stream: &[u8], cuts: &[Index]) -> Vec<Out> {
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    let mut reads = split(stream, cuts).into_iter();
    loop {
        let read = reads.next();
        if let Some(read) = read {
            buf.extend_from_slice(read);
        }
        loop {
            let step = match read {
                Some(_) => decoder.decode(&mut buf),
                None => decoder.decode_eof(&mut buf),
            };
            match step {
                Ok(Some(frame)) => out.push(Ok(frame.to_vec())),
                Ok(None) if read.is_some() => break,
                Ok(None) => return out,
                Err(e) => {
                    assert!(e.is_fatal(), "a skip reached FramedRead: {e}");
                    out.push(Err(format!("{}!", e.reason())));
                    return out;
                }
            }
        }
    }
}

fn split<'a>(stream: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
    at.push(0);
    at.push(stream.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &stream[w[0]..w[1]]).collect()
}

fn cuts() -> impl Strategy<Value = Vec<Index>> {
    prop::collection::vec(any::<Index>(), 0..24)
}

/// A frame of up to `max_len` bytes in which the framings' special values (`\n`, `\r`, `0x00`,
/// `0xFF`) are far more frequent than 1/256. Built from a length and a seed rather than byte by
/// byte, which keeps generation fast in debug builds.
fn frame(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    (0..=max_len, any::<u64>()).prop_map(|(len, mut seed)| {
        (0..len)
            .map(|_| {
                // xorshift64: any deterministic spread of the seed will do.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let byte = (seed >> 24) as u8;
                match byte % 16 {
                    0 => b'\n',
                    1 => b'\r',
                    2 => 0,
                    3 => 0xFF,
                    _ => byte,
                }
            })
            .collect()
    })
}

fn frames(max_len: usize, count: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(frame(max_len), 0..=count)
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn length_config(bytes: u8, endian: Endian) -> FramingConfig {
    FramingConfig::Length(LengthPrefix { bytes, endian })
}

fn spacepacket_config(allowed: Option<Vec<u16>>) -> FramingConfig {
    FramingConfig::SpacePacket(SpacePacketConfig {
        allowed_packet_ids: allowed,
    })
}

/// A packet built by the `spacepackets` crate.
fn space_packet(packet_id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let header = SpHeader::new(
        PacketId::from(packet_id),
        PacketSequenceControl::from(seq),
        0,
    );
    let packet_type = spacepackets::packet_type_in_raw_packet_id(packet_id);
    CcsdsPacketCreator::new(header, packet_type, data, None)
        .unwrap()
        .to_vec()
}

const JSON_MAX: usize = 64;
const JSON_DEPTH: usize = 4;

/// A JSON value nested at most 3 levels (under `JSON_DEPTH`), strings full of the bytes the
/// scanner looks at.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| Value::from(i64::from(n))),
        (-1000i32..1000).prop_map(|n| Value::from(f64::from(n) / 8.0)),
        "[a-z{}\\[\\]\"\\\\\n: ,é]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z\"{]{0,4}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One piece of a `json` stream and what the decoder makes of it.
#[derive(Debug, Clone)]
struct JsonItem {
    bytes: Vec<u8>,
    expected: Vec<Out>,
    /// A complete value that is not valid JSON (delivered when not validated).
    invalid_value: bool,
}

fn json_item() -> impl Strategy<Value = JsonItem> {
    let item = |bytes: Vec<u8>, expected: Vec<Out>| JsonItem {
        bytes,
        expected,
        invalid_value: false,
    };
    prop_oneof![
        // A valid value, compact or pretty: a frame, or oversize.
        4 => (json_value(), any::<bool>()).prop_map(move |(v, pretty)| {
            let text = if pretty {
                serde_json::to_vec_pretty(&v).unwrap()
            } else {
                serde_json::to_vec(&v).unwrap()
            };
            let out = if text.len() > JSON_MAX {
                Err("oversize".to_owned())
            } else {
                Ok(text.clone())
            };
            item(text, vec![out])
        }),
        // Nested deeper than the limit (and short).
        1 => (JSON_DEPTH + 1..JSON_DEPTH + 20).prop_map(move |k| {
            let text = format!("{}1{}", "[".repeat(k), "]".repeat(k)).into_bytes();
            item(text, vec![Err("too_deep".to_owned())])
        }),
        // Complete but not valid JSON: dropped whole.
        1 => prop::sample::select(vec![&b"{\"cmd\": 0x01}"[..], b"[1,]", b"{\"a\" 1}", b"01", b"tru"])
            .prop_map(|text| JsonItem {
                bytes: text.to_vec(),
                expected: vec![Err("invalid_json".to_owned())],
                invalid_value: true,
            }),
        // Garbage, or a string broken by a newline, then the object where the decoder
        // resynchronises.
        1 => (
            prop::sample::select(vec![&b"}"[..], b"] :,", b"#garbage 1 2 \"x\"", b"[\"broken\n 1, 2 ] }"]),
            json_value(),
        )
            .prop_map(move |(garbage, v)| {
                let object = serde_json::to_vec(&serde_json::json!({ "after": v })).unwrap();
                let out = if object.len() > JSON_MAX {
                    Err("oversize".to_owned())
                } else {
                    Ok(object.clone())
                };
                item([garbage, &object[..]].concat(), vec![Err("invalid_json".to_owned()), out])
            }),
    ]
}

const LINES_MAX: usize = 16;
const COBS_MAX: usize = 300;
const SP_MAX: usize = 300;
const SP_IDS: [u16; 4] = [0x1801, 0x0802, 0x1803, 0x0000];

proptest! {
    #[test]
    fn lines_any_split(
        lines in prop::collection::vec(
            frame(2 * LINES_MAX).prop_map(|f| f.into_iter().filter(|&b| b != b'\n').collect::<Vec<u8>>()),
            0..20,
        ),
        final_newline in any::<bool>(),
        cuts in cuts(),
    ) {
        let mut stream = lines.join(&b"\n"[..]);
        if final_newline && !lines.is_empty() {
            stream.push(b'\n');
        }
        let mut expected = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let last_unterminated = i + 1 == lines.len() && !final_newline;
            if last_unterminated && strip_cr(line).is_empty() {
                break;
            }
            let content = strip_cr(line);
            expected.push(if content.len() > LINES_MAX {
                Err("oversize".to_owned())
            } else {
                Ok(content.to_vec())
            });
        }
        prop_assert_eq!(decode_split(&FramingConfig::Lines, LINES_MAX, &stream, &cuts), expected);
    }

    #[test]
    fn ninjatcp_any_split(
        frames in frames(300, 12),
        cuts in cuts(),
    ) {
        const MAX: usize = 256;
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for f in &frames {
            stream.extend_from_slice(&(f.len() as u32).to_be_bytes());
            stream.extend_from_slice(f);
        }
        for f in &frames {
            if f.len() > MAX {
                expected.push(Err("oversize!".to_owned()));
                break;
            }
            expected.push(Ok(f.clone()));
        }
        let ninja = FramingConfig::Length(LengthPrefix::default());
        prop_assert_eq!(decode_split(&ninja, MAX, &stream, &cuts), expected);
    }

    #[test]
    fn length_truncated_stream(
        frames in prop::collection::vec(frame(100), 1..8),
        keep in any::<Index>(),
        cuts in cuts(),
    ) {
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for f in &frames {
            stream.extend_from_slice(&(f.len() as u32).to_be_bytes());
            stream.extend_from_slice(f);
            ends.push(stream.len());
        }
        let keep = keep.index(stream.len() + 1);
        let mut expected: Vec<Out> = frames
            .iter()
            .zip(&ends)
            .take_while(|(_, end)| **end <= keep)
            .map(|(f, _)| Ok(f.clone()))
            .collect();
        let complete = ends.iter().rev().find(|end| **end <= keep).copied().unwrap_or(0);
        if keep > complete {
            expected.push(Err("truncated".to_owned()));
        }
        let ninja = FramingConfig::Length(LengthPrefix::default());
        prop_assert_eq!(decode_split(&ninja, 1024, &stream[..keep], &cuts), expected);
    }

    #[test]
    fn length_widths_any_split(
        width in prop::sample::select(vec![1u8, 2, 4, 8]),
        little in any::<bool>(),
        frames in frames(255, 12),
        cuts in cuts(),
    ) {
        let framing = length_config(width, if little { Endian::Little } else { Endian::Big });
        let mut encoder = FrameEncoder::new(&framing, 255);
        let mut stream = BytesMut::new();
        for f in &frames {
            encoder.encode(&f[..], &mut stream).unwrap();
        }
        let expected: Vec<Out> = frames.iter().cloned().map(Ok).collect();
        prop_assert_eq!(decode_split(&framing, 255, &stream, &cuts), expected);
    }

    #[test]
    fn cobs_any_split(
        frames in frames(COBS_MAX + 60, 10),
        extra_delimiters in prop::collection::vec(0usize..3, 10),
        cuts in cuts(),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (f, extra) in frames.iter().zip(extra_delimiters.iter().cycle()) {
            stream.push(0);
            stream.extend_from_slice(&cobs::encode_vec(f));
            stream.push(0);
            stream.resize(stream.len() + extra, 0);
            expected.push(if f.len() > COBS_MAX {
                Err("oversize".to_owned())
            } else {
                Ok(f.clone())
            });
        }
        prop_assert_eq!(decode_split(&FramingConfig::Cobs, COBS_MAX, &stream, &cuts), expected);
    }

    #[test]
    fn spacepacket_any_split(
        packets in prop::collection::vec(
            (prop::sample::select(SP_IDS.to_vec()), any::<u16>(), frame(SP_MAX)
                .prop_filter("a packet has at least one data byte", |d| !d.is_empty())),
            0..10,
        ),
        garbage in prop::collection::vec(prop::collection::vec(0x20u8.., 0..4), 11),
        filtered in any::<bool>(),
        cuts in cuts(),
    ) {
        let allowed = filtered.then(|| vec![SP_IDS[0], SP_IDS[1]]);
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        let report_garbage = |run: &Vec<u8>, stream: &mut Vec<u8>, expected: &mut Vec<Out>| {
            stream.extend_from_slice(run);
            if !run.is_empty() {
                expected.push(Err("invalid_header".to_owned()));
            }
        };
        for ((id, seq, data), run) in packets.iter().zip(&garbage) {
            report_garbage(run, &mut stream, &mut expected);
            let packet = space_packet(*id, *seq, data);
            prop_assert_eq!(packet.len(), data.len() + 6);
            stream.extend_from_slice(&packet);
            expected.push(if allowed.as_ref().is_some_and(|ids| !ids.contains(id)) {
                Err("unknown_packet_id".to_owned())
            } else if packet.len() > SP_MAX {
                Err("oversize".to_owned())
            } else {
                Ok(packet)
            });
        }
        report_garbage(&garbage[packets.len()], &mut stream, &mut expected);
        let framing = spacepacket_config(allowed);
        prop_assert_eq!(decode_split(&framing, SP_MAX, &stream, &cuts), expected);
    }

    #[test]
    fn chunk_each_read_is_a_frame(
        reads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..10),
    ) {
        const MAX: usize = 64;
        let mut decoder = FrameDecoder::new(&FramingConfig::Chunk, MAX);
        let mut buf = BytesMut::new();
        let mut all_frames = Vec::new();
        for read in &reads {
            buf.extend_from_slice(read);
            let mut out = Vec::new();
            prop_assert!(drain(&mut decoder, &mut buf, false, &mut out));
            let frames: Vec<Vec<u8>> = out.into_iter().map(Result::unwrap).collect();
            let expected: Vec<Vec<u8>> = read.chunks(MAX).map(<[u8]>::to_vec).collect();
            prop_assert_eq!(&frames, &expected);
            all_frames.extend(frames);
        }
        prop_assert_eq!(all_frames.concat(), reads.concat());
    }

    /// `json`: values written by `serde_json` (compact or pretty), back to back or with any
    /// whitespace between them, mixed with oversize, too deep and invalid values, garbage and
    /// broken strings; a value cut by the end of the stream, or a number ending it. Any split
    /// gives the frames and skips the model predicts, under both decode loops.
    #[test]
    fn json_any_split(
        items in prop::collection::vec(json_item(), 0..12),
        seps in prop::collection::vec(prop::sample::select(vec!["", " ", "\n", "\r\n", "\t \n  "]), 12),
        tail in 0..3u8,
        cuts in cuts(),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (item, sep) in items.iter().zip(&seps) {
            // Two scalars need whitespace between them, or they would be one.
            let ends_token = stream.last().is_some_and(|b: &u8| b.is_ascii_alphanumeric());
            let sep = if sep.is_empty() && ends_token { " " } else { sep };
            stream.extend_from_slice(sep.as_bytes());
            stream.extend_from_slice(&item.bytes);
            expected.extend(item.expected.iter().cloned());
        }
        match tail {
            // A value cut by the end of the stream.
            1 => {
                stream.extend_from_slice(b" {\"open\": [1, \"");
                expected.push(Err("truncated".to_owned()));
            }
            // A number ends at the end of the stream.
            2 => {
                stream.extend_from_slice(b" -12.5e1");
                expected.push(Ok(b"-12.5e1".to_vec()));
            }
            _ => {}
        }
        let framing = FramingConfig::Json(JsonConfig::default());
        prop_assert_eq!(decode_split_depth(&framing, JSON_MAX, JSON_DEPTH, &stream, &cuts), expected);
    }

    /// `json` with `validate = false`: the same values and skips, except that an invalid but
    /// complete value is delivered as it is.
    #[test]
    fn json_unvalidated_any_split(
        items in prop::collection::vec(json_item(), 0..12),
        cuts in cuts(),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for item in &items {
            stream.push(b'\n');
            stream.extend_from_slice(&item.bytes);
            if item.invalid_value {
                expected.push(Ok(item.bytes.clone()));
            } else {
                expected.extend(item.expected.iter().cloned());
            }
        }
        let framing = FramingConfig::Json(JsonConfig { validate: false });
        prop_assert_eq!(decode_split_depth(&framing, JSON_MAX, JSON_DEPTH, &stream, &cuts), expected);
    }

    /// `FrameEncoder` output in the `json` framing decodes back to the same values.
    #[test]
    fn json_encoder_round_trip(
        values in prop::collection::vec(json_value(), 0..10),
        cuts in cuts(),
    ) {
        let framing = FramingConfig::Json(JsonConfig::default());
        let mut encoder = FrameEncoder::new(&framing, usize::MAX);
        let mut stream = BytesMut::new();
        let mut expected = Vec::new();
        for v in &values {
            let text = serde_json::to_vec(v).unwrap();
            encoder.encode(&text[..], &mut stream).unwrap();
            expected.push(Ok(text));
        }
        prop_assert_eq!(decode_split(&framing, 1 << 20, &stream, &cuts), expected);
    }

    /// FrameEncoder output decodes back to the same payloads in every framing.
    #[test]
    fn encoder_round_trip(
        payloads in frames(200, 10),
        seqs in prop::collection::vec(any::<u16>(), 10),
        cuts in cuts(),
    ) {
        const MAX: usize = 256;
        let lines: Vec<Vec<u8>> = payloads
            .iter()
            .map(|p| {
                let mut line: Vec<u8> = p.iter().copied().filter(|&b| b != b'\n').collect();
                while line.last() == Some(&b'\r') {
                    line.pop();
                }
                line
            })
            .collect();
        let packets: Vec<Vec<u8>> = payloads
            .iter()
            .zip(&seqs)
            .filter(|(p, _)| !p.is_empty())
            .map(|(p, seq)| space_packet(SP_IDS[1], *seq, p))
            .collect();
        let cases = [
            (FramingConfig::Lines, &lines),
            (length_config(1, Endian::Big), &payloads),
            (length_config(2, Endian::Little), &payloads),
            (length_config(4, Endian::Big), &payloads),
            (length_config(8, Endian::Little), &payloads),
            (FramingConfig::Cobs, &payloads),
            (spacepacket_config(Some(vec![SP_IDS[1]])), &packets),
        ];
        for (framing, frames) in cases {
            let mut encoder = FrameEncoder::new(&framing, MAX);
            let mut stream = BytesMut::new();
            for f in frames.iter() {
                encoder.encode(bytes::Bytes::copy_from_slice(f), &mut stream).unwrap();
            }
            let expected: Vec<Out> = frames.iter().cloned().map(Ok).collect();
            prop_assert_eq!(decode_split(&framing, MAX, &stream, &cuts), expected, "{:?}", framing);
        }
        // Chunk: a write arriving as one read comes back whole.
        let mut encoder = FrameEncoder::new(&FramingConfig::Chunk, MAX);
        let mut decoder = FrameDecoder::new(&FramingConfig::Chunk, MAX);
        for p in payloads.iter().filter(|p| !p.is_empty()) {
            let mut buf = BytesMut::new();
            encoder.encode(&p[..], &mut buf).unwrap();
            let frame = decoder.decode(&mut buf).unwrap();
            prop_assert_eq!(frame.as_deref(), Some(&p[..]));
        }
    }
}

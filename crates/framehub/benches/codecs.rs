//! Decode throughput of every framing: a ~1 MiB stream of small frames fed to `FrameDecoder` in
//! 64 KiB reads, as a connection does (the copy of each read into the buffer is included).

#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use framehub::codec::{FrameDecoder, FrameEncoder, FramingConfig, LengthPrefix, SpacePacketConfig};
use tokio_util::codec::Encoder;

const STREAM_BYTES: usize = 1 << 20;
const READ_BYTES: usize = 64 * 1024;
const MAX_FRAME: usize = 1 << 20;

/// Deterministic payload bytes of `len`, with a zero every so often so COBS has work to do.
fn payload(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| match (i * 31 + seed * 7) % 97 {
            0 => 0,
            n => (n as u8).wrapping_mul(13).max(1),
        })
        .collect()
}

/// A radar-like NDJSON line of about `len` bytes.
fn json_line(len: usize, seed: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"node_id":"radar{}","token":"secret","timestamp":{},"delay":["#,
        seed % 8,
        1_768_932_172_478u64 + seed as u64
    );
    let mut line = head.into_bytes();
    while line.len() + 2 < len {
        line.extend_from_slice(b"40.46,");
    }
    line.truncate(len - 2);
    line.extend_from_slice(b"]}");
    line
}

/// Encodes frames from `make` until the stream reaches about 1 MiB.
fn stream(framing: &FramingConfig, make: impl Fn(usize) -> Vec<u8>) -> Vec<u8> {
    let mut encoder = FrameEncoder::new(framing, MAX_FRAME);
    let mut out = BytesMut::new();
    let mut seed = 0;
    while out.len() < STREAM_BYTES {
        encoder.encode(&make(seed)[..], &mut out).unwrap();
        seed += 1;
    }
    out.to_vec()
}

/// A packet with APID `seed % 16` and `len` bytes in all.
fn space_packet(len: usize, seed: usize) -> Vec<u8> {
    let mut packet = vec![0x18, (seed % 16) as u8, 0xC0, 0x00];
    packet.extend_from_slice(&((len - 7) as u16).to_be_bytes());
    packet.extend_from_slice(&payload(len - 6, seed));
    packet
}

fn decode_all(framing: &FramingConfig, stream: &[u8]) -> usize {
    let mut decoder = FrameDecoder::new(framing, MAX_FRAME);
    let mut buf = BytesMut::with_capacity(2 * READ_BYTES);
    let mut frames = 0;
    for read in stream.chunks(READ_BYTES) {
        buf.extend_from_slice(read);
        // The connection's cut loop; `Decoder::decode` would add only the skip count.
        while let Some(frame) = decoder.decode_next(&mut buf, false).unwrap() {
            black_box(frame);
            frames += 1;
        }
    }
    frames
}

fn bench_framing(c: &mut Criterion, framing: FramingConfig, cases: &[(&str, Vec<u8>)]) {
    let mut group = c.benchmark_group(framing.name());
    for (name, stream) in cases {
        group.throughput(Throughput::Bytes(stream.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| decode_all(&framing, black_box(stream)))
        });
    }
    group.finish();
}

fn codecs(c: &mut Criterion) {
    let lines = FramingConfig::Lines;
    let lines_stream = stream(&lines, |seed| json_line(200, seed));
    bench_framing(c, lines, &[("200B", lines_stream)]);

    let length = FramingConfig::Length(LengthPrefix::default());
    let cases = [200, 256].map(|len| {
        (
            if len == 200 { "200B" } else { "256B" },
            stream(&length, |seed| payload(len, seed)),
        )
    });
    bench_framing(c, length, &cases);

    let cobs = FramingConfig::Cobs;
    let cases = [200, 256].map(|len| {
        (
            if len == 200 { "200B" } else { "256B" },
            stream(&cobs, |seed| payload(len, seed)),
        )
    });
    bench_framing(c, cobs, &cases);

    let spacepacket = FramingConfig::SpacePacket(SpacePacketConfig {
        allowed_packet_ids: Some((0x1800..0x1810).collect()),
    });
    let sp_stream = stream(&spacepacket, |seed| space_packet(200, seed));
    bench_framing(c, spacepacket, &[("200B", sp_stream)]);

    let chunk = FramingConfig::Chunk;
    let chunk_stream = payload(STREAM_BYTES, 0);
    bench_framing(c, chunk, &[("64KiB-reads", chunk_stream)]);
}

criterion_group!(benches, codecs);
criterion_main!(benches);

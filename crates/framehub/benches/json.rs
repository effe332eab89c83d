//! Benchmarks of the envelope scanner against serde_json on node frames.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use framehub::json::{DEFAULT_MAX_DEPTH, EnvelopeKeys, scan_envelope, validate};
use serde::Deserialize;

/// What a node-protocol handler would deserialize with serde: the envelope, borrowed.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Env<'a> {
    #[serde(borrow)]
    node_id: Option<&'a str>,
    #[serde(borrow)]
    token: Option<&'a str>,
    #[serde(rename = "type", borrow)]
    msg_type: Option<&'a str>,
    timestamp: Option<u64>,
}

/// The example frame of the node protocol (DESIGN.md).
const RADAR_EXAMPLE: &[u8] = br#"{"node_id":"radar3","token":"secret","timestamp":1768932172478,"delay":[40.46],"doppler":[-27.99],"snr":[12.08],"adsb":[null]}"#;

/// A radar frame of about 200 bytes.
fn radar_200() -> Vec<u8> {
    br#"{"node_id":"radar3","token":"secret","timestamp":1768932172478,"delay":[40.46,41.2,55.07],"doppler":[-27.99,13.5,2.25],"snr":[12.08,9.7,15.3],"adsb":[null,{"hex":"3c6444","flight":"DLH9LF"},null]}"#.to_vec()
}

/// A radar frame of about 1 KiB: more detections, ADS-B matches with several fields.
fn radar_1k() -> Vec<u8> {
    let mut delay = Vec::new();
    let mut doppler = Vec::new();
    let mut snr = Vec::new();
    let mut adsb = Vec::new();
    for k in 0..19 {
        delay.push(format!("{:.2}", 20.0 + k as f64 * 3.17));
        doppler.push(format!("{:.2}", -40.0 + k as f64 * 6.91));
        snr.push(format!("{:.2}", 8.0 + k as f64 * 0.73));
        adsb.push(if k % 3 == 0 {
            format!(
                r#"{{"hex":"3c64{k:02x}","flight":"DLH{k}LF","lat":-34.92{k},"lon":138.60{k},"alt_baro":{}}}"#,
                10000 + k * 250
            )
        } else {
            "null".to_owned()
        });
    }
    let s = format!(
        r#"{{"node_id":"radar3","token":"secret","timestamp":1768932172478,"delay":[{}],"doppler":[{}],"snr":[{}],"adsb":[{}]}}"#,
        delay.join(","),
        doppler.join(","),
        snr.join(","),
        adsb.join(",")
    );
    s.into_bytes()
}

/// A string-heavy frame: a 4 KiB text field (ASCII).
fn string_4k() -> Vec<u8> {
    let text: String = (0..4096)
        .map(|i| (b'A' + (i * 7 % 26) as u8) as char)
        .collect();
    format!(r#"{{"node_id":"radar3","token":"secret","type":"log","text":"{text}"}}"#).into_bytes()
}

/// A string-heavy frame with non-ASCII text (exercises the UTF-8 validation).
fn string_4k_utf8() -> Vec<u8> {
    let text = "Radar 3 — Détection confirmée, 雷达 ".repeat(100);
    format!(r#"{{"node_id":"radar3","token":"secret","type":"log","text":"{text}"}}"#).into_bytes()
}

fn bench(c: &mut Criterion) {
    let frames = [
        ("radar_example", RADAR_EXAMPLE.to_vec()),
        ("radar_200B", radar_200()),
        ("radar_1KiB", radar_1k()),
        ("string_4KiB", string_4k()),
        ("string_utf8_4KiB", string_4k_utf8()),
    ];
    let keys = EnvelopeKeys::DEFAULT;
    for (name, frame) in &frames {
        // Sanity: every baseline accepts the frame.
        assert!(
            scan_envelope(frame, &keys, DEFAULT_MAX_DEPTH)
                .unwrap()
                .node_id
                .is_some()
        );
        assert!(
            serde_json::from_slice::<Env<'_>>(frame)
                .unwrap()
                .node_id
                .is_some()
        );
        let mut g = c.benchmark_group(format!("{name}_{}bytes", frame.len()));
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function("scan_envelope", |b| {
            b.iter(|| scan_envelope(black_box(frame), &keys, DEFAULT_MAX_DEPTH))
        });
        g.bench_function("validate", |b| {
            b.iter(|| validate(black_box(frame), DEFAULT_MAX_DEPTH))
        });
        g.bench_function("serde_json_borrowed_struct", |b| {
            b.iter(|| serde_json::from_slice::<Env<'_>>(black_box(frame)).is_ok())
        });
        g.bench_function("serde_json_value", |b| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(frame)).is_ok())
        });
        g.bench_function("simdutf8_only", |b| {
            b.iter(|| simdutf8::basic::from_utf8(black_box(frame)).is_ok())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

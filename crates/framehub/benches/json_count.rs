//! The envelope scan alone, for instruction counts under callgrind (`bench/callgrind.sh scan`):
//! scans the frames `framehub bench` sends (200-byte radar detections, 1 to 5 per frame, as
//! `framehub_bench::frames::detection` builds them) `ROUNDS` times each. Divide
//! `json::scan_envelope`'s inclusive count by 5 x ROUNDS.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use framehub::json::{DEFAULT_MAX_DEPTH, EnvelopeKeys, scan_envelope};

/// `framehub_bench::frames::detection(node, timestamp, size)`, rebuilt here (the bench crate
/// depends on this one).
fn detection(node: &str, timestamp: u64, size: usize) -> Vec<u8> {
    let k = (timestamp % 5 + 1) as usize;
    let list = |base: f64, step: f64| {
        (0..k)
            .map(|i| format!("{:.2}", base + step * i as f64))
            .collect::<Vec<_>>()
            .join(",")
    };
    let adsb = vec!["null"; k].join(",");
    let mut frame = format!(
        "{{\"node_id\":\"{node}\",\"timestamp\":{timestamp},\"sent_ns\":\"{:019}\",\"delay\":[{}],\"doppler\":[{}],\"snr\":[{}],\"adsb\":[{adsb}]",
        0,
        list(40.46, 1.13),
        list(-27.99, 3.7),
        list(12.08, 0.5),
    );
    if frame.len() + ",\"pad\":\"\"}".len() < size {
        frame.push_str(",\"pad\":\"");
        frame.push_str(&"x".repeat(size - frame.len() - 2));
        frame.push_str("\"}");
    } else {
        frame.push('}');
    }
    frame.into_bytes()
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let frames: Vec<Vec<u8>> = (0..5)
        .map(|i| detection("node-1", 1_768_932_172_478 + i, 200))
        .collect();
    let keys = EnvelopeKeys::DEFAULT;
    let mut found = 0usize;
    for _ in 0..rounds {
        for f in &frames {
            let env = scan_envelope(black_box(f), &keys, DEFAULT_MAX_DEPTH).unwrap();
            found += usize::from(env.node_id.is_some());
        }
    }
    assert_eq!(found, 5 * rounds);
    println!("{{\"frames\":{}}}", 5 * rounds);
}

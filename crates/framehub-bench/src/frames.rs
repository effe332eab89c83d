//! The frames a load run sends: realistic radar detections padded to a
//! size, framed for the wire, generated before the clock starts.

use framehub::codec::{FrameEncoder, FramingConfig};
use tokio_util::codec::Encoder;

/// Marker of the send-time field patched into each frame in `--rate` runs.
/// A string, not a number: fixed-width digits have leading zeros, which
/// JSON numbers may not.
pub const SENT_FIELD: &[u8] = b"\"sent_ns\":\"";
/// Digits of the send time: fixed width so it can be patched in place.
pub const SENT_DIGITS: usize = 19;

/// One detection frame of `node`, JSON, padded to exactly `size` bytes when
/// `size` is larger than the bare frame.
pub fn detection(node: &str, timestamp: u64, size: usize) -> Vec<u8> {
    let k = (timestamp % 5 + 1) as usize;
    let list = |base: f64, step: f64| {
        (0..k)
            .map(|i| format!("{:.2}", base + step * i as f64))
            .collect::<Vec<_>>()
            .join(",")
    };
    let adsb = vec!["null"; k].join(",");
    let mut frame = format!(
        "{{\"node_id\":\"{node}\",\"timestamp\":{timestamp},\"sent_ns\":\"{:0width$}\",\"delay\":[{}],\"doppler\":[{}],\"snr\":[{}],\"adsb\":[{adsb}]",
        0,
        list(40.46, 1.13),
        list(-27.99, 3.7),
        list(12.08, 0.5),
        width = SENT_DIGITS,
    );
    let pad_overhead = ",\"pad\":\"\"}".len();
    if frame.len() + pad_overhead < size {
        frame.push_str(",\"pad\":\"");
        frame.push_str(&"x".repeat(size - frame.len() - 2));
        frame.push_str("\"}");
    } else {
        frame.push('}');
    }
    frame.into_bytes()
}

/// The authenticating first message of a node-protocol connection.
pub fn hello(node: &str, token: &str) -> Vec<u8> {
    format!("{{\"node_id\":\"{node}\",\"token\":\"{token}\",\"type\":\"heartbeat\"}}\n")
        .into_bytes()
}

/// Frames a payload for the wire.
pub fn encode(framing: &FramingConfig, payload: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut encoder = FrameEncoder::new(framing, usize::MAX >> 1);
    let mut buf = bytes::BytesMut::new();
    encoder
        .encode(payload, &mut buf)
        .map_err(|e| anyhow::anyhow!("cannot frame a {}-byte payload: {e}", payload.len()))?;
    out.extend_from_slice(&buf);
    Ok(())
}

/// A block of consecutive frames of one node, framed, with the offsets of
/// each frame's send-time digits (for patching) and frame boundaries.
pub struct Block {
    /// The wire bytes.
    pub bytes: Vec<u8>,
    /// End offset of each frame in `bytes`.
    pub ends: Vec<usize>,
    /// Offset of each frame's send-time digits in `bytes`.
    pub sent_at: Vec<usize>,
    /// Payload bytes (without framing) in the block.
    pub payload_bytes: usize,
}

impl Block {
    /// `count` frames of `node` with timestamps `first..first+count`.
    pub fn new(
        node: &str,
        first: u64,
        count: usize,
        size: usize,
        wrap: impl Fn(&[u8], &mut Vec<u8>) -> anyhow::Result<()>,
    ) -> anyhow::Result<Block> {
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(count);
        let mut sent_at = Vec::with_capacity(count);
        let mut payload_bytes = 0;
        for i in 0..count {
            let payload = detection(node, first + i as u64, size);
            payload_bytes += payload.len();
            let start = bytes.len();
            wrap(&payload, &mut bytes)?;
            let field = memchr::memmem::find(&bytes[start..], SENT_FIELD)
                .map(|p| start + p + SENT_FIELD.len())
                .ok_or_else(|| anyhow::anyhow!("framing altered the payload"))?;
            sent_at.push(field);
            ends.push(bytes.len());
        }
        Ok(Block {
            bytes,
            ends,
            sent_at,
            payload_bytes,
        })
    }
}

/// Writes `nanos` as fixed-width digits at `at`.
pub fn patch_sent(bytes: &mut [u8], at: usize, mut nanos: u64) {
    for i in (0..SENT_DIGITS).rev() {
        bytes[at + i] = b'0' + (nanos % 10) as u8;
        nanos /= 10;
    }
}

/// Reads the send time back out of a received payload.
pub fn read_sent(payload: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(payload, SENT_FIELD)? + SENT_FIELD.len();
    let digits = payload.get(at..at + SENT_DIGITS)?;
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detections_are_json_of_the_requested_size() {
        for size in [200, 256, 1000] {
            let f = detection("node-1", 7, size);
            assert_eq!(f.len(), size);
            let v: serde_json::Value = serde_json::from_slice(&f).expect("json");
            assert_eq!(v["node_id"], "node-1");
            assert_eq!(v["timestamp"], 7);
        }
        // Smaller than the bare frame: not padded, still valid.
        let f = detection("node-1", 7, 10);
        assert!(serde_json::from_slice::<serde_json::Value>(&f).is_ok());
    }

    #[test]
    fn send_time_round_trips() {
        let mut f = detection("n", 1, 200);
        let at = memchr::memmem::find(&f, SENT_FIELD).expect("field") + SENT_FIELD.len();
        patch_sent(&mut f, at, 1_234_567_890_123);
        assert_eq!(read_sent(&f), Some(1_234_567_890_123));
        assert!(serde_json::from_slice::<serde_json::Value>(&f).is_ok());
    }
}

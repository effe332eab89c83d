//! The NDJSON record, the one format every sink writes, and the default
//! sink that writes records to stdout or a file.
//!
//! A record: `{"received_at":"2026-01-20T18:02:52.478123Z","listener":"default",
//! "node":"radar3","conn":7,"peer":"10.0.0.5:51234","frame":{...}}` with
//! `frame` holding the original JSON byte for byte, or `frame_b64` for any
//! frame that is not single-line JSON.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use base64::Engine as _;
use framehub::Frame;
use tokio::sync::mpsc;

/// Appends one record for `frame` to `out`.
pub fn write_record(out: &mut impl Write, frame: &Frame) -> io::Result<()> {
    let s = &frame.source;
    out.write_all(b"{\"received_at\":\"")?;
    write!(
        out,
        "{}",
        humantime::format_rfc3339_micros(frame.received_at)
    )?;
    out.write_all(b"\",\"listener\":")?;
    serde_json::to_writer(&mut *out, &*s.listener)?;
    out.write_all(b",\"node\":")?;
    serde_json::to_writer(&mut *out, &s.node.as_deref())?;
    write!(out, ",\"conn\":{},\"peer\":\"{}\",", s.conn, s.peer)?;
    if is_single_line_json(&frame.payload) {
        out.write_all(b"\"frame\":")?;
        out.write_all(&frame.payload)?;
    } else {
        out.write_all(b"\"frame_b64\":\"")?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&frame.payload);
        out.write_all(encoded.as_bytes())?;
        out.write_all(b"\"")?;
    }
    out.write_all(b"}\n")
}

/// Whether a frame can be embedded verbatim: valid JSON and no line break
/// that would split the record.
fn is_single_line_json(payload: &[u8]) -> bool {
    memchr::memchr(b'\n', payload).is_none()
        && framehub::json::validate(payload, framehub::json::DEFAULT_MAX_DEPTH).is_ok()
}

/// Where records go.
pub enum Output {
    /// Standard output.
    Stdout,
    /// A file, appended to and synced at the end.
    File(File),
}

impl Output {
    /// Opens `path` for appending, or stdout when `None`.
    pub fn open(path: Option<&Path>) -> io::Result<Output> {
        match path {
            None => Ok(Output::Stdout),
            Some(p) => OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map(Output::File),
        }
    }
}

/// Writes every batch it receives until all senders are gone, flushing
/// whenever it has caught up, and syncs a file at the end. Runs on a
/// blocking thread: file and pipe writes block.
pub fn write_all(output: Output, mut rx: mpsc::Receiver<Vec<Frame>>) -> io::Result<u64> {
    let mut written = 0u64;
    match output {
        Output::Stdout => {
            let stdout = io::stdout().lock();
            let mut out = BufWriter::with_capacity(256 << 10, stdout);
            written += drain(&mut out, &mut rx)?;
            out.flush()?;
        }
        Output::File(file) => {
            let mut out = BufWriter::with_capacity(256 << 10, file);
            written += drain(&mut out, &mut rx)?;
            out.flush()?;
            out.get_ref().sync_data()?;
        }
    }
    Ok(written)
}

fn drain(out: &mut impl Write, rx: &mut mpsc::Receiver<Vec<Frame>>) -> io::Result<u64> {
    let mut written = 0;
    while let Some(batch) = rx.blocking_recv() {
        for frame in &batch {
            write_record(out, frame)?;
        }
        written += batch.len() as u64;
        // Flush when caught up, so a quiet stream is on disk promptly and a
        // busy one is written in large blocks.
        if rx.is_empty() {
            out.flush()?;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use framehub::Source;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    fn frame(payload: &'static [u8], node: Option<&str>) -> Frame {
        Frame {
            payload: Bytes::from_static(payload),
            received_at: UNIX_EPOCH + Duration::from_micros(1_768_932_172_478_123),
            source: Arc::new(Source {
                conn: 7,
                peer: "10.0.0.5:51234".parse().expect("addr"),
                listener: "default".into(),
                node: node.map(Arc::from),
            }),
        }
    }

    fn record(f: &Frame) -> String {
        let mut out = Vec::new();
        write_record(&mut out, f).expect("write");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn json_frames_are_embedded_byte_for_byte() {
        let r = record(&frame(br#"{"node_id":"radar3", "x":1.50}"#, Some("radar3")));
        assert_eq!(
            r,
            "{\"received_at\":\"2026-01-20T18:02:52.478123Z\",\"listener\":\"default\",\"node\":\"radar3\",\"conn\":7,\"peer\":\"10.0.0.5:51234\",\"frame\":{\"node_id\":\"radar3\", \"x\":1.50}}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&r).expect("record is JSON");
        assert_eq!(v["frame"]["x"], serde_json::json!(1.5));
    }

    #[test]
    fn other_frames_are_base64() {
        let r = record(&frame(b"\x00\x01binary", None));
        let v: serde_json::Value = serde_json::from_str(&r).expect("record is JSON");
        assert_eq!(v["node"], serde_json::Value::Null);
        assert_eq!(v["frame_b64"], "AAFiaW5hcnk=");
        // Multi-line JSON would split the record: base64 too.
        let r = record(&frame(b"{\n}", None));
        assert!(r.contains("frame_b64"), "{r}");
    }
}

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

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use framehub::{Frame, Protocol, Source};
use tokio::sync::mpsc;

/// Writes records, reusing the formatted time of the previous frame (all
/// frames of one read share it) and the formatted source of the previous
/// frame (all frames of a connection share it): a busy sink formats each
/// once per read and once per connection, not once per record.
#[derive(Default)]
pub struct RecordWriter {
    time: Option<SystemTime>,
    time_text: String,
    source: Option<Arc<Source>>,
    source_text: Vec<u8>,
}

impl RecordWriter {
    /// Appends one record for `frame` to `out`.
    pub fn write(&mut self, out: &mut impl Write, frame: &Frame) -> io::Result<()> {
        if self.time != Some(frame.received_at) {
            self.time = Some(frame.received_at);
            self.time_text.clear();
            use std::fmt::Write as _;
            let _ = write!(
                self.time_text,
                "{}",
                humantime::format_rfc3339_micros(frame.received_at)
            );
        }
        if !self
            .source
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &frame.source))
        {
            let s = &frame.source;
            self.source_text.clear();
            let t = &mut self.source_text;
            t.extend_from_slice(b"\",\"listener\":");
            serde_json::to_writer(&mut *t, &*s.listener)?;
            t.extend_from_slice(b",\"node\":");
            serde_json::to_writer(&mut *t, &s.node.as_deref())?;
            write!(t, ",\"conn\":{},\"peer\":\"{}\",", s.conn, s.peer)?;
            self.source = Some(s.clone());
        }
        out.write_all(b"{\"received_at\":\"")?;
        out.write_all(self.time_text.as_bytes())?;
        out.write_all(&self.source_text)?;
        // Node-protocol frames were validated as single-line JSON objects
        // on the way in; anything else is checked here.
        if frame.source.protocol == Protocol::Node || is_single_line_json(&frame.payload) {
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

/// What the writer did: records written, and the time from the first
/// batch to the last (the sink's throughput, reported at exit).
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    /// Records written.
    pub records: u64,
    /// From receiving the first batch to finishing the last.
    pub busy: std::time::Duration,
}

/// Writes every batch it receives until all senders are gone, flushing
/// whenever it has caught up, and syncs a file at the end. Runs on a
/// blocking thread: file and pipe writes block.
pub fn write_all(output: Output, mut rx: mpsc::Receiver<Vec<Frame>>) -> io::Result<Written> {
    match output {
        Output::Stdout => {
            let stdout = io::stdout().lock();
            let mut out = BufWriter::with_capacity(256 << 10, stdout);
            let written = drain(&mut out, &mut rx)?;
            out.flush()?;
            Ok(written)
        }
        Output::File(file) => {
            let mut out = BufWriter::with_capacity(256 << 10, file);
            let written = drain(&mut out, &mut rx)?;
            out.flush()?;
            // Character devices such as /dev/null cannot be synced.
            if out.get_ref().metadata()?.is_file() {
                out.get_ref().sync_data()?;
            }
            Ok(written)
        }
    }
}

fn drain(out: &mut impl Write, rx: &mut mpsc::Receiver<Vec<Frame>>) -> io::Result<Written> {
    let mut written = Written::default();
    let mut first = None;
    let mut records = RecordWriter::default();
    while let Some(batch) = rx.blocking_recv() {
        let started = *first.get_or_insert_with(std::time::Instant::now);
        for frame in &batch {
            records.write(out, frame)?;
        }
        written.records += batch.len() as u64;
        written.busy = started.elapsed();
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
                protocol: if node.is_some() {
                    Protocol::Node
                } else {
                    Protocol::Raw
                },
            }),
        }
    }

    fn record(f: &Frame) -> String {
        let mut out = Vec::new();
        RecordWriter::default().write(&mut out, f).expect("write");
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

//! The NDJSON record, the one format every sink writes, and the sink
//! thread that encodes each delivered frame once and hands the records to
//! every sink (`file`, `stdout`, `tap`, in the submodules).
//!
//! A record: `{"received_at":"2026-01-20T18:02:52.478123Z","listener":"default",
//! "node":"radar3","conn":7,"peer":"10.0.0.5:51234","frame":{...}}` with
//! `frame` holding the original JSON byte for byte, or `frame_b64` for any
//! frame that is not single-line JSON. A frame with a sequence number
//! (acknowledged delivery) has `"seq":N` before `frame`, so that a file
//! sink finds each node's durable mark again at start.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use framehub::{Frame, Protocol, Source};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use self::durable::{Durability, MarkCollector, Marks};
use crate::histogram::Histogram;

pub mod durable;
pub mod file;
pub mod nats;
pub mod retention;
pub mod stdout;
pub mod tap;

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
        if let Some(seq) = frame.seq {
            write!(out, "\"seq\":{},", seq.value())?;
        }
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

/// Time from the read that carried a frame (`received_at`) to the sink
/// thread taking it: the queues' wait, as `/metrics` shows it. One sink
/// thread per process, so one histogram.
pub static DELIVERY_LATENCY: Histogram = Histogram::new();

/// Target size of one chunk of records: large enough that a busy stream is
/// written in few system calls, small enough that a tap subscriber's
/// buffer holds several.
pub const CHUNK_BYTES: usize = 256 << 10;

/// How often a failing sink logs that it is still failing.
const FAILURE_LOG_PERIOD: Duration = Duration::from_secs(10);

/// Whole records, encoded once and shared by every sink.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// NDJSON: each record ends with `\n`.
    pub bytes: Bytes,
    /// How many records `bytes` holds.
    pub records: u64,
    /// Its number, from 1 (acknowledged delivery: what a durable sink
    /// reports as synced).
    pub no: u64,
    /// The last sequence number of each node in it.
    pub marks: Marks,
    /// Where each connection's records lie in `bytes`, in order: what a
    /// tap filters on (`--node`, `--listener`) without parsing records.
    pub runs: Vec<Run>,
}

/// Consecutive records of one connection in a chunk. A chunk holds at most
/// one run per record, so the list is bounded as the chunk is.
#[derive(Debug, Clone)]
pub struct Run {
    /// Where its last record ends in the chunk's bytes (the run starts
    /// where the previous one ends).
    pub end: usize,
    /// How many records it holds.
    pub records: u64,
    /// The connection they came from.
    pub source: Arc<Source>,
}

/// What the sink thread is handed.
#[derive(Debug)]
pub enum Message {
    /// Delivered frames, in order per source.
    Frames(Vec<Frame>),
    /// Time passed: interval syncs and time-based rotation are due checks.
    Tick,
    /// SIGHUP: every sink reopens its file, between two chunks; the reply
    /// lists what failed (those sinks keep the file they had).
    Reopen(oneshot::Sender<Vec<String>>),
}

/// The hub's fan-in sends batches straight into the sink thread's queue
/// ([`framehub::Hub::all_frames_into`]).
impl From<Vec<Frame>> for Message {
    fn from(frames: Vec<Frame>) -> Message {
        Message::Frames(frames)
    }
}

/// Health and counters of one sink, shared with the admin server.
#[derive(Debug)]
pub struct SinkStatus {
    /// Its name (`[[sink]] name`, default its type).
    pub name: String,
    /// Its type: `file`, `stdout` or `tap`.
    pub kind: &'static str,
    /// Whether every record must reach it (file, stdout), or it is best
    /// effort (tap).
    pub durable: bool,
    /// Records written (a tap: handed to its subscribers).
    pub records_written: AtomicU64,
    /// Bytes written.
    pub bytes_written: AtomicU64,
    /// Records that could not be written (the sink was failing).
    pub records_failed: AtomicU64,
    /// Files rotated (file sinks).
    pub rotations: AtomicU64,
    /// Partial last records cut off at start (file sinks: the previous run
    /// ended mid-write).
    pub partial_records_cut: AtomicU64,
    /// Subscribers connected now (taps).
    pub subscribers: AtomicU64,
    /// Records a subscriber missed because its buffer was full (taps).
    pub records_lost: AtomicU64,
    /// Subscribers disconnected because their buffer was full (taps).
    pub subscribers_cut: AtomicU64,
    /// Subscribers refused because `max_subscribers` were connected (taps).
    pub subscribers_rejected: AtomicU64,
    /// First lines from subscribers that were not a filter (taps): those
    /// subscribers get every record.
    pub subscribe_refused: AtomicU64,
    /// How long each write of a chunk took, a rotation included (file
    /// sinks).
    pub write_duration: Histogram,
    /// How long each sync on the sync thread took (file sinks).
    pub sync_duration: Histogram,
    failure: Mutex<Failure>,
}

#[derive(Debug, Default)]
struct Failure {
    /// Why the sink is failing now; `None` while it works.
    error: Option<String>,
    last_log: Option<Instant>,
    failed_since_log: u64,
}

impl SinkStatus {
    /// A working sink with every counter at 0.
    pub fn new(name: &str, kind: &'static str, durable: bool) -> Arc<SinkStatus> {
        Arc::new(SinkStatus {
            name: name.to_owned(),
            kind,
            durable,
            records_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            records_failed: AtomicU64::new(0),
            rotations: AtomicU64::new(0),
            partial_records_cut: AtomicU64::new(0),
            subscribers: AtomicU64::new(0),
            records_lost: AtomicU64::new(0),
            subscribers_cut: AtomicU64::new(0),
            subscribers_rejected: AtomicU64::new(0),
            subscribe_refused: AtomicU64::new(0),
            write_duration: Histogram::new(),
            sync_duration: Histogram::new(),
            failure: Mutex::new(Failure::default()),
        })
    }

    /// Why the sink is failing, or `None` while it works.
    pub fn error(&self) -> Option<String> {
        self.failure.lock().error.clone()
    }

    /// Counts records written.
    pub fn wrote(&self, records: u64, bytes: u64) {
        self.records_written.fetch_add(records, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        self.recover();
    }

    /// The sink is failing: `records` could not be written. Logged at once
    /// when the failure is new, then at most every ten seconds with the
    /// count, so a full disk does not flood the log.
    pub fn fail(&self, error: String, records: u64) {
        self.records_failed.fetch_add(records, Ordering::Relaxed);
        let mut f = self.failure.lock();
        f.failed_since_log += records;
        let is_new = f.error.as_deref() != Some(error.as_str());
        let due = f
            .last_log
            .is_none_or(|at| at.elapsed() >= FAILURE_LOG_PERIOD);
        if is_new || due {
            tracing::error!(
                sink = %self.name,
                kind = self.kind,
                records_failed = f.failed_since_log,
                "sink failing: {error}"
            );
            f.last_log = Some(Instant::now());
            f.failed_since_log = 0;
        }
        f.error = Some(error);
    }

    /// The sink works again.
    pub fn recover(&self) {
        let mut f = self.failure.lock();
        if let Some(error) = f.error.take() {
            tracing::info!(
                sink = %self.name,
                kind = self.kind,
                records_failed = f.failed_since_log,
                "sink recovered from: {error}"
            );
            f.failed_since_log = 0;
            f.last_log = None;
        }
    }
}

/// One destination of records. Runs on the sink thread: `write` may block
/// (file, stdout) or must not (tap), and never fails: a failure is recorded
/// in the status (health, counters, log) and the next chunk is tried again.
pub trait Sink: Send {
    /// Its health and counters.
    fn status(&self) -> &Arc<SinkStatus>;
    /// Writes whole records (`chunk.bytes` is empty when no sink
    /// [`Sink::wants_records`]; its number and marks still count).
    fn write(&mut self, chunk: &Chunk);
    /// Takes the frames themselves, before they are encoded (a sink that
    /// publishes each frame as it is, e.g. NATS).
    fn write_frames(&mut self, _frames: &[Frame]) {}
    /// Whether it takes records at all: when no sink does, none are
    /// encoded.
    fn wants_records(&self) -> bool {
        true
    }
    /// Called about once a second: periodic work such as interval syncs.
    fn tick(&mut self) {}
    /// Called once at exit, after the last chunk: flush and sync.
    fn finish(&mut self) {}
    /// SIGHUP: reopen the destination by its name (a file moved away by
    /// logrotate); on failure keep writing where it did.
    fn reopen(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Reopens every sink and replies with what failed.
fn reopen_all(sinks: &mut [Box<dyn Sink>], reply: oneshot::Sender<Vec<String>>) {
    let errors = sinks
        .iter_mut()
        .filter_map(|s| {
            s.reopen()
                .err()
                .map(|e| format!("sink {:?}: {e}", s.status().name))
        })
        .collect();
    let _ = reply.send(errors);
}

/// Encodes frames into chunks of whole records and hands each chunk to
/// every sink.
struct Encoder {
    records: RecordWriter,
    buf: Vec<u8>,
    count: u64,
    /// Chunks cut so far.
    chunks: u64,
    marks: MarkCollector,
    runs: Vec<Run>,
    durability: Arc<Durability>,
}

impl Encoder {
    fn encode(&mut self, batch: &[Frame], sinks: &mut [Box<dyn Sink>]) {
        observe_delivery(&DELIVERY_LATENCY, batch, SystemTime::now());
        for s in sinks.iter_mut() {
            s.write_frames(batch);
        }
        // No sink takes records (NATS alone): none are encoded, but the
        // chunks are still cut and numbered for acknowledged delivery.
        let records = sinks.iter().any(|s| s.wants_records());
        for frame in batch {
            let len = self.buf.len();
            if records && let Err(e) = self.records.write(&mut self.buf, frame) {
                // Writing into memory cannot fail short of a bug; still,
                // the record is counted as failed by every sink.
                self.buf.truncate(len);
                for s in sinks.iter() {
                    s.status().fail(format!("cannot encode a record: {e}"), 1);
                }
                continue;
            }
            self.count += 1;
            let end = self.buf.len();
            match self.runs.last_mut() {
                Some(run) if Arc::ptr_eq(&run.source, &frame.source) => {
                    run.end = end;
                    run.records += 1;
                }
                _ => self.runs.push(Run {
                    end,
                    records: 1,
                    source: frame.source.clone(),
                }),
            }
            if let (Some(node), Some(seq)) = (&frame.source.node, frame.seq) {
                self.marks.note(node, seq);
            }
            if self.buf.len() >= CHUNK_BYTES {
                self.emit(sinks);
            }
        }
        if !records {
            self.emit(sinks);
        }
    }

    fn emit(&mut self, sinks: &mut [Box<dyn Sink>]) {
        if self.count == 0 {
            return;
        }
        // Copied out at its exact size: a chunk of one small record must
        // not keep a whole chunk-sized allocation alive in a tap
        // subscriber's buffer, whose bound counts bytes, not capacity. The
        // encoding buffer is reused.
        self.chunks += 1;
        let chunk = Chunk {
            bytes: Bytes::copy_from_slice(&self.buf),
            records: std::mem::take(&mut self.count),
            no: self.chunks,
            marks: self.marks.take(),
            runs: std::mem::take(&mut self.runs),
        };
        self.buf.clear();
        self.durability.emitted(chunk.no, &chunk.marks);
        for s in sinks.iter_mut() {
            s.write(&chunk);
        }
    }
}

/// Counts each frame's wait from its read to `taken`; the frames of one
/// read share their time, so one run of them is one observation call.
fn observe_delivery(histogram: &Histogram, batch: &[Frame], taken: SystemTime) {
    let mut frames = batch.iter().peekable();
    while let Some(first) = frames.next() {
        let mut n = 1;
        while frames
            .next_if(|f| f.received_at == first.received_at)
            .is_some()
        {
            n += 1;
        }
        // A clock stepped back since the read: counted as no wait.
        let waited = taken
            .duration_since(first.received_at)
            .unwrap_or(Duration::ZERO);
        histogram.observe_n(waited, n);
    }
}

/// The sink thread: runs until every sender is gone, then finishes each
/// sink (flush, sync). File and pipe writes block, hence a thread of its
/// own rather than a task. Returns the time from the first batch to the
/// end of the last write (the sinks' throughput, reported at exit).
pub fn run(
    mut rx: mpsc::Receiver<Message>,
    mut sinks: Vec<Box<dyn Sink>>,
    durability: Arc<Durability>,
) -> Duration {
    let mut first: Option<Instant> = None;
    let mut busy = Duration::ZERO;
    let mut encoder = Encoder {
        records: RecordWriter::default(),
        buf: Vec::with_capacity(CHUNK_BYTES + 4096),
        count: 0,
        chunks: 0,
        marks: MarkCollector::default(),
        runs: Vec::new(),
        durability,
    };
    while let Some(message) = rx.blocking_recv() {
        let mut tick = false;
        match message {
            Message::Tick => tick = true,
            Message::Reopen(reply) => reopen_all(&mut sinks, reply),
            Message::Frames(batch) => {
                let started = *first.get_or_insert_with(Instant::now);
                encoder.encode(&batch, &mut sinks);
                // Batches already waiting go into the same chunk: many
                // quiet nodes are written in one system call, not one each.
                while encoder.buf.len() < CHUNK_BYTES {
                    match rx.try_recv() {
                        Ok(Message::Frames(batch)) => encoder.encode(&batch, &mut sinks),
                        Ok(Message::Tick) => tick = true,
                        Ok(Message::Reopen(reply)) => {
                            // What came before the signal goes to the
                            // file being replaced.
                            encoder.emit(&mut sinks);
                            reopen_all(&mut sinks, reply);
                        }
                        Err(_) => break,
                    }
                }
                encoder.emit(&mut sinks);
                busy = started.elapsed();
            }
        }
        if tick {
            for s in sinks.iter_mut() {
                s.tick();
            }
        }
    }
    for s in sinks.iter_mut() {
        s.finish();
    }
    busy
}

/// Sends a tick to the sink thread every second while it runs. Holds only a
/// weak sender, so it never keeps the thread alive past the last producer.
pub async fn ticker(tx: mpsc::WeakSender<Message>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        let Some(tx) = tx.upgrade() else { return };
        // A full channel means the thread is busy writing, and writes do
        // the same checks: a lost tick costs nothing.
        let _ = tx.try_send(Message::Tick);
    }
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
            seq: None,
        }
    }

    struct Collect {
        status: Arc<SinkStatus>,
        chunks: Arc<Mutex<Vec<Chunk>>>,
    }

    impl Sink for Collect {
        fn status(&self) -> &Arc<SinkStatus> {
            &self.status
        }
        fn write(&mut self, chunk: &Chunk) {
            self.chunks.lock().push(chunk.clone());
        }
    }

    #[test]
    fn the_thread_gives_every_sink_the_same_whole_records_once() {
        let (tx, rx) = mpsc::channel(8);
        let mut collected = Vec::new();
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        for name in ["a", "b"] {
            let chunks = Arc::new(Mutex::new(Vec::new()));
            collected.push(chunks.clone());
            sinks.push(Box::new(Collect {
                status: SinkStatus::new(name, "test", true),
                chunks,
            }));
        }
        // A big frame makes the encoder cut chunks at record boundaries.
        let big: &'static [u8] = Box::leak(
            format!(
                "{{\"node_id\":\"radar3\",\"pad\":\"{}\"}}",
                "x".repeat(100_000)
            )
            .into_bytes()
            .into_boxed_slice(),
        );
        for _ in 0..3 {
            tx.blocking_send(Message::Frames(vec![frame(big, Some("radar3")); 4]))
                .expect("send");
        }
        tx.blocking_send(Message::Tick).expect("tick");
        drop(tx);
        run(rx, sinks, Durability::new());
        let a = collected[0].lock();
        let b = collected[1].lock();
        assert_eq!(a.len(), b.len());
        assert!(a.len() > 1, "12 records of 100 KB make several chunks");
        let mut records = 0;
        for (x, y) in a.iter().zip(b.iter()) {
            assert_eq!(x.bytes, y.bytes);
            assert_eq!(
                x.records as usize,
                memchr::memchr_iter(b'\n', &x.bytes).count()
            );
            assert!(x.bytes.ends_with(b"}\n"));
            assert_eq!(x.runs.iter().map(|r| r.records).sum::<u64>(), x.records);
            assert_eq!(x.runs.last().map(|r| r.end), Some(x.bytes.len()));
            records += x.records;
        }
        assert_eq!(records, 12);
    }

    #[test]
    fn delivery_latency_counts_every_frame_from_its_read() {
        let h = Histogram::new();
        let read = frame(b"{}", Some("a"));
        let later = Frame {
            received_at: read.received_at + Duration::from_millis(20),
            ..read.clone()
        };
        let taken = read.received_at + Duration::from_millis(30);
        observe_delivery(&h, &[read.clone(), read.clone(), later, read], taken);
        let b = h.buckets();
        let total = b.last().expect("+Inf").cumulative;
        assert_eq!(total, 4, "every frame counted");
        // 30 ms for three frames (in two runs), 10 ms for one.
        let at = |le: f64| {
            b.iter()
                .find(|b| b.le == Some(le))
                .expect("bucket")
                .cumulative
        };
        assert_eq!(at(0.005), 0);
        assert_eq!(at(0.01), 1);
        assert_eq!(at(0.025), 1);
        assert_eq!(at(0.05), 4);
        assert!((h.sum_seconds() - 0.1).abs() < 1e-6, "{}", h.sum_seconds());
    }

    #[test]
    fn a_failure_is_reported_until_a_write_succeeds() {
        let s = SinkStatus::new("f", "file", true);
        assert_eq!(s.error(), None);
        s.fail("No space left on device".into(), 3);
        s.fail("No space left on device".into(), 2);
        assert_eq!(s.error().as_deref(), Some("No space left on device"));
        assert_eq!(s.records_failed.load(Ordering::Relaxed), 5);
        s.wrote(1, 10);
        assert_eq!(s.error(), None);
        assert_eq!(s.records_written.load(Ordering::Relaxed), 1);
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

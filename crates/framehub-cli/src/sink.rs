//! The NDJSON record (or, for a sink with `format = "frame"`, the frame
//! alone on a line), encoded from each batch of delivered frames where the
//! fan-in takes it (on the runtime's threads, [`encode`]), and the sink
//! thread that hands the encoded chunks to every sink (`file`, `stdout`,
//! `tap`, in the submodules) in large groups.
//!
//! A record: `{"received_at":"2026-01-20T18:02:52.478123Z","listener":"default",
//! "node":"radar3","conn":7,"peer":"10.0.0.5:51234","frame":{...}}` with
//! `frame` holding the original JSON byte for byte, or `frame_b64` for any
//! frame that is not single-line JSON. A frame with a sequence number
//! (acknowledged delivery) has `"seq":N` before `frame`, so that a file
//! sink finds each node's durable mark again at start.
//!
//! Why encoding is not on the sink thread: one thread formatting every
//! record caps `serve` at what one core formats, however many cores read.
//! Each fan-in task encodes its own batch, so the frames of one connection
//! stay in order (one task per source, encoded before it is queued); the
//! sink thread only numbers the chunks, in the order they arrive, for
//! acknowledged delivery ([`durable`]), and writes whole buffers.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use framehub::{Frame, Protocol, Source};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use self::durable::{Durability, MarkCollector, Marks};
use crate::config::RecordFormat;
use crate::histogram::Histogram;

pub mod durable;
pub mod file;
pub mod nats;
pub mod retention;
pub mod stdout;
pub mod tap;

/// Writes records, reusing the formatted time of the previous frame (all
/// frames of one read share it) and the formatted source of the previous
/// frame (all frames of a connection share it): a batch is formatted once
/// per read and once per connection, not once per record.
#[derive(Default)]
pub struct RecordWriter {
    time: Option<SystemTime>,
    time_text: String,
    source: Option<Arc<Source>>,
    source_text: Vec<u8>,
}

impl RecordWriter {
    /// Appends one record for `frame` to `out`.
    pub fn write(&mut self, out: &mut Vec<u8>, frame: &Frame) {
        if self.time != Some(frame.received_at) {
            self.time = Some(frame.received_at);
            self.time_text.clear();
            use std::fmt::Write as _;
            // Formatting into a String cannot fail.
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
            // Serialising strings into a Vec cannot fail.
            t.extend_from_slice(b"\",\"listener\":");
            let _ = serde_json::to_writer(&mut *t, &*s.listener);
            t.extend_from_slice(b",\"node\":");
            let _ = serde_json::to_writer(&mut *t, &s.node.as_deref());
            let _ = write!(t, ",\"conn\":{},\"peer\":\"{}\",", s.conn, s.peer);
            self.source = Some(s.clone());
        }
        out.extend_from_slice(b"{\"received_at\":\"");
        out.extend_from_slice(self.time_text.as_bytes());
        out.extend_from_slice(&self.source_text);
        if let Some(seq) = frame.seq {
            let _ = write!(out, "\"seq\":{},", seq.value());
        }
        // Node-protocol frames were validated as single-line JSON objects
        // on the way in; anything else is checked here.
        if frame.source.protocol == Protocol::Node || is_single_line_json(&frame.payload) {
            out.extend_from_slice(b"\"frame\":");
            out.extend_from_slice(&frame.payload);
        } else {
            out.extend_from_slice(b"\"frame_b64\":\"");
            let encoded = base64::engine::general_purpose::STANDARD.encode(&frame.payload);
            out.extend_from_slice(encoded.as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b"}\n");
    }
}

/// Appends the frame alone and a newline (`format = "frame"`). Only `lines`
/// and `json` framings are allowed with it (checked with the config): a
/// `lines` frame holds no line break, and a `json` value's line breaks are
/// whitespace between tokens, so they become spaces and the value stays
/// the same JSON on one line.
pub fn write_frame_line(out: &mut Vec<u8>, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(payload);
    if memchr::memchr(b'\n', payload).is_some() {
        for b in &mut out[start..] {
            if *b == b'\n' {
                *b = b' ';
            }
        }
    }
    out.push(b'\n');
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

/// Target size of one chunk of records: small enough that a tap
/// subscriber's buffer holds several (a batch of large frames is cut into
/// several chunks).
pub const CHUNK_BYTES: usize = 256 << 10;

/// The sink thread gathers chunks already waiting up to this many bytes
/// (or [`GROUP_CHUNKS`] chunks) and hands them to the sinks as one group: a
/// file takes them in one vectored write.
const GROUP_BYTES: usize = 4 << 20;

/// The most chunks in a group: under the kernel's limit of 1024 buffers
/// per vectored write.
pub const GROUP_CHUNKS: usize = 512;

/// How often a failing sink logs that it is still failing.
const FAILURE_LOG_PERIOD: Duration = Duration::from_secs(10);

/// Whole records, encoded once and shared by every sink.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// NDJSON: each record ends with `\n` (empty when no sink takes
    /// records).
    pub bytes: Bytes,
    /// The same frames alone, one per line (`format = "frame"`; empty when
    /// no sink takes them).
    pub lines: Bytes,
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

impl Chunk {
    /// What a sink of `format` writes of it.
    pub fn bytes_for(&self, format: RecordFormat) -> &Bytes {
        match format {
            RecordFormat::Record => &self.bytes,
            RecordFormat::Frame => &self.lines,
        }
    }
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
    /// Delivered frames, in order per source (encoded on the sink thread).
    Frames(Vec<Frame>),
    /// Delivered frames and their chunks, encoded by the fan-in's task
    /// ([`encode`]).
    Encoded(Batch),
    /// Time passed: interval syncs and time-based rotation are due checks.
    Tick,
    /// SIGHUP: every sink reopens its file, between two chunks; the reply
    /// lists what failed (those sinks keep the file they had).
    Reopen(oneshot::Sender<Vec<String>>),
}

/// Frames not encoded yet: the sink thread encodes them itself.
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
    /// Writes consecutive chunks, in order: a sink that can write them at
    /// once (a vectored write) does.
    fn write_chunks(&mut self, chunks: &[Chunk]) {
        for chunk in chunks {
            self.write(chunk);
        }
    }
    /// What it writes per frame (file and stdout have a choice; a tap
    /// sends records).
    fn format(&self) -> RecordFormat {
        RecordFormat::Record
    }
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

/// What the sinks take, decided once at start: records, frame lines,
/// both or neither (NATS alone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Encoding {
    /// Some sink writes records.
    pub records: bool,
    /// Some sink writes frames alone (`format = "frame"`).
    pub lines: bool,
}

impl Encoding {
    /// What `sinks` take.
    pub fn of(sinks: &[Box<dyn Sink>]) -> Encoding {
        let mut e = Encoding::default();
        for s in sinks.iter().filter(|s| s.wants_records()) {
            match s.format() {
                RecordFormat::Record => e.records = true,
                RecordFormat::Frame => e.lines = true,
            }
        }
        e
    }
}

/// A batch of delivered frames and its chunks, not numbered yet (the sink
/// thread numbers them in the order it takes them).
#[derive(Debug)]
pub struct Batch {
    /// The frames (a sink that publishes frames themselves takes them).
    pub frames: Vec<Frame>,
    /// Their records, cut at [`CHUNK_BYTES`] on record boundaries.
    pub chunks: Vec<Chunk>,
}

/// Encodes a batch of frames into chunks of whole records (and frame
/// lines), as `encoding` asks. Runs where the batch is taken: in the
/// fan-in's task (on the runtime's threads), so encoding spreads over the
/// cores. Every frame counts in a chunk even when nothing is encoded: the
/// chunks carry each node's last sequence number for acknowledged delivery.
// Out of line (one call per batch) so that callgrind counts it by name
// (`bench/callgrind.sh`, case `serve`).
#[inline(never)]
pub fn encode(frames: Vec<Frame>, encoding: Encoding) -> Batch {
    let mut chunks = Vec::new();
    let mut records = RecordWriter::default();
    let mut next = ChunkBuilder::for_frames(&frames, encoding);
    for (i, frame) in frames.iter().enumerate() {
        if encoding.records {
            records.write(&mut next.bytes, frame);
            next.note_run(frame);
        }
        if encoding.lines {
            write_frame_line(&mut next.lines, &frame.payload);
        }
        next.count += 1;
        if let (Some(node), Some(seq)) = (&frame.source.node, frame.seq) {
            next.marks.note(node, seq);
        }
        if next.bytes.len() >= CHUNK_BYTES || next.lines.len() >= CHUNK_BYTES {
            let rest = ChunkBuilder::for_frames(&frames[i + 1..], encoding);
            chunks.push(std::mem::replace(&mut next, rest).cut());
        }
    }
    if next.count > 0 {
        chunks.push(next.cut());
    }
    Batch { frames, chunks }
}

/// One chunk being encoded.
struct ChunkBuilder {
    bytes: Vec<u8>,
    lines: Vec<u8>,
    count: u64,
    marks: MarkCollector,
    runs: Vec<Run>,
}

impl ChunkBuilder {
    /// Room for the chunk that starts with `frames`, estimated from their
    /// sizes, so that a chunk is written once without regrowing its
    /// buffer, and its allocation is close to its size (a tap holds it).
    fn for_frames(frames: &[Frame], encoding: Encoding) -> ChunkBuilder {
        let mut payload = 0;
        let mut records = 0;
        for f in frames {
            if payload >= CHUNK_BYTES {
                break;
            }
            payload += f.payload.len();
            records += 1;
        }
        let envelope = frames.first().map_or(0, |f| {
            RECORD_ENVELOPE + f.source.listener.len() + f.source.node.as_deref().map_or(0, str::len)
        });
        let capacity = |wanted: bool, extra: usize| {
            if wanted {
                (payload + records * extra).min(CHUNK_BYTES * 2)
            } else {
                0
            }
        };
        ChunkBuilder {
            bytes: Vec::with_capacity(capacity(encoding.records, envelope)),
            lines: Vec::with_capacity(capacity(encoding.lines, 1)),
            count: 0,
            marks: MarkCollector::default(),
            runs: Vec::new(),
        }
    }

    /// Extends the connection's run, or starts one, with the record just
    /// written.
    fn note_run(&mut self, frame: &Frame) {
        let end = self.bytes.len();
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
    }

    fn cut(mut self) -> Chunk {
        Chunk {
            bytes: exact(self.bytes),
            lines: exact(self.lines),
            records: self.count,
            no: 0,
            marks: self.marks.take(),
            runs: self.runs,
        }
    }
}

/// A record's bytes besides its frame and names: time, field names, conn,
/// peer (an IPv6 address with its port at most), a sequence number.
const RECORD_ENVELOPE: usize = 160;

/// The buffer as `Bytes` whose allocation is about its size: a chunk of
/// one small record must not keep a large allocation alive in a tap
/// subscriber's buffer, whose bound counts bytes, not capacity.
fn exact(mut buf: Vec<u8>) -> Bytes {
    if buf.capacity() - buf.len() > buf.len() / 8 {
        buf.shrink_to_fit();
    }
    Bytes::from(buf)
}

/// The sink thread's half: numbers chunks in the order they are taken and
/// hands them to every sink in groups.
struct Writer {
    /// Chunks numbered so far.
    chunks: u64,
    durability: Arc<Durability>,
    encoding: Encoding,
    /// Chunks taken and not yet handed to the sinks.
    group: Vec<Chunk>,
    /// Their bytes (the larger encoding).
    group_bytes: usize,
}

impl Writer {
    /// Takes a batch: its frames go to the sinks that take frames at once,
    /// its chunks into the group.
    fn take(&mut self, batch: Batch, sinks: &mut [Box<dyn Sink>]) {
        observe_delivery(&DELIVERY_LATENCY, &batch.frames, SystemTime::now());
        for s in sinks.iter_mut() {
            s.write_frames(&batch.frames);
        }
        for mut chunk in batch.chunks {
            self.chunks += 1;
            chunk.no = self.chunks;
            self.group_bytes += chunk.bytes.len().max(chunk.lines.len());
            self.group.push(chunk);
        }
    }

    /// Whether the group is as large as one is made.
    fn is_full(&self) -> bool {
        self.group_bytes >= GROUP_BYTES || self.group.len() >= GROUP_CHUNKS
    }

    /// Hands the group to every sink.
    fn flush(&mut self, sinks: &mut [Box<dyn Sink>]) {
        if self.group.is_empty() {
            return;
        }
        // Recorded before any sink writes: a sync may report a chunk as
        // soon as it is written.
        for chunk in &self.group {
            self.durability.emitted(chunk.no, &chunk.marks);
        }
        for s in sinks.iter_mut() {
            s.write_chunks(&self.group);
        }
        self.group.clear();
        self.group_bytes = 0;
    }

    fn take_message(&mut self, message: Message, sinks: &mut [Box<dyn Sink>], tick: &mut bool) {
        match message {
            Message::Frames(frames) => {
                let batch = encode(frames, self.encoding);
                self.take(batch, sinks);
            }
            Message::Encoded(batch) => self.take(batch, sinks),
            Message::Tick => *tick = true,
            Message::Reopen(reply) => {
                // What came before the signal goes to the file being
                // replaced.
                self.flush(sinks);
                reopen_all(sinks, reply);
            }
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
    let mut writer = Writer {
        chunks: 0,
        durability,
        encoding: Encoding::of(&sinks),
        group: Vec::new(),
        group_bytes: 0,
    };
    while let Some(message) = rx.blocking_recv() {
        let mut tick = false;
        let frames = matches!(message, Message::Frames(_) | Message::Encoded(_));
        let started = frames.then(|| *first.get_or_insert_with(Instant::now));
        writer.take_message(message, &mut sinks, &mut tick);
        if let Some(started) = started {
            // Batches already waiting go into the same group: many quiet
            // nodes, or a busy stream, are written in one system call.
            while !writer.is_full() {
                match rx.try_recv() {
                    Ok(message) => writer.take_message(message, &mut sinks, &mut tick),
                    Err(_) => break,
                }
            }
            writer.flush(&mut sinks);
            busy = started.elapsed();
        }
        if tick {
            for s in sinks.iter_mut() {
                s.tick();
            }
        }
    }
    writer.flush(&mut sinks);
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
        RecordWriter::default().write(&mut out, f);
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

    #[test]
    fn a_batch_is_cut_into_chunks_at_the_same_records_in_both_encodings() {
        let pad: &'static [u8] = Box::leak(
            format!(
                "{{\"node_id\":\"radar3\",\"pad\":\"{}\"}}",
                "x".repeat(40_000)
            )
            .into_bytes()
            .into_boxed_slice(),
        );
        let mut frames = vec![frame(pad, Some("radar3")); 20];
        frames.push(frame(
            b"{\"node_id\":\"radar3\",\"last\":1}",
            Some("radar3"),
        ));
        let both = Encoding {
            records: true,
            lines: true,
        };
        let batch = encode(frames.clone(), both);
        assert_eq!(batch.frames.len(), 21);
        assert!(batch.chunks.len() >= 3, "800 KB in chunks of 256 KiB");
        let mut records = 0;
        for c in &batch.chunks {
            assert_eq!(
                c.records as usize,
                memchr::memchr_iter(b'\n', &c.bytes).count()
            );
            assert_eq!(
                c.records as usize,
                memchr::memchr_iter(b'\n', &c.lines).count()
            );
            assert!(c.bytes.len() < CHUNK_BYTES + 50_000);
            assert_eq!(c.runs.last().map(|r| r.end), Some(c.bytes.len()));
            records += c.records;
        }
        assert_eq!(records, 21);
        // The frame lines are the frames, in order.
        let lines: Vec<u8> = batch.chunks.iter().flat_map(|c| c.lines.to_vec()).collect();
        let want: Vec<u8> = frames
            .iter()
            .flat_map(|f| [&f.payload[..], b"\n"].concat())
            .collect();
        assert_eq!(lines, want);
        // Only what is asked for is encoded; the chunks still count every
        // frame (acknowledged delivery with NATS alone).
        let none = encode(frames.clone(), Encoding::default());
        assert_eq!(none.chunks.len(), 1);
        assert_eq!(none.chunks[0].records, 21);
        assert!(none.chunks[0].bytes.is_empty() && none.chunks[0].lines.is_empty());
        let records_only = encode(
            frames,
            Encoding {
                records: true,
                lines: false,
            },
        );
        assert!(records_only.chunks.iter().all(|c| c.lines.is_empty()));
    }

    #[test]
    fn a_frame_line_is_the_frame_with_its_line_breaks_as_spaces() {
        let mut out = Vec::new();
        write_frame_line(&mut out, b"{\"a\":1}");
        write_frame_line(&mut out, b"{\n \"b\": [1,\r\n2]\n}");
        assert_eq!(out, b"{\"a\":1}\n{  \"b\": [1,\r 2] }\n");
    }
}

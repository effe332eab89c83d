//! The `file` sink: records appended to a file, synced by policy
//! (`never`, `interval`, `always`), rotated by size and by time, and a
//! failing disk reported and counted instead of stopping the daemon.
//!
//! The active file is always `path`; a rotation renames it to
//! `path.<UTC time>` (e.g. `frames.ndjson.20261121T140252.478123Z`, so the
//! names sort in time order) and opens a fresh `path`. A record is never
//! split across two files, and a failed write never leaves half a record
//! behind: the file is cut back to the last whole record. A partial record
//! found at start (a crash mid-write) is cut off, counted and logged.
//!
//! Syncs run on a thread of their own ([`sync`](self::sync)), so a slow
//! fsync never holds up the writes behind it, nor the other sinks. For
//! acknowledged delivery each sync reports the last chunk it covered
//! ([`Durability`]), and every few seconds a small state file beside the
//! records (`.<name>.acks`: each node's durable sequence number and the
//! offset it covers) is written after the data's sync; at start the
//! marks are found again from it and a scan of the file after its offset.

mod recover;
mod sync;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use self::sync::{StateFile, Syncer};
use crate::config::{FileSinkConfig, FsyncPolicy, RecordFormat};
use crate::sink::durable::Durability;
use crate::sink::{Chunk, Sink, SinkStatus};

/// How often the state file of acknowledged delivery is rewritten (after
/// a sync): what a restart rescans is what came after it.
const STATE_EVERY: Duration = Duration::from_secs(2);

/// How long a failing file waits before it is opened and written again: a
/// full disk is not retried for every chunk.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// An open file and what is known about it.
struct Active {
    file: File,
    /// The same file for the sync thread.
    sync_handle: Arc<File>,
    /// Bytes in the file: everything up to here is whole records.
    len: u64,
    opened: Instant,
    /// A regular file (not `/dev/null` or a pipe): only those are synced,
    /// rotated or cut back.
    regular: bool,
    /// Bytes written since the last sync.
    dirty: bool,
    last_sync: Instant,
}

/// The `file` sink.
pub struct FileSink {
    config: FileSinkConfig,
    status: Arc<SinkStatus>,
    active: Option<Active>,
    /// While failing: no attempt before this moment.
    retry_at: Option<Instant>,
    /// Acknowledged delivery: the sinks' record and this sink's index.
    durability: Option<(Arc<Durability>, usize)>,
    syncer: Syncer,
    /// The last chunk written to the file.
    last_chunk: u64,
    /// Each node's last sequence number written (and the ones recovered):
    /// what the state file holds once synced.
    marks: HashMap<Arc<str>, u64>,
    /// When the state file is next written.
    state_due: Instant,
    /// What happens to rotated files (`keep_files`, `keep_for`, `compress`).
    retention: Option<super::retention::Retention>,
}

impl FileSink {
    /// Opens the file now, so a path that cannot work is reported at
    /// start; the sink keeps retrying (at most once a second) either way.
    #[cfg(test)]
    pub fn new(config: FileSinkConfig, status: Arc<SinkStatus>) -> FileSink {
        FileSink::with_durability(config, status, None)
    }

    /// [`FileSink::new`] taking part in acknowledged delivery: a partial
    /// last record is cut off, each node's durable mark is found again
    /// (see [`FileSink::recovered`]), and each sync reports what it made
    /// durable.
    pub fn with_durability(
        config: FileSinkConfig,
        status: Arc<SinkStatus>,
        durability: Option<Arc<Durability>>,
    ) -> FileSink {
        let durability = durability.map(|d| {
            let index = d.register();
            (d, index)
        });
        let syncer = Syncer::start(&config.path, status.clone(), durability.clone());
        let retention = super::retention::for_sink(&config, &status.name);
        let mut sink = FileSink {
            config,
            status,
            active: None,
            retry_at: None,
            durability,
            syncer,
            last_chunk: 0,
            marks: HashMap::new(),
            state_due: Instant::now() + STATE_EVERY,
            retention,
        };
        sink.repair_and_recover();
        if let Err(e) = sink.open() {
            sink.failed(e, 0);
        }
        sink
    }

    /// Each node's durable sequence number, as found at start.
    pub fn recovered(&self) -> Vec<(String, u64)> {
        self.marks
            .iter()
            .map(|(node, seq)| (node.to_string(), *seq))
            .collect()
    }

    /// At start: cuts off a partial last record (a crash mid-write), then,
    /// for acknowledged delivery, finds each node's durable mark again.
    fn repair_and_recover(&mut self) {
        let path = self.config.path.clone();
        match recover::repair(&path) {
            Ok(0) => {}
            Ok(cut) => {
                self.status
                    .partial_records_cut
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(sink = %self.status.name, path = %path.display(), bytes = cut, "cut off a partial last record (the previous run ended mid-write)");
            }
            Err(e) => {
                tracing::warn!(sink = %self.status.name, path = %path.display(), "cannot check the file's last record: {e}");
            }
        }
        if self.durability.is_none() {
            return;
        }
        match recover::marks(&path, &sync::state_path(&path)) {
            Ok(found) => {
                if !found.is_empty() {
                    tracing::info!(sink = %self.status.name, nodes = found.len(), "durable sequence numbers recovered");
                }
                self.marks = found
                    .into_iter()
                    .map(|(node, seq)| (Arc::from(node), seq))
                    .collect();
            }
            Err(e) => {
                tracing::warn!(sink = %self.status.name, path = %path.display(), "cannot recover durable sequence numbers (resends will be written again): {e}");
            }
        }
    }

    fn open(&mut self) -> io::Result<()> {
        let path = &self.config.path;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(|e| with_path(e, "cannot open", path))?;
        let meta = file.metadata()?;
        let regular = meta.is_file();
        let mut len = if regular { meta.len() } else { 0 };
        if regular && len > 0 && recover::last_byte(&mut file)? != b'\n' {
            // Reopened after a failure that left a partial record (start
            // cut it off already): end it, so the next record starts on a
            // line of its own.
            file.write_all(b"\n")
                .map_err(|e| with_path(e, "cannot write", path))?;
            len += 1;
        }
        let sync_handle = Arc::new(file.try_clone()?);
        self.active = Some(Active {
            sync_handle,
            file,
            len,
            opened: Instant::now(),
            regular,
            dirty: false,
            last_sync: Instant::now(),
        });
        Ok(())
    }

    /// Records the failure; the file is closed and reopened after
    /// [`RETRY_AFTER`].
    fn failed(&mut self, e: io::Error, records: u64) {
        self.active = None;
        self.retry_at = Some(Instant::now() + RETRY_AFTER);
        self.status.fail(e.to_string(), records);
        if let Some((d, index)) = &self.durability {
            d.failed(*index);
        }
    }

    /// Writes consecutive chunks: as many as fit before the next rotation
    /// in one vectored write, a chunk larger than that split at records
    /// around the rotation. On failure, the records not in the file.
    fn write_group(&mut self, chunks: &[Chunk]) -> Result<(), (io::Error, u64)> {
        let from = |i: usize| chunks[i..].iter().map(|c| c.records).sum::<u64>();
        if self.active.is_none() {
            self.open().map_err(|e| (e, from(0)))?;
        }
        let format = self.config.format;
        let mut start = 0;
        while start < chunks.len() {
            let end = self.fitting(chunks, start);
            if end > start {
                let parts: Vec<&[u8]> = chunks[start..end]
                    .iter()
                    .map(|c| &c.bytes_for(format)[..])
                    .collect();
                let bytes = parts.iter().map(|p| p.len()).sum();
                self.rotate_if_due(bytes).map_err(|e| (e, from(start)))?;
                self.append(&parts).map_err(|e| (e, from(start)))?;
                self.written(&chunks[start..end]);
                start = end;
                continue;
            }
            let mut rest: &[u8] = chunks[start].bytes_for(format);
            while !rest.is_empty() {
                let lost = |rest: &[u8]| records_in(rest) + from(start + 1);
                self.rotate_if_due(rest.len())
                    .map_err(|e| (e, lost(rest)))?;
                let part = self.next_part(rest);
                self.append(&[part]).map_err(|e| (e, lost(rest)))?;
                rest = &rest[part.len()..];
            }
            self.written(&chunks[start..=start]);
            start += 1;
        }
        Ok(())
    }

    /// The end of the run of chunks from `start` that fits before
    /// `rotate_bytes` (all of them without a limit); `start` when the
    /// first does not fit.
    fn fitting(&self, chunks: &[Chunk], start: usize) -> usize {
        let room = match (self.config.rotate_bytes, &self.active) {
            (Some(limit), Some(active)) if active.regular => {
                Some((limit.0 as u64).saturating_sub(active.len))
            }
            _ => None,
        };
        let mut bytes = 0;
        let mut end = start;
        while end < chunks.len() {
            let n = chunks[end].bytes_for(self.config.format).len() as u64;
            if room.is_some_and(|room| bytes + n > room) {
                break;
            }
            bytes += n;
            end += 1;
        }
        end
    }

    /// `chunks` are in the file: their marks count, and the sync policy
    /// applies.
    fn written(&mut self, chunks: &[Chunk]) {
        for chunk in chunks {
            self.last_chunk = chunk.no;
            for (node, seq) in chunk.marks.iter() {
                match self.marks.get_mut(node) {
                    Some(mark) => *mark = seq.value(),
                    None => {
                        self.marks.insert(node.clone(), seq.value());
                    }
                }
            }
        }
        match self.config.fsync {
            // Group commit: every chunk written while a sync runs is
            // covered by the next one.
            FsyncPolicy::Always => self.request_sync(),
            // Written to the OS is as durable as this policy gets.
            FsyncPolicy::Never => self.report_synced(),
            FsyncPolicy::Interval => {}
        }
    }

    /// Everything written so far is durable (no sync needed or done).
    fn report_synced(&self) {
        if let Some((d, index)) = &self.durability {
            d.synced(*index, self.last_chunk);
        }
    }

    /// Asks the sync thread to sync everything written so far; the writes
    /// go on meanwhile.
    fn request_sync(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if !active.regular {
            active.dirty = false;
            self.report_synced();
            return;
        }
        let state = (self.durability.is_some() && Instant::now() >= self.state_due).then(|| {
            self.state_due = Instant::now() + STATE_EVERY;
            StateFile::new(active.len, &self.marks)
        });
        self.syncer
            .request(active.sync_handle.clone(), self.last_chunk, state);
        active.dirty = false;
        active.last_sync = Instant::now();
    }

    /// The longest run of whole records at the front of `rest` that fits
    /// under `rotate_bytes`; at least one record, so a record larger than
    /// the limit gets a file of its own.
    fn next_part<'a>(&self, rest: &'a [u8]) -> &'a [u8] {
        let (Some(limit), Some(active)) = (self.config.rotate_bytes, &self.active) else {
            return rest;
        };
        if !active.regular {
            return rest;
        }
        let room = (limit.0 as u64).saturating_sub(active.len) as usize;
        if rest.len() <= room {
            return rest;
        }
        match memchr::memrchr(b'\n', &rest[..room]) {
            Some(end) => &rest[..=end],
            None => {
                let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len() - 1);
                &rest[..=end]
            }
        }
    }

    /// Appends `parts` (whole records) with as few system calls as the
    /// kernel allows: one vectored write, again for what it did not take.
    fn append(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let path = &self.config.path;
        let Some(active) = self.active.as_mut() else {
            return Err(io::Error::other("file not open"));
        };
        let mut slices: Vec<IoSlice> = parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| IoSlice::new(p))
            .collect();
        let total: usize = slices.iter().map(|s| s.len()).sum();
        if let Err(e) = write_all_vectored(&mut active.file, &mut slices) {
            // Part of a record may have reached the file: cut back to the
            // last whole record so readers never see half of one.
            if active.regular {
                let _ = active.file.set_len(active.len);
            }
            return Err(with_path(e, "cannot write", path));
        }
        active.len += total as u64;
        active.dirty = true;
        self.status
            .bytes_written
            .fetch_add(total as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Rotates when the next `incoming` bytes would pass `rotate_bytes`, or
    /// when the file is older than `rotate_every`; never an empty file.
    fn rotate_if_due(&mut self, incoming: usize) -> io::Result<()> {
        let Some(active) = &self.active else {
            return Ok(());
        };
        if !active.regular || active.len == 0 {
            return Ok(());
        }
        let by_size = self
            .config
            .rotate_bytes
            .is_some_and(|limit| active.len + incoming as u64 > limit.0 as u64);
        let by_time = self
            .config
            .rotate_every
            .is_some_and(|every| active.opened.elapsed() >= every);
        if by_size || by_time {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let path = self.config.path.clone();
        // A sync of the old file under way finishes first: its state file
        // must not land after the one written below.
        self.syncer.wait_idle();
        if let Some(active) = self.active.as_mut() {
            // The old file is complete: make it durable before it is
            // renamed, whatever the policy.
            active
                .file
                .sync_data()
                .map_err(|e| with_path(e, "cannot sync", &path))?;
            active.dirty = false;
        }
        self.report_synced();
        if self.durability.is_some() {
            // The new file starts at offset 0, and the marks so far came
            // from files a restart does not scan.
            let state = StateFile::new(0, &self.marks);
            if let Err(e) = state.write(&sync::state_path(&path)) {
                tracing::warn!(sink = %self.status.name, "cannot write the acknowledgement state: {e}");
            }
        }
        let target = rotated_name(&path, SystemTime::now());
        std::fs::rename(&path, &target).map_err(|e| with_path(e, "cannot rotate", &path))?;
        if self.config.fsync != FsyncPolicy::Never {
            sync_dir(&path);
        }
        self.active = None;
        self.status.rotations.fetch_add(1, Ordering::Relaxed);
        tracing::info!(sink = %self.status.name, rotated_to = %target.display(), "file rotated");
        if let Some(retention) = &self.retention {
            retention.rotated(target);
        }
        self.open()
    }

    fn sync_if_due(&mut self) {
        let due = self.active.as_ref().is_some_and(|a| {
            a.dirty
                && match self.config.fsync {
                    FsyncPolicy::Interval => a.last_sync.elapsed() >= self.config.fsync_interval,
                    FsyncPolicy::Always | FsyncPolicy::Never => false,
                }
        });
        if due {
            self.request_sync();
        }
    }
}

impl Sink for FileSink {
    fn status(&self) -> &Arc<SinkStatus> {
        &self.status
    }

    fn format(&self) -> RecordFormat {
        self.config.format
    }

    fn write(&mut self, chunk: &Chunk) {
        self.write_chunks(std::slice::from_ref(chunk));
    }

    fn write_chunks(&mut self, chunks: &[Chunk]) {
        let records: u64 = chunks.iter().map(|c| c.records).sum();
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            let error = self.status.error().unwrap_or_else(|| "failing".to_owned());
            self.status.fail(error, records);
            // A later chunk's sync must not acknowledge these.
            if let Some((d, index)) = &self.durability {
                d.failed(*index);
            }
            return;
        }
        self.retry_at = None;
        let started = Instant::now();
        let written = self.write_group(chunks);
        self.status.write_duration.observe(started.elapsed());
        match written {
            Ok(()) => {
                // Bytes were counted as they went; records once whole.
                self.status
                    .records_written
                    .fetch_add(records, Ordering::Relaxed);
                self.status.recover();
                self.sync_if_due();
            }
            Err((e, lost)) => {
                // Records before the failing part are in the file.
                let written = records - lost.min(records);
                self.status
                    .records_written
                    .fetch_add(written, Ordering::Relaxed);
                self.failed(e, lost);
            }
        }
    }

    fn tick(&mut self) {
        self.sync_if_due();
        if let Err(e) = self.rotate_if_due(0) {
            self.failed(e, 0);
        }
    }

    /// Syncs everything (and writes the state file), waiting for it.
    fn finish(&mut self) {
        if let Some(active) = self.active.as_mut() {
            active.dirty = true;
            self.state_due = Instant::now();
        }
        self.request_sync();
        self.syncer.wait_idle();
    }

    /// Syncs the file written so far (wherever it was moved to), then
    /// opens `path` afresh; if that fails, keeps the old file.
    fn reopen(&mut self) -> Result<(), String> {
        let old = self.active.take();
        if let Some(mut old) = old {
            if old.regular && old.dirty {
                let _ = old.file.sync_data();
                old.dirty = false;
            }
            if let Err(e) = self.open() {
                self.active = Some(old);
                return Err(e.to_string());
            }
        } else {
            // Failing: try now rather than at the next retry.
            self.retry_at = None;
            self.open().map_err(|e| e.to_string())?;
        }
        tracing::info!(sink = %self.status.name, path = %self.config.path.display(), "file reopened");
        Ok(())
    }
}

/// Writes every byte of `slices`, a vectored write at a time (the
/// standard library's `write_all_vectored` is not stable yet).
fn write_all_vectored(file: &mut File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Records (newline-terminated) in `bytes`.
fn records_in(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

/// `path.20261121T140252.478123Z`, or with `.1`, `.2`... if taken.
fn rotated_name(path: &Path, now: SystemTime) -> PathBuf {
    let stamp: String = humantime::format_rfc3339_micros(now)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(&stamp);
    let base = PathBuf::from(name);
    let mut candidate = base.clone();
    let mut n = 1;
    while candidate.exists() {
        let mut name = base.as_os_str().to_owned();
        name.push(format!(".{n}"));
        candidate = PathBuf::from(name);
        n += 1;
    }
    candidate
}

/// Makes a rename durable. Best effort: some file systems refuse to sync a
/// directory, and the data itself is already synced.
fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use framehub::ByteSize;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("framehub-file-sink-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn chunk(records: &[&str]) -> Chunk {
        let mut bytes = Vec::new();
        for r in records {
            bytes.extend_from_slice(r.as_bytes());
            bytes.push(b'\n');
        }
        let bytes = Bytes::from(bytes);
        Chunk {
            lines: bytes.clone(),
            bytes,
            records: records.len() as u64,
            no: 1,
            marks: Arc::from(Vec::new()),
            runs: Vec::new(),
        }
    }

    fn sink(path: &Path, tweak: impl FnOnce(&mut FileSinkConfig)) -> FileSink {
        let mut config = FileSinkConfig {
            path: path.to_owned(),
            ..FileSinkConfig::default()
        };
        tweak(&mut config);
        FileSink::new(config, SinkStatus::new("file", "file", true))
    }

    fn files(dir: &Path) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read_to_string(e.path()).expect("read"),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn rotation_by_size_keeps_records_whole_and_files_under_the_limit() {
        let dir = temp_dir("size");
        let path = dir.join("frames.ndjson");
        let mut s = sink(&path, |c| c.rotate_bytes = Some(ByteSize(4096)));
        let record = format!("{{\"n\":\"{}\"}}", "x".repeat(1000));
        for _ in 0..5 {
            s.write(&chunk(&[&record, &record, &record]));
        }
        s.finish();
        let all = files(&dir);
        assert!(all.len() >= 4, "15 records of 1 KB in 4 KiB files: {all:?}");
        let mut total = 0;
        for (name, text) in &all {
            assert!(text.len() <= 4096, "{name} has {} bytes", text.len());
            assert!(text.ends_with('\n'));
            for line in text.lines() {
                assert_eq!(line, record, "{name}: a record was split");
                total += 1;
            }
        }
        assert_eq!(total, 15);
        // The active file keeps its name; rotated ones sort after it in time.
        assert_eq!(all[0].0, "frames.ndjson");
        assert!(all[1].0.starts_with("frames.ndjson.20"), "{}", all[1].0);
        assert_eq!(
            s.status.rotations.load(Ordering::Relaxed),
            all.len() as u64 - 1
        );
        assert_eq!(s.status.records_written.load(Ordering::Relaxed), 15);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Issue 16: the sink thread hands a group of chunks at once; those
    /// that fit before the next rotation go out in one vectored write, the
    /// rest around the rotation, every record whole, in order, once.
    #[test]
    fn a_group_of_chunks_is_written_in_order_around_rotations() {
        let dir = temp_dir("group");
        let path = dir.join("frames.ndjson");
        let mut s = sink(&path, |c| c.rotate_bytes = Some(ByteSize(8192)));
        let record = |n: usize| format!("{{\"n\":{n:04},\"pad\":\"{}\"}}", "x".repeat(500));
        let mut group = Vec::new();
        let mut n = 0;
        for (no, size) in [3, 1, 9, 2, 30, 1].into_iter().enumerate() {
            let records: Vec<String> = (0..size).map(|i| record(n + i)).collect();
            n += size;
            let refs: Vec<&str> = records.iter().map(String::as_str).collect();
            let mut c = chunk(&refs);
            c.no = no as u64 + 1;
            group.push(c);
        }
        s.write_chunks(&group);
        s.finish();
        assert_eq!(s.status.records_written.load(Ordering::Relaxed), n as u64);
        let mut all = files(&dir);
        assert!(all.len() >= 4, "{n} records of 500 B in 8 KiB files");
        // The active file is the newest: rotated ones first, by time.
        all.rotate_left(1);
        let mut seen = 0;
        for (name, text) in &all {
            assert!(text.len() <= 8192, "{name} has {} bytes", text.len());
            for line in text.lines() {
                assert_eq!(line, record(seen), "{name}: out of order or split");
                seen += 1;
            }
        }
        assert_eq!(seen, n);
        assert_eq!(s.last_chunk, 6);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// `format = "frame"`: the chunk's frame lines, not its records.
    #[test]
    fn a_frame_sink_writes_the_frame_lines() {
        let dir = temp_dir("lines");
        let path = dir.join("f");
        let mut s = sink(&path, |c| c.format = RecordFormat::Frame);
        let mut c = chunk(&["{\"record\":1}"]);
        c.lines = Bytes::from_static(b"{\"frame\":1}\n");
        s.write(&c);
        s.finish();
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "{\"frame\":1}\n"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_record_larger_than_the_limit_gets_a_file_of_its_own() {
        let dir = temp_dir("large");
        let path = dir.join("f");
        let mut s = sink(&path, |c| c.rotate_bytes = Some(ByteSize(4096)));
        let big = "y".repeat(10_000);
        s.write(&chunk(&["small", &big, "small"]));
        s.finish();
        let all = files(&dir);
        let contents: Vec<&str> = all.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(contents.contains(&format!("{big}\n").as_str()));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn rotation_by_time_happens_on_a_tick_and_never_for_an_empty_file() {
        let dir = temp_dir("time");
        let path = dir.join("f");
        let mut s = sink(&path, |c| c.rotate_every = Some(Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        s.tick();
        assert_eq!(files(&dir).len(), 1, "an empty file is not rotated");
        s.write(&chunk(&["a"]));
        std::thread::sleep(Duration::from_millis(5));
        s.tick();
        s.write(&chunk(&["b"]));
        s.finish();
        let all = files(&dir);
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all[0], ("f".to_owned(), "b\n".to_owned()));
        assert_eq!(all[1].1, "a\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Issue 18 item 8: a partial record left by a crash is cut off at
    /// start (it used to be ended with a newline, which left an
    /// unparseable line in the file), counted.
    #[test]
    fn a_partial_last_line_is_cut_off_before_appending() {
        let dir = temp_dir("torn");
        let path = dir.join("f");
        std::fs::write(&path, "{\"whole\":1}\n{\"torn").expect("write");
        let mut s = sink(&path, |_| {});
        assert_eq!(s.status.partial_records_cut.load(Ordering::Relaxed), 1);
        s.write(&chunk(&["{\"next\":2}"]));
        s.finish();
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "{\"whole\":1}\n{\"next\":2}\n"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_full_disk_is_reported_and_every_lost_record_counted() {
        // /dev/full fails every write with ENOSPC, as a full disk does.
        let mut s = sink(Path::new("/dev/full"), |c| c.fsync = FsyncPolicy::Always);
        assert_eq!(s.status.error(), None, "opening works");
        s.write(&chunk(&["a", "b"]));
        let error = s.status.error().expect("failing");
        assert!(error.contains("No space left on device"), "{error}");
        // Within the retry delay: not tried, still counted.
        s.write(&chunk(&["c"]));
        assert_eq!(s.status.records_failed.load(Ordering::Relaxed), 3);
        assert_eq!(s.status.records_written.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_path_that_cannot_be_opened_is_reported_at_start() {
        let s = sink(
            Path::new("/proc/framehub-no-such-dir/frames.ndjson"),
            |_| {},
        );
        let error = s.status.error().expect("failing");
        assert!(
            error.contains("cannot open /proc/framehub-no-such-dir"),
            "{error}"
        );
    }
}

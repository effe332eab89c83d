//! What happens to a file sink's rotated files: gzip them (`compress`),
//! delete all but the newest `keep_files`, delete those older than
//! `keep_for`. The file sink only calls [`Retention::rotated`] after each
//! rotation; the work runs on a thread of its own, so compressing a large
//! file never holds up the records behind it.
//!
//! Rotated files are recognised by name: `<path>.<UTC time>[.<n>][.gz]`,
//! as the file sink names them, so files of other sinks or programs in the
//! same directory are never touched. Their names sort in rotation order.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::config::FileSinkConfig;

/// Rotations waiting for the retention thread; past this, a rotated file
/// waits uncompressed (counted, logged) for the next pass, which takes
/// every rotated file left uncompressed.
const PENDING_ROTATIONS: usize = 8;

/// The retention settings of one file sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The sink's active file; rotated ones are `<path>.<time>...`.
    pub path: PathBuf,
    /// Keep at most this many rotated files.
    pub keep_files: Option<usize>,
    /// Delete rotated files last written longer ago than this.
    pub keep_for: Option<Duration>,
    /// Gzip each rotated file (`<name>.gz`).
    pub compress: bool,
}

impl Policy {
    /// The sink's policy, `None` when it keeps every file as it is.
    pub fn of(config: &FileSinkConfig) -> Option<Policy> {
        let policy = Policy {
            path: config.path.clone(),
            keep_files: config.keep_files,
            keep_for: config.keep_for,
            compress: config.compress,
        };
        (policy.keep_files.is_some() || policy.keep_for.is_some() || policy.compress)
            .then_some(policy)
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Files gzipped.
    pub compressed: Vec<PathBuf>,
    /// Rotated files deleted.
    pub deleted: Vec<PathBuf>,
}

/// The retention thread of a file sink whose config asks for one; a
/// thread that cannot start is logged and the files are kept as they are.
pub fn for_sink(config: &FileSinkConfig, sink: &str) -> Option<Retention> {
    let policy = Policy::of(config)?;
    match Retention::start(policy, sink) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(sink = %sink, "cannot start the retention thread, rotated files are kept: {e}");
            None
        }
    }
}

/// The retention thread of one file sink.
pub struct Retention {
    jobs: SyncSender<PathBuf>,
    /// Rotated files left uncompressed because the thread was behind.
    pub skipped: Arc<AtomicU64>,
}

impl Retention {
    /// Starts the thread; `sink` names it in logs.
    pub fn start(policy: Policy, sink: &str) -> io::Result<Retention> {
        let (jobs, rx) = sync_channel::<PathBuf>(PENDING_ROTATIONS);
        let sink = sink.to_owned();
        std::thread::Builder::new()
            .name("framehub-retention".to_owned())
            .spawn(move || {
                // The file named is one of those the pass finds itself.
                for _rotated in rx {
                    match apply(&policy, SystemTime::now()) {
                        Ok(pass) => {
                            for f in &pass.compressed {
                                tracing::info!(sink = %sink, file = %f.display(), "rotated file compressed");
                            }
                            for f in &pass.deleted {
                                tracing::info!(sink = %sink, file = %f.display(), "rotated file deleted (retention)");
                            }
                        }
                        Err(e) => tracing::warn!(sink = %sink, "retention of rotated files failed: {e}"),
                    }
                }
            })?;
        Ok(Retention {
            jobs,
            skipped: Arc::default(),
        })
    }

    /// The sink just rotated its file to `rotated`: compress and prune, in
    /// the background. Never blocks the sink.
    pub fn rotated(&self, rotated: PathBuf) {
        match self.jobs.try_send(rotated) {
            Ok(()) => {}
            Err(TrySendError::Full(file) | TrySendError::Disconnected(file)) => {
                let skipped = self.skipped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(file = %file.display(), skipped, "retention is behind: rotated file left as it is until the next pass");
            }
        }
    }
}

/// One pass: deletes rotated files beyond `keep_files` (oldest first) and
/// older than `keep_for`, then (when compressing) gzips every rotated file
/// left that is not compressed yet: the one just rotated, and any a pass
/// missed (the thread was behind, or a compression failed).
pub fn apply(policy: &Policy, now: SystemTime) -> io::Result<Pass> {
    let mut pass = Pass::default();
    let mut files = rotated_files(&policy.path)?;
    // Oldest first: the names carry the rotation time.
    files.sort();
    let over = policy
        .keep_files
        .map_or(0, |keep| files.len().saturating_sub(keep));
    let mut kept = Vec::with_capacity(files.len());
    for (i, file) in files.into_iter().enumerate() {
        let too_old = policy.keep_for.is_some_and(|keep_for| {
            fs::metadata(&file)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|written| now.duration_since(written).ok())
                .is_some_and(|age| age > keep_for)
        });
        if i < over || too_old {
            match fs::remove_file(&file) {
                Ok(()) => pass.deleted.push(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", file.display()))),
            }
        } else {
            kept.push(file);
        }
    }
    if policy.compress {
        for file in kept
            .iter()
            .filter(|f| f.extension().is_none_or(|e| e != "gz"))
        {
            pass.compressed.push(gzip(file)?);
        }
    }
    Ok(pass)
}

/// The rotated files of the sink writing `path`, in no order.
fn rotated_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}.");
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        if is_rotation_suffix(rest) && entry.file_type()?.is_file() {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// `20261121T140252.478123Z`, maybe followed by `.<n>` and `.gz`.
fn is_rotation_suffix(rest: &str) -> bool {
    let rest = rest.strip_suffix(".gz").unwrap_or(rest);
    let (stamp, n) = match rest.split_once("Z.") {
        Some((stamp, n)) => (stamp, Some(n)),
        None => match rest.strip_suffix('Z') {
            Some(stamp) => (stamp, None),
            None => return false,
        },
    };
    let stamp_ok = stamp.len() >= 15
        && stamp.as_bytes()[8] == b'T'
        && stamp
            .chars()
            .all(|c| c.is_ascii_digit() || c == 'T' || c == '.');
    stamp_ok && n.is_none_or(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// `file` -> `file.gz`, synced before the original is removed, so a crash
/// leaves one whole copy or the other.
fn gzip(file: &Path) -> io::Result<PathBuf> {
    let mut gz_name = file.as_os_str().to_owned();
    gz_name.push(".gz");
    let gz = PathBuf::from(gz_name);
    let mut tmp_name = gz.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        let mut input = BufReader::new(File::open(file)?);
        let mut encoder =
            GzEncoder::new(BufWriter::new(File::create(&tmp)?), Compression::default());
        io::copy(&mut input, &mut encoder)?;
        let out = encoder.finish()?.into_inner().map_err(|e| e.into_error())?;
        out.sync_all()?;
        fs::rename(&tmp, &gz)?;
        fs::remove_file(file)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io::Error::new(
            e.kind(),
            format!("cannot compress {}: {e}", file.display()),
        ));
    }
    Ok(gz)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;

    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("framehub-retention-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("dir");
        d
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn policy(path: &Path) -> Policy {
        Policy {
            path: path.to_owned(),
            keep_files: None,
            keep_for: None,
            compress: false,
        }
    }

    /// One pass of a policy that only compresses, now.
    fn compress_pass(path: &Path) -> Pass {
        apply(
            &Policy {
                compress: true,
                ..policy(path)
            },
            SystemTime::now(),
        )
        .expect("pass")
    }

    #[test]
    fn recognises_only_rotated_names() {
        assert!(is_rotation_suffix("20261121T140252.478123Z"));
        assert!(is_rotation_suffix("20261121T140252.478123Z.3"));
        assert!(is_rotation_suffix("20261121T140252.478123Z.gz"));
        assert!(is_rotation_suffix("20261121T140252.478123Z.3.gz"));
        assert!(!is_rotation_suffix("bak"));
        assert!(!is_rotation_suffix("20261121T140252.478123Z.gz.tmp"));
        assert!(!is_rotation_suffix("old.20261121T140252Z"));
    }

    #[test]
    fn keep_files_deletes_the_oldest_and_nothing_else() {
        let d = dir("keep-files");
        let path = d.join("frames.ndjson");
        fs::write(&path, "active\n").expect("active");
        fs::write(d.join("frames.ndjson.bak"), "mine\n").expect("other");
        fs::write(d.join("other.ndjson.20260101T000000.000000Z"), "x").expect("other sink");
        for stamp in [
            "20260101T000000.000000Z",
            "20260102T000000.000000Z",
            "20260102T000000.000000Z.1",
            "20260103T000000.000000Z.gz",
        ] {
            fs::write(d.join(format!("frames.ndjson.{stamp}")), stamp).expect("rotated");
        }
        let pass = apply(
            &Policy {
                keep_files: Some(2),
                ..policy(&path)
            },
            SystemTime::now(),
        )
        .expect("pass");
        assert_eq!(pass.deleted.len(), 2);
        assert_eq!(
            names(&d),
            [
                "frames.ndjson",
                "frames.ndjson.20260102T000000.000000Z.1",
                "frames.ndjson.20260103T000000.000000Z.gz",
                "frames.ndjson.bak",
                "other.ndjson.20260101T000000.000000Z",
            ]
        );
    }

    #[test]
    fn keep_for_deletes_files_last_written_too_long_ago() {
        let d = dir("keep-for");
        let path = d.join("frames.ndjson");
        let old = d.join("frames.ndjson.20260101T000000.000000Z");
        let new = d.join("frames.ndjson.20260105T000000.000000Z");
        fs::write(&old, "old").expect("old");
        fs::write(&new, "new").expect("new");
        // Seen from an hour later, both are an hour old; from now, neither.
        let p = Policy {
            keep_for: Some(Duration::from_secs(1800)),
            ..policy(&path)
        };
        let pass = apply(&p, SystemTime::now()).expect("pass");
        assert!(pass.deleted.is_empty());
        let pass = apply(&p, SystemTime::now() + Duration::from_secs(3600)).expect("pass");
        assert_eq!(pass.deleted.len(), 2);
        assert!(!old.exists() && !new.exists());
    }

    #[test]
    fn compress_gzips_the_rotated_file_whole() {
        let d = dir("compress");
        let path = d.join("frames.ndjson");
        let rotated = d.join("frames.ndjson.20260101T000000.000000Z");
        let body = "{\"node\":\"radar1\"}\n".repeat(1000);
        fs::write(&rotated, &body).expect("rotated");
        let pass = compress_pass(&path);
        let gz = d.join("frames.ndjson.20260101T000000.000000Z.gz");
        assert_eq!(pass.compressed, std::slice::from_ref(&gz));
        assert!(!rotated.exists());
        let mut back = String::new();
        GzDecoder::new(File::open(&gz).expect("gz"))
            .read_to_string(&mut back)
            .expect("gunzip");
        assert_eq!(back, body);
        assert!(fs::metadata(&gz).expect("meta").len() < body.len() as u64 / 5);
    }

    /// A rotated file a pass missed (the thread was behind and the sink
    /// could not queue it) is compressed by the next pass.
    #[test]
    fn a_pass_compresses_the_rotated_files_an_earlier_pass_missed() {
        let d = dir("missed");
        let path = d.join("frames.ndjson");
        fs::write(&path, "active\n").expect("active");
        let missed = d.join("frames.ndjson.20260101T000000.000000Z");
        let latest = d.join("frames.ndjson.20260102T000000.000000Z");
        fs::write(&missed, "old\n").expect("missed");
        fs::write(&latest, "new\n").expect("latest");
        let pass = compress_pass(&path);
        let gz = |p: &Path| PathBuf::from(format!("{}.gz", p.display()));
        assert_eq!(pass.compressed, vec![gz(&missed), gz(&latest)]);
        assert!(!missed.exists() && !latest.exists());
        assert!(path.exists(), "the active file is never compressed");
    }

    /// The whole path: a file sink rotating by size, with the retention
    /// thread compressing and keeping the newest three.
    #[test]
    fn file_sink_rotations_are_compressed_and_pruned() {
        use crate::sink::file::FileSink;
        use crate::sink::{Chunk, Sink, SinkStatus};

        let d = dir("sink");
        let path = d.join("frames.ndjson");
        let config = FileSinkConfig {
            path: path.clone(),
            rotate_bytes: Some(framehub::ByteSize(4096)),
            keep_files: Some(3),
            compress: true,
            ..FileSinkConfig::default()
        };
        let status = SinkStatus::new("file", "file", true);
        let mut sink = FileSink::new(config, status.clone());
        let record = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(200));
        for no in 1..=200 {
            sink.write(&Chunk {
                bytes: bytes::Bytes::from(record.clone()),
                lines: bytes::Bytes::new(),
                records: 1,
                no,
                marks: std::sync::Arc::from(Vec::new()),
                runs: Vec::new(),
            });
        }
        sink.finish();
        let rotations = status.rotations.load(Ordering::Relaxed);
        assert!(rotations >= 6, "{rotations} rotations");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let all = names(&d);
            let gz = all.iter().filter(|n| n.ends_with(".gz")).count();
            let plain_rotated = all
                .iter()
                .filter(|n| n.starts_with("frames.ndjson.") && !n.ends_with(".gz"))
                .count();
            if gz == 3 && plain_rotated == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "retention never settled: {all:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(path.exists(), "the active file stays");
    }
}

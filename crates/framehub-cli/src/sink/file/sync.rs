//! The file sink's sync thread: fsyncs while the writer goes on, one sync
//! for everything written since the last one (group commit), then reports
//! the last chunk it covered (acknowledged delivery) and, now and then,
//! writes the state file that a restart starts from.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use crate::sink::SinkStatus;
use crate::sink::durable::Durability;

/// Test-only fault switch, honoured in debug builds only: while the file
/// this variable names exists, every sync fails, as on a disk that
/// refuses fsync. Used by the daemon tests to show that an ack never
/// precedes a sync; a release build ignores it.
pub const FAIL_SYNC_ENV: &str = "FRAMEHUB_TEST_FAIL_SYNC";

/// Test-only, debug builds only, as [`FAIL_SYNC_ENV`]: while the file this
/// names exists, every sync waits (a disk whose fsync takes forever), to
/// show that the writes, ingest and the other sinks go on meanwhile.
pub const HOLD_SYNC_ENV: &str = "FRAMEHUB_TEST_HOLD_SYNC";

/// The state file beside `path`: `.<name>.acks` (hidden, so that nothing
/// that looks for rotated `path.*` files takes it for one).
pub fn state_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.acks"))
}

/// What the state file holds: each node's durable sequence number, and
/// the offset in the active file up to which the records are covered.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StateFile {
    pub offset: u64,
    pub durable: HashMap<String, u64>,
}

impl StateFile {
    pub fn new(offset: u64, marks: &HashMap<Arc<str>, u64>) -> StateFile {
        StateFile {
            offset,
            durable: marks.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
        }
    }

    /// Writes it durably: a new file synced, then renamed over the old.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut file = File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(self).map_err(io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        super::sync_dir(path);
        Ok(())
    }
}

struct Request {
    file: Arc<File>,
    chunk: u64,
    state: Option<StateFile>,
}

#[derive(Default)]
struct State {
    request: Option<Request>,
    busy: bool,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    idle: Condvar,
}

/// The sync thread of one file sink.
pub struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    pub fn start(
        path: &Path,
        status: Arc<SinkStatus>,
        durability: Option<(Arc<Durability>, usize)>,
    ) -> Syncer {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            idle: Condvar::new(),
        });
        let worker = Worker {
            shared: shared.clone(),
            status,
            durability,
            state_path: state_path(path),
            path: path.to_owned(),
        };
        let thread = std::thread::Builder::new()
            .name("framehub-fsync".to_owned())
            .spawn(move || worker.run())
            .map_err(|e| tracing::error!("cannot start a sync thread, syncing inline: {e}"))
            .ok();
        Syncer { shared, thread }
    }

    /// Syncs `file` up to `chunk` soon; a request not started yet is
    /// replaced (the new one covers it), keeping its state file if the new
    /// one has none.
    pub fn request(&self, file: Arc<File>, chunk: u64, state: Option<StateFile>) {
        let mut s = self.shared.state.lock();
        let state = state.or_else(|| s.request.take().and_then(|r| r.state));
        s.request = Some(Request { file, chunk, state });
        self.shared.wake.notify_one();
    }

    /// Waits until every request made so far is done.
    pub fn wait_idle(&self) {
        if self.thread.is_none() {
            return;
        }
        let mut s = self.shared.state.lock();
        while s.busy || s.request.is_some() {
            self.shared.idle.wait(&mut s);
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Worker {
    shared: Arc<Shared>,
    status: Arc<SinkStatus>,
    durability: Option<(Arc<Durability>, usize)>,
    state_path: PathBuf,
    path: PathBuf,
}

impl Worker {
    fn run(self) {
        loop {
            let request = {
                let mut s = self.shared.state.lock();
                loop {
                    if let Some(r) = s.request.take() {
                        s.busy = true;
                        break r;
                    }
                    if s.stop {
                        return;
                    }
                    self.shared.idle.notify_all();
                    self.shared.wake.wait(&mut s);
                }
            };
            self.sync(request);
            self.shared.state.lock().busy = false;
            self.shared.idle.notify_all();
        }
    }

    fn sync(&self, request: Request) {
        let started = std::time::Instant::now();
        let synced = sync_data(&request.file);
        self.status.sync_duration.observe(started.elapsed());
        match synced {
            Ok(()) => {
                if let Some(state) = request.state
                    && let Err(e) = state.write(&self.state_path)
                {
                    tracing::warn!(sink = %self.status.name, path = %self.state_path.display(), "cannot write the acknowledgement state: {e}");
                }
                if let Some((d, index)) = &self.durability {
                    d.synced(*index, request.chunk);
                }
            }
            Err(e) => {
                self.status
                    .fail(format!("cannot sync {}: {e}", self.path.display()), 0);
                if let Some((d, index)) = &self.durability {
                    d.failed(*index);
                }
            }
        }
    }
}

fn sync_data(file: &File) -> io::Result<()> {
    if cfg!(debug_assertions)
        && let Some(flag) = std::env::var_os(HOLD_SYNC_ENV)
    {
        while Path::new(&flag).exists() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    if cfg!(debug_assertions)
        && let Some(flag) = std::env::var_os(FAIL_SYNC_ENV)
        && Path::new(&flag).exists()
    {
        return Err(io::Error::other(format!(
            "sync refused by the test switch {FAIL_SYNC_ENV}"
        )));
    }
    file.sync_data()
}

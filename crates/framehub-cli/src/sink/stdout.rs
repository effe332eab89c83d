//! The `stdout` sink: records written to standard output, one write per
//! chunk. A closed pipe or a full disk behind a redirection is reported
//! and counted like any failing sink.

use std::io::{self, Write};
use std::sync::Arc;

use crate::sink::{Chunk, Sink, SinkStatus};

/// The `stdout` sink.
pub struct StdoutSink {
    status: Arc<SinkStatus>,
}

impl StdoutSink {
    /// A sink on this process's standard output.
    pub fn new(status: Arc<SinkStatus>) -> StdoutSink {
        StdoutSink { status }
    }
}

impl Sink for StdoutSink {
    fn status(&self) -> &Arc<SinkStatus> {
        &self.status
    }

    fn write(&mut self, chunk: &Chunk) {
        // Chunks are whole records and large: no buffer of our own, and a
        // flush per chunk keeps a quiet stream visible at once.
        let mut out = io::stdout().lock();
        match out.write_all(&chunk.bytes).and_then(|()| out.flush()) {
            Ok(()) => self.status.wrote(chunk.records, chunk.bytes.len() as u64),
            Err(e) => self
                .status
                .fail(format!("cannot write to stdout: {e}"), chunk.records),
        }
    }
}

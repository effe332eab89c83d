//! The `stdout` sink: records written to standard output, one write per
//! chunk. A closed pipe or a full disk behind a redirection is reported
//! and counted like any failing sink.

use std::io::{self, Write};
use std::sync::Arc;

use crate::config::RecordFormat;
use crate::sink::{Chunk, Sink, SinkStatus};

/// The `stdout` sink.
pub struct StdoutSink {
    status: Arc<SinkStatus>,
    format: RecordFormat,
}

impl StdoutSink {
    /// A sink on this process's standard output, writing `format`.
    pub fn new(status: Arc<SinkStatus>, format: RecordFormat) -> StdoutSink {
        StdoutSink { status, format }
    }
}

impl Sink for StdoutSink {
    fn status(&self) -> &Arc<SinkStatus> {
        &self.status
    }

    fn format(&self) -> RecordFormat {
        self.format
    }

    fn write(&mut self, chunk: &Chunk) {
        self.write_chunks(std::slice::from_ref(chunk));
    }

    fn write_chunks(&mut self, chunks: &[Chunk]) {
        // Chunks are whole records and large: no buffer of our own, and a
        // flush per group keeps a quiet stream visible at once.
        let mut out = io::stdout().lock();
        for (i, chunk) in chunks.iter().enumerate() {
            let bytes = chunk.bytes_for(self.format);
            if let Err(e) = out.write_all(bytes) {
                let lost = chunks[i..].iter().map(|c| c.records).sum();
                self.status
                    .fail(format!("cannot write to stdout: {e}"), lost);
                return;
            }
            self.status.wrote(chunk.records, bytes.len() as u64);
        }
        if let Err(e) = out.flush() {
            // What the flush could not write was counted as written: the
            // pipe broke after the kernel took the rest.
            self.status.fail(format!("cannot write to stdout: {e}"), 0);
        }
    }
}

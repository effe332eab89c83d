//! A progress line for long `bench` and `send` runs: frames sent and their
//! rate, acknowledged ones when acks are on, elapsed time, rewritten in
//! place on stderr twice a second. Only when stderr is a terminal: a
//! pipe, a file or a test sees exactly what it saw before.

use std::io::{IsTerminal, Write};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the line is redrawn.
const EVERY: Duration = Duration::from_millis(500);

/// What the line shows at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Frames sent so far.
    pub sent: u64,
    /// Frames acknowledged so far; `None` when acks are off.
    pub acked: Option<u64>,
}

/// Whether to draw at all: stderr is a terminal that can go back to the
/// start of a line (not `TERM=dumb`, e.g. an editor's shell buffer).
pub fn is_wanted(stderr_is_terminal: bool, term: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && term.is_none_or(|t| t != "dumb")
}

/// The line, without the carriage return: `sent 120000 frames (60000/s)
/// acked 119500  2.0s`; the rate is over the last `interval`.
pub fn format_line(now: Figures, before: Figures, interval: Duration, elapsed: Duration) -> String {
    let secs = interval.as_secs_f64();
    let rate = if secs > 0.0 {
        (now.sent.saturating_sub(before.sent) as f64 / secs).round() as u64
    } else {
        0
    };
    let mut line = format!("sent {} frames ({rate}/s)", now.sent);
    if let Some(acked) = now.acked {
        line.push_str(&format!("  acked {acked}"));
    }
    line.push_str(&format!("  {:.1}s", elapsed.as_secs_f64()));
    line
}

/// The drawing thread; the line is erased when it is finished or dropped,
/// so the summary that follows starts on a clean line.
pub struct Progress {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts drawing what `read` returns, if stderr is a terminal;
    /// otherwise does nothing.
    pub fn start(read: impl FnMut() -> Figures + Send + 'static) -> Progress {
        let term = std::env::var_os("TERM");
        Progress::start_if(
            is_wanted(std::io::stderr().is_terminal(), term.as_deref()),
            read,
        )
    }

    fn start_if(wanted: bool, read: impl FnMut() -> Figures + Send + 'static) -> Progress {
        if !wanted {
            return Progress {
                stop: None,
                thread: None,
            };
        }
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("framehub-progress".to_owned())
            .spawn(move || draw(read, stopped))
            .ok();
        Progress {
            stop: Some(stop),
            thread,
        }
    }

    /// Stops drawing and erases the line.
    pub fn finish(self) {}
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn draw(mut read: impl FnMut() -> Figures, stopped: mpsc::Receiver<()>) {
    let started = Instant::now();
    let mut before = read();
    let mut at = started;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
        let now = read();
        let line = format_line(now, before, at.elapsed(), started.elapsed());
        (before, at) = (now, Instant::now());
        // `\x1b[K` clears what a longer previous line left.
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
    }
    let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn drawn_only_on_a_terminal_that_is_not_dumb() {
        assert!(is_wanted(true, None));
        assert!(is_wanted(true, Some(OsStr::new("xterm-256color"))));
        assert!(!is_wanted(true, Some(OsStr::new("dumb"))));
        assert!(!is_wanted(false, None), "a pipe or a file");
        assert!(!is_wanted(false, Some(OsStr::new("xterm"))));
    }

    #[test]
    fn the_line_shows_the_rate_over_the_interval_and_acks_when_on() {
        let before = Figures {
            sent: 1000,
            acked: None,
        };
        let now = Figures {
            sent: 31_000,
            acked: None,
        };
        assert_eq!(
            format_line(
                now,
                before,
                Duration::from_millis(500),
                Duration::from_secs(12)
            ),
            "sent 31000 frames (60000/s)  12.0s"
        );
        let acked = Figures {
            acked: Some(30_500),
            ..now
        };
        assert_eq!(
            format_line(
                acked,
                before,
                Duration::from_secs(1),
                Duration::from_millis(2500)
            ),
            "sent 31000 frames (30000/s)  acked 30500  2.5s"
        );
        // No time passed (the first draw): no rate rather than infinity.
        assert_eq!(
            format_line(now, now, Duration::ZERO, Duration::ZERO),
            "sent 31000 frames (0/s)  0.0s"
        );
    }

    #[test]
    fn without_a_terminal_nothing_is_started() {
        let p = Progress::start_if(false, || panic!("never read"));
        assert!(p.thread.is_none() && p.stop.is_none());
        p.finish();
    }
}

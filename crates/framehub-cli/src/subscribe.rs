//! `framehub tap`: a subscriber of a running daemon's tap sink. It states
//! its `--node`/`--listener` filter when it connects, so the daemon sends
//! it only those records, and copies them to stdout as they come.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};

use anyhow::Context as _;

use crate::config::DEFAULT_TAP_BIND;
use crate::sink::tap::filter::TapFilter;

/// Arguments of `framehub tap`.
#[derive(clap::Args, Debug, Clone)]
pub struct TapArgs {
    /// The tap sink's address (`[[sink]] type = "tap"` bind, or `serve --tap`).
    #[arg(long, default_value_t = DEFAULT_TAP_BIND)]
    pub tap: SocketAddr,
    /// Only records of this node (repeat for several).
    #[arg(long)]
    pub node: Vec<String>,
    /// Only records of this listener (repeat for several; with --node,
    /// both must match).
    #[arg(long)]
    pub listener: Vec<String>,
    /// Exit after this many records.
    #[arg(long)]
    pub count: Option<u64>,
}

/// Runs until the tap closes, stdout closes or `--count` records came.
pub fn run(args: TapArgs) -> anyhow::Result<()> {
    let filter = TapFilter {
        node: args.node,
        listener: args.listener,
    };
    let mut stream = TcpStream::connect(args.tap)
        .with_context(|| format!("cannot connect to the tap at {}", args.tap))?;
    let _ = stream.set_nodelay(true);
    if !filter.is_everything() {
        stream
            .write_all(&filter.hello_line())
            .with_context(|| format!("cannot send the filter to {}", args.tap))?;
    }
    let stdout = io::stdout().lock();
    match copy_records(BufReader::new(stream), stdout, &filter, args.count) {
        Ok(()) => Ok(()),
        // `framehub tap | head`: the reader left, nothing to report.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).with_context(|| format!("tap at {}", args.tap)),
    }
}

/// Copies record lines from the tap to `out`, one flush per line so a
/// pipe sees each record live. With a filter, lines before the tap's
/// confirmation were queued before it knew the filter: skipped.
fn copy_records(
    mut tap: impl BufRead,
    mut out: impl Write,
    filter: &TapFilter,
    count: Option<u64>,
) -> io::Result<()> {
    let mut confirmed = filter.is_everything();
    let mut line = Vec::with_capacity(4096);
    let mut copied = 0u64;
    while count.is_none_or(|c| copied < c) {
        line.clear();
        if tap.read_until(b'\n', &mut line)? == 0 {
            eprintln!("framehub tap: the tap closed the connection");
            return Ok(());
        }
        if !confirmed {
            confirmed = TapFilter::is_confirm(&line);
            continue;
        }
        out.write_all(&line)?;
        out.flush()?;
        copied += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_before_the_confirmation_are_skipped() {
        let filter = TapFilter {
            node: vec!["a".into()],
            listener: vec![],
        };
        let mut input = b"{\"received_at\":\"t\",\"node\":\"b\"}\n".to_vec();
        input.extend_from_slice(&filter.confirm_line());
        input.extend_from_slice(b"{\"received_at\":\"t\",\"node\":\"a\"}\n");
        input.extend_from_slice(b"{\"received_at\":\"t\",\"node\":\"a\",\"n\":2}\n");
        let mut out = Vec::new();
        copy_records(&input[..], &mut out, &filter, Some(1)).expect("copy");
        assert_eq!(out, b"{\"received_at\":\"t\",\"node\":\"a\"}\n");
        // Unfiltered: everything, there is no confirmation to wait for.
        let mut out = Vec::new();
        copy_records(&input[..], &mut out, &TapFilter::default(), None).expect("copy");
        assert_eq!(out.iter().filter(|&&c| c == b'\n').count(), 4);
    }
}

//! What both command examples print about connections: one parseable line
//! on stdout per connection that ends, with sat-rs's per-connection counts.

use framehub::{ConnectionEvent, Ending, Hub};
use tokio::sync::broadcast::error::RecvError;

/// Prints `closed peer=.. requests=.. replies=.. telemetry=.. dropped=..
/// bytes_in=.. bytes_out=.. ending=peer|shutdown|error` for every
/// connection of `hub` that ends from now on.
pub fn print_closed_connections(hub: &Hub) {
    let mut events = hub.events();
    tokio::spawn(async move {
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                // A burst of connection events overran this reader: say
                // so and go on (ending here would silence every later
                // connection's line).
                Err(RecvError::Lagged(missed)) => {
                    eprintln!("{missed} connection events missed (the event channel overflowed)");
                    continue;
                }
                Err(RecvError::Closed) => break,
            };
            let ConnectionEvent::Closed {
                peer,
                reason,
                counts: c,
                ..
            } = event
            else {
                continue;
            };
            let ending = match reason.ending() {
                Ending::Peer => "peer",
                Ending::Shutdown => "shutdown",
                Ending::Error => "error",
            };
            println!(
                "closed peer={peer} requests={} replies={} telemetry={} dropped={} bytes_in={} bytes_out={} ending={ending}",
                c.requests, c.replies, c.telemetry, c.dropped, c.bytes_in, c.bytes_out
            );
        }
    });
}

//! The service manager's notification protocol (`sd_notify`): `READY=1`
//! once every port is bound and the sinks run, `STOPPING=1` when shutdown
//! begins, `WATCHDOG=1` every half `WATCHDOG_USEC` while the runtime
//! answers. One datagram each to `$NOTIFY_SOCKET` (a path, or `@name` in
//! the abstract namespace); without that variable nothing is sent, so the
//! same binary runs under `Type=notify`, `Type=simple` or a terminal.
//!
//! A few lines over std's `UnixDatagram` rather than a crate: the protocol
//! is one `send_to` per message.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go; does nothing when not started by a service
/// manager that asked for them.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (the
    /// watchdog is for this process only when `WATCHDOG_PID` names it or
    /// is unset). A socket that cannot be used is logged, once.
    pub fn from_env() -> Notifier {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        let target = var("NOTIFY_SOCKET").and_then(|path| match connect(&path) {
            Ok(target) => Some(target),
            Err(e) => {
                tracing::warn!(notify_socket = %path, "cannot notify the service manager: {e}");
                None
            }
        });
        let for_me = var("WATCHDOG_PID")
            .is_none_or(|pid| pid.parse::<u32>().ok() == Some(std::process::id()));
        let watchdog = var("WATCHDOG_USEC")
            .and_then(|us| us.parse::<u64>().ok())
            .filter(|&us| us > 0 && for_me)
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// Sends one notification (`READY=1`, ...); failures are logged, never
    /// fatal: the daemon serves whether or not the manager hears it.
    fn send(&self, message: &str) {
        if let Some((socket, addr)) = &self.target
            && let Err(e) = socket.send_to_addr(message.as_bytes(), addr)
        {
            tracing::warn!("cannot notify the service manager ({message}): {e}");
        }
    }

    /// Every port is bound and records flow: the service is up.
    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=serving");
    }

    /// Shutdown began: the manager waits for the exit instead of killing.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=shutting down");
    }

    /// Pings the watchdog every half period while the runtime runs this
    /// task: a runtime that hangs stops pinging, and the manager restarts
    /// the daemon. `None` without a watchdog.
    pub fn spawn_watchdog(self: &std::sync::Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let period = self.watchdog? / 2;
        self.target.as_ref()?;
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.send("WATCHDOG=1");
            }
        }))
    }
}

fn connect(path: &str) -> io::Result<(UnixDatagram, SocketAddr)> {
    let addr = match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None => SocketAddr::from_pathname(path)?,
    };
    Ok((UnixDatagram::unbound()?, addr))
}

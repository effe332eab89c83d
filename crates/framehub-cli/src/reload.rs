//! SIGHUP: what logrotate and `systemctl reload` send. Rereads the config
//! file (and the token files it names) and swaps every node listener's
//! tokens, rereads every TLS listener's certificates, then reopens every
//! file sink, without closing a connection. A
//! reload that fails keeps the previous settings and logs why; each one is
//! counted in `framehub_reloads_total{result}`.

use std::sync::atomic::{AtomicU64, Ordering};

use framehub::{Hub, Protocol, Tokens};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::ServeArgs;
use crate::sink::Message;

/// Installs the SIGHUP handler: from now on SIGHUP no longer ends the
/// process (its default action); signals that come before the reloader
/// starts are kept for it.
pub fn hangup_signal() -> std::io::Result<Signal> {
    signal(SignalKind::hangup())
}

/// Reloads done, by result (`/metrics`).
#[derive(Debug, Default)]
pub struct Reloads {
    /// Reloads that applied everything.
    pub ok: AtomicU64,
    /// Reloads that failed, in part or whole.
    pub failed: AtomicU64,
}

/// What a reload touches.
pub struct Reloader {
    /// The arguments `serve` started with: the config file's path and the
    /// flags (and `FRAMEHUB_TOKEN`) that override it, applied again.
    pub args: ServeArgs,
    pub hub: Hub,
    /// The sink thread's queue (weak: a reload never keeps it alive).
    pub sinks: mpsc::WeakSender<Message>,
    pub reloads: std::sync::Arc<Reloads>,
}

impl Reloader {
    /// Reloads on every SIGHUP `hup` receives (see [`hangup_signal`]).
    pub fn start(self, mut hup: Signal) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                self.reload().await;
            }
        })
    }

    async fn reload(&self) {
        tracing::info!("SIGHUP: reloading tokens and reopening file sinks");
        match self.apply().await {
            Ok(()) => {
                self.reloads.ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!("reloaded");
            }
            Err(error) => {
                self.reloads.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!("reload failed: {error}");
            }
        }
    }

    async fn apply(&self) -> Result<(), String> {
        self.swap_tokens()?;
        self.reload_certificates()?;
        self.reopen_sinks().await
    }

    /// Every node listener's tokens, read and checked first; swapped only
    /// once all of them are good, so a bad file changes nothing.
    fn swap_tokens(&self) -> Result<(), String> {
        let cfg = crate::serve::load_config(&self.args)
            .map_err(|e| format!("{}; keeping the previous tokens", e.message))?;
        let running = self.hub.listeners();
        let mut swaps: Vec<(String, Tokens)> = Vec::new();
        for (i, l) in cfg.hub.listeners().iter().enumerate() {
            if l.protocol != Protocol::Node {
                continue;
            }
            let Some(now) = running.iter().find(|r| r.name == l.name) else {
                tracing::warn!(listener = %l.name, "a new listener needs a restart; ignored");
                continue;
            };
            let tokens = l
                .auth
                .load_tokens()
                .map_err(|e| format!("listener[{i}].{e}; keeping the previous tokens"))?;
            if tokens.is_empty() && now.auth_required {
                return Err(format!(
                    "listener {:?}: the new settings have no token; removing authentication needs a restart; keeping the previous tokens",
                    l.name
                ));
            }
            swaps.push((l.name.clone(), tokens));
        }
        for (name, tokens) in swaps {
            self.hub
                .set_tokens(&name, tokens)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Every TLS listener's certificate, key and client CA, read again from
    /// the files its running config names: new handshakes use them, open
    /// connections keep theirs. A listener whose files are missing or bad
    /// keeps what it had, and the reload is counted as failed.
    fn reload_certificates(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        for l in self.hub.listeners() {
            if !l.tls {
                continue;
            }
            if let Err(e) = self.hub.reload_tls(&l.name) {
                errors.push(format!("{e}; keeping the previous certificates"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Asks the sink thread to reopen every file sink between two batches,
    /// so every record before the signal is in the old file and every
    /// record after it in the new one.
    async fn reopen_sinks(&self) -> Result<(), String> {
        let Some(queue) = self.sinks.upgrade() else {
            return Ok(());
        };
        let (reply, errors) = oneshot::channel();
        queue
            .send(Message::Reopen(reply))
            .await
            .map_err(|_| "the sink thread has stopped".to_owned())?;
        drop(queue);
        let errors = errors
            .await
            .map_err(|_| "the sink thread has stopped".to_owned())?;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

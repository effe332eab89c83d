//! NATS JetStream as the backbone of several instances (feature `nats`):
//! the connection ([`connect`]), the sink that publishes every frame into a
//! stream with publish acknowledgements ([`NatsSink`]), the bridge that
//! writes `framehub.send.<node>` messages to the devices an instance holds
//! and answers requests through a NATS service ([`bridge`]), and the
//! cluster-wide node view in a key-value bucket ([`view`]).
//!
//! # Layout
//! - `config.rs`: every setting with its default, validation.
//! - `subject.rs`: the subject template, names escaped into tokens.
//! - `sink.rs`: the bounded publisher with acks in flight and resends.
//! - `bridge.rs`: egress subscriptions and the request handler.
//! - `view.rs`: which instance holds which node.

pub mod bridge;
pub mod config;
pub mod sink;
pub mod subject;
pub mod view;

use std::path::Path;
use std::sync::Arc;

pub use async_nats;
pub use bridge::{EgressBridge, request_handler};
pub use config::{
    JetStreamConfig, NatsAuthConfig, NatsConfig, NatsHandlerConfig, NatsOverflow, NatsSinkConfig,
    NatsTlsConfig, NatsViewConfig, StreamStorage,
};
pub use sink::{NatsSink, NatsSinkStats};
pub use view::{ClusterNode, NodeView};

use crate::config::ConfigError;

/// Why NATS could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// A setting or a file it names is wrong.
    #[error("{}: {}", .0.key, .0.message)]
    Config(ConfigError),
    /// The client could not be set up (TLS files, credentials).
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    /// JetStream refused or could not answer (stream, bucket).
    #[error("JetStream: {0}")]
    JetStream(String),
}

impl From<ConfigError> for NatsError {
    fn from(e: ConfigError) -> Self {
        NatsError::Config(e)
    }
}

/// This instance's default name: `<hostname>:<pid>`.
pub fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "framehub".to_owned());
    format!("{host}:{}", std::process::id())
}

/// Why the connection is down: the last error of each server that failed
/// since the client was last connected. Cheap to clone; the client's
/// callbacks write it, health reports ([`NatsSink::report_connection`])
/// read it.
#[derive(Clone, Debug, Default)]
pub struct ConnectionReport {
    failure: Arc<parking_lot::Mutex<Option<String>>>,
}

impl ConnectionReport {
    /// `"nats://10.0.0.1:4222: authorization violation"` (several servers
    /// joined by `"; "`); `None` when no attempt failed since the client
    /// was last connected.
    pub fn last_failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }

    /// Records `why` (`None`: connected); whether it changed.
    fn set(&self, why: Option<String>) -> bool {
        let mut slot = self.failure.lock();
        let changed = *slot != why;
        *slot = why;
        changed
    }

    /// Before each round of attempts: the servers' last errors become the
    /// report, and a new reason is logged once (the client retries every
    /// 2 s at most, for ever: one line per attempt would bury it).
    fn record(&self, pool: &[async_nats::Server], servers: &str) {
        let failures: Vec<String> = pool
            .iter()
            .filter_map(|s| Some(format!("{s}: {}", s.last_error.as_ref()?)))
            .collect();
        if failures.is_empty() {
            return;
        }
        let why = failures.join("; ");
        if self.set(Some(why.clone())) {
            tracing::error!(servers = %servers, reason = %why, "NATS: cannot connect");
        }
    }
}

/// A secret from its file, else from the environment variable `env`.
fn secret(file: Option<&Path>, key: &str, env: &str) -> Result<Option<String>, ConfigError> {
    if let Some(path) = file {
        return crate::secret::read_token(path, key).map(Some);
    }
    Ok(std::env::var(env).ok().filter(|v| !v.is_empty()))
}

/// Connects to the configured servers. Returns at once, even while no
/// server answers: the client connects in the background, reconnects for
/// ever and keeps what is published meanwhile (up to `client_capacity`).
/// Credential and TLS files are read now, and a bad one is an error;
/// secrets never appear in errors or logs.
pub async fn connect(cfg: &NatsConfig) -> Result<async_nats::Client, NatsError> {
    connect_reported(cfg).await.map(|(client, _)| client)
}

/// [`connect`], and the report of why the connection is down (a refused
/// credential, a TLS failure, a server that does not answer) for health
/// checks. A refused login is retried like any failure: the servers'
/// settings may change, and `/healthz` says why meanwhile.
pub async fn connect_reported(
    cfg: &NatsConfig,
) -> Result<(async_nats::Client, ConnectionReport), NatsError> {
    cfg.validate()?;
    let instance = cfg.instance.clone().unwrap_or_else(default_instance);
    let auth = &cfg.auth;
    let mut opts = async_nats::ConnectOptions::new();
    if let Some(creds) = &auth.creds_file {
        let text = crate::secret::read_secret_file(creds, "nats.auth.creds_file")?;
        opts = opts.credentials(&text).map_err(|e| {
            ConfigError::new(
                "nats.auth.creds_file",
                format!("{}: not a .creds file: {e}", creds.display()),
            )
        })?;
    } else if let Some(user) = &auth.user {
        let password = secret(
            auth.password_file.as_deref(),
            "nats.auth.password_file",
            config::PASSWORD_ENV,
        )?
        .ok_or_else(|| {
            ConfigError::new(
                "nats.auth.password_file",
                format!("required with nats.auth.user (or {})", config::PASSWORD_ENV),
            )
        })?;
        opts = opts.user_and_password(user.clone(), password);
    } else if let Some(seed) = secret(
        auth.nkey_seed_file.as_deref(),
        "nats.auth.nkey_seed_file",
        config::NKEY_SEED_ENV,
    )? {
        if !seed.starts_with("SU") {
            return Err(ConfigError::new(
                "nats.auth.nkey_seed_file",
                "not a user NKey seed (it starts with SU)",
            )
            .into());
        }
        opts = opts.nkey(seed);
    } else if let Some(token) = secret(
        auth.token_file.as_deref(),
        "nats.auth.token_file",
        config::TOKEN_ENV,
    )? {
        opts = opts.token(token);
    }
    let tls = &cfg.tls;
    if tls.required {
        opts = opts.require_tls(true);
    }
    if let Some(ca) = &tls.ca {
        check_file(ca, "nats.tls.ca")?;
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        check_file(cert, "nats.tls.cert")?;
        check_file(key, "nats.tls.key")?;
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    let servers: Vec<async_nats::ServerAddr> = cfg
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse()
                .map_err(|e| ConfigError::new(format!("nats.servers[{i}]"), format!("{s:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let shown = cfg.servers.join(",");
    let report = ConnectionReport::default();
    let (failures, listed) = (report.clone(), shown.clone());
    let connected = report.clone();
    opts = opts
        .name(format!("framehub {instance}"))
        .connection_timeout(cfg.connect_timeout)
        .client_capacity(cfg.client_capacity)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            // 0, 100 ms, 200 ms ... 2 s: back quickly after a short outage,
            // without hammering a server that is down.
            std::time::Duration::from_millis((attempts as u64 * 100).min(2000))
        })
        // Called before each round of attempts with every server's last
        // error (the events carry only its kind): the reason health
        // reports give. The default order of servers stays.
        .reconnect_to_server_callback(move |pool, _| {
            failures.record(&pool, &listed);
            std::future::ready(None)
        })
        .event_callback(move |event| {
            let shown = shown.clone();
            let connected = connected.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        connected.set(None);
                        tracing::info!(servers = %shown, "NATS connected")
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(servers = %shown, "NATS disconnected; reconnecting")
                    }
                    // A failed attempt: "NATS: cannot connect" says it
                    // with the server and the details, once per reason.
                    async_nats::Event::ClientError(e) => {
                        tracing::debug!(servers = %shown, "NATS: client error: {e}")
                    }
                    other => tracing::warn!(servers = %shown, "NATS: {other}"),
                }
            }
        });
    let client = opts
        .connect(servers)
        .await
        .map_err(|e| NatsError::Connect(e.to_string()))?;
    Ok((client, report))
}

fn check_file(path: &Path, key: &str) -> Result<(), ConfigError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| ConfigError::new(key, format!("{}: {e}", path.display())))
}

/// Waits until the client is connected, at most `timeout`; whether it is.
pub async fn wait_connected(client: &async_nats::Client, timeout: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if client.connection_state() == async_nats::connection::State::Connected {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

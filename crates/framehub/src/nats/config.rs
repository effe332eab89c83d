//! The NATS settings with their defaults: the connection an instance shares
//! (`[nats]`: servers, credentials, TLS, the egress bridge, the cluster
//! view) and the sink's (`[[sink]] type = "nats"`: subject, buffer,
//! JetStream stream and acks in flight), validated before anything
//! connects.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::units::{
    ByteSize, duration, opt_byte_size, opt_duration, ser_duration, ser_opt_byte_size,
    ser_opt_duration,
};

/// The environment variable a NATS token can come from.
pub const TOKEN_ENV: &str = "FRAMEHUB_NATS_TOKEN";
/// The environment variable the password of `auth.user` can come from.
pub const PASSWORD_ENV: &str = "FRAMEHUB_NATS_PASSWORD";
/// The environment variable an NKey seed (`SU...`) can come from.
pub const NKEY_SEED_ENV: &str = "FRAMEHUB_NATS_NKEY_SEED";

/// The default subject template of the sink.
pub const DEFAULT_SUBJECT: &str = "framehub.<listener>.<node>";

/// `[nats]`: the one connection an instance keeps to a NATS system, shared
/// by the sink, the egress bridge, request handlers and the cluster view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URLs (`"nats://10.0.0.1:4222"`, `"tls://..."`); the client
    /// connects to one and moves to another when it fails, for ever
    /// (default: `nats://127.0.0.1:4222`).
    pub servers: Vec<String>,
    /// This instance's name: the connection name the servers show, the
    /// holder named in the cluster view (default: `<hostname>:<pid>`).
    pub instance: Option<String>,
    /// Credentials (`[nats.auth]`); secrets come from files or the
    /// environment only, never from this file or the command line.
    pub auth: NatsAuthConfig,
    /// TLS to the servers (`[nats.tls]`).
    pub tls: NatsTlsConfig,
    /// How long one connection attempt may take.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    /// Messages for the NATS client waiting to be written while it
    /// reconnects; past this, publishes wait (and the sink's buffer fills).
    pub client_capacity: usize,
    /// Subscribe to `<subject_prefix>.send.<node>` and
    /// `<subject_prefix>.broadcast.<listener>` and write what comes to the
    /// devices this instance holds.
    pub egress: bool,
    /// First token of the egress subjects.
    pub subject_prefix: String,
    /// The cluster-wide node view (`[nats.view]`).
    pub view: NatsViewConfig,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".to_owned()],
            instance: None,
            auth: NatsAuthConfig::default(),
            tls: NatsTlsConfig::default(),
            connect_timeout: Duration::from_secs(5),
            client_capacity: 65_536,
            egress: true,
            subject_prefix: "framehub".to_owned(),
            view: NatsViewConfig::default(),
        }
    }
}

/// `[nats.auth]`: at most one kind of credential. Each secret is read from
/// its file, or from its environment variable when no file is named.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsAuthConfig {
    /// A file holding the server's token (else `FRAMEHUB_NATS_TOKEN`).
    pub token_file: Option<PathBuf>,
    /// A user name; its password comes from `password_file` (else
    /// `FRAMEHUB_NATS_PASSWORD`).
    pub user: Option<String>,
    /// A file holding the password of `user`.
    pub password_file: Option<PathBuf>,
    /// A file holding an NKey seed (`SU...`; else
    /// `FRAMEHUB_NATS_NKEY_SEED`).
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (a user JWT and its NKey seed), as `nsc` writes it.
    pub creds_file: Option<PathBuf>,
}

/// `[nats.tls]`: TLS to the servers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsTlsConfig {
    /// Require TLS even for `nats://` URLs.
    pub required: bool,
    /// The CA that signs the servers' certificates, PEM (default: the
    /// system's roots as bundled).
    pub ca: Option<PathBuf>,
    /// A client certificate chain, PEM (mutual TLS), with `key`.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key, PEM.
    pub key: Option<PathBuf>,
}

/// `[nats.view]`: which instance holds which node, in a JetStream
/// key-value bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsViewConfig {
    /// Record this instance's nodes (needs JetStream).
    pub enabled: bool,
    /// The bucket (created when missing).
    pub bucket: String,
    /// An entry not refreshed for this long is gone: a crashed instance's
    /// nodes leave the view by themselves.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub ttl: Duration,
    /// Replicas of the bucket when it is created.
    pub replicas: usize,
}

impl Default for NatsViewConfig {
    fn default() -> Self {
        NatsViewConfig {
            enabled: true,
            bucket: "framehub_nodes".to_owned(),
            ttl: Duration::from_secs(30),
            replicas: 1,
        }
    }
}

/// What the sink does with frames that find its buffer full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatsOverflow {
    /// Wait for room: the hub's queues fill, and with `overflow = "block"`
    /// TCP pushes back on the devices. Nothing is lost.
    #[default]
    Block,
    /// Drop what does not fit (counted).
    Drop,
}

/// Where a created stream keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamStorage {
    /// On disk: survives a server restart.
    #[default]
    File,
    /// In memory.
    Memory,
}

/// `[[sink]] type = "nats"`: every delivered frame published as one NATS
/// message on the `[nats]` connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSinkConfig {
    /// Name in logs, metrics and `/healthz` (default: `nats`).
    pub name: Option<String>,
    /// The subject template: `<listener>` and `<node>` are replaced by
    /// the frame's listener and node (escaped, see the docs); the
    /// `<node>` token is left out for frames without a node.
    pub subject: String,
    /// Frames taken from the hub and not yet acknowledged by NATS, at
    /// most; past this (or `buffer_bytes`) `on_full` applies.
    pub buffer_frames: usize,
    /// Bytes of those frames at most.
    pub buffer_bytes: ByteSize,
    /// What a full buffer does: `block` (backpressure) or `drop`.
    pub on_full: NatsOverflow,
    /// How long the sink waits at exit for the frames it holds to be
    /// acknowledged; what is left then is counted as failed.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub drain_timeout: Duration,
    /// Publishing into a JetStream stream (`[sink.jetstream]`).
    pub jetstream: JetStreamConfig,
}

impl Default for NatsSinkConfig {
    fn default() -> Self {
        NatsSinkConfig {
            name: None,
            subject: DEFAULT_SUBJECT.to_owned(),
            buffer_frames: 100_000,
            buffer_bytes: ByteSize(64 << 20),
            on_full: NatsOverflow::Block,
            drain_timeout: Duration::from_secs(30),
            jetstream: JetStreamConfig::default(),
        }
    }
}

/// `[sink.jetstream]`: publish acknowledgements from a named stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JetStreamConfig {
    /// Publish into JetStream and wait for its acknowledgement (`false`:
    /// core NATS publishes, at most once, for live consumers only).
    pub enabled: bool,
    /// The stream's name.
    pub stream: String,
    /// Create the stream when it is missing, with the settings below (an
    /// existing stream is used as it is, never changed). `false`: it must
    /// exist, or the sink does not start.
    pub create: bool,
    /// Subjects of a created stream (default: the sink's subjects for
    /// every listener of the instance).
    pub subjects: Vec<String>,
    /// Storage of a created stream: `file` or `memory`.
    pub storage: StreamStorage,
    /// Replicas of a created stream (1..=5; 3 in a three-server cluster).
    pub replicas: usize,
    /// A created stream drops messages older than this (`"off"`: never).
    #[serde(deserialize_with = "opt_duration", serialize_with = "ser_opt_duration")]
    pub max_age: Option<Duration>,
    /// A created stream drops its oldest messages past this size (`"off"`:
    /// no limit).
    #[serde(
        deserialize_with = "opt_byte_size",
        serialize_with = "ser_opt_byte_size"
    )]
    pub max_bytes: Option<ByteSize>,
    /// The created stream's duplicate window: a message whose
    /// `Nats-Msg-Id` it saw within this time is acknowledged and not
    /// stored again.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub duplicate_window: Duration,
    /// Publishes waiting for their acknowledgement at most.
    pub max_acks_in_flight: usize,
    /// Bytes of those publishes at most.
    pub max_ack_bytes: ByteSize,
    /// A publish not acknowledged within this time is sent again (same
    /// `Nats-Msg-Id`, so the stream stores it once).
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub ack_timeout: Duration,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        JetStreamConfig {
            enabled: true,
            stream: "FRAMEHUB".to_owned(),
            create: true,
            subjects: Vec::new(),
            storage: StreamStorage::File,
            replicas: 1,
            max_age: None,
            max_bytes: None,
            duplicate_window: Duration::from_secs(120),
            max_acks_in_flight: 4096,
            max_ack_bytes: ByteSize(16 << 20),
            ack_timeout: Duration::from_secs(5),
        }
    }
}

/// A listener's requests answered by a NATS service (in the listener's
/// config, so that it exists without this feature).
pub use crate::config::HandlerConfig as NatsHandlerConfig;

impl NatsConfig {
    /// Checks what can be checked without files or the network; keys are
    /// named relative to `[nats]` (`nats.auth.user`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.servers.is_empty() {
            return Err(ConfigError::new(
                "nats.servers",
                "must list at least one server",
            ));
        }
        for (i, s) in self.servers.iter().enumerate() {
            if s.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("nats.servers[{i}]"),
                    "must not be empty",
                ));
            }
            // Not echoed: the URL's user part may hold the secret.
            if has_credentials(s) {
                return Err(ConfigError::new(
                    format!("nats.servers[{i}]"),
                    "no credentials in the URL (logs and /healthz show the servers): \
                     give them in [nats.auth], from a file or the environment",
                ));
            }
        }
        let a = &self.auth;
        let kinds = [
            a.token_file.is_some(),
            a.user.is_some(),
            a.nkey_seed_file.is_some(),
            a.creds_file.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err(ConfigError::new(
                "nats.auth",
                "give one of token_file, user (with password_file), nkey_seed_file or creds_file",
            ));
        }
        if a.password_file.is_some() && a.user.is_none() {
            return Err(ConfigError::new(
                "nats.auth.password_file",
                "needs nats.auth.user",
            ));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::new(
                "nats.tls.cert",
                "give cert and key together",
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::new("nats.connect_timeout", "must be > 0"));
        }
        if self.client_capacity == 0 {
            return Err(ConfigError::new("nats.client_capacity", "must be > 0"));
        }
        crate::nats::subject::check_token(&self.subject_prefix)
            .map_err(|e| ConfigError::new("nats.subject_prefix", e))?;
        if self.view.enabled {
            if self.view.bucket.is_empty()
                || !self
                    .view
                    .bucket
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(ConfigError::new(
                    "nats.view.bucket",
                    "letters, digits, '_' and '-' only",
                ));
            }
            if self.view.ttl < Duration::from_secs(1) {
                return Err(ConfigError::new("nats.view.ttl", "must be at least 1s"));
            }
            check_replicas(self.view.replicas, "nats.view.replicas")?;
        }
        Ok(())
    }
}

/// Whether a server URL has a user part (`nats://user:password@host`,
/// `nats://token@host`).
fn has_credentials(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?', '#'])
        .next()
        .is_some_and(|authority| authority.contains('@'))
}

fn check_replicas(n: usize, key: &str) -> Result<(), ConfigError> {
    if (1..=5).contains(&n) {
        Ok(())
    } else {
        Err(ConfigError::new(key, "must be 1..=5"))
    }
}

impl NatsSinkConfig {
    /// Checks the sink's settings; `key` makes a key path
    /// (`sink[0].jetstream.stream`).
    pub fn validate(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        crate::nats::subject::Template::parse(&self.subject)
            .map_err(|e| ConfigError::new(key("subject"), e))?;
        if self.buffer_frames == 0 {
            return Err(ConfigError::new(key("buffer_frames"), "must be > 0"));
        }
        if self.buffer_bytes.0 < 1024 {
            return Err(ConfigError::new(
                key("buffer_bytes"),
                "must be at least 1KiB",
            ));
        }
        let js = &self.jetstream;
        if js.enabled {
            if js.stream.is_empty()
                || js
                    .stream
                    .chars()
                    .any(|c| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace())
            {
                return Err(ConfigError::new(
                    key("jetstream.stream"),
                    "a stream name, without '.', '*', '>', '/', '\\' or spaces",
                ));
            }
            check_replicas(js.replicas, &key("jetstream.replicas"))?;
            if js.max_acks_in_flight == 0 {
                return Err(ConfigError::new(
                    key("jetstream.max_acks_in_flight"),
                    "must be > 0",
                ));
            }
            if js.max_ack_bytes.0 == 0 {
                return Err(ConfigError::new(
                    key("jetstream.max_ack_bytes"),
                    "must be > 0",
                ));
            }
            if js.ack_timeout.is_zero() {
                return Err(ConfigError::new(
                    key("jetstream.ack_timeout"),
                    "must be > 0",
                ));
            }
            if js.duplicate_window.is_zero() {
                return Err(ConfigError::new(
                    key("jetstream.duplicate_window"),
                    "must be > 0: resends are recognised by their Nats-Msg-Id within it",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Credentials in a server URL would be logged with it: refused, and
    /// the error does not repeat them.
    #[test]
    fn credentials_in_a_server_url_are_refused_without_being_shown() {
        for url in [
            "nats://framehub:s3cret@10.0.0.1:4222",
            "tls://s3cret@nats.example",
            "s3cret@10.0.0.1:4222",
        ] {
            let cfg = NatsConfig {
                servers: vec!["nats://10.0.0.2:4222".to_owned(), url.to_owned()],
                ..NatsConfig::default()
            };
            let err = cfg.validate().expect_err(url);
            assert_eq!(err.key, "nats.servers[1]");
            assert!(!err.message.contains("s3cret"), "{}", err.message);
        }
        for url in [
            "nats://10.0.0.1:4222",
            "tls://nats.example:4222/",
            "10.0.0.1",
        ] {
            let cfg = NatsConfig {
                servers: vec![url.to_owned()],
                ..NatsConfig::default()
            };
            cfg.validate().expect(url);
        }
    }
}

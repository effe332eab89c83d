//! The daemon's config file: the library's [`HubConfig`] plus the daemon's
//! own tables (`[serve]`, `[admin]`, `[[sink]]`), parsed with key paths in
//! every error and validated before anything is bound; and `check-config`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use framehub::nats::{NatsConfig, NatsSinkConfig};
use framehub::units;
use framehub::{ByteSize, HubConfig, OverflowPolicy};
use serde::{Deserialize, Serialize};

/// The admin HTTP server's default address: next to the listener's 30050,
/// loopback only, because it exposes per-connection detail.
pub const DEFAULT_ADMIN_BIND: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 30051));
/// A tap's default address, loopback only like the admin server.
pub const DEFAULT_TAP_BIND: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 30052));

/// Settings of the daemon itself (`[serve]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Shorthand for a `file` sink named `out` with every default (unset:
    /// none).
    pub out: Option<PathBuf>,
    /// How often the status line is printed on stderr (`"5s"`).
    #[serde(
        deserialize_with = "units::duration",
        serialize_with = "units::ser_duration"
    )]
    pub status_interval: Duration,
}

impl ServeConfig {
    /// A zero period would make the status task panic (issue 18).
    fn validate(&self) -> Result<(), BadConfig> {
        if self.status_interval.is_zero() {
            return Err(BadConfig(
                "serve.status_interval: must be > 0 (the status line is printed this often)"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

/// The most `[admin] max_connections` and tap `max_subscribers`: each is
/// a descriptor, and a semaphore counts them.
pub const MAX_DAEMON_CONNECTIONS: usize = 1_000_000;
/// The largest tap `buffer_bytes` (per subscriber).
pub const MAX_TAP_BUFFER_BYTES: usize = 1 << 30;

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            out: None,
            status_interval: Duration::from_secs(5),
        }
    }
}

/// The admin HTTP server (`[admin]`): health, metrics, the JSON API.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve the admin HTTP API at all.
    pub enabled: bool,
    /// Address to bind.
    pub bind: SocketAddr,
    /// Allow `POST /api/send` to write to clients. Off by default: whoever
    /// reaches the admin port could command every device.
    pub send: bool,
    /// The bearer token `/metrics` and `/api/*` require (unset: none on
    /// loopback; a non-loopback `bind` needs one from here, `token_file`
    /// or `FRAMEHUB_ADMIN_TOKEN`).
    pub token: Option<String>,
    /// A file holding the token (trailing whitespace ignored), so it
    /// needs to be neither in this file nor on the command line.
    pub token_file: Option<PathBuf>,
    /// Admin connections open at once; further ones are closed at once
    /// (counted), so a flood cannot exhaust the daemon's file descriptors.
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers (and,
    /// with TLS, to finish its handshake); also how long an idle
    /// keep-alive connection stays open.
    #[serde(
        deserialize_with = "units::duration",
        serialize_with = "units::ser_duration"
    )]
    pub header_timeout: Duration,
    /// How long a request may take to send its whole body.
    #[serde(
        deserialize_with = "units::duration",
        serialize_with = "units::ser_duration"
    )]
    pub body_timeout: Duration,
    /// HTTPS instead of HTTP (`[admin.tls]`).
    pub tls: AdminTlsConfig,
}

/// `[admin.tls]`: the admin server speaks HTTPS when `cert` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminTlsConfig {
    /// The server's certificate chain, PEM, leaf first.
    pub cert: Option<PathBuf>,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

/// The environment variable the admin token can come from.
pub const ADMIN_TOKEN_ENV: &str = "FRAMEHUB_ADMIN_TOKEN";

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            bind: DEFAULT_ADMIN_BIND,
            send: false,
            token: None,
            token_file: None,
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            tls: AdminTlsConfig::default(),
        }
    }
}

/// The token is never printed, not even in a `{:?}` of the config.
impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("enabled", &self.enabled)
            .field("bind", &self.bind)
            .field("send", &self.send)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("max_connections", &self.max_connections)
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

/// A bearer token: compared in constant time by the admin server, never
/// printed (`{:?}` shows `<redacted>`).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// The token's bytes, to compare with what a request carries.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminConfig {
    /// Whether the admin port is reachable from loopback only.
    pub fn is_loopback(&self) -> bool {
        self.bind.ip().to_canonical().is_loopback()
    }

    /// Checks what can be checked without reading files or the
    /// environment.
    fn validate(&self) -> Result<(), BadConfig> {
        if self.token.is_some() && self.token_file.is_some() {
            return Err(BadConfig(
                "admin.token: give either token or token_file, not both".to_owned(),
            ));
        }
        if let Some(token) = &self.token {
            check_token(token, "admin.token")?;
        }
        if self.max_connections == 0 || self.max_connections > MAX_DAEMON_CONNECTIONS {
            return Err(BadConfig(format!(
                "admin.max_connections: must be 1..={MAX_DAEMON_CONNECTIONS}"
            )));
        }
        if self.header_timeout.is_zero() {
            return Err(BadConfig("admin.header_timeout: must be > 0".to_owned()));
        }
        if self.body_timeout.is_zero() {
            return Err(BadConfig("admin.body_timeout: must be > 0".to_owned()));
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => Err(BadConfig(
                "admin.tls.key: required with admin.tls.cert".to_owned(),
            )),
            (None, Some(_)) => Err(BadConfig(
                "admin.tls.cert: required with admin.tls.key".to_owned(),
            )),
            _ => Ok(()),
        }
    }

    /// The token the admin server requires, from the environment
    /// (`env`: the value of [`ADMIN_TOKEN_ENV`]; empty counts as unset),
    /// else `token_file`, else `token`. A non-loopback `bind` without one
    /// is refused: the API lists every peer and can command every device.
    pub fn resolve_token(
        &self,
        env: Option<std::ffi::OsString>,
    ) -> Result<Option<AdminToken>, BadConfig> {
        let token = match env.filter(|v| !v.is_empty()) {
            Some(value) => {
                let value = value
                    .into_string()
                    .map_err(|_| BadConfig(format!("{ADMIN_TOKEN_ENV}: not valid UTF-8")))?;
                Some(check_token(&value, ADMIN_TOKEN_ENV)?)
            }
            None => match (&self.token_file, &self.token) {
                (Some(path), _) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        BadConfig(format!(
                            "admin.token_file: cannot read {}: {e}",
                            path.display()
                        ))
                    })?;
                    Some(check_token(text.trim_end(), "admin.token_file")?)
                }
                (None, Some(token)) => Some(check_token(token, "admin.token")?),
                (None, None) => None,
            },
        };
        if token.is_none() && self.enabled && !self.is_loopback() {
            return Err(BadConfig(format!(
                "admin.token: required because admin.bind ({}) is not a loopback address: \
                 set [admin] token or token_file, or {ADMIN_TOKEN_ENV}; or bind to 127.0.0.1",
                self.bind
            )));
        }
        Ok(token)
    }
}

/// A token must fit in an HTTP header as `Bearer <token>`: visible ASCII,
/// no spaces.
fn check_token(token: &str, key: &str) -> Result<AdminToken, BadConfig> {
    if token.is_empty() {
        return Err(BadConfig(format!("{key}: must not be empty")));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BadConfig(format!(
            "{key}: only visible ASCII characters, no spaces (it is sent as `Authorization: Bearer <token>`)"
        )));
    }
    Ok(AdminToken(token.to_owned()))
}

/// One sink (`[[sink]]`): where every delivered frame's record goes.
///
/// Parsed by [`parse`] (which reads `type` first so errors keep their key
/// path); serialized with `type` as a key, as written.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SinkConfig {
    /// Records appended to a file, rotated and synced by policy.
    File(FileSinkConfig),
    /// Records written to standard output.
    Stdout(StdoutSinkConfig),
    /// Records streamed live to every TCP subscriber.
    Tap(TapSinkConfig),
    /// Every frame published to NATS, into a JetStream stream by default.
    Nats(NatsSinkConfig),
}

impl SinkConfig {
    /// The sink's type as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::File(_) => "file",
            SinkConfig::Stdout(_) => "stdout",
            SinkConfig::Tap(_) => "tap",
            SinkConfig::Nats(_) => "nats",
        }
    }

    /// Its name: the configured one, or its type.
    pub fn name(&self) -> &str {
        let name = match self {
            SinkConfig::File(c) => &c.name,
            SinkConfig::Stdout(c) => &c.name,
            SinkConfig::Tap(c) => &c.name,
            SinkConfig::Nats(c) => &c.name,
        };
        name.as_deref().unwrap_or(self.kind())
    }

    /// Whether frames must reach it for the daemon to have done its job
    /// (file, stdout, nats); a tap is best effort.
    pub fn is_durable(&self) -> bool {
        !matches!(self, SinkConfig::Tap(_))
    }
}

impl SinkConfig {
    /// The format of a sink that writes lines (file, stdout).
    pub fn format(&self) -> Option<RecordFormat> {
        match self {
            SinkConfig::File(c) => Some(c.format),
            SinkConfig::Stdout(c) => Some(c.format),
            SinkConfig::Tap(_) | SinkConfig::Nats(_) => None,
        }
    }
}

/// When a file sink asks the kernel to put records on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsyncPolicy {
    /// Only on rotation and at exit; otherwise the kernel decides.
    Never,
    /// At most `fsync_interval` after a write (default).
    #[default]
    Interval,
    /// After every write, before the next batch is taken.
    Always,
}

/// A `file` sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSinkConfig {
    /// Name in logs, metrics and `/healthz` (default: `file`).
    pub name: Option<String>,
    /// The file records are appended to (required).
    pub path: PathBuf,
    /// When to sync: `never`, `interval` or `always`.
    pub fsync: FsyncPolicy,
    /// With `fsync = "interval"`: the longest time between a write and its
    /// sync.
    #[serde(
        deserialize_with = "units::duration",
        serialize_with = "units::ser_duration"
    )]
    pub fsync_interval: Duration,
    /// Rotate when the file would grow past this size (`"off"`: never).
    #[serde(
        deserialize_with = "units::opt_byte_size",
        serialize_with = "units::ser_opt_byte_size"
    )]
    pub rotate_bytes: Option<ByteSize>,
    /// Rotate a non-empty file this long after it was opened (`"off"`:
    /// never).
    #[serde(
        deserialize_with = "units::opt_duration",
        serialize_with = "units::ser_opt_duration"
    )]
    pub rotate_every: Option<Duration>,
    /// Keep at most this many rotated files, deleting the oldest (unset:
    /// all).
    pub keep_files: Option<usize>,
    /// Delete rotated files last written longer ago than this (`"off"`:
    /// never).
    #[serde(
        deserialize_with = "units::opt_duration",
        serialize_with = "units::ser_opt_duration"
    )]
    pub keep_for: Option<Duration>,
    /// Gzip each rotated file (`<name>.gz`), in the background.
    pub compress: bool,
    /// What each line holds: the record (`record`) or the frame alone
    /// (`frame`).
    pub format: RecordFormat,
}

impl Default for FileSinkConfig {
    fn default() -> Self {
        FileSinkConfig {
            name: None,
            path: PathBuf::new(),
            fsync: FsyncPolicy::Interval,
            fsync_interval: Duration::from_secs(1),
            rotate_bytes: None,
            rotate_every: None,
            keep_files: None,
            keep_for: None,
            compress: false,
            format: RecordFormat::Record,
        }
    }
}

/// A `stdout` sink.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StdoutSinkConfig {
    /// Name in logs, metrics and `/healthz` (default: `stdout`).
    pub name: Option<String>,
    /// What each line holds, as a file sink's `format`.
    pub format: RecordFormat,
}

/// What a `file` or `stdout` sink writes per frame, one line each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordFormat {
    /// The NDJSON record: time, listener, node, connection, peer and the
    /// frame (`crate::sink`).
    #[default]
    Record,
    /// The frame as received, alone: for `lines` and `json` framings only
    /// (a `json` frame's line breaks, whitespace between tokens, become
    /// spaces).
    Frame,
}

/// What a tap does with a subscriber whose buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TapOverflow {
    /// The subscriber misses the records that do not fit (counted).
    #[default]
    Drop,
    /// The subscriber is disconnected (counted).
    Disconnect,
}

/// A `tap` sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TapSinkConfig {
    /// Name in logs, metrics and `/healthz` (default: `tap`).
    pub name: Option<String>,
    /// Address subscribers connect to.
    pub bind: SocketAddr,
    /// Records buffered per subscriber, in bytes, before `on_full` applies.
    pub buffer_bytes: ByteSize,
    /// What happens to a subscriber whose buffer is full.
    pub on_full: TapOverflow,
    /// Subscribers at once; further ones are closed at once.
    pub max_subscribers: usize,
}

impl Default for TapSinkConfig {
    fn default() -> Self {
        TapSinkConfig {
            name: None,
            bind: DEFAULT_TAP_BIND,
            buffer_bytes: ByteSize(1 << 20),
            on_full: TapOverflow::Drop,
            max_subscribers: 16,
        }
    }
}

/// Everything a config file holds.
#[derive(Debug, Clone, Default)]
pub struct FileConfig {
    /// The hub: listeners, nodes, shutdown.
    pub hub: HubConfig,
    /// The daemon.
    pub serve: ServeConfig,
    /// The admin HTTP server.
    pub admin: AdminConfig,
    /// The sinks (`[[sink]]` tables).
    pub sink: Vec<SinkConfig>,
    /// The NATS connection (`[nats]`), when the file has the table.
    pub nats: Option<NatsConfig>,
    /// Per `[[listener]]`, whether the file sets `queue.overflow` and
    /// `group_overflow` itself (else `serve` picks its own default).
    pub overflow_set: Vec<(bool, bool)>,
}

impl FileConfig {
    /// `serve`'s defaults where they differ from the library's: with a
    /// file sink, or a `nats` sink that blocks when full (its default), a
    /// listener whose overflow policies the file leaves unset blocks
    /// (stops reading, so TCP pushes back on devices) instead of
    /// dropping, since a user who asked for a file or a stream of what
    /// arrived expects all of it there; a sink that blocks behind queues
    /// that drop would only move the loss into the hub. Returns whether
    /// any changed.
    pub fn apply_serve_defaults(&mut self) -> bool {
        let keeps_all = self.sinks().iter().any(|s| match s {
            SinkConfig::File(_) => true,
            SinkConfig::Nats(n) => n.on_full == framehub::nats::NatsOverflow::Block,
            SinkConfig::Stdout(_) | SinkConfig::Tap(_) => false,
        });
        if !keeps_all {
            return false;
        }
        let mut changed = false;
        for (i, l) in self.hub.listener.iter_mut().enumerate() {
            let (queue_set, group_set) = self.overflow_set.get(i).copied().unwrap_or_default();
            if !queue_set && l.queue.overflow != OverflowPolicy::Block {
                l.queue.overflow = OverflowPolicy::Block;
                changed = true;
            }
            if !group_set && l.group_overflow != OverflowPolicy::Block {
                l.group_overflow = OverflowPolicy::Block;
                changed = true;
            }
        }
        changed
    }

    /// The sinks to run: the configured ones, `[serve] out` as a file sink,
    /// and stdout when neither names a file or stdout sink (a tap alone
    /// does not replace stdout).
    pub fn sinks(&self) -> Vec<SinkConfig> {
        let mut sinks = self.sink.clone();
        if let Some(out) = &self.serve.out {
            sinks.push(SinkConfig::File(FileSinkConfig {
                name: Some("out".to_owned()),
                path: out.clone(),
                ..FileSinkConfig::default()
            }));
        }
        if !sinks.iter().any(SinkConfig::is_durable) {
            sinks.push(SinkConfig::Stdout(StdoutSinkConfig::default()));
        }
        sinks
    }

    /// The NATS connection to keep: `[nats]` when the file has it, its
    /// defaults when only a `nats` sink or a listener's NATS handler asks
    /// for one; `None` when nothing uses NATS.
    pub fn nats(&self) -> Option<NatsConfig> {
        let needed = self.sink.iter().any(|s| matches!(s, SinkConfig::Nats(_)))
            || self.hub.listener.iter().any(|l| l.handler.is_some());
        match &self.nats {
            Some(n) => Some(n.clone()),
            None => needed.then(NatsConfig::default),
        }
    }

    /// Checks everything that can be checked before binding: the hub, then
    /// the daemon's tables, naming the key at fault.
    pub fn validate(&self) -> Result<(), BadConfig> {
        self.hub.validate().map_err(|e| BadConfig(e.to_string()))?;
        self.serve.validate()?;
        self.admin.validate()?;
        if let Some(n) = &self.nats {
            n.validate().map_err(|e| BadConfig(e.to_string()))?;
        }
        if let Some(n) = self.nats()
            && n.egress
            && let Some(l) = self
                .hub
                .listeners()
                .iter()
                .find(|l| l.name == "send" || l.name == "broadcast")
        {
            // Its frames' subjects would be the egress subjects.
            return Err(BadConfig(format!(
                "listener name {:?}: taken by the NATS egress subjects ({}.{}.<node>); rename the listener or set [nats] egress = false",
                l.name, n.subject_prefix, l.name
            )));
        }
        let configured = self.sink.len();
        let sinks = self.sinks();
        for (i, s) in sinks.iter().enumerate() {
            // Sinks added from `[serve] out` or by default are named by
            // where they came from.
            let key = |k: &str| {
                if i < configured {
                    format!("sink[{i}].{k}")
                } else {
                    format!("serve.out ({k})")
                }
            };
            if s.name().is_empty() {
                return Err(BadConfig(format!("{}: must not be empty", key("name"))));
            }
            if sinks[..i].iter().any(|o| o.name() == s.name()) {
                return Err(BadConfig(format!(
                    "{}: sink name {:?} is used twice; give each sink of the same type its own name",
                    key("name"),
                    s.name()
                )));
            }
            if s.format() == Some(RecordFormat::Frame) {
                self.check_frame_format(s, &key("format"))?;
            }
            match s {
                SinkConfig::File(f) => {
                    if f.path.as_os_str().is_empty() {
                        return Err(BadConfig(format!(
                            "{}: required for a file sink",
                            key("path")
                        )));
                    }
                    if f.fsync == FsyncPolicy::Interval && f.fsync_interval.is_zero() {
                        return Err(BadConfig(format!(
                            "{}: must be > 0 (or use fsync = \"always\")",
                            key("fsync_interval")
                        )));
                    }
                    if f.rotate_bytes.is_some_and(|b| b.0 < 4096) {
                        return Err(BadConfig(format!(
                            "{}: must be at least 4KiB",
                            key("rotate_bytes")
                        )));
                    }
                }
                SinkConfig::Stdout(_) => {
                    if sinks[..i]
                        .iter()
                        .any(|o| matches!(o, SinkConfig::Stdout(_)))
                    {
                        return Err(BadConfig(format!(
                            "{}: there is only one stdout",
                            key("type")
                        )));
                    }
                }
                SinkConfig::Nats(n) => {
                    n.validate(&key).map_err(|e| BadConfig(e.to_string()))?;
                    if self.hub.listeners().iter().any(|l| l.ack.is_on()) {
                        if n.on_full == framehub::nats::NatsOverflow::Drop {
                            return Err(BadConfig(format!(
                                "{}: must be \"block\" with acknowledged delivery (a dropped frame would be covered by a later ack)",
                                key("on_full")
                            )));
                        }
                        if !n.jetstream.enabled {
                            return Err(BadConfig(format!(
                                "{}: must be on with acknowledged delivery (core NATS publishes are not acknowledged)",
                                key("jetstream.enabled")
                            )));
                        }
                    }
                }
                SinkConfig::Tap(t) => {
                    if t.buffer_bytes.0 == 0 || t.buffer_bytes.0 > MAX_TAP_BUFFER_BYTES {
                        return Err(BadConfig(format!(
                            "{}: must be > 0 and at most 1GiB",
                            key("buffer_bytes")
                        )));
                    }
                    if t.max_subscribers == 0 || t.max_subscribers > MAX_DAEMON_CONNECTIONS {
                        return Err(BadConfig(format!(
                            "{}: must be 1..={MAX_DAEMON_CONNECTIONS}",
                            key("max_subscribers")
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

impl FileConfig {
    /// `format = "frame"` writes one frame per line: every listener's
    /// frames must be text lines (`lines`) or JSON values (`json`, whose
    /// line breaks are whitespace), and a file sink for acknowledged
    /// delivery needs the records' `node` and `seq` to find its durable
    /// marks again at start.
    fn check_frame_format(&self, sink: &SinkConfig, key: &str) -> Result<(), BadConfig> {
        use framehub::FramingConfig;
        let listeners = self.hub.listeners();
        if let Some(l) = listeners
            .iter()
            .find(|l| !matches!(l.framing, FramingConfig::Lines | FramingConfig::Json(_)))
        {
            return Err(BadConfig(format!(
                "{key}: \"frame\" writes one frame per line, and listener {:?} has binary frames (framing {}); use format = \"record\" (binary frames go into records as base64)",
                l.name,
                l.framing.name()
            )));
        }
        if matches!(sink, SinkConfig::File(_)) && listeners.iter().any(|l| l.ack.is_on()) {
            return Err(BadConfig(format!(
                "{key}: \"frame\" leaves out each record's node and seq, which a file sink needs to find its durable marks again at start; use format = \"record\" with [listener.ack] mode = \"durable\""
            )));
        }
        Ok(())
    }
}

/// A config that cannot be used, with the key at fault when known.
#[derive(Debug)]
pub struct BadConfig(pub String);

impl std::fmt::Display for BadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses TOML text; errors name the key (`listener[0].queue.capacity`).
pub fn parse(text: &str) -> Result<FileConfig, BadConfig> {
    let cfg = parse_unchecked(text)?;
    cfg.validate()?;
    Ok(cfg)
}

/// [`parse`] without the final validation, for `serve`: its flags
/// (`--out`, `--token`...) complete the file's config before it is
/// validated, so a file that is valid only with them (acknowledged
/// delivery with `--out`, whose file sink makes queues block) is not
/// refused first.
pub fn parse_unchecked(text: &str) -> Result<FileConfig, BadConfig> {
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| BadConfig(format!("not valid TOML: {e}")))?;
    let serve = match table.remove("serve") {
        Some(value) => deserialize::<ServeConfig>(value, "serve.")?,
        None => ServeConfig::default(),
    };
    let admin = match table.remove("admin") {
        Some(value) => deserialize::<AdminConfig>(value, "admin.")?,
        None => AdminConfig::default(),
    };
    let nats = match table.remove("nats") {
        Some(value) => Some(deserialize::<NatsConfig>(value, "nats.")?),
        None => None,
    };
    let sink = match table.remove("sink") {
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| deserialize_sink(v, i))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(BadConfig(
                "sink: must be an array of tables ([[sink]])".to_owned(),
            ));
        }
        None => Vec::new(),
    };
    let overflow_set = match table.get("listener") {
        Some(toml::Value::Array(listeners)) => listeners
            .iter()
            .map(|l| {
                let queue = l.get("queue").and_then(|q| q.get("overflow")).is_some();
                (queue, l.get("group_overflow").is_some())
            })
            .collect(),
        _ => Vec::new(),
    };
    let hub: HubConfig = deserialize(toml::Value::Table(table), "")?;
    let mut cfg = FileConfig {
        hub,
        serve,
        admin,
        sink,
        nats,
        overflow_set,
    };
    cfg.apply_serve_defaults();
    Ok(cfg)
}

/// Deserializes one `[[sink]]` table. The type is looked at first, so that
/// an unknown key is reported against the struct of that type (serde's
/// internally tagged enums would lose the key path).
fn deserialize_sink(value: toml::Value, i: usize) -> Result<SinkConfig, BadConfig> {
    let prefix = format!("sink[{i}].");
    let toml::Value::Table(mut table) = value else {
        return Err(BadConfig(format!("sink[{i}]: must be a table")));
    };
    let kind = match table.remove("type") {
        Some(toml::Value::String(kind)) => kind,
        Some(_) => return Err(BadConfig(format!("{prefix}type: must be a string"))),
        None => {
            return Err(BadConfig(format!(
                "{prefix}type: required: file, stdout, tap or nats"
            )));
        }
    };
    let value = toml::Value::Table(table);
    Ok(match kind.as_str() {
        "file" => SinkConfig::File(deserialize(value, &prefix)?),
        "stdout" => SinkConfig::Stdout(deserialize(value, &prefix)?),
        "tap" => SinkConfig::Tap(deserialize(value, &prefix)?),
        "nats" => SinkConfig::Nats(deserialize(value, &prefix)?),
        other => {
            return Err(BadConfig(format!(
                "{prefix}type: unknown sink type {other:?}: expected file, stdout, tap or nats"
            )));
        }
    })
}

fn deserialize<T: serde::de::DeserializeOwned>(
    value: toml::Value,
    prefix: &str,
) -> Result<T, BadConfig> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        BadConfig(format!("{prefix}{path}: {}", e.into_inner()))
    })
}

/// Reads and parses a config file.
pub fn load(path: &Path) -> Result<FileConfig, BadConfig> {
    parse(&read(path)?)
}

/// Reads and parses a config file that `serve`'s flags complete before it
/// is validated ([`parse_unchecked`]).
pub fn load_unchecked(path: &Path) -> Result<FileConfig, BadConfig> {
    parse_unchecked(&read(path)?)
}

fn read(path: &Path) -> Result<String, BadConfig> {
    std::fs::read_to_string(path)
        .map_err(|e| BadConfig(format!("cannot read {}: {e}", path.display())))
}

/// `framehub check-config FILE`: 0 when valid, 64 naming the bad key.
pub fn check_config(path: &Path) -> ExitCode {
    match load(path) {
        Ok(cfg) => {
            let listeners = cfg.hub.listeners();
            println!(
                "{}: ok ({} listener{})",
                path.display(),
                listeners.len(),
                if listeners.len() == 1 { "" } else { "s" }
            );
            for l in listeners {
                println!(
                    "  listener {} on {} ({}, {:?}, {:?}, auth {})",
                    l.name,
                    l.effective_bind(),
                    l.framing.name(),
                    l.protocol,
                    l.delivery,
                    if l.auth.is_required() { "on" } else { "off" }
                );
            }
            for s in cfg.sinks() {
                let target = match &s {
                    SinkConfig::File(f) => format!("{} (fsync {:?})", f.path.display(), f.fsync),
                    SinkConfig::Stdout(_) => "stdout".to_owned(),
                    SinkConfig::Tap(t) => format!("subscribers on {}", t.bind),
                    SinkConfig::Nats(n) if n.jetstream.enabled => {
                        format!("{} into stream {}", n.subject, n.jetstream.stream)
                    }
                    SinkConfig::Nats(n) => format!("{} (core NATS)", n.subject),
                };
                println!("  sink {} ({}): {target}", s.name(), s.kind());
            }
            if let Some(n) = cfg.nats() {
                println!("  nats {}", n.servers.join(", "));
            }
            if cfg.admin.enabled {
                // The same check `serve` makes, with the environment this
                // command sees.
                let token = match cfg.admin.resolve_token(std::env::var_os(ADMIN_TOKEN_ENV)) {
                    Ok(token) => token,
                    Err(e) => {
                        eprintln!("framehub: {}: {e}", path.display());
                        return ExitCode::from(crate::EXIT_BAD_CONFIG);
                    }
                };
                println!(
                    "  admin on {}://{} ({})",
                    if cfg.admin.tls.cert.is_some() {
                        "https"
                    } else {
                        "http"
                    },
                    cfg.admin.bind,
                    if token.is_some() {
                        "token required"
                    } else {
                        "no token, loopback only"
                    }
                );
            } else {
                println!("  admin off");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("framehub: {}: {e}", path.display());
            ExitCode::from(crate::EXIT_BAD_CONFIG)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn errors_name_the_key() {
        let err =
            parse("[[listener]]\n[listener.queue]\ncapacity = \"x\"\n").expect_err("bad type");
        assert!(err.0.starts_with("listener[0].queue.capacity"), "{err}");
        let err = parse("[serve]\nstatus = \"5s\"\n").expect_err("unknown key");
        assert!(err.0.contains("status"), "{err}");
        let err = parse("[[listener]]\n[listener.queue]\ncapacity = 0\n").expect_err("invalid");
        assert!(err.0.contains("listener[0].queue.capacity"), "{err}");
        for (text, key) in [
            (
                "[[sink]]\ntype = \"file\"\npath = \"a\"\nrotate_bytes = \"1 parsec\"\n",
                "sink[0].rotate_bytes",
            ),
            (
                "[[sink]]\ntype = \"stdout\"\n[[sink]]\ntype = \"file\"\npath = \"a\"\nfsink = \"always\"\n",
                "fsink",
            ),
            ("[[sink]]\ntype = \"file\"\n", "sink[0].path"),
            ("[[sink]]\ntype = \"kafka\"\n", "sink[0].type"),
            ("[[sink]]\npath = \"x\"\n", "sink[0].type"),
            (
                "[[sink]]\ntype = \"tap\"\n[[sink]]\ntype = \"tap\"\nbind = \"127.0.0.1:0\"\n",
                "sink[1].name",
            ),
            (
                "[[sink]]\ntype = \"tap\"\nbuffer_bytes = 0\n",
                "sink[0].buffer_bytes",
            ),
            (
                "[[sink]]\ntype = \"file\"\npath = \"a\"\nfsync = \"sometimes\"\n",
                "sink[0].fsync",
            ),
            ("[admin]\nbind = \"localhost\"\n", "admin.bind"),
            (
                "[admin]\ntoken = \"a\"\ntoken_file = \"t\"\n",
                "admin.token",
            ),
            ("[admin]\ntoken = \"\"\n", "admin.token"),
            ("[admin]\ntoken = \"two words\"\n", "admin.token"),
            ("[admin]\nmax_connections = 0\n", "admin.max_connections"),
            ("[admin]\nheader_timeout = \"0s\"\n", "admin.header_timeout"),
            ("[admin]\nbody_timeout = \"soon\"\n", "admin.body_timeout"),
            ("[admin.tls]\ncert = \"a.pem\"\n", "admin.tls.key"),
            ("[admin.tls]\nkey = \"a.key\"\n", "admin.tls.cert"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.0.contains(key), "{key} not named in: {err}");
        }
    }

    /// The admin token: the environment, then `token_file`, then `token`;
    /// required off loopback; never in a `{:?}`.
    #[test]
    fn admin_token_sources_and_the_loopback_rule() {
        let cfg = parse("[admin]\ntoken = \"from-config\"\n").expect("valid");
        let token = |cfg: &FileConfig, env: Option<&str>| {
            cfg.admin
                .resolve_token(env.map(Into::into))
                .map(|t| t.map(|t| String::from_utf8(t.expose().to_vec()).expect("utf-8")))
        };
        assert_eq!(
            token(&cfg, None).expect("ok").as_deref(),
            Some("from-config")
        );
        assert_eq!(
            token(&cfg, Some("from-env")).expect("ok").as_deref(),
            Some("from-env")
        );
        assert_eq!(
            token(&cfg, Some("")).expect("ok").as_deref(),
            Some("from-config")
        );
        assert!(!format!("{cfg:?}").contains("from-config"));
        assert!(!format!("{:?}", token(&cfg, None)).is_empty());
        let resolved = cfg.admin.resolve_token(None).expect("ok").expect("token");
        assert!(!format!("{resolved:?}").contains("from-config"));

        let dir = std::env::temp_dir().join(format!("framehub-admin-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("token");
        std::fs::write(&file, "from-file\n").expect("write");
        let cfg = parse(&format!(
            "[admin]\nbind = \"0.0.0.0:0\"\ntoken_file = {:?}\n",
            file.to_str().expect("path")
        ))
        .expect("valid");
        assert_eq!(token(&cfg, None).expect("ok").as_deref(), Some("from-file"));
        std::fs::write(&file, "\n").expect("write");
        let err = token(&cfg, None).expect_err("empty file");
        assert!(err.0.contains("admin.token_file"), "{err}");
        std::fs::remove_file(&file).expect("rm");
        let err = token(&cfg, None).expect_err("missing file");
        assert!(err.0.contains("admin.token_file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);

        // Off loopback a token is required; on loopback it is optional.
        for bind in ["0.0.0.0:30051", "[::]:30051", "192.0.2.1:30051"] {
            let cfg = parse(&format!("[admin]\nbind = \"{bind}\"\n")).expect("parses");
            let err = token(&cfg, None).expect_err(bind);
            assert!(err.0.starts_with("admin.token: required"), "{err}");
            assert_eq!(token(&cfg, Some("t")).expect("ok").as_deref(), Some("t"));
        }
        for bind in ["127.0.0.1:30051", "[::1]:30051", "[::ffff:127.0.0.1]:1"] {
            let cfg = parse(&format!("[admin]\nbind = \"{bind}\"\n")).expect("parses");
            assert_eq!(token(&cfg, None).expect(bind), None);
        }
        // Off, it needs nothing.
        let cfg = parse("[admin]\nenabled = false\nbind = \"0.0.0.0:1\"\n").expect("parses");
        assert_eq!(token(&cfg, None).expect("off"), None);
    }

    /// Issue 18: what `check-config` accepts, `serve` runs: a zero period
    /// or timeout that would panic a task or close every client, and
    /// sizes without an upper bound, are refused naming the key.
    #[test]
    fn values_that_cannot_run_are_refused() {
        for (text, key) in [
            (
                "[serve]\nstatus_interval = \"0s\"\n",
                "serve.status_interval",
            ),
            (
                "[[listener]]\n[listener.auth]\ntimeout = \"0s\"\n",
                "listener[0].auth.timeout",
            ),
            (
                "[[listener]]\nread_buffer_bytes = \"4GiB\"\n",
                "listener[0].read_buffer_bytes",
            ),
            (
                "[[listener]]\n[listener.queue]\ncapacity = 1099511627776\n",
                "listener[0].queue.capacity",
            ),
            (
                "[[listener]]\nmax_frame_bytes = \"2GiB\"\n",
                "listener[0].max_frame_bytes",
            ),
            (
                "[admin]\nmax_connections = 9223372036854775807\n",
                "admin.max_connections",
            ),
            (
                "[[sink]]\ntype = \"tap\"\nbuffer_bytes = \"2GiB\"\n",
                "sink[0].buffer_bytes",
            ),
            (
                "[[sink]]\ntype = \"tap\"\nmax_subscribers = 9223372036854775807\n",
                "sink[0].max_subscribers",
            ),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.0.starts_with(key), "{key} not named first in: {err}");
        }
        parse("[serve]\nstatus_interval = \"1ms\"\n").expect("a short period runs");
    }

    #[test]
    fn sinks_default_to_stdout_and_serve_out_is_a_file_sink() {
        let cfg = parse("").expect("empty");
        assert_eq!(
            cfg.sinks(),
            [SinkConfig::Stdout(StdoutSinkConfig::default())]
        );
        // A tap alone does not take the place of stdout.
        let cfg = parse("[[sink]]\ntype = \"tap\"\n").expect("tap");
        assert_eq!(
            cfg.sinks().iter().map(|s| s.name()).collect::<Vec<_>>(),
            ["tap", "stdout"]
        );
        let cfg = parse("[serve]\nout = \"x.ndjson\"\n").expect("out");
        let sinks = cfg.sinks();
        assert_eq!(sinks.len(), 1);
        let SinkConfig::File(f) = &sinks[0] else {
            panic!("a file sink: {sinks:?}")
        };
        assert_eq!(f.path, PathBuf::from("x.ndjson"));
        assert_eq!(f.fsync, FsyncPolicy::Interval);
    }

    #[test]
    fn serve_table_is_separate() {
        let cfg = parse("[serve]\nout = \"x.ndjson\"\nstatus_interval = \"1s\"\n").expect("valid");
        assert_eq!(cfg.serve.out, Some(PathBuf::from("x.ndjson")));
        assert_eq!(cfg.serve.status_interval, Duration::from_secs(1));
        assert_eq!(cfg.hub.listeners().len(), 1);
    }

    /// The reference block of `docs/configuration.md` (its first toml block).
    fn reference_block() -> &'static str {
        let doc = include_str!("../../../docs/configuration.md");
        let start = doc
            .find("```toml\n")
            .expect("toml block in docs/configuration.md")
            + "```toml\n".len();
        &doc[start..start + doc[start..].find("```").expect("block end")]
    }

    /// The reference block lists every key with its default: it must
    /// parse, and give the same settings as an empty file.
    #[test]
    fn config_reference_parses_to_the_defaults() {
        let documented = parse(reference_block()).expect("docs/configuration.md config parses");
        let defaults = parse("").expect("empty config");
        assert_eq!(
            format!("{:?}", documented.hub.listeners()),
            format!("{:?}", defaults.hub.listeners())
        );
        assert_eq!(
            format!("{:?}", documented.hub.nodes),
            format!("{:?}", defaults.hub.nodes)
        );
        assert_eq!(documented.hub.shutdown_grace, defaults.hub.shutdown_grace);
        assert_eq!(documented.hub.stats_interval, defaults.hub.stats_interval);
        assert_eq!(
            documented.hub.connection_history,
            defaults.hub.connection_history
        );
        assert_eq!(documented.hub.runtime, defaults.hub.runtime);
        assert_eq!(
            format!("{:?}", documented.serve),
            format!("{:?}", defaults.serve)
        );
        assert_eq!(
            format!("{:?}", documented.admin),
            format!("{:?}", defaults.admin)
        );
        // One sink of each type, each with its type's defaults; a file
        // sink's path has no default, so the reference's example is taken.
        let mut kinds = Vec::new();
        for s in &documented.sink {
            kinds.push(s.kind());
            let expected = match s {
                SinkConfig::File(f) => SinkConfig::File(FileSinkConfig {
                    path: f.path.clone(),
                    ..FileSinkConfig::default()
                }),
                SinkConfig::Stdout(_) => SinkConfig::Stdout(StdoutSinkConfig::default()),
                SinkConfig::Tap(_) => SinkConfig::Tap(TapSinkConfig::default()),
                SinkConfig::Nats(_) => SinkConfig::Nats(NatsSinkConfig::default()),
            };
            assert_eq!(
                *s, expected,
                "docs/configuration.md sink differs from the defaults"
            );
        }
        assert_eq!(kinds, ["file", "stdout", "tap", "nats"]);
        assert_eq!(documented.nats, Some(NatsConfig::default()));
    }

    /// A stage-mode file: every new key parses, from the daemon's config.
    #[test]
    fn stage_mode_keys_parse() {
        let cfg = parse(
            r#"
            stats_interval = "2s"
            [runtime]
            io_threads = 1
            cpu_affinity = [0]
            thread_priority = "realtime:10"
            [[listener]]
            name = "stage"
            framing = "chunk"
            protocol = "raw"
            delivery = "groups"
            group_size = 16
            group_max_delay = "10ms"
            group_capacity = 8
            group_overflow = "block"
            egress_buffer_bytes = "256KiB"
            slow_client = "disconnect"
            "#,
        )
        .expect("valid");
        assert_eq!(cfg.hub.stats_interval, Duration::from_secs(2));
        assert_eq!(cfg.hub.runtime.cpu_affinity, [0]);
        assert_eq!(
            cfg.hub.runtime.thread_priority,
            Some(framehub::ThreadPriority::Realtime(10))
        );
        let l = &cfg.hub.listener[0];
        assert_eq!(l.delivery, framehub::Delivery::Groups);
        assert_eq!(l.group_size, 16);
        assert_eq!(l.group_overflow, framehub::OverflowPolicy::Block);
        assert_eq!(l.egress_buffer_bytes, framehub::ByteSize(256 << 10));
        assert_eq!(l.slow_client, framehub::SlowClientPolicy::Disconnect);
        let nice = parse("[runtime]\nthread_priority = -5\n").expect("nice");
        assert_eq!(
            nice.hub.runtime.thread_priority,
            Some(framehub::ThreadPriority::Nice(-5))
        );
        for bad in [
            "[runtime]\nthread_priority = 20\n",
            "[runtime]\nthread_priority = \"realtime:0\"\n",
            "[runtime]\nthread_priority = \"fast\"\n",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.0.contains("runtime.thread_priority"), "{err}");
        }
        let err = parse("[[listener]]\ngroup_size = 0\n").expect_err("size 0");
        assert!(err.0.contains("listener[0].group_size"), "{err}");
    }

    /// `serve` blocks by default behind a file sink and behind a `nats`
    /// sink that blocks (its default); a `nats` sink that drops, stdout or
    /// a tap leave the library's drop-oldest; a policy the file sets wins.
    #[test]
    fn serve_blocks_behind_a_file_or_a_blocking_nats_sink() {
        let overflow = |text: &str| parse(text).expect(text).hub.listener[0].queue.overflow;
        let listener = "[[listener]]\nname = \"a\"\n";
        let nats = "[nats]\n[[sink]]\ntype = \"nats\"\n";
        assert_eq!(
            overflow(&format!("{listener}{nats}")),
            framehub::OverflowPolicy::Block
        );
        assert_eq!(
            overflow(&format!("{listener}{nats}on_full = \"drop\"\n")),
            framehub::OverflowPolicy::DropOldest
        );
        assert_eq!(
            overflow(&format!(
                "{listener}[[sink]]\ntype = \"file\"\npath = \"x.ndjson\"\n"
            )),
            framehub::OverflowPolicy::Block
        );
        assert_eq!(
            overflow(&format!("{listener}[[sink]]\ntype = \"stdout\"\n")),
            framehub::OverflowPolicy::DropOldest
        );
        assert_eq!(
            overflow(&format!(
                "{listener}[listener.queue]\noverflow = \"drop-newest\"\n{nats}"
            )),
            framehub::OverflowPolicy::DropNewest
        );
    }

    /// Key paths (`listener.queue.capacity`) of a serialized config: every
    /// leaf, and every table (so an empty map such as `auth.tokens` counts).
    fn key_paths(value: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if !prefix.is_empty() {
                    out.insert(prefix.to_owned());
                }
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    key_paths(v, &path, out);
                }
            }
            // Arrays of tables ([[listener]], [[sink]]): their keys share
            // the array's path.
            serde_json::Value::Array(items) if items.iter().all(|i| i.is_object()) => {
                out.insert(prefix.to_owned());
                for item in items {
                    if let serde_json::Value::Object(map) = item {
                        for (k, v) in map {
                            key_paths(v, &format!("{prefix}.{k}"), out);
                        }
                    }
                }
            }
            _ => {
                out.insert(prefix.to_owned());
            }
        }
    }

    /// Key paths the reference block documents: `key = ...` lines, commented
    /// out or not, under the table header they follow, and the headers.
    fn documented_paths(block: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut table = String::new();
        for line in block.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix('[') {
                let header = rest.trim_start_matches('[');
                let name = &header[..header.find(']').expect("header end")];
                table = name.to_owned();
                out.insert(table.clone());
                continue;
            }
            let line = line.trim_start_matches('#').trim_start();
            let Some(eq) = line.find('=') else { continue };
            let key = line[..eq].trim();
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            out.insert(if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            });
        }
        out
    }

    /// Every key of every config struct must appear in the reference block,
    /// and every key the block mentions must exist: the defaults are
    /// serialized (JSON keeps unset options as `null`, so they count too)
    /// with one listener and one sink of each type, and their key paths
    /// compared with the block's.
    #[test]
    fn config_reference_lists_every_key() {
        // Adding a sink type breaks this match until the list below has it.
        fn every_sink_type(s: &SinkConfig) {
            match s {
                SinkConfig::File(_)
                | SinkConfig::Stdout(_)
                | SinkConfig::Tap(_)
                | SinkConfig::Nats(_) => {}
            }
        }
        let sinks = vec![
            SinkConfig::File(FileSinkConfig::default()),
            SinkConfig::Stdout(StdoutSinkConfig::default()),
            SinkConfig::Tap(TapSinkConfig::default()),
            SinkConfig::Nats(NatsSinkConfig::default()),
        ];
        sinks.iter().for_each(every_sink_type);
        let mut hub = serde_json::to_value(HubConfig {
            listener: vec![framehub::ListenerConfig::default()],
            ..HubConfig::default()
        })
        .expect("hub config serializes");
        let map = hub.as_object_mut().expect("object");
        map.insert(
            "serve".into(),
            serde_json::to_value(ServeConfig::default()).expect("serve"),
        );
        map.insert(
            "admin".into(),
            serde_json::to_value(AdminConfig::default()).expect("admin"),
        );
        map.insert("sink".into(), serde_json::to_value(&sinks).expect("sinks"));
        map.insert(
            "nats".into(),
            serde_json::to_value(NatsConfig::default()).expect("nats"),
        );
        let mut keys = BTreeSet::new();
        key_paths(&hub, "", &mut keys);
        let documented = documented_paths(reference_block());
        let missing: Vec<_> = keys.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "config keys missing from the reference block of docs/configuration.md: {missing:?}"
        );
        // Entries of maps keyed by the user (node names) are examples.
        let stale: Vec<_> = documented
            .difference(&keys)
            .filter(|k| !k.starts_with("listener.auth.tokens."))
            .collect();
        assert!(
            stale.is_empty(),
            "docs/configuration.md documents keys that do not exist: {stale:?}"
        );
    }
}

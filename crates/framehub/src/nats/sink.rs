//! The NATS sink: every frame published as one message (the frame's bytes,
//! its source in headers) on a subject made from the template, into a
//! JetStream stream with publish acknowledgements.
//!
//! Frames wait in a buffer bounded in frames and bytes until JetStream has
//! acknowledged them; a full buffer blocks the caller (backpressure) or
//! drops what does not fit (counted). At most `max_acks_in_flight` publishes
//! (and `max_ack_bytes`) wait for their acknowledgement. A publish that
//! fails or is not acknowledged in time is sent again with the same
//! `Nats-Msg-Id`, after every publish before it has been answered, in the
//! order the frames came: the stream's duplicate window stores it once.
//! The client reconnects by itself; nothing taken into the buffer is given
//! up before [`NatsSink::finish`]'s timeout.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::{HeaderMap, HeaderName, HeaderValue, Subject};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt as _, StreamExt as _};
use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::frame::{Frame, Source};
use crate::nats::config::{NatsOverflow, NatsSinkConfig, StreamStorage};
use crate::nats::subject::{Template, token};
use crate::nats::{ConnectionReport, NatsError};

/// Header: when the read that carried the frame completed (RFC 3339, µs).
pub const HEADER_RECEIVED_AT: &str = "Framehub-Received-At";
/// Header: the listener's name.
pub const HEADER_LISTENER: &str = "Framehub-Listener";
/// Header: the node's name (node protocol), absent for raw frames.
pub const HEADER_NODE: &str = "Framehub-Node";
/// Header: the connection's id within its instance.
pub const HEADER_CONN: &str = "Framehub-Conn";
/// Header: the peer's address.
pub const HEADER_PEER: &str = "Framehub-Peer";
/// Header: the instance that took the frame.
pub const HEADER_INSTANCE: &str = "Framehub-Instance";
/// Header: the frame's sequence number (acknowledged delivery).
pub const HEADER_SEQ: &str = "Framehub-Seq";

/// The header names as values that cost no allocation to make or clone.
const NAME_RECEIVED_AT: HeaderName = HeaderName::from_static(HEADER_RECEIVED_AT);
const NAME_LISTENER: HeaderName = HeaderName::from_static(HEADER_LISTENER);
const NAME_NODE: HeaderName = HeaderName::from_static(HEADER_NODE);
const NAME_CONN: HeaderName = HeaderName::from_static(HEADER_CONN);
const NAME_PEER: HeaderName = HeaderName::from_static(HEADER_PEER);
const NAME_INSTANCE: HeaderName = HeaderName::from_static(HEADER_INSTANCE);
const NAME_SEQ: HeaderName = HeaderName::from_static(HEADER_SEQ);
const NAME_MSG_ID: HeaderName = HeaderName::from_static("Nats-Msg-Id");

/// Bytes counted per frame besides its payload: subject and headers.
const OVERHEAD: usize = 192;
/// Longest wait between two resend rounds while NATS fails.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The sink's counters, read at any time.
#[derive(Debug, Default)]
pub struct NatsSinkStats {
    /// Frames acknowledged by JetStream (core NATS: written to the client).
    pub published: AtomicU64,
    /// Of those, frames JetStream already held (a resend within its
    /// duplicate window).
    pub duplicates: AtomicU64,
    /// Payload bytes of the published frames.
    pub bytes: AtomicU64,
    /// Frames dropped because the buffer was full (`on_full = "drop"`).
    pub dropped: AtomicU64,
    /// Publishes sent again after a failure or a missing acknowledgement.
    pub resent: AtomicU64,
    /// Frames given up: refused for good (larger than the server's
    /// `max_payload`), or still held when the sink's drain timed out.
    pub failed: AtomicU64,
    /// Frames in the buffer now (waiting or in flight).
    pub buffered_frames: AtomicU64,
    /// Bytes in the buffer now.
    pub buffered_bytes: AtomicU64,
}

/// Frames JetStream acknowledged, in the order they came.
#[derive(Debug)]
pub struct Acked<'a> {
    /// The frames.
    pub frames: &'a [Frame],
    /// Every frame taken up to this number ([`NatsSink::taken`]) is now
    /// acknowledged (or was given up, counted as failed, or dropped with
    /// `on_full = "drop"`).
    pub through: u64,
}

/// Hears of acknowledged frames ([`NatsSink::start`]'s `on_acked`): e.g. a
/// library user's `acks.acknowledge_frames(acked.frames)`.
pub type OnAcked = Arc<dyn Fn(Acked<'_>) + Send + Sync>;

/// What the intake and the publisher task share.
struct Shared {
    frames_room: Semaphore,
    bytes_room: Semaphore,
    buffer_frames: usize,
    buffer_bytes: usize,
    on_full: NatsOverflow,
    stats: NatsSinkStats,
    /// Why publishing fails now; cleared by the next acknowledgement.
    failing: Mutex<Option<String>>,
    /// The intake is waiting for room.
    waiting: AtomicBool,
    client: async_nats::Client,
    /// Why the connection is down, when the caller gave the report.
    connection: std::sync::OnceLock<ConnectionReport>,
}

impl Shared {
    fn release(&self, frames: usize, bytes: usize) {
        self.frames_room.add_permits(frames);
        self.bytes_room.add_permits(bytes);
        self.stats
            .buffered_frames
            .fetch_sub(frames as u64, Ordering::Relaxed);
        self.stats
            .buffered_bytes
            .fetch_sub(bytes as u64, Ordering::Relaxed);
    }

    fn fail(&self, why: String) {
        let mut f = self.failing.lock();
        if f.as_deref() != Some(why.as_str()) {
            tracing::warn!("NATS sink: {why}");
            *f = Some(why);
        }
    }

    fn works(&self) {
        let mut f = self.failing.lock();
        if let Some(why) = f.take() {
            tracing::info!("NATS sink recovered from: {why}");
        }
    }
}

/// A running NATS sink. Frames go in with [`NatsSink::push`] (or
/// [`NatsSink::push_blocking`] from a thread outside the runtime);
/// [`NatsSink::health`] says why it is unhealthy; [`NatsSink::finish`]
/// waits until everything taken is acknowledged.
pub struct NatsSink {
    intake: Option<mpsc::Sender<Vec<Item>>>,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
    runtime: tokio::runtime::Handle,
    template: Template,
    instance: String,
    /// `<boot>-`, random per process: starts the message ids of frames
    /// without a device number, so that they differ from a previous run's.
    id_prefix: String,
    next: u64,
    cache: Mutex<SourceCache>,
}

/// One frame on its way: what its message is made of, to publish (again)
/// the same message.
struct Item {
    /// Its place in the order frames came, for resends.
    n: u64,
    subject: Subject,
    headers: Headers,
    frame: Frame,
    cost: usize,
}

/// A message's headers in parts: the source's, shared by the frames of one
/// source, and the frame's own. The map is made at each publish: once per
/// frame unless it is sent again, where keeping a finished map for resends
/// would cost a second copy of it per frame.
struct Headers {
    /// Listener, node, connection, peer, instance.
    source: Arc<HeaderMap>,
    received_at: HeaderValue,
    seq: Option<u64>,
    id: HeaderValue,
}

impl Headers {
    fn build(&self) -> HeaderMap {
        let mut h = (*self.source).clone();
        h.insert(NAME_RECEIVED_AT, self.received_at.clone());
        if let Some(seq) = self.seq {
            h.insert(NAME_SEQ, HeaderValue::from(seq));
        }
        h.insert(NAME_MSG_ID, self.id.clone());
        h
    }
}

/// The subject and headers of the previous frame's source and time, which
/// the frames of one read share.
struct SourceCache {
    source: Option<Arc<Source>>,
    subject: Subject,
    headers: Arc<HeaderMap>,
    time: Option<SystemTime>,
    time_text: HeaderValue,
}

impl Default for SourceCache {
    fn default() -> Self {
        SourceCache {
            source: None,
            // Replaced with the first frame's.
            subject: Subject::from_static(""),
            headers: Arc::default(),
            time: None,
            time_text: HeaderValue::new(),
        }
    }
}

impl NatsSink {
    /// Starts the sink on `client`: makes sure the stream exists (creates
    /// it when missing and `create` is on, with `default_subjects` unless
    /// subjects are configured), then publishes from a task on the current
    /// runtime. `instance` names this instance in a header and in message
    /// ids. `on_acked` hears of every acknowledged frame, in order.
    ///
    /// When NATS is not reachable yet, the stream is checked in the
    /// background and frames wait in the buffer; a stream that is missing
    /// while `create` is off is an error when it can be seen at start.
    pub async fn start(
        client: async_nats::Client,
        config: NatsSinkConfig,
        instance: String,
        listeners: &[&str],
        on_acked: Option<OnAcked>,
    ) -> Result<NatsSink, NatsError> {
        let template = Template::parse(&config.subject)
            .map_err(|e| NatsError::Config(crate::config::ConfigError::new("subject", e)))?;
        let buffer_bytes = config
            .buffer_bytes
            .0
            .min(Semaphore::MAX_PERMITS)
            .min(u32::MAX as usize);
        let shared = Arc::new(Shared {
            frames_room: Semaphore::new(config.buffer_frames),
            bytes_room: Semaphore::new(buffer_bytes),
            buffer_frames: config.buffer_frames,
            buffer_bytes,
            on_full: config.on_full,
            stats: NatsSinkStats::default(),
            failing: Mutex::new(None),
            waiting: AtomicBool::new(false),
            client: client.clone(),
            connection: std::sync::OnceLock::new(),
        });
        let js_cfg = &config.jetstream;
        let publisher = if js_cfg.enabled {
            let js = jetstream::ContextBuilder::new()
                .timeout(js_cfg.ack_timeout)
                // Its own bound is ours plus room: ours is the one that
                // applies, and publishes never error on its limit.
                .max_ack_inflight(js_cfg.max_acks_in_flight * 2)
                .backpressure_on_inflight(true)
                .build(client.clone());
            let subjects = if js_cfg.subjects.is_empty() {
                template.stream_subjects(listeners.iter().copied())
            } else {
                js_cfg.subjects.clone()
            };
            let stream = stream_config(&config, subjects);
            // Seen at start when NATS is there: a missing stream that must
            // exist stops the start rather than blocking every device.
            let mut known = false;
            if crate::nats::wait_connected(&client, Duration::from_secs(2)).await {
                match ensure_stream(&js, &stream, js_cfg.create).await {
                    Ok(()) => known = true,
                    // A stream that must exist and does not: the start fails.
                    Err(e @ StreamError::Missing(_)) => {
                        return Err(NatsError::JetStream(e.to_string()));
                    }
                    // JetStream not answering yet (a cluster electing its
                    // leader): checked again before the first publish.
                    Err(e) => shared.fail(e.to_string()),
                }
            } else {
                shared.fail("not connected to NATS yet".to_owned());
            }
            Publisher::JetStream {
                js,
                stream: Box::new(stream),
                create: js_cfg.create,
                known,
                max_in_flight: js_cfg.max_acks_in_flight,
                max_bytes: js_cfg.max_ack_bytes.0.max(1),
                ack_timeout: js_cfg.ack_timeout,
            }
        } else {
            Publisher::Core(client)
        };
        let (tx, rx) = mpsc::channel(config.buffer_frames.max(1));
        let task = tokio::spawn(publish_loop(rx, publisher, shared.clone(), on_acked));
        Ok(NatsSink {
            intake: Some(tx),
            shared,
            task: Some(task),
            runtime: tokio::runtime::Handle::current(),
            template,
            instance,
            id_prefix: format!("{:016x}-", fastrand::u64(..)),
            next: 0,
            cache: Mutex::new(SourceCache::default()),
        })
    }

    /// The sink's counters.
    pub fn stats(&self) -> &NatsSinkStats {
        &self.shared.stats
    }

    /// How many frames were taken so far (dropped ones included): frame
    /// `n` is the `n`th taken, as [`Acked::through`] counts.
    pub fn taken(&self) -> u64 {
        self.next
    }

    /// `Err(why)` while the sink cannot publish: not connected, publishes
    /// failing, or the buffer full.
    pub fn health(&self) -> Result<(), String> {
        health(&self.shared)
    }

    /// Names, in [`health`](Self::health), why the connection is down:
    /// the report [`connect_reported`](crate::nats::connect_reported)
    /// returned with the client (the first one given stays).
    pub fn report_connection(&self, report: ConnectionReport) {
        let _ = self.shared.connection.set(report);
    }

    /// A cheap handle that reports the same health and counters, for a
    /// monitor that must not wait on the sink's caller.
    pub fn monitor(&self) -> NatsSinkMonitor {
        NatsSinkMonitor {
            shared: self.shared.clone(),
        }
    }

    fn items(&mut self, frames: &[Frame]) -> Vec<Item> {
        let mut cache = self.cache.lock();
        let mut out = Vec::with_capacity(frames.len());
        for frame in frames {
            let c = &mut *cache;
            if !c
                .source
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, &frame.source))
            {
                let s = &frame.source;
                let node = s.node.as_deref().map(token);
                let mut subject = String::new();
                self.template
                    .render(&token(&s.listener), node.as_deref(), &mut subject);
                let mut h = HeaderMap::new();
                h.insert(NAME_LISTENER, &*s.listener);
                if let Some(node) = &s.node {
                    h.insert(NAME_NODE, &**node);
                }
                h.insert(NAME_CONN, s.conn.to_string());
                h.insert(NAME_PEER, s.peer.to_string());
                h.insert(NAME_INSTANCE, self.instance.as_str());
                c.subject = Subject::from(subject);
                c.headers = Arc::new(h);
                c.source = Some(s.clone());
            }
            if c.time != Some(frame.received_at) {
                c.time = Some(frame.received_at);
                c.time_text = humantime::format_rfc3339_micros(frame.received_at)
                    .to_string()
                    .into();
            }
            self.next += 1;
            let (seq, id) = match (&frame.source.node, frame.seq) {
                // The device's own number: a resend through any instance
                // is stored once within the duplicate window.
                (Some(node), Some(seq)) => (Some(seq.value()), format!("{node}:{}", seq.value())),
                // No number from the device: the id only makes this sink's
                // own resends idempotent.
                _ => {
                    let mut id = String::with_capacity(self.id_prefix.len() + 20);
                    id.push_str(&self.id_prefix);
                    let _ = write!(id, "{}", self.next);
                    (None, id)
                }
            };
            let cost = (frame.payload.len() + OVERHEAD).min(self.shared.buffer_bytes);
            out.push(Item {
                n: self.next,
                subject: c.subject.clone(),
                headers: Headers {
                    source: c.headers.clone(),
                    received_at: c.time_text.clone(),
                    seq,
                    id: id.into(),
                },
                frame: frame.clone(),
                cost,
            });
        }
        out
    }

    /// Takes frames into the buffer: waits for room (`on_full = "block"`)
    /// or drops what does not fit (counted).
    pub async fn push(&mut self, frames: &[Frame]) {
        let mut items = self.items(frames);
        let sh = self.shared.clone();
        match sh.on_full {
            NatsOverflow::Block => {
                for item in &items {
                    let frame = match sh.frames_room.try_acquire() {
                        Ok(p) => Some(p),
                        Err(_) => {
                            sh.waiting.store(true, Ordering::Relaxed);
                            sh.frames_room.acquire().await.ok()
                        }
                    };
                    let bytes = match sh.bytes_room.try_acquire_many(item.cost as u32) {
                        Ok(p) => Some(p),
                        Err(_) => {
                            sh.waiting.store(true, Ordering::Relaxed);
                            sh.bytes_room.acquire_many(item.cost as u32).await.ok()
                        }
                    };
                    sh.waiting.store(false, Ordering::Relaxed);
                    // Given back by `release` once the frame is acknowledged.
                    frame.into_iter().for_each(|p| p.forget());
                    bytes.into_iter().for_each(|p| p.forget());
                    sh.stats.buffered_frames.fetch_add(1, Ordering::Relaxed);
                    sh.stats
                        .buffered_bytes
                        .fetch_add(item.cost as u64, Ordering::Relaxed);
                }
            }
            NatsOverflow::Drop => {
                items.retain(|item| {
                    let Ok(f) = sh.frames_room.try_acquire() else {
                        sh.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        return false;
                    };
                    let Ok(b) = sh.bytes_room.try_acquire_many(item.cost as u32) else {
                        drop(f);
                        sh.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        return false;
                    };
                    f.forget();
                    b.forget();
                    sh.stats.buffered_frames.fetch_add(1, Ordering::Relaxed);
                    sh.stats
                        .buffered_bytes
                        .fetch_add(item.cost as u64, Ordering::Relaxed);
                    true
                });
            }
        }
        if items.is_empty() {
            return;
        }
        if let Some(tx) = &self.intake {
            // Room was taken above for each frame, and the channel holds at
            // least as many batches as the buffer frames: this never waits
            // long.
            let _ = tx.send(items).await;
        }
    }

    /// [`NatsSink::push`] from a thread outside the runtime (a sink
    /// thread), blocking it while the buffer is full.
    pub fn push_blocking(&mut self, frames: &[Frame]) {
        let runtime = self.runtime.clone();
        runtime.block_on(self.push(frames));
    }

    /// Stops taking frames and waits, at most `timeout`, until every frame
    /// taken is acknowledged; what is still held then is counted as
    /// failed. Returns the counters.
    pub async fn finish(&mut self, timeout: Duration) -> &NatsSinkStats {
        self.intake = None;
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(timeout, &mut task).await.is_err()
        {
            task.abort();
            let held = self.shared.stats.buffered_frames.swap(0, Ordering::Relaxed);
            self.shared.stats.failed.fetch_add(held, Ordering::Relaxed);
            tracing::error!(
                frames = held,
                "NATS sink: frames not acknowledged within the drain timeout"
            );
        }
        &self.shared.stats
    }

    /// [`NatsSink::finish`] from a thread outside the runtime.
    pub fn finish_blocking(&mut self, timeout: Duration) {
        let runtime = self.runtime.clone();
        runtime.block_on(async {
            self.finish(timeout).await;
        });
    }
}

/// Health and counters of a [`NatsSink`], readable from anywhere.
#[derive(Clone)]
pub struct NatsSinkMonitor {
    shared: Arc<Shared>,
}

impl NatsSinkMonitor {
    /// See [`NatsSink::health`].
    pub fn health(&self) -> Result<(), String> {
        health(&self.shared)
    }

    /// The sink's counters.
    pub fn stats(&self) -> &NatsSinkStats {
        &self.shared.stats
    }
}

fn health(sh: &Shared) -> Result<(), String> {
    if sh.client.connection_state() != async_nats::connection::State::Connected {
        let why = sh
            .connection
            .get()
            .and_then(ConnectionReport::last_failure)
            .map_or_else(String::new, |why| format!(" ({why})"));
        return Err(format!(
            "not connected to NATS{why}; {} frames buffered",
            sh.stats.buffered_frames.load(Ordering::Relaxed)
        ));
    }
    if let Some(why) = sh.failing.lock().clone() {
        return Err(why);
    }
    if sh.waiting.load(Ordering::Relaxed) {
        return Err(format!(
            "buffer full ({} frames, {} bytes at most): waiting for NATS",
            sh.buffer_frames, sh.buffer_bytes
        ));
    }
    Ok(())
}

enum Publisher {
    JetStream {
        js: jetstream::Context,
        stream: Box<StreamConfig>,
        create: bool,
        /// The stream was found or made at start.
        known: bool,
        max_in_flight: usize,
        max_bytes: usize,
        ack_timeout: Duration,
    },
    Core(async_nats::Client),
}

fn stream_config(config: &NatsSinkConfig, subjects: Vec<String>) -> StreamConfig {
    let js = &config.jetstream;
    StreamConfig {
        name: js.stream.clone(),
        subjects,
        storage: match js.storage {
            StreamStorage::File => StorageType::File,
            StreamStorage::Memory => StorageType::Memory,
        },
        num_replicas: js.replicas,
        max_age: js.max_age.unwrap_or(Duration::ZERO),
        max_bytes: js.max_bytes.map_or(-1, |b| b.0 as i64),
        duplicate_window: js.duplicate_window,
        description: Some("frames received by framehub".to_owned()),
        ..StreamConfig::default()
    }
}

/// Why the stream is not there.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    /// It does not exist and may not be created.
    #[error("{0}")]
    Missing(String),
    /// JetStream did not answer or refused.
    #[error("{0}")]
    Unavailable(String),
}

/// Finds the stream, or creates it when `create` is on.
async fn ensure_stream(
    js: &jetstream::Context,
    stream: &StreamConfig,
    create: bool,
) -> Result<(), StreamError> {
    match js.get_stream(&stream.name).await {
        Ok(mut s) => {
            let info = s
                .info()
                .await
                .map_err(|e| StreamError::Unavailable(e.to_string()))?;
            tracing::info!(
                stream = %stream.name,
                subjects = ?info.config.subjects,
                replicas = info.config.num_replicas,
                "NATS sink: using the existing stream as it is"
            );
            Ok(())
        }
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            if !create {
                return Err(StreamError::Missing(format!(
                    "stream {:?} does not exist, and jetstream.create is off: {e}",
                    stream.name
                )));
            }
            js.create_stream(stream.clone()).await.map_err(|e| {
                StreamError::Unavailable(format!("cannot create stream {:?}: {e}", stream.name))
            })?;
            tracing::info!(
                stream = %stream.name,
                subjects = ?stream.subjects,
                replicas = stream.num_replicas,
                "NATS sink: created the stream"
            );
            Ok(())
        }
        Err(e) => Err(StreamError::Unavailable(format!(
            "cannot look up stream {:?}: {e}",
            stream.name
        ))),
    }
}

/// A publish's acknowledgement on its way (async-nats boxes it already).
type AckFuture = <jetstream::context::PublishAckFuture as std::future::IntoFuture>::IntoFuture;

/// Whether a failed publish can never succeed as it is.
fn is_permanent(e: &jetstream::context::PublishError) -> bool {
    e.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded
}

/// The publisher task: publishes in order, keeps the acks in flight within
/// their bounds, resends what failed, releases the buffer as acks come.
async fn publish_loop(
    rx: mpsc::Receiver<Vec<Item>>,
    publisher: Publisher,
    sh: Arc<Shared>,
    on_acked: Option<OnAcked>,
) {
    match publisher {
        Publisher::Core(client) => core_loop(rx, client, sh, on_acked).await,
        Publisher::JetStream {
            js,
            stream,
            create,
            known,
            max_in_flight,
            max_bytes,
            ack_timeout,
        } => {
            let bounds = Bounds {
                max_in_flight,
                max_bytes,
                ack_timeout,
            };
            let target = Target {
                stream: &stream,
                create,
                known,
            };
            jetstream_loop(rx, js, target, bounds, sh, on_acked).await
        }
    }
}

async fn core_loop(
    mut rx: mpsc::Receiver<Vec<Item>>,
    client: async_nats::Client,
    sh: Arc<Shared>,
    on_acked: Option<OnAcked>,
) {
    while let Some(items) = rx.recv().await {
        let mut frames = Vec::with_capacity(items.len());
        let through = items.last().map_or(0, |i| i.n);
        for item in items {
            let len = item.frame.payload.len() as u64;
            // Waits while the client's own queue is full (reconnecting).
            match client
                .publish_with_headers(
                    item.subject,
                    item.headers.build(),
                    item.frame.payload.clone(),
                )
                .await
            {
                Ok(()) => {
                    sh.stats.published.fetch_add(1, Ordering::Relaxed);
                    sh.stats.bytes.fetch_add(len, Ordering::Relaxed);
                }
                Err(e) => {
                    sh.stats.failed.fetch_add(1, Ordering::Relaxed);
                    sh.fail(format!("core publish failed: {e}"));
                }
            }
            sh.release(1, item.cost);
            frames.push(item.frame);
        }
        if let Some(cb) = &on_acked {
            cb(Acked {
                frames: &frames,
                through,
            });
        }
    }
}

/// The stream publishes go to.
struct Target<'a> {
    stream: &'a StreamConfig,
    create: bool,
    known: bool,
}

struct Bounds {
    max_in_flight: usize,
    max_bytes: usize,
    ack_timeout: Duration,
}

async fn jetstream_loop(
    mut rx: mpsc::Receiver<Vec<Item>>,
    js: jetstream::Context,
    target: Target<'_>,
    bounds: Bounds,
    sh: Arc<Shared>,
    on_acked: Option<OnAcked>,
) {
    let mut pending: VecDeque<Item> = VecDeque::new();
    // Failed publishes, sent again once nothing is in flight.
    let mut retry: Vec<Item> = Vec::new();
    // The acks awaited, and their items in the same order: FuturesOrdered
    // yields in the order futures were pushed.
    let mut in_flight: FuturesOrdered<AckFuture> = FuturesOrdered::new();
    let mut in_flight_items: VecDeque<Item> = VecDeque::new();
    let mut in_flight_bytes = 0usize;
    let mut closed = false;
    let mut backoff = Duration::from_millis(50);
    let Target {
        stream,
        create,
        known: mut stream_known,
    } = target;
    let mut acked: Vec<(u64, Frame)> = Vec::new();
    loop {
        if !stream_known && (!pending.is_empty() || !retry.is_empty()) {
            // NATS was not reachable at start: the stream is checked
            // before the first publish.
            match ensure_stream(&js, stream, create).await {
                Ok(()) => stream_known = true,
                Err(e) => {
                    sh.fail(e.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        while retry.is_empty()
            && in_flight.len() < bounds.max_in_flight
            && in_flight_bytes < bounds.max_bytes
        {
            let Some(item) = pending.pop_front() else {
                break;
            };
            let publish = PublishMessage::build()
                .payload(item.frame.payload.clone())
                .headers(item.headers.build());
            match js.send_publish(item.subject.clone(), publish).await {
                Ok(ack) => {
                    in_flight_bytes += item.cost;
                    in_flight.push_back(ack.into_future());
                    in_flight_items.push_back(item);
                }
                Err(e) if is_permanent(&e) => give_up(&sh, item, &e),
                Err(e) => {
                    sh.fail(format!("cannot publish to stream {:?}: {e}", stream.name));
                    retry.push(item);
                }
            }
        }
        if closed && pending.is_empty() && retry.is_empty() && in_flight.is_empty() {
            return;
        }
        let can_take = !closed && pending.len() < bounds.max_in_flight;
        tokio::select! {
            Some(first) = in_flight.next(), if !in_flight.is_empty() => {
                // Every ack already there is taken in this round: the
                // buffer's room is given back once for all of them.
                let mut released = (0usize, 0usize);
                let mut next = Some(first);
                while let Some(result) = next {
                    // Pushed together with its future, popped in the same order.
                    let Some(item) = in_flight_items.pop_front() else { break };
                    in_flight_bytes -= item.cost;
                    match result {
                        Ok(ack) => {
                            if ack.duplicate {
                                sh.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                            }
                            sh.stats.published.fetch_add(1, Ordering::Relaxed);
                            sh.stats.bytes.fetch_add(item.frame.payload.len() as u64, Ordering::Relaxed);
                            released.0 += 1;
                            released.1 += item.cost;
                            if retry.is_empty() {
                                backoff = Duration::from_millis(50);
                            }
                            acked.push((item.n, item.frame));
                        }
                        Err(e) if is_permanent(&e) => give_up(&sh, item, &e),
                        Err(e) => {
                            sh.fail(format!(
                                "publish to stream {:?} not acknowledged: {e} (ack_timeout {:?}); sending again",
                                stream.name, bounds.ack_timeout
                            ));
                            retry.push(item);
                        }
                    }
                    next = in_flight.next().now_or_never().flatten();
                }
                if released.0 > 0 {
                    sh.release(released.0, released.1);
                    if retry.is_empty() {
                        sh.works();
                    }
                }
                // Reported once per run of acks, in order; none while an
                // earlier frame waits for its resend.
                if retry.is_empty() && !acked.is_empty() {
                    report(&mut acked, on_acked.as_ref());
                }
            }
            batch = rx.recv(), if can_take => match batch {
                Some(items) => pending.extend(items),
                None => closed = true,
            },
            () = tokio::time::sleep(backoff), if in_flight.is_empty() && !retry.is_empty() => {
                backoff = (backoff * 2).min(MAX_BACKOFF);
                // Sent again in the order the frames came, before anything
                // newer.
                retry.sort_by_key(|i| i.n);
                sh.stats.resent.fetch_add(retry.len() as u64, Ordering::Relaxed);
                for item in retry.drain(..).rev() {
                    pending.push_front(item);
                }
            }
        }
    }
}

/// Tells the application which frames are acknowledged, in the order they
/// came (a resent frame is acknowledged after later ones).
fn report(acked: &mut Vec<(u64, Frame)>, on_acked: Option<&OnAcked>) {
    if let Some(cb) = on_acked {
        acked.sort_by_key(|(n, _)| *n);
        let through = acked.last().map_or(0, |(n, _)| *n);
        let frames: Vec<Frame> = acked.drain(..).map(|(_, f)| f).collect();
        cb(Acked {
            frames: &frames,
            through,
        });
    } else {
        acked.clear();
    }
}

fn give_up(sh: &Shared, item: Item, e: &jetstream::context::PublishError) {
    sh.stats.failed.fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        subject = %item.subject,
        bytes = item.frame.payload.len(),
        "NATS sink: frame refused for good, not published: {e}"
    );
    sh.release(1, item.cost);
}

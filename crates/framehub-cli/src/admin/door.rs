//! The admin server's door: the accept loop with its connection cap, TLS,
//! the header and body deadlines, the bearer token, and the counters of
//! everything it turns away.
//!
//! axum's own `serve` has no header timeout and no connection cap, so
//! connections are served here with hyper's HTTP/1 builder: one task per
//! connection holding an owned semaphore permit, tracked for shutdown.
//! Keep-alive is off: every request has its own connection, so an idle
//! scraper never holds one of the `max_connections` slots and a
//! connection that outlives `header_timeout` without a whole request is
//! always a stalled one.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::{AdminConfig, AdminToken};

/// The largest request body read (`POST /api/send`): axum's own default
/// limit, made explicit so a larger one is refused before it is buffered,
/// and counted.
pub const MAX_BODY_BYTES: usize = 2 << 20;

/// Paths answered without a token: load balancers' and orchestrators'
/// health checks often cannot send a header, and these say only whether
/// the listeners accept and the sinks work; they list no peer and command
/// nothing. `/` is the dashboard's page, which holds no figure: it asks
/// for the token and sends it with its API calls.
const OPEN_PATHS: &[&str] = &["/healthz", "/readyz", "/"];

/// How often a warning of one kind may be logged; the others are counted
/// in the next one's `suppressed`.
const WARN_PERIOD: Duration = Duration::from_secs(10);

/// How the door is kept: built from `[admin]` by [`DoorConfig::new`].
#[derive(Clone)]
pub struct DoorConfig {
    /// The bearer token `/metrics` and `/api/*` require, if any.
    pub token: Option<AdminToken>,
    /// HTTPS when set.
    pub tls: Option<TlsAcceptor>,
    /// Connections served at once.
    pub max_connections: usize,
    /// Time for the TLS handshake, and then for a request's headers.
    pub header_timeout: Duration,
    /// Time for a request's whole body.
    pub body_timeout: Duration,
}

impl DoorConfig {
    /// `[admin]` with its token resolved; reads the TLS certificate and
    /// key. Errors name the key at fault.
    pub fn new(cfg: &AdminConfig, token: Option<AdminToken>) -> Result<DoorConfig, String> {
        let tls = match (&cfg.tls.cert, &cfg.tls.key) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        Ok(DoorConfig {
            token,
            tls,
            max_connections: cfg.max_connections,
            header_timeout: cfg.header_timeout,
            body_timeout: cfg.body_timeout,
        })
    }
}

/// A rustls server (the `ring` provider, TLS 1.2 and 1.3) with the
/// certificate chain and key of `[admin.tls]`.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("admin.tls.cert: cannot read {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "admin.tls.cert: no PEM certificate in {}",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("admin.tls.key: cannot read {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("admin.tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("admin.tls: certificate and key do not fit: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What the door turned away, and the connections it holds open.
#[derive(Debug, Default)]
pub struct DoorCounters {
    connections_open: AtomicU64,
    connections_rejected: AtomicU64,
    closed_header_timeout: AtomicU64,
    closed_tls_handshake: AtomicU64,
    rejected_unauthorized: AtomicU64,
    rejected_body_timeout: AtomicU64,
    rejected_body_too_large: AtomicU64,
    rejected_bad_body: AtomicU64,
}

/// One sample of a family in `/metrics`.
struct DoorMetric {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    /// `(key, value)`: samples of one family share the name and the help.
    label: Option<(&'static str, &'static str)>,
    value: fn(&DoorCounters) -> &AtomicU64,
}

/// The door's families, declared once; `/metrics` walks this.
const DOOR_METRICS: &[DoorMetric] = &[
    DoorMetric {
        name: "framehub_admin_connections_open",
        kind: "gauge",
        help: "Connections to the admin server open now.",
        label: None,
        value: |c| &c.connections_open,
    },
    DoorMetric {
        name: "framehub_admin_connections_rejected_total",
        kind: "counter",
        help: "Admin connections closed at once because [admin] max_connections were open.",
        label: None,
        value: |c| &c.connections_rejected,
    },
    DoorMetric {
        name: "framehub_admin_connections_closed_total",
        kind: "counter",
        help: "Admin connections closed before a whole request: headers not read within header_timeout, or a TLS handshake that failed or took longer.",
        label: Some(("reason", "header_timeout")),
        value: |c| &c.closed_header_timeout,
    },
    DoorMetric {
        name: "framehub_admin_connections_closed_total",
        kind: "counter",
        help: "",
        label: Some(("reason", "tls_handshake")),
        value: |c| &c.closed_tls_handshake,
    },
    DoorMetric {
        name: "framehub_admin_requests_rejected_total",
        kind: "counter",
        help: "Admin requests refused: a missing or wrong token (401), a body not read within body_timeout (408), a body over 2 MiB (413), a body cut short or malformed (400).",
        label: Some(("reason", "unauthorized")),
        value: |c| &c.rejected_unauthorized,
    },
    DoorMetric {
        name: "framehub_admin_requests_rejected_total",
        kind: "counter",
        help: "",
        label: Some(("reason", "body_timeout")),
        value: |c| &c.rejected_body_timeout,
    },
    DoorMetric {
        name: "framehub_admin_requests_rejected_total",
        kind: "counter",
        help: "",
        label: Some(("reason", "body_too_large")),
        value: |c| &c.rejected_body_too_large,
    },
    DoorMetric {
        name: "framehub_admin_requests_rejected_total",
        kind: "counter",
        help: "",
        label: Some(("reason", "bad_body")),
        value: |c| &c.rejected_bad_body,
    },
];

impl DoorCounters {
    /// The door's families in the Prometheus text format, appended to
    /// `out`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let mut family = "";
        for m in DOOR_METRICS {
            if m.name != family {
                family = m.name;
                let _ = writeln!(out, "# HELP {} {}", m.name, m.help);
                let _ = writeln!(out, "# TYPE {} {}", m.name, m.kind);
            }
            let value = (m.value)(self).load(Ordering::Relaxed);
            match m.label {
                Some((k, v)) => {
                    let _ = writeln!(out, "{}{{{k}=\"{v}\"}} {value}", m.name);
                }
                None => {
                    let _ = writeln!(out, "{} {value}", m.name);
                }
            }
        }
    }
}

/// Lets one warning through per [`WARN_PERIOD`] and counts the others, so
/// a flood of bad requests cannot flood the log.
#[derive(Default)]
struct WarnLimiter {
    next: parking_lot::Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl WarnLimiter {
    /// `Some(suppressed since the last one)` when a warning may be logged.
    fn check(&self) -> Option<u64> {
        let now = Instant::now();
        let mut next = self.next.lock();
        if next.is_some_and(|t| now < t) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *next = Some(now + WARN_PERIOD);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// What every connection task and every request's gate share.
pub struct Door {
    config: DoorConfig,
    counters: Arc<DoorCounters>,
    refused_warning: WarnLimiter,
    closed_warning: WarnLimiter,
    request_warning: WarnLimiter,
    accept_warning: WarnLimiter,
}

impl Door {
    /// A door keeping `counters`, which `/metrics` also reads.
    pub fn new(config: DoorConfig, counters: Arc<DoorCounters>) -> Arc<Door> {
        Arc::new(Door {
            config,
            counters,
            refused_warning: WarnLimiter::default(),
            closed_warning: WarnLimiter::default(),
            request_warning: WarnLimiter::default(),
            accept_warning: WarnLimiter::default(),
        })
    }

    /// Whether `request` carries the token (always, when none is set).
    /// The comparison takes the same time whatever the request holds, so
    /// the token cannot be guessed byte by byte.
    fn is_authorized(&self, request: &Request) -> bool {
        let Some(token) = &self.config.token else {
            return true;
        };
        let expected = token.expose();
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .and_then(|v| {
                // The scheme is case-insensitive (RFC 6750).
                let (scheme, rest) = v.split_at_checked(7)?;
                scheme.eq_ignore_ascii_case(b"Bearer ").then_some(rest)
            })
            .unwrap_or_default();
        // Compared over the expected length whatever the given one, so the
        // time does not depend on how much of the token a guess has right.
        let mut padded = vec![0u8; expected.len()];
        let n = given.len().min(expected.len());
        padded[..n].copy_from_slice(&given[..n]);
        let same_len = (given.len() as u64).ct_eq(&(expected.len() as u64));
        bool::from(padded.as_slice().ct_eq(expected) & same_len)
    }

    fn warn_request(&self, peer: SocketAddr, path: &str, status: StatusCode, why: &str) {
        if let Some(suppressed) = self.request_warning.check() {
            tracing::warn!(%peer, path, status = status.as_u16(), suppressed, "admin request refused: {why}");
        }
    }
}

/// A response that also closes the connection: what follows the refused
/// request on it cannot be trusted to be a new request.
fn refuse(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONNECTION, "close")], text).into_response()
}

/// The middleware every request passes: the token (except on
/// [`OPEN_PATHS`]), then the whole body within `body_timeout` and
/// [`MAX_BODY_BYTES`], so no handler ever waits on a slow client.
pub async fn gate(State(door): State<Arc<Door>>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let path = request.uri().path().to_owned();
    if OPEN_PATHS.contains(&path.as_str()) {
        return next.run(request).await;
    }
    if !door.is_authorized(&request) {
        door.counters
            .rejected_unauthorized
            .fetch_add(1, Ordering::Relaxed);
        door.warn_request(
            peer,
            &path,
            StatusCode::UNAUTHORIZED,
            "missing or wrong token",
        );
        let mut response = refuse(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send Authorization: Bearer <[admin] token>\n",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"framehub\""),
        );
        return response;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        door.counters
            .rejected_body_too_large
            .fetch_add(1, Ordering::Relaxed);
        door.warn_request(
            peer,
            &path,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body over 2 MiB",
        );
        refuse(StatusCode::PAYLOAD_TOO_LARGE, "body over 2 MiB\n")
    };
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let read = Limited::new(body, MAX_BODY_BYTES).collect();
    let bytes = match tokio::time::timeout(door.config.body_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => return too_large(),
        // The client went away or sent a malformed chunk.
        Ok(Err(_)) => {
            door.counters
                .rejected_bad_body
                .fetch_add(1, Ordering::Relaxed);
            return refuse(StatusCode::BAD_REQUEST, "cannot read the body\n");
        }
        Err(_) => {
            door.counters
                .rejected_body_timeout
                .fetch_add(1, Ordering::Relaxed);
            door.warn_request(
                peer,
                &path,
                StatusCode::REQUEST_TIMEOUT,
                "body not received within [admin] body_timeout",
            );
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                "body not received within [admin] body_timeout\n",
            );
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Accepts until `shutdown` is cancelled, then lets the connections in
/// flight finish their requests.
pub async fn run(
    listener: tokio::net::TcpListener,
    app: Router,
    door: Arc<Door>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(door.config.max_connections));
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = Duration::from_millis(10);
                accepted
            }
            Err(e) => {
                // Out of file descriptors, most likely: wait a little
                // rather than spin, longer each time.
                if let Some(suppressed) = door.accept_warning.check() {
                    tracing::warn!(error = %e, suppressed, "admin: accept failed");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Dropped at once: the accept loop never waits for a slot.
            door.counters
                .connections_rejected
                .fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = door.refused_warning.check() {
                tracing::warn!(%peer, suppressed, max_connections = door.config.max_connections, "admin connection refused: max_connections open");
            }
            continue;
        };
        let (app, door, shutdown) = (app.clone(), door.clone(), shutdown.clone());
        tracker.spawn(async move {
            door.counters
                .connections_open
                .fetch_add(1, Ordering::Relaxed);
            handle(stream, peer, app, &door, shutdown).await;
            door.counters
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// One connection: the TLS handshake if any, then one HTTP/1 request.
async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    door: &Door,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = &door.config.tls else {
        return serve_http(stream, peer, app, door, shutdown).await;
    };
    let handshake = tokio::time::timeout(door.config.header_timeout, tls.accept(stream));
    let why = tokio::select! {
        result = handshake => match result {
            Ok(Ok(stream)) => return serve_http(stream, peer, app, door, shutdown).await,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no TLS handshake within [admin] header_timeout".to_owned(),
        },
        // No request has started: nothing to finish.
        () = shutdown.cancelled() => return,
    };
    door.counters
        .closed_tls_handshake
        .fetch_add(1, Ordering::Relaxed);
    if let Some(suppressed) = door.closed_warning.check() {
        tracing::warn!(%peer, suppressed, "admin connection closed: TLS handshake: {why}");
    }
}

async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    door: &Door,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(request.map(Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(door.config.header_timeout)
        .keep_alive(false);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result
        && e.is_timeout()
    {
        door.counters
            .closed_header_timeout
            .fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = door.closed_warning.check() {
            tracing::warn!(%peer, suppressed, "admin connection closed: no whole request headers within [admin] header_timeout");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn door(token: Option<&str>) -> Arc<Door> {
        let cfg = AdminConfig {
            token: token.map(str::to_owned),
            ..AdminConfig::default()
        };
        let token = cfg.resolve_token(None).expect("token");
        Door::new(DoorConfig::new(&cfg, token).expect("door"), Arc::default())
    }

    fn request(authorization: Option<&str>) -> Request {
        let mut r = Request::new(Body::empty());
        if let Some(a) = authorization {
            r.headers_mut().insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(a).expect("value"),
            );
        }
        r
    }

    #[test]
    fn only_the_exact_bearer_token_is_authorized() {
        let d = door(Some("s3cret-token"));
        assert!(d.is_authorized(&request(Some("Bearer s3cret-token"))));
        assert!(d.is_authorized(&request(Some("bearer s3cret-token"))));
        for bad in [
            None,
            Some("Bearer"),
            Some("Bearer "),
            Some("Bearer s3cret-toke"),
            Some("Bearer s3cret-token2"),
            Some("Bearer S3cret-token"),
            Some("Basic s3cret-token"),
            Some("s3cret-token"),
        ] {
            assert!(!d.is_authorized(&request(bad)), "{bad:?}");
        }
        assert!(door(None).is_authorized(&request(None)));
    }

    #[test]
    fn every_door_family_has_help_and_type_once() {
        let mut out = String::new();
        DoorCounters::default().render(&mut out);
        let mut seen = std::collections::HashSet::new();
        for m in DOOR_METRICS {
            if seen.insert(m.name) {
                assert!(
                    !m.help.is_empty(),
                    "{}: first sample carries the help",
                    m.name
                );
                assert_eq!(out.matches(&format!("# TYPE {} ", m.name)).count(), 1);
            }
            assert_eq!(
                m.name.ends_with("_total"),
                m.kind == "counter",
                "{}",
                m.name
            );
        }
        assert_eq!(
            out.lines().filter(|l| !l.starts_with('#')).count(),
            DOOR_METRICS.len()
        );
    }
}

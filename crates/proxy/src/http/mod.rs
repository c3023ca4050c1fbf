//! Layer-7 proxying: HTTP/1.x and h2 clients, HTTP/1.1 keep-alive to backends.
//!
//! A client connection is served by one of two paths, chosen once per connection:
//!
//! - [`h1`], for HTTP/1.0 and 1.1 clients (nearly all traffic): lintas's own forwarding loop.
//!   Heads are parsed with `httparse` and rewritten in one pass, bodies pass through in the
//!   framing they arrive in, and the request, response and backend connection stay in the
//!   client's task — no intermediate request objects, no channel hops. WebSocket upgrades
//!   become a byte tunnel.
//! - [`h2`], for h2 clients (ALPN `h2` over TLS, or the h2c preface in clear): hyper's server
//!   and client, with HTTP/1.1 to the backend.
//!
//! Both share the retry policy ([`Attempts`]): a failed connect is retried on another backend
//! whatever the method (nothing was sent); a failure after the request was sent is retried
//! only for idempotent methods without a body; 5xx answers and timeouts count as passive
//! health failures. The backend's in-flight slot ([`balance::Lease`]) is held until the
//! response body has been sent, so least-connections sees whole requests.

pub(crate) mod error_pages;
mod h1;
mod h2;
mod idle_pool;
mod paced;
mod rewind;
pub(crate) mod upstream;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use balance::{Backend, HashKey, Lease, Pool, Refusal, StrategyKind};
use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::access_log::{Record, RequestLine, Trace};
pub(crate) use crate::attempts::Attempts;
use crate::listener::{ActiveGuard, ListenerHandle, ListenerSettings};
use crate::tcp::client_ip_key;

pub(crate) use h1::ConnPool;
use upstream::Upstream;

/// What opens an HTTP/2 connection in clear text (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What every request of one client connection shares.
pub(crate) struct ConnCtx {
    peer: SocketAddr,
    /// The client's IP as text, made once per connection for X-Forwarded-For.
    peer_ip: String,
    tls: bool,
    handle: Arc<ListenerHandle>,
    /// Backend connections of the HTTP/1 path, this worker's.
    conns: Arc<ConnPool>,
    /// Backend connections of the h2 path (hyper's client).
    upstream: Arc<Upstream>,
}

/// The backend connection pools a listener's connections use.
#[derive(Debug, Clone, Default)]
pub(crate) struct Backends {
    /// HTTP/1 path: the pool of the worker the connection lives on.
    pub conns: Arc<ConnPool>,
    /// h2 path: shared.
    pub upstream: Arc<Upstream>,
}

impl Backends {
    /// One set of pools per worker; the h2 pool is shared by all.
    pub(crate) fn per_worker(workers: usize) -> Vec<Self> {
        let upstream = Arc::new(Upstream::default());
        (0..workers)
            .map(|_| Self {
                conns: Arc::default(),
                upstream: upstream.clone(),
            })
            .collect()
    }
}

/// Serves one client connection of a `mode = "http"` listener, TLS first when configured.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    handle: Arc<ListenerHandle>,
    active: ActiveGuard,
    backends: Backends,
    shutdown: CancellationToken,
) {
    let (acceptor, cfg) = {
        let settings = handle.settings.load();
        (settings.tls.clone(), settings.cfg.clone())
    };
    let ctx = |tls| ConnCtx {
        peer,
        peer_ip: peer.ip().to_string(),
        tls,
        handle: handle.clone(),
        conns: backends.conns.clone(),
        upstream: backends.upstream.clone(),
    };
    match acceptor {
        Some(acceptor) => match timeout(cfg.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    h2::serve(tls, ctx(true), shutdown).await;
                } else {
                    h1::serve(tls, BytesMut::new(), None, &ctx(true), &shutdown).await;
                }
            }
            Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => debug!(%peer, "TLS handshake not finished within handshake_timeout"),
        },
        None => {
            let mut stream = stream;
            let mut buf = BytesMut::with_capacity(4096);
            // Read until the first bytes rule the h2c preface in or out: the first byte may
            // take `idle_timeout`, the rest of the preface counts as a request head.
            let idle = Instant::now() + cfg.idle_timeout;
            let mut head = None;
            while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
                let read = tokio::select! {
                    r = tokio::time::timeout_at(head.unwrap_or(idle), stream.read_buf(&mut buf)) => r,
                    _ = shutdown.cancelled() => return,
                };
                match read {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return,
                }
                head.get_or_insert_with(|| Instant::now() + cfg.head_timeout);
            }
            if buf.starts_with(H2_PREFACE) {
                h2::serve(
                    rewind::Rewind::new(buf.freeze(), stream),
                    ctx(false),
                    shutdown,
                )
                .await;
            } else {
                h1::serve(stream, buf, head, &ctx(false), &shutdown).await;
            }
        }
    }
    drop(active);
}

/// The balancing key of a request: the client IP, or what the request path extracted from a
/// header or cookie (`from_request`), when the pool hashes.
fn balancing_key(
    pool: &Pool,
    peer: SocketAddr,
    from_request: impl FnOnce(&HashKey) -> Option<u64>,
) -> Option<u64> {
    let state = pool.state();
    if state.kind != StrategyKind::ConsistentHash {
        return None;
    }
    match state.hash_key.as_ref()? {
        HashKey::ClientIp => Some(client_ip_key(peer)),
        key => from_request(key),
    }
}

/// Value of cookie `name` in one `Cookie` header value.
fn cookie<'a>(value: &'a [u8], name: &str) -> Option<&'a [u8]> {
    value.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
    })
}

/// Headers lintas sets or frames by; their spellings with `_` for `-` are dropped.
const UNDERSCORE_TWINS: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "host",
    "content-length",
    "transfer-encoding",
];

/// Whether `name` spells a header lintas sets or frames by with underscores
/// (`X_Forwarded_For`): CGI-style backends (WSGI, PHP, Rack) read `_` and `-` as the same
/// character, so such a header would reach them as the one lintas wrote (nginx drops
/// every header with an underscore for the same reason).
pub(crate) fn is_underscore_twin(name: &str) -> bool {
    name.contains('_')
        && UNDERSCORE_TWINS.iter().any(|t| {
            t.len() == name.len()
                && t.bytes()
                    .zip(name.bytes())
                    .all(|(t, n)| t == n.to_ascii_lowercase() || (t == b'-' && n == b'_'))
        })
}

/// Safe to send twice (RFC 9110 §9.2.2): only such requests are replayed after a failure.
fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// An answer lintas gives itself when it has no backend's answer to pass on: the status,
/// what the access log calls it, and a plain-text body for the client. Bodies say what
/// happened and never name a backend, an address or a pool (HAProxy shows neither); the
/// names are in the debug log and the access log's `pool`, `backend` and `upstream`.
#[derive(Debug)]
pub(crate) struct OwnAnswer {
    pub status: u16,
    /// The access log's `error`.
    pub error: &'static str,
    pub body: Cow<'static, str>,
}

impl OwnAnswer {
    pub(crate) fn new(
        status: u16,
        error: &'static str,
        body: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            error,
            body: body.into(),
        }
    }

    /// 400 for a request lintas cannot forward; `why` is about the client's own bytes.
    pub(crate) fn bad_request(why: &str) -> Self {
        Self::new(400, "bad_request", format!("bad request: {why}\n"))
    }

    /// 408 for a request body that stopped or crawled.
    pub(crate) fn body_timeout(why: &str) -> Self {
        Self::new(408, "body_timeout", format!("request timeout: {why}\n"))
    }

    /// 502 after a backend failed once a request that cannot be replayed was sent.
    pub(crate) fn failed_after_send(backend: &Backend) -> Self {
        debug!(
            backend = backend.name(),
            addr = %backend.addr(),
            "backend failed after a request that cannot be replayed was sent"
        );
        Self::new(
            502,
            "backend_failed",
            "bad gateway: the server failed after the request was sent; requests that are \
             not idempotent or have a body are not retried\n",
        )
    }

    /// 502 for a response that is not HTTP/1.
    pub(crate) fn bad_response(backend: &Backend, why: &str) -> Self {
        debug!(backend = backend.name(), addr = %backend.addr(), %why, "invalid response from the backend");
        Self::new(
            502,
            "bad_response",
            "bad gateway: the server sent an invalid response\n",
        )
    }
}

/// What an HTTP exchange makes of its walk over the backends.
impl Attempts<'_> {
    /// The backend answered; a 5xx counts against its health.
    fn answered(&self, lease: &Lease, status: u16) {
        self.succeeded(lease, status < 500);
    }

    /// The answer once no attempt is left: no backend was available at all, every one was
    /// full and the queue would not take or keep the request, or none of those tried could
    /// be reached.
    fn exhausted(&self) -> OwnAnswer {
        let pool = self.pool.name();
        let (tried, refusal) = self.give_up();
        debug!(pool, tried, ?refusal, "no backend answer for the request");
        match refusal {
            Some(Refusal::QueueFull { .. }) => OwnAnswer::new(
                503,
                "queue_full",
                "service unavailable: every server is busy and the wait queue is full\n",
            ),
            Some(Refusal::Timeout { .. }) => OwnAnswer::new(
                503,
                "queue_timeout",
                "service unavailable: no server became free in time\n",
            ),
            _ if tried > 0 && self.timed_out => timeout_answer(),
            _ if tried > 0 => OwnAnswer::new(
                502,
                "connect_failed",
                "bad gateway: no server could be reached\n",
            ),
            _ => OwnAnswer::new(
                self.cfg.no_backend_status,
                "no_backend",
                "no server is available to handle this request\n",
            ),
        }
    }

    /// The answer when the backend did not send its response head in time.
    fn timed_out(&mut self, lease: &Lease) -> OwnAnswer {
        self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
        self.failed(lease);
        let backend = lease.backend();
        debug!(
            backend = backend.name(),
            addr = %backend.addr(),
            after = %configkit::format_duration(self.cfg.request_timeout),
            "no response head within request_timeout"
        );
        self.timed_out = true;
        timeout_answer()
    }
}

/// The answer when the backend did not send its response head within `request_timeout`.
fn timeout_answer() -> OwnAnswer {
    OwnAnswer::new(
        504,
        "backend_timeout",
        "gateway timeout: the server did not answer in time\n",
    )
}

/// Writes the access log line of one HTTP request, when the listener logs; `route` and
/// `request_id` are the request's, `request` its line (`None` when the head was unreadable).
pub(crate) fn log_request(
    ctx: &ConnCtx,
    settings: &ListenerSettings,
    time: SystemTime,
    request: Option<RequestLine<'_>>,
    route: Option<usize>,
    request_id: Option<&str>,
    trace: &Trace,
) {
    let Some(log) = &settings.access_log else {
        return;
    };
    let record = Record {
        time,
        client: ctx.peer,
        listener: &ctx.handle.info.name,
        request,
        tcp: false,
        status: trace.status,
        bytes_sent: trace.body_sent,
        bytes_received: trace.body_received,
        pool: settings.router.pool(route, &settings.pool).name(),
        route: route
            .and_then(|i| settings.router.routes.get(i))
            .map(|r| r.label.as_str()),
        backend: trace.backend.as_deref(),
        connect: trace.connect,
        response: trace.response,
        total: trace.elapsed().unwrap_or_default(),
        request_id,
        retries: trace.retries,
        error: trace.error,
    };
    log.write(&record, &ctx.handle.info.stats.access_log_dropped);
}

/// Reason phrase for the statuses lintas writes itself.
fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

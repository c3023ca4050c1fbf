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

mod h1;
mod h2;
mod idle_pool;
mod paced;
mod rewind;
pub(crate) mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use balance::{Backend, HashKey, Lease, Pool, Refusal, StrategyKind};
use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub(crate) use crate::attempts::Attempts;
use crate::listener::{ActiveGuard, ListenerHandle};
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

/// What an HTTP exchange makes of its walk over the backends.
impl Attempts<'_> {
    /// The backend answered; a 5xx counts against its health.
    fn answered(&self, lease: &Lease, status: u16) {
        self.succeeded(lease, status < 500);
    }

    /// The answer once no attempt is left: no backend was available at all, every one was
    /// full and the queue would not take or keep the request, or none of those tried could
    /// be reached.
    fn exhausted(&self) -> (u16, String) {
        let pool = self.pool.name();
        match self.give_up() {
            (_, Some(Refusal::QueueFull { size })) => (
                503,
                format!(
                    "service unavailable: every backend of pool `{pool}` is at its \
                     max_connections and {size} requests already wait (queue_size)\n"
                ),
            ),
            (_, Some(Refusal::Timeout { timeout })) => (
                503,
                format!(
                    "service unavailable: no backend of pool `{pool}` had room within {} \
                     (queue_timeout)\n",
                    configkit::format_duration(timeout)
                ),
            ),
            (0, _) => (
                self.cfg.no_backend_status,
                format!("no backend available in pool `{pool}`\n"),
            ),
            (_, None) if self.last_timeout.is_some() => {
                self.last_timeout.clone().unwrap_or_default()
            }
            (tried, _) => (
                502,
                format!(
                    "bad gateway: no backend of pool `{pool}` could be reached ({tried} tried)\n"
                ),
            ),
        }
    }

    /// The answer when the backend did not send its response head in time.
    fn timed_out(&mut self, lease: &Lease) -> (u16, String) {
        self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
        self.failed(lease);
        let answer = (
            504,
            timeout_message(lease.backend(), self.cfg.request_timeout),
        );
        self.last_timeout = Some(answer.clone());
        answer
    }
}

fn timeout_message(backend: &Backend, after: Duration) -> String {
    format!(
        "gateway timeout: backend `{}` did not answer within {}\n",
        backend.name(),
        configkit::format_duration(after)
    )
}

/// The answer when a backend failed after a request that cannot be replayed was sent.
fn failed_after_send(backend: &Backend) -> (u16, String) {
    let message = format!(
        "bad gateway: backend `{}` failed after the request was sent; \
         requests that are not idempotent or have a body are not retried\n",
        backend.name()
    );
    (502, message)
}

/// Reason phrase for the statuses lintas writes itself.
fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

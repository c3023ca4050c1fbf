//! Layer-7 proxying: HTTP/1.1 and h2 from clients, HTTP/1.1 keep-alive to backends.
//!
//! Per request: choose a backend (consistent hashing hashes the client IP, a header or a
//! cookie), check out a pooled connection, forward the request with hop-by-hop headers
//! removed and `X-Forwarded-For`/`-Proto` added, and stream the response back. The backend's
//! in-flight slot ([`balance::Lease`]) is held until the response body has been sent, so
//! least-connections sees requests, not just header exchanges.
//!
//! Retries: a failed connect is retried on another backend whatever the method (nothing was
//! sent); a request lost on a pooled connection the backend had already closed is retried
//! on a new connection (hyper hands the unsent request back); a failure *after* the request
//! was sent is retried only for idempotent methods without a body. 5xx answers and timeouts
//! count as passive health failures. Malformed requests are answered 400 and oversized heads
//! 431 by hyper before they reach this module; neither affects other connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use balance::{Backend, HashKey, Lease, Outcome, StrategyKind, hash_key};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::listener::{ActiveGuard, ListenerHandle, ListenerSettings};
use crate::tcp::client_ip_key;
use crate::upstream::{ReqBody, Sender, Upstream};

/// What every request of one client connection shares.
struct ConnCtx {
    peer: SocketAddr,
    /// The client's IP as a header value, made once per connection for X-Forwarded-For.
    peer_ip: HeaderValue,
    tls: bool,
    handle: Arc<ListenerHandle>,
    upstream: Arc<Upstream>,
    tracker: TaskTracker,
}

impl ConnCtx {
    fn new(
        peer: SocketAddr,
        tls: bool,
        handle: Arc<ListenerHandle>,
        upstream: Arc<Upstream>,
        tracker: TaskTracker,
    ) -> Self {
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            peer,
            peer_ip,
            tls,
            handle,
            upstream,
            tracker,
        }
    }
}

/// Serves one client connection of a `mode = "http"` listener, TLS first when configured.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    handle: Arc<ListenerHandle>,
    active: ActiveGuard,
    upstream: Arc<Upstream>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let (acceptor, max_head) = {
        let settings = handle.settings.load();
        (settings.tls.clone(), settings.cfg.max_header_bytes)
    };
    match acceptor {
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(tls) => {
                let ctx = ConnCtx::new(peer, true, handle, upstream, tracker);
                serve_io(tls, ctx, max_head, shutdown).await;
            }
            Err(e) => debug!(%peer, error = %e, "TLS handshake failed"),
        },
        None => {
            let ctx = ConnCtx::new(peer, false, handle, upstream, tracker);
            serve_io(stream, ctx, max_head, shutdown).await;
        }
    }
    drop(active);
}

async fn serve_io<I>(io: I, ctx: ConnCtx, max_head: usize, shutdown: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ctx = Arc::new(ctx);
    let svc = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle_request(req, &ctx).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // One flattened send per response costs less than writev's vectored path.
        .writev(false)
        .max_buf_size(max_head.max(8192));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(error = %e, "client connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            // Finish the request in flight, then close; keep-alive ends here.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn handle_request(req: Request<Incoming>, ctx: &ConnCtx) -> Response<ProxyBody> {
    let settings = ctx.handle.settings.load();
    let stats = &ctx.handle.info.stats;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let resp = forward(req, ctx, &settings).await;
    stats.count_status(resp.status().as_u16());
    resp
}

/// Sends `req` to a backend of the listener's pool, with retries; always returns a response.
async fn forward(
    mut req: Request<Incoming>,
    ctx: &ConnCtx,
    settings: &ListenerSettings,
) -> Response<ProxyBody> {
    let stats = &ctx.handle.info.stats;
    let pool = &settings.pool;
    let cfg = &settings.cfg;
    let key = balancing_key(&req, ctx.peer, pool);
    let upgrade = is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    prepare_request(&mut req, &ctx.peer_ip, ctx.tls, upgrade);

    let (parts, body) = req.into_parts();
    let replayable = body.is_end_stream() && is_idempotent(&parts.method);
    let saved = replayable.then(|| clone_parts(&parts));
    let mut parts = Some(parts);
    let mut body: Option<ReqBody> = Some(if body.is_end_stream() {
        Either::Right(Empty::new())
    } else {
        Either::Left(body)
    });

    let mut tried: Vec<Arc<Backend>> = Vec::new();
    for attempt in 0..=cfg.retries {
        let Some(lease) = pool.pick(key, &tried) else {
            break;
        };
        let backend = lease.backend().clone();
        if attempt > 0 {
            stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        let checkout = if upgrade {
            ctx.upstream
                .connect_upgradable(backend.addr(), cfg.connect_timeout)
                .await
        } else {
            ctx.upstream
                .checkout(backend.addr(), cfg.connect_timeout)
                .await
        };
        let mut sender = match checkout {
            Ok(s) => s,
            Err(e) => {
                debug!(backend = backend.name(), error = %e, "backend connect failed");
                stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                fail(pool, &lease);
                tried.push(backend);
                continue;
            }
        };
        let (Some(p), Some(b)) = (parts.take(), body.take()) else {
            break;
        };
        let sent = tokio::time::timeout(
            cfg.request_timeout,
            sender.try_send_request(Request::from_parts(p, b)),
        )
        .await;
        match sent {
            Ok(Ok(resp)) => {
                let ok = !resp.status().is_server_error();
                lease.record(if ok {
                    Outcome::Success
                } else {
                    Outcome::Failure
                });
                pool.report_traffic(&backend, ok);
                return respond(resp, lease, sender, client_upgrade, ctx);
            }
            Ok(Err(mut e)) => {
                debug!(backend = backend.name(), error = %e.error(), "backend request failed");
                if let Some(unsent) = e.take_message() {
                    // The pooled connection was closed before the request left: nothing was
                    // sent, so any method may go again, on a fresh connection.
                    let (p, b) = unsent.into_parts();
                    parts = Some(p);
                    body = Some(b);
                    continue;
                }
                fail(pool, &lease);
                tried.push(backend.clone());
                match &saved {
                    Some(p) => {
                        parts = Some(clone_parts(p));
                        body = Some(Either::Right(Empty::new()));
                    }
                    None => {
                        return error_response(
                            StatusCode::BAD_GATEWAY,
                            &format!(
                                "bad gateway: backend `{}` failed after the request was sent; \
                                 requests that are not idempotent or have a body are not retried\n",
                                backend.name()
                            ),
                        );
                    }
                }
            }
            Err(_) => {
                stats.timeouts.fetch_add(1, Ordering::Relaxed);
                fail(pool, &lease);
                return error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!(
                        "gateway timeout: backend `{}` did not answer within {}\n",
                        backend.name(),
                        configkit::format_duration(cfg.request_timeout)
                    ),
                );
            }
        }
    }
    if tried.is_empty() {
        stats.no_backend.fetch_add(1, Ordering::Relaxed);
        let status =
            StatusCode::from_u16(cfg.no_backend_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return error_response(
            status,
            &format!("no backend available in pool `{}`\n", pool.name()),
        );
    }
    error_response(
        StatusCode::BAD_GATEWAY,
        &format!(
            "bad gateway: no backend of pool `{}` could be reached ({} tried)\n",
            pool.name(),
            tried.len()
        ),
    )
}

/// Records a failed attempt on a backend: latency penalty and passive health.
fn fail(pool: &balance::Pool, lease: &Lease) {
    lease.record(Outcome::Failure);
    pool.report_traffic(lease.backend(), false);
}

/// Turns the backend's response into the client's, tunnelling upgraded connections.
fn respond(
    mut resp: Response<Incoming>,
    lease: Lease,
    sender: Sender,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ctx: &ConnCtx,
) -> Response<ProxyBody> {
    if let (Some(client), StatusCode::SWITCHING_PROTOCOLS) = (client_upgrade, resp.status()) {
        let server = hyper::upgrade::on(&mut resp);
        ctx.tracker.spawn(async move {
            // The lease lives as long as the tunnel: a WebSocket is a connection in flight.
            let _lease = lease;
            let (Ok(client), Ok(server)) = tokio::join!(client, server) else {
                return;
            };
            let (mut c, mut s) = (TokioIo::new(client), TokioIo::new(server));
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut s).await {
                debug!(error = %e, "upgraded connection ended with an error");
            }
        });
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, ProxyBody::fixed(Bytes::new()));
    }
    let addr = lease.backend().addr();
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let mut body = ProxyBody {
        inner: Inner::Upstream(body),
        lease: Some(lease),
        recycle: Some((ctx.upstream.clone(), addr, sender)),
    };
    if body.inner_is_end() {
        body.finish(true);
    }
    Response::from_parts(parts, body)
}

/// The hashed balancing key when the pool hashes; `None` otherwise or when absent.
fn balancing_key(req: &Request<Incoming>, peer: SocketAddr, pool: &balance::Pool) -> Option<u64> {
    let state = pool.state();
    if state.kind != StrategyKind::ConsistentHash {
        return None;
    }
    match state.hash_key.as_ref()? {
        HashKey::ClientIp => Some(client_ip_key(peer)),
        HashKey::Header(name) => req
            .headers()
            .get(name.as_str())
            .map(|v| hash_key(v.as_bytes())),
        HashKey::Cookie(name) => cookie(req.headers(), name).map(hash_key),
    }
}

/// Value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v, "upgrade"))
}

fn has_token(v: &HeaderValue, token: &str) -> bool {
    v.to_str()
        .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        .unwrap_or(false)
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn clone_parts(p: &Parts) -> Parts {
    let mut req = Request::new(());
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = p.uri.clone();
    *req.version_mut() = p.version;
    *req.headers_mut() = p.headers.clone();
    req.into_parts().0
}

/// Headers that describe one connection and must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Rewrites a client request into the one the backend gets.
fn prepare_request(req: &mut Request<Incoming>, peer_ip: &HeaderValue, tls: bool, upgrade: bool) {
    let upgrade_value = upgrade
        .then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten();
    // h2 clients send :authority instead of Host; HTTP/1.1 backends need Host.
    if !req.headers().contains_key(header::HOST)
        && let Some(host) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(header::HOST, host);
    }
    let h = req.headers_mut();
    strip_hop_by_hop(h);
    if let Some(v) = upgrade_value {
        h.insert(header::UPGRADE, v);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let xff_name = HeaderName::from_static("x-forwarded-for");
    let xff = match h.get(&xff_name).and_then(|v| v.to_str().ok()) {
        Some(prev) => {
            let appended = format!("{prev}, {}", peer_ip.to_str().unwrap_or_default());
            HeaderValue::from_str(&appended).ok()
        }
        None => Some(peer_ip.clone()),
    };
    if let Some(v) = xff {
        h.insert(xff_name, v);
    }
    h.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    // Backends get origin-form over HTTP/1.1 whatever the client spoke.
    let origin = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    if let Ok(uri) = origin.parse::<Uri>() {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = Version::HTTP_11;
}

/// A short plain-text answer lintas gives itself.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::fixed(Bytes::from(message.to_owned())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

enum Inner {
    Upstream(Incoming),
    Fixed(Option<Bytes>),
}

/// The body sent to clients: the backend's, streamed, or a fixed one lintas wrote.
///
/// While the backend's body streams it holds the backend's lease; when it ends cleanly the
/// backend connection goes back to the pool.
pub(crate) struct ProxyBody {
    inner: Inner,
    lease: Option<Lease>,
    recycle: Option<(Arc<Upstream>, SocketAddr, Sender)>,
}

impl ProxyBody {
    fn fixed(b: Bytes) -> Self {
        Self {
            inner: Inner::Fixed(Some(b)),
            lease: None,
            recycle: None,
        }
    }

    fn inner_is_end(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Fixed(b) => b.is_none(),
        }
    }

    /// Releases the lease; on a clean end, recycles the backend connection.
    fn finish(&mut self, clean: bool) {
        if let Some((upstream, addr, sender)) = self.recycle.take()
            && clean
        {
            upstream.checkin(addr, sender);
        }
        self.lease = None;
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Fixed(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream(body) => {
                let frame = ready!(Pin::new(body).poll_frame(cx));
                match &frame {
                    None => this.finish(true),
                    Some(Err(_)) => this.finish(false),
                    Some(Ok(_)) if this.inner_is_end() => this.finish(true),
                    Some(Ok(_)) => {}
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner_is_end()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Fixed(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_lookup() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; sid=xyz"));
        h.append(header::COOKIE, HeaderValue::from_static("other=2"));
        assert_eq!(cookie(&h, "sid"), Some(&b"xyz"[..]));
        assert_eq!(cookie(&h, "other"), Some(&b"2"[..]));
        assert_eq!(cookie(&h, "si"), None);
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept"]);
    }
}

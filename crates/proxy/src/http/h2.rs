//! The h2 path: clients speaking HTTP/2 (ALPN `h2`, or the h2c preface), served by hyper,
//! forwarded to backends over pooled HTTP/1.1 connections ([`super::upstream`]).
//!
//! The request is rewritten the way the HTTP/1 path rewrites it (hop-by-hop headers out,
//! `X-Forwarded-For`/`-Proto` in, `Host` from `:authority`), and retried by the same policy
//! ([`super::Attempts`]); hyper hands back a request that never left a pooled connection the
//! backend had closed, so that one goes again whatever its method. WebSocket over h2
//! (RFC 8441 extended CONNECT) is not offered: such clients fall back to HTTP/1.1.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use balance::{HashKey, Lease, hash_key};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::paced::{Paced, Progress, pace_error};
use super::upstream::{ReqBody, Sender, Upstream};
use super::{
    Attempts, ConnCtx, OwnAnswer, balancing_key, cookie, is_idempotent, is_underscore_twin,
    log_request,
};
use crate::access_log::{RequestLine, Trace};
use crate::listener::ListenerSettings;
use crate::route::{self, Action, Edits, RequestFacts, Router, new_request_id};

/// Streams one h2 client may have open at once.
const MAX_STREAMS: u32 = 100;

/// Serves an h2 client connection until it closes, goes silent for `idle_timeout`, or the
/// node stops.
///
/// hyper's h2 server has no header or idle timer of its own: the connection is wrapped in
/// [`net::Idle`], so a client that sends nothing (no frame, no ping answer) for
/// `idle_timeout` loses it, and its header block is bounded by `max_header_bytes`.
pub(super) async fn serve<I>(io: I, ctx: ConnCtx, shutdown: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (idle, max_header) = {
        let settings = ctx.handle.settings.load();
        (settings.cfg.idle_timeout, settings.cfg.max_header_bytes)
    };
    let io = net::Idle::new(io, idle);
    let ctx = Arc::new(ctx);
    let svc = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle_request(req, &ctx).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new()).http2_only();
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(u32::try_from(max_header).unwrap_or(u32::MAX));
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(error = %e, "h2 client connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            // GOAWAY: streams in flight finish, no new ones start.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn handle_request(req: Request<Incoming>, ctx: &Arc<ConnCtx>) -> Response<ProxyBody> {
    let settings = ctx.handle.settings.load_full();
    let stats = &ctx.handle.info.stats;
    stats
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let logging = settings.access_log.is_some();
    let line = logging.then(|| SavedLine::of(&req));
    let mut trace = Trace::new(logging);
    let mut routed = Routed::default();
    let mut resp = forward(req, ctx, &settings, &mut trace, &mut routed).await;
    let status = resp.status().as_u16();
    stats.count_status(status);
    if let Some(line) = line {
        trace.status = status;
        // Written when the body ends (or the client goes away): bytes and total time known.
        resp.body_mut().log = Some(Box::new(PendingLog {
            ctx: ctx.clone(),
            settings,
            line,
            routed,
            trace,
        }));
    }
    resp
}

/// What the access log needs of an h2 request, copied before it is forwarded.
struct SavedLine {
    time: std::time::SystemTime,
    method: String,
    /// Path and query as the client sent them.
    target: String,
    referer: Option<Vec<u8>>,
    user_agent: Option<Vec<u8>>,
}

impl SavedLine {
    fn of(req: &Request<Incoming>) -> Self {
        let header = |name| {
            req.headers()
                .get(name)
                .map(|v: &HeaderValue| v.as_bytes().to_vec())
        };
        Self {
            time: std::time::SystemTime::now(),
            method: req.method().as_str().to_owned(),
            target: req
                .uri()
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_owned(),
            referer: header(header::REFERER),
            user_agent: header(header::USER_AGENT),
        }
    }
}

/// Where a request went: its route and the request id it was given.
#[derive(Default)]
struct Routed {
    route: Option<usize>,
    request_id: Option<String>,
}

/// An h2 request's log line, written when its response body is done with.
struct PendingLog {
    ctx: Arc<ConnCtx>,
    settings: Arc<ListenerSettings>,
    line: SavedLine,
    routed: Routed,
    trace: Trace,
}

impl Drop for PendingLog {
    fn drop(&mut self) {
        let l = &self.line;
        let line = RequestLine {
            method: l.method.as_bytes(),
            target: l.target.as_bytes(),
            protocol: "HTTP/2.0",
            referer: l.referer.as_deref(),
            user_agent: l.user_agent.as_deref(),
        };
        log_request(
            &self.ctx,
            &self.settings,
            l.time,
            Some(line),
            self.routed.route,
            self.routed.request_id.as_deref(),
            &self.trace,
        );
    }
}

/// Sends `req` to a backend of the listener's pool, with retries; always returns a response.
/// `trace` and `routed` learn what happened, for the access log.
async fn forward(
    mut req: Request<Incoming>,
    ctx: &ConnCtx,
    settings: &ListenerSettings,
    trace: &mut Trace,
    routed: &mut Routed,
) -> Response<ProxyBody> {
    let cfg = &settings.cfg;
    if let Some(why) = host_conflict(req.headers(), req.uri()) {
        return own_response(settings, &OwnAnswer::bad_request(&why), trace);
    }
    let route = match route_request(&mut req, &settings.router) {
        Ok(route) => route,
        Err(RouteAnswer::Redirect(resp)) => return *resp,
        Err(RouteAnswer::Refused(own)) => return own_response(settings, &own, trace),
    };
    routed.route = route;
    let pool = settings.router.pool(route, &settings.pool);
    let key = balancing_key(pool, ctx.peer, |k| request_key(&req, k));
    let mut attempts = Attempts::new(pool, cfg, &ctx.handle.info.stats, key);
    prepare_request(&mut req, &ctx.peer_ip, ctx.tls);
    let edits = settings.router.edits(route);
    routed.request_id = edits.and_then(|e| edit_request(&mut req, e));
    let edits = edits.map(|e| (e, routed.request_id.as_deref()));

    let (parts, body) = req.into_parts();
    let replayable = body.is_end_stream() && is_idempotent(parts.method.as_str());
    let saved = replayable.then(|| clone_parts(&parts));
    let mut parts = Some(parts);
    let progress = Progress::new();
    let mut body: Option<ReqBody> = Some(if body.is_end_stream() {
        Either::Right(Empty::new())
    } else {
        let rate = net::MinRate::new(cfg.min_body_rate, net::Limits::API.body_rate_grace);
        Either::Left(Paced::new(body, cfg.body_timeout, rate, progress.clone()))
    });

    let mut first = true;
    while let Some(lease) = attempts.next().await {
        let backend = lease.backend().clone();
        trace.attempt(&backend, std::mem::take(&mut first));
        let mut sender = match ctx
            .upstream
            .checkout(backend.addr(), cfg.connect_timeout)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                attempts.connect_failed(&lease, &e);
                continue;
            }
        };
        trace.connect = trace.elapsed();
        let (Some(p), Some(b)) = (parts.take(), body.take()) else {
            break;
        };
        let request = Request::from_parts(p, b);
        // `request_timeout` counts from the body's last progress, as on the HTTP/1 path
        // (where it starts once the body is sent): an upload that keeps moving is not cut.
        let answered = tokio::select! {
            r = sender.try_send_request(request) => Ok(r),
            () = progress.stalled_for(cfg.request_timeout) => Err(()),
        };
        match answered {
            Ok(Ok(resp)) => {
                trace.response = trace.elapsed();
                trace.body_received = progress.received();
                attempts.answered(&lease, resp.status().as_u16());
                return respond(resp, lease, sender, &ctx.upstream, edits);
            }
            Ok(Err(mut e)) => {
                // The client's body stalled or crawled: its fault, not the backend's.
                if let Some(why) = pace_error(e.error()) {
                    return own_response(
                        settings,
                        &OwnAnswer::body_timeout(&why.to_string()),
                        trace,
                    );
                }
                debug!(backend = backend.name(), error = %e.error(), "backend request failed");
                if let Some(unsent) = e.take_message() {
                    // The pooled connection was closed before the request left: nothing was
                    // sent, so any method may go again, on a fresh connection.
                    let (p, b) = unsent.into_parts();
                    parts = Some(p);
                    body = Some(b);
                    continue;
                }
                attempts.failed(&lease);
                let Some(p) = &saved else {
                    let own = OwnAnswer::failed_after_send(&backend);
                    return own_response(settings, &own, trace);
                };
                parts = Some(clone_parts(p));
                body = Some(Either::Right(Empty::new()));
            }
            Err(_) => {
                let own = attempts.timed_out(&lease);
                match &saved {
                    Some(p) if cfg.retry_on_timeout => {
                        parts = Some(clone_parts(p));
                        body = Some(Either::Right(Empty::new()));
                    }
                    _ => return own_response(settings, &own, trace),
                }
            }
        }
    }
    let own = attempts.exhausted();
    own_response(settings, &own, trace)
}

/// Turns the backend's response into the client's.
fn respond(
    resp: Response<Incoming>,
    lease: Lease,
    sender: Sender,
    upstream: &Arc<Upstream>,
    edits: Option<(&Edits, Option<&str>)>,
) -> Response<ProxyBody> {
    let addr = lease.backend().addr();
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some((e, id)) = edits {
        edit_headers(&mut parts.headers, &e.drop_response, &e.add_response, id);
    }
    let mut body = ProxyBody {
        inner: Inner::Upstream(body),
        lease: Some(lease),
        recycle: Some((upstream.clone(), addr, sender)),
        log: None,
    };
    if body.inner_is_end() {
        body.finish(true);
    }
    Response::from_parts(parts, body)
}

/// The hashed header or cookie a pool balances on.
fn request_key(req: &Request<Incoming>, key: &HashKey) -> Option<u64> {
    match key {
        HashKey::Header(name) => req
            .headers()
            .get(name.as_str())
            .map(|v| hash_key(v.as_bytes())),
        HashKey::Cookie(name) => request_cookie(req.headers(), name).map(hash_key),
        HashKey::ClientIp => None,
    }
}

/// Value of cookie `name` in the request's `Cookie` headers (h2 clients may send several).
fn request_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .find_map(|v| cookie(v.as_bytes(), name))
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

/// A `Host` header naming another authority than `:authority` (RFC 9113 §8.3.1): the
/// backend would read one and a routing rule the other.
fn host_conflict(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let authority = uri.authority()?;
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next()?;
    if hosts.next().is_some() {
        return Some("more than one Host header".into());
    }
    (!host
        .as_bytes()
        .eq_ignore_ascii_case(authority.as_str().as_bytes()))
    .then(|| {
        format!(
            "Host `{}` differs from :authority `{authority}`",
            String::from_utf8_lossy(host.as_bytes()).escape_debug()
        )
    })
}

/// How routing can end a request without forwarding it.
enum RouteAnswer {
    Redirect(Box<Response<ProxyBody>>),
    /// A path the routes cannot judge.
    Refused(OwnAnswer),
}

/// Finds the request's route; rewrites its path when the route strips a prefix. A
/// redirect, or a path the routes cannot judge, is the answer itself.
fn route_request(
    req: &mut Request<Incoming>,
    router: &Router,
) -> Result<Option<usize>, RouteAnswer> {
    if router.routes.is_empty() {
        return Ok(None);
    }
    let uri = req.uri().clone();
    let authority = match uri.authority() {
        Some(a) => a.as_str(),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or(""),
    };
    let host = route::host_only(authority);
    let normal = match route::routing_path(uri.path()) {
        Ok(n) => n,
        Err(why) if router.by_path => {
            return Err(RouteAnswer::Refused(OwnAnswer::bad_request(&why)));
        }
        Err(_) => std::borrow::Cow::Borrowed(uri.path()),
    };
    let facts = RequestFacts {
        method: req.method().as_str(),
        host,
        path: &normal,
        headers: req.headers(),
    };
    let Some((index, r)) = router.select(&facts) else {
        return Ok(None);
    };
    match &r.action {
        Action::Redirect(to) => {
            let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
            let mut resp = Response::new(ProxyBody::fixed(Bytes::new()));
            *resp.status_mut() = StatusCode::from_u16(to.status).unwrap_or(StatusCode::FOUND);
            if let Ok(v) = HeaderValue::from_str(&to.location(host, pq)) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Err(RouteAnswer::Redirect(Box::new(resp)))
        }
        Action::Pool(_) => {
            if r.edits.strip.is_some() {
                let mut target = r.edits.rewrite_path(&normal).into_owned();
                if let Some(q) = uri.query() {
                    target.push('?');
                    target.push_str(q);
                }
                let mut parts = uri.into_parts();
                parts.path_and_query = target.parse().ok();
                if let Ok(u) = Uri::from_parts(parts) {
                    *req.uri_mut() = u;
                }
            }
            Ok(Some(index))
        }
    }
}

/// Applies a route's request header changes; returns the request id it gave, if any.
fn edit_request(req: &mut Request<Incoming>, edits: &Edits) -> Option<String> {
    let id = edits.request_id.then(new_request_id);
    edit_headers(
        req.headers_mut(),
        &edits.drop_request,
        &edits.add_request,
        id.as_deref(),
    );
    id
}

/// Removes `drop`, then adds `add` and `x-request-id: id`.
fn edit_headers(h: &mut HeaderMap, drop: &[String], add: &[(String, String)], id: Option<&str>) {
    for name in drop {
        h.remove(name.as_str());
    }
    for (name, value) in add {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            h.append(n, v);
        }
    }
    if let Some(v) = id.and_then(|id| HeaderValue::from_str(id).ok()) {
        h.insert(HeaderName::from_static("x-request-id"), v);
    }
}

/// Rewrites a client request into the one the backend gets.
fn prepare_request(req: &mut Request<Incoming>, peer_ip: &str, tls: bool) {
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
    let twins: Vec<HeaderName> = h
        .keys()
        .filter(|n| is_underscore_twin(n.as_str()))
        .cloned()
        .collect();
    for name in twins {
        h.remove(name);
    }
    let xff_name = HeaderName::from_static("x-forwarded-for");
    let xff = match h.get(&xff_name).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {peer_ip}"),
        None => peer_ip.to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert(xff_name, v);
    }
    h.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    // Backends get origin-form over HTTP/1.1 whatever the client spoke.
    let origin = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    if let Ok(uri) = origin.parse::<Uri>() {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = Version::HTTP_11;
}

/// An answer lintas gives itself: the listener's error page for the status if it has one
/// (HTML), the short plain-text message otherwise.
fn own_response(
    settings: &ListenerSettings,
    own: &OwnAnswer,
    trace: &mut Trace,
) -> Response<ProxyBody> {
    let (body, kind) = match settings.error_pages.get(own.status) {
        Some(page) => (page.clone(), "text/html; charset=utf-8"),
        None => (
            Bytes::from(own.body.clone().into_owned()),
            "text/plain; charset=utf-8",
        ),
    };
    trace.own(own.status, own.error);
    trace.body_sent = body.len() as u64;
    let mut resp = Response::new(ProxyBody::fixed(body));
    *resp.status_mut() = StatusCode::from_u16(own.status).unwrap_or(StatusCode::BAD_GATEWAY);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
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
    /// The request's access log line, written when the body is dropped.
    log: Option<Box<PendingLog>>,
}

impl ProxyBody {
    fn fixed(b: Bytes) -> Self {
        Self {
            inner: Inner::Fixed(Some(b)),
            lease: None,
            recycle: None,
            log: None,
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
                if let (Some(log), Some(Ok(f))) = (&mut this.log, &frame)
                    && let Some(data) = f.data_ref()
                {
                    log.trace.body_sent += data.len() as u64;
                }
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
        assert_eq!(request_cookie(&h, "sid"), Some(&b"xyz"[..]));
        assert_eq!(request_cookie(&h, "other"), Some(&b"2"[..]));
        assert_eq!(request_cookie(&h, "si"), None);
    }

    #[test]
    fn host_must_name_the_authority() {
        let uri: Uri = "http://a.test/x".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(host_conflict(&h, &uri), None);
        h.insert(header::HOST, HeaderValue::from_static("A.test"));
        assert_eq!(host_conflict(&h, &uri), None);
        h.insert(header::HOST, HeaderValue::from_static("b.test"));
        assert_eq!(
            host_conflict(&h, &uri).as_deref(),
            Some("Host `b.test` differs from :authority `a.test`")
        );
        h.append(header::HOST, HeaderValue::from_static("a.test"));
        assert_eq!(
            host_conflict(&h, &uri).as_deref(),
            Some("more than one Host header")
        );
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

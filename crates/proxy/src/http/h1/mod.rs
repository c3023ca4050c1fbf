//! The HTTP/1 path: one task per client connection does the whole exchange.
//!
//! For each request on a kept-alive client connection:
//!
//! 1. read and parse the head (`head`) — whole within `head_timeout` of its first byte
//!    (408 after); 400 for a malformed one, 431 for one over `max_header_bytes` or with
//!    more than 100 headers, each with a body saying what was wrong — and the connection is
//!    closed, as its framing can no longer be trusted;
//! 2. pick a backend ([`super::Attempts`]) and check out a kept-alive connection to it
//!    (`pool`);
//! 3. send the rewritten head with whatever body bytes are already buffered in one write,
//!    then the rest of the body (`body`), answering `Expect: 100-continue` itself; a body
//!    that stops for `body_timeout`, or averages under `min_body_rate` after 5 s, is
//!    answered 408;
//! 4. read the response head within `request_timeout`, send it with the body bytes already
//!    buffered in one write, then the rest of the body;
//! 5. put the backend connection back when the response ended cleanly, and go on with the
//!    next request unless either side asked to close.
//!
//! A `101 Switching Protocols` answer to an upgrade request turns the exchange into a byte
//! tunnel until either side closes, or nothing crosses it for `idle_timeout`.

mod body;
#[cfg(test)]
mod fuzz;
mod head;
mod pool;

use std::io;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use self::body::{BodyError, Pace, Progress};
use self::head::{BodyLen, HeadError, RequestCtx, RequestHead, ResponseHead};
use self::pool::Conn;
pub(crate) use self::pool::ConnPool;
use super::{Attempts, ConnCtx, OwnAnswer, balancing_key, log_request, reason};
use crate::access_log::Trace;
use crate::listener::ListenerSettings;
use crate::route::Edits;

/// Largest response head accepted from a backend.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Serves HTTP/1 requests on `client` until it closes, asks to, or the node stops; `buf`
/// holds bytes already read from it, and `head_deadline` is when the first head must be
/// whole if its first bytes are among them (they were read to tell HTTP/1 from h2c).
pub(crate) async fn serve<I>(
    mut client: I,
    mut buf: BytesMut,
    mut head_deadline: Option<Instant>,
    ctx: &ConnCtx,
    shutdown: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let stats = &ctx.handle.info.stats;
    // The access log's copy of the request line and headers, reused request after request.
    let mut saved = Vec::new();
    loop {
        let settings = ctx.handle.settings.load_full();
        let logging = settings.access_log.is_some();
        let read = read_request(
            &mut client,
            &mut buf,
            head_deadline.take(),
            ctx,
            &settings,
            shutdown,
        );
        let head = match read.await {
            Ok(head) => head,
            Err(Ended::Quietly) => return,
            Err(Ended::With(own)) => {
                stats.requests.fetch_add(1, Ordering::Relaxed);
                let mut trace = Trace::new(logging);
                answer(&mut client, &settings, stats, &own, true, &mut trace).await;
                if logging {
                    log_request(ctx, &settings, SystemTime::now(), None, None, None, &trace);
                }
                return;
            }
        };
        let (time, fields) = match logging {
            true => (
                SystemTime::now(),
                Some(head.fields.save(&buf[..head.len], &mut saved)),
            ),
            false => (SystemTime::UNIX_EPOCH, None),
        };
        let mut trace = Trace::new(logging);
        buf.advance(head.len);
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let keep = exchange(&mut client, &mut buf, &head, ctx, &settings, &mut trace).await;
        if let Some(fields) = fields {
            let line = fields.line(&saved, head.http10);
            let id = head.request_id.as_deref();
            log_request(ctx, &settings, time, Some(line), head.route, id, &trace);
        }
        if !keep || shutdown.is_cancelled() {
            return;
        }
    }
}

/// Closes after an error answer without losing it: if the client is still sending (the rest
/// of an oversized head, say), closing at once would make the kernel reset the connection
/// and the client could lose the answer. So: half-close, then read and drop what still
/// comes, for a bounded time and amount.
async fn linger<I: AsyncRead + AsyncWrite + Unpin>(client: &mut I) {
    const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
    const MAX_DRAIN: usize = 256 * 1024;
    if client.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    let drain = async {
        while drained < MAX_DRAIN {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// How reading a request head ended without one.
enum Ended {
    /// The client closed, idled out, or the node is stopping: just close.
    Quietly,
    /// Tell the client this, then close.
    With(OwnAnswer),
}

async fn read_request<I>(
    client: &mut I,
    buf: &mut BytesMut,
    started: Option<Instant>,
    ctx: &ConnCtx,
    settings: &ListenerSettings,
    shutdown: &CancellationToken,
) -> Result<RequestHead, Ended>
where
    I: AsyncRead + Unpin,
{
    let cfg = &settings.cfg;
    let rctx = RequestCtx {
        peer_ip: &ctx.peer_ip,
        tls: ctx.tls,
        router: &settings.router,
        pool: &settings.pool,
        max: cfg.max_header_bytes,
    };
    // Set at the head's first byte, and never pushed back (slow-loris protection).
    let mut deadline = started;
    loop {
        if !buf.is_empty() {
            match head::parse_request(buf, &rctx) {
                Ok(head) => return Ok(head),
                Err(HeadError::Partial) => {}
                Err(HeadError::TooLarge) => {
                    let message = format!(
                        "request head larger than {} bytes or with more than {} headers\n",
                        cfg.max_header_bytes,
                        head::MAX_HEADERS
                    );
                    return Err(Ended::With(OwnAnswer::new(431, "head_too_large", message)));
                }
                Err(HeadError::Malformed(why)) => {
                    return Err(Ended::With(OwnAnswer::bad_request(&why)));
                }
            }
        }
        buf.reserve(4096);
        // Between requests a client may idle for `idle_timeout`; once it has started a head
        // it must finish it within `head_timeout`.
        let idle = buf.is_empty();
        let until = if idle {
            Instant::now() + cfg.idle_timeout
        } else {
            *deadline.get_or_insert_with(|| Instant::now() + cfg.head_timeout)
        };
        let read = tokio::select! {
            r = tokio::time::timeout_at(until, client.read_buf(buf)) => r,
            _ = shutdown.cancelled(), if idle => return Err(Ended::Quietly),
        };
        match read {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Err(Ended::Quietly),
            Err(_) if idle => return Err(Ended::Quietly),
            Err(_) => {
                let message = format!(
                    "request head not received within {} (head_timeout)\n",
                    configkit::format_duration(cfg.head_timeout)
                );
                return Err(Ended::With(OwnAnswer::new(408, "head_timeout", message)));
            }
        }
    }
}

/// Why an attempt on one backend did not produce a response head.
enum AttemptError {
    /// No connection could be opened.
    Connect(io::Error),
    /// The response head did not come within `request_timeout`.
    Timeout,
    /// The backend failed before answering anything.
    Backend(io::Error),
    /// The backend answered something that is not an HTTP/1 response.
    BadResponse(String),
    /// The client failed or sent a broken body: nothing more can be said to it.
    Client,
    /// The client's body framing is broken.
    ClientBody(String),
    /// The client's body stopped or came too slowly.
    ClientSlow(String),
}

/// Proxies one request, noting in `trace` what happened; returns whether the client
/// connection stays open.
async fn exchange<I>(
    client: &mut I,
    buf: &mut BytesMut,
    req: &RequestHead,
    ctx: &ConnCtx,
    settings: &ListenerSettings,
    trace: &mut Trace,
) -> bool
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let stats = &ctx.handle.info.stats;
    if let Some((status, location)) = &req.redirect {
        // The body, if any, is not read: the connection closes after the answer.
        let close = req.body != BodyLen::None || !req.keep_alive;
        stats.count_status(*status);
        trace.status = *status;
        let answer = head::redirect_response(*status, location, close);
        if client.write_all(&answer).await.is_err() {
            return false;
        }
        if close {
            linger(client).await;
        }
        return !close;
    }
    let pool = settings.router.pool(req.route, &settings.pool);
    let cfg = &settings.cfg;
    let key = balancing_key(pool, ctx.peer, |_| req.key);
    let mut attempts = Attempts::new(pool, cfg, stats, key);
    let edits = settings
        .router
        .edits(req.route)
        .map(|e| (e, req.request_id.as_deref()));
    if req.expect_continue
        && client
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
    {
        return false;
    }
    // Replaying is only safe when the request is idempotent and whole in `req.out`.
    let replayable = req.idempotent && req.body == BodyLen::None;
    // After an error answer the connection can go on only if no body is left unread.
    let mut body_pending = req.body != BodyLen::None;
    let connection = if !req.keep_alive {
        Some("close")
    } else if req.http10 {
        Some("keep-alive")
    } else {
        None
    };
    let mut first = true;
    while let Some(lease) = attempts.next().await {
        let backend = lease.backend().clone();
        trace.attempt(&backend, std::mem::take(&mut first));
        let (addr, timeout) = (backend.addr(), cfg.connect_timeout);
        // A kept-alive connection the backend closed just as the request went out is not
        // the backend's fault: a replayable request goes again once, on a new connection.
        let mut fresh = false;
        let outcome = loop {
            let conn = if fresh {
                ConnPool::connect(addr, timeout).await
            } else {
                ctx.conns.checkout(addr, timeout).await
            };
            let mut conn = match conn {
                Ok(c) => c,
                Err(e) => break Err(AttemptError::Connect(e)),
            };
            trace.connect = trace.elapsed();
            let resp = attempt(
                client,
                buf,
                req,
                &mut conn,
                &backend,
                cfg,
                connection,
                edits,
                &mut trace.body_received,
            )
            .await;
            body_pending = false;
            match resp {
                Ok(head) => break Ok((conn, head)),
                Err(AttemptError::Backend(e)) if conn.reused && replayable && !fresh => {
                    debug!(backend = backend.name(), error = %e, "kept-alive connection lost; sending again on a new one");
                    fresh = true;
                }
                Err(e) => break Err(e),
            }
        };
        let own = match outcome {
            Ok((conn, head)) => {
                trace.response = trace.elapsed();
                attempts.answered(&lease, head.status);
                return respond(client, buf, req, conn, head, ctx, lease, trace).await;
            }
            Err(AttemptError::Connect(e)) => {
                attempts.connect_failed(&lease, &e);
                continue;
            }
            Err(AttemptError::Client) => {
                // nginx's "client closed request".
                trace.own(499, "client_closed");
                return false;
            }
            // A client's broken or slow body says nothing about the backend's health.
            Err(AttemptError::ClientBody(why)) => OwnAnswer::bad_request(&why),
            Err(AttemptError::ClientSlow(why)) => OwnAnswer::body_timeout(&why),
            Err(AttemptError::BadResponse(why)) => {
                attempts.failed(&lease);
                OwnAnswer::bad_response(&backend, &why)
            }
            Err(AttemptError::Timeout) => {
                let answer = attempts.timed_out(&lease);
                if replayable && cfg.retry_on_timeout {
                    continue;
                }
                answer
            }
            Err(AttemptError::Backend(e)) => {
                debug!(backend = backend.name(), error = %e, "backend failed before answering");
                attempts.failed(&lease);
                if replayable {
                    continue;
                }
                OwnAnswer::failed_after_send(&backend)
            }
        };
        // The backend's slot is released before lintas lingers on the client.
        drop(lease);
        return answer(client, settings, stats, &own, true, trace).await;
    }
    let own = attempts.exhausted();
    answer(client, settings, stats, &own, body_pending, trace).await
}

/// Writes an answer lintas makes itself (the listener's error page for its status, if it
/// has one); returns whether the connection stays open.
async fn answer<I>(
    client: &mut I,
    settings: &ListenerSettings,
    stats: &crate::registry::ListenerStats,
    own: &OwnAnswer,
    close: bool,
    trace: &mut Trace,
) -> bool
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    stats.count_status(own.status);
    trace.own(own.status, own.error);
    let page = settings.error_pages.get(own.status);
    let bytes = head::own_response(
        own.status,
        reason(own.status),
        &own.body,
        page.map(|p| &p[..]),
        close,
    );
    trace.body_sent = page.map_or(own.body.len(), |p| p.len()) as u64;
    if client.write_all(&bytes).await.is_err() {
        return false;
    }
    if close {
        linger(client).await;
    }
    !close
}

/// Sends the request and reads the response head, the latter within `request_timeout`;
/// `edits` are the route's response header changes and the request's id.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the parts of one exchange"
)]
async fn attempt<I>(
    client: &mut I,
    buf: &mut BytesMut,
    req: &RequestHead,
    conn: &mut Conn,
    backend: &balance::Backend,
    cfg: &crate::config::ListenerConfig,
    connection: Option<&str>,
    edits: Option<(&Edits, Option<&str>)>,
    received: &mut u64,
) -> Result<ResponseHead, AttemptError>
where
    I: AsyncRead + Unpin,
{
    send(client, buf, req, conn, backend, cfg, received).await?;
    tokio::time::timeout(
        cfg.request_timeout,
        read_response(conn, req.is_head, connection, edits),
    )
    .await
    .map_err(|_| AttemptError::Timeout)?
}

/// Sends the request head and body to the backend; `received` counts the body's bytes.
async fn send<I>(
    client: &mut I,
    buf: &mut BytesMut,
    req: &RequestHead,
    conn: &mut Conn,
    backend: &balance::Backend,
    cfg: &crate::config::ListenerConfig,
    received: &mut u64,
) -> Result<(), AttemptError>
where
    I: AsyncRead + Unpin,
{
    let counter = &backend.stats().bytes_in;
    let mut progress = Progress::new(req.body);
    let now = progress.take(buf).map_err(AttemptError::ClientBody)?;
    let written = if now == 0 {
        conn.stream.write_all(&req.out).await
    } else {
        let mut out = Vec::with_capacity(req.out.len() + now);
        out.extend_from_slice(&req.out);
        out.extend_from_slice(&buf[..now]);
        conn.stream.write_all(&out).await
    };
    written.map_err(AttemptError::Backend)?;
    buf.advance(now);
    counter.fetch_add((req.out.len() + now) as u64, Ordering::Relaxed);
    *received = now as u64;
    if progress.is_done() {
        return Ok(());
    }
    let mut pace = Pace {
        idle: cfg.body_timeout,
        rate: Some(net::MinRate::new(
            cfg.min_body_rate,
            net::Limits::API.body_rate_grace,
        )),
    };
    body::forward(
        &mut progress,
        buf,
        client,
        &mut conn.stream,
        (counter, received),
        &mut pace,
    )
    .await
    .map_err(|e| match e {
        BodyError::Write(e) => AttemptError::Backend(e),
        BodyError::Malformed(why) => AttemptError::ClientBody(why),
        e @ (BodyError::Stalled(_) | BodyError::TooSlow(_)) => {
            AttemptError::ClientSlow(e.to_string())
        }
        BodyError::Read(_) | BodyError::Truncated => AttemptError::Client,
    })
}

/// Reads the final response head, skipping interim 1xx answers (lintas answered
/// `100 Continue` itself).
async fn read_response(
    conn: &mut Conn,
    is_head: bool,
    connection: Option<&str>,
    edits: Option<(&Edits, Option<&str>)>,
) -> Result<ResponseHead, AttemptError> {
    let mut received = false;
    loop {
        if !conn.buf.is_empty() {
            match head::parse_response(&conn.buf, MAX_RESPONSE_HEAD, is_head, connection, edits) {
                Ok(h) if (100..200).contains(&h.status) && h.status != 101 => {
                    conn.buf.advance(h.len);
                    continue;
                }
                Ok(h) => return Ok(h),
                Err(HeadError::Partial) => {}
                Err(HeadError::TooLarge) => {
                    return Err(AttemptError::BadResponse(format!(
                        "head over {MAX_RESPONSE_HEAD} bytes"
                    )));
                }
                Err(HeadError::Malformed(why)) => return Err(AttemptError::BadResponse(why)),
            }
        }
        conn.buf.reserve(8192);
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) if !received => {
                return Err(AttemptError::Backend(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before any response",
                )));
            }
            Ok(0) => {
                return Err(AttemptError::BadResponse(
                    "connection closed inside the response head".into(),
                ));
            }
            Ok(_) => received = true,
            Err(e) if !received => return Err(AttemptError::Backend(e)),
            Err(e) => return Err(AttemptError::BadResponse(e.to_string())),
        }
    }
}

/// Sends the response to the client; returns whether the client connection stays open.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the parts of one exchange"
)]
async fn respond<I>(
    client: &mut I,
    buf: &mut BytesMut,
    req: &RequestHead,
    mut conn: Conn,
    resp: ResponseHead,
    ctx: &ConnCtx,
    lease: balance::Lease,
    trace: &mut Trace,
) -> bool
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let backend = lease.backend().clone();
    // Read once for the whole response (held across awaits, so a full `Arc`).
    let settings = ctx.handle.settings.load_full();
    let cfg = &settings.cfg;
    let stats = &ctx.handle.info.stats;
    stats.count_status(resp.status);
    trace.status = resp.status;
    let counter = &backend.stats().bytes_out;
    conn.buf.advance(resp.len);
    if resp.status == 101 && req.upgrade {
        let idle = ctx.handle.settings.load().cfg.idle_timeout;
        return tunnel(
            &mut net::Idle::new(client, idle),
            buf,
            conn,
            &resp.out,
            lease,
            trace,
        )
        .await;
    }
    let mut progress = Progress::new(resp.body);
    let Ok(now) = progress.take(&conn.buf) else {
        debug!(
            backend = backend.name(),
            "broken chunked framing in the response"
        );
        return false;
    };
    let head_len = resp.out.len();
    let written = if now == 0 {
        client.write_all(&resp.out).await
    } else {
        let mut out = resp.out;
        out.extend_from_slice(&conn.buf[..now]);
        client.write_all(&out).await
    };
    if written.is_err() {
        return false;
    }
    counter.fetch_add((head_len + now) as u64, Ordering::Relaxed);
    trace.body_sent = now as u64;
    conn.buf.advance(now);
    if !progress.is_done() {
        let mut pace = Pace {
            idle: cfg.body_timeout,
            rate: None,
        };
        let rest = body::forward(
            &mut progress,
            &mut conn.buf,
            &mut conn.stream,
            client,
            (counter, &mut trace.body_sent),
            &mut pace,
        );
        if let Err(e) = rest.await {
            debug!(backend = backend.name(), error = %e, "response body not forwarded to its end");
            return false;
        }
    }
    if resp.reusable {
        ctx.conns.checkin(backend.addr(), conn);
    }
    drop(lease);
    req.keep_alive && resp.body != BodyLen::UntilClose
}

/// After `101 Switching Protocols`: bytes both ways until either side closes. The lease is
/// held for the tunnel's life — a WebSocket is a connection in flight. `trace` gets the
/// bytes each way.
async fn tunnel<I>(
    client: &mut I,
    buf: &mut BytesMut,
    mut conn: Conn,
    head: &[u8],
    lease: balance::Lease,
    trace: &mut Trace,
) -> bool
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut first = head.to_vec();
    first.extend_from_slice(&conn.buf);
    if client.write_all(&first).await.is_err() {
        return false;
    }
    trace.body_sent = conn.buf.len() as u64;
    if !buf.is_empty() {
        if conn.stream.write_all(buf).await.is_err() {
            return false;
        }
        trace.body_received = buf.len() as u64;
        buf.clear();
    }
    match tokio::io::copy_bidirectional(client, &mut conn.stream).await {
        Ok((up, down)) => {
            trace.body_received += up;
            trace.body_sent += down;
        }
        Err(e) => {
            debug!(backend = lease.backend().name(), error = %e, "upgraded connection ended with an error");
        }
    }
    drop(lease);
    false
}

//! Request and response heads: parsed with `httparse`, rewritten for the other side.
//!
//! A head is rewritten in one pass into the bytes the other side gets: hop-by-hop headers
//! (RFC 9110 §7.6.1, and every header the `Connection` header names) are dropped,
//! `X-Forwarded-For` is appended to and `X-Forwarded-Proto` set on requests, and the body's
//! framing is worked out (RFC 9112 §6). `Transfer-Encoding` and `Content-Length` are kept:
//! bodies are forwarded in the encoding they arrive in.
//!
//! Because the backend reads the framing headers lintas forwards, lintas accepts only
//! framing that every reasonable HTTP/1.1 parser reads the same way, and refuses the rest
//! before any backend sees it (request smuggling lives in the difference):
//!
//! - `Content-Length` is ASCII digits between optional spaces or tabs, and one value;
//! - `Transfer-Encoding` is a list of tokens ending in one `chunked`, only in HTTP/1.1, and
//!   never with `Content-Length`;
//! - a request's `Connection` header may not name `Content-Length`, `Transfer-Encoding` or
//!   `Host` (dropping them as RFC 9110 asks would change the framing the backend sees; a
//!   backend's `Connection` naming them is ignored for the same reason);
//! - an HTTP/1.1 request carries exactly one valid `Host` (RFC 9112 §3.2), and no request
//!   carries two.

use std::fmt::Write as _;

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use balance::{HashKey, Pool, StrategyKind, hash_key};

use crate::access_log::RequestLine;
use crate::http::{cookie, is_idempotent, is_underscore_twin};
use crate::route::{self, Action, Edits, RequestFacts, Router, new_request_id};

/// Most headers a head may carry; more is answered 431 like an oversized head.
pub(crate) const MAX_HEADERS: usize = 100;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyLen {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// Why a head could not be taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// More bytes are needed.
    Partial,
    /// Larger than the limit, or too many headers.
    TooLarge,
    /// Not HTTP/1.x; the text says what was wrong.
    Malformed(String),
}

/// What the request path needs from the request head.
#[derive(Debug)]
pub(crate) struct RequestHead {
    /// The head to send to the backend.
    pub out: Vec<u8>,
    /// Bytes of the client's buffer the head took.
    pub len: usize,
    /// The body's framing.
    pub body: BodyLen,
    /// `HEAD`: the response has no body whatever it says.
    pub is_head: bool,
    /// Safe to send twice (RFC 9110 §9.2.2) — and only then replayed after a failure.
    pub idempotent: bool,
    /// The client keeps the connection after this exchange.
    pub keep_alive: bool,
    /// HTTP/1.0 client: it needs `Connection: keep-alive` in the response to keep it.
    pub http10: bool,
    /// A protocol upgrade (WebSocket) was asked for.
    pub upgrade: bool,
    /// `Expect: 100-continue`: lintas answers the 100 itself before reading the body.
    pub expect_continue: bool,
    /// Hashed balancing key, when the pool hashes a header or cookie.
    pub key: Option<u64>,
    /// The route that matched (an index into the listener's router); `None`: the
    /// listener's pool.
    pub route: Option<usize>,
    /// The matching route answers with a redirect: status and `Location`.
    pub redirect: Option<(u16, String)>,
    /// The `X-Request-Id` given to the request, also sent back to the client.
    pub request_id: Option<String>,
    /// Where the access log's fields are in the client's head.
    pub fields: LogFields,
}

/// Where the access log's request fields are: ranges of the client's head (or of the copy
/// [`LogFields::save`] made).
#[derive(Debug, Clone, Default)]
pub(crate) struct LogFields {
    method: Range<usize>,
    /// As the client sent it, before any route rewrote it.
    target: Range<usize>,
    referer: Option<Range<usize>>,
    user_agent: Option<Range<usize>>,
}

impl LogFields {
    /// Copies the fields out of `head` into `into` (cleared first), so the client's buffer
    /// can move on; returns their ranges in `into`.
    pub(crate) fn save(&self, head: &[u8], into: &mut Vec<u8>) -> Self {
        into.clear();
        let mut copy = |r: &Range<usize>| {
            let start = into.len();
            into.extend_from_slice(&head[r.clone()]);
            start..into.len()
        };
        Self {
            method: copy(&self.method),
            target: copy(&self.target),
            referer: self.referer.as_ref().map(&mut copy),
            user_agent: self.user_agent.as_ref().map(&mut copy),
        }
    }

    /// The request line's parts in `saved` (what [`LogFields::save`] filled).
    pub(crate) fn line<'a>(&self, saved: &'a [u8], http10: bool) -> RequestLine<'a> {
        RequestLine {
            method: &saved[self.method.clone()],
            target: &saved[self.target.clone()],
            protocol: if http10 { "HTTP/1.0" } else { "HTTP/1.1" },
            referer: self.referer.clone().map(|r| &saved[r]),
            user_agent: self.user_agent.clone().map(|r| &saved[r]),
        }
    }
}

/// What the response path needs from the response head.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    /// The head to send to the client.
    pub out: Vec<u8>,
    /// Bytes of the backend's buffer the head took.
    pub len: usize,
    /// Status code.
    pub status: u16,
    /// The body's framing.
    pub body: BodyLen,
    /// The backend connection may be reused afterwards.
    pub reusable: bool,
}

/// Per-connection facts the request rewrite needs.
pub(crate) struct RequestCtx<'a> {
    /// Client IP, for X-Forwarded-For.
    pub peer_ip: &'a str,
    /// Whether the client came over TLS.
    pub tls: bool,
    /// The listener's routes.
    pub router: &'a Router,
    /// The listener's pool, for requests no route takes.
    pub pool: &'a Arc<Pool>,
    /// Largest head accepted.
    pub max: usize,
}

/// Headers never forwarded as received; the ones lintas keeps meaning of are re-added.
fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Headers that frame the message or name its target: never dropped because `Connection`
/// lists them.
const PROTECTED: [&str; 3] = ["content-length", "transfer-encoding", "host"];

/// `value` without the spaces and tabs (RFC 9110 OWS) around it — and nothing else: trimming
/// any other byte would read a value differently from the backend.
fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// RFC 9110 §5.6.2 `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 §5.6.2 `token`.
pub(crate) fn is_token(v: &[u8]) -> bool {
    !v.is_empty() && v.iter().all(|&b| is_tchar(b))
}

/// Comma-separated elements of a header value, without surrounding spaces and tabs.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

fn has_token(v: &[u8], token: &str) -> bool {
    tokens(v).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// Framing from `Content-Length`/`Transfer-Encoding` headers; `None` when neither is present.
fn framing(headers: &[httparse::Header<'_>]) -> Result<Option<BodyLen>, String> {
    let mut length: Option<u64> = None;
    // Whether the codings so far end in `chunked`; `None` without Transfer-Encoding.
    let mut chunked = None;
    let mut chunked_seen = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = trim_ows(h.value);
            let n = std::str::from_utf8(v)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    format!(
                        "invalid Content-Length `{}`",
                        String::from_utf8_lossy(h.value).escape_debug()
                    )
                })?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length headers".into());
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            for t in h.value.split(|&b| b == b',').map(trim_ows) {
                if !is_token(t) {
                    return Err(format!(
                        "invalid Transfer-Encoding `{}`",
                        String::from_utf8_lossy(h.value).escape_debug()
                    ));
                }
                let is_chunked = t.eq_ignore_ascii_case(b"chunked");
                if is_chunked && chunked_seen {
                    return Err("Transfer-Encoding applies chunked more than once".into());
                }
                chunked_seen |= is_chunked;
                chunked = Some(is_chunked);
            }
        }
    }
    match (chunked, length) {
        (Some(_), Some(_)) => Err("both Transfer-Encoding and Content-Length are present".into()),
        (Some(true), None) => Ok(Some(BodyLen::Chunked)),
        (Some(false), None) => Ok(Some(BodyLen::UntilClose)),
        (None, Some(n)) => Ok(Some(if n == 0 {
            BodyLen::None
        } else {
            BodyLen::Length(n)
        })),
        (None, None) => Ok(None),
    }
}

/// Checks the request target's form (RFC 9112 §3.2): origin-form (`/path?query`),
/// absolute-form (`http://host/path`), `*` for OPTIONS; authority-form is for CONNECT,
/// which lintas does not proxy. `httparse` takes any visible bytes; a backend or a routing
/// rule must not read a target lintas let through otherwise than lintas does.
fn check_target(method: &str, target: &str) -> Result<(), String> {
    let valid = match target {
        "*" => method == "OPTIONS",
        t if t.starts_with('/') => t.parse::<http::uri::PathAndQuery>().is_ok(),
        t => t
            .parse::<http::Uri>()
            .is_ok_and(|u| u.scheme().is_some() && u.authority().is_some()),
    };
    if valid && method != "CONNECT" {
        Ok(())
    } else if method == "CONNECT" {
        Err("CONNECT is not proxied".into())
    } else {
        Err(format!(
            "invalid request target `{}`",
            target.escape_debug()
        ))
    }
}

/// The 1-based number of the first line of `head` ended by a LF without a CR before it.
fn bare_lf_line(head: &[u8]) -> Option<usize> {
    let mut line = 1;
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' {
            if i == 0 || head[i - 1] != b'\r' {
                return Some(line);
            }
            line += 1;
        }
    }
    None
}

/// Checks the request's `Host` headers (RFC 9112 §3.2): one for HTTP/1.1, at most one for
/// HTTP/1.0, and a valid `uri-host [":" port]` without user information.
fn check_host(headers: &[httparse::Header<'_>], minor: u8) -> Result<(), String> {
    let mut hosts = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    let Some(host) = hosts.next() else {
        return if minor == 1 {
            Err("missing Host header".into())
        } else {
            Ok(())
        };
    };
    if hosts.next().is_some() {
        return Err("more than one Host header".into());
    }
    let value = trim_ows(host.value);
    let valid = value.is_empty()
        || (!value.contains(&b'@') && http::uri::Authority::try_from(value).is_ok());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid Host header `{}`",
            String::from_utf8_lossy(host.value).escape_debug()
        ))
    }
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Parses the request head at the start of `buf` and rewrites it for the backend.
pub(crate) fn parse_request(buf: &[u8], ctx: &RequestCtx<'_>) -> Result<RequestHead, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= ctx.max => n,
        Ok(httparse::Status::Complete(_)) => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) if buf.len() >= ctx.max => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Err(HeadError::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => {
            return Err(HeadError::Malformed(format!(
                "malformed request head ({e})"
            )));
        }
    };
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line".into()));
    };
    check_target(method, path).map_err(HeadError::Malformed)?;
    // `httparse` takes a bare LF as a line end; RFC 9112 §2.2 allows that but strict
    // parsers (hyper's among them) refuse it, and one reading of a head is all lintas
    // accepts.
    if let Some(line) = bare_lf_line(&buf[..len]) {
        return Err(HeadError::Malformed(format!(
            "line {line} of the request head ends in a bare LF"
        )));
    }
    let headers = req.headers;
    check_host(headers, minor).map_err(HeadError::Malformed)?;
    let body = framing(headers).map_err(HeadError::Malformed)?;
    let body = match body {
        // RFC 9112 §6.1: an HTTP/1.0 recipient may not know chunked and read the body as
        // the next request.
        Some(BodyLen::Chunked) if minor == 0 => {
            return Err(HeadError::Malformed(
                "Transfer-Encoding is not allowed in an HTTP/1.0 request".into(),
            ));
        }
        Some(BodyLen::UntilClose) => {
            return Err(HeadError::Malformed(
                "a request's Transfer-Encoding must end in chunked".into(),
            ));
        }
        Some(b) => b,
        None => BodyLen::None,
    };

    // Routing, before anything is rewritten: the route decides the pool (and with it what
    // is hashed) and the edits.
    let mut route = None;
    let mut target: Cow<'_, str> = Cow::Borrowed(path);
    let mut redirect = None;
    if !ctx.router.routes.is_empty() {
        // Origin-form (nearly every request) borrows; the absolute-form's authority is the
        // host (RFC 9112 §3.2.2).
        let (host, uri): (Cow<'_, str>, Cow<'_, str>) = if path.starts_with('/') || path == "*" {
            let host = headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"))
                .map_or(Cow::Borrowed(""), |h| {
                    String::from_utf8_lossy(trim_ows(h.value))
                });
            (host, Cow::Borrowed(path))
        } else {
            match path.parse::<http::Uri>() {
                Ok(u) => (
                    Cow::Owned(
                        u.authority()
                            .map(|a| a.as_str().to_owned())
                            .unwrap_or_default(),
                    ),
                    Cow::Owned(u.path_and_query().map_or("/", |p| p.as_str()).to_owned()),
                ),
                Err(_) => (Cow::Borrowed(""), Cow::Borrowed(path)),
            }
        };
        let (raw_path, query) = match uri.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (&*uri, None),
        };
        let normal = match route::routing_path(raw_path) {
            Ok(n) => n,
            Err(why) if ctx.router.by_path => return Err(HeadError::Malformed(why)),
            Err(_) => Cow::Borrowed(raw_path),
        };
        let host = route::host_only(&host);
        let facts = RequestFacts {
            method,
            host,
            path: &normal,
            headers: &*headers,
        };
        if let Some((i, r)) = ctx.router.select(&facts) {
            route = Some(i);
            match &r.action {
                Action::Redirect(to) => redirect = Some((to.status, to.location(host, &uri))),
                Action::Pool(_) if r.edits.strip.is_some() => {
                    let mut rewritten = r.edits.rewrite_path(&normal).into_owned();
                    if let Some(q) = query {
                        rewritten.push('?');
                        rewritten.push_str(q);
                    }
                    target = Cow::Owned(rewritten);
                }
                Action::Pool(_) => {}
            }
        }
    }
    let edits: Option<&Edits> = ctx.router.edits(route);
    let pool = ctx.router.pool(route, ctx.pool);
    let state = pool.state();
    let hash = state
        .hash_key
        .as_ref()
        .filter(|_| state.kind == StrategyKind::ConsistentHash);

    let mut listed: Vec<&[u8]> = Vec::new();
    let mut close = false;
    let mut keep_alive_token = false;
    let mut upgrade_token = false;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
    {
        for t in tokens(h.value) {
            if t.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if t.eq_ignore_ascii_case(b"keep-alive") {
                keep_alive_token = true;
            } else if t.eq_ignore_ascii_case(b"upgrade") {
                upgrade_token = true;
            } else if let Some(p) = PROTECTED
                .iter()
                .find(|p| t.eq_ignore_ascii_case(p.as_bytes()))
            {
                return Err(HeadError::Malformed(format!(
                    "the Connection header names `{p}`, which is not hop-by-hop"
                )));
            } else {
                listed.push(t);
            }
        }
    }
    // Only WebSocket upgrades go through: an `h2c` (or any other) upgrade that a backend
    // accepted would turn the connection into a tunnel lintas can no longer read, in which
    // the client talks to the backend directly, past every rule applied to requests.
    let upgrade_value = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .map(|h| h.value)
        .filter(|v| upgrade_token && minor == 1 && trim_ows(v).eq_ignore_ascii_case(b"websocket"));
    let keep_alive = !close && (minor == 1 || keep_alive_token);

    let mut out = Vec::with_capacity(len + 64);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    // An HTTP/1.0 request goes on as 1.0, so the backend answers in a framing a 1.0 client
    // understands (never chunked).
    out.extend_from_slice(if minor == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    let mut xff: Option<Vec<u8>> = None;
    let mut expect_continue = false;
    let mut key = None;
    // Offsets in `buf` of what httparse handed out as slices of it.
    let at = |s: &[u8]| {
        let start = (s.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
        start..start + s.len()
    };
    let mut fields = LogFields {
        method: at(method.as_bytes()),
        target: at(path.as_bytes()),
        referer: None,
        user_agent: None,
    };
    for h in headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("user-agent") {
            fields.user_agent = Some(at(h.value));
        } else if name.eq_ignore_ascii_case("referer") {
            fields.referer = Some(at(h.value));
        }
        if is_hop_by_hop(name)
            || listed
                .iter()
                .any(|l| l.eq_ignore_ascii_case(name.as_bytes()))
            || is_underscore_twin(name)
            || edits.is_some_and(|e| e.drops_request(name))
        {
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            let all = xff.get_or_insert_with(Vec::new);
            if !all.is_empty() {
                all.extend_from_slice(b", ");
            }
            all.extend_from_slice(h.value.trim_ascii());
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-proto") {
            continue;
        }
        if name.eq_ignore_ascii_case("expect") && has_token(h.value, "100-continue") {
            expect_continue = true;
            continue;
        }
        match hash {
            Some(HashKey::Header(wanted)) if key.is_none() && name.eq_ignore_ascii_case(wanted) => {
                key = Some(hash_key(h.value));
            }
            Some(HashKey::Cookie(wanted))
                if key.is_none() && name.eq_ignore_ascii_case("cookie") =>
            {
                key = cookie(h.value, wanted).map(hash_key);
            }
            _ => {}
        }
        push_header(&mut out, name, h.value);
    }
    let mut forwarded = xff.unwrap_or_default();
    if !forwarded.is_empty() {
        forwarded.extend_from_slice(b", ");
    }
    forwarded.extend_from_slice(ctx.peer_ip.as_bytes());
    push_header(&mut out, "x-forwarded-for", &forwarded);
    push_header(
        &mut out,
        "x-forwarded-proto",
        if ctx.tls { b"https" } else { b"http" },
    );
    if let Some(v) = upgrade_value {
        push_header(&mut out, "connection", b"upgrade");
        push_header(&mut out, "upgrade", v);
    }
    let mut request_id = None;
    if let Some(e) = edits {
        for (name, value) in &e.add_request {
            push_header(&mut out, name, value.as_bytes());
        }
        if e.request_id {
            let id = new_request_id();
            push_header(&mut out, "x-request-id", id.as_bytes());
            request_id = Some(id);
        }
    }
    out.extend_from_slice(b"\r\n");
    let idempotent = is_idempotent(method);
    Ok(RequestHead {
        out,
        len,
        body,
        is_head: method == "HEAD",
        idempotent,
        keep_alive,
        http10: minor == 0,
        upgrade: upgrade_value.is_some(),
        // RFC 9110 §10.1.1: an HTTP/1.0 client's 100-continue expectation is ignored.
        expect_continue: expect_continue && body != BodyLen::None && minor == 1,
        key,
        route,
        redirect,
        request_id,
        fields,
    })
}

/// Parses the response head at the start of `buf` and rewrites it for the client.
///
/// `is_head` is whether the request was HEAD; `connection` is the `Connection` value the
/// client must see (`close` when its connection ends after this response, `keep-alive` for
/// an HTTP/1.0 client that keeps it).
pub(crate) fn parse_response(
    buf: &[u8],
    max: usize,
    is_head: bool,
    connection: Option<&str>,
    edits: Option<(&Edits, Option<&str>)>,
) -> Result<ResponseHead, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= max => n,
        Ok(httparse::Status::Complete(_)) => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) if buf.len() >= max => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Err(HeadError::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => {
            return Err(HeadError::Malformed(format!(
                "malformed response head ({e})"
            )));
        }
    };
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(HeadError::Malformed("incomplete status line".into()));
    };
    let headers = resp.headers;
    let declared = framing(headers).map_err(HeadError::Malformed)?;
    let no_body = is_head || (100..200).contains(&status) || status == 204 || status == 304;
    let body = if no_body {
        BodyLen::None
    } else {
        declared.unwrap_or(BodyLen::UntilClose)
    };

    let mut listed: Vec<&[u8]> = Vec::new();
    let mut backend_close = minor == 0;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
    {
        for t in tokens(h.value) {
            if t.eq_ignore_ascii_case(b"close") {
                backend_close = true;
            } else if t.eq_ignore_ascii_case(b"keep-alive") && minor == 0 {
                backend_close = false;
            } else if !t.eq_ignore_ascii_case(b"upgrade")
                && !t.eq_ignore_ascii_case(b"keep-alive")
                && !PROTECTED
                    .iter()
                    .any(|p| t.eq_ignore_ascii_case(p.as_bytes()))
            {
                listed.push(t);
            }
        }
    }
    let mut out = Vec::with_capacity(len + 32);
    let reason = resp.reason.unwrap_or("");
    let _ = write!(StrSink(&mut out), "HTTP/1.1 {status} {reason}\r\n");
    let switching = status == 101;
    for h in headers.iter() {
        let keep_upgrade = switching && h.name.eq_ignore_ascii_case("upgrade");
        if (is_hop_by_hop(h.name) && !keep_upgrade)
            || listed
                .iter()
                .any(|l| l.eq_ignore_ascii_case(h.name.as_bytes()))
            || edits.is_some_and(|(e, _)| e.drops_response(h.name))
        {
            continue;
        }
        push_header(&mut out, h.name, h.value);
    }
    if let Some((e, id)) = edits {
        for (name, value) in &e.add_response {
            push_header(&mut out, name, value.as_bytes());
        }
        if let Some(id) = id {
            push_header(&mut out, "x-request-id", id.as_bytes());
        }
    }
    if switching {
        push_header(&mut out, "connection", b"upgrade");
    } else if body == BodyLen::UntilClose {
        push_header(&mut out, "connection", b"close");
    } else if let Some(v) = connection {
        push_header(&mut out, "connection", v.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Ok(ResponseHead {
        out,
        len,
        status,
        body,
        reusable: !backend_close && body != BodyLen::UntilClose && !switching,
    })
}

/// `fmt::Write` into a byte vector, for the status line.
struct StrSink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for StrSink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A redirect lintas answers for a route, with an empty body.
pub(crate) fn redirect_response(status: u16, location: &str, close: bool) -> Vec<u8> {
    let reason = match status {
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        _ => "Permanent Redirect",
    };
    let mut out = Vec::with_capacity(96 + location.len());
    let _ = write!(
        StrSink(&mut out),
        "HTTP/1.1 {status} {reason}\r\nlocation: {location}\r\ncontent-length: 0\r\n{}\r\n",
        if close { "connection: close\r\n" } else { "" },
    );
    out
}

/// A complete response lintas writes itself (errors, `100 Continue` excluded): `page`
/// (HTML) when the listener has one for the status, `message` (plain text) otherwise.
pub(crate) fn own_response(
    status: u16,
    reason: &str,
    message: &str,
    page: Option<&[u8]>,
    close: bool,
) -> Vec<u8> {
    let (kind, body) = match page {
        Some(page) => ("html", page),
        None => ("plain", message.as_bytes()),
    };
    let mut out = Vec::with_capacity(128 + body.len());
    let _ = write!(
        StrSink(&mut out),
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/{kind}; charset=utf-8\r\ncontent-length: {}\r\n{}\r\n",
        body.len(),
        if close { "connection: close\r\n" } else { "" },
    );
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A context without routes over a pool of no backends that hashes `hash`; leaked, as
    /// a test's context lives as long as the test.
    fn ctx(hash: Option<&HashKey>) -> RequestCtx<'static> {
        RequestCtx {
            max: 16 * 1024,
            ..test_ctx(hash, Router::default())
        }
    }

    pub(crate) fn test_ctx(hash: Option<&HashKey>, router: Router) -> RequestCtx<'static> {
        let kind = match hash {
            Some(_) => StrategyKind::ConsistentHash,
            None => StrategyKind::RoundRobin,
        };
        let pool = Pool::new("p", kind, hash.cloned(), &[], Default::default()).unwrap();
        RequestCtx {
            peer_ip: "127.0.0.1",
            tls: false,
            router: Box::leak(Box::new(router)),
            pool: Box::leak(Box::new(pool)),
            max: 64 * 1024,
        }
    }

    fn text(v: &[u8]) -> &str {
        std::str::from_utf8(v).unwrap()
    }

    #[test]
    fn request_is_rewritten_for_the_backend() {
        let raw = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, x-secret\r\nX-Secret: 1\r\n\
                    X-Forwarded-For: 10.0.0.1\r\nKeep-Alive: timeout=5\r\nAccept: */*\r\n\r\nNEXT";
        let h = parse_request(raw, &ctx(None)).unwrap();
        assert_eq!(
            text(&h.out),
            "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nx-forwarded-for: 10.0.0.1, 127.0.0.1\r\n\
             x-forwarded-proto: http\r\n\r\n"
        );
        assert_eq!(h.len, raw.len() - 4);
        assert_eq!(
            (h.body, h.keep_alive, h.idempotent, h.upgrade),
            (BodyLen::None, true, true, false)
        );
    }

    #[test]
    fn log_fields_are_the_request_as_the_client_sent_it() {
        let raw = b"POST /x?y HTTP/1.0\r\nHost: x\r\nUser-Agent: ua/1\r\nReferer: http://r/\r\nContent-Length: 0\r\n\r\n";
        let h = parse_request(raw, &ctx(None)).unwrap();
        let mut saved = b"stale".to_vec();
        let fields = h.fields.save(&raw[..h.len], &mut saved);
        let line = fields.line(&saved, h.http10);
        assert_eq!(
            (line.method, line.target, line.protocol),
            (&b"POST"[..], &b"/x?y"[..], "HTTP/1.0")
        );
        assert_eq!(
            (line.referer, line.user_agent),
            (Some(&b"http://r/"[..]), Some(&b"ua/1"[..]))
        );
        assert_eq!(saved.len(), "POST/x?yhttp://r/ua/1".len());
    }

    #[test]
    fn request_framing() {
        let h = parse_request(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
            &ctx(None),
        )
        .unwrap();
        assert_eq!((h.body, h.idempotent), (BodyLen::Length(5), false));
        let h = parse_request(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            &ctx(None),
        )
        .unwrap();
        assert_eq!(h.body, BodyLen::Chunked);
        let e = parse_request(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            &ctx(None),
        );
        assert_eq!(
            e.unwrap_err(),
            HeadError::Malformed("both Transfer-Encoding and Content-Length are present".into())
        );
        let e = parse_request(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n\r\n",
            &ctx(None),
        );
        assert_eq!(
            e.unwrap_err(),
            HeadError::Malformed("invalid Content-Length `5x`".into())
        );
        let e = parse_request(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            &ctx(None),
        );
        assert_eq!(
            e.unwrap_err(),
            HeadError::Malformed("conflicting Content-Length headers".into())
        );
    }

    /// Requests whose framing or target a backend could read otherwise than lintas.
    #[test]
    fn ambiguous_requests_are_refused() {
        let cases: [(&[u8], &str); 18] = [
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\n",
                "the Connection header names `content-length`, which is not hop-by-hop",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n",
                "the Connection header names `transfer-encoding`, which is not hop-by-hop",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: HOST\r\n\r\n",
                "the Connection header names `host`, which is not hop-by-hop",
            ),
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                "Transfer-Encoding is not allowed in an HTTP/1.0 request",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\u{a0}\r\n\r\n".as_bytes(),
                "invalid Content-Length `5\\u{a0}`",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n",
                "invalid Content-Length `5, 5`",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
                "invalid Content-Length `99999999999999999999`",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                "Transfer-Encoding applies chunked more than once",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
                "invalid Transfer-Encoding `\\\"chunked\\\"`",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                "Transfer-Encoding applies chunked more than once",
            ),
            (b"GET / HTTP/1.1\r\n\r\n", "missing Host header"),
            (b"GET a?b HTTP/1.1\r\nHost: x\r\n\r\n", "invalid request target `a?b`"),
            (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", "invalid request target `*`"),
            (b"GET htp//x/ HTTP/1.1\r\nHost: x\r\n\r\n", "invalid request target `htp//x/`"),
            (b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", "CONNECT is not proxied"),
            (
                b"GET / HTTP/1.1\r\nHost: x\nTransfer-Encoding: chunked\r\n\r\n",
                "line 2 of the request head ends in a bare LF",
            ),
            (
                b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
                "more than one Host header",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: user@evil\r\n\r\n",
                "invalid Host header `user@evil`",
            ),
        ];
        for (raw, why) in cases {
            assert_eq!(
                parse_request(raw, &ctx(None)).unwrap_err(),
                HeadError::Malformed(why.into()),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn only_websocket_upgrades_are_forwarded() {
        let h = parse_request(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
            &ctx(None),
        )
        .unwrap();
        assert!(!h.upgrade);
        assert_eq!(
            text(&h.out),
            "GET / HTTP/1.1\r\nHost: x\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\r\n"
        );
    }

    #[test]
    fn underscore_spellings_of_forwarding_and_framing_headers_are_dropped() {
        let h = parse_request(
            b"GET / HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 6.6.6.6\r\nx_forwarded_proto: https\r\nContent_Length: 5\r\nX_Custom: kept\r\n\r\n",
            &ctx(None),
        )
        .unwrap();
        assert_eq!(
            text(&h.out),
            "GET / HTTP/1.1\r\nHost: x\r\nX_Custom: kept\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\r\n"
        );
    }

    #[test]
    fn backend_connection_header_cannot_strip_framing() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nConnection: content-length, x-a\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok",
            8192,
            false,
            None,
            None,
        )
        .unwrap();
        assert_eq!(text(&r.out), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(r.body, BodyLen::Length(2));
    }

    #[test]
    fn request_limits() {
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n", &ctx(None)).unwrap_err(),
            HeadError::Partial
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        assert_eq!(
            parse_request(big.as_bytes(), &ctx(None)).unwrap_err(),
            HeadError::TooLarge
        );
        assert_eq!(
            parse_request(b"GARBAGE\r\n\r\n", &ctx(None)).unwrap_err(),
            HeadError::Malformed("malformed request head (invalid token)".into())
        );
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let h = parse_request(b"GET / HTTP/1.0\r\n\r\n", &ctx(None)).unwrap();
        assert!(!h.keep_alive);
        let h = parse_request(
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            &ctx(None),
        )
        .unwrap();
        assert!(h.keep_alive);
        let h = parse_request(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            &ctx(None),
        )
        .unwrap();
        assert!(!h.keep_alive);
    }

    #[test]
    fn upgrade_and_expect() {
        let h = parse_request(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
            &ctx(None),
        )
        .unwrap();
        assert!(h.upgrade);
        assert!(text(&h.out).ends_with("connection: upgrade\r\nupgrade: websocket\r\n\r\n"));
        let h = parse_request(
            b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            &ctx(None),
        )
        .unwrap();
        assert!(h.expect_continue);
        assert!(!text(&h.out).to_ascii_lowercase().contains("expect"));
    }

    #[test]
    fn hash_keys_from_header_and_cookie() {
        let key = HashKey::Header("x-user".into());
        let h = parse_request(
            b"GET / HTTP/1.1\r\nHost: x\r\nX-User: alice\r\n\r\n",
            &ctx(Some(&key)),
        )
        .unwrap();
        assert_eq!(h.key, Some(hash_key(b"alice")));
        let key = HashKey::Cookie("sid".into());
        let h = parse_request(
            b"GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1; sid=xyz\r\n\r\n",
            &ctx(Some(&key)),
        )
        .unwrap();
        assert_eq!(h.key, Some(hash_key(b"xyz")));
    }

    #[test]
    fn response_framing_and_rewrite() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: keep-alive\r\n\r\nhello\n",
            8192,
            false,
            None,
            None,
        )
        .unwrap();
        assert_eq!(text(&r.out), "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n");
        assert_eq!(
            (r.body, r.reusable, r.status),
            (BodyLen::Length(6), true, 200)
        );
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n",
            8192,
            true,
            Some("close"),
            None,
        )
        .unwrap();
        assert_eq!(r.body, BodyLen::None);
        assert!(text(&r.out).ends_with("connection: close\r\n\r\n"));
        let r = parse_response(b"HTTP/1.0 200 OK\r\n\r\n", 8192, false, None, None).unwrap();
        assert_eq!((r.body, r.reusable), (BodyLen::UntilClose, false));
        let r =
            parse_response(b"HTTP/1.1 204 No Content\r\n\r\n", 8192, false, None, None).unwrap();
        assert_eq!((r.body, r.reusable), (BodyLen::None, true));
        let r = parse_response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 8192, false, None, None).unwrap();
        assert_eq!(
            text(&r.out),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nconnection: upgrade\r\n\r\n"
        );
        assert!(!r.reusable);
    }

    #[test]
    fn own_responses_are_complete() {
        assert_eq!(
            text(&own_response(
                503,
                "Service Unavailable",
                "no backend\n",
                None,
                false
            )),
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 11\r\n\r\nno backend\n"
        );
        assert_eq!(
            text(&own_response(
                503,
                "Service Unavailable",
                "no backend\n",
                Some(b"<p>busy</p>"),
                true
            )),
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: 11\r\nconnection: close\r\n\r\n<p>busy</p>"
        );
    }
}
